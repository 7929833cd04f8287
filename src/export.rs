//! Exports: the two files a campaign owes to people outside it. The **evidence** file tells a
//! regulator, per recipient, what was done: channel, final status, every attempt with its time, SMTP
//! code and reply, the Message-ID, and the content hash of the notice. The **postal** list tells a
//! print-and-mail vendor who still needs a letter (no email address, no electronic consent, or a
//! permanent email failure) and where to send it.
//!
//! Both are streamed so that memory stays flat at millions of recipients: the campaign is read in
//! pages of [`PAGE_SIZE`] recipients in id order, the attempts of a whole page come in one query, and a
//! blocking thread formats and writes each page while the next one is read. At most two pages wait
//! between the two sides.
//!
//! The evidence file deliberately holds no email address and no name: the customer id identifies the
//! person to the company, and the file travels to regulators. Columns are documented in
//! `docs/exports.md`; the constants below are their single source.

use std::io::{self, BufWriter, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::store::{Attempt, Channel, Recipient, RecipientStatus, Store, StoreError};

/// Recipients read per page (and attempts fetched per query).
pub const PAGE_SIZE: u32 = 1000;

/// The evidence columns (CSV header; JSON lines use the same keys, with `attempts` an array and no
/// `attempt_log`).
pub const EVIDENCE_COLUMNS: &[&str] = &[
    "campaign_id",
    "content_hash",
    "customer_id",
    "recipient_id",
    "channel",
    "status",
    "message_id",
    "attempts",
    "first_attempt_at",
    "finished_at",
    "last_code",
    "last_reply",
    "fail_reason",
    "postal_followup",
    "attempt_log",
];

/// The postal columns (CSV header and JSON lines keys).
pub const POSTAL_COLUMNS: &[&str] = &[
    "customer_id",
    "recipient_id",
    "reason",
    "first_name",
    "last_name",
    "address1",
    "address2",
    "city",
    "region",
    "postal_code",
    "country",
    "locale",
    "jurisdiction",
];

/// Which export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// One line per recipient with every attempt, for regulators.
    Evidence,
    /// Everyone who needs a letter, with their postal address, for a print-and-mail vendor.
    Postal,
}

impl ExportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Evidence => "evidence",
            ExportKind::Postal => "postal",
        }
    }

    /// The label of plain progress lines.
    pub fn progress_label(self) -> &'static str {
        match self {
            ExportKind::Evidence => "evidence export",
            ExportKind::Postal => "postal export",
        }
    }
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    /// RFC 4180 CSV with a header line.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl FromStr for Format {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "csv" => Ok(Format::Csv),
            "jsonl" => Ok(Format::JsonLines),
            other => anyhow::bail!("unknown export format {other:?}: use csv or jsonl"),
        }
    }
}

/// What to export and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub campaign_id: i64,
    pub kind: ExportKind,
    pub format: Format,
    /// Recipients per page; [`PAGE_SIZE`] unless a test wants to cross page boundaries cheaply.
    pub page_size: u32,
    /// Show progress on standard error (a live line on a terminal, a line every 10 s otherwise).
    pub progress: bool,
}

impl ExportOptions {
    pub fn new(campaign_id: i64, kind: ExportKind, format: Format) -> Self {
        ExportOptions {
            campaign_id,
            kind,
            format,
            page_size: PAGE_SIZE,
            progress: false,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Recipients of the campaign read.
    pub read: u64,
    /// Lines written (every recipient for evidence; those who need a letter for postal).
    pub written: u64,
    pub elapsed: Duration,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the campaign failed (including an unknown campaign id).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed; the caller names the destination.
    #[error("cannot write the export: {0}")]
    Write(io::Error),
}

/// One page on its way from the store to the writer.
struct Page {
    recipients: Vec<Recipient>,
    /// The page's attempts, ordered by recipient id then oldest first (evidence only).
    attempts: Vec<Attempt>,
}

/// Streams one export of a campaign into `out`, returning the summary and `out` (flushed) so the
/// caller can make it durable. Nothing is written when the campaign does not exist.
pub async fn export<W: Write + Send + 'static>(
    store: &Store,
    opts: &ExportOptions,
    out: W,
) -> Result<(ExportSummary, W), ExportError> {
    let started = Instant::now();
    let campaign = store.require_campaign(opts.campaign_id).await?;
    let total = store
        .progress(Some(campaign.id))
        .await?
        .first()
        .map(|p| p.total.max(0) as u64);
    let page_size = opts.page_size.max(1);

    let written = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(2);
    let (kind, format) = (opts.kind, opts.format);
    let content_hash = campaign.content_hash.clone();
    let counter = Arc::clone(&written);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<W> {
        let mut sink = Sink::new(kind, format, content_hash, out)?;
        while let Some(page) = rx.blocking_recv() {
            let n = sink.write_page(&page)?;
            counter.fetch_add(n, Ordering::Relaxed);
        }
        sink.finish()
    });

