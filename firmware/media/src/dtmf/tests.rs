use std::time::{Duration, Instant};

use branchline_board::dsp::{dbm0_to_amplitude, SineGenerator};
use proptest::prelude::*;

use super::*;

const DIGITS: &[u8] = b"0123456789*#ABCD";

#[test]
fn digit_mapping_round_trips() {
    for (code, &d) in DIGITS.iter().enumerate() {
        let e = TelephoneEvent::from_digit(d).unwrap();
        assert_eq!(e.to_digit(), Some(d));
        let want = match d {
            b'0'..=b'9' => d - b'0',
            b'*' => 10,
            b'#' => 11,
            _ => d - b'A' + 12,
        };
        assert_eq!(e.code(), want, "{}", d as char);
        let _ = code;
        assert_eq!(TelephoneEvent::from_code(e.code()).unwrap(), e);
        assert!(e.frequencies().is_some());
        let cmd = e.to_fxo_dial().unwrap();
        assert_eq!(
            cmd,
            line_proto::Command::fxo_dial(std::str::from_utf8(&[d]).unwrap()).unwrap()
        );
    }
    assert_eq!(
        TelephoneEvent::from_digit(b'x'),
        Err(Error::NotADigit { digit: b'x' })
    );
    assert!(TelephoneEvent::from_code(17).is_err());
    assert_eq!(TelephoneEvent::FLASH.to_digit(), None);
    assert_eq!(TelephoneEvent::FLASH.to_fxo_dial(), None);
    assert_eq!(
        TelephoneEvent::from_line_event(&line_proto::Event::HookFlash),
        Some(TelephoneEvent::FLASH)
    );
    assert_eq!(
        TelephoneEvent::from_line_event(&line_proto::Event::Digit(b'#')),
        Some(TelephoneEvent::from_code(11).unwrap())
    );
    assert_eq!(
        TelephoneEvent::from_line_event(&line_proto::Event::OffHook),
        None
    );
    assert_eq!(
        TelephoneEvent::from_digit(b'5').unwrap().frequencies(),
        Some((770.0, 1336.0))
    );
}

#[test]
fn payload_round_trip_and_errors() {
    let p = EventPayload {
        event: TelephoneEvent::from_code(11).unwrap(),
        end: true,
        volume: 10,
        duration: 1234,
    };
    let b = p.to_bytes();
    assert_eq!(b, [11, 0x8A, 0x04, 0xD2]);
    assert_eq!(EventPayload::parse(&b).unwrap(), p);
    assert!(EventPayload::parse(&[1, 2, 3]).is_err());
    assert!(EventPayload::parse(&[40, 0, 0, 0]).is_err());
}

fn five() -> TelephoneEvent {
    TelephoneEvent::from_digit(b'5').unwrap()
}

#[test]
fn encoder_sequence() {
    let mut enc = TelephoneEventEncoder::new(160);
    let first = enc.start(five(), 10, 5000).unwrap();
    assert!(first.marker);
    assert_eq!(
        (first.timestamp, first.payload.duration, first.payload.end),
        (5000, 0, false)
    );
    assert!(enc.start(five(), 10, 6000).is_err(), "key already held");
    let mut durations = Vec::new();
    for _ in 0..4 {
        let p = enc.tick().unwrap();
        assert!(!p.marker && !p.payload.end);
        assert_eq!(p.timestamp, 5000);
        durations.push(p.payload.duration);
    }
    assert_eq!(durations, vec![160, 320, 480, 640]);
    let end = enc.stop().unwrap();
    assert!(end.payload.end);
    assert_eq!(end.payload.duration, 640);
    assert_eq!(enc.stop(), None);
    let repeats: Vec<EventPacket> = std::iter::from_fn(|| enc.tick()).collect();
    assert_eq!(repeats.len(), 2);
    assert!(repeats.iter().all(|p| *p == end));
    assert!(!enc.is_active());
    assert_eq!(enc.tick(), None);
}

