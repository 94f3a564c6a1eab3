//! Bouncer's integration tests: one binary, one module per concern. Every `db_test!` runs
//! on SQLite and on PostgreSQL.

mod helpers;

mod activity;
mod api;
mod awx;
mod basic;
mod browser;
mod cache;
mod e2e;
mod expiry;
mod forward;
mod hostile;
mod limits;
mod lockout;
mod login;
mod logs;
mod metrics;
mod model;
mod nginx;
mod pages;
mod process;
mod process_settings;
mod security;
mod settings;
mod settings_files;
mod users;
