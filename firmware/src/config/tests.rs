//! Config loading: the examples load, and every kind of error names file, line and field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const FILE: &str = "/etc/branchline/branchd.toml";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples-config")
        .join(name)
}

/// The error message for `text`, which must fail to load.
fn error(text: &str) -> String {
    match Config::from_toml_str(text, Path::new(FILE)) {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts the message starts with the file and line and names the field.
fn assert_located(message: &str, line: usize, field: &str) {
    let prefix = format!("{FILE}, line {line}: {field}: ");
    assert!(
        message.starts_with(&prefix),
        "expected {prefix:?} at the start of {message:?}"
    );
}

const BASE: &str = r#"[telephony]
outside_line_prefix = "9"

[[extensions]]
number = "101"
port = 1

[[extensions]]
number = "102"
port = 2
"#;

#[test]
fn sim_example_loads() {
    let path = example("sim.toml");
    let config = Config::load(&path).expect("sim.toml loads");
    assert_eq!(config.source, path);
    assert_eq!(
        config.site.box_serial.as_ref().map(BoxSerial::as_str),
        Some("BL-SIM-0001")
    );
    assert_eq!(
        config.paths.db_path(),
        Path::new("./branchline-data/branchline.db")
    );
    assert_eq!(config.board.profile, "sim");
    assert_eq!(
        config.board.sim_console,
        Some("127.0.0.1:7878".parse().expect("addr"))
    );
    assert_eq!(
        config.web.listen,
        Some("127.0.0.1:8080".parse().expect("addr"))
    );
    assert_eq!(config.web.https, WebHttps::Auto);
    let off = format!("[web]\nhttps = \"off\"\n{BASE}");
    let off = Config::from_toml_str(&off, Path::new(FILE)).expect("https = off loads");
    assert_eq!(off.web.https, WebHttps::Off);
    assert_eq!(config.web.chart_sample, Duration::from_secs(60));
    assert_eq!(config.web.call_sample, Duration::from_secs(5));
    let fast = format!("[web]\nchart_sample_seconds = 2\ncall_sample_seconds = 1\n{BASE}");
    let fast = Config::from_toml_str(&fast, Path::new(FILE)).expect("sampling loads");
    assert_eq!(
        (fast.web.chart_sample, fast.web.call_sample),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!(config.telephony.country, Some(Country::Us));
    assert_eq!(
        config.telephony.resolve(Country::De),
        (Country::Us, Law::Ulaw)
    );
    assert_eq!(
        config
            .telephony
            .outside_line_prefix
            .as_ref()
            .map(DialString::as_str),
        Some("9")
    );
    let numbers: Vec<(&str, u8)> = config
        .extensions
        .iter()
        .map(|e| (e.number.as_str(), e.port.get()))
        .collect();
    assert_eq!(numbers, [("101", 1), ("102", 2), ("103", 3), ("104", 4)]);
    assert_eq!(config.extensions[0].name, "Reception");
    assert_eq!(config.fxo_lines.len(), 2);
    assert_eq!(config.fxo_lines[0].port.get(), 5);
    assert_eq!(
        config.fxo_lines[0]
            .inbound
            .iter()
            .map(ExtensionNumber::as_str)
            .collect::<Vec<_>>(),
        ["101", "102"]
    );
    assert_eq!(config.fxo_lines[1].inbound.len(), 1);
    config
        .check_board(1..=4, 5..=6)
        .expect("fits the sim board");
}

#[test]
fn bl_812_example_loads() {
    let config = Config::load(&example("bl-812.toml")).expect("bl-812.toml loads");
    assert_eq!(config.board.profile, "bl-812");
    assert_eq!(
        config.telephony.resolve(Country::Us),
        (Country::De, Law::Alaw)
    );
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.extensions.len(), 8);
    assert_eq!(config.fxo_lines.len(), 4);
    assert!(config.fxo_lines[2].inbound.is_empty());
    assert!(!config.fxo_lines[3].outbound);
    config.check_board(1..=8, 9..=12).expect("fits the BL-812");
}

#[test]
fn empty_file_gives_defaults() {
    let config = Config::from_toml_str("", Path::new(FILE)).expect("empty is valid");
    assert_eq!(config.paths.data_dir, Path::new(DEFAULT_DATA_DIR));
    assert_eq!(config.paths.system_prompts, Path::new(SYSTEM_PROMPTS_DIR));
    assert_eq!(config.board.profile, "sim");
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Human);
    assert_eq!(config.telephony.country, None);
    assert_eq!(
        config.telephony.first_digit_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(config.telephony.inter_digit_timeout, Duration::from_secs(4));
    assert_eq!(config.telephony.ring_timeout, Duration::from_secs(60));
    assert!(config.extensions.is_empty());
    assert_eq!(Country::Jp.default_law(), Law::Ulaw);
    assert_eq!(Country::Fr.default_law(), Law::Alaw);
}

#[test]
fn system_prompts_path_is_configurable_and_not_empty() {
    let config = Config::from_toml_str(
        "[paths]\nsystem_prompts = \"image/rootfs/usr/share/branchline/prompts\"\n",
        Path::new(FILE),
    )
    .expect("valid");
    assert_eq!(
        config.paths.system_prompts,
        Path::new("image/rootfs/usr/share/branchline/prompts")
    );
    let e = Config::from_toml_str("[paths]\nsystem_prompts = \"\"\n", Path::new(FILE))
        .unwrap_err()
        .to_string();
    assert!(e.contains("paths.system_prompts"), "{e}");
}

#[test]
fn missing_file_names_the_path() {
    let e = Config::load(Path::new("/nonexistent/branchd.toml"))
        .expect_err("missing file")
        .to_string();
    assert!(
        e.starts_with("/nonexistent/branchd.toml: cannot read config file"),
        "{e}"
    );
}

#[test]
fn toml_syntax_error() {
    let e = error("[site]\nbox_serial = \"BL-1\"\n[telephony\ncountry = \"US\"\n");
    assert!(e.starts_with(&format!("{FILE}, line 3: ")), "{e}");
    assert!(e.contains("expected `]`"), "{e}");
}

#[test]
fn unknown_field() {
    let e = error(&format!("{BASE}nmae = \"Sales\"\n"));
    assert_located(&e, 11, "extensions[1].nmae");
    assert!(e.contains("unknown field `nmae`"), "{e}");

    let e = error("[logging]\nlevel = \"info\"\n");
    assert_located(&e, 1, "logging");
}

#[test]
fn wrong_type() {
    let e = error("[[extensions]]\nnumber = \"101\"\nport = \"one\"\n");
    assert_located(&e, 3, "extensions[0].port");
    assert!(e.contains("invalid type: string"), "{e}");

    let e = error("[[extensions]]\nnumber = 101\nport = 1\n");
    assert_located(&e, 2, "extensions[0].number");

    let e = error("[log]\nformat = \"xml\"\n");
    assert_located(&e, 2, "log.format");
    assert!(e.contains("`human`"), "{e}");
}

#[test]
fn missing_field() {
    let e =
        error("[[extensions]]\nnumber = \"101\"\nport = 1\n\n[[extensions]]\nnumber = \"102\"\n");
    assert_located(&e, 5, "extensions[1].port");
    assert!(e.contains("missing field `port`"), "{e}");
}

#[test]
fn bad_extension_number() {
    let e = error("[[extensions]]\nnumber = \"10a\"\nport = 1\n");
    assert_located(&e, 2, "extensions[0].number");
    assert!(e.contains("must be 2 to 6 digits"), "{e}");
    let e = error("[[extensions]]\nnumber = \"1\"\nport = 1\n");
    assert_located(&e, 2, "extensions[0].number");
}

#[test]
fn port_out_of_range() {
    let e = error("[[extensions]]\nnumber = \"101\"\nport = 0\n");
    assert_located(&e, 3, "extensions[0].port");
    assert!(e.contains("port 0 is out of range (1..=255)"), "{e}");
}

#[test]
fn duplicate_extension() {
    let e = error(&format!(
        "{BASE}\n[[extensions]]\nnumber = \"101\"\nport = 3\n"
    ));
    assert_located(&e, 13, "extensions[2].number");
    assert!(e.contains("already defined by extensions[0]"), "{e}");
}

#[test]
fn prefix_collision_between_extensions() {
    let e = error(&format!(
        "{BASE}\n[[extensions]]\nnumber = \"10\"\nport = 3\n"
    ));
    assert_located(&e, 13, "extensions[2].number");
    assert!(e.contains("10 is a prefix of 101"), "{e}");
}

#[test]
fn extension_starting_with_outside_prefix() {
    let e = error(&format!(
        "{BASE}\n[[extensions]]\nnumber = \"901\"\nport = 3\n"
    ));
    assert_located(&e, 13, "extensions[2].number");
    assert!(e.contains("outside line prefix"), "{e}");
}

#[test]
fn inbound_names_extensions_or_queue_numbers_but_well_formed_ones() {
    // 7001 is no extension: it may be a queue's number (queues are the store's; the
    // daemon checks it at start).
    let c = Config::from_toml_str(
        &format!("{BASE}\n[[fxo_lines]]\nport = 5\ninbound = [\"101\", \"7001\"]\n"),
        Path::new(FILE),
    )
    .expect("queue number accepted");
    assert_eq!(c.fxo_lines[0].inbound.len(), 2);
    let e = error(&format!(
        "{BASE}\n[[fxo_lines]]\nport = 5\ninbound = [\"101\",\n  \"10a\"]\n"
    ));
    assert_located(&e, 15, "fxo_lines[0].inbound[1]");
    let e = error(&format!(
        "{BASE}\n[[fxo_lines]]\nport = 5\ninbound = [\"101\",\n  \"101\"]\n"
    ));
    assert!(e.contains("listed twice"), "{e}");
}

#[test]
fn outbound_line_needs_prefix() {
    let e = error("[[fxo_lines]]\nport = 5\n");
    assert_located(&e, 2, "fxo_lines[0]");
    assert!(e.contains("outside_line_prefix"), "{e}");
    let e = error("[[fxo_lines]]\nport = 5\noutbound = true\n");
    assert_located(&e, 3, "fxo_lines[0].outbound");
    Config::from_toml_str(
        "[[fxo_lines]]\nport = 5\noutbound = false\n",
        Path::new(FILE),
    )
    .expect("inbound-only line needs no prefix");
}

#[test]
fn bad_country() {
    let e = error("[site]\nbox_serial = \"X\"\n\n[telephony]\ncountry = \"XX\"\n");
    assert_located(&e, 5, "telephony.country");
    assert!(
        e.contains("unknown country \"XX\" (known: US, UK, DE, FR, CN, JP)"),
        "{e}"
    );
}

#[test]
fn timeout_out_of_range() {
    let e = error("[telephony]\nfirst_digit_timeout_ms = 10000\ninter_digit_timeout_ms = 100\n");
    assert_located(&e, 3, "telephony.inter_digit_timeout_ms");
    assert!(e.contains("100 ms is out of range (500..=30000 ms)"), "{e}");
    let e = error("[telephony]\nring_timeout_ms = 600001\n");
    assert_located(&e, 2, "telephony.ring_timeout_ms");
}

#[test]
fn other_field_checks() {
    let e = error("[site]\nbox_serial = \"BL 1\"\n");
    assert_located(&e, 2, "site.box_serial");
    let e = error("[board]\nsim_console = \"localhost\"\n");
    assert_located(&e, 2, "board.sim_console");
    let e = error("[web]\nlisten = \"localhost\"\n");
    assert_located(&e, 2, "web.listen");
    let e = error("[web]\nlisten = \"127.0.0.1:0\"\nhttps = \"on\"\n");
    assert_located(&e, 3, "web.https");
    assert!(e.contains("\"on\" is not \"auto\" or \"off\""), "{e}");
    let e = error("[web]\nchart_sample_seconds = 0\n");
    assert_located(&e, 2, "web.chart_sample_seconds");
    assert!(e.contains("0 is out of range (1..=3600)"), "{e}");
    let e = error("[web]\ncall_sample_seconds = 61\n");
    assert_located(&e, 2, "web.call_sample_seconds");
    let e = error("[log]\nlevel = \"info,sip=loud\"\n");
    assert_located(&e, 2, "log.level");
    let e = error("[telephony]\noutside_line_prefix = \"900\"\n");
    assert_located(&e, 2, "telephony.outside_line_prefix");
    let e = error("[[extensions]]\nnumber = \"101\"\nport = 1\nname = \"0123456789012345678901234567890123\"\n");
    assert_located(&e, 4, "extensions[0].name");
    let e = error("[paths]\ndata_dir = \"\"\n");
    assert_located(&e, 2, "paths.data_dir");
}

#[test]
fn the_site_time_zone_is_a_zone_name_or_a_posix_rule() {
    let parse = |text: &str| Config::from_toml_str(text, Path::new(FILE)).expect("config");
    assert_eq!(
        parse("").telephony.time_zone,
        crate::site_time::ZoneSpec::utc()
    );
    let c = parse("[telephony]\ntime_zone = \"Europe/Berlin\"\n");
    assert_eq!(c.telephony.time_zone.spec, "Europe/Berlin");
    assert!(c.telephony.time_zone.tzif.is_some());
    let c = parse("[telephony]\ntime_zone = \"EST5EDT,M3.2.0,M11.1.0\"\n");
    assert_eq!(c.telephony.time_zone.spec, "EST5EDT,M3.2.0,M11.1.0");
    assert_eq!(c.telephony.time_zone.tzif, None);
    for bad in ["Europe/Atlantis", "../../etc/shadow", "", "+01:00"] {
        let e = error(&format!("[telephony]\ntime_zone = {bad:?}\n"));
        assert_located(&e, 2, "telephony.time_zone");
        assert!(e.contains("is not a time zone"), "{e}");
    }
}

#[test]
fn check_board_port_errors() {
    let config = Config::from_toml_str(
        &format!("{BASE}\n[[extensions]]\nnumber = \"103\"\nport = 9\n"),
        Path::new(FILE),
    )
    .expect("valid without the board");
    let e = config
        .check_board(1..=4, 5..=6)
        .expect_err("port 9")
        .to_string();
    assert_eq!(
        e,
        format!(
            "{FILE}, line 14: extensions[2].port: port 9 is not an FXS port of this board \
             (FXS ports are 1-4)"
        )
    );
    config
        .check_board(1..=10, 11..=12)
        .expect("fits a bigger board");

    let config = Config::from_toml_str(
        &format!("{BASE}\n[[extensions]]\nnumber = \"103\"\nport = 2\n"),
        Path::new(FILE),
    )
    .expect("valid without the board");
    let e = config
        .check_board(1..=4, 5..=6)
        .expect_err("port 2 twice")
        .to_string();
    assert_located(&e, 14, "extensions[2].port");
    assert!(
        e.contains("already used by extensions[1] (102, line 10)"),
        "{e}"
    );

    let fxo = format!("{BASE}\n[[fxo_lines]]\nport = 5\n\n[[fxo_lines]]\nport = 3\n");
    let config = Config::from_toml_str(&fxo, Path::new(FILE)).expect("valid");
    let e = config
        .check_board(1..=4, 5..=6)
        .expect_err("port 3")
        .to_string();
    assert_located(&e, 16, "fxo_lines[1].port");
    assert!(
        e.contains("port 3 is not an FXO port of this board (FXO ports are 5-6)"),
        "{e}"
    );
    let e = config
        .check_board(1..=4, std::ops::RangeInclusive::new(1, 0))
        .expect_err("no FXO")
        .to_string();
    assert!(e.contains("line 13: fxo_lines[0].port: port 5 is not an FXO port of this board (it has no FXO ports)"), "{e}");

    let dup = format!("{BASE}\n[[fxo_lines]]\nport = 5\n\n[[fxo_lines]]\nport = 5\n");
    let config = Config::from_toml_str(&dup, Path::new(FILE)).expect("valid");
    let e = config
        .check_board(1..=4, 5..=6)
        .expect_err("5 twice")
        .to_string();
    assert_located(&e, 16, "fxo_lines[1].port");
}

#[test]
fn newtypes_validate() {
    assert!("101".parse::<ExtensionNumber>().is_ok());
    assert!("1234567".parse::<ExtensionNumber>().is_err());
    assert!(ExtensionNumber::try_from("12").is_ok());
    assert_eq!(
        ExtensionNumber::try_from(String::from("205"))
            .map(|n| n.to_string())
            .ok()
            .as_deref(),
        Some("205")
    );
    assert!(PortNumber::try_from(0u8).is_err());
    assert_eq!(
        PortNumber::try_from(255i64).map(PortNumber::get).ok(),
        Some(255)
    );
    assert!(PortNumber::try_from(256i64).is_err());
    assert!("*72#".parse::<DialString>().is_ok());
    assert!("".parse::<DialString>().is_err());
    assert!("BL_812-x".parse::<BoxSerial>().is_ok());
    assert!("BL/1".parse::<BoxSerial>().is_err());
}

#[test]
fn auth_and_privacy_sections() {
    let config = Config::from_toml_str("", Path::new(FILE)).expect("defaults");
    assert_eq!(config.auth, AuthConfig::default());
    assert_eq!(config.auth.max_failed_logins, 5);
    assert_eq!(config.auth.lockout_minutes, 15);
    assert_eq!(config.privacy.mask_pattern.to_string(), "3*4");

    let fast = crate::accounts::HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let hash = &crate::accounts::password::hash_secret("label-password-99", fast).expect("hash");
    let text = format!(
        "[auth]\nmax_failed_logins = 3\nlockout_minutes = 60\n\
         installer_password_hash = \"{hash}\"\n[privacy]\nmask_pattern = \"2*2\"\n"
    );
    let config = Config::from_toml_str(&text, Path::new(FILE)).expect("valid");
    assert_eq!(config.auth.max_failed_logins, 3);
    assert_eq!(config.auth.lockout_minutes, 60);
    assert_eq!(
        config.auth.installer_password_hash.as_deref(),
        Some(hash.as_str())
    );
    assert_eq!(config.privacy.mask_pattern.to_string(), "2*2");

    assert_located(
        &error("[auth]\nmax_failed_logins = 0\n"),
        2,
        "auth.max_failed_logins",
    );
    assert_located(
        &error("\n[auth]\nlockout_minutes = 99999\n"),
        3,
        "auth.lockout_minutes",
    );
    assert_located(
        &error("[auth]\ninstaller_password_hash = \"plaintext\"\n"),
        2,
        "auth.installer_password_hash",
    );
    assert_located(
        &error("[privacy]\nmask_pattern = \"3-4\"\n"),
        2,
        "privacy.mask_pattern",
    );
}

const HQ: &str = r#"
[hq]
url = "https://hq.example.net:8443/"
ca_cert = "/etc/branchline/hq-ca.pem"
client_cert = "/var/lib/branchline/box.pem"
client_key = "/var/lib/branchline/box.key"
box_id = "BOX-0001"
"#;

#[test]
fn hq_section_is_optional_and_has_defaults() {
    let config = Config::from_toml_str(BASE, Path::new(FILE)).expect("no [hq]");
    assert_eq!(config.hq, None);
    assert_eq!(config.wan.trunk, None);
    let config = Config::from_toml_str(&format!("{BASE}{HQ}"), Path::new(FILE)).expect("[hq]");
    let hq = config.hq.expect("hq");
    assert_eq!(hq.url, "https://hq.example.net:8443");
    assert_eq!(hq.box_id, "BOX-0001");
    assert_eq!(hq.batch_records, 500);
    assert_eq!(hq.long_poll, Duration::from_secs(25));
    assert_eq!(hq.request_timeout, Duration::from_secs(30));
    assert_eq!(hq.probe_interval, Duration::from_secs(10));
    assert_eq!(hq.renew_at_percent, 67);
    let config = Config::from_toml_str(
        &format!("{BASE}[wan]\ntrunk = \"sip.example.net:5060\"\ntrunk_transport = \"tcp\"\n"),
        Path::new(FILE),
    )
    .expect("[wan]");
    assert_eq!(config.wan.trunk.as_deref(), Some("sip.example.net:5060"));
    assert_eq!(config.wan.trunk_transport, TrunkTransport::Tcp);
}

#[test]
fn bad_hq_values_name_file_line_and_field() {
    let base_lines = BASE.lines().count();
    let plain = format!("{BASE}{}", HQ.replace("https://", "http://"));
    assert_located(&error(&plain), base_lines + 3, "hq.url");
    let id = format!("{BASE}{}", HQ.replace("BOX-0001", "box 1"));
    assert_located(&error(&id), base_lines + 7, "hq.box_id");
    let batch = format!("{BASE}{HQ}batch_records = 5000\n");
    assert_located(&error(&batch), base_lines + 8, "hq.batch_records");
    for bad in [
        "renew_at_percent = 9",
        "renew_at_percent = 96",
        "renew_at_percent = -1",
    ] {
        let renew = format!("{BASE}{HQ}{bad}\n");
        assert_located(&error(&renew), base_lines + 8, "hq.renew_at_percent");
    }
    let renew = format!("{BASE}{HQ}renew_at_percent = 50\n");
    let config = Config::from_toml_str(&renew, Path::new(FILE)).expect("renew_at_percent");
    assert_eq!(config.hq.expect("hq").renew_at_percent, 50);
    let missing = format!("{BASE}{}", HQ.replace("box_id = \"BOX-0001\"\n", ""));
    assert!(error(&missing).contains("box_id"), "{}", error(&missing));
    let trunk = format!("{BASE}[wan]\ntrunk = \"sip.example.net\"\n");
    assert_located(&error(&trunk), base_lines + 2, "wan.trunk");
    let transport = format!("{BASE}[wan]\ntrunk_transport = \"sctp\"\n");
    assert_located(&error(&transport), base_lines + 2, "wan.trunk_transport");
}

#[test]
fn sim_example_has_sip_accounts_and_media() {
    let config = Config::load(&example("sim.toml")).expect("sim.toml loads");
    let accounts: Vec<_> = config
        .sip_accounts
        .iter()
        .map(|a| (a.extension.as_str(), a.name.as_str()))
        .collect();
    assert_eq!(accounts, [("210", "Desk phone"), ("211", "Softphone")]);
    // The accounts need the endpoint to register with.
    let sip = config.sip.as_ref().expect("sim.toml has a [sip] section");
    assert_eq!(
        sip.udp.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:5070")
    );
    assert_eq!(sip.domain, "sim.branch.test");
    assert_eq!(config.media.local_ip.to_string(), "127.0.0.1");
    assert_eq!(
        (config.media.rtp_port_min, config.media.rtp_port_max),
        (10000, 10999)
    );
}

#[test]
fn media_defaults_when_absent() {
    let config = Config::from_toml_str(BASE, Path::new(FILE)).expect("loads");
    assert_eq!(config.media, MediaConfig::default());
    assert!(config.media.local_ip.is_unspecified());
    assert_eq!(
        (config.media.rtp_port_min, config.media.rtp_port_max),
        (MEDIA_RTP_PORTS.0, MEDIA_RTP_PORTS.1)
    );
    assert_eq!(
        (config.media.jitter_min_ms, config.media.jitter_max_ms),
        (20, 200)
    );
    assert_eq!(
        (config.media.rtp_timeout, config.media.rtp_hold_timeout),
        (Duration::from_secs(60), Duration::from_secs(600))
    );
    assert!(config.sip_accounts.is_empty());
}

#[test]
fn media_inactivity_timeouts_load_and_zero_disables() {
    let config = Config::from_toml_str(
        &format!("{BASE}\n[media]\nrtp_timeout_s = 3\nrtp_hold_timeout_s = 30\n"),
        Path::new(FILE),
    )
    .expect("loads");
    assert_eq!(config.media.rtp_timeout, Duration::from_secs(3));
    assert_eq!(config.media.rtp_hold_timeout, Duration::from_secs(30));
    // 0 disables either check; a disabled active check allows any hold timeout.
    let config = Config::from_toml_str(
        &format!("{BASE}\n[media]\nrtp_timeout_s = 0\nrtp_hold_timeout_s = 5\n"),
        Path::new(FILE),
    )
    .expect("loads");
    assert_eq!(config.media.rtp_timeout, Duration::ZERO);
    let config = Config::from_toml_str(
        &format!("{BASE}\n[media]\nrtp_timeout_s = 90\nrtp_hold_timeout_s = 0\n"),
        Path::new(FILE),
    )
    .expect("loads");
    assert_eq!(config.media.rtp_hold_timeout, Duration::ZERO);
}

#[test]
fn media_values_are_checked() {
    let e = error("[media]\nrtp_port_min = 80\n");
    assert_located(&e, 2, "media.rtp_port_min");
    assert!(e.contains("out of range"), "{e}");
    let e = error("[media]\nrtp_port_min = 20001\nrtp_port_max = 20001\n");
    assert_located(&e, 3, "media.rtp_port_max");
    assert!(e.contains("no RTP/RTCP port pair"), "{e}");
    let e = error("[media]\njitter_min_ms = 300\njitter_max_ms = 100\n");
    assert_located(&e, 3, "media.jitter_max_ms");
    assert!(e.contains("minimum above maximum"), "{e}");
    let e = error("[media]\njitter_max_ms = 5000\n");
    assert_located(&e, 2, "media.jitter_max_ms");
    let e = error("[media]\nlocal_ip = \"localhost\"\n");
    assert_located(&e, 2, "media.local_ip");
    let e = error("[media]\nrtp_ports = 3\n");
    assert!(e.contains("unknown field"), "{e}");
    let e = error("[media]\nrtp_timeout_s = -1\n");
    assert_located(&e, 2, "media.rtp_timeout_s");
    assert!(e.contains("out of range (0..=3600)"), "{e}");
    let e = error("[media]\nrtp_hold_timeout_s = 100000\n");
    assert_located(&e, 2, "media.rtp_hold_timeout_s");
    assert!(e.contains("out of range"), "{e}");
    let e = error("[media]\nrtp_timeout_s = 120\nrtp_hold_timeout_s = 60\n");
    assert_located(&e, 3, "media.rtp_hold_timeout_s");
    assert!(e.contains("shorter than rtp_timeout_s"), "{e}");
    let e = error("[media]\nrtp_timeout_s = \"60s\"\n");
    assert!(e.contains("media"), "{e}");
    let ok = Config::from_toml_str(
        "[media]\nlocal_ip = \"192.0.2.10\"\nrtp_port_min = 20001\nrtp_port_max = 20003\n",
        Path::new(FILE),
    )
    .expect("odd start with one pair loads");
    assert_eq!(
        (ok.media.rtp_port_min, ok.media.rtp_port_max),
        (20001, 20003)
    );
}

fn sip_account(ext: &str, password: &str) -> String {
    format!("{BASE}\n[[sip_accounts]]\nextension = \"{ext}\"\npassword = \"{password}\"\n")
}

#[test]
fn sip_accounts_load_and_may_share_an_fxs_number() {
    let text = format!(
        "{}\n[[sip_accounts]]\nextension = \"210\"\nname = \"Desk\"\npassword = \"long-enough\"\n\
         \n[[fxo_lines]]\nport = 5\ninbound = [\"102\", \"210\"]\n",
        sip_account("102", "another-secret")
    );
    let config = Config::from_toml_str(&text, Path::new(FILE)).expect("loads");
    assert_eq!(config.sip_accounts.len(), 2);
    assert_eq!(config.sip_accounts[0].extension.as_str(), "102");
    assert_eq!(config.sip_accounts[1].name, "Desk");
    assert_eq!(config.fxo_lines[0].inbound.len(), 2);
    // The password never reaches a log line.
    let debug = format!("{:?}", config.sip_accounts[0]);
    assert!(!debug.contains("another-secret"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}

#[test]
fn sip_account_errors_name_file_line_and_field() {
    let e = error(&sip_account("210", "short"));
    assert_located(&e, 14, "sip_accounts[0].password");
    assert!(e.contains("shorter than 8"), "{e}");
    let e = error(&sip_account("210", "x210x-long-password"));
    assert_located(&e, 14, "sip_accounts[0].password");
    assert!(e.contains("must not contain the extension"), "{e}");
    let e = error(&sip_account("10", "long-enough"));
    assert_located(&e, 13, "sip_accounts[0].extension");
    assert!(e.contains("collides with extensions[0]"), "{e}");
    let e = error(&sip_account("900", "long-enough"));
    assert_located(&e, 13, "sip_accounts[0].extension");
    assert!(e.contains("outside line prefix"), "{e}");
    let e = error(&sip_account("21a", "long-enough"));
    assert_located(&e, 13, "sip_accounts[0].extension");
    let e = error(&format!(
        "{}\n[[sip_accounts]]\nextension = \"210\"\npassword = \"long-enough-2\"\n",
        sip_account("210", "long-enough")
    ));
    assert_located(&e, 17, "sip_accounts[1].extension");
    assert!(e.contains("already has a SIP account"), "{e}");
    let e = error(&format!("{BASE}\n[[sip_accounts]]\nextension = \"210\"\n"));
    assert!(e.contains("password"), "{e}");
}

fn sip_trunk(extra: &str) -> String {
    format!(
        "{BASE}\n[sip]\nudp = \"127.0.0.1:0\"\ndomain = \"branch.test\"\n\n[sip.trunk]\n\
         servers = [\"192.0.2.20\"]\ndomain = \"hq.test\"\nusername = \"branch\"\n\
         password = \"trunk-secret\"\n{extra}"
    )
}

#[test]
fn sip_trunk_keepalive_defaults_to_30_s_and_0_turns_it_off() {
    let keepalive = |extra: &str| {
        Config::from_toml_str(&sip_trunk(extra), Path::new(FILE))
            .expect("loads")
            .sip
            .and_then(|s| s.trunk)
            .expect("trunk")
            .keepalive
    };
    assert_eq!(keepalive(""), Some(Duration::from_secs(30)));
    assert_eq!(keepalive("keepalive_s = 5\n"), Some(Duration::from_secs(5)));
    assert_eq!(keepalive("keepalive_s = 0\n"), None);
    let e = error(&sip_trunk("keepalive_s = 2\n"));
    assert_located(&e, 21, "sip.trunk.keepalive_s");
    assert!(e.contains("0 (off) or at least 5"), "{e}");
    let e = error(&sip_trunk("keepalive_s = 3601\n"));
    assert_located(&e, 21, "sip.trunk.keepalive_s");
    assert!(e.contains("out of range"), "{e}");
}

fn sip_digest(extra: &str) -> String {
    format!("{BASE}\n[sip]\nudp = \"127.0.0.1:0\"\n{extra}")
}

#[test]
fn sip_digest_algorithms_default_md5_first_and_md5_alone() {
    use branchline_sip::digest::Algorithm::{Md5, Sha256};
    let algorithms = |extra: &str| {
        Config::from_toml_str(&sip_digest(extra), Path::new(FILE))
            .expect("loads")
            .sip
            .expect("sip")
            .digest_algorithms
    };
    assert_eq!(algorithms(""), [Sha256, Md5]);
    assert_eq!(algorithms("md5_first = false\n"), [Sha256, Md5]);
    assert_eq!(algorithms("md5_first = true\n"), [Md5, Sha256]);
    assert_eq!(algorithms("digest_algorithms = [\"MD5\"]\n"), [Md5]);
    assert_eq!(
        algorithms("digest_algorithms = [\"md5\", \"sha-256\"]\n"),
        [Md5, Sha256]
    );
}

#[test]
fn sip_digest_algorithm_errors_name_file_line_and_field() {
    let cases = [
        ("digest_algorithms = []\n", "is empty"),
        ("digest_algorithms = [\"SHA-512-256\"]\n", "not offered"),
        ("digest_algorithms = [\"MD5-sess\"]\n", "not offered"),
        ("digest_algorithms = [\"rot13\"]\n", "not offered"),
        ("digest_algorithms = [\"MD5\", \"md5\"]\n", "listed twice"),
        (
            "md5_first = true\ndigest_algorithms = [\"MD5\"]\n",
            "not both",
        ),
    ];
    for (extra, why) in cases {
        let e = error(&sip_digest(extra));
        let line = 13 + extra.lines().count();
        assert_located(&e, line, "sip.digest_algorithms");
        assert!(e.contains(why), "{extra:?}: {e}");
    }
}

#[test]
fn sip_session_timers_on_by_default_off_at_zero_and_bad_values_refused() {
    use branchline_sip::session_timer::SessionTimerConfig;
    let timer = |extra: &str| {
        Config::from_toml_str(&sip_digest(extra), Path::new(FILE))
            .expect("loads")
            .sip
            .expect("sip")
            .session_timer
    };
    assert_eq!(
        timer(""),
        Some(SessionTimerConfig {
            min_se: 90,
            session_expires: 1800
        })
    );
    assert_eq!(
        timer("session_expires_s = 600\nmin_se_s = 120\n"),
        Some(SessionTimerConfig {
            min_se: 120,
            session_expires: 600
        })
    );
    assert_eq!(timer("session_expires_s = 0\n"), None);
    let cases = [
        (
            "session_expires_s = 60\n",
            14,
            "sip.session_expires_s",
            "below min_se_s",
        ),
        (
            "session_expires_s = -1\n",
            14,
            "sip.session_expires_s",
            "out of range",
        ),
        (
            "session_expires_s = 86401\n",
            14,
            "sip.session_expires_s",
            "out of range",
        ),
        ("min_se_s = 89\n", 14, "sip.min_se_s", "out of range"),
        // The default interval (1800) below a larger minimum: the minimum is named.
        ("min_se_s = 3600\n", 14, "sip.min_se_s", "below min_se_s"),
        (
            "session_expires_s = 300\nmin_se_s = 600\n",
            14,
            "sip.session_expires_s",
            "below min_se_s",
        ),
    ];
    for (extra, line, field, why) in cases {
        let e = error(&sip_digest(extra));
        assert_located(&e, line, field);
        assert!(e.contains(why), "{extra:?}: {e}");
    }
}

#[test]
fn call_center_feature_codes_are_validated() {
    let config = Config::from_toml_str(
        "[call_center.feature_codes]\nlogin = \"#1\"\nlogout = \"#2\"\n",
        Path::new(FILE),
    )
    .expect("valid codes");
    assert_eq!(
        config
            .call_center
            .feature_codes
            .parse("#2")
            .expect("parses"),
        crate::acd::codes::Parsed::Request(crate::acd::codes::FeatureRequest::Logout)
    );
    // The default pause code *63 is not affected; a prefix clash and a bad digit are
    // refused with the file, the line and the field.
    let clash = error("\n[call_center.feature_codes]\nlogin = \"*6\"\n");
    assert!(clash.starts_with(&format!("{FILE}, line ")), "{clash}");
    assert!(
        clash.contains("call_center.feature_codes.login") && clash.contains("prefix"),
        "{clash}"
    );
    let bad = error("[call_center.feature_codes]\nunpause = \"*6A\"\n");
    assert!(bad.contains("call_center.feature_codes.unpause"), "{bad}");
    let unknown = error("[call_center.feature_codes]\nintrude = \"*70\"\n");
    assert!(unknown.contains("intrude"), "{unknown}");
    let clash = error("[call_center.feature_codes]\nbarge = \"*6\"\n");
    assert!(clash.contains("call_center.feature_codes.barge"), "{clash}");
}

#[test]
fn voicemail_codes_default_and_are_validated() {
    let config = Config::from_toml_str("", Path::new(FILE)).expect("valid");
    assert_eq!(
        config.voicemail.codes,
        crate::call::VoicemailCodes::default()
    );
    let config = Config::from_toml_str(
        "[voicemail]\nown_code = \"#8\"\nany_code = \"#9\"\n",
        Path::new(FILE),
    )
    .expect("valid codes");
    assert_eq!(
        (
            config.voicemail.codes.own.as_str(),
            config.voicemail.codes.any.as_str()
        ),
        ("#8", "#9")
    );
    // A bad digit, codes that are prefixes of each other or of the call center's, and
    // an unknown key: refused with the file, the line and the field.
    let bad = error("\n[voicemail]\nown_code = \"*9A\"\n");
    assert_located(&bad, 3, "voicemail.own_code");
    let prefix = error("[voicemail]\nown_code = \"*9\"\nany_code = \"*98\"\n");
    assert!(
        prefix.contains("voicemail.any_code") && prefix.contains("prefix"),
        "{prefix}"
    );
    let clash = error("[voicemail]\nany_code = \"*6\"\n");
    assert!(
        clash.contains("voicemail.any_code") && clash.contains("call center"),
        "{clash}"
    );
    let unknown = error("[voicemail]\ngreeting = \"x\"\n");
    assert!(unknown.contains("greeting"), "{unknown}");
}

#[test]
fn conference_rooms_are_validated() {
    let room = |body: &str| format!("{BASE}\n[[conference_rooms]]\n{body}");
    let config = Config::from_toml_str(
        &room("number = \"800\"\npin = \"4711\"\n\n[[conference_rooms]]\nnumber = \"81\"\npin = \"12345678\"\nmax_parties = 32\n"),
        Path::new(FILE),
    )
    .expect("valid rooms");
    let rooms = &config.conference_rooms;
    assert_eq!(rooms.len(), 2);
    assert_eq!(rooms[0].number.as_str(), "800");
    assert_eq!(rooms[0].pin.expose(), "4711");
    assert_eq!(rooms[0].max_parties, DEFAULT_MAX_PARTIES);
    assert_eq!(rooms[1].max_parties, 32);
    // Room line: BASE has 11 lines, then a blank one and the table header.
    let line = BASE.lines().count() + 3;
    for (body, field, why) in [
        (
            "number = \"102\"\npin = \"4711\"",
            "number",
            "collides with extension 102",
        ),
        (
            "number = \"10\"\npin = \"4711\"",
            "number",
            "collides with extension 101",
        ),
        (
            "number = \"900\"\npin = \"4711\"",
            "number",
            "outside line prefix",
        ),
        ("number = \"8\"\npin = \"4711\"", "number", "2 to 6 digits"),
        ("number = \"800\"\npin = \"47\"", "pin", "4 to 8 digits"),
        (
            "number = \"800\"\npin = \"4711\"\nmax_parties = 1",
            "max_parties",
            "2 to 32",
        ),
        (
            "number = \"800\"\npin = \"4711\"\nmax_parties = 33",
            "max_parties",
            "2 to 32",
        ),
    ] {
        let e = error(&room(body));
        let at = line + body.lines().position(|l| l.starts_with(field)).unwrap_or(0);
        assert_located(&e, at, &format!("conference_rooms[0].{field}"));
        assert!(e.contains(why), "{body}: {e}");
    }
    let e = error(&room(
        "number = \"800\"\npin = \"4711\"\n[[conference_rooms]]\nnumber = \"80\"\npin = \"4711\"",
    ));
    assert!(
        e.contains("conference_rooms[1].number") && e.contains("collides with conference_rooms[0]"),
        "{e}"
    );
    let e = error(&room("number = \"800\"\npin = \"4711\"\nroom = 1"));
    assert!(e.contains("room"), "{e}");
}

#[test]
fn the_echo_test_code_defaults_can_be_changed_or_turned_off_and_is_validated() {
    let load = |text: &str| Config::from_toml_str(text, Path::new(FILE)).expect("loads");
    assert_eq!(load(BASE).telephony.echo_test_code.as_deref(), Some("*43"));
    let set = BASE.replace("[telephony]\n", "[telephony]\necho_test_code = \"#43\"\n");
    assert_eq!(load(&set).telephony.echo_test_code.as_deref(), Some("#43"));
    let off = BASE.replace("[telephony]\n", "[telephony]\necho_test_code = \"\"\n");
    assert_eq!(load(&off).telephony.echo_test_code, None);
    // The default gives way to a code the config sets that clashes with it.
    let vm = format!("{BASE}\n[voicemail]\nown_code = \"*4\"\nany_code = \"*98\"\n");
    assert_eq!(load(&vm).telephony.echo_test_code, None);

    // A code set in the file is refused with the file, line and field when it is
    // malformed or clashes with any other code or number a phone dials.
    let cases = [
        ("\"*4A\"", "must be 1 to 8"),
        ("\"*4343434343\"", "must be 1 to 8"),
        ("\"*97\"", "voicemail.own_code"),
        ("\"*9\"", "voicemail.own_code"),
        ("\"*981\"", "voicemail.any_code"),
        ("\"*6\"", "call center feature code"),
        ("\"*611\"", "call center feature code"),
        ("\"*8\"", "group pickup"),
        ("\"**1\"", "directed pickup"),
        ("\"9\"", "outside line prefix"),
        ("\"10\"", "extension 101"),
        ("\"1012\"", "extension 101"),
    ];
    for (value, why) in cases {
        let text = BASE.replace(
            "[telephony]\n",
            &format!("[telephony]\necho_test_code = {value}\n"),
        );
        let e = error(&text);
        assert_located(&e, 2, "telephony.echo_test_code");
        assert!(e.contains(why), "{value}: {e}");
    }
    let room = BASE.replace("[telephony]\n", "[telephony]\necho_test_code = \"80\"\n")
        + "\n[[conference_rooms]]\nnumber = \"800\"\npin = \"4711\"\n";
    assert!(error(&room).contains("conference room 800"));
}

#[test]
fn phones_carry_calling_permissions_empty_by_default() {
    let config = Config::from_toml_str(BASE, Path::new(FILE)).expect("loads");
    assert!(config.extensions.iter().all(|e| e.permissions.is_empty()));
    let text = "[telephony]\noutside_line_prefix = \"9\"\n\n[[extensions]]\nnumber = \"101\"\n\
                port = 1\npermissions = [\"international\", \"premium\"]\n\n[[sip_accounts]]\n\
                extension = \"210\"\npassword = \"long-enough\"\n\
                permissions = [\"mobile_intl\"]\n";
    let config = Config::from_toml_str(text, Path::new(FILE)).expect("loads");
    assert_eq!(
        config.extensions[0].permissions,
        ["international", "premium"]
    );
    assert_eq!(config.sip_accounts[0].permissions, ["mobile_intl"]);
    assert!(format!("{:?}", config.sip_accounts[0]).contains("mobile_intl"));
}

#[test]
fn a_bad_permission_list_is_refused_with_file_line_and_field() {
    // Line 13: the `permissions` line of the third extension block of BASE + one.
    let ext = |list: &str| {
        format!("{BASE}\n[[extensions]]\nnumber = \"103\"\nport = 3\npermissions = {list}\n")
    };
    let e = error(&ext("[\"international\", \"Premium\"]"));
    assert_located(&e, 15, "extensions[2].permissions[1]");
    assert!(e.contains("lowercase"), "{e}");
    let e = error(&ext("[\"premium\", \"premium\"]"));
    assert_located(&e, 15, "extensions[2].permissions[1]");
    assert!(e.contains("twice"), "{e}");
    let e = error(&ext("[\"\"]"));
    assert_located(&e, 15, "extensions[2].permissions[0]");
    let e = error(&ext("\"international\""));
    assert!(e.contains("extensions[2].permissions"), "{e}");
    let e = error(&format!(
        "{}permissions = [\"calls.view:site\"]\n",
        sip_account("210", "long-enough")
    ));
    assert_located(&e, 15, "sip_accounts[0].permissions[0]");
    assert!(e.contains("calls.view:site"), "{e}");
}
