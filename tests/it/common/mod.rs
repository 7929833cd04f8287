//! Test support shared by the integration tests: a fresh, migrated store per test on each backend,
//! wrapped in a [`TestApp`] that creates campaigns, runs the dispatcher and the binary, and runs raw SQL.
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (set by `scripts/test`, which starts a throwaway cluster
//! when no `DATABASE_URL` is given). Each test gets its own schema (`bn_test_*`) through the
//! connection's `search_path`, so tests run in parallel without seeing each other. SQLite gets a file
//! in a temporary directory. Nothing is mocked.

pub mod dkim;
pub mod postfix;
pub mod smtp;

use std::future::{Future, IntoFuture};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use breach_notifier::campaign::{CampaignSpec, LocaleTemplates, RateSpec, SenderSpec};
use breach_notifier::config::{DatabaseSettings, Settings, SmtpTls, TransportKind};
use breach_notifier::dispatch::{Dispatcher, RunMode};
use breach_notifier::store::{
    CampaignProgress, CampaignState, ClaimPosition, InsertOutcome, NewCampaign, NewRecipient, Store,
};
use breach_notifier::transport::Transport;
use sqlx::Connection;
use tokio::sync::watch;

use smtp::SmtpServer;

/// Each case written once, run on both backends: `backends!(a, b)` makes `postgres::a`, `sqlite::a`,
/// `postgres::b`, `sqlite::b`, each calling `a(app)` with a fresh [`TestApp`].
///
/// - `backends!(multi_thread: …)` runs each case on a two-worker runtime (cases that run the
///   dispatcher beside blocking calls).
/// - `backends!(empty: …)` gives each case an [`EmptyDb`] instead (the binary migrates it), in modules
///   `cli_postgres` and `cli_sqlite`.
macro_rules! backends {
    (@ $fixture:ident, $flavor:tt, $pg:ident, $lite:ident, $($case:ident),+) => {
        mod $pg {
            $( #[tokio::test $flavor] async fn $case() {
                super::$case($crate::common::$fixture::postgres().await).await
            } )+
        }
        mod $lite {
            $( #[tokio::test $flavor] async fn $case() {
                super::$case($crate::common::$fixture::sqlite().await).await
            } )+
        }
    };
    (multi_thread: $($case:ident),+ $(,)?) => {
        backends!(@ TestApp, (flavor = "multi_thread", worker_threads = 2), postgres, sqlite, $($case),+);
    };
    (empty: $($case:ident),+ $(,)?) => {
        backends!(@ EmptyDb, (flavor = "current_thread"), cli_postgres, cli_sqlite, $($case),+);
    };
    ($($case:ident),+ $(,)?) => {
        backends!(@ TestApp, (flavor = "current_thread"), postgres, sqlite, $($case),+);
    };
}

/// One timing-sensitive test at a time (rates and deadlines measured on a shared, small machine):
/// `let _serial = common::serial().await;` at the top of such a test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A migrated store for one test, with what keeps its database alive, and what a test does with it.
pub struct TestApp {
    pub store: Store,
    /// The URL the store was opened with (for running the CLI against the same database).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// An empty database (not migrated) for tests that drive the binary, and what keeps it alive.
pub struct EmptyDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl EmptyDb {
    pub async fn postgres() -> Self {
        let url = fresh_postgres_url().await;
        Self { url, _dir: None }
    }

    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(dir.path());
        Self {
            url,
            _dir: Some(dir),
        }
    }
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
pub async fn postgres() -> TestApp {
    TestApp::postgres().await
}

/// A migrated SQLite store in a temporary directory.
pub async fn sqlite() -> TestApp {
    TestApp::sqlite().await
}

/// Runs one raw SQL statement on either backend.
pub async fn sql(store: &Store, statement: &str) {
    let statement = sqlx::AssertSqlSafe(statement.to_string());
    match store {
        Store::Postgres(s) => sqlx::query(statement).execute(s.pool()).await.map(|_| ()),
        Store::Sqlite(s) => sqlx::query(statement).execute(s.pool()).await.map(|_| ()),
    }
    .unwrap()
}

/// The rows of a raw SQL query on either backend, decoded as `T` (a tuple, usually).
pub async fn rows<T>(store: &Store, query: &str) -> Vec<T>
where
    T: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    let query = sqlx::AssertSqlSafe(query.to_string());
    match store {
        Store::Postgres(s) => sqlx::query_as(query).fetch_all(s.pool()).await,
        Store::Sqlite(s) => sqlx::query_as(query).fetch_all(s.pool()).await,
    }
    .unwrap()
}

