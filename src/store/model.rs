//! What the store reads and writes: the row types and the text enums of the schema, shared by both
//! backends. Rows decode through `#[derive(sqlx::FromRow)]` (generic over the row type, so one derive
//! serves PostgreSQL and SQLite), times through [`DbTime`] and the text enums
//! through the `sqlx::Type` impls `text_enum!` writes, so a query shared by the backends needs no
//! per-backend decoding.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::time::{DbTime, DbTimeOpt};
use super::{InsertOutcome, Result, StoreError};

/// Implements `as_str`, `Display`, `FromStr` and sqlx's `Type`/`Encode`/`Decode` (as TEXT, on any
/// backend whose `str` is a type) for a string-valued enum stored in a TEXT column.
macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::Corrupt(format!(
                        "unknown {} {other:?}", stringify!($name)))),
                }
            }
        }
        text_column!($name);
    };
}

/// sqlx's `Type`, `Encode` and `Decode` for a type with `as_str`-like text (`Display`) and `FromStr`,
/// stored as TEXT.
macro_rules! text_column {
    ($name:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }
        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut DB::ArgumentBuffer,
            ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode(self.to_string(), buf)
            }
        }
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: DB::ValueRef<'r>,
            ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
                Ok(<&'r str as sqlx::Decode<'r, DB>>::decode(value)?.parse()?)
            }
        }
    };
}

/// A campaign's life-cycle state. The database enforces the transitions (see `docs/database.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignState {
    Draft,
    Running,
    Paused,
    Completed,
    Cancelled,
}
text_enum!(CampaignState {
    Draft => "draft", Running => "running", Paused => "paused",
    Completed => "completed", Cancelled => "cancelled",
});

impl CampaignState {
    /// The states this one may change to; mirrored by the database triggers.
    pub fn successors(self) -> &'static [CampaignState] {
        use CampaignState::*;
        match self {
            Draft => &[Running, Cancelled],
            Running => &[Paused, Completed, Cancelled],
            Paused => &[Running, Cancelled],
            Completed | Cancelled => &[],
        }
    }

    pub fn can_become(self, to: CampaignState) -> bool {
        self.successors().contains(&to)
    }

    /// The successors' names, as `running, cancelled`.
    pub fn successor_names(self) -> String {
        let names: Vec<&str> = self.successors().iter().map(|s| s.as_str()).collect();
        names.join(", ")
    }
}

/// Where a recipient stands in the queue. `sent`, `failed`, `cancelled`, `postal` and `bounced` are
/// terminal (`sent` may still become `bounced`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Waiting for its first attempt.
    Queued,
    /// Attempted, got a temporary failure, waiting for `retry_due_at`.
    Deferred,
    /// A relay (or the file outbox) accepted the notice.
    Sent,
    /// Permanently refused or expired; flagged for postal follow-up.
    Failed,
    /// The campaign was cancelled before this recipient was notified.
    Cancelled,
    /// Not to be emailed (no usable address or no electronic consent): needs a letter.
    Postal,
    /// The relay accepted the notice, and a bounce that came back later says the mailbox never got
    /// it; flagged for postal follow-up.
    Bounced,
}
text_enum!(RecipientStatus {
    Queued => "queued", Deferred => "deferred", Sent => "sent", Failed => "failed",
    Cancelled => "cancelled", Postal => "postal", Bounced => "bounced",
});

impl RecipientStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, RecipientStatus::Queued | RecipientStatus::Deferred)
    }
}

/// Where a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportSource {
    /// `bounce ingest` on standard input (an MTA's pipe transport).
    Pipe,
    /// A file of the Maildir the daemon watches.
    Maildir,
    /// An Amazon SES notification through SNS.
    Ses,
    /// A SendGrid event webhook.
    Sendgrid,
}
text_enum!(ReportSource {
    Pipe => "pipe", Maildir => "maildir", Ses => "ses", Sendgrid => "sendgrid",
});

/// How a recipient is to be notified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[default]
    Email,
    Postal,
}
text_enum!(Channel { Email => "email", Postal => "postal" });

