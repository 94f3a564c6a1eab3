//! Who is calling: credentials from the request (Bearer or Tower's `Token` header, HTTP
//! Basic), password checks with lockout, and the [`Caller`] extractor handlers ask for.

pub mod cookies;
pub mod lockout;
pub mod password;
pub mod token;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tracing::Instrument;

use crate::AppState;
use crate::clock::{Micros, seconds_until};
use crate::error::{ApiError, ApiResult};
use crate::sessions::{self, EndReason};
use crate::users::{User, Username, store as users};
use crate::with_db;

pub const AUTH_TOKEN_TIMEOUT: HeaderName = HeaderName::from_static("auth-token-timeout");
pub const SESSION_QUIET: &str = "x-session-quiet";

/// Credentials as presented. `Debug` never shows the secrets.
pub enum Credentials {
    Token(String),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token([redacted])"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, [redacted])"),
        }
    }
}

/// The credentials a request presents, as Bouncer accepts them now: [`credentials`], except
/// that while `AUTH_BASIC_ENABLED` is false a `Basic` header is refused with
/// `basic_auth_disabled` before it is decoded, malformed or not. What such a client needs to
/// hear is that Basic is off; that its header is also broken does not help it, and a client
/// whose every Basic request fails (say with an empty password) should not be told
/// `invalid_credentials` and go looking for a typo.
pub fn accepted_credentials(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<Credentials>> {
    if is_basic(headers) && !state.settings.current().basic_enabled {
        return Err(ApiError::BasicAuthDisabled);
    }
    credentials(headers)
}

/// Whether the `Authorization` header names the Basic scheme, whatever follows it: read as
/// bytes, so that a value that is not even text counts too.
fn is_basic(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION) else { return false };
    let scheme = value.as_bytes().trim_ascii().split(|byte| *byte == b' ').next().unwrap_or_default();
    scheme.eq_ignore_ascii_case(b"basic")
}

/// Reads the `Authorization` header. `Ok(None)` when there is none (or its scheme is not
/// one Bouncer knows). Only parses: a handler acting on it goes through
/// [`accepted_credentials`], which also refuses Basic while it is disabled.
pub fn credentials(headers: &HeaderMap) -> ApiResult<Option<Credentials>> {
    let Some(value) = headers.get(AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| ApiError::SessionEnded(EndReason::InvalidToken))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        if rest.is_empty() || rest.contains(' ') {
            return Err(ApiError::SessionEnded(EndReason::InvalidToken));
        }
        Ok(Some(Credentials::Token(rest.to_owned())))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).ok().and_then(|bytes| String::from_utf8(bytes).ok());
        let (username, password) =
            decoded.as_deref().and_then(|pair| pair.split_once(':')).ok_or(ApiError::InvalidCredentials)?;
        Ok(Some(Credentials::Basic { username: username.to_owned(), password: password.to_owned() }))
    } else {
        Ok(None)
    }
}

/// Checks a username and password (login or HTTP Basic), with the lockout and the same
/// argon2 work whether or not the user exists. Returns the user's id.
pub async fn check_password(state: &AppState, username: &str, password: &str) -> ApiResult<i64> {
    let (id, ()) = check_password_then(state, username, password, |_, _, _| async {}).await?;
    Ok(id)
}

