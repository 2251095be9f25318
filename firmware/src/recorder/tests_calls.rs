//! [`CallRecorder`] decisions: policy precedence, the toggle code, queue and agent
//! policies; with a real writer thread on a temp dir.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use branchline_board::dsp::{tone_ratio, SineGenerator};
use line_proto::g711::Law;
use line_proto::Audio;
use tokio::sync::mpsc;

use super::calls::{CallRecorder, CodeMatcher, Toggle};
use super::guard::FreeSpace;
use super::index::Finished;
use super::{Key, Recorder, Side, Tap};
use crate::acd::{AcdConfig, AgentConfig, QueueConfig, Strategy};
use crate::call::{AgentCallEvent, AgentCallKind, LegId, MediaEnd};
use crate::cdr::Cdr;
use crate::config::{Config, RecordingPolicy};

struct Plenty;

impl FreeSpace for Plenty {
    fn available(&self, _dir: &Path) -> std::io::Result<u64> {
        Ok(AtomicU64::new(1 << 40).into_inner())
    }
}

/// Ports 1-4: extensions 101 (always), 102 (on demand), 103 and 104 (never, the
/// default).
const CONFIG: &str = r#"
[[extensions]]
number = "101"
port = 1
[[extensions]]
number = "102"
port = 2
[[extensions]]
number = "103"
port = 3
[[extensions]]
number = "104"
port = 4

[recording]
policies = { "101" = "always", "102" = "on_demand" }
"#;

struct Rig {
    _tmp: tempfile::TempDir,
    calls: CallRecorder,
    tap: Tap,
    thread: std::thread::JoinHandle<()>,
    finished: mpsc::UnboundedReceiver<Finished>,
}

fn rig_with(toml: &str) -> Rig {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = Config::from_toml_str(toml, Path::new("/etc/b.toml")).expect("config");
    let (tx, finished) = mpsc::unbounded_channel();
    let (recorder, thread) =
        Recorder::spawn(tmp.path().join("rec"), 1 << 20, Box::new(Plenty), tx).expect("spawn");
    let calls = CallRecorder::new(recorder, &config);
    let tap = calls.tap();
    Rig {
        _tmp: tmp,
        calls,
        tap,
        thread,
        finished,
    }
}

fn rig() -> Rig {
    rig_with(CONFIG)
}

impl Rig {
    /// Ends everything and returns the finished recordings (in the returned directory).
    fn finish(self) -> (Vec<Finished>, tempfile::TempDir) {
        let Rig {
            calls,
            tap,
            thread,
            mut finished,
            _tmp,
        } = self;
        drop((calls, tap));
        thread.join().expect("writer");
        let mut out = Vec::new();
        while let Ok(f) = finished.try_recv() {
            out.push(f);
        }
        (out, _tmp)
    }

    fn key(&mut self, port: u8, code: &str) -> Toggle {
        let mut last = Toggle::Nothing;
        for d in code.chars() {
            last = self.calls.digit(port, d);
        }
        last
    }

    fn talk(&self, a: u8, b: u8, frames: usize, hz: (f64, f64)) {
        let mut ga = SineGenerator::new(hz.0, 8000);
        let mut gb = SineGenerator::new(hz.1, 8000);
        for _ in 0..frames {
            self.tap.frame(a, Side::FromPort, &audio(&mut ga));
            self.tap.frame(b, Side::FromPort, &audio(&mut gb));
        }
    }
}

fn audio(g: &mut SineGenerator) -> Audio {
    let mut pcm = [0i16; line_proto::AUDIO_FRAME_LEN];
    g.fill(&mut pcm);
    let mut samples = [0u8; line_proto::AUDIO_FRAME_LEN];
    Law::Ulaw.encode_block(&pcm, &mut samples);
    Audio {
        law: Law::Ulaw,
        samples,
    }
}

fn cdr(call_id: &str, caller: u8, callee: u8) -> Cdr {
    serde_json::from_value(serde_json::json!({
        "call_id": call_id, "direction": "internal", "caller": "x", "caller_port": caller,
        "callee": "y", "callee_port": callee, "started_at_ms": 1, "answered_at_ms": 2,
        "ended_at_ms": 5, "disposition": "answered", "hangup_side": "caller"
    }))
    .expect("cdr")
}

