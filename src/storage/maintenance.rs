//! The SQL of the maintenance jobs: sweeps that change the status of shipments gone quiet, the
//! stuck alerts, pruning and the WAL checkpoint. A sweep or alert searches on a reader, and only
//! when it finds shipments is it one short `BEGIN IMMEDIATE` transaction over at most `limit`
//! of them (see `begin_if_found`); the prune goes a slice a transaction. What a change says and
//! which notifications it queues is decided by the caller (the `maintenance` and `track`
//! modules), passed in as a function; storage only executes the answer.

use sqlx::{AssertSqlSafe, ConnectOptions, Connection, FromRow};
use tracing::instrument;

use super::outbox::insert_outbox;
use super::{Db, Lite, OutboxRow, Result, SHIPMENT_COLUMNS, ShipmentRow};
use crate::clock::Millis;
use crate::domain::{ChannelKind, Status};

/// The status a sweep moves each chosen shipment to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepWrite<'a> {
    pub status: Status,
    /// Why, as the shipment's `raw_status` and `error` (or only kept in `error`, see
    /// `stop_polling`).
    pub raw_status: &'a str,
    /// True when the shipment leaves the schedule: it keeps its last raw status and error, and
    /// becomes inactive. False: polling goes on, and the reason is its raw status and error.
    pub stop_polling: bool,
}

/// Deletes the notifications delivered (or skipped) before the cutoff, the statement's one
/// parameter (`?1` on SQLite, `$1` on PostgreSQL). A message is created before it is sent, so
/// `created_at < cutoff` changes nothing that goes, but it lets the database read the done index
/// (`(state, channel, created_at)`, migration 0020) from its start to the cutoff instead of
/// every delivered message ever kept: at three million notifications over 90 days, 0.68–0.79 s
/// → 0.12–0.13 s a night. The channels are named for that too: each state and channel is then a
/// range of the index. They are every channel there is ([`ChannelKind::ALL`], which the schema's
/// CHECK allows and no more), so naming them leaves no message out. Should a clock stepped back
/// have stamped a message sent before it was created, it stays until its creation is older than
/// the cutoff too: kept a little longer, never deleted early.
pub(super) fn prune_notifications_sql(cutoff: &str) -> String {
    let channels = ChannelKind::ALL
        .map(|channel| format!("'{channel}'"))
        .join(", ");
    format!(
        "DELETE FROM notifications WHERE state IN ('sent', 'skipped') \
         AND channel IN ({channels}) \
         AND created_at < {cutoff} AND coalesce(sent_at, created_at) < {cutoff}"
    )
}

/// What one prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    pub notifications: u64,
    pub events: u64,
}

/// SQLite's answer to a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// A reader kept the checkpoint from completing; the next one catches up.
    pub busy: bool,
    pub wal_frames: i64,
    pub checkpointed_frames: i64,
}

/// An active shipment whose next poll is too far ahead ever to come up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreachablePoll {
    pub id: i64,
    pub order_id: String,
    pub next_poll_at: Millis,
}

#[derive(FromRow)]
struct StuckRow {
    #[sqlx(flatten)]
    shipment: ShipmentRow,
    quiet_since: Millis,
    stalls: i64,
}

/// The shipments a sweep picks: `?1` is the cutoff.
pub(super) const QUIET_FOR_GOOD: &str = "active = 1 AND status NOT IN ('returned', 'delivered', 'expired') \
     AND coalesce(last_event_at, created_at) < ?1";
pub(super) const NEVER_SEEN: &str =
    "active = 1 AND status = 'pending' AND transitions = 0 AND created_at < ?1";

/// Which shipments a sweep takes, given its cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Active and not final, with no news (newest event, else when tracking began) since the
    /// cutoff.
    Quiet,
    /// Active, created before the cutoff, still `pending` and never changed status.
    NeverSeen,
}

/// How many shipments' events one transaction of `prune` deletes: a few MiB of pages at most for
/// its statement journal, and a short hold of the writer.
pub(super) const PRUNE_SLICE: i64 = 1_000;

/// How long a checkpoint waits for readers to leave the write-ahead log before it gives up
/// truncating it until its next time (see [`Db::checkpoint`]); new writes wait behind it.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Up to `limit` shipments whose events are left to prune (see migration
/// `0021_prune_index.sql`): ended before `cutoff`, with a digest, which the prune clears as it
/// deletes their events. Both are parameters (`?1`, `?2` on SQLite). Written to be read from the
/// index of such shipments alone, so that a night reads those that ended since the last one, not
/// every shipment ever finished: the condition is spelt as in the index, as SQLite requires to
/// use a partial index, and SQLite is told the index by name (its planner would take the status
/// index and read every finished shipment).
pub(super) fn left_to_prune_sql(cutoff: &str, limit: &str) -> String {
    format!(
        "WHERE active = 0 AND status IN ('delivered', 'returned', 'expired') \
           AND events_digest IS NOT NULL \
           AND coalesce(status_changed_at, last_event_at, created_at) < {cutoff} \
         LIMIT {limit}"
    )
}