/// What one delivery attempt came to, as recorded in `delivery_attempts.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    /// 2xx: accepted.
    Sent,
    /// 4xx, connection or timeout error before the message was handed over: retry later.
    Transient,
    /// 5xx: refused for good.
    Permanent,
    /// The connection failed after DATA: the relay may or may not have the message. Retried with the
    /// same Message-ID, so a duplicate can be recognised.
    Ambiguous,
}
text_enum!(AttemptOutcome {
    Sent => "sent", Transient => "transient", Permanent => "permanent", Ambiguous => "ambiguous",
});

/// A campaign definition to store as a draft.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    /// The campaign file (TOML) and its templates, as stored for evidence.
    pub definition: String,
    pub content_hash: String,
    pub email_without_consent: bool,
    pub discovered_at: Option<NaiveDate>,
    /// When the company determined that a breach occurred, if the campaign file says.
    pub determined_at: Option<NaiveDate>,
    pub supplements: Option<i64>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub state: CampaignState,
    pub definition: String,
    pub content_hash: String,
    pub email_without_consent: bool,
    pub discovered_at: Option<NaiveDate>,
    pub determined_at: Option<NaiveDate>,
    pub supplements: Option<i64>,
    pub state_reason: Option<String>,
    #[sqlx(try_from = "DbTime")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "DbTime")]
    pub updated_at: DateTime<Utc>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub started_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// One row of the append-only `campaign_events` table.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CampaignEvent {
    pub id: i64,
    pub campaign_id: i64,
    #[sqlx(try_from = "DbTime")]
    pub at: DateTime<Utc>,
    pub from_state: Option<CampaignState>,
    pub to_state: CampaignState,
    pub actor: String,
    pub reason: Option<String>,
}

/// A recipient to add to a campaign's queue. Validated by the caller (intake).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewRecipient {
    pub customer_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub jurisdiction: Option<String>,
    pub electronic_consent: bool,
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    /// Every other import column, for templates.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub channel: Channel,
    /// The import that brought this recipient in, if any.
    pub import_id: Option<i64>,
    /// The recipient's deadline as a day number ([`ClaimPosition`]); 0 without one.
    pub deadline_day: i32,
}

/// The reconciliation of one imported list: `read = accepted + rejected + duplicates`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ImportCounts {
    /// Data rows read (the header excluded).
    #[sqlx(rename = "rows_read", try_from = "i64")]
    pub read: u64,
    /// Rows refused, each written to the rejects file with its reason.
    #[sqlx(try_from = "i64")]
    pub rejected: u64,
    /// Rows whose customer was already in the campaign (or earlier in the same list).
    #[sqlx(try_from = "i64")]
    pub duplicates: u64,
    /// Accepted rows to be emailed.
    #[sqlx(try_from = "i64")]
    pub email: u64,
    /// Accepted rows that need a letter (no usable email, or no electronic consent).
    #[sqlx(try_from = "i64")]
    pub postal: u64,
    /// Of the postal rows, those that had an email value that could not be used (not stored).
    #[sqlx(skip)]
    pub unusable_email: u64,
}

impl ImportCounts {
    pub fn accepted(&self) -> u64 {
        self.email + self.postal
    }

    /// Adds what the store did with one batch.
    pub fn add(&mut self, batch: InsertOutcome) {
        self.email += batch.email;
        self.postal += batch.postal;
        self.duplicates += batch.duplicates;
    }

    /// The identity every import must satisfy.
    pub fn reconciles(&self) -> bool {
        self.read == self.accepted() + self.rejected + self.duplicates
    }
}

/// One row of `imports`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ImportRecord {
    pub id: i64,
    pub campaign_id: i64,
    /// The file name as given (or `-` for standard input).
    pub source_name: String,
    pub sha256: String,
    #[sqlx(flatten)]
    pub counts: ImportCounts,
    /// Addresses used by more than one customer of the campaign, after this import.
    #[sqlx(try_from = "i64")]
    pub shared_addresses: u64,
    pub actor: String,
    #[sqlx(try_from = "DbTime")]
    pub started_at: DateTime<Utc>,
    #[sqlx(try_from = "DbTime")]
    pub finished_at: DateTime<Utc>,
}

