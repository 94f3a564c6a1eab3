//! The limit at scale: 200 simultaneous logins for one user with `AUTH_TOKEN_PER_USER` = 3,
//! 20 rounds, against the real binary on SQLite, on PostgreSQL, and on PostgreSQL with two
//! server processes sharing the database (the logins split between them). After every round
//! exactly 3 sessions are active (as the administrator, a different user, lists them), all
//! from that round; no answer is a 5xx; nothing says "database is locked".

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::report;
use crate::support::*;

const LIMIT: usize = 3;
const LOGINS: usize = 200;
const ROUNDS: usize = 20;

/// One round: LOGINS connections opened, then every login written at the same moment
/// (round-robin over `addrs`); the answers in order.
async fn storm(addrs: &[String]) -> (Vec<Outcome>, Duration) {
    let body = json!({"username": "crowd", "password": PASSWORD});
    let barrier = Arc::new(tokio::sync::Barrier::new(LOGINS));
    let started = Instant::now();
    let tasks: Vec<_> = (0..LOGINS)
        .map(|i| {
            let addr = addrs[i % addrs.len()].clone();
            let bytes = request_bytes(&addr, "POST", "/api/login/", None, &[], Some(&body));
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let connected = Connected::open(&addr).await;
                barrier.wait().await;
                connected?.send(&bytes).await?.finish().await
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(LOGINS);
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    (outcomes, started.elapsed())
}

/// Runs the rounds against `servers` (the logins split between them) and returns the
/// problems found.
async fn rounds(label: &str, servers: &[&Server]) -> Vec<String> {
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let admin = token(&addrs[0], ADMIN).await;
    set_settings(&addrs[0], &admin, json!({"AUTH_TOKEN_PER_USER": LIMIT})).await;
    let user_id = create_user(&addrs[0], &admin, "crowd").await;
    // Every server must enforce the new limit before the storm (propagation: within 1 s).
    for addr in &addrs[1..] {
        let seen = poll(Instant::now(), Duration::from_millis(50), Duration::from_secs(5), async || {
            let reply = must(addr, "GET", "/api/v2/settings/authentication/", Some(&admin), None).await;
            reply.body["AUTH_TOKEN_PER_USER"] == json!(LIMIT)
        })
        .await;
        assert!(seen.is_some(), "{label}: {addr} does not have AUTH_TOKEN_PER_USER = {LIMIT} after 5 s");
    }

    let mut problems = Vec::new();
    let (mut round_times, mut login_times, mut last_tokens) = (Vec::new(), Vec::new(), Vec::new());
    let began = Instant::now();
    for round in 1..=ROUNDS {
        let (outcomes, took) = storm(&addrs).await;
        round_times.push(took);
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        let mut bad = Vec::new();
        for outcome in &outcomes {
            match outcome {
                Ok(reply) if reply.status == 200 => {
                    login_times.push(reply.elapsed);
                    ids.push(reply.body["session"]["id"].as_i64().unwrap());
                    tokens.push(reply.body["token"].as_str().unwrap().to_owned());
                }
                Ok(reply) => bad.push(format!("{reply:?}")),
                Err((why, t)) => bad.push(format!("no response: {why} after {t:?}")),
            }
            if let Ok(reply) = outcome
                && reply.text.contains("database is locked")
            {
                problems.push(format!("{label} round {round}: a response says \"database is locked\": {reply:?}"));
            }
        }
        if !bad.is_empty() {
            let mut kinds = std::collections::BTreeMap::new();
            for b in &bad {
                *kinds.entry(b.split(" in ").next().unwrap_or(b).to_owned()).or_insert(0) += 1;
            }
            problems.push(format!(
                "{label} round {round}: {} of {LOGINS} logins were not 200 ({kinds:?}); e.g. {}",
                bad.len(),
                bad[0]
            ));
        }
        for addr in &addrs {
            let active = active_sessions(addr, &admin, user_id).await;
            let foreign: Vec<i64> =
                active.iter().filter_map(|s| s["id"].as_i64()).filter(|id| !ids.contains(id)).collect();
            if active.len() != LIMIT || !foreign.is_empty() {
                problems.push(format!(
                    "{label} round {round}: {} active sessions listed by {addr} (expected exactly {LIMIT}, all from this round; not from it: {foreign:?})",
                    active.len()
                ));
            }
        }
        last_tokens = tokens;
    }
    let total = began.elapsed();

    // The last round's tokens: exactly LIMIT work, every other one is refused as limit_reached.
    let (mut working, mut refused, mut other) = (0, 0, Vec::new());
    for (i, token) in last_tokens.iter().enumerate() {
        let addr = &addrs[i % addrs.len()];
        match me(addr, token, true).await {
            Ok(r) if r.status == 200 => working += 1,
            Ok(r) if r.status == 401 && r.reason() == "limit_reached" => refused += 1,
            other_reply => other.push(format!("{other_reply:?}")),
        }
    }
    if working != LIMIT || !other.is_empty() {
        problems.push(format!(
            "{label}: of the last round's tokens {working} work, {refused} limit_reached, others: {:?}",
            &other[..other.len().min(5)]
        ));
    }
    for server in servers {
        let log = server.log();
        for bad in ["database is locked", "panicked"] {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(bad)).take(3).collect();
            if !lines.is_empty() {
                problems.push(format!("{label}: {} stderr says {bad:?}:\n{}", server.addr, lines.join("\n")));
            }
        }
    }
    report!(
        "{label}: {ROUNDS} rounds x {LOGINS} simultaneous logins in {total:.2?}; per round {}; per login {}",
        latency(round_times),
        latency(login_times)
    );
    problems
}

fn finish(problems: Vec<String>) {
    assert!(problems.is_empty(), "{} problem(s):\n- {}", problems.len(), problems.join("\n- "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long-running: cargo test --test stress -- --ignored"]
async fn two_hundred_simultaneous_logins_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bouncer.db").display());
    let server = serve(dir.path(), &url, &[]).await;
    finish(rounds("sqlite", &[&server]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long-running: cargo test --test stress -- --ignored"]
async fn two_hundred_simultaneous_logins_on_postgres() {
    let Some(db) = crate::helpers::TestDatabase::create("scale::two_hundred_simultaneous_logins_on_postgres").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &db.url, &[]).await;
    finish(rounds("postgres", &[&server]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long-running: cargo test --test stress -- --ignored"]
async fn two_hundred_simultaneous_logins_on_postgres_through_two_servers() {
    let Some(db) =
        crate::helpers::TestDatabase::create("scale::two_hundred_simultaneous_logins_on_postgres_through_two_servers")
            .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = serve(dir.path(), &db.url, &[]).await;
    let second = serve(dir.path(), &db.url, &[]).await;
    finish(rounds("postgres, two servers", &[&first, &second]).await);
}
