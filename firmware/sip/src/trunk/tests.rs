//! Trunk registration on a virtual clock against a scripted registrar that uses the
//! crate's own digest server.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response};

use super::*;
use crate::digest::{DigestServer, DigestServerConfig};
use crate::registrar::headers as hdr;

const PASSWORD: &str = "s3cret-trunk";
const REALM: &str = "hq.example.net";

fn config(servers: &[&str]) -> TrunkConfig {
    TrunkConfig::new(
        servers.iter().map(|s| s.parse().unwrap()).collect(),
        REALM,
        "branch-berlin",
        PASSWORD,
        "sip:branch-berlin@198.51.100.2:5060",
        "198.51.100.2:5060",
    )
}

fn response(req: &Request, code: u16, extra: Vec<Header>) -> Response {
    let mut headers = rsip::Headers::default();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(t) => headers.push(Header::To(rsip::headers::To::new(format!(
                "{};tag=srv",
                t.value()
            )))),
            _ => {}
        }
    }
    for h in extra {
        headers.push(h);
    }
    Response {
        status_code: rsip::StatusCode::from(code),
        version: rsip::Version::V2,
        headers,
        body: vec![],
    }
}

fn value<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    hdr::header_value(&req.headers, name)
}

fn cseq(req: &Request) -> u32 {
    value(req, "CSeq")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A registrar at HQ: challenges, verifies with the real digest server, grants.
struct Registrar {
    digest: DigestServer,
    epoch: Instant,
    grant: u32,
}

impl Registrar {
    fn new(epoch: Instant) -> Self {
        Self {
            digest: DigestServer::new(DigestServerConfig::new(REALM, [7; 32])),
            epoch,
            grant: 300,
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        (now - self.epoch).as_millis() as u64
    }

    fn handle(&mut self, now: Instant, req: &Request) -> Response {
        let uri = req.uri.to_string();
        match value(req, "Authorization") {
            None => {
                let ch = self.digest.challenges(self.ms(now), false);
                let extra = ch
                    .into_iter()
                    .map(|c| Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(c)))
                    .collect();
                response(req, 401, extra)
            }
            Some(auth) => match self
                .digest
                .verify(self.ms(now), "REGISTER", &uri, auth, |u| {
                    (u == "branch-berlin").then(|| PASSWORD.to_owned())
                }) {
                Ok(_) => {
                    let contact = format!(
                        "<sip:branch-berlin@198.51.100.2:5060>;expires={}",
                        self.grant
                    );
                    let expires = if value(req, "Expires") == Some("0") {
                        0
                    } else {
                        self.grant
                    };
                    let mut extra = vec![];
                    if expires > 0 {
                        extra.push(Header::Contact(rsip::headers::Contact::new(contact)));
                    }
                    response(req, 200, extra)
                }
                Err(e) => {
                    let stale = e == crate::digest::AuthError::StaleNonce;
                    let ch = self.digest.challenges(self.ms(now), stale);
                    let extra = ch
                        .into_iter()
                        .map(|c| Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(c)))
                        .collect();
                    response(req, 401, extra)
                }
            },
        }
    }
}

fn events(t: &mut TrunkRegistration) -> Vec<TrunkEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

fn one(t: &mut TrunkRegistration) -> TrunkTransmit {
    let tx = t.poll_transmit().expect("a request");
    assert!(t.poll_transmit().is_none(), "only one request at a time");
    tx
}

#[test]
fn server_strings_parse() {
    let s: TrunkServer = "sip.Example.net:5080;transport=TCP".parse().unwrap();
    assert_eq!(
        s,
        TrunkServer {
            host: "sip.example.net".into(),
            port: Some(5080),
            transport: Transport::Tcp
        }
    );
    let s: TrunkServer = "[2001:db8::1];transport=tls".parse().unwrap();
    assert_eq!(
        (s.port, s.transport, s.ip().is_some()),
        (None, Transport::Tls, true)
    );
    assert_eq!(s.to_string(), "[2001:db8::1];transport=tls");
    for bad in [
        "",
        ":5060",
        "host:0",
        "host:99999",
        "host;transport=sctp",
        "ho st",
        "[zz]:5060",
        "host;foo",
    ] {
        assert!(bad.parse::<TrunkServer>().is_err(), "{bad}");
    }
}

