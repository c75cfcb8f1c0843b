//! The store's files and what happens to them at start.
//!
//! ```text
//! {dir}/CURRENT                       the generation in force (a number, replaced by rename)
//! {dir}/gen-{G}/shard-{i}/snap-{N}    shard i's state as of the end of log-{N-1}
//! {dir}/gen-{G}/shard-{i}/log-{N}     records after snap-{N}, appended
//! ```
//!
//! At every start the generation in force is read back (each shard directory on its own thread),
//! merged, and split again by the current shard count. The new generation's directories and
//! empty logs are made before the shards start (`begin_generation`); each shard's part is then
//! written as its first snapshot while the shards serve, `CURRENT` is switched to it by an
//! atomic rename, and only then is the old generation removed (`finish_generation`). Until the
//! switch no shard writes its log, so nothing is reported durable. A crash at any point leaves
//! either the old or the new generation whole. So a change of shard count between two runs
//! costs nothing special, and start-up time and disk use follow the live state, not the history.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;

use super::record::{self, MAGIC, Record, RecordError};
use super::replay::{Replayed, Replayer};

/// Why the store cannot be opened. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "persistence.dir = {dir}: {source}; create it and give the broker's user write access to it, or choose another persistence.dir"
    )]
    Directory { dir: PathBuf, source: io::Error },
    #[error(
        "{file}: {source}; check the disk and the file's permissions (the broker reads every file of the generation in force at start)"
    )]
    Io { file: PathBuf, source: io::Error },
    #[error(
        "{file}: {reason} at byte {offset}; this is not a torn write at the end of the newest log, so the file is damaged or was written by something else. Move the persistence directory aside (and keep it for inspection), or start with --ignore-corrupt-storage to keep what can be read and move the damaged generation to a quarantine folder"
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "{file}: not a ringmq store file; remove it from the persistence directory, or start with --ignore-corrupt-storage to move the generation aside"
    )]
    Foreign { file: PathBuf },
}

/// What start-up read back, for the log and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RecoveryReport {
    pub generation: u64,
    pub sessions: usize,
    pub queued_messages: usize,
    pub retained: usize,
    pub wills: usize,
    pub bytes_read: u64,
    /// Bytes after a torn record at the end of a log (an interrupted write), discarded.
    pub torn_bytes: u64,
    pub seconds: f64,
    /// The generation was damaged and moved aside (`--ignore-corrupt-storage`).
    pub quarantined: bool,
}

/// Where a shard of a generation keeps its files.
pub fn shard_dir(dir: &Path, generation: u64, shard: usize) -> PathBuf {
    dir.join(format!("gen-{generation}"))
        .join(format!("shard-{shard}"))
}

pub fn snapshot_path(shard_dir: &Path, number: u64) -> PathBuf {
    shard_dir.join(format!("snap-{number:08}"))
}

pub fn log_path(shard_dir: &Path, number: u64) -> PathBuf {
    shard_dir.join(format!("log-{number:08}"))
}

/// Reads the generation in force under `dir` (none for a new store) and everything it holds.
pub fn recover(dir: &Path, ignore_corrupt: bool) -> Result<(Replayed, RecoveryReport), StoreError> {
    let started = Instant::now();
    fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut report = RecoveryReport::default();
    let Some(generation) = current_generation(dir)? else {
        return Ok((Replayed::default(), report));
    };
    report.generation = generation;
    let gen_dir = dir.join(format!("gen-{generation}"));
    let mut shard_dirs = Vec::new();
    for entry in read_dir(&gen_dir)? {
        let path = entry;
        let is_shard = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("shard-"));
        if !is_shard {
            if ignore_corrupt {
                continue;
            }
            return Err(StoreError::Foreign { file: path });
        }
        shard_dirs.push(path);
    }
    let results: Vec<Result<(Replayed, u64, u64), StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shard_dirs
            .iter()
            .map(|path| scope.spawn(move || recover_shard(path)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StoreError::Corrupt {
                        file: gen_dir.clone(),
                        offset: 0,
                        reason: String::from("recovery thread panicked"),
                    })
                })
            })
            .collect()
    });
    let mut parts = Vec::new();
    for result in results {
        match result {
            Ok((replayed, read, torn)) => {
                report.bytes_read += read;
                report.torn_bytes += torn;
                parts.push(replayed);
            }
            Err(error) if ignore_corrupt => {
                tracing::error!(%error, "store: damaged shard log skipped (--ignore-corrupt-storage)");
                report.quarantined = true;
            }
            Err(error) => return Err(error),
        }
    }
    let merged = Replayed::merge(parts);
    report.sessions = merged.sessions.len();
    report.queued_messages = merged.sessions.values().map(|s| s.entries.len()).sum();
    report.retained = merged.retained.len();
    report.wills = merged.wills.len();
    report.seconds = started.elapsed().as_secs_f64();
    Ok((merged, report))
}

