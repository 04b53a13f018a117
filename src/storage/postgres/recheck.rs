//! Rechecking the shipments flagged invalid, on PostgreSQL (`storage/recheck.rs` on SQLite).

use sqlx::{AssertSqlSafe, PgConnection};

use super::shipments::decode_pg_shipment;
use super::*;
use crate::storage::recheck::{decide_each, to_write};

impl Pg {
    pub async fn recheck_order(
        &self,
        order_id: &str,
        now: Millis,
        decide: impl FnOnce(&ShipmentRow) -> RecheckWrite,
    ) -> Result<(ShipmentRow, RecheckWrite)> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PG_SHIPMENT_COLUMNS} FROM shipments WHERE order_id = $1 FOR UPDATE"
        )))
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StorageError::NoSuchOrder(order_id.to_owned()))?;
        let row = decode_pg_shipment(row)?;
        let write = decide(&row);
        write_rechecks(&mut tx, [(row.id, &write)], now).await?;
        tx.commit().await?;
        Ok((row, write))
    }

    pub async fn recheck_invalid(
        &self,
        which: Invalid<'_>,
        after: i64,
        limit: i64,
        now: Millis,
        decide: impl FnMut(&ShipmentRow) -> RecheckWrite,
    ) -> Result<RecheckBatch> {
        let providers: Option<Vec<String>> = match which {
            Invalid::All => None,
            Invalid::UnknownProviderIn(names) => Some(names.to_vec()),
        };
        let mut tx = self.begin().await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PG_SHIPMENT_COLUMNS} FROM shipments \
             WHERE active = 0 AND error IS NOT NULL \
               AND status NOT IN ('delivered', 'returned', 'expired') AND id > $1 \
               AND ($2::text[] IS NULL OR (invalid_kind = 'unknown_provider' \
                    AND provider = ANY($2::text[]))) \
             ORDER BY id LIMIT $3 FOR UPDATE"
        )))
        .bind(after)
        .bind(providers)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let read = rows.len();
        let (rows, unreadable) = decode_shipments(rows);
        let rechecked = decide_each(rows, decide);
        let writes = rechecked.iter().map(|(row, write)| (row.id, write));
        write_rechecks(&mut tx, writes, now).await?;
        tx.commit().await?;
        Ok(RecheckBatch {
            read,
            rechecked,
            unreadable,
        })
    }
}

/// What rechecks decided, written in two statements whatever their number: the revived rows
/// due at `now`, the others' new reasons.
async fn write_rechecks<'a>(
    conn: &mut PgConnection,
    writes: impl IntoIterator<Item = (i64, &'a RecheckWrite)>,
    now: Millis,
) -> Result<()> {
    let (revive, still_invalid) = to_write(writes);
    let still: Vec<i64> = still_invalid.iter().map(|(id, ..)| *id).collect();
    let reasons: Vec<&str> = still_invalid.iter().map(|(_, reason, _)| *reason).collect();
    let kinds: Vec<&str> = still_invalid.iter().map(|(.., kind)| *kind).collect();
    if !revive.is_empty() {
        sqlx::query(
            "UPDATE shipments SET active = 1, error = NULL, invalid_kind = NULL, \
             next_poll_at = $1, claimed_until = NULL WHERE id = ANY($2::bigint[])",
        )
        .bind(now)
        .bind(revive)
        .execute(&mut *conn)
        .await?;
    }
    if !still.is_empty() {
        sqlx::query(
            "UPDATE shipments SET error = u.reason, invalid_kind = u.kind \
             FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, reason, kind) \
             WHERE shipments.id = u.id",
        )
        .bind(still)
        .bind(reasons)
        .bind(kinds)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
