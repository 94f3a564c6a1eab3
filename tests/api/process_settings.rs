//! Settings across processes, with the real binary: settings files at start-up and on SIGHUP,
//! the `bouncer settings` command, and a change made through one process in force in another
//! (PostgreSQL: LISTEN/NOTIFY, at once; SQLite: a version polled every second); and the
//! `bouncer sessions` command against a running server.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::helpers::{ADMIN, PASSWORD, Server, TestApp, bouncer_command, postgres_url};

const SETTINGS: &str = "/api/v2/settings/authentication/";
const ACTIVITY: &str = "/api/v2/activity_stream/?page_size=200";

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("bouncer.db").display())
}

/// The binary with a test's environment ([`bouncer_command`]) and, if given, a settings
/// directory.
fn bouncer(cwd: &Path, database_url: &str, conf_dir: Option<&Path>) -> Command {
    let mut command = bouncer_command(cwd, database_url);
    if let Some(dir) = conf_dir {
        command.env("BOUNCER_CONF_DIR", dir);
    }
    command
}

/// What a finished command printed.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `bouncer ARGS` to completion (at most 10 s).
async fn cli(cwd: &Path, database_url: &str, args: &[&str]) -> Output {
    let mut command = bouncer(cwd, database_url, None);
    command.args(args);
    let output = tokio::time::timeout(Duration::from_secs(10), command.output())
        .await
        .unwrap_or_else(|_| panic!("`bouncer {}` did not finish within 10 s", args.join(" ")))
        .unwrap();
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `bouncer serve` with [`bouncer`]'s environment, listening.
async fn serve(cwd: &Path, database_url: &str, conf_dir: Option<&Path>) -> Server {
    let mut command = bouncer(cwd, database_url, conf_dir);
    command.arg("serve");
    Server::spawn(command).await
}

/// One HTTP/1.1 request over a fresh connection (at most 10 s); returns status and JSON body.
async fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let json =
            response.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
        (status, json)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} on {addr}: no answer within 10 s"))
}

async fn login(addr: &str, username: &str) -> (u16, Value) {
    http(addr, "POST", "/api/login/", None, Some(json!({"username": username, "password": PASSWORD}))).await
}

/// Logs in and returns the token, failing the test if the login fails.
async fn token(addr: &str, username: &str) -> String {
    let (status, body) = login(addr, username).await;
    assert_eq!(status, 200, "login of {username} on {addr}: {body}");
    body["token"].as_str().unwrap().to_owned()
}

/// The effective settings as `addr` serves them.
async fn settings(addr: &str, token: &str) -> Value {
    let (status, body) = http(addr, "GET", SETTINGS, Some(token), None).await;
    assert_eq!(status, 200, "GET {SETTINGS} on {addr}: {body}");
    body
}

async fn patch(addr: &str, token: &str, changes: Value) -> (u16, Value) {
    http(addr, "PATCH", SETTINGS, Some(token), Some(changes)).await
}

/// The activity-stream entries about settings, newest first.
async fn setting_entries(addr: &str, token: &str) -> Vec<Value> {
    let (status, body) = http(addr, "GET", ACTIVITY, Some(token), None).await;
    assert_eq!(status, 200, "GET {ACTIVITY}: {body}");
    body["results"].as_array().unwrap().iter().filter(|e| e["object"] == json!("setting")).cloned().collect()
}

