//! All SQL lives here. The rest of the program calls named operations, each one short
//! transaction; nothing holds a transaction across network I/O.
//!
//! SQLite allows one writer at a time, and the admin CLI and outside tools write the same file while
//! the daemon runs. So: WAL, a busy timeout, one write connection per process, and every
//! transaction that reads before it writes starts with `BEGIN IMMEDIATE`, which takes the write
//! lock up front (a deferred transaction that upgrades fails at once with "database is locked"
//! when another process wrote in between, whatever the busy timeout).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, FromRow, Sqlite, Transaction};
use tracing::instrument;

use crate::clock::{Millis, to_rfc3339};
use crate::domain::{ChannelKind, Status, Tier};
use crate::providers::TraceEvent;

/// How hard SQLite works to keep the last commits through a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Normal,
    Full,
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// SQLite's primary result codes that say the database itself failed: SQLITE_PERM, BUSY, LOCKED,
/// NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL and NOTADB
/// (https://www.sqlite.org/rescode.html).
const OUTAGE_CODES: [i64; 11] = [3, 5, 6, 7, 8, 10, 11, 13, 14, 15, 26];

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot bring database {path} up to date: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("order {0} is already tracked")]
    Duplicate(String),
    #[error("no shipment with order id {0}")]
    NoSuchOrder(String),
    #[error("database refused the row: {0}")]
    Rejected(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the transaction holding this write was cut short; it is retried at the next poll")]
    Interrupted,
}

/// True for an SQLite result code (primary or extended, as text) that says the database itself
/// failed; an unreadable code counts as a failure, to be safe.
fn is_outage_code(code: &str) -> bool {
    code.parse::<i64>()
        .map_or(true, |code| OUTAGE_CODES.contains(&(code & 0xff)))
}

impl StorageError {
    /// True when the database itself failed (I/O, a full disk, a read-only or locked file, no
    /// connection): an outage. A value that could not be read, or a row the database refused, is
    /// that row's fault, and the database is fine.
    pub fn is_outage(&self) -> bool {
        match self {
            StorageError::Duplicate(_)
            | StorageError::NoSuchOrder(_)
            | StorageError::Rejected(_) => false,
            StorageError::Open { .. }
            | StorageError::Migrate { .. }
            | StorageError::Interrupted => true,
            StorageError::Sql(error) => match error {
                sqlx::Error::Database(db) => db.code().is_none_or(|code| is_outage_code(&code)),
                sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::RowNotFound
                | sqlx::Error::TypeNotFound { .. } => false,
                _ => true,
            },
        }
    }
}

/// A shipment row as stored.
#[derive(Debug, Clone, FromRow)]
pub struct ShipmentRow {
    pub id: i64,
    pub order_id: String,
    pub provider: String,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    pub tier: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub status: String,
    pub raw_status: Option<String>,
    pub active: bool,
    pub error: Option<String>,
    pub transitions: i64,
    pub next_poll_at: Millis,
    pub last_polled_at: Option<Millis>,
    pub last_event_at: Option<Millis>,
    pub status_changed_at: Option<Millis>,
    pub created_at: Millis,
    /// The sub-orders a split order's parcel carries, comma-separated (TOP's `sub_tid`).
    pub sub_orders: Option<String>,
    /// Set when a column holds a value of the wrong storage class (a REAL in `transitions`, a
    /// BLOB in `carrier`), stored before the schema refused them: the row is then flagged invalid
    /// by itself, and the column reads as a harmless stand-in meanwhile.
    pub type_error: Option<String>,
}

impl ShipmentRow {
    /// The canonical status; a value written by hand that is not one reads as pending.
    pub fn status(&self) -> Status {
        Status::from_str(&self.status).unwrap_or(Status::Pending)
    }

    pub fn tier(&self) -> Tier {
        Tier::from_str(&self.tier).unwrap_or(Tier::Normal)
    }
}

/// The stable JSON shape of a shipment for `list --json` and `show --json`.
#[derive(Debug, Serialize)]
pub struct ShipmentView {
    pub order_id: String,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    pub provider: String,
    pub tier: String,
    pub status: String,
    pub raw_status: Option<String>,
    pub active: bool,
    pub error: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
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
            tier: row.tier.clone(),
            status: row.status.clone(),
            raw_status: row.raw_status.clone(),
            active: row.active && row.type_error.is_none(),
            error: row.type_error.clone().or_else(|| row.error.clone()),
            phone: row.phone.as_deref().map(crate::domain::mask_contact),
            email: row.email.as_deref().map(crate::domain::mask_contact),
            next_poll_at: row.active.then(|| to_rfc3339(row.next_poll_at)),
            last_polled_at: row.last_polled_at.map(to_rfc3339),
            last_event_at: row.last_event_at.map(to_rfc3339),
            status_changed_at: row.status_changed_at.map(to_rfc3339),
            created_at: to_rfc3339(row.created_at),
            sub_orders: row.sub_orders.clone(),
        }
    }
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct EventRow {
    #[serde(skip)]
    pub id: i64,
    #[serde(serialize_with = "ser_time")]
    pub time: Millis,
    pub description: String,
    pub location: Option<String>,
    pub raw_code: Option<String>,
}

fn ser_time<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_rfc3339(*ms))
}

/// A notification row joined with its order id, for `outbox` and `show`.
#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub id: i64,
    pub public_id: String,
    pub order_id: String,
    /// `status_changed` or `stuck`.
    pub kind: String,
    pub channel: String,
    pub previous_status: String,
    pub status: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub lease_until: Option<Millis>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
}

