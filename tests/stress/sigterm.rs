//! Graceful shutdown on SIGTERM: the requests in flight (logins with real-cost argon2) all
//! get their complete 200, the process exits 0 within a few seconds, and after a restart every
//! token it handed out works. Also with a browser's event stream open, which must not keep
//! the process alive.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::report;
use crate::support::*;

/// Logins sent before the SIGTERM.
const BATCH: usize = 16;
/// The process must be gone within this after SIGTERM (beyond finishing its requests).
const EXIT_WITHIN: Duration = Duration::from_secs(5);
const REAL_ARGON2: &[(&str, &str)] = &[("BOUNCER_ARGON2_MEMORY_KIB", "19456"), ("BOUNCER_ARGON2_ITERATIONS", "2")];

/// SIGTERM this long after the last login of the batch was written, one trial each: "right
/// after" is a race, so several trials catch it whatever the load of the machine.
const DELAYS_MS: &[u64] = &[0, 1, 2, 5];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long-running: cargo test --test stress -- --ignored"]
async fn sigterm_finishes_the_logins_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bouncer.db").display());
    let mut problems = Vec::new();
    let mut previous: Vec<String> = Vec::new();
    let body = json!({"username": "slow", "password": PASSWORD});
    for (trial, delay) in DELAYS_MS.iter().enumerate() {
        let mut server = serve(dir.path(), &url, REAL_ARGON2).await;
        let addr = server.addr.clone();
        // Every token handed out by the previous process, during its shutdown, works.
        for (i, token) in previous.iter().enumerate() {
            let reply = me(&addr, token, false).await;
            if !reply.as_ref().is_ok_and(|r| r.status == 200) {
                problems.push(format!(
                    "trial {}: token {i} (a 200 during the shutdown) after the restart: {reply:?}",
                    trial - 1
                ));
            }
        }
        if trial == 0 {
            let admin = token(&addr, ADMIN).await;
            create_user(&addr, &admin, "slow").await;
            let one = login(&addr, "slow").await.unwrap();
            assert_eq!(one.status, 200, "{one:?}");
            report!("one login with argon2 19456 KiB x 2 takes {:.0?}", one.elapsed);
        }

        // The batch: every request connected and written, then SIGTERM.
        let bytes = request_bytes(&addr, "POST", "/api/login/", None, &[], Some(&body));
        let mut sent = Vec::new();
        for i in 0..BATCH {
            sent.push(Sent::send(&addr, &bytes).await.unwrap_or_else(|e| panic!("request {i}: {e:?}")));
        }
        if *delay > 0 {
            tokio::time::sleep(Duration::from_millis(*delay)).await;
        }
        server.signal(libc::SIGTERM);
        let term = Instant::now();
        let replies: Vec<Outcome> = futures_util::future::join_all(sent.into_iter().map(|s| tokio::spawn(s.finish())))
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let answered = term.elapsed();
        let exit = server.wait_exit(EXIT_WITHIN + Duration::from_secs(10)).await;
        let exited = term.elapsed();

        let mut tokens = Vec::new();
        let mut lost = Vec::new();
        for (i, reply) in replies.iter().enumerate() {
            match reply {
                Ok(r) if r.status == 200 && r.body["token"].is_string() => {
                    tokens.push(r.body["token"].as_str().unwrap().to_owned())
                }
                Ok(r) => lost.push(format!("login {i}: {r:?}")),
                Err((why, t)) => lost.push(format!("login {i}: no response: {why} after {t:.1?}")),
            }
        }
        report!(
            "trial {trial}, SIGTERM {delay} ms after the last of {BATCH} logins was written: {}/{BATCH} answered 200 \
             (the last {answered:.2?} after SIGTERM); exit {:?} {exited:.2?} after SIGTERM",
            tokens.len(),
            exit.map(|s| s.code())
        );
        if !lost.is_empty() {
            problems.push(format!(
                "trial {trial} (SIGTERM {delay} ms after the requests were written): {} of {BATCH} logins sent before \
                 SIGTERM got no complete 200: {}",
                lost.len(),
                lost.join("; ")
            ));
        }
        match exit {
            None => {
                problems.push(format!("trial {trial}: still running {exited:?} after SIGTERM:\n{}", server.tail(10)))
            }
            Some(status) if !status.success() => {
                problems.push(format!("trial {trial}: exited with {status} after SIGTERM:\n{}", server.tail(10)))
            }
            Some(_) if exited > answered + EXIT_WITHIN => problems.push(format!(
                "trial {trial}: took {exited:?} to exit after SIGTERM (answers were done after {answered:?})"
            )),
            Some(_) => {}
        }
        let log = server.log();
        for expected in ["shutting down", "stopped"] {
            if !log.contains(expected) {
                problems.push(format!("trial {trial}: no {expected:?} line in the log:\n{}", server.tail(10)));
            }
        }
        if log.contains("panicked") {
            problems.push(format!("trial {trial}: panicked:\n{}", server.tail(30)));
        }
        if server.is_running() {
            server.kill9().await;
        }
        previous = tokens;
    }
    let server = serve(dir.path(), &url, REAL_ARGON2).await;
    for (i, token) in previous.iter().enumerate() {
        let reply = me(&server.addr, token, false).await;
        if !reply.as_ref().is_ok_and(|r| r.status == 200) {
            problems.push(format!("last trial: token {i} (a 200 during the shutdown) after the restart: {reply:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n- {}\n(A reset login was connected and fully written before SIGTERM, but the server \
         had not read it yet: on shutdown it drops the listener and closes connections whose request it has \
         not read, instead of serving them.)",
        problems.len(),
        problems.join("\n- ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long-running: cargo test --test stress -- --ignored"]
async fn sigterm_with_an_event_stream_open_still_exits_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bouncer.db").display());
    let mut server = serve(dir.path(), &url, &[]).await;
    let addr = server.addr.clone();
    let admin = token(&addr, ADMIN).await;

    // A browser tab: the event stream of /api/v2/me/events/, open and idle.
    let bytes =
        request_bytes(&addr, "GET", "/api/v2/me/events/", Some(&admin), &[("Accept", "text/event-stream")], None);
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &bytes).await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut stream, &mut head))
        .await
        .expect("the event stream answers")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "event stream: {head}");
    assert!(head.to_ascii_lowercase().contains("text/event-stream"), "event stream: {head}");

    server.signal(libc::SIGTERM);
    let term = Instant::now();
    let exit = server.wait_exit(EXIT_WITHIN + Duration::from_secs(5)).await;
    let took = term.elapsed();
    report!("SIGTERM with an event stream open: exit {exit:?} after {took:.2?}");
    // The stream must have been closed by the server (EOF), not left hanging.
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest))
            .await
            .is_ok();
    let still_running = exit.is_none();
    if still_running {
        server.kill9().await;
    }
    assert!(
        !still_running && took <= EXIT_WITHIN,
        "with one event stream (/api/v2/me/events/) open, the server had not exited {took:.1?} after SIGTERM \
         (graceful shutdown waits for the stream, which never ends); closed by server: {closed}; log:\n{}",
        server.tail(8)
    );
    assert!(exit.unwrap().success(), "exit status {exit:?}:\n{}", server.tail(10));
}
