//! Bounce webhooks of the email service providers: checking that a request really comes from the
//! provider, and parsing what it reports (pure functions and small verifier objects), and the
//! [`routes`] that store what passed (raw first, answered quickly, processed later by the daemon).
//!
//! - [`sendgrid`]: SendGrid's signed Event Webhook (ECDSA P-256 over timestamp and body, with a
//!   freshness window against replays).
//! - [`sns`]: Amazon SNS messages carrying SES notifications (RSA signatures, version 1 and 2, the
//!   signing certificate's URL restricted to SNS, a topic allow-list), and the SES notification
//!   inside.
//! - [`certs`]: where SNS signing certificates come from: pinned PEM files, or fetched over HTTPS from
//!   SNS only, cached.
//!
//! Both fail closed: a request without a signature, with an unknown key or certificate, or outside
//! the window is [`Rejected`] before anything it reports is read (SNS's signature is inside its JSON
//! envelope, so that envelope is parsed first; the SES report inside only after the check). What the
//! caller gets back is authentic. Addresses in the reports are personal data: they are held in
//! [`Personal`], whose `Debug` shows nothing, and no error message quotes the body (JSON errors are
//! reported by position only); what the sender wrote into a URL or topic is quoted and cut.
//!
//! Crypto is `ring` (already linked for rustls and lettre): `ECDSA_P256_SHA256_ASN1` and
//! `RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY` / `RSA_PKCS1_2048_8192_SHA256`. Keys and
//! certificates are read with RustCrypto's `x509-cert` and the `spki` and `der` crates it re-exports
//! (those two already in the tree through `rsa`/`pkcs8`; x509-cert adds itself, `der_derive` and
//! `flagset`): typed DER decoding, where `x509-parser` would bring nom, asn1-rs and their kin.

pub mod certs;
pub mod routes;
pub mod sendgrid;
pub mod sns;

use std::fmt;

use axum::http::StatusCode;

/// Why a webhook request was not accepted. Never contains the request body or an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// A required header or field is missing (the request is not signed).
    #[error("unsigned request: {0} is missing")]
    Unsigned(&'static str),
    /// The signature, timestamp or a field is not in the expected form.
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    /// Well-formed, but the signature does not verify with the configured key or certificate.
    #[error("the signature does not verify")]
    BadSignature,
    /// The signed timestamp is outside the accepted window (a replay, or a wrong clock).
    #[error("timestamp {age_secs} s away from now, more than the {tolerance_secs} s accepted")]
    Stale { age_secs: i64, tolerance_secs: u64 },
    /// SNS: the message is from a topic not in the allow-list (quoted, as received).
    #[error("topic {0} is not in the allow-list")]
    UnknownTopic(String),
    /// SNS: the signing certificate's URL is not an SNS certificate URL (forgery attempt; quoted).
    #[error("signing certificate URL refused: {0}")]
    CertificateUrl(String),
    /// SNS: the signing certificate is not usable (not pinned, not RSA, expired).
    #[error("signing certificate: {0}")]
    CertificateInvalid(String),
    /// SNS: the signing certificate could not be downloaded (for now: SNS retries).
    #[error("signing certificate unavailable: {0}")]
    CertificateUnavailable(String),
}

impl Rejected {
    /// The answer to give the provider: 400 when the request is malformed, 403 when it is not
    /// authentic, 503 when the certificate could not be fetched (the provider retries).
    pub fn status(&self) -> StatusCode {
        match self {
            Rejected::Malformed { .. } => StatusCode::BAD_REQUEST,
            Rejected::CertificateUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        Rejected::Malformed {
            what,
            why: why.into(),
        }
    }

    /// A JSON error by position and kind only: serde_json's messages can quote the input.
    fn json(what: &'static str, e: &serde_json::Error) -> Self {
        Rejected::malformed(
            what,
            format!(
                "invalid JSON ({:?}) at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    }
}

/// Personal data (an address) from a report: usable through [`Personal::expose`], invisible in
/// `Debug`, so that logging a parsed event by accident leaks nothing.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Personal(String);

impl Personal {
    pub fn new(value: impl Into<String>) -> Self {
        Personal(value.into())
    }

    /// The value, for matching against the store; never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Personal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Personal(..)")
    }
}
