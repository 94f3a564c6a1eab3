//! `session_ended` events: published once for every session that ends, wherever it ends, to
//! whoever listens (the event stream of the browsable API), in this process at once and, on
//! PostgreSQL, in every other instance through `NOTIFY` (see `cluster`). Every ending, and
//! every change to a user, also reaches the session cache of every instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::EndReason;
use super::cache::SessionCache;
use crate::db::Db;

/// The PostgreSQL channel on which instances tell each other which sessions ended.
pub const CHANNEL: &str = "bouncer_events";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionEnded {
    pub session_id: i64,
    #[serde(skip)]
    pub user_id: Option<i64>,
    pub reason: EndReason,
    pub detail: &'static str,
}

#[derive(Debug, Clone)]
pub struct Events {
    local: broadcast::Sender<SessionEnded>,
    /// This instance, so that it skips its own notifications.
    instance: i64,
    pg: Option<sqlx::PgPool>,
    cache: Arc<SessionCache>,
    /// Bumped when events may have been missed (the PostgreSQL listener reconnected): every
    /// event stream then looks its own session up again.
    resync: Arc<tokio::sync::watch::Sender<u64>>,
    /// Notices on their way to the other instances ([`Events::flush`]).
    in_flight: Arc<InFlight>,
    /// Sessions ended by this instance, by reason (`EndReason as usize`), for the metrics.
    /// Endings heard from other instances are not counted: they count them.
    ended_counts: Arc<[AtomicU64; EndReason::ALL.len()]>,
}

/// What goes over `NOTIFY`: the sending instance, `(session, user, reason)` triples of
/// ended sessions, and users that changed.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    i: i64,
    #[serde(default)]
    e: Vec<(i64, Option<i64>, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    u: Vec<i64>,
}

/// Triples per notification: PostgreSQL's payload limit is 8000 bytes.
const PER_NOTICE: usize = 150;

impl Events {
    pub fn new(db: &Db, cache: SessionCache) -> Events {
        Events {
            cache: Arc::new(cache),
            ended_counts: Arc::default(),
            local: broadcast::channel(4096).0,
            resync: Arc::new(tokio::sync::watch::channel(0).0),
            in_flight: Arc::default(),
            instance: i64::from_le_bytes(crate::auth::token::random_bytes::<8>()),
            pg: match db {
                Db::Postgres(pool) => Some(pool.clone()),
                Db::Sqlite(_) => None,
            },
        }
    }

