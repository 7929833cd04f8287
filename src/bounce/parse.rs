//! One inbound report, raw bytes in, a [`Report`] out: what kind of message it is, its top-level
//! headers, every per-recipient block of a delivery status notification, the complaint fields of an
//! ARF report, the evidence a plain-text bounce offers, and the keys that tie it to what we sent
//! (the VERP address it came back to, the original Message-ID, the relay's queue id).
//!
//! MIME decoding (transfer encodings, charsets, broken boundaries) is mail-parser's; it hands the
//! `message/delivery-status` and `message/feedback-report` parts over as bytes, which [`super::dsn`]
//! reads. Kind detection goes in this order, because the markers overlap:
//!
//! 1. a `message/(global-)delivery-status` part anywhere at the top level, or a `multipart/report;
//!    report-type=delivery-status` → [`Kind::DeliveryStatus`]. First, because DSNs carry
//!    `Auto-Submitted: auto-replied` (Postfix) or `auto-generated (failure)` (Sendmail) too, and
//!    some (Tiscali) omit `report-type`;
//! 2. a `message/feedback-report` part or `report-type=feedback-report` → [`Kind::Complaint`]
//!    (RFC 5965);
//! 3. a sender that looks like a mail system (MAILER-DAEMON, postmaster, null Return-Path,
//!    `X-Failed-Recipients`) and either RFC 3464 fields quoted in the text or a well-known
//!    bounce phrase → [`Kind::DeliveryStatus`] or [`Kind::TextBounce`];
//! 4. RFC 3834 markers (`Auto-Submitted` other than `no`, `X-Autoreply`, `X-Autorespond`,
//!    `Precedence: auto_reply`, vacation subjects) → [`Kind::AutoReply`];
//! 5. anything else → [`Kind::Unknown`].
//!
//! The parser never panics on arbitrary bytes and bounds its work: it reads at most
//! [`MAX_REPORT_BYTES`] (the caller's own cap on what it stores may be larger), at most
//! [`MAX_TEXT_BYTES`] of decoded text for the heuristics, and the delivery-status parser stops after a
//! fixed number of groups. A [`Report`] holds addresses: never log it, only its kind and counts.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::dsn::{
    self, PerMessage, RecipientBlock, bare_address, field_groups, normalize_newlines,
};
use super::text;

/// The most of a report the parser reads; a longer one is cut here (the delivery-status part comes
/// before the returned message, so a real report loses only the returned message's tail).
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// The most decoded text the heuristics look at.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// What kind of message a report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 3464 delivery status notification (failed, delayed, delivered, relayed, expanded).
    DeliveryStatus,
    /// RFC 5965 abuse/feedback report: the message reached a mailbox and someone complained.
    Complaint,
    /// RFC 3834 automatic reply (vacation, out of office): the message reached a mailbox.
    AutoReply,
    /// A non-standard bounce recognised by its wording (qmail, Exim, old Exchange, Yahoo, …).
    TextBounce,
    /// None of the above (including bytes that are not a message at all).
    Unknown,
}

/// The top-level headers the classification and the correlation need, unfolded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// `Message-ID` of the report itself (without angle brackets).
    pub message_id: Option<String>,
    /// `From` address: MAILER-DAEMON for a bounce, the recipient for an auto-reply.
    pub from: Option<String>,
    /// `Subject`, decoded.
    pub subject: Option<String>,
    /// `To` address: the envelope sender we used, for most MTAs.
    pub to: Option<String>,
    /// The topmost `Delivered-To` (Postfix `pipe` flag `D`): the address the report was delivered to.
    pub delivered_to: Option<String>,
    /// `X-Original-To` (Postfix `pipe` flag `O`): the recipient before alias rewriting.
    pub x_original_to: Option<String>,
    /// `Return-Path`: `<>` for bounces; never the VERP address (that is where the report went, not
    /// where it came from).
    pub return_path: Option<String>,
    /// `Auto-Submitted` (RFC 3834), lower-cased.
    pub auto_submitted: Option<String>,
    /// `Precedence`, lower-cased.
    pub precedence: Option<String>,
    /// Any of the non-standard auto-reply markers (`X-Autoreply`, `X-Autorespond`, `X-Vacation`, …).
    pub auto_reply_marker: bool,
    /// `In-Reply-To`, without angle brackets: auto-replies name our message here.
    pub in_reply_to: Option<String>,
    /// `Content-Type` as `type/subtype`, lower-cased.
    pub content_type: Option<String>,
    /// `report-type` parameter of a `multipart/report`, lower-cased.
    pub report_type: Option<String>,
    /// `X-Failed-Recipients` (Exim), one address each.
    pub x_failed_recipients: Vec<String>,
}

