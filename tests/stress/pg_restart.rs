//! PostgreSQL restarted (`pg_ctl restart -m fast`) and killed (`pg_ctl stop -m immediate`,
//! started again ~3 s later) under a load of logins and authenticated requests, on a private
//! cluster. While it is down every request fails fast with `503 {"detail", "reason":
//! "unavailable"}` (no hang, no 500, no panic) and `/readyz` is 503; within 10 s of the
//! database being back, logins and authenticated requests work again without restarting
//! Bouncer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::report;
use crate::support::*;

/// A request must be answered within this while the database is down (the pool waits 5 s
/// for a connection).
const FAIL_FAST: Duration = Duration::from_secs(6);
/// Logins and authenticated requests must work again within this once the database is back.
const RECOVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Login,
    Me,
}

struct Record {
    kind: Kind,
    sent: Instant,
    outcome: Outcome,
}

/// One load task: log in, then three authenticated requests with that token, until `stop`.
async fn load(addr: String, stop: Arc<AtomicBool>, records: Arc<Mutex<Vec<Record>>>) {
    let mut token: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let outcome = login(&addr, "loader").await;
        if let Ok(reply) = &outcome
            && reply.status == 200
        {
            token = reply.body["token"].as_str().map(str::to_owned);
        }
        records.lock().unwrap().push(Record { kind: Kind::Login, sent, outcome });
        if let Some(token) = &token {
            for _ in 0..3 {
                let sent = Instant::now();
                let outcome = me(&addr, token, false).await;
                records.lock().unwrap().push(Record { kind: Kind::Me, sent, outcome });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh login and an authenticated request with its token both succeed.
async fn works(addr: &str) -> bool {
    let Ok(reply) = login(addr, "loader").await else { return false };
    if reply.status != 200 {
        return false;
    }
    let token = reply.body["token"].as_str().unwrap_or_default().to_owned();
    me(addr, &token, false).await.is_ok_and(|r| r.status == 200)
}

/// How long after `back` the service worked again (polled every 50 ms), or a problem.
async fn recovery(addr: &str, back: Instant, what: &str, problems: &mut Vec<String>) -> Option<Duration> {
    let took = poll(back, Duration::from_millis(50), RECOVERY, async || works(addr).await).await;
    match took {
        Some(t) => report!("{what}: logins and authenticated requests work again {t:.2?} after the database is back"),
        None => problems.push(format!(
            "{what}: logins or authenticated requests still fail {RECOVERY:?} after the database is back"
        )),
    }
    took
}

/// Checks one answer given while the database was down.
fn expect_unavailable(what: &str, outcome: &Outcome, problems: &mut Vec<String>) -> Option<Duration> {
    match outcome {
        Err((why, t)) => {
            problems.push(format!("while down, {what}: no response ({why}) after {t:?}"));
            None
        }
        Ok(reply) => {
            if reply.elapsed > FAIL_FAST {
                problems.push(format!("while down, {what} took {:?} (> {FAIL_FAST:?}): {reply:?}", reply.elapsed));
            }
            let ok = if what.starts_with("GET /readyz") { reply.status == 503 } else { reply.is_unavailable() };
            if !ok {
                problems.push(format!("while down, {what}: expected 503 with reason \"unavailable\", got {reply:?}"));
            }
            if reply.status == 503 && reply.header("retry-after").is_none() && !what.starts_with("GET /readyz") {
                problems.push(format!("while down, {what}: 503 without Retry-After"));
            }
            Some(reply.elapsed)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long-running: cargo test --test stress -- --ignored"]
async fn postgres_restarted_and_killed_under_load() {
    let test = "pg_restart::postgres_restarted_and_killed_under_load";
    let Some(cluster) = PgCluster::create(test) else { return };
    let cluster = Arc::new(cluster);
    let cwd = tempfile::tempdir().unwrap();
    let mut server = serve(cwd.path(), &cluster.url(), &[]).await;
    let addr = server.addr.clone();
    let admin = token(&addr, ADMIN).await;
    create_user(&addr, &admin, "loader").await;
    let held = token(&addr, "loader").await;
    let mut problems = Vec::new();

    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(load(addr.clone(), stop.clone(), records.clone()))).collect();
    let warm = poll(Instant::now(), Duration::from_millis(20), Duration::from_secs(10), async || {
        records.lock().unwrap().iter().filter(|r| r.outcome.as_ref().is_ok_and(|r| r.status == 200)).count() >= 40
    })
    .await;
    assert!(warm.is_some(), "the load never got going:\n{}", server.tail(30));

    // 1. pg_ctl restart -m fast, under load.
    let restart_began = Instant::now();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart_fast()).await.unwrap();
    let restarted = Instant::now();
    report!("pg_ctl restart -m fast took {:.2?}", restarted - restart_began);
    let recovery_restart = recovery(&addr, restarted, "after restart -m fast", &mut problems).await;

    // 2. pg_ctl stop -m immediate, start again after ~3 s. Requests sent at once must come
    //    back within FAIL_FAST: 200 if they got through after the restart, else 503.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop_immediate()).await.unwrap();
    let down = Instant::now();
    let probes = tokio::spawn({
        let (addr, held) = (addr.clone(), held.clone());
        async move { tokio::join!(login(&addr, "loader"), me(&addr, &held, false)) }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start()).await.unwrap();
    let back = Instant::now();
    report!("short outage: database down (stop -m immediate .. start) for {:.2?}", back - down);
    let (short_login, short_me) = probes.await.unwrap();
    for (what, outcome) in [("POST /api/login/", &short_login), ("GET /api/v2/me/", &short_me)] {
        report!(
            "short outage: {what} sent as it went down -> {}",
            outcome
                .as_ref()
                .map(|r| format!("{} {} in {:.2?}", r.status, r.reason(), r.elapsed))
                .unwrap_or_else(|e| e.0.clone())
        );
        match outcome {
            Ok(r) if r.elapsed <= FAIL_FAST && (r.status == 200 || r.is_unavailable()) => {}
            other => problems.push(format!(
                "short outage: {what}: expected 200 or 503 unavailable within {FAIL_FAST:?}, got {other:?}"
            )),
        }
    }
    let recovery_short = recovery(&addr, back, "after a 3 s outage (stop -m immediate)", &mut problems).await;

    // 3. A longer outage (the database stays down until the probes are done): every request
    //    fails fast with 503 unavailable, and /readyz is 503.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop_immediate()).await.unwrap();
    let down = Instant::now();
    let (probe_login, probe_me, probe_quiet, probe_ready) = tokio::join!(
        login(&addr, "loader"),
        me(&addr, &held, false),
        me(&addr, &held, true),
        call(&addr, "GET", "/readyz", None, &[], None),
    );
    let mut down_times = Vec::new();
    for (what, outcome) in [
        ("POST /api/login/", &probe_login),
        ("GET /api/v2/me/", &probe_me),
        ("GET /api/v2/me/ (X-Session-Quiet)", &probe_quiet),
        ("GET /readyz", &probe_ready),
    ] {
        let took = expect_unavailable(what, outcome, &mut problems);
        report!(
            "long outage: {what} -> {} in {:.2?}",
            outcome.as_ref().map(|r| format!("{} {}", r.status, r.reason())).unwrap_or_else(|e| e.0.clone()),
            took.unwrap_or_default()
        );
        down_times.extend(took);
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start()).await.unwrap();
    let back = Instant::now();
    report!("long outage: database down (stop -m immediate .. start) for {:.2?}", back - down);
    let recovery_crash = recovery(&addr, back, "after the long outage", &mut problems).await;
    let ready = call(&addr, "GET", "/readyz", None, &[], None).await;
    if !ready.as_ref().is_ok_and(|r| r.status == 200) {
        problems.push(format!("GET /readyz after recovery: {ready:?}"));
    }
    let me_again = me(&addr, &held, false).await;
    if !me_again.as_ref().is_ok_and(|r| r.status == 200) {
        problems.push(format!("the token held across both outages no longer works: {me_again:?}"));
    }

    // Let the load run a little after recovery, then stop it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    // Every answer the load got, through both outages: 200, or 503 unavailable, fast.
    let records = std::mem::take(&mut *records.lock().unwrap());
    let (mut ok_times, mut unavailable_times, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    for record in &records {
        let at = record.sent.saturating_duration_since(restart_began);
        match &record.outcome {
            Ok(reply) if reply.elapsed > FAIL_FAST => {
                bad.push(format!("{:?} sent at +{at:.2?}: took {:.2?}: {reply:?}", record.kind, reply.elapsed))
            }
            Ok(reply) if reply.status == 200 => ok_times.push(reply.elapsed),
            Ok(reply) if reply.is_unavailable() => unavailable_times.push(reply.elapsed),
            Ok(reply) => bad.push(format!("{:?} sent at +{at:.2?}: {reply:?}", record.kind)),
            Err((why, t)) => bad.push(format!("{:?} sent at +{at:.2?}: no response: {why} after {t:.2?}", record.kind)),
        }
    }
    report!(
        "load: {} requests ({} logins); 200: {}; 503 unavailable: {}; other: {}",
        records.len(),
        records.iter().filter(|r| r.kind == Kind::Login).count(),
        latency(ok_times),
        latency(unavailable_times),
        bad.len()
    );
    report!("direct probes while down: {}", latency(down_times));
    report!(
        "recovery: after restart -m fast {recovery_restart:.2?}, after the 3 s outage {recovery_short:.2?}, \
         after the long outage {recovery_crash:.2?}"
    );
    if !bad.is_empty() {
        problems.push(format!(
            "{} answers of the load were neither 200 nor a fast 503 unavailable; first ones:\n  {}",
            bad.len(),
            bad.iter().take(12).cloned().collect::<Vec<_>>().join("\n  ")
        ));
    }
    if !server.is_running() {
        problems.push("the server exited".into());
    }
    let log = server.log();
    if log.contains("panicked") {
        problems.push(format!("the server panicked:\n{}", server.tail(40)));
    }
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("internal error")).take(5).collect();
    if !errors.is_empty() {
        problems.push(format!("the server logged internal errors (500s):\n{}", errors.join("\n")));
    }
    assert!(problems.is_empty(), "{} problem(s):\n- {}", problems.len(), problems.join("\n- "));
}
