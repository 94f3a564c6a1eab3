//! The database: one pool for SQLite or PostgreSQL, migrations, and the few places where
//! the two dialects differ. Queries live with their resource (`sessions/store.rs`, ...);
//! they are written once, with `$1` placeholders that both drivers accept, and run on
//! whichever pool this is through [`with_db!`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// A connection pool to one of the two supported databases.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// What differs between the dialects, handed to the body of [`with_db!`].
pub struct Dialect {
    /// Starts a transaction that may write. SQLite must take the write lock up front: a
    /// plain `BEGIN` that writes later fails with SQLITE_BUSY under WAL without waiting.
    pub begin_write: &'static str,
    /// Appended to a `SELECT` that must lock the rows it reads until commit (PostgreSQL);
    /// SQLite's `BEGIN IMMEDIATE` already serialises every writer.
    pub for_update: &'static str,
}

pub const SQLITE: Dialect = Dialect { begin_write: "BEGIN IMMEDIATE", for_update: "" };
pub const POSTGRES: Dialect = Dialect { begin_write: "BEGIN", for_update: " FOR UPDATE" };

/// Runs `$body` with `$pool` bound to the concrete pool (and `$dialect` to its [`Dialect`]).
/// The body is compiled once per database, so one query string serves both.
#[macro_export]
macro_rules! with_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        $crate::with_db!($db, |$pool, _dialect| $body)
    };
    ($db:expr, |$pool:ident, $dialect:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $dialect = &$crate::db::SQLITE;
                $body
            }
            $crate::db::Db::Postgres($pool) => {
                #[allow(unused_variables)]
                let $dialect = &$crate::db::POSTGRES;
                $body
            }
        }
    };
}

/// Pool sizing and timeouts.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails with 503.
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { max_connections: 8, acquire_timeout: Duration::from_secs(5) }
    }
}

/// A pooled connection is given out only outside any transaction. When SQLite rolls a
/// transaction back by itself (a COMMIT that failed on a full disk), sqlx still counts it
/// as open, and every later `BEGIN` on that connection would fail: such a connection is
/// closed instead of reused.
fn usable<C: sqlx::Connection>(conn: &C) -> bool {
    let usable = !conn.is_in_transaction();
    if !usable {
        tracing::warn!("closing a pooled connection left inside a transaction");
    }
    usable
}

impl Db {
    /// Connects to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://...`), creating a
    /// SQLite file when it does not exist.
    pub async fn connect(url: &str, config: &PoolConfig) -> anyhow::Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(PgConnectOptions::from_str(url)?, config).await
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.acquire_timeout)
                .before_acquire(|conn, _| Box::pin(async move { Ok(usable(conn)) }))
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite: or postgres:// (got {:?})",
                url.split(':').next().unwrap_or_default()
            )
        }
    }

    pub async fn connect_postgres(options: PgConnectOptions, config: &PoolConfig) -> anyhow::Result<Db> {
        let options = options
            .application_name("bouncer")
            // A login queued behind a locked user row, or any statement stuck on a dead
            // connection, fails fast instead of hanging the request.
            .options([("lock_timeout", "5s"), ("statement_timeout", "15s")]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .before_acquire(|conn, _| Box::pin(async move { Ok(usable(conn)) }))
            .connect_with(options)
            .await?;
        Ok(Db::Postgres(pool))
    }

    /// Applies the migrations of this database's dialect.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Db::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// True when a trivial query succeeds (`/readyz`).
    pub async fn ping(&self) -> bool {
        with_db!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        with_db!(self, |pool| pool.close().await)
    }
}
