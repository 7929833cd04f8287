//! Intake of hostile customer lists, on PostgreSQL and SQLite alike: every row of
//! `tests/fixtures/hostile.csv` is checked against its expected outcome (stored with which channel,
//! status and address; rejected at which line and why; or counted as a duplicate), and the
//! reconciliation `read = accepted + rejected + duplicates` is checked against what was stored.
//! Each case is a function taking a fresh migrated store; `backends!` instantiates it per backend.

use crate::common;
use crate::common::CampaignBuilder;

use std::path::{Path, PathBuf};
use std::process::Output;

use breach_notifier::intake::{ImportOptions, ImportSummary, import};
use breach_notifier::store::{
    CampaignState, Channel, ImportCounts, NewRecipient, Recipient, RecipientStatus, Store,
};
use common::TestApp;
use sha2::{Digest, Sha256};

backends!(
    hostile_file_row_by_row,
    hostile_file_reconciles_with_the_stored_import,
    the_same_file_twice_adds_nothing_and_names_the_first_import,
    a_second_list_repeating_a_customer_counts_a_duplicate_and_changes_nothing,
    customers_sharing_an_address_are_all_stored_and_counted,
    shared_addresses_count_what_was_stored_and_earlier_lists,
    no_email_or_no_consent_is_postal_unless_email_without_consent,
    dry_run_stores_nothing_but_counts_the_same,
    header_without_customer_id_is_one_clear_error,
    column_names_match_case_insensitively_and_unknown_columns_become_attributes,
    a_missing_file_is_a_clear_error,
    a_latin1_file_is_rejected_row_by_row,
    a_non_utf8_header_is_one_clear_error,
    a_bom_before_a_quoted_header_is_allowed,
    line_numbers_count_blank_lines_and_crlf,
    a_cancelled_campaign_takes_no_recipients,
    an_interrupted_import_does_not_break_the_next_one,
    unknown_jurisdiction_codes_are_counted_and_imported,
);

