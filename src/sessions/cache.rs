//! The session cache: what a token check needs (the session, its user, its last use), kept
//! in memory so that a request with a live token costs no database round trip.
//!
//! The database stays the authority; the cache only ever says "live" for a session this
//! instance read from the database less than `ttl` ago and that nothing has ended since:
//!
//! - every ending (kick, logout, expiry, revocation, password change, deactivation,
//!   deletion) and every change to a user goes through [`super::Events`], which forgets the
//!   user's entries here at once and, on PostgreSQL, on every other instance (`NOTIFY`);
//! - an entry older than `ttl` is read again from the database, which bounds what this
//!   instance can miss (a lost notification, a CLI on the same SQLite file) to `ttl`;
//! - an entry is inserted only if nothing was forgotten between the database read and the
//!   insert (`generation`), so a read that raced an ending never resurrects the session;
//! - expiry is computed on every request from the entry's last use and the current settings.
//!
//! The idle timer moves in memory on every request and is written to the database at most
//! once per [`WRITE_EVERY`] per session (see `docs/DECISIONS.md`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Micros;
use crate::users::User;

/// The longest the stored `last_used_at` of a session in use lags behind its last request.
pub const WRITE_EVERY: Micros = 1_000_000;

/// A token digest (SHA-256).
pub type Digest = [u8; 32];

#[derive(Debug, Clone)]
pub struct Entry {
    pub session_id: i64,
    pub user: User,
    pub created_at: Micros,
    /// The last use this instance knows of.
    pub last_used: Micros,
    /// The last use as written to the database.
    pub stored_last_used: Micros,
    /// When this instance read the session from the database.
    pub loaded_at: Micros,
}

/// What [`SessionCache::touch`] found.
#[derive(Debug, PartialEq)]
pub enum Touch {
    /// Moved in memory; nothing to write.
    Moved,
    /// Moved, and this request is to write `last_used_at` (no other request will).
    Write,
    /// Not (or no longer) cached.
    Gone,
}

#[derive(Debug)]
pub struct SessionCache {
    entries: Mutex<HashMap<Digest, Entry>>,
    generation: AtomicU64,
    ttl: Micros,
    capacity: usize,
}

impl SessionCache {
    /// A cache whose entries live `ttl` microseconds (0: nothing is cached), holding at most
    /// `capacity` sessions.
    pub fn new(ttl: Micros, capacity: usize) -> SessionCache {
        SessionCache { entries: Mutex::default(), generation: AtomicU64::new(0), ttl, capacity }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written (every change
        // is one assignment), so a poisoned map is still sound.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Read before a database read whose result may be inserted.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The entry of `digest`, if it was read from the database less than `ttl` ago.
    pub fn get(&self, digest: &Digest, now: Micros) -> Option<Entry> {
        let entries = self.entries();
        let entry = entries.get(digest)?;
        (now < entry.loaded_at.saturating_add(self.ttl)).then(|| entry.clone())
    }

    /// The last use this instance knows of for `session_id` under `digest`, however old the
    /// entry: a use that was not written yet still counts when the entry is read again.
    pub fn last_used(&self, digest: &Digest, session_id: i64) -> Option<Micros> {
        self.entries().get(digest).filter(|entry| entry.session_id == session_id).map(|entry| entry.last_used)
    }

    /// Caches `entry` unless something was forgotten since `generation` was read.
    pub fn insert(&self, digest: Digest, entry: Entry, generation: u64) {
        if self.ttl <= 0 || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries();
        // Checked under the lock: `forget_*` bumps the generation under it too.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            // Full: start again rather than track recency on every hit. Only the sessions
            // in use come back, at one database read each.
            entries.clear();
        }
        entries.insert(digest, entry);
    }

    /// Moves the idle timer of `digest` to `now`; says whether this request writes it.
    pub fn touch(&self, digest: &Digest, now: Micros) -> Touch {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(digest) else { return Touch::Gone };
        entry.last_used = entry.last_used.max(now);
        if now - entry.stored_last_used >= WRITE_EVERY {
            entry.stored_last_used = now;
            Touch::Write
        } else {
            Touch::Moved
        }
    }

    /// Forgets the sessions of `user_id`: one of them ended, or the user changed.
    pub fn forget_user(&self, user_id: i64) {
        self.forget(|entry| entry.user.id == user_id);
    }

    /// Forgets one session.
    pub fn forget_session(&self, session_id: i64) {
        self.forget(|entry| entry.session_id == session_id);
    }

    /// Forgets, in one pass, the users of the `(session, user)` pairs of sessions that ended
    /// (the session alone when its user is gone).
    pub fn forget_ended(&self, ended: &[(i64, Option<i64>)]) {
        if ended.is_empty() {
            return;
        }
        let users: std::collections::HashSet<i64> = ended.iter().filter_map(|&(_, user)| user).collect();
        let sessions: std::collections::HashSet<i64> = ended.iter().map(|&(session, _)| session).collect();
        self.forget(|entry| users.contains(&entry.user.id) || sessions.contains(&entry.session_id));
    }

    /// Forgets everything (a notification may have been missed).
    pub fn clear(&self) {
        self.forget(|_| true);
    }

    fn forget(&self, drop: impl Fn(&Entry) -> bool) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, entry| !drop(entry));
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> User {
        User {
            id,
            username: format!("user{id}"),
            is_superuser: false,
            is_system_auditor: false,
            is_active: true,
            created_at: 0,
            modified_at: 0,
            last_login_at: None,
        }
    }

