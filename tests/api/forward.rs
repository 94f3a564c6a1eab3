//! Bouncer in front of other applications: forward-auth (`/api/v2/auth/verify/`), token
//! introspection (`/api/v2/auth/introspect/`), and the hosts a form login may send a browser
//! back to (`BOUNCER_ALLOWED_REDIRECT_HOSTS`). nginx itself is driven in `nginx.rs`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use bouncer::clock::Clock;
use serde_json::{Value, json};

use crate::db_test;
use crate::helpers::*;

const VERIFY: &str = "/api/v2/auth/verify/";
const INTROSPECT: &str = "/api/v2/auth/introspect/";

fn basic(username: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
}

async fn verify(app: &TestApp, auth: Option<&str>, headers: &[(&str, &str)]) -> Response {
    app.send_with(Method::GET, VERIFY, auth, None, headers).await
}

/// Asserts a refusal: 401 with `reason` in the body and in `X-Auth-Reason`.
fn assert_refused(response: &Response, reason: &str) {
    assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{response:?}");
    assert_eq!(response.reason(), reason, "{response:?}");
    assert_eq!(response.header("x-auth-reason"), Some(reason));
    let login = format!("/api/login/?reason={reason}");
    assert_eq!(response.header("x-auth-login-url"), Some(login.as_str()), "no X-Original-URI, so no next");
    assert!(response.header("x-auth-user").is_none());
    assert!(response.body["detail"].is_string());
}

async fn introspect_form(app: &TestApp, auth: Option<&str>, form: &str) -> Response {
    let mut request = Request::post(INTROSPECT).header("content-type", "application/x-www-form-urlencoded");
    if let Some(auth) = auth {
        request = request.header("authorization", format!("Bearer {auth}"));
    }
    app.raw(request.body(Body::from(form.to_owned())).unwrap()).await
}

async fn introspect(app: &TestApp, auth: &str, token: &str) -> Response {
    let response = introspect_form(app, Some(auth), &format!("token={token}")).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    response
}

fn unix_seconds(micros: i64) -> i64 {
    micros.div_euclid(1_000_000)
}

db_test!(verify_says_who_the_caller_is_and_moves_the_idle_timer, |app| {
    let alice = app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 100})).await;
    let login = app.login("alice", PASSWORD).await;
    let token = login.body["token"].as_str().unwrap();
    let session = login.body["session"]["id"].as_i64().unwrap();

    for _ in 0..3 {
        app.advance(80);
        let response = verify(&app, Some(token), &[]).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(response.header("x-auth-user"), Some("alice"));
        assert_eq!(response.header("x-auth-user-id"), Some(alice.to_string().as_str()));
        assert_eq!(response.header("x-auth-session-id"), Some(session.to_string().as_str()));
        assert_eq!(response.header("auth-token-timeout"), Some("100"));
        assert_eq!(response.header("cache-control"), Some("no-store"));
        assert!(response.header("x-auth-reason").is_none());
        assert!(response.header("x-auth-login-url").is_none());
        assert_eq!(response.body, json!({"username": "alice", "user_id": alice, "session_id": session}));
    }
    // 240 s after the login and still alive: every check counted as a use.
    app.advance(80);
    assert_eq!(app.me(token).await.status, StatusCode::OK);

    // Tower's scheme, and HEAD (what some proxies send), answer the same.
    let tower = verify(&app, Some(&format!("Token {token}")), &[]).await;
    assert_eq!(tower.header("x-auth-user"), Some("alice"));
    let head = app.send(Method::HEAD, VERIFY, Some(token), None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-auth-user"), Some("alice"));
    assert_eq!(head.body, Value::Null);
});

db_test!(a_quiet_verify_does_not_move_the_idle_timer, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 100})).await;
    let token = app.token("alice", PASSWORD).await;
    app.advance(60);
    let quiet = verify(&app, Some(&token), &[("x-session-quiet", "1")]).await;
    assert_eq!(quiet.status, StatusCode::OK);
    assert_eq!(quiet.header("x-auth-user"), Some("alice"));
    assert_eq!(quiet.header("auth-token-timeout"), Some("40"));
    app.advance(41);
    assert_refused(&verify(&app, Some(&token), &[]).await, "timeout_reached");
});