/// What should become of one data row of the hostile fixture.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Stored, to be emailed, at this (normalised) address.
    Email(&'static str),
    /// Stored for a letter, keeping this address (or none when it was missing or unusable).
    Postal(Option<&'static str>),
    /// Rejected: the rejects file names the line and a reason containing this text; `fields` is how
    /// many fields the original record had.
    Rejected { reason: &'static str, fields: usize },
    /// The customer is already in the campaign (earlier in the same list): left unchanged.
    Duplicate,
}

use Expect::*;

/// `(line where the record starts, customer_id as written, expected outcome)`, in file order.
const HOSTILE: &[(u64, &str, Expect)] = &[
    (2, "H001", Email("Ada.Lovelace@example.com")),
    (3, "  H002 ", Postal(Some("grace@example.com"))),
    (
        4,
        "H003",
        Rejected {
            reason: "first_name contains a control character (U+000A)",
            fields: 8,
        },
    ),
    (
        6,
        "H004",
        Rejected {
            reason: "first_name contains a control character (U+000D)",
            fields: 8,
        },
    ),
    (
        8,
        "H005",
        Rejected {
            reason: "email contains a control character (U+000D)",
            fields: 8,
        },
    ),
    (10, "H006", Postal(None)),
    // lettre accepts internationalised addresses (RFC 6532): kept as written, domain lower-cased.
    (11, "H007", Email("josé@bücher.example")),
    (12, "H008", Email("用户@例子.广告")),
    (13, "H009", Postal(None)),
    (14, "H001", Duplicate),
    (
        15,
        "H010",
        Rejected {
            reason: "the row has 4 fields but the header has 8",
            fields: 4,
        },
    ),
    (
        16,
        "H011",
        Rejected {
            reason: "the row has 9 fields but the header has 8",
            fields: 9,
        },
    ),
    // line 17 is blank: not a row
    (
        18,
        "H012",
        Rejected {
            reason: "column first_name is not valid UTF-8",
            fields: 8,
        },
    ),
    (
        19,
        "H013",
        Rejected {
            reason: "column first_name is longer than 200 characters",
            fields: 8,
        },
    ),
    (
        20,
        "H014",
        Rejected {
            reason: "column enrollment_code is longer than 2000 characters",
            fields: 8,
        },
    ),
    (
        21,
        "",
        Rejected {
            reason: "customer_id is empty",
            fields: 8,
        },
    ),
    (22, "H016", Postal(None)),
    (23, "H017", Email("shared@example.com")),
    (24, "H018", Email("Shared@example.com")),
    (
        25,
        "H019",
        Rejected {
            reason: "locale \"english\" is not a language tag",
            fields: 8,
        },
    ),
    (
        26,
        "H020",
        Rejected {
            reason: "jurisdiction \"California\" is not an ISO 3166 code",
            fields: 8,
        },
    ),
    (
        27,
        "H021",
        Rejected {
            reason: "electronic_consent \"maybe\" is not yes/no",
            fields: 8,
        },
    ),
    (28, "H022", Email("q@example.com")),
    (
        29,
        "H023",
        Rejected {
            reason: "first_name contains a control character (U+0009)",
            fields: 8,
        },
    ),
    // A mailbox ("Name <addr>") is not a bare address: unusable, so a letter.
    (30, "H024", Postal(None)),
    // The corrected row of the customer rejected on line 4.
    (31, "H003", Email("alan@example.com")),
    (32, "H025", Postal(None)),
    (33, "H026", Email("last@example.com")),
];

/// The reconciliation of the hostile fixture imported into an empty campaign.
const HOSTILE_COUNTS: ImportCounts = ImportCounts {
    read: 28,
    rejected: 13,
    duplicates: 1,
    email: 8,
    postal: 6,
    unusable_email: 4,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn campaign(store: &Store, email_without_consent: bool) -> i64 {
    CampaignBuilder::on(store)
        .named("Intake test")
        .definition("{}")
        .content_hash("intake")
        .email_without_consent(email_without_consent)
        .await
}

fn options(
    campaign_id: i64,
    source: &Path,
    rejects: Option<&Path>,
    dry_run: bool,
) -> ImportOptions {
    ImportOptions {
        campaign_id,
        source: source.to_path_buf(),
        rejects: rejects.map(Path::to_path_buf),
        dry_run,
        actor: "test:intake".into(),
        progress: false,
        deadline_days: Default::default(),
    }
}

async fn run_import(
    store: &Store,
    campaign_id: i64,
    source: &Path,
    rejects: Option<&Path>,
) -> ImportSummary {
    import(store, &options(campaign_id, source, rejects, false))
        .await
        .unwrap_or_else(|e| panic!("import of {} failed: {e:#}", source.display()))
}

async fn stored(store: &Store, campaign_id: i64, customer_id: &str) -> Recipient {
    store
        .recipient_by_customer(campaign_id, customer_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("customer {customer_id:?} was not stored"))
}

/// The import a stored recipient came with (not part of [`Recipient`]).
async fn import_id_of(store: &Store, campaign_id: i64, customer_id: &str) -> Option<i64> {
    match store {
        Store::Postgres(s) => sqlx::query_scalar(
            "SELECT import_id FROM recipients WHERE campaign_id = $1 AND customer_id = $2",
        )
        .bind(campaign_id)
        .bind(customer_id)
        .fetch_one(s.pool())
        .await
        .unwrap(),
        Store::Sqlite(s) => sqlx::query_scalar(
            "SELECT import_id FROM recipients WHERE campaign_id = ?1 AND customer_id = ?2",
        )
        .bind(campaign_id)
        .bind(customer_id)
        .fetch_one(s.pool())
        .await
        .unwrap(),
    }
}

async fn total(store: &Store, campaign_id: i64) -> i64 {
    store.progress(Some(campaign_id)).await.unwrap()[0].total
}

/// One record of a rejects file: line, reason, original fields.
type Reject = (u64, String, Vec<Vec<u8>>);

/// A rejects file: its header and its records.
fn read_rejects(path: &Path) -> (Vec<String>, Vec<Reject>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap();
    let mut records = reader.byte_records().map(Result::unwrap);
    let header = records
        .next()
        .expect("the rejects file has a header")
        .iter()
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect();
    let rows = records
        .map(|r| {
            let line = std::str::from_utf8(&r[0]).unwrap().parse().unwrap();
            let reason = String::from_utf8(r[1].to_vec()).unwrap();
            (line, reason, r.iter().skip(2).map(<[u8]>::to_vec).collect())
        })
        .collect();
    (header, rows)
}

async fn hostile_file_row_by_row(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.csv");
    let summary = run_import(store, id, &fixture("hostile.csv"), Some(&rejects)).await;
    let import_id = summary.import_id.expect("a real import has an id");

    let (header, rejected) = read_rejects(&rejects);
    assert_eq!(
        header,
        [
            "line",
            "reason",
            "customer_id",
            "email",
            "first_name",
            "last_name",
            "locale",
            "jurisdiction",
            "electronic_consent",
            "enrollment_code"
        ]
    );
    let expected_lines: Vec<u64> = HOSTILE
        .iter()
        .filter(|(_, _, e)| matches!(e, Rejected { .. }))
        .map(|(line, _, _)| *line)
        .collect();
    let lines: Vec<u64> = rejected.iter().map(|(line, _, _)| *line).collect();
    assert_eq!(
        lines, expected_lines,
        "exactly the rejected rows, with the line each record starts on"
    );

    for &(line, customer, expect) in HOSTILE {
        let trimmed = customer.trim();
        match expect {
            Email(address) => {
                let r = stored(store, id, trimmed).await;
                assert_eq!(r.email.as_deref(), Some(address), "line {line}");
                assert_eq!(r.channel, Channel::Email, "line {line}");
                assert_eq!(r.status, RecipientStatus::Queued, "line {line}");
            }
            Postal(address) => {
                let r = stored(store, id, trimmed).await;
                assert_eq!(r.email.as_deref(), address, "line {line}");
                assert_eq!(r.channel, Channel::Postal, "line {line}");
                assert_eq!(r.status, RecipientStatus::Postal, "line {line}");
            }
            Rejected { reason, fields } => {
                let (_, why, original) = rejected
                    .iter()
                    .find(|(l, _, _)| *l == line)
                    .unwrap_or_else(|| panic!("line {line} is not in the rejects file"));
                assert!(
                    why.contains(reason),
                    "line {line}: {why:?} lacks {reason:?}"
                );
                assert_eq!(original.len(), fields, "line {line}: original fields kept");
                assert_eq!(original[0], customer.as_bytes(), "line {line}");
                // Only H003 comes back later, corrected; no other rejected customer is stored.
                if trimmed != "H003" && !trimmed.is_empty() {
                    assert!(
                        store
                            .recipient_by_customer(id, trimmed)
                            .await
                            .unwrap()
                            .is_none(),
                        "line {line}: a rejected row is not stored"
                    );
                }
            }
            Duplicate => {}
        }
    }

    // The hostile values are kept byte for byte in the rejects file.
    let field = |line: u64, column: usize| -> Vec<u8> {
        rejected.iter().find(|(l, _, _)| *l == line).unwrap().2[column].clone()
    };
    assert_eq!(field(4, 2), b"Alan\nTuring");
    assert_eq!(field(6, 2), b"Eve\r\nBcc: evil@example.com");
    assert_eq!(field(8, 1), b"mallory@example.com\r\nBcc: evil@example.com");
    assert_eq!(field(18, 2), b"\xC9mile");
    assert_eq!(field(19, 2), vec![b'A'; 10_240]);
    assert_eq!(field(20, 7), vec![b'A'; 10_240]);
    assert_eq!(field(29, 2), b"Tab\there");

    // The first occurrence of H001 is what is stored; the duplicate on line 14 changed nothing.
    let ada = stored(store, id, "H001").await;
    assert_eq!(ada.first_name.as_deref(), Some("Ada"));
    assert_eq!(ada.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(ada.locale.as_deref(), Some("en-US"), "en_us normalised");
    assert_eq!(
        ada.jurisdiction.as_deref(),
        Some("US-CA"),
        "us-ca normalised"
    );
    assert!(ada.electronic_consent);
    assert_eq!(ada.attributes["enrollment_code"], "EN-0001");
    assert_eq!(ada.attributes.len(), 1);
    // Every stored row points at this import.
    for (_, customer, expect) in HOSTILE {
        if matches!(expect, Email(_) | Postal(_)) {
            assert_eq!(
                import_id_of(store, id, customer.trim()).await,
                Some(import_id)
            );
        }
    }

    let grace = stored(store, id, "H002").await;
    assert!(!grace.electronic_consent, "no consent: a letter");
    assert_eq!(grace.jurisdiction.as_deref(), Some("US-MA"));
    let quoted = stored(store, id, "H022").await;
    assert_eq!(quoted.first_name.as_deref(), Some("O\"Brien, Jr."));
    let corrected = stored(store, id, "H003").await;
    assert_eq!(corrected.first_name.as_deref(), Some("Alan"));
    // Markup and template syntax are data: stored verbatim (rendering escapes them).
    let script = stored(store, id, "H025").await;
    assert_eq!(
        script.first_name.as_deref(),
        Some("<script>alert(1)</script>")
    );
    assert_eq!(script.last_name.as_deref(), Some("{{ 7*7 }}"));
    assert!(
        store.recipient_by_customer(id, "").await.unwrap().is_none(),
        "no customer without an id"
    );
    assert_eq!(total(store, id).await, 14);
}

async fn hostile_file_reconciles_with_the_stored_import(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let source = fixture("hostile.csv");
    let summary = run_import(store, id, &source, None).await;
    assert_eq!(summary.counts, HOSTILE_COUNTS);
    assert!(summary.counts.reconciles());
    assert_eq!(
        summary.counts.read,
        summary.counts.accepted() + summary.counts.rejected + summary.counts.duplicates
    );
    assert_eq!(
        summary.shared_addresses, 1,
        "H017 and H018 share an address"
    );
    assert_eq!(summary.same_file_as, None);
    assert!(!summary.dry_run);
    let bytes = std::fs::read(&source).unwrap();
    assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));

    // What was stored agrees with the summary.
    let progress = store.progress(Some(id)).await.unwrap().remove(0);
    assert_eq!(progress.total, 14);
    assert_eq!(progress.queued, 8);
    assert_eq!(progress.postal, 6);
    let imports = store.imports(id).await.unwrap();
    assert_eq!(imports.len(), 1);
    let record = &imports[0];
    assert_eq!(Some(record.id), summary.import_id);
    assert_eq!(record.campaign_id, id);
    assert_eq!(record.source_name, source.display().to_string());
    assert_eq!(record.sha256, summary.sha256);
    assert_eq!(record.actor, "test:intake");
    assert_eq!(record.shared_addresses, 1);
    assert_eq!(record.counts.read, 28);
    assert_eq!(record.counts.rejected, 13);
    assert_eq!(record.counts.duplicates, 1);
    assert_eq!(record.counts.email, 8);
    assert_eq!(record.counts.postal, 6);
    assert!(record.counts.reconciles());
    assert!(record.started_at <= record.finished_at);

    // The operator's summary ends with the identity.
    let text = summary.render("hostile.csv", id, None);
    assert!(
        text.contains("read = accepted + rejected + duplicates: 28 = 14 + 13 + 1 (reconciled)"),
        "{text}"
    );
    assert!(
        text.contains("(email 8, postal 6, of which 4 had an unusable email address)"),
        "{text}"
    );
}

async fn the_same_file_twice_adds_nothing_and_names_the_first_import(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let source = fixture("hostile.csv");
    let first = run_import(store, id, &source, None).await;
    let second = run_import(store, id, &source, None).await;
    assert_eq!(second.same_file_as, first.import_id);
    assert_ne!(second.import_id, first.import_id);
    assert_eq!(
        second.counts,
        ImportCounts {
            read: 28,
            rejected: 13,
            duplicates: 15,
            email: 0,
            postal: 0,
            unusable_email: 4,
        }
    );
    assert_eq!(total(store, id).await, 14, "nothing added");
    assert_eq!(
        import_id_of(store, id, "H001").await,
        first.import_id,
        "rows still belong to the first import"
    );
    let imports = store.imports(id).await.unwrap();
    assert_eq!(imports.len(), 2);
    assert_eq!(imports[1].counts.duplicates, 15);
    assert_eq!(imports[1].counts.email + imports[1].counts.postal, 0);
    let text = second.render("hostile.csv", id, None);
    assert!(
        text.contains(&format!(
            "this exact file was already imported (import #{}): nothing new was added",
            first.import_id.unwrap()
        )),
        "{text}"
    );
    // Another campaign is another audience: the same file is new there.
    let other = campaign(store, false).await;
    let elsewhere = run_import(store, other, &source, None).await;
    assert_eq!(elsewhere.same_file_as, None);
    assert_eq!(elsewhere.counts, HOSTILE_COUNTS);
}

async fn a_second_list_repeating_a_customer_counts_a_duplicate_and_changes_nothing(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.csv");
    std::fs::write(
        &first,
        "customer_id,email,first_name,electronic_consent\nC1,one@example.com,Ada,yes\nC2,two@example.com,Bob,no\n",
    )
    .unwrap();
    let second = dir.path().join("second.csv");
    std::fs::write(
        &second,
        "customer_id,email,first_name,electronic_consent\nC1,changed@example.com,Changed,no\nC3,three@example.com,Cy,yes\n",
    )
    .unwrap();
    let a = run_import(store, id, &first, None).await;
    let before = stored(store, id, "C1").await;
    let b = run_import(store, id, &second, None).await;
    assert_eq!(
        b.counts,
        ImportCounts {
            read: 2,
            rejected: 0,
            duplicates: 1,
            email: 1,
            postal: 0,
            unusable_email: 0,
        }
    );
    assert_eq!(b.same_file_as, None, "a different file");
    let after = stored(store, id, "C1").await;
    assert_eq!(after.id, before.id);
    assert_eq!(after.email.as_deref(), Some("one@example.com"));
    assert_eq!(after.first_name.as_deref(), Some("Ada"));
    assert!(after.electronic_consent);
    assert_eq!(after.channel, Channel::Email);
    assert_eq!(import_id_of(store, id, "C1").await, a.import_id);
    assert_eq!(import_id_of(store, id, "C3").await, b.import_id);
    assert_eq!(total(store, id).await, 3);
}

async fn customers_sharing_an_address_are_all_stored_and_counted(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("family.csv");
    std::fs::write(
        &file,
        "customer_id,email,electronic_consent\n\
         F1,family@example.com,yes\n\
         F2,Family@Example.com,yes\n\
         F3,family@example.com,no\n\
         F4,alone@example.com,yes\n\
         F5,couple@example.com,yes\n\
         F6,couple@example.com,yes\n",
    )
    .unwrap();
    let summary = run_import(store, id, &file, None).await;
    assert_eq!(summary.counts.accepted(), 6);
    assert_eq!(summary.counts.duplicates, 0);
    assert_eq!(summary.counts.email, 5);
    assert_eq!(summary.counts.postal, 1);
    assert_eq!(summary.shared_addresses, 2, "family@ and couple@");
    assert_eq!(store.imports(id).await.unwrap()[0].shared_addresses, 2);
    for (customer, email) in [
        ("F1", "family@example.com"),
        ("F2", "Family@example.com"),
        ("F3", "family@example.com"),
        ("F5", "couple@example.com"),
        ("F6", "couple@example.com"),
    ] {
        assert_eq!(
            stored(store, id, customer).await.email.as_deref(),
            Some(email)
        );
    }
    assert!(
        summary
            .render("family.csv", id, None)
            .contains("addresses shared by more than one customer: 2")
    );
}

/// The shared-address count of a first list comes from what the import stored (not from the file,
/// and not by reading the campaign back); a later list is counted with the campaign's earlier ones.
async fn shared_addresses_count_what_was_stored_and_earlier_lists(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    // R1 repeats with another address in the same batch, R2 in a later batch (past BATCH_ROWS, so
    // the store merges that batch): the repeats are duplicates, so their addresses are not stored
    // and share nothing. first@ is the one address two stored customers use.
    let mut list = String::from("customer_id,email,electronic_consent\n");
    list.push_str(
        "R1,first@example.com,yes\nR1,other@example.com,yes\nR2,second@example.com,yes\n",
    );
    for i in 0..breach_notifier::intake::BATCH_ROWS {
        list.push_str(&format!("P{i},person{i}@example.com,yes\n"));
    }
    list.push_str("R2,other@example.com,yes\nR3,FIRST@example.com,yes\n");
    let file = dir.path().join("first.csv");
    std::fs::write(&file, &list).unwrap();
    let summary = run_import(store, id, &file, None).await;
    assert_eq!(summary.counts.duplicates, 2);
    assert_eq!(summary.shared_addresses, 1, "first@ (R1 and R3)");
    assert_eq!(
        stored(store, id, "R2").await.email.as_deref(),
        Some("second@example.com")
    );

    // A second list: other@ now has two customers (S1, S2), second@ two (R2 and S3).
    let file = dir.path().join("second.csv");
    std::fs::write(
        &file,
        "customer_id,email,electronic_consent\n\
         S1,other@example.com,yes\n\
         S2,Other@example.com,yes\n\
         S3,second@example.com,yes\n",
    )
    .unwrap();
    let summary = run_import(store, id, &file, None).await;
    assert_eq!(summary.shared_addresses, 3, "first@, other@ and second@");
    let records = store.imports(id).await.unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| r.shared_addresses)
            .collect::<Vec<_>>(),
        [1, 3]
    );
}