/// Calls `probe` every `every` until it returns true; the time from `since` until it did,
/// or `None` when `deadline` (counted from `since`) passed first.
async fn poll(
    since: Instant,
    every: Duration,
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> bool,
) -> Option<Duration> {
    loop {
        if probe().await {
            return Some(since.elapsed());
        }
        if since.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// A database of its own on the test PostgreSQL server, dropped (connections and all) at
/// the end of the test.
struct FreshPostgres {
    name: String,
    url: String,
}

fn postgres_required() -> bool {
    std::env::var("BOUNCER_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// `url` with its database name replaced by `name` (any `?query` kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{host}/{name}{query}")
}

impl FreshPostgres {
    /// `None` (and a line saying so) when PostgreSQL is unreachable and not required.
    async fn create(test: &str) -> Option<FreshPostgres> {
        let url = postgres_url();
        let mut admin = match <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
            Ok(conn) => conn,
            Err(err) if !postgres_required() => {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: PostgreSQL unreachable at {url} ({err}); set BOUNCER_REQUIRE_POSTGRES=1 to fail instead"
                );
                return None;
            }
            Err(err) => panic!("PostgreSQL is required (BOUNCER_REQUIRE_POSTGRES=1) but unreachable at {url}: {err}"),
        };
        let suffix: String = bouncer::auth::token::random_bytes::<6>().iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("bouncer_ps_{}_{suffix}", std::process::id());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        let _ = sqlx::Connection::close(admin).await;
        Some(FreshPostgres { url: with_database(&url, &name), name })
    }
}

impl Drop for FreshPostgres {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Async work cannot run in Drop; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                }
            })
        })
        .join();
    }
}

