//! Fuzzes CSV intake (`intake::parse_csv`) on arbitrary bytes: it must never panic, and whatever it
//! makes of the input must account for every row. The properties checked are the ones a regulator
//! would ask about: every data row is accepted or rejected (never lost), accepted rows carry no control
//! characters and only addresses the mailer itself accepts, and each rejected row is in the rejects
//! file with a plausible line number and its reason.
#![no_main]

use breach_notifier::intake::{normalize_email, parse_csv};
use breach_notifier::store::Channel;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the campaign's consent rule; the rest is the file.
    let Some((&flag, file)) = data.split_first() else {
        return;
    };
    let email_without_consent = flag & 1 == 1;
    let mut rejects = Vec::new();
    let mut rows = Vec::new();
    let result = parse_csv(
        file,
        Some(&mut rejects),
        email_without_consent,
        Some(7),
        |batch| {
            rows.extend(batch);
            true
        },
    );
    let totals = match result {
        // A whole-file error (no header, no customer_id column, unreadable structure) says what.
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
        Ok(None) => unreachable!("on_batch never stops the parser here"),
        Ok(Some(t)) => t,
    };
    assert_eq!(
        totals.read,
        totals.accepted + totals.rejected,
        "a row was lost"
    );
    assert_eq!(rows.len() as u64, totals.accepted);
    assert_eq!(totals.sha256, hex::encode(Sha256::digest(file)));
    assert!(totals.unusable_email <= totals.accepted);

    for row in &rows {
        assert!(!row.customer_id.is_empty());
        assert_eq!(row.import_id, Some(7));
        let fields = [
            Some(&row.customer_id),
            row.email.as_ref(),
            row.first_name.as_ref(),
            row.last_name.as_ref(),
            row.locale.as_ref(),
            row.jurisdiction.as_ref(),
            row.address1.as_ref(),
            row.address2.as_ref(),
            row.city.as_ref(),
            row.region.as_ref(),
            row.postal_code.as_ref(),
            row.country.as_ref(),
        ];
        for f in fields.into_iter().flatten() {
            assert!(
                !f.chars().any(char::is_control),
                "an accepted field holds a control character"
            );
            assert_eq!(f.trim(), f, "accepted fields are trimmed");
        }
        for v in row.attributes.values() {
            let s = v.as_str().expect("attributes are strings");
            assert!(!s.chars().any(char::is_control));
        }
        if let Some(email) = &row.email {
            // Stored addresses are exactly what the mailer accepts, and normalising is idempotent.
            assert_eq!(normalize_email(email).as_deref(), Some(email.as_str()));
            assert!(email.parse::<lettre::Address>().is_ok());
        }
        if row.channel == Channel::Email {
            assert!(row.email.is_some(), "email channel without an address");
            assert!(row.electronic_consent || email_without_consent);
        }
    }

    // The rejects file reads back: a header, then one record per rejected row, in file order.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(rejects.as_slice());
    let header = reader.byte_headers().expect("rejects header").clone();
    assert_eq!(&header[0], b"line");
    assert_eq!(&header[1], b"reason");
    let mut count = 0u64;
    let mut last_line = 1u64;
    for record in reader.byte_records() {
        let record = record.expect("the rejects file is valid CSV");
        let line: u64 = std::str::from_utf8(&record[0])
            .expect("line is text")
            .parse()
            .expect("line is a number");
        // The header is on line 1 or later, and each record starts on a line of its own.
        assert!(
            line > last_line,
            "rejects are in file order, below the header"
        );
        assert!(!record[1].is_empty(), "every reject has a reason");
        last_line = line;
        count += 1;
    }
    assert_eq!(
        count, totals.rejected,
        "a rejected row is missing from the rejects file"
    );
});
