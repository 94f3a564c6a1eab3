//! Users: the model, its SQL, and the user endpoints (`/api/v2/users/`, `/api/v2/me/`).

pub(crate) mod handlers;
pub mod model;
pub mod store;

pub use handlers::router;
pub use model::{Password, User, UserView, Username};

use serde_json::{Map, Value, json};
use sqlx::AssertSqlSafe;

use crate::AppState;
use crate::activity::Author;
use crate::error::{ApiError, ApiResult};
use crate::sessions::{self, EndReason};
use crate::{end_sessions, expire_sessions, record_activity, with_db};

const RETURNING: &str =
    "RETURNING id, username, is_superuser, is_system_auditor, is_active, created_at, modified_at, last_login_at";

/// Creates a user with a parsed username and password (API, CLI and first start), with its
/// activity-stream entry.
pub async fn create(
    state: &AppState,
    username: &Username,
    password: &Password,
    is_superuser: bool,
    is_system_auditor: bool,
    author: &Author,
) -> ApiResult<User> {
    let password_hash = state.passwords.hash(password.expose()).await?;
    let now = state.clock.now();
    let user: User = with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
        let user: User = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO users (username, password_hash, is_superuser, is_system_auditor, is_active, created_at, \
             modified_at) VALUES ($1, $2, $3, $4, TRUE, $5, $5) {RETURNING}"
        )))
        .bind(username.as_str())
        .bind(&password_hash)
        .bind(is_superuser)
        .bind(is_system_auditor)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| store::on_username_taken(err, "username"))?;
        let changes = json!({
            "username": [null, user.username],
            "is_superuser": [null, is_superuser],
            "is_system_auditor": [null, is_system_auditor],
        });
        record_activity!(&mut *tx, now, &author.entry("create", "user", Some(user.id), changes))?;
        tx.commit().await?;
        user
    });
    tracing::info!(user_id = user.id, username = %user.username, is_superuser, is_system_auditor, by = author.actor.username.as_deref(), "user created");
    Ok(user)
}

/// Deletes a user: the user's sessions end with `user_disabled` and are kept.
pub async fn delete(state: &AppState, id: i64, author: &Author) -> ApiResult<()> {
    let now = state.clock.now();
    let by = author.user_id();
    let settings = state.settings.current();
    let (ended, expired) = with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
        // Sessions already past their end keep the reason they ended with.
        let expired = expire_sessions!(&mut *tx, &settings, now, Some(id), i64::MAX)?;
        let ended = end_sessions!(&mut *tx, sessions::store::END_USER, now, EndReason::UserDisabled, by, id)?;
        let username: Option<String> = sqlx::query_scalar("DELETE FROM users WHERE id = $1 RETURNING username")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(username) = username else { return Err(ApiError::NotFound) };
        record_activity!(
            &mut *tx,
            now,
            &author.entry("delete", "user", Some(id), json!({"username": [username, null]}))
        )?;
        tx.commit().await?;
        (ended, expired)
    });
    sessions::publish(state, &expired);
    state.events.ended(&ended, EndReason::UserDisabled);
    tracing::info!(user_id = id, by, "user deleted");
    Ok(())
}

/// Parsed changes to a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Changes {
    pub username: Option<Username>,
    pub password: Option<Password>,
    pub is_active: Option<bool>,
    pub is_superuser: Option<bool>,
    pub is_system_auditor: Option<bool>,
}

impl Changes {
    /// Whether applying these to `user` changes anything (a new password always does).
    fn modifies(&self, user: &User) -> bool {
        self.password.is_some()
            || self.username.as_ref().is_some_and(|name| name.as_str() != user.username)
            || self.is_active.is_some_and(|value| value != user.is_active)
            || self.is_superuser.is_some_and(|value| value != user.is_superuser)
            || self.is_system_auditor.is_some_and(|value| value != user.is_system_auditor)
    }
}

