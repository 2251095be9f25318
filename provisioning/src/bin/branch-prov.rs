//! `branch-prov`: provisioning keys, bundles and QR tokens for HQ operators and installers.

fn main() {}
