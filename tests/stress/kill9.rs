//! `kill -9` of Bouncer in the middle of a storm of concurrent logins for one user
//! (`AUTH_TOKEN_PER_USER` = 3) on SQLite, then a restart on the same file: the file passes
//! `PRAGMA integrity_check`, the limit still holds, and every token that got a 200 before
//! the kill either works or is refused with the reason its session ended (never
//! `invalid_token`: a 200 means the session was committed).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::report;
use crate::support::*;

const LIMIT: usize = 3;
/// Concurrent clients of the storm, each logging in again and again.
const CLIENTS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long-running: cargo test --test stress -- --ignored"]
async fn kill_9_during_a_login_storm_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bouncer.db");
    let url = format!("sqlite://{}", file.display());
    let mut server = serve(dir.path(), &url, &[]).await;
    let addr = server.addr.clone();
    let admin = token(&addr, ADMIN).await;
    set_settings(&addr, &admin, json!({"AUTH_TOKEN_PER_USER": LIMIT})).await;
    let user_id = create_user(&addr, &admin, "storm").await;

    // The storm: CLIENTS clients logging in in a loop until the server is gone.
    let tokens: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let gone = Arc::new(AtomicBool::new(false));
    let other = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let storm: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, tokens, gone, other, failures) =
                (addr.clone(), tokens.clone(), gone.clone(), other.clone(), failures.clone());
            tokio::spawn(async move {
                while !gone.load(Ordering::Relaxed) {
                    match login(&addr, "storm").await {
                        Ok(reply) if reply.status == 200 => {
                            let token = reply.body["token"].as_str().unwrap().to_owned();
                            let id = reply.body["session"]["id"].as_i64().unwrap();
                            tokens.lock().unwrap().push((token, id));
                        }
                        Ok(reply) if !gone.load(Ordering::Relaxed) => other.lock().unwrap().push(format!("{reply:?}")),
                        // A response cut short or refused: the kill.
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let storm_began = Instant::now();
    let enough = poll(storm_began, Duration::from_millis(5), Duration::from_secs(20), async || {
        tokens.lock().unwrap().len() >= 150
    })
    .await;
    assert!(enough.is_some(), "the storm never got 150 logins through:\n{}", server.tail(30));
    server.kill9().await;
    gone.store(true, Ordering::Relaxed);
    let killed_at = storm_began.elapsed();
    for task in storm {
        task.await.unwrap();
    }
    let tokens = std::mem::take(&mut *tokens.lock().unwrap());
    report!(
        "kill -9 after {killed_at:.2?} of the storm: {} logins had returned 200, {} requests were cut short",
        tokens.len(),
        failures.load(Ordering::Relaxed)
    );
    let other = other.lock().unwrap().clone();
    assert!(other.is_empty(), "answers other than 200 before the kill: {:?}", &other[..other.len().min(10)]);

    // The file, as the next process finds it.
    let integrity = integrity_check(&file).await;
    assert_eq!(integrity, "ok", "PRAGMA integrity_check after kill -9");
    let live: i64 = {
        let mut conn = open_sqlite(&file).await;
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND ended_at IS NULL")
            .bind(user_id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
        live
    };
    assert!(live as usize <= LIMIT, "{live} live sessions in the file after kill -9 (limit {LIMIT})");

    // Restart on the same file; every token that got a 200 is known, with its reason.
    let restarted_at = Instant::now();
    let server = serve(dir.path(), &url, &[]).await;
    report!("restart on the same file: listening after {:.2?}", restarted_at.elapsed());
    let addr = server.addr.clone();
    let admin = token(&addr, ADMIN).await;
    let (mut working, mut reasons, mut bad) = (Vec::new(), std::collections::BTreeMap::new(), Vec::new());
    for (token, id) in &tokens {
        let reply = me(&addr, token, true).await.unwrap_or_else(|e| panic!("GET /api/v2/me/: {e:?}"));
        match reply.status {
            200 => working.push(*id),
            401 if !reply.reason().is_empty() && reply.reason() != "invalid_token" => {
                *reasons.entry(reply.reason().to_owned()).or_insert(0) += 1
            }
            _ => bad.push(format!("session {id}: {reply:?}")),
        }
    }
    report!("after restart: {} of the tokens work, the others are refused with {reasons:?}", working.len());
    assert!(
        bad.is_empty(),
        "{} tokens that got a 200 before the kill are unknown or wrongly refused after the restart:\n{}",
        bad.len(),
        bad[..bad.len().min(10)].join("\n")
    );
    assert!(working.len() <= LIMIT, "{} tokens of the storm still work (limit {LIMIT}): {working:?}", working.len());
    let active = active_sessions(&addr, &admin, user_id).await;
    assert!(active.len() <= LIMIT, "{} active sessions after the restart (limit {LIMIT}): {active:?}", active.len());
    for id in &working {
        assert!(active.iter().any(|s| s["id"] == json!(id)), "session {id} works but is not listed as active");
    }

    // Observation (documented in DECISIONS: a crashed process leaks its checks in flight
    // for at most 60 s): can the user log in right after the restart?
    let again = login(&addr, "storm").await;
    match &again {
        Ok(r) => report!("first login of the user after the restart: {} {} in {:.2?}", r.status, r.reason(), r.elapsed),
        Err(e) => report!("first login of the user after the restart: no response: {e:?}"),
    }
    assert_clean_log(&server, "after the restart");
    assert_eq!(integrity_check(&file).await, "ok", "PRAGMA integrity_check after the restart");
}
