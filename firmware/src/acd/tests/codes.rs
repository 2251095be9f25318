//! The agent feature-code parser and its configuration.

use super::super::codes::{
    FeatureCodes, FeatureRequest, Parsed, Pin, RawFeatureCodes, SuperviseMode,
};

fn req(codes: &FeatureCodes, dialled: &str) -> FeatureRequest {
    match codes.parse(dialled) {
        Ok(Parsed::Request(r)) => r,
        other => panic!("{dialled}: {other:?}"),
    }
}

#[test]
fn default_codes_parse_into_requests() {
    let codes = FeatureCodes::default();
    assert_eq!(
        req(&codes, "*611234*0042#"),
        FeatureRequest::Login {
            agent: "1234".parse().expect("id"),
            pin: "0042".parse().expect("pin"),
        }
    );
    assert_eq!(req(&codes, "*62"), FeatureRequest::Logout);
    assert_eq!(req(&codes, "*63#"), FeatureRequest::Pause { reason: None });
    assert_eq!(
        req(&codes, "*6307#"),
        FeatureRequest::Pause {
            reason: Some("07".parse().expect("reason"))
        }
    );
    assert_eq!(req(&codes, "*64"), FeatureRequest::Unpause);
    assert_eq!(
        req(&codes, "*603"),
        FeatureRequest::Disposition { digit: 3 }
    );
    assert_eq!(
        req(&codes, "*600#"),
        FeatureRequest::Disposition { digit: 0 }
    );
    assert_eq!(
        req(&codes, "*609"),
        FeatureRequest::Disposition { digit: 9 }
    );
    for (dialled, mode) in [
        ("*651234#", SuperviseMode::Listen),
        ("*661234#", SuperviseMode::Whisper),
        ("*671234#", SuperviseMode::Barge),
    ] {
        assert_eq!(
            req(&codes, dialled),
            FeatureRequest::Supervise {
                agent: "1234".parse().expect("id"),
                mode
            }
        );
    }
}

#[test]
fn partial_codes_are_incomplete_and_other_numbers_are_not_codes() {
    let codes = FeatureCodes::default();
    for partial in [
        "*",
        "*6",
        "*61",
        "*611234",
        "*611234*",
        "*611234*12",
        "*63",
        "*6312",
        "*60",
        "*65",
        "*6612",
        "*67123",
    ] {
        assert_eq!(codes.parse(partial), Ok(Parsed::Incomplete), "{partial}");
    }
    for other in ["", "201", "*70", "#", "0049301234"] {
        assert_eq!(codes.parse(other), Ok(Parsed::NotACode), "{other}");
    }
}

#[test]
fn malformed_codes_are_clear_errors_that_never_show_the_pin() {
    let codes = FeatureCodes::default();
    let err = codes.parse("*611*1234#").unwrap_err().to_string();
    assert!(err.contains("agent ID"), "{err}");
    let err = codes.parse("*611234*12#").unwrap_err().to_string();
    assert!(err.contains("PIN") && !err.contains("12#"), "{err}");
    let err = codes.parse("*611234*5678*9#").unwrap_err().to_string();
    assert!(!err.contains("5678"), "{err}");
    assert!(codes.parse("*611234#").is_err());
    assert!(codes.parse("*621").is_err());
    assert!(codes.parse("*64#").is_err());
    assert!(codes.parse("*63*1#").is_err());
    for bad in ["*6012", "*60#", "*60*", "*603##", "*603*"] {
        let err = codes.parse(bad).unwrap_err().to_string();
        assert!(err.contains("disposition"), "{bad}: {err}");
    }
    // Supervisor codes: an agent ID of 2 to 10 digits, then #.
    let err = codes.parse("*651#").unwrap_err().to_string();
    assert!(
        err.starts_with("listen: ") && err.contains("agent ID"),
        "{err}"
    );
    assert!(codes.parse("*66#").is_err());
    let err = codes.parse("*6712*").unwrap_err().to_string();
    assert!(
        err.starts_with("barge: ") && err.contains("\"12*\""),
        "{err}"
    );
    assert_eq!(
        format!("{:?}", "1234".parse::<Pin>().expect("pin")),
        "Pin(..)"
    );
}

#[test]
fn configured_codes_are_validated() {
    let raw = |login: &str, logout: &str| RawFeatureCodes {
        login: Some(login.to_owned()),
        logout: Some(logout.to_owned()),
        pause: None,
        unpause: None,
        disposition: None,
        listen: None,
        whisper: None,
        barge: None,
    };
    let codes = FeatureCodes::try_from(raw("#81", "#82")).expect("valid");
    assert_eq!(req(&codes, "#82"), FeatureRequest::Logout);
    assert_eq!(req(&codes, "*64"), FeatureRequest::Unpause);
    let err = FeatureCodes::try_from(raw("*6", "*62"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "feature code login \"*6\": is a prefix of the logout code \"*62\""
    );
    assert!(FeatureCodes::try_from(raw("*62", "*62")).is_err());
    assert!(FeatureCodes::try_from(raw("*6a", "*62")).is_err());
    assert!(FeatureCodes::try_from(raw("", "*62")).is_err());
    assert!(FeatureCodes::try_from(raw("*123456789", "*62")).is_err());
    // The supervisor codes take part in the prefix rule too.
    let err = FeatureCodes::try_from(raw("*6", "*60"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("prefix"), "{err}");
    let barge: RawFeatureCodes = toml::from_str("barge = \"#9\"\n").expect("barge");
    let codes = FeatureCodes::try_from(barge).expect("valid");
    assert_eq!(
        req(&codes, "#942#"),
        FeatureRequest::Supervise {
            agent: "42".parse().expect("id"),
            mode: SuperviseMode::Barge
        }
    );
    assert_eq!(codes.parse("*67"), Ok(Parsed::NotACode));
    let unknown: Result<RawFeatureCodes, _> = toml::from_str("login = \"*61\"\nlogon = \"*69\"\n");
    assert!(unknown.unwrap_err().to_string().contains("logon"));
}
