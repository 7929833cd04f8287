//! The reads behind `export evidence` and `export postal` (see `ops::export`): each export is one
//! query that streams the campaign (the evidence in recipient id order, the postal list by deadline,
//! then id), selecting only the columns that export
//! writes, with each recipient's attempts aggregated by the database into the recipient's own row.
//! Rows are decoded as they arrive and handed on in batches through a bounded channel, so memory stays
//! flat however large the campaign, and the database sends rows while the writer formats earlier ones.
//! Both dialects live here, side by side, because they must yield exactly the same rows.
//!
//! On PostgreSQL the attempts come as arrays, one per column, with the attempt ids: the elements of
//! one recipient's arrays come from the same rows in the same order (one aggregate node fills them
//! all), and the ids put them in attempt order here. Ordering in the database instead (`array_agg(…
//! ORDER BY id)`, or a sorted subquery) adds a sort per recipient: at 1,000,000 recipients on
//! PostgreSQL 15 (two busy cores), 8 to 22 s of execution against 6 to 9 s. SQLite has no arrays:
//! one JSON array per recipient, ordered the same way.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt};
use sqlx::postgres::{PgConnection, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Connection, Database, Pool, Row, Transaction};
use tokio::sync::mpsc::Sender;
use tracing::log::LevelFilter;

use super::time::{DbTime, DbTimeOpt};
use super::{AttemptOutcome, Channel, RecipientStatus, Result, Store, StoreError};

/// One recipient as the evidence export reads it: no email address, name or postal address.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceRow {
    pub id: i64,
    pub customer_id: String,
    pub channel: Channel,
    pub status: RecipientStatus,
    pub message_id: Option<String>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_code: Option<i32>,
    pub last_reply: Option<String>,
    pub fail_reason: Option<String>,
    pub postal_followup: bool,
    /// When a bounce said the notice never arrived, with its status code and diagnostic.
    pub bounced_at: Option<DateTime<Utc>>,
    pub bounce_status: Option<String>,
    pub bounce_diagnostic: Option<String>,
    /// The last day on time for the recipient's jurisdiction (`campaign_deadlines`), when computed.
    pub deadline: Option<chrono::NaiveDate>,
    /// Every attempt made for the recipient, oldest (lowest attempt id) first.
    pub attempts: Vec<ExportAttempt>,
}

/// One `delivery_attempts` row as the evidence export writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportAttempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub smtp_code: Option<i32>,
    pub reply: Option<String>,
    pub message_id: String,
    pub instance: String,
}

/// One recipient as the postal export reads it: what decides whether a letter is needed, and the
/// address. Whether there is an email address, not the address itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PostalRow {
    pub id: i64,
    pub customer_id: String,
    pub has_email: bool,
    pub electronic_consent: bool,
    pub channel: Channel,
    pub status: RecipientStatus,
    pub postal_followup: bool,
    pub fail_reason: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub locale: Option<String>,
    pub jurisdiction: Option<String>,
    /// The last day on time for the recipient's jurisdiction (`campaign_deadlines`), when computed.
    pub deadline: Option<chrono::NaiveDate>,
}

/// Consecutive recipients of a campaign, in export order, on their way to the writer.
#[derive(Debug)]
pub enum ExportBatch {
    Evidence(Vec<EvidenceRow>),
    Postal(Vec<PostalRow>),
}

