//! The daemon's one writer: a task that owns the write connection for the work that never
//! stops (polls recorded, deliveries marked sent, shipments and notifications claimed) and
//! writes whatever is waiting in one transaction of a handful of statements, instead of a
//! transaction, and several hops to SQLite's thread, per poll.
//!
//! Whoever hands work over gets its own outcome back once the transaction that holds it is
//! committed. Marks go first, in a transaction of their own: an attempt is counted before its
//! message leaves (the sender waits for that), and a delivery that reached its receiver is
//! recorded before anything else, so that a crash repeats as few as possible. A
//! batch that fails is written again one job at a time, so that one bad row costs only its own
//! job. A connection whose transaction failed is closed, never reused: a failed `COMMIT` can
//! leave it inside its transaction.

use std::sync::{Arc, OnceLock};

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::outbox::claim_notifications;
use super::polls::record_polls;
use super::receipts::{Receipt, Receipts};
use super::shipments::claim_due_shipments;
use super::{ClaimedNotification, Db, Decide, Recorded, Result, ShipmentRow, StorageError};
use crate::clock::Millis;
use crate::domain::ChannelKind;

/// Jobs waiting for the writer in each of its queues, at most; whoever hands over more waits
/// for room.
const QUEUE: usize = 4096;
/// Polls written in one round, at most. A `sent` mark that arrives during a round waits for its
/// end, so rounds are kept short: a millisecond or two.
const ROUND: usize = 64;
/// A round of polls only, smaller than this, waits up to [`LINGER`] for more to join it.
const LINGER_BELOW: usize = 32;
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

type Reply<T> = oneshot::Sender<Result<T>>;

/// A poll to record: the shipment, and what decides the write once its row is read.
pub type PollJob = (i64, Box<dyn Decide + Send + Sync>);

enum Job {
    Started((i64, Millis), Reply<bool>),
    Sent(i64, Millis, Reply<()>),
    Poll(PollJob, Reply<Recorded>),
    ClaimShipments(ShipmentClaim, Reply<Vec<ShipmentRow>>),
    ClaimNotifications(NotificationClaim, Reply<Vec<ClaimedNotification>>),
}

/// What [`Writer::claim_shipments`] asks for.
#[derive(Debug, Clone)]
pub struct ShipmentClaim {
    pub now: Millis,
    pub claimed_until: Millis,
    /// Providers whose shipments are left alone.
    pub paused: Vec<String>,
    pub limit: usize,
}

/// What [`Writer::claim_notifications`] asks for.
#[derive(Debug, Clone)]
pub struct NotificationClaim {
    pub now: Millis,
    pub lease_until: Millis,
    pub channels: Vec<ChannelKind>,
    pub max_attempts: u32,
    pub limit: usize,
}

/// The handle on the writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    /// Marks (attempts started, deliveries sent) and claims: their callers wait for them.
    urgent: mpsc::Sender<Job>,
    /// Polls, whose callers have moved on.
    bulk: mpsc::Sender<Job>,
    /// The daemon's delivery receipts, once started (see [`Db::keep_receipts`]).
    receipts: Arc<OnceLock<Receipts>>,
}

/// A delivery its receiver accepted, its receipt written (when the daemon keeps receipts);
/// [`Writer::sent`] marks it sent.
#[must_use = "a delivery received is marked sent with Writer::sent"]
#[derive(Debug)]
pub struct Received {
    id: i64,
    at: Millis,
}

/// Work handed over to the writer; await [`Handed::written`] for its outcome.
pub struct Handed<T>(oneshot::Receiver<Result<T>>);

impl<T> Handed<T> {
    /// The outcome, once the transaction holding the job is committed (or has failed).
    pub async fn written(self) -> Result<T> {
        self.0.await.unwrap_or(Err(StorageError::Interrupted))
    }
}

impl Writer {
    /// Starts the writer task on `db`'s write connection. The task ends once every handle is
    /// dropped and the queue is written.
    pub(crate) fn start(db: Db) -> Writer {
        let (urgent, urgent_jobs) = mpsc::channel(QUEUE);
        let (bulk, bulk_jobs) = mpsc::channel(QUEUE);
        let receipts = db.receipts.clone();
        // The task keeps the pools, not this handle: once the last handle is dropped, the
        // queue closes and the task ends.
        let db = Db::from_engine(db.engine);
        tokio::spawn(run(db, urgent_jobs, bulk_jobs));
        Writer {
            urgent,
            bulk,
            receipts,
        }
    }

