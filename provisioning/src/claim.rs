//! The box's claim code and the text of its claim QR.
//!
//! A box shows its own claim QR on its web page (provisioning page): its serial and a
//! claim code. An HQ operator (or an installer's phone) reads it to claim that box for
//! a site; HQ then makes the site's token for that serial. The code shows that whoever
//! claims the box saw its page (logged in with provisioning rights), not just the
//! serial printed on its label.
//!
//! # The code
//!
//! `code = HMAC-SHA256(secret, "branchline-claim-v1" || 0x00 || serial)`, first
//! [`CODE_LEN`] bytes (80 bits), written as 16 Crockford base32 characters in four
//! groups of four (`7K2M-Q9XD-4HRT-0WZB`). `secret` is [`SECRET_LEN`] random bytes the
//! box makes once and keeps (`branchd` keeps them in its data directory with mode
//! 0600; a factory reset removes them, so a reset box has a new code). Deterministic:
//! the same box shows the same code at every start, with no state besides the secret.
//!
//! Why these inputs: the serial alone is printed on the box, so it proves nothing; the
//! device key does not exist before enrollment and is replaced at every renewal and
//! re-enrollment (the code would change under the operator's feet); a random code
//! kept on its own would do, but deriving it from a secret and the serial binds the
//! code to this serial (a secret file copied to another box gives that box another
//! code) and keeps one secret per box whatever else is derived from it later (the
//! label `branchline-claim-v1` separates uses).
//!
//! # QR text
//!
//! `BLC1:<serial>:<code without dashes>`, e.g. `BLC1:BL2418-00042:7K2MQ9XD4HRT0WZB`:
//! short, and only QR alphanumeric-mode characters when the serial is upper case.
//! [`parse_qr_text`] reads it back (dashes and case in the code are forgiven, and the
//! base32 look-alikes `I`, `L` and `O`, as Crockford specifies).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::payload::BoxSerial;

/// Claim-QR text prefix.
pub const PREFIX: &str = "BLC1:";
/// Bytes of the box's claim secret.
pub const SECRET_LEN: usize = 32;
/// Bytes of a claim code (80 bits: 16 base32 characters).
pub const CODE_LEN: usize = 10;
/// The HMAC's domain-separation label.
const LABEL: &[u8] = b"branchline-claim-v1";
/// Crockford's base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A claim code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimCode(pub [u8; CODE_LEN]);

impl std::fmt::Debug for ClaimCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClaimCode({})", self.text())
    }
}

impl ClaimCode {
    /// The code of the box with `serial` and claim secret `secret` (see the module doc).
    pub fn derive(secret: &[u8; SECRET_LEN], serial: &BoxSerial) -> ClaimCode {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(LABEL);
        mac.update(&[0]);
        mac.update(serial.as_str().as_bytes());
        let full = mac.finalize().into_bytes();
        let mut code = [0u8; CODE_LEN];
        code.copy_from_slice(&full[..CODE_LEN]);
        ClaimCode(code)
    }

    /// The 16 base32 characters, no dashes.
    pub fn compact(&self) -> String {
        // 80 bits = 16 groups of 5, most significant first.
        let mut acc: u128 = 0;
        for b in self.0 {
            acc = (acc << 8) | u128::from(b);
        }
        (0..16)
            .rev()
            .map(|i| char::from(ALPHABET[((acc >> (i * 5)) & 31) as usize]))
            .collect()
    }

    /// The code as people read it: four groups of four, `XXXX-XXXX-XXXX-XXXX`.
    pub fn text(&self) -> String {
        let c = self.compact();
        format!("{}-{}-{}-{}", &c[0..4], &c[4..8], &c[8..12], &c[12..16])
    }

    /// Reads a code as [`ClaimCode::text`] or [`ClaimCode::compact`] write it (dashes,
    /// spaces and case ignored; `I`/`L` read as 1 and `O` as 0).
    pub fn parse(text: &str) -> Result<ClaimCode> {
        let bad = |why: String| Error::invalid("claim code", why);
        let mut acc: u128 = 0;
        let mut n = 0;
        for c in text.chars().filter(|c| *c != '-' && *c != ' ') {
            let c = match c.to_ascii_uppercase() {
                'I' | 'L' => '1',
                'O' => '0',
                c => c,
            };
            let v = ALPHABET
                .iter()
                .position(|&a| char::from(a) == c)
                .ok_or_else(|| bad(format!("{text:?}: {c:?} is not a base32 character")))?;
            acc = (acc << 5) | v as u128;
            n += 1;
            if n > 16 {
                break;
            }
        }
        if n != 16 {
            return Err(bad(format!("{text:?}: must be 16 base32 characters")));
        }
        let mut code = [0u8; CODE_LEN];
        for (i, b) in code.iter_mut().enumerate() {
            *b = (acc >> (8 * (CODE_LEN - 1 - i))) as u8;
        }
        Ok(ClaimCode(code))
    }
}

