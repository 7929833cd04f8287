//! SendGrid's signed Event Webhook: checking the signature and the timestamp, and reading the events
//! that matter for notices (bounce, dropped, deferred, delivered, spamreport).
//!
//! SendGrid signs `timestamp || raw body` with ECDSA P-256 / SHA-256 and sends the signature (base64
//! of the DER `Ecdsa-Sig-Value`) in [`SIGNATURE_HEADER`] and the Unix timestamp it signed in
//! [`TIMESTAMP_HEADER`]. The key to check with is the one SendGrid's settings page shows: base64 of a
//! DER SubjectPublicKeyInfo, whose algorithm is checked to be an EC key on P-256 (a key of another
//! kind is a configuration error, not a request to accept). A timestamp further than the tolerance
//! from now (either way) is refused: a captured request cannot be replayed later. Idempotency within
//! the window is by `sg_event_id`, kept by whoever stores the events.
//!
//! The body is a JSON array of events; the other event types (processed, open, click, ...) are
//! counted and left out. Custom arguments (`custom_args`, legacy `unique_args`) arrive as extra
//! top-level fields of each event and are collected, for matching the notice (`bn_recipient`, ...).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde::Deserialize;
use x509_cert::der::Decode;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::spki::SubjectPublicKeyInfoRef;

use super::{Personal, Rejected};

/// The header with the base64 DER signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Email-Event-Webhook-Signature";
/// The header with the signed Unix timestamp (seconds).
pub const TIMESTAMP_HEADER: &str = "X-Twilio-Email-Event-Webhook-Timestamp";
/// How far a signed timestamp may be from now, unless configured otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(10 * 60);

/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 / prime256v1 (RFC 5480).
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// The configured key is not a usable SendGrid verification key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SendGrid verification key: {0}")]
pub struct KeyError(String);

/// Checks SendGrid's signature with one public key.
#[derive(Debug, Clone)]
pub struct SendGridVerifier {
    /// The uncompressed P-256 point (`04 || X || Y`), as ring takes it.
    point: Vec<u8>,
    tolerance: Duration,
}

impl SendGridVerifier {
    /// From the key as SendGrid's settings show it: base64 of a DER SubjectPublicKeyInfo.
    pub fn from_base64_spki(key: &str, tolerance: Duration) -> Result<Self, KeyError> {
        let der = STANDARD
            .decode(key.trim())
            .map_err(|e| KeyError(format!("not base64 ({e})")))?;
        Self::from_spki_der(&der, tolerance)
    }

    /// From a DER SubjectPublicKeyInfo, which must be an EC key on P-256.
    pub fn from_spki_der(der: &[u8], tolerance: Duration) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| KeyError(format!("not a DER SubjectPublicKeyInfo ({e})")))?;
        if spki.algorithm.oid != EC_PUBLIC_KEY {
            return Err(KeyError(format!(
                "algorithm {} is not an EC public key (1.2.840.10045.2.1)",
                spki.algorithm.oid
            )));
        }
        let curve = spki
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if curve != Some(P256) {
            return Err(KeyError("the curve is not P-256 (prime256v1)".into()));
        }
        let point = spki
            .subject_public_key
            .as_bytes()
            .filter(|p| p.len() == 65 && p[0] == 4)
            .ok_or_else(|| KeyError("the key is not an uncompressed P-256 point".into()))?;
        Ok(SendGridVerifier {
            point: point.to_vec(),
            tolerance,
        })
    }

    /// Checks a request's signature and timestamp (header values as received; `None` when absent)
    /// against `now`.
    pub fn verify(
        &self,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Rejected> {
        let signature = signature.ok_or(Rejected::Unsigned(SIGNATURE_HEADER))?;
        let timestamp = timestamp.ok_or(Rejected::Unsigned(TIMESTAMP_HEADER))?;
        let signed_at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| Rejected::malformed("timestamp", "not a Unix time in seconds"))?;
        let signature = STANDARD
            .decode(signature.trim())
            .map_err(|e| Rejected::malformed("signature", format!("not base64 ({e})")))?;
        // The signature first: an old but authentic request and a forged one are told apart in
        // the logs.
        let mut message = Vec::with_capacity(timestamp.len() + body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(body);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(&message, &signature)
            .map_err(|_| Rejected::BadSignature)?;
        let age_secs = now.timestamp().saturating_sub(signed_at);
        if age_secs.unsigned_abs() > self.tolerance.as_secs() {
            return Err(Rejected::Stale {
                age_secs,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        Ok(())
    }

    /// [`verify`](Self::verify) with the two headers read from `headers`.
    pub fn verify_headers(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Rejected> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.verify(get(SIGNATURE_HEADER), get(TIMESTAMP_HEADER), body, now)
    }

    /// Verifies, then parses: the events of an authentic request.
    pub fn events(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<SendGridBatch, Rejected> {
        self.verify_headers(headers, body, now)?;
        parse_events(body)
    }
}

/// The event types kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendGridEventKind {
    /// The receiving server rejected the message (`type` says `bounce` or `blocked`).
    Bounce,
    /// SendGrid did not send it (suppression list, invalid address, ...): not delivered.
    Dropped,
    /// The receiving server answered temporarily; SendGrid retries.
    Deferred,
    /// The receiving server accepted the message.
    Delivered,
    /// The recipient marked it as spam.
    SpamReport,
}

impl SendGridEventKind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "bounce" => Self::Bounce,
            "dropped" => Self::Dropped,
            "deferred" => Self::Deferred,
            "delivered" => Self::Delivered,
            "spamreport" => Self::SpamReport,
            _ => return None,
        })
    }
}

