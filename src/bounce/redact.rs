//! What of a report is stored: the raw report, minus the returned breach notice.
//!
//! A bounce usually carries our whole message back (`message/rfc822`), and that is the breach notice
//! with the person's name and the details of what leaked. Keeping it in the evidence tables would
//! copy personal data into a second place with its own retention. [`redact`] rebuilds the report as
//! a small MIME message that keeps:
//!
//! - the report's top-level header fields, verbatim (they say who sent the report, when, to which
//!   VERP address), except its own MIME fields, which are rewritten for the new body;
//! - every `message/delivery-status`, `message/global-delivery-status` and `message/feedback-report`
//!   part, decoded, in full (the machine-readable facts);
//! - every `text/plain` part, decoded, cut at the first line that starts a quoted original message
//!   (`text::ORIGINAL_MESSAGE_SEPARATORS`): the human explanation stays, the quote goes;
//! - of a returned message or returned headers, only its `Message-ID` (all correlation needs), as a
//!   `text/rfc822-headers` part.
//!
//! Everything else (HTML alternatives, attachments, the returned message's other headers and body) is
//! dropped, and its content types are listed in an `X-Breach-Notifier-Redacted` header. Parsing the
//! redacted bytes gives the same kind, recipient blocks and correlation keys as the raw report (the
//! corpus test checks this), so the stored copy can be re-classified by a later classifier version.
//! A plain-text bounce that quotes the original without any known separator keeps its quote: the
//! raw report's retention policy must still cover the redacted copy's text parts.

use std::fmt::Write as _;

use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::parse::MAX_REPORT_BYTES;
use super::text::{quoted_message_id, split_at_original};

/// Written into the `X-Breach-Notifier-Redacted` header: bumped when what is kept changes.
pub const REDACTION_VERSION: u32 = 1;

/// The most header bytes kept from a report that is not a parseable message.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// One part of the rebuilt message.
struct Kept {
    /// Its content type line value.
    content_type: String,
    /// Its decoded body.
    body: String,
}

/// The bytes to store for `raw` (see the module header for what is kept). Never panics.
#[must_use]
pub fn redact(raw: &[u8]) -> Vec<u8> {
    let raw = &raw[..raw.len().min(MAX_REPORT_BYTES)];
    let Some(message) = MessageParser::default().parse(raw) else {
        return header_block(raw, raw.len().min(MAX_HEADER_BYTES));
    };
    let header_end = usize::try_from(message.parts[0].offset_body)
        .unwrap_or(raw.len())
        .min(raw.len());
    let report_type = message
        .content_type()
        .and_then(|c| c.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for part in &message.parts {
        let Some(kind) = leaf_type(part) else {
            continue;
        };
        match kind.as_str() {
            "message/delivery-status"
            | "message/global-delivery-status"
            | "message/feedback-report" => kept.push(Kept {
                body: String::from_utf8_lossy(part.contents()).into_owned(),
                content_type: kind,
            }),
            "message/rfc822"
            | "message/global"
            | "text/rfc822-headers"
            | "message/global-headers"
            | "message/rfc822-headers" => {
                let id = match &part.body {
                    PartType::Message(m) => m.message_id().map(str::to_owned),
                    _ => quoted_message_id(&String::from_utf8_lossy(part.contents())),
                };
                kept.push(Kept {
                    content_type: "text/rfc822-headers".into(),
                    body: id
                        .map(|id| format!("Message-ID: <{id}>\r\n"))
                        .unwrap_or_default(),
                });
                dropped.push(kind);
            }
            "text/plain" => keep_text(&mut kept, part.contents()),
            _ => dropped.push(kind),
        }
    }
    keep_fields_before_first_part(&message, raw, header_end, &mut kept);
    if kept.iter().all(|k| k.body.trim().is_empty()) {
        // No text to read (a multipart whose boundaries never occur has no parts, a mangled one
        // only empty ones): the parser then reads the whole body as text, so it is kept as text.
        kept.clear();
        keep_text(&mut kept, &raw[header_end..]);
    }
    let mut out = header_block(raw, header_end);
    assemble(&mut out, raw, report_type.as_deref(), &kept, &dropped);
    out
}

/// Keeps a text part as [`cut_text`] cuts it, and the quoted original's Message-ID as returned
/// headers.
fn keep_text(kept: &mut Vec<Kept>, text: &[u8]) {
    let (body, quoted_id) = cut_text(&String::from_utf8_lossy(text));
    kept.push(Kept {
        body,
        content_type: "text/plain; charset=utf-8".into(),
    });
    if let Some(id) = quoted_id {
        kept.push(Kept {
            content_type: "text/rfc822-headers".into(),
            body: format!("Message-ID: <{id}>\r\n"),
        });
    }
}

/// `type/subtype` of a part that is not a multipart container, lower-cased.
fn leaf_type(part: &mail_parser::MessagePart<'_>) -> Option<String> {
    if matches!(part.body, PartType::Multipart(_)) {
        return None;
    }
    Some(part.content_type().map_or_else(
        || "text/plain".to_owned(),
        |c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()).to_ascii_lowercase(),
    ))
}

