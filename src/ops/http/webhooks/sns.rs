//! Amazon SNS messages carrying SES notifications: the envelope's signature, the topic allow-list,
//! and the SES notification (bounce, complaint, delivery) inside.
//!
//! SNS signs a canonical string built from named fields, each as `Name\nvalue\n`, in this order
//! (AWS, "Verifying the signatures of Amazon SNS messages"):
//! - `Notification`: Message, MessageId, Subject (only when present), Timestamp, TopicArn, Type;
//! - `SubscriptionConfirmation` and `UnsubscribeConfirmation`: Message, MessageId, SubscribeURL,
//!   Timestamp, Token, TopicArn, Type.
//!
//! `SignatureVersion` 1 is RSA PKCS#1 v1.5 with SHA-1, 2 with SHA-256; the key is the certificate at
//! `SigningCertURL`, which [`certs`](super::certs) only takes from SNS itself or from pinned files.
//! The topic is checked against the allow-list before anything is fetched, so a stranger's topic
//! costs nothing. A `SubscriptionConfirmation` is returned with its `SubscribeURL`: confirming (a GET
//! of that URL) is the caller's decision.
//!
//! SNS's `Timestamp` is not bounded here: SNS retries a delivery for up to an hour or more under its
//! delivery policy, and replays are absorbed by `MessageId`, which whoever stores the messages keeps
//! unique.
//!
//! The SES notification (`notificationType`, or `eventType` with configuration-set event publishing)
//! is parsed leniently: fields may be added by AWS, and unknown types are kept as `Other`.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, RsaParameters,
};
use serde::Deserialize;

use super::certs::{CertificateSource, SigningCertificate};
use super::{Personal, Rejected};

/// An SNS message as posted (the JSON body), before verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsEnvelope {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: Option<String>,
    pub signature: Option<String>,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: Option<String>,
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

/// Parses the JSON body of an SNS request (no verification).
pub fn parse_envelope(body: &[u8]) -> Result<SnsEnvelope, Rejected> {
    serde_json::from_slice(body).map_err(|e| Rejected::json("SNS message", &e))
}

/// The canonical string SNS signs for this message (module header).
pub fn string_to_sign(envelope: &SnsEnvelope) -> Result<String, Rejected> {
    let e = envelope;
    let missing = |name: &'static str| Rejected::malformed("SNS message", format!("no {name}"));
    let fields: Vec<(&str, &str)> = match e.kind.as_str() {
        "Notification" => {
            let mut f = vec![
                ("Message", e.message.as_str()),
                ("MessageId", &e.message_id),
            ];
            if let Some(subject) = &e.subject {
                f.push(("Subject", subject));
            }
            f.extend([
                ("Timestamp", e.timestamp.as_str()),
                ("TopicArn", &e.topic_arn),
                ("Type", &e.kind),
            ]);
            f
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => vec![
            ("Message", e.message.as_str()),
            ("MessageId", &e.message_id),
            (
                "SubscribeURL",
                e.subscribe_url.as_deref().ok_or(missing("SubscribeURL"))?,
            ),
            ("Timestamp", &e.timestamp),
            ("Token", e.token.as_deref().ok_or(missing("Token"))?),
            ("TopicArn", &e.topic_arn),
            ("Type", &e.kind),
        ],
        _ => {
            return Err(Rejected::malformed(
                "SNS message",
                format!(
                    "unknown Type {:?}",
                    e.kind.chars().take(40).collect::<String>()
                ),
            ));
        }
    };
    let mut out = String::new();
    for (name, value) in fields {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    }
    Ok(out)
}

/// The algorithm of a `SignatureVersion`.
fn algorithm(version: &str) -> Result<&'static RsaParameters, Rejected> {
    match version {
        "1" => Ok(&RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY),
        "2" => Ok(&RSA_PKCS1_2048_8192_SHA256),
        _ => Err(Rejected::malformed(
            "SignatureVersion",
            "neither 1 (SHA1withRSA) nor 2 (SHA256withRSA)",
        )),
    }
}

