//! Board profiles: which model this is, how many ports of each kind, where the line
//! controller's UART is, which GPIO lines drive the LEDs, button and relay, and the
//! country default.
//!
//! Profiles are TOML files (see `board/profiles/`). Parsing is two-stage: raw serde
//! structs with `deny_unknown_fields` and spans, then validation into [`BoardProfile`].
//! Every error names the origin (file path or built-in name), the 1-based line and the
//! dotted field.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

/// Most analog ports a profile may declare (FXS + FXO).
pub const MAX_PORTS: u16 = 32;
/// Lowest accepted UART baud rate.
pub const MIN_BAUD: u32 = 9600;
/// Highest accepted UART baud rate.
pub const MAX_BAUD: u32 = 3_000_000;
/// The `uart.path` value that means "start the built-in simulator".
pub const SIMULATOR_UART_PATH: &str = "sim";

/// The profiles shipped in the image, by name.
const BUILTIN: &[(&str, &str)] = &[
    ("sim", include_str!("../profiles/sim.toml")),
    ("sim-16", include_str!("../profiles/sim-16.toml")),
    ("bl-400", include_str!("../profiles/bl-400.toml")),
    ("bl-812", include_str!("../profiles/bl-812.toml")),
];
const BUILTIN_NAMES: &str = "sim, sim-16, bl-400, bl-812";

/// A validated board profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardProfile {
    /// Model name, e.g. `BL-400`.
    pub model: String,
    /// True when the line controller is the simulator, not hardware.
    pub simulated: bool,
    /// Default country: two ASCII letters (validated further by the daemon).
    pub country: String,
    /// Number of FXS ports (numbered `1..=fxs_ports`).
    pub fxs_ports: u8,
    /// Number of FXO ports (numbered after the FXS ports).
    pub fxo_ports: u8,
    /// The line controller's serial link.
    pub uart: UartConfig,
    /// GPIO lines; always present when `simulated` is false.
    pub gpio: Option<GpioConfig>,
}

/// Serial link to the line controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UartConfig {
    /// Device or simulator.
    pub path: UartPath,
    /// Baud rate.
    pub baud: u32,
}

/// Where the line controller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UartPath {
    /// A tty device (a real UART, or the pty of an external `branch-sim`).
    Device(PathBuf),
    /// Start the built-in simulator (`path = "sim"`).
    Simulator,
}

/// GPIO chip and line offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpioConfig {
    /// The gpio-cdev chip device, e.g. `/dev/gpiochip0`.
    pub chip: PathBuf,
    /// Power LED line.
    pub led_power: u32,
    /// WAN LED line.
    pub led_wan: u32,
    /// SIP LED line.
    pub led_sip: u32,
    /// One LED line per port, FXS ports first, then FXO.
    pub led_ports: Vec<u32>,
    /// Reset/provision button (input, active low).
    pub reset_button: u32,
    /// Power-fail bypass relay (output).
    pub power_fail_relay: u32,
}

