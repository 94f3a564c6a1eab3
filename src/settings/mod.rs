//! Session settings: the registry of keys, their effective values (default < database),
//! held in memory as an atomically swapped snapshot, and the settings endpoint.

pub mod files;
mod handlers;
pub mod registry;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::clock::{MICROS_PER_SECOND, Micros};
pub use files::{FileErrors, FileLayer};
pub use handlers::{metadata, parse_changes, router};
pub use registry::{SETTINGS, SettingDef};
pub use store::{CHANNEL, Origin, apply_changes, load_stored, reload, reload_files, reset_stored};

/// What to do when a login would exceed the per-user limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    KickOldest,
    DenyNew,
}

/// Where an effective value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Default,
    Database,
    File { file: PathBuf, line: usize },
}

/// Values stored in the database, by key (the middle layer).
pub type Stored = BTreeMap<String, Value>;

/// The effective settings at one moment, typed.
#[derive(Debug, Clone)]
pub struct Snapshot {
    values: BTreeMap<&'static str, Value>,
    sources: BTreeMap<&'static str, Source>,
    stored: Stored,
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
    /// Layers the values: a file's over the database's over the default. A stored value
    /// that is no longer valid (edited by hand in the database, say) falls back to its default.
    pub fn build(stored: &Stored, files: &FileLayer) -> Snapshot {
        let mut values = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for def in SETTINGS {
            let (value, source) = if let Some(defined) = files.values.get(def.key) {
                (defined.value.clone(), Source::File { file: defined.file.clone(), line: defined.line })
            } else {
                match stored.get(def.key).map(|v| def.parse(v)) {
                    Some(Ok(v)) => (v, Source::Database),
                    Some(Err(message)) => {
                        tracing::warn!(key = def.key, %message, "stored setting is invalid; using its default");
                        ((def.default)(), Source::Default)
                    }
                    None => ((def.default)(), Source::Default),
                }
            };
            values.insert(def.key, value);
            sources.insert(def.key, source);
        }
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
            sources,
            stored: stored.clone(),
        }
    }

    /// Where each effective value comes from.
    pub fn source(&self, key: &str) -> &Source {
        self.sources.get(key).unwrap_or(&Source::Default)
    }

    /// The file that defines `key`, if one does.
    pub fn defined_in_file(&self, key: &str) -> Option<&std::path::Path> {
        match self.source(key) {
            Source::File { file, .. } => Some(file),
            _ => None,
        }
    }

    /// The values stored in the database.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// `{KEY: [old, new]}` for every key whose effective value differs from `before`'s.
    pub fn diff(&self, before: &Snapshot) -> BTreeMap<&'static str, [Value; 2]> {
        self.values
            .iter()
            .filter(|(key, value)| before.values.get(*key) != Some(*value))
            .map(|(key, value)| (*key, [before.values.get(key).cloned().unwrap_or(Value::Null), value.clone()]))
            .collect()
    }

    /// Effective values by key, as the API shows them.
    pub fn values(&self) -> &BTreeMap<&'static str, Value> {
        &self.values
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::build(&Stored::new(), &FileLayer::default())
    }
}

/// The settings in force, read without a database round trip on every request, and the
/// settings files they were built with.
#[derive(Debug)]
pub struct Settings {
    current: ArcSwap<Snapshot>,
    files: ArcSwap<FileLayer>,
    /// The `conf.d` directory, re-read on SIGHUP.
    pub conf_dir: Option<PathBuf>,
    /// The database's settings version this snapshot reflects (see `watch`).
    version: AtomicI64,
    /// One install at a time (they are rare), so that the version and the snapshot agree.
    installing: Mutex<()>,
}

impl Settings {
    pub fn new(stored: &Stored, files: FileLayer, conf_dir: Option<PathBuf>, version: i64) -> Arc<Settings> {
        Arc::new(Settings {
            current: ArcSwap::from_pointee(Snapshot::build(stored, &files)),
            files: ArcSwap::from_pointee(files),
            conf_dir,
            version: AtomicI64::new(version),
            installing: Mutex::new(()),
        })
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn files(&self) -> Arc<FileLayer> {
        self.files.load_full()
    }

    /// Installs new layers; returns the snapshots before and after. Stored values read at
    /// an older version than the one installed (a watcher's read that a write on this
    /// instance overtook) are stale and give way to the installed ones; new files still
    /// apply.
    pub fn install(&self, stored: &Stored, files: Option<FileLayer>, version: i64) -> (Arc<Snapshot>, Arc<Snapshot>) {
        let _one_at_a_time = self.installing.lock().unwrap_or_else(PoisonError::into_inner);
        let before = self.current();
        let stored = if version >= self.version() { stored } else { before.stored() };
        if let Some(files) = files {
            self.files.store(Arc::new(files));
        }
        let after = Arc::new(Snapshot::build(stored, &self.files()));
        self.current.store(after.clone());
        self.version.fetch_max(version, Ordering::SeqCst);
        (before, after)
    }

    pub fn version(&self) -> i64 {
        self.version.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: i64) -> Stored {
        Stored::from([("AUTH_TOKEN_PER_USER".to_owned(), Value::from(n))])
    }

    #[test]
    fn a_stale_read_installed_late_does_not_undo_a_newer_install() {
        let settings = Settings::new(&limit(3), FileLayer::default(), None, 5);
        // A write here installs version 6 ...
        settings.install(&limit(2), None, 6);
        // ... after which a watcher installs what it had read at version 5.
        let (before, after) = settings.install(&limit(3), None, 5);
        assert_eq!((before.per_user, after.per_user), (Some(2), Some(2)));
        assert_eq!(settings.version(), 6);
        // The same version read again, or a newer one, is installed.
        assert_eq!(settings.install(&limit(4), None, 6).1.per_user, Some(4));
        assert_eq!(settings.install(&limit(5), None, 7).1.per_user, Some(5));
    }
}