/// A recipient row as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Recipient {
    pub id: i64,
    pub campaign_id: i64,
    /// The first key of the claim order ([`ClaimPosition`]).
    pub deadline_day: i32,
    pub customer_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub jurisdiction: Option<String>,
    pub electronic_consent: bool,
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    #[sqlx(json)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub channel: Channel,
    pub status: RecipientStatus,
    pub attempts: i32,
    #[sqlx(try_from = "DbTime")]
    pub next_attempt_at: DateTime<Utc>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub retry_due_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub message_id: Option<String>,
    pub last_code: Option<i32>,
    pub last_reply: Option<String>,
    pub fail_reason: Option<String>,
    pub postal_followup: bool,
    #[sqlx(try_from = "DbTimeOpt")]
    pub first_attempt_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// A batch of work leased to one instance.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// The leased recipients, in claim order ([`ClaimPosition`]).
    pub recipients: Vec<Recipient>,
    /// Resume the fresh-work scan after this position next time.
    pub cursor: ClaimPosition,
    /// The fresh-work scan found nothing more after the cursor: start again from 0 next time, to pick
    /// up rows whose lease expired behind the cursor.
    pub exhausted: bool,
    /// The campaign's daily cap left no room: nothing was claimed ([`ClaimRequest::daily_cap`]).
    pub cap_reached: bool,
}

impl Claim {
    /// The claim made of the deferred rows and the fresh rows one claim leased, when it asked for
    /// `asked_fresh` fresh ones after `cursor`: in claim order, with the cursor moved past the fresh
    /// rows.
    pub(super) fn from_leased(
        retries: Vec<Recipient>,
        fresh: Vec<Recipient>,
        asked_fresh: i64,
        cursor: ClaimPosition,
    ) -> Claim {
        let exhausted = (fresh.len() as i64) < asked_fresh;
        let next_cursor = fresh
            .iter()
            .map(ClaimPosition::of)
            .max()
            .unwrap_or(cursor)
            .max(cursor);
        let mut recipients = retries;
        recipients.extend(fresh);
        recipients.sort_by_key(ClaimPosition::of);
        Claim {
            recipients,
            cursor: next_cursor,
            exhausted,
            cap_reached: false,
        }
    }
}

/// Where a campaign's fresh claims stand in the claim order: the recipients' deadline day (days since
/// 1970-01-01 of their jurisdiction's deadline, 0 when the campaign has none), then queue order (id).
/// Fresh work is claimed after the position, earliest deadline first (docs/deadlines.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimPosition {
    pub deadline_day: i32,
    pub id: i64,
}

/// A position in a campaign without deadlines (every deadline day 0): after this id, in queue order.
impl From<i64> for ClaimPosition {
    fn from(id: i64) -> Self {
        ClaimPosition {
            deadline_day: 0,
            id,
        }
    }
}

impl ClaimPosition {
    /// Before every recipient: a scan from the start.
    pub const START: ClaimPosition = ClaimPosition {
        deadline_day: i32::MIN,
        id: 0,
    };

    /// The position of a claimed recipient.
    pub fn of(r: &Recipient) -> ClaimPosition {
        ClaimPosition {
            deadline_day: r.deadline_day,
            id: r.id,
        }
    }
}

/// A deadline as the day number recipients carry ([`ClaimPosition::deadline_day`]): days since
/// 1970-01-01.
pub fn deadline_day(deadline: chrono::NaiveDate) -> i32 {
    let days = (deadline - chrono::DateTime::UNIX_EPOCH.date_naive()).num_days();
    i32::try_from(days).unwrap_or(i32::MAX)
}

/// A campaign's daily cap, for a claim that must respect it across the cluster.
#[derive(Debug, Clone, Copy)]
pub struct DailyCap {
    /// Notices the campaign may send per day (UTC).
    pub cap: u64,
    /// The start of today (UTC midnight).
    pub day_start: DateTime<Utc>,
    /// Notices of this campaign this daemon holds now (claimed, outcome not yet recorded).
    pub held_here: u64,
    /// Daemons whose heartbeat is older than this are gone; their holds no longer count.
    pub live_since: DateTime<Utc>,
}

