//! Listing shipments (`list`, the API's `GET /v1/shipments`): a page at a time, each page read
//! along the table from its cursor, or, when the status, tier, provider or change time the
//! listing asks for keeps few shipments, from the index that holds them.

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
/// each when the listing gives it, after the one numbered `?6`, at most `?5`, read as `reading`
/// says; `of_status` is the listing's [`status_index_terms`], which the status index is read by.
pub(super) fn shipments_page_sql(reading: PageReading, of_status: Option<&str>) -> String {
    const STATUS: &str = "(?1 IS NULL OR status = ?1) AND (?2 IS NULL OR tier = ?2) \
                          AND (?3 IS NULL OR provider = ?3)";
    const CHANGED: &str = "(?4 IS NULL OR coalesce(status_changed_at, created_at) >= ?4)";
    // A bare `id > ?6` (never `?6 IS NULL OR …`): SQLite starts each page at its cursor in the
    // table instead of reading every row before it (89 ms a page at the end of a million, where
    // the page itself takes 0.1 ms). From an index, the filter that index holds is bare too, for
    // SQLite to search it by, and the order is `+id`, which keeps SQLite from walking the table
    // in the listing's order: it takes the few from the index and sorts them, keeping the page's
    // rows alone.
    let (from, status, changed, order) = match reading {
        PageReading::FromCursor => ("shipments", STATUS, CHANGED, "id"),
        // Always some: this reading follows a count of the same terms.
        PageReading::FewOfStatus => (
            "shipments INDEXED BY shipments_status",
            of_status.unwrap_or(STATUS),
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
         WHERE {status} AND {changed} AND id > ?6 \
         ORDER BY {order} LIMIT ?5"
    )
}

/// How a page of a listing is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageReading {
    /// Along the table from the page's cursor, keeping the rows the filter keeps: each page reads
    /// the rows between its cursor and its last row, so a whole listing reads the table once.
    FromCursor,
    /// From the status index (status, tier, provider, active), sorted: a page reads every
    /// shipment of the status, tier and provider given, so this is for when they are few.
    FewOfStatus,
    /// From the index of change times (migration 0022), sorted: a page reads every shipment
    /// changed since the time given, so this is for when they are few.
    FewChanged,
}

/// Below this many shipments of the status, tier or provider a listing asks for, or changed
/// since the time it gives, each of its pages reads them all from their index: at most a few
/// milliseconds, where reading along the table to find them took 0.13–0.26 s a page at a
/// million shipments. From this many on, the listing reads along the table, where they are at
/// least one in a hundred at a million (and so a page finds its rows soon), and where a page does
/// not pay for sorting all of them.
pub(super) const FEW: i64 = 10_000;

/// How the pages of a listing are read, given how many shipments its status, tier and provider
/// keep and how many changed since its time, each counted up to [`FEW`] on its index (`None`
/// for a filter it does not give): from the index that holds fewer, when they are few.
pub(super) fn page_reading(of_status: Option<i64>, changed: Option<i64>) -> PageReading {
    let few = |count: Option<i64>| count.filter(|count| *count < FEW);
    match (few(of_status), few(changed)) {
        (Some(status), Some(changed)) if changed < status => PageReading::FewChanged,
        (Some(_), _) => PageReading::FewOfStatus,
        (None, Some(_)) => PageReading::FewChanged,
        (None, None) => PageReading::FromCursor,
    }
}

/// The terms that find the status, tier and provider `filter` gives in the status index
/// (status, tier, provider, active), `params` naming the engine's parameters of the three; `None`
/// when it gives none of them. Each column before the last one given is named too: one given is
/// equal to its parameter, one not given is in every value its CHECK allows (both engines refuse
/// any other), so that the index is searched for each of them, a handful of searches, instead of
/// read whole for a provider or a tier alone. The values are the domain's own, never the user's.
pub(super) fn status_index_terms(filter: &ShipmentFilter, params: [&str; 3]) -> Option<String> {
    fn every<T>(all: &[T], name: fn(&T) -> &'static str) -> String {
        let values: Vec<String> = all
            .iter()
            .map(|value| format!("'{}'", name(value)))
            .collect();
        format!("IN ({})", values.join(", "))
    }
    let [status, tier, provider] = params;
    let given = [
        filter.status.is_some(),
        filter.tier.is_some(),
        filter.provider.is_some(),
    ];
    let last = given.iter().rposition(|given| *given)?;
    let terms = [
        match filter.status {
            Some(_) => format!("status = {status}"),
            None => format!("status {}", every(&Status::ALL, |s| s.as_str())),
        },
        match filter.tier {
            Some(_) => format!("tier = {tier}"),
            None => format!("tier {}", every(&Tier::ALL, |t| t.as_str())),
        },
        format!("provider = {provider}"),
    ];
    Some(terms[..=last].join(" AND "))
}

/// The shipments a listing's status, tier and provider keep, counted up to `?4`, from the
/// status index; `terms` are the listing's [`status_index_terms`].
pub(super) fn status_count_sql(terms: &str) -> String {
    format!(
        "SELECT count(*) FROM (SELECT 1 FROM shipments INDEXED BY shipments_status \
         WHERE {terms} LIMIT ?4)"
    )
}

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
    /// A page of the shipments `filter` keeps, the first added first: the rows that can be read,
    /// and the id of every row read, so that the next page starts after the last one even when
    /// it could not be read (each one that cannot is logged and left out).
    #[instrument(skip_all)]
    pub async fn shipments_page(&self, filter: &ShipmentFilter) -> Result<ShipmentPage> {
        let lite = on_postgres!(self, pg => pg.shipments_page(filter));
        let terms = status_index_terms(filter, ["?1", "?2", "?3"]);
        let of_status = match &terms {
            Some(terms) => Some(
                sqlx::query_scalar(AssertSqlSafe(status_count_sql(terms)))
                    .bind(filter.status.map(Status::as_str))
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
        let rows = sqlx::query(AssertSqlSafe(shipments_page_sql(reading, terms.as_deref())))
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
