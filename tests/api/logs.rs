//! The logs of the real binary, in text and in JSON: every line of a request carries its
//! request id, and a login, a kick, a lockout, a logout and a settings change are each one
//! INFO line naming the user and the reason, with no secret anywhere.

use serde_json::{Value, json};

use crate::helpers::{ADMIN, PASSWORD, Server};

/// One log line, whatever the format.
#[derive(Debug)]
struct Line {
    raw: String,
    level: String,
    message: String,
    /// The event's fields and those of its spans.
    fields: Vec<(String, String)>,
    request_id: Option<String>,
}

impl Line {
    fn has(&self, key: &str, value: &str) -> bool {
        self.fields.iter().any(|(k, v)| k == key && v == value)
    }
}

fn parse_json(raw: &str) -> Line {
    let line: Value = serde_json::from_str(raw).unwrap_or_else(|err| panic!("not JSON ({err}): {raw}"));
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut fields: Vec<(String, String)> =
        line["fields"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), text(v))).collect();
    let spans = line["spans"].as_array().cloned().unwrap_or_default();
    for span in &spans {
        fields.extend(span.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), text(v))));
    }
    Line {
        raw: raw.to_owned(),
        level: text(&line["level"]),
        message: text(&line["fields"]["message"]),
        fields,
        request_id: spans.iter().find_map(|span| span["request_id"].as_str().map(str::to_owned)),
    }
}

fn parse_text(raw: &str) -> Line {
    let field = regex::Regex::new(r#"([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s{}]+)"#).unwrap();
    let target = regex::Regex::new(r"\s(?:bouncer|sqlx|tower_http)[A-Za-z0-9_:]*: (.*)$").unwrap();
    let first_field = regex::Regex::new(r"\s[A-Za-z_][A-Za-z0-9_.]*=").unwrap();
    let fields: Vec<(String, String)> = field
        .captures_iter(raw)
        .map(|c| {
            let value = c[2]
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map_or_else(|| c[2].to_owned(), |v| v.replace("\\\"", "\"").replace("\\\\", "\\"));
            (c[1].to_owned(), value)
        })
        .collect();
    let message = target.captures(raw).map_or(String::new(), |c| {
        let rest = c.get(1).unwrap().as_str();
        let end = first_field.find(rest).map_or(rest.len(), |m| m.start());
        rest[..end].trim().to_owned()
    });
    Line {
        raw: raw.to_owned(),
        level: raw.split_whitespace().nth(1).unwrap_or_default().to_owned(),
        message,
        request_id: fields.iter().find(|(k, _)| k == "request_id").map(|(_, v)| v.clone()),
        fields,
    }
}

/// One request over a fresh connection, with `X-Request-Id: id`; the status and JSON body.
async fn call(
    addr: &str,
    id: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-Request-Id: {id}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.to_ascii_lowercase().contains(&format!("x-request-id: {}", id.to_ascii_lowercase())),
        "{response}"
    );
    let status = response[9..12].parse().unwrap();
    let json = response.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, json)
}

/// The once-a-second settings poll of a SQLite server: a line of no request, which may fall
/// between two lines of one.
fn is_background(line: &Line) -> bool {
    line.raw.contains("FROM settings_version WHERE id = 1") || line.raw.contains("connection ended with an error")
}