/// Clears the digests of a slice of the shipments left to prune (`?1` the cutoff, `?2` the
/// slice), and returns their ids, for their events to be deleted with it.
pub(super) fn clear_left_to_prune_sql() -> String {
    format!(
        "UPDATE shipments SET events_digest = NULL WHERE id IN ( \
             SELECT id FROM shipments INDEXED BY shipments_prunable {}) \
         RETURNING id",
        left_to_prune_sql("?1", "?2")
    )
}

impl Db {
    /// Moves every shipment `which` picks to `write`, queuing the outbox rows `announce` gives
    /// for each (the row as it was, and its new transition count), in one transaction. A
    /// shipment whose poll is in flight is left for the next run. Returns the rows as they were.
    #[instrument(skip_all)]
    pub async fn sweep_shipments(
        &self,
        which: Sweep,
        cutoff: Millis,
        now: Millis,
        limit: i64,
        write: SweepWrite<'_>,
        announce: impl FnMut(&ShipmentRow, i64) -> Vec<OutboxRow>,
    ) -> Result<Vec<ShipmentRow>> {
        let lite = on_postgres!(self, pg => pg.sweep_shipments(which, cutoff, now, limit, write, announce));
        let select = match which {
            Sweep::Quiet => QUIET_FOR_GOOD,
            Sweep::NeverSeen => NEVER_SEEN,
        };
        sweep(lite, select, cutoff, now, limit, write, announce).await
    }
}

/// Which reading of a sweep's or alert's shipments a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reading {
    /// The search, on a reader.
    Search,
    /// The second reading, under the write lock, of the shipments the search found (`?4`, their
    /// ids as a JSON array), each by its id: `NOT INDEXED` keeps SQLite off the status index,
    /// which it would otherwise take for a status the condition names, and leaves it the
    /// lookups by id.
    Found,
}

impl Reading {
    /// The table as the statement's FROM names it, and what its WHERE adds.
    fn table_and_condition(self) -> (&'static str, &'static str) {
        match self {
            Reading::Search => ("shipments", ""),
            Reading::Found => (
                "shipments NOT INDEXED",
                "AND id IN (SELECT value FROM json_each(?4))",
            ),
        }
    }
}

/// The `columns` of the shipments a sweep takes: those `select` picks (`?1` is the cutoff), not
/// in a poll at `?2` (their claim), in the order of their ids, at most `?3`.
pub(super) fn sweep_sql(select: &str, columns: &str, reading: Reading) -> String {
    let (table, among) = reading.table_and_condition();
    format!(
        "SELECT {columns} FROM {table} WHERE {select} \
           AND (claimed_until IS NULL OR claimed_until <= ?2) {among} ORDER BY id LIMIT ?3"
    )
}

/// The `columns` of the stuck shipments: active, in a status of the JSON array `?1`, quiet
/// since before `?2` and not yet alerted for that stall, at most `?3` in the order of their ids.
pub(super) fn stuck_sql(columns: &str, reading: Reading) -> String {
    let (table, among) = reading.table_and_condition();
    format!(
        "SELECT {columns} FROM (SELECT *, \
             coalesce(last_event_at, status_changed_at, created_at) AS quiet_since \
             FROM {table}) \
         WHERE active = 1 AND status IN (SELECT value FROM json_each(?1)) AND quiet_since < ?2 \
           AND (stuck_alerted_for IS NULL OR stuck_alerted_for <> quiet_since) {among} \
         ORDER BY id LIMIT ?3"
    )
}

/// The write transaction of a sweep or alert whose shipments were `found` on a reader, or none
/// when none were. The search reads on a reader, so that a run with nothing to do (most runs)
/// never takes the writer: at a million shipments the search of the quiet ones or of the stuck
/// ones reads the whole table (0.3 s), and the writer held meanwhile kept every poll's write
/// waiting. Each one found is then taken only if it still qualifies, read again under the lock
/// by its id.
async fn begin_if_found(
    lite: &Lite,
    found: &[i64],
) -> Result<Option<sqlx::Transaction<'static, sqlx::Sqlite>>> {
    if found.is_empty() {
        return Ok(None);
    }
    Ok(Some(lite.begin_write().await?))
}

