//! Login lockout: consecutive failed logins per username, counted atomically.
//!
//! Each attempt reserves its place in the count *before* the password is hashed, with one
//! upsert; the attempts numbered beyond the limit are refused without hashing. So however
//! many wrong guesses arrive at once, at most `AUTH_LOGIN_FAILURE_LIMIT` of them are
//! checked, and the one that reaches the limit starts the lockout. A success clears the row.

use crate::clock::{MICROS_PER_SECOND, Micros, seconds_until};
use crate::db::Db;
use crate::error::ApiError;
use crate::settings::Snapshot;
use crate::with_db;

/// A failure count restarts when the last failure is this old.
pub const FAILURE_MEMORY: Micros = 24 * 3600 * MICROS_PER_SECOND;

const RESERVE: &str = "\
INSERT INTO login_failures (username, failures, locked_until, updated_at) \
VALUES ($1, 1, CASE WHEN 1 >= $3 THEN $4 ELSE NULL END, $2) \
ON CONFLICT (username) DO UPDATE SET \
  failures = CASE WHEN login_failures.locked_until <= $2 \
                    OR (login_failures.locked_until IS NULL AND login_failures.updated_at <= $5) \
                  THEN 1 ELSE login_failures.failures + 1 END, \
  locked_until = CASE \
      WHEN login_failures.locked_until > $2 THEN login_failures.locked_until \
      WHEN (CASE WHEN login_failures.locked_until <= $2 \
                   OR (login_failures.locked_until IS NULL AND login_failures.updated_at <= $5) \
                 THEN 1 ELSE login_failures.failures + 1 END) >= $3 THEN $4 \
      ELSE NULL END, \
  updated_at = $2 \
RETURNING failures, locked_until";

/// Counts this attempt; `Err(LockedOut)` when the username is locked out.
pub async fn reserve_attempt(db: &Db, username: &str, now: Micros, settings: &Snapshot) -> Result<(), ApiError> {
    let Some(limit) = settings.failure_limit else { return Ok(()) };
    let (failures, locked_until): (i64, Option<i64>) = with_db!(db, |pool| {
        sqlx::query_as(RESERVE)
            .bind(username)
            .bind(now)
            .bind(limit)
            .bind(now + settings.lockout)
            .bind(now - FAILURE_MEMORY)
            .fetch_one(pool)
            .await
    })?;
    if failures > limit {
        let until = locked_until.unwrap_or(now + settings.lockout);
        tracing::info!(username, "login refused: locked out");
        return Err(ApiError::LockedOut { retry_after: seconds_until(now, until).max(1) });
    }
    Ok(())
}

/// Forgets the failures of `username` after a successful login.
pub async fn clear(db: &Db, username: &str, settings: &Snapshot) -> Result<(), sqlx::Error> {
    if settings.failure_limit.is_none() {
        return Ok(());
    }
    with_db!(db, |pool| {
        sqlx::query("DELETE FROM login_failures WHERE username = $1").bind(username).execute(pool).await.map(|_| ())
    })?;
    Ok(())
}

/// Deletes rows that no longer lock anything and are past the failure memory (sweeper).
pub async fn forget_old(db: &Db, now: Micros) -> Result<u64, sqlx::Error> {
    let done = with_db!(db, |pool| {
        sqlx::query(
            "DELETE FROM login_failures WHERE updated_at <= $1 AND (locked_until IS NULL OR locked_until <= $2)",
        )
        .bind(now - FAILURE_MEMORY)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(done)
}