async fn one_info_line_per_event_and_the_request_id_on_every_line(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("logs.db").display());
    let server = Server::start(
        &url,
        &[
            ("BOUNCER_LOG_FORMAT", format),
            ("RUST_LOG", "info,bouncer=debug,tower_http=debug,sqlx=debug"),
            ("BOUNCER_SWEEP_INTERVAL", "3600"),
        ],
    )
    .await;
    let addr = server.addr.as_str();
    // Let the first sweep (at start) finish.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let login = |id: &'static str, username: &'static str, password: &'static str| {
        call(addr, id, "POST", "/api/login/", None, Some(json!({"username": username, "password": password})))
    };
    let (_, admin) = login("t-admin", ADMIN, PASSWORD).await;
    let admin = admin["token"].as_str().unwrap().to_owned();
    let secret = "carol's secret password";
    let (status, body) = call(
        addr,
        "t-create",
        "POST",
        "/api/v2/users/",
        Some(&admin),
        Some(json!({"username": "carol", "password": secret})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let carol_id = body["id"].as_i64().unwrap().to_string();
    let changes = json!({"AUTH_TOKEN_PER_USER": 1, "AUTH_LOGIN_FAILURE_LIMIT": 2});
    let (status, body) =
        call(addr, "t-settings", "PATCH", "/api/v2/settings/authentication/", Some(&admin), Some(changes)).await;
    assert_eq!(status, 200, "{body}");
    let (status, first) = login("t-login", "carol", secret).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = login("t-kick", "carol", secret).await;
    assert_eq!(status, 200, "{second}");
    let second = second["token"].as_str().unwrap().to_owned();
    assert_eq!(login("t-wrong-1", "carol", "a wrong password").await.0, 401);
    assert_eq!(login("t-wrong-2", "carol", "a wrong password").await.0, 401);
    assert_eq!(login("t-locked", "carol", secret).await.0, 429);
    assert_eq!(call(addr, "t-logout", "POST", "/api/logout/", Some(&second), None).await.0, 204);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let log = server.log();
    // From the `listening` line on, every line is a log line (before it, start-up may print a
    // sentence for people, such as the superuser it created).
    let start = log.lines().position(|l| l.contains("listening")).unwrap();
    let lines: Vec<Line> =
        log.lines().skip(start).map(|raw| if format == "json" { parse_json(raw) } else { parse_text(raw) }).collect();
    let info_of = |id: &str| -> Vec<&Line> {
        lines.iter().filter(|l| l.request_id.as_deref() == Some(id) && l.level == "INFO").collect()
    };
    let only = |id: &str| -> &Line {
        let info = info_of(id);
        assert_eq!(info.len(), 1, "{id}: INFO lines: {info:#?}");
        info[0]
    };

    // The settings change: one line, naming the administrator and what changed.
    let line = only("t-settings");
    assert_eq!(line.message, "settings changed", "{line:?}");
    assert!(line.has("actor", ADMIN) && line.raw.contains("AUTH_TOKEN_PER_USER"), "{line:?}");
    // A login: one line, naming the user and the outcome.
    let line = only("t-login");
    assert_eq!(line.message, "logged in", "{line:?}");
    assert!(
        line.has("username", "carol") && line.has("user_id", &carol_id) && line.has("outcome", "success"),
        "{line:?}"
    );
    // The kick: one line for the ended session (reason limit_reached, carol's), one for the login.
    let info = info_of("t-kick");
    let kicks: Vec<&&Line> = info.iter().filter(|l| l.has("reason", "limit_reached")).collect();
    assert_eq!(kicks.len(), 1, "{info:#?}");
    assert_eq!(kicks[0].message, "sessions ended", "{:?}", kicks[0]);
    assert!(kicks[0].has("user_id", &carol_id) && kicks[0].has("actor", "carol") && kicks[0].has("count", "1"));
    assert_eq!(info.iter().filter(|l| l.message == "logged in").count(), 1, "{info:#?}");
    assert_eq!(info.len(), 2, "{info:#?}");
    // Wrong passwords: one line each; the second also starts the lockout, in one line.
    let line = only("t-wrong-1");
    assert!(
        line.message == "login failed" && line.has("outcome", "invalid_credentials") && line.has("username", "carol")
    );
    let info = info_of("t-wrong-2");
    assert_eq!(info.len(), 2, "{info:#?}");
    let locked: Vec<&&Line> = info.iter().filter(|l| l.message == "username locked out").collect();
    assert_eq!(locked.len(), 1, "{info:#?}");
    assert!(locked[0].has("username", "carol") && locked[0].has("user_id", &carol_id), "{:?}", locked[0]);
    let line = only("t-locked");
    assert!(line.message == "login failed" && line.has("outcome", "locked_out") && line.has("username", "carol"));
    // The logout: one line, the session's ending, naming carol and the reason.
    let line = only("t-logout");
    assert!(line.message == "sessions ended" && line.has("reason", "logged_out"), "{line:?}");
    assert!(line.has("user_id", &carol_id) && line.has("actor", "carol"), "{line:?}");

    // Every line from a request's first to its last carries its id (debug lines included: the
    // trace layer's, and sqlx's statements, those of the password check's own task too).
    for id in
        ["t-admin", "t-create", "t-settings", "t-login", "t-kick", "t-wrong-1", "t-wrong-2", "t-locked", "t-logout"]
    {
        let at: Vec<usize> =
            lines.iter().enumerate().filter(|(_, l)| l.request_id.as_deref() == Some(id)).map(|(i, _)| i).collect();
        assert!(!at.is_empty(), "{id}: no line carries it");
        let (first, last) = (at[0], *at.last().unwrap());
        assert!(at.len() >= 3, "{id}: only {} lines", at.len());
        assert!(lines[first].raw.contains("started processing request"), "{id}: {:?}", lines[first]);
        // The trace layer's last words: the response head, then the end of the body (if any).
        assert!(lines[first..=last].iter().any(|l| l.raw.contains("finished processing request")), "{id}");
        let end = &lines[last].raw;
        assert!(end.contains("end of stream") || end.contains("finished processing request"), "{id}: {end}");
        assert!(lines[first..=last].iter().any(|l| l.raw.contains("sqlx::query")), "{id}: no statement logged");
        for line in &lines[first..=last] {
            assert!(
                line.request_id.as_deref() == Some(id) || is_background(line),
                "{id}: a line without its id: {line:?}"
            );
        }
    }
    // No secret, at any level.
    for secret in [secret, PASSWORD, admin.as_str(), second.as_str(), "a wrong password"] {
        assert!(!log.contains(secret), "a secret reached the logs: {secret}");
    }
}

#[tokio::test]
async fn text_logs_name_user_and_reason_once_and_carry_the_request_id() {
    one_info_line_per_event_and_the_request_id_on_every_line("text").await;
}

#[tokio::test]
async fn json_logs_name_user_and_reason_once_and_carry_the_request_id() {
    one_info_line_per_event_and_the_request_id_on_every_line("json").await;
}
