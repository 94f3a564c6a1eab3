use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

const PATH: &str = "/api/v2/settings/authentication/";

db_test!(the_settings_start_at_their_defaults, |app| {
    let admin = app.admin_token().await;
    let response = app.get(PATH, Some(&admin)).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.body,
        json!({"AUTH_TOKEN_EXPIRATION": 1800, "AUTH_TOKEN_PER_USER": -1, "AUTH_BASIC_ENABLED": true,
               "AUTH_TOKEN_MAX_AGE": 0, "SESSION_LIMIT_POLICY": "kick_oldest", "AUTH_LOGIN_FAILURE_LIMIT": 10,
               "AUTH_LOGIN_LOCKOUT_SECONDS": 300})
    );
});

db_test!(a_change_is_stored_and_survives_a_restart, |app| {
    let response = app.patch_settings(json!({"AUTH_TOKEN_PER_USER": 5, "SESSION_LIMIT_POLICY": "deny_new"})).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body["AUTH_TOKEN_PER_USER"], json!(5));
    let (stored, _) = bouncer::settings::load_stored(&app.state.db).await.unwrap();
    assert_eq!(stored["AUTH_TOKEN_PER_USER"], json!(5));
    assert_eq!(stored["SESSION_LIMIT_POLICY"], json!("deny_new"));
});

db_test!(invalid_values_get_clear_messages_and_nothing_is_written, |app| {
    let response = app
        .patch_settings(json!({
            "AUTH_TOKEN_EXPIRATION": 59, "AUTH_TOKEN_PER_USER": 0, "AUTH_BASIC_ENABLED": "no",
            "AUTH_TOKEN_MAX_AGE": 30, "SESSION_LIMIT_POLICY": "kick_everyone", "AUTH_LOGIN_LOCKOUT_SECONDS": 86401,
            "NOT_A_SETTING": 1
        }))
        .await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    let body = &response.body;
    assert_eq!(body["AUTH_TOKEN_EXPIRATION"], json!(["Ensure this value is greater than or equal to 60."]));
    assert!(body["AUTH_TOKEN_PER_USER"][0].as_str().unwrap().contains("lock every user out"));
    assert_eq!(body["AUTH_BASIC_ENABLED"], json!(["Must be a valid boolean."]));
    assert!(body["AUTH_TOKEN_MAX_AGE"][0].as_str().unwrap().contains("at least 60 seconds"));
    assert!(body["SESSION_LIMIT_POLICY"][0].as_str().unwrap().contains("not a valid choice"));
    assert_eq!(body["AUTH_LOGIN_LOCKOUT_SECONDS"], json!(["Ensure this value is less than or equal to 86400."]));
    assert_eq!(body["NOT_A_SETTING"], json!(["Unknown setting."]));

    // One bad key keeps the good one from being written too.
    let mixed = app.patch_settings(json!({"AUTH_TOKEN_PER_USER": 3, "AUTH_TOKEN_EXPIRATION": "1800"})).await;
    assert_eq!(mixed.status, StatusCode::BAD_REQUEST);
    assert_eq!(mixed.body, json!({"AUTH_TOKEN_EXPIRATION": ["A valid integer is required."]}));
    assert_eq!(app.state.settings.current().values()["AUTH_TOKEN_PER_USER"], json!(-1));
    let (stored, _) = bouncer::settings::load_stored(&app.state.db).await.unwrap();
    assert!(!stored.contains_key("AUTH_TOKEN_PER_USER"));
});

db_test!(the_bounds_themselves_are_accepted, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 60, "AUTH_TOKEN_PER_USER": 1, "AUTH_TOKEN_MAX_AGE": 60})).await;
    app.set(
        json!({"AUTH_TOKEN_EXPIRATION": 30_000_000_000i64, "AUTH_TOKEN_PER_USER": 1_000_000, "AUTH_TOKEN_MAX_AGE": 0}),
    )
    .await;
    app.set(json!({"AUTH_TOKEN_PER_USER": -1, "AUTH_LOGIN_FAILURE_LIMIT": 0, "AUTH_LOGIN_LOCKOUT_SECONDS": 1})).await;
    let too_big = app.patch_settings(json!({"AUTH_TOKEN_EXPIRATION": 30_000_000_001i64})).await;
    assert_eq!(
        too_big.body,
        json!({"AUTH_TOKEN_EXPIRATION": ["Ensure this value is less than or equal to 30000000000."]})
    );
});

db_test!(null_resets_a_setting_to_its_default, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 600})).await;
    let response = app.patch_settings(json!({"AUTH_TOKEN_EXPIRATION": null})).await;
    assert_eq!(response.body["AUTH_TOKEN_EXPIRATION"], json!(1800));
});

db_test!(only_a_superuser_changes_settings_and_an_auditor_reads_them, |app| {
    app.create_user("alice").await;
    app.create_user_with("audrey", json!({"is_system_auditor": true})).await;
    let alice = app.token("alice", PASSWORD).await;
    let audrey = app.token("audrey", PASSWORD).await;
    assert_eq!(app.get(PATH, Some(&alice)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get(PATH, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get(PATH, Some(&audrey)).await.status, StatusCode::OK);
    let categories = app.get("/api/v2/settings/", Some(&audrey)).await;
    let slugs: Vec<_> = categories.body["results"].as_array().unwrap().iter().map(|c| c["slug"].clone()).collect();
    assert_eq!(slugs, [json!("all"), json!("authentication")]);
    let change = Some(json!({"AUTH_TOKEN_PER_USER": 1}));
    assert_eq!(app.send(Method::PATCH, PATH, Some(&audrey), change.clone()).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.send(Method::PATCH, PATH, Some(&alice), change).await.status, StatusCode::FORBIDDEN);
});

db_test!(a_settings_body_must_be_a_json_object, |app| {
    let admin = app.admin_token().await;
    let response = app.send(Method::PATCH, PATH, Some(&admin), Some(json!([1, 2]))).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.body["detail"].is_string());
});
