//! Login lockout: consecutive failed logins per username, counted atomically.
//!
//! A password check for a username needs a grant: one upsert that admits it only while the
//! failures so far plus the checks in flight (`pending`) stay under the limit. So however
//! many wrong guesses arrive at once, on however many instances, at most
//! `AUTH_LOGIN_FAILURE_LIMIT` of them are ever checked, and the failure that reaches the
//! limit starts the lockout. A check that finds the username saturated by checks in flight
//! (not locked) waits for them; within one process it waits on a local gate first, so the
//! database is not polled. Each result is recorded when the check ends; a success resets
//! the count. A process that dies mid-check leaks its `pending` for at most [`PENDING_LEASE`].
//!
//! The grant's statement also reads the user's credentials, and a login records its success
//! in the transaction that creates the session, so a login costs the lockout no round trip
//! of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::{MICROS_PER_SECOND, Micros, seconds_until};
use crate::db::Db;
use crate::error::ApiError;
use crate::settings::Snapshot;
use crate::users::store::{self as users, Credentials};
use crate::with_db;

/// A failure count restarts when the last failure is this old.
pub const FAILURE_MEMORY: Micros = 24 * 3600 * MICROS_PER_SECOND;
/// How long a check in flight counts at most.
pub const PENDING_LEASE: Micros = 60 * MICROS_PER_SECOND;
/// How long a check waits for a grant before giving up with 503.
const GRANT_WAIT: Duration = Duration::from_secs(10);

// $1 username, $2 now, $3 limit, $4 forget failures before, $5 pending lease end, $6 nonce;
// returns the grant, the lock, and the user's credentials (NULLs when there is no such user).
const RESERVE: &str = "\
INSERT INTO login_failures (username, failures, pending, pending_until, grant_nonce, updated_at) \
VALUES ($1, 0, 1, $5, $6, $2) \
ON CONFLICT (username) DO UPDATE SET \
  failures = CASE WHEN login_failures.locked_until <= $2 OR login_failures.last_failure_at <= $4 THEN 0 \
                  ELSE login_failures.failures END, \
  locked_until = CASE WHEN login_failures.locked_until > $2 THEN login_failures.locked_until ELSE NULL END, \
  pending = (CASE WHEN login_failures.pending_until > $2 THEN login_failures.pending ELSE 0 END) \
      + (CASE WHEN ALLOWED THEN 1 ELSE 0 END), \
  pending_until = CASE WHEN ALLOWED THEN $5 ELSE login_failures.pending_until END, \
  grant_nonce = CASE WHEN ALLOWED THEN $6 ELSE login_failures.grant_nonce END, \
  updated_at = $2 \
RETURNING grant_nonce, locked_until, \
  (SELECT id FROM users WHERE username = $1), \
  (SELECT password_hash FROM users WHERE username = $1), \
  (SELECT is_active FROM users WHERE username = $1)";

/// Admitted: no live lock, and failures plus checks in flight under the limit.
const ALLOWED: &str = "(NOT COALESCE(login_failures.locked_until > $2, FALSE) \
  AND (CASE WHEN login_failures.locked_until <= $2 OR login_failures.last_failure_at <= $4 THEN 0 \
            ELSE login_failures.failures END) \
    + (CASE WHEN login_failures.pending_until > $2 THEN login_failures.pending ELSE 0 END) < $3)";

// $1 username, $2 success, $3 now, $4 limit, $5 lock end.
const RELEASE: &str = "\
UPDATE login_failures SET \
  pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END, \
  failures = CASE WHEN $2 THEN 0 ELSE failures + 1 END, \
  last_failure_at = CASE WHEN $2 THEN last_failure_at ELSE $3 END, \
  locked_until = CASE WHEN NOT $2 AND failures + 1 >= $4 THEN $5 ELSE locked_until END, \
  updated_at = $3 \
WHERE username = $1 \
RETURNING locked_until";

fn reserve_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| RESERVE.replace("ALLOWED", ALLOWED))
}

/// The local gates: at most `limit` checks in flight per username in this process.
#[derive(Debug, Default)]
pub struct Gates(Mutex<HashMap<String, (i64, Arc<Semaphore>)>>);

impl Gates {
    async fn enter(&self, username: &str, limit: i64) -> OwnedSemaphorePermit {
        let gate = {
            let mut gates = self.0.lock().expect("gates lock");
            // Forget gates nobody holds, so the map only holds usernames being checked now.
            gates.retain(|_, (_, sem)| Arc::strong_count(sem) > 1);
            let entry =
                gates.entry(username.to_owned()).or_insert_with(|| (limit, Arc::new(Semaphore::new(limit as usize))));
            if entry.0 != limit {
                *entry = (limit, Arc::new(Semaphore::new(limit as usize)));
            }
            entry.1.clone()
        };
        gate.acquire_owned().await.expect("gates are never closed")
    }
}

/// The right to check one password for a username; [`Attempt::finish`] records the result,
/// or [`record_success!`](crate::record_success) does in the caller's transaction.
#[derive(Debug)]
pub struct Attempt {
    username: String,
    limit: Option<i64>,
    lockout: Micros,
    /// A success recorded in a transaction that has committed.
    recorded: AtomicBool,
    _gate: Option<OwnedSemaphorePermit>,
}