    async fn hand<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<Handed<T>>
    where
        T: Send,
    {
        let (reply, outcome) = oneshot::channel();
        let job = job(reply);
        let queue = if matches!(job, Job::Poll(..)) {
            &self.bulk
        } else {
            &self.urgent
        };
        queue
            .send(job)
            .await
            .map_err(|_| StorageError::Interrupted)?;
        Ok(Handed(outcome))
    }

    /// Hands a poll over to be recorded; returns once the writer has it (or has room for it).
    pub async fn record_poll(&self, poll: PollJob) -> Result<Handed<Recorded>> {
        self.hand(|reply| Job::Poll(poll, reply)).await
    }

    /// Counts an attempt for a notification whose delivery starts now, under the claim whose
    /// lease ends at `lease_until`, ahead of everything else waiting (with the `sent` marks,
    /// before them); returns once the writer has it, and [`Handed::written`] once it is
    /// committed: `false` when the claim was no longer there to count it under (given back, or
    /// taken over), and then the message must not leave.
    pub async fn started(&self, id: i64, lease_until: Millis) -> Result<Handed<bool>> {
        self.hand(|reply| Job::Started((id, lease_until), reply))
            .await
    }

    /// Writes the receipt of a delivery its receiver accepted at `at`, under the claim whose
    /// lease ends at `lease_until`: the first thing to do once a receiver says yes, so that a
    /// crash before its `sent` mark does not repeat it (see `storage::receipts`).
    pub fn received(&self, id: i64, lease_until: Millis, at: Millis) -> Received {
        if let Some(receipts) = self.receipts.get() {
            receipts.note(Receipt {
                id,
                lease_until,
                sent_at: at,
            });
        }
        Received { id, at }
    }

    /// Marks a delivery received sent, ahead of everything else waiting; returns once that is
    /// committed (and its receipt is no longer needed).
    pub async fn sent(&self, received: Received) -> Result<()> {
        let Received { id, at } = received;
        let outcome = match self.hand(|reply| Job::Sent(id, at, reply)).await {
            Ok(handed) => handed.written().await,
            Err(e) => Err(e),
        };
        if let Some(receipts) = self.receipts.get() {
            receipts.forget(id);
        }
        outcome
    }

    /// Claims due shipments, as [`Db::claim_due_shipments`] does, in the writer's next batch.
    pub async fn claim_shipments(&self, claim: ShipmentClaim) -> Result<Vec<ShipmentRow>> {
        self.hand(|reply| Job::ClaimShipments(claim, reply))
            .await?
            .written()
            .await
    }

    /// Claims due notifications, as [`Db::claim_notifications`] does, in the writer's next
    /// batch (after the `sent` marks waiting with it, so that the next in each line is free).
    pub async fn claim_notifications(
        &self,
        claim: NotificationClaim,
    ) -> Result<Vec<ClaimedNotification>> {
        self.hand(|reply| Job::ClaimNotifications(claim, reply))
            .await?
            .written()
            .await
    }
}

/// The writer task. Each round it writes, in this order: every mark waiting (attempts started,
/// then deliveries sent), in a transaction of its own; then up to [`ROUND`] polls with every claim
/// waiting, in one transaction. Urgent jobs (marks and claims) have a queue of their own, looked at
/// before each round, so that they never wait behind a backlog of polls: a mark waits at most for
/// the round under way.
async fn run(db: Db, mut urgent: mpsc::Receiver<Job>, mut bulk: mpsc::Receiver<Job>) {
    let mut pending = Batch::default();
    let (mut urgent_open, mut bulk_open) = (true, true);
    loop {
        while let Ok(job) = urgent.try_recv() {
            pending.add(job);
        }
        if !pending.marks_empty() {
            pending.write_marks(&db).await;
            continue;
        }
        while pending.polls.len() < ROUND {
            match bulk.try_recv() {
                Ok(job) => pending.add(job),
                Err(_) => break,
            }
        }
        if pending.is_empty() {
            // Nothing to do: wait for anything, urgent first.
            let job = tokio::select! {
                biased;
                job = urgent.recv(), if urgent_open => job.or_else(|| { urgent_open = false; None }),
                job = bulk.recv(), if bulk_open => job.or_else(|| { bulk_open = false; None }),
                else => return,
            };
            if let Some(job) = job {
                pending.add(job);
            }
            continue;
        }
        if pending.polls.len() < LINGER_BELOW && pending.claims_empty() {
            // A moment for the polls finishing now to join this round; it ends at once when
            // anything urgent arrives.
            let _ = tokio::time::timeout(LINGER, async {
                loop {
                    tokio::select! {
                        biased;
                        Some(job) = urgent.recv() => { pending.add(job); break; }
                        Some(job) = bulk.recv() => {
                            pending.add(job);
                            if pending.polls.len() >= LINGER_BELOW { break; }
                        }
                        else => break,
                    }
                }
            })
            .await;
            if !pending.marks_empty() {
                continue;
            }
        }
        pending.write_round(&db).await;
    }
}

