//! Shipments as the admin commands and the dispatcher see them: adding one or a whole file,
//! removing, moving to another tier, claiming the due ones for a poll (and renewing a claim),
//! flagging the ones that can never be polled. Listing them is in `listing.rs`, rechecking the
//! flagged ones in `recheck.rs`.

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Postgres, Sqlite, SqliteConnection, Transaction};
use tracing::instrument;

use super::postgres::Pg;
use super::recheck::InvalidKind;
use super::{Db, Result, SHIPMENT_COLUMNS, ShipmentRow, StorageError, decode_shipments};
use crate::clock::{Millis, to_rfc3339};
use crate::domain::{Email, OpenId, Phone, Status, Tier, mask_contact};

/// A shipment to add.
#[derive(Debug, Clone)]
pub struct NewShipment {
    pub order_id: String,
    pub provider: String,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    pub tier: Tier,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    /// The buyer's OpenID in the shop's WeChat official account.
    pub openid: Option<OpenId>,
    /// Sub-order ids separated by commas, for a split order.
    pub sub_orders: Option<String>,
}

#[cfg(test)]
impl NewShipment {
    /// `order_id` for `provider` on the normal tier, with no tracking number, carrier, contact
    /// or sub-orders: what the library's tests start from, naming only what their case needs.
    pub(crate) fn plain(order_id: &str, provider: &str) -> NewShipment {
        NewShipment {
            order_id: order_id.to_owned(),
            provider: provider.to_owned(),
            tracking_no: None,
            carrier: None,
            tier: Tier::Normal,
            phone: None,
            email: None,
            openid: None,
            sub_orders: None,
        }
    }
}

/// The stable JSON shape of a shipment for `list --json` and `show --json`.
#[derive(Debug, Serialize)]
pub struct ShipmentView {
    pub order_id: String,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    pub provider: String,
    pub tier: Tier,
    pub status: Status,
    pub raw_status: Option<String>,
    pub active: bool,
    pub error: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Masked like the phone and the email; only present when the shipment has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    pub next_poll_at: Option<String>,
    pub last_polled_at: Option<String>,
    pub last_event_at: Option<String>,
    pub status_changed_at: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_orders: Option<String>,
}

impl From<&ShipmentRow> for ShipmentView {
    fn from(row: &ShipmentRow) -> Self {
        ShipmentView {
            order_id: row.order_id.clone(),
            tracking_no: row.tracking_no.clone(),
            carrier: row.carrier.clone(),
            provider: row.provider.clone(),
            tier: row.tier,
            status: row.status,
            raw_status: row.raw_status.clone(),
            active: row.active && row.type_error.is_none(),
            error: row.type_error.clone().or_else(|| row.error.clone()),
            phone: row.phone.as_ref().map(|phone| mask_contact(phone.as_str())),
            email: row.email.as_ref().map(|email| mask_contact(email.as_str())),
            openid: row
                .openid
                .as_ref()
                .map(|openid| mask_contact(openid.as_str())),
            next_poll_at: row.active.then(|| to_rfc3339(row.next_poll_at)),
            last_polled_at: row.last_polled_at.map(to_rfc3339),
            last_event_at: row.last_event_at.map(to_rfc3339),
            status_changed_at: row.status_changed_at.map(to_rfc3339),
            created_at: to_rfc3339(row.created_at),
            sub_orders: row.sub_orders.clone(),
        }
    }
}

/// One row read whole, or refused with the reason it cannot be read.
pub(super) fn decode_shipment(row: sqlx::sqlite::SqliteRow) -> Result<ShipmentRow> {
    let (mut rows, unreadable) = decode_shipments(vec![row]);
    match unreadable.into_iter().next() {
        Some((_, reason)) => Err(StorageError::Rejected(reason)),
        None => Ok(rows.remove(0)),
    }
}

