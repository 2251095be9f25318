//! Wake-ups for long-polls: one [`tokio::sync::Notify`] per site, poked by this
//! instance when it writes to that site's feed. Changes made by another instance
//! sharing PostgreSQL are not signalled here; the long-poll also looks at the
//! database every `poll_interval` for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Per-site notifiers.
#[derive(Debug, Default)]
pub struct FeedHub {
    sites: Mutex<HashMap<String, Arc<Notify>>>,
}

impl FeedHub {
    /// The notifier of `site` (created on first use).
    pub fn notifier(&self, site: &str) -> Arc<Notify> {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(sites.entry(site.to_owned()).or_default())
    }

    /// Wakes every long-poll waiting on `site`.
    pub fn changed(&self, site: &str) {
        let sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = sites.get(site) {
            n.notify_waiters();
        }
    }
}
