//! The roots of the API (`/api/`, `/api/v2/`) and the health endpoints.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(api_root))
        .routes(routes!(v2_root))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Serialize, ToSchema)]
pub struct ApiRoot {
    description: &'static str,
    current_version: &'static str,
    available_versions: Value,
}

/// The versions of the API (AWX's version root).
#[utoipa::path(get, path = "/api/", tag = "root", responses((status = 200, body = ApiRoot)))]
async fn api_root() -> axum::Json<ApiRoot> {
    axum::Json(ApiRoot {
        description: "Bouncer REST API: session limits, idle expiry and logout reasons",
        current_version: "/api/v2/",
        available_versions: json!({ "v2": "/api/v2/" }),
    })
}

/// Links to the resources of version 2.
#[utoipa::path(get, path = "/api/v2/", tag = "root", responses((status = 200, body = Object)))]
async fn v2_root() -> axum::Json<Value> {
    axum::Json(json!({
        "login": "/api/login/",
        "logout": "/api/logout/",
        "me": "/api/v2/me/",
        "sessions": "/api/v2/me/sessions/",
        "users": "/api/v2/users/",
        "settings": "/api/v2/settings/",
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
    if state.db.ping().await {
        Ok((StatusCode::OK, axum::Json(Health { status: "ready" })))
    } else {
        Err(ApiError::Unavailable(sqlx::Error::PoolTimedOut))
    }
}
