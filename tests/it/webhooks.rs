//! The bounce webhooks over real HTTP on both backends: SendGrid's signed event webhook and SES
//! notifications through SNS, signed here with locally made keys. Unsigned, forged and replayed
//! requests change nothing; a signed bounce moves its recipient to `bounced` once processed.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use breach_notifier::bounce::process::process_pending;
use breach_notifier::config::{BounceSettings, HttpSettings, Settings};
use breach_notifier::ops::http::webhooks::routes::Webhooks;
use breach_notifier::ops::http::webhooks::sns::{parse_envelope, string_to_sign};
use breach_notifier::ops::http::{self, AppState, Readiness};
use breach_notifier::ops::metrics::Metrics;
use breach_notifier::store::RecipientStatus;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rsa::pkcs8::DecodePrivateKey;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::common::smtp::{Script, SmtpServer};
use crate::common::{self, TestApp};

backends!(
    multi_thread:
    without_keys_every_webhook_request_is_refused,
    a_signed_sendgrid_bounce_is_stored_once_and_bounces_its_recipient,
    a_signed_ses_bounce_is_stored_once_and_bounces_its_recipient,
);

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:breach-notifier-bounces";
const SNS_KEY: &[u8] =
    include_bytes!("../../src/ops/http/webhooks/testdata/sns-test-signer.key.der");
const OTHER_KEY: &[u8] =
    include_bytes!("../../src/ops/http/webhooks/testdata/sns-test-other.key.der");
const SNS_CERT: &str = "src/ops/http/webhooks/testdata/sns-test-signer.pem";

/// The daemon's HTTP endpoint on a free loopback port, with the webhooks of `bounces`.
async fn serve(t: &TestApp, bounces: &BounceSettings) -> (http::Server, u16, watch::Sender<bool>) {
    let settings = HttpSettings {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_remote: false,
        tokens: Vec::new(),
    };
    let listener = http::bind(&settings).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopping) = watch::channel(false);
    let state = AppState {
        metrics: Arc::new(Metrics::new()),
        readiness: Arc::new(Readiness::new(
            t.store.clone(),
            Settings::default().transport,
        )),
        stopping,
        webhooks: Some(Webhooks::new(t.store.clone(), bounces).unwrap()),
        page: None,
    };
    (http::serve(listener, state), port, stop)
}

/// One POST over a fresh connection; (status, body).
async fn post(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One notice sent over SMTP: (recipient id, envelope sender, Message-ID).
async fn one_sent(t: &TestApp) -> (i64, String, String) {
    let smtp = SmtpServer::start(Script::new()).await;
    let spec = common::spec(None, "Your data was exposed.");
    let id = t
        .campaign(&spec)
        .with(&[common::person(1, "example.net")])
        .started()
        .await;
    t.run_until_idle(&t.settings(&smtp), Duration::from_secs(30))
        .await;
    let r = t.store.recipients_after(id, 0, 10).await.unwrap().remove(0);
    let m = smtp.received().remove(0);
    (r.id, m.mail_from, m.message_id.unwrap())
}

async fn without_keys_every_webhook_request_is_refused(t: TestApp) {
    let (server, port, _stop) = serve(&t, &BounceSettings::default()).await;
    for path in ["/webhooks/sendgrid", "/webhooks/ses"] {
        let (status, body) = post(port, path, &[], b"[]").await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("not configured"), "{body}");
    }
    server.shutdown().await;
}

/// A P-256 key pair and its public key as SendGrid shows it (base64 SubjectPublicKeyInfo).
fn sendgrid_key() -> (EcdsaKeyPair, String) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // The DER prefix of a P-256 SubjectPublicKeyInfo, then the uncompressed point.
    let mut spki = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.extend_from_slice(pair.public_key().as_ref());
    (pair, STANDARD.encode(spki))
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn sendgrid_headers(pair: &EcdsaKeyPair, body: &[u8]) -> Vec<(&'static str, String)> {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let mut signed = timestamp.clone().into_bytes();
    signed.extend_from_slice(body);
    let signature = pair.sign(&SystemRandom::new(), &signed).unwrap();
    vec![
        (
            "X-Twilio-Email-Event-Webhook-Signature",
            STANDARD.encode(signature.as_ref()),
        ),
        ("X-Twilio-Email-Event-Webhook-Timestamp", timestamp),
    ]
}

