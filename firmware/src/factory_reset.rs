//! Factory reset: the reset button held [`HOLD`] (10 s), or `branchd factory-reset
//! --yes`, returns the box to its first-boot state.
//!
//! # Pieces
//!
//! - [`ResetButton`]: a sans-IO press-duration detector. The daemon's main loop samples
//!   the button ([`branchline_board::gpio::Gpio::reset_button_pressed`]) every
//!   [`POLL_INTERVAL`] and feeds `handle(now, pressed)`; a press held for [`HOLD`]
//!   yields [`ButtonEvent::Reset`] once, a shorter one [`ButtonEvent::ShortPress`]
//!   (logged, nothing else: a short press is never destructive). Sampling is the
//!   debounce: a bounce shorter than the poll interval is not seen, and a release seen
//!   at any sample restarts the count.
//! - [`ResetButton::led`]: what the power LED shows while the button is held: a slow
//!   blink (500 ms) for the first [`WARN_AFTER`], then a fast blink (100 ms) until the
//!   reset fires ("let go now to cancel"). Once it fires, the daemon lights power,
//!   WAN and SIP LEDs steadily while it stops and wipes, then restarts.
//! - [`WipePlan`] / [`wipe`]: what a reset removes. Everything under `[paths]
//!   data_dir` (the SQLite store with its WAL: users, roles, queues, CDRs, outbox,
//!   audit log, sync cursor, provisioning state - applied bundles, used tokens,
//!   provisioned settings; the installer label; the claim secret, so the box shows a
//!   new claim code; update downloads; enrollment keys and
//!   certificates kept there), every file under `[paths] recordings`, and the
//!   device certificate and key named by `[hq]` (`client_cert`, `client_key`, with
//!   a staged renewal's `.new` files and `<client_cert>.renewal.json`). It
//!   keeps the A/B firmware slots (`[update] slots`, also when they live inside
//!   `data_dir`), `branchd.toml` (the factory defaults: provisioned settings live in
//!   the store, so wiping the store is returning to the factory config), HQ's CA
//!   certificate and the trusted provisioning keys (both come with the image).
//! - [`DaemonLock`]: an exclusive `flock` on `<data_dir>/branchd.lock`, held by the
//!   running daemon, so `branchd factory-reset` refuses while the daemon runs (it
//!   would pull the store from under it) instead of racing it.
//!
//! # Audit
//!
//! A reset wipes the audit log too, so it cannot be audited in the store. It is
//! written to the journal instead (a `warn` line with the trigger and every path
//! removed) before anything is removed, and again with the outcome.
//!
//! # Limits
//!
//! Used provisioning tokens are forgotten with the store: a bundle whose token is not
//! yet expired can be applied again after a reset (HQ still accepts each token for
//! enrollment once). The button is polled, not interrupt-driven. Files are unlinked,
//! not overwritten: flash wear levelling makes in-place overwriting meaningless, so a
//! reset is not a secure erase.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, SlotBackend};

/// How long the button must be held for a factory reset.
pub const HOLD: Duration = Duration::from_secs(10);
/// After this long held, the power LED blinks fast: the reset is near.
pub const WARN_AFTER: Duration = Duration::from_secs(7);
/// How often the daemon samples the button.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Half period of the LED blink while the button is held, before [`WARN_AFTER`].
pub const SLOW_BLINK: Duration = Duration::from_millis(500);
/// Half period of the LED blink after [`WARN_AFTER`].
pub const FAST_BLINK: Duration = Duration::from_millis(100);
/// Name of the daemon's lock file in `data_dir`.
pub const LOCK_FILE: &str = "branchd.lock";

/// What the button did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// The button went down.
    Pressed,
    /// Released before [`HOLD`]: nothing happens.
    ShortPress {
        /// How long it was held (as sampled).
        held: Duration,
    },
    /// Held for [`HOLD`]: reset now (once per press).
    Reset,
}

/// The press-duration detector (sans-IO: the caller passes the time and the sampled
/// state).
#[derive(Debug, Clone)]
pub struct ResetButton {
    hold: Duration,
    pressed_since: Option<Instant>,
    fired: bool,
}

impl Default for ResetButton {
    fn default() -> Self {
        ResetButton::new(HOLD)
    }
}

impl ResetButton {
    /// A detector firing after `hold`.
    pub fn new(hold: Duration) -> ResetButton {
        ResetButton {
            hold,
            pressed_since: None,
            fired: false,
        }
    }

