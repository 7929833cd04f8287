//! Processing stored reports: parse, classify, match each verdict to a recipient, decide the state
//! change, record it all in one transaction per batch, then check the guard against mass false
//! failures. Runs in the daemon (any daemon of a cluster: reports are leased), and again over old
//! reports when the classifier improves (it reads only what was stored).
//!
//! Matching, most trustworthy first: the VERP token of the address the report was delivered to
//! (signed: a forged bounce without a valid token matches nothing), then our Message-ID
//! (`<bn.CAMPAIGN.RECIPIENT.HASH@DOMAIN>`) from the returned headers, accepted only when it is the one
//! stored for that recipient. A verdict read from a plain-text bounce's wording (not from RFC 3464
//! fields) changes a recipient only with a VERP match. A notice "did not arrive" only on a final
//! failure; delays, auto-replies, complaints and success notices are evidence, never failures.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::classify::{self, Basis, FailureClass, Outcome, Verdict};
use super::{parse, verp, webhook};
use crate::config::BounceSettings;
use crate::store::bounces::{
    Applied, Apply, BounceGuard, BounceTarget, ProcessedReport, VerdictRecord,
};
use crate::store::{CampaignState, RecipientStatus, ReportSource, Store};

/// What one report says, before it is matched.
#[derive(Debug, Default)]
pub(crate) struct Finding {
    /// `dsn`, `complaint`, `auto_reply`, `text_bounce`, `ses`, `sendgrid`, `unknown`…
    pub kind: String,
    /// Addresses that may carry our VERP token (the envelope recipient first).
    pub verp_addresses: Vec<String>,
    /// Our Message-ID, as the report quotes it.
    pub message_id: Option<String>,
    /// The relay's queue id of our message (Postfix's X-Postfix-Queue-ID).
    pub queue_id: Option<String>,
    pub verdicts: Vec<Verdict>,
}

/// Totals of one processing round, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub reports: u64,
    pub unmatched: u64,
    pub applied: Applied,
    pub guards_tripped: u64,
}

/// Processes leased reports until none is left (or `max_batches` batches). Returns the totals.
pub async fn process_pending(
    store: &Store,
    settings: &BounceSettings,
    instance: &str,
    max_batches: usize,
) -> crate::store::Result<Round> {
    let mut round = Round::default();
    for _ in 0..max_batches {
        let now = Utc::now();
        let leased = store
            .lease_bounce_reports(instance, BATCH, LEASE, now)
            .await?;
        if leased.is_empty() {
            break;
        }
        let guards: HashSet<(i64, String)> = store
            .active_bounce_guards()
            .await?
            .into_iter()
            .map(|g| (g.campaign_id, g.domain))
            .collect();
        let findings: Vec<(i64, Finding)> = leased
            .iter()
            .map(|r| (r.id, finding(r.source, &r.body, r.envelope_to.as_deref())))
            .collect();
        let candidates = candidates(store, settings, &findings).await?;
        let targets = load_targets(store, &candidates).await?;
        let mut batch = Vec::with_capacity(findings.len());
        for ((id, f), candidate) in findings.into_iter().zip(candidates) {
            let report = decide(id, f, candidate, &targets, &guards);
            round.unmatched += u64::from(report.result == "unmatched");
            batch.push(report);
        }
        let version = classify::CLASSIFIER_VERSION as i32;
        let applied = store.apply_bounce_batch(&batch, version, now).await?;
        round.reports += batch.len() as u64;
        round.applied.bounced += applied.bounced;
        round.applied.held += applied.held;
        round.guards_tripped += check_guards(store, settings, &batch, now).await?;
    }
    Ok(round)
}

/// Reports leased at once: one transaction each, of a few statements per report.
const BATCH: i64 = 200;
/// Long enough for a batch; a daemon that dies leaves its reports to another after this.
const LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// Parses a stored report of any source. A report that makes the parser panic (a bug, found by no
/// test yet) becomes an unclassified finding instead of stopping the processing of every later one.
pub(crate) fn finding(source: ReportSource, body: &[u8], envelope_to: Option<&str>) -> Finding {
    std::panic::catch_unwind(|| parse_finding(source, body, envelope_to)).unwrap_or_else(|_| {
        tracing::error!(source = %source, "bounce parser panicked on a stored report: kept as unclassified");
        Finding {
            kind: "parser_panic".into(),
            verdicts: vec![classify::structured(None, Outcome::Unclassified, "parser.panic")],
            ..Finding::default()
        }
    })
}

