//! Intake: turning an investigator's CSV of affected customers into queued recipients, accounting for
//! every row. A person missing from the queue is a person never notified, so each row ends up exactly
//! once as accepted (email or postal), rejected (written to the rejects file with its line and reason)
//! or a duplicate, and the three add up to the rows read.
//!
//! The file is streamed: a blocking thread parses and validates (the `csv` crate is synchronous),
//! prepares each batch for the store (binary `COPY` data on PostgreSQL) and hands it to the async side,
//! which stores it while the next one is parsed, so memory stays flat whatever the file size. The
//! summary's shared-address count comes from the addresses each batch stored
//! ([`crate::intake::shared_addresses`]), not from reading the campaign back.
//!
//! **Layer: intake.** Owns imports ([`shared_addresses`] included). Uses the store and the operations
//! layer's progress lines; used by the command line.

pub(crate) mod shared_addresses;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::intake::shared_addresses::SharedAddressCounter;
use crate::store::{
    Backend, Channel, ImportCounts, ImportRecord, NewRecipient, PreparedRecipients, Store,
};

/// Rows handed to the store per transaction.
pub const BATCH_ROWS: usize = 10_000;

/// The columns intake knows; any other column becomes an attribute.
const KNOWN: &[&str] = &[
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "locale",
    "jurisdiction",
    "electronic_consent",
    "address1",
    "address2",
    "city",
    "region",
    "postal_code",
    "country",
];

/// Longest accepted value per field, in characters. An email address is at most 254 octets by
/// RFC 5321; the rest are generous limits that still stop a runaway field.
fn max_len(column: &str) -> usize {
    match column {
        "email" => 254,
        "customer_id" | "first_name" | "last_name" | "address1" | "address2" | "city"
        | "region" => 200,
        "postal_code" | "country" | "locale" | "jurisdiction" | "electronic_consent" => 35,
        _ => 2_000,
    }
}

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub campaign_id: i64,
    /// A file path, or `-` for standard input.
    pub source: PathBuf,
    pub rejects: Option<PathBuf>,
    pub dry_run: bool,
    pub actor: String,
    /// Show progress on standard error (a live line on a terminal, periodic lines otherwise).
    pub progress: bool,
    /// Each row's place in the claim order, from its jurisdiction code.
    pub deadline_days: DeadlineDays,
}

/// The deadline day ([`crate::store::ClaimPosition`]) of a jurisdiction code as rows carry it (`None`:
/// no code), written on every row the import stores so that claims go earliest deadline first
/// (docs/deadlines.md). The command line makes it from the rules and the campaign's dates, since intake
/// does not read the rules; the import asks it once per distinct code.
#[derive(Clone)]
pub struct DeadlineDays(Arc<DeadlineDayOf>);

/// A jurisdiction code (`None`: no code) to its deadline day.
type DeadlineDayOf = dyn Fn(Option<&str>) -> i32 + Send + Sync;

impl DeadlineDays {
    pub fn new(day_of: impl Fn(Option<&str>) -> i32 + Send + Sync + 'static) -> Self {
        DeadlineDays(Arc::new(day_of))
    }
}

impl Default for DeadlineDays {
    /// A campaign without deadlines: every row 0, so claims keep queue order.
    fn default() -> Self {
        DeadlineDays::new(|_| 0)
    }
}

impl std::fmt::Debug for DeadlineDays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeadlineDays")
    }
}

/// [`DeadlineDays`] asked once per code.
struct DeadlineDayCache {
    days: DeadlineDays,
    known: HashMap<Option<String>, i32>,
}

impl DeadlineDayCache {
    fn set(&mut self, rows: &mut [NewRecipient]) {
        for r in rows {
            r.deadline_day = match self.known.get(&r.jurisdiction) {
                Some(day) => *day,
                None => {
                    let day = (self.days.0)(r.jurisdiction.as_deref());
                    self.known.insert(r.jurisdiction.clone(), day);
                    day
                }
            };
        }
    }
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub import_id: Option<i64>,
    pub counts: ImportCounts,
    pub sha256: String,
    pub shared_addresses: u64,
    /// An earlier import of exactly the same bytes into this campaign, if any.
    pub same_file_as: Option<i64>,
    pub dry_run: bool,
    pub elapsed: Duration,
    /// Accepted rows per jurisdiction code: codes and counts only (the command line classifies them
    /// against the rules, so that unknown codes are shown; the rows are imported all the same).
    pub jurisdictions: JurisdictionTally,
}

