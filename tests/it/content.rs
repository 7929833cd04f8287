//! Content checks (docs/content-checks.md): the notice each jurisdiction's residents get, held against
//! the rules' content rules at `campaign create` and `campaign start`, and the `[by_jurisdiction]`
//! variant that Massachusetts residents really receive.
//!
//! - The example campaign passes California's headings and Massachusetts's forbidden content.
//! - A California notice with a heading missing or out of order, and a Massachusetts notice that
//!   gives the number affected, names the nature of the breach or uses a listed variable, are
//!   refused, naming the jurisdiction, the rule, its source, the template and its file.
//! - An override file adds a content rule for another jurisdiction; a hostile one is refused.
//! - Bad `[by_jurisdiction]` tables are refused with file, line and key.
//! - A real send: Massachusetts residents get the variant, others the general notice.

use crate::common;
use crate::common::{EmptyDb, TestApp};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use breach_notifier::campaign::CampaignSpec;
use breach_notifier::campaign::template::Templates;
use breach_notifier::cli::content::assess_new;
use breach_notifier::rules::Rules;
use breach_notifier::store::{CampaignState, Channel, NewRecipient, RecipientStatus, Store};
use common::smtp::{Script, SmtpServer};

backends!(
    empty:
    create_refuses_a_california_variant_missing_or_out_of_order,
    start_refuses_the_notice_of_a_jurisdiction_present_and_names_what_to_fix,
    create_refuses_a_massachusetts_variant_that_says_what_is_forbidden,
    an_override_file_adds_a_content_rule_for_another_jurisdiction,
);

backends!(massachusetts_residents_receive_their_variant_by_smtp,);

// ---------------------------------------------------------------------------------------------
// Helpers

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/campaign.toml")
}

const CAMPAIGN: &str = r#"name = "Content test"
discovered_at = 2026-01-15
default_locale = "en-US"

[sender]
from = "Privacy Office <privacy@example.org>"

[locales.en-US]
subject = "Notice of Data Breach"
text = "en.txt.j2"
html = "en.html.j2"
"#;

/// The general notice: California's title and headings in order.
const CA_TEXT: &str = "Dear {{ recipient.first_name }},\n\nNotice of Data Breach\n\nWhat Happened\n\
    Someone got in.\n\nWhat Information Was Involved\nNames.\n\nWhat We Are Doing\nFixing it.\n\n\
    What You Can Do\nWatch.\n\nFor More Information\nCall us.\n";

fn html_of(text: &str) -> String {
    text.lines()
        .map(|l| format!("<p>{l}</p>\n"))
        .collect::<String>()
}

/// A campaign directory: `campaign.toml` made of `CAMPAIGN` and `extra`, and `files` (path, text).
fn campaign_dir(dir: &Path, name: &str, extra: &str, files: &[(&str, &str)]) -> PathBuf {
    let sub = dir.join(name);
    for (file, text) in files {
        let path = sub.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let path = sub.join("campaign.toml");
    std::fs::write(&path, format!("{CAMPAIGN}{extra}")).unwrap();
    path
}

/// A variant table for `code` in en-US, from `dir/en.txt.j2` and `dir/en.html.j2`.
fn variant(code: &str, dir: &str) -> String {
    format!(
        "\n[by_jurisdiction.{code}.en-US]\nsubject = \"Notice of Data Breach\"\ntext = \"{dir}/en.txt.j2\"\nhtml = \"{dir}/en.html.j2\"\n"
    )
}

struct Cli<'a> {
    dir: &'a Path,
    url: &'a str,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        common::cli(self.dir, self.url)
            .args(args)
            .output()
            .expect("run breach-notifier")
    }

    /// Standard error of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?} failed: {err}");
        err
    }

    /// A failure in one `error:` line holding every expected piece.
    fn fails(&self, args: &[&str], expected: &[&str]) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "{args:?} succeeded: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{args:?}: one error line: {err}"
        );
        for piece in expected {
            assert!(err.contains(piece), "{args:?}: {piece:?} expected in {err}");
        }
        err
    }

    async fn store(&self) -> Store {
        Store::open(&common::settings(self.url), None)
            .await
            .unwrap()
    }
}

