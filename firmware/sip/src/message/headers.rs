//! Header names: compact forms, canonical spellings, and construction of rsip headers.

use rsip::headers::{self as h, UntypedHeader};
use rsip::Header;

/// Headers the message layer knows by name. The first group are those rsip has a
/// variant for; the second are common headers rsip files under `Header::Other`, kept
/// here so that their compact forms are expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Accept,
    AcceptEncoding,
    AcceptLanguage,
    AlertInfo,
    Allow,
    AuthenticationInfo,
    Authorization,
    CSeq,
    CallId,
    CallInfo,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLanguage,
    ContentLength,
    ContentType,
    Date,
    ErrorInfo,
    Event,
    Expires,
    From,
    InReplyTo,
    MaxForwards,
    MimeVersion,
    MinExpires,
    Organization,
    Priority,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RecordRoute,
    ReplyTo,
    Require,
    RetryAfter,
    Route,
    Server,
    Subject,
    SubscriptionState,
    Supported,
    Timestamp,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    // Not rsip variants; stored as `Header::Other` under their full name.
    ReferTo,
    ReferredBy,
    AllowEvents,
    SessionExpires,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    Identity,
    IdentityInfo,
}

/// Full names in canonical spelling (RFC 3261 20 and the extension RFCs).
const NAMES: &[(&str, Known)] = &[
    ("Via", Known::Via),
    ("From", Known::From),
    ("To", Known::To),
    ("Call-ID", Known::CallId),
    ("CSeq", Known::CSeq),
    ("Contact", Known::Contact),
    ("Max-Forwards", Known::MaxForwards),
    ("Content-Length", Known::ContentLength),
    ("Content-Type", Known::ContentType),
    ("Route", Known::Route),
    ("Record-Route", Known::RecordRoute),
    ("Accept", Known::Accept),
    ("Accept-Encoding", Known::AcceptEncoding),
    ("Accept-Language", Known::AcceptLanguage),
    ("Alert-Info", Known::AlertInfo),
    ("Allow", Known::Allow),
    ("Authentication-Info", Known::AuthenticationInfo),
    ("Authorization", Known::Authorization),
    ("Call-Info", Known::CallInfo),
    ("Content-Disposition", Known::ContentDisposition),
    ("Content-Encoding", Known::ContentEncoding),
    ("Content-Language", Known::ContentLanguage),
    ("Date", Known::Date),
    ("Error-Info", Known::ErrorInfo),
    ("Event", Known::Event),
    ("Expires", Known::Expires),
    ("In-Reply-To", Known::InReplyTo),
    ("MIME-Version", Known::MimeVersion),
    ("Min-Expires", Known::MinExpires),
    ("Organization", Known::Organization),
    ("Priority", Known::Priority),
    ("Proxy-Authenticate", Known::ProxyAuthenticate),
    ("Proxy-Authorization", Known::ProxyAuthorization),
    ("Proxy-Require", Known::ProxyRequire),
    ("Reply-To", Known::ReplyTo),
    ("Require", Known::Require),
    ("Retry-After", Known::RetryAfter),
    ("Server", Known::Server),
    ("Subject", Known::Subject),
    ("Subscription-State", Known::SubscriptionState),
    ("Supported", Known::Supported),
    ("Timestamp", Known::Timestamp),
    ("Unsupported", Known::Unsupported),
    ("User-Agent", Known::UserAgent),
    ("Warning", Known::Warning),
    ("WWW-Authenticate", Known::WwwAuthenticate),
    ("Refer-To", Known::ReferTo),
    ("Referred-By", Known::ReferredBy),
    ("Allow-Events", Known::AllowEvents),
    ("Session-Expires", Known::SessionExpires),
    ("Accept-Contact", Known::AcceptContact),
    ("Reject-Contact", Known::RejectContact),
    ("Request-Disposition", Known::RequestDisposition),
    ("Identity", Known::Identity),
    ("Identity-Info", Known::IdentityInfo),
];

/// Length of the longest name in [`NAMES`]; longer names are not known.
const LONGEST_NAME: usize = 19;

/// Compact forms (RFC 3261 7.3.3 and the IANA SIP header registry).
const COMPACT: &[(u8, Known)] = &[
    (b'v', Known::Via),
    (b'f', Known::From),
    (b't', Known::To),
    (b'i', Known::CallId),
    (b'm', Known::Contact),
    (b'l', Known::ContentLength),
    (b'c', Known::ContentType),
    (b'e', Known::ContentEncoding),
    (b's', Known::Subject),
    (b'k', Known::Supported),
    (b'o', Known::Event),
    (b'u', Known::AllowEvents),
    (b'r', Known::ReferTo),
    (b'b', Known::ReferredBy),
    (b'x', Known::SessionExpires),
    (b'a', Known::AcceptContact),
    (b'j', Known::RejectContact),
    (b'd', Known::RequestDisposition),
    (b'y', Known::Identity),
    (b'n', Known::IdentityInfo),
];