    let mut progress =
        crate::progress::Progress::new(opts.kind.progress_label(), "recipients", opts.progress);
    let describe = |read: u64, written: u64| {
        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
        match opts.kind {
            ExportKind::Evidence => format!("{read}{of} recipients written"),
            ExportKind::Postal => format!("{read}{of} recipients read, {written} need a letter"),
        }
    };
    let mut read = 0u64;
    let mut after = 0i64;
    let fetched: Result<(), StoreError> = async {
        loop {
            let recipients = store
                .recipients_after(campaign.id, after, page_size)
                .await?;
            let Some(last) = recipients.last() else {
                break;
            };
            after = last.id;
            let full = recipients.len() as u64 == u64::from(page_size);
            let attempts = match opts.kind {
                ExportKind::Evidence => {
                    let ids: Vec<i64> = recipients.iter().map(|r| r.id).collect();
                    store.attempts_for(&ids).await?
                }
                ExportKind::Postal => Vec::new(),
            };
            read += recipients.len() as u64;
            if tx
                .send(Page {
                    recipients,
                    attempts,
                })
                .await
                .is_err()
            {
                // The writer stopped on an error: it is reported below.
                break;
            }
            let w = written.load(Ordering::Relaxed);
            progress.tick(read, || describe(read, w));
            if !full {
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let joined = writer.await;
    fetched?;
    let out = joined
        .map_err(|e| ExportError::Write(io::Error::other(format!("the writer stopped: {e}"))))?
        .map_err(ExportError::Write)?;
    let written = written.load(Ordering::Relaxed);
    progress.finish(|| describe(read, written));
    let summary = ExportSummary {
        read,
        written,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        campaign_id = campaign.id,
        export = opts.kind.as_str(),
        read,
        written,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "export written"
    );
    Ok((summary, out))
}

/// Whether a recipient needs a letter, and why. Cancelled recipients never do (the campaign, or the
/// operator, withdrew them); recipients whose email is still open do not yet.
fn postal_reason(r: &Recipient) -> Option<String> {
    if r.status == RecipientStatus::Cancelled {
        return None;
    }
    if r.status == RecipientStatus::Failed && r.postal_followup {
        return Some(format!(
            "email failed: {}",
            r.fail_reason.as_deref().unwrap_or("no reason recorded")
        ));
    }
    if r.channel != Channel::Postal && r.status != RecipientStatus::Postal {
        return None;
    }
    Some(if r.email.is_none() {
        "no email address".into()
    } else if !r.electronic_consent {
        "no electronic consent".into()
    } else {
        // Put on the postal channel by hand (SQL) despite an address and consent.
        "postal channel".into()
    })
}

/// A time as RFC 3339 UTC with microseconds: lossless for both backends, one width for every line.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(time)
}

/// A reply on one line for `attempt_log`: each run of control characters (a multi-line SMTP reply's
/// line breaks) becomes one space. The exact reply is in `last_reply` and in the JSON lines.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if c.is_control() {
            if !in_run {
                out.push(' ');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out.trim().to_string()
}

/// `N@TIME outcome code reply` per attempt, joined by ` | ` (`-` for a missing code).
fn attempt_log(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| {
            let code = a
                .smtp_code
                .map_or_else(|| "-".to_string(), |c| c.to_string());
            let mut entry = format!("{}@{} {} {code}", a.attempt, time(a.started_at), a.outcome);
            if let Some(reply) = a.reply.as_deref().map(one_line).filter(|r| !r.is_empty()) {
                entry.push(' ');
                entry.push_str(&reply);
            }
            entry
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

#[derive(Serialize)]
struct EvidenceLine<'a> {
    campaign_id: i64,
    content_hash: &'a str,
    customer_id: &'a str,
    recipient_id: i64,
    channel: Channel,
    status: RecipientStatus,
    message_id: Option<&'a str>,
    attempts: Vec<AttemptLine<'a>>,
    first_attempt_at: Option<String>,
    finished_at: Option<String>,
    last_code: Option<i32>,
    last_reply: Option<&'a str>,
    fail_reason: Option<&'a str>,
    postal_followup: bool,
}

#[derive(Serialize)]
struct AttemptLine<'a> {
    attempt: i32,
    started_at: String,
    finished_at: String,
    outcome: crate::store::AttemptOutcome,
    smtp_code: Option<i32>,
    reply: Option<&'a str>,
    message_id: &'a str,
    instance: &'a str,
}

#[derive(Serialize)]
struct PostalLine<'a> {
    customer_id: &'a str,
    recipient_id: i64,
    reason: String,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    address1: Option<&'a str>,
    address2: Option<&'a str>,
    city: Option<&'a str>,
    region: Option<&'a str>,
    postal_code: Option<&'a str>,
    country: Option<&'a str>,
    locale: Option<&'a str>,
    jurisdiction: Option<&'a str>,
}

fn evidence_line<'a>(
    content_hash: &'a str,
    r: &'a Recipient,
    attempts: &'a [Attempt],
) -> EvidenceLine<'a> {
    EvidenceLine {
        campaign_id: r.campaign_id,
        content_hash,
        customer_id: &r.customer_id,
        recipient_id: r.id,
        channel: r.channel,
        status: r.status,
        message_id: r.message_id.as_deref(),
        attempts: attempts
            .iter()
            .map(|a| AttemptLine {
                attempt: a.attempt,
                started_at: time(a.started_at),
                finished_at: time(a.finished_at),
                outcome: a.outcome,
                smtp_code: a.smtp_code,
                reply: a.reply.as_deref(),
                message_id: &a.message_id,
                instance: &a.instance,
            })
            .collect(),
        first_attempt_at: opt_time(r.first_attempt_at),
        finished_at: opt_time(r.finished_at),
        last_code: r.last_code,
        last_reply: r.last_reply.as_deref(),
        fail_reason: r.fail_reason.as_deref(),
        postal_followup: r.postal_followup,
    }
}

