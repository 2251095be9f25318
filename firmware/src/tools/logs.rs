//! The daemon's recent log output, kept in memory for the diagnostics bundle: the log
//! writer ([`TeeWriter`]) sends every formatted line to standard error (journald on
//! the box) and into a ring of at most [`RECENT_LOG_BYTES`], oldest lines dropped
//! first. Nothing is written to flash for it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes of recent log output kept.
pub const RECENT_LOG_BYTES: usize = 256 * 1024;

/// The ring of recent log output. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct RecentLogs {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug, Default)]
struct Ring {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl RecentLogs {
    /// Appends one write of the log formatter (normally one whole line).
    pub fn push(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let data = &data[data.len().saturating_sub(RECENT_LOG_BYTES)..];
        let mut ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while ring.bytes + data.len() > RECENT_LOG_BYTES {
            match ring.chunks.pop_front() {
                Some(old) => ring.bytes -= old.len(),
                None => break,
            }
        }
        ring.bytes += data.len();
        ring.chunks.push_back(data.to_vec());
    }

    /// Everything kept, oldest first.
    pub fn snapshot(&self) -> Vec<u8> {
        let ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(ring.bytes);
        for c in &ring.chunks {
            out.extend_from_slice(c);
        }
        out
    }
}

/// The log writer of `branchd`: standard error plus [`RecentLogs`].
#[derive(Debug, Clone)]
pub struct TeeWriter {
    logs: RecentLogs,
}

impl TeeWriter {
    /// A writer feeding `logs`.
    pub fn new(logs: RecentLogs) -> TeeWriter {
        TeeWriter { logs }
    }
}

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.logs.push(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for TeeWriter {
    type Writer = TeeWriter;

    fn make_writer(&'a self) -> TeeWriter {
        self.clone()
    }
}

/// The process's ring, set up by `branchd`'s logging (`None` when it keeps none,
/// e.g. in tests that run the daemon in-process).
static INSTALLED: std::sync::OnceLock<RecentLogs> = std::sync::OnceLock::new();

/// Sets up the process's ring and answers the writer for the log formatter.
pub fn install() -> TeeWriter {
    TeeWriter::new(INSTALLED.get_or_init(RecentLogs::default).clone())
}

/// The process's ring, when [`install`] ran.
pub fn installed() -> Option<RecentLogs> {
    INSTALLED.get().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_size() {
        let logs = RecentLogs::default();
        let line = vec![b'x'; 1000];
        for _ in 0..(RECENT_LOG_BYTES / 1000 + 10) {
            logs.push(&line);
        }
        logs.push(b"last line\n");
        let all = logs.snapshot();
        assert!(all.len() <= RECENT_LOG_BYTES);
        assert!(all.len() > RECENT_LOG_BYTES - 1100);
        assert!(all.ends_with(b"last line\n"));
    }
}
