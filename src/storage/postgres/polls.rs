//! PostgreSQL: the operations of `storage/polls.rs`.
//!
//! A batch of polls is a handful of statements whatever its size, as on SQLite: the rows read
//! and locked in one (`FOR UPDATE`, in id order so that two daemons' batches never wait on each
//! other in a circle), then the events, the shipments' columns, the outbox rows and the unmapped
//! values each written in one, from arrays (`unnest`).

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, PgConnection};

use super::outbox::insert_outbox_rows;
use super::*;
use crate::domain::ChannelKind;

const HOUR_MS: Millis = 3_600_000;
const DAY_MS: Millis = 24 * HOUR_MS;

impl Pg {
    pub async fn events(&self, shipment_id: i64) -> Result<Vec<EventRow>> {
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT id, time, description, location, raw_code FROM events \
             WHERE shipment_id = $1 ORDER BY time, id",
        )
        .bind(shipment_id)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn record_poll_error(
        &self,
        id: i64,
        error: &str,
        now: Millis,
        next_poll_at: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE shipments SET error = $1, last_polled_at = $2, next_poll_at = $3, \
             claimed_until = NULL WHERE id = $4 AND active = 1",
        )
        .bind(error)
        .bind(now)
        .bind(next_poll_at)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn record_poll(
        &self,
        shipment_id: i64,
        poll: impl Decide + Sync,
    ) -> Result<Recorded> {
        let mut recorded = self.record_polls(&[(shipment_id, poll)]).await?;
        Ok(recorded.pop().unwrap_or_default())
    }

