use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

db_test!(a_login_returns_a_token_that_authenticates_with_bearer_and_token_schemes, |app| {
    let response = app.login(ADMIN, PASSWORD).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    let token = response.body["token"].as_str().unwrap();
    assert!(response.body["expires"].as_str().unwrap().ends_with('Z'));
    assert_eq!(response.header("auth-token-timeout"), Some("1800"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.body["session"]["active"], json!(true));
    assert_eq!(response.body["session"]["current"], json!(true));

    let bearer = app.get("/api/v2/me/", Some(&format!("Bearer {token}"))).await;
    assert_eq!(bearer.status, StatusCode::OK);
    assert_eq!(bearer.body["username"], json!(ADMIN));
    let tower = app.get("/api/v2/me/", Some(&format!("Token {token}"))).await;
    assert_eq!(tower.status, StatusCode::OK);
    assert_eq!(tower.header("auth-token-timeout"), Some("1800"));
});

db_test!(tokens_are_long_random_and_stored_only_as_a_digest, |app| {
    let first = app.admin_token().await;
    let second = app.admin_token().await;
    assert_ne!(first, second);
    // "bnc_" + 43 base64url characters = 256 bits.
    assert_eq!(first.len(), 4 + 43);
    let stored: Vec<Vec<u8>> = bouncer::with_db!(&app.state.db, |pool| {
        sqlx::query_scalar("SELECT token_hash FROM sessions").fetch_all(pool).await.unwrap()
    });
    assert_eq!(stored.len(), 2);
    for hash in &stored {
        assert_eq!(hash.len(), 32);
        assert!(!hash.windows(8).any(|w| first.as_bytes().windows(8).any(|t| t == w)));
    }
    assert!(stored.contains(&bouncer::auth::token::digest(&first).to_vec()));
    // The stored digest presented as a token is refused.
    let hex: String = stored[0].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(app.me(&hex).await.reason(), "invalid_token");
});

db_test!(an_unknown_user_and_a_wrong_password_get_the_same_answer_after_the_same_argon2_work, |app| {
    let before = app.state.passwords.verifications();
    let wrong = app.login(ADMIN, "not the password").await;
    let after_wrong = app.state.passwords.verifications();
    let unknown = app.login("nobody", "not the password").await;
    let after_unknown = app.state.passwords.verifications();
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(
        wrong.body,
        json!({"detail": "Unable to log in with the provided credentials.", "reason": "invalid_credentials"})
    );
    assert_eq!(after_wrong - before, 1);
    assert_eq!(after_unknown - after_wrong, 1);
    assert!(wrong.header("www-authenticate").is_none_or(|v| !v.to_lowercase().contains("basic")));
});

db_test!(a_login_without_fields_gets_field_errors, |app| {
    let response = app.send(Method::POST, "/api/login/", None, Some(json!({}))).await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        response.body,
        json!({"username": ["This field is required."], "password": ["This field is required."]})
    );
    let wrong_type = app.send(Method::POST, "/api/login/", None, Some(json!({"username": 1, "password": "x"}))).await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);
    assert!(wrong_type.body["username"].is_array());
    // Blank is not a failed login (nothing counted towards a lockout): a field error, as in DRF.
    let before = app.state.passwords.verifications();
    let blank = app.send(Method::POST, "/api/login/", None, Some(json!({"username": "", "password": ""}))).await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        blank.body,
        json!({"username": ["This field may not be blank."], "password": ["This field may not be blank."]})
    );
    assert_eq!(app.state.passwords.verifications(), before, "no argon2 work for a blank field");
});

db_test!(logging_out_ends_the_session_with_logged_out_and_twice_is_fine, |app| {
    let token = app.admin_token().await;
    assert_eq!(app.logout(&token).await.status, StatusCode::NO_CONTENT);
    let after = app.me(&token).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.body, json!({"detail": "The session was logged out.", "reason": "logged_out"}));
    assert_eq!(
        after.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\", error_description=\"The session was logged out.\"")
    );
    assert_eq!(app.logout(&token).await.status, StatusCode::NO_CONTENT);
    let sessions = app.sessions_of(app.admin_id).await;
    let ended = sessions.iter().find(|s| s["reason"] == json!("logged_out")).unwrap();
    assert_eq!(ended["ended_by"]["username"], json!(ADMIN));
    assert_eq!(ended["detail"], json!("The session was logged out."));
});

db_test!(requests_without_credentials_or_with_unknown_tokens_are_refused_with_their_reason, |app| {
    let anonymous = app.get("/api/v2/me/", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.body,
        json!({"detail": "Authentication credentials were not provided.", "reason": "not_authenticated"})
    );
    let unknown = app.me("bnc_not-a-real-token").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.body, json!({"detail": "Invalid token.", "reason": "invalid_token"}));
    let empty = app.get("/api/v2/me/", Some("Bearer ")).await;
    assert_eq!(empty.reason(), "invalid_token");
    assert_eq!(app.logout("bnc_unknown").await.reason(), "invalid_token");
    assert_eq!(app.send(Method::POST, "/api/logout/", None, None).await.reason(), "not_authenticated");
});

db_test!(a_deactivated_user_cannot_log_in, |app| {
    let id = app.create_user("alice").await;
    let admin = app.admin_token().await;
    let patched =
        app.send(Method::PATCH, &format!("/api/v2/users/{id}/"), Some(&admin), Some(json!({"is_active": false}))).await;
    assert_eq!(patched.status, StatusCode::OK, "{patched:?}");
    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    assert_eq!(login.reason(), "invalid_credentials");
});

db_test!(a_login_records_where_it_came_from, |app| {
    let response = app
        .send_with(
            Method::POST,
            "/api/login/",
            None,
            Some(json!({"username": ADMIN, "password": PASSWORD})),
            &[("user-agent", "awx-cli/24")],
        )
        .await;
    assert_eq!(response.body["session"]["user_agent"], json!("awx-cli/24"));
    let me = app.me(response.body["token"].as_str().unwrap()).await;
    assert!(me.body["last_login"].is_string());
});

/// The password hash stored for `user`.
async fn hash_of(app: &TestApp, user: i64) -> String {
    bouncer::with_db!(&app.state.db, |pool| {
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1").bind(user).fetch_one(pool).await.unwrap()
    })
}

db_test!(a_login_upgrades_a_password_hashed_with_other_argon2_costs, |app| {
    use argon2::password_hash::PasswordHasher;
    let alice = app.create_user("alice").await;
    // alice's password as a Bouncer with other argon2 costs stored it.
    let params = argon2::Params::new(128, 2, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let old = argon2.hash_password(PASSWORD.as_bytes()).unwrap().to_string();
    bouncer::with_db!(&app.state.db, |pool| {
        let update = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2");
        update.bind(&old).bind(alice).execute(pool).await.unwrap().rows_affected()
    });
    assert!(app.state.passwords.needs_rehash(&old));
    // A wrong password proves nothing and upgrades nothing.
    assert_eq!(app.login("alice", "wrong password").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(hash_of(&app, alice).await, old);
    // The right one logs in, and the hash is redone with the current costs beside the login.
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
    let mut new = hash_of(&app, alice).await;
    for _ in 0..200 {
        if new != old {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        new = hash_of(&app, alice).await;
    }
    assert!(new.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{new}");
    assert!(!app.state.passwords.needs_rehash(&new));
    assert_eq!(app.login("alice", PASSWORD).await.status, StatusCode::OK);
    assert_eq!(hash_of(&app, alice).await, new, "an up-to-date hash stays");
});
