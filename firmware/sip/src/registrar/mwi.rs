//! Message-waiting indication (RFC 3842) for a registered phone.
//!
//! [`mwi_notify`] builds what an unsolicited `message-summary` NOTIFY carries for one
//! binding: the Request-URI (the binding's contact), the `To`, `Event`,
//! `Subscription-State` and `Content-Type` headers, and the
//! `application/simple-message-summary` body. The daemon sends it through the dialog
//! and transaction layers (which add Via, From with tag, Call-ID, CSeq, Max-Forwards)
//! along the binding's [`super::Flow`]. Phones that SUBSCRIBE get the same body inside
//! their subscription dialog.
//!
//! Body (RFC 3842 5.2), lines ending in CRLF:
//!
//! ```text
//! Messages-Waiting: yes
//! Message-Account: sip:201@branch.example
//! Voice-Message: 2/8 (1/0)
//! ```
//!
//! `Voice-Message: new/old (urgent new/urgent old)`; `Messages-Waiting` is `yes` when
//! there is at least one new message.

use rsip::headers::UntypedHeader;
use rsip::{Header, Uri};

use super::Binding;

/// Voicemail counts of one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageSummary {
    /// New (unheard) messages.
    pub new: u32,
    /// Old (heard, kept) messages.
    pub old: u32,
    /// New urgent messages (included in `new`).
    pub urgent_new: u32,
    /// Old urgent messages (included in `old`).
    pub urgent_old: u32,
}

/// The parts of an MWI NOTIFY for one binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MwiNotify {
    /// Request-URI: the binding's contact.
    pub request_uri: Uri,
    /// `To`, `Event`, `Subscription-State`, `Content-Type`.
    pub headers: Vec<Header>,
    /// The `application/simple-message-summary` body.
    pub body: Vec<u8>,
}

/// The RFC 3842 body for `account` (an AOR such as `sip:201@branch.example`).
pub fn message_summary_body(account: &str, summary: &MessageSummary) -> String {
    format!(
        "Messages-Waiting: {}\r\nMessage-Account: {}\r\nVoice-Message: {}/{} ({}/{})\r\n",
        if summary.new > 0 { "yes" } else { "no" },
        account,
        summary.new,
        summary.old,
        summary.urgent_new.min(summary.new),
        summary.urgent_old.min(summary.old),
    )
}

/// The NOTIFY parts for `binding` of `extension` in `realm`.
pub fn mwi_notify(
    binding: &Binding,
    extension: &str,
    realm: &str,
    summary: &MessageSummary,
) -> MwiNotify {
    let aor = format!("sip:{extension}@{realm}");
    let body = message_summary_body(&aor, summary).into_bytes();
    MwiNotify {
        request_uri: binding.contact.uri.clone(),
        headers: vec![
            Header::To(rsip::headers::To::new(format!("<{aor}>"))),
            Header::Event(rsip::headers::Event::new("message-summary")),
            Header::SubscriptionState(rsip::headers::SubscriptionState::new("active")),
            Header::ContentType(rsip::headers::ContentType::new(
                "application/simple-message-summary",
            )),
        ],
        body,
    }
}
