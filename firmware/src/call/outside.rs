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
//! - Limit: a route's `needs_permission` is kept but not enforced here (an analog
//!   phone carries no logged-in user); the daemon logs it when it loads such a route.
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
    /// Permission HQ says the route needs (not enforced by call control).
    pub needs_permission: Option<String>,
}

impl DialRoute {
    /// A route from HQ's fields, checked: the prefix is digits (a leading `+`
    /// allowed), at most 32 of them; `via` names one or more of `sip`, `fxo`, each
    /// once.
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
        Ok(DialRoute {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            via: ways,
            needs_permission,
        })
    }
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
    }
}
