//! What a poll leaves behind: its outcome written in one transaction (events, the shipment's new
//! state and the outbox rows of a change, as `track` decided them), failed polls, the event
//! history, the poll counts behind `stats`, and the provider values no mapping table knew.

use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use sqlx::{AssertSqlSafe, FromRow, SqliteConnection};
use tracing::instrument;

use super::outbox::insert_outbox_rows;
use super::shipments::rows_by_id;
use super::{Db, OutboxRow, Result, ShipmentRow, ser_time};
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
    /// The digest of the trace's events, stored with the shipment once they are written; `None`
    /// keeps what is stored.
    pub events_digest: Option<i64>,
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
        let lite = on_postgres!(self, pg => pg.events(shipment_id));
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT id, time, description, location, raw_code FROM events \
             WHERE shipment_id = ? ORDER BY time, id",
        )
        .bind(shipment_id)
        .fetch_all(&lite.read)
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
        let lite = on_postgres!(self, pg => pg.record_poll_error(id, error, now, next_poll_at));
        sqlx::query(
            "UPDATE shipments SET error = ?, last_polled_at = ?, next_poll_at = ?, \
             claimed_until = NULL WHERE id = ? AND active = 1",
        )
        .bind(error)
        .bind(now)
        .bind(next_poll_at)
        .bind(id)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Records a successful poll in one transaction: reads the row, asks `poll` what to write
    /// (`track` decides), and writes it: new events, the shipment's columns and the
    /// outbox rows of a change.
    #[instrument(skip_all, fields(id = shipment_id))]
    pub async fn record_poll(
        &self,
        shipment_id: i64,
        poll: impl Decide + Sync,
    ) -> Result<Recorded> {
        let _ = on_postgres!(self, pg => pg.record_poll(shipment_id, poll));
        let mut recorded = self.record_polls(&[(shipment_id, poll)]).await?;
        Ok(recorded.pop().unwrap_or_default())
    }

    /// Records several polls in one transaction, each exactly as [`Db::record_poll`] would: one
    /// commit instead of one per poll. All of them, or none.
    #[instrument(skip_all, fields(polls = polls.len()))]
    pub async fn record_polls<D: Decide + Sync>(
        &self,
        polls: &[(i64, D)],
    ) -> Result<Vec<Recorded>> {
        let lite = on_postgres!(self, pg => pg.record_polls(polls));
        let polls: Vec<(i64, &(dyn Decide + Sync))> = polls
            .iter()
            .map(|(id, poll)| (*id, poll as &(dyn Decide + Sync)))
            .collect();
        let mut tx = lite.begin_write().await?;
        let recorded = record_polls(&mut tx, &polls).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Adds the daemon's poll counts of the last few seconds to the minute they belong to, and
    /// forgets minutes older than a day.
    pub async fn add_poll_counts(&self, minute: Millis, counts: &[PollCount]) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.add_poll_counts(minute, counts));
        let mut tx = lite.begin_write().await?;
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
        let lite = on_postgres!(self, pg => pg.polls_last_hour(now));
        Ok(sqlx::query_as::<_, PollCount>(
            "SELECT provider, result, sum(count) AS count FROM poll_counts WHERE minute > ? \
             GROUP BY provider, result ORDER BY provider, result",
        )
        .bind(now - HOUR_MS)
        .fetch_all(&lite.read)
        .await?)
    }

    /// Provider values no mapping table knew, most frequent first.
    pub async fn unmapped(&self) -> Result<Vec<UnmappedRow>> {
        let lite = on_postgres!(self, pg => pg.unmapped());
        Ok(sqlx::query_as::<_, UnmappedRow>(
            "SELECT provider, value, count, first_seen, last_seen FROM unmapped \
             ORDER BY count DESC, provider, value",
        )
        .fetch_all(&lite.read)
        .await?)
    }
}

/// The body of [`Db::record_polls`], inside a write transaction the caller commits: a handful
/// of statements for the whole batch, whatever its size (the rows read in one statement, the
/// events, shipment columns, outbox rows and unmapped values each written in one, through
/// `jsonb_each`). A shipment polled twice in the batch is written in two rounds, so that its
/// second poll is decided on what its first one wrote.
///
/// `jsonb_each`, not `json_each`: `json_each` hands each element back as JSON text, which every
/// `value ->> field` parses again (11 fields of a shipment's update: 5.2 µs an element), where
/// `jsonb_each` hands back SQLite's binary form, read in place (1.7 µs).
pub(crate) async fn record_polls(
    conn: &mut SqliteConnection,
    polls: &[(i64, &(dyn Decide + Sync))],
) -> Result<Vec<Recorded>> {
    let mut recorded = Vec::with_capacity(polls.len());
    for round in rounds(polls) {
        recorded.extend(record_round(conn, round).await?);
    }
    Ok(recorded)
}

