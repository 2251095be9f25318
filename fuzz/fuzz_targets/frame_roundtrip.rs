//! Encode/decode stability. The protocol types do not implement `Arbitrary`, so the
//! fuzz input is turned into a frame by the codec itself: it is read as the raw inside
//! of a frame (kind, port, seq, payload), given a correct CRC and COBS-encoded, so that
//! the payload parsers see the fuzzer's bytes rather than stopping at the CRC. Whatever
//! decodes must re-encode to exactly the same wire bytes and decode again to the same
//! frame; whatever is refused must be refused for its content, not its framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use line_proto::{decode, encode, DecodeError, InvalidFrame, MAX_PAYLOAD, MAX_WIRE_FRAME};

/// CRC-16/IBM-3740 (CCITT-FALSE), bitwise: independent of the codec's own tables.
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// COBS encoding with the terminator, written out here for the same reason.
fn cobs_frame(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    let mut code_at = 0;
    for &b in raw {
        if b == 0 {
            out[code_at] = (out.len() - code_at) as u8;
            code_at = out.len();
            out.push(0);
        } else {
            out.push(b);
            if out.len() - code_at == 0xFF {
                out[code_at] = 0xFF;
                code_at = out.len();
                out.push(0);
            }
        }
    }
    out[code_at] = (out.len() - code_at) as u8;
    out.push(0);
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 || data.len() > 3 + MAX_PAYLOAD {
        return;
    }
    let mut raw = data.to_vec();
    raw.extend_from_slice(&crc16(data).to_be_bytes());
    let wire = cobs_frame(&raw);
    assert!(wire.len() <= MAX_WIRE_FRAME);

    match decode(&wire) {
        Ok((frame, consumed)) => {
            assert_eq!(consumed, wire.len());
            let mut out = [0u8; MAX_WIRE_FRAME];
            let n = encode(&frame, &mut out).expect("a decoded frame re-encodes");
            // The encoding is canonical: a frame has exactly one wire form.
            assert_eq!(&out[..n], &wire[..]);
            let (again, consumed) = decode(&out[..n]).expect("re-encoded frame decodes");
            assert_eq!(consumed, n);
            assert_eq!(again, frame);
        }
        Err(DecodeError::Invalid { consumed, reason }) => {
            assert_eq!(consumed, wire.len());
            assert!(
                !matches!(
                    reason,
                    InvalidFrame::BadCobs
                        | InvalidFrame::BadCrc { .. }
                        | InvalidFrame::TooLong
                        | InvalidFrame::TooShort
                ),
                "framing rejected a well-framed input: {reason:?}"
            );
        }
        Err(DecodeError::Incomplete) => panic!("a terminated frame is incomplete"),
    }
});
