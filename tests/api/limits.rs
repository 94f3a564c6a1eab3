use axum::http::StatusCode;
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

db_test!(the_oldest_session_ends_when_a_login_exceeds_the_limit, |app| {
    let alice = app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 2})).await;
    let first = app.token("alice", PASSWORD).await;
    app.advance(1);
    let second = app.token("alice", PASSWORD).await;
    app.advance(1);
    let third = app.token("alice", PASSWORD).await;

    let kicked = app.me(&first).await;
    assert_eq!(kicked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        kicked.body,
        json!({"detail": "The maximum number of allowed sessions for this user has been exceeded.", "reason": "limit_reached"})
    );
    assert_eq!(app.me(&second).await.status, StatusCode::OK);
    assert_eq!(app.me(&third).await.status, StatusCode::OK);
    assert_eq!(app.active_count(alice).await, 2);
});

db_test!(the_oldest_is_the_first_created_not_the_least_recently_used, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 2})).await;
    let first = app.token("alice", PASSWORD).await;
    app.advance(1);
    let second = app.token("alice", PASSWORD).await;
    app.advance(1);
    // The first is used after the second; it is still the oldest by creation.
    assert_eq!(app.me(&first).await.status, StatusCode::OK);
    app.token("alice", PASSWORD).await;
    assert_eq!(app.me(&first).await.reason(), "limit_reached");
    assert_eq!(app.me(&second).await.status, StatusCode::OK);
});

db_test!(deny_new_refuses_a_login_at_the_limit_and_keeps_the_existing_sessions, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1, "SESSION_LIMIT_POLICY": "deny_new"})).await;
    let first = app.token("alice", PASSWORD).await;
    let refused = app.login("alice", PASSWORD).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.body,
        json!({"detail": "The maximum number of allowed sessions for this user has been reached.", "reason": "limit_reached"})
    );
    assert_eq!(app.me(&first).await.status, StatusCode::OK);
    // Once the first session ends, a new login is allowed again.
    app.logout(&first).await;
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
});

db_test!(deny_new_does_not_count_sessions_that_have_expired, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1, "SESSION_LIMIT_POLICY": "deny_new", "AUTH_TOKEN_EXPIRATION": 60})).await;
    let first = app.token("alice", PASSWORD).await;
    app.advance(61);
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
    assert_eq!(app.me(&first).await.reason(), "timeout_reached");
});

db_test!(minus_one_means_unlimited, |app| {
    let alice = app.create_user("alice").await;
    for _ in 0..12 {
        app.token("alice", PASSWORD).await;
    }
    assert_eq!(app.active_count(alice).await, 12);
});

db_test!(lowering_the_limit_ends_the_sessions_over_it_at_once_oldest_first, |app| {
    let alice = app.create_user("alice").await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(app.token("alice", PASSWORD).await);
        app.advance(1);
    }
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    for old in &tokens[..3] {
        assert_eq!(app.me(old).await.reason(), "limit_reached");
    }
    assert_eq!(app.me(&tokens[3]).await.status, StatusCode::OK);
    assert_eq!(app.active_count(alice).await, 1);
    let ended = app.sessions_of(alice).await;
    let kicked = ended.iter().find(|s| s["reason"] == json!("limit_reached")).unwrap();
    assert_eq!(kicked["ended_by"]["username"], json!(ADMIN));
});

/// Logs `username` in `n` times at once; returns the statuses.
async fn concurrent_logins(app: &TestApp, username: &str, n: usize) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let router = app.router.clone();
        let body = json!({"username": username, "password": PASSWORD}).to_string();
        tasks.spawn(async move {
            use tower::ServiceExt;
            let request = axum::http::Request::post("/api/login/")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            router.oneshot(request).await.unwrap().status()
        });
    }
    tasks.join_all().await
}

db_test!(a_hundred_simultaneous_logins_leave_exactly_the_limit_of_active_sessions, |app| {
    let alice = app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 3})).await;
    let statuses = concurrent_logins(&app, "alice", 100).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(app.active_count(alice).await, 3);
    let sessions = app.sessions_of(alice).await;
    assert_eq!(sessions.len(), 100);
    assert_eq!(sessions.iter().filter(|s| s["reason"] == json!("limit_reached")).count(), 97);
});

