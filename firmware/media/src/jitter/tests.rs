use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::rtp::{parse, RtpHeader, MAX_PACKET, PT_CN, PT_PCMU};

const LOUD: u8 = 0x20; // µ-law code of a loud sample
const QUIET: u8 = 0xFF; // µ-law zero

fn bytes(seq: u16, ts: u32, ssrc: u32, marker: bool, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_PACKET];
    let n = RtpHeader {
        payload_type: pt,
        marker,
        seq,
        timestamp: ts,
        ssrc,
    }
    .write(payload, &mut buf)
    .unwrap();
    buf.truncate(n);
    buf
}

struct Harness {
    jb: JitterBuffer,
    t0: Instant,
}

impl Harness {
    fn new(config: JitterConfig) -> Self {
        Harness {
            jb: JitterBuffer::new(config, PayloadMap::default()),
            t0: Instant::now(),
        }
    }
    fn at(&self, ms: f64) -> Instant {
        self.t0 + Duration::from_micros((ms * 1000.0) as u64)
    }
    fn push(&mut self, ms: f64, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> PushOutcome {
        self.push_ssrc(ms, seq, ts, 0xABCD, marker, payload)
    }
    fn push_ssrc(
        &mut self,
        ms: f64,
        seq: u16,
        ts: u32,
        ssrc: u32,
        marker: bool,
        payload: &[u8],
    ) -> PushOutcome {
        let b = bytes(seq, ts, ssrc, marker, PT_PCMU, payload);
        let p = parse(&b).unwrap();
        let now = self.at(ms);
        self.jb.push(now, &p).unwrap()
    }
    fn pop(&mut self, ms: f64) -> Frame {
        let now = self.at(ms);
        self.jb.pop(now)
    }
}

fn played(frames: &[Frame]) -> Vec<u16> {
    frames
        .iter()
        .filter_map(|f| f.seqs)
        .flat_map(|(a, b)| if a == b { vec![a] } else { vec![a, b] })
        .collect()
}

#[test]
fn config_validation() {
    assert!(JitterConfig::adaptive(20, 200).is_ok());
    assert!(matches!(
        JitterConfig::adaptive(300, 200),
        Err(Error::JitterConfig {
            reason: "minimum above maximum",
            ..
        })
    ));
    assert!(JitterConfig::adaptive(0, 10).is_err());
    assert!(JitterConfig::adaptive(20, 5000).is_err());
    assert!(JitterConfig::fixed(60).is_ok());
    assert!(JitterConfig::fixed(5).is_err());
    assert_eq!(JitterConfig::fixed(60).unwrap().mode(), JitterMode::Fixed);
}

#[test]
fn steady_stream_plays_in_order_after_min_delay() {
    let mut h = Harness::new(JitterConfig::adaptive(40, 200).unwrap());
    let mut frames = Vec::new();
    for i in 0..50u16 {
        let t = f64::from(i) * 20.0;
        h.push(t + 1.0, i, u32::from(i) * 160, i == 0, &[LOUD; 160]);
        frames.push(h.pop(t + 5.0));
    }
    let seqs = played(&frames);
    assert_eq!(seqs, (0..seqs.len() as u16).collect::<Vec<_>>());
    // 40 ms of delay: two silent frames first (the pop 4 ms after the first packet
    // plays nothing, neither does the next), then audio every frame.
    assert_eq!(frames[0].kind, FrameKind::Silence);
    assert!(frames[3..].iter().all(|f| f.kind == FrameKind::Audio));
    let s = h.jb.stats();
    assert!((s.current_delay_ms - 40.0).abs() <= 10.0, "{s:?}");
    assert_eq!(s.late, 0);
    assert_eq!(s.concealed_frames, 0);
}

#[test]
fn reorders_and_drops_duplicates_and_late() {
    let mut h = Harness::new(JitterConfig::adaptive(60, 200).unwrap());
    let order = [0u16, 2, 1, 3, 5, 4, 6, 7];
    let mut frames = Vec::new();
    for (k, &seq) in order.iter().enumerate() {
        let t = k as f64 * 20.0;
        assert_eq!(
            h.push(t, seq, u32::from(seq) * 160, seq == 0, &[LOUD; 160]),
            PushOutcome::Queued
        );
        if seq == 2 {
            assert_eq!(
                h.push(t + 0.5, 2, 320, false, &[LOUD; 160]),
                PushOutcome::Duplicate
            );
        }
        frames.push(h.pop(t + 10.0));
    }
    for k in 8..14 {
        frames.push(h.pop(k as f64 * 20.0 + 10.0));
    }
    assert_eq!(played(&frames), (0..8).collect::<Vec<_>>());
    // Seq 1 again after it played: late.
    assert_eq!(
        h.push(300.0, 1, 160, false, &[LOUD; 160]),
        PushOutcome::Late
    );
    let s = h.jb.stats();
    assert_eq!((s.duplicates, s.late), (1, 1));
}

#[test]
fn wraparound_of_seq_and_timestamp() {
    let mut h = Harness::new(JitterConfig::adaptive(40, 200).unwrap());
    let seq0 = 65530u16;
    let ts0 = u32::MAX - 3 * 160 + 7;
    let mut frames = Vec::new();
    for i in 0..30u16 {
        let t = f64::from(i) * 20.0;
        let out = h.push(
            t,
            seq0.wrapping_add(i),
            ts0.wrapping_add(u32::from(i) * 160),
            i == 0,
            &[LOUD; 160],
        );
        assert_eq!(out, PushOutcome::Queued, "packet {i}");
        frames.push(h.pop(t + 3.0));
    }
    let seqs = played(&frames);
    let expect: Vec<u16> = (0..seqs.len() as u16)
        .map(|i| seq0.wrapping_add(i))
        .collect();
    assert_eq!(seqs, expect);
    assert!(seqs.len() >= 27);
}

#[test]
fn ssrc_change_resets() {
    let mut h = Harness::new(JitterConfig::adaptive(20, 200).unwrap());
    for i in 0..10u16 {
        let t = f64::from(i) * 20.0;
        h.push(t, 100 + i, 5000 + u32::from(i) * 160, i == 0, &[LOUD; 160]);
        h.pop(t + 5.0);
    }
    let out = h.push_ssrc(200.0, 7, 999_999, 0x5555, true, &[LOUD; 160]);
    assert_eq!(out, PushOutcome::Resync(ResyncReason::SsrcChange));
    let mut frames = Vec::new();
    for i in 1..10u16 {
        let t = 200.0 + f64::from(i) * 20.0;
        h.push_ssrc(
            t,
            7 + i,
            999_999 + u32::from(i) * 160,
            0x5555,
            false,
            &[LOUD; 160],
        );
        frames.push(h.pop(t + 5.0));
    }
    let seqs = played(&frames);
    assert_eq!(seqs.first(), Some(&7));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(h.jb.stats().resyncs, 1);
}

#[test]
fn timestamp_jump_resyncs() {
    let mut h = Harness::new(JitterConfig::adaptive(20, 200).unwrap());
    for i in 0..5u16 {
        h.push(
            f64::from(i) * 20.0,
            i,
            u32::from(i) * 160,
            i == 0,
            &[LOUD; 160],
        );
        h.pop(f64::from(i) * 20.0 + 5.0);
    }
    let out = h.push(100.0, 5, 10 * 8000, false, &[LOUD; 160]);
    assert_eq!(out, PushOutcome::Resync(ResyncReason::TimestampJump));
    let f1 = h.pop(105.0);
    let f2 = h.pop(125.0);
    assert!(
        f1.seqs == Some((5, 5)) || f2.seqs == Some((5, 5)),
        "{f1:?} {f2:?}"
    );
}

#[test]
fn loss_is_concealed_then_fades() {
    let mut h = Harness::new(JitterConfig::adaptive(20, 200).unwrap());
    let mut frames = Vec::new();
    for i in 0..40u16 {
        let t = f64::from(i) * 20.0;
        if !(10..20).contains(&i) {
            h.push(t, i, u32::from(i) * 160, i == 0, &[LOUD; 160]);
        }
        frames.push(h.pop(t + 5.0));
    }
    let kinds: Vec<FrameKind> = frames.iter().map(|f| f.kind).collect();
    let concealed = kinds.iter().filter(|&&k| k == FrameKind::Concealed).count();
    // Up to 60 ms of concealment, then silence until audio resumes.
    assert!((3..=4).contains(&concealed), "{kinds:?}");
    assert!(kinds.contains(&FrameKind::Silence));
    assert_eq!(kinds.last(), Some(&FrameKind::Audio));
}

#[test]
fn adapts_to_jitter_and_back() {
    let mut h = Harness::new(JitterConfig::adaptive(20, 300).unwrap());
    let mut seed = 1u64;
    let mut late_last_half = 0;
    let n = 1000u16;
    // Jittery phase: delays uniform in 0..80 ms; every 2 s a 200 ms silence gap.
    let mut pushes: Vec<(f64, u16)> = Vec::new();
    for i in 0..n {
        let jitter = (crate::rtp::splitmix64(&mut seed) % 80) as f64;
        pushes.push((f64::from(i) * 20.0 + jitter, i));
    }
    pushes.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let mut k = 0;
    for pop in 0..(n as usize + 20) {
        let t = pop as f64 * 20.0 + 7.0;
        while k < pushes.len() && pushes[k].0 <= t {
            let (at, seq) = pushes[k];
            let payload = if seq % 100 < 10 {
                [QUIET; 160]
            } else {
                [LOUD; 160]
            };
            if h.push(at, seq, u32::from(seq) * 160, seq % 100 == 10, &payload) == PushOutcome::Late
                && seq > n / 2
            {
                late_last_half += 1;
            }
            k += 1;
        }
        h.pop(t);
    }
    let s = h.jb.stats();
    assert!(
        s.target_delay_ms >= 70.0 && s.target_delay_ms <= 90.0,
        "{s:?}"
    );
    assert!(s.jitter_ms > 10.0, "{s:?}");
    // After convergence about 1 % is late (the target is the 98th percentile).
    assert!(late_last_half <= 12, "late {late_last_half} {s:?}");

    // Calm phase: no jitter; the delay comes back down during the quiet stretches.
    let base = f64::from(n) * 20.0 + 500.0;
    for i in 0..800u16 {
        let seq = n + i;
        let t = base + f64::from(i) * 20.0;
        let payload = if i % 100 < 10 {
            [QUIET; 160]
        } else {
            [LOUD; 160]
        };
        h.push(t, seq, u32::from(seq) * 160 + 4000, i % 100 == 10, &payload);
        h.pop(t + 7.0);
    }
    let s2 = h.jb.stats();
    assert!(s2.current_delay_ms < 45.0, "{s2:?}");
    assert!(s2.dropped_samples > 0);
}

#[test]
fn clock_drift_is_absorbed_in_silence() {
    for (sender_period_ms, name) in [(19.9, "fast sender"), (20.1, "slow sender")] {
        let mut h = Harness::new(JitterConfig::adaptive(40, 200).unwrap());
        let mut send = 0.0f64;
        let mut seq = 0u16;
        let mut pop_t = 3.0;
        for _ in 0..3000 {
            while send <= pop_t {
                let quiet = (seq / 50) % 2 == 1;
                let payload = if quiet { [QUIET; 160] } else { [LOUD; 160] };
                h.push(send, seq, u32::from(seq) * 160, seq % 100 == 0, &payload);
                seq = seq.wrapping_add(1);
                send += sender_period_ms;
            }
            h.pop(pop_t);
            pop_t += 20.0;
        }
        let s = h.jb.stats();
        assert!(
            s.current_delay_ms >= 20.0 && s.current_delay_ms <= 70.0,
            "{name}: {s:?}"
        );
        assert!(s.late <= 3, "{name}: {s:?}");
        if sender_period_ms < 20.0 {
            assert!(s.dropped_samples >= 160 * 10, "{name}: {s:?}");
        } else {
            assert!(s.inserted_frames >= 10, "{name}: {s:?}");
        }
    }
}

#[test]
fn fixed_mode_keeps_delay_and_does_not_conceal() {
    let mut h = Harness::new(JitterConfig::fixed(60).unwrap());
    let mut frames = Vec::new();
    for i in 0..60u16 {
        let t = f64::from(i) * 20.0;
        if i != 30 {
            // Some jitter that an adaptive buffer would follow.
            let j = if i % 7 == 0 { 35.0 } else { 0.0 };
            h.push(t + j, i, u32::from(i) * 160, i == 0, &[LOUD; 160]);
        }
        frames.push(h.pop(t + 5.0));
    }
    let s = h.jb.stats();
    assert_eq!(s.target_delay_ms, 60.0);
    assert_eq!(s.concealed_frames, 0);
    assert!(frames.iter().all(|f| f.kind != FrameKind::Concealed));
    let seqs = played(&frames);
    assert!(!seqs.contains(&30));
    assert!(seqs.windows(2).all(|w| w[1] > w[0]));
    assert_eq!(s.late, 0, "{s:?}");
}

#[test]
fn comfort_noise_and_not_audio() {
    let mut h = Harness::new(JitterConfig::adaptive(20, 200).unwrap());
    for i in 0..5u16 {
        h.push(
            f64::from(i) * 20.0,
            i,
            u32::from(i) * 160,
            i == 0,
            &[LOUD; 160],
        );
        h.pop(f64::from(i) * 20.0 + 5.0);
    }
    let cn = bytes(5, 800, 0xABCD, false, PT_CN, &[40]);
    let p = parse(&cn).unwrap();
    assert_eq!(h.jb.push(h.at(100.0), &p).unwrap(), PushOutcome::Queued);
    let mut kinds = Vec::new();
    for i in 5..12 {
        kinds.push(h.pop(f64::from(i) * 20.0 + 5.0));
    }
    let noise: Vec<&Frame> = kinds
        .iter()
        .filter(|f| f.kind == FrameKind::ComfortNoise)
        .collect();
    assert!(
        noise.len() >= 4,
        "{:?}",
        kinds.iter().map(|f| f.kind).collect::<Vec<_>>()
    );
    let rms = branchline_board::dsp::rms(&noise[0].pcm);
    // -40 dBov = 327.67 RMS.
    assert!((rms - 327.7).abs() < 60.0, "{rms}");

    let ev = bytes(6, 960, 0xABCD, true, 101, &[1, 0x8A, 0, 160]);
    let p = parse(&ev).unwrap();
    assert_eq!(h.jb.push(h.at(120.0), &p).unwrap(), PushOutcome::NotAudio);
}

#[test]
fn bad_packets_change_nothing() {
    let mut h = Harness::new(JitterConfig::default());
    h.push(0.0, 1, 160, true, &[LOUD; 160]);
    let before = h.jb.stats();
    let odd = bytes(2, 320, 0xABCD, false, 18, &[0; 20]);
    assert_eq!(
        h.jb.push(h.at(1.0), &parse(&odd).unwrap()),
        Err(Error::UnexpectedPayloadType { pt: 18 })
    );
    let long = bytes(2, 320, 0xABCD, false, PT_PCMU, &[0; 800]);
    assert_eq!(
        h.jb.push(h.at(1.0), &parse(&long).unwrap()),
        Err(Error::PayloadTooLong { len: 800, max: 480 })
    );
    assert_eq!(h.jb.stats(), before);
    assert_eq!(h.jb.len(), 1);
}

#[test]
fn mixed_ptime_is_cut_sample_exact() {
    let mut h = Harness::new(JitterConfig::adaptive(40, 200).unwrap());
    // 10 ms packets then 30 ms packets, continuous timestamps.
    let mut ts = 0u32;
    let mut t = 0.0;
    let mut frames = Vec::new();
    let mut pop_t = 2.0;
    for seq in 0..40u16 {
        let len = if seq < 20 { 80 } else { 240 };
        let code = (seq % 50) as u8 + 0x10;
        h.push(t, seq, ts, seq == 0, &vec![code; len]);
        ts += len as u32;
        t += len as f64 / 8.0;
        while pop_t <= t {
            frames.push(h.pop(pop_t));
            pop_t += 20.0;
        }
    }
    let audio: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.kind == FrameKind::Audio)
        .collect();
    assert!(audio.len() >= 25, "{}", audio.len());
    assert_eq!(h.jb.stats().concealed_frames, 0);
    // A frame over two 10 ms packets holds both.
    assert!(audio
        .iter()
        .any(|f| matches!(f.seqs, Some((a, b)) if b == a + 1)));
}