/// The fields of an RFC 5965 `message/feedback-report` part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feedback {
    /// `Feedback-Type`: abuse, fraud, virus, other, not-spam, auth-failure, opt-out, …
    pub feedback_type: Option<String>,
    /// Every `Original-Rcpt-To` (often redacted or absent).
    pub original_rcpt_to: Vec<String>,
    /// `Original-Mail-From`.
    pub original_mail_from: Option<String>,
    /// `User-Agent` of the reporter.
    pub user_agent: Option<String>,
    /// `Arrival-Date` as written.
    pub arrival_date: Option<String>,
}

/// What a plain-text bounce says, found by [`super::text`]'s conservative rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextEvidence {
    /// The rule that recognised it (`text.<mta>.<phrase>`).
    pub rule: &'static str,
    /// The wording says the mail system is still trying (a delay warning), not that it gave up.
    pub delayed: bool,
    /// The first RFC 3463 code (4.x.x or 5.x.x) in the explanation, before any quoted original.
    pub status: Option<String>,
    /// The first SMTP reply code (4xx/5xx) in the explanation.
    pub reply_code: Option<u16>,
    /// The explanation line that holds the code, trimmed and cut to 300 characters.
    pub diagnostic: Option<String>,
}

/// One parsed report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What kind of message this is.
    pub kind: Kind,
    /// Top-level headers.
    pub headers: Headers,
    /// Per-message DSN fields (empty unless a delivery-status part or quoted fields were found).
    pub per_message: PerMessage,
    /// Every per-recipient DSN block, in order.
    pub recipients: Vec<RecipientBlock>,
    /// The complaint, for [`Kind::Complaint`].
    pub feedback: Option<Feedback>,
    /// The text evidence, for [`Kind::TextBounce`].
    pub text: Option<TextEvidence>,
    /// The envelope recipient the MTA delivered the report to (Postfix `${original_recipient}`),
    /// as passed by the caller.
    pub envelope_to: Option<String>,
    /// The Message-ID of our original message: from the returned `message/rfc822` or
    /// `text/rfc822-headers` part, else a `Message-ID:` line quoted in the text, else `In-Reply-To`.
    pub original_message_id: Option<String>,
    /// The input was longer than [`MAX_REPORT_BYTES`] and was cut.
    pub truncated: bool,
}