fn channels(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let bytes = std::fs::read(path).expect("read wav");
    let pcm: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let left = pcm.iter().step_by(2).copied().collect();
    let right = pcm.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

#[test]
fn the_code_matcher_finds_the_code_in_any_digits() {
    let mut m = CodeMatcher::default();
    let fed =
        |m: &mut CodeMatcher, s: &str| s.chars().map(|d| m.digit("*1", d)).collect::<Vec<_>>();
    assert_eq!(fed(&mut m, "*1"), [false, true]);
    assert_eq!(fed(&mut m, "5*2*1"), [false, false, false, false, true]);
    assert_eq!(fed(&mut m, "**1"), [false, false, true]);
    assert_eq!(fed(&mut m, "1*"), [false, false]);
    assert_eq!(fed(&mut m, "1"), [true]);
    let mut m = CodeMatcher::default();
    let long: Vec<bool> = "*7*77".chars().map(|d| m.digit("*77", d)).collect();
    assert_eq!(long, [false, false, false, false, true]);
}

#[test]
fn always_records_at_the_bridge_and_the_code_does_not_stop_it() {
    let mut r = rig();
    r.calls.connect(MediaEnd::Port(3), MediaEnd::Port(1));
    assert!(r.calls.recorder().is_recording(3), "keyed on the caller");
    assert_eq!(r.key(1, "*1"), Toggle::Always);
    assert!(!r.calls.recorder().is_paused(3));
    r.talk(3, 1, 50, (1000.0, 2000.0));
    r.calls.cdr(&cdr("c-1", 3, 1));
    let (recs, _tmp) = r.finish();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].call_id, "c-1");
    let (left, right) = channels(&recs[0].path);
    assert!(tone_ratio(&left, 1000.0) > 0.9, "caller left");
    assert!(tone_ratio(&right, 2000.0) > 0.9, "callee right");
}

#[test]
fn never_on_both_sides_records_nothing_and_refuses_the_code() {
    let mut r = rig();
    r.calls.connect(MediaEnd::Port(3), MediaEnd::Port(4));
    assert!(!r.calls.recorder().is_recording(3));
    assert_eq!(r.calls.policy(3), RecordingPolicy::Never);
    assert_eq!(r.key(3, "*1"), Toggle::Refused);
    assert_eq!(r.key(4, "*1"), Toggle::Refused);
    r.calls.cdr(&cdr("c-2", 3, 4));
    assert!(r.finish().0.is_empty());
}

#[test]
fn on_demand_toggles_start_pause_resume_and_the_cdr_ends_it() {
    let mut r = rig();
    // 103 (never) calls 102 (on demand): the most demanding wins, either party may key.
    r.calls.connect(MediaEnd::Port(3), MediaEnd::Port(2));
    assert_eq!(r.calls.policy(3), RecordingPolicy::OnDemand);
    assert!(
        !r.calls.recorder().is_recording(3),
        "nothing before the code"
    );
    r.talk(3, 2, 20, (500.0, 500.0)); // not recorded
    assert_eq!(r.key(2, "*"), Toggle::Nothing);
    assert_eq!(r.key(2, "1"), Toggle::Started);
    assert!(r.calls.recorder().is_recording(3), "keyed on the caller");
    r.talk(3, 2, 50, (1000.0, 2000.0));
    assert_eq!(r.key(3, "*1"), Toggle::Paused);
    r.talk(3, 2, 20, (500.0, 500.0)); // not recorded
    assert_eq!(r.key(2, "*1"), Toggle::Resumed);
    r.talk(3, 2, 25, (1000.0, 2000.0));
    r.calls.cdr(&cdr("c-3", 3, 2));
    assert!(!r.calls.recorder().is_recording(3));
    let (recs, _tmp) = r.finish();
    assert_eq!(recs.len(), 1, "one file per call");
    assert_eq!(recs[0].call_id, "c-3");
    let (left, right) = channels(&recs[0].path);
    assert_eq!(
        left.len(),
        75 * 160,
        "only the audio while recording was on"
    );
    assert!(tone_ratio(&left, 1000.0) > 0.9);
    assert!(tone_ratio(&right, 2000.0) > 0.9);
}

#[test]
fn the_code_outside_a_call_does_nothing() {
    let mut r = rig();
    assert_eq!(r.key(2, "*1"), Toggle::Nothing);
    r.calls.connect(MediaEnd::Port(2), MediaEnd::Leg(LegId(7)));
    assert_eq!(r.key(2, "*1"), Toggle::Started);
    r.calls
        .disconnect(MediaEnd::Port(2), MediaEnd::Leg(LegId(7)));
    assert_eq!(r.key(4, "*1"), Toggle::Nothing);
    r.calls.cdr(&cdr("c-4", 2, 0));
    assert_eq!(r.finish().0.len(), 1);
}

