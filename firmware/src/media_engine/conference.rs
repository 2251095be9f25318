//! Conference rooms in the media engine: ends (analog ports and SIP legs) mixed by
//! [`branchline_media::mix::Mixer`] every 20 ms tick.
//!
//! - Into the mix: a port's 20 ms frames (from the board loop's `port_audio`) are
//!   decoded from the board's law and queued in the mixer; a leg's RTP goes into a
//!   jitter buffer of its own (adaptive, `[media] jitter_*`, with PLC) that the tick
//!   pops one frame from, whatever the leg's law and ptime.
//! - Out of the mix: each member's mix (everyone it hears, never itself) goes to a port
//!   as a frame in the board's law, to a leg as RTP in its own law, repacketised to its
//!   ptime (nothing while a telephone-event is being sent on it, as with playback).
//! - A member that joins is unbridged and its playback stopped first; one that leaves
//!   (or whose leg closes, or that is bridged or played to) is left unbridged: call
//!   control decides what it gets next. A room goes with its last member.
//! - [`ConferenceOp::Beep`]: a 200 ms beep (1400 Hz entry, 700 Hz exit) added to
//!   every member's mix (meet-me rooms).
//! - RFC 4733 digits received on a member leg still reach call control (a supervisor
//!   switching modes by key); they are not played into the room.
//!
//! Limits: [`MAX_CONFERENCE_MEMBERS`] per room; no in-band DTMF detection or fax
//! detection on conference members; a member leg's RTCP is its own (reports like a leg
//! that ends on a port).

use std::time::Instant;

use branchline_board::dsp::SineGenerator;
use branchline_media::jitter::{JitterBuffer, FRAME_SAMPLES};
use branchline_media::mix::{Frame, Mixer};
use branchline_media::rtp::RtpPacket;
use line_proto::Audio;

use super::{Engine, LegId, MediaEnd};
use crate::call::{ConferenceOp, RoomId};

/// Members of one room at most (the call-control side has its own, smaller limits).
pub const MAX_CONFERENCE_MEMBERS: usize = 64;

/// Length of an entry or exit beep.
const BEEP_TICKS: u32 = 10;
/// Entry beep (high) and exit beep (low), Hz.
const BEEP_HZ: (f64, f64) = (1400.0, 700.0);
/// Beep amplitude (about -16 dBm0).
const BEEP_AMPLITUDE: i16 = 3000;

/// One room.
#[derive(Debug)]
pub(super) struct Room {
    mixer: Mixer<MediaEnd>,
    /// A beep everyone hears, and the ticks it has left.
    beep: Option<(SineGenerator, u32)>,
    /// The jitter buffer of each member leg.
    jitter: std::collections::HashMap<LegId, JitterBuffer>,
    /// Scratch for the mixes of a tick.
    out: Vec<(MediaEnd, Frame)>,
}

