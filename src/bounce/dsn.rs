//! The RFC 3464 field parser: the body of a `message/delivery-status` part (or the same fields
//! quoted in plain text) into one per-message block and every per-recipient block.
//!
//! Neither MIME crate parses these fields (mail-parser hands the part over as bytes), and they are
//! simple: header-syntax groups separated by blank lines. The parser is tolerant because real reports
//! are not strict: CRLF, LF or CR line ends, folded values, any case in names, missing required
//! fields, per-message and per-recipient fields run together in one group, `addr-type;` prefixes with
//! or without a space. Unknown fields are kept, in order, for the record.

/// How many field groups are read at most: bounds the work on a hostile report (a real report has
/// one block per recipient of the original message, and ours have one).
const MAX_GROUPS: usize = 1000;

/// The per-message fields of a delivery status notification (RFC 3464 §2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerMessage {
    /// `Reporting-MTA`, without its `dns;` type: the host that wrote the report.
    pub reporting_mta: Option<String>,
    /// `Original-Envelope-Id`: our ENVID, if one was sent (RFC 3461).
    pub original_envelope_id: Option<String>,
    /// `Arrival-Date` as written.
    pub arrival_date: Option<String>,
    /// `X-Postfix-Queue-ID`: the relay's queue id for our message, as in its `250 … queued as` reply.
    pub queue_id: Option<String>,
    /// Every field of the group, names lower-cased, values unfolded.
    pub fields: Vec<(String, String)>,
}

/// One per-recipient block (RFC 3464 §2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientBlock {
    /// `Final-Recipient`, address only (the `rfc822;` type removed).
    pub final_recipient: Option<String>,
    /// `Original-Recipient` (only present when ORCPT was given), address only.
    pub original_recipient: Option<String>,
    /// `Action`, lower-cased first word: failed, delayed, delivered, relayed, expanded.
    pub action: Option<String>,
    /// `Status` as written, comment included; [`crate::bounce::classify`] extracts the code.
    pub status: Option<String>,
    /// `Remote-MTA`, without its type.
    pub remote_mta: Option<String>,
    /// `Diagnostic-Code` with its type (`smtp; 550 5.1.1 …`), unfolded.
    pub diagnostic_code: Option<String>,
    /// `Last-Attempt-Date` as written.
    pub last_attempt_date: Option<String>,
    /// `Will-Retry-Until` as written (delayed reports).
    pub will_retry_until: Option<String>,
    /// Every field of the group, names lower-cased, values unfolded.
    pub fields: Vec<(String, String)>,
}

impl RecipientBlock {
    /// The recipient this block is about: the original one if the report names it, else the final.
    #[must_use]
    pub fn recipient(&self) -> Option<&str> {
        self.original_recipient
            .as_deref()
            .or(self.final_recipient.as_deref())
    }
}

/// Fields that make a group a per-recipient block.
const RECIPIENT_FIELDS: &[&str] = &["final-recipient", "original-recipient", "action", "status"];

/// Parses a delivery-status body. Groups holding any recipient field become recipient blocks (so a
/// report that runs per-message and recipient fields together still yields its recipient); the
/// per-message fields are taken from wherever they first appear.
#[must_use]
pub fn parse_delivery_status(text: &str) -> (PerMessage, Vec<RecipientBlock>) {
    let mut per_message = PerMessage::default();
    let mut blocks = Vec::new();
    for group in field_groups(text).into_iter().take(MAX_GROUPS) {
        let is_recipient = group
            .iter()
            .any(|(n, _)| RECIPIENT_FIELDS.contains(&n.as_str()));
        for (name, value) in &group {
            let slot = match name.as_str() {
                "reporting-mta" => &mut per_message.reporting_mta,
                "original-envelope-id" => &mut per_message.original_envelope_id,
                "arrival-date" => &mut per_message.arrival_date,
                "x-postfix-queue-id" => &mut per_message.queue_id,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(strip_type(value).to_owned());
            }
        }
        if is_recipient {
            blocks.push(recipient_block(group));
        } else if per_message.fields.is_empty() {
            per_message.fields = group;
        }
    }
    (per_message, blocks)
}

