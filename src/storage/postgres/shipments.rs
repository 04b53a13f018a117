//! PostgreSQL: the operations of `storage/shipments.rs`.
//!
//! Several daemons share the table: a claim takes due rows with `FOR UPDATE SKIP LOCKED` and
//! leases them in `claimed_until`, so that two daemons never poll one shipment; a read that
//! decides a write (`recheck_order`, `recheck_invalid`) locks its rows with `FOR UPDATE`.

use sqlx::postgres::PgArguments;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Transaction};

use super::*;
use crate::storage::rules::broken_rule;

/// The columns an added shipment sets; the rest take their defaults.
const INSERT_COLUMNS: &str = "order_id, provider, tracking_no, carrier, tier, phone, email, \
     openid, sub_orders, next_poll_at, created_at";

/// The error of a write PostgreSQL refused, as SQLite's reads: a taken order id is
/// [`StorageError::Duplicate`]; a broken rule is [`StorageError::Rejected`] with the text SQLite
/// gives for it (`CHECK constraint failed: LINE` for a CHECK, the bare line for a value of the
/// wrong type, which SQLite's typed triggers refuse).
pub(super) fn refused(e: sqlx::Error, order_id: &str) -> StorageError {
    match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            StorageError::Duplicate(order_id.to_owned())
        }
        sqlx::Error::Database(db) => match sqlite_text(db.message(), db.constraint()) {
            Some(text) => StorageError::Rejected(text),
            None => StorageError::Sql(sqlx::Error::Database(db)),
        },
        e => e.into(),
    }
}

/// What SQLite says for the rule PostgreSQL's error names, if it names one.
fn sqlite_text(message: &str, constraint: Option<&str>) -> Option<String> {
    let line = broken_rule(message, constraint)?;
    Some(if constraint.is_some() {
        format!("CHECK constraint failed: {line}")
    } else {
        line
    })
}

/// One row read whole, or refused with the reason it cannot be read.
pub(super) fn decode_pg_shipment(row: PgRow) -> Result<ShipmentRow> {
    let (mut rows, unreadable) = decode_shipments(vec![row]);
    match unreadable.into_iter().next() {
        Some((_, reason)) => Err(StorageError::Rejected(reason)),
        None if rows.is_empty() => Err(StorageError::Rejected("no row".to_owned())),
        None => Ok(rows.remove(0)),
    }
}

fn paused_list(paused: &[String]) -> Vec<String> {
    paused.to_vec()
}

