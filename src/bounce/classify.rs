//! What a parsed report says about each recipient: one [`Verdict`] per recipient block, with the
//! outcome, the reason class, the rule that decided it and the evidence it rests on.
//!
//! Breach-notifier's question is "did this notice reach the person?", not a newsletter's "should we
//! stop mailing this address?". So:
//!
//! - `Action` decides finality (RFC 3464 §2.3.3): `failed` means the reporting MTA gave up, whatever
//!   the status class; `delayed` means it is still trying; `delivered`, `relayed` and `expanded` are
//!   evidence of delivery (or of hand-off to a system that reports no further).
//! - `Status` (RFC 3463 `class.subject.detail`) decides only the reason. A 4.x.x status with
//!   `Action: failed` is a final failure: RFC 3463 class 4 says the condition was transient *when it
//!   was seen*, but `failed` says the MTA stopped retrying (Postfix writes exactly this when a message
//!   expires in its queue: `4.4.1`, `4.4.7`, `4.0.0`). The notice did not arrive, so it is
//!   [`FailureClass::Expired`] unless the subject says more (4.2.2 mailbox full, 4.1.1 unknown user).
//! - Auto-replies (RFC 3834), complaints (RFC 5965) and success DSNs are never failures: each proves
//!   the message reached a mailbox or left the last system that would report on it.
//! - Diagnostic text only refines a status that says nothing specific (`X.0.0` or none), with a few
//!   plain phrases. Status codes can be wrong (sisimai's `rfc3464-01` says 5.1.1 about a full
//!   mailbox); this classifier believes the code and records the diagnostic for a human to read.
//! - Policy and spam rejections (X.7.x) are [`FailureClass::Policy`] and flagged
//!   ([`Verdict::is_policy_rejection`]): a wave of them usually means our sending reputation or DNS
//!   setup is at fault, not the recipients, and the caller should stop escalating to letters and
//!   alert the operator instead of failing thousands of people.
//!
//! [`CLASSIFIER_VERSION`] is stored with every verdict, so that a report can be re-classified by a
//! newer version and the difference explained.

use super::dsn::RecipientBlock;
use super::parse::{Kind, Report};
use super::text::find_enhanced_code;

/// Bumped whenever a rule changes what any input classifies as.
pub const CLASSIFIER_VERSION: u32 = 1;

/// Why a notice was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The mailbox or domain does not exist or cannot receive mail (X.1.x, X.2.1, 5.4.4 no route).
    UnknownRecipient,
    /// The mailbox is full (X.2.2).
    MailboxFull,
    /// The remote end could not be reached or the message timed out in a queue (X.4.x, any class-4
    /// status on a failed report).
    Expired,
    /// Refused for policy, security or spam reasons (X.7.x): often about the sender, not the address.
    Policy,
    /// Any other permanent failure, or none stated.
    Other,
}

/// What kind of evidence of delivery a report gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryEvidence {
    /// A success DSN: `Action: delivered`, `relayed` or `expanded`.
    SuccessDsn,
    /// An RFC 3834 automatic reply from the recipient's mailbox.
    AutoReply,
    /// An RFC 5965 complaint: the recipient saw the message.
    Complaint,
}

/// The outcome for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The notice did not arrive and the reporting system has given up.
    NotDelivered {
        /// Why.
        class: FailureClass,
    },
    /// Still pending: the reporting system is retrying.
    Delayed,
    /// Evidence that the notice arrived.
    Delivered {
        /// Which evidence.
        evidence: DeliveryEvidence,
    },
    /// Nothing this classifier can act on.
    Unclassified,
}

impl Outcome {
    /// The outcome and its class or evidence as words: how verdicts are stored
    /// (`bounce_verdicts.outcome`, `.class`) and how the corpus's `expected.toml` spells them.
    #[must_use]
    pub fn names(self) -> (&'static str, Option<&'static str>) {
        match self {
            Outcome::NotDelivered { class } => (
                "not_delivered",
                Some(match class {
                    FailureClass::UnknownRecipient => "unknown_recipient",
                    FailureClass::MailboxFull => "mailbox_full",
                    FailureClass::Expired => "expired",
                    FailureClass::Policy => "policy",
                    FailureClass::Other => "other",
                }),
            ),
            Outcome::Delayed => ("delayed", None),
            Outcome::Delivered { evidence } => (
                "delivered",
                Some(match evidence {
                    DeliveryEvidence::SuccessDsn => "success_dsn",
                    DeliveryEvidence::AutoReply => "auto_reply",
                    DeliveryEvidence::Complaint => "complaint",
                }),
            ),
            Outcome::Unclassified => ("unclassified", None),
        }
    }
}

