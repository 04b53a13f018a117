//! What a poll leaves behind: its outcome written in one transaction (events, the shipment's new
//! state and the outbox rows of a change, as `track` decided them), failed polls, the event
//! history, the poll counts behind `stats`, and the provider values no mapping table knew.

use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow, Sqlite, Transaction};
use tracing::instrument;

use super::outbox::insert_outbox;
use super::{Db, OutboxRow, Result, SHIPMENT_COLUMNS, ShipmentRow, ser_time};
use crate::clock::Millis;
use crate::domain::{ChannelKind, Status};
use crate::providers::TraceEvent;

/// Decides what one poll writes, given the shipment as stored (read inside the write
/// transaction). The rules live in the `track` module; storage only executes the answer.
pub trait Decide {
    fn decide(&self, stored: &ShipmentRow) -> PollWrite<'_>;
}

/// What one poll writes, as decided from the stored row and the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollWrite<'a> {
    pub now: Millis,
    pub next_poll_at: Millis,
    /// Events to add (those already stored are skipped).
    pub events: &'a [TraceEvent],
    pub shipment: ShipmentWrite<'a>,
    /// Outbox rows to queue with the change; a row whose key exists already is not queued again.
    pub outbox: Vec<OutboxRow>,
    /// Provider codes that no mapping table knows, to count.
    pub unmapped: &'a [String],
}

/// How the shipment row itself changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentWrite<'a> {
    /// The shipment was removed or deactivated while the poll was in flight: nothing is written.
    Skip,
    /// Only the poll time and the next poll time.
    Schedule,
    /// Same status, newer details.
    Refresh(Details<'a>),
    /// A new status: transition `transition` from `previous`.
    Change {
        previous: Status,
        status: Status,
        transition: i64,
        /// False once the status is final: the shipment leaves the schedule.
        keep_polling: bool,
        details: Details<'a>,
    },
}

/// The columns a poll refreshes; `None` keeps what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details<'a> {
    pub raw_status: &'a str,
    pub last_event_at: Option<Millis>,
    pub tracking_no: Option<&'a str>,
    pub carrier: Option<&'a str>,
}

/// What a recorded poll changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// `(previous, new)` when the status changed.
    pub change: Option<(Status, Status)>,
    pub new_events: u64,
    /// Outbox rows queued: channel and public id.
    pub queued: Vec<(ChannelKind, String)>,
    /// False when the shipment was removed or deactivated while the poll was in flight.
    pub applied: bool,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct EventRow {
    #[serde(skip)]
    pub id: i64,
    #[serde(serialize_with = "ser_time")]
    pub time: Millis,
    pub description: String,
    pub location: Option<String>,
    pub raw_code: Option<String>,
}

/// Polls of one provider with one result, over some span of time.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct PollCount {
    pub provider: String,
    pub result: String,
    pub count: i64,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct UnmappedRow {
    pub provider: String,
    pub value: String,
    pub count: i64,
    #[serde(serialize_with = "ser_time")]
    pub first_seen: Millis,
    #[serde(serialize_with = "ser_time")]
    pub last_seen: Millis,
}

const HOUR_MS: Millis = 3_600_000;
const DAY_MS: Millis = 24 * HOUR_MS;

