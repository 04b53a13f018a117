//! PostgreSQL: the operations of `storage/outbox.rs`.
//!
//! Several daemons claim from one outbox. A claim locks the rows it takes (`FOR UPDATE SKIP
//! LOCKED`), so two daemons never take the same notification, and takes only the head of each
//! shipment's line on a channel: a notification waits while an earlier one of the same shipment
//! and channel is pending, leased by any daemon or not, exactly as on SQLite.

use sqlx::{AssertSqlSafe, PgConnection};

use super::*;
use crate::domain::{ChannelKind, MOST_ATTEMPTS_CUT_SHORT};
use crate::storage::outbox::NOTIFICATION_COLUMNS;

impl Pg {
    pub async fn claim_notifications(
        &self,
        now: Millis,
        lease_until: Millis,
        channels: &[ChannelKind],
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<ClaimedNotification>> {
        let mut tx = self.begin().await?;
        let rows = claim_notifications_in(&mut tx, now, lease_until, channels, max_attempts, limit)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn next_notification_at(&self, channels: &[ChannelKind]) -> Result<Option<Millis>> {
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        Ok(sqlx::query_scalar::<_, Option<Millis>>(
            "SELECT min(greatest(next_attempt_at, coalesce(lease_until, 0))) FROM notifications \
             WHERE state = 'pending' AND channel = ANY($1)",
        )
        .bind(channels)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn notification_sent(&self, id: i64, now: Millis) -> Result<()> {
        self.notifications_sent(&[(id, now)]).await
    }

    pub async fn notifications_sent(&self, sent: &[(i64, Millis)]) -> Result<()> {
        let mut conn = self.pool().acquire().await?;
        mark_sent_in(&mut conn, sent).await
    }

    /// As SQLite's `storage::outbox::mark_received`: each receipt marks its row sent only while
    /// the row is still pending under the claim it names, its attempt started. Another daemon
    /// that took the row since holds another lease, and its row is left alone.
    pub async fn mark_received(
        &self,
        receipts: &[crate::storage::receipts::Receipt],
    ) -> Result<u64> {
        let ids: Vec<i64> = receipts.iter().map(|r| r.id).collect();
        let leases: Vec<Millis> = receipts.iter().map(|r| r.lease_until).collect();
        let sent_at: Vec<Millis> = receipts.iter().map(|r| r.sent_at).collect();
        Ok(sqlx::query(
            "UPDATE notifications SET state = 'sent', lease_until = NULL, last_error = NULL, \
                 sent_at = r.sent_at \
             FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) AS r (id, lease, sent_at) \
             WHERE notifications.id = r.id AND notifications.lease_until = r.lease \
               AND notifications.state = 'pending' AND notifications.attempt_started = 1",
        )
        .bind(ids)
        .bind(leases)
        .bind(sent_at)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    pub async fn notifications_started(&self, claims: &[(i64, Millis)]) -> Result<Vec<i64>> {
        let mut conn = self.pool().acquire().await?;
        mark_started_in(&mut conn, claims).await
    }

    pub async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
    ) -> Result<()> {
        match retry_at {
            Some(at) => sqlx::query(
                "UPDATE notifications SET lease_until = NULL, last_error = $1, \
                 next_attempt_at = $2 WHERE id = $3",
            )
            .bind(error)
            .bind(at)
            .bind(id),
            None => sqlx::query(
                "UPDATE notifications SET state = 'dead', lease_until = NULL, last_error = $1 \
                 WHERE id = $2",
            )
            .bind(error)
            .bind(id),
        }
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn notification_undeliverable(&self, id: i64, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET state = 'skipped', lease_until = NULL, last_error = $1 \
             WHERE id = $2 AND state = 'pending'",
        )
        .bind(reason)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn notification_postponed(&self, id: i64, reason: &str, at: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET attempts = greatest(attempts - attempt_started, 0), \
                 attempt_started = 0, lease_until = NULL, \
             last_error = $1, next_attempt_at = $2 WHERE id = $3 AND state = 'pending'",
        )
        .bind(reason)
        .bind(at)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn renew_notification_claim(
        &self,
        id: i64,
        held: Millis,
        until: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE notifications SET lease_until = $3 \
             WHERE id = $1 AND lease_until = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(held)
        .bind(until)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn release_notification(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET lease_until = NULL, \
                 attempts = greatest(attempts - attempt_started, 0), \
                 cut_short = cut_short + attempt_started, attempt_started = 0 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn give_back_notifications(&self, claims: &[(i64, Millis)]) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let (ids, leases): (Vec<i64>, Vec<Millis>) = claims.iter().copied().unzip();
        sqlx::query(
            "UPDATE notifications SET lease_until = NULL, \
                 attempts = greatest(attempts - attempt_started, 0), attempt_started = 0 \
             FROM unnest($1::BIGINT[], $2::BIGINT[]) AS given (id, lease) \
             WHERE notifications.id = given.id AND notifications.lease_until = given.lease \
               AND notifications.state = 'pending'",
        )
        .bind(ids)
        .bind(leases)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn shipment_notifications(
        &self,
        shipment_id: i64,
        state: Option<&str>,
    ) -> Result<Vec<NotificationRow>> {
        Ok(sqlx::query_as::<_, NotificationRow>(AssertSqlSafe(format!(
            "SELECT {NOTIFICATION_COLUMNS} \
             FROM notifications n JOIN shipments s ON s.id = n.shipment_id \
             WHERE n.shipment_id = $1 AND ($2::TEXT IS NULL OR n.state = $2) ORDER BY n.id"
        )))
        .bind(shipment_id)
        .bind(state)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn notifications_page(
        &self,
        state: Option<&str>,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<NotificationRow>> {
        // As on SQLite (`notifications_page_sql`): the dead ones from their own index.
        let state_is = if state == Some("dead") {
            "n.state = 'dead' AND n.state = $2"
        } else {
            "($2::TEXT IS NULL OR n.state = $2)"
        };
        Ok(sqlx::query_as::<_, NotificationRow>(AssertSqlSafe(format!(
            "SELECT {NOTIFICATION_COLUMNS} \
             FROM notifications n JOIN shipments s ON s.id = n.shipment_id \
             WHERE n.id > $1 AND {state_is} ORDER BY n.id LIMIT $3"
        )))
        .bind(after.unwrap_or(i64::MIN))
        .bind(state)
        // LIMIT NULL is no limit.
        .bind(limit.map(i64::from))
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn requeue(&self, ids: Option<&[i64]>, now: Millis) -> Result<Vec<i64>> {
        // As on SQLite (`requeue_sql`): every dead one from the dead index, or the ones named.
        let which = if ids.is_some() {
            "id = ANY($2) AND (state = 'dead' OR (state = 'pending' AND lease_until IS NULL))"
        } else {
            "state = 'dead' AND $2::BIGINT[] IS NULL"
        };
        let requeue = sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
            "UPDATE notifications SET state = 'pending', attempts = 0, cut_short = 0, \
                 attempt_started = 0, next_attempt_at = $1, lease_until = NULL \
             WHERE {which} RETURNING id"
        )))
        .bind(now)
        .bind(ids);
        let mut requeued = requeue.fetch_all(self.pool()).await?;
        // RETURNING promises no order; they are printed by id.
        requeued.sort_unstable();
        Ok(requeued)
    }
}

/// SQLite's `insert_outbox_rows` on PostgreSQL: one statement for the whole batch, in the order
/// given (the ids, which set the order of delivery, follow the order of the changes); a row whose
/// key exists already is left alone. Returns the rows inserted to be sent (not the skipped ones):
/// shipment, channel and public id, in the order asked.
///
/// The caller holds the lock on each shipment's row (`FOR UPDATE`), so that two daemons never
/// queue notifications of one shipment at once: the ids of its line follow its commits.
pub(super) async fn insert_outbox_rows(
    conn: &mut PgConnection,
    rows: &[(i64, &OutboxRow)],
) -> Result<Vec<(i64, ChannelKind, String)>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut public_ids = Vec::with_capacity(rows.len());
    let mut shipment_ids = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    let mut transitions = Vec::with_capacity(rows.len());
    let mut channels = Vec::with_capacity(rows.len());
    let mut previous = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut recipients = Vec::with_capacity(rows.len());
    let mut states = Vec::with_capacity(rows.len());
    let mut errors = Vec::with_capacity(rows.len());
    let mut next_attempts = Vec::with_capacity(rows.len());
    let mut created = Vec::with_capacity(rows.len());
    for (shipment_id, row) in rows {
        public_ids.push(row.public_id.as_str());
        shipment_ids.push(*shipment_id);
        kinds.push(row.kind.as_str());
        transitions.push(row.transition);
        channels.push(row.channel.as_str());
        previous.push(row.previous.as_str());
        statuses.push(row.status.as_str());
        payloads.push(row.payload.as_str());
        recipients.push(row.recipient.as_deref());
        states.push(if row.skipped.is_some() {
            "skipped"
        } else {
            "pending"
        });
        errors.push(row.skipped);
        next_attempts.push(row.next_attempt_at);
        created.push(row.created_at);
    }
    let inserted: Vec<(i64, String, String, String)> = sqlx::query_as(
        "INSERT INTO notifications (public_id, shipment_id, kind, transition, channel, \
         previous_status, status, payload, recipient, state, last_error, \
         next_attempt_at, created_at) \
         SELECT public_id, shipment_id, kind, transition, channel, previous_status, status, \
             payload, recipient, state, last_error, next_attempt_at, created_at \
         FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], \
             $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], \
             $12::BIGINT[], $13::BIGINT[]) WITH ORDINALITY AS j (public_id, shipment_id, kind, \
             transition, channel, previous_status, status, payload, recipient, state, \
             last_error, next_attempt_at, created_at, ord) \
         ORDER BY ord \
         ON CONFLICT (shipment_id, kind, transition, channel) DO NOTHING \
         RETURNING shipment_id, channel, public_id, state",
    )
    .bind(public_ids)
    .bind(shipment_ids)
    .bind(kinds)
    .bind(transitions)
    .bind(channels)
    .bind(previous)
    .bind(statuses)
    .bind(payloads)
    .bind(recipients)
    .bind(states)
    .bind(errors)
    .bind(next_attempts)
    .bind(created)
    .fetch_all(&mut *conn)
    .await?;
    let mut queued: Vec<(i64, ChannelKind, String)> = inserted
        .into_iter()
        .filter(|(_, _, _, state)| state == "pending")
        .filter_map(|(shipment_id, channel, public_id, _)| {
            Some((shipment_id, channel.parse().ok()?, public_id))
        })
        .collect();
    let order: std::collections::HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, (_, row))| (row.public_id.as_str(), i))
        .collect();
    queued.sort_by_key(|(_, _, public_id)| order.get(public_id.as_str()).copied());
    Ok(queued)
}

/// Marks notifications sent, each with its time, in one statement.
pub(super) async fn mark_sent_in(conn: &mut PgConnection, sent: &[(i64, Millis)]) -> Result<()> {
    if sent.is_empty() {
        return Ok(());
    }
    let (ids, times): (Vec<i64>, Vec<Millis>) = sent.iter().copied().unzip();
    sqlx::query(
        "UPDATE notifications SET state = 'sent', lease_until = NULL, last_error = NULL, \
             sent_at = j.at \
         FROM unnest($1::BIGINT[], $2::BIGINT[]) AS j (id, at) \
         WHERE notifications.id = j.id",
    )
    .bind(ids)
    .bind(times)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Counts an attempt for each notification whose delivery has started, under the claim it was
/// started under; returns the ids counted (as on SQLite: `storage::outbox::mark_started`). The
/// ids counted come back with the answer to the one statement here; SQLite's side reads them
/// back only when fewer were counted, since sqlx hands each row over from its SQLite thread.
pub(super) async fn mark_started_in(
    conn: &mut PgConnection,
    claims: &[(i64, Millis)],
) -> Result<Vec<i64>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, leases): (Vec<i64>, Vec<Millis>) = claims.iter().copied().unzip();
    Ok(sqlx::query_scalar(
        "UPDATE notifications SET attempts = attempts + 1, attempt_started = 1 \
         FROM unnest($1::BIGINT[], $2::BIGINT[]) AS given (id, lease) \
         WHERE notifications.id = given.id AND notifications.lease_until = given.lease \
           AND notifications.state = 'pending' \
         RETURNING notifications.id",
    )
    .bind(ids)
    .bind(leases)
    .fetch_all(&mut *conn)
    .await?)
}

/// The body of [`Pg::claim_notifications`], inside a transaction the caller commits.
///
/// Across daemons: the rows taken are locked and those another daemon is taking are skipped, so
/// no two daemons claim the same notification. A row is taken only when no earlier row of its
/// shipment and channel is pending, in this transaction's view; an earlier row another daemon
/// is claiming right now is still pending in that view, so the line holds. Rows of one shipment
/// are queued under the lock of its row, so a later id is never committed before an earlier
/// one of the same shipment.
pub(super) async fn claim_notifications_in(
    conn: &mut PgConnection,
    now: Millis,
    lease_until: Millis,
    channels: &[ChannelKind],
    max_attempts: u32,
    limit: usize,
) -> Result<Vec<ClaimedNotification>> {
    let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    // As on SQLite (`storage::outbox::claim_notifications`): an attempt cut short is given back
    // and counted; a message cut short too often is given up.
    sqlx::query(
        "UPDATE notifications SET attempts = greatest(attempts - 1, 0), attempt_started = 0, \
             cut_short = cut_short + 1, \
             state = CASE WHEN cut_short + 1 >= $2 THEN 'dead' ELSE state END, \
             lease_until = CASE WHEN cut_short + 1 >= $2 THEN NULL ELSE lease_until END, \
             last_error = CASE WHEN cut_short + 1 >= $2 THEN \
                 'cut short ' || (cut_short + 1) || ' times with no outcome (its daemon died or ' || \
                 'stalled while it was under way)' || \
                 coalesce(' (before that: ' || last_error || ')', '') ELSE last_error END \
         WHERE id IN (SELECT id FROM notifications \
             WHERE state = 'pending' AND lease_until IS NOT NULL AND lease_until <= $1 \
               AND attempt_started = 1 \
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(now)
    .bind(i64::from(MOST_ATTEMPTS_CUT_SHORT))
    .execute(&mut *conn)
    .await?;
    // Claims made before `attempt_started` existed counted their attempt at the claim.
    sqlx::query(
        "UPDATE notifications SET state = 'dead', lease_until = NULL, \
         last_error = 'no answer within the lease on the last attempt' || \
             coalesce(' (before that: ' || last_error || ')', '') \
         WHERE id IN (SELECT id FROM notifications \
             WHERE state = 'pending' AND lease_until IS NOT NULL AND lease_until <= $1 \
               AND attempts >= $2 \
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(now)
    .bind(i64::from(max_attempts))
    .execute(&mut *conn)
    .await?;
    let mut rows = sqlx::query_as::<_, ClaimedNotification>(
        // The pick is a CTE, run once: as `id IN (subquery)` the planner may run the locking
        // subquery again for each row it updates, and a row this statement already updated is
        // then skipped, so the claim comes back short.
        "WITH picked AS MATERIALIZED (SELECT n.id AS picked_id FROM notifications AS n \
             WHERE n.state = 'pending' AND n.next_attempt_at <= $2 \
               AND (n.lease_until IS NULL OR n.lease_until <= $2) \
               AND n.channel = ANY($3) \
               AND NOT EXISTS (SELECT 1 FROM notifications AS earlier \
                   WHERE earlier.shipment_id = n.shipment_id AND earlier.channel = n.channel \
                     AND earlier.state = 'pending' AND earlier.id < n.id) \
             ORDER BY n.next_attempt_at, n.id LIMIT $4 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE notifications SET lease_until = $1, attempt_started = 0 \
         FROM picked WHERE id = picked_id \
         RETURNING id, public_id, channel, status, payload, recipient, attempts + 1 AS attempts, \
             lease_until, (SELECT order_id FROM shipments WHERE shipments.id = shipment_id) AS order_id",
    )
    .bind(lease_until)
    .bind(now)
    .bind(channels)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    // RETURNING keeps no order; SQLite's answer comes by id.
    rows.sort_by_key(|row| row.id);
    Ok(rows)
}
