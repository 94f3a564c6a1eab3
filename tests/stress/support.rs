//! What the fault-injection tests share: the real binary (helpers' `Server`, started here with
//! the stress tests' environment) and signals to it, a raw HTTP/1.1 client that never panics on
//! I/O (it reports what happened and how long it took), a private PostgreSQL cluster that may
//! be restarted and killed, and a small tmpfs.
//! Every resource is a guard that cleans up in `Drop`, so a failing test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::helpers::{ADMIN, PASSWORD};
/// How long the client waits for any answer: far beyond every budget, so a hang shows up as
/// a measured failure instead of a stuck test.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Prints a line past the test harness's capture (it shows with and without `--nocapture`).
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "[stress] {}", format!($($arg)*));
    }};
}

/// Says a test cannot run here. With `BOUNCER_STRESS_REQUIRE=1` (or
/// `BOUNCER_REQUIRE_POSTGRES=1`) that is a failure; otherwise a `SKIPPED` line.
pub fn skip(test: &str, why: &str) {
    let required = ["BOUNCER_STRESS_REQUIRE", "BOUNCER_REQUIRE_POSTGRES"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| v == "1"));
    assert!(!required, "{test} cannot run here: {why}");
    report!("SKIPPED {test}: {why}");
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

pub use crate::helpers::Server;

/// Starts `bouncer serve` in `cwd` on `database_url` with cheap argon2 (overridable through
/// `env`), and waits (at most 30 s) for its `listening` line.
pub async fn serve(cwd: &Path, database_url: &str, env: &[(&str, &str)]) -> Server {
    let mut command = crate::helpers::bouncer_command(cwd, database_url);
    command.arg("serve");
    for (name, value) in env {
        command.env(name, value);
    }
    Server::spawn(command).await
}