impl ExportBatch {
    /// Recipients in the batch.
    pub fn len(&self) -> usize {
        match self {
            ExportBatch::Evidence(rows) => rows.len(),
            ExportBatch::Postal(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store {
    /// Sends every recipient of a campaign, in id order with their attempts, to `out` in batches of
    /// `batch` (the last one shorter); returns how many it sent. Stops reading, without error, when
    /// `out` is closed (the receiving side stopped and reports its own error). An unknown campaign
    /// yields nothing.
    pub async fn export_evidence(
        &self,
        campaign_id: i64,
        batch: usize,
        out: &Sender<ExportBatch>,
    ) -> Result<u64> {
        with_pool!(self, pool, dialect => {
            let mut conn = export_connection(pool).await?;
            let mut tx = dialect::export_transaction(&mut conn).await?;
            // Unprepared: planned with this campaign's id, for the one time it runs.
            let query = sqlx::query(dialect::EVIDENCE).bind(campaign_id).persistent(false);
            let rows = query.fetch(&mut *tx);
            let sent = forward(rows, dialect::evidence_row, ExportBatch::Evidence, batch, out).await?;
            drop(tx);
            close(conn).await;
            Ok(sent)
        })
    }

    /// As [`Store::export_evidence`] for the recipients who need a letter (not cancelled, and on the
    /// postal channel, or with `status = postal`, or failed or bounced with `postal_followup`), with
    /// what the postal list needs and their jurisdiction's deadline, earliest deadline first (none
    /// last), then in id order. Returns how many recipients the campaign has, counted in the same
    /// snapshot. The database chooses (and sorts) the rows: sending every recipient's address to keep
    /// a few made the export 2 to 4 times slower than `psql \copy` of the rows it keeps (78,000
    /// letters among 1,000,000 recipients). `postal_reason` in `ops::export`, which words the reason,
    /// must agree with this rule (docs/exports.md).
    pub async fn export_postal(
        &self,
        campaign_id: i64,
        batch: usize,
        out: &Sender<ExportBatch>,
    ) -> Result<u64> {
        let total: Option<i64> = with_pool!(self, pool, dialect => {
            let mut conn = export_connection(pool).await?;
            let mut tx = dialect::export_transaction(&mut conn).await?;
            let total = sqlx::query_scalar(TOTAL)
                .bind(campaign_id)
                .fetch_optional(&mut *tx)
                .await?;
            let query = sqlx::query(dialect::POSTAL).bind(campaign_id).persistent(false);
            let rows = query.fetch(&mut *tx);
            forward(rows, |r| postal_row(Columns::new(r)), ExportBatch::Postal, batch, out).await?;
            drop(tx);
            close(conn).await;
            total
        });
        Ok(total.unwrap_or(0).max(0) as u64)
    }
}

/// A connection of the export's own, not one of the pool's, for two reasons. Its statement runs for
/// as long as the campaign takes to stream, so the slow-statement warning (PostgreSQL pool: 5 s;
/// sqlx's default: 1 s) is off on it. And an export that stops early (a write error, Ctrl-C) leaves
/// rows unread: the pool would read them all before reusing a connection, this one is simply closed.
async fn export_connection<DB: Database>(pool: &Pool<DB>) -> Result<DB::Connection> {
    let options = (*pool.connect_options())
        .clone()
        .log_slow_statements(LevelFilter::Off, Duration::ZERO);
    Ok(options.connect().await?)
}

/// Decodes `rows` and sends them on in batches of `batch`, in order, until the rows end or `out`
/// closes; returns how many rows it sent.
async fn forward<R, T>(
    mut rows: impl Stream<Item = Result<R, sqlx::Error>> + Unpin,
    decode: fn(&R) -> Result<T>,
    wrap: fn(Vec<T>) -> ExportBatch,
    batch: usize,
    out: &Sender<ExportBatch>,
) -> Result<u64> {
    let batch = batch.max(1);
    let mut page = Vec::with_capacity(batch);
    let mut sent = 0;
    while let Some(row) = rows.try_next().await? {
        page.push(decode(&row)?);
        if page.len() == batch {
            let full = std::mem::replace(&mut page, Vec::with_capacity(batch));
            if out.send(wrap(full)).await.is_err() {
                return Ok(sent);
            }
            sent += batch as u64;
        }
    }
    let rest = page.len() as u64;
    // A closed channel here means the same as above: nothing more to do.
    if rest > 0 && out.send(wrap(page)).await.is_ok() {
        sent += rest;
    }
    Ok(sent)
}

/// Reads a row's columns one after the other, in the order of the SELECT list: by position, which
/// spares a lookup by name per column and row (millions of them per export).
struct Columns<'r, R> {
    row: &'r R,
    next: usize,
}

impl<'r, R: Row> Columns<'r, R>
where
    usize: sqlx::ColumnIndex<R>,
{
    fn new(row: &'r R) -> Self {
        Columns { row, next: 0 }
    }

    fn take<T>(&mut self) -> Result<T>
    where
        T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let value = self.row.try_get(self.next)?;
        self.next += 1;
        Ok(value)
    }

    fn text<T: std::str::FromStr<Err = StoreError>>(&mut self) -> Result<T>
    where
        &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        self.take::<&str>()?.parse()
    }
}

/// Orders one recipient's attempts by attempt id and drops the ids. The arrays usually arrive in id
/// order already (the stable sort then only checks); nothing guarantees it.
fn in_attempt_order(mut attempts: Vec<(i64, ExportAttempt)>) -> Vec<ExportAttempt> {
    attempts.sort_by_key(|(id, _)| *id);
    attempts.into_iter().map(|(_, a)| a).collect()
}

// ---------------------------------------------------------------------------------------------------
// PostgreSQL.

/// The evidence of a campaign ($1). The campaign is compared as `= ANY (ARRAY[$1])` and the order is
/// `campaign_id, id`, as in `DUE_FRESH` (see there): the rows then come from `recipients_campaign_id`
/// in order, never from a walk of the primary key through earlier campaigns' ids. The attempts of
/// each recipient are found through `delivery_attempts_recipient`; the aggregate over none is one row
/// of NULL arrays. Public for the plan check of tests/it/exports.rs.
pub const PG_EVIDENCE: &str = "SELECT r.id, r.customer_id, r.channel, r.status, r.message_id, \
     r.first_attempt_at, r.finished_at, r.last_code, r.last_reply, r.fail_reason, r.postal_followup, \
     r.bounced_at, r.bounce_status, r.bounce_diagnostic, \
     (SELECT dl.deadline FROM campaign_deadlines dl WHERE dl.campaign_id = r.campaign_id \
     AND dl.jurisdiction = coalesce(r.jurisdiction, '')) AS deadline, \
     a.ids, a.numbers, a.started, a.finished, a.outcomes, a.codes, a.replies, a.message_ids, a.instances \
     FROM recipients r LEFT JOIN LATERAL (SELECT array_agg(d.id) AS ids, array_agg(d.attempt) AS numbers, \
     array_agg(d.started_at) AS started, array_agg(d.finished_at) AS finished, \
     array_agg(d.outcome) AS outcomes, array_agg(d.smtp_code) AS codes, array_agg(d.reply) AS replies, \
     array_agg(d.message_id) AS message_ids, array_agg(d.instance) AS instances \
     FROM delivery_attempts d WHERE d.recipient_id = r.id) a ON true \
     WHERE r.campaign_id = ANY (ARRAY[$1::bigint]) ORDER BY r.campaign_id, r.id";

/// The postal list's columns of the recipients of a campaign ($1) who need a letter (see
/// [`Store::export_postal`]), with their jurisdiction's deadline, earliest deadline first (none last),
/// then in queue (id) order: the letters most at risk go to the printer first. The campaign is
/// compared as in [`PG_EVIDENCE`], so the rows come from `recipients_campaign_id` (or, when the
/// campaign is most of the table, a scan), never a walk of the primary key. The deadlines join as a
/// hash of a few rows per campaign; the sort is of the letters only (about 5% of a campaign: 714,630
/// rows of 15,000,000 in the scale run, docs/benchmarks.md).
pub const PG_POSTAL: &str = "SELECT r.id, r.customer_id, r.email IS NOT NULL AS has_email, \
     r.electronic_consent, r.channel, r.status, r.postal_followup, r.fail_reason, r.first_name, \
     r.last_name, r.address1, r.address2, r.city, r.region, r.postal_code, r.country, r.locale, \
     r.jurisdiction, dl.deadline \
     FROM recipients r LEFT JOIN campaign_deadlines dl ON dl.campaign_id = r.campaign_id \
     AND dl.jurisdiction = coalesce(r.jurisdiction, '') \
     WHERE r.campaign_id = ANY (ARRAY[$1::bigint]) AND r.status <> 'cancelled' \
     AND (r.channel = 'postal' OR r.status = 'postal' \
     OR (r.status IN ('failed', 'bounced') AND r.postal_followup)) \
     ORDER BY dl.deadline NULLS LAST, r.id";

/// How many recipients a campaign ($1) has, in either dialect: its counters are kept in the same
/// transactions as its rows (and recipients are never deleted), so in one snapshot this is
/// `count(*)`, without the scan.
const TOTAL: &str = "SELECT total FROM campaign_counters WHERE campaign_id = $1";

/// Ends an export's own connection, whatever is still unread on it (the server then ends the
/// transaction). A failure to say goodbye changes nothing for the export.
async fn close<C: Connection>(conn: C) {
    let _ = conn.close().await;
}

/// The transaction of one export: one snapshot for everything it reads (the postal list's count and
/// its rows agree), and no JIT. The planner's cost for a whole campaign always exceeds the JIT
/// thresholds; measured at 1,000,000 recipients, compiling (0.3 s) bought nothing here, and it made a
/// similar query here five times slower (`shared_addresses`).
pub(super) async fn pg_transaction(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>> {
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    Ok(tx)
}

/// An [`EvidenceRow`] from the columns of either dialect's evidence query, read from `$c`: both
/// select the same columns in the same order, and [`DbTimeOpt`] reads either dialect's times. Only
/// the attempts differ (arrays or JSON): `$attempts` decodes them from the last columns.
macro_rules! evidence_row {
    ($c:ident, $attempts:expr) => {
        EvidenceRow {
            id: $c.take()?,
            customer_id: $c.take()?,
            channel: $c.text()?,
            status: $c.text()?,
            message_id: $c.take()?,
            first_attempt_at: $c.take::<DbTimeOpt>()?.0,
            finished_at: $c.take::<DbTimeOpt>()?.0,
            last_code: $c.take()?,
            last_reply: $c.take()?,
            fail_reason: $c.take()?,
            postal_followup: $c.take()?,
            bounced_at: $c.take::<DbTimeOpt>()?.0,
            bounce_status: $c.take()?,
            bounce_diagnostic: $c.take()?,
            deadline: $c.take()?,
            attempts: $attempts,
        }
    };
}

/// A [`PG_EVIDENCE`] row.
pub(super) fn pg_evidence(r: &PgRow) -> Result<EvidenceRow> {
    let mut c = Columns::new(r);
    Ok(evidence_row!(c, pg_attempts(&mut c)?))
}

/// The attempt arrays of an evidence row (its last columns), zipped back into attempts.
fn pg_attempts(c: &mut Columns<'_, PgRow>) -> Result<Vec<ExportAttempt>> {
    let Some(ids) = c.take::<Option<Vec<i64>>>()? else {
        return Ok(Vec::new());
    };
    let numbers: Vec<i32> = c.take()?;
    let started: Vec<DateTime<Utc>> = c.take()?;
    let finished: Vec<DateTime<Utc>> = c.take()?;
    let outcomes: Vec<String> = c.take()?;
    let codes: Vec<Option<i32>> = c.take()?;
    let mut replies: Vec<Option<String>> = c.take()?;
    let mut message_ids: Vec<String> = c.take()?;
    let mut instances: Vec<String> = c.take()?;
    let n = ids.len();
    let lengths = [
        numbers.len(),
        started.len(),
        finished.len(),
        outcomes.len(),
        codes.len(),
        replies.len(),
        message_ids.len(),
        instances.len(),
    ];
    if lengths.iter().any(|&l| l != n) {
        return Err(StoreError::Corrupt(
            "the attempt arrays of an evidence row differ in length".into(),
        ));
    }
    let mut attempts = Vec::with_capacity(n);
    for (i, &id) in ids.iter().enumerate() {
        let attempt = ExportAttempt {
            attempt: numbers[i],
            started_at: started[i],
            finished_at: finished[i],
            outcome: outcomes[i].parse()?,
            smtp_code: codes[i],
            reply: replies[i].take(),
            message_id: std::mem::take(&mut message_ids[i]),
            instance: std::mem::take(&mut instances[i]),
        };
        attempts.push((id, attempt));
    }
    Ok(in_attempt_order(attempts))
}

/// A postal row of either dialect ([`PG_POSTAL`], [`SQLITE_POSTAL`]): both select the same columns
/// in the same order.
fn postal_row<'r, R: Row>(mut c: Columns<'r, R>) -> Result<PostalRow>
where
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<chrono::NaiveDate>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PostalRow {
        id: c.take()?,
        customer_id: c.take()?,
        has_email: c.take()?,
        electronic_consent: c.take()?,
        channel: c.text()?,
        status: c.text()?,
        postal_followup: c.take()?,
        fail_reason: c.take()?,
        first_name: c.take()?,
        last_name: c.take()?,
        address1: c.take()?,
        address2: c.take()?,
        city: c.take()?,
        region: c.take()?,
        postal_code: c.take()?,
        country: c.take()?,
        locale: c.take()?,
        jurisdiction: c.take()?,
        deadline: c.take()?,
    })
}

