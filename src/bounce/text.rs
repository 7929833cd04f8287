//! The conservative text rules: who looks like a mail system, which wording is a bounce or a delay
//! warning, where a quoted original message starts, what counts as an RFC 3834 auto-reply.
//!
//! These rules only decide the *kind* of a report that has no machine-readable part; whether a
//! recipient is then failed is [`super::classify`]'s call, and a text bounce is marked as heuristic
//! evidence there so that the caller can require a VERP match or a review. Every rule is a plain
//! substring or a hand-written scanner over bounded text: linear time, no regular expressions on
//! attacker-controlled input (sisimai's CVE-2022-4891 was a ReDoS in exactly this kind of rule).

use super::parse::{Headers, TextEvidence};

/// Lines that start the quoted original message in a plain-text bounce (lower case, compared with
/// the line trimmed). What follows is the breach notice: the heuristics ignore it and
/// [`super::redact`] removes it.
pub const ORIGINAL_MESSAGE_SEPARATORS: &[&str] = &[
    "----- original message -----",
    "-----original message-----",
    "------ this is a copy of",
    "--- below this line is a copy of the message",
    "----- original message follows -----",
    "----- unsent message follows -----",
    "------ original message follows ------",
    "original message follows",
    "----- message header follows -----",
    "----- the header of the original message is following. -----",
    "original message headers:",
    "-------- message original --------",
    "--- original message ---",
    "----- forwarded message -----",
];

/// Local parts (lower case) of the addresses mail systems send bounces from.
const DAEMON_LOCAL_PARTS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "maildaemon",
    "postmaster",
    "mdaemon",
    "double-bounce",
    "mail.daemon",
];

/// Wording that means the mail system gave up: `(rule, lower-case phrase)`.
const FAILURE_PHRASES: &[(&str, &str)] = &[
    ("text.qmail.send-program", "this is the qmail-send program"),
    (
        "text.qmail.not-able",
        "i'm afraid i wasn't able to deliver your message",
    ),
    (
        "text.exim.created-automatically",
        "this message was created automatically by mail delivery software",
    ),
    (
        "text.exim.could-not-be-delivered",
        "could not be delivered to one or more of its recipients",
    ),
    (
        "text.sendmail.fatal-errors",
        "the following addresses had permanent fatal errors",
    ),
    (
        "text.postfix.sorry-to-inform",
        "i'm sorry to have to inform you that your message could not",
    ),
    (
        "text.gmail.failed-permanently",
        "delivery to the following recipient failed permanently",
    ),
    (
        "text.gmail.failed-permanently",
        "delivery to the following recipients failed permanently",
    ),
    (
        "text.gmail.does-not-exist",
        "the email account that you tried to reach does not exist",
    ),
    (
        "text.yahoo.unable-to-deliver",
        "sorry, we were unable to deliver your message to the following address",
    ),
    (
        "text.exchange.delivery-failed",
        "delivery has failed to these recipients or groups",
    ),
    (
        "text.exchange.did-not-reach",
        "your message did not reach some or all of the intended recipients",
    ),
    (
        "text.office365.could-not-be-delivered",
        "your message couldn't be delivered",
    ),
    (
        "text.office365.not-delivered",
        "your message wasn't delivered",
    ),
    (
        "text.generic.could-not-be-delivered",
        "could not be delivered to the following recipient",
    ),
    (
        "text.generic.could-not-be-delivered",
        "message could not be delivered",
    ),
    (
        "text.generic.undeliverable",
        "undeliverable to the following",
    ),
    ("text.generic.permanent-error", "permanent error"),
    ("text.generic.delivery-failed", "delivery failed"),
    ("text.generic.unable-to-deliver", "unable to deliver"),
    ("text.generic.failed-recipient", "failed recipient"),
    ("text.generic.user-unknown", "user unknown"),
    ("text.generic.no-such-user", "no such user"),
];

/// Wording that means the mail system is still trying: checked before the failure phrases, since
/// warnings quote the same diagnostics.
const DELAY_PHRASES: &[(&str, &str)] = &[
    (
        "text.gmail.delayed",
        "delivery to the following recipient has been delayed",
    ),
    (
        "text.sendmail.warning",
        "warning: could not send message for past",
    ),
    (
        "text.generic.warning-only",
        "this is a warning message only",
    ),
    (
        "text.generic.not-a-failure",
        "this is not a delivery failure",
    ),
    ("text.generic.will-retry", "will continue trying"),
    ("text.generic.will-retry", "will keep trying"),
    ("text.generic.will-retry", "will retry"),
    ("text.generic.still-trying", "still trying"),
    ("text.exim.not-yet-delivered", "has not yet been delivered"),
    ("text.generic.delayed", "delivery is delayed"),
    ("text.generic.delayed", "delivery has been delayed"),
];

