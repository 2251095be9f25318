//! `TrunkDns` against a small authoritative DNS server on 127.0.0.1 (a thread here).

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record};

use super::*;

/// Answers from `zone`; a name with no record of the asked type gets an empty
/// NOERROR, an unknown name NXDOMAIN, a name in `broken` SERVFAIL.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(zone: Vec<(&str, RData)>, broken: &[&str]) -> Server {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let zone: Vec<(Name, RData)> = zone
        .into_iter()
        .map(|(n, r)| (Name::from_str(n).unwrap(), r))
        .collect();
    let broken: Vec<Name> = broken.iter().map(|n| Name::from_str(n).unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !flag.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new();
            resp.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(q.op_code())
                .set_authoritative(true)
                .set_recursion_desired(q.recursion_desired());
            for query in q.queries() {
                resp.add_query(query.clone());
                let name = query.name();
                if broken.iter().any(|b| b == name) {
                    resp.set_response_code(ResponseCode::ServFail);
                    continue;
                }
                if !zone.iter().any(|(n, _)| n == name) {
                    resp.set_response_code(ResponseCode::NXDomain);
                    continue;
                }
                for (n, r) in &zone {
                    if n == name && r.record_type() == query.query_type() {
                        resp.add_answer(Record::from_rdata(n.clone(), 60, r.clone()));
                    }
                }
            }
            let _ = socket.send_to(&resp.to_vec().unwrap(), from);
        }
    });
    Server { addr, stop }
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(
        priority,
        weight,
        port,
        Name::from_str(target).unwrap(),
    ))
}

fn query(name: &str, kind: QueryKind) -> DnsQuery {
    DnsQuery {
        id: 1,
        name: name.to_owned(),
        kind,
    }
}

fn zone() -> Vec<(&'static str, RData)> {
    vec![
        (
            "_sip._udp.carrier.test.",
            srv(10, 60, 5070, "a.carrier.test."),
        ),
        (
            "_sip._udp.carrier.test.",
            srv(20, 0, 5080, "b.carrier.test."),
        ),
        ("_sips._tcp.carrier.test.", srv(0, 0, 0, ".")),
        ("a.carrier.test.", RData::A(A(Ipv4Addr::new(127, 0, 0, 1)))),
        ("a.carrier.test.", RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
        ("b.carrier.test.", RData::A(A(Ipv4Addr::new(127, 0, 0, 2)))),
        ("carrier.test.", RData::A(A(Ipv4Addr::new(127, 0, 0, 3)))),
    ]
}

#[tokio::test]
async fn srv_records_come_back_as_the_core_wants_them() {
    let server = serve(zone(), &[]);
    let dns = TrunkDns::new(&[server.addr]);
    let DnsAnswer::Srv(mut records) = dns
        .answer(&query("_sip._udp.carrier.test", QueryKind::Srv))
        .await
    else {
        panic!("no SRV answer");
    };
    records.sort_by_key(|r| r.priority);
    assert_eq!(
        records,
        vec![
            SrvRecord {
                priority: 10,
                weight: 60,
                port: 5070,
                target: "a.carrier.test".into()
            },
            SrvRecord {
                priority: 20,
                weight: 0,
                port: 5080,
                target: "b.carrier.test".into()
            },
        ]
    );
    // "Not offered" is the record with target ".", kept as such for the core.
    assert_eq!(
        dns.answer(&query("_sips._tcp.carrier.test", QueryKind::Srv))
            .await,
        DnsAnswer::Srv(vec![SrvRecord {
            priority: 0,
            weight: 0,
            port: 0,
            target: ".".into()
        }])
    );
}

#[tokio::test]
async fn addresses_go_through_the_configured_nameserver() {
    let server = serve(zone(), &[]);
    let dns = TrunkDns::new(&[server.addr]);
    let DnsAnswer::Addresses(mut ips) = dns
        .answer(&query("a.carrier.test", QueryKind::Address))
        .await
    else {
        panic!("no addresses");
    };
    ips.sort();
    assert_eq!(
        ips,
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        ]
    );
}

#[tokio::test]
async fn missing_names_and_records_are_not_found_and_errors_are_failures() {
    let server = serve(zone(), &["broken.test."]);
    let dns = TrunkDns::new(&[server.addr]);
    // NXDOMAIN.
    assert_eq!(
        dns.answer(&query("_sip._tcp.nowhere.test", QueryKind::Srv))
            .await,
        DnsAnswer::NotFound
    );
    // The name exists, without SRV records.
    assert_eq!(
        dns.answer(&query("carrier.test", QueryKind::Srv)).await,
        DnsAnswer::NotFound
    );
    // SERVFAIL.
    assert_eq!(
        dns.answer(&query("broken.test", QueryKind::Srv)).await,
        DnsAnswer::Failed
    );
}

#[tokio::test]
async fn a_silent_nameserver_is_a_failure_within_the_timeout() {
    // Bound but never answering.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = TrunkDns::new(&[silent.local_addr().unwrap()]);
    let started = std::time::Instant::now();
    assert_eq!(
        dns.answer(&query("_sip._udp.carrier.test", QueryKind::Srv))
            .await,
        DnsAnswer::Failed
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

fn trunk_config(nameservers: &str) -> crate::error::Result<crate::config::Config> {
    let text = format!(
        "[telephony]\noutside_line_prefix = \"9\"\n\n[[extensions]]\nnumber = \"101\"\nport = 1\n\n\
         [sip]\nudp = \"127.0.0.1:0\"\ndomain = \"branch.test\"\n\n[sip.trunk]\n\
         servers = [\"carrier.test\"]\ndomain = \"carrier.test\"\nusername = \"branch\"\n\
         password = \"trunk-secret\"\n{nameservers}"
    );
    crate::config::Config::from_toml_str(&text, std::path::Path::new("/etc/branchd.toml"))
}

#[test]
fn nameservers_in_the_config_take_an_address_with_or_without_port() {
    let ns = |extra: &str| {
        trunk_config(extra)
            .expect("loads")
            .sip
            .and_then(|s| s.trunk)
            .expect("trunk")
            .nameservers
    };
    assert_eq!(ns(""), Vec::<SocketAddr>::new(), "default: the system's");
    assert_eq!(
        ns("nameservers = [\"192.0.2.53\", \"127.0.0.1:5353\", \"[2001:db8::53]:54\"]"),
        vec![
            "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:5353".parse().unwrap(),
            "[2001:db8::53]:54".parse().unwrap(),
        ]
    );
    for bad in [
        "nameservers = [\"dns.example\"]",
        "nameservers = [\"127.0.0.1:0\"]",
        "nameservers = [\"192.0.2.53\", \"300.1.1.1\"]",
    ] {
        let e = trunk_config(bad).expect_err(bad).to_string();
        assert!(e.contains("sip.trunk.nameservers["), "{bad}: {e}");
        assert!(e.contains("branchd.toml"), "{e}");
    }
}
