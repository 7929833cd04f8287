//! Asynchronous bounces: what happened to a notice after the relay accepted it (docs/bounces.md).
//!
//! The pure half, with no database and no I/O (the fuzz target and the corpus test exercise it
//! alone; nothing in it logs, since reports hold addresses):
//! - [`verp`]: the envelope-sender tokens (`LOCAL+TOKEN@DOMAIN`) that tie a report to a recipient
//!   row and that nobody else can forge;
//! - [`parse`](mod@parse): raw bytes to a [`Report`] (kind, headers, every RFC 3464 recipient block,
//!   ARF fields, text evidence, correlation keys), with `dsn` (the RFC 3464 field parser) and `text`
//!   (the conservative wording rules) under it;
//! - [`classify`](mod@classify): a [`Report`] to one [`Verdict`] per recipient: not delivered (and
//!   why), delayed, delivered, or unclassified, with the rule that decided;
//! - [`redact`](mod@redact): the bytes to store, without the returned breach notice;
//! - `webhook`: the stored SES and SendGrid events read into the same verdicts.
//!
//! The half that acts, through the store: [`ingest`] (store a report before acknowledging it),
//! [`maildir`] (the watched mailbox) and [`process`] (match, decide, record, guard).
//!
//! **Layer: bounce.** Uses the store and the configuration; used by the command line, the dispatcher
//! (which processes reports and parks guarded domains), the campaign layer (the VERP envelope sender)
//! and the operations layer (the webhooks). Crates: mail-parser for MIME, ring for the HMAC.

pub mod classify;
#[cfg(test)]
mod corpus;
mod dsn;
pub mod ingest;
pub mod maildir;
pub mod parse;
pub mod process;
pub mod redact;
mod text;
pub mod verp;
pub(crate) mod webhook;

pub use classify::{
    Basis, CLASSIFIER_VERSION, DeliveryEvidence, FailureClass, Outcome, Verdict, classify,
};
pub use dsn::{PerMessage, RecipientBlock};
pub use parse::{Feedback, Headers, Kind, Report, TextEvidence, parse};
pub use redact::redact;
