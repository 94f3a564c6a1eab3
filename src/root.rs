//! The roots of the API (`/api/`, `/api/v2/`) and the health endpoints.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::ClientMeta;
use crate::auth::cookies;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::metadata::options;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(api_root, api_root_options))
        .routes(routes!(v2_root, v2_root_options))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Describe the version root.
#[utoipa::path(options, path = "/api/", tag = "root", responses((status = 200, description = "Metadata", body = Object)))]
async fn api_root_options() -> Response {
    options("REST API", "The versions of the API.", "GET, HEAD, OPTIONS", &[])
}

/// Describe the resource links of version 2.
#[utoipa::path(options, path = "/api/v2/", tag = "root", responses((status = 200, description = "Metadata", body = Object)))]
async fn v2_root_options() -> Response {
    options("Version 2", "Links to the resources of version 2.", "GET, HEAD, OPTIONS", &[])
}

#[derive(Serialize, ToSchema)]
pub struct ApiRoot {
    description: &'static str,
    current_version: &'static str,
    available_versions: Value,
}

/// The versions of the API (AWX's version root).
///
/// Also hands out the `csrftoken` cookie that the form login and cookie-authenticated
/// writes must echo.
#[utoipa::path(get, path = "/api/", tag = "root",
    responses((status = 200, body = ApiRoot, headers(("Set-Cookie" = String, description = "`csrftoken`, when the request has none")))))]
async fn api_root(meta: ClientMeta, headers: HeaderMap) -> Response {
    let body = ApiRoot {
        description: "Bouncer REST API: session limits, idle expiry and logout reasons",
        current_version: "/api/v2/",
        available_versions: json!({ "v2": "/api/v2/" }),
    };
    let mut response = axum::Json(body).into_response();
    if cookies::cookie(&headers, cookies::CSRF_COOKIE).is_none() {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, cookies::csrf_cookie(&cookies::new_csrf_token(), meta.secure));
    }
    response
}

/// Links to the resources of version 2.
#[utoipa::path(get, path = "/api/v2/", tag = "root", responses((status = 200, body = Object)))]
async fn v2_root() -> axum::Json<Value> {
    axum::Json(json!({
        // No `login` key: AWX's CLI turns every key into a command and `login` is its own.
        "logout": "/api/logout/",
        "me": "/api/v2/me/",
        "sessions": "/api/v2/me/sessions/",
        "users": "/api/v2/users/",
        "settings": "/api/v2/settings/",
        "activity_stream": "/api/v2/activity_stream/",
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<(StatusCode, axum::Json<Health>)> {
    // Answers within a second, as probes expect, even when connecting would take longer.
    let ping = tokio::time::timeout(std::time::Duration::from_secs(1), state.db.ping()).await;
    if ping.unwrap_or(false) {
        Ok((StatusCode::OK, axum::Json(Health { status: "ready" })))
    } else {
        Err(ApiError::Unavailable(sqlx::Error::PoolTimedOut))
    }
}