/// [`check_password`], then, when the password is right, `then` with the user's id and the
/// attempt, which `then` may record in a transaction of its own (the login does, in the
/// session's: see [`record_success!`](crate::record_success)); a success `then` did not
/// record is recorded after it. Returns the user's id and what `then` returned. When the
/// hasher's queue is full it is refused at once (`busy`), before any database statement.
///
/// All of it runs in a task of its own, so a client that hangs up mid-check still has its
/// attempt recorded (and its place among the checks in flight released); the task runs in
/// the caller's span, so its log lines carry the request id.
///
/// Logs nothing of the outcome but a lockout starting: the caller (the login, HTTP Basic)
/// logs the attempt once, knowing what it was.
#[tracing::instrument(skip_all)]
pub async fn check_password_then<T, F, Fut>(
    state: &AppState,
    username: &str,
    password: &str,
    then: F,
) -> ApiResult<(i64, T)>
where
    T: Send + 'static,
    F: FnOnce(AppState, i64, Arc<lockout::Attempt>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
{
    // The hasher's place first, before the lockout's grant: a login the hasher could not take
    // anyway is refused (503 `busy`) without a database statement. Taken after the grant,
    // each refusal cost a grant and its release, two writes that a flood of made-up usernames
    // queued, on SQLite, behind the one write lock that token checks need too. The place is
    // held through the grant (a wait for checks in flight on the username included) and spent
    // on the hash, so the queue's bound holds as before.
    let place = state.passwords.reserve().map_err(|_| ApiError::Busy)?;
    let (state, username, password) = (state.clone(), username.to_owned(), password.to_owned());
    let check = async move {
        if Username::parse(&username).is_err() {
            // No such user can exist (and PostgreSQL refuses some such text, NUL say): the
            // same work as a wrong password, and no database at all.
            place.verify(&password, None).await?;
            return Err(ApiError::InvalidCredentials);
        }
        let settings = state.settings.current();
        let (attempt, found) =
            lockout::begin(&state.db, &state.gates, state.clock.as_ref(), &username, &settings).await?;
        let attempt = Arc::new(attempt);
        let user_id = found.as_ref().map(|(id, _, _)| *id);
        let outdated =
            found.as_ref().map(|(_, hash, _)| hash).filter(|hash| state.passwords.needs_rehash(hash)).cloned();
        let checked = async {
            let matches = place.verify(&password, found.as_ref().map(|(_, hash, _)| hash.as_str())).await?;
            Ok::<_, ApiError>(found.filter(|(_, _, active)| *active && matches).map(|(id, _, _)| id))
        }
        .await;
        if let Ok(Some(id)) = checked {
            let then = then(state.clone(), id, attempt.clone()).await;
            if !attempt.is_recorded() {
                attempt.finish(&state.db, state.clock.now(), Some(true)).await?;
            }
            if let Some(outdated) = outdated {
                tokio::spawn(upgrade_hash(state.clone(), id, outdated, password).in_current_span());
            }
            return Ok((id, then));
        }
        // An error (database down) is not the user's failure: record it as neither.
        let outcome = checked.as_ref().ok().map(|_| false);
        if attempt.finish(&state.db, state.clock.now(), outcome).await? {
            state.metrics.lockout();
            tracing::info!(
                user_id,
                username,
                failures = settings.failure_limit,
                seconds = settings.lockout / crate::clock::MICROS_PER_SECOND,
                "username locked out"
            );
        }
        Err(checked.err().unwrap_or(ApiError::InvalidCredentials))
    };
    tokio::spawn(check.in_current_span()).await.map_err(|err| ApiError::Internal(err.into()))?
}

/// Re-hashes a user's password with the current argon2 parameters once a login has proved
/// it, when it was stored with others (as Django does): raising `BOUNCER_ARGON2_*` reaches
/// every user at their next login, and users hashed with other costs stop taking a
/// different time to check than unknown ones. Off the login's path and best effort: with
/// the hasher's queue full it waits for the next login, and a password changed meanwhile
/// wins (the update applies only to the hash it replaces).
async fn upgrade_hash(state: AppState, user_id: i64, outdated: String, password: String) {
    let Ok(place) = state.passwords.reserve() else { return };
    let hash = match place.hash(&password).await {
        Ok(hash) => hash,
        Err(err) => return tracing::warn!(user_id, %err, "password hash upgrade failed"),
    };
    let updated = with_db!(&state.db, |pool| {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(&hash)
            .bind(user_id)
            .bind(&outdated)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    });
    match updated {
        Ok(1) => tracing::info!(user_id, "password hash upgraded to the current argon2 parameters"),
        Ok(_) => {} // changed meanwhile
        Err(err) => tracing::warn!(user_id, %err, "password hash upgrade failed"),
    }
}

/// [`check_password`] for HTTP Basic, which logs its failures (a success would be a line
/// per request).
pub async fn check_basic(state: &AppState, username: &str, password: &str) -> ApiResult<i64> {
    let checked = check_password(state, username, password).await;
    if let Err(err) = &checked {
        let outcome = crate::observe::LoginOutcome::of(&checked);
        tracing::info!(username, outcome = outcome.code(), error = %err, "basic authentication failed");
    }
    checked
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The session of a token-authenticated request; `None` for HTTP Basic.
    pub session: Option<SessionAuth>,
}

#[derive(Debug, Clone, Copy)]
pub struct SessionAuth {
    pub id: i64,
    /// When the session ends if it stays idle from now.
    pub ends_at: Micros,
}

impl Caller {
    pub fn require_superuser(&self) -> ApiResult<()> {
        if self.user.is_superuser { Ok(()) } else { Err(ApiError::PermissionDenied) }
    }

    /// Superusers and system auditors may read everything.
    pub fn require_reader(&self) -> ApiResult<()> {
        if self.user.is_superuser || self.user.is_system_auditor { Ok(()) } else { Err(ApiError::PermissionDenied) }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let quiet = parts.headers.get(SESSION_QUIET).is_some_and(|v| v.as_bytes() == b"1");
        let caller = match accepted_credentials(state, &parts.headers)? {
            None => match cookies::cookie(&parts.headers, cookies::SESSION_COOKIE) {
                Some(token) => {
                    // Django's rule: a request the session cookie authenticates must prove it
                    // comes from our own pages before it may change anything.
                    if cookies::is_unsafe(&parts.method)
                        && !cookies::csrf_passes(&parts.headers, None, cookies::peer_trusted(parts, state), state)
                    {
                        // A cookie whose session has ended is told why, as every request
                        // with it is; looked at quietly, so a forged request moves no timer.
                        sessions::authenticate(state, token, true).await?;
                        return Err(ApiError::CsrfFailed);
                    }
                    sessions::authenticate(state, token, quiet).await?
                }
                None => return Err(ApiError::NotAuthenticated),
            },
            Some(Credentials::Token(token)) => sessions::authenticate(state, &token, quiet).await?,
            // Basic is enabled, or `accepted_credentials` would have refused it.
            Some(Credentials::Basic { username, password }) => {
                let id = check_basic(state, &username, &password).await?;
                let user = users::by_id(&state.db, id).await?.ok_or(ApiError::InvalidCredentials)?;
                Caller { user, session: None }
            }
        };
        // Who acts, in the request's span, for requests that may change something (a read
        // would pay for it on every request and log nothing at INFO).
        if !matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS) {
            crate::observe::record_actor(Some(caller.user.id), &caller.user.username);
        }
        if let Some(slot) = parts.extensions.get::<AuthSlot>() {
            let _ = slot.0.set(Authenticated {
                user_id: caller.user.id,
                username: caller.user.username.clone(),
                is_superuser: caller.user.is_superuser,
                is_system_auditor: caller.user.is_system_auditor,
                session_id: caller.session.map(|s| s.id),
                timeout: caller.session.map(|s| seconds_until(state.clock.now(), s.ends_at)),
            });
        }
        Ok(caller)
    }
}

