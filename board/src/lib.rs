//! Branchline hardware layer: everything between the daemon and the board.
//!
//! # Modules
//!
//! - [`profile`]: board profiles (TOML, shipped in `board/profiles/` and compiled in):
//!   model, FXS/FXO port counts and numbering, UART path and baud, GPIO offsets,
//!   country default. Errors name the file, line and field.
//! - [`link`]: the serial link to the line-controller MCU ([`link::LineLink`]): a
//!   reader thread decodes [`line_proto`] frames into a tokio channel, counting and
//!   skipping invalid ones; a cloneable [`link::LinkSender`] numbers and writes frames.
//! - [`gpio`]: the [`gpio::Gpio`] trait (LEDs, reset button, power-fail relay) with the
//!   gpio-cdev implementation and an in-memory one for the simulated board and tests.
//! - [`dsp`]: Goertzel tone detection, RMS, sine and cadenced tone generators.
//! - [`sim`]: the simulated line controller on a pty, driven through
//!   [`sim::SimHandle`] (phones, PSTN lines, faults, raw bytes) and a text console.
//! - [`runner`]: starting the workspace's binaries from tests, under the emulator of
//!   the cross test stage when there is one (`BRANCHLINE_TEST_RUNNER`).
//! - [`error`]: the crate's [`Error`] and [`Result`].
//!
//! The daemon uses the same [`link`] code for real hardware and for the simulator: the
//! simulator is reached through a pty opened with `serialport` exactly like a UART.
//!
//! # Current limits
//!
//! - Linux only (pty, gpio-cdev, `serialport`'s native tty).
//! - The simulator models signalling and 20 ms audio frames, not analog timing: no ring
//!   voltage or caller-ID FSK waveforms, DTMF arrives as digit events only, and FXO
//!   dialling is recorded, not routed anywhere. Audio heard by a port is a mix of the
//!   daemon's frames and the tone the MCU plays, kept for the last 30 s.
//! - The simulated PSTN rings with the US cadence (a burst every 6 s) only.
//! - [`gpio::CdevGpio`] cannot be exercised without hardware; tests cover opening errors.
#![forbid(unsafe_code)]

pub mod dsp;
pub mod error;
pub mod gpio;
pub mod link;
pub mod profile;
pub mod runner;
pub mod sim;

pub use error::{Error, Result};