impl Known {
    /// Looks a header name up, case-insensitively, including compact forms.
    ///
    /// Called for every header of every message: the name is lowercased into a stack
    /// buffer and matched with one `match` (the compiler dispatches on length first)
    /// instead of comparing it with each entry of [`NAMES`] in turn.
    pub(crate) fn lookup(name: &str) -> Option<Known> {
        let bytes = name.as_bytes();
        if let [c] = bytes {
            let c = c.to_ascii_lowercase();
            return COMPACT
                .iter()
                .find(|(k, _)| *k == c)
                .map(|(_, known)| *known);
        }
        let mut buf = [0u8; LONGEST_NAME];
        let lower = buf.get_mut(..bytes.len())?;
        for (d, s) in lower.iter_mut().zip(bytes) {
            *d = s.to_ascii_lowercase();
        }
        use Known as K;
        Some(match &*lower {
            b"via" => K::Via,
            b"from" => K::From,
            b"to" => K::To,
            b"call-id" => K::CallId,
            b"cseq" => K::CSeq,
            b"contact" => K::Contact,
            b"max-forwards" => K::MaxForwards,
            b"content-length" => K::ContentLength,
            b"content-type" => K::ContentType,
            b"route" => K::Route,
            b"record-route" => K::RecordRoute,
            b"accept" => K::Accept,
            b"accept-encoding" => K::AcceptEncoding,
            b"accept-language" => K::AcceptLanguage,
            b"alert-info" => K::AlertInfo,
            b"allow" => K::Allow,
            b"authentication-info" => K::AuthenticationInfo,
            b"authorization" => K::Authorization,
            b"call-info" => K::CallInfo,
            b"content-disposition" => K::ContentDisposition,
            b"content-encoding" => K::ContentEncoding,
            b"content-language" => K::ContentLanguage,
            b"date" => K::Date,
            b"error-info" => K::ErrorInfo,
            b"event" => K::Event,
            b"expires" => K::Expires,
            b"in-reply-to" => K::InReplyTo,
            b"mime-version" => K::MimeVersion,
            b"min-expires" => K::MinExpires,
            b"organization" => K::Organization,
            b"priority" => K::Priority,
            b"proxy-authenticate" => K::ProxyAuthenticate,
            b"proxy-authorization" => K::ProxyAuthorization,
            b"proxy-require" => K::ProxyRequire,
            b"reply-to" => K::ReplyTo,
            b"require" => K::Require,
            b"retry-after" => K::RetryAfter,
            b"server" => K::Server,
            b"subject" => K::Subject,
            b"subscription-state" => K::SubscriptionState,
            b"supported" => K::Supported,
            b"timestamp" => K::Timestamp,
            b"unsupported" => K::Unsupported,
            b"user-agent" => K::UserAgent,
            b"warning" => K::Warning,
            b"www-authenticate" => K::WwwAuthenticate,
            b"refer-to" => K::ReferTo,
            b"referred-by" => K::ReferredBy,
            b"allow-events" => K::AllowEvents,
            b"session-expires" => K::SessionExpires,
            b"accept-contact" => K::AcceptContact,
            b"reject-contact" => K::RejectContact,
            b"request-disposition" => K::RequestDisposition,
            b"identity" => K::Identity,
            b"identity-info" => K::IdentityInfo,
            _ => return None,
        })
    }

    /// The canonical spelling of the header name.
    pub(crate) fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, known)| *known == self)
            .map_or("", |(n, _)| n)
    }
}

