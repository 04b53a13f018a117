//! How much work the dispatcher and the sender claim ahead of their free slots.
//!
//! Every claim is a transaction of the writer's, and the free slots wait for it. Claiming only a
//! round of slots at a time made the slots wait on a claim every few polls (4,900 polls/s at
//! 210 µs of CPU each in the quick bench); claiming the work of a few seconds at a time lets a
//! claim serve hundreds of polls (10,600 polls/s at 109 µs). Work claimed ahead holds its lease
//! until it starts, so no more is claimed than the slots start, at the pace they have been
//! starting, within an eighth of the lease: a rate-limited provider's shipments or a slow
//! channel's messages are not claimed so far ahead that their leases run out unused.

use std::time::Duration;

use crate::clock::Millis;

/// At most this many rounds of slots are claimed ahead.
const MOST_ROUNDS: usize = 16;
/// The share of the lease the shipments claimed ahead may take to start.
const LEASE_SHARE: u32 = 8;

/// The pace at which polls have been starting since the last claim.
#[derive(Debug, Default)]
pub struct Pace {
    last_claim: Option<Millis>,
    started: usize,
}

impl Pace {
    /// Counts the work started (polls, rows flagged, deliveries) from what was claimed.
    pub fn started(&mut self, n: usize) {
        self.started += n;
    }

    /// How many to claim now, beyond the slots that are free and found nothing claimed; starts
    /// the count again.
    pub fn claim(&mut self, now: Millis, concurrency: usize, lease: Duration) -> usize {
        let size = match self.last_claim {
            Some(last) => ahead(concurrency, self.started, now.saturating_sub(last), lease),
            None => concurrency,
        };
        self.last_claim = Some(now);
        self.started = 0;
        size
    }
}

/// The shipments to claim ahead: what the slots started in the last `elapsed_ms`, at that pace
/// over an eighth of `lease`, but no fewer than one round of slots and no more than
/// [`MOST_ROUNDS`].
pub fn ahead(concurrency: usize, started: usize, elapsed_ms: Millis, lease: Duration) -> usize {
    let most = concurrency.saturating_mul(MOST_ROUNDS);
    let window = (lease / LEASE_SHARE).as_millis();
    let wanted = if elapsed_ms <= 0 {
        // No time has passed (a paused clock, or two rounds within a millisecond): the pace is
        // unknown but fast.
        if started > 0 { most } else { concurrency }
    } else {
        let wanted = (started as u128).saturating_mul(window) / elapsed_ms as u128;
        usize::try_from(wanted).unwrap_or(most)
    };
    wanted.clamp(concurrency, most.max(concurrency))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(300);

    #[test]
    fn a_fast_pace_claims_sixteen_rounds_ahead() {
        // 256 polls started in 25 ms: 10,000 a second.
        assert_eq!(ahead(16, 256, 25, LEASE), 256);
    }

    #[test]
    fn a_rate_limited_pace_claims_what_starts_within_an_eighth_of_the_lease() {
        // 600 a minute: 10 a second, 37.5 s of them.
        assert_eq!(ahead(16, 100, 10_000, LEASE), 16 * 16);
        // 60 a minute: 37 within 37.5 s.
        assert_eq!(ahead(16, 10, 10_000, LEASE), 37);
        // 10 a minute: fewer than a round, so a round.
        assert_eq!(ahead(16, 1, 6_000, LEASE), 16);
    }

    #[test]
    fn nothing_started_claims_one_round() {
        assert_eq!(ahead(16, 0, 1_000, LEASE), 16);
        assert_eq!(ahead(16, 0, 0, LEASE), 16);
        assert_eq!(ahead(4, 3, 0, LEASE), 64);
    }

    #[test]
    fn the_first_claim_is_one_round_and_later_ones_follow_the_pace() {
        let mut pace = Pace::default();
        assert_eq!(pace.claim(1_000, 16, LEASE), 16);
        pace.started(16);
        // 16 in 8 s over 37.5 s: 75.
        assert_eq!(pace.claim(9_000, 16, LEASE), 75);
        // The count starts again with each claim.
        assert_eq!(pace.claim(10_000, 16, LEASE), 16);
    }
}
