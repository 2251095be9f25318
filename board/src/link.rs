//! The serial link to the line controller: one reader thread that reassembles and
//! decodes frames into a tokio channel, and a cloneable [`LinkSender`] that numbers,
//! encodes and writes frames.
//!
//! The same code opens a real UART and the simulator's pty.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use line_proto::{Body, DecodeError, Event, Frame, MAX_WIRE_FRAME};
use serialport::TTYPort;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Read timeout of the port: how often the reader checks that someone still listens.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
/// Frames buffered between the reader thread and the daemon.
const CHANNEL_CAPACITY: usize = 256;

/// Opens the link to the line controller (namespace for [`LineLink::open`]).
#[derive(Debug)]
pub enum LineLink {}

impl LineLink {
    /// Opens `path` at `baud` exactly as real hardware is opened, and starts the reader
    /// thread.
    ///
    /// Returns the sender for commands and audio, the receiver of decoded frames, and the
    /// counters. The receiver yields `None` once the reader thread has ended: on a hard
    /// port error (device gone, pty master closed). The reader also ends, within the read
    /// timeout, when the receiver is dropped.
    pub fn open(path: &Path, baud: u32) -> Result<(LinkSender, mpsc::Receiver<Frame>, LinkStats)> {
        let open_err = |source| Error::SerialOpen {
            path: path.to_owned(),
            source,
        };
        let name = path.to_str().ok_or_else(|| {
            open_err(serialport::Error::new(
                serialport::ErrorKind::InvalidInput,
                "device path is not valid UTF-8",
            ))
        })?;
        let reader = serialport::new(name, baud)
            .timeout(READ_TIMEOUT)
            .open_native()
            .map_err(open_err)?;
        let writer = reader.try_clone_native().map_err(open_err)?;

        let stats = LinkStats::default();
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let rx_stats = stats.clone();
        let rx_path = path.to_owned();
        std::thread::Builder::new()
            .name("line-link-rx".into())
            .spawn(move || read_loop(reader, &rx_path, &tx, &rx_stats))
            .map_err(|source| Error::Thread {
                name: "line-link-rx",
                source,
            })?;

        let sender = LinkSender {
            inner: Arc::new(SenderInner {
                path: path.to_owned(),
                port: Mutex::new(WriteState {
                    port: writer,
                    seq: 0,
                    resync: false,
                }),
                stats: stats.clone(),
            }),
        };
        Ok((sender, rx, stats))
    }
}

/// Link counters, shared with the reader thread and senders.
#[derive(Debug, Clone, Default)]
pub struct LinkStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    frames_rx: AtomicU64,
    frames_tx: AtomicU64,
    invalid_rx: AtomicU64,
    seq_gaps_rx: AtomicU64,
    bytes_rx: AtomicU64,
}

/// A copy of the link counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStatsSnapshot {
    /// Good frames received.
    pub frames_rx: u64,
    /// Frames written.
    pub frames_tx: u64,
    /// Invalid frames received (counted and skipped).
    pub invalid_rx: u64,
    /// Frames the line controller sent that never arrived, by sequence number
    /// (an invalid frame also shows up here, since its seq is lost with it).
    pub seq_gaps_rx: u64,
    /// Bytes received.
    pub bytes_rx: u64,
}

impl LinkStats {
    /// The counters now.
    pub fn snapshot(&self) -> LinkStatsSnapshot {
        let s = &self.inner;
        LinkStatsSnapshot {
            frames_rx: s.frames_rx.load(Ordering::Relaxed),
            frames_tx: s.frames_tx.load(Ordering::Relaxed),
            invalid_rx: s.invalid_rx.load(Ordering::Relaxed),
            seq_gaps_rx: s.seq_gaps_rx.load(Ordering::Relaxed),
            bytes_rx: s.bytes_rx.load(Ordering::Relaxed),
        }
    }
}

/// Writes frames to the line controller; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct LinkSender {
    inner: Arc<SenderInner>,
}

#[derive(Debug)]
struct SenderInner {
    path: PathBuf,
    /// One lock around seq assignment and the write, so frames never interleave and go
    /// out in seq order.
    port: Mutex<WriteState>,
    stats: LinkStats,
}

#[derive(Debug)]
struct WriteState {
    port: TTYPort,
    /// Next outgoing sequence number.
    seq: u8,
    /// A previous write failed part-way: start the next one with a terminator so the
    /// controller drops the torn frame instead of gluing it to the next.
    resync: bool,
}