/// How much the verdict rests on machine-readable fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Basis {
    /// RFC 3464 / RFC 5965 fields, or RFC 3834 headers.
    Structured,
    /// The wording of a plain-text bounce: act on it only with a VERP match, or after review.
    Heuristic,
}

/// The classification of one recipient block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The recipient the block is about (Original-Recipient, else Final-Recipient; the From of an
    /// auto-reply; Original-Rcpt-To of a complaint), if the report names one. Personal data: store,
    /// never log.
    pub recipient: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// The rule that decided, e.g. `dsn.failed.status`, `text.exim.created-automatically`.
    pub rule: &'static str,
    /// The RFC 3463 code the reason was read from, if any.
    pub status: Option<String>,
    /// The diagnostic as reported (Diagnostic-Code, or the explanation line of a text bounce).
    pub diagnostic: Option<String>,
    /// Structured fields or text heuristics.
    pub basis: Basis,
}

impl Verdict {
    /// A policy/spam rejection: count these per receiving domain and stop automatic escalation when
    /// they come in waves (the cause is usually our reputation or DNS, not the recipients).
    #[must_use]
    pub fn is_policy_rejection(&self) -> bool {
        self.outcome
            == Outcome::NotDelivered {
                class: FailureClass::Policy,
            }
    }
}

/// One verdict per recipient block of `report` (at least one: a report with nothing to act on gives
/// a single [`Outcome::Unclassified`] verdict).
#[must_use]
pub fn classify(report: &Report) -> Vec<Verdict> {
    let verdicts = match report.kind {
        Kind::DeliveryStatus => report.recipients.iter().map(dsn_verdict).collect(),
        Kind::Complaint => complaint_verdicts(report),
        Kind::AutoReply => vec![structured(
            report.headers.from.clone(),
            Outcome::Delivered {
                evidence: DeliveryEvidence::AutoReply,
            },
            "rfc3834.auto-reply",
        )],
        Kind::TextBounce => text_verdicts(report),
        Kind::Unknown => Vec::new(),
    };
    if verdicts.is_empty() {
        return vec![structured(None, Outcome::Unclassified, "none")];
    }
    verdicts
}

/// A structured verdict without status or diagnostic.
pub(super) fn structured(
    recipient: Option<String>,
    outcome: Outcome,
    rule: &'static str,
) -> Verdict {
    Verdict {
        recipient,
        outcome,
        rule,
        status: None,
        diagnostic: None,
        basis: Basis::Structured,
    }
}

/// One verdict per complained-about recipient (one without a recipient if the report redacts them).
fn complaint_verdicts(report: &Report) -> Vec<Verdict> {
    let outcome = Outcome::Delivered {
        evidence: DeliveryEvidence::Complaint,
    };
    let rcpts = report
        .feedback
        .as_ref()
        .map(|f| f.original_rcpt_to.clone())
        .unwrap_or_default();
    if rcpts.is_empty() {
        return vec![structured(None, outcome, "arf.complaint")];
    }
    rcpts
        .into_iter()
        .map(|r| structured(Some(r), outcome, "arf.complaint"))
        .collect()
}

/// The verdict for one RFC 3464 recipient block.
fn dsn_verdict(block: &RecipientBlock) -> Verdict {
    let status = block_status(block);
    let class_digit = status.as_deref().and_then(|s| s.chars().next());
    let (outcome, rule) = match block.action.as_deref() {
        Some("failed") => (
            not_delivered(status.as_deref(), block.diagnostic_code.as_deref()),
            "dsn.failed",
        ),
        Some("delayed") => (Outcome::Delayed, "dsn.delayed"),
        Some("delivered" | "relayed" | "expanded") => (
            Outcome::Delivered {
                evidence: DeliveryEvidence::SuccessDsn,
            },
            "dsn.success",
        ),
        // RFC 3464 requires Action; without it only the status class can speak. 5 is permanent:
        // the MTA will not retry. 2 is success. 4 could be a delay warning or an expiry: unknown.
        _ => match class_digit {
            Some('5') => (
                not_delivered(status.as_deref(), block.diagnostic_code.as_deref()),
                "dsn.no-action.permanent-status",
            ),
            Some('2') => (
                Outcome::Delivered {
                    evidence: DeliveryEvidence::SuccessDsn,
                },
                "dsn.no-action.success-status",
            ),
            _ => (Outcome::Unclassified, "dsn.no-action"),
        },
    };
    Verdict {
        recipient: block.recipient().map(str::to_owned),
        outcome,
        rule,
        status,
        diagnostic: block.diagnostic_code.clone(),
        basis: Basis::Structured,
    }
}

