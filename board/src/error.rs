//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use line_proto::EncodeError;

use crate::gpio::Led;

/// Everything that can go wrong in the hardware layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A board profile is malformed or fails validation.
    #[error("board profile {origin}, line {line}: {field}: {message}")]
    Profile {
        /// File path or built-in profile name.
        origin: String,
        /// 1-based line of the offending field.
        line: usize,
        /// Dotted field name, e.g. `gpio.led_ports`.
        field: String,
        /// What is wrong.
        message: String,
    },

    /// A board profile file could not be read.
    #[error("board profile {}: {source}", path.display())]
    ProfileRead {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },

    /// No built-in profile has this name.
    #[error("no built-in board profile named {name:?} (known: {known})")]
    UnknownProfile {
        /// The name asked for.
        name: String,
        /// The built-in names, comma separated.
        known: &'static str,
    },

    /// The serial port to the line controller could not be opened or configured.
    #[error("line controller UART {}: {source}", path.display())]
    SerialOpen {
        /// Device path.
        path: PathBuf,
        /// What serialport reported.
        #[source]
        source: serialport::Error,
    },

    /// Reading or writing the serial port failed.
    #[error("line controller UART {}: {source}", path.display())]
    SerialIo {
        /// Device path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },

    /// A frame could not be encoded (a field the protocol cannot carry).
    #[error("cannot encode frame for port {port}: {reason}")]
    Encode {
        /// Port the frame was addressed to.
        port: u8,
        /// Why the codec refused it.
        reason: EncodeError,
    },

    /// A GPIO chip or line could not be opened, requested, read or written.
    #[error("GPIO {}{}: {source}", chip.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Gpio {
        /// The chip device.
        chip: PathBuf,
        /// The line offset, when the error concerns one line.
        line: Option<u32>,
        /// What gpio-cdev reported.
        #[source]
        source: gpio_cdev::Error,
    },

    /// An LED that this board does not have (e.g. a port LED beyond the port count).
    #[error("no such LED on this board: {led:?}")]
    NoSuchLed {
        /// The LED asked for.
        led: Led,
    },

    /// The simulator's pseudo-terminal could not be set up.
    #[error("simulator pty: {what}: {source}")]
    Pty {
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A background thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
