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
