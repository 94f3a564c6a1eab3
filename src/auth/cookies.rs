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

/// Django's CSRF check whole: the request comes from this site ([`same_origin`]) and echoes
/// the `csrftoken` cookie ([`csrf_ok`]).
pub fn csrf_passes(headers: &HeaderMap, form_token: Option<&str>, peer_trusted: bool, state: &AppState) -> bool {
    same_origin(headers, peer_trusted, &state.config.allowed_redirect_hosts) && csrf_ok(headers, form_token)
}

/// Whether a browser's `Origin`, when it sent one, is this site: the request's `Host` (a
/// trusted proxy's `X-Forwarded-Host` instead, when it sends one) or a host of
/// `BOUNCER_ALLOWED_REDIRECT_HOSTS`, compared without the scheme's default port. Browsers
/// send `Origin` with every unsafe request; a client that sends none (a script) passes on to
/// the token alone. This is what the double-submit cookie cannot do by itself: a site that
/// can set cookies for ours (a sibling subdomain, or anyone on plain HTTP) can plant a
/// `csrftoken`, but cannot make the browser send another `Origin` (Django's check since 4.0).
pub fn same_origin(headers: &HeaderMap, peer_trusted: bool, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
    let (authority, default_port) = if let Some(rest) = origin.strip_prefix("https://") {
        (rest, ":443")
    } else if let Some(rest) = origin.strip_prefix("http://") {
        (rest, ":80")
    } else {
        return false; // `null` (a sandboxed frame, a redirect across sites) or nonsense
    };
    let bare = |host: &str| -> String {
        let host = host.trim().to_ascii_lowercase();
        host.strip_suffix(default_port).map(str::to_owned).unwrap_or(host)
    };
    let origin = bare(authority);
    let forwarded = peer_trusted.then(|| headers.get("x-forwarded-host")).flatten();
    let host = forwarded.or_else(|| headers.get(header::HOST)).and_then(|v| v.to_str().ok());
    // A proxy's list names the host the client asked for first.
    let host = host.and_then(|h| h.split(',').next()).map(bare);
    host.is_some_and(|host| host == origin) || allowed.iter().any(|allowed| bare(allowed) == origin)
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
    peer_trusted_in(&parts.extensions, state)
}

/// [`peer_trusted`], from a request's extensions.
pub fn peer_trusted_in(extensions: &axum::http::Extensions, state: &AppState) -> bool {
    extensions
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

/// Where to go after a form login: `next` when it is a path on this server, or an absolute
/// `http(s)://` URL whose host (`host` or `host:port`, as written in the URL) is in `allowed`
/// (`BOUNCER_ALLOWED_REDIRECT_HOSTS`); else the API root. Refuses `//host`, `/\host`, user
/// info (`https://allowed@evil`), backslashes, whitespace and control characters anywhere,
/// and every other scheme (open redirects).
pub fn safe_next(next: Option<&str>, allowed: &[String]) -> String {
    const ROOT: &str = "/api/v2/";
    let Some(next) = next else { return ROOT.to_owned() };
    if next.contains('\\') || next.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return ROOT.to_owned();
    }
    if next.starts_with('/') && !next.starts_with("//") {
        return next.to_owned();
    }
    if allowed_absolute(next, allowed) { next.to_owned() } else { ROOT.to_owned() }
}

/// Whether `url` is `http(s)://AUTHORITY` followed by nothing or by a path, query or
/// fragment, with AUTHORITY one of `allowed` (compared without case; a host listed without
/// a port also matches the scheme's default port written out).
fn allowed_absolute(url: &str, allowed: &[String]) -> bool {
    let lower = url.to_ascii_lowercase();
    let (rest, default_port) = if let Some(rest) = lower.strip_prefix("https://") {
        (rest, "443")
    } else if let Some(rest) = lower.strip_prefix("http://") {
        (rest, "80")
    } else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if !is_authority(authority) {
        return false;
    }
    allowed.iter().any(|host| {
        authority == host.as_str()
            || authority
                .strip_suffix(default_port)
                .and_then(|a| a.strip_suffix(':'))
                .is_some_and(|a| a == host.as_str())
    })
}