/// The claim QR's text for `serial` and `code`.
pub fn qr_text(serial: &BoxSerial, code: &ClaimCode) -> String {
    format!("{PREFIX}{serial}:{}", code.compact())
}

/// Reads a claim QR's text back into the serial and the code.
pub fn parse_qr_text(text: &str) -> Result<(BoxSerial, ClaimCode)> {
    let text = text.trim();
    let rest = text
        .strip_prefix(PREFIX)
        .ok_or_else(|| Error::invalid("claim", format!("does not start with {PREFIX:?}")))?;
    let (serial, code) = rest
        .split_once(':')
        .ok_or_else(|| Error::invalid("claim", "no ':' between serial and code"))?;
    Ok((serial.parse()?, ClaimCode::parse(code)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(s: &str) -> BoxSerial {
        s.parse().expect("serial")
    }

    #[test]
    fn the_code_is_deterministic_and_bound_to_secret_and_serial() {
        let secret = [7u8; SECRET_LEN];
        let a = ClaimCode::derive(&secret, &serial("BL2418-00042"));
        assert_eq!(a, ClaimCode::derive(&secret, &serial("BL2418-00042")));
        assert_ne!(a, ClaimCode::derive(&secret, &serial("BL2418-00043")));
        assert_ne!(
            a,
            ClaimCode::derive(&[8u8; SECRET_LEN], &serial("BL2418-00042"))
        );
        let text = a.text();
        assert_eq!(text.len(), 19, "{text}");
        assert_eq!(text.matches('-').count(), 3, "{text}");
        assert!(text.bytes().all(|b| b == b'-' || ALPHABET.contains(&b)));
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256 with a fixed key and message, so the derivation cannot drift.
        let code = ClaimCode::derive(&[0u8; SECRET_LEN], &serial("BL-1"));
        let mut mac = Hmac::<Sha256>::new_from_slice(&[0u8; 32]).expect("key");
        mac.update(b"branchline-claim-v1\0BL-1");
        assert_eq!(code.0[..], mac.finalize().into_bytes()[..CODE_LEN]);
        // Base32 of known bytes: 0x00.. = all zeros, 0xff.. = all Z.
        assert_eq!(ClaimCode([0; CODE_LEN]).text(), "0000-0000-0000-0000");
        assert_eq!(ClaimCode([0xff; CODE_LEN]).text(), "ZZZZ-ZZZZ-ZZZZ-ZZZZ");
        let mut one = [0u8; CODE_LEN];
        one[CODE_LEN - 1] = 1;
        assert_eq!(ClaimCode(one).compact(), "0000000000000001");
    }

    #[test]
    fn text_and_qr_round_trip() {
        for seed in 0u8..=40 {
            let code = ClaimCode::derive(&[seed; SECRET_LEN], &serial("box_1"));
            assert_eq!(ClaimCode::parse(&code.text()).expect("text"), code);
            assert_eq!(ClaimCode::parse(&code.compact()).expect("compact"), code);
            assert_eq!(
                ClaimCode::parse(&code.text().to_lowercase()).expect("lower"),
                code
            );
            let qr = qr_text(&serial("box_1"), &code);
            assert_eq!(parse_qr_text(&qr).expect("qr"), (serial("box_1"), code));
        }
        // Crockford look-alikes.
        assert_eq!(
            ClaimCode::parse("OOOO-OOOO-OOOO-OOOl").expect("look-alikes"),
            ClaimCode::parse("0000-0000-0000-0001").expect("digits")
        );
    }

    #[test]
    fn bad_text_is_refused() {
        for bad in [
            "",
            "0000-0000-0000-000",
            "0000-0000-0000-00000",
            "0000-0000-0000-000U",
        ] {
            assert!(ClaimCode::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "BL1:X:0000000000000000",
            "BLC1:0000000000000000",
            "BLC1:bad serial:0000000000000000",
            "BLC1:BL-1:00",
        ] {
            assert!(parse_qr_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_claim_qr_is_small_and_reads_back() {
        let code = ClaimCode::derive(&[1; SECRET_LEN], &serial("BL2418-00042"));
        let text = qr_text(&serial("BL2418-00042"), &code);
        let qr = crate::qr::Qr::encode(&text).expect("qr");
        assert!(qr.version() <= 3, "version {}", qr.version());
        let png = qr.to_png(6).expect("png");
        assert_eq!(crate::qr::decode_image(&png).expect("decoded"), vec![text]);
    }
}
