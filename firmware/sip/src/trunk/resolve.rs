//! RFC 3263 server location for the trunk, sans-IO.
//!
//! The core never touches DNS: a [`Resolution`] hands out [`DnsQuery`]s and takes
//! [`DnsAnswer`]s; the daemon answers them with `hickory-resolver` or the system
//! resolver (A and AAAA together for [`QueryKind::Address`]).
//!
//! # Rules (RFC 3263 4.1-4.2 with the transport configured, no NAPTR)
//!
//! 1. A numeric host (`192.0.2.10`, `[2001:db8::1]`) is used as is, with the
//!    configured port or the transport's default (5060, 5061 for TLS). No query.
//! 2. A host name with an explicit port: one address query, every address with that
//!    port.
//! 3. A host name without a port: an SRV query for `_sip._udp.<host>`,
//!    `_sip._tcp.<host>` or `_sips._tcp.<host>`. Records are ordered per RFC 2782
//!    ([`order_srv`]: priority ascending, then weighted random with the injected
//!    seed), then each record's target is address-resolved in that order; a target
//!    whose lookup fails is skipped. A single record with target `.` means the service
//!    is not offered: resolution fails. No SRV records (or a failed SRV lookup):
//!    an address query on the host with the default port.
//! 4. At most [`MAX_TARGETS`] targets are kept.
//!
//! # Limits
//!
//! NAPTR (RFC 3263 4.1 transport selection) is not implemented: the transport is
//! configured per trunk server, which every carrier documents anyway. DNS TTLs are not
//! used; the trunk caches a result for a configured time and re-resolves after a
//! server fails.

use std::net::{IpAddr, SocketAddr};

use rsip::Transport;

use super::rng::Rng;
use super::TrunkServer;

/// Most targets one resolution yields.
pub const MAX_TARGETS: usize = 16;

/// A resolved place to send requests to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// Transport to use.
    pub transport: Transport,
    /// Address and port.
    pub addr: SocketAddr,
}

/// What to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// SRV records of the name.
    Srv,
    /// A and AAAA records of the name.
    Address,
}

/// A DNS lookup the core asks the daemon for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// Echo this in the answer.
    pub id: u64,
    /// The name to look up.
    pub name: String,
    /// Which records.
    pub kind: QueryKind,
}

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative share among records of equal priority.
    pub weight: u16,
    /// Port on the target.
    pub port: u16,
    /// Host name of the target (`.` = service not offered).
    pub target: String,
}

/// The daemon's answer to a [`DnsQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    /// SRV records (possibly none).
    Srv(Vec<SrvRecord>),
    /// Addresses (possibly none).
    Addresses(Vec<IpAddr>),
    /// The name does not exist (NXDOMAIN) or has no such records.
    NotFound,
    /// The lookup failed (timeout, SERVFAIL, no resolver configured).
    Failed,
}

/// Why a resolution produced no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// SRV says the service is not offered at this domain (target `.`).
    #[error("SRV for {name} says SIP is not offered there")]
    NotOffered {
        /// The SRV name.
        name: String,
    },
    /// No address was found.
    #[error("no address found for {host}")]
    NoAddress {
        /// The configured host.
        host: String,
    },
}

/// The default port of a transport (5061 for TLS, 5060 otherwise).
pub fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::Tls | Transport::TlsSctp | Transport::Wss => 5061,
        _ => 5060,
    }
}

/// The SRV name for `host` and `transport` (RFC 3263 4.2).
pub fn srv_name(host: &str, transport: Transport) -> String {
    let (service, proto) = match transport {
        Transport::Tls | Transport::TlsSctp | Transport::Wss => ("_sips", "_tcp"),
        Transport::Tcp | Transport::Ws => ("_sip", "_tcp"),
        Transport::Sctp => ("_sip", "_sctp"),
        Transport::Udp => ("_sip", "_udp"),
    };
    format!("{service}.{proto}.{}", host.trim_end_matches('.'))
}

/// Orders SRV records per RFC 2782: ascending priority; within a priority, repeated
/// weighted random selection (weight-0 records placed first, selected rarely).
pub fn order_srv(records: Vec<SrvRecord>, seed: u64) -> Vec<SrvRecord> {
    order_srv_with(records, &mut Rng::new(seed))
}

