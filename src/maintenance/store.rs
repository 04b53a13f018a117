//! The SQL of the maintenance jobs. Each step is one short `BEGIN IMMEDIATE` transaction that
//! works through at most [`BATCH`] shipments, so it never holds the write lock for long; a
//! backlog (after downtime) drains over the next runs.

use std::time::Duration;

use sqlx::AssertSqlSafe;
use tracing::instrument;

use crate::clock::{Millis, millis};
use crate::domain::{Status, Tier};
use crate::notify::{ChannelKind, ChannelRule};
use crate::providers::Trace;
use crate::storage::{Db, Result, SHIPMENT_COLUMNS, ShipmentRow, insert_outbox};
use crate::track::{Change, announce, new_public_id, stuck_alert};

/// Shipments one run of a step looks at, at most.
pub const BATCH: i64 = 500;

/// Statuses in which a parcel is expected to move: silence there means it is stuck. A parcel
/// waiting for the buyer (failed attempt, locker) or already flagged (exception) is not.
pub const MOVING: [Status; 3] = [Status::PickedUp, Status::InTransit, Status::OutForDelivery];

/// A status change a maintenance step made, for the pipeline's listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub order_id: String,
    pub provider: String,
    pub tier: Tier,
    pub from: Status,
    pub to: Status,
    pub raw_status: String,
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

/// "30 days", "1 day", "72 hours": how a span reads in a status text.
pub fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else {
        (secs / 3_600, "hour")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn trace(status: Status, raw_status: String) -> Trace {
    Trace {
        status,
        raw_status,
        events: Vec::new(),
        carrier: None,
        tracking_no: None,
        unmapped: Vec::new(),
    }
}

/// Moves every chosen shipment to `trace.status` and queues its notifications, in one
/// transaction. `select` must pick the shipments (`?1` is the cutoff, `?2` now, `?3` the batch).
async fn change_all(
    db: &Db,
    select: &str,
    cutoff: Millis,
    now: Millis,
    trace: &Trace,
    stop_polling: bool,
    channels: &[ChannelRule],
) -> Result<Vec<Changed>> {
    let mut tx = db.begin_write().await?;
    let rows = sqlx::query_as::<_, ShipmentRow>(AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE {select} \
         AND (claimed_until IS NULL OR claimed_until <= ?2) ORDER BY id LIMIT ?3"
    )))
    .bind(cutoff)
    .bind(now)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let mut changed = Vec::with_capacity(rows.len());
    for row in rows {
        let transition = row.transitions + 1;
        // `error` says why for a shipment still polled; an expired one keeps its last raw status.
        sqlx::query(
            "UPDATE shipments SET status = ?, transitions = ?, status_changed_at = ?, \
             active = CASE WHEN ? THEN 0 ELSE active END, \
             raw_status = CASE WHEN ? THEN raw_status ELSE ? END, \
             error = CASE WHEN ? THEN error ELSE ? END, \
             claimed_until = NULL WHERE id = ?",
        )
        .bind(trace.status.as_str())
        .bind(transition)
        .bind(now)
        .bind(stop_polling)
        .bind(stop_polling)
        .bind(&trace.raw_status)
        .bind(stop_polling)
        .bind(&trace.raw_status)
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
        let change = Change {
            shipment: &row,
            transition,
            previous: row.status,
            trace,
            newest: None,
            now,
        };
        let rows = announce(&change, channels, &mut new_public_id);
        insert_outbox(&mut tx, row.id, &rows).await?;
        changed.push(Changed {
            order_id: row.order_id.clone(),
            provider: row.provider.clone(),
            tier: row.tier,
            from: row.status,
            to: trace.status,
            raw_status: trace.raw_status.clone(),
        });
    }
    tx.commit().await?;
    Ok(changed)
}

/// Gives up on shipments with no news for `expire_after` (newest event, else when tracking
/// began): they become `expired`, polling stops, and the change is announced like any other.
/// A shipment whose poll is in flight is left for the next run: its answer may be news.
#[instrument(skip_all)]
pub async fn expire_changes(
    db: &Db,
    now: Millis,
    expire_after: Duration,
    channels: &[ChannelRule],
) -> Result<Vec<Changed>> {
    change_all(
        db,
        "active = 1 AND status NOT IN ('returned', 'delivered', 'expired') \
         AND coalesce(last_event_at, created_at) < ?1",
        now - millis(expire_after),
        now,
        &trace(
            Status::Expired,
            format!("no update for {}", span(expire_after)),
        ),
        true,
        channels,
    )
    .await
}

/// Flags shipments that never got any carrier information within `no_info_after` as
/// `exception`, with the reason in `error` and `raw_status`. Polling goes on: the carrier may
/// still scan the parcel. Only shipments that never changed status qualify, so a shipment that
/// a later poll puts back to `pending` is not flagged (and announced) over and over.
#[instrument(skip_all)]
pub async fn no_info_changes(
    db: &Db,
    now: Millis,
    no_info_after: Duration,
    channels: &[ChannelRule],
) -> Result<Vec<Changed>> {
    change_all(
        db,
        "active = 1 AND status = 'pending' AND transitions = 0 AND created_at < ?1",
        now - millis(no_info_after),
        now,
        &trace(
            Status::Exception,
            format!("no carrier information after {}", span(no_info_after)),
        ),
        false,
        channels,
    )
    .await
}

