//! Forward-auth: the question a reverse proxy asks before it passes a request on (nginx
//! `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`). The proxy forwards the
//! client's `Authorization` and `Cookie`; the answer is 200 with who the caller is in
//! headers, or the usual 401 with the reason in `X-Auth-Reason` as well as in the body.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::metadata::options;

pub const X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
pub const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
pub const X_AUTH_SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");
pub const X_AUTH_REASON: HeaderName = HeaderName::from_static("x-auth-reason");
pub const X_AUTH_LOGIN_URL: HeaderName = HeaderName::from_static("x-auth-login-url");

/// Where the proxy says the refused request was going: nginx's `X-Original-URI` (set in the
/// example to `$request_uri`), or the `X-Forwarded-Uri` that Traefik and Caddy send.
const ORIGINAL_URI: [HeaderName; 2] =
    [HeaderName::from_static("x-original-uri"), HeaderName::from_static("x-forwarded-uri")];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify, verify_options))
}

/// Who a verified request is; the same as the `X-Auth-*` headers.
#[derive(Serialize, ToSchema)]
pub struct Verified {
    /// The user's name (`X-Auth-User`).
    username: String,
    /// The user's id (`X-Auth-User-Id`).
    user_id: i64,
    /// The session's id (`X-Auth-Session-Id`); null for HTTP Basic, which has no session.
    session_id: Option<i64>,
}

/// Describe the forward-auth endpoint.
#[utoipa::path(options, path = "/api/v2/auth/verify/", tag = "auth",
    responses((status = 200, description = "Metadata", body = Object)))]
async fn verify_options() -> Response {
    options("Verify", "Forward-auth for reverse proxies.", "GET, HEAD, OPTIONS", &[])
}

/// Forward-auth for reverse proxies: is this request's caller logged in?
///
/// A reverse proxy (nginx `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`)
/// calls this for every request it protects, passing on the client's `Authorization` header
/// (`Bearer` or `Token`, or HTTP Basic while `AUTH_BASIC_ENABLED`) and `Cookie` (the browser
/// session cookie). It counts as a use of the session: the idle timer moves, unless the
/// request says `X-Session-Quiet: 1`. HEAD answers the same without a body.
///
/// 200: the user is in `X-Auth-User`, `X-Auth-User-Id` and `X-Auth-Session-Id` (absent for
/// Basic), for the proxy to hand to the application. Otherwise the usual error, with its
/// `reason` (`not_authenticated`, `limit_reached`, `timeout_reached`, `invalid_token`, ...)
/// also in `X-Auth-Reason`, where a proxy can read it without parsing the body. A 401 also
/// carries `X-Auth-Login-Url`: the login page with the reason and, when the proxy said where
/// the request was going (`X-Original-URI` or `X-Forwarded-Uri`, a path), that path as `next`,
/// URL-encoded, for the proxy to redirect a browser to.
#[utoipa::path(get, path = "/api/v2/auth/verify/", tag = "auth",
    responses(
        (status = 200, description = "The caller is logged in", body = Verified,
            headers(
                ("X-Auth-User" = String, description = "The username"),
                ("X-Auth-User-Id" = i64, description = "The user's id"),
                ("X-Auth-Session-Id" = i64, description = "The session's id; absent for HTTP Basic"),
                ("Auth-Token-Timeout" = i64, description = "Seconds until the session ends if idle"))),
        (status = 401, description = "No credentials, wrong ones, or a session that ended; the reason is in the body and in `X-Auth-Reason`",
            body = ErrorBody, headers(("X-Auth-Reason" = String, description = "The reason code"),
                ("X-Auth-Login-Url" = String, description = "The login page, with `reason` and `next`"))),
        (status = 429, description = "HTTP Basic for a username locked out after failed logins", body = ErrorBody,
            headers(("Retry-After" = i64), ("X-Auth-Reason" = String))),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn verify(caller: Result<Caller, ApiError>, request: HeaderMap) -> Response {
    let mut response = match caller {
        Ok(caller) => {
            let body = Verified {
                username: caller.user.username.clone(),
                user_id: caller.user.id,
                session_id: caller.session.map(|s| s.id),
            };
            let mut response = axum::Json(body).into_response();
            let headers = response.headers_mut();
            // Usernames are letters (any script), digits and `@.+-_`: no control characters,
            // so the bytes always make a header value.
            if let Ok(user) = HeaderValue::from_bytes(caller.user.username.as_bytes()) {
                headers.insert(X_AUTH_USER, user);
            }
            headers.insert(X_AUTH_USER_ID, HeaderValue::from(caller.user.id));
            if let Some(session) = caller.session {
                headers.insert(X_AUTH_SESSION_ID, HeaderValue::from(session.id));
            }
            response
        }
        Err(error) => {
            let reason = error.reason();
            let mut response = error.into_response();
            if let Some(reason) = reason {
                response.headers_mut().insert(X_AUTH_REASON, HeaderValue::from_static(reason));
                if response.status() == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(X_AUTH_LOGIN_URL, login_url(reason, &request));
                }
            }
            response
        }
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `/api/login/?reason=…&next=…`, `next` being the path the proxy named, URL-encoded whole, so
/// that none of its own parameters is lost (nginx cannot escape `$request_uri` itself). A value
/// that is not a local path is left out; the login page checks `next` again in any case.
fn login_url(reason: &str, request: &HeaderMap) -> HeaderValue {
    let next = ORIGINAL_URI
        .iter()
        .find_map(|name| request.get(name))
        .and_then(|value| value.to_str().ok())
        .filter(|path| path.starts_with('/') && !path.starts_with("//"));
    let mut query = vec![("reason", reason)];
    query.extend(next.map(|next| ("next", next)));
    // Only ASCII comes out of the encoding, which always makes a header value.
    let query = serde_urlencoded::to_string(query).unwrap_or_default();
    HeaderValue::try_from(format!("/api/login/?{query}")).unwrap_or(HeaderValue::from_static("/api/login/"))
}