/// One kept event.
#[derive(Debug, Clone, PartialEq)]
pub struct SendGridEvent {
    pub kind: SendGridEventKind,
    /// The recipient's address: personal data.
    pub email: Personal,
    /// When it happened (Unix seconds).
    pub timestamp: Option<i64>,
    /// Unique per event: the idempotency key.
    pub sg_event_id: Option<String>,
    /// SendGrid's id of the message (`<id>.filter...`), to match the notice sent.
    pub sg_message_id: Option<String>,
    /// The `smtp-id` (the message's Message-ID as SendGrid saw it).
    pub smtp_id: Option<String>,
    /// The enhanced status code (`5.1.1`) or SMTP code, as SendGrid reports it.
    pub status: Option<String>,
    /// The receiving server's answer or SendGrid's reason: may quote the address, so personal.
    pub reason: Option<Personal>,
    /// For bounces: `bounce` or `blocked`.
    pub bounce_type: Option<String>,
    /// SendGrid's bounce classification (`Invalid Address`, `Reputation`, ...).
    pub bounce_classification: Option<String>,
    /// For deferrals: which attempt this was.
    pub attempt: Option<String>,
    /// Custom arguments set at send time (`bn_recipient`, ...), as text.
    pub custom_args: BTreeMap<String, String>,
}

/// The kept events of one request, and how many others it held.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SendGridBatch {
    pub events: Vec<SendGridEvent>,
    /// Events of other types (processed, open, click, ...), left out.
    pub ignored: usize,
}

/// The fields SendGrid defines; every other top-level string or number is a custom argument.
const STANDARD_FIELDS: &[&str] = &[
    "email",
    "timestamp",
    "event",
    "sg_event_id",
    "sg_message_id",
    "smtp-id",
    "reason",
    "status",
    "type",
    "bounce_classification",
    "attempt",
    "response",
    "tls",
    "cert_err",
    "ip",
    "category",
    "useragent",
    "url",
    "url_offset",
    "asm_group_id",
    "pool",
    "sg_machine_open",
    "sg_content_type",
    "sg_template_id",
    "sg_template_name",
    "marketing_campaign_id",
    "marketing_campaign_name",
    "marketing_campaign_version",
    "marketing_campaign_split_id",
    "singlesend_id",
    "singlesend_name",
    "template_id",
    "send_at",
    "unique_args",
    "custom_args",
];

