//! The command line: `bouncer serve` (the default), `bouncer migrate`,
//! `bouncer user create|passwd|list`, `bouncer settings get|set|reset`,
//! `bouncer sessions list|revoke`, `bouncer openapi`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::activity::{Actor, Author, Origin};
use crate::clock::SystemClock;
use crate::config::{Config, DbArgs, ServeArgs};
use crate::db::{Db, PoolConfig};
use crate::error::ApiError;
use crate::users::{self, Password, Username, store};
use crate::{AppState, app, sessions, settings};

#[derive(Debug, Parser)]
#[command(name = "bouncer", version, about = "Session limits, idle expiry and logout reasons behind a REST API")]
pub struct Cli {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default command).
    Serve(ServeArgs),
    /// Create or update the database schema, then exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Read and change the session settings.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// List and revoke sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the effective settings as JSON (or one key's value), with where each comes from.
    Get { key: Option<String> },
    /// Change a setting. VALUE is JSON (`3`, `true`, `"deny_new"`); a bare word is a string.
    Set { key: String, value: String },
    /// Reset a setting (or, without KEY, every setting) to its default.
    Reset { key: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions, newest first: the live ones, or with --all the ended ones too (with
    /// their reason). Sessions past their end are ended first, as the API's lists do.
    List {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// Ended sessions too.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke sessions: their clients get 401 `revoked`. A running server sees it at once on
    /// PostgreSQL, and within BOUNCER_SESSION_CACHE_MS (1 s) on SQLite.
    Revoke {
        /// Session ids.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        ids: Vec<i64>,
        /// Every live session of this user instead.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from BOUNCER_PASSWORD, or asked for.
    Create {
        username: String,
        /// Make the user a superuser.
        #[arg(long)]
        superuser: bool,
        /// Make the user a system auditor (reads everything, changes nothing).
        #[arg(long)]
        auditor: bool,
    },
    /// Set a user's password (ends the user's sessions). Read from BOUNCER_PASSWORD, or asked for.
    Passwd { username: String },
    /// List users.
    List,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Openapi) => {
            println!("{}", openapi_json());
            Ok(())
        }
        Some(Command::Migrate) => {
            let db = connect(&cli.db).await?;
            println!("database is up to date ({})", db.kind());
            Ok(())
        }
        Some(Command::User(command)) => {
            let db = connect_existing(&cli.db).await?;
            let state = AppState::new(db, Config::new(&cli.db, None)?, Arc::new(SystemClock)).await?;
            if matches!(command, UserCommand::Passwd { .. }) {
                note_without_conf_dir(&state);
            }
            let done = user_command(&state, command).await;
            state.events.flush().await;
            done
        }
        Some(Command::Settings(command)) => {
            let db = connect_existing(&cli.db).await?;
            let state = AppState::new(db, Config::new(&cli.db, None)?, Arc::new(SystemClock)).await?;
            if !matches!(command, SettingsCommand::Get { .. }) {
                note_without_conf_dir(&state);
            }
            let done = settings_command(&state, command).await;
            state.events.flush().await;
            done
        }
        Some(Command::Sessions(command)) => {
            let db = connect_existing(&cli.db).await?;
            let state = AppState::new(db, Config::new(&cli.db, None)?, Arc::new(SystemClock)).await?;
            note_without_conf_dir(&state);
            let done = sessions_command(&state, command).await;
            state.events.flush().await;
            done
        }
        Some(Command::Serve(serve)) => run_server(&cli.db, &serve).await,
        None => {
            let serve = ServeArgs::from_env();
            run_server(&cli.db, &serve).await
        }
    }
}

/// The OpenAPI document as the committed `openapi/openapi.json` holds it.
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&crate::openapi()).expect("the OpenAPI document serialises")
}

impl ServeArgs {
    /// `serve`'s options when the command is left out (from the environment and defaults).
    fn from_env() -> ServeArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Only::parse_from(["bouncer"]).serve
    }
}

async fn connect(args: &DbArgs) -> anyhow::Result<Db> {
    let pool = PoolConfig { max_connections: args.db_max_connections, ..PoolConfig::default() };
    let db = Db::connect(&args.database_url, &pool)
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(&args.database_url)))?;
    db.migrate().await.context("cannot apply the database migrations")?;
    Ok(db)
}

