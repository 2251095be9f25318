//! The simulated line controller: plays the MCU on a pty so the daemon opens and drives
//! it exactly like a real UART.
//!
//! [`Simulator::start`] opens a pty pair (raw mode), keeps one slave descriptor open so
//! the pty survives the daemon closing and reopening it, and runs two threads: one reads
//! the master and executes commands, one ticks every 20 ms to exchange audio and repeat
//! PSTN ring bursts. Tests and the console drive phones ([`Phone`]) and PSTN lines
//! ([`PstnLine`]) through a [`SimHandle`].
//!
//! Writes towards the daemon never block for long: like a UART with nobody listening,
//! frames that the pty cannot take within a short time are dropped and counted
//! (`SimStats::tx_dropped`).

mod console;
#[cfg(test)]
mod tests;

pub use console::{console_command, serve_console};

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use line_proto::g711::Law;
use line_proto::{
    Body, Cadence, CallerId, Command, Deframer, Event, FaultKind, Frame, ToneSpec, AUDIO_FRAME_LEN,
    BOARD_PORT, MAX_WIRE_FRAME, PROTOCOL_VERSION,
};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

use crate::dsp::{SineGenerator, ToneGenerator};
use crate::error::{Error, Result};
use crate::gpio::{MemoryGpio, MemoryGpioHandle};
use crate::profile::{port_ranges, BoardProfile, PortKind};

/// Firmware version the simulated MCU reports in [`Event::Ready`].
pub const SIM_FIRMWARE: u16 = 0x0100;
/// [`Event::Rejected`] reason: the command does not apply to this kind of port.
pub const REJECT_WRONG_PORT_KIND: u8 = 1;
/// [`Event::Rejected`] reason: no such port (or a port command sent to the board).
pub const REJECT_NO_SUCH_PORT: u8 = 2;
/// [`Event::Rejected`] reason: not possible in the port's state (ring an off-hook
/// phone, dial on a released FXO line).
pub const REJECT_BAD_STATE: u8 = 3;
/// [`Event::Rejected`] reason: the frame is an event, which only the MCU sends.
pub const REJECT_NOT_A_COMMAND: u8 = 4;
/// Interval between audio frames and ticks.
pub const TICK: Duration = Duration::from_millis(20);
/// Interval between PSTN ring bursts (US: 2 s on, 4 s off).
pub const PSTN_RING_PERIOD: Duration = Duration::from_secs(6);
/// Gap between digits dialled by [`Phone::dial`].
pub const DIGIT_GAP: Duration = Duration::from_millis(60);
/// Most audio kept in a port's "heard" buffer (30 s at 8 kHz).
pub const HEARD_CAP: usize = 30 * 8000;
/// Most received audio frames queued per port (1 s); older ones are dropped.
const RX_QUEUE_CAP: usize = 50;
/// How long a write towards the daemon may wait for room in the pty.
const WRITE_WAIT: Duration = Duration::from_millis(50);
/// How often the reader thread checks the stop flag.
const POLL_INTERVAL_MS: u16 = 50;

/// Counters of the simulated MCU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimStats {
    /// Good frames received from the daemon.
    pub frames_rx: u64,
    /// Frames written towards the daemon.
    pub frames_tx: u64,
    /// Invalid frames received (counted and skipped).
    pub invalid_rx: u64,
    /// Commands answered with [`Event::Rejected`].
    pub rejected: u64,
    /// Frames dropped because the pty had no room (nobody reading).
    pub tx_dropped: u64,
}

#[derive(Debug)]
struct PstnRing {
    caller_id: Option<CallerId>,
    next_at: Instant,
}

#[derive(Debug)]
struct PortState {
    kind: PortKind,
    /// FXS: handset lifted.
    off_hook: bool,
    /// FXS: ringing with this cadence.
    ringing: Option<Cadence>,
    /// FXS: last caller ID the daemon sent to the phone.
    caller_id: Option<CallerId>,
    /// FXS: polarity set by the daemon.
    polarity_reversed: bool,
    /// FXO: line seized by the daemon.
    seized: bool,
    /// FXO: digits dialled since the last seize.
    dialed: String,
    /// FXO: the simulated PSTN rings this line.
    pstn_ring: Option<PstnRing>,
    /// FXO: polarity as set by the simulated exchange.
    far_polarity_reversed: bool,
    /// Tone the daemon asked the MCU to play towards the port.
    tone: Option<ToneGenerator>,
    /// (tx, rx) gains in tenths of a dB.
    gains: (i8, i8),
    /// Injected fault (self-test fails while set).
    fault: Option<FaultKind>,
    /// What the phone's microphone / the far PSTN party sends; `None` is silence.
    mic: Option<Mic>,
    /// Audio received from the daemon, not yet played.
    rx_audio: VecDeque<[i16; AUDIO_FRAME_LEN]>,
    /// What the earpiece / far party heard, newest last.
    heard: VecDeque<i16>,
    /// The voice path looped back at the codec (`Command::SetLoopback`): what the
    /// daemon sends the port comes back as the port's audio.
    loopback: bool,
    /// Samples of mains hum sent so far (a foreign-voltage fault hums in the loop).
    hum_at: u64,
}