/// The kind of an analog port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// Station port: a phone plugs in here.
    Fxs,
    /// Office port: a PSTN line plugs in here.
    Fxo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    model: Spanned<String>,
    #[serde(default)]
    simulated: Option<Spanned<bool>>,
    country: Spanned<String>,
    ports: RawPorts,
    uart: RawUart,
    #[serde(default)]
    gpio: Option<RawGpio>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPorts {
    fxs: Spanned<u8>,
    fxo: Spanned<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUart {
    path: Spanned<String>,
    baud: Spanned<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpio {
    chip: Spanned<String>,
    led_power: Spanned<u32>,
    led_wan: Spanned<u32>,
    led_sip: Spanned<u32>,
    led_ports: Spanned<Vec<u32>>,
    reset_button: Spanned<u32>,
    power_fail_relay: Spanned<u32>,
}

/// Builds [`Error::Profile`]s for one document.
struct Ctx<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: std::ops::Range<usize>, field: &str, message: impl Into<String>) -> Error {
        Error::Profile {
            origin: self.origin.to_owned(),
            line: self.line_of(span.start),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// Converts a toml parse/deserialise error, recovering the field name from the
    /// message (`unknown field `x``, `missing field `x``) or from the key on the
    /// error's line, prefixed with the enclosing `[table]`.
    fn parse_error(&self, e: &toml::de::Error) -> Error {
        let span = e.span().unwrap_or(0..0);
        let line = self.line_of(span.start);
        let message = e.message().trim().to_owned();
        let table = self.table_at(span.start);
        let key = backticked_after(&message, "unknown field ")
            .or_else(|| backticked_after(&message, "missing field "))
            .or_else(|| self.key_on_line(line));
        let field = match (table, key) {
            (Some(t), Some(k)) => format!("{t}.{k}"),
            (Some(t), None) => t,
            (None, Some(k)) => k,
            (None, None) => "(document)".to_owned(),
        };
        Error::Profile {
            origin: self.origin.to_owned(),
            line,
            field,
            message,
        }
    }

    /// The `[table]` header in force at `offset`, if any.
    fn table_at(&self, offset: usize) -> Option<String> {
        let end = offset.min(self.text.len());
        let before = self.text.get(..end)?;
        // The offset itself may sit on the header line (e.g. a missing field in a table
        // whose span starts at its header); include that line.
        let line_end = self.text[end..]
            .find('\n')
            .map_or(self.text.len(), |i| end + i);
        let upto = self.text.get(..line_end).unwrap_or(before);
        upto.lines().rev().find_map(|l| {
            let t = l.trim();
            let inner = t.strip_prefix('[')?.split(']').next()?;
            Some(inner.trim().to_owned())
        })
    }

    fn key_on_line(&self, line: usize) -> Option<String> {
        let l = self.text.lines().nth(line.checked_sub(1)?)?;
        let (key, _) = l.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then(|| key.to_owned())
    }
}

fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_owned())
}

impl BoardProfile {
    /// Loads and validates a profile file.
    pub fn load(path: &Path) -> Result<BoardProfile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ProfileRead {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates profile text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<BoardProfile> {
        let cx = Ctx { origin, text };
        let raw: RawProfile = toml::from_str(text).map_err(|e| cx.parse_error(&e))?;
        validate(&cx, raw)
    }

    /// One of the profiles shipped with the firmware: `sim`, `bl-400` or `bl-812`.
    pub fn builtin(name: &str) -> Result<BoardProfile> {
        let (_, text) =
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| Error::UnknownProfile {
                    name: name.to_owned(),
                    known: BUILTIN_NAMES,
                })?;
        Self::from_toml_str(text, &format!("built-in {name}"))
    }

    /// The names of the built-in profiles.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// A built-in profile by name, otherwise a profile file at that path.
    ///
    /// A bare word (no `/`, no `.`) that is neither gives [`Error::UnknownProfile`].
    pub fn resolve(name_or_path: &str) -> Result<BoardProfile> {
        let bare_word = !name_or_path.contains(['/', '.']);
        if BUILTIN.iter().any(|(n, _)| *n == name_or_path)
            || (bare_word && !Path::new(name_or_path).exists())
        {
            Self::builtin(name_or_path)
        } else {
            Self::load(Path::new(name_or_path))
        }
    }

    /// The kind of `port`, or `None` when the board has no such port.
    pub fn port_kind(&self, port: u8) -> Option<PortKind> {
        if self.fxs_ports().contains(&port) {
            Some(PortKind::Fxs)
        } else if self.fxo_ports().contains(&port) {
            Some(PortKind::Fxo)
        } else {
            None
        }
    }

    /// FXS port numbers (empty when there are none).
    pub fn fxs_ports(&self) -> RangeInclusive<u8> {
        port_ranges(self.fxs_ports, self.fxo_ports).0
    }

    /// FXO port numbers (empty when there are none).
    pub fn fxo_ports(&self) -> RangeInclusive<u8> {
        port_ranges(self.fxs_ports, self.fxo_ports).1
    }

    /// Total analog ports.
    pub fn port_count(&self) -> u8 {
        self.fxs_ports + self.fxo_ports
    }
}

/// Port ranges for `fxs` FXS and `fxo` FXO ports (validation keeps the sum within u8).
pub(crate) fn port_ranges(fxs: u8, fxo: u8) -> (RangeInclusive<u8>, RangeInclusive<u8>) {
    // `1..=0` is an empty range, which is what a board without FXS ports has.
    let fxs_r = 1..=fxs;
    let fxo_r = fxs.saturating_add(1)..=fxs.saturating_add(fxo);
    (fxs_r, fxo_r)
}

