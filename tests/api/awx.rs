//! AWX's own command-line client (`awx`, from the `awxkit` package) against the real binary,
//! unchanged: its form login with CSRF, and a token; `me`, users, and settings.
//!
//! The `awx` command comes from `BOUNCER_AWX` or the PATH; without it the test says it was
//! skipped, unless `BOUNCER_REQUIRE_AWX=1` (which `.ci/run` sets, after installing awxkit).

use std::io::Write;
use std::process::Stdio;

use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn awx_command() -> Option<String> {
    if let Ok(path) = std::env::var("BOUNCER_AWX") {
        return Some(path);
    }
    let found = std::process::Command::new("awx").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Some("awx".into());
    }
    assert!(
        std::env::var("BOUNCER_REQUIRE_AWX").as_deref() != Ok("1"),
        "BOUNCER_REQUIRE_AWX=1 but no awx command (set BOUNCER_AWX or install awxkit)"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED awx tests: no awx command (pip install awxkit, or set BOUNCER_AWX)");
    None
}

/// Runs `awx` with the connection options and `args`; returns (exit code, stdout as JSON or text).
fn awx(awx: &str, connection: &[String], args: &[&str]) -> (i32, Value, String) {
    let output = std::process::Command::new(awx)
        .args(connection)
        .args(["--conf.color", "f", "-f", "json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("awx runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), json, format!("{stdout}{stderr}"))
}

async fn token(addr: &str) -> String {
    let (status, body) = crate::helpers::http(
        addr,
        "POST",
        "/api/login/",
        None,
        Some(json!({"username": "admin", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn the_awx_cli_works_unchanged(database_url: &str) {
    let Some(awx_bin) = awx_command() else { return };
    let server = crate::helpers::Server::start(database_url, &[]).await;
    let addr = server.addr.clone();
    let host = format!("http://{addr}");
    let password_mode: Vec<String> =
        ["--conf.host", &host, "--conf.username", "admin", "--conf.password", PASSWORD].map(String::from).into();

    let (code, me, out) = awx(&awx_bin, &password_mode, &["me"]);
    assert_eq!(code, 0, "awx me: {out}");
    assert_eq!(me["username"], json!("admin"), "{out}");

    let (code, created, out) =
        awx(&awx_bin, &password_mode, &["users", "create", "--username", "robot", "--password", "a long password"]);
    assert_eq!(code, 0, "awx users create: {out}");
    assert_eq!(created["username"], json!("robot"));

    let (code, listed, out) = awx(&awx_bin, &password_mode, &["users", "list"]);
    assert_eq!(code, 0, "awx users list: {out}");
    let names: Vec<&str> =
        listed["results"].as_array().unwrap().iter().filter_map(|u| u["username"].as_str()).collect();
    assert!(names.contains(&"admin") && names.contains(&"robot"), "{names:?}");

    let (code, settings, out) = awx(&awx_bin, &password_mode, &["settings", "list", "--slug", "authentication"]);
    assert_eq!(code, 0, "awx settings list: {out}");
    assert_eq!(settings["AUTH_TOKEN_PER_USER"], json!(-1));

    let (code, modified, out) = awx(&awx_bin, &password_mode, &["settings", "modify", "AUTH_TOKEN_PER_USER", "5"]);
    assert_eq!(code, 0, "awx settings modify: {out}");
    assert_eq!(modified, json!({"key": "AUTH_TOKEN_PER_USER", "value": 5}));

    // A bad value gets the API's message and a failing exit code.
    let (code, _, out) = awx(&awx_bin, &password_mode, &["settings", "modify", "AUTH_TOKEN_PER_USER", "0"]);
    assert_ne!(code, 0);
    assert!(out.contains("lock every user out"), "{out}");

    // With a token instead of a password.
    let token = token(&addr).await;
    let token_mode: Vec<String> = ["--conf.host", &host, "--conf.token", &token].map(String::from).into();
    let (code, me, out) = awx(&awx_bin, &token_mode, &["me"]);
    assert_eq!(code, 0, "awx me (token): {out}");
    assert_eq!(me["username"], json!("admin"));
    let (code, settings, out) = awx(&awx_bin, &token_mode, &["settings", "list", "--slug", "authentication"]);
    assert_eq!(code, 0, "awx settings list (token): {out}");
    assert_eq!(settings["AUTH_TOKEN_PER_USER"], json!(5));
    let (code, listed, out) = awx(&awx_bin, &token_mode, &["users", "list", "--username", "robot"]);
    assert_eq!(code, 0, "awx users list --username (token): {out}");
    assert_eq!(listed["count"], json!(1), "{out}");
}

#[tokio::test]
async fn the_awx_cli_works_unchanged_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    the_awx_cli_works_unchanged(&format!("sqlite://{}", dir.path().join("awx.db").display())).await;
}

#[tokio::test]
async fn the_awx_cli_works_unchanged_on_postgres() {
    let Some(database) = crate::helpers::TestDatabase::create("the_awx_cli_works_unchanged_on_postgres").await else {
        return;
    };
    the_awx_cli_works_unchanged(&database.url).await;
}
