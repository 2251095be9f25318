//! `branchd.toml`: the daemon's config file, loaded in two stages.
//!
//! 1. `raw` deserializes the file with serde into structs that deny unknown fields and
//!    keep the source location ([`toml::Spanned`]) of every value checked later.
//! 2. Validation turns them into [`Config`], built of newtypes ([`ExtensionNumber`],
//!    [`PortNumber`], [`DialString`], [`BoxSerial`]) so the rest of the daemon never
//!    sees an unchecked value.
//!
//! Every error names the file, the 1-based line and the field, e.g.
//! `/etc/branchline/branchd.toml, line 12: extensions[1].port: port 9 is not an FXS
//! port of this board (FXS ports are 1-4)`. Syntax, unknown-field and type errors take
//! their location from the TOML parser; the field path is found by matching the error's
//! byte span against the parsed document (`locate`).
//!
//! Checks that need the board (which ports are FXS and which FXO) run later, once the
//! board profile is known, through [`Config::check_board`]; the validated structs keep
//! the line of each `port` for its messages.
//!
//! Limits: relative paths (`paths.data_dir`, `paths.recordings`, `board.uart`) are kept
//! as written and so are relative to the daemon's working directory, not to the config
//! file.

mod call_center;
mod conference;
mod echo;
mod locate;
mod provisioning;
mod raw;
mod recording;
mod sip;
#[cfg(test)]
mod tests;
mod update;
mod voicemail;

pub use self::call_center::CallCenterConfig;
pub use self::conference::{ConferenceRoomConfig, DEFAULT_MAX_PARTIES, MAX_PARTIES};
pub use self::echo::DEFAULT_ECHO_TEST_CODE;
pub use self::provisioning::{ProvisioningConfig, MAX_PROVISIONING_PATHS};
pub use self::recording::{RecordingConfig, RecordingPolicy};
pub use self::sip::{SipConfig, SipGuardConfig, SipTrunkConfig};
pub use self::update::{SlotBackend, UpdateConfig, HEALTH_DEADLINE_S};
pub use self::voicemail::VoicemailConfig;

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use line_proto::g711::Law;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, InvalidValue, Result};
use crate::tones::Country;

use self::raw::{
    RawConfig, RawExtension, RawFxoLine, RawLaw, RawMedia, RawSipAccount, RawTelephony,
};

/// Where the daemon looks for its config file unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/branchline/branchd.toml";
/// Default of `paths.data_dir`: the box's persistent data partition.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/branchline";
/// File name of the SQLite store inside `paths.data_dir`.
pub const DB_FILE_NAME: &str = "branchline.db";
/// Default of `paths.recordings`: this directory inside `paths.data_dir`.
pub const RECORDINGS_DIR_NAME: &str = "recordings";
/// Default of `paths.system_prompts`: where the image installs the built-in prompts
/// (`image/rootfs/usr/share/branchline/prompts` in the repository).
pub const SYSTEM_PROMPTS_DIR: &str = "/usr/share/branchline/prompts";
/// Default of `board.profile`: the built-in simulator.
pub const DEFAULT_BOARD_PROFILE: &str = "sim";
/// Default of `log.level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Default and allowed range of `telephony.first_digit_timeout_ms`.
pub const FIRST_DIGIT_TIMEOUT_MS: (i64, RangeInclusive<i64>) = (10_000, 1_000..=60_000);
/// Default and allowed range of `telephony.inter_digit_timeout_ms`.
pub const INTER_DIGIT_TIMEOUT_MS: (i64, RangeInclusive<i64>) = (4_000, 500..=30_000);
/// Default and allowed range of `telephony.ring_timeout_ms`.
pub const RING_TIMEOUT_MS: (i64, RangeInclusive<i64>) = (60_000, 5_000..=600_000);

/// Longest caller-ID name the config accepts, in characters.
pub const MAX_NAME_CHARS: usize = 32;

// ---------------------------------------------------------------------------------
// Newtypes
// ---------------------------------------------------------------------------------

/// An extension number: 2 to 6 decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtensionNumber(String);

impl ExtensionNumber {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ExtensionNumber {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if (2..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(ExtensionNumber(s.to_owned()))
        } else {
            Err(InvalidValue {
                what: "extension number",
                value: s.to_owned(),
                reason: "must be 2 to 6 digits",
            })
        }
    }
}

impl TryFrom<&str> for ExtensionNumber {
    type Error = InvalidValue;

    fn try_from(s: &str) -> Result<Self, InvalidValue> {
        s.parse()
    }
}

impl TryFrom<String> for ExtensionNumber {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        s.parse()
    }
}

impl fmt::Display for ExtensionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ExtensionNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An analog port number of the board, 1 to 255 (0 is not a port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortNumber(u8);

impl PortNumber {
    /// The number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for PortNumber {
    type Error = InvalidValue;

    fn try_from(n: u8) -> Result<Self, InvalidValue> {
        Self::try_from(i64::from(n))
    }
}

impl TryFrom<i64> for PortNumber {
    type Error = InvalidValue;

    fn try_from(n: i64) -> Result<Self, InvalidValue> {
        match u8::try_from(n) {
            Ok(p) if p >= 1 => Ok(PortNumber(p)),
            _ => Err(InvalidValue {
                what: "port number",
                value: n.to_string(),
                reason: "must be 1 to 255",
            }),
        }
    }
}

impl fmt::Display for PortNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Digits a phone can dial: 1 to 32 of `0-9`, `*`, `#`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialString(String);

impl DialString {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DialString {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
        {
            Ok(DialString(s.to_owned()))
        } else {
            Err(InvalidValue {
                what: "dial string",
                value: s.to_owned(),
                reason: "must be 1 to 32 of 0-9, * and #",
            })
        }
    }
}

impl fmt::Display for DialString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The box's serial number: 1 to 32 of `A-Z a-z 0-9 - _`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BoxSerial(String);

impl BoxSerial {
    /// The serial.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BoxSerial {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        if (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Ok(BoxSerial(s.to_owned()))
        } else {
            Err(InvalidValue {
                what: "box serial",
                value: s.to_owned(),
                reason: "must be 1 to 32 of A-Z, a-z, 0-9, - and _",
            })
        }
    }
}

impl fmt::Display for BoxSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