fn write_csv(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const CA_SOURCE: &str = "CA_STAT: Cal. Civ. Code 1798.82 (current text incl. SB 446) — https://lexace.ai/us/statute/california/civ-1798.82";
const MA_SOURCE: &str = "MA_STAT: M.G.L. c. 93H ss. 1, 3, 3A";

// ---------------------------------------------------------------------------------------------
// Without a database

#[test]
fn the_example_notices_pass_california_and_massachusetts() {
    let spec = CampaignSpec::load(&example()).unwrap();
    assert_eq!(
        spec.by_jurisdiction.keys().collect::<Vec<_>>(),
        ["US-MA"],
        "the example declares a Massachusetts notice"
    );
    let a = assess_new(&spec, &Rules::shipped().unwrap()).unwrap();
    assert!(a.refused.is_empty(), "{:?}", a.refused);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    for code in ["US-CA", "US-IL", "US-MA (its own notice)"] {
        assert!(a.passed.iter().any(|p| p == code), "{code}: {:?}", a.passed);
    }
    // The Massachusetts variant is what a US-MA recipient renders, in both locales, whatever the
    // code's case; everyone else gets the general notice.
    let templates = Templates::new(&spec).unwrap();
    for (code, variant) in [
        (Some("US-MA"), Some("US-MA")),
        (Some("us-ma "), Some("US-MA")),
        (Some("US-CA"), None),
        (None, None),
    ] {
        assert_eq!(templates.variant_for(code), variant, "{code:?}");
    }
    for locale in ["en-US", "es-US"] {
        let ma = templates.render_sample(locale, Some("US-MA")).unwrap();
        let ca = templates.render_sample(locale, Some("US-CA")).unwrap();
        assert!(!ma.text.contains("What Happened"), "{locale}: {}", ma.text);
        assert!(ca.text.contains("What Happened"), "{locale}: {}", ca.text);
    }
}

#[test]
fn bad_variant_tables_are_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let files: &[(&str, &str)] = &[
        ("en.txt.j2", CA_TEXT),
        ("en.html.j2", "<p>x</p>"),
        ("ma/en.txt.j2", "Dear {{ recipient.first_name }},\n"),
        ("ma/en.html.j2", "<p>x</p>"),
    ];
    let cases = [
        (
            "lower",
            variant("us-ma", "ma"),
            "line 13: by_jurisdiction.us-ma: a jurisdiction code is upper-case letters",
        ),
        (
            "extra",
            variant("US-MA", "ma").replace("US-MA.en-US", "US-MA.fr-FR"),
            "line 13: by_jurisdiction.US-MA.fr-FR: the campaign has no [locales.fr-FR]",
        ),
        (
            "unreadable",
            variant("US-MA", "nowhere"),
            "line 15: by_jurisdiction.US-MA.en-US.text: the template",
        ),
        (
            "subject",
            variant("US-MA", "ma").replace(
                "subject = \"Notice of Data Breach\"",
                "subject = \"a\\nBcc: x@example.org\"",
            ),
            "line 14: by_jurisdiction.US-MA.en-US.subject contains a line break",
        ),
    ];
    for (name, extra, expected) in cases {
        let path = campaign_dir(dir.path(), name, &extra, files);
        let err = CampaignSpec::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&path.display().to_string()),
            "{name}: {err}"
        );
        assert!(
            err.contains(expected),
            "{name}: {expected:?} expected in {err}"
        );
    }
    // A variant without one of the campaign's locales.
    let extra = format!(
        "{}\n[locales.es-US]\nsubject = \"Aviso\"\ntext = \"en.txt.j2\"\nhtml = \"en.html.j2\"\n",
        variant("US-MA", "ma")
    );
    let path = campaign_dir(dir.path(), "partial", &extra, files);
    let err = CampaignSpec::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("line 13: by_jurisdiction.US-MA has no es-US notice"),
        "{err}"
    );
    // A template error in a variant names the variant's file.
    let broken: &[(&str, &str)] = &[
        ("en.txt.j2", CA_TEXT),
        ("en.html.j2", "<p>x</p>"),
        ("ma/en.txt.j2", "Dear {{ recipient.first_name \n"),
        ("ma/en.html.j2", "<p>x</p>"),
    ];
    let path = campaign_dir(dir.path(), "syntax", &variant("US-MA", "ma"), broken);
    let err = CampaignSpec::load(&path).unwrap_err().to_string();
    assert!(err.contains("ma/en.txt.j2"), "{err}");
    assert!(err.contains("template US-MA/en-US/text line "), "{err}");
}