/// How many accepted rows carry each jurisdiction code, and how many carry none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JurisdictionTally {
    pub per_code: BTreeMap<String, u64>,
    pub missing: u64,
}

impl JurisdictionTally {
    fn add(&mut self, rows: &[NewRecipient]) {
        for r in rows {
            match r.jurisdiction.as_deref() {
                Some(code) => *self.per_code.entry(code.to_string()).or_default() += 1,
                None => self.missing += 1,
            }
        }
    }
}

impl ImportSummary {
    /// The operator's summary, ending with the reconciliation line.
    pub fn render(&self, source: &str, campaign_id: i64, rejects: Option<&Path>) -> String {
        let c = &self.counts;
        let mut out = String::new();
        if self.dry_run {
            out.push_str("dry run: nothing was stored\n");
        }
        out.push_str(&format!(
            "import {}into campaign {campaign_id} from {source} (sha256 {})\n",
            self.import_id.map(|i| format!("#{i} ")).unwrap_or_default(),
            &self.sha256[..16]
        ));
        if let Some(earlier) = self.same_file_as {
            out.push_str(&format!(
                "  this exact file was already imported (import #{earlier}){}\n",
                if c.accepted() == 0 {
                    ": nothing new was added"
                } else {
                    ""
                }
            ));
        }
        out.push_str(&format!("  rows read:   {:>10}\n", c.read));
        out.push_str(&format!(
            "  accepted:    {:>10}  (email {}, postal {}{})\n",
            c.accepted(),
            c.email,
            c.postal,
            if c.unusable_email > 0 {
                format!(
                    ", of which {} had an unusable email address",
                    c.unusable_email
                )
            } else {
                String::new()
            }
        ));
        out.push_str(&format!(
            "  rejected:    {:>10}{}\n",
            c.rejected,
            match (rejects, c.rejected) {
                (_, 0) => String::new(),
                (Some(p), _) => format!("  (each with its line and reason in {})", p.display()),
                (None, _) => "  (use --rejects FILE to keep them with their reasons)".into(),
            }
        ));
        out.push_str(&format!(
            "  duplicates:  {:>10}  (customer already in the campaign, left unchanged)\n",
            c.duplicates
        ));
        out.push_str(&format!(
            "  addresses shared by more than one customer: {} (each customer still gets their own notice)\n",
            self.shared_addresses
        ));
        out.push_str(&format!(
            "  read = accepted + rejected + duplicates: {} = {} + {} + {} {}\n",
            c.read,
            c.accepted(),
            c.rejected,
            c.duplicates,
            if c.reconciles() {
                "(reconciled)"
            } else {
                "(DOES NOT RECONCILE)"
            }
        ));
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        out.push_str(&format!(
            "  {:.1} s, {:.0} rows/s\n",
            secs,
            c.read as f64 / secs
        ));
        out
    }
}

/// What the parser thread sends to the storing side.
enum Work {
    /// Rows for a dry run, which only looks them up.
    Batch(Vec<NewRecipient>),
    /// Rows made ready for the store's bulk insert (on the parser thread, beside the storing side).
    Prepared(PreparedRecipients),
    /// Parsing ended; the final counts of the parser's part and the checksum, and the jurisdiction
    /// codes of the accepted rows.
    Done(ParseTotals, JurisdictionTally),
}

/// Column positions of a header.
struct Layout {
    names: Vec<String>,
    /// For each of [`KNOWN`], in its order, the position of that column in the file (a plain array:
    /// looked up thirteen times per row).
    index: [Option<usize>; KNOWN.len()],
    attributes: Vec<(usize, String)>,
}

impl Layout {
    fn position(&self, known: &str) -> Option<usize> {
        let k = KNOWN
            .iter()
            .position(|k| *k == known)
            .expect("a column intake knows");
        self.index[k]
    }

    fn from_header(header: &csv::ByteRecord) -> anyhow::Result<Self> {
        let mut names = Vec::new();
        let mut index = [None; KNOWN.len()];
        let mut attributes = Vec::new();
        for (i, raw) in header.iter().enumerate() {
            let name = std::str::from_utf8(raw)
                .map_err(|_| {
                    anyhow::anyhow!("line 1 (header): column {} is not valid UTF-8", i + 1)
                })?
                .trim()
                .trim_start_matches('\u{feff}')
                .to_ascii_lowercase();
            if name.is_empty() {
                bail!("line 1 (header): column {} has no name", i + 1);
            }
            if name.chars().any(char::is_control) || name.len() > 100 {
                bail!("line 1 (header): column {} has an unusable name", i + 1);
            }
            if names.contains(&name) {
                bail!("line 1 (header): column {name:?} appears twice");
            }
            match KNOWN.iter().position(|k| *k == name) {
                Some(k) => index[k] = Some(i),
                None => attributes.push((i, name.clone())),
            }
            names.push(name);
        }
        let layout = Layout {
            names,
            index,
            attributes,
        };
        if layout.position("customer_id").is_none() {
            bail!(
                "line 1 (header): there is no customer_id column (found: {}); the header must name customer_id and may name {}",
                layout.names.join(", "),
                KNOWN[1..].join(", ")
            );
        }
        Ok(layout)
    }
}