// ---------------------------------------------------------------------------------
// Validated config
// ---------------------------------------------------------------------------------

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was loaded from (named in every error).
    pub source: PathBuf,
    /// `[site]`
    pub site: SiteConfig,
    /// `[paths]`
    pub paths: PathsConfig,
    /// `[board]`
    pub board: BoardConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[telephony]`
    pub telephony: TelephonyConfig,
    /// `[[extensions]]`, in file order.
    pub extensions: Vec<ExtensionConfig>,
    /// `[[fxo_lines]]`, in file order.
    pub fxo_lines: Vec<FxoLineConfig>,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[privacy]`
    pub privacy: PrivacyConfig,
    /// `[web]`
    pub web: WebConfig,
    /// `[hq]`: sync with headquarters; `None` (no section) means sync is off.
    pub hq: Option<HqConfig>,
    /// `[wan]`: the WAN monitor's trunk probe.
    pub wan: WanConfig,
    /// `[sip]`: the SIP endpoint; `None` (no section) means no SIP.
    pub sip: Option<SipConfig>,
    /// `[media]`: RTP ports and jitter buffer (defaults when the section is absent:
    /// ports [`MEDIA_RTP_PORTS`], jitter [`MEDIA_JITTER_MS`], all local addresses).
    pub media: MediaConfig,
    /// `[[sip_accounts]]`: local SIP phones, in file order.
    pub sip_accounts: Vec<SipAccountConfig>,
    /// `[update]`: the A/B slot state the post-boot health check commits; `None` (no
    /// section) means this box has no A/B slots and the check only logs.
    pub update: Option<UpdateConfig>,
    /// `[provisioning]`: USB provisioning (mount points, trusted keys, serial); `None`
    /// (no section) means the box does not watch for sticks.
    pub provisioning: Option<ProvisioningConfig>,
    /// `[recording]`: call recording policy, retention and disk reserve (defaults, which
    /// record nothing, when the section is absent).
    pub recording: RecordingConfig,
    /// `[call_center]`: the agent feature codes (defaults when the section is absent).
    pub call_center: CallCenterConfig,
    /// `[voicemail]`: the voicemail feature codes (defaults when the section is absent).
    pub voicemail: VoicemailConfig,
    /// `[[conference_rooms]]`: meet-me rooms, in file order.
    pub conference_rooms: Vec<ConferenceRoomConfig>,
}

/// Default RTP/RTCP port range of `[media]` (`rtp_port_min`, `rtp_port_max`) and the
/// ports allowed (no privileged ports).
pub const MEDIA_RTP_PORTS: (u16, u16, RangeInclusive<i64>) = (10000, 10999, 1024..=65535);
/// Default adaptive jitter-buffer bounds of `[media]` (`jitter_min_ms`,
/// `jitter_max_ms`) and the values allowed.
pub const MEDIA_JITTER_MS: (u32, u32, RangeInclusive<i64>) = (20, 200, 0..=2000);
/// Values allowed for `[media] rtp_timeout_s` (0 disables the media inactivity check;
/// default [`branchline_media::inactivity::DEFAULT_RTP_TIMEOUT`]).
pub const MEDIA_RTP_TIMEOUT_S: RangeInclusive<i64> = 0..=3600;
/// Values allowed for `[media] rtp_hold_timeout_s` (0 disables the check while held;
/// default [`branchline_media::inactivity::DEFAULT_RTP_HOLD_TIMEOUT`]).
pub const MEDIA_RTP_HOLD_TIMEOUT_S: RangeInclusive<i64> = 0..=86400;
/// Shortest SIP account password accepted.
pub const MIN_SIP_PASSWORD_CHARS: usize = 8;
/// Longest SIP account password accepted.
pub const MAX_SIP_PASSWORD_CHARS: usize = 128;

/// `[media]`: where RTP goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    /// Address the RTP sockets bind to (`0.0.0.0` by default: every interface).
    pub local_ip: std::net::IpAddr,
    /// First RTP port (even ports carry RTP, the next odd one RTCP).
    pub rtp_port_min: u16,
    /// Last port of the range.
    pub rtp_port_max: u16,
    /// Least jitter-buffer delay towards the analog ports.
    pub jitter_min_ms: u32,
    /// Most jitter-buffer delay.
    pub jitter_max_ms: u32,
    /// `rtp_timeout_s`: a call whose SIP leg receives no RTP or RTCP for this long is
    /// ended (BYE, CDR `hangup_cause` `media_timeout`); zero disables the check.
    pub rtp_timeout: std::time::Duration,
    /// `rtp_hold_timeout_s`: the same while the far end holds the call
    /// (`sendonly`/`inactive`); zero disables the check on hold.
    pub rtp_hold_timeout: std::time::Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            local_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            rtp_port_min: MEDIA_RTP_PORTS.0,
            rtp_port_max: MEDIA_RTP_PORTS.1,
            jitter_min_ms: MEDIA_JITTER_MS.0,
            jitter_max_ms: MEDIA_JITTER_MS.1,
            rtp_timeout: branchline_media::inactivity::DEFAULT_RTP_TIMEOUT,
            rtp_hold_timeout: branchline_media::inactivity::DEFAULT_RTP_HOLD_TIMEOUT,
        }
    }
}

/// One `[[sip_accounts]]` entry: a local SIP phone. Its extension may also be an FXS
/// extension (then the phone and the port both ring).
#[derive(Clone, PartialEq, Eq)]
pub struct SipAccountConfig {
    /// The extension the phone registers as (digest user name).
    pub extension: ExtensionNumber,
    /// Caller-ID name ("" for none).
    pub name: String,
    /// Digest password for the registrar (never logged).
    pub password: String,
    /// May dial international and premium numbers (`international = true`; default
    /// false). Stands in for the RBAC permission until SIP accounts map to users.
    pub international: bool,
    /// A second call is offered to the phone while it is on a call, for the phone's
    /// own call waiting (`call_waiting`, default true, as for `[[extensions]]`); off,
    /// the caller gets busy.
    pub call_waiting: bool,
    /// Calling permissions of calls placed from the phone (`permissions = [...]`,
    /// default none), as for `[[extensions]]`. Separate from `international`, the
    /// SIP endpoint's toll check, which still applies first.
    pub permissions: Vec<String>,
}

impl fmt::Debug for SipAccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipAccountConfig")
            .field("extension", &self.extension)
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("international", &self.international)
            .field("call_waiting", &self.call_waiting)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// Default and allowed range of `hq.batch_records` (at most the protocol's
/// [`branchline_sync::wire::MAX_BATCH_RECORDS`]).
pub const HQ_BATCH_RECORDS: (i64, RangeInclusive<i64>) = (500, 1..=2000);
/// Default and allowed range of `hq.long_poll_ms` (at most
/// [`branchline_sync::wire::MAX_WAIT_MS`]).
pub const HQ_LONG_POLL_MS: (i64, RangeInclusive<i64>) = (25_000, 0..=60_000);
/// Default and allowed range of `hq.request_timeout_ms` (added to the long-poll wait
/// for a download).
pub const HQ_REQUEST_TIMEOUT_MS: (i64, RangeInclusive<i64>) = (30_000, 1_000..=300_000);
/// Default and allowed range of `hq.upload_interval_ms`: the upload loop's periodic tick
/// (a new outbox row wakes it at once; the tick also sends the health heartbeat).
pub const HQ_UPLOAD_INTERVAL_MS: (i64, RangeInclusive<i64>) = (30_000, 1_000..=3_600_000);
/// Default and allowed range of `hq.upload_bandwidth_kbps`: the cap on recording-file
/// uploads in kilobits per second (0: no cap; at most 10 Gbit/s).
pub const HQ_UPLOAD_BANDWIDTH_KBPS: (i64, RangeInclusive<i64>) = (0, 0..=10_000_000);
/// Default and allowed range of `hq.renew_at_percent`: how much of its certificate's
/// lifetime (notBefore to notAfter) passes before the box renews it ([`crate::renew`]).
pub const HQ_RENEW_AT_PERCENT: (i64, RangeInclusive<i64>) = (67, 10..=95);
/// Default and allowed range of `hq.probe_interval_ms` and `wan.probe_interval_ms`.
pub const PROBE_INTERVAL_MS: (i64, RangeInclusive<i64>) = (10_000, 500..=600_000);

