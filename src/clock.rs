//! Wall-clock time, injected so that schedules can be tested without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, FixedOffset, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC: the unit of every time column in the database.
pub type Millis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Millis;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        ManualClock(AtomicI64::new(start))
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn set(&self, to: Millis) {
        self.0.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Carriers and platforms report local time in China; events keep that offset.
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// A database time shown to people and scripts: RFC 3339 in Asia/Shanghai.
pub fn to_rfc3339(ms: Millis) -> String {
    to_shanghai(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A database time in Asia/Shanghai. A time beyond what a calendar can show is shown as the
/// farthest one on its side (never as 1970, which would read as "long over").
pub fn to_shanghai(ms: Millis) -> DateTime<FixedOffset> {
    // A day inside the calendar's ends, so that the +08:00 offset does not fall off them.
    let day = chrono::TimeDelta::days(1);
    let utc = Utc.timestamp_millis_opt(ms).single().unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC + day
    } else {
        DateTime::<Utc>::MAX_UTC - day
    });
    utc.with_timezone(&shanghai())
}

pub fn millis(duration: std::time::Duration) -> Millis {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_shanghai() {
        assert_eq!(to_rfc3339(0), "1970-01-01T08:00:00+08:00");
        // Out of the calendar's range: the farthest date on that side, not the epoch.
        assert!(
            to_rfc3339(i64::MAX).starts_with("+262"),
            "{}",
            to_rfc3339(i64::MAX)
        );
        assert!(
            to_rfc3339(i64::MIN).starts_with("-262"),
            "{}",
            to_rfc3339(i64::MIN)
        );
        assert_eq!(to_rfc3339(1_451_620_800_000), "2016-01-01T12:00:00+08:00");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.advance(std::time::Duration::from_secs(2));
        assert_eq!(clock.now(), 3_000);
        // Set, it goes to that time, backwards too (a test's clock stepping back).
        clock.set(500);
        assert_eq!(clock.now(), 500);
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock_in_milliseconds() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let read = SystemClock.now();
        assert!(
            (read - millis(wall)).abs() < 60_000,
            "{read} against {}",
            millis(wall)
        );
    }
}
