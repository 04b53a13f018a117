//! A claim kept while its work waits for a turn: a poll for its provider's bucket, a delivery for
//! a paced channel's. On a shared database the other daemons' turns come between this daemon's,
//! so a wait can outlast the lease the claim was taken for; a claim that ran out would let another
//! daemon take the work and do it too. The claim is renewed while the wait lasts.

use std::future::Future;
use std::time::Duration;

use crate::clock::{Millis, SharedClock, millis};

/// When a claim ending at `held` is renewed while its work waits: halfway through the slack that
/// `lease` leaves beyond the work's `timeout`, so that the renewal has time to be written before
/// the claim could run out, and the work time to finish after a turn that comes just before it;
/// but no sooner than a quarter of the lease after the claim was taken or last renewed, so that a
/// lease with little slack is not renewed over and over (a turn that comes when less than the
/// timeout is left renews it once more, [`wait_keeping_claim`]'s callers see to that).
pub fn renewal_due(held: Millis, lease: Duration, timeout: Duration) -> Millis {
    let (lease, timeout) = (millis(lease), millis(timeout));
    let kept = (timeout + (lease - timeout).max(0) / 2).min(lease * 3 / 4);
    held - kept
}

/// Waits for `turn` with the claim ending at `held` kept meanwhile: at each
/// [`renewal_due`] (`lease` and `timeout` as the claim was taken with) that comes first,
/// `renew(held)` renews it and gives its new end, or None when the claim is no longer this
/// daemon's. `held` follows the renewals. None when the claim was lost while waiting; the turn
/// is then not waited for any longer.
pub async fn wait_keeping_claim<T, E, R>(
    turn: impl Future<Output = T>,
    clock: &SharedClock,
    held: &mut Millis,
    (lease, timeout): (Duration, Duration),
    mut renew: impl FnMut(Millis) -> R,
) -> Result<Option<T>, E>
where
    R: Future<Output = Result<Option<Millis>, E>>,
{
    let mut turn = std::pin::pin!(turn);
    loop {
        let due = renewal_due(*held, lease, timeout) - clock.now();
        tokio::select! {
            biased;
            came = &mut turn => return Ok(Some(came)),
            () = tokio::time::sleep(Duration::from_millis(due.max(0) as u64)) => {}
        }
        match renew(*held).await? {
            Some(until) => *held = until,
            None => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::clock::Clock;

    /// Tokio's paused clock, as milliseconds from 0.
    struct Paused(tokio::time::Instant);

    impl Clock for Paused {
        fn now(&self) -> Millis {
            millis(self.0.elapsed())
        }
    }

    #[test]
    fn a_claim_is_renewed_halfway_through_the_slack_its_lease_leaves_beyond_the_work() {
        let s = Duration::from_secs;
        // A delivery's defaults: claimed at 0 until 60 s, 45 s of slack beyond a 15 s attempt,
        // renewed 22.5 s in with 37.5 s left; renewed then until 82.5 s, the next as far ahead.
        assert_eq!(renewal_due(60_000, s(60), s(15)), 22_500);
        assert_eq!(renewal_due(82_500, s(60), s(15)), 45_000);
        // A poll's 5 min lease and 10 s timeout: 145 s in.
        assert_eq!(renewal_due(300_000, s(300), s(10)), 145_000);
        // A lease no longer than a poll's timeout leaves no slack: a quarter of it apart.
        assert_eq!(renewal_due(5_000, s(5), s(5)), 1_250);
        assert_eq!(renewal_due(3_000, s(3), s(2)), 750);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_renews_its_claim_as_often_as_due_and_a_lost_claim_ends_it() {
        let clock: SharedClock = Arc::new(Paused(tokio::time::Instant::now()));
        let times = (Duration::from_secs(3), Duration::from_secs(2));
        let renewals = Arc::new(AtomicI64::new(0));
        let renew = {
            let (clock, renewals) = (clock.clone(), renewals.clone());
            move |_held: Millis| {
                renewals.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok::<_, ()>(Some(clock.now() + 3_000)))
            }
        };
        // A turn 10 s away under a 3 s lease and a 2 s timeout: renewed every 0.75 s (the
        // quarter of the lease comes before the half of the slack), at 0.75 s, … 9.75 s.
        let mut held = 3_000;
        let came = wait_keeping_claim(
            tokio::time::sleep(Duration::from_secs(10)),
            &clock,
            &mut held,
            times,
            renew,
        )
        .await;
        assert_eq!(came, Ok(Some(())));
        assert_eq!(renewals.load(Ordering::Relaxed), 13);
        assert_eq!(held, 12_750);
        assert!(held > clock.now() + 2_000, "the work has its timeout left");

        // A turn that comes at once renews nothing.
        let mut held = clock.now() + 3_000;
        let before = held;
        let came = wait_keeping_claim(async { 7 }, &clock, &mut held, times, |_| {
            std::future::ready(Err::<Option<Millis>, ()>(()))
        })
        .await;
        assert_eq!((came, held), (Ok(Some(7)), before));

        // A claim found taken over ends the wait, before the turn comes.
        let start = clock.now();
        let mut held = start + 3_000;
        let came = wait_keeping_claim(
            tokio::time::sleep(Duration::from_secs(10)),
            &clock,
            &mut held,
            times,
            |_| std::future::ready(Ok::<_, ()>(None)),
        )
        .await;
        assert_eq!(came, Ok(None));
        assert_eq!(clock.now() - start, 750, "given up at the first renewal");
    }
}
