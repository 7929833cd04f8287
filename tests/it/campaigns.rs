//! Campaign files, templates and messages, and the campaign life cycle.
//!
//! - Rendering per locale and jurisdiction, on the example campaign.
//! - Injection: recipient data with CR/LF, `<script>` or template syntax, checked on the raw message
//!   bytes (headers parsed, parts decoded).
//! - Bad campaign files: each refused with the file, the line and the reason.
//! - The life cycle through the binary and through raw SQL, on PostgreSQL and SQLite, with the actor
//!   and reason recorded in `campaign_events`; cancel keeps every record; start runs the pre-flight.

use crate::common;
use crate::common::CampaignBuilder;

use std::path::{Path, PathBuf};
use std::process::Output;

use breach_notifier::campaign::CampaignSpec;
use breach_notifier::campaign::message::{self, Outgoing};
use breach_notifier::campaign::template::{RecipientContext, Rendered, Templates};
use breach_notifier::store::{
    CampaignEvent, CampaignState, Channel, Recipient, RecipientStatus, Store,
};
use chrono::Utc;
use common::{EmptyDb, TestApp};

// ---------------------------------------------------------------------------------------------
// Backends

backends!(
    every_transition_through_sql_is_enforced_and_recorded_as_sql,
    sql_transitions_record_the_actor_and_reason_they_are_given,
    the_store_refuses_illegal_transitions_and_names_the_allowed_ones,
);

backends!(
    empty:
    campaign_create_prints_the_id_and_stores_the_content_hash,
    campaign_create_refuses_a_bad_file_in_one_line,
    life_cycle_through_the_cli_is_recorded_with_the_cli_user,
    cancel_keeps_every_record,
    start_runs_the_preflight_against_real_recipients,
    preview_prints_the_message_for_a_customer,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/campaign.toml")
}

fn example_spec() -> CampaignSpec {
    CampaignSpec::load(&example()).unwrap_or_else(|e| panic!("the example does not load: {e}"))
}

fn recipient(
    id: i64,
    locale: Option<&str>,
    jurisdiction: Option<&str>,
    first_name: &str,
    last_name: &str,
) -> Recipient {
    let mut attributes = serde_json::Map::new();
    attributes.insert("enrollment_code".into(), format!("EN-{id:04}").into());
    Recipient {
        id,
        campaign_id: 7,
        deadline_day: 0,
        customer_id: format!("C{id}"),
        email: Some(format!("c{id}@example.com")),
        first_name: Some(first_name.into()),
        last_name: Some(last_name.into()),
        locale: locale.map(str::to_string),
        jurisdiction: jurisdiction.map(str::to_string),
        electronic_consent: true,
        address1: None,
        address2: None,
        city: None,
        region: None,
        postal_code: None,
        country: Some("US".into()),
        attributes,
        channel: Channel::Email,
        status: RecipientStatus::Queued,
        attempts: 0,
        next_attempt_at: Utc::now(),
        retry_due_at: None,
        lease_owner: None,
        lease_expires_at: None,
        message_id: None,
        last_code: None,
        last_reply: None,
        fail_reason: None,
        postal_followup: false,
        first_attempt_at: None,
        finished_at: None,
    }
}

fn build(spec: &CampaignSpec, campaign_id: i64, r: &Recipient, rendered: &Rendered) -> Outgoing {
    message::build(
        spec,
        &spec.content_hash(),
        campaign_id,
        r.id,
        r.email.as_deref().unwrap(),
        rendered,
        None,
    )
    .unwrap()
}

/// A parsed message: unfolded headers, and the decoded body of each MIME part with its headers.
struct Parsed {
    headers: Vec<(String, String)>,
    parts: Vec<(Vec<(String, String)>, String)>,
}

impl Parsed {
    fn header(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    fn part(&self, content_type: &str) -> &str {
        let found: Vec<&str> = self
            .parts
            .iter()
            .filter(|(h, _)| {
                values(h, "content-type")
                    .iter()
                    .any(|v| v.starts_with(content_type))
            })
            .map(|(_, body)| body.as_str())
            .collect();
        assert_eq!(found.len(), 1, "one {content_type} part");
        found[0]
    }
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Splits a header block from its body at the first empty line and unfolds the headers. Every
/// header line must be `Name: value` or a continuation: anything else would be a broken message.
fn split_headers(bytes: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block ends with an empty line");
    let block = std::str::from_utf8(&bytes[..end]).expect("headers are ASCII");
    assert!(block.is_ascii(), "headers are 7-bit: {block}");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in block.split("\r\n") {
        assert!(
            !line.contains('\r') && !line.contains('\n'),
            "bare CR or LF in {line:?}"
        );
        if line.starts_with([' ', '\t']) {
            headers
                .last_mut()
                .expect("a continuation follows a header")
                .1
                .push_str(line);
        } else {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header line: {line:?}"));
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()),
                "bad header name {name:?}"
            );
            headers.push((name.to_string(), value.trim_start().to_string()));
        }
    }
    (headers, &bytes[end + 4..])
}

fn parse(bytes: &[u8]) -> Parsed {
    let (headers, body) = split_headers(bytes);
    let content_type = values(&headers, "content-type")[0].to_string();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .trim_matches('"')
        .split([';', '"'])
        .next()
        .unwrap()
        .to_string();
    let body = std::str::from_utf8(body).expect("the body is 7-bit encoded");
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    for chunk in body.split(delimiter.as_str()).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let chunk = chunk.strip_prefix("\r\n").unwrap_or(chunk);
        let (part_headers, part_body) = split_headers(chunk.as_bytes());
        let raw = std::str::from_utf8(part_body).unwrap();
        let raw = raw.strip_suffix("\r\n").unwrap_or(raw);
        let encoding = values(&part_headers, "content-transfer-encoding")
            .first()
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_else(|| "7bit".into());
        let decoded = match encoding.as_str() {
            "7bit" | "8bit" => raw.as_bytes().to_vec(),
            "quoted-printable" => decode_qp(raw),
            "base64" => decode_base64(raw),
            other => panic!("unexpected transfer encoding {other}"),
        };
        parts.push((part_headers, String::from_utf8(decoded).unwrap()));
    }
    Parsed { headers, parts }
}

