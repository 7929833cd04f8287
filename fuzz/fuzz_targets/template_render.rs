//! Fuzzes the rendering path: campaign templates (operator-written) and recipient data (from the
//! breached company's lists) through `Templates` and `message::build` to the bytes handed to SMTP.
//! It must never panic or hang, and whatever it renders must keep recipient data inert: no header
//! injection through the subject or any field, recipient text escaped in HTML, and only the headers
//! the mailer means to write.
#![no_main]

use std::collections::BTreeMap;

use breach_notifier::campaign::message;
use breach_notifier::campaign::template::{RecipientContext, Templates};
use breach_notifier::campaign::{
    CampaignSpec, LocaleTemplates, RateSpec, Release, SenderSpec, WaveSize, WaveSpec,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    subject: String,
    text: String,
    html: String,
    first_name: String,
    last_name: String,
    attribute: String,
}

/// The headers a notice may carry; anything else at the top level means something was injected.
const HEADERS: &[&str] = &[
    "from",
    "to",
    "subject",
    "message-id",
    "date",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

fn spec(subject: &str, text: &str, html: &str) -> CampaignSpec {
    let mut locales = BTreeMap::new();
    locales.insert(
        "en-US".to_string(),
        LocaleTemplates {
            subject: subject.to_string(),
            text: text.to_string(),
            html: html.to_string(),
        },
    );
    CampaignSpec {
        name: "Fuzz".into(),
        discovered_at: None,
        determined_at: None,
        email_without_consent: false,
        supplements: None,
        default_locale: "en-US".into(),
        sender: SenderSpec {
            from: "Example Mortgage <notices@example.com>".into(),
            reply_to: Some("help@example.com".into()),
            return_path: None,
        },
        locales,
        by_jurisdiction: Default::default(),
        rate: RateSpec::default(),
        waves: vec![WaveSpec {
            size: WaveSize::Rest,
            release: Release::Auto,
            hold_minutes: 0,
            max_failure_rate: None,
            max_deferral_rate: None,
        }],
        source: String::new(),
    }
}

fn context<'a>(
    input: &'a Input,
    attributes: &'a serde_json::Map<String, serde_json::Value>,
) -> RecipientContext<'a> {
    RecipientContext {
        id: 42,
        customer_id: "C-42",
        email: Some("person@example.net"),
        first_name: Some(&input.first_name),
        last_name: Some(&input.last_name),
        locale: Some("en-US"),
        jurisdiction: Some("US-CA"),
        electronic_consent: true,
        address1: None,
        address2: None,
        city: None,
        region: None,
        postal_code: None,
        country: None,
        attributes,
    }
}

/// Builds the message and checks its top-level header block.
fn check_message(spec: &CampaignSpec, rendered: &breach_notifier::campaign::template::Rendered) {
    let out = match message::build(spec, "hash", 1, 42, "person@example.net", rendered, None) {
        Ok(out) => out,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let bytes = &out.bytes;
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = std::str::from_utf8(&bytes[..end]).expect("headers are ASCII/UTF-8");
    for line in head.split("\r\n") {
        assert!(
            !line.contains('\r') && !line.contains('\n'),
            "bare line break in a header"
        );
        if line.starts_with([' ', '\t']) {
            continue; // a folded continuation
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            HEADERS.contains(&name.as_str()),
            "unexpected header {name:?}"
        );
    }
    assert_eq!(out.envelope.to().len(), 1, "one recipient per envelope");
}

fuzz_target!(|input: Input| {
    let mut attributes = serde_json::Map::new();
    attributes.insert(
        "enrollment_code".into(),
        serde_json::Value::String(input.attribute.clone()),
    );
    let ctx = context(&input, &attributes);

    // 1. Arbitrary templates: a clear error or a safe message.
    let fuzzed = spec(&input.subject, &input.text, &input.html);
    if let Ok(templates) = Templates::new(&fuzzed) {
        let _ = templates.check_sample();
        match templates.render_in("en-US", &ctx) {
            Ok(rendered) => {
                assert!(!rendered.subject.is_empty());
                assert!(!rendered.subject.chars().any(char::is_control));
                check_message(&fuzzed, &rendered);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }

    // 2. A fixed, ordinary template with arbitrary recipient data: the data is inert everywhere.
    let fixed = spec(
        "Notice for {{ recipient.first_name }} {{ recipient.last_name }}",
        "Dear {{ recipient.first_name }},\ncode {{ recipient.attributes.enrollment_code }}\n",
        "<p>Dear {{ recipient.first_name }} {{ recipient.last_name }}</p><p>{{ recipient.attributes.enrollment_code }}</p>",
    );
    let templates = Templates::new(&fixed).expect("the fixed templates compile");
    match templates.render_in("en-US", &ctx) {
        Ok(rendered) => {
            // Recipient text never becomes markup: the only tags are the template's own.
            assert_eq!(
                rendered.html.matches('<').count(),
                4,
                "unescaped recipient data in HTML"
            );
            assert!(rendered.text.contains(&input.first_name));
            check_message(&fixed, &rendered);
        }
        // Only a subject with a line break or control character (or an empty one) is refused.
        Err(e) => {
            let name_has_control = input.first_name.chars().any(char::is_control)
                || input.last_name.chars().any(char::is_control);
            assert!(name_has_control, "ordinary data refused: {e}");
        }
    }
});