/// One recipient block from its fields; the first occurrence of a field wins.
fn recipient_block(fields: Vec<(String, String)>) -> RecipientBlock {
    let mut b = RecipientBlock::default();
    for (name, value) in &fields {
        let (slot, typed) = match name.as_str() {
            "final-recipient" => (&mut b.final_recipient, true),
            "original-recipient" => (&mut b.original_recipient, true),
            "action" => (&mut b.action, false),
            "status" => (&mut b.status, false),
            "remote-mta" => (&mut b.remote_mta, true),
            "diagnostic-code" => (&mut b.diagnostic_code, false),
            "last-attempt-date" => (&mut b.last_attempt_date, false),
            "will-retry-until" => (&mut b.will_retry_until, false),
            _ => continue,
        };
        if slot.is_some() || value.is_empty() {
            continue;
        }
        let v = if typed {
            strip_type(value)
        } else {
            value.as_str()
        };
        *slot = Some(if name == "action" {
            v.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        } else if name.ends_with("recipient") {
            bare_address(v)
        } else {
            v.to_owned()
        });
    }
    b.fields = fields;
    b
}

/// `rfc822; a@b` → `a@b`; a value without a `;` is returned as is.
fn strip_type(value: &str) -> &str {
    value.split_once(';').map_or(value, |(_, v)| v).trim()
}

/// An address without angle brackets or surrounding quotes and blanks.
#[must_use]
pub fn bare_address(value: &str) -> String {
    value
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim_matches('"')
        .trim()
        .to_owned()
}

/// Splits header-syntax text into groups of unfolded `(lower-case name, value)` fields.
#[must_use]
pub fn field_groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    let text = normalize_newlines(text);
    for line in text.split('\n') {
        if line.trim().is_empty() {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                current.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        if groups.len() >= MAX_GROUPS {
            break;
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// CRLF and lone CR (old Mac mail, sisimai's `maildir/mac`) become LF.
#[must_use]
pub fn normalize_newlines(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\r') {
        std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipient_block_with_folding_case_and_crlf() {
        let text = "Reporting-MTA: dns; mx.example.jp\r\nX-Postfix-Queue-ID: 6265E1AC124\r\n\r\n\
            final-recipient: RFC822;  <a@example.org>\r\nACTION: Failed\r\nStatus: 5.1.1 (bad)\r\n\
            Diagnostic-Code: smtp; 550 5.1.1 Address rejected\r\n    a@example.org\r\n\r\n\
            Final-Recipient: rfc822;b@example.org\r\nOriginal-Recipient: rfc822;c@example.org\r\n\
            Action: delayed\r\nX-Ext: kept\r\n";
        let (m, blocks) = parse_delivery_status(text);
        assert_eq!(m.reporting_mta.as_deref(), Some("mx.example.jp"));
        assert_eq!(m.queue_id.as_deref(), Some("6265E1AC124"));
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].recipient(), Some("a@example.org"));
        assert_eq!(blocks[0].action.as_deref(), Some("failed"));
        assert_eq!(blocks[0].status.as_deref(), Some("5.1.1 (bad)"));
        assert_eq!(
            blocks[0].diagnostic_code.as_deref(),
            Some("smtp; 550 5.1.1 Address rejected a@example.org")
        );
        assert_eq!(blocks[1].recipient(), Some("c@example.org"));
        assert_eq!(blocks[1].final_recipient.as_deref(), Some("b@example.org"));
        assert_eq!(blocks[1].action.as_deref(), Some("delayed"));
        assert_eq!(blocks[1].status, None);
        assert!(blocks[1].fields.contains(&("x-ext".into(), "kept".into())));
    }

    #[test]
    fn cr_only_and_run_together_groups() {
        let text =
            "Reporting-MTA: dns; h\rFinal-Recipient: rfc822; x@y\rAction: failed\rStatus: 4.4.7\r";
        let (m, blocks) = parse_delivery_status(text);
        assert_eq!(m.reporting_mta.as_deref(), Some("h"));
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].status.as_deref(), Some("4.4.7"));
    }

    #[test]
    fn garbage_gives_nothing() {
        let (m, blocks) = parse_delivery_status("\u{0}\u{ff}: :\n\t\n::::\n no colon");
        assert!(blocks.is_empty());
        assert_eq!(m.reporting_mta, None);
    }
}
