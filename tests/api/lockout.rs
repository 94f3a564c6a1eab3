use axum::http::StatusCode;
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

db_test!(too_many_failures_lock_the_username_out_even_for_the_right_password, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 3, "AUTH_LOGIN_LOCKOUT_SECONDS": 120})).await;
    for _ in 0..3 {
        assert_eq!(app.login("alice", "wrong password").await.status, StatusCode::UNAUTHORIZED);
    }
    let locked = app.login("alice", PASSWORD).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(locked.reason(), "locked_out");
    assert_eq!(locked.header("retry-after"), Some("120"));
    app.advance(121);
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
});

db_test!(a_success_resets_the_failure_count, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 3})).await;
    for _ in 0..2 {
        app.login("alice", "wrong password").await;
    }
    app.token("alice", PASSWORD).await;
    for _ in 0..2 {
        assert_eq!(app.login("alice", "wrong password").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
});

db_test!(unknown_usernames_are_locked_out_the_same_way, |app| {
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 2})).await;
    app.login("ghost", "x").await;
    app.login("ghost", "x").await;
    let third = app.login("ghost", "x").await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    // Another username is not affected.
    assert_eq!(app.login(ADMIN, PASSWORD).await.status, StatusCode::OK);
});

db_test!(concurrent_wrong_guesses_never_check_more_passwords_than_the_limit, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 5})).await;
    let before = app.state.passwords.verifications();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let router = app.router.clone();
        tasks.spawn(async move {
            use tower::ServiceExt;
            let body = json!({"username": "alice", "password": "guess"}).to_string();
            let request = axum::http::Request::post("/api/login/")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            router.oneshot(request).await.unwrap().status()
        });
    }
    let statuses = tasks.join_all().await;
    let checked = app.state.passwords.verifications() - before;
    assert_eq!(checked, 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 55);
});

db_test!(zero_turns_the_lockout_off, |app| {
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 0})).await;
    for _ in 0..15 {
        assert_eq!(app.login(ADMIN, "wrong password").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.login(ADMIN, PASSWORD).await.status, StatusCode::OK);
});

// A login records its success in the transaction that creates the session: the check leaves
// the ones in flight. Were it left counted, the third login would wait for the others'
// lease and fail with 503.
db_test!(successful_logins_leave_no_check_in_flight, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 2})).await;
    for _ in 0..4 {
        assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
    }
    assert_eq!(app.login("alice", "wrong password").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
});

// A right password whose login is refused (deny_new at the limit, the session's transaction
// rolled back) still restarts the count.
db_test!(a_right_password_refused_by_the_limit_still_resets_the_failure_count, |app| {
    app.create_user("alice").await;
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 2, "AUTH_TOKEN_PER_USER": 1, "SESSION_LIMIT_POLICY": "deny_new"})).await;
    let first = app.token("alice", PASSWORD).await;
    assert_eq!(app.login("alice", "wrong password").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.login("alice", PASSWORD).await.reason(), "limit_reached");
    assert_eq!(app.login("alice", "wrong password").await.status, StatusCode::UNAUTHORIZED);
    // Two failures in a row only now: not locked out, refused by the limit again.
    assert_eq!(app.login("alice", PASSWORD).await.reason(), "limit_reached");
    assert_eq!(app.me(&first).await.status, StatusCode::OK);
});

// A login the hasher has no place for is refused before the lockout's grant: a flood of
// made-up usernames costs the database nothing (each refusal was a grant and its release,
// two writes, on SQLite behind the write lock token checks need too).
db_test!(a_login_beyond_the_hash_queue_is_refused_before_it_touches_the_database, |app| {
    let rows = || async {
        let count: i64 = bouncer::with_db!(&app.state.db, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM login_failures").fetch_one(pool).await.unwrap()
        });
        count
    };
    let before = app.state.passwords.verifications();
    // Every place in the queue taken, as by hashes running and waiting.
    let queue: Vec<_> = std::iter::from_fn(|| app.state.passwords.reserve().ok()).collect();
    assert!(!queue.is_empty());

    let refused = app.login("never-seen", "a guess").await;

    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.reason(), "busy");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(rows().await, 0, "no grant, no release");
    assert_eq!(app.state.passwords.verifications(), before);
    // With a place free, the same login is checked and counted.
    drop(queue);
    assert_eq!(app.login("never-seen", "a guess").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(rows().await, 1);
});