    pub async fn record_polls<D: Decide + Sync>(
        &self,
        polls: &[(i64, D)],
    ) -> Result<Vec<Recorded>> {
        let polls: Vec<(i64, &(dyn Decide + Sync))> = polls
            .iter()
            .map(|(id, poll)| (*id, poll as &(dyn Decide + Sync)))
            .collect();
        let mut tx = self.begin().await?;
        let recorded = record_polls_in(&mut tx, &polls).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    pub async fn add_poll_counts(&self, minute: Millis, counts: &[PollCount]) -> Result<()> {
        let mut tx = self.begin().await?;
        if !counts.is_empty() {
            let providers: Vec<&str> = counts.iter().map(|c| c.provider.as_str()).collect();
            let results: Vec<&str> = counts.iter().map(|c| c.result.as_str()).collect();
            let numbers: Vec<i64> = counts.iter().map(|c| c.count).collect();
            // Summed first: one statement may not update a row twice. Sorted, so that two
            // daemons adding at once lock the rows in the same order.
            sqlx::query(
                "INSERT INTO poll_counts (minute, provider, result, count) \
                 SELECT $1, provider, result, sum(count)::BIGINT \
                 FROM unnest($2::TEXT[], $3::TEXT[], $4::BIGINT[]) AS c (provider, result, count) \
                 GROUP BY provider, result ORDER BY provider, result \
                 ON CONFLICT (minute, provider, result) \
                 DO UPDATE SET count = poll_counts.count + excluded.count",
            )
            .bind(minute)
            .bind(providers)
            .bind(results)
            .bind(numbers)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM poll_counts WHERE minute < $1")
            .bind(minute - DAY_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn polls_last_hour(&self, now: Millis) -> Result<Vec<PollCount>> {
        Ok(sqlx::query_as::<_, PollCount>(
            "SELECT provider, result, sum(count)::BIGINT AS count FROM poll_counts \
             WHERE minute > $1 GROUP BY provider, result ORDER BY provider, result",
        )
        .bind(now - HOUR_MS)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn unmapped(&self) -> Result<Vec<UnmappedRow>> {
        Ok(sqlx::query_as::<_, UnmappedRow>(
            "SELECT provider, value, count, first_seen, last_seen FROM unmapped \
             ORDER BY count DESC, provider, value",
        )
        .fetch_all(self.pool())
        .await?)
    }
}

/// The body of [`Pg::record_polls`], inside a transaction the caller commits. A shipment polled
/// twice in the batch is written in two rounds, so that its second poll is decided on what its
/// first one wrote.
pub(super) async fn record_polls_in(
    conn: &mut PgConnection,
    polls: &[(i64, &(dyn Decide + Sync))],
) -> Result<Vec<Recorded>> {
    let mut recorded = Vec::with_capacity(polls.len());
    for round in crate::storage::polls::rounds(polls) {
        recorded.extend(record_round(conn, round).await?);
    }
    Ok(recorded)
}

/// The columns the polls of one round set, one array per column; `None` keeps what is stored.
#[derive(Default)]
struct Updates<'a> {
    id: Vec<i64>,
    status: Vec<Option<&'a str>>,
    raw_status: Vec<Option<&'a str>>,
    transitions: Vec<Option<i64>>,
    active: Vec<Option<i64>>,
    changed_at: Vec<Option<Millis>>,
    now: Vec<Millis>,
    next: Vec<Millis>,
    last_event_at: Vec<Option<Millis>>,
    tracking_no: Vec<Option<&'a str>>,
    carrier: Vec<Option<&'a str>>,
    events_digest: Vec<Option<i64>>,
}

/// The events of one round, one array per column.
#[derive(Default)]
struct Events<'a> {
    shipment_id: Vec<i64>,
    time: Vec<Millis>,
    description: Vec<&'a str>,
    location: Vec<Option<&'a str>>,
    raw_code: Vec<Option<&'a str>>,
}

/// One round of [`record_polls_in`]: each shipment at most once.
async fn record_round(
    conn: &mut PgConnection,
    polls: &[(i64, &(dyn Decide + Sync))],
) -> Result<Vec<Recorded>> {
    // Read and locked inside the transaction: another daemon, the CLI or another tool may have
    // changed the rows while the polls were in flight, and must not change them now until this
    // commits.
    let ids: Vec<i64> = polls.iter().map(|(id, _)| *id).collect();
    let stored: HashMap<i64, ShipmentRow> =
        sqlx::query_as::<_, ShipmentRow>(AssertSqlSafe(format!(
            "SELECT {PG_SHIPMENT_COLUMNS} FROM shipments WHERE id = ANY($1) \
             ORDER BY id FOR UPDATE"
        )))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let writes: Vec<Option<(&ShipmentRow, PollWrite<'_>)>> = polls
        .iter()
        .map(|(id, poll)| {
            let current = stored.get(id)?;
            let write = poll.decide(current);
            (write.shipment != ShipmentWrite::Skip).then_some((current, write))
        })
        .collect();

    let mut events = Events::default();
    let mut updates = Updates::default();
    let mut outbox = Vec::new();
    let mut unmapped: Vec<(&str, &str, Millis)> = Vec::new();
    for (current, write) in writes.iter().flatten() {
        let id = current.id;
        for e in write.events {
            events.shipment_id.push(id);
            events.time.push(e.time.timestamp_millis());
            events.description.push(e.description.as_str());
            events.location.push(e.location.as_deref());
            events.raw_code.push(e.raw_code.as_deref());
        }
        let (mut status, mut transitions, mut active, mut changed_at) = (None, None, None, None);
        let details = match &write.shipment {
            ShipmentWrite::Skip | ShipmentWrite::Schedule => None,
            ShipmentWrite::Refresh(details) => Some(details),
            ShipmentWrite::Change {
                status: new,
                transition,
                keep_polling,
                details,
                ..
            } => {
                status = Some(new.as_str());
                transitions = Some(*transition);
                active = Some(i64::from(*keep_polling));
                changed_at = Some(write.now);
                outbox.extend(write.outbox.iter().map(|row| (id, row)));
                Some(details)
            }
        };
        updates.id.push(id);
        updates.status.push(status);
        updates.transitions.push(transitions);
        updates.active.push(active);
        updates.changed_at.push(changed_at);
        updates.now.push(write.now);
        updates.next.push(write.next_poll_at);
        updates.raw_status.push(details.map(|d| d.raw_status));
        updates
            .last_event_at
            .push(details.and_then(|d| d.last_event_at));
        updates
            .tracking_no
            .push(details.and_then(|d| d.tracking_no));
        updates.carrier.push(details.and_then(|d| d.carrier));
        updates.events_digest.push(write.events_digest);
        for value in write.unmapped {
            unmapped.push((current.provider.as_str(), value.as_str(), write.now));
        }
    }

    let mut new_events: HashMap<i64, u64> = HashMap::new();
    if !events.shipment_id.is_empty() {
        let added: Vec<(i64,)> = sqlx::query_as(
            "INSERT INTO events (shipment_id, time, description, location, raw_code) \
             SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], \
                 $5::TEXT[]) \
             ON CONFLICT (shipment_id, time, description) DO NOTHING RETURNING shipment_id",
        )
        .bind(events.shipment_id)
        .bind(events.time)
        .bind(events.description)
        .bind(events.location)
        .bind(events.raw_code)
        .fetch_all(&mut *conn)
        .await?;
        for (id,) in added {
            *new_events.entry(id).or_default() += 1;
        }
    }
    if !updates.id.is_empty() {
        sqlx::query(
            "UPDATE shipments SET status = coalesce(j.status, shipments.status), \
                 raw_status = coalesce(j.raw_status, shipments.raw_status), \
                 transitions = coalesce(j.transitions, shipments.transitions), \
                 active = coalesce(j.active, shipments.active), \
                 status_changed_at = coalesce(j.changed_at, shipments.status_changed_at), \
                 error = NULL, last_polled_at = j.now, next_poll_at = j.next, \
                 claimed_until = NULL, \
                 last_event_at = coalesce(j.last_event_at, shipments.last_event_at), \
                 tracking_no = coalesce(shipments.tracking_no, j.tracking_no), \
                 carrier = coalesce(shipments.carrier, j.carrier), \
                 events_digest = coalesce(j.events_digest, shipments.events_digest) \
             FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], \
                     $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::TEXT[], \
                     $11::TEXT[], $12::BIGINT[]) \
                 AS j (id, status, raw_status, transitions, active, changed_at, now, next, \
                     last_event_at, tracking_no, carrier, events_digest) \
             WHERE shipments.id = j.id",
        )
        .bind(updates.id)
        .bind(updates.status)
        .bind(updates.raw_status)
        .bind(updates.transitions)
        .bind(updates.active)
        .bind(updates.changed_at)
        .bind(updates.now)
        .bind(updates.next)
        .bind(updates.last_event_at)
        .bind(updates.tracking_no)
        .bind(updates.carrier)
        .bind(updates.events_digest)
        .execute(&mut *conn)
        .await?;
    }
    let mut queued: HashMap<i64, Vec<(ChannelKind, String)>> = HashMap::new();
    for (id, channel, public_id) in insert_outbox_rows(conn, &outbox).await? {
        queued.entry(id).or_default().push((channel, public_id));
    }
    if !unmapped.is_empty() {
        let providers: Vec<&str> = unmapped.iter().map(|u| u.0).collect();
        let values: Vec<&str> = unmapped.iter().map(|u| u.1).collect();
        let seen: Vec<Millis> = unmapped.iter().map(|u| u.2).collect();
        // Counted first: one statement may not update a row twice, where SQLite's counts each
        // value as often as it came. Sorted, so that daemons lock the rows in one order.
        sqlx::query(
            "INSERT INTO unmapped (provider, value, count, first_seen, last_seen) \
             SELECT provider, value, count(*), min(seen), max(seen) \
             FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS u (provider, value, seen) \
             GROUP BY provider, value ORDER BY provider, value \
             ON CONFLICT (provider, value) DO UPDATE SET \
             count = unmapped.count + excluded.count, last_seen = excluded.last_seen",
        )
        .bind(providers)
        .bind(values)
        .bind(seen)
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