/// A [`Caller`] whose request never moves the idle timer, whatever its headers (the event
/// stream: a browser's `EventSource` cannot send `X-Session-Quiet`).
#[derive(Debug, Clone)]
pub struct QuietCaller(pub Caller);

impl FromRequestParts<AppState> for QuietCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<QuietCaller> {
        parts.headers.insert(SESSION_QUIET, HeaderValue::from_static("1"));
        Ok(QuietCaller(Caller::from_request_parts(parts, state).await?))
    }
}

/// Who a request turned out to be, as the [`Caller`] extractor found: for the
/// `Auth-Token-Timeout` header and for the pages of the browsable API.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: i64,
    pub username: String,
    pub is_superuser: bool,
    pub is_system_auditor: bool,
    /// The session of a token or cookie; `None` for HTTP Basic.
    pub session_id: Option<i64>,
    /// Seconds until that session ends if idle.
    pub timeout: Option<i64>,
}

/// Where the extractor leaves [`Authenticated`]; middleware put it in the request first.
#[derive(Clone, Default)]
pub struct AuthSlot(pub Arc<OnceLock<Authenticated>>);

impl AuthSlot {
    /// The slot of a request, added if the request has none yet.
    pub fn of(request: &mut Request) -> AuthSlot {
        request.extensions_mut().get_or_insert_default::<AuthSlot>().clone()
    }

    pub fn get(&self) -> Option<&Authenticated> {
        self.0.get()
    }
}

/// Adds `Auth-Token-Timeout` to every response of a token-authenticated request.
pub async fn timeout_header(mut request: Request, next: Next) -> Response {
    let slot = AuthSlot::of(&mut request);
    let mut response = next.run(request).await;
    if let Some(seconds) = slot.get().and_then(|a| a.timeout) {
        response.headers_mut().insert(AUTH_TOKEN_TIMEOUT, HeaderValue::from(seconds));
    }
    response
}

/// Where a request comes from, for the session record and the cookies.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Cookies set in the response must be `Secure`.
    pub secure: bool,
    /// The peer is a trusted proxy (`BOUNCER_TRUSTED_PROXIES`), whose `X-Forwarded-*` count.
    pub peer_trusted: bool,
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<ClientMeta, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let ip = peer.map(|peer| client_ip(peer, &parts.headers, &state.config.trusted_proxies));
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect());
        let peer_trusted = cookies::peer_trusted(parts, state);
        let secure = cookies::secure(&parts.headers, peer_trusted, state);
        Ok(ClientMeta { ip: ip.map(|ip| ip.to_string()), user_agent, secure, peer_trusted })
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
}
