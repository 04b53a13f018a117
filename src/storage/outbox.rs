//! The outbox: notifications queued with the change they announce, claimed under a lease for one
//! attempt at a time, marked sent, failed, postponed or dead, listed and requeued.

use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow, Sqlite, SqliteConnection, Transaction};
use tracing::instrument;

use super::listing::FEW;
use super::{Db, Lite, Result};
use crate::clock::{Millis, to_rfc3339};
use crate::domain::{ChannelKind, MOST_ATTEMPTS_CUT_SHORT, Status};

/// The columns of a [`NotificationRow`], the order id from the shipment `s`: on both engines.
pub(super) const NOTIFICATION_COLUMNS: &str = "n.id, n.public_id, s.order_id, n.kind, n.channel, \
     n.previous_status, n.status, n.state, n.attempts, n.cut_short, n.next_attempt_at, \
     n.lease_until, n.last_error, n.created_at, n.sent_at";

/// A shipment's notifications (`?1`), in one state (`?2`) or in any, in the order they were
/// queued: by the outbox's unique key, which starts with the shipment.
pub(super) fn shipment_notifications_sql() -> String {
    format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications n JOIN shipments s ON s.id = n.shipment_id \
         WHERE n.shipment_id = ?1 AND (?2 IS NULL OR n.state = ?2) ORDER BY n.id"
    )
}

/// The notifications after the one numbered `?1`, in one state (`?2`) or in any, at most `?3`,
/// read as `reading` says. A bare `n.id > ?1` (never `?1 IS NULL OR …`): SQLite starts each page
/// at its cursor in the table instead of reading every row before it. Read from an index, the
/// state is written into the statement, since SQLite uses a partial index only for a WHERE that
/// holds its condition as written (sqlite.org/partialindex.html).
pub(super) fn notifications_page_sql(reading: OutboxReading) -> String {
    let (from, state, order) = match reading {
        OutboxReading::FromCursor => ("notifications n", "(?2 IS NULL OR n.state = ?2)", "n.id"),
        OutboxReading::Dead => (
            "notifications n",
            "n.state = 'dead' AND n.state = ?2",
            "n.id",
        ),
        // `+n.id`, as for a listing of few shipments: the pending ones from their index, sorted.
        OutboxReading::FewPending => (
            "notifications n INDEXED BY notifications_due",
            "n.state = 'pending' AND n.state = ?2",
            "+n.id",
        ),
    };
    format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM {from} JOIN shipments s ON s.id = n.shipment_id \
         WHERE n.id > ?1 AND {state} ORDER BY {order} LIMIT ?3"
    )
}

/// How a page of `outbox` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutboxReading {
    /// Along the table from the page's cursor, keeping the rows of the state asked for.
    FromCursor,
    /// From the index of the dead ones (migration 0019), in its order.
    Dead,
    /// From the index of the pending ones, sorted: a page reads every pending one, so this is
    /// for when they are few (the queue as it mostly is, where along the table a page read
    /// three million sent ones to find it: 0.58 s).
    FewPending,
}

/// How the pages of `outbox --state STATE` are read, given how many notifications are pending,
/// counted up to [`FEW`] (`None` when it was not counted): the dead from their index, the few
/// pending from theirs, and every other listing along the table.
pub(super) fn outbox_reading(state: Option<&str>, pending: Option<i64>) -> OutboxReading {
    match (state, pending) {
        (Some("dead"), _) => OutboxReading::Dead,
        (Some("pending"), Some(count)) if count < FEW => OutboxReading::FewPending,
        _ => OutboxReading::FromCursor,
    }
}

/// The pending notifications, counted up to `?1`, from their index.
pub(super) const PENDING_COUNT: &str = "SELECT count(*) FROM (SELECT 1 \
     FROM notifications INDEXED BY notifications_due WHERE state = 'pending' LIMIT ?1)";

