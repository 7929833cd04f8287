//! `breach-notifier run` (the service) and `breach-notifier demo` (the whole thing end to end on the
//! embedded default, with the example campaign).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use super::{cli_actor, open, status};
use crate::campaign::CampaignSpec;
use crate::campaign::preflight;
use crate::config::{Settings, TransportKind};
use crate::dispatch::{Dispatcher, RunMode};
use crate::intake::{ImportOptions, import};
use crate::ops::http;
use crate::ops::notify::{Liveness, Notifier};
use crate::store::{CampaignState, NewCampaign, Store};
use crate::transport::Transport;

/// A watch that turns true on SIGTERM or SIGINT (Ctrl-C).
fn shutdown_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// The service. Under systemd (`Type=notify`) it reports `READY=1` only once the HTTP port is bound,
/// the database schema is current and the transport answered; pings the watchdog from the start (the
/// startup has `TimeoutStartSec` as its bound); and says why it failed in `STATUS=` before exiting.
pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let notifier = Notifier::from_env();
    let liveness = Arc::new(Liveness::default());
    let watchdog = notifier.spawn_watchdog(liveness.clone());
    let result = serve(settings, &notifier, liveness).await;
    if let Err(e) = &result {
        notifier.status(&format!("failed: {e:#}"));
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    result
}

async fn serve(
    settings: &Settings,
    notifier: &Notifier,
    liveness: Arc<Liveness>,
) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal()?;
    // First the port: a port already in use fails at once, before any connection is made.
    let listener = match settings.http.enabled {
        true => Some(http::bind(&settings.http).await?),
        false => None,
    };
    notifier.status("starting: opening the database");
    let store = open(settings).await?;
    notifier.status("starting: checking the transport");
    let transport = Transport::from_settings(&settings.transport)?;
    transport.check().await?;
    let dispatcher = Dispatcher::new(store.clone(), transport, settings)?
        .with_notifier(notifier.clone(), liveness);
    let webhooks = http::webhooks::routes::Webhooks::new(store.clone(), &settings.bounces)?;
    let page = http::page::Page::new(
        store.clone(),
        &settings.http.tokens,
        super::forecast_limits(settings),
    )?;
    let server = listener.map(|listener| {
        http::serve(
            listener,
            http::AppState {
                metrics: dispatcher.metrics.clone(),
                readiness: Arc::new(http::Readiness::new(
                    store.clone(),
                    settings.transport.clone(),
                )),
                stopping: shutdown.clone(),
                webhooks: Some(webhooks.clone()),
                page: Some(page.clone()),
            },
        )
    });
    notifier.ready(&format!(
        "running as {} ({} database)",
        dispatcher.instance().id,
        store.backend()
    ));
    let result = dispatcher.run(RunMode::Forever, shutdown).await;
    // After the drain, during which `/readyz` said "stopping": requests in progress finish.
    if let Some(server) = server {
        server.shutdown().await;
    }
    result?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Each named file of `examples/` with its text.
macro_rules! examples {
    ($($name:literal),+) => {
        &[$(($name, include_str!(concat!("../../examples/", $name)))),+]
    };
}

/// The example campaign and list, built into the binary so `demo` works from any directory.
const EXAMPLE_FILES: &[(&str, &str)] = examples![
    "campaign.toml",
    "templates/en-US.txt.j2",
    "templates/en-US.html.j2",
    "templates/es-US.txt.j2",
    "templates/es-US.html.j2",
    "templates/us-ma/en-US.txt.j2",
    "templates/us-ma/en-US.html.j2",
    "templates/us-ma/es-US.txt.j2",
    "templates/us-ma/es-US.html.j2",
    "recipients.csv"
];

/// The demo database, beside the outbox in the working directory.
pub const DEMO_DATABASE: &str = "sqlite://breach-notifier-demo.db";

/// `demo --serve`'s send rate: slow enough that the status page shows the campaign moving for a
/// minute (1,000 customers, some by letter).
const DEMO_SERVE_RATE: f64 = 20.0;