/// The jobs of one round, sorted by kind.
#[derive(Default)]
struct Batch {
    started: Vec<((i64, Millis), Reply<bool>)>,
    sent: Vec<((i64, Millis), Reply<()>)>,
    polls: std::collections::VecDeque<(PollJob, Reply<Recorded>)>,
    notification_claims: Vec<(NotificationClaim, Reply<Vec<ClaimedNotification>>)>,
    shipment_claims: Vec<(ShipmentClaim, Reply<Vec<ShipmentRow>>)>,
}

impl Batch {
    fn add(&mut self, job: Job) {
        match job {
            Job::Started(claim, reply) => self.started.push((claim, reply)),
            Job::Sent(id, at, reply) => self.sent.push(((id, at), reply)),
            Job::Poll(poll, reply) => self.polls.push_back((poll, reply)),
            Job::ClaimShipments(claim, reply) => self.shipment_claims.push((claim, reply)),
            Job::ClaimNotifications(claim, reply) => self.notification_claims.push((claim, reply)),
        }
    }

    fn is_empty(&self) -> bool {
        self.marks_empty() && self.polls.is_empty() && self.claims_empty()
    }

    fn marks_empty(&self) -> bool {
        self.started.is_empty() && self.sent.is_empty()
    }

    fn claims_empty(&self) -> bool {
        self.notification_claims.is_empty() && self.shipment_claims.is_empty()
    }

    /// Writes every mark waiting (attempts started, then deliveries sent) in one transaction;
    /// should it fail, each job alone.
    async fn write_marks(&mut self, db: &Db) {
        let (started, started_replies): (Vec<(i64, Millis)>, Vec<_>) =
            std::mem::take(&mut self.started).into_iter().unzip();
        let (sent, sent_replies): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.sent).into_iter().unzip();
        match in_transaction(db, Work::Marks(&started, &sent)).await {
            Ok(written) => {
                let counted: std::collections::HashSet<i64> = written.started.into_iter().collect();
                for ((id, _), reply) in started.iter().zip(started_replies) {
                    let _ = reply.send(Ok(counted.contains(id)));
                }
                for reply in sent_replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                debug!(error = %e, started = started.len(), sent = sent.len(), "marks written one by one");
                for (claim, reply) in started.iter().zip(started_replies) {
                    let work = Work::Marks(std::slice::from_ref(claim), &[]);
                    let outcome = in_transaction(db, work).await;
                    let _ = reply.send(outcome.map(|w| !w.started.is_empty()));
                }
                for (mark, reply) in sent.iter().zip(sent_replies) {
                    let work = Work::Marks(&[], std::slice::from_ref(mark));
                    let _ = reply.send(in_transaction(db, work).await.map(|_| ()));
                }
            }
        }
    }

    /// Writes up to [`ROUND`] polls, then every claim waiting, in one transaction.
    async fn write_round(&mut self, db: &Db) {
        let take = self.polls.len().min(ROUND);
        let (polls, poll_replies): (Vec<PollJob>, Vec<_>) = self.polls.drain(..take).unzip();
        let (n_claims, n_replies): (Vec<_>, Vec<_>) = std::mem::take(&mut self.notification_claims)
            .into_iter()
            .unzip();
        let (s_claims, s_replies): (Vec<_>, Vec<_>) = std::mem::take(&mut self.shipment_claims)
            .into_iter()
            .unzip();
        match in_transaction(db, Work::Rest(&polls, &n_claims, &s_claims)).await {
            Ok(Written {
                recorded,
                notifications,
                shipments,
                ..
            }) => {
                reply_each(poll_replies, recorded);
                reply_each(n_replies, notifications);
                reply_each(s_replies, shipments);
            }
            Err(e) => {
                let jobs = polls.len() + n_claims.len() + s_claims.len();
                if jobs > 1 {
                    warn!(error = %e, jobs, "a round of writes failed; writing each job alone");
                }
                // One at a time, so that one bad row costs only its own job.
                for (poll, reply) in polls.iter().zip(poll_replies) {
                    let work = Work::Rest(std::slice::from_ref(poll), &[], &[]);
                    let outcome = in_transaction(db, work).await;
                    let _ = reply.send(outcome.map(|mut w| w.recorded.pop().unwrap_or_default()));
                }
                for (claim, reply) in n_claims.iter().zip(n_replies) {
                    let work = Work::Rest(&[], std::slice::from_ref(claim), &[]);
                    let outcome = in_transaction(db, work).await;
                    let _ =
                        reply.send(outcome.map(|mut w| w.notifications.pop().unwrap_or_default()));
                }
                for (claim, reply) in s_claims.iter().zip(s_replies) {
                    let work = Work::Rest(&[], &[], std::slice::from_ref(claim));
                    let outcome = in_transaction(db, work).await;
                    let _ = reply.send(outcome.map(|mut w| w.shipments.pop().unwrap_or_default()));
                }
            }
        }
    }
}

