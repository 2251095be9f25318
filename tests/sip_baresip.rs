//! baresip as a registered SIP phone, with the audio checked end to end by tone.
//!
//! SIPp (see `sip_calls`) proves the signalling; baresip is a real softphone with its
//! own SIP stack (libre), SDP and RTP timing, so it shows the box working with what a
//! branch actually plugs in. Each test runs its own `branchd` on the simulator and
//! one or two baresip processes, all on 127.0.0.1 with free ports:
//!
//! - baresip's config dir is generated per test from `tests/data/baresip/` (`config`,
//!   `accounts`, `{{NAME}}` placeholders filled in);
//! - its microphone is the `aufile` source reading a WAV of one steady tone written by
//!   the test; its speaker is a one-sided `aubridge` device (no sound card); what it
//!   hears is recorded by the `sndfile` filter (`dump-...-dec.wav`), which the test reads
//!   back while the call runs and checks with a Goertzel filter;
//! - it is driven through `ctrl_tcp` (netstring-framed JSON commands `dial`, `accept`,
//!   `hangup` on a loopback port) and reports `REGISTER_OK`, `CALL_ESTABLISHED`,
//!   `CALL_CLOSED`, ... as events on the same connection.
//!
//! Tone A (1209 Hz) goes from the analog phone to baresip, tone B (770 Hz) from baresip
//! to the analog phone: both well inside G.711's band, far apart, neither a harmonic of
//! the other, and single tones, so no DTMF detector mistakes them for a digit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use branchline_board::dsp::tone_ratio;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::harness::{free_ports, hears, listen, wait, wait_tone, Gateway, DIAL_PLAN, SOON};

/// What the analog phone says (Hz).
const TONE_A: f64 = 1209.0;
/// What baresip says (Hz).
const TONE_B: f64 = 770.0;
/// A wait for anything that crosses baresip, the box (maybe under qemu-user) and back.
const LONG: Duration = Duration::from_secs(30);

const BARESIP: &str = "/usr/bin/baresip";

/// SIP accounts 201 and 202 on the box, challenged with MD5 alone: baresip 1.0 (libre
/// 1.x) answers only MD5 digests and gives up on the whole `401` with ENOSYS ("Register:
/// Function not implemented") when any `WWW-Authenticate` names another algorithm, so
/// it cannot register with the default SHA-256 + MD5 challenges (nor with `md5_first`).
const SIP_PLAN: &str = r#"
[media]
local_ip = "127.0.0.1"

[[sip_accounts]]
extension = "201"
name = "Baresip One"
password = "softphone-secret-one"

[[sip_accounts]]
extension = "202"
name = "Baresip Two"
password = "softphone-secret-two"

[sip]
udp = "127.0.0.1:0"
domain = "branch.test"
digest_algorithms = ["MD5"]

[sip.guard]
auth_failures_before_ban = 3
"#;

/// A gateway with the analog dial plan and the two SIP accounts, SIP listener up.
fn gateway() -> Gateway {
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}\n{SIP_PLAN}"));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    gw
}

/// The daemon's UDP SIP address, from `sip endpoint listening kind=UDP addr=...`.
fn sip_addr(gw: &Gateway) -> SocketAddr {
    let log = gw.log_text();
    let line = log
        .lines()
        .map(crate::harness::strip_ansi)
        .find(|l| l.contains("sip endpoint listening") && l.contains("UDP"))
        .expect("listener log line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
}

/// `template` with every `{{NAME}}` replaced from `values`; panics when a name is
/// unknown or a placeholder is left outside comments (a fixture and the test disagree).
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    for line in out.lines() {
        assert!(
            line.trim_start().starts_with('#') || !line.contains("{{"),
            "unfilled placeholder in baresip fixture line {line:?}"
        );
    }
    out
}

/// A WAV file (8 kHz, mono, s16le) holding `seconds` of a `freq` Hz sine.
fn write_tone_wav(path: &Path, freq: f64, seconds: u32) {
    let rate = 8000u32;
    let n = rate * seconds;
    let mut data = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        let phase = 2.0 * std::f64::consts::PI * freq * f64::from(i) / f64::from(rate);
        // About -10 dBm0: loud and clean through µ-law.
        let s = (phase.sin() * 8000.0).round() as i16;
        data.extend_from_slice(&s.to_le_bytes());
    }
    let mut wav = Vec::with_capacity(44 + data.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).expect("write tone WAV");
}