async fn no_email_or_no_consent_is_postal_unless_email_without_consent(t: TestApp) {
    let store = &t.store;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("consent.csv");
    std::fs::write(
        &file,
        "customer_id,email,electronic_consent\n\
         P1,p1@example.com,yes\n\
         P2,p2@example.com,no\n\
         P3,p3@example.com,\n\
         P4,,yes\n\
         P5,not an address,yes\n",
    )
    .unwrap();
    let strict = campaign(store, false).await;
    let summary = run_import(store, strict, &file, None).await;
    assert_eq!((summary.counts.email, summary.counts.postal), (1, 4));
    assert_eq!(summary.counts.unusable_email, 1);
    let expected_strict = [
        ("P1", Channel::Email, Some("p1@example.com")),
        ("P2", Channel::Postal, Some("p2@example.com")),
        ("P3", Channel::Postal, Some("p3@example.com")),
        ("P4", Channel::Postal, None),
        ("P5", Channel::Postal, None),
    ];
    for (customer, channel, email) in expected_strict {
        let r = stored(store, strict, customer).await;
        assert_eq!(
            (r.channel, r.email.as_deref()),
            (channel, email),
            "{customer}"
        );
        let status = match channel {
            Channel::Email => RecipientStatus::Queued,
            Channel::Postal => RecipientStatus::Postal,
        };
        assert_eq!(r.status, status, "{customer}");
    }

    // Substitute notice: every usable address is emailed, consent or not.
    let substitute = campaign(store, true).await;
    let summary = run_import(store, substitute, &file, None).await;
    assert_eq!((summary.counts.email, summary.counts.postal), (3, 2));
    for (customer, channel) in [
        ("P1", Channel::Email),
        ("P2", Channel::Email),
        ("P3", Channel::Email),
        ("P4", Channel::Postal),
        ("P5", Channel::Postal),
    ] {
        assert_eq!(
            stored(store, substitute, customer).await.channel,
            channel,
            "{customer}"
        );
    }
    assert!(!stored(store, substitute, "P2").await.electronic_consent);
}

