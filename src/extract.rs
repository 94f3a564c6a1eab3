//! Extractors whose rejections use the API's error shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Json<T>` whose rejections are [`ApiError`]s: 415 without a JSON content type, 413 over
/// the body limit, 400 for malformed JSON.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

pub fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        JsonRejection::JsonSyntaxError(err) => {
            ApiError::BadRequest(format!("JSON parse error - {}", source_text(&err)))
        }
        JsonRejection::JsonDataError(err) => ApiError::BadRequest(format!("Invalid data - {}", source_text(&err))),
        other => ApiError::BadRequest(other.body_text()),
    }
}

fn source_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text = inner.to_string();
        source = inner.source();
    }
    text
}

/// A JSON object body as a map, for endpoints that report every bad field at once.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Reads a string field of a JSON object; records "required" or a type error.
pub fn string_field<'a>(body: &'a JsonObject, field: &str, errors: &mut crate::error::Errors) -> Option<&'a str> {
    match body.get(field) {
        None | Some(serde_json::Value::Null) => {
            errors.add(field, "This field is required.");
            None
        }
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => {
            errors.add(field, "Not a valid string.");
            None
        }
    }
}

/// Reads an optional boolean field of a JSON object, as DRF's `BooleanField` does: `true`,
/// `false`, `1`, `0` and their string forms (AWX's CLI sends `1` and `0`).
pub fn bool_field(body: &JsonObject, field: &str, errors: &mut crate::error::Errors) -> Option<bool> {
    let value = match body.get(field) {
        None | Some(serde_json::Value::Null) => return None,
        Some(serde_json::Value::Bool(b)) => Some(*b),
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Some(serde_json::Value::String(s)) => crate::listing::parse_bool(s),
        Some(_) => None,
    };
    if value.is_none() {
        errors.add(field, "Must be a valid boolean.");
    }
    value
}

/// A numeric id from the path: a 400 for what is not a number, a 404 for a number that can
/// be no id (negative, or too large).
pub struct Id(pub i64);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Id, ApiError> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("Invalid id.".into()))?;
        let digits = raw.strip_prefix('-').unwrap_or(&raw);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::BadRequest(format!("Invalid id: {raw:?} is not a number.")));
        }
        raw.parse().map(Id).map_err(|_| ApiError::NotFound)
    }
}
