//! Reading and writing the stored settings.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Snapshot;
use crate::AppState;
use crate::db::Db;
use crate::error::ApiResult;
use crate::with_db;

/// Loads the stored settings and builds the effective snapshot.
pub async fn load(db: &Db) -> Result<Snapshot, sqlx::Error> {
    let rows: Vec<(String, String)> =
        with_db!(db, |pool| sqlx::query_as("SELECT key, value FROM settings").fetch_all(pool).await)?;
    let stored = rows
        .into_iter()
        .filter_map(|(key, value)| match serde_json::from_str(&value) {
            Ok(value) => Some((key, value)),
            Err(err) => {
                tracing::warn!(%key, %err, "stored setting is not JSON; using its default");
                None
            }
        })
        .collect();
    Ok(Snapshot::from_stored(&stored))
}

/// Writes already validated changes in one transaction (`None` resets a key to its
/// default), reloads the snapshot and applies what the change means for live sessions.
/// Returns the snapshots before and after.
pub async fn apply_changes(
    state: &AppState,
    changes: &BTreeMap<&'static str, Option<Value>>,
    actor: Option<i64>,
) -> ApiResult<(std::sync::Arc<Snapshot>, std::sync::Arc<Snapshot>)> {
    let now = state.clock.now();
    with_db!(&state.db, |pool, dialect| {
        let mut tx = pool.begin_with(dialect.begin_write).await?;
        for (key, value) in changes {
            match value {
                Some(value) => {
                    sqlx::query(
                        "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                    )
                    .bind(*key)
                    .bind(value.to_string())
                    .bind(now)
                    .bind(actor)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM settings WHERE key = $1").bind(*key).execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
    });
    let before = state.settings.current();
    state.settings.replace(load(&state.db).await?);
    let after = state.settings.current();
    crate::sessions::settings_changed(state, &before, &after, actor).await?;
    Ok((before, after))
}
