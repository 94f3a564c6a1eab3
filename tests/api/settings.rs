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

db_test!(put_requires_every_writable_key_and_all_is_the_same_category, |app| {
    let admin = app.admin_token().await;
    let partial =
        app.send(Method::PUT, "/api/v2/settings/all/", Some(&admin), Some(json!({"AUTH_TOKEN_PER_USER": 2}))).await;
    assert_eq!(partial.status, StatusCode::BAD_REQUEST);
    assert_eq!(partial.body["AUTH_TOKEN_EXPIRATION"], json!(["This field is required."]));
    assert!(partial.body.get("AUTH_TOKEN_PER_USER").is_none());
    let mut full = app.get("/api/v2/settings/all/", Some(&admin)).await.body;
    full["AUTH_TOKEN_PER_USER"] = json!(2);
    let put = app.send(Method::PUT, PATH, Some(&admin), Some(full)).await;
    assert_eq!(put.status, StatusCode::OK, "{put:?}");
    assert_eq!(app.get(PATH, Some(&admin)).await.body["AUTH_TOKEN_PER_USER"], json!(2));
    let patched =
        app.send(Method::PATCH, "/api/v2/settings/all/", Some(&admin), Some(json!({"AUTH_TOKEN_PER_USER": 4}))).await;
    assert_eq!(patched.body["AUTH_TOKEN_PER_USER"], json!(4));
    assert_eq!(app.get("/api/v2/settings/nope/", Some(&admin)).await.status, StatusCode::NOT_FOUND);
});

db_test!(delete_resets_every_stored_value, |app| {
    app.set(json!({"AUTH_TOKEN_PER_USER": 2, "AUTH_TOKEN_EXPIRATION": 600})).await;
    let admin = app.admin_token().await;
    assert_eq!(app.send(Method::DELETE, PATH, Some(&admin), None).await.status, StatusCode::NO_CONTENT);
    let values = app.get(PATH, Some(&admin)).await.body;
    assert_eq!(values["AUTH_TOKEN_PER_USER"], json!(-1));
    assert_eq!(values["AUTH_TOKEN_EXPIRATION"], json!(1800));
});

db_test!(options_describes_every_setting_the_awx_way, |app| {
    let admin = app.admin_token().await;
    let response = app.send(Method::OPTIONS, PATH, Some(&admin), None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.header("allow").unwrap().contains("PATCH"));
    let put = &response.body["actions"]["PUT"];
    let per_user = &put["AUTH_TOKEN_PER_USER"];
    assert_eq!(per_user["type"], json!("integer"));
    assert_eq!(per_user["min_value"], json!(-1));
    assert_eq!(per_user["max_value"], json!(1_000_000));
    assert_eq!(per_user["default"], json!(-1));
    assert!(per_user["help_text"].as_str().unwrap().contains("-1"));
    assert_eq!(put["AUTH_TOKEN_MAX_AGE"]["min_value"], json!(0));
    assert_eq!(put["AUTH_TOKEN_EXPIRATION"]["unit"], json!("seconds"));
    assert!(put["AUTH_TOKEN_EXPIRATION"]["help_text"].as_str().unwrap().contains("one minute"));
    assert_eq!(put["AUTH_TOKEN_EXPIRATION"]["label"], json!("Idle Time Force Log Out"));
    let basic_help = put["AUTH_BASIC_ENABLED"]["help_text"].as_str().unwrap();
    assert!(basic_help.contains("not enforced") && basic_help.contains("disable"), "{basic_help}");
    assert_eq!(
        put["SESSION_LIMIT_POLICY"]["choices"],
        json!([["kick_oldest", "kick_oldest"], ["deny_new", "deny_new"]])
    );
    assert_eq!(put["AUTH_BASIC_ENABLED"]["type"], json!("boolean"));
    for field in put.as_object().unwrap().values() {
        assert_eq!(field["category_slug"], json!("authentication"));
        assert_eq!(field["defined_in_file"], json!(false));
        assert_eq!(field["required"], json!(true));
    }

    app.create_user_with("audrey", json!({"is_system_auditor": true})).await;
    let audrey = app.token("audrey", PASSWORD).await;
    let auditor = app.send(Method::OPTIONS, PATH, Some(&audrey), None).await;
    assert!(auditor.body["actions"]["GET"].is_object());
    assert!(auditor.body["actions"].get("PUT").is_none());
});

db_test!(every_bound_and_type_is_checked, |app| {
    let cases = [
        ("AUTH_TOKEN_EXPIRATION", json!(59), false),
        ("AUTH_TOKEN_EXPIRATION", json!(60), true),
        ("AUTH_TOKEN_EXPIRATION", json!(30_000_000_000i64), true),
        ("AUTH_TOKEN_EXPIRATION", json!(30_000_000_001i64), false),
        ("AUTH_TOKEN_PER_USER", json!(-2), false),
        ("AUTH_TOKEN_PER_USER", json!(-1), true),
        ("AUTH_TOKEN_PER_USER", json!(0), false),
        ("AUTH_TOKEN_PER_USER", json!(1), true),
        ("AUTH_TOKEN_PER_USER", json!(1_000_000), true),
        ("AUTH_TOKEN_PER_USER", json!(1_000_001), false),
        ("AUTH_TOKEN_MAX_AGE", json!(0), true),
        ("AUTH_TOKEN_MAX_AGE", json!(59), false),
        ("AUTH_TOKEN_MAX_AGE", json!(60), true),
        ("AUTH_LOGIN_FAILURE_LIMIT", json!(-1), false),
        ("AUTH_LOGIN_FAILURE_LIMIT", json!(1000), true),
        ("AUTH_LOGIN_FAILURE_LIMIT", json!(1001), false),
        ("AUTH_LOGIN_LOCKOUT_SECONDS", json!(0), false),
        ("AUTH_LOGIN_LOCKOUT_SECONDS", json!(86_400), true),
        ("AUTH_TOKEN_EXPIRATION", json!("1800"), false),
        ("AUTH_TOKEN_EXPIRATION", json!(1800.5), false),
        ("AUTH_TOKEN_EXPIRATION", json!(true), false),
        ("AUTH_TOKEN_PER_USER", json!([3]), false),
        ("AUTH_BASIC_ENABLED", json!(1), false),
        ("AUTH_BASIC_ENABLED", json!("true"), false),
        ("AUTH_BASIC_ENABLED", json!(false), true),
        ("SESSION_LIMIT_POLICY", json!("deny_new"), true),
        ("SESSION_LIMIT_POLICY", json!(1), false),
        ("SESSION_LIMIT_POLICY", json!("DENY_NEW"), false),
    ];
    for (key, value, accepted) in cases {
        let response = app.patch_settings(json!({ key: value.clone() })).await;
        let expected = if accepted { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        assert_eq!(response.status, expected, "{key} = {value}: {response:?}");
        if !accepted {
            assert!(response.body[key][0].as_str().is_some_and(|m| m.ends_with('.')), "{key} = {value}: {response:?}");
        }
    }
});
