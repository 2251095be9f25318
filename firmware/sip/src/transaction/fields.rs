//! Reading the few header fields the transaction and dialog layers need out of an
//! [`rsip`] message, and building the messages RFC 3261 makes a transaction layer
//! produce itself (responses, the ACK for a non-2xx final response, CANCEL).
//!
//! Every reader returns an [`Error`] instead of panicking: a message missing a header or
//! carrying one that does not follow its grammar is refused and changes nothing.
//!
//! The readers on the path of every message (the top Via's branch and sent-by, CSeq,
//! the From and To tags) read rsip's stored header text with the message module's own
//! grammar (the one [`crate::message::parse`] already checked these headers with), not
//! with rsip's typed headers: rsip's tokenizer formats an error string for every
//! alternative it tries, which made a third of the cost of dispatching a new INVITE
//! (`benches/parse.rs`, `dispatch`). The typed readers ([`top_via`], [`from`], [`to`])
//! remain for building dialogs, where rsip's URI types are needed.

use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::{Header, Headers, Method};

use super::Error;
use crate::message::grammar;

/// RFC 3261 magic cookie that starts every branch of an RFC 3261 client.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// The topmost Via of a message (the first value of the first Via header, a Via header
/// line holding several comma-separated values is split).
pub fn top_via(headers: &Headers) -> Result<rsip::typed::Via, Error> {
    let via = headers
        .iter()
        .find_map(|h| match h {
            Header::Via(v) => Some(v),
            _ => None,
        })
        .ok_or(Error::MissingHeader { header: "Via" })?;
    let first = first_value(via.value());
    rsip::headers::Via::new(first)
        .typed()
        .map_err(|e| Error::InvalidHeader {
            header: "Via",
            reason: e.to_string(),
        })
}

/// The topmost Via's text (the first value of the first Via header).
pub fn top_via_text(headers: &Headers) -> Result<&str, Error> {
    headers
        .iter()
        .find_map(|h| match h {
            Header::Via(v) => Some(first_value(v.value())),
            _ => None,
        })
        .ok_or(Error::MissingHeader { header: "Via" })
}

/// The topmost Via's `branch` parameter, if it has one, and its sent-by (host and
/// optional port, lowercased): what transactions are matched on (RFC 3261 17.1.3,
/// 17.2.3).
pub fn top_via_key(headers: &Headers) -> Result<(Option<&str>, String), Error> {
    let invalid = |reason: &str| Error::InvalidHeader {
        header: "Via",
        reason: reason.to_owned(),
    };
    let via = grammar::via_parm(top_via_text(headers)?).map_err(invalid)?;
    let branch = match grammar::find_param(&via.params, "branch") {
        Some(Some(b)) => Some(b),
        Some(None) => return Err(invalid("branch without a value")),
        None => None,
    };
    Ok((branch, via.sent_by_key()))
}

/// The first comma-separated value of a header line (commas inside quotes or `<>` do not
/// split).
fn first_value(value: &str) -> &str {
    let mut quoted = false;
    let mut angle = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => return value[..i].trim(),
            _ => {}
        }
    }
    value.trim()
}

/// The branch parameter of a Via, if any.
pub fn branch(via: &rsip::typed::Via) -> Option<String> {
    via.branch().map(|b| b.to_string())
}

/// The CSeq header, typed.
pub fn cseq(headers: &Headers) -> Result<rsip::typed::CSeq, Error> {
    let value = headers
        .iter()
        .find_map(|h| match h {
            Header::CSeq(c) => Some(c.value()),
            _ => None,
        })
        .ok_or(Error::MissingHeader { header: "CSeq" })?;
    let invalid = |reason: &str| Error::InvalidHeader {
        header: "CSeq",
        reason: reason.to_owned(),
    };
    let (seq, method) = grammar::cseq(value).map_err(invalid)?;
    let method =
        crate::message::method_from_token(method).ok_or_else(|| invalid("unknown method"))?;
    Ok(rsip::typed::CSeq { seq, method })
}