/// A batch of polls cut into rounds, in order, each the longest run that holds every shipment at
/// most once: a shipment polled twice is in two rounds, so that its second poll is decided on
/// what the first one wrote. Both engines record a batch round by round.
pub(super) fn rounds<T>(polls: &[(i64, T)]) -> impl Iterator<Item = &[(i64, T)]> {
    let mut rest = polls;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut seen = HashSet::new();
        let (round, after) =
            rest.split_at(rest.iter().take_while(|(id, _)| seen.insert(*id)).count());
        rest = after;
        Some(round)
    })
}

/// The columns a poll with news sets on its shipment (a poll without any sets only its
/// schedule); `None` keeps what is stored.
#[derive(Serialize)]
struct Update<'a> {
    id: i64,
    status: Option<&'a str>,
    raw_status: &'a str,
    transitions: Option<i64>,
    active: Option<i64>,
    changed_at: Option<Millis>,
    now: Millis,
    next: Millis,
    last_event_at: Option<Millis>,
    tracking_no: Option<&'a str>,
    carrier: Option<&'a str>,
    events_digest: Option<i64>,
}

/// The statement that writes a batch of [`Update`]s (a JSON array, `?`): those that `change` a
/// status, or those that refresh the details of one. Each text is built once.
pub(super) fn update_sql(change: bool) -> &'static str {
    static CHANGE: LazyLock<String> = LazyLock::new(|| update_text(true));
    static REFRESH: LazyLock<String> = LazyLock::new(|| update_text(false));
    if change { &CHANGE } else { &REFRESH }
}

fn update_text(change: bool) -> String {
    let status = if change {
        "status = j.status, transitions = j.transitions, active = j.active, \
         status_changed_at = j.changed_at, "
    } else {
        ""
    };
    format!(
        "UPDATE shipments SET {status}raw_status = j.raw_status, \
             error = NULL, last_polled_at = j.now, next_poll_at = j.next, \
             claimed_until = NULL, \
             last_event_at = coalesce(j.last_event_at, shipments.last_event_at), \
             tracking_no = coalesce(shipments.tracking_no, j.tracking_no), \
             carrier = coalesce(shipments.carrier, j.carrier), \
             events_digest = coalesce(j.events_digest, shipments.events_digest) \
         FROM (SELECT value ->> 'id' AS id, value ->> 'status' AS status, \
                   value ->> 'raw_status' AS raw_status, \
                   value ->> 'transitions' AS transitions, value ->> 'active' AS active, \
                   value ->> 'changed_at' AS changed_at, value ->> 'now' AS now, \
                   value ->> 'next' AS next, value ->> 'last_event_at' AS last_event_at, \
                   value ->> 'tracking_no' AS tracking_no, value ->> 'carrier' AS carrier, \
                   value ->> 'events_digest' AS events_digest \
               FROM jsonb_each(?)) AS j \
         WHERE shipments.id = j.id"
    )
}

