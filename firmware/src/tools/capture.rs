//! Packet capture of the box's SIP and RTP traffic for the tools page, written as a
//! libpcap file (`pcap-file`), without libpcap.
//!
//! **How**: one `AF_PACKET` socket of type `SOCK_DGRAM` with protocol `ETH_P_ALL`
//! (packet(7)): the kernel hands over every IPv4/IPv6 packet of every interface, link
//! header removed, to this blocking thread, which keeps the UDP and TCP packets whose
//! source or destination port is one of the box's SIP listener ports or in its RTP
//! range ([`PortFilter`]) and writes them with link type `LINKTYPE_RAW` (101: the
//! packet starts at its IP header), timestamped when read. On the loopback interface
//! every packet shows twice (sent and received); the sent copy is skipped there, as
//! tcpdump does.
//!
//! **Why this and not a tap in our own sockets**: it records what really went over
//! the wire, including packets the SIP stack dropped (malformed, banned sources,
//! stray RTP) and ICMP-free UDP the media engine never read, which is what a
//! technician needs a capture for; it needs no change to the hot path of the SIP
//! transport or the media engine; and it works the same on the box and in the tests
//! (which run as root). The price: it needs `CAP_NET_RAW`. The image's systemd unit
//! grants `branchd` that capability (README, "Tools page"); without it the capture
//! answers [`CaptureError::Open`] with the reason (`EPERM`), never an empty file.
//!
//! Limits: every packet of the box is copied to user space while a capture runs (the
//! port filter is in user space, not a BPF program: fine for 60 s on a branch box);
//! IPv6 extension headers are not walked (such packets are skipped); TCP SIP is
//! captured by port, TLS SIP as the encrypted bytes it is; at most
//! [`MAX_CAPTURE_BYTES`] of packets are kept (the file says it was cut short in the
//! [`Capture`] summary, not inside the pcap).

use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    recvfrom, setsockopt, socket, sockopt, AddressFamily, LinkAddr, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

/// Most packet bytes one capture keeps (the pcap file is a little larger).
pub const MAX_CAPTURE_BYTES: usize = 32 * 1024 * 1024;
/// Bytes kept of one packet.
pub const SNAPLEN: u32 = 65_535;
/// `ARPHRD_LOOPBACK`.
const ARPHRD_LOOPBACK: u16 = 772;
/// `PACKET_OUTGOING`.
const PACKET_OUTGOING: u8 = 4;

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The packet socket could not be opened (typically `EPERM` without `CAP_NET_RAW`).
    #[error("cannot open a packet socket ({0}); branchd needs CAP_NET_RAW to capture")]
    Open(nix::Error),
    /// Reading it failed.
    #[error("reading the packet socket failed: {0}")]
    Read(nix::Error),
    /// Writing the pcap failed.
    #[error("writing the pcap failed: {0}")]
    Write(String),
    /// The capture thread failed.
    #[error("the capture thread failed: {0}")]
    Thread(String),
}

/// Which packets a capture keeps: UDP or TCP with a source or destination port among
/// the SIP ports or in the RTP range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFilter {
    sip: Vec<u16>,
    rtp: Option<RangeInclusive<u16>>,
}

impl PortFilter {
    /// The filter of the SIP listener ports and the RTP range.
    pub fn new(sip: Vec<u16>, rtp: Option<RangeInclusive<u16>>) -> PortFilter {
        PortFilter { sip, rtp }
    }

    fn port(&self, p: u16) -> bool {
        self.sip.contains(&p) || self.rtp.as_ref().is_some_and(|r| r.contains(&p))
    }

    /// Whether the IP packet `ip` (from its IP header on) is kept.
    pub fn keeps(&self, ip: &[u8]) -> bool {
        let Some((proto, l4)) = transport_of(ip) else {
            return false;
        };
        if !(proto == 17 || proto == 6) || l4.len() < 4 {
            return false;
        }
        let src = u16::from_be_bytes([l4[0], l4[1]]);
        let dst = u16::from_be_bytes([l4[2], l4[3]]);
        self.port(src) || self.port(dst)
    }
}

