//! `breach-notifier campaign …`: list, show, and move campaigns through their life cycle. Every state
//! change is recorded by the database with the CLI user as actor.

use std::process::ExitCode;

use anyhow::bail;

use super::{cli_actor, deadlines};
use crate::campaign::CampaignSpec;
use crate::campaign::forecast;
use crate::campaign::message;
use crate::campaign::preflight;
use crate::cli::args::{CampaignCommand, StartArgs, TransitionArgs};
use crate::config::RulesSettings;
use crate::store::{CampaignState, NewCampaign, Recipient, Store};

pub async fn run(
    store: &Store,
    rules: &RulesSettings,
    limits: forecast::Limits,
    cmd: CampaignCommand,
) -> anyhow::Result<ExitCode> {
    use CampaignState::{Cancelled, Draft, Paused, Running};
    match cmd {
        CampaignCommand::Create { file } => create(store, rules, &file).await?,
        CampaignCommand::List => list(store).await?,
        CampaignCommand::Show { id } => show(store, id).await?,
        CampaignCommand::Start(a) => {
            content_check(store, rules, a.transition.id).await?;
            let (transition_args, warning) = check_deadlines(store, rules, limits, a).await?;
            transition(store, transition_args, Running, Draft).await?;
            // After the start only: a start refused for another reason says that one thing.
            if let Some(warning) = warning {
                eprintln!("{warning}");
            }
        }
        CampaignCommand::Pause(a) => transition(store, a, Paused, Running).await?,
        CampaignCommand::Resume(a) => transition(store, a, Running, Paused).await?,
        CampaignCommand::ReleaseWave(a) => {
            let wave = crate::campaign::waves::release_next(
                store,
                a.id,
                &cli_actor(),
                a.reason.as_deref(),
            )
            .await?;
            println!("campaign {}: wave {} released", a.id, wave);
        }
        CampaignCommand::Cancel(a) => set_state(store, a, Cancelled).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Before a draft starts: its deadlines recomputed (the rules file may have changed since the import),
/// then the forecast of its plan. A plan that cannot meet a deadline still ahead is refused, naming
/// the jurisdictions and the fix, unless `--accept-late` gives a reason, which the start records
/// with the forecast; deadlines already passed only warn (no plan meets them, and the notices are
/// owed all the same). Returns the start's arguments with that reason, and the warning to print
/// once started.
async fn check_deadlines(
    store: &Store,
    rules: &RulesSettings,
    limits: forecast::Limits,
    args: StartArgs,
) -> anyhow::Result<(TransitionArgs, Option<String>)> {
    let mut t = args.transition;
    let campaign = store.require_campaign(t.id).await?;
    if campaign.state != CampaignState::Draft {
        return Ok((t, None));
    }
    deadlines::refresh(store, rules, &campaign).await?;
    let f = forecast::of_campaign(store, &campaign, limits, chrono::Utc::now()).await?;
    let Some(late) = f.summary() else {
        return Ok((t, None));
    };
    let warning = Some(format!("warning: campaign {}: {late}", t.id));
    if f.late_by_plan().is_empty() {
        // Deadlines already passed: no rate meets them, and the notices are owed all the same.
        return Ok((t, warning));
    }
    let Some(accepted) = args.accept_late else {
        bail!(
            "campaign {} cannot meet every deadline with its rate, daily cap and waves: {late}. \
             Raise rate.per_second or rate.daily_cap in the campaign file and create it again, or start \
             it anyway with --accept-late \"REASON\" (recorded in its history)",
            t.id
        );
    };
    let given = t.reason.map_or_else(String::new, |r| format!("{r}; "));
    t.reason = Some(format!("{given}accepted late: {accepted} ({late})"));
    Ok((t, warning))
}

/// `campaign create FILE`: checks the file (and the campaign it supplements) and stores it as a draft.
async fn create(
    store: &Store,
    rules: &RulesSettings,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let spec = CampaignSpec::load(file)?;
    // A broken rules file stops here, before the campaign is stored.
    let loaded = crate::rules::load(rules)?;
    if let Some(s) = spec.supplements
        && store.campaign(s).await?.is_none()
    {
        bail!(
            "{}: supplements = {s}, but campaign {s} does not exist",
            file.display()
        );
    }
    // Last before storing: it prints notes, which a refusal above must not follow.
    super::content::check_new(&spec, &loaded)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let id = store
        .create_campaign(&NewCampaign::from(&spec), &cli_actor())
        .await?;
    println!("{id}");
    // No recipients yet, so no rows; recomputed after each import and at start.
    deadlines::refresh(store, rules, &store.require_campaign(id).await?).await?;
    eprintln!(
        "created campaign {id} ({}) as a draft; locales: {}; content hash {}",
        spec.name,
        spec.locales.keys().cloned().collect::<Vec<_>>().join(", "),
        &spec.content_hash()[..16]
    );
    Ok(())
}

async fn list(store: &Store) -> anyhow::Result<()> {
    let campaigns = store.campaigns().await?;
    if campaigns.is_empty() {
        println!("no campaigns yet");
    }
    for c in campaigns {
        println!("{:>6}  {:<10}  {}", c.id, c.state, c.name);
    }
    Ok(())
}

/// `campaign show ID`: the campaign and its history of state changes.
async fn show(store: &Store, id: i64) -> anyhow::Result<()> {
    let c = store.require_campaign(id).await?;
    println!("campaign {}: {}", c.id, c.name);
    println!("state: {}", c.state);
    if let Some(reason) = &c.state_reason {
        println!("reason: {reason}");
    }
    println!("content hash: {}", c.content_hash);
    println!("created: {}", c.created_at.to_rfc3339());
    println!("history:");
    for e in store.campaign_events(id).await? {
        println!(
            "  {}  {} -> {}  by {}{}",
            e.at.to_rfc3339(),
            e.from_state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "(new)".into()),
            e.to_state,
            e.actor,
            e.reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// The content checks of a draft about to start (docs/content-checks.md); any other state is left to
/// the transition's own refusal.
async fn content_check(store: &Store, rules: &RulesSettings, id: i64) -> anyhow::Result<()> {
    let campaign = store.require_campaign(id).await?;
    if campaign.state != CampaignState::Draft {
        return Ok(());
    }
    // A template that does not render is the pre-flight's to report, in the transition.
    if preflight::check(store, &campaign)
        .await?
        .problem()
        .is_some()
    {
        return Ok(());
    }
    let rules = crate::rules::load(rules)?;
    match super::content::check_stored(store, &rules, &campaign).await {
        Ok(0) => Ok(()),
        Ok(n) => {
            eprintln!("content checks: {n} jurisdiction(s) with content rules passed");
            Ok(())
        }
        Err(e) => bail!("campaign {id} cannot start: {e}"),
    }
}

/// `start` only leaves draft and `resume` only leaves paused, even though running can be reached from
/// both: an operator who types `start` on a paused campaign probably means something else.
async fn transition(
    store: &Store,
    args: TransitionArgs,
    to: CampaignState,
    expected_from: CampaignState,
) -> anyhow::Result<()> {
    let current = store.require_campaign(args.id).await?;
    if current.state != expected_from {
        bail!(
            "campaign {} is {}, not {expected_from}: nothing changed (allowed from {}: {})",
            args.id,
            current.state,
            current.state,
            current.state.successor_names()
        );
    }
    if to == CampaignState::Running {
        let report = preflight::check(store, &current).await?;
        if let Some(problem) = report.problem() {
            bail!("campaign {} cannot start: {problem}", args.id);
        }
        eprintln!("pre-flight: {} sample render(s) passed", report.rendered);
    }
    set_state(store, args, to).await
}

/// Moves the campaign to `to`, the CLI user as actor, as the database allows.
async fn set_state(store: &Store, args: TransitionArgs, to: CampaignState) -> anyhow::Result<()> {
    let c = store
        .set_campaign_state(args.id, to, &cli_actor(), args.reason.as_deref())
        .await?;
    println!("campaign {} is now {}", c.id, c.state);
    Ok(())
}

/// `breach-notifier preview`: the exact bytes one customer would receive (the Date header aside).
pub async fn preview(
    store: &Store,
    campaign_id: i64,
    customer_id: &str,
) -> anyhow::Result<ExitCode> {
    let campaign = store.require_campaign(campaign_id).await?;
    let recipient = by_customer(store, campaign_id, customer_id).await?;
    let (spec, templates) = preflight::templates_of(&campaign)?;
    let rendered = templates.render(&recipient)?;
    let Some(to) = recipient.email.as_deref() else {
        bail!(
            "recipient row {} has no email address (channel {}): they are notified by letter",
            recipient.id,
            recipient.channel
        );
    };
    let outgoing = message::build(
        &spec,
        &campaign.content_hash,
        campaign.id,
        recipient.id,
        to,
        &rendered,
        None,
    )?;
    use std::io::Write;
    std::io::stdout().write_all(&outgoing.bytes)?;
    Ok(ExitCode::SUCCESS)
}

/// The recipient of a campaign with this customer id; none is an error.
async fn by_customer(
    store: &Store,
    campaign_id: i64,
    customer_id: &str,
) -> anyhow::Result<Recipient> {
    let recipient = store
        .recipient_by_customer(campaign_id, customer_id)
        .await?;
    recipient.ok_or_else(|| {
        anyhow::anyhow!("campaign {campaign_id} has no recipient with customer_id {customer_id:?}")
    })
}

/// `breach-notifier test-send`: rendered samples to seed addresses, through the configured transport,
/// without touching any recipient.
pub async fn test_send(
    store: &Store,
    settings: &crate::config::Settings,
    campaign_id: i64,
    seeds: &[String],
    customer: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let campaign = store.require_campaign(campaign_id).await?;
    let (spec, templates) = preflight::templates_of(&campaign)?;
    for seed in seeds {
        if crate::intake::normalize_email(seed).is_none() {
            bail!("--to {seed:?} is not a valid email address");
        }
    }
    // One real recipient per notice, that is per locale and `[by_jurisdiction]` variant (or the one
    // asked for); made-up ones when the campaign has none.
    let samples = match customer {
        Some(c) => vec![by_customer(store, campaign_id, c).await?],
        None => {
            let mut by_notice = std::collections::BTreeMap::new();
            for r in store.sample_recipients(campaign_id, 500).await? {
                let variant = templates.variant_for(r.jurisdiction.as_deref());
                let key = (
                    variant.map(str::to_string),
                    templates.locale_for(r.locale.as_deref()),
                );
                by_notice.entry(key).or_insert(r);
            }
            by_notice.into_values().collect()
        }
    };
    let mut rendered = Vec::new();
    for r in &samples {
        let variant = templates.variant_for(r.jurisdiction.as_deref());
        rendered.push((r.id, variant.map(str::to_string), templates.render(r)?));
    }
    if rendered.is_empty() {
        let attributes = serde_json::Map::new();
        let mut sample = crate::campaign::template::sample_recipient(&attributes);
        let general = sample.jurisdiction;
        let variants = templates.variants().iter().map(|v| Some(v.as_str()));
        for code in std::iter::once(general).chain(variants) {
            sample.jurisdiction = code;
            let variant = templates.variant_for(code).map(str::to_string);
            for locale in templates.locales() {
                rendered.push((0, variant.clone(), templates.render_in(locale, &sample)?));
            }
        }
    }
    let transport = crate::transport::Transport::from_settings(&settings.transport)?;
    // Signed as the real notices are, so a seed inbox shows how they will be judged.
    let dkim = message::load_dkim(settings.dkim.as_ref())?;
    let sender = message::Sender::of(&spec)?;
    let mut failures = 0;
    for seed in seeds {
        for (recipient_id, variant, r) in &rendered {
            let out = sender.build_sample(campaign_id, *recipient_id, seed, r, dkim.as_ref())?;
            // The notice's template: `en-US`, or `US-MA/en-US` for a jurisdiction's own.
            let notice = match variant {
                Some(code) => format!("{code}/{}", r.locale),
                None => r.locale.clone(),
            };
            let name = format!(
                "test-{campaign_id}-{recipient_id}-{}",
                notice.replace('/', "-")
            );
            let d = transport.send(&out, &name).await;
            let ok = d.outcome == crate::store::AttemptOutcome::Sent;
            failures += usize::from(!ok);
            println!(
                "{} sample ({notice}, recipient row {recipient_id}) to {seed}: {} {}",
                if ok { "sent" } else { "FAILED" },
                d.code.map(|c| c.to_string()).unwrap_or_default(),
                d.reply
            );
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