db_test!(verify_refuses_with_the_reason_in_a_header, |app| {
    app.create_user("alice").await;
    assert_refused(&verify(&app, None, &[]).await, "not_authenticated");
    assert_refused(&verify(&app, Some("bnc_not-a-token"), &[]).await, "invalid_token");
    assert_refused(&verify(&app, None, &[("cookie", "bouncer_session=bnc_nope")]).await, "invalid_token");

    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let first = app.token("alice", PASSWORD).await;
    let second = app.token("alice", PASSWORD).await;
    let kicked = verify(&app, Some(&first), &[]).await;
    assert_refused(&kicked, "limit_reached");
    assert_eq!(kicked.body["detail"], json!("The maximum number of allowed sessions for this user has been exceeded."));
    assert!(kicked.header("www-authenticate").unwrap().contains("invalid_token"));

    assert_eq!(app.logout(&second).await.status, StatusCode::NO_CONTENT);
    assert_refused(&verify(&app, Some(&second), &[]).await, "logged_out");

    let third = app.token("alice", PASSWORD).await;
    app.advance(1801);
    assert_refused(&verify(&app, Some(&third), &[]).await, "timeout_reached");
});

db_test!(verify_gives_the_login_page_with_where_the_request_was_going, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let first = app.token("alice", PASSWORD).await;
    app.token("alice", PASSWORD).await;
    // Every parameter of the original URL survives, encoded, whichever header the proxy uses.
    let original = "/app/report?id=7&page=2&q=a%20b#top";
    for (header, auth, reason) in [
        ("x-original-uri", None, "not_authenticated"),
        ("x-forwarded-uri", None, "not_authenticated"),
        ("x-original-uri", Some(first.as_str()), "limit_reached"),
    ] {
        let refused = verify(&app, auth, &[(header, original)]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
        let login = refused.header("x-auth-login-url").unwrap();
        assert_eq!(
            login,
            format!("/api/login/?reason={reason}&next=%2Fapp%2Freport%3Fid%3D7%26page%3D2%26q%3Da%2520b%23top")
        );
        let query: Vec<(String, String)> = serde_urlencoded::from_str(login.split_once('?').unwrap().1).unwrap();
        assert_eq!(query, [("reason".into(), reason.into()), ("next".into(), original.into())]);
    }
    // Only a local path is passed on as `next`.
    for original in ["https://evil.example/", "//evil.example/", "report", ""] {
        let refused = verify(&app, None, &[("x-original-uri", original)]).await;
        assert_eq!(refused.header("x-auth-login-url"), Some("/api/login/?reason=not_authenticated"), "{original}");
    }
    // The login page takes that `next` back into its form.
    let login = verify(&app, None, &[("x-original-uri", original)]).await;
    let page = app
        .send_with(Method::GET, login.header("x-auth-login-url").unwrap(), None, None, &[("accept", "text/html")])
        .await;
    let html = page.body.as_str().unwrap_or("");
    assert!(html.contains(r#"name="next" value="/app/report?id=7&amp;page=2&amp;q=a%20b#top""#), "{html}");
});

db_test!(verify_takes_the_session_cookie_and_http_basic, |app| {
    let alice = app.create_user("alice").await;
    let login = app.login("alice", PASSWORD).await;
    let token = login.body["token"].as_str().unwrap();
    let session = login.body["session"]["id"].as_i64().unwrap().to_string();
    // A browser behind the proxy: its cookies, and `Accept: text/html`. Still the proxy's
    // answer (headers and JSON), never a page.
    let cookie = format!("csrftoken=abc; bouncer_session={token}");
    let html = "text/html,application/xhtml+xml,*/*;q=0.8";
    let browser = verify(&app, None, &[("cookie", &cookie), ("accept", html)]).await;
    assert_eq!(browser.status, StatusCode::OK, "{browser:?}");
    assert_eq!(browser.header("x-auth-user"), Some("alice"));
    assert_eq!(browser.header("x-auth-session-id"), Some(session.as_str()));
    assert!(browser.header("content-type").unwrap().starts_with("application/json"));
    let anonymous_browser = verify(&app, None, &[("accept", html)]).await;
    assert_refused(&anonymous_browser, "not_authenticated");
    assert!(anonymous_browser.header("content-type").unwrap().starts_with("application/json"));

    let basic_ok = verify(&app, Some(&basic("alice", PASSWORD)), &[]).await;
    assert_eq!(basic_ok.status, StatusCode::OK);
    assert_eq!(basic_ok.header("x-auth-user"), Some("alice"));
    assert_eq!(basic_ok.header("x-auth-user-id"), Some(alice.to_string().as_str()));
    assert!(basic_ok.header("x-auth-session-id").is_none(), "Basic has no session");
    assert_eq!(basic_ok.body["session_id"], Value::Null);
    assert_refused(&verify(&app, Some(&basic("alice", "wrong password")), &[]).await, "invalid_credentials");
    app.set(json!({"AUTH_BASIC_ENABLED": false})).await;
    assert_refused(&verify(&app, Some(&basic("alice", PASSWORD)), &[]).await, "basic_auth_disabled");
});

db_test!(introspection_describes_a_live_token_without_moving_its_timer, |app| {
    let alice = app.create_user("alice").await;
    app.create_user_with("audrey", json!({"is_system_auditor": true})).await;
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 100})).await;
    let auditor = app.token("audrey", PASSWORD).await;
    let logged_in_at = app.clock.now();
    let login = app.login("alice", PASSWORD).await;
    let token = login.body["token"].as_str().unwrap();
    let session = login.body["session"]["id"].as_i64().unwrap();

    app.advance(60);
    let answer = introspect(&app, &auditor, token).await;
    assert_eq!(
        answer.body,
        json!({
            "active": true,
            "username": "alice",
            "sub": alice.to_string(),
            "exp": unix_seconds(logged_in_at + 100_000_000),
            "iat": unix_seconds(logged_in_at),
            "sid": session,
            "token_type": "Bearer",
            "is_superuser": false,
            "is_system_auditor": false,
        })
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    // JSON says the same; the hint is accepted and ignored.
    let as_json = app
        .send(
            Method::POST,
            INTROSPECT,
            Some(&auditor),
            Some(json!({"token": token, "token_type_hint": "access_token"})),
        )
        .await;
    assert_eq!(as_json.status, StatusCode::OK);
    assert_eq!(as_json.body, answer.body);

    // Looking twice did not keep alice's session alive: 100 s after her login it is over.
    app.advance(41);
    assert_eq!(app.me(token).await.reason(), "timeout_reached");
    // The auditor's own requests did move the auditor's timer.
    let after = introspect(&app, &auditor, token).await;
    assert_eq!(after.body, json!({"active": false, "reason": "timeout_reached"}));
});