/// The transport protocol number and the bytes after the IP header (first fragment
/// only; IPv6 without extension headers).
fn transport_of(ip: &[u8]) -> Option<(u8, &[u8])> {
    match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let frag_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
            if ihl < 20 || frag_offset != 0 {
                return None;
            }
            Some((*ip.get(9)?, ip.get(ihl..)?))
        }
        6 => Some((*ip.get(6)?, ip.get(40..)?)),
        _ => None,
    }
}

/// A finished capture.
#[derive(Debug)]
pub struct Capture {
    /// The pcap file.
    pub pcap: Vec<u8>,
    /// Packets in it.
    pub packets: u64,
    /// Whether [`MAX_CAPTURE_BYTES`] cut it short.
    pub truncated: bool,
    /// When it started, ms since the Unix epoch.
    pub started_ms: i64,
}

/// Captures for `duration` (blocking: run on a blocking thread), keeping what
/// `filter` keeps, up to `max_bytes` of packets.
pub fn run(
    filter: &PortFilter,
    duration: Duration,
    max_bytes: usize,
) -> Result<Capture, CaptureError> {
    let fd = socket(
        AddressFamily::Packet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .map_err(CaptureError::Open)?;
    // Wake at least every 200 ms to see the deadline.
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000))
        .map_err(CaptureError::Open)?;
    let header = PcapHeader {
        snaplen: SNAPLEN,
        datalink: DataLink::RAW,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header)
        .map_err(|e| CaptureError::Write(e.to_string()))?;
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let deadline = Instant::now() + duration;
    let mut buf = vec![0u8; SNAPLEN as usize + 1];
    let (mut kept, mut packets, mut truncated) = (0usize, 0u64, false);
    while Instant::now() < deadline {
        let (n, from) = match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
            Ok(x) => x,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(CaptureError::Read(e)),
        };
        if let Some(from) = from {
            let ethertype = u16::from_be(from.protocol());
            if ethertype != 0x0800 && ethertype != 0x86dd {
                continue;
            }
            if from.hatype() == ARPHRD_LOOPBACK && from.pkttype() == PACKET_OUTGOING {
                continue;
            }
        }
        let packet = &buf[..n.min(SNAPLEN as usize)];
        if !filter.keeps(packet) {
            continue;
        }
        if kept + packet.len() > max_bytes {
            truncated = true;
            break;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let orig_len = u32::try_from(n).unwrap_or(u32::MAX);
        writer
            .write_packet(&PcapPacket::new(ts, orig_len, packet))
            .map_err(|e| CaptureError::Write(e.to_string()))?;
        kept += packet.len();
        packets += 1;
    }
    Ok(Capture {
        pcap: writer.into_writer(),
        packets,
        truncated,
        started_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(src: u16, dst: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        p.extend_from_slice(&src.to_be_bytes());
        p.extend_from_slice(&dst.to_be_bytes());
        p.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
        p
    }

    #[test]
    fn the_filter_keeps_sip_and_rtp_ports_only() {
        let f = PortFilter::new(vec![5060], Some(10_000..=10_999));
        assert!(f.keeps(&udp4(40_000, 5060)));
        assert!(f.keeps(&udp4(5060, 40_000)));
        assert!(f.keeps(&udp4(10_998, 20_000)));
        assert!(!f.keeps(&udp4(53, 40_000)));
        assert!(!f.keeps(&udp4(11_000, 9_999)));
        // ICMP is not kept even when the "ports" match.
        let mut icmp = udp4(5060, 5060);
        icmp[9] = 1;
        assert!(!f.keeps(&icmp));
        // A later fragment has no ports.
        let mut frag = udp4(5060, 5060);
        frag[7] = 8;
        assert!(!f.keeps(&frag));
        // Garbage and truncated headers.
        assert!(!f.keeps(&[]));
        assert!(!f.keeps(&[0x45, 0, 0]));
        assert!(!f.keeps(&udp4(5060, 5060)[..22]));
    }
}
