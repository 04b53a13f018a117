//! A database that cannot be written (a full disk, a read-only file system, a file made
//! immutable) is one outage, not one error per poll: the first failed write says so loudly, the
//! ones after it only at debug level, and the first write that succeeds again says the outage is
//! over and how long it lasted.
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

#[derive(Debug)]
struct Down {
    since: Instant,
    first_error: String,
    failures: u64,
}

/// The state of one database's outage.
#[derive(Debug, Default)]
pub struct Outage {
    down: Mutex<Option<Down>>,
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
        Outage {
            down: Mutex::new(None),
        }
    }

    /// The outage of the daemon's database (a daemon has one).
    pub fn database() -> &'static Outage {
        static DATABASE: Outage = Outage::new();
        &DATABASE
    }

    /// A write failed while doing `what`. Logs an ERROR when this starts an outage; true then.
    pub fn failed(&self, what: &str, error: &StorageError) -> bool {
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
                    since: Instant::now(),
                    first_error: error.to_string(),
                    failures: 1,
                });
                true
            }
        }
    }

    /// A write succeeded. Logs the end of an outage, if one was on; true then.
    pub fn succeeded(&self) -> bool {
        let ended = self.down.lock().unwrap_or_else(|p| p.into_inner()).take();
        match ended {
            Some(down) => {
                info!(
                    after = %humantime::format_duration(Duration::from_secs(down.since.elapsed().as_secs())),
                    failed_writes = down.failures,
                    "database writable again; polls and deliveries resume"
                );
                true
            }
            None => false,
        }
    }

    /// The outage under way, if any.
    pub fn current(&self) -> Option<OutageReport> {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|down| OutageReport {
                for_how_long: down.since.elapsed(),
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
    fn an_outage_is_reported_once_and_ends_with_the_first_success() {
        let outage = Outage::new();
        assert!(!outage.succeeded(), "no outage, nothing to end");
        assert_eq!(outage.current(), None);

        assert!(
            outage.failed("claiming shipments", &full()),
            "the first failure is said"
        );
        for _ in 0..50 {
            assert!(!outage.failed("claiming shipments", &full()));
        }
        let report = outage.current().expect("an outage is on");
        assert_eq!(report.failures, 51);
        assert!(report.error.contains("disk is full"), "{report:?}");

        assert!(outage.succeeded(), "the first success ends it");
        assert_eq!(outage.current(), None);
        assert!(!outage.succeeded());
        assert!(
            outage.failed("recording a poll", &full()),
            "a new outage is said again"
        );
    }
}
