//! breach-notifier: sends legally required data-breach notices by email to every affected person,
//! crash-safe, in rate-limited waves, recording what happened to each one.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that tests drive the same code.
//! One folder per layer, each with a `mod.rs` saying what it owns and what it may use; dependencies
//! point one way (docs/architecture.md draws them):
//!
//! - [`cli`]: the command line; uses every layer below.
//! - [`intake`]: importing affected-customer lists (CSV), validated and reconciled.
//! - [`campaign`]: campaign files, templates, the message, pre-flight checks, waves.
//! - [`dispatch`]: the daemon: claims, rate limits, sends, records.
//! - [`transport`]: SMTP and the file outbox.
//! - [`store`]: the database interface, PostgreSQL and SQLite.
//! - [`ops`]: metrics, HTTP endpoint, systemd notification, logging, progress lines, exports.
//! - [`bounce`]: asynchronous bounces: VERP tokens, parsing, classification, redaction (pure), and
//!   storing, processing and guarding them (through the store).
//! - [`rules`]: jurisdiction rules as data (deadlines, regulators, content, sources) and the pure
//!   deadline arithmetic over them; uses nothing but config.
//! - [`config`]: layered configuration, secrets, validation; used by all.

pub mod bounce;
pub mod campaign;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod intake;
pub mod ops;
pub mod rules;
pub mod store;
pub mod transport;

#[cfg(test)]
mod layers {
    //! The layers' dependencies point one way: docs/architecture.md draws the same table.

    use std::collections::BTreeSet;
    use std::path::Path;

    /// What each layer may use (besides `config`, which every layer may use).
    const ALLOWED: &[(&str, &[&str])] = &[
        (
            "cli",
            &[
                "intake",
                "campaign",
                "bounce",
                "dispatch",
                "transport",
                "ops",
                "rules",
                "store",
            ],
        ),
        ("rules", &[]),
        ("intake", &["ops", "store"]),
        (
            "dispatch",
            &["campaign", "bounce", "transport", "ops", "store"],
        ),
        ("transport", &["campaign", "store"]),
        ("ops", &["bounce", "campaign", "transport", "store"]),
        ("campaign", &["bounce", "store"]),
        ("store", &[]),
        ("bounce", &["store"]),
    ];

    /// The layers named after `crate::` in the `.rs` files of a layer's folder and its sub-folders.
    fn uses(layer: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(layer);
        let mut folders = vec![dir];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).expect("the layer's folder") {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                    continue;
                }
                if path.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("crate::") {
                    let name: String = text[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            }
        }
        found
    }

    #[test]
    fn every_layer_uses_only_the_layers_below_it() {
        for (layer, allowed) in ALLOWED {
            for used in uses(layer) {
                assert!(
                    used == *layer || used == "config" || allowed.contains(&used.as_str()),
                    "{layer} uses {used}, which it may not (see docs/architecture.md)"
                );
            }
        }
    }

    #[test]
    fn the_ops_modules_the_lower_layers_report_through_use_no_layer() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
        for module in ["metrics", "notify", "progress", "telemetry"] {
            let text = std::fs::read_to_string(dir.join(format!("{module}.rs"))).unwrap();
            for (at, _) in text.match_indices("crate::") {
                assert!(
                    text[at..].starts_with("crate::config") || text[at..].starts_with("crate::ops"),
                    "ops::{module} must not use another layer: {}",
                    &text[at..at + 30.min(text.len() - at)]
                );
            }
        }
    }
}