/// `[hq]`: where HQ is and how the box proves who it is (see [`crate::sync`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HqConfig {
    /// HQ's base URL, `https://host[:port]` (paths of [`branchline_sync::wire`] are
    /// appended).
    pub url: String,
    /// PEM file of HQ's CA certificate: the only root the box trusts for HQ.
    pub ca_cert: PathBuf,
    /// PEM file of the box's device certificate (its CN is the box id at HQ).
    pub client_cert: PathBuf,
    /// PEM file of the device certificate's private key.
    pub client_key: PathBuf,
    /// The box's id at HQ (the CN of its certificate).
    pub box_id: String,
    /// Most outbox rows per upload.
    pub batch_records: usize,
    /// How long HQ may hold a change-feed request open.
    pub long_poll: Duration,
    /// Timeout of one request (a download waits `long_poll` on top).
    pub request_timeout: Duration,
    /// The upload loop's periodic tick.
    pub upload_interval: Duration,
    /// Cap on recording-file uploads, kilobits per second (0: none).
    pub upload_bandwidth_kbps: u64,
    /// How often the WAN monitor probes HQ.
    pub probe_interval: Duration,
    /// Percent of the device certificate's lifetime after which the box renews it.
    pub renew_at_percent: u8,
}

/// Transport of the trunk reachability probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkTransport {
    /// A TCP connect to the trunk's SIP port.
    Tcp,
    /// A UDP datagram (a CRLF CRLF keep-alive): an answer counts as up, an ICMP
    /// port-unreachable as down, and silence as up too (without SIP, UDP cannot prove
    /// more than that the host and port are not refused).
    Udp,
}

/// `[wan]`: the trunk probe of the WAN monitor (see [`crate::sync::wan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WanConfig {
    /// The SIP trunk's `host:port`, if there is one.
    pub trunk: Option<String>,
    /// How to probe it.
    pub trunk_transport: TrunkTransport,
    /// How often to probe it.
    pub probe_interval: Duration,
}

impl Default for WanConfig {
    fn default() -> Self {
        WanConfig {
            trunk: None,
            trunk_transport: TrunkTransport::Udp,
            probe_interval: Duration::from_millis(PROBE_INTERVAL_MS.0.unsigned_abs()),
        }
    }
}

/// `[web]`: the local HTTP API (`/api/v1`, see [`crate::api`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Address the API listens on (`listen = "127.0.0.1:8080"`; port 0 picks a free
    /// port, logged as `web api listening`). `None`: the API is not served.
    pub listen: Option<SocketAddr>,
    /// `https = "auto"` (the default) or `"off"`: see [`WebHttps`].
    pub https: WebHttps,
    /// `chart_sample_seconds`: how often the line voltage and sync backlog charts take
    /// a sample (and the lines are read at least this often); see
    /// [`crate::web::history`].
    pub chart_sample: Duration,
    /// `call_sample_seconds`: how often the RTP jitter and loss of calls in progress
    /// are sampled for the calls page's chart.
    pub call_sample: Duration,
}

/// Default and range of `[web] chart_sample_seconds`.
pub const CHART_SAMPLE_SECONDS: (i64, RangeInclusive<i64>) = (60, 1..=3600);
/// Default and range of `[web] call_sample_seconds`.
pub const CALL_SAMPLE_SECONDS: (i64, RangeInclusive<i64>) = (5, 1..=60);

impl Default for WebConfig {
    fn default() -> WebConfig {
        WebConfig {
            listen: None,
            https: WebHttps::default(),
            chart_sample: Duration::from_secs(CHART_SAMPLE_SECONDS.0.unsigned_abs()),
            call_sample: Duration::from_secs(CALL_SAMPLE_SECONDS.0.unsigned_abs()),
        }
    }
}

/// Whether the web page switches to HTTPS once the box holds its device certificate
/// (`[web] https`; see [`crate::web::tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebHttps {
    /// `"auto"`: plain HTTP until `[hq] client_cert` exists, then HTTPS with the
    /// device certificate on the same address (plain HTTP requests get a redirect).
    #[default]
    Auto,
    /// `"off"`: plain HTTP always (a TLS-terminating proxy in front, or tests that
    /// speak plain HTTP to an enrolled box).
    Off,
}

/// Allowed range of `auth.max_failed_logins` (default
/// [`crate::accounts::DEFAULT_MAX_FAILED_LOGINS`]).
pub const MAX_FAILED_LOGINS_RANGE: RangeInclusive<i64> = 1..=100;
/// Allowed range of `auth.lockout_minutes` (default
/// [`crate::accounts::DEFAULT_LOCKOUT_MINUTES`]).
pub const LOCKOUT_MINUTES_RANGE: RangeInclusive<i64> = 1..=1440;

/// `[auth]`: login lockout and the installer credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Consecutive failed logins that lock an account.
    pub max_failed_logins: u32,
    /// How long a lockout lasts, in minutes.
    pub lockout_minutes: u32,
    /// argon2id PHC string of the installer password (set at provisioning); `None`
    /// means a password is generated and written to the label file.
    pub installer_password_hash: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_failed_logins: crate::accounts::DEFAULT_MAX_FAILED_LOGINS,
            lockout_minutes: crate::accounts::DEFAULT_LOCKOUT_MINUTES,
            installer_password_hash: None,
        }
    }
}

/// `[privacy]`: how customers' numbers are masked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrivacyConfig {
    /// `mask_pattern`, default `"3*4"` (see [`crate::mask::MaskPattern`]).
    pub mask_pattern: crate::mask::MaskPattern,
}

/// `[site]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteConfig {
    /// The box's serial, when not taken from the hardware.
    pub box_serial: Option<BoxSerial>,
}

/// `[paths]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathsConfig {
    /// Directory of the store and other persistent data.
    pub data_dir: PathBuf,
    /// Directory of call recordings (default `data_dir/recordings`); see
    /// [`crate::sync::files`].
    pub recordings: PathBuf,
    /// Directory of the built-in voice prompts the image installs (default
    /// [`SYSTEM_PROMPTS_DIR`]); the data directory's `prompts/` overrides them by name
    /// (see [`crate::prompts`]).
    pub system_prompts: PathBuf,
}

impl PathsConfig {
    /// Path of the SQLite store: `data_dir/branchline.db`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE_NAME)
    }
}

