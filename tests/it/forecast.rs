//! The deadline forecast (docs/deadlines.md) on PostgreSQL and SQLite alike: a campaign with a known
//! rate and daily cap whose earliest jurisdiction is projected late, then on time once the cap is
//! raised, as `status` shows it; a change of the late set recorded once as a campaign event, and by
//! the daemon with its metrics; and `campaign start` refusing a late plan unless `--accept-late`
//! gives a reason, which it records.

use crate::common;

use std::path::Path;

use breach_notifier::campaign::forecast::{Limits, of_campaign};
use breach_notifier::campaign::{CampaignSpec, RateSpec};
use breach_notifier::config::RulesSettings;
use breach_notifier::dispatch::RunMode;
use breach_notifier::store::NewRecipient;
use breach_notifier::store::forecast::forecast_reason;
use chrono::{Days, NaiveDate, Utc};
use common::smtp::{Script, SmtpServer};
use common::{EmptyDb, TestApp};
use std::time::Duration;

backends!(
    late_at_the_cap_then_on_time_when_it_is_raised,
    a_change_of_the_late_set_is_recorded_once,
    the_daemon_exports_and_records_a_late_forecast,
    status_shows_progress_when_no_forecast_can_be_made,
);
backends!(empty: start_refuses_a_late_plan_unless_accepted_and_records_why);

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn resident(i: usize, code: &str) -> NewRecipient {
    let mut r = common::person(i, "example.com");
    r.jurisdiction = Some(code.into());
    r
}

/// California's 30 days end three days from now; Texas's 60 a month later.
fn spec(daily_cap: u64) -> CampaignSpec {
    let mut spec = common::spec(None, "x");
    spec.discovered_at = today().checked_sub_days(Days::new(27));
    spec.rate = RateSpec {
        per_second: Some(100.0),
        burst: None,
        daily_cap: Some(daily_cap),
    };
    spec
}

async fn late_at_the_cap_then_on_time_when_it_is_raised(app: TestApp) {
    // 25 in California, 5 in Texas, five a day: California's last goes out in four days, one late.
    let people: Vec<NewRecipient> = (1..=30)
        .map(|i| resident(i, if i <= 25 { "US-CA" } else { "US-TX" }))
        .collect();
    let id = app.campaign(&spec(5)).with(&people).await;
    let campaign = app.store.require_campaign(id).await.unwrap();
    breach_notifier::cli::deadlines::refresh(&app.store, &RulesSettings::default(), &campaign)
        .await
        .unwrap();
    let f = of_campaign(&app.store, &campaign, Limits::default(), Utc::now())
        .await
        .unwrap();
    let late: Vec<_> = f
        .late()
        .iter()
        .map(|p| (p.jurisdiction.clone().unwrap(), p.days_late.unwrap()))
        .collect();
    assert_eq!(late, [("US-CA".to_string(), 1)]);
    assert_eq!(f.fix.as_ref().unwrap().daily_cap, Some(7));
    let (status, forecast) = breach_notifier::cli::status::collect_with_forecast(
        &app.store,
        Some(id),
        Limits::default(),
    )
    .await
    .unwrap();
    let text = breach_notifier::cli::status::render_with(&status, forecast.as_ref());
    assert!(
        text.contains("LATE: projected late: US-CA 1 day late"),
        "{text}"
    );
    assert!(text.contains("a daily cap of at least 7 (now 5)"), "{text}");
    let ca = &status[0].jurisdictions[0];
    assert_eq!(ca.jurisdiction.as_deref(), Some("US-CA"), "late first");
    assert_eq!(
        ca.projected_completion,
        today().checked_add_days(Days::new(4))
    );
    assert!(ca.late());

    // The cap the forecast asked for: on time.
    app.sql(&format!(
        "UPDATE campaigns SET definition = '{}' WHERE id = {id}",
        spec(7).to_stored().replace('\'', "''")
    ))
    .await;
    let campaign = app.store.require_campaign(id).await.unwrap();
    let f = of_campaign(&app.store, &campaign, Limits::default(), Utc::now())
        .await
        .unwrap();
    assert!(f.late().is_empty(), "{:?}", f.summary());
    assert_eq!(
        f.projections[0].completion,
        today().checked_add_days(Days::new(3))
    );
}

async fn a_change_of_the_late_set_is_recorded_once(app: TestApp) {
    let id = app.campaign(&spec(5)).started().await;
    let events = || async {
        app.store
            .campaign_events(id)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| e.reason.filter(|r| r.starts_with("forecast:")))
            .collect::<Vec<_>>()
    };
    let ca = vec!["US-CA".to_string()];
    let record = |late: Vec<String>| {
        let store = &app.store;
        async move {
            let reason = forecast_reason(&late, "words");
            store
                .record_forecast_change(id, &late, &reason, "daemon:test", Utc::now())
                .await
                .unwrap()
        }
    };
    assert!(
        !record(vec![]).await,
        "on time from the start: nothing to say"
    );
    assert!(record(ca.clone()).await);
    assert!(!record(ca.clone()).await, "the same set again");
    assert!(record(vec!["US-CA".into(), "US-NY".into()]).await);
    assert!(record(vec![]).await, "back on time");
    assert_eq!(
        events().await,
        [
            "forecast: late [US-CA]: words",
            "forecast: late [US-CA US-NY]: words",
            "forecast: late []: words"
        ]
    );
}

fn cli_run(dir: &Path, url: &str, args: &[&str]) -> std::process::Output {
    common::cli(dir, url)
        .args(args)
        .env_remove("SUDO_USER")
        .env("USER", "tester")
        .output()
        .unwrap()
}

