use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

const PATH: &str = "/api/v2/settings/authentication/";

db_test!(
    a_key_defined_in_a_file_overrides_the_database_and_is_read_only,
    conf = [("10-limits.toml", "AUTH_TOKEN_PER_USER = 2\n"), ("20-tower.py", "AUTH_BASIC_ENABLED = False  # locked\n")],
    |app| {
        let admin = app.admin_token().await;
        let values = app.get(PATH, Some(&admin)).await;
        assert_eq!(values.body["AUTH_TOKEN_PER_USER"], json!(2));
        assert_eq!(values.body["AUTH_BASIC_ENABLED"], json!(false));

        let write = app.send(Method::PATCH, PATH, Some(&admin), Some(json!({"AUTH_TOKEN_PER_USER": 5}))).await;
        assert_eq!(write.status, StatusCode::BAD_REQUEST);
        let message = write.body["AUTH_TOKEN_PER_USER"][0].as_str().unwrap();
        assert!(message.contains("10-limits.toml") && message.contains("cannot be changed"), "{message}");
        let reset = app.send(Method::PATCH, PATH, Some(&admin), Some(json!({"AUTH_BASIC_ENABLED": null}))).await;
        assert!(reset.body["AUTH_BASIC_ENABLED"][0].as_str().unwrap().contains("20-tower.py"));

        // The file's own value sent back (a GET sent back as PUT) is not a change.
        let mut all = values.body.clone();
        all["AUTH_TOKEN_EXPIRATION"] = json!(900);
        let put = app.send(Method::PUT, PATH, Some(&admin), Some(all)).await;
        assert_eq!(put.status, StatusCode::OK, "{put:?}");
        assert_eq!(put.body["AUTH_TOKEN_EXPIRATION"], json!(900));

        let options = app.send(Method::OPTIONS, PATH, Some(&admin), None).await;
        let get = &options.body["actions"]["GET"];
        assert_eq!(get["AUTH_TOKEN_PER_USER"]["defined_in_file"], json!(true));
        assert_eq!(get["AUTH_TOKEN_EXPIRATION"]["defined_in_file"], json!(false));
        let put_fields = options.body["actions"]["PUT"].as_object().unwrap();
        assert!(!put_fields.contains_key("AUTH_TOKEN_PER_USER"));
        assert!(!put_fields.contains_key("AUTH_BASIC_ENABLED"));
        assert!(put_fields.contains_key("AUTH_TOKEN_EXPIRATION"));

        // Enforced: the third login of a user ends the first.
        app.create_user("alice").await;
        let first = app.token("alice", PASSWORD).await;
        app.token("alice", PASSWORD).await;
        app.token("alice", PASSWORD).await;
        assert_eq!(app.me(&first).await.reason(), "limit_reached");
    }
);

db_test!(a_file_value_wins_over_a_value_stored_earlier, conf = [], |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 600})).await;
    let dir = app.state.settings.conf_dir.clone().unwrap();
    std::fs::write(dir.join("site.py"), "AUTH_TOKEN_EXPIRATION = 120\n").unwrap();
    bouncer::settings::reload_files(&app.state).await.unwrap().unwrap();
    let admin = app.admin_token().await;
    assert_eq!(app.get(PATH, Some(&admin)).await.body["AUTH_TOKEN_EXPIRATION"], json!(120));
    // Removing the file brings the stored value back.
    std::fs::remove_file(dir.join("site.py")).unwrap();
    bouncer::settings::reload_files(&app.state).await.unwrap().unwrap();
    assert_eq!(app.get(PATH, Some(&admin)).await.body["AUTH_TOKEN_EXPIRATION"], json!(600));
});

db_test!(
    a_bad_file_on_reload_keeps_the_values_in_force,
    conf = [("limits.toml", "AUTH_TOKEN_PER_USER = 4\n")],
    |app| {
        let dir = app.state.settings.conf_dir.clone().unwrap();
        std::fs::write(dir.join("limits.toml"), "AUTH_TOKEN_PER_USER = 0\n").unwrap();
        let errors = bouncer::settings::reload_files(&app.state).await.unwrap().unwrap_err();
        assert!(errors.0[0].ends_with("limits.toml:1: AUTH_TOKEN_PER_USER: 0 would lock every user out; enter -1 for no limit, or a number of sessions from 1 to 1000000."), "{errors}");
        assert_eq!(app.state.settings.current().values()["AUTH_TOKEN_PER_USER"], json!(4));
    }
);

db_test!(a_reloaded_file_is_recorded_with_origin_file_and_applies_at_once, conf = [], |app| {
    let alice = app.create_user("alice").await;
    for _ in 0..3 {
        app.token("alice", PASSWORD).await;
        app.advance(1);
    }
    let dir = app.state.settings.conf_dir.clone().unwrap();
    std::fs::write(dir.join("limits.py"), "AUTH_TOKEN_PER_USER = 1\n").unwrap();
    bouncer::settings::reload_files(&app.state).await.unwrap().unwrap();
    assert_eq!(app.active_count(alice).await, 1);
    let admin = app.admin_token().await;
    let stream = app.get("/api/v2/activity_stream/", Some(&admin)).await;
    let entry = stream.body["results"].as_array().unwrap().iter().find(|e| e["origin"] == json!("file")).unwrap();
    assert_eq!(entry["changes"], json!({"AUTH_TOKEN_PER_USER": [-1, 1]}));
    assert_eq!(entry["actor"], json!(null));
});
