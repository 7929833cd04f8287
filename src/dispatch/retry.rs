//! What an attempt's outcome means for its recipient: pure functions of the settings, the recipient
//! and the answer (plus a random jitter), so they are tested without a database or a relay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::config::DispatchSettings;
use crate::store::{AttemptOutcome, NextState, Recipient};

/// What an attempt's outcome means for the recipient: sent; failed (5xx, or temporary failures for
/// longer than `give_up_hours` since the first attempt: reason `expired`); or retry after an
/// exponential backoff with jitter.
pub fn next_state(
    settings: &DispatchSettings,
    recipient: &Recipient,
    outcome: AttemptOutcome,
    code: Option<i32>,
    reply: &str,
    now: DateTime<Utc>,
) -> NextState {
    match outcome {
        AttemptOutcome::Sent => NextState::Sent,
        AttemptOutcome::Permanent => {
            let code = code.map(|c| format!("{c} ")).unwrap_or_default();
            NextState::Failed {
                reason: format!("permanent: {}", truncate(&format!("{code}{reply}"), 300)),
            }
        }
        AttemptOutcome::Transient | AttemptOutcome::Ambiguous => {
            let first = recipient.first_attempt_at.unwrap_or(now);
            let give_up = chrono::Duration::hours(settings.give_up_hours as i64);
            if now - first >= give_up {
                return NextState::Failed {
                    reason: "expired".into(),
                };
            }
            let delay = backoff(settings, recipient.attempts as u32, &mut rand::rng());
            NextState::Retry {
                at: now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
            }
        }
    }
}

/// `base × 2^attempts`, capped, times a jitter in [0.5, 1.0] so that retries of one wave spread out.
/// Saturating: no overflow whatever the attempt count.
pub fn backoff(settings: &DispatchSettings, attempts_before: u32, rng: &mut impl Rng) -> Duration {
    let exp = 1u64
        .checked_shl(attempts_before.min(32))
        .unwrap_or(u64::MAX);
    let secs = settings
        .retry_base_secs
        .saturating_mul(exp)
        .min(settings.retry_cap_secs.max(1));
    let jitter = rng.random_range(0.5..=1.0);
    Duration::from_secs_f64((secs as f64 * jitter).max(1.0))
}

/// At most `max` bytes of `s` (cut at a character boundary), with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_never_overflows() {
        let s = DispatchSettings {
            retry_base_secs: 300,
            retry_cap_secs: 3600,
            ..Default::default()
        };
        let mut rng = rand::rng();
        for attempts in [0u32, 1, 2, 3, 10, 63, 64, 1000, u32::MAX] {
            let d = backoff(&s, attempts, &mut rng).as_secs_f64();
            let full = (300.0 * 2f64.powi(attempts.min(40) as i32)).min(3600.0);
            assert!(
                d >= full * 0.5 - 1e-6 && d <= full + 1e-6,
                "attempts {attempts}: {d}"
            );
        }
    }

    #[test]
    fn truncate_cuts_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("aé", 2), "a…", "é is two bytes: cut before it");
    }
}
