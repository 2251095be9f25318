//! The registrar for the branch's SIP phones, sans-IO (issue 3, items 4 and 9).
//!
//! # Modules
//!
//! - this module: [`Registrar`]: accounts, bindings, REGISTER handling, expiry,
//!   lookup for routing calls to phones.
//! - [`mwi`]: RFC 3842 `message-summary` NOTIFY bodies and headers for a binding.
//! - [`relay`]: SIP MESSAGE relay between local phones (RFC 3428).
//! - `headers` (crate-private): header readers shared with the trunk (comma-split
//!   Contact lists, `*`, parameters, URI comparison) that rsip lacks.
//!
//! # REGISTER rules (RFC 3261 10.3, in this order)
//!
//! 1. Missing or unreadable To, Call-ID or CSeq: `400`. A To host outside
//!    [`RegistrarConfig::domains`] (when the list is not empty): `404`.
//! 2. No `Authorization`: `401` with one challenge per algorithm, SHA-256 first and
//!    MD5 last (RFC 8760). An expired nonce: `401` with `stale=true` (the phone retries
//!    silently; not counted as a failure). Any other failed check (wrong password,
//!    unknown username, replayed `nc`, foreign realm): `401` with a fresh challenge
//!    and [`AuthOutcome::Failed`], which the daemon feeds to
//!    [`crate::guard::Guard::record_auth_failure`]. Unknown users are challenged like
//!    known ones, so the registrar cannot be used to enumerate extensions.
//! 3. Authenticated as account A: a To user that is no account gives `404`; one that
//!    is another account's gives `403`.
//! 4. `Require` with any option: `420 Bad Extension` listing them in `Unsupported`.
//! 5. Contacts: `*` must stand alone with `Expires: 0` (else `400`) and removes every
//!    binding. Each other contact must be a `sip:`/`sips:` URI with valid `expires`
//!    and `q` parameters (else `400`). Its expiry is its `expires` parameter, else the
//!    `Expires` header, else [`RegistrarConfig::default_expires`]; a non-zero expiry
//!    below [`RegistrarConfig::min_expires`] fails the request with `423` and
//!    `Min-Expires`; one above [`RegistrarConfig::max_expires`] is lowered to it.
//! 6. Matching: a contact with `+sip.instance` matches the binding with the same
//!    instance and `reg-id` (RFC 5626 keys, so a phone whose IP changed replaces its
//!    old binding); others match by URI (scheme, user, host, port). For a match with
//!    the same Call-ID, a CSeq not above the stored one aborts the whole request with
//!    `500` (RFC 3261 10.3 step 7: out of order). Expiry 0 removes, else refreshes;
//!    an unmatched contact is added.
//! 7. More than [`RegistrarConfig::max_contacts`] bindings: with
//!    [`ContactOverflow::ReplaceOldest`] the oldest registrations go (not ones this
//!    request added), with [`ContactOverflow::Reject`] the request fails with `503`.
//! 8. Every check happens before anything changes: a failed request changes nothing.
//!    A successful one answers `200` listing every current binding with its
//!    remaining `expires` (and `q`, `+sip.instance`, `reg-id`), and queues
//!    [`BindingEvent`]s.
//!
//! A REGISTER without Contact is a query: `200` with the current bindings.
//!
//! Bindings remember the [`Flow`] the REGISTER came in on (transport, peer address,
//! connection id), so calls and NOTIFYs reach a phone behind NAT through the same
//! pinhole and, for TCP/TLS, the same connection.
//!
//! # Limits
//!
//! - Credentials: the crate's [`crate::digest::DigestServer`] verifies against the
//!   plaintext password, so [`Account`] holds it in memory. Storing only HA1 values
//!   needs a digest-server entry point that takes HA1 per algorithm.
//! - No `Path` (RFC 3327), no GRUU, no RFC 5626 flow-token routing beyond keeping
//!   `+sip.instance`/`reg-id` and the flow; no `Date` header (no wall clock here).
//! - One realm for every account.

pub(crate) mod headers;
pub mod mwi;
pub mod relay;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::{Header, Headers, Method, Request, Response, StatusCode, Transport, Uri};

use crate::digest::{Algorithm, AuthError, DigestServer, DigestServerConfig};
use headers as hdr;

/// Where a request came from, so later requests reach the phone the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Transport of the request.
    pub transport: Transport,
    /// Source address and port (after NAT).
    pub peer: SocketAddr,
    /// The transport layer's connection id for TCP/TLS.
    pub connection: Option<u64>,
}

