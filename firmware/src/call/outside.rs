//! Which way an outside call goes: HQ's dial routes and the survivability rule.
//!
//! An outside call (the outside-line prefix, then a number) takes its ways out from
//! the dial plan HQ masters ([`DialRoutes`], synced down as `dial_route` rows):
//!
//! - The route whose `prefix` is the longest prefix of the number decides (two routes
//!   with the same prefix: the one whose name sorts first). An empty prefix matches
//!   every number (a default route). Its `via` list (`sip`, `fxo`) is the order to try.
//! - No route matches (or HQ sent none): the built-in rule, the SIP trunk first while
//!   it is usable, then an FXO line. The box's config has no routes of its own: HQ's
//!   routes refine the built-in rule, and a box that never synced routes as before.
//! - Either way the SIP trunk is tried only while it is [`TrunkStatus::Usable`]
//!   (survivability: while the trunk or the WAN is down, outside calls go straight to
//!   the FXO lines a route allows). A route that allows only the trunk while the
//!   trunk is unusable has no way out: the caller hears congestion.
//!
//! # Calling permissions (class of service)
//!
//! A route may name a calling permission (`needs_permission`, e.g. `international`):
//! only a caller holding it may use the route, like a commercial gateway's class of
//! service (Cisco COR lists, Asterisk contexts). What a call holds is the
//! permissions of the phone it is placed from ([`CallerPermissions`]): an FXS
//! extension's `permissions` and a `[[sip_accounts]]` entry's `permissions` in the
//! box's config (empty by default). A click-to-call and a campaign call carry those
//! of the user's / agent's extension (the phone that rings first and talks); a
//! transferred call those of the transferring phone; a queue call overflowing to an
//! outside number holds none. Users' roles carry no calling permissions (the RBAC
//! catalogue is `resource.action:scope` and has no calling classes), so the phone
//! decides even when a user is logged in.
//!
//! The decision is [`DialRoutes::decide`]: the most specific matching route decides
//! alone. When it needs a permission the caller lacks, the call is refused
//! ([`RouteRefused`]), **never** passed on to a shorter prefix that needs none: a
//! route `00` needing `international` under a default route `""` open to all would
//! otherwise let anyone dial abroad (toll fraud). Call control then gives the caller
//! the normal refusal (congestion on an analog phone, `403 Forbidden` to a SIP
//! phone; the API refuses a click-to-call up front with 403 naming the route and
//! the permission), writes the CDR with `hangup_cause` `route_not_permitted` and
//! logs the route and the permission. Numbers no route covers keep the built-in
//! rule and need no permission.
//!
//! Limit: the check is of the number dialled before the call goes out. Digits a
//! caller keys once connected to an FXO line (a SIP phone's DTMF, an analog phone's
//! tones through the audio path) reach the exchange unchecked, as on any analog
//! gateway; a route whose prefix is a prefix of a permissioned one (`0` under `00`)
//! should not end on an FXO line where that matters, or should need the permission
//! too.
//!
//! [`DialRoutes::routes_for`] is the decision, a pure function; [`super::CallControl`]
//! takes the candidates in order and places the call on the first one it can.
//!
//! A [`OutsideVia::SipTrunk`] candidate becomes an outgoing trunk leg
//! ([`super::SipTarget::Trunk`]); when that leg fails with congestion before it is
//! answered (trunk unreachable, 503), the call moves on to the next candidate (an FXO
//! line). Other failures (busy, not found) end the call: the far end answered.

/// Whether call routing may use the SIP trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrunkStatus {
    /// The box has no SIP trunk.
    #[default]
    NotConfigured,
    /// The trunk answers (and the WAN monitor does not say otherwise).
    Usable,
    /// The trunk does not answer, or the WAN is down.
    Unusable,
}

/// A way out of the box for an outside call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideVia {
    /// The SIP trunk.
    SipTrunk,
    /// An FXO line to the PSTN.
    Fxo,
}

impl OutsideVia {
    /// The way a dial route names (`"sip"`, `"fxo"`).
    pub fn from_name(name: &str) -> Option<OutsideVia> {
        match name {
            "sip" => Some(OutsideVia::SipTrunk),
            "fxo" => Some(OutsideVia::Fxo),
            _ => None,
        }
    }
}

/// The built-in ways for an outside call no dial route matches, in order.
pub fn outside_routes(trunk: TrunkStatus) -> &'static [OutsideVia] {
    match trunk {
        TrunkStatus::Usable => &[OutsideVia::SipTrunk, OutsideVia::Fxo],
        TrunkStatus::Unusable | TrunkStatus::NotConfigured => &[OutsideVia::Fxo],
    }
}