async fn start_refuses_a_late_plan_unless_accepted_and_records_why(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let (d, url) = (dir.path(), db.url.as_str());
    let discovered = today().checked_sub_days(Days::new(27)).unwrap();
    std::fs::write(
        d.join("campaign.toml"),
        format!(
            "name = \"Late plan\"\ndiscovered_at = {discovered}\ndefault_locale = \"en-US\"\n\n\
             [sender]\nfrom = \"notices@example.com\"\n\n\
             [locales.en-US]\nsubject = \"Notice\"\ntext = \"n.txt\"\nhtml = \"n.html\"\n\n\
             [rate]\nper_second = 100\ndaily_cap = 5\n"
        ),
    )
    .unwrap();
    // California's title and headings, so that the content check passes and the forecast decides.
    let headings = [
        "What Happened",
        "What Information Was Involved",
        "What We Are Doing",
        "What You Can Do",
        "For More Information",
    ];
    let text: String = headings.iter().map(|h| format!("{h}\n.\n")).collect();
    let html: String = headings
        .iter()
        .map(|h| format!("<h2>{h}</h2>\n<p>.</p>\n"))
        .collect();
    std::fs::write(d.join("n.txt"), format!("Notice of Data Breach\n{text}")).unwrap();
    std::fs::write(
        d.join("n.html"),
        format!("<h1>Notice of Data Breach</h1>\n{html}"),
    )
    .unwrap();
    let mut csv = "customer_id,email,jurisdiction,electronic_consent\n".to_string();
    for i in 1..=30 {
        let code = if i <= 25 { "US-CA" } else { "US-TX" };
        csv.push_str(&format!("C{i},c{i}@example.com,{code},yes\n"));
    }
    std::fs::write(d.join("people.csv"), csv).unwrap();
    let file = d.join("campaign.toml");
    let people = d.join("people.csv");
    for args in [
        &["migrate"][..],
        &["campaign", "create", file.to_str().unwrap()],
        &["import", "--campaign", "1", people.to_str().unwrap()],
    ] {
        let o = cli_run(d, url, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    let refused = cli_run(d, url, &["campaign", "start", "1"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("cannot meet every deadline"), "{err}");
    assert!(err.contains("US-CA 1 day late"), "{err}");
    assert!(err.contains("a daily cap of at least 7 (now 5)"), "{err}");
    assert!(err.contains("--accept-late"), "{err}");
    let show = String::from_utf8(cli_run(d, url, &["campaign", "show", "1"]).stdout).unwrap();
    assert!(show.contains("state: draft"), "{show}");

    let accepted = cli_run(
        d,
        url,
        &[
            "campaign",
            "start",
            "1",
            "--accept-late",
            "counsel approved the delay",
        ],
    );
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let show = String::from_utf8(cli_run(d, url, &["campaign", "show", "1"]).stdout).unwrap();
    let start = show
        .lines()
        .find(|l| l.contains("draft -> running"))
        .unwrap_or_else(|| panic!("{show}"));
    assert!(start.contains("by cli:tester"), "{start}");
    assert!(
        start.contains(
            "accepted late: counsel approved the delay (projected late: US-CA 1 day late"
        ),
        "{start}"
    );
}

async fn the_daemon_exports_and_records_a_late_forecast(app: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let people: Vec<NewRecipient> = (1..=30)
        .map(|i| resident(i, if i <= 25 { "US-CA" } else { "US-TX" }))
        .collect();
    let id = app.campaign(&spec(5)).with(&people).started().await;
    let campaign = app.store.require_campaign(id).await.unwrap();
    breach_notifier::cli::deadlines::refresh(&app.store, &RulesSettings::default(), &campaign)
        .await
        .unwrap();
    let r = app.spawn_daemon(&app.settings(&smtp), RunMode::Forever);
    let recorded = common::wait_until(Duration::from_secs(20), || async {
        app.store
            .campaign_events(id)
            .await
            .unwrap()
            .iter()
            .any(|e| {
                e.reason.as_deref().is_some_and(|r| {
                    r.starts_with("forecast: late [US-CA]: projected late: US-CA 1 day late")
                })
            })
    })
    .await;
    assert!(
        recorded,
        "{:?}",
        app.store.campaign_events(id).await.unwrap()
    );
    let text = r.metrics.render();
    assert!(
        text.contains(&format!(
            "breach_notifier_jurisdictions_projected_late{{campaign=\"{id}\"}} 1\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "breach_notifier_jurisdiction_days_late{{campaign=\"{id}\",jurisdiction=\"US-CA\"}} 1\n"
    )));
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
    // The daily cap held the daemon to five, and the late set was recorded once.
    assert_eq!(app.progress(id).await.sent, 5);
    let forecasts = app
        .store
        .campaign_events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("forecast:"))
        })
        .count();
    assert_eq!(forecasts, 1);
}

async fn status_shows_progress_when_no_forecast_can_be_made(app: TestApp) {
    // A definition that does not read back as a campaign (written with SQL): no forecast, but status.
    let id = app
        .campaign(&spec(5))
        .definition("not a stored spec")
        .with(&[resident(1, "US-CA")])
        .await;
    let (status, forecast) = breach_notifier::cli::status::collect_with_forecast(
        &app.store,
        Some(id),
        Limits::default(),
    )
    .await
    .unwrap();
    assert!(forecast.is_none());
    assert_eq!(status[0].jurisdictions.len(), 1);
}
