//! The byte-level scanner: start line and header fields, before rsip sees anything.
//!
//! Lines end in CRLF (RFC 3261 7.5). A bare LF is accepted as a line end too (see the
//! module doc of [`crate::message`] for why); a bare CR anywhere in the head is an error.
//! Header folding (RFC 3261 7.3.1) is undone here: every continuation line is joined to
//! its header with a single SP.

use std::borrow::Cow;

use super::headers::Known;
use super::{grammar, Limits, ParseError};

/// One header field as it appeared on the wire, unfolded.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    /// The name as written (compact forms not yet expanded).
    pub name: &'a str,
    /// The header the name stands for, if the message layer knows it.
    pub known: Option<Known>,
    /// The value with folding undone and outer whitespace trimmed.
    pub value: Cow<'a, str>,
    /// 1-based line number of the header's first line (start line is line 1).
    pub line: usize,
}

/// The start line and header fields of a message, plus where its body starts.
#[derive(Debug)]
pub(crate) struct Head<'a> {
    /// The start line without its line end; valid UTF-8.
    pub start_line: &'a str,
    /// Header fields in wire order.
    pub fields: Vec<Field<'a>>,
    /// Offset of the first body byte in the input.
    pub body_offset: usize,
}

const fn token_bytes() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-.!%*_+`'~";
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}
static TOKEN_BYTES: [bool; 256] = token_bytes();

/// Bytes allowed in a `token` (RFC 3261 25.1).
pub(crate) fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTES[usize::from(b)]
}

/// Is `s` a non-empty RFC 3261 `token`?
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Number of leading CRLF (or bare LF) bytes at the start of `bytes`.
pub(crate) fn leading_line_ends(bytes: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match bytes.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// Where the head (start line + headers + empty line) ends, if the terminating empty
/// line is present: returns the offset of the first body byte.
pub(crate) fn find_head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    while let Some(rel) = bytes
        .get(pos..)
        .and_then(|rest| memchr::memchr(b'\n', rest))
    {
        let lf = pos + rel;
        // An empty line follows this LF when the next bytes are LF or CRLF.
        match bytes.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            _ => pos = lf + 1,
        }
    }
    None
}

/// Checks one physical line for bare CR and forbidden control characters and returns it
/// as `str`. `line_no` is for error context.
///
/// `checked` is the same line taken from a head already known to be UTF-8, which spares
/// a UTF-8 check per line; without it the line is checked here.
fn check_line<'a>(
    raw: &'a [u8],
    checked: Option<&'a str>,
    line_no: usize,
) -> Result<&'a str, ParseError> {
    // Fast path: the common line has no byte below 0x20 and no DEL.
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        let mut prev = 0u8;
        for &b in raw {
            if b == b'\r' {
                return Err(ParseError::BareCr { line: line_no });
            }
            // Control characters only as the second half of a quoted-pair (RFC 3261
            // 25.1: quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)).
            if (b < 0x20 && b != b'\t' || b == 0x7f) && prev != b'\\' {
                return Err(ParseError::ControlCharacter {
                    line: line_no,
                    byte: b,
                });
            }
            prev = if prev == b'\\' { 0 } else { b };
        }
    }
    match checked {
        Some(text) => Ok(text),
        None => std::str::from_utf8(raw).map_err(|_| ParseError::InvalidUtf8 { line: line_no }),
    }
}

/// Scans the head of a message that starts at `bytes[0]`. `bytes` must contain the
/// complete head including its terminating empty line, otherwise
/// [`ParseError::MissingHeaderTerminator`] is returned.
pub(crate) fn scan_head<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Head<'a>, ParseError> {
    let start_offset = leading_line_ends(bytes);
    let mut pos = start_offset;
    let mut line_no = 0usize;
    let mut start_line: Option<&'a str> = None;
    let mut fields: Vec<Field<'a>> = Vec::with_capacity(16);
    // The header being built: (name, value pieces, first line, total length).
    let mut current: Option<(&'a str, Cow<'a, str>, usize)> = None;
    // The usual message is UTF-8 throughout its head: check that once (one fast pass)
    // and take each line from the checked text. Otherwise (no terminator, or a bad byte
    // somewhere) every line is checked on its own, so errors name the right line.
    let utf8_head = find_head_end(bytes, start_offset)
        .and_then(|end| bytes.get(start_offset..end))
        .and_then(|head| std::str::from_utf8(head).ok());

    loop {
        let Some(rel) = bytes
            .get(pos..)
            .and_then(|rest| memchr::memchr(b'\n', rest))
        else {
            return Err(ParseError::MissingHeaderTerminator);
        };
        let lf = pos + rel;
        let mut raw = bytes.get(pos..lf).unwrap_or_default();
        if let [head @ .., b'\r'] = raw {
            raw = head;
        }
        pos = lf + 1;
        line_no += 1;
        if raw.len() > limits.max_line_len {
            return Err(ParseError::LineTooLong {
                line: line_no,
                len: raw.len(),
                limit: limits.max_line_len,
            });
        }
        let line_start = lf - rel;
        let checked = utf8_head.and_then(|head| {
            head.get(line_start - start_offset..line_start - start_offset + raw.len())
        });
        let text = check_line(raw, checked, line_no)?;

        if start_line.is_none() {
            if text.is_empty() {
                return Err(ParseError::InvalidStartLine {
                    reason: "empty start line",
                });
            }
            start_line = Some(text);
            continue;
        }

        if text.is_empty() {
            // End of the head.
            if let Some((name, value, line)) = current.take() {
                push_field(&mut fields, name, value, line, limits)?;
            }
            break;
        }

        if text.starts_with([' ', '\t']) {
            // Continuation line (folding).
            let Some((_, value, line)) = current.as_mut() else {
                return Err(ParseError::MalformedHeader {
                    line: line_no,
                    reason: "continuation line without a header",
                });
            };
            let piece = text.trim_matches([' ', '\t']);
            if !piece.is_empty() {
                let owned = value.to_mut();
                let trimmed_len = owned.trim_end_matches([' ', '\t']).len();
                owned.truncate(trimmed_len);
                if !owned.is_empty() {
                    owned.push(' ');
                }
                owned.push_str(piece);
                if owned.len() > limits.max_line_len {
                    return Err(ParseError::LineTooLong {
                        line: *line,
                        len: owned.len(),
                        limit: limits.max_line_len,
                    });
                }
            }
            continue;
        }

        if let Some((name, value, line)) = current.take() {
            push_field(&mut fields, name, value, line, limits)?;
        }
        let Some((name, value)) = grammar::split_once_byte(text, b':') else {
            return Err(ParseError::MalformedHeader {
                line: line_no,
                reason: "no colon after the header name",
            });
        };
        // HCOLON = *( SP / HTAB ) ":" SWS
        let name = grammar::trim_wsp_end(name);
        if !is_token(name) {
            return Err(ParseError::MalformedHeader {
                line: line_no,
                reason: "header name is not a token",
            });
        }
        current = Some((name, Cow::Borrowed(grammar::trim_wsp(value)), line_no));
    }

    let start_line = start_line.ok_or(ParseError::MissingHeaderTerminator)?;
    Ok(Head {
        start_line,
        fields,
        body_offset: pos,
    })
}

fn push_field<'a>(
    fields: &mut Vec<Field<'a>>,
    name: &'a str,
    value: Cow<'a, str>,
    line: usize,
    limits: &Limits,
) -> Result<(), ParseError> {
    if fields.len() >= limits.max_headers {
        return Err(ParseError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    let value = match value {
        Cow::Borrowed(v) => Cow::Borrowed(grammar::trim_wsp_end(v)),
        Cow::Owned(mut v) => {
            let len = v.trim_end_matches([' ', '\t']).len();
            v.truncate(len);
            Cow::Owned(v)
        }
    };
    fields.push(Field {
        name,
        known: Known::lookup(name),
        value,
        line,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_is_joined_with_one_space() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nSubject: one   \r\n   two\r\n\ttwo-b\r\nX:\r\n y\r\n\r\nbody";
        let head = scan_head(msg, &Limits::default()).unwrap();
        assert_eq!(head.fields[0].value, "one two two-b");
        assert_eq!(head.fields[1].value, "y");
        assert_eq!(&msg[head.body_offset..], b"body");
    }

    #[test]
    fn bare_lf_is_a_line_end_and_bare_cr_is_an_error() {
        let head = scan_head(b"OPTIONS sip:a@b SIP/2.0\nA: b\n\n", &Limits::default()).unwrap();
        assert_eq!(head.fields.len(), 1);
        let err = scan_head(
            b"OPTIONS sip:a@b SIP/2.0\r\nA: b\rC: d\r\n\r\n",
            &Limits::default(),
        );
        assert!(matches!(err, Err(ParseError::BareCr { line: 2 })));
    }

    #[test]
    fn head_end_is_found_with_either_line_end() {
        assert_eq!(find_head_end(b"A\r\nB\r\n\r\nxy", 0), Some(8));
        assert_eq!(find_head_end(b"A\nB\n\nxy", 0), Some(5));
        assert_eq!(find_head_end(b"A\r\nB\r\n", 0), None);
    }
}