fn parse_finding(source: ReportSource, body: &[u8], envelope_to: Option<&str>) -> Finding {
    match source {
        ReportSource::Pipe | ReportSource::Maildir => {
            let report = parse::parse(body, envelope_to);
            Finding {
                kind: format!("{:?}", report.kind).to_ascii_lowercase(),
                verp_addresses: report
                    .correlation_addresses()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                message_id: report.original_message_id.clone(),
                queue_id: report.queue_id().map(str::to_string),
                verdicts: classify::classify(&report),
            }
        }
        ReportSource::Ses => webhook::ses_finding(body),
        ReportSource::Sendgrid => webhook::sendgrid_finding(body),
    }
}

/// The recipient a finding names, by VERP token or by our Message-ID; `(id, matched_by)`.
fn candidate(f: &Finding, settings: &BounceSettings) -> Option<(i64, &'static str)> {
    let keys = settings.keys.all();
    if !keys.is_empty() {
        for address in &f.verp_addresses {
            if let Some(id) = verp::decode(address, &keys) {
                return Some((id, "verp"));
            }
        }
    }
    f.message_id
        .as_deref()
        .and_then(recipient_in_message_id)
        .map(|id| (id, "message_id"))
}

/// The recipient id of one of our Message-IDs, `<bn.CAMPAIGN.RECIPIENT.HASH@DOMAIN>`.
pub(crate) fn recipient_in_message_id(message_id: &str) -> Option<i64> {
    let inner = message_id.trim().trim_start_matches('<');
    let local = inner.split('@').next()?;
    let mut parts = local.split('.');
    if parts.next()? != "bn" {
        return None;
    }
    let _campaign: i64 = parts.next()?.parse().ok()?;
    parts.next()?.parse().ok()
}

/// Each finding's recipient by VERP token or Message-ID, else by the relay's queue id (a lookup
/// in the attempt log, for structured reports only: a queue id is shorter to guess than a token).
async fn candidates(
    store: &Store,
    settings: &BounceSettings,
    findings: &[(i64, Finding)],
) -> crate::store::Result<Vec<Option<(i64, &'static str)>>> {
    let mut out = Vec::with_capacity(findings.len());
    for (_, f) in findings {
        let mut found = candidate(f, settings);
        let structured = f.verdicts.iter().all(|v| v.basis == Basis::Structured);
        if let (None, Some(queue_id), true) = (found, &f.queue_id, structured) {
            found = store
                .recipient_by_queue_id(queue_id)
                .await?
                .map(|id| (id, "queue_id"));
        }
        out.push(found);
    }
    Ok(out)
}

