//! Security properties, each a test: who may do what (the authorization matrix), the client
//! address behind proxies, no secret in the logs, and a login storm that cannot starve the
//! server.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::db_test;
use crate::helpers::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Anonymous,
    User,
    OtherUser,
    Auditor,
    Superuser,
}

use Role::*;

db_test!(every_route_answers_each_role_as_the_contract_says, |app| {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    // The target of the destructive rows, so that they end nobody's token used here.
    let dave = app.create_user("dave").await;
    app.create_user_with("audrey", json!({"is_system_auditor": true})).await;
    let tokens = [
        (User, app.token("alice", PASSWORD).await),
        (OtherUser, app.token("bob", PASSWORD).await),
        (Auditor, app.token("audrey", PASSWORD).await),
        (Superuser, app.admin_token().await),
    ];
    // alice's own session: the "user" owns it, the "other user" does not.
    let alice_sessions = app.get("/api/v2/me/sessions/", Some(&tokens[0].1)).await;
    let alice_session = alice_sessions.body["results"][0]["id"].as_i64().unwrap();

    // (method, path, body, [anonymous, user, other user, auditor, superuser]); 0 = any 2xx,
    // 1 = checked separately.
    let routes: Vec<(Method, String, Option<Value>, [u16; 5])> = vec![
        (Method::GET, "/api/".into(), None, [0, 0, 0, 0, 0]),
        (Method::GET, "/api/v2/".into(), None, [0, 0, 0, 0, 0]),
        (Method::GET, "/metrics".into(), None, [0, 0, 0, 0, 0]),
        (Method::GET, "/api/v2/me/".into(), None, [401, 0, 0, 0, 0]),
        (Method::GET, "/api/v2/me/sessions/".into(), None, [401, 0, 0, 0, 0]),
        // Another user's session is 404 to a non-superuser (the contract); the superuser
        // reaches it, and ends it (users::a_superuser_reaches_any_session_at_its_url).
        (Method::GET, format!("/api/v2/me/sessions/{alice_session}/"), None, [401, 0, 404, 404, 0]),
        (Method::GET, "/api/v2/users/".into(), None, [401, 403, 403, 0, 0]),
        (
            Method::POST,
            "/api/v2/users/".into(),
            Some(json!({"username": "x1", "password": PASSWORD})),
            [401, 403, 403, 403, 0],
        ),
        (Method::GET, format!("/api/v2/users/{alice}/"), None, [401, 403, 403, 0, 0]),
        (
            Method::PATCH,
            format!("/api/v2/users/{dave}/"),
            Some(json!({"is_system_auditor": false})),
            [401, 403, 403, 403, 0],
        ),
        (Method::GET, format!("/api/v2/users/{alice}/sessions/"), None, [401, 403, 403, 0, 0]),
        (Method::GET, "/api/v2/settings/".into(), None, [401, 403, 403, 0, 0]),
        (Method::GET, "/api/v2/settings/authentication/".into(), None, [401, 403, 403, 0, 0]),
        (Method::OPTIONS, "/api/v2/settings/authentication/".into(), None, [401, 403, 403, 0, 0]),
        (
            Method::PATCH,
            "/api/v2/settings/authentication/".into(),
            Some(json!({"AUTH_TOKEN_EXPIRATION": 1800})),
            [401, 403, 403, 403, 0],
        ),
        (Method::PUT, "/api/v2/settings/all/".into(), Some(json!({})), [401, 403, 403, 403, 400]),
        (Method::GET, "/api/v2/activity_stream/".into(), None, [401, 403, 403, 0, 0]),
        (Method::DELETE, format!("/api/v2/me/sessions/{alice_session}/"), None, [401, 1, 404, 404, 1]),
        (Method::DELETE, format!("/api/v2/users/{dave}/sessions/"), None, [401, 403, 403, 403, 0]),
        (Method::DELETE, "/api/v2/settings/authentication/".into(), None, [401, 403, 403, 403, 0]),
        (Method::DELETE, format!("/api/v2/users/{dave}/"), None, [401, 403, 403, 403, 0]),
    ];
    let roles = [Anonymous, User, OtherUser, Auditor, Superuser];
    for (method, path, body, expected) in &routes {
        for (role, want) in roles.iter().zip(expected) {
            if *want == 1 {
                continue;
            }
            let token = tokens.iter().find(|(r, _)| r == role).map(|(_, t)| t.as_str());
            let response = app.send(method.clone(), path, token, body.clone()).await;
            let ok = match want {
                0 => response.status.is_success(),
                code => response.status.as_u16() == *code,
            };
            assert!(ok, "{method} {path} as {role:?}: expected {want}, got {response:?}");
            if response.status == StatusCode::FORBIDDEN {
                assert_eq!(response.reason(), "permission_denied");
            }
        }
    }
    // The owner may end his own session; that comes last because it ends it.
    let own =
        app.send(Method::DELETE, &format!("/api/v2/me/sessions/{alice_session}/"), Some(&tokens[0].1), None).await;
    assert_eq!(own.status, StatusCode::NO_CONTENT);
});