#[test]
fn encoder_long_event_segments() {
    let mut enc = TelephoneEventEncoder::new(160);
    enc.start(five(), 0, 100).unwrap();
    let mut packets = Vec::new();
    // 9 s: more than 0xFFFF samples.
    for _ in 0..450 {
        packets.push(enc.tick().unwrap());
    }
    let seg = packets
        .iter()
        .position(|p| p.payload.duration == 0xFFFF)
        .unwrap();
    assert_eq!(packets[seg].timestamp, 100);
    assert_eq!(packets[seg + 1].timestamp, 100 + 0xFFFF);
    assert!(packets[seg + 1].payload.duration < 320);
    // Decoding the whole thing gives one digit with the total duration.
    let mut dec = TelephoneEventDecoder::default();
    let t0 = Instant::now();
    dec.handle(
        t0,
        100,
        &EventPayload {
            event: five(),
            end: false,
            volume: 0,
            duration: 0,
        }
        .to_bytes(),
    )
    .unwrap();
    for (i, p) in packets.iter().enumerate() {
        dec.handle(
            t0 + Duration::from_millis(20 * i as u64),
            p.timestamp,
            &p.payload.to_bytes(),
        )
        .unwrap();
    }
    let end = enc.stop().unwrap();
    dec.handle(
        t0 + Duration::from_secs(9),
        end.timestamp,
        &end.payload.to_bytes(),
    )
    .unwrap();
    let events: Vec<DtmfEvent> = std::iter::from_fn(|| dec.poll_event()).collect();
    assert_eq!(
        events,
        vec![
            DtmfEvent::Start {
                event: five(),
                volume: 0
            },
            DtmfEvent::End {
                event: five(),
                duration: 450 * 160
            },
        ]
    );
}

/// Packets of one key press as a sender emits them.
fn press(
    enc: &mut TelephoneEventEncoder,
    event: TelephoneEvent,
    ts: u32,
    updates: usize,
) -> Vec<EventPacket> {
    let mut v = vec![enc.start(event, 7, ts).unwrap()];
    for _ in 0..updates {
        v.push(enc.tick().unwrap());
    }
    v.push(enc.stop().unwrap());
    v.extend(std::iter::from_fn(|| enc.tick()));
    v
}

fn decode_all(packets: &[EventPacket]) -> Vec<DtmfEvent> {
    let mut dec = TelephoneEventDecoder::default();
    let t0 = Instant::now();
    let mut now = t0;
    for p in packets {
        now += Duration::from_millis(20);
        dec.handle(now, p.timestamp, &p.payload.to_bytes()).unwrap();
    }
    dec.handle_timeout(now + Duration::from_secs(1));
    std::iter::from_fn(|| dec.poll_event()).collect()
}

#[test]
fn decoder_once_each_despite_retransmission_and_loss() {
    let mut enc = TelephoneEventEncoder::new(160);
    let a = press(&mut enc, five(), 1000, 5);
    let b = press(&mut enc, five(), 3000, 5); // same digit again
    let all: Vec<EventPacket> = a.iter().chain(b.iter()).copied().collect();
    let expect = vec![
        DtmfEvent::Start {
            event: five(),
            volume: 7,
        },
        DtmfEvent::End {
            event: five(),
            duration: 800,
        },
        DtmfEvent::Start {
            event: five(),
            volume: 7,
        },
        DtmfEvent::End {
            event: five(),
            duration: 800,
        },
    ];
    assert_eq!(decode_all(&all), expect);
    // First packet of each lost.
    let no_first: Vec<EventPacket> = a[1..].iter().chain(b[1..].iter()).copied().collect();
    assert_eq!(decode_all(&no_first), expect);
    // All end packets of the first event lost: it ends when the next begins, with the
    // last duration seen.
    let no_end: Vec<EventPacket> = a[..6].iter().chain(b.iter()).copied().collect();
    let ev = decode_all(&no_end);
    assert_eq!(
        ev[1],
        DtmfEvent::End {
            event: five(),
            duration: 800
        }
    );
    assert_eq!(ev.len(), 4);
    // Only the end packets arrive.
    let only_end: Vec<EventPacket> = a[6..].to_vec();
    assert_eq!(decode_all(&only_end), expect[..2].to_vec());
}