// ---------------------------------------------------------------------------------------------------
// SQLite.

/// The evidence of a campaign (?1), in id order through recipients_campaign_id, each recipient's
/// attempts as one JSON array of `[id, attempt, started_at, finished_at, outcome, smtp_code, reply,
/// message_id, instance]` arrays (`[]` when none) found through delivery_attempts_recipient. JSON
/// rather than several aggregates: SQLite has no arrays, and one subquery reads the attempts once.
pub const SQLITE_EVIDENCE: &str = "SELECT r.id, r.customer_id, r.channel, r.status, r.message_id, \
     r.first_attempt_at, r.finished_at, r.last_code, r.last_reply, r.fail_reason, r.postal_followup, \
     r.bounced_at, r.bounce_status, r.bounce_diagnostic, \
     (SELECT dl.deadline FROM campaign_deadlines dl WHERE dl.campaign_id = r.campaign_id \
     AND dl.jurisdiction = coalesce(r.jurisdiction, '')) AS deadline, \
     (SELECT json_group_array(json_array(d.id, d.attempt, d.started_at, d.finished_at, d.outcome, \
     d.smtp_code, d.reply, d.message_id, d.instance)) FROM delivery_attempts d \
     WHERE d.recipient_id = r.id) AS attempts \
     FROM recipients r WHERE r.campaign_id = ?1 ORDER BY r.id";

