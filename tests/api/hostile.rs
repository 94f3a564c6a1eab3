//! Hostile input. Property tests over arbitrary bytes for the parsers that see raw client
//! text (the `Authorization` and `Cookie` headers, settings files, list query strings);
//! malformed, oversized and odd requests in-process on both databases; and, against the
//! real binary, what only a real connection shows: huge headers, many idle connections and
//! a client that stalls mid-request. Whatever the input: a 4xx in the API's JSON shape,
//! never a 500, a panic or a stalled server.

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bouncer::auth::Credentials;
use bouncer::listing::{Column, Kind, Listing, column};
use bouncer::settings::FileLayer;
use futures_util::StreamExt as _;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::db_test;
use crate::helpers::*;

// ---------------------------------------------------------------------------------------
// Properties of the parsers of client text: no panic, and every error is a client error.
// ---------------------------------------------------------------------------------------

fn config() -> ProptestConfig {
    // Fast enough for every `cargo test`; PROPTEST_CASES raises it for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn header(name: axum::http::HeaderName, bytes: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(bytes).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(name, value);
    Some(headers)
}

/// An `Authorization` value: arbitrary bytes, or a known scheme followed by arbitrary text
/// (so the property also reaches the token and Basic branches, not only "unknown scheme").
fn authorization() -> impl Strategy<Value = Vec<u8>> {
    let scheme = prop::sample::select(vec!["Bearer", "bearer", "Token", "TOKEN", "Basic", "basic", "Digest", ""]);
    let space = prop::sample::select(vec!["", " ", "  ", "\t", " \t "]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (scheme.clone(), space.clone(), prop::collection::vec(any::<u8>(), 0..120)).prop_map(|(s, sp, rest)| {
            let mut v = format!("{s}{sp}").into_bytes();
            v.extend(rest);
            v
        }),
        // Basic with base64 of arbitrary bytes: invalid UTF-8, no colon, empty parts.
        (space, prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(sp, raw)| format!(
            "Basic{sp}{}",
            STANDARD.encode(raw)
        )
        .into_bytes()),
        ".{0,80}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn credentials_never_panic_and_fail_only_with_401(bytes in authorization()) {
        let Some(headers) = header(AUTHORIZATION, &bytes) else { return Ok(()) };
        match bouncer::auth::credentials(&headers) {
            Ok(None) => {}
            Ok(Some(Credentials::Token(token))) => {
                prop_assert!(!token.is_empty() && !token.contains(' '), "token {token:?}");
            }
            Ok(Some(Credentials::Basic { .. })) => {}
            Err(err) => prop_assert_eq!(err.status(), StatusCode::UNAUTHORIZED, "{:?}", err),
        }
    }

    #[test]
    fn cookies_never_panic_and_only_return_what_was_sent(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        name in prop_oneof![Just("bouncer_session".to_owned()), Just("csrftoken".to_owned()), ".{0,12}"],
    ) {
        let Some(headers) = header(COOKIE, &bytes) else { return Ok(()) };
        if let Some(value) = bouncer::auth::cookies::cookie(&headers, &name) {
            prop_assert!(!value.is_empty());
            let sent = headers.get(COOKIE).unwrap().to_str().unwrap();
            prop_assert!(sent.contains(value), "{value:?} not in {sent:?}");
        }
    }

    #[test]
    fn a_cookie_is_found_among_arbitrary_others(
        before in "[ -~]{0,60}",
        value in "[A-Za-z0-9_-]{1,40}",
        after in "[ -~]{0,60}",
    ) {
        // Whatever surrounds it, `; bouncer_session=VALUE;` is read back, unless junk before
        // it defines the same cookie first.
        prop_assume!(!before.contains("bouncer_session"));
        let text = format!("{before}; bouncer_session={value}; {after}");
        let headers = header(COOKIE, text.as_bytes()).unwrap();
        prop_assert_eq!(bouncer::auth::cookies::cookie(&headers, "bouncer_session"), Some(value.as_str()));
    }

    #[test]
    fn settings_files_never_panic_and_keep_only_valid_values(
        text in prop_oneof![".{0,400}", settings_file_text()],
        python in any::<bool>(),
    ) {
        let path = std::path::Path::new(if python { "/etc/bouncer/conf.d/10-x.py" } else { "conf.d/10-x.toml" });
        let mut layer = FileLayer::default();
        let mut errors = Vec::new();
        layer.parse(path, &text, &mut errors);
        let prefix = format!("{}:", path.display());
        for error in &errors {
            prop_assert!(error.starts_with(&prefix), "{error:?}");
        }
        for (key, defined) in &layer.values {
            let def = bouncer::settings::registry::find(key).unwrap();
            prop_assert_eq!(def.parse(&defined.value), Ok(defined.value.clone()), "{}", key);
            prop_assert!(defined.line >= 1 && defined.line <= text.lines().count());
        }
    }

    #[test]
    fn list_queries_never_panic_and_put_no_client_text_in_sql(query in prop_oneof![".{0,200}", list_query()]) {
        match Listing::parse(Some(&query), COLUMNS, &["active"], "id", 1) {
            Err(err) => prop_assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{:?}", err),
            Ok(listing) => {
                // The conditions and the order are made of the columns' SQL and placeholders only.
                let mut placeholders = 0;
                if listing.conditions != "TRUE" {
                    for condition in listing.conditions.split(" AND ") {
                        let known = COLUMNS.iter().any(|c| {
                            condition == format!("{} IS NULL", c.sql)
                                || condition == format!("{} = ${}", c.sql, placeholders + 1)
                        });
                        prop_assert!(known, "condition {condition:?} of {query:?}");
                        placeholders += usize::from(condition.contains('$'));
                    }
                }
                prop_assert_eq!(placeholders, listing.binds.len());
                for term in listing.order.split(", ") {
                    let known = term == "id"
                        || COLUMNS.iter().any(|c| term == format!("{} ASC", c.sql) || term == format!("{} DESC", c.sql));
                    prop_assert!(known, "order term {term:?} of {query:?}");
                }
            }
        }
    }
}

