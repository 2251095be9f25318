//! What the calls page and `GET /api/v1/calls/active` show of the calls in progress:
//! call control's snapshot joined with the RTP statistics of the calls' SIP legs
//! ([`ActiveCalls`]), with the numbers presented through [`crate::mask::call_numbers`]
//! (the caller passes that in as `present`, so this module never decides masking).

use line_proto::g711::Law;
use serde::Serialize;

use super::status::ActiveCalls;
use crate::call::{CallParty, CallSnapshot};
use crate::cdr::Direction;
use crate::media_engine::LegSnapshot;

/// One call in progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveCallView {
    /// The call's id (its CDR will carry it).
    pub call_id: String,
    /// Internal, inbound or outbound.
    pub direction: Direction,
    /// `alerting`, `proceeding` or `connected`.
    pub phase: &'static str,
    /// Calling number, masked unless the viewer may see it.
    pub caller: String,
    /// Where the caller is: `FXS port 1`, `FXO port 5 (PSTN)`, `SIP phone`, `SIP trunk`.
    pub caller_via: String,
    /// Called number as dialled, masked unless the viewer may see it.
    pub callee: String,
    /// Where the answering party is, once answered.
    pub callee_via: Option<String>,
    /// Where the call is being offered (not answered yet).
    pub ringing: Vec<String>,
    /// Whether a number was masked.
    pub masked: bool,
    /// Start, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Answer, ms since the Unix epoch.
    pub answered_at_ms: Option<i64>,
    /// Time since the start at the report, ms.
    pub duration_ms: i64,
    /// Talk time since the answer at the report, ms.
    pub talk_ms: Option<i64>,
    /// The call's SIP legs with their RTP statistics (empty: analog ports only, bridged
    /// on the board without RTP).
    pub legs: Vec<LegView>,
}

/// One SIP leg of a call in progress, as the media engine reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LegView {
    /// `caller`, `callee` or `offered`.
    pub side: &'static str,
    /// `SIP phone` or `SIP trunk`.
    pub via: String,
    /// `PCMU` / `PCMA`, once the offer/answer is done.
    pub codec: Option<&'static str>,
    /// Packetisation time, ms.
    pub ptime_ms: Option<u32>,
    /// Where its RTP goes.
    pub remote: Option<String>,
    /// RTP packets received.
    pub packets_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// Loss of the RTP received, percent (once RTP arrived).
    pub loss_percent: Option<f64>,
    /// Interarrival jitter of the RTP received, ms.
    pub jitter_ms: Option<f64>,
    /// MOS estimate (E-model) of the RTP received.
    pub mos: Option<f64>,
}

pub(crate) fn via(p: CallParty) -> String {
    match p {
        CallParty::Fxs(port) => format!("FXS port {port}"),
        CallParty::Fxo(port) => format!("FXO port {port} (PSTN)"),
        CallParty::Sip { phone: true, .. } => "SIP phone".to_owned(),
        CallParty::Sip { phone: false, .. } => "SIP trunk".to_owned(),
    }
}

fn leg_view(side: &'static str, party: CallParty, legs: &[LegSnapshot]) -> Option<LegView> {
    let CallParty::Sip { leg, .. } = party else {
        return None;
    };
    let snap = legs.iter().find(|l| l.leg == leg);
    let media = snap.and_then(|s| s.media);
    let quality = snap.and_then(|s| s.quality);
    Some(LegView {
        side,
        via: via(party),
        codec: media.map(|m| match m.law {
            Law::Ulaw => "PCMU",
            Law::Alaw => "PCMA",
        }),
        ptime_ms: media.map(|m| m.ptime_ms),
        remote: snap.and_then(|s| s.remote).map(|a| a.to_string()),
        packets_in: snap.map_or(0, |s| s.packets_in),
        packets_out: snap.map_or(0, |s| s.packets_out),
        loss_percent: quality.map(|q| q.loss_percent),
        jitter_ms: quality.map(|q| q.jitter_ms),
        mos: quality.map(|q| q.mos),
    })
}

fn call_view(
    c: &CallSnapshot,
    legs: &[LegSnapshot],
    now_ms: i64,
    present: &impl Fn(&str, &str) -> (String, String, bool),
) -> ActiveCallView {
    let (caller, callee, masked) = present(&c.caller_number, &c.callee_number);
    let legs = [("caller", Some(c.caller)), ("callee", c.callee)]
        .into_iter()
        .filter_map(|(side, p)| p.map(|p| (side, p)))
        .chain(c.ringing.iter().map(|&p| ("offered", p)))
        .filter_map(|(side, p)| leg_view(side, p, legs))
        .collect();
    ActiveCallView {
        call_id: c.call_id.clone(),
        direction: c.direction,
        phase: c.phase,
        caller,
        caller_via: via(c.caller),
        callee,
        callee_via: c.callee.map(via),
        ringing: c.ringing.iter().map(|&p| via(p)).collect(),
        masked,
        started_at_ms: c.started_at_ms,
        answered_at_ms: c.answered_at_ms,
        duration_ms: (now_ms - c.started_at_ms).max(0),
        talk_ms: c.answered_at_ms.map(|a| (now_ms - a).max(0)),
        legs,
    }
}

