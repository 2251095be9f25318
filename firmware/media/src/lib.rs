//! Media for branchd: RTP/RTCP, jitter buffer, RFC 4733 telephone-events, PLC, call quality stats
//!
//! (Skeleton: modules land with issue 3.)
#![forbid(unsafe_code)]
