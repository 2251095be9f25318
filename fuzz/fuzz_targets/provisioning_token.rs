//! Arbitrary input as a QR enrollment token: as text (prefix + base45), and as the
//! binary form. Decoding never panics and never accepts unsigned input. Then the bytes
//! as a token body signed with the trusted key, so postcard and the field validation
//! behind the signature are fuzzed too: a token that decodes must re-encode into a
//! token that decodes to the same enrollment.
#![no_main]

use branchline_provisioning::keys::{KeyId, TrustedKeys};
use branchline_provisioning::{base45, token};
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let keys = TrustedKeys::new([key.verifying_key()]).unwrap();

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = token::decode(text, &keys);
        if let Ok(bytes) = base45::decode(text) {
            assert_eq!(base45::encode(&bytes), text, "base45 is canonical");
        }
    }
    assert!(token::decode(&token::to_text(data), &keys).is_err());

    let mut signed = vec![token::VERSION];
    signed.extend_from_slice(&KeyId::of(&key.verifying_key()).0);
    signed.extend_from_slice(data);
    let signature = key.sign(&signed);
    signed.extend_from_slice(&signature.to_bytes());
    if let Ok(decoded) = token::decode(&token::to_text(&signed), &keys) {
        let again = token::encode(&decoded.enrollment, &key).expect("a decoded token re-encodes");
        let back = token::decode(&again, &keys).expect("and decodes again");
        assert_eq!(back.enrollment, decoded.enrollment);
    }
});
