//! Storage: the one interface every part of breach-notifier uses to read and change the database, with
//! two implementations, PostgreSQL ([`postgres`], production, several daemons on one database) and
//! SQLite ([`sqlite`], the embedded default, one daemon per file: [`daemon_lock`]).
//!
//! [`Store`] is an enum rather than a trait object: both backends are known at compile time, the
//! dispatch is a `match`, and async methods need no boxing. Every method has the same meaning on both
//! backends; `tests/store_conformance.rs` runs one suite against each to keep it so.
//!
//! Times passed in (`now`) come from the caller, never from the database clock, so that tests can drive
//! time and so that both dialects agree on what "due" means.

pub mod daemon_lock;
pub mod export;
pub mod postgres;
pub mod schema;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::config::{DatabaseSettings, redact_url};
pub use daemon_lock::{DaemonLock, DaemonLockError};
pub use export::{EvidenceRow, ExportAttempt, ExportBatch, PostalRow};
pub use schema::SchemaState;

/// A storage failure, phrased for an operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{0}")]
    Schema(String),
    #[error("campaign {0} does not exist (see `breach-notifier campaign list`)")]
    UnknownCampaign(i64),
    #[error("campaign {id} is {from}; it cannot become {to} (allowed: {allowed})")]
    IllegalTransition {
        id: i64,
        from: CampaignState,
        to: CampaignState,
        allowed: String,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not what this version expects: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        })
    }
}

/// SQL assembled from this module's own constant column lists (never from input): safe to send as is.
macro_rules! audited {
    ($($t:tt)*) => { sqlx::AssertSqlSafe(format!($($t)*)) };
}
pub(crate) use audited;

/// Implements `as_str`, `Display` and `FromStr` for a string-valued enum stored in a TEXT column.
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
}

/// Where a recipient stands in the queue. `sent`, `failed`, `cancelled` and `postal` are terminal.
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
}
text_enum!(RecipientStatus {
    Queued => "queued", Deferred => "deferred", Sent => "sent", Failed => "failed",
    Cancelled => "cancelled", Postal => "postal",
});

impl RecipientStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, RecipientStatus::Queued | RecipientStatus::Deferred)
    }
}

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
    pub supplements: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub state: CampaignState,
    pub definition: String,
    pub content_hash: String,
    pub email_without_consent: bool,
    pub discovered_at: Option<NaiveDate>,
    pub supplements: Option<i64>,
    pub state_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One row of the append-only `campaign_events` table.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignEvent {
    pub id: i64,
    pub campaign_id: i64,
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
}

/// The reconciliation of one imported list: `read = accepted + rejected + duplicates`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    /// Data rows read (the header excluded).
    pub read: u64,
    /// Rows refused, each written to the rejects file with its reason.
    pub rejected: u64,
    /// Rows whose customer was already in the campaign (or earlier in the same list).
    pub duplicates: u64,
    /// Accepted rows to be emailed.
    pub email: u64,
    /// Accepted rows that need a letter (no usable email, or no electronic consent).
    pub postal: u64,
    /// Of the postal rows, those that had an email value that could not be used.
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
#[derive(Debug, Clone, Serialize)]
pub struct ImportRecord {
    pub id: i64,
    pub campaign_id: i64,
    /// The file name as given (or `-` for standard input).
    pub source_name: String,
    pub sha256: String,
    pub counts: ImportCounts,
    /// Addresses used by more than one customer of the campaign, after this import.
    pub shared_addresses: u64,
    pub actor: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// A recipient row as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Recipient {
    pub id: i64,
    pub campaign_id: i64,
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
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub channel: Channel,
    pub status: RecipientStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub retry_due_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub message_id: Option<String>,
    pub last_code: Option<i32>,
    pub last_reply: Option<String>,
    pub fail_reason: Option<String>,
    pub postal_followup: bool,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`Store::insert_prepared`] did with a batch, and the addresses it stored.
