//! The activity stream: who changed what, when, and from where (API, CLI or a settings
//! file). Entries are written in the transaction of the change they record.

pub(crate) mod handlers;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use handlers::router;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Api,
    Cli,
    File,
}

impl Origin {
    pub fn code(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Cli => "cli",
            Origin::File => "file",
        }
    }
}

/// Who made a change: a user, or nobody (the CLI, a settings file).
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub id: Option<i64>,
    pub username: Option<String>,
}

impl Actor {
    pub fn user(user: &crate::users::User) -> Actor {
        Actor { id: Some(user.id), username: Some(user.username.clone()) }
    }
}

/// Who made a change and from where.
#[derive(Debug, Clone)]
pub struct Author {
    pub actor: Actor,
    pub origin: Origin,
}

impl Author {
    /// A user, through the API.
    pub fn api(user: &crate::users::User) -> Author {
        Author { actor: Actor::user(user), origin: Origin::Api }
    }

    /// The command line (no user).
    pub fn cli() -> Author {
        Author { actor: Actor::default(), origin: Origin::Cli }
    }

    /// The user's id, for `ended_by` and `updated_by`.
    pub fn user_id(&self) -> Option<i64> {
        self.actor.id
    }

    pub fn entry(
        &self,
        operation: &'static str,
        object: &'static str,
        object_id: Option<i64>,
        changes: Value,
    ) -> Entry<'_> {
        Entry { origin: self.origin, actor: &self.actor, operation, object, object_id, category: None, changes }
    }
}

/// One entry to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub origin: Origin,
    pub actor: &'a Actor,
    /// `create`, `update`, `delete`, `revoke`.
    pub operation: &'static str,
    /// `setting`, `user`, `session`.
    pub object: &'static str,
    pub object_id: Option<i64>,
    pub category: Option<&'static str>,
    /// `{field: [old, new]}`.
    pub changes: Value,
}

pub const INSERT: &str = "INSERT INTO activity_stream \
    (timestamp, actor_id, actor_username, origin, operation, object, object_id, category, changes) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Records `$entry` (an [`Entry`]) at `$now` on `$conn`, in the caller's transaction;
/// evaluates to `Result<(), sqlx::Error>`.
#[macro_export]
macro_rules! record_activity {
    ($conn:expr, $now:expr, $entry:expr) => {{
        let entry: &$crate::activity::Entry = $entry;
        sqlx::query($crate::activity::INSERT)
            .bind($now)
            .bind(entry.actor.id)
            .bind(entry.actor.username.as_deref())
            .bind(entry.origin.code())
            .bind(entry.operation)
            .bind(entry.object)
            .bind(entry.object_id)
            .bind(entry.category)
            .bind(entry.changes.to_string())
            .execute($conn)
            .await
            .map(|_| ())
    }};
}