/// The stable JSON shape of an outbox row.
#[derive(Debug, Serialize)]
pub struct NotificationView {
    pub id: i64,
    pub webhook_id: String,
    pub order_id: String,
    /// `status_changed` or `stuck`.
    pub kind: String,
    pub channel: String,
    pub previous_status: String,
    pub status: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

impl From<&NotificationRow> for NotificationView {
    fn from(row: &NotificationRow) -> Self {
        NotificationView {
            id: row.id,
            webhook_id: row.public_id.clone(),
            order_id: row.order_id.clone(),
            kind: row.kind.clone(),
            channel: row.channel.clone(),
            previous_status: row.previous_status.clone(),
            status: row.status.clone(),
            state: row.state.clone(),
            attempts: row.attempts,
            next_attempt_at: (row.state == "pending").then(|| to_rfc3339(row.next_attempt_at)),
            last_error: row.last_error.clone(),
            created_at: to_rfc3339(row.created_at),
            sent_at: row.sent_at.map(to_rfc3339),
        }
    }
}

/// A notification claimed for one delivery attempt.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedNotification {
    pub id: i64,
    pub public_id: String,
    pub order_id: String,
    pub channel: String,
    pub status: String,
    pub payload: String,
    pub recipient: Option<String>,
    /// Attempts made so far, this one included.
    pub attempts: i64,
}

/// A shipment to add.
#[derive(Debug, Clone)]
pub struct NewShipment {
    pub order_id: String,
    pub provider: String,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    pub tier: Tier,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Sub-order ids separated by commas, for a split order.
    pub sub_orders: Option<String>,
}

/// Decides what one poll writes, given the shipment as stored (read inside the write
/// transaction). The rules live in the `track` module; storage only executes the answer.
pub trait Decide {
    fn decide(&self, stored: &ShipmentRow) -> PollWrite<'_>;
}

/// What one poll writes, as decided from the stored row and the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollWrite<'a> {
    pub now: Millis,
    pub next_poll_at: Millis,
    /// Events to add (those already stored are skipped).
    pub events: &'a [TraceEvent],
    pub shipment: ShipmentWrite<'a>,
    /// Outbox rows to queue with the change; a row whose key exists already is not queued again.
    pub outbox: Vec<OutboxRow>,
    /// Provider codes that no mapping table knows, to count.
    pub unmapped: &'a [String],
}

/// How the shipment row itself changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentWrite<'a> {
    /// The shipment was removed or deactivated while the poll was in flight: nothing is written.
    Skip,
    /// Only the poll time and the next poll time.
    Schedule,
    /// Same status, newer details.
    Refresh(Details<'a>),
    /// A new status: transition `transition` from `previous`.
    Change {
        previous: Status,
        status: Status,
        transition: i64,
        /// False once the status is final: the shipment leaves the schedule.
        keep_polling: bool,
        details: Details<'a>,
    },
}

/// The columns a poll refreshes; `None` keeps what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details<'a> {
    pub raw_status: &'a str,
    pub last_event_at: Option<Millis>,
    pub tracking_no: Option<&'a str>,
    pub carrier: Option<&'a str>,
}

/// What a notification announces (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    StatusChanged,
    Stuck,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::StatusChanged => "status_changed",
            NotificationKind::Stuck => "stuck",
        }
    }
}

/// One outbox row to insert, rendered in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub public_id: String,
    pub kind: NotificationKind,
    /// With the shipment, kind and channel it keys the row: the same transition is never queued
    /// twice for a channel.
    pub transition: i64,
    pub channel: ChannelKind,
    pub previous: Status,
    pub status: Status,
    pub payload: String,
    pub recipient: Option<String>,
    /// Set when nothing can be sent (no address for this channel): the row is stored as skipped
    /// with this reason.
    pub skipped: Option<&'static str>,
    pub next_attempt_at: Millis,
    pub created_at: Millis,
}

/// What a recorded poll changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// `(previous, new)` when the status changed.
    pub change: Option<(Status, Status)>,
    pub new_events: u64,
    /// Outbox rows queued: channel and public id.
    pub queued: Vec<(ChannelKind, String)>,
    /// False when the shipment was removed or deactivated while the poll was in flight.
    pub applied: bool,
}

/// The daemon's handle on the database.
#[derive(Clone)]
pub struct Db {
    pub(crate) write: SqlitePool,
    pub(crate) read: SqlitePool,
}

const HOUR_MS: Millis = 3_600_000;
const DAY_MS: Millis = 24 * HOUR_MS;

/// The storage class a column must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Integer,
    Text,
}

/// The columns a shipment row is read from (besides `id`), the class each must hold, and
/// whether it may be NULL. Migration 0007 refuses other classes at INSERT and UPDATE.
const READ_COLUMNS: &[(&str, Class, bool)] = &[
    ("order_id", Class::Text, false),
    ("provider", Class::Text, false),
    ("tracking_no", Class::Text, true),
    ("carrier", Class::Text, true),
    ("tier", Class::Text, false),
    ("phone", Class::Text, true),
    ("email", Class::Text, true),
    ("status", Class::Text, false),
    ("raw_status", Class::Text, true),
    ("active", Class::Integer, false),
    ("error", Class::Text, true),
    ("transitions", Class::Integer, false),
    ("next_poll_at", Class::Integer, false),
    ("last_polled_at", Class::Integer, true),
    ("last_event_at", Class::Integer, true),
    ("status_changed_at", Class::Integer, true),
    ("created_at", Class::Integer, false),
    ("sub_orders", Class::Text, true),
];

/// The select list of a shipment row. Each column is read through a guard, so that a value of
/// the wrong storage class never fails the read of a whole batch: it reads as a stand-in (a
/// BLOB as its SQL literal, a misfit number as 0 or NULL) and `type_error` names the column.
pub(crate) struct ShipmentColumns;

