//! SQLite out of space: the database on a small tmpfs, filled up with a ballast file. A login
//! fails closed (`503 unavailable`, no token, nothing half-written), existing tokens keep
//! working for requests that need no write (`X-Session-Quiet: 1`), and once the ballast is
//! deleted logins work again, without restarting Bouncer.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::report;
use crate::support::*;

/// `(sessions of the user, live ones, users.last_login_at)` read straight from the file.
async fn stored(file: &std::path::Path, user_id: i64) -> (i64, i64, Option<i64>) {
    let mut conn = open_sqlite(file).await;
    let (all, live): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN ended_at IS NULL THEN 1 ELSE 0 END), 0) FROM sessions WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let last: Option<i64> = sqlx::query_scalar("SELECT last_login_at FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    (all, live, last)
}

/// Fills the disk, checks that logins fail closed and reads still work, frees it, and checks
/// that logins work again.
#[allow(clippy::too_many_arguments)]
async fn full_disk_round(
    label: &str,
    tmpfs: &Tmpfs,
    file: &std::path::Path,
    addr: &str,
    admin: &str,
    user_id: i64,
    held: &str,
    problems: &mut Vec<String>,
) {
    let before = stored(file, user_id).await;
    // Move every committed page into the database file and empty the WAL, so the next write
    // must grow a file (a WAL that was already large would be reused in place).
    {
        let mut conn = open_sqlite(file).await;
        let (busy, _, _): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut conn).await.unwrap();
        assert_eq!(busy, 0, "wal_checkpoint(TRUNCATE) was blocked");
        sqlx::Connection::close(conn).await.unwrap();
    }
    let wal = std::fs::metadata(tmpfs.path().join("bouncer.db-wal")).map(|m| m.len()).unwrap_or(0);
    let ballast = tmpfs.path().join("ballast");
    let filled = fill(&ballast);
    report!("{label}: WAL {wal} bytes after the checkpoint; a ballast of {filled} bytes fills the 4 MiB tmpfs");

    // A login on a full disk: fails closed.
    for attempt in 1..=2 {
        match login(addr, "disk").await {
            Ok(reply) => {
                report!("{label}: login on a full disk (attempt {attempt}): {reply:?}");
                if !reply.is_unavailable() {
                    problems.push(format!(
                        "{label}: login {attempt} on a full disk: expected 503 with reason \"unavailable\", got {reply:?}"
                    ));
                }
                if reply.text.contains("bnc_") || reply.body.get("token").is_some() {
                    problems.push(format!("{label}: login {attempt} on a full disk issued a token: {reply:?}"));
                }
                if reply.elapsed > Duration::from_secs(6) {
                    problems.push(format!("{label}: login {attempt} on a full disk took {:?}", reply.elapsed));
                }
            }
            Err(e) => problems.push(format!("{label}: login {attempt} on a full disk: no response: {e:?}")),
        }
    }
    let during = stored(file, user_id).await;
    if during != before {
        problems.push(format!(
            "{label}: the failed logins changed the database: (sessions, live, last_login_at) {before:?} -> {during:?}"
        ));
    }

    // Requests that need no write still work.
    let quiet_me = me(addr, held, true).await;
    report!("{label}: quiet GET /api/v2/me/ on a full disk: {}", quiet_me.as_ref().map(|r| r.status).unwrap_or(0));
    if !quiet_me.as_ref().is_ok_and(|r| r.status == 200 && r.body["username"] == json!("disk")) {
        problems.push(format!("{label}: an existing token, quiet GET /api/v2/me/ on a full disk: {quiet_me:?}"));
    }
    let list_path = format!("/api/v2/users/{user_id}/sessions/");
    let quiet_list = call(addr, "GET", &list_path, Some(admin), &[("X-Session-Quiet", "1")], None).await;
    report!(
        "{label}: quiet GET {list_path} (admin) on a full disk: {}",
        quiet_list.as_ref().map(|r| r.status).unwrap_or(0)
    );
    if !quiet_list.as_ref().is_ok_and(|r| r.status == 200) {
        problems.push(format!("{label}: quiet GET {list_path} as admin on a full disk: {quiet_list:?}"));
    }
    // A request that must write (it moves the idle timer): a clean 503, not a 500.
    let loud_me = me(addr, held, false).await;
    report!("{label}: GET /api/v2/me/ (moves the idle timer) on a full disk: {loud_me:?}");
    if !loud_me.as_ref().is_ok_and(|r| r.status == 200 || r.is_unavailable()) {
        problems.push(format!(
            "{label}: GET /api/v2/me/ (not quiet) on a full disk: expected 200 or 503 unavailable, got {loud_me:?}"
        ));
    }

    // Space again: logins work, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let mut fresh = None;
    let took =
        poll(freed, Duration::from_millis(100), Duration::from_secs(10), async || match login(addr, "disk").await {
            Ok(reply) if reply.status == 200 => {
                fresh = reply.body["token"].as_str().map(str::to_owned);
                true
            }
            _ => false,
        })
        .await;
    match took {
        Some(t) => report!("{label}: after deleting the ballast, a login succeeds {t:.2?} later"),
        None => problems.push(format!("{label}: logins still fail 10 s after the ballast was deleted")),
    }
    if let Some(fresh) = &fresh {
        let reply = me(addr, fresh, false).await;
        if !reply.as_ref().is_ok_and(|r| r.status == 200) {
            problems.push(format!("{label}: the token of the login after recovery: {reply:?}"));
        }
        let after = stored(file, user_id).await;
        if after.0 != before.0 + 1 {
            problems.push(format!(
                "{label}: sessions of the user: {} before, {} after one successful login",
                before.0, after.0
            ));
        }
    }
    let held_again = me(addr, held, false).await;
    if !held_again.as_ref().is_ok_and(|r| r.status == 200) {
        problems.push(format!("{label}: the token held through the outage, after it: {held_again:?}"));
    }
    // Once recovered, it stays recovered: no pooled connection is left broken by the failure.
    let mut failed = Vec::new();
    for _ in 0..AFTERWARDS {
        match login(addr, "disk").await {
            Ok(reply) if reply.status == 200 => {}
            other => failed.push(other.map(|r| format!("{r:?}")).unwrap_or_else(|e| format!("{e:?}"))),
        }
    }
    report!("{label}: {AFTERWARDS} logins after the recovery: {} failed", failed.len());
    if !failed.is_empty() {
        problems.push(format!(
            "{label}: {} of {AFTERWARDS} logins after the recovery failed, e.g. {}",
            failed.len(),
            failed[0]
        ));
    }
}

