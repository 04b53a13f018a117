//! What the dispatcher and the sender share: a bounded set of background tasks, the loop that
//! feeds it, and the drain on shutdown (tasks that outlast the grace period are told to give
//! their work back).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::warn;

pub struct Workers {
    size: usize,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    abort: CancellationToken,
}

impl Workers {
    pub fn new(size: usize) -> Self {
        Workers {
            size,
            slots: Arc::new(Semaphore::new(size)),
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
        }
    }

    /// Slots free for new tasks.
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }

    /// Starts a task in a free slot. Only the one loop that checked [`Workers::free`] spawns.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .expect("the feeding loop counted the free slots");
        self.tracker.spawn(async move {
            task.await;
            drop(permit);
        });
    }

    /// Fires when a task must give up its work: the shutdown grace is over.
    pub fn aborted(&self) -> WaitForCancellationFuture<'_> {
        self.abort.cancelled()
    }

    /// Waits until no task is running.
    pub async fn idle(&self) {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        drop(self.slots.acquire_many(all).await.expect("never closed"));
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
            }
        }
    }

    /// Lets running tasks finish within `grace`; after that they are aborted (and give their
    /// work back) and waited for.
    pub async fn drain(&self, grace: Duration, what: &str) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = self.tracker.len(),
                "{what} still running after the shutdown grace; releasing them"
            );
            self.abort.cancel();
            self.tracker.wait().await;
        }
    }
}

type WriteFn<J, O> =
    Arc<dyn Fn(Vec<J>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync>;

/// Group commit. SQLite takes one writer at a time and a commit costs far more than the rows in
/// it, so writes that tasks submit while a transaction is being written are gathered and written
/// together in the next one, by whichever task gets there first; each task gets its own outcome
/// back once its write is committed.
pub struct GroupWrite<J, O> {
    pending: Mutex<Vec<(J, oneshot::Sender<O>)>>,
    /// Held while a batch is written.
    leader: Arc<tokio::sync::Mutex<()>>,
    /// Writes a batch and returns one outcome per job, in order.
    write: WriteFn<J, O>,
}

impl<J: Send + 'static, O: Send + 'static> GroupWrite<J, O> {
    pub fn new<F, Fut>(write: F) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        GroupWrite {
            pending: Mutex::new(Vec::new()),
            leader: Arc::new(tokio::sync::Mutex::new(())),
            write: Arc::new(move |jobs| Box::pin(write(jobs))),
        }
    }

    /// Submits one write and waits until it is committed, with others or alone. `None` when the
    /// write was lost: the task writing its batch failed outright.
    pub async fn submit(&self, job: J) -> Option<O> {
        let (done, mut outcome) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending writes lock")
            .push((job, done));
        loop {
            tokio::select! {
                biased;
                answer = &mut outcome => return answer.ok(),
                leader = self.leader.clone().lock_owned() => {
                    let batch = std::mem::take(&mut *self.pending.lock().expect("pending writes lock"));
                    if batch.is_empty() {
                        continue;
                    }
                    // A task of its own, holding the lock to the end, so that a caller cancelled
                    // mid-write (shutdown) cannot leave the others without their outcome.
                    let write = self.write.clone();
                    let _ = tokio::spawn(async move {
                        let (jobs, replies): (Vec<J>, Vec<_>) = batch.into_iter().unzip();
                        for (reply, out) in replies.into_iter().zip(write(jobs).await) {
                            let _ = reply.send(out);
                        }
                        drop(leader);
                    })
                    .await;
                }
            }
        }
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
        workers.drain(Duration::from_secs(10), "tasks").await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(finished.load(Ordering::SeqCst), 2);
        assert_eq!(released.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn group_writes_gather_what_waits_and_answer_each_its_own() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let group = Arc::new(GroupWrite::new(move |jobs: Vec<u32>| {
            seen.lock().unwrap().push(jobs.len());
            async move { jobs.into_iter().map(|j| j * 10).collect::<Vec<_>>() }
        }));
        // Hold the writer so that every submission queues up behind it.
        let held = group.leader.clone().lock_owned().await;
        let tasks: Vec<_> = (1..=5u32)
            .map(|j| {
                let group = group.clone();
                tokio::spawn(async move { group.submit(j).await })
            })
            .collect();
        while group.pending.lock().unwrap().len() < 5 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        assert_eq!(answers, [10, 20, 30, 40, 50].map(Some));
        assert_eq!(*batches.lock().unwrap(), [5], "one batch for all five");
    }

    #[tokio::test(start_paused = true)]
    async fn feed_rounds_until_stopped() {
        let workers = Workers::new(1);
        let stop = CancellationToken::new();
        let rounds = AtomicUsize::new(0);
        let (rounds_ref, stopper) = (&rounds, &stop);
        workers
            .feed(&stop, || async move {
                if rounds_ref.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                    stopper.cancel();
                }
                Duration::from_secs(1)
            })
            .await;
        assert_eq!(rounds.load(Ordering::SeqCst), 5);
    }
}
