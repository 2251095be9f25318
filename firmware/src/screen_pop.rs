//! Screen pop: the facts an agent's desktop needs, carried from the main loop to the
//! `/api/v1/events` streams, and the click-to-call request going the other way.
//!
//! The main loop turns call control's [`Output::AgentCall`](crate::call::Output) and
//! [`Output::AgentState`](crate::call::Output) into [`DeskEvent`]s and publishes them on
//! an [`EventHub`], a `tokio::sync::broadcast` channel of [`EVENT_BUFFER`] slots: a
//! publisher never waits and memory never grows, and a stream that falls more than
//! that far behind misses the oldest events and is told how many (the API sends a
//! `lagged` event and goes on). Events hold unmasked numbers: each stream masks and
//! filters them for its own subject (see `api::events`).
//!
//! Click-to-call ([`ClickRequest`]) goes to the main loop on the web status control
//! channel, where the caller's phone is resolved (an agent's logged-in extension,
//! else the user's own) and [`crate::call::CallControl::click_to_call`] runs.
//!
//! Hand-written on tokio's broadcast channel: its lag report is exactly the
//! "bounded, tell the slow reader" behaviour wanted, so no extra crate.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::acd::AgentId;
use crate::call::{AgentCallEvent, AgentCallKind, ClickToCallError};

/// Events a slow stream may fall behind by before it misses the oldest ones.
pub const EVENT_BUFFER: usize = 256;

/// One fact for agents' desktops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeskEvent {
    /// A call rang, was answered by, or ended for an agent.
    Call(AgentCallEvent),
    /// An agent's state changed.
    AgentState {
        /// The agent.
        agent: AgentId,
        /// The state's name (`agent_state_log.state`).
        state: &'static str,
        /// The extension the agent is (or was) logged in on.
        extension: Option<String>,
        /// The call while ringing or on a call.
        call_id: Option<String>,
        /// When, ms since the Unix epoch.
        at_ms: i64,
    },
    /// Campaign leads were given to an agent (they took their next leads, or a
    /// supervisor assigned them): the preview on their desktop. Carries ids only; each
    /// stream reads the leads and masks their numbers for its own user.
    Leads {
        /// The agent.
        agent: AgentId,
        /// The campaign.
        campaign: i64,
        /// The leads, in the order given.
        leads: Vec<i64>,
        /// When, ms since the Unix epoch.
        at_ms: i64,
    },
}

impl DeskEvent {
    /// The agent the event is about.
    pub fn agent(&self) -> &AgentId {
        match self {
            DeskEvent::Call(c) => &c.agent,
            DeskEvent::AgentState { agent, .. } | DeskEvent::Leads { agent, .. } => agent,
        }
    }

    /// The queue of a call event (`None` for direct calls and agent states).
    pub fn queue(&self) -> Option<&str> {
        match self {
            DeskEvent::Call(c) => c.queue.as_deref(),
            DeskEvent::AgentState { .. } | DeskEvent::Leads { .. } => None,
        }
    }

    /// The SSE event name: `ringing`, `answered`, `ended` or `agent_state`.
    pub fn name(&self) -> &'static str {
        match self {
            DeskEvent::Call(c) => match c.kind {
                AgentCallKind::Ringing => "ringing",
                AgentCallKind::Answered => "answered",
                AgentCallKind::Ended { .. } => "ended",
            },
            DeskEvent::AgentState { .. } => "agent_state",
            DeskEvent::Leads { .. } => "leads",
        }
    }
}

/// The publishing end of the [`DeskEvent`] broadcast, owned by the main loop: when it
/// is dropped every stream ends (so the web server's graceful shutdown is not held
/// up by open streams).
#[derive(Debug)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<DeskEvent>>,
}

/// Where streams subscribe to the [`EventHub`] (the web side's handle). It holds no
/// sender, so it does not keep the broadcast open. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventFeed {
    /// A receiver kept only to make new ones from ([`broadcast::Receiver::resubscribe`]);
    /// never read, it costs nothing beyond the channel's fixed ring.
    template: Arc<broadcast::Receiver<Arc<DeskEvent>>>,
}

