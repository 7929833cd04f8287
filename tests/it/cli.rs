//! The binary as an operator uses it: real processes, real databases, checking exit codes and the one
//! clear line each failure prints.

use crate::common;
use crate::common::CampaignBuilder;

use std::path::Path;
use std::process::{Command, Output};

use breach_notifier::store::{CampaignState, Store};

/// Runs the binary in `dir` (so no config/default.toml is picked up unless the test writes one), with
/// the database URL in the environment.
fn run(dir: &Path, url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = common::command(dir);
    cmd.args(args);
    if let Some(url) = url {
        cmd.env("BREACH_NOTIFIER__DATABASE__URL", url);
    }
    cmd.output().expect("run breach-notifier")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure: non-zero exit, one `error:` line, no panic or backtrace.
fn assert_clear_failure(o: &Output, expected: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        stdout(o)
    );
    assert!(err.contains(expected), "stderr lacks {expected:?}: {err}");
    assert!(err.starts_with("error: "), "one error line expected: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

async fn migrate_then_status(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let before = run(dir.path(), Some(url), &["status"]);
    assert_clear_failure(&before, "run `breach-notifier migrate`");

    let migrate = run(dir.path(), Some(url), &["migrate"]);
    assert!(migrate.status.success(), "{}", stderr(&migrate));
    assert!(
        stdout(&migrate).contains("applied migration(s) 1, 2"),
        "{}",
        stdout(&migrate)
    );
    let again = run(dir.path(), Some(url), &["migrate"]);
    assert!(
        stdout(&again).contains("schema is up to date"),
        "{}",
        stdout(&again)
    );

    let empty = run(dir.path(), Some(url), &["status"]);
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert!(stdout(&empty).contains("no campaigns yet"));

    // A campaign with recipients, made through the library on the same database.
    let store = Store::open(&common::settings(url), None).await.unwrap();
    let spec = breach_notifier::campaign::CampaignSpec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/campaign.toml"),
    )
    .unwrap();
    let rows: Vec<_> = (0..3)
        .map(|i| breach_notifier::store::NewRecipient {
            customer_id: format!("c{i}"),
            email: Some(format!("c{i}@example.com")),
            ..Default::default()
        })
        .collect();
    let id = CampaignBuilder::on(&store)
        .spec(&spec)
        .named("Notice of Data Breach")
        .with(&rows)
        .await;
    store.close().await;

    let table = run(dir.path(), Some(url), &["status"]);
    let text = stdout(&table);
    assert!(
        text.lines().next().unwrap().starts_with("ID  NAME"),
        "{text}"
    );
    let line = text.lines().nth(1).unwrap();
    assert!(
        line.contains("Notice of Data Breach") && line.contains("draft"),
        "{line}"
    );

    let json = run(
        dir.path(),
        Some(url),
        &["status", "--json", &id.to_string()],
    );
    let value: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("status --json is JSON");
    assert_eq!(value[0]["campaign_id"], id);
    assert_eq!(value[0]["total"], 3);
    assert_eq!(value[0]["queued"], 3);
    assert_eq!(value[0]["state"], "draft");

    assert_clear_failure(
        &run(dir.path(), Some(url), &["status", "999"]),
        "campaign 999 does not exist",
    );

    // Campaign control through the CLI, recorded with the CLI user as actor.
    let start = run(
        dir.path(),
        Some(url),
        &["campaign", "start", &id.to_string(), "--reason", "approved"],
    );
    assert!(start.status.success(), "{}", stderr(&start));
    assert_clear_failure(
        &run(
            dir.path(),
            Some(url),
            &["campaign", "resume", &id.to_string()],
        ),
        "is running, not paused",
    );
    let pause = run(
        dir.path(),
        Some(url),
        &["campaign", "pause", &id.to_string()],
    );
    assert!(pause.status.success(), "{}", stderr(&pause));
    let show = stdout(&run(
        dir.path(),
        Some(url),
        &["campaign", "show", &id.to_string()],
    ));
    assert!(
        show.contains("draft -> running  by cli:") && show.contains(": approved"),
        "{show}"
    );
    assert!(show.contains("running -> paused  by cli:"), "{show}");
    let store = Store::open(&common::settings(url), None).await.unwrap();
    assert_eq!(
        store.require_campaign(id).await.unwrap().state,
        CampaignState::Paused
    );
    store.close().await;
}

#[tokio::test]
async fn migrate_then_status_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    migrate_then_status(&common::sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn migrate_then_status_on_postgres() {
    migrate_then_status(&common::fresh_postgres_url().await).await;
}

async fn schema_checks(url: &str, forge_ahead: &str, forge_behind: &str) {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), Some(url), &["migrate"]).status.success());
    let store = Store::open(&common::settings(url), None).await.unwrap();
    let exec = |sql: String| {
        let store = store.clone();
        async move {
            match &store {
                Store::Postgres(s) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(s.pool())
                    .await
                    .map(|_| ()),
                Store::Sqlite(s) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(s.pool())
                    .await
                    .map(|_| ()),
            }
            .unwrap()
        }
    };
    exec(forge_behind.to_string()).await;
    assert_clear_failure(
        &run(dir.path(), Some(url), &["status"]),
        "behind this binary",
    );
    assert_clear_failure(
        &run(dir.path(), Some(url), &["campaign", "list"]),
        "run `breach-notifier migrate`",
    );
    assert!(
        run(dir.path(), Some(url), &["migrate"]).status.success(),
        "migrate catches up"
    );
    assert!(run(dir.path(), Some(url), &["status"]).status.success());
    exec(forge_ahead.to_string()).await;
    assert_clear_failure(
        &run(dir.path(), Some(url), &["status"]),
        "newer than this binary",
    );
    assert_clear_failure(
        &run(dir.path(), Some(url), &["migrate"]),
        "newer than this binary",
    );
    store.close().await;
}