/// Says, on standard error, when no settings directory is in sight (`BOUNCER_CONF_DIR`, or
/// `./conf.d`): the command applies the stored settings (the idle timeout and the limit
/// that decide which sessions have ended), and a server whose files define others would not.
fn note_without_conf_dir(state: &AppState) {
    if state.settings.conf_dir.is_none() {
        eprintln!(
            "note: no settings directory (BOUNCER_CONF_DIR, or ./conf.d here): settings defined in files \
             are not applied by this command; run it with the server's environment if the server has them"
        );
    }
}

/// [`connect`] for the commands that work on a server's data (`user`, `settings`,
/// `sessions`): a SQLite file that does not exist is an error, not a new empty database (a
/// command run in the wrong directory would otherwise create one and report success).
async fn connect_existing(args: &DbArgs) -> anyhow::Result<Db> {
    let url = &args.database_url;
    if url.starts_with("sqlite:")
        && !url.contains(":memory:")
        && let Ok(options) = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
        && !options.get_filename().exists()
    {
        anyhow::bail!(
            "no database at {}: run this where the server runs, or set DATABASE_URL to its database (`bouncer migrate` creates a new one)",
            options.get_filename().display()
        );
    }
    connect(args).await
}

/// The URL without its password, for messages: none from the user info, and no query
/// string (PostgreSQL takes `?password=` there too).
fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?…"),
        None => (url, ""),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}@{}", &base[..scheme], user, &base[at + 1..])
        }
        _ => base.to_owned(),
    };
    format!("{base}{query}")
}

async fn run_server(db_args: &DbArgs, serve: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::new(db_args, Some(serve))?;
    let db = connect(db_args).await?;
    let state = AppState::new(db, config, Arc::new(SystemClock)).await?;
    bootstrap_admin(&state, serve).await?;
    // Installed before anyone is told we listen: SIGHUP's default action ends the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let listener =
        tokio::net::TcpListener::bind(serve.bind).await.with_context(|| format!("cannot listen on {}", serve.bind))?;
    tracing::info!(address = %listener.local_addr()?, database = state.db.kind(), "listening");
    let sweeper = tokio::spawn(sessions::sweeper::run(state.clone(), state.config.sweep_interval));
    let watcher = tokio::spawn(crate::cluster::run(state.clone()));
    let reloader = tokio::spawn(reload_on_sighup(state.clone(), hangup));
    let closing = state.clone();
    let shutdown = async move {
        shutdown_signal().await;
        closing.close();
    };
    let header_timeout = std::time::Duration::from_secs(serve.header_read_timeout.max(1));
    crate::server::serve(listener, app(state.clone()), header_timeout, shutdown).await;
    sweeper.abort();
    watcher.abort();
    reloader.abort();
    state.db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads the settings directory on every SIGHUP.
async fn reload_on_sighup(state: AppState, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: re-reading the settings files");
        if let Err(err) = settings::reload_files(&state).await {
            tracing::error!(error = %err, "cannot reload the settings files");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

/// On first start (no users), creates the superuser, generating its password if none given.
async fn bootstrap_admin(state: &AppState, serve: &ServeArgs) -> anyhow::Result<()> {
    if store::count(&state.db).await? > 0 {
        return Ok(());
    }
    let username =
        Username::parse(&serve.admin_username).map_err(|m| anyhow::anyhow!("BOUNCER_ADMIN_USERNAME: {m}"))?;
    let (password, generated) = match &serve.admin_password {
        Some(password) => {
            (Password::parse(password).map_err(|m| anyhow::anyhow!("BOUNCER_ADMIN_PASSWORD: {m}"))?, false)
        }
        None => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::auth::token::random_bytes::<18>());
            (Password::parse(&raw).expect("24 characters"), true)
        }
    };
    match users::create(state, &username, &password, true, false, &Author::cli()).await {
        Ok(_) => {}
        // Another instance created it first.
        Err(ApiError::Validation(_)) => return Ok(()),
        Err(err) => return Err(anyhow::anyhow!("cannot create the first superuser: {err}")),
    }
    if generated {
        // Printed once on standard error, outside the tracing log (no level, no request id).
        // Under a service manager standard error is the journal, which keeps it: README.md and
        // docs/SECURITY.md say to set BOUNCER_ADMIN_PASSWORD there, or change this one at once.
        eprintln!(
            "\nCreated the superuser {:?} with the generated password:\n\n    {}\n\n\
             Write it down now: it will not be shown again. Change it with `bouncer user passwd {}`.\n",
            username.as_str(),
            password.expose(),
            username.as_str()
        );
    } else {
        eprintln!("Created the superuser {:?} from BOUNCER_ADMIN_PASSWORD.", username.as_str());
    }
    Ok(())
}

async fn user_command(state: &AppState, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { username, superuser, auditor } => {
            let username = Username::parse(&username).map_err(|m| anyhow::anyhow!("username: {m}"))?;
            if store::by_username(&state.db, username.as_str()).await?.is_some() {
                anyhow::bail!("username: A user with that username already exists.");
            }
            let password = read_password()?;
            let user = users::create(state, &username, &password, superuser, auditor, &Author::cli())
                .await
                .map_err(describe)?;
            println!("created user {} (id {})", user.username, user.id);
        }
        UserCommand::Passwd { username } => {
            let user = store::by_username(&state.db, &username)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user named {username:?}"))?;
            let password = read_password()?;
            let changes = users::Changes { password: Some(password), ..Default::default() };
            users::update(state, user.id, &changes, &Author::cli()).await.map_err(describe)?;
            println!("password of {} changed; the user's sessions have ended", user.username);
        }
        UserCommand::List => {
            let users = store::list(&state.db, i64::MAX, 0).await?;
            println!("{:>6}  {:<30} {:<8} {:<10} {:<8}", "ID", "USERNAME", "ACTIVE", "SUPERUSER", "AUDITOR");
            for u in users {
                println!(
                    "{:>6}  {:<30} {:<8} {:<10} {:<8}",
                    u.id, u.username, u.is_active, u.is_superuser, u.is_system_auditor
                );
            }
        }
    }
    Ok(())
}

