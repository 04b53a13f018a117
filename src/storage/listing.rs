//! Listing shipments (`list`, the API's `GET /v1/shipments`): a page at a time, each page read
//! along the table from its cursor, or, when the status or the change time the listing asks for
//! keeps few shipments, from the index that holds them.

use sqlx::{AssertSqlSafe, Row};
use tracing::instrument;

use super::{Db, Result, SHIPMENT_COLUMNS, ShipmentRow, decode_shipments};
use crate::clock::Millis;
use crate::domain::{Status, Tier};

/// Which shipments `list` shows; a part left out keeps them all.
#[derive(Debug, Clone, Default)]
pub struct ShipmentFilter {
    /// The provider's name as configured (`[providers.NAME]`).
    pub provider: Option<String>,
    pub status: Option<Status>,
    pub tier: Option<Tier>,
    /// Only the shipments whose status last changed at or after this time; one whose status
    /// never changed counts from when it was added.
    pub changed_since: Option<Millis>,
    /// At most this many rows.
    pub limit: Option<u32>,
    /// Only the rows after this one (by `id`, the order rows are listed in): where the previous
    /// page ended.
    pub after: Option<i64>,
}

/// The shipments of a status (`?1`), tier (`?2`), provider (`?3`) and changed since (`?4`),
/// each when given, after the one numbered `?6`, at most `?5`, read as `reading` says.
pub(super) fn shipments_page_sql(reading: PageReading) -> String {
    const STATUS: &str = "(?1 IS NULL OR status = ?1)";
    const CHANGED: &str = "(?4 IS NULL OR coalesce(status_changed_at, created_at) >= ?4)";
    // A bare `id > ?6` (never `?6 IS NULL OR …`): SQLite starts each page at its cursor in the
    // table instead of reading every row before it (89 ms a page at the end of a million, where
    // the page itself takes 0.1 ms). From an index, the filter that index holds is bare too, for
    // SQLite to search it by, and the order is `+id`, which keeps SQLite from walking the table
    // in the listing's order: it takes the few from the index and sorts them, keeping the page's
    // rows alone.
    let (from, status, changed, order) = match reading {
        PageReading::FromCursor => ("shipments", STATUS, CHANGED, "id"),
        PageReading::FewOfStatus => (
            "shipments INDEXED BY shipments_status",
            "status = ?1",
            CHANGED,
            "+id",
        ),
        PageReading::FewChanged => (
            "shipments INDEXED BY shipments_changed",
            STATUS,
            "coalesce(status_changed_at, created_at) >= ?4",
            "+id",
        ),
    };
    format!(
        "SELECT {SHIPMENT_COLUMNS} FROM {from} \
         WHERE {status} AND (?2 IS NULL OR tier = ?2) AND (?3 IS NULL OR provider = ?3) \
           AND {changed} AND id > ?6 \
         ORDER BY {order} LIMIT ?5"
    )
}

/// How a page of a listing is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageReading {
    /// Along the table from the page's cursor, keeping the rows the filter keeps: each page reads
    /// the rows between its cursor and its last row, so a whole listing reads the table once.
    FromCursor,
    /// From the status index, sorted: a page reads every shipment of the status (and of the
    /// tier and provider, when given), so this is for when they are few.
    FewOfStatus,
    /// From the index of change times (migration 0022), sorted: a page reads every shipment
    /// changed since the time given, so this is for when they are few.
    FewChanged,
}

/// Below this many shipments of the status a listing asks for, or changed since the time it
/// gives, each of its pages reads them all from their index: at most a few milliseconds, where
/// reading along the table to find them took 0.13–0.26 s a page at a million shipments. From
/// this many on, the listing reads along the table, where they are at least one in a hundred at
/// a million (and so a page finds its rows soon), and where a page does not pay for sorting all
/// of them.
pub(super) const FEW: i64 = 10_000;