async fn a_signed_sendgrid_bounce_is_stored_once_and_bounces_its_recipient(t: TestApp) {
    let (recipient, _, message_id) = one_sent(&t).await;
    let (pair, public) = sendgrid_key();
    let bounces = BounceSettings {
        sendgrid_key: Some(public),
        ..Default::default()
    };
    let (server, port, _stop) = serve(&t, &bounces).await;
    let body = json!([
        {"event": "delivered", "email": "user1@example.net", "smtp-id": message_id, "sg_event_id": "e1"},
        {"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 user unknown",
         "email": "user1@example.net", "smtp-id": message_id, "sg_event_id": "e2"}
    ])
    .to_string()
    .into_bytes();
    let path = "/webhooks/sendgrid";
    let (status, said) = post(port, path, &[], &body).await;
    assert_eq!(status, 403, "unsigned: {said}");
    let mut tampered = body.clone();
    tampered[3] ^= 1;
    let (status, _) = post(port, path, &sendgrid_headers(&pair, &body), &tampered).await;
    assert_eq!(status, 403, "tampered");
    let signed = sendgrid_headers(&pair, &body);
    let (status, said) = post(port, path, &signed, &body).await;
    assert_eq!((status, said.as_str()), (200, "stored 2 of 2 events\n"));
    // The same request again (a replay within the window) stores nothing new.
    let (status, said) = post(port, path, &signed, &body).await;
    assert_eq!((status, said.as_str()), (200, "stored 0 of 2 events\n"));
    server.shutdown().await;

    let round = process_pending(&t.store, &bounces, "test", 10)
        .await
        .unwrap();
    assert_eq!((round.reports, round.applied.bounced), (2, 1));
    let r = t.store.recipient(recipient).await.unwrap().unwrap();
    assert_eq!(r.status, RecipientStatus::Bounced);
}

/// An SNS notification carrying `message`, signed (SignatureVersion 2) with `key`.
fn sns_body(message: &str, key: &[u8]) -> Vec<u8> {
    let mut fields = json!({
        "Type": "Notification",
        "MessageId": "5a4c0b1e-0000-0000-0000-000000000001",
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": "2026-12-02T05:00:02.000Z",
        "SignatureVersion": "2",
        "Signature": "",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/sns-test-signer.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe"
    });
    let envelope = parse_envelope(&serde_json::to_vec(&fields).unwrap()).unwrap();
    let text = string_to_sign(&envelope).unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs8_der(key).unwrap();
    // PKCS#1 v1.5 over a SHA-256 DigestInfo (its DER prefix, then the digest).
    let mut digest_info = hex_bytes("3031300d060960864801650304020105000420");
    digest_info
        .extend_from_slice(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
    let signature = key
        .sign(rsa::Pkcs1v15Sign::new_unprefixed(), &digest_info)
        .unwrap();
    fields["Signature"] = json!(STANDARD.encode(signature));
    serde_json::to_vec(&fields).unwrap()
}

async fn a_signed_ses_bounce_is_stored_once_and_bounces_its_recipient(t: TestApp) {
    let (recipient, envelope_from, message_id) = one_sent(&t).await;
    let bounces = BounceSettings {
        ses_topic_arns: vec![TOPIC.into()],
        ses_certificate_files: vec![
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SNS_CERT),
        ],
        ..Default::default()
    };
    let (server, port, _stop) = serve(&t, &bounces).await;
    let message = json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "user1@example.net", "status": "5.1.1",
                                          "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"source": envelope_from, "commonHeaders": {"messageId": message_id}}
    })
    .to_string();
    let path = "/webhooks/ses";
    let (status, _) = post(port, path, &[], &sns_body(&message, OTHER_KEY)).await;
    assert_eq!(status, 403, "signed by another key");
    let body = sns_body(&message, SNS_KEY);
    let (status, said) = post(port, path, &[], &body).await;
    assert_eq!(status, 200, "{said}");
    assert!(said.starts_with("stored as report"), "{said}");
    let (status, said) = post(port, path, &[], &body).await;
    assert_eq!((status, said.as_str()), (200, "already stored\n"));
    server.shutdown().await;

    let round = process_pending(&t.store, &bounces, "test", 10)
        .await
        .unwrap();
    assert_eq!((round.reports, round.applied.bounced), (1, 1));
    let r = t.store.recipient(recipient).await.unwrap().unwrap();
    assert_eq!(r.status, RecipientStatus::Bounced);
}