fn decode_qp(text: &str) -> Vec<u8> {
    let text = text.replace("=\r\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rendering per locale and jurisdiction

#[test]
fn the_example_campaign_loads() {
    let spec = example_spec();
    assert_eq!(spec.name, "Notice of Data Breach - October 2023 incident");
    assert_eq!(
        spec.discovered_at,
        chrono::NaiveDate::from_ymd_opt(2023, 11, 2)
    );
    assert_eq!(spec.default_locale, "en-US");
    assert!(!spec.email_without_consent);
    assert_eq!(
        spec.locales.keys().map(String::as_str).collect::<Vec<_>>(),
        ["en-US", "es-US"]
    );
    assert_eq!(
        spec.sender.return_path.as_deref(),
        Some("bounces@example-mortgage.com")
    );
    assert_eq!(spec.waves.len(), 3);
    // The stored form is self-contained: the template sources, not their paths.
    let stored = CampaignSpec::from_stored(&spec.to_stored()).unwrap();
    assert_eq!(stored, spec);
    assert!(
        spec.locales["es-US"]
            .text
            .contains("AVISO DE VIOLACIÓN DE DATOS")
    );
    assert_eq!(spec.content_hash().len(), 64);
    assert_eq!(spec.content_hash(), stored.content_hash());
}

#[test]
fn renders_in_en_us_and_es_us() {
    let spec = example_spec();
    let templates = Templates::with_campaign_id(&spec, 7).unwrap();

    let en = templates
        .render(&recipient(
            1,
            Some("en-US"),
            Some("US-CA"),
            "Ada",
            "Lovelace",
        ))
        .unwrap();
    assert_eq!(en.locale, "en-US");
    assert_eq!(en.subject, "Notice of Data Breach");
    assert!(
        en.text
            .starts_with("Dear Ada Lovelace,\n\nNOTICE OF DATA BREACH\n"),
        "{}",
        en.text
    );
    assert!(
        en.text
            .contains("discovered on 2023-11-02 that your information"),
        "{}",
        en.text
    );
    assert!(
        en.text.contains("personal enrollment code: EN-0001\n"),
        "{}",
        en.text
    );
    assert!(
        en.text
            .contains("Your name, address, and loan information."),
        "{}",
        en.text
    );
    assert!(en.html.contains("<html lang=\"en\">"));
    assert!(en.html.contains("<p>Dear Ada Lovelace,</p>"), "{}", en.html);
    assert!(en.html.contains("<strong>EN-0001</strong>"), "{}", en.html);

    let es = templates
        .render(&recipient(
            2,
            Some("es-US"),
            Some("US-TX"),
            "Lucía",
            "Núñez",
        ))
        .unwrap();
    assert_eq!(es.locale, "es-US");
    assert_eq!(es.subject, "Aviso de violación de datos");
    assert!(
        es.text.starts_with(
            "Estimado/a Lucía Núñez:\n\nAVISO DE VIOLACIÓN DE DATOS / NOTICE OF DATA BREACH\n"
        ),
        "{}",
        es.text
    );
    assert!(es.text.contains("El 2023-11-02 descubrimos"), "{}", es.text);
    assert!(
        es.text.contains("su código personal: EN-0002\n"),
        "{}",
        es.text
    );
    assert!(es.html.contains("<html lang=\"es\">"));
    assert!(es.html.contains("Estimado/a Lucía Núñez:"), "{}", es.html);
    assert!(
        !es.text.contains("Dear"),
        "no English in the Spanish notice"
    );

    // A missing last name renders as nothing, not "None" or "undefined".
    let mut no_last = recipient(3, Some("en-US"), Some("US-CA"), "Ada", "x");
    no_last.last_name = None;
    no_last.first_name = None;
    let r = templates.render(&no_last).unwrap();
    assert!(r.text.starts_with("Dear Customer ,\n"), "{}", r.text);
    assert!(
        !r.text.contains("none") && !r.text.contains("None"),
        "{}",
        r.text
    );
}

#[test]
fn the_massachusetts_paragraph_is_only_for_us_ma() {
    let spec = example_spec();
    let templates = Templates::with_campaign_id(&spec, 7).unwrap();
    // (locale, what only Massachusetts gets, what Massachusetts must not get)
    let cases = [
        (
            "en-US",
            ["police report", "security freeze"],
            ["What Happened", "What Information Was Involved"],
        ),
        (
            "es-US",
            ["informe policial", "congelar"],
            ["Qué sucedió", "Qué información estuvo involucrada"],
        ),
    ];
    for (locale, ma_only, not_ma) in cases {
        for jurisdiction in [
            Some("US-MA"),
            Some("US-CA"),
            Some("US-NY"),
            Some("DE"),
            None,
        ] {
            let r = templates
                .render(&recipient(4, Some(locale), jurisdiction, "Ada", "Lovelace"))
                .unwrap();
            let ma = jurisdiction == Some("US-MA");
            for (part, body) in [("text", &r.text), ("html", &r.html)] {
                for s in ma_only {
                    assert_eq!(
                        body.contains(s),
                        ma,
                        "{locale} {jurisdiction:?} {part}: {s:?}"
                    );
                }
                for s in not_ma {
                    assert_eq!(
                        body.contains(s),
                        !ma,
                        "{locale} {jurisdiction:?} {part}: {s:?}"
                    );
                }
            }
            // Everyone gets what the company is doing and how to enrol.
            assert!(
                r.text.contains("1-800-555-0100"),
                "{locale} {jurisdiction:?}"
            );
        }
    }
}

#[test]
fn an_unknown_locale_falls_back_to_the_default() {
    let spec = example_spec();
    let templates = Templates::with_campaign_id(&spec, 7).unwrap();
    for locale in [Some("fr-FR"), Some("es"), Some("en-us"), None] {
        let r = templates
            .render(&recipient(5, locale, Some("US-CA"), "Ada", "Lovelace"))
            .unwrap();
        assert_eq!(r.locale, "en-US", "{locale:?}");
        assert!(r.text.starts_with("Dear Ada"), "{locale:?}");
        assert_eq!(spec.locale_for(locale), "en-US");
        assert_eq!(templates.locale_for(locale), "en-US");
    }
    assert_eq!(spec.locale_for(Some("es-US")), "es-US");
}

// ---------------------------------------------------------------------------------------------
// The message

#[test]
fn the_message_id_is_stable_per_recipient() {
    let spec = example_spec();
    let templates = Templates::with_campaign_id(&spec, 7).unwrap();
    let ada = recipient(41, Some("en-US"), Some("US-CA"), "Ada", "Lovelace");
    let bob = recipient(42, Some("en-US"), Some("US-CA"), "Bob", "Lovelace");
    let rendered = templates.render(&ada).unwrap();
    let first = build(&spec, 7, &ada, &rendered);
    let again = build(&spec, 7, &ada, &templates.render(&ada).unwrap());
    assert_eq!(
        first.message_id, again.message_id,
        "a retry carries the same id"
    );
    let other = build(&spec, 7, &bob, &templates.render(&bob).unwrap());
    assert_ne!(first.message_id, other.message_id);

    let hash = spec.content_hash();
    assert_eq!(
        first.message_id,
        message::message_id(&hash, 7, 41, "example-mortgage.com")
    );
    let id = first.message_id.clone();
    let inner = id
        .strip_prefix("<bn.7.41.")
        .and_then(|s| s.strip_suffix("@example-mortgage.com>"))
        .unwrap_or_else(|| panic!("unexpected Message-ID {id}"));
    assert_eq!(inner.len(), 12);
    assert!(inner.bytes().all(|b| b.is_ascii_hexdigit()));
    // Another campaign, or other content, never mints the same id.
    assert_ne!(
        id,
        message::message_id(&hash, 8, 41, "example-mortgage.com")
    );
    assert_ne!(
        id,
        message::message_id("other", 7, 41, "example-mortgage.com")
    );

    // The header carries it, in both builds.
    for out in [&first, &again] {
        assert_eq!(parse(&out.bytes).header("Message-ID"), [id.as_str()]);
    }
}

#[test]
fn the_raw_message_is_multipart_alternative_without_list_unsubscribe() {
    let spec = example_spec();
    let templates = Templates::with_campaign_id(&spec, 7).unwrap();
    for (locale, greeting) in [
        ("en-US", "Dear Ada Lovelace,"),
        ("es-US", "Estimado/a Ada Lovelace:"),
    ] {
        let r = recipient(9, Some(locale), Some("US-CA"), "Ada", "Lovelace");
        let out = build(&spec, 7, &r, &templates.render(&r).unwrap());
        let raw = String::from_utf8_lossy(&out.bytes).to_ascii_lowercase();
        assert!(!raw.contains("list-unsubscribe"), "{locale}: not marketing");
        assert!(!raw.contains("<img"), "{locale}: no tracking pixel");
        let m = parse(&out.bytes);
        assert!(m.header("Content-Type")[0].starts_with("multipart/alternative"));
        assert_eq!(m.header("MIME-Version"), ["1.0"]);
        assert_eq!(m.header("To"), ["c9@example.com"]);
        assert_eq!(
            m.header("From"),
            ["\"Example Mortgage Privacy Office\" <privacy-notice@example-mortgage.com>"]
        );
        assert_eq!(m.header("Reply-To"), ["privacy@example-mortgage.com"]);
        assert_eq!(m.header("Subject").len(), 1);
        assert_eq!(m.header("Date").len(), 1);
        assert!(m.header("Bcc").is_empty() && m.header("Cc").is_empty());
        assert_eq!(m.parts.len(), 2);
        let text = m.part("text/plain");
        let html = m.part("text/html");
        assert!(text.contains(greeting), "{locale}: {text}");
        assert!(
            html.contains(&format!("<p>{greeting}</p>")),
            "{locale}: {html}"
        );
        for (h, _) in &m.parts {
            assert!(
                values(h, "content-type")[0]
                    .to_ascii_lowercase()
                    .contains("charset=utf-8"),
                "{h:?}"
            );
        }
        // One recipient per envelope; bounces go to the return path.
        assert_eq!(
            out.envelope.from().map(ToString::to_string).as_deref(),
            Some("bounces@example-mortgage.com")
        );
        let to: Vec<String> = out.envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(to, ["c9@example.com"]);
    }
}

/// A spec with one locale whose templates are given inline (the files are written to `dir`).
fn spec_with(dir: &Path, subject: &str, text: &str, html: &str) -> CampaignSpec {
    std::fs::write(dir.join("t.txt.j2"), text).unwrap();
    std::fs::write(dir.join("t.html.j2"), html).unwrap();
    let toml = format!(
        "name = \"Injection test\"\ndefault_locale = \"en-US\"\n[sender]\nfrom = \"Privacy <privacy@example.org>\"\n\
         [locales.en-US]\nsubject = {subject:?}\ntext = \"t.txt.j2\"\nhtml = \"t.html.j2\"\n"
    );
    let path = dir.join("campaign.toml");
    std::fs::write(&path, toml).unwrap();
    CampaignSpec::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn recipient_data_cannot_add_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_with(
        dir.path(),
        "Notice for customer {{ recipient.customer_id }}",
        "Dear {{ recipient.first_name }} {{ recipient.last_name }},\nYour notice.\n",
        "<p>Dear {{ recipient.first_name }} {{ recipient.last_name }},</p>\n",
    );
    let templates = Templates::with_campaign_id(&spec, 3).unwrap();
    let attributes = serde_json::Map::new();
    // Intake refuses control characters; this recipient is built directly, as if the database had
    // been written to some other way.
    let hostile = RecipientContext {
        id: 11,
        customer_id: "C11",
        email: Some("victim@example.com"),
        first_name: Some("Eve\r\nBcc: evil@example.com"),
        last_name: Some("X\r\n\r\nSubject: forged\nBcc: evil2@example.com"),
        locale: None,
        jurisdiction: None,
        electronic_consent: true,
        address1: None,
        address2: None,
        city: None,
        region: None,
        postal_code: None,
        country: None,
        attributes: &attributes,
    };
    let rendered = templates.render_in("en-US", &hostile).unwrap();
    assert_eq!(rendered.subject, "Notice for customer C11");
    let out = message::build(
        &spec,
        &spec.content_hash(),
        3,
        11,
        "victim@example.com",
        &rendered,
        None,
    )
    .unwrap();
    let m = parse(&out.bytes);
    assert!(m.header("Bcc").is_empty(), "{:?}", m.headers);
    assert_eq!(m.header("Subject"), ["Notice for customer C11"]);
    assert_eq!(m.header("To"), ["victim@example.com"]);
    for (h, _) in &m.parts {
        assert!(
            values(h, "bcc").is_empty() && values(h, "subject").is_empty(),
            "{h:?}"
        );
    }
    let to: Vec<String> = out.envelope.to().iter().map(ToString::to_string).collect();
    assert_eq!(to, ["victim@example.com"], "nobody else receives it");
    // The hostile text is in the body, as text.
    assert!(m.part("text/plain").contains("Bcc: evil@example.com"));

    // In the subject, data with a line break is refused: never a header.
    let spec = spec_with(
        dir.path(),
        "Notice for {{ recipient.first_name }}",
        "x\n",
        "<p>x</p>\n",
    );
    let templates = Templates::with_campaign_id(&spec, 3).unwrap();
    let err = templates.render_in("en-US", &hostile).unwrap_err();
    assert_eq!(err.template, "en-US/subject");
    assert_eq!(err.recipient_id, Some(11));
    assert!(err.message.contains("line break"), "{err}");

    // An address with a line break is not an address.
    let ok = templates
        .render_in(
            "en-US",
            &RecipientContext {
                first_name: Some("Eve"),
                last_name: Some("X"),
                ..hostile
            },
        )
        .unwrap();
    assert!(
        message::build(
            &spec,
            "h",
            3,
            11,
            "victim@example.com\r\nBcc: evil@example.com",
            &ok,
            None
        )
        .is_err()
    );
}

#[test]
fn markup_in_a_name_is_escaped_in_html_and_template_syntax_is_not_evaluated() {
    let spec = example_spec();
    let templates = Templates::with_campaign_id(&spec, 7).unwrap();
    let mut r = recipient(
        12,
        Some("en-US"),
        Some("US-CA"),
        "<script>alert(1)</script>",
        "{{ 7*7 }}",
    );
    r.attributes.insert(
        "enrollment_code".into(),
        "{% for x in range(3) %}LOOP{% endfor %}\"><img src=x onerror=alert(2)>".into(),
    );
    let rendered = templates.render(&r).unwrap();
    let out = build(&spec, 7, &r, &rendered);
    let m = parse(&out.bytes);
    let html = m.part("text/html");
    let text = m.part("text/plain");

    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "{html}"
    );
    // Template syntax in data is printed, never run.
    for body in [html, text] {
        assert!(body.contains("{{ 7*7 }}"), "{body}");
        assert!(!body.contains("49"), "{body}");
        assert!(!body.contains("LOOPLOOP"), "{body}");
        assert!(
            body.contains("{% for x in range(3) %}LOOP{% endfor %}"),
            "{body}"
        );
    }
    // The text part is plain text: shown as written.
    assert!(
        text.contains("Dear <script>alert(1)</script> {{ 7*7 }},"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad campaign files

const GOOD_TOML: &str = r#"name = "Test notice"
discovered_at = 2024-01-15
default_locale = "en-US"

[sender]
from = "Privacy Office <privacy@example.org>"
reply_to = "help@example.org"

[locales.en-US]
subject = "Notice of Data Breach"
text = "en.txt.j2"
html = "en.html.j2"
"#;

const GOOD_TEXT: &str = "Dear {{ recipient.first_name or \"Customer\" }},\n\nWe are writing to tell you about a breach.\n";
const GOOD_HTML: &str = "<p>Dear {{ recipient.first_name or \"Customer\" }},</p>\n<p>We are writing\nto tell you about a breach.</p>\n";

/// Writes a campaign file (and the two good templates) and loads it.
fn load(
    dir: &Path,
    toml: &str,
) -> Result<CampaignSpec, breach_notifier::campaign::CampaignFileError> {
    std::fs::write(dir.join("en.txt.j2"), GOOD_TEXT).unwrap();
    std::fs::write(dir.join("en.html.j2"), GOOD_HTML).unwrap();
    let path = dir.join("campaign.toml");
    std::fs::write(&path, toml).unwrap();
    CampaignSpec::load(&path)
}

/// `GOOD_TOML` with line `line` (1-based) replaced by `with` (which may span lines).
fn replace_line(line: usize, with: &str) -> String {
    let mut lines: Vec<&str> = GOOD_TOML.lines().collect();
    lines[line - 1] = with;
    lines.join("\n") + "\n"
}

#[test]
fn the_good_campaign_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let spec = load(dir.path(), GOOD_TOML).unwrap();
    assert_eq!(spec.locales["en-US"].text, GOOD_TEXT);
    assert_eq!(spec.source, GOOD_TOML);
}

#[test]
fn bad_campaign_files_are_refused_with_file_line_and_reason() {
    // (what, campaign file, template to overwrite, expected file name, expected line, reason)
    struct Case {
        what: &'static str,
        toml: String,
        template: Option<(&'static str, &'static str)>,
        file: &'static str,
        line: usize,
        reason: &'static str,
    }
    let cases = [
        Case {
            what: "unknown top-level key",
            toml: replace_line(2, "discoverd_at = 2024-01-15"),
            template: None,
            file: "campaign.toml",
            line: 2,
            reason: "unknown field `discoverd_at`",
        },
        Case {
            what: "unknown key in [sender]",
            toml: replace_line(7, "bcc = \"audit@example.org\""),
            template: None,
            file: "campaign.toml",
            line: 7,
            reason: "unknown field `bcc`",
        },
        Case {
            what: "unknown key in a locale",
            toml: replace_line(12, "html = \"en.html.j2\"\nattachment = \"x.pdf\""),
            template: None,
            file: "campaign.toml",
            line: 13,
            reason: "unknown field `attachment`",
        },
        Case {
            what: "unknown key in [rate]",
            toml: format!("{GOOD_TOML}\n[rate]\nper_second = 5\nper_day = 1000\n"),
            template: None,
            file: "campaign.toml",
            line: 16,
            reason: "unknown field `per_day`",
        },
        Case {
            what: "unknown key in a wave",
            toml: format!("{GOOD_TOML}\n[[waves]]\nsize = 100\nmax_bounce_rate = 0.1\n"),
            template: None,
            file: "campaign.toml",
            line: 16,
            reason: "unknown field `max_bounce_rate`",
        },
        Case {
            what: "TOML syntax error",
            toml: replace_line(1, "name = \"Test notice"),
            template: None,
            file: "campaign.toml",
            line: 1,
            reason: "invalid basic string",
        },
        Case {
            what: "missing text template",
            toml: replace_line(11, "text = \"templates/missing.txt.j2\""),
            template: None,
            file: "campaign.toml",
            line: 11,
            reason: "templates/missing.txt.j2",
        },
        Case {
            what: "missing html template",
            toml: replace_line(12, "html = \"nope.html.j2\""),
            template: None,
            file: "campaign.toml",
            line: 12,
            reason: "nope.html.j2",
        },
        Case {
            what: "template syntax error in the html",
            toml: GOOD_TOML.into(),
            template: Some((
                "en.html.j2",
                "<p>Dear</p>\n<p>\n{% if recipient.first_name %}unclosed\n",
            )),
            file: "en.html.j2",
            line: 3,
            reason: "unexpected end of input, expected end of block",
        },
        Case {
            what: "template syntax error in the text",
            toml: GOOD_TOML.into(),
            template: Some(("en.txt.j2", "Dear\n\n{{ recipient.first_name | }}\n")),
            file: "en.txt.j2",
            line: 3,
            reason: "unexpected end of variable block",
        },
        Case {
            what: "unknown filter in the text",
            toml: GOOD_TOML.into(),
            template: Some(("en.txt.j2", "Dear\n{{ recipient.first_name | shout }}\n")),
            file: "en.txt.j2",
            line: 2,
            reason: "filter shout is unknown",
        },
        Case {
            what: "template syntax error in the subject",
            toml: replace_line(10, "subject = \"Notice {{ recipient.first_name\""),
            template: None,
            file: "campaign.toml",
            line: 10,
            reason: "unexpected end of input",
        },
        Case {
            what: "a locale without its html template",
            toml: format!(
                "{GOOD_TOML}\n[locales.es-US]\nsubject = \"Aviso\"\ntext = \"en.txt.j2\"\n"
            ),
            template: None,
            file: "campaign.toml",
            line: 14,
            reason: "missing field `html`",
        },
        Case {
            what: "default locale without templates",
            toml: replace_line(3, "default_locale = \"fr-FR\""),
            template: None,
            file: "campaign.toml",
            line: 3,
            reason: "default_locale \"fr-FR\" has no [locales.fr-FR] section",
        },
        Case {
            what: "invalid from address",
            toml: replace_line(6, "from = \"Privacy Office at example.org\""),
            template: None,
            file: "campaign.toml",
            line: 6,
            reason: "sender.from = \"Privacy Office at example.org\" is not a valid address",
        },
        Case {
            what: "invalid reply-to address",
            toml: replace_line(7, "reply_to = \"help@@example.org\""),
            template: None,
            file: "campaign.toml",
            line: 7,
            reason: "sender.reply_to",
        },
        Case {
            what: "header injection in the subject (CR/LF)",
            toml: replace_line(10, "subject = \"Notice\\r\\nBcc: evil@example.com\""),
            template: None,
            file: "campaign.toml",
            line: 10,
            reason: "header injection",
        },
        Case {
            what: "header injection in the subject (LF)",
            toml: replace_line(10, "subject = \"Notice\\nBcc: evil@example.com\""),
            template: None,
            file: "campaign.toml",
            line: 10,
            reason: "header injection",
        },
        Case {
            what: "a subject template that renders a line break",
            toml: replace_line(
                10,
                "subject = \"Notice{{ '\\\\r\\\\n' }}Bcc: evil@example.com\"",
            ),
            template: None,
            file: "campaign.toml",
            line: 10,
            reason: "line break",
        },
        Case {
            what: "a daily cap of zero",
            toml: format!("{GOOD_TOML}\n[rate]\nper_second = 5\ndaily_cap = 0\n"),
            template: None,
            file: "campaign.toml",
            line: 16,
            reason: "rate.daily_cap = 0 would never send anything",
        },
        Case {
            what: "a negative rate",
            toml: format!("{GOOD_TOML}\n[rate]\nper_second = -5\n"),
            template: None,
            file: "campaign.toml",
            line: 15,
            reason: "rate.per_second = -5 must be a positive number",
        },
        Case {
            what: "a \"rest\" wave before the last",
            toml: format!(
                "{GOOD_TOML}\n[[waves]]\nsize = 100\n\n[[waves]]\nsize = \"rest\"\n\n[[waves]]\nsize = 1000\n"
            ),
            template: None,
            file: "campaign.toml",
            line: 18,
            reason: "waves[1] has size \"rest\" but is not the last wave",
        },
        Case {
            what: "a failure rate above 1",
            toml: format!(
                "{GOOD_TOML}\n[[waves]]\nsize = 100\n\n[[waves]]\nsize = \"rest\"\nhold_minutes = 5\nmax_failure_rate = 1.5\n"
            ),
            template: None,
            file: "campaign.toml",
            line: 20,
            reason: "waves[1].max_failure_rate = 1.5 must be between 0.0 and 1.0",
        },
        Case {
            what: "a wave size of zero",
            toml: format!("{GOOD_TOML}\n[[waves]]\nsize = 0\n"),
            template: None,
            file: "campaign.toml",
            line: 15,
            reason: "a wave size must be at least 1",
        },
        Case {
            what: "a date and time for discovered_at",
            toml: replace_line(2, "discovered_at = 2024-01-15T10:00:00Z"),
            template: None,
            file: "campaign.toml",
            line: 2,
            reason: "expected a plain date such as 2023-11-02",
        },
        Case {
            what: "a determination before the discovery",
            toml: GOOD_TOML.replacen(
                "default_locale",
                "determined_at = 2024-01-10\ndefault_locale",
                1,
            ),
            template: None,
            file: "campaign.toml",
            line: 3,
            reason: "determined_at = 2024-01-10 is before discovered_at = 2024-01-15",
        },
        Case {
            what: "a determination without a discovery",
            toml: replace_line(2, "determined_at = 2024-01-20"),
            template: None,
            file: "campaign.toml",
            line: 2,
            reason: "determined_at = 2024-01-20 needs discovered_at too",
        },
        Case {
            what: "empty subject",
            toml: replace_line(10, "subject = \"  \""),
            template: None,
            file: "campaign.toml",
            line: 10,
            reason: "subject is empty",
        },
    ];
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let result = {
            std::fs::write(dir.path().join("en.txt.j2"), GOOD_TEXT).unwrap();
            std::fs::write(dir.path().join("en.html.j2"), GOOD_HTML).unwrap();
            if let Some((name, text)) = case.template {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            let path = dir.path().join("campaign.toml");
            std::fs::write(&path, &case.toml).unwrap();
            CampaignSpec::load(&path)
        };
        let err = match result {
            Ok(_) => panic!("{}: accepted", case.what),
            Err(e) => e,
        };
        let text = err.to_string();
        assert_eq!(
            err.file,
            dir.path().join(case.file),
            "{}: names the file: {text}",
            case.what
        );
        assert!(
            text.starts_with(&format!("{}: ", dir.path().join(case.file).display())),
            "{}: {text}",
            case.what
        );
        assert!(
            text.contains(&format!("line {}", case.line)),
            "{}: line {} expected: {text}",
            case.what,
            case.line
        );
        assert!(
            text.contains(case.reason),
            "{}: {:?} expected: {text}",
            case.what,
            case.reason
        );
        assert!(!text.contains('\n'), "{}: one line: {text:?}", case.what);
    }
}

// ---------------------------------------------------------------------------------------------
// The binary

struct Cli<'a> {
    dir: &'a Path,
    url: &'a str,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        common::cli(self.dir, self.url)
            .args(args)
            .env_remove("SUDO_USER")
            .env("USER", "tester")
            .output()
            .expect("run breach-notifier")
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs a command that must fail with one `error:` line containing `expected`.
    fn fails(&self, args: &[&str], expected: &str) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert!(
            err.contains(expected),
            "{args:?}: {expected:?} expected in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    async fn store(&self) -> Store {
        Store::open(&common::settings(self.url), None)
            .await
            .unwrap()
    }
}

/// A campaign directory with the example's templates and a campaign file made from `toml`.
fn campaign_dir(dir: &Path, name: &str, toml: &str, templates: &[(&str, &str)]) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    for (file, text) in templates {
        std::fs::write(sub.join(file), text).unwrap();
    }
    let path = sub.join("campaign.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn write_csv(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const PEOPLE: &str = "customer_id,email,first_name,last_name,locale,jurisdiction,electronic_consent,enrollment_code\n\
    A1,ada@example.com,Ada,Lovelace,en-US,US-CA,yes,EN-A1\n\
    B2,bea@example.com,Beatriz,Núñez,es-US,US-MA,yes,EN-B2\n\
    C3,cy@example.com,Cy,Young,en-US,US-MA,yes,EN-C3\n\
    D4,,Dee,Postal,en-US,US-CA,no,EN-D4\n";

fn event_tuple(
    e: &CampaignEvent,
) -> (Option<CampaignState>, CampaignState, String, Option<String>) {
    (e.from_state, e.to_state, e.actor.clone(), e.reason.clone())
}

async fn campaign_create_prints_the_id_and_stores_the_content_hash(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    let out = cli.ok(&["campaign", "create", example().to_str().unwrap()]);
    assert_eq!(out, "1\n", "only the id on standard output");
    let out = cli.ok(&["campaign", "create", example().to_str().unwrap()]);
    assert_eq!(out, "2\n");

    let spec = example_spec();
    let store = cli.store().await;
    let c = store.require_campaign(1).await.unwrap();
    assert_eq!(c.content_hash, spec.content_hash());
    assert_eq!(c.definition, spec.to_stored());
    assert_eq!(c.name, "Notice of Data Breach - October 2023 incident");
    assert_eq!(c.state, CampaignState::Draft);
    assert_eq!(
        c.discovered_at,
        chrono::NaiveDate::from_ymd_opt(2023, 11, 2)
    );
    assert!(!c.email_without_consent);
    let events: Vec<_> = store
        .campaign_events(1)
        .await
        .unwrap()
        .iter()
        .map(event_tuple)
        .collect();
    assert_eq!(
        events,
        [(
            None,
            CampaignState::Draft,
            "cli:tester".to_string(),
            Some("created".to_string())
        )]
    );
    // What is stored is what is sent: later edits to the files change nothing.
    let copy = campaign_dir(
        dir.path(),
        "copy",
        &std::fs::read_to_string(example()).unwrap(),
        &[],
    );
    let templates = copy.parent().unwrap().join("templates");
    std::fs::create_dir_all(templates.join("us-ma")).unwrap();
    for f in [
        "en-US.txt.j2",
        "en-US.html.j2",
        "es-US.txt.j2",
        "es-US.html.j2",
        "us-ma/en-US.txt.j2",
        "us-ma/en-US.html.j2",
        "us-ma/es-US.txt.j2",
        "us-ma/es-US.html.j2",
    ] {
        std::fs::copy(
            example().parent().unwrap().join("templates").join(f),
            templates.join(f),
        )
        .unwrap();
    }
    assert_eq!(
        cli.ok(&["campaign", "create", copy.to_str().unwrap()]),
        "3\n"
    );
    std::fs::write(templates.join("en-US.txt.j2"), "changed\n").unwrap();
    let stored = store.require_campaign(3).await.unwrap();
    assert_eq!(
        stored.content_hash,
        spec.content_hash(),
        "same content, same hash"
    );
    assert_ne!(
        CampaignSpec::load(&copy).unwrap().content_hash(),
        stored.content_hash,
        "a changed template is other content"
    );
    assert!(
        CampaignSpec::from_stored(&stored.definition)
            .unwrap()
            .locales["en-US"]
            .text
            .starts_with("Dear ")
    );
    store.close().await;
}

async fn campaign_create_refuses_a_bad_file_in_one_line(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    let path = campaign_dir(
        dir.path(),
        "bad",
        &replace_line(10, "subject = \"Notice\\r\\nBcc: evil@example.com\""),
        &[("en.txt.j2", GOOD_TEXT), ("en.html.j2", GOOD_HTML)],
    );
    let err = cli.fails(
        &["campaign", "create", path.to_str().unwrap()],
        "header injection",
    );
    assert!(
        err.contains(&format!("{}: line 10", path.display())),
        "{err}"
    );
    let path = campaign_dir(
        dir.path(),
        "unknown",
        &replace_line(2, "discoverd_at = 2024-01-15"),
        &[("en.txt.j2", GOOD_TEXT), ("en.html.j2", GOOD_HTML)],
    );
    cli.fails(&["campaign", "create", path.to_str().unwrap()], "line 2");
    let path = campaign_dir(
        dir.path(),
        "supplements",
        &replace_line(2, "supplements = 99"),
        &[("en.txt.j2", GOOD_TEXT), ("en.html.j2", GOOD_HTML)],
    );
    cli.fails(
        &["campaign", "create", path.to_str().unwrap()],
        "supplements = 99, but campaign 99 does not exist",
    );
    let store = cli.store().await;
    assert!(
        store.campaigns().await.unwrap().is_empty(),
        "nothing stored"
    );
    store.close().await;
}

async fn life_cycle_through_the_cli_is_recorded_with_the_cli_user(db: EmptyDb) {
    use CampaignState::*;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    let file = example();
    for expected in ["1\n", "2\n", "3\n"] {
        assert_eq!(
            cli.ok(&["campaign", "create", file.to_str().unwrap()]),
            expected
        );
    }
    let people = write_csv(dir.path(), "people.csv", PEOPLE);
    cli.ok(&["import", "--campaign", "1", &people]);

    // Draft: only start and cancel.
    cli.fails(
        &["campaign", "pause", "1"],
        "campaign 1 is draft, not running: nothing changed",
    );
    cli.fails(
        &["campaign", "resume", "1"],
        "campaign 1 is draft, not paused: nothing changed",
    );
    assert_eq!(
        cli.ok(&["campaign", "start", "1", "--reason", "legal approved"]),
        "campaign 1 is now running\n"
    );
    // Running: pause, cancel (completion is the daemon's).
    cli.fails(
        &["campaign", "start", "1"],
        "campaign 1 is running, not draft",
    );
    cli.fails(
        &["campaign", "resume", "1"],
        "campaign 1 is running, not paused",
    );
    assert_eq!(
        cli.ok(&["campaign", "pause", "1", "--reason", "complaints"]),
        "campaign 1 is now paused\n"
    );
    // Paused: resume, cancel.
    cli.fails(
        &["campaign", "pause", "1"],
        "campaign 1 is paused, not running",
    );
    cli.fails(
        &["campaign", "start", "1"],
        "campaign 1 is paused, not draft",
    );
    assert_eq!(
        cli.ok(&["campaign", "resume", "1"]),
        "campaign 1 is now running\n"
    );
    assert_eq!(
        cli.ok(&["campaign", "cancel", "1", "--reason", "wrong list"]),
        "campaign 1 is now cancelled\n"
    );
    // Cancelled is final.
    for verb in ["start", "pause", "resume"] {
        cli.fails(&["campaign", verb, "1"], "campaign 1 is cancelled, not");
    }
    cli.fails(
        &["campaign", "cancel", "1"],
        "campaign 1 is cancelled; it cannot become cancelled (allowed: none: cancelled is final)",
    );

    // Draft straight to cancelled.
    assert_eq!(
        cli.ok(&["campaign", "cancel", "2"]),
        "campaign 2 is now cancelled\n"
    );

    // Completed (reached by SQL, as the daemon would) is final too.
    cli.ok(&["campaign", "start", "3"]);
    let store = cli.store().await;
    sql(
        &store,
        "UPDATE campaigns SET state = 'completed' WHERE id = 3",
    )
    .await
    .unwrap();
    for verb in ["start", "pause", "resume"] {
        cli.fails(&["campaign", verb, "3"], "campaign 3 is completed, not");
    }
    cli.fails(
        &["campaign", "cancel", "3"],
        "campaign 3 is completed; it cannot become cancelled",
    );
    cli.fails(&["campaign", "start", "99"], "campaign 99 does not exist");

    let user = |s: &str| s.to_string();
    let events = |id| {
        let store = store.clone();
        async move {
            store
                .campaign_events(id)
                .await
                .unwrap()
                .iter()
                .map(event_tuple)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        events(1).await,
        [
            (None, Draft, user("cli:tester"), Some(user("created"))),
            (
                Some(Draft),
                Running,
                user("cli:tester"),
                Some(user("legal approved"))
            ),
            (
                Some(Running),
                Paused,
                user("cli:tester"),
                Some(user("complaints"))
            ),
            (Some(Paused), Running, user("cli:tester"), None),
            (
                Some(Running),
                Cancelled,
                user("cli:tester"),
                Some(user("wrong list"))
            ),
        ],
        "every change, and nothing for the refused ones"
    );
    assert_eq!(
        events(2).await,
        [
            (None, Draft, user("cli:tester"), Some(user("created"))),
            (Some(Draft), Cancelled, user("cli:tester"), None),
        ]
    );
    assert_eq!(
        events(3).await,
        [
            (None, Draft, user("cli:tester"), Some(user("created"))),
            (Some(Draft), Running, user("cli:tester"), None),
            (Some(Running), Completed, user("sql"), None),
        ]
    );
    let c1 = store.require_campaign(1).await.unwrap();
    assert_eq!(c1.state, Cancelled);
    assert_eq!(c1.state_reason.as_deref(), Some("wrong list"));
    assert!(c1.started_at.is_some() && c1.finished_at.is_some());
    assert!(
        store
            .require_campaign(2)
            .await
            .unwrap()
            .started_at
            .is_none()
    );

    let show = cli.ok(&["campaign", "show", "1"]);
    assert!(
        show.contains("state: cancelled\nreason: wrong list\n"),
        "{show}"
    );
    assert!(
        show.contains("draft -> running  by cli:tester: legal approved"),
        "{show}"
    );
    assert!(
        show.contains("paused -> running  by cli:tester\n"),
        "{show}"
    );
    let list = cli.ok(&["campaign", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(list.lines().nth(2).unwrap().contains("completed"), "{list}");
    store.close().await;
}

async fn cancel_keeps_every_record(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    cli.ok(&["campaign", "create", example().to_str().unwrap()]);
    let people = write_csv(dir.path(), "people.csv", PEOPLE);
    cli.ok(&["import", "--campaign", "1", &people]);
    cli.ok(&["campaign", "start", "1"]);
    let store = cli.store().await;
    // One notice already went out.
    sql(
        &store,
        "UPDATE recipients SET status = 'sent' WHERE customer_id = 'A1'",
    )
    .await
    .unwrap();
    let before = store.progress(Some(1)).await.unwrap().remove(0);
    assert_eq!(
        (
            before.total,
            before.queued,
            before.sent,
            before.postal,
            before.cancelled
        ),
        (4, 2, 1, 1, 0)
    );
    let rows_before = count(&store, "SELECT count(*) FROM recipients").await;
    let imports_before = store.imports(1).await.unwrap().len();

    cli.ok(&["campaign", "cancel", "1", "--reason", "superseded"]);

    let after = store.progress(Some(1)).await.unwrap().remove(0);
    assert_eq!(after.state, CampaignState::Cancelled);
    assert_eq!(
        (
            after.total,
            after.queued,
            after.sent,
            after.postal,
            after.cancelled
        ),
        (4, 0, 1, 1, 2),
        "the total is unchanged; only unsent notices are cancelled"
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM recipients").await,
        rows_before
    );
    assert_eq!(store.imports(1).await.unwrap().len(), imports_before);
    for (customer, status) in [
        ("A1", RecipientStatus::Sent),
        ("B2", RecipientStatus::Cancelled),
        ("C3", RecipientStatus::Cancelled),
        ("D4", RecipientStatus::Postal),
    ] {
        let r = store
            .recipient_by_customer(1, customer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, status, "{customer}");
        if status == RecipientStatus::Cancelled {
            assert_eq!(r.fail_reason.as_deref(), Some("campaign cancelled"));
            assert!(r.finished_at.is_some());
        }
        // Every field is kept.
        assert!(r.first_name.is_some() && r.attributes.contains_key("enrollment_code"));
    }
    // Nothing can be deleted, even with SQL.
    for statement in [
        "DELETE FROM recipients WHERE campaign_id = 1",
        "DELETE FROM campaign_events WHERE campaign_id = 1",
        "DELETE FROM campaigns WHERE id = 1",
        "DELETE FROM imports WHERE campaign_id = 1",
    ] {
        let err = sql(&store, statement).await.unwrap_err();
        assert!(err.contains("not allowed"), "{statement}: {err}");
    }
    assert_eq!(
        count(&store, "SELECT count(*) FROM recipients").await,
        rows_before
    );
    assert_eq!(store.campaign_events(1).await.unwrap().len(), 3);
    store.close().await;
}

async fn start_runs_the_preflight_against_real_recipients(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    let text = "Dear {{ recipient.first_name }},\n\nYour loan: {{ recipient.attributes.missing_column }}\n";
    let html = "<p>Dear {{ recipient.first_name }},</p>\n";
    let file = campaign_dir(
        dir.path(),
        "strict",
        GOOD_TOML,
        &[("en.txt.j2", text), ("en.html.j2", html)],
    );
    // The file itself is fine: no real recipient exists yet.
    assert_eq!(
        cli.ok(&["campaign", "create", file.to_str().unwrap()]),
        "1\n"
    );
    assert_eq!(
        cli.ok(&["campaign", "create", file.to_str().unwrap()]),
        "2\n"
    );
    let without = write_csv(
        dir.path(),
        "without.csv",
        "customer_id,email,first_name,electronic_consent\nW1,w1@example.com,Wanda,yes\nW2,w2@example.com,Walt,yes\n",
    );
    cli.ok(&["import", "--campaign", "1", &without]);
    let store = cli.store().await;
    let w1 = store.recipient_by_customer(1, "W1").await.unwrap().unwrap();
    let err = cli.fails(&["campaign", "start", "1"], "campaign 1 cannot start");
    assert!(
        err.contains(&format!(
            "template en-US/text line 3 (recipient row {})",
            w1.id
        )),
        "names the template, line and recipient row: {err}"
    );
    assert!(err.contains("undefined"), "{err}");
    assert_eq!(
        store.require_campaign(1).await.unwrap().state,
        CampaignState::Draft
    );
    assert_eq!(
        store.campaign_events(1).await.unwrap().len(),
        1,
        "nothing recorded"
    );

    // The same campaign with recipients that have the column starts.
    let with = write_csv(
        dir.path(),
        "with.csv",
        "customer_id,email,first_name,electronic_consent,missing_column\nH1,h1@example.com,Hal,yes,LN-1\n",
    );
    cli.ok(&["import", "--campaign", "2", &with]);
    let o = cli.run(&["campaign", "start", "2", "--reason", "checked"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "campaign 2 is now running\n"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pre-flight: 2 sample render(s) passed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        store.require_campaign(2).await.unwrap().state,
        CampaignState::Running
    );

    // A paragraph for one jurisdiction is rendered for every locale, with a real recipient's data.
    let file = campaign_dir(
        dir.path(),
        "by-state",
        GOOD_TOML,
        &[
            (
                "en.txt.j2",
                "Dear {{ recipient.first_name }},\n{% if recipient.jurisdiction == \"US-MA\" %}\n{{ recipient.attributes.ma_case_number }}\n{% endif %}\n",
            ),
            ("en.html.j2", html),
        ],
    );
    assert_eq!(
        cli.ok(&["campaign", "create", file.to_str().unwrap()]),
        "3\n"
    );
    let mixed = write_csv(
        dir.path(),
        "mixed.csv",
        "customer_id,email,first_name,jurisdiction,electronic_consent\nM1,m1@example.com,Mo,US-CA,yes\nM2,m2@example.com,Ma,US-MA,yes\n",
    );
    cli.ok(&["import", "--campaign", "3", &mixed]);
    let m2 = store.recipient_by_customer(3, "M2").await.unwrap().unwrap();
    let err = cli.fails(&["campaign", "start", "3"], "campaign 3 cannot start");
    assert!(
        err.contains(&format!(
            "template en-US/text line 3 (recipient row {})",
            m2.id
        )),
        "{err}"
    );
    store.close().await;
}

async fn preview_prints_the_message_for_a_customer(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    cli.ok(&["campaign", "create", example().to_str().unwrap()]);
    let people = write_csv(dir.path(), "people.csv", PEOPLE);
    cli.ok(&["import", "--campaign", "1", &people]);
    let store = cli.store().await;
    let campaign = store.require_campaign(1).await.unwrap();
    let b2 = store.recipient_by_customer(1, "B2").await.unwrap().unwrap();

    let o = cli.run(&["preview", "--campaign", "1", "--customer", "B2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = parse(&o.stdout);
    assert_eq!(m.header("To"), ["bea@example.com"]);
    assert_eq!(
        m.header("Message-ID"),
        [message::message_id(&campaign.content_hash, 1, b2.id, "example-mortgage.com").as_str()]
    );
    let text = m.part("text/plain");
    assert!(text.starts_with("Estimado/a Beatriz Núñez:"), "{text}");
    assert!(text.contains("informe policial"), "US-MA: {text}");
    assert!(!text.contains("Qué sucedió"), "US-MA: {text}");
    assert!(text.contains("EN-B2"), "{text}");
    assert!(m.part("text/html").contains("Estimado/a Beatriz Núñez:"));
    // The same bytes twice (the Date header aside).
    let again = parse(
        &cli.run(&["preview", "--campaign", "1", "--customer", "B2"])
            .stdout,
    );
    assert_eq!(again.header("Message-ID"), m.header("Message-ID"));
    assert_eq!(again.part("text/plain"), text);

    cli.fails(
        &["preview", "--campaign", "1", "--customer", "D4"],
        "has no email address (channel postal): they are notified by letter",
    );
    cli.fails(
        &["preview", "--campaign", "1", "--customer", "Z9"],
        "campaign 1 has no recipient with customer_id \"Z9\"",
    );
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// Raw SQL

/// Runs raw SQL as an operator would, returning the database's error text on failure.
async fn sql(store: &Store, statement: &str) -> Result<u64, String> {
    let r = match store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(s.pool())
            .await
            .map(|r| r.rows_affected()),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(s.pool())
            .await
            .map(|r| r.rows_affected()),
    };
    r.map_err(|e| e.to_string())
}

async fn count(store: &Store, statement: &str) -> i64 {
    match store {
        Store::Postgres(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .fetch_one(s.pool())
            .await
            .unwrap(),
        Store::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .fetch_one(s.pool())
            .await
            .unwrap(),
    }
}

const LEGAL: &[(CampaignState, CampaignState)] = {
    use CampaignState::*;
    &[
        (Draft, Running),
        (Draft, Cancelled),
        (Running, Paused),
        (Running, Completed),
        (Running, Cancelled),
        (Paused, Running),
        (Paused, Cancelled),
    ]
};

/// A new campaign brought to `state` through the store.
async fn campaign_in(store: &Store, state: CampaignState) -> i64 {
    use CampaignState::*;
    let id = CampaignBuilder::on(store)
        .spec(&example_spec())
        .named(format!("in {state}"))
        .content_hash("h")
        .by("setup")
        .await;
    let path: &[CampaignState] = match state {
        Draft => &[],
        Running => &[Running],
        Paused => &[Running, Paused],
        Completed => &[Running, Completed],
        Cancelled => &[Cancelled],
    };
    for s in path {
        store
            .set_campaign_state(id, *s, "setup", None)
            .await
            .unwrap();
    }
    assert_eq!(store.require_campaign(id).await.unwrap().state, state);
    id
}

async fn every_transition_through_sql_is_enforced_and_recorded_as_sql(t: TestApp) {
    let store = &t.store;
    // The CLI's notion of the rules is the database's.
    for from in CampaignState::ALL {
        for to in CampaignState::ALL {
            assert_eq!(
                from.can_become(*to),
                LEGAL.contains(&(*from, *to)),
                "{from} -> {to}"
            );
        }
    }
    for from in CampaignState::ALL {
        for to in CampaignState::ALL {
            let id = campaign_in(store, *from).await;
            let before = store.campaign_events(id).await.unwrap();
            let result = sql(
                store,
                &format!("UPDATE campaigns SET state = '{to}' WHERE id = {id}"),
            )
            .await;
            let after = store.campaign_events(id).await.unwrap();
            let now = store.require_campaign(id).await.unwrap();
            if from == to {
                assert_eq!(result, Ok(1), "{from} -> {to}: a no-op");
                assert_eq!(after.len(), before.len(), "{from} -> {to}: no event");
                assert_eq!(now.state, *from);
            } else if LEGAL.contains(&(*from, *to)) {
                assert_eq!(result, Ok(1), "{from} -> {to}");
                assert_eq!(now.state, *to, "{from} -> {to}");
                assert_eq!(after.len(), before.len() + 1, "{from} -> {to}");
                assert_eq!(
                    event_tuple(after.last().unwrap()),
                    (Some(*from), *to, "sql".to_string(), None),
                    "{from} -> {to}"
                );
                assert_eq!(now.state_reason, None);
                if matches!(to, CampaignState::Completed | CampaignState::Cancelled) {
                    assert!(now.finished_at.is_some(), "{from} -> {to}: finished_at");
                } else {
                    assert!(now.finished_at.is_none(), "{from} -> {to}");
                }
                if *to == CampaignState::Running {
                    assert!(now.started_at.is_some(), "{from} -> {to}: started_at");
                }
            } else {
                let err = result.expect_err(&format!("{from} -> {to} must be refused"));
                assert!(err.contains("illegal"), "{from} -> {to}: {err}");
                assert_eq!(now.state, *from, "{from} -> {to}: unchanged");
                assert_eq!(after.len(), before.len(), "{from} -> {to}: no event");
            }
        }
    }
    // A campaign inserted by SQL starts as a draft, recorded as by sql.
    sql(
        store,
        "INSERT INTO campaigns (name, definition, content_hash) VALUES ('by hand', '{}', 'h')",
    )
    .await
    .unwrap();
    let id = count(store, "SELECT max(id) FROM campaigns").await;
    let events: Vec<_> = store
        .campaign_events(id)
        .await
        .unwrap()
        .iter()
        .map(event_tuple)
        .collect();
    assert_eq!(
        events,
        [(
            None,
            CampaignState::Draft,
            "sql".to_string(),
            Some("created".to_string())
        )]
    );
    let err = sql(
        store,
        "INSERT INTO campaigns (name, definition, content_hash, state) VALUES ('x', '{}', 'h', 'running')",
    )
    .await
    .unwrap_err();
    assert!(err.contains("draft"), "{err}");
    // The history cannot be rewritten.
    let err = sql(
        store,
        &format!("UPDATE campaign_events SET actor = 'nobody' WHERE campaign_id = {id}"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("not allowed"), "{err}");
}

async fn sql_transitions_record_the_actor_and_reason_they_are_given(t: TestApp) {
    let store = &t.store;
    let id = campaign_in(store, CampaignState::Running).await;
    sql(
        store,
        &format!(
            "UPDATE campaigns SET state = 'paused', change_actor = 'ops:alice', change_reason = 'complaint spike' WHERE id = {id}"
        ),
    )
    .await
    .unwrap();
    let c = store.require_campaign(id).await.unwrap();
    assert_eq!(c.state, CampaignState::Paused);
    assert_eq!(c.state_reason.as_deref(), Some("complaint spike"));
    assert_eq!(
        event_tuple(store.campaign_events(id).await.unwrap().last().unwrap()),
        (
            Some(CampaignState::Running),
            CampaignState::Paused,
            "ops:alice".to_string(),
            Some("complaint spike".to_string())
        )
    );
    // The mailbox columns are emptied, so the next plain SQL change is not misattributed.
    assert_eq!(
        count(
            store,
            &format!(
                "SELECT count(*) FROM campaigns WHERE id = {id} AND change_actor IS NULL AND change_reason IS NULL"
            )
        )
        .await,
        1
    );
    sql(
        store,
        &format!("UPDATE campaigns SET state = 'running' WHERE id = {id}"),
    )
    .await
    .unwrap();
    let c = store.require_campaign(id).await.unwrap();
    assert_eq!(c.state_reason, None);
    assert_eq!(
        event_tuple(store.campaign_events(id).await.unwrap().last().unwrap()),
        (
            Some(CampaignState::Paused),
            CampaignState::Running,
            "sql".to_string(),
            None
        )
    );
    // Changing something else is not a transition.
    let n = store.campaign_events(id).await.unwrap().len();
    sql(
        store,
        &format!("UPDATE campaigns SET name = 'renamed' WHERE id = {id}"),
    )
    .await
    .unwrap();
    assert_eq!(store.campaign_events(id).await.unwrap().len(), n);
}

async fn the_store_refuses_illegal_transitions_and_names_the_allowed_ones(t: TestApp) {
    let store = &t.store;
    let id = campaign_in(store, CampaignState::Draft).await;
    let err = store
        .set_campaign_state(id, CampaignState::Paused, "cli:tester", None)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("campaign {id} is draft; it cannot become paused (allowed: running, cancelled)")
    );
    let id = campaign_in(store, CampaignState::Completed).await;
    let err = store
        .set_campaign_state(id, CampaignState::Running, "cli:tester", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("(allowed: none: completed is final)"),
        "{err}"
    );
    let c = store
        .set_campaign_state(
            campaign_in(store, CampaignState::Paused).await,
            CampaignState::Cancelled,
            "cli:tester",
            Some("why"),
        )
        .await
        .unwrap();
    assert_eq!(c.state, CampaignState::Cancelled);
    let last = store.campaign_events(c.id).await.unwrap();
    assert_eq!(
        event_tuple(last.last().unwrap()),
        (
            Some(CampaignState::Paused),
            CampaignState::Cancelled,
            "cli:tester".to_string(),
            Some("why".to_string())
        )
    );
}
