//! Storage: the one interface every part of breach-notifier uses to read and change the database, with
//! two implementations, PostgreSQL ([`postgres`], production, several daemons on one database) and
//! SQLite ([`sqlite`], the embedded default, one daemon per file: [`daemon_lock`]).
//!
//! [`Store`] is an enum rather than a trait object: both backends are known at compile time, the
//! dispatch is a `match`, and async methods need no boxing. Every method has the same meaning on both
//! backends; `tests/it/store_conformance.rs` runs one suite against each to keep it so.
//!
//! What both backends do with the same SQL is written once (`portable.rs`, through `with_pool!`); the
//! backend files hold only what really differs. Rows and their types are in [`model`]; times go
//! through [`time::DbTime`] (`timestamptz` on PostgreSQL, integer milliseconds on SQLite).
//!
//! Times passed in (`now`) come from the caller, never from the database clock, so that tests can drive
//! time and so that both dialects agree on what "due" means.

/// SQL assembled from this module's own constant column lists (never from input): safe to send as is.
macro_rules! audited {
    ($($t:tt)*) => { sqlx::AssertSqlSafe(format!($($t)*)) };
}

/// Runs one body against whichever pool the store wraps: the body is compiled once per backend, so
/// one SQL text and one decoding serve both. `with_pool!(store, pool => …)`; with a third name,
/// `with_pool!(store, pool, dialect => …)`, the body also sees the backend module (for the few
/// constants that differ by dialect).
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        with_pool!($store, $pool, _ => $body)
    };
    ($store:expr, $pool:ident, $dialect:tt => $body:expr) => {
        match $store {
            Store::Postgres(s) => {
                #[allow(unused_imports)] // `_`: the first form names no dialect
                use $crate::store::postgres as $dialect;
                let $pool = s.pool();
                $body
            }
            Store::Sqlite(s) => {
                #[allow(unused_imports)] // `_`: the first form names no dialect
                use $crate::store::sqlite as $dialect;
                let $pool = s.pool();
                $body
            }
        }
    };
}

pub mod bounces;
pub(crate) mod daemon_lock;
pub mod deadlines;
pub mod export;
pub mod forecast;
pub(crate) mod model;
pub(crate) mod notifications;
mod portable;
pub mod postgres;
pub mod report;
pub(crate) mod schema;
pub mod sqlite;
pub mod status_page;
pub(crate) mod time;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::DatabaseSettings;
pub use daemon_lock::{DaemonLock, DaemonLockError};
pub use export::{EvidenceRow, ExportAttempt, ExportBatch, PostalRow};
pub use model::*;
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

/// The storage handle. Cheap to clone (it wraps a connection pool).
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

/// Forwards a call to whichever backend the store wraps (for what the backends do differently).
macro_rules! forward {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Postgres(s) => s.$method($($arg),*).await,
            Store::Sqlite(s) => s.$method($($arg),*).await,
        }
    };
}

/// The operations the backends implement each their own way; the rest are in `portable.rs`.
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
        let migrator = match self {
            Store::Postgres(_) => &schema::POSTGRES,
            Store::Sqlite(_) => &schema::SQLITE,
        };
        schema::state(migrator, self.applied_migrations().await?)
    }

    /// Errors with a message saying what to run unless the schema is current.
    pub async fn ensure_schema_current(&self) -> Result<()> {
        match self.schema_state().await?.problem() {
            None => Ok(()),
            Some(problem) => Err(StoreError::Schema(problem)),
        }
    }

    /// Like [`Store::campaign`], but a missing campaign is an error.
    pub async fn require_campaign(&self, id: i64) -> Result<Campaign> {
        self.campaign(id)
            .await?
            .ok_or(StoreError::UnknownCampaign(id))
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

    /// The attempts made for one recipient, oldest first.
    pub async fn attempts(&self, recipient_id: i64) -> Result<Vec<Attempt>> {
        self.attempts_for(&[recipient_id]).await
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

    /// How many email addresses more than one customer of the campaign shares (each still gets their
    /// own notice).
    pub async fn shared_addresses(&self, campaign_id: i64) -> Result<u64> {
        forward!(self.shared_addresses(campaign_id))
    }

    /// Leases up to `request.limit` due email recipients of a campaign to `request.instance` until
    /// `now + lease`: first deferred rows whose retry time has come, then queued rows after `cursor`
    /// (with ids up to `upper`) in claim order: earliest deadline first, then id ([`ClaimPosition`]). Rows leased to another live instance are skipped; rows whose lease
    /// expired are due again. Under a daily cap the claim holds it for the whole cluster: what was
    /// sent today plus what every live daemon holds never exceeds the cap (on PostgreSQL the claims of
    /// one capped campaign take turns; on SQLite, one daemon, the daemon's own holds are all there is).
    pub async fn claim_batch(&self, request: &ClaimRequest<'_>) -> Result<Claim> {
        forward!(self.claim(request))
    }

    /// Gives leased rows back unattempted (shutdown, pause): they are due again at once.
    pub async fn release_leases(&self, instance: &str, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        forward!(self.release_leases(instance, ids))
    }

    /// Appends one `delivery_attempts` row per record and moves each recipient to its next state, all
    /// in one transaction. The attempt is always recorded (it happened); the recipient changes only if
    /// `instance` still holds its lease. Returns how many recipients changed.
    pub async fn record_attempts(&self, instance: &str, records: &[AttemptRecord]) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        forward!(self.record_attempts(instance, records))
    }
}

/// A foreign-key violation on `campaign_id` is a campaign that does not exist.
pub(super) fn foreign_key_to_unknown_campaign(e: sqlx::Error, campaign_id: i64) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StoreError::UnknownCampaign(campaign_id)
        }
        _ => StoreError::Database(e),
    }
}

/// The send bucket (`send_buckets.bucket`: seconds since the Unix epoch, a multiple of 10) that holds `t`.
pub(crate) fn bucket_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(10) * 10
}

fn allowed_list(from: CampaignState) -> String {
    if from.successors().is_empty() {
        format!("none: {from} is final")
    } else {
        from.successor_names()
    }
}
