//! The simulator driven through the real serial link, as the daemon drives it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use line_proto::g711::Law;
use line_proto::{Audio, Body, Cadence, CallerId, Command, Event, Frame, ToneSpec, BOARD_PORT};
use tokio::sync::mpsc;

use super::*;
use crate::dsp::{tone_ratio, SineGenerator};
use crate::link::{LineLink, LinkSender, LinkStats};
use crate::profile::BoardProfile;

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    sim: Simulator,
    h: SimHandle,
    tx: LinkSender,
    rx: mpsc::Receiver<Frame>,
    stats: LinkStats,
    rt: tokio::runtime::Runtime,
}

impl Rig {
    fn new() -> Rig {
        Self::with_law(Law::Ulaw)
    }

    fn with_law(law: Law) -> Rig {
        let profile = BoardProfile::builtin("sim").unwrap();
        let sim = Simulator::start(&profile, law).unwrap();
        let h = sim.handle();
        let (tx, rx, stats) = LineLink::open(sim.tty_path(), 921_600).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        Rig {
            sim,
            h,
            tx,
            rx,
            stats,
            rt,
        }
    }

    /// The next frame satisfying `pred`, skipping others; panics after [`WAIT`].
    fn expect(&mut self, what: &str, pred: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = tokio::time::Instant::now() + WAIT;
        let rx = &mut self.rx;
        self.rt.block_on(async {
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(f)) if pred(&f) => return f,
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("link closed while waiting for {what}"),
                    Err(_) => panic!("timed out waiting for {what}"),
                }
            }
        })
    }

    fn expect_event(&mut self, port: u8, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let f = self.expect(what, |f| {
            f.port == port && matches!(&f.body, Body::Event(e) if pred(e))
        });
        match f.body {
            Body::Event(e) => e,
            _ => unreachable!(),
        }
    }

    fn cmd(&self, port: u8, c: Command) {
        self.tx.send(port, Body::Command(c)).unwrap();
    }

    fn hello(&mut self) {
        self.cmd(BOARD_PORT, Command::Hello { protocol: 1 });
        let ready = self.expect_event(BOARD_PORT, "Ready", |e| matches!(e, Event::Ready { .. }));
        assert_eq!(
            ready,
            Event::Ready {
                protocol: line_proto::PROTOCOL_VERSION,
                firmware: SIM_FIRMWARE,
                fxs_ports: 4,
                fxo_ports: 2
            }
        );
    }
}

fn dial_tone() -> ToneSpec {
    ToneSpec {
        freq1_hz: 350,
        freq2_hz: 440,
        level_dbm0: -13,
        cadence: Cadence::continuous(),
    }
}

#[test]
fn hello_ready_and_hook_events() {
    let mut r = Rig::new();
    r.hello();
    let phone = r.h.phone(2);
    phone.off_hook();
    assert!(phone.is_off_hook());
    r.expect_event(2, "OffHook", |e| *e == Event::OffHook);
    phone.flash();
    r.expect_event(2, "HookFlash", |e| *e == Event::HookFlash);
    phone.dial("12#");
    for d in [b'1', b'2', b'#'] {
        r.expect_event(2, "Digit", move |e| *e == Event::Digit(d));
    }
    phone.on_hook();
    r.expect_event(2, "OnHook", |e| *e == Event::OnHook);
    assert!(r.h.wait_for(WAIT, |h| h.stats().frames_rx >= 1));
}

#[test]
fn ring_trip_and_caller_id() {
    let mut r = Rig::new();
    r.hello();
    let phone = r.h.phone(1);
    let cid = CallerId::new("5551234", "Alice").unwrap();
    r.cmd(
        1,
        Command::SendCallerId {
            mode: line_proto::CallerIdMode::FskBell202,
            caller_id: cid.clone(),
        },
    );
    r.cmd(
        1,
        Command::Ring(Cadence::from_pairs(&[(2000, 4000)]).unwrap()),
    );
    assert!(r.h.wait_for(WAIT, |_| phone.is_ringing()));
    assert_eq!(phone.caller_id(), Some(cid));
    phone.off_hook();
    assert!(!phone.is_ringing());
    r.expect_event(1, "OffHook", |e| *e == Event::OffHook);
    phone.clear_caller_id();
    assert_eq!(phone.caller_id(), None);
    // Ringing an off-hook phone is refused.
    r.cmd(1, Command::Ring(Cadence::continuous()));
    let ev = r.expect_event(1, "Rejected", |e| matches!(e, Event::Rejected { .. }));
    assert!(matches!(
        ev,
        Event::Rejected {
            reason: REJECT_BAD_STATE,
            ..
        }
    ));
}