#[test]
fn bad_configs_are_refused() {
    let now = Instant::now();
    let mut c = config(&[]);
    assert_eq!(
        TrunkRegistration::new(c.clone(), 1, now).unwrap_err(),
        TrunkConfigError::NoServer
    );
    c = config(&["192.0.2.1"]);
    c.username = "a b".into();
    assert!(matches!(
        c.validate(),
        Err(TrunkConfigError::BadText {
            field: "username",
            ..
        })
    ));
    c = config(&["192.0.2.1"]);
    c.contact = "not a uri".into();
    assert!(matches!(c.validate(), Err(TrunkConfigError::BadContact(_))));
    c = config(&["192.0.2.1"]);
    c.refresh_max = 1.0;
    assert!(matches!(
        c.validate(),
        Err(TrunkConfigError::BadRefresh { .. })
    ));
    c = config(&["192.0.2.1"]);
    c.expires = 0;
    assert!(matches!(
        c.validate(),
        Err(TrunkConfigError::BadExpires { .. })
    ));
    c = config(&["192.0.2.1"]);
    c.retry_max = Duration::from_secs(1);
    assert!(matches!(
        c.validate(),
        Err(TrunkConfigError::BadDuration { field: "retry_max" })
    ));
    c = config(&["192.0.2.1"]);
    c.password.clear();
    assert!(format!("{:?}", config(&["192.0.2.1"])).contains("<redacted>"));
    assert!(!format!("{:?}", config(&["192.0.2.1"])).contains(PASSWORD));
    assert!(matches!(
        c.validate(),
        Err(TrunkConfigError::BadText {
            field: "password",
            ..
        })
    ));
}

#[test]
fn registers_with_digest_and_refreshes_preemptively() {
    let t0 = Instant::now();
    let mut hq = Registrar::new(t0);
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 42, t0).unwrap();
    assert_eq!(t.state(), TrunkState::Unregistered);
    t.start(t0);
    let first = one(&mut t);
    let req = &first.request;
    assert_eq!(first.target.addr.to_string(), "192.0.2.10:5060");
    assert_eq!(req.method, Method::Register);
    assert_eq!(req.uri.to_string(), "sip:hq.example.net");
    assert_eq!(value(req, "Expires"), Some("600"));
    assert_eq!(
        value(req, "Contact"),
        Some("<sip:branch-berlin@198.51.100.2:5060>")
    );
    assert!(value(req, "Via")
        .unwrap()
        .starts_with("SIP/2.0/UDP 198.51.100.2:5060;branch=z9hG4bK"));
    assert!(value(req, "From")
        .unwrap()
        .starts_with("<sip:branch-berlin@hq.example.net>;tag="));
    assert_eq!(value(req, "To"), Some("<sip:branch-berlin@hq.example.net>"));
    assert!(value(req, "Allow").unwrap().contains("MESSAGE"));
    assert!(value(req, "User-Agent").unwrap().starts_with("Branchline/"));
    assert!(value(req, "Authorization").is_none());
    assert!(matches!(t.state(), TrunkState::Registering { server: 0 }));
    let call_id = value(req, "Call-ID").unwrap().to_owned();

    // 401 with SHA-256 and MD5: answered once, with SHA-256.
    assert!(t.handle_response(t0, &hq.handle(t0, req)));
    let second = one(&mut t);
    assert_eq!(cseq(&second.request), cseq(req) + 1);
    assert_eq!(value(&second.request, "Call-ID"), Some(call_id.as_str()));
    assert_ne!(second.branch, first.branch);
    assert!(value(&second.request, "Authorization")
        .unwrap()
        .contains("algorithm=SHA-256"));

    let ok = hq.handle(t0, &second.request);
    assert_eq!(ok.status_code.code(), 200);
    t.handle_response(t0, &ok);
    let until = t0 + Duration::from_secs(300);
    assert_eq!(t.state(), TrunkState::Registered { server: 0, until });
    assert_eq!(t.reachability(), Reachability::Reachable { since: t0 });
    assert_eq!(
        events(&mut t),
        vec![
            TrunkEvent::Registered {
                server: 0,
                target: first.target,
                until
            },
            TrunkEvent::Reachability(Reachability::Reachable { since: t0 })
        ]
    );
    // Refresh between 50% and 80% of the granted 300 s.
    let refresh = t.timeout().unwrap();
    assert!(
        refresh >= t0 + Duration::from_secs(150) && refresh <= t0 + Duration::from_secs(240),
        "{:?}",
        refresh - t0
    );
    t.handle_timeout(refresh - Duration::from_millis(1));
    assert!(t.poll_transmit().is_none());
    t.handle_timeout(refresh);
    let third = one(&mut t);
    assert_eq!(value(&third.request, "Call-ID"), Some(call_id.as_str()));
    assert_eq!(cseq(&third.request), cseq(&second.request) + 1);
    // Pre-emptive credentials under the same nonce with the next nc: accepted.
    assert!(value(&third.request, "Authorization")
        .unwrap()
        .contains("nc=00000002"));
    let ok = hq.handle(refresh, &third.request);
    assert_eq!(ok.status_code.code(), 200);
    t.handle_response(refresh, &ok);
    assert_eq!(
        t.state(),
        TrunkState::Registered {
            server: 0,
            until: refresh + Duration::from_secs(300)
        }
    );
    // Still reachable without a second event.
    assert_eq!(events(&mut t).len(), 1);
}