/// Validates one data row: the recipient it describes, and whether it had an address that could not
/// be used; or why the row is refused.
fn recipient_of(
    layout: &Layout,
    record: &csv::ByteRecord,
    email_without_consent: bool,
) -> Result<(NewRecipient, bool), String> {
    let fields = decode_fields(layout, record)?;
    let get = |name: &str| {
        layout
            .position(name)
            .map(|i| fields[i])
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let customer_id = get("customer_id").ok_or("customer_id is empty")?;
    let locale = normalized(get("locale"), normalize_locale, |l| {
        format!("locale {l:?} is not a language tag such as en-US or es-US")
    })?;
    let jurisdiction = normalized(get("jurisdiction"), normalize_jurisdiction, |j| {
        format!(
            "jurisdiction {j:?} is not an ISO 3166 code such as US-CA (subdivision) or DE (country)"
        )
    })?;
    let electronic_consent = consent(get("electronic_consent").as_deref())?;
    let (email, unusable) = match get("email") {
        None => (None, false),
        Some(e) => match normalize_email(&e) {
            Some(e) => (Some(e), false),
            None => (None, true),
        },
    };
    let channel = if email.is_some() && (electronic_consent || email_without_consent) {
        Channel::Email
    } else {
        Channel::Postal
    };
    let attributes = layout
        .attributes
        .iter()
        .map(|(i, name)| {
            (
                name.clone(),
                serde_json::Value::String(fields[*i].to_string()),
            )
        })
        .collect();
    let recipient = NewRecipient {
        customer_id,
        email,
        first_name: get("first_name"),
        last_name: get("last_name"),
        locale,
        jurisdiction,
        electronic_consent,
        address1: get("address1"),
        address2: get("address2"),
        city: get("city"),
        region: get("region"),
        postal_code: get("postal_code"),
        country: get("country").map(|c| c.to_ascii_uppercase()),
        attributes,
        channel,
        import_id: None,
        // Set for the whole batch from the jurisdiction (`DeadlineDayCache`).
        deadline_day: 0,
    };
    Ok((recipient, unusable))
}

/// The row's fields as trimmed text: refused if the count differs from the header's, or a field is
/// not UTF-8, holds a control character or is too long.
fn decode_fields<'a>(layout: &Layout, record: &'a csv::ByteRecord) -> Result<Vec<&'a str>, String> {
    if record.len() != layout.names.len() {
        return Err(format!(
            "the row has {} fields but the header has {}",
            record.len(),
            layout.names.len()
        ));
    }
    let mut fields: Vec<&str> = Vec::with_capacity(record.len());
    for (i, raw) in record.iter().enumerate() {
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(format!("column {} is not valid UTF-8", layout.names[i]));
        };
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(format!(
                "column {} contains a control character (U+{:04X}); line breaks and other control characters are refused, not stripped",
                layout.names[i], c as u32
            ));
        }
        let limit = max_len(&layout.names[i]);
        if text.chars().count() > limit {
            return Err(format!(
                "column {} is longer than {limit} characters",
                layout.names[i]
            ));
        }
        fields.push(text.trim());
    }
    Ok(fields)
}

/// An optional field in its normal form, or `refusal` of the value as given.
fn normalized(
    value: Option<String>,
    normalize: impl Fn(&str) -> Option<String>,
    refusal: impl Fn(&str) -> String,
) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(v) => normalize(&v).map(Some).ok_or_else(|| refusal(&v)),
    }
}

/// The `electronic_consent` column: empty is no.
fn consent(value: Option<&str>) -> Result<bool, String> {
    let one_of = |v: &str, words: &[&str]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
    match value {
        None => Ok(false),
        Some(v) if one_of(v, &["yes", "y", "true", "t", "1"]) => Ok(true),
        Some(v) if one_of(v, &["no", "n", "false", "f", "0"]) => Ok(false),
        Some(other) => Err(format!(
            "electronic_consent {:?} is not yes/no, true/false or 1/0",
            other.to_ascii_lowercase()
        )),
    }
}