#[test]
fn play_tone_is_heard() {
    let mut r = Rig::new();
    r.hello();
    let phone = r.h.phone(3);
    phone.off_hook();
    r.cmd(3, Command::PlayTone(dial_tone()));
    assert!(r.h.wait_for(WAIT, |_| phone.tone().is_some()));
    assert_eq!(phone.tone(), Some(dial_tone()));
    phone.take_heard();
    assert!(r.h.wait_for(WAIT, |_| phone.heard_len() >= 1600));
    let heard = phone.take_heard();
    assert!(
        tone_ratio(&heard, 350.0) > 0.35,
        "{}",
        tone_ratio(&heard, 350.0)
    );
    assert!(tone_ratio(&heard, 440.0) > 0.35);
    assert!(tone_ratio(&heard, 1000.0) < 0.05);
    r.cmd(3, Command::StopTone);
    assert!(r.h.wait_for(WAIT, |_| phone.tone().is_none()));
}

#[test]
fn injected_tone_reaches_the_link() {
    let mut r = Rig::with_law(Law::Alaw);
    r.hello();
    let phone = r.h.phone(1);
    phone.inject_tone(1000.0, 8000);
    phone.off_hook();
    r.expect_event(1, "OffHook", |e| *e == Event::OffHook);
    let mut pcm = Vec::new();
    while pcm.len() < 1600 {
        let f = r.expect("audio", |f| f.port == 1 && matches!(f.body, Body::Audio(_)));
        let Body::Audio(a) = f.body else {
            unreachable!()
        };
        assert_eq!(a.law, Law::Alaw);
        pcm.extend(a.samples.iter().map(|&c| a.law.decode(c)));
    }
    assert!(
        tone_ratio(&pcm, 1000.0) > 0.9,
        "{}",
        tone_ratio(&pcm, 1000.0)
    );
    assert!(tone_ratio(&pcm, 1400.0) < 0.05);
}

