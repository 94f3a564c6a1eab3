//! The SQL of sessions. Every statement that ends sessions has the same head, so one
//! macro runs any of them: `$1` the end time, `$2` the reason code, `$3` who ended them,
//! further parameters after that; each returns `(id, user_id)` of the sessions it ended.

use crate::clock::Micros;
use crate::settings::Snapshot;

/// Runs one of the `END_*` statements on `$conn`; evaluates to
/// `Result<Vec<(i64, Option<i64>)>, sqlx::Error>`.
#[macro_export]
macro_rules! end_sessions {
    ($conn:expr, $sql:expr, $now:expr, $reason:expr, $by:expr $(, $bind:expr)* $(,)?) => {
        sqlx::query_as::<_, (i64, Option<i64>)>($sql)
            .bind($now)
            .bind($reason.code())
            .bind($by)
            $(.bind($bind))*
            .fetch_all($conn)
            .await
    };
}

macro_rules! end_sql {
    ($($rest:literal)+) => {
        concat!("UPDATE sessions SET ended_at = $1, end_reason = $2, ended_by = $3 ", $($rest),+, " RETURNING id, user_id")
    };
}

/// Ends the sessions past their idle or absolute end (of one user, or all when `$user` is
/// `None`), at most `$batch` of each; evaluates to
/// `Result<[(Ended, EndReason); 2], sqlx::Error>`.
#[macro_export]
macro_rules! expire_sessions {
    ($conn:expr, $settings:expr, $now:expr, $user:expr, $batch:expr) => {
        async {
            use $crate::sessions::EndReason;
            use $crate::sessions::store::{END_IDLE, END_OVER_AGE};
            let (settings, user): (&$crate::settings::Snapshot, Option<i64>) = ($settings, $user);
            let idle = $crate::end_sessions!(
                $conn,
                END_IDLE,
                $now,
                EndReason::TimeoutReached,
                None::<i64>,
                settings.token_expiration,
                settings.max_age.unwrap_or(0),
                user,
                $batch
            )?;
            let old = match settings.max_age {
                Some(max_age) => $crate::end_sessions!(
                    $conn,
                    END_OVER_AGE,
                    $now,
                    EndReason::MaxAgeReached,
                    None::<i64>,
                    max_age,
                    user,
                    $batch,
                    settings.token_expiration
                )?,
                None => Vec::new(),
            };
            Ok::<_, sqlx::Error>([(idle, EndReason::TimeoutReached), (old, EndReason::MaxAgeReached)])
        }
        .await
    };
}

/// `$4` the session id.
pub const END_ONE: &str = end_sql!("WHERE id = $4 AND ended_at IS NULL");
/// `$4` the user id: every live session of the user.
pub const END_USER: &str = end_sql!("WHERE user_id = $4 AND ended_at IS NULL");
/// `$4` the user id, `$5` the limit, `$6` i64::MAX: the user's live sessions beyond the
/// newest `$5` (by creation).
pub const END_USER_OVER_LIMIT: &str = end_sql!(
    "WHERE ended_at IS NULL AND id IN (SELECT id FROM sessions WHERE user_id = $4 AND ended_at IS NULL "
    "ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $5)"
);
/// `$4` the limit: for every user, the live sessions beyond the newest `$4`.
pub const END_ALL_OVER_LIMIT: &str = end_sql!(
    "WHERE ended_at IS NULL AND id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
    "(PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS rn FROM sessions WHERE ended_at IS NULL) ranked "
    "WHERE rn > $4)"
);

/// Idle sessions. `$1` now, `$4` idle timeout, `$5` max age (0 = off), `$6` one user or
/// NULL for all, `$7` batch size. A session is idle-ended when its idle end comes no later
/// than its absolute end; it ended at `last_used_at + $4`. (`ended_at IS NULL` outside the
/// subquery too: on PostgreSQL a row another transaction ended meanwhile is re-checked
/// against the outer condition only, and must not end twice.)
pub const END_IDLE: &str = "UPDATE sessions SET ended_at = last_used_at + $4, end_reason = $2, ended_by = $3 \
    WHERE ended_at IS NULL AND id IN (SELECT id FROM sessions WHERE ended_at IS NULL AND last_used_at <= $1 - $4 \
    AND ($5 = 0 OR last_used_at + $4 <= created_at + $5) AND ($6 IS NULL OR user_id = $6) LIMIT $7) \
    RETURNING id, user_id";
/// Sessions past their absolute lifetime whose absolute end comes before their idle end
/// (the others are [`END_IDLE`]'s, even when a batch has left them for the next). `$1` now,
/// `$4` max age (> 0), `$5` one user or NULL, `$6` batch size, `$7` idle timeout; they ended
/// at `created_at + $4`.
pub const END_OVER_AGE: &str = "UPDATE sessions SET ended_at = created_at + $4, end_reason = $2, ended_by = $3 \
    WHERE ended_at IS NULL AND id IN (SELECT id FROM sessions WHERE ended_at IS NULL AND created_at <= $1 - $4 \
    AND created_at + $4 < last_used_at + $7 AND ($5 IS NULL OR user_id = $5) LIMIT $6) \
    RETURNING id, user_id";