pub(crate) fn order_srv_with(mut records: Vec<SrvRecord>, rng: &mut Rng) -> Vec<SrvRecord> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut group = vec![first];
        while let Some(r) = rest.next_if(|r| r.priority == group[0].priority) {
            group.push(r);
        }
        // Weight-0 records first (stable), as RFC 2782 asks.
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            // Uniform in 0..=total.
            let pick = rng.below(total + 1);
            let mut running = 0u64;
            let index = group
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(index));
        }
    }
    out
}

#[derive(Debug)]
enum Step {
    /// Waiting for the SRV answer.
    Srv { name: String },
    /// Waiting for the address answer of `host` (SRV target or the host itself).
    Address { host: String, port: u16 },
    /// Finished.
    Done,
}

/// One resolution of one [`TrunkServer`] (see the module doc for the rules).
#[derive(Debug)]
pub struct Resolution {
    host: String,
    transport: Transport,
    step: Step,
    /// Query id of the current step.
    query_id: u64,
    /// The current step's query was handed out.
    asked: bool,
    /// SRV records still to address-resolve, in order.
    srv_queue: std::collections::VecDeque<SrvRecord>,
    targets: Vec<Target>,
    error: Option<ResolveError>,
}

impl Resolution {
    /// Starts resolving `server`; `query_id` is the first query's id (the next ones
    /// count up from it).
    pub fn new(server: &TrunkServer, query_id: u64) -> Self {
        let transport = server.transport;
        let port = server.port.unwrap_or_else(|| default_port(transport));
        let mut r = Resolution {
            host: server.host.clone(),
            transport,
            step: Step::Done,
            query_id,
            asked: false,
            srv_queue: Default::default(),
            targets: Vec::new(),
            error: None,
        };
        if let Some(ip) = server.ip() {
            r.targets.push(Target {
                transport,
                addr: SocketAddr::new(ip, port),
            });
        } else if server.port.is_some() {
            r.step = Step::Address {
                host: server.host.clone(),
                port,
            };
        } else {
            r.step = Step::Srv {
                name: srv_name(&server.host, transport),
            };
        }
        r
    }

    /// The query to send now, once per step.
    pub fn poll_query(&mut self) -> Option<DnsQuery> {
        if self.asked {
            return None;
        }
        let (name, kind) = match &self.step {
            Step::Srv { name } => (name.clone(), QueryKind::Srv),
            Step::Address { host, .. } => (host.clone(), QueryKind::Address),
            Step::Done => return None,
        };
        self.asked = true;
        Some(DnsQuery {
            id: self.query_id,
            name,
            kind,
        })
    }

    /// The id of the query the resolution waits for (`None` when done).
    pub fn waiting_for(&self) -> Option<u64> {
        (!matches!(self.step, Step::Done)).then_some(self.query_id)
    }

    /// Takes the answer to query `id`; answers to other ids, and answers of the wrong
    /// kind, are ignored (returns false).
    pub(crate) fn handle_answer(&mut self, id: u64, answer: DnsAnswer, rng: &mut Rng) -> bool {
        if id != self.query_id || !self.asked {
            return false;
        }
        let step = std::mem::replace(&mut self.step, Step::Done);
        match (step, answer) {
            (Step::Srv { name }, DnsAnswer::Srv(records)) if !records.is_empty() => {
                if records.len() == 1 && records[0].target.trim_end_matches('.').is_empty() {
                    self.error = Some(ResolveError::NotOffered { name });
                    return true;
                }
                let usable: Vec<SrvRecord> = records
                    .into_iter()
                    .filter(|r| r.port != 0 && !r.target.trim_end_matches('.').is_empty())
                    .collect();
                self.srv_queue = order_srv_with(usable, rng).into();
                self.next_srv_target();
            }
            (Step::Srv { .. }, DnsAnswer::Srv(_) | DnsAnswer::NotFound | DnsAnswer::Failed) => {
                self.step = Step::Address {
                    host: self.host.clone(),
                    port: default_port(self.transport),
                };
                self.advance_query();
            }
            (Step::Address { port, .. }, DnsAnswer::Addresses(ips)) => {
                for ip in ips {
                    let target = Target {
                        transport: self.transport,
                        addr: SocketAddr::new(ip, port),
                    };
                    if self.targets.len() < MAX_TARGETS && !self.targets.contains(&target) {
                        self.targets.push(target);
                    }
                }
                self.next_srv_target();
            }
            (Step::Address { .. }, DnsAnswer::NotFound | DnsAnswer::Failed) => {
                self.next_srv_target();
            }
            (step, _) => {
                // Wrong kind of answer: keep waiting for a proper one.
                self.step = step;
                return false;
            }
        }
        true
    }

