//! The store's side of asynchronous bounces (docs/bounces.md): reports stored as they arrive, leased
//! by whichever daemon processes them, their verdicts recorded with the state change each caused, and
//! the guards that hold a receiving domain whose failures look like a block of the sender.
//!
//! Written once for both backends (as `portable.rs`). A batch of reports is applied in one
//! transaction of a few set-based statements (`UPDATE … FROM (VALUES …)`, multi-row `INSERT`: the same
//! SQL on both): the bounces, the verdicts, the reports marked done. A daemon that dies mid-batch
//! commits nothing, and its lease expires.

use chrono::{DateTime, Utc};

use super::portable::INSERT_EVENT;
use super::time::DbTime;
use super::*;

/// A report to store, as it arrived (hash and size) and as it is kept (`body`, redacted).
#[derive(Debug, Clone)]
pub struct NewReport<'a> {
    pub source: ReportSource,
    /// SHA-256 (hex) of the bytes as they arrived: the same report twice is stored once.
    pub sha256: &'a str,
    pub received_size: i64,
    /// The address the report was delivered to, when the source says (the VERP address).
    pub envelope_to: Option<&'a str>,
    pub body: &'a [u8],
}

/// A stored report waiting to be processed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingReport {
    pub id: i64,
    pub source: ReportSource,
    pub envelope_to: Option<String>,
    pub body: Vec<u8>,
}

/// What a bounce may be matched to: a recipient's row, read by id.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BounceTarget {
    pub id: i64,
    pub campaign_id: i64,
    pub status: RecipientStatus,
    pub email: Option<String>,
    pub message_id: Option<String>,
    /// Only a running or paused campaign can email a held recipient again.
    pub campaign_state: CampaignState,
}

/// The state change a verdict asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Did not arrive: `sent` becomes `bounced`, flagged for a letter.
    Bounce,
    /// Did not arrive, but the receiving domain is under a guard (the sender looks blocked): the
    /// recipient waits, parked, to be emailed again once the operator clears the guard.
    Hold,
    /// Evidence only (delivered, delayed, unmatched, unclassified).
    Nothing,
}

/// One recipient block of a report, decided.
#[derive(Debug, Clone)]
pub struct VerdictRecord {
    pub recipient_id: Option<i64>,
    pub campaign_id: Option<i64>,
    /// `verp`, `message_id`, `queue_id` or `none`.
    pub matched_by: &'static str,
    pub status_code: Option<String>,
    pub diagnostic: Option<String>,
    pub remote_domain: Option<String>,
    /// `not_delivered`, `delayed`, `delivered` or `unclassified`.
    pub outcome: &'static str,
    pub class: Option<&'static str>,
    pub rule: String,
    pub apply: Apply,
}

/// A processed report: what it was, what came of it, and its verdicts.
#[derive(Debug, Clone)]
pub struct ProcessedReport {
    pub id: i64,
    pub kind: String,
    pub result: String,
    pub verdicts: Vec<VerdictRecord>,
}

/// What applying a batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub bounced: u64,
    pub held: u64,
}

/// An active guard: a receiving domain of a campaign held because its failures look like a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BounceGuard {
    pub campaign_id: i64,
    pub domain: String,
    #[sqlx(try_from = "DbTime")]
    pub tripped_at: DateTime<Utc>,
    pub failures: i64,
    pub policy: i64,
}

/// Counts of one campaign's reports and verdicts, for `status` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BounceCounts {
    pub reports: i64,
    pub pending: i64,
    pub unmatched: i64,
    pub held: i64,
}

/// The `fail_reason` of a recipient parked by a guard; the guard's release finds them by it.
pub const HELD_REASON: &str = "held: bounce guard";