/// Moves every shipment `select` picks (see [`sweep_sql`]) to `write` and queues its
/// notifications, in one transaction.
async fn sweep(
    lite: &Lite,
    select: &str,
    cutoff: Millis,
    now: Millis,
    limit: i64,
    write: SweepWrite<'_>,
    mut announce: impl FnMut(&ShipmentRow, i64) -> Vec<OutboxRow>,
) -> Result<Vec<ShipmentRow>> {
    let found: Vec<i64> =
        sqlx::query_scalar(AssertSqlSafe(sweep_sql(select, "id", Reading::Search)))
            .bind(cutoff)
            .bind(now)
            .bind(limit)
            .fetch_all(&lite.read)
            .await?;
    let Some(mut tx) = begin_if_found(lite, &found).await? else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query_as::<_, ShipmentRow>(AssertSqlSafe(sweep_sql(
        select,
        &SHIPMENT_COLUMNS.to_string(),
        Reading::Found,
    )))
    .bind(cutoff)
    .bind(now)
    .bind(limit)
    .bind(serde_json::to_string(&found).expect("plain integers"))
    .fetch_all(&mut *tx)
    .await?;
    let stop_polling = write.stop_polling;
    for row in &rows {
        let transition = row.transitions + 1;
        // `error` says why for a shipment still polled; an expired one keeps its last raw
        // status.
        sqlx::query(
            "UPDATE shipments SET status = ?, transitions = ?, status_changed_at = ?, \
                 active = CASE WHEN ? THEN 0 ELSE active END, \
                 raw_status = CASE WHEN ? THEN raw_status ELSE ? END, \
                 error = CASE WHEN ? THEN error ELSE ? END, \
                 claimed_until = NULL WHERE id = ?",
        )
        .bind(write.status.as_str())
        .bind(transition)
        .bind(now)
        .bind(stop_polling)
        .bind(stop_polling)
        .bind(write.raw_status)
        .bind(stop_polling)
        .bind(write.raw_status)
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
        let outbox = announce(row, transition);
        insert_outbox(&mut tx, row.id, &outbox).await?;
    }
    tx.commit().await?;
    Ok(rows)
}

