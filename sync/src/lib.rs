//! Sync between a Branchline box and HQ.
#![forbid(unsafe_code)]
