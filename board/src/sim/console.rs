//! A line-oriented text console to drive the simulator by hand (stdin of `branch-sim`,
//! a TCP port, or the daemon's built-in simulator).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use line_proto::event::is_dial_char;
use line_proto::CallerId;

use super::SimHandle;
use crate::gpio::Led;
use crate::profile::PortKind;

/// Amplitude of a tone injected with `tone N HZ` when none is given (about -9 dBm0).
pub const CONSOLE_TONE_AMPLITUDE: i16 = 8000;
/// Longest console line accepted.
const MAX_LINE: usize = 4096;

const HELP: &str = "\
lift N                  lift the handset of FXS phone N
hang N                  hang up FXS phone N
flash N                 hook-flash on FXS phone N
dial N DIGITS           dial DIGITS (0-9 * # A-D) on FXS phone N
tone N HZ [AMPLITUDE]   phone N / far party on line N speaks a sine
silence N               port N's microphone falls silent
ring N [NUMBER [NAME..]] the PSTN rings FXO line N (NUMBER may be 'private')
stopring N              the PSTN caller on line N gives up
answer N                the far end answers an outbound call on line N
farhangup N             the far end hangs up on line N
status                  one line per port
button press|release    press (hold down) or release the reset button; held 10 s
                        it factory-resets a daemon driving this simulator's GPIO
button                  whether the reset button is down
leds                    power, WAN, SIP and port LEDs as the daemon set them
help                    this text";

/// Runs one console command against the simulator; `Ok` is the reply (possibly several
/// lines, no trailing newline), `Err` says what was wrong with the command.
pub fn console_command(handle: &SimHandle, line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else {
        return Ok(String::new());
    };
    let args: Vec<&str> = words.collect();
    match cmd {
        "help" => Ok(HELP.to_owned()),
        "status" => {
            no_more(cmd, &args, 0)?;
            Ok((1..=handle.port_count())
                .map(|p| port_status(handle, p))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        "lift" | "hang" | "flash" => {
            no_more(cmd, &args, 1)?;
            let phone = handle.phone(port_of(handle, cmd, &args, PortKind::Fxs)?);
            let n = phone.port();
            match cmd {
                "lift" => {
                    phone.off_hook();
                    Ok(format!("port {n} off-hook"))
                }
                "hang" => {
                    phone.on_hook();
                    Ok(format!("port {n} on-hook"))
                }
                _ if !phone.is_off_hook() => Err(format!("port {n} is on-hook; lift it first")),
                _ => {
                    phone.flash();
                    Ok(format!("port {n} hook-flash"))
                }
            }
        }
        "dial" => {
            no_more(cmd, &args, 2)?;
            let phone = handle.phone(port_of(handle, cmd, &args, PortKind::Fxs)?);
            let digits = args
                .get(1)
                .ok_or("usage: dial N DIGITS")?
                .to_ascii_uppercase();
            if !digits.bytes().all(is_dial_char) {
                return Err(format!("cannot dial {digits:?}: only 0-9, *, #, A-D"));
            }
            if !phone.is_off_hook() {
                return Err(format!("port {} is on-hook; lift it first", phone.port()));
            }
            phone.dial(&digits);
            Ok(format!("port {} dialed {digits}", phone.port()))
        }
        "tone" | "silence" => {
            let port = port_any(handle, cmd, &args)?;
            if cmd == "silence" {
                no_more(cmd, &args, 1)?;
                handle.shared.with_port(port, |p| p.mic = None);
                return Ok(format!("port {port} silent"));
            }
            no_more(cmd, &args, 3)?;
            let hz: f64 = args
                .get(1)
                .ok_or("usage: tone N HZ [AMPLITUDE]")?
                .parse()
                .map_err(|_| format!("bad frequency {:?}", args[1]))?;
            if !(1.0..=4000.0).contains(&hz) {
                return Err(format!("frequency {hz} Hz is outside 1..=4000"));
            }
            let amp = match args.get(2) {
                None => CONSOLE_TONE_AMPLITUDE,
                Some(a) => a
                    .parse::<i16>()
                    .ok()
                    .filter(|a| *a > 0)
                    .ok_or_else(|| format!("bad amplitude {a:?} (1..=32767)"))?,
            };
            super::inject_tone(&handle.shared, port, hz, amp);
            Ok(format!("port {port} sends {hz} Hz at amplitude {amp}"))
        }
        "ring" => {
            let line = handle.line(port_of(handle, cmd, &args, PortKind::Fxo)?);
            let caller_id = match args.get(1) {
                None => None,
                Some(n) if n.eq_ignore_ascii_case("private") => Some(CallerId::private()),
                Some(n) => {
                    let name = args[2..].join(" ");
                    Some(
                        CallerId::new(n, &name)
                            .map_err(|e| format!("bad caller ID {n:?} {name:?}: {e:?}"))?,
                    )
                }
            };
            if line.ring(caller_id) {
                Ok(format!("port {} ringing", line.port()))
            } else {
                Err(format!(
                    "port {} is seized; the caller gets busy",
                    line.port()
                ))
            }
        }
        "stopring" | "answer" | "farhangup" => {
            no_more(cmd, &args, 1)?;
            let line = handle.line(port_of(handle, cmd, &args, PortKind::Fxo)?);
            let n = line.port();
            match cmd {
                "stopring" => {
                    line.stop_ring();
                    Ok(format!("port {n} stopped ringing"))
                }
                "answer" if line.answer() => Ok(format!("port {n} far end answered")),
                "farhangup" if line.hang_up() => Ok(format!("port {n} far end hung up")),
                _ => Err(format!("port {n} is not seized")),
            }
        }
        "button" => {
            no_more(cmd, &args, 1)?;
            let gpio = handle.gpio();
            match args.first().copied() {
                None => Ok(format!(
                    "reset button {}",
                    if gpio.reset_pressed() { "down" } else { "up" }
                )),
                Some("press") => {
                    gpio.press_reset(true);
                    Ok("reset button down".to_owned())
                }
                Some("release") => {
                    gpio.press_reset(false);
                    Ok("reset button up".to_owned())
                }
                Some(other) => Err(format!("button {other:?}: usage: button press|release")),
            }
        }
        "leds" => {
            no_more(cmd, &args, 0)?;
            let gpio = handle.gpio();
            let on = |led| if gpio.led(led) { "on" } else { "off" };
            let ports: Vec<String> = (1..=handle.port_count())
                .map(|p| format!("{p}={}", on(Led::Port(p))))
                .collect();
            Ok(format!(
                "power={} wan={} sip={} ports {}",
                on(Led::Power),
                on(Led::Wan),
                on(Led::Sip),
                ports.join(" ")
            ))
        }
        _ => Err(format!("unknown command {cmd:?}; try help")),
    }
}

fn no_more(cmd: &str, args: &[&str], max: usize) -> Result<(), String> {
    if args.len() > max {
        Err(format!("{cmd}: unexpected {:?}", args[max..].join(" ")))
    } else {
        Ok(())
    }
}

/// Parses the port argument of any kind.
fn port_any(handle: &SimHandle, cmd: &str, args: &[&str]) -> Result<u8, String> {
    let arg = args
        .first()
        .ok_or_else(|| format!("usage: {cmd} N ...; try help"))?;
    let port: u8 = arg
        .parse()
        .map_err(|_| format!("bad port number {arg:?}"))?;
    match handle.port_kind(port) {
        Some(_) => Ok(port),
        None => Err(format!(
            "no port {port} (ports are 1-{})",
            handle.port_count()
        )),
    }
}

/// Parses the port argument and checks it is of `kind`.
fn port_of(handle: &SimHandle, cmd: &str, args: &[&str], kind: PortKind) -> Result<u8, String> {
    let port = port_any(handle, cmd, args)?;
    match handle.port_kind(port) {
        Some(k) if k == kind => Ok(port),
        _ => Err(format!(
            "port {port} is not {}; {cmd} needs {}",
            kind_name(kind),
            match kind {
                PortKind::Fxs => "a phone (FXS port)",
                PortKind::Fxo => "a PSTN line (FXO port)",
            }
        )),
    }
}

fn kind_name(kind: PortKind) -> &'static str {
    match kind {
        PortKind::Fxs => "FXS",
        PortKind::Fxo => "FXO",
    }
}

fn port_status(handle: &SimHandle, port: u8) -> String {
    let rms = handle.heard_rms(port, 200);
    handle.shared.with_port(port, |p| {
        let hook = match p.kind {
            PortKind::Fxs if p.off_hook => "off-hook",
            PortKind::Fxs => "on-hook",
            PortKind::Fxo if p.seized => "seized",
            PortKind::Fxo => "idle",
        };
        let ringing = p.ringing.is_some() || p.pstn_ring.is_some();
        let tone = p.tone.as_ref().map_or("-".to_owned(), |t| {
            let s = t.spec();
            if s.freq2_hz == 0 {
                s.freq1_hz.to_string()
            } else {
                format!("{}+{}", s.freq1_hz, s.freq2_hz)
            }
        });
        let cid = p
            .caller_id
            .as_ref()
            .or(p.pstn_ring.as_ref().and_then(|r| r.caller_id.as_ref()))
            .map_or("-".to_owned(), |c| {
                format!("{}/{:?}/{:?}", c.number.as_str(), c.name.as_str(), c.presentation)
            });
        let dialed = if p.dialed.is_empty() { "-" } else { &p.dialed };
        let fault = p.fault.map_or(String::new(), |f| format!(" fault={f:?}"));
        format!(
            "port {port} {} {hook} ringing={} tone={tone} cid={cid} dialed={dialed} heard_rms={rms:.0}{fault}",
            kind_name(p.kind),
            if ringing { "yes" } else { "no" },
        )
    })
}

/// Serves the console on `listener`, one thread per connection: each line is a command,
/// each reply ends with `\n`, errors start with `error: `; blank lines get no reply.
/// Blocks; returns when the [`super::Simulator`] is dropped.
pub fn serve_console(handle: SimHandle, listener: TcpListener) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!(error = %e, "simulator console: cannot poll the listener");
        return;
    }
    while !handle.shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let h = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("sim-console".into())
                    .spawn(move || {
                        if let Err(e) = serve_connection(&h, stream) {
                            tracing::debug!(%peer, error = %e, "simulator console connection ended");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "simulator console: cannot start a thread");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!(error = %e, "simulator console: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_connection(handle: &SimHandle, stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    // Wake up now and then to notice that the simulator stopped.
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        if handle.shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        // `read_until` keeps what it read before a timeout in `line`.
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) if line.last() != Some(&b'\n') && line.len() < MAX_LINE => continue,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if line.len() >= MAX_LINE {
                    out.write_all(b"error: line too long\n")?;
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        if line.len() > MAX_LINE {
            out.write_all(b"error: line too long\n")?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim().to_owned();
        line.clear();
        if text.is_empty() {
            continue;
        }
        let reply = match console_command(handle, &text) {
            Ok(r) => format!("{r}\n"),
            Err(e) => format!("error: {e}\n"),
        };
        out.write_all(reply.as_bytes())?;
    }
}
