//! Waves: a campaign goes out in steps so that mailbox providers see volume grow while failure and
//! deferral rates stay low (warm-up), and so that a bad list or a bad template is caught on a
//! hundred people, not four million.
//!
//! A wave's members are a key range of email recipient ids, `(first_id, last_id]`, fixed when the wave
//! is released: recipients enter waves in queue order, and a recipient added later (a higher id)
//! joins the open "rest" wave or the next wave not yet released. A wave is released automatically when
//! the previous one has finished and its hold time has passed (`auto`), or by an operator (`manual`:
//! `breach-notifier campaign release-wave ID`, or `UPDATE waves SET released_at = …`). While a wave
//! runs, its guards compare its permanent-failure and deferral rates (attempts since the campaign last
//! started or resumed) with their thresholds; a breach pauses the campaign with the reason.

use chrono::{DateTime, Utc};

use crate::campaign::{CampaignSpec, Release, WaveSize};
use crate::store::{CampaignState, Store, Wave};

/// Attempts a wave needs before its guards judge it (one early failure is not a rate).
pub const GUARD_MIN_ATTEMPTS: u64 = 20;

/// What the dispatcher may claim for a campaign now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Fresh recipients with ids up to this one may be claimed (0: none).
    pub upper: i64,
}

impl Gate {
    pub const OPEN: Gate = Gate { upper: i64::MAX };
    pub const CLOSED: Gate = Gate { upper: 0 };
}

/// Stores a campaign's wave plan if it is not stored yet.
pub async fn ensure_planned(
    store: &Store,
    campaign_id: i64,
    spec: &CampaignSpec,
) -> anyhow::Result<Vec<Wave>> {
    let existing = store.waves(campaign_id).await?;
    if !existing.is_empty() || spec.waves.is_empty() {
        return Ok(existing);
    }
    let rows: Vec<Wave> = spec
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| Wave {
            campaign_id,
            number: i as i32 + 1,
            size_spec: w.size,
            release_rule: w.release,
            hold_minutes: w.hold_minutes as i64,
            max_failure_rate: w.max_failure_rate,
            max_deferral_rate: w.max_deferral_rate,
            released_at: None,
            first_id: None,
            last_id: None,
            planned: None,
            finished_at: None,
        })
        .collect();
    store.insert_waves(&rows).await?;
    Ok(store.waves(campaign_id).await?)
}

/// Fixes wave `number`'s members after `first_id` and marks it released.
async fn release(
    store: &Store,
    campaign_id: i64,
    wave: &Wave,
    first_id: i64,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    // The open-ended wave's members are counted by the store from the counters as it is released.
    let (last_id, planned) = match wave.size_spec {
        WaveSize::Rest => (None, None),
        size => {
            let n = match size {
                WaveSize::Count(n) => n as i64,
                WaveSize::Percent(p) => {
                    let progress = store.progress(Some(campaign_id)).await?;
                    let email = progress.first().map(|p| p.total - p.postal).unwrap_or(0);
                    ((email as f64) * p / 100.0).ceil() as i64
                }
                WaveSize::Rest => unreachable!(),
            };
            match store
                .nth_email_recipient(campaign_id, first_id, n.max(1))
                .await?
            {
                Some((last, count)) => (Some(last), Some(count)),
                // Nobody left to put in it: an empty wave ending where it starts.
                None => (Some(first_id), Some(0)),
            }
        }
    };
    if store
        .release_wave(campaign_id, wave.number, first_id, last_id, planned, now)
        .await?
    {
        tracing::info!(campaign_id, wave = wave.number, ?planned, "wave released");
    }
    Ok(())
}

