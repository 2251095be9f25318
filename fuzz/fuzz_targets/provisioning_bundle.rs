//! Arbitrary bytes as a USB provisioning bundle and as a revocation list: the envelope
//! parsers never panic and never accept unsigned input. Then the same bytes as a
//! payload signed with the trusted key, so the JSON decoder and validation behind the
//! signature check are fuzzed too: a payload that opens must re-sign into a bundle
//! that opens to the same payload.
#![no_main]

use branchline_provisioning::envelope::{self, Kind};
use branchline_provisioning::keys::TrustedKeys;
use branchline_provisioning::revocation::RevocationList;
use branchline_provisioning::{bundle, Error};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let keys = TrustedKeys::new([key.verifying_key()]).unwrap();

    // Unsigned input: refused (a forged ed25519 signature is out of the fuzzer's reach).
    assert!(bundle::open(data, &keys).is_err());
    assert!(RevocationList::open(data, &keys).is_err());

    // Signed input: the payload decoders see the fuzzer's bytes.
    if data.len() <= envelope::MAX_PAYLOAD {
        let sealed = envelope::seal(Kind::Bundle, data, &key).unwrap();
        match bundle::open(&sealed, &keys) {
            Ok(opened) => {
                let again =
                    bundle::make(&opened.payload, &key).expect("an opened payload re-signs");
                let reopened = bundle::open(&again, &keys).expect("and opens again");
                assert_eq!(reopened.payload, opened.payload);
            }
            Err(Error::Payload { .. })
            | Err(Error::TokenText(_))
            | Err(Error::TooLarge { .. })
            | Err(Error::Truncated { .. })
            | Err(Error::UnknownKey { .. })
            | Err(Error::UnsupportedVersion { .. })
            | Err(Error::BadSignature { .. }) => {}
            Err(e) => panic!("unexpected refusal of a signed bundle: {e}"),
        }
        let sealed = envelope::seal(Kind::RevocationList, data, &key).unwrap();
        if let Ok((_, list)) = RevocationList::open(&sealed, &keys) {
            let again = list.seal(&key).unwrap();
            assert_eq!(RevocationList::open(&again, &keys).unwrap().1, list);
        }
    }
});