#[derive(Debug, Clone, Default)]
pub struct StoredBatch {
    pub outcome: InsertOutcome,
    /// [`address_key`] of the address of every recipient stored with one.
    pub addresses: Vec<u128>,
}

/// A batch of new recipients made ready for one backend's bulk insert by
/// [`Backend::prepare_recipients`]. Preparing is CPU work without I/O (for PostgreSQL, encoding the
/// `COPY` data), so an import does it on its parsing thread while the storing side is busy with the
/// previous batch; a prepared batch is also much smaller than the rows it came from, which keeps the
/// import's memory low.
#[derive(Debug)]
pub struct PreparedRecipients {
    campaign_id: i64,
    /// Rows as read, repeats within the batch included (each repeat is a counted duplicate).
    rows: u64,
    form: PreparedForm,
}

#[derive(Debug)]
enum PreparedForm {
    Copy(postgres::CopyBatch),
    Rows(Vec<NewRecipient>),
}

impl PreparedRecipients {
    /// Rows in the batch as read, repeats within it included.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl Backend {
    /// Makes `rows` ready for [`Store::insert_prepared`] on a store of this backend.
    pub fn prepare_recipients(
        self,
        campaign_id: i64,
        rows: Vec<NewRecipient>,
    ) -> Result<PreparedRecipients> {
        let count = rows.len() as u64;
        let form = match self {
            Backend::Postgres => {
                PreparedForm::Copy(postgres::CopyBatch::encode(campaign_id, &rows)?)
            }
            Backend::Sqlite => PreparedForm::Rows(rows),
        };
        Ok(PreparedRecipients {
            campaign_id,
            rows: count,
            form,
        })
    }
}

/// What [`Store::insert_recipients`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: u64,
    /// Rows whose (campaign, customer_id) was already queued (or came earlier in the same batch):
    /// left untouched.
    pub duplicates: u64,
    /// Of the inserted rows, how many are to be emailed and how many need a letter.
    pub email: u64,
    pub postal: u64,
}

/// The key of an address: the first 128 bits of the SHA-256 of its lower-cased form (the same
/// address in another case is the same address). Each batch the store inserts reports the keys of
/// the addresses it stored, and the import's shared-address count compares them.
pub fn address_key(email: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(email.to_lowercase().as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// The PostgreSQL notification channel on which daemons announce that they joined or left.
pub const MEMBERSHIP_CHANNEL: &str = "breach_notifier_instances";

/// A batch of work leased to one instance.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// The leased recipients, in id order.
    pub recipients: Vec<Recipient>,
    /// Resume the fresh-work scan after this id next time.
    pub cursor: i64,
    /// The fresh-work scan found nothing more after the cursor: start again from 0 next time, to pick
    /// up rows whose lease expired behind the cursor.
    pub exhausted: bool,
    /// The campaign's daily cap left no room: nothing was claimed ([`Store::claim_capped`]).
    pub cap_reached: bool,
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
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub id: i64,
    pub recipient_id: i64,
    pub campaign_id: i64,
    pub attempt: i32,
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub smtp_code: Option<i32>,
    pub reply: Option<String>,
    pub message_id: String,
}

/// One row of the `campaign_progress` view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wave {
    pub campaign_id: i64,
    pub number: i32,
    /// `1000`, `30%` or `rest`, as in the campaign file.
    pub size_spec: String,
    /// `auto` or `manual`.
    pub release_rule: String,
    pub hold_minutes: i64,
    pub max_failure_rate: Option<f64>,
    pub max_deferral_rate: Option<f64>,
    pub released_at: Option<DateTime<Utc>>,
    /// Members are the email recipients with `first_id < id <= last_id` (`last_id` None: no upper end).
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub planned: Option<i64>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One row of the `wave_progress` view.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    pub released_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// As in [`CampaignProgress`], for this wave's members.
    pub sent_last_minute: i64,
    pub sent_last_hour: i64,
    pub eta_seconds: Option<i64>,
    /// The latest of its release, its last attempt and its end.
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
    fn from_buckets(total: i64, permanent: i64, sent: i64) -> Self {
        let total = total.max(0) as u64;
        let permanent = permanent.max(0) as u64;
        WaveAttempts {
            total,
            permanent,
            temporary: total.saturating_sub(permanent + sent.max(0) as u64),
        }
    }
}

