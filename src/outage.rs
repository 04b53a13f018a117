//! A database that cannot be written (a full disk, a read-only file system, a file made
//! immutable) is one outage, not one error per poll: the first failed write says so loudly, the
//! ones after it only at debug level, and the first write that succeeds again says the outage is
//! over and how long it lasted.
//!
//! A full disk still takes a small write now and then (into space a failed transaction had
//! already allocated), so one success does not end an outage: writes must go on succeeding,
//! with no failure, for [`SETTLE`]. Otherwise one outage would be said as several (seen: a claim
//! got through and the writer's round 10 ms later failed, two ERROR lines for one outage).
//!
//! Nothing is held in memory meanwhile. A poll that cannot be recorded is forgotten and repeated
//! once the database is writable (the shipment is still due, and upstream still has the trace);
//! a delivery whose outcome cannot be recorded keeps its row pending and is attempted again when
//! its lease ends. The dispatcher and the sender go on trying each scan interval, so they resume
//! by themselves.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

use crate::storage::StorageError;

/// How long writes must go on succeeding, with no failure, before an outage is over: long enough
/// that the failing write right after a lucky one (the same round of the writer) keeps the
/// outage on, short enough that `/healthz` is healthy again within a scan of the database
/// being writable.
pub const SETTLE: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Down {
    since: Instant,
    first_error: String,
    failures: u64,
    /// The first success since the last failure, if any: the outage ends [`SETTLE`] after it.
    recovering_since: Option<Instant>,
}

/// The state of one database's outage.
#[derive(Debug)]
pub struct Outage {
    down: Mutex<Option<Down>>,
    settle: Duration,
}

impl Default for Outage {
    fn default() -> Outage {
        Outage::new()
    }
}

/// What an outage looks like from outside, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutageReport {
    pub for_how_long: Duration,
    pub error: String,
    pub failures: u64,
}

impl Outage {
    pub const fn new() -> Outage {
        Outage::settling_for(SETTLE)
    }

    /// An outage that ends once writes have succeeded for `settle` (zero: at the first).
    pub const fn settling_for(settle: Duration) -> Outage {
        Outage {
            down: Mutex::new(None),
            settle,
        }
    }

