//! The upload body codec: round trip, the inflation limit, corrupt bodies, and the
//! wire cost of CDRs.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;

use crate::agent::codec::{decode_batch, encode_batch, gunzip_limited, inflated_len, DecodeError};
use crate::wire::{
    RecordKind, UpBatch, UpRecord, MAX_BATCH_RECORDS, MAX_UP_BODY_INFLATED, PROTOCOL_VERSION,
};

/// A deterministic generator for test data (SplitMix64).
pub(super) struct TestRng(u64);

impl TestRng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` CDR outbox rows as the firmware writes them (`firmware/src/cdr.rs`): one leg per
/// call, a realistic mix of internal, inbound and outbound calls over a working day.
pub(super) fn realistic_cdr_rows(
    box_id: &str,
    first_seq: i64,
    n: usize,
    seed: u64,
) -> Vec<UpRecord> {
    let mut rng = TestRng::new(seed);
    let mut t: i64 = 1_785_000_000_000; // a weekday morning in 2026
    (0..n)
        .map(|i| {
            t += 5_000 + rng.below(60_000) as i64;
            let ext = |rng: &mut TestRng| format!("{}", 201 + rng.below(16));
            let pstn = |rng: &mut TestRng| format!("+4930{:08}", rng.below(100_000_000));
            let port = |rng: &mut TestRng| json!(1 + rng.below(16));
            let (direction, caller, caller_port, callee, callee_port) = match rng.below(10) {
                0..=2 => (
                    "internal",
                    ext(&mut rng),
                    port(&mut rng),
                    ext(&mut rng),
                    port(&mut rng),
                ),
                3..=6 => {
                    let caller = if rng.below(20) == 0 {
                        String::new()
                    } else {
                        pstn(&mut rng)
                    };
                    (
                        "inbound",
                        caller,
                        json!(null),
                        ext(&mut rng),
                        port(&mut rng),
                    )
                }
                _ => (
                    "outbound",
                    ext(&mut rng),
                    port(&mut rng),
                    pstn(&mut rng),
                    json!(null),
                ),
            };
            let (disposition, answered, ended, hangup) = match rng.below(10) {
                0..=6 => {
                    let answered = t + 2_000 + rng.below(20_000) as i64;
                    let ended = answered + 10_000 + rng.below(600_000) as i64;
                    let side = if rng.below(2) == 0 {
                        "caller"
                    } else {
                        "callee"
                    };
                    ("answered", json!(answered), ended, side)
                }
                7 => ("no_answer", json!(null), t + 30_000, "system"),
                8 => (
                    "busy",
                    json!(null),
                    t + 1_500 + rng.below(2_000) as i64,
                    "callee",
                ),
                _ => (
                    "abandoned",
                    json!(null),
                    t + 3_000 + rng.below(10_000) as i64,
                    "caller",
                ),
            };
            let call_id = format!("c-{box_id}-{}", 100_000 + i);
            let payload = json!({
                "call_id": call_id,
                "direction": direction,
                "caller": caller,
                "caller_port": caller_port,
                "callee": callee,
                "callee_port": callee_port,
                "started_at_ms": t,
                "answered_at_ms": answered,
                "ended_at_ms": ended,
                "disposition": disposition,
                "hangup_side": hangup,
            });
            UpRecord {
                seq: first_seq + i as i64,
                kind: RecordKind::Cdr,
                key: call_id,
                created_at_ms: ended + rng.below(50) as i64,
                payload,
            }
        })
        .collect()
}

pub(super) fn batch_of(records: Vec<UpRecord>) -> UpBatch {
    UpBatch {
        version: PROTOCOL_VERSION,
        box_id: "br-0042".into(),
        epoch: "5f1c2a9e7d3b4c61".into(),
        firmware_version: "0.1.0".into(),
        backlog: 0,
        oldest_pending_ms: records.first().map(|r| r.created_at_ms),
        records,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn batch_round_trips() {
    let batch = batch_of(realistic_cdr_rows("br-0042", 1, 50, 7));
    let body = encode_batch(&batch);
    assert_eq!(decode_batch(&body, MAX_UP_BODY_INFLATED).unwrap(), batch);
    assert_eq!(
        gunzip_limited(&body, usize::MAX).unwrap().len(),
        inflated_len(&batch)
    );
}

#[test]
fn empty_heartbeat_batch_round_trips() {
    let batch = batch_of(Vec::new());
    assert_eq!(decode_batch(&encode_batch(&batch), 1024).unwrap(), batch);
}

#[test]
fn body_inflating_beyond_the_limit_is_refused() {
    // 64 MiB of zeros compress to about 64 KiB: a bomb for a 4 MiB limit.
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 200 * 1024, "{}", bomb.len());
    match decode_batch(&bomb, MAX_UP_BODY_INFLATED) {
        Err(DecodeError::TooLarge { limit }) => assert_eq!(limit, MAX_UP_BODY_INFLATED),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn inflated_size_exactly_at_the_limit_is_accepted_and_one_more_byte_is_not() {
    let batch = batch_of(realistic_cdr_rows("br-0042", 1, 20, 9));
    let body = encode_batch(&batch);
    let len = inflated_len(&batch);
    assert_eq!(decode_batch(&body, len).unwrap(), batch);
    assert!(matches!(
        decode_batch(&body, len - 1),
        Err(DecodeError::TooLarge { limit }) if limit == len - 1
    ));
}

#[test]
fn output_capacity_never_exceeds_the_limit() {
    let json = serde_json::to_vec(&batch_of(realistic_cdr_rows("br-0042", 1, 300, 3))).unwrap();
    let body = gzip(&json);
    let out = gunzip_limited(&body, json.len()).unwrap();
    assert_eq!(out, json);
    assert!(
        out.capacity() <= json.len(),
        "{} > {}",
        out.capacity(),
        json.len()
    );
}

#[test]
fn corrupt_truncated_and_trailing_bodies_are_refused() {
    let body = encode_batch(&batch_of(realistic_cdr_rows("br-0042", 1, 10, 1)));

    // Not gzip at all (plain JSON).
    let plain = serde_json::to_vec(&batch_of(Vec::new())).unwrap();
    assert!(matches!(
        decode_batch(&plain, MAX_UP_BODY_INFLATED),
        Err(DecodeError::Gzip { .. })
    ));
    // Empty body.
    assert!(matches!(
        decode_batch(&[], MAX_UP_BODY_INFLATED),
        Err(DecodeError::Gzip { .. })
    ));
    // Truncated stream.
    let truncated = &body[..body.len() - 9];
    assert!(matches!(
        decode_batch(truncated, MAX_UP_BODY_INFLATED),
        Err(DecodeError::Gzip { .. })
    ));
    // A flipped bit in the deflate data or the CRC.
    for at in [body.len() / 2, body.len() - 6] {
        let mut flipped = body.clone();
        flipped[at] ^= 0x10;
        assert!(
            decode_batch(&flipped, MAX_UP_BODY_INFLATED).is_err(),
            "bit flip at {at} accepted"
        );
    }
    // Garbage, or a second gzip member, after the stream.
    let mut trailing = body.clone();
    trailing.extend_from_slice(b"xyz");
    assert!(matches!(
        decode_batch(&trailing, MAX_UP_BODY_INFLATED),
        Err(DecodeError::TrailingData { trailing: 3 })
    ));
    let mut two = body.clone();
    two.extend_from_slice(&body);
    assert!(matches!(
        decode_batch(&two, MAX_UP_BODY_INFLATED),
        Err(DecodeError::TrailingData { .. })
    ));
}

#[test]
fn valid_gzip_of_the_wrong_json_is_refused() {
    for json in [
        &b"[1,2,3]"[..],
        br#"{"version":1}"#,
        br#"{"version":1,"box_id":"b","epoch":"e","firmware_version":"f","backlog":0,"oldest_pending_ms":null,"records":[],"extra":1}"#,
        br#"{"version":1,"box_id":"b","epoch":"e","firmware_version":"f","backlog":0,"oldest_pending_ms":null,"records":[{"seq":1,"kind":"fax","key":"k","created_at_ms":0,"payload":{}}]}"#,
    ] {
        assert!(
            matches!(decode_batch(&gzip(json), MAX_UP_BODY_INFLATED), Err(DecodeError::Json { .. })),
            "{}",
            String::from_utf8_lossy(json)
        );
    }
}

/// The wire cost target of issue 5: under 120 bytes per CDR, compressed. 1,000
/// realistic CDRs, in full batches of the default size and in small batches of 100
/// (what a box that is mostly online sends).
#[test]
fn bytes_per_cdr_on_the_wire() {
    const N: usize = 1_000;
    let rows = realistic_cdr_rows("br-0042", 1, N, 2026);
    let mut report = Vec::new();
    for batch_size in [N, 100] {
        assert!(batch_size <= MAX_BATCH_RECORDS);
        let mut compressed = 0usize;
        let mut inflated = 0usize;
        for chunk in rows.chunks(batch_size) {
            let batch = batch_of(chunk.to_vec());
            compressed += encode_batch(&batch).len();
            inflated += inflated_len(&batch);
        }
        let per_cdr = compressed as f64 / N as f64;
        report.push(format!(
            "batches of {batch_size}: {per_cdr:.1} B/CDR compressed ({:.1} B/CDR as JSON)",
            inflated as f64 / N as f64
        ));
        assert!(per_cdr < 120.0, "{}", report.join("; "));
    }
    println!("{}", report.join("\n"));
}