/// The Call-ID value.
pub fn call_id(headers: &Headers) -> Result<String, Error> {
    headers
        .iter()
        .find_map(|h| match h {
            Header::CallId(c) => Some(c.value().trim().to_string()),
            _ => None,
        })
        .filter(|v| !v.is_empty())
        .ok_or(Error::MissingHeader { header: "Call-ID" })
}

/// The typed From header.
pub fn from(headers: &Headers) -> Result<rsip::typed::From, Error> {
    headers
        .iter()
        .find_map(|h| match h {
            Header::From(f) => Some(f),
            _ => None,
        })
        .ok_or(Error::MissingHeader { header: "From" })?
        .typed()
        .map_err(|e| Error::InvalidHeader {
            header: "From",
            reason: e.to_string(),
        })
}

/// The typed To header.
pub fn to(headers: &Headers) -> Result<rsip::typed::To, Error> {
    headers
        .iter()
        .find_map(|h| match h {
            Header::To(t) => Some(t),
            _ => None,
        })
        .ok_or(Error::MissingHeader { header: "To" })?
        .typed()
        .map_err(|e| Error::InvalidHeader {
            header: "To",
            reason: e.to_string(),
        })
}

/// The tag of the From header, if any.
pub fn from_tag(headers: &Headers) -> Result<Option<String>, Error> {
    let value = headers.iter().find_map(|h| match h {
        Header::From(f) => Some(f.value()),
        _ => None,
    });
    tag_of(value, "From")
}

/// The tag of the To header, if any.
pub fn to_tag(headers: &Headers) -> Result<Option<String>, Error> {
    let value = headers.iter().find_map(|h| match h {
        Header::To(t) => Some(t.value()),
        _ => None,
    });
    tag_of(value, "To")
}

/// The `tag` parameter of a From or To value.
fn tag_of(value: Option<&str>, header: &'static str) -> Result<Option<String>, Error> {
    let invalid = |reason: &str| Error::InvalidHeader {
        header,
        reason: reason.to_owned(),
    };
    let addr =
        grammar::name_addr(value.ok_or(Error::MissingHeader { header })?).map_err(invalid)?;
    match grammar::find_param(&addr.params, "tag") {
        Some(Some(tag)) => Ok(Some(tag.to_owned())),
        Some(None) => Err(invalid("tag without a value")),
        None => Ok(None),
    }
}

/// The value of an extension header (rsip keeps unknown headers as `Other`), matched
/// case-insensitively by name.
pub fn other<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| match h {
        Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.trim()),
        _ => None,
    })
}

