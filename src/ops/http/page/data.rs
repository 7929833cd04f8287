//! What the pages show, read once for every viewer: a snapshot per page (the campaigns list, one
//! campaign) kept for [`CACHE_FOR`], and a single flight to refresh it, so that twenty people polling
//! cost the database what one does. The snapshots are plain data (`Serialize`) for the templates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::chart::{self, RateChart, Segment};
use crate::campaign::CampaignSpec;
use crate::campaign::forecast::Limits;
use crate::ops::status::{self, CampaignStatus};
use crate::store::deadlines::JurisdictionProgress;
use crate::store::status_page::{FailureGroup, InstanceRow};
use crate::store::{CampaignEvent, Store, Wave};

/// How long a snapshot is served before the next request reads again.
pub const CACHE_FOR: Duration = Duration::from_millis(1500);
/// Failure groups shown, largest first.
const FAILURE_GROUPS: u32 = 25;
/// Campaign events shown, newest first.
const EVENTS: usize = 50;
/// The most snapshots kept at once.
const MAX_SLOTS: usize = 256;
/// Daemons whose heartbeat is older than this are not listed.
const DAEMONS_SEEN_WITHIN: chrono::Duration = chrono::Duration::hours(1);

/// The campaigns list.
#[derive(Debug, Serialize)]
pub struct ListSnapshot {
    pub taken_at: DateTime<Utc>,
    pub campaigns: Vec<CampaignLine>,
}

/// A campaign with its bar.
#[derive(Debug, Serialize)]
pub struct CampaignLine {
    pub status: CampaignStatus,
    pub segments: Vec<Segment>,
    pub bar: String,
}

/// One campaign's page.
#[derive(Debug, Serialize)]
pub struct CampaignSnapshot {
    pub taken_at: DateTime<Utc>,
    pub line: CampaignLine,
    pub state_reason: Option<String>,
    pub waves: Vec<WaveLine>,
    /// Late ones first (as `status`).
    pub jurisdictions: Vec<JurisdictionLine>,
    pub charts: Vec<Chart>,
    pub failures: Vec<FailureGroup>,
    pub daemons: Vec<Daemon>,
    pub events: Vec<CampaignEvent>,
    /// A wave waits for an operator (`release-wave` applies).
    pub wave_waiting: bool,
}

/// A wave's progress beside its plan's guards.
#[derive(Debug, Serialize)]
pub struct WaveLine {
    pub progress: crate::store::WaveProgress,
    /// Its hold time and guards, in words.
    pub guards: Vec<String>,
}

/// A jurisdiction's row and whether it is late.
#[derive(Debug, Serialize)]
pub struct JurisdictionLine {
    #[serde(flatten)]
    pub row: JurisdictionProgress,
    pub late: bool,
}

/// A rate chart and its window's name.
#[derive(Debug, Serialize)]
pub struct Chart {
    pub title: &'static str,
    pub svg: String,
}

/// A daemon with the age of its heartbeat.
#[derive(Debug, Serialize)]
pub struct Daemon {
    #[serde(flatten)]
    pub row: InstanceRow,
    pub heartbeat_age_seconds: i64,
}

/// The windows drawn: (title, span, interval), in seconds.
const WINDOWS: [(&str, i64, i64); 3] =
    [("1h", 3600, 60), ("6h", 6 * 3600, 300), ("24h", 86400, 900)];

fn line(status: CampaignStatus) -> CampaignLine {
    let segments = chart::segments(&status.progress);
    let bar = chart::stacked_bar(&segments);
    CampaignLine {
        status,
        segments,
        bar,
    }
}

/// Reads the campaigns list.
pub async fn list(store: &Store) -> anyhow::Result<ListSnapshot> {
    let campaigns = status::collect(store, None).await?;
    Ok(ListSnapshot {
        taken_at: Utc::now(),
        campaigns: campaigns.into_iter().map(line).collect(),
    })
}