pub async fn demo(base: &Settings, serve_page: bool) -> anyhow::Result<ExitCode> {
    // The demo never touches a configured database or relay: SQLite and the file outbox, always.
    let mut settings = base.clone();
    settings.database.url = DEMO_DATABASE.into();
    settings.database.password = None;
    settings.transport.kind = TransportKind::File;
    settings.dispatch.poll_interval_ms = 200;
    let outbox = settings.transport.file.dir.clone();
    // The port first, as `run` does: a port in use is one error before anything is written.
    let listener = match serve_page {
        true => {
            settings.limits.global_per_second = Some(DEMO_SERVE_RATE);
            Some(http::bind(&settings.http).await?)
        }
        false => None,
    };

    let examples = tempfile_dir()?;
    for (name, text) in EXAMPLE_FILES {
        let path = examples.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(&path, text)?;
    }
    println!(
        "breach-notifier demo: SQLite database breach-notifier-demo.db, notices written to {}/",
        outbox.display()
    );

    let store = Store::connect(&settings.database, None, true).await?;
    store.migrate().await?;
    let campaign_id = start_example_campaign(&store, &examples, &settings.rules).await?;
    let transport = Transport::from_settings(&settings.transport)?;
    transport.check().await?;
    let dispatcher = Dispatcher::new(store.clone(), transport, &settings)?;
    let shutdown = shutdown_signal()?;
    let server = match listener {
        Some(listener) => Some(demo_page(
            listener,
            &store,
            &dispatcher,
            &settings,
            &shutdown,
            campaign_id,
        )?),
        None => None,
    };
    let mode = if server.is_some() {
        RunMode::Forever
    } else {
        RunMode::UntilIdle
    };
    dispatcher.run(mode, shutdown).await?;
    if let Some(server) = server {
        server.shutdown().await;
    }

    let (statuses, forecast) =
        status::collect_with_forecast(&store, Some(campaign_id), super::forecast_limits(&settings))
            .await?;
    println!("4. done. Campaign status:\n");
    print!("{}", status::render_with(&statuses, forecast.as_ref()));
    println!(
        "\nThe notices are in {}/ ({} .eml files); open one in a mail client. The campaign's records stay in\n\
         breach-notifier-demo.db: BREACH_NOTIFIER__DATABASE__URL={DEMO_DATABASE} breach-notifier status {campaign_id}",
        outbox.display(),
        eml_files(&outbox)
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&examples);
    let done = statuses
        .first()
        .is_some_and(|s| s.progress.state == CampaignState::Completed);
    // Served, the demo ends at Ctrl-C, finished or not.
    Ok(if done || serve_page {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `demo --serve`: the status page with a one-time operator token, and where to find it.
fn demo_page(
    listener: tokio::net::TcpListener,
    store: &Store,
    dispatcher: &Dispatcher,
    settings: &Settings,
    stopping: &watch::Receiver<bool>,
    campaign_id: i64,
) -> anyhow::Result<http::Server> {
    use rand::distr::{Alphanumeric, SampleString};
    let token = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let tokens = [crate::config::TokenSettings {
        name: "demo".into(),
        role: crate::config::TokenRole::Operator,
        file: "(generated by demo --serve)".into(),
        secret: Some(token.clone().into()),
    }];
    let addr = listener.local_addr()?;
    let state = http::AppState {
        metrics: dispatcher.metrics.clone(),
        readiness: Arc::new(http::Readiness::new(
            store.clone(),
            settings.transport.clone(),
        )),
        stopping: stopping.clone(),
        webhooks: None,
        page: Some(http::page::Page::new(
            store.clone(),
            &tokens,
            super::forecast_limits(settings),
        )?),
    };
    println!(
        "   status page: http://{addr}/campaigns/{campaign_id} (all campaigns: http://{addr}/)\n   \
         to pause or resume from it, sign in at http://{addr}/login with any user name and the \
         password {token}\n   sending at {DEMO_SERVE_RATE} a second; Ctrl-C stops the demo"
    );
    Ok(http::serve(listener, state))
}

/// Steps 1 to 3 of the demo: create the example campaign, import its list, check and start it.
async fn start_example_campaign(
    store: &Store,
    examples: &std::path::Path,
    rules: &crate::config::RulesSettings,
) -> anyhow::Result<i64> {
    let spec = CampaignSpec::load(&examples.join("campaign.toml"))?;
    let campaign_id = store
        .create_campaign(&NewCampaign::from(&spec), &cli_actor())
        .await?;
    println!("1. created campaign {campaign_id}: {}", spec.name);

    let campaign = store.require_campaign(campaign_id).await?;
    let summary = import(
        store,
        &ImportOptions {
            campaign_id,
            source: examples.join("recipients.csv"),
            rejects: None,
            dry_run: false,
            actor: cli_actor(),
            progress: false,
            deadline_days: super::deadlines::import_deadline_days(
                crate::rules::load(rules)?,
                rules,
                &campaign,
            ),
        },
    )
    .await?;
    let c = summary.counts;
    println!(
        "2. imported {} customers: {} to email, {} need a letter (no address or no electronic consent), {} rejected, {} duplicates",
        c.read, c.email, c.postal, c.rejected, c.duplicates
    );

    let report = preflight::check(store, &campaign).await?;
    if let Some(problem) = report.problem() {
        anyhow::bail!("the example campaign failed its pre-flight check: {problem}");
    }
    // As `campaign start`: each jurisdiction's notice against its content rules.
    let content = super::content::check_stored(store, &crate::rules::load(rules)?, &campaign)
        .await
        .map_err(|e| anyhow::anyhow!("the example campaign failed its content checks: {e}"))?;
    store
        .set_campaign_state(
            campaign_id,
            CampaignState::Running,
            &cli_actor(),
            Some("demo"),
        )
        .await?;
    // Each jurisdiction's deadline from the rules and the campaign's discovery date, as `campaign
    // start` computes them.
    super::deadlines::refresh(store, rules, &campaign).await?;
    let rate = spec
        .rate
        .per_second
        .map(|r| format!(" at up to {r} per second"))
        .unwrap_or_default();
    println!(
        "3. started the campaign ({} pre-flight renders and the content rules of {content} jurisdiction(s) passed); sending{rate}…",
        report.rendered
    );
    Ok(campaign_id)
}

/// The `.eml` files in the outbox.
fn eml_files(outbox: &std::path::Path) -> usize {
    std::fs::read_dir(outbox)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
            })
            .count()
        })
        .unwrap_or(0)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("breach-notifier-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