fn acd(queue_policy: RecordingPolicy, agent_policy: RecordingPolicy) -> AcdConfig {
    let mut q = QueueConfig::new(
        "sales".parse().expect("name"),
        "7001".parse().expect("number"),
        Strategy::RingAll,
    );
    q.recording = queue_policy;
    let agent = AgentConfig {
        id: "200".parse().expect("agent"),
        skills: Default::default(),
        recording: agent_policy,
        mode: Default::default(),
    };
    AcdConfig::new(vec![q], vec![agent]).expect("acd")
}

fn answered(queue: Option<&str>, extension: &str) -> AgentCallEvent {
    AgentCallEvent {
        agent: "200".parse().expect("agent"),
        call_id: "q-1".into(),
        queue: queue.map(str::to_owned),
        caller_number: "5550100".into(),
        caller_name: String::new(),
        extension: Some(extension.into()),
        since_ms: 1,
        at_ms: 2,
        kind: AgentCallKind::Answered,
        transferred_from: None,
    }
}

#[test]
fn a_queue_or_agent_policy_of_always_records_the_answered_call() {
    use RecordingPolicy::*;
    for (queue, agent, recorded) in [
        (Always, Never, true),
        (Never, Always, true),
        (OnDemand, Never, false),
        (Never, Never, false),
    ] {
        let mut r = rig();
        r.calls.set_acd(&acd(queue, agent));
        // Bridge first, then the answer event, as call control emits them.
        r.calls.connect(MediaEnd::Port(4), MediaEnd::Port(3));
        r.calls.agent_call(&answered(Some("sales"), "103"));
        assert_eq!(
            r.calls.recorder().is_recording(4),
            recorded,
            "queue {queue:?} agent {agent:?}"
        );
        assert_eq!(r.calls.policy(3), queue.max(agent));
        if queue == OnDemand {
            assert_eq!(r.key(3, "*1"), Toggle::Started, "on demand by the queue");
        }
        r.calls.cdr(&cdr("q-1", 4, 3));
        // The queue's demand ends with the call.
        r.calls.connect(MediaEnd::Port(4), MediaEnd::Port(3));
        assert!(!r.calls.recorder().is_recording(4));
        assert_eq!(r.calls.policy(3), Never);
        drop(r.finish());
    }
}

#[test]
fn queue_policies_for_a_sip_agent_or_other_events_change_nothing() {
    let mut r = rig();
    r.calls
        .set_acd(&acd(RecordingPolicy::Always, RecordingPolicy::Always));
    r.calls.connect(MediaEnd::Port(4), MediaEnd::Leg(LegId(3)));
    r.calls.agent_call(&answered(Some("sales"), "300"));
    assert!(
        !r.calls.recorder().is_recording(4),
        "the agent is not analog"
    );
    let mut ringing = answered(Some("sales"), "103");
    ringing.kind = AgentCallKind::Ringing;
    r.calls.agent_call(&ringing);
    assert_eq!(r.calls.policy(3), RecordingPolicy::Never);
    assert!(r.finish().0.is_empty());
}

/// 201 (a SIP phone) records always, 202 (a SIP phone) on demand.
const SIP_CONFIG: &str = r#"
[[extensions]]
number = "103"
port = 3

[[sip_accounts]]
extension = "201"
password = "long-enough-1"

[[sip_accounts]]
extension = "202"
password = "long-enough-2"

[recording]
policies = { "201" = "always", "202" = "on_demand" }
"#;

#[test]
fn a_sip_phones_policy_counts_for_its_call_with_an_analog_port() {
    let mut r = rig_with(SIP_CONFIG);
    // 201 (always) calls analog 103 (never): recorded from the bridge, the SIP phone's
    // voice (to the port) left as the caller.
    r.calls.leg_phone(LegId(1), Some("201"));
    r.calls.connect(MediaEnd::Leg(LegId(1)), MediaEnd::Port(3));
    assert_eq!(r.calls.policy(3), RecordingPolicy::Always);
    assert!(r.calls.recorder().is_recording(3));
    r.calls.cdr(&cdr("s-1", 0, 3));
    r.calls
        .disconnect(MediaEnd::Leg(LegId(1)), MediaEnd::Port(3));

    // A trunk leg (no phone) carries no policy.
    r.calls.leg_phone(LegId(2), None);
    r.calls.connect(MediaEnd::Port(3), MediaEnd::Leg(LegId(2)));
    assert_eq!(r.calls.policy(3), RecordingPolicy::Never);
    assert!(!r.calls.recorder().is_recording(3));
    assert_eq!(r.calls.leg_digit(LegId(2), '*'), Toggle::Nothing);
    assert_eq!(r.calls.leg_digit(LegId(2), '1'), Toggle::Refused);
    r.calls.cdr(&cdr("s-2", 3, 0));
    r.calls
        .disconnect(MediaEnd::Port(3), MediaEnd::Leg(LegId(2)));

    // 202 (on demand) keys the code by RFC 4733: the port's call records.
    r.calls.leg_phone(LegId(3), Some("202"));
    r.calls.connect(MediaEnd::Leg(LegId(3)), MediaEnd::Port(3));
    assert!(!r.calls.recorder().is_recording(3));
    assert_eq!(r.calls.leg_digit(LegId(3), '*'), Toggle::Nothing);
    assert_eq!(r.calls.leg_digit(LegId(3), '1'), Toggle::Started);
    assert!(r.calls.recorder().is_recording(3));
    assert_eq!(r.key(3, "*1"), Toggle::Paused, "either party toggles");
    r.calls.cdr(&cdr("s-3", 0, 3));
    let (recs, _tmp) = r.finish();
    let ids: Vec<&str> = recs.iter().map(|f| f.call_id.as_str()).collect();
    assert_eq!(ids, ["s-1", "s-3"]);
}