const FORGE_AHEAD: &str = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
     VALUES (9999, 'from the future', TRUE, X'00', 1)";

#[tokio::test]
async fn schema_behind_or_ahead_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    // Forget the latest migration and drop what it made, as if the binary had been upgraded since.
    schema_checks(
        &common::sqlite_url(dir.path()),
        FORGE_AHEAD,
        "DELETE FROM _sqlx_migrations WHERE version = 3; DROP VIEW wave_progress; DROP TABLE waves",
    )
    .await;
}

#[tokio::test]
async fn schema_behind_or_ahead_is_refused_on_postgres() {
    schema_checks(
        &common::fresh_postgres_url().await,
        &FORGE_AHEAD.replace("X'00'", "'\\x00'::bytea"),
        // CASCADE: wave_counters (migration 7) refers to waves.
        "DELETE FROM _sqlx_migrations WHERE version = 3; DROP VIEW wave_progress; DROP TABLE waves CASCADE",
    )
    .await;
}

#[test]
fn missing_sqlite_file_says_to_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        dir.path(),
        Some(&common::sqlite_url(dir.path())),
        &["status"],
    );
    assert_clear_failure(&o, "does not exist: run `breach-notifier migrate`");
}

#[test]
fn bad_and_unreachable_database_urls_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    assert_clear_failure(
        &run(dir.path(), Some("mysql://x@y/z"), &["status"]),
        "database.url must start with sqlite:// or postgres://",
    );
    let o = run(
        dir.path(),
        Some("postgres://bn:hunter2@127.0.0.1:1/bn"),
        &["status"],
    );
    assert_clear_failure(
        &o,
        "cannot connect to the database postgres://bn:[redacted]@127.0.0.1:1/bn",
    );
    assert!(
        !stderr(&o).contains("hunter2"),
        "the password never appears"
    );
    assert_clear_failure(
        &run(dir.path(), Some("postgres://x@[::1"), &["status"]),
        "not a valid PostgreSQL URL",
    );
}

#[test]
fn config_errors_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run(
        dir.path(),
        None,
        &["--config", "/nonexistent/bn.toml", "check-config"],
    );
    assert_clear_failure(&missing, "config file /nonexistent/bn.toml: cannot read it");

    let file = dir.path().join("bn.toml");
    std::fs::write(
        &file,
        "[database]\nurl = \"sqlite://x.db\"\n\n[transport.smtp]\nhots = \"relay\"\n",
    )
    .unwrap();
    let unknown = run(
        dir.path(),
        None,
        &["--config", file.to_str().unwrap(), "check-config"],
    );
    assert_clear_failure(&unknown, "bn.toml");
    let err = stderr(&unknown);
    assert!(
        err.contains("line 5") && err.contains("unknown field `hots`"),
        "{err}"
    );

    std::fs::write(&file, "[transport.smtp]\nport = \"twenty-five\"\n").unwrap();
    let wrong = run(
        dir.path(),
        None,
        &["--config", file.to_str().unwrap(), "check-config"],
    );
    assert_clear_failure(&wrong, "line 2");
    assert!(stderr(&wrong).contains("port"), "{}", stderr(&wrong));

    let mut cmd = Command::new(common::binary());
    let env_typo = cmd
        .current_dir(dir.path())
        .env_remove("RUST_BACKTRACE")
        .env("BREACH_NOTIFIER__DATABASE__URLX", "sqlite://x.db")
        .arg("check-config")
        .output()
        .unwrap();
    assert_clear_failure(&env_typo, "BREACH_NOTIFIER__DATABASE__URLX");
    assert!(stderr(&env_typo).contains("urlx"), "{}", stderr(&env_typo));
}