/// Text without the quoted original, with a note where it was cut, and the quoted original's
/// Message-ID (kept apart, as returned headers).
fn cut_text(text: &str) -> (String, Option<String>) {
    let text = super::dsn::normalize_newlines(text);
    let (head, tail) = split_at_original(&text);
    let mut out = head.replace('\n', "\r\n");
    if !tail.is_empty() {
        out.push_str("[breach-notifier: the quoted original message was removed]\r\n");
    }
    (out, quoted_message_id(tail))
}

/// The top-level header fields in `raw[..end]`, without the MIME fields (`Content-*`,
/// `MIME-Version`) that the rebuilt body replaces. Line ends become CRLF.
fn header_block(raw: &[u8], end: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(&raw[..end]);
    let text = super::dsn::normalize_newlines(&text);
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if !line.starts_with([' ', '\t']) {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            skipping = name.starts_with("content-") || name == "mime-version";
        }
        if !skipping {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.into_bytes()
}

/// Appends the MIME header fields and the kept parts to `out`.
fn assemble(
    out: &mut Vec<u8>,
    raw: &[u8],
    report_type: Option<&str>,
    kept: &[Kept],
    dropped: &[String],
) {
    let boundary = boundary(raw, kept);
    let mut s = String::new();
    let _ = write!(s, "X-Breach-Notifier-Redacted: v{REDACTION_VERSION}");
    if !dropped.is_empty() {
        let _ = write!(s, "; dropped={}", dropped.join(","));
    }
    s.push_str("\r\nMIME-Version: 1.0\r\n");
    match report_type {
        Some(t) if t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            let _ = write!(s, "Content-Type: multipart/report; report-type={t};\r\n");
        }
        _ => s.push_str("Content-Type: multipart/mixed;\r\n"),
    }
    let _ = write!(s, "\tboundary=\"{boundary}\"\r\n\r\n");
    for part in kept {
        let _ = write!(
            s,
            "--{boundary}\r\nContent-Type: {}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
            part.content_type,
            part.body.trim_end()
        );
    }
    let _ = write!(s, "--{boundary}--\r\n");
    out.extend_from_slice(s.as_bytes());
}

