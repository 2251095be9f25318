//! Which calls get recorded: the daemon's board loop hands call control's bridges and
//! CDRs to [`CallRecorder`], which starts and stops [`Recorder`] recordings by the
//! `[recording]` policy of the analog extensions involved, and the frames of the ports
//! through a [`Tap`] (from the ports in the board loop, to the ports through
//! [`TapSink`] around the media engine's [`PortSink`]).
//!
//! Rules: a bridge between two ports, either of them an extension whose policy is
//! `always`, records keyed on the first port of the first bridge (call control bridges
//! caller first); a bridge between a port and a SIP leg records keyed on the port when
//! the port's extension is `always` (the port's voice is left when the port is the
//! first end, i.e. the caller). Later bridges of the same call (hold, transfer) keep
//! the recording going; the CDR naming one of its ports ends it under the CDR's call
//! id. Limits: a SIP phone's own policy is not looked at (only analog extensions'),
//! and leg-to-leg calls are not recorded.

use std::collections::HashMap;
use std::path::PathBuf;

use line_proto::Audio;
use tokio::sync::mpsc;

use crate::call::MediaEnd;
use crate::cdr::Cdr;
use crate::config::{Config, RecordingPolicy};
use crate::media_engine::PortSink;
use crate::store::StoreWriter;

use super::guard::Statvfs;
use super::{Layout, Recorder, RecorderError, Side, StatsSnapshot, Tap};

/// The board loop's recording decisions (see the module docs).
#[derive(Debug)]
pub struct CallRecorder {
    recorder: Recorder,
    /// Ports whose extension records every call.
    always: HashMap<u8, bool>,
}

impl CallRecorder {
    /// Wraps `recorder` with the policy of `config`'s analog extensions.
    pub fn new(recorder: Recorder, config: &Config) -> Self {
        let always = config
            .extensions
            .iter()
            .map(|e| {
                let on = config.recording.policy(e.number.as_str()) == RecordingPolicy::Always;
                (e.port.get(), on)
            })
            .collect();
        Self { recorder, always }
    }

    fn always(&self, port: u8) -> bool {
        self.always.get(&port).copied().unwrap_or(false)
    }

    /// Whether any extension records (nothing to do otherwise).
    pub fn enabled(&self) -> bool {
        self.always.values().any(|&on| on)
    }

    /// A tap for frames.
    pub fn tap(&self) -> Tap {
        self.recorder.tap()
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.recorder.stats()
    }

    /// Call control bridged `a` and `b` (`Output::Connect`).
    pub fn connect(&mut self, a: MediaEnd, b: MediaEnd) {
        match (a, b) {
            (MediaEnd::Port(x), MediaEnd::Port(y)) => {
                if (self.always(x) || self.always(y))
                    && !self.recorder.records_port(x)
                    && !self.recorder.records_port(y)
                {
                    self.recorder.start(x, Layout::ports(x, y));
                }
            }
            (MediaEnd::Port(p), MediaEnd::Leg(_)) | (MediaEnd::Leg(_), MediaEnd::Port(p)) => {
                if self.always(p) && !self.recorder.records_port(p) {
                    let port_first = matches!(a, MediaEnd::Port(_));
                    self.recorder.start(p, Layout::port_and_leg(p, port_first));
                }
            }
            (MediaEnd::Leg(_), MediaEnd::Leg(_)) => {}
        }
    }

    /// A call ended (`Output::Cdr`): its recording, if any, ends under its call id.
    pub fn cdr(&mut self, cdr: &Cdr) {
        for port in [cdr.caller_port, cdr.callee_port].into_iter().flatten() {
            if self.recorder.is_recording(port) {
                self.recorder.stop(port, Some(cdr.call_id.clone()));
            }
        }
    }
}

/// A [`PortSink`] that shows every frame to the recorder's tap before sending it.
#[derive(Debug)]
pub struct TapSink<S> {
    inner: S,
    tap: Tap,
}

impl<S> TapSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, tap: Tap) -> Self {
        Self { inner, tap }
    }
}

impl<S: PortSink> PortSink for TapSink<S> {
    fn send_audio(&self, port: u8, audio: Audio) {
        self.tap.frame(port, Side::ToPort, &audio);
        self.inner.send_audio(port, audio);
    }
}

/// The recorder of a running daemon and the work to await at shutdown.
#[derive(Debug)]
pub struct DaemonRecorder {
    /// For the board loop.
    pub calls: CallRecorder,
    /// The writer thread: joined after every handle (and tap) is dropped.
    pub thread: std::thread::JoinHandle<()>,
    /// The registrar: awaited after the thread, before the store writer stops.
    pub registrar: tokio::task::JoinHandle<()>,
    /// Retention (if configured): stopped by `stop`.
    pub retention: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the recorder for the daemon: the writer thread on `[paths] recordings`
/// with the `[recording]` reserve measured by statvfs, the registrar on `writer`, and
/// retention when `retention_days` is set (HQ must have a file first when `[hq]` is).
pub fn start(
    config: &Config,
    writer: &StoreWriter,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<DaemonRecorder, RecorderError> {
    let dir: PathBuf = config.paths.recordings.clone();
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    let (recorder, thread) = Recorder::spawn(
        dir.clone(),
        config.recording.min_free_bytes,
        Box::new(Statvfs),
        finished_tx,
    )?;
    let registrar = tokio::spawn(super::register_task(writer.clone(), finished_rx));
    let retention = config.recording.retention.map(|keep| {
        tokio::spawn(super::retention_task(
            writer.clone(),
            dir,
            keep,
            config.hq.is_some(),
            stop.clone(),
        ))
    });
    Ok(DaemonRecorder {
        calls: CallRecorder::new(recorder, config),
        thread,
        registrar,
        retention,
    })
}
