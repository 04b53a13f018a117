//! PostgreSQL: the claim of due shipments inside a transaction, shared by
//! [`Pg::claim_due_shipments`] and the writer's round.

use sqlx::{AssertSqlSafe, PgConnection};

use super::*;

/// SQLite's `claim_due_shipments` on PostgreSQL: claims up to `limit` due active shipments of
/// providers not in `paused` until `claimed_until`, soonest due first. The rows taken are locked
/// and those another daemon is taking are skipped (`FOR UPDATE SKIP LOCKED`), so daemons poll
/// disjoint shipments; a dead daemon's claims run out at `claimed_until` and the rows are due
/// again.
pub(super) async fn claim_due_shipments_in(
    conn: &mut PgConnection,
    now: Millis,
    claimed_until: Millis,
    paused: &[String],
    limit: usize,
) -> Result<Vec<ShipmentRow>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "UPDATE shipments SET claimed_until = $1 WHERE id IN ( \
             SELECT id FROM shipments \
             WHERE active = 1 AND next_poll_at <= $2 \
               AND (claimed_until IS NULL OR claimed_until <= $2) \
               AND provider <> ALL($3) \
             ORDER BY next_poll_at, id LIMIT $4 \
             FOR UPDATE SKIP LOCKED) \
         RETURNING {PG_SHIPMENT_COLUMNS}"
    )))
    .bind(claimed_until)
    .bind(now)
    .bind(paused)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let (mut rows, unreadable) = decode_pg_shipments(rows);
    for (id, reason) in unreadable {
        tracing::warn!(shipment_id = id, %reason, "shipment invalid");
        sqlx::query(
            "UPDATE shipments SET active = 0, error = $1, invalid_kind = $2, \
             last_polled_at = $3, claimed_until = NULL WHERE id = $4",
        )
        .bind(&reason)
        .bind(InvalidKind::Row.as_str())
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    // RETURNING keeps no order; the backlog drains oldest first.
    rows.sort_by_key(|row| (row.next_poll_at, row.id));
    Ok(rows)
}
