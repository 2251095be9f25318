//! Which digest challenges a `401` offers, and in what order (`[sip]
//! digest_algorithms`, or `md5_first`).
//!
//! The registrar challenges with SHA-256 and then MD5 (RFC 8760: most preferred
//! first). Phones disagree on how to read that: some take the first challenge
//! whatever it is (SIPp 3.6 and older desk phones speak only MD5, so MD5 must come
//! first), and libre 1.x (baresip 1.0) refuses the whole `401` with ENOSYS when any
//! challenge names an algorithm it lacks, so it registers only when MD5 is offered
//! alone. The endpoint therefore rewrites the `WWW-Authenticate` headers of each `401`
//! to the configured list and order; every other header keeps its place.

use branchline_sip::digest::{parse_challenge, Algorithm};
use rsip::headers::UntypedHeader;
use rsip::Header;

/// `headers` with the `WWW-Authenticate` challenges kept only for `algorithms` and in
/// that order, at the place of the first challenge. A challenge the digest parser
/// cannot read is kept (after the ordered ones): it was not the registrar's to drop.
pub(super) fn order_challenges(headers: &rsip::Headers, algorithms: &[Algorithm]) -> rsip::Headers {
    let is_challenge = |h: &Header| matches!(h, Header::WwwAuthenticate(_));
    let first = headers.iter().position(is_challenge);
    let (challenges, mut rest): (Vec<Header>, Vec<Header>) =
        headers.iter().cloned().partition(is_challenge);
    // (rank in `algorithms`, header); unreadable challenges rank last.
    let mut ranked: Vec<(usize, Header)> = challenges
        .into_iter()
        .filter_map(|h| {
            let Header::WwwAuthenticate(w) = &h else {
                return None;
            };
            match parse_challenge(w.value()) {
                Ok(c) => algorithms
                    .iter()
                    .position(|&a| a == c.algorithm)
                    .map(|rank| (rank, h)),
                Err(_) => Some((usize::MAX, h)),
            }
        })
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    let at = first.unwrap_or(rest.len()).min(rest.len());
    rest.splice(at..at, ranked.into_iter().map(|(_, h)| h));
    rsip::Headers::from(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(algorithm: &str) -> Header {
        Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(format!(
            "Digest realm=\"branch.test\", nonce=\"n-{algorithm}\", qop=\"auth\", algorithm={algorithm}"
        )))
    }

    /// A 401's headers as the registrar writes them: SHA-256 then MD5, between others.
    fn registrar_401() -> rsip::Headers {
        rsip::Headers::from(vec![
            Header::CallId(rsip::headers::CallId::new("c1@test")),
            challenge("SHA-256"),
            challenge("MD5"),
            Header::ContentLength(rsip::headers::ContentLength::new("0")),
        ])
    }

    fn names(headers: &rsip::Headers) -> Vec<String> {
        headers
            .iter()
            .map(|h| match h {
                Header::WwwAuthenticate(w) => {
                    let c = parse_challenge(w.value()).expect("challenge");
                    format!("www-authenticate {}", c.algorithm.as_str())
                }
                Header::CallId(_) => "call-id".to_owned(),
                Header::ContentLength(_) => "content-length".to_owned(),
                other => format!("{other}"),
            })
            .collect()
    }

    #[test]
    fn default_order_keeps_the_registrar_headers() {
        let out = order_challenges(&registrar_401(), &[Algorithm::Sha256, Algorithm::Md5]);
        assert_eq!(
            names(&out),
            [
                "call-id",
                "www-authenticate SHA-256",
                "www-authenticate MD5",
                "content-length"
            ]
        );
    }

    #[test]
    fn md5_first_swaps_the_challenges_in_place() {
        let out = order_challenges(&registrar_401(), &[Algorithm::Md5, Algorithm::Sha256]);
        assert_eq!(
            names(&out),
            [
                "call-id",
                "www-authenticate MD5",
                "www-authenticate SHA-256",
                "content-length"
            ]
        );
    }

    #[test]
    fn md5_alone_drops_the_sha256_challenge() {
        let out = order_challenges(&registrar_401(), &[Algorithm::Md5]);
        assert_eq!(
            names(&out),
            ["call-id", "www-authenticate MD5", "content-length"]
        );
        let out = order_challenges(&registrar_401(), &[Algorithm::Sha256]);
        assert_eq!(
            names(&out),
            ["call-id", "www-authenticate SHA-256", "content-length"]
        );
    }

    #[test]
    fn an_unreadable_challenge_is_kept_last_and_no_challenge_changes_nothing() {
        let mut headers: Vec<Header> = registrar_401().iter().cloned().collect();
        headers.insert(
            1,
            Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new("Basic realm=\"x\"")),
        );
        let out = order_challenges(&rsip::Headers::from(headers), &[Algorithm::Md5]);
        let kinds: Vec<String> = out.iter().map(|h| h.to_string()).collect();
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(kinds[1].contains("algorithm=MD5"), "{kinds:?}");
        assert!(kinds[2].contains("Basic"), "{kinds:?}");

        let plain = rsip::Headers::from(vec![
            Header::CallId(rsip::headers::CallId::new("c2@test")),
            Header::ContentLength(rsip::headers::ContentLength::new("0")),
        ]);
        assert_eq!(order_challenges(&plain, &[Algorithm::Md5]), plain);
    }
}
