//! `GET /metrics`: the whole exposition parsed line by line (HELP and TYPE, names, labels,
//! values, histograms), and counters that move by exactly what was done.

use std::collections::{BTreeMap, HashMap};

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::{ADMIN, PASSWORD, TestApp, test_config};

/// One sample line: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition, checked against the text format (0.0.4) as it is parsed.
#[derive(Debug)]
struct Scrape {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`; 0 when there is none
    /// (a histogram series appears on its first observation).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} matches {} samples", found.len());
        found.first().map_or(0.0, |s| s.value)
    }

    /// Like [`Scrape::get`], but the sample must be there.
    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        assert!(
            self.samples.iter().any(|s| s.name == name
                && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))),
            "no sample {name}{labels:?}"
        );
        self.get(name, labels)
    }
}

/// Parses `{a="x",b="y\"z"}`'s inside; panics on anything the format does not allow.
fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let label_name = regex::Regex::new(r"^[a-zA-Z_][a-zA-Z0-9_]*$").unwrap();
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label without =\" in {line:?}"));
        assert!(label_name.is_match(name), "bad label name {name:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(labels.insert(name.to_owned(), value).is_none(), "label {name} twice in {line:?}");
        rest = &after[end + 1..];
        if let Some(next) = rest.strip_prefix(',') {
            rest = next;
        } else {
            assert!(rest.is_empty(), "garbage after a label in {line:?}");
        }
    }
    labels
}

fn parse_value(text: &str, line: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => text.parse().unwrap_or_else(|_| panic!("bad value {text:?} in {line:?}")),
    }
}

/// The family a sample belongs to: histograms' `_bucket`, `_sum` and `_count` are one.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            return base;
        }
    }
    name
}

/// Parses and checks the whole text: every line is a HELP, a TYPE or a sample; every family
/// has one HELP and one TYPE before its samples; counters end in `_total` and are never
/// negative; every histogram series has ascending cumulative buckets ending with `+Inf`
/// equal to its `_count`, and a `_sum`.
fn parse(text: &str) -> Scrape {
    let name_re = regex::Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").unwrap();
    let sample_re = regex::Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$").unwrap();
    let mut helps = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the exposition ends with a line feed");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line:?}"));
            assert!(name_re.is_match(name) && !help.trim().is_empty(), "{line:?}");
            assert!(helps.insert(name.to_owned(), help.to_owned()).is_none(), "second HELP for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without type: {line:?}"));
            assert!(name_re.is_match(name), "{line:?}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "unexpected type in {line:?}");
            assert!(!samples.iter().any(|s: &Sample| family(&s.name, &types) == name), "TYPE after samples: {line:?}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "second TYPE for {name}");
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
            let caps = sample_re.captures(line).unwrap_or_else(|| panic!("not a sample: {line:?}"));
            let name = caps[1].to_owned();
            let labels = caps.get(2).map(|l| parse_labels(l.as_str(), line)).unwrap_or_default();
            let value = parse_value(&caps[3], line);
            let base = family(&name, &types).to_owned();
            let kind = types.get(&base).unwrap_or_else(|| panic!("sample before its TYPE: {line:?}"));
            assert!(helps.contains_key(&base), "sample without HELP: {line:?}");
            match kind.as_str() {
                "counter" => assert!(name.ends_with("_total") && value >= 0.0, "{line:?}"),
                "histogram" => assert!(name != base, "a histogram sample must be _bucket, _sum or _count: {line:?}"),
                _ => assert!(value.is_finite(), "{line:?}"),
            }
            samples.push(Sample { name, labels, value });
        }
    }
    assert!(helps.keys().all(|name| types.contains_key(name)), "a HELP without TYPE");
    // Histograms: per series (labels without `le`).
    for (base, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in samples.iter().filter(|s| s.name == format!("{base}_bucket")) {
            let mut labels = sample.labels.clone();
            let le = labels.remove("le").unwrap_or_else(|| panic!("a bucket without le: {sample:?}"));
            series.entry(labels).or_default().push((parse_value(&le, &le), sample.value));
        }
        assert!(!series.is_empty(), "{base} has no series");
        for (labels, buckets) in series {
            assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "{base}{labels:?}: le not ascending");
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{base}{labels:?}: buckets not cumulative");
            let (last_le, last) = *buckets.last().unwrap();
            assert_eq!(last_le, f64::INFINITY, "{base}{labels:?}: the last bucket is not +Inf");
            let same = |s: &&Sample| s.labels == labels;
            let count = samples.iter().filter(|s| s.name == format!("{base}_count")).find(same);
            let sum = samples.iter().filter(|s| s.name == format!("{base}_sum")).find(same);
            assert_eq!(count.map(|s| s.value), Some(last), "{base}{labels:?}: +Inf bucket != _count");
            assert!(sum.is_some_and(|s| s.value >= 0.0), "{base}{labels:?}: no _sum");
        }
    }
    Scrape { types, samples }
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = response.body.as_str().expect("the metrics are text");
    for secret in [PASSWORD, "bnc_"] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
    parse(text)
}

const LOGINS: &str = "bouncer_logins_total";
const ENDED: &str = "bouncer_sessions_ended_total";
const DURATION: &str = "bouncer_http_request_duration_seconds_count";

/// `after - before` of one sample.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

db_test!(the_metrics_count_logins_lockouts_endings_and_requests, |app| {
    app.set(json!({"AUTH_TOKEN_PER_USER": 1, "AUTH_LOGIN_FAILURE_LIMIT": 3})).await;
    app.create_user("alice").await;
    let before = scrape(&app).await;
    assert_eq!(before.types["bouncer_sessions_active"], "gauge");
    assert_eq!(before.types["bouncer_http_request_duration_seconds"], "histogram");
    // Every outcome and reason is there from the start, at zero or more.
    for outcome in ["success", "invalid_credentials", "locked_out", "limit_reached", "busy", "unavailable", "error"] {
        before.must(LOGINS, &[("outcome", outcome)]);
    }
    for reason in [
        "timeout_reached",
        "limit_reached",
        "logged_out",
        "revoked",
        "max_age_reached",
        "password_changed",
        "user_disabled",
    ] {
        before.must(ENDED, &[("reason", reason)]);
    }
    assert_eq!(before.must("bouncer_sessions_active", &[]), 0.0);
    let max = before.must("bouncer_db_pool_max_connections", &[]);
    let open = before.must("bouncer_db_pool_connections", &[("state", "idle")])
        + before.must("bouncer_db_pool_connections", &[("state", "in_use")]);
    assert!(max >= 1.0 && open <= max, "pool: {open} open of {max}");

    // Two logins: the second ends the first (limit 1, kick_oldest).
    app.token("alice", PASSWORD).await;
    let second = app.token("alice", PASSWORD).await;
    let middle = scrape(&app).await;
    assert_eq!(middle.must("bouncer_sessions_active", &[]), 1.0);
    // Three wrong guesses lock the username; the fourth attempt is refused.
    for _ in 0..3 {
        assert_eq!(app.login("mallory", "wrong password").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.login("mallory", "wrong password").await.reason(), "locked_out");
    // deny_new: alice's next login is refused (the change is an admin login and logout).
    app.set(json!({"SESSION_LIMIT_POLICY": "deny_new"})).await;
    assert_eq!(app.login("alice", PASSWORD).await.reason(), "limit_reached");
    assert_eq!(app.logout(&second).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.me(&second).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/no/such/path", None).await.status, StatusCode::NOT_FOUND);
    let after = scrape(&app).await;

    let logins = |outcome| delta(&before, &after, LOGINS, &[("outcome", outcome)]);
    assert_eq!(logins("success"), 3.0, "alice twice and the admin once");
    assert_eq!(logins("invalid_credentials"), 3.0);
    assert_eq!(logins("locked_out"), 1.0);
    assert_eq!(logins("limit_reached"), 1.0);
    assert_eq!(logins("busy") + logins("unavailable") + logins("error"), 0.0);
    assert_eq!(delta(&before, &after, "bouncer_lockouts_total", &[]), 1.0);
    let ended = |reason| delta(&before, &after, ENDED, &[("reason", reason)]);
    assert_eq!(ended("limit_reached"), 1.0, "the kick");
    assert_eq!(ended("logged_out"), 2.0, "the admin's and alice's");
    assert_eq!(ended("revoked") + ended("timeout_reached") + ended("user_disabled"), 0.0);
    assert_eq!(after.must("bouncer_sessions_active", &[]), 0.0);

    let requests = |route, method, status| {
        delta(&before, &after, DURATION, &[("route", route), ("method", method), ("status", status)])
    };
    // Logins: 3 OK; 3 wrong, 1 locked out, 1 over the limit.
    assert_eq!(requests("/api/login/", "POST", "2xx"), 3.0);
    assert_eq!(requests("/api/login/", "POST", "4xx"), 5.0);
    assert_eq!(requests("/api/logout/", "POST", "2xx"), 2.0);
    assert_eq!(requests("/api/v2/me/", "GET", "4xx"), 1.0);
    assert_eq!(requests("/api/v2/settings/{slug}/", "PATCH", "2xx"), 1.0);
    // The route is the template, never the path a client sent.
    assert_eq!(requests("unmatched", "GET", "4xx"), 1.0);
    assert!(!after.samples.iter().any(|s| s.labels.get("route").is_some_and(|r| r.contains("no/such"))));
    // The scrapes themselves: `before` and the one in the middle (a scrape is counted once it
    // has answered, so it is not in its own text).
    assert_eq!(requests("/metrics", "GET", "2xx"), 2.0);
    let sum = after.must(
        "bouncer_http_request_duration_seconds_sum",
        &[("route", "/api/login/"), ("method", "POST"), ("status", "2xx")],
    );
    assert!(sum > 0.0 && sum < 60.0, "{sum}");
});

#[tokio::test]
async fn the_metrics_can_be_turned_off() {
    let mut config = test_config();
    config.metrics = false;
    let app = TestApp::sqlite_with(config).await;
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status, StatusCode::NOT_FOUND, "{response:?}");
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_id_is_generated_passed_through_or_replaced() {
    let app = TestApp::sqlite().await;
    let id = |response: &crate::helpers::Response| response.header("x-request-id").unwrap_or_default().to_owned();
    // None sent: one is made, and every request gets its own.
    let (first, second) = (id(&app.get("/healthz", None).await), id(&app.get("/healthz", None).await));
    assert!(first.len() >= 16 && first.chars().all(|c| c.is_ascii_hexdigit()), "{first:?}");
    assert_ne!(first, second);
    // A sane one comes back as it was, on errors too.
    let longest = "x".repeat(64);
    for sane in ["abc-123", "Trace_ID.42", longest.as_str()] {
        let response = app.send_with(Method::GET, "/healthz", None, None, &[("x-request-id", sane)]).await;
        assert_eq!(id(&response), sane);
        let response = app.send_with(Method::GET, "/nowhere", None, None, &[("x-request-id", sane)]).await;
        assert_eq!((response.status, id(&response)), (StatusCode::NOT_FOUND, sane.to_owned()));
    }
    // Anything else is replaced by one of ours.
    let long = "y".repeat(65);
    for hostile in ["two words", "quote\"d", "a=b", "<script>", "", long.as_str()] {
        let response = app.send_with(Method::GET, "/healthz", None, None, &[("x-request-id", hostile)]).await;
        let got = id(&response);
        assert_ne!(got, hostile);
        assert!(got.len() >= 16 && got.chars().all(|c| c.is_ascii_hexdigit()), "{hostile:?} -> {got:?}");
    }
    // Non-ASCII bytes too (a header value may carry them).
    let request = axum::http::Request::get("/healthz")
        .header("x-request-id", axum::http::HeaderValue::from_bytes("idé".as_bytes()).unwrap())
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.raw(request).await;
    assert!(id(&response).chars().all(|c| c.is_ascii_hexdigit()));
    // A login answers with its id too.
    let response = app
        .send_with(
            Method::POST,
            "/api/login/",
            None,
            Some(json!({"username": ADMIN, "password": PASSWORD})),
            &[("x-request-id", "login-1")],
        )
        .await;
    assert_eq!((response.status, id(&response)), (StatusCode::OK, "login-1".to_owned()));
}
