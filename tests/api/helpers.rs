//! The test harness: a fresh database per test (a temporary SQLite file, or a fresh
//! PostgreSQL schema), the router driven in-process, a manual clock, and one helper per
//! endpoint. `db_test!` runs one test body on both databases.

use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bouncer::auth::password::Argon2Config;
use bouncer::clock::ManualClock;
use bouncer::config::Config;
use bouncer::db::{Db, PoolConfig};
use bouncer::{AppState, app};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use tower::ServiceExt;

pub const ADMIN: &str = "admin";
pub const PASSWORD: &str = "correct horse battery";

/// Runs the body once on SQLite and once on PostgreSQL, as `NAME::sqlite` and `NAME::postgres`.
/// With `conf = [(file name, text), ...]` the app starts with those settings files.
#[macro_export]
macro_rules! db_test {
    ($name:ident, conf = [$(($file:expr, $text:expr)),* $(,)?], |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn config() -> (bouncer::config::Config, tempfile::TempDir) {
                let dir = tempfile::tempdir().unwrap();
                $(std::fs::write(dir.path().join($file), $text).unwrap();)*
                let mut config = $crate::helpers::test_config();
                config.conf_dir = Some(dir.path().to_owned());
                (config, dir)
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (config, _dir) = config();
                let $app = $crate::helpers::TestApp::sqlite_with(config).await;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let (config, _dir) = config();
                let Some($app) = $crate::helpers::TestApp::postgres_with(concat!(module_path!(), "::postgres"), config).await
                else {
                    return;
                };
                $body
            }
        }
    };
    ($name:ident, |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $app = $crate::helpers::TestApp::sqlite().await;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($app) = $crate::helpers::TestApp::postgres(concat!(module_path!(), "::postgres")).await else {
                    return;
                };
                $body
            }
        }
    };
}

/// The PostgreSQL server the tests use (`BOUNCER_TEST_DATABASE_URL`).
pub fn postgres_url() -> String {
    std::env::var("BOUNCER_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// True when PostgreSQL tests must run (CI sets `BOUNCER_REQUIRE_POSTGRES=1`).
fn postgres_required() -> bool {
    std::env::var("BOUNCER_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

pub fn test_config() -> Config {
    Config {
        // Cheap hashing for tests, through configuration (no test-only code path).
        argon2: Argon2Config { memory_kib: 64, iterations: 1, parallelism: 1, max_concurrent: 2, max_queued: 1000 },
        ..Config::default()
    }
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub admin_id: i64,
    _guard: Guard,
}

pub struct SecondInstance {
    pub router: Router,
    pub state: AppState,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { schema: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Postgres { schema } = self {
            let schema = schema.clone();
            // Async work cannot run in Drop; a short-lived runtime on its own thread can.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_url()).await {
                        let conn = &mut conn;
                        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn).await;
                    }
                })
            })
            .join();
        }
    }
}