#[test]
fn wrong_password_backs_off_long_instead_of_looping() {
    let t0 = Instant::now();
    let mut hq = Registrar::new(t0);
    let mut c = config(&["192.0.2.10"]);
    c.password = "wrong".into();
    let mut t = TrunkRegistration::new(c, 1, t0).unwrap();
    t.start(t0);
    let mut now = t0;
    let mut registers = 0;
    let end = t0 + Duration::from_secs(6 * 3600);
    while now < end {
        while let Some(tx) = t.poll_transmit() {
            registers += 1;
            let r = hq.handle(now, &tx.request);
            assert_eq!(r.status_code.code(), 401);
            t.handle_response(now, &r);
        }
        now = t.timeout().unwrap();
        t.handle_timeout(now);
    }
    // Two REGISTERs (challenge + answer) per 15 minute backoff at most.
    assert!(registers <= 2 * (6 * 4 + 1), "{registers}");
    assert!(registers >= 2 * 6 * 2, "{registers}");
    let evs = events(&mut t);
    assert!(evs.contains(&TrunkEvent::Failed {
        server: 0,
        reason: FailureReason::AuthRejected(401)
    }));
    assert!(evs.iter().any(|e| matches!(e, TrunkEvent::Backoff { until, .. } if *until - t0 >= Duration::from_secs(900))));
    assert!(!t.reachability().is_reachable());
}

#[test]
fn stale_nonce_is_answered_once_more() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 5, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    let ch = |stale: bool| {
        Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(format!(
            "Digest realm=\"{REALM}\", nonce=\"n{stale}\", qop=\"auth\", algorithm=MD5{}",
            if stale { ", stale=true" } else { "" }
        )))
    };
    t.handle_response(t0, &response(&tx.request, 401, vec![ch(false)]));
    let tx = one(&mut t);
    t.handle_response(t0, &response(&tx.request, 401, vec![ch(true)]));
    let tx = one(&mut t);
    assert!(value(&tx.request, "Authorization")
        .unwrap()
        .contains("nonce=\"ntrue\""));
    // A second stale in a row is not answered again.
    t.handle_response(t0, &response(&tx.request, 401, vec![ch(true)]));
    assert!(t.poll_transmit().is_none());
    assert!(matches!(t.state(), TrunkState::Backoff { attempt: 1, .. }));
}

#[test]
fn proxy_challenge_is_answered_with_proxy_authorization() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 5, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    let ch = Header::ProxyAuthenticate(rsip::headers::ProxyAuthenticate::new(format!(
        "Digest realm=\"{REALM}\", nonce=\"abc\", qop=\"auth\""
    )));
    t.handle_response(t0, &response(&tx.request, 407, vec![ch]));
    let tx = one(&mut t);
    assert!(value(&tx.request, "Proxy-Authorization").is_some());
    assert!(value(&tx.request, "Authorization").is_none());
}

#[test]
fn interval_too_brief_raises_expires() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 5, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    let min = |v: &str| Header::MinExpires(rsip::headers::MinExpires::new(v));
    t.handle_response(t0, &response(&tx.request, 423, vec![min("1800")]));
    let tx = one(&mut t);
    assert_eq!(value(&tx.request, "Expires"), Some("1800"));
    assert_eq!(t.requested_expires(), 1800);
    // A Min-Expires that is not higher cannot be met: the attempt fails.
    t.handle_response(t0, &response(&tx.request, 423, vec![min("1800")]));
    assert!(t.poll_transmit().is_none());
    assert!(events(&mut t).contains(&TrunkEvent::Failed {
        server: 0,
        reason: FailureReason::Rejected(423)
    }));
}