/// [`Db::requeue`]'s statement: the notifications named in `?2` (a JSON array) when `named`,
/// else every dead one, read from the dead index (migration 0019). Two statements rather than
/// one with `?2 IS NULL OR …`, which read every row of the outbox (0.5 s at three million).
pub(super) fn requeue_sql(named: bool) -> String {
    let which = if named {
        "id IN (SELECT value FROM json_each(?2)) \
         AND (state = 'dead' OR (state = 'pending' AND lease_until IS NULL))"
    } else {
        "state = 'dead' AND ?2 IS NULL"
    };
    format!(
        "UPDATE notifications SET state = 'pending', attempts = 0, cut_short = 0, \
             attempt_started = 0, next_attempt_at = ?1, lease_until = NULL \
         WHERE {which} RETURNING id"
    )
}

/// A notification row joined with its order id, for `outbox` and `show`.
#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub id: i64,
    pub public_id: String,
    pub order_id: String,
    /// `status_changed` or `stuck`.
    pub kind: String,
    pub channel: String,
    pub previous_status: String,
    pub status: String,
    pub state: String,
    pub attempts: i64,
    /// Attempts cut short with no outcome (the daemon died while they were under way), given
    /// back rather than counted in `attempts`.
    pub cut_short: i64,
    pub next_attempt_at: Millis,
    pub lease_until: Option<Millis>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
}

/// The stable JSON shape of an outbox row.
#[derive(Debug, Serialize)]
pub struct NotificationView {
    pub id: i64,
    pub webhook_id: String,
    pub order_id: String,
    /// `status_changed` or `stuck`.
    pub kind: String,
    pub channel: String,
    pub previous_status: String,
    pub status: String,
    pub state: String,
    pub attempts: i64,
    pub cut_short: i64,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

impl From<&NotificationRow> for NotificationView {
    fn from(row: &NotificationRow) -> Self {
        NotificationView {
            id: row.id,
            webhook_id: row.public_id.clone(),
            order_id: row.order_id.clone(),
            kind: row.kind.clone(),
            channel: row.channel.clone(),
            previous_status: row.previous_status.clone(),
            status: row.status.clone(),
            state: row.state.clone(),
            attempts: row.attempts,
            cut_short: row.cut_short,
            next_attempt_at: (row.state == "pending").then(|| to_rfc3339(row.next_attempt_at)),
            last_error: row.last_error.clone(),
            created_at: to_rfc3339(row.created_at),
            sent_at: row.sent_at.map(to_rfc3339),
        }
    }
}

/// A notification claimed for one delivery attempt.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedNotification {
    pub id: i64,
    pub public_id: String,
    pub order_id: String,
    pub channel: String,
    pub status: String,
    pub payload: String,
    pub recipient: Option<String>,
    /// Attempts made so far, this one included.
    pub attempts: i64,
    /// The end of the claim's lease: which claim a delivery receipt speaks for.
    pub lease_until: Millis,
}

/// What a notification announces (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    StatusChanged,
    Stuck,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::StatusChanged => "status_changed",
            NotificationKind::Stuck => "stuck",
        }
    }
}

/// One outbox row to insert, rendered in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub public_id: String,
    pub kind: NotificationKind,
    /// With the shipment, kind and channel it keys the row: the same transition is never queued
    /// twice for a channel.
    pub transition: i64,
    pub channel: ChannelKind,
    pub previous: Status,
    pub status: Status,
    pub payload: String,
    pub recipient: Option<String>,
    /// Set when nothing can be sent (no address for this channel): the row is stored as skipped
    /// with this reason.
    pub skipped: Option<&'static str>,
    pub next_attempt_at: Millis,
    pub created_at: Millis,
}

