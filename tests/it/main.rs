//! The integration tests, as one binary (one link of the heavy dependencies instead of one per file).
//! Each module is a suite; `common` is the harness they share: [`common::TestApp`] and `backends!`.

// A test is a scenario read top to bottom, setup, action and every check in one place: the 80-line
// limit of src/ (Cargo.toml's lints) does not apply here.
#![allow(clippy::too_many_lines)]

#[macro_use]
mod common;

mod bounces;
mod browser;
mod campaigns;
mod cli;
mod cluster;
mod config;
mod content;
mod crash;
mod deadline_order;
mod deadlines;
mod determination;
mod dispatch;
mod dkim;
mod exports;
mod faults;
mod forecast;
mod hostile;
mod intake;
mod ops;
mod postfix_bounce_smoke;
mod postfix_bounces;
mod privacy;
mod regulators;
mod rules;
mod smtp_security;
mod smtp_server;
mod status_page;
mod store_conformance;
mod test_send;
mod waves;
mod webhooks;