/// Applies `changes` in one transaction with what they mean for the user's sessions: a new
/// password ends them with `password_changed`, deactivation with `user_disabled`.
pub async fn update(state: &AppState, id: i64, changes: &Changes, author: &Author) -> ApiResult<User> {
    let by = author.user_id();
    let password_hash = match &changes.password {
        Some(password) => Some(state.passwords.hash(password.expose()).await?),
        None => None,
    };
    let now = state.clock.now();
    let settings = state.settings.current();
    let (user, ended_password, ended_disabled, expired) = with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
        // Sessions already past their end keep the reason they ended with.
        let expired = expire_sessions!(&mut *tx, &settings, now, Some(id), i64::MAX)?;
        let old: User =
            sqlx::query_as(store::BY_ID).bind(id).fetch_optional(&mut *tx).await?.ok_or(ApiError::NotFound)?;
        // `modified` moves only when something does (a PATCH of `{}` or of the same values
        // changes nothing, as it writes no activity entry).
        let modified = if changes.modifies(&old) { now } else { old.modified_at };
        let updated = sqlx::query_as::<_, User>(concat!(
            "UPDATE users SET username = COALESCE($1, username), password_hash = COALESCE($2, password_hash), ",
            "is_active = COALESCE($3, is_active), is_superuser = COALESCE($4, is_superuser), ",
            "is_system_auditor = COALESCE($5, is_system_auditor), modified_at = $6 WHERE id = $7 ",
            "RETURNING id, username, is_superuser, is_system_auditor, is_active, created_at, modified_at, last_login_at"
        ))
        .bind(changes.username.as_ref().map(Username::as_str))
        .bind(password_hash.as_deref())
        .bind(changes.is_active)
        .bind(changes.is_superuser)
        .bind(changes.is_system_auditor)
        .bind(modified)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|err| store::on_username_taken(err, "username"))?
        .ok_or(ApiError::NotFound)?;
        // A deactivated user's sessions end as disabled, even when the password changed too.
        let disabled = if changes.is_active == Some(false) {
            end_sessions!(&mut *tx, sessions::store::END_USER, now, EndReason::UserDisabled, by, id)?
        } else {
            Vec::new()
        };
        let changed = if password_hash.is_some() {
            end_sessions!(&mut *tx, sessions::store::END_USER, now, EndReason::PasswordChanged, by, id)?
        } else {
            Vec::new()
        };
        let diff = activity_changes(&old, &updated, changes.password.is_some());
        if !diff.is_empty() {
            record_activity!(&mut *tx, now, &author.entry("update", "user", Some(id), Value::Object(diff)))?;
        }
        tx.commit().await?;
        (updated, changed, disabled, expired)
    });
    sessions::publish(state, &expired);
    state.events.ended(&ended_disabled, EndReason::UserDisabled);
    state.events.ended(&ended_password, EndReason::PasswordChanged);
    state.events.user_changed(id);
    if changes.password.is_some() {
        tracing::info!(user_id = id, by, "password changed");
    }
    if changes.is_active == Some(false) {
        tracing::info!(user_id = id, by, "user deactivated");
    }
    Ok(user)
}

/// `{field: [old, new]}` between two versions of a user; a password shows only that it changed.
fn activity_changes(old: &User, new: &User, password: bool) -> Map<String, Value> {
    let mut diff = Map::new();
    let mut field = |name: &str, old: Value, new: Value| {
        if old != new {
            diff.insert(name.to_owned(), json!([old, new]));
        }
    };
    field("username", json!(old.username), json!(new.username));
    field("is_active", json!(old.is_active), json!(new.is_active));
    field("is_superuser", json!(old.is_superuser), json!(new.is_superuser));
    field("is_system_auditor", json!(old.is_system_auditor), json!(new.is_system_auditor));
    if password {
        diff.insert("password".to_owned(), json!(["$encrypted$", "$encrypted$"]));
    }
    diff
}
