//! The built-in roles against a table written out here (not derived from the TOML),
//! and scope resolution.

use super::*;
use crate::store::Store;

/// Every grant of every built-in role, as (role, "resource.action", widest scope).
/// Everything not listed must be denied. `("admin", "*", "all")` stands for every
/// resource and action.
const GRANTS: &[(&str, &str, &str)] = &[
    ("admin", "*", "all"),
    // supervisor
    ("supervisor", "users.view", "group"),
    ("supervisor", "users.edit", "own"),
    ("supervisor", "groups.view", "group"),
    ("supervisor", "calls.view", "group"),
    ("supervisor", "calls.listen", "group"),
    ("supervisor", "calls.download", "group"),
    ("supervisor", "calls.operate", "group"),
    ("supervisor", "recordings.view", "group"),
    ("supervisor", "recordings.listen", "group"),
    ("supervisor", "recordings.download", "group"),
    ("supervisor", "reports.view", "group"),
    ("supervisor", "reports.export", "group"),
    ("supervisor", "queues.view", "site"),
    ("supervisor", "queues.operate", "site"),
    ("supervisor", "agents.view", "group"),
    ("supervisor", "agents.operate", "group"),
    ("supervisor", "voicemail.view", "group"),
    ("supervisor", "contacts.view", "group"),
    ("supervisor", "contacts.edit", "group"),
    ("supervisor", "blacklist.view", "site"),
    ("supervisor", "numbers.view", "group"),
    ("supervisor", "campaigns.view", "site"),
    ("supervisor", "campaigns.add", "site"),
    ("supervisor", "campaigns.edit", "site"),
    ("supervisor", "campaigns.delete", "site"),
    ("supervisor", "campaigns.import", "site"),
    ("supervisor", "campaigns.operate", "site"),
    // agent
    ("agent", "users.view", "own"),
    ("agent", "users.edit", "own"),
    ("agent", "calls.view", "own"),
    ("agent", "calls.operate", "own"),
    ("agent", "agents.view", "own"),
    ("agent", "agents.operate", "own"),
    ("agent", "voicemail.view", "own"),
    ("agent", "voicemail.listen", "own"),
    ("agent", "voicemail.delete", "own"),
    ("agent", "contacts.view", "own"),
    ("agent", "contacts.edit", "own"),
    ("agent", "campaigns.view", "own"),
    ("agent", "campaigns.operate", "own"),
    // quality inspector
    ("quality_inspector", "users.view", "own"),
    ("quality_inspector", "users.edit", "own"),
    ("quality_inspector", "recordings.view", "site"),
    ("quality_inspector", "recordings.listen", "site"),
    ("quality_inspector", "calls.view", "site"),
    ("quality_inspector", "reports.view", "site"),
    // finance
    ("finance", "users.view", "own"),
    ("finance", "users.edit", "own"),
    ("finance", "reports.view", "site"),
    ("finance", "reports.export", "site"),
    ("finance", "calls.view", "site"),
    ("finance", "calls.export", "site"),
    // technician
    ("technician", "users.view", "own"),
    ("technician", "users.edit", "own"),
    ("technician", "diagnostics.view", "site"),
    ("technician", "diagnostics.operate", "site"),
    ("technician", "diagnostics.download", "site"),
    ("technician", "system_config.view", "site"),
    ("technician", "system_config.operate", "site"),
    ("technician", "sync.view", "site"),
    ("technician", "sync.operate", "site"),
    // installer
    ("installer", "provisioning.view", "site"),
    ("installer", "provisioning.add", "site"),
    ("installer", "provisioning.edit", "site"),
    ("installer", "provisioning.operate", "site"),
    ("installer", "diagnostics.view", "site"),
];

const ROLES: &[&str] = &[
    "admin",
    "supervisor",
    "agent",
    "quality_inspector",
    "finance",
    "technician",
    "installer",
];

fn expected(role: &str, resource: Resource, action: Action) -> Option<Scope> {
    let key = format!("{resource}.{action}");
    GRANTS
        .iter()
        .find(|(r, ra, _)| *r == role && (*ra == key || *ra == "*"))
        .map(|(_, _, s)| s.parse().expect("scope in table"))
}

/// The authorizer as loaded from a freshly seeded store, and the role ids by name.
fn seeded() -> (tempfile::TempDir, Authorizer, HashMap<String, RoleId>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    drop(Store::open(&path).expect("open"));
    let reader = Store::reader(&path).expect("reader");
    let authz = Authorizer::load(&reader).expect("load");
    let ids = load_role_grants(reader.connection(), reader.path())
        .expect("roles")
        .into_iter()
        .map(|r| (r.name, r.id))
        .collect();
    (dir, authz, ids)
}

fn subject(roles: Vec<RoleId>) -> Subject {
    Subject {
        user_id: UserId(1),
        username: "alice".to_owned(),
        roles,
        groups: vec![GroupId(10), GroupId(11)],
        admin_of_groups: vec![GroupId(10)],
        enabled: true,
        locked: false,
    }
}

fn own() -> Target {
    Target::Owned {
        owner: Some(UserId(1)),
        groups: vec![GroupId(10)],
    }
}

fn in_my_group() -> Target {
    Target::Owned {
        owner: Some(UserId(2)),
        groups: vec![GroupId(10)],
    }
}

fn elsewhere() -> Target {
    Target::Owned {
        owner: Some(UserId(3)),
        groups: vec![GroupId(20)],
    }
}