/// One outside-line route of the dial plan (HQ's `dial_route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRoute {
    /// The route's name (HQ's key).
    pub name: String,
    /// Dialled-number prefix (after the outside-line prefix) the route matches;
    /// empty: every number.
    pub prefix: String,
    /// Ways to try, in order (never empty, no way twice).
    pub via: Vec<OutsideVia>,
    /// The calling permission a caller must hold to use the route, if any (see the
    /// module docs).
    pub needs_permission: Option<String>,
}

impl DialRoute {
    /// A route from HQ's fields, checked: the prefix is digits (a leading `+`
    /// allowed), at most 32 of them; `via` names one or more of `sip`, `fxo`, each
    /// once; `needs_permission`, when given, a calling-permission name
    /// ([`branchline_sync::wire::check_route_permission`]).
    pub fn new(
        name: &str,
        prefix: &str,
        via: &[String],
        needs_permission: Option<String>,
    ) -> Result<DialRoute, String> {
        let digits = prefix.strip_prefix('+').unwrap_or(prefix);
        if prefix.len() > 32 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "prefix {prefix:?}: must be digits (a leading + allowed), at most 32"
            ));
        }
        if via.is_empty() {
            return Err("via: must list one or more of \"sip\", \"fxo\"".to_owned());
        }
        let mut ways = Vec::with_capacity(via.len());
        for (i, v) in via.iter().enumerate() {
            let way = OutsideVia::from_name(v)
                .ok_or_else(|| format!("via[{i}]: {v:?} is neither \"sip\" nor \"fxo\""))?;
            if ways.contains(&way) {
                return Err(format!("via[{i}]: {v:?} is listed twice"));
            }
            ways.push(way);
        }
        if let Some(p) = &needs_permission {
            branchline_sync::wire::check_route_permission(p)
                .map_err(|reason| format!("needs_permission {p:?}: {reason}"))?;
        }
        Ok(DialRoute {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            via: ways,
            needs_permission,
        })
    }
}

/// The calling permissions a call holds (see the module docs): those of the phone it
/// is placed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerPermissions(Vec<String>);

impl CallerPermissions {
    /// These permissions (names [`check_permissions`] accepted).
    pub fn new(permissions: impl IntoIterator<Item = String>) -> CallerPermissions {
        CallerPermissions(permissions.into_iter().collect())
    }

    /// No permission at all.
    pub fn none() -> CallerPermissions {
        CallerPermissions::default()
    }

    /// Whether `permission` is among them.
    pub fn holds(&self, permission: &str) -> bool {
        self.0.iter().any(|p| p == permission)
    }
}

/// Checks a phone's `permissions` list: each a calling-permission name
/// ([`branchline_sync::wire::check_route_permission`]), none twice. The index of
/// the first bad entry and why.
pub fn check_permissions(permissions: &[String]) -> Result<(), (usize, String)> {
    for (i, p) in permissions.iter().enumerate() {
        branchline_sync::wire::check_route_permission(p)
            .map_err(|reason| (i, format!("{p:?}: {reason}")))?;
        if permissions[..i].contains(p) {
            return Err((i, format!("{p:?} is listed twice")));
        }
    }
    Ok(())
}

/// An outside call refused: the route matching its number needs a permission the
/// caller does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dial route {route:?} needs the calling permission {permission:?}")]
pub struct RouteRefused {
    /// The matching route's name.
    pub route: String,
    /// The permission it needs.
    pub permission: String,
}

/// The dial plan's outside-line routes, most specific first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DialRoutes {
    /// Longest prefix first, then by name.
    routes: Vec<DialRoute>,
}

