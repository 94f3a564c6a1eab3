//! The session cache (`src/sessions/cache.rs`): a token checked in memory is refused the
//! moment its session ends or its user changes, on this instance and (PostgreSQL, NOTIFY)
//! on the others; the idle timer is exact in memory and stored at most once a second.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use bouncer::clock::{Clock, rfc3339};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

/// `last_used` of `user_id`'s only session, as stored.
async fn stored_last_used(app: &TestApp, user_id: i64) -> String {
    let sessions = app.sessions_of(user_id).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    sessions[0]["last_used"].as_str().unwrap().to_owned()
}

db_test!(the_idle_timer_is_stored_at_most_once_a_second_and_exact_in_memory, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 60})).await;
    let alice = app.create_user("alice").await;
    let token = app.token("alice", PASSWORD).await;
    app.clock.advance(Duration::from_secs(1));
    // The first use reads the database (and writes the timer); the next ones are in memory.
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
    let login = app.clock.now();
    app.clock.advance(Duration::from_millis(400));
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
    app.clock.advance(Duration::from_millis(500));
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
    // 0.9 s after that first use: moved in memory only.
    assert_eq!(stored_last_used(&app, alice).await, rfc3339(login));
    app.clock.advance(Duration::from_millis(100));
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
    let written = app.clock.now();
    assert_eq!(stored_last_used(&app, alice).await, rfc3339(written), "written once a second has passed");

    // A use that is in memory only still counts in full on this instance: 0.5 s after the
    // write, then 59.9 s of idleness is past the stored timer's end but not the real one.
    app.clock.advance(Duration::from_millis(500));
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
    assert_eq!(stored_last_used(&app, alice).await, rfc3339(written));
    app.clock.advance(Duration::from_millis(59_900));
    let alive = app.me(&token).await;
    assert_eq!(alive.status, StatusCode::OK, "{alive:?}");
    // And a full idle timeout after that use, it has ended, with its reason.
    let last = app.clock.now();
    app.clock.advance(Duration::from_secs(60));
    let ended = app.me(&token).await;
    assert_eq!(ended.reason(), "timeout_reached", "{ended:?}");
    let sessions = app.sessions_of(alice).await;
    assert_eq!(sessions[0]["ended_at"], json!(rfc3339(last + 60_000_000)));
});

db_test!(a_cached_token_is_refused_the_moment_its_session_ends_or_its_user_changes, |app| {
    let alice = app.create_user_with("alice", json!({"is_superuser": true})).await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let first = app.token("alice", PASSWORD).await;
    // Cached (the clock stands still: the entry never goes stale in this test).
    assert_eq!(app.get("/api/v2/users/", Some(&first)).await.status, StatusCode::OK);
    assert_eq!(app.get("/api/v2/users/", Some(&first)).await.status, StatusCode::OK);
    let second = app.token("alice", PASSWORD).await;
    assert_eq!(app.me(&first).await.reason(), "limit_reached");
    // The user changes: the cached copy of alice must not keep her superuser rights.
    assert_eq!(app.get("/api/v2/users/", Some(&second)).await.status, StatusCode::OK);
    let admin = app.admin_token().await;
    let path = format!("/api/v2/users/{alice}/");
    let demoted = app.send(Method::PATCH, &path, Some(&admin), Some(json!({"is_superuser": false}))).await;
    assert_eq!(demoted.status, StatusCode::OK);
    assert_eq!(app.get("/api/v2/users/", Some(&second)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.me(&second).await.body["is_superuser"], json!(false));
    // Logout, revocation and deactivation end cached sessions at once too.
    app.logout(&second).await;
    assert_eq!(app.me(&second).await.reason(), "logged_out");
    let third = app.token("alice", PASSWORD).await;
    assert_eq!(app.me(&third).await.status, StatusCode::OK);
    app.send(Method::DELETE, &format!("/api/v2/users/{alice}/sessions/"), Some(&admin), None).await;
    assert_eq!(app.me(&third).await.reason(), "revoked");
    let fourth = app.token("alice", PASSWORD).await;
    assert_eq!(app.me(&fourth).await.status, StatusCode::OK);
    app.send(Method::PATCH, &path, Some(&admin), Some(json!({"is_active": false}))).await;
    assert_eq!(app.me(&fourth).await.reason(), "user_disabled");
});

/// Waits (up to 5 s of real time) until `token` is refused by `other`; the reason.
async fn refused_on(other: &SecondInstance, token: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = other.get("/api/v2/me/", Some(token)).await;
        if response.status != StatusCode::OK {
            return response.reason().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "still accepted by the other instance after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ending_on_one_instance_reaches_the_cache_of_another_through_notify() {
    let Some(app) =
        TestApp::postgres("cache::an_ending_on_one_instance_reaches_the_cache_of_another_through_notify").await
    else {
        return;
    };
    // The other instance trusts what it cached for an hour: only a notification can tell it.
    let mut config = test_config();
    config.session_cache_ttl = 3_600_000_000;
    let other = app.second_instance_with(config).await;
    let listener = tokio::spawn(bouncer::cluster::run(other.state.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let alice = app.create_user_with("alice", json!({"is_superuser": true})).await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let first = app.token("alice", PASSWORD).await;
    assert_eq!(other.get("/api/v2/me/", Some(&first)).await.status, StatusCode::OK);
    let started = std::time::Instant::now();
    let second = app.token("alice", PASSWORD).await;
    assert_eq!(refused_on(&other, &first).await, "limit_reached");
    let kick_seen = started.elapsed();

    assert_eq!(other.get("/api/v2/users/", Some(&second)).await.status, StatusCode::OK);
    let admin = app.admin_token().await;
    let path = format!("/api/v2/users/{alice}/");
    app.send(Method::PATCH, &path, Some(&admin), Some(json!({"is_superuser": false}))).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while other.get("/api/v2/users/", Some(&second)).await.status == StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the demotion did not reach the other instance in 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(other.get("/api/v2/users/", Some(&second)).await.status, StatusCode::FORBIDDEN);
    eprintln!("kick seen by the other instance after {kick_seen:?}");
    listener.abort();
}

db_test!(without_notifications_a_stale_entry_lives_at_most_the_cache_ttl, |app| {
    // Another process on the same database that hears nothing from this one (on SQLite, the
    // CLI or a second server; on PostgreSQL, a lost notification): no listener is running.
    let other = app.second_instance().await;
    app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let first = app.token("alice", PASSWORD).await;
    assert_eq!(other.get("/api/v2/me/", Some(&first)).await.status, StatusCode::OK);
    app.token("alice", PASSWORD).await;
    // Within the time to live the other instance still says yes: the bound docs/DECISIONS.md
    // states (with no notification at all; the clock stands still)...
    assert_eq!(other.get("/api/v2/me/", Some(&first)).await.status, StatusCode::OK);
    // ...and once it has passed, it reads the database and says why.
    app.clock.advance(Duration::from_millis(1000));
    let after = other.get("/api/v2/me/", Some(&first)).await;
    assert_eq!(after.reason(), "limit_reached", "{after:?}");
});
