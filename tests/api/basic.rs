use axum::http::StatusCode;
use base64::Engine;
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

fn basic(username: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
}

db_test!(basic_auth_works_while_enabled_and_creates_no_session, |app| {
    let alice = app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let token = app.token("alice", PASSWORD).await;
    for _ in 0..3 {
        let response = app.get("/api/v2/me/", Some(&basic("alice", PASSWORD))).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body["username"], json!("alice"));
        assert!(response.header("auth-token-timeout").is_none());
    }
    // Not counted against the limit, and not limited by it.
    assert_eq!(app.sessions_of(alice).await.len(), 1);
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
    let wrong = app.get("/api/v2/me/", Some(&basic("alice", "wrong password"))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.reason(), "invalid_credentials");
});

db_test!(basic_auth_disabled_gets_its_own_401_and_never_a_basic_challenge, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_BASIC_ENABLED": false})).await;
    let response = app.get("/api/v2/me/", Some(&basic("alice", PASSWORD))).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.body,
        json!({"detail": "HTTP Basic authentication is disabled.", "reason": "basic_auth_disabled"})
    );
    for response in [response, app.get("/api/v2/me/", None).await, app.login("alice", "wrong").await] {
        let challenge = response.header("www-authenticate").unwrap_or("").to_lowercase();
        assert!(!challenge.contains("basic"), "{challenge}");
    }
    // Tokens still work.
    let token = app.token("alice", PASSWORD).await;
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
});

db_test!(malformed_basic_credentials_are_invalid_credentials, |app| {
    let response = app.get("/api/v2/me/", Some("Basic !!!not-base64")).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(response.reason(), "invalid_credentials");
});

// While Basic is off, what a Basic client needs to hear is that it is off, whatever its
// header holds: not `invalid_credentials`, which would send it looking for a typo.
db_test!(while_disabled_any_basic_header_gets_basic_auth_disabled_even_a_malformed_one, |app| {
    app.set(json!({"AUTH_BASIC_ENABLED": false})).await;
    let no_colon = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice"));
    let not_text = axum::http::HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap();
    let mut headers: Vec<axum::http::HeaderValue> =
        ["Basic !!!not-base64", no_colon.as_str(), "Basic", "basic   ", "BASIC ="]
            .into_iter()
            .map(|value| axum::http::HeaderValue::from_str(value).unwrap())
            .collect();
    headers.push(not_text);
    for header in headers {
        for (method, path) in [("GET", "/api/v2/me/"), ("POST", "/api/logout/")] {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", header.clone())
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.raw(request).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{method} {path} {header:?}");
            assert_eq!(response.reason(), "basic_auth_disabled", "{method} {path} {header:?}");
        }
    }
    // Enabled again, a malformed header is what it is.
    app.set(json!({"AUTH_BASIC_ENABLED": true})).await;
    for header in ["Basic !!!not-base64", no_colon.as_str(), "Basic"] {
        let response =
            app.send_with(axum::http::Method::GET, "/api/v2/me/", None, None, &[("authorization", header)]).await;
        assert_eq!(response.reason(), "invalid_credentials", "{header}");
    }
});