/// One shipment's `INSERT`, due at once, with `on_conflict` before its `RETURNING` of the row.
fn insert_shipment<'q>(
    new: &'q NewShipment,
    now: Millis,
    on_conflict: &str,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO shipments (order_id, provider, tracking_no, carrier, tier, phone, email, \
         openid, sub_orders, next_poll_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         {on_conflict} RETURNING {SHIPMENT_COLUMNS}"
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
    .bind(now)
}

impl Db {
    // ---- shipments: admin ---------------------------------------------------------------------

    #[instrument(skip_all, fields(order_id = %new.order_id))]
    pub async fn add_shipment(&self, new: &NewShipment, now: Millis) -> Result<ShipmentRow> {
        let lite = on_postgres!(self, pg => pg.add_shipment(new, now));
        let result = insert_shipment(new, now, "")
            .try_map(|row| <ShipmentRow as sqlx::FromRow<_>>::from_row(&row))
            .fetch_one(&lite.write)
            .await;
        match result {
            Ok(row) => Ok(row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StorageError::Duplicate(new.order_id.clone()))
            }
            Err(sqlx::Error::Database(e)) if e.is_check_violation() => {
                Err(StorageError::Rejected(e.message().to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Adds many shipments in one transaction: all of them, or none. On a duplicate order id
    /// the error gives the index of the row at fault.
    #[instrument(skip_all, fields(rows = rows.len()))]
    pub async fn import_shipments(
        &self,
        rows: &[NewShipment],
        now: Millis,
    ) -> Result<usize, (usize, StorageError)> {
        let _ = on_postgres!(self, pg => pg.import_shipments(rows, now));
        let mut import = self.begin_import(now).await.map_err(|e| (0, e))?;
        import.add(rows).await?;
        import.commit().await.map_err(|e| (rows.len(), e))
    }

    /// Starts an import whose rows come in batches (a file read as it goes), all committed in
    /// one transaction at [`Import::commit`], or none if it is dropped before. The database's
    /// other writers wait meanwhile.
    pub async fn begin_import(&self, now: Millis) -> Result<Import> {
        let lite = on_postgres!(self, pg => pg.begin_import(now));
        Ok(Import {
            tx: ImportTx::Sqlite(lite.begin_write().await?),
            now,
            added: 0,
        })
    }

    #[instrument(skip_all)]
    pub async fn shipment(&self, order_id: &str) -> Result<ShipmentRow> {
        let lite = on_postgres!(self, pg => pg.shipment(order_id));
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE order_id = ?"
        )))
        .bind(order_id)
        .fetch_optional(&lite.read)
        .await?
        .ok_or_else(|| StorageError::NoSuchOrder(order_id.to_owned()))?;
        decode_shipment(row)
    }

    /// Removes a shipment with its history and its notifications.
    #[instrument(skip_all)]
    pub async fn remove_shipment(&self, order_id: &str) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.remove_shipment(order_id));
        let done = sqlx::query("DELETE FROM shipments WHERE order_id = ?")
            .bind(order_id)
            .execute(&lite.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NoSuchOrder(order_id.to_owned()));
        }
        Ok(())
    }

    /// Moves a shipment to another tier; its next poll comes no later than `next_poll_at`.
    #[instrument(skip_all)]
    pub async fn set_tier(&self, order_id: &str, tier: Tier, next_poll_at: Millis) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.set_tier(order_id, tier, next_poll_at));
        let done = sqlx::query(
            "UPDATE shipments SET tier = ?, next_poll_at = min(next_poll_at, ?) WHERE order_id = ?",
        )
        .bind(tier.as_str())
        .bind(next_poll_at)
        .bind(order_id)
        .execute(&lite.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NoSuchOrder(order_id.to_owned()));
        }
        Ok(())
    }

    // ---- shipments: the dispatcher ------------------------------------------------------------

    /// Claims up to `limit` due shipments, oldest `next_poll_at` first, skipping the providers in
    /// `paused` and shipments already claimed. A claim holds until the poll is recorded or
    /// released, or until `claimed_until`, when a dispatcher that died lets it go.
    #[instrument(skip_all)]
    pub async fn claim_due_shipments(
        &self,
        now: Millis,
        claimed_until: Millis,
        paused: &[String],
        limit: usize,
    ) -> Result<Vec<ShipmentRow>> {
        let lite =
            on_postgres!(self, pg => pg.claim_due_shipments(now, claimed_until, paused, limit));
        // One UPDATE, atomic by itself and a writer from its first step (SQLite takes the
        // write lock before it reads, waiting out other writers): no transaction around it,
        // whose BEGIN and COMMIT are two more trips to sqlx's SQLite thread. A row it cannot
        // read is marked invalid by the next statement; should that fail, the row is claimed
        // again and marked at its next claim.
        let mut conn = lite.write.acquire().await?;
        claim_due_shipments(&mut conn, now, claimed_until, paused, limit).await
    }

    /// Frees every claim: at daemon start, when no poll can be in flight (the daemon holds the
    /// database's daemon lock), so shipments claimed by a daemon that died are due again at once
    /// instead of when their claims expire. Leases on notifications are ended likewise; their
    /// attempts stay counted.
    pub async fn release_all_claims(&self, now: Millis) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.release_all_claims(now));
        let mut tx = lite.begin_write().await?;
        sqlx::query("UPDATE shipments SET claimed_until = NULL WHERE claimed_until IS NOT NULL")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE notifications SET lease_until = ? WHERE state = 'pending' AND lease_until > ?",
        )
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The earliest time an unclaimed active shipment of a provider not paused is due.
    pub async fn next_due_at(&self, paused: &[String], now: Millis) -> Result<Option<Millis>> {
        let lite = on_postgres!(self, pg => pg.next_due_at(paused, now));
        let paused = serde_json::to_string(paused).expect("a list of strings serialises");
        Ok(sqlx::query_scalar::<_, Option<Millis>>(
            "SELECT min(next_poll_at) FROM shipments WHERE active = 1 \
             AND typeof(next_poll_at) = 'integer' \
             AND (claimed_until IS NULL OR claimed_until <= ?) \
             AND provider NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(now)
        .bind(paused)
        .fetch_one(&lite.read)
        .await?)
    }

    /// Gives a claimed shipment back untouched.
    pub async fn release_shipment(&self, id: i64) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.release_shipment(id));
        sqlx::query("UPDATE shipments SET claimed_until = NULL WHERE id = ?")
            .bind(id)
            .execute(&lite.write)
            .await?;
        Ok(())
    }

    /// Extends the claim on a shipment to `until`, while it is still the claim this daemon took
    /// (`held`, its `claimed_until`). False when the claim is gone: given back, recorded, or
    /// taken by another daemon once it ran out.
    pub async fn renew_shipment_claim(&self, id: i64, held: Millis, until: Millis) -> Result<bool> {
        let lite = on_postgres!(self, pg => pg.renew_shipment_claim(id, held, until));
        let done = sqlx::query(
            "UPDATE shipments SET claimed_until = ?3 WHERE id = ?1 AND claimed_until = ?2",
        )
        .bind(id)
        .bind(held)
        .bind(until)
        .execute(&lite.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stops polling a shipment and says why (unknown provider, a request that can never work).
    #[instrument(skip_all, fields(id))]
    pub async fn mark_invalid(
        &self,
        id: i64,
        kind: InvalidKind,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.mark_invalid(id, kind, reason, now));
        let mut conn = lite.write.acquire().await?;
        mark_invalid(&mut conn, id, kind, reason, now).await
    }
}

