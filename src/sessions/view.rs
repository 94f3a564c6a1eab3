//! A session as the API shows it.

use serde::Serialize;
use utoipa::ToSchema;

use super::EndReason;
use super::store::{SessionRow, end_of};
use crate::clock::{Micros, rfc3339};
use crate::settings::Snapshot;

#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub id: i64,
    pub url: String,
    /// The user's id (null once the user is deleted).
    pub user: Option<i64>,
    pub created: String,
    pub last_used: String,
    /// When the session ends if it stays idle (or reaches its maximum lifetime); null once ended.
    pub expires: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// True for the session that made this request.
    pub current: bool,
    pub active: bool,
    pub ended_at: Option<String>,
    /// Why it ended: a code from the table of reasons; null while active.
    pub reason: Option<EndReason>,
    /// The reason in words.
    pub detail: Option<&'static str>,
    pub ended_by: Option<EndedBy>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndedBy {
    pub id: i64,
    pub username: String,
}

impl Session {
    pub fn new(row: SessionRow, now: Micros, settings: &Snapshot, current: Option<i64>) -> Session {
        let reason = row.end_reason.as_deref().and_then(EndReason::from_code);
        let ends = end_of(row.created_at, row.last_used_at, settings).0;
        let active = row.ended_at.is_none() && ends > now;
        Session {
            id: row.id,
            url: format!("/api/v2/me/sessions/{}/", row.id),
            user: row.user_id,
            created: rfc3339(row.created_at),
            last_used: rfc3339(row.last_used_at),
            expires: active.then(|| rfc3339(ends)),
            ip_address: row.ip_address,
            user_agent: row.user_agent,
            current: current == Some(row.id),
            active,
            ended_at: row.ended_at.map(rfc3339),
            reason,
            detail: reason.map(EndReason::detail),
            ended_by: row.ended_by.zip(row.ended_by_username).map(|(id, username)| EndedBy { id, username }),
        }
    }
}
