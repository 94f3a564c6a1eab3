//! Token introspection (RFC 7662's shape): a back end that receives a Bouncer token asks
//! whether it is live and whose it is. Asking never moves the token's idle timer; only the
//! token's own client keeps its session alive.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::clock::{MICROS_PER_SECOND, Micros};
use crate::error::{ApiError, ApiResult, ErrorBody, Errors};
use crate::extract::string_field;
use crate::metadata::{Field, options};
use crate::sessions::handlers::LoginInput;
use crate::sessions::{self, EndReason};
use crate::with_db;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(introspect, introspect_options))
}

const FIELDS: &[Field] = &[
    Field::new("token", "string", "Token", "The token to look at.").required(),
    Field::new("token_type_hint", "string", "Token Type Hint", "Ignored: Bouncer has one kind of token."),
];

/// The request, as JSON or as `application/x-www-form-urlencoded` (RFC 7662).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct IntrospectRequest {
    /// The token to look at.
    token: String,
    /// Ignored: Bouncer has one kind of token.
    token_type_hint: Option<String>,
}

/// RFC 7662's answer. An inactive token has only `active: false` and the `reason` it is not
/// active (`invalid_token` for a token Bouncer does not know).
#[derive(Serialize, ToSchema)]
pub struct Introspection {
    active: bool,
    /// Why the token is not active (a reason code); only when `active` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<EndReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    /// The user's id, as a string (RFC 7519's `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    /// When the session ends if it stays idle from now (or reaches its maximum lifetime, if
    /// sooner), in seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    /// When the session was created (the login), in seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    /// The session's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<i64>,
    /// Always `Bearer` for an active token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_superuser: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_system_auditor: Option<bool>,
}

impl Introspection {
    fn inactive(reason: EndReason) -> Introspection {
        Introspection {
            active: false,
            reason: Some(reason),
            username: None,
            sub: None,
            exp: None,
            iat: None,
            sid: None,
            token_type: None,
            is_superuser: None,
            is_system_auditor: None,
        }
    }
}

fn seconds(t: Micros) -> i64 {
    t.div_euclid(MICROS_PER_SECOND)
}

/// Describe token introspection.
#[utoipa::path(options, path = "/api/v2/auth/introspect/", tag = "auth",
    responses((status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn introspect_options(caller: Caller) -> ApiResult<Response> {
    caller.require_reader()?;
    Ok(options("Introspect", "Token introspection (RFC 7662).", "POST, OPTIONS", &[("POST", FIELDS)]))
}

/// Token introspection (RFC 7662): is this token live, and whose is it?
///
/// For a back end that receives Bouncer tokens. The caller must be a superuser or a system
/// auditor: give the back end an account of its own with the system auditor flag (the
/// read-only role), not an administrator's. The body is `token=...` form-encoded (as RFC
/// 7662 has it) or JSON `{"token": "..."}`.
///
/// Looking does not move the token's idle timer (the caller's own does move, as for any
/// request). A live token gives `{"active": true, "username", "sub", "exp", "iat", "sid",
/// "token_type": "Bearer", ...}`; any other `{"active": false, "reason"}` with the reason its
/// session ended, or `invalid_token` for a token Bouncer does not know.
#[utoipa::path(post, path = "/api/v2/auth/introspect/", tag = "auth",
    request_body(content(
        (IntrospectRequest = "application/x-www-form-urlencoded"),
        (IntrospectRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "Whether the token is active, and whose it is", body = Introspection),
        (status = 400, description = "No `token` field", body = ErrorBody),
        (status = 401, description = "The caller is not authenticated", body = ErrorBody),
        (status = 403, description = "The caller is neither a superuser nor a system auditor, or CSRF verification failed (session cookie)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn introspect(State(state): State<AppState>, caller: Caller, input: LoginInput) -> ApiResult<Response> {
    caller.require_reader()?;
    let mut errors = Errors::default();
    let token = match &input {
        LoginInput::Json(body) => {
            // Ignored, but it must be what the RFC says it is, or the request is malformed.
            if body.get("token_type_hint").is_some_and(|hint| !hint.is_string() && !hint.is_null()) {
                errors.add("token_type_hint", "Not a valid string.");
            }
            string_field(body, "token", &mut errors).map(str::to_owned)
        }
        LoginInput::Form(fields) => {
            let token = fields.iter().find(|(name, _)| name == "token").map(|(_, value)| value.clone());
            if token.is_none() {
                errors.add("token", "This field is required.");
            }
            token
        }
    };
    errors.finish()?;
    let token = token.unwrap_or_default();
    let answer = match sessions::authenticate(&state, &token, true).await {
        Ok(found) => match found.session {
            Some(session) => {
                let created: Option<Micros> = with_db!(&state.db, |pool| {
                    sqlx::query_scalar("SELECT created_at FROM sessions WHERE id = $1")
                        .bind(session.id)
                        .fetch_optional(pool)
                        .await
                })?;
                match created {
                    Some(created) => Introspection {
                        active: true,
                        reason: None,
                        username: Some(found.user.username.clone()),
                        sub: Some(found.user.id.to_string()),
                        exp: Some(seconds(session.ends_at)),
                        iat: Some(seconds(created)),
                        sid: Some(session.id),
                        token_type: Some("Bearer"),
                        is_superuser: Some(found.user.is_superuser),
                        is_system_auditor: Some(found.user.is_system_auditor),
                    },
                    // Deleted past retention between the two reads.
                    None => Introspection::inactive(EndReason::InvalidToken),
                }
            }
            None => Introspection::inactive(EndReason::InvalidToken),
        },
        Err(ApiError::SessionEnded(reason)) => Introspection::inactive(reason),
        Err(other) => return Err(other),
    };
    let mut response = axum::Json(answer).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