impl Db {
    /// Active shipments whose `next_poll_at` is beyond `cutoff`, soonest first, at most `limit`.
    #[instrument(skip_all)]
    pub async fn unreachable_polls(
        &self,
        cutoff: Millis,
        limit: i64,
    ) -> Result<Vec<UnreachablePoll>> {
        let lite = on_postgres!(self, pg => pg.unreachable_polls(cutoff, limit));
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, order_id, next_poll_at FROM shipments \
             WHERE active = 1 AND next_poll_at > ?1 ORDER BY next_poll_at LIMIT ?2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&lite.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, order_id, next_poll_at)| UnreachablePoll {
                id,
                order_id,
                next_poll_at,
            })
            .collect())
    }

    /// Stops polling shipment `id` with `reason`, if it is still active with its next poll
    /// beyond `cutoff`; true when it was.
    #[instrument(skip_all)]
    pub async fn stop_unreachable_poll(
        &self,
        id: i64,
        reason: &str,
        now: Millis,
        cutoff: Millis,
    ) -> Result<bool> {
        let lite = on_postgres!(self, pg => pg.stop_unreachable_poll(id, reason, now, cutoff));
        let done = sqlx::query(
            "UPDATE shipments SET active = 0, error = ?1, invalid_kind = 'schedule', \
             last_polled_at = ?2 WHERE id = ?3 AND active = 1 AND next_poll_at > ?4",
        )
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(cutoff)
        .execute(&lite.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a new stall for each active shipment in one of the `moving` statuses that has
    /// been quiet (newest event, else the change to its status, else creation) since before
    /// `quiet_before` and was not alerted for this quiet spell yet, and queues the outbox row
    /// `alert` gives for it (the row, its stall count, and when it went quiet), in one
    /// transaction over at most `limit` shipments. Returns their order ids.
    #[instrument(skip_all)]
    pub async fn alert_stuck_shipments(
        &self,
        moving: &[Status],
        quiet_before: Millis,
        limit: i64,
        mut alert: impl FnMut(&ShipmentRow, i64, Millis) -> Vec<OutboxRow>,
    ) -> Result<Vec<String>> {
        let lite =
            on_postgres!(self, pg => pg.alert_stuck_shipments(moving, quiet_before, limit, alert));
        let moving: Vec<&str> = moving.iter().map(|s| s.as_str()).collect();
        let moving = serde_json::to_string(&moving).expect("plain strings");
        let found: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(stuck_sql("id", Reading::Search)))
            .bind(&moving)
            .bind(quiet_before)
            .bind(limit)
            .fetch_all(&lite.read)
            .await?;
        let Some(mut tx) = begin_if_found(lite, &found).await? else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query_as::<_, StuckRow>(AssertSqlSafe(stuck_sql(
            &format!("{SHIPMENT_COLUMNS}, quiet_since, stalls"),
            Reading::Found,
        )))
        .bind(&moving)
        .bind(quiet_before)
        .bind(limit)
        .bind(serde_json::to_string(&found).expect("plain integers"))
        .fetch_all(&mut *tx)
        .await?;
        let mut alerted = Vec::with_capacity(rows.len());
        for row in rows {
            let stall = row.stalls + 1;
            sqlx::query("UPDATE shipments SET stalls = ?, stuck_alerted_for = ? WHERE id = ?")
                .bind(stall)
                .bind(row.quiet_since)
                .bind(row.shipment.id)
                .execute(&mut *tx)
                .await?;
            let outbox = alert(&row.shipment, stall, row.quiet_since);
            insert_outbox(&mut tx, row.shipment.id, &outbox).await?;
            alerted.push(row.shipment.order_id);
        }
        tx.commit().await?;
        Ok(alerted)
    }

    /// Deletes the notifications delivered (or skipped) before `cutoff`, then the event history
    /// of the shipments that ended (delivered, returned, expired) before it, and their digests,
    /// [`PRUNE_SLICE`] shipments a transaction.
    #[instrument(skip_all)]
    pub async fn prune(&self, cutoff: Millis) -> Result<Pruned> {
        let lite = on_postgres!(self, pg => pg.prune(cutoff));
        let notifications = sqlx::query(AssertSqlSafe(prune_notifications_sql("?1")))
            .bind(cutoff)
            .execute(&lite.write)
            .await?
            .rows_affected();
        // A slice of shipments a transaction. Their digests go with their events (were one of
        // them polled again, its events are written anew), which also takes them out of the
        // index of those left to prune, so the next slice reads on from there. Each statement's
        // journal (kept in memory, see `STATEMENT_JOURNAL_IN_MEMORY`) holds a slice's pages, and
        // the writer is free between slices.
        let mut events = 0;
        let clear = clear_left_to_prune_sql();
        loop {
            let mut tx = lite.begin_write().await?;
            let cleared: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(clear.as_str()))
                .bind(cutoff)
                .bind(PRUNE_SLICE)
                .fetch_all(&mut *tx)
                .await?;
            if !cleared.is_empty() {
                let ids = serde_json::to_string(&cleared).expect("plain integers");
                events += sqlx::query(
                    "DELETE FROM events WHERE shipment_id IN (SELECT value FROM json_each(?1))",
                )
                .bind(ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            if (cleared.len() as i64) < PRUNE_SLICE {
                break;
            }
        }
        Ok(Pruned {
            notifications,
            events,
        })
    }

    /// Folds the write-ahead log back into the database file and truncates it, with the frames
    /// the log held and those folded.
    ///
    /// It runs on a connection of its own, never the writer's: a `TRUNCATE` checkpoint waits,
    /// for as long as its connection's busy timeout, until no reader holds a snapshot of the log
    /// ("it blocks (calls the busy-handler callback) until all readers are reading from the
    /// database file only", sqlite.org/c3ref/wal_checkpoint_v2.html). On the writer, with its 30 s
    /// timeout, an open `sqlite3` shell or a backup would hold every write for 30 s. Here it waits
    /// [`CHECKPOINT_WAIT`] at most, new writes waiting behind it that long, and tries again at
    /// its next time. A closed database is refused, as its writer refuses it, and a file removed
    /// under the running daemon is not created anew.
    ///
    /// A `TRUNCATE` that succeeds also answers `(0, 0, 0)`: what it counts is the log it has just
    /// emptied (seen so on the bundled SQLite 3.51). So a `PASSIVE` pass, which waits for nobody,
    /// folds what it can and counts it first; the `TRUNCATE` then only resets the log.
    #[instrument(skip_all)]
    pub async fn checkpoint(&self) -> Result<Checkpointed> {
        let lite = on_postgres!(self, pg => pg.checkpoint());
        if lite.write.is_closed() {
            return Err(sqlx::Error::PoolClosed.into());
        }
        let options = (*lite.write.connect_options())
            .clone()
            .create_if_missing(false)
            .busy_timeout(CHECKPOINT_WAIT);
        let mut conn = options.connect().await?;
        let (_, wal_frames, checkpointed_frames) =
            sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut conn)
                .await?;
        let (busy, ..) = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(Checkpointed {
            busy: busy != 0,
            wal_frames,
            checkpointed_frames,
        })
    }
}