#[test]
fn every_builtin_role_resource_action_scope_matches_the_table() {
    let (_dir, authz, ids) = seeded();
    let mut names: Vec<&String> = ids.keys().collect();
    names.sort();
    let mut roles = ROLES.to_vec();
    roles.sort_unstable();
    assert_eq!(names, roles, "the built-in roles are exactly these");
    // Every row of the table names a real role, resource and action.
    for (role, ra, _) in GRANTS {
        assert!(ROLES.contains(role), "{role}");
        if *ra != "*" {
            let (r, a) = ra.split_once('.').expect("resource.action");
            r.parse::<Resource>().expect("resource");
            a.parse::<Action>().expect("action");
        }
    }
    let mut checked = 0;
    for &role in ROLES {
        let id = ids[role];
        let s = subject(vec![id]);
        for &resource in Resource::ALL {
            for &action in Action::ALL {
                let want = expected(role, resource, action);
                let set = authz.role(id).expect("compiled role");
                assert_eq!(
                    set.scope(resource, action),
                    want,
                    "{role} {resource}.{action}"
                );
                for (scope, target) in [
                    (Scope::Own, own()),
                    (Scope::Group, in_my_group()),
                    (Scope::Site, elsewhere()),
                    (Scope::Site, Target::Site),
                ] {
                    let allowed = authz.authorize(&s, resource, action, &target).is_allowed();
                    assert_eq!(
                        allowed,
                        want.is_some_and(|w| w >= scope),
                        "{role} {resource}.{action} at {scope} ({target:?})"
                    );
                    checked += 1;
                }
                assert_eq!(
                    authz.granted_scope(&s, resource, action) == Some(Scope::All),
                    want == Some(Scope::All),
                    "{role} {resource}.{action} at all"
                );
            }
        }
    }
    assert_eq!(
        checked,
        ROLES.len() * Resource::ALL.len() * Action::ALL.len() * 4
    );
}

#[test]
fn scopes_own_group_site() {
    let (_dir, authz, ids) = seeded();
    let agent = subject(vec![ids["agent"]]);
    assert_eq!(
        authz.authorize(&agent, Resource::Calls, Action::View, &own()),
        Decision::Allow { scope: Scope::Own }
    );
    let Decision::Deny { reason } =
        authz.authorize(&agent, Resource::Calls, Action::View, &in_my_group())
    else {
        panic!("agent sees a colleague's call")
    };
    assert_eq!(
        reason.to_string(),
        "role agent of user alice grants calls.view only for own records; record belongs to \
         user 2 (needs group scope)"
    );

    let supervisor = subject(vec![ids["supervisor"]]);
    assert_eq!(
        authz.authorize(&supervisor, Resource::Calls, Action::View, &in_my_group()),
        Decision::Allow {
            scope: Scope::Group
        }
    );
    assert!(!authz
        .authorize(&supervisor, Resource::Calls, Action::View, &elsewhere())
        .is_allowed());
    // Group 11: alice is a plain member, not its admin: no group scope there.
    let member_only = Target::Owned {
        owner: Some(UserId(4)),
        groups: vec![GroupId(11)],
    };
    assert!(!authz
        .authorize(&supervisor, Resource::Calls, Action::View, &member_only)
        .is_allowed());

    let admin = subject(vec![ids["admin"]]);
    for t in [own(), in_my_group(), elsewhere(), Target::Site] {
        assert!(authz
            .authorize(&admin, Resource::Calls, Action::View, &t)
            .is_allowed());
    }

    let mut disabled = admin.clone();
    disabled.enabled = false;
    assert_eq!(
        authz.authorize(&disabled, Resource::Calls, Action::View, &own()),
        Decision::Deny {
            reason: DenyReason::Disabled {
                username: "alice".to_owned()
            }
        }
    );
    let mut locked = admin;
    locked.locked = true;
    assert!(!authz
        .authorize(&locked, Resource::Calls, Action::View, &own())
        .is_allowed());

    let nobody = subject(vec![]);
    assert_eq!(
        authz
            .authorize(&nobody, Resource::Calls, Action::View, &own())
            .to_string_reason(),
        "no role of user alice grants calls.view"
    );
    // Roles combine: the widest grant wins.
    let both = subject(vec![ids["agent"], ids["finance"]]);
    assert!(authz
        .authorize(&both, Resource::Calls, Action::View, &elsewhere())
        .is_allowed());
    // An unknown role id grants nothing.
    let ghost = subject(vec![RoleId(9999)]);
    assert!(!authz
        .authorize(&ghost, Resource::Calls, Action::View, &own())
        .is_allowed());
}

impl Decision {
    fn to_string_reason(&self) -> String {
        match self {
            Decision::Allow { .. } => "allowed".to_owned(),
            Decision::Deny { reason } => reason.to_string(),
        }
    }
}

#[test]
fn permission_text_round_trips() {
    for &resource in Resource::ALL {
        for &action in Action::ALL {
            for &scope in Scope::ALL {
                let p = Permission::new(resource, action, scope);
                assert_eq!(p.to_string().parse::<Permission>(), Ok(p));
            }
        }
    }
    assert!("calls.view".parse::<Permission>().is_err());
    assert!("call.view:own".parse::<Permission>().is_err());
    assert!("calls.view:team".parse::<Permission>().is_err());
    assert!(Scope::Own < Scope::Group && Scope::Group < Scope::Site && Scope::Site < Scope::All);
    assert_eq!(Resource::ALL.len() * Action::ALL.len(), CELLS);
}

#[test]
fn reopening_the_store_does_not_bump_the_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    drop(Store::open(&path).expect("open"));
    let g1 = Store::reader(&path)
        .expect("r")
        .rbac_generation()
        .expect("g");
    drop(Store::open(&path).expect("reopen"));
    let g2 = Store::reader(&path)
        .expect("r")
        .rbac_generation()
        .expect("g");
    assert_eq!(g1, g2);
    assert!(g1 > 0);
}
