//! The per-provider token bucket that keeps calls within the upstream quota.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::RateLimit;

/// A token bucket holding one token, refilled every `per / calls`: calls are spaced evenly, so
/// no window of the quota's length ever sees more than the quota (plus the one call at its edge),
/// however large the backlog. Built on tokio's clock so that tests can pause time.
#[derive(Debug)]
pub struct Limiter {
    interval: Duration,
    next_slot: Mutex<Option<Instant>>,
}

impl Limiter {
    pub fn new(limit: Option<RateLimit>) -> Self {
        Limiter {
            interval: limit.map_or(Duration::ZERO, |l| l.interval()),
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
        let limiter = Arc::new(Limiter::new(Some("600/min".parse().unwrap())));
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
        // 1200 calls at 600/min take two minutes, and no minute holds more than 600 (+1 at the edge).
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(times[1199], Duration::from_millis(100 * 1199));
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_secs(60))
                .count();
            assert!(
                in_window <= 600,
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
        let limiter = Limiter::new(Some("1/s".parse().unwrap()));
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }
}