impl PortState {
    fn new(kind: PortKind) -> Self {
        PortState {
            kind,
            off_hook: false,
            ringing: None,
            caller_id: None,
            polarity_reversed: false,
            seized: false,
            dialed: String::new(),
            pstn_ring: None,
            far_polarity_reversed: false,
            tone: None,
            gains: (0, 0),
            fault: None,
            mic: None,
            rx_audio: VecDeque::new(),
            heard: VecDeque::new(),
            loopback: false,
            hum_at: 0,
        }
    }

    fn in_audio(&self) -> bool {
        match self.kind {
            PortKind::Fxs => self.off_hook,
            PortKind::Fxo => self.seized,
        }
    }
}

/// The output side of the pty master plus everything the MCU knows; one lock so state
/// changes and the frames reporting them go out in the same order.
#[derive(Debug)]
struct Core {
    /// Master end of the pty (non-blocking); `None` once the simulator stopped.
    out: Option<File>,
    /// Next outgoing sequence number.
    seq: u8,
    /// A write was cut short: start the next one with a terminator.
    resync: bool,
    /// The last write found no room at all: don't wait for room again until one fits.
    congested: bool,
    /// Index 0 is port 1.
    ports: Vec<PortState>,
    stats: SimStats,
    law: Law,
    fxs_ports: u8,
    fxo_ports: u8,
}

impl Core {
    fn port(&mut self, port: u8) -> Option<&mut PortState> {
        usize::from(port)
            .checked_sub(1)
            .and_then(|i| self.ports.get_mut(i))
    }

