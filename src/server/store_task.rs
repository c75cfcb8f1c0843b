//! The store task of a shard: writes what the shard's journal hands it, in order, on the shard's
//! own io_uring (`shards::storage`), syncs, and tells the shard how far its log is durable.
//!
//! Group commit comes from the loop's shape: while a write and its `fdatasync` are under way,
//! the shard keeps handling events and queuing records; the next turn takes all of them at once,
//! so one sync covers every record written since the last one, however many messages that is.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shards::storage::{AppendFile, remove_file, sync_dir};

use super::ShardShell;
use crate::store::FsyncMode;
use crate::store::files::{log_path, snapshot_path};
use crate::store::journal::{Chunk, StoreJob};
use crate::store::record::MAGIC;

/// The shard's log files and where it stands in them.
pub(crate) struct StoreFiles {
    dir: PathBuf,
    /// The log being appended (`log-{number}`); `None` after a failure until a snapshot works.
    log: Option<AppendFile>,
    number: u64,
    /// Bytes appended since the last sync.
    unsynced: bool,
    /// The snapshot being written in slices (`snap-{number}.tmp`), between its begin and end.
    snapshot: Option<AppendFile>,
    /// A snapshot was written whole (this generation's directory holds a complete one).
    snapshot_written: bool,
}

impl StoreFiles {
    /// Opens the newest log of a shard directory that start-up has just written.
    pub async fn open(dir: PathBuf, number: u64) -> StoreFiles {
        let log = match AppendFile::open(&log_path(&dir, number)).await {
            Ok(log) => Some(log),
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "store: log not opened");
                None
            }
        };
        StoreFiles {
            dir,
            log,
            number,
            unsynced: false,
            snapshot: None,
            snapshot_written: false,
        }
    }
}

/// The new generation start-up made (`files::begin_generation`): each shard writes its first
/// snapshot while it serves; the last to finish puts the generation in force on a thread
/// (`files::finish_generation`: `CURRENT` switched, the old generation removed).
#[derive(Debug)]
pub(crate) struct NewGeneration {
    /// In force: the shards' store tasks may write records.
    pub written: AtomicBool,
    /// Attempts that failed so far (a full disk); each one breaks the shards' logs, as a failed
    /// write does, so nothing piles up in memory while the disk refuses.
    pub failures: AtomicU64,
    /// Shards whose first snapshot is written.
    done: AtomicUsize,
    /// Bytes of those snapshots.
    bytes: AtomicU64,
    dir: PathBuf,
    generation: u64,
    previous: Option<u64>,
    quarantine: bool,
    shard_count: usize,
    started: Instant,
}

impl NewGeneration {
    pub fn new(
        dir: PathBuf,
        generation: u64,
        previous: Option<u64>,
        quarantine: bool,
        shard_count: usize,
    ) -> NewGeneration {
        NewGeneration {
            written: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            dir,
            generation,
            previous,
            quarantine,
            shard_count,
            started: Instant::now(),
        }
    }

    /// A shard's first snapshot (`bytes`) is on disk; the last one switches to the generation.
    fn shard_done(self: &Arc<Self>, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 < self.shard_count {
            return;
        }
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(String::from("ringmq-store-generation"))
            .spawn(move || this.switch());
        if let Err(error) = spawned {
            // No thread left to spare: switch from here (file system calls on the shard, once).
            tracing::warn!(%error, "store: no thread to switch generations");
            self.switch();
        }
    }

