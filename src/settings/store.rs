//! Reading and writing the stored settings, and installing new effective values.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::registry::CATEGORY_SLUG;
use super::{FileLayer, Snapshot, Stored};
use crate::AppState;
pub use crate::activity::Origin;
use crate::activity::{Actor, Entry};
use crate::db::Db;
use crate::error::ApiResult;
use crate::{record_activity, with_db};

/// The PostgreSQL channel on which a settings change is announced to every instance.
pub const CHANNEL: &str = "bouncer_settings";

const SELECT_STORED: &str = "SELECT key, value FROM settings";
const SELECT_VERSION: &str = "SELECT version FROM settings_version WHERE id = 1";

fn parse_rows(rows: Vec<(String, String)>) -> Stored {
    rows.into_iter()
        .filter_map(|(key, value)| match serde_json::from_str(&value) {
            Ok(value) => Some((key, value)),
            Err(err) => {
                tracing::warn!(%key, %err, "stored setting is not JSON; using its default");
                None
            }
        })
        .collect()
}

/// The stored settings and the version they are at.
pub async fn load_stored(db: &Db) -> Result<(Stored, i64), sqlx::Error> {
    // The version first: a write in between makes this look older than it is, so the next
    // check reloads again, which is harmless; the other order could miss a change.
    let version: i64 = with_db!(db, |pool| sqlx::query_scalar(SELECT_VERSION).fetch_one(pool).await)?;
    let rows: Vec<(String, String)> = with_db!(db, |pool| sqlx::query_as(SELECT_STORED).fetch_all(pool).await)?;
    Ok((parse_rows(rows), version))
}

/// Re-reads the stored settings (after a change made elsewhere: another instance, the
/// CLI) and installs them. When that makes them stricter here, applies them to the live
/// sessions as the process that made the change did: the sessions this process let in
/// under the old values while the change was on its way end now, with the same reason and
/// `ended_by`. That process recorded the change in the activity stream; this records
/// nothing. Only a change of the effective values does anything.
pub async fn reload(state: &AppState) -> ApiResult<(Arc<Snapshot>, Arc<Snapshot>)> {
    let (stored, version) = load_stored(&state.db).await?;
    let (before, after) = state.settings.install(&stored, None, version);
    enforce_installed(state, &before, &after).await?;
    Ok((before, after))
}

/// Applies to live sessions a change installed here by a reload (of the database, or of
/// the files on SIGHUP). Sessions ended by a lower limit say who set it, as they do on the
/// process where it was set: the administrator who stored the value (null for the CLI), or
/// nobody when a settings file defines it.
async fn enforce_installed(state: &AppState, before: &Snapshot, after: &Snapshot) -> ApiResult<()> {
    if after.diff(before).is_empty() {
        return Ok(());
    }
    let by = if crate::sessions::limit_tightened(before, after)
        && *after.source("AUTH_TOKEN_PER_USER") == super::Source::Database
    {
        let author: Option<Option<i64>> = with_db!(&state.db, |pool| {
            sqlx::query_scalar("SELECT updated_by FROM settings WHERE key = 'AUTH_TOKEN_PER_USER'")
                .fetch_optional(pool)
                .await
        })?;
        author.flatten()
    } else {
        None
    };
    crate::sessions::settings_changed(state, before, after, by).await
}