impl LinkSender {
    /// Sends `body` to `port` with the next sequence number.
    pub fn send(&self, port: u8, body: Body) -> Result<()> {
        let mut st = self
            .inner
            .port
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let frame = Frame {
            port,
            seq: st.seq,
            body,
        };
        let mut buf = [0u8; MAX_WIRE_FRAME + 1];
        let start = usize::from(st.resync);
        let n = line_proto::encode(&frame, &mut buf[start..])
            .map_err(|reason| Error::Encode { port, reason })?;
        let bytes = &buf[..start + n];
        st.resync = true;
        st.port.write_all(bytes).map_err(|source| Error::SerialIo {
            path: self.inner.path.clone(),
            source,
        })?;
        st.resync = false;
        st.seq = st.seq.wrapping_add(1);
        self.inner
            .stats
            .inner
            .frames_tx
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The device path this link writes to.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// Tracks the controller's sequence numbers to count lost frames.
#[derive(Debug, Default)]
struct SeqTracker {
    expected: Option<u8>,
}

impl SeqTracker {
    /// Frames missing before `frame` (0 when in order).
    fn observe(&mut self, frame: &Frame) -> u64 {
        // The controller restarts its numbering when it boots; Ready marks that.
        let restart = matches!(frame.body, Body::Event(Event::Ready { .. }));
        let gap = match self.expected {
            Some(e) if !restart => u64::from(frame.seq.wrapping_sub(e)),
            _ => 0,
        };
        self.expected = Some(frame.seq.wrapping_add(1));
        gap
    }
}

fn read_loop(mut port: TTYPort, path: &Path, tx: &mpsc::Sender<Frame>, stats: &LinkStats) {
    let s = &stats.inner;
    let mut buf: Vec<u8> = Vec::with_capacity(4 * MAX_WIRE_FRAME);
    let mut chunk = [0u8; 1024];
    let mut seq = SeqTracker::default();
    loop {
        if tx.is_closed() {
            tracing::debug!(path = %path.display(), "line link receiver dropped; reader ends");
            return;
        }
        let n = match port.read(&mut chunk) {
            Ok(0) => {
                tracing::warn!(path = %path.display(), "line controller link closed (EOF)");
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "line controller link failed; reader ends");
                return;
            }
        };
        s.bytes_rx.fetch_add(n as u64, Ordering::Relaxed);
        buf.extend_from_slice(&chunk[..n]);
        loop {
            // Idle fill between frames: drop it here so a line that idles with zeros
            // cannot grow the buffer while `decode` waits for a frame.
            let lead = buf.iter().take_while(|&&b| b == 0).count();
            buf.drain(..lead);
            match line_proto::decode(&buf) {
                Ok((frame, used)) => {
                    buf.drain(..used);
                    s.frames_rx.fetch_add(1, Ordering::Relaxed);
                    let gap = seq.observe(&frame);
                    if gap > 0 {
                        s.seq_gaps_rx.fetch_add(gap, Ordering::Relaxed);
                        tracing::debug!(
                            port = frame.port,
                            seq = frame.seq,
                            missing = gap,
                            "sequence gap from line controller"
                        );
                    }
                    if tx.blocking_send(frame).is_err() {
                        return;
                    }
                }
                Err(DecodeError::Incomplete) => break,
                Err(DecodeError::Invalid { consumed, reason }) => {
                    buf.drain(..consumed.min(buf.len()));
                    s.invalid_rx.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), %reason, "invalid frame from line controller skipped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use line_proto::Command;

    fn frame(seq: u8, body: Body) -> Frame {
        Frame { port: 1, seq, body }
    }

    #[test]
    fn seq_tracker_counts_missing_frames() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(&frame(10, Body::Event(Event::OffHook))), 0);
        assert_eq!(t.observe(&frame(11, Body::Event(Event::OnHook))), 0);
        assert_eq!(t.observe(&frame(14, Body::Event(Event::OnHook))), 2);
        assert_eq!(t.observe(&frame(255, Body::Event(Event::OnHook))), 240);
        assert_eq!(t.observe(&frame(0, Body::Event(Event::OnHook))), 0);
        let ready = Event::Ready {
            protocol: 1,
            firmware: 1,
            fxs_ports: 1,
            fxo_ports: 1,
        };
        assert_eq!(t.observe(&frame(0, Body::Event(ready))), 0);
        assert_eq!(t.observe(&frame(1, Body::Command(Command::StopRing))), 0);
    }

    #[test]
    fn open_missing_device_names_path() {
        match LineLink::open(Path::new("/dev/nonexistent-branchline-uart"), 921_600) {
            Err(e @ Error::SerialOpen { .. }) => {
                assert!(
                    e.to_string().contains("/dev/nonexistent-branchline-uart"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
