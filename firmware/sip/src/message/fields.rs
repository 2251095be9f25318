//! Accessors for the fields the transaction and dialog layers key on.
//!
//! They read rsip's stored header text with this module's own grammar readers rather
//! than rsip's typed headers, which fail on legal linear whitespace (`branch = x`) and
//! were not written for hostile input. None of them can panic.

use rsip::prelude::{HasHeaders, UntypedHeader};
use rsip::{Header, SipMessage};

use super::grammar;

/// Why a field could not be read from a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The header is absent.
    #[error("missing {header} header")]
    Missing {
        /// Canonical header name.
        header: &'static str,
    },
    /// The header is present but does not follow its grammar.
    #[error("malformed {header} header: {reason}")]
    Malformed {
        /// Canonical header name.
        header: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The top Via has no `branch` parameter.
    #[error("the top Via header has no branch parameter")]
    MissingBranch,
    /// The CSeq method is not one rsip can represent.
    #[error("CSeq method {method:?} is not supported")]
    UnknownMethod {
        /// The method as written.
        method: String,
    },
}

fn first<'a>(msg: &'a SipMessage, pick: impl Fn(&'a Header) -> Option<&'a str>) -> Option<&'a str> {
    msg.headers().iter().find_map(pick)
}

/// The `branch` parameter of the topmost Via (the first value of the first Via header).
pub fn top_via_branch(msg: &SipMessage) -> Result<&str, FieldError> {
    const H: &str = "Via";
    let via = first(msg, |h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    })
    .ok_or(FieldError::Missing { header: H })?;
    let malformed = |reason| FieldError::Malformed { header: H, reason };
    let parts =
        grammar::split_top_level(via, b',').ok_or(malformed("unterminated quoted string"))?;
    let top = parts.first().copied().unwrap_or_default();
    let parm = grammar::via_parm(top).map_err(malformed)?;
    match grammar::find_param(&parm.params, "branch") {
        Some(Some(branch)) => Ok(branch),
        Some(None) => Err(malformed("branch without a value")),
        None => Err(FieldError::MissingBranch),
    }
}

/// The CSeq number and method.
pub fn cseq(msg: &SipMessage) -> Result<(u32, rsip::Method), FieldError> {
    const H: &str = "CSeq";
    let value = first(msg, |h| match h {
        Header::CSeq(v) => Some(v.value()),
        _ => None,
    })
    .ok_or(FieldError::Missing { header: H })?;
    let (seq, method) =
        grammar::cseq(value).map_err(|reason| FieldError::Malformed { header: H, reason })?;
    let method = super::method_from_token(method).ok_or_else(|| FieldError::UnknownMethod {
        method: method.to_owned(),
    })?;
    Ok((seq, method))
}

/// The Call-ID (non-empty, without whitespace).
pub fn call_id(msg: &SipMessage) -> Result<&str, FieldError> {
    const H: &str = "Call-ID";
    let value = first(msg, |h| match h {
        Header::CallId(v) => Some(v.value()),
        _ => None,
    })
    .ok_or(FieldError::Missing { header: H })?
    .trim();
    if value.is_empty() || grammar::has_wsp(value) {
        return Err(FieldError::Malformed {
            header: H,
            reason: "empty or contains whitespace",
        });
    }
    Ok(value)
}

fn tag_of<'a>(value: &'a str, header: &'static str) -> Result<Option<&'a str>, FieldError> {
    let malformed = |reason| FieldError::Malformed { header, reason };
    let addr = grammar::name_addr(value).map_err(malformed)?;
    match grammar::find_param(&addr.params, "tag") {
        Some(Some(tag)) => Ok(Some(tag)),
        Some(None) => Err(malformed("tag without a value")),
        None => Ok(None),
    }
}

/// The From tag; `Ok(None)` when the From header has none (RFC 2543 peers).
pub fn from_tag(msg: &SipMessage) -> Result<Option<&str>, FieldError> {
    const H: &str = "From";
    let value = first(msg, |h| match h {
        Header::From(v) => Some(v.value()),
        _ => None,
    })
    .ok_or(FieldError::Missing { header: H })?;
    tag_of(value, H)
}

/// The To tag; `Ok(None)` outside a dialog (an initial request, a 100 Trying).
pub fn to_tag(msg: &SipMessage) -> Result<Option<&str>, FieldError> {
    const H: &str = "To";
    let value = first(msg, |h| match h {
        Header::To(v) => Some(v.value()),
        _ => None,
    })
    .ok_or(FieldError::Missing { header: H })?;
    tag_of(value, H)
}

/// The fields RFC 3261 17.1.3 / 17.2.3 match transactions on, read in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionFields<'a> {
    /// Top Via `branch`.
    pub branch: &'a str,
    /// The request method, or for a response the CSeq method.
    pub method: rsip::Method,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method (differs from `method` only for a request whose CSeq does not
    /// match, which [`super::parse`] refuses).
    pub cseq_method: rsip::Method,
}

/// Reads [`TransactionFields`] from a message.
pub fn transaction_fields(msg: &SipMessage) -> Result<TransactionFields<'_>, FieldError> {
    let branch = top_via_branch(msg)?;
    let (cseq, cseq_method) = cseq(msg)?;
    let call_id = call_id(msg)?;
    let method = match msg {
        SipMessage::Request(r) => r.method,
        SipMessage::Response(_) => cseq_method,
    };
    Ok(TransactionFields {
        branch,
        method,
        call_id,
        cseq,
        cseq_method,
    })
}