impl DailyCap {
    /// What may still be claimed when `used` notices were sent today or are held by other daemons.
    pub fn room(&self, used: u64) -> u64 {
        self.cap.saturating_sub(used.saturating_add(self.held_here))
    }
}

/// What [`Store::claim_batch`](super::Store::claim_batch) is to lease: up to `limit` due email
/// recipients of a campaign, to `instance`, until `now + lease`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub campaign_id: i64,
    pub instance: &'a str,
    /// Fresh rows are taken after this position (the caller's scan position).
    pub cursor: ClaimPosition,
    /// Fresh rows are taken up to this id (the end of the released waves; `i64::MAX`: no end).
    pub upper: i64,
    pub limit: u32,
    pub lease: Duration,
    pub now: DateTime<Utc>,
    /// The campaign's daily cap, when it has one: the claim then holds it across the cluster.
    pub daily_cap: Option<DailyCap>,
}

impl ClaimRequest<'_> {
    /// When the lease ends.
    pub fn until(&self) -> DateTime<Utc> {
        self.now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX)
    }
}

/// How a recipient leaves an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    Sent,
    /// Try again at this time.
    Retry {
        at: DateTime<Utc>,
    },
    /// Give up; the recipient needs a letter.
    Failed {
        reason: String,
    },
}

impl NextState {
    /// The recipient's status, retry time and failure reason after the attempt, as the batch
    /// updates bind them.
    pub(super) fn columns(&self) -> (RecipientStatus, Option<DateTime<Utc>>, Option<&str>) {
        match self {
            NextState::Sent => (RecipientStatus::Sent, None, None),
            NextState::Retry { at } => (RecipientStatus::Deferred, Some(*at), None),
            NextState::Failed { reason } => (RecipientStatus::Failed, None, Some(reason)),
        }
    }
}

/// The record of one attempt and its consequence for the recipient.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub recipient_id: i64,
    pub campaign_id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub smtp_code: Option<i32>,
    pub reply: Option<String>,
    pub message_id: String,
    pub next: NextState,
}

/// One row of `delivery_attempts`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub id: i64,
    pub recipient_id: i64,
    pub campaign_id: i64,
    pub attempt: i32,
    pub instance: String,
    #[sqlx(try_from = "DbTime")]
    pub started_at: DateTime<Utc>,
    #[sqlx(try_from = "DbTime")]
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub smtp_code: Option<i32>,
    pub reply: Option<String>,
    pub message_id: String,
}

/// One row of the `campaign_progress` view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CampaignProgress {
    pub campaign_id: i64,
    pub name: String,
    pub state: CampaignState,
    pub total: i64,
    pub queued: i64,
    pub deferred: i64,
    pub sent: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub postal: i64,
    /// Sent, then bounced (asynchronously): flagged for a letter.
    pub bounced: i64,
    #[sqlx(try_from = "DbTime")]
    pub last_change_at: DateTime<Utc>,
    /// Notices sent in the last minute and the last hour (windows ending where the current 10-second
    /// bucket of `send_buckets` begins).
    pub sent_last_minute: i64,
    pub sent_last_hour: i64,
    /// Seconds until every open recipient is attempted at the last minute's rate (the last hour's when
    /// the last minute was quiet); none when nothing is open or nothing is moving.
    pub eta_seconds: Option<i64>,
}

impl CampaignProgress {
    /// Recipients not yet in a terminal state.
    pub fn open(&self) -> i64 {
        self.queued + self.deferred
    }
}

/// A running daemon, as announced in `instances`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub hostname: String,
    pub pid: i32,
    pub version: String,
}