/// Sends a request to `router`; `auth` is a full `Authorization` header value or a bare token.
pub async fn send_to(
    router: &Router,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Response {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(auth) = auth {
        let value = if auth.contains(' ') { auth.to_owned() } else { format!("Bearer {auth}") };
        request = request.header("authorization", value);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = match body {
        Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    };
    raw_to(router, request.unwrap()).await
}

pub async fn raw_to(router: &Router, request: Request<Body>) -> Response {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Response { status, headers, body }
}

impl SecondInstance {
    pub async fn get(&self, path: &str, auth: Option<&str>) -> Response {
        send_to(&self.router, Method::GET, path, auth, None, &[]).await
    }
}

static SCHEMA_COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl TestApp {
    pub async fn sqlite() -> TestApp {
        TestApp::sqlite_with(test_config()).await
    }

    pub async fn sqlite_with(config: Config) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bouncer.db").display());
        let db = Db::connect(&url, &PoolConfig::default()).await.unwrap();
        TestApp::start(db, config, Guard::Sqlite(dir)).await
    }

    /// A fresh schema on the test PostgreSQL server, or `None` (and a line on the terminal
    /// saying so) when it is unreachable and not required.
    pub async fn postgres(test: &str) -> Option<TestApp> {
        TestApp::postgres_with(test, test_config()).await
    }

    pub async fn postgres_with(test: &str, config: Config) -> Option<TestApp> {
        let url = postgres_url();
        let mut admin = match <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
            Ok(conn) => conn,
            Err(err) if !postgres_required() => {
                // Written past the test harness's capture, so it shows in every run.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: PostgreSQL unreachable at {url} ({err}); set BOUNCER_REQUIRE_POSTGRES=1 to fail instead"
                );
                return None;
            }
            Err(err) => panic!("PostgreSQL is required (BOUNCER_REQUIRE_POSTGRES=1) but unreachable at {url}: {err}"),
        };
        let schema = format!(
            "bouncer_test_{}_{}_{}",
            std::process::id(),
            SCHEMA_COUNTER.fetch_add(1, Ordering::SeqCst),
            bouncer::auth::token::random_bytes::<4>().iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&mut admin).await.unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap().options([("search_path", schema.as_str())]);
        let pool = PoolConfig { max_connections: 8, acquire_timeout: Duration::from_secs(10) };
        let db = Db::connect_postgres(options, &pool).await.unwrap();
        Some(TestApp::start(db, config, Guard::Postgres { schema }).await)
    }

    /// Another instance on the same database: its own pool, state and router, and the same
    /// clock. (On SQLite it gets no notifications from this one, as another process would.)
    pub async fn second_instance(&self) -> SecondInstance {
        self.second_instance_with(test_config()).await
    }

    pub async fn second_instance_with(&self, config: Config) -> SecondInstance {
        let db = match &self._guard {
            Guard::Postgres { schema } => {
                let options =
                    PgConnectOptions::from_str(&postgres_url()).unwrap().options([("search_path", schema.as_str())]);
                Db::connect_postgres(options, &PoolConfig::default()).await.unwrap()
            }
            Guard::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.path().join("bouncer.db").display());
                Db::connect(&url, &PoolConfig::default()).await.unwrap()
            }
        };
        let state = AppState::new(db, config, self.clock.clone()).await.unwrap();
        SecondInstance { router: app(state.clone()), state }
    }

    async fn start(db: Db, config: Config, guard: Guard) -> TestApp {
        db.migrate().await.unwrap();
        let clock = ManualClock::new();
        let state = AppState::new(db, config, clock.clone()).await.unwrap();
        let admin = bouncer::users::create(
            &state,
            &bouncer::users::Username::parse(ADMIN).unwrap(),
            &bouncer::users::Password::parse(PASSWORD).unwrap(),
            true,
            false,
            &bouncer::activity::Author::cli(),
        )
        .await
        .unwrap();
        TestApp { router: app(state.clone()), state, clock, admin_id: admin.id, _guard: guard }
    }

    pub fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
    }

    /// Sends a request; `auth` is a full `Authorization` header value or a bare token.
    pub async fn send(&self, method: Method, path: &str, auth: Option<&str>, body: Option<Value>) -> Response {
        self.send_with(method, path, auth, body, &[]).await
    }

    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        send_to(&self.router, method, path, auth, body, headers).await
    }

    pub async fn raw(&self, request: Request<Body>) -> Response {
        raw_to(&self.router, request).await
    }

    pub async fn get(&self, path: &str, auth: Option<&str>) -> Response {
        self.send(Method::GET, path, auth, None).await
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        let body = json!({ "username": username, "password": password });
        self.send(Method::POST, "/api/login/", None, Some(body)).await
    }

    /// Logs in and returns the token, failing the test if the login fails.
    pub async fn token(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status, StatusCode::OK, "login of {username}: {response:?}");
        response.body["token"].as_str().unwrap().to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.token(ADMIN, PASSWORD).await
    }

    pub async fn logout(&self, token: &str) -> Response {
        self.send(Method::POST, "/api/logout/", Some(token), None).await
    }

    pub async fn me(&self, token: &str) -> Response {
        self.get("/api/v2/me/", Some(token)).await
    }

    /// Creates a user with [`PASSWORD`] through the API and returns its id.
    pub async fn create_user(&self, username: &str) -> i64 {
        self.create_user_with(username, json!({})).await
    }

    pub async fn create_user_with(&self, username: &str, extra: Value) -> i64 {
        let mut body = json!({ "username": username, "password": PASSWORD });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let admin = self.admin_token().await;
        let response = self.send(Method::POST, "/api/v2/users/", Some(&admin), Some(body)).await;
        assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
        self.logout(&admin).await;
        response.body["id"].as_i64().unwrap()
    }

    pub async fn patch_settings(&self, changes: Value) -> Response {
        let admin = self.admin_token().await;
        let response = self.send(Method::PATCH, "/api/v2/settings/authentication/", Some(&admin), Some(changes)).await;
        self.logout(&admin).await;
        response
    }

    /// Changes settings and fails the test unless the change is accepted.
    pub async fn set(&self, changes: Value) {
        let response = self.patch_settings(changes).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
    }

    /// The sessions of `user_id` as an administrator sees them (first page of 200).
    pub async fn sessions_of(&self, user_id: i64) -> Vec<Value> {
        let admin = self.admin_token().await;
        let response = self.get(&format!("/api/v2/users/{user_id}/sessions/?page_size=200"), Some(&admin)).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        self.logout(&admin).await;
        response.body["results"].as_array().unwrap().clone()
    }

    /// How many live sessions `user_id` has.
    pub async fn active_count(&self, user_id: i64) -> usize {
        self.sessions_of(user_id).await.iter().filter(|s| s["active"] == json!(true)).count()
    }
}

