//! Configuration: what the daemon and the CLI are told, where it came from, and how it is checked.
//!
//! Layers, later ones winning: the built-in defaults ([`Settings::default`]), `config/default.toml` in the
//! working directory when present, the file named by `--config` or `BREACH_NOTIFIER_CONFIG` (which must
//! exist), then environment variables `BREACH_NOTIFIER__SECTION__KEY`. Merging is done by the `config`
//! crate; before merging, every file layer is parsed on its own with `deny_unknown_fields`, so an unknown
//! key or a wrong type is reported with the file, line and key instead of surfacing later as a vague
//! merge error. Secrets are [`SecretString`]s, may come from a file (`password_file`, for systemd
//! credentials) and are printed only as `[redacted]`.

mod bounces;
mod tokens;

pub use bounces::{BounceKeys, BounceSettings};
pub use tokens::{MIN_TOKEN_CHARS, TokenRole, TokenSettings};

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "BREACH_NOTIFIER";
/// Environment variable naming the configuration file (same as `--config`).
pub const ENV_CONFIG_FILE: &str = "BREACH_NOTIFIER_CONFIG";
/// The shipped defaults file, read from the working directory when it exists.
pub const DEFAULT_FILE: &str = "config/default.toml";

/// A configuration problem, always naming where it is and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {path}: cannot read it ({reason}); check the path given with --config or {ENV_CONFIG_FILE}"
    )]
    Unreadable {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment variables {ENV_PREFIX}__*: {0}")]
    Environment(String),
    #[error("configuration: {0}")]
    Value(String),
}

/// Everything breach-notifier can be configured with. Every section has defaults, so a file only names
/// what it changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub transport: TransportSettings,
    pub dispatch: DispatchSettings,
    pub limits: LimitSettings,
    /// The daemon's HTTP endpoint (`/healthz`, `/readyz`, `/metrics`); off unless enabled.
    pub http: HttpSettings,
    /// DKIM signing of every notice; off unless configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimSettings>,
    /// Asynchronous bounces: the envelope sender, the Maildir, the guard.
    pub bounces: BounceSettings,
    /// The jurisdiction rules: counsel's own file over the shipped one, the internal target.
    pub rules: RulesSettings,
}

/// Where counsel's reading of the jurisdiction rules is (docs/rules.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesSettings {
    /// A rules file whose `[[jurisdiction]]` entries replace the shipped entries of the same code
    /// (whole entries) or add new codes; none means the shipped rules alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The deadline, in calendar days from discovery, used for jurisdictions whose law sets no number
    /// ("without unreasonable delay"): an internal target, not a legal deadline.
    pub internal_target_days: u32,
}

impl Default for RulesSettings {
    fn default() -> Self {
        Self {
            file: None,
            internal_target_days: 30,
        }
    }
}

/// How the daemon claims, sends, retries and stops.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchSettings {
    /// This daemon's name in leases and heartbeats; empty means HOSTNAME-PID.
    pub instance_id: String,
    /// Recipients claimed per database round trip.
    pub batch_size: u32,
    /// Most recipients leased by this daemon at once (waiting for a rate limit or being sent). After a
    /// crash, at most this many can be sent twice.
    pub max_in_flight: u32,
    /// Messages being handed to the transport at the same time.
    pub concurrency: u32,
    /// How long a claim holds a recipient before another daemon may take it (renewed while held).
    pub lease_secs: u64,
    /// How often to look for work when there was none (LISTEN/NOTIFY wakes PostgreSQL daemons sooner).
    pub poll_interval_ms: u64,
    /// How often to rescan a campaign from its start, for rows whose lease expired behind the cursor.
    pub rescan_secs: u64,
    /// On SIGTERM: how long in-flight sends may take before the rest is released.
    pub drain_secs: u64,
    pub heartbeat_secs: u64,
    /// First retry delay after a temporary failure; doubles each attempt (with jitter) up to the cap.
    pub retry_base_secs: u64,
    pub retry_cap_secs: u64,
    /// A recipient still deferred this long after its first attempt fails with reason `expired`.
    pub give_up_hours: u64,
    /// Outcomes are written in batches of at most this many, at least every `flush_ms`.
    pub flush_max: u32,
    pub flush_ms: u64,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            instance_id: String::new(),
            batch_size: 500,
            max_in_flight: 2000,
            concurrency: 16,
            lease_secs: 300,
            poll_interval_ms: 1000,
            rescan_secs: 60,
            drain_secs: 20,
            heartbeat_secs: 5,
            retry_base_secs: 300,
            retry_cap_secs: 4 * 3600,
            give_up_hours: 72,
            flush_max: 500,
            flush_ms: 100,
        }
    }
}