/// The evidence line as CSV fields, in [`EVIDENCE_COLUMNS`] order.
fn evidence_record(line: &EvidenceLine<'_>, attempts: &[Attempt]) -> [String; 15] {
    let o = |v: Option<&str>| v.unwrap_or_default().to_string();
    [
        line.campaign_id.to_string(),
        line.content_hash.to_string(),
        line.customer_id.to_string(),
        line.recipient_id.to_string(),
        line.channel.as_str().to_string(),
        line.status.as_str().to_string(),
        o(line.message_id),
        attempts.len().to_string(),
        line.first_attempt_at.clone().unwrap_or_default(),
        line.finished_at.clone().unwrap_or_default(),
        line.last_code.map(|c| c.to_string()).unwrap_or_default(),
        o(line.last_reply),
        o(line.fail_reason),
        line.postal_followup.to_string(),
        attempt_log(attempts),
    ]
}

fn postal_line(r: &Recipient, reason: String) -> PostalLine<'_> {
    PostalLine {
        customer_id: &r.customer_id,
        recipient_id: r.id,
        reason,
        first_name: r.first_name.as_deref(),
        last_name: r.last_name.as_deref(),
        address1: r.address1.as_deref(),
        address2: r.address2.as_deref(),
        city: r.city.as_deref(),
        region: r.region.as_deref(),
        postal_code: r.postal_code.as_deref(),
        country: r.country.as_deref(),
        locale: r.locale.as_deref(),
        jurisdiction: r.jurisdiction.as_deref(),
    }
}

/// The postal line as CSV fields, in [`POSTAL_COLUMNS`] order.
fn postal_record(p: &PostalLine<'_>) -> [String; 13] {
    let o = |v: Option<&str>| v.unwrap_or_default().to_string();
    [
        p.customer_id.to_string(),
        p.recipient_id.to_string(),
        p.reason.clone(),
        o(p.first_name),
        o(p.last_name),
        o(p.address1),
        o(p.address2),
        o(p.city),
        o(p.region),
        o(p.postal_code),
        o(p.country),
        o(p.locale),
        o(p.jurisdiction),
    ]
}

