//! N-party audio mixer for conferences and supervisor listen / whisper / barge
//! (sans-IO: frames in, frames out, no clock).
//!
//! Every member has a [`Role`] that says who hears it:
//! - [`Role::Talker`]: a normal member; every other member hears it.
//! - [`Role::Listener`]: hears every talker; nobody hears it (a supervisor listening).
//! - [`Role::Whisperer`]: hears every talker; only the member it whispers to hears it
//!   (a supervisor coaching an agent: the caller does not hear the coaching).
//!
//! Each tick (20 ms, [`FRAME_SAMPLES`] linear samples at 8 kHz) the owner pushes the
//! frame each member sent ([`Mixer::push`]) and calls [`Mixer::mix_into`]: every member
//! gets the sum of the frames of the members it hears, never its own frame (no
//! self-echo). A member that sent nothing this tick counts as silence. The sum is
//! computed exactly in 32 bits and then clamped to the 16-bit range once ("saturating
//! sum"): the result does not depend on member order, and a sum that goes out of range
//! on the way but comes back (a loud positive and a loud negative talker) is not
//! distorted.
//!
//! Cost per tick is linear in the members: the talkers' frames are summed once, and each
//! member's mix is that total minus its own frame plus what is whispered to it, so 32
//! members cost about as much as 32 frame copies, not 32 x 31 additions (see the
//! `mix` bench and BENCHMARKS.md).
//!
//! Frames arrive on the senders' clocks (the line controller's 20 ms, RTP from each peer
//! through its jitter buffer) while the mix runs on the owner's tick, so each member
//! queues up to [`MAX_QUEUED_FRAMES`] frames; a tick takes the oldest one. When the queue
//! is full the oldest frame is dropped (a sender running faster than the tick slips a
//! frame instead of adding delay without bound).
//!
//! Why hand-written: the crates that mix audio (e.g. `rodio`'s mixer, `dasp`'s signal
//! adders) mix sources into one output for a sound card; none computes one mix per
//! member with "who hears whom" rules, and each would pull in a sample-rate/format
//! framework the box does not need for 8 kHz linear PCM. The whole algorithm is a few
//! dozen lines over fixed-size arrays and is checked against a naive reference model by
//! the property tests below.
//!
//! Limits: no gain control or automatic level adjustment (a conference of many loud
//! talkers clips; telephone levels keep typical calls far from it); no active-speaker
//! selection (every talker is mixed, fine for the [`MAX_MEMBERS`] the box allows).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

use crate::error::MixError;
pub use crate::jitter::FRAME_SAMPLES;

/// One 20 ms frame of linear PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// Frames queued per member at most (see the module docs).
pub const MAX_QUEUED_FRAMES: usize = 3;

/// Members a mixer takes at most, whatever its configured limit (the exact 32-bit sum
/// stays far from overflow: 256 x 32768 < 2^31).
pub const MAX_MEMBERS: usize = 256;

/// Who hears a member. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<K> {
    /// Heard by everyone else.
    Talker,
    /// Heard by nobody.
    Listener,
    /// Heard only by `to`.
    Whisperer {
        /// The member that hears the whisperer.
        to: K,
    },
}

impl<K: PartialEq> Role<K> {
    /// Whether a member with this role is heard by `other`.
    fn heard_by(&self, other: &K) -> bool {
        match self {
            Role::Talker => true,
            Role::Listener => false,
            Role::Whisperer { to } => to == other,
        }
    }
}

#[derive(Debug)]
struct Member<K> {
    role: Role<K>,
    queued: VecDeque<Frame>,
    /// The frame this tick (silence if none was queued).
    current: Frame,
}

/// The mixer. `K` names a member (the daemon uses its media ends). See the module docs.
#[derive(Debug)]
pub struct Mixer<K> {
    max_members: usize,
    members: BTreeMap<K, Member<K>>,
    /// Scratch: the sum of every talker's frame this tick.
    total: [i32; FRAME_SAMPLES],
}

impl<K: Ord + Copy + Debug> Mixer<K> {
    /// A mixer that takes at most `max_members` (capped to [`MAX_MEMBERS`]).
    pub fn new(max_members: usize) -> Self {
        Mixer {
            max_members: max_members.min(MAX_MEMBERS),
            members: BTreeMap::new(),
            total: [0; FRAME_SAMPLES],
        }
    }