/// Checks the envelope's signature with `certificate` (pure: the certificate was looked up by the
/// caller, from the envelope's `SigningCertURL`).
pub fn verify_signature(
    envelope: &SnsEnvelope,
    certificate: &SigningCertificate,
    now: DateTime<Utc>,
) -> Result<(), Rejected> {
    let version = envelope
        .signature_version
        .as_deref()
        .ok_or(Rejected::Unsigned("SignatureVersion"))?;
    let signature = envelope
        .signature
        .as_deref()
        .ok_or(Rejected::Unsigned("Signature"))?;
    let algorithm = algorithm(version)?;
    let signature = STANDARD
        .decode(signature)
        .map_err(|e| Rejected::malformed("Signature", format!("not base64 ({e})")))?;
    let message = string_to_sign(envelope)?;
    certificate.verify(algorithm, message.as_bytes(), &signature, now)
}

/// An authentic SNS message from an allowed topic.
#[derive(Debug, Clone, PartialEq)]
pub enum SnsMessage {
    Notification(SnsNotification),
    /// SNS asks to confirm a subscription: a GET of `subscribe_url` confirms it.
    SubscriptionConfirmation {
        message_id: String,
        topic_arn: String,
        subscribe_url: String,
    },
    /// The subscription was removed.
    UnsubscribeConfirmation {
        message_id: String,
        topic_arn: String,
    },
}

/// A notification: the SNS fields and the published message, unparsed ([`SnsNotification::ses`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SnsNotification {
    /// SNS's id, unique per message: the idempotency key.
    pub message_id: String,
    pub topic_arn: String,
    pub timestamp: String,
    pub subject: Option<String>,
    /// The published message: for SES, a JSON document.
    pub message: String,
}

impl SnsNotification {
    /// The SES notification inside.
    pub fn ses(&self) -> Result<SesNotification, Rejected> {
        parse_ses(&self.message)
    }
}

/// Verifies SNS messages: topic allow-list, certificate, signature.
pub struct SnsVerifier {
    topics: BTreeSet<String>,
    certificates: CertificateSource,
}

impl SnsVerifier {
    /// Accepts messages from `topics` (ARNs) only, signed by a certificate from `certificates`.
    pub fn new(
        topics: impl IntoIterator<Item = impl Into<String>>,
        certificates: CertificateSource,
    ) -> Self {
        SnsVerifier {
            topics: topics.into_iter().map(Into::into).collect(),
            certificates,
        }
    }

    /// Parses and verifies a request body. Network only when the source fetches a certificate not
    /// yet cached.
    pub async fn verify(&self, body: &[u8], now: DateTime<Utc>) -> Result<SnsMessage, Rejected> {
        let envelope = parse_envelope(body)?;
        if !self.topics.contains(&envelope.topic_arn) {
            // Quoted and cut: the sender's text, which may end up in a log line.
            let topic: String = envelope.topic_arn.chars().take(256).collect();
            return Err(Rejected::UnknownTopic(format!("{topic:?}")));
        }
        let url = envelope
            .signing_cert_url
            .as_deref()
            .ok_or(Rejected::Unsigned("SigningCertURL"))?;
        let certificate = self.certificates.certificate(url).await?;
        verify_signature(&envelope, &certificate, now)?;
        into_message(envelope)
    }
}

