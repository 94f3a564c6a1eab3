//! Session endpoints: login, logout, one's own sessions, and a user's sessions (admin).

use axum::Form;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Redirect;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::store::{BY_ID, SESSION_COLUMNS, SESSIONS_OF_USER, SessionRow};
use super::{EndReason, Session, SessionEnded};
use crate::AppState;
use crate::activity::Author;
use crate::auth::{
    AUTH_TOKEN_TIMEOUT, Caller, ClientMeta, Credentials, QuietCaller, accepted_credentials, check_basic,
    check_password_then, cookies, token,
};
use crate::clock::{rfc3339, seconds_until};
use crate::error::{ApiError, ApiResult, ErrorBody, Errors, ValidationErrors};
use crate::extract::{ApiJson, Id, JsonObject, string_field};
use crate::listing::{Bind, Column, Kind, Listing, column};
use crate::metadata::{Field, options};
use crate::pagination::{ListParams, Page, PageParams};
use crate::users::store as users;
use crate::with_db;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login, login_options))
        .routes(routes!(logout, logout_options))
        .routes(routes!(my_sessions, my_sessions_options))
        .routes(routes!(my_events, my_events_options))
        .routes(routes!(my_session, end_my_session, my_session_options))
        .routes(routes!(user_sessions, end_user_sessions, user_sessions_options))
}

/// The reasons a session ends with.
const END_REASONS: &[&str] = &[
    "timeout_reached",
    "limit_reached",
    "logged_out",
    "revoked",
    "max_age_reached",
    "password_changed",
    "user_disabled",
];

/// A session's fields as `OPTIONS` describes them.
const FIELDS: &[Field] = &[
    Field::new("id", "integer", "ID", "Database ID for this session.").filterable(),
    Field::new("url", "string", "Url", "URL for this session."),
    Field::new("user", "field", "User", "The user's id (null once the user is deleted)."),
    Field::new("created", "datetime", "Created", "When the session was created (login).").filterable(),
    Field::new("last_used", "datetime", "Last Used", "When the session was last used.").filterable(),
    Field::new("expires", "datetime", "Expires", "When the session ends if it stays idle; null once ended."),
    Field::new("ip_address", "string", "IP Address", "Where the login came from.").filterable(),
    Field::new("user_agent", "string", "User Agent", "The client's User-Agent at login.").filterable(),
    Field::new("current", "boolean", "Current", "Whether this is the session of the request."),
    Field::new("active", "boolean", "Active", "Whether the session is live; ?active=true or false filters.")
        .filterable(),
    Field::new("ended_at", "datetime", "Ended At", "When the session ended.").filterable(),
    Field::new("reason", "choice", "Reason", "Why the session ended.").filterable().choices(END_REASONS),
    Field::new("detail", "string", "Detail", "The reason in words."),
    Field::new("ended_by", "object", "Ended By", "Who ended the session ({id, username}), null for expiry."),
];

const LOGIN_FIELDS: &[Field] = &[
    Field::new("username", "string", "Username", "").required(),
    Field::new("password", "string", "Password", "").required(),
];

/// Describe the login.
#[utoipa::path(options, path = "/api/login/", tag = "auth", responses((status = 200, description = "Metadata", body = Object)))]
async fn login_options() -> Response {
    options("Login", "Log in with a username and password.", "GET, HEAD, POST, OPTIONS", &[("POST", LOGIN_FIELDS)])
}

/// Describe the logout.
#[utoipa::path(options, path = "/api/logout/", tag = "auth", responses((status = 200, description = "Metadata", body = Object)))]
async fn logout_options() -> Response {
    options("Logout", "End the current session.", "POST, OPTIONS", &[("POST", &[])])
}