/// `[board]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardConfig {
    /// Built-in profile name or path of a profile file.
    pub profile: String,
    /// Overrides the profile's UART device.
    pub uart: Option<PathBuf>,
    /// Console address of the built-in simulator.
    pub sim_console: Option<SocketAddr>,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing_subscriber::filter::Targets` filter (`info`,
    /// `warn,branchline_firmware::sip_endpoint=debug`; already checked to parse).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// `[telephony]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelephonyConfig {
    /// Tone plan and caller-ID country; `None` means the board profile's.
    pub country: Option<Country>,
    /// Companding law; `None` means the country's ([`Country::default_law`]).
    pub law: Option<Law>,
    /// How long dial tone plays before the first digit.
    pub first_digit_timeout: Duration,
    /// How long to wait for the next digit.
    pub inter_digit_timeout: Duration,
    /// How long an unanswered call rings before it gives up.
    pub ring_timeout: Duration,
    /// Digits that seize an outside (FXO) line.
    pub outside_line_prefix: Option<DialString>,
    /// The site's time zone (`time_zone`: an IANA name from the zoneinfo directory or
    /// a POSIX TZ rule; UTC when unset), for campaign calling hours
    /// ([`crate::site_time`]).
    pub time_zone: crate::site_time::ZoneSpec,
    /// The number a phone dials for the echo test (`echo_test_code`, default
    /// [`DEFAULT_ECHO_TEST_CODE`]; `None`: turned off with `""`).
    pub echo_test_code: Option<String>,
}

impl TelephonyConfig {
    /// The country and law in effect, given the board profile's default country.
    pub fn resolve(&self, board_country: Country) -> (Country, Law) {
        let country = self.country.unwrap_or(board_country);
        (country, self.law.unwrap_or(country.default_law()))
    }
}

/// One `[[extensions]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionConfig {
    /// The number that rings it.
    pub number: ExtensionNumber,
    /// The FXS port the phone is on.
    pub port: PortNumber,
    /// Caller-ID name ("" for none).
    pub name: String,
    /// Whether a second call gets the call-waiting tone instead of busy.
    pub call_waiting: bool,
    /// Calling permissions of calls placed from the port (`permissions = [...]`,
    /// default none): a dial route HQ marks `needs_permission` takes only callers
    /// holding that name ([`crate::call::CallerPermissions`]).
    pub permissions: Vec<String>,
    /// Line of `port` in the file, for [`Config::check_board`]'s messages.
    port_line: usize,
}