#[test]
fn failover_to_secondary_then_back_to_primary() {
    let t0 = Instant::now();
    let mut c = config(&["192.0.2.10", "192.0.2.20"]);
    c.probe_interval = Duration::from_secs(60);
    let mut t = TrunkRegistration::new(c, 9, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    assert_eq!(tx.target.addr.to_string(), "192.0.2.10:5060");
    // The primary does not answer.
    t.handle_failure(t0, &tx.branch, TransportFailure::Timeout);
    let tx = one(&mut t);
    assert_eq!(tx.target.addr.to_string(), "192.0.2.20:5060");
    let secondary_call_id = value(&tx.request, "Call-ID").unwrap().to_owned();
    let now = t0 + Duration::from_secs(32);
    t.handle_response(now, &response(&tx.request, 200, vec![]));
    assert!(matches!(
        t.state(),
        TrunkState::Registered { server: 1, .. }
    ));
    assert!(t.reachability().is_reachable());
    // Probe the primary within 45-60 s.
    let probe_at = t.timeout().unwrap();
    assert!(probe_at >= now + Duration::from_secs(45) && probe_at <= now + Duration::from_secs(60));
    t.handle_timeout(probe_at);
    let probe = one(&mut t);
    assert_eq!(probe.request.method, Method::Options);
    assert_eq!(probe.target.addr.to_string(), "192.0.2.10:5060");
    // Still down: 503. The binding with the secondary is kept.
    t.handle_response(probe_at, &response(&probe.request, 503, vec![]));
    assert!(t.poll_transmit().is_none());
    assert!(matches!(
        t.state(),
        TrunkState::Registered { server: 1, .. }
    ));
    let probe_at = t.timeout().unwrap();
    t.handle_timeout(probe_at);
    let probe = one(&mut t);
    // Back (a 404 to OPTIONS still proves it is alive).
    t.handle_response(probe_at, &response(&probe.request, 404, vec![]));
    let reg = one(&mut t);
    assert_eq!(reg.request.method, Method::Register);
    assert_eq!(reg.target.addr.to_string(), "192.0.2.10:5060");
    assert_ne!(
        value(&reg.request, "Call-ID"),
        Some(secondary_call_id.as_str())
    );
    t.handle_response(probe_at, &response(&reg.request, 200, vec![]));
    assert!(matches!(
        t.state(),
        TrunkState::Registered { server: 0, .. }
    ));
    // Then the old binding is removed.
    let unreg = one(&mut t);
    assert_eq!(unreg.target.addr.to_string(), "192.0.2.20:5060");
    assert_eq!(value(&unreg.request, "Expires"), Some("0"));
    assert_eq!(
        value(&unreg.request, "Call-ID"),
        Some(secondary_call_id.as_str())
    );
    t.handle_response(probe_at, &response(&unreg.request, 200, vec![]));
    assert!(t.poll_transmit().is_none());
    // Reachable the whole time.
    assert_eq!(
        events(&mut t)
            .iter()
            .filter(|e| matches!(e, TrunkEvent::Reachability(_)))
            .count(),
        1
    );
}

#[test]
fn all_servers_failing_backs_off_exponentially_with_jitter() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10", "192.0.2.20"]), 3, t0).unwrap();
    t.start(t0);
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..9 {
        // Both servers answer 503 at once.
        for _ in 0..2 {
            let tx = one(&mut t);
            t.handle_response(now, &response(&tx.request, 503, vec![]));
        }
        let TrunkState::Backoff { next, .. } = t.state() else {
            panic!("{:?}", t.state())
        };
        delays.push((next - now).as_secs_f64());
        assert_eq!(t.timeout(), Some(next));
        now = next;
        t.handle_timeout(now);
    }
    for (i, d) in delays.iter().enumerate() {
        let full = (5.0 * 2f64.powi(i as i32)).min(300.0);
        assert!(
            *d >= full / 2.0 && *d <= full,
            "attempt {i}: {d} not in [{}, {full}]",
            full / 2.0
        );
    }
}

