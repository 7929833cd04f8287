//! `breach-notifier test-send`: rendered samples reach the seed mailboxes through the configured
//! transport (a real SMTP conversation here), under Message-IDs of their own, and no recipient changes.

use crate::common;

use std::path::Path;
use std::time::Duration;

use breach_notifier::store::{CampaignState, RecipientStatus};
use common::smtp::{Script, SmtpServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_reach_the_seed_mailboxes_and_touch_no_recipient() {
    let t = common::sqlite().await;
    let smtp = SmtpServer::start(Script::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let command = |args: &[&str]| {
        let mut c = common::command_with_relay(dir.path(), &t.url, smtp.port());
        c.args(args);
        c
    };
    let bn = |args: &[&str]| command(args).output().unwrap();
    let created = bn(&[
        "campaign",
        "create",
        examples.join("campaign.toml").to_str().unwrap(),
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let imported = bn(&[
        "import",
        "--campaign",
        "1",
        examples.join("recipients.csv").to_str().unwrap(),
    ]);
    assert!(imported.status.success());
    let before = t.store.progress(Some(1)).await.unwrap();

    // The SMTP server runs on this runtime: wait for the child off the runtime's threads.
    let mut test_send = command(&[
        "test-send",
        "--campaign",
        "1",
        "--to",
        "privacy-team@example-mortgage.com",
        "--to",
        "legal@example-mortgage.com",
    ]);
    let sent = tokio::task::spawn_blocking(move || test_send.output().unwrap())
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // One sample per notice (en-US and es-US, in general and in the US-MA variant) to each of the
    // two seeds.
    assert!(smtp.wait_for(8, Duration::from_secs(10)).await, "{out}");
    let received = smtp.received();
    assert_eq!(received.len(), 8);
    for m in &received {
        assert!(
            m.rcpt_to[0].ends_with("@example-mortgage.com"),
            "only seeds: {:?}",
            m.rcpt_to
        );
        let id = m.message_id.clone().unwrap();
        assert!(
            id.starts_with("<bn-test.1."),
            "a test Message-ID, never a real notice's: {id}"
        );
    }
    let subjects: Vec<String> = received
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains("Notice of Data Breach")),
        "{subjects:?}"
    );
    assert!(
        out.lines().filter(|l| l.starts_with("sent sample")).count() == 8,
        "{out}"
    );
    for notice in ["(en-US,", "(es-US,", "(US-MA/en-US,", "(US-MA/es-US,"] {
        assert_eq!(
            out.matches(notice).count(),
            2,
            "{notice} to each seed: {out}"
        );
    }
    // The Massachusetts samples are the variant: no description of what happened.
    let ma: Vec<_> = received
        .iter()
        .filter(|m| {
            String::from_utf8_lossy(&m.data).contains("Your Rights Under Massachusetts Law")
        })
        .collect();
    assert_eq!(ma.len(), 2, "the English US-MA sample to each seed");
    assert!(
        ma.iter()
            .all(|m| !String::from_utf8_lossy(&m.data).contains("What Happened")),
        "the variant, not the general notice"
    );

    // Nothing about the campaign or its recipients changed.
    assert_eq!(t.store.progress(Some(1)).await.unwrap(), before);
    let c = t.store.require_campaign(1).await.unwrap();
    assert_eq!(c.state, CampaignState::Draft);
    let r = t
        .store
        .recipient_by_customer(1, "C00000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status, r.attempts, r.message_id),
        (RecipientStatus::Queued, 0, None)
    );
    assert!(t.store.attempts(r.id).await.unwrap().is_empty());
}

#[test]
fn a_bad_seed_address_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::sqlite_url(dir.path());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let bn = |args: &[&str]| common::cli(dir.path(), &url).args(args).output().unwrap();
    assert!(bn(&["migrate"]).status.success());
    assert!(
        bn(&[
            "campaign",
            "create",
            examples.join("campaign.toml").to_str().unwrap()
        ])
        .status
        .success()
    );
    let o = bn(&["test-send", "--campaign", "1", "--to", "not an address"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.trim_end()
            .ends_with("error: --to \"not an address\" is not a valid email address"),
        "{err}"
    );
    assert!(!dir.path().join("outbox").exists(), "nothing was written");
}