async fn load_targets(
    store: &Store,
    candidates: &[Option<(i64, &'static str)>],
) -> crate::store::Result<HashMap<i64, BounceTarget>> {
    let ids: BTreeSet<i64> = candidates.iter().flatten().map(|(id, _)| *id).collect();
    let ids: Vec<i64> = ids.into_iter().collect();
    Ok(store
        .bounce_targets(&ids)
        .await?
        .into_iter()
        .map(|t| (t.id, t))
        .collect())
}

/// Matches a finding and decides each verdict's state change.
fn decide(
    report_id: i64,
    f: Finding,
    candidate: Option<(i64, &'static str)>,
    targets: &HashMap<i64, BounceTarget>,
    guards: &HashSet<(i64, String)>,
) -> ProcessedReport {
    let matched = candidate.and_then(|(id, by)| {
        let target = targets.get(&id)?;
        // A Message-ID names a recipient only if it is the one stored for them.
        let same_id = |stored: &str| {
            f.message_id
                .as_deref()
                .is_some_and(|m| normalize_id(m) == normalize_id(stored))
        };
        let trusted = by != "message_id" || target.message_id.as_deref().is_some_and(same_id);
        trusted.then_some((target, by))
    });
    let verdicts: Vec<VerdictRecord> = f
        .verdicts
        .into_iter()
        .map(|v| record(v, matched, guards))
        .collect();
    let result = summarize(matched.is_some(), &verdicts);
    ProcessedReport {
        id: report_id,
        kind: f.kind,
        result: result.into(),
        verdicts,
    }
}

fn normalize_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

/// One verdict, with its recipient and the change it asks for.
fn record(
    v: Verdict,
    matched: Option<(&BounceTarget, &'static str)>,
    guards: &HashSet<(i64, String)>,
) -> VerdictRecord {
    let (outcome, class) = v.outcome.names();
    let domain = matched.and_then(|(t, _)| t.email.as_deref().map(domain_of));
    let apply = match (v.outcome, matched) {
        (Outcome::NotDelivered { class }, Some((t, by)))
            if t.status == RecipientStatus::Sent
                && (by == "verp" || v.basis == Basis::Structured) =>
        {
            let guarded = domain
                .as_ref()
                .is_some_and(|d| guards.contains(&(t.campaign_id, d.clone())));
            let can_resend = matches!(
                t.campaign_state,
                CampaignState::Running | CampaignState::Paused
            );
            if guarded && class == FailureClass::Policy && can_resend {
                Apply::Hold
            } else {
                Apply::Bounce
            }
        }
        _ => Apply::Nothing,
    };
    VerdictRecord {
        recipient_id: matched.map(|(t, _)| t.id),
        campaign_id: matched.map(|(t, _)| t.campaign_id),
        matched_by: matched.map_or("none", |(_, by)| by),
        status_code: v.status,
        diagnostic: v.diagnostic.map(|d| scrub_addresses(&d)),
        remote_domain: domain,
        outcome,
        class,
        rule: v.rule.to_string(),
        apply,
    }
}

/// A diagnostic as kept for the evidence export, which holds no address: every `local@domain` in it
/// becomes `…@domain` (a diagnostic usually repeats the recipient's address), cut to 1,000
/// characters.
pub(crate) fn scrub_addresses(text: &str) -> String {
    let is_part = |c: char| !c.is_whitespace() && !"<>\"'(),;:[]".contains(c);
    let mut out = String::with_capacity(text.len().min(1000));
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match word.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                out.push('…');
                out.push('@');
                out.push_str(domain);
            }
            _ => out.push_str(word),
        }
        word.clear();
    };
    for c in text.chars().take(1000) {
        if is_part(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The receiving domain of an address, lower-cased.
pub(crate) fn domain_of(email: &str) -> String {
    email
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase()
}

/// A report's result in one word: `bounced`, `held`, `evidence`, `delayed`, `no_change`,
/// `unclassified` or `unmatched`.
fn summarize(matched: bool, verdicts: &[VerdictRecord]) -> &'static str {
    let has = |o: &str| verdicts.iter().any(|v| v.outcome == o);
    if verdicts.iter().any(|v| v.apply == Apply::Bounce) {
        "bounced"
    } else if verdicts.iter().any(|v| v.apply == Apply::Hold) {
        "held"
    } else if !matched {
        "unmatched"
    } else if has("delivered") {
        "evidence"
    } else if has("delayed") {
        "delayed"
    } else if has("not_delivered") {
        "no_change"
    } else {
        "unclassified"
    }
}

/// After a batch: for each (campaign, domain) that had policy rejections, trips the guard when the
/// window's final failures are mostly policy rejections. Returns how many guards tripped.
async fn check_guards(
    store: &Store,
    settings: &BounceSettings,
    batch: &[ProcessedReport],
    now: DateTime<Utc>,
) -> crate::store::Result<u64> {
    let suspects: BTreeSet<(i64, String)> = batch
        .iter()
        .flat_map(|r| &r.verdicts)
        .filter(|v| v.class == Some("policy") && v.apply == Apply::Bounce)
        .filter_map(|v| Some((v.campaign_id?, v.remote_domain.clone()?)))
        .collect();
    let since = now - chrono::Duration::minutes(settings.guard_window_minutes as i64);
    let mut tripped = 0;
    for (campaign_id, domain) in suspects {
        let (failures, policy) = store.domain_failures(campaign_id, &domain, since).await?;
        let share = policy as f64 / failures.max(1) as f64;
        if failures < settings.guard_min_failures as i64 || share <= settings.guard_policy_share {
            continue;
        }
        let guard = BounceGuard {
            campaign_id,
            domain: domain.clone(),
            tripped_at: now,
            failures,
            policy,
        };
        if let Some(parked) = store.trip_bounce_guard(&guard, since).await? {
            tripped += 1;
            tracing::warn!(
                campaign_id,
                domain = %domain,
                failures,
                policy,
                parked,
                "bounce guard: most final failures from this domain are policy rejections (the sender looks blocked); its recipients are held for email, not sent to postal; fix the cause, then run `breach-notifier bounce guard clear`"
            );
        }
    }
    Ok(tripped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_message_ids_name_their_recipient() {
        assert_eq!(
            recipient_in_message_id("<bn.3.1234.abcdef012345@example.com>"),
            Some(1234)
        );
        assert_eq!(
            recipient_in_message_id("<bn-test.3.1234.99@example.com>"),
            None
        );
        assert_eq!(recipient_in_message_id("<other.3.1234@example.com>"), None);
        assert_eq!(recipient_in_message_id("garbage"), None);
    }

    #[test]
    fn diagnostics_keep_no_address() {
        assert_eq!(
            scrub_addresses("smtp; 550 5.1.1 <Jane.Doe@example.com>: Recipient address rejected"),
            "smtp; 550 5.1.1 <…@example.com>: Recipient address rejected"
        );
        assert_eq!(scrub_addresses("no address here"), "no address here");
    }

    #[test]
    fn domains_are_lower_cased() {
        assert_eq!(domain_of("Someone@Example.COM"), "example.com");
        assert_eq!(domain_of("no-at-sign"), "");
    }
}