/// Settings-file text made of lines that look like settings: real keys, both boolean
/// spellings, quotes, escapes, comments, huge numbers.
fn settings_file_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(bouncer::settings::SETTINGS.iter().map(|d| d.key.to_owned()).collect::<Vec<_>>()),
        "[A-Z_]{0,12}",
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "True",
            "False",
            "true",
            "false",
            "1800",
            "-1",
            "0",
            "86_400",
            "-",
            "+",
            "_",
            "--1",
            "99999999999999999999",
            "'kick_oldest'",
            "\"deny_new\"",
            "'",
            "\"",
            "'\\'",
            "\"a\\\"",
            "'a' 'b'",
            "'#'",
            "\"\\n\\t\\",
            "[x]",
        ])
        .prop_map(str::to_owned),
        "[-+_0-9]{0,25}",
        ".{0,30}",
    ];
    let line = (key, prop::sample::select(vec!["=", " = ", "==", "", " =\t"]), value, prop::option::of(".{0,10}"))
        .prop_map(|(k, eq, v, comment)| match comment {
            Some(c) => format!("{k}{eq}{v} # {c}"),
            None => format!("{k}{eq}{v}"),
        });
    prop::collection::vec(prop_oneof![line, Just("[auth]".to_owned()), ".{0,20}"], 0..12)
        .prop_map(|lines| lines.join("\n"))
}

const COLUMNS: &[Column] = &[
    column("id", "id", Kind::Integer),
    column("username", "username", Kind::Text),
    column("is_active", "is_active", Kind::Boolean),
    column("created", "created_at", Kind::Time),
];

/// Query strings made of the names a list knows (and some it does not), with odd values.
fn list_query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "id",
            "username",
            "is_active",
            "created",
            "order_by",
            "page",
            "page_size",
            "format",
            "active",
            "password",
            "id;",
            "",
        ])
        .prop_map(str::to_owned),
        "[a-z_%=&+]{0,8}",
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "null",
            "None",
            "-id",
            "id,-username",
            ",,",
            "-",
            "--id",
            "id;DROP TABLE users",
            "2026-01-01T00:00:00Z",
            "9999-12-31T23:59:59+99:99",
            "99999999999999999999",
            "-9223372036854775808",
            "true",
            "maybe",
            "%00",
            "%ff",
            "%",
            "%%",
            "+",
            "1e400",
        ])
        .prop_map(str::to_owned),
        ".{0,20}",
    ];
    prop::collection::vec((name, value), 0..6)
        .prop_map(|pairs| pairs.into_iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&"))
}

// ---------------------------------------------------------------------------------------
// In-process, on both databases.
// ---------------------------------------------------------------------------------------