/// Subjects (lower case, prefix) of bounces, as a second signal after a mail-system sender.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undelivered mail returned to sender",
    "mail delivery failed",
    "delivery status notification (failure)",
    "undeliverable:",
    "undeliverable mail",
    "failure notice",
    "returned mail",
    "mail delivery failure",
    "delivery failure",
    "non remis",
    "unzustellbar",
];

/// Subjects (lower case, prefix) of automatic replies.
const AUTO_REPLY_SUBJECTS: &[&str] = &[
    "auto:",
    "automatic reply",
    "autoreply",
    "auto-reply",
    "auto reply",
    "out of office",
    "out of the office",
    "vacation",
    "abwesenheitsnotiz",
    "réponse automatique",
    "risposta automatica",
    "respuesta automática",
    "automatisch antwoord",
];

/// Is the sender a mail system? A MAILER-DAEMON or postmaster `From`, or Exim's
/// `X-Failed-Recipients`. Such a message is never read as an auto-reply.
#[must_use]
pub fn sender_is_mail_system(h: &Headers) -> bool {
    let local = h
        .from
        .as_deref()
        .map(|f| f.split('@').next().unwrap_or_default().to_ascii_lowercase());
    local.is_some_and(|l| DAEMON_LOCAL_PARTS.contains(&l.as_str()))
        || !h.x_failed_recipients.is_empty()
}

/// May the report be a bounce? A mail-system sender, or a null `Return-Path` (which RFC 3834 §3.3
/// also asks of auto-replies, so it is not enough to rule one out).
#[must_use]
pub fn may_be_bounce(h: &Headers) -> bool {
    sender_is_mail_system(h) || h.return_path.as_deref().is_some_and(|r| r.trim() == "<>")
}

/// RFC 3834 §5 and the non-standard markers: `Auto-Submitted` other than `no`, `X-Autoreply` and
/// friends, `Precedence: auto_reply`, or a vacation subject.
#[must_use]
pub fn is_auto_reply(h: &Headers) -> bool {
    let submitted = h
        .auto_submitted
        .as_deref()
        .is_some_and(|v| !v.trim().is_empty() && !v.trim().starts_with("no"));
    let subject = h.subject.as_deref().map(str::to_lowercase);
    submitted
        || h.auto_reply_marker
        || h.precedence.as_deref() == Some("auto_reply")
        || subject.is_some_and(|s| {
            AUTO_REPLY_SUBJECTS
                .iter()
                .any(|p| s.trim_start().starts_with(p))
        })
}

/// Splits text at the first original-message separator: (explanation, quoted original).
#[must_use]
pub fn split_at_original(text: &str) -> (&str, &str) {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim().to_lowercase();
        if ORIGINAL_MESSAGE_SEPARATORS.iter().any(|s| l.starts_with(s)) {
            return text.split_at(at);
        }
        at += line.len();
    }
    (text, "")
}

/// The first `Message-ID:` line quoted in a text (the returned original's header), without `<>`.
#[must_use]
pub fn quoted_message_id(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let l = line.trim_start();
        let (name, value) = l.split_once(':')?;
        if !name.eq_ignore_ascii_case("message-id") {
            return None;
        }
        let id = super::parse::message_id(value);
        (!id.is_empty() && id.contains('@')).then_some(id)
    })
}

/// Does the explanation quote RFC 3464 fields (a recipient field and an `Action` or `Status`)?
#[must_use]
pub fn has_quoted_dsn_fields(text: &str) -> bool {
    let starts = |name: &str| {
        text.lines().any(|l| {
            l.get(..name.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(name))
        })
    };
    (starts("final-recipient:") || starts("original-recipient:"))
        && (starts("action:") || starts("status:"))
}

/// The text from the first RFC 3464 field line on (so that prose before it is not read as fields).
#[must_use]
pub fn dsn_fields(text: &str) -> &str {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let l = line.to_ascii_lowercase();
        if [
            "reporting-mta:",
            "final-recipient:",
            "original-recipient:",
            "arrival-date:",
        ]
        .iter()
        .any(|f| l.starts_with(f))
        {
            return &text[at..];
        }
        at += line.len();
    }
    text
}