#[test]
fn retry_after_is_honoured() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 3, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    let ra = Header::RetryAfter(rsip::headers::RetryAfter::new("120 (maintenance)"));
    t.handle_response(t0, &response(&tx.request, 503, vec![ra]));
    let TrunkState::Backoff { next, .. } = t.state() else {
        panic!()
    };
    assert_eq!(next - t0, Duration::from_secs(120));
}

#[test]
fn silent_server_times_out_on_our_own_clock() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 3, t0).unwrap();
    t.start(t0);
    let _lost = one(&mut t);
    assert_eq!(t.timeout(), Some(t0 + Duration::from_secs(40)));
    t.handle_timeout(t0 + Duration::from_secs(40));
    assert!(events(&mut t).contains(&TrunkEvent::Failed {
        server: 0,
        reason: FailureReason::Timeout
    }));
    assert!(matches!(t.state(), TrunkState::Backoff { attempt: 1, .. }));
}

#[test]
fn refresh_failure_and_expiry_make_the_trunk_unreachable() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 3, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    t.handle_response(
        t0,
        &response(
            &tx.request,
            200,
            vec![Header::Expires(rsip::headers::Expires::new("100"))],
        ),
    );
    assert!(
        matches!(t.state(), TrunkState::Registered { until, .. } if until == t0 + Duration::from_secs(100))
    );
    events(&mut t);
    let at = t.timeout().unwrap();
    t.handle_timeout(at);
    let tx = one(&mut t);
    t.handle_failure(at, &tx.branch, TransportFailure::Transport);
    assert_eq!(t.reachability(), Reachability::Unreachable { since: at });
    assert!(
        events(&mut t).contains(&TrunkEvent::Reachability(Reachability::Unreachable {
            since: at
        }))
    );
}

/// Registers `t` with `hq` at `now` (challenge and answer); returns the target.
fn register_with(t: &mut TrunkRegistration, hq: &mut Registrar, now: Instant) -> Target {
    let tx = one(t);
    let r = hq.handle(now, &tx.request);
    t.handle_response(now, &r);
    if r.status_code.code() == 401 {
        let tx = one(t);
        let r = hq.handle(now, &tx.request);
        assert_eq!(r.status_code.code(), 200);
        t.handle_response(now, &r);
    }
    assert!(
        matches!(t.state(), TrunkState::Registered { .. }),
        "{:?}",
        t.state()
    );
    tx.target
}

fn keepalive_config() -> TrunkConfig {
    let mut c = config(&["192.0.2.10"]);
    c.keepalive_interval = Some(Duration::from_secs(30));
    c
}

#[test]
fn keepalive_options_go_to_the_registered_server_and_a_silent_one_is_registered_again() {
    let t0 = Instant::now();
    let mut hq = Registrar::new(t0);
    let mut t = TrunkRegistration::new(keepalive_config(), 9, t0).unwrap();
    t.start(t0);
    let target = register_with(&mut t, &mut hq, t0);
    events(&mut t);
    // The keepalive comes 30 s after the registration, long before the refresh.
    let k1 = t0 + Duration::from_secs(30);
    assert_eq!(t.timeout(), Some(k1));
    t.handle_timeout(k1);
    let ka = one(&mut t);
    assert_eq!(ka.request.method, Method::Options);
    assert_eq!(ka.target, target);
    assert_eq!(ka.request.uri.to_string(), "sip:hq.example.net");
    assert!(value(&ka.request, "Authorization").is_none());
    assert!(value(&ka.request, "Contact").is_none());
    // Any final answer below 500 is life (a registrar may not know OPTIONS: 405).
    t.handle_response(k1, &response(&ka.request, 405, vec![]));
    assert!(t.reachability().is_reachable());
    assert!(events(&mut t).is_empty());
    let k2 = k1 + Duration::from_secs(30);
    assert_eq!(t.timeout(), Some(k2));
    t.handle_timeout(k2);
    let ka = one(&mut t);
    assert_eq!(ka.request.method, Method::Options);
    // Silence: after the 8 s keepalive timeout (not the 40 s request timeout) the
    // binding is gone and the trunk unreachable.
    let dead = k2 + Duration::from_secs(8);
    assert_eq!(t.timeout(), Some(dead));
    t.handle_timeout(dead - Duration::from_millis(1));
    assert!(t.reachability().is_reachable());
    t.handle_timeout(dead);
    assert_eq!(t.reachability(), Reachability::Unreachable { since: dead });
    let evs = events(&mut t);
    assert!(evs.contains(&TrunkEvent::Failed {
        server: 0,
        reason: FailureReason::Timeout
    }));
    assert!(
        evs.contains(&TrunkEvent::Reachability(Reachability::Unreachable {
            since: dead
        }))
    );
    let TrunkState::Backoff { attempt: 1, next } = t.state() else {
        panic!("{:?}", t.state())
    };
    // First backoff: 5 s jittered down to at most half.
    assert!(next >= dead + Duration::from_millis(2500) && next <= dead + Duration::from_secs(5));
    // A late answer to the abandoned keepalive changes nothing.
    assert!(!t.handle_response(next, &response(&ka.request, 200, vec![])));
    // The registrar is back (restarted, its bindings lost): REGISTER again.
    t.handle_timeout(next);
    let back = register_with(&mut t, &mut hq, next);
    assert_eq!(back, target);
    assert_eq!(t.reachability(), Reachability::Reachable { since: next });
    assert_eq!(t.timeout(), Some(next + Duration::from_secs(30)));
}