/// The 16-bit mono samples of a WAV file that may still be being written: chunks are
/// walked to `data`, whose size field is trusted only when the file holds that much
/// (libsndfile fills it in when the file is closed). `None` while the header is not
/// complete yet; a file that is not 8 kHz mono s16 is an error.
fn read_wav(path: &Path) -> Option<Vec<i16>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 12 {
        return None;
    }
    assert!(
        &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "{} is not a WAV file",
        path.display()
    );
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let body = at + 8;
        if id == b"fmt " {
            if body + 16 > bytes.len() {
                return None;
            }
            let f = &bytes[body..body + 16];
            let format = u16::from_le_bytes([f[0], f[1]]);
            let channels = u16::from_le_bytes([f[2], f[3]]);
            let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
            let bits = u16::from_le_bytes([f[14], f[15]]);
            assert_eq!(
                (format, channels, rate, bits),
                (1, 1, 8000, 16),
                "{}: expected 8 kHz mono 16-bit PCM",
                path.display()
            );
        }
        if id == b"data" {
            let end = if size == 0 || body + size > bytes.len() {
                bytes.len()
            } else {
                body + size
            };
            let samples = bytes[body..end]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            return Some(samples);
        }
        at = body + size + (size & 1);
    }
    None
}

/// How many 100 ms blocks of `samples` carry mostly `freq` Hz.
fn tone_blocks(samples: &[i16], freq: f64) -> usize {
    samples
        .chunks_exact(800)
        .filter(|b| tone_ratio(b, freq) > 0.6)
        .count()
}

/// A running baresip: its config dir, process, log and control connection.
struct Baresip {
    dir: TempDir,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    ctrl: TcpStream,
    /// Every JSON message baresip sent on the control connection (events and answers).
    messages: Arc<Mutex<Vec<Value>>>,
    next_token: u32,
}

/// How baresip answers an incoming call.
#[derive(Clone, Copy)]
enum AnswerMode {
    /// It rings until the test sends `accept`.
    Manual,
    /// It answers at once.
    Auto,
}

impl Baresip {
    /// Starts baresip as extension `user` with `password`, registering with the box at
    /// `proxy`, its microphone playing a steady `tone_hz`.
    fn start(
        user: &str,
        password: &str,
        proxy: SocketAddr,
        mode: AnswerMode,
        tone_hz: f64,
    ) -> Baresip {
        // A port chosen free can be taken by a parallel test before baresip binds it;
        // baresip then exits at start with "Address already in use": choose again.
        for _ in 0..4 {
            match Self::try_start(user, password, proxy, mode, tone_hz) {
                Ok(b) => return b,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("baresip exited at start:\n{log}"),
            }
        }
        match Self::try_start(user, password, proxy, mode, tone_hz) {
            Ok(b) => b,
            Err(log) => panic!("baresip exited at start (5 tries):\n{log}"),
        }
    }

