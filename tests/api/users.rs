use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

db_test!(changing_a_password_ends_the_users_sessions_with_password_changed, |app| {
    let alice = app.create_user("alice").await;
    let token = app.token("alice", PASSWORD).await;
    let admin = app.admin_token().await;
    let patch = json!({"password": "a brand new secret"});
    let response = app.send(Method::PATCH, &format!("/api/v2/users/{alice}/"), Some(&admin), Some(patch)).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    let after = app.me(&token).await;
    assert_eq!(after.body, json!({"detail": "The password for this user was changed.", "reason": "password_changed"}));
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("alice", "a brand new secret").await.status, StatusCode::OK);
});

db_test!(deactivating_a_user_ends_the_sessions_with_user_disabled, |app| {
    let alice = app.create_user("alice").await;
    let token = app.token("alice", PASSWORD).await;
    let admin = app.admin_token().await;
    app.send(Method::PATCH, &format!("/api/v2/users/{alice}/"), Some(&admin), Some(json!({"is_active": false}))).await;
    let after = app.me(&token).await;
    assert_eq!(after.body, json!({"detail": "User inactive or deleted.", "reason": "user_disabled"}));
    let sessions = app.sessions_of(alice).await;
    assert_eq!(sessions[0]["ended_by"]["username"], json!(ADMIN));
});