#[test]
fn audio_from_daemon_is_heard() {
    let mut r = Rig::new();
    r.hello();
    let phone = r.h.phone(4);
    phone.off_hook();
    r.expect_event(4, "OffHook", |e| *e == Event::OffHook);
    let mut gen = SineGenerator::new(1000.0, 8000);
    phone.take_heard();
    for _ in 0..10 {
        let mut pcm = [0i16; 160];
        gen.fill(&mut pcm);
        let mut samples = [0u8; 160];
        Law::Ulaw.encode_block(&pcm, &mut samples);
        r.tx.send(
            4,
            Body::Audio(Audio {
                law: Law::Ulaw,
                samples,
            }),
        )
        .unwrap();
    }
    // Collect until 1600 samples past the first non-silent one went by.
    let mut heard = Vec::new();
    let deadline = Instant::now() + WAIT;
    let start = loop {
        heard.extend(phone.take_heard());
        let start = heard.iter().position(|s| *s != 0);
        if let Some(start) = start.filter(|s| heard.len() >= s + 1600) {
            break start;
        }
        assert!(
            Instant::now() < deadline,
            "tone not heard: {} samples",
            heard.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let tone = &heard[start..start + 1600];
    // 0.8, not 0.9: a tick that finds the queue momentarily empty (loaded CI) inserts
    // 20 ms of silence into the 200 ms, which costs about 10%.
    assert!(
        tone_ratio(tone, 1000.0) > 0.8,
        "{}",
        tone_ratio(tone, 1000.0)
    );
}

#[test]
fn garbage_is_counted_and_skipped() {
    let mut r = Rig::new();
    r.hello();
    r.h.write_raw(&[0x05, 0x11, 0x22, 0x33, 0x44, 0x00]);
    r.h.write_raw(&[0x00, 0x00]);
    r.h.phone(1).off_hook();
    r.expect_event(1, "OffHook after garbage", |e| *e == Event::OffHook);
    let s = r.stats.snapshot();
    assert_eq!(s.invalid_rx, 1, "{s:?}");
    assert!(s.frames_rx >= 2 && s.bytes_rx > 0);

    // And the other way: garbage towards the simulator is counted too.
    let path = r.sim.tty_path().to_owned();
    drop(r.tx);
    let mut raw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    raw.write_all(&[0x07, 1, 2, 3, 4, 5, 6, 0x00]).unwrap();
    assert!(r.h.wait_for(WAIT, |h| h.stats().invalid_rx == 1));
}

#[test]
fn wrong_port_kind_and_missing_port_are_rejected() {
    let mut r = Rig::new();
    r.hello();
    r.cmd(1, Command::FxoSeize);
    let e = r.expect_event(1, "Rejected", |e| matches!(e, Event::Rejected { .. }));
    // Hello was seq 0, FxoSeize seq 1.
    assert_eq!(
        e,
        Event::Rejected {
            seq: 1,
            reason: REJECT_WRONG_PORT_KIND
        }
    );
    r.cmd(5, Command::Ring(Cadence::continuous()));
    let e = r.expect_event(5, "Rejected", |e| matches!(e, Event::Rejected { .. }));
    assert_eq!(
        e,
        Event::Rejected {
            seq: 2,
            reason: REJECT_WRONG_PORT_KIND
        }
    );
    r.cmd(9, Command::ReadLine);
    let e = r.expect_event(9, "Rejected", |e| matches!(e, Event::Rejected { .. }));
    assert_eq!(
        e,
        Event::Rejected {
            seq: 3,
            reason: REJECT_NO_SUCH_PORT
        }
    );
    assert!(r.h.wait_for(WAIT, |h| h.stats().rejected == 3));
}

#[test]
fn self_test_line_reading_and_faults() {
    let mut r = Rig::new();
    r.hello();
    r.cmd(1, Command::ReadLine);
    let e = r.expect_event(1, "LineReading", |e| matches!(e, Event::LineReading { .. }));
    assert_eq!(
        e,
        Event::LineReading {
            millivolts: 48_000,
            microamps: 0
        }
    );
    r.h.phone(1).off_hook();
    r.cmd(1, Command::ReadLine);
    let e = r.expect_event(1, "LineReading", |e| matches!(e, Event::LineReading { .. }));
    assert_eq!(
        e,
        Event::LineReading {
            millivolts: 8_000,
            microamps: 25_000
        }
    );

    r.cmd(2, Command::SelfTest);
    let e = r.expect_event(2, "SelfTestResult", |e| {
        matches!(e, Event::SelfTestResult { .. })
    });
    assert_eq!(
        e,
        Event::SelfTestResult {
            passed: true,
            code: 0
        }
    );
    r.h.inject_fault(2, line_proto::FaultKind::OverCurrent);
    r.expect_event(2, "Fault", |e| {
        *e == Event::Fault(line_proto::FaultKind::OverCurrent)
    });
    r.cmd(2, Command::SelfTest);
    let e = r.expect_event(2, "SelfTestResult", |e| {
        matches!(e, Event::SelfTestResult { .. })
    });
    assert_eq!(
        e,
        Event::SelfTestResult {
            passed: false,
            code: 1
        }
    );

    r.cmd(1, Command::SetPolarity { reversed: true });
    r.cmd(
        1,
        Command::SetGains {
            tx_tenth_db: -30,
            rx_tenth_db: 20,
        },
    );
    let phone = r.h.phone(1);
    assert!(r.h.wait_for(WAIT, |_| phone.polarity_reversed()
        && phone.gains() == (-30, 20)));
}

#[test]
fn pstn_ring_seize_dial_answer_hangup() {
    let mut r = Rig::new();
    r.hello();
    let line = r.h.line(5);
    let cid = CallerId::new("+4930123456", "Bob").unwrap();
    assert!(line.ring(Some(cid.clone())));
    let e = r.expect_event(5, "RingDetected", |e| {
        matches!(e, Event::RingDetected { .. })
    });
    assert_eq!(
        e,
        Event::RingDetected {
            caller_id: Some(cid)
        }
    );
    assert!(line.is_ringing());
    r.cmd(5, Command::FxoSeize);
    assert!(r.h.wait_for(WAIT, |_| line.is_seized()));
    assert!(!line.is_ringing());
    r.cmd(5, Command::ReadLine);
    let e = r.expect_event(5, "LineReading", |e| matches!(e, Event::LineReading { .. }));
    assert_eq!(
        e,
        Event::LineReading {
            millivolts: 7_500,
            microamps: 20_000
        }
    );
    r.cmd(5, Command::FxoRelease);
    assert!(r.h.wait_for(WAIT, |_| !line.is_seized()));

    // Outbound call: seize, dial, far end answers then hangs up.
    r.cmd(6, Command::fxo_dial("123").unwrap());
    let e = r.expect_event(6, "Rejected", |e| matches!(e, Event::Rejected { .. }));
    assert!(matches!(
        e,
        Event::Rejected {
            reason: REJECT_BAD_STATE,
            ..
        }
    ));
    let line6 = r.h.line(6);
    assert!(!line6.answer());
    r.cmd(6, Command::FxoSeize);
    r.cmd(6, Command::fxo_dial("555").unwrap());
    r.cmd(6, Command::fxo_dial("0100").unwrap());
    assert!(r.h.wait_for(WAIT, |_| line6.dialed() == "5550100"));
    assert!(line6.answer());
    r.expect_event(6, "PolarityReversal", |e| *e == Event::PolarityReversal);
    assert!(line6.polarity_reversed());
    assert!(line6.hang_up());
    r.expect_event(6, "PolarityReversal", |e| *e == Event::PolarityReversal);
    assert!(!line6.polarity_reversed());
    // A seized line cannot be rung.
    assert!(!line6.ring(None));
    line.stop_ring();
}

#[test]
fn link_ends_when_simulator_drops() {
    let mut r = Rig::new();
    r.hello();
    let Rig {
        sim, mut rx, rt, ..
    } = r;
    drop(sim);
    rt.block_on(async {
        let end = tokio::time::timeout(WAIT, async { while rx.recv().await.is_some() {} }).await;
        assert!(end.is_ok(), "link did not close");
    });
}

#[test]
fn link_can_reopen() {
    let mut r = Rig::new();
    r.hello();
    let path = r.sim.tty_path().to_owned();
    let Rig {
        sim, h, tx, rx, rt, ..
    } = r;
    drop((tx, rx));
    // The exclusive lock is gone once both handles closed (reader within its timeout).
    let deadline = Instant::now() + WAIT;
    let (tx2, mut rx2, _) = loop {
        match LineLink::open(&path, 921_600) {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    tx2.send(BOARD_PORT, Body::Command(Command::Hello { protocol: 1 }))
        .unwrap();
    rt.block_on(async {
        let got = tokio::time::timeout(WAIT, async {
            while let Some(f) = rx2.recv().await {
                if matches!(f.body, Body::Event(Event::Ready { .. })) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(got, Ok(true));
    });
    drop(h);
    drop(sim);
}

fn console_rig() -> (Simulator, SimHandle) {
    let sim = Simulator::start(&BoardProfile::builtin("sim").unwrap(), Law::Ulaw).unwrap();
    let h = sim.handle();
    (sim, h)
}

#[test]
fn console_button_and_leds_act_on_the_gpio_the_daemon_drives() {
    use crate::gpio::{Gpio, Led};
    let (sim, h) = console_rig();
    let mut gpio = sim.take_gpio().expect("the daemon's side");
    assert!(sim.take_gpio().is_none(), "taken once");
    assert_eq!(console_command(&h, "button"), Ok("reset button up".into()));
    assert_eq!(
        console_command(&h, "button press"),
        Ok("reset button down".into())
    );
    assert!(gpio.reset_button_pressed().expect("read"));
    assert_eq!(
        console_command(&h, "button"),
        Ok("reset button down".into())
    );
    assert_eq!(
        console_command(&h, "button release"),
        Ok("reset button up".into())
    );
    assert!(!gpio.reset_button_pressed().expect("read"));
    // Bad input: an error, the button unchanged.
    let e = console_command(&h, "button hold").expect_err("unknown action");
    assert!(e.contains("button press|release"), "{e}");
    assert!(console_command(&h, "button press now").is_err());
    assert!(!gpio.reset_button_pressed().expect("read"));

    gpio.set_led(Led::Power, true).expect("led");
    gpio.set_led(Led::Port(2), true).expect("led");
    assert_eq!(
        console_command(&h, "leds"),
        Ok("power=on wan=off sip=off ports 1=off 2=on 3=off 4=off 5=off 6=off".into())
    );
    assert!(console_command(&h, "leds 1").is_err());
    assert!(console_command(&h, "help")
        .unwrap()
        .contains("button press|release"));
}

#[test]
fn console_commands() {
    let (_sim, h) = console_rig();
    assert_eq!(console_command(&h, "lift 1"), Ok("port 1 off-hook".into()));
    assert!(h.phone(1).is_off_hook());
    assert_eq!(
        console_command(&h, "flash 1"),
        Ok("port 1 hook-flash".into())
    );
    assert_eq!(
        console_command(&h, "dial 1 12*#"),
        Ok("port 1 dialed 12*#".into())
    );
    assert_eq!(console_command(&h, "hang 1"), Ok("port 1 on-hook".into()));
    assert_eq!(
        console_command(&h, "tone 2 1000"),
        Ok("port 2 sends 1000 Hz at amplitude 8000".into())
    );
    assert_eq!(console_command(&h, "silence 2"), Ok("port 2 silent".into()));
    assert_eq!(
        console_command(&h, "ring 5 5551234 Jane Doe"),
        Ok("port 5 ringing".into())
    );
    assert!(h.line(5).is_ringing());
    let status = console_command(&h, "status").unwrap();
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 6);
    assert!(
        lines[0].starts_with("port 1 FXS on-hook ringing=no tone=-"),
        "{}",
        lines[0]
    );
    assert!(
        lines[4].starts_with("port 5 FXO idle ringing=yes tone=- cid=5551234/\"Jane Doe\""),
        "{}",
        lines[4]
    );
    assert!(lines[4].contains("heard_rms=0"), "{}", lines[4]);
    assert_eq!(
        console_command(&h, "stopring 5"),
        Ok("port 5 stopped ringing".into())
    );
    assert_eq!(
        console_command(&h, "ring 6 private"),
        Ok("port 6 ringing".into())
    );
    assert!(console_command(&h, "help").unwrap().contains("farhangup N"));
    assert_eq!(console_command(&h, "  "), Ok(String::new()));
}

#[test]
fn console_errors() {
    let (_sim, h) = console_rig();
    let err = |l: &str| console_command(&h, l).unwrap_err();
    assert_eq!(err("jump 1"), "unknown command \"jump\"; try help");
    assert_eq!(err("lift"), "usage: lift N ...; try help");
    assert_eq!(err("lift x"), "bad port number \"x\"");
    assert_eq!(err("lift 9"), "no port 9 (ports are 1-6)");
    assert_eq!(
        err("lift 5"),
        "port 5 is not FXS; lift needs a phone (FXS port)"
    );
    assert_eq!(
        err("ring 1"),
        "port 1 is not FXO; ring needs a PSTN line (FXO port)"
    );
    assert_eq!(err("lift 1 2"), "lift: unexpected \"2\"");
    assert_eq!(err("flash 1"), "port 1 is on-hook; lift it first");
    assert_eq!(err("dial 1 123"), "port 1 is on-hook; lift it first");
    assert_eq!(
        err("dial 1 12x"),
        "cannot dial \"12X\": only 0-9, *, #, A-D"
    );
    assert_eq!(err("tone 1 abc"), "bad frequency \"abc\"");
    assert_eq!(err("tone 1 5000"), "frequency 5000 Hz is outside 1..=4000");
    assert_eq!(err("tone 1 1000 -5"), "bad amplitude \"-5\" (1..=32767)");
    assert_eq!(err("answer 5"), "port 5 is not seized");
    assert_eq!(err("farhangup 6"), "port 6 is not seized");
    assert!(err("ring 5 12ab").starts_with("bad caller ID"));
}

#[test]
fn console_over_tcp() {
    let (sim, h) = console_rig();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || serve_console(h, listener));
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    conn.write_all(b"lift 1\n\nbogus\nstatus\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "port 1 off-hook\n");
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "error: unknown command \"bogus\"; try help\n");
    for p in 1..=6 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(&format!("port {p} ")), "{line}");
    }
    drop(sim);
    server.join().unwrap();
}

/// Sends 50 frames of a 1 kHz tone to `port` and collects what comes back as its
/// audio until 60 frames are in.
fn loop_tone(r: &mut Rig, port: u8) -> Vec<i16> {
    let mut gen = SineGenerator::new(1000.0, 8000);
    for _ in 0..50 {
        let mut pcm = [0i16; AUDIO_FRAME_LEN];
        gen.fill(&mut pcm);
        let mut samples = [0u8; AUDIO_FRAME_LEN];
        Law::Ulaw.encode_block(&pcm, &mut samples);
        r.tx.send(
            port,
            Body::Audio(Audio {
                law: Law::Ulaw,
                samples,
            }),
        )
        .unwrap();
    }
    let mut back = Vec::new();
    while back.len() < 60 * AUDIO_FRAME_LEN {
        let f = r.expect("looped audio", |f| {
            f.port == port && matches!(f.body, Body::Audio(_))
        });
        let Body::Audio(a) = f.body else {
            unreachable!()
        };
        back.extend(a.samples.iter().map(|&c| a.law.decode(c)));
    }
    back
}

#[test]
fn loopback_returns_the_port_s_audio_and_a_fault_breaks_it() {
    let mut r = Rig::new();
    r.hello();
    let phone = r.h.phone(3);
    r.cmd(3, Command::SetLoopback { on: true });
    assert!(r.h.wait_for(WAIT, |_| phone.is_looped_back()));
    let back = loop_tone(&mut r, 3);
    assert!(
        tone_ratio(&back, 1000.0) > 0.5,
        "{}",
        tone_ratio(&back, 1000.0)
    );
    assert!(crate::dsp::rms(&back) > 2000.0);
    // A dead codec (over-current shutdown): silence comes back.
    r.h.inject_fault(3, line_proto::FaultKind::OverCurrent);
    let back = loop_tone(&mut r, 3);
    assert!(back.iter().all(|&s| s.abs() < 16), "silence");
    // Foreign voltage on the pair: the tone comes back with mains hum over it.
    r.h.clear_fault(3);
    r.h.inject_fault(3, line_proto::FaultKind::ForeignVoltage);
    let back = loop_tone(&mut r, 3);
    assert!(tone_ratio(&back, 50.0) > 0.2, "{}", tone_ratio(&back, 50.0));
    r.h.clear_fault(3);
    // Off: nothing comes back from an idle port any more.
    r.cmd(3, Command::SetLoopback { on: false });
    assert!(r.h.wait_for(WAIT, |_| !phone.is_looped_back()));
    // Lifting the handset ends it; on a port in use it is refused.
    r.cmd(3, Command::SetLoopback { on: true });
    assert!(r.h.wait_for(WAIT, |_| phone.is_looped_back()));
    phone.off_hook();
    assert!(!phone.is_looped_back());
    r.cmd(3, Command::SetLoopback { on: true });
    let e = r.expect_event(3, "Rejected", |e| matches!(e, Event::Rejected { .. }));
    assert!(
        matches!(
            e,
            Event::Rejected {
                reason: REJECT_BAD_STATE,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!phone.is_looped_back());
}
