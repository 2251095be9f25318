//! Arbitrary bytes through the SIP message layer: parse must never panic; whatever it
//! accepts must serialize to bytes that parse again to the same message and keep the
//! same transaction key; stream framing must agree with datagram parsing.
#![no_main]

use branchline_sip::message::{self, Frame, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(msg) = message::parse(data, &limits) {
        let key = message::transaction_fields(&msg)
            .map(|f| (f.branch.to_owned(), f.method, f.call_id.to_owned(), f.cseq));
        let _ = message::from_tag(&msg);
        let _ = message::to_tag(&msg);
        let bytes = message::serialize(&msg);
        let again = message::parse(&bytes, &limits).expect("a serialized message parses again");
        assert_eq!(again, msg, "round trip changed the message");
        let key_again = message::transaction_fields(&again)
            .map(|f| (f.branch.to_owned(), f.method, f.call_id.to_owned(), f.cseq));
        assert_eq!(key, key_again);
        // When the written bytes frame as a stream message (they carry a
        // Content-Length), the framed slice must be the same message.
        if let Ok(Frame::Message { start, len }) = message::frame_stream(&bytes, &limits) {
            let framed =
                message::parse(&bytes[start..start + len], &limits).expect("framed message parses");
            assert_eq!(framed, msg);
        }
    }
    if let Ok(Frame::Message { start, len }) = message::frame_stream(data, &limits) {
        assert!(start + len <= data.len());
    }
});
