//! Extension modes (see the module docs' "Extension modes"): which log-ins each mode
//! takes, the configuration checks, and a mode change while logged in.

use super::*;

fn with_modes(modes: &[ExtensionMode]) -> Sim {
    let agents = modes
        .iter()
        .enumerate()
        .map(|(i, m)| AgentConfig {
            id: agent(i),
            skills: BTreeMap::new(),
            recording: Default::default(),
            mode: m.clone(),
        })
        .collect();
    let members: Vec<(usize, u32)> = (0..modes.len()).map(|i| (i, 0)).collect();
    Sim::new(vec![queue("q", 1, Strategy::RingAll, &members)], agents)
}

fn login(n: usize, extension: &str, from: LoginFrom) -> Input {
    Input::AgentLogin {
        agent: agent(n),
        extension: extension.to_owned(),
        from,
    }
}

/// Refused, and nothing changed.
fn refused(sim: &mut Sim, input: Input, expected: InputError) {
    let before = sim.acd.clone();
    assert_eq!(sim.acd.handle(sim.now, input), Err(expected));
    assert_eq!(sim.acd.poll_action(), None);
    assert_eq!(format!("{:?}", sim.acd), format!("{before:?}"));
}

#[test]
fn each_mode_takes_its_own_log_ins_and_refuses_the_others() {
    let mut sim = with_modes(&[
        ExtensionMode::Login,
        ExtensionMode::Fixed("301".into()),
        ExtensionMode::Automatic,
    ]);
    // login: the feature code on any phone, not the desktop.
    refused(
        &mut sim,
        login(0, "200", LoginFrom::Desktop),
        InputError::WrongLoginPath {
            agent: agent(0),
            mode: "login",
            hint: "log in with the feature code on the phone to use",
        },
    );
    sim.input(login(0, "200", LoginFrom::Phone));
    // fixed: only its own extension, from the phone or the desktop.
    for from in [LoginFrom::Phone, LoginFrom::Desktop] {
        refused(
            &mut sim,
            login(1, "302", from),
            InputError::FixedExtension {
                agent: agent(1),
                fixed: "301".into(),
            },
        );
    }
    sim.input(login(1, "301", LoginFrom::Desktop));
    assert_eq!(sim.acd.agent(&agent(1)).and_then(|a| a.2), Some("301"));
    // automatic: the desktop only.
    refused(
        &mut sim,
        login(2, "303", LoginFrom::Phone),
        InputError::WrongLoginPath {
            agent: agent(2),
            mode: "automatic",
            hint: "log in from the desktop (the phone registered from its address is used)",
        },
    );
    let out = sim.input(login(2, "303", LoginFrom::Desktop));
    assert!(out.iter().any(|a| matches!(
        a,
        Action::AgentStateChanged { agent: id, state: AgentState::Available, extension: Some(e), .. }
            if *id == agent(2) && e == "303"
    )));
    assert_eq!(
        sim.acd.extension_mode(&agent(2)),
        Some(&ExtensionMode::Automatic)
    );
    // The rules that hold for every mode still hold: one agent per extension.
    sim.input(Input::AgentLogout { agent: agent(0) });
    refused(
        &mut sim,
        login(0, "303", LoginFrom::Phone),
        InputError::ExtensionTaken {
            extension: "303".into(),
            holder: agent(2),
        },
    );
}

#[test]
fn fixed_extensions_are_checked_in_the_configuration() {
    let agent_with = |i, mode| AgentConfig {
        id: agent(i),
        skills: BTreeMap::new(),
        recording: Default::default(),
        mode,
    };
    let two = AcdConfig::new(
        vec![],
        vec![
            agent_with(0, ExtensionMode::Fixed("301".into())),
            agent_with(1, ExtensionMode::Fixed("301".into())),
        ],
    );
    assert!(
        matches!(&two, Err(ConfigError::Agent { field: "extension_mode", message, .. }) if message.contains("already fixed")),
        "{two:?}"
    );
    let empty = AcdConfig::new(
        vec![],
        vec![agent_with(0, ExtensionMode::Fixed(String::new()))],
    );
    assert!(matches!(
        empty,
        Err(ConfigError::Agent {
            field: "extension_mode",
            ..
        })
    ));
    // The stored names.
    assert_eq!(
        ExtensionMode::parse("fixed", Some("301")),
        Ok(ExtensionMode::Fixed("301".into()))
    );
    assert!(ExtensionMode::parse("fixed", None).is_err());
    assert!(ExtensionMode::parse("hotdesk", Some("301")).is_err());
    for m in ["login", "automatic"] {
        assert_eq!(ExtensionMode::parse(m, None).map(|m| m.as_str()), Ok(m));
    }
}

#[test]
fn a_mode_change_to_another_fixed_extension_logs_the_agent_out() {
    let mut sim = with_modes(&[ExtensionMode::Login, ExtensionMode::Login]);
    sim.login(0);
    sim.login(1);
    let config = |modes: [ExtensionMode; 2]| {
        let agents = modes
            .into_iter()
            .enumerate()
            .map(|(i, mode)| AgentConfig {
                id: agent(i),
                skills: BTreeMap::new(),
                recording: Default::default(),
                mode,
            })
            .collect();
        AcdConfig::new(
            vec![queue("q", 1, Strategy::RingAll, &[(0, 0), (1, 0)])],
            agents,
        )
        .expect("config")
    };
    // Agent 0 now fixed on the extension it is on: stays; agent 1 fixed elsewhere: out.
    let now = sim.now;
    sim.acd.reconfigure(
        &config([
            ExtensionMode::Fixed(ext(0)),
            ExtensionMode::Fixed("399".into()),
        ]),
        now,
    );
    assert_eq!(
        sim.acd.agent(&agent(0)).map(|a| a.0.clone()),
        Some(AgentState::Available)
    );
    assert_eq!(
        sim.acd.agent(&agent(1)).map(|a| a.0.clone()),
        Some(AgentState::LoggedOut)
    );
    assert_eq!(sim.acd.agent_at(&ext(1)), None);
}
