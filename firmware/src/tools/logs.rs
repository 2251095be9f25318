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

/// A log level, least severe first (as `tracing` writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `TRACE`.
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// The lower-case name (`warn`), as in `?level=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// The level named `name` (any case).
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(name))
    }
}

/// One line of the recent logs ([`RecentLogs::lines`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// Its level (`None`: a line without one, such as a continuation).
    pub level: Option<Level>,
    /// The line without terminal colour codes.
    pub text: String,
}

/// `text` without ANSI escape sequences (the formatter colours levels and fields).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then one final byte in @..~.
            if chars.next() == Some('[') {
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The level a formatted line names: the first word that is one (after the time).
fn level_of(line: &str) -> Option<Level> {
    line.split_whitespace().take(3).find_map(|w| match w {
        "TRACE" => Some(Level::Trace),
        "DEBUG" => Some(Level::Debug),
        "INFO" => Some(Level::Info),
        "WARN" => Some(Level::Warn),
        "ERROR" => Some(Level::Error),
        _ => None,
    })
}

impl RecentLogs {
    /// The newest `limit` lines at `min` or above (lines without a level go with the
    /// line before them), oldest first, colour codes removed.
    pub fn lines(&self, min: Level, limit: usize) -> Vec<LogLine> {
        let all = self.snapshot();
        let text = String::from_utf8_lossy(&all);
        let mut kept = Vec::new();
        let mut last_kept = false;
        for raw in text.lines() {
            let line = strip_ansi(raw);
            let level = level_of(&line);
            let keep = match level {
                Some(l) => l >= min,
                None => last_kept,
            };
            last_kept = keep;
            if keep {
                kept.push(LogLine { level, text: line });
            }
        }
        let skip = kept.len().saturating_sub(limit);
        kept.split_off(skip)
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
    fn lines_are_filtered_by_level_without_colour_codes() {
        let logs = RecentLogs::default();
        logs.push(b"2026-11-30T17:00:00.000001Z  INFO branchd: started\n");
        logs.push(
            b"\x1b[2m2026-11-30T17:00:01.000001Z\x1b[0m \x1b[33m WARN\x1b[0m \x1b[2mbranchline::sync\x1b[0m: HQ unreachable\n",
        );
        logs.push(b"  continuation of the warning\n");
        logs.push(b"2026-11-30T17:00:02.000001Z DEBUG branchd: detail\n");
        logs.push(b"2026-11-30T17:00:03.000001Z ERROR branchd: store failed\n");
        let warn = logs.lines(Level::Warn, 100);
        let texts: Vec<&str> = warn.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "2026-11-30T17:00:01.000001Z  WARN branchline::sync: HQ unreachable",
                "  continuation of the warning",
                "2026-11-30T17:00:03.000001Z ERROR branchd: store failed",
            ]
        );
        assert_eq!(warn[0].level, Some(Level::Warn));
        assert_eq!(warn[1].level, None);
        assert_eq!(logs.lines(Level::Trace, 100).len(), 5);
        // The newest `limit` lines.
        let last = logs.lines(Level::Info, 2);
        assert_eq!(last[1].level, Some(Level::Error));
        assert_eq!(last.len(), 2);
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
    }

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
