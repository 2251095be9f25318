//! Recording files on HQ's disk: resumable uploads verified by sha256.
//!
//! A file in progress is `<files_dir>/<sha256>.part`; a chunk is appended only at
//! exactly the `.part` file's length (the box asks [`FileStore::status`] first after
//! an interruption), and only whole chunks are written (the body is read completely
//! before the write, so a chunk cut off mid-request writes nothing). When the last
//! byte of the size announced in the recording's metadata arrives, the file is
//! hashed; it is renamed to `<files_dir>/<sha256>` only if the hash matches, and the
//! `.part` is removed otherwise, so a kept file is always the one announced.
//!
//! Limits: one upload per file at a time per process (a second concurrent writer is
//! refused); instances sharing PostgreSQL should share `files_dir` (e.g. NFS) or a
//! box's uploads must reach one instance.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::hq::{Error, Result};
use crate::wire::FileStatus;

/// Why a chunk was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// The chunk does not start where the partial file ends.
    #[error("chunk at offset {offset}, but HQ holds {received} bytes: resume at {received}")]
    WrongOffset {
        /// The offset sent.
        offset: u64,
        /// Bytes held.
        received: u64,
    },
    /// The chunk goes past the announced size.
    #[error("chunk ends at byte {end}, past the announced size {size}")]
    PastEnd {
        /// Where the chunk would end.
        end: u64,
        /// The announced size.
        size: u64,
    },
    /// The complete file's sha256 is not the announced one; the partial file was
    /// discarded.
    #[error("the file's sha256 is {actual}, not {expected}: discarded, upload again from 0")]
    HashMismatch {
        /// The announced hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// Another upload of the same file is in progress.
    #[error("another upload of this file is in progress")]
    Busy,
}

/// The files directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    /// Files with a write in progress in this process.
    busy: Arc<Mutex<HashSet<String>>>,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

struct BusyGuard {
    busy: Arc<Mutex<HashSet<String>>>,
    sha: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.sha);
    }
}

impl FileStore {
    /// Uses (creating) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io("create files directory", &dir))?;
        Ok(FileStore {
            dir,
            busy: Arc::default(),
        })
    }

    fn complete_path(&self, sha: &str) -> PathBuf {
        self.dir.join(sha)
    }

    fn part_path(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.part"))
    }

    /// What HQ holds of `sha` (a valid lowercase sha256 hex, checked by the caller).
    pub async fn status(&self, sha: &str) -> Result<FileStatus> {
        let (complete, part) = (self.complete_path(sha), self.part_path(sha));
        let sha = sha.to_owned();
        tokio::task::spawn_blocking(move || status_blocking(&sha, &complete, &part))
            .await
            .map_err(|source| Error::Join {
                op: "file status",
                source,
            })?
    }

    /// Appends `chunk` at `offset` to the file `sha` of announced `size`.
    pub async fn put_chunk(
        &self,
        sha: &str,
        offset: u64,
        chunk: axum::body::Bytes,
        size: u64,
    ) -> Result<std::result::Result<FileStatus, ChunkError>> {
        {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            if !busy.insert(sha.to_owned()) {
                return Ok(Err(ChunkError::Busy));
            }
        }
        let guard = BusyGuard {
            busy: Arc::clone(&self.busy),
            sha: sha.to_owned(),
        };
        let (complete, part, dir) = (
            self.complete_path(sha),
            self.part_path(sha),
            self.dir.clone(),
        );
        let sha = sha.to_owned();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            put_blocking(&sha, offset, &chunk, size, &complete, &part, &dir)
        })
        .await
        .map_err(|source| Error::Join {
            op: "file chunk",
            source,
        })?
    }
}

fn status_blocking(sha: &str, complete: &Path, part: &Path) -> Result<FileStatus> {
    if let Ok(meta) = std::fs::metadata(complete) {
        return Ok(FileStatus {
            sha256: sha.to_owned(),
            received: meta.len(),
            complete: true,
        });
    }
    let received = match std::fs::metadata(part) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io("stat", part)(e)),
    };
    Ok(FileStatus {
        sha256: sha.to_owned(),
        received,
        complete: false,
    })
}

fn put_blocking(
    sha: &str,
    offset: u64,
    chunk: &[u8],
    size: u64,
    complete: &Path,
    part: &Path,
    dir: &Path,
) -> Result<std::result::Result<FileStatus, ChunkError>> {
    let status = status_blocking(sha, complete, part)?;
    if status.complete {
        return Ok(Ok(status));
    }
    if offset != status.received {
        return Ok(Err(ChunkError::WrongOffset {
            offset,
            received: status.received,
        }));
    }
    let end = offset + chunk.len() as u64;
    if end > size {
        return Ok(Err(ChunkError::PastEnd { end, size }));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .map_err(io("open", part))?;
    file.write_all(chunk).map_err(io("write", part))?;
    file.sync_data().map_err(io("sync", part))?;
    drop(file);
    if end < size {
        return Ok(Ok(FileStatus {
            sha256: sha.to_owned(),
            received: end,
            complete: false,
        }));
    }
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(part).map_err(io("open", part))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io("read", part))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != sha {
        std::fs::remove_file(part).map_err(io("remove", part))?;
        return Ok(Err(ChunkError::HashMismatch {
            expected: sha.to_owned(),
            actual,
        }));
    }
    std::fs::rename(part, complete).map_err(io("rename", part))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the rename durable; a failure here only risks redoing the upload.
        let _ = d.sync_all();
    }
    Ok(Ok(FileStatus {
        sha256: sha.to_owned(),
        received: size,
        complete: true,
    }))
}