    /// One attempt of [`Baresip::start`]: `Err` with baresip's output when it exits
    /// before its control port listens.
    fn try_start(
        user: &str,
        password: &str,
        proxy: SocketAddr,
        mode: AnswerMode,
        tone_hz: f64,
    ) -> Result<Baresip, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let records = dir.path().join("records");
        std::fs::create_dir(&records).expect("records dir");
        let source = dir.path().join("source.wav");
        // Long enough for a slow (qemu-user) run: aufile stops at the end of its file.
        write_tone_wav(&source, tone_hz, 120);
        let ctrl_port = free_ports(1, true);
        let values = [
            ("SIP_PORT", free_ports(1, true).to_string()),
            ("CTRL_PORT", ctrl_port.to_string()),
            ("SOURCE_WAV", source.display().to_string()),
            ("RECORD_DIR", records.display().to_string()),
            ("DEVICE", format!("speaker-{user}-{ctrl_port}")),
            ("USER", user.to_owned()),
            ("PASSWORD", password.to_owned()),
            ("DOMAIN", "branch.test".to_owned()),
            ("PROXY", proxy.to_string()),
            (
                "ANSWERMODE",
                match mode {
                    AnswerMode::Manual => "manual",
                    AnswerMode::Auto => "auto",
                }
                .to_owned(),
            ),
        ];
        let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/baresip");
        let template = |file: &str| {
            fill(
                &std::fs::read_to_string(data.join(file)).expect("baresip fixture"),
                &values,
            )
        };
        std::fs::write(dir.path().join("config"), template("config")).expect("write config");
        // The account is created over ctrl_tcp once the test is connected (`uanew`):
        // ctrl_tcp sends events only to a connected client, and a UA from the
        // `accounts` file would register (and report it) before the test connects.
        let accounts = template("accounts");
        let account = accounts
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .expect("one account line in tests/data/baresip/accounts")
            .to_owned();
        std::fs::write(
            dir.path().join("accounts"),
            "# empty: the test adds its account with `uanew`\n",
        )
        .expect("write accounts");
        let mut child = Command::new(BARESIP)
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("baresip starts (Debian package baresip-core)");
        let log = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&log);
            let tag = user.to_owned();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    // Drop the call status line (`[0:00:03] audio=64000/64000 (bit/s)`)
                    // the menu module redraws with `\r` several times a second.
                    let line: String = line
                        .split('\r')
                        .filter(|part| !(part.starts_with("[0:") && part.contains("audio=")))
                        .collect();
                    if line.trim().is_empty() {
                        continue;
                    }
                    if std::env::var_os("BRANCHD_TEST_LOG").is_some() {
                        eprintln!("baresip {tag}: {line}");
                    }
                    sink.lock().expect("log lock").push(line);
                }
            });
        }
        let mut connected = None;
        let mut exited = None;
        let up = wait(LONG, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            connected = TcpStream::connect(("127.0.0.1", ctrl_port)).ok();
            connected.is_some()
        });
        if let Some(status) = exited {
            // Let the pipe readers take the last lines.
            std::thread::sleep(Duration::from_millis(200));
            return Err(format!(
                "({status}):\n{}",
                log.lock().expect("log lock").join("\n")
            ));
        }
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "baresip's ctrl_tcp never listened on {ctrl_port}:\n{}",
                log.lock().expect("log lock").join("\n")
            );
        }
        let ctrl = connected.expect("connected");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let reader = ctrl.try_clone().expect("clone control socket");
        let sink = Arc::clone(&messages);
        std::thread::spawn(move || read_netstrings(reader, &sink));
        let mut baresip = Baresip {
            dir,
            child: Some(child),
            log,
            ctrl,
            messages,
            next_token: 0,
        };
        baresip.command("uanew", &account);
        Ok(baresip)
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// The events received so far (`{"event":true,"type":...}`).
    fn events(&self) -> Vec<Value> {
        self.messages
            .lock()
            .expect("messages lock")
            .iter()
            .filter(|m| m["event"] == json!(true))
            .cloned()
            .collect()
    }

    /// Waits for an event of `kind` (e.g. `CALL_ESTABLISHED`) and returns it.
    fn wait_event(&self, kind: &str, gw: &Gateway) -> Value {
        self.wait_event_for(kind, LONG, gw)
    }

    /// [`Baresip::wait_event`] with another bound.
    fn wait_event_for(&self, kind: &str, timeout: Duration, gw: &Gateway) -> Value {
        let mut found = None;
        wait(timeout, || {
            found = self.events().into_iter().find(|e| e["type"] == kind);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "baresip never reported {kind}; events {:?}\nbaresip:\n{}\nbranchd:\n{}",
                self.events(),
                self.log_text(),
                gw.log_text()
            )
        })
    }

    /// Sends one command and waits for its answer; panics when baresip refuses it.
    fn command(&mut self, command: &str, params: &str) -> Value {
        self.next_token += 1;
        let token = format!("t{}", self.next_token);
        let msg = json!({"command": command, "params": params, "token": token}).to_string();
        self.ctrl
            .write_all(format!("{}:{msg},", msg.len()).as_bytes())
            .expect("send control command");
        let mut answer = None;
        wait(LONG, || {
            answer = self
                .messages
                .lock()
                .expect("messages lock")
                .iter()
                .find(|m| m["response"] == json!(true) && m["token"] == json!(token))
                .cloned();
            answer.is_some()
        });
        let answer = answer.unwrap_or_else(|| {
            panic!(
                "baresip did not answer {command} {params}:\n{}",
                self.log_text()
            )
        });
        assert_eq!(
            answer["ok"],
            json!(true),
            "baresip refused {command} {params}: {answer}\n{}",
            self.log_text()
        );
        answer
    }

    /// The samples of the call's recorded incoming audio so far (empty before the
    /// recorder opened its file).
    fn heard(&self) -> Vec<i16> {
        let dir = self.dir.path().join("records");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("records dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        assert!(
            files.len() <= 1,
            "one call, one recording of what baresip heard: {files:?}"
        );
        files.pop().and_then(|f| read_wav(&f)).unwrap_or_default()
    }

    /// Waits until baresip has heard at least a second of `freq` Hz.
    fn wait_hears(&self, freq: f64, gw: &Gateway) -> Vec<i16> {
        let mut samples = Vec::new();
        let ok = wait(LONG, || {
            samples = self.heard();
            tone_blocks(&samples, freq) >= 10
        });
        assert!(
            ok,
            "baresip did not hear {freq} Hz: {} of {} blocks; baresip:\n{}\nbranchd:\n{}",
            tone_blocks(&samples, freq),
            samples.len() / 800,
            self.log_text(),
            gw.log_text()
        );
        samples
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("baresip log:\n{}", self.log_text());
        }
    }
}

