//! The browsable API: the same endpoints, answered as HTML pages when a browser asks
//! (`Accept: text/html`; `?format=json` forces JSON, `?format=api` HTML).
//!
//! A middleware wraps the whole API. For a page it runs the endpoint as usual, then renders
//! its JSON with what the page needs around it (the description from the OpenAPI document,
//! `Allow` and the caller's actions from an internal `OPTIONS`, the forms). Forms post back to
//! the resource itself in Django REST framework's way (`_method` and `_content`, or the typed
//! settings fields) with the CSRF token; the middleware turns such a post into the JSON
//! request it stands for. No endpoint knows about HTML, and every page is only as powerful as
//! the JSON API behind it.

mod html;
mod page;

use std::sync::OnceLock;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value, json};
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AuthSlot, Authenticated, ClientMeta, cookies};
use crate::sessions::EndReason;
use crate::settings::registry::{self, Kind};
use crate::{AppState, BODY_LIMIT};
pub use page::Submitted;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login_page))
}

/// The page assets, embedded in the binary.
pub async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "browse.css" => (include_str!("../../static/browse.css"), "text/css; charset=utf-8"),
        "browse.js" => (include_str!("../../static/browse.js"), "text/javascript; charset=utf-8"),
        _ => return crate::error::ApiError::NotFound.into_response(),
    };
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What the middleware needs: the API to ask internal questions of, and the state.
#[derive(Clone)]
pub struct Browse {
    pub api: Router,
    pub state: AppState,
}

/// Wraps the API so browsers get pages.
pub fn wrap(api: Router, state: AppState) -> Router {
    let browse = Browse { api: api.clone(), state };
    Router::new().fallback_service(api).layer(axum::middleware::from_fn_with_state(browse, handle))
}

async fn handle(State(browse): State<Browse>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // Forward-auth and introspection answer proxies and programs, never a page.
    if !path.starts_with("/api/")
        || path.starts_with("/api/docs")
        || path == "/api/openapi.json"
        || path.starts_with("/api/v2/auth/")
    {
        return next.run(request).await;
    }
    let html = wants_html(request.headers(), request.uri().query());
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let method = request.method().clone();
    let is_page = (method == Method::GET || method == Method::HEAD) && html;
    let is_form_post = method == Method::POST && is_form;
    if !is_page && !is_form_post {
        return next.run(request).await;
    }
    // The pages decide on `Secure` from the headers alone ([`secure`]): an
    // `X-Forwarded-Proto` counts only from a trusted proxy, so drop anyone else's here. (The
    // API behind ignores it from them anyway.)
    if !cookies::peer_trusted_in(request.extensions(), &browse.state) {
        request.headers_mut().remove("x-forwarded-proto");
    }
    let mut response =
        if is_page { page(&browse, request, next).await } else { form_post(&browse, request, next, html).await };
    if response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html")) {
        secure_headers(response.headers_mut(), &browse.state);
    }
    response
}

/// Content-Security-Policy without inline script, no framing, no sniffing, no caching.
fn secure_headers(headers: &mut HeaderMap, state: &AppState) {
    headers.insert(header::CONTENT_SECURITY_POLICY, csp(&state.config.allowed_redirect_hosts));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// [`CSP`], whose `form-action` also names the hosts a form login may redirect to
/// (`BOUNCER_ALLOWED_REDIRECT_HOSTS`): browsers apply `form-action` to the redirect after a
/// form post too.
fn csp(allowed_hosts: &[String]) -> HeaderValue {
    if allowed_hosts.is_empty() {
        return HeaderValue::from_static(CSP);
    }
    let sources: String = allowed_hosts.iter().map(|host| format!(" http://{host} https://{host}")).collect();
    let policy = CSP.replace("form-action 'self'", &format!("form-action 'self'{sources}"));
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static(CSP))
}

/// A browser asks for HTML; `?format=json` and `?format=api` decide for it.
fn wants_html(headers: &HeaderMap, query: Option<&str>) -> bool {
    let format = crate::listing::params(query).remove("format");
    match format.as_deref() {
        Some("json") => false,
        Some("api") => true,
        _ => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.split(',').any(|part| part.trim().starts_with("text/html"))),
    }
}