fn reply_each<T>(replies: Vec<Reply<T>>, outcomes: Vec<T>) {
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(Ok(outcome));
    }
}

/// What one transaction of the writer does.
pub(super) enum Work<'a> {
    /// Attempts started (each under its claim) and deliveries sent: on SQLite in one trip to
    /// its thread (`outbox::mark_round`).
    Marks(&'a [(i64, Millis)], &'a [(i64, Millis)]),
    /// Polls first (their shipments' claims end with them), then the claims.
    Rest(&'a [PollJob], &'a [NotificationClaim], &'a [ShipmentClaim]),
}

/// What it gives back, in the order asked.
#[derive(Default)]
pub(super) struct Written {
    /// The attempts counted: those whose claim was still there.
    pub(super) started: Vec<i64>,
    pub(super) recorded: Vec<Recorded>,
    pub(super) notifications: Vec<Vec<ClaimedNotification>>,
    pub(super) shipments: Vec<Vec<ShipmentRow>>,
}

/// A round of polls and claims, inside the transaction the caller commits.
async fn write_rest(
    conn: &mut SqliteConnection,
    polls: &[PollJob],
    notification_claims: &[NotificationClaim],
    shipment_claims: &[ShipmentClaim],
) -> Result<Written> {
    let mut written = Written::default();
    if !polls.is_empty() {
        let polls: Vec<(i64, &(dyn Decide + Sync))> = polls
            .iter()
            .map(|(id, poll)| (*id, poll.as_ref() as &(dyn Decide + Sync)))
            .collect();
        written.recorded = record_polls(conn, &polls).await?;
    }
    for c in notification_claims.iter() {
        written.notifications.push(
            claim_notifications(
                conn,
                c.now,
                c.lease_until,
                &c.channels,
                c.max_attempts,
                c.limit,
            )
            .await?,
        );
    }
    for c in shipment_claims.iter() {
        written
            .shipments
            .push(claim_due_shipments(conn, c.now, c.claimed_until, &c.paused, c.limit).await?);
    }
    Ok(written)
}

/// Runs `work` in a `BEGIN IMMEDIATE` transaction on the write connection and commits it. On
/// any failure the connection is closed rather than given back: a failed `COMMIT` may leave it
/// inside its transaction, and every later `BEGIN` would fail on it.
async fn in_transaction(db: &Db, work: Work<'_>) -> Result<Written> {
    let lite = match &db.engine {
        super::Engine::Sqlite(lite) => lite,
        super::Engine::Postgres(pg) => {
            return super::postgres::writer::in_transaction(pg, &work).await;
        }
    };
    let (polls, notification_claims, shipment_claims) = match work {
        // In one trip to SQLite's thread, its transaction included.
        Work::Marks(started, sent) => {
            let started = lite.marks(started, sent).await?;
            return Ok(Written {
                started,
                ..Written::default()
            });
        }
        Work::Rest(polls, notification_claims, shipment_claims) => {
            (polls, notification_claims, shipment_claims)
        }
    };
    let mut conn = lite.write.acquire().await?;
    let outcome = async {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let written = write_rest(&mut tx, polls, notification_claims, shipment_claims).await?;
        tx.commit().await?;
        Ok(written)
    }
    .await;
    if outcome.is_err() {
        conn.close_on_drop();
    }
    outcome
}

