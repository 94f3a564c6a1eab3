//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4, written by hand).
//!
//! The code that counts bumps an atomic; the scrape reads them all and formats them. A request
//! costs two relaxed atomic additions (its histogram bucket and the sum) after a look-up in a
//! per-thread table of routes, so the hot path takes no lock. Sessions ended are counted by
//! [`crate::sessions::Events`] (endings that happen in this process only); the live-session
//! gauge and the pool gauges are read at scrape time. No label holds a username, a token or a
//! raw path: routes are the router's templates (`/api/v2/users/{id}/`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::sessions::EndReason;
use crate::with_db;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the request-duration buckets: a token check answers in well under a
/// millisecond, a login in tens of milliseconds, a saturated one in seconds.
const BUCKET_LABELS: [&str; 13] =
    ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5"];
const BUCKET_NANOS: [u64; 13] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The route label of requests that matched no route (404s of unknown paths): one label, so
/// that a scan of random paths cannot grow the metrics.
pub const UNMATCHED: &str = "unmatched";

/// How a login attempt (`POST /api/login/`, JSON or form) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Success,
    InvalidCredentials,
    LockedOut,
    LimitReached,
    Busy,
    Unavailable,
    Error,
}

impl LoginOutcome {
    pub const ALL: [LoginOutcome; 7] = [
        LoginOutcome::Success,
        LoginOutcome::InvalidCredentials,
        LoginOutcome::LockedOut,
        LoginOutcome::LimitReached,
        LoginOutcome::Busy,
        LoginOutcome::Unavailable,
        LoginOutcome::Error,
    ];

    pub fn code(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::InvalidCredentials => "invalid_credentials",
            LoginOutcome::LockedOut => "locked_out",
            LoginOutcome::LimitReached => "limit_reached",
            LoginOutcome::Busy => "busy",
            LoginOutcome::Unavailable => "unavailable",
            LoginOutcome::Error => "error",
        }
    }

    pub fn of<T>(result: &ApiResult<T>) -> LoginOutcome {
        match result {
            Ok(_) => LoginOutcome::Success,
            Err(ApiError::InvalidCredentials) => LoginOutcome::InvalidCredentials,
            Err(ApiError::LockedOut { .. }) => LoginOutcome::LockedOut,
            Err(ApiError::LimitReached) => LoginOutcome::LimitReached,
            Err(ApiError::Busy) => LoginOutcome::Busy,
            Err(ApiError::Unavailable(_)) => LoginOutcome::Unavailable,
            Err(_) => LoginOutcome::Error,
        }
    }
}

/// One latency histogram: counts per bucket (not cumulative: one addition per observation;
/// the scrape adds them up) and the sum in nanoseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKET_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, nanos: u64) {
        let bucket = BUCKET_NANOS.iter().position(|bound| nanos <= *bound).unwrap_or(BUCKET_NANOS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

/// The histograms of one route, one per method and status class, made on first use.
struct RouteStats {
    route: Box<str>,
    slots: [OnceLock<Box<Histogram>>; METHODS.len() * CLASSES.len()],
}

impl RouteStats {
    fn new(route: &str) -> RouteStats {
        RouteStats { route: route.into(), slots: std::array::from_fn(|_| OnceLock::new()) }
    }

    fn observe(&self, method: usize, class: usize, nanos: u64) {
        self.slots[method * CLASSES.len() + class].get_or_init(Box::default).observe(nanos);
    }
}

/// The index of a method in [`METHODS`].
pub fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn class_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, CLASSES.len()) - 1
}

/// Tells apart the [`Metrics`] of several applications in one process (the tests run many).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A thread's routes of one application: template → its stats.
type RouteTable = HashMap<Box<str>, Arc<RouteStats>>;

thread_local! {
    /// Per thread: metrics id → route → its stats. Filled from [`Metrics::routes`] on a
    /// thread's first request for a route, read without a lock afterwards.
    static ROUTES: RefCell<HashMap<u64, RouteTable>> = RefCell::default();
}

/// The counters of one application.
pub struct Metrics {
    id: u64,
    logins: [AtomicU64; LoginOutcome::ALL.len()],
    lockouts: AtomicU64,
    /// Every route seen so far; taken only on a thread's first request for a route.
    routes: Mutex<Vec<Arc<RouteStats>>>,
    unmatched: Arc<RouteStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            id: NEXT_ID.fetch_add(1, Relaxed),
            logins: Default::default(),
            lockouts: AtomicU64::new(0),
            routes: Mutex::default(),
            unmatched: Arc::new(RouteStats::new(UNMATCHED)),
        }
    }
}

impl Metrics {
    pub fn login(&self, outcome: LoginOutcome) {
        self.logins[outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn lockout(&self) {
        self.lockouts.fetch_add(1, Relaxed);
    }

    /// Records one request: its route template (`None`: it matched no route), method index
    /// ([`method_index`]), status and duration.
    pub fn request(&self, route: Option<&str>, method: usize, status: StatusCode, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let class = class_index(status);
        let Some(route) = route else {
            self.unmatched.observe(method, class, nanos);
            return;
        };
        let cached = ROUTES.try_with(|routes| {
            let mut routes = routes.borrow_mut();
            let mine = routes.entry(self.id).or_default();
            match mine.get(route) {
                Some(stats) => stats.observe(method, class, nanos),
                None => {
                    let stats = self.register(route);
                    stats.observe(method, class, nanos);
                    mine.insert(route.into(), stats);
                }
            }
        });
        if cached.is_err() {
            // The thread is going away: take the slow path.
            self.register(route).observe(method, class, nanos);
        }
    }

    fn register(&self, route: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().expect("metrics routes lock");
        if let Some(stats) = routes.iter().find(|stats| &*stats.route == route) {
            return stats.clone();
        }
        let stats = Arc::new(RouteStats::new(route));
        routes.push(stats.clone());
        stats
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics, in the text exposition format (version 0.0.4).
///
/// Anonymous, like the health endpoints: Prometheus scrapes without a session. It holds no
/// username, token or address. `BOUNCER_METRICS=off` turns it off (404). The metrics are
/// described in `docs/OBSERVABILITY.md`.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 404, description = "Metrics are turned off (`BOUNCER_METRICS=off`)", body = ErrorBody),
    ))]
async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    if !state.config.metrics {
        return Err(ApiError::NotFound);
    }
    let text = render(&state).await;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE), (header::CACHE_CONTROL, "no-store")], text).into_response())
}