/// The postal list's columns of the recipients of a campaign (?1) who need a letter (see
/// [`Store::export_postal`]), in the order of [`PG_POSTAL`]: earliest deadline first, none last, then
/// id. Read through recipients_campaign_id, each deadline found by campaign_deadlines' key.
pub const SQLITE_POSTAL: &str = "SELECT r.id, r.customer_id, r.email IS NOT NULL AS has_email, \
     r.electronic_consent, r.channel, r.status, r.postal_followup, r.fail_reason, r.first_name, \
     r.last_name, r.address1, r.address2, r.city, r.region, r.postal_code, r.country, r.locale, \
     r.jurisdiction, dl.deadline \
     FROM recipients r LEFT JOIN campaign_deadlines dl ON dl.campaign_id = r.campaign_id \
     AND dl.jurisdiction = coalesce(r.jurisdiction, '') \
     WHERE r.campaign_id = ?1 AND r.status <> 'cancelled' \
     AND (r.channel = 'postal' OR r.status = 'postal' \
     OR (r.status IN ('failed', 'bounced') AND r.postal_followup)) \
     ORDER BY dl.deadline IS NULL, dl.deadline, r.id";

/// The transaction of one export on SQLite: one snapshot for everything it reads, as on PostgreSQL.
pub(super) async fn sqlite_transaction(
    conn: &mut SqliteConnection,
) -> Result<Transaction<'_, Sqlite>> {
    Ok(conn.begin().await?)
}

