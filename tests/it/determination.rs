//! The campaign's determination date (`determined_at`, docs/campaigns.md): stored on the campaign on
//! both backends, and the start of the clocks the rules start at determination (Texas: 60 days after
//! determining the breach), while clocks from discovery (California: 30 days) stay where they were.

use crate::common;

use breach_notifier::config::RulesSettings;
use breach_notifier::store::NewRecipient;
use chrono::{Days, NaiveDate};
use common::TestApp;

backends!(determination_starts_the_clocks_that_start_at_determination);

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn resident(i: usize, jurisdiction: &str) -> NewRecipient {
    let mut r = common::person(i, "example.com");
    r.jurisdiction = Some(jurisdiction.into());
    r
}

async fn deadlines(app: &TestApp, id: i64) -> Vec<(Option<String>, Option<NaiveDate>)> {
    let campaign = app.store.require_campaign(id).await.unwrap();
    breach_notifier::cli::deadlines::refresh(&app.store, &RulesSettings::default(), &campaign)
        .await
        .unwrap();
    let rows = app.store.jurisdiction_progress(id).await.unwrap();
    rows.into_iter()
        .map(|r| (r.jurisdiction, r.deadline))
        .collect()
}

async fn determination_starts_the_clocks_that_start_at_determination(app: TestApp) {
    let people = [resident(1, "US-CA"), resident(2, "US-TX")];
    let mut spec = common::spec(None, "x");
    spec.discovered_at = Some(day("2026-03-01"));
    spec.determined_at = Some(day("2026-03-11"));
    let id = app.campaign(&spec).with(&people).await;
    let stored = app.store.require_campaign(id).await.unwrap();
    assert_eq!(stored.determined_at, Some(day("2026-03-11")));
    assert_eq!(
        deadlines(&app, id).await,
        vec![
            // 30 days from discovery.
            (Some("US-CA".into()), Some(day("2026-03-31"))),
            // 60 days from determination, ten days after discovery.
            (Some("US-TX".into()), Some(day("2026-05-10"))),
        ]
    );

    // Without a determination date the same clock starts at discovery: ten days earlier.
    spec.determined_at = None;
    let other = app.campaign(&spec).with(&people).await;
    assert_eq!(
        app.store
            .require_campaign(other)
            .await
            .unwrap()
            .determined_at,
        None
    );
    let texas = deadlines(&app, other).await[1].1.unwrap();
    assert_eq!(texas, day("2026-03-01") + Days::new(60));
}