#[test]
fn rules_show_says_what_is_checked_in_notices() {
    let dir = tempfile::tempdir().unwrap();
    let show = |code: &str| {
        let o = common::command(dir.path())
            .args(["rules", "show", code])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let ma = show("US-MA");
    assert!(
        ma.contains("checked in notices: not \"nature of the breach of security or unauthorized acquisition or use\" (9 variables,")
            && ma.contains("not \"number of Massachusetts residents affected\"")
            && ma.contains("cited: MA_STAT"),
        "{ma}"
    );
    let ca = show("US-CA");
    assert!(
        ca.contains(
            "checked in notices: the required headings, in order; cited: CA_STAT, CA_LEX2015"
        ),
        "{ca}"
    );
    assert!(!show("US-TX").contains("checked in notices"));
}

// ---------------------------------------------------------------------------------------------
// Through the binary

async fn create_refuses_a_california_variant_missing_or_out_of_order(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    let missing = CA_TEXT.replace("What We Are Doing\n", "");
    let swapped = CA_TEXT
        .replace("What Happened", "@@")
        .replace("What Information Was Involved", "What Happened")
        .replace("@@", "What Information Was Involved");
    let cases = [
        (
            "missing",
            missing.as_str(),
            "the heading \"What We Are Doing\" is missing",
        ),
        (
            "swapped",
            swapped.as_str(),
            "the heading \"What Information Was Involved\" comes before \"What Happened\"",
        ),
    ];
    for (name, text, problem) in cases {
        let html = html_of(text);
        let file = campaign_dir(
            dir.path(),
            name,
            &variant("US-CA", "ca"),
            &[
                ("en.txt.j2", CA_TEXT),
                ("en.html.j2", &html_of(CA_TEXT)),
                ("ca/en.txt.j2", text),
                ("ca/en.html.j2", &html),
            ],
        );
        cli.fails(
            &["campaign", "create", file.to_str().unwrap()],
            &[
                &file.display().to_string(),
                "US-CA (California)",
                "rule content.required_headings",
                "\"Notice of Data Breach / What Happened / What Information Was Involved",
                CA_SOURCE,
                "CA_LEX2015",
                "template US-CA/en-US/text (ca/en.txt.j2)",
                "template US-CA/en-US/html (ca/en.html.j2)",
                problem,
            ],
        );
    }
    let store = cli.store().await;
    assert!(
        store.campaigns().await.unwrap().is_empty(),
        "nothing stored"
    );
    store.close().await;
}

async fn start_refuses_the_notice_of_a_jurisdiction_present_and_names_what_to_fix(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    // The general notice lacks California's order: a note at create (the campaign may have no
    // Californian), a refusal at start once Californians are imported.
    let text = CA_TEXT.replace("\nNotice of Data Breach\n", "\n").replace(
        "For More Information\nCall us.\n",
        "For More Information\nCall us.\nNotice of Data Breach\n",
    );
    let file = campaign_dir(
        dir.path(),
        "general",
        "",
        &[("en.txt.j2", &text), ("en.html.j2", &html_of(&text))],
    );
    for id in ["1", "2"] {
        let o = cli.run(&["campaign", "create", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{id}\n"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(
                "note: `campaign start` will refuse this campaign if it has residents of US-CA"
            ),
            "{err}"
        );
    }
    let people = write_csv(
        dir.path(),
        "ca.csv",
        "customer_id,email,first_name,jurisdiction,electronic_consent\nA1,a1@example.com,Ada,US-TX,yes\nA2,a2@example.com,Al,US-CA,yes\n",
    );
    cli.ok(&["import", "--campaign", "1", &people]);
    cli.fails(
        &["campaign", "start", "1"],
        &[
            "campaign 1 cannot start: the notice fails the content rules of US-CA",
            "US-CA (California): rule content.required_headings",
            CA_SOURCE,
            "template en-US/text (en.txt.j2)",
            "template en-US/html (en.html.j2)",
            "the heading \"What Happened\" comes before \"Notice of Data Breach\"",
        ],
    );
    let store = cli.store().await;
    assert_eq!(
        store.require_campaign(1).await.unwrap().state,
        CampaignState::Draft,
        "refused: still a draft"
    );
    // Without Californians the same notice starts.
    let texans = write_csv(
        dir.path(),
        "tx.csv",
        "customer_id,email,first_name,jurisdiction,electronic_consent\nT1,t1@example.com,Tex,US-TX,yes\n",
    );
    cli.ok(&["import", "--campaign", "2", &texans]);
    cli.ok(&["campaign", "start", "2"]);
    assert_eq!(
        store.require_campaign(2).await.unwrap().state,
        CampaignState::Running
    );
    // The example starts with Californians, Illinoisans and Massachusetts residents.
    cli.ok(&["campaign", "create", example().to_str().unwrap()]);
    let mixed = write_csv(
        dir.path(),
        "mixed.csv",
        "customer_id,email,first_name,locale,jurisdiction,electronic_consent\n\
         M1,m1@example.com,Mo,en-US,US-CA,yes\nM2,m2@example.com,Ma,es-US,US-MA,yes\n\
         M3,m3@example.com,Mi,en-US,US-IL,yes\nM4,m4@example.com,Mu,es-US,US-CA,yes\n",
    );
    cli.ok(&["import", "--campaign", "3", &mixed]);
    let err = cli.ok(&["campaign", "start", "3"]);
    assert!(
        err.contains("content checks: 3 jurisdiction(s) with content rules passed"),
        "{err}"
    );
    store.close().await;
}

async fn create_refuses_a_massachusetts_variant_that_says_what_is_forbidden(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    cli.ok(&["migrate"]);
    let ma_ok = "Dear {{ recipient.first_name }},\n\nWe offer 24 months of credit monitoring. Call 1-800-555-0100.\n";
    let number_rule =
        "rule content.forbidden_check[1] \"number of Massachusetts residents affected\"";
    let nature_rule = "rule content.forbidden_check[0] \"nature of the breach of security or unauthorized acquisition or use\"";
    let cases = [
        (
            "count",
            format!("{ma_ok}The incident involved 1,204 Massachusetts residents.\n"),
            vec![
                number_rule,
                "template US-MA/en-US/text (ma/en.txt.j2)",
                "it says \"massachusetts residents\"",
            ],
        ),
        (
            "figure",
            format!("{ma_ok}It affected thousands of our customers.\n"),
            vec![number_rule, "it puts a number before \"customers\""],
        ),
        (
            "variable",
            format!("{ma_ok}{{{{ recipient.attributes.affected_count }}}} people were told.\n"),
            vec![number_rule, "line 4 uses the variable `affected_count`"],
        ),
        (
            "nature",
            format!("{ma_ok}What Happened\nA ransomware attack encrypted our servers.\n"),
            vec![nature_rule, "it says \"what happened\""],
        ),
    ];
    for (name, text, expected) in cases {
        let file = campaign_dir(
            dir.path(),
            name,
            &variant("US-MA", "ma"),
            &[
                ("en.txt.j2", CA_TEXT),
                ("en.html.j2", &html_of(CA_TEXT)),
                ("ma/en.txt.j2", &text),
                ("ma/en.html.j2", &html_of(ma_ok)),
            ],
        );
        let mut pieces = vec![
            "the notice fails the content rules of US-MA",
            "US-MA (Massachusetts)",
            MA_SOURCE,
        ];
        pieces.extend(expected);
        cli.fails(&["campaign", "create", file.to_str().unwrap()], &pieces);
    }
    // The same variant without the figure is accepted, and says so.
    let file = campaign_dir(
        dir.path(),
        "clean",
        &variant("US-MA", "ma"),
        &[
            ("en.txt.j2", CA_TEXT),
            ("en.html.j2", &html_of(CA_TEXT)),
            ("ma/en.txt.j2", ma_ok),
            ("ma/en.html.j2", &html_of(ma_ok)),
        ],
    );
    let err = cli.ok(&["campaign", "create", file.to_str().unwrap()]);
    assert!(
        err.contains("content checks passed for: US-MA (its own notice), US-CA, US-IL"),
        "{err}"
    );
}

async fn an_override_file_adds_a_content_rule_for_another_jurisdiction(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        dir: dir.path(),
        url: &db.url,
    };
    // Counsel's own jurisdiction code and rule.
    let entry = "[[jurisdiction]]\ncode = \"US-ZZ\"\nname = \"Zedland\"\napplies_by = \"residence\"\n\
        verified_on = \"2026-01-02\"\nsources_as_of = \"2026\"\nconfidence = \"high\"\n\
        [jurisdiction.individual]\ntext = \"soon\"\n\
        [jurisdiction.credit_bureaus]\ntext = \"none\"\n\
        [jurisdiction.email]\ncounts = \"yes\"\ncondition = \"any\"\n\
        [jurisdiction.substitute]\ntext = \"none\"\n\
        [jurisdiction.content]\nforbidden = [\"the monitoring offer\"]\nsources = [\"ZZ_MEMO\"]\n\
        [[jurisdiction.content.forbidden_check]]\nrule = \"the monitoring offer\"\nphrases = [\"credit monitoring\"]\n\
        [[jurisdiction.source]]\nkey = \"ZZ_MEMO\"\ncitation = \"Counsel memo 2026-01 — https://counsel.example/zz\"\nas_of = \"2026-01-02\"\n";
    std::fs::write(dir.path().join("counsel.toml"), entry).unwrap();
    std::fs::write(
        dir.path().join("site.toml"),
        "[rules]\nfile = \"counsel.toml\"\n",
    )
    .unwrap();
    let with = |args: &[&str]| {
        let mut all = vec!["--config", "site.toml"];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = with(&["migrate"]);
    cli.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let args = with(&["campaign", "create", example().to_str().unwrap()]);
    let err = cli.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("refuse this campaign if it has residents of US-ZZ"),
        "{err}"
    );
    let people = write_csv(
        dir.path(),
        "zz.csv",
        "customer_id,email,first_name,jurisdiction,electronic_consent\nZ1,z1@example.com,Zed,US-ZZ,yes\n",
    );
    let args = with(&["import", "--campaign", "1", &people]);
    cli.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let args = with(&["campaign", "start", "1"]);
    cli.fails(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            "US-ZZ (Zedland): rule content.forbidden_check[0] \"the monitoring offer\"",
            "source ZZ_MEMO: Counsel memo 2026-01 — https://counsel.example/zz",
            "template en-US/text (templates/en-US.txt.j2)",
            "it says \"credit monitoring\"",
        ],
    );
    // Without the override the shipped rules do not know US-ZZ: it starts.
    cli.ok(&["campaign", "start", "1"]);

    // Hostile: a check for an item the entry does not forbid, a source it does not have.
    for (from, to, expected) in [
        (
            "rule = \"the monitoring offer\"",
            "rule = \"something else\"",
            "key `content.forbidden_check[0].rule`: \"something else\" is not one of this entry's `content.forbidden` items",
        ),
        (
            "sources = [\"ZZ_MEMO\"]",
            "sources = [\"NOPE\"]",
            "key `content.sources`: \"NOPE\" is not the key of a [[jurisdiction.source]]",
        ),
        (
            "phrases = [\"credit monitoring\"]",
            "phrases = []",
            "nothing to check: give `variables`, `phrases` or `counted_nouns`",
        ),
    ] {
        std::fs::write(dir.path().join("counsel.toml"), entry.replace(from, to)).unwrap();
        let args = with(&["rules", "show", "US-ZZ"]);
        cli.fails(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[
                "rules file counsel.toml: line ",
                "jurisdiction US-ZZ",
                expected,
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A real send

async fn massachusetts_residents_receive_their_variant_by_smtp(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let spec = CampaignSpec::load(&example()).unwrap();
    let person = |customer: &str, jurisdiction: &str| NewRecipient {
        customer_id: customer.into(),
        email: Some(format!("{}@example.com", customer.to_lowercase())),
        first_name: Some("Pat".into()),
        last_name: Some("Doe".into()),
        locale: Some("en-US".into()),
        jurisdiction: Some(jurisdiction.into()),
        electronic_consent: true,
        channel: Channel::Email,
        ..Default::default()
    };
    let rows = [
        person("MA1", "US-MA"),
        person("CA1", "US-CA"),
        person("MA2", "US-MA"),
        person("TX1", "US-TX"),
    ];
    let id = t.campaign(&spec).with(&rows).started().await;
    t.run_until_idle(&t.settings(&smtp), Duration::from_secs(60))
        .await;
    let received = smtp.received();
    assert_eq!(received.len(), 4);
    for r in &rows {
        let stored = t
            .store
            .recipient_by_customer(id, &r.customer_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, RecipientStatus::Sent);
        let message = received
            .iter()
            .find(|m| m.rcpt_to == [r.email.clone().unwrap()])
            .unwrap();
        // English notices are 7-bit: the parts are in the raw message as written.
        let raw = String::from_utf8_lossy(&message.data);
        let ma = r.jurisdiction.as_deref() == Some("US-MA");
        for (marker, in_ma) in [
            ("Your Rights Under Massachusetts Law", true),
            ("right to obtain a police report", true),
            ("What Happened", false),
            ("unauthorized access", false),
            ("What Information Was Involved", false),
        ] {
            assert_eq!(
                raw.matches(marker).count(),
                if ma == in_ma { 2 } else { 0 },
                "{} {marker:?} in the text and HTML parts: {raw}",
                r.customer_id
            );
        }
    }
}
