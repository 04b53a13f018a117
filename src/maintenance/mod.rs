//! Maintenance on wall-clock schedules: giving up on parcels with no news, flagging those the
//! carrier never saw, alerting the shop about stalled ones, pruning old history and keeping the
//! WAL small.
//!
//! Each step is a plain async function over the database and an explicit `now`, one short write
//! transaction, so tests drive it directly. [`Maintenance`] runs the steps on cron schedules
//! (interpreted in the configured time zone). tokio-cron-scheduler starts a job again while its
//! previous run is still going, and its shutdown does not wait for running jobs; so every job
//! runs through a [`Guarded`] runner that skips a run while the previous one is busy, and
//! [`Maintenance::shutdown`] drains the runs in flight itself.

mod steps;

use crate::config::InvalidMaintenance;
pub use crate::config::{MaintenanceConfig, POLL_HORIZON, Schedules};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::clock::SharedClock;
use crate::events::{Events, PipelineEvent};
use crate::notify::ChannelRule;
use crate::outage::Outage;
use crate::storage::{Db, Result, StorageError};
use crate::workers::Grace;

pub use crate::storage::{Checkpointed, Pruned};
pub use steps::{
    BATCH, Changed, MOVING, checkpoint, expire_changes, no_info_changes, prune, span, stuck_alerts,
};

// ---- running them -----------------------------------------------------------------------------

/// The runs in flight of every job, and the shutdown they obey.
#[derive(Clone, Default)]
pub struct Runner {
    tasks: TaskTracker,
    /// No new runs start once set.
    stopping: CancellationToken,
    /// Runs still going after the shutdown grace are cut short (their transaction rolls back).
    abort: CancellationToken,
}

/// One job's runs: never two at once.
#[derive(Clone)]
pub struct Guarded {
    name: &'static str,
    running: Arc<AtomicBool>,
    runner: Runner,
}

/// Clears a job's running flag however its run ends, panics included.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Runner {
    pub fn new() -> Self {
        Runner::default()
    }

    pub fn guarded(&self, name: &'static str) -> Guarded {
        Guarded {
            name,
            running: Arc::new(AtomicBool::new(false)),
            runner: self.clone(),
        }
    }

    /// Runs in flight, all jobs together.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Refuses new runs and waits for those in flight; after `grace` (or once it is cut short)
    /// they are cut short and waited for. Returns false when some had to be cut short.
    pub async fn drain(&self, grace: &Grace) -> bool {
        self.stopping.cancel();
        self.tasks.close();
        let finished = tokio::select! {
            _ = self.tasks.wait() => true,
            _ = grace.over(tokio::time::Instant::now()) => false,
        };
        if finished {
            return true;
        }
        warn!(
            in_flight = self.tasks.len(),
            "maintenance jobs still running after the shutdown grace; cutting them short"
        );
        self.abort.cancel();
        self.tasks.wait().await;
        false
    }
}

impl Guarded {
    /// Starts `body` in a tracked task unless this job's previous run is still going or shutdown
    /// has begun. Returns whether it started.
    pub fn run(&self, body: impl Future<Output = ()> + Send + 'static) -> bool {
        if self.runner.stopping.is_cancelled() {
            debug!(job = self.name, "shutting down; run skipped");
            return false;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            debug!(
                job = self.name,
                "previous run still going; this one skipped"
            );
            return false;
        }
        let running = Running(self.running.clone());
        let abort = self.runner.abort.clone();
        let name = self.name;
        self.runner.tasks.spawn(async move {
            let _running = running;
            tokio::select! {
                _ = body => {}
                _ = abort.cancelled() => warn!(job = name, "run cut short by shutdown"),
            }
        });
        true
    }
}

/// What every job needs.
struct Context {
    db: Db,
    clock: SharedClock,
    config: MaintenanceConfig,
    channels: Vec<ChannelRule>,
    events: Events,
    /// Where a failed write is reported: the database's one outage, which `/healthz` reads and
    /// which says "not writable" and "writable again" once each, whoever failed or succeeded.
    outage: &'static Outage,
}

impl Context {
    /// A job's write failed while doing `what`.
    fn failed(&self, what: &str, error: &StorageError) {
        self.outage.failed(what, error);
    }

    /// A job wrote something: the database is writable.
    fn wrote(&self) {
        self.outage.succeeded();
    }

    fn announce(&self, changed: Vec<Changed>) {
        for c in changed {
            self.events.emit(PipelineEvent::StatusChanged {
                order_id: c.order_id,
                provider: c.provider,
                tier: c.tier,
                from: c.from,
                to: c.to,
                raw_status: c.raw_status,
            });
        }
    }

