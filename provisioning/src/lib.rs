//! Branchline provisioning: signed USB bundles, QR enrollment tokens and `branch-prov`.

#![forbid(unsafe_code)]