/// The query without the parameters that only the page uses.
fn strip_page_params(query: Option<&str>) -> (Option<String>, bool) {
    let Some(query) = query else { return (None, false) };
    let mut options = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            if name == "_options" {
                options = true;
            }
            !pair.is_empty() && name != "_options" && name != "format"
        })
        .collect();
    ((!kept.is_empty()).then(|| kept.join("&")), options)
}

async fn page(browse: &Browse, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let (query, show_options) = strip_page_params(request.uri().query());
    if path == "/api/login/" {
        return next.run(request).await;
    }
    let uri = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    *request.uri_mut() = uri.parse().expect("a path from a valid URI");
    let headers = request.headers().clone();
    let slot = AuthSlot::of(&mut request);
    let response = next.run(request).await;
    render(browse, &path, query.as_deref(), &headers, response, slot.get().cloned(), show_options, None).await
}

/// Turns an endpoint's JSON response into its page (or the login page, for a 401).
#[allow(clippy::too_many_arguments)]
async fn render(
    browse: &Browse,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    response: Response,
    auth: Option<Authenticated>,
    show_options: bool,
    submitted: Option<&Submitted>,
) -> Response {
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body: Value =
        serde_json::from_slice(&to_bytes(body, usize::MAX).await.unwrap_or_default()).unwrap_or(Value::Null);
    if parts.status == StatusCode::UNAUTHORIZED {
        let next = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let reason = body["reason"].as_str().unwrap_or("not_authenticated");
        let mut page = login_response(
            browse,
            headers,
            &next,
            Some(("info", &reason_message(reason))),
            "",
            StatusCode::UNAUTHORIZED,
        );
        if cookies::cookie(headers, cookies::SESSION_COOKIE).is_some() {
            page.headers_mut().append(header::SET_COOKIE, cookies::session_cookie(None, secure(browse, headers)));
        }
        return page;
    }
    let auth = match auth {
        Some(auth) => Some(auth),
        None => quiet_auth(browse, headers).await,
    };
    let (allow, actions, options) = describe(browse, path, headers).await;
    let writable = writable(&allow, actions.as_ref(), auth.as_ref(), path);
    let (title, description) = doc_for(path);
    let (csrf, new_csrf) = csrf_token(headers);
    let page = page::ResourcePage {
        path,
        query,
        title,
        description,
        status: parts.status.as_u16(),
        status_text: parts.status.canonical_reason().unwrap_or(""),
        body: &body,
        csrf: &csrf,
        allow,
        writable,
        actions: actions.as_ref(),
        options: options.as_ref().filter(|_| show_options),
        submitted,
    };
    let title = page.title.clone();
    let document = page::layout(&title, auth.as_ref(), &csrf, path, &page::resource(&page));
    let mut out = (parts.status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], document).into_response();
    if let Some(timeout) = parts.headers.get(crate::auth::AUTH_TOKEN_TIMEOUT) {
        out.headers_mut().insert(crate::auth::AUTH_TOKEN_TIMEOUT, timeout.clone());
    }
    if new_csrf {
        out.headers_mut().append(header::SET_COOKIE, cookies::csrf_cookie(&csrf, secure(browse, headers)));
    }
    out
}

/// Whether the cookies a page sets carry `Secure`: configured so, or the request came over
/// TLS through a trusted proxy (only theirs keep `X-Forwarded-Proto`, see [`handle`]).
fn secure(browse: &Browse, headers: &HeaderMap) -> bool {
    cookies::secure(headers, true, &browse.state)
}

/// The request's CSRF token, or a new one (true) to set as a cookie.
fn csrf_token(headers: &HeaderMap) -> (String, bool) {
    match cookies::cookie(headers, cookies::CSRF_COOKIE) {
        Some(token) => (token.to_owned(), false),
        None => (cookies::new_csrf_token(), true),
    }
}

/// Who the cookie belongs to, for pages whose endpoint does not authenticate (the roots):
/// checked quietly, so looking does not keep a session alive.
async fn quiet_auth(browse: &Browse, headers: &HeaderMap) -> Option<Authenticated> {
    let token = cookies::cookie(headers, cookies::SESSION_COOKIE)?;
    let caller = crate::sessions::authenticate(&browse.state, token, true).await.ok()?;
    Some(Authenticated {
        user_id: caller.user.id,
        username: caller.user.username.clone(),
        is_superuser: caller.user.is_superuser,
        is_system_auditor: caller.user.is_system_auditor,
        session_id: caller.session.map(|s| s.id),
        timeout: caller.session.map(|s| crate::clock::seconds_until(browse.state.clock.now(), s.ends_at)),
    })
}