/// Sends raw bytes with a content type (or none).
async fn send_bytes(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Response {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    app.raw(request.body(body.into()).unwrap()).await
}

/// Every way a test's requests went wrong, collected so one run lists them all.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// Expects a client error `status` with the API's JSON error shape: `{"detail": "..."}`
    /// or a DRF field map whose every value is a non-empty list of messages.
    fn error(&mut self, response: &Response, status: StatusCode, what: &str) {
        if let Err(problem) = json_error(response, status) {
            self.0.push(format!("{what}: {problem}"));
        }
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    #[track_caller]
    fn assert_none(self) {
        assert!(self.0.is_empty(), "{} problems:\n  {}", self.0.len(), self.0.join("\n  "));
    }
}

fn json_error(response: &Response, status: StatusCode) -> Result<(), String> {
    if response.status != status {
        return Err(format!("expected {status}, got {response:?}"));
    }
    let Some(body) = response.body.as_object() else { return Err(format!("not a JSON object: {response:?}")) };
    let detail = body.get("detail").and_then(Value::as_str).is_some_and(|d| !d.is_empty());
    let fields = !body.is_empty()
        && body.values().all(|v| {
            v.as_array().is_some_and(|messages| !messages.is_empty() && messages.iter().all(Value::is_string))
        });
    if !(detail || fields) {
        return Err(format!("not the error shape: {response:?}"));
    }
    match response.header("content-type") {
        Some(ct) if ct.starts_with("application/json") => Ok(()),
        other => Err(format!("content type {other:?}")),
    }
}

fn nested_arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

db_test!(deeply_nested_json_is_a_400_not_a_stack_overflow, |app| {
    let mut problems = Problems::default();
    let admin = app.admin_token().await;
    let deep_value = |key: &str| format!("{{\"{key}\": {}}}", nested_arrays(10_000));
    let deep_objects = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
    for body in [nested_arrays(10_000), deep_value("username"), deep_objects.clone()] {
        let response = send_bytes(&app, Method::POST, "/api/login/", None, Some("application/json"), body).await;
        problems.error(&response, StatusCode::BAD_REQUEST, "nested login");
    }
    let own = format!("/api/v2/users/{}/", app.admin_id);
    for body in
        [nested_arrays(10_000), deep_value("AUTH_TOKEN_EXPIRATION"), deep_value("is_active"), deep_objects.clone()]
    {
        for path in ["/api/v2/settings/authentication/", own.as_str()] {
            let response =
                send_bytes(&app, Method::PATCH, path, Some(&admin), Some("application/json"), body.clone()).await;
            problems.error(&response, StatusCode::BAD_REQUEST, &format!("nested PATCH {path}"));
        }
    }
    let response = send_bytes(
        &app,
        Method::POST,
        "/api/v2/users/",
        Some(&admin),
        Some("application/json"),
        deep_value("username"),
    )
    .await;
    problems.error(&response, StatusCode::BAD_REQUEST, "nested user");
    // The error message does not echo an unbounded amount of the input.
    let echoed = send_bytes(&app, Method::POST, "/api/login/", None, Some("application/json"), deep_objects).await;
    let detail = echoed.body["detail"].as_str().unwrap_or_default().len();
    problems.check(detail < 2048, || format!("nested objects: a detail of {detail} bytes"));
    problems.check(app.me(&admin).await.status == StatusCode::OK, || "the admin's session ended".into());
    problems.assert_none();
});

db_test!(a_body_over_64_kib_is_a_413_wherever_a_body_is_read, |app| {
    let mut problems = Problems::default();
    let admin = app.admin_token().await;
    let own = format!("/api/v2/users/{}/", app.admin_id);
    let big = json!({"username": "alice", "password": "x".repeat(65 * 1024)}).to_string();
    let form = format!("username=alice&password={}", "x".repeat(65 * 1024));
    let cases = [
        (Method::POST, "/api/login/", None, "application/json", big.clone()),
        (Method::POST, "/api/login/", None, "application/x-www-form-urlencoded", form),
        (Method::POST, "/api/v2/users/", Some(admin.as_str()), "application/json", big.clone()),
        (Method::PATCH, own.as_str(), Some(admin.as_str()), "application/json", big.clone()),
        (Method::PATCH, "/api/v2/settings/authentication/", Some(admin.as_str()), "application/json", big.clone()),
        (Method::PUT, "/api/v2/settings/all/", Some(admin.as_str()), "application/json", big.clone()),
    ];
    for (method, path, token, content_type, body) in cases {
        let response = send_bytes(&app, method.clone(), path, token, Some(content_type), body).await;
        problems.error(&response, StatusCode::PAYLOAD_TOO_LARGE, &format!("{method} {path} {content_type}"));
    }
    // Exactly at the limit is not "over" it: the body is read and judged on its content.
    let mut at_limit = json!({"username": "alice", "password": "p"}).to_string();
    let pad = bouncer::BODY_LIMIT - at_limit.len();
    at_limit.insert_str(at_limit.len() - 2, &"x".repeat(pad));
    assert_eq!(at_limit.len(), bouncer::BODY_LIMIT);
    let response = send_bytes(&app, Method::POST, "/api/login/", None, Some("application/json"), at_limit).await;
    problems.check(response.status == StatusCode::UNAUTHORIZED, || format!("a body of exactly 64 KiB: {response:?}"));
    problems.assert_none();
});

db_test!(a_json_body_with_another_content_type_is_a_415, |app| {
    let mut problems = Problems::default();
    let admin = app.admin_token().await;
    let own = format!("/api/v2/users/{}/", app.admin_id);
    let body = json!({"AUTH_TOKEN_PER_USER": 3}).to_string();
    for content_type in
        [None, Some("text/plain"), Some("application/jsonx"), Some("text/json"), Some("multipart/form-data")]
    {
        for (method, path) in [
            (Method::PATCH, "/api/v2/settings/authentication/"),
            (Method::PUT, "/api/v2/settings/authentication/"),
            (Method::POST, "/api/v2/users/"),
            (Method::PATCH, own.as_str()),
            (Method::POST, "/api/login/"),
        ] {
            let response = send_bytes(&app, method.clone(), path, Some(&admin), content_type, body.clone()).await;
            problems.error(&response, StatusCode::UNSUPPORTED_MEDIA_TYPE, &format!("{method} {path} {content_type:?}"));
        }
    }
    let stored = app.get("/api/v2/settings/all/", Some(&admin)).await.body["AUTH_TOKEN_PER_USER"].clone();
    problems.check(stored == json!(-1), || format!("a refused body was written: AUTH_TOKEN_PER_USER {stored}"));
    problems.assert_none();
});

db_test!(invalid_utf8_and_malformed_json_are_400s, |app| {
    let mut problems = Problems::default();
    let admin = app.admin_token().await;
    let own = format!("/api/v2/users/{}/", app.admin_id);
    let bodies: [&[u8]; 7] = [
        b"{\"username\": \"\xff\xfe\", \"password\": \"correct horse battery\"}",
        b"{\"AUTH_TOKEN_PER_USER\": 3, \"\xc3\x28\": 1}",
        b"\xef\xbb\xbf{}",
        b"{\"username\": \"\\ud800\", \"password\": \"x\"}",
        b"{\"a\": 1,}",
        b"",
        b"\x00",
    ];
    for body in bodies {
        for (method, path) in [
            (Method::POST, "/api/login/"),
            (Method::PATCH, "/api/v2/settings/authentication/"),
            (Method::POST, "/api/v2/users/"),
            (Method::PATCH, own.as_str()),
        ] {
            let what = format!("{method} {path} {:?}", String::from_utf8_lossy(body));
            let response = send_bytes(&app, method, path, Some(&admin), Some("application/json"), body.to_vec()).await;
            problems.error(&response, StatusCode::BAD_REQUEST, &what);
        }
    }
    // A form login with invalid UTF-8 percent-escapes is judged, not a crash (here: no CSRF).
    let response = send_bytes(
        &app,
        Method::POST,
        "/api/login/",
        None,
        Some("application/x-www-form-urlencoded"),
        "username=%ff%fe&password=%c3%28&next=%00",
    )
    .await;
    problems.error(&response, StatusCode::FORBIDDEN, "form login with invalid UTF-8");
    problems.assert_none();
});

db_test!(huge_and_odd_numbers_in_settings_are_400s_with_a_message, |app| {
    let mut problems = Problems::default();
    let admin = app.admin_token().await;
    for (key, raw) in [
        ("AUTH_TOKEN_EXPIRATION", "1e400"),
        ("AUTH_TOKEN_EXPIRATION", "-1e400"),
        ("AUTH_TOKEN_EXPIRATION", "1.5"),
        ("AUTH_TOKEN_EXPIRATION", "9223372036854775808"),
        ("AUTH_TOKEN_EXPIRATION", "18446744073709551616"),
        ("AUTH_TOKEN_EXPIRATION", "-9223372036854775809"),
        ("AUTH_TOKEN_EXPIRATION", "1e19"),
        ("AUTH_TOKEN_EXPIRATION", "-0"),
        ("AUTH_TOKEN_EXPIRATION", "\"1800\""),
        ("AUTH_TOKEN_PER_USER", "-0"),
        ("AUTH_TOKEN_PER_USER", "-0.0"),
        ("AUTH_TOKEN_PER_USER", "0.5"),
        ("AUTH_TOKEN_PER_USER", "-1.5"),
        ("AUTH_TOKEN_PER_USER", "1e-400"),
        ("AUTH_TOKEN_MAX_AGE", "59.0"),
        ("AUTH_TOKEN_MAX_AGE", "30000000000.5"),
        ("AUTH_LOGIN_FAILURE_LIMIT", "-9223372036854775808"),
        ("AUTH_LOGIN_LOCKOUT_SECONDS", "9223372036854775807"),
        ("AUTH_BASIC_ENABLED", "1"),
        ("SESSION_LIMIT_POLICY", "\"kick_oldest\\u0000\""),
    ] {
        let body = format!("{{\"{key}\": {raw}}}");
        let response = send_bytes(
            &app,
            Method::PATCH,
            "/api/v2/settings/authentication/",
            Some(&admin),
            Some("application/json"),
            body.clone(),
        )
        .await;
        problems.error(&response, StatusCode::BAD_REQUEST, &body);
        // The message names the key, whichever shape it comes in.
        let named = response.body.get(key).is_some()
            || response.body["detail"].as_str().is_some_and(|detail| detail.contains(key));
        problems.check(named, || format!("{body}: the message does not name {key}: {response:?}"));
    }
    let settings = app.get("/api/v2/settings/all/", Some(&admin)).await;
    problems.check(settings.body["AUTH_TOKEN_EXPIRATION"] == json!(1800), || format!("written: {settings:?}"));
    problems.check(settings.body["AUTH_TOKEN_PER_USER"] == json!(-1), || format!("written: {settings:?}"));
    problems.assert_none();
});

db_test!(non_ascii_and_control_characters_in_credentials_are_client_errors, |app| {
    let mut problems = Problems::default();
    // Logins: any string is an answer (401), never a 500, whatever the database makes of it
    // (PostgreSQL refuses NUL in text).
    for username in ["a\u{0}b", "\u{0}", "admin\u{0}", "ädmïn", "\u{202e}nimda", "a\nb", "\u{7f}", "😀", " admin"] {
        for password in ["correct horse battery", "p\u{0}ssword", "pässwörd😀", "\u{0}"] {
            let response = app.login(username, password).await;
            problems.error(&response, StatusCode::UNAUTHORIZED, &format!("login {username:?} / {password:?}"));
        }
    }
    // An empty username: a field error (DRF: "This field may not be blank.") or a 401.
    let empty = app.login("", PASSWORD).await;
    problems.check(matches!(empty.status.as_u16(), 400 | 401), || format!("login with an empty username: {empty:?}"));
    // The same through HTTP Basic.
    for pair in ["a\u{0}b:correct horse battery", "admin:p\u{0}ss", "ädmïn:x", "\u{0}:\u{0}", ":", "admin"] {
        let header = format!("Basic {}", STANDARD.encode(pair));
        let response = app.get("/api/v2/me/", Some(&header)).await;
        problems.error(&response, StatusCode::UNAUTHORIZED, &format!("Basic {pair:?}"));
    }
    let admin = app.admin_token().await;
    // Usernames outside Django's rule are field errors; letters of any script are allowed.
    let long = "a".repeat(151);
    for username in ["a\u{0}b", "a\nb", "a b", "a\u{7f}", "😀", "\u{202e}x", "", long.as_str()] {
        let response = app
            .send(
                Method::POST,
                "/api/v2/users/",
                Some(&admin),
                Some(json!({"username": username, "password": PASSWORD})),
            )
            .await;
        problems.error(&response, StatusCode::BAD_REQUEST, &format!("create {username:?}"));
        problems.check(response.body["username"].is_array(), || format!("create {username:?}: {response:?}"));
    }
    // A password is any text of 8 characters or more; what is stored logs in again.
    for (username, password) in
        [("jürgen", "pässwörd😀\u{202e}"), ("nul", "pass\u{0}word"), ("tab", "\t\t\t\t\t\t\t\t")]
    {
        let created = app
            .send(
                Method::POST,
                "/api/v2/users/",
                Some(&admin),
                Some(json!({"username": username, "password": password})),
            )
            .await;
        if created.status == StatusCode::CREATED {
            let login = app.login(username, password).await;
            problems.check(login.status == StatusCode::OK, || format!("login of {username:?}: {login:?}"));
        } else {
            problems.error(&created, StatusCode::BAD_REQUEST, &format!("create {username:?} / {password:?}"));
        }
    }
    // Filters with NUL and invalid UTF-8 in the value: an answer, never a 500.
    for query in ["username=a%00b", "username=%ff", "username=%00", "id=%00", "is_active=%00", "order_by=%00"] {
        let response = app.get(&format!("/api/v2/users/?{query}"), Some(&admin)).await;
        problems.check(matches!(response.status.as_u16(), 200 | 400), || format!("users?{query}: {response:?}"));
    }
    problems.check(app.me(&admin).await.status == StatusCode::OK, || "the admin's session ended".into());
    problems.assert_none();
});

db_test!(page_and_page_size_take_any_value_without_a_500, |app| {
    let mut problems = Problems::default();
    let admin = app.admin_token().await;
    let huge = "99999999999999999999";
    let own_sessions = format!("/api/v2/users/{}/sessions/", app.admin_id);
    let lists = ["/api/v2/users/", "/api/v2/me/sessions/", "/api/v2/activity_stream/", own_sessions.as_str()];
    for list in lists {
        for page in [
            "1",
            "last",
            "0",
            "-1",
            huge,
            "-99999999999999999999",
            "9223372036854775807",
            "4611686018427387904",
            "1.5",
            "1e3",
            "abc",
            "",
            "%00",
            "LAST",
            "%201",
            "%EF%BC%91",
        ] {
            let response = app.get(&format!("{list}?page={page}"), Some(&admin)).await;
            let what = format!("{list}?page={page}");
            match page {
                "1" | "last" => problems.check(response.status == StatusCode::OK, || format!("{what}: {response:?}")),
                // DRF reads an empty `page` as page 1; a 404 is acceptable too.
                "" if response.status == StatusCode::OK => {}
                // A page that does not exist, however it is spelt, is DRF's 404 "Invalid page.".
                _ => problems.error(&response, StatusCode::NOT_FOUND, &what),
            }
        }
        for size in [
            "0",
            "-1",
            "1",
            "200",
            "201",
            huge,
            "-99999999999999999999",
            "9223372036854775807",
            "abc",
            "",
            "%00",
            "1.5",
        ] {
            let response = app.get(&format!("{list}?page_size={size}&page=1"), Some(&admin)).await;
            let results = response.body["results"].as_array().map_or(usize::MAX, Vec::len);
            problems.check(response.status == StatusCode::OK && results <= 200, || {
                format!("{list}?page_size={size}: {response:?}")
            });
        }
        // Both at the extremes at once: no overflow in the offset or the links.
        for query in [
            "page=9223372036854775806&page_size=9223372036854775807",
            "page=46116860184273879&page_size=200",
            "page=last&page_size=9223372036854775807",
        ] {
            let response = app.get(&format!("{list}?{query}"), Some(&admin)).await;
            problems.check(matches!(response.status.as_u16(), 200 | 404), || format!("{list}?{query}: {response:?}"));
        }
    }
    problems.assert_none();
});

db_test!(odd_path_ids_are_400_or_404_never_500, |app| {
    let mut problems = Problems::default();
    let admin = app.admin_token().await;
    let templates = ["/api/v2/users/{}/", "/api/v2/users/{}/sessions/", "/api/v2/me/sessions/{}/"];
    for template in templates {
        for method in [Method::GET, Method::DELETE, Method::OPTIONS] {
            // A number that matches nothing is a 404 (docs/DECISIONS.md, "Errors"), however large.
            for id in [
                "0",
                "-1",
                "99999999999999999999",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854775808",
                "-99999999999999999999",
            ] {
                let path = template.replace("{}", id);
                let response = app.send(method.clone(), &path, Some(&admin), None).await;
                problems.error(&response, StatusCode::NOT_FOUND, &format!("{method} {path}"));
            }
            // Not a number: a 400 that says so (or a 404).
            // ("+1" is left out: Rust's integer parsing reads it as 1, a harmless alias.)
            for id in ["%00", "abc", "1.5", "1e3", "0x10", "%20", "1%2F2", "%ff", "%F0%9F%98%80", "1%00"] {
                let path = template.replace("{}", id);
                let response = app.send(method.clone(), &path, Some(&admin), None).await;
                let status = if response.status == StatusCode::NOT_FOUND {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_REQUEST
                };
                problems.error(&response, status, &format!("{method} {path}"));
            }
        }
    }
    // PATCH with a valid body on such ids.
    for id in ["99999999999999999999", "-1", "0", "%00"] {
        let path = format!("/api/v2/users/{id}/");
        let response = app.send(Method::PATCH, &path, Some(&admin), Some(json!({"is_active": true}))).await;
        let status = if id == "%00" { StatusCode::BAD_REQUEST } else { StatusCode::NOT_FOUND };
        problems.error(&response, status, &format!("PATCH {path}"));
    }
    problems.assert_none();
});

// ---------------------------------------------------------------------------------------
// Against the real binary: what only real connections show.
// ---------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_bouncer");

struct Server {
    child: tokio::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(extra_env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(BIN);
        command
            .arg("serve")
            .current_dir(dir.path())
            .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("hostile.db").display()))
            .env("BOUNCER_BIND", "127.0.0.1:0")
            .env("BOUNCER_ARGON2_MEMORY_KIB", "64")
            .env("BOUNCER_ARGON2_ITERATIONS", "1")
            .env("BOUNCER_ADMIN_PASSWORD", PASSWORD)
            .env_remove("BOUNCER_CONF_DIR")
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line =
                tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
            if let Some(rest) = line.split("address=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, addr, _dir: dir }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Resident memory in KiB, from /proc.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Open file descriptors (sockets included), from /proc.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, Iterator::count)
    }

    /// GET /healthz over a fresh connection, with a deadline.
    async fn healthy_within(&self, deadline: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let request = async {
            let mut stream = TcpStream::connect(&self.addr).await.map_err(|e| e.to_string())?;
            let text = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
            stream.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
            if response.starts_with("HTTP/1.1 200") { Ok(()) } else { Err(format!("answer: {response:?}")) }
        };
        match tokio::time::timeout(deadline, request).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(format!("no answer within {deadline:?}")),
        }
    }
}

