//! Process configuration: environment variables and command-line flags, read and checked
//! once at start-up. (Session settings are not here: they live in `settings/`.)

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::auth::password::Argon2Config;

/// Options shared by every command.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Database: `sqlite://PATH` (created on first start) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://bouncer.db", global = true)]
    pub database_url: String,

    /// Maximum connections in the database pool.
    #[arg(long, env = "BOUNCER_DB_MAX_CONNECTIONS", default_value_t = 8, global = true)]
    pub db_max_connections: u32,

    /// argon2id memory cost in KiB.
    #[arg(long, env = "BOUNCER_ARGON2_MEMORY_KIB", default_value_t = 19_456, global = true)]
    pub argon2_memory_kib: u32,

    /// argon2id iterations.
    #[arg(long, env = "BOUNCER_ARGON2_ITERATIONS", default_value_t = 2, global = true)]
    pub argon2_iterations: u32,

    /// argon2id lanes.
    #[arg(long, env = "BOUNCER_ARGON2_PARALLELISM", default_value_t = 1, global = true)]
    pub argon2_parallelism: u32,

    /// Directory of settings files (`*.toml`, `*.py`) that override and lock settings
    /// [default: ./conf.d when it exists].
    #[arg(long, env = "BOUNCER_CONF_DIR", global = true)]
    pub conf_dir: Option<std::path::PathBuf>,

    /// How many password hashes may run at once (default: the number of cores).
    #[arg(long, env = "BOUNCER_ARGON2_MAX_CONCURRENT", global = true)]
    pub argon2_max_concurrent: Option<usize>,

    /// Milliseconds a live session read from the database is trusted by this process without
    /// reading it again (0 turns the session cache off). Endings on this process and, on
    /// PostgreSQL, on the others (NOTIFY) reach the cache at once; this bounds the rest.
    #[arg(long, env = "BOUNCER_SESSION_CACHE_MS", default_value_t = 1000, global = true)]
    pub session_cache_ms: u64,

    /// Live sessions the cache holds at most.
    #[arg(long, env = "BOUNCER_SESSION_CACHE_SIZE", default_value_t = 10_000, global = true)]
    pub session_cache_size: usize,

    /// How many logins may wait for a hash beyond those running; more get 503 at once.
    #[arg(long, env = "BOUNCER_ARGON2_MAX_QUEUED", default_value_t = 256, global = true)]
    pub argon2_max_queued: usize,
}

/// Options of `bouncer serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BOUNCER_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Seconds ended sessions are kept (with their reason) before they are deleted.
    #[arg(long, env = "BOUNCER_SESSION_RETENTION", default_value_t = 2_592_000)]
    pub session_retention: i64,

    /// Seconds a client has to send its request headers (slow or silent clients are dropped).
    #[arg(long, env = "BOUNCER_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,

    /// Seconds between two passes of the sweeper.
    #[arg(long, env = "BOUNCER_SWEEP_INTERVAL", default_value_t = 5)]
    pub sweep_interval: u64,

    /// Proxies whose X-Forwarded-For is believed: comma-separated addresses or CIDR ranges.
    #[arg(long, env = "BOUNCER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Mark cookies `Secure` (set this when clients reach Bouncer over HTTPS; behind a trusted
    /// proxy, `X-Forwarded-Proto: https` does it per request).
    #[arg(long, env = "BOUNCER_COOKIE_SECURE")]
    pub cookie_secure: bool,

    /// Username of the superuser created on first start, when there are no users.
    #[arg(long, env = "BOUNCER_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,

    /// Password of that superuser; without it one is generated and printed once.
    #[arg(long, env = "BOUNCER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// Hosts (`host` or `host:port`, comma-separated) that the login may redirect to after a
    /// form login (`next=https://host/...`); any other absolute `next` goes to `/api/v2/`.
    #[arg(long, env = "BOUNCER_ALLOWED_REDIRECT_HOSTS", value_delimiter = ',', value_parser = parse_redirect_host)]
    pub allowed_redirect_hosts: Vec<String>,

    /// Serve Prometheus metrics at `/metrics` (anonymous): `on` or `off`.
    #[arg(long, env = "BOUNCER_METRICS", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub metrics: bool,
}

