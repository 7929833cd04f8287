//! Configuration layering, checked through the library's pure loader (no process environment
//! mutation, so these run in parallel with everything else).

use std::path::Path;

use breach_notifier::config::{LogFormat, Settings, SmtpTls, TransportKind};
use secrecy::ExposeSecret;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn shipped_default_file_matches_the_built_in_defaults() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let from_file = Settings::load_from(Some(&shipped), None, &[]).unwrap();
    assert_eq!(
        from_file.settings.to_redacted_toml(),
        Settings::default().to_redacted_toml()
    );
}

#[test]
fn later_layers_win() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("default.toml");
    std::fs::write(
        &base,
        "[log]\nlevel = \"warn\"\nformat = \"json\"\n[transport.smtp]\nport = 2525\n",
    )
    .unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(&site, "[log]\nlevel = \"debug\"\n[transport]\nkind = \"smtp\"\n[transport.smtp]\nhost = \"127.0.0.1\"\n").unwrap();
    let loaded = Settings::load_from(
        Some(&base),
        Some(&site),
        &env(&[
            ("BREACH_NOTIFIER__TRANSPORT__SMTP__TLS", "implicit"),
            ("BREACH_NOTIFIER__LOG__LEVEL", "error"),
        ]),
    )
    .unwrap();
    let s = loaded.settings;
    assert_eq!(s.log.level, "error", "environment beats both files");
    assert_eq!(s.log.format, LogFormat::Json, "default file beats built-in");
    assert_eq!(s.transport.kind, TransportKind::Smtp, "site file");
    assert_eq!(s.transport.smtp.port, 2525, "kept from the default file");
    assert_eq!(s.transport.smtp.tls, SmtpTls::Implicit);
    assert_eq!(loaded.provenance.files, vec![base, site]);
    assert_eq!(loaded.provenance.env_vars.len(), 2);
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("db-password");
    std::fs::write(&pw, "s3cr3t-db\n").unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        format!(
            "[database]\nurl = \"postgres://bn@db/bn\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    )
    .unwrap();
    let loaded = Settings::load_from(None, Some(&site), &[]).unwrap();
    assert_eq!(
        loaded.settings.database_password(),
        Some("s3cr3t-db"),
        "trailing newline trimmed"
    );
    assert!(!loaded.settings.to_redacted_toml().contains("s3cr3t"));
    assert!(
        !format!("{:?}", loaded.settings).contains("s3cr3t"),
        "Debug hides it too"
    );

    std::fs::write(
        &site,
        format!(
            "[database]\npassword = \"x\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    )
    .unwrap();
    let both = Settings::load_from(None, Some(&site), &[])
        .unwrap_err()
        .to_string();
    assert!(both.contains("either password or password_file"), "{both}");

    std::fs::write(&pw, "\n").unwrap();
    std::fs::write(
        &site,
        format!("[database]\npassword_file = \"{}\"\n", pw.display()),
    )
    .unwrap();
    let empty = Settings::load_from(None, Some(&site), &[])
        .unwrap_err()
        .to_string();
    assert!(empty.contains("is empty"), "{empty}");

    let from_env = Settings::load_from(
        None,
        None,
        &env(&[
            ("BREACH_NOTIFIER__TRANSPORT__SMTP__PASSWORD", "pw"),
            ("BREACH_NOTIFIER__TRANSPORT__SMTP__USERNAME", "u"),
        ]),
    )
    .unwrap();
    assert_eq!(
        from_env
            .settings
            .transport
            .smtp
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_string()),
        Some("pw".into())
    );
}

#[test]
fn toml_syntax_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("broken.toml");
    std::fs::write(&site, "[database]\nurl = \"sqlite://x.db\n").unwrap();
    let err = Settings::load_from(None, Some(&site), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.toml") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn bad_values_are_refused_with_the_key() {
    let err = Settings::load_from(None, None, &env(&[("BREACH_NOTIFIER__LOG__FORMAT", "xml")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("BREACH_NOTIFIER__LOG__FORMAT") && err.contains("xml"),
        "{err}"
    );
    let err = Settings::load_from(
        None,
        None,
        &env(&[("BREACH_NOTIFIER__DATABASE__MAX_CONNECTIONS", "0")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("database.max_connections"), "{err}");
}