    fn advance_query(&mut self) {
        self.query_id += 1;
        self.asked = false;
    }

    fn next_srv_target(&mut self) {
        if self.targets.len() < MAX_TARGETS {
            if let Some(record) = self.srv_queue.pop_front() {
                let host = record.target.trim_end_matches('.').to_owned();
                match host.parse::<IpAddr>() {
                    Ok(ip) => {
                        self.targets.push(Target {
                            transport: self.transport,
                            addr: SocketAddr::new(ip, record.port),
                        });
                        self.next_srv_target();
                    }
                    Err(_) => {
                        self.step = Step::Address {
                            host,
                            port: record.port,
                        };
                        self.advance_query();
                    }
                }
                return;
            }
        }
        self.step = Step::Done;
        if self.targets.is_empty() && self.error.is_none() {
            self.error = Some(ResolveError::NoAddress {
                host: self.host.clone(),
            });
        }
    }

    /// The result once finished: the targets in the order to try, or why there are
    /// none.
    pub fn outcome(&self) -> Option<Result<&[Target], &ResolveError>> {
        match (&self.step, &self.error) {
            (Step::Done, Some(e)) => Some(Err(e)),
            (Step::Done, None) => Some(Ok(&self.targets)),
            _ => None,
        }
    }

    /// The next query id this resolution would use (for the caller's id counter).
    pub(crate) fn next_free_id(&self) -> u64 {
        self.query_id + 1
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;
    use super::*;
    use proptest::prelude::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn server(s: &str) -> TrunkServer {
        s.parse().unwrap()
    }

    fn run(r: &mut Resolution, answers: &mut dyn FnMut(&DnsQuery) -> DnsAnswer) {
        let mut rng = Rng::new(3);
        let mut guard = 0;
        while let Some(q) = r.poll_query() {
            let a = answers(&q);
            assert!(r.handle_answer(q.id, a, &mut rng));
            guard += 1;
            assert!(guard < 50);
        }
    }

    #[test]
    fn numeric_hosts_need_no_query() {
        let mut r = Resolution::new(&server("192.0.2.10"), 1);
        assert_eq!(r.poll_query(), None);
        assert_eq!(
            r.outcome().unwrap().unwrap(),
            &[Target {
                transport: Transport::Udp,
                addr: "192.0.2.10:5060".parse().unwrap()
            }]
        );
        let r = Resolution::new(&server("[2001:db8::1]:5062;transport=tls"), 1);
        assert_eq!(
            r.outcome().unwrap().unwrap()[0],
            Target {
                transport: Transport::Tls,
                addr: "[2001:db8::1]:5062".parse().unwrap()
            }
        );
        let r = Resolution::new(&server("192.0.2.1;transport=tls"), 1);
        assert_eq!(r.outcome().unwrap().unwrap()[0].addr.port(), 5061);
    }

    #[test]
    fn explicit_port_skips_srv() {
        let mut r = Resolution::new(&server("sip.example.net:5080;transport=tcp"), 10);
        let mut asked = Vec::new();
        run(&mut r, &mut |q| {
            asked.push((q.name.clone(), q.kind));
            DnsAnswer::Addresses(vec![
                "192.0.2.5".parse().unwrap(),
                "2001:db8::5".parse().unwrap(),
            ])
        });
        assert_eq!(
            asked,
            vec![("sip.example.net".to_string(), QueryKind::Address)]
        );
        let targets = r.outcome().unwrap().unwrap();
        assert_eq!(targets.len(), 2);
        assert!(targets
            .iter()
            .all(|t| t.addr.port() == 5080 && t.transport == Transport::Tcp));
    }

    #[test]
    fn srv_then_addresses_in_priority_order() {
        let mut r = Resolution::new(&server("example.net;transport=tls"), 1);
        let mut asked = Vec::new();
        run(&mut r, &mut |q| {
            asked.push(q.name.clone());
            match q.kind {
                QueryKind::Srv => DnsAnswer::Srv(vec![
                    srv(20, 0, 5061, "backup.example.net."),
                    srv(10, 0, 5061, "primary.example.net."),
                    srv(30, 0, 5061, "gone.example.net."),
                ]),
                QueryKind::Address if q.name == "primary.example.net" => {
                    DnsAnswer::Addresses(vec!["192.0.2.1".parse().unwrap()])
                }
                QueryKind::Address if q.name == "backup.example.net" => {
                    DnsAnswer::Addresses(vec!["192.0.2.2".parse().unwrap()])
                }
                QueryKind::Address => DnsAnswer::NotFound,
            }
        });
        assert_eq!(
            asked,
            vec![
                "_sips._tcp.example.net",
                "primary.example.net",
                "backup.example.net",
                "gone.example.net"
            ]
        );
        let addrs: Vec<String> = r
            .outcome()
            .unwrap()
            .unwrap()
            .iter()
            .map(|t| t.addr.to_string())
            .collect();
        assert_eq!(addrs, vec!["192.0.2.1:5061", "192.0.2.2:5061"]);
    }

    #[test]
    fn no_srv_falls_back_to_host() {
        for srv_answer in [
            DnsAnswer::NotFound,
            DnsAnswer::Failed,
            DnsAnswer::Srv(vec![]),
        ] {
            let mut r = Resolution::new(&server("pbx.example.org"), 1);
            let mut asked = Vec::new();
            run(&mut r, &mut |q| {
                asked.push((q.name.clone(), q.kind));
                match q.kind {
                    QueryKind::Srv => srv_answer.clone(),
                    QueryKind::Address => {
                        DnsAnswer::Addresses(vec!["198.51.100.7".parse().unwrap()])
                    }
                }
            });
            assert_eq!(
                asked[0],
                ("_sip._udp.pbx.example.org".to_string(), QueryKind::Srv)
            );
            assert_eq!(
                asked[1],
                ("pbx.example.org".to_string(), QueryKind::Address)
            );
            assert_eq!(
                r.outcome().unwrap().unwrap()[0].addr.to_string(),
                "198.51.100.7:5060"
            );
        }
    }

    #[test]
    fn dot_target_means_not_offered_and_nothing_means_no_address() {
        let mut r = Resolution::new(&server("example.com"), 1);
        run(&mut r, &mut |_| DnsAnswer::Srv(vec![srv(0, 0, 0, ".")]));
        assert!(matches!(
            r.outcome(),
            Some(Err(ResolveError::NotOffered { .. }))
        ));
        let mut r = Resolution::new(&server("example.com"), 1);
        run(&mut r, &mut |_| DnsAnswer::NotFound);
        assert!(matches!(
            r.outcome(),
            Some(Err(ResolveError::NoAddress { .. }))
        ));
    }

    #[test]
    fn stray_and_wrong_answers_are_ignored() {
        let mut r = Resolution::new(&server("example.com"), 5);
        let mut rng = Rng::new(1);
        // Nothing asked yet.
        assert!(!r.handle_answer(5, DnsAnswer::NotFound, &mut rng));
        let q = r.poll_query().unwrap();
        assert!(!r.handle_answer(q.id + 1, DnsAnswer::NotFound, &mut rng));
        assert!(!r.handle_answer(q.id, DnsAnswer::Addresses(vec![]), &mut rng));
        assert_eq!(r.waiting_for(), Some(q.id));
        assert!(r.outcome().is_none());
    }

    #[test]
    fn weighted_choice_follows_weights() {
        // 90/10 weights: the heavy record should come first about 90% of the time.
        let mut first_heavy = 0;
        for seed in 0..2000u64 {
            let order = order_srv(
                vec![srv(1, 10, 5060, "light"), srv(1, 90, 5060, "heavy")],
                seed,
            );
            if order[0].target == "heavy" {
                first_heavy += 1;
            }
        }
        assert!((1700..1900).contains(&first_heavy), "{first_heavy}");
    }

    proptest! {
        /// Ordering is a permutation with priorities never decreasing.
        #[test]
        fn srv_order_is_a_priority_sorted_permutation(
            recs in proptest::collection::vec((0u16..4, 0u16..100, 1u16..u16::MAX), 0..12),
            seed in any::<u64>(),
        ) {
            let records: Vec<SrvRecord> = recs.iter().enumerate()
                .map(|(i, (p, w, port))| srv(*p, *w, *port, &format!("t{i}")))
                .collect();
            let ordered = order_srv(records.clone(), seed);
            prop_assert_eq!(ordered.len(), records.len());
            prop_assert!(ordered.windows(2).all(|w| w[0].priority <= w[1].priority));
            let mut a: Vec<_> = ordered.iter().map(|r| r.target.clone()).collect();
            let mut b: Vec<_> = records.iter().map(|r| r.target.clone()).collect();
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
        }
    }
}
