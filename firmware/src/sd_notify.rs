//! systemd's notify protocol: `READY=1` once the daemon is up, `WATCHDOG=1` from the
//! main loop, `STOPPING=1` at shutdown (`Type=notify`, `WatchdogSec=` in the unit that
//! `branchline_image::overlay` generates).
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). `WATCHDOG_USEC` is
//! the watchdog timeout systemd enforces; `WATCHDOG_PID`, when set, names the process
//! that must feed it. `branchd` sends `WATCHDOG=1` at half the timeout, from its main
//! `select!` loop: a loop that stops turning (a blocked task, a deadlock on the board
//! link) stops feeding, and systemd kills and restarts the daemon.
//!
//! Written by hand over [`std::os::unix::net::UnixDatagram`] rather than with the
//! `sd-notify` crate: the protocol is a handful of lines, it needs no `unsafe` (the
//! workspace forbids it) and no C library, and one dependency fewer is one thing fewer
//! to audit on a box that runs for years. Credentials passing, file descriptor store
//! and `EXTEND_TIMEOUT_USEC` are not used.
//!
//! Errors in the environment (a relative socket path, a `WATCHDOG_USEC` that is not a
//! number) are reported by [`Settings::from_vars`] and logged by [`Notifier::from_env`];
//! the daemon then runs without notifications (under `Type=notify` systemd would then
//! time the start out: the log line says why). A failed send is logged, never fatal.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go, as read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket file.
    Path(PathBuf),
    /// An abstract-namespace socket (`NOTIFY_SOCKET=@name`), without the `@`.
    Abstract(Vec<u8>),
}

/// The notify settings systemd passed to this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The notify socket.
    pub target: Target,
    /// The watchdog timeout (`WATCHDOG_USEC`) when the watchdog is on for this process.
    pub watchdog: Option<Duration>,
}

/// Why the environment's notify settings are unusable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor `@name`.
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor @name")]
    Socket(String),
    /// `WATCHDOG_USEC` is not a positive whole number of microseconds.
    #[error("WATCHDOG_USEC={0:?} is not a positive number of microseconds")]
    WatchdogUsec(String),
    /// `WATCHDOG_PID` is not a process id.
    #[error("WATCHDOG_PID={0:?} is not a process id")]
    WatchdogPid(String),
}

impl Settings {
    /// Parses the variables (`None`: unset). `Ok(None)` without `NOTIFY_SOCKET`: not
    /// started by systemd with `Type=notify`. The watchdog is on when `WATCHDOG_USEC` is
    /// set and `WATCHDOG_PID` is unset or `my_pid`.
    pub fn from_vars(
        notify_socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        my_pid: u32,
    ) -> Result<Option<Settings>, EnvError> {
        let Some(socket) = notify_socket else {
            return Ok(None);
        };
        let target = if let Some(name) = socket.strip_prefix('@') {
            if name.is_empty() {
                return Err(EnvError::Socket(socket.to_owned()));
            }
            Target::Abstract(name.as_bytes().to_vec())
        } else if socket.starts_with('/') {
            Target::Path(PathBuf::from(socket))
        } else {
            return Err(EnvError::Socket(socket.to_owned()));
        };
        let for_me = match watchdog_pid {
            None => true,
            Some(pid) => {
                pid.parse::<u32>()
                    .map_err(|_| EnvError::WatchdogPid(pid.to_owned()))?
                    == my_pid
            }
        };
        let watchdog = match watchdog_usec {
            Some(usec) if for_me => match usec.parse::<u64>() {
                Ok(n) if n > 0 => Some(Duration::from_micros(n)),
                _ => return Err(EnvError::WatchdogUsec(usec.to_owned())),
            },
            _ => None,
        };
        Ok(Some(Settings { target, watchdog }))
    }
}