/// The columns a new session is written with.
macro_rules! session_columns {
    () => {
        "sessions (user_id, token_hash, created_at, last_used_at, ip_address, user_agent)"
    };
}

/// The login's first statement on SQLite (PostgreSQL runs [`LOGIN_PG`]): moves the user's
/// last login, locking its row; no row when the user is gone or inactive. `$1` now, `$2` the
/// user.
pub const LOGIN_USER: &str = "UPDATE users SET last_login_at = $1 WHERE id = $2 AND is_active RETURNING id";
/// [`LOGIN_USER`] and [`INSERT`] in one statement on PostgreSQL, which also tells the other
/// instances that the user changed (`$3` the channel, `$4` the payload; delivered at commit)
/// and records the password check's success in the lockout (`$5` the username, NULL when the
/// lockout is off; `record_success_sql!`). `$6` the token's digest, `$7` the
/// address, `$8` the user agent; returns the new session's id, no row when the user is gone
/// or inactive.
pub const LOGIN_PG: &str = concat!(
    "WITH u AS (UPDATE users SET last_login_at = $1 WHERE id = $2 AND is_active RETURNING id), ",
    "r AS (",
    crate::record_success_sql!("$5", "$1"),
    " AND EXISTS (SELECT 1 FROM u)), ",
    "s AS (INSERT INTO ",
    session_columns!(),
    " SELECT id, $6, $1, $1, $7, $8 FROM u RETURNING id) ",
    "SELECT id, pg_notify($3, $4)::text FROM s"
);

/// `$1` the user, `$2` the token's digest, `$3` now, `$4` the address, `$5` the user agent.
pub const INSERT: &str = concat!("INSERT INTO ", session_columns!(), " VALUES ($1, $2, $3, $3, $4, $5) RETURNING id");
pub const COUNT_LIVE: &str = "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND ended_at IS NULL";
pub const TOUCH: &str = "UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND ended_at IS NULL";
pub const END_REASON: &str = "SELECT end_reason FROM sessions WHERE id = $1";
/// Deletes ended sessions past retention: `$1` cutoff, `$2` batch size.
pub const PURGE: &str = "DELETE FROM sessions WHERE id IN \
    (SELECT id FROM sessions WHERE ended_at IS NOT NULL AND ended_at < $1 LIMIT $2)";

/// A session found by its token, with its user (absent when the user was deleted).
#[derive(Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: Option<i64>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub username: Option<String>,
    pub is_superuser: Option<bool>,
    pub is_system_auditor: Option<bool>,
    pub is_active: Option<bool>,
    pub user_created_at: Option<i64>,
    pub user_modified_at: Option<i64>,
    pub last_login_at: Option<i64>,
}

pub const BY_TOKEN: &str = "SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.ended_at, s.end_reason, \
    u.username, u.is_superuser, u.is_system_auditor, u.is_active, u.created_at AS user_created_at, \
    u.modified_at AS user_modified_at, u.last_login_at \
    FROM sessions s LEFT JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1";

/// A session as the API lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: Option<i64>,
    pub created_at: i64,
    pub last_used_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub ended_by: Option<i64>,
    pub ended_by_username: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

macro_rules! session_select {
    ($($rest:literal)+) => {
        concat!("SELECT s.id, s.user_id, s.created_at, s.last_used_at, s.ended_at, s.end_reason, \
            s.ended_by, e.username AS ended_by_username, s.ip_address, s.user_agent \
            FROM sessions s LEFT JOIN users e ON e.id = s.ended_by ", $($rest),+)
    };
}

/// The columns of a [`SessionRow`].
pub const SESSION_COLUMNS: &str = "s.id, s.user_id, s.created_at, s.last_used_at, s.ended_at, s.end_reason, \
    s.ended_by, e.username AS ended_by_username, s.ip_address, s.user_agent";
/// A user's sessions: `$1` user id, `$2` active filter (NULL = all), then a list's `{where}`.
pub const SESSIONS_OF_USER: &str = "sessions s LEFT JOIN users e ON e.id = s.ended_by \
    WHERE s.user_id = $1 AND ($2 IS NULL OR (s.ended_at IS NULL) = $2) AND {where}";

/// `$1` session id.
pub const BY_ID: &str = session_select!("WHERE s.id = $1");

/// When a live session ends if nothing else happens: the sooner of its idle end and its
/// absolute end, and the reason it will end with.
pub fn end_of(created_at: Micros, last_used_at: Micros, settings: &Snapshot) -> (Micros, super::EndReason) {
    let idle_end = last_used_at.saturating_add(settings.token_expiration);
    match settings.max_age {
        Some(max_age) if created_at.saturating_add(max_age) < idle_end => {
            (created_at.saturating_add(max_age), super::EndReason::MaxAgeReached)
        }
        _ => (idle_end, super::EndReason::TimeoutReached),
    }
}
