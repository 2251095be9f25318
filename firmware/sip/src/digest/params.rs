//! Reading and writing `Digest` header values (RFC 7616 3.3 / 3.4 auth-params).

use super::{Algorithm, AuthError};

/// Largest header value accepted, to bound work on hostile input.
const MAX_VALUE_LEN: usize = 4096;

/// Splits `Digest a=b, c="d"` into its params (names lower-cased, quoted values
/// unescaped). Rejects duplicates.
fn auth_params(value: &str) -> Result<Vec<(String, String)>, AuthError> {
    let malformed = |reason| AuthError::Malformed { reason };
    if value.len() > MAX_VALUE_LEN {
        return Err(malformed("header value too long"));
    }
    let value = value.trim();
    let (scheme, rest) = value
        .split_once([' ', '\t'])
        .ok_or(malformed("no parameters after the scheme"))?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::UnsupportedScheme {
            scheme: scheme.chars().take(32).collect(),
        });
    }
    let bytes = rest.as_bytes();
    let mut i = 0;
    let mut out: Vec<(String, String)> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while bytes.get(*i).is_some_and(|b| matches!(b, b' ' | b'\t')) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        // Empty list elements are allowed (RFC 7230 7 #rule).
        if bytes.get(i) == Some(&b',') {
            i += 1;
            continue;
        }
        if i >= bytes.len() {
            break;
        }
        let name_start = i;
        while bytes.get(i).is_some_and(|b| is_token_byte(*b)) {
            i += 1;
        }
        let name = rest.get(name_start..i).unwrap_or_default();
        if name.is_empty() {
            return Err(malformed("parameter name is not a token"));
        }
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(malformed("parameter without '='"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut val = String::new();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut closed = false;
            while let Some(&b) = bytes.get(i) {
                i += 1;
                match b {
                    b'"' => {
                        closed = true;
                        break;
                    }
                    b'\\' => {
                        let &escaped = bytes.get(i).ok_or(malformed("dangling escape"))?;
                        val.push(char::from(escaped));
                        i += 1;
                    }
                    _ => {
                        // Copy the whole UTF-8 sequence starting here.
                        let start = i - 1;
                        let mut end = i;
                        while end < bytes.len() && !rest.is_char_boundary(end) {
                            end += 1;
                        }
                        val.push_str(rest.get(start..end).unwrap_or_default());
                        i = end;
                    }
                }
            }
            if !closed {
                return Err(malformed("unterminated quoted string"));
            }
        } else {
            let start = i;
            while bytes
                .get(i)
                .is_some_and(|b| is_token_byte(*b) || *b == b'/' || *b == b'=')
            {
                i += 1;
            }
            val.push_str(rest.get(start..i).unwrap_or_default());
            if val.is_empty() {
                return Err(malformed("parameter without a value"));
            }
        }
        let name = name.to_ascii_lowercase();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(malformed("duplicate parameter"));
        }
        out.push((name, val));
        skip_ws(&mut i);
        match bytes.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(malformed("garbage after a parameter value")),
        }
    }
    Ok(out)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn take(params: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let pos = params.iter().position(|(n, _)| n == name)?;
    Some(params.swap_remove(pos).1)
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back unchanged.
    pub opaque: Option<String>,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// The `qop` options offered (empty: RFC 2069 style).
    pub qop: Vec<String>,
    /// `stale=true`: the previous credentials were right but the nonce expired.
    pub stale: bool,
}

/// Reads a challenge header value.
pub fn parse_challenge(value: &str) -> Result<Challenge, AuthError> {
    let mut p = auth_params(value)?;
    let realm = take(&mut p, "realm").ok_or(AuthError::MissingParam { name: "realm" })?;
    let nonce = take(&mut p, "nonce").ok_or(AuthError::MissingParam { name: "nonce" })?;
    let algorithm = match take(&mut p, "algorithm") {
        None => Algorithm::Md5,
        Some(a) => {
            Algorithm::from_token(&a).ok_or(AuthError::UnsupportedAlgorithm { algorithm: a })?
        }
    };
    let qop = take(&mut p, "qop")
        .map(|q| {
            q.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let stale = take(&mut p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
    Ok(Challenge {
        realm,
        nonce,
        opaque: take(&mut p, "opaque"),
        algorithm,
        qop,
        stale,
    })
}

/// An `Authorization` / `Proxy-Authorization` digest credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri` (the Request-URI the client signed).
    pub uri: String,
    /// `response`, as written.
    pub response: String,
    /// `algorithm` as written (MD5 when absent).
    pub algorithm: String,
    /// `cnonce`.
    pub cnonce: Option<String>,
    /// `nc`, as written (8 hex digits when valid).
    pub nc: Option<String>,
    /// `qop`.
    pub qop: Option<String>,
    /// `opaque`.
    pub opaque: Option<String>,
}

/// Reads a credentials header value.
pub fn parse_credentials(value: &str) -> Result<Credentials, AuthError> {
    let mut p = auth_params(value)?;
    let mut need = |name: &'static str| take(&mut p, name).ok_or(AuthError::MissingParam { name });
    let username = need("username")?;
    let realm = need("realm")?;
    let nonce = need("nonce")?;
    let uri = need("uri")?;
    let response = need("response")?;
    Ok(Credentials {
        username,
        realm,
        nonce,
        uri,
        response,
        algorithm: take(&mut p, "algorithm").unwrap_or_else(|| "MD5".to_owned()),
        cnonce: take(&mut p, "cnonce"),
        nc: take(&mut p, "nc"),
        qop: take(&mut p, "qop"),
        opaque: take(&mut p, "opaque"),
    })
}

/// Appends `"value"` with `"` and `\` escaped.
pub(crate) fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        // CR/LF cannot be carried in a header; drop them.
        if c != '\r' && c != '\n' {
            out.push(c);
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_with_quoted_commas_and_escapes() {
        let c = parse_challenge(
            "Digest realm=\"a \\\"b\\\", c\", qop=\"auth,auth-int\", algorithm=SHA-256, nonce=\"n/+=\", stale=TRUE, opaque=\"o\"",
        )
        .unwrap();
        assert_eq!(c.realm, "a \"b\", c");
        assert_eq!(c.qop, ["auth", "auth-int"]);
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.nonce, "n/+=");
        assert!(c.stale);
        assert_eq!(c.opaque.as_deref(), Some("o"));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "Digest",
            "Basic realm=\"x\"",
            "Digest realm=\"x",
            "Digest realm=\"x\" nonce=\"y\"",
            "Digest realm",
            "Digest realm=\"a\", realm=\"b\", nonce=\"n\"",
            "Digest realm=\"a\\",
        ] {
            assert!(parse_challenge(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_challenge("Digest nonce=\"n\""),
            Err(AuthError::MissingParam { name: "realm" })
        );
        assert!(matches!(
            parse_challenge("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1"),
            Err(AuthError::UnsupportedAlgorithm { .. })
        ));
        assert!(parse_credentials(&format!("Digest username=\"{}\"", "a".repeat(5000))).is_err());
    }

    #[test]
    fn quoting_escapes() {
        let mut s = String::new();
        push_quoted(&mut s, "a\"b\\c\r\n");
        assert_eq!(s, "\"a\\\"b\\\\c\"");
    }
}