impl Engine {
    pub(super) fn conference(&mut self, room: RoomId, op: ConferenceOp) {
        match op {
            ConferenceOp::Join { end, role } => {
                if let MediaEnd::Leg(leg) = end {
                    if !self.legs.contains_key(&leg) {
                        tracing::warn!(%leg, room, "conference join of a leg that is not open refused");
                        return;
                    }
                }
                if self.room_of.get(&end) == Some(&room) {
                    tracing::warn!(?end, room, "conference join refused: already in the room");
                    return;
                }
                self.leave_room(end);
                if let Some(&peer) = self.peers.get(&end) {
                    self.unbridge(end, peer);
                }
                if self.players.remove(&end).is_some() {
                    tracing::debug!(?end, "playback stopped: joined a conference");
                }
                let r = self.rooms.entry(room).or_insert_with(|| Room {
                    mixer: Mixer::new(MAX_CONFERENCE_MEMBERS),
                    beep: None,
                    jitter: Default::default(),
                    out: Vec::new(),
                });
                if let Err(e) = r.mixer.join(end, role) {
                    tracing::warn!(room, error = %e, "conference join refused");
                    if r.mixer.is_empty() {
                        self.rooms.remove(&room);
                    }
                    return;
                }
                if let MediaEnd::Leg(leg) = end {
                    let payloads = self.legs.get(&leg).map(|l| l.payloads).unwrap_or_default();
                    r.jitter
                        .insert(leg, JitterBuffer::new(self.settings.jitter, payloads));
                }
                self.room_of.insert(end, room);
                tracing::debug!(?end, room, ?role, "joined conference");
            }
            ConferenceOp::SetRole { end, role } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    tracing::warn!(room, "conference role change in a room that does not exist");
                    return;
                };
                match r.mixer.set_role(end, role) {
                    Ok(()) => tracing::debug!(?end, room, ?role, "conference role changed"),
                    Err(e) => tracing::warn!(room, error = %e, "conference role change refused"),
                }
            }
            ConferenceOp::Beep { entry } => {
                let Some(r) = self.rooms.get_mut(&room) else {
                    tracing::debug!(room, "beep for a room that does not exist");
                    return;
                };
                let hz = if entry { BEEP_HZ.0 } else { BEEP_HZ.1 };
                r.beep = Some((SineGenerator::new(hz, BEEP_AMPLITUDE), BEEP_TICKS));
            }
            ConferenceOp::Leave { end } => {
                if self.room_of.get(&end) != Some(&room) {
                    tracing::debug!(?end, room, "conference leave of a non-member ignored");
                    return;
                }
                self.leave_room(end);
            }
        }
    }

    /// Takes `end` out of its room, if it is in one.
    pub(super) fn leave_room(&mut self, end: MediaEnd) {
        let Some(room) = self.room_of.remove(&end) else {
            return;
        };
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let _ = r.mixer.leave(end);
        if let MediaEnd::Leg(leg) = end {
            r.jitter.remove(&leg);
        }
        if r.mixer.is_empty() {
            self.rooms.remove(&room);
            tracing::debug!(room, "conference room closed");
        }
        tracing::debug!(?end, room, "left conference");
    }

    pub(super) fn port_audio_to_room(&mut self, port: u8, audio: &Audio) {
        let end = MediaEnd::Port(port);
        let Some(r) = self.room_of.get(&end).and_then(|id| self.rooms.get_mut(id)) else {
            return;
        };
        let mut pcm = [0i16; FRAME_SAMPLES];
        audio.law.decode_block(&audio.samples, &mut pcm);
        // Membership was checked just above.
        let _ = r.mixer.push(end, &pcm);
    }

    pub(super) fn queue_for_room(&mut self, leg: LegId, at: Instant, packet: &RtpPacket<'_>) {
        let Some(r) = self
            .room_of
            .get(&MediaEnd::Leg(leg))
            .and_then(|id| self.rooms.get_mut(id))
        else {
            return;
        };
        if let Some(jitter) = r.jitter.get_mut(&leg) {
            if let Err(e) = jitter.push(at, packet) {
                tracing::trace!(%leg, error = %e, "packet refused by the conference jitter buffer");
            }
        }
    }

    /// One tick of every room: legs' frames into the mixers, mixes out.
    pub(super) fn tick_rooms(&mut self, now: Instant) {
        let law = self.settings.board_law;
        for r in self.rooms.values_mut() {
            for (&leg, jitter) in r.jitter.iter_mut() {
                let started = self.legs.get(&leg).is_some_and(|l| l.media.is_some());
                if started {
                    let frame = jitter.pop(now);
                    let _ = r.mixer.push(MediaEnd::Leg(leg), &frame.pcm);
                }
            }
            r.mixer.mix_into(&mut r.out);
            if let Some((gen, left)) = r.beep.as_mut() {
                let mut tone = [0i16; FRAME_SAMPLES];
                gen.fill(&mut tone);
                for (_, pcm) in r.out.iter_mut() {
                    for (s, &t) in pcm.iter_mut().zip(tone.iter()) {
                        *s = s.saturating_add(t);
                    }
                }
                *left -= 1;
                if *left == 0 {
                    r.beep = None;
                }
            }
            for (end, pcm) in &r.out {
                match *end {
                    MediaEnd::Port(port) => {
                        let mut samples = [0u8; FRAME_SAMPLES];
                        law.encode_block(pcm, &mut samples);
                        self.ports.send_audio(port, Audio { law, samples });
                    }
                    MediaEnd::Leg(leg) => {
                        let Some(l) = self.legs.get_mut(&leg) else {
                            continue;
                        };
                        let Some(media) = l.media else {
                            continue;
                        };
                        if l.digit_out.is_some() {
                            l.sender.skip(FRAME_SAMPLES as u32);
                            l.pending.clear();
                            continue;
                        }
                        l.pending.extend(pcm.iter().map(|&s| media.law.encode(s)));
                        l.send_pending();
                    }
                }
            }
        }
    }
}
