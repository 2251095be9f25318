//! SIP for `branchd` (issue 3).
//!
//! # Modules
//!
//! - [`message`]: bytes to [`rsip::SipMessage`] and back, with the checks rsip lacks
//!   (size and header limits, mandatory headers, Content-Length, CSeq/method
//!   agreement); the only way untrusted bytes become a message.
//! - [`digest`]: HTTP digest authentication (RFC 7616 / RFC 8760: MD5 and SHA-256,
//!   `qop=auth`) for the registrar (server side: nonces, expiry, replay) and the trunk
//!   (client side).
//! - [`transaction`]: RFC 3261 client and server transactions (INVITE and non-INVITE,
//!   timers A-K), sans-IO.
//! - [`dialog`]: dialogs over transactions: route sets, CSeq, re-INVITE, UPDATE,
//!   PRACK, crossed BYEs (RFC 5407), sans-IO.
//! - [`registrar`]: the registrar for local SIP phones (bindings, expiry, digest
//!   challenge), sans-IO.
//! - [`trunk`]: registration to the SIP trunk (refresh, backoff, failover across
//!   servers, RFC 3263 resolution), sans-IO.
//! - [`guard`]: abuse protection: failed-auth throttling and bans per source, scanner
//!   user agents, per-source transaction/dialog limits, toll restrictions.
//! - [`transport`]: the IO edge: UDP, TCP and TLS listeners and connections (tokio,
//!   rustls), rport (RFC 3581), keepalives, size limits; bytes in and out with their
//!   peer addresses.
#![forbid(unsafe_code)]

pub mod dialog;
pub mod digest;
pub mod message;
pub mod guard;
pub mod registrar;
pub mod transaction;
pub mod trunk;
pub mod transport;