#[test]
fn decoder_timeout_ends_event() {
    let mut dec = TelephoneEventDecoder::new(Duration::from_millis(100));
    let t0 = Instant::now();
    let p = EventPayload {
        event: TelephoneEvent::FLASH,
        end: false,
        volume: 0,
        duration: 160,
    };
    dec.handle(t0, 77, &p.to_bytes()).unwrap();
    assert_eq!(dec.timeout(), Some(t0 + Duration::from_millis(100)));
    dec.handle_timeout(t0 + Duration::from_millis(99));
    assert_eq!(
        dec.poll_event(),
        Some(DtmfEvent::Start {
            event: TelephoneEvent::FLASH,
            volume: 0
        })
    );
    assert_eq!(dec.poll_event(), None);
    dec.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(
        dec.poll_event(),
        Some(DtmfEvent::End {
            event: TelephoneEvent::FLASH,
            duration: 160
        })
    );
    assert_eq!(dec.timeout(), None);
    // A late end retransmission is ignored.
    let end = EventPayload { end: true, ..p };
    dec.handle(t0 + Duration::from_millis(150), 77, &end.to_bytes())
        .unwrap();
    assert_eq!(dec.poll_event(), None);
    // Bad payloads change nothing.
    assert!(dec.handle(t0, 99, &[1, 2]).is_err());
    assert_eq!(dec.timeout(), None);
}

proptest! {
    /// Any subset of the packets of a few key presses, in any order within a small
    /// reordering window, with duplicates: each press decodes to at most one start and
    /// one end, starts and ends alternate, and if at least one packet of a press
    /// arrived before any packet of a later press, that press starts exactly once.
    #[test]
    fn decoder_never_doubles(
        n in 1usize..5,
        keep in proptest::collection::vec(proptest::bool::weighted(0.7), 60),
        dup in proptest::collection::vec(proptest::bool::weighted(0.2), 60),
        swaps in proptest::collection::vec(0usize..60, 0..10),
    ) {
        let mut enc = TelephoneEventEncoder::new(160);
        let mut packets = Vec::new();
        for k in 0..n {
            let ev = TelephoneEvent::from_code((k % 16) as u8).unwrap();
            for p in press(&mut enc, ev, 10_000 + 5000 * k as u32, 4) {
                packets.push((k, p));
            }
        }
        let mut stream = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if keep[i % keep.len()] {
                stream.push(*p);
                if dup[i % dup.len()] {
                    stream.push(*p);
                }
            }
        }
        for s in swaps {
            if s + 1 < stream.len() {
                stream.swap(s, s + 1);
            }
        }
        // A packet of an earlier press that arrives after a later press's packet is
        // late and dropped (RFC 4733 2.5.1.5: an older timestamp is an old event), so
        // a press counts when one of its packets arrives before any later press's.
        let mut latest = 0;
        let mut presses_seen = std::collections::BTreeSet::new();
        for (k, _) in &stream {
            if *k >= latest {
                latest = *k;
                presses_seen.insert(*k);
            }
        }
        let only: Vec<EventPacket> = stream.iter().map(|(_, p)| *p).collect();
        let events = decode_all(&only);
        let starts = events.iter().filter(|e| matches!(e, DtmfEvent::Start { .. })).count();
        let ends = events.iter().filter(|e| matches!(e, DtmfEvent::End { .. })).count();
        prop_assert_eq!(starts, ends);
        prop_assert_eq!(starts, presses_seen.len(), "{:?}", events);
        for pair in events.chunks(2) {
            prop_assert!(matches!(pair[0], DtmfEvent::Start { .. }), "{:?}", pair);
            prop_assert!(matches!(pair[1], DtmfEvent::End { .. }), "{:?}", pair);
        }
    }

    #[test]
    fn decoder_arbitrary_bytes_no_panic(
        pkts in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..8), 0u64..300), 0..100)
    ) {
        let mut dec = TelephoneEventDecoder::default();
        let mut now = Instant::now();
        for (ts, payload, dt) in pkts {
            now += Duration::from_millis(dt);
            let _ = dec.handle(now, ts, &payload);
            dec.handle_timeout(now);
            while dec.poll_event().is_some() {}
        }
    }
}

