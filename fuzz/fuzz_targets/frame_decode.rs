//! Arbitrary bytes through the stream decoders: `decode` in a reader loop and the
//! byte-at-a-time `Deframer`. Neither may panic, both must yield the same frames, every
//! `Invalid` must ask to drop between 1 and all of the buffered bytes, and any frame
//! that decodes must re-encode into bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use line_proto::{decode, encode, DecodeError, Deframer, Frame, MAX_WIRE_FRAME};

fn assert_round_trips(f: &Frame) {
    let mut out = [0u8; MAX_WIRE_FRAME];
    let n = encode(f, &mut out).expect("a decoded frame re-encodes");
    assert_eq!(out[..n].iter().filter(|&&b| b == 0).count(), 1);
    assert_eq!(out[n - 1], 0);
    let (back, consumed) = decode(&out[..n]).expect("a re-encoded frame decodes");
    assert_eq!(consumed, n);
    assert_eq!(&back, f);
}

fuzz_target!(|data: &[u8]| {
    let mut from_decode = Vec::new();
    let mut buf = data;
    loop {
        match decode(buf) {
            Ok((f, consumed)) => {
                assert!(consumed >= 1 && consumed <= buf.len());
                assert_round_trips(&f);
                from_decode.push(f);
                buf = &buf[consumed..];
            }
            Err(DecodeError::Invalid { consumed, .. }) => {
                assert!(consumed >= 1 && consumed <= buf.len());
                buf = &buf[consumed..];
            }
            Err(DecodeError::Incomplete) => {
                // What is left is idle fill and at most MAX_WIRE_FRAME unterminated bytes.
                let rest: Vec<u8> = buf.iter().copied().skip_while(|&b| b == 0).collect();
                assert!(!rest.contains(&0));
                assert!(rest.len() <= MAX_WIRE_FRAME);
                break;
            }
        }
    }

    let mut d = Deframer::new();
    let mut from_deframer = Vec::new();
    for &b in data {
        if let Some(Ok(f)) = d.feed(b) {
            assert_round_trips(&f);
            from_deframer.push(f);
        }
        assert!(d.pending() <= MAX_WIRE_FRAME);
    }
    // decode gives up on an over-long run when it sees it, the Deframer when it
    // overflows: they agree on every frame that ends within MAX_WIRE_FRAME bytes of the
    // previous terminator, which is every frame unless over-long runs are involved.
    if !data
        .split(|&b| b == 0)
        .any(|run| run.len() > MAX_WIRE_FRAME)
    {
        assert_eq!(from_decode, from_deframer);
    }
});