/// A local SIP account.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Extension number (the To user phones register and callers dial).
    pub extension: String,
    /// Digest username (often the extension itself).
    pub username: String,
    /// Digest password (see the module's limits).
    pub password: String,
    /// Display name for relayed MESSAGEs.
    pub display_name: Option<String>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("extension", &self.extension)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("display_name", &self.display_name)
            .finish()
    }
}

/// What to do when an account would exceed its contact limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactOverflow {
    /// Remove the oldest registrations.
    ReplaceOldest,
    /// Refuse the REGISTER with 503.
    Reject,
}

/// Registrar settings.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Digest realm (and the domain of local AORs).
    pub realm: String,
    /// Hosts accepted in To (empty: any, which suits phones registering to the box's
    /// IP address).
    pub domains: Vec<String>,
    /// Expiry when the phone asks for none (seconds).
    pub default_expires: u32,
    /// Shortest expiry accepted (below: 423).
    pub min_expires: u32,
    /// Longest expiry granted (above: lowered).
    pub max_expires: u32,
    /// Bindings per account.
    pub max_contacts: usize,
    /// Policy past `max_contacts`.
    pub overflow: ContactOverflow,
    /// Nonce MAC key (random per boot).
    pub nonce_key: [u8; 32],
    /// Nonce lifetime.
    pub nonce_lifetime: Duration,
    /// The box's Via sent-by for requests it originates towards phones.
    pub sent_by: String,
    /// Largest MESSAGE body relayed (bytes).
    pub message_max_bytes: usize,
    /// Digest algorithms offered in challenges, most preferred first; a response
    /// computed with any other algorithm is refused (no downgrade to one the site
    /// turned off). Default SHA-256, then MD5.
    pub digest_algorithms: Vec<Algorithm>,
}

impl fmt::Debug for RegistrarConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrarConfig")
            .field("realm", &self.realm)
            .field("domains", &self.domains)
            .field("default_expires", &self.default_expires)
            .field("min_expires", &self.min_expires)
            .field("max_expires", &self.max_expires)
            .field("max_contacts", &self.max_contacts)
            .field("overflow", &self.overflow)
            .field("nonce_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl RegistrarConfig {
    /// Defaults: 3600 s default, 60 s minimum, 7200 s maximum, 5 contacts replacing
    /// the oldest, 5 minute nonces, 1300-byte MESSAGE bodies (RFC 3428 6).
    pub fn new(realm: impl Into<String>, nonce_key: [u8; 32], sent_by: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            domains: Vec::new(),
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            max_contacts: 5,
            overflow: ContactOverflow::ReplaceOldest,
            nonce_key,
            nonce_lifetime: Duration::from_secs(300),
            sent_by: sent_by.into(),
            message_max_bytes: 1300,
            digest_algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), RegistrarError> {
        let bad = |field| Err(RegistrarError::BadConfig { field });
        if self.realm.is_empty() || self.realm.contains(['"', '\r', '\n', ' ']) {
            return bad("realm");
        }
        if self.min_expires == 0 || self.min_expires > self.max_expires {
            return bad("min_expires");
        }
        if self.default_expires < self.min_expires || self.default_expires > self.max_expires {
            return bad("default_expires");
        }
        if self.max_contacts == 0 {
            return bad("max_contacts");
        }
        if self.digest_algorithms.is_empty() {
            return bad("digest_algorithms");
        }
        if self.nonce_lifetime.is_zero() {
            return bad("nonce_lifetime");
        }
        if self.sent_by.is_empty()
            || !self
                .sent_by
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return bad("sent_by");
        }
        Ok(())
    }
}

/// Errors of the registrar's own API (bad config or accounts; requests never error,
/// they get responses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrarError {
    /// A config field is out of range.
    #[error("registrar config: {field} is invalid")]
    BadConfig {
        /// The field.
        field: &'static str,
    },
    /// An account field is empty or has characters no SIP user part may carry.
    #[error("account {extension:?}: {field} is invalid")]
    BadAccount {
        /// The account's extension.
        extension: String,
        /// The field.
        field: &'static str,
    },
    /// Two accounts share an extension or a username.
    #[error("account {0:?} is defined twice (extension or username)")]
    Duplicate(String),
}