/// An upgrade meeting rows already stored: brings the empty database at `url` to the schema before
/// migration `version`, runs `statements` on it (rows as that version stored them), then the rest of
/// the migrations, and opens the store.
pub async fn migrate_around(url: &str, version: i64, statements: &[&str]) -> Store {
    macro_rules! around {
        ($pool:expr, $dir:literal) => {{
            let pool = $pool;
            let mut before = sqlx::migrate!($dir);
            before.migrations = before
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect();
            before.run(&pool).await.unwrap();
            for statement in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            sqlx::migrate!($dir).run(&pool).await.unwrap();
            pool.close().await;
        }};
    }
    if url.starts_with("postgres") {
        around!(
            sqlx::PgPool::connect(url).await.unwrap(),
            "./migrations/postgres"
        );
    } else {
        let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        around!(
            sqlx::SqlitePool::connect_with(opts.create_if_missing(true))
                .await
                .unwrap(),
            "./migrations/sqlite"
        );
    }
    Store::open(&settings(url), None).await.unwrap()
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

impl TestApp {
    /// A migrated PostgreSQL store in a schema of its own.
    pub async fn postgres() -> Self {
        let EmptyDb { url, _dir } = EmptyDb::postgres().await;
        let store = migrated(&url).await;
        Self { store, url, _dir }
    }

    /// A migrated SQLite store in a temporary directory.
    pub async fn sqlite() -> Self {
        let EmptyDb { url, _dir } = EmptyDb::sqlite().await;
        let store = migrated(&url).await;
        Self { store, url, _dir }
    }

    /// A new campaign from `spec` (its name, stored definition and content hash); add `.with(rows)`,
    /// `.started()`, and `.await` it for the id.
    pub fn campaign(&self, spec: &CampaignSpec) -> CampaignBuilder<'_> {
        CampaignBuilder::on(&self.store).spec(spec)
    }

    /// Adds recipients to campaign `id`; says how many were new.
    pub async fn import(&self, id: i64, rows: &[NewRecipient]) -> InsertOutcome {
        self.store.insert_recipients(id, rows).await.unwrap()
    }

    /// Runs raw SQL as an operator would.
    pub async fn sql(&self, statement: &str) {
        sql(&self.store, statement).await
    }

    /// Campaign `id`'s counts and state.
    pub async fn progress(&self, id: i64) -> CampaignProgress {
        self.store.progress(Some(id)).await.unwrap().remove(0)
    }

    /// Settings for a dispatcher on this database and the test SMTP server, with short periods.
    pub fn settings(&self, smtp: &SmtpServer) -> Settings {
        let mut s = Settings::default();
        s.database.url = self.url.clone();
        s.transport.kind = TransportKind::Smtp;
        s.transport.smtp.host = "127.0.0.1".into();
        s.transport.smtp.port = smtp.port();
        s.transport.smtp.tls = SmtpTls::None;
        s.transport.smtp.timeout_secs = 5;
        s.transport.smtp.pool_size = 4;
        s.dispatch.poll_interval_ms = 100;
        s.dispatch.heartbeat_secs = 1;
        s.dispatch.lease_secs = 30;
        s.dispatch.retry_base_secs = 1;
        s.dispatch.retry_cap_secs = 1;
        s.dispatch.rescan_secs = 1;
        s.dispatch.drain_secs = 5;
        s.dispatch.concurrency = 4;
        s
    }

    /// The dispatcher (in-process) running in the background.
    pub fn spawn_daemon(&self, settings: &Settings, mode: RunMode) -> Running {
        let transport = Transport::from_settings(&settings.transport).unwrap();
        let dispatcher = Dispatcher::new(self.store.clone(), transport, settings).unwrap();
        let stats = dispatcher.stats.clone();
        let metrics = dispatcher.metrics.clone();
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(async move { dispatcher.run(mode, rx).await });
        Running {
            stop,
            handle,
            stats,
            metrics,
        }
    }

    /// Runs the dispatcher until there is nothing left to do, within `limit`.
    pub async fn run_until_idle(&self, settings: &Settings, limit: Duration) {
        let r = self.spawn_daemon(settings, RunMode::UntilIdle);
        tokio::time::timeout(limit, r.handle)
            .await
            .expect("dispatcher finished in time")
            .unwrap()
            .unwrap();
    }

    /// The binary in `dir` against this database (see [`command`]).
    pub fn cli(&self, dir: &Path) -> Command {
        cli(dir, &self.url)
    }
}

