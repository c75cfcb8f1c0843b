//! Append-only files on the shard's own io_uring: the storage a shard needs to keep a log of what
//! it owns. A write or a sync is an io_uring operation the executor waits for like a socket read,
//! so a slow disk never blocks the shard's other tasks.
//!
//! Files are opened buffered (through the page cache), not with O_DIRECT: a log is appended in
//! small group commits of a few hundred bytes to a few MiB, which O_DIRECT would have to pad to
//! whole blocks and rewrite at the tail; and tmpfs, where tests keep their data, refuses O_DIRECT.
//! Durability comes from `fdatasync` after each group commit, which is what the page cache
//! cannot give.
//!
//! Reading a log back happens once, at start, before the executors run; it uses plain `std::fs`
//! in the caller.

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, OpenOptions};

/// One append-only file of a log.
pub struct AppendFile {
    file: BufferedFile,
    path: PathBuf,
    len: u64,
}

impl AppendFile {
    /// Opens `path` for appending, creating it if missing, and continues at its current end.
    /// A file created here has its directory entry synced, so it survives a crash.
    pub async fn open(path: &Path) -> io::Result<AppendFile> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .buffered_open(path)
            .await
            .map_err(io::Error::from)?;
        let len = file.file_size().await.map_err(io::Error::from)?;
        if !existed && let Some(dir) = path.parent() {
            sync_dir(dir).await?;
        }
        Ok(AppendFile {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends all of `bytes`. A short write (a full disk) is an error, and the file may then
    /// hold a prefix of `bytes`: the caller starts a new file rather than append after a torn
    /// tail.
    pub async fn append(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let wanted = bytes.len();
        let written = self
            .file
            .write_at(bytes, self.len)
            .await
            .map_err(io::Error::from)?;
        self.len += written as u64;
        if written < wanted {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("short write: {written} of {wanted} bytes"),
            ));
        }
        Ok(())
    }

    /// Makes everything appended so far durable (`fdatasync`).
    pub async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(io::Error::from)
    }

    pub async fn close(self) -> io::Result<()> {
        self.file.close().await.map_err(io::Error::from)
    }
}

/// Syncs a directory, so that files created or removed in it stay so after a crash.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(io::Error::from)?;
    let result = directory.sync().await.map_err(io::Error::from);
    let _ = directory.close().await;
    result
}

/// Removes a file; a file already gone is not an error.
pub async fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