#[test]
fn a_queue_policy_applies_when_the_agent_answers_on_a_sip_phone() {
    let mut r = rig_with(SIP_CONFIG);
    let mut acd = acd(RecordingPolicy::Always, RecordingPolicy::Never);
    r.calls.set_acd(&acd);
    // A PSTN caller on analog port 3 reaches agent 200 on SIP phone 202.
    r.calls.leg_phone(LegId(9), Some("202"));
    r.calls.connect(MediaEnd::Port(3), MediaEnd::Leg(LegId(9)));
    assert!(!r.calls.recorder().is_recording(3));
    r.calls.agent_call(&answered(Some("sales"), "202"));
    assert!(r.calls.recorder().is_recording(3));
    r.calls.cdr(&cdr("q-9", 3, 0));
    acd = self::acd(RecordingPolicy::Never, RecordingPolicy::Never);
    r.calls.set_acd(&acd);
    assert_eq!(r.finish().0.len(), 1);
}

fn sip_cdr(call_id: &str) -> Cdr {
    serde_json::from_value(serde_json::json!({
        "call_id": call_id, "direction": "inbound", "caller": "5550100", "caller_port": null,
        "callee": "201", "callee_port": null, "started_at_ms": 1, "answered_at_ms": 2,
        "ended_at_ms": 5, "disposition": "answered", "hangup_side": "caller"
    }))
    .expect("cdr")
}

impl Rig {
    /// `leg` of call `call_id` (the caller or not), behind SIP phone `phone` or a trunk.
    fn leg(&mut self, leg: u64, call_id: &str, caller: bool, phone: Option<&str>) {
        self.calls.leg_phone(LegId(leg), phone);
        self.calls.leg_call(LegId(leg), Some((call_id, caller)));
    }

    fn leg_key(&mut self, leg: u64, code: &str) -> Toggle {
        let mut last = Toggle::Nothing;
        for d in code.chars() {
            last = self.calls.leg_digit(LegId(leg), d);
        }
        last
    }

    /// `packets` 20 ms PCMU packets received on each of two legs (`(leg, hz)`), as the
    /// media engine hands them over (only while a leg's flag is set).
    fn legs_talk(&self, a: (u64, f64), b: (u64, f64), packets: u32) {
        use crate::media_engine::{RtpTap, TappedRtp};
        let legs = [a, b].map(|(leg, hz)| {
            (
                LegId(leg),
                self.tap.leg_flag(LegId(leg)),
                SineGenerator::new(hz, 8000),
            )
        });
        let mut legs = legs;
        for i in 0..packets {
            for (leg, flag, g) in &mut legs {
                let frame = audio(g);
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    self.tap.rtp(
                        *leg,
                        &TappedRtp {
                            audio_pt: 0,
                            law: Law::Ulaw,
                            event_pt: Some(101),
                            ssrc: 7,
                            timestamp: i * 160,
                            payload_type: 0,
                            payload: &frame.samples,
                        },
                    );
                }
            }
        }
    }
}