    /// Feeds one sample: `pressed` as read at `now`.
    pub fn handle(&mut self, now: Instant, pressed: bool) -> Option<ButtonEvent> {
        match (self.pressed_since, pressed) {
            (None, true) => {
                self.pressed_since = Some(now);
                self.fired = false;
                if self.hold.is_zero() {
                    self.fired = true;
                    return Some(ButtonEvent::Reset);
                }
                Some(ButtonEvent::Pressed)
            }
            (Some(since), true) => {
                if !self.fired && now.saturating_duration_since(since) >= self.hold {
                    self.fired = true;
                    Some(ButtonEvent::Reset)
                } else {
                    None
                }
            }
            (Some(since), false) => {
                self.pressed_since = None;
                let fired = std::mem::replace(&mut self.fired, false);
                (!fired).then(|| ButtonEvent::ShortPress {
                    held: now.saturating_duration_since(since),
                })
            }
            (None, false) => None,
        }
    }

    /// When the reset would fire if the button stays down (`None`: not pressed, or
    /// already fired).
    pub fn timeout(&self) -> Option<Instant> {
        match self.pressed_since {
            Some(since) if !self.fired => Some(since + self.hold),
            _ => None,
        }
    }

    /// Whether the button is down (as last sampled).
    pub fn is_pressed(&self) -> bool {
        self.pressed_since.is_some()
    }

    /// The power LED while the button is down and the reset has not fired: `Some(on)`
    /// (slow blink, then fast after [`WARN_AFTER`]); `None` when the button is up or
    /// the reset fired (the LED is someone else's then).
    pub fn led(&self, now: Instant) -> Option<bool> {
        let since = self.pressed_since.filter(|_| !self.fired)?;
        let held = now.saturating_duration_since(since);
        let half = if held >= WARN_AFTER {
            FAST_BLINK
        } else {
            SLOW_BLINK
        };
        // Off first: the LED visibly reacts to the press.
        Some((held.as_millis() / half.as_millis()) % 2 == 1)
    }
}

/// The daemon's side of the button: samples it through [`Gpio`], logs presses, blinks
/// the power LED while it is held, and says when the reset is due.
///
/// [`Gpio`]: branchline_board::gpio::Gpio
#[derive(Debug, Default)]
pub struct ButtonWatch {
    button: ResetButton,
    /// Whether this watch drives the power LED (it gives it back steady on).
    blinking: bool,
}

impl ButtonWatch {
    /// Samples the button at `now`; true once the reset is due (the LEDs are then
    /// all lit for the wipe). A GPIO read error counts as released and is logged.
    pub fn poll(&mut self, gpio: &mut dyn branchline_board::gpio::Gpio, now: Instant) -> bool {
        use branchline_board::gpio::Led;
        let pressed = gpio.reset_button_pressed().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reset button not read");
            false
        });
        let event = self.button.handle(now, pressed);
        match event {
            Some(ButtonEvent::Pressed) => {
                tracing::info!("reset button pressed: hold it 10 s for a factory reset")
            }
            Some(ButtonEvent::ShortPress { held }) => tracing::info!(
                held_ms = u64::try_from(held.as_millis()).unwrap_or(u64::MAX),
                "reset button released before 10 s: nothing done"
            ),
            Some(ButtonEvent::Reset) | None => {}
        }
        let mut set = |led, on| {
            if let Err(e) = gpio.set_led(led, on) {
                tracing::warn!(error = %e, ?led, "LED not set");
            }
        };
        match self.button.led(now) {
            Some(on) => {
                self.blinking = true;
                set(Led::Power, on);
            }
            None if self.blinking => {
                self.blinking = false;
                set(Led::Power, true);
            }
            None => {}
        }
        if event == Some(ButtonEvent::Reset) {
            for led in [Led::Power, Led::Wan, Led::Sip] {
                set(led, true);
            }
            return true;
        }
        false
    }
}

/// What triggered a reset (for the journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The reset button held [`HOLD`].
    Button,
    /// `branchd factory-reset --yes`.
    Command,
}

impl Trigger {
    /// Name in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Button => "reset button held 10 s",
            Trigger::Command => "branchd factory-reset",
        }
    }
}

