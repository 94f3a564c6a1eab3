use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

db_test!(an_idle_session_ends_with_timeout_reached, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 60})).await;
    let token = app.admin_token().await;
    app.advance(59);
    assert_eq!(app.me(&token).await.status, StatusCode::OK);
    app.advance(60);
    let expired = app.me(&token).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.body, json!({"detail": "Token is expired.", "reason": "timeout_reached"}));
});

db_test!(every_request_moves_the_idle_timer_and_says_how_long_is_left, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 100})).await;
    let token = app.admin_token().await;
    for _ in 0..5 {
        app.advance(80);
        let response = app.me(&token).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("auth-token-timeout"), Some("100"));
    }
});

db_test!(a_quiet_request_is_authenticated_but_does_not_move_the_idle_timer, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 100})).await;
    let token = app.admin_token().await;
    app.advance(60);
    let quiet = app.send_with(Method::GET, "/api/v2/me/", Some(&token), None, &[("x-session-quiet", "1")]).await;
    assert_eq!(quiet.status, StatusCode::OK);
    assert_eq!(quiet.header("auth-token-timeout"), Some("40"));
    app.advance(41);
    assert_eq!(app.me(&token).await.reason(), "timeout_reached");
});

db_test!(a_session_ends_at_its_maximum_lifetime_however_active, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 120, "AUTH_TOKEN_MAX_AGE": 300})).await;
    let token = app.admin_token().await;
    for _ in 0..4 {
        app.advance(60);
        assert_eq!(app.me(&token).await.status, StatusCode::OK);
    }
    // 240 s in: the idle timer would allow 120 s more, the lifetime 60 s.
    let near = app.me(&token).await;
    assert_eq!(near.header("auth-token-timeout"), Some("60"));
    app.advance(61);
    let response = app.me(&token).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.body,
        json!({"detail": "The session reached its maximum lifetime.", "reason": "max_age_reached"})
    );
});

db_test!(lowering_the_idle_timeout_ends_the_sessions_idle_longer_at_once, |app| {
    let alice = app.create_user("alice").await;
    let idle = app.token("alice", PASSWORD).await;
    app.advance(600);
    let fresh = app.token("alice", PASSWORD).await;
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 300})).await;
    // Ended by the settings change itself, before anyone presents the token.
    let sessions = app.sessions_of(alice).await;
    assert_eq!(sessions.iter().filter(|s| s["reason"] == json!("timeout_reached")).count(), 1);
    assert_eq!(app.me(&idle).await.reason(), "timeout_reached");
    assert_eq!(app.me(&fresh).await.status, StatusCode::OK);
});

db_test!(the_sweeper_ends_idle_sessions_nobody_presents_and_deletes_them_after_retention, |app| {
    let alice = app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 60, "AUTH_TOKEN_MAX_AGE": 0})).await;
    let token = app.token("alice", PASSWORD).await;
    app.advance(61);
    let (ended, deleted) = bouncer::sessions::sweeper::sweep(&app.state).await.unwrap();
    assert_eq!(ended, 1);
    assert_eq!(deleted, 0);
    let stored: (Option<i64>, Option<String>) = bouncer::with_db!(&app.state.db, |pool| {
        sqlx::query_as("SELECT ended_at, end_reason FROM sessions WHERE user_id = $1")
            .bind(alice)
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(stored.1.as_deref(), Some("timeout_reached"));
    // Still told why, long after.
    app.advance(29 * 24 * 3600);
    bouncer::sessions::sweeper::sweep(&app.state).await.unwrap();
    assert_eq!(app.me(&token).await.reason(), "timeout_reached");
    // Past the retention (30 days by default) it is gone.
    app.advance(2 * 24 * 3600);
    let (_, deleted) = bouncer::sessions::sweeper::sweep(&app.state).await.unwrap();
    assert!(deleted >= 1);
    assert_eq!(app.me(&token).await.reason(), "invalid_token");
});

db_test!(the_sweeper_ends_over_age_sessions_with_max_age_reached, |app| {
    let alice = app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 3600, "AUTH_TOKEN_MAX_AGE": 120})).await;
    app.token("alice", PASSWORD).await;
    app.advance(121);
    let (ended, _) = bouncer::sessions::sweeper::sweep(&app.state).await.unwrap();
    assert!(ended >= 1);
    let sessions = app.sessions_of(alice).await;
    assert_eq!(sessions[0]["reason"], json!("max_age_reached"));
    assert_eq!(sessions[0]["active"], json!(false));
});

db_test!(the_session_list_shows_expired_sessions_as_ended_with_their_reason, |app| {
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 60})).await;
    let alice = app.create_user("alice").await;
    app.token("alice", PASSWORD).await;
    app.advance(61);
    let sessions = app.sessions_of(alice).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["active"], json!(false));
    assert_eq!(sessions[0]["reason"], json!("timeout_reached"));
    assert_eq!(sessions[0]["detail"], json!("Token is expired."));
    assert!(sessions[0]["ended_at"].is_string());
    assert!(sessions[0]["expires"].is_null());
});

db_test!(an_expiry_larger_than_a_batch_gives_each_session_the_end_that_came_first, |app| {
    let alice = app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_EXPIRATION": 60, "AUTH_TOKEN_MAX_AGE": 120})).await;
    // More sessions than one batch (1000), all unused since their login: each one's idle end
    // (60 s) comes before its absolute end (120 s).
    let now = app.state.clock.now();
    bouncer::with_db!(&app.state.db, |pool| {
        let mut tx = pool.begin().await.unwrap();
        for i in 0..1500 {
            sqlx::query("INSERT INTO sessions (user_id, token_hash, created_at, last_used_at) VALUES ($1, $2, $3, $3)")
                .bind(alice)
                .bind(format!("seeded {i}").into_bytes())
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    });
    app.advance(200);
    bouncer::sessions::sweeper::sweep(&app.state).await.unwrap();
    let reasons: Vec<(String, i64, i64)> = bouncer::with_db!(&app.state.db, |pool| {
        sqlx::query_as(
            "SELECT end_reason, COUNT(*), MAX(ended_at - last_used_at) FROM sessions WHERE user_id = $1 \
             GROUP BY end_reason",
        )
        .bind(alice)
        .fetch_all(pool)
        .await
        .unwrap()
    });
    assert_eq!(reasons, [("timeout_reached".to_owned(), 1500, 60_000_000)]);
});