#[test]
fn keepalive_server_error_or_transport_failure_drops_the_binding() {
    for fail in [Some(503u16), Some(500), None] {
        let t0 = Instant::now();
        let mut hq = Registrar::new(t0);
        let mut t = TrunkRegistration::new(keepalive_config(), 5, t0).unwrap();
        t.start(t0);
        register_with(&mut t, &mut hq, t0);
        let k = t.timeout().unwrap();
        t.handle_timeout(k);
        let ka = one(&mut t);
        assert_eq!(ka.request.method, Method::Options);
        match fail {
            Some(code) => {
                t.handle_response(k, &response(&ka.request, code, vec![]));
            }
            None => t.handle_failure(k, &ka.branch, TransportFailure::Transport),
        }
        assert!(!t.reachability().is_reachable(), "{fail:?}");
        assert!(matches!(t.state(), TrunkState::Backoff { .. }), "{fail:?}");
    }
}

#[test]
fn a_refresh_due_first_replaces_the_keepalive() {
    let t0 = Instant::now();
    let mut hq = Registrar::new(t0);
    hq.grant = 60;
    let mut c = keepalive_config();
    c.keepalive_interval = Some(Duration::from_secs(3600));
    let mut t = TrunkRegistration::new(c, 11, t0).unwrap();
    t.start(t0);
    register_with(&mut t, &mut hq, t0);
    let mut now = t0;
    for _ in 0..20 {
        now = t.timeout().unwrap();
        assert!(now < t0 + Duration::from_secs(3600));
        t.handle_timeout(now);
        let tx = one(&mut t);
        assert_eq!(
            tx.request.method,
            Method::Register,
            "no OPTIONS before the refresh"
        );
        let r = hq.handle(now, &tx.request);
        t.handle_response(now, &r);
        assert!(t.reachability().is_reachable());
    }
    assert!(now > t0 + Duration::from_secs(600));
}

#[test]
fn keepalive_settings_are_checked() {
    let mut c = keepalive_config();
    c.keepalive_interval = Some(Duration::ZERO);
    assert_eq!(
        c.validate(),
        Err(TrunkConfigError::BadDuration {
            field: "keepalive_interval"
        })
    );
    let mut c = keepalive_config();
    c.keepalive_timeout = Duration::ZERO;
    assert_eq!(
        c.validate(),
        Err(TrunkConfigError::BadDuration {
            field: "keepalive_timeout"
        })
    );
}

#[test]
fn stray_responses_are_ignored() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 3, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    let mut other = tx.request.clone();
    other.headers.retain(|h| !matches!(h, Header::Via(_)));
    other.headers.push(Header::Via(rsip::headers::Via::new(
        "SIP/2.0/UDP 198.51.100.2:5060;branch=z9hG4bKother",
    )));
    assert!(!t.handle_response(t0, &response(&other, 200, vec![])));
    t.handle_failure(t0, "z9hG4bKother", TransportFailure::Timeout);
    assert!(matches!(t.state(), TrunkState::Registering { server: 0 }));
    assert!(t.in_flight());
}

