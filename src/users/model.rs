//! A user, as stored and as the API shows it, and the parsed inputs that create or change one.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::{Micros, rfc3339};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub is_superuser: bool,
    pub is_system_auditor: bool,
    pub is_active: bool,
    pub created_at: Micros,
    pub modified_at: Micros,
    pub last_login_at: Option<Micros>,
}

/// A user in the API (AWX's shape, without the fields Bouncer has no use for).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: i64,
    /// Always `user`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub url: String,
    pub related: UserRelated,
    pub username: String,
    pub is_superuser: bool,
    pub is_system_auditor: bool,
    pub is_active: bool,
    pub created: String,
    pub modified: String,
    pub last_login: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserRelated {
    pub sessions: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: user.id,
            kind: "user",
            url: format!("/api/v2/users/{}/", user.id),
            related: UserRelated { sessions: format!("/api/v2/users/{}/sessions/", user.id) },
            username: user.username.clone(),
            is_superuser: user.is_superuser,
            is_system_auditor: user.is_system_auditor,
            is_active: user.is_active,
            created: rfc3339(user.created_at),
            modified: rfc3339(user.modified_at),
            last_login: user.last_login_at.map(rfc3339),
        }
    }
}

/// A username that Django would accept: 1 to 150 letters, digits and `@.+-_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Username, String> {
        if raw.is_empty() {
            return Err("This field may not be blank.".into());
        }
        if raw.chars().count() > 150 {
            return Err("Ensure this field has no more than 150 characters.".into());
        }
        if !raw.chars().all(|c| c.is_alphanumeric() || "@.+-_".contains(c)) {
            return Err(
                "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters."
                    .into(),
            );
        }
        Ok(Username(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: at least 8 characters (OWASP ASVS), at most 1024 bytes. Its `Debug`
/// never shows it.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

pub const MIN_PASSWORD_CHARS: usize = 8;

impl Password {
    pub fn parse(raw: &str) -> Result<Password, String> {
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            return Err(format!(
                "This password is too short. It must contain at least {MIN_PASSWORD_CHARS} characters."
            ));
        }
        if raw.len() > 1024 {
            return Err("Ensure this field has no more than 1024 bytes.".into());
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}
