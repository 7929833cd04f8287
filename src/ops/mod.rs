//! **Layer: operations.** Owns what lets people run and watch the daemon and prove what it did: the
//! Prometheus registry ([`metrics`]), the HTTP endpoint ([`http`]: `/healthz`, `/readyz`, `/metrics`,
//! the signature checks of the bounce webhooks, and the status page with its token-guarded actions),
//! what `status` and `/api/status` read ([`status`]), systemd notification ([`notify`]), logging
//! ([`telemetry`]), progress lines of long commands ([`progress`]) and the evidence and postal
//! [`export`]s.
//!
//! Uses the store (exports, `/readyz`, the status page), the transport (`/readyz` checks the relay),
//! the campaign layer (the page's resume runs the pre-flight, its release-wave releases a wave) and the
//! configuration; used by the dispatcher (metrics, notification), intake (progress) and the command
//! line. [`metrics`], [`notify`], [`telemetry`] and [`progress`] use no other layer, so that the
//! dispatcher and intake can report through them without a cycle.

pub mod export;
pub mod http;
pub mod metrics;
pub(crate) mod notify;
pub(crate) mod progress;
pub mod status;
pub(crate) mod telemetry;
