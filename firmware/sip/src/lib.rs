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
//!   timers A-K, RFC 6026 Accepted with L/M, CANCEL, ACK for non-2xx, per-source
//!   limits), sans-IO on a virtual clock.
//! - [`dialog`]: dialogs over transactions (the INVITE UA core): route sets, CSeq
//!   checks, 2xx retransmission and ACK, re-INVITE with 491 back-off, UPDATE,
//!   100rel/PRACK, forking, crossed BYEs (RFC 5407), sans-IO on a virtual clock.
//! - [`registrar`]: the registrar for local SIP phones (digest challenge, bindings
//!   with flows, expiry, lookup), MWI NOTIFY bodies and SIP MESSAGE relay, sans-IO.
//!   Limit: holds account passwords in memory (the digest server verifies against
//!   passwords, not HA1).
//! - [`session_timer`]: RFC 4028 session timers: `Session-Expires` / `Min-SE`, the
//!   UAS's negotiation (`422`, refresher selection), the UAC's proposal (its one retry
//!   after a `422`, the refresher taken from the `2xx`) and the per-dialog refresh /
//!   expiry timer, sans-IO; the firmware's `sip_endpoint::session` wires it to legs.
//! - [`trunk`]: registration to the SIP trunk (digest, refresh, backoff, failover
//!   across servers, primary probe, reachability), RFC 3263 SRV/A resolution as
//!   queries (no NAPTR), caller-ID rules with P-Asserted-Identity, DID routing,
//!   sans-IO.
//! - [`guard`]: abuse protection: failed-auth bans per source with escalation,
//!   scanner user agents, per-source transaction/dialog limits, toll restrictions by
//!   number class, sans-IO.
//! - [`transport`]: the IO edge: UDP, TCP and TLS listeners and connections (tokio,
//!   rustls with verified trunk certificates), connection reuse, CRLF keepalives,
//!   size, per-source rate and connection limits, rport/received (RFC 3581) and
//!   response routing, flows for phones behind NAT; whole messages in and out with
//!   their peer addresses.
#![forbid(unsafe_code)]

pub mod dialog;
pub mod digest;
pub mod guard;
pub mod message;
pub mod registrar;
pub mod session_timer;
pub mod transaction;
pub mod transport;
pub mod trunk;
