//! `/api/v1/agents/{agent}` in-process: the extension modes' log-ins (the fixed
//! extension; the SIP phone registered from the request's address), the refusals,
//! who may act on whom, and the extension-mode edit. The main loop is a stub that
//! records what it was asked ([`desk_answer`]).

use std::sync::Mutex;

use super::*;
use crate::call::DeskAction;
use crate::sip_endpoint::status::{ContactReport, PhoneReport, SipStatus};
use crate::web::status::{AgentDeskError, AgentDeskState};

/// What the stub main loop was asked, by agent ID (every test's).
static ASKED: Mutex<Vec<(String, Option<DeskAction>)>> = Mutex::new(Vec::new());

/// The stub main loop: records the request and answers a state that shows it.
pub(super) fn desk_answer(
    agent: crate::acd::AgentId,
    action: Option<DeskAction>,
) -> Result<AgentDeskState, AgentDeskError> {
    ASKED
        .lock()
        .expect("lock")
        .push((agent.to_string(), action.clone()));
    let (state, extension) = match action {
        Some(DeskAction::Login { extension }) => ("available", Some(extension)),
        Some(DeskAction::Pause { .. }) => ("paused", None),
        Some(DeskAction::Logout) | None => ("logged_out", None),
        Some(DeskAction::Unpause) => ("available", None),
    };
    Ok(AgentDeskState {
        agent_id: agent.to_string(),
        extension_mode: "login",
        state,
        reason: None,
        extension,
        since_ms: T0,
    })
}

/// SIP phone 202 registered from 127.0.0.1 (where the tests' requests come from),
/// 203 from 192.0.2.20 and 204 too.
pub(super) fn sip_status() -> tokio::sync::watch::Receiver<Arc<SipStatus>> {
    let phone = |ext: &str, source: &str| PhoneReport {
        extension: ext.to_owned(),
        name: String::new(),
        contacts: vec![ContactReport {
            contact: format!("sip:{ext}@{source}"),
            source: format!("udp {source}"),
            expires_at_ms: T0 + 3_600_000,
            registered_at_ms: T0,
            user_agent: None,
        }],
    };
    let mut status = SipStatus::starting();
    status.version = 1;
    status.phones = vec![
        phone("202", "127.0.0.1:5062"),
        phone("203", "192.0.2.20:5060"),
        phone("204", "192.0.2.20:5062"),
    ];
    status.phones_registered = 3;
    tokio::sync::watch::channel(Arc::new(status)).1
}

fn asked(agent: &str) -> Vec<Option<DeskAction>> {
    ASKED
        .lock()
        .expect("lock")
        .iter()
        .filter(|(a, _)| a == agent)
        .map(|(_, action)| action.clone())
        .collect()
}

