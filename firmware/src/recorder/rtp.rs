//! Relayed RTP to 20 ms frames, on the writer thread: the recorder's side of a SIP leg
//! the media engine relays without decoding (SIP phone <-> trunk, SIP phone <-> SIP
//! phone).
//!
//! The media engine hands every packet it accepted on a recorded leg over as a
//! [`LegPacket`] (header fields, payload, and the leg's negotiated codec from its SDP);
//! one [`RtpStream`] per leg turns them into 20 ms frames of linear PCM:
//!
//! - The payload type picks the codec: the leg's audio payload type decodes as its
//!   law (PCMU or PCMA); telephone-event and comfort noise carry no audio and are
//!   skipped; any other payload type is dropped and counted (`rtp_bad_payload`).
//! - Any packet size (ptime 10, 20, 30, 40 ms ...) is re-framed to 20 ms: samples
//!   collect until a frame is full.
//! - RTP timestamps place the audio: a gap (lost packets, a telephone-event or comfort
//!   noise stretch, a sender that stopped for a while) becomes silence of the gap's
//!   length, a whole silent frame being fill (`None`, see [`Out`]) so the mixer can take it
//!   against silence it already padded (see `Mixer` in the module above); a packet from
//!   before the stream's position (late or duplicated) is dropped and counted
//!   (`rtp_late`); a new SSRC or a jump of more than [`MAX_GAP_SAMPLES`] either way
//!   starts the stream over from that packet without fill (`rtp_resync`).
//! - Reordering: a packet that leaves a gap is held back (up to [`REORDER_DEPTH`]
//!   packets, in timestamp order) in case the missing ones are only late; one that
//!   fills the gap is taken in its place and the held ones follow. Once more than
//!   [`REORDER_DEPTH`] packets wait, the gap is given up as lost (silence) and the
//!   earliest held packet taken. So packets swapped on the network are recorded as
//!   sent, at the cost of at most [`REORDER_DEPTH`] packets of delay while a gap is
//!   open (the mixer's skew allowance is larger); [`RtpStream::finish`] releases what
//!   is held when the recording ends.
//!
//! Limits: a partial last frame (under 20 ms) is dropped when the recording ends.

use line_proto::g711::Law;

use super::wav::FRAME_SAMPLES;
use super::{bump, RecorderStats};

/// RTP clock rate of G.711 and telephone-event.
const CLOCK_RATE: u32 = 8000;
/// Comfort noise (RFC 3389), static payload type.
const PT_CN: u8 = 13;
/// Largest timestamp gap filled with silence (one minute); a longer jump (either way)
/// restarts the stream without fill.
pub const MAX_GAP_SAMPLES: u32 = CLOCK_RATE * 60;
/// Most packets held back while a gap waits for a late packet (80 ms at ptime 20).
pub const REORDER_DEPTH: usize = 4;

/// A leg's negotiated audio, as the recorder decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegCodec {
    /// The audio payload type (0 PCMU, 8 PCMA).
    pub audio_pt: u8,
    /// Its law.
    pub law: Law,
    /// telephone-event's dynamic payload type, if negotiated.
    pub event_pt: Option<u8>,
}

/// One RTP packet received on a recorded leg, owned for the trip to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegPacket {
    /// The leg's codec when the packet arrived.
    pub codec: LegCodec,
    /// Synchronisation source.
    pub ssrc: u32,
    /// RTP timestamp (8 kHz).
    pub timestamp: u32,
    /// Payload type.
    pub payload_type: u8,
    /// Payload (no padding).
    pub payload: Vec<u8>,
}

/// What a packet made: `Some` 20 ms frame of decoded audio (it may end in silence
/// where a gap began), or `None` for a whole frame of silence standing in for 20 ms
/// nobody sent (fill).
pub type Out = Option<[i16; FRAME_SAMPLES]>;

/// One leg's packets to frames (see the module docs).
#[derive(Debug, Default)]
pub struct RtpStream {
    /// The source followed, once a packet came.
    ssrc: Option<u32>,
    /// The timestamp the next packet should carry.
    next_ts: u32,
    /// Samples of a frame not yet full.
    pending: Vec<i16>,
    /// Packets after a gap, held in timestamp order for a late packet to fill it.
    held: Vec<Held>,
}