    /// The outage of the daemon's database (a daemon has one).
    pub fn database() -> &'static Outage {
        static DATABASE: Outage = Outage::new();
        &DATABASE
    }

    /// A write failed while doing `what`. Logs an ERROR when this starts an outage; true then.
    pub fn failed(&self, what: &str, error: &StorageError) -> bool {
        self.failed_at(what, error, Instant::now())
    }

    fn failed_at(&self, what: &str, error: &StorageError, now: Instant) -> bool {
        if !error.is_outage() {
            // A row the database refused or could not hand over is that row's trouble: the
            // database is fine, and saying otherwise would send operators after the disk.
            error!(%error, "{what} failed");
            return false;
        }
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match down.as_mut() {
            Some(down) => {
                down.failures += 1;
                down.recovering_since = None;
                debug!(%error, "{what}: the database is still not writable");
                false
            }
            None => {
                error!(
                    %error,
                    "DATABASE NOT WRITABLE ({what}): polls and deliveries wait until it is writable \
                     again (full disk? read-only file system?); nothing queued is lost, and this is \
                     said once per outage"
                );
                *down = Some(Down {
                    since: now,
                    first_error: error.to_string(),
                    failures: 1,
                    recovering_since: None,
                });
                true
            }
        }
    }

    /// A write succeeded. Logs the end of an outage when writes have gone on succeeding for
    /// the settling time; true then.
    pub fn succeeded(&self) -> bool {
        self.succeeded_at(Instant::now())
    }

    fn succeeded_at(&self, now: Instant) -> bool {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(recovering) = down.as_mut() {
            recovering.recovering_since.get_or_insert(now);
        }
        self.end_if_settled(&mut down, now)
    }

    /// Ends the outage in `down` if writes have succeeded for the settling time by `now`, and
    /// says so; true then.
    fn end_if_settled(&self, down: &mut Option<Down>, now: Instant) -> bool {
        let Some(ended) = down.take_if(|down| {
            down.recovering_since
                .is_some_and(|since| now.saturating_duration_since(since) >= self.settle)
        }) else {
            return false;
        };
        info!(
            after = %humantime::format_duration(Duration::from_secs(now.saturating_duration_since(ended.since).as_secs())),
            failed_writes = ended.failures,
            "database writable again; polls and deliveries resume"
        );
        true
    }

    /// The outage under way, if any. One whose writes have succeeded for the settling time
    /// ends here, even when no write came since.
    pub fn current(&self) -> Option<OutageReport> {
        self.current_at(Instant::now())
    }

    fn current_at(&self, now: Instant) -> Option<OutageReport> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        self.end_if_settled(&mut down, now);
        down.as_ref().map(|down| OutageReport {
            for_how_long: now.saturating_duration_since(down.since),
            error: down.first_error.clone(),
            failures: down.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StorageError {
        StorageError::Sql(sqlx::Error::Protocol("database or disk is full".to_owned()))
    }

    #[test]
    fn an_outage_is_reported_once_and_ends_after_writes_have_succeeded_for_the_settling_time() {
        let outage = Outage::new();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(!outage.succeeded_at(at(0)), "no outage, nothing to end");
        assert_eq!(outage.current_at(at(0)), None);

        assert!(
            outage.failed_at("claiming shipments", &full(), at(0)),
            "the first failure is said"
        );
        for ms in 1..=50 {
            assert!(!outage.failed_at("claiming shipments", &full(), at(ms)));
        }
        let report = outage.current_at(at(50)).expect("an outage is on");
        assert_eq!(report.failures, 51);
        assert!(report.error.contains("disk is full"), "{report:?}");

        assert!(!outage.succeeded_at(at(100)), "one success is not the end");
        assert!(!outage.succeeded_at(at(200)));
        assert!(outage.current_at(at(349)).is_some(), "still settling");
        assert!(outage.succeeded_at(at(350)), "250 ms of successes end it");
        assert_eq!(outage.current_at(at(350)), None);
        assert!(!outage.succeeded_at(at(400)));
        assert!(
            outage.failed_at("recording a poll", &full(), at(1_000)),
            "a new outage is said again"
        );
    }

    /// What a full disk does: a small write gets through now and then between failures. That is
    /// one outage, said once, not one per success.
    #[test]
    fn a_success_between_failures_does_not_end_the_outage() {
        let outage = Outage::new();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(outage.failed_at("recording a poll", &full(), at(0)));
        for round in 0..10 {
            let ms = 500 + round * 1_000;
            assert!(!outage.succeeded_at(at(ms)), "round {round}");
            assert!(!outage.succeeded_at(at(ms + 5)), "round {round}");
            assert!(!outage.failed_at("recording a poll", &full(), at(ms + 10)));
        }
        assert!(!outage.succeeded_at(at(20_000)));
        let report = outage
            .current_at(at(20_249))
            .expect("the outage is still on");
        assert_eq!(report.failures, 11);
        assert_eq!(report.for_how_long, Duration::from_millis(20_249));
    }

    /// With no write after the successes (nothing left to do), the outage still ends once the
    /// settling time has passed: whoever asks (`/healthz`, the metrics, the ops alerts) ends it.
    #[test]
    fn an_outage_whose_writes_succeeded_ends_when_asked_after_the_settling_time() {
        let outage = Outage::new();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(outage.failed_at("claiming shipments", &full(), at(0)));
        assert!(!outage.succeeded_at(at(10)));
        assert!(outage.current_at(at(200)).is_some());
        assert_eq!(outage.current_at(at(260)), None);
    }

    #[test]
    fn with_no_settling_time_the_first_success_ends_it() {
        let outage = Outage::settling_for(Duration::ZERO);
        assert!(outage.failed("claiming shipments", &full()));
        assert!(outage.succeeded());
        assert_eq!(outage.current(), None);
    }

    /// The dispatcher and the sender record the database's failures where `/healthz`, the
    /// metrics and the ops alerts look for them: one outage, whoever asks.
    #[test]
    fn the_database_s_outage_is_the_same_one_for_everyone() {
        assert!(std::ptr::eq(Outage::database(), Outage::database()));
    }
}
