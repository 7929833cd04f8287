//! No personal data in logs: a leaked address in a log is a second breach. Whole campaigns run end to
//! end through the binary at `info` (the most verbose level that is not debug or trace), in text and
//! JSON log formats, over the file outbox and over SMTP with failures and retries; nothing any command
//! prints may contain a recipient's address or name.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::smtp::{Behaviour, Script, SmtpServer};

/// Every address and name in the example list, and the full names as they would be printed.
fn personal_data() -> BTreeSet<String> {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recipients.csv");
    let mut reader = csv::Reader::from_path(list).unwrap();
    let mut out = BTreeSet::new();
    for row in reader.records() {
        let row = row.unwrap();
        let (email, first, last) = (&row[1], &row[2], &row[3]);
        if !email.is_empty() {
            out.insert(email.to_string());
            out.insert(email.split('@').next().unwrap().to_string());
        }
        out.insert(format!("{first} {last}"));
        out.insert(last.to_string());
    }
    out
}

fn assert_clean(what: &str, o: &Output, personal: &BTreeSet<String>) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for item in personal {
        assert!(
            !text.contains(item.as_str()),
            "{what} printed personal data {item:?}:\n{text}"
        );
    }
}

fn bn(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = common::command(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn the_demo_logs_no_personal_data_in_either_format() {
    let personal = personal_data();
    assert!(personal.len() > 1000, "the check has data to look for");
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let o = bn(
            dir.path(),
            &[
                ("BREACH_NOTIFIER__LOG__LEVEL", "info"),
                ("BREACH_NOTIFIER__LOG__FORMAT", format),
            ],
            &["demo"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(!o.stderr.is_empty(), "the demo logged something to check");
        assert_clean(&format!("demo ({format} logs)"), &o, &personal);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_campaign_with_failures_logs_no_personal_data() {
    let personal = personal_data();
    // Relays echo addresses in their replies; those replies are evidence in the database, never logs.
    let script = Script::new()
        .when(
            |a| a.contains("00000001"),
            Behaviour::reply(
                550,
                "5.1.1 <customer00000001@example.com>: Recipient address rejected",
            ),
        )
        .when(
            |a| a.ends_with("example.net"),
            Behaviour::fail_first(1, 451, "4.7.1 <greylisted> try again"),
        );
    let smtp = SmtpServer::start(script).await;
    let t = common::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let port = smtp.port().to_string();
    let env = [
        ("BREACH_NOTIFIER__DATABASE__URL", t.url.as_str()),
        ("BREACH_NOTIFIER__LOG__LEVEL", "info"),
        ("BREACH_NOTIFIER__LOG__FORMAT", "json"),
        ("BREACH_NOTIFIER__TRANSPORT__KIND", "smtp"),
        ("BREACH_NOTIFIER__TRANSPORT__SMTP__HOST", "127.0.0.1"),
        ("BREACH_NOTIFIER__TRANSPORT__SMTP__PORT", port.as_str()),
        ("BREACH_NOTIFIER__TRANSPORT__SMTP__TLS", "none"),
        ("BREACH_NOTIFIER__DISPATCH__RETRY_BASE_SECS", "1"),
        ("BREACH_NOTIFIER__DISPATCH__RETRY_CAP_SECS", "1"),
        ("BREACH_NOTIFIER__DISPATCH__POLL_INTERVAL_MS", "100"),
    ];
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let campaign = examples.join("campaign.toml");
    let list = examples.join("recipients.csv");
    let rejects = dir.path().join("rejects.csv");
    let steps: Vec<Vec<&str>> = vec![
        vec!["migrate"],
        vec!["campaign", "create", campaign.to_str().unwrap()],
        vec![
            "import",
            "--campaign",
            "1",
            list.to_str().unwrap(),
            "--rejects",
            rejects.to_str().unwrap(),
        ],
        vec!["campaign", "start", "1"],
    ];
    for args in &steps {
        let o = bn(dir.path(), &env, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_clean(&format!("{args:?}"), &o, &personal);
    }
    // The daemon, until the campaign is done, then SIGTERM.
    let mut child = common::command(dir.path());
    child.arg("run");
    for (k, v) in &env {
        child.env(k, v);
    }
    let child = child
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let done = async {
        loop {
            let p = t.store.progress(Some(1)).await.unwrap().remove(0);
            if p.state == breach_notifier::store::CampaignState::Completed {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let p = tokio::time::timeout(Duration::from_secs(120), done)
        .await
        .expect("the campaign completes");
    assert!(p.failed >= 1 && p.sent > 0, "{p:?}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(!o.stderr.is_empty());
    assert_clean("run", &o, &personal);
    let status = bn(dir.path(), &env, &["status", "--json"]);
    assert_clean("status", &status, &personal);
}