/// A line for the person running the tests, past the harness's capture.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "hostile: {line}");
}

/// Reads until the peer closes or `deadline` passes; returns what was read and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (received, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_header_is_a_4xx_and_the_server_carries_on() {
    let server = Server::start(&[]).await;
    for (name, value) in
        [("X-Filler", "a".repeat(1 << 20)), ("Cookie", format!("bouncer_session={}", "b".repeat(1 << 20)))]
    {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        let head = format!("GET /api/v2/me/ HTTP/1.1\r\nHost: {}\r\n{name}: ", server.addr);
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may answer and close before it has read it all: a failed write is fine.
        let _ = stream.write_all(value.as_bytes()).await;
        let _ = stream.write_all(b"\r\nConnection: close\r\n\r\n").await;
        let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&received);
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        report(&format!("1 MiB {name} header: answered {:?}, connection closed: {closed}", text.lines().next()));
        assert!(status == 431 || status == 400, "1 MiB {name} header: {text:?}");
        assert!(closed, "the connection is closed after a 1 MiB {name} header");
    }
    // Many headers (hyper's limit is 100): also a 4xx.
    let mut stream = TcpStream::connect(&server.addr).await.unwrap();
    let mut request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", server.addr);
    for i in 0..500 {
        request.push_str(&format!("X-H{i}: v\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    report(&format!("500 headers: answered {:?}", text.lines().next()));
    assert!(text.starts_with("HTTP/1.1 4"), "500 headers: {text:?}");
    server.healthy_within(Duration::from_secs(2)).await.expect("the server still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_idle_connections_do_not_stop_a_normal_request() {
    let server = Server::start(&[]).await;
    server.healthy_within(Duration::from_secs(5)).await.unwrap();
    let (before, fds_before) = (server.rss_kib(), server.open_fds());
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(&server.addr).await.unwrap());
    }
    // Half of them also start a request and stall in its headers.
    for stream in idle.iter_mut().step_by(2) {
        stream.write_all(b"GET /api/v2/ HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = server.healthy_within(Duration::from_secs(2)).await;
    // A login works too (a database write, argon2 off the runtime).
    let login = tokio::time::timeout(
        Duration::from_secs(2),
        http(&server.addr, "POST", "/api/login/", None, Some(json!({"username": ADMIN, "password": PASSWORD}))),
    )
    .await;
    let (during, fds_during) = (server.rss_kib(), server.open_fds());
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, fds_after) = (server.rss_kib(), server.open_fds());
    report(&format!(
        "500 idle connections: /healthz answered in {took:?}; VmRSS {before} KiB before, {during} KiB with them open, \
         {after} KiB after closing them; open fds {fds_before} / {fds_during} / {fds_after}"
    ));
    assert!(took.is_ok(), "with 500 idle connections open, /healthz: {took:?}");
    assert!(matches!(login, Ok((200, _))), "with 500 idle connections open, a login: {login:?}");
    assert!(during < before + 64 * 1024, "500 idle connections cost {} KiB", during - before);
}

/// Clients that open a connection and stall must be dropped, or a few thousand of them (a
/// process's file descriptors) hold the server's sockets forever and it accepts no one else.
/// Three ways to stall: headers sent byte by byte and never finished (slowloris), nothing
/// sent at all, and half of HTTP/2's preface. The server is started with
/// `BOUNCER_HEADER_READ_TIMEOUT=2` (seconds); this test allows that plus 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stall_before_a_request_is_complete_are_dropped() {
    let server = Server::start(&[("BOUNCER_HEADER_READ_TIMEOUT", "2")]).await;
    let deadline = Duration::from_secs(2 + 2);
    let ways: [(&str, &[u8]); 3] = [
        ("slowloris (headers trickled, never finished)", b"POST /api/login/ HTTP/1.1\r\nHost: x\r\nX-A: "),
        ("a connection that sends nothing", b""),
        ("half of the HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    ];
    let mut stalled = Vec::new();
    for (name, bytes) in ways {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stalled.push((name, stream, None::<Duration>));
    }
    let started = Instant::now();
    // While they stall, the server serves everyone else.
    server.healthy_within(Duration::from_secs(2)).await.expect("served while clients stall");
    while started.elapsed() < deadline && stalled.iter().any(|(_, _, closed)| closed.is_none()) {
        for (name, stream, closed) in stalled.iter_mut().filter(|(_, _, closed)| closed.is_none()) {
            // The slowloris client keeps trickling a byte, as slowloris does.
            let write_failed = name.starts_with("slowloris") && stream.write_all(b"x").await.is_err();
            let (_, done) = read_until_closed(stream, Duration::from_millis(100)).await;
            if write_failed || done {
                *closed = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut problems = Problems::default();
    for (name, _, closed) in &stalled {
        match closed {
            Some(after) => report(&format!("stalled client, {name}: dropped after {after:.1?}")),
            None => {
                report(&format!("stalled client, {name}: FINDING: still connected after {:.1?}", started.elapsed()));
                problems.0.push(format!("{name}: still connected after {:?}", started.elapsed()));
            }
        }
    }
    problems.assert_none();
}

/// A request whose headers are complete but whose body never comes holds a task and a
/// socket until the request timeout (`408`, 30 s; see the in-process test below for the
/// timeout itself). Here: the server keeps serving others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_does_not_stop_others_being_served() {
    let server = Server::start(&[]).await;
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        let head =
            "POST /api/login/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{";
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    let took = server.healthy_within(Duration::from_secs(2)).await;
    let login = tokio::time::timeout(
        Duration::from_secs(2),
        http(&server.addr, "POST", "/api/login/", None, Some(json!({"username": ADMIN, "password": PASSWORD}))),
    )
    .await;
    report(&format!("50 stalled login bodies: /healthz answered in {took:?}"));
    assert!(took.is_ok(), "/healthz while 50 login bodies stall: {took:?}");
    assert!(matches!(login, Ok((200, _))), "a login while 50 login bodies stall: {login:?}");
}

/// The request timeout, in-process with tokio's clock paused: a body that never ends gets
/// `408` in the JSON shape once the timeout passes, without waiting for it in real time.
#[tokio::test]
async fn a_body_that_never_ends_gets_a_408() {
    let app = TestApp::sqlite().await;
    // Paused only now: the database pool's own timers must run in real time while it opens.
    tokio::time::pause();
    let body = futures_util::stream::once(async { Ok::<_, std::io::Error>(bytes_of("{\"username\": \"adm")) })
        .chain(futures_util::stream::pending());
    let request = Request::post("/api/login/")
        .header("content-type", "application/json")
        .header("content-length", "1000")
        .body(Body::from_stream(body))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(3600), app.raw(request)).await;
    let response = response.expect("a request whose body never ends is answered");
    let mut problems = Problems::default();
    problems.error(&response, StatusCode::REQUEST_TIMEOUT, "a body that never ends");
    problems.assert_none();
}

fn bytes_of(text: &str) -> axum::body::Bytes {
    axum::body::Bytes::copy_from_slice(text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_is_a_400_and_the_server_carries_on() {
    let server = Server::start(&[]).await;
    let garbage: [&[u8]; 8] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /api/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/login/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /api/login/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzzz\r\n",
        b"GET /api/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"\r\n\r\n\r\n\r\n",
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
        let (received, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 4") || text.starts_with("HTTP/1.0 4"),
            "{:?}: {text:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    server.healthy_within(Duration::from_secs(2)).await.expect("the server still serves");
}