/// Fails if the server panicked or said "database is locked".
pub fn assert_clean_log(server: &Server, what: &str) {
    let log = server.log();
    for bad in ["panicked", "database is locked"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(bad)).take(5).collect();
        assert!(lines.is_empty(), "{what}: the server's stderr says {bad:?}:\n{}", lines.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// A complete HTTP response and how long it took from connect to the last byte.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub body: Value,
    pub elapsed: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    /// A `503 {"detail": ..., "reason": "unavailable"}`, the contract for a database outage.
    pub fn is_unavailable(&self) -> bool {
        self.status == 503 && self.reason() == "unavailable" && self.body["detail"].is_string()
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text: String = self.text.chars().take(300).collect();
        write!(f, "{} in {:?}: {text}", self.status, self.elapsed)
    }
}

/// What a request came to: a complete response, or what went wrong (after how long).
pub type Outcome = Result<Reply, (String, Duration)>;

/// A request written to its own connection, its response not read yet.
pub struct Sent {
    stream: TcpStream,
    started: Instant,
}

/// The bytes of a request, `Connection: close`.
pub fn request_bytes(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Vec<u8> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// A connection opened, nothing written yet (so many requests can be fired at once).
pub struct Connected {
    stream: TcpStream,
}

impl Connected {
    pub async fn open(addr: &str) -> Result<Connected, (String, Duration)> {
        let started = Instant::now();
        let stream = tokio::time::timeout(CLIENT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ("connect: timed out".to_owned(), started.elapsed()))?
            .map_err(|e| (format!("connect: {e}"), started.elapsed()))?;
        Ok(Connected { stream })
    }

    /// Writes the whole request; the time is counted from here.
    pub async fn send(mut self, bytes: &[u8]) -> Result<Sent, (String, Duration)> {
        let started = Instant::now();
        self.stream.write_all(bytes).await.map_err(|e| (format!("write: {e}"), started.elapsed()))?;
        Ok(Sent { stream: self.stream, started })
    }
}

impl Sent {
    /// Connects and writes the whole request.
    pub async fn send(addr: &str, bytes: &[u8]) -> Result<Sent, (String, Duration)> {
        let started = Instant::now();
        let mut sent = Connected::open(addr).await?.send(bytes).await?;
        sent.started = started;
        Ok(sent)
    }

    /// Reads the response to the end (at most [`CLIENT_TIMEOUT`] from the connect).
    pub async fn finish(mut self) -> Outcome {
        let started = self.started;
        let deadline = CLIENT_TIMEOUT.saturating_sub(started.elapsed());
        let mut raw = Vec::new();
        match tokio::time::timeout(deadline, self.stream.read_to_end(&mut raw)).await {
            Err(_) => return Err((format!("no complete answer within {CLIENT_TIMEOUT:?}"), started.elapsed())),
            Ok(Err(err)) if raw.is_empty() => return Err((format!("read: {err}"), started.elapsed())),
            // A reset after a complete response is still a complete response; parse() checks.
            Ok(_) => {}
        }
        parse(&raw, started.elapsed()).map_err(|why| (why, started.elapsed()))
    }
}

fn parse(raw: &[u8], elapsed: Duration) -> Result<Reply, String> {
    if raw.is_empty() {
        return Err("connection closed without a response".into());
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("truncated response head")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body = dechunk(&body).ok_or("truncated chunked body")?;
    } else if let Some(length) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() < length {
            return Err(format!("truncated body: {} of {length} bytes", body.len()));
        }
        body.truncate(length);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, headers, text, body: json, elapsed })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// One request over a fresh connection.
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Outcome {
    let bytes = request_bytes(addr, method, path, token, headers, body);
    Sent::send(addr, &bytes).await?.finish().await
}

/// One request that must get a complete response.
pub async fn must(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
    call(addr, method, path, token, &[], body)
        .await
        .unwrap_or_else(|(why, t)| panic!("{method} {path} on {addr}: {why} (after {t:?})"))
}

pub async fn login(addr: &str, username: &str) -> Outcome {
    call(addr, "POST", "/api/login/", None, &[], Some(&json!({"username": username, "password": PASSWORD}))).await
}

/// Logs in and returns the token, failing the test otherwise.
pub async fn token(addr: &str, username: &str) -> String {
    let reply = login(addr, username).await.unwrap_or_else(|(why, t)| panic!("login of {username}: {why} ({t:?})"));
    assert_eq!(reply.status, 200, "login of {username} on {addr}: {reply:?}");
    reply.body["token"].as_str().unwrap().to_owned()
}

pub async fn me(addr: &str, token: &str, quiet: bool) -> Outcome {
    let headers: &[(&str, &str)] = if quiet { &[("X-Session-Quiet", "1")] } else { &[] };
    call(addr, "GET", "/api/v2/me/", Some(token), headers, None).await
}

/// Creates a user with [`PASSWORD`] and returns its id.
pub async fn create_user(addr: &str, admin: &str, username: &str) -> i64 {
    let body = json!({"username": username, "password": PASSWORD});
    let reply = must(addr, "POST", "/api/v2/users/", Some(admin), Some(&body)).await;
    assert_eq!(reply.status, 201, "create {username}: {reply:?}");
    reply.body["id"].as_i64().unwrap()
}

pub async fn set_settings(addr: &str, admin: &str, changes: Value) {
    let reply = must(addr, "PATCH", "/api/v2/settings/authentication/", Some(admin), Some(&changes)).await;
    assert_eq!(reply.status, 200, "PATCH settings {changes}: {reply:?}");
}

/// The live sessions of a user as an administrator lists them (`?active=true`).
pub async fn active_sessions(addr: &str, admin: &str, user_id: i64) -> Vec<Value> {
    let path = format!("/api/v2/users/{user_id}/sessions/?active=true&page_size=200");
    let reply = must(addr, "GET", &path, Some(admin), None).await;
    assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
    assert!(!reply.text.contains("database is locked"), "{reply:?}");
    let results = reply.body["results"].as_array().unwrap().clone();
    assert_eq!(reply.body["count"].as_u64(), Some(results.len() as u64), "count and results disagree: {reply:?}");
    results
}

/// Calls `probe` every `every` until it returns true; the time from `since` until it did,
/// or `None` when `deadline` (counted from `since`) passed first.
pub async fn poll(
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

/// Latency figures of a set of durations: `n, min, median, p95, max`.
pub fn latency(mut times: Vec<Duration>) -> String {
    if times.is_empty() {
        return "n=0".into();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} min={:.0?} median={:.0?} p95={:.0?} max={:.0?}",
        times.len(),
        times[0],
        at(0.5),
        at(0.95),
        times[times.len() - 1]
    )
}

// ---------------------------------------------------------------------------------------
// SQLite, read directly
// ---------------------------------------------------------------------------------------

/// Opens a SQLite file as a separate client would (never creating it).
pub async fn open_sqlite(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// `PRAGMA integrity_check` of a SQLite file: "ok" when it is sound.
pub async fn integrity_check(path: &Path) -> String {
    let mut conn = open_sqlite(path).await;
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&mut conn).await.unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    rows.join("; ")
}

// ---------------------------------------------------------------------------------------
// A private PostgreSQL cluster
// ---------------------------------------------------------------------------------------

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway PostgreSQL cluster of our own, on a free port, that a test may restart, stop
/// with `-m immediate` and start again. Dropping it stops it and removes its directory.
/// (The shared server on 5432 is never touched.)
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
}

