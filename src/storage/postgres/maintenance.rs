//! PostgreSQL: the operations of `storage/maintenance.rs`.
//!
//! A sweep or a stuck alert locks the shipments it takes (`FOR UPDATE SKIP LOCKED`): a row a
//! daemon is recording a poll for, or another sweep is moving, is left for the next run, as
//! SQLite leaves a shipment whose poll is in flight.

use sqlx::{AssertSqlSafe, FromRow, PgConnection, Row};

use super::outbox::insert_outbox_rows;
use super::*;

/// The shipments a sweep picks: `$1` is the cutoff (SQLite's `QUIET_FOR_GOOD` and `NEVER_SEEN`).
const QUIET_FOR_GOOD: &str = "active = 1 AND status NOT IN ('returned', 'delivered', 'expired') \
     AND coalesce(last_event_at, created_at) < $1";
const NEVER_SEEN: &str =
    "active = 1 AND status = 'pending' AND transitions = 0 AND created_at < $1";

impl Pg {
    pub async fn sweep_shipments(
        &self,
        which: Sweep,
        cutoff: Millis,
        now: Millis,
        limit: i64,
        write: SweepWrite<'_>,
        mut announce: impl FnMut(&ShipmentRow, i64) -> Vec<OutboxRow>,
    ) -> Result<Vec<ShipmentRow>> {
        let select = match which {
            Sweep::Quiet => QUIET_FOR_GOOD,
            Sweep::NeverSeen => NEVER_SEEN,
        };
        let mut tx = self.begin().await?;
        let rows = sqlx::query_as::<_, ShipmentRow>(AssertSqlSafe(format!(
            "SELECT {PG_SHIPMENT_COLUMNS} FROM shipments WHERE {select} \
                 AND (claimed_until IS NULL OR claimed_until <= $2) ORDER BY id LIMIT $3 \
             FOR UPDATE SKIP LOCKED"
        )))
        .bind(cutoff)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(rows);
        }
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let transitions: Vec<i64> = rows.iter().map(|row| row.transitions + 1).collect();
        // `error` says why for a shipment still polled; an expired one keeps its last raw
        // status.
        sqlx::query(
            "UPDATE shipments SET status = $1, transitions = j.transition, \
                 status_changed_at = $2, \
                 active = CASE WHEN $3 THEN 0 ELSE active END, \
                 raw_status = CASE WHEN $3 THEN raw_status ELSE $4 END, \
                 error = CASE WHEN $3 THEN error ELSE $4 END, \
                 claimed_until = NULL \
             FROM unnest($5::BIGINT[], $6::BIGINT[]) AS j (id, transition) \
             WHERE shipments.id = j.id",
        )
        .bind(write.status.as_str())
        .bind(now)
        .bind(write.stop_polling)
        .bind(write.raw_status)
        .bind(&ids)
        .bind(&transitions)
        .execute(&mut *tx)
        .await?;
        let outbox: Vec<(i64, Vec<OutboxRow>)> = rows
            .iter()
            .zip(&transitions)
            .map(|(row, transition)| (row.id, announce(row, *transition)))
            .collect();
        insert_all(&mut tx, &outbox).await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn unreachable_polls(
        &self,
        cutoff: Millis,
        limit: i64,
    ) -> Result<Vec<UnreachablePoll>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, order_id, next_poll_at FROM shipments \
             WHERE active = 1 AND next_poll_at > $1 ORDER BY next_poll_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.pool())
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

    pub async fn stop_unreachable_poll(
        &self,
        id: i64,
        reason: &str,
        now: Millis,
        cutoff: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE shipments SET active = 0, error = $1, invalid_kind = 'schedule', \
             last_polled_at = $2 WHERE id = $3 AND active = 1 AND next_poll_at > $4",
        )
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(cutoff)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn alert_stuck_shipments(
        &self,
        moving: &[Status],
        quiet_before: Millis,
        limit: i64,
        mut alert: impl FnMut(&ShipmentRow, i64, Millis) -> Vec<OutboxRow>,
    ) -> Result<Vec<String>> {
        let moving: Vec<&str> = moving.iter().map(|s| s.as_str()).collect();
        let mut tx = self.begin().await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PG_SHIPMENT_COLUMNS}, \
                 coalesce(last_event_at, status_changed_at, created_at) AS quiet_since, stalls \
             FROM shipments \
             WHERE active = 1 AND status = ANY($1) \
               AND coalesce(last_event_at, status_changed_at, created_at) < $2 \
               AND (stuck_alerted_for IS NULL \
                    OR stuck_alerted_for <> coalesce(last_event_at, status_changed_at, created_at)) \
             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED"
        )))
        .bind(moving)
        .bind(quiet_before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut stuck = Vec::with_capacity(rows.len());
        for row in &rows {
            let shipment = ShipmentRow::from_row(row)?;
            let quiet_since: Millis = row.try_get("quiet_since")?;
            let stalls: i64 = row.try_get("stalls")?;
            stuck.push((shipment, quiet_since, stalls + 1));
        }
        if stuck.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = stuck.iter().map(|(s, _, _)| s.id).collect();
        let quiet: Vec<Millis> = stuck.iter().map(|(_, q, _)| *q).collect();
        let stalls: Vec<i64> = stuck.iter().map(|(_, _, n)| *n).collect();
        sqlx::query(
            "UPDATE shipments SET stalls = j.stall, stuck_alerted_for = j.quiet_since \
             FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) AS j (id, stall, quiet_since) \
             WHERE shipments.id = j.id",
        )
        .bind(&ids)
        .bind(&stalls)
        .bind(&quiet)
        .execute(&mut *tx)
        .await?;
        let outbox: Vec<(i64, Vec<OutboxRow>)> = stuck
            .iter()
            .map(|(shipment, quiet_since, stall)| {
                (shipment.id, alert(shipment, *stall, *quiet_since))
            })
            .collect();
        insert_all(&mut tx, &outbox).await?;
        tx.commit().await?;
        Ok(stuck
            .into_iter()
            .map(|(shipment, _, _)| shipment.order_id)
            .collect())
    }

    /// As on SQLite: the notifications by ranges of the done index, then the events of the
    /// shipments left to prune, a slice a transaction, found on the index of such shipments.
    pub async fn prune(&self, cutoff: Millis) -> Result<Pruned> {
        let notifications = sqlx::query(AssertSqlSafe(
            crate::storage::maintenance::prune_notifications_sql("$1"),
        ))
        .bind(cutoff)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let slice = crate::storage::maintenance::PRUNE_SLICE;
        let mut events = 0;
        let clear = format!(
            "UPDATE shipments SET events_digest = NULL \
             WHERE id IN (SELECT id FROM shipments {}) RETURNING id",
            crate::storage::maintenance::left_to_prune_sql("$1", "$2")
        );
        loop {
            let mut tx = self.begin().await?;
            let cleared: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(clear.as_str()))
                .bind(cutoff)
                .bind(slice)
                .fetch_all(&mut *tx)
                .await?;
            if !cleared.is_empty() {
                events += sqlx::query("DELETE FROM events WHERE shipment_id = ANY($1)")
                    .bind(&cleared)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            if (cleared.len() as i64) < slice {
                break;
            }
        }
        Ok(Pruned {
            notifications,
            events,
        })
    }

    /// PostgreSQL has no write-ahead log file of ours to fold back: the server checkpoints its
    /// own WAL on its own schedule (`checkpoint_timeout`, `max_wal_size`), and `CHECKPOINT`
    /// needs a superuser. So nothing is done, and the answer is SQLite's for an empty log: not
    /// busy, no frames.
    pub async fn checkpoint(&self) -> Result<Checkpointed> {
        Ok(Checkpointed {
            busy: false,
            wal_frames: 0,
            checkpointed_frames: 0,
        })
    }
}

/// Queues the outbox rows of several shipments, in the order given, in one statement.
async fn insert_all(conn: &mut PgConnection, outbox: &[(i64, Vec<OutboxRow>)]) -> Result<()> {
    let rows: Vec<(i64, &OutboxRow)> = outbox
        .iter()
        .flat_map(|(id, rows)| rows.iter().map(move |row| (*id, row)))
        .collect();
    insert_outbox_rows(conn, &rows).await?;
    Ok(())
}