/// The daemon's HTTP endpoint for health checks and Prometheus metrics.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Serve `/healthz`, `/readyz` and `/metrics` while `run` is running.
    pub enabled: bool,
    /// IP address and port to listen on (an IP literal, not a host name).
    pub listen: SocketAddr,
    /// Permits a `listen` address that is not on the loopback interface. The endpoint has no
    /// authentication: put it behind a firewall or a proxy that adds some.
    pub allow_remote: bool,
    /// The status page's tokens (docs/status-page.md); none: the page is read-only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenSettings>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            allow_remote: false,
            tokens: Vec::new(),
        }
    }
}

/// Rate limits (GCRA). A missing rate means no limit at that level.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Messages per second for the whole cluster (split among live daemons).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_per_second: Option<f64>,
    /// Messages that may leave at once above the steady rate (default: one second's worth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_burst: Option<u32>,
    /// Per recipient domain without its own entry in `domains`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_default_per_second: Option<f64>,
    /// Per recipient domain, e.g. `"gmail.com" = 20`.
    pub domains: std::collections::BTreeMap<String, f64>,
}

/// DKIM signing key and identity.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// PEM (PKCS#1) RSA key, or base64 Ed25519 key.
    pub key_file: PathBuf,
    pub selector: String,
    pub domain: String,
    #[serde(default = "default_dkim_algorithm")]
    pub algorithm: String,
}

fn default_dkim_algorithm() -> String {
    "rsa".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://FILE` (embedded default, one daemon) or `postgres://USER@HOST:PORT/DB` (production).
    pub url: String,
    /// Overrides the password of a PostgreSQL URL, so the URL itself can stay free of secrets.
    #[serde(serialize_with = "redact_opt", skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretString>,
    /// A file holding the database password (for systemd's `LoadCredential=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Upper bound on pooled connections per process.
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://breach-notifier.db".into(),
            password: None,
            password_file: None,
            max_connections: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `breach_notifier=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// One `.eml` file per notice in a directory: the embedded default, needs no server.
    #[default]
    File,
    /// An SMTP relay.
    Smtp,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSettings {
    pub kind: TransportKind,
    pub file: FileTransportSettings,
    pub smtp: SmtpSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileTransportSettings {
    /// Directory receiving one `.eml` file per notice; created when missing.
    pub dir: PathBuf,
}

impl Default for FileTransportSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("outbox"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    Starttls,
    /// TLS from the first byte (usually port 465).
    Implicit,
    /// No encryption: refused for a non-loopback host unless `allow_insecure = true`.
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Permits `tls = "none"` towards a host that is not on the loopback interface.
    pub allow_insecure: bool,
    /// PEM file of a private CA that signs the relay's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(serialize_with = "redact_opt", skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretString>,
    /// A file holding the SMTP password (for systemd's `LoadCredential=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Maximum concurrent SMTP connections.
    pub pool_size: u32,
    pub timeout_secs: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            allow_insecure: false,
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            pool_size: 8,
            timeout_secs: 30,
        }
    }
}

fn redact_opt<S: Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("[redacted]"),
        None => s.serialize_none(),
    }
}

/// Where each layer of the effective configuration came from, for `check-config` and error messages.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub files: Vec<PathBuf>,
    pub env_vars: Vec<String>,
}

/// The loaded configuration with its provenance.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub provenance: Provenance,
}

