//! What the dispatcher and the sender share: a bounded set of background tasks, the loop that
//! feeds it, and the drain on shutdown (tasks that outlast the grace period are told to give
//! their work back).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::warn;

mod claim;
mod pace;
pub use claim::{renewal_due, wait_keeping_claim};
pub use pace::Pace;

/// How long the shutdown lets work in flight finish: its period from the moment each drain
/// begins, or until it is cut short (a second SIGTERM or Ctrl-C), whichever comes first. Clones
/// share the cut.
#[derive(Debug, Clone)]
pub struct Grace {
    pub period: Duration,
    cut: CancellationToken,
}

impl Grace {
    pub fn new(period: Duration) -> Grace {
        Grace {
            period,
            cut: CancellationToken::new(),
        }
    }

    /// Ends the grace now, for every drain under way or to come.
    pub fn cut_short(&self) {
        self.cut.cancel();
    }

    pub fn is_cut(&self) -> bool {
        self.cut.is_cancelled()
    }

    /// Completes when work still in flight, with a drain begun `since`, must give up.
    pub async fn over(&self, since: tokio::time::Instant) {
        tokio::select! {
            _ = tokio::time::sleep_until(since + self.period) => {}
            _ = self.cut.cancelled() => {}
        }
    }
}

pub struct Workers {
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    abort: CancellationToken,
    /// Tasks not yet finished, slot or no slot, and the bell rung as each ends.
    running: Arc<(AtomicUsize, Notify)>,
    /// Rung when work held back may start before a slot frees ([`Workers::nudge`]).
    nudge: Notify,
}

/// A task's place among the workers. A task may give it up before it ends (a poll, once its
/// answer is handed to the writer), letting the next task start while it waits.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Slot {
    /// Frees the slot for the next task.
    pub fn free(self) {}
}

impl Workers {
    pub fn new(size: usize) -> Self {
        Workers {
            slots: Arc::new(Semaphore::new(size)),
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            running: Arc::new((AtomicUsize::new(0), Notify::new())),
            nudge: Notify::new(),
        }
    }

    /// Slots free for new tasks.
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }

    /// Starts a task in a free slot. Only the one loop that checked [`Workers::free`] spawns.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn_with_slot(|slot| async move {
            task.await;
            slot.free();
        });
    }

    /// Starts a task in a free slot, handing it the slot to free when it no longer needs it
    /// (at the latest, when it ends). Only the one loop that checked [`Workers::free`] spawns.
    pub fn spawn_with_slot<F, T>(&self, task: F)
    where
        F: FnOnce(Slot) -> T,
        T: Future<Output = ()> + Send + 'static,
    {
        let slot = Slot(
            self.slots
                .clone()
                .try_acquire_owned()
                .expect("the feeding loop counted the free slots"),
        );
        self.running.0.fetch_add(1, Ordering::SeqCst);
        // Counted out when the task ends, even by a panic.
        let counted = Running(self.running.clone());
        let task = task(slot);
        self.tracker.spawn(async move {
            task.await;
            drop(counted);
        });
    }

    /// Fires when a task must give up its work: the shutdown grace is over.
    pub fn aborted(&self) -> WaitForCancellationFuture<'_> {
        self.abort.cancelled()
    }

    /// Waits until no task is running.
    pub async fn idle(&self) {
        let (count, ended) = &*self.running;
        loop {
            let bell = ended.notified();
            tokio::pin!(bell);
            // Listening before looking: an end between the look and the wait still rings.
            bell.as_mut().enable();
            if count.load(Ordering::SeqCst) == 0 {
                return;
            }
            bell.await;
        }
    }

    /// Runs `round` until `stop` fires. `round` starts what work there is and says how long to
    /// sleep if slots are still free; when every slot is busy the next round comes as soon as
    /// one frees.
    pub async fn feed<F>(&self, stop: &CancellationToken, mut round: impl FnMut() -> F)
    where
        F: Future<Output = Duration>,
    {
        while !stop.is_cancelled() {
            let wait = round().await;
            let full = self.free() == 0;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.slots.acquire(), if full => {}
                _ = tokio::time::sleep(wait), if !full => {}
                _ = self.nudge.notified(), if !full => {}
            }
        }
    }

    /// Ends [`Workers::feed`]'s wait for the next round: work it held back (a provider's
    /// shipments, while its bucket had all the polls it could take) may start now. A round
    /// already under way is followed by another at once.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Lets running tasks finish within `grace`, counted from `since`; after that, or once the
    /// grace is cut short, they are aborted (and give their work back) and waited for.
    pub async fn drain(&self, grace: &Grace, since: tokio::time::Instant, what: &str) {
        self.tracker.close();
        let finished = tokio::select! {
            _ = self.tracker.wait() => true,
            _ = grace.over(since) => false,
        };
        if !finished {
            if grace.is_cut() {
                warn!(
                    in_flight = self.tracker.len(),
                    "{what} still running at the second stop signal; releasing them now"
                );
            } else {
                warn!(
                    in_flight = self.tracker.len(),
                    "{what} still running after the shutdown grace; releasing them"
                );
            }
            self.abort.cancel();
            self.tracker.wait().await;
        }
    }
}