/// Describe your session list.
#[utoipa::path(options, path = "/api/v2/me/sessions/", tag = "sessions",
    responses((status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn my_sessions_options(_caller: Caller) -> Response {
    options("Session List", "Your sessions, newest first.", "GET, HEAD, OPTIONS", &[("GET", FIELDS)])
}

/// Describe one of your sessions.
#[utoipa::path(options, path = "/api/v2/me/sessions/{id}/", tag = "sessions", params(("id" = i64, Path)),
    responses((status = 404, body = ErrorBody), (status = 400, description = "The id is not a number", body = ErrorBody), (status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn my_session_options(State(state): State<AppState>, caller: Caller, Id(id): Id) -> ApiResult<Response> {
    own_session_as_stored(&state, &caller, id).await?;
    Ok(options(
        "Session Detail",
        "One of your sessions; DELETE ends it.",
        "GET, DELETE, HEAD, OPTIONS",
        &[("GET", FIELDS)],
    ))
}

/// Describe a user's session list.
#[utoipa::path(options, path = "/api/v2/users/{id}/sessions/", tag = "users", params(("id" = i64, Path)),
    responses((status = 404, body = ErrorBody), (status = 400, description = "The id is not a number", body = ErrorBody), (status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn user_sessions_options(State(state): State<AppState>, caller: Caller, Id(id): Id) -> ApiResult<Response> {
    caller.require_reader()?;
    users::by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    Ok(options(
        "User Session List",
        "A user's sessions; DELETE (superuser) ends them all.",
        "GET, DELETE, HEAD, OPTIONS",
        &[("GET", FIELDS)],
    ))
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    #[schema(min_length = 1)]
    username: String,
    #[schema(format = Password, min_length = 1)]
    password: String,
}

/// The browser's login form.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct FormLoginRequest {
    username: String,
    #[schema(format = Password)]
    password: String,
    /// Where to go after logging in: a local path, or an absolute URL on a host of
    /// `BOUNCER_ALLOWED_REDIRECT_HOSTS` (default `/api/v2/`).
    next: Option<String>,
    /// The value of the `csrftoken` cookie (or send it in `X-CSRFToken`).
    csrfmiddlewaretoken: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// The bearer token; shown only here. Send it as `Authorization: Bearer <token>`.
    token: String,
    /// When the session ends if it stays idle (or reaches its maximum lifetime).
    expires: String,
    session: Session,
}

/// A login body: JSON from scripts, or a form from browsers and AWX's CLI.
pub enum LoginInput {
    Json(JsonObject),
    Form(Vec<(String, String)>),
}

impl FromRequest<AppState> for LoginInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            let Form(fields) = Form::<Vec<(String, String)>>::from_request(req, state).await.map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(rejection.body_text())
                }
            })?;
            Ok(LoginInput::Form(fields))
        } else {
            let ApiJson(body) = ApiJson::<JsonObject>::from_request(req, state).await?;
            Ok(LoginInput::Json(body))
        }
    }
}