/// Moves a running campaign's waves along (releases, finishes, guards) and says what may be claimed.
/// Called by the dispatcher every couple of seconds per running campaign.
pub async fn advance(
    store: &Store,
    campaign_id: i64,
    spec: &CampaignSpec,
    actor: &str,
    now: DateTime<Utc>,
    check_finish: bool,
) -> anyhow::Result<Gate> {
    let mut waves = ensure_planned(store, campaign_id, spec).await?;
    if waves.is_empty() {
        return Ok(Gate::OPEN);
    }
    // Members of waves released by an operator's SQL are fixed here, in order.
    for i in 0..waves.len() {
        if waves[i].released_at.is_some() && waves[i].first_id.is_none() {
            let first = if i == 0 {
                0
            } else {
                waves[i - 1].last_id.unwrap_or(i64::MAX)
            };
            if i > 0 && waves[i - 1].first_id.is_none() {
                break;
            }
            release(store, campaign_id, &waves[i], first, now).await?;
            waves = store.waves(campaign_id).await?;
        }
    }
    let current = waves.iter().rposition(|w| w.first_id.is_some());
    let Some(ci) = current else {
        // Nothing released yet: the first wave goes now unless it waits for an operator.
        if waves[0].release_rule == Release::Auto {
            release(store, campaign_id, &waves[0], 0, now).await?;
            return Box::pin(advance(store, campaign_id, spec, actor, now, check_finish)).await;
        }
        return Ok(Gate::CLOSED);
    };
    let w = &waves[ci];
    let first = w.first_id.unwrap_or(0);

    // Guards, on what the wave did since the campaign last (re)started.
    if w.finished_at.is_none() {
        if guard_breached(store, campaign_id, w, actor, now).await? {
            return Ok(Gate::CLOSED);
        }
        // Its open members come from its counters; asked only when the dispatcher found no more fresh
        // work in it (`check_finish`).
        if check_finish && w.last_id.is_some() && store.wave_open(campaign_id, w.number).await? == 0
        {
            store.finish_wave(campaign_id, w.number, now).await?;
            tracing::info!(campaign_id, wave = w.number, "wave finished");
            return Box::pin(advance(store, campaign_id, spec, actor, now, check_finish)).await;
        }
    } else if let Some(next) = waves.get(ci + 1) {
        let hold = chrono::Duration::minutes(w.hold_minutes);
        let due = w.finished_at.map(|f| f + hold <= now).unwrap_or(false);
        if next.release_rule == Release::Auto && due {
            release(store, campaign_id, next, w.last_id.unwrap_or(first), now).await?;
            return Box::pin(advance(store, campaign_id, spec, actor, now, check_finish)).await;
        }
    }
    Ok(Gate {
        upper: w.last_id.unwrap_or(i64::MAX),
    })
}

/// Checks a running wave's guards on its attempts since the campaign last (re)started; a breach pauses
/// the campaign with the reason. Returns whether one did.
async fn guard_breached(
    store: &Store,
    campaign_id: i64,
    w: &Wave,
    actor: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let since = store
        .campaign_events(campaign_id)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.to_state == CampaignState::Running)
        .map(|e| e.at)
        .unwrap_or(now);
    let a = store.wave_attempts(campaign_id, w.number, since).await?;
    if a.total < GUARD_MIN_ATTEMPTS {
        return Ok(false);
    }
    let checks = [
        ("permanent-failure", a.permanent, w.max_failure_rate),
        ("deferral", a.temporary, w.max_deferral_rate),
    ];
    for (what, n, limit) in checks {
        let rate = n as f64 / a.total as f64;
        if let Some(limit) = limit
            && rate > limit
        {
            let reason = format!(
                "wave {} guard: {what} rate {:.1}% is above {:.1}% ({n} of {} attempts); check deliverability, then resume",
                w.number,
                rate * 100.0,
                limit * 100.0,
                a.total
            );
            tracing::warn!(campaign_id, wave = w.number, "{reason}");
            store
                .set_campaign_state(campaign_id, CampaignState::Paused, actor, Some(&reason))
                .await?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// A completed campaign's released waves are all finished (the open-ended `rest` wave only ends here).
pub async fn finish_all(store: &Store, campaign_id: i64, now: DateTime<Utc>) -> anyhow::Result<()> {
    for w in store.waves(campaign_id).await? {
        if w.released_at.is_some() && w.finished_at.is_none() {
            store.finish_wave(campaign_id, w.number, now).await?;
        }
    }
    Ok(())
}

/// `campaign release-wave`: releases the next wave now, whatever its rule (an operator's decision),
/// provided the one before it has been released. Returns its number.
pub async fn release_next(
    store: &Store,
    campaign_id: i64,
    actor: &str,
    reason: Option<&str>,
) -> anyhow::Result<i32> {
    let campaign = store.require_campaign(campaign_id).await?;
    let spec = CampaignSpec::from_stored(&campaign.definition)
        .map_err(|e| anyhow::anyhow!("campaign {campaign_id}: {e}"))?;
    let waves = ensure_planned(store, campaign_id, &spec).await?;
    let Some(next) = waves.iter().position(|w| w.released_at.is_none()) else {
        anyhow::bail!("campaign {campaign_id} has no wave waiting to be released");
    };
    let first = if next == 0 {
        0
    } else {
        match waves[next - 1].last_id {
            Some(last) => last,
            None => anyhow::bail!(
                "campaign {campaign_id}: wave {} has no end; nothing comes after it",
                waves[next - 1].number
            ),
        }
    };
    release(store, campaign_id, &waves[next], first, Utc::now()).await?;
    tracing::info!(
        campaign_id,
        wave = waves[next].number,
        actor,
        reason,
        "wave released by an operator"
    );
    Ok(waves[next].number)
}
