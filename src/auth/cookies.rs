//! The browser side of authentication: the session cookie that holds a token, and CSRF
//! protection in Django's way (a `csrftoken` cookie that unsafe requests authenticated by
//! the session cookie must echo in `X-CSRFToken` or the `csrfmiddlewaretoken` form field).

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::AppState;

/// The cookie that holds the session token (named in `X-API-Session-Cookie-Name`).
pub const SESSION_COOKIE: &str = "bouncer_session";
pub const CSRF_COOKIE: &str = "csrftoken";
pub const CSRF_HEADER: &str = "x-csrftoken";
pub const CSRF_FIELD: &str = "csrfmiddlewaretoken";

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Whether the request's method changes state (and so needs the CSRF token when the
/// session cookie authenticates it).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// True when the `csrftoken` cookie is present and the request echoes it, in the header or
/// in `form_token`. Compared in constant time.
pub fn csrf_ok(headers: &HeaderMap, form_token: Option<&str>) -> bool {
    let Some(expected) = cookie(headers, CSRF_COOKIE) else { return false };
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).or(form_token);
    presented.is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(expected.as_bytes())))
}

pub fn new_csrf_token() -> String {
    URL_SAFE_NO_PAD.encode(super::token::random_bytes::<32>())
}

/// Whether cookies must carry `Secure`: configured so, or the request came over TLS through
/// a trusted proxy (`X-Forwarded-Proto: https`).
pub fn secure(parts_headers: &HeaderMap, peer_trusted: bool, state: &AppState) -> bool {
    state.config.cookie_secure
        || (peer_trusted
            && parts_headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p == "https"))
}

/// Whether the request's peer is a trusted proxy.
pub fn peer_trusted(parts: &Parts, state: &AppState) -> bool {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| state.config.trusted_proxies.iter().any(|net| net.contains(&c.0.ip())))
}

/// `Set-Cookie` for the session cookie (`None` clears it).
pub fn session_cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let value = match token {
        Some(token) => format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    };
    with_secure(value, secure)
}

/// `Set-Cookie` for the CSRF cookie: readable by the page's scripts, so not HttpOnly.
pub fn csrf_cookie(token: &str, secure: bool) -> HeaderValue {
    with_secure(format!("{CSRF_COOKIE}={token}; Path=/; SameSite=Lax; Max-Age=31449600"), secure)
}

fn with_secure(mut value: String, secure: bool) -> HeaderValue {
    if secure {
        value.push_str("; Secure");
    }
    HeaderValue::from_str(&value).expect("cookie values are ASCII")
}

/// The path to go to after a form login: `next` when it is a path on this server, else
/// the API root. Refuses `//host`, `/\host` and anything with a scheme (open redirects).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && !next.chars().any(|c| c.is_control()) =>
        {
            next.to_owned()
        }
        _ => "/api/v2/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/api/v2/me/")), "/api/v2/me/");
        for hostile in ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil", "/a\nb", ""] {
            assert_eq!(safe_next(Some(hostile)), "/api/v2/", "{hostile:?}");
        }
        assert_eq!(safe_next(None), "/api/v2/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; csrftoken=abc; bouncer_session=tok"));
        assert_eq!(cookie(&headers, "csrftoken"), Some("abc"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn the_csrf_token_must_match_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("csrftoken=abc"));
        assert!(!csrf_ok(&headers, None));
        assert!(csrf_ok(&headers, Some("abc")));
        assert!(!csrf_ok(&headers, Some("abd")));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("abc"));
        assert!(csrf_ok(&headers, None));
        let mut no_cookie = HeaderMap::new();
        no_cookie.insert(CSRF_HEADER, HeaderValue::from_static("abc"));
        assert!(!csrf_ok(&no_cookie, Some("abc")));
    }
}