/// Asks the API itself, as the caller and quietly: `OPTIONS` of `path` gives `Allow`, the
/// caller's actions, and the metadata for the OPTIONS panel.
async fn describe(browse: &Browse, path: &str, headers: &HeaderMap) -> (Vec<String>, Option<Value>, Option<Value>) {
    let response = internal(browse, Method::OPTIONS, path, headers).await;
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect())
        .unwrap_or_else(|| vec!["GET".to_owned()]);
    if !response.status().is_success() {
        return (allow, None, None);
    }
    let body: Value = serde_json::from_slice(&to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default())
        .unwrap_or(Value::Null);
    (allow, body.get("actions").cloned(), Some(body))
}

/// An internal, quiet request with the caller's credentials.
async fn internal(browse: &Browse, method: Method, uri: &str, headers: &HeaderMap) -> Response {
    let mut request = Request::builder().method(method).uri(uri).header(crate::auth::SESSION_QUIET, "1");
    for name in [header::COOKIE, header::AUTHORIZATION] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value.clone());
        }
    }
    let request = request.body(Body::empty()).expect("a valid request");
    browse.api.clone().oneshot(request).await.unwrap_or_else(|never| match never {})
}

/// The write methods the caller may use here: what OPTIONS says it may, and DELETE where
/// it may delete (a superuser, or one's own sessions).
fn writable(allow: &[String], actions: Option<&Value>, auth: Option<&Authenticated>, path: &str) -> Vec<String> {
    let Some(auth) = auth else { return Vec::new() };
    let has = |method: &str| actions.and_then(|a| a.get(method)).is_some();
    ["POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .filter(|method| allow.iter().any(|a| a == method))
        .filter(|method| match *method {
            "PATCH" => has("PATCH") || has("PUT"),
            "DELETE" => auth.is_superuser || path.starts_with("/api/v2/me/"),
            other => has(other),
        })
        .map(str::to_owned)
        .collect()
}

/// The title and description of the endpoint at `path`, from the OpenAPI document (that is,
/// from the handlers' doc comments).
fn doc_for(path: &str) -> (String, String) {
    static PATHS: OnceLock<Value> = OnceLock::new();
    let paths = PATHS.get_or_init(|| crate::openapi()["paths"].take());
    let found = paths
        .as_object()
        .and_then(|paths| paths.iter().find(|(template, _)| matches_template(template, path)).map(|(_, item)| item));
    let operation = found.and_then(|item| item.get("get").or_else(|| item.get("post")));
    let summary = operation.and_then(|op| op["summary"].as_str()).unwrap_or("");
    let description = operation.and_then(|op| op["description"].as_str()).unwrap_or("");
    // "The session settings (superuser or system auditor)." → "The session settings".
    let title = summary.split(" (").next().unwrap_or(summary).trim_end_matches('.').to_owned();
    let title = if title.is_empty() { path.to_owned() } else { title };
    (title, description.to_owned())
}

fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

/// Why the login page is shown, in words.
fn reason_message(reason: &str) -> String {
    match reason {
        "not_authenticated" => "Log in to see this page.".to_owned(),
        "logged_out_here" => "You have logged out.".to_owned(),
        "invalid_token" => "Your session is not known here any more. Log in again.".to_owned(),
        "basic_auth_disabled" => "HTTP Basic authentication is disabled; log in here instead.".to_owned(),
        code => match EndReason::from_code(code) {
            Some(reason) => {
                let detail = reason.detail();
                let mut chars = detail.chars();
                let first = chars.next().map(|c| c.to_lowercase().to_string()).unwrap_or_default();
                format!("You were logged out: {first}{}", chars.as_str())
            }
            None => "Log in to see this page.".to_owned(),
        },
    }
}

fn login_response(
    browse: &Browse,
    headers: &HeaderMap,
    next: &str,
    message: Option<(&str, &str)>,
    username: &str,
    status: StatusCode,
) -> Response {
    let (csrf, new_csrf) = csrf_token(headers);
    let next = cookies::safe_next(Some(next), &browse.state.config.allowed_redirect_hosts);
    let mut response =
        (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page::login(&next, &csrf, message, username))
            .into_response();
    if new_csrf {
        response.headers_mut().append(header::SET_COOKIE, cookies::csrf_cookie(&csrf, secure(browse, headers)));
    }
    secure_headers(response.headers_mut(), &browse.state);
    response
}

/// The login page's query, as documented; [`login_page`] reads it leniently.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LoginPageParams {
    /// Where to go after logging in: a local path, or an absolute URL on a host of
    /// `BOUNCER_ALLOWED_REDIRECT_HOSTS`.
    next: Option<String>,
    /// Why the previous session ended (a reason code), to say so on the page.
    reason: Option<String>,
}