async fn dry_run_stores_nothing_but_counts_the_same(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.csv");
    let source = fixture("hostile.csv");
    let dry = import(store, &options(id, &source, Some(&rejects), true))
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.import_id, None);
    assert_eq!(dry.counts, HOSTILE_COUNTS);
    assert_eq!(total(store, id).await, 0, "nothing stored");
    assert!(
        store.imports(id).await.unwrap().is_empty(),
        "no import recorded"
    );
    assert!(
        store
            .recipient_by_customer(id, "H001")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        read_rejects(&rejects).1.len(),
        13,
        "rejects are still written"
    );
    assert!(
        dry.render("hostile.csv", id, Some(&rejects))
            .starts_with("dry run: nothing was stored\n")
    );

    let real = run_import(store, id, &source, None).await;
    assert_eq!(real.counts, dry.counts, "a dry run predicts the import");
    assert_eq!(real.sha256, dry.sha256);

    // After the import, a dry run of the same file predicts a second import: all duplicates.
    let dry_again = import(store, &options(id, &source, None, true))
        .await
        .unwrap();
    assert_eq!(dry_again.same_file_as, real.import_id);
    let real_again = run_import(store, id, &source, None).await;
    assert_eq!(dry_again.counts, real_again.counts);
    assert_eq!(dry_again.counts.duplicates, 15);
    assert_eq!(store.imports(id).await.unwrap().len(), 2);
}