/// A settings directory that must stop start-up, and what the error must say.
struct BadConf {
    /// The files, written in this order (they are read in name order).
    files: &'static [(&'static str, &'static str)],
    /// The file and line at fault, the key, and a part of the message.
    file: &'static str,
    line: usize,
    key: &'static str,
    message_part: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_settings_file_stops_start_up_with_file_line_key_and_message() {
    let cases = [
        BadConf {
            files: &[("limits.toml", "# limits\nAUTH_TOKEN_PER_USER = 0\n")],
            file: "limits.toml",
            line: 2,
            key: "AUTH_TOKEN_PER_USER",
            message_part: "0 would lock every user out",
        },
        BadConf {
            files: &[(
                "tower.py",
                "# Tower settings\nAUTH_TOKEN_EXPIRATION = 1800\nAUTH_BASIC_ENABLED = true  # not Python\n",
            )],
            file: "tower.py",
            line: 3,
            key: "AUTH_BASIC_ENABLED",
            message_part: "True",
        },
        BadConf {
            files: &[
                ("10-ok.toml", "AUTH_TOKEN_PER_USER = 2\n"),
                ("20-site.py", "SESSION_LIMIT_POLICY = 'kick_newest'\n"),
            ],
            file: "20-site.py",
            line: 1,
            key: "SESSION_LIMIT_POLICY",
            message_part: "kick_newest",
        },
    ];
    for (index, BadConf { files, file: bad_file, line, key, message_part }) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf.d");
        std::fs::create_dir(&conf).unwrap();
        for (name, text) in files {
            std::fs::write(conf.join(name), text).unwrap();
        }
        // A port known to be free, so that "nothing listens on it" can be checked afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = bouncer(dir.path(), &sqlite_url(dir.path()), None);
        command.env("BOUNCER_BIND", format!("127.0.0.1:{port}"));
        // The environment variable in one case, the global flag in the others.
        if index == 0 {
            command.env("BOUNCER_CONF_DIR", &conf).arg("serve");
        } else {
            command.arg("--conf-dir").arg(&conf).arg("serve");
        }
        let output = tokio::time::timeout(Duration::from_secs(10), command.output())
            .await
            .unwrap_or_else(|_| panic!("{bad_file}: bouncer kept running with a bad settings file"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad_file}: exit status {}; stderr:\n{stderr}", output.status);
        assert!(output.status.code().is_some(), "{bad_file}: killed by a signal, not an exit: {}", output.status);
        assert!(stderr.contains("bouncer: error: "), "{bad_file}: {stderr}");
        let location = format!("{}:{line}: ", conf.join(bad_file).display());
        let reported = stderr
            .lines()
            .map(|l| l.strip_prefix("bouncer: error: ").unwrap_or(l))
            .find(|l| l.starts_with(&location))
            .unwrap_or_else(|| panic!("no line starting with {location:?} in stderr:\n{stderr}"));
        let message = reported
            .strip_prefix(&location)
            .and_then(|rest| rest.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("not FILE:LINE: KEY: message: {reported:?}"));
        assert!(message.contains(message_part), "{reported:?} should mention {message_part:?}");
        assert!(!stderr.contains("listening"), "{bad_file}: it listened:\n{stderr}");
        let connected = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(connected.is_err(), "{bad_file}: something is listening on port {port}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_settings_directory_and_a_bad_file_keeps_the_values_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    let file = conf.join("limits.toml");
    std::fs::write(&file, "AUTH_TOKEN_PER_USER = 2\n").unwrap();
    let mut server = serve(dir.path(), &sqlite_url(dir.path()), Some(&conf)).await;
    let addr = server.addr.clone();
    let admin = token(&addr, ADMIN).await;

    assert_eq!(settings(&addr, &admin).await["AUTH_TOKEN_PER_USER"], json!(2));
    let (status, body) = patch(&addr, &admin, json!({"AUTH_TOKEN_PER_USER": 5})).await;
    assert_eq!(status, 400, "{body}");
    let message = body["AUTH_TOKEN_PER_USER"][0].as_str().unwrap_or_default();
    assert!(message.contains("limits.toml"), "the 400 should name the file: {body}");

    // A good file: installed on SIGHUP and recorded with origin "file".
    std::fs::write(&file, "AUTH_TOKEN_PER_USER = 3\n").unwrap();
    server.signal(libc::SIGHUP);
    let seen = poll(Instant::now(), Duration::from_millis(50), Duration::from_secs(5), async || {
        settings(&addr, &admin).await["AUTH_TOKEN_PER_USER"] == json!(3)
    })
    .await;
    assert!(seen.is_some(), "3 not in force 5 s after SIGHUP; log:\n{}", server.log());
    let from_files =
        |entries: &[Value]| entries.iter().filter(|e| e["origin"] == json!("file")).cloned().collect::<Vec<_>>();
    let entries = from_files(&setting_entries(&addr, &admin).await);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["changes"], json!({"AUTH_TOKEN_PER_USER": [2, 3]}));
    assert_eq!(entries[0]["actor"], json!(null));
    assert_eq!(entries[0]["category"], json!("authentication"));
    let (status, body) = patch(&addr, &admin, json!({"AUTH_TOKEN_PER_USER": 5})).await;
    assert_eq!(status, 400, "still defined in the file: {body}");

    // A bad file: the error is logged, the values in force stay, the server keeps serving.
    std::fs::write(&file, "AUTH_TOKEN_PER_USER = 0\n").unwrap();
    server.signal(libc::SIGHUP);
    let error = format!("{}:1: AUTH_TOKEN_PER_USER: 0 would lock every user out", file.display());
    let logged = poll(Instant::now(), Duration::from_millis(20), Duration::from_secs(5), async || {
        server.log().lines().any(|line| line.contains(&error))
    })
    .await;
    assert!(logged.is_some(), "no log line with {error:?} within 5 s; log:\n{}", server.log());
    assert!(server.is_running(), "the server stopped on a bad file; log:\n{}", server.log());
    assert_eq!(settings(&addr, &admin).await["AUTH_TOKEN_PER_USER"], json!(3));
    let (status, _) = http(&addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    token(&addr, ADMIN).await;
    assert_eq!(from_files(&setting_entries(&addr, &admin).await).len(), 1, "a rejected file is not a change");

    // Fixed again: the next SIGHUP installs it.
    std::fs::write(&file, "AUTH_TOKEN_PER_USER = 4\n").unwrap();
    server.signal(libc::SIGHUP);
    let seen = poll(Instant::now(), Duration::from_millis(50), Duration::from_secs(5), async || {
        settings(&addr, &admin).await["AUTH_TOKEN_PER_USER"] == json!(4)
    })
    .await;
    assert!(seen.is_some(), "the fixed file not in force 5 s after SIGHUP; log:\n{}", server.log());
    let entries = from_files(&setting_entries(&addr, &admin).await);
    assert_eq!(entries[0]["changes"], json!({"AUTH_TOKEN_PER_USER": [3, 4]}), "{entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_changes_and_resets_settings_with_the_apis_validation_and_origin_cli() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    assert!(cli(dir.path(), &url, &["migrate"]).await.success);
    let defaults = json!({
        "AUTH_BASIC_ENABLED": true,
        "AUTH_LOGIN_FAILURE_LIMIT": 10,
        "AUTH_LOGIN_LOCKOUT_SECONDS": 300,
        "AUTH_TOKEN_EXPIRATION": 1800,
        "AUTH_TOKEN_MAX_AGE": 0,
        "AUTH_TOKEN_PER_USER": -1,
        "SESSION_LIMIT_POLICY": "kick_oldest",
    });
    let get_all = async || {
        let out = cli(dir.path(), &url, &["settings", "get"]).await;
        assert!(out.success, "settings get: {}", out.stderr);
        assert!(!out.stderr.contains("note:"), "reading the settings applies none: {}", out.stderr);
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("settings get printed no JSON ({e}): {}", out.stdout))
    };
    let get = async |key: &str| {
        let out = cli(dir.path(), &url, &["settings", "get", key]).await;
        assert!(out.success, "settings get {key}: {}", out.stderr);
        serde_json::from_str::<Value>(out.stdout.trim())
            .unwrap_or_else(|e| panic!("settings get {key} ({e}): {}", out.stdout))
    };
    let set = async |key: &str, value: &str| {
        let out = cli(dir.path(), &url, &["settings", "set", key, value]).await;
        assert!(out.success, "settings set {key} {value}: {}", out.stderr);
        out
    };
    assert_eq!(get_all().await, defaults);

    // Invalid values: refused with the very message the API gives, and nothing written.
    let api = TestApp::sqlite().await;
    for (key, cli_value, api_value) in [
        ("AUTH_TOKEN_PER_USER", "0", json!(0)),
        ("AUTH_TOKEN_EXPIRATION", "59", json!(59)),
        ("SESSION_LIMIT_POLICY", "kick_newest", json!("kick_newest")),
        ("AUTH_BASIC_ENABLED", "yes", json!("yes")),
        ("AUTH_TOKEN_PER_USERS", "2", json!(2)),
    ] {
        let response = api.patch_settings(json!({ key: api_value })).await;
        assert_eq!(response.status, 400, "{response:?}");
        let api_message = response.body[key][0].as_str().unwrap_or_else(|| panic!("{response:?}"));
        let out = cli(dir.path(), &url, &["settings", "set", key, cli_value]).await;
        assert!(!out.success, "settings set {key} {cli_value} succeeded: {}", out.stdout);
        assert!(
            out.stderr.contains(&format!("{key}: {api_message}")),
            "settings set {key} {cli_value}: expected {key}: {api_message:?} on stderr, got {:?}",
            out.stderr
        );
    }
    assert_eq!(get_all().await, defaults, "a refused change wrote something");

    let out = set("AUTH_TOKEN_PER_USER", "3").await;
    assert!(out.stdout.contains("AUTH_TOKEN_PER_USER: -1 -> 3"), "{}", out.stdout);
    assert_eq!(get("AUTH_TOKEN_PER_USER").await, json!(3));
    // A bare word is a string.
    set("SESSION_LIMIT_POLICY", "deny_new").await;
    assert_eq!(get("SESSION_LIMIT_POLICY").await, json!("deny_new"));
    // The same value again (as JSON this time) is no change and no activity entry.
    let out = set("SESSION_LIMIT_POLICY", "\"deny_new\"").await;
    assert!(out.stdout.contains("nothing changed"), "{}", out.stdout);
    let mut expected = defaults.clone();
    expected["AUTH_TOKEN_PER_USER"] = json!(3);
    expected["SESSION_LIMIT_POLICY"] = json!("deny_new");
    assert_eq!(get_all().await, expected);

    let out = cli(dir.path(), &url, &["settings", "reset", "AUTH_TOKEN_PER_USER"]).await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(get("AUTH_TOKEN_PER_USER").await, json!(-1));
    assert_eq!(get("SESSION_LIMIT_POLICY").await, json!("deny_new"));
    let out = cli(dir.path(), &url, &["settings", "reset"]).await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(get_all().await, defaults);

    // Every change is in the activity stream, from the CLI, with no actor.
    let server = serve(dir.path(), &url, None).await;
    let admin = token(&server.addr, ADMIN).await;
    assert_eq!(settings(&server.addr, &admin).await, defaults);
    let entries = setting_entries(&server.addr, &admin).await;
    let changes: Vec<&Value> = entries.iter().map(|e| &e["changes"]).collect();
    assert_eq!(
        changes,
        [
            &json!({"SESSION_LIMIT_POLICY": ["deny_new", "kick_oldest"]}),
            &json!({"AUTH_TOKEN_PER_USER": [3, -1]}),
            &json!({"SESSION_LIMIT_POLICY": ["kick_oldest", "deny_new"]}),
            &json!({"AUTH_TOKEN_PER_USER": [-1, 3]}),
        ],
        "{entries:#?}"
    );
    for entry in &entries {
        assert_eq!(entry["origin"], json!("cli"), "{entry}");
        assert_eq!(entry["actor"], json!(null), "{entry}");
    }
    // `settings reset` of everything is the API's DELETE, and recorded as one.
    let operations: Vec<&Value> = entries.iter().map(|e| &e["operation"]).collect();
    assert_eq!(operations, [&json!("delete"), &json!("update"), &json!("update"), &json!("update")]);
}

/// Two `bouncer serve` processes on one database: a change made through A is seen by B
/// within `limit` (three changes, each timed from the moment A answered the PATCH), and B
/// enforces it. Returns the times measured.
async fn a_change_through_one_instance_is_in_force_on_the_other(database_url: &str, limit: Duration) -> Vec<Duration> {
    let cwd = tempfile::tempdir().unwrap();
    let a = serve(cwd.path(), database_url, None).await;
    let b = serve(cwd.path(), database_url, None).await;
    let (on_a, on_b) = (token(&a.addr, ADMIN).await, token(&b.addr, ADMIN).await);
    let (status, body) =
        http(&a.addr, "POST", "/api/v2/users/", Some(&on_a), Some(json!({"username": "alice", "password": PASSWORD})))
            .await;
    assert_eq!(status, 201, "{body}");

    let mut times = Vec::new();
    let changes = [
        json!({"AUTH_TOKEN_PER_USER": 5}),
        json!({"AUTH_TOKEN_PER_USER": 7}),
        json!({"AUTH_TOKEN_EXPIRATION": 900, "AUTH_TOKEN_PER_USER": 6}),
        // The last one is checked by its effect too: at most 2 sessions, refuse more.
        json!({"SESSION_LIMIT_POLICY": "deny_new", "AUTH_TOKEN_PER_USER": 2}),
    ];
    for change in changes {
        let (status, body) = patch(&a.addr, &on_a, change.clone()).await;
        let changed = Instant::now();
        assert_eq!(status, 200, "PATCH {change} through A: {body}");
        let in_force = |values: &Value| change.as_object().unwrap().iter().all(|(k, v)| values[k] == *v);
        assert!(in_force(&body), "A answered {body} to {change}");
        let seen = poll(changed, Duration::from_millis(20), limit + Duration::from_secs(2), async || {
            in_force(&settings(&b.addr, &on_b).await)
        })
        .await;
        match seen {
            Some(elapsed) => {
                assert!(elapsed < limit, "{change} was in force on B after {elapsed:?}, more than {limit:?}");
                times.push(elapsed);
            }
            None => panic!(
                "{change} not in force on B {:?} after A answered; B's log:\n{}",
                limit + Duration::from_secs(2),
                b.log()
            ),
        }
    }

    // B enforces what A set: alice's third session is refused there.
    let alice = token(&a.addr, "alice").await;
    token(&a.addr, "alice").await;
    let (status, body) = login(&b.addr, "alice").await;
    assert_eq!(status, 403, "a third login through B with deny_new and 2 per user: {body}");
    assert_eq!(body["reason"], json!("limit_reached"), "{body}");
    assert_eq!(body["detail"], json!("The maximum number of allowed sessions for this user has been reached."));
    let (status, me) = http(&b.addr, "GET", "/api/v2/me/", Some(&alice), None).await;
    assert_eq!(status, 200, "alice's first session is untouched: {me}");
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_is_in_force_on_another_within_one_second_on_postgres() {
    let test = "process_settings::a_change_through_one_instance_is_in_force_on_another_within_one_second_on_postgres";
    let Some(db) = FreshPostgres::create(test).await else { return };
    let times = a_change_through_one_instance_is_in_force_on_the_other(&db.url, Duration::from_secs(1)).await;
    println!("PostgreSQL propagation times: {times:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_is_in_force_on_another_within_two_seconds_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let times =
        a_change_through_one_instance_is_in_force_on_the_other(&sqlite_url(dir.path()), Duration::from_secs(2)).await;
    println!("SQLite propagation times: {times:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_settings_change_is_in_force_in_a_running_server_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = serve(dir.path(), &url, None).await;
    let first = token(&server.addr, ADMIN).await;
    assert_eq!(settings(&server.addr, &first).await["AUTH_TOKEN_PER_USER"], json!(-1));

    let out = cli(dir.path(), &url, &["settings", "set", "AUTH_TOKEN_PER_USER", "1"]).await;
    let changed = Instant::now();
    assert!(out.success, "settings set: {}", out.stderr);
    let limit = Duration::from_secs(2);
    let seen = poll(changed, Duration::from_millis(20), limit + Duration::from_secs(2), async || {
        settings(&server.addr, &first).await["AUTH_TOKEN_PER_USER"] == json!(1)
    })
    .await;
    let elapsed = seen.unwrap_or_else(|| panic!("the CLI's change not in force in the server; log:\n{}", server.log()));
    assert!(elapsed < limit, "the CLI's change was in force in the server after {elapsed:?}, more than {limit:?}");
    println!("CLI to server propagation time: {elapsed:?}");

    // In force, not just shown: a second login (kick_oldest, 1 per user) ends the first.
    let second = token(&server.addr, ADMIN).await;
    let (status, body) = http(&server.addr, "GET", "/api/v2/me/", Some(&first), None).await;
    assert_eq!((status, &body["reason"]), (401, &json!("limit_reached")), "{body}");
    let entries = setting_entries(&server.addr, &second).await;
    assert_eq!(entries[0]["changes"], json!({"AUTH_TOKEN_PER_USER": [-1, 1]}), "{entries:?}");
    assert_eq!(entries[0]["origin"], json!("cli"));
    assert_eq!(entries[0]["actor"], json!(null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_cli_lists_and_revokes_and_a_running_server_refuses_the_revoked_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let server = serve(dir.path(), &url, None).await;
    let first = token(&server.addr, ADMIN).await;
    let second = token(&server.addr, ADMIN).await;
    // Both in the running server's cache.
    for token in [&first, &second] {
        assert_eq!(http(&server.addr, "GET", "/api/v2/me/", Some(token), None).await.0, 200);
    }
    let (_, mine) = http(&server.addr, "GET", "/api/v2/me/sessions/?active=true", Some(&first), None).await;
    let ids: Vec<i64> = mine["results"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{mine}");

    let listed = cli(dir.path(), &url, &["sessions", "list", "--json"]).await;
    assert!(listed.success, "{}", listed.stderr);
    // No conf.d in sight: the command says it applies the stored settings only.
    assert!(listed.stderr.contains("note: no settings directory"), "{}", listed.stderr);
    let lines: Vec<Value> = listed.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["id"].as_i64().unwrap()).collect::<Vec<_>>(), ids, "newest first");
    assert!(lines.iter().all(|l| l["username"] == json!(ADMIN) && l["end_reason"].is_null()));
    assert!(!listed.stdout.contains("bnc_"), "no token in the listing");

    // Revoke the newer one by id: refused by the server (SQLite: within the cache's second).
    let newer = ids[0].to_string();
    let out = cli(dir.path(), &url, &["sessions", "revoke", &newer]).await;
    assert!(out.success && out.stdout.contains(&format!("revoked session {newer}")), "{} {}", out.stdout, out.stderr);
    let refused = poll(Instant::now(), Duration::from_millis(20), Duration::from_secs(3), async || {
        http(&server.addr, "GET", "/api/v2/me/", Some(&second), None).await.1["reason"] == json!("revoked")
    })
    .await;
    assert!(refused.is_some_and(|t| t < Duration::from_secs(2)), "{refused:?}; log:\n{}", server.log());
    // Again, or an unknown id: an error that names them.
    let again = cli(dir.path(), &url, &["sessions", "revoke", &newer, "999999"]).await;
    assert!(!again.success && again.stderr.contains(&format!("{newer}, 999999")), "{}", again.stderr);

    // By user: the rest; `--all` shows them ended, with their reason; the activity stream
    // says the CLI did it.
    let out = cli(dir.path(), &url, &["sessions", "revoke", "--user", ADMIN]).await;
    assert!(out.success && out.stdout.contains("revoked 1 session(s) of admin"), "{} {}", out.stdout, out.stderr);
    let all = cli(dir.path(), &url, &["sessions", "list", "--all", "--json", "--user", ADMIN]).await;
    let reasons: Vec<Value> =
        all.stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["end_reason"].clone()).collect();
    assert_eq!(reasons, [json!("revoked"), json!("revoked")]);
    let live = cli(dir.path(), &url, &["sessions", "list"]).await;
    assert_eq!(live.stdout.lines().count(), 1, "only the header: {}", live.stdout);
    let third = token(&server.addr, ADMIN).await;
    let (_, activity) = http(&server.addr, "GET", "/api/v2/activity_stream/?object=session", Some(&third), None).await;
    let revokes: Vec<&Value> =
        activity["results"].as_array().unwrap().iter().filter(|e| e["operation"] == "revoke").collect();
    assert_eq!(revokes.len(), 2, "{activity}");
    assert!(revokes.iter().all(|e| e["origin"] == json!("cli")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_cli_announces_the_sessions_it_ends_before_it_exits() {
    let Some(database) =
        crate::helpers::TestDatabase::create("process_settings::on_postgres_the_cli_announces_the_sessions_it_ends")
            .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &database.url, None).await;
    let (status, body) = login(&server.addr, ADMIN).await;
    assert_eq!(status, 200, "{body}");
    let session = body["session"]["id"].as_i64().unwrap();
    // What the running servers hear: the channel their event streams and caches listen on.
    let mut listener = sqlx::postgres::PgListener::connect(&database.url).await.unwrap();
    listener.listen(bouncer::sessions::EVENTS_CHANNEL).await.unwrap();
    let out = cli(dir.path(), &database.url, &["sessions", "revoke", &session.to_string()]).await;
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let notice = listener.recv().await.unwrap();
            if notice.payload().contains(&format!("[{session},")) {
                return notice.payload().to_owned();
            }
        }
    })
    .await
    .expect("the CLI's notice of the revocation reaches the servers");
    assert!(heard.contains("\"revoked\""), "{heard}");
}
