//! The vendored sisimai corpus (`tests/fixtures/bounces/`): every kept sample classifies as
//! `expected.toml` says, auto-replies, complaints and non-bounces never yield a failure, and the
//! redacted copy of each sample parses to the same verdicts and correlation keys.

use std::path::PathBuf;

use super::{Outcome, classify, parse, redact};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces")
}

/// Differences between what a sample gives and what `expected.toml` says, one line each.
fn check(file: &str, expect: &[toml::Value]) -> Vec<String> {
    let raw = std::fs::read(fixtures().join("sisimai").join(file)).expect("fixture");
    let report = parse(&raw, None);
    let verdicts = classify(&report);
    let mut problems = Vec::new();
    if verdicts.len() != expect.len() {
        problems.push(format!(
            "{file}: {} verdicts, expected {} ({:?})",
            verdicts.len(),
            expect.len(),
            verdicts
                .iter()
                .map(|v| (Outcome::names(v.outcome), v.rule))
                .collect::<Vec<_>>()
        ));
    }
    for (i, (v, e)) in verdicts.iter().zip(expect).enumerate() {
        let (outcome, detail) = Outcome::names(v.outcome);
        let want = e["outcome"].as_str().unwrap();
        let want_detail = e
            .get("class")
            .or_else(|| e.get("evidence"))
            .and_then(toml::Value::as_str);
        if outcome != want || want_detail.is_some() && want_detail != detail {
            problems.push(format!(
                "{file}[{i}]: got {outcome} {detail:?} by {} (status {:?}), expected {want} {want_detail:?} (sisimai {})",
                v.rule, v.status, e["sisimai"]
            ));
        }
        let must_not_fail = matches!(want, "delivered" | "unclassified");
        assert!(
            !(must_not_fail && outcome == "not_delivered"),
            "{file}: an auto-reply, complaint, success or non-bounce was read as a failure"
        );
    }
    let again = parse(&redact(&raw), None);
    if classify(&again) != verdicts
        || again.original_message_id != report.original_message_id
        || again.correlation_addresses() != report.correlation_addresses()
        || again.queue_id() != report.queue_id()
    {
        problems.push(format!("{file}: the redacted copy parses differently"));
    }
    problems
}

#[test]
fn every_kept_sample_classifies_as_expected() {
    let text = std::fs::read_to_string(fixtures().join("expected.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let samples = table["sample"].as_array().unwrap();
    assert!(
        samples.len() >= 40,
        "the corpus shrank to {}",
        samples.len()
    );
    let mut problems = Vec::new();
    for s in samples {
        let file = s["file"].as_str().unwrap();
        problems.extend(check(file, s["expect"].as_array().unwrap()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_vendored_sample_is_listed() {
    let text = std::fs::read_to_string(fixtures().join("expected.toml")).unwrap();
    for entry in std::fs::read_dir(fixtures().join("sisimai")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".eml") {
            assert!(
                text.contains(&format!("\"{name}\"")),
                "{name} has no expectation"
            );
        }
    }
}