impl Pg {
    /// One shipment's `INSERT`, due at once, with `on_conflict` before its `RETURNING` of the row
    /// (PostgreSQL's side of SQLite's `insert_shipment`).
    pub(in crate::storage) fn insert_shipment<'q>(
        new: &'q NewShipment,
        now: Millis,
        on_conflict: &str,
    ) -> sqlx::query::Query<'q, Postgres, PgArguments> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO shipments ({INSERT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             {on_conflict} RETURNING {PG_SHIPMENT_COLUMNS}"
        )))
        .bind(&new.order_id)
        .bind(&new.provider)
        .bind(&new.tracking_no)
        .bind(&new.carrier)
        .bind(new.tier.as_str())
        .bind(new.phone.as_ref().map(Phone::as_str))
        .bind(new.email.as_ref().map(Email::as_str))
        .bind(new.openid.as_ref().map(OpenId::as_str))
        .bind(&new.sub_orders)
        .bind(now)
    }

    pub async fn add_shipment(&self, new: &NewShipment, now: Millis) -> Result<ShipmentRow> {
        let row = Pg::insert_shipment(new, now, "")
            .fetch_one(self.pool())
            .await
            .map_err(|e| refused(e, &new.order_id))?;
        decode_pg_shipment(row)
    }

    pub async fn import_shipments(
        &self,
        rows: &[NewShipment],
        now: Millis,
    ) -> Result<usize, (usize, StorageError)> {
        let mut import = self.begin_import(now).await.map_err(|e| (0, e))?;
        import.add(rows).await?;
        import.commit().await.map_err(|e| (rows.len(), e))
    }

    pub async fn begin_import(&self, now: Millis) -> Result<Import> {
        Ok(Import::postgres(self.begin().await?, now))
    }

    /// Adds one batch of an import inside its transaction: one `INSERT` for the whole batch; when
    /// PostgreSQL refuses it, the batch is undone to its savepoint and the rows are added one by
    /// one, so that the error names the first row at fault, as SQLite's does. Returns how many
    /// rows were added.
    pub(in crate::storage) async fn import_rows(
        tx: &mut Transaction<'static, Postgres>,
        rows: &[NewShipment],
        now: Millis,
    ) -> Result<usize, (usize, StorageError)> {
        if rows.is_empty() {
            return Ok(0);
        }
        let column = |get: fn(&NewShipment) -> Option<String>| -> Vec<Option<String>> {
            rows.iter().map(get).collect()
        };
        sqlx::query("SAVEPOINT import_batch")
            .execute(&mut **tx)
            .await
            .map_err(|e| (0, e.into()))?;
        let bulk = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO shipments ({INSERT_COLUMNS}) \
             SELECT o, p, t, c, ti, ph, em, op, so, $10, $10 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::text[], $7::text[], $8::text[], $9::text[]) \
                  WITH ORDINALITY AS u(o, p, t, c, ti, ph, em, op, so, n) \
             ORDER BY n"
        )))
        .bind(column(|new| Some(new.order_id.clone())))
        .bind(column(|new| Some(new.provider.clone())))
        .bind(column(|new| new.tracking_no.clone()))
        .bind(column(|new| new.carrier.clone()))
        .bind(column(|new| Some(new.tier.as_str().to_owned())))
        .bind(column(|new| {
            new.phone.as_ref().map(|p| p.as_str().to_owned())
        }))
        .bind(column(|new| {
            new.email.as_ref().map(|e| e.as_str().to_owned())
        }))
        .bind(column(|new| {
            new.openid.as_ref().map(|o| o.as_str().to_owned())
        }))
        .bind(column(|new| new.sub_orders.clone()))
        .bind(now)
        .execute(&mut **tx)
        .await;
        match bulk {
            Ok(done) => {
                sqlx::query("RELEASE SAVEPOINT import_batch")
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| (rows.len(), e.into()))?;
                Ok(done.rows_affected() as usize)
            }
            Err(sqlx::Error::Database(_)) => {
                sqlx::query("ROLLBACK TO SAVEPOINT import_batch")
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| (0, e.into()))?;
                for (i, new) in rows.iter().enumerate() {
                    Pg::insert_shipment(new, now, "")
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| (i, refused(e, &new.order_id)))?;
                }
                Ok(rows.len())
            }
            Err(e) => Err((0, e.into())),
        }
    }

    pub async fn shipment(&self, order_id: &str) -> Result<ShipmentRow> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PG_SHIPMENT_COLUMNS} FROM shipments WHERE order_id = $1"
        )))
        .bind(order_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StorageError::NoSuchOrder(order_id.to_owned()))?;
        decode_pg_shipment(row)
    }

    pub async fn remove_shipment(&self, order_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM shipments WHERE order_id = $1")
            .bind(order_id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NoSuchOrder(order_id.to_owned()));
        }
        Ok(())
    }

    pub async fn set_tier(&self, order_id: &str, tier: Tier, next_poll_at: Millis) -> Result<()> {
        let done = sqlx::query(
            "UPDATE shipments SET tier = $1, next_poll_at = LEAST(next_poll_at, $2) \
             WHERE order_id = $3",
        )
        .bind(tier.as_str())
        .bind(next_poll_at)
        .bind(order_id)
        .execute(self.pool())
        .await
        .map_err(|e| refused(e, order_id))?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NoSuchOrder(order_id.to_owned()));
        }
        Ok(())
    }

    pub async fn claim_due_shipments(
        &self,
        now: Millis,
        claimed_until: Millis,
        paused: &[String],
        limit: usize,
    ) -> Result<Vec<ShipmentRow>> {
        // The claim is one statement, atomic by itself: no transaction around it, which would
        // cost two more round trips. A row it cannot read is marked invalid by the next
        // statement; should that fail, the row is claimed again and marked at its next claim.
        let mut conn = self.pool().acquire().await?;
        Pg::claim_due_in(&mut conn, now, claimed_until, paused, limit).await
    }

    /// The body of [`Pg::claim_due_shipments`], inside a transaction the caller commits (the
    /// writer's, for one). One statement: the due rows no other daemon holds, oldest
    /// `next_poll_at` first by the `shipments_due` index, locked (`SKIP LOCKED` passes over the
    /// rows another daemon is claiming) and leased until `claimed_until`.
    pub(in crate::storage) async fn claim_due_in(
        conn: &mut PgConnection,
        now: Millis,
        claimed_until: Millis,
        paused: &[String],
        limit: usize,
    ) -> Result<Vec<ShipmentRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            // The pick is a CTE, run once: as `id IN (subquery)` the planner may run the
            // locking subquery again for each row it updates (a nested loop on a big table),
            // and a row this statement already updated is then skipped: the claim came back
            // with 16 of 64 due rows on a million shipments.
            "WITH picked AS MATERIALIZED ( \
                 SELECT id AS picked_id FROM shipments \
                 WHERE active = 1 AND next_poll_at <= $2 \
                   AND (claimed_until IS NULL OR claimed_until <= $2) \
                   AND provider <> ALL($3::text[]) \
                 ORDER BY next_poll_at, id LIMIT $4 \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE shipments SET claimed_until = $1 FROM picked WHERE id = picked_id \
             RETURNING {PG_SHIPMENT_COLUMNS}"
        )))
        .bind(claimed_until)
        .bind(now)
        .bind(paused_list(paused))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await?;
        let (mut rows, unreadable) = decode_shipments(rows);
        for (id, reason) in unreadable {
            tracing::warn!(shipment_id = id, %reason, "shipment invalid");
            Pg::mark_invalid_in(conn, id, InvalidKind::Row, &reason, now).await?;
        }
        // RETURNING keeps no order; the backlog drains oldest first, as SQLite's claims come.
        rows.sort_by_key(|row| (row.next_poll_at, row.id));
        Ok(rows)
    }

    /// On PostgreSQL other daemons may be polling what they claimed, so a daemon that starts
    /// frees no live claim: the claims and leases of a daemon that died run out by themselves
    /// (within one lease) and are taken then. Only the claims already run out are cleared.
    pub async fn release_all_claims(&self, now: Millis) -> Result<()> {
        sqlx::query("UPDATE shipments SET claimed_until = NULL WHERE claimed_until <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn next_due_at(&self, paused: &[String], now: Millis) -> Result<Option<Millis>> {
        Ok(sqlx::query_scalar::<_, Option<Millis>>(
            "SELECT min(next_poll_at) FROM shipments WHERE active = 1 \
             AND (claimed_until IS NULL OR claimed_until <= $1) \
             AND provider <> ALL($2::text[])",
        )
        .bind(now)
        .bind(paused_list(paused))
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn release_shipment(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE shipments SET claimed_until = NULL WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn renew_shipment_claim(&self, id: i64, held: Millis, until: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE shipments SET claimed_until = $3 WHERE id = $1 AND claimed_until = $2",
        )
        .bind(id)
        .bind(held)
        .bind(until)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn mark_invalid(
        &self,
        id: i64,
        kind: InvalidKind,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        let mut conn = self.pool().acquire().await?;
        Pg::mark_invalid_in(&mut conn, id, kind, reason, now).await
    }

    /// The body of [`Pg::mark_invalid`], on the caller's connection or transaction.
    pub(in crate::storage) async fn mark_invalid_in(
        conn: &mut PgConnection,
        id: i64,
        kind: InvalidKind,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE shipments SET active = 0, error = $1, invalid_kind = $2, last_polled_at = $3, \
             claimed_until = NULL WHERE id = $4",
        )
        .bind(reason)
        .bind(kind.as_str())
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    pub async fn create_shipments(
        &self,
        rows: &[NewShipment],
        now: Millis,
        differs: Differs<'_>,
    ) -> Result<Vec<Created>, CreateError> {
        let mut tx = self.begin().await?;
        let mut done = Vec::with_capacity(rows.len());
        for (index, new) in rows.iter().enumerate() {
            let inserted = Pg::insert_shipment(new, now, "ON CONFLICT (order_id) DO NOTHING")
                .fetch_optional(&mut *tx)
                .await;
            let row = match inserted {
                Ok(row) => row,
                Err(e) => {
                    return Err(match refused(e, &new.order_id) {
                        source @ StorageError::Rejected(_) => CreateError::Row { index, source },
                        other => other.into(),
                    });
                }
            };
            let (fresh, row) = match row {
                Some(row) => (true, row),
                None => {
                    // Taken before, by this request or another: read it as it is, locked so that
                    // it stays so until the answer is committed.
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {PG_SHIPMENT_COLUMNS} FROM shipments WHERE order_id = $1 \
                         FOR UPDATE"
                    )))
                    .bind(&new.order_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StorageError::from)?;
                    (false, row)
                }
            };
            let row =
                decode_pg_shipment(row).map_err(|source| CreateError::Row { index, source })?;
            if fresh {
                done.push(Created::New(row));
                continue;
            }
            let fields = differs(index, new, &row);
            if !fields.is_empty() {
                return Err(CreateError::Conflict {
                    index,
                    order_id: new.order_id.clone(),
                    fields,
                });
            }
            done.push(Created::Existing(row));
        }
        tx.commit().await.map_err(StorageError::from)?;
        Ok(done)
    }

    pub async fn update_shipment(
        &self,
        order_id: &str,
        update: &ShipmentUpdate,
    ) -> Result<ShipmentRow> {
        let (tier, next_poll_at) = match update.tier {
            Some((tier, at)) => (Some(tier.as_str()), Some(at)),
            None => (None, None),
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE shipments SET tier = coalesce($1::text, tier), \
               next_poll_at = CASE WHEN $2::bigint IS NULL THEN next_poll_at \
                              ELSE LEAST(next_poll_at, $2::bigint) END, \
               phone = CASE WHEN $3::boolean THEN $4::text ELSE phone END, \
               email = CASE WHEN $5::boolean THEN $6::text ELSE email END, \
               openid = CASE WHEN $7::boolean THEN $8::text ELSE openid END \
             WHERE order_id = $9 RETURNING {PG_SHIPMENT_COLUMNS}"
        )))
        .bind(tier)
        .bind(next_poll_at)
        .bind(update.phone.is_some())
        .bind(
            update
                .phone
                .clone()
                .flatten()
                .map(|p| p.as_str().to_owned()),
        )
        .bind(update.email.is_some())
        .bind(
            update
                .email
                .clone()
                .flatten()
                .map(|e| e.as_str().to_owned()),
        )
        .bind(update.openid.is_some())
        .bind(
            update
                .openid
                .clone()
                .flatten()
                .map(|o| o.as_str().to_owned()),
        )
        .bind(order_id)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| refused(e, order_id))?
        .ok_or_else(|| StorageError::NoSuchOrder(order_id.to_owned()))?;
        decode_pg_shipment(row)
    }
}
