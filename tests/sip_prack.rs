//! Early media for a late-offer SIP caller (RFC 3262 100rel/PRACK): the carrier (SIPp
//! from 127.0.0.1, the trunk's address) calls SIP phone 201 (a SIPp UAS registered
//! from 127.0.0.1 too) with an INVITE without SDP and `Supported: 100rel`; the phone
//! answers 183 with SDP and plays RTP. The box must send a reliable 183 with its
//! offer, take the answer from the PRACK and bridge the phone's early media to the
//! port that answer names (a UDP socket of the test) before the 200, and end the
//! call cleanly when the PRACK brings no usable answer or the caller cancels. A
//! late-offer caller without 100rel gets a plain 180 instead (an offer in an
//! unreliable 1xx could not be answered) and the box's offer in the 200.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use line_proto::g711::Law;

use crate::harness::{Gateway, DIAL_PLAN, SOON};
use crate::sip_calls::{free_port, register, sip_addr, sipp, wait_sipp, SIP_PLAN};

/// The SIP accounts of [`SIP_PLAN`] plus a trunk at 127.0.0.1 (not registered: the
/// carrier is known by its address).
fn gateway() -> Gateway {
    let trunk_port = free_port();
    let gw = Gateway::start_with(&format!(
        r#"{DIAL_PLAN}
{SIP_PLAN}
[sip.trunk]
servers = ["127.0.0.1:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
register = false
keepalive_s = 0
"#
    ));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    gw
}

/// A copy of scenario `name` (in `data/sip`) with its placeholders replaced.
fn scenario(gw: &Gateway, name: &str, values: &[(&str, &str)]) -> String {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/sip")
        .join(name);
    let mut text = std::fs::read_to_string(source).expect("scenario");
    for (placeholder, value) in values {
        assert!(text.contains(placeholder), "{name} has no {placeholder}");
        text = text.replace(placeholder, value);
    }
    let path = gw.dir.path().join(name);
    std::fs::write(&path, text).expect("write scenario");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Phone 201 registered from a free port; returns the port.
fn phone_201(gw: &Gateway) -> u16 {
    let port = free_port();
    register(gw, "201", "desk-phone-pass-one", port);
    port
}

/// The carrier's late-offer call to 201 running `scenario`, with its answer's media
/// on `rtp` (0: the scenario sends none).
fn carrier_call(gw: &Gateway, scenario: &str, rtp: u16) -> std::process::Child {
    let rtp = rtp.to_string();
    let mut args = vec!["-s", "201", "-set", "caller", "+4930777", "-m", "1"];
    if rtp != "0" {
        args.extend(["-set", "rtp", &rtp]);
    }
    sipp(scenario, sip_addr(gw), free_port(), &args)
        .spawn()
        .expect("sipp carrier starts")
}

/// A-law RTP (payload type 8) read from `socket` until `samples` samples came or
/// `within` passed: the samples and the address they came from.
fn read_alaw(
    socket: &UdpSocket,
    samples: usize,
    within: Duration,
) -> (Vec<i16>, Option<SocketAddr>) {
    let mut pcm = Vec::new();
    let mut from = None;
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1500];
    while pcm.len() < samples && Instant::now() < deadline {
        let Ok((n, source)) = socket.recv_from(&mut buf) else {
            continue;
        };
        // RTP: 12-byte header (no CSRCs, no extension from the box).
        if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 8 {
            pcm.extend(buf[12..n].iter().map(|&b| Law::Alaw.decode(b)));
            from = Some(source);
        }
    }
    (pcm, from)
}

fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

/// Sends `packets` 20 ms A-law packets of a 1 kHz tone from `socket` to `to`.
fn send_alaw(socket: &UdpSocket, to: SocketAddr, packets: u16) {
    for seq in 0..packets {
        let mut packet = vec![0x80, 8];
        packet.extend(seq.to_be_bytes());
        packet.extend((u32::from(seq) * 160).to_be_bytes());
        packet.extend(0x4242_4242u32.to_be_bytes());
        packet.extend((0..160).map(|i| {
            let phase = f64::from(u32::from(seq) * 160 + i) * 2.0 * std::f64::consts::PI / 8.0;
            Law::Alaw.encode((phase.sin() * 8000.0) as i16)
        }));
        socket.send_to(&packet, to).expect("send rtp");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The test's media socket: a free port, reads time out quickly.
fn media_socket() -> (UdpSocket, u16) {
    let port = free_port();
    let socket = UdpSocket::bind(("127.0.0.1", port)).expect("rtp socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    (socket, port)
}

#[test]
fn late_offer_caller_with_100rel_gets_our_offer_in_a_reliable_183_and_hears_early_media_before_the_200(
) {
    let gw = gateway();
    let phone_port = phone_201(&gw);
    let phone = sipp(
        &scenario(&gw, "uas_phone_early_media.xml", &[("ANSWER_MS", "2500")]),
        sip_addr(&gw),
        phone_port,
        &["-m", "1"],
    )
    .spawn()
    .expect("sipp phone starts");
    std::thread::sleep(Duration::from_millis(300));
    let (rtp, rtp_port) = media_socket();
    // The scenario checks the reliable 183 (Require: 100rel, RSeq, our offer), PRACKs
    // with its answer on `rtp_port`, and fails on SDP in the 200.
    let mut carrier = carrier_call(
        &gw,
        &scenario(
            &gw,
            "uac_trunk_late_offer_100rel.xml",
            &[("PRACK_DELAY_MS", "1")],
        ),
        rtp_port,
    );
    // The phone's early media arrives on the port the PRACK's answer named, before
    // the phone's 200 (2.5 s after its 183) reached the box.
    let (mut early, box_rtp) = read_alaw(&rtp, 1600, SOON);
    let answered_yet = gw.log_text().contains("outgoing sip call answered");
    assert!(
        early.len() >= 1600,
        "only {} samples of early media (carrier: {}):\n{}",
        early.len(),
        crate::sip_calls::sipp_state(&mut carrier),
        gw.log_text()
    );
    assert!(
        !answered_yet,
        "the early media must flow before the 200 (it came after it)"
    );
    early.extend(read_alaw(&rtp, 8000, SOON).0);
    assert!(
        rms(&early) > 100.0,
        "early media is the phone's speech (rms {:.0})",
        rms(&early)
    );
    assert!(gw.log_text().contains("SDP answer in the PRACK"));
    // And the other way: the caller's RTP to the port the box sends from.
    let box_rtp = box_rtp.expect("the box's RTP address");
    send_alaw(&rtp, box_rtp, 25);
    assert!(
        gw.wait_log("outgoing sip call answered", SOON),
        "the phone's 200 not taken:\n{}",
        gw.log_text()
    );
    // The media goes on after the answer, with no new offer/answer.
    let (after, _) = read_alaw(&rtp, 2400, SOON);
    assert!(
        after.len() >= 2400 && rms(&after) > 100.0,
        "the media goes on after the 200 ({} samples, rms {:.0})",
        after.len(),
        rms(&after)
    );
    wait_sipp(carrier, "late-offer carrier with 100rel", &gw);
    wait_sipp(phone, "phone with early media", &gw);
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(cdrs[0].disposition, "answered");
    assert_eq!(cdrs[0].callee, "201");
    // Both legs had their media: the caller's RTP reached the box on its leg.
    let caller_mos: Option<f64> = gw
        .db()
        .query_row(
            "SELECT caller_mos FROM cdrs WHERE call_id = ?1",
            [&cdrs[0].call_id],
            |r| r.get(0),
        )
        .expect("cdr row");
    assert!(caller_mos.is_some(), "no caller leg quality on the CDR");
}

#[test]
fn late_offer_caller_whose_far_end_answers_before_the_prack_gets_the_200_after_it() {
    let gw = gateway();
    let phone_port = phone_201(&gw);
    // The phone answers 200 ms after its 183; the carrier PRACKs 1.2 s after the
    // 183 (or its last retransmission), and its
    // scenario fails on a 200 to the INVITE before the PRACK's own 200.
    let phone = sipp(
        &scenario(&gw, "uas_phone_early_media.xml", &[("ANSWER_MS", "200")]),
        sip_addr(&gw),
        phone_port,
        &["-m", "1"],
    )
    .spawn()
    .expect("sipp phone starts");
    std::thread::sleep(Duration::from_millis(300));
    let (rtp, rtp_port) = media_socket();
    let carrier = carrier_call(
        &gw,
        &scenario(
            &gw,
            "uac_trunk_late_offer_100rel.xml",
            &[("PRACK_DELAY_MS", "1200")],
        ),
        rtp_port,
    );
    assert!(
        gw.wait_log("answer waits for the PRACK", SOON),
        "the answer did not wait for the PRACK:\n{}",
        gw.log_text()
    );
    let (media, _) = read_alaw(&rtp, 12_000, SOON);
    assert!(
        media.len() >= 12_000 && rms(&media) > 100.0,
        "the phone is heard once the PRACK came ({} samples, rms {:.0}):\n{}",
        media.len(),
        rms(&media),
        gw.log_text()
    );
    wait_sipp(carrier, "late-offer carrier PRACKing late", &gw);
    wait_sipp(phone, "phone answering at once", &gw);
    assert_eq!(gw.wait_cdrs(1)[0].disposition, "answered");
}

#[test]
fn late_offer_caller_without_100rel_gets_a_plain_180_and_our_offer_in_the_200_despite_early_media()
{
    let gw = gateway();
    let phone_port = phone_201(&gw);
    // The phone plays early media for 1 s, then answers; its pcap goes on after.
    let phone = sipp(
        &scenario(&gw, "uas_phone_early_media.xml", &[("ANSWER_MS", "1000")]),
        sip_addr(&gw),
        phone_port,
        &["-m", "1"],
    )
    .spawn()
    .expect("sipp phone starts");
    std::thread::sleep(Duration::from_millis(300));
    let (rtp, rtp_port) = media_socket();
    // The scenario fails on a 183, on SDP, RSeq or Require: 100rel in the 180, and on
    // a 200 without our offer; it answers that offer in the ACK with `rtp_port`.
    let carrier = carrier_call(&gw, "uac_trunk_late_offer_no_100rel.xml", rtp_port);
    let (media, _) = read_alaw(&rtp, 4000, SOON);
    let log = gw.log_text();
    assert!(
        media.len() >= 4000 && rms(&media) > 100.0,
        "the phone is heard once the ACK's answer came ({} samples, rms {:.0}):\n{log}",
        media.len(),
        rms(&media),
    );
    assert!(log.contains("SDP answer in the ACK"), "{log}");
    assert!(!log.contains("SDP answer in the PRACK"), "{log}");
    wait_sipp(carrier, "late-offer carrier without 100rel", &gw);
    wait_sipp(phone, "phone with early media", &gw);
    assert_eq!(gw.wait_cdrs(1)[0].disposition, "answered");
}

/// The carrier's scenario `name` ends the call before any answer (a PRACK without a
/// usable answer, or a CANCEL); the phone must see the box's CANCEL and the CDR is
/// not answered.
fn refused_late_offer(name: &str, log: &str) {
    let gw = gateway();
    let phone_port = phone_201(&gw);
    let phone = sipp(
        "uas_phone_early_media_cancelled.xml",
        sip_addr(&gw),
        phone_port,
        &["-m", "1"],
    )
    .spawn()
    .expect("sipp phone starts");
    std::thread::sleep(Duration::from_millis(300));
    let carrier = carrier_call(&gw, name, 0);
    wait_sipp(carrier, name, &gw);
    wait_sipp(phone, "phone cancelled by the box", &gw);
    assert!(
        gw.log_text().contains(log),
        "no {log:?} in:\n{}",
        gw.log_text()
    );
    let cdrs = gw.wait_cdrs(1);
    assert_ne!(cdrs[0].disposition, "answered");
    assert!(!cdrs[0].answered);
}

#[test]
fn prack_without_an_answer_to_our_offer_gets_488_and_the_far_end_is_cancelled() {
    refused_late_offer(
        "uac_trunk_late_offer_prack_no_answer.xml",
        "PRACK without a usable SDP answer",
    );
}

#[test]
fn prack_with_an_unusable_answer_gets_488_and_the_far_end_is_cancelled() {
    refused_late_offer(
        "uac_trunk_late_offer_prack_g729.xml",
        "PRACK without a usable SDP answer",
    );
}

#[test]
fn late_offer_caller_cancelling_before_its_prack_gets_487_and_the_far_end_is_cancelled() {
    refused_late_offer("uac_trunk_late_offer_cancel.xml", "caller cancelled");
}

#[test]
fn late_offer_caller_that_never_pracks_gets_500_after_64_t1_and_the_far_end_is_cancelled() {
    // 64*T1 is 32 s: longer than the dial plan's ring timeout and SIPp's default.
    let trunk_port = free_port();
    let gw = Gateway::start_with(&format!(
        r#"{}
{SIP_PLAN}
[sip.trunk]
servers = ["127.0.0.1:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
register = false
keepalive_s = 0
"#,
        DIAL_PLAN.replace("ring_timeout_ms = 20000", "ring_timeout_ms = 60000")
    ));
    assert!(gw.wait_log("sip endpoint listening", SOON));
    let phone_port = phone_201(&gw);
    let phone = sipp(
        "uas_phone_early_media_cancelled.xml",
        sip_addr(&gw),
        phone_port,
        &["-m", "1", "-timeout", "60s"],
    )
    .spawn()
    .expect("sipp phone starts");
    std::thread::sleep(Duration::from_millis(300));
    let carrier = sipp(
        "uac_trunk_late_offer_no_prack.xml",
        sip_addr(&gw),
        free_port(),
        &[
            "-s", "201", "-set", "caller", "+4930777", "-m", "1", "-timeout", "60s",
        ],
    )
    .spawn()
    .expect("sipp carrier starts");
    assert!(
        gw.wait_log("no PRACK for our reliable 1xx", Duration::from_secs(45)),
        "no PRACK timeout:\n{}",
        gw.log_text()
    );
    wait_sipp(carrier, "carrier that never PRACKs", &gw);
    wait_sipp(phone, "phone cancelled by the box", &gw);
    let cdrs = gw.wait_cdrs(1);
    assert!(!cdrs[0].answered);
}

#[test]
fn require_100rel_makes_the_180_reliable_and_the_late_offer_goes_in_the_200() {
    let gw = gateway();
    let (rtp, rtp_port) = media_socket();
    // To analog phone 101 (no early media): the scenario checks the reliable 180,
    // PRACKs it, takes our offer from the 200 and answers in the ACK.
    let carrier = sipp(
        "uac_trunk_require_100rel.xml",
        sip_addr(&gw),
        free_port(),
        &[
            "-s",
            "101",
            "-set",
            "caller",
            "+4930777",
            "-set",
            "rtp",
            &rtp_port.to_string(),
            "-m",
            "1",
        ],
    )
    .spawn()
    .expect("sipp carrier starts");
    let phone = gw.sim.phone(1);
    assert!(
        crate::harness::wait(SOON, || phone.is_ringing()),
        "FXS 1 does not ring:\n{}",
        gw.log_text()
    );
    assert!(
        gw.wait_log("PRACK for our reliable 1xx", SOON),
        "the reliable 180 was not PRACKed:\n{}",
        gw.log_text()
    );
    phone.off_hook();
    assert!(
        gw.wait_log("SDP answer in the ACK", SOON),
        "no answer taken from the ACK:\n{}",
        gw.log_text()
    );
    // The media runs from the ACK's answer: the phone's side reaches our socket.
    let (pcm, _) = read_alaw(&rtp, 1600, SOON);
    assert!(pcm.len() >= 1600, "no RTP after the answer in the ACK");
    phone.on_hook();
    wait_sipp(carrier, "carrier requiring 100rel", &gw);
    assert_eq!(gw.wait_cdrs(1)[0].disposition, "answered");
}

#[test]
fn invite_requiring_an_unsupported_extension_gets_420_naming_it() {
    let gw = gateway();
    // From 127.0.0.1: a trunk call, taken without a challenge.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let local = socket.local_addr().expect("addr");
    let invite = format!(
        "INVITE sip:101@branch.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKreq420;rport\r\n\
         From: <sip:+4930777@carrier.test>;tag=r420\r\nTo: <sip:101@branch.test>\r\n\
         Call-ID: req420@carrier\r\nCSeq: 1 INVITE\r\nContact: <sip:+4930777@{local}>\r\n\
         Require: precondition, timer, 100rel\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket
        .send_to(invite.as_bytes(), sip_addr(&gw))
        .expect("send");
    let deadline = Instant::now() + SOON;
    let mut buf = [0u8; 4096];
    let mut final_response = None;
    while final_response.is_none() && Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            final_response = Some(text);
        }
    }
    let response = final_response.expect("a final response");
    assert!(response.starts_with("SIP/2.0 420"), "{response}");
    let unsupported = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("unsupported:"))
        .unwrap_or_default();
    assert!(
        // `timer` (RFC 4028) and `100rel` (RFC 3262) are supported; `precondition` is not.
        unsupported.contains("precondition")
            && !unsupported.contains("timer")
            && !unsupported.contains("100rel"),
        "{response}"
    );
    // Nothing rang: the call never reached call control.
    assert!(!gw.sim.phone(1).is_ringing());
    assert!(!gw.log_text().contains("incoming sip call"));
}

#[test]
fn late_offer_caller_with_100rel_hears_the_queue_music_as_early_media_after_its_prack() {
    let mut gw = crate::sip_calls::trunk_gateway();
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms,
                                 music_on_hold, moh_prompt)
                 VALUES ('support', '7002', 'ring_all', 8000, 1000, 'prompt', 'holdmusic');",
        )
        .expect("queue row");
    }
    let dir = gw.data_dir().join("prompts");
    std::fs::create_dir_all(&dir).expect("prompts dir");
    crate::call_center::write_prompt(&dir, "holdmusic", 700.0, 1000);
    gw.restart();
    assert!(gw.wait_log_count("sip endpoint listening", 2, SOON));
    let (rtp, rtp_port) = media_socket();
    // The scenario checks the reliable 183 with our offer, PRACKs it with its answer
    // on `rtp_port`, fails on a 200 to the INVITE and cancels after 3 s.
    let mut carrier = sipp(
        "uac_trunk_late_offer_queue.xml",
        sip_addr(&gw),
        free_port(),
        &[
            "-s",
            "7002",
            "-set",
            "caller",
            "+4930777",
            "-set",
            "rtp",
            &rtp_port.to_string(),
            "-m",
            "1",
        ],
    )
    .spawn()
    .expect("sipp carrier starts");
    let (pcm, _) = read_alaw(&rtp, 8000, SOON);
    assert!(
        pcm.len() >= 8000,
        "only {} samples of queue music (carrier: {}):\n{}",
        pcm.len(),
        crate::sip_calls::sipp_state(&mut carrier),
        gw.log_text()
    );
    assert!(
        crate::harness::hears(&pcm, 700.0),
        "the RTP carries the music prompt"
    );
    assert!(gw.log_text().contains("SDP answer in the PRACK"));
    wait_sipp(carrier, "late-offer queue caller", &gw);
    assert!(
        crate::harness::wait(SOON, || gw
            .db()
            .query_row(
                "SELECT answered_at_ms IS NULL FROM cdrs WHERE caller = '+4930777'",
                [],
                |r| r.get::<_, bool>(0)
            )
            .unwrap_or(false)),
        "no unanswered CDR:\n{}",
        gw.log_text()
    );
}

