//! End-to-end tests: the real `branchd` binary on the simulated board.
//!
//! Each test starts its own simulated line controller (a pty pair played by
//! `branchline_board::sim`) and its own `branchd` process whose config points at the
//! simulator's tty, exactly as a real box points at its UART; then it lifts handsets,
//! dials, injects audio and reads what the other side hears, and finally checks the
//! SQLite store the daemon wrote. The only network used is the daemon's web API on a
//! loopback port.

mod api_client;
mod browser;
mod fault_proxy;
mod harness;

mod accounts_api;
mod analog_calls;
mod blacklist;
mod call_center;
mod campaigns;
mod daemon_lifecycle;
mod enroll_e2e;
mod factory_reset;
mod health_check;
mod pickup;
mod provision_token;
mod provision_usb;
mod pstn;
mod queue_burst;
mod reboot;
mod recording;
mod screen_pop;
mod sip_baresip;
mod sip_calls;
mod sip_kamailio;
mod sip_media;
mod sip_media_timeout;
mod sip_prack;
mod sip_session_timer;
mod sip_transfer;
mod supervisor;
mod sync_faults;
mod sync_files;
mod sync_hq;
mod tools;
mod update_e2e;
mod update_hq;
mod voicemail;
mod web_browser;
mod web_https;
