//! Session endpoints: login, logout, one's own sessions, and a user's sessions (admin).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::store::{BY_ID, COUNT_FOR_USER, LIST_FOR_USER, SessionRow};
use super::{EndReason, Session};
use crate::AppState;
use crate::activity::Author;
use crate::auth::{AUTH_TOKEN_TIMEOUT, Caller, ClientMeta, Credentials, check_password, credentials, token};
use crate::clock::{rfc3339, seconds_until};
use crate::error::{ApiError, ApiResult, ErrorBody, Errors};
use crate::extract::{ApiJson, JsonObject, string_field};
use crate::pagination::{Page, PageParams};
use crate::users::store as users;
use crate::with_db;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(my_sessions))
        .routes(routes!(my_session, end_my_session))
        .routes(routes!(user_sessions, end_user_sessions))
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    username: String,
    #[schema(format = Password)]
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// The bearer token; shown only here. Send it as `Authorization: Bearer <token>`.
    token: String,
    /// When the session ends if it stays idle (or reaches its maximum lifetime).
    expires: String,
    session: Session,
}

/// Log in with a username and password and receive a bearer token.
///
/// Creates a session. When the user is at `AUTH_TOKEN_PER_USER`, the oldest sessions end
/// (`kick_oldest`) or the login is refused with 403 (`deny_new`). Wrong password and
/// unknown user get the same answer; too many failures lock the username out (429).
#[utoipa::path(post, path = "/api/login/", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse,
            headers(("Auth-Token-Timeout" = i64, description = "Seconds until the session ends if idle"))),
        (status = 400, description = "Missing fields or malformed JSON"),
        (status = 401, description = "Invalid credentials", body = ErrorBody),
        (status = 403, description = "Session limit reached (deny_new)", body = ErrorBody),
        (status = 429, description = "Locked out after too many failed logins", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    ApiJson(body): ApiJson<JsonObject>,
) -> ApiResult<Response> {
    let mut errors = Errors::default();
    let username = string_field(&body, "username", &mut errors);
    let password = string_field(&body, "password", &mut errors);
    errors.finish()?;
    let (username, password) = (username.unwrap_or_default(), password.unwrap_or_default());
    let user_id = check_password(&state, username, password).await?;
    let logged_in = super::create(&state, user_id, &meta).await?;
    let now = state.clock.now();
    let ends_at = super::store::end_of(now, now, &state.settings.current()).0;
    let body =
        LoginResponse { token: logged_in.token.token.clone(), expires: rfc3339(ends_at), session: logged_in.session };
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(AUTH_TOKEN_TIMEOUT, HeaderValue::from(seconds_until(now, ends_at)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// End the current session.
///
/// The session ends with `logged_out`. Logging out a session that has already ended is
/// also 204.
#[utoipa::path(post, path = "/api/logout/", tag = "auth",
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "No credentials, or a token that matches no session", body = ErrorBody),
    ),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<StatusCode> {
    match credentials(&headers)? {
        None => Err(ApiError::NotAuthenticated),
        Some(Credentials::Basic { username, password }) => {
            if !state.settings.current().basic_enabled {
                return Err(ApiError::BasicAuthDisabled);
            }
            check_password(&state, &username, &password).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Some(Credentials::Token(presented)) => {
            let hash = token::digest(&presented);
            let found: Option<(i64, Option<i64>)> = with_db!(&state.db, |pool| {
                sqlx::query_as("SELECT id, user_id FROM sessions WHERE token_hash = $1")
                    .bind(&hash)
                    .fetch_optional(pool)
                    .await
            })?;
            let (id, user_id) = found.ok_or(ApiError::SessionEnded(EndReason::InvalidToken))?;
            if super::end_one(&state, id, EndReason::LoggedOut, user_id, state.clock.now()).await? {
                tracing::info!(session_id = id, user_id, "logged out");
            }
            Ok(StatusCode::NO_CONTENT)
        }
    }
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
    super::expire(state, Some(user_id)).await?;
    let count: i64 = with_db!(&state.db, |pool| {
        sqlx::query_scalar(COUNT_FOR_USER).bind(user_id).bind(active).fetch_one(pool).await
    })?;
    let request = request.within(count)?;
    let rows: Vec<SessionRow> = with_db!(&state.db, |pool| {
        sqlx::query_as(LIST_FOR_USER)
            .bind(user_id)
            .bind(active)
            .bind(request.size)
            .bind(request.offset())
            .fetch_all(pool)
            .await
    })?;
    let (now, settings) = (state.clock.now(), state.settings.current());
    let results = rows.into_iter().map(|row| Session::new(row, now, &settings, current)).collect();
    Ok(Page::new(uri, request, count, results))
}

/// Your sessions, newest first.
///
/// Each says whether it is `active`, whether it is the `current` one (the session of this
/// request), and for ended ones when and why they ended (`reason`, `detail`, `ended_by`).
#[utoipa::path(get, path = "/api/v2/me/sessions/", tag = "sessions", params(PageParams, SessionFilter),
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

/// Reads one of the caller's own sessions; another user's is "not found".
async fn own_session(state: &AppState, caller: &Caller, id: i64) -> ApiResult<SessionRow> {
    super::expire(state, Some(caller.user.id)).await?;
    let row: Option<SessionRow> =
        with_db!(&state.db, |pool| sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await)?;
    row.filter(|row| row.user_id == Some(caller.user.id)).ok_or(ApiError::NotFound)
}

/// One of your sessions.
#[utoipa::path(get, path = "/api/v2/me/sessions/{id}/", tag = "sessions", params(("id" = i64, Path)),
    responses((status = 200, body = Session), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn my_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Session>> {
    let row = own_session(&state, &caller, id).await?;
    let settings = state.settings.current();
    Ok(axum::Json(Session::new(row, state.clock.now(), &settings, caller.session.map(|s| s.id))))
}

/// End one of your sessions (for instance one left open on another machine).
///
/// It ends with `revoked`; its client is told so. Ending an ended session is also 204.
#[utoipa::path(delete, path = "/api/v2/me/sessions/{id}/", tag = "sessions", params(("id" = i64, Path)),
    responses((status = 204, description = "Ended"), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn end_my_session(State(state): State<AppState>, caller: Caller, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    own_session(&state, &caller, id).await?;
    super::end_one(&state, id, EndReason::Revoked, Some(caller.user.id), state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's sessions, newest first (superuser or system auditor).
#[utoipa::path(get, path = "/api/v2/users/{id}/sessions/", tag = "users",
    params(("id" = i64, Path), PageParams, SessionFilter),
    responses((status = 200, body = Page<Session>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn user_sessions(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    Path(id): Path<i64>,
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
    responses((status = 204, description = "Ended"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("token" = []), ("basic" = [])))]
async fn end_user_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    caller.require_superuser()?;
    users::by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    let ended = super::revoke_all_of_user(&state, id, &Author::api(&caller.user)).await?;
    tracing::info!(user_id = id, ended, by = caller.user.id, "sessions revoked by an administrator");
    Ok(StatusCode::NO_CONTENT)
}
