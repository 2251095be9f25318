//! The transport layer on 127.0.0.1 with real sockets: UDP, TCP framing, limits,
//! keepalives, connection reuse, flows, TLS verification and rate limiting.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use branchline_sip::message::{self, frame_stream, Frame, Limits};
use branchline_sip::transport::tls::{self, TrustRoots};
use branchline_sip::transport::via::{self, ResponseRoute};
use branchline_sip::transport::{
    ConnectPolicy, Error, Inbound, KeepaliveConfig, ListenerConfig, Outbound, RateConfig,
    Transport, TransportConfig, TransportKind, DEFAULT_UDP_RECEIVE_BUFFER,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rsip::message::HasHeaders;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(kinds: &[TransportKind]) -> TransportConfig {
    TransportConfig::new(
        kinds
            .iter()
            .map(|&kind| ListenerConfig {
                kind,
                addr: any_port(),
            })
            .collect(),
    )
}

async fn start(config: TransportConfig) -> (Transport, Receiver<Inbound>) {
    Transport::bind(config, CancellationToken::new())
        .await
        .expect("bind")
}

/// An OPTIONS request (with an optional body) as a peer would send it.
fn request(kind: TransportKind, branch: &str, body: &str) -> String {
    format!(
        "OPTIONS sip:box@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{kind} 10.0.0.7:5070;rport;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:phone@127.0.0.1>;tag=a1\r\n\
         To: <sip:box@127.0.0.1>\r\n\
         Call-ID: {branch}@10.0.0.7\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn recv(rx: &mut Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no message within 5 s")
        .expect("channel closed")
}

/// Polls `check` until it holds (or fails the test after 5 s).
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads one framed message (or times out) from a raw client stream.
async fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let read = async {
        loop {
            if let Ok(Frame::Message { start, len }) = frame_stream(buf, &Limits::default()) {
                let message = buf[start..start + len].to_vec();
                buf.drain(..start + len);
                return message;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a whole message");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("no message")
}

/// Waits for the peer to close a raw client stream (EOF or reset).
async fn closed_by_peer(stream: &mut TcpStream) {
    let wait = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("connection still open after 5 s");
}

async fn with_timeout<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

#[tokio::test]
async fn udp_round_trip_with_rport_and_symmetric_response() {
    let (transport, mut rx) = start(config(&[TransportKind::Udp])).await;
    let local = transport.local_addr(TransportKind::Udp).unwrap();
    assert_ne!(local.port(), 0, "the bound port is reported");
    let phone = UdpSocket::bind(any_port()).await.unwrap();
    let sent = request(TransportKind::Udp, "udp1", "");
    phone.send_to(sent.as_bytes(), local).await.unwrap();

    let inbound = recv(&mut rx).await;
    assert_eq!(inbound.bytes, sent.as_bytes());
    assert_eq!(inbound.peer, phone.local_addr().unwrap());
    assert_eq!(
        (inbound.kind, inbound.local, inbound.connection),
        (TransportKind::Udp, local, None)
    );

    // The layer above: parse, rewrite the top Via, route the response.
    let mut msg = message::parse(&inbound.bytes, &Limits::default()).unwrap();
    via::apply_received_rport(msg.headers_mut(), inbound.peer).unwrap();
    let rewritten = msg.to_string();
    let top_line = rewritten
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap()
        .trim_start_matches("Via:")
        .trim();
    let top = via::parse_top_via(top_line).unwrap();
    assert_eq!(top.received, Some(inbound.peer.ip()));
    assert_eq!(top.rport, Some(Some(inbound.peer.port())));
    let ResponseRoute::Send(route) = via::response_route(&top, &inbound.flow()) else {
        panic!("an IP route was expected")
    };
    assert_eq!(
        route.dest, inbound.peer,
        "rport sends to the source port, not 5070"
    );
    let response = format!("SIP/2.0 200 OK\r\nVia: {top_line}\r\nContent-Length: 0\r\n\r\n");
    let report = transport
        .send(Outbound::along(&route, response.clone().into_bytes()))
        .await
        .unwrap();
    assert_eq!(report.local, local);

    let mut buf = [0u8; 2048];
    let (n, from) = with_timeout(phone.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], response.as_bytes());
    assert_eq!(
        from, local,
        "the response leaves from the socket the request reached"
    );
    let stats = transport.stats();
    assert_eq!((stats.received, stats.sent), (1, 1));
}

#[tokio::test]
async fn udp_oversize_datagrams_and_crlf_keepalives_are_not_delivered() {
    let mut cfg = config(&[TransportKind::Udp]);
    cfg.limits.message.max_message_len = 1000;
    let (transport, mut rx) = start(cfg).await;
    let local = transport.local_addr(TransportKind::Udp).unwrap();
    let phone = UdpSocket::bind(any_port()).await.unwrap();
    phone.send_to(&[b'x'; 1001], local).await.unwrap();
    phone.send_to(b"\r\n\r\n", local).await.unwrap();
    let ok = request(TransportKind::Udp, "small", "");
    phone.send_to(ok.as_bytes(), local).await.unwrap();
    assert_eq!(recv(&mut rx).await.bytes, ok.as_bytes());
    let stats = transport.stats();
    assert_eq!((stats.dropped_oversize, stats.received), (1, 1));

    // Sending over the limit fails before touching the network.
    let err = transport
        .send(Outbound::new(
            TransportKind::Udp,
            phone.local_addr().unwrap(),
            vec![b'y'; 1001],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                len: 1001,
                limit: 1000,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn tcp_frames_split_and_coalesced_messages() {
    let (transport, mut rx) = start(config(&[TransportKind::Tcp])).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    let mut phone = TcpStream::connect(local).await.unwrap();
    phone.set_nodelay(true).unwrap();

    // One message in many small writes, the body split too.
    let first = request(TransportKind::Tcp, "split", "hello body");
    for chunk in first.as_bytes().chunks(7) {
        phone.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = recv(&mut rx).await;
    assert_eq!(got.bytes, first.as_bytes());
    assert_eq!(got.kind, TransportKind::Tcp);
    assert_eq!(got.peer, phone.local_addr().unwrap());
    let connection = got.connection.expect("a connection id");

    // Two messages (and stray CRLFs between them) in one write.
    let second = request(TransportKind::Tcp, "two-a", "");
    let third = request(TransportKind::Tcp, "two-b", "x");
    phone
        .write_all(format!("{second}\r\n{third}").as_bytes())
        .await
        .unwrap();
    let a = recv(&mut rx).await;
    let b = recv(&mut rx).await;
    assert_eq!(a.bytes, second.as_bytes());
    assert_eq!(b.bytes, third.as_bytes());
    assert_eq!(
        (a.connection, b.connection),
        (Some(connection), Some(connection))
    );
    assert_eq!(transport.stats().received, 3);
    assert_eq!(transport.stats().connections, 1);
}

#[tokio::test]
async fn a_megabyte_without_a_message_end_closes_the_connection() {
    let (transport, mut rx) = start(config(&[TransportKind::Tcp])).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    let mut attacker = TcpStream::connect(local).await.unwrap();
    let junk = vec![b'a'; 1024 * 1024];
    // The server closes part-way; the rest of the write may fail.
    let _ = attacker.write_all(&junk).await;
    closed_by_peer(&mut attacker).await;
    eventually("the connection to be counted and dropped", || {
        let stats = transport.stats();
        stats.dropped_oversize == 1 && stats.connections == 0
    })
    .await;
    assert!(rx.try_recv().is_err(), "nothing reached the message layer");
}

#[tokio::test]
async fn an_unframeable_stream_is_closed() {
    let (transport, _rx) = start(config(&[TransportKind::Tcp])).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    let mut peer = TcpStream::connect(local).await.unwrap();
    let no_length = request(TransportKind::Tcp, "nolen", "").replace("Content-Length: 0\r\n", "");
    peer.write_all(no_length.as_bytes()).await.unwrap();
    closed_by_peer(&mut peer).await;
    eventually("invalid frame counted", || {
        transport.stats().invalid_frames == 1
    })
    .await;
}

#[tokio::test]
async fn double_crlf_ping_gets_a_single_crlf_pong() {
    let (transport, mut rx) = start(config(&[TransportKind::Tcp])).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    let mut phone = TcpStream::connect(local).await.unwrap();
    phone.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    with_timeout(phone.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"\r\n");
    // The connection still carries messages afterwards.
    let msg = request(TransportKind::Tcp, "after-ping", "");
    phone.write_all(msg.as_bytes()).await.unwrap();
    assert_eq!(recv(&mut rx).await.bytes, msg.as_bytes());
    assert_eq!(transport.stats().keepalive_pongs_sent, 1);
}

#[tokio::test]
async fn responses_and_requests_reuse_the_connection_a_peer_opened() {
    let (transport, mut rx) = start(config(&[TransportKind::Tcp])).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    let mut phone = TcpStream::connect(local).await.unwrap();
    let req = request(TransportKind::Tcp, "reuse", "");
    phone.write_all(req.as_bytes()).await.unwrap();
    let inbound = recv(&mut rx).await;

    // The response follows RFC 3261 18.2.2: the connection the request came in on,
    // although the Via names 10.0.0.7:5070.
    let top = via::parse_top_via("SIP/2.0/TCP 10.0.0.7:5070;branch=z9hG4bKreuse").unwrap();
    let ResponseRoute::Send(route) = via::response_route(&top, &inbound.flow()) else {
        panic!("expected a route")
    };
    assert_eq!(route.connection, inbound.connection);
    let response = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    let sent = transport
        .send(Outbound::along(&route, response))
        .await
        .unwrap();
    assert_eq!(sent.connection, inbound.connection);
    let mut buf = Vec::new();
    assert_eq!(
        read_message(&mut phone, &mut buf).await,
        response.as_bytes()
    );

    // A later request to the phone's address finds the same connection with no hint.
    let notify = "NOTIFY sip:phone@10.0.0.7 SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let sent = transport
        .send(Outbound::new(TransportKind::Tcp, inbound.peer, notify))
        .await
        .unwrap();
    assert_eq!(sent.connection, inbound.connection);
    assert_eq!(read_message(&mut phone, &mut buf).await, notify.as_bytes());
    let stats = transport.stats();
    assert_eq!(
        (stats.connections, stats.connections_opened, stats.sent),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn outbound_connections_are_opened_once_and_reused() {
    let (client, mut client_rx) = start(config(&[TransportKind::Tcp])).await;
    let (server, mut server_rx) = start(config(&[TransportKind::Tcp])).await;
    let server_addr = server.local_addr(TransportKind::Tcp).unwrap();
    let first = request(TransportKind::Tcp, "out1", "");
    let second = request(TransportKind::Tcp, "out2", "");
    let a = client
        .send(Outbound::new(
            TransportKind::Tcp,
            server_addr,
            first.clone(),
        ))
        .await
        .unwrap();
    let b = client
        .send(Outbound::new(
            TransportKind::Tcp,
            server_addr,
            second.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(a.connection, b.connection);
    let got_a = recv(&mut server_rx).await;
    let got_b = recv(&mut server_rx).await;
    assert_eq!(
        (&got_a.bytes[..], &got_b.bytes[..]),
        (first.as_bytes(), second.as_bytes())
    );
    assert_eq!(got_a.connection, got_b.connection);
    assert_eq!(client.stats().connections_opened, 1);

    // The server answers over the same connection; it arrives on the client's
    // outbound connection.
    let response = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    server
        .send(Outbound::over_flow(&got_a.flow(), response))
        .await
        .unwrap();
    let back = recv(&mut client_rx).await;
    assert_eq!(back.bytes, response.as_bytes());
    assert_eq!(back.connection, a.connection);
    assert_eq!(back.peer, server_addr);
    assert_eq!(server.stats().connections_opened, 1);
}

#[tokio::test]
async fn flows_die_with_their_connection_and_are_not_reopened() {
    let (transport, mut rx) = start(config(&[TransportKind::Tcp])).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    let mut phone = TcpStream::connect(local).await.unwrap();
    phone
        .write_all(request(TransportKind::Tcp, "register", "").as_bytes())
        .await
        .unwrap();
    let flow = recv(&mut rx).await.flow();
    assert!(transport.flow_alive(&flow));
    drop(phone);
    eventually("the flow to die", || !transport.flow_alive(&flow)).await;
    let err = transport
        .send(Outbound::over_flow(&flow, "INVITE"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NoConnection { hint: Some(_), .. }),
        "{err}"
    );
    assert_eq!(
        transport.stats().connections_opened,
        1,
        "no new connection tried"
    );
}

#[tokio::test]
async fn connection_limits_refuse_beyond_the_per_ip_share() {
    let mut cfg = config(&[TransportKind::Tcp]);
    cfg.limits.connections.max_inbound_per_ip = 2;
    let (transport, mut rx) = start(cfg).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    let mut kept = Vec::new();
    for i in 0..2 {
        let mut phone = TcpStream::connect(local).await.unwrap();
        phone
            .write_all(request(TransportKind::Tcp, &format!("lim{i}"), "").as_bytes())
            .await
            .unwrap();
        recv(&mut rx).await;
        kept.push(phone);
    }
    let mut third = TcpStream::connect(local).await.unwrap();
    closed_by_peer(&mut third).await;
    let stats = transport.stats();
    assert_eq!((stats.connections, stats.connections_refused), (2, 1));
    // A slot frees when a connection closes.
    drop(kept.pop());
    eventually("a slot to free", || transport.stats().connections == 1).await;
    let mut fourth = TcpStream::connect(local).await.unwrap();
    fourth
        .write_all(request(TransportKind::Tcp, "lim-again", "").as_bytes())
        .await
        .unwrap();
    assert!(recv(&mut rx).await.connection.is_some());
}

#[tokio::test]
async fn idle_and_half_sent_connections_time_out() {
    let mut cfg = config(&[TransportKind::Tcp]);
    cfg.limits.idle_timeout = Duration::from_millis(300);
    let (idle, _rx) = start(cfg).await;
    let mut silent = TcpStream::connect(idle.local_addr(TransportKind::Tcp).unwrap())
        .await
        .unwrap();
    closed_by_peer(&mut silent).await;
    eventually("idle close counted", || {
        idle.stats().connections_timed_out == 1
    })
    .await;

    let mut cfg = config(&[TransportKind::Tcp]);
    cfg.limits.partial_message_timeout = Duration::from_millis(300);
    let (partial, _rx) = start(cfg).await;
    let mut slow = TcpStream::connect(partial.local_addr(TransportKind::Tcp).unwrap())
        .await
        .unwrap();
    let msg = request(TransportKind::Tcp, "slow", "");
    slow.write_all(&msg.as_bytes()[..40]).await.unwrap();
    // Trickling bytes keeps the connection busy but does not finish the message.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = slow.write_all(&msg.as_bytes()[40 + i..41 + i]).await;
    }
    closed_by_peer(&mut slow).await;
    assert_eq!(partial.stats().connections_timed_out, 1);
}

#[tokio::test]
async fn client_keepalive_pings_and_detects_a_dead_peer() {
    let keepalive = KeepaliveConfig {
        interval: Duration::from_millis(400),
        pong_timeout: Duration::from_millis(300),
    };
    let mut cfg = config(&[TransportKind::Tcp]);
    cfg.client_keepalive = Some(keepalive);
    let (client, _client_rx) = start(cfg).await;
    let (server, mut server_rx) = start(config(&[TransportKind::Tcp])).await;
    let server_addr = server.local_addr(TransportKind::Tcp).unwrap();
    let sent = client
        .send(Outbound::new(
            TransportKind::Tcp,
            server_addr,
            request(TransportKind::Tcp, "ka", ""),
        ))
        .await
        .unwrap();
    recv(&mut server_rx).await;
    eventually("two pongs", || server.stats().keepalive_pongs_sent >= 2).await;
    assert_eq!(client.stats().keepalive_failures, 0);
    assert!(client.flow_alive(&sent.flow()));
    // Pongs are not mistaken for messages or pings on either side.
    assert_eq!(client.stats().received, 0);
    assert_eq!(client.stats().keepalive_pongs_sent, 0);

    // A peer that accepts but never answers is detected and the flow dropped.
    let mute = TcpListener::bind(any_port()).await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (stream, _) = mute.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stream);
    });
    let sent = client
        .send(Outbound::new(TransportKind::Tcp, mute_addr, "x"))
        .await
        .unwrap();
    eventually("a keepalive failure", || {
        client.stats().keepalive_failures == 1
    })
    .await;
    assert!(!client.flow_alive(&sent.flow()));
    hold.abort();
}

#[tokio::test]
async fn udp_flood_is_rate_limited_before_parsing() {
    let mut cfg = config(&[TransportKind::Udp]);
    cfg.limits.rate = RateConfig {
        messages_per_second: 1,
        burst: 5,
        max_sources: 16,
    };
    let (transport, mut rx) = start(cfg).await;
    let local = transport.local_addr(TransportKind::Udp).unwrap();
    let flood = UdpSocket::bind(any_port()).await.unwrap();
    // Not even SIP: the limiter never looks at the bytes.
    for _ in 0..50 {
        flood
            .send_to(b"junk that would fail parsing", local)
            .await
            .unwrap();
    }
    eventually("all 50 datagrams accounted for", || {
        let stats = transport.stats();
        stats.received + stats.dropped_rate == 50
    })
    .await;
    let stats = transport.stats();
    assert!((5..=6).contains(&stats.received), "{stats:?}");
    let mut delivered = 0;
    while rx.try_recv().is_ok() {
        delivered += 1;
    }
    assert_eq!(delivered, stats.received);

    // An exempted source (the trunk) is not limited.
    transport.set_rate_exempt([local.ip()]);
    for _ in 0..50 {
        flood.send_to(b"trunk traffic", local).await.unwrap();
    }
    eventually("all exempt datagrams delivered", || {
        transport.stats().received == stats.received + 50
    })
    .await;
    assert_eq!(transport.stats().dropped_rate, stats.dropped_rate);
}

#[tokio::test]
async fn tcp_messages_over_the_rate_are_dropped_but_the_connection_stays() {
    let mut cfg = config(&[TransportKind::Tcp]);
    cfg.limits.rate = RateConfig {
        messages_per_second: 1,
        burst: 3,
        max_sources: 16,
    };
    let (transport, mut rx) = start(cfg).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    // The accept itself takes one token.
    let mut peer = TcpStream::connect(local).await.unwrap();
    let burst: String = (0..10)
        .map(|i| request(TransportKind::Tcp, &format!("burst{i}"), ""))
        .collect();
    peer.write_all(burst.as_bytes()).await.unwrap();
    eventually("ten messages accounted for", || {
        let stats = transport.stats();
        stats.received + stats.dropped_rate == 10
    })
    .await;
    let first = recv(&mut rx).await;
    assert!(first.bytes.starts_with(b"OPTIONS"));
    let stats = transport.stats();
    assert!((2..=3).contains(&stats.received), "{stats:?}");
    assert_eq!(stats.connections, 1);
}

struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A CA and a server certificate for `sip.test` and 127.0.0.1 signed by it.
fn pki(ca_name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["sip.test".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "sip.test");
    let cert = params.signed_by(&server_key, &ca).unwrap();
    Pki {
        ca: ca.der().clone(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    }
}

async fn tls_server(pki: &Pki) -> (Transport, Receiver<Inbound>, SocketAddr) {
    let mut cfg = config(&[TransportKind::Tls]);
    cfg.tls_server = Some(tls::server_config(pki.chain.clone(), pki.key.clone_key()).unwrap());
    let (server, rx) = start(cfg).await;
    let addr = server.local_addr(TransportKind::Tls).unwrap();
    (server, rx, addr)
}

async fn tls_client(trusted: &CertificateDer<'static>) -> (Transport, Receiver<Inbound>) {
    let mut cfg = config(&[]);
    cfg.tls_client =
        Some(tls::client_config(&TrustRoots::Certificates(vec![trusted.clone()])).unwrap());
    start(cfg).await
}

#[tokio::test]
async fn tls_with_a_good_certificate_carries_messages_both_ways() {
    let pki = pki("Branch Test CA");
    let (server, mut server_rx, addr) = tls_server(&pki).await;
    let (client, mut client_rx) = tls_client(&pki.ca).await;
    let msg = request(TransportKind::Tls, "tls-good", "secret");
    let sent = client
        .send(Outbound::new(TransportKind::Tls, addr, msg.clone()).with_server_name("sip.test"))
        .await
        .unwrap();
    let got = recv(&mut server_rx).await;
    assert_eq!(got.bytes, msg.as_bytes());
    assert_eq!(got.kind, TransportKind::Tls);
    let response = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    server
        .send(Outbound::over_flow(&got.flow(), response))
        .await
        .unwrap();
    let back = recv(&mut client_rx).await;
    assert_eq!(back.bytes, response.as_bytes());
    assert_eq!(back.connection, sent.connection);

    // Without a server name the certificate is checked against the IP address.
    let (by_ip, _rx) = tls_client(&pki.ca).await;
    by_ip
        .send(Outbound::new(TransportKind::Tls, addr, msg.clone()))
        .await
        .unwrap();
    recv(&mut server_rx).await;
    assert_eq!(client.stats().tls_failures + server.stats().tls_failures, 0);
}

#[tokio::test]
async fn tls_with_a_certificate_from_another_ca_is_refused() {
    let pki = pki("Branch Test CA");
    let other = self::pki("Some Other CA");
    let (server, mut server_rx, addr) = tls_server(&pki).await;
    let (client, _rx) = tls_client(&other.ca).await;
    let err = client
        .send(
            Outbound::new(
                TransportKind::Tls,
                addr,
                request(TransportKind::Tls, "x", ""),
            )
            .with_server_name("sip.test"),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::TlsHandshake { .. }), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert_eq!(client.stats().tls_failures, 1);
    assert_eq!(client.stats().connections, 0);
    eventually("the server to count the failed handshake", || {
        server.stats().tls_failures == 1
    })
    .await;
    assert!(server_rx.try_recv().is_err());
}

#[tokio::test]
async fn tls_with_the_wrong_host_name_is_refused() {
    let pki = pki("Branch Test CA");
    let (_server, mut server_rx, addr) = tls_server(&pki).await;
    let (client, _rx) = tls_client(&pki.ca).await;
    let err = client
        .send(
            Outbound::new(
                TransportKind::Tls,
                addr,
                request(TransportKind::Tls, "y", ""),
            )
            .with_server_name("trunk.example.net"),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::TlsHandshake { .. }), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
    assert!(text.contains("trunk.example.net"), "{text}");
    assert_eq!(client.stats().tls_failures, 1);
    assert!(server_rx.try_recv().is_err());
}

#[tokio::test]
async fn tls_misconfiguration_fails_with_a_clear_error() {
    let (plain, _rx) = start(config(&[TransportKind::Tcp])).await;
    let dest = plain.local_addr(TransportKind::Tcp).unwrap();
    let err = plain
        .send(Outbound::new(TransportKind::Tls, dest, "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TlsClientMissing { .. }), "{err}");

    let pki = pki("Branch Test CA");
    let (client, _rx) = tls_client(&pki.ca).await;
    let err = client
        .send(Outbound::new(TransportKind::Tls, dest, "x").with_server_name("bad name!"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidServerName { .. }), "{err}");

    // A plaintext peer on a TLS listener is a failed handshake, not a message.
    let (server, mut server_rx, addr) = tls_server(&pki).await;
    let mut plaintext = TcpStream::connect(addr).await.unwrap();
    plaintext
        .write_all(request(TransportKind::Tcp, "plain", "").as_bytes())
        .await
        .unwrap();
    closed_by_peer(&mut plaintext).await;
    eventually("the handshake failure", || server.stats().tls_failures == 1).await;
    assert!(server_rx.try_recv().is_err());

    let err = Transport::bind(
        {
            let mut cfg = config(&[TransportKind::Tls]);
            cfg.tls_server = None;
            cfg
        },
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::TlsServerMissing { .. }), "{err}");
}

#[tokio::test]
async fn reuse_only_sends_never_dial_and_shutdown_stops_everything() {
    let (transport, _rx) = start(config(&[TransportKind::Tcp, TransportKind::Udp])).await;
    let tcp = transport.local_addr(TransportKind::Tcp).unwrap();
    let err = transport
        .send(Outbound::new(TransportKind::Tcp, tcp, "x").with_policy(ConnectPolicy::ReuseOnly))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NoConnection { hint: None, .. }),
        "{err}"
    );
    assert_eq!(transport.stats().connections_opened, 0);

    // Binding a port that is taken names the listener.
    let taken = TransportConfig::new(vec![ListenerConfig {
        kind: TransportKind::Tcp,
        addr: tcp,
    }]);
    let err = Transport::bind(taken, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&tcp.to_string()), "{err}");

    let clone = transport.clone();
    with_timeout(transport.shutdown()).await;
    let err = clone
        .send(Outbound::new(TransportKind::Udp, tcp, "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Shutdown), "{err}");
    assert!(
        TcpStream::connect(tcp).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_response_whose_connection_closed_goes_over_a_new_one_to_the_via() {
    let (transport, mut rx) = start(config(&[TransportKind::Tcp])).await;
    let local = transport.local_addr(TransportKind::Tcp).unwrap();
    // The phone's own listener, named in its Via as the sent-by.
    let phone_listener = TcpListener::bind(any_port()).await.unwrap();
    let sent_by = phone_listener.local_addr().unwrap();
    let mut phone = TcpStream::connect(local).await.unwrap();
    phone
        .write_all(request(TransportKind::Tcp, "gone", "").as_bytes())
        .await
        .unwrap();
    let inbound = recv(&mut rx).await;
    drop(phone);
    eventually("the connection to close", || {
        transport.stats().connections == 0
    })
    .await;

    // RFC 3261 18.2.2: the connection is gone, so open one to received + sent-by port.
    let via_value = format!("SIP/2.0/TCP 10.0.0.7:{};branch=z9hG4bKgone", sent_by.port());
    let rewritten = via::rewrite_top_via(&via_value, inbound.peer).unwrap();
    let top = via::parse_top_via(&rewritten).unwrap();
    let ResponseRoute::Send(route) = via::response_route(&top, &inbound.flow()) else {
        panic!("expected a route")
    };
    assert_eq!(route.dest, sent_by);
    let response = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    let sent = transport
        .send(Outbound::along(&route, response))
        .await
        .unwrap();
    assert_ne!(sent.connection, inbound.connection);
    let (mut back, _) = with_timeout(phone_listener.accept()).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_message(&mut back, &mut buf).await, response.as_bytes());
}

#[tokio::test]
async fn a_peer_that_stops_reading_gets_backpressure_then_is_closed() {
    let mut cfg = config(&[TransportKind::Tcp]);
    cfg.limits.connection_queue = 2;
    cfg.limits.write_timeout = Duration::from_millis(500);
    let (transport, _rx) = start(cfg).await;
    let sink = TcpListener::bind(any_port()).await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        // Accepts and never reads.
        let (stream, _) = sink.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stream);
    });
    let big = vec![b'z'; 60 * 1024];
    let mut refused = None;
    for _ in 0..2000 {
        match transport
            .send(Outbound::new(TransportKind::Tcp, sink_addr, big.clone()))
            .await
        {
            Ok(_) => tokio::task::yield_now().await,
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let err = refused.expect("the queue never filled");
    assert!(matches!(err, Error::Backpressure { .. }), "{err}");
    assert!(transport.stats().send_backpressure >= 1);
    // The stuck write times out and the connection is dropped.
    eventually("the stuck connection to close", || {
        transport.stats().connections == 0
    })
    .await;
    hold.abort();
}

/// The UDP listener's receive buffer holds a burst that arrives while the endpoint
/// does not read: 500 INVITE-sized datagrams sent while the (single-threaded) runtime
/// is blocked for 300 ms all arrive afterwards. With Linux's default buffer (208 KiB,
/// about 100 such datagrams as loopback accounts them) most of them were dropped.
#[tokio::test]
async fn udp_receive_buffer_holds_a_burst_sent_while_the_endpoint_stalls() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("rmem_max")
        .trim()
        .parse()
        .expect("number");
    let mut cfg = config(&[TransportKind::Udp]);
    cfg.limits.rate = RateConfig {
        messages_per_second: 10_000,
        burst: 10_000,
        ..RateConfig::default()
    };
    let (transport, mut rx) = start(cfg).await;
    let local = transport.local_addr(TransportKind::Udp).unwrap();
    // Linux reports twice what it grants, and grants at most rmem_max.
    let granted = transport.udp_receive_buffer(local).expect("buffer") / 2;
    assert_eq!(granted, DEFAULT_UDP_RECEIVE_BUFFER.min(rmem_max));
    if rmem_max < DEFAULT_UDP_RECEIVE_BUFFER {
        // The box's image raises the cap (image overlay, usr/lib/sysctl.d) and so does
        // `.ci/run`; a developer machine with the kernel's default cap cannot hold
        // the burst, which is what the setting is for.
        eprintln!("net.core.rmem_max is {rmem_max}: burst part skipped (needs 1 MiB)");
        return;
    }

    const BURST: usize = 500;
    let body = "v=0\r\n".repeat(80);
    let sender = std::thread::spawn(move || {
        let phone = std::net::UdpSocket::bind(any_port()).unwrap();
        for i in 0..BURST {
            let m = request(TransportKind::Udp, &format!("burst{i}"), &body);
            phone.send_to(m.as_bytes(), local).unwrap();
        }
    });
    // Block the runtime's only thread: the receive loop cannot run meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    sender.join().unwrap();
    for _ in 0..BURST {
        recv(&mut rx).await;
    }
    assert_eq!(transport.stats().received, BURST as u64);
}

/// `udp_receive_buffer = 0` leaves the kernel's default.
#[tokio::test]
async fn udp_receive_buffer_zero_leaves_the_kernel_default() {
    let rmem_default: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .expect("rmem_default")
        .trim()
        .parse()
        .expect("number");
    let mut cfg = config(&[TransportKind::Udp]);
    cfg.limits.udp_receive_buffer = 0;
    let (transport, _rx) = start(cfg).await;
    let local = transport.local_addr(TransportKind::Udp).unwrap();
    assert_eq!(transport.udp_receive_buffer(local), Some(rmem_default));
}