    fn send(&mut self, port: u8, body: Body) {
        let frame = Frame {
            port,
            seq: self.seq,
            body,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut buf = [0u8; MAX_WIRE_FRAME + 1];
        let start = usize::from(self.resync);
        match line_proto::encode(&frame, &mut buf[start..]) {
            Ok(n) => {
                if self.write_bytes(&buf[..start + n]) {
                    self.stats.frames_tx += 1;
                } else {
                    self.stats.tx_dropped += 1;
                }
            }
            Err(e) => tracing::error!(port, error = %e, "simulator cannot encode its own frame"),
        }
    }

    fn send_event(&mut self, port: u8, event: Event) {
        self.send(port, Body::Event(event));
    }

    /// Writes `bytes` to the master; true when all went out.
    fn write_bytes(&mut self, bytes: &[u8]) -> bool {
        let Some(out) = self.out.as_mut() else {
            return false;
        };
        let deadline = Instant::now()
            + if self.congested {
                Duration::ZERO
            } else {
                WRITE_WAIT
            };
        let mut written = 0;
        while written < bytes.len() {
            match out.write(&bytes[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
                    if let Err(e) = poll(&mut fds, PollTimeout::from(ms)) {
                        tracing::debug!(error = %e, "simulator poll for write failed");
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "simulator write failed");
                    break;
                }
            }
        }
        self.congested = written == 0;
        if written > 0 && written < bytes.len() {
            self.resync = true;
        } else if written == bytes.len() {
            self.resync = false;
        }
        written == bytes.len()
    }

    fn ready(&mut self) {
        let ev = Event::Ready {
            protocol: PROTOCOL_VERSION,
            firmware: SIM_FIRMWARE,
            fxs_ports: self.fxs_ports,
            fxo_ports: self.fxo_ports,
        };
        self.send_event(BOARD_PORT, ev);
    }

    fn reject(&mut self, port: u8, seq: u8, reason: u8) {
        self.stats.rejected += 1;
        self.send_event(port, Event::Rejected { seq, reason });
    }

    /// Executes one frame received from the daemon.
    fn handle_frame(&mut self, frame: Frame) {
        self.stats.frames_rx += 1;
        let Frame { port, seq, body } = frame;
        let cmd = match body {
            Body::Command(Command::Hello { .. }) => return self.ready(),
            Body::Command(c) => c,
            Body::Audio(a) => {
                let Some(p) = self.port(port) else {
                    return self.reject(port, seq, REJECT_NO_SUCH_PORT);
                };
                let mut pcm = [0i16; AUDIO_FRAME_LEN];
                a.law.decode_block(&a.samples, &mut pcm);
                if p.rx_audio.len() >= RX_QUEUE_CAP {
                    p.rx_audio.pop_front();
                }
                p.rx_audio.push_back(pcm);
                return;
            }
            Body::Event(_) => return self.reject(port, seq, REJECT_NOT_A_COMMAND),
        };
        let Some(p) = self.port(port) else {
            return self.reject(port, seq, REJECT_NO_SUCH_PORT);
        };
        let fxs = p.kind == PortKind::Fxs;
        let mut reply = None;
        let outcome: Result<(), u8> = match cmd {
            Command::Hello { .. } => Ok(()),
            Command::Ring(_)
            | Command::StopRing
            | Command::SendCallerId { .. }
            | Command::SetPolarity { .. }
                if !fxs =>
            {
                Err(REJECT_WRONG_PORT_KIND)
            }
            Command::FxoSeize | Command::FxoRelease | Command::FxoDial(_) if fxs => {
                Err(REJECT_WRONG_PORT_KIND)
            }
            Command::Ring(_) if p.off_hook => Err(REJECT_BAD_STATE),
            Command::Ring(cadence) => {
                p.ringing = Some(cadence);
                // Ringing ends a loopback (the MCU restores the voice path itself).
                p.loopback = false;
                Ok(())
            }
            Command::StopRing => {
                p.ringing = None;
                Ok(())
            }
            Command::SendCallerId { caller_id, .. } => {
                p.caller_id = Some(caller_id);
                Ok(())
            }
            Command::SetPolarity { reversed } => {
                p.polarity_reversed = reversed;
                Ok(())
            }
            Command::FxoSeize => {
                p.loopback = false;
                if !p.seized {
                    p.seized = true;
                    p.dialed.clear();
                }
                p.pstn_ring = None;
                Ok(())
            }
            Command::FxoRelease => {
                p.seized = false;
                p.far_polarity_reversed = false;
                Ok(())
            }
            Command::FxoDial(_) if !p.seized => Err(REJECT_BAD_STATE),
            Command::FxoDial(digits) => {
                p.dialed.push_str(&digits);
                Ok(())
            }
            Command::PlayTone(spec) => {
                p.tone = Some(ToneGenerator::new(spec));
                Ok(())
            }
            Command::StopTone => {
                p.tone = None;
                Ok(())
            }
            Command::SetGains {
                tx_tenth_db,
                rx_tenth_db,
            } => {
                p.gains = (tx_tenth_db, rx_tenth_db);
                Ok(())
            }
            // A loopback on a port in use (off-hook, seized, ringing) is refused.
            Command::SetLoopback { on: true }
                if p.in_audio() || p.ringing.is_some() || p.pstn_ring.is_some() =>
            {
                Err(REJECT_BAD_STATE)
            }
            Command::SetLoopback { on } => {
                p.loopback = on;
                p.hum_at = 0;
                Ok(())
            }
            Command::SelfTest => {
                reply = Some(Event::SelfTestResult {
                    passed: p.fault.is_none(),
                    code: u8::from(p.fault.is_some()),
                });
                Ok(())
            }
            Command::ReadLine => {
                // An injected fault shows in the reading as it would on a real line:
                // no voltage on a cut line, a high one crossed with another circuit,
                // a collapsed feed on a short.
                let (millivolts, microamps) = match (p.fault, p.kind, p.in_audio()) {
                    (Some(FaultKind::NoLineVoltage), _, _) => (0, 0),
                    (Some(FaultKind::ForeignVoltage), _, _) => (95_000, 0),
                    (Some(FaultKind::OverCurrent), _, _) => (3_000, 60_000),
                    (_, PortKind::Fxs, false) => (48_000, 0),
                    (_, PortKind::Fxs, true) => (8_000, 25_000),
                    (_, PortKind::Fxo, false) => (48_000, 0),
                    (_, PortKind::Fxo, true) => (7_500, 20_000),
                };
                reply = Some(Event::LineReading {
                    millivolts,
                    microamps,
                });
                Ok(())
            }
        };
        match outcome {
            Err(reason) => self.reject(port, seq, reason),
            Ok(()) => {
                if let Some(ev) = reply {
                    self.send_event(port, ev);
                }
            }
        }
    }

    /// One 20 ms tick: play what each port hears, send what each active port picks up,
    /// repeat PSTN ring bursts.
    fn tick(&mut self, now: Instant) {
        let law = self.law;
        let mut out: Vec<(u8, Body)> = Vec::new();
        for (i, p) in self.ports.iter_mut().enumerate() {
            let port = u8::try_from(i + 1).unwrap_or(u8::MAX);
            let mut heard = p.rx_audio.pop_front().unwrap_or([0; AUDIO_FRAME_LEN]);
            if let Some(tone) = p.tone.as_mut() {
                let mut t = [0i16; AUDIO_FRAME_LEN];
                tone.fill(&mut t);
                for (h, t) in heard.iter_mut().zip(t) {
                    *h = h.saturating_add(t);
                }
            }
            p.heard.extend(heard);
            let excess = p.heard.len().saturating_sub(HEARD_CAP);
            p.heard.drain(..excess);

            if p.loopback {
                // The frame just received goes back through the codec. A fault takes
                // the voice path with it: a foreign voltage hums over it, anything
                // else (over-current, thermal shutdown, no feed, ringer overload)
                // leaves the codec silent.
                let mut back = match p.fault {
                    None | Some(FaultKind::ForeignVoltage) => heard,
                    Some(_) => [0; AUDIO_FRAME_LEN],
                };
                if p.fault == Some(FaultKind::ForeignVoltage) {
                    for s in &mut back {
                        let t = p.hum_at as f64 / 8000.0;
                        let hum = 6000.0 * (std::f64::consts::TAU * 50.0 * t).sin();
                        *s = s.saturating_add(hum as i16);
                        p.hum_at += 1;
                    }
                }
                let mut samples = [0u8; AUDIO_FRAME_LEN];
                law.encode_block(&back, &mut samples);
                out.push((port, Body::Audio(line_proto::Audio { law, samples })));
            } else if p.in_audio() {
                let mut mic = [0i16; AUDIO_FRAME_LEN];
                if let Some(g) = p.mic.as_mut() {
                    g.fill(&mut mic);
                }
                let mut samples = [0u8; AUDIO_FRAME_LEN];
                law.encode_block(&mic, &mut samples);
                out.push((port, Body::Audio(line_proto::Audio { law, samples })));
            }
            if let Some(ring) = p.pstn_ring.as_mut() {
                if now >= ring.next_at {
                    ring.next_at += PSTN_RING_PERIOD;
                    let caller_id = ring.caller_id.clone();
                    out.push((port, Body::Event(Event::RingDetected { caller_id })));
                }
            }
        }
        for (port, body) in out {
            self.send(port, body);
        }
    }
}

#[derive(Debug)]
struct Shared {
    core: Mutex<Core>,
    /// Tells the reader and ticker threads to end (set by `Simulator::drop`).
    stop: AtomicBool,
    tty_path: PathBuf,
    law: Law,
    fxs_ports: u8,
    fxo_ports: u8,
    /// The board's GPIO as the simulator plays it (LEDs, reset button, relay): the
    /// daemon drives the [`MemoryGpio`] side ([`Simulator::take_gpio`]), the console
    /// and tests the handle.
    gpio: MemoryGpioHandle,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Core> {
        // Every mutation leaves the state consistent; a panicking test thread must not
        // take the simulator down with it.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn port_kind(&self, port: u8) -> Option<PortKind> {
        let (fxs, fxo) = port_ranges(self.fxs_ports, self.fxo_ports);
        if fxs.contains(&port) {
            Some(PortKind::Fxs)
        } else if fxo.contains(&port) {
            Some(PortKind::Fxo)
        } else {
            None
        }
    }