/// What [`Db::create_shipments`] did with one shipment.
#[derive(Debug, Clone)]
pub enum Created {
    /// Added now.
    New(ShipmentRow),
    /// Already tracked, with nothing the request gave differing.
    Existing(ShipmentRow),
}

impl Created {
    pub fn row(&self) -> &ShipmentRow {
        match self {
            Created::New(row) | Created::Existing(row) => row,
        }
    }
}

/// Which of the fields the create at an index gives differ from the stored row's (their names).
pub type Differs<'a> = &'a (dyn Fn(usize, &NewShipment, &ShipmentRow) -> Vec<&'static str> + Sync);

/// Why [`Db::create_shipments`] added nothing.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("order {order_id} is already tracked with other values for {}", fields.join(", "))]
    Conflict {
        index: usize,
        order_id: String,
        fields: Vec<&'static str>,
    },
    /// The database refused the row (a CHECK), or the stored row cannot be read.
    #[error("{source}")]
    Row { index: usize, source: StorageError },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A change to a shipment's tier and contacts; `None` leaves a part as it is, `Some(None)`
/// clears a contact.
#[derive(Debug, Clone, Default)]
pub struct ShipmentUpdate {
    /// The new tier, and the latest its next poll may come.
    pub tier: Option<(Tier, Millis)>,
    pub phone: Option<Option<Phone>>,
    pub email: Option<Option<Email>>,
    pub openid: Option<Option<OpenId>>,
}

impl Db {
    /// Adds shipments in one transaction, all or none. An order already tracked (before, or
    /// earlier in `rows`) is kept as it is when `differs` finds nothing, and spoils the whole
    /// transaction when it names fields.
    #[instrument(skip_all, fields(rows = rows.len()))]
    pub async fn create_shipments(
        &self,
        rows: &[NewShipment],
        now: Millis,
        differs: Differs<'_>,
    ) -> Result<Vec<Created>, CreateError> {
        let lite = on_postgres!(self, pg => pg.create_shipments(rows, now, differs));
        let mut tx = lite.begin_write().await?;
        let mut done = Vec::with_capacity(rows.len());
        for (index, new) in rows.iter().enumerate() {
            let inserted = insert_shipment(new, now, "ON CONFLICT (order_id) DO NOTHING")
                .fetch_optional(&mut *tx)
                .await;
            let row = match inserted {
                Ok(row) => row,
                Err(sqlx::Error::Database(e)) if e.is_check_violation() => {
                    let source = StorageError::Rejected(e.message().to_owned());
                    return Err(CreateError::Row { index, source });
                }
                Err(e) => return Err(StorageError::from(e).into()),
            };
            let (fresh, row) = match row {
                Some(row) => (true, row),
                None => {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE order_id = ?"
                    )))
                    .bind(&new.order_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StorageError::from)?;
                    (false, row)
                }
            };
            let row = decode_shipment(row).map_err(|source| CreateError::Row { index, source })?;
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

    /// Changes a shipment's tier and contacts; returns the row as it is now.
    #[instrument(skip_all)]
    pub async fn update_shipment(
        &self,
        order_id: &str,
        update: &ShipmentUpdate,
    ) -> Result<ShipmentRow> {
        let lite = on_postgres!(self, pg => pg.update_shipment(order_id, update));
        let (tier, next_poll_at) = match update.tier {
            Some((tier, at)) => (Some(tier.as_str()), Some(at)),
            None => (None, None),
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE shipments SET tier = coalesce(?1, tier), \
               next_poll_at = CASE WHEN ?2 IS NULL THEN next_poll_at ELSE min(next_poll_at, ?2) END, \
               phone = CASE WHEN ?3 THEN ?4 ELSE phone END, \
               email = CASE WHEN ?5 THEN ?6 ELSE email END, \
               openid = CASE WHEN ?7 THEN ?8 ELSE openid END \
             WHERE order_id = ?9 RETURNING {SHIPMENT_COLUMNS}"
        )))
        .bind(tier)
        .bind(next_poll_at)
        .bind(update.phone.is_some())
        .bind(update.phone.clone().flatten().map(|p| p.as_str().to_owned()))
        .bind(update.email.is_some())
        .bind(update.email.clone().flatten().map(|e| e.as_str().to_owned()))
        .bind(update.openid.is_some())
        .bind(update.openid.clone().flatten().map(|o| o.as_str().to_owned()))
        .bind(order_id)
        .fetch_optional(&lite.write)
        .await?
        .ok_or_else(|| StorageError::NoSuchOrder(order_id.to_owned()))?;
        decode_shipment(row)
    }
}