db_test!(a_hundred_simultaneous_logins_under_deny_new_admit_exactly_the_limit, |app| {
    let alice = app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 3, "SESSION_LIMIT_POLICY": "deny_new"})).await;
    let statuses = concurrent_logins(&app, "alice", 100).await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::FORBIDDEN).count(), 97, "{statuses:?}");
    assert_eq!(app.active_count(alice).await, 3);
});

db_test!(the_limit_is_per_user, |app| {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let a = app.token("alice", PASSWORD).await;
    let b = app.token("bob", PASSWORD).await;
    assert_eq!(app.me(&a).await.status, StatusCode::OK);
    assert_eq!(app.me(&b).await.status, StatusCode::OK);
    assert_eq!(app.active_count(alice).await, 1);
    assert_eq!(app.active_count(bob).await, 1);
});

db_test!(a_limit_lowered_elsewhere_ends_the_excess_when_this_instance_picks_it_up, |app| {
    let alice = app.create_user("alice").await;
    // B: another instance on the same database, started under no limit.
    let b = app.second_instance().await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    // B has not picked the change up yet (its watcher is not running): it lets alice in
    // three times under the old value.
    assert_eq!(b.state.settings.current().per_user, None);
    let login = json!({"username": "alice", "password": PASSWORD});
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let response =
            send_to(&b.router, axum::http::Method::POST, "/api/login/", None, Some(login.clone()), &[]).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        tokens.push(response.body["token"].as_str().unwrap().to_owned());
        app.advance(1);
    }
    assert_eq!(app.active_count(alice).await, 3);
    let mut events = b.state.events.subscribe();

    // B picks the change up, as its watcher does: the oldest two end there and then.
    assert!(bouncer::cluster::refresh_if_changed(&b.state).await.unwrap());
    assert_eq!(b.state.settings.current().per_user, Some(1));
    assert_eq!(app.active_count(alice).await, 1);
    for old in &tokens[..2] {
        assert_eq!(b.get("/api/v2/me/", Some(old)).await.reason(), "limit_reached");
    }
    assert_eq!(b.get("/api/v2/me/", Some(&tokens[2])).await.status, StatusCode::OK);
    let sessions = app.sessions_of(alice).await;
    let kicked: Vec<_> = sessions.iter().filter(|s| s["active"] == json!(false)).collect();
    assert_eq!(kicked.len(), 2, "{sessions:?}");
    for session in &kicked {
        assert_eq!(session["reason"], json!("limit_reached"), "{session}");
        assert_eq!(session["ended_by"]["username"], json!(ADMIN), "{session}");
    }
    for _ in 0..2 {
        let event = events.try_recv().unwrap();
        assert_eq!((event.user_id, event.reason.code()), (Some(alice), "limit_reached"));
    }

    // Nothing moved since: the next poll does nothing, and the same trim run again (as a
    // third instance would) ends nothing more.
    assert!(!bouncer::cluster::refresh_if_changed(&b.state).await.unwrap());
    let unlimited = bouncer::settings::Snapshot::default();
    bouncer::sessions::settings_changed(&app.state, &unlimited, &app.state.settings.current(), None).await.unwrap();
    assert_eq!(app.active_count(alice).await, 1);
    assert_eq!(b.get("/api/v2/me/", Some(&tokens[2])).await.status, StatusCode::OK);

    // The change is in the activity stream once, as A recorded it.
    let admin = app.admin_token().await;
    let activity = app.get("/api/v2/activity_stream/?page_size=200", Some(&admin)).await;
    let settings: Vec<_> =
        activity.body["results"].as_array().unwrap().iter().filter(|e| e["object"] == json!("setting")).collect();
    assert_eq!(settings.len(), 1, "{:?}", activity.body);
    assert_eq!(settings[0]["changes"], json!({"AUTH_TOKEN_PER_USER": [-1, 1]}));
});