    async fn expire_job(&self) {
        let now = self.clock.now();
        match steps::expire_changes(&self.db, now, self.config.expire_after, &self.channels).await {
            Ok(changed) if !changed.is_empty() => {
                self.wrote();
                info!(expired = changed.len(), "shipments expired after no update");
                self.announce(changed);
            }
            Ok(_) => {}
            Err(e) => self.failed("expiring shipments with no update", &e),
        }
        match steps::no_info_changes(&self.db, now, self.config.no_info_after, &self.channels).await
        {
            Ok(changed) if !changed.is_empty() => {
                self.wrote();
                info!(
                    flagged = changed.len(),
                    "shipments flagged for lack of carrier information"
                );
                self.announce(changed);
            }
            Ok(_) => {}
            Err(e) => self.failed("flagging shipments without carrier information", &e),
        }
        match steps::unreachable_polls(&self.db, now).await {
            Ok(invalid) => {
                if !invalid.is_empty() {
                    self.wrote();
                }
                for (order_id, reason) in invalid {
                    warn!(%order_id, %reason, "shipment invalid");
                    self.events
                        .emit(PipelineEvent::ShipmentInvalid { order_id, reason });
                }
            }
            Err(e) => self.failed("looking for shipments that would never be polled", &e),
        }
    }

    async fn stuck_job(&self) {
        let now = self.clock.now();
        match steps::stuck_alerts(&self.db, now, self.config.stuck_after, &self.channels).await {
            Ok(orders) if !orders.is_empty() => {
                self.wrote();
                info!(alerts = orders.len(), ?orders, "stuck shipments reported");
            }
            Ok(_) => {}
            Err(e) => self.failed("looking for stuck shipments", &e),
        }
    }

    async fn prune_job(&self) {
        match prune(&self.db, self.clock.now(), self.config.retain).await {
            Ok(p) if p != Pruned::default() => {
                self.wrote();
                info!(
                    notifications = p.notifications,
                    events = p.events,
                    "old notifications and events pruned"
                )
            }
            Ok(_) => {}
            Err(e) => self.failed("pruning old notifications and events", &e),
        }
    }

    async fn checkpoint_job(&self) {
        match checkpoint(&self.db).await {
            Ok(c) if c.busy => debug!("WAL checkpoint could not finish: readers are busy"),
            Ok(c) if c.checkpointed_frames > 0 => {
                info!(frames = c.checkpointed_frames, "WAL checkpointed")
            }
            Ok(_) => {}
            Err(e) => self.failed("checkpointing the WAL", &e),
        }
    }
}

#[derive(Clone, Copy)]
enum Step {
    Expire,
    Stuck,
    Prune,
    Checkpoint,
}

/// Why the maintenance jobs could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Invalid(#[from] InvalidMaintenance),
    #[error("cannot start the maintenance scheduler: {0}")]
    Scheduler(JobSchedulerError),
    #[error("[maintenance.schedules] {name} = {expr:?} is not a cron expression")]
    Schedule { name: &'static str, expr: String },
    #[error("cannot schedule maintenance job {name}: {error}")]
    Add {
        name: &'static str,
        error: JobSchedulerError,
    },
}

/// The maintenance jobs, running on their schedules until [`Maintenance::shutdown`].
pub struct Maintenance {
    scheduler: JobScheduler,
    runner: Runner,
}

impl Maintenance {
    /// Validates `config` and starts the four jobs. `channels` are the enabled notification
    /// channels, as the poller gets them; `events` hears of every status change made here.
    pub async fn start(
        db: Db,
        clock: SharedClock,
        config: MaintenanceConfig,
        channels: Vec<ChannelRule>,
        events: Events,
    ) -> Result<Maintenance, StartError> {
        config.validate()?;
        let scheduler = JobScheduler::new().await.map_err(StartError::Scheduler)?;
        let runner = Runner::new();
        let schedules = config.schedules.clone();
        let tz = config.timezone;
        let context = Arc::new(Context {
            db,
            clock,
            config,
            channels,
            events,
            outage: Outage::database(),
        });
        for ((name, expr), step) in schedules.named().into_iter().zip([
            Step::Expire,
            Step::Stuck,
            Step::Prune,
            Step::Checkpoint,
        ]) {
            let guarded = runner.guarded(name);
            let context = context.clone();
            let job = Job::new_async_tz(expr, tz, move |_, _| {
                let context = context.clone();
                guarded.run(async move {
                    // Several daemons on one PostgreSQL database: one of them runs each job.
                    let lock = match context.db.maintenance_lock(name).await {
                        Ok(Some(lock)) => lock,
                        Ok(None) => {
                            debug!(
                                job = name,
                                "another daemon is running this job; run skipped"
                            );
                            return;
                        }
                        Err(e) => {
                            context.failed("taking the maintenance job's lock", &e);
                            return;
                        }
                    };
                    match step {
                        Step::Expire => context.expire_job().await,
                        Step::Stuck => context.stuck_job().await,
                        Step::Prune => context.prune_job().await,
                        Step::Checkpoint => context.checkpoint_job().await,
                    }
                    lock.release().await;
                });
                Box::pin(async {})
            })
            .map_err(|_| StartError::Schedule {
                name,
                expr: expr.to_owned(),
            })?;
            scheduler
                .add(job)
                .await
                .map_err(|error| StartError::Add { name, error })?;
        }
        scheduler.start().await.map_err(StartError::Scheduler)?;
        Ok(Maintenance { scheduler, runner })
    }

