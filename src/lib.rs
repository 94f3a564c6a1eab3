//! Bouncer: a session-limits server. [`app`] builds the router over an [`AppState`]; the
//! binary (`main.rs`) only parses the command line and calls [`cli::run`].

pub mod activity;
pub mod auth;
pub mod browse;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod forward;
pub mod listing;
pub mod metadata;
pub mod observe;
mod openapi;
pub mod pagination;
mod root;
pub mod server;
pub mod sessions;
pub mod settings;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::password::Passwords;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Db;
use crate::error::ApiError;
use crate::sessions::Events;
use crate::settings::Settings;

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every request handler shares: one `Arc`, so that handing it to a request costs one
/// reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub clock: SharedClock,
    pub events: Events,
    pub passwords: Arc<Passwords>,
    pub gates: Arc<auth::lockout::Gates>,
    /// Becomes true when the server shuts down, so that endless responses (event streams)
    /// end and the shutdown does not wait for them.
    pub closing: tokio::sync::watch::Receiver<bool>,
    closer: Arc<tokio::sync::watch::Sender<bool>>,
    pub config: Arc<Config>,
    /// The Prometheus counters (`GET /metrics`).
    pub metrics: observe::Metrics,
}

impl AppState {
    /// Builds the state over a migrated database, loading the stored settings and the
    /// settings files (an invalid file is an error: `FILE:LINE: KEY: message` lines).
    pub async fn new(db: Db, config: Config, clock: SharedClock) -> anyhow::Result<AppState> {
        let files = match &config.conf_dir {
            Some(dir) => settings::FileLayer::load(dir).map_err(|errors| anyhow::anyhow!("{errors}"))?,
            None => settings::FileLayer::default(),
        };
        let (stored, version) = settings::load_stored(&db).await?;
        let (closer, closing) = tokio::sync::watch::channel(false);
        Ok(AppState(Arc::new(Shared {
            passwords: Passwords::new(config.argon2)?,
            events: Events::new(
                &db,
                sessions::cache::SessionCache::new(config.session_cache_ttl, config.session_cache_size),
            ),
            db,
            settings: Settings::new(&stored, files, config.conf_dir.clone(), version),
            clock,
            gates: Arc::default(),
            closing,
            closer: Arc::new(closer),
            config: Arc::new(config),
            metrics: observe::Metrics::default(),
        })))
    }
}

impl AppState {
    /// Tells the endless responses to end: the server is shutting down.
    pub fn close(&self) {
        let _ = self.closer.send(true);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bouncer", description = "Session limits, idle expiry and logout reasons behind a REST API."),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Log in and out"),
        (name = "sessions", description = "Your sessions"),
        (name = "users", description = "Users and their sessions"),
        (name = "settings", description = "Session settings"),
        (name = "activity", description = "The audit trail"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            let mut bearer = Http::new(HttpAuthScheme::Bearer);
            bearer.description = Some("`Authorization: Bearer <token>` with the token from `POST /api/login/`".into());
            components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
            components.add_security_scheme(
                "token",
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "Authorization",
                    "Tower's scheme: `Authorization: Token <token>` with the token from `POST /api/login/`",
                ))),
            );
            let mut basic = Http::new(HttpAuthScheme::Basic);
            basic.description = Some("HTTP Basic, while `AUTH_BASIC_ENABLED` is true; creates no session".into());
            components.add_security_scheme("basic", SecurityScheme::Http(basic));
        }
    }
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(root::router())
        .merge(sessions::router())
        .merge(users::router())
        .merge(settings::router())
        .merge(activity::router())
        .merge(forward::router())
        .merge(browse::router())
        .merge(observe::metrics::router())
}

/// The OpenAPI document, generated from the routes (committed as `openapi/openapi.json`).
pub fn openapi() -> serde_json::Value {
    openapi::finish(routes().into_openapi())
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let (router, api) = routes().split_for_parts();
    let api = openapi::finish(api);
    let api = router
        .merge(SwaggerUi::new("/api/docs").external_url_unchecked("/api/openapi.json", api))
        .route("/api/v2/{resource}/", axum::routing::any(awx_probe))
        .route("/static/{file}", axum::routing::get(browse::asset))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(auth::timeout_header))
        // A request (its body included) that takes longer than this is answered 408.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(30),
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Tells the outer `observe` which route matched, for the metrics' labels.
        .layer(observe::NoteRouteLayer)
        .with_state(state.clone());
    // `observe` (outermost) gives the request its id and times it; the span that carries the
    // id through every log line of the request is the trace layer's.
    browse::wrap(api, state.clone())
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(observe::span::<axum::body::Body>)
                .on_request(observe::on_request::<axum::body::Body>),
        )
        .layer(observe::ObserveLayer(state))
}

/// Answers the `OPTIONS` that AWX's CLI sends to AWX resources Bouncer does not have (see
/// [`metadata::AWX_PROBES`]); anything else under an unknown name is 404.
async fn awx_probe(method: axum::http::Method, axum::extract::Path(resource): axum::extract::Path<String>) -> Response {
    if method == axum::http::Method::OPTIONS && metadata::AWX_PROBES.contains(&resource.as_str()) {
        metadata::options(&resource, "Not provided by Bouncer.", "OPTIONS", &[])
    } else {
        ApiError::NotFound.into_response()
    }
}

/// Gives the errors that axum's own extractors produce (a bad path or query parameter, ...)
/// the API's JSON shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    let detail = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("Error").to_owned() + ".",
        text => text.to_owned(),
    };
    let mut fixed = (status, axum::Json(serde_json::json!({ "detail": detail }))).into_response();
    for (name, value) in parts.headers.iter().filter(|(name, _)| *name != CONTENT_TYPE && *name != "content-length") {
        fixed.headers_mut().append(name, value.clone());
    }
    fixed
}