    fn with_port<T>(&self, port: u8, f: impl FnOnce(&mut PortState) -> T) -> T {
        let mut core = self.core();
        let p = core
            .port(port)
            .unwrap_or_else(|| panic!("simulator has no port {port}"));
        f(p)
    }
}

/// The running simulated line controller. Dropping it stops its threads and closes the
/// pty master, which the daemon sees as the device going away.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    /// The GPIO side the daemon drives, until it takes it.
    gpio: Mutex<Option<MemoryGpio>>,
    /// Held open so the pty does not hang up while the daemon closes and reopens it.
    _slave: OwnedFd,
    threads: Vec<JoinHandle<()>>,
}

fn pty_err(what: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Pty {
        what,
        source: io::Error::from(e),
    }
}

impl Simulator {
    /// Opens a pty pair and starts playing the line controller of `profile`, with audio
    /// companded by `law`. Sends [`Event::Ready`] right away, like an MCU at boot.
    pub fn start(profile: &BoardProfile, law: Law) -> Result<Simulator> {
        let pty = nix::pty::openpty(None, None).map_err(pty_err("openpty"))?;
        let mut tio = tcgetattr(&pty.slave).map_err(pty_err("tcgetattr"))?;
        cfmakeraw(&mut tio);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &tio).map_err(pty_err("tcsetattr"))?;
        let tty_path = nix::unistd::ttyname(&pty.slave).map_err(pty_err("ttyname"))?;
        for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .map_err(pty_err("set close-on-exec"))?;
        }
        fcntl(pty.master.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(pty_err("set non-blocking"))?;
        let master = File::from(pty.master);
        let reader = master.try_clone().map_err(|source| Error::Pty {
            what: "dup master",
            source,
        })?;

        let ports = profile
            .fxs_ports()
            .map(|_| PortState::new(PortKind::Fxs))
            .chain(profile.fxo_ports().map(|_| PortState::new(PortKind::Fxo)))
            .collect();
        let (gpio, gpio_handle) = MemoryGpio::new(profile.port_count());
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                out: Some(master),
                seq: 0,
                resync: false,
                congested: false,
                ports,
                stats: SimStats::default(),
                law,
                fxs_ports: profile.fxs_ports,
                fxo_ports: profile.fxo_ports,
            }),
            stop: AtomicBool::new(false),
            tty_path,
            law,
            fxs_ports: profile.fxs_ports,
            fxo_ports: profile.fxo_ports,
            gpio: gpio_handle,
        });
        shared.core().ready();

        let mut sim = Simulator {
            shared: shared.clone(),
            gpio: Mutex::new(Some(gpio)),
            _slave: pty.slave,
            threads: Vec::new(),
        };
        let s = shared.clone();
        sim.threads.push(
            std::thread::Builder::new()
                .name("sim-mcu-rx".into())
                .spawn(move || rx_loop(&s, reader))
                .map_err(|source| Error::Thread {
                    name: "sim-mcu-rx",
                    source,
                })?,
        );
        let s = shared;
        sim.threads.push(
            std::thread::Builder::new()
                .name("sim-mcu-tick".into())
                .spawn(move || tick_loop(&s))
                .map_err(|source| Error::Thread {
                    name: "sim-mcu-tick",
                    source,
                })?,
        );
        Ok(sim)
    }

    /// The pty slave the daemon opens as its UART.
    pub fn tty_path(&self) -> &Path {
        &self.shared.tty_path
    }

    /// The simulated board's GPIO for the daemon to drive (LEDs, reset button,
    /// relay); `None` once taken. The console's `button` and `leds` commands and
    /// [`SimHandle::gpio`] act on the same state.
    pub fn take_gpio(&self) -> Option<MemoryGpio> {
        self.gpio.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A handle to drive and observe the simulated board.
    pub fn handle(&self) -> SimHandle {
        SimHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a simulator thread panicked");
            }
        }
        self.shared.core().out = None;
    }
}