impl Db {
    /// Claims up to `limit` due notifications of the given channels for one attempt each. The
    /// attempt is counted at claim time, so a sender that dies mid-attempt has used it up; rows
    /// whose lease ran out after their last allowed attempt go dead instead.
    #[instrument(skip_all)]
    pub async fn claim_notifications(
        &self,
        now: Millis,
        lease_until: Millis,
        channels: &[ChannelKind],
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<ClaimedNotification>> {
        let lite = on_postgres!(self, pg => pg.claim_notifications(now, lease_until, channels, max_attempts, limit));
        let mut tx = lite.begin_write().await?;
        let rows =
            claim_notifications(&mut tx, now, lease_until, channels, max_attempts, limit).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The earliest time a pending notification of these channels becomes due.
    pub async fn next_notification_at(&self, channels: &[ChannelKind]) -> Result<Option<Millis>> {
        let lite = on_postgres!(self, pg => pg.next_notification_at(channels));
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        Ok(sqlx::query_scalar::<_, Option<Millis>>(
            "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM notifications \
             WHERE state = 'pending' AND channel IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&channels).expect("a list of strings serialises"))
        .fetch_one(&lite.read)
        .await?)
    }

    pub async fn notification_sent(&self, id: i64, now: Millis) -> Result<()> {
        let _ = on_postgres!(self, pg => pg.notification_sent(id, now));
        self.notifications_sent(&[(id, now)]).await
    }

    /// Marks several notifications sent in one transaction.
    pub async fn notifications_sent(&self, sent: &[(i64, Millis)]) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.notifications_sent(sent));
        lite.marks(&[], sent).await.map(drop)
    }

    /// Counts an attempt for each notification whose delivery has started, under the claim
    /// whose lease ends at the time given with it; returns the ids counted. A claim counts
    /// none, so that a message claimed ahead and never tried spends nothing, even when the
    /// daemon that claimed it is killed; the sender marks its starts through the writer.
    pub async fn notifications_started(&self, claims: &[(i64, Millis)]) -> Result<Vec<i64>> {
        let lite = on_postgres!(self, pg => pg.notifications_started(claims));
        lite.marks(claims, &[]).await
    }

    /// Records a failed attempt: retried at `retry_at`, or dead when that is `None`.
    pub async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
    ) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.notification_failed(id, error, retry_at));
        match retry_at {
            Some(at) => sqlx::query(
                "UPDATE notifications SET lease_until = NULL, last_error = ?, next_attempt_at = ? \
                 WHERE id = ?",
            )
            .bind(error)
            .bind(at)
            .bind(id),
            None => sqlx::query(
                "UPDATE notifications SET state = 'dead', lease_until = NULL, last_error = ? \
                 WHERE id = ?",
            )
            .bind(error)
            .bind(id),
        }
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Ends a claimed notification as skipped, with `reason`: the service said its recipient can
    /// never get it. The row is kept, as a row queued without an address is, so `outbox` and
    /// `show` tell why the buyer heard nothing.
    pub async fn notification_undeliverable(&self, id: i64, reason: &str) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.notification_undeliverable(id, reason));
        sqlx::query(
            "UPDATE notifications SET state = 'skipped', lease_until = NULL, last_error = ? \
             WHERE id = ? AND state = 'pending'",
        )
        .bind(reason)
        .bind(id)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Puts a claimed notification back to wait until `at` without counting the attempt: its
    /// channel could not send anything (stopped for lack of credit or credentials). The start
    /// counted for it, if any, is taken back (a paced channel refuses before it is counted).
    pub async fn notification_postponed(&self, id: i64, reason: &str, at: Millis) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.notification_postponed(id, reason, at));
        sqlx::query(
            "UPDATE notifications SET attempts = max(attempts - attempt_started, 0), \
                 attempt_started = 0, lease_until = NULL, \
             last_error = ?, next_attempt_at = ? WHERE id = ? AND state = 'pending'",
        )
        .bind(reason)
        .bind(at)
        .bind(id)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Gives back a claimed notification whose attempt was cut short by shutdown (or whose
    /// channel is gone from the config): an attempt started is given back and counted as cut
    /// short, as when its daemon dies.
    pub async fn release_notification(&self, id: i64) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.release_notification(id));
        sqlx::query(
            "UPDATE notifications SET lease_until = NULL, \
                 attempts = max(attempts - attempt_started, 0), \
                 cut_short = cut_short + attempt_started, attempt_started = 0 \
             WHERE id = ? AND state = 'pending'",
        )
        .bind(id)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Extends the claim on a notification to `until`, while it is still the claim this daemon
    /// took (`held`, its `lease_until`) and the row is pending. False when the claim is gone:
    /// given back, or taken by another daemon once it ran out.
    pub async fn renew_notification_claim(
        &self,
        id: i64,
        held: Millis,
        until: Millis,
    ) -> Result<bool> {
        let lite = on_postgres!(self, pg => pg.renew_notification_claim(id, held, until));
        let done = sqlx::query(
            "UPDATE notifications SET lease_until = ?3 \
             WHERE id = ?1 AND lease_until = ?2 AND state = 'pending'",
        )
        .bind(id)
        .bind(held)
        .bind(until)
        .execute(&lite.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives back notifications claimed ahead that never left, each only while the claim is
    /// still the one given (`lease_until`): the lease ends, so the message is due again at once,
    /// with no attempt spent (a claim counts none; [`Db::notifications_started`] does, and a
    /// start marked for a message that was then not sent is taken back, not counted as cut
    /// short as [`Db::release_notification`] counts it).
    pub async fn give_back_notifications(&self, claims: &[(i64, Millis)]) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.give_back_notifications(claims));
        if claims.is_empty() {
            return Ok(());
        }
        let claims = serde_json::to_string(claims).expect("pairs of integers serialise");
        sqlx::query(
            "UPDATE notifications SET lease_until = NULL, \
                 attempts = max(attempts - attempt_started, 0), attempt_started = 0 \
             FROM (SELECT value ->> 0 AS id, value ->> 1 AS lease FROM jsonb_each(?)) AS given \
             WHERE notifications.id = given.id AND notifications.lease_until = given.lease \
               AND notifications.state = 'pending'",
        )
        .bind(claims)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// The notifications of one shipment (`shipment_id`) or of all, in the order they were
    /// queued, in one state or in any.
    pub async fn list_notifications(
        &self,
        state: Option<&str>,
        shipment_id: Option<i64>,
    ) -> Result<Vec<NotificationRow>> {
        match shipment_id {
            Some(shipment_id) => self.shipment_notifications(shipment_id, state).await,
            None => self.notifications_page(state, None, None).await,
        }
    }

    /// A shipment's notifications, in the order they were queued: read by the outbox's key on
    /// the shipment (`show`, the API's `GET /v1/shipments/{order_id}`), not by reading every
    /// notification kept (0.85 s a `show` at three million).
    #[instrument(skip_all)]
    pub async fn shipment_notifications(
        &self,
        shipment_id: i64,
        state: Option<&str>,
    ) -> Result<Vec<NotificationRow>> {
        let lite = on_postgres!(self, pg => pg.shipment_notifications(shipment_id, state));
        Ok(
            sqlx::query_as::<_, NotificationRow>(AssertSqlSafe(shipment_notifications_sql()))
                .bind(shipment_id)
                .bind(state)
                .fetch_all(&lite.read)
                .await?,
        )
    }

    /// At most `limit` notifications (every one: `None`) queued after the one numbered `after`
    /// (from the first: `None`), in the order they were queued, in one state or in any: `outbox`
    /// reads the outbox a page at a time, each from where the one before ended.
    #[instrument(skip_all)]
    pub async fn notifications_page(
        &self,
        state: Option<&str>,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<NotificationRow>> {
        let lite = on_postgres!(self, pg => pg.notifications_page(state, after, limit));
        let pending = match state {
            Some("pending") => Some(
                sqlx::query_scalar(PENDING_COUNT)
                    .bind(FEW)
                    .fetch_one(&lite.read)
                    .await?,
            ),
            _ => None,
        };
        let reading = outbox_reading(state, pending);
        Ok(
            sqlx::query_as::<_, NotificationRow>(AssertSqlSafe(notifications_page_sql(reading)))
                .bind(after.unwrap_or(i64::MIN))
                .bind(state)
                // A negative LIMIT is no limit in SQLite.
                .bind(limit.map_or(-1, i64::from))
                .fetch_all(&lite.read)
                .await?,
        )
    }

    /// Requeues the given notifications (or every dead one) with a fresh set of attempts.
    /// Returns the ids requeued; rows already sent or being delivered are left alone.
    #[instrument(skip_all)]
    pub async fn requeue(&self, ids: Option<&[i64]>, now: Millis) -> Result<Vec<i64>> {
        let lite = on_postgres!(self, pg => pg.requeue(ids, now));
        let requeue = sqlx::query_scalar::<_, i64>(AssertSqlSafe(requeue_sql(ids.is_some())))
            .bind(now)
            .bind(ids.map(|ids| serde_json::to_string(ids).expect("ids serialise")));
        let mut requeued = requeue.fetch_all(&lite.write).await?;
        // RETURNING promises no order; they are printed by id.
        requeued.sort_unstable();
        Ok(requeued)
    }
}

/// Inserts outbox rows of one shipment inside the transaction that records their change. See
/// [`insert_outbox_rows`].
pub(crate) async fn insert_outbox(
    tx: &mut Transaction<'static, Sqlite>,
    shipment_id: i64,
    rows: &[OutboxRow],
) -> Result<()> {
    let rows: Vec<(i64, &OutboxRow)> = rows.iter().map(|row| (shipment_id, row)).collect();
    insert_outbox_rows(tx, &rows).await.map(drop)
}

/// Inserts outbox rows (each with its shipment) in one statement, in the order given, so that
/// the ids, which set the order of delivery, follow the order of the changes. A row whose key
/// (shipment, kind, transition, channel) exists already is left alone, so a change replayed
/// after a crash is never announced twice. Returns the rows inserted to be sent (not the skipped
/// ones): shipment, channel and public id.
pub(crate) async fn insert_outbox_rows(
    conn: &mut SqliteConnection,
    rows: &[(i64, &OutboxRow)],
) -> Result<Vec<(i64, ChannelKind, String)>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(|(shipment_id, row)| {
            serde_json::json!([
                row.public_id,
                shipment_id,
                row.kind.as_str(),
                row.transition,
                row.channel.as_str(),
                row.previous.as_str(),
                row.status.as_str(),
                row.payload,
                row.recipient,
                if row.skipped.is_some() {
                    "skipped"
                } else {
                    "pending"
                },
                row.skipped,
                row.next_attempt_at,
                row.created_at,
            ])
        })
        .collect();
    let values = serde_json::to_string(&values).expect("outbox rows serialise");
    // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT; jsonb_each
    // yields the rows in array order, each read in place (see `storage::polls::record_polls`).
    let inserted: Vec<(i64, String, String, String)> = sqlx::query_as(
        "INSERT INTO notifications (public_id, shipment_id, kind, transition, channel, \
         previous_status, status, payload, recipient, state, last_error, \
         next_attempt_at, created_at) \
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, \
             j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9, \
             j.value ->> 10, j.value ->> 11, j.value ->> 12 \
         FROM jsonb_each(?) AS j ORDER BY j.key \
         ON CONFLICT (shipment_id, kind, transition, channel) DO NOTHING \
         RETURNING shipment_id, channel, public_id, state",
    )
    .bind(values)
    .fetch_all(&mut *conn)
    .await?;
    let mut queued: Vec<(i64, ChannelKind, String)> = inserted
        .into_iter()
        .filter(|(_, _, _, state)| state == "pending")
        .filter_map(|(shipment_id, channel, public_id, _)| {
            Some((shipment_id, channel.parse().ok()?, public_id))
        })
        .collect();
    // RETURNING keeps no order: give them back in the order asked.
    let order: std::collections::HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, (_, row))| (row.public_id.as_str(), i))
        .collect();
    queued.sort_by_key(|(_, _, public_id)| order.get(public_id.as_str()).copied());
    Ok(queued)
}