#[test]
fn dns_srv_resolution_feeds_the_targets() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["hq.example.net;transport=tcp"]), 3, t0).unwrap();
    t.start(t0);
    assert!(t.poll_transmit().is_none());
    let q = t.poll_dns_query().unwrap();
    assert_eq!(
        (q.name.as_str(), q.kind),
        ("_sip._tcp.hq.example.net", QueryKind::Srv)
    );
    t.handle_dns_answer(
        t0,
        q.id,
        DnsAnswer::Srv(vec![
            SrvRecord {
                priority: 10,
                weight: 1,
                port: 5070,
                target: "a.hq.example.net.".into(),
            },
            SrvRecord {
                priority: 20,
                weight: 1,
                port: 5070,
                target: "b.hq.example.net.".into(),
            },
        ]),
    );
    let q = t.poll_dns_query().unwrap();
    assert_eq!(
        (q.name.as_str(), q.kind),
        ("a.hq.example.net", QueryKind::Address)
    );
    // A late duplicate answer to the old query changes nothing.
    t.handle_dns_answer(t0, q.id - 1, DnsAnswer::NotFound);
    t.handle_dns_answer(
        t0,
        q.id,
        DnsAnswer::Addresses(vec!["192.0.2.31".parse().unwrap()]),
    );
    let q = t.poll_dns_query().unwrap();
    t.handle_dns_answer(
        t0,
        q.id,
        DnsAnswer::Addresses(vec!["192.0.2.32".parse().unwrap()]),
    );
    let tx = one(&mut t);
    assert_eq!(
        tx.target,
        Target {
            transport: Transport::Tcp,
            addr: "192.0.2.31:5070".parse().unwrap()
        }
    );
    assert!(value(&tx.request, "Via")
        .unwrap()
        .starts_with("SIP/2.0/TCP "));
    // The first SRV target fails at transport level: the second is tried.
    t.handle_failure(t0, &tx.branch, TransportFailure::Transport);
    let tx = one(&mut t);
    assert_eq!(tx.target.addr.to_string(), "192.0.2.32:5070");
}

#[test]
fn dns_failure_is_a_server_failure() {
    let t0 = Instant::now();
    let mut t =
        TrunkRegistration::new(config(&["hq.example.net:5060", "192.0.2.20"]), 3, t0).unwrap();
    t.start(t0);
    let q = t.poll_dns_query().unwrap();
    assert_eq!(q.kind, QueryKind::Address);
    t.handle_dns_answer(t0, q.id, DnsAnswer::Failed);
    assert!(events(&mut t).contains(&TrunkEvent::Failed {
        server: 0,
        reason: FailureReason::Dns
    }));
    assert_eq!(one(&mut t).target.addr.to_string(), "192.0.2.20:5060");
}

#[test]
fn shutdown_unregisters_after_the_request_in_flight() {
    let t0 = Instant::now();
    let mut hq = Registrar::new(t0);
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 3, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    t.handle_response(t0, &hq.handle(t0, &tx.request));
    // Shutdown while the authenticated REGISTER is in flight.
    let tx = one(&mut t);
    t.shutdown(t0);
    assert_eq!(t.state(), TrunkState::Unregistering);
    assert!(t.poll_transmit().is_none());
    t.handle_response(t0, &hq.handle(t0, &tx.request));
    let unreg = one(&mut t);
    assert_eq!(value(&unreg.request, "Expires"), Some("0"));
    assert_eq!(
        value(&unreg.request, "Contact"),
        Some("<sip:branch-berlin@198.51.100.2:5060>;expires=0")
    );
    let r = hq.handle(t0, &unreg.request);
    assert_eq!(r.status_code.code(), 200);
    t.handle_response(t0, &r);
    assert_eq!(t.state(), TrunkState::Unregistered);
    assert!(events(&mut t).contains(&TrunkEvent::Unregistered));
    assert_eq!(t.timeout(), None);
}

#[test]
fn shutdown_before_start_or_without_binding_is_immediate() {
    let t0 = Instant::now();
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 3, t0).unwrap();
    t.shutdown(t0);
    assert_eq!(events(&mut t), vec![TrunkEvent::Unregistered]);
    let mut t = TrunkRegistration::new(config(&["192.0.2.10"]), 3, t0).unwrap();
    t.start(t0);
    let tx = one(&mut t);
    t.handle_response(t0, &response(&tx.request, 503, vec![]));
    t.shutdown(t0);
    assert!(t.poll_transmit().is_none());
    assert_eq!(t.state(), TrunkState::Unregistered);
}

