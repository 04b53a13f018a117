//! How the sender delivers: its settings, and when a failed attempt is retried.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// How the sender delivers notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Attempts in total, the first one included.
    pub attempts: u32,
    /// Delay before the first retry; it doubles each time, with jitter.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Longest wait for one receiver answer.
    pub timeout: Duration,
    /// How long a claimed notification is held; a sender that dies frees it when this runs out.
    pub lease: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            attempts: 3,
            // Three attempts spread over at least a quarter of an hour: the last comes 15 to
            // 30 minutes after the first, so a receiver down for 15 minutes (a deploy, a
            // restart) still gets the notification.
            backoff: Duration::from_secs(5 * 60),
            backoff_max: Duration::from_secs(60 * 60),
            timeout: Duration::from_secs(15),
            lease: Duration::from_secs(60),
            concurrency: 16,
        }
    }
}

/// The longest `Retry-After` a receiver is obeyed for.
pub const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay before attempt `attempts + 1`, after `attempts` failed ones: `backoff` doubling up
/// to `backoff_max`, with jitter, and never sooner than the receiver's `Retry-After`.
pub fn retry_delay(delivery: &Delivery, attempts: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(delivery.backoff)
        .with_max_delay(delivery.backoff_max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.saturating_sub(1) as usize)
        .unwrap_or(delivery.backoff_max)
        .min(delivery.backoff_max);
    // A receiver's `Retry-After` is obeyed up to a day, as upstream bans are: a longer one (or a
    // hostile one) would hold the message back for good.
    let delay = backoff.max(retry_after.unwrap_or_default().min(LONGEST_RETRY_AFTER));
    // Whole milliseconds: finer is noise in logs and in the database.
    Duration::from_millis(delay.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_cap() {
        let delivery = Delivery::default(); // 5m doubling, at most 1h
        let secs = |attempts| retry_delay(&delivery, attempts, None).as_secs_f64();
        for _ in 0..100 {
            // Jitter adds up to the delay itself on top of it.
            assert!((300.0..=600.0).contains(&secs(1)), "{}", secs(1));
            assert!((600.0..=1200.0).contains(&secs(2)), "{}", secs(2));
            assert!((1200.0..=2400.0).contains(&secs(3)), "{}", secs(3));
            assert_eq!(secs(10), 3600.0);
        }
        let spread: std::collections::HashSet<u128> = (0..20)
            .map(|_| retry_delay(&delivery, 1, None).as_millis())
            .collect();
        assert!(spread.len() > 1, "jitter spreads retries");
    }

    #[test]
    fn the_default_attempts_outlast_a_receiver_down_for_a_quarter_of_an_hour() {
        let delivery = Delivery::default();
        assert_eq!(delivery.attempts, 3);
        for _ in 0..1000 {
            // The first attempt fails at 0; the third comes after both retry delays.
            let last = retry_delay(&delivery, 1, None) + retry_delay(&delivery, 2, None);
            assert!(last >= Duration::from_secs(15 * 60), "{last:?}");
            assert!(last <= Duration::from_secs(30 * 60), "{last:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_when_longer() {
        let delivery = Delivery::default();
        let hour = Duration::from_secs(3600);
        assert_eq!(retry_delay(&delivery, 1, Some(hour)), hour);
        assert!(retry_delay(&delivery, 1, Some(Duration::from_secs(1))) >= delivery.backoff);
    }

    #[test]
    fn a_retry_after_beyond_a_day_is_obeyed_for_a_day() {
        let delivery = Delivery::default();
        let forever = Some(Duration::from_secs(u64::MAX / 1000));
        assert_eq!(retry_delay(&delivery, 1, forever), LONGEST_RETRY_AFTER);
    }
}