/// A campaign to create: `t.campaign(&spec).with(&rows).started().await` gives its id.
#[must_use = "a campaign is created when awaited"]
pub struct CampaignBuilder<'a> {
    store: &'a Store,
    new: NewCampaign,
    rows: &'a [NewRecipient],
    start: bool,
    actor: &'a str,
}

impl<'a> CampaignBuilder<'a> {
    /// A campaign on `store` named "test campaign", with no definition, created by actor "test".
    pub fn on(store: &'a Store) -> Self {
        Self {
            store,
            new: NewCampaign {
                name: "test campaign".into(),
                definition: String::new(),
                content_hash: "test".into(),
                email_without_consent: false,
                discovered_at: None,
                determined_at: None,
                supplements: None,
            },
            rows: &[],
            start: false,
            actor: "test",
        }
    }

    /// The name, stored definition, content hash and discovery date of `spec`.
    pub fn spec(mut self, spec: &CampaignSpec) -> Self {
        self.new.name = spec.name.clone();
        self.new.discovered_at = spec.discovered_at;
        self.new.determined_at = spec.determined_at;
        self.new.definition = spec.to_stored();
        self.new.content_hash = spec.content_hash();
        self
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.new.name = name.into();
        self
    }

    pub fn definition(mut self, definition: impl Into<String>) -> Self {
        self.new.definition = definition.into();
        self
    }

    pub fn content_hash(mut self, hash: impl Into<String>) -> Self {
        self.new.content_hash = hash.into();
        self
    }

    pub fn email_without_consent(mut self, yes: bool) -> Self {
        self.new.email_without_consent = yes;
        self
    }

    /// Who creates it (recorded in `campaign_events`).
    pub fn by(mut self, actor: &'a str) -> Self {
        self.actor = actor;
        self
    }

    /// Its recipients, imported after it is created.
    pub fn with(mut self, rows: &'a [NewRecipient]) -> Self {
        self.rows = rows;
        self
    }

    /// Started (Running, by the same actor) once its recipients are in.
    pub fn started(self) -> Self {
        self.started_if(true)
    }

    pub fn started_if(mut self, start: bool) -> Self {
        self.start = start;
        self
    }
}

impl<'a> IntoFuture for CampaignBuilder<'a> {
    type Output = i64;
    type IntoFuture = Pin<Box<dyn Future<Output = i64> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let id = self
                .store
                .create_campaign(&self.new, self.actor)
                .await
                .unwrap();
            if !self.rows.is_empty() {
                self.store.insert_recipients(id, self.rows).await.unwrap();
            }
            if self.start {
                self.store
                    .set_campaign_state(id, CampaignState::Running, self.actor, None)
                    .await
                    .unwrap();
            }
            id
        })
    }
}

/// A dispatcher running in the background, with its stop switch.
pub struct Running {
    pub stop: watch::Sender<bool>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub stats: Arc<breach_notifier::dispatch::Stats>,
    pub metrics: Arc<breach_notifier::ops::metrics::Metrics>,
}