impl Report {
    /// Addresses that may carry our VERP token, most trustworthy first: the envelope recipient
    /// from the MTA, then `Delivered-To`, `X-Original-To`, `To`. (Postfix's pipe gives the
    /// envelope recipient as `${original_recipient}` or `${recipient}`; the headers are a fallback
    /// for Maildir or IMAP ingestion, where only the message is at hand.)
    #[must_use]
    pub fn correlation_addresses(&self) -> Vec<&str> {
        [
            self.envelope_to.as_deref(),
            self.headers.delivered_to.as_deref(),
            self.headers.x_original_to.as_deref(),
            self.headers.to.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The relay's queue id for our message (`X-Postfix-Queue-ID`), if the report names it.
    #[must_use]
    pub fn queue_id(&self) -> Option<&str> {
        self.per_message.queue_id.as_deref()
    }
}

/// Parses one raw report. `envelope_to` is the envelope recipient the MTA delivered it to, if the
/// caller knows it. Never panics; garbage gives [`Kind::Unknown`].
#[must_use]
pub fn parse(raw: &[u8], envelope_to: Option<&str>) -> Report {
    let truncated = raw.len() > MAX_REPORT_BYTES;
    let raw = &raw[..raw.len().min(MAX_REPORT_BYTES)];
    let mut report = Report {
        kind: Kind::Unknown,
        headers: Headers::default(),
        per_message: PerMessage::default(),
        recipients: Vec::new(),
        feedback: None,
        text: None,
        envelope_to: envelope_to.map(bare_address).filter(|a| !a.is_empty()),
        original_message_id: None,
        truncated,
    };
    let Some(message) = MessageParser::default().parse(raw) else {
        return report;
    };
    report.headers = headers(&message);
    let parts = scan_parts(&message);
    report.original_message_id = parts.returned_message_id.clone();
    if let Some(ds) = &parts.delivery_status {
        let (per_message, blocks) = dsn::parse_delivery_status(ds);
        report.per_message = per_message;
        report.recipients = blocks;
        report.kind = Kind::DeliveryStatus;
    } else if parts.feedback.is_some()
        || report.headers.report_type.as_deref() == Some("feedback-report")
    {
        report.feedback = Some(parts.feedback.unwrap_or_default());
        report.kind = Kind::Complaint;
    } else {
        classify_text(&mut report, &message);
    }
    if report.original_message_id.is_none() {
        report.original_message_id = report.headers.in_reply_to.clone();
    }
    report
}

/// Steps 3 to 5 of the kind detection: quoted DSN fields, text bounce, auto-reply.
fn classify_text(report: &mut Report, message: &Message<'_>) {
    let body = text_body(message);
    let (explanation, _) = text::split_at_original(&body);
    if report.original_message_id.is_none() {
        report.original_message_id = text::quoted_message_id(&body);
    }
    let daemon = text::may_be_bounce(&report.headers);
    if daemon
        && (report.headers.report_type.as_deref() == Some("delivery-status")
            || text::has_quoted_dsn_fields(explanation))
    {
        let (per_message, blocks) = dsn::parse_delivery_status(text::dsn_fields(explanation));
        if !blocks.is_empty() {
            report.per_message = per_message;
            report.recipients = blocks;
            report.kind = Kind::DeliveryStatus;
            return;
        }
    }
    if let Some(evidence) = daemon
        .then(|| text::bounce_evidence(&report.headers, explanation))
        .flatten()
    {
        report.text = Some(evidence);
        report.kind = Kind::TextBounce;
    } else if !text::sender_is_mail_system(&report.headers) && text::is_auto_reply(&report.headers)
    {
        // A mail system's message is never an auto-reply, which would count as evidence of
        // delivery: a postmaster's "your message was rejected" notice carries
        // `Auto-Submitted: auto-replied` too.
        report.kind = Kind::AutoReply;
    }
}

/// What the top-level parts hold.
#[derive(Default)]
struct Parts {
    /// Decoded delivery-status bodies, concatenated (one blank line between parts).
    delivery_status: Option<String>,
    /// The complaint fields.
    feedback: Option<Feedback>,
    /// Message-ID of the returned message or headers.
    returned_message_id: Option<String>,
}

/// Walks the top-level message's parts (not those inside a returned `message/rfc822`: a report
/// about a report must not be read as our report).
fn scan_parts(message: &Message<'_>) -> Parts {
    let mut found = Parts::default();
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let kind = format!(
            "{}/{}",
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or_default().to_ascii_lowercase()
        );
        match kind.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                let text = String::from_utf8_lossy(part.contents());
                let all = found.delivery_status.get_or_insert_with(String::new);
                all.push_str(&text);
                all.push_str("\n\n");
            }
            "message/feedback-report" if found.feedback.is_none() => {
                found.feedback = Some(feedback(&String::from_utf8_lossy(part.contents())));
            }
            "message/rfc822"
            | "message/global"
            | "text/rfc822-headers"
            | "message/global-headers"
            | "message/rfc822-headers"
                if found.returned_message_id.is_none() =>
            {
                found.returned_message_id = match &part.body {
                    PartType::Message(m) => m.message_id().map(str::to_owned),
                    _ => header_in(&String::from_utf8_lossy(part.contents()), "message-id")
                        .map(|v| message_id(&v)),
                };
            }
            _ => {}
        }
    }
    found
}

