//! `GET /api/v2/activity_stream/`.

use axum::extract::{Query, State};
use axum::http::Uri;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Origin;
use crate::AppState;
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::{ApiResult, ErrorBody};
use crate::listing::{Column, Kind, Listing, column};
use crate::metadata::{Field, options};
use crate::pagination::{ListParams, Page, PageParams};

/// The columns the activity stream can be filtered and ordered by.
pub(crate) const COLUMNS: &[Column] = &[
    column("id", "id", Kind::Integer),
    column("timestamp", "timestamp", Kind::Time),
    column("actor", "actor_id", Kind::Integer),
    column("origin", "origin", Kind::Text),
    column("operation", "operation", Kind::Text),
    column("object", "object", Kind::Text),
    column("object_id", "object_id", Kind::Integer),
    column("category", "category", Kind::Text),
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, list_options))
}

const FIELDS: &[Field] = &[
    Field::new("id", "integer", "ID", "Database ID for this entry.").filterable(),
    Field::new("timestamp", "datetime", "Timestamp", "When the change was made.").filterable(),
    Field::new("actor", "object", "Actor", "Who made the change ({id, username}); null for the CLI and files.")
        .filterable(),
    Field::new("origin", "choice", "Origin", "Where the change came from.")
        .filterable()
        .choices(&["api", "cli", "file"]),
    Field::new("operation", "choice", "Operation", "What was done.")
        .filterable()
        .choices(&["create", "update", "delete", "revoke"]),
    Field::new("object", "choice", "Object", "What it was done to.")
        .filterable()
        .choices(&["setting", "user", "session"]),
    Field::new("object_id", "integer", "Object ID", "The id of the user concerned, if any.").filterable(),
    Field::new("category", "string", "Category", "The settings category, for settings.").filterable(),
    Field::new("changes", "object", "Changes", "{field: [old, new]}."),
];

/// Describe the activity stream.
#[utoipa::path(options, path = "/api/v2/activity_stream/", tag = "activity",
    responses((status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn list_options(caller: Caller) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(options("Activity Stream", "Who changed what, when, and from where.", "GET, HEAD, OPTIONS", &[("GET", FIELDS)]))
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    timestamp: i64,
    actor_id: Option<i64>,
    actor_username: Option<String>,
    origin: String,
    operation: String,
    object: String,
    object_id: Option<i64>,
    category: Option<String>,
    changes: String,
}

/// One recorded change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityEntry {
    id: i64,
    /// Always `activity_stream`.
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    /// Who made the change; null for the CLI and settings files. `id` is null once the
    /// user is deleted.
    actor: Option<ActivityActor>,
    #[schema(value_type = Origin)]
    origin: String,
    /// `create`, `update`, `delete` or `revoke`.
    operation: String,
    /// `setting`, `user` or `session`.
    object: String,
    object_id: Option<i64>,
    category: Option<String>,
    /// `{field: [old, new]}`.
    #[schema(value_type = Object)]
    changes: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityActor {
    id: Option<i64>,
    username: String,
}

impl From<Row> for ActivityEntry {
    fn from(row: Row) -> Self {
        ActivityEntry {
            id: row.id,
            kind: "activity_stream",
            timestamp: rfc3339(row.timestamp),
            actor: row.actor_username.map(|username| ActivityActor { id: row.actor_id, username }),
            origin: row.origin,
            operation: row.operation,
            object: row.object,
            object_id: row.object_id,
            category: row.category,
            changes: serde_json::from_str(&row.changes).unwrap_or(Value::Null),
        }
    }
}

/// The activity stream, newest first (superuser or system auditor).
///
/// One entry per change: settings (with `{KEY: [old, new]}`), users (created, changed,
/// deleted) and sessions revoked by an administrator; with who made it and from where
/// (`api`, `cli`, or `file` for a reloaded settings file).
#[utoipa::path(get, path = "/api/v2/activity_stream/", tag = "activity", params(PageParams, ListParams),
    responses((status = 200, body = Page<ActivityEntry>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(params): Query<PageParams>,
) -> ApiResult<axum::Json<Page<ActivityEntry>>> {
    caller.require_reader()?;
    let request = params.resolve()?;
    let listing = Listing::parse(uri.query(), COLUMNS, &[], "id DESC", 1)?;
    let columns = "id, timestamp, actor_id, actor_username, origin, operation, object, object_id, category, changes";
    let (request, count, rows): (_, _, Vec<Row>) =
        listing.fetch(&state.db, &[], columns, "activity_stream WHERE {where}", request).await?;
    Ok(axum::Json(Page::new(&uri, request, count, rows.into_iter().map(ActivityEntry::from).collect())))
}