/// The formatting side of an export, run on a blocking thread.
struct Sink<W: Write> {
    kind: ExportKind,
    content_hash: String,
    out: Out<W>,
}

enum Out<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Json(BufWriter<W>),
}

impl<W: Write> Sink<W> {
    fn new(kind: ExportKind, format: Format, content_hash: String, out: W) -> io::Result<Self> {
        let out = match format {
            Format::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .buffer_capacity(1 << 16)
                    .from_writer(out);
                let header = match kind {
                    ExportKind::Evidence => EVIDENCE_COLUMNS,
                    ExportKind::Postal => POSTAL_COLUMNS,
                };
                w.write_record(header).map_err(csv_io)?;
                Out::Csv(Box::new(w))
            }
            Format::JsonLines => Out::Json(BufWriter::with_capacity(1 << 16, out)),
        };
        Ok(Sink {
            kind,
            content_hash,
            out,
        })
    }

    /// Writes one page; returns the lines written.
    fn write_page(&mut self, page: &Page) -> io::Result<u64> {
        let mut n = 0;
        match self.kind {
            ExportKind::Evidence => {
                let mut attempts = &page.attempts[..];
                for r in &page.recipients {
                    // Both sides are in recipient id order: take this recipient's run of attempts.
                    let start = attempts.partition_point(|a| a.recipient_id < r.id);
                    attempts = &attempts[start..];
                    let end = attempts.partition_point(|a| a.recipient_id == r.id);
                    let (mine, rest) = attempts.split_at(end);
                    attempts = rest;
                    let line = evidence_line(&self.content_hash, r, mine);
                    match &mut self.out {
                        Out::Csv(w) => w
                            .write_record(evidence_record(&line, mine))
                            .map_err(csv_io)?,
                        Out::Json(w) => json_line(w, &line)?,
                    }
                    n += 1;
                }
            }
            ExportKind::Postal => {
                for r in &page.recipients {
                    let Some(reason) = postal_reason(r) else {
                        continue;
                    };
                    let line = postal_line(r, reason);
                    match &mut self.out {
                        Out::Csv(w) => w.write_record(postal_record(&line)).map_err(csv_io)?,
                        Out::Json(w) => json_line(w, &line)?,
                    }
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Flushes everything and hands the destination back.
    fn finish(self) -> io::Result<W> {
        match self.out {
            Out::Csv(w) => w.into_inner().map_err(|e| e.into_error()),
            Out::Json(w) => w.into_inner().map_err(|e| e.into_error()),
        }
    }
}

fn json_line<W: Write, T: Serialize>(w: &mut W, value: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *w, value).map_err(io::Error::from)?;
    w.write_all(b"\n")
}

/// The I/O error inside a CSV error (the only kind writing can produce), or the error as text.
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AttemptOutcome;

    fn attempt(n: i32, code: Option<i32>, reply: Option<&str>) -> Attempt {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:10.123Z")
            .unwrap()
            .with_timezone(&Utc);
        Attempt {
            id: i64::from(n),
            recipient_id: 7,
            campaign_id: 1,
            attempt: n,
            instance: "a".into(),
            started_at: t,
            finished_at: t,
            outcome: AttemptOutcome::Transient,
            smtp_code: code,
            reply: reply.map(str::to_string),
            message_id: "<m@x>".into(),
        }
    }

    #[test]
    fn attempt_log_is_one_line_per_attempt_joined_by_bars() {
        let log = attempt_log(&[
            attempt(1, Some(421), Some("421-4.7.0 try\r\n421 4.7.0 later\r\n")),
            attempt(2, None, Some("connection reset")),
            attempt(3, Some(451), None),
        ]);
        assert_eq!(
            log,
            "1@2026-01-01T00:00:10.123000Z transient 421 421-4.7.0 try 421 4.7.0 later \
             | 2@2026-01-01T00:00:10.123000Z transient - connection reset \
             | 3@2026-01-01T00:00:10.123000Z transient 451"
        );
        assert_eq!(attempt_log(&[]), "");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
        assert_eq!("jsonl".parse::<Format>().unwrap(), Format::JsonLines);
        assert!("xml".parse::<Format>().is_err());
    }
}
