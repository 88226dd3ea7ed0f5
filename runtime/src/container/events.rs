//! What happens to containers, networks and volumes, as `docker events`
//! shows it: a bounded history for clients that ask from a time in the
//! past, and a broadcast to the clients following.
//!
//! Every bound is fixed: the history keeps the last [`HISTORY`] events (as
//! dockerd keeps a window of recent ones), and a follower that falls more
//! than [`BACKLOG`] events behind loses the oldest of them (it is told how
//! many) rather than holding memory for a client that does not read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::broadcast;

/// Events kept for `--since`.
pub const HISTORY: usize = 1024;
/// Events a follower may fall behind by.
pub const BACKLOG: usize = 1024;

/// What an event is about (Docker's `Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Container,
    Network,
    Volume,
    Image,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Network => "network",
            Kind::Volume => "volume",
            Kind::Image => "image",
        }
    }
}

/// One event: `action` (Docker's: `create`, `start`, `die`, ...) happened
/// to the object `id` of `kind`, described by `attributes` (its name,
/// image, labels, an exit code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub time: SystemTime,
    pub kind: Kind,
    pub action: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}

/// The event hub; clones share it.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

struct Shared {
    /// Held while an event is recorded and sent, so that a subscriber sees
    /// each event exactly once: in the history it is given or live.
    history: Mutex<VecDeque<Event>>,
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            shared: Arc::new(Shared {
                history: Mutex::new(VecDeque::with_capacity(HISTORY)),
                sender: broadcast::channel(BACKLOG).0,
            }),
        }
    }
}

/// A client's view: the events already recorded, then those that follow.
pub struct Subscription {
    pub history: Vec<Event>,
    pub live: broadcast::Receiver<Event>,
}

impl Events {
    pub fn emit(&self, kind: Kind, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let event = Event {
            time: SystemTime::now(),
            kind,
            action: action.to_owned(),
            id: id.to_owned(),
            attributes,
        };
        tracing::debug!(kind = kind.as_str(), action, id, "event");
        let mut history = self
            .shared
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // No follower is no error.
        let _ = self.shared.sender.send(event);
    }

    pub fn subscribe(&self) -> Subscription {
        let history = self
            .shared
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Subscription {
            history: history.iter().cloned().collect(),
            live: self.shared.sender.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(events: &Events, action: &str) {
        events.emit(Kind::Container, action, "c1", BTreeMap::new());
    }

    #[tokio::test]
    async fn a_subscriber_sees_each_event_once_and_the_history_is_bounded() {
        let events = Events::default();
        emit(&events, "create");
        let mut first = events.subscribe();
        emit(&events, "start");
        assert_eq!(first.history.len(), 1);
        assert_eq!(first.live.recv().await.unwrap().action, "start");
        for _ in 0..HISTORY + 10 {
            emit(&events, "die");
        }
        let late = events.subscribe();
        assert_eq!(late.history.len(), HISTORY);
        // The first subscriber did not read: it lost the oldest, and is told.
        match first.live.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("{other:?}"),
        }
        assert_eq!(first.live.recv().await.unwrap().action, "die");
    }
}