// ---- in-band detection ----

/// DTMF tone pair for `digit` at `level` dBm0 per tone, `ms` long, with frequency
/// factor `dev` and extra low-group gain `twist_db` (negative: high group louder).
fn tone(digit: u8, level: f64, ms: usize, dev: f64, twist_db: f64) -> Vec<i16> {
    let (lo, hi) = TelephoneEvent::from_digit(digit)
        .unwrap()
        .frequencies()
        .unwrap();
    let amp = dbm0_to_amplitude(level);
    let lo_amp = amp * 10f64.powf(twist_db / 20.0);
    let mut a = SineGenerator::new(lo * dev, lo_amp as i16);
    let mut b = SineGenerator::new(hi * dev, amp as i16);
    let n = ms * 8;
    let mut x = vec![0i16; n];
    let mut y = vec![0i16; n];
    a.fill(&mut x);
    b.fill(&mut y);
    x.iter()
        .zip(&y)
        .map(|(&p, &q)| p.saturating_add(q))
        .collect()
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

fn detect(signal: &[i16]) -> Vec<DtmfEvent> {
    let mut d = InbandDetector::default();
    for chunk in signal.chunks(160) {
        d.process(chunk);
    }
    d.process(&silence(100));
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn digits(events: &[DtmfEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            DtmfEvent::Start { event, .. } => event.to_digit().map(char::from),
            DtmfEvent::End { .. } => None,
        })
        .collect()
}

/// Deterministic noise generator (uniform, given RMS).
fn noise(n: usize, rms: f64, seed: &mut u64) -> Vec<i16> {
    let amp = rms * 3f64.sqrt();
    (0..n)
        .map(|_| {
            let u = (crate::rtp::splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            (u * amp) as i16
        })
        .collect()
}

#[test]
fn all_digits_40ms_tone_40ms_pause_at_every_alignment() {
    let all = "0123456789*#ABCD";
    for offset in (0..BLOCK).step_by(7) {
        let mut s = vec![0i16; offset];
        for d in all.bytes() {
            s.extend(tone(d, -10.0, 40, 1.0, 0.0));
            s.extend(silence(40));
        }
        let ev = detect(&s);
        assert_eq!(digits(&ev), all, "offset {offset}");
        assert_eq!(ev.len(), 32, "offset {offset}");
    }
}

#[test]
fn short_tones_are_rejected() {
    for offset in (0..BLOCK).step_by(5) {
        let mut s = vec![0i16; offset];
        for d in b"159#" {
            s.extend(tone(*d, -5.0, 20, 1.0, 0.0));
            s.extend(silence(60));
        }
        assert_eq!(digits(&detect(&s)), "", "offset {offset}");
    }
}

#[test]
fn levels_twist_and_deviation() {
    let ok = |s: Vec<i16>| digits(&detect(&s)) == "8";
    assert!(ok(tone(b'8', -25.0, 60, 1.0, 0.0)));
    assert!(!ok(tone(b'8', -40.0, 60, 1.0, 0.0)), "too quiet");
    assert!(ok(tone(b'8', -10.0, 60, 1.015, 0.0)), "+1.5 %");
    assert!(ok(tone(b'8', -10.0, 60, 0.985, 0.0)), "-1.5 %");
    assert!(ok(tone(b'8', -10.0, 60, 1.0, -6.0)), "forward twist 6 dB");
    assert!(
        !ok(tone(b'8', -10.0, 60, 1.0, -12.0)),
        "forward twist 12 dB"
    );
    assert!(ok(tone(b'8', -10.0, 60, 1.0, 3.0)), "reverse twist 3 dB");
    assert!(!ok(tone(b'8', -10.0, 60, 1.0, 8.0)), "reverse twist 8 dB");
    // Single tones are not digits.
    let mut g = SineGenerator::new(770.0, 8000);
    let mut x = vec![0i16; 800];
    g.fill(&mut x);
    assert_eq!(digits(&detect(&x)), "");
}

#[test]
fn digits_in_noise() {
    let mut seed = 9;
    let all = "147*2580369#ABCD";
    let mut s = Vec::new();
    for d in all.bytes() {
        s.extend(tone(d, -15.0, 50, 1.0, 0.0));
        s.extend(silence(50));
    }
    // Noise 15 dB below the tone pair (-15 dBm0 per tone).
    let amp = dbm0_to_amplitude(-15.0);
    let n = noise(
        s.len(),
        amp / 2f64.sqrt() * 2f64.sqrt() / 10f64.powf(15.0 / 20.0),
        &mut seed,
    );
    let noisy: Vec<i16> = s
        .iter()
        .zip(&n)
        .map(|(&a, &b)| a.saturating_add(b))
        .collect();
    let ev = detect(&noisy);
    assert_eq!(digits(&ev), all);
    // The reported duration is close to 50 ms.
    for e in &ev {
        if let DtmfEvent::End { duration, .. } = e {
            assert!((300..=560).contains(duration), "{duration}");
        }
    }
}

#[test]
fn dropout_of_10ms_is_bridged() {
    let mut s = tone(b'3', -10.0, 60, 1.0, 0.0);
    s.extend(silence(10));
    s.extend(tone(b'3', -10.0, 60, 1.0, 0.0));
    assert_eq!(digits(&detect(&s)), "3");
}

/// Speech-like signal: a glottal pulse train through two moving formant resonators,
/// pitch and loudness varying per syllable, with pauses. It must never produce a
/// digit (talk-off).
#[test]
fn speech_like_signal_does_not_talk_off() {
    let mut seed = 1234u64;
    let mut out = Vec::new();
    for syllable in 0..400 {
        let r = |seed: &mut u64| (crate::rtp::splitmix64(seed) >> 11) as f64 / (1u64 << 53) as f64;
        let f0 = 90.0 + 160.0 * r(&mut seed);
        // Formants sweeping through the DTMF bands on purpose.
        let f1 = 600.0 + 400.0 * r(&mut seed);
        let f2 = 1100.0 + 600.0 * r(&mut seed);
        let gain = 2000.0 + 8000.0 * r(&mut seed);
        let len = 800 + (r(&mut seed) * 1600.0) as usize;
        let mut reson = [(0.0f64, 0.0f64); 2];
        let mut phase = 0.0;
        for n in 0..len {
            phase += f0 / 8000.0;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                1.0
            } else {
                0.0
            };
            let mut y = pulse;
            for (k, f) in [f1, f2].iter().enumerate() {
                let bw = 80.0;
                let rr = (-std::f64::consts::PI * bw / 8000.0).exp();
                let c = 2.0 * rr * (std::f64::consts::TAU * f / 8000.0).cos();
                let v = y + c * reson[k].0 - rr * rr * reson[k].1;
                reson[k].1 = reson[k].0;
                reson[k].0 = v;
                y = v;
            }
            let env = (std::f64::consts::PI * n as f64 / len as f64).sin();
            out.push((y * gain * env * 0.05).clamp(-32000.0, 32000.0) as i16);
        }
        if syllable % 3 == 0 {
            out.extend(silence(60));
        }
    }
    assert!(out.len() > 8000 * 60, "a minute of speech-like audio");
    let ev = detect(&out);
    assert_eq!(digits(&ev), "", "{ev:?}");
    // The same audio with a real digit in it is still detected (the test can fail).
    let mut with_digit = out[..8000 * 5].to_vec();
    with_digit.extend(tone(b'5', -12.0, 60, 1.0, 0.0));
    with_digit.extend(&out[8000 * 5..8000 * 10]);
    assert_eq!(digits(&detect(&with_digit)), "5");
}

#[test]
fn in_tone_covers_the_digit_and_not_speech_or_silence() {
    let mut d = InbandDetector::default();
    d.process(&silence(100));
    assert!(!d.in_tone());
    // Within the first 40 ms of a tone the detector already holds a candidate or the
    // digit, so the edge mutes the frame before the start is even reported.
    d.process(&tone(b'7', -10.0, 40, 1.0, 0.0));
    assert!(d.in_tone());
    d.process(&tone(b'7', -10.0, 60, 1.0, 0.0));
    assert!(d.in_tone());
    d.process(&silence(60));
    assert!(!d.in_tone(), "released after the tone");
    let events: Vec<DtmfEvent> = std::iter::from_fn(|| d.poll_event()).collect();
    assert_eq!(digits(&events), "7");
    // A steady single tone (speech-like, dial tone) never looks like a digit.
    let mut d = InbandDetector::default();
    let mut g = SineGenerator::new(1000.0, 8000);
    let mut x = vec![0i16; 160];
    for _ in 0..50 {
        g.fill(&mut x);
        d.process(&x);
        assert!(!d.in_tone());
    }
}

#[test]
fn the_player_plays_what_the_detector_recognises() {
    for digit in *b"0123456789*#ABCD" {
        let mut p = DtmfPlayer::new();
        p.start(TelephoneEvent::from_digit(digit).unwrap(), 10);
        let mut out = Vec::new();
        let mut frame = [0i16; 160];
        // The end arrives after 100 ms of event.
        for i in 0..20 {
            if i == 5 {
                p.release(800);
            }
            if p.fill(&mut frame) {
                out.extend_from_slice(&frame);
            } else {
                out.extend_from_slice(&[0; 160]);
            }
        }
        assert!(!p.is_playing());
        let played = out.iter().rposition(|&s| s != 0).unwrap() + 1;
        assert_eq!(played.div_ceil(160), 5, "digit {}", char::from(digit));
        assert_eq!(digits(&detect(&out)), char::from(digit).to_string());
    }
}

#[test]
fn the_player_keeps_a_minimum_and_a_maximum_and_ignores_flash() {
    let mut p = DtmfPlayer::new();
    p.start(TelephoneEvent::FLASH, 10);
    assert!(!p.is_playing());
    let mut frame = [0i16; 160];
    assert!(!p.fill(&mut frame));
    assert_eq!(frame, [0; 160], "nothing written without a tone");
    // An event that ended at once (start and end in one packet) still plays 40 ms.
    p.start(TelephoneEvent::from_digit(b'5').unwrap(), 10);
    p.release(0);
    let frames = std::iter::from_fn(|| p.fill(&mut frame).then_some(())).count();
    assert_eq!(frames, 2);
    // An event whose end never comes stops after MAX_PLAYED.
    p.start(TelephoneEvent::from_digit(b'5').unwrap(), 10);
    let frames = std::iter::from_fn(|| p.fill(&mut frame).then_some(())).count();
    assert_eq!(frames as u32, MAX_PLAYED / 160);
    // The level follows the event's volume.
    let rms_at = |volume| {
        let mut p = DtmfPlayer::new();
        let mut frame = [0i16; 160];
        p.start(TelephoneEvent::from_digit(b'1').unwrap(), volume);
        p.fill(&mut frame);
        branchline_board::dsp::rms(&frame)
    };
    let ratio_db = 20.0 * (rms_at(6) / rms_at(26)).log10();
    assert!((ratio_db - 20.0).abs() < 0.5, "{ratio_db} dB");
}