fn into_message(e: SnsEnvelope) -> Result<SnsMessage, Rejected> {
    Ok(match e.kind.as_str() {
        "Notification" => SnsMessage::Notification(SnsNotification {
            message_id: e.message_id,
            topic_arn: e.topic_arn,
            timestamp: e.timestamp,
            subject: e.subject,
            message: e.message,
        }),
        "SubscriptionConfirmation" => SnsMessage::SubscriptionConfirmation {
            message_id: e.message_id,
            topic_arn: e.topic_arn,
            // Present: the signature covered it.
            subscribe_url: e.subscribe_url.unwrap_or_default(),
        },
        _ => SnsMessage::UnsubscribeConfirmation {
            message_id: e.message_id,
            topic_arn: e.topic_arn,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// The SES notification

/// Parses an SES notification (the `Message` of an SNS notification).
pub fn parse_ses(message: &str) -> Result<SesNotification, Rejected> {
    serde_json::from_str(message).map_err(|e| Rejected::json("SES notification", &e))
}

/// What SES reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SesNotificationType {
    Bounce,
    Complaint,
    Delivery,
    /// Other event-publishing types (Send, Reject, DeliveryDelay, Open, ...).
    #[serde(other)]
    Other,
}

/// An SES notification; the part named by `kind` is present.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesNotification {
    #[serde(rename = "notificationType", alias = "eventType")]
    pub kind: SesNotificationType,
    pub mail: SesMail,
    pub bounce: Option<SesBounce>,
    pub complaint: Option<SesComplaint>,
    pub delivery: Option<SesDelivery>,
}

/// The message the notification is about.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesMail {
    /// SES's message id (what SES answered `250 Ok <id>` with): to match the notice sent.
    pub message_id: String,
    pub timestamp: Option<String>,
    /// The envelope sender (MAIL FROM): with VERP, it carries the notice's token.
    pub source: Option<String>,
    /// The Return-Path, when SES reports it.
    pub return_path: Option<String>,
    /// The recipients: personal data.
    #[serde(default)]
    pub destination: Vec<Personal>,
    #[serde(default)]
    pub common_headers: SesCommonHeaders,
}

/// The headers SES extracts; only the ones needed to match a notice are read.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesCommonHeaders {
    /// The notice's own Message-ID header.
    pub message_id: Option<String>,
    pub return_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SesBounceType {
    Permanent,
    Transient,
    Undetermined,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesBounce {
    pub bounce_type: SesBounceType,
    pub bounce_sub_type: Option<String>,
    #[serde(default)]
    pub bounced_recipients: Vec<SesBouncedRecipient>,
    pub timestamp: Option<String>,
    pub feedback_id: Option<String>,
    pub reporting_mta: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesBouncedRecipient {
    /// Personal data.
    pub email_address: Personal,
    pub action: Option<String>,
    /// The enhanced status code (`5.1.1`).
    pub status: Option<String>,
    /// The remote server's answer: may quote the address, so personal.
    pub diagnostic_code: Option<Personal>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesComplaint {
    #[serde(default)]
    pub complained_recipients: Vec<SesRecipient>,
    pub complaint_feedback_type: Option<String>,
    pub complaint_sub_type: Option<String>,
    pub timestamp: Option<String>,
    pub feedback_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesRecipient {
    /// Personal data.
    pub email_address: Personal,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesDelivery {
    /// Personal data.
    #[serde(default)]
    pub recipients: Vec<Personal>,
    pub timestamp: Option<String>,
    /// The receiving server's answer: may quote the address, so personal.
    pub smtp_response: Option<Personal>,
    pub reporting_mta: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use serde_json::json;

    const SIGNER_KEY: &[u8] = include_bytes!("testdata/sns-test-signer.key.der");
    const SIGNER_CERT: &[u8] = include_bytes!("testdata/sns-test-signer.pem");
    const OTHER_KEY: &[u8] = include_bytes!("testdata/sns-test-other.key.der");
    const CERT_URL: &str = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem";
    const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:breach-notifier-bounces";

    /// PKCS#1 v1.5 with SHA-1 or SHA-256, as SNS signs (ring verifies SHA-1 but does not sign with
    /// it, hence the `rsa` crate here).
    fn rsa_sign(key: &[u8], version: &str, message: &[u8]) -> String {
        let key = rsa::RsaPrivateKey::from_pkcs8_der(key).unwrap();
        let (prefix, digest): (&[u8], _) = match version {
            "1" => (
                &[
                    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
                    0x04, 0x14,
                ],
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, message),
            ),
            _ => (
                &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ],
                ring::digest::digest(&ring::digest::SHA256, message),
            ),
        };
        let mut digest_info = prefix.to_vec();
        digest_info.extend_from_slice(digest.as_ref());
        let signature = key
            .sign(rsa::Pkcs1v15Sign::new_unprefixed(), &digest_info)
            .unwrap();
        STANDARD.encode(signature)
    }

    /// `fields` signed with `key` under `version`, as an SNS request body.
    fn signed(mut fields: serde_json::Value, key: &[u8], version: &str) -> Vec<u8> {
        fields["SignatureVersion"] = json!(version);
        fields["SigningCertURL"] = json!(CERT_URL);
        fields["Signature"] = json!("");
        let envelope: SnsEnvelope = serde_json::from_value(fields.clone()).unwrap();
        let text = string_to_sign(&envelope).unwrap();
        fields["Signature"] = json!(rsa_sign(key, version, text.as_bytes()));
        serde_json::to_vec(&fields).unwrap()
    }

    fn bounce_message() -> String {
        json!({
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [{
                    "emailAddress": "jane@example.org",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 <jane@example.org>: user unknown"
                }],
                "timestamp": "2026-12-02T05:00:01.000Z",
                "feedbackId": "feedback-1",
                "reportingMTA": "dsn; a8-1.smtp-out.amazonses.com",
                "remoteMtaIp": "192.0.2.1"
            },
            "mail": {
                "timestamp": "2026-12-02T05:00:00.000Z",
                "source": "b+token123@bounces.example.com",
                "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/example.com",
                "messageId": "0102018f-ses-id",
                "destination": ["jane@example.org"],
                "headersTruncated": false,
                "commonHeaders": {
                    "from": ["notices@example.com"],
                    "to": ["jane@example.org"],
                    "messageId": "<n.abc@notify.example.com>",
                    "subject": "Notice of Data Breach"
                }
            }
        })
        .to_string()
    }

    fn notification(message: &str) -> serde_json::Value {
        json!({
            "Type": "Notification",
            "MessageId": "5a4c0b1e-0000-0000-0000-000000000001",
            "TopicArn": TOPIC,
            "Message": message,
            "Timestamp": "2026-12-02T05:00:02.000Z",
            "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"
        })
    }

    fn verifier() -> SnsVerifier {
        let pinned =
            CertificateSource::pinned_pem([("SimpleNotificationService-test.pem", SIGNER_CERT)])
                .unwrap();
        SnsVerifier::new([TOPIC], pinned)
    }

    fn now() -> DateTime<Utc> {
        // Within the test certificates' validity (2026 to 2126).
        DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[tokio::test]
    async fn signature_versions_1_and_2_are_accepted_and_the_bounce_parsed() {
        let v = verifier();
        for version in ["1", "2"] {
            let body = signed(notification(&bounce_message()), SIGNER_KEY, version);
            let SnsMessage::Notification(n) = v.verify(&body, now()).await.unwrap() else {
                panic!("a notification")
            };
            assert_eq!(n.topic_arn, TOPIC);
            assert_eq!(n.message_id, "5a4c0b1e-0000-0000-0000-000000000001");
            let ses = n.ses().unwrap();
            assert_eq!(ses.kind, SesNotificationType::Bounce);
            assert_eq!(ses.mail.message_id, "0102018f-ses-id");
            assert_eq!(
                ses.mail.source.as_deref(),
                Some("b+token123@bounces.example.com")
            );
            assert_eq!(
                ses.mail.common_headers.message_id.as_deref(),
                Some("<n.abc@notify.example.com>")
            );
            let bounce = ses.bounce.as_ref().unwrap();
            assert_eq!(bounce.bounce_type, SesBounceType::Permanent);
            let r = &bounce.bounced_recipients[0];
            assert_eq!(r.email_address.expose(), "jane@example.org");
            assert_eq!(r.status.as_deref(), Some("5.1.1"));
            assert!(r.diagnostic_code.as_ref().unwrap().expose().contains("550"));
            let debug = format!("{ses:?}");
            assert!(!debug.contains("jane@"), "no address in Debug: {debug}");
        }
    }

    #[tokio::test]
    async fn a_subject_is_signed_when_present() {
        let mut fields = notification(&bounce_message());
        fields["Subject"] = json!("Amazon SES Email Event Notification");
        let body = signed(fields, SIGNER_KEY, "2");
        let SnsMessage::Notification(n) = verifier().verify(&body, now()).await.unwrap() else {
            panic!("a notification")
        };
        assert_eq!(
            n.subject.as_deref(),
            Some("Amazon SES Email Event Notification")
        );
        // Removing it afterwards breaks the signature.
        let mut tampered: serde_json::Value = serde_json::from_slice(&body).unwrap();
        tampered.as_object_mut().unwrap().remove("Subject");
        let tampered = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(
            verifier().verify(&tampered, now()).await,
            Err(Rejected::BadSignature)
        );
    }

    #[tokio::test]
    async fn tampered_wrong_key_unsigned_and_unknown_version_are_rejected() {
        let v = verifier();
        let body = signed(notification(&bounce_message()), SIGNER_KEY, "2");
        let mut tampered: serde_json::Value = serde_json::from_slice(&body).unwrap();
        tampered["Message"] = json!(bounce_message().replace("Permanent", "Transient"));
        let tampered = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(
            v.verify(&tampered, now()).await,
            Err(Rejected::BadSignature)
        );

        let wrong = signed(notification(&bounce_message()), OTHER_KEY, "1");
        assert_eq!(v.verify(&wrong, now()).await, Err(Rejected::BadSignature));

        let mut unsigned = notification(&bounce_message());
        unsigned["SigningCertURL"] = json!(CERT_URL);
        unsigned["SignatureVersion"] = json!("2");
        let unsigned = serde_json::to_vec(&unsigned).unwrap();
        assert_eq!(
            v.verify(&unsigned, now()).await,
            Err(Rejected::Unsigned("Signature"))
        );

        let mut v3: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v3["SignatureVersion"] = json!("3");
        let v3 = serde_json::to_vec(&v3).unwrap();
        assert!(matches!(
            v.verify(&v3, now()).await,
            Err(Rejected::Malformed {
                what: "SignatureVersion",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn foreign_certificate_urls_and_topics_are_rejected() {
        let v = verifier();
        // Signed correctly, but pointing at a certificate on another host with the pinned name.
        let mut forged = notification(&bounce_message());
        forged["SignatureVersion"] = json!("2");
        forged["Signature"] = json!("AAAA");
        forged["SigningCertURL"] =
            json!("https://attacker.example/SimpleNotificationService-test.pem");
        let forged = serde_json::to_vec(&forged).unwrap();
        let err = v.verify(&forged, now()).await.unwrap_err();
        assert!(matches!(err, Rejected::CertificateUrl(_)), "{err}");

        let mut other_topic = notification(&bounce_message());
        other_topic["TopicArn"] = json!("arn:aws:sns:eu-west-1:999999999999:someone-else");
        let body = signed(other_topic, SIGNER_KEY, "2");
        assert!(matches!(
            v.verify(&body, now()).await,
            Err(Rejected::UnknownTopic(_))
        ));

        // An SNS URL whose certificate is not pinned.
        let mut unpinned: serde_json::Value =
            serde_json::from_slice(&signed(notification(&bounce_message()), SIGNER_KEY, "2"))
                .unwrap();
        unpinned["SigningCertURL"] =
            json!("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-other.pem");
        let unpinned = serde_json::to_vec(&unpinned).unwrap();
        assert!(matches!(
            v.verify(&unpinned, now()).await,
            Err(Rejected::CertificateInvalid(_))
        ));
    }

    #[tokio::test]
    async fn a_certificate_outside_its_validity_is_refused() {
        let body = signed(notification(&bounce_message()), SIGNER_KEY, "2");
        let long_ago = DateTime::parse_from_rfc3339("2001-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        assert!(matches!(
            verifier().verify(&body, long_ago).await,
            Err(Rejected::CertificateInvalid(_))
        ));
    }

    #[tokio::test]
    async fn a_subscription_confirmation_returns_its_url() {
        let url =
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=t0k";
        let fields = json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "t0k",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
            "SubscribeURL": url,
            "Timestamp": "2026-12-02T05:00:00.000Z"
        });
        for version in ["1", "2"] {
            let body = signed(fields.clone(), SIGNER_KEY, version);
            assert_eq!(
                verifier().verify(&body, now()).await,
                Ok(SnsMessage::SubscriptionConfirmation {
                    message_id: "165545c9-2a5c-472c-8df2-7ff2be2b3b1b".into(),
                    topic_arn: TOPIC.into(),
                    subscribe_url: url.into(),
                })
            );
        }
        // The token is signed: another one does not verify.
        let mut tampered: serde_json::Value =
            serde_json::from_slice(&signed(fields, SIGNER_KEY, "2")).unwrap();
        tampered["Token"] = json!("other");
        let tampered = serde_json::to_vec(&tampered).unwrap();
        assert_eq!(
            verifier().verify(&tampered, now()).await,
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn the_string_to_sign_follows_the_documented_order() {
        let envelope: SnsEnvelope = serde_json::from_value(json!({
            "Type": "Notification", "MessageId": "m", "TopicArn": "t", "Subject": "s",
            "Message": "line1\nline2", "Timestamp": "ts"
        }))
        .unwrap();
        assert_eq!(
            string_to_sign(&envelope).unwrap(),
            "Message\nline1\nline2\nMessageId\nm\nSubject\ns\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
        );
        let envelope: SnsEnvelope = serde_json::from_value(json!({
            "Type": "UnsubscribeConfirmation", "MessageId": "m", "TopicArn": "t", "Message": "x",
            "Timestamp": "ts", "SubscribeURL": "u", "Token": "k"
        }))
        .unwrap();
        assert_eq!(
            string_to_sign(&envelope).unwrap(),
            "Message\nx\nMessageId\nm\nSubscribeURL\nu\nTimestamp\nts\nToken\nk\nTopicArn\nt\nType\nUnsubscribeConfirmation\n"
        );
    }

    #[test]
    fn complaints_deliveries_and_event_publishing_parse() {
        let complaint = parse_ses(
            &json!({
                "notificationType": "Complaint",
                "complaint": {
                    "complainedRecipients": [{"emailAddress": "kim@example.org"}],
                    "complaintFeedbackType": "abuse",
                    "timestamp": "2026-12-02T05:00:00Z",
                    "feedbackId": "f"
                },
                "mail": {"messageId": "ses-2", "source": "b+t@bounces.example.com",
                         "destination": ["kim@example.org"]}
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(complaint.kind, SesNotificationType::Complaint);
        let c = complaint.complaint.unwrap();
        assert_eq!(
            c.complained_recipients[0].email_address.expose(),
            "kim@example.org"
        );
        assert_eq!(c.complaint_feedback_type.as_deref(), Some("abuse"));

        let delivery = parse_ses(
            &json!({
                "eventType": "Delivery",
                "delivery": {"recipients": ["lee@example.org"], "smtpResponse": "250 ok",
                             "timestamp": "2026-12-02T05:00:00Z", "processingTimeMillis": 500},
                "mail": {"messageId": "ses-3", "commonHeaders": {"messageId": "<n.x@notify>"}}
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(delivery.kind, SesNotificationType::Delivery);
        assert_eq!(
            delivery.delivery.unwrap().recipients[0].expose(),
            "lee@example.org"
        );

        let other = parse_ses(r#"{"eventType":"DeliveryDelay","mail":{"messageId":"m"}}"#).unwrap();
        assert_eq!(other.kind, SesNotificationType::Other);
        let transient = parse_ses(
            r#"{"notificationType":"Bounce","mail":{"messageId":"m"},
                "bounce":{"bounceType":"Transient","bouncedRecipients":[]}}"#,
        )
        .unwrap();
        assert_eq!(
            transient.bounce.unwrap().bounce_type,
            SesBounceType::Transient
        );

        let err = parse_ses(r#"{"notificationType":"Bounce","mail":{"destination":["jane@x"]}}"#)
            .unwrap_err();
        assert!(!err.to_string().contains("jane"), "{err}");
    }
}
