//! The settings endpoints: `/api/v2/settings/` (the categories) and
//! `/api/v2/settings/{slug}/` for `authentication` and `all` (every category in one object;
//! Bouncer has one category, so both hold the same keys).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::registry::{self, CATEGORY, CATEGORY_SLUG, Kind, SETTINGS};
use super::{Origin, Snapshot};
use crate::AppState;
use crate::activity::Actor;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, Errors, ValidationErrors};
use crate::extract::{ApiJson, JsonObject};
use crate::metadata::Field;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(categories, categories_options)).routes(routes!(
        get_settings,
        put_settings,
        patch_settings,
        reset_settings,
        options_settings
    ))
}

/// Describe the settings categories.
#[utoipa::path(options, path = "/api/v2/settings/", tag = "settings",
    responses((status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn categories_options(caller: Caller) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(crate::metadata::options(
        "Setting Categories",
        "Settings categories.",
        "GET, HEAD, OPTIONS",
        &[("GET", CATEGORY_FIELDS)],
    ))
}

/// A category's fields as `OPTIONS` describes them (the list is fixed: nothing to filter).
const CATEGORY_FIELDS: &[Field] = &[
    Field::new("url", "string", "URL", "Where the category's settings are."),
    Field::new("slug", "string", "Slug", "The category's name in its URL."),
    Field::new("name", "string", "Name", "The category's name."),
];

#[derive(Serialize, ToSchema)]
pub struct Categories {
    count: usize,
    next: Option<String>,
    previous: Option<String>,
    results: Vec<Category>,
}

#[derive(Serialize, ToSchema)]
pub struct Category {
    url: String,
    slug: &'static str,
    name: &'static str,
}

/// Settings categories (superuser or system auditor).
#[utoipa::path(get, path = "/api/v2/settings/", tag = "settings",
    responses((status = 200, body = Categories), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn categories(caller: Caller) -> ApiResult<axum::Json<Categories>> {
    caller.require_reader()?;
    let results = [("all", "All"), (CATEGORY_SLUG, CATEGORY)]
        .into_iter()
        .map(|(slug, name)| Category { url: format!("/api/v2/settings/{slug}/"), slug, name })
        .collect::<Vec<_>>();
    Ok(axum::Json(Categories { count: results.len(), next: None, previous: None, results }))
}

/// The session settings, by key (effective values).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"AUTH_TOKEN_EXPIRATION": 1800, "AUTH_TOKEN_PER_USER": -1, "AUTH_BASIC_ENABLED": true,
    "AUTH_TOKEN_MAX_AGE": 0, "SESSION_LIMIT_POLICY": "kick_oldest", "AUTH_LOGIN_FAILURE_LIMIT": 10,
    "AUTH_LOGIN_LOCKOUT_SECONDS": 300}))]
#[serde(deny_unknown_fields)]
pub struct SettingValues {
    /// Idle timeout in seconds (60 ..= 30000000000).
    #[serde(rename = "AUTH_TOKEN_EXPIRATION")]
    #[schema(minimum = 60, maximum = 30000000000_i64)]
    auth_token_expiration: Option<i64>,
    /// Concurrent sessions per user: -1 unlimited, or 1 ..= 1000000.
    #[serde(rename = "AUTH_TOKEN_PER_USER")]
    #[schema(minimum = -1, maximum = 1000000)]
    auth_token_per_user: Option<i64>,
    /// HTTP Basic authentication on the API (creates no session, not limited).
    #[serde(rename = "AUTH_BASIC_ENABLED")]
    auth_basic_enabled: Option<bool>,
    /// Absolute lifetime in seconds: 0 off, or 60 ..= 30000000000.
    #[serde(rename = "AUTH_TOKEN_MAX_AGE")]
    #[schema(minimum = 0, maximum = 30000000000_i64)]
    auth_token_max_age: Option<i64>,
    /// `kick_oldest` or `deny_new`.
    #[serde(rename = "SESSION_LIMIT_POLICY")]
    #[schema(pattern = "^(kick_oldest|deny_new)$")]
    session_limit_policy: Option<String>,
    /// Consecutive failed logins before a lockout: 0 off, up to 1000.
    #[serde(rename = "AUTH_LOGIN_FAILURE_LIMIT")]
    #[schema(minimum = 0, maximum = 1000)]
    auth_login_failure_limit: Option<i64>,
    /// Lockout length in seconds (1 ..= 86400).
    #[serde(rename = "AUTH_LOGIN_LOCKOUT_SECONDS")]
    #[schema(minimum = 1, maximum = 86400)]
    auth_login_lockout_seconds: Option<i64>,
}

