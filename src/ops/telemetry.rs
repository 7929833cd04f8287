//! Logging: human-readable lines on a terminal, JSON lines for log shippers.
//!
//! The rule every caller follows: log recipient and campaign row ids, never an address, a name or an
//! attribute. A leaked address in a log is a second breach. Logs go to standard error so that standard
//! output stays clean for command results (`status --json`, `preview`, exports).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`. Calling it twice is
/// harmless (the second call does nothing), which keeps tests simple.
pub fn init(settings: &LogSettings) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(&value)
            .map_err(|e| anyhow::anyhow!("RUST_LOG={value:?} is not a valid log filter: {e}"))?,
        _ => EnvFilter::try_new(&settings.level).map_err(|e| {
            anyhow::anyhow!(
                "log.level = {:?} is not a valid log filter ({e}); use error, warn, info, debug or trace",
                settings.level
            )
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let result = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    // Already initialised (tests, or a command that re-enters): keep the first subscriber.
    let _ = result;
    Ok(())
}