/// Parses an address with the mailer's own parser (lettre), trimmed, with the domain lower-cased.
pub fn normalize_email(raw: &str) -> Option<String> {
    let address = lettre::Address::from_str(raw.trim()).ok()?;
    let domain = address.domain();
    if domain.is_ascii() && !domain.bytes().any(|b| b.is_ascii_uppercase()) {
        // Already what would be stored (the usual case), and the parse above was the mailer's.
        return Some(address.to_string());
    }
    let normalized = format!("{}@{}", address.user(), domain.to_lowercase());
    // Re-parse: what is stored is exactly what the mailer will accept.
    lettre::Address::from_str(&normalized)
        .ok()
        .map(|a| a.to_string())
}

/// `en_us` → `en-US`; `None` when it is not a plausible BCP 47 tag.
fn normalize_locale(raw: &str) -> Option<String> {
    let parts: Vec<&str> = raw.split(['-', '_']).collect();
    let lang = parts.first()?;
    if !(2..=3).contains(&lang.len()) || !lang.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let mut out = lang.to_ascii_lowercase();
    for p in &parts[1..] {
        if p.is_empty() || p.len() > 8 || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        out.push('-');
        if p.len() == 2 {
            out.push_str(&p.to_ascii_uppercase())
        } else {
            out.push_str(p)
        }
    }
    Some(out)
}

/// `us-ca` → `US-CA`, `de` → `DE`; `None` unless ISO 3166-1 alpha-2 with an optional subdivision.
fn normalize_jurisdiction(raw: &str) -> Option<String> {
    let upper = raw.to_ascii_uppercase();
    let (country, sub) = match upper.split_once('-') {
        Some((c, s)) => (c, Some(s)),
        None => (upper.as_str(), None),
    };
    let ok_country = country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase());
    let ok_sub = sub
        .is_none_or(|s| (1..=3).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()));
    (ok_country && ok_sub).then_some(upper)
}

/// A reader that hashes what passes through it, so the checksum covers exactly the bytes imported, and
/// notes where lines begin, for the line numbers of rejected rows.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    lines: LineIndex,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.lines.scan(&buf[..n]);
        Ok(n)
    }
}

/// Line numbers of records. A line ends at `\n`, `\r\n` or a bare `\r`, exactly the record
/// terminators of the `csv` crate, so that records split by an old-Mac line end get lines of their own.
/// The csv crate's record position is where it stopped after the previous record, which lags behind
/// blank lines and behind the `\n` of a CRLF line end. A record never begins with a line break, so it
/// begins at the first byte at or after that position that follows a line break and is not one, and
/// its line is one more than the line ends before it. Only the offsets ahead of the parser are kept,
/// so memory stays flat.
struct LineIndex {
    /// Bytes seen so far.
    offset: u64,
    /// The last byte seen, if it was `\r` or `\n` (`\n` at the start of the file).
    last_break: Option<u8>,
    /// Offsets of the line ends not yet passed, and how many were passed.
    line_ends: VecDeque<u64>,
    passed: u64,
    /// Offsets of the bytes that begin a line (follow a line break, are not one), not yet passed.
    starts: VecDeque<u64>,
}

