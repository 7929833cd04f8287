//! Progress of long operator commands (imports, exports) on standard error: a live line redrawn four
//! times a second on a terminal, a plain line every ten seconds otherwise (journald, CI logs), and
//! nothing at all when disabled. Counts and rates only: never a row's content.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    /// Label of the plain lines, e.g. `import`.
    label: String,
    /// What is counted, for the rate, e.g. `rows`.
    unit: &'static str,
    enabled: bool,
    tty: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(label: impl Into<String>, unit: &'static str, enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            label: label.into(),
            unit,
            enabled,
            tty: std::io::stderr().is_terminal(),
            started: now,
            last: now,
        }
    }

    /// Reports `done` units so far, described by `text` (built only when a line is due).
    pub fn tick(&mut self, done: u64, text: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(10)
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let (label, unit) = (&self.label, self.unit);
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r  {} ({rate:.0} {unit}/s)   ", text());
        } else {
            let _ = writeln!(err, "{label} progress: {} ({rate:.0} {unit}/s)", text());
        }
    }

    /// Ends the live line (on a terminal) with its final text.
    pub fn finish(&mut self, text: impl FnOnce() -> String) {
        if self.enabled && self.tty && self.started.elapsed() > Duration::from_millis(250) {
            let _ = writeln!(std::io::stderr(), "\r  {}{:20}", text(), "");
        }
    }
}