#[derive(Deserialize)]
struct RawEvent {
    event: Option<String>,
    #[serde(default)]
    email: Personal,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// Parses a webhook body (without checking its signature: see [`SendGridVerifier::events`]).
pub fn parse_events(body: &[u8]) -> Result<SendGridBatch, Rejected> {
    let raw: Vec<RawEvent> =
        serde_json::from_slice(body).map_err(|e| Rejected::json("event batch", &e))?;
    let mut batch = SendGridBatch::default();
    for event in raw {
        match event
            .event
            .as_deref()
            .and_then(SendGridEventKind::from_name)
        {
            Some(kind) => batch.events.push(event.into_event(kind)),
            None => batch.ignored += 1,
        }
    }
    Ok(batch)
}

impl RawEvent {
    fn into_event(self, kind: SendGridEventKind) -> SendGridEvent {
        let text = |name: &str| self.rest.get(name).and_then(as_text);
        let mut custom_args = BTreeMap::new();
        for (name, value) in &self.rest {
            if !STANDARD_FIELDS.contains(&name.as_str())
                && let Some(v) = as_text(value)
            {
                custom_args.insert(name.clone(), v);
            }
        }
        // Older integrations nest them.
        for nested in ["unique_args", "custom_args"] {
            if let Some(serde_json::Value::Object(args)) = self.rest.get(nested) {
                for (name, value) in args {
                    if let Some(v) = as_text(value) {
                        custom_args.insert(name.clone(), v);
                    }
                }
            }
        }
        SendGridEvent {
            kind,
            timestamp: self
                .rest
                .get("timestamp")
                .and_then(serde_json::Value::as_i64),
            sg_event_id: text("sg_event_id"),
            sg_message_id: text("sg_message_id"),
            smtp_id: text("smtp-id"),
            status: text("status"),
            reason: text("reason").map(Personal::new),
            bounce_type: text("type"),
            bounce_classification: text("bounce_classification"),
            attempt: text("attempt"),
            custom_args,
            email: self.email,
        }
    }
}

/// A string, number or boolean as text; `None` for null, arrays and objects.
fn as_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    /// The DER SubjectPublicKeyInfo header of a P-256 key, before the 65-byte point.
    const P256_SPKI_PREFIX: &[u8] = &[
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];

    struct Signer {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Signer { pair, rng }
        }

        /// The key as SendGrid's settings page shows it.
        fn public_key_base64(&self) -> String {
            let mut spki = P256_SPKI_PREFIX.to_vec();
            spki.extend_from_slice(self.pair.public_key().as_ref());
            STANDARD.encode(spki)
        }