/// Sends notifications to systemd; a no-op when not started with `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Feeds the watchdog at half its timeout; `None`: no watchdog.
    timer: Option<tokio::time::Interval>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            socket: None,
            timer: None,
        }
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; logs and disables
    /// itself when they are unusable. Needs a tokio runtime when the watchdog is on.
    pub fn from_env() -> Notifier {
        let var = |name: &str| std::env::var(name).ok();
        let settings = Settings::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        match settings {
            Ok(None) => Notifier::disabled(),
            Ok(Some(settings)) => match Notifier::new(&settings) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, socket = ?settings.target, "cannot open systemd's notify socket: no READY/WATCHDOG notifications");
                    Notifier::disabled()
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "bad systemd notify environment: no READY/WATCHDOG notifications");
                Notifier::disabled()
            }
        }
    }

    /// A notifier for `settings`.
    pub fn new(settings: &Settings) -> io::Result<Notifier> {
        let addr = match &settings.target {
            Target::Path(p) => SocketAddr::from_pathname(p)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let timer = settings.watchdog.map(|timeout| {
            let mut t = tokio::time::interval(timeout / 2);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        if let Some(timeout) = settings.watchdog {
            tracing::info!(
                timeout_ms = timeout.as_millis() as u64,
                "systemd watchdog on: fed from the main loop at half the timeout"
            );
        }
        Ok(Notifier {
            socket: Some((socket, addr)),
            timer,
        })
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE`); a failure is logged.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!(error = %e, state, "systemd notification not sent");
            }
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// Completes when the watchdog is due (never without a watchdog); then call
    /// [`Notifier::feed`]. Cancel-safe: for a `select!` arm.
    pub async fn due(&mut self) {
        match &mut self.timer {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// `WATCHDOG=1`.
    pub fn feed(&self) {
        self.notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_socket_means_no_notifications() {
        assert_eq!(Settings::from_vars(None, Some("100"), None, 1), Ok(None));
    }

    #[test]
    fn path_and_abstract_sockets() {
        let s = Settings::from_vars(Some("/run/systemd/notify"), None, None, 1)
            .expect("valid")
            .expect("set");
        assert_eq!(s.target, Target::Path("/run/systemd/notify".into()));
        assert_eq!(s.watchdog, None);
        let s = Settings::from_vars(Some("@sd-notify"), Some("30000000"), None, 1)
            .expect("valid")
            .expect("set");
        assert_eq!(s.target, Target::Abstract(b"sd-notify".to_vec()));
        assert_eq!(s.watchdog, Some(Duration::from_secs(30)));
    }

    #[test]
    fn watchdog_only_for_the_named_pid() {
        let mine = Settings::from_vars(Some("/s"), Some("2000000"), Some("42"), 42)
            .expect("valid")
            .expect("set");
        assert_eq!(mine.watchdog, Some(Duration::from_secs(2)));
        let other = Settings::from_vars(Some("/s"), Some("2000000"), Some("43"), 42)
            .expect("valid")
            .expect("set");
        assert_eq!(other.watchdog, None);
    }

    #[test]
    fn bad_values_are_named() {
        for (socket, usec, pid, expected) in [
            ("relative", None, None, EnvError::Socket("relative".into())),
            ("@", None, None, EnvError::Socket("@".into())),
            ("/s", Some("0"), None, EnvError::WatchdogUsec("0".into())),
            (
                "/s",
                Some("30s"),
                None,
                EnvError::WatchdogUsec("30s".into()),
            ),
            (
                "/s",
                Some("1"),
                Some("me"),
                EnvError::WatchdogPid("me".into()),
            ),
        ] {
            assert_eq!(
                Settings::from_vars(Some(socket), usec, pid, 1),
                Err(expected.clone()),
                "{socket:?} {usec:?} {pid:?}"
            );
            assert!(!expected.to_string().is_empty());
        }
    }

    #[tokio::test]
    async fn sends_ready_and_watchdog_datagrams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut n = Notifier::new(&Settings {
            target: Target::Path(path),
            watchdog: Some(Duration::from_millis(20)),
        })
        .expect("notifier");
        assert!(n.enabled());
        n.ready("up");
        n.due().await;
        n.feed();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).expect("ready datagram");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
        let len = server.recv(&mut buf).expect("watchdog datagram");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[tokio::test]
    async fn abstract_socket_is_reached() {
        let name = format!("branchline-notify-test-{}", std::process::id());
        let addr = {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).expect("addr")
        };
        let server = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let settings = Settings::from_vars(Some(&format!("@{name}")), None, None, 1)
            .expect("valid")
            .expect("set");
        let n = Notifier::new(&settings).expect("notifier");
        n.stopping();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"STOPPING=1");
    }
}