/// An import under way: see [`Db::begin_import`].
pub struct Import {
    tx: ImportTx,
    now: Millis,
    added: usize,
}

/// The transaction an import holds, on its engine.
enum ImportTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Import {
    /// Adds a batch. On a duplicate order id or a refused row the error gives the index of the
    /// row at fault in `rows`; the import is then spoiled: drop it.
    pub async fn add(&mut self, rows: &[NewShipment]) -> Result<(), (usize, StorageError)> {
        let tx = match &mut self.tx {
            ImportTx::Sqlite(tx) => tx,
            ImportTx::Postgres(tx) => {
                self.added += Pg::import_rows(tx, rows, self.now).await?;
                return Ok(());
            }
        };
        // The batch goes in as one statement, its rows a JSON array of strings and nulls read
        // back by `->>`: a statement a row (each a hop to sqlx's SQLite thread, and returning
        // the row it added) took 118 µs a shipment, 200,000 in 23.5 s; now 1.8 s. A batch the
        // database refuses goes again row by row, to name the row at fault.
        let batch = serde_json::to_string(
            &rows
                .iter()
                .map(|new| {
                    (
                        &new.order_id,
                        &new.provider,
                        &new.tracking_no,
                        &new.carrier,
                        new.tier.as_str(),
                        new.phone.as_ref().map(Phone::as_str),
                        new.email.as_ref().map(Email::as_str),
                        new.openid.as_ref().map(OpenId::as_str),
                        &new.sub_orders,
                    )
                })
                .collect::<Vec<_>>(),
        )
        .expect("plain values");
        let step = |e: sqlx::Error| (0, StorageError::from(e));
        sqlx::query("SAVEPOINT batch")
            .execute(&mut **tx)
            .await
            .map_err(step)?;
        let inserted = sqlx::query(
            "INSERT INTO shipments (order_id, provider, tracking_no, carrier, tier, phone, email, \
                 openid, sub_orders, next_poll_at, created_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                 value ->> 5, value ->> 6, value ->> 7, value ->> 8, ?2, ?2 \
             FROM jsonb_each(?1)",
        )
        .bind(batch)
        .bind(self.now)
        .execute(&mut **tx)
        .await;
        if inserted.is_ok() {
            sqlx::query("RELEASE batch")
                .execute(&mut **tx)
                .await
                .map_err(step)?;
            self.added += rows.len();
            return Ok(());
        }
        sqlx::raw_sql("ROLLBACK TO batch; RELEASE batch")
            .execute(&mut **tx)
            .await
            .map_err(step)?;
        for (i, new) in rows.iter().enumerate() {
            let done = insert_shipment(new, self.now, "").execute(&mut **tx).await;
            match done {
                Ok(_) => self.added += 1,
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err((i, StorageError::Duplicate(new.order_id.clone())));
                }
                Err(sqlx::Error::Database(e)) if e.is_check_violation() => {
                    return Err((i, StorageError::Rejected(e.message().to_owned())));
                }
                Err(e) => return Err((i, e.into())),
            }
        }
        Ok(())
    }

    /// Commits every row added; returns how many there were.
    pub async fn commit(self) -> Result<usize> {
        match self.tx {
            ImportTx::Sqlite(tx) => tx.commit().await?,
            ImportTx::Postgres(tx) => tx.commit().await?,
        }
        Ok(self.added)
    }

    /// An import on PostgreSQL, in transaction `tx`.
    pub(super) fn postgres(tx: Transaction<'static, Postgres>, now: Millis) -> Import {
        Import {
            tx: ImportTx::Postgres(tx),
            now,
            added: 0,
        }
    }
}