/// A request as if from `peer`, with `X-Forwarded-For: 203.0.113.9`.
fn login_from(peer: &str) -> Request<Body> {
    let mut request = Request::post("/api/login/")
        .header("content-type", "application/json")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Body::from(json!({"username": ADMIN, "password": PASSWORD}).to_string()))
        .unwrap();
    request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
    request
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted() {
    let app = TestApp::sqlite().await;
    let direct = app.raw(login_from("198.51.100.7:40000")).await;
    assert_eq!(direct.body["session"]["ip_address"], json!("198.51.100.7"));

    let mut config = test_config();
    config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let proxied = TestApp::sqlite_with(config).await;
    let through_proxy = proxied.raw(login_from("10.1.2.3:40000")).await;
    assert_eq!(through_proxy.body["session"]["ip_address"], json!("203.0.113.9"));
    let not_the_proxy = proxied.raw(login_from("198.51.100.7:40000")).await;
    assert_eq!(not_the_proxy.body["session"]["ip_address"], json!("198.51.100.7"));
}

#[tokio::test]
async fn no_token_or_password_reaches_the_logs_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("logs.db").display());
    let server = Server::start(&url, &[("RUST_LOG", "trace")]).await;
    let addr = server.addr.as_str();
    let login = |username: &'static str, password: &'static str| {
        http(addr, "POST", "/api/login/", None, Some(json!({"username": username, "password": password})))
    };
    let (_, admin) = login(ADMIN, PASSWORD).await;
    let admin = admin["token"].as_str().unwrap().to_owned();
    let secret = "a very secret password";
    let (status, carol) =
        http(addr, "POST", "/api/v2/users/", Some(&admin), Some(json!({"username": "carol", "password": secret})))
            .await;
    assert_eq!(status, 201, "{carol}");
    let (_, body) = login("carol", "a very secret password").await;
    let token = body["token"].as_str().unwrap().to_owned();
    http(addr, "GET", "/api/v2/me/", Some(&token), None).await;
    login("carol", "a wrong password here").await;
    http(addr, "POST", "/api/logout/", Some(&token), None).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let logs = server.log();
    // Everything is enabled: sqlx logs every statement at DEBUG.
    assert!(logs.contains("DEBUG sqlx::query") && logs.contains("logged in") && logs.contains("logged_out"), "{logs}");
    for secret in [secret, token.as_str(), admin.as_str(), "a wrong password here", PASSWORD] {
        assert!(!logs.contains(secret), "a secret reached the logs: {secret}");
    }
}

#[tokio::test]
async fn a_login_storm_gets_fast_503s_beyond_the_queue_while_requests_keep_answering() {
    let mut config = test_config();
    // One hash at a time, one waiting; each hash costs real work.
    config.argon2 = bouncer::auth::password::Argon2Config {
        memory_kib: 8 * 1024,
        iterations: 8,
        parallelism: 1,
        max_concurrent: 1,
        max_queued: 1,
    };
    let app = TestApp::sqlite_with(config).await;
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 0})).await;
    let token = app.admin_token().await;
    let mut storm = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let router = app.router.clone();
        storm.spawn(async move {
            use tower::ServiceExt;
            let body = json!({"username": ADMIN, "password": PASSWORD}).to_string();
            let request =
                Request::post("/api/login/").header("content-type", "application/json").body(Body::from(body)).unwrap();
            let started = std::time::Instant::now();
            let response = router.oneshot(request).await.unwrap();
            (response.status(), response.headers().get("retry-after").cloned(), started.elapsed())
        });
    }
    // Authenticated requests need no hash: they keep answering.
    for _ in 0..5 {
        assert_eq!(app.me(&token).await.status, StatusCode::OK);
    }
    let results = storm.join_all().await;
    let busy: Vec<_> = results.iter().filter(|(status, _, _)| *status == StatusCode::SERVICE_UNAVAILABLE).collect();
    let ok = results.iter().filter(|(status, _, _)| *status == StatusCode::OK).count();
    assert!(ok >= 1 && !busy.is_empty(), "ok {ok}, busy {}", busy.len());
    assert_eq!(ok + busy.len(), 40);
    for (_, retry_after, elapsed) in &busy {
        assert_eq!(retry_after.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
        assert!(elapsed.as_secs() < 2, "a refusal is fast: {elapsed:?}");
    }
    let refused = app.login(ADMIN, PASSWORD).await;
    assert!(refused.status == StatusCode::OK || refused.reason() == "busy");
}

db_test!(unknown_user_and_wrong_password_responses_are_byte_identical, |app| {
    let wrong = app.login(ADMIN, "not the password").await;
    let unknown = app.login("nobody-at-all", "not the password").await;
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(serde_json::to_vec(&wrong.body).unwrap(), serde_json::to_vec(&unknown.body).unwrap());
    let headers = |r: &Response| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            // Per request by design: the date and the request id.
            .filter(|(name, _)| *name != "date" && *name != "x-request-id")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        h.sort();
        h
    };
    assert_eq!(headers(&wrong), headers(&unknown));
});