pub use crate::config::POLL_HORIZON;

/// Marks invalid each active shipment whose `next_poll_at` is beyond `now` + [`POLL_HORIZON`]
/// (year 9999, microseconds where milliseconds belong): it would never come up for a poll, and
/// nobody would notice. Returns the order ids with their reasons.
#[instrument(skip_all)]
pub async fn unreachable_polls(db: &Db, now: Millis) -> Result<Vec<(String, String)>> {
    let cutoff = now.saturating_add(millis(POLL_HORIZON));
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT id, order_id, next_poll_at FROM shipments \
         WHERE active = 1 AND next_poll_at > ?1 ORDER BY next_poll_at LIMIT ?2",
    )
    .bind(cutoff)
    .bind(BATCH)
    .fetch_all(&db.read)
    .await?;
    let mut invalid = Vec::new();
    for (id, order_id, at) in rows {
        let reason = format!(
            "next_poll_at = {at} ({}) is more than {} ahead, so it would never be polled: times are milliseconds since 1970-01-01 UTC",
            crate::intake::shown_time(at),
            span(POLL_HORIZON)
        );
        let done = sqlx::query(
            "UPDATE shipments SET active = 0, error = ?1, last_polled_at = ?2 \
             WHERE id = ?3 AND active = 1 AND next_poll_at > ?4",
        )
        .bind(&reason)
        .bind(now)
        .bind(id)
        .bind(cutoff)
        .execute(&db.write)
        .await?;
        if done.rows_affected() == 1 {
            invalid.push((order_id, reason));
        }
    }
    Ok(invalid)
}

/// Queues one `shipment.stuck` webhook notification for each moving shipment (see [`MOVING`])
/// that has been quiet for `stuck_after`, once per stall. Buyers are not told: a stall is for the
/// shop to chase with the carrier. Without a webhook channel nothing is queued or remembered.
#[instrument(skip_all)]
pub async fn stuck_alerts(
    db: &Db,
    now: Millis,
    stuck_after: Duration,
    channels: &[ChannelRule],
) -> Result<Vec<String>> {
    if !channels.iter().any(|c| c.kind == ChannelKind::Webhook) {
        return Ok(Vec::new());
    }
    let mut tx = db.begin_write().await?;
    let moving = serde_json::to_string(&MOVING.map(Status::as_str)).expect("plain strings");
    // Quiet since the newest event, else the change to the current status, else creation.
    let rows = sqlx::query_as::<_, StuckRow>(AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS}, quiet_since, stalls FROM (SELECT *, \
             coalesce(last_event_at, status_changed_at, created_at) AS quiet_since \
             FROM shipments) \
         WHERE active = 1 AND status IN (SELECT value FROM json_each(?1)) AND quiet_since < ?2 \
           AND (stuck_alerted_for IS NULL OR stuck_alerted_for <> quiet_since) \
         ORDER BY id LIMIT ?3"
    )))
    .bind(&moving)
    .bind(now - millis(stuck_after))
    .bind(BATCH)
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
        let alert = stuck_alert(
            &row.shipment,
            stall,
            row.quiet_since,
            now,
            &mut new_public_id,
        );
        insert_outbox(&mut tx, row.shipment.id, &[alert]).await?;
        alerted.push(row.shipment.order_id);
    }
    tx.commit().await?;
    Ok(alerted)
}

#[derive(sqlx::FromRow)]
struct StuckRow {
    #[sqlx(flatten)]
    shipment: ShipmentRow,
    quiet_since: Millis,
    stalls: i64,
}

/// Deletes what nobody needs after `retain`: notifications delivered (or skipped) that long ago,
/// and the whole event history of shipments that ended (delivered, returned, expired) that long
/// ago. Dead and pending notifications stay: an operator has yet to look at them. The shipment
/// rows stay too: they belong to the shop.
#[instrument(skip_all)]
pub async fn prune(db: &Db, now: Millis, retain: Duration) -> Result<Pruned> {
    let cutoff = now - millis(retain);
    let mut tx = db.begin_write().await?;
    let notifications = sqlx::query(
        "DELETE FROM notifications WHERE state IN ('sent', 'skipped') \
         AND coalesce(sent_at, created_at) < ?",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let events = sqlx::query(
        "DELETE FROM events WHERE shipment_id IN (SELECT id FROM shipments \
             WHERE active = 0 AND status IN ('delivered', 'returned', 'expired') \
               AND coalesce(status_changed_at, last_event_at, created_at) < ?)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Pruned {
        notifications,
        events,
    })
}

/// Folds the write-ahead log back into the database file and truncates it, so the WAL does not
/// grow without bound while readers (the CLI, outside tools) keep it from resetting.
#[instrument(skip_all)]
pub async fn checkpoint(db: &Db) -> Result<Checkpointed> {
    let (busy, wal_frames, checkpointed_frames) =
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&db.write)
            .await?;
    Ok(Checkpointed {
        busy: busy != 0,
        wal_frames,
        checkpointed_frames,
    })
}