/// A packet held back behind a gap (already classified: audio of `law`).
#[derive(Debug)]
struct Held {
    timestamp: u32,
    law: Law,
    payload: Vec<u8>,
}

impl RtpStream {
    /// Starts over: the next packet is taken as it comes, without fill (a recording
    /// resumed after a pause).
    pub fn reset(&mut self) {
        self.ssrc = None;
        self.pending.clear();
        self.held.clear();
    }

    /// The recording ends: the packets held behind a gap are taken (the gap becomes
    /// silence), their frames go to `out`.
    pub fn finish(&mut self, out: &mut Vec<Out>) {
        self.release_all(out);
    }

    /// Takes `p`; the frames it completes go to `out`.
    pub fn push(&mut self, p: &LegPacket, stats: &RecorderStats, out: &mut Vec<Out>) {
        let law = if p.payload_type == p.codec.audio_pt {
            p.codec.law
        } else if Some(p.payload_type) == p.codec.event_pt || p.payload_type == PT_CN {
            return;
        } else {
            bump(&stats.rtp_bad_payload);
            return;
        };
        if p.payload.is_empty() {
            return;
        }
        match self.ssrc {
            Some(ssrc) if ssrc == p.ssrc => {
                let ahead = p.timestamp.wrapping_sub(self.next_ts);
                let behind = self.next_ts.wrapping_sub(p.timestamp);
                if ahead == 0 {
                    self.take(p.timestamp, law, &p.payload, out);
                    self.release_contiguous(out);
                    return;
                } else if ahead <= MAX_GAP_SAMPLES {
                    self.hold(p, law, stats, out);
                    return;
                } else if behind <= MAX_GAP_SAMPLES {
                    bump(&stats.rtp_late);
                    return;
                }
                // A jump: what waited belongs to the old timeline.
                self.release_all(out);
                bump(&stats.rtp_resync);
            }
            Some(_) => {
                self.release_all(out);
                bump(&stats.rtp_resync);
            }
            None => {}
        }
        self.ssrc = Some(p.ssrc);
        self.take(p.timestamp, law, &p.payload, out);
    }

    /// Decodes a packet at the stream's position (`timestamp` is `next_ts`, or the
    /// stream starts over there).
    fn take(&mut self, timestamp: u32, law: Law, payload: &[u8], out: &mut Vec<Out>) {
        let n = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.next_ts = timestamp.wrapping_add(n);
        self.pending.extend(payload.iter().map(|&c| law.decode(c)));
        self.emit(out);
    }

    /// Holds `p` (after a gap) in timestamp order; gives the gap up once more than
    /// [`REORDER_DEPTH`] packets wait.
    fn hold(&mut self, p: &LegPacket, law: Law, stats: &RecorderStats, out: &mut Vec<Out>) {
        let ahead = p.timestamp.wrapping_sub(self.next_ts);
        let at = self
            .held
            .partition_point(|h| h.timestamp.wrapping_sub(self.next_ts) < ahead);
        if self
            .held
            .get(at)
            .is_some_and(|h| h.timestamp == p.timestamp)
        {
            bump(&stats.rtp_late);
            return;
        }
        self.held.insert(
            at,
            Held {
                timestamp: p.timestamp,
                law,
                payload: p.payload.clone(),
            },
        );
        if self.held.len() > REORDER_DEPTH {
            self.release_first(out);
            self.release_contiguous(out);
        }
    }

    /// Takes the earliest held packet, the gap before it becoming silence.
    fn release_first(&mut self, out: &mut Vec<Out>) {
        if self.held.is_empty() {
            return;
        }
        let h = self.held.remove(0);
        let gap = h.timestamp.wrapping_sub(self.next_ts);
        if gap <= MAX_GAP_SAMPLES {
            self.fill(gap, out);
            self.take(h.timestamp, h.law, &h.payload, out);
        }
        // A held packet the stream has passed (it overlapped one taken before it) is
        // dropped.
    }

    /// Takes the held packets that now follow on without a gap.
    fn release_contiguous(&mut self, out: &mut Vec<Out>) {
        while self.held.first().is_some_and(|h| {
            let ahead = h.timestamp.wrapping_sub(self.next_ts);
            ahead == 0 || ahead > MAX_GAP_SAMPLES
        }) {
            let h = self.held.remove(0);
            if h.timestamp == self.next_ts {
                self.take(h.timestamp, h.law, &h.payload, out);
            }
        }
    }

