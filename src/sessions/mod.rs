//! Sessions: login and logout, the per-user limit, idle and absolute expiry, the reasons
//! sessions end, the sweeper, and the session endpoints. Ending a session, wherever it
//! happens, goes through an `END_*` statement and [`Events::ended`].

pub mod cache;
mod events;
pub(crate) mod handlers;
mod reason;
pub mod store;
pub mod sweeper;
mod view;

use crate::AppState;
use crate::activity::Author;
use crate::auth::token::{self, NewToken};
use crate::auth::{Caller, ClientMeta, SessionAuth};
use crate::clock::Micros;
use crate::error::{ApiError, ApiResult};
use crate::settings::{LimitPolicy, Snapshot};
use crate::users::User;
use crate::{end_sessions, expire_sessions, record_activity, with_db};
pub use events::{CHANNEL as EVENTS_CHANNEL, Events, SessionEnded};
pub use handlers::router;
pub use reason::EndReason;
use store::*;
pub use view::Session;

/// `(session id, user id)` of sessions that have just ended.
pub type Ended = Vec<(i64, Option<i64>)>;

/// Rows per statement when the sweeper or a settings change ends sessions in bulk.
pub const BATCH: i64 = 1000;

/// Checks a presented token: the caller when its session is live (moving its idle timer
/// unless `quiet`), else the reason it ended.
///
/// A session this instance read less than the cache's time to live ago, and that nothing
/// has ended since, is checked in memory (see [`cache`]); its idle timer is written to the
/// database at most once per [`cache::WRITE_EVERY`]. Anything else reads the database.
// At DEBUG: a span per request costs, and the request's own span already says which it is.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn authenticate(state: &AppState, token: &str, quiet: bool) -> ApiResult<Caller> {
    let digest = token::digest(token);
    let cache = state.events.cache();
    let now = state.clock.now();
    if let Some(entry) = cache.get(&digest, now) {
        let settings = state.settings.current();
        let (ends_at, _) = end_of(entry.created_at, entry.last_used, &settings);
        // Past its end by what this instance knows: the database decides (another instance
        // may have moved the idle timer), below.
        if ends_at > now {
            if quiet {
                return Ok(caller(entry.user, entry.session_id, ends_at));
            }
            let touched = cache.touch(&digest, now);
            if touched != cache::Touch::Gone {
                if touched == cache::Touch::Write {
                    touch(state, entry.session_id, now).await?;
                }
                return Ok(caller(entry.user, entry.session_id, end_of(entry.created_at, now, &settings).0));
            }
        }
    }
    let generation = cache.generation();
    let row: Option<TokenRow> =
        with_db!(&state.db, |pool| sqlx::query_as(BY_TOKEN).bind(&digest[..]).fetch_optional(pool).await)?;
    let row = row.ok_or(ApiError::SessionEnded(EndReason::InvalidToken))?;
    if row.ended_at.is_some() {
        return Err(ended(row.end_reason.as_deref()));
    }
    let now = state.clock.now();
    let user = match (row.user_id, row.username, row.is_active) {
        (Some(id), Some(username), Some(true)) => User {
            id,
            username,
            is_superuser: row.is_superuser.unwrap_or(false),
            is_system_auditor: row.is_system_auditor.unwrap_or(false),
            is_active: true,
            created_at: row.user_created_at.unwrap_or_default(),
            modified_at: row.user_modified_at.unwrap_or_default(),
            last_login_at: row.last_login_at,
        },
        // Disabling or deleting a user ends the sessions in the same transaction; this is
        // the belt to those braces.
        _ => {
            end_one(state, row.id, EndReason::UserDisabled, None, now).await?;
            return Err(ApiError::SessionEnded(EndReason::UserDisabled));
        }
    };
    let settings = state.settings.current();
    // A use this instance saw but has not written yet counts (see `cache::WRITE_EVERY`).
    let known = row.last_used_at.max(cache.last_used(&digest, row.id).unwrap_or(i64::MIN));
    let (ends_at, reason) = end_of(row.created_at, known, &settings);
    if ends_at <= now {
        end_one(state, row.id, reason, None, ends_at).await?;
        return Err(ApiError::SessionEnded(reason));
    }
    let last_used = if quiet {
        known
    } else {
        touch(state, row.id, now).await?;
        now
    };
    let entry = cache::Entry {
        session_id: row.id,
        user,
        created_at: row.created_at,
        last_used,
        stored_last_used: last_used,
        loaded_at: now,
    };
    let ends_at = end_of(entry.created_at, last_used, &settings).0;
    let caller = caller(entry.user.clone(), entry.session_id, ends_at);
    cache.insert(digest, entry, generation);
    Ok(caller)
}

