//! End-to-end: the trunk's RFC 3263 server location with the real `branchd`.
//!
//! The test starts a small authoritative DNS server on 127.0.0.1 (written here with
//! hickory-proto; it counts the queries it answers) and points `[sip.trunk]
//! nameservers` at it. `carrier.test` has two SRV records for `_sip._udp`: priority 10
//! on a SIPp registrar that answers 503 (out of service), priority 20 on a SIPp
//! registrar that answers 200. The box must ask for the SRV records, try the priority
//! 10 server first, and register with the priority 20 one.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::harness::{free_ports, strip_ansi, wait, Gateway, DIAL_PLAN};

const SIPP: &str = "/usr/bin/sipp";
/// Generous: under qemu-user the box is 5-10x slower.
const REGISTER_WAIT: Duration = Duration::from_secs(60);

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("sip")
        .join(name)
}

/// An authoritative DNS server for a fixed zone on 127.0.0.1; stops on drop.
struct DnsServer {
    addr: SocketAddr,
    /// `(name, type)` of every query answered, in order.
    queries: Arc<Mutex<Vec<(String, RecordType)>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl DnsServer {
    fn start(zone: Vec<(&str, RData)>) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let zone: Vec<(Name, RData)> = zone
            .into_iter()
            .map(|(n, r)| (Name::from_str(n).expect("name"), r))
            .collect();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (Arc::clone(&queries), Arc::clone(&stop));
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
                    log.lock()
                        .expect("log")
                        .push((query.name().to_utf8(), query.query_type()));
                    if !zone.iter().any(|(n, _)| n == query.name()) {
                        resp.set_response_code(ResponseCode::NXDomain);
                        continue;
                    }
                    for (n, r) in &zone {
                        if n == query.name() && r.record_type() == query.query_type() {
                            resp.add_answer(Record::from_rdata(n.clone(), 60, r.clone()));
                        }
                    }
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = socket.send_to(&bytes, from);
                }
            }
        });
        DnsServer {
            addr,
            queries,
            stop,
        }
    }

    fn asked(&self, name: &str, kind: RecordType) -> bool {
        self.queries
            .lock()
            .expect("log")
            .iter()
            .any(|(n, k)| n == name && *k == kind)
    }
}

/// A SIPp registrar (UAS) on 127.0.0.1:`port` running `scenario` once.
fn registrar(scenario: &str, port: u16) -> Child {
    Command::new(SIPP)
        .arg("-sf")
        .arg(data(scenario))
        .args(["-i", "127.0.0.1", "-nostdin", "-m", "1"])
        .args(["-p", &port.to_string()])
        .args(["-timeout", "90s", "-timeout_error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp starts")
}

/// Waits for SIPp to end and checks that its scenario completed.
fn finished(mut child: Child, what: &str, gw: &Gateway) {
    let mut status = None;
    wait(REGISTER_WAIT, || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} never got its REGISTER:\n{}", gw.log_text());
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "{what} failed ({status:?}): {err}\nbranchd:\n{}",
        gw.log_text()
    );
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(
        priority,
        weight,
        port,
        Name::from_str(target).expect("target"),
    ))
}

#[test]
fn the_trunk_follows_srv_priorities_and_fails_over_to_the_second_server() {
    let (down_port, up_port) = (free_ports(1, false), free_ports(1, false));
    let dns = DnsServer::start(vec![
        (
            "_sip._udp.carrier.test.",
            srv(20, 0, up_port, "up.carrier.test."),
        ),
        (
            "_sip._udp.carrier.test.",
            srv(10, 0, down_port, "down.carrier.test."),
        ),
        ("down.carrier.test.", RData::A(A(Ipv4Addr::LOCALHOST))),
        ("up.carrier.test.", RData::A(A(Ipv4Addr::LOCALHOST))),
    ]);
    let down = registrar("uas_register_503.xml", down_port);
    let up = registrar("uas_register_ok.xml", up_port);
    // SIPp needs a moment to bind; the box's first REGISTER would otherwise be lost
    // (it would still retransmit, but the test should not lean on that).
    std::thread::sleep(Duration::from_millis(300));
    let plan = format!(
        r#"{DIAL_PLAN}
[sip]
udp = "127.0.0.1:0"
domain = "branch.test"

[sip.trunk]
servers = ["carrier.test"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
expires = 300
nameservers = ["{ns}"]
"#,
        ns = dns.addr
    );
    let gw = Gateway::start_with(&plan);
    // The priority 10 server is asked first and refuses (had the box gone to the
    // priority 20 one first, it would have registered there and never sent this
    // SIPp its REGISTER); the priority 20 one takes the registration.
    finished(down, "the priority 10 registrar (503)", &gw);
    finished(up, "the priority 20 registrar (200)", &gw);
    assert!(
        gw.wait_log("trunk registered", REGISTER_WAIT),
        "no registration:\n{}",
        gw.log_text()
    );
    let registered: Vec<String> = gw
        .log_text()
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains("trunk registered"))
        .collect();
    assert!(
        registered[0].contains(&format!("127.0.0.1:{up_port}")),
        "{registered:?}"
    );
    assert!(dns.asked("_sip._udp.carrier.test.", RecordType::SRV));
    assert!(dns.asked("down.carrier.test.", RecordType::A));
    assert!(dns.asked("up.carrier.test.", RecordType::A));
    // The SRV query came before any address query (RFC 3263 4.2 order).
    let order = dns.queries.lock().expect("log").clone();
    assert_eq!(order[0].1, RecordType::SRV, "{order:?}");
}