    /// The member limit.
    pub fn max_members(&self) -> usize {
        self.max_members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nobody is in.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `member` is in.
    pub fn contains(&self, member: K) -> bool {
        self.members.contains_key(&member)
    }

    /// The role of `member`, if it is in.
    pub fn role(&self, member: K) -> Option<Role<K>> {
        self.members.get(&member).map(|m| m.role)
    }

    /// Members and their roles, in key order.
    pub fn members(&self) -> impl Iterator<Item = (K, Role<K>)> + '_ {
        self.members.iter().map(|(&k, m)| (k, m.role))
    }

    fn check_role(&self, member: K, role: Role<K>) -> Result<(), MixError<K>> {
        if let Role::Whisperer { to } = role {
            if to == member {
                return Err(MixError::WhisperTarget {
                    member,
                    target: to,
                    reason: "a member cannot whisper to itself",
                });
            }
            if !self.members.contains_key(&to) {
                return Err(MixError::WhisperTarget {
                    member,
                    target: to,
                    reason: "the target is not a member",
                });
            }
        }
        Ok(())
    }

    /// Adds `member` with `role`. Refused (and nothing changes) when the mixer is
    /// full, the member is in already, or a whisperer's target is itself or absent.
    pub fn join(&mut self, member: K, role: Role<K>) -> Result<(), MixError<K>> {
        if self.members.contains_key(&member) {
            return Err(MixError::AlreadyMember { member });
        }
        if self.members.len() >= self.max_members {
            return Err(MixError::Full {
                member,
                max: self.max_members,
            });
        }
        self.check_role(member, role)?;
        self.members.insert(
            member,
            Member {
                role,
                queued: VecDeque::with_capacity(MAX_QUEUED_FRAMES),
                current: [0; FRAME_SAMPLES],
            },
        );
        Ok(())
    }

    /// Changes the role of `member` (listen -> whisper -> barge). Refused like
    /// [`Mixer::join`].
    pub fn set_role(&mut self, member: K, role: Role<K>) -> Result<(), MixError<K>> {
        if !self.members.contains_key(&member) {
            return Err(MixError::NotMember { member });
        }
        self.check_role(member, role)?;
        if let Some(m) = self.members.get_mut(&member) {
            m.role = role;
        }
        Ok(())
    }

    /// Removes `member` and returns the role it had. Whisperers that whispered to it
    /// become listeners (nobody hears them any more); their owner decides what next.
    pub fn leave(&mut self, member: K) -> Result<Role<K>, MixError<K>> {
        let gone = self
            .members
            .remove(&member)
            .ok_or(MixError::NotMember { member })?;
        for m in self.members.values_mut() {
            if m.role == (Role::Whisperer { to: member }) {
                m.role = Role::Listener;
            }
        }
        Ok(gone.role)
    }

    /// Queues the frame `member` sent for the next tick (the oldest queued frame is
    /// dropped when [`MAX_QUEUED_FRAMES`] are waiting).
    pub fn push(&mut self, member: K, frame: &Frame) -> Result<(), MixError<K>> {
        let m = self
            .members
            .get_mut(&member)
            .ok_or(MixError::NotMember { member })?;
        if m.queued.len() >= MAX_QUEUED_FRAMES {
            m.queued.pop_front();
        }
        m.queued.push_back(*frame);
        Ok(())
    }

    /// One tick: takes each member's oldest queued frame (silence if none) and
    /// appends every member's mix to `out` (cleared first), in key order.
    pub fn mix_into(&mut self, out: &mut Vec<(K, Frame)>) {
        out.clear();
        self.total = [0; FRAME_SAMPLES];
        for m in self.members.values_mut() {
            m.current = m.queued.pop_front().unwrap_or([0; FRAME_SAMPLES]);
            if m.role == Role::Talker {
                for (t, &s) in self.total.iter_mut().zip(m.current.iter()) {
                    *t += i32::from(s);
                }
            }
        }
        let whispers: Vec<(K, &Frame)> = self
            .members
            .values()
            .filter_map(|m| match m.role {
                Role::Whisperer { to } => Some((to, &m.current)),
                _ => None,
            })
            .collect();
        for (&key, m) in &self.members {
            let mut acc = self.total;
            if m.role == Role::Talker {
                for (a, &s) in acc.iter_mut().zip(m.current.iter()) {
                    *a -= i32::from(s);
                }
            }
            for (_, frame) in whispers.iter().filter(|(to, _)| *to == key) {
                for (a, &s) in acc.iter_mut().zip(frame.iter()) {
                    *a += i32::from(s);
                }
            }
            let mut frame = [0i16; FRAME_SAMPLES];
            for (o, &a) in frame.iter_mut().zip(acc.iter()) {
                *o = a.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            }
            out.push((key, frame));
        }
    }