fn caller(user: User, session_id: i64, ends_at: Micros) -> Caller {
    Caller { user, session: Some(SessionAuth { id: session_id, ends_at }) }
}

/// Writes a session's last use; a session that ended meanwhile is refused with its reason.
async fn touch(state: &AppState, session_id: i64, now: Micros) -> ApiResult<()> {
    let touched = with_db!(&state.db, |pool| {
        sqlx::query(TOUCH).bind(now).bind(session_id).execute(pool).await.map(|r| r.rows_affected())
    })?;
    if touched == 0 {
        // It ended between the read and the write: say why.
        state.events.cache().forget_session(session_id);
        let reason: Option<Option<String>> =
            with_db!(&state.db, |pool| sqlx::query_scalar(END_REASON).bind(session_id).fetch_optional(pool).await)?;
        return Err(ended(reason.flatten().as_deref()));
    }
    Ok(())
}

fn ended(code: Option<&str>) -> ApiError {
    ApiError::SessionEnded(code.and_then(EndReason::from_code).unwrap_or(EndReason::InvalidToken))
}

/// A session just created by a login.
#[derive(Debug)]
pub struct LoggedIn {
    pub token: NewToken,
    pub session: Session,
}

/// Creates a session for `user_id`, whose password has been checked, enforcing the limit;
/// records the check's success (`attempt`) in the same transaction.
///
/// One transaction serialises the logins of one user: its first statement moves the user's
/// `last_login` (taking the row's lock on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already
/// serialises every writer) and finds no row when the user is gone or inactive; then the
/// session is inserted. Under a limit, read once the lock is held (so a settings change that
/// lowers it sees every committed login), the user's dead sessions are ended and either the
/// new one is refused if it went over (`deny_new`, which rolls it all back) or the oldest
/// beyond the limit are ended (`kick_oldest`). On PostgreSQL the first statement also inserts
/// the session, records the lockout's success and tells the other instances, at commit, that
/// the user changed: a login with no limit is `BEGIN`, one statement, `COMMIT`.
#[tracing::instrument(skip_all, fields(user_id = user_id))]
pub async fn create(
    state: &AppState,
    user_id: i64,
    meta: &ClientMeta,
    attempt: Option<&crate::auth::lockout::Attempt>,
) -> ApiResult<LoggedIn> {
    let new = token::generate();
    // `Some` on PostgreSQL, whose login statement sends it.
    let notice = state.events.user_changed_notice(user_id);
    let (session_id, now, ended_expired, ended_over, settings) = with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
        let now = state.clock.now();
        let session_id = match &notice {
            None => {
                let user = sqlx::query_scalar::<_, i64>(LOGIN_USER).bind(now).bind(user_id);
                if user.fetch_optional(&mut *tx).await?.is_none() {
                    return Err(ApiError::InvalidCredentials);
                }
                if let Some(attempt) = attempt {
                    crate::record_success!(&mut *tx, attempt, now)?;
                }
                sqlx::query_scalar::<_, i64>(INSERT)
                    .bind(user_id)
                    .bind(&new.hash)
                    .bind(now)
                    .bind(meta.ip.as_deref())
                    .bind(meta.user_agent.as_deref())
                    .fetch_one(&mut *tx)
                    .await?
            }
            Some(notice) => sqlx::query_scalar::<_, i64>(LOGIN_PG)
                .bind(now)
                .bind(user_id)
                .bind(EVENTS_CHANNEL)
                .bind(notice)
                .bind(attempt.and_then(|a| a.username_to_record()))
                .bind(&new.hash)
                .bind(meta.ip.as_deref())
                .bind(meta.user_agent.as_deref())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(ApiError::InvalidCredentials)?,
        };
        // The limit, read now that the user's row is locked: a settings change that lowers it
        // waits for this transaction, or this one sees it.
        let settings = state.settings.current();
        let (mut expired, mut over) = (Vec::new(), Vec::new());
        if let Some(limit) = settings.per_user {
            // Dead sessions neither count nor are kicked: they end for their own reason.
            expired = Vec::from(expire_sessions!(&mut *tx, &settings, now, Some(user_id), i64::MAX)?);
            match settings.policy {
                LimitPolicy::DenyNew => {
                    let live: i64 = sqlx::query_scalar(COUNT_LIVE).bind(user_id).fetch_one(&mut *tx).await?;
                    if live > limit {
                        // Rolled back: the user did not log in. The dead sessions it found end
                        // as they would have (at their own end time) by the sweeper or their
                        // next use. Logged by the login, as every outcome of one is.
                        return Err(ApiError::LimitReached);
                    }
                }
                LimitPolicy::KickOldest => {
                    over = end_sessions!(
                        &mut *tx,
                        END_USER_OVER_LIMIT,
                        now,
                        EndReason::LimitReached,
                        Some(user_id),
                        user_id,
                        limit,
                        i64::MAX
                    )?;
                }
            }
        }
        tx.commit().await?;
        if let Some(attempt) = attempt {
            attempt.set_recorded();
        }
        (session_id, now, expired, over, settings)
    });
    publish(state, &ended_expired);
    // Its `last_login` moved: cached copies of the user are stale (other instances were told
    // by the transaction).
    state.events.user_changed_here(user_id);
    // The kick is logged there (`sessions ended reason=limit_reached`), the login by the login.
    state.events.ended(&ended_over, EndReason::LimitReached);
    let row = SessionRow {
        id: session_id,
        user_id: Some(user_id),
        created_at: now,
        last_used_at: now,
        ended_at: None,
        end_reason: None,
        ended_by: None,
        ended_by_username: None,
        ip_address: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    Ok(LoggedIn { token: new, session: Session::new(row, now, &settings, Some(session_id)) })
}