async fn header_without_customer_id_is_one_clear_error(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-id.csv");
    std::fs::write(&file, "id,email\n1,a@example.com\n").unwrap();
    let err = import(store, &options(id, &file, None, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("line 1 (header): there is no customer_id column (found: id, email)"),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
    assert_eq!(total(store, id).await, 0);
    assert!(store.imports(id).await.unwrap().is_empty());

    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let err = import(store, &options(id, &empty, None, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the file is empty"), "{err}");
    let twice = dir.path().join("twice.csv");
    std::fs::write(
        &twice,
        "customer_id,Email,EMAIL\nC1,a@example.com,b@example.com\n",
    )
    .unwrap();
    let err = import(store, &options(id, &twice, None, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("column \"email\" appears twice"), "{err}");
    assert_eq!(total(store, id).await, 0);
}

async fn column_names_match_case_insensitively_and_unknown_columns_become_attributes(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("columns.csv");
    std::fs::write(
        &file,
        " CUSTOMER_ID ,E-Mail Address,EMAIL,First_Name,Electronic_CONSENT,Country,Loan_Number,Data_Exposed\n\
         K1,ignored@example.com,K1@Example.ORG,Kay,Y,us,LN-1,\"Name, SSN\"\n\
         K2,,,Lee,N,,,\n",
    )
    .unwrap();
    let summary = run_import(store, id, &file, None).await;
    assert_eq!(summary.counts.accepted(), 2);
    let k1 = stored(store, id, "K1").await;
    assert_eq!(k1.email.as_deref(), Some("K1@example.org"));
    assert_eq!(k1.first_name.as_deref(), Some("Kay"));
    assert!(k1.electronic_consent, "Y is yes");
    assert_eq!(k1.channel, Channel::Email);
    assert_eq!(k1.country.as_deref(), Some("US"));
    let attributes: Vec<(&str, &str)> = k1
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let mut expected = vec![
        ("e-mail address", "ignored@example.com"),
        ("loan_number", "LN-1"),
        ("data_exposed", "Name, SSN"),
    ];
    expected.sort();
    let mut attributes = attributes;
    attributes.sort();
    assert_eq!(attributes, expected);
    let k2 = stored(store, id, "K2").await;
    assert_eq!(k2.email, None);
    assert_eq!(k2.channel, Channel::Postal);
    assert_eq!(
        k2.attributes["loan_number"], "",
        "an empty attribute is kept empty"
    );
}

async fn a_missing_file_is_a_clear_error(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let missing = Path::new("/nonexistent/affected-customers.csv");
    let err = import(store, &options(id, missing, None, false))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.starts_with("cannot open /nonexistent/affected-customers.csv for reading"),
        "{text}"
    );
    assert!(text.contains("No such file"), "{text}");
    assert!(store.imports(id).await.unwrap().is_empty());
    let err = import(store, &options(9_999, &fixture("hostile.csv"), None, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("campaign 9999 does not exist"), "{err}");
}

async fn a_latin1_file_is_rejected_row_by_row(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.csv");
    // Windows-1252, as a spreadsheet might save it: é is 0xE9, ñ is 0xF1.
    let mut bytes = b"customer_id,email,first_name,last_name,electronic_consent\r\n".to_vec();
    bytes.extend_from_slice(b"L1,rene@example.com,Ren\xE9,Dupont,yes\r\n");
    bytes.extend_from_slice(b"L2,ana@example.com,Ana,Pe\xF1a,yes\r\n");
    bytes.extend_from_slice(b"L3,plain@example.com,Plain,Ascii,yes\r\n");
    bytes.extend_from_slice(b"L4,j\xF6rg@example.com,Jorg,Xy,yes\r\n");
    std::fs::write(&file, &bytes).unwrap();
    let rejects = dir.path().join("rejects.csv");
    let summary = run_import(store, id, &file, Some(&rejects)).await;
    assert_eq!(
        summary.counts,
        ImportCounts {
            read: 4,
            rejected: 3,
            duplicates: 0,
            email: 1,
            postal: 0,
            unusable_email: 0,
        }
    );
    let (_, rows) = read_rejects(&rejects);
    let got: Vec<(u64, &str)> = rows.iter().map(|(l, r, _)| (*l, r.as_str())).collect();
    assert_eq!(
        got,
        [
            (2, "column first_name is not valid UTF-8"),
            (3, "column last_name is not valid UTF-8"),
            (5, "column email is not valid UTF-8"),
        ]
    );
    assert_eq!(rows[0].2[2], b"Ren\xE9", "the original bytes are kept");
    assert_eq!(stored(store, id, "L3").await.channel, Channel::Email);
}

async fn a_non_utf8_header_is_one_clear_error(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("header.csv");
    std::fs::write(&file, b"customer_id,pr\xE9nom\nC1,x\n").unwrap();
    let err = import(store, &options(id, &file, None, false))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "line 1 (header): column 2 is not valid UTF-8");
    assert_eq!(total(store, id).await, 0);
}

async fn a_bom_before_a_quoted_header_is_allowed(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quoted.csv");
    // What a spreadsheet's "CSV UTF-8" export with every field quoted looks like.
    std::fs::write(
        &file,
        b"\xEF\xBB\xBF\"customer_id\",\"email\",\"electronic_consent\"\r\n\"Q1\",\"q1@example.com\",\"yes\"\r\n",
    )
    .unwrap();
    let summary = run_import(store, id, &file, None).await;
    assert_eq!(summary.counts.email, 1);
    assert_eq!(
        stored(store, id, "Q1").await.email.as_deref(),
        Some("q1@example.com")
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        summary.sha256,
        hex::encode(Sha256::digest(&bytes)),
        "the checksum covers the BOM too"
    );
}

async fn line_numbers_count_blank_lines_and_crlf(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    for (name, eol) in [("lf.csv", "\n"), ("crlf.csv", "\r\n")] {
        let file = dir.path().join(name);
        let text = [
            "customer_id,email",   // 1
            "B1,b1@example.com",   // 2
            "",                    // 3
            "",                    // 4
            "B2,b2@example.com,x", // 5: rejected
            "B3,\"b3@example.com", // 6: a quoted line break ...
            "more\"",              // 7
            "B4,b4@example.com,y", // 8: rejected
            "",                    // 9
            "B5",                  // 10: rejected, last line, no line break
        ]
        .join(eol);
        std::fs::write(&file, text).unwrap();
        let rejects = dir.path().join(format!("{name}.rejects"));
        run_import(store, id, &file, Some(&rejects)).await;
        let lines: Vec<u64> = read_rejects(&rejects).1.iter().map(|r| r.0).collect();
        assert_eq!(lines, [5, 6, 8, 10], "{name}");
    }
}

async fn a_cancelled_campaign_takes_no_recipients(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    store
        .set_campaign_state(id, CampaignState::Cancelled, "test", Some("wrong list"))
        .await
        .unwrap();
    let err = import(store, &options(id, &fixture("hostile.csv"), None, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is cancelled: recipients can no longer be added"),
        "{err}"
    );
    assert_eq!(total(store, id).await, 0);
}

async fn an_interrupted_import_does_not_break_the_next_one(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    // An import that reserved its id and stored a batch, then was killed before recording itself.
    let killed = store.next_import_id().await.unwrap();
    let leftover = |customer: &str, channel| NewRecipient {
        customer_id: customer.into(),
        email: Some(format!("{customer}@example.com")),
        electronic_consent: channel == Channel::Email,
        channel,
        import_id: Some(killed),
        ..Default::default()
    };
    store
        .insert_recipients(
            id,
            &[
                leftover("K1", Channel::Email),
                leftover("K2", Channel::Email),
                leftover("K3", Channel::Postal),
            ],
        )
        .await
        .unwrap();
    assert!(store.imports(id).await.unwrap().is_empty());

    // The operator runs it again, now with the whole list.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("again.csv");
    std::fs::write(
        &file,
        "customer_id,email,electronic_consent\n\
         K1,K1@example.com,yes\n\
         K2,K2@example.com,yes\n\
         K3,K3@example.com,no\n\
         K4,K4@example.com,yes\n\
         K5,K5@example.com,no\n",
    )
    .unwrap();
    let summary = run_import(store, id, &file, None).await;
    assert_eq!(
        summary.counts,
        ImportCounts {
            read: 5,
            rejected: 0,
            duplicates: 3,
            email: 1,
            postal: 1,
            unusable_email: 0,
        }
    );
    let record = &store.imports(id).await.unwrap()[0];
    assert_eq!((record.counts.email, record.counts.postal), (1, 1));
    assert_eq!(record.counts.duplicates, 3);
    assert_eq!(total(store, id).await, 5);
}

/// The binary, as an operator runs it, on SQLite: the printed reconciliation line.
#[test]
fn import_through_the_cli_prints_the_reconciliation() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::sqlite_url(dir.path());
    let run = |args: &[&str]| -> Output {
        common::cli(dir.path(), &url)
            .args(args)
            .env("USER", "intake-tester")
            .env_remove("SUDO_USER")
            .output()
            .expect("run breach-notifier")
    };
    let ok = |o: &Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&run(&["migrate"]));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/campaign.toml");
    let id = ok(&run(&["campaign", "create", example.to_str().unwrap()]))
        .trim()
        .to_string();
    assert_eq!(id, "1");
    let source = fixture("hostile.csv");
    let rejects = dir.path().join("rejects.csv");
    let out = ok(&run(&[
        "import",
        "--campaign",
        &id,
        source.to_str().unwrap(),
        "--rejects",
        rejects.to_str().unwrap(),
    ]));
    assert!(
        out.lines().any(
            |l| l == "  read = accepted + rejected + duplicates: 28 = 14 + 13 + 1 (reconciled)"
        ),
        "{out}"
    );
    assert!(out.contains("import #1 into campaign 1 from"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("  rows read:") && l.ends_with(" 28")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "(each with its line and reason in {})",
            rejects.display()
        )),
        "{out}"
    );
    assert_eq!(read_rejects(&rejects).1.len(), 13);

    let again = ok(&run(&[
        "import",
        "--campaign",
        &id,
        source.to_str().unwrap(),
    ]));
    assert!(
        again.contains("this exact file was already imported (import #1): nothing new was added"),
        "{again}"
    );
    assert!(
        again.contains("read = accepted + rejected + duplicates: 28 = 0 + 13 + 15 (reconciled)"),
        "{again}"
    );

    let dry = ok(&run(&[
        "import",
        "--campaign",
        &id,
        "--dry-run",
        source.to_str().unwrap(),
    ]));
    assert!(dry.starts_with("dry run: nothing was stored\n"), "{dry}");

    // Standard input, as `-`.
    let mut child = {
        let mut cmd = common::cli(dir.path(), &url);
        cmd.args(["import", "--campaign", &id, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"customer_id,email,electronic_consent\nS1,s1@example.com,yes\nS2,bad,yes\nH001,x@example.com,yes\n")
            .unwrap();
    }
    let piped = ok(&child.wait_with_output().unwrap());
    assert!(piped.contains("from - (sha256 "), "{piped}");
    assert!(
        piped.contains("read = accepted + rejected + duplicates: 3 = 2 + 0 + 1 (reconciled)"),
        "{piped}"
    );

    let missing = run(&["import", "--campaign", &id, "/nonexistent/list.csv"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.starts_with("error: cannot open /nonexistent/list.csv for reading"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// An import leaves the planner statistics of what it loaded behind (PostgreSQL: an ANALYZE at its
/// end, instead of waiting minutes for autovacuum; claims must not depend on them, but every other
/// query is better for them) and the pre-flight's samples, one per locale and jurisdiction stored.
#[tokio::test]
async fn postgres_an_import_leaves_fresh_statistics_and_samples() {
    let t = common::postgres().await;
    let Store::Postgres(pg) = &t.store else {
        unreachable!()
    };
    sqlx::query("ALTER TABLE recipients SET (autovacuum_enabled = off)")
        .execute(pg.pool())
        .await
        .unwrap();
    let analyzed = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT last_analyze FROM pg_stat_user_tables \
             WHERE relname = 'recipients' AND schemaname = current_schema()",
        )
        .fetch_one(pg.pool())
        .await
        .unwrap()
    };
    assert_eq!(
        analyzed().await,
        None,
        "a new schema's table was never analysed"
    );
    let id = campaign(&t.store, false).await;
    let summary = run_import(&t.store, id, &fixture("hostile.csv"), None).await;
    assert!(summary.counts.accepted() > 0);
    assert!(
        analyzed().await.is_some(),
        "the import analysed what it loaded"
    );
    let pairs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT DISTINCT locale, jurisdiction FROM recipients \
         WHERE campaign_id = $1) AS p",
    )
    .bind(id)
    .fetch_one(pg.pool())
    .await
    .unwrap();
    let sample = t.store.sample_recipients(id, 1000).await.unwrap();
    assert_eq!(sample.len() as i64, pairs, "one sample per pair stored");
}

/// Jurisdiction codes are tallied per row accepted (dry run or not); a code the rules do not know is
/// counted as unknown and its rows are imported all the same.
async fn unknown_jurisdiction_codes_are_counted_and_imported(t: TestApp) {
    let store = &t.store;
    let id = campaign(store, false).await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("codes.csv");
    std::fs::write(
        &source,
        "customer_id,email,jurisdiction,electronic_consent\n\
         J1,j1@example.com,US-CA,yes\nJ2,j2@example.com,zz,yes\nJ3,j3@example.com,ZZ,yes\n\
         J4,j4@example.com,US-XX,yes\nJ5,j5@example.com,,yes\n",
    )
    .unwrap();
    let dry = import(store, &options(id, &source, None, true))
        .await
        .unwrap();
    let summary = run_import(store, id, &source, None).await;
    assert_eq!(
        dry.jurisdictions, summary.jurisdictions,
        "a dry run counts the same"
    );
    let tally = &summary.jurisdictions;
    assert_eq!(tally.missing, 1);
    assert_eq!(
        tally
            .per_code
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect::<Vec<_>>(),
        vec![("US-CA", 1), ("US-XX", 1), ("ZZ", 2)]
    );
    let rules = breach_notifier::rules::Rules::shipped().unwrap();
    let counts = rules.count_code_totals(
        tally.per_code.iter().map(|(c, n)| (c.as_str(), *n)),
        tally.missing,
    );
    assert_eq!(counts.known_total(), 1);
    assert_eq!(counts.unknown.get("ZZ"), Some(&2));
    assert_eq!(counts.unknown.get("US-XX"), Some(&1));
    assert_eq!(counts.missing, 1);
    // Never dropped: every row is in the campaign, unknown codes as imported.
    assert_eq!(total(store, id).await, 5);
    assert_eq!(
        stored(store, id, "J3").await.jurisdiction.as_deref(),
        Some("ZZ")
    );
}
