//! `[telephony] echo_test_code`: the number a phone dials for the echo test
//! ([`crate::call`]'s `echo` module: the caller hears themselves half a second late).
//!
//! ```toml
//! [telephony]
//! echo_test_code = "*43"   # the default; "" turns the echo test off
//! ```
//!
//! 1 to 8 of `0-9 * #`. A phone's dialled digits must match at most one thing, so the
//! code may not be a prefix of (or start with) an extension, a conference room, the
//! outside-line prefix, a voicemail code, a pickup code or a call-center feature code.
//! When the config does not set the code and the default `*43` clashes with a code it
//! does set (say `[voicemail] own_code = "*4"`), the echo test is left off instead, so
//! a config written before the echo test existed loads unchanged.

use toml::Spanned;

use super::{
    CallCenterConfig, ConferenceRoomConfig, Ctx, ExtensionConfig, SipAccountConfig,
    TelephonyConfig, VoicemailConfig,
};
use crate::acd::codes::Parsed;
use crate::call::{DIRECTED_PICKUP, GROUP_PICKUP};
use crate::error::Result;

/// The echo test code when the config does not set one (Asterisk's and Grandstream's).
pub const DEFAULT_ECHO_TEST_CODE: &str = "*43";

/// What the code is checked against.
pub(super) struct EchoContext<'a> {
    pub telephony: &'a TelephonyConfig,
    pub extensions: &'a [ExtensionConfig],
    pub sip_accounts: &'a [SipAccountConfig],
    pub call_center: &'a CallCenterConfig,
    pub voicemail: &'a VoicemailConfig,
    pub rooms: &'a [ConferenceRoomConfig],
}

impl Ctx<'_> {
    /// `telephony.echo_test_code`: `None` when turned off (`""`).
    pub(super) fn echo_test_code(
        &self,
        raw: Option<Spanned<String>>,
        with: EchoContext<'_>,
    ) -> Result<Option<String>> {
        const FIELD: &str = "telephony.echo_test_code";
        let configured = raw.is_some();
        let (span, code) = match raw {
            Some(v) => (v.span(), v.into_inner()),
            None => (0..0, DEFAULT_ECHO_TEST_CODE.to_owned()),
        };
        if code.is_empty() {
            return Ok(None);
        }
        if code.len() > 8
            || !code
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
        {
            return Err(self.invalid(
                span,
                FIELD,
                format!("{code:?} is invalid: must be 1 to 8 of 0-9, * and # (\"\" turns the echo test off)"),
            ));
        }
        match clash(&code, &with) {
            None => Ok(Some(code)),
            // The default gives way to a code or number the config sets, so a config
            // that loaded before the echo test existed still loads.
            Some(_) if !configured => Ok(None),
            Some(what) => Err(self.invalid(
                span,
                FIELD,
                format!("{code:?} clashes with {what} (one is a prefix of the other)"),
            )),
        }
    }
}

/// What `code` clashes with, if anything.
fn clash(code: &str, with: &EchoContext<'_>) -> Option<String> {
    let prefixed = |other: &str| code.starts_with(other) || other.starts_with(code);
    if !matches!(
        with.call_center.feature_codes.parse(code),
        Ok(Parsed::NotACode)
    ) {
        return Some("a call center feature code".to_owned());
    }
    let vm = &with.voicemail.codes;
    for (name, other) in [
        ("voicemail.own_code", vm.own.as_str()),
        ("voicemail.any_code", vm.any.as_str()),
        ("the group pickup code", GROUP_PICKUP),
        ("the directed pickup code", DIRECTED_PICKUP),
    ] {
        if prefixed(other) {
            return Some(format!("{name} {other:?}"));
        }
    }
    if let Some(prefix) = &with.telephony.outside_line_prefix {
        if prefixed(prefix.as_str()) {
            return Some(format!("the outside line prefix {:?}", prefix.as_str()));
        }
    }
    let numbers = with
        .extensions
        .iter()
        .map(|e| ("extension", e.number.as_str()))
        .chain(
            with.sip_accounts
                .iter()
                .map(|a| ("extension", a.extension.as_str())),
        )
        .chain(
            with.rooms
                .iter()
                .map(|r| ("conference room", r.number.as_str())),
        );
    for (what, number) in numbers {
        if prefixed(number) {
            return Some(format!("{what} {number}"));
        }
    }
    None
}