        fn sign(&self, timestamp: &str, body: &[u8]) -> String {
            let mut message = timestamp.as_bytes().to_vec();
            message.extend_from_slice(body);
            STANDARD.encode(self.pair.sign(&self.rng, &message).unwrap())
        }
    }

    const BODY: &str = r#"[
      {"email":"jane@example.org","timestamp":1764650000,"smtp-id":"<n.abc@notify.example.com>",
       "event":"bounce","type":"bounce","status":"5.1.1","bounce_classification":"Invalid Address",
       "reason":"550 5.1.1 <jane@example.org>: Recipient address rejected",
       "sg_event_id":"ev1","sg_message_id":"msg1.filter0001","bn_recipient":"4711","bn_campaign":12,
       "category":["breach"]},
      {"email":"joe@example.org","timestamp":1764650001,"event":"processed","sg_event_id":"ev2"},
      {"email":"joe@example.org","timestamp":1764650002,"event":"deferred","attempt":"2",
       "response":"421 try later","sg_event_id":"ev3","sg_message_id":"msg2.filter0001",
       "unique_args":{"bn_recipient":"4712"}},
      {"email":"kim@example.org","timestamp":1764650003,"event":"delivered","sg_event_id":"ev4"},
      {"email":"lee@example.org","timestamp":1764650004,"event":"dropped","reason":"Bounced Address","sg_event_id":"ev5"},
      {"email":"max@example.org","timestamp":1764650005,"event":"spamreport","sg_event_id":"ev6"},
      {"email":"max@example.org","timestamp":1764650006,"event":"open","sg_event_id":"ev7"}
    ]"#;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_650_100, 0).unwrap()
    }

    fn headers(signature: &str, timestamp: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, signature.parse().unwrap());
        h.insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
        h
    }

    #[test]
    fn a_valid_signature_is_accepted_and_the_events_parsed() {
        let signer = Signer::new();
        let verifier =
            SendGridVerifier::from_base64_spki(&signer.public_key_base64(), DEFAULT_TOLERANCE)
                .unwrap();
        let ts = "1764650090";
        let batch = verifier
            .events(
                &headers(&signer.sign(ts, BODY.as_bytes()), ts),
                BODY.as_bytes(),
                now(),
            )
            .unwrap();
        assert_eq!(batch.ignored, 2, "processed and open");
        let kinds: Vec<_> = batch.events.iter().map(|e| e.kind).collect();
        use SendGridEventKind::*;
        assert_eq!(kinds, [Bounce, Deferred, Delivered, Dropped, SpamReport]);
        let bounce = &batch.events[0];
        assert_eq!(bounce.email.expose(), "jane@example.org");
        assert_eq!(bounce.sg_message_id.as_deref(), Some("msg1.filter0001"));
        assert_eq!(
            bounce.smtp_id.as_deref(),
            Some("<n.abc@notify.example.com>")
        );
        assert_eq!(bounce.status.as_deref(), Some("5.1.1"));
        assert_eq!(bounce.bounce_type.as_deref(), Some("bounce"));
        assert_eq!(bounce.timestamp, Some(1_764_650_000));
        assert_eq!(
            bounce.custom_args,
            BTreeMap::from([
                ("bn_campaign".to_string(), "12".to_string()),
                ("bn_recipient".to_string(), "4711".to_string())
            ])
        );
        let deferred = &batch.events[1];
        assert_eq!(deferred.attempt.as_deref(), Some("2"));
        assert_eq!(deferred.custom_args["bn_recipient"], "4712");
        // Addresses never show in Debug output (logs).
        let debug = format!("{batch:?}");
        assert!(!debug.contains("jane@example.org"), "{debug}");
    }

    #[test]
    fn tampered_body_wrong_key_and_unsigned_requests_are_rejected() {
        let signer = Signer::new();
        let verifier =
            SendGridVerifier::from_base64_spki(&signer.public_key_base64(), DEFAULT_TOLERANCE)
                .unwrap();
        let ts = "1764650090";
        let signature = signer.sign(ts, BODY.as_bytes());
        let tampered = BODY.replace("\"bounce\",\"type\"", "\"delivered\",\"type\"");
        assert_eq!(
            verifier.verify(Some(&signature), Some(ts), tampered.as_bytes(), now()),
            Err(Rejected::BadSignature)
        );
        // The timestamp is signed too.
        assert_eq!(
            verifier.verify(Some(&signature), Some("1764650091"), BODY.as_bytes(), now()),
            Err(Rejected::BadSignature)
        );
        let other = Signer::new();
        let wrong =
            SendGridVerifier::from_base64_spki(&other.public_key_base64(), DEFAULT_TOLERANCE)
                .unwrap();
        assert_eq!(
            wrong.verify(Some(&signature), Some(ts), BODY.as_bytes(), now()),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verifier.verify_headers(&HeaderMap::new(), BODY.as_bytes(), now()),
            Err(Rejected::Unsigned(SIGNATURE_HEADER))
        );
        assert_eq!(
            verifier.verify(Some(&signature), None, BODY.as_bytes(), now()),
            Err(Rejected::Unsigned(TIMESTAMP_HEADER))
        );
        assert!(matches!(
            verifier.verify(Some("not base64!"), Some(ts), BODY.as_bytes(), now()),
            Err(Rejected::Malformed { .. })
        ));
        assert_eq!(
            Rejected::BadSignature.status(),
            axum::http::StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_rejected() {
        let signer = Signer::new();
        let verifier = SendGridVerifier::from_base64_spki(
            &signer.public_key_base64(),
            Duration::from_secs(600),
        )
        .unwrap();
        let check = |ts: i64| {
            let ts = ts.to_string();
            verifier.verify(
                Some(&signer.sign(&ts, BODY.as_bytes())),
                Some(&ts),
                BODY.as_bytes(),
                now(),
            )
        };
        let now = now().timestamp();
        assert_eq!(check(now - 600), Ok(()));
        assert_eq!(
            check(now - 601),
            Err(Rejected::Stale {
                age_secs: 601,
                tolerance_secs: 600
            })
        );
        assert!(matches!(check(now + 601), Err(Rejected::Stale { .. })));
        assert!(matches!(check(now - 86_400), Err(Rejected::Stale { .. })));
    }

    #[test]
    fn only_p256_ec_keys_are_accepted() {
        assert!(SendGridVerifier::from_base64_spki("%%%", DEFAULT_TOLERANCE).is_err());
        assert!(
            SendGridVerifier::from_base64_spki(&STANDARD.encode(b"junk"), DEFAULT_TOLERANCE)
                .is_err()
        );
        // An Ed25519 key (RFC 8410 example).
        let ed25519 = STANDARD
            .decode("MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=")
            .unwrap();
        let err = SendGridVerifier::from_spki_der(&ed25519, DEFAULT_TOLERANCE).unwrap_err();
        assert!(err.to_string().contains("not an EC public key"), "{err}");
        // A P-384 key: same algorithm, other curve.
        let rng = SystemRandom::new();
        let p384 = &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(p384, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(p384, pkcs8.as_ref(), &rng).unwrap();
        let mut spki = vec![
            0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let err = SendGridVerifier::from_spki_der(&spki, DEFAULT_TOLERANCE).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
    }

    #[test]
    fn a_malformed_body_is_reported_without_quoting_it() {
        let err = parse_events(br#"[{"event":"bounce","email":42}]"#).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        let err = parse_events(br#"{"email":"jane@example.org"}"#).unwrap_err();
        assert!(!err.to_string().contains("jane"), "{err}");
    }
}
