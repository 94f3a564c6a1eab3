//! Bouncer in front of an application, behind a real nginx: the real binary, a small
//! application that echoes who nginx says the caller is, and nginx running
//! `docs/examples/nginx.conf` as shipped (only its addresses changed). Needs Debian's
//! `nginx` (`/usr/sbin/nginx`, or `BOUNCER_NGINX`); says SKIPPED without it, unless
//! `BOUNCER_REQUIRE_NGINX=1` (CI) makes that a failure. Runs on SQLite only, as the other
//! tests of the real binary do: what it proves is the proxying, not the database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{ADMIN, PASSWORD, Server, http};

const EXAMPLE: &str = include_str!("../../docs/examples/nginx.conf");

fn nginx_binary() -> Option<PathBuf> {
    std::env::var_os("BOUNCER_NGINX")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"].map(PathBuf::from))
        .find(|path| path.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The application behind nginx: answers every request with the `X-Auth-*` headers it got.
async fn start_application() -> String {
    async fn echo(headers: axum::http::HeaderMap, uri: axum::http::Uri) -> axum::Json<Value> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        axum::Json(json!({
            "user": header("x-auth-user"),
            "user_id": header("x-auth-user-id"),
            "session_id": header("x-auth-session-id"),
            "path": uri.to_string(),
        }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(echo)).await });
    addr
}

/// nginx in the foreground, one process (`master_process off`), everything in `dir`;
/// killed when dropped.
struct Nginx {
    _child: tokio::process::Child,
    dir: PathBuf,
}

impl Nginx {
    async fn start(binary: &Path, dir: &Path, port: u16, bouncer: &str, application: &str) -> Nginx {
        let replace = |text: String, from: &str, to: &str| {
            assert_eq!(text.matches(from).count(), 1, "docs/examples/nginx.conf has one `{from}`");
            text.replace(from, to)
        };
        let site = replace(EXAMPLE.to_owned(), "server 127.0.0.1:8080;", &format!("server {bouncer};"));
        let site = replace(site, "server 127.0.0.1:3000;", &format!("server {application};"));
        let site = replace(site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        std::fs::write(dir.join("site.conf"), site).unwrap();
        let d = dir.display();
        let main = [
            "daemon off;".to_owned(),
            "master_process off;".to_owned(),
            format!("pid {d}/nginx.pid;"),
            format!("error_log {d}/error.log info;"),
            "events { worker_connections 64; }".to_owned(),
            "http {".to_owned(),
            format!("access_log {d}/access.log;"),
            format!("client_body_temp_path {d}/body;"),
            format!("proxy_temp_path {d}/proxy;"),
            format!("fastcgi_temp_path {d}/fastcgi;"),
            format!("uwsgi_temp_path {d}/uwsgi;"),
            format!("scgi_temp_path {d}/scgi;"),
            format!("include {d}/site.conf;"),
            "}".to_owned(),
        ]
        .join("\n");
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let mut child = tokio::process::Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let nginx = |child| Nginx { _child: child, dir: dir.to_owned() };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return nginx(child);
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
                panic!("nginx exited ({status}): {stderr}\n{}", nginx(child).log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nginx did not listen on {port} within 10 s\n{}", nginx(child).log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// A response as a client sees it.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            let pair = value.trim().split(';').next()?;
            key.trim()
                .eq_ignore_ascii_case("set-cookie")
                .then(|| pair.strip_prefix(&format!("{name}=")))?
                .map(str::to_owned)
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\n{}", self.head, self.body)
    }
}

/// One HTTP/1.0 request (so nginx neither keeps the connection nor chunks the body).
async fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.unwrap().unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, head: head.to_owned(), body: body.to_owned() }
}

/// The `next` the login page carries into its form.
fn form_next(page: &str) -> String {
    let field = page.split("name=\"next\" value=\"").nth(1).expect("the login form");
    field.split('"').next().unwrap().replace("&amp;", "&")
}

/// Logs in through the login page's form, through nginx, as a browser does: the page (and
/// its CSRF cookie), then the form post. Returns the `Location` and the session cookie.
async fn form_login(nginx: &str, login_path: &str, username: &str) -> (String, String) {
    let page = send(nginx, "GET", login_path, &[("Accept", "text/html")], "").await;
    assert_eq!(page.status, 200, "{page:?}");
    let csrf = page.cookie("csrftoken").expect("the login page sets the CSRF cookie");
    let form = serde_urlencoded::to_string([
        ("csrfmiddlewaretoken", csrf.as_str()),
        ("next", form_next(&page.body).as_str()),
        ("username", username),
        ("password", PASSWORD),
    ])
    .unwrap();
    let cookie = format!("csrftoken={csrf}");
    // A browser names the page's origin with every form post; Bouncer checks it against the
    // Host nginx passes on.
    let origin = format!("http://{nginx}");
    let headers = [
        ("Accept", "text/html"),
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Origin", origin.as_str()),
    ];
    let posted = send(nginx, "POST", "/api/login/", &headers, &form).await;
    assert_eq!(posted.status, 303, "{posted:?}");
    let session = posted.cookie("bouncer_session").expect("the form login sets the session cookie");
    (posted.header("location").unwrap().to_owned(), format!("bouncer_session={session}"))
}

/// Logs in as the administrator, straight at Bouncer.
async fn admin_token(bouncer: &str) -> String {
    let (status, body) =
        http(bouncer, "POST", "/api/login/", None, Some(json!({"username": ADMIN, "password": PASSWORD}))).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Changes settings, straight at Bouncer.
async fn set(bouncer: &str, admin: &str, settings: Value) {
    let (status, body) = http(bouncer, "PATCH", "/api/v2/settings/authentication/", Some(admin), Some(settings)).await;
    assert_eq!(status, 200, "{body}");
}

/// The page a browser asks for, with more than one parameter, and the same as `next`.
const REPORT: &str = "/app/report?id=7&page=2";
const REPORT_ENCODED: &str = "%2Fapp%2Freport%3Fid%3D7%26page%3D2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_lets_only_live_sessions_through_and_says_why_it_refuses() {
    let Some(binary) = nginx_binary() else {
        if std::env::var("BOUNCER_REQUIRE_NGINX").is_ok_and(|v| v == "1") {
            panic!("nginx is required (BOUNCER_REQUIRE_NGINX=1) but not found; apt-get install nginx");
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED nginx::nginx_lets_only_live_sessions_through_and_says_why_it_refuses: nginx not found \
             (apt-get install nginx, or BOUNCER_NGINX=/path/to/nginx)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let origin = format!("127.0.0.1:{port}");
    let database = format!("sqlite://{}", dir.path().join("bouncer.db").display());
    let bouncer = Server::start(&database, &[("BOUNCER_ALLOWED_REDIRECT_HOSTS", origin.as_str())]).await;
    let application = start_application().await;
    let nginx = Nginx::start(&binary, dir.path(), port, &bouncer.addr, &application).await;
    let context = || format!("\n--- nginx\n{}\n--- bouncer\n{}", nginx.log(), bouncer.log());

    // alice, created by the administrator straight at Bouncer.
    let admin = admin_token(&bouncer.addr).await;
    let (status, _) = http(
        &bouncer.addr,
        "POST",
        "/api/v2/users/",
        Some(&admin),
        Some(json!({"username": "alice", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201);

    // No session: a browser is sent to the login page, with where it was going, every
    // parameter of it; claiming a name in X-Auth-User changes nothing. The check itself is
    // not reachable from outside.
    let anonymous = send(&origin, "GET", REPORT, &[("X-Auth-User", "admin")], "").await;
    assert_eq!(anonymous.status, 302, "{anonymous:?}{}", context());
    let to_login = anonymous.header("location").unwrap().to_owned();
    assert!(to_login.ends_with(&format!("/api/login/?reason=not_authenticated&next={REPORT_ENCODED}")), "{to_login}");
    assert_eq!(anonymous.header("x-auth-reason"), Some("not_authenticated"));
    assert_eq!(send(&origin, "GET", "/_bouncer_verify", &[], "").await.status, 404);

    // The login page, through nginx, then the form: back to the page asked for, as alice.
    let login_path = to_login.split_once(&origin).map_or(to_login.as_str(), |(_, path)| path);
    let (back, browser) = form_login(&origin, login_path, "alice").await;
    // The same form posted from another site is refused, its token right or not.
    let forged = send(
        &origin,
        "POST",
        "/api/login/",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", "csrftoken=planted"),
            ("Origin", "http://evil.example"),
        ],
        "csrfmiddlewaretoken=planted&username=alice&password=x",
    )
    .await;
    assert_eq!(forged.status, 403, "{forged:?}");
    assert!(forged.body.contains("csrf_failed"), "{forged:?}");
    assert_eq!(back, REPORT);
    let through = send(&origin, "GET", &back, &[("Cookie", &browser), ("X-Auth-User", "admin")], "").await;
    assert_eq!(through.status, 200, "{through:?}{}", context());
    let seen = through.json();
    assert_eq!(seen["user"], json!("alice"), "the application sees alice, whatever the client claims");
    assert_eq!(seen["path"], json!(REPORT));
    assert!(seen["session_id"].as_str().is_some_and(|id| id.parse::<i64>().is_ok()));

    // An absolute `next` on an allowed host (BOUNCER_ALLOWED_REDIRECT_HOSTS) is followed too.
    let absolute = format!("http://{origin}/app/elsewhere");
    let query = serde_urlencoded::to_string([("next", absolute.as_str())]).unwrap();
    let (back, _) = form_login(&origin, &format!("/api/login/?{query}"), ADMIN).await;
    assert_eq!(back, absolute);

    // One session per user; alice logs in again elsewhere (a script, through nginx too).
    set(&bouncer.addr, &admin, json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();
    let script_login = send(&origin, "POST", "/api/login/", &[("Content-Type", "application/json")], &body).await;
    assert_eq!(script_login.status, 200, "{script_login:?}");
    let token = script_login.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let script = send(&origin, "GET", "/app/data", &[("Authorization", &bearer)], "").await;
    assert_eq!(script.json()["user"], json!("alice"), "{script:?}");

    // The browser's next request is refused, and it is told why.
    let kicked = send(&origin, "GET", REPORT, &[("Cookie", &browser)], "").await;
    assert_eq!(kicked.status, 302, "{kicked:?}{}", context());
    assert_eq!(kicked.header("x-auth-reason"), Some("limit_reached"));
    let to_login = kicked.header("location").unwrap().to_owned();
    assert!(to_login.ends_with(&format!("/api/login/?reason=limit_reached&next={REPORT_ENCODED}")), "{to_login}");
    let login_path = to_login.split_once(&origin).map_or(to_login.as_str(), |(_, path)| path);
    let page = send(&origin, "GET", login_path, &[("Accept", "text/html")], "").await;
    assert!(
        page.body
            .contains("You were logged out: the maximum number of allowed sessions for this user has been exceeded."),
        "{page:?}"
    );

    // A script is answered 401, with the reason, once its own session is pushed out.
    let again = send(&origin, "POST", "/api/login/", &[("Content-Type", "application/json")], &body).await;
    assert_eq!(again.status, 200);
    let refused = send(&origin, "GET", "/app/data", &[("Authorization", &bearer)], "").await;
    assert_eq!(refused.status, 401, "{refused:?}{}", context());
    assert_eq!(refused.header("x-auth-reason"), Some("limit_reached"));

    // HTTP Basic, locked out after failed logins: Bouncer's 429 and Retry-After reach the
    // client, where auth_request alone would answer 500. (Lowering the limit to 1 ended
    // the older of the admin's two sessions, the one of `admin`.)
    let admin = admin_token(&bouncer.addr).await;
    set(&bouncer.addr, &admin, json!({"AUTH_LOGIN_FAILURE_LIMIT": 2})).await;
    let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:wrong password"));
    for _ in 0..2 {
        let refused = send(&origin, "GET", "/app/data", &[("Authorization", &wrong)], "").await;
        assert_eq!(refused.status, 401, "{refused:?}{}", context());
        assert_eq!(refused.header("x-auth-reason"), Some("invalid_credentials"));
    }
    let locked = send(&origin, "GET", "/app/data", &[("Authorization", &wrong)], "").await;
    assert_eq!(locked.status, 429, "{locked:?}{}", context());
    assert_eq!(locked.header("x-auth-reason"), Some("locked_out"));
    assert!(locked.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)), "{locked:?}");

    // Bouncer gone: 503, for a browser and a script alike.
    let mut bouncer = bouncer;
    bouncer.kill9().await;
    for headers in [vec![("Cookie", browser.as_str())], vec![("Authorization", bearer.as_str())]] {
        let unavailable = send(&origin, "GET", "/app/data", &headers, "").await;
        assert_eq!(unavailable.status, 503, "{unavailable:?}\n--- nginx\n{}", nginx.log());
        assert!(unavailable.header("retry-after").is_none());
    }
}