db_test!(introspection_says_why_a_token_is_not_active, |app| {
    app.create_user("alice").await;
    let admin = app.admin_token().await;
    let unknown = introspect(&app, &admin, "bnc_never-issued").await;
    assert_eq!(unknown.body, json!({"active": false, "reason": "invalid_token"}));
    let empty = introspect(&app, &admin, "").await;
    assert_eq!(empty.body, json!({"active": false, "reason": "invalid_token"}));

    let out = app.token("alice", PASSWORD).await;
    app.logout(&out).await;
    assert_eq!(introspect(&app, &admin, &out).await.body, json!({"active": false, "reason": "logged_out"}));

    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    // (The lower limit ended the older of the administrator's own sessions too.)
    let admin = app.admin_token().await;
    let first = app.token("alice", PASSWORD).await;
    let second = app.token("alice", PASSWORD).await;
    assert_eq!(introspect(&app, &admin, &first).await.body, json!({"active": false, "reason": "limit_reached"}));
    assert_eq!(introspect(&app, &admin, &second).await.body["active"], json!(true));
    // A superuser's token says so.
    let own = introspect(&app, &admin, &admin).await;
    assert_eq!(own.body["is_superuser"], json!(true));
    assert_eq!(own.body["username"], json!(ADMIN));
});