    /// Takes every held packet in order, gaps as silence.
    fn release_all(&mut self, out: &mut Vec<Out>) {
        while !self.held.is_empty() {
            self.release_first(out);
            self.release_contiguous(out);
        }
    }

    /// `samples` of silence: the frame under way is completed, whole frames are fill,
    /// the rest starts the next frame.
    fn fill(&mut self, samples: u32, out: &mut Vec<Out>) {
        let mut left = samples as usize;
        if !self.pending.is_empty() {
            let n = left.min(FRAME_SAMPLES - self.pending.len());
            self.pending.resize(self.pending.len() + n, 0);
            left -= n;
            self.emit(out);
        }
        while left >= FRAME_SAMPLES {
            out.push(None);
            left -= FRAME_SAMPLES;
        }
        // What is left is under a frame: the frame under way was completed (and sent)
        // or `left` is 0.
        self.pending.resize(self.pending.len() + left, 0);
    }

    fn emit(&mut self, out: &mut Vec<Out>) {
        let mut start = 0;
        while self.pending.len() - start >= FRAME_SAMPLES {
            let mut frame = [0i16; FRAME_SAMPLES];
            frame.copy_from_slice(&self.pending[start..start + FRAME_SAMPLES]);
            out.push(Some(frame));
            start += FRAME_SAMPLES;
        }
        self.pending.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::StatsSnapshot;

    const PCMU: LegCodec = LegCodec {
        audio_pt: 0,
        law: Law::Ulaw,
        event_pt: Some(101),
    };
    const PCMA: LegCodec = LegCodec {
        audio_pt: 8,
        law: Law::Alaw,
        event_pt: None,
    };

    /// A ramp of distinct values that survive G.711 well enough to tell positions.
    fn speech(n: usize, from: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| ((i % 400) as i16 - 200) * 40)
            .collect()
    }

    fn packet(codec: LegCodec, ts: u32, pcm: &[i16]) -> LegPacket {
        LegPacket {
            codec,
            ssrc: 0x1234,
            timestamp: ts,
            payload_type: codec.audio_pt,
            payload: pcm.iter().map(|&s| codec.law.encode(s)).collect(),
        }
    }

    fn decoded(codec: LegCodec, pcm: &[i16]) -> Vec<i16> {
        pcm.iter()
            .map(|&s| codec.law.decode(codec.law.encode(s)))
            .collect()
    }

    /// Runs `packets` through a fresh stream: the frames (fill as `None`) and counters.
    fn run(packets: &[LegPacket]) -> (Vec<Option<Vec<i16>>>, StatsSnapshot) {
        let stats = RecorderStats::default();
        let mut stream = RtpStream::default();
        let mut out = Vec::new();
        for p in packets {
            stream.push(p, &stats, &mut out);
        }
        stream.finish(&mut out);
        let frames = out.into_iter().map(|o| o.map(|f| f.to_vec())).collect();
        (frames, stats.snapshot())
    }

    fn joined(frames: &[Option<Vec<i16>>]) -> Vec<i16> {
        frames
            .iter()
            .flat_map(|f| f.clone().unwrap_or_else(|| vec![0; FRAME_SAMPLES]))
            .collect()
    }

    #[test]
    fn pcmu_and_pcma_decode_by_the_legs_payload_type() {
        for codec in [PCMU, PCMA] {
            let pcm = speech(320, 0);
            let (frames, stats) = run(&[
                packet(codec, 1000, &pcm[..160]),
                packet(codec, 1160, &pcm[160..]),
            ]);
            assert_eq!(frames.len(), 2, "{codec:?}");
            assert!(frames.iter().all(Option::is_some));
            assert_eq!(joined(&frames), decoded(codec, &pcm), "{codec:?}");
            assert_eq!(stats, StatsSnapshot::default());
        }
        // The same bytes under the other law's payload type are not that law's audio.
        let pcm = speech(160, 0);
        let mut as_pcma = packet(PCMU, 0, &pcm);
        as_pcma.payload_type = 8;
        let (frames, stats) = run(&[as_pcma]);
        assert!(frames.is_empty());
        assert_eq!(stats.rtp_bad_payload, 1, "PCMA on a PCMU leg");
    }

