//! breach-notifier: sends legally required data-breach notices by email to every affected person,
//! crash-safe, in rate-limited waves, recording what happened to each one.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that tests drive the same code.
//! Modules, one concept each:
//! - [`config`]: layered configuration, secrets, validation.
//! - [`telemetry`]: logging (never personal data).
//! - [`store`]: the database interface, PostgreSQL and SQLite.
//! - [`cli`]: the command line, and [`commands`]: what each command does.

pub mod cli;
pub mod commands;
pub mod config;
pub mod store;
pub mod telemetry;
