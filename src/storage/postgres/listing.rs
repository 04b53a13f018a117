//! PostgreSQL: the listing of `storage/listing.rs`, read the same way: along the primary key
//! from the page's cursor, or from the index that holds the few shipments of the status, tier,
//! provider or change time asked for.

use sqlx::AssertSqlSafe;

use super::*;
use crate::storage::listing::{FEW, PageReading, page_reading, status_index_terms};

impl Pg {
    pub async fn shipments_page(&self, filter: &ShipmentFilter) -> Result<ShipmentPage> {
        let terms = status_index_terms(filter, ["$1", "$2", "$3"]);
        let of_status = match &terms {
            Some(terms) => Some(
                sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT count(*) FROM (SELECT 1 FROM shipments WHERE {terms} LIMIT $4) \
                     AS of_status"
                )))
                .bind(filter.status.map(Status::as_str))
                .bind(filter.tier.map(Tier::as_str))
                .bind(filter.provider.as_deref())
                .bind(FEW)
                .fetch_one(self.pool())
                .await?,
            ),
            None => None,
        };
        let changed = match filter.changed_since {
            // Ordered by the index's expression, so that the count reads the index: PostgreSQL
            // guessed the changed shipments spread along the table and read it from its start
            // until it had counted enough (97 ms at a million, where they were at its end).
            Some(since) => Some(
                sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT 1 FROM shipments \
                     WHERE coalesce(status_changed_at, created_at) >= $1 \
                     ORDER BY coalesce(status_changed_at, created_at) LIMIT $2) AS changed",
                )
                .bind(since)
                .bind(FEW)
                .fetch_one(self.pool())
                .await?,
            ),
            None => None,
        };
        // `id + 0`, as SQLite's `+id`: ordered by the key itself, PostgreSQL walks the primary
        // key from the cursor and reads most of the table to find a few changed shipments
        // (0.14 s a page at a million, with the index and fresh statistics); by `id + 0` it
        // takes the few from their index and sorts them. The filter that index holds is bare
        // then, which a generic plan can search the index by too.
        const STATUS: &str = "($1::text IS NULL OR status = $1) \
                              AND ($2::text IS NULL OR tier = $2) \
                              AND ($3::text IS NULL OR provider = $3)";
        const CHANGED: &str =
            "($4::bigint IS NULL OR coalesce(status_changed_at, created_at) >= $4)";
        let (status, changed, order) = match page_reading(of_status, changed) {
            PageReading::FromCursor => (STATUS, CHANGED, "id"),
            PageReading::FewOfStatus => (terms.as_deref().unwrap_or(STATUS), CHANGED, "id + 0"),
            PageReading::FewChanged => (
                STATUS,
                "coalesce(status_changed_at, created_at) >= $4",
                "id + 0",
            ),
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PG_SHIPMENT_COLUMNS} FROM shipments \
             WHERE {status} AND {changed} AND id > $6 \
             ORDER BY {order} LIMIT $5"
        )))
        .bind(filter.status.map(Status::as_str))
        .bind(filter.tier.map(Tier::as_str))
        .bind(filter.provider.as_deref())
        .bind(filter.changed_since)
        // LIMIT NULL is no limit.
        .bind(filter.limit.map(i64::from))
        // A bare `id > $6`, as on SQLite: the page starts at the cursor in the primary key.
        .bind(filter.after.unwrap_or(i64::MIN))
        .fetch_all(self.pool())
        .await?;
        Ok(ShipmentPage::from_rows(rows))
    }
}
