//! The benchmark message, shared by `parse.rs` and `parse_cycles.rs`: a typical INVITE
//! with SDP as a desk phone sends it (about 850 bytes, 14 headers).

/// The message bytes.
pub const INVITE: &str = "INVITE sip:201@branch.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---4f1a2b3c4d5e6f70;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:100@192.0.2.10:5060;transport=udp>\r\n\
To: <sip:201@branch.example.com>\r\n\
From: \"Front Desk\" <sip:100@branch.example.com>;tag=a1b2c3d4\r\n\
Call-ID: 7f3e9a1c-2b4d-4e5f-8a6b-1c2d3e4f5a6b@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Content-Type: application/sdp\r\n\
Supported: replaces, norefersub, timer\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
Allow-Events: presence, kpml, talk\r\n\
Content-Length: 234\r\n\
\r\n\
v=0\r\n\
o=- 3917416829 3917416829 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 10000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";
