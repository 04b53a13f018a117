//! A poll's turn in its provider's bucket: how many polls may wait for one bucket at once, and
//! the guard that counts a poll among them while it waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock::Millis;

/// A poll counted among those waiting for its provider's bucket, until dropped (its turn came,
/// or it was cut short while waiting).
pub(super) struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    /// Counts one more poll in `count` until the guard is dropped.
    pub(super) fn enter(count: &Arc<AtomicUsize>) -> Waiting {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A claimed shipment's poll as the dispatcher starts it: counted among its bucket's waiting
/// polls, and holding the claim that ends at `claimed_until`.
pub(super) struct Turn {
    pub(super) waiting: Waiting,
    pub(super) claimed_until: Millis,
}

/// How many polls of a provider may wait for its bucket at once (each in a slot, its shipment
/// claimed): as many as the quota serves, one `interval` apart, while a claim lasts (`lease`),
/// so that each call leaves before its claim runs out; at least one, and any number without a
/// quota. A poll that outwaited its claim was claimed again, found still polling and given back,
/// at once and over and over (one daemon spun a core on it with `rate_limit = "6/min"` and a 3 s
/// lease); on a shared database another daemon could poll it too.
pub fn waiting_cap(interval: Duration, lease: Duration) -> usize {
    if interval.is_zero() {
        return usize::MAX;
    }
    let turns = lease.as_nanos() / interval.as_nanos();
    usize::try_from(turns).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_counts_among_the_waiting_until_its_guard_goes() {
        let count = Arc::new(AtomicUsize::new(0));
        let first = Waiting::enter(&count);
        let second = Waiting::enter(&count);
        assert_eq!(count.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_bucket_holds_as_many_waiting_polls_as_its_quota_serves_within_a_claim() {
        let s = Duration::from_secs;
        let lease = s(300);
        // TOP's 250 a second: thousands fit in the default 5 min lease, far more than the slots.
        assert_eq!(waiting_cap(Duration::from_millis(4), lease), 75_000);
        // 6 a minute (10.2 s apart with the headroom): 29 turns fit.
        assert_eq!(waiting_cap(Duration::from_millis(10_204), lease), 29);
        // 100 a day: not one turn fits, but one poll may still wait, alone.
        assert_eq!(waiting_cap(s(881), lease), 1);
        // No quota: no bound.
        assert_eq!(waiting_cap(Duration::ZERO, lease), usize::MAX);
    }
}
