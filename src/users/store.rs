//! The SQL of users.

use super::model::User;
use crate::db::Db;
use crate::error::ApiError;
use crate::with_db;

macro_rules! user_select {
    ($($rest:literal)+) => {
        concat!("SELECT id, username, is_superuser, is_system_auditor, is_active, created_at, modified_at, \
            last_login_at FROM users ", $($rest),+)
    };
}

pub const BY_ID: &str = user_select!("WHERE id = $1");
const BY_USERNAME: &str = user_select!("WHERE username = $1");
const LIST: &str = user_select!("ORDER BY id LIMIT $1 OFFSET $2");

pub async fn by_id(db: &Db, id: i64) -> Result<Option<User>, sqlx::Error> {
    with_db!(db, |pool| sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await)
}

pub async fn by_username(db: &Db, username: &str) -> Result<Option<User>, sqlx::Error> {
    with_db!(db, |pool| sqlx::query_as(BY_USERNAME).bind(username).fetch_optional(pool).await)
}

/// What a password check needs of a user: its id, its password hash, and `is_active`.
pub type Credentials = (i64, String, bool);

/// The user and the stored password hash, for a login.
pub async fn credentials(db: &Db, username: &str) -> Result<Option<Credentials>, sqlx::Error> {
    with_db!(db, |pool| {
        sqlx::query_as("SELECT id, password_hash, is_active FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(pool)
            .await
    })
}

pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    with_db!(db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await)
}

pub async fn list(db: &Db, limit: i64, offset: i64) -> Result<Vec<User>, sqlx::Error> {
    with_db!(db, |pool| sqlx::query_as(LIST).bind(limit).bind(offset).fetch_all(pool).await)
}

/// Maps the unique violation on `users.username` to a field error; other errors pass.
pub fn on_username_taken(err: sqlx::Error, field: &str) -> ApiError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::field(field, "A user with that username already exists.")
        }
        _ => err.into(),
    }
}