impl LineIndex {
    fn new() -> Self {
        LineIndex {
            offset: 0,
            last_break: Some(b'\n'),
            line_ends: VecDeque::new(),
            passed: 0,
            starts: VecDeque::new(),
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                // The `\n` of a `\r\n` ends the line the `\r` already ended.
                b'\n' if self.last_break == Some(b'\r') => {}
                b'\n' | b'\r' => self.line_ends.push_back(self.offset),
                _ if self.last_break.is_some() => self.starts.push_back(self.offset),
                _ => {}
            }
            self.last_break = matches!(b, b'\n' | b'\r').then_some(b);
            self.offset += 1;
        }
    }

    /// The line on which the record whose reading began at byte `from` starts.
    fn line_of_record(&mut self, from: u64) -> u64 {
        while self.starts.front().is_some_and(|&s| s < from) {
            self.starts.pop_front();
        }
        let start = self.starts.front().copied().unwrap_or(from);
        while self.line_ends.front().is_some_and(|&n| n < start) {
            self.line_ends.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// Runs an import end to end and records it (unless a dry run).
pub async fn import(store: &Store, opts: &ImportOptions) -> anyhow::Result<ImportSummary> {
    let started = Instant::now();
    let started_at = Utc::now();
    let campaign = store.require_campaign(opts.campaign_id).await?;
    if matches!(
        campaign.state,
        crate::store::CampaignState::Completed | crate::store::CampaignState::Cancelled
    ) {
        bail!(
            "campaign {} is {}: recipients can no longer be added (create a supplementary campaign)",
            campaign.id,
            campaign.state
        );
    }
    let total_before = campaign_total(store, opts.campaign_id).await?;
    let import_id = if opts.dry_run {
        None
    } else {
        Some(store.next_import_id().await?)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<anyhow::Result<Work>>(2);
    let parser = spawn_parser(store, opts, campaign.email_without_consent, import_id, tx)?;
    // Only a first list is counted from what it stores (see below); later lists ask the database.
    let addresses = (!opts.dry_run && total_before == 0).then(SharedAddressCounter::default);
    let stored = store_batches(store, opts, rx, addresses).await?;
    parser
        .await
        .context("the CSV parser stopped unexpectedly")?;
    if stored.sha256.is_empty() {
        bail!("the import stopped before the end of the file");
    }
    if !stored.counts.reconciles() {
        bail!(
            "internal error: the import does not reconcile ({:?}); nothing more was done",
            stored.counts
        );
    }
    let mut summary = ImportSummary {
        import_id,
        counts: stored.counts,
        sha256: stored.sha256.clone(),
        shared_addresses: shared_addresses(store, opts, stored.addresses, stored.counts).await?,
        same_file_as: earlier_import(store, opts.campaign_id, &stored.sha256).await?,
        dry_run: opts.dry_run,
        elapsed: Duration::ZERO,
        jurisdictions: stored.jurisdictions,
    };
    if let Some(id) = import_id {
        record(store, opts, id, &summary, started_at).await?;
    }
    tracing::info!(
        campaign_id = opts.campaign_id,
        import_id,
        read = summary.counts.read,
        accepted = summary.counts.accepted(),
        rejected = summary.counts.rejected,
        duplicates = summary.counts.duplicates,
        dry_run = opts.dry_run,
        "import finished"
    );
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Starts the blocking half ([`parse_stream`]) on the list, sending its batches to `tx`.
fn spawn_parser(
    store: &Store,
    opts: &ImportOptions,
    email_without_consent: bool,
    import_id: Option<i64>,
    tx: tokio::sync::mpsc::Sender<anyhow::Result<Work>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (input, rejects) = open_files(opts)?;
    // A dry run stores nothing, so it keeps the rows; an import has them encoded for its store.
    let prepare = (!opts.dry_run).then(|| (store.backend(), opts.campaign_id));
    let deadline_days = DeadlineDayCache {
        days: opts.deadline_days.clone(),
        known: HashMap::new(),
    };
    Ok(tokio::task::spawn_blocking(move || {
        let result = parse_stream(
            input,
            rejects,
            email_without_consent,
            import_id,
            prepare,
            deadline_days,
            &tx,
        );
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    }))
}

/// The list to read (a file, or standard input for `-`) and the rejects file to write.
fn open_files(
    opts: &ImportOptions,
) -> anyhow::Result<(Box<dyn Read + Send>, Option<std::fs::File>)> {
    let input: Box<dyn Read + Send> = if opts.source.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&opts.source)
                .with_context(|| format!("cannot open {} for reading", opts.source.display()))?,
        )
    };
    let rejects = opts
        .rejects
        .as_ref()
        .map(|p| {
            std::fs::File::create(p)
                .with_context(|| format!("cannot write the rejects file {}", p.display()))
        })
        .transpose()?;
    Ok((input, rejects))
}

/// What the storing side made of the parser's batches.
struct Stored {
    counts: ImportCounts,
    sha256: String,
    addresses: Option<SharedAddressCounter>,
    jurisdictions: JurisdictionTally,
}

/// The async half: stores each batch as the parser hands it over (or, in a dry run, looks its
/// customers up), counting what happened to every row.
async fn store_batches(
    store: &Store,
    opts: &ImportOptions,
    mut rx: tokio::sync::mpsc::Receiver<anyhow::Result<Work>>,
    mut addresses: Option<SharedAddressCounter>,
) -> anyhow::Result<Stored> {
    let mut counts = ImportCounts::default();
    let mut progress = crate::ops::progress::Progress::new("import", "rows", opts.progress);
    let mut seen_in_dry_run: HashSet<u64> = HashSet::new();
    let mut sha256 = String::new();
    let mut accepted_rows = 0u64;
    let mut jurisdictions = JurisdictionTally::default();
    while let Some(work) = rx.recv().await {
        match work? {
            Work::Batch(rows) => {
                // Only a dry run gets the rows themselves: it looks them up and stores nothing.
                accepted_rows += rows.len() as u64;
                count_dry_run(
                    store,
                    opts.campaign_id,
                    &rows,
                    &mut seen_in_dry_run,
                    &mut counts,
                )
                .await?;
                progress.tick(accepted_rows, || format!("{accepted_rows} rows checked"));
            }
            Work::Prepared(batch) => {
                accepted_rows += batch.rows();
                // Counted from what the store says it added: a customer already in the campaign (or
                // earlier in this list) is a duplicate.
                let stored = store.insert_prepared(batch).await?;
                counts.add(stored.outcome);
                if let Some(counter) = addresses.as_mut() {
                    counter
                        .add(&stored.addresses)
                        .context("counting shared addresses (temporary file)")?;
                }
                progress.tick(accepted_rows, || format!("{accepted_rows} rows stored"));
            }
            Work::Done(totals, tally) => {
                jurisdictions = tally;
                counts.read = totals.read;
                counts.rejected = totals.rejected;
                counts.unusable_email = totals.unusable_email;
                sha256 = totals.sha256;
            }
        }
    }
    progress.finish(|| format!("{accepted_rows} rows stored"));
    Ok(Stored {
        counts,
        sha256,
        addresses,
        jurisdictions,
    })
}

/// A dry run's counts for one batch: customers already in the campaign, or earlier in the file (an
/// 8-byte hash per customer), are duplicates.
async fn count_dry_run(
    store: &Store,
    campaign_id: i64,
    rows: &[NewRecipient],
    seen: &mut HashSet<u64>,
    counts: &mut ImportCounts,
) -> anyhow::Result<()> {
    let ids: Vec<String> = rows.iter().map(|r| r.customer_id.clone()).collect();
    let existing: HashSet<String> = store
        .existing_customers(campaign_id, &ids)
        .await?
        .into_iter()
        .collect();
    for r in rows {
        if existing.contains(&r.customer_id) || !seen.insert(hash_id(&r.customer_id)) {
            counts.duplicates += 1;
        } else if r.channel == Channel::Email {
            counts.email += 1;
        } else {
            counts.postal += 1;
        }
    }
    Ok(())
}

/// The import of the campaign that read the same bytes before, if any.
async fn earlier_import(
    store: &Store,
    campaign_id: i64,
    sha256: &str,
) -> anyhow::Result<Option<i64>> {
    Ok(store
        .imports(campaign_id)
        .await?
        .into_iter()
        .find(|i| i.sha256 == sha256)
        .map(|i| i.id))
}

/// Addresses shared by more than one customer: counted from what this import stored when it is all
/// the campaign has (the usual first list, and the benchmarked case); otherwise the database counts
/// the whole campaign (a later list, a dry run, or rows added meanwhile by someone else).
async fn shared_addresses(
    store: &Store,
    opts: &ImportOptions,
    counter: Option<SharedAddressCounter>,
    counts: ImportCounts,
) -> anyhow::Result<u64> {
    let stored_now = campaign_total(store, opts.campaign_id).await?;
    match counter {
        Some(counter) if stored_now == counts.accepted() => counter
            .shared()
            .context("counting shared addresses (temporary file)"),
        _ => Ok(store.shared_addresses(opts.campaign_id).await?),
    }
}

/// Records the import, then refreshes the planner's statistics for what was just loaded instead of
/// waiting for autovacuum (see `Store::analyze_recipients`). The rows are stored either way: a failed
/// refresh is a warning.
async fn record(
    store: &Store,
    opts: &ImportOptions,
    id: i64,
    summary: &ImportSummary,
    started_at: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    store
        .record_import(&ImportRecord {
            id,
            campaign_id: opts.campaign_id,
            source_name: opts.source.display().to_string(),
            sha256: summary.sha256.clone(),
            counts: summary.counts,
            shared_addresses: summary.shared_addresses,
            actor: opts.actor.clone(),
            started_at,
            finished_at: Utc::now(),
        })
        .await?;
    if summary.counts.accepted() > 0
        && let Err(e) = store.analyze_recipients().await
    {
        tracing::warn!(error = %e, "cannot refresh the database statistics after the import");
    }
    Ok(())
}

/// Recipients the campaign has, from its O(1) counters.
async fn campaign_total(store: &Store, campaign_id: i64) -> anyhow::Result<u64> {
    Ok(store
        .progress(Some(campaign_id))
        .await?
        .first()
        .map_or(0, |p| u64::try_from(p.total).unwrap_or(0)))
}

fn hash_id(id: &str) -> u64 {
    let d = Sha256::digest(id.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The blocking half: read, validate, write rejects, send batches to the storing side.
fn parse_stream(
    input: Box<dyn Read + Send>,
    rejects: Option<std::fs::File>,
    email_without_consent: bool,
    import_id: Option<i64>,
    prepare: Option<(Backend, i64)>,
    mut deadline_days: DeadlineDayCache,
    tx: &tokio::sync::mpsc::Sender<anyhow::Result<Work>>,
) -> anyhow::Result<()> {
    let rejects = rejects.map(std::io::BufWriter::new);
    let mut failed = None;
    let mut tally = JurisdictionTally::default();
    let totals = parse_csv(
        input,
        rejects,
        email_without_consent,
        import_id,
        |mut batch| {
            tally.add(&batch);
            deadline_days.set(&mut batch);
            let work = match prepare {
                None => Work::Batch(batch),
                Some((backend, campaign_id)) => {
                    match backend.prepare_recipients(campaign_id, batch) {
                        Ok(batch) => Work::Prepared(batch),
                        Err(e) => {
                            failed = Some(e);
                            return false;
                        }
                    }
                }
            };
            tx.blocking_send(Ok(work)).is_ok()
        },
    )?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if let Some(totals) = totals {
        let _ = tx.blocking_send(Ok(Work::Done(totals, tally)));
    }
    Ok(())
}

/// What parsing a whole file found, before the store de-duplicates: `read = accepted + rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTotals {
    /// Data rows read (the header is not counted).
    pub read: u64,
    /// Rows handed to `on_batch`.
    pub accepted: u64,
    /// Rows written to the rejects file with their line and reason.
    pub rejected: u64,
    /// Accepted rows whose email could not be used (they became postal).
    pub unusable_email: u64,
    /// SHA-256 of exactly the bytes read, hex.
    pub sha256: String,
}

/// Reads and validates a CSV of affected customers without touching a database: every data row is
/// either handed to `on_batch` (in batches of up to [`BATCH_ROWS`]) or written to `rejects` as
/// `line,reason,<original fields>`. This is the whole of intake that sees untrusted bytes, which is
/// why it stands alone: the import runs it on a blocking thread, and the fuzz target
/// (`fuzz/fuzz_targets/csv_intake.rs`) runs it on arbitrary input.
///
/// An error means the file as a whole is unusable (no header, no `customer_id` column, a CSV
/// structure that cannot be read past some line); it names the line. `Ok(None)` means `on_batch`
/// returned false (the storing side stopped), so the totals are incomplete.
pub fn parse_csv<R: Read, W: Write>(
    input: R,
    rejects: Option<W>,
    email_without_consent: bool,
    import_id: Option<i64>,
    mut on_batch: impl FnMut(Vec<NewRecipient>) -> bool,
) -> anyhow::Result<Option<ParseTotals>> {
    let mut hashing = Hashing {
        inner: std::io::BufReader::with_capacity(1 << 20, input),
        hasher: Sha256::new(),
        lines: LineIndex::new(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&mut hashing);
    let mut record = csv::ByteRecord::new();
    let mut rejects = rejects.map(|w| csv::WriterBuilder::new().flexible(true).from_writer(w));
    let layout = read_header(&mut reader, &mut record)?;
    if let Some(w) = rejects.as_mut() {
        let mut header = vec!["line".to_string(), "reason".to_string()];
        header.extend(layout.names.iter().cloned());
        w.write_record(&header)?;
    }
    let (mut read, mut accepted, mut rejected, mut unusable_email) = (0u64, 0u64, 0u64, 0u64);
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    while next_record(&mut reader, &mut record)? {
        read += 1;
        let from = record.position().map_or(0, |p| p.byte());
        let line = reader.get_mut().lines.line_of_record(from);
        match recipient_of(&layout, &record, email_without_consent) {
            Ok((mut row, unusable)) => {
                row.import_id = import_id;
                accepted += 1;
                unusable_email += u64::from(unusable);
                batch.push(row);
                if batch.len() == BATCH_ROWS && !on_batch(std::mem::take(&mut batch)) {
                    return Ok(None);
                }
            }
            Err(reason) => {
                rejected += 1;
                if let Some(w) = rejects.as_mut() {
                    write_reject(w, line, &reason, &record)?;
                }
            }
        }
    }
    if !batch.is_empty() && !on_batch(batch) {
        return Ok(None);
    }
    if let Some(mut w) = rejects {
        w.flush()?;
        w.into_inner()
            .map_err(|e| anyhow::anyhow!("writing the rejects file: {e}"))?
            .flush()?;
    }
    drop(reader);
    let sha256 = hex::encode(std::mem::take(&mut hashing.hasher).finalize());
    Ok(Some(ParseTotals {
        read,
        accepted,
        rejected,
        unusable_email,
        sha256,
    }))
}

/// Reads one record; an error names the line where the CSV stops being readable.
fn next_record<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
) -> anyhow::Result<bool> {
    reader
        .read_byte_record(record)
        .map_err(|e| match e.position() {
            Some(p) => anyhow::anyhow!(
                "line {}: the CSV cannot be read past this point ({e})",
                p.line()
            ),
            None => anyhow::anyhow!("the CSV cannot be read ({e})"),
        })
}

/// The header line's layout. A UTF-8 byte-order mark before the first column name is allowed.
fn read_header<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
) -> anyhow::Result<Layout> {
    if !next_record(reader, record)? {
        bail!("the file is empty: expected a header line naming at least customer_id");
    }
    if record
        .get(0)
        .is_some_and(|f| f.starts_with(b"\xEF\xBB\xBF"))
    {
        let mut fixed = csv::ByteRecord::new();
        for (i, f) in record.iter().enumerate() {
            fixed.push_field(if i == 0 { &f[3..] } else { f });
        }
        *record = fixed;
    }
    Layout::from_header(record)
}

/// One line of the rejects file: `line,reason,<original fields>`.
fn write_reject<W: Write>(
    w: &mut csv::Writer<W>,
    line: u64,
    reason: &str,
    record: &csv::ByteRecord,
) -> anyhow::Result<()> {
    let mut out = csv::ByteRecord::new();
    out.push_field(line.to_string().as_bytes());
    out.push_field(reason.as_bytes());
    for f in record.iter() {
        out.push_field(f);
    }
    w.write_byte_record(&out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_parsed_by_the_mailer_and_domains_lowercased() {
        assert_eq!(
            normalize_email("  Ada.Lovelace@Example.COM "),
            Some("Ada.Lovelace@example.com".into())
        );
        assert_eq!(normalize_email("not-an-address"), None);
        assert_eq!(normalize_email("a@b@c.com"), None);
        assert_eq!(
            normalize_email("Ada <ada@example.com>"),
            None,
            "a bare address, not a mailbox"
        );
    }

    #[test]
    fn locales_and_jurisdictions_are_normalised() {
        assert_eq!(normalize_locale("en_us").as_deref(), Some("en-US"));
        assert_eq!(normalize_locale("es-US").as_deref(), Some("es-US"));
        assert_eq!(normalize_locale("english"), None);
        assert_eq!(normalize_jurisdiction("us-ca").as_deref(), Some("US-CA"));
        assert_eq!(normalize_jurisdiction("DE").as_deref(), Some("DE"));
        assert_eq!(normalize_jurisdiction("California"), None);
        assert_eq!(normalize_jurisdiction("US-"), None);
    }

    /// Parses a file and returns the (line, reason) of each rejected row.
    fn rejected_lines(file: &[u8]) -> Vec<(u64, String)> {
        let mut rejects = Vec::new();
        let totals = parse_csv(file, Some(&mut rejects), false, None, |_| true)
            .unwrap()
            .unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(rejects.as_slice());
        let out: Vec<(u64, String)> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[0].parse().unwrap(), r[1].to_string())
            })
            .collect();
        assert_eq!(out.len() as u64, totals.rejected);
        out
    }

    #[test]
    fn every_kind_of_line_end_counts_as_a_line() {
        // A bare CR ends a record for the CSV parser, so it must end a line for the line numbers.
        let lines: Vec<u64> =
            rejected_lines(b"customer_id,email\rC1\rC2\r\nC3\nC4,a@x.com\r\n\r\nC5\n")
                .into_iter()
                .map(|(l, _)| l)
                .collect();
        assert_eq!(
            lines,
            vec![2, 3, 4, 7],
            "C4 on line 5 is accepted; line 6 is blank"
        );
        let (line, reason) = &rejected_lines(b"customer_id\n\"multi\r\nline\"\nbad,row\n")[1];
        assert_eq!(*line, 4, "a quoted line break moves the next record down");
        assert!(reason.contains("2 fields"), "{reason}");
    }
}