/// The storage handle. Cheap to clone (it wraps a connection pool).
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

/// Forwards a call to whichever backend the store wraps.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Postgres(s) => s.$method($($arg),*).await,
            Store::Sqlite(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Connects without looking at the schema (for `migrate`). `create` allows a missing SQLite file
    /// to be created.
    pub async fn connect(
        settings: &DatabaseSettings,
        password: Option<&str>,
        create: bool,
    ) -> Result<Self> {
        let url = settings.url.as_str();
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                sqlite::SqliteStore::connect(url, settings.max_connections, create).await?,
            ))
        } else {
            Ok(Store::Postgres(
                postgres::PgStore::connect(url, password, settings.max_connections).await?,
            ))
        }
    }

    /// Connects and refuses a schema that is not exactly the one this binary was built for.
    pub async fn open(settings: &DatabaseSettings, password: Option<&str>) -> Result<Self> {
        let store = Self::connect(settings, password, false).await?;
        store.ensure_schema_current().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Postgres(_) => Backend::Postgres,
            Store::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Takes the one-daemon lock of a SQLite database file for `instance_id` ([`daemon_lock`]): held
    /// until the returned value is dropped or the process dies. `None` on PostgreSQL, where several
    /// daemons may run, and for an in-memory SQLite database, which no other process can open.
    pub fn daemon_lock(
        &self,
        instance_id: &str,
    ) -> std::result::Result<Option<DaemonLock>, DaemonLockError> {
        let Store::Sqlite(s) = self else {
            return Ok(None);
        };
        let options = s.pool().connect_options();
        let in_memory = sqlx::ConnectOptions::to_url_lossy(&*options)
            .query_pairs()
            .any(|(key, value)| key == "mode" && value == "memory");
        // An empty file name is a private temporary database, as good as in memory.
        if in_memory || options.get_filename().as_os_str().is_empty() {
            return Ok(None);
        }
        daemon_lock::acquire(options.get_filename(), instance_id).map(Some)
    }

    /// Applies every pending migration; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let before = self.schema_state().await?;
        if let SchemaState::Ahead { .. } | SchemaState::Modified { .. } = before {
            return Err(StoreError::Schema(before.problem().unwrap_or_default()));
        }
        match self {
            Store::Postgres(s) => schema::POSTGRES.run(s.pool()).await?,
            Store::Sqlite(s) => schema::SQLITE.run(s.pool()).await?,
        }
        let applied_before = before.applied();
        Ok(self
            .schema_state()
            .await?
            .applied()
            .into_iter()
            .filter(|v| !applied_before.contains(v))
            .collect())
    }

    /// Compares the migrations recorded in the database with those built into the binary.
    pub async fn schema_state(&self) -> Result<SchemaState> {
        match self {
            Store::Postgres(s) => schema::state(&schema::POSTGRES, s.applied_migrations().await?),
            Store::Sqlite(s) => schema::state(&schema::SQLITE, s.applied_migrations().await?),
        }
    }

    /// Errors with a message saying what to run unless the schema is current.
    pub async fn ensure_schema_current(&self) -> Result<()> {
        match self.schema_state().await?.problem() {
            None => Ok(()),
            Some(problem) => Err(StoreError::Schema(problem)),
        }
    }

    pub async fn create_campaign(&self, campaign: &NewCampaign, actor: &str) -> Result<i64> {
        dispatch!(self.create_campaign(campaign, actor))
    }

    pub async fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        dispatch!(self.campaign(id))
    }

    /// Like [`Store::campaign`], but a missing campaign is an error.
    pub async fn require_campaign(&self, id: i64) -> Result<Campaign> {
        self.campaign(id)
            .await?
            .ok_or(StoreError::UnknownCampaign(id))
    }

    pub async fn campaigns(&self) -> Result<Vec<Campaign>> {
        dispatch!(self.campaigns())
    }

    /// Changes a campaign's state, recording actor and reason in `campaign_events`. The database
    /// refuses illegal transitions; this checks first to give the operator the allowed ones.
    pub async fn set_campaign_state(
        &self,
        id: i64,
        to: CampaignState,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Campaign> {
        let current = self.require_campaign(id).await?;
        if !current.state.can_become(to) {
            return Err(StoreError::IllegalTransition {
                id,
                from: current.state,
                to,
                allowed: allowed_list(current.state),
            });
        }
        dispatch!(self.set_campaign_state(id, current.state, to, actor, reason))?;
        self.require_campaign(id).await
    }

    pub async fn campaign_events(&self, campaign_id: i64) -> Result<Vec<CampaignEvent>> {
        dispatch!(self.campaign_events(campaign_id))
    }

    /// Adds recipients to a campaign's queue in one transaction. A row whose customer is already in
    /// the campaign is left untouched and counted as a duplicate.
    pub async fn insert_recipients(
        &self,
        campaign_id: i64,
        rows: &[NewRecipient],
    ) -> Result<InsertOutcome> {
        let batch = self
            .backend()
            .prepare_recipients(campaign_id, rows.to_vec())?;
        Ok(self.insert_prepared(batch).await?.outcome)
    }

    /// Stores a batch made by [`Backend::prepare_recipients`] for this store's backend, in one
    /// transaction, as [`Store::insert_recipients`] does. On PostgreSQL the commit does not wait for
    /// the disk: a bulk load is made durable by the next synchronous commit (an import's `imports`
    /// record), which flushes everything written before it.
    pub async fn insert_prepared(&self, batch: PreparedRecipients) -> Result<StoredBatch> {
        if batch.rows == 0 {
            return Ok(StoredBatch::default());
        }
        match (self, batch.form) {
            (Store::Postgres(s), PreparedForm::Copy(copy)) => {
                s.insert_copy(batch.campaign_id, batch.rows, copy).await
            }
            (Store::Sqlite(s), PreparedForm::Rows(rows)) => {
                s.insert_recipients(batch.campaign_id, &rows).await
            }
            _ => Err(StoreError::Corrupt(
                "a batch of recipients prepared for the other database backend".into(),
            )),
        }
    }

    /// Which of these customer ids the campaign already has (for dry runs).
    pub async fn existing_customers(
        &self,
        campaign_id: i64,
        customer_ids: &[String],
    ) -> Result<Vec<String>> {
        if customer_ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.existing_customers(campaign_id, customer_ids))
    }

    /// Reserves the id of an import about to run, so its recipients can point at it.
    pub async fn next_import_id(&self) -> Result<i64> {
        dispatch!(self.next_import_id())
    }

    /// Stores the reconciliation of a finished import. The database refuses counts that do not add up.
    pub async fn record_import(&self, record: &ImportRecord) -> Result<()> {
        dispatch!(self.record_import(record))
    }

    /// The imports of a campaign, oldest first.
    pub async fn imports(&self, campaign_id: i64) -> Result<Vec<ImportRecord>> {
        dispatch!(self.imports(campaign_id))
    }

    /// How many email addresses more than one customer of the campaign shares (each still gets their
    /// own notice).
    pub async fn shared_addresses(&self, campaign_id: i64) -> Result<u64> {
        dispatch!(self.shared_addresses(campaign_id))
    }

    pub async fn recipient(&self, id: i64) -> Result<Option<Recipient>> {
        dispatch!(self.recipient(id))
    }

    pub async fn recipient_by_customer(
        &self,
        campaign_id: i64,
        customer_id: &str,
    ) -> Result<Option<Recipient>> {
        dispatch!(self.recipient_by_customer(campaign_id, customer_id))
    }

    /// A sample for pre-flight checks: the first recipient of every (locale, jurisdiction) pair present
    /// in the campaign, at most `limit` of them, in id order.
    pub async fn sample_recipients(&self, campaign_id: i64, limit: u32) -> Result<Vec<Recipient>> {
        dispatch!(self.sample_recipients(campaign_id, limit))
    }

    /// Up to `limit` recipients of a campaign with ids above `after_id`, in id order (for paging
    /// through a campaign with flat memory; the exports stream theirs in one query instead:
    /// [`Store::export_evidence`]).
    pub async fn recipients_after(
        &self,
        campaign_id: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Recipient>> {
        dispatch!(self.recipients_after(campaign_id, after_id, limit))
    }

    /// Leases up to `limit` due email recipients of a campaign to `instance` until `now + lease`:
    /// first deferred rows whose retry time has come, then queued rows after `cursor` in id order.
    /// Rows leased to another live instance are skipped; rows whose lease expired are due again.
    pub async fn claim(
        &self,
        campaign_id: i64,
        instance: &str,
        cursor: i64,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Claim> {
        self.claim_within(campaign_id, instance, cursor, i64::MAX, limit, lease, now)
            .await
    }

    /// As [`Store::claim`], taking fresh rows only up to id `upper` (the end of the released waves).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_within(
        &self,
        campaign_id: i64,
        instance: &str,
        cursor: i64,
        upper: i64,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Claim> {
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        dispatch!(self.claim(campaign_id, instance, cursor, upper, limit, now, until))
    }

    /// As [`Store::claim_within`], under a daily cap that holds for the whole cluster: what was sent
    /// today plus what every live daemon holds never exceeds `cap.cap`. On PostgreSQL the claims of
    /// one capped campaign take turns; on SQLite (one daemon) the daemon's own holds are all there is.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_capped(
        &self,
        campaign_id: i64,
        instance: &str,
        cursor: i64,
        upper: i64,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
        cap: &DailyCap,
    ) -> Result<Claim> {
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        match self {
            Store::Postgres(s) => {
                s.claim_capped(campaign_id, instance, cursor, upper, limit, now, until, cap)
                    .await
            }
            Store::Sqlite(s) => {
                let sent = s.sent_since(campaign_id, bucket_of(cap.day_start)).await?;
                let room = cap.room(sent);
                if room == 0 {
                    return Ok(Claim {
                        cursor,
                        cap_reached: true,
                        ..Claim::default()
                    });
                }
                let limit = limit.min(room.min(u64::from(u32::MAX)) as u32);
                s.claim(campaign_id, instance, cursor, upper, limit, now, until)
                    .await
            }
        }
    }

    /// Refreshes the planner's statistics of `recipients` after a bulk load (PostgreSQL; a no-op on
    /// SQLite, whose claims do not depend on statistics: see the plan checks in the conformance tests).
    /// Autovacuum may take many minutes to analyse millions of new rows; until it does, every estimate
    /// about them is a guess. ANALYZE reads a fixed sample (30,000 rows at the default target), so it
    /// costs about the same at 15,000,000 rows as at 1,000,000.
    pub async fn analyze_recipients(&self) -> Result<()> {
        match self {
            Store::Postgres(s) => s.analyze_recipients().await,
            Store::Sqlite(_) => Ok(()),
        }
    }

    /// Cancels this process's claims still running in the database (PostgreSQL: by the tag each claim
    /// sets on its transaction; SQLite runs its statements in this process and has nothing to cancel).
    /// For shutdown: a claim that a bad plan made slow must not hold the exit. Returns how many.
    pub async fn cancel_claims(&self) -> Result<u64> {
        match self {
            Store::Postgres(s) => s.cancel_claims().await,
            Store::Sqlite(_) => Ok(0),
        }
    }

    /// A campaign's waves, in order.
    pub async fn waves(&self, campaign_id: i64) -> Result<Vec<Wave>> {
        dispatch!(self.waves(campaign_id))
    }

    /// Stores a campaign's wave plan (once: existing rows are left as they are).
    pub async fn insert_waves(&self, waves: &[Wave]) -> Result<()> {
        dispatch!(self.insert_waves(waves))
    }

    /// Fixes a wave's members and marks it released (keeping an operator's earlier `released_at`).
    /// Returns false when its members were already fixed.
    /// Fixes a wave's members and marks it released (keeping an operator's earlier `released_at`), and
    /// starts its counters (`wave_counters`) in the same transaction. `planned` is the number of members
    /// when the caller counted them; `None` (the open-ended last wave) takes the open recipients the
    /// counters find. Returns false when its members were already fixed.
    pub async fn release_wave(
        &self,
        campaign_id: i64,
        number: i32,
        first_id: i64,
        last_id: Option<i64>,
        planned: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        dispatch!(self.release_wave(campaign_id, number, first_id, last_id, planned, now))
    }

    pub async fn finish_wave(
        &self,
        campaign_id: i64,
        number: i32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        dispatch!(self.finish_wave(campaign_id, number, now))
    }

    /// The id of the `n`-th email recipient after `after_id` (or the last one, when fewer remain), and
    /// how many were counted.
    pub async fn nth_email_recipient(
        &self,
        campaign_id: i64,
        after_id: i64,
        n: i64,
    ) -> Result<Option<(i64, i64)>> {
        dispatch!(self.nth_email_recipient(campaign_id, after_id, n))
    }

    /// Email recipients of `(first_id, last_id]` still queued or deferred.
    pub async fn open_in_range(
        &self,
        campaign_id: i64,
        first_id: i64,
        last_id: Option<i64>,
    ) -> Result<u64> {
        dispatch!(self.open_in_range(campaign_id, first_id, last_id.unwrap_or(i64::MAX)))
    }

    /// Email recipients of a released wave still queued or deferred, from its counters (0 for a wave
    /// not released).
    pub async fn wave_open(&self, campaign_id: i64, number: i32) -> Result<u64> {
        dispatch!(self.wave_open(campaign_id, number))
    }

    /// Attempts for a wave's members finished since `since`, for its guards. Read from the 10-second
    /// send buckets, not the attempt log: whole buckets from the one that holds `since`, so up to 10 s
    /// of attempts before it may count.
    pub async fn wave_attempts(
        &self,
        campaign_id: i64,
        number: i32,
        since: DateTime<Utc>,
    ) -> Result<WaveAttempts> {
        dispatch!(self.wave_attempts(campaign_id, number, bucket_of(since)))
    }

    /// Extends the leases `instance` still holds on `ids`; returns how many it still held.
    pub async fn renew_leases(
        &self,
        instance: &str,
        ids: &[i64],
        until: DateTime<Utc>,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        dispatch!(self.renew_leases(instance, ids, until))
    }

    /// Gives leased rows back unattempted (shutdown, pause): they are due again at once.
    pub async fn release_leases(&self, instance: &str, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        dispatch!(self.release_leases(instance, ids))
    }

    /// Appends one `delivery_attempts` row per record and moves each recipient to its next state, all
    /// in one transaction. The attempt is always recorded (it happened); the recipient changes only if
    /// `instance` still holds its lease. Returns how many recipients changed.
    pub async fn record_attempts(&self, instance: &str, records: &[AttemptRecord]) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        dispatch!(self.record_attempts(instance, records))
    }

    /// Notices of a campaign accepted (outcome `sent`) since `since`: what a daily cap counts. Read from
    /// the 10-second send buckets (at most 8,640 a day), so exact for a `since` on a 10-second
    /// boundary, such as midnight; otherwise whole buckets from the one that holds `since`.
    pub async fn sent_since(&self, campaign_id: i64, since: DateTime<Utc>) -> Result<u64> {
        dispatch!(self.sent_since(campaign_id, bucket_of(since)))
    }

    /// The `wave_progress` view for one campaign, in wave order.
    pub async fn wave_progress(&self, campaign_id: i64) -> Result<Vec<WaveProgress>> {
        dispatch!(self.wave_progress(campaign_id))
    }

    /// Ends the open recipients of a cancelled campaign that nobody holds a live lease on (rows that
    /// were in flight when it was cancelled, released or abandoned since). Returns how many.
    pub async fn settle_cancelled(&self, campaign_id: i64, now: DateTime<Utc>) -> Result<u64> {
        dispatch!(self.settle_cancelled(campaign_id, now))
    }

    /// The attempts made for one recipient, oldest first.
    pub async fn attempts(&self, recipient_id: i64) -> Result<Vec<Attempt>> {
        self.attempts_for(&[recipient_id]).await
    }

    /// The attempts made for several recipients, in one query: ordered by recipient id, then oldest
    /// first. Ids with no attempt contribute nothing. (The exports read attempts with their
    /// recipients instead: [`Store::export_evidence`].)
    pub async fn attempts_for(&self, recipient_ids: &[i64]) -> Result<Vec<Attempt>> {
        if recipient_ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.attempts_for(recipient_ids))
    }

    /// `campaign_progress` for one campaign or all of them, in id order.
    pub async fn progress(&self, campaign_id: Option<i64>) -> Result<Vec<CampaignProgress>> {
        dispatch!(self.progress(campaign_id))
    }

    /// Announces or refreshes a running daemon.
    pub async fn heartbeat(&self, instance: &InstanceInfo, now: DateTime<Utc>) -> Result<()> {
        dispatch!(self.heartbeat(instance, now))
    }

    /// Tells the other daemons that one joined or left, so they recount the live daemons and take
    /// their new share of the cluster's limits at once (PostgreSQL's NOTIFY on
    /// [`MEMBERSHIP_CHANNEL`]; nothing to do on SQLite, which allows one daemon).
    pub async fn announce_membership(&self) -> Result<()> {
        if let Store::Postgres(s) = self {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(MEMBERSHIP_CHANNEL)
                .execute(s.pool())
                .await?;
        }
        Ok(())
    }

    /// Marks a daemon as stopped (clean shutdown).
    pub async fn instance_stopped(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        dispatch!(self.instance_stopped(id, now))
    }

    /// Ids of daemons whose heartbeat is newer than `now - ttl` and that have not stopped.
    pub async fn live_instances(&self, now: DateTime<Utc>, ttl: Duration) -> Result<Vec<String>> {
        let since = now - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        dispatch!(self.live_instances(since))
    }

    /// The cheapest round trip (`SELECT 1`): is the database reachable? (For `/readyz`.)
    pub async fn ping(&self) -> Result<()> {
        match self {
            Store::Postgres(s) => {
                sqlx::query("SELECT 1").execute(s.pool()).await?;
            }
            Store::Sqlite(s) => {
                sqlx::query("SELECT 1").execute(s.pool()).await?;
            }
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        match self {
            Store::Postgres(s) => s.pool().close().await,
            Store::Sqlite(s) => s.pool().close().await,
        }
    }
}

/// The send bucket (`send_buckets.bucket`: seconds since the Unix epoch, a multiple of 10) that holds `t`.
pub(crate) fn bucket_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(10) * 10
}

fn allowed_list(from: CampaignState) -> String {
    let next = from.successors();
    if next.is_empty() {
        format!("none: {from} is final")
    } else {
        next.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The redacted form of a database URL, for messages.
pub(crate) fn shown_url(url: &str) -> String {
    redact_url(url)
}