/// The login page of the browsable API.
///
/// An HTML form that posts to `POST /api/login/` with the CSRF token and sets the session
/// cookie. `?reason=` says why the previous session ended; `?next=` is where to go after.
#[utoipa::path(get, path = "/api/login/", tag = "auth", params(LoginPageParams),
    responses((status = 200, description = "The login page", content_type = "text/html", body = String)))]
async fn login_page(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    // Read leniently (the first of each name wins, anything else is ignored): a proxy's
    // redirect here may carry the original URL's own parameters unescaped (nginx cannot
    // escape `$request_uri`), and that must give the login page, not a 400.
    let params: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let message = param("reason").map(reason_message);
    let (csrf, new_csrf) = csrf_token(&headers);
    let next = cookies::safe_next(param("next"), &state.config.allowed_redirect_hosts);
    let mut response = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page::login(&next, &csrf, message.as_deref().map(|m| ("info", m)), ""),
    )
        .into_response();
    if new_csrf {
        response.headers_mut().append(header::SET_COOKIE, cookies::csrf_cookie(&csrf, meta.secure));
    }
    secure_headers(response.headers_mut(), &state);
    response
}

/// A form posted by a page: the login, the logout, or a write in DRF's form convention.
async fn form_post(browse: &Browse, request: Request, next: Next, html: bool) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, BODY_LIMIT).await else {
        return crate::error::ApiError::PayloadTooLarge.into_response();
    };
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    // A form proves where it comes from with the CSRF field; pass that on as the header
    // the API checks (a wrong token is simply not passed on, and the API refuses).
    if cookies::csrf_ok(&parts.headers, field(cookies::CSRF_FIELD))
        && let Some(token) = field(cookies::CSRF_FIELD).and_then(|t| HeaderValue::from_str(t).ok())
    {
        parts.headers.insert(cookies::CSRF_HEADER, token);
    }
    let path = parts.uri.path().to_owned();
    let headers = parts.headers.clone();

    if path == "/api/login/" {
        let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
        if !html || response.status().is_redirection() || response.status().is_success() {
            return response;
        }
        // The page keeps the API's status (401, 403 for `deny_new`, 429 with its
        // `Retry-After` when locked out, 503 busy) for whatever reads more than the text.
        let status = response.status();
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let detail = error_detail(response).await;
        let message = if detail.starts_with("CSRF") {
            "Your login form had expired; please try again.".to_owned()
        } else {
            detail
        };
        let next_path = field("next").unwrap_or("/api/v2/");
        let mut page = login_response(
            browse,
            &headers,
            next_path,
            Some(("error", &message)),
            field("username").unwrap_or(""),
            status,
        );
        if let Some(retry_after) = retry_after {
            page.headers_mut().insert(header::RETRY_AFTER, retry_after);
        }
        return page;
    }
    if path == "/api/logout/" {
        let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
        if html && response.status() == StatusCode::NO_CONTENT {
            let mut redirect = Redirect::to("/api/login/?reason=logged_out_here").into_response();
            for cookie in response.headers().get_all(header::SET_COOKIE) {
                redirect.headers_mut().append(header::SET_COOKIE, cookie.clone());
            }
            return redirect;
        }
        return response;
    }
    let Some(method) = field("_method").and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok()) else {
        return next.run(Request::from_parts(parts, Body::from(bytes))).await;
    };
    let typed = field("_typed").is_some().then(|| typed_fields(&fields));
    let content = match &typed {
        Some(object) => Value::Object(object.clone()).to_string(),
        None => field("_content").unwrap_or("").to_owned(),
    };
    let submitted = Submitted { method: method.to_string(), content: content.clone(), typed, errors: Value::Null };
    parts.method = method.clone();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut request = Request::from_parts(parts, Body::from(content));
    let slot = AuthSlot::of(&mut request);
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() {
        let target = if method == Method::DELETE && ends_with_id(&path) { parent(&path) } else { path.clone() };
        return Redirect::to(&target).into_response();
    }
    if status == StatusCode::UNAUTHORIZED || !html {
        return match status {
            StatusCode::UNAUTHORIZED if html => {
                render(browse, &path, None, &headers, response, None, false, None).await
            }
            _ => response,
        };
    }
    // Refused: show the page again, with what was sent and why it was refused.
    let errors = match response.headers().get(header::CONTENT_TYPE) {
        Some(v) if v.as_bytes().starts_with(b"application/json") => {
            serde_json::from_slice(&to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default())
                .unwrap_or(Value::Null)
        }
        _ => json!({"detail": status.canonical_reason().unwrap_or("Error")}),
    };
    let submitted = Submitted { errors, ..submitted };
    let current = internal(browse, Method::GET, &path, &headers).await;
    let mut page = render(browse, &path, None, &headers, current, slot.get().cloned(), false, Some(&submitted)).await;
    *page.status_mut() = status;
    page
}

