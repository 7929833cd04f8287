//! Test support shared by the integration tests: a fresh, migrated store per test on each backend.
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (set by `scripts/test`, which starts a throwaway cluster
//! when no `DATABASE_URL` is given). Each test gets its own schema (`bn_test_*`) through the
//! connection's `search_path`, so tests run in parallel without seeing each other. SQLite gets a file
//! in a temporary directory. Nothing is mocked.
#![allow(dead_code)]

pub mod dkim;
pub mod running;
pub mod smtp;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use breach_notifier::config::DatabaseSettings;
use breach_notifier::store::Store;
use sqlx::Connection;

/// A store for one test, with what keeps its database alive.
pub struct TestStore {
    pub store: Store,
    /// The URL the store was opened with (for running the CLI against the same database).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL server for tests, or a panic that says how to get one.
pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL").or_else(|_| std::env::var("DATABASE_URL")).unwrap_or_else(|_| {
        panic!(
            "PostgreSQL tests need a server: run scripts/test (it starts a throwaway cluster with initdb/pg_ctl), \
             or set TEST_DATABASE_URL=postgres://USER@HOST:PORT/DB (apt-get install postgresql)"
        )
    })
}

fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    )
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 100_000
}

/// A URL for a new, empty schema of the test server.
pub async fn fresh_postgres_url() -> String {
    let base = postgres_url();
    let schema = unique_name("bn_test");
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL at {base}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// A migrated PostgreSQL store in a schema of its own.
pub async fn postgres() -> TestStore {
    let url = fresh_postgres_url().await;
    let store = migrated(&url).await;
    TestStore {
        store,
        url,
        _dir: None,
    }
}

/// A migrated SQLite store in a temporary directory.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let store = migrated(&url).await;
    TestStore {
        store,
        url,
        _dir: Some(dir),
    }
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("test.db").display())
}

pub fn settings(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: url.to_string(),
        max_connections: 4,
        ..Default::default()
    }
}

async fn migrated(url: &str) -> Store {
    let store = Store::connect(&settings(url), None, true)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// The binary as an operator runs it against database `url` and the test SMTP server on `smtp_port`
/// (plain SMTP on loopback), in `dir`, without a backtrace setting leaking in from the test's shell.
pub fn command_with_relay(dir: &Path, url: &str, smtp_port: u16) -> std::process::Command {
    let mut c = std::process::Command::new(binary());
    c.current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env("BREACH_NOTIFIER__DATABASE__URL", url)
        .env("BREACH_NOTIFIER__TRANSPORT__KIND", "smtp")
        .env("BREACH_NOTIFIER__TRANSPORT__SMTP__HOST", "127.0.0.1")
        .env(
            "BREACH_NOTIFIER__TRANSPORT__SMTP__PORT",
            smtp_port.to_string(),
        )
        .env("BREACH_NOTIFIER__TRANSPORT__SMTP__TLS", "none");
    c
}

/// The built binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_breach-notifier"))
}