/// One line of `bouncer sessions list`.
#[derive(sqlx::FromRow, serde::Serialize)]
struct SessionLine {
    id: i64,
    username: Option<String>,
    #[serde(serialize_with = "as_rfc3339")]
    created_at: i64,
    #[serde(serialize_with = "as_rfc3339")]
    last_used_at: i64,
    #[serde(serialize_with = "as_rfc3339_or_null")]
    ended_at: Option<i64>,
    end_reason: Option<String>,
    ip_address: Option<String>,
    user_agent: Option<String>,
}

fn as_rfc3339<S: serde::Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::rfc3339(*t))
}

fn as_rfc3339_or_null<S: serde::Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&crate::clock::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

async fn user_id_of(state: &AppState, username: &str) -> anyhow::Result<i64> {
    Ok(store::by_username(&state.db, username).await?.ok_or_else(|| anyhow::anyhow!("no user named {username:?}"))?.id)
}

async fn sessions_command(state: &AppState, command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List { user, all, limit, json } => {
            let user_id = match &user {
                Some(username) => Some(user_id_of(state, username).await?),
                None => None,
            };
            sessions::expire(state, user_id).await.map_err(describe)?;
            let lines: Vec<SessionLine> = crate::with_db!(&state.db, |pool| {
                sqlx::query_as(
                    "SELECT s.id, u.username, s.created_at, s.last_used_at, s.ended_at, s.end_reason, \
                     s.ip_address, s.user_agent FROM sessions s LEFT JOIN users u ON u.id = s.user_id \
                     WHERE ($1 IS NULL OR s.user_id = $1) AND ($2 OR s.ended_at IS NULL) ORDER BY s.id DESC LIMIT $3",
                )
                .bind(user_id)
                .bind(all)
                .bind(limit.max(0))
                .fetch_all(pool)
                .await
            })?;
            if json {
                for line in &lines {
                    println!("{}", serde_json::to_string(line)?);
                }
                return Ok(());
            }
            println!(
                "{:>8}  {:<20} {:<27} {:<27} {:<16} {:<15} USER AGENT",
                "ID", "USER", "CREATED", "LAST USED", "ENDED", "ADDRESS"
            );
            for line in lines {
                let ended = line.end_reason.clone().unwrap_or_else(|| "live".to_owned());
                println!(
                    "{:>8}  {:<20} {:<27} {:<27} {:<16} {:<15} {}",
                    line.id,
                    line.username.as_deref().unwrap_or("(deleted)"),
                    crate::clock::rfc3339(line.created_at),
                    crate::clock::rfc3339(line.last_used_at),
                    ended,
                    line.ip_address.as_deref().unwrap_or("-"),
                    line.user_agent.as_deref().unwrap_or("-"),
                );
            }
        }
        SessionsCommand::Revoke { ids, user: Some(username) } if ids.is_empty() => {
            let user_id = user_id_of(state, &username).await?;
            let ended = sessions::revoke_all_of_user(state, user_id, &Author::cli()).await.map_err(describe)?;
            println!("revoked {ended} session(s) of {username}");
        }
        SessionsCommand::Revoke { ids, .. } => {
            let mut missing = Vec::new();
            for id in ids {
                if sessions::revoke_one(state, id, &Author::cli()).await.map_err(describe)? {
                    println!("revoked session {id}");
                } else {
                    missing.push(id.to_string());
                }
            }
            anyhow::ensure!(missing.is_empty(), "not live (unknown, or already ended): {}", missing.join(", "));
        }
    }
    Ok(())
}

