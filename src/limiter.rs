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

/// A token bucket holding one token, refilled every `per / (calls × 0.98)`: calls are spaced
/// evenly, so no window of the quota's length sees more than 98% of the quota leave (plus the
/// one call at its edge), however large the backlog; the rest absorbs jitter on the way. Built on
/// tokio's clock so that tests can pause time.
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

    /// Waits for this caller's slot. A caller cancelled while waiting leaves its slot unused,
    /// which errs on the side of the quota.
    pub async fn acquire(&self) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
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
