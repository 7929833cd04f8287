//! `rules show` as the operator runs it: the table, one jurisdiction, an unknown code, counsel's
//! override file (named in the output), and hostile override files refused with file and line. No
//! database is configured or opened: the rules are data in the binary.

use std::path::Path;
use std::process::Output;

use crate::common;

fn run(dir: &Path, args: &[&str]) -> Output {
    // A database URL that cannot be opened: `rules show` must never try.
    common::command(dir)
        .env(
            "BREACH_NOTIFIER__DATABASE__URL",
            "sqlite:///nonexistent/dir/x.db",
        )
        .args(args)
        .output()
        .expect("run breach-notifier")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    stdout(o)
}

/// A non-zero exit with one `error:` line holding every expected piece.
fn clear_failure(o: &Output, expected: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure: {}", stdout(o));
    assert!(
        err.starts_with("error: ") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    for piece in expected {
        assert!(err.contains(piece), "stderr lacks {piece:?}: {err}");
    }
}

#[test]
fn the_table_lists_every_jurisdiction() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&run(dir.path(), &["rules", "show"]));
    for code in [
        "US-CA",
        "US-MA",
        "US-TX",
        "US-FED-HIPAA",
        "EU-GDPR",
        "GB",
        "AU",
    ] {
        assert!(out.contains(code), "{code} missing: {out}");
    }
    let ca = out.lines().find(|l| l.starts_with("US-CA ")).unwrap();
    assert!(
        ca.contains("California") && ca.contains(" 30 ") && ca.contains("2026-12-01"),
        "{ca}"
    );
    let ma = out.lines().find(|l| l.starts_with("US-MA ")).unwrap();
    assert!(ma.contains("text") && ma.contains(" 2 "), "{ma}");
    assert!(out.contains("Not legal advice"));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&run(dir.path(), &["rules", "show", "--json"]))).unwrap();
    let rows = json["jurisdictions"].as_array().unwrap();
    assert!(rows.len() >= 60);
    assert!(
        rows.iter()
            .any(|r| r["code"] == "US-TX" && r["individual_days"] == 60)
    );
}

#[test]
fn one_jurisdiction_says_what_applies_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&run(dir.path(), &["rules", "show", "US-CA"]));
    for piece in [
        "30 calendar days from discovery",
        "California Attorney General",
        "501 or more affected residents",
        "15 days after the consumer notice",
        "\"Notice of Data Breach\", \"What Happened\"",
        "cost over $250000 or over 500000 persons",
        "with_consent",
        "[CA_STAT]",
        "verified on 2026-12-01",
        "from the shipped rules",
    ] {
        assert!(out.contains(piece), "{piece:?} missing: {out}");
    }
    let ma = ok(&run(dir.path(), &["rules", "show", "us-ma"]));
    assert!(
        ma.contains("must NOT contain:  nature of the breach"),
        "{ma}"
    );
    assert!(ma.contains("internal target 30 days"), "{ma}");
    let eu = ok(&run(dir.path(), &["rules", "show", "EU-DE"]));
    assert!(eu.contains("72 hours from discovery"), "an alias: {eu}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&run(dir.path(), &["rules", "show", "US-MD", "--json"]))).unwrap();
    assert_eq!(json["rules"]["regulator"][0]["timing"], "before");
    assert_eq!(json["origin"]["from"], "shipped");
}

#[test]
fn an_unknown_code_names_the_closest_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["rules", "show", "US-CX"]);
    clear_failure(&o, &["no rules for jurisdiction \"US-CX\"", "US-CA"]);
}

#[test]
fn an_override_file_replaces_an_entry_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Counsel's workflow: print the entry in the file format, edit it, point rules.file at it.
    let entry = ok(&run(dir.path(), &["rules", "show", "US-CA", "--toml"]));
    assert!(entry.contains("days = 30"), "{entry}");
    let edited = entry.replacen("days = 30", "days = 20", 1);
    std::fs::write(dir.path().join("counsel.toml"), edited).unwrap();
    std::fs::write(
        dir.path().join("site.toml"),
        "[rules]\nfile = \"counsel.toml\"\n",
    )
    .unwrap();
    let out = ok(&run(
        dir.path(),
        &["--config", "site.toml", "rules", "show", "US-CA"],
    ));
    assert!(out.contains("20 calendar days from discovery"), "{out}");
    assert!(
        out.contains(
            "from the override file counsel.toml (it replaces the shipped entry as a whole)"
        ),
        "{out}"
    );
    let table = ok(&run(
        dir.path(),
        &["--config", "site.toml", "rules", "show"],
    ));
    let ca = table.lines().find(|l| l.starts_with("US-CA ")).unwrap();
    assert!(
        ca.contains(" 20 ") && ca.contains("override counsel.toml"),
        "{ca}"
    );
    let tx = table.lines().find(|l| l.starts_with("US-TX ")).unwrap();
    assert!(tx.contains("shipped"), "other entries stay: {tx}");
    assert!(table.contains("Override file: counsel.toml"), "{table}");
}

#[test]
fn hostile_override_files_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.toml"),
        "[rules]\nfile = \"counsel.toml\"\n",
    )
    .unwrap();
    let entry = ok(&run(dir.path(), &["rules", "show", "US-TX", "--toml"]));
    let body = &entry[entry.find("[[jurisdiction]]").unwrap()..];
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "[[jurisdiction]]\ncode = \"US-CA\"\nname = \n".to_string(),
            vec!["rules file counsel.toml", "line 3"],
        ),
        (
            entry.replacen("confidence =", "confidense =", 1),
            vec!["rules file counsel.toml", "line ", "confidense", "US-TX"],
        ),
        (
            entry.replacen("days = 60", "days = -60", 1),
            vec![
                "rules file counsel.toml",
                "line ",
                "jurisdiction US-TX",
                "individual.days",
                "negative",
            ],
        ),
        (
            entry.replacen("threshold = 250\n", "", 1),
            vec![
                "line ",
                "jurisdiction US-TX",
                "regulator[0]",
                "no `threshold`",
            ],
        ),
        (
            entry.replacen("timing = \"after_start\"", "timing = \"whenever\"", 1),
            vec!["line ", "US-TX", "timing", "unknown variant"],
        ),
        (
            entry.replacen(
                "verified_on = \"2026-12-01\"",
                "verified_on = \"last spring\"",
                1,
            ),
            vec!["line ", "jurisdiction US-TX", "verified_on"],
        ),
        (format!("{entry}\n{body}"), vec!["line ", "appears twice"]),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.path().join("counsel.toml"), &text).unwrap();
        let o = run(
            dir.path(),
            &["--config", "site.toml", "rules", "show", "US-TX"],
        );
        clear_failure(&o, &expected);
    }
    std::fs::remove_file(dir.path().join("counsel.toml")).unwrap();
    let o = run(dir.path(), &["--config", "site.toml", "rules", "show"]);
    clear_failure(&o, &["rules file counsel.toml", "cannot read it"]);
}