/// Model: sender emits packets 20 ms apart; the network delays each by a random amount
/// and loses or duplicates some; the buffer pops every 20 ms. Whatever happens, no
/// packet plays twice, packets play in sequence order, a packet reported late never
/// plays, and every packet that plays was queued.
fn run_model(
    seq0: u16,
    ts0: u32,
    delays: Vec<(u8, bool, bool)>,
    min_ms: u32,
) -> std::result::Result<(), TestCaseError> {
    let mut h = Harness::new(JitterConfig::adaptive(min_ms, 200).unwrap());
    let mut arrivals: Vec<(f64, u16, u32)> = Vec::new();
    for (i, &(delay, lost, dup)) in delays.iter().enumerate() {
        if lost {
            continue;
        }
        let i16 = i as u16;
        let send = i as f64 * 20.0;
        let at = send + f64::from(delay);
        let (seq, ts) = (seq0.wrapping_add(i16), ts0.wrapping_add(i as u32 * 160));
        arrivals.push((at, seq, ts));
        if dup {
            arrivals.push((at + 3.0, seq, ts));
        }
    }
    arrivals.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let mut queued = std::collections::HashSet::new();
    let mut late = std::collections::HashSet::new();
    let mut played_order: Vec<u16> = Vec::new();
    let mut k = 0;
    let pops = delays.len() + 20;
    for pop in 0..pops {
        let t = pop as f64 * 20.0 + 11.0;
        while k < arrivals.len() && arrivals[k].0 <= t {
            let (at, seq, ts) = arrivals[k];
            match h.push(at, seq, ts, seq == seq0, &[LOUD; 160]) {
                PushOutcome::Queued | PushOutcome::Resync(_) => {
                    queued.insert(seq);
                }
                PushOutcome::Late => {
                    late.insert(seq);
                }
                PushOutcome::Duplicate | PushOutcome::NotAudio => {}
            }
            k += 1;
        }
        let f = h.pop(t);
        if let Some((a, b)) = f.seqs {
            played_order.push(a);
            if b != a {
                played_order.push(b);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let unwrap = |s: u16| i64::from(s.wrapping_sub(seq0));
    for w in played_order.windows(2) {
        prop_assert!(unwrap(w[1]) > unwrap(w[0]), "order {:?}", played_order);
    }
    for s in &played_order {
        prop_assert!(seen.insert(*s), "{} played twice", s);
        prop_assert!(queued.contains(s), "{} played but never queued", s);
        prop_assert!(!late.contains(s) || queued.contains(s));
    }
    Ok(())
}

proptest! {
    #[test]
    fn model_no_replay_order_preserved(
        seq0: u16,
        ts0: u32,
        delays in proptest::collection::vec((0u8..150, proptest::bool::weighted(0.05), proptest::bool::weighted(0.05)), 1..300),
        min_ms in 0u32..100,
    ) {
        run_model(seq0, ts0, delays, min_ms)?;
    }

    #[test]
    fn model_near_wrap(
        delays in proptest::collection::vec((0u8..120, proptest::bool::weighted(0.1), proptest::bool::weighted(0.1)), 50..200),
        back in 0u16..100,
        tback in 0u32..20_000,
    ) {
        run_model(0u16.wrapping_sub(back), 0u32.wrapping_sub(tback), delays, 20)?;
    }

    #[test]
    fn arbitrary_packets_never_panic(
        pkts in proptest::collection::vec((any::<u16>(), any::<u32>(), 0u32..3, any::<bool>(), 0usize..500, 0u32..100), 1..200),
    ) {
        let mut h = Harness::new(JitterConfig::default());
        let mut t = 0.0;
        for (seq, ts, ssrc, marker, len, dt) in pkts {
            t += f64::from(dt);
            let b = bytes(seq, ts, ssrc, marker, PT_PCMU, &vec![LOUD; len]);
            let _ = h.jb.push(h.at(t), &parse(&b).unwrap());
            let _ = h.pop(t);
            prop_assert!(h.jb.len() <= MAX_QUEUE);
        }
    }
}