/// A claim request as the store tests phrase one: no upper bound, no daily cap.
pub fn request(
    campaign_id: i64,
    instance: &str,
    cursor: i64,
    limit: u32,
    lease: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> breach_notifier::store::ClaimRequest<'_> {
    breach_notifier::store::ClaimRequest {
        campaign_id,
        instance,
        cursor: ClaimPosition::from(cursor),
        upper: i64::MAX,
        limit,
        lease,
        now,
        daily_cap: None,
    }
}

/// `store.claim(campaign, instance, cursor, limit, lease, now)`: the store tests' claim, through
/// [`request`].
pub trait Claims {
    fn claim(
        &self,
        campaign_id: i64,
        instance: &str,
        cursor: i64,
        limit: u32,
        lease: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = breach_notifier::store::Result<breach_notifier::store::Claim>> + Send;
}

impl Claims for breach_notifier::store::Store {
    fn claim(
        &self,
        campaign_id: i64,
        instance: &str,
        cursor: i64,
        limit: u32,
        lease: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = breach_notifier::store::Result<breach_notifier::store::Claim>> + Send
    {
        let instance = instance.to_string();
        async move {
            self.claim_batch(&request(campaign_id, &instance, cursor, limit, lease, now))
                .await
        }
    }
}

/// A minimal campaign in en-US: `text` as the text part (and in a `<p>` as the HTML part).
pub fn spec(rate: Option<f64>, text: &str) -> CampaignSpec {
    let mut locales = std::collections::BTreeMap::new();
    locales.insert(
        "en-US".to_string(),
        LocaleTemplates {
            subject: "Notice of Data Breach".into(),
            text: text.into(),
            html: format!("<p>{text}</p>"),
        },
    );
    CampaignSpec {
        name: "test campaign".into(),
        discovered_at: None,
        determined_at: None,
        email_without_consent: false,
        supplements: None,
        default_locale: "en-US".into(),
        sender: SenderSpec {
            from: "Notices <notices@example.com>".into(),
            reply_to: None,
            return_path: None,
        },
        locales,
        by_jurisdiction: Default::default(),
        rate: RateSpec {
            per_second: rate,
            burst: None,
            daily_cap: None,
        },
        waves: Vec::new(),
        source: String::new(),
    }
}

/// Recipient `i` with an address at `domain` and consent to email.
pub fn person(i: usize, domain: &str) -> NewRecipient {
    NewRecipient {
        customer_id: format!("C{i:06}"),
        email: Some(format!("user{i}@{domain}")),
        first_name: Some(format!("Person{i}")),
        electronic_consent: true,
        ..Default::default()
    }
}

pub async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The built binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_breach-notifier"))
}

/// The binary in `dir` (so no `config/default.toml` is read unless the test writes one), with nothing
/// leaking in from the test's shell: no `BREACH_NOTIFIER_CONFIG`, `BREACH_NOTIFIER__*`, `RUST_LOG`,
/// `RUST_BACKTRACE` (main prints a backtrace after the error line when asked), or systemd variables.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir);
    for key in [
        "BREACH_NOTIFIER_CONFIG",
        "RUST_LOG",
        "RUST_BACKTRACE",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ] {
        cmd.env_remove(key);
    }
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("BREACH_NOTIFIER__")) {
        cmd.env_remove(key);
    }
    cmd
}

/// [`command`] against the database `url`.
pub fn cli(dir: &Path, url: &str) -> Command {
    let mut cmd = command(dir);
    cmd.env("BREACH_NOTIFIER__DATABASE__URL", url);
    cmd
}

/// The binary as an operator runs it against database `url` and the test SMTP server on `smtp_port`
/// (plain SMTP on loopback), in `dir`.
pub fn command_with_relay(dir: &Path, url: &str, smtp_port: u16) -> Command {
    let mut c = cli(dir, url);
    c.env("BREACH_NOTIFIER__TRANSPORT__KIND", "smtp")
        .env("BREACH_NOTIFIER__TRANSPORT__SMTP__HOST", "127.0.0.1")
        .env(
            "BREACH_NOTIFIER__TRANSPORT__SMTP__PORT",
            smtp_port.to_string(),
        )
        .env("BREACH_NOTIFIER__TRANSPORT__SMTP__TLS", "none");
    c
}
