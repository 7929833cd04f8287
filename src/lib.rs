//! breach-notifier: sends legally required data-breach notices by email to every affected person,
//! crash-safe, in rate-limited waves, recording what happened to each one.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that tests drive the same code.
//! Modules, one concept each:
//! - [`config`]: layered configuration, secrets, validation.
//! - [`telemetry`]: logging (never personal data).
//! - [`store`]: the database interface, PostgreSQL and SQLite.
//! - [`intake`]: importing affected-customer lists (CSV), validated and reconciled.
//! - [`campaign`]: campaign files and the stored campaign spec.
//! - [`template`]: notice templates (minijinja, strict, auto-escaped).
//! - [`message`]: the MIME message and its stable Message-ID.
//! - [`preflight`]: checks run before a campaign sends its first message.
//! - [`dispatch`]: the daemon: claims, sends, records; [`limits`]: rate limits; [`transport`]: SMTP
//!   and the file outbox.
//! - [`waves`]: the wave plan: releases, guards.
//! - Operations: [`metrics`] (the Prometheus registry), [`http`] (`/healthz`, `/readyz`, `/metrics`),
//!   [`notify`] (systemd's `sd_notify`: ready, status, watchdog, stopping).
//! - [`export`]: streaming exports: evidence for regulators, the postal list for a print vendor.
//! - [`progress`]: progress lines of long commands.
//! - [`cli`]: the command line, and [`commands`]: what each command does.

pub mod campaign;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dispatch;
pub mod export;
pub mod http;
pub mod intake;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod progress;
pub mod shared_addresses;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod transport;
pub mod waves;
