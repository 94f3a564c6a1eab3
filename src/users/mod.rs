//! Users: the model, its SQL, and the user endpoints (`/api/v2/users/`, `/api/v2/me/`).

mod handlers;
pub mod model;
pub mod store;

pub use handlers::router;
pub use model::{Password, User, UserView, Username};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::sessions::{self, EndReason};
use crate::{end_sessions, with_db};

/// Creates a user with a parsed username and password (API, CLI and first start).
pub async fn create(
    state: &AppState,
    username: &Username,
    password: &Password,
    is_superuser: bool,
    is_system_auditor: bool,
) -> ApiResult<User> {
    let password_hash = state.passwords.hash(password.expose()).await?;
    let new =
        store::NewUser { username: username.as_str(), password_hash: &password_hash, is_superuser, is_system_auditor };
    let user = store::create(&state.db, &new, state.clock.now()).await?;
    tracing::info!(user_id = user.id, username = %user.username, is_superuser, is_system_auditor, "user created");
    Ok(user)
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

/// Applies `changes` in one transaction with what they mean for the user's sessions: a new
/// password ends them with `password_changed`, deactivation with `user_disabled`.
pub async fn update(state: &AppState, id: i64, changes: &Changes, by: Option<i64>) -> ApiResult<User> {
    let password_hash = match &changes.password {
        Some(password) => Some(state.passwords.hash(password.expose()).await?),
        None => None,
    };
    let now = state.clock.now();
    let (user, ended_password, ended_disabled) = with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
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
        .bind(now)
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
        tx.commit().await?;
        (updated, changed, disabled)
    });
    state.events.ended(&ended_disabled, EndReason::UserDisabled);
    state.events.ended(&ended_password, EndReason::PasswordChanged);
    if changes.password.is_some() {
        tracing::info!(user_id = id, by, "password changed");
    }
    if changes.is_active == Some(false) {
        tracing::info!(user_id = id, by, "user deactivated");
    }
    Ok(user)
}
