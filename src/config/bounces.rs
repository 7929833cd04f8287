//! `[bounces]`: asynchronous bounces (docs/bounces.md). Off unless a part of it is configured: the
//! VERP envelope sender needs `domain` and `key_files`; `bounce ingest` and the webhooks work without
//! them (matching then only by Message-ID); the Maildir is watched when `maildir` is set.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, read_credential};

/// The shortest HMAC key accepted: 256 bits, the output size of the HMAC's hash.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BounceSettings {
    /// The domain of the envelope sender of every notice, `LOCAL+TOKEN@DOMAIN`, whose token names the
    /// recipient and is signed. Mail for it must reach `bounce ingest` (docs/bounces.md). Without
    /// it the campaign's `return_path` is the envelope sender, as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The local part before `+TOKEN`.
    pub local_part: String,
    /// Files (or systemd credentials, by relative name) holding the HMAC keys, at least 32 bytes each.
    /// The first signs new notices; every one is accepted, so a key can be rotated without losing the
    /// bounces of notices signed with the old one.
    pub key_files: Vec<PathBuf>,
    /// The keys read from `key_files`.
    #[serde(skip)]
    pub keys: BounceKeys,
    /// A Maildir the daemon watches for bounces (for relays that deliver them to a mailbox).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maildir: Option<PathBuf>,
    /// Larger reports are cut to this size before they are stored (the part that matters comes first).
    pub max_report_bytes: usize,
    /// How often the daemon processes stored reports and reads the Maildir, in seconds.
    pub poll_seconds: u64,
    /// The guard against mass false failures: when, within `guard_window_minutes`, at least
    /// `guard_min_failures` final failures came from one receiving domain of a campaign and more than
    /// `guard_policy_share` of them are policy rejections (5.7.x), the domain is held.
    pub guard_window_minutes: u64,
    pub guard_min_failures: u64,
    pub guard_policy_share: f64,
    /// Amazon SES notifications through SNS, at `POST /webhooks/ses` of the daemon's HTTP endpoint:
    /// the topic ARNs accepted (none: every request is refused).
    pub ses_topic_arns: Vec<String>,
    /// SNS signing certificates pinned as PEM files (named as in the messages' SigningCertURL); none:
    /// they are fetched over HTTPS from `sns.<region>.amazonaws.com` only, and cached.
    pub ses_certificate_files: Vec<PathBuf>,
    /// SendGrid's signed event webhook at `POST /webhooks/sendgrid`: a file (or systemd credential)
    /// holding the verification key SendGrid shows (base64); none: every request is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sendgrid_key_file: Option<PathBuf>,
    /// The key read from `sendgrid_key_file`.
    #[serde(skip)]
    pub sendgrid_key: Option<String>,
    /// How old a signed SendGrid request may be, in seconds (a replay window).
    pub webhook_tolerance_seconds: u64,
}

impl Default for BounceSettings {
    fn default() -> Self {
        Self {
            domain: None,
            local_part: "bounce".into(),
            key_files: Vec::new(),
            keys: BounceKeys::default(),
            maildir: None,
            max_report_bytes: 10 * 1024 * 1024,
            poll_seconds: 5,
            guard_window_minutes: 30,
            guard_min_failures: 20,
            guard_policy_share: 0.5,
            ses_topic_arns: Vec::new(),
            ses_certificate_files: Vec::new(),
            sendgrid_key_file: None,
            sendgrid_key: None,
            webhook_tolerance_seconds: 600,
        }
    }
}

/// HMAC keys, never printed.
#[derive(Clone, Default)]
pub struct BounceKeys(pub Vec<Vec<u8>>);

impl fmt::Debug for BounceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} keys redacted]", self.0.len())
    }
}

impl BounceKeys {
    /// Every key, for verifying.
    pub fn all(&self) -> Vec<&[u8]> {
        self.0.iter().map(Vec::as_slice).collect()
    }

    /// The key that signs new notices.
    pub fn signing(&self) -> Option<&[u8]> {
        self.0.first().map(Vec::as_slice)
    }
}

impl BounceSettings {
    /// Reads `key_files` and `sendgrid_key_file`; a relative path is looked up in
    /// `$CREDENTIALS_DIRECTORY` when set.
    pub(super) fn read_keys(&mut self) -> Result<(), ConfigError> {
        if let Some(file) = &self.sendgrid_key_file {
            let key = "bounces.sendgrid_key_file";
            let (_, text) = read_credential(key, file, std::fs::read_to_string)?;
            self.sendgrid_key = Some(text.trim().to_string());
        }
        let mut keys = Vec::new();
        for file in &self.key_files {
            let (path, mut key) = read_credential("bounces.key_files", file, std::fs::read)?;
            while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                key.pop();
            }
            if key.len() < MIN_KEY_BYTES {
                return Err(ConfigError::Value(format!(
                    "bounces.key_files {}: {} bytes, fewer than {MIN_KEY_BYTES}; make one with `head -c 32 /dev/urandom | base64 > {}`",
                    path.display(),
                    key.len(),
                    path.display()
                )));
            }
            keys.push(key);
        }
        self.keys = BounceKeys(keys);
        Ok(())
    }

    /// Cross-key rules.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.domain.is_some() && self.key_files.is_empty() {
            return Err(ConfigError::Value(
                "bounces.domain is set but bounces.key_files is empty: the envelope sender's token must be signed (docs/bounces.md)".into(),
            ));
        }
        if let Some(domain) = &self.domain
            && (domain.is_empty() || domain.contains('@') || !domain.contains('.'))
        {
            return Err(ConfigError::Value(format!(
                "bounces.domain = {domain:?}: give a domain name such as bounces.example.com"
            )));
        }
        if self.local_part.is_empty()
            || self.local_part.len() > 20
            || self.local_part.contains(['@', '+', ' '])
        {
            return Err(ConfigError::Value(format!(
                "bounces.local_part = {:?}: 1 to 20 characters, without '@', '+' or spaces",
                self.local_part
            )));
        }
        if !(0.0..=1.0).contains(&self.guard_policy_share) || self.guard_min_failures == 0 {
            return Err(ConfigError::Value(
                "bounces.guard_policy_share must be within 0..=1 and guard_min_failures at least 1"
                    .into(),
            ));
        }
        if self.poll_seconds == 0 || self.max_report_bytes < 4096 {
            return Err(ConfigError::Value(
                "bounces.poll_seconds must be at least 1 and max_report_bytes at least 4096".into(),
            ));
        }
        Ok(())
    }
}
