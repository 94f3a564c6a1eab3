//! What instances sharing a database tell each other. Settings: a change made by another
//! instance (or by the CLI) is installed here within a second. On PostgreSQL the change is
//! announced with NOTIFY and heard at once; a poll of the settings version, every second on
//! SQLite and every few seconds on PostgreSQL (in case a notification is lost with its
//! connection), catches everything else. No request reads settings from the database.
//! Installing a stricter change also applies it here (`settings::reload`): until then this
//! instance let logins in under the old limit, and those over the new one end now.
//! Sessions: on PostgreSQL, the sessions ended on another instance reach this one's event
//! stream (`sessions::events`).

use std::time::Duration;

use crate::AppState;
use crate::db::Db;
use crate::error::ApiResult;
use crate::settings::{CHANNEL, reload};
use crate::with_db;

/// Installs the stored settings if their version moved, and applies a stricter change to
/// the live sessions; true when the version moved. Nothing else happens (no reload, no
/// session touched) while the version stays where it is.
pub async fn refresh_if_changed(state: &AppState) -> ApiResult<bool> {
    let version: i64 = with_db!(&state.db, |pool| {
        sqlx::query_scalar("SELECT version FROM settings_version WHERE id = 1").fetch_one(pool).await
    })?;
    if version == state.settings.version() {
        return Ok(false);
    }
    let (before, after) = reload(state).await?;
    let changed: Vec<&str> = after.diff(&before).keys().copied().collect();
    tracing::info!(version, ?changed, "settings changed elsewhere; installed");
    Ok(true)
}

/// Runs until the process ends.
pub async fn run(state: AppState) {
    match &state.db {
        Db::Postgres(pool) => loop {
            if let Err(err) = listen(&state, pool).await {
                tracing::warn!(error = %err, "settings listener lost its connection; reconnecting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        Db::Sqlite(_) => {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticker.tick().await;
                if let Err(err) = refresh_if_changed(&state).await {
                    tracing::warn!(error = %err, "cannot check the settings version");
                }
            }
        }
    }
}

async fn listen(state: &AppState, pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen_all([CHANNEL, crate::sessions::EVENTS_CHANNEL]).await?;
    // Anything announced while we were not listening: settings, and sessions that ended
    // (the session cache starts again).
    state.events.cache().clear();
    // ... and the event streams look their own sessions up again.
    state.events.resync();
    let _ = refresh_if_changed(state).await;
    let mut poll = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            notification = listener.try_recv() => {
                match notification? {
                    Some(n) if n.channel() == crate::sessions::EVENTS_CHANNEL => {
                        state.events.received(n.payload());
                        continue;
                    }
                    Some(_) => {}
                    None => return Err(sqlx::Error::PoolClosed),
                }
            }
            _ = poll.tick() => {}
        }
        if let Err(err) = refresh_if_changed(state).await {
            tracing::warn!(error = %err, "cannot reload the settings");
        }
    }
}
