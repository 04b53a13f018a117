//! How polls are made: the interval of each tier, the dispatcher's settings (`[polling]`) and
//! the one HTTP client the providers share (`[http]`).

use std::time::Duration;

use super::MaintenanceConfig;
use crate::clock::{Millis, millis};
use crate::domain::Tier;

/// Poll interval per tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    pub high: Duration,
    pub normal: Duration,
    pub low: Duration,
}

impl Default for Tiers {
    fn default() -> Self {
        Tiers {
            high: Duration::from_secs(120),
            normal: Duration::from_secs(600),
            low: Duration::from_secs(3600),
        }
    }
}

impl Tiers {
    pub fn interval(&self, tier: Tier) -> Duration {
        match tier {
            Tier::High => self.high,
            Tier::Normal => self.normal,
            Tier::Low => self.low,
        }
    }

    /// A warning when a higher tier is polled less often than a lower one (`high = "1h"`,
    /// `low = "1m"`): legal, and sometimes meant, but usually two values swapped. One line,
    /// naming every pair out of order.
    pub fn order_warning(&self) -> Option<String> {
        let shown = |tier: Tier| {
            format!(
                "{tier} = {:?}",
                humantime::format_duration(self.interval(tier)).to_string()
            )
        };
        let tiers = [Tier::High, Tier::Normal, Tier::Low];
        let mut swapped = Vec::new();
        for (i, &above) in tiers.iter().enumerate() {
            for &below in &tiers[i + 1..] {
                if self.interval(above) > self.interval(below) {
                    swapped.push(format!(
                        "{} is polled less often than {}",
                        shown(above),
                        shown(below)
                    ));
                }
            }
        }
        if swapped.is_empty() {
            return None;
        }
        Some(format!(
            "[tiers] out of order: {}; a higher tier is meant to be polled more often \
             (high <= normal <= low): check that the values are not swapped",
            swapped.join(", and ")
        ))
    }

    /// When a shipment moved to `tier` at `now` is polled next: one whole interval of its new
    /// tier from now, without jitter, so that `set-tier` says exactly when.
    pub fn next_poll_after_move(&self, tier: Tier, now: Millis) -> Millis {
        now + millis(self.interval(tier))
    }
}

/// How the dispatcher behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polling {
    /// How often the database is looked at for due shipments (and rows inserted from outside).
    pub scan_interval: Duration,
    /// Polls in flight at once, over all providers.
    pub concurrency: usize,
    /// Longest wait for one upstream answer.
    pub timeout: Duration,
    /// Spread of each next poll around the tier interval, as a fraction (0.1 = ±10%).
    pub jitter: f64,
    /// How long a claimed shipment is held before another dispatcher may take it.
    pub lease: Duration,
    /// How long a provider whose credentials or configuration upstream rejected stays paused.
    pub auth_pause: Duration,
    /// How long an unexplained refusal of a shipment counts as "no trace yet": the
    /// maintenance `no_info_after`, so that both give a new shipment the same time.
    pub no_info_after: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            scan_interval: Duration::from_secs(1),
            concurrency: 16,
            timeout: Duration::from_secs(30),
            jitter: 0.1,
            lease: Duration::from_secs(300),
            auth_pause: Duration::from_secs(3600),
            no_info_after: MaintenanceConfig::default().no_info_after,
        }
    }
}

/// The one HTTP client all providers share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http {
    pub connect_timeout: Duration,
    /// The whole request, answer included.
    pub timeout: Duration,
    /// Where `/healthz` and `/metrics` are served; not at all when `None`.
    pub listen: Option<std::net::SocketAddr>,
    /// Where the callbacks upstream posts to (Kuaidi100's push) are served, and nothing else;
    /// not at all when `None`. Kept apart from `listen` so that exposing it to the internet
    /// never exposes the metrics.
    pub public_listen: Option<std::net::SocketAddr>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            listen: None,
            public_listen: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_out_of_order_are_one_warning_naming_each_pair() {
        assert_eq!(Tiers::default().order_warning(), None);
        let equal = Tiers {
            high: Duration::from_secs(60),
            normal: Duration::from_secs(60),
            low: Duration::from_secs(60),
        };
        assert_eq!(equal.order_warning(), None);
        let swapped = Tiers {
            high: Duration::from_secs(3600),
            normal: Duration::from_secs(600),
            low: Duration::from_secs(60),
        };
        let warning = swapped.order_warning().expect("a warning");
        assert!(!warning.contains('\n'), "{warning}");
        assert!(
            warning.contains(r#"high = "1h" is polled less often than low = "1m""#),
            "{warning}"
        );
        assert!(
            warning.contains(r#"normal = "10m" is polled less often than low = "1m""#),
            "{warning}"
        );
        let one = Tiers {
            low: Duration::from_secs(60),
            ..Tiers::default()
        };
        assert_eq!(
            one.order_warning().as_deref(),
            Some(
                r#"[tiers] out of order: high = "2m" is polled less often than low = "1m", and normal = "10m" is polled less often than low = "1m"; a higher tier is meant to be polled more often (high <= normal <= low): check that the values are not swapped"#
            )
        );
    }

    #[test]
    fn a_shipment_moved_to_a_tier_is_polled_one_interval_of_that_tier_later() {
        let tiers = Tiers::default();
        let now = 1_700_000_000_000;
        assert_eq!(tiers.next_poll_after_move(Tier::High, now), now + 120_000);
        assert_eq!(tiers.next_poll_after_move(Tier::Normal, now), now + 600_000);
        assert_eq!(tiers.next_poll_after_move(Tier::Low, now), now + 3_600_000);
    }
}