/// How the pages of a listing are read, given how many shipments its status (and tier and
/// provider) keeps and how many changed since its time, each counted up to [`FEW`] on its
/// index (`None` for a filter it does not give): from the index that holds fewer, when they
/// are few.
pub(super) fn page_reading(of_status: Option<i64>, changed: Option<i64>) -> PageReading {
    let few = |count: Option<i64>| count.filter(|count| *count < FEW);
    match (few(of_status), few(changed)) {
        (Some(status), Some(changed)) if changed < status => PageReading::FewChanged,
        (Some(_), _) => PageReading::FewOfStatus,
        (None, Some(_)) => PageReading::FewChanged,
        (None, None) => PageReading::FromCursor,
    }
}

/// The shipments of the status `?1` (and the tier `?2` and provider `?3`, when given), counted
/// up to `?4`, from the status index.
pub(super) const STATUS_COUNT: &str = "SELECT count(*) FROM (SELECT 1 \
     FROM shipments INDEXED BY shipments_status \
     WHERE status = ?1 AND (?2 IS NULL OR tier = ?2) AND (?3 IS NULL OR provider = ?3) LIMIT ?4)";

/// The shipments changed since `?1`, counted up to `?2`, from their index.
pub(super) const CHANGED_COUNT: &str = "SELECT count(*) FROM (SELECT 1 \
     FROM shipments INDEXED BY shipments_changed \
     WHERE coalesce(status_changed_at, created_at) >= ?1 LIMIT ?2)";

/// One page of a listing of shipments.
#[derive(Debug, Default)]
pub struct ShipmentPage {
    /// The rows that could be read.
    pub rows: Vec<ShipmentRow>,
    /// The id of every row read, in order, those that could not be read included: the next page
    /// starts after the last.
    pub ids: Vec<i64>,
}

impl ShipmentPage {
    /// Decodes the rows, logging and leaving out each one that cannot be read.
    pub(super) fn from_rows<R: Row>(rows: Vec<R>) -> ShipmentPage
    where
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
        for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
        for<'q> bool: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    {
        let ids = rows
            .iter()
            .map(|row| row.try_get::<i64, _>("id").unwrap_or_default())
            .collect();
        let (rows, unreadable) = decode_shipments(rows);
        for (id, reason) in unreadable {
            tracing::warn!(shipment_id = id, %reason, "shipment left out");
        }
        ShipmentPage { rows, ids }
    }
}

impl Db {
    /// The shipments `filter` keeps, the first added first.
    pub async fn list_shipments(&self, filter: &ShipmentFilter) -> Result<Vec<ShipmentRow>> {
        Ok(self.shipments_page(filter).await?.rows)
    }

    /// A page of the shipments `filter` keeps, the first added first: the rows that can be read,
    /// and the id of every row read, so that the next page starts after the last one even when
    /// it could not be read (each one that cannot is logged and left out).
    #[instrument(skip_all)]
    pub async fn shipments_page(&self, filter: &ShipmentFilter) -> Result<ShipmentPage> {
        let lite = on_postgres!(self, pg => pg.shipments_page(filter));
        let of_status = match filter.status {
            Some(status) => Some(
                sqlx::query_scalar(STATUS_COUNT)
                    .bind(status.as_str())
                    .bind(filter.tier.map(Tier::as_str))
                    .bind(filter.provider.as_deref())
                    .bind(FEW)
                    .fetch_one(&lite.read)
                    .await?,
            ),
            None => None,
        };
        let changed = match filter.changed_since {
            Some(since) => Some(
                sqlx::query_scalar(CHANGED_COUNT)
                    .bind(since)
                    .bind(FEW)
                    .fetch_one(&lite.read)
                    .await?,
            ),
            None => None,
        };
        let reading = page_reading(of_status, changed);
        let rows = sqlx::query(AssertSqlSafe(shipments_page_sql(reading)))
            .bind(filter.status.map(Status::as_str))
            .bind(filter.tier.map(Tier::as_str))
            .bind(filter.provider.as_deref())
            .bind(filter.changed_since)
            // A negative LIMIT is no limit in SQLite.
            .bind(filter.limit.map_or(-1, i64::from))
            .bind(filter.after.unwrap_or(i64::MIN))
            .fetch_all(&lite.read)
            .await?;
        Ok(ShipmentPage::from_rows(rows))
    }
}