impl Store {
    /// Stores reports in one transaction (one commit, so a Maildir of thousands is not a commit
    /// each); for each, its id, or `None` when the same bytes were stored before (nothing to do twice).
    pub async fn save_bounce_reports(
        &self,
        reports: &[NewReport<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<i64>>> {
        let mut ids = Vec::with_capacity(reports.len());
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for r in reports {
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO bounce_reports (received_at, source, sha256, received_size, \
                     envelope_to, body) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (sha256) DO NOTHING RETURNING id",
                )
                .bind(DbTime(now))
                .bind(r.source)
                .bind(r.sha256)
                .bind(r.received_size)
                .bind(r.envelope_to)
                .bind(r.body)
                .fetch_optional(&mut *tx)
                .await?;
                ids.push(id);
            }
            tx.commit().await?;
        });
        Ok(ids)
    }

    /// Leases up to `limit` unprocessed reports, oldest first, for `lease` (a daemon that dies leaves
    /// them to the next once it runs out).
    pub async fn lease_bounce_reports(
        &self,
        instance: &str,
        limit: i64,
        lease: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingReport>> {
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        with_pool!(self, pool, dialect => Ok(sqlx::query_as(audited!(
            "UPDATE bounce_reports SET lease_owner = $1, lease_expires_at = $2 WHERE id IN \
             (SELECT id FROM bounce_reports WHERE processed_at IS NULL \
              AND (lease_expires_at IS NULL OR lease_expires_at <= $3) ORDER BY id LIMIT $4 {}) \
             RETURNING id, source, envelope_to, body",
            dialect::SKIP_LOCKED
        ))
        .bind(instance)
        .bind(DbTime(until))
        .bind(DbTime(now))
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// The recipients with these ids (those that exist), with their campaign's state.
    pub async fn bounce_targets(&self, ids: &[i64]) -> Result<Vec<BounceTarget>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            // Integers written by us: an IN list both dialects plan as primary-key probes.
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let rows: Vec<BounceTarget> = with_pool!(self, pool => sqlx::query_as(audited!(
                "SELECT r.id, r.campaign_id, r.status, r.email, r.message_id, c.state AS campaign_state \
                 FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE r.id IN ({list})"
            ))
            .fetch_all(pool)
            .await?);
            found.extend(rows);
        }
        Ok(found)
    }

    /// The recipient whose notice the relay accepted with this queue id, if any (the latest).
    pub async fn recipient_by_queue_id(&self, queue_id: &str) -> Result<Option<i64>> {
        with_pool!(self, pool, dialect => Ok(sqlx::query_scalar(audited!(
            "SELECT recipient_id FROM delivery_attempts WHERE {} ORDER BY id DESC LIMIT 1",
            dialect::QUEUE_ID_MATCH
        ))
        .bind(queue_id)
        .fetch_optional(pool)
        .await?))
    }

    /// Records a batch of processed reports in one transaction of a few set-based statements: the
    /// bounces (only from `sent`, so a replay changes nothing), the holds, every verdict with the
    /// change it caused, and the reports marked done.
    pub async fn apply_bounce_batch(
        &self,
        batch: &[ProcessedReport],
        classifier_version: i32,
        now: DateTime<Utc>,
    ) -> Result<Applied> {
        let (bounces, holds) = (asking(batch, Apply::Bounce), asking(batch, Apply::Hold));
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let bounced: Vec<i64> = if bounces.is_empty() {
                Vec::new()
            } else {
                let mut q = sqlx::QueryBuilder::new(
                    "UPDATE recipients SET status = 'bounced', postal_followup = TRUE, \
                     bounced_at = v.column4, finished_at = v.column4, bounce_status = v.column2, \
                     bounce_diagnostic = v.column3 FROM (",
                );
                q.push_values(&bounces, |mut row, v| {
                    row.push_bind(v.recipient_id)
                        .push_bind(&v.status_code)
                        .push_bind(&v.diagnostic)
                        .push_bind(DbTime(now));
                });
                q.push(") AS v WHERE recipients.id = v.column1 AND recipients.status = 'sent' \
                        RETURNING recipients.id");
                q.build_query_scalar().fetch_all(&mut *tx).await?
            };
            let mut held = Vec::new();
            for v in &holds {
                let n = sqlx::query(
                    "UPDATE recipients SET status = 'deferred', retry_due_at = NULL, \
                     postal_followup = FALSE, fail_reason = $2, finished_at = NULL \
                     WHERE id = $1 AND status IN ('sent', 'bounced')",
                )
                .bind(v.recipient_id)
                .bind(HELD_REASON)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                held.extend(v.recipient_id.filter(|_| n > 0));
            }
            let verdicts = with_changes(batch, &bounced, &held);
            // At most 1,000 verdicts a statement: 13 parameters each stays within both databases' limit.
            for chunk in verdicts.chunks(1000) {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO bounce_verdicts (report_id, recipient_id, campaign_id, matched_by, \
                     status_code, diagnostic, remote_domain, outcome, class, rule, \
                     classifier_version, state_change, decided_at) ",
                );
                q.push_values(chunk, |mut row, (report_id, v, change)| {
                    row.push_bind(*report_id)
                        .push_bind(v.recipient_id)
                        .push_bind(v.campaign_id)
                        .push_bind(v.matched_by)
                        .push_bind(&v.status_code)
                        .push_bind(&v.diagnostic)
                        .push_bind(&v.remote_domain)
                        .push_bind(v.outcome)
                        .push_bind(v.class)
                        .push_bind(&v.rule)
                        .push_bind(classifier_version)
                        .push_bind(*change)
                        .push_bind(DbTime(now));
                });
                q.build().execute(&mut *tx).await?;
            }
            if !batch.is_empty() {
                let mut q = sqlx::QueryBuilder::new(
                    "UPDATE bounce_reports SET processed_at = v.column4, kind = v.column2, \
                     result = v.column3, classifier_version = v.column5, lease_owner = NULL, \
                     lease_expires_at = NULL FROM (",
                );
                q.push_values(batch, |mut row, r| {
                    row.push_bind(r.id)
                        .push_bind(&r.kind)
                        .push_bind(&r.result)
                        .push_bind(DbTime(now))
                        .push_bind(classifier_version);
                });
                q.push(") AS v WHERE bounce_reports.id = v.column1");
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Applied { bounced: bounced.len() as u64, held: held.len() as u64 })
        })
    }

    /// Reports processed by a classifier older than `version` become pending again; returns how many.
    /// Their new verdicts are added beside the old ones (the evidence keeps both), and a recipient
    /// changes only from the state a verdict expects.
    pub async fn requeue_bounce_reports(&self, version: i32) -> Result<u64> {
        with_pool!(self, pool => Ok(sqlx::query(
            "UPDATE bounce_reports SET processed_at = NULL \
             WHERE processed_at IS NOT NULL AND classifier_version < $1",
        )
        .bind(version)
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// The guards not cleared yet, of every campaign.
    pub async fn active_bounce_guards(&self) -> Result<Vec<BounceGuard>> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT campaign_id, domain, tripped_at, failures, policy FROM bounce_guards \
             WHERE cleared_at IS NULL ORDER BY campaign_id, domain",
        )
        .fetch_all(pool)
        .await?))
    }

    /// Final failures of a campaign's receiving domain since `since`: (all, policy rejections).
    pub async fn domain_failures(
        &self,
        campaign_id: i64,
        domain: &str,
        since: DateTime<Utc>,
    ) -> Result<(i64, i64)> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT count(*), coalesce(sum(CASE WHEN class = 'policy' THEN 1 ELSE 0 END), 0) \
             FROM bounce_verdicts WHERE campaign_id = $1 AND remote_domain = $2 AND decided_at >= $3 \
             AND outcome = 'not_delivered'",
        )
        .bind(campaign_id)
        .bind(domain)
        .bind(DbTime(since))
        .fetch_one(pool)
        .await?))
    }

    /// Trips a guard on a campaign's receiving domain: records it and a campaign event, and parks the
    /// recipients that its policy rejections since `since` moved to `bounced` (when the campaign can
    /// still send: a completed or cancelled one keeps them bounced, for a letter or a supplement). Returns how many were
    /// parked, or `None` when a guard was already active.
    pub async fn trip_bounce_guard(
        &self,
        guard: &BounceGuard,
        since: DateTime<Utc>,
    ) -> Result<Option<u64>> {
        let reason = format!(
            "bounce guard: {} of {} final failures from {} are policy rejections (5.7.x): \
             the sender looks blocked; its recipients are held for email, not sent to postal",
            guard.policy, guard.failures, guard.domain
        );
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM bounce_guards WHERE campaign_id = $1 AND domain = $2 \
                 AND cleared_at IS NULL",
            )
            .bind(guard.campaign_id)
            .bind(&guard.domain)
            .fetch_one(&mut *tx)
            .await?;
            if active > 0 {
                return Ok(None);
            }
            sqlx::query(
                "INSERT INTO bounce_guards (campaign_id, domain, tripped_at, failures, policy) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(guard.campaign_id)
            .bind(&guard.domain)
            .bind(DbTime(guard.tripped_at))
            .bind(guard.failures)
            .bind(guard.policy)
            .execute(&mut *tx)
            .await?;
            let parked = sqlx::query(
                "UPDATE recipients SET status = 'deferred', retry_due_at = NULL, postal_followup = FALSE, \
                 fail_reason = $3, finished_at = NULL \
                 WHERE status = 'bounced' AND id IN (SELECT recipient_id FROM bounce_verdicts \
                 WHERE campaign_id = $1 AND remote_domain = $2 AND class = 'policy' \
                 AND state_change = 'bounced' AND decided_at >= $4) \
                 AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = $1 AND c.state IN ('running', 'paused'))",
            )
            .bind(guard.campaign_id)
            .bind(&guard.domain)
            .bind(HELD_REASON)
            .bind(DbTime(since))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(INSERT_EVENT)
                .bind(guard.campaign_id)
                .bind(DbTime(guard.tripped_at))
                .bind("bounce-guard")
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(parked))
        })
    }

    /// Clears a campaign's guard on a domain and makes its parked recipients due again, to be emailed
    /// once more. Returns how many were released, or `None` when no guard was active.
    pub async fn clear_bounce_guard(
        &self,
        campaign_id: i64,
        domain: &str,
        actor: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>> {
        let suffix = format!("%@{}", domain.to_ascii_lowercase());
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let cleared = sqlx::query(
                "UPDATE bounce_guards SET cleared_at = $3, cleared_by = $4 \
                 WHERE campaign_id = $1 AND domain = $2 AND cleared_at IS NULL",
            )
            .bind(campaign_id)
            .bind(domain)
            .bind(DbTime(now))
            .bind(actor)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if cleared == 0 {
                return Ok(None);
            }
            let released = sqlx::query(
                "UPDATE recipients SET retry_due_at = $3, fail_reason = NULL \
                 WHERE campaign_id = $1 AND status = 'deferred' AND retry_due_at IS NULL \
                 AND fail_reason = $4 AND lower(email) LIKE $2",
            )
            .bind(campaign_id)
            .bind(&suffix)
            .bind(DbTime(now))
            .bind(HELD_REASON)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let text = format!("bounce guard on {domain} cleared: {reason}");
            sqlx::query(INSERT_EVENT)
                .bind(campaign_id)
                .bind(DbTime(now))
                .bind(actor)
                .bind(&text)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(released))
        })
    }

    /// Parks a recipient of a guarded domain whose lease was just given back
    /// ([`Store::release_leases`], which also lowers the daily cap's holds): due again when the guard
    /// is cleared. False when no guard holds its domain any more (cleared meanwhile): it stays due.
    pub async fn park_for_guard(&self, id: i64) -> Result<bool> {
        with_pool!(self, pool => Ok(sqlx::query(
            "UPDATE recipients SET status = 'deferred', retry_due_at = NULL, fail_reason = $2 \
             WHERE id = $1 AND lease_owner IS NULL AND status IN ('queued', 'deferred') \
             AND EXISTS (SELECT 1 FROM bounce_guards g WHERE g.campaign_id = recipients.campaign_id \
                         AND g.cleared_at IS NULL AND lower(recipients.email) LIKE '%@' || g.domain)",
        )
        .bind(id)
        .bind(HELD_REASON)
        .execute(pool)
        .await?
        .rows_affected() > 0))
    }

    /// Report and verdict counts of one campaign (reports unmatched to any recipient are counted in
    /// `pending`/`unmatched` of every campaign: they belong to none).
    pub async fn bounce_counts(&self, campaign_id: i64) -> Result<BounceCounts> {
        with_pool!(self, pool => {
            let (reports, held): (i64, i64) = sqlx::query_as(
                "SELECT count(DISTINCT report_id), \
                 coalesce(sum(CASE WHEN state_change = 'held' THEN 1 ELSE 0 END), 0) \
                 FROM bounce_verdicts WHERE campaign_id = $1",
            )
            .bind(campaign_id)
            .fetch_one(pool)
            .await?;
            let (pending, unmatched): (i64, i64) = sqlx::query_as(
                "SELECT coalesce(sum(CASE WHEN processed_at IS NULL THEN 1 ELSE 0 END), 0), \
                 coalesce(sum(CASE WHEN result = 'unmatched' THEN 1 ELSE 0 END), 0) FROM bounce_reports",
            )
            .fetch_one(pool)
            .await?;
            Ok(BounceCounts { reports, pending, unmatched, held })
        })
    }
}

/// The verdicts of a batch that ask for `apply` and name a recipient.
fn asking(batch: &[ProcessedReport], apply: Apply) -> Vec<&VerdictRecord> {
    batch
        .iter()
        .flat_map(|r| &r.verdicts)
        .filter(|v| v.apply == apply && v.recipient_id.is_some())
        .collect()
}

/// Every verdict of a batch with its report and the change it caused: `bounced` or `held` when its
/// recipient is among those the statements changed, else `none`.
fn with_changes<'a>(
    batch: &'a [ProcessedReport],
    bounced: &[i64],
    held: &[i64],
) -> Vec<(i64, &'a VerdictRecord, &'static str)> {
    let change = |v: &VerdictRecord| match (v.apply, v.recipient_id) {
        (Apply::Bounce, Some(id)) if bounced.contains(&id) => "bounced",
        (Apply::Hold, Some(id)) if held.contains(&id) => "held",
        _ => "none",
    };
    batch
        .iter()
        .flat_map(|r| r.verdicts.iter().map(move |v| (r.id, v, change(v))))
        .collect()
}
