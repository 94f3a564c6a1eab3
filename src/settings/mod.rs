//! Session settings: the registry of keys, their effective values (default < database),
//! held in memory as an atomically swapped snapshot, and the settings endpoint.

mod handlers;
pub mod registry;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::clock::{MICROS_PER_SECOND, Micros};
pub use handlers::router;
pub use registry::{SETTINGS, SettingDef};
pub use store::{apply_changes, load};

/// What to do when a login would exceed the per-user limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    KickOldest,
    DenyNew,
}

/// The effective settings at one moment, typed.
#[derive(Debug, Clone)]
pub struct Snapshot {
    values: BTreeMap<&'static str, Value>,
    pub token_expiration: Micros,
    /// `None` when unlimited (-1).
    pub per_user: Option<i64>,
    pub basic_enabled: bool,
    /// `None` when off (0).
    pub max_age: Option<Micros>,
    pub policy: LimitPolicy,
    /// `None` when off (0).
    pub failure_limit: Option<i64>,
    pub lockout: Micros,
}

impl Snapshot {
    /// Builds a snapshot from stored values; anything missing or no longer valid (a value
    /// edited by hand in the database, say) falls back to its default.
    pub fn from_stored(stored: &BTreeMap<String, Value>) -> Snapshot {
        let values: BTreeMap<&'static str, Value> = SETTINGS
            .iter()
            .map(|def| {
                let value = match stored.get(def.key).map(|v| def.parse(v)) {
                    Some(Ok(v)) => v,
                    Some(Err(message)) => {
                        tracing::warn!(key = def.key, %message, "stored setting is invalid; using its default");
                        (def.default)()
                    }
                    None => (def.default)(),
                };
                (def.key, value)
            })
            .collect();
        let int = |key: &str| values[key].as_i64().unwrap_or_default();
        let positive = |n: i64| (n > 0).then_some(n);
        Snapshot {
            token_expiration: int("AUTH_TOKEN_EXPIRATION") * MICROS_PER_SECOND,
            per_user: positive(int("AUTH_TOKEN_PER_USER")),
            basic_enabled: values["AUTH_BASIC_ENABLED"].as_bool().unwrap_or(true),
            max_age: positive(int("AUTH_TOKEN_MAX_AGE")).map(|s| s * MICROS_PER_SECOND),
            policy: match values["SESSION_LIMIT_POLICY"].as_str() {
                Some("deny_new") => LimitPolicy::DenyNew,
                _ => LimitPolicy::KickOldest,
            },
            failure_limit: positive(int("AUTH_LOGIN_FAILURE_LIMIT")),
            lockout: int("AUTH_LOGIN_LOCKOUT_SECONDS") * MICROS_PER_SECOND,
            values,
        }
    }

    /// Effective values by key, as the API shows them.
    pub fn values(&self) -> &BTreeMap<&'static str, Value> {
        &self.values
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::from_stored(&BTreeMap::new())
    }
}

/// The settings in force, read without a database round trip on every request.
#[derive(Debug, Default)]
pub struct Settings(ArcSwap<Snapshot>);

impl Settings {
    pub fn new(snapshot: Snapshot) -> Arc<Settings> {
        Arc::new(Settings(ArcSwap::from_pointee(snapshot)))
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    pub fn replace(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}
