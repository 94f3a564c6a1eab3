use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::db_test;
use crate::helpers::*;

async fn entries(app: &TestApp) -> Vec<Value> {
    let admin = app.admin_token().await;
    let response = app.get("/api/v2/activity_stream/?page_size=200", Some(&admin)).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    app.logout(&admin).await;
    response.body["results"].as_array().unwrap().clone()
}

db_test!(a_settings_change_is_one_entry_with_old_and_new_values, |app| {
    app.set(json!({"AUTH_TOKEN_PER_USER": 3, "AUTH_BASIC_ENABLED": false})).await;
    let all = entries(&app).await;
    let newest = &all[0];
    assert_eq!(newest["object"], json!("setting"));
    assert_eq!(newest["operation"], json!("update"));
    assert_eq!(newest["origin"], json!("api"));
    assert_eq!(newest["category"], json!("authentication"));
    assert_eq!(newest["actor"]["username"], json!(ADMIN));
    assert_eq!(newest["changes"], json!({"AUTH_TOKEN_PER_USER": [-1, 3], "AUTH_BASIC_ENABLED": [true, false]}));
    assert!(newest["timestamp"].as_str().unwrap().ends_with('Z'));
});

db_test!(a_rejected_or_empty_change_writes_no_entry, |app| {
    let before = entries(&app).await.len();
    assert_eq!(
        app.patch_settings(json!({"AUTH_TOKEN_PER_USER": 2, "AUTH_TOKEN_EXPIRATION": 1})).await.status,
        StatusCode::BAD_REQUEST
    );
    app.set(json!({"AUTH_TOKEN_PER_USER": -1})).await;
    assert_eq!(entries(&app).await.len(), before);
});

db_test!(resetting_the_category_is_recorded_as_a_delete, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 600})).await;
    let admin = app.admin_token().await;
    let response = app.send(Method::DELETE, "/api/v2/settings/authentication/", Some(&admin), None).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v2/settings/authentication/", Some(&admin)).await.body["AUTH_TOKEN_EXPIRATION"],
        json!(1800)
    );
    let newest = &entries(&app).await[0];
    assert_eq!(newest["operation"], json!("delete"));
    assert_eq!(newest["changes"], json!({"AUTH_TOKEN_EXPIRATION": [600, 1800]}));
});

db_test!(admin_actions_on_users_and_sessions_are_recorded, |app| {
    let alice = app.create_user("alice").await;
    let admin = app.admin_token().await;
    let path = format!("/api/v2/users/{alice}/");
    let sessions = format!("/api/v2/users/{alice}/sessions/");
    app.send(Method::PATCH, &path, Some(&admin), Some(json!({"password": "another secret"}))).await;
    app.token("alice", "another secret").await;
    app.send(Method::DELETE, &sessions, Some(&admin), None).await;
    // Nothing left to end: no entry.
    assert_eq!(app.send(Method::DELETE, &sessions, Some(&admin), None).await.status, StatusCode::NO_CONTENT);
    app.send(Method::PATCH, &path, Some(&admin), Some(json!({"is_active": false}))).await;
    app.send(Method::DELETE, &path, Some(&admin), None).await;
    let all = entries(&app).await;
    let about_alice: Vec<_> = all.iter().filter(|e| e["object_id"] == json!(alice)).collect();
    let ops: Vec<_> =
        about_alice.iter().map(|e| (e["object"].as_str().unwrap(), e["operation"].as_str().unwrap())).collect();
    assert_eq!(
        ops,
        [("user", "delete"), ("user", "update"), ("session", "revoke"), ("user", "update"), ("user", "create")]
    );
    assert_eq!(about_alice[4]["changes"]["username"], json!([null, "alice"]));
    assert_eq!(about_alice[3]["changes"], json!({"password": ["$encrypted$", "$encrypted$"]}));
    assert_eq!(about_alice[2]["changes"], json!({"active_sessions": [1, 0]}));
    assert_eq!(about_alice[1]["changes"], json!({"is_active": [true, false]}));
    assert_eq!(about_alice[0]["changes"], json!({"username": ["alice", null]}));
    // No secret ever reaches the stream.
    assert!(!serde_json::to_string(&all).unwrap().contains("another secret"));
});

db_test!(the_activity_stream_is_for_superusers_and_auditors, |app| {
    app.create_user("alice").await;
    app.create_user_with("audrey", json!({"is_system_auditor": true})).await;
    let alice = app.token("alice", PASSWORD).await;
    let audrey = app.token("audrey", PASSWORD).await;
    assert_eq!(app.get("/api/v2/activity_stream/", Some(&alice)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/api/v2/activity_stream/", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/api/v2/activity_stream/", Some(&audrey)).await.status, StatusCode::OK);
});