fn rx_loop(shared: &Shared, mut master: File) {
    let mut deframer = Deframer::new();
    let mut chunk = [0u8; 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(POLL_INTERVAL_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "simulator poll failed; reader ends");
                return;
            }
        }
        let n = match master.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // EIO while no slave is open; we hold one, so this is transient at most.
                tracing::debug!(error = %e, "simulator master read failed");
                std::thread::sleep(Duration::from_millis(u64::from(POLL_INTERVAL_MS)));
                continue;
            }
        };
        for &b in &chunk[..n] {
            match deframer.feed(b) {
                None => {}
                Some(Ok(frame)) => shared.core().handle_frame(frame),
                Some(Err(reason)) => {
                    shared.core().stats.invalid_rx += 1;
                    tracing::warn!(%reason, "simulator skipped an invalid frame from the daemon");
                }
            }
        }
    }
}

fn tick_loop(shared: &Shared) {
    let mut next = Instant::now() + TICK;
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        shared.core().tick(now);
        next += TICK;
        // After a long stall (suspended process, overloaded CI) do not burst to catch up.
        if now > next + 5 * TICK {
            next = now + TICK;
        }
    }
}

/// Drives and observes a running [`Simulator`]; cheap to clone, usable from any thread.
///
/// Methods take the simulator's lock briefly; none blocks for long except
/// [`Phone::dial`], which paces digits.
#[derive(Debug, Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl SimHandle {
    /// The simulated phone on FXS `port`.
    ///
    /// # Panics
    /// When `port` is not an FXS port of the profile (a programming error in the test).
    pub fn phone(&self, port: u8) -> Phone {
        assert!(
            self.port_kind(port) == Some(PortKind::Fxs),
            "port {port} is not an FXS port of the simulated board ({:?})",
            self.port_kind(port)
        );
        Phone {
            shared: self.shared.clone(),
            port,
        }
    }

    /// The simulated PSTN line on FXO `port`.
    ///
    /// # Panics
    /// When `port` is not an FXO port of the profile (a programming error in the test).
    pub fn line(&self, port: u8) -> PstnLine {
        assert!(
            self.port_kind(port) == Some(PortKind::Fxo),
            "port {port} is not an FXO port of the simulated board ({:?})",
            self.port_kind(port)
        );
        PstnLine {
            shared: self.shared.clone(),
            port,
        }
    }

    /// The kind of `port`, `None` when the board has no such port.
    pub fn port_kind(&self, port: u8) -> Option<PortKind> {
        self.shared.port_kind(port)
    }

    /// Number of ports (FXS + FXO).
    pub fn port_count(&self) -> u8 {
        self.shared.fxs_ports + self.shared.fxo_ports
    }

    /// The pty slave path the daemon opens.
    pub fn tty_path(&self) -> &Path {
        &self.shared.tty_path
    }

    /// The simulated board's GPIO: LEDs as the daemon set them, the reset button.
    pub fn gpio(&self) -> &MemoryGpioHandle {
        &self.shared.gpio
    }

    /// The law of the audio the simulator sends.
    pub fn law(&self) -> Law {
        self.shared.law
    }

    /// Reports a hardware fault on `port` and makes its self-test fail until cleared.
    ///
    /// # Panics
    /// When the board has no such port.
    pub fn inject_fault(&self, port: u8, kind: FaultKind) {
        let mut core = self.shared.core();
        let p = core
            .port(port)
            .unwrap_or_else(|| panic!("simulator has no port {port}"));
        p.fault = Some(kind);
        core.send_event(port, Event::Fault(kind));
    }

    /// Clears an injected fault (self-test passes again).
    ///
    /// # Panics
    /// When the board has no such port.
    pub fn clear_fault(&self, port: u8) {
        self.shared.with_port(port, |p| p.fault = None);
    }

    /// Writes raw bytes towards the daemon (to test broken frames). Sequence numbers of
    /// later frames are not affected.
    pub fn write_raw(&self, bytes: &[u8]) {
        let mut core = self.shared.core();
        if !core.write_bytes(bytes) {
            core.stats.tx_dropped += 1;
        }
    }

    /// The counters now.
    pub fn stats(&self) -> SimStats {
        self.shared.core().stats
    }

    /// Polls `cond` every 5 ms until it holds (true) or `timeout` passes (false).
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&SimHandle) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// RMS of the last `ms` milliseconds `port` heard (without draining).
    pub fn heard_rms(&self, port: u8, ms: usize) -> f64 {
        self.shared.with_port(port, |p| {
            let n = (ms * 8).min(p.heard.len());
            let tail: Vec<i16> = p.heard.iter().skip(p.heard.len() - n).copied().collect();
            crate::dsp::rms(&tail)
        })
    }
}