db_test!(introspection_is_for_superusers_and_system_auditors, |app| {
    app.create_user("alice").await;
    app.create_user_with("audrey", json!({"is_system_auditor": true})).await;
    let alice = app.token("alice", PASSWORD).await;
    let anonymous = introspect_form(&app, None, &format!("token={alice}")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.reason(), "not_authenticated");
    let own = introspect_form(&app, Some(&alice), &format!("token={alice}")).await;
    assert_eq!(own.status, StatusCode::FORBIDDEN);
    assert_eq!(own.reason(), "permission_denied");
    let auditor = app.token("audrey", PASSWORD).await;
    assert_eq!(introspect(&app, &auditor, &alice).await.body["username"], json!("alice"));
    let admin = basic(ADMIN, PASSWORD);
    let by_basic = app.send(Method::POST, INTROSPECT, Some(&admin), Some(json!({"token": alice}))).await;
    assert_eq!(by_basic.body["active"], json!(true));
    // OPTIONS shows the POST only to those who may use it.
    let options = app.send(Method::OPTIONS, INTROSPECT, Some(&auditor), None).await;
    assert!(options.body["actions"]["POST"]["token"]["required"].as_bool().unwrap());
    assert_eq!(app.send(Method::OPTIONS, INTROSPECT, Some(&alice), None).await.status, StatusCode::FORBIDDEN);
    // A cookie-authenticated introspection is a write like any other: CSRF applies.
    let forged = app
        .send_with(
            Method::POST,
            INTROSPECT,
            None,
            Some(json!({"token": alice})),
            &[("cookie", &format!("bouncer_session={auditor}"))],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(forged.reason(), "csrf_failed");
});

db_test!(bad_introspection_requests_get_clear_errors, |app| {
    let admin = app.admin_token().await;
    let missing = app.send(Method::POST, INTROSPECT, Some(&admin), Some(json!({}))).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body, json!({"token": ["This field is required."]}));
    let number = app.send(Method::POST, INTROSPECT, Some(&admin), Some(json!({"token": 5}))).await;
    assert_eq!(number.body, json!({"token": ["Not a valid string."]}));
    let hint =
        app.send(Method::POST, INTROSPECT, Some(&admin), Some(json!({"token": "x", "token_type_hint": 1}))).await;
    assert_eq!(hint.status, StatusCode::BAD_REQUEST);
    assert_eq!(hint.body, json!({"token_type_hint": ["Not a valid string."]}));
    let form = introspect_form(&app, Some(&admin), "tokn=x").await;
    assert_eq!(form.status, StatusCode::BAD_REQUEST);
    assert_eq!(form.body, json!({"token": ["This field is required."]}));
    let broken = app
        .raw(
            Request::post(INTROSPECT)
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "application/json")
                .body(Body::from("{\"token\": "))
                .unwrap(),
        )
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert!(broken.body["detail"].as_str().unwrap().starts_with("JSON parse error"));
    let text = app
        .raw(
            Request::post(INTROSPECT)
                .header("authorization", format!("Bearer {admin}"))
                .header("content-type", "text/plain")
                .body(Body::from("token=x"))
                .unwrap(),
        )
        .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(text.body["detail"].is_string());
    let wrong_method = app.send(Method::GET, INTROSPECT, Some(&admin), None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let post_verify = app.send(Method::POST, VERIFY, Some(&admin), None).await;
    assert_eq!(post_verify.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(post_verify.body["detail"].is_string());
});

/// A form login with `next`: the `Location` it answers with.
async fn form_login_to(app: &TestApp, next: &str) -> String {
    let root = app.get("/api/", None).await;
    let csrf = root
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next().and_then(|pair| pair.strip_prefix("csrftoken=")).map(str::to_owned))
        .unwrap();
    let form = serde_urlencoded::to_string([
        ("username", ADMIN),
        ("password", PASSWORD),
        ("csrfmiddlewaretoken", csrf.as_str()),
        ("next", next),
    ])
    .unwrap();
    let request = Request::post("/api/login/")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("csrftoken={csrf}"))
        .body(Body::from(form))
        .unwrap();
    let response = app.raw(request).await;
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{response:?}");
    response.header("location").unwrap().to_owned()
}

