//! DKIM signing, checked the way a receiving server checks it: every notice the daemon sends (and every
//! `test-send` seed copy) carries a signature that verifies with the public key the operator publishes
//! in DNS, for RSA and Ed25519 keys, over a real SMTP conversation. The verifier
//! (tests/it/common/dkim.rs) is written from RFC 6376, not from the signer, and is shown to reject a
//! changed body and a changed header, so a pass means something.

use crate::common;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use breach_notifier::config::DkimSettings;
use common::dkim::{PublicKey, verify};
use common::smtp::{Script, SmtpServer};
use common::*;

/// The RSA test key (2048 bits, PKCS#1 PEM, made for these tests only) and its public half.
fn rsa_key() -> (std::path::PathBuf, PublicKey) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dkim-test-rsa.pem");
    let pem = std::fs::read_to_string(&path).unwrap();
    let der = STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let pair = ring::signature::RsaKeyPair::from_der(&der).expect("a PKCS#1 RSA key");
    (path, PublicKey::Rsa(pair.public().as_ref().to_vec()))
}

/// A fresh Ed25519 key in the form the configuration takes (base64 of the 32-byte seed).
fn ed25519_key(dir: &Path) -> (std::path::PathBuf, PublicKey) {
    let seed: [u8; 32] = rand::random();
    let path = dir.join("dkim-ed25519.key");
    std::fs::write(&path, STANDARD.encode(seed)).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    use ring::signature::KeyPair;
    (
        path,
        PublicKey::Ed25519(pair.public_key().as_ref().to_vec()),
    )
}

fn dkim(key_file: &Path, algorithm: &str) -> DkimSettings {
    DkimSettings {
        key_file: key_file.to_path_buf(),
        selector: "notices2026".into(),
        domain: "example.com".into(),
        algorithm: algorithm.into(),
    }
}

/// Sends a small campaign signed with `settings` and checks every message against `public`.
async fn every_notice_verifies(dkim_settings: DkimSettings, public: &PublicKey, algorithm: &str) {
    let smtp = SmtpServer::start(Script::new()).await;
    let t = common::sqlite().await;
    let rows: Vec<_> = (0..5).map(|i| person(i, "example.org")).collect();
    let id = t
        .campaign(&spec(None, "Your data   was exposed.\t"))
        .with(&rows)
        .started()
        .await;
    let mut s = t.settings(&smtp);
    s.dkim = Some(dkim_settings);
    t.run_until_idle(&s, Duration::from_secs(60)).await;
    assert_eq!(t.progress(id).await.sent, 5);

    let received = smtp.received();
    assert_eq!(received.len(), 5);
    for m in &received {
        let sig = verify(&m.data, public).unwrap_or_else(|e| panic!("{e}\n{}", m.text()));
        assert_eq!(sig.algorithm, format!("{algorithm}-sha256"));
        assert_eq!(
            (sig.domain.as_str(), sig.selector.as_str()),
            ("example.com", "notices2026")
        );
        for h in ["from", "to", "subject", "date", "message-id"] {
            assert!(
                sig.headers.iter().any(|s| s == h),
                "{h} is signed: {:?}",
                sig.headers
            );
        }
    }

    // The verifier is not a rubber stamp: a changed body or a changed header fails.
    let original = received[0].data.clone();
    let body_at = original.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut body_changed = original.clone();
    let i = body_changed[body_at..]
        .iter()
        .position(|b| b.is_ascii_alphabetic())
        .unwrap()
        + body_at;
    body_changed[i] ^= 0x20;
    assert!(
        verify(&body_changed, public)
            .unwrap_err()
            .contains("body hash")
    );
    let text = String::from_utf8(original).unwrap();
    let header_changed = text.replacen("Subject: ", "Subject: Re: ", 1);
    assert_ne!(header_changed, text);
    assert!(
        verify(header_changed.as_bytes(), public)
            .unwrap_err()
            .contains("does not verify")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signatures_verify_with_the_published_key() {
    let (key_file, public) = rsa_key();
    every_notice_verifies(dkim(&key_file, "rsa"), &public, "rsa").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_signatures_verify_with_the_published_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public) = ed25519_key(dir.path());
    every_notice_verifies(dkim(&key_file, "ed25519"), &public, "ed25519").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_send_seed_copies_are_signed_like_the_notices() {
    let smtp = SmtpServer::start(Script::new()).await;
    let t = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public) = ed25519_key(dir.path());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let command = |args: &[&str]| {
        let mut c = common::command_with_relay(dir.path(), &t.url, smtp.port());
        c.env("BREACH_NOTIFIER__DKIM__KEY_FILE", &key_file)
            .env("BREACH_NOTIFIER__DKIM__SELECTOR", "notices2026")
            .env("BREACH_NOTIFIER__DKIM__DOMAIN", "example.com")
            .env("BREACH_NOTIFIER__DKIM__ALGORITHM", "ed25519")
            .args(args);
        c
    };
    let created = command(&[
        "campaign",
        "create",
        examples.join("campaign.toml").to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let mut send = command(&[
        "test-send",
        "--campaign",
        "1",
        "--to",
        "seed@example-mortgage.com",
    ]);
    let out = tokio::task::spawn_blocking(move || send.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = smtp.received();
    assert!(!received.is_empty());
    for m in &received {
        verify(&m.data, &public).unwrap_or_else(|e| panic!("{e}"));
    }
}