/// Announces sessions ended by an expiry pass.
pub(crate) fn publish(state: &AppState, ended: &[(Ended, EndReason)]) {
    for (sessions, reason) in ended {
        state.events.ended(sessions, *reason);
    }
}

/// Ends one session if it is live; true when this call ended it.
pub async fn end_one(state: &AppState, id: i64, reason: EndReason, by: Option<i64>, at: Micros) -> ApiResult<bool> {
    let ended = with_db!(&state.db, |pool| end_sessions!(pool, END_ONE, at, reason, by, id))?;
    state.events.ended(&ended, reason);
    Ok(!ended.is_empty())
}

/// Ends every live session of a user (`revoked`), with an activity-stream entry when any was
/// live.
pub async fn revoke_all_of_user(state: &AppState, user_id: i64, author: &Author) -> ApiResult<usize> {
    let now = state.clock.now();
    let settings = state.settings.current();
    let (ended, expired) = with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
        // Sessions already past their end keep the reason they ended with.
        let expired = expire_sessions!(&mut *tx, &settings, now, Some(user_id), i64::MAX)?;
        let ended = end_sessions!(&mut *tx, END_USER, now, EndReason::Revoked, author.user_id(), user_id)?;
        // Nothing ended, nothing to audit (a no-op writes no entry, as for the settings).
        if !ended.is_empty() {
            let changes = serde_json::json!({ "active_sessions": [ended.len(), 0] });
            record_activity!(&mut *tx, now, &author.entry("revoke", "session", Some(user_id), changes))?;
        }
        tx.commit().await?;
        (ended, expired)
    });
    publish(state, &expired);
    state.events.ended(&ended, EndReason::Revoked);
    Ok(ended.len())
}