fn validate(cx: &Ctx<'_>, raw: RawProfile) -> Result<BoardProfile> {
    let model = raw.model.get_ref().trim();
    if model.is_empty() {
        return Err(cx.err(raw.model.span(), "model", "must not be empty"));
    }

    let country = raw.country.get_ref();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(cx.err(
            raw.country.span(),
            "country",
            format!("{country:?} is not a two-letter country code"),
        ));
    }

    let fxs = *raw.ports.fxs.get_ref();
    let fxo = *raw.ports.fxo.get_ref();
    let total = u16::from(fxs) + u16::from(fxo);
    if total == 0 {
        return Err(cx.err(
            raw.ports.fxs.span(),
            "ports",
            "the board must have at least one port",
        ));
    }
    if total > MAX_PORTS {
        return Err(cx.err(
            raw.ports.fxs.span(),
            "ports",
            format!("{total} ports in total; at most {MAX_PORTS} are supported"),
        ));
    }

    let simulated = raw.simulated.as_ref().is_some_and(|s| *s.get_ref());
    let path = raw.uart.path.get_ref();
    let uart_path = if path == SIMULATOR_UART_PATH {
        if !simulated {
            return Err(cx.err(
                raw.uart.path.span(),
                "uart.path",
                "\"sim\" (the built-in simulator) requires simulated = true",
            ));
        }
        UartPath::Simulator
    } else if path.is_empty() {
        return Err(cx.err(raw.uart.path.span(), "uart.path", "must not be empty"));
    } else {
        UartPath::Device(PathBuf::from(path))
    };
    let baud = *raw.uart.baud.get_ref();
    if !(MIN_BAUD..=MAX_BAUD).contains(&baud) {
        return Err(cx.err(
            raw.uart.baud.span(),
            "uart.baud",
            format!("{baud} is outside {MIN_BAUD}..={MAX_BAUD}"),
        ));
    }

    let gpio = match raw.gpio {
        None if !simulated => {
            let span = raw.simulated.as_ref().map_or(0..0, |s| s.span());
            return Err(cx.err(
                span,
                "gpio",
                "a [gpio] table is required when simulated = false",
            ));
        }
        None => None,
        Some(g) => Some(validate_gpio(cx, g, total)?),
    };

    Ok(BoardProfile {
        model: model.to_owned(),
        simulated,
        country: country.clone(),
        fxs_ports: fxs,
        fxo_ports: fxo,
        uart: UartConfig {
            path: uart_path,
            baud,
        },
        gpio,
    })
}

