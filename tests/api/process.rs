//! The real binary, as a user runs it: `bouncer serve` on a fresh SQLite file, and the CLI.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::http;

const BIN: &str = env!("CARGO_BIN_EXE_bouncer");

fn cli(dir: &std::path::Path, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}", dir.join("cli.db").display()))
        .env("BOUNCER_ARGON2_MEMORY_KIB", "64")
        .env("BOUNCER_ARGON2_ITERATIONS", "1")
        .env_remove("BOUNCER_PASSWORD")
        .stdin(Stdio::null());
    if let Some(password) = password {
        command.env("BOUNCER_PASSWORD", password);
    }
    command.output().unwrap()
}

#[test]
fn the_cli_creates_lists_and_changes_users_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // No database here yet: an admin command says so rather than making an empty one.
    let nowhere = cli(dir.path(), &["user", "create", "alice", "--superuser"], Some("a good password"));
    assert!(!nowhere.status.success());
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("no database at"), "{nowhere:?}");
    assert!(!dir.path().join("cli.db").exists(), "no database was created");
    assert!(cli(dir.path(), &["migrate"], None).status.success());
    let created = cli(dir.path(), &["user", "create", "alice", "--superuser"], Some("a good password"));
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let again = cli(dir.path(), &["user", "create", "alice"], Some("a good password"));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let short = cli(dir.path(), &["user", "create", "bob"], Some("short"));
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 characters"));
    let list = cli(dir.path(), &["user", "list"], None);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("alice") && !listed.contains("bob"), "{listed}");
    let passwd = cli(dir.path(), &["user", "passwd", "alice"], Some("another good one"));
    assert!(passwd.status.success(), "{}", String::from_utf8_lossy(&passwd.stderr));
    let nobody = cli(dir.path(), &["user", "passwd", "nobody"], Some("another good one"));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no user named"));
    let migrate = cli(dir.path(), &["migrate"], None);
    assert!(migrate.status.success());
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let output = Command::new(BIN).arg("migrate").env("DATABASE_URL", "mysql://localhost/x").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL must start with sqlite: or postgres://"));
}

#[tokio::test]
async fn the_server_starts_on_a_fresh_sqlite_file_with_a_generated_admin_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("fresh.db").display()))
        .env("BOUNCER_BIND", "127.0.0.1:0")
        .env("BOUNCER_ARGON2_MEMORY_KIB", "64")
        .env("BOUNCER_ARGON2_ITERATIONS", "1")
        .env_remove("BOUNCER_ADMIN_PASSWORD")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut password, mut addr) = (None, None);
    let mut previous_blank = false;
    while addr.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
        if previous_blank && line.starts_with("    ") && password.is_none() {
            password = Some(line.trim().to_owned());
        }
        previous_blank = line.trim().is_empty();
        if let Some(rest) = line.split("address=").nth(1) {
            addr = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
    }
    let (addr, password) = (addr.unwrap(), password.expect("the generated password is printed"));
    let (status, body) =
        http(&addr, "POST", "/api/login/", None, Some(json!({"username": "admin", "password": password}))).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, me) = http(&addr, "GET", "/api/v2/me/", Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!(me["is_superuser"], json!(true));
    // The password is printed for the person, never logged.
    let rest = tokio::spawn(async move {
        let mut seen = String::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await {
            seen.push_str(&line);
        }
        seen
    });
    let (status, _) = http(&addr, "POST", "/api/logout/", Some(&token), None).await;
    assert_eq!(status, 204);
    let logged = rest.await.unwrap();
    assert!(!logged.contains(&token));
    child.start_kill().unwrap();
}