/// The block's RFC 3463 code: `Status`, unless it is missing or says nothing specific (`X.0.0`)
/// and the diagnostic holds a more specific code of the same class.
fn block_status(block: &RecipientBlock) -> Option<String> {
    let field = block
        .status
        .as_deref()
        .and_then(|s| find_enhanced_code(s, b"245"));
    let from_diag = block
        .diagnostic_code
        .as_deref()
        .and_then(|s| find_enhanced_code(s, b"245"));
    match (field, from_diag) {
        // A field that ends in `.0` (X.0.0 "other", X.1.0 "other address status") is less specific
        // than a code of the same class in the diagnostic (sisimai reads them the same way).
        (Some(f), Some(d)) if f.ends_with(".0") && !d.ends_with(".0") && d[..1] == f[..1] => {
            Some(d)
        }
        (Some(f), _) => Some(f),
        (None, d) => d,
    }
}

/// A final failure's class: from the status, refined by the diagnostic when the status is generic.
fn not_delivered(status: Option<&str>, diagnostic: Option<&str>) -> Outcome {
    let class = status
        .and_then(class_from_status)
        .or_else(|| diagnostic.and_then(class_from_text))
        .unwrap_or_else(|| {
            if status.is_some_and(|s| s.starts_with('4')) {
                FailureClass::Expired
            } else {
                FailureClass::Other
            }
        });
    Outcome::NotDelivered { class }
}

/// The class an RFC 3463 code names, or `None` for codes that say nothing specific (X.0.x, X.3.x,
/// X.5.x, X.6.x of class 5), which the diagnostic may refine.
fn class_from_status(status: &str) -> Option<FailureClass> {
    let mut it = status.split('.');
    let class = it.next()?;
    let subject: u16 = it.next()?.parse().ok()?;
    let detail: u16 = it.next()?.parse().ok()?;
    Some(match (subject, detail) {
        (1, 0..=3 | 6 | 10) | (2, 1) | (4, 4) => FailureClass::UnknownRecipient,
        (2, 2) => FailureClass::MailboxFull,
        // 5.4.1 is "no answer from host" in RFC 3463, but Microsoft's servers use it for "Recipient
        // address rejected: Access denied": let the diagnostic say which.
        (4, 1) if class == "5" => return None,
        (7, _) => FailureClass::Policy,
        (4, _) => FailureClass::Expired,
        // Any other class-4 code on a failed report: the MTA retried until it gave up.
        _ if class == "4" => FailureClass::Expired,
        _ => return None,
    })
}

/// A class from diagnostic wording: only used when the status says nothing specific.
fn class_from_text(text: &str) -> Option<FailureClass> {
    const RULES: &[(FailureClass, &[&str])] = &[
        (
            FailureClass::MailboxFull,
            &[
                "mailbox full",
                "mailbox is full",
                "over quota",
                "quota exceeded",
                "exceeded storage",
                "insufficient storage",
            ],
        ),
        (
            FailureClass::UnknownRecipient,
            &[
                "user unknown",
                "unknown user",
                "no such user",
                "does not exist",
                "unknown recipient",
                "invalid recipient",
                "no mailbox",
                "mailbox unavailable",
                "mailbox not found",
                "recipient not found",
                "address rejected",
                "not our customer",
            ],
        ),
        (
            FailureClass::Policy,
            &[
                "spam",
                "blocked",
                "blacklist",
                "blocklist",
                "policy",
                "dmarc",
                "reputation",
                "rejected for policy",
            ],
        ),
    ];
    let lower = text.to_lowercase();
    RULES
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|p| lower.contains(p)))
        .map(|(class, _)| *class)
}

/// The verdicts of a plain-text bounce: one per `X-Failed-Recipients` address, else one.
fn text_verdicts(report: &Report) -> Vec<Verdict> {
    let Some(e) = &report.text else {
        return Vec::new();
    };
    let outcome = if e.delayed {
        Outcome::Delayed
    } else {
        let status = e
            .status
            .clone()
            .or_else(|| e.reply_code.map(|c| format!("{}.0.0", c / 100)));
        not_delivered(status.as_deref(), e.diagnostic.as_deref())
    };
    let recipients: Vec<Option<String>> = if report.headers.x_failed_recipients.is_empty() {
        vec![None]
    } else {
        report
            .headers
            .x_failed_recipients
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    recipients
        .into_iter()
        .map(|recipient| Verdict {
            recipient,
            outcome,
            rule: e.rule,
            status: e.status.clone(),
            diagnostic: e.diagnostic.clone(),
            basis: Basis::Heuristic,
        })
        .collect()
}