/// The statement that records a successful check for the username `$user` at `$now` (their
/// parameters, `"$1"` say): the check leaves the ones in flight and the count restarts, as
/// [`Attempt::finish`] does with a success. One text for SQLite's login transaction
/// ([`record_success!`](crate::record_success)) and PostgreSQL's login statement.
#[macro_export]
macro_rules! record_success_sql {
    ($user:literal, $now:literal) => {
        concat!(
            "UPDATE login_failures SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END, failures = 0, ",
            "updated_at = ",
            $now,
            " WHERE username = ",
            $user
        )
    };
}

/// Records the success of `$attempt` (an `&Attempt`) on `$conn`, inside the caller's
/// transaction. Evaluates to `Result<(), sqlx::Error>`; once the transaction has committed,
/// call [`Attempt::set_recorded`].
#[macro_export]
macro_rules! record_success {
    ($conn:expr, $attempt:expr, $now:expr) => {
        async {
            let Some(username) = $attempt.username_to_record() else { return Ok(()) };
            sqlx::query($crate::record_success_sql!("$1", "$2"))
                .bind(username)
                .bind($now)
                .execute($conn)
                .await
                .map(|_| ())
        }
        .await
    };
}

/// Waits for the right to check a password for `username`, and reads its credentials (the
/// same statement, when the lockout is on); `Err(LockedOut)` when it is locked out.
pub async fn begin(
    db: &Db,
    gates: &Gates,
    clock: &dyn crate::clock::Clock,
    username: &str,
    settings: &Snapshot,
) -> Result<(Attempt, Option<Credentials>), ApiError> {
    let attempt = |limit, lockout, gate| Attempt {
        username: username.to_owned(),
        limit,
        lockout,
        recorded: AtomicBool::new(false),
        _gate: gate,
    };
    let Some(limit) = settings.failure_limit else {
        return Ok((attempt(None, 0, None), users::credentials(db, username).await?));
    };
    let gate = gates.enter(username, limit).await;
    let deadline = tokio::time::Instant::now() + GRANT_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        let now = clock.now();
        let nonce = i64::from_le_bytes(crate::auth::token::random_bytes::<8>());
        let (granted, locked_until, id, hash, active): Reserved = with_db!(db, |pool| {
            sqlx::query_as(reserve_sql())
                .bind(username)
                .bind(now)
                .bind(limit)
                .bind(now - FAILURE_MEMORY)
                .bind(now + PENDING_LEASE)
                .bind(nonce)
                .fetch_one(pool)
                .await
        })?;
        if granted == Some(nonce) {
            let found = id.zip(hash).map(|(id, hash)| (id, hash, active.unwrap_or(false)));
            return Ok((attempt(Some(limit), settings.lockout, Some(gate)), found));
        }
        if let Some(until) = locked_until.filter(|until| *until > now) {
            return Err(ApiError::LockedOut { retry_after: seconds_until(now, until).max(1) });
        }
        // Saturated by checks in flight on other instances: wait for them to finish.
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable(sqlx::Error::PoolTimedOut));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// What the grant's statement returns: the grant's nonce, the lock, the user's id, password
/// hash and `is_active`.
type Reserved = (Option<i64>, Option<i64>, Option<i64>, Option<String>, Option<bool>);

impl Attempt {
    /// The username whose count a success restarts: `None` when the lockout is off (nothing
    /// to record).
    pub fn username_to_record(&self) -> Option<&str> {
        self.limit.map(|_| self.username.as_str())
    }

    /// The transaction that recorded the success has committed.
    pub fn set_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }

    pub fn is_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// Records the result of the check: a success resets the count, a failure adds to it
    /// and, reaching the limit, starts the lockout; `None` (the check could not be made)
    /// only releases its place. True when this failure started a lockout.
    pub async fn finish(&self, db: &Db, now: Micros, success: Option<bool>) -> Result<bool, sqlx::Error> {
        let Some(limit) = self.limit else { return Ok(false) };
        let Some(success) = success else {
            return with_db!(db, |pool| {
                sqlx::query("UPDATE login_failures SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END WHERE username = $1")
                    .bind(&self.username)
                    .execute(pool)
                    .await
                    .map(|_| false)
            });
        };
        let locked_until: Option<Option<i64>> = with_db!(db, |pool| {
            sqlx::query_scalar(RELEASE)
                .bind(&self.username)
                .bind(success)
                .bind(now)
                .bind(limit)
                .bind(now + self.lockout)
                .fetch_optional(pool)
                .await
        })?;
        // The lock this failure set (no check is admitted while a lock holds, so a lock that
        // ends exactly then is this one).
        Ok(!success && locked_until.flatten() == Some(now + self.lockout))
    }
}

/// Deletes rows that hold nothing any more: no live lock, no check in flight, and no
/// failure to remember (sweeper).
pub async fn forget_old(db: &Db, now: Micros) -> Result<u64, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query(
            "DELETE FROM login_failures WHERE (locked_until IS NULL OR locked_until <= $1) \
             AND (pending = 0 OR pending_until <= $1) AND (failures = 0 OR last_failure_at <= $2)",
        )
        .bind(now)
        .bind(now - FAILURE_MEMORY)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })
}