/// `on`/`off` (or `true`/`false`, `1`/`0`, `yes`/`no`).
fn parse_on_off(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{raw:?} is neither on nor off")),
    }
}

fn parse_net(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{raw:?} is not an IP address or CIDR range"))
}

/// One entry of `BOUNCER_ALLOWED_REDIRECT_HOSTS`, lower-cased: a host name or address with an
/// optional port (`app.example.com`, `app.example.com:8443`, `[::1]:8080`); blank is skipped.
fn parse_redirect_host(raw: &str) -> Result<String, String> {
    let host = raw.trim().to_ascii_lowercase();
    if host.is_empty() || crate::auth::cookies::is_authority(&host) {
        Ok(host)
    } else {
        Err(format!("{:?} is not a host or host:port (no scheme, path or user)", raw.trim()))
    }
}

/// What the running application needs to know about its process.
#[derive(Debug, Clone)]
pub struct Config {
    pub argon2: Argon2Config,
    pub session_retention_secs: i64,
    pub sweep_interval: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The settings directory, if any.
    pub conf_dir: Option<std::path::PathBuf>,
    /// Always mark cookies `Secure`.
    pub cookie_secure: bool,
    /// Microseconds a session read from the database is trusted without reading it again
    /// (0: every request reads the database).
    pub session_cache_ttl: crate::clock::Micros,
    /// Sessions the cache holds at most.
    pub session_cache_size: usize,
    /// Hosts (`host` or `host:port`, lower case) a form login may redirect to.
    pub allowed_redirect_hosts: Vec<String>,
    /// Serve `/metrics`.
    pub metrics: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            argon2: Argon2Config::default(),
            session_retention_secs: 2_592_000,
            sweep_interval: Duration::from_secs(5),
            trusted_proxies: Vec::new(),
            conf_dir: None,
            cookie_secure: false,
            session_cache_ttl: 1_000_000,
            session_cache_size: 10_000,
            allowed_redirect_hosts: Vec::new(),
            metrics: true,
        }
    }
}

impl DbArgs {
    pub fn argon2(&self) -> Argon2Config {
        Argon2Config {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
            max_concurrent: self.argon2_max_concurrent.unwrap_or(Argon2Config::default().max_concurrent),
            max_queued: self.argon2_max_queued,
        }
    }
}

impl Config {
    pub fn new(db: &DbArgs, serve: Option<&ServeArgs>) -> anyhow::Result<Config> {
        let conf_dir = db.conf_dir.clone().or_else(|| {
            let default = std::path::PathBuf::from("conf.d");
            default.is_dir().then_some(default)
        });
        anyhow::ensure!(db.session_cache_ms <= 60_000, "BOUNCER_SESSION_CACHE_MS must be at most 60000 (one minute)");
        let mut config = Config {
            argon2: db.argon2(),
            conf_dir,
            session_cache_ttl: i64::try_from(db.session_cache_ms).unwrap_or(i64::MAX) * 1000,
            session_cache_size: db.session_cache_size,
            ..Config::default()
        };
        if let Some(serve) = serve {
            anyhow::ensure!(serve.session_retention >= 0, "BOUNCER_SESSION_RETENTION must be 0 or more seconds");
            anyhow::ensure!(serve.sweep_interval >= 1, "BOUNCER_SWEEP_INTERVAL must be at least 1 second");
            config.session_retention_secs = serve.session_retention;
            config.sweep_interval = Duration::from_secs(serve.sweep_interval);
            config.trusted_proxies = serve.trusted_proxies.clone();
            config.cookie_secure = serve.cookie_secure;
            config.allowed_redirect_hosts =
                serve.allowed_redirect_hosts.iter().filter(|h| !h.is_empty()).cloned().collect();
            config.metrics = serve.metrics;
        }
        Ok(config)
    }
}