/// One registered contact of an account.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The Contact as registered (URI and parameters, `expires` removed).
    pub contact: rsip::typed::Contact,
    /// When it expires.
    pub expires_at: Instant,
    /// `q` in thousandths (1000 when absent).
    pub q: u16,
    /// Call-ID of the REGISTER that last touched it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// Where the REGISTER came from.
    pub flow: Flow,
    /// `+sip.instance`, if the phone sent one.
    pub instance: Option<String>,
    /// `reg-id`, if the phone sent one.
    pub reg_id: Option<u32>,
    /// The phone's User-Agent.
    pub user_agent: Option<String>,
    /// First registration of this binding.
    pub registered_at: Instant,
}

impl Binding {
    /// The contact URI (where requests for this binding go).
    pub fn uri(&self) -> &Uri {
        &self.contact.uri
    }

    /// Seconds left at `now` (rounded up).
    pub fn remaining(&self, now: Instant) -> u32 {
        let left = self.expires_at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        secs.min(u64::from(u32::MAX)) as u32
    }
}

/// Why a binding went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// The phone asked (expires=0 or `*`).
    Unregistered,
    /// Pushed out by a newer registration past the contact limit.
    Replaced,
    /// The account was removed.
    AccountRemoved,
}

/// A change of bindings, for the daemon (web page, presence, routing caches).
#[derive(Debug, Clone, PartialEq)]
pub enum BindingEvent {
    /// A new binding.
    Added {
        /// Extension.
        extension: String,
        /// The binding.
        binding: Binding,
    },
    /// A binding's expiry (or flow) was renewed.
    Refreshed {
        /// Extension.
        extension: String,
        /// The binding after the refresh.
        binding: Binding,
    },
    /// A binding was removed.
    Removed {
        /// Extension.
        extension: String,
        /// The binding.
        binding: Binding,
        /// Why.
        reason: RemovalReason,
    },
    /// A binding ran out.
    Expired {
        /// Extension.
        extension: String,
        /// The binding.
        binding: Binding,
    },
}

/// What authentication did, for the guard and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No credentials: challenged.
    Challenged,
    /// Credentials with an expired nonce: challenged with `stale=true`.
    Stale,
    /// Accepted.
    Succeeded {
        /// The account's extension.
        extension: String,
    },
    /// Refused: count it against the source.
    Failed {
        /// What was wrong.
        error: AuthError,
    },
}

/// The result of [`Registrar::handle_register`].
#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    /// The response to send.
    pub response: Response,
    /// What authentication did (`Succeeded` also for requests failing later checks).
    pub auth: AuthOutcome,
}

/// The result of [`Registrar::authenticate`] for non-REGISTER requests.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// The request is from this account.
    Authenticated {
        /// Extension.
        extension: String,
    },
    /// Answer with this response (401 challenge).
    Rejected {
        /// The response.
        response: Box<Response>,
        /// What happened.
        auth: AuthOutcome,
    },
}

/// The registrar (see the module doc for the rules).
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    digest: DigestServer,
    epoch: Instant,
    accounts: HashMap<String, Account>,
    /// username -> extension
    usernames: HashMap<String, String>,
    bindings: HashMap<String, Vec<Binding>>,
    events: VecDeque<BindingEvent>,
}

/// A refusal of a REGISTER, turned into a response.
struct Refusal {
    code: u16,
    reason: &'static str,
    extra: Vec<Header>,
}

impl Refusal {
    fn new(code: u16, reason: &'static str) -> Self {
        Refusal {
            code,
            reason,
            extra: Vec::new(),
        }
    }
}

fn user_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&b))
}