/// Builds the rsip header for a field. Known names become their rsip variant (or
/// `Other` under the canonical name); unknown names stay `Other` as written.
pub(crate) fn to_rsip(known: Option<Known>, name: &str, value: String) -> Header {
    let Some(known) = known else {
        return Header::Other(name.to_owned(), value);
    };
    match known {
        Known::Accept => Header::Accept(h::Accept::new(value)),
        Known::AcceptEncoding => Header::AcceptEncoding(h::AcceptEncoding::new(value)),
        Known::AcceptLanguage => Header::AcceptLanguage(h::AcceptLanguage::new(value)),
        Known::AlertInfo => Header::AlertInfo(h::AlertInfo::new(value)),
        Known::Allow => Header::Allow(h::Allow::new(value)),
        Known::AuthenticationInfo => Header::AuthenticationInfo(h::AuthenticationInfo::new(value)),
        Known::Authorization => Header::Authorization(h::Authorization::new(value)),
        Known::CSeq => Header::CSeq(h::CSeq::new(value)),
        Known::CallId => Header::CallId(h::CallId::new(value)),
        Known::CallInfo => Header::CallInfo(h::CallInfo::new(value)),
        Known::Contact => Header::Contact(h::Contact::new(value)),
        Known::ContentDisposition => Header::ContentDisposition(h::ContentDisposition::new(value)),
        Known::ContentEncoding => Header::ContentEncoding(h::ContentEncoding::new(value)),
        Known::ContentLanguage => Header::ContentLanguage(h::ContentLanguage::new(value)),
        Known::ContentLength => Header::ContentLength(h::ContentLength::new(value)),
        Known::ContentType => Header::ContentType(h::ContentType::new(value)),
        Known::Date => Header::Date(h::Date::new(value)),
        Known::ErrorInfo => Header::ErrorInfo(h::ErrorInfo::new(value)),
        Known::Event => Header::Event(h::Event::new(value)),
        Known::Expires => Header::Expires(h::Expires::new(value)),
        Known::From => Header::From(h::From::new(value)),
        Known::InReplyTo => Header::InReplyTo(h::InReplyTo::new(value)),
        Known::MaxForwards => Header::MaxForwards(h::MaxForwards::new(value)),
        Known::MimeVersion => Header::MimeVersion(h::MimeVersion::new(value)),
        Known::MinExpires => Header::MinExpires(h::MinExpires::new(value)),
        Known::Organization => Header::Organization(h::Organization::new(value)),
        Known::Priority => Header::Priority(h::Priority::new(value)),
        Known::ProxyAuthenticate => Header::ProxyAuthenticate(h::ProxyAuthenticate::new(value)),
        Known::ProxyAuthorization => Header::ProxyAuthorization(h::ProxyAuthorization::new(value)),
        Known::ProxyRequire => Header::ProxyRequire(h::ProxyRequire::new(value)),
        Known::RecordRoute => Header::RecordRoute(h::RecordRoute::new(value)),
        Known::ReplyTo => Header::ReplyTo(h::ReplyTo::new(value)),
        Known::Require => Header::Require(h::Require::new(value)),
        Known::RetryAfter => Header::RetryAfter(h::RetryAfter::new(value)),
        Known::Route => Header::Route(h::Route::new(value)),
        Known::Server => Header::Server(h::Server::new(value)),
        Known::Subject => Header::Subject(h::Subject::new(value)),
        Known::SubscriptionState => Header::SubscriptionState(h::SubscriptionState::new(value)),
        Known::Supported => Header::Supported(h::Supported::new(value)),
        Known::Timestamp => Header::Timestamp(h::Timestamp::new(value)),
        Known::To => Header::To(h::To::new(value)),
        Known::Unsupported => Header::Unsupported(h::Unsupported::new(value)),
        Known::UserAgent => Header::UserAgent(h::UserAgent::new(value)),
        Known::Via => Header::Via(h::Via::new(value)),
        Known::Warning => Header::Warning(h::Warning::new(value)),
        Known::WwwAuthenticate => Header::WwwAuthenticate(h::WwwAuthenticate::new(value)),
        Known::ReferTo
        | Known::ReferredBy
        | Known::AllowEvents
        | Known::SessionExpires
        | Known::AcceptContact
        | Known::RejectContact
        | Known::RequestDisposition
        | Known::Identity
        | Known::IdentityInfo => Header::Other(known.name().to_owned(), value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive_names() {
        assert_eq!(Known::lookup("i"), Some(Known::CallId));
        assert_eq!(Known::lookup("L"), Some(Known::ContentLength));
        assert_eq!(Known::lookup("MaX-fOrWaRdS"), Some(Known::MaxForwards));
        assert_eq!(Known::lookup("C%6Fntact"), None);
        assert_eq!(Known::lookup("q"), None);
        for (name, known) in NAMES {
            assert_eq!(known.name(), *name);
            assert_eq!(Known::lookup(name), Some(*known), "{name}");
            assert_eq!(Known::lookup(&name.to_ascii_uppercase()), Some(*known));
            assert_eq!(Known::lookup(&name.to_ascii_lowercase()), Some(*known));
            assert_eq!(Known::lookup(&format!("{name}x")), None);
            assert!(name.len() <= LONGEST_NAME);
        }
        assert_eq!(NAMES.iter().map(|(n, _)| n.len()).max(), Some(LONGEST_NAME));
    }
}