impl DialRoutes {
    /// The routes, ordered for matching.
    pub fn new(mut routes: Vec<DialRoute>) -> DialRoutes {
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| a.name.cmp(&b.name))
        });
        DialRoutes { routes }
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = &DialRoute> {
        self.routes.iter()
    }

    /// The route that decides for `number` (dialled after the outside-line prefix).
    pub fn matching(&self, number: &str) -> Option<&DialRoute> {
        self.routes.iter().find(|r| number.starts_with(&r.prefix))
    }

    /// Whether a caller holding `held` may dial `number` (after the outside-line
    /// prefix), and if so the ways to try ([`Self::routes_for`]). The matching route
    /// decides alone: when it needs a permission `held` lacks, the call is refused
    /// even if a less specific route would let it through (see the module docs).
    pub fn decide(
        &self,
        number: &str,
        trunk: TrunkStatus,
        held: &CallerPermissions,
    ) -> Result<Vec<OutsideVia>, RouteRefused> {
        self.check(number, held)?;
        Ok(self.routes_for(number, trunk))
    }

    /// The permission check of [`Self::decide`] alone.
    pub fn check(&self, number: &str, held: &CallerPermissions) -> Result<(), RouteRefused> {
        match self.matching(number) {
            Some(DialRoute {
                name,
                needs_permission: Some(permission),
                ..
            }) if !held.holds(permission) => Err(RouteRefused {
                route: name.clone(),
                permission: permission.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The ways to try for `number`, in order: the matching route's (without the
    /// trunk while it is not usable), else the built-in [`outside_routes`]. Empty:
    /// no way out (the route allows only the trunk, which is unusable).
    pub fn routes_for(&self, number: &str, trunk: TrunkStatus) -> Vec<OutsideVia> {
        match self.matching(number) {
            Some(route) => route
                .via
                .iter()
                .copied()
                .filter(|&v| v != OutsideVia::SipTrunk || trunk == TrunkStatus::Usable)
                .collect(),
            None => outside_routes(trunk).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, prefix: &str, via: &[&str]) -> DialRoute {
        let via: Vec<String> = via.iter().map(|v| (*v).to_owned()).collect();
        DialRoute::new(name, prefix, &via, None).expect("valid route")
    }

    #[test]
    fn the_trunk_comes_first_only_while_it_is_usable() {
        assert_eq!(
            outside_routes(TrunkStatus::Usable),
            [OutsideVia::SipTrunk, OutsideVia::Fxo]
        );
        assert_eq!(outside_routes(TrunkStatus::Unusable), [OutsideVia::Fxo]);
        assert_eq!(
            outside_routes(TrunkStatus::NotConfigured),
            [OutsideVia::Fxo]
        );
    }

    #[test]
    fn the_longest_matching_prefix_decides_and_no_match_keeps_the_built_in_rule() {
        use OutsideVia::{Fxo, SipTrunk};
        let routes = DialRoutes::new(vec![
            route("national", "0", &["fxo", "sip"]),
            route("international", "00", &["sip"]),
            route("emergency", "911", &["fxo"]),
        ]);
        let up = TrunkStatus::Usable;
        assert_eq!(routes.routes_for("0049301234", up), [SipTrunk]);
        assert_eq!(routes.routes_for("0301234", up), [Fxo, SipTrunk]);
        assert_eq!(routes.routes_for("911", up), [Fxo]);
        assert_eq!(routes.routes_for("5550100", up), [SipTrunk, Fxo]);
        assert_eq!(
            routes.matching("0049").map(|r| r.name.as_str()),
            Some("international")
        );
        // The trunk drops out while unusable; a trunk-only route has no way left.
        let down = TrunkStatus::Unusable;
        assert_eq!(routes.routes_for("0301234", down), [Fxo]);
        assert!(routes.routes_for("0049301234", down).is_empty());
        assert_eq!(routes.routes_for("5550100", down), [Fxo]);
        assert_eq!(
            DialRoutes::default().routes_for("0301234", up),
            [SipTrunk, Fxo]
        );
    }

    #[test]
    fn an_empty_prefix_is_a_default_route_and_equal_prefixes_go_by_name() {
        let routes = DialRoutes::new(vec![
            route("b-default", "", &["sip"]),
            route("a-default", "", &["fxo"]),
        ]);
        assert_eq!(
            routes.routes_for("123", TrunkStatus::Usable),
            [OutsideVia::Fxo]
        );
        assert_eq!(
            routes.matching("").map(|r| r.name.as_str()),
            Some("a-default")
        );
    }

    #[test]
    fn bad_routes_are_refused_with_the_field() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let e = DialRoute::new("r", "9x", &s(&["sip"]), None).unwrap_err();
        assert!(e.contains("prefix"), "{e}");
        let e = DialRoute::new("r", "0", &s(&[]), None).unwrap_err();
        assert!(e.contains("via"), "{e}");
        let e = DialRoute::new("r", "0", &s(&["sip", "isdn"]), None).unwrap_err();
        assert!(e.contains("via[1]"), "{e}");
        let e = DialRoute::new("r", "0", &s(&["fxo", "fxo"]), None).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        assert!(DialRoute::new("r", "+49", &s(&["fxo"]), None).is_ok());
        assert!(DialRoute::new("r", &"1".repeat(33), &s(&["fxo"]), None).is_err());
        for bad in ["", "Intl", "intl calls", "calls.view:site", &"p".repeat(33)] {
            let e = DialRoute::new("r", "00", &s(&["sip"]), Some(bad.to_owned())).unwrap_err();
            assert!(e.contains("needs_permission"), "{bad:?}: {e}");
        }
        assert!(DialRoute::new("r", "00", &s(&["sip"]), Some("intl_2-x".to_owned())).is_ok());
    }

    fn needing(name: &str, prefix: &str, via: &[&str], permission: &str) -> DialRoute {
        let via: Vec<String> = via.iter().map(|v| (*v).to_owned()).collect();
        DialRoute::new(name, prefix, &via, Some(permission.to_owned())).expect("valid route")
    }

    fn holding(permissions: &[&str]) -> CallerPermissions {
        CallerPermissions::new(permissions.iter().map(|p| (*p).to_owned()))
    }

    #[test]
    fn a_route_needing_a_permission_is_refused_to_a_caller_without_it() {
        use OutsideVia::{Fxo, SipTrunk};
        let routes = DialRoutes::new(vec![
            route("national", "0", &["fxo", "sip"]),
            needing("international", "00", &["sip", "fxo"], "international"),
        ]);
        let up = TrunkStatus::Usable;
        let refused = RouteRefused {
            route: "international".to_owned(),
            permission: "international".to_owned(),
        };
        // Absent: refused, naming the route and the permission.
        assert_eq!(
            routes.decide("0049301234", up, &CallerPermissions::none()),
            Err(refused.clone())
        );
        assert_eq!(
            routes.decide("0049301234", up, &holding(&["premium"])),
            Err(refused.clone())
        );
        assert_eq!(
            refused.to_string(),
            "dial route \"international\" needs the calling permission \"international\""
        );
        // Present: the route's ways, the trunk dropped while unusable as ever.
        let intl = holding(&["premium", "international"]);
        assert_eq!(
            routes.decide("0049301234", up, &intl),
            Ok(vec![SipTrunk, Fxo])
        );
        assert_eq!(
            routes.decide("0049301234", TrunkStatus::Unusable, &intl),
            Ok(vec![Fxo])
        );
        // No permission needed: the matching route, or the built-in rule.
        let none = CallerPermissions::none();
        assert_eq!(routes.decide("0301234", up, &none), Ok(vec![Fxo, SipTrunk]));
        assert_eq!(routes.decide("5550100", up, &none), Ok(vec![SipTrunk, Fxo]));
        assert_eq!(routes.check("5550100", &none), Ok(()));
    }

    #[test]
    fn a_refused_call_never_falls_through_to_a_less_specific_route() {
        // The longest prefix needs a permission, shorter ones (and the default) do
        // not: refused all the same, whatever the others would allow.
        let routes = DialRoutes::new(vec![
            route("default", "", &["fxo", "sip"]),
            route("national", "0", &["fxo"]),
            needing("premium", "0900", &["fxo"], "premium"),
        ]);
        let none = CallerPermissions::none();
        let err = routes
            .decide("09001234", TrunkStatus::Usable, &none)
            .expect_err("refused");
        assert_eq!(
            (err.route.as_str(), err.permission.as_str()),
            ("premium", "premium")
        );
        // The same caller still reaches what the shorter routes cover.
        assert_eq!(
            routes.decide("0301234", TrunkStatus::Usable, &none),
            Ok(vec![OutsideVia::Fxo])
        );
        assert_eq!(
            routes.decide("5550100", TrunkStatus::Usable, &none),
            Ok(vec![OutsideVia::Fxo, OutsideVia::SipTrunk])
        );
        // A permission on the default route alone covers every number no longer
        // prefix matches, and only those.
        let routes = DialRoutes::new(vec![
            needing("default", "", &["fxo"], "outside"),
            route("emergency", "112", &["fxo"]),
        ]);
        assert_eq!(
            routes.decide("112", TrunkStatus::Usable, &none),
            Ok(vec![OutsideVia::Fxo])
        );
        assert!(routes
            .decide("0301234", TrunkStatus::Usable, &none)
            .is_err());
        assert!(routes
            .decide("0301234", TrunkStatus::Usable, &holding(&["outside"]))
            .is_ok());
    }

    #[test]
    fn a_phones_permission_list_is_checked() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(check_permissions(&[]), Ok(()));
        assert_eq!(check_permissions(&s(&["international", "premium"])), Ok(()));
        let (i, e) = check_permissions(&s(&["international", "Premium"])).unwrap_err();
        assert_eq!(i, 1, "{e}");
        assert!(e.contains("Premium"), "{e}");
        let (i, e) = check_permissions(&s(&["premium", "premium"])).unwrap_err();
        assert_eq!(i, 1);
        assert!(e.contains("twice"), "{e}");
        assert!(check_permissions(&s(&[""])).is_err());
    }
}