/// A [`SQLITE_EVIDENCE`] row.
pub(super) fn sqlite_evidence(r: &SqliteRow) -> Result<EvidenceRow> {
    let mut c = Columns::new(r);
    Ok(evidence_row!(c, sqlite_attempts(c.take()?)?))
}

/// One attempt as SQLITE_EVIDENCE's JSON holds it (times in milliseconds since the epoch).
type SqliteAttempt = (
    i64,
    i32,
    i64,
    i64,
    String,
    Option<i32>,
    Option<String>,
    String,
    String,
);

fn sqlite_attempts(json: &str) -> Result<Vec<ExportAttempt>> {
    let raw: Vec<SqliteAttempt> = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("the attempts of an evidence row: {e}")))?;
    let mut attempts = Vec::with_capacity(raw.len());
    for (id, attempt, started, finished, outcome, smtp_code, reply, message_id, instance) in raw {
        let attempt = ExportAttempt {
            attempt,
            started_at: from_ms(started),
            finished_at: from_ms(finished),
            outcome: outcome.parse()?,
            smtp_code,
            reply,
            message_id,
            instance,
        };
        attempts.push((id, attempt));
    }
    Ok(in_attempt_order(attempts))
}

/// SQLite's integer milliseconds as a time.
fn from_ms(ms: i64) -> DateTime<Utc> {
    DbTime::from_millis(ms).0
}
