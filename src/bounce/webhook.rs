//! Reading the providers' bounce events, once their signature was checked and they were stored (the
//! HTTP side, `ops::http`, checks and stores; this reads what was stored): an Amazon SES notification
//! inside its SNS envelope, and one SendGrid event (the webhook's array is stored one event per
//! report). Both become a [`Finding`] like a DSN does, so matching and state changes are the same.
//!
//! SES: `notificationType` Bounce with `bounceType` Permanent or Transient (SES has stopped trying
//! either way: the notice did not arrive; `Undetermined` is unclassified), Complaint, Delivery.
//! `mail.source` is our envelope sender (VERP) and `mail.commonHeaders.messageId` our Message-ID.
//! SendGrid: `bounce` (type `bounce` or `blocked`), `dropped`, `deferred`, `delivered`, `spamreport`;
//! `smtp-id` is our Message-ID.

use serde_json::Value;

use super::classify::{Basis, DeliveryEvidence, FailureClass, Outcome, Verdict, structured};
use super::process::Finding;

/// A stored SNS message carrying an SES notification.
pub(crate) fn ses_finding(body: &[u8]) -> Finding {
    let notification = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|sns| {
            let message = sns.get("Message")?.as_str()?.to_string();
            serde_json::from_str::<Value>(&message).ok()
        })
        .unwrap_or(Value::Null);
    let text = |v: &Value, path: &[&str]| -> Option<String> {
        path.iter()
            .try_fold(v, |v, key| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mail = notification.get("mail").cloned().unwrap_or(Value::Null);
    let mut finding = Finding {
        kind: "ses".into(),
        verp_addresses: text(&mail, &["source"]).into_iter().collect(),
        message_id: text(&mail, &["commonHeaders", "messageId"]),
        queue_id: None,
        verdicts: Vec::new(),
    };
    finding.verdicts = match text(&notification, &["notificationType"]).as_deref() {
        Some("Bounce") => ses_bounce(&notification),
        Some("Complaint") => vec![evidence("ses.complaint", DeliveryEvidence::Complaint)],
        Some("Delivery") => vec![evidence("ses.delivery", DeliveryEvidence::SuccessDsn)],
        _ => vec![unclassified("ses.unknown")],
    };
    finding
}

fn ses_bounce(n: &Value) -> Vec<Verdict> {
    let bounce = n.get("bounce").cloned().unwrap_or(Value::Null);
    let kind = bounce
        .get("bounceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let sub = bounce
        .get("bounceSubType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let class = match (kind, sub) {
        ("Permanent", "General" | "NoEmail") => Some(FailureClass::UnknownRecipient),
        ("Transient", "MailboxFull") => Some(FailureClass::MailboxFull),
        (
            _,
            "ContentRejected" | "AttachmentRejected" | "Suppressed" | "OnAccountSuppressionList",
        ) => Some(FailureClass::Policy),
        ("Permanent" | "Transient", _) => Some(FailureClass::Other),
        _ => None,
    };
    let recipients = bounce
        .get("bouncedRecipients")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let verdict = |r: &Value| {
        let status = r.get("status").and_then(Value::as_str).map(str::to_string);
        // A 5.7.x status says policy whatever SES's subtype says.
        let class = match status.as_deref() {
            Some(s) if s.get(1..4) == Some(".7.") => Some(FailureClass::Policy),
            _ => class,
        };
        Verdict {
            recipient: r
                .get("emailAddress")
                .and_then(Value::as_str)
                .map(str::to_string),
            outcome: class.map_or(Outcome::Unclassified, |class| Outcome::NotDelivered {
                class,
            }),
            rule: if class.is_some() {
                "ses.bounce"
            } else {
                "ses.bounce.undetermined"
            },
            status,
            diagnostic: r
                .get("diagnosticCode")
                .and_then(Value::as_str)
                .map(str::to_string),
            basis: Basis::Structured,
        }
    };
    if recipients.is_empty() {
        vec![verdict(&Value::Null)]
    } else {
        recipients.iter().map(verdict).collect()
    }
}

/// One stored SendGrid event.
pub(crate) fn sendgrid_finding(body: &[u8]) -> Finding {
    let event = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let field = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_string);
    let status = field("status");
    let policy = status
        .as_deref()
        .is_some_and(|s| s.get(1..4) == Some(".7."));
    let failed = |class: FailureClass| Outcome::NotDelivered {
        class: if policy { FailureClass::Policy } else { class },
    };
    let (outcome, rule) = match (field("event").as_deref(), field("type").as_deref()) {
        (Some("bounce"), Some("blocked")) => (failed(FailureClass::Policy), "sendgrid.blocked"),
        (Some("bounce"), _) => (failed(FailureClass::UnknownRecipient), "sendgrid.bounce"),
        (Some("dropped"), _) => (failed(FailureClass::Other), "sendgrid.dropped"),
        (Some("deferred"), _) => (Outcome::Delayed, "sendgrid.deferred"),
        (Some("delivered"), _) => (
            delivered(DeliveryEvidence::SuccessDsn),
            "sendgrid.delivered",
        ),
        (Some("spamreport"), _) => (
            delivered(DeliveryEvidence::Complaint),
            "sendgrid.spamreport",
        ),
        _ => (Outcome::Unclassified, "sendgrid.other"),
    };
    Finding {
        kind: "sendgrid".into(),
        verp_addresses: Vec::new(),
        message_id: field("smtp-id"),
        queue_id: None,
        verdicts: vec![Verdict {
            recipient: field("email"),
            outcome,
            rule,
            status,
            diagnostic: field("reason").or_else(|| field("response")),
            basis: Basis::Structured,
        }],
    }
}

fn delivered(evidence: DeliveryEvidence) -> Outcome {
    Outcome::Delivered { evidence }
}

fn evidence(rule: &'static str, evidence: DeliveryEvidence) -> Verdict {
    structured(None, delivered(evidence), rule)
}

fn unclassified(rule: &'static str) -> Verdict {
    structured(None, Outcome::Unclassified, rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ses_permanent_bounce_is_not_delivered_and_names_our_ids() {
        let message = serde_json::json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": "x@example.com", "status": "5.1.1",
                                              "diagnosticCode": "smtp; 550 5.1.1 unknown"}]},
            "mail": {"source": "bounce+abc@b.example", "commonHeaders": {"messageId": "<bn.1.2.h@e>"}}
        });
        let sns = serde_json::json!({"Type": "Notification", "Message": message.to_string()});
        let f = ses_finding(sns.to_string().as_bytes());
        assert_eq!(f.verp_addresses, vec!["bounce+abc@b.example".to_string()]);
        assert_eq!(f.message_id.as_deref(), Some("<bn.1.2.h@e>"));
        assert_eq!(
            f.verdicts[0].outcome,
            Outcome::NotDelivered {
                class: FailureClass::UnknownRecipient
            }
        );
    }

    #[test]
    fn complaints_and_deliveries_are_never_failures() {
        for kind in ["Complaint", "Delivery"] {
            let message = serde_json::json!({"notificationType": kind, "mail": {}});
            let sns = serde_json::json!({"Message": message.to_string()});
            let f = ses_finding(sns.to_string().as_bytes());
            assert!(
                matches!(f.verdicts[0].outcome, Outcome::Delivered { .. }),
                "{kind}"
            );
        }
        for event in ["delivered", "spamreport", "deferred", "open"] {
            let f = sendgrid_finding(serde_json::json!({"event": event}).to_string().as_bytes());
            assert!(
                !matches!(f.verdicts[0].outcome, Outcome::NotDelivered { .. }),
                "{event}"
            );
        }
    }

    #[test]
    fn a_sendgrid_block_with_a_5_7_status_is_policy() {
        let e = serde_json::json!({"event": "bounce", "type": "bounce", "status": "5.7.1",
                                   "smtp-id": "<bn.1.2.h@e>"});
        let f = sendgrid_finding(e.to_string().as_bytes());
        assert_eq!(
            f.verdicts[0].outcome,
            Outcome::NotDelivered {
                class: FailureClass::Policy
            }
        );
        assert_eq!(f.message_id.as_deref(), Some("<bn.1.2.h@e>"));
    }

    #[test]
    fn garbage_is_unclassified() {
        let f = ses_finding(b"not json");
        assert_eq!(f.verdicts[0].outcome, Outcome::Unclassified);
        let f = sendgrid_finding(b"\xff");
        assert_eq!(f.verdicts[0].outcome, Outcome::Unclassified);
    }
}
