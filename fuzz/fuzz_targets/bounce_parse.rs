//! Fuzzes the bounce layer on arbitrary bytes: parsing, classification, redaction and VERP decoding
//! must never panic, and what they return must hold together. A failure verdict only ever comes from
//! a delivery-status report or a recognised text bounce; the redacted copy is never larger than the
//! capped input plus the rebuilt MIME framing, and it parses to the same kind.
#![no_main]

use breach_notifier::bounce::{self, Kind, Outcome, verp};
use libfuzzer_sys::fuzz_target;

const KEYS: [&[u8]; 2] = [b"fuzz key one", b"fuzz key two"];

fuzz_target!(|data: &[u8]| {
    // The first line doubles as the envelope recipient the MTA would pass.
    let envelope = data
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok());
    let report = bounce::parse(data, envelope);
    let verdicts = bounce::classify(&report);
    assert!(
        !verdicts.is_empty(),
        "classify always gives at least one verdict"
    );
    for v in &verdicts {
        if matches!(v.outcome, Outcome::NotDelivered { .. }) {
            assert!(
                matches!(report.kind, Kind::DeliveryStatus | Kind::TextBounce),
                "a failure from a {:?}",
                report.kind
            );
        }
    }
    for address in report.correlation_addresses() {
        // Random bytes forge no MAC.
        if let Some(id) = verp::decode(address, &KEYS) {
            let again = verp::encode("b", "x.example", id, KEYS[0]).unwrap();
            assert_eq!(verp::decode(&again, &KEYS), Some(id));
        }
    }
    let stored = bounce::redact(data);
    let capped = data.len().min(bounce::parse::MAX_REPORT_BYTES);
    assert!(
        stored.len() <= capped * 3 + 4096,
        "redaction grew the report"
    );
    if report.kind != Kind::Unknown {
        assert_eq!(bounce::parse(&stored, envelope).kind, report.kind);
    }
});