/// The `detail` of an error response.
async fn error_detail(response: Response) -> String {
    let body: Value = serde_json::from_slice(&to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default())
        .unwrap_or(Value::Null);
    body["detail"].as_str().unwrap_or("The request was refused.").to_owned()
}

/// The typed settings form as the JSON object it stands for. A number that does not parse
/// is sent as text, so the API answers with its own message.
fn typed_fields(fields: &[(String, String)]) -> Map<String, Value> {
    let mut object = Map::new();
    for (name, value) in fields {
        let Some(def) = registry::find(name) else { continue };
        let value = match def.kind {
            Kind::Integer { .. } => {
                value.trim().parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(value.clone()))
            }
            Kind::Choice(_) => Value::from(value.clone()),
            Kind::Boolean => continue,
        };
        object.insert(def.key.to_owned(), value);
    }
    for (_, key) in fields.iter().filter(|(name, _)| name == "_bools") {
        if let Some(def) = registry::find(key) {
            let on = fields.iter().any(|(name, value)| name == key && value == "true");
            object.insert(def.key.to_owned(), Value::Bool(on));
        }
    }
    object
}

fn ends_with_id(path: &str) -> bool {
    path.trim_end_matches('/').rsplit('/').next().is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
}

fn parent(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/"),
        None => "/api/v2/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_paths_with_parameters() {
        assert!(matches_template("/api/v2/users/{id}/", "/api/v2/users/12/"));
        assert!(!matches_template("/api/v2/users/{id}/", "/api/v2/users/12/sessions/"));
        assert!(matches_template("/api/v2/me/", "/api/v2/me/"));
    }

    #[test]
    fn the_typed_form_becomes_json_with_unchecked_boxes_false() {
        let fields: Vec<(String, String)> = [
            ("AUTH_TOKEN_PER_USER", "3"),
            ("AUTH_TOKEN_EXPIRATION", "abc"),
            ("SESSION_LIMIT_POLICY", "deny_new"),
            ("_bools", "AUTH_BASIC_ENABLED"),
            ("csrfmiddlewaretoken", "x"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let object = typed_fields(&fields);
        assert_eq!(object["AUTH_TOKEN_PER_USER"], json!(3));
        assert_eq!(object["AUTH_TOKEN_EXPIRATION"], json!("abc"));
        assert_eq!(object["SESSION_LIMIT_POLICY"], json!("deny_new"));
        assert_eq!(object["AUTH_BASIC_ENABLED"], json!(false));
        assert!(!object.contains_key("csrfmiddlewaretoken"));
    }

    #[test]
    fn a_deleted_detail_goes_back_to_its_list() {
        assert!(ends_with_id("/api/v2/me/sessions/12/"));
        assert_eq!(parent("/api/v2/me/sessions/12/"), "/api/v2/me/sessions/");
        assert!(!ends_with_id("/api/v2/users/3/sessions/"));
    }

    #[test]
    fn a_reason_reads_as_a_sentence() {
        assert_eq!(
            reason_message("limit_reached"),
            "You were logged out: the maximum number of allowed sessions for this user has been exceeded."
        );
    }
}
