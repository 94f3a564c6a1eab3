//! Fault-injection and long-running tests against the real binary: PostgreSQL restarted and
//! killed under load, `kill -9` of Bouncer during a login storm, a full disk under SQLite,
//! graceful shutdown on SIGTERM, and the session limit under 200 simultaneous logins repeated.
//!
//! Every test is `#[ignore]`d so `cargo test` stays fast. Run them with
//!
//!     cargo test --test stress -- --ignored --test-threads=1 --nocapture
//!
//! They need: root (for the tmpfs), PostgreSQL 15's programs in /usr/lib/postgresql/15/bin
//! (a private cluster is created, restarted and killed; the shared server is never touched),
//! and the shared test server of `tests/api` for the scale test. A missing facility prints
//! `SKIPPED ...` (a failure with `BOUNCER_STRESS_REQUIRE=1`). The figures measured (latency
//! while the database is down, recovery time, durations) are printed as `[stress]` lines.

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../api/helpers.rs"]
mod helpers;

mod support;

mod disk_full;
mod kill9;
mod pg_restart;
mod scale;
mod sigterm;