impl Env {
    async fn agent_at(&self, name: &str, agent_id: &str, extension: Option<&str>) {
        self.accounts
            .create_user(
                &Actor::system(),
                NewUser {
                    username: name.to_owned(),
                    password: PASSWORD.to_owned(),
                    agent_id: Some(agent_id.to_owned()),
                    pin: Some("4821".to_owned()),
                    extension: extension.map(str::to_owned),
                    enabled: true,
                    roles: vec!["agent".to_owned()],
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .expect("agent");
    }

    async fn post_empty(&self, uri: &str, c: &Client, ip: &str) -> Reply {
        self.send(Method::POST, uri, Some(c), true, None, ip).await
    }

    fn mode_of(&self, agent_id: &str) -> String {
        let reader = self.accounts.reader().expect("reader");
        reader
            .connection()
            .query_row(
                "SELECT extension_mode FROM users WHERE agent_id = ?1",
                [agent_id],
                |r| r.get(0),
            )
            .expect("mode")
    }
}

#[tokio::test]
async fn a_fixed_agent_logs_in_from_the_desktop_on_their_own_extension() {
    let env = env().await;
    env.user("root", &["admin"], None).await;
    env.agent_at("alice", "4101", Some("102")).await;
    let (admin, alice) = (env.login("root").await, env.login("alice").await);
    // The default mode (login) logs in with the feature code, not here.
    let r = env
        .post_empty("/api/v1/agents/me/login", &alice, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("feature code"), "{}", r.text);
    assert!(asked("4101").is_empty(), "nothing asked of the ACD");
    // Only an admin sets the mode; bad modes are refused and change nothing.
    let r = env
        .write(
            Method::PUT,
            "/api/v1/agents/me/extension-mode",
            &alice,
            json!({"mode": "fixed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    for bad in [
        json!({"mode": "hotdesk"}),
        json!({"mode": 3}),
        json!({"fixed": true}),
    ] {
        let r = env
            .write(
                Method::PUT,
                "/api/v1/agents/4101/extension-mode",
                &admin,
                bad,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    }
    assert_eq!(env.mode_of("4101"), "login");
    let r = env
        .write(
            Method::PUT,
            "/api/v1/agents/4101/extension-mode",
            &admin,
            json!({"mode": "fixed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(env.mode_of("4101"), "fixed");
    // Now the desktop log-in binds her own extension.
    let r = env
        .post_empty("/api/v1/agents/me/login", &alice, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["extension"], "102");
    assert_eq!(
        asked("4101"),
        vec![Some(DeskAction::Login {
            extension: "102".into()
        })]
    );
    // Pause with a reason, a bad reason refused before anything is asked.
    let r = env
        .write(
            Method::POST,
            "/api/v1/agents/me/pause",
            &alice,
            json!({"reason": "no spaces"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = env
        .write(
            Method::POST,
            "/api/v1/agents/me/pause",
            &alice,
            json!({"reason": "lunch"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = env
        .post_empty("/api/v1/agents/me/unpause", &alice, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(asked("4101").len(), 3);
    // Audited.
    let reader = env.accounts.reader().expect("reader");
    let logins: i64 = reader
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE action IN ('agent_login', 'extension_mode')",
            [],
            |r| r.get(0),
        )
        .expect("audit");
    assert_eq!(logins, 2);
}

#[tokio::test]
async fn fixed_needs_the_users_extension() {
    let env = env().await;
    env.user("root", &["admin"], None).await;
    env.agent_at("bob", "4102", None).await;
    let admin = env.login("root").await;
    let r = env
        .write(
            Method::PUT,
            "/api/v1/agents/4102/extension-mode",
            &admin,
            json!({"mode": "fixed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("extension"), "{}", r.text);
    assert_eq!(env.mode_of("4102"), "login");
}

#[tokio::test]
async fn an_automatic_agent_gets_the_phone_registered_from_the_desktops_address() {
    let env = env().await;
    env.user("root", &["admin"], None).await;
    env.agent_at("carol", "4103", None).await;
    let (admin, carol) = (env.login("root").await, env.login("carol").await);
    let r = env
        .write(
            Method::PUT,
            "/api/v1/agents/4103/extension-mode",
            &admin,
            json!({"mode": "automatic"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // No phone at this address; two phones at that one: 409, nothing asked.
    let r = env
        .post_empty("/api/v1/agents/me/login", &carol, "198.51.100.7")
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(
        r.text
            .contains("no SIP phone is registered from 198.51.100.7"),
        "{}",
        r.text
    );
    let r = env
        .post_empty("/api/v1/agents/me/login", &carol, "192.0.2.20")
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("203, 204"), "{}", r.text);
    assert!(asked("4103").is_empty());
    // From 127.0.0.1: phone 202.
    let r = env
        .post_empty("/api/v1/agents/me/login", &carol, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        asked("4103"),
        vec![Some(DeskAction::Login {
            extension: "202".into()
        })]
    );
}

#[tokio::test]
async fn agents_act_only_on_themselves_and_supervisors_on_their_groups() {
    let env = env().await;
    env.user("root", &["admin"], None).await;
    env.user("nobody", &["agent"], None).await;
    env.agent_at("dave", "4104", Some("103")).await;
    env.agent_at("erin", "4105", Some("104")).await;
    let (dave, nobody) = (env.login("dave").await, env.login("nobody").await);
    // Another agent's state and actions: 403; nothing asked of the ACD for erin.
    let r = env.get("/api/v1/agents/4105", &dave).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    for action in ["login", "logout", "pause", "unpause"] {
        let r = env
            .post_empty(&format!("/api/v1/agents/4105/{action}"), &dave, "127.0.0.1")
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{action}: {}", r.text);
    }
    assert!(asked("4105").is_empty());
    // Own state: fine.
    let r = env.get("/api/v1/agents/me", &dave).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["agent_id"], "4104");
    // Unknown agents, users without an agent ID, bad IDs.
    let r = env.get("/api/v1/agents/9999", &dave).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = env.get("/api/v1/agents/me", &nobody).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = env.get("/api/v1/agents/x1", &dave).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // An admin sees and logs out anyone, but logs in nobody else.
    let admin = env.login("root").await;
    let r = env.get("/api/v1/agents/4105", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = env
        .post_empty("/api/v1/agents/4105/logout", &admin, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = env
        .post_empty("/api/v1/agents/4105/login", &admin, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(asked("4105").len(), 2, "the read and the log-out");
    // That refusal is audited like the authorizer's.
    let reader = env.accounts.reader().expect("reader");
    let rows = audit::list(&reader, 0, 1000).expect("audit");
    assert!(
        rows.iter().any(|r| r.actor == "root"
            && r.result == "denied"
            && (r.resource.as_str(), r.action.as_str()) == ("agents", "operate")
            && r.target == "agent 4105"),
        "{rows:#?}"
    );
}