/// Turns an API error into a message for the terminal.
fn describe(err: ApiError) -> anyhow::Error {
    match err {
        ApiError::Validation(fields) => anyhow::anyhow!(
            "{}",
            fields.iter().map(|(k, v)| format!("{k}: {}", v.join(" "))).collect::<Vec<_>>().join("; ")
        ),
        other => anyhow::anyhow!("{other}"),
    }
}

/// The password from BOUNCER_PASSWORD, from a prompt (typed twice, not echoed), or from
/// the first line of standard input.
fn read_password() -> anyhow::Result<Password> {
    let raw = if let Ok(password) = std::env::var("BOUNCER_PASSWORD") {
        password
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password (again): ")?;
        anyhow::ensure!(first == second, "the two passwords differ");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let _ = std::io::stderr().flush();
    Password::parse(&raw).map_err(|m| anyhow::anyhow!("password: {m}"))
}

async fn settings_command(state: &AppState, command: SettingsCommand) -> anyhow::Result<()> {
    let snapshot = state.settings.current();
    match command {
        SettingsCommand::Get { key: None } => {
            let values: serde_json::Map<String, serde_json::Value> =
                snapshot.values().iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            println!("{}", serde_json::to_string_pretty(&values)?);
            for key in snapshot.values().keys() {
                if let Some(file) = snapshot.defined_in_file(key) {
                    eprintln!("{key} is defined in {}", file.display());
                }
            }
        }
        SettingsCommand::Get { key: Some(key) } => {
            let value =
                snapshot.values().get(key.as_str()).ok_or_else(|| anyhow::anyhow!("{key}: Unknown setting."))?;
            println!("{value}");
        }
        SettingsCommand::Set { key, value } => {
            let value = serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
            let body = serde_json::Map::from_iter([(key, value)]);
            apply(state, &body).await?;
        }
        SettingsCommand::Reset { key: Some(key) } => {
            apply(state, &serde_json::Map::from_iter([(key, serde_json::Value::Null)])).await?;
        }
        // Every stored value, as the API's DELETE does it (file-defined keys keep the file's).
        SettingsCommand::Reset { key: None } => {
            let (before, after) =
                settings::reset_stored(state, &Actor::default(), Origin::Cli).await.map_err(describe)?;
            print_changes(&before, &after);
        }
    }
    Ok(())
}

/// Validates and applies changes exactly as the API does, recorded with origin `cli`.
async fn apply(state: &AppState, body: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<()> {
    let changes = settings::parse_changes(body, &state.settings.current(), false).map_err(describe)?;
    let (before, after) =
        settings::apply_changes(state, &changes, &Actor::default(), Origin::Cli, "update").await.map_err(describe)?;
    print_changes(&before, &after);
    Ok(())
}

/// `KEY: old -> new` for each effective value that changed, or "nothing changed".
fn print_changes(before: &settings::Snapshot, after: &settings::Snapshot) {
    let diff = after.diff(before);
    if diff.is_empty() {
        println!("nothing changed");
    }
    for (key, [old, new]) in diff {
        println!("{key}: {old} -> {new}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_database_url_in_a_message_shows_no_password() {
        for (url, shown) in [
            ("postgres://bouncer:secret@db:5432/bouncer", "postgres://bouncer@db:5432/bouncer"),
            ("postgres://bouncer@db/bouncer?password=secret&sslmode=require", "postgres://bouncer@db/bouncer?…"),
            ("sqlite://bouncer.db", "sqlite://bouncer.db"),
        ] {
            assert_eq!(super::redact_url(url), shown);
        }
    }
}