    /// Runs in flight right now.
    pub fn in_flight(&self) -> usize {
        self.runner.in_flight()
    }

    /// Stops scheduling, then waits up to `grace` for the runs in flight (cut short after that).
    /// Returns false when some had to be cut short.
    pub async fn shutdown(mut self, grace: &Grace) -> bool {
        // Refuse new runs first: a tick may still fire while the scheduler winds down.
        self.runner.stopping.cancel();
        if let Err(e) = self.scheduler.shutdown().await {
            warn!("maintenance scheduler did not stop cleanly: {e}");
        }
        self.runner.drain(grace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Millis;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);
    const HOUR: Duration = Duration::from_secs(3_600);

    /// A job's failed write is the database's outage (what `/healthz` reports and "DATABASE NOT
    /// WRITABLE" says once), not a warning of its own; a job that writes again ends it.
    #[tokio::test]
    async fn a_failed_job_write_is_the_outage_and_a_later_write_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let db = Db::open(&path, crate::storage::Synchronous::Normal)
            .await
            .unwrap();
        let outage: &'static Outage = Box::leak(Box::new(Outage::settling_for(Duration::ZERO)));
        let clock = Arc::new(crate::clock::ManualClock::new(1_700_000_000_000));
        let context = |db: Db| Context {
            db,
            clock: clock.clone(),
            config: MaintenanceConfig::default(),
            channels: Vec::new(),
            events: Events::default(),
            outage,
        };
        db.close().await;
        let closed = context(db);
        closed.prune_job().await;
        closed.checkpoint_job().await;
        let report = outage.current().expect("the failed writes are an outage");
        assert_eq!(report.failures, 2);

        // Writable again: a job that writes something ends the outage.
        let db = Db::open(&path, crate::storage::Synchronous::Normal)
            .await
            .unwrap();
        let now = crate::clock::Clock::now(clock.as_ref());
        db.add_shipment(
            &crate::storage::NewShipment::plain("M1", "sim"),
            now - 400 * DAY.as_millis() as Millis,
        )
        .await
        .unwrap();
        let open = context(db.clone());
        open.expire_job().await;
        assert_eq!(
            outage.current(),
            None,
            "the expiry wrote, so the outage is over"
        );
        db.close().await;
    }

    #[test]
    fn defaults_validate() {
        MaintenanceConfig::default().validate().unwrap();
    }

    #[test]
    fn a_bad_schedule_is_named() {
        let mut config = MaintenanceConfig::default();
        config.schedules.prune = "every night".to_owned();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("prune = \"every night\""), "{err}");
        assert!(!err.contains('\n'));
        // Five fields (no seconds) is the classic mistake.
        config.schedules.prune = "30 3 * * *".to_owned();
        assert!(config.validate().unwrap_err().to_string().contains("prune"));
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(30 * DAY), "30 days");
        assert_eq!(span(DAY), "1 day");
        assert_eq!(span(72 * HOUR), "3 days");
        assert_eq!(span(36 * HOUR), "36 hours");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_never_overlaps_itself_and_shutdown_waits_for_it() {
        let runner = Runner::new();
        let job = runner.guarded("slow");
        let (running, peak, runs) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let body = || {
            let (running, peak, runs) = (running.clone(), peak.clone(), runs.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Outlasts the one-second period below.
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                runs.fetch_add(1, Ordering::SeqCst);
            }
        };
        let mut started = 0;
        // Ticks at 0 s, 1 s … 5 s, as a one-second cron would fire them.
        for tick in 0..6 {
            if job.run(body()) {
                started += 1;
            }
            if tick < 5 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        // Started at 0 s and 3 s; the run from 5 s was refused while the 3 s one was busy...
        assert_eq!(peak.load(Ordering::SeqCst), 1);
        assert_eq!(started, 2);
        assert_eq!(runner.in_flight(), 1);
        let begun = tokio::time::Instant::now();
        assert!(runner.drain(&Grace::new(Duration::from_secs(10))).await);
        // ...and shutdown waited for the one in flight (started at 3 s, done at 5.5 s).
        assert_eq!(begun.elapsed(), Duration::from_millis(500));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(!job.run(body()), "no run starts after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_short_a_run_past_the_grace() {
        let runner = Runner::new();
        let job = runner.guarded("stuck");
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        assert!(job.run(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            done.store(true, Ordering::SeqCst);
        }));
        let begun = tokio::time::Instant::now();
        assert!(!runner.drain(&Grace::new(Duration::from_secs(5))).await);
        assert_eq!(begun.elapsed(), Duration::from_secs(5));
        assert!(!finished.load(Ordering::SeqCst));
        assert_eq!(runner.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_panicking_run_frees_its_job() {
        let runner = Runner::new();
        let job = runner.guarded("boom");
        assert!(job.run(async { panic!("a bug in a job body") }));
        runner.tasks.close();
        runner.tasks.wait().await;
        assert!(job.run(async {}));
    }
}