fn check_slug(slug: &str) -> ApiResult<()> {
    if slug == "all" || slug == CATEGORY_SLUG { Ok(()) } else { Err(ApiError::NotFound) }
}

fn effective(snapshot: &Snapshot) -> Response {
    let values: Map<String, Value> = snapshot.values().iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    axum::Json(values).into_response()
}

/// The session settings (superuser or system auditor).
///
/// Effective values: from a settings file when one defines the key, else from the
/// database, else the default. `authentication` and `all` hold the same keys.
#[utoipa::path(get, path = "/api/v2/settings/{slug}/", tag = "settings",
    params(("slug" = String, Path, description = "`authentication` or `all`")),
    responses((status = 200, body = SettingValues), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn get_settings(State(state): State<AppState>, caller: Caller, Path(slug): Path<String>) -> ApiResult<Response> {
    check_slug(&slug)?;
    caller.require_reader()?;
    Ok(effective(&state.settings.current()))
}

/// Change some session settings (superuser).
///
/// Send the keys to change; `null` resets a key to its default. Nothing is written unless
/// every key is valid; errors come back as `{KEY: [message]}`. A key defined in a settings
/// file cannot be changed here (400 naming the file). A lower `AUTH_TOKEN_PER_USER` ends
/// the sessions now over it, oldest first; a shorter `AUTH_TOKEN_EXPIRATION` or
/// `AUTH_TOKEN_MAX_AGE` ends the sessions now past it.
#[utoipa::path(patch, path = "/api/v2/settings/{slug}/", tag = "settings",
    params(("slug" = String, Path, description = "`authentication` or `all`")), request_body = SettingValues,
    responses((status = 200, body = SettingValues), (status = 400, description = "Field errors; nothing was written", body = ValidationErrors),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn patch_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<Response> {
    write(&state, &caller, &slug, &body, false).await
}

/// Replace the session settings (superuser).
///
/// Like PATCH, but every key that is not defined in a settings file must be present
/// ("This field is required.").
#[utoipa::path(put, path = "/api/v2/settings/{slug}/", tag = "settings",
    params(("slug" = String, Path, description = "`authentication` or `all`")), request_body = SettingValues,
    responses((status = 200, body = SettingValues), (status = 400, description = "Field errors; nothing was written", body = ValidationErrors),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 415, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<Response> {
    write(&state, &caller, &slug, &body, true).await
}

async fn write(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    body: &JsonObject,
    complete: bool,
) -> ApiResult<Response> {
    check_slug(slug)?;
    caller.require_superuser()?;
    let snapshot = state.settings.current();
    let changes = parse_changes(body, &snapshot, complete)?;
    let (_, after) = super::apply_changes(state, &changes, &Actor::user(&caller.user), Origin::Api, "update").await?;
    Ok(effective(&after))
}

/// Reset the session settings (superuser).
///
/// Every value stored in the database returns to its default (keys defined in settings
/// files keep their file's value). 204.
#[utoipa::path(delete, path = "/api/v2/settings/{slug}/", tag = "settings",
    params(("slug" = String, Path, description = "`authentication` or `all`")),
    responses((status = 204, description = "Reset"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn reset_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(slug): Path<String>,
) -> ApiResult<StatusCode> {
    check_slug(&slug)?;
    caller.require_superuser()?;
    super::reset_stored(&state, &Actor::user(&caller.user), Origin::Api).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Describe the session settings (superuser or system auditor), AWX style.
///
/// `actions.GET` describes every key (type, label, help text, unit, category, and whether a
/// settings file defines it); `actions.PUT`, for superusers only, the writable keys with
/// `required`, `min_value`, `max_value`, `default` and `choices`.
#[utoipa::path(options, path = "/api/v2/settings/{slug}/", tag = "settings",
    params(("slug" = String, Path, description = "`authentication` or `all`")),
    responses((status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn options_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(slug): Path<String>,
) -> ApiResult<Response> {
    check_slug(&slug)?;
    caller.require_reader()?;
    let body = metadata(&state.settings.current(), caller.user.is_superuser);
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, PUT, PATCH, DELETE, HEAD, OPTIONS"));
    Ok(response)
}

/// AWX's metadata for the settings: `actions.GET` always, `actions.PUT` when `writable`.
pub fn metadata(snapshot: &Snapshot, writable: bool) -> Value {
    let mut get = Map::new();
    let mut put = Map::new();
    for def in SETTINGS {
        let file = snapshot.defined_in_file(def.key);
        let mut field = json!({
            "type": match def.kind { Kind::Integer { .. } => "integer", Kind::Boolean => "boolean", Kind::Choice(_) => "choice" },
            "label": def.label,
            "help_text": match file {
                Some(file) => format!("{} Defined in {}; read-only here.", def.help_text, file.display()),
                None => def.help_text.to_owned(),
            },
            "category": CATEGORY,
            "category_slug": CATEGORY_SLUG,
            "defined_in_file": file.is_some(),
        });
        if let Some(unit) = def.unit {
            field["unit"] = json!(unit);
        }
        if let Kind::Choice(choices) = def.kind {
            field["choices"] = json!(choices.iter().map(|c| [c, c]).collect::<Vec<_>>());
        }
        get.insert(def.key.to_owned(), field.clone());
        if file.is_none() {
            field["required"] = json!(true);
            field["default"] = (def.default)();
            if let Kind::Integer { min, max, .. } = def.kind {
                field["min_value"] = json!(min);
                field["max_value"] = json!(max);
            }
            put.insert(def.key.to_owned(), field);
        }
    }
    let mut actions = json!({ "GET": get });
    if writable {
        actions["PUT"] = Value::Object(put);
    }
    json!({
        "name": "Setting Detail",
        "description": "Session settings: idle timeout, per-user session limit, HTTP Basic, maximum lifetime, \
                        limit policy and login lockout.",
        "renders": ["application/json"],
        "parses": ["application/json"],
        "actions": actions,
    })
}

/// Validates a map of changes against the settings in force: every key known, every value
/// valid (`null` = reset), no key defined in a file changed, and with `complete` (PUT)
/// every writable key present.
pub fn parse_changes(
    body: &JsonObject,
    snapshot: &Snapshot,
    complete: bool,
) -> ApiResult<BTreeMap<&'static str, Option<Value>>> {
    let mut errors = Errors::default();
    let mut changes = BTreeMap::new();
    for (key, value) in body {
        let Some(def) = registry::find(key) else {
            errors.add(key, "Unknown setting.");
            continue;
        };
        if let Some(file) = snapshot.defined_in_file(def.key) {
            // Sending back the value the file gives is not a change (a GET sent back as PUT).
            if snapshot.values().get(def.key) != Some(value) {
                errors.add(key, format!("This setting is defined in {} and cannot be changed here.", file.display()));
            }
            continue;
        }
        if value.is_null() {
            changes.insert(def.key, None);
        } else if let Some(value) = errors.check(key, def.parse(value)) {
            changes.insert(def.key, Some(value));
        }
    }
    if complete {
        for def in SETTINGS.iter().filter(|d| snapshot.defined_in_file(d.key).is_none() && !body.contains_key(d.key)) {
            errors.add(def.key, "This field is required.");
        }
    }
    errors.finish()?;
    Ok(changes)
}