/// Every limit is for the cluster; check-config shows what one daemon takes of each.
#[test]
fn check_config_shows_one_daemons_share_of_each_limit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("limits.toml");
    std::fs::write(
        &file,
        "[limits]\nglobal_per_second = 300\nglobal_burst = 30\n[limits.domains]\n\"gmail.com\" = 20\n",
    )
    .unwrap();
    let o = Command::new(common::binary())
        .current_dir(dir.path())
        .env("BREACH_NOTIFIER_CONFIG", &file)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("# {name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        row("global").ends_with("300/s, burst 30 150/s, burst 15 100/s, burst 10"),
        "{out}"
    );
    assert!(
        row("domain gmail.com").ends_with("20/s, burst 20 10/s, burst 10 6.67/s, burst 6"),
        "{out}"
    );
    assert!(
        out.contains("Every limit is for the whole cluster"),
        "{out}"
    );
}

#[test]
fn check_config_shows_layers_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/default.toml"),
        "[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let secret_file = dir.path().join("smtp-password");
    std::fs::write(&secret_file, "correct horse battery staple\n").unwrap();
    let file = dir.path().join("prod.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"postgres://bn:hunter2@db.internal/bn\"\n[transport]\nkind = \"smtp\"\n\
             [transport.smtp]\nhost = \"relay.internal\"\nusername = \"bn\"\npassword_file = \"{}\"\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let o = Command::new(common::binary())
        .current_dir(dir.path())
        .env_remove("RUST_BACKTRACE")
        .env("BREACH_NOTIFIER_CONFIG", &file)
        .env("BREACH_NOTIFIER__TRANSPORT__SMTP__PORT", "2525")
        .arg("check-config")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        !out.contains("hunter2") && !out.contains("correct horse"),
        "{out}"
    );
    assert!(
        out.contains("postgres://bn:[redacted]@db.internal/bn"),
        "{out}"
    );
    assert!(out.contains("password = \"[redacted]\""), "{out}");
    assert!(out.contains("port = 2525"), "environment wins: {out}");
    assert!(
        out.contains("level = \"warn\""),
        "config/default.toml is read: {out}"
    );
    assert!(
        out.contains("file config/default.toml") && out.contains("prod.toml"),
        "{out}"
    );
    assert!(
        out.contains("environment BREACH_NOTIFIER__TRANSPORT__SMTP__PORT"),
        "{out}"
    );
}

#[test]
fn plain_smtp_to_a_remote_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bn.toml");
    std::fs::write(&file, "[transport]\nkind = \"smtp\"\n[transport.smtp]\nhost = \"relay.example.com\"\ntls = \"none\"\n").unwrap();
    let o = run(
        dir.path(),
        None,
        &["--config", file.to_str().unwrap(), "check-config"],
    );
    assert_clear_failure(&o, "allow_insecure = true");
    std::fs::write(
        &file,
        "[transport]\nkind = \"smtp\"\n[transport.smtp]\nhost = \"127.0.0.1\"\ntls = \"none\"\n",
    )
    .unwrap();
    assert!(
        run(
            dir.path(),
            None,
            &["--config", file.to_str().unwrap(), "check-config"]
        )
        .status
        .success()
    );
}

#[test]
fn every_command_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["migrate"],
        &["check-config"],
        &["status"],
        &["import"],
        &["campaign"],
        &["campaign", "create"],
        &["campaign", "start"],
        &["campaign", "pause"],
        &["campaign", "resume"],
        &["campaign", "cancel"],
        &["demo"],
    ];
    for args in commands {
        let mut full: Vec<&str> = args.to_vec();
        full.push("--help");
        let o = run(dir.path(), None, &full);
        assert!(o.status.success(), "{full:?}: {}", stderr(&o));
        let text = stdout(&o);
        assert!(text.contains("Usage: breach-notifier"), "{full:?}: {text}");
        let description = text.lines().next().unwrap_or_default();
        assert!(
            description.split_whitespace().count() >= 4,
            "{full:?} has no real description: {text}"
        );
    }
}