fn inject_tone(shared: &Shared, port: u8, freq_hz: f64, amplitude: i16) {
    shared.with_port(port, |p| {
        p.mic = Some(Mic::Sine(SineGenerator::new(freq_hz, amplitude)))
    });
}

/// What a microphone / far party sends.
#[derive(Debug)]
enum Mic {
    /// A steady sine.
    Sine(SineGenerator),
    /// A tone with a cadence (DTMF key presses).
    Tone(ToneGenerator),
}

impl Mic {
    fn fill(&mut self, out: &mut [i16]) {
        match self {
            Mic::Sine(g) => g.fill(out),
            Mic::Tone(g) => g.fill(out),
        }
    }
}

/// The DTMF frequencies (low, high) of a keypad key.
fn dtmf_pair(key: char) -> Option<(u16, u16)> {
    const ROWS: [u16; 4] = [697, 770, 852, 941];
    const COLS: [u16; 4] = [1209, 1336, 1477, 1633];
    const KEYS: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
    KEYS.iter().enumerate().find_map(|(r, row)| {
        row.find(key.to_ascii_uppercase())
            .map(|c| (ROWS[r], COLS[c]))
    })
}

fn take_heard(shared: &Shared, port: u8) -> Vec<i16> {
    shared.with_port(port, |p| p.heard.drain(..).collect())
}

/// A simulated analog phone on an FXS port.
#[derive(Debug, Clone)]
pub struct Phone {
    shared: Arc<Shared>,
    port: u8,
}

impl Phone {
    /// The port number.
    pub fn port(&self) -> u8 {
        self.port
    }