/// The SIP response for `request` per RFC 3261 8.2.6.2: Via (all, in order), From, To
/// (with `to_tag` added when the request's To has none), Call-ID and CSeq copied;
/// Content-Length 0 (the caller adds a body and fixes the length).
pub fn response_for(
    request: &rsip::Request,
    status: rsip::StatusCode,
    to_tag: Option<&str>,
) -> rsip::Response {
    let mut headers = Headers::default();
    for h in request.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(t) => {
                let mut to = t.clone();
                if let Some(tag) = to_tag {
                    if let Ok(typed) = t.typed() {
                        if typed.tag().is_none() {
                            to = typed.with_tag(rsip::param::Tag::new(tag)).into();
                        }
                    }
                }
                headers.push(Header::To(to));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
        0u32,
    )));
    rsip::Response {
        status_code: status,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// What [`response_for`] reads of `request`: its method, Request-URI and the headers a
/// response copies (Via, From, To, Call-ID, CSeq), without the rest or the body. An
/// INVITE server transaction keeps this to answer 100 Trying.
pub fn response_skeleton(request: &rsip::Request) -> rsip::Request {
    let mut headers = Headers::default();
    for h in request.headers.iter() {
        if matches!(
            h,
            Header::Via(_) | Header::From(_) | Header::To(_) | Header::CallId(_) | Header::CSeq(_)
        ) {
            headers.push(h.clone());
        }
    }
    rsip::Request {
        method: request.method,
        uri: request.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The ACK for a non-2xx final response to `invite` (RFC 3261 17.1.1.3): same
/// Request-URI, Call-ID, From and CSeq number as the INVITE, the To of the response, only
/// the INVITE's top Via, and the INVITE's Route headers.
pub fn ack_for_non_2xx(
    invite: &rsip::Request,
    response: &rsip::Response,
) -> Result<rsip::Request, Error> {
    let via = rsip::headers::Via::new(top_via_text(&invite.headers)?);
    let seq = cseq(&invite.headers)?.seq;
    let to = response
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned()
        .ok_or(Error::MissingHeader { header: "To" })?;
    let mut headers = Headers::default();
    headers.push(Header::Via(via));
    for h in invite.headers.iter() {
        match h {
            Header::From(_) | Header::CallId(_) | Header::Route(_) => headers.push(h.clone()),
            _ => {}
        }
    }
    headers.push(to);
    headers.push(Header::CSeq(
        rsip::typed::CSeq {
            seq,
            method: Method::Ack,
        }
        .into(),
    ));
    headers.push(Header::MaxForwards(rsip::headers::MaxForwards::from(70u32)));
    headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
        0u32,
    )));
    Ok(rsip::Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    })
}

/// The CANCEL for `invite` (RFC 3261 9.1): same Request-URI, Call-ID, To, From and CSeq
/// number, only the INVITE's top Via (so the same branch), and the INVITE's Routes.
pub fn cancel_for(invite: &rsip::Request) -> Result<rsip::Request, Error> {
    let via = rsip::headers::Via::new(top_via_text(&invite.headers)?);
    let seq = cseq(&invite.headers)?.seq;
    let mut headers = Headers::default();
    headers.push(Header::Via(via));
    for h in invite.headers.iter() {
        match h {
            Header::From(_) | Header::To(_) | Header::CallId(_) | Header::Route(_) => {
                headers.push(h.clone())
            }
            _ => {}
        }
    }
    headers.push(Header::CSeq(
        rsip::typed::CSeq {
            seq,
            method: Method::Cancel,
        }
        .into(),
    ));
    headers.push(Header::MaxForwards(rsip::headers::MaxForwards::from(70u32)));
    headers.push(Header::ContentLength(rsip::headers::ContentLength::from(
        0u32,
    )));
    Ok(rsip::Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    })
}

/// A new attempt at `request` in a new transaction (RFC 3261 8.1.3.5, the retry after
/// a 401/407 or an RFC 4028 `422`): the same request with `branch` in its top Via and
/// the CSeq number one higher; Request-URI, Call-ID, From (with its tag), To and the
/// body stay. The caller then changes what made the first attempt fail.
pub fn retry_request(request: &rsip::Request, branch: &str) -> Result<rsip::Request, Error> {
    let old = cseq(&request.headers)?;
    // RFC 3261 8.1.1.5: CSeq numbers stay below 2**31.
    let seq = old
        .seq
        .checked_add(1)
        .filter(|s| *s < 1 << 31)
        .ok_or_else(|| Error::InvalidHeader {
            header: "CSeq",
            reason: format!("{} has no successor below 2**31", old.seq),
        })?;
    let mut via_done = false;
    let mut headers = Headers::default();
    for h in request.headers.iter() {
        match h {
            Header::Via(v) if !via_done => {
                via_done = true;
                headers.push(Header::Via(rsip::headers::Via::new(with_branch(
                    v.value(),
                    branch,
                ))));
            }
            Header::CSeq(_) => headers.push(Header::CSeq(
                rsip::typed::CSeq {
                    seq,
                    method: old.method,
                }
                .into(),
            )),
            other => headers.push(other.clone()),
        }
    }
    if !via_done {
        return Err(Error::MissingHeader { header: "Via" });
    }
    Ok(rsip::Request {
        method: request.method,
        uri: request.uri.clone(),
        version: request.version.clone(),
        headers,
        body: request.body.clone(),
    })
}