/// The complaint fields of a feedback-report body.
fn feedback(text: &str) -> Feedback {
    let mut f = Feedback::default();
    for (name, value) in field_groups(text).into_iter().flatten() {
        match name.as_str() {
            "feedback-type" => f.feedback_type.get_or_insert(value.to_ascii_lowercase()),
            "original-rcpt-to" | "removal-recipient" => {
                f.original_rcpt_to.push(bare_address(&value));
                continue;
            }
            "original-mail-from" => f.original_mail_from.get_or_insert(bare_address(&value)),
            "user-agent" => f.user_agent.get_or_insert(value),
            "arrival-date" | "received-date" => f.arrival_date.get_or_insert(value),
            _ => continue,
        };
    }
    f
}

/// The first field `name` (lower case) in a header block.
fn header_in(text: &str, name: &str) -> Option<String> {
    field_groups(text)
        .into_iter()
        .next()?
        .into_iter()
        .find_map(|(n, v)| (n == name).then_some(v))
}

/// `<id@host>` → `id@host` (a Message-ID, or the address of an address header).
pub(super) fn message_id(value: &str) -> String {
    let v = value.trim();
    let v = v.split_once('<').map_or(v, |(_, rest)| rest);
    v.split_once('>').map_or(v, |(id, _)| id).trim().to_owned()
}

/// The top-level headers.
fn headers(message: &Message<'_>) -> Headers {
    let raw = |name: &'static str| {
        message
            .header_raw(name)
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let address = |name: &'static str| {
        raw(name)
            .map(|v| bare_address(&message_id(&v)))
            .filter(|a| !a.is_empty())
    };
    let ct = message.content_type();
    Headers {
        message_id: message.message_id().map(str::to_owned),
        from: message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_owned)
            .or_else(|| address("From")),
        subject: message.subject().map(str::to_owned),
        to: address("To"),
        delivered_to: address("Delivered-To"),
        x_original_to: address("X-Original-To"),
        return_path: raw("Return-Path"),
        auto_submitted: raw("Auto-Submitted").map(|v| v.to_ascii_lowercase()),
        precedence: raw("Precedence").map(|v| v.to_ascii_lowercase()),
        auto_reply_marker: [
            "X-Autoreply",
            "X-Autorespond",
            "X-Autoresponder",
            "X-Vacation",
        ]
        .into_iter()
        .any(|h| message.header_raw(h).is_some()),
        in_reply_to: raw("In-Reply-To")
            .map(|v| message_id(&v))
            .filter(|v| !v.is_empty()),
        content_type: ct.map(|c| {
            format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()).to_ascii_lowercase()
        }),
        report_type: ct
            .and_then(|c| c.attribute("report-type"))
            .map(str::to_ascii_lowercase),
        x_failed_recipients: raw("X-Failed-Recipients")
            .map(|v| {
                v.split(',')
                    .map(bare_address)
                    .filter(|a| !a.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The message's decoded text (plain parts, else HTML rendered as text), at most
/// [`MAX_TEXT_BYTES`], line ends normalised.
fn text_body(message: &Message<'_>) -> String {
    let mut body = String::new();
    for i in 0..message.text_body_count() {
        if let Some(t) = message.body_text(i) {
            body.push_str(&t);
            body.push('\n');
        }
        if body.len() >= MAX_TEXT_BYTES {
            break;
        }
    }
    if body.trim().is_empty() {
        // A multipart whose boundaries never occur (old Sendmail reports) has no parts: read its
        // body as text.
        let start = usize::try_from(message.parts[0].offset_body).unwrap_or(usize::MAX);
        let raw = message.raw_message();
        let end = raw.len().min(start.saturating_add(MAX_TEXT_BYTES));
        body = String::from_utf8_lossy(raw.get(start..end).unwrap_or_default()).into_owned();
    }
    let mut body = normalize_newlines(&body).into_owned();
    if body.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    body
}