    /// Puts the generation in force, trying again every second while it fails (a full disk);
    /// the old generation stays in force until it works.
    fn switch(&self) {
        loop {
            match crate::store::files::finish_generation(
                &self.dir,
                self.generation,
                &[],
                self.previous,
                self.quarantine,
            ) {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(%error, "store: new generation not written; trying again in a second");
                    self.failures.fetch_add(1, Ordering::AcqRel);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        self.written.store(true, Ordering::Release);
        tracing::info!(
            generation = self.generation,
            bytes = self.bytes.load(Ordering::Acquire),
            seconds = self.started.elapsed().as_secs_f64(),
            "store: new generation in force"
        );
    }
}

/// How often the store task looks whether the new generation is in force, at start.
const GENERATION_POLL: Duration = Duration::from_millis(2);

/// Until the new generation is in force: writes the shard's first snapshot, in slices between
/// the shard's turns, and nothing else; tells `new_generation` when it is whole. A shard that
/// stops meanwhile still finishes it (the shutdown timeout bounds the wait), so that what
/// happened since the start is written after it; but not while writing fails (a full disk),
/// then it returns false: nothing since the start can be written without the generation.
async fn until_in_force(
    shell: &Rc<ShardShell>,
    files: &mut StoreFiles,
    new_generation: &Arc<NewGeneration>,
    stopping: &Rc<Cell<bool>>,
) -> bool {
    // Each failed attempt, here or on another shard, counts as a failed write here: records are
    // dropped and the acknowledgements waiting for them refused, and QoS 1/2 publishes are
    // refused until a snapshot is written (the tick queues one), so a disk that stays full does
    // not make records pile up.
    let mut failures_seen = 0;
    let mut reported = false;
    while !new_generation.written.load(Ordering::Acquire) {
        if stopping.get() && failures_seen > 0 {
            return false;
        }
        let chunks = {
            let mut shard = shell.shard.borrow_mut();
            // Not before every shard has installed its part: until then no shard takes a
            // client, and the slices would only take the CPU the others install with.
            if !shard.peers_restored() {
                Vec::new()
            } else {
                shard.snapshot_slice(&crate::store::Clock::now());
                shard.take_snapshot_chunks()
            }
        };
        let wrote = !chunks.is_empty();
        if wrote && write_job(files, chunks).await.is_err() {
            new_generation.failures.fetch_add(1, Ordering::AcqRel);
        }
        if files.snapshot_written && !reported {
            reported = true;
            let bytes = shell.shard.borrow().store_snapshot_bytes();
            new_generation.shard_done(bytes);
        }
        let failures = new_generation.failures.load(Ordering::Acquire);
        if failures > failures_seen {
            failures_seen = failures;
            shell.shard.borrow_mut().on_stored(0, None, true);
            shell.handle_all(std::iter::empty());
        }
        if wrote {
            // Let the shard's clients have their turn before the next slice.
            shards::yield_now().await;
        } else {
            shards::time::sleep(GENERATION_POLL).await;
        }
    }
    true
}

/// Runs until the shard stops (`stopping`), then writes and syncs what is left.
pub(crate) async fn store_loop(
    shell: Rc<ShardShell>,
    mut files: StoreFiles,
    mode: FsyncMode,
    new_generation: Arc<NewGeneration>,
    stopping: Rc<Cell<bool>>,
) {
    // The log belongs to the generation start-up put in force in the background: no record is
    // written, so nothing is reported durable, before it is (a crash before then restarts from
    // the old generation). The shard serves meanwhile; acknowledgements wait.
    if !until_in_force(&shell, &mut files, &new_generation, &stopping).await {
        return;
    }
    let interval = match mode {
        FsyncMode::Always => None,
        FsyncMode::Periodic(interval) => Some(interval),
    };
    let mut last_sync = Instant::now();
    loop {
        let woken = match interval {
            None => {
                shell.store_ready.notified().await;
                true
            }
            Some(interval) => {
                let wait = interval.saturating_sub(last_sync.elapsed());
                shards::time::timeout(wait.max(Duration::from_millis(1)), async {
                    shell.store_ready.notified().await;
                })
                .await
                .is_ok()
            }
        };
        loop {
            // A snapshot under way hands over one slice per job: it is encoded between the
            // shard's turns, and no faster than the disk takes it.
            let (job, slicing) = {
                let mut shard = shell.shard.borrow_mut();
                let slicing = !stopping.get() && shard.snapshot_slice(&crate::store::Clock::now());
                (shard.take_store_job(), slicing)
            };
            let Some(job) = job else {
                break;
            };
            let StoreJob {
                chunks,
                appended,
                received,
            } = job;
            let outcome = write_job(&mut files, chunks).await;
            // A job of snapshot slices alone leaves nothing in the log to sync.
            let sync_now = (interval.is_none()
                || last_sync.elapsed() >= interval.unwrap_or_default())
                && (files.unsynced || received.is_some());
            let outcome = match outcome {
                Ok(recovered) if sync_now => sync(&mut files).await.map(|()| recovered),
                other => other,
            };
            if sync_now {
                last_sync = Instant::now();
            }
            {
                let mut shard = shell.shard.borrow_mut();
                if matches!(outcome, Ok(true)) {
                    shard.on_store_recovered();
                }
                shard.on_stored(appended, received, outcome.is_err());
            }
            shell.handle_all(std::iter::empty());
            if slicing {
                // Let the shard's clients have their turn before the next slice.
                shards::yield_now().await;
            }
        }
        if !woken && files.unsynced {
            // Periodic mode: the interval passed with records written since the last sync.
            if sync(&mut files).await.is_err() {
                shell.shard.borrow_mut().on_stored(0, None, true);
            }
            last_sync = Instant::now();
        }
        if stopping.get() && !shell.shard.borrow().store_has_work() {
            let _ = sync(&mut files).await;
            return;
        }
    }
}

/// Writes a job's chunks; `Ok(true)` when it included a snapshot that made the log whole again.
async fn write_job(files: &mut StoreFiles, chunks: Vec<Chunk>) -> std::io::Result<bool> {
    let mut recovered = false;
    for chunk in chunks {
        match chunk {
            Chunk::Records(bytes) => {
                let log = files.log.as_mut().ok_or_else(|| {
                    std::io::Error::other("log closed after a failure; waiting for a snapshot")
                })?;
                let result = log.append(bytes).await;
                files.unsynced = true;
                if let Err(error) = result {
                    tracing::error!(file = %log.path().display(), %error, "store: write failed");
                    files.log = None;
                    files.snapshot = None;
                    return Err(error);
                }
            }
            Chunk::Snapshot(bytes) => {
                recovered |= files.log.is_none();
                files.snapshot = None;
                if let Err(error) = rotate(files, &bytes).await {
                    tracing::error!(dir = %files.dir.display(), %error, "store: snapshot failed");
                    files.log = None;
                    return Err(error);
                }
            }
            Chunk::SnapshotBegin { .. } | Chunk::SnapshotPart(_) | Chunk::SnapshotEnd => {
                if let Err(error) = write_snapshot_chunk(files, chunk).await {
                    tracing::error!(dir = %files.dir.display(), %error, "store: snapshot failed");
                    files.log = None;
                    files.snapshot = None;
                    return Err(error);
                }
            }
        }
    }
    Ok(recovered)
}

/// A step of a snapshot written in slices. At its begin the current log is synced and closed
/// and the next one started: until the snapshot has its name, a crash replays the previous
/// snapshot with every log after it, the new one included (see `Journal::begin_snapshot`).
async fn write_snapshot_chunk(files: &mut StoreFiles, chunk: Chunk) -> std::io::Result<()> {
    match chunk {
        Chunk::SnapshotBegin { next_log } => {
            if files.log.is_none() {
                return Err(std::io::Error::other("log closed after a failure"));
            }
            let number = files.number + u64::from(next_log);
            let tmp = snapshot_path(&files.dir, number).with_extension("tmp");
            remove_file(&tmp).await?;
            let mut snapshot = AppendFile::open(&tmp).await?;
            snapshot.append(MAGIC.to_vec()).await?;
            if next_log {
                start_log(files, number).await?;
            }
            files.snapshot = Some(snapshot);
        }
        Chunk::SnapshotPart(bytes) => {
            let snapshot = files
                .snapshot
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no snapshot file open"))?;
            snapshot.append(bytes).await?;
        }
        Chunk::SnapshotEnd => {
            let snapshot = files
                .snapshot
                .take()
                .ok_or_else(|| std::io::Error::other("no snapshot file open"))?;
            snapshot.sync().await?;
            let tmp = snapshot.path().to_path_buf();
            let _ = snapshot.close().await;
            // The rename, the directory's sync and the removals are blocking calls that wait
            // for the file system's journal, busy with the snapshot just synced: on a thread of
            // their own, so the shard serves meanwhile.
            let (dir, number) = (files.dir.clone(), files.number);
            off_thread(move || {
                std::fs::rename(&tmp, snapshot_path(&dir, number))?;
                std::fs::File::open(&dir)?.sync_all()?;
                remove_older(&dir, number);
                Ok(())
            })
            .await?;
            files.snapshot_written = true;
        }
        Chunk::Records(_) | Chunk::Snapshot(_) => {}
    }
    Ok(())
}

/// Syncs the current log and continues in `log-{number}` (created, synced, in the directory).
async fn start_log(files: &mut StoreFiles, number: u64) -> std::io::Result<()> {
    if let Some(log) = files.log.as_ref() {
        log.sync().await?;
    }
    let mut log = AppendFile::open(&log_path(&files.dir, number)).await?;
    if log.is_empty() {
        log.append(MAGIC.to_vec()).await?;
    }
    log.sync().await?;
    sync_dir(&files.dir).await?;
    if let Some(old) = files.log.replace(log) {
        let _ = old.close().await;
    }
    files.number = number;
    files.unsynced = false;
    Ok(())
}

async fn sync(files: &mut StoreFiles) -> std::io::Result<()> {
    let Some(log) = files.log.as_ref() else {
        return Err(std::io::Error::other("no log"));
    };
    if let Err(error) = log.sync().await {
        tracing::error!(file = %log.path().display(), %error, "store: sync failed");
        files.log = None;
        return Err(error);
    }
    files.unsynced = false;
    Ok(())
}

/// A snapshot covers every log up to the current one: it is written as the next snapshot file
/// (whole and synced before its name appears), a new log is started after it, and only then are
/// the logs and snapshots it replaces removed.
async fn rotate(files: &mut StoreFiles, snapshot: &[u8]) -> std::io::Result<()> {
    if let Some(log) = files.log.as_ref() {
        log.sync().await?;
    }
    let next = files.number + 1;
    let path = snapshot_path(&files.dir, next);
    let tmp = path.with_extension("tmp");
    remove_file(&tmp).await?;
    let mut file = AppendFile::open(&tmp).await?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + snapshot.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(snapshot);
    file.append(bytes).await?;
    file.sync().await?;
    let _ = file.close().await;
    std::fs::rename(&tmp, &path)?;
    start_log(files, next).await?;
    files.snapshot_written = true;
    remove_older(&files.dir, next);
    Ok(())
}

/// Runs `work` (blocking file system calls) on a thread of its own and waits for it without
/// blocking the shard.
async fn off_thread(
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<()> {
    let (done, result) = flume::bounded(1);
    std::thread::Builder::new()
        .name(String::from("ringmq-store-files"))
        .spawn(move || {
            let _ = done.send(work());
        })?;
    result
        .recv_async()
        .await
        .map_err(|_| std::io::Error::other("store file thread ended without an answer"))?
}

/// Removes logs and snapshots numbered below `number`: the snapshot `number` covers them.
fn remove_older(dir: &Path, number: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let older = ["log-", "snap-"].iter().any(|prefix| {
            name.strip_prefix(prefix)
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n < number)
        });
        if !older {
            continue;
        }
        let removed = match std::fs::remove_file(entry.path()) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        };
        if let Err(error) = removed {
            tracing::warn!(file = %entry.path().display(), %error, "store: old file not removed");
        }
    }
}