fn current_generation(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join("CURRENT");
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Foreign { file: path }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io { file: path, source }),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = fs::read_dir(dir).map_err(|source| StoreError::Io {
        file: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::Io {
            file: dir.to_path_buf(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

/// One shard directory: the newest whole snapshot, then every log from its number on. Returns
/// the state, the bytes read and the bytes of a torn tail.
fn recover_shard(dir: &Path) -> Result<(Replayed, u64, u64), StoreError> {
    let mut snapshots = Vec::new();
    let mut logs = Vec::new();
    for path in read_dir(dir)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".tmp") {
            continue;
        }
        let number = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(n) = number("snap-") {
            snapshots.push((n, path));
        } else if let Some(n) = number("log-") {
            logs.push((n, path));
        } else {
            return Err(StoreError::Foreign { file: path });
        }
    }
    snapshots.sort();
    logs.sort();
    let mut bytes_read = 0;
    // The newest snapshot that was written whole; an older one is kept on disk until a newer
    // one is complete, so a crash while writing one falls back to the previous. Each is replayed
    // as it is decoded; one that turns out cut short is dropped with its replay.
    let mut base = None;
    for (number, path) in snapshots.iter().rev() {
        let data = read_file(path)?;
        bytes_read += data.len() as u64;
        if let Some(replayer) = replay_snapshot(data) {
            base = Some((*number, replayer));
            break;
        }
    }
    let Some((base_number, mut replayer)) = base else {
        let file = snapshots
            .last()
            .map_or_else(|| dir.to_path_buf(), |(_, p)| p.clone());
        return Err(StoreError::Corrupt {
            file,
            offset: 0,
            reason: String::from("no complete snapshot"),
        });
    };
    let later: Vec<&(u64, PathBuf)> = logs.iter().filter(|(n, _)| *n >= base_number).collect();
    let mut torn = 0;
    for (index, (_, path)) in later.iter().enumerate() {
        let data = read_file(path)?;
        bytes_read += data.len() as u64;
        let last = index + 1 == later.len();
        torn += replay_log(path, data, last, &mut replayer)?;
    }
    Ok((replayer.finish(), bytes_read, torn))
}

fn read_file(path: &Path) -> Result<Bytes, StoreError> {
    fs::read(path)
        .map(Bytes::from)
        .map_err(|source| StoreError::Io {
            file: path.to_path_buf(),
            source,
        })
}

/// The state a snapshot file holds, if it is whole: magic, records, `SnapshotEnd` last.
fn replay_snapshot(data: Bytes) -> Option<Replayer> {
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let mut rest = data.slice(MAGIC.len()..);
    drop(data);
    let mut replayer = Replayer::new();
    loop {
        match record::decode(&mut rest) {
            Ok(Some(Record::SnapshotEnd)) => return rest.is_empty().then_some(replayer),
            Ok(Some(record)) => replayer.apply(record),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Replays one log file; a record cut short or failing its CRC at the end of the newest log is
/// a torn write and ends the log (its bytes are returned); anywhere else it is damage.
fn replay_log(
    path: &Path,
    data: Bytes,
    last: bool,
    replayer: &mut Replayer,
) -> Result<u64, StoreError> {
    let total = data.len() as u64;
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        if last && MAGIC.starts_with(&data) {
            // Created, and the crash came before its first bytes were written whole.
            return Ok(total);
        }
        return Err(StoreError::Foreign {
            file: path.to_path_buf(),
        });
    }
    let mut rest = data.slice(MAGIC.len()..);
    loop {
        let offset = total - rest.len() as u64;
        if last && !rest.is_empty() && rest.iter().all(|&b| b == 0) {
            // Space allocated for a write that never landed.
            return Ok(total - offset);
        }
        match record::decode(&mut rest) {
            Ok(Some(record)) => replayer.apply(record),
            Ok(None) => return Ok(0),
            Err(RecordError::Truncated) if last => return Ok(total - offset),
            Err(RecordError::BadChecksum) if last && torn_tail(&rest) => {
                return Ok(total - offset);
            }
            Err(error) => {
                return Err(StoreError::Corrupt {
                    file: path.to_path_buf(),
                    offset,
                    reason: error.to_string(),
                });
            }
        }
    }
}

/// Whether a record that fails its checksum is the interrupted last write: it reaches the end
/// of the file, or only zeros follow it (space the file system allocated and never filled).
/// A bad record with more data after it is damage.
fn torn_tail(rest: &Bytes) -> bool {
    let declared = rest.get(..4).map_or(0, |len| {
        u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize
    });
    let end = record::HEADER_BYTES.saturating_add(declared);
    end >= rest.len()
        || rest
            .get(end..)
            .is_some_and(|after| after.iter().all(|&b| b == 0))
}

/// The first step of a new generation, done before the shards start: its directories, each
/// with an empty first log, synced. It is not in force yet (`CURRENT` names the old one), so a
/// crash from here until `finish_generation` switches leaves the old generation in force; this
/// step fails early on a directory the broker cannot write.
pub fn begin_generation(dir: &Path, generation: u64, shards: usize) -> Result<(), StoreError> {
    let gen_dir = dir.join(format!("gen-{generation}"));
    if gen_dir.exists() {
        // Left by a start that crashed before switching to it.
        fs::remove_dir_all(&gen_dir).map_err(|source| StoreError::Directory {
            dir: gen_dir.clone(),
            source,
        })?;
    }
    for shard in 0..shards {
        let path = shard_dir(dir, generation, shard);
        fs::create_dir_all(&path).map_err(|source| StoreError::Directory {
            dir: path.clone(),
            source,
        })?;
        write_synced(&log_path(&path, 1), MAGIC)?;
        sync_dir(&path)?;
    }
    sync_dir(&gen_dir)?;
    sync_dir(dir)
}

/// The second step, which may run while the shards serve: each shard's first snapshot, then
/// `CURRENT` switched to the new generation by an atomic rename, and only then the old one
/// removed (or, `quarantine`, moved aside). Until the switch nothing the shards append to the
/// new logs may be reported durable. Safe to call again after a failure: once `CURRENT` names
/// the generation, only the steps after the switch are done again.
pub fn finish_generation(
    dir: &Path,
    generation: u64,
    snapshots: &[Vec<u8>],
    previous: Option<u64>,
    quarantine: bool,
) -> Result<(), StoreError> {
    let gen_dir = dir.join(format!("gen-{generation}"));
    if current_generation(dir)? != Some(generation) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = snapshots
                .iter()
                .enumerate()
                .map(|(shard, snapshot)| {
                    let path = shard_dir(dir, generation, shard);
                    scope.spawn(move || write_first_snapshot(&path, snapshot))
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StoreError::Directory {
                        dir: dir.to_path_buf(),
                        source: io::Error::other("writer thread panicked"),
                    })
                })
            })
        })?;
        sync_dir(&gen_dir)?;
        let tmp = dir.join("CURRENT.tmp");
        let current = dir.join("CURRENT");
        write_synced(&tmp, format!("{generation}\n").as_bytes())?;
        fs::rename(&tmp, &current).map_err(|source| StoreError::Io {
            file: current.clone(),
            source,
        })?;
    }
    sync_dir(dir)?;
    // Anything but the new generation is old: the one just read, and any left by a crash.
    for path in read_dir(dir)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_old = name
            .strip_prefix("gen-")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|g| g != generation);
        if !is_old {
            continue;
        }
        let result = if quarantine && Some(name) == previous.map(|g| format!("gen-{g}")).as_deref()
        {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = dir.join(format!("quarantine-{secs}-{name}"));
            tracing::warn!(from = %path.display(), to = %aside.display(), "store: damaged generation moved aside");
            fs::rename(&path, &aside)
        } else {
            fs::remove_dir_all(&path)
        };
        if let Err(source) = result {
            tracing::warn!(path = %path.display(), %source, "store: old generation not removed");
        }
    }
    Ok(())
}

/// A shard's first snapshot in a new generation (its first log is there already).
fn write_first_snapshot(dir: &Path, snapshot: &[u8]) -> Result<(), StoreError> {
    write_synced_parts(&snapshot_path(dir, 1), &[MAGIC, snapshot])?;
    sync_dir(dir)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_synced_parts(path, &[bytes])
}

fn write_synced_parts(path: &Path, parts: &[&[u8]]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::create(path).map_err(io)?;
    for part in parts {
        file.write_all(part).map_err(io)?;
    }
    file.sync_all().map_err(io)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            file: dir.to_path_buf(),
            source,
        })
}