/// A URL authority without user info: a host name or IPv4 address, or a bracketed IPv6
/// address, with an optional numeric port. Nothing that could hide another host (`@`, `%`,
/// a backslash, whitespace) passes.
pub fn is_authority(authority: &str) -> bool {
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, "")) => (address.parse::<std::net::Ipv6Addr>().is_ok(), None),
            Some((address, rest)) => (address.parse::<std::net::Ipv6Addr>().is_ok(), Some(rest.strip_prefix(':'))),
            None => return false,
        },
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(Some(port))),
                None => (authority, None),
            };
            let labels_ok = host
                .split('.')
                .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            (labels_ok, port)
        }
    };
    // `None`: no port; `Some(None)`: something other than `:` after `]`.
    let port_ok = match port {
        None => true,
        Some(Some(port)) => !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()),
        Some(None) => false,
    };
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_must_be_this_site_when_a_browser_names_one() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            map
        };
        let allowed = ["app.example".to_owned()];
        let host = ("host", "bouncer.example");
        for (pairs, trusted, ok) in [
            (vec![host], false, true), // no Origin: a script, the token decides
            (vec![host, ("origin", "https://bouncer.example")], false, true),
            (vec![host, ("origin", "http://BOUNCER.example:80")], false, true),
            (vec![("host", "bouncer.example:443"), ("origin", "https://bouncer.example")], false, true),
            (vec![host, ("origin", "https://app.example")], false, true), // an allowed host
            (vec![host, ("origin", "https://evil.bouncer.example")], false, false),
            (vec![host, ("origin", "https://bouncer.example:8443")], false, false),
            (vec![host, ("origin", "null")], false, false),
            (vec![("origin", "https://bouncer.example")], false, false), // no Host to match
            (
                vec![
                    ("host", "10.0.0.2:8080"),
                    ("x-forwarded-host", "bouncer.example"),
                    ("origin", "https://bouncer.example"),
                ],
                true,
                true,
            ),
            (
                vec![
                    ("host", "10.0.0.2:8080"),
                    ("x-forwarded-host", "bouncer.example"),
                    ("origin", "https://bouncer.example"),
                ],
                false,
                false,
            ),
            (vec![host, ("x-forwarded-host", "evil.example"), ("origin", "https://evil.example")], false, false),
        ] {
            assert_eq!(same_origin(&headers(&pairs), trusted, &allowed), ok, "{pairs:?} trusted={trusted}");
        }
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/api/v2/me/"), &[]), "/api/v2/me/");
        for hostile in ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil", "/a\nb", ""] {
            assert_eq!(safe_next(Some(hostile), &[]), "/api/v2/", "{hostile:?}");
        }
        assert_eq!(safe_next(None, &[]), "/api/v2/");
    }

    #[test]
    fn absolute_urls_are_followed_only_to_allowed_hosts() {
        let allowed = ["app.example".to_owned(), "app.example:8443".to_owned(), "[::1]:8080".to_owned()];
        for good in [
            "https://app.example/",
            "http://app.example",
            "https://APP.example/x?y=1#z",
            "https://app.example?x=1",
            "https://app.example:443/",
            "http://app.example:80/a",
            "https://app.example:8443/a",
            "http://[::1]:8080/a",
        ] {
            assert_eq!(safe_next(Some(good), &allowed), good, "{good:?}");
        }
        for hostile in [
            "https://evil.example/",
            "//app.example/",
            "https://app.example@evil.example/",
            "https://app.example:@evil.example/",
            "https://user:pw@app.example/",
            "https://evil.example/?x=app.example",
            "https://evil.example/app.example",
            "https://app.example.evil.example/",
            "https://evil.example#@app.example",
            "https://app.example\\@evil.example/",
            "https:\\\\app.example/",
            "https:/app.example/",
            "https:app.example",
            "https://app.example:8080/",
            "https://app.example:/",
            "https://app.example:443x/",
            "https://app.example./",
            "https://app%2eexample/",
            "https://app.example\t/",
            "https://app.example /",
            "https://app.example\u{7f}/",
            "javascript://app.example/%0aalert(1)",
            "javascript:alert(1)",
            "ftp://app.example/",
            " https://app.example/",
            "http://[::1]:9090/",
            "http://[::1/",
        ] {
            assert_eq!(safe_next(Some(hostile), &allowed), "/api/v2/", "{hostile:?}");
        }
    }

    #[test]
    fn an_authority_has_a_host_and_at_most_a_numeric_port() {
        for good in ["a", "a.b-c.example", "127.0.0.1:8080", "[::1]", "[::1]:80"] {
            assert!(is_authority(good), "{good:?}");
        }
        for bad in [
            "", ":80", "a:", "a:b", "[::1]x", "[::1]:", "a@b", "a/b", "a..b", "[::1", "[zz]:1", "a:123456", "a b",
            "a%2e",
        ] {
            assert!(!is_authority(bad), "{bad:?}");
        }
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
