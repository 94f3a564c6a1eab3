//! The one error type of the API and its JSON shape: `{"detail": "...", "reason": "..."}`,
//! or the DRF field map `{"field": ["message"]}` for validation errors.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::sessions::EndReason;

/// Field name → messages, the shape Django REST framework uses for validation errors.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(FieldErrors),
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication credentials were not provided")]
    NotAuthenticated,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("basic auth disabled")]
    BasicAuthDisabled,
    /// The presented token belongs to a session that has ended, or to none.
    #[error("session ended: {0:?}")]
    SessionEnded(EndReason),
    #[error("permission denied")]
    PermissionDenied,
    /// Permission denied, with the reason the client needs (deleting yourself, ...).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("CSRF verification failed")]
    CsrfFailed,
    #[error("session limit reached")]
    LimitReached,
    #[error("not found")]
    NotFound,
    #[error("invalid page")]
    InvalidPage,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("locked out for {retry_after} s")]
    LockedOut { retry_after: i64 },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("too many logins at once")]
    Busy,
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("internal error: {0:#}")]
    Internal(#[source] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(BTreeMap::from([(field.to_owned(), vec![message.into()])]))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotAuthenticated
            | ApiError::InvalidCredentials
            | ApiError::BasicAuthDisabled
            | ApiError::SessionEnded(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied | ApiError::Forbidden(_) | ApiError::LimitReached | ApiError::CsrfFailed => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound | ApiError::InvalidPage => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::LockedOut { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) | ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `reason` code of the JSON body, where there is one.
    pub fn reason(&self) -> Option<&'static str> {
        self.detail().1
    }

    /// `(detail, reason)` of every error but the field map.
    fn detail(&self) -> (String, Option<&'static str>) {
        let fixed = |d: &str, r: &'static str| (d.to_owned(), Some(r));
        match self {
            ApiError::Validation(_) => ("Invalid input.".into(), None),
            ApiError::BadRequest(detail) => (detail.clone(), None),
            ApiError::NotAuthenticated => fixed("Authentication credentials were not provided.", "not_authenticated"),
            ApiError::InvalidCredentials => {
                fixed("Unable to log in with the provided credentials.", "invalid_credentials")
            }
            ApiError::BasicAuthDisabled => fixed("HTTP Basic authentication is disabled.", "basic_auth_disabled"),
            ApiError::SessionEnded(reason) => fixed(reason.detail(), reason.code()),
            ApiError::PermissionDenied => {
                fixed("You do not have permission to perform this action.", "permission_denied")
            }
            ApiError::Forbidden(detail) => fixed(detail, "permission_denied"),
            ApiError::LimitReached => {
                fixed("The maximum number of allowed sessions for this user has been reached.", "limit_reached")
            }
            ApiError::CsrfFailed => fixed("CSRF verification failed.", "csrf_failed"),
            ApiError::NotFound => ("Not found.".into(), None),
            ApiError::InvalidPage => ("Invalid page.".into(), None),
            ApiError::MethodNotAllowed => ("Method not allowed.".into(), None),
            ApiError::LockedOut { retry_after } => {
                (format!("Too many failed login attempts. Try again in {retry_after} seconds."), Some("locked_out"))
            }
            ApiError::UnsupportedMediaType => {
                ("Unsupported media type in request; use Content-Type: application/json.".into(), None)
            }
            ApiError::PayloadTooLarge => ("Request body is larger than 64 KiB.".into(), None),
            ApiError::Unavailable(_) => fixed("The database is unavailable; try again shortly.", "unavailable"),
            ApiError::Busy => fixed("Too many logins at once; try again in a moment.", "busy"),
            ApiError::Internal(_) => fixed("Internal server error.", "internal_error"),
        }
    }
}

/// The error body in the OpenAPI document: `detail`, and `reason` where one applies.
/// Validation errors are instead a map of field names to messages.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub detail: String,
    pub reason: Option<String>,
}

/// Validation errors in the OpenAPI document: every field in error with its messages
/// (Django REST framework's shape); nothing was written.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"AUTH_TOKEN_EXPIRATION": ["Ensure this value is greater than or equal to 60."]}))]
pub struct ValidationErrors(pub BTreeMap<String, Vec<String>>);

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            // The database is down, unreachable or saturated: the client may retry.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => ApiError::Unavailable(err),
            sqlx::Error::Database(ref db) if is_unavailable_code(db.code().as_deref()) => ApiError::Unavailable(err),
            other => ApiError::Internal(other.into()),
        }
    }
}

/// Database error codes that mean "not now" rather than "wrong": SQLite busy/locked/full,
/// PostgreSQL lock and statement timeouts, shutdown, too many connections, disk full.
fn is_unavailable_code(code: Option<&str>) -> bool {
    matches!(code, Some("5" | "6" | "13" | "517" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "53300" | "53100"))
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        if err.is::<crate::auth::password::Busy>() {
            return ApiError::Busy;
        }
        match err.downcast::<sqlx::Error>() {
            Ok(sql) => sql.into(),
            Err(other) => ApiError::Internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(_) => tracing::error!(error = ?self, "internal error"),
            ApiError::Unavailable(_) => tracing::warn!(error = %self, "database unavailable"),
            _ => {}
        }
        let body = match &self {
            ApiError::Validation(fields) => json!(fields),
            _ => match self.detail() {
                (detail, Some(reason)) => json!({ "detail": detail, "reason": reason }),
                (detail, None) => json!({ "detail": detail }),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::SessionEnded(reason) => {
                let value = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", reason.detail());
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            // RFC 6750: a 401 carries a challenge. Bearer, never Basic (browsers would cache
            // Basic credentials and log the next person in as the previous one).
            ApiError::NotAuthenticated | ApiError::InvalidCredentials | ApiError::BasicAuthDisabled => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"api\""));
            }
            ApiError::LockedOut { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::Unavailable(_) | ApiError::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Collects field errors while parsing a request; `finish` turns any into a 400.
#[derive(Debug, Default)]
pub struct Errors(FieldErrors);

impl Errors {
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_owned()).or_default().push(message.into());
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::Validation(self.0)) }
    }
}