impl Db {
    /// The daemon's one writer, started on first use.
    pub fn writer(&self) -> Writer {
        self.writer
            .get_or_init(|| Writer::start(self.clone()))
            .clone()
    }
}

/// Where a [`Db`] keeps its writer.
pub(crate) type WriterCell = Arc<std::sync::OnceLock<Writer>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{NewShipment, Synchronous};

    const NOW: Millis = 1_780_000_000_000;
    const LEASE: Millis = NOW + 60_000;

    /// Two shipments with a webhook each, both claimed until `LEASE` (a shipment's
    /// messages on a channel are claimed one at a time): the ids, in the order claimed.
    async fn two_claimed_webhooks(db: &Db) -> [i64; 2] {
        let super::super::Engine::Sqlite(lite) = &db.engine else {
            unreachable!("opened on SQLite")
        };
        for order in ["1", "2"] {
            let row = db
                .add_shipment(&NewShipment::plain(order, "sim"), NOW)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO notifications (public_id, shipment_id, transition, channel, \
                 previous_status, status, payload, next_attempt_at, created_at) \
                 VALUES (?, ?, 1, 'webhook', 'pending', 'in_transit', '{}', ?, ?)",
            )
            .bind(format!("msg_{order}"))
            .bind(row.id)
            .bind(NOW)
            .bind(NOW)
            .execute(&lite.write)
            .await
            .unwrap();
        }
        let claimed = db
            .writer()
            .claim_notifications(NotificationClaim {
                now: NOW,
                lease_until: LEASE,
                channels: vec![ChannelKind::Webhook],
                max_attempts: 3,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(claimed.iter().all(|n| n.lease_until == LEASE));
        [claimed[0].id, claimed[1].id]
    }

    async fn open(dir: &tempfile::TempDir) -> Db {
        Db::open(&dir.path().join("writer.db"), Synchronous::Normal)
            .await
            .unwrap()
    }

    /// Marks written together are written again one by one when their transaction fails, so
    /// that a row whose update is refused costs only its own mark: the other attempt is counted
    /// and its message may leave.
    #[tokio::test]
    async fn a_mark_refused_costs_only_its_own_job() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let [good, bad] = two_claimed_webhooks(&db).await;
        let super::super::Engine::Sqlite(lite) = &db.engine else {
            unreachable!("opened on SQLite")
        };
        // The id is an integer the test was given: nothing to escape.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER refuse BEFORE UPDATE ON notifications WHEN OLD.id = {bad} \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )))
        .execute(&lite.write)
        .await
        .unwrap();

        // Both handed over before the writer runs: one round, one transaction, which fails.
        let writer = db.writer();
        let first = writer.started(good, LEASE).await.unwrap();
        let second = writer.started(bad, LEASE).await.unwrap();
        assert!(first.written().await.unwrap(), "the good mark is counted");
        let refused = second.written().await.unwrap_err().to_string();
        assert!(refused.contains("refused"), "{refused}");
    }

    /// A start under a claim that is no longer held (its lease ran out and the message went to
    /// another claim) counts nothing, and the start beside it in the same round still counts.
    #[tokio::test]
    async fn a_start_under_a_claim_gone_counts_nothing_and_its_neighbour_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let [held, gone] = two_claimed_webhooks(&db).await;
        let writer = db.writer();
        let first = writer.started(gone, LEASE - 1).await.unwrap();
        let second = writer.started(held, LEASE).await.unwrap();
        assert!(
            !first.written().await.unwrap(),
            "a claim gone starts nothing"
        );
        assert!(second.written().await.unwrap(), "the claim held starts");
        let rows = db.list_notifications(None, None).await.unwrap();
        let attempts = |id| rows.iter().find(|n| n.id == id).unwrap().attempts;
        assert_eq!((attempts(held), attempts(gone)), (1, 0));
    }
}