#[test]
fn a_sip_phones_always_policy_records_its_call_with_the_trunk_caller_left() {
    let mut r = rig_with(SIP_CONFIG);
    // A trunk caller (leg 10) reaches SIP phone 201 (leg 11, always); the bridge names
    // the callee first: the caller is still the left channel and the key.
    r.leg(10, "t-1", true, None);
    r.leg(11, "t-1", false, Some("201"));
    r.calls
        .connect(MediaEnd::Leg(LegId(11)), MediaEnd::Leg(LegId(10)));
    assert!(r.calls.recorder().is_recording(Key::Leg(LegId(10))));
    assert!(!r.calls.recorder().is_recording(Key::Leg(LegId(11))));
    assert_eq!(
        r.leg_key(11, "*1"),
        Toggle::Always,
        "the code does not stop it"
    );
    r.legs_talk((10, 1000.0), (11, 2000.0), 100);
    // Held and taken back: the same recording goes on.
    r.calls
        .disconnect(MediaEnd::Leg(LegId(10)), MediaEnd::Leg(LegId(11)));
    r.calls
        .connect(MediaEnd::Leg(LegId(10)), MediaEnd::Leg(LegId(11)));
    // Another call's CDR ends nothing; this call's ends it.
    r.calls.cdr(&sip_cdr("t-0"));
    assert!(r.calls.recorder().is_recording(Key::Leg(LegId(10))));
    r.calls.cdr(&sip_cdr("t-1"));
    assert!(!r.calls.recorder().records_leg(LegId(10)));
    let (recs, _tmp) = r.finish();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].call_id, "t-1");
    assert_eq!(recs[0].port, None);
    let (left, right) = channels(&recs[0].path);
    assert_eq!(left.len(), 100 * 160);
    assert!(tone_ratio(&left, 1000.0) > 0.9, "left: the trunk caller");
    assert!(tone_ratio(&right, 2000.0) > 0.9, "right: the SIP phone");
}

#[test]
fn the_toggle_code_on_a_call_between_two_sip_legs_starts_pauses_and_resumes() {
    let mut r = rig_with(SIP_CONFIG);
    // SIP phone 202 (on demand, leg 20) calls out through the trunk (leg 21).
    r.leg(20, "s-20", true, Some("202"));
    r.leg(21, "s-20", false, None);
    r.calls
        .connect(MediaEnd::Leg(LegId(20)), MediaEnd::Leg(LegId(21)));
    assert!(!r.calls.recorder().records_leg(LegId(20)));
    assert_eq!(r.leg_key(20, "*"), Toggle::Nothing);
    assert_eq!(r.leg_key(20, "1"), Toggle::Started);
    assert!(r.calls.recorder().is_recording(Key::Leg(LegId(20))));
    assert_eq!(r.leg_key(21, "*1"), Toggle::Paused, "either party toggles");
    assert!(r.calls.recorder().is_paused(Key::Leg(LegId(20))));
    assert_eq!(r.leg_key(20, "*1"), Toggle::Resumed);
    r.calls.cdr(&sip_cdr("s-20"));
    // Two trunk legs (no phone, no policy): refused.
    r.leg(30, "s-30", true, None);
    r.leg(31, "s-30", false, None);
    r.calls
        .connect(MediaEnd::Leg(LegId(30)), MediaEnd::Leg(LegId(31)));
    assert_eq!(r.leg_key(31, "*1"), Toggle::Refused);
    r.calls.cdr(&sip_cdr("s-30"));
    // After the CDR the legs are forgotten: the code does nothing.
    assert_eq!(r.leg_key(20, "*1"), Toggle::Nothing);
    let (recs, _tmp) = r.finish();
    let ids: Vec<&str> = recs.iter().map(|f| f.call_id.as_str()).collect();
    assert_eq!(ids, ["s-20"]);
}

#[test]
fn a_queue_policy_records_a_trunk_caller_answered_on_a_sip_phone() {
    let mut r = rig_with(SIP_CONFIG);
    r.calls
        .set_acd(&acd(RecordingPolicy::Always, RecordingPolicy::Never));
    // The answer event before the bridge...
    r.leg(40, "q-1", true, None);
    r.leg(41, "q-1", false, Some("202"));
    r.calls.agent_call(&answered(Some("sales"), "202"));
    assert!(
        !r.calls.recorder().records_leg(LegId(40)),
        "nothing bridged yet"
    );
    r.calls
        .connect(MediaEnd::Leg(LegId(40)), MediaEnd::Leg(LegId(41)));
    assert!(r.calls.recorder().is_recording(Key::Leg(LegId(40))));
    r.calls.cdr(&sip_cdr("q-1"));
    // ...or after it, both record; the demand ended with the first call's CDR.
    r.leg(50, "q-1", true, None);
    r.leg(51, "q-1", false, Some("202"));
    r.calls
        .connect(MediaEnd::Leg(LegId(50)), MediaEnd::Leg(LegId(51)));
    assert!(!r.calls.recorder().records_leg(LegId(50)));
    r.calls.agent_call(&answered(Some("sales"), "202"));
    assert!(r.calls.recorder().is_recording(Key::Leg(LegId(50))));
    r.calls.cdr(&sip_cdr("q-1"));
    assert_eq!(r.finish().0.len(), 2);
}