/// Logins made once the disk has space again; every one must succeed.
const AFTERWARDS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long-running: cargo test --test stress -- --ignored"]
async fn sqlite_out_of_space_fails_closed_and_recovers() {
    let test = "disk_full::sqlite_out_of_space_fails_closed_and_recovers";
    let tmpfs = match Tmpfs::mount("4m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => return skip(test, &format!("cannot make a small filesystem: {why}")),
    };
    let file = tmpfs.path().join("bouncer.db");
    let url = format!("sqlite://{}", file.display());
    let cwd = tempfile::tempdir().unwrap();
    let mut server = serve(cwd.path(), &url, &[]).await;
    let addr = server.addr.clone();
    let admin = token(&addr, ADMIN).await;
    let user_id = create_user(&addr, &admin, "disk").await;
    let held = token(&addr, "disk").await;

    let mut problems = Vec::new();
    // Round 1 (the lockout on, as by default): the login's first write is the lockout's.
    full_disk_round("lockout on", &tmpfs, &file, &addr, &admin, user_id, &held, &mut problems).await;
    // Round 2 (the lockout off): the write that fails is the login's own transaction
    // (expire, insert the session, last_login_at), at its commit.
    set_settings(&addr, &admin, json!({"AUTH_LOGIN_FAILURE_LIMIT": 0})).await;
    full_disk_round("lockout off", &tmpfs, &file, &addr, &admin, user_id, &held, &mut problems).await;
    if !problems.is_empty() {
        report!("server log tail:\n{}", server.tail(15));
    }
    if !server.is_running() {
        problems.push("the server exited".into());
    }
    let log = server.log();
    if log.contains("panicked") {
        problems.push(format!("the server panicked:\n{}", server.tail(30)));
    }
    let internal: Vec<&str> = log.lines().filter(|l| l.contains("internal error")).take(5).collect();
    if !internal.is_empty() {
        problems.push(format!("internal errors logged:\n{}", internal.join("\n")));
    }
    server.kill9().await;
    let integrity = integrity_check(&file).await;
    if integrity != "ok" {
        problems.push(format!("PRAGMA integrity_check: {integrity}"));
    }
    drop(server);
    drop(tmpfs);
    assert!(problems.is_empty(), "{} problem(s):\n- {}", problems.len(), problems.join("\n- "));
}