/// A fresh PostgreSQL database for tests that start the real binary, dropped at the end;
/// `None` (and a SKIPPED line) when PostgreSQL is unreachable and not required.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let url = postgres_url();
        let mut admin = match <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
            Ok(conn) => conn,
            Err(err) if !postgres_required() => {
                let _ = writeln!(std::io::stderr(), "SKIPPED {test}: PostgreSQL unreachable at {url} ({err})");
                return None;
            }
            Err(err) => panic!("PostgreSQL is required (BOUNCER_REQUIRE_POSTGRES=1) but unreachable at {url}: {err}"),
        };
        let name = format!(
            "bouncer_test_{}",
            bouncer::auth::token::random_bytes::<6>().iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        let base = url.rsplit_once('/').map(|(base, _)| base).unwrap_or(&url);
        Some(TestDatabase { url: format!("{base}/{name}"), name })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
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

/// One HTTP/1.1 request to a real server over a fresh connection; returns the status and
/// the body as JSON (null when it is not JSON).
pub async fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    let json = response.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, json)
}

/// The binary with a test's environment: cheap argon2, the given database, the superuser
/// `admin` / [`PASSWORD`], INFO logs, run in `cwd` (so no stray `./conf.d` is read) and without
/// inherited variables that would change its behaviour.
pub fn bouncer_command(cwd: &std::path::Path, database_url: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bouncer"));
    command
        .current_dir(cwd)
        .env("DATABASE_URL", database_url)
        .env("BOUNCER_BIND", "127.0.0.1:0")
        .env("BOUNCER_ARGON2_MEMORY_KIB", "64")
        .env("BOUNCER_ARGON2_ITERATIONS", "1")
        .env("BOUNCER_ADMIN_USERNAME", ADMIN)
        .env("BOUNCER_ADMIN_PASSWORD", PASSWORD)
        .env("RUST_LOG", "info")
        .env_remove("BOUNCER_CONF_DIR")
        .env_remove("BOUNCER_LOG_FORMAT")
        .env_remove("BOUNCER_PASSWORD")
        .env_remove("BOUNCER_DB_MAX_CONNECTIONS")
        .env_remove("BOUNCER_ARGON2_MAX_CONCURRENT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// The real binary, serving on a free port: a `bouncer serve` with its pid, address and
/// everything it has written to stderr. The api tests, the settings-file tests and the stress
/// tests start it their own way ([`Server::start`], or [`Server::spawn`] with a command of their
/// own); a failing test prints its log.
pub struct Server {
    /// Killed when the `Server` is dropped (the command's `kill_on_drop`).
    child: tokio::process::Child,
    pub pid: u32,
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// `bouncer serve` on `database_url` with cheap argon2 and the superuser `admin` /
    /// [`PASSWORD`], plus `env`.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Server {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bouncer"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("BOUNCER_BIND", "127.0.0.1:0")
            .env("BOUNCER_ADMIN_PASSWORD", PASSWORD)
            .env("BOUNCER_ARGON2_MEMORY_KIB", "64")
            .env("BOUNCER_ARGON2_ITERATIONS", "1")
            .env_remove("BOUNCER_CONF_DIR")
            .env_remove("RUST_LOG");
        for (name, value) in env {
            command.env(name, value);
        }
        Server::spawn(command).await
    }

    /// Runs `command` (a `bouncer serve` with `BOUNCER_BIND=127.0.0.1:0`), collects its stderr
    /// and waits (at most 30 s) for its `listening` line, text or JSON.
    pub async fn spawn(mut command: tokio::process::Command) -> Server {
        use tokio::io::AsyncBufReadExt;
        let mut child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bouncer");
        let pid = child.id().expect("a pid");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = collected.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let started = std::time::Instant::now();
        loop {
            // `address=127.0.0.1:PORT` in text logs, `"address":"127.0.0.1:PORT"` in JSON ones.
            let address = log.lock().unwrap().lines().find_map(|line| {
                let rest = line.split("address=").nth(1).or_else(|| line.split("\"address\":\"").nth(1));
                rest.filter(|_| line.contains("listening"))
                    .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
                    .map(str::to_owned)
            });
            if let Some(addr) = address {
                return Server { child, pid, addr, log };
            }
            if let Some(status) = child.try_wait().unwrap() {
                // Give the reader a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("bouncer serve exited ({status}) before listening:\n{}", log.lock().unwrap());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "not listening after 30 s:\n{}", log.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything the server wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The last `n` lines of the log, for failure messages.
    #[allow(dead_code)] // the stress tests' (they share this file)
    pub fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends a signal with kill(2).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}): {}", self.pid, std::io::Error::last_os_error());
    }

    /// `kill -9` and reap it.
    pub async fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Waits (at most `timeout`) for the process to exit.
    #[allow(dead_code)] // the stress tests' (they share this file)
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait()).await.ok().map(|r| r.unwrap())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    /// A failing test shows what the server said.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "bouncer's log:\n{}", self.log());
        }
    }
}