/// Ends one live session (`revoked`), with an activity-stream entry; false when it was not
/// live (unknown, or already ended: it keeps its reason).
pub async fn revoke_one(state: &AppState, session_id: i64, author: &Author) -> ApiResult<bool> {
    let now = state.clock.now();
    let settings = state.settings.current();
    let found: Option<Option<i64>> = with_db!(&state.db, |pool| {
        sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1").bind(session_id).fetch_optional(pool).await
    })?;
    let Some(user_id) = found else { return Ok(false) };
    let (ended, expired) = with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
        // A session already past its end keeps the reason it ended with.
        let expired = match user_id {
            Some(user_id) => expire_sessions!(&mut *tx, &settings, now, Some(user_id), i64::MAX)?,
            None => [(Vec::new(), EndReason::TimeoutReached), (Vec::new(), EndReason::MaxAgeReached)],
        };
        let ended = end_sessions!(&mut *tx, END_ONE, now, EndReason::Revoked, author.user_id(), session_id)?;
        if !ended.is_empty() {
            let changes = serde_json::json!({ "session": [session_id, null] });
            record_activity!(&mut *tx, now, &author.entry("revoke", "session", user_id, changes))?;
        }
        tx.commit().await?;
        (ended, expired)
    });
    publish(state, &expired);
    state.events.ended(&ended, EndReason::Revoked);
    Ok(!ended.is_empty())
}

/// Ends the sessions that are past their idle or absolute end (all users, or one), in
/// batches; returns how many ended.
pub async fn expire(state: &AppState, user_id: Option<i64>) -> ApiResult<usize> {
    let settings = state.settings.current();
    let mut total = 0;
    loop {
        let now = state.clock.now();
        let ended = with_db!(&state.db, |pool| expire_sessions!(pool, &settings, now, user_id, BATCH))?;
        publish(state, &ended);
        let n = ended.iter().map(|(sessions, _)| sessions.len()).max().unwrap_or(0);
        total += ended.iter().map(|(sessions, _)| sessions.len()).sum::<usize>();
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// True when `after` allows fewer concurrent sessions per user than `before`.
pub fn limit_tightened(before: &Snapshot, after: &Snapshot) -> bool {
    match (before.per_user, after.per_user) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(old), Some(new)) => new < old,
    }
}

/// Applies a settings change to the sessions that exist: a lower limit ends the sessions
/// now over it (oldest first), a shorter idle timeout or lifetime ends those now past it.
///
/// Run by the process that made the change and again by every other process when it
/// installs the change (`settings::reload`): logins it let in under the old values while
/// the change was on its way end then. Idempotent: sessions already within the new values
/// stay, so a second run ends nothing more. It writes no activity-stream entry (the change
/// itself is recorded by whoever made it); `by` is who ended the sessions (`ended_by`).
pub async fn settings_changed(state: &AppState, before: &Snapshot, after: &Snapshot, by: Option<i64>) -> ApiResult<()> {
    if let Some(limit) = after.per_user.filter(|_| limit_tightened(before, after)) {
        let now = state.clock.now();
        let ended = with_db!(&state.db, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            if !dialect.for_update.is_empty() {
                // Wait for logins in flight (they hold their user's row) so none commits
                // over the new limit after this statement has run.
                sqlx::query(
                    "SELECT id FROM users WHERE id IN (SELECT user_id FROM sessions WHERE ended_at IS NULL) \
                     ORDER BY id FOR UPDATE",
                )
                .execute(&mut *tx)
                .await?;
            }
            // Sessions already past their end neither count nor change their reason.
            let expired = expire_sessions!(&mut *tx, after, now, None, i64::MAX)?;
            let ended = end_sessions!(&mut *tx, END_ALL_OVER_LIMIT, now, EndReason::LimitReached, by, limit)?;
            tx.commit().await?;
            publish(state, &expired);
            ended
        });
        // Logged there (`sessions ended reason=limit_reached`); the change itself by the settings.
        state.events.ended(&ended, EndReason::LimitReached);
    }
    let shorter_idle = after.token_expiration < before.token_expiration;
    let shorter_life = match (before.max_age, after.max_age) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(old), Some(new)) => new < old,
    };
    if shorter_idle || shorter_life {
        expire(state, None).await?;
    }
    Ok(())
}