impl Registrar {
    /// A registrar with no accounts; `now` anchors the digest nonce clock.
    pub fn new(config: RegistrarConfig, now: Instant) -> Result<Self, RegistrarError> {
        config.validate()?;
        let mut digest_config = DigestServerConfig::new(config.realm.clone(), config.nonce_key);
        digest_config.nonce_lifetime_ms = config.nonce_lifetime.as_millis() as u64;
        digest_config.algorithms = config.digest_algorithms.clone();
        Ok(Self {
            digest: DigestServer::new(digest_config),
            config,
            epoch: now,
            accounts: HashMap::new(),
            usernames: HashMap::new(),
            bindings: HashMap::new(),
            events: VecDeque::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Replaces every account (from the store after a sync). Bindings of accounts that
    /// are gone are removed with [`RemovalReason::AccountRemoved`]. Invalid input
    /// changes nothing.
    pub fn set_accounts(&mut self, accounts: Vec<Account>) -> Result<(), RegistrarError> {
        let mut by_ext = HashMap::new();
        let mut by_user = HashMap::new();
        for a in accounts {
            for (field, value) in [("extension", &a.extension), ("username", &a.username)] {
                if !user_part_ok(value) {
                    return Err(RegistrarError::BadAccount {
                        extension: a.extension.clone(),
                        field,
                    });
                }
            }
            if a.password.is_empty() {
                return Err(RegistrarError::BadAccount {
                    extension: a.extension.clone(),
                    field: "password",
                });
            }
            if by_user
                .insert(a.username.clone(), a.extension.clone())
                .is_some()
            {
                return Err(RegistrarError::Duplicate(a.username.clone()));
            }
            let extension = a.extension.clone();
            if by_ext.insert(extension.clone(), a).is_some() {
                return Err(RegistrarError::Duplicate(extension));
            }
        }
        let gone: Vec<String> = self
            .bindings
            .keys()
            .filter(|ext| !by_ext.contains_key(*ext))
            .cloned()
            .collect();
        for ext in gone {
            for binding in self.bindings.remove(&ext).unwrap_or_default() {
                self.events.push_back(BindingEvent::Removed {
                    extension: ext.clone(),
                    binding,
                    reason: RemovalReason::AccountRemoved,
                });
            }
        }
        self.accounts = by_ext;
        self.usernames = by_user;
        Ok(())
    }

    /// The account with this extension.
    pub fn account(&self, extension: &str) -> Option<&Account> {
        self.accounts.get(extension)
    }

    /// Unexpired bindings of `extension`, best first (highest `q`, then the most
    /// recently registered).
    pub fn lookup(&self, now: Instant, extension: &str) -> Vec<&Binding> {
        let mut out: Vec<&Binding> = self
            .bindings
            .get(extension)
            .map(|v| v.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| b.q.cmp(&a.q).then(b.registered_at.cmp(&a.registered_at)));
        out
    }

    /// Number of bindings held (expired ones included until the next timeout).
    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<BindingEvent> {
        self.events.pop_front()
    }

    /// The earliest binding expiry.
    pub fn timeout(&self) -> Option<Instant> {
        self.bindings.values().flatten().map(|b| b.expires_at).min()
    }

    /// Removes bindings expired at `now`, emitting [`BindingEvent::Expired`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut exts: Vec<&String> = self.bindings.keys().collect();
        exts.sort();
        let exts: Vec<String> = exts.into_iter().cloned().collect();
        for ext in exts {
            let Some(list) = self.bindings.get_mut(&ext) else {
                continue;
            };
            let (expired, kept): (Vec<Binding>, Vec<Binding>) =
                list.drain(..).partition(|b| b.expires_at <= now);
            *list = kept;
            if list.is_empty() {
                self.bindings.remove(&ext);
            }
            for binding in expired {
                self.events.push_back(BindingEvent::Expired {
                    extension: ext.clone(),
                    binding,
                });
            }
        }
    }

    fn challenge_response(&mut self, now: Instant, request: &Request, stale: bool) -> Response {
        let now_ms = self.now_ms(now);
        let mut response = response_to(request, 401, "Unauthorized");
        for c in self.digest.challenges(now_ms, stale) {
            response.headers.push(Header::WwwAuthenticate(
                rsip::headers::WwwAuthenticate::new(c),
            ));
        }
        response
    }

    /// Checks a request's digest credentials (REGISTER, MESSAGE, INVITE from phones).
    pub fn authenticate(&mut self, now: Instant, request: &Request) -> Authentication {
        let authorization = request.headers.iter().find_map(|h| match h {
            Header::Authorization(a) => Some(a.value().to_owned()),
            _ => None,
        });
        let Some(authorization) = authorization else {
            return Authentication::Rejected {
                response: Box::new(self.challenge_response(now, request, false)),
                auth: AuthOutcome::Challenged,
            };
        };
        let now_ms = self.now_ms(now);
        let accounts = &self.accounts;
        let usernames = &self.usernames;
        let result = self.digest.verify(
            now_ms,
            &request.method.to_string(),
            &request.uri.to_string(),
            &authorization,
            |user| {
                usernames
                    .get(user)
                    .and_then(|ext| accounts.get(ext))
                    .map(|a| a.password.clone())
            },
        );
        match result {
            Ok(v) => match self.usernames.get(&v.username) {
                Some(ext) => Authentication::Authenticated {
                    extension: ext.clone(),
                },
                None => Authentication::Rejected {
                    response: Box::new(self.challenge_response(now, request, false)),
                    auth: AuthOutcome::Failed {
                        error: AuthError::UnknownUser {
                            username: v.username,
                        },
                    },
                },
            },
            Err(AuthError::StaleNonce) => Authentication::Rejected {
                response: Box::new(self.challenge_response(now, request, true)),
                auth: AuthOutcome::Stale,
            },
            Err(error) => Authentication::Rejected {
                response: Box::new(self.challenge_response(now, request, false)),
                auth: AuthOutcome::Failed { error },
            },
        }
    }

    /// Handles a REGISTER that came in on `flow` (see the module doc for the rules).
    pub fn handle_register(
        &mut self,
        now: Instant,
        request: &Request,
        flow: Flow,
    ) -> RegisterOutcome {
        if request.method != Method::Register {
            return RegisterOutcome {
                response: response_to(request, 405, "Method Not Allowed"),
                auth: AuthOutcome::Challenged,
            };
        }
        let basics = match self.basics(request) {
            Ok(b) => b,
            Err(r) => {
                return RegisterOutcome {
                    response: refusal_response(request, r),
                    auth: AuthOutcome::Challenged,
                }
            }
        };
        let extension = match self.authenticate(now, request) {
            Authentication::Authenticated { extension } => extension,
            Authentication::Rejected { response, auth } => {
                return RegisterOutcome {
                    response: *response,
                    auth,
                }
            }
        };
        let auth = AuthOutcome::Succeeded {
            extension: extension.clone(),
        };
        let response = match self.apply(now, request, flow, &extension, basics) {
            Ok(()) => self.ok_response(now, request, &extension),
            Err(r) => refusal_response(request, r),
        };
        RegisterOutcome { response, auth }
    }

    /// Step 1: To, Call-ID, CSeq.
    fn basics(&self, request: &Request) -> Result<Basics, Refusal> {
        let to = request
            .headers
            .iter()
            .find_map(|h| match h {
                Header::To(t) => Some(t.typed()),
                _ => None,
            })
            .and_then(Result::ok)
            .ok_or_else(|| Refusal::new(400, "Bad Request (To)"))?;
        let to_user = to
            .uri
            .user()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Refusal::new(400, "Bad Request (To without user)"))?
            .to_owned();
        if !self.config.domains.is_empty() {
            let host = to.uri.host_with_port.host.to_string();
            if !self
                .config
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&host))
            {
                return Err(Refusal::new(404, "Not Found (domain)"));
            }
        }
        let call_id = hdr::header_value(&request.headers, "Call-ID")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Refusal::new(400, "Bad Request (Call-ID)"))?
            .to_owned();
        let cseq = hdr::header_value(&request.headers, "CSeq")
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| Refusal::new(400, "Bad Request (CSeq)"))?;
        Ok(Basics {
            to_user,
            call_id,
            cseq,
        })
    }

    /// Steps 3-8 for an authenticated `extension`.
    fn apply(
        &mut self,
        now: Instant,
        request: &Request,
        flow: Flow,
        extension: &str,
        basics: Basics,
    ) -> Result<(), Refusal> {
        let account = &self.accounts[extension];
        if basics.to_user != account.extension && basics.to_user != account.username {
            let known = self.accounts.contains_key(&basics.to_user)
                || self.usernames.contains_key(&basics.to_user);
            return Err(if known {
                Refusal::new(403, "Forbidden")
            } else {
                Refusal::new(404, "Not Found")
            });
        }
        let required: Vec<String> = hdr::header_values(&request.headers, "Require")
            .into_iter()
            .flat_map(hdr::split_list)
            .map(str::to_owned)
            .collect();
        if !required.is_empty() {
            let mut r = Refusal::new(420, "Bad Extension");
            r.extra
                .push(Header::Unsupported(rsip::headers::Unsupported::new(
                    required.join(", "),
                )));
            return Err(r);
        }
        let header_expires = match hdr::header_value(&request.headers, "Expires") {
            None => None,
            Some(v) => Some(
                hdr::delta_seconds(v).ok_or_else(|| Refusal::new(400, "Bad Request (Expires)"))?,
            ),
        };
        let values = hdr::contact_values(&request.headers);
        if values.is_empty() {
            return Ok(());
        }
        let user_agent = hdr::header_value(&request.headers, "User-Agent").map(str::to_owned);
        let mut list = self.bindings.get(extension).cloned().unwrap_or_default();
        list.retain(|b| b.expires_at > now);
        let mut events = Vec::new();

        if values.iter().any(|v| v == "*") {
            if values.len() != 1 || header_expires != Some(0) {
                return Err(Refusal::new(
                    400,
                    "Bad Request (Contact: * needs Expires: 0)",
                ));
            }
            for b in &list {
                if b.call_id == basics.call_id && basics.cseq <= b.cseq {
                    return Err(out_of_order());
                }
            }
            for binding in list.drain(..) {
                events.push(BindingEvent::Removed {
                    extension: extension.to_owned(),
                    binding,
                    reason: RemovalReason::Unregistered,
                });
            }
        } else {
            let mut parsed = Vec::with_capacity(values.len());
            for v in &values {
                parsed.push(self.parse_contact(v, header_expires)?);
            }
            let mut added_now: Vec<usize> = Vec::new();
            for c in parsed {
                let existing = list.iter().position(|b| match (&c.instance, &b.instance) {
                    (Some(i), Some(j)) => i == j && c.reg_id == b.reg_id,
                    (None, None) => hdr::same_contact_uri(&c.contact.uri, &b.contact.uri),
                    _ => false,
                });
                match existing {
                    Some(i) => {
                        let b = &list[i];
                        if b.call_id == basics.call_id && basics.cseq <= b.cseq {
                            return Err(out_of_order());
                        }
                        if c.expires == 0 {
                            let binding = list.remove(i);
                            added_now.retain(|&a| a != i);
                            for a in added_now.iter_mut() {
                                if *a > i {
                                    *a -= 1;
                                }
                            }
                            events.push(BindingEvent::Removed {
                                extension: extension.to_owned(),
                                binding,
                                reason: RemovalReason::Unregistered,
                            });
                        } else {
                            let b = &mut list[i];
                            b.contact = c.contact;
                            b.expires_at = now + Duration::from_secs(u64::from(c.expires));
                            b.q = c.q;
                            b.call_id = basics.call_id.clone();
                            b.cseq = basics.cseq;
                            b.flow = flow;
                            b.user_agent = user_agent.clone();
                            events.push(BindingEvent::Refreshed {
                                extension: extension.to_owned(),
                                binding: b.clone(),
                            });
                        }
                    }
                    None if c.expires == 0 => {}
                    None => {
                        let binding = Binding {
                            contact: c.contact,
                            expires_at: now + Duration::from_secs(u64::from(c.expires)),
                            q: c.q,
                            call_id: basics.call_id.clone(),
                            cseq: basics.cseq,
                            flow,
                            instance: c.instance,
                            reg_id: c.reg_id,
                            user_agent: user_agent.clone(),
                            registered_at: now,
                        };
                        added_now.push(list.len());
                        list.push(binding.clone());
                        events.push(BindingEvent::Added {
                            extension: extension.to_owned(),
                            binding,
                        });
                    }
                }
            }
            if list.len() > self.config.max_contacts {
                match self.config.overflow {
                    ContactOverflow::Reject => {
                        return Err(Refusal::new(503, "Service Unavailable (too many contacts)"))
                    }
                    ContactOverflow::ReplaceOldest => {
                        // Oldest first among those not added by this request; if this
                        // request alone exceeds the limit, its first contacts go too.
                        let mut order: Vec<usize> = (0..list.len()).collect();
                        order.sort_by_key(|&i| (added_now.contains(&i), list[i].registered_at, i));
                        let excess = list.len() - self.config.max_contacts;
                        let mut victims: Vec<usize> = order.into_iter().take(excess).collect();
                        victims.sort_unstable_by(|a, b| b.cmp(a));
                        for i in victims {
                            let binding = list.remove(i);
                            events.retain(|e| !matches!(e, BindingEvent::Added { binding: b, .. } if *b == binding));
                            events.push(BindingEvent::Removed {
                                extension: extension.to_owned(),
                                binding,
                                reason: RemovalReason::Replaced,
                            });
                        }
                    }
                }
            }
        }
        if list.is_empty() {
            self.bindings.remove(extension);
        } else {
            self.bindings.insert(extension.to_owned(), list);
        }
        self.events.extend(events);
        Ok(())
    }

    fn parse_contact(
        &self,
        value: &str,
        header_expires: Option<u32>,
    ) -> Result<ParsedContact, Refusal> {
        let bad = || Refusal::new(400, "Bad Request (Contact)");
        let mut contact = hdr::parse_contact(value).ok_or_else(bad)?;
        let scheme = contact
            .uri
            .scheme
            .as_ref()
            .map(|s| s.to_string().to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("sip") | Some("sips")) {
            return Err(bad());
        }
        if contact.uri.host_with_port.host.to_string().is_empty() {
            return Err(bad());
        }
        let expires = match hdr::param_value(&contact.params, "expires") {
            Some(v) => hdr::delta_seconds(&v).ok_or_else(bad)?,
            None => header_expires.unwrap_or(self.config.default_expires),
        };
        if expires != 0 && expires < self.config.min_expires {
            let mut r = Refusal::new(423, "Interval Too Brief");
            r.extra
                .push(Header::MinExpires(rsip::headers::MinExpires::new(
                    self.config.min_expires.to_string(),
                )));
            return Err(r);
        }
        let expires = expires.min(self.config.max_expires);
        let q = match hdr::param_value(&contact.params, "q") {
            None => 1000,
            Some(v) => parse_q(&v).ok_or_else(bad)?,
        };
        let instance = hdr::param_value(&contact.params, "+sip.instance").filter(|i| !i.is_empty());
        let reg_id = match hdr::param_value(&contact.params, "reg-id") {
            None => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| bad())?),
        };
        contact
            .params
            .retain(|p| !matches!(p, rsip::Param::Expires(_)));
        Ok(ParsedContact {
            contact,
            expires,
            q,
            instance,
            reg_id,
        })
    }

    fn ok_response(&self, now: Instant, request: &Request, extension: &str) -> Response {
        let mut response = response_to(request, 200, "OK");
        for b in self.lookup(now, extension) {
            let mut value = format!("<{}>", b.contact.uri);
            for p in &b.contact.params {
                value.push_str(&p.to_string());
            }
            value.push_str(&format!(";expires={}", b.remaining(now)));
            response
                .headers
                .push(Header::Contact(rsip::headers::Contact::new(value)));
        }
        response
    }
}