/// One wave of a campaign's plan, as stored in `waves`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Wave {
    pub campaign_id: i64,
    pub number: i32,
    /// Stored as `1000`, `30%` or `rest`, as in the campaign file.
    pub size_spec: WaveSize,
    pub release_rule: Release,
    #[sqlx(try_from = "i32")]
    pub hold_minutes: i64,
    pub max_failure_rate: Option<f64>,
    pub max_deferral_rate: Option<f64>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub released_at: Option<DateTime<Utc>>,
    /// Members are the email recipients with `first_id < id <= last_id` (`last_id` None: no upper end).
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub planned: Option<i64>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// How big a wave is. Written as in the campaign file: `1000`, `"10%"` or `"rest"`; stored as the
/// text `1000`, `10%` or `rest` (`waves.size_spec`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Count(u64),
    Percent(f64),
    /// Everyone not in an earlier wave, including recipients added later.
    Rest,
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaveSize::Count(n) => write!(f, "{n}"),
            WaveSize::Percent(p) => write!(f, "{p}%"),
            WaveSize::Rest => f.write_str("rest"),
        }
    }
}

impl FromStr for WaveSize {
    type Err = StoreError;
    /// The stored text (see [`WaveSize`]); the campaign file's rules are [`WaveSize`]'s `Deserialize`.
    fn from_str(s: &str) -> Result<Self> {
        if s == "rest" {
            return Ok(WaveSize::Rest);
        }
        let parsed = match s.strip_suffix('%') {
            Some(p) => p.trim().parse().ok().map(WaveSize::Percent),
            None => s.parse().ok().map(WaveSize::Count),
        };
        parsed.ok_or_else(|| StoreError::Corrupt(format!("unknown WaveSize {s:?}")))
    }
}
text_column!(WaveSize);

impl Serialize for WaveSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            WaveSize::Count(n) => s.serialize_u64(*n),
            WaveSize::Percent(p) => s.serialize_str(&format!("{p}%")),
            WaveSize::Rest => s.serialize_str("rest"),
        }
    }
}

impl<'de> Deserialize<'de> for WaveSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(0) => Err(serde::de::Error::custom("a wave size must be at least 1")),
            Raw::Count(n) => Ok(WaveSize::Count(n)),
            Raw::Text(t) if t == "rest" => Ok(WaveSize::Rest),
            Raw::Text(t) => match t
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
            {
                Some(p) if p > 0.0 && p <= 100.0 => Ok(WaveSize::Percent(p)),
                _ => Err(serde::de::Error::custom(format!(
                    "wave size {t:?}: use a count (1000), a percentage (\"10%\") or \"rest\""
                ))),
            },
        }
    }
}

/// When a wave may begin (`waves.release_rule`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Release {
    /// When the previous wave is finished and its hold time has passed.
    #[default]
    Auto,
    /// Only when an operator releases it.
    Manual,
}
text_enum!(Release { Auto => "auto", Manual => "manual" });

/// One row of the `wave_progress` view.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct WaveProgress {
    pub number: i32,
    pub size_spec: String,
    pub release_rule: String,
    /// `waiting`, `sending` or `finished`.
    pub state: String,
    pub planned: Option<i64>,
    pub total: i64,
    pub queued: i64,
    pub deferred: i64,
    pub sent: i64,
    pub failed: i64,
    pub cancelled: i64,
    #[sqlx(try_from = "DbTimeOpt")]
    pub released_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// As in [`CampaignProgress`], for this wave's members.
    pub sent_last_minute: i64,
    pub sent_last_hour: i64,
    pub eta_seconds: Option<i64>,
    /// The latest of its release, its last attempt and its end.
    #[sqlx(try_from = "DbTimeOpt")]
    pub last_change_at: Option<DateTime<Utc>>,
}

/// Attempts made for a wave's members since a time, for its guards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaveAttempts {
    pub total: u64,
    pub permanent: u64,
    pub temporary: u64,
}

impl WaveAttempts {
    /// From send-bucket sums: every attempt that was neither sent nor refused for good was temporary
    /// (a transient or ambiguous outcome).
    pub(super) fn from_buckets(total: i64, permanent: i64, sent: i64) -> Self {
        let total = total.max(0) as u64;
        let permanent = permanent.max(0) as u64;
        WaveAttempts {
            total,
            permanent,
            temporary: total.saturating_sub(permanent + sent.max(0) as u64),
        }
    }
}
