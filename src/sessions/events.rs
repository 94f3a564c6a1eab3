//! `session_ended` events: published once for every session that ends, wherever it ends,
//! to whoever listens in this process (the event stream of the browsable API).

use serde::Serialize;
use tokio::sync::broadcast;

use super::EndReason;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionEnded {
    pub session_id: i64,
    #[serde(skip)]
    pub user_id: Option<i64>,
    pub reason: EndReason,
    pub detail: &'static str,
}

#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<SessionEnded>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(1024).0)
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEnded> {
        self.0.subscribe()
    }

    /// Announces sessions that have just ended (after their transaction committed).
    pub fn ended(&self, ended: &[(i64, Option<i64>)], reason: EndReason) {
        for &(session_id, user_id) in ended {
            tracing::info!(session_id, user_id, reason = reason.code(), "session ended");
            // No subscriber is not an error.
            let _ = self.0.send(SessionEnded { session_id, user_id, reason, detail: reason.detail() });
        }
    }
}
