//! Runs the hostile input corpus in `tests/hostile/` through the real binary: every case ends in a
//! correct result or one clear error line naming the problem, never a panic, never a lost row.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/hostile")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml" || x == "csv"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the {kind} corpus is there");
    files
}

fn bn(dir: &Path, url: &str, args: &[&str]) -> Output {
    common::cli(dir, url).args(args).output().unwrap()
}

/// Success, or exit 1 with a last line `error: …` that names `names` (a file) when given.
fn judge(case: &Path, o: &Output, names: Option<&str>) -> bool {
    let err = String::from_utf8_lossy(&o.stderr);
    let code = o.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "{}: exit {code:?} (a panic is 101): {err}",
        case.display()
    );
    assert!(!err.contains("panicked"), "{}: {err}", case.display());
    if code == Some(1) {
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: "),
            "{}: no clear error line: {err}",
            case.display()
        );
        assert!(
            last.len() < 2_000,
            "{}: an error line, not a dump",
            case.display()
        );
        if let Some(name) = names {
            assert!(
                last.contains(name),
                "{}: the error does not name {name}: {last}",
                case.display()
            );
        }
        return false;
    }
    true
}

#[test]
fn hostile_configuration_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = corpus("config");
    let huge = dir.path().join("huge-comment.toml");
    std::fs::write(
        &huge,
        format!("# {}\n[log]\nlevel = \"info\"\n", "a".repeat(200_000)),
    )
    .unwrap();
    cases.push(huge);
    let url = common::sqlite_url(dir.path());
    for case in cases {
        let o = bn(
            dir.path(),
            &url,
            &["--config", case.to_str().unwrap(), "check-config"],
        );
        let name = case.file_name().unwrap().to_str().unwrap();
        let expect_ok = matches!(name, "huge-comment.toml");
        let ok = judge(
            &case,
            &o,
            if expect_ok {
                None
            } else {
                Some(name).filter(|n| {
                    !n.starts_with("missing-password")
                        && !n.starts_with("negative")
                        && !n.starts_with("nan")
                        && !n.starts_with("bad-log")
                })
            },
        );
        assert_eq!(
            ok,
            expect_ok,
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn hostile_campaign_files() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::sqlite_url(dir.path());
    assert!(bn(dir.path(), &url, &["migrate"]).status.success());
    for case in corpus("campaign") {
        let o = bn(
            dir.path(),
            &url,
            &["campaign", "create", case.to_str().unwrap()],
        );
        let name = case.file_name().unwrap().to_str().unwrap();
        // A template that includes a file outside the campaign cannot: no loader, so it is an error.
        let expect_ok = name == "valid.toml";
        let ok = judge(&case, &o, None);
        if name == "nested-loops.toml" {
            // Bounded work per render: a runaway loop is refused at create, not left to hang a daemon.
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("nested-loops.txt.j2") || err.contains("en-US/text"),
                "{err}"
            );
            assert!(err.contains("steps to render"), "{err}");
        }
        assert_eq!(
            ok,
            expect_ok,
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn hostile_lists_never_lose_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::sqlite_url(dir.path());
    assert!(bn(dir.path(), &url, &["migrate"]).status.success());
    let campaign = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/campaign/valid.toml");
    let created = bn(
        dir.path(),
        &url,
        &["campaign", "create", campaign.to_str().unwrap()],
    );
    let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let mut cases = corpus("csv");
    let big = dir.path().join("megabyte-field.csv");
    std::fs::write(
        &big,
        format!(
            "customer_id,email,notes\n1,a@example.com,{}\n2,b@example.com,short\n",
            "x".repeat(1_000_000)
        ),
    )
    .unwrap();
    cases.push(big);
    for case in cases {
        let rejects = dir.path().join("rejects.csv");
        let o = bn(
            dir.path(),
            &url,
            &[
                "import",
                "--campaign",
                &id,
                case.to_str().unwrap(),
                "--rejects",
                rejects.to_str().unwrap(),
            ],
        );
        if judge(&case, &o, None) {
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(out.contains("(reconciled)"), "{}: {out}", case.display());
            // Every rejected row is in the rejects file (its header line aside).
            let rejected: usize = out
                .lines()
                .find(|l| l.trim_start().starts_with("rejected:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap();
            let lines = csv::ReaderBuilder::new()
                .flexible(true)
                .from_path(&rejects)
                .unwrap()
                .byte_records()
                .count();
            assert_eq!(lines, rejected, "{}", case.display());
        }
    }
}