/// Reads one campaign's page; `None` when there is no such campaign.
pub async fn campaign(
    store: &Store,
    id: i64,
    limits: Limits,
) -> anyhow::Result<Option<CampaignSnapshot>> {
    let Some(campaign) = store.campaign(id).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let (mut statuses, _) = status::collect_with_forecast(store, Some(id), limits).await?;
    let Some(status) = statuses.pop() else {
        return Ok(None);
    };
    let plans = store.waves(id).await?;
    let waves = wave_lines(&status, &plans);
    let jurisdictions = status
        .jurisdictions
        .iter()
        .map(|row| JurisdictionLine {
            late: row.late(),
            row: row.clone(),
        })
        .collect();
    // Waves are planned when the first is released: until then the campaign file says how many.
    let planned = CampaignSpec::from_stored(&campaign.definition).map_or(0, |s| s.waves.len());
    let released = plans.iter().filter(|w| w.released_at.is_some()).count();
    let wave_waiting = planned.max(plans.len()) > released;
    let end = now.timestamp() / 10 * 10 + 10;
    let mut charts = Vec::with_capacity(WINDOWS.len());
    for (title, span, step) in WINDOWS {
        let since = DateTime::from_timestamp(end - span, 0).unwrap_or(now);
        let points = store.rate_series(id, since, step).await?;
        let svg = RateChart {
            title,
            points: &points,
            end,
            span,
            step,
        }
        .svg();
        charts.push(Chart { title, svg });
    }
    let failures = store.failure_groups(id, FAILURE_GROUPS).await?;
    let daemons = store
        .instances_since(now - DAEMONS_SEEN_WITHIN)
        .await?
        .into_iter()
        .map(|row| Daemon {
            heartbeat_age_seconds: (now - row.heartbeat_at).num_seconds().max(0),
            row,
        })
        .collect();
    let mut events = store.campaign_events(id).await?;
    events.reverse();
    events.truncate(EVENTS);
    Ok(Some(CampaignSnapshot {
        taken_at: now,
        line: line(status),
        state_reason: campaign.state_reason,
        waves,
        jurisdictions,
        charts,
        failures,
        daemons,
        events,
        wave_waiting,
    }))
}

fn wave_lines(status: &CampaignStatus, plans: &[Wave]) -> Vec<WaveLine> {
    status
        .waves
        .iter()
        .map(|w| {
            let plan = plans.iter().find(|p| p.number == w.number);
            let mut guards = Vec::new();
            if let Some(p) = plan {
                if p.hold_minutes > 0 {
                    guards.push(format!("hold {} min", p.hold_minutes));
                }
                if let Some(r) = p.max_failure_rate {
                    guards.push(format!("failures ≤ {r}"));
                }
                if let Some(r) = p.max_deferral_rate {
                    guards.push(format!("deferrals ≤ {r}"));
                }
            }
            WaveLine {
                progress: w.clone(),
                guards,
            }
        })
        .collect()
}

/// What a snapshot is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    List,
    Campaign(i64),
    /// `/api/status` (all campaigns, or one with its jurisdictions).
    Api(Option<i64>),
}

/// A cached value of any page, shared.
#[derive(Clone)]
pub enum Cached {
    List(Arc<ListSnapshot>),
    Campaign(Option<Arc<CampaignSnapshot>>),
    /// `status --json`'s text ([`status::to_json`]).
    Api(Arc<String>),
}

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Cached)>>>;

/// The snapshots, one slot per [`Key`]. A slot's lock is held while it is refreshed: concurrent
/// viewers of one page wait for that one read instead of each starting another (as `/readyz`).
pub struct Cache {
    store: Store,
    /// What the deadline forecast assumes before a campaign sends (as `status`).
    limits: Limits,
    slots: Mutex<HashMap<Key, Slot>>,
}

impl Cache {
    pub fn new(store: Store, limits: Limits) -> Cache {
        Cache {
            store,
            limits,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The snapshot for `key`, read again when older than [`CACHE_FOR`].
    pub async fn get(&self, key: Key) -> anyhow::Result<Cached> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            // Ids come from URLs: a client asking for many must not grow the map without end.
            if slots.len() >= MAX_SLOTS && !slots.contains_key(&key) {
                slots.clear();
            }
            slots.entry(key).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some((at, value)) = &*slot
            && at.elapsed() < CACHE_FOR
        {
            return Ok(value.clone());
        }
        let value = self.read(key).await?;
        *slot = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    /// Forgets every snapshot: after an action, the next page shows its effect.
    pub fn clear(&self) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    async fn read(&self, key: Key) -> anyhow::Result<Cached> {
        Ok(match key {
            Key::List => Cached::List(Arc::new(list(&self.store).await?)),
            Key::Campaign(id) => {
                Cached::Campaign(campaign(&self.store, id, self.limits).await?.map(Arc::new))
            }
            Key::Api(id) => {
                let (rows, forecast) =
                    status::collect_with_forecast(&self.store, id, self.limits).await?;
                Cached::Api(Arc::new(status::to_json(&rows, forecast.as_ref())?))
            }
        })
    }
}