impl Settings {
    /// Loads the layers described in the module header. `explicit` is `--config`; when absent,
    /// `BREACH_NOTIFIER_CONFIG` is consulted.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
        let env_file = std::env::var_os(ENV_CONFIG_FILE)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let explicit = explicit.map(Path::to_path_buf).or(env_file);
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let default_file = Path::new(DEFAULT_FILE);
        Self::load_from(
            default_file.exists().then_some(default_file),
            explicit.as_deref(),
            &env,
        )
    }

    /// The pure part of [`Settings::load`], with the environment passed in (so tests need not mutate
    /// the process environment).
    pub fn load_from(
        default_file: Option<&Path>,
        explicit: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let mut provenance = Provenance::default();
        let defaults = config::Config::try_from(&Settings::default())
            .map_err(|e| ConfigError::Value(format!("built-in defaults: {e}")))?;
        let mut builder = config::Config::builder().add_source(defaults);
        for path in default_file.into_iter().chain(explicit) {
            let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Unreadable {
                path: path.to_path_buf(),
                reason,
            })?;
            // Parsed alone first: toml reports the line, the column and the key of any problem.
            toml::from_str::<Settings>(&text).map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: toml_error(&text, &e),
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
            provenance.files.push(path.to_path_buf());
        }
        if !env.is_empty() {
            let source = config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env.iter().cloned().collect()));
            config::Config::builder()
                .add_source(source.clone())
                .build()
                .and_then(|c| c.try_deserialize::<Settings>())
                .map_err(|e| {
                    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
                    ConfigError::Environment(format!("{e} (set: {})", names.join(", ")))
                })?;
            builder = builder.add_source(source);
            provenance.env_vars = env.iter().map(|(k, _)| k.clone()).collect();
            provenance.env_vars.sort();
        }
        let mut settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Value(e.to_string()))?;
        settings.resolve_secret_files()?;
        settings.bounces.read_keys()?;
        tokens::read_tokens(&mut settings.http.tokens)?;
        settings.validate()?;
        Ok(Loaded {
            settings,
            provenance,
        })
    }

    /// Reads `password_file`s into their secrets. A relative path is looked up in systemd's
    /// `$CREDENTIALS_DIRECTORY` when that is set, so `LoadCredential=smtp-password:…` works unchanged.
    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        fn read(
            key: &str,
            file: &Option<PathBuf>,
            secret: &mut Option<SecretString>,
        ) -> Result<(), ConfigError> {
            let Some(file) = file else { return Ok(()) };
            if secret.is_some() {
                return Err(ConfigError::Value(format!(
                    "{key}: set either password or password_file, not both"
                )));
            }
            let name = format!("{key}.password_file");
            let (path, text) = read_credential(&name, file, std::fs::read_to_string)?;
            let value = text.trim_end_matches(['\r', '\n']).to_string();
            if value.is_empty() {
                return Err(ConfigError::Value(format!(
                    "{key}.password_file {}: the file is empty",
                    path.display()
                )));
            }
            *secret = Some(SecretString::from(value));
            Ok(())
        }
        read(
            "database",
            &self.database.password_file,
            &mut self.database.password,
        )?;
        read(
            "transport.smtp",
            &self.transport.smtp.password_file,
            &mut self.transport.smtp.password,
        )?;
        Ok(())
    }

    /// Checks that need more than one key or more than a type.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_database()?;
        self.validate_dispatch()?;
        self.validate_limits()?;
        self.bounces.validate()?;
        if self.rules.internal_target_days == 0 {
            return Err(ConfigError::Value(
                "rules.internal_target_days must be at least 1 (days from discovery)".into(),
            ));
        }
        self.validate_endpoints()
    }

    fn validate_database(&self) -> Result<(), ConfigError> {
        let url = self.database.url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Value(format!(
                "database.url must start with sqlite:// or postgres:// (got {})",
                redact_url(url)
            )));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Value(
                "database.max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_dispatch(&self) -> Result<(), ConfigError> {
        let d = &self.dispatch;
        for (key, v) in [
            ("dispatch.batch_size", u64::from(d.batch_size)),
            ("dispatch.max_in_flight", u64::from(d.max_in_flight)),
            ("dispatch.concurrency", u64::from(d.concurrency)),
            ("dispatch.lease_secs", d.lease_secs),
            ("dispatch.poll_interval_ms", d.poll_interval_ms),
            ("dispatch.retry_base_secs", d.retry_base_secs),
            ("dispatch.flush_max", u64::from(d.flush_max)),
            ("dispatch.heartbeat_secs", d.heartbeat_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::Value(format!("{key} must be at least 1")));
            }
        }
        if d.heartbeat_secs * 3 > d.lease_secs {
            return Err(ConfigError::Value(
                "dispatch.lease_secs must be at least three heartbeats (dispatch.heartbeat_secs * 3), or leases expire while held".into(),
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (key, v) in [
            ("limits.global_per_second", l.global_per_second),
            (
                "limits.domain_default_per_second",
                l.domain_default_per_second,
            ),
        ]
        .into_iter()
        .chain(l.domains.iter().map(|(k, v)| (k.as_str(), Some(*v))))
        {
            if let Some(v) = v
                && !(v > 0.0 && v.is_finite())
            {
                return Err(ConfigError::Value(format!(
                    "limits: {key} = {v} must be a positive number of messages per second"
                )));
            }
        }
        Ok(())
    }

    /// The HTTP endpoint and the relay: nothing unauthenticated or unencrypted leaves the host
    /// unless asked for.
    fn validate_endpoints(&self) -> Result<(), ConfigError> {
        let http = &self.http;
        if http.enabled && !http.allow_remote && !http.listen.ip().is_loopback() {
            return Err(ConfigError::Value(format!(
                "http.listen = \"{}\" is not a loopback address, and the endpoint has no authentication; listen on 127.0.0.1 or [::1] (and scrape through a proxy), or set http.allow_remote = true",
                http.listen
            )));
        }
        let smtp = &self.transport.smtp;
        if self.transport.kind == TransportKind::Smtp {
            if smtp.tls == SmtpTls::None && !smtp.allow_insecure && !is_loopback_host(&smtp.host) {
                return Err(ConfigError::Value(format!(
                    "transport.smtp.tls = \"none\" sends notices unencrypted to {}, which is not a loopback host; use starttls or implicit, or set transport.smtp.allow_insecure = true",
                    smtp.host
                )));
            }
            if smtp.password.is_some() && smtp.username.is_none() {
                return Err(ConfigError::Value(
                    "transport.smtp.password is set but transport.smtp.username is not".into(),
                ));
            }
            if smtp.pool_size == 0 {
                return Err(ConfigError::Value(
                    "transport.smtp.pool_size must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, every secret replaced by `[redacted]`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = redact_url(&shown.database.url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The database password from `password`/`password_file`, if configured.
    pub fn database_password(&self) -> Option<&str> {
        self.database.password.as_ref().map(|s| s.expose_secret())
    }
}

/// Reads the secret file configured as `key` with `read`; a relative path is looked up in systemd's
/// `$CREDENTIALS_DIRECTORY` when that is set. Returns the path read and what it holds.
fn read_credential<T>(
    key: &str,
    file: &Path,
    read: fn(PathBuf) -> std::io::Result<T>,
) -> Result<(PathBuf, T), ConfigError> {
    let path = match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if file.is_relative() => Path::new(&dir).join(file),
        _ => file.to_path_buf(),
    };
    let value = read(path.clone()).map_err(|e| {
        ConfigError::Value(format!("{key} {}: cannot read it ({e})", path.display()))
    })?;
    Ok((path, value))
}

/// A TOML error as `line L, column C: message`, on one line.
pub fn toml_error(source: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &source[..span.start.min(source.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            // Name the key of that line (never its value: it may be a secret).
            let text = source.lines().nth(line - 1).unwrap_or_default();
            let key = text
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !k.starts_with('['));
            match key {
                Some(key) => format!(
                    "line {line}, column {column}, key `{key}`: {}",
                    e.message().trim()
                ),
                None => format!("line {line}, column {column}: {}", e.message().trim()),
            }
        }
        None => e.message().trim().to_string(),
    }
}

/// The line (1-based) on which a key of a TOML document is written, `["sender", "from"]` or
/// `["waves", "1", "size"]`; `None` when the document or the key cannot be found.
pub fn toml_line_of(source: &str, key: &[&str]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let document = DeTable::parse(source).ok()?;
    let mut table = document.get_ref();
    let mut start = None;
    let mut segments = key.iter().peekable();
    while let Some(segment) = segments.next() {
        let (k, mut value) = table.get_key_value(*segment)?;
        start = Some(k.span().start);
        // An array of tables: the next segment is the index.
        if let DeValue::Array(items) = value.get_ref()
            && let Some(index) = segments.peek().and_then(|i| i.parse::<usize>().ok())
        {
            segments.next();
            value = items.get(index)?;
            start = Some(value.span().start);
        }
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ if segments.peek().is_some() => return None,
            _ => {}
        }
    }
    Some(source[..start?.min(source.len())].matches('\n').count() + 1)
}
/// Replaces the password of a `scheme://user:password@host` URL with `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// True for `localhost` and loopback IP literals: the only hosts plain SMTP is allowed to by default.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://bn:s3cret@db.example:5432/bn?sslmode=require"),
            "postgres://bn:[redacted]@db.example:5432/bn?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://bn@db.example/bn"),
            "postgres://bn@db.example/bn"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("relay.example.com"));
        assert!(!is_loopback_host("10.0.0.1"));
    }
}
