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

/// The fuzz target's checks (fuzz/fuzz_targets/bounce_parse.rs) on stable, in every test run: each
/// kept sample mutated 40 times (bytes flipped, cut, spliced with another sample) by a seeded
/// generator. Nothing panics, every input is handled within a second, only a delivery-status report or
/// a text bounce yields a failure, and random bytes never forge a VERP token.
#[test]
fn mutated_samples_never_panic_and_never_forge() {
    use rand::{Rng, SeedableRng};
    let keys: [&[u8]; 1] = [b"corpus mutation key"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3464);
    let samples: Vec<Vec<u8>> = std::fs::read_dir(fixtures().join("sisimai"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for sample in &samples {
        for _ in 0..40 {
            let mut input = sample.clone();
            match rng.random_range(0..3) {
                0 => (0..8).for_each(|_| {
                    let at = rng.random_range(0..input.len());
                    input[at] = rng.random();
                }),
                1 => input.truncate(rng.random_range(0..input.len())),
                _ => {
                    let other = &samples[rng.random_range(0..samples.len())];
                    let at = rng.random_range(0..input.len().min(other.len()));
                    input.splice(at.., other[at..].iter().copied());
                }
            }
            let started = std::time::Instant::now();
            let report = parse(&input, Some("bounce+aaaaaaaaaaaaaaaaaaaaaaaa@b.example"));
            for v in classify(&report) {
                if matches!(v.outcome, Outcome::NotDelivered { .. }) {
                    assert!(matches!(
                        report.kind,
                        super::Kind::DeliveryStatus | super::Kind::TextBounce
                    ));
                }
            }
            for address in report.correlation_addresses() {
                assert_eq!(super::verp::decode(address, &keys), None);
            }
            let _ = redact(&input);
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
    }
}