/// The calls in progress for the viewer whose numbers `present` shows; the legs'
/// statistics are left out (not guessed) when the media engine did not answer.
pub fn active_call_views(
    active: &ActiveCalls,
    now_ms: i64,
    present: impl Fn(&str, &str) -> (String, String, bool),
) -> Vec<ActiveCallView> {
    let legs = active.legs.as_deref().unwrap_or(&[]);
    active
        .calls
        .iter()
        .map(|c| call_view(c, legs, now_ms, &present))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::LegId;
    use crate::media_engine::LegMedia;
    use branchline_media::rtcp::CallQuality;

    fn leg(id: u64, quality: Option<CallQuality>) -> LegSnapshot {
        LegSnapshot {
            leg: LegId(id),
            local: "192.0.2.1:10000".parse().expect("addr"),
            remote: Some("198.51.100.9:40000".parse().expect("addr")),
            bridged_to: None,
            media: Some(LegMedia {
                law: Law::Alaw,
                payload_type: 8,
                telephone_event_pt: Some(101),
                ptime_ms: 20,
                latch: true,
            }),
            packets_in: 500,
            packets_out: 498,
            invalid: 0,
            foreign: 0,
            dropped: 0,
            rtcp_in: 2,
            rtcp_out: 2,
            remote_report: None,
            quality,
            jitter_buffer: None,
            passthrough: false,
            fast_relay: false,
        }
    }

    fn call(caller: CallParty, callee: Option<CallParty>) -> CallSnapshot {
        CallSnapshot {
            call_id: "c-1".into(),
            direction: Direction::Inbound,
            caller_number: "13812345678".into(),
            callee_number: "101".into(),
            caller,
            callee,
            ringing: Vec::new(),
            phase: "connected",
            started_at_ms: 1_000,
            answered_at_ms: Some(3_000),
        }
    }

    fn mask_all(a: &str, b: &str) -> (String, String, bool) {
        (format!("masked:{a}"), b.to_owned(), true)
    }

    #[test]
    fn a_trunk_call_shows_its_legs_codec_and_quality() {
        let q = CallQuality::estimate(1.5, 4.0, None, std::time::Duration::from_millis(40), true);
        let active = ActiveCalls {
            calls: vec![call(
                CallParty::Sip {
                    leg: LegId(7),
                    phone: false,
                },
                Some(CallParty::Fxs(1)),
            )],
            legs: Ok(vec![leg(7, Some(q)), leg(8, None)]),
        };
        let v = active_call_views(&active, 10_000, mask_all);
        assert_eq!(v.len(), 1);
        let c = &v[0];
        assert_eq!(
            c.caller, "masked:13812345678",
            "numbers go through `present`"
        );
        assert!(c.masked);
        assert_eq!(c.caller_via, "SIP trunk");
        assert_eq!(c.callee_via.as_deref(), Some("FXS port 1"));
        assert_eq!((c.duration_ms, c.talk_ms), (9_000, Some(7_000)));
        assert_eq!(c.legs.len(), 1, "only the call's own leg");
        let l = &c.legs[0];
        assert_eq!(
            (l.side, l.codec, l.ptime_ms),
            ("caller", Some("PCMA"), Some(20))
        );
        assert_eq!(l.loss_percent, Some(1.5));
        assert_eq!(l.jitter_ms, Some(4.0));
        assert_eq!(l.mos, Some(q.mos));
        assert_eq!(l.remote.as_deref(), Some("198.51.100.9:40000"));
    }

    #[test]
    fn analog_calls_have_no_legs_and_missing_statistics_stay_missing() {
        let active = ActiveCalls {
            calls: vec![
                call(CallParty::Fxs(1), Some(CallParty::Fxs(2))),
                call(
                    CallParty::Sip {
                        leg: LegId(9),
                        phone: true,
                    },
                    None,
                ),
            ],
            legs: Err("media engine stopped".into()),
        };
        let v = active_call_views(&active, 2_000, |a, b| (a.to_owned(), b.to_owned(), false));
        assert!(v[0].legs.is_empty());
        let l = &v[1].legs[0];
        assert_eq!(l.via, "SIP phone");
        assert_eq!((l.codec, l.mos, l.packets_in), (None, None, 0));
    }
}
