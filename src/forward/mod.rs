//! Bouncer in front of other applications: forward-auth for reverse proxies
//! (`GET /api/v2/auth/verify/`, in [`verify`]) and token introspection in RFC 7662's shape for
//! back ends (`POST /api/v2/auth/introspect/`, in [`introspect`]).
//!
//! Nothing here has state or SQL of its own: credentials are read by `auth::Caller` and
//! tokens checked by `sessions::authenticate`, so a proxied request is limited, timed out
//! and told why exactly as a request to the API is. The proxy configurations that use these
//! endpoints are in `docs/FORWARD_AUTH.md` and `docs/examples/`.

mod introspect;
mod verify;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
pub use verify::{X_AUTH_REASON, X_AUTH_SESSION_ID, X_AUTH_USER, X_AUTH_USER_ID};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(verify::router()).merge(introspect::router())
}