#[test]
fn late_offer_caller_hanging_up_in_the_early_dialog_gets_487_and_the_far_end_is_cancelled() {
    refused_late_offer("uac_trunk_late_offer_bye_early.xml", "far end hung up");
}

#[test]
fn require_100rel_with_an_offer_makes_the_183_with_our_answer_reliable() {
    let gw = gateway();
    let phone_port = phone_201(&gw);
    let phone = sipp(
        &scenario(&gw, "uas_phone_early_media.xml", &[("ANSWER_MS", "2500")]),
        sip_addr(&gw),
        phone_port,
        &["-m", "1"],
    )
    .spawn()
    .expect("sipp phone starts");
    std::thread::sleep(Duration::from_millis(300));
    let (rtp, rtp_port) = media_socket();
    // The scenario checks the 183 with our answer is reliable, PRACKs it, and takes
    // the same answer in the 200.
    let mut carrier = carrier_call(&gw, "uac_trunk_require_100rel_offer.xml", rtp_port);
    let (early, _) = read_alaw(&rtp, 1600, SOON);
    let answered_yet = gw.log_text().contains("outgoing sip call answered");
    assert!(
        early.len() >= 1600,
        "only {} samples of early media (carrier: {}):\n{}",
        early.len(),
        crate::sip_calls::sipp_state(&mut carrier),
        gw.log_text()
    );
    assert!(!answered_yet, "the early media must flow before the 200");
    assert!(gw.log_text().contains("PRACK for our reliable 1xx"));
    wait_sipp(carrier, "carrier with an offer requiring 100rel", &gw);
    wait_sipp(phone, "phone with early media", &gw);
    assert_eq!(gw.wait_cdrs(1)[0].disposition, "answered");
}