/// A boundary that occurs in no kept body: derived from the report's hash, lengthened in the
/// (practically impossible) case that a body holds it.
fn boundary(raw: &[u8], kept: &[Kept]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, raw);
    let mut b = String::from("=_breach-notifier-redacted_");
    for byte in &digest.as_ref()[..8] {
        let _ = write!(b, "{byte:02x}");
    }
    while kept.iter().any(|k| k.body.contains(&b)) {
        b.push('_');
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@relay.example.org\r\nTo: b+token@bounces.example.org\r\n\
        Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"XX\"\r\n\r\n\
        --XX\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n\r\n\
        --XX\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay\r\n\r\n\
        Final-Recipient: rfc822; person@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
        --XX\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <n.1@notify.example.org>\r\n\
        Subject: Your data was exposed\r\nFrom: notices@example.org\r\n\r\nDear Jane Doe, your passport\r\n\
        --XX--\r\n";

    #[test]
    fn keeps_the_report_and_only_the_message_id_of_the_original() {
        let out = String::from_utf8(redact(DSN.as_bytes())).unwrap();
        assert!(out.contains("To: b+token@bounces.example.org"));
        assert!(out.contains("Final-Recipient: rfc822; person@example.net"));
        assert!(out.contains("I'm sorry."));
        assert!(out.contains("Message-ID: <n.1@notify.example.org>"));
        assert!(out.contains("dropped=message/rfc822"));
        assert!(!out.contains("Jane Doe"), "{out}");
        assert!(!out.contains("Your data was exposed"), "{out}");
        let again = crate::bounce::parse(out.as_bytes(), None);
        assert_eq!(
            again.original_message_id.as_deref(),
            Some("n.1@notify.example.org")
        );
        assert_eq!(again.recipients.len(), 1);
    }

    #[test]
    fn text_bounces_lose_the_quoted_original() {
        let raw = "From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\n\n\
            Hi. This is the qmail-send program at mx.example.net.\n<person@example.net>:\n\
            Sorry, no mailbox here by that name. (#5.1.1)\n\n\
            --- Below this line is a copy of the message.\n\nMessage-ID: <n.2@x>\n\nDear Jane Doe\n";
        let out = String::from_utf8(redact(raw.as_bytes())).unwrap();
        assert!(out.contains("no mailbox here"));
        assert!(!out.contains("Jane Doe"));
        assert!(out.contains("quoted original message was removed"));
    }

    #[test]
    fn garbage_keeps_at_most_a_header_block() {
        for garbage in [&b""[..], b"\xff\xfe\x00garbage without headers", b"\n\n\n"] {
            let out = redact(garbage);
            assert!(out.len() < 400, "{}", String::from_utf8_lossy(&out));
        }
    }
}

/// A mangled multipart whose delivery-status fields stand before its first boundary: the parser reads
/// them there (quoted fields), so the stored copy keeps them, as a text part cut at the original
/// message. (Found by the fuzz target: fuzz/regressions/bounce_parse.)
fn keep_fields_before_first_part(
    message: &mail_parser::Message<'_>,
    raw: &[u8],
    header_end: usize,
    kept: &mut Vec<Kept>,
) {
    let Some(first) = message.parts.get(1) else {
        return;
    };
    let end = usize::try_from(first.offset_header)
        .unwrap_or(header_end)
        .clamp(header_end, raw.len());
    let preamble = String::from_utf8_lossy(&raw[header_end..end]);
    if super::text::has_quoted_dsn_fields(&preamble) {
        let (body, _) = cut_text(&preamble);
        kept.insert(
            0,
            Kept {
                body,
                content_type: "text/plain; charset=utf-8".into(),
            },
        );
    }
}

#[cfg(test)]
mod regression {
    /// fuzz/regressions/bounce_parse: the stored copy of a mangled DSN says what the DSN said.
    #[test]
    fn fields_before_the_first_boundary_survive_redaction() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/bounce_parse/crash-8d1b5a12ad584399a1ae1b84123bfa3881164ca6"
        ))
        .unwrap();
        let original = super::super::parse(&raw, None);
        let stored = super::super::parse(&super::redact(&raw), None);
        assert_eq!(stored.kind, original.kind);
        assert_eq!(
            super::super::classify(&stored),
            super::super::classify(&original)
        );
        assert!(!String::from_utf8_lossy(&super::redact(&raw)).contains("Return-Path: sironeko"));
    }

    /// fuzz/regressions/bounce_parse: a Sendmail report whose first boundary is mangled has only an
    /// empty part; the parser reads its whole body as a text bounce, and so must the stored copy.
    #[test]
    fn a_body_read_as_text_survives_redaction() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/bounce_parse/crash-f692ee05f6edc6c8602e66b3b203737da6c7eb39"
        ))
        .unwrap();
        let original = super::super::parse(&raw, None);
        assert_eq!(original.kind, super::super::Kind::TextBounce);
        let stored = super::super::parse(&super::redact(&raw), None);
        assert_eq!(stored.kind, original.kind);
        assert_eq!(
            super::super::classify(&stored),
            super::super::classify(&original)
        );
    }
}