impl EventFeed {
    /// A new stream's receiver (events from now on); closed once the hub is gone.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DeskEvent>> {
        self.template.resubscribe()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new(EVENT_BUFFER)
    }
}

impl EventHub {
    /// A hub whose streams may fall `capacity` events behind.
    pub fn new(capacity: usize) -> EventHub {
        EventHub {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Sends `event` to every stream (none listening is fine).
    pub fn publish(&self, event: DeskEvent) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// The web side's handle for subscribing.
    pub fn feed(&self) -> EventFeed {
        EventFeed {
            template: Arc::new(self.tx.subscribe()),
        }
    }
}

/// Whose phone a click-to-call rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickPhone {
    /// This extension (`from` in the request).
    Extension(String),
    /// The caller's own: the extension the agent is logged in on, else the user's.
    Own {
        /// The user's agent ID, if they are an agent.
        agent: Option<AgentId>,
        /// The user's extension, if they have one.
        extension: Option<String>,
    },
}

/// A click-to-call for the main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickRequest {
    /// The phone to ring first.
    pub phone: ClickPhone,
    /// The number to dial once it answers, as the phone would dial it, or (with
    /// `outside`) an outside number without the outside-line prefix.
    pub to: String,
    /// `to` is an outside number (a customer's or a lead's): call control puts the
    /// outside-line prefix in front ([`crate::call::CallControl::outside_dial_string`]).
    pub outside: bool,
}

/// A click-to-call started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClickStarted {
    /// The call's id (its CDR's).
    pub call_id: String,
    /// The extension whose phone rings.
    pub from: String,
}

/// Why a click-to-call did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickError {
    /// Call control refused.
    #[error(transparent)]
    Call(#[from] ClickToCallError),
    /// The user has no phone: no extension, and not logged in as an agent.
    #[error("you have no phone: no extension and no agent login; give \"from\"")]
    NoPhone,
    /// The main loop is gone (the daemon is stopping).
    #[error("the daemon is stopping; try again when it is back")]
    Stopping,
}

impl ClickRequest {
    /// The extension to ring: `agent_extension` is where the request's agent is logged
    /// in now (the main loop asks the ACD).
    pub fn resolve(&self, agent_extension: Option<&str>) -> Result<String, ClickError> {
        match &self.phone {
            ClickPhone::Extension(e) => Ok(e.clone()),
            ClickPhone::Own { extension, .. } => agent_extension
                .map(str::to_owned)
                .or_else(|| extension.clone())
                .ok_or(ClickError::NoPhone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(at_ms: i64) -> DeskEvent {
        DeskEvent::AgentState {
            agent: "100".parse().expect("agent"),
            state: "available",
            extension: Some("102".into()),
            call_id: None,
            at_ms,
        }
    }

    #[tokio::test]
    async fn a_slow_stream_learns_how_many_events_it_missed_and_goes_on() {
        let hub = EventHub::new(4);
        let mut rx = hub.feed().subscribe();
        for i in 0..10 {
            hub.publish(state(i));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 6),
            other => panic!("expected a lag, got {other:?}"),
        }
        // The newest four are still there, in order.
        for i in 6..10 {
            let e = rx.recv().await.expect("event");
            assert_eq!(*e, state(i));
        }
        // The hub gone (the daemon stopping), the stream learns it is over.
        drop(hub);
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
    }

    #[test]
    fn the_own_phone_is_the_agent_login_first_then_the_users_extension() {
        let own = |extension: Option<&str>| ClickRequest {
            phone: ClickPhone::Own {
                agent: Some("100".parse().expect("agent")),
                extension: extension.map(str::to_owned),
            },
            to: "101".into(),
            outside: false,
        };
        assert_eq!(own(Some("103")).resolve(Some("102")), Ok("102".into()));
        assert_eq!(own(Some("103")).resolve(None), Ok("103".into()));
        assert_eq!(own(None).resolve(None), Err(ClickError::NoPhone));
        let explicit = ClickRequest {
            phone: ClickPhone::Extension("101".into()),
            to: "102".into(),
            outside: false,
        };
        assert_eq!(explicit.resolve(Some("102")), Ok("101".into()));
    }
}