    #[test]
    fn ptime_30_and_40_are_reframed_to_20_ms() {
        for ptime in [240usize, 320, 80] {
            let pcm = speech(ptime * 6, 7);
            let packets: Vec<LegPacket> = pcm
                .chunks(ptime)
                .enumerate()
                .map(|(i, c)| packet(PCMA, 5000 + (i * ptime) as u32, c))
                .collect();
            let (frames, _) = run(&packets);
            assert_eq!(frames.len(), ptime * 6 / FRAME_SAMPLES, "ptime {ptime}");
            assert_eq!(joined(&frames), decoded(PCMA, &pcm), "ptime {ptime}");
        }
    }

    #[test]
    fn lost_packets_become_silence_of_their_length() {
        let pcm = speech(160 * 6, 0);
        // Packets 2, 3 and 4 of 6 lost.
        let (frames, stats) = run(&[
            packet(PCMU, 0, &pcm[..160]),
            packet(PCMU, 160, &pcm[160..320]),
            packet(PCMU, 800, &pcm[800..]),
        ]);
        assert_eq!(frames.len(), 6);
        assert_eq!(frames[2..5], [None, None, None], "three frames of fill");
        assert_eq!(frames[5].as_deref(), Some(&decoded(PCMU, &pcm[800..])[..]));
        assert_eq!(stats, StatsSnapshot::default());
        // With 30 ms packets a gap ends mid-frame: the frame under way is completed
        // with silence, whole frames are fill, the rest starts the next frame.
        let pcm = speech(240 * 4, 0);
        let (frames, _) = run(&[packet(PCMA, 0, &pcm[..240]), packet(PCMA, 720, &pcm[720..])]);
        let all = joined(&frames);
        assert_eq!(all.len(), 960, "4 x 30 ms");
        assert_eq!(all[..240], decoded(PCMA, &pcm[..240]));
        assert!(all[240..720].iter().all(|&s| s == 0), "60 ms of silence");
        assert_eq!(all[720..], decoded(PCMA, &pcm[720..]));
        assert!(
            frames.contains(&None),
            "a whole frame of fill inside the gap"
        );
    }