    /// [`Mixer::mix_into`] into a new vector.
    pub fn mix(&mut self) -> Vec<(K, Frame)> {
        let mut out = Vec::with_capacity(self.members.len());
        self.mix_into(&mut out);
        out
    }

    /// Whether `listener` hears `speaker` under the current roles (both members,
    /// different). For diagnostics and tests.
    pub fn hears(&self, listener: K, speaker: K) -> bool {
        listener != speaker
            && self.members.contains_key(&listener)
            && self
                .members
                .get(&speaker)
                .is_some_and(|m| m.role.heard_by(&listener))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flat(v: i16) -> Frame {
        [v; FRAME_SAMPLES]
    }

    fn mix_of(mixer: &mut Mixer<u8>) -> BTreeMap<u8, Frame> {
        mixer.mix().into_iter().collect()
    }

    #[test]
    fn two_talkers_hear_each_other_not_themselves() {
        let mut m = Mixer::new(8);
        m.join(1, Role::Talker).unwrap();
        m.join(2, Role::Talker).unwrap();
        m.push(1, &flat(100)).unwrap();
        m.push(2, &flat(-7)).unwrap();
        let out = mix_of(&mut m);
        assert_eq!(out[&1], flat(-7));
        assert_eq!(out[&2], flat(100));
    }

    #[test]
    fn listener_hears_all_and_is_heard_by_nobody() {
        let mut m = Mixer::new(8);
        m.join(1, Role::Talker).unwrap();
        m.join(2, Role::Talker).unwrap();
        m.join(9, Role::Listener).unwrap();
        m.push(1, &flat(10)).unwrap();
        m.push(2, &flat(20)).unwrap();
        m.push(9, &flat(1000)).unwrap();
        let out = mix_of(&mut m);
        assert_eq!(out[&1], flat(20));
        assert_eq!(out[&2], flat(10));
        assert_eq!(out[&9], flat(30));
        assert!(!m.hears(1, 9) && !m.hears(2, 9) && m.hears(9, 1) && m.hears(9, 2));
    }

    #[test]
    fn whisper_reaches_only_its_target() {
        let mut m = Mixer::new(8);
        m.join(1, Role::Talker).unwrap(); // agent
        m.join(2, Role::Talker).unwrap(); // caller
        m.join(9, Role::Whisperer { to: 1 }).unwrap();
        m.push(1, &flat(10)).unwrap();
        m.push(2, &flat(20)).unwrap();
        m.push(9, &flat(300)).unwrap();
        let out = mix_of(&mut m);
        assert_eq!(out[&1], flat(320), "agent hears caller and supervisor");
        assert_eq!(out[&2], flat(10), "caller hears only the agent");
        assert_eq!(out[&9], flat(30), "supervisor hears both");
    }

    #[test]
    fn barge_is_a_third_talker() {
        let mut m = Mixer::new(8);
        for k in [1, 2] {
            m.join(k, Role::Talker).unwrap();
        }
        m.join(9, Role::Listener).unwrap();
        m.set_role(9, Role::Talker).unwrap();
        m.push(1, &flat(1)).unwrap();
        m.push(2, &flat(2)).unwrap();
        m.push(9, &flat(4)).unwrap();
        let out = mix_of(&mut m);
        assert_eq!((out[&1][0], out[&2][0], out[&9][0]), (6, 5, 3));
    }

    #[test]
    fn eight_parties_each_hear_the_seven_others() {
        let mut m = Mixer::new(8);
        for k in 0..8u8 {
            m.join(k, Role::Talker).unwrap();
            // Distinct powers of two: each mix shows exactly who was summed.
            m.push(k, &flat(1 << k)).unwrap();
        }
        let out = mix_of(&mut m);
        assert_eq!(out.len(), 8);
        for k in 0..8u8 {
            assert_eq!(out[&k], flat(255 - (1 << k)));
        }
    }

    #[test]
    fn missing_frames_are_silence_and_queues_drain_one_per_tick() {
        let mut m = Mixer::new(8);
        m.join(1, Role::Talker).unwrap();
        m.join(2, Role::Talker).unwrap();
        m.push(1, &flat(5)).unwrap();
        m.push(1, &flat(6)).unwrap();
        let out = mix_of(&mut m);
        assert_eq!(out[&2], flat(5));
        assert_eq!(out[&1], flat(0));
        assert_eq!(mix_of(&mut m)[&2], flat(6));
        assert_eq!(mix_of(&mut m)[&2], flat(0));
    }

    #[test]
    fn a_full_queue_drops_its_oldest_frame() {
        let mut m = Mixer::new(2);
        m.join(1, Role::Talker).unwrap();
        m.join(2, Role::Talker).unwrap();
        for v in 1..=(MAX_QUEUED_FRAMES as i16 + 1) {
            m.push(1, &flat(v)).unwrap();
        }
        assert_eq!(mix_of(&mut m)[&2], flat(2));
    }

    #[test]
    fn saturates_once_and_order_free() {
        let mut m = Mixer::new(8);
        for k in 1..=4 {
            m.join(k, Role::Talker).unwrap();
        }
        m.push(1, &flat(30000)).unwrap();
        m.push(2, &flat(30000)).unwrap();
        m.push(3, &flat(-30000)).unwrap();
        m.push(4, &flat(i16::MIN)).unwrap();
        let out = mix_of(&mut m);
        // 30000 + 30000 - 30000: the intermediate 60000 is out of range, the sum is not.
        assert_eq!(out[&4], flat(30000));
        assert_eq!(out[&3], flat(27232));
        // 30000 - 30000 - 32768 clamps to -32768, and so does the all-negative extreme.
        assert_eq!(out[&1], flat(i16::MIN));
        let mut m = Mixer::new(8);
        for k in 1..=3 {
            m.join(k, Role::Talker).unwrap();
            m.push(k, &flat(i16::MAX)).unwrap();
        }
        assert_eq!(mix_of(&mut m)[&1], flat(i16::MAX));
    }

    #[test]
    fn refusals_change_nothing() {
        let mut m = Mixer::new(2);
        m.join(1, Role::Talker).unwrap();
        assert_eq!(
            m.join(1, Role::Listener),
            Err(MixError::AlreadyMember { member: 1 })
        );
        assert_eq!(m.role(1), Some(Role::Talker));
        assert!(matches!(
            m.join(2, Role::Whisperer { to: 7 }),
            Err(MixError::WhisperTarget {
                member: 2,
                target: 7,
                ..
            })
        ));
        assert!(matches!(
            m.join(2, Role::Whisperer { to: 2 }),
            Err(MixError::WhisperTarget { .. })
        ));
        assert!(!m.contains(2));
        m.join(2, Role::Listener).unwrap();
        assert_eq!(
            m.join(3, Role::Talker),
            Err(MixError::Full { member: 3, max: 2 })
        );
        assert_eq!(m.push(3, &flat(1)), Err(MixError::NotMember { member: 3 }));
        assert_eq!(
            m.set_role(3, Role::Talker),
            Err(MixError::NotMember { member: 3 })
        );
        assert!(matches!(
            m.set_role(2, Role::Whisperer { to: 2 }),
            Err(MixError::WhisperTarget { .. })
        ));
        assert_eq!(m.role(2), Some(Role::Listener));
        assert_eq!(m.leave(3), Err(MixError::NotMember { member: 3 }));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn whisperer_whose_target_leaves_becomes_a_listener() {
        let mut m = Mixer::new(4);
        m.join(1, Role::Talker).unwrap();
        m.join(2, Role::Talker).unwrap();
        m.join(9, Role::Whisperer { to: 1 }).unwrap();
        assert_eq!(m.leave(1), Ok(Role::Talker));
        assert_eq!(m.role(9), Some(Role::Listener));
        m.push(9, &flat(50)).unwrap();
        assert_eq!(mix_of(&mut m)[&2], flat(0));
    }

    #[test]
    fn the_limit_is_capped() {
        assert_eq!(Mixer::<u16>::new(10_000).max_members(), MAX_MEMBERS);
        let mut m = Mixer::new(MAX_MEMBERS);
        for k in 0..MAX_MEMBERS as u16 {
            m.join(k, Role::Talker).unwrap();
            m.push(k, &flat(i16::MAX)).unwrap();
        }
        assert!(m.join(9999, Role::Talker).is_err());
        // The exact sum of 255 full-scale frames does not overflow before clamping.
        assert!(m.mix().iter().all(|(_, f)| *f == flat(i16::MAX)));
    }

    /// The naive reference: for each pair, add the speaker if the listener hears it.
    fn model(members: &[(u8, Role<u8>, Option<Frame>)]) -> BTreeMap<u8, Frame> {
        members
            .iter()
            .map(|(k, _, _)| {
                let mut acc = [0i64; FRAME_SAMPLES];
                for (s, role, frame) in members {
                    if s == k {
                        continue;
                    }
                    let heard = match role {
                        Role::Talker => true,
                        Role::Listener => false,
                        Role::Whisperer { to } => to == k,
                    };
                    if let (true, Some(f)) = (heard, frame) {
                        for (a, &x) in acc.iter_mut().zip(f.iter()) {
                            *a += i64::from(x);
                        }
                    }
                }
                let mut out = [0i16; FRAME_SAMPLES];
                for (o, &a) in out.iter_mut().zip(acc.iter()) {
                    *o = a.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16;
                }
                (*k, out)
            })
            .collect()
    }

    /// Members 0..n with roles (whisper targets as indices into the members) and
    /// frames (None = nothing sent this tick). Frames are built from a few values so
    /// that saturation happens often.
    fn conference() -> impl Strategy<Value = Vec<(u8, Role<u8>, Option<Frame>)>> {
        (1usize..=40).prop_flat_map(|n| {
            let sample = prop_oneof![
                Just(i16::MAX),
                Just(i16::MIN),
                Just(0i16),
                -2000i16..2000,
                any::<i16>()
            ];
            let frame = proptest::option::weighted(
                0.8,
                (sample.clone(), sample, 0usize..FRAME_SAMPLES).prop_map(|(a, b, split)| {
                    let mut f = [a; FRAME_SAMPLES];
                    f[split..].fill(b);
                    f
                }),
            );
            let role = prop_oneof![
                3 => Just(None),
                1 => Just(Some(None)),
                1 => (0..n).prop_map(|t| Some(Some(t as u8))),
            ];
            proptest::collection::vec((role, frame), n).prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (role, frame))| {
                        let i = i as u8;
                        let role = match role {
                            None => Role::Talker,
                            Some(None) => Role::Listener,
                            // A whisper to itself is refused: make it a talker.
                            Some(Some(t)) if t == i => Role::Talker,
                            Some(Some(t)) => Role::Whisperer { to: t },
                        };
                        (i, role, frame)
                    })
                    .collect()
            })
        })
    }

    fn build(members: &[(u8, Role<u8>, Option<Frame>)]) -> Mixer<u8> {
        let mut m = Mixer::new(MAX_MEMBERS);
        // Everyone joins as a talker first, so whisper targets exist, then roles are set.
        for (k, _, _) in members {
            m.join(*k, Role::Talker).unwrap();
        }
        for (k, role, frame) in members {
            m.set_role(*k, *role).unwrap();
            if let Some(f) = frame {
                m.push(*k, f).unwrap();
            }
        }
        m
    }

    proptest! {
        #[test]
        fn mix_matches_the_reference_model(members in conference()) {
            let mut m = build(&members);
            let out: BTreeMap<u8, Frame> = m.mix().into_iter().collect();
            prop_assert_eq!(out, model(&members));
        }

        #[test]
        fn no_member_hears_itself(members in conference(), loud in any::<i16>()) {
            // Only the member under test sends: its own mix must be silence.
            for (k, _, _) in &members {
                let mut m = build(&members.iter().map(|(k, r, _)| (*k, *r, None)).collect::<Vec<_>>());
                m.push(*k, &flat(loud)).unwrap();
                let out: BTreeMap<u8, Frame> = m.mix().into_iter().collect();
                prop_assert_eq!(out[k], flat(0));
            }
        }

        #[test]
        fn listeners_are_inaudible_and_whispers_reach_only_the_target(members in conference()) {
            let quiet: Vec<_> = members.iter().map(|(k, r, _)| (*k, *r, None)).collect();
            for (k, role, _) in &members {
                let mut m = build(&quiet);
                m.push(*k, &flat(1234)).unwrap();
                let out: BTreeMap<u8, Frame> = m.mix().into_iter().collect();
                for (other, frame) in &out {
                    let expect = other != k && match role {
                        Role::Talker => true,
                        Role::Listener => false,
                        Role::Whisperer { to } => to == other,
                    };
                    prop_assert_eq!(*frame == flat(1234), expect, "{:?} -> {}", role, other);
                    prop_assert!(*frame == flat(1234) || *frame == flat(0));
                }
            }
        }

        #[test]
        fn the_mix_ends_each_tick(members in conference()) {
            let mut m = build(&members);
            let _ = m.mix();
            // Nothing was queued twice: the second tick is silent for everyone.
            prop_assert!(m.mix().iter().all(|(_, f)| *f == flat(0)));
        }
    }
}