    /// How many sessions this instance has ended, by reason (every reason a session can be
    /// stored with).
    pub fn ended_counts(&self) -> impl Iterator<Item = (EndReason, u64)> + '_ {
        crate::observe::metrics::reasons()
            .map(|reason| (reason, self.ended_counts[reason as usize].load(Ordering::Relaxed)))
    }

    /// The session cache these events keep true.
    pub fn cache(&self) -> &SessionCache {
        &self.cache
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SessionEnded> {
        self.local.subscribe()
    }

    /// Tells every event stream that events may have been missed ([`Events::resyncs`]).
    pub fn resync(&self) {
        self.resync.send_modify(|generation| *generation += 1);
    }

    /// What an event stream watches for [`Events::resync`].
    pub fn resyncs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.resync.subscribe()
    }

    /// Announces sessions that have just ended (after their transaction committed).
    pub fn ended(&self, ended: &[(i64, Option<i64>)], reason: EndReason) {
        if ended.is_empty() {
            return;
        }
        self.cache.forget_ended(ended);
        self.ended_counts[reason as usize].fetch_add(ended.len() as u64, Ordering::Relaxed);
        // One line per batch (the sweeper ends a thousand at a time): the user when the batch
        // is one user's (a kick, a logout, a revocation), the session when it is one.
        let first = ended[0];
        let user_id = first.1.filter(|_| ended.iter().all(|&(_, user)| user == first.1));
        let session_id = (ended.len() == 1).then_some(first.0);
        tracing::info!(reason = reason.code(), count = ended.len(), user_id, session_id, "sessions ended");
        for &(session_id, user_id) in ended {
            tracing::debug!(session_id, user_id, reason = reason.code(), "session ended");
            self.deliver(session_id, user_id, reason);
        }
        if let Some(pool) = &self.pg {
            for chunk in ended.chunks(PER_NOTICE) {
                let notice = Notice {
                    i: self.instance,
                    e: chunk.iter().map(|&(s, u)| (s, u, reason.code().to_owned())).collect(),
                    u: Vec::new(),
                };
                self.send(pool, serde_json::to_string(&notice).expect("a notice serialises"));
            }
        }
    }

    /// Announces that a user changed (flags, name, last login): every instance reads the
    /// user's sessions from the database again.
    pub fn user_changed(&self, user_id: i64) {
        self.user_changed_here(user_id);
        if let (Some(pool), Some(notice)) = (&self.pg, self.user_changed_notice(user_id)) {
            self.send(pool, notice);
        }
    }

    /// The payload that tells the other instances a user changed, for a statement that
    /// sends it in its own transaction (PostgreSQL delivers it at commit); `None` on SQLite.
    /// After the commit, call [`Events::user_changed_here`].
    pub fn user_changed_notice(&self, user_id: i64) -> Option<String> {
        self.pg.as_ref().map(|_| {
            serde_json::to_string(&Notice { i: self.instance, e: Vec::new(), u: vec![user_id] })
                .expect("a notice serialises")
        })
    }

    /// This instance's part of [`Events::user_changed`], when the other instances were told
    /// by the transaction that changed the user.
    pub fn user_changed_here(&self, user_id: i64) {
        self.cache.forget_user(user_id);
    }

    /// Delivers a notification from another instance to this one's listeners.
    pub fn received(&self, payload: &str) {
        let Ok(notice) = serde_json::from_str::<Notice>(payload) else {
            tracing::warn!("unreadable session notice");
            return;
        };
        if notice.i == self.instance {
            return;
        }
        for user_id in notice.u {
            self.cache.forget_user(user_id);
        }
        let ended: Vec<(i64, Option<i64>)> = notice.e.iter().map(|&(session, user, _)| (session, user)).collect();
        self.cache.forget_ended(&ended);
        for (session_id, user_id, code) in notice.e {
            if let Some(reason) = EndReason::from_code(&code) {
                self.deliver(session_id, user_id, reason);
            }
        }
    }

    /// Tells this instance's listeners (the cache has been told already).
    fn deliver(&self, session_id: i64, user_id: Option<i64>, reason: EndReason) {
        // No subscriber is not an error.
        let _ = self.local.send(SessionEnded { session_id, user_id, reason, detail: reason.detail() });
    }
}

/// Notices being sent, and a signal when the last one is out.
#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    done: tokio::sync::Notify,
}

impl Events {
    /// Sends a notice's `payload` to the other instances. Fire and forget: what it announces
    /// is committed; a lost notice is made up for by the cache's time to live, the streams'
    /// look at their own session when the listener reconnects, and the pages' quiet checks.
    fn send(&self, pool: &sqlx::PgPool, payload: String) {
        let pool = pool.clone();
        let in_flight = Arc::clone(&self.in_flight);
        in_flight.count.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(&pool).await {
                tracing::warn!(error = %err, "cannot announce to other instances");
            }
            if in_flight.count.fetch_sub(1, Ordering::SeqCst) == 1 {
                in_flight.done.notify_waiters();
            }
        });
    }

    /// Waits until every notice sent so far is out (or has failed). For a process about to
    /// exit, the CLI: a notice still being sent when the runtime stops is dropped with it,
    /// and the servers' event streams would never hear of what the command ended.
    pub async fn flush(&self) {
        loop {
            let done = self.in_flight.done.notified();
            tokio::pin!(done);
            // Registered before the count is read, so the last notice's signal cannot slip by.
            done.as_mut().enable();
            if self.in_flight.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}