    fn entry(session_id: i64, user_id: i64, at: Micros) -> Entry {
        Entry { session_id, user: user(user_id), created_at: at, last_used: at, stored_last_used: at, loaded_at: at }
    }

    #[test]
    fn an_entry_lives_ttl_then_is_read_again() {
        let cache = SessionCache::new(1_000_000, 10);
        cache.insert([1; 32], entry(1, 1, 0), cache.generation());
        assert!(cache.get(&[1; 32], 999_999).is_some());
        assert!(cache.get(&[1; 32], 1_000_000).is_none());
    }

    #[test]
    fn a_read_that_raced_a_forget_is_not_inserted() {
        let cache = SessionCache::new(1_000_000, 10);
        let before = cache.generation();
        cache.forget_user(7); // an ending committed while the read was in flight
        cache.insert([1; 32], entry(1, 7, 0), before);
        assert!(cache.get(&[1; 32], 0).is_none());
        cache.insert([1; 32], entry(1, 7, 0), cache.generation());
        assert!(cache.get(&[1; 32], 0).is_some());
    }

    #[test]
    fn forgetting_a_user_or_a_session_drops_only_theirs() {
        let cache = SessionCache::new(1_000_000, 10);
        cache.insert([1; 32], entry(1, 1, 0), cache.generation());
        cache.insert([2; 32], entry(2, 1, 0), cache.generation());
        cache.insert([3; 32], entry(3, 2, 0), cache.generation());
        cache.forget_session(2);
        assert_eq!(cache.len(), 2);
        cache.insert([4; 32], entry(4, 3, 0), cache.generation());
        cache.forget_ended(&[(4, None)]);
        assert_eq!(cache.len(), 2, "a session whose user is gone is forgotten by its id");
        cache.forget_user(1);
        assert!(cache.get(&[1; 32], 0).is_none());
        assert!(cache.get(&[3; 32], 0).is_some());
    }

    #[test]
    fn the_idle_timer_is_written_once_per_second_by_one_request() {
        let cache = SessionCache::new(60_000_000, 10);
        cache.insert([1; 32], entry(1, 1, 0), cache.generation());
        assert_eq!(cache.touch(&[1; 32], 400_000), Touch::Moved);
        assert_eq!(cache.touch(&[1; 32], 999_999), Touch::Moved);
        assert_eq!(cache.touch(&[1; 32], 1_000_000), Touch::Write);
        assert_eq!(cache.touch(&[1; 32], 1_000_001), Touch::Moved, "the write is claimed by one request");
        assert_eq!(cache.get(&[1; 32], 1_000_001).unwrap().last_used, 1_000_001);
        assert_eq!(cache.touch(&[9; 32], 0), Touch::Gone);
    }

    #[test]
    fn a_full_cache_starts_again_and_a_zero_ttl_caches_nothing() {
        let cache = SessionCache::new(1_000_000, 2);
        for i in 0..3u8 {
            cache.insert([i; 32], entry(i64::from(i), 1, 0), cache.generation());
        }
        assert_eq!(cache.len(), 1);
        let off = SessionCache::new(0, 10);
        off.insert([1; 32], entry(1, 1, 0), off.generation());
        assert!(off.is_empty());
    }
}