fn validate_gpio(cx: &Ctx<'_>, g: RawGpio, ports: u16) -> Result<GpioConfig> {
    if g.chip.get_ref().is_empty() {
        return Err(cx.err(g.chip.span(), "gpio.chip", "must not be empty"));
    }
    let n = g.led_ports.get_ref().len();
    if n != usize::from(ports) {
        return Err(cx.err(
            g.led_ports.span(),
            "gpio.led_ports",
            format!("{n} LED lines for {ports} ports; give exactly one per port, FXS first"),
        ));
    }
    // One physical line cannot be two things.
    let mut used: Vec<(u32, String, std::ops::Range<usize>)> = Vec::new();
    let singles = [
        ("gpio.led_power", &g.led_power),
        ("gpio.led_wan", &g.led_wan),
        ("gpio.led_sip", &g.led_sip),
        ("gpio.reset_button", &g.reset_button),
        ("gpio.power_fail_relay", &g.power_fail_relay),
    ];
    let mut all: Vec<(u32, String, std::ops::Range<usize>)> = singles
        .iter()
        .map(|(name, v)| (*v.get_ref(), (*name).to_owned(), v.span()))
        .collect();
    all.extend(
        g.led_ports
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, &off)| (off, format!("gpio.led_ports[{i}]"), g.led_ports.span())),
    );
    all.sort_by_key(|(_, _, span)| span.start);
    for (off, name, span) in all {
        if let Some((_, first, _)) = used.iter().find(|(o, _, _)| *o == off) {
            return Err(cx.err(
                span,
                &name,
                format!("line {off} is already used by {first}"),
            ));
        }
        used.push((off, name, span));
    }
    Ok(GpioConfig {
        chip: PathBuf::from(g.chip.into_inner()),
        led_power: g.led_power.into_inner(),
        led_wan: g.led_wan.into_inner(),
        led_sip: g.led_sip.into_inner(),
        led_ports: g.led_ports.into_inner(),
        reset_button: g.reset_button.into_inner(),
        power_fail_relay: g.power_fail_relay.into_inner(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"model = "BL-400"
simulated = false
country = "US"

[ports]
fxs = 4
fxo = 2

[uart]
path = "/dev/ttymxc2"
baud = 921600

[gpio]
chip = "/dev/gpiochip0"
led_power = 2
led_wan = 3
led_sip = 4
led_ports = [10, 11, 12, 13, 14, 15]
reset_button = 20
power_fail_relay = 21
"#;

    fn profile_err(text: &str) -> (usize, String, String) {
        match BoardProfile::from_toml_str(text, "test.toml") {
            Err(Error::Profile {
                origin,
                line,
                field,
                message,
            }) => {
                assert_eq!(origin, "test.toml");
                (line, field, message)
            }
            other => panic!("expected a profile error, got {other:?}"),
        }
    }

    #[test]
    fn shipped_profiles_load() {
        let sim = BoardProfile::builtin("sim").unwrap();
        assert!(sim.simulated);
        assert_eq!((sim.fxs_ports, sim.fxo_ports), (4, 2));
        assert_eq!(sim.uart.path, UartPath::Simulator);
        assert_eq!(sim.gpio, None);
        assert_eq!(sim.country, "US");

        let b4 = BoardProfile::builtin("bl-400").unwrap();
        assert_eq!(b4.model, "BL-400");
        assert!(!b4.simulated);
        assert_eq!(b4.uart.path, UartPath::Device("/dev/ttymxc2".into()));
        assert_eq!(b4.uart.baud, 921_600);
        let g = b4.gpio.as_ref().unwrap();
        assert_eq!(g.chip, PathBuf::from("/dev/gpiochip0"));
        assert_eq!(g.led_ports.len(), 6);

        let b8 = BoardProfile::builtin("bl-812").unwrap();
        assert_eq!(b8.model, "BL-812");
        assert_eq!((b8.fxs_ports, b8.fxo_ports), (8, 4));
        assert_eq!(b8.country, "DE");
        assert_eq!(b8.uart.path, UartPath::Device("/dev/ttyS1".into()));
        assert_eq!(b8.gpio.unwrap().chip, PathBuf::from("/dev/gpiochip1"));

        for name in BoardProfile::builtin_names() {
            let from_file = BoardProfile::load(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("profiles/{name}.toml")),
            )
            .unwrap();
            assert_eq!(from_file, BoardProfile::builtin(name).unwrap());
        }
    }

    #[test]
    fn resolve_builtin_then_path() {
        assert_eq!(BoardProfile::resolve("bl-812").unwrap().model, "BL-812");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("custom.toml");
        std::fs::write(&p, GOOD.replace("BL-400", "Custom")).unwrap();
        assert_eq!(
            BoardProfile::resolve(p.to_str().unwrap()).unwrap().model,
            "Custom"
        );
        match BoardProfile::resolve("/nonexistent/board.toml") {
            Err(Error::ProfileRead { path, .. }) => {
                assert_eq!(path, PathBuf::from("/nonexistent/board.toml"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            BoardProfile::builtin("bl-999"),
            Err(Error::UnknownProfile { .. })
        ));
        let e = BoardProfile::resolve("bl-999").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no built-in board profile named \"bl-999\" (known: sim, sim-16, bl-400, bl-812)"
        );
    }

    #[test]
    fn load_error_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, GOOD.replace("baud = 921600", "baud = 5")).unwrap();
        let e = BoardProfile::load(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "board profile {}, line 11: uart.baud: 5 is outside 9600..=3000000",
                p.display()
            )
        );
    }

    #[test]
    fn port_numbering() {
        let p = BoardProfile::builtin("bl-400").unwrap();
        assert_eq!(p.fxs_ports(), 1..=4);
        assert_eq!(p.fxo_ports(), 5..=6);
        assert_eq!(p.port_count(), 6);
        assert_eq!(p.port_kind(0), None);
        assert_eq!(p.port_kind(1), Some(PortKind::Fxs));
        assert_eq!(p.port_kind(4), Some(PortKind::Fxs));
        assert_eq!(p.port_kind(5), Some(PortKind::Fxo));
        assert_eq!(p.port_kind(6), Some(PortKind::Fxo));
        assert_eq!(p.port_kind(7), None);

        let fxo_only = BoardProfile::from_toml_str(
            &GOOD
                .replace("fxs = 4", "fxs = 0")
                .replace("[10, 11, 12, 13, 14, 15]", "[10, 11]"),
            "t",
        )
        .unwrap();
        assert!(fxo_only.fxs_ports().is_empty());
        assert_eq!(fxo_only.fxo_ports(), 1..=2);
        assert_eq!(fxo_only.port_kind(1), Some(PortKind::Fxo));
    }

    #[test]
    fn bad_toml_syntax() {
        let (line, field, _) = profile_err(&GOOD.replace("fxo = 2", "fxo = = 2"));
        assert_eq!(line, 7);
        assert_eq!(field, "ports.fxo");
    }

    #[test]
    fn unknown_fields() {
        let (line, field, msg) = profile_err(&GOOD.replace("fxo = 2", "fxo = 2\nfxx = 1"));
        assert_eq!((line, field.as_str()), (8, "ports.fxx"), "{msg}");
        let (line, field, _) =
            profile_err(&GOOD.replace("led_wan = 3", "led_wan = 3\nled_lan = 9"));
        assert_eq!((line, field.as_str()), (17, "gpio.led_lan"));
        let (line, field, _) = profile_err(&format!("colour = \"red\"\n{GOOD}"));
        assert_eq!((line, field.as_str()), (1, "colour"));
    }

    #[test]
    fn wrong_types_and_missing_fields() {
        let (line, field, _) = profile_err(&GOOD.replace("baud = 921600", "baud = \"fast\""));
        assert_eq!((line, field.as_str()), (11, "uart.baud"));
        let (line, field, _) = profile_err(&GOOD.replace("fxs = 4", "fxs = 300"));
        assert_eq!((line, field.as_str()), (6, "ports.fxs"));
        let (_, field, msg) = profile_err(&GOOD.replace("baud = 921600\n", ""));
        assert_eq!(field, "uart.baud", "{msg}");
    }

    #[test]
    fn port_count_errors() {
        let (line, field, msg) = profile_err(
            &GOOD
                .replace("fxs = 4", "fxs = 0")
                .replace("fxo = 2", "fxo = 0"),
        );
        assert_eq!((line, field.as_str()), (6, "ports"));
        assert!(msg.contains("at least one"), "{msg}");
        let (line, field, msg) = profile_err(&GOOD.replace("fxs = 4", "fxs = 31"));
        assert_eq!((line, field.as_str()), (6, "ports"));
        assert!(msg.contains("33 ports"), "{msg}");
    }

    #[test]
    fn led_ports_mismatch() {
        let (line, field, msg) = profile_err(&GOOD.replace("15]", "15, 16]"));
        assert_eq!((line, field.as_str()), (18, "gpio.led_ports"));
        assert!(msg.contains("7 LED lines for 6 ports"), "{msg}");
    }

    #[test]
    fn duplicate_gpio_line() {
        let (line, field, msg) =
            profile_err(&GOOD.replace("power_fail_relay = 21", "power_fail_relay = 3"));
        assert_eq!((line, field.as_str()), (20, "gpio.power_fail_relay"));
        assert!(msg.contains("gpio.led_wan"), "{msg}");
    }

    #[test]
    fn missing_gpio_on_real_board() {
        let text = GOOD.split("[gpio]").next().unwrap();
        let (line, field, _) = profile_err(text);
        assert_eq!((line, field.as_str()), (2, "gpio"));
    }

    #[test]
    fn baud_and_country_and_uart_path() {
        let (line, field, _) = profile_err(&GOOD.replace("921600", "4000000"));
        assert_eq!((line, field.as_str()), (11, "uart.baud"));
        let (line, field, _) = profile_err(&GOOD.replace("\"US\"", "\"USA\""));
        assert_eq!((line, field.as_str()), (3, "country"));
        let (line, field, _) = profile_err(&GOOD.replace("\"US\"", "\"U1\""));
        assert_eq!((line, field.as_str()), (3, "country"));
        let (line, field, _) = profile_err(&GOOD.replace("\"/dev/ttymxc2\"", "\"sim\""));
        assert_eq!((line, field.as_str()), (10, "uart.path"));
        let (line, field, _) = profile_err(&GOOD.replace("\"BL-400\"", "\"  \""));
        assert_eq!((line, field.as_str()), (1, "model"));
    }

    #[test]
    fn display_format() {
        let e = BoardProfile::from_toml_str(&GOOD.replace("15]", "15, 16]"), "x.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "board profile x.toml, line 18: gpio.led_ports: 7 LED lines for 6 ports; give exactly one per port, FXS first"
        );
    }
}
