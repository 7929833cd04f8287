//! The recipients this daemon holds (claimed, outcome not yet recorded), and how many per campaign:
//! the claim's room under `max_in_flight`, a campaign's daily cap, lease renewal and the drain.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The held set, shared by the claim round (hold), the recorder (settle), housekeeping (renew) and
/// the drain (release what is left). Every method takes the lock for one short step.
#[derive(Debug, Default)]
pub(super) struct InFlight(Mutex<Held>);

#[derive(Debug, Default)]
struct Held {
    campaign_of: HashMap<i64, i64>,
    per_campaign: HashMap<i64, u64>,
}

impl InFlight {
    fn held(&self) -> MutexGuard<'_, Held> {
        // A panic while holding the lock leaves plain maps behind: keep using them.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn len(&self) -> usize {
        self.held().campaign_of.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held().campaign_of.is_empty()
    }

    /// How many of `campaign_id`'s recipients this daemon holds (its daily cap counts them).
    pub(super) fn of_campaign(&self, campaign_id: i64) -> u64 {
        let held = self.held();
        held.per_campaign.get(&campaign_id).copied().unwrap_or(0)
    }

    /// The claim leased `recipients` of `campaign_id`.
    pub(super) fn hold(&self, campaign_id: i64, recipients: impl IntoIterator<Item = i64>) {
        let mut held = self.held();
        for id in recipients {
            if held.campaign_of.insert(id, campaign_id).is_none() {
                *held.per_campaign.entry(campaign_id).or_default() += 1;
            }
        }
    }

    /// The outcomes (or releases) of `recipients` reached the database.
    pub(super) fn settle(&self, recipients: impl IntoIterator<Item = i64>) {
        let mut held = self.held();
        for id in recipients {
            let Some(campaign_id) = held.campaign_of.remove(&id) else {
                continue;
            };
            if let Some(n) = held.per_campaign.get_mut(&campaign_id) {
                *n -= 1;
                if *n == 0 {
                    held.per_campaign.remove(&campaign_id);
                }
            }
        }
    }

    /// The ids held now (lease renewal).
    pub(super) fn ids(&self) -> Vec<i64> {
        self.held().campaign_of.keys().copied().collect()
    }

    /// Forgets every hold and returns the ids (the drain releases them).
    pub(super) fn drain(&self) -> Vec<i64> {
        let mut held = self.held();
        held.per_campaign.clear();
        held.campaign_of.drain().map(|(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_campaign_and_settles_once() {
        let f = InFlight::default();
        f.hold(1, [10, 11, 12]);
        f.hold(2, [20]);
        f.hold(1, [10]);
        assert_eq!((f.len(), f.of_campaign(1), f.of_campaign(2)), (4, 3, 1));
        f.settle([10, 10, 20, 99]);
        assert_eq!((f.len(), f.of_campaign(1), f.of_campaign(2)), (2, 2, 0));
        let mut left = f.drain();
        left.sort();
        assert_eq!(left, [11, 12]);
        assert!(f.is_empty());
        assert_eq!(f.of_campaign(1), 0);
    }
}