/// One `[[fxo_lines]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FxoLineConfig {
    /// The FXO port of the line.
    pub port: PortNumber,
    /// Extensions rung together on an inbound call, or a call-center queue's number
    /// (the first one listed takes the call); empty rejects inbound calls. Queues live
    /// in the store, so a number that is no extension is only checked at start
    /// (`branchd` logs one that is no queue either, and skips it).
    pub inbound: Vec<ExtensionNumber>,
    /// Whether outside calls may use this line.
    pub outbound: bool,
    /// Line of `port` in the file, for [`Config::check_board`]'s messages.
    port_line: usize,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Validates config text; `source` is the file name used in errors.
    pub fn from_toml_str(text: &str, source: &Path) -> Result<Config> {
        let ctx = Ctx { source, text };
        if let Err(e) = toml::de::DeTable::parse(text) {
            return Err(Error::ConfigSyntax {
                path: source.to_owned(),
                line: e.span().map(|s| locate::line_of(text, s.start)),
                message: e.message().trim_end().to_owned(),
            });
        }
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        ctx.validate(raw)
    }

    /// Checks the port map against the board: every extension is on a distinct port in
    /// `fxs`, every FXO line on a distinct port in `fxo`.
    pub fn check_board(&self, fxs: RangeInclusive<u8>, fxo: RangeInclusive<u8>) -> Result<()> {
        let invalid = |line: usize, field: String, message: String| Error::ConfigInvalid {
            path: self.source.clone(),
            line: Some(line),
            field,
            message,
        };
        for (i, ext) in self.extensions.iter().enumerate() {
            let port = ext.port.get();
            if !fxs.contains(&port) {
                return Err(invalid(
                    ext.port_line,
                    format!("extensions[{i}].port"),
                    format!(
                        "port {port} is not an FXS port of this board ({})",
                        describe_ports("FXS", &fxs)
                    ),
                ));
            }
            if let Some(j) = self.extensions[..i].iter().position(|e| e.port == ext.port) {
                return Err(invalid(
                    ext.port_line,
                    format!("extensions[{i}].port"),
                    format!(
                        "port {port} is already used by extensions[{j}] ({}, line {})",
                        self.extensions[j].number, self.extensions[j].port_line
                    ),
                ));
            }
        }
        for (i, line) in self.fxo_lines.iter().enumerate() {
            let port = line.port.get();
            if !fxo.contains(&port) {
                return Err(invalid(
                    line.port_line,
                    format!("fxo_lines[{i}].port"),
                    format!(
                        "port {port} is not an FXO port of this board ({})",
                        describe_ports("FXO", &fxo)
                    ),
                ));
            }
            if let Some(j) = self.fxo_lines[..i].iter().position(|l| l.port == line.port) {
                return Err(invalid(
                    line.port_line,
                    format!("fxo_lines[{i}].port"),
                    format!(
                        "port {port} is already used by fxo_lines[{j}] (line {})",
                        self.fxo_lines[j].port_line
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn describe_ports(kind: &str, ports: &RangeInclusive<u8>) -> String {
    if ports.is_empty() {
        format!("it has no {kind} ports")
    } else {
        format!("{kind} ports are {}-{}", ports.start(), ports.end())
    }
}

/// The file being validated: turns spans into located errors.
struct Ctx<'a> {
    source: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        locate::line_of(self.text, span.start)
    }

    fn invalid(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Error {
        Error::ConfigInvalid {
            path: self.source.to_owned(),
            line: Some(self.line(&span)),
            field: field.into(),
            message: message.into(),
        }
    }

    /// An error from serde: unknown field, wrong type, missing field.
    fn toml_error(&self, e: &toml::de::Error) -> Error {
        let message = e.message().trim_end().to_owned();
        let Some(span) = e.span() else {
            return Error::ConfigInvalid {
                path: self.source.to_owned(),
                line: None,
                field: "(file)".to_owned(),
                message,
            };
        };
        let mut field = locate::field_path(self.text, &span).unwrap_or_default();
        if let Some(missing) = missing_field(&message) {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(missing);
        }
        if field.is_empty() {
            field.push_str("(file)");
        }
        self.invalid(span, field, message)
    }

    fn validate(&self, raw: RawConfig) -> Result<Config> {
        let site = SiteConfig {
            box_serial: raw
                .site
                .box_serial
                .map(|s| self.parse::<BoxSerial>(&s, "site.box_serial"))
                .transpose()?,
        };

        let data_dir = match raw.paths.data_dir {
            Some(d) if d.get_ref().is_empty() => {
                return Err(self.invalid(d.span(), "paths.data_dir", "must not be empty"))
            }
            Some(d) => PathBuf::from(d.into_inner()),
            None => PathBuf::from(DEFAULT_DATA_DIR),
        };
        let recordings = match raw.paths.recordings {
            Some(r) => self.path(r, "paths.recordings")?,
            None => data_dir.join(RECORDINGS_DIR_NAME),
        };
        let system_prompts = match raw.paths.system_prompts {
            Some(p) => self.path(p, "paths.system_prompts")?,
            None => PathBuf::from(SYSTEM_PROMPTS_DIR),
        };

        let profile = match raw.board.profile {
            Some(p) if p.get_ref().trim().is_empty() => {
                return Err(self.invalid(p.span(), "board.profile", "must not be empty"))
            }
            Some(p) => p.into_inner(),
            None => DEFAULT_BOARD_PROFILE.to_owned(),
        };
        let uart = match raw.board.uart {
            Some(u) if u.get_ref().is_empty() => {
                return Err(self.invalid(u.span(), "board.uart", "must not be empty"))
            }
            other => other.map(|u| PathBuf::from(u.into_inner())),
        };
        let sim_console = raw
            .board
            .sim_console
            .map(|s| {
                s.get_ref().parse::<SocketAddr>().map_err(|_| {
                    self.invalid(
                        s.span(),
                        "board.sim_console",
                        format!("{:?} is not an address like 127.0.0.1:7878", s.get_ref()),
                    )
                })
            })
            .transpose()?;

        let level = match raw.log.level {
            Some(l) => {
                if let Err(e) = l.get_ref().parse::<tracing_subscriber::filter::Targets>() {
                    return Err(self.invalid(
                        l.span(),
                        "log.level",
                        format!("{:?} is not a valid log filter: {e}", l.get_ref()),
                    ));
                }
                l.into_inner()
            }
            None => DEFAULT_LOG_LEVEL.to_owned(),
        };

        let auth = self.auth(raw.auth)?;
        let privacy = PrivacyConfig {
            mask_pattern: match raw.privacy.mask_pattern {
                Some(p) => p.get_ref().parse().map_err(|e: InvalidValue| {
                    self.invalid(p.span(), "privacy.mask_pattern", e.to_string())
                })?,
                None => crate::mask::MaskPattern::default(),
            },
        };
        let web = WebConfig {
            listen: raw
                .web
                .listen
                .map(|s| {
                    s.get_ref().parse::<SocketAddr>().map_err(|_| {
                        self.invalid(
                            s.span(),
                            "web.listen",
                            format!("{:?} is not an address like 127.0.0.1:8080", s.get_ref()),
                        )
                    })
                })
                .transpose()?,
            https: match raw.web.https {
                None => WebHttps::Auto,
                Some(s) => match s.get_ref().as_str() {
                    "auto" => WebHttps::Auto,
                    "off" => WebHttps::Off,
                    other => {
                        return Err(self.invalid(
                            s.span(),
                            "web.https",
                            format!("{other:?} is not \"auto\" or \"off\""),
                        ))
                    }
                },
            },
            chart_sample: Duration::from_secs(
                self.ranged(
                    raw.web.chart_sample_seconds,
                    "web.chart_sample_seconds",
                    CHART_SAMPLE_SECONDS,
                )?
                .unsigned_abs(),
            ),
            call_sample: Duration::from_secs(
                self.ranged(
                    raw.web.call_sample_seconds,
                    "web.call_sample_seconds",
                    CALL_SAMPLE_SECONDS,
                )?
                .unsigned_abs(),
            ),
        };
        let hq = raw.hq.map(|h| self.hq(h)).transpose()?;
        let wan = self.wan(raw.wan)?;
        let sip = raw.sip.map(|s| self.sip(s)).transpose()?;
        let update = raw.update.map(|u| self.update(u)).transpose()?;
        let provisioning = raw
            .provisioning
            .map(|p| self.provisioning(p, site.box_serial.as_ref().map(BoxSerial::as_str)))
            .transpose()?;
        let echo_test_code = raw.telephony.echo_test_code.clone();
        let mut telephony = self.telephony(raw.telephony)?;
        let extensions = self.extensions(raw.extensions, &telephony)?;
        let sip_accounts = self.sip_accounts(raw.sip_accounts, &extensions, &telephony)?;
        let fxo_lines = self.fxo_lines(raw.fxo_lines, &telephony)?;
        let media = match raw.media {
            Some(m) => self.media(m)?,
            None => MediaConfig::default(),
        };
        let recording = match raw.recording {
            Some(r) => self.recording(r, &extensions, &sip_accounts)?,
            None => RecordingConfig::default(),
        };
        let call_center = match raw.call_center {
            Some(c) => self.call_center(c)?,
            None => CallCenterConfig::default(),
        };
        let voicemail = match raw.voicemail {
            Some(v) => self.voicemail(v, &call_center)?,
            None => self.voicemail(
                voicemail::RawVoicemail {
                    own_code: None,
                    any_code: None,
                },
                &call_center,
            )?,
        };
        let conference_rooms =
            self.conference_rooms(raw.conference_rooms, &extensions, &telephony)?;
        telephony.echo_test_code = self.echo_test_code(
            echo_test_code,
            echo::EchoContext {
                telephony: &telephony,
                extensions: &extensions,
                sip_accounts: &sip_accounts,
                call_center: &call_center,
                voicemail: &voicemail,
                rooms: &conference_rooms,
            },
        )?;

        Ok(Config {
            source: self.source.to_owned(),
            site,
            paths: PathsConfig {
                recordings,
                data_dir,
                system_prompts,
            },
            board: BoardConfig {
                profile,
                uart,
                sim_console,
            },
            log: LogConfig {
                level,
                format: raw.log.format.unwrap_or_default(),
            },
            telephony,
            extensions,
            fxo_lines,
            auth,
            privacy,
            web,
            hq,
            wan,
            media,
            sip_accounts,
            sip,
            update,
            provisioning,
            recording,
            call_center,
            voicemail,
            conference_rooms,
        })
    }

    /// `[media]`.
    fn media(&self, raw: RawMedia) -> Result<MediaConfig> {
        let local_ip = match raw.local_ip {
            Some(s) => s.get_ref().parse::<std::net::IpAddr>().map_err(|_| {
                self.invalid(
                    s.span(),
                    "media.local_ip",
                    format!("{:?} is not an IP address like 192.0.2.10", s.get_ref()),
                )
            })?,
            None => MediaConfig::default().local_ip,
        };
        let (min_default, max_default, ports) = MEDIA_RTP_PORTS;
        let min_span = raw.rtp_port_min.as_ref().map(|v| v.span());
        let min = self.ranged(
            raw.rtp_port_min,
            "media.rtp_port_min",
            (i64::from(min_default), ports.clone()),
        )?;
        let max_span = raw.rtp_port_max.as_ref().map(|v| v.span());
        let max = self.ranged(
            raw.rtp_port_max,
            "media.rtp_port_max",
            (i64::from(max_default), ports),
        )?;
        // At least one even/odd pair.
        let first_even = min + (min % 2);
        if max < first_even + 1 {
            let span = max_span.or(min_span).unwrap_or(0..0);
            return Err(self.invalid(
                span,
                "media.rtp_port_max",
                format!("{min}..={max} holds no RTP/RTCP port pair (an even port and the next)"),
            ));
        }
        let (jmin_default, jmax_default, jitter) = MEDIA_JITTER_MS;
        let jmin_span = raw.jitter_min_ms.as_ref().map(|v| v.span());
        let jmin = self.ranged(
            raw.jitter_min_ms,
            "media.jitter_min_ms",
            (i64::from(jmin_default), jitter.clone()),
        )?;
        let jmax_span = raw.jitter_max_ms.as_ref().map(|v| v.span());
        let jmax = self.ranged(
            raw.jitter_max_ms,
            "media.jitter_max_ms",
            (i64::from(jmax_default), jitter),
        )?;
        // The ranges above keep every value within u16/u32.
        let (jmin, jmax) = (jmin as u32, jmax as u32);
        if let Err(e) = branchline_media::jitter::JitterConfig::adaptive(jmin, jmax) {
            let span = jmax_span.or(jmin_span).unwrap_or(0..0);
            return Err(self.invalid(span, "media.jitter_max_ms", e.to_string()));
        }
        let defaults = MediaConfig::default();
        let timeout = self.ranged(
            raw.rtp_timeout_s,
            "media.rtp_timeout_s",
            (defaults.rtp_timeout.as_secs() as i64, MEDIA_RTP_TIMEOUT_S),
        )?;
        let hold_span = raw.rtp_hold_timeout_s.as_ref().map(|v| v.span());
        let hold_timeout = self.ranged(
            raw.rtp_hold_timeout_s,
            "media.rtp_hold_timeout_s",
            (
                defaults.rtp_hold_timeout.as_secs() as i64,
                MEDIA_RTP_HOLD_TIMEOUT_S,
            ),
        )?;
        // A held call sends less (or no) RTP than an active one: a shorter hold
        // timeout would end held calls sooner than active ones.
        if timeout > 0 && hold_timeout > 0 && hold_timeout < timeout {
            return Err(self.invalid(
                hold_span.unwrap_or(0..0),
                "media.rtp_hold_timeout_s",
                format!(
                    "{hold_timeout} is shorter than rtp_timeout_s ({timeout}): a held call would \
                     be ended sooner than an active one (use 0 to disable the check on hold)"
                ),
            ));
        }
        Ok(MediaConfig {
            local_ip,
            rtp_port_min: min as u16,
            rtp_port_max: max as u16,
            jitter_min_ms: jmin,
            jitter_max_ms: jmax,
            // The ranges above keep both non-negative.
            rtp_timeout: std::time::Duration::from_secs(timeout as u64),
            rtp_hold_timeout: std::time::Duration::from_secs(hold_timeout as u64),
        })
    }

    /// `[[sip_accounts]]`.
    fn sip_accounts(
        &self,
        raw: Vec<RawSipAccount>,
        extensions: &[ExtensionConfig],
        telephony: &TelephonyConfig,
    ) -> Result<Vec<SipAccountConfig>> {
        let mut out: Vec<SipAccountConfig> = Vec::with_capacity(raw.len());
        for (i, acc) in raw.into_iter().enumerate() {
            let field = |name: &str| format!("sip_accounts[{i}].{name}");
            let number: ExtensionNumber = self.parse(&acc.extension, &field("extension"))?;
            let number_err =
                |message: String| self.invalid(acc.extension.span(), field("extension"), message);
            if let Some(prefix) = &telephony.outside_line_prefix {
                if number.as_str().starts_with(prefix.as_str()) {
                    return Err(number_err(format!(
                        "extension {number} starts with the outside line prefix {:?}",
                        prefix.as_str()
                    )));
                }
            }
            if let Some(j) = out.iter().position(|o| o.extension == number) {
                return Err(number_err(format!(
                    "extension {number} already has a SIP account (sip_accounts[{j}])"
                )));
            }
            // The same number as an FXS extension means "both ring"; a number that is a
            // prefix of another could never be dialled.
            let fxs = extensions
                .iter()
                .enumerate()
                .map(|(j, e)| (j, &e.number, "extensions"));
            let sip = out
                .iter()
                .enumerate()
                .map(|(j, o)| (j, &o.extension, "sip_accounts"));
            for (j, other, table) in fxs.chain(sip) {
                let (a, b) = (number.as_str(), other.as_str());
                if a != b && (a.starts_with(b) || b.starts_with(a)) {
                    let (short, long) = if a.len() < b.len() { (a, b) } else { (b, a) };
                    return Err(number_err(format!(
                        "extension {number} collides with {table}[{j}] ({other}): {short} is a \
                         prefix of {long}, so {long} could never be dialled"
                    )));
                }
            }
            let name = match acc.name {
                Some(n) => {
                    if n.get_ref().chars().count() > MAX_NAME_CHARS {
                        return Err(self.invalid(
                            n.span(),
                            field("name"),
                            format!("longer than {MAX_NAME_CHARS} characters"),
                        ));
                    }
                    if n.get_ref().chars().any(char::is_control) {
                        return Err(self.invalid(
                            n.span(),
                            field("name"),
                            "must not contain control characters",
                        ));
                    }
                    n.into_inner()
                }
                None => String::new(),
            };
            let password = acc.password.get_ref();
            let pw_err =
                |message: String| self.invalid(acc.password.span(), field("password"), message);
            let chars = password.chars().count();
            if chars < MIN_SIP_PASSWORD_CHARS {
                return Err(pw_err(format!(
                    "shorter than {MIN_SIP_PASSWORD_CHARS} characters (a guessable SIP \
                     password invites toll fraud)"
                )));
            }
            if chars > MAX_SIP_PASSWORD_CHARS {
                return Err(pw_err(format!(
                    "longer than {MAX_SIP_PASSWORD_CHARS} characters"
                )));
            }
            if password.chars().any(char::is_control) {
                return Err(pw_err("must not contain control characters".to_owned()));
            }
            if password.contains(number.as_str()) {
                return Err(pw_err(format!(
                    "must not contain the extension number {number} (the first guess of \
                     every SIP scanner)"
                )));
            }
            let permissions = self.permissions(acc.permissions, &field("permissions"))?;
            out.push(SipAccountConfig {
                extension: number,
                name,
                password: acc.password.into_inner(),
                international: acc.international.unwrap_or(false),
                call_waiting: acc.call_waiting.unwrap_or(true),
                permissions,
            });
        }
        Ok(out)
    }

    /// A phone's `permissions` list: calling-permission names
    /// ([`crate::call::check_permissions`]), none twice; absent: none.
    fn permissions(&self, raw: Option<Vec<Spanned<String>>>, field: &str) -> Result<Vec<String>> {
        let raw = raw.unwrap_or_default();
        let names: Vec<String> = raw.iter().map(|p| p.get_ref().clone()).collect();
        crate::call::check_permissions(&names).map_err(|(i, message)| {
            self.invalid(raw[i].span(), format!("{field}[{i}]"), message)
        })?;
        Ok(names)
    }

    /// A non-empty path value.
    fn path(&self, v: Spanned<String>, field: &str) -> Result<PathBuf> {
        if v.get_ref().trim().is_empty() {
            return Err(self.invalid(v.span(), field, "must not be empty"));
        }
        Ok(PathBuf::from(v.into_inner()))
    }

    fn hq(&self, raw: raw::RawHq) -> Result<HqConfig> {
        let url = {
            let u = raw.url.get_ref().trim_end_matches('/');
            let parsed = reqwest::Url::parse(u).map_err(|e| {
                self.invalid(raw.url.span(), "hq.url", format!("{u:?} is not a URL: {e}"))
            })?;
            if parsed.scheme() != "https" || parsed.host_str().is_none() {
                return Err(self.invalid(
                    raw.url.span(),
                    "hq.url",
                    format!("{u:?} must be an https:// URL with a host (sync uses mutual TLS)"),
                ));
            }
            if parsed.query().is_some() || parsed.fragment().is_some() {
                return Err(self.invalid(
                    raw.url.span(),
                    "hq.url",
                    format!("{u:?} must not have a query or fragment"),
                ));
            }
            u.to_owned()
        };
        let id = raw.box_id.get_ref();
        if !(1..=64).contains(&id.len())
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(self.invalid(
                raw.box_id.span(),
                "hq.box_id",
                format!("{id:?} must be 1 to 64 of A-Z, a-z, 0-9, '-', '_' and '.'"),
            ));
        }
        let batch = self.ranged(raw.batch_records, "hq.batch_records", HQ_BATCH_RECORDS)?;
        Ok(HqConfig {
            url,
            box_id: id.clone(),
            ca_cert: self.path(raw.ca_cert, "hq.ca_cert")?,
            client_cert: self.path(raw.client_cert, "hq.client_cert")?,
            client_key: self.path(raw.client_key, "hq.client_key")?,
            // In range, so positive and small.
            batch_records: usize::try_from(batch).unwrap_or(1),
            long_poll: self.timeout(raw.long_poll_ms, "hq.long_poll_ms", HQ_LONG_POLL_MS)?,
            request_timeout: self.timeout(
                raw.request_timeout_ms,
                "hq.request_timeout_ms",
                HQ_REQUEST_TIMEOUT_MS,
            )?,
            upload_interval: self.timeout(
                raw.upload_interval_ms,
                "hq.upload_interval_ms",
                HQ_UPLOAD_INTERVAL_MS,
            )?,
            probe_interval: self.timeout(
                raw.probe_interval_ms,
                "hq.probe_interval_ms",
                PROBE_INTERVAL_MS,
            )?,
            // In range, so not negative.
            upload_bandwidth_kbps: self
                .ranged(
                    raw.upload_bandwidth_kbps,
                    "hq.upload_bandwidth_kbps",
                    HQ_UPLOAD_BANDWIDTH_KBPS,
                )?
                .unsigned_abs(),
            // In range, so 10 to 95.
            renew_at_percent: u8::try_from(self.ranged(
                raw.renew_at_percent,
                "hq.renew_at_percent",
                HQ_RENEW_AT_PERCENT,
            )?)
            .unwrap_or(67),
        })
    }

    fn wan(&self, raw: raw::RawWan) -> Result<WanConfig> {
        let trunk = raw
            .trunk
            .map(|t| {
                let s = t.get_ref();
                let ok = s.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty()
                        && !host.contains(char::is_whitespace)
                        && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if ok {
                    Ok(s.clone())
                } else {
                    Err(self.invalid(
                        t.span(),
                        "wan.trunk",
                        format!("{s:?} is not host:port, e.g. sip.example.net:5060"),
                    ))
                }
            })
            .transpose()?;
        let trunk_transport = match raw.trunk_transport {
            None => TrunkTransport::Udp,
            Some(t) => match t.get_ref().as_str() {
                "udp" => TrunkTransport::Udp,
                "tcp" => TrunkTransport::Tcp,
                other => {
                    return Err(self.invalid(
                        t.span(),
                        "wan.trunk_transport",
                        format!("{other:?} is neither \"udp\" nor \"tcp\""),
                    ))
                }
            },
        };
        Ok(WanConfig {
            trunk,
            trunk_transport,
            probe_interval: self.timeout(
                raw.probe_interval_ms,
                "wan.probe_interval_ms",
                PROBE_INTERVAL_MS,
            )?,
        })
    }

    /// An integer in `range`, `default` when absent.
    fn ranged(
        &self,
        value: Option<Spanned<i64>>,
        field: &str,
        (default, range): (i64, RangeInclusive<i64>),
    ) -> Result<i64> {
        match value {
            Some(v) if !range.contains(v.get_ref()) => Err(self.invalid(
                v.span(),
                field,
                format!(
                    "{} is out of range ({}..={})",
                    v.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
            Some(v) => Ok(v.into_inner()),
            None => Ok(default),
        }
    }

    fn auth(&self, raw: raw::RawAuth) -> Result<AuthConfig> {
        let defaults = AuthConfig::default();
        let ranged =
            |v: Option<Spanned<i64>>, field: &str, range: RangeInclusive<i64>, default: u32| {
                match v {
                    Some(v) if !range.contains(v.get_ref()) => Err(self.invalid(
                        v.span(),
                        field,
                        format!(
                            "{} is out of range ({}..={})",
                            v.get_ref(),
                            range.start(),
                            range.end()
                        ),
                    )),
                    // In range, so it fits.
                    Some(v) => Ok(u32::try_from(*v.get_ref()).unwrap_or(default)),
                    None => Ok(default),
                }
            };
        let installer_password_hash = raw
            .installer_password_hash
            .map(|h| {
                crate::accounts::password::check_phc(h.get_ref())
                    .map(|()| h.get_ref().clone())
                    .map_err(|m| self.invalid(h.span(), "auth.installer_password_hash", m))
            })
            .transpose()?;
        Ok(AuthConfig {
            max_failed_logins: ranged(
                raw.max_failed_logins,
                "auth.max_failed_logins",
                MAX_FAILED_LOGINS_RANGE,
                defaults.max_failed_logins,
            )?,
            lockout_minutes: ranged(
                raw.lockout_minutes,
                "auth.lockout_minutes",
                LOCKOUT_MINUTES_RANGE,
                defaults.lockout_minutes,
            )?,
            installer_password_hash,
        })
    }

    fn parse<T: FromStr<Err = InvalidValue>>(&self, s: &Spanned<String>, field: &str) -> Result<T> {
        s.get_ref()
            .parse()
            .map_err(|e: InvalidValue| self.invalid(s.span(), field, e.to_string()))
    }

    fn timeout(
        &self,
        value: Option<Spanned<i64>>,
        field: &str,
        (default, range): (i64, RangeInclusive<i64>),
    ) -> Result<Duration> {
        let ms = match value {
            Some(v) if !range.contains(v.get_ref()) => {
                return Err(self.invalid(
                    v.span(),
                    field,
                    format!(
                        "{} ms is out of range ({}..={} ms)",
                        v.get_ref(),
                        range.start(),
                        range.end()
                    ),
                ))
            }
            Some(v) => v.into_inner(),
            None => default,
        };
        // In range, so positive.
        Ok(Duration::from_millis(ms.unsigned_abs()))
    }

    fn telephony(&self, raw: RawTelephony) -> Result<TelephonyConfig> {
        let country = raw
            .country
            .map(|c| {
                Country::from_code(c.get_ref()).ok_or_else(|| {
                    let known: Vec<&str> = Country::ALL.iter().map(|c| c.code()).collect();
                    self.invalid(
                        c.span(),
                        "telephony.country",
                        format!(
                            "unknown country {:?} (known: {})",
                            c.get_ref(),
                            known.join(", ")
                        ),
                    )
                })
            })
            .transpose()?;
        let law = raw.law.map(|l| match l {
            RawLaw::Ulaw => Law::Ulaw,
            RawLaw::Alaw => Law::Alaw,
        });
        let outside_line_prefix = raw
            .outside_line_prefix
            .map(|p| {
                let s = p.get_ref();
                if (1..=2).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(DialString(s.clone()))
                } else {
                    Err(self.invalid(
                        p.span(),
                        "telephony.outside_line_prefix",
                        format!("{s:?} is invalid: must be 1 or 2 digits"),
                    ))
                }
            })
            .transpose()?;
        let time_zone = match raw.time_zone {
            None => crate::site_time::ZoneSpec::utc(),
            Some(z) => {
                crate::site_time::ZoneSpec::resolve(z.get_ref(), &crate::site_time::zoneinfo_dir())
                    .map_err(|e| self.invalid(z.span(), "telephony.time_zone", e.to_string()))?
            }
        };
        Ok(TelephonyConfig {
            country,
            law,
            time_zone,
            first_digit_timeout: self.timeout(
                raw.first_digit_timeout_ms,
                "telephony.first_digit_timeout_ms",
                FIRST_DIGIT_TIMEOUT_MS,
            )?,
            inter_digit_timeout: self.timeout(
                raw.inter_digit_timeout_ms,
                "telephony.inter_digit_timeout_ms",
                INTER_DIGIT_TIMEOUT_MS,
            )?,
            ring_timeout: self.timeout(
                raw.ring_timeout_ms,
                "telephony.ring_timeout_ms",
                RING_TIMEOUT_MS,
            )?,
            outside_line_prefix,
            // Checked against the other codes and numbers once they are read (`echo`).
            echo_test_code: None,
        })
    }

    fn port(&self, port: &Spanned<i64>, field: String) -> Result<PortNumber> {
        PortNumber::try_from(*port.get_ref()).map_err(|_| {
            self.invalid(
                port.span(),
                field,
                format!("port {} is out of range (1..=255)", port.get_ref()),
            )
        })
    }

    fn extensions(
        &self,
        raw: Vec<RawExtension>,
        telephony: &TelephonyConfig,
    ) -> Result<Vec<ExtensionConfig>> {
        let mut out: Vec<ExtensionConfig> = Vec::with_capacity(raw.len());
        for (i, ext) in raw.into_iter().enumerate() {
            let field = |name: &str| format!("extensions[{i}].{name}");
            let number: ExtensionNumber = self.parse(&ext.number, &field("number"))?;
            let number_err =
                |message: String| self.invalid(ext.number.span(), field("number"), message);
            if let Some(prefix) = &telephony.outside_line_prefix {
                if number.as_str().starts_with(prefix.as_str()) {
                    return Err(number_err(format!(
                        "extension {number} starts with the outside line prefix {:?}",
                        prefix.as_str()
                    )));
                }
            }
            for (j, other) in out.iter().enumerate() {
                let (a, b) = (number.as_str(), other.number.as_str());
                if a == b {
                    return Err(number_err(format!(
                        "extension {number} is already defined by extensions[{j}]"
                    )));
                }
                if a.starts_with(b) || b.starts_with(a) {
                    let (short, long) = if a.len() < b.len() { (a, b) } else { (b, a) };
                    return Err(number_err(format!(
                        "extension {number} collides with extensions[{j}] ({}): {short} is a \
                         prefix of {long}, so {long} could never be dialled",
                        other.number
                    )));
                }
            }
            let port = self.port(&ext.port, field("port"))?;
            let name = match ext.name {
                Some(n) => {
                    if n.get_ref().chars().count() > MAX_NAME_CHARS {
                        return Err(self.invalid(
                            n.span(),
                            field("name"),
                            format!("longer than {MAX_NAME_CHARS} characters"),
                        ));
                    }
                    if n.get_ref().chars().any(char::is_control) {
                        return Err(self.invalid(
                            n.span(),
                            field("name"),
                            "must not contain control characters",
                        ));
                    }
                    n.into_inner()
                }
                None => String::new(),
            };
            let permissions = self.permissions(ext.permissions, &field("permissions"))?;
            out.push(ExtensionConfig {
                number,
                port,
                name,
                call_waiting: ext.call_waiting.unwrap_or(true),
                permissions,
                port_line: self.line(&ext.port.span()),
            });
        }
        Ok(out)
    }

    fn fxo_lines(
        &self,
        raw: Vec<RawFxoLine>,
        telephony: &TelephonyConfig,
    ) -> Result<Vec<FxoLineConfig>> {
        let mut out = Vec::with_capacity(raw.len());
        for (i, line) in raw.into_iter().enumerate() {
            let port = self.port(&line.port, format!("fxo_lines[{i}].port"))?;
            let mut inbound: Vec<ExtensionNumber> = Vec::new();
            for (k, number) in line.inbound.unwrap_or_default().iter().enumerate() {
                let field = format!("fxo_lines[{i}].inbound[{k}]");
                let parsed: ExtensionNumber = self.parse(number, &field)?;
                if inbound.contains(&parsed) {
                    return Err(self.invalid(
                        number.span(),
                        field,
                        format!("extension {parsed} is listed twice"),
                    ));
                }
                inbound.push(parsed);
            }
            let outbound = match &line.outbound {
                Some(o) => *o.get_ref(),
                None => true,
            };
            if outbound && telephony.outside_line_prefix.is_none() {
                let (span, field, why) = match &line.outbound {
                    Some(o) => (
                        o.span(),
                        format!("fxo_lines[{i}].outbound"),
                        "outbound = true",
                    ),
                    None => (
                        line.port.span(),
                        format!("fxo_lines[{i}]"),
                        "the line is outbound by default",
                    ),
                };
                return Err(self.invalid(
                    span,
                    field,
                    format!(
                        "{why} needs telephony.outside_line_prefix, which is not set; \
                         set the prefix or `outbound = false`"
                    ),
                ));
            }
            out.push(FxoLineConfig {
                port,
                inbound,
                outbound,
                port_line: self.line(&line.port.span()),
            });
        }
        Ok(out)
    }
}

/// The field name in serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}