    /// Lifts the handset: reports off-hook; a ringing port stops ringing (ring trip).
    /// Nothing happens if it is already off-hook.
    pub fn off_hook(&self) {
        let mut core = self.shared.core();
        let Some(p) = core.port(self.port) else {
            return;
        };
        if p.off_hook {
            return;
        }
        p.off_hook = true;
        p.ringing = None;
        // Lifting the handset ends a loopback (the MCU restores the voice path).
        p.loopback = false;
        core.send_event(self.port, Event::OffHook);
    }

    /// Hangs up: reports on-hook. Nothing happens if it is already on-hook.
    pub fn on_hook(&self) {
        let mut core = self.shared.core();
        let Some(p) = core.port(self.port) else {
            return;
        };
        if !p.off_hook {
            return;
        }
        p.off_hook = false;
        core.send_event(self.port, Event::OnHook);
    }

    /// Presses the flash/R key: reports a hook-flash (only while off-hook).
    pub fn flash(&self) {
        let mut core = self.shared.core();
        let Some(p) = core.port(self.port) else {
            return;
        };
        if p.off_hook {
            core.send_event(self.port, Event::HookFlash);
        }
    }

    /// Dials `digits`, one [`Event::Digit`] per character, [`DIGIT_GAP`] apart; returns
    /// after the last one. Like a real phone, digits dialled on-hook go nowhere.
    ///
    /// # Panics
    /// When `digits` holds a character a phone cannot dial (only `0-9 * # A-D`).
    pub fn dial(&self, digits: &str) {
        assert!(
            digits.bytes().all(line_proto::event::is_dial_char),
            "cannot dial {digits:?}: only 0-9, *, #, A-D"
        );
        for (i, d) in digits.bytes().enumerate() {
            if i > 0 {
                std::thread::sleep(DIGIT_GAP);
            }
            let mut core = self.shared.core();
            if core.port(self.port).is_some_and(|p| p.off_hook) {
                core.send_event(self.port, Event::Digit(d));
            }
        }
    }

    /// Whether the handset is lifted.
    pub fn is_off_hook(&self) -> bool {
        self.shared.with_port(self.port, |p| p.off_hook)
    }

    /// Whether the daemon is ringing this phone.
    pub fn is_ringing(&self) -> bool {
        self.shared.with_port(self.port, |p| p.ringing.is_some())
    }

    /// Whether the port's voice path is looped back (`Command::SetLoopback`).
    pub fn is_looped_back(&self) -> bool {
        self.shared.with_port(self.port, |p| p.loopback)
    }

    /// The ring cadence in use, while ringing.
    pub fn ring_cadence(&self) -> Option<Cadence> {
        self.shared.with_port(self.port, |p| p.ringing.clone())
    }

    /// The last caller ID the daemon sent to this phone.
    pub fn caller_id(&self) -> Option<CallerId> {
        self.shared.with_port(self.port, |p| p.caller_id.clone())
    }

    /// Forgets the displayed caller ID.
    pub fn clear_caller_id(&self) {
        self.shared.with_port(self.port, |p| p.caller_id = None);
    }

    /// The tone being played to this phone.
    pub fn tone(&self) -> Option<ToneSpec> {
        self.shared
            .with_port(self.port, |p| p.tone.as_ref().map(|t| t.spec().clone()))
    }

    /// Line polarity as set by the daemon.
    pub fn polarity_reversed(&self) -> bool {
        self.shared.with_port(self.port, |p| p.polarity_reversed)
    }

    /// (tx, rx) gains in tenths of a dB as set by the daemon.
    pub fn gains(&self) -> (i8, i8) {
        self.shared.with_port(self.port, |p| p.gains)
    }

    /// Speaks a sine into the microphone from now on.
    pub fn inject_tone(&self, freq_hz: f64, amplitude: i16) {
        inject_tone(&self.shared, self.port, freq_hz, amplitude);
    }

    /// Silences the microphone.
    pub fn inject_silence(&self) {
        self.shared.with_port(self.port, |p| p.mic = None);
    }

    /// Drains what the earpiece heard so far (8 kHz linear PCM).
    pub fn take_heard(&self) -> Vec<i16> {
        take_heard(&self.shared, self.port)
    }

    /// Samples the earpiece heard and nobody took yet.
    pub fn heard_len(&self) -> usize {
        self.shared.with_port(self.port, |p| p.heard.len())
    }
}

/// A simulated PSTN line (exchange and far party) on an FXO port.
#[derive(Debug, Clone)]
pub struct PstnLine {
    shared: Arc<Shared>,
    port: u8,
}