/// A Via header line with `branch` as the branch of its first value (replaced, or
/// added when it had none); further values are kept as they are.
fn with_branch(value: &str, branch: &str) -> String {
    let first = first_value(value);
    // `first` is a slice of `value`: its offset in it.
    let start = first.as_ptr() as usize - value.as_ptr() as usize;
    let rest = &value[start + first.len()..];
    let mut params: Vec<String> = first.split(';').map(str::to_owned).collect();
    let mut replaced = false;
    for p in params.iter_mut().skip(1) {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("branch") {
            *p = format!("branch={branch}");
            replaced = true;
        }
    }
    if !replaced {
        params.push(format!("branch={branch}"));
    }
    format!("{}{rest}", params.join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_splits_outside_quotes_and_brackets() {
        assert_eq!(first_value("a;b=1, c"), "a;b=1");
        assert_eq!(first_value("\"x, y\" <sip:a@b>, z"), "\"x, y\" <sip:a@b>");
        assert_eq!(first_value("<sip:a@b;x=1,2>;p"), "<sip:a@b;x=1,2>;p");
        assert_eq!(first_value(" only "), "only");
    }

    #[test]
    fn top_via_of_a_combined_line_is_its_first_value() {
        let mut headers = Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(
            "SIP/2.0/UDP a.example:5060;branch=z9hG4bKone, SIP/2.0/UDP b.example;branch=z9hG4bKtwo",
        )));
        let via = top_via(&headers).expect("via parses");
        assert_eq!(branch(&via).as_deref(), Some("z9hG4bKone"));
        assert_eq!(
            top_via_key(&headers).expect("via reads"),
            (Some("z9hG4bKone"), "a.example:5060".to_owned())
        );
    }

    #[test]
    fn the_key_readers_take_legal_whitespace_and_refuse_broken_values() {
        let mut headers = Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(
            "SIP / 2.0 / UDP Phone.Example:5062 ; rport ; branch = z9hG4bKx1",
        )));
        headers.push(Header::CSeq(rsip::headers::CSeq::new("0068   INVITE")));
        headers.push(Header::From(rsip::headers::From::new(
            "\"A, B\" <sip:a@b;tag=uri-param> ; tag = f1",
        )));
        headers.push(Header::To(rsip::headers::To::new("sip:b@c")));
        assert_eq!(
            top_via_key(&headers).expect("via"),
            (Some("z9hG4bKx1"), "phone.example:5062".to_owned())
        );
        assert_eq!(
            cseq(&headers).expect("cseq"),
            rsip::typed::CSeq {
                seq: 68,
                method: Method::Invite
            }
        );
        assert_eq!(from_tag(&headers).expect("from"), Some("f1".to_owned()));
        assert_eq!(to_tag(&headers).expect("to"), None);

        let broken = |via: &str, cseq_text: &str, from: &str| {
            let mut h = Headers::default();
            h.push(Header::Via(rsip::headers::Via::new(via)));
            h.push(Header::CSeq(rsip::headers::CSeq::new(cseq_text)));
            h.push(Header::From(rsip::headers::From::new(from)));
            h
        };
        let ok_via = "SIP/2.0/UDP a:1;branch=z9hG4bKa";
        for (h, header) in [
            (
                broken("SIP/3.0/UDP a:1;branch=z9hG4bKa", "1 INVITE", "<sip:a@b>"),
                "Via",
            ),
            (
                broken("SIP/2.0/UDP a:1;branch", "1 INVITE", "<sip:a@b>"),
                "Via",
            ),
            (broken("SIP/2.0/UDP", "1 INVITE", "<sip:a@b>"), "Via"),
            (broken(ok_via, "INVITE 1", "<sip:a@b>"), "CSeq"),
            (broken(ok_via, "2147483648 INVITE", "<sip:a@b>"), "CSeq"),
            (broken(ok_via, "1 FROBNICATE", "<sip:a@b>"), "CSeq"),
            (broken(ok_via, "1 INVITE", "<sip:a@b;tag=x"), "From"),
            (broken(ok_via, "1 INVITE", "<sip:a@b>;tag"), "From"),
        ] {
            let err = top_via_key(&h)
                .err()
                .or_else(|| cseq(&h).err())
                .or_else(|| from_tag(&h).err())
                .unwrap_or_else(|| panic!("{header} accepted: {h:?}"));
            assert!(
                matches!(err, Error::InvalidHeader { header: found, .. } if found == header),
                "{header}: {err:?}"
            );
        }
        assert_eq!(
            to_tag(&Headers::default()).unwrap_err(),
            Error::MissingHeader { header: "To" }
        );
    }

    #[test]
    fn missing_headers_are_errors() {
        let headers = Headers::default();
        assert_eq!(
            top_via(&headers).unwrap_err(),
            Error::MissingHeader { header: "Via" }
        );
        assert_eq!(
            cseq(&headers).unwrap_err(),
            Error::MissingHeader { header: "CSeq" }
        );
        assert_eq!(
            call_id(&headers).unwrap_err(),
            Error::MissingHeader { header: "Call-ID" }
        );
    }
    #[test]
    fn a_retry_has_a_new_branch_and_the_next_cseq_and_keeps_the_rest() {
        let text = "INVITE sip:b@example.com SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKold;rport\r\n\
            From: <sip:a@example.com>;tag=f1\r\nTo: <sip:b@example.com>\r\n\
            Call-ID: c1@x\r\nCSeq: 7 INVITE\r\nSession-Expires: 600\r\n\
            Content-Length: 3\r\n\r\nabc";
        let request = rsip::Request::try_from(text.as_bytes()).expect("parses");
        let retry = retry_request(&request, "z9hG4bKnew").expect("retry");
        assert_eq!(
            top_via_text(&retry.headers).expect("via"),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnew;rport"
        );
        assert_eq!(
            cseq(&retry.headers).expect("cseq"),
            rsip::typed::CSeq {
                seq: 8,
                method: Method::Invite
            }
        );
        assert_eq!(call_id(&retry.headers).expect("call-id"), "c1@x");
        assert_eq!(
            from_tag(&retry.headers).expect("from"),
            Some("f1".to_owned())
        );
        assert_eq!(other(&retry.headers, "Session-Expires"), Some("600"));
        assert_eq!(
            (retry.uri, retry.body),
            (request.uri.clone(), b"abc".to_vec())
        );
        // A Via without a branch gets one; a second value stays.
        assert_eq!(
            with_branch(
                "SIP/2.0/TCP h;rport, SIP/2.0/UDP p;branch=z9hG4bKp",
                "z9hG4bKn"
            ),
            "SIP/2.0/TCP h;rport;branch=z9hG4bKn, SIP/2.0/UDP p;branch=z9hG4bKp"
        );
        // No CSeq number left, or no Via: an error, nothing built.
        let mut last = request.clone();
        last.headers.retain(|h| !matches!(h, Header::CSeq(_)));
        last.headers
            .push(Header::CSeq(rsip::headers::CSeq::new("2147483647 INVITE")));
        assert!(matches!(
            retry_request(&last, "z9hG4bKn"),
            Err(Error::InvalidHeader { header: "CSeq", .. })
        ));
        let mut no_via = request;
        no_via.headers.retain(|h| !matches!(h, Header::Via(_)));
        assert_eq!(
            retry_request(&no_via, "z9hG4bKn").unwrap_err(),
            Error::MissingHeader { header: "Via" }
        );
    }
}