/// Writes `# HELP` and `# TYPE` of one metric.
fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the format wants it: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The whole exposition.
pub async fn render(state: &AppState) -> String {
    let metrics = &state.metrics;
    let mut out = String::with_capacity(8 * 1024);

    describe(&mut out, "bouncer_build_info", "gauge", "Always 1; the labels say which Bouncer and which database.");
    let _ = writeln!(
        out,
        "bouncer_build_info{{version=\"{}\",database=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        state.db.kind()
    );

    // The pool before the count below, so that the scrape's own connection is not in use.
    let (size, idle, max) =
        with_db!(&state.db, |pool| (pool.size(), pool.num_idle(), pool.options().get_max_connections()));
    let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
    describe(
        &mut out,
        "bouncer_db_pool_connections",
        "gauge",
        "Open connections of this process's database pool, by state.",
    );
    let _ = writeln!(out, "bouncer_db_pool_connections{{state=\"idle\"}} {idle}");
    let _ = writeln!(out, "bouncer_db_pool_connections{{state=\"in_use\"}} {}", size - idle);
    describe(
        &mut out,
        "bouncer_db_pool_max_connections",
        "gauge",
        "The most connections the database pool opens (BOUNCER_DB_MAX_CONNECTIONS).",
    );
    let _ = writeln!(out, "bouncer_db_pool_max_connections {max}");

    // Answers within a second, as scrapes expect, even when the database does not: the gauge
    // is then left out (Prometheus marks it stale) and the rest is still served.
    let count = tokio::time::timeout(Duration::from_secs(1), async {
        with_db!(&state.db, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL").fetch_one(pool).await
        })
    })
    .await;
    describe(
        &mut out,
        "bouncer_sessions_active",
        "gauge",
        "Sessions not ended, in the database (every instance sharing it). A session past its idle or absolute end counts until the sweeper or a request ends it (within BOUNCER_SWEEP_INTERVAL).",
    );
    match count {
        Ok(Ok(count)) => {
            let _ = writeln!(out, "bouncer_sessions_active {count}");
        }
        Ok(Err(err)) => tracing::warn!(error = %err, "metrics: cannot count the live sessions"),
        Err(_) => tracing::warn!("metrics: counting the live sessions took over a second"),
    }

    describe(
        &mut out,
        "bouncer_logins_total",
        "counter",
        "Login attempts (POST /api/login/) that reached the password check, by outcome.",
    );
    for outcome in LoginOutcome::ALL {
        let value = metrics.logins[outcome as usize].load(Relaxed);
        let _ = writeln!(out, "bouncer_logins_total{{outcome=\"{}\"}} {value}", outcome.code());
    }

    describe(
        &mut out,
        "bouncer_lockouts_total",
        "counter",
        "Usernames locked out after AUTH_LOGIN_FAILURE_LIMIT failed password checks.",
    );
    let _ = writeln!(out, "bouncer_lockouts_total {}", metrics.lockouts.load(Relaxed));

    describe(
        &mut out,
        "bouncer_sessions_ended_total",
        "counter",
        "Sessions ended by this process, by reason (endings on other instances are counted there).",
    );
    for (reason, value) in state.events.ended_counts() {
        let _ = writeln!(out, "bouncer_sessions_ended_total{{reason=\"{}\"}} {value}", reason.code());
    }

    describe(
        &mut out,
        "bouncer_http_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its response head, by route template, method and status class.",
    );
    let mut routes: Vec<Arc<RouteStats>> = metrics.routes.lock().expect("metrics routes lock").clone();
    routes.push(metrics.unmatched.clone());
    routes.sort_by(|a, b| a.route.cmp(&b.route));
    for stats in &routes {
        let route = escape(&stats.route);
        for (method_at, method) in METHODS.iter().enumerate() {
            for (class_at, class) in CLASSES.iter().enumerate() {
                let Some(histogram) = stats.slots[method_at * CLASSES.len() + class_at].get() else { continue };
                let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{class}\"");
                let mut cumulative = 0u64;
                for (bucket, le) in BUCKET_LABELS.iter().enumerate() {
                    cumulative += histogram.buckets[bucket].load(Relaxed);
                    let _ = writeln!(
                        out,
                        "bouncer_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                cumulative += histogram.buckets[BUCKET_LABELS.len()].load(Relaxed);
                let _ =
                    writeln!(out, "bouncer_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                let sum = histogram.sum_nanos.load(Relaxed) as f64 / 1e9;
                let _ = writeln!(out, "bouncer_http_request_duration_seconds_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "bouncer_http_request_duration_seconds_count{{{labels}}} {cumulative}");
            }
        }
    }
    out
}

/// Every reason a session can be stored with (`invalid_token` never is).
pub fn reasons() -> impl Iterator<Item = EndReason> {
    EndReason::ALL.into_iter().filter(|reason| *reason != EndReason::InvalidToken)
}