/// One round of [`record_polls`]: each shipment at most once.
async fn record_round(
    conn: &mut SqliteConnection,
    polls: &[(i64, &(dyn Decide + Sync))],
) -> Result<Vec<Recorded>> {
    // Read inside the write transaction: the CLI or another tool may have changed the rows
    // while the polls were in flight.
    let ids: Vec<i64> = polls.iter().map(|(id, _)| *id).collect();
    let stored: HashMap<i64, ShipmentRow> = rows_by_id(conn, &ids)
        .await?
        .iter()
        .map(|row| ShipmentRow::from_row(row).map(|row| (row.id, row)))
        .collect::<sqlx::Result<_>>()?;
    let writes: Vec<Option<(&ShipmentRow, PollWrite<'_>)>> = polls
        .iter()
        .map(|(id, poll)| {
            let current = stored.get(id)?;
            let write = poll.decide(current);
            (write.shipment != ShipmentWrite::Skip).then_some((current, write))
        })
        .collect();

    let mut events = Vec::new();
    let mut updates = Vec::new();
    // (id, now, next poll, events digest) of the polls that bring nothing new: most of them.
    let mut schedules: Vec<(i64, Millis, Millis, Option<i64>)> = Vec::new();
    let mut outbox = Vec::new();
    let mut unmapped = Vec::new();
    for (current, write) in writes.iter().flatten() {
        let id = current.id;
        for e in write.events {
            events.push((
                id,
                e.time.timestamp_millis(),
                e.description.as_str(),
                e.location.as_deref(),
                e.raw_code.as_deref(),
            ));
        }
        for value in write.unmapped {
            unmapped.push((current.provider.as_str(), value.as_str(), write.now));
        }
        let details = match &write.shipment {
            // Left out of `writes` above.
            ShipmentWrite::Skip => continue,
            ShipmentWrite::Schedule => {
                schedules.push((id, write.now, write.next_poll_at, write.events_digest));
                continue;
            }
            ShipmentWrite::Refresh(details) | ShipmentWrite::Change { details, .. } => details,
        };
        let mut update = Update {
            id,
            status: None,
            raw_status: details.raw_status,
            transitions: None,
            active: None,
            changed_at: None,
            now: write.now,
            next: write.next_poll_at,
            last_event_at: details.last_event_at,
            tracking_no: details.tracking_no,
            carrier: details.carrier,
            events_digest: write.events_digest,
        };
        if let ShipmentWrite::Change {
            status,
            transition,
            keep_polling,
            ..
        } = &write.shipment
        {
            update.status = Some(status.as_str());
            update.transitions = Some(*transition);
            update.active = Some(i64::from(*keep_polling));
            update.changed_at = Some(write.now);
            outbox.extend(write.outbox.iter().map(|row| (id, row)));
        }
        updates.push(update);
    }

    let mut new_events: HashMap<i64, u64> = HashMap::new();
    if !events.is_empty() {
        // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT.
        let added: Vec<(i64,)> = sqlx::query_as(
            "INSERT INTO events (shipment_id, time, description, location, raw_code) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 \
             FROM jsonb_each(?) WHERE true \
             ON CONFLICT (shipment_id, time, description) DO NOTHING RETURNING shipment_id",
        )
        .bind(serde_json::to_string(&events).expect("events serialise"))
        .fetch_all(&mut *conn)
        .await?;
        for (id,) in added {
            *new_events.entry(id).or_default() += 1;
        }
    }
    // A poll that brings nothing new sets only its schedule's columns. Setting the others to
    // what they hold would cost SQLite as much as changing them: it rewrites the entries of
    // every index on a column the statement sets (the status index) and checks the constraints
    // and the type trigger of each (about 16 against 10 µs a row in a batch of 64, measured with
    // Python's sqlite3 on a million shipments).
    if !schedules.is_empty() {
        sqlx::query(
            "UPDATE shipments SET error = NULL, last_polled_at = j.now, next_poll_at = j.next, \
                 claimed_until = NULL, \
                 events_digest = coalesce(j.events_digest, shipments.events_digest) \
             FROM (SELECT value ->> 0 AS id, value ->> 1 AS now, value ->> 2 AS next, \
                       value ->> 3 AS events_digest FROM jsonb_each(?)) AS j \
             WHERE shipments.id = j.id",
        )
        .bind(serde_json::to_string(&schedules).expect("schedules serialise"))
        .execute(&mut *conn)
        .await?;
    }
    // Only a change sets the status's columns: a poll that brings events without a new status
    // leaves the status and change-time indexes alone (the same cost as above).
    let (changes, refreshes): (Vec<&Update>, Vec<&Update>) =
        updates.iter().partition(|update| update.status.is_some());
    for (batch, change) in [(refreshes, false), (changes, true)] {
        if batch.is_empty() {
            continue;
        }
        sqlx::query(AssertSqlSafe(update_sql(change)))
            .bind(serde_json::to_string(&batch).expect("updates serialise"))
            .execute(&mut *conn)
            .await?;
    }
    let mut queued: HashMap<i64, Vec<(ChannelKind, String)>> = HashMap::new();
    for (id, channel, public_id) in insert_outbox_rows(conn, &outbox).await? {
        queued.entry(id).or_default().push((channel, public_id));
    }
    if !unmapped.is_empty() {
        sqlx::query(
            "INSERT INTO unmapped (provider, value, count, first_seen, last_seen) \
             SELECT j.value ->> 0, j.value ->> 1, 1, j.value ->> 2, j.value ->> 2 \
             FROM jsonb_each(?) AS j WHERE true \
             ON CONFLICT (provider, value) DO UPDATE SET \
             count = count + 1, last_seen = excluded.last_seen",
        )
        .bind(serde_json::to_string(&unmapped).expect("unmapped values serialise"))
        .execute(&mut *conn)
        .await?;
    }

    Ok(writes
        .iter()
        .map(|write| match write {
            None => Recorded::default(),
            Some((current, write)) => Recorded {
                change: match &write.shipment {
                    ShipmentWrite::Change {
                        previous, status, ..
                    } => Some((*previous, *status)),
                    _ => None,
                },
                new_events: new_events.get(&current.id).copied().unwrap_or_default(),
                queued: queued.remove(&current.id).unwrap_or_default(),
                applied: true,
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::rounds;

    fn ids(polls: &[(i64, char)]) -> Vec<Vec<char>> {
        rounds(polls)
            .map(|round| round.iter().map(|(_, poll)| *poll).collect())
            .collect()
    }

    #[test]
    fn a_batch_of_distinct_shipments_is_one_round() {
        assert_eq!(ids(&[(1, 'a'), (2, 'b'), (3, 'c')]), [vec!['a', 'b', 'c']]);
    }

    #[test]
    fn a_shipment_polled_again_starts_the_next_round_in_order() {
        assert_eq!(
            ids(&[(1, 'a'), (2, 'b'), (1, 'c'), (3, 'd'), (1, 'e')]),
            [vec!['a', 'b'], vec!['c', 'd'], vec!['e']]
        );
    }

    #[test]
    fn an_empty_batch_has_no_round() {
        assert!(ids(&[]).is_empty());
    }
}