struct Running(Arc<(AtomicUsize, Notify)>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn drain_waits_within_the_grace_then_aborts_the_rest() {
        let workers = Arc::new(Workers::new(4));
        let finished = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        for secs in [1, 2, 60, 120] {
            let (w, finished, released) = (workers.clone(), finished.clone(), released.clone());
            workers.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(secs)) => finished.fetch_add(1, Ordering::SeqCst),
                    _ = w.aborted() => released.fetch_add(1, Ordering::SeqCst),
                };
            });
        }
        assert_eq!(workers.free(), 0);
        let start = tokio::time::Instant::now();
        workers
            .drain(&Grace::new(Duration::from_secs(10)), start, "tasks")
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(finished.load(Ordering::SeqCst), 2);
        assert_eq!(released.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_grace_cut_short_aborts_at_once() {
        let workers = Arc::new(Workers::new(2));
        let released = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let (w, released) = (workers.clone(), released.clone());
            workers.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                    _ = w.aborted() => { released.fetch_add(1, Ordering::SeqCst); }
                };
            });
        }
        let grace = Grace::new(Duration::from_secs(300));
        let cutter = grace.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cutter.cut_short();
        });
        let start = tokio::time::Instant::now();
        workers.drain(&grace, start, "tasks").await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(released.load(Ordering::SeqCst), 2);
        assert!(grace.is_cut());
    }

    /// Runs [`Workers::feed`] for `rounds` rounds and gives the time each started, from the
    /// first. `round(n, workers)` is the n-th round (from 0): it starts what it likes and gives
    /// the wait.
    async fn round_times(
        workers: &Workers,
        rounds: usize,
        mut round: impl FnMut(usize, &Workers) -> Duration,
    ) -> Vec<Duration> {
        let stop = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        workers
            .feed(&stop, || {
                times.push(start.elapsed());
                if times.len() == rounds {
                    stop.cancel();
                }
                let wait = round(times.len() - 1, workers);
                async move { wait }
            })
            .await;
        times
    }

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn with_slots_free_rounds_come_one_wait_apart_until_stopped() {
        let workers = Workers::new(2);
        let times = round_times(&workers, 5, |n, _| Duration::from_secs(n as u64 + 1)).await;
        assert_eq!(times, secs(&[0, 1, 3, 6, 10]));
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_slot_busy_the_next_round_comes_when_one_frees() {
        let workers = Workers::new(2);
        let times = round_times(&workers, 3, |n, workers| {
            if n == 0 {
                for secs in [7, 4] {
                    workers.spawn(tokio::time::sleep(Duration::from_secs(secs)));
                }
            }
            Duration::from_secs(60)
        })
        .await;
        // The task of 4 s frees its slot: the round's wait of 60 s is not slept. With that slot
        // free again, the next wait is.
        assert_eq!(times, secs(&[0, 4, 64]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_nudge_starts_the_next_round_at_once() {
        let workers = Arc::new(Workers::new(2));
        let nudger = workers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            nudger.nudge();
        });
        let times = round_times(&workers, 4, |n, workers| {
            // A nudge during a round is not lost: the next round follows at once.
            if n == 1 {
                workers.nudge();
            }
            Duration::from_secs(60)
        })
        .await;
        assert_eq!(times, secs(&[0, 5, 5, 65]));
    }
}
