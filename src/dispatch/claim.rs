//! The claim round: for each running campaign, lease what is due and fits (the room under
//! `max_in_flight`, the campaign's daily cap for the cluster, the released waves), then start one
//! delivery task per leased recipient. A claim still running when the shutdown signal comes is
//! abandoned here (and cancelled in the database by the drain: `Store::cancel_claims`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::Instrument;

use super::campaigns::{Active, Campaigns};
use super::delivery::DeliveryTask;
use super::{Shared, Wiring};
use crate::store::{Claim, ClaimPosition, ClaimRequest, DailyCap, Recipient};

/// One pass over the running campaigns: claims what is due and fits and starts its delivery tasks.
/// Returns how many recipients were claimed.
pub(super) async fn round(
    shared: &Arc<Shared>,
    campaigns: &mut Campaigns,
    wiring: &Wiring,
) -> anyhow::Result<usize> {
    let mut claimed = 0;
    let mut finished = Vec::new();
    for a in campaigns.iter_mut() {
        if !a.run.is_running() {
            continue;
        }
        let room = room(shared);
        if room == 0 {
            break;
        }
        if a.claims.idle_until > Instant::now() {
            continue;
        }
        let span = tracing::info_span!("claim", campaign_id = a.run.id);
        let Some(claim) = claim(shared, a, room, wiring).instrument(span).await? else {
            // The shutdown signal came first.
            return Ok(claimed);
        };
        if claim.cap_reached {
            continue;
        }
        if claim.recipients.is_empty() {
            if claim.exhausted {
                finished.push(a.run.id);
            }
            continue;
        }
        claimed += claim.recipients.len();
        start_deliveries(shared, a, claim.recipients, wiring);
    }
    for campaign_id in finished {
        campaigns.complete_if_done(shared, campaign_id).await?;
    }
    Ok(claimed)
}

/// How many recipients one claim may take: what `max_in_flight` leaves, at most a batch.
fn room(shared: &Shared) -> u32 {
    let held = shared.in_flight.len() as u32;
    let s = &shared.settings;
    s.max_in_flight.saturating_sub(held).min(s.batch_size)
}

/// Claims up to `room` recipients of one campaign and moves its cursor; `None` if the shutdown
/// signal came first.
async fn claim(
    shared: &Shared,
    a: &mut Active,
    room: u32,
    wiring: &Wiring,
) -> anyhow::Result<Option<Claim>> {
    let (run, c) = (&a.run, &mut a.claims);
    if c.last_rescan.elapsed() >= Duration::from_secs(shared.settings.rescan_secs.max(1)) {
        c.cursor = ClaimPosition::START;
        c.last_rescan = Instant::now();
    }
    // A daily cap holds for the cluster: what was sent today and what every live daemon holds for
    // this campaign (this one's from `in_flight`) count against it.
    let now = Utc::now();
    let daily_cap = run.spec.rate.daily_cap.map(|cap| DailyCap {
        cap,
        day_start: now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc(),
        held_here: shared.in_flight.of_campaign(run.id),
        live_since: now - shared.heartbeat_ttl(),
    });
    let request = ClaimRequest {
        campaign_id: run.id,
        instance: &shared.instance.id,
        cursor: c.cursor,
        upper: c.gate.upper,
        limit: room,
        lease: Duration::from_secs(shared.settings.lease_secs),
        now,
        daily_cap,
    };
    let claim = tokio::select! {
        claim = shared.store.claim_batch(&request) => claim?,
        _ = wiring.stop.signal.cancelled() => return Ok(None),
    };
    c.cursor = claim.cursor;
    if claim.cap_reached {
        c.idle_until = Instant::now() + Duration::from_secs(30);
    } else if claim.exhausted {
        c.wave_drained = true;
        c.idle_until = Instant::now() + shared.poll_interval();
    }
    Ok(Some(claim))
}

/// Holds the claimed recipients and starts one delivery task for each.
fn start_deliveries(shared: &Arc<Shared>, a: &Active, recipients: Vec<Recipient>, wiring: &Wiring) {
    let campaign_id = a.run.id;
    shared.metrics.claimed(recipients.len() as u64);
    shared
        .in_flight
        .hold(campaign_id, recipients.iter().map(|r| r.id));
    tracing::debug!(campaign_id, claimed = recipients.len(), "claimed");
    for recipient in recipients {
        wiring.spawn(DeliveryTask {
            recipient,
            campaign: a.run.clone(),
            shared: shared.clone(),
            done: wiring.done.clone(),
            stop: wiring.stop.drain.clone(),
        });
    }
}