/// The evidence of a plain-text bounce: a delay or failure phrase, else a bounce subject together
/// with a 4xx/5xx code. `None` when neither is there.
#[must_use]
pub fn bounce_evidence(h: &Headers, explanation: &str) -> Option<TextEvidence> {
    let lower = explanation
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let subject = h.subject.as_deref().unwrap_or_default().to_lowercase();
    let (status, diagnostic) =
        first_status(explanation).map_or((None, None), |(s, d)| (Some(s), d));
    let reply_code = first_reply_code(explanation);
    let (rule, delayed) =
        if let Some((rule, _)) = DELAY_PHRASES.iter().find(|(_, p)| lower.contains(p)) {
            (*rule, true)
        } else if let Some((rule, _)) = FAILURE_PHRASES.iter().find(|(_, p)| lower.contains(p)) {
            (*rule, false)
        } else if BOUNCE_SUBJECTS
            .iter()
            .any(|s| subject.trim_start().starts_with(s))
            && (status.is_some() || reply_code.is_some() || !h.x_failed_recipients.is_empty())
        {
            ("text.generic.subject-and-code", false)
        } else {
            return None;
        };
    Some(TextEvidence {
        rule,
        delayed,
        status,
        reply_code,
        diagnostic,
    })
}

/// The first RFC 3463 code of class 4 or 5 (`d.ddd.ddd`, standing alone), and its line.
fn first_status(text: &str) -> Option<(String, Option<String>)> {
    for line in text.lines() {
        if let Some(code) = find_enhanced_code(line, b"45") {
            return Some((code, Some(diagnostic_line(line))));
        }
    }
    None
}

/// The first RFC 3463 code in `s` whose class is one of `classes` (`b"245"`): subject and detail of
/// 1 to 3 digits, not part of a longer dotted number (a version string or an IP address).
#[must_use]
pub fn find_enhanced_code(s: &str, classes: &[u8]) -> Option<String> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if !classes.contains(&c) || i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.')
        {
            continue;
        }
        let rest = &b[i + 1..];
        let Some(len) = dotted_digits(rest) else {
            continue;
        };
        let end = i + 1 + len;
        if end < b.len()
            && (b[end].is_ascii_alphanumeric()
                || b[end] == b'.' && b.get(end + 1).is_some_and(u8::is_ascii_digit))
        {
            continue;
        }
        return Some(s[i..end].to_owned());
    }
    None
}

/// Length of `.d{1,3}.d{1,3}` at the start of `b`.
fn dotted_digits(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    for _ in 0..2 {
        if b.get(at) != Some(&b'.') {
            return None;
        }
        at += 1;
        let digits = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=3).contains(&digits) {
            return None;
        }
        at += digits;
    }
    Some(at)
}

/// The first SMTP reply code 4xx/5xx standing alone as a word (followed by a space, `-` or end).
fn first_reply_code(text: &str) -> Option<u16> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == '"' || c == ':')
        .find_map(|w| {
            let b = w.as_bytes();
            let code = b.get(..3)?;
            let alone = b.len() == 3 || b[3] == b'-';
            (alone && matches!(code[0], b'4' | b'5') && code.iter().all(u8::is_ascii_digit))
                .then(|| w[..3].parse().ok())
                .flatten()
        })
}

/// A diagnostic line as kept in a verdict: trimmed, at most 300 characters.
fn diagnostic_line(line: &str) -> String {
    line.trim().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_stand_alone() {
        assert_eq!(
            find_enhanced_code("550 5.1.1 <a@b>: no", b"45"),
            Some("5.1.1".into())
        );
        assert_eq!(
            find_enhanced_code("#5.0.910 x", b"45"),
            Some("5.0.910".into())
        );
        assert_eq!(find_enhanced_code("(4.4.7)", b"45"), Some("4.4.7".into()));
        assert_eq!(
            find_enhanced_code("Postfix 2.5.1.3 and 15.1.1 and v5.1.1", b"45"),
            None
        );
        assert_eq!(find_enhanced_code("host 10.5.1.1 said", b"45"), None);
        assert_eq!(find_enhanced_code("5.1", b"45"), None);
        assert_eq!(find_enhanced_code("5.1.1234", b"45"), None);
    }

    #[test]
    fn the_original_is_cut_at_its_separator() {
        let t = "Sorry.\n\n--- Below this line is a copy of the message.\n\nMessage-ID: <x@y>\n";
        let (head, tail) = split_at_original(t);
        assert_eq!(head, "Sorry.\n\n");
        assert!(tail.starts_with("--- Below"));
        assert_eq!(quoted_message_id(tail).as_deref(), Some("x@y"));
    }

    #[test]
    fn reply_codes() {
        assert_eq!(first_reply_code("said: 550-5.1.1 The"), Some(550));
        assert_eq!(first_reply_code("year 2550 or 55 or 4500"), None);
    }
}