/// Reads netstrings (`<len>:<json>,`) from baresip's control connection into `sink`
/// until the connection closes.
fn read_netstrings(mut stream: TcpStream, sink: &Mutex<Vec<Value>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Some(colon) = buf.iter().position(|&b| b == b':') {
            let len: usize = std::str::from_utf8(&buf[..colon])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad netstring length {:?}", &buf[..colon]));
            let end = colon + 1 + len;
            if buf.len() <= end {
                break;
            }
            assert_eq!(buf[end], b',', "netstring not closed by a comma");
            let msg: Value = serde_json::from_slice(&buf[colon + 1..end])
                .unwrap_or_else(|e| panic!("baresip sent invalid JSON: {e}"));
            sink.lock().expect("messages lock").push(msg);
            buf.drain(..=end);
        }
    }
}

/// The SIP Call-IDs stored on the CDR of `call_id`.
fn cdr_sip_ids(gw: &Gateway, call_id: &str) -> (Option<String>, Option<String>) {
    gw.db()
        .query_row(
            "SELECT caller_sip_call_id, callee_sip_call_id FROM cdrs WHERE call_id = ?1",
            [call_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("cdr row")
}

#[test]
fn baresip_registers_with_digest_and_a_wrong_password_does_not() {
    let gw = gateway();
    let proxy = sip_addr(&gw);
    let good = Baresip::start(
        "201",
        "softphone-secret-one",
        proxy,
        AnswerMode::Manual,
        TONE_B,
    );
    let ok = good.wait_event("REGISTER_OK", &gw);
    assert!(
        gw.wait_log("added 201", SOON),
        "the box stored 201's binding:\n{}",
        gw.log_text()
    );
    assert!(
        ok["param"].as_str().unwrap_or_default().contains("200"),
        "REGISTER answered 200: {ok}"
    );
    assert_eq!(gw.log_count("sip registration refused"), 0);

    // A wrong password: each digest answer gets a 401 with a fresh challenge (RFC 3261
    // 22.3; counted by the guard). libre 1.x answers every new challenge again, at
    // once, so the guard's third failure bans 127.0.0.1, the box falls silent, and
    // baresip gives up when its REGISTER transaction times out (32 s): REGISTER_FAIL.
    let wrong = Baresip::start("202", "not-the-password", proxy, AnswerMode::Manual, TONE_B);
    assert!(
        gw.wait_log("sip source banned", LONG),
        "no ban after wrong passwords:\n{}",
        gw.log_text()
    );
    let fail = wrong.wait_event_for("REGISTER_FAIL", LONG * 3, &gw);
    assert_eq!(
        gw.log_count("sip registration refused"),
        3,
        "{}",
        gw.log_text()
    );
    assert!(
        wrong.events().iter().all(|e| e["type"] != "REGISTER_OK"),
        "{:?}",
        wrong.events()
    );
    assert_eq!(gw.log_count("added 202"), 0, "{}", gw.log_text());
    assert_ne!(fail["param"], "200 OK", "{fail}");
}

#[test]
fn baresip_calls_an_analog_phone_tones_cross_both_ways_and_baresip_hangs_up() {
    let gw = gateway();
    let proxy = sip_addr(&gw);
    let mut bs = Baresip::start(
        "201",
        "softphone-secret-one",
        proxy,
        AnswerMode::Manual,
        TONE_B,
    );
    bs.wait_event("REGISTER_OK", &gw);

    bs.command("dial", "101");
    let phone = gw.sim.phone(1);
    assert!(
        wait(LONG, || phone.is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    assert_eq!(phone.caller_id().expect("caller ID").number.as_str(), "201");
    phone.off_hook();
    phone.inject_tone(TONE_A, 8000);
    bs.wait_event("CALL_ESTABLISHED", &gw);

    // The analog phone hears baresip's tone B, not its own tone A.
    let mut at_phone = Vec::new();
    let ok = wait(LONG, || {
        at_phone = listen(&gw.sim, 1, 500, false);
        hears(&at_phone, TONE_B)
    });
    assert!(ok, "the analog phone hears baresip's {TONE_B} Hz");
    assert!(!hears(&at_phone, TONE_A), "the analog phone hears itself");

    // baresip hears tone A, and never its own tone B.
    let at_baresip = bs.wait_hears(TONE_A, &gw);
    assert_eq!(
        tone_blocks(&at_baresip, TONE_B),
        0,
        "baresip hears its own tone"
    );

    bs.command("hangup", "");
    bs.wait_event("CALL_CLOSED", &gw);
    wait_tone(&gw.sim, 1, 480, 620).expect("busy tone after baresip hung up");
    phone.on_hook();

    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("201", "101"));
    assert_eq!(c.callee_port, Some(1));
    assert_eq!(c.disposition, "answered");
    assert_eq!(c.hangup_side, "caller");
    let (caller_sip, callee_sip) = cdr_sip_ids(&gw, &c.call_id);
    assert!(
        caller_sip.is_some_and(|id| !id.is_empty()),
        "baresip's Call-ID on the CDR"
    );
    assert_eq!(callee_sip, None);
}

#[test]
fn analog_phone_calls_baresip_which_answers_tones_cross_and_the_analog_side_hangs_up() {
    let gw = gateway();
    let proxy = sip_addr(&gw);
    let bs = Baresip::start(
        "202",
        "softphone-secret-two",
        proxy,
        AnswerMode::Auto,
        TONE_B,
    );
    bs.wait_event("REGISTER_OK", &gw);
    assert!(gw.wait_log("added 202", SOON), "{}", gw.log_text());

    let phone = gw.sim.phone(4);
    phone.off_hook();
    wait_tone(&gw.sim, 4, 350, 440).expect("dial tone");
    phone.dial("202");
    // Auto-answer: baresip 1.0 goes straight to CALL_ESTABLISHED (no CALL_INCOMING).
    let established = bs.wait_event("CALL_ESTABLISHED", &gw);
    assert_eq!(established["direction"], "incoming", "{established}");
    assert!(
        established["peeruri"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sip:104@"),
        "baresip sees the analog extension calling: {established}"
    );
    assert!(
        wait(LONG, || phone.tone().is_none()),
        "ringback stops when baresip answers:\n{}",
        gw.log_text()
    );
    phone.inject_tone(TONE_A, 8000);

    let mut at_phone = Vec::new();
    let ok = wait(LONG, || {
        at_phone = listen(&gw.sim, 4, 500, false);
        hears(&at_phone, TONE_B)
    });
    assert!(ok, "the analog phone hears baresip's {TONE_B} Hz");
    assert!(!hears(&at_phone, TONE_A), "the analog phone hears itself");
    let at_baresip = bs.wait_hears(TONE_A, &gw);
    assert_eq!(
        tone_blocks(&at_baresip, TONE_B),
        0,
        "baresip hears its own tone"
    );

    phone.on_hook();
    let closed = bs.wait_event("CALL_CLOSED", &gw);
    assert!(
        bs.events()
            .iter()
            .all(|e| e["type"] != "CALL_CLOSED" || e == &closed),
        "one call closed once"
    );
    let cdrs = gw.wait_cdrs(1);
    let c = &cdrs[0];
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("104", "202"));
    assert_eq!(c.caller_port, Some(4));
    assert_eq!(c.disposition, "answered");
    assert_eq!(c.hangup_side, "caller");
    let (_, callee_sip) = cdr_sip_ids(&gw, &c.call_id);
    assert!(
        callee_sip.is_some_and(|id| !id.is_empty()),
        "baresip's Call-ID on the CDR"
    );
}