#[derive(Debug, Clone)]
enum Reply {
    Ok(u32),
    Challenge { stale: bool },
    Code(u16),
    Timeout,
    Silence,
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (0u32..4000).prop_map(Reply::Ok),
        any::<bool>().prop_map(|stale| Reply::Challenge { stale }),
        prop_oneof![
            Just(403u16),
            Just(404),
            Just(408),
            Just(423),
            Just(480),
            Just(500),
            Just(503),
            Just(603),
            Just(302),
            Just(100)
        ]
        .prop_map(Reply::Code),
        Just(Reply::Timeout),
        Just(Reply::Silence),
    ]
}

proptest! {
    /// Whatever the servers answer: a new request only once the previous one got its
    /// final response or failure (or the machine's own timeout passed), no burst of
    /// requests (no tight loop), a registered state only with an unexpired binding,
    /// and reachability agreeing with the state.
    #[test]
    fn one_request_in_flight_and_no_tight_loop(
        replies in proptest::collection::vec(reply(), 1..150),
        seed in any::<u64>(),
        two in any::<bool>(),
        keepalive in any::<bool>(),
    ) {
        let t0 = Instant::now();
        let servers: &[&str] = if two { &["192.0.2.10", "192.0.2.20"] } else { &["192.0.2.10"] };
        let mut c = config(servers);
        if keepalive {
            c.keepalive_interval = Some(Duration::from_secs(20));
        }
        // The shortest time after which the machine gives up on a silent request.
        let give_up = if keepalive { c.keepalive_timeout } else { c.request_timeout };
        let mut t = TrunkRegistration::new(c, seed, t0).unwrap();
        t.start(t0);
        let mut now = t0;
        let mut current: Option<TrunkTransmit> = None;
        // (sent at, finished) of the latest request.
        let mut last: Option<(Instant, bool)> = None;
        let mut sent_at: Vec<Instant> = Vec::new();
        for r in replies {
            let picked = t.poll_transmit();
            if let Some(tx) = picked {
                prop_assert!(t.poll_transmit().is_none(), "two requests queued");
                if let Some((at, finished)) = last {
                    prop_assert!(finished || now >= at + give_up, "second request while one is in flight");
                }
                last = Some((now, false));
                sent_at.push(now);
                current = Some(tx);
            } else if current.is_none() {
                let next = t.timeout();
                prop_assert!(next.is_some(), "idle with nothing scheduled in {:?}", t.state());
                if let Some(next) = next {
                    prop_assert!(next >= now);
                    now = next;
                    t.handle_timeout(now);
                }
                continue;
            }
            let Some(tx) = current.take() else { continue };
            let mut finished = true;
            match r {
                Reply::Ok(e) => {
                    let h = Header::Expires(rsip::headers::Expires::new(e.to_string()));
                    t.handle_response(now, &response(&tx.request, 200, vec![h]));
                }
                Reply::Challenge { stale } => {
                    let h = Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(format!(
                        "Digest realm=\"r\", nonce=\"{}\", qop=\"auth\"{}",
                        sent_at.len(),
                        if stale { ", stale=true" } else { "" }
                    )));
                    t.handle_response(now, &response(&tx.request, 401, vec![h]));
                }
                Reply::Code(c) => {
                    let h = Header::MinExpires(rsip::headers::MinExpires::new("3600"));
                    t.handle_response(now, &response(&tx.request, c, vec![h]));
                    if c == 100 {
                        finished = false;
                        current = Some(tx);
                    }
                }
                Reply::Timeout => t.handle_failure(now, &tx.branch, TransportFailure::Timeout),
                Reply::Silence => {
                    finished = false;
                    current = Some(tx);
                    if let Some(next) = t.timeout() {
                        now = now.max(next);
                        t.handle_timeout(now);
                    }
                }
            }
            if finished {
                if let Some(l) = last.as_mut() {
                    l.1 = true;
                }
            }
            match t.state() {
                TrunkState::Registered { until, .. } => {
                    prop_assert!(until > now);
                    prop_assert!(t.reachability().is_reachable());
                }
                _ => prop_assert!(!t.reachability().is_reachable()),
            }
        }
        // No tight loop: within any second at most 5 requests per server (first try,
        // digest answer, stale retry, two 423 retries) plus probe, switch and
        // un-REGISTER.
        for (i, &at) in sent_at.iter().enumerate() {
            let in_window = sent_at[i..].iter().take_while(|&&s| s - at < Duration::from_secs(1)).count();
            prop_assert!(in_window <= 5 * servers.len() + 3, "{} requests within 1 s", in_window);
        }
    }
}