/// A wipe that failed part way.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// A file or directory could not be removed.
    #[error("factory reset: cannot remove {}: {source}", path.display())]
    Remove {
        /// What.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A directory could not be listed.
    #[error("factory reset: cannot list {}: {source}", path.display())]
    List {
        /// What.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The daemon holds the data directory.
    #[error("branchd is running on {} (it holds {}); stop it first (systemctl stop branchd) or hold the reset button for 10 s", data_dir.display(), lock.display())]
    DaemonRunning {
        /// The data directory.
        data_dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// What a reset removes and what it keeps (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WipePlan {
    /// Emptied, except for `keep` and the lock file.
    pub data_dir: PathBuf,
    /// Emptied (may be inside `data_dir`).
    pub recordings: PathBuf,
    /// Single files removed when present (the `[hq]` device certificate and key, their
    /// staged renewal and the last renewal outcome, [`crate::renew`]).
    pub files: Vec<PathBuf>,
    /// Never removed, nor anything under them (the A/B slots).
    pub keep: Vec<PathBuf>,
}

impl WipePlan {
    /// The plan for `config`.
    pub fn from_config(config: &Config) -> WipePlan {
        let files = config
            .hq
            .iter()
            .flat_map(|hq| {
                [
                    hq.client_cert.clone(),
                    hq.client_key.clone(),
                    // A renewal or re-enrollment in progress (the staged key is secret).
                    crate::renew::staged(&hq.client_cert),
                    crate::renew::staged(&hq.client_key),
                    crate::renew::outcome_path(hq),
                ]
            })
            .collect();
        let keep = match config.update.as_ref().map(|u| &u.backend) {
            Some(SlotBackend::Dir { root }) => vec![root.clone()],
            _ => Vec::new(),
        };
        WipePlan {
            data_dir: config.paths.data_dir.clone(),
            recordings: config.paths.recordings.clone(),
            files,
            keep,
        }
    }

    fn kept(&self, path: &Path) -> bool {
        // A kept path itself, anything under it, and the directories leading to it.
        self.keep
            .iter()
            .any(|k| path.starts_with(k) || k.starts_with(path))
            || path.file_name().is_some_and(|n| n == LOCK_FILE)
                && path.parent() == Some(&self.data_dir)
    }
}

/// What [`wipe`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WipeReport {
    /// Paths removed (files, or whole directories), in order.
    pub removed: Vec<PathBuf>,
}

/// Removes what `plan` names. Missing paths are fine (a box reset twice); the first
/// error stops the wipe and is returned (what was removed by then stays removed: a
/// half-wiped box is reset again by the next press or command).
pub fn wipe(plan: &WipePlan) -> Result<WipeReport, ResetError> {
    let mut report = WipeReport::default();
    for file in &plan.files {
        if plan.kept(file) {
            continue;
        }
        remove(file, &mut report)?;
    }
    empty_dir(plan, &plan.recordings, &mut report)?;
    empty_dir(plan, &plan.data_dir, &mut report)?;
    Ok(report)
}

fn empty_dir(plan: &WipePlan, dir: &Path, report: &mut WipeReport) -> Result<(), ResetError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ResetError::List {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for e in entries {
        let e = e.map_err(|source| ResetError::List {
            path: dir.to_owned(),
            source,
        })?;
        paths.push(e.path());
    }
    paths.sort();
    for p in paths {
        if plan.kept(&p) {
            // A directory holding something kept: empty what is beside it.
            if p.is_dir() && !plan.keep.iter().any(|k| p.starts_with(k)) {
                empty_dir(plan, &p, report)?;
            }
            continue;
        }
        remove(&p, report)?;
    }
    Ok(())
}

fn remove(path: &Path, report: &mut WipeReport) -> Result<(), ResetError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ResetError::Remove {
                path: path.to_owned(),
                source,
            })
        }
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => {
            report.removed.push(path.to_owned());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ResetError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Logs the reset to the journal (the audit log is about to be wiped), wipes, and
/// logs the outcome.
pub fn reset(plan: &WipePlan, trigger: Trigger) -> Result<WipeReport, ResetError> {
    tracing::warn!(
        trigger = trigger.as_str(),
        data_dir = %plan.data_dir.display(),
        recordings = %plan.recordings.display(),
        files = ?plan.files,
        keep = ?plan.keep,
        "FACTORY RESET: wiping the store (users, audit log, CDRs, provisioning), keys and recordings; this event is in the journal only"
    );
    match wipe(plan) {
        Ok(report) => {
            tracing::warn!(
                trigger = trigger.as_str(),
                removed = ?report.removed,
                "factory reset done: the box starts again unprovisioned"
            );
            Ok(report)
        }
        Err(e) => {
            tracing::error!(trigger = trigger.as_str(), error = %e, "factory reset failed part way");
            Err(e)
        }
    }
}

/// The daemon's hold on its data directory: an exclusive `flock` on
/// `<data_dir>/branchd.lock`, released when dropped (and by the kernel when the
/// process ends or execs, the file being opened close-on-exec).
#[derive(Debug)]
pub struct DaemonLock {
    _lock: nix::fcntl::Flock<File>,
}

impl DaemonLock {
    /// Takes the lock; [`ResetError::DaemonRunning`] when another process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DaemonLock, ResetError> {
        let path = data_dir.join(LOCK_FILE);
        let lock_err = |source| ResetError::Lock {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(data_dir).map_err(lock_err)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DaemonLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(ResetError::DaemonRunning {
                data_dir: data_dir.to_owned(),
                lock: path,
            }),
            Err((_, errno)) => Err(lock_err(io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    /// Samples the button every poll interval from `start` for `held`, pressed, then
    /// one released sample; returns the events.
    fn press_for(b: &mut ResetButton, start: Instant, held: Duration) -> Vec<ButtonEvent> {
        let mut events = Vec::new();
        let mut now = start;
        while now <= start + held {
            events.extend(b.handle(now, true));
            now += POLL_INTERVAL;
        }
        events.extend(b.handle(now, false));
        events
    }

    #[test]
    fn short_press_is_not_a_reset() {
        let mut b = ResetButton::default();
        let start = t0();
        let events = press_for(&mut b, start, Duration::from_millis(9_800));
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], ButtonEvent::Pressed);
        assert!(
            matches!(events[1], ButtonEvent::ShortPress { held } if held < HOLD),
            "{events:?}"
        );
        assert!(!b.is_pressed());
        assert_eq!(b.timeout(), None);
    }

    #[test]
    fn ten_second_hold_fires_once_and_release_is_silent() {
        let mut b = ResetButton::default();
        let start = t0();
        assert_eq!(b.handle(start, true), Some(ButtonEvent::Pressed));
        assert_eq!(b.timeout(), Some(start + HOLD));
        // Advance the virtual clock to each deadline the detector asks for.
        let mut now = start;
        let mut fired = 0;
        while let Some(t) = b.timeout() {
            assert!(now < t);
            now = t;
            if b.handle(now, true) == Some(ButtonEvent::Reset) {
                fired += 1;
            }
        }
        assert_eq!(fired, 1);
        assert_eq!(now - start, HOLD);
        // Held on: no second reset; release: no short press either.
        assert_eq!(b.handle(now + Duration::from_secs(5), true), None);
        assert_eq!(b.handle(now + Duration::from_secs(6), false), None);
        // A new press starts from zero.
        let again = now + Duration::from_secs(7);
        assert_eq!(b.handle(again, true), Some(ButtonEvent::Pressed));
        assert_eq!(b.handle(again + HOLD - POLL_INTERVAL, true), None);
        assert_eq!(b.handle(again + HOLD, true), Some(ButtonEvent::Reset));
    }

    #[test]
    fn a_release_between_samples_restarts_the_count() {
        let mut b = ResetButton::default();
        let start = t0();
        b.handle(start, true);
        let half = start + Duration::from_secs(6);
        assert!(matches!(
            b.handle(half, false),
            Some(ButtonEvent::ShortPress { .. })
        ));
        assert_eq!(
            b.handle(half + POLL_INTERVAL, true),
            Some(ButtonEvent::Pressed)
        );
        // 10 s after the first press but only 4 s after the second: nothing.
        assert_eq!(b.handle(start + HOLD, true), None);
        assert_eq!(
            b.handle(half + POLL_INTERVAL + HOLD, true),
            Some(ButtonEvent::Reset)
        );
    }

    #[test]
    fn led_blinks_slow_then_fast_and_lets_go_after_firing() {
        let mut b = ResetButton::default();
        let start = t0();
        assert_eq!(b.led(start), None);
        b.handle(start, true);
        assert_eq!(b.led(start), Some(false));
        assert_eq!(b.led(start + SLOW_BLINK), Some(true));
        assert_eq!(b.led(start + SLOW_BLINK * 2), Some(false));
        let warn = start + WARN_AFTER;
        let a = b.led(warn);
        let c = b.led(warn + FAST_BLINK);
        assert!(a.is_some() && c.is_some() && a != c, "{a:?} {c:?}");
        b.handle(start + HOLD, true);
        assert_eq!(b.led(start + HOLD), None);
    }

    #[test]
    fn button_watch_drives_leds_and_fires_on_the_virtual_clock() {
        use branchline_board::gpio::{Gpio, Led, MemoryGpio};
        let (mut gpio, h) = MemoryGpio::new(6);
        gpio.set_led(Led::Power, true).expect("led");
        let mut w = ButtonWatch::default();
        let start = t0();
        let mut now = start;
        // Short press: 3 s, the LED blinks, then is steady again; no reset.
        h.press_reset(true);
        let mut seen_off = false;
        while now < start + Duration::from_secs(3) {
            assert!(!w.poll(&mut gpio, now));
            seen_off |= !h.led(Led::Power);
            now += POLL_INTERVAL;
        }
        assert!(seen_off, "the power LED blinked");
        h.press_reset(false);
        assert!(!w.poll(&mut gpio, now));
        assert!(h.led(Led::Power), "steady again after release");
        // Long press: due exactly once, at 10 s, with every status LED lit.
        h.press_reset(true);
        let pressed_at = now;
        let mut fired_at = None;
        while now < pressed_at + HOLD + Duration::from_secs(2) {
            if w.poll(&mut gpio, now) {
                assert!(fired_at.is_none(), "fires once");
                fired_at = Some(now);
            }
            now += POLL_INTERVAL;
        }
        let fired_at = fired_at.expect("fired");
        assert!(fired_at - pressed_at >= HOLD && fired_at - pressed_at < HOLD + POLL_INTERVAL * 2);
        assert!(h.led(Led::Power) && h.led(Led::Wan) && h.led(Led::Sip));
    }

    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).expect("ls").flatten() {
                let p = e.path();
                out.push(
                    p.strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string(),
                );
                if p.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        walk(root, root, &mut out);
        out.sort();
        out
    }

    #[test]
    fn wipe_removes_state_keeps_slots_and_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let data = root.join("data");
        let slots = data.join("slots");
        let rec = root.join("rec");
        let etc = root.join("etc");
        for d in [
            &data,
            &slots.join("a"),
            &rec.join("2026"),
            &etc,
            &data.join("update"),
        ] {
            fs::create_dir_all(d).expect("mkdir");
        }
        for f in [
            data.join("branchline.db"),
            data.join("branchline.db-wal"),
            data.join("installer-label.txt"),
            data.join("update/r1.part"),
            data.join(LOCK_FILE),
            slots.join("state.json"),
            slots.join("a/branchd"),
            rec.join("2026/call.wav"),
            etc.join("device.pem"),
            etc.join("device.key"),
            etc.join("hq-ca.pem"),
        ] {
            fs::write(&f, b"x").expect("write");
        }
        let plan = WipePlan {
            data_dir: data.clone(),
            recordings: rec.clone(),
            files: vec![
                etc.join("device.pem"),
                etc.join("device.key"),
                etc.join("missing.pem"),
            ],
            keep: vec![slots.clone()],
        };
        let report = reset(&plan, Trigger::Command).expect("wipe");
        assert!(report.removed.contains(&data.join("branchline.db")));
        assert_eq!(
            tree(root),
            [
                "data",
                "data/branchd.lock",
                "data/slots",
                "data/slots/a",
                "data/slots/a/branchd",
                "data/slots/state.json",
                "etc",
                "etc/hq-ca.pem",
                "rec",
            ]
        );
        // Again: nothing left to remove, no error.
        assert_eq!(
            wipe(&plan).expect("second wipe").removed,
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn wipe_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        // data_dir is a file: it cannot be listed.
        let data = dir.path().join("data");
        fs::write(&data, b"not a dir").expect("write");
        let plan = WipePlan {
            data_dir: data.clone(),
            recordings: dir.path().join("rec"),
            files: Vec::new(),
            keep: Vec::new(),
        };
        let e = wipe(&plan).expect_err("not a directory");
        assert!(e.to_string().contains(&data.display().to_string()), "{e}");
        assert!(data.is_file(), "nothing removed");
    }

    #[test]
    fn lock_refuses_a_second_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = DaemonLock::acquire(dir.path()).expect("first");
        let e = DaemonLock::acquire(dir.path()).expect_err("second");
        assert!(matches!(e, ResetError::DaemonRunning { .. }), "{e}");
        assert!(e.to_string().contains("systemctl stop branchd"), "{e}");
        drop(held);
        DaemonLock::acquire(dir.path()).expect("free again");
    }
}