db_test!(a_deleted_users_clients_are_still_told_why, |app| {
    let alice = app.create_user("alice").await;
    let token = app.token("alice", PASSWORD).await;
    let admin = app.admin_token().await;
    let deleted = app.send(Method::DELETE, &format!("/api/v2/users/{alice}/"), Some(&admin), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(app.me(&token).await.reason(), "user_disabled");
    for method in [Method::GET, Method::OPTIONS, Method::PATCH, Method::DELETE] {
        let body = (method == Method::PATCH).then(|| json!({"is_active": true}));
        let response = app.send(method.clone(), &format!("/api/v2/users/{alice}/"), Some(&admin), body).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{method} of a deleted user");
    }
    // The username is free again.
    app.create_user("alice").await;
});

db_test!(an_admin_can_end_all_of_a_users_sessions, |app| {
    let alice = app.create_user("alice").await;
    let one = app.token("alice", PASSWORD).await;
    let two = app.token("alice", PASSWORD).await;
    let admin = app.admin_token().await;
    let response = app.send(Method::DELETE, &format!("/api/v2/users/{alice}/sessions/"), Some(&admin), None).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    for token in [one, two] {
        assert_eq!(app.me(&token).await.body, json!({"detail": "The session was revoked.", "reason": "revoked"}));
    }
    assert_eq!(app.me(&admin).await.status, StatusCode::OK);
});

db_test!(a_user_can_end_one_of_his_own_sessions_but_not_anothers, |app| {
    app.create_user("alice").await;
    app.create_user("bob").await;
    let laptop = app.token("alice", PASSWORD).await;
    let phone = app.token("alice", PASSWORD).await;
    let bob = app.token("bob", PASSWORD).await;
    let list = app.get("/api/v2/me/sessions/", Some(&laptop)).await;
    assert_eq!(list.body["count"], json!(2));
    let current: Vec<_> =
        list.body["results"].as_array().unwrap().iter().filter(|s| s["current"] == json!(true)).collect();
    assert_eq!(current.len(), 1);
    let phone_id =
        list.body["results"].as_array().unwrap().iter().find(|s| s["current"] == json!(false)).unwrap()["id"]
            .as_i64()
            .unwrap();

    let path = format!("/api/v2/me/sessions/{phone_id}/");
    assert_eq!(app.send(Method::DELETE, &path, Some(&bob), None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&path, Some(&bob)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.send(Method::DELETE, &path, Some(&laptop), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.me(&phone).await.reason(), "revoked");
    let detail = app.get(&path, Some(&laptop)).await;
    assert_eq!(detail.body["reason"], json!("revoked"));
    assert_eq!(detail.body["ended_by"]["username"], json!("alice"));
    assert_eq!(app.me(&laptop).await.status, StatusCode::OK);
    let ended = app.get("/api/v2/me/sessions/?active=false", Some(&laptop)).await;
    assert_eq!(ended.body["count"], json!(1));
    let bad = app.get("/api/v2/me/sessions/?active=maybe", Some(&laptop)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // `active`, filterable, orders too.
    for (order, first) in [("active", false), ("-active", true)] {
        let list = app.get(&format!("/api/v2/me/sessions/?order_by={order}"), Some(&laptop)).await;
        assert_eq!(list.status, StatusCode::OK, "{list:?}");
        assert_eq!(list.body["results"][0]["active"], json!(first), "order_by={order}: {list:?}");
    }
});

db_test!(a_superuser_reaches_any_session_at_its_url, |app| {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    app.create_user_with("audrey", json!({"is_system_auditor": true})).await;
    let token = app.token("alice", PASSWORD).await;
    let admin = app.admin_token().await;
    let bob = app.token("bob", PASSWORD).await;
    let audrey = app.token("audrey", PASSWORD).await;
    let list = app.get(&format!("/api/v2/users/{alice}/sessions/"), Some(&admin)).await;
    let url = list.body["results"][0]["url"].as_str().unwrap().to_owned();
    let id = list.body["results"][0]["id"].clone();
    // The url of a session in a user's list leads the superuser to it ...
    let detail = app.get(&url, Some(&admin)).await;
    assert_eq!(detail.status, StatusCode::OK, "{detail:?}");
    assert_eq!((&detail.body["id"], &detail.body["current"]), (&id, &json!(false)));
    assert_eq!(app.send(Method::OPTIONS, &url, Some(&admin), None).await.status, StatusCode::OK);
    // ... and nobody else but its owner (the contract: 404 to a non-superuser).
    for other in [&bob, &audrey] {
        assert_eq!(app.get(&url, Some(other)).await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.send(Method::DELETE, &url, Some(other), None).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
    // The superuser ends it: revoked, by the admin, and in the activity stream.
    assert_eq!(app.send(Method::DELETE, &url, Some(&admin), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.me(&token).await.reason(), "revoked");
    let ended = app.get(&url, Some(&admin)).await;
    assert_eq!(ended.body["ended_by"]["username"], json!(ADMIN));
    let stream = app.get("/api/v2/activity_stream/?object=session", Some(&admin)).await;
    assert_eq!(stream.body["results"][0]["operation"], json!("revoke"), "{stream:?}");
    assert_eq!(stream.body["results"][0]["changes"], json!({"session": [id, null]}));
    assert_eq!(app.me(&admin).await.status, StatusCode::OK);
});

db_test!(a_patch_that_changes_nothing_leaves_modified_alone, |app| {
    let alice = app.create_user("alice").await;
    let admin = app.admin_token().await;
    let path = format!("/api/v2/users/{alice}/");
    let created = app.get(&path, Some(&admin)).await.body["modified"].clone();
    app.advance(10);
    for same in [json!({}), json!({"is_active": true, "username": "alice", "is_superuser": false})] {
        let patched = app.send(Method::PATCH, &path, Some(&admin), Some(same.clone())).await;
        assert_eq!(patched.status, StatusCode::OK, "{patched:?}");
        assert_eq!(patched.body["modified"], created, "{same}");
    }
    let patched = app.send(Method::PATCH, &path, Some(&admin), Some(json!({"is_system_auditor": true}))).await;
    assert_ne!(patched.body["modified"], created);
});

db_test!(only_a_superuser_manages_users_and_an_auditor_reads_them, |app| {
    app.create_user("alice").await;
    let auditor = app.create_user_with("audrey", json!({"is_system_auditor": true})).await;
    let alice = app.token("alice", PASSWORD).await;
    let audrey = app.token("audrey", PASSWORD).await;
    let forbidden = app.get("/api/v2/users/", Some(&alice)).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(forbidden.reason(), "permission_denied");
    assert_eq!(app.get("/api/v2/users/", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/api/v2/users/", Some(&audrey)).await.status, StatusCode::OK);
    assert_eq!(app.get(&format!("/api/v2/users/{auditor}/sessions/"), Some(&audrey)).await.status, StatusCode::OK);
    let create = json!({"username": "mallory", "password": PASSWORD});
    assert_eq!(
        app.send(Method::POST, "/api/v2/users/", Some(&audrey), Some(create)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.send(Method::DELETE, &format!("/api/v2/users/{auditor}/sessions/"), Some(&audrey), None).await.status,
        StatusCode::FORBIDDEN
    );
});

db_test!(creating_a_user_validates_every_field, |app| {
    let admin = app.admin_token().await;
    let bad = json!({"username": "no spaces allowed", "password": "short", "is_superuser": "maybe", "colour": 1});
    let response = app.send(Method::POST, "/api/v2/users/", Some(&admin), Some(bad)).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.body["username"][0].as_str().unwrap().starts_with("Enter a valid username"));
    assert!(response.body["password"][0].as_str().unwrap().contains("at least 8 characters"));
    assert_eq!(response.body["is_superuser"], json!(["Must be a valid boolean."]));
    assert_eq!(response.body["colour"], json!(["Unknown field."]));
    let taken = json!({"username": ADMIN, "password": PASSWORD});
    let response = app.send(Method::POST, "/api/v2/users/", Some(&admin), Some(taken)).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(response.body, json!({"username": ["A user with that username already exists."]}));
});

db_test!(an_admin_cannot_lock_himself_out, |app| {
    let admin = app.admin_token().await;
    let path = format!("/api/v2/users/{}/", app.admin_id);
    let response = app.send(Method::PATCH, &path, Some(&admin), Some(json!({"is_active": false}))).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    // As in AWX, deleting yourself is not allowed (403), not malformed.
    let delete = app.send(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    assert_eq!(delete.body, json!({"detail": "You cannot delete your own account.", "reason": "permission_denied"}));
    assert_eq!(app.me(&admin).await.status, StatusCode::OK);
});

db_test!(lists_are_paginated_the_awx_way, |app| {
    for i in 0..4 {
        app.create_user(&format!("user{i}")).await;
    }
    let admin = app.admin_token().await;
    let first = app.get("/api/v2/users/?page_size=2", Some(&admin)).await;
    assert_eq!(first.body["count"], json!(5));
    assert_eq!(first.body["results"].as_array().unwrap().len(), 2);
    assert_eq!(first.body["previous"], json!(null));
    assert_eq!(first.body["next"], json!("/api/v2/users/?page_size=2&page=2"));
    let last = app.get("/api/v2/users/?page_size=2&page=3", Some(&admin)).await;
    assert_eq!(last.body["results"].as_array().unwrap().len(), 1);
    assert_eq!(last.body["next"], json!(null));
    assert_eq!(last.body["previous"], json!("/api/v2/users/?page_size=2&page=2"));
    let beyond = app.get("/api/v2/users/?page=9", Some(&admin)).await;
    assert_eq!(beyond.status, StatusCode::NOT_FOUND);
    assert_eq!(beyond.body, json!({"detail": "Invalid page."}));
    let capped = app.get("/api/v2/users/?page_size=100000", Some(&admin)).await;
    assert_eq!(capped.body["results"].as_array().unwrap().len(), 5);
    assert_eq!(app.get("/api/v2/users/?page=abc", Some(&admin)).await.status, StatusCode::NOT_FOUND);
});