/// The `next` the login page carries into its form.
async fn login_page_next(app: &TestApp, next: &str) -> String {
    let query = serde_urlencoded::to_string([("next", next)]).unwrap();
    let response = app
        .raw(Request::get(format!("/api/login/?{query}")).header("accept", "text/html").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let page = response.body.as_str().unwrap();
    let field = page.split("name=\"next\" value=\"").nth(1).unwrap();
    field.split('"').next().unwrap().replace("&amp;", "&")
}

const HOSTILE: &[&str] = &[
    "//evil.example/",
    "https://evil.example/",
    "https://app.example@evil.example/",
    "https://evil.example/?x=app.example",
    "https://app.example.evil.example/",
    "https:\\\\app.example/",
    "/\\evil.example/",
    "https://app.example\\@evil.example/",
    "https://app.example/\n",
    "https://app.example/\u{0}",
    "javascript:alert(1)",
    "javascript://app.example/%0aalert(1)",
    "data:text/html,hi",
    "https://app.example:8443/",
];

async fn the_login_follows_next_only_to_allowed_hosts(app: TestApp) {
    for good in ["https://app.example/", "https://app.example/wiki/page?id=3", "http://127.0.0.1:8081/x", "/api/v2/me/"]
    {
        assert_eq!(form_login_to(&app, good).await, good);
        assert_eq!(login_page_next(&app, good).await, good);
    }
    for hostile in HOSTILE {
        assert_eq!(form_login_to(&app, hostile).await, "/api/v2/", "{hostile:?}");
        assert_eq!(login_page_next(&app, hostile).await, "/api/v2/", "{hostile:?}");
    }
    // The login page lets its form lead there (CSP `form-action` covers the redirect).
    let page = app.raw(Request::get("/api/login/").header("accept", "text/html").body(Body::empty()).unwrap()).await;
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("form-action 'self' http://app.example https://app.example"), "{csp}");
}

fn allowing_config() -> bouncer::config::Config {
    let mut config = test_config();
    config.allowed_redirect_hosts = vec!["app.example".into(), "127.0.0.1:8081".into()];
    config
}

mod the_login_follows_next_only_to_allowed_hosts {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        the_login_follows_next_only_to_allowed_hosts(TestApp::sqlite_with(allowing_config()).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let test = concat!(module_path!(), "::postgres");
        if let Some(app) = TestApp::postgres_with(test, allowing_config()).await {
            the_login_follows_next_only_to_allowed_hosts(app).await;
        }
    }
}

db_test!(without_allowed_hosts_the_login_follows_only_local_paths, |app| {
    assert_eq!(form_login_to(&app, "https://app.example/").await, "/api/v2/");
    assert_eq!(login_page_next(&app, "https://app.example/").await, "/api/v2/");
    assert_eq!(form_login_to(&app, "/api/v2/users/?page=2").await, "/api/v2/users/?page=2");
    let page = app.raw(Request::get("/api/login/").header("accept", "text/html").body(Body::empty()).unwrap()).await;
    assert!(page.header("content-security-policy").unwrap().ends_with("form-action 'self'"));
});

#[test]
fn a_bad_allowed_redirect_host_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bouncer"))
        .arg("serve")
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("never.db").display()))
        .env("BOUNCER_ALLOWED_REDIRECT_HOSTS", "app.example, https://evil.example/")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"https://evil.example/\" is not a host or host:port"), "{stderr}");
    assert!(!dir.path().join("never.db").exists(), "nothing started");
}
