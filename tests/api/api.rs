use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

#[tokio::test]
async fn the_committed_openapi_document_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap_or_default();
    let generated = bouncer::cli::openapi_json();
    assert!(
        committed.trim() == generated.trim(),
        "openapi/openapi.json is out of date: regenerate it with `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let doc = bouncer::openapi();
    for path in [
        "/api/",
        "/api/v2/",
        "/api/login/",
        "/api/logout/",
        "/api/v2/me/",
        "/api/v2/me/sessions/",
        "/api/v2/me/sessions/{id}/",
        "/api/v2/users/",
        "/api/v2/users/{id}/",
        "/api/v2/users/{id}/sessions/",
        "/api/v2/settings/",
        "/api/v2/settings/{slug}/",
        "/api/v2/activity_stream/",
        "/api/v2/auth/verify/",
        "/api/v2/auth/introspect/",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is missing from the OpenAPI document");
    }
}

db_test!(bad_requests_get_the_json_error_shape_never_a_500, |app| {
    let malformed = app
        .raw(Request::post("/api/login/").header("content-type", "application/json").body(Body::from("{nope")).unwrap())
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.body["detail"].as_str().unwrap().starts_with("JSON parse error"));

    let form = app
        .raw(Request::post("/api/login/").header("content-type", "text/plain").body(Body::from("username=a")).unwrap())
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(form.body["detail"].is_string());

    let huge = format!("{{\"username\": \"{}\", \"password\": \"x\"}}", "a".repeat(70 * 1024));
    let oversized = app
        .raw(Request::post("/api/login/").header("content-type", "application/json").body(Body::from(huge)).unwrap())
        .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(oversized.body["detail"].is_string());

    let missing = app.get("/api/v2/nothing-here/", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"detail": "Not found."}));

    let method = app.send(Method::DELETE, "/api/login/", None, None).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(method.body, json!({"detail": "Method not allowed."}));

    let admin = app.admin_token().await;
    let bad_id = app.get("/api/v2/users/not-a-number/", Some(&admin)).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert!(bad_id.body["detail"].is_string());
    let huge_id = app.get("/api/v2/users/99999999999999999999999/", Some(&admin)).await;
    assert!(huge_id.status.is_client_error());
    let unknown = app.get("/api/v2/users/424242/", Some(&admin)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
});

db_test!(every_answer_tells_browsers_not_to_sniff_its_type, |app| {
    let admin = app.admin_token().await;
    for (path, token) in [
        ("/api/v2/me/", Some(admin.as_str())),
        ("/api/v2/me/", None),
        ("/api/v2/nothing-here/", None),
        ("/healthz", None),
        ("/metrics", None),
        ("/api/openapi.json", None),
        ("/api/docs/", None),
    ] {
        let response = app.get(path, token).await;
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"), "{path} ({})", response.status);
    }
});

db_test!(the_roots_link_to_the_resources, |app| {
    let root = app.get("/api/", None).await;
    assert_eq!(root.body["current_version"], json!("/api/v2/"));
    assert_eq!(root.body["available_versions"]["v2"], json!("/api/v2/"));
    let v2 = app.get("/api/v2/", None).await;
    for key in ["me", "users", "settings"] {
        assert!(v2.body[key].as_str().unwrap().starts_with("/api/v2/"));
    }
});

db_test!(health_and_readiness_answer, |app| {
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    app.state.db.close().await;
    let down = app.get("/readyz", None).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.reason(), "unavailable");
    // A request that needs the database fails with 503 in the same shape, not a 500.
    let login = app.login(ADMIN, PASSWORD).await;
    assert_eq!(login.status, StatusCode::SERVICE_UNAVAILABLE, "{login:?}");
});

#[tokio::test]
async fn swagger_ui_and_the_document_are_served_from_the_binary() {
    let app = TestApp::sqlite().await;
    let ui = app.get("/api/docs/", None).await;
    assert_eq!(ui.status, StatusCode::OK);
    assert!(ui.body.as_str().unwrap().contains("swagger"));
    let doc = app.get("/api/openapi.json", None).await;
    assert_eq!(doc.body["openapi"], json!("3.1.0"));
}