pub(crate) const SHIPMENT_COLUMNS: ShipmentColumns = ShipmentColumns;

impl std::fmt::Display for ShipmentColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("id")?;
        for (name, class, nullable) in READ_COLUMNS {
            match class {
                // TEXT affinity stores numbers as text, so only a BLOB can be out of place.
                Class::Text => write!(
                    f,
                    ", CASE WHEN typeof({name}) = 'blob' THEN quote({name}) ELSE {name} END AS {name}"
                )?,
                Class::Integer => write!(
                    f,
                    ", CASE WHEN typeof({name}) IN ('integer', 'null') THEN {name} ELSE {} END AS {name}",
                    if *nullable { "NULL" } else { "0" }
                )?,
            }
        }
        f.write_str(", CASE")?;
        for (name, class, nullable) in READ_COLUMNS {
            let (allowed, belongs) = match (class, nullable) {
                (Class::Integer, true) => ("'integer', 'null'", "an integer"),
                (Class::Integer, false) => ("'integer'", "an integer"),
                (Class::Text, true) => ("'text', 'null'", "text"),
                (Class::Text, false) => ("'text'", "text"),
            };
            write!(
                f,
                " WHEN typeof({name}) NOT IN ({allowed}) THEN \
                 '{name} holds a ' || typeof({name}) || ' value where {belongs} belongs'"
            )?;
        }
        f.write_str(" END AS type_error")
    }
}

/// Decodes rows one by one: a row that still cannot be read (text that is not UTF-8) is
/// returned apart, by id with the reason, instead of failing its neighbours.
fn decode_shipments(rows: Vec<sqlx::sqlite::SqliteRow>) -> (Vec<ShipmentRow>, Vec<(i64, String)>) {
    use sqlx::Row;
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for row in rows {
        match ShipmentRow::from_row(&row) {
            Ok(shipment) => good.push(shipment),
            Err(e) => {
                let id = row.try_get::<i64, _>("id").unwrap_or_default();
                bad.push((
                    id,
                    format!("the row cannot be read ({e}); fix or remove it"),
                ));
            }
        }
    }
    (good, bad)
}

