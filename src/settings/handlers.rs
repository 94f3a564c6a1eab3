//! The settings endpoints: the category list and `/api/v2/settings/authentication/`.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::registry::{self, CATEGORY, CATEGORY_SLUG};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiResult, ErrorBody, Errors};
use crate::extract::{ApiJson, JsonObject};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(categories)).routes(routes!(get_authentication, patch_authentication))
}

#[derive(Serialize, ToSchema)]
pub struct Categories {
    count: usize,
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
    responses((status = 200, body = Categories), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn categories(caller: Caller) -> ApiResult<axum::Json<Categories>> {
    caller.require_reader()?;
    let results =
        vec![Category { url: format!("/api/v2/settings/{CATEGORY_SLUG}/"), slug: CATEGORY_SLUG, name: CATEGORY }];
    Ok(axum::Json(Categories { count: results.len(), results }))
}

/// The effective session settings, by key.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"AUTH_TOKEN_EXPIRATION": 1800, "AUTH_TOKEN_PER_USER": -1, "AUTH_BASIC_ENABLED": true,
    "AUTH_TOKEN_MAX_AGE": 0, "SESSION_LIMIT_POLICY": "kick_oldest", "AUTH_LOGIN_FAILURE_LIMIT": 10,
    "AUTH_LOGIN_LOCKOUT_SECONDS": 300}))]
pub struct AuthenticationSettings(BTreeMap<String, Value>);

fn effective(state: &AppState) -> AuthenticationSettings {
    AuthenticationSettings(state.settings.current().values().iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

/// The session settings (superuser or system auditor).
///
/// `AUTH_TOKEN_EXPIRATION` (idle timeout, seconds), `AUTH_TOKEN_PER_USER` (-1 unlimited),
/// `AUTH_BASIC_ENABLED`, `AUTH_TOKEN_MAX_AGE` (0 off), `SESSION_LIMIT_POLICY`
/// (`kick_oldest` or `deny_new`), `AUTH_LOGIN_FAILURE_LIMIT` (0 off),
/// `AUTH_LOGIN_LOCKOUT_SECONDS`.
#[utoipa::path(get, path = "/api/v2/settings/authentication/", tag = "settings",
    responses((status = 200, body = AuthenticationSettings), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_authentication(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<AuthenticationSettings>> {
    caller.require_reader()?;
    Ok(axum::Json(effective(&state)))
}

/// Change some session settings (superuser).
///
/// Send the keys to change; `null` resets a key to its default. Nothing is written unless
/// every key is valid. A lower `AUTH_TOKEN_PER_USER` ends the sessions now over it, oldest
/// first; a shorter `AUTH_TOKEN_EXPIRATION` or `AUTH_TOKEN_MAX_AGE` ends the sessions now
/// past it.
#[utoipa::path(patch, path = "/api/v2/settings/authentication/", tag = "settings", request_body = AuthenticationSettings,
    responses((status = 200, body = AuthenticationSettings), (status = 400, description = "Field errors: {KEY: [message]}"),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
async fn patch_authentication(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<axum::Json<AuthenticationSettings>> {
    caller.require_superuser()?;
    let changes = parse_changes(&body)?;
    let (before, after) = super::apply_changes(&state, &changes, Some(caller.user.id)).await?;
    let changed: Vec<&str> =
        after.values().iter().filter(|(k, v)| before.values().get(*k) != Some(v)).map(|(k, _)| *k).collect();
    tracing::info!(by = caller.user.id, ?changed, "settings changed");
    Ok(axum::Json(effective(&state)))
}

/// Validates a map of changes: every key known, every value valid (`null` = reset).
pub fn parse_changes(body: &JsonObject) -> ApiResult<BTreeMap<&'static str, Option<Value>>> {
    let mut errors = Errors::default();
    let mut changes = BTreeMap::new();
    for (key, value) in body {
        let Some(def) = registry::find(key) else {
            errors.add(key, "Unknown setting.");
            continue;
        };
        if value.is_null() {
            changes.insert(def.key, None);
        } else if let Some(value) = errors.check(key, def.parse(value)) {
            changes.insert(def.key, Some(value));
        }
    }
    errors.finish()?;
    Ok(changes)
}
