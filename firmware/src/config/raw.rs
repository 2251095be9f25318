//! Stage one of config loading: the file as serde sees it.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently ignored
//! setting. Values that are checked later keep their [`Spanned`] location so the
//! validation error can name the line.

use serde::Deserialize;
use toml::Spanned;

use super::LogFormat;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub site: RawSite,
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub board: RawBoard,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub telephony: RawTelephony,
    #[serde(default)]
    pub extensions: Vec<RawExtension>,
    #[serde(default)]
    pub fxo_lines: Vec<RawFxoLine>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub privacy: RawPrivacy,
    #[serde(default)]
    pub web: RawWeb,
    pub hq: Option<RawHq>,
    #[serde(default)]
    pub wan: RawWan,
    pub media: Option<RawMedia>,
    #[serde(default)]
    pub sip_accounts: Vec<RawSipAccount>,
    pub sip: Option<super::sip::RawSip>,
    pub update: Option<super::update::RawUpdate>,
    pub provisioning: Option<super::provisioning::RawProvisioning>,
    pub recording: Option<super::recording::RawRecording>,
    pub call_center: Option<super::call_center::RawCallCenter>,
    pub voicemail: Option<super::voicemail::RawVoicemail>,
    #[serde(default)]
    pub conference_rooms: Vec<super::conference::RawConferenceRoom>,
}

/// `[media]`: RTP ports, the jitter buffer and the media inactivity timeouts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMedia {
    pub local_ip: Option<Spanned<String>>,
    pub rtp_port_min: Option<Spanned<i64>>,
    pub rtp_port_max: Option<Spanned<i64>>,
    pub jitter_min_ms: Option<Spanned<i64>>,
    pub jitter_max_ms: Option<Spanned<i64>>,
    pub rtp_timeout_s: Option<Spanned<i64>>,
    pub rtp_hold_timeout_s: Option<Spanned<i64>>,
}

/// One `[[sip_accounts]]` entry: a local SIP phone's extension and digest credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSipAccount {
    pub extension: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub password: Spanned<String>,
    pub international: Option<bool>,
    pub call_waiting: Option<bool>,
    pub permissions: Option<Vec<Spanned<String>>>,
}

/// `[hq]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHq {
    pub url: Spanned<String>,
    pub ca_cert: Spanned<String>,
    pub client_cert: Spanned<String>,
    pub client_key: Spanned<String>,
    pub box_id: Spanned<String>,
    pub batch_records: Option<Spanned<i64>>,
    pub long_poll_ms: Option<Spanned<i64>>,
    pub request_timeout_ms: Option<Spanned<i64>>,
    pub upload_interval_ms: Option<Spanned<i64>>,
    pub probe_interval_ms: Option<Spanned<i64>>,
    pub upload_bandwidth_kbps: Option<Spanned<i64>>,
    pub renew_at_percent: Option<Spanned<i64>>,
}

/// `[wan]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWan {
    pub trunk: Option<Spanned<String>>,
    pub trunk_transport: Option<Spanned<String>>,
    pub probe_interval_ms: Option<Spanned<i64>>,
}

/// `[web]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub listen: Option<Spanned<String>>,
    pub https: Option<Spanned<String>>,
    pub chart_sample_seconds: Option<Spanned<i64>>,
    pub call_sample_seconds: Option<Spanned<i64>>,
}

/// `[auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub max_failed_logins: Option<Spanned<i64>>,
    pub lockout_minutes: Option<Spanned<i64>>,
    pub installer_password_hash: Option<Spanned<String>>,
}

/// `[privacy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrivacy {
    pub mask_pattern: Option<Spanned<String>>,
}

/// `[site]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSite {
    pub box_serial: Option<Spanned<String>>,
}

/// `[paths]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPaths {
    pub data_dir: Option<Spanned<String>>,
    pub recordings: Option<Spanned<String>>,
    pub system_prompts: Option<Spanned<String>>,
}

/// `[board]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBoard {
    pub profile: Option<Spanned<String>>,
    pub uart: Option<Spanned<String>>,
    pub sim_console: Option<Spanned<String>>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub level: Option<Spanned<String>>,
    pub format: Option<LogFormat>,
}

/// `telephony.law`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawLaw {
    Ulaw,
    Alaw,
}

/// `[telephony]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelephony {
    pub country: Option<Spanned<String>>,
    pub law: Option<RawLaw>,
    pub first_digit_timeout_ms: Option<Spanned<i64>>,
    pub inter_digit_timeout_ms: Option<Spanned<i64>>,
    pub ring_timeout_ms: Option<Spanned<i64>>,
    pub outside_line_prefix: Option<Spanned<String>>,
    pub time_zone: Option<Spanned<String>>,
    pub echo_test_code: Option<Spanned<String>>,
}

/// One `[[extensions]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExtension {
    pub number: Spanned<String>,
    pub port: Spanned<i64>,
    pub name: Option<Spanned<String>>,
    pub call_waiting: Option<bool>,
    pub permissions: Option<Vec<Spanned<String>>>,
}

/// One `[[fxo_lines]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFxoLine {
    pub port: Spanned<i64>,
    pub inbound: Option<Vec<Spanned<String>>>,
    pub outbound: Option<Spanned<bool>>,
}