struct Basics {
    to_user: String,
    call_id: String,
    cseq: u32,
}

struct ParsedContact {
    contact: rsip::typed::Contact,
    expires: u32,
    q: u16,
    instance: Option<String>,
    reg_id: Option<u32>,
}

fn out_of_order() -> Refusal {
    Refusal::new(500, "Server Internal Error (out-of-order REGISTER)")
}

/// `q` (RFC 3261 `qvalue`: `0`, `1`, `0.xyz`, `1.000`) in thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A response to `request` (RFC 3261 8.2.6.2): Via, From, Call-ID, CSeq copied; To
/// with a tag derived from Call-ID and CSeq (stable for retransmissions) when it had
/// none.
pub(crate) fn response_to(request: &Request, code: u16, reason: &str) -> Response {
    use sha2::Digest as _;
    let mut headers = Headers::default();
    for h in request.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(t) => {
                let value = t.value();
                let has_tag = value
                    .split(';')
                    .skip(1)
                    .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="));
                if has_tag {
                    headers.push(h.clone());
                } else {
                    let mut hash = sha2::Sha256::new();
                    hash.update(hdr::header_value(&request.headers, "Call-ID").unwrap_or(""));
                    hash.update(hdr::header_value(&request.headers, "CSeq").unwrap_or(""));
                    let tag = hex::encode(&hash.finalize()[..8]);
                    headers.push(Header::To(rsip::headers::To::new(format!(
                        "{value};tag={tag}"
                    ))));
                }
            }
            _ => {}
        }
    }
    let known = StatusCode::from(code);
    let status = if known.to_string() == format!("{code} {reason}") {
        known
    } else {
        StatusCode::Other(code, reason.to_owned())
    };
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    Response {
        status_code: status,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

fn refusal_response(request: &Request, r: Refusal) -> Response {
    let mut response = response_to(request, r.code, r.reason);
    let len = response
        .headers
        .iter()
        .position(|h| matches!(h, Header::ContentLength(_)));
    let mut all: Vec<Header> = response.headers.into_iter().collect();
    let at = len.unwrap_or(all.len());
    for (i, h) in r.extra.into_iter().enumerate() {
        all.insert(at + i, h);
    }
    response.headers = all.into();
    response
}