impl PgCluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Runs a PostgreSQL program, as the `postgres` OS user when we are root (initdb and
    /// the server refuse to run as root).
    fn run(as_postgres: bool, program: &str, args: &[&str]) -> std::process::Output {
        let program = format!("{PG_BIN}/{program}");
        let mut command = if as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            std::process::Command::new(&program)
        };
        command.args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// Creates and starts a cluster; `None` (after [`skip`]) when this machine cannot.
    pub fn create(test: &str) -> Option<PgCluster> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            skip(test, &format!("no {PG_BIN}/initdb"));
            return None;
        }
        let uid = std::process::Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::Builder::new().prefix("bouncer-pg-").tempdir().unwrap();
        if as_postgres {
            let chown = std::process::Command::new("chown")
                .args(["postgres:postgres", &dir.path().to_string_lossy()])
                .status()
                .unwrap();
            assert!(chown.success(), "chown postgres {}", dir.path().display());
        }
        let port = free_port();
        let cluster = PgCluster { dir, port, as_postgres };
        let data = cluster.data();
        let out = Self::run(
            as_postgres,
            "initdb",
            &["-D", &data.to_string_lossy(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
        );
        if !out.status.success() {
            skip(test, &format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
            return None;
        }
        cluster.start();
        Some(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let data = self.data().to_string_lossy().into_owned();
        let mut all = vec!["-D", &data, "-t", "60"];
        all.extend_from_slice(args);
        Self::run(self.as_postgres, "pg_ctl", &all)
    }

    fn options(&self) -> String {
        // fsync=off: only the postgres processes die in these tests, never the machine.
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        )
    }

    fn check(&self, what: &str, out: std::process::Output) {
        assert!(
            out.status.success(),
            "pg_ctl {what}: {}{}\n--- postgres.log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    /// Starts it and waits until it accepts connections.
    pub fn start(&self) {
        let log = self.log_path().to_string_lossy().into_owned();
        let out = self.pg_ctl(&["-o", &self.options(), "-l", &log, "-w", "start"]);
        self.check("start", out);
    }

    /// `pg_ctl restart -m fast` (waits until it is back).
    pub fn restart_fast(&self) {
        let log = self.log_path().to_string_lossy().into_owned();
        let out = self.pg_ctl(&["-o", &self.options(), "-l", &log, "-m", "fast", "-w", "restart"]);
        self.check("restart -m fast", out);
    }

    /// `pg_ctl stop -m immediate`: every backend dies at once, as in a crash.
    pub fn stop_immediate(&self) {
        let out = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        self.check("stop -m immediate", out);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        // The TempDir removes the directory (root may remove postgres's files).
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// A small filesystem
// ---------------------------------------------------------------------------------------

/// A tmpfs of a fixed size mounted on a fresh directory; unmounted and removed on drop.
pub struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -t tmpfs -o size=...`); the reason when it cannot.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::Builder::new().prefix("bouncer-tmpfs-").tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir: Some(dir) })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let unmounted = (0..20).any(|_| {
                let out = std::process::Command::new("umount").arg(dir.path()).output();
                let done = out.is_ok_and(|o| o.status.success());
                if !done {
                    std::thread::sleep(Duration::from_millis(50));
                }
                done
            });
            if !unmounted {
                // Still busy (a process we started has not been reaped yet): detach it.
                let _ = std::process::Command::new("umount").arg("-l").arg(dir.path()).status();
            }
            drop(dir);
        }
    }
}

/// Fills the filesystem holding `path` with a ballast file until a write fails with
/// ENOSPC; returns the bytes written.
pub fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [64 * 1024, 4096, 512] {
        let buf = vec![0xA5u8; chunk];
        loop {
            match file.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
            if file.flush().is_err() {
                break;
            }
        }
    }
    let _ = file.sync_all();
    written
}
