//! Shared set-up for tests that run the dispatcher: a minimal campaign spec, recipients, SMTP settings
//! pointing at the test server, and a dispatcher running in the background.

use std::sync::Arc;
use std::time::{Duration, Instant};

use breach_notifier::campaign::{CampaignSpec, LocaleTemplates, RateSpec, SenderSpec};
use breach_notifier::config::{Settings, SmtpTls, TransportKind};
use breach_notifier::dispatch::{Dispatcher, RunMode};
use breach_notifier::store::*;
use breach_notifier::transport::Transport;
use tokio::sync::watch;

use super::TestStore;
use super::smtp::SmtpServer;

/// Runs raw SQL as an operator would.
pub async fn sql(t: &TestStore, statement: &str) {
    let statement = statement.to_string();
    match &t.store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(s.pool())
            .await
            .map(|_| ()),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(s.pool())
            .await
            .map(|_| ()),
    }
    .unwrap()
}

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
        email_without_consent: false,
        supplements: None,
        default_locale: "en-US".into(),
        sender: SenderSpec {
            from: "Notices <notices@example.com>".into(),
            reply_to: None,
            return_path: None,
        },
        locales,
        rate: RateSpec {
            per_second: rate,
            burst: None,
            daily_cap: None,
        },
        waves: Vec::new(),
        source: String::new(),
    }
}

pub fn person(i: usize, domain: &str) -> NewRecipient {
    NewRecipient {
        customer_id: format!("C{i:06}"),
        email: Some(format!("user{i}@{domain}")),
        first_name: Some(format!("Person{i}")),
        electronic_consent: true,
        ..Default::default()
    }
}

pub async fn create(t: &TestStore, spec: &CampaignSpec, rows: &[NewRecipient], start: bool) -> i64 {
    let id = t
        .store
        .create_campaign(
            &NewCampaign {
                name: spec.name.clone(),
                definition: spec.to_stored(),
                content_hash: spec.content_hash(),
                email_without_consent: false,
                discovered_at: None,
                supplements: None,
            },
            "test",
        )
        .await
        .unwrap();
    t.store.insert_recipients(id, rows).await.unwrap();
    if start {
        t.store
            .set_campaign_state(id, CampaignState::Running, "test", None)
            .await
            .unwrap();
    }
    id
}

pub fn settings(t: &TestStore, smtp: &SmtpServer) -> Settings {
    let mut s = Settings::default();
    s.database.url = t.url.clone();
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

/// A dispatcher running in the background, with its stop switch.
pub struct Running {
    pub stop: watch::Sender<bool>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub stats: Arc<breach_notifier::dispatch::Stats>,
    pub metrics: Arc<breach_notifier::ops::metrics::Metrics>,
}

pub fn start(t: &TestStore, settings: &Settings, mode: RunMode) -> Running {
    let transport = Transport::from_settings(&settings.transport).unwrap();
    let dispatcher = Dispatcher::new(t.store.clone(), transport, settings).unwrap();
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

pub async fn run_until_idle(t: &TestStore, settings: &Settings, limit: Duration) {
    let r = start(t, settings, RunMode::UntilIdle);
    tokio::time::timeout(limit, r.handle)
        .await
        .expect("dispatcher finished in time")
        .unwrap()
        .unwrap();
}

pub async fn progress(t: &TestStore, id: i64) -> CampaignProgress {
    t.store.progress(Some(id)).await.unwrap().remove(0)
}

pub async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
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
