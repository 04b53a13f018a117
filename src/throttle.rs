//! Repeated identical warnings, rate-limited: a broken upstream that fails every poll the same
//! way, or sends a new unmapped value on every poll, must not fill the journal. The same warning
//! key logs at most once per [`WARN_INTERVAL`]; the line that does log says how many were held
//! back since the last one (`suppressed`). What the warnings are about is still recorded in full
//! where it belongs (the shipment's error in `show`, every unmapped value in `stats`).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How often one warning key may log.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The most keys remembered: keys come from outside (error texts), so their number is bounded,
/// and each is kept as a hash, not as its text.
const MAX_KEYS: usize = 4096;

/// Which warnings may log now.
pub struct Throttle {
    interval: Duration,
    hasher: RandomState,
    keys: Mutex<HashMap<u64, Slot>>,
}

struct Slot {
    logged_at: Instant,
    suppressed: u64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            hasher: RandomState::new(),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when the warning `key` may log at `now`, `n` being how many were held back since
    /// it last logged; `None` when it logged less than the interval ago (it is then counted).
    pub fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = keys.get_mut(&hash) {
            if now.saturating_duration_since(slot.logged_at) < self.interval {
                slot.suppressed += 1;
                return None;
            }
            let suppressed = std::mem::take(&mut slot.suppressed);
            slot.logged_at = now;
            return Some(suppressed);
        }
        if keys.len() >= MAX_KEYS {
            let interval = self.interval;
            keys.retain(|_, slot| now.saturating_duration_since(slot.logged_at) < interval);
        }
        if keys.len() < MAX_KEYS {
            keys.insert(
                hash,
                Slot {
                    logged_at: now,
                    suppressed: 0,
                },
            );
        }
        Some(0)
    }
}

static WARNINGS: LazyLock<Throttle> = LazyLock::new(|| Throttle::new(WARN_INTERVAL));

/// Whether the warning `key` may log now, process-wide; see [`Throttle::admit`].
pub fn admit(key: &str) -> Option<u64> {
    WARNINGS.admit(key, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_logs_once_per_interval_with_the_count_held_back() {
        let throttle = Throttle::new(Duration::from_secs(60));
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // (key, seconds after start, verdict)
        let table: &[(&str, u64, Option<u64>)] = &[
            ("poll failed: HTTP 500", 0, Some(0)),
            ("poll failed: HTTP 500", 1, None),
            ("poll failed: HTTP 500", 59, None),
            ("another warning", 59, Some(0)),
            ("poll failed: HTTP 500", 60, Some(2)),
            ("poll failed: HTTP 500", 61, None),
            ("poll failed: HTTP 500", 200, Some(1)),
            ("another warning", 200, Some(0)),
        ];
        for (key, secs, verdict) in table {
            assert_eq!(throttle.admit(key, at(*secs)), *verdict, "{key} at {secs}s");
        }
    }

    #[test]
    fn the_process_wide_throttle_holds_a_repeated_warning_back() {
        let key = "throttle test: the same warning twice";
        assert_eq!(admit(key), Some(0));
        assert_eq!(admit(key), None);
    }

    #[test]
    fn the_keys_held_are_bounded() {
        let throttle = Throttle::new(Duration::from_secs(60));
        let now = Instant::now();
        for n in 0..MAX_KEYS * 2 {
            assert_eq!(throttle.admit(&format!("fresh {n}"), now), Some(0));
        }
        assert!(throttle.keys.lock().unwrap().len() <= MAX_KEYS);
    }

    #[test]
    fn a_full_throttle_forgets_the_keys_whose_interval_passed_and_keeps_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(60));
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // Their interval passes at 61 s, just when the new key comes.
        for n in 0..MAX_KEYS - 1 {
            throttle.admit(&format!("old {n}"), at(1));
        }
        assert_eq!(throttle.admit("recent", at(30)), Some(0));
        // Full: a new key makes room by forgetting the old ones only.
        assert_eq!(throttle.admit("new", at(61)), Some(0));
        assert_eq!(throttle.keys.lock().unwrap().len(), 2);
        assert_eq!(throttle.admit("new", at(62)), None);
        assert_eq!(throttle.admit("recent", at(62)), None);
    }
}
