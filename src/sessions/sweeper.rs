//! The sweeper: ends idle and over-age sessions that nobody presents (so lists and events
//! are right on time), deletes ended sessions past retention, and forgets stale login failures.

use std::time::Duration;

use crate::AppState;
use crate::auth::lockout;
use crate::clock::MICROS_PER_SECOND;
use crate::error::ApiResult;
use crate::with_db;

/// One pass; returns (sessions ended, sessions deleted).
pub async fn sweep(state: &AppState) -> ApiResult<(usize, u64)> {
    let ended = super::expire(state, None).await?;
    let cutoff = state.clock.now() - state.config.session_retention_secs * MICROS_PER_SECOND;
    let mut deleted = 0;
    loop {
        let n = with_db!(&state.db, |pool| {
            sqlx::query(super::store::PURGE)
                .bind(cutoff)
                .bind(super::BATCH)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        deleted += n;
        if n < super::BATCH as u64 {
            break;
        }
    }
    lockout::forget_old(&state.db, state.clock.now()).await?;
    Ok((ended, deleted))
}

/// Runs [`sweep`] every `interval` until the process ends.
pub async fn run(state: AppState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match sweep(&state).await {
            Ok((ended, deleted)) if ended > 0 || deleted > 0 => {
                tracing::debug!(ended, deleted, "sweep")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "sweep failed; retrying at the next tick"),
        }
    }
}