/// Writes already validated changes (`None` resets a key to its default) in one
/// transaction with their activity-stream entry, announces them to the other instances,
/// installs them here and applies what they mean for live sessions. Returns the effective
/// values before and after.
pub async fn apply_changes(
    state: &AppState,
    changes: &BTreeMap<&'static str, Option<Value>>,
    actor: &Actor,
    origin: Origin,
    operation: &'static str,
) -> ApiResult<(Arc<Snapshot>, Arc<Snapshot>)> {
    let now = state.clock.now();
    let files = state.settings.files();
    let (stored, version) = with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
        // Taking the version row first serialises writers of settings on PostgreSQL.
        let version: i64 =
            sqlx::query_scalar("UPDATE settings_version SET version = version + 1 WHERE id = 1 RETURNING version")
                .fetch_one(&mut *tx)
                .await?;
        let rows: Vec<(String, String)> = sqlx::query_as(SELECT_STORED).fetch_all(&mut *tx).await?;
        let old = parse_rows(rows);
        let mut new = old.clone();
        for (key, value) in changes {
            match value {
                Some(value) => {
                    new.insert(key.to_string(), value.clone());
                    sqlx::query(
                        "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                    )
                    .bind(*key)
                    .bind(value.to_string())
                    .bind(now)
                    .bind(actor.id)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    new.remove(*key);
                    sqlx::query("DELETE FROM settings WHERE key = $1").bind(*key).execute(&mut *tx).await?;
                }
            }
        }
        let diff = Snapshot::build(&new, &files).diff(&Snapshot::build(&old, &files));
        if !diff.is_empty() {
            let entry = Entry {
                origin,
                actor,
                operation,
                object: "setting",
                object_id: None,
                category: Some(CATEGORY_SLUG),
                changes: json!(diff),
            };
            record_activity!(&mut *tx, now, &entry)?;
        }
        if !dialect.for_update.is_empty() {
            // Delivered when the transaction commits, to every instance listening.
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(version.to_string()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        (new, version)
    });
    let (before, after) = state.settings.install(&stored, None, version);
    let changes = after.diff(&before);
    if !changes.is_empty() {
        // Settings are no secrets: the line says what changed, from what to what.
        tracing::info!(
            origin = origin.code(),
            actor_id = actor.id,
            actor = actor.username.as_deref(),
            changes = %json!(changes),
            "settings changed"
        );
    }
    crate::sessions::settings_changed(state, &before, &after, actor.id).await?;
    Ok((before, after))
}

/// Resets every stored value to its default (the API's DELETE, `bouncer settings reset`),
/// recorded as a `delete`. Keys that a file defines keep the file's value in force.
pub async fn reset_stored(
    state: &AppState,
    actor: &Actor,
    origin: Origin,
) -> ApiResult<(Arc<Snapshot>, Arc<Snapshot>)> {
    let snapshot = state.settings.current();
    let changes = super::SETTINGS
        .iter()
        .filter(|def| snapshot.stored().contains_key(def.key))
        .map(|def| (def.key, None))
        .collect();
    apply_changes(state, &changes, actor, origin, "delete").await
}

/// Re-reads the settings directory (SIGHUP). A bad file keeps the values in force and
/// returns the problems; a good one installs the new values (and the stored ones, which
/// may have moved too), records what the files changed with origin `file` and applies
/// every change to live sessions.
pub async fn reload_files(state: &AppState) -> ApiResult<Result<(), super::FileErrors>> {
    let Some(dir) = state.settings.conf_dir.clone() else { return Ok(Ok(())) };
    let layer = match FileLayer::load(&dir) {
        Ok(layer) => layer,
        Err(errors) => {
            tracing::error!(dir = %dir.display(), errors = %errors, "settings files are invalid; keeping the values in force");
            return Ok(Err(errors));
        }
    };
    let (stored, version) = load_stored(&state.db).await?;
    let old_files = state.settings.files();
    let (before, after) = state.settings.install(&stored, Some(layer), version);
    // What the files changed, over the same stored values: a change stored elsewhere and
    // picked up by this same reload was recorded by whoever made it.
    let diff = after.diff(&Snapshot::build(&stored, &old_files));
    if !diff.is_empty() {
        let changed: Vec<&str> = diff.keys().copied().collect();
        tracing::info!(dir = %dir.display(), ?changed, "settings files reloaded");
        let now = state.clock.now();
        let entry = Entry {
            origin: Origin::File,
            actor: &Actor::default(),
            operation: "update",
            object: "setting",
            object_id: None,
            category: Some(CATEGORY_SLUG),
            changes: json!(diff),
        };
        with_db!(&state.db, |pool| record_activity!(pool, now, &entry))?;
    } else {
        tracing::info!(dir = %dir.display(), "settings files reloaded; nothing changed");
    }
    enforce_installed(state, &before, &after).await?;
    Ok(Ok(()))
}