impl PstnLine {
    /// The port number.
    pub fn port(&self) -> u8 {
        self.port
    }

    /// A call comes in: reports [`Event::RingDetected`] now and every
    /// [`PSTN_RING_PERIOD`] until the line is seized or [`PstnLine::stop_ring`].
    /// Returns false (and does nothing) when the line is seized: the caller gets busy.
    pub fn ring(&self, caller_id: Option<CallerId>) -> bool {
        let mut core = self.shared.core();
        let Some(p) = core.port(self.port) else {
            return false;
        };
        if p.seized {
            return false;
        }
        p.pstn_ring = Some(PstnRing {
            caller_id: caller_id.clone(),
            next_at: Instant::now() + PSTN_RING_PERIOD,
        });
        core.send_event(self.port, Event::RingDetected { caller_id });
        true
    }

    /// The caller gives up before an answer.
    pub fn stop_ring(&self) {
        self.shared.with_port(self.port, |p| p.pstn_ring = None);
    }

    /// Whether the exchange is ringing this line.
    pub fn is_ringing(&self) -> bool {
        self.shared.with_port(self.port, |p| p.pstn_ring.is_some())
    }

    /// Whether the daemon holds the line off-hook.
    pub fn is_seized(&self) -> bool {
        self.shared.with_port(self.port, |p| p.seized)
    }

    /// Digits dialled on the line since it was last seized.
    pub fn dialed(&self) -> String {
        self.shared.with_port(self.port, |p| p.dialed.clone())
    }

    /// The far end answers an outbound call: the exchange reverses polarity.
    /// Returns false (nothing sent) when the line is not seized.
    pub fn answer(&self) -> bool {
        self.reverse()
    }

    /// The far end hangs up: the exchange reverses polarity again (disconnect
    /// supervision) and the far party falls silent. Returns false when not seized.
    pub fn hang_up(&self) -> bool {
        let sent = self.reverse();
        if sent {
            self.shared.with_port(self.port, |p| p.mic = None);
        }
        sent
    }

    fn reverse(&self) -> bool {
        let mut core = self.shared.core();
        let Some(p) = core.port(self.port) else {
            return false;
        };
        if !p.seized {
            return false;
        }
        p.far_polarity_reversed = !p.far_polarity_reversed;
        core.send_event(self.port, Event::PolarityReversal);
        true
    }

    /// Whether the exchange currently has the polarity reversed.
    pub fn polarity_reversed(&self) -> bool {
        self.shared
            .with_port(self.port, |p| p.far_polarity_reversed)
    }

    /// The tone the daemon plays towards the line.
    pub fn tone(&self) -> Option<ToneSpec> {
        self.shared
            .with_port(self.port, |p| p.tone.as_ref().map(|t| t.spec().clone()))
    }

    /// The far party speaks a sine from now on.
    pub fn inject_tone(&self, freq_hz: f64, amplitude: i16) {
        inject_tone(&self.shared, self.port, freq_hz, amplitude);
    }

    /// The exchange plays a call-progress tone down the line (busy, congestion,
    /// ringback: the country's [`ToneSpec`] with its cadence) until the line is
    /// released or something else is injected.
    pub fn play_tone(&self, spec: ToneSpec) {
        self.shared.with_port(self.port, |p| {
            p.mic = Some(Mic::Tone(ToneGenerator::new(spec)))
        });
    }

    /// The far party presses `key` on a DTMF phone: the key's two tones at -10 dBm0
    /// for `ms`, then silence. False (nothing sent) for a key that is not on a DTMF
    /// keypad.
    pub fn inject_dtmf(&self, key: char, ms: u16) -> bool {
        let Some((low, high)) = dtmf_pair(key) else {
            return false;
        };
        let spec = ToneSpec {
            freq1_hz: low,
            freq2_hz: high,
            level_dbm0: -10,
            cadence: line_proto::Cadence::from_pairs(&[(ms, u16::MAX)]).unwrap_or_default(),
        };
        self.shared.with_port(self.port, |p| {
            p.mic = Some(Mic::Tone(ToneGenerator::new(spec)))
        });
        true
    }

    /// The far party falls silent.
    pub fn inject_silence(&self) {
        self.shared.with_port(self.port, |p| p.mic = None);
    }

    /// Drains what the far party heard so far.
    pub fn take_heard(&self) -> Vec<i16> {
        take_heard(&self.shared, self.port)
    }

    /// Samples the far party heard and nobody took yet.
    pub fn heard_len(&self) -> usize {
        self.shared.with_port(self.port, |p| p.heard.len())
    }
}