/// Log in with a username and password and receive a bearer token.
///
/// Creates a session. When the user is at `AUTH_TOKEN_PER_USER`, the oldest sessions end
/// (`kick_oldest`) or the login is refused with 403 (`deny_new`). Wrong password and
/// unknown user get the same answer; too many failures lock the username out (429).
///
/// A form-encoded body (`username`, `password`, `next`, and the CSRF token from the
/// `csrftoken` cookie in `csrfmiddlewaretoken` or the `X-CSRFToken` header) logs a browser
/// in instead: the token goes into the HttpOnly session cookie named in
/// `X-API-Session-Cookie-Name`, and the answer is a 303 to `next` (a local path, or an
/// absolute URL on a host of `BOUNCER_ALLOWED_REDIRECT_HOSTS`).
#[utoipa::path(post, path = "/api/login/", tag = "auth",
    request_body(content(
        (LoginRequest = "application/json"),
        (FormLoginRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in", body = LoginResponse,
            headers(("Auth-Token-Timeout" = i64, description = "Seconds until the session ends if idle"))),
        (status = 303, description = "Logged in through the form; the session cookie is set",
            headers(("Location" = String), ("X-API-Session-Cookie-Name" = String), ("Set-Cookie" = String))),
        (status = 400, description = "Missing fields, or malformed JSON (`{\"detail\"}`)", body = ValidationErrors),
        (status = 401, description = "Invalid credentials", body = ErrorBody),
        (status = 403, description = "Session limit reached (deny_new), or CSRF verification failed (form)", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a form", body = ErrorBody),
        (status = 429, description = "Locked out after too many failed logins", body = ErrorBody,
            headers(("Retry-After" = i64))),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
    input: LoginInput,
) -> ApiResult<Response> {
    match input {
        LoginInput::Json(body) => {
            let mut errors = Errors::default();
            let username = string_field(&body, "username", &mut errors);
            let password = string_field(&body, "password", &mut errors);
            // As DRF's CharField: a blank field is an error of its own (not a failed login).
            for (name, value) in [("username", username), ("password", password)] {
                if value == Some("") {
                    errors.add(name, "This field may not be blank.");
                }
            }
            errors.finish()?;
            let logged_in = log_in(&state, &meta, username.unwrap_or_default(), password.unwrap_or_default()).await?;
            let now = state.clock.now();
            let ends_at = super::store::end_of(now, now, &state.settings.current()).0;
            let body = LoginResponse {
                token: logged_in.token.token.clone(),
                expires: rfc3339(ends_at),
                session: logged_in.session,
            };
            let mut response = axum::Json(body).into_response();
            let headers = response.headers_mut();
            headers.insert(AUTH_TOKEN_TIMEOUT, HeaderValue::from(seconds_until(now, ends_at)));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        LoginInput::Form(fields) => {
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            if !cookies::csrf_passes(&headers, field(cookies::CSRF_FIELD), meta.peer_trusted, &state) {
                return Err(ApiError::CsrfFailed);
            }
            let mut errors = Errors::default();
            for name in ["username", "password"] {
                if field(name).is_none_or(str::is_empty) {
                    errors.add(name, "This field is required.");
                }
            }
            errors.finish()?;
            let logged_in =
                log_in(&state, &meta, field("username").unwrap_or_default(), field("password").unwrap_or_default())
                    .await?;
            let mut response =
                Redirect::to(&cookies::safe_next(field("next"), &state.config.allowed_redirect_hosts)).into_response();
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, cookies::session_cookie(Some(&logged_in.token.token), meta.secure));
            // A new CSRF token for the new session, as Django rotates it at login.
            headers.append(header::SET_COOKIE, cookies::csrf_cookie(&cookies::new_csrf_token(), meta.secure));
            headers.insert("x-api-session-cookie-name", HeaderValue::from_static(cookies::SESSION_COOKIE));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
    }
}

/// Checks the password and creates the session; counts the attempt in the metrics and logs
/// it, once, whatever its outcome.
async fn log_in(state: &AppState, meta: &ClientMeta, username: &str, password: &str) -> ApiResult<super::LoggedIn> {
    crate::observe::record_actor(None, username);
    let mut user_id = None;
    let result = async {
        let meta = meta.clone();
        let (id, created) = check_password_then(state, username, password, |state, id, attempt| async move {
            super::create(&state, id, &meta, Some(&attempt)).await
        })
        .await?;
        user_id = Some(id);
        crate::observe::record_actor_id(id);
        created
    }
    .await;
    let outcome = crate::observe::LoginOutcome::of(&result);
    state.metrics.login(outcome);
    match &result {
        Ok(logged_in) => {
            tracing::info!(outcome = outcome.code(), user_id, username, session_id = logged_in.session.id, "logged in")
        }
        Err(err) => tracing::info!(outcome = outcome.code(), user_id, username, error = %err, "login failed"),
    }
    result
}

/// End the current session.
///
/// The session ends with `logged_out`, and the session cookie is cleared. Logging out a
/// session that has already ended is also 204.
#[utoipa::path(post, path = "/api/logout/", tag = "auth",
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "No credentials, or a token that matches no session", body = ErrorBody),
        (status = 403, description = "CSRF verification failed (session cookie without the CSRF token)", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn logout(State(state): State<AppState>, meta: ClientMeta, headers: HeaderMap) -> ApiResult<Response> {
    let presented = match accepted_credentials(&state, &headers)? {
        Some(Credentials::Basic { username, password }) => {
            check_basic(&state, &username, &password).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some(Credentials::Token(token)) => token,
        None => {
            let token = cookies::cookie(&headers, cookies::SESSION_COOKIE).ok_or(ApiError::NotAuthenticated)?;
            if !cookies::csrf_passes(&headers, None, meta.peer_trusted, &state) {
                return Err(ApiError::CsrfFailed);
            }
            token.to_owned()
        }
    };
    let hash = token::digest(&presented);
    let found: Option<(i64, Option<i64>, Option<String>)> = with_db!(&state.db, |pool| {
        sqlx::query_as(
            "SELECT s.id, s.user_id, u.username FROM sessions s LEFT JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1",
        )
        .bind(&hash[..])
        .fetch_optional(pool)
        .await
    })?;
    let (id, user_id, username) = found.ok_or(ApiError::SessionEnded(EndReason::InvalidToken))?;
    if let Some(username) = &username {
        crate::observe::record_actor(user_id, username);
    }
    // A session already past its end keeps the reason it ended with.
    if let Some(user_id) = user_id {
        super::expire(&state, Some(user_id)).await?;
    }
    // Logged once, as every ending is: `sessions ended reason=logged_out` (`Events::ended`).
    super::end_one(&state, id, EndReason::LoggedOut, user_id, state.clock.now()).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if cookies::cookie(&headers, cookies::SESSION_COOKIE).is_some() {
        response.headers_mut().insert(header::SET_COOKIE, cookies::session_cookie(None, meta.secure));
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SessionFilter {
    /// `true` for live sessions only, `false` for ended ones only.
    active: Option<String>,
}

impl SessionFilter {
    fn active(&self) -> ApiResult<Option<bool>> {
        match self.active.as_deref() {
            None => Ok(None),
            Some("true" | "True" | "1") => Ok(Some(true)),
            Some("false" | "False" | "0") => Ok(Some(false)),
            Some(_) => Err(ApiError::field("active", "Must be true or false.")),
        }
    }
}

/// The columns a session list can be filtered and ordered by.
pub(crate) const COLUMNS: &[Column] = &[
    column("id", "s.id", Kind::Integer),
    column("created", "s.created_at", Kind::Time),
    column("last_used", "s.last_used_at", Kind::Time),
    column("ended_at", "s.ended_at", Kind::Time),
    column("reason", "s.end_reason", Kind::Text),
    column("ip_address", "s.ip_address", Kind::Text),
    column("user_agent", "s.user_agent", Kind::Text),
    // Ordering only: `?active=` is the endpoint's own filter (`SESSIONS_OF_USER`'s `$2`).
    column("active", "(s.ended_at IS NULL)", Kind::Boolean),
];

/// Lists a user's sessions, newest first, after ending those that are past their end.
async fn list(
    state: &AppState,
    uri: &Uri,
    user_id: i64,
    current: Option<i64>,
    params: &PageParams,
    filter: &SessionFilter,
) -> ApiResult<Page<Session>> {
    let active = filter.active()?;
    let request = params.resolve()?;
    let listing = Listing::parse(uri.query(), COLUMNS, &["active"], "s.created_at DESC, s.id DESC", 3)?;
    super::expire(state, Some(user_id)).await?;
    let fixed = [Bind::Integer(user_id), Bind::MaybeBoolean(active)];
    let (request, count, rows): (_, _, Vec<SessionRow>) =
        listing.fetch(&state.db, &fixed, SESSION_COLUMNS, SESSIONS_OF_USER, request).await?;
    let (now, settings) = (state.clock.now(), state.settings.current());
    let results = rows.into_iter().map(|row| Session::new(row, now, &settings, current)).collect();
    Ok(Page::new(uri, request, count, results))
}

/// Your sessions, newest first.
///
/// Each says whether it is `active`, whether it is the `current` one (the session of this
/// request), and for ended ones when and why they ended (`reason`, `detail`, `ended_by`).
#[utoipa::path(get, path = "/api/v2/me/sessions/", tag = "sessions", params(PageParams, SessionFilter, ListParams),
    responses((status = 200, body = Page<Session>), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn my_sessions(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(params): Query<PageParams>,
    Query(filter): Query<SessionFilter>,
) -> ApiResult<axum::Json<Page<Session>>> {
    let current = caller.session.map(|s| s.id);
    Ok(axum::Json(list(&state, &uri, caller.user.id, current, &params, &filter).await?))
}

/// Reads a session the caller may see: one of their own, or any for a superuser (another
/// user's session is "not found" to everyone else, the system auditor included). Its user's
/// sessions past their end are ended first, so the row says how it ended.
async fn own_session(state: &AppState, caller: &Caller, id: i64) -> ApiResult<SessionRow> {
    let row = own_session_as_stored(state, caller, id).await?;
    match row.user_id {
        Some(user_id) if super::expire(state, Some(user_id)).await? > 0 => {
            own_session_as_stored(state, caller, id).await
        }
        _ => Ok(row),
    }
}

/// The session as stored, if the caller may see it (see [`own_session`]), without ending
/// the sessions past their end first: enough to know that it is there.
async fn own_session_as_stored(state: &AppState, caller: &Caller, id: i64) -> ApiResult<SessionRow> {
    let row: Option<SessionRow> =
        with_db!(&state.db, |pool| sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await)?;
    row.filter(|row| row.user_id == Some(caller.user.id) || caller.user.is_superuser).ok_or(ApiError::NotFound)
}

/// One of your sessions (any user's, for a superuser).
#[utoipa::path(get, path = "/api/v2/me/sessions/{id}/", tag = "sessions", params(("id" = i64, Path)),
    responses((status = 400, description = "The id is not a number", body = ErrorBody), (status = 401, description = "Not authenticated, or the session ended", body = ErrorBody), (status = 200, body = Session), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn my_session(State(state): State<AppState>, caller: Caller, Id(id): Id) -> ApiResult<axum::Json<Session>> {
    let row = own_session(&state, &caller, id).await?;
    let settings = state.settings.current();
    Ok(axum::Json(Session::new(row, state.clock.now(), &settings, caller.session.map(|s| s.id))))
}

/// End one of your sessions (for instance one left open on another machine).
///
/// It ends with `revoked`; its client is told so. Ending an ended session is also 204. A
/// superuser may end anyone's session here (the `url` of each session in a user's session
/// list); that revocation goes into the activity stream.
#[utoipa::path(delete, path = "/api/v2/me/sessions/{id}/", tag = "sessions", params(("id" = i64, Path)),
    responses((status = 400, description = "The id is not a number", body = ErrorBody), (status = 401, description = "Not authenticated, or the session ended", body = ErrorBody), (status = 204, description = "Ended"), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn end_my_session(State(state): State<AppState>, caller: Caller, Id(id): Id) -> ApiResult<StatusCode> {
    let row = own_session(&state, &caller, id).await?;
    if row.user_id == Some(caller.user.id) {
        super::end_one(&state, id, EndReason::Revoked, Some(caller.user.id), state.clock.now()).await?;
    } else {
        super::revoke_one(&state, id, &Author::api(&caller.user)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A user's sessions, newest first (superuser or system auditor).
#[utoipa::path(get, path = "/api/v2/users/{id}/sessions/", tag = "users",
    params(("id" = i64, Path), PageParams, SessionFilter, ListParams),
    responses((status = 400, description = "The id is not a number", body = ErrorBody), (status = 401, description = "Not authenticated, or the session ended", body = ErrorBody), (status = 200, body = Page<Session>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn user_sessions(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Id(id): Id,
    Query(params): Query<PageParams>,
    Query(filter): Query<SessionFilter>,
) -> ApiResult<axum::Json<Page<Session>>> {
    caller.require_reader()?;
    users::by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    let current = caller.session.map(|s| s.id);
    Ok(axum::Json(list(&state, &uri, id, current, &params, &filter).await?))
}

/// End every session of a user (superuser); they end with `revoked`.
#[utoipa::path(delete, path = "/api/v2/users/{id}/sessions/", tag = "users", params(("id" = i64, Path)),
    responses((status = 400, description = "The id is not a number", body = ErrorBody), (status = 401, description = "Not authenticated, or the session ended", body = ErrorBody), (status = 204, description = "Ended"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn end_user_sessions(State(state): State<AppState>, caller: Caller, Id(id): Id) -> ApiResult<StatusCode> {
    caller.require_superuser()?;
    users::by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    // Logged by `Events::ended` (`sessions ended reason=revoked`), in a span naming the admin.
    super::revoke_all_of_user(&state, id, &Author::api(&caller.user)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An event's fields as `OPTIONS` describes them.
const EVENT_FIELDS: &[Field] = &[
    Field::new("session_id", "integer", "Session ID", "The session that ended."),
    Field::new("reason", "choice", "Reason", "Why it ended (a reason code).").choices(END_REASONS),
    Field::new("detail", "string", "Detail", "The reason in words."),
];

/// Describe your event stream.
#[utoipa::path(options, path = "/api/v2/me/events/", tag = "sessions",
    responses((status = 200, description = "Metadata", body = Object), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn my_events_options(_caller: Caller) -> Response {
    options(
        "Session Events",
        "Live `session_ended` events for your sessions, as `text/event-stream`.",
        "GET, HEAD, OPTIONS",
        &[("GET", EVENT_FIELDS)],
    )
}

/// Live events for your sessions (Server-Sent Events).
///
/// A `session_ended` event with `{session_id, reason, detail}` the moment any of your
/// sessions ends, on this instance or another. Listening does not move the idle timer, and
/// the stream ends after the event for its own session.
#[utoipa::path(get, path = "/api/v2/me/events/", tag = "sessions",
    responses(
        (status = 200, description = "`text/event-stream` of `session_ended` events", content_type = "text/event-stream",
            body = SessionEnded),
        (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn my_events(
    State(state): State<AppState>,
    QuietCaller(caller): QuietCaller,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let user_id = caller.user.id;
    let own = caller.session.map(|s| s.id);
    let receiver = state.events.subscribe();
    let resync = state.events.resyncs();
    // Subscribed: now look once whether our session ended in between, so no end is missed.
    let already = own_end(&state, own, user_id).await;
    let listening = Listening { receiver, resync, first: already, done: false, closing: state.closing.clone() };
    let stream = futures_util::stream::unfold(listening, move |mut listening| {
        let state = state.clone();
        async move {
            if listening.done || *listening.closing.borrow() {
                return None;
            }
            let event = match listening.first.take() {
                Some(event) => event,
                None => loop {
                    tokio::select! {
                        received = listening.receiver.recv() => match received {
                            Ok(event) if event.user_id == Some(user_id) => break event,
                            Ok(_) => continue,
                            // Events were dropped (a burst of thousands of endings outran this
                            // stream): its own session's may have been among them.
                            Err(RecvError::Lagged(_)) => match own_end(&state, own, user_id).await {
                                Some(event) => break event,
                                None => continue,
                            },
                            Err(RecvError::Closed) => return None,
                        },
                        // Notices from other instances may have been missed (the listener
                        // reconnected): look again too.
                        changed = listening.resync.changed() => match changed {
                            Ok(()) => match own_end(&state, own, user_id).await {
                                Some(event) => break event,
                                None => continue,
                            },
                            Err(_) => return None,
                        },
                        // The server is shutting down: end the stream (the page reconnects).
                        _ = listening.closing.changed() => return None,
                    }
                },
            };
            listening.done = Some(event.session_id) == own;
            let sse = Event::default().event("session_ended").json_data(&event).unwrap_or_default();
            Some((Ok(sse), listening))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The event for the stream's own session when it has ended (read from the database).
async fn own_end(state: &AppState, own: Option<i64>, user_id: i64) -> Option<SessionEnded> {
    let id = own?;
    let reason: Option<Option<String>> = with_db!(&state.db, |pool| {
        sqlx::query_scalar(super::store::END_REASON).bind(id).fetch_optional(pool).await
    })
    .unwrap_or(None);
    let reason = reason.flatten().as_deref().and_then(EndReason::from_code)?;
    Some(SessionEnded { session_id: id, user_id: Some(user_id), reason, detail: reason.detail() })
}

/// Where an event stream stands: its subscription, an event to send first, whether its own
/// session has ended, and the server's shutdown signal.
struct Listening {
    receiver: tokio::sync::broadcast::Receiver<SessionEnded>,
    resync: tokio::sync::watch::Receiver<u64>,
    first: Option<SessionEnded>,
    done: bool,
    closing: tokio::sync::watch::Receiver<bool>,
}
