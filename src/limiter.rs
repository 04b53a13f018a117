//! The token bucket that keeps calls within a quota: one per provider (the upstream's quota) and
//! one per group robot (DingTalk's messages a minute). A shared leaf, so that polling and delivery
//! both use it without importing each other.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Upstream counts calls as they arrive, and arrivals bunch up when the network or this machine
/// delays some requests more than others: pacing at exactly the quota would then exceed it. So
/// the pace keeps this share of the quota in reserve.
pub const HEADROOM: f64 = 0.02;

/// How late a waiter may wake and still leave on its own slot: tokio's timer fires on whole
/// milliseconds, so a wake a little after its slot is the timer, not a stall. A later wake moves
/// the following slots on rather than letting them catch up.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// A token bucket holding one token, refilled every `per / (calls × 0.98)`: calls are spaced
/// evenly, so no window of the quota's length sees more than 98% of the quota leave (plus the
/// one call at its edge), however large the backlog; the rest absorbs jitter on the way. Waiters
/// go one at a time, and the next slot is counted from when the last waiter really left: when the
/// process stalls (a busy machine, a paused VM), the waiters it held back leave spaced out as
/// ever, not all at once when it resumes. Built on tokio's clock so that tests can pause time.
#[derive(Debug)]
pub struct Limiter {
    interval: Duration,
    next_slot: Mutex<Option<Instant>>,
}

impl Limiter {
    /// `spacing` is the quota's own spacing between two calls (a minute / 20 for 20 a minute);
    /// `None` for no quota.
    pub fn new(spacing: Option<Duration>) -> Self {
        Limiter {
            interval: spacing.map_or(Duration::ZERO, |s| s.div_f64(1.0 - HEADROOM)),
            next_slot: Mutex::new(None),
        }
    }

    /// Waits for this caller's slot. Waiters queue on the bucket in turn (tokio's mutex is
    /// fair); one cancelled while waiting leaves its slot to the next.
    pub async fn acquire(&self) {
        if self.interval.is_zero() {
            return;
        }
        let mut next = self.next_slot.lock().await;
        let slot = next.map_or_else(Instant::now, |n| n.max(Instant::now()));
        tokio::time::sleep_until(slot).await;
        let left = Instant::now();
        *next = Some(next_slot(slot, left, self.interval));
    }
}

/// The slot after one planned for `slot` that was left at `left`: a whole interval on, counted
/// from the slot when the wake was on time (within [`TIMER_SLACK`]), from the leaving otherwise.
fn next_slot(slot: Instant, left: Instant, interval: Duration) -> Instant {
    let slack = TIMER_SLACK.min(interval / 2);
    (slot + interval).max(left + interval - slack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_to_the_quota() {
        let limiter = Arc::new(Limiter::new(Some(Duration::from_millis(100))));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..1200 {
            let limiter = limiter.clone();
            handles.push(tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for h in handles {
            times.push(h.await.unwrap() - start);
        }
        times.sort();
        // 1200 calls at 600/min, paced at 98% of it, take just over two minutes; every minute
        // holds 588 or 589 of them: the quota used to 98%, never more.
        assert_eq!(times[0], Duration::ZERO);
        let spacing = Duration::from_millis(100).div_f64(0.98);
        let last = times[1199].as_secs_f64();
        assert!(
            (last - spacing.as_secs_f64() * 1199.0).abs() < 0.001,
            "{last}"
        );
        for (i, t) in times.iter().enumerate().take(600) {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_secs(60))
                .count();
            assert!(
                (588..=589).contains(&in_window),
                "{in_window} calls within a minute from {t:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_held_back_by_a_stall_leave_spaced_out_not_together() {
        let interval = Duration::from_millis(100).div_f64(1.0 - HEADROOM);
        let limiter = Arc::new(Limiter::new(Some(Duration::from_millis(100))));
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..5 {
            let (limiter, tx) = (limiter.clone(), tx.clone());
            tokio::spawn(async move {
                limiter.acquire().await;
                tx.send(Instant::now()).unwrap();
            });
        }
        tokio::task::yield_now().await;
        // The first leaves at once; then the process stalls for a second and a half, past the
        // slots of all the others.
        let first = rx.recv().await.unwrap();
        assert_eq!(first, start);
        tokio::time::advance(Duration::from_millis(1500)).await;
        let mut left = vec![first];
        for _ in 0..4 {
            left.push(rx.recv().await.unwrap());
        }
        for pair in left.windows(2) {
            assert!(
                pair[1] - pair[0] >= interval - TIMER_SLACK,
                "two calls {:?} apart after the stall: {left:?}",
                pair[1] - pair[0]
            );
        }
    }

    #[test]
    fn a_wake_late_by_the_timer_keeps_the_schedule_and_a_stall_moves_it() {
        let slot = Instant::now();
        let interval = Duration::from_millis(100);
        let on_time = next_slot(slot, slot + Duration::from_millis(1), interval);
        assert_eq!(on_time, slot + interval);
        let stalled = next_slot(slot, slot + Duration::from_millis(500), interval);
        assert_eq!(stalled, slot + Duration::from_millis(598));
        // An interval shorter than the slack keeps half of it.
        let short = Duration::from_millis(2);
        assert_eq!(
            next_slot(slot, slot + Duration::from_millis(10), short),
            slot + Duration::from_millis(11)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_means_no_wait() {
        let limiter = Limiter::new(None);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_does_not_save_up_a_burst() {
        let limiter = Limiter::new(Some(Duration::from_secs(1)));
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        // One spacing, not two: the idle time bought no burst (tokio's timer counts whole ms).
        let waited = Instant::now() - start;
        let spacing = Duration::from_secs(1).div_f64(1.0 - HEADROOM);
        assert!(
            waited >= spacing && waited < spacing + Duration::from_millis(2),
            "{waited:?}"
        );
    }
}