/// Creates the database file readable by its owner only (0600), whatever the umask: it holds
/// buyers' phone numbers and addresses. SQLite gives the `-wal` and `-shm` files it creates
/// beside it the same mode. An existing file is left as it is.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Db {
    /// Opens (creating it if needed) and migrates the database.
    pub async fn open(path: &Path, synchronous: Synchronous) -> Result<Db> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            return Err(StorageError::Open {
                path: shown,
                source: sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("folder {} does not exist", parent.display()),
                )),
            });
        }
        create_private(path).map_err(|source| StorageError::Open {
            path: shown.clone(),
            source: sqlx::Error::Io(source),
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let open_err = |source| StorageError::Open {
            path: shown.clone(),
            source,
        };
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations")
            .run(&write)
            .await
            .map_err(|source| StorageError::Migrate {
                path: shown.clone(),
                source,
            })?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(open_err)?;
        Ok(Db { write, read })
    }

    /// Takes the lock that makes this process the only daemon on the database at `path`; it is
    /// held until the returned file is dropped. Admin commands do not take it.
    pub fn lock_for_daemon(path: &Path) -> std::result::Result<std::fs::File, String> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        // 0600: another user who can open the lock file can hold its lock and keep the daemon
        // from starting. A lock file left by an older version is narrowed the same way.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(
                "cannot make {} private (0600): {e}; another user may hold its lock",
                lock_path.display()
            );
        }
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "another shipwatch daemon is already running on {} (it holds {})",
                path.display(),
                lock_path.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("cannot lock {}: {e}", lock_path.display()))
            }
        }
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    // ---- shipments: admin ---------------------------------------------------------------------

    #[instrument(skip_all, fields(order_id = %new.order_id))]
    pub async fn add_shipment(&self, new: &NewShipment, now: Millis) -> Result<ShipmentRow> {
        let result = sqlx::query_as::<_, ShipmentRow>(AssertSqlSafe(format!(
            "INSERT INTO shipments (order_id, provider, tracking_no, carrier, tier, phone, email, \
             sub_orders, next_poll_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING {SHIPMENT_COLUMNS}"
        )))
        .bind(&new.order_id)
        .bind(&new.provider)
        .bind(&new.tracking_no)
        .bind(&new.carrier)
        .bind(new.tier.as_str())
        .bind(&new.phone)
        .bind(&new.email)
        .bind(&new.sub_orders)
        .bind(now)
        .bind(now)
        .fetch_one(&self.write)
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
        let mut import = self.begin_import(now).await.map_err(|e| (0, e))?;
        import.add(rows).await?;
        import.commit().await.map_err(|e| (rows.len(), e))
    }

    /// Starts an import whose rows come in batches (a file read as it goes), all committed in
    /// one transaction at [`Import::commit`], or none if it is dropped before. The database's
    /// other writers wait meanwhile.
    pub async fn begin_import(&self, now: Millis) -> Result<Import> {
        Ok(Import {
            tx: self.begin_write().await?,
            now,
            added: 0,
        })
    }

    #[instrument(skip_all)]
    pub async fn list_shipments(
        &self,
        status: Option<Status>,
        tier: Option<Tier>,
    ) -> Result<Vec<ShipmentRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SHIPMENT_COLUMNS} FROM shipments \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR tier = ?2) ORDER BY id"
        )))
        .bind(status.map(Status::as_str))
        .bind(tier.map(Tier::as_str))
        .fetch_all(&self.read)
        .await?;
        let (rows, unreadable) = decode_shipments(rows);
        for (id, reason) in unreadable {
            tracing::warn!(shipment_id = id, %reason, "shipment left out");
        }
        Ok(rows)
    }

    #[instrument(skip_all)]
    pub async fn shipment(&self, order_id: &str) -> Result<ShipmentRow> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE order_id = ?"
        )))
        .bind(order_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StorageError::NoSuchOrder(order_id.to_owned()))?;
        let (mut rows, unreadable) = decode_shipments(vec![row]);
        match unreadable.into_iter().next() {
            Some((_, reason)) => Err(StorageError::Rejected(reason)),
            None => Ok(rows.remove(0)),
        }
    }

    /// The event history of a shipment, oldest first.
    #[instrument(skip_all)]
    pub async fn events(&self, shipment_id: i64) -> Result<Vec<EventRow>> {
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT id, time, description, location, raw_code FROM events \
             WHERE shipment_id = ? ORDER BY time, id",
        )
        .bind(shipment_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// Removes a shipment with its history and its notifications.
    #[instrument(skip_all)]
    pub async fn remove_shipment(&self, order_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM shipments WHERE order_id = ?")
            .bind(order_id)
            .execute(&self.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NoSuchOrder(order_id.to_owned()));
        }
        Ok(())
    }

    /// Moves a shipment to another tier; its next poll comes no later than `next_poll_at`.
    #[instrument(skip_all)]
    pub async fn set_tier(&self, order_id: &str, tier: Tier, next_poll_at: Millis) -> Result<()> {
        let done = sqlx::query(
            "UPDATE shipments SET tier = ?, next_poll_at = min(next_poll_at, ?) WHERE order_id = ?",
        )
        .bind(tier.as_str())
        .bind(next_poll_at)
        .bind(order_id)
        .execute(&self.write)
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
        let paused = serde_json::to_string(paused).expect("a list of strings serialises");
        // Rows whose schedule columns hold the wrong storage class never compare as due: they
        // are claimed by their own index, to be flagged invalid by the dispatcher.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE shipments SET claimed_until = ?1 WHERE id IN ( \
                 SELECT id FROM shipments \
                 WHERE active = 1 AND next_poll_at <= ?2 \
                   AND (claimed_until IS NULL OR claimed_until <= ?2) \
                   AND provider NOT IN (SELECT value FROM json_each(?3)) \
                 ORDER BY next_poll_at LIMIT ?4) \
             OR id IN ( \
                 SELECT id FROM shipments WHERE active = 1 AND (typeof(next_poll_at) <> 'integer' \
                     OR typeof(claimed_until) NOT IN ('integer', 'null')) LIMIT ?4) \
             RETURNING {SHIPMENT_COLUMNS}"
        )))
        .bind(claimed_until)
        .bind(now)
        .bind(&paused)
        .bind(limit as i64)
        .fetch_all(&self.write)
        .await?;
        let (mut rows, unreadable) = decode_shipments(rows);
        for (id, reason) in unreadable {
            tracing::warn!(shipment_id = id, %reason, "shipment invalid");
            self.mark_invalid(id, &reason, now).await?;
        }
        // RETURNING keeps no order; the backlog drains oldest first.
        rows.sort_by_key(|row| row.next_poll_at);
        Ok(rows)
    }

    /// Frees every claim: at daemon start, when no poll can be in flight (the daemon holds the
    /// database's daemon lock), so shipments claimed by a daemon that died are due again at once
    /// instead of when their claims expire. Leases on notifications are ended likewise; their
    /// attempts stay counted.
    pub async fn release_all_claims(&self, now: Millis) -> Result<()> {
        let mut tx = self.begin_write().await?;
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
        let paused = serde_json::to_string(paused).expect("a list of strings serialises");
        Ok(sqlx::query_scalar::<_, Option<Millis>>(
            "SELECT min(next_poll_at) FROM shipments WHERE active = 1 \
             AND typeof(next_poll_at) = 'integer' \
             AND (claimed_until IS NULL OR claimed_until <= ?) \
             AND provider NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(now)
        .bind(paused)
        .fetch_one(&self.read)
        .await?)
    }

    /// Gives a claimed shipment back untouched.
    pub async fn release_shipment(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE shipments SET claimed_until = NULL WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Stops polling a shipment and says why (unknown provider, a request that can never work).
    #[instrument(skip_all, fields(id))]
    pub async fn mark_invalid(&self, id: i64, reason: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE shipments SET active = 0, error = ?, last_polled_at = ?, claimed_until = NULL \
             WHERE id = ?",
        )
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Records a poll that failed but may work later.
    pub async fn record_poll_error(
        &self,
        id: i64,
        error: &str,
        now: Millis,
        next_poll_at: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE shipments SET error = ?, last_polled_at = ?, next_poll_at = ?, \
             claimed_until = NULL WHERE id = ? AND active = 1",
        )
        .bind(error)
        .bind(now)
        .bind(next_poll_at)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Records a successful poll in one transaction: reads the row, asks `poll` what to write
    /// (`track` decides), and writes it: new events, the shipment's columns and the
    /// outbox rows of a change.
    #[instrument(skip_all, fields(id = shipment_id))]
    pub async fn record_poll(&self, shipment_id: i64, poll: impl Decide) -> Result<Recorded> {
        let mut tx = self.begin_write().await?;
        let recorded = record_poll_in(&mut tx, shipment_id, &poll).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Records several polls in one transaction, each exactly as [`Db::record_poll`] would: one
    /// commit instead of one per poll. All of them, or none.
    #[instrument(skip_all, fields(polls = polls.len()))]
    pub async fn record_polls<D: Decide + Sync>(
        &self,
        polls: &[(i64, D)],
    ) -> Result<Vec<Recorded>> {
        let mut tx = self.begin_write().await?;
        let mut recorded = Vec::with_capacity(polls.len());
        for (shipment_id, poll) in polls {
            recorded.push(record_poll_in(&mut tx, *shipment_id, poll).await?);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    // ---- providers ----------------------------------------------------------------------------

    /// Pauses a provider until `until`; the pause survives restarts.
    pub async fn ban_provider(
        &self,
        provider: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO provider_state (provider, banned_until, reason, updated_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET \
             banned_until = max(coalesce(banned_until, 0), excluded.banned_until), \
             reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(provider)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Shortens every provider ban that ends after `latest` to end then.
    pub async fn cap_provider_bans(&self, latest: Millis) -> Result<()> {
        sqlx::query("UPDATE provider_state SET banned_until = ?1 WHERE banned_until > ?1")
            .bind(latest)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Providers banned beyond `now`, with the time each ban ends.
    pub async fn provider_bans(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        Ok(sqlx::query_as::<_, (String, Millis)>(
            "SELECT provider, banned_until FROM provider_state WHERE banned_until > ?",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?)
    }

    /// Records that a provider was stopped because upstream rejected its credentials or its
    /// configuration, for `stats` and `check-config`. A restart lifts it.
    pub async fn pause_provider(
        &self,
        provider: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO provider_state (provider, paused_until, pause_reason, updated_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET \
             paused_until = excluded.paused_until, pause_reason = excluded.pause_reason, \
             updated_at = excluded.updated_at",
        )
        .bind(provider)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Lifts every credentials or configuration pause: at daemon start, with the config as it
    /// is now.
    pub async fn clear_provider_pauses(&self) -> Result<()> {
        sqlx::query("UPDATE provider_state SET paused_until = NULL, pause_reason = NULL")
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Every provider that is banned or paused beyond `now`.
    pub async fn provider_states(&self, now: Millis) -> Result<Vec<ProviderState>> {
        Ok(sqlx::query_as::<_, ProviderState>(
            "SELECT provider, \
                 CASE WHEN banned_until > ?1 THEN banned_until END AS banned_until, \
                 CASE WHEN banned_until > ?1 THEN reason END AS ban_reason, \
                 CASE WHEN paused_until > ?1 THEN paused_until END AS paused_until, \
                 CASE WHEN paused_until > ?1 THEN pause_reason END AS pause_reason \
             FROM provider_state WHERE banned_until > ?1 OR paused_until > ?1 ORDER BY provider",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?)
    }

    /// Adds the daemon's poll counts of the last few seconds to the minute they belong to, and
    /// forgets minutes older than a day.
    pub async fn add_poll_counts(&self, minute: Millis, counts: &[PollCount]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for c in counts {
            sqlx::query(
                "INSERT INTO poll_counts (minute, provider, result, count) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (minute, provider, result) DO UPDATE SET count = count + excluded.count",
            )
            .bind(minute)
            .bind(&c.provider)
            .bind(&c.result)
            .bind(c.count)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM poll_counts WHERE minute < ?")
            .bind(minute - DAY_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Polls per provider and result in the hour before `now`.
    pub async fn polls_last_hour(&self, now: Millis) -> Result<Vec<PollCount>> {
        Ok(sqlx::query_as::<_, PollCount>(
            "SELECT provider, result, sum(count) AS count FROM poll_counts WHERE minute > ? \
             GROUP BY provider, result ORDER BY provider, result",
        )
        .bind(now - HOUR_MS)
        .fetch_all(&self.read)
        .await?)
    }

    /// Records that a channel stopped itself until `until`, for `stats`.
    pub async fn pause_channel(
        &self,
        channel: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO channel_state (channel, paused_until, reason, updated_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (channel) DO UPDATE SET \
             paused_until = max(paused_until, excluded.paused_until), reason = excluded.reason, \
             updated_at = excluded.updated_at",
        )
        .bind(channel)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Lifts a channel's stop (a reload or a restart): the notifications it postponed, the
    /// pending ones whose last error is the stop's `reason`, become due at `at` instead of at
    /// the stop's end, and `stats` stops showing it. One transaction.
    pub async fn resume_channel(&self, channel: &str, reason: &str, at: Millis) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let released = sqlx::query(
            "UPDATE notifications SET next_attempt_at = ?1 \
             WHERE state = 'pending' AND channel = ?2 AND last_error = ?3 AND next_attempt_at > ?1",
        )
        .bind(at)
        .bind(channel)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM channel_state WHERE channel = ?")
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Forgets every channel stop: at daemon start, when every channel is tried afresh.
    pub async fn clear_channel_pauses(&self) -> Result<()> {
        sqlx::query("DELETE FROM channel_state")
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Every channel stopped beyond `now`.
    pub async fn channel_states(&self, now: Millis) -> Result<Vec<ChannelState>> {
        Ok(sqlx::query_as::<_, ChannelState>(
            "SELECT channel, paused_until, reason FROM channel_state WHERE paused_until > ? \
             ORDER BY channel",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?)
    }

    /// Provider values no mapping table knew, most frequent first.
    pub async fn unmapped(&self) -> Result<Vec<UnmappedRow>> {
        Ok(sqlx::query_as::<_, UnmappedRow>(
            "SELECT provider, value, count, first_seen, last_seen FROM unmapped \
             ORDER BY count DESC, provider, value",
        )
        .fetch_all(&self.read)
        .await?)
    }

    /// Shipments per provider, tier, status and activity, and notifications per channel and
    /// state: what `stats` shows.
    pub async fn stats(&self, now: Millis) -> Result<Stats> {
        let shipments = sqlx::query_as::<_, ShipmentCount>(
            "SELECT provider, tier, status, active, count(*) AS count FROM shipments \
             GROUP BY provider, tier, status, active ORDER BY provider, tier, status",
        )
        .fetch_all(&self.read)
        .await?;
        let notifications = sqlx::query_as::<_, NotificationCount>(
            "SELECT channel, state, count(*) AS count FROM notifications \
             GROUP BY channel, state ORDER BY channel, state",
        )
        .fetch_all(&self.read)
        .await?;
        let (due_now, oldest_due) = sqlx::query_as::<_, (i64, Option<Millis>)>(
            "SELECT count(*), min(next_poll_at) FROM shipments \
             WHERE active = 1 AND next_poll_at <= ? AND claimed_until IS NULL",
        )
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        Ok(Stats {
            shipments,
            notifications,
            due_now,
            lag_seconds: oldest_due.map_or(0, |at| now.saturating_sub(at).max(0) / 1000),
        })
    }

    // ---- the outbox ---------------------------------------------------------------------------

    /// Claims up to `limit` due notifications of the given channels for one attempt each. The
    /// attempt is counted at claim time, so a sender that dies mid-attempt has used it up; rows
    /// whose lease ran out after their last allowed attempt go dead instead.
    #[instrument(skip_all)]
    pub async fn claim_notifications(
        &self,
        now: Millis,
        lease_until: Millis,
        channels: &[ChannelKind],
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<ClaimedNotification>> {
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        let channels = serde_json::to_string(&channels).expect("a list of strings serialises");
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE notifications SET state = 'dead', lease_until = NULL, \
             last_error = 'no answer within the lease on the last attempt' || \
                 coalesce(' (before that: ' || last_error || ')', '') \
             WHERE state = 'pending' AND lease_until IS NOT NULL AND lease_until <= ? \
               AND attempts >= ?",
        )
        .bind(now)
        .bind(max_attempts)
        .execute(&mut *tx)
        .await?;
        // Only the head of each shipment's queue on a channel: a notification waits while an
        // earlier one of the same shipment and channel is pending or in flight (a dead one no
        // longer holds the line), so a buyer never hears "delivered" before "out for delivery".
        let rows = sqlx::query_as::<_, ClaimedNotification>(
            "UPDATE notifications SET attempts = attempts + 1, lease_until = ?1 \
             WHERE id IN (SELECT id FROM notifications AS n \
                 WHERE state = 'pending' AND next_attempt_at <= ?2 \
                   AND (lease_until IS NULL OR lease_until <= ?2) \
                   AND channel IN (SELECT value FROM json_each(?3)) \
                   AND NOT EXISTS (SELECT 1 FROM notifications AS earlier \
                       WHERE earlier.shipment_id = n.shipment_id AND earlier.channel = n.channel \
                         AND earlier.state = 'pending' AND earlier.id < n.id) \
                 ORDER BY next_attempt_at, id LIMIT ?4) \
             RETURNING id, public_id, channel, status, payload, recipient, attempts, \
                 (SELECT order_id FROM shipments WHERE shipments.id = shipment_id) AS order_id",
        )
        .bind(lease_until)
        .bind(now)
        .bind(&channels)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The earliest time a pending notification of these channels becomes due.
    pub async fn next_notification_at(&self, channels: &[ChannelKind]) -> Result<Option<Millis>> {
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        Ok(sqlx::query_scalar::<_, Option<Millis>>(
            "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM notifications \
             WHERE state = 'pending' AND channel IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&channels).expect("a list of strings serialises"))
        .fetch_one(&self.read)
        .await?)
    }

    pub async fn notification_sent(&self, id: i64, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET state = 'sent', lease_until = NULL, sent_at = ? WHERE id = ?",
        )
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Marks several notifications sent in one transaction.
    pub async fn notifications_sent(&self, sent: &[(i64, Millis)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for (id, now) in sent {
            sqlx::query(
                "UPDATE notifications SET state = 'sent', lease_until = NULL, sent_at = ? \
                 WHERE id = ?",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or dead when that is `None`.
    pub async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
    ) -> Result<()> {
        match retry_at {
            Some(at) => sqlx::query(
                "UPDATE notifications SET lease_until = NULL, last_error = ?, next_attempt_at = ? \
                 WHERE id = ?",
            )
            .bind(error)
            .bind(at)
            .bind(id),
            None => sqlx::query(
                "UPDATE notifications SET state = 'dead', lease_until = NULL, last_error = ? \
                 WHERE id = ?",
            )
            .bind(error)
            .bind(id),
        }
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Puts a claimed notification back to wait until `at` without counting the attempt: its
    /// channel could not send anything (stopped for lack of credit or credentials).
    pub async fn notification_postponed(&self, id: i64, reason: &str, at: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET attempts = max(attempts - 1, 0), lease_until = NULL, \
             last_error = ?, next_attempt_at = ? WHERE id = ? AND state = 'pending'",
        )
        .bind(reason)
        .bind(at)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Gives back a claimed notification whose attempt was cut short by shutdown.
    pub async fn release_notification(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET lease_until = NULL WHERE id = ? AND state = 'pending'",
        )
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    pub async fn list_notifications(
        &self,
        state: Option<&str>,
        shipment_id: Option<i64>,
    ) -> Result<Vec<NotificationRow>> {
        Ok(sqlx::query_as::<_, NotificationRow>(
            "SELECT n.id, n.public_id, s.order_id, n.kind, n.channel, n.previous_status, n.status, \
                    n.state, n.attempts, n.next_attempt_at, n.lease_until, n.last_error, \
                    n.created_at, n.sent_at \
             FROM notifications n JOIN shipments s ON s.id = n.shipment_id \
             WHERE (?1 IS NULL OR n.state = ?1) AND (?2 IS NULL OR n.shipment_id = ?2) \
             ORDER BY n.id",
        )
        .bind(state)
        .bind(shipment_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// Requeues the given notifications (or every dead one) with a fresh set of attempts.
    /// Returns the ids requeued; rows already sent or being delivered are left alone.
    #[instrument(skip_all)]
    pub async fn requeue(&self, ids: Option<&[i64]>, now: Millis) -> Result<Vec<i64>> {
        let ids = ids.map(|ids| serde_json::to_string(ids).expect("ids serialise"));
        Ok(sqlx::query_scalar::<_, i64>(
            "UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at = ?1, \
                 lease_until = NULL \
             WHERE (?2 IS NULL AND state = 'dead') \
                OR (?2 IS NOT NULL AND id IN (SELECT value FROM json_each(?2)) \
                    AND (state = 'dead' OR (state = 'pending' AND lease_until IS NULL))) \
             RETURNING id",
        )
        .bind(now)
        .bind(ids)
        .fetch_all(&self.write)
        .await?)
    }

    /// Counts for the demo's summary and for tests: shipments per status, notifications per state.
    pub async fn counts(&self) -> Result<Counts> {
        let statuses = sqlx::query_as::<_, (String, i64)>(
            "SELECT status, count(*) FROM shipments GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.read)
        .await?;
        let states = sqlx::query_as::<_, (String, i64)>(
            "SELECT state, count(*) FROM notifications GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.read)
        .await?;
        let active =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM shipments WHERE active = 1")
                .fetch_one(&self.read)
                .await?;
        Ok(Counts {
            statuses,
            states,
            active,
        })
    }
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ProviderState {
    pub provider: String,
    #[serde(serialize_with = "ser_opt_time")]
    pub banned_until: Option<Millis>,
    pub ban_reason: Option<String>,
    #[serde(serialize_with = "ser_opt_time")]
    pub paused_until: Option<Millis>,
    pub pause_reason: Option<String>,
}

/// Polls of one provider with one result, over some span of time.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct PollCount {
    pub provider: String,
    pub result: String,
    pub count: i64,
}

/// A delivery channel that stopped itself.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ChannelState {
    pub channel: String,
    #[serde(serialize_with = "ser_time")]
    pub paused_until: Millis,
    pub reason: String,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct UnmappedRow {
    pub provider: String,
    pub value: String,
    pub count: i64,
    #[serde(serialize_with = "ser_time")]
    pub first_seen: Millis,
    #[serde(serialize_with = "ser_time")]
    pub last_seen: Millis,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ShipmentCount {
    pub provider: String,
    pub tier: String,
    pub status: String,
    pub active: bool,
    pub count: i64,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct NotificationCount {
    pub channel: String,
    pub state: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub shipments: Vec<ShipmentCount>,
    pub notifications: Vec<NotificationCount>,
    /// Shipments whose poll is due and not under way.
    pub due_now: i64,
    /// How late the most overdue of them is.
    pub lag_seconds: i64,
}

/// An import under way: see [`Db::begin_import`].
pub struct Import {
    tx: Transaction<'static, Sqlite>,
    now: Millis,
    added: usize,
}

impl Import {
    /// Adds a batch. On a duplicate order id or a refused row the error gives the index of the
    /// row at fault in `rows`; the import is then spoiled: drop it.
    pub async fn add(&mut self, rows: &[NewShipment]) -> Result<(), (usize, StorageError)> {
        for (i, new) in rows.iter().enumerate() {
            let done = sqlx::query(
                "INSERT INTO shipments (order_id, provider, tracking_no, carrier, tier, phone, \
                 email, sub_orders, next_poll_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.order_id)
            .bind(&new.provider)
            .bind(&new.tracking_no)
            .bind(&new.carrier)
            .bind(new.tier.as_str())
            .bind(&new.phone)
            .bind(&new.email)
            .bind(&new.sub_orders)
            .bind(self.now)
            .bind(self.now)
            .execute(&mut *self.tx)
            .await;
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
        self.tx.commit().await?;
        Ok(self.added)
    }
}

fn ser_opt_time<S: serde::Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub statuses: Vec<(String, i64)>,
    pub states: Vec<(String, i64)>,
    pub active: i64,
}

impl Counts {
    pub fn state(&self, state: &str) -> i64 {
        self.states
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// The body of [`Db::record_poll`], inside a write transaction the caller commits.
async fn record_poll_in(
    tx: &mut Transaction<'static, Sqlite>,
    shipment_id: i64,
    poll: &impl Decide,
) -> Result<Recorded> {
    // Read inside the write transaction: the CLI or another tool may have changed the row
    // while the poll was in flight.
    let Some(current) = sqlx::query_as::<_, ShipmentRow>(AssertSqlSafe(format!(
        "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE id = ?"
    )))
    .bind(shipment_id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(Recorded::default());
    };
    let write = poll.decide(&current);
    if write.shipment == ShipmentWrite::Skip {
        return Ok(Recorded::default());
    }
    let new_events = insert_events(tx, shipment_id, write.events).await?;
    let mut change = None;
    let mut queued = Vec::new();
    match &write.shipment {
        ShipmentWrite::Skip => {}
        ShipmentWrite::Change {
            previous,
            status,
            transition,
            keep_polling,
            details,
        } => {
            sqlx::query(
                "UPDATE shipments SET status = ?, raw_status = ?, transitions = ?, active = ?, \
                 error = NULL, status_changed_at = ?, last_polled_at = ?, next_poll_at = ?, \
                 claimed_until = NULL, \
                 last_event_at = coalesce(?, last_event_at), \
                 tracking_no = coalesce(tracking_no, ?), carrier = coalesce(carrier, ?) \
                 WHERE id = ?",
            )
            .bind(status.as_str())
            .bind(details.raw_status)
            .bind(transition)
            .bind(keep_polling)
            .bind(write.now)
            .bind(write.now)
            .bind(write.next_poll_at)
            .bind(details.last_event_at)
            .bind(details.tracking_no)
            .bind(details.carrier)
            .bind(shipment_id)
            .execute(&mut **tx)
            .await?;
            change = Some((*previous, *status));
            queued = insert_outbox(tx, shipment_id, &write.outbox).await?;
        }
        ShipmentWrite::Refresh(details) => {
            sqlx::query(
                "UPDATE shipments SET raw_status = ?, error = NULL, last_polled_at = ?, \
                 next_poll_at = ?, claimed_until = NULL, last_event_at = coalesce(?, last_event_at), \
                 tracking_no = coalesce(tracking_no, ?), carrier = coalesce(carrier, ?) \
                 WHERE id = ?",
            )
            .bind(details.raw_status)
            .bind(write.now)
            .bind(write.next_poll_at)
            .bind(details.last_event_at)
            .bind(details.tracking_no)
            .bind(details.carrier)
            .bind(shipment_id)
            .execute(&mut **tx)
            .await?;
        }
        ShipmentWrite::Schedule => {
            sqlx::query(
                "UPDATE shipments SET last_polled_at = ?, next_poll_at = ?, error = NULL, \
                 claimed_until = NULL WHERE id = ?",
            )
            .bind(write.now)
            .bind(write.next_poll_at)
            .bind(shipment_id)
            .execute(&mut **tx)
            .await?;
        }
    }
    for value in write.unmapped {
        sqlx::query(
            "INSERT INTO unmapped (provider, value, count, first_seen, last_seen) \
             VALUES (?, ?, 1, ?, ?) ON CONFLICT (provider, value) DO UPDATE SET \
             count = count + 1, last_seen = excluded.last_seen",
        )
        .bind(&current.provider)
        .bind(value)
        .bind(write.now)
        .bind(write.now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Recorded {
        change,
        new_events,
        queued,
        applied: true,
    })
}

/// Adds the events not stored yet, all in one statement (a trace repeats its whole history
/// at every poll); returns how many were new.
async fn insert_events(
    tx: &mut Transaction<'static, Sqlite>,
    shipment_id: i64,
    events: &[TraceEvent],
) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let rows: Vec<(i64, &str, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e.time.timestamp_millis(),
                e.description.as_str(),
                e.location.as_deref(),
                e.raw_code.as_deref(),
            )
        })
        .collect();
    let rows = serde_json::to_string(&rows).expect("events serialise");
    // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the INSERT.
    Ok(sqlx::query(
        "INSERT INTO events (shipment_id, time, description, location, raw_code) \
         SELECT ?, value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) \
         WHERE true ON CONFLICT (shipment_id, time, description) DO NOTHING",
    )
    .bind(shipment_id)
    .bind(rows)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Inserts outbox rows of one shipment inside the transaction that records their change, one
/// statement a row. A row whose key (shipment, kind, transition, channel) exists already is left
/// alone, so a change replayed after a crash is never announced twice. Returns the rows inserted
/// to be sent (not the skipped ones): channel and public id.
pub(crate) async fn insert_outbox(
    tx: &mut Transaction<'static, Sqlite>,
    shipment_id: i64,
    rows: &[OutboxRow],
) -> Result<Vec<(ChannelKind, String)>> {
    let mut queued = Vec::new();
    for row in rows {
        let state = if row.skipped.is_some() {
            "skipped"
        } else {
            "pending"
        };
        let inserted = sqlx::query(
            "INSERT INTO notifications (public_id, shipment_id, kind, transition, channel, \
             previous_status, status, payload, recipient, state, last_error, \
             next_attempt_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (shipment_id, kind, transition, channel) DO NOTHING",
        )
        .bind(&row.public_id)
        .bind(shipment_id)
        .bind(row.kind.as_str())
        .bind(row.transition)
        .bind(row.channel.as_str())
        .bind(row.previous.as_str())
        .bind(row.status.as_str())
        .bind(&row.payload)
        .bind(&row.recipient)
        .bind(state)
        .bind(row.skipped)
        .bind(row.next_attempt_at)
        .bind(row.created_at)
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() == 1 && row.skipped.is_none() {
            queued.push((row.channel, row.public_id.clone()));
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_database_itself_are_outages() {
        // SQLITE_FULL, SQLITE_IOERR_WRITE (778), SQLITE_READONLY, SQLITE_BUSY, SQLITE_CANTOPEN.
        for code in ["13", "778", "8", "5", "14"] {
            assert!(is_outage_code(code), "{code}");
        }
        // SQLITE_CONSTRAINT_TRIGGER (1811), SQLITE_CONSTRAINT_CHECK (275), SQLITE_MISMATCH,
        // SQLITE_ERROR.
        for code in ["1811", "275", "20", "1"] {
            assert!(!is_outage_code(code), "{code}");
        }
        assert!(is_outage_code("not a number"));
        assert!(!StorageError::Rejected("x".into()).is_outage());
        assert!(!StorageError::Sql(sqlx::Error::RowNotFound).is_outage());
        assert!(StorageError::Sql(sqlx::Error::PoolTimedOut).is_outage());
    }

    #[test]
    fn the_select_list_guards_every_column_it_reads() {
        let list = SHIPMENT_COLUMNS.to_string();
        for (name, _, _) in READ_COLUMNS {
            assert!(list.contains(&format!("AS {name}")), "{name}");
            assert!(
                list.contains(&format!("WHEN typeof({name}) NOT IN")),
                "{name}"
            );
        }
        assert!(list.ends_with("END AS type_error"));
    }
}