/// The body of [`Db::claim_due_shipments`], inside a write transaction the caller commits.
pub(crate) async fn claim_due_shipments(
    conn: &mut SqliteConnection,
    now: Millis,
    claimed_until: Millis,
    paused: &[String],
    limit: usize,
) -> Result<Vec<ShipmentRow>> {
    let paused = serde_json::to_string(paused).expect("a list of strings serialises");
    // Rows whose schedule columns hold the wrong storage class never compare as due: they
    // are claimed by their own index, to be flagged invalid by the dispatcher. Named, as the
    // planner would otherwise walk every active row through `shipments_due` (200 ms on a
    // million) since that index orders ties by id.
    // The claim returns ids only; the rows are read apart by id, through the guarded select
    // list. SQLite evaluates a RETURNING clause's expressions in a trigger program of its own,
    // and the guards cost more there than the claim itself: 16 claimed rows among a million
    // took 590–890 µs returned through the guards, 270–400 µs returning ids, and the read of
    // the same 16 rows by id 110 µs.
    // `LIMIT +?4`, not `LIMIT ?4`: SQLite plans a bare `LIMIT ?` for the value bound and
    // marks the statement to be prepared again whenever that parameter is bound anew, which
    // sqlx does at every call (`sqlite3ExprIsInteger` and `sqlite3VdbeSetVarmask` in the
    // bundled SQLite). The unary plus makes it an expression read when the statement runs; the
    // plan (EXPLAIN QUERY PLAN) is the same.
    let claimed: Vec<i64> = sqlx::query_scalar(
        "UPDATE shipments SET claimed_until = ?1 WHERE id IN ( \
             SELECT id FROM shipments \
             WHERE active = 1 AND next_poll_at <= ?2 \
               AND (claimed_until IS NULL OR claimed_until <= ?2) \
               AND provider NOT IN (SELECT value FROM json_each(?3)) \
             ORDER BY next_poll_at LIMIT +?4) \
         OR id IN ( \
             SELECT id FROM shipments INDEXED BY shipments_mistyped \
             WHERE active = 1 AND (typeof(next_poll_at) <> 'integer' \
                 OR typeof(claimed_until) NOT IN ('integer', 'null')) LIMIT +?4) \
         RETURNING id",
    )
    .bind(claimed_until)
    .bind(now)
    .bind(&paused)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let (mut rows, unreadable) = decode_shipments(rows_by_id(conn, &claimed).await?);
    for (id, reason) in unreadable {
        tracing::warn!(shipment_id = id, %reason, "shipment invalid");
        mark_invalid(conn, id, InvalidKind::Row, &reason, now).await?;
    }
    // RETURNING keeps no order; the backlog drains oldest first.
    rows.sort_by_key(|row| row.next_poll_at);
    Ok(rows)
}

/// The stored rows of these shipments, in no order, through the guarded select list and not
/// yet decoded: in one statement, whatever their number.
pub(crate) async fn rows_by_id(conn: &mut SqliteConnection, ids: &[i64]) -> Result<Vec<SqliteRow>> {
    Ok(sqlx::query(AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE id IN (SELECT value FROM json_each(?))"
    )))
    .bind(serde_json::to_string(ids).expect("ids serialise"))
    .fetch_all(&mut *conn)
    .await?)
}

/// The body of [`Db::mark_invalid`].
pub(crate) async fn mark_invalid(
    conn: &mut SqliteConnection,
    id: i64,
    kind: InvalidKind,
    reason: &str,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "UPDATE shipments SET active = 0, error = ?, invalid_kind = ?, last_polled_at = ?, \
         claimed_until = NULL WHERE id = ?",
    )
    .bind(reason)
    .bind(kind.as_str())
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