    #[test]
    fn telephone_event_and_comfort_noise_are_skipped_and_their_time_is_silence() {
        let pcm = speech(160 * 4, 0);
        let mut event = packet(PCMU, 160, &[0; 4]);
        event.payload_type = 101;
        event.payload = vec![1, 0x8a, 0, 160];
        let mut cn = packet(PCMU, 320, &[0; 1]);
        cn.payload_type = 13;
        cn.payload = vec![60];
        let (frames, stats) = run(&[
            packet(PCMU, 0, &pcm[..160]),
            event.clone(),
            event,
            cn,
            packet(PCMU, 480, &pcm[480..640]),
        ]);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[1..3], [None, None]);
        assert_eq!(stats, StatsSnapshot::default(), "nothing counted as bad");
    }

    #[test]
    fn a_bad_payload_type_is_dropped_and_counted() {
        let pcm = speech(160, 0);
        let mut g729 = packet(PCMU, 160, &pcm[..20]);
        g729.payload_type = 18;
        // telephone-event's type on a leg that did not negotiate it is bad too.
        let mut event = packet(PCMA, 160, &[0; 4]);
        event.payload_type = 101;
        let (frames, stats) = run(&[packet(PCMU, 0, &pcm), g729, event]);
        assert_eq!(frames.len(), 1);
        assert_eq!(stats.rtp_bad_payload, 2);
    }

    #[test]
    fn late_packets_are_dropped_and_a_new_source_or_a_jump_starts_over() {
        let pcm = speech(160 * 3, 0);
        let (frames, stats) = run(&[
            packet(PCMU, 0, &pcm[..160]),
            packet(PCMU, 160, &pcm[160..320]),
            packet(PCMU, 160, &pcm[160..320]), // duplicate
            packet(PCMU, 0, &pcm[..160]),      // late
            packet(PCMU, 320, &pcm[320..]),
        ]);
        assert_eq!(frames.len(), 3);
        assert_eq!(joined(&frames), decoded(PCMU, &pcm));
        assert_eq!(stats.rtp_late, 2);
        let mut other = packet(PCMU, 9_000_000, &pcm[..160]);
        other.ssrc = 99;
        let jump = packet(PCMU, 9_000_000 + MAX_GAP_SAMPLES * 2, &pcm[..160]);
        let back = packet(PCMU, 9_000_000 - MAX_GAP_SAMPLES, &pcm[..160]);
        let (frames, stats) = run(&[packet(PCMU, 0, &pcm[..160]), other, jump, back]);
        assert_eq!(
            frames.len(),
            4,
            "no fill across a restart: {}",
            frames.len()
        );
        assert!(frames.iter().all(Option::is_some));
        assert_eq!(stats.rtp_resync, 3);
        assert_eq!(stats.rtp_late, 0);
        // Timestamps wrap around 2^32 without a gap.
        let (frames, stats) = run(&[
            packet(PCMU, u32::MAX - 79, &pcm[..160]),
            packet(PCMU, 80, &pcm[160..320]),
        ]);
        assert_eq!(frames.len(), 2);
        assert_eq!(stats, StatsSnapshot::default());
    }

    #[test]
    fn reordered_packets_are_recorded_in_their_place() {
        let pcm = speech(160 * 8, 0);
        let p = |i: usize| packet(PCMU, (i * 160) as u32, &pcm[i * 160..(i + 1) * 160]);
        // Swapped pairs and a packet three places late: all audio, no fill.
        for order in [
            vec![0, 2, 1, 3, 5, 4, 6, 7],
            vec![0, 1, 4, 5, 6, 2, 3, 7],
            vec![0, 7, 6, 5, 4, 3, 2, 1],
        ] {
            let stats = RecorderStats::default();
            let mut stream = RtpStream::default();
            let mut out = Vec::new();
            for &i in &order[..order.len() - 1] {
                stream.push(&p(i), &stats, &mut out);
            }
            if order == [0, 7, 6, 5, 4, 3, 2, 1] {
                // Seven packets behind a gap is more than the buffer holds: the
                // missing ones are given up one by one as the buffer overflows.
                stream.push(&p(order[7]), &stats, &mut out);
                stream.finish(&mut out);
                let frames: Vec<_> = out.into_iter().map(|o| o.map(|f| f.to_vec())).collect();
                assert_eq!(frames.len(), 8, "{order:?}");
                assert!(frames.contains(&None), "some given up as lost");
                continue;
            }
            let before_last = out.len();
            stream.push(&p(order[7]), &stats, &mut out);
            assert!(out.len() > before_last, "the last packet is not held");
            let frames: Vec<_> = out.into_iter().map(|o| o.map(|f| f.to_vec())).collect();
            assert_eq!(frames.len(), 8, "{order:?}");
            assert!(frames.iter().all(Option::is_some), "{order:?}: no fill");
            assert_eq!(joined(&frames), decoded(PCMU, &pcm), "{order:?}");
            assert_eq!(stats.snapshot(), StatsSnapshot::default(), "{order:?}");
        }
        // A duplicate of a held packet is dropped as late.
        let (frames, stats) = run(&[p(0), p(2), p(2), p(1)]);
        assert_eq!(joined(&frames), decoded(PCMU, &pcm[..480]));
        assert_eq!(stats.rtp_late, 1);
        // A gap that stays open longer than the buffer is lost: silence in its place,
        // and the packet coming after that is late.
        let (frames, stats) = run(&[p(0), p(2), p(3), p(4), p(5), p(6), p(1), p(7)]);
        assert_eq!(frames.len(), 8);
        assert_eq!(frames[1], None, "packet 1 given up");
        assert_eq!(stats.rtp_late, 1);
    }

    #[test]
    fn reset_takes_the_next_packet_as_it_comes() {
        let stats = RecorderStats::default();
        let mut stream = RtpStream::default();
        let mut out = Vec::new();
        let pcm = speech(160, 0);
        stream.push(&packet(PCMU, 0, &pcm), &stats, &mut out);
        stream.reset();
        stream.push(&packet(PCMU, 8000, &pcm), &stats, &mut out);
        assert_eq!(out.len(), 2, "a paused second is not filled");
    }
}
