//! Bounces end to end through a real Postfix (common::postfix) on PostgreSQL: the daemon sends every
//! notice with its signed VERP envelope sender to Postfix over STARTTLS; Postfix delivers most
//! domains to a sink and one to a server that refuses every recipient, writes its own DSNs for the
//! refused ones and pipes them, through its transport map, into `breach-notifier bounce ingest` (run
//! as `nobody`, as pipe(8) requires). While the database is unreachable the ingest exits 75 and
//! Postfix keeps the DSNs; once it is back, Postfix's retry stores them. Processing then moves
//! exactly the refused recipients to `bounced`, with postal follow-up; the rest stay `sent`.
//!
//! PostgreSQL only: the pipe runs as another user, which reaches PostgreSQL over TCP like any
//! client, while a SQLite file would have to be handed to that user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use breach_notifier::bounce::process::process_pending;
use breach_notifier::config::{BounceKeys, SmtpTls};
use breach_notifier::store::RecipientStatus;

use crate::common::postfix::{PipeCommand, PostfixInstance, PostfixOptions, wait_until};
use crate::common::smtp::{Behaviour, Script, SmtpServer};
use crate::common::{self, TestApp};

const KEY: &[u8] = b"postfix-end-to-end-test-key-0123456789";

/// The binary, a key and a configuration where the pipe user can read them.
struct PipeSide {
    dir: tempfile::TempDir,
}

impl PipeSide {
    fn new(url: &str) -> PipeSide {
        let dir = tempfile::Builder::new()
            .prefix("bn-pipe")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(common::binary(), dir.path().join("breach-notifier")).unwrap();
        std::fs::write(dir.path().join("bounce.key"), KEY).unwrap();
        let side = PipeSide { dir };
        side.point_at(url);
        side
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The configuration `bounce ingest` reads, against the database `url`.
    fn point_at(&self, url: &str) {
        let toml = format!(
            "[database]\nurl = \"{url}\"\n\n[bounces]\ndomain = \"bounce.test\"\nkey_files = [\"{}\"]\n",
            self.path("bounce.key").display()
        );
        std::fs::write(self.path("bn.toml"), toml).unwrap();
        for name in ["bn.toml", "bounce.key", "breach-notifier"] {
            let mode = if name == "breach-notifier" {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
    }

    fn command(&self) -> PipeCommand {
        let bin = self.path("breach-notifier").display().to_string();
        let config = self.path("bn.toml").display().to_string();
        PipeCommand::Argv(
            [
                &bin,
                "--config",
                &config,
                "bounce",
                "ingest",
                "--envelope-to",
                "${original_recipient}",
            ]
            .map(String::from)
            .to_vec(),
        )
    }
}

async fn reports_stored(t: &TestApp) -> i64 {
    let counts = t.store.bounce_counts(0).await.unwrap();
    counts.pending + counts.reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_dsns_bounce_exactly_the_refused_recipients() {
    let t = TestApp::postgres().await;
    let sink = SmtpServer::start(Script::new()).await;
    let refuser = SmtpServer::start(Script::new().default_behaviour(Behaviour::reply(
        550,
        "5.1.1 <recipient>: Recipient address rejected: User unknown",
    )))
    .await;
    // The database is "down" for the pipe at first: a port where nothing listens.
    let pipe = PipeSide::new("postgres://postgres@127.0.0.1:1/none");
    let postfix = PostfixInstance::start(PostfixOptions::new(
        sink.port(),
        refuser.port(),
        pipe.command(),
    ));

    let mut settings = t.settings(&sink);
    settings.transport.smtp.port = postfix.port();
    settings.transport.smtp.tls = SmtpTls::Starttls;
    settings.transport.smtp.host = "localhost".into();
    settings.transport.smtp.ca_file = Some(postfix.ca_file());
    settings.bounces.domain = Some("bounce.test".into());
    settings.bounces.keys = BounceKeys(vec![KEY.to_vec()]);

    let mut rows: Vec<_> = (0..6).map(|i| common::person(i, "ok.test")).collect();
    rows.extend((6..9).map(|i| common::person(i, "refuse.test")));
    let spec = common::spec(None, "Your data was exposed.");
    let campaign = t.campaign(&spec).with(&rows).started().await;
    t.run_until_idle(&settings, Duration::from_secs(60)).await;
    assert_eq!(
        t.progress(campaign).await.sent,
        9,
        "Postfix accepted all nine"
    );

    // Postfix's DSNs reach the pipe; the ingest cannot store them and answers 75.
    let deferred = wait_until(Duration::from_secs(30), || {
        postfix.log().matches("relay=bouncepipe").count() >= 3
            && postfix.log().contains("status=deferred")
    })
    .await;
    if !deferred {
        postfix.fail("the pipe was not tried with the database down");
    }
    assert_eq!(reports_stored(&t).await, 0);

    // The database is back: Postfix's next retry stores the three DSNs.
    pipe.point_at(&t.url);
    postfix.flush();
    let mut stored = false;
    for _ in 0..60 {
        if reports_stored(&t).await == 3 {
            stored = true;
            break;
        }
        postfix.flush();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !stored {
        postfix.fail("the DSNs were not stored after the database came back");
    }
    assert!(wait_until(Duration::from_secs(10), || postfix.queue_is_empty()).await);

    let round = process_pending(&t.store, &settings.bounces, "test", 10)
        .await
        .unwrap();
    assert_eq!(
        (round.reports, round.applied.bounced, round.unmatched),
        (3, 3, 0)
    );
    for r in t.store.recipients_after(campaign, 0, 100).await.unwrap() {
        let refused = r.email.as_deref().unwrap().ends_with("@refuse.test");
        let want = if refused {
            RecipientStatus::Bounced
        } else {
            RecipientStatus::Sent
        };
        assert_eq!(r.status, want, "recipient {}", r.id);
        assert_eq!(r.postal_followup, refused);
    }
    let p = t.progress(campaign).await;
    assert_eq!((p.sent, p.bounced), (6, 3));
    assert!(Path::new(&pipe.path("bn.toml")).exists());
}