impl Db {
    /// The event history of a shipment, oldest first.
    #[instrument(skip_all)]
    pub async fn events(&self, shipment_id: i64) -> Result<Vec<EventRow>> {
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT id, time, description, location, raw_code FROM events \
             WHERE shipment_id = ? ORDER BY time, id",
        )
        .bind(shipment_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// Records a poll that failed but may work later.
    pub async fn record_poll_error(
        &self,
        id: i64,
        error: &str,
        now: Millis,
        next_poll_at: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE shipments SET error = ?, last_polled_at = ?, next_poll_at = ?, \
             claimed_until = NULL WHERE id = ? AND active = 1",
        )
        .bind(error)
        .bind(now)
        .bind(next_poll_at)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Records a successful poll in one transaction: reads the row, asks `poll` what to write
    /// (`track` decides), and writes it: new events, the shipment's columns and the
    /// outbox rows of a change.
    #[instrument(skip_all, fields(id = shipment_id))]
    pub async fn record_poll(&self, shipment_id: i64, poll: impl Decide) -> Result<Recorded> {
        let mut tx = self.begin_write().await?;
        let recorded = record_poll_in(&mut tx, shipment_id, &poll).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Records several polls in one transaction, each exactly as [`Db::record_poll`] would: one
    /// commit instead of one per poll. All of them, or none.
    #[instrument(skip_all, fields(polls = polls.len()))]
    pub async fn record_polls<D: Decide + Sync>(
        &self,
        polls: &[(i64, D)],
    ) -> Result<Vec<Recorded>> {
        let mut tx = self.begin_write().await?;
        let mut recorded = Vec::with_capacity(polls.len());
        for (shipment_id, poll) in polls {
            recorded.push(record_poll_in(&mut tx, *shipment_id, poll).await?);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    /// Adds the daemon's poll counts of the last few seconds to the minute they belong to, and
    /// forgets minutes older than a day.
    pub async fn add_poll_counts(&self, minute: Millis, counts: &[PollCount]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for c in counts {
            sqlx::query(
                "INSERT INTO poll_counts (minute, provider, result, count) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (minute, provider, result) DO UPDATE SET count = count + excluded.count",
            )
            .bind(minute)
            .bind(&c.provider)
            .bind(&c.result)
            .bind(c.count)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM poll_counts WHERE minute < ?")
            .bind(minute - DAY_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Polls per provider and result in the hour before `now`.
    pub async fn polls_last_hour(&self, now: Millis) -> Result<Vec<PollCount>> {
        Ok(sqlx::query_as::<_, PollCount>(
            "SELECT provider, result, sum(count) AS count FROM poll_counts WHERE minute > ? \
             GROUP BY provider, result ORDER BY provider, result",
        )
        .bind(now - HOUR_MS)
        .fetch_all(&self.read)
        .await?)
    }

    /// Provider values no mapping table knew, most frequent first.
    pub async fn unmapped(&self) -> Result<Vec<UnmappedRow>> {
        Ok(sqlx::query_as::<_, UnmappedRow>(
            "SELECT provider, value, count, first_seen, last_seen FROM unmapped \
             ORDER BY count DESC, provider, value",
        )
        .fetch_all(&self.read)
        .await?)
    }
}

/// The body of [`Db::record_poll`], inside a write transaction the caller commits.
async fn record_poll_in(
    tx: &mut Transaction<'static, Sqlite>,
    shipment_id: i64,
    poll: &impl Decide,
) -> Result<Recorded> {
    // Read inside the write transaction: the CLI or another tool may have changed the row
    // while the poll was in flight.
    let Some(current) = sqlx::query_as::<_, ShipmentRow>(AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE id = ?"
    )))
    .bind(shipment_id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(Recorded::default());
    };
    let write = poll.decide(&current);
    if write.shipment == ShipmentWrite::Skip {
        return Ok(Recorded::default());
    }
    let new_events = insert_events(tx, shipment_id, write.events).await?;
    let mut change = None;
    let mut queued = Vec::new();
    match &write.shipment {
        ShipmentWrite::Skip => {}
        ShipmentWrite::Change {
            previous,
            status,
            transition,
            keep_polling,
            details,
        } => {
            sqlx::query(
                "UPDATE shipments SET status = ?, raw_status = ?, transitions = ?, active = ?, \
                 error = NULL, status_changed_at = ?, last_polled_at = ?, next_poll_at = ?, \
                 claimed_until = NULL, \
                 last_event_at = coalesce(?, last_event_at), \
                 tracking_no = coalesce(tracking_no, ?), carrier = coalesce(carrier, ?) \
                 WHERE id = ?",
            )
            .bind(status.as_str())
            .bind(details.raw_status)
            .bind(transition)
            .bind(keep_polling)
            .bind(write.now)
            .bind(write.now)
            .bind(write.next_poll_at)
            .bind(details.last_event_at)
            .bind(details.tracking_no)
            .bind(details.carrier)
            .bind(shipment_id)
            .execute(&mut **tx)
            .await?;
            change = Some((*previous, *status));
            queued = insert_outbox(tx, shipment_id, &write.outbox).await?;
        }
        ShipmentWrite::Refresh(details) => {
            sqlx::query(
                "UPDATE shipments SET raw_status = ?, error = NULL, last_polled_at = ?, \
                 next_poll_at = ?, claimed_until = NULL, last_event_at = coalesce(?, last_event_at), \
                 tracking_no = coalesce(tracking_no, ?), carrier = coalesce(carrier, ?) \
                 WHERE id = ?",
            )
            .bind(details.raw_status)
            .bind(write.now)
            .bind(write.next_poll_at)
            .bind(details.last_event_at)
            .bind(details.tracking_no)
            .bind(details.carrier)
            .bind(shipment_id)
            .execute(&mut **tx)
            .await?;
        }
        ShipmentWrite::Schedule => {
            sqlx::query(
                "UPDATE shipments SET last_polled_at = ?, next_poll_at = ?, error = NULL, \
                 claimed_until = NULL WHERE id = ?",
            )
            .bind(write.now)
            .bind(write.next_poll_at)
            .bind(shipment_id)
            .execute(&mut **tx)
            .await?;
        }
    }
    for value in write.unmapped {
        sqlx::query(
            "INSERT INTO unmapped (provider, value, count, first_seen, last_seen) \
             VALUES (?, ?, 1, ?, ?) ON CONFLICT (provider, value) DO UPDATE SET \
             count = count + 1, last_seen = excluded.last_seen",
        )
        .bind(&current.provider)
        .bind(value)
        .bind(write.now)
        .bind(write.now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Recorded {
        change,
        new_events,
        queued,
        applied: true,
    })
}

/// Adds the events not stored yet, all in one statement (a trace repeats its whole history
/// at every poll); returns how many were new.
async fn insert_events(
    tx: &mut Transaction<'static, Sqlite>,
    shipment_id: i64,
    events: &[TraceEvent],
) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let rows: Vec<(i64, &str, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e.time.timestamp_millis(),
                e.description.as_str(),
                e.location.as_deref(),
                e.raw_code.as_deref(),
            )
        })
        .collect();
    let rows = serde_json::to_string(&rows).expect("events serialise");
    // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT.
    Ok(sqlx::query(
        "INSERT INTO events (shipment_id, time, description, location, raw_code) \
         SELECT ?, value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) \
         WHERE true ON CONFLICT (shipment_id, time, description) DO NOTHING",
    )
    .bind(shipment_id)
    .bind(rows)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}
