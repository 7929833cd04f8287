//! What each command does: load the configuration, open the store, act, print the result.
//!
//! Results go to standard output; logs and errors to standard error. Every failure is returned as an
//! error whose message names the problem and the fix; `main` prints it on one line.
//!
//! **Layer: command line.** Owns the [`args`] (clap) and one module per group of commands. Uses every
//! other layer; no other layer uses it.

pub mod args;

mod bounce;
mod campaign;
pub mod content;
mod daemon;
pub mod deadlines;
mod export;
pub mod report;
mod rules;
pub mod status;

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::args::{Cli, Command};
use crate::config::{Loaded, Settings};
use crate::ops::telemetry;
use crate::store::Store;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Bounce(args::BounceCommand::Ingest { envelope_to }) = &cli.command {
        // Every failure of ingest, the configuration's included, must be temporary for the MTA.
        return Ok(bounce::ingest(cli.config.as_deref(), envelope_to.as_deref()).await);
    }
    let loaded = Settings::load(cli.config.as_deref())?;
    telemetry::init(&loaded.settings.log)?;
    match cli.command {
        Command::CheckConfig => check_config(&loaded),
        Command::Migrate => migrate(&loaded.settings).await,
        Command::Status(args) => {
            let store = open(&loaded.settings).await?;
            status::show(&store, &args, forecast_limits(&loaded.settings)).await
        }
        Command::Campaign(cmd) => {
            let store = open(&loaded.settings).await?;
            let limits = forecast_limits(&loaded.settings);
            campaign::run(&store, &loaded.settings.rules, limits, cmd).await
        }
        Command::Preview { campaign, customer } => {
            let store = open(&loaded.settings).await?;
            campaign::preview(&store, campaign, &customer).await
        }
        Command::Run => daemon::run(&loaded.settings).await,
        Command::Import(args) => {
            let store = open(&loaded.settings).await?;
            import(&store, &loaded.settings, args).await
        }
        Command::Demo { serve } => daemon::demo(&loaded.settings, serve).await,
        // No store: the rules are data in the binary and the operator's file.
        Command::Rules(args::RulesCommand::Show(args)) => rules::show(&loaded.settings, &args),
        Command::TestSend {
            campaign,
            to,
            customer,
        } => {
            let store = open(&loaded.settings).await?;
            campaign::test_send(&store, &loaded.settings, campaign, &to, customer.as_deref()).await
        }
        Command::Export(cmd) => {
            let store = open(&loaded.settings).await?;
            export::run(&store, cmd).await
        }
        Command::Bounce(cmd) => {
            let store = open(&loaded.settings).await?;
            bounce::run(&store, &loaded.settings, cmd).await
        }
        Command::Report(args::ReportCommand::Regulators(args)) => {
            let store = open(&loaded.settings).await?;
            report::regulators(&store, &loaded.settings.rules, &args).await
        }
    }
}

/// The configured limits the deadline forecast falls back on before a campaign sends.
pub(crate) fn forecast_limits(settings: &Settings) -> crate::campaign::forecast::Limits {
    crate::campaign::forecast::Limits {
        global_per_second: settings.limits.global_per_second,
    }
}

/// Opens the store, refusing a schema that is not current.
pub async fn open(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::open(&settings.database, settings.database_password()).await?)
}

fn check_config(loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let p = &loaded.provenance;
    println!("# Effective breach-notifier configuration (secrets redacted).");
    println!("# Layers, later ones winning: built-in defaults");
    for file in &p.files {
        println!("#   file {}", file.display());
    }
    for var in &p.env_vars {
        println!("#   environment {var}");
    }
    print!("{}", loaded.settings.to_redacted_toml());
    print!("{}", limit_shares(&loaded.settings.limits));
    Ok(ExitCode::SUCCESS)
}

/// The share of each cluster-wide limit one daemon takes when 1, 2 or 3 daemons run, as comments
/// after the effective configuration.
fn limit_shares(limits: &crate::config::LimitSettings) -> String {
    use crate::dispatch::limits::Rate;
    let mut rows: Vec<(String, Rate)> = Vec::new();
    if let Some(rate) = limits.global_per_second {
        rows.push(("global".into(), Rate::cluster(rate, limits.global_burst)));
    }
    if let Some(rate) = limits.domain_default_per_second {
        rows.push(("each other domain".into(), Rate::cluster(rate, None)));
    }
    for (domain, rate) in &limits.domains {
        rows.push((format!("domain {domain}"), Rate::cluster(*rate, None)));
    }
    let mut out = String::from(
        "\n# Every limit is for the whole cluster: each running daemon takes an equal share\n\
         # (rate / N, burst / N rounded down, at least 1). N is recounted at once when a daemon starts or\n\
         # stops and within two heartbeats when one dies. Campaign rates and daily caps ([rate] in\n\
         # campaign files) hold for the cluster too.\n",
    );
    if rows.is_empty() {
        out.push_str("# No rate limit is configured.\n");
        return out;
    }
    out.push_str(&format!(
        "# {:<26} {:>20} {:>20} {:>20}\n",
        "one daemon's share of", "1 daemon", "2 daemons", "3 daemons"
    ));
    for (name, rate) in rows {
        let cells: Vec<String> = (1..=3)
            .map(|n| {
                let share = rate.share(n);
                format!("{:.2}/s, burst {}", share.per_second, share.burst).replace(".00/s", "/s")
            })
            .collect();
        out.push_str(&format!(
            "# {name:<26} {:>20} {:>20} {:>20}\n",
            cells[0], cells[1], cells[2]
        ));
    }
    out
}

async fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&settings.database, settings.database_password(), true).await?;
    let applied = store.migrate().await.context("migrate")?;
    let state = store.schema_state().await?;
    if applied.is_empty() {
        println!(
            "schema is up to date ({} database, version {})",
            store.backend(),
            state.version()
        );
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        println!(
            "applied migration(s) {} ({} database, now at version {})",
            list.join(", "),
            store.backend(),
            state.version()
        );
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn import(
    store: &Store,
    settings: &Settings,
    args: crate::cli::args::ImportArgs,
) -> anyhow::Result<ExitCode> {
    // Loaded first: a broken override file stops the import before anything is stored.
    let rules = crate::rules::load(&settings.rules)?;
    let campaign = store.require_campaign(args.campaign).await?;
    let opts = crate::intake::ImportOptions {
        campaign_id: args.campaign,
        source: args.file.clone(),
        rejects: args.rejects.clone(),
        dry_run: args.dry_run,
        actor: cli_actor(),
        progress: true,
        deadline_days: deadlines::import_deadline_days(rules.clone(), &settings.rules, &campaign),
    };
    let summary = crate::intake::import(store, &opts).await?;
    print!(
        "{}",
        summary.render(
            &args.file.display().to_string(),
            args.campaign,
            args.rejects.as_deref()
        )
    );
    print!(
        "{}",
        deadlines::import_codes(&rules, &summary.jurisdictions)
    );
    if !args.dry_run {
        // New codes may have arrived: their deadlines, from the counters (not the rows).
        deadlines::refresh(store, &settings.rules, &campaign).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The actor recorded for changes made from this command line: `cli:USER`.
pub fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