/// Marks sent the deliveries that receipts left by a killed daemon say were accepted (see
/// `storage::receipts`), each only while its row is still pending under the claim that
/// delivered it; returns how many.
pub(crate) async fn mark_received(
    conn: &mut SqliteConnection,
    receipts: &[super::receipts::Receipt],
) -> Result<u64> {
    let receipts = serde_json::to_string(receipts).expect("receipts serialise");
    Ok(sqlx::query(
        "UPDATE notifications SET state = 'sent', lease_until = NULL, last_error = NULL, \
             sent_at = r.sent_at \
         FROM (SELECT value ->> 'id' AS id, value ->> 'lease_until' AS lease_until, \
                      value ->> 'sent_at' AS sent_at FROM json_each(?)) AS r \
         WHERE notifications.id = r.id AND notifications.lease_until = r.lease_until \
           AND notifications.state = 'pending' AND notifications.attempt_started = 1",
    )
    .bind(receipts)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

impl Lite {
    /// [`mark_round`] on the write connection, closed if the batch fails (it may have ended
    /// inside its transaction).
    pub(super) async fn marks(
        &self,
        started: &[(i64, Millis)],
        sent: &[(i64, Millis)],
    ) -> Result<Vec<i64>> {
        let mut conn = self.write.acquire().await?;
        let outcome = mark_round(&mut conn, started, sent).await;
        if outcome.is_err() {
            conn.close_on_drop();
        }
        outcome
    }
}

/// Marks deliveries sent, each with its time, and counts an attempt for each notification whose
/// delivery has started, each only under the claim (the end of its lease) it was started under;
/// returns the starts counted. A start that comes after its claim was given back, or taken
/// over, counts nothing: the attempt never left. A message is never in both lists: its
/// delivery waits for its start's commit.
///
/// One trip to sqlx's SQLite thread: a `BEGIN IMMEDIATE` transaction sent as one batch of
/// statements, committed. Sent apart, its four statements were four trips there and back, each
/// two thread switches that cost this machine more than the statements themselves. The batch
/// reads back the counted starts only when fewer were counted than given (`changes()` is the
/// starts' `UPDATE`'s count); its first row carries that count, under id -1. A statement that
/// fails ends the batch inside its transaction: the caller closes the connection then.
async fn mark_round(
    conn: &mut SqliteConnection,
    started: &[(i64, Millis)],
    sent: &[(i64, Millis)],
) -> Result<Vec<i64>> {
    let starts = serde_json::to_string(started).expect("pairs of integers serialise");
    let sent = serde_json::to_string(sent).expect("ids and times serialise");
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "BEGIN IMMEDIATE; \
         UPDATE notifications SET state = 'sent', lease_until = NULL, last_error = NULL, \
             sent_at = j.at \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS at FROM jsonb_each(?2)) AS j \
         WHERE notifications.id = j.id; \
         UPDATE notifications SET attempts = attempts + 1, attempt_started = 1 \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS lease FROM jsonb_each(?1)) AS given \
         WHERE notifications.id = given.id AND notifications.lease_until = given.lease \
           AND notifications.state = 'pending'; \
         SELECT -1, changes() \
         UNION ALL \
         SELECT n.id, 0 FROM notifications n \
         JOIN (SELECT value ->> 0 AS id, value ->> 1 AS lease FROM jsonb_each(?1)) AS given \
           ON n.id = given.id AND n.lease_until = given.lease \
         WHERE n.state = 'pending' AND changes() < json_array_length(?1); \
         COMMIT",
    )
    .bind(&starts)
    .bind(&sent)
    .fetch_all(&mut *conn)
    .await?;
    let counted = rows.iter().find(|(id, _)| *id == -1).map(|(_, n)| *n);
    if counted == Some(started.len() as i64) {
        return Ok(started.iter().map(|(id, _)| *id).collect());
    }
    Ok(rows
        .into_iter()
        .filter_map(|(id, _)| (id != -1).then_some(id))
        .collect())
}

/// The body of [`Db::claim_notifications`], inside a write transaction the caller commits.
pub(crate) async fn claim_notifications(
    conn: &mut SqliteConnection,
    now: Millis,
    lease_until: Millis,
    channels: &[ChannelKind],
    max_attempts: u32,
    limit: usize,
) -> Result<Vec<ClaimedNotification>> {
    let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    let channels = serde_json::to_string(&channels).expect("a list of strings serialises");
    // An attempt whose lease ran out with no outcome was cut short: given back, and counted
    // as cut short; a message cut short too often is given up (`MOST_ATTEMPTS_CUT_SHORT`).
    sqlx::query(
        "UPDATE notifications SET attempts = max(attempts - 1, 0), attempt_started = 0, \
             cut_short = cut_short + 1, \
             state = CASE WHEN cut_short + 1 >= ?2 THEN 'dead' ELSE state END, \
             lease_until = CASE WHEN cut_short + 1 >= ?2 THEN NULL ELSE lease_until END, \
             last_error = CASE WHEN cut_short + 1 >= ?2 THEN \
                 'cut short ' || (cut_short + 1) || ' times with no outcome (its daemon died or ' || \
                 'stalled while it was under way)' || \
                 coalesce(' (before that: ' || last_error || ')', '') ELSE last_error END \
         WHERE state = 'pending' AND lease_until IS NOT NULL AND lease_until <= ?1 \
           AND attempt_started = 1",
    )
    .bind(now)
    .bind(MOST_ATTEMPTS_CUT_SHORT)
    .execute(&mut *conn)
    .await?;
    // Claims made by a daemon before `attempt_started` existed counted their attempt at the
    // claim: a last one whose lease ran out is given up, as then.
    sqlx::query(
        "UPDATE notifications SET state = 'dead', lease_until = NULL, \
         last_error = 'no answer within the lease on the last attempt' || \
             coalesce(' (before that: ' || last_error || ')', '') \
         WHERE state = 'pending' AND lease_until IS NOT NULL AND lease_until <= ? \
           AND attempts >= ?",
    )
    .bind(now)
    .bind(max_attempts)
    .execute(&mut *conn)
    .await?;
    // Only the head of each shipment's queue on a channel: a notification waits while an
    // earlier one of the same shipment and channel is pending or in flight (a dead one no
    // longer holds the line), so a buyer never hears "delivered" before "out for delivery".
    // `LIMIT +?4` so that SQLite does not prepare the statement again at every call, as for
    // the shipments' claim (`storage::shipments::claim_due_shipments`).
    let rows = sqlx::query_as::<_, ClaimedNotification>(
        "UPDATE notifications SET lease_until = ?1, attempt_started = 0 \
         WHERE id IN (SELECT id FROM notifications AS n \
             WHERE state = 'pending' AND next_attempt_at <= ?2 \
               AND (lease_until IS NULL OR lease_until <= ?2) \
               AND channel IN (SELECT value FROM json_each(?3)) \
               AND NOT EXISTS (SELECT 1 FROM notifications AS earlier \
                   WHERE earlier.shipment_id = n.shipment_id AND earlier.channel = n.channel \
                     AND earlier.state = 'pending' AND earlier.id < n.id) \
             ORDER BY next_attempt_at, id LIMIT +?4) \
         RETURNING id, public_id, channel, status, payload, recipient, attempts + 1 AS attempts, \
             lease_until, (SELECT order_id FROM shipments WHERE shipments.id = shipment_id) AS order_id",
    )
    .bind(lease_until)
    .bind(now)
    .bind(&channels)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}
