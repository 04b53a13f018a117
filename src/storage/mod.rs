//! The store's SQL lives in this folder. The rest of the program calls named operations, each
//! one short transaction; nothing holds a transaction across network I/O.
//!
//! SQLite allows one writer at a time, and the admin CLI and outside tools write the same file
//! while the daemon runs. So: WAL, a busy timeout, one write connection per process, and every
//! transaction that reads before it writes starts with `BEGIN IMMEDIATE`, which takes the write
//! lock up front (a deferred transaction that upgrades fails at once with "database is locked" when
//! another process wrote in between, whatever the busy timeout).
//!
//! `open` opens the database (to write, to change existing rows, or only to read) and takes the
//! daemon's lock. This file holds what every kind of data shares: the errors, the shipment row
//! with its guarded select list and decoding. The operations are split by the data they keep:
//! `shipments`, `polls`, `outbox`, `ops` (provider and channel state, counts) and `maintenance`
//! (the scheduled sweeps, pruning and the WAL checkpoint).

/// The first line of every operation: on PostgreSQL it returns what the PostgreSQL side does;
/// on SQLite it gives the pools, for the rest of the body.
macro_rules! on_postgres {
    ($self:ident, $pg:ident => $call:expr) => {
        match &$self.engine {
            $crate::storage::Engine::Sqlite(lite) => lite,
            $crate::storage::Engine::Postgres($pg) => return $call.await,
        }
    };
}

pub mod copy;
mod listing;
mod location;
mod maintenance;
mod open;
mod ops;
mod outbox;
#[cfg(test)]
mod plans;
mod polls;
mod postgres;
mod quota;
pub mod receipts;
mod recheck;
pub mod rules;
mod shipments;
mod subscriptions;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use sqlx::sqlite::SqlitePool;
use sqlx::{FromRow, Row, Sqlite, Transaction};

use crate::clock::{Millis, to_rfc3339};
use crate::domain::{Email, InvalidContact, OpenId, Phone, Status, Tier};

pub use listing::{ShipmentFilter, ShipmentPage};
pub use location::{Location, LocationError};
pub use maintenance::{Checkpointed, Pruned, Sweep, SweepWrite, UnreachablePoll};
pub use open::POSTGRES_MIGRATOR;
pub use ops::{
    ChannelState, Counts, DAEMON_ALIVE_WITHIN, DAEMON_HEARTBEAT, DAEMON_PRUNED_AFTER,
    DaemonIdentity, DaemonRow, GaugeCounts, Holds, MaintenanceLock, NotificationCount,
    OutboxCounts, ProviderState, ShipmentCount, Stats, StatusCounts,
};
pub use outbox::{
    ClaimedNotification, NotificationKind, NotificationRow, NotificationView, OutboxRow,
};
pub use polls::{
    Decide, Details, EventRow, PollCount, PollWrite, Recorded, ShipmentWrite, UnmappedRow,
};
pub use quota::{DbQuota, QuotaGrant};
pub use recheck::{Invalid, InvalidKind, RecheckBatch, RecheckWrite};
pub use shipments::{
    CreateError, Created, Differs, Import, NewShipment, ShipmentUpdate, ShipmentView,
};
pub use subscriptions::{CallbackNote, SubscriptionRow, SubscriptionState};
pub use writer::{Handed, NotificationClaim, PollJob, Received, ShipmentClaim, Writer};

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
    /// The database's error is part of the text and not a `source`: a reporter that walks the
    /// chain would repeat it in sqlx's words (see [`Shown`]).
    #[error("cannot open database {path}: {}", Shown(error))]
    Open { path: String, error: sqlx::Error },
    /// For the commands that need rows already there: they never create the file.
    #[error("no database at {path}; `shipwatch run` or `add` creates it")]
    Missing { path: String },
    /// Opened read-only, the database cannot be migrated: a command that writes does that.
    #[error(
        "database {path} was made by an older shipwatch (schema {have} of {want}); `shipwatch run` or any command that writes upgrades it"
    )]
    Outdated {
        path: String,
        have: usize,
        want: usize,
    },
    #[error("cannot bring database {path} up to date: {}", ShownMigrate(error))]
    Migrate {
        path: String,
        error: sqlx::migrate::MigrateError,
    },
    #[error("order {0} is already tracked")]
    Duplicate(String),
    #[error("no shipment with order id {0}")]
    NoSuchOrder(String),
    #[error("database refused the row: {0}")]
    Rejected(String),
    #[error("database error: {}", Shown(.0))]
    Sql(sqlx::Error),
    #[error("the transaction holding this write was cut short; it is retried at the next poll")]
    Interrupted,
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        StorageError::Sql(error)
    }
}

/// An sqlx error as an operator reads it. PostgreSQL's read as SQLite's do, the code, then the
/// server's message (`(code: 42501) permission denied for table shipments`): sqlx's own text ends
/// them with ` at line N`, where N is a line of the server's C source, which reads as a line of
/// something the operator wrote.
struct Shown<'a>(&'a sqlx::Error);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let sqlx::Error::Database(db) = self.0
            && let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        {
            return write!(
                f,
                "error returned from database: (code: {}) {}",
                pg.code(),
                pg.message()
            );
        }
        self.0.fmt(f)
    }
}

/// A migration's failure, its database error read as [`Shown`] says.
struct ShownMigrate<'a>(&'a sqlx::migrate::MigrateError);

impl std::fmt::Display for ShownMigrate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sqlx::migrate::MigrateError;
        match self.0 {
            MigrateError::Execute(e) => write!(f, "while executing migrations: {}", Shown(e)),
            MigrateError::ExecuteMigration(e, version) => {
                write!(f, "while executing migration {version}: {}", Shown(e))
            }
            other => other.fmt(f),
        }
    }
}

/// Why the daemon cannot take its lock on the database (see [`Db::lock_for_daemon`]).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open {}: {error}", path.display())]
    Open {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `database` is the path the lock is keyed on, every link resolved; `pid` is what the
    /// holder wrote into the lock file, if it could be read.
    #[error(
        "another shipwatch{} is running on {}; stop it first",
        pid.map_or_else(String::new, |pid| format!(" (pid {pid})")),
        database.display()
    )]
    Held { database: PathBuf, pid: Option<u32> },
    #[error("cannot lock {}: {error}", path.display())]
    Lock {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// True for an SQLite result code (primary or extended, as text) that says the database itself
/// failed; an unreadable code counts as a failure, to be safe.
fn is_outage_code(code: &str) -> bool {
    code.parse::<i64>()
        .map_or(true, |code| OUTAGE_CODES.contains(&(code & 0xff)))
}

/// True for a PostgreSQL SQLSTATE that says the server or the connection failed, not the row:
/// class 08 (connection), 25 (transaction state), 40 (rolled back: serialization, deadlock),
/// 53 (insufficient resources: disk full, out of memory, too many connections), 57 (operator
/// intervention: shutdown, cancelled), 58 (system error: I/O) and XX (internal error); the
/// privilege error 42501 too, as SQLite's SQLITE_PERM is one
/// (https://www.postgresql.org/docs/current/errcodes-appendix.html). A broken rule (class 23) or a
/// bad value (class 22) is the row's fault.
fn is_postgres_outage(code: &str) -> bool {
    code == "42501"
        || ["08", "25", "40", "53", "57", "58", "XX"]
            .iter()
            .any(|class| code.starts_with(class))
}

impl StorageError {
    /// The error as the database put it, without the store's own prefix (`database error: `).
    pub fn in_its_own_words(&self) -> String {
        match self {
            StorageError::Sql(e) => Shown(e).to_string(),
            other => other.to_string(),
        }
    }

    /// True when the database itself failed (I/O, a full disk, a read-only or locked file, no
    /// connection): an outage. A value that could not be read, or a row the database refused, is
    /// that row's fault, and the database is fine.
    pub fn is_outage(&self) -> bool {
        match self {
            StorageError::Duplicate(_)
            | StorageError::NoSuchOrder(_)
            | StorageError::Rejected(_) => false,
            StorageError::Open { .. }
            | StorageError::Missing { .. }
            | StorageError::Outdated { .. }
            | StorageError::Migrate { .. }
            | StorageError::Interrupted => true,
            StorageError::Sql(error) => match error {
                sqlx::Error::Database(db)
                    if db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .is_some() =>
                {
                    db.code().is_none_or(|code| is_postgres_outage(&code))
                }
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

/// A shipment row as stored, its values parsed once, when it is read.
#[derive(Debug, Clone)]
pub struct ShipmentRow {
    pub id: i64,
    pub order_id: String,
    pub provider: String,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    /// The table's CHECKs admit only the canonical names, so a value that is not one is a row
    /// that cannot be read, flagged as such.
    pub tier: Tier,
    /// Blank reads as none. So does a value that is not a phone number, which another program
    /// may have written: `invalid_contact` then says why.
    pub phone: Option<Phone>,
    /// Blank reads as none, and so does text that is not an address (see `invalid_contact`).
    pub email: Option<Email>,
    /// The buyer's OpenID in the shop's WeChat official account; blank reads as none, and so
    /// does text that is not one (see `invalid_contact`).
    pub openid: Option<OpenId>,
    pub status: Status,
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
    /// The digest of the trace events last written for this shipment (`track::events_digest`);
    /// `-1` for events written before digests were kept (marked by migration 0021), `None` when
    /// none are kept or their list is unknown. The prune goes by it (see `Db::prune`).
    pub events_digest: Option<i64>,
    /// Set when a column holds a value of the wrong storage class (a REAL in `transitions`, a
    /// BLOB in `carrier`), stored before the schema refused them: the row is then flagged invalid
    /// by itself, and the column reads as a harmless stand-in meanwhile.
    pub type_error: Option<String>,
    /// Set when the phone, the email or the openid column holds a value that does not parse
    /// (the first of them, when more do not): the row is then flagged invalid by itself, like
    /// `type_error`, instead of failing the read of its neighbours.
    pub invalid_contact: Option<InvalidContact>,
}

impl ShipmentRow {
    /// Flagged invalid: no longer polled, with the reason in `error`, and not because its parcel
    /// arrived, came back or expired.
    pub fn is_invalid(&self) -> bool {
        !self.active && self.error.is_some() && !self.status.is_terminal()
    }
}

/// Written out rather than derived: a contact that does not parse must leave the row readable,
/// and sqlx's `try_from` would fail the row (nor can it fill an `Option`). One reading for both
/// engines: SQLite's guarded select list and PostgreSQL's give the same columns.
impl<'r, R: Row> FromRow<'r, R> for ShipmentRow
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> bool: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        let phone = contact(row, "phone", Phone::parse)?;
        let email = contact(row, "email", Email::parse)?;
        let openid = contact(row, "openid", OpenId::parse)?;
        let invalid_contact = match (&phone, &email, &openid) {
            (Err(e), _, _) => Some(InvalidContact::Phone(e.clone())),
            (_, Err(e), _) => Some(InvalidContact::Email(e.clone())),
            (_, _, Err(e)) => Some(InvalidContact::OpenId(e.clone())),
            _ => None,
        };
        Ok(ShipmentRow {
            id: row.try_get("id")?,
            order_id: row.try_get("order_id")?,
            provider: row.try_get("provider")?,
            tracking_no: row.try_get("tracking_no")?,
            carrier: row.try_get("carrier")?,
            tier: parsed(row, "tier")?,
            phone: phone.ok().flatten(),
            email: email.ok().flatten(),
            openid: openid.ok().flatten(),
            status: parsed(row, "status")?,
            raw_status: row.try_get("raw_status")?,
            active: row.try_get("active")?,
            error: row.try_get("error")?,
            transitions: row.try_get("transitions")?,
            next_poll_at: row.try_get("next_poll_at")?,
            last_polled_at: row.try_get("last_polled_at")?,
            last_event_at: row.try_get("last_event_at")?,
            status_changed_at: row.try_get("status_changed_at")?,
            created_at: row.try_get("created_at")?,
            sub_orders: row.try_get("sub_orders")?,
            events_digest: row.try_get("events_digest")?,
            type_error: row.try_get("type_error")?,
            invalid_contact,
        })
    }
}

/// A text column parsed into a domain value; a value that does not parse fails the row, as
/// sqlx's own decoding would.
fn parsed<R: Row, T>(row: &R, column: &str) -> sqlx::Result<T>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    let text: String = row.try_get(column)?;
    T::try_from(text).map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    })
}

/// A contact column: blank is none, and a value that does not parse is returned apart, so that
/// the row can still be read and flagged by itself.
fn contact<R: Row, T, E>(
    row: &R,
    column: &str,
    parse: fn(&str) -> std::result::Result<T, E>,
) -> sqlx::Result<std::result::Result<Option<T>, E>>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    let text: Option<String> = row.try_get(column)?;
    Ok(text
        .filter(|text| !text.trim().is_empty())
        .map(|text| parse(&text))
        .transpose())
}

fn ser_time<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_rfc3339(*ms))
}

fn ser_opt_time<S: serde::Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// The daemon's handle on the database, SQLite's file or a PostgreSQL server. Its pools are
/// private to this folder: the rest of the program reaches the database only through the named
/// operations, which each engine carries out in its own SQL.
#[derive(Clone)]
pub struct Db {
    engine: Engine,
    /// The daemon's one writer, started on first use (see [`Db::writer`]).
    writer: writer::WriterCell,
    /// The daemon's delivery receipts, once [`Db::keep_receipts`] has started them.
    receipts: Arc<OnceLock<receipts::Receipts>>,
}

/// The engine behind a [`Db`].
#[derive(Clone)]
enum Engine {
    Sqlite(Lite),
    Postgres(postgres::Pg),
}

/// SQLite's pools: one connection that writes, a few that read.
#[derive(Clone)]
struct Lite {
    write: SqlitePool,
    read: SqlitePool,
}

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
    ("openid", Class::Text, true),
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
struct ShipmentColumns;

const SHIPMENT_COLUMNS: ShipmentColumns = ShipmentColumns;

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
        // Typed by triggers since the column was made (migrations/0016_events_digest.sql).
        f.write_str(" END AS type_error, events_digest")
    }
}

/// Decodes rows one by one: a row that still cannot be read (text that is not UTF-8) is
/// returned apart, by id with the reason, instead of failing its neighbours.
fn decode_shipments<R: Row>(rows: Vec<R>) -> (Vec<ShipmentRow>, Vec<(i64, String)>)
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> bool: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
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

impl Db {
    fn from_engine(engine: Engine) -> Db {
        Db {
            engine,
            writer: writer::WriterCell::default(),
            receipts: Arc::default(),
        }
    }

    pub async fn close(&self) {
        match &self.engine {
            Engine::Sqlite(lite) => {
                lite.read.close().await;
                lite.write.close().await;
            }
            Engine::Postgres(pg) => pg.close().await,
        }
    }

    /// SQLite's pools, for the unit tests that write rows as another program would.
    #[cfg(test)]
    fn lite(&self) -> &Lite {
        match &self.engine {
            Engine::Sqlite(lite) => lite,
            Engine::Postgres(_) => panic!("a SQLite test opened PostgreSQL"),
        }
    }
}

impl Lite {
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }
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
        // Connection lost, disk full, admin shutdown, deadlock; then a CHECK, a unique key, a
        // value too long.
        for code in ["08006", "53100", "57P01", "40P01"] {
            assert!(is_postgres_outage(code), "{code}");
        }
        for code in ["23514", "23505", "22001"] {
            assert!(!is_postgres_outage(code), "{code}");
        }
        assert!(!StorageError::Rejected("x".into()).is_outage());
        assert!(!StorageError::Sql(sqlx::Error::RowNotFound).is_outage());
        assert!(StorageError::Sql(sqlx::Error::PoolTimedOut).is_outage());
    }

    /// The errors SQLite itself returns, not only their codes: a broken rule is the row's fault,
    /// a database that cannot be written is an outage.
    #[tokio::test]
    async fn a_refused_row_is_not_an_outage_and_a_read_only_database_is() {
        use sqlx::Connection as _;
        use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errors.db");
        let options = SqliteConnectOptions::new().filename(&file);
        let mut rw = SqliteConnection::connect_with(&options.clone().create_if_missing(true))
            .await
            .unwrap();
        // What a statement on `conn` fails with, as the store would return it.
        async fn refused(conn: &mut SqliteConnection, sql: &'static str) -> StorageError {
            StorageError::Sql(sqlx::raw_sql(sql).execute(conn).await.unwrap_err())
        }
        sqlx::raw_sql("CREATE TABLE t (k TEXT PRIMARY KEY); INSERT INTO t VALUES ('a')")
            .execute(&mut rw)
            .await
            .unwrap();
        let duplicate = refused(&mut rw, "INSERT INTO t VALUES ('a')").await;
        assert!(!duplicate.is_outage(), "{duplicate}");
        let mut ro = SqliteConnection::connect_with(&options.read_only(true))
            .await
            .unwrap();
        let read_only = refused(&mut ro, "INSERT INTO t VALUES ('b')").await;
        assert!(read_only.is_outage(), "{read_only}");
    }

    #[tokio::test]
    async fn contacts_are_parsed_when_read_and_a_bad_one_is_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("contacts.db"), Synchronous::Normal)
            .await
            .unwrap();
        // (order id, phone, email, openid) as another program may write them.
        let rows = [
            (
                "1",
                Some("+86 138-1234-5678"),
                Some(" zhang@shop.example "),
                Some("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
            ),
            ("2", Some("138-1234-567"), Some("zhang.wei at shop"), None),
            ("3", Some(" "), Some("zhang.wei at shop"), Some("o6 bmj")),
            ("4", Some(""), None, Some(" ")),
            ("5", None, None, None),
            ("6", None, None, Some("o6_bmjrPTlm6 2sgVt7hMZOPfL2M")),
        ];
        for (order_id, phone, email, openid) in rows {
            sqlx::query(
                "INSERT INTO shipments (order_id, provider, phone, email, openid) VALUES (?, 't', ?, ?, ?)",
            )
            .bind(order_id)
            .bind(phone)
            .bind(email)
            .bind(openid)
            .execute(&db.lite().write)
            .await
            .unwrap();
        }
        let read = db
            .shipments_page(&ShipmentFilter::default())
            .await
            .unwrap()
            .rows;
        let seen: Vec<_> = read
            .iter()
            .map(|row| {
                (
                    row.order_id.as_str(),
                    row.phone.as_ref().map(Phone::as_str),
                    row.email.as_ref().map(Email::as_str),
                    row.openid.as_ref().map(OpenId::as_str),
                    row.invalid_contact.as_ref().map(ToString::to_string),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "1",
                    Some("13812345678"),
                    Some("zhang@shop.example"),
                    Some("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
                    None
                ),
                (
                    "2",
                    None,
                    None,
                    None,
                    Some(
                        "phone \"138****-567\" is not a mainland mobile number (11 digits starting with 13-19, optionally +86)".to_owned()
                    )
                ),
                (
                    "3",
                    None,
                    None,
                    None,
                    Some(
                        "email \"zha****shop\" is not an email address (like name@example.com)"
                            .to_owned()
                    )
                ),
                ("4", None, None, None, None),
                ("5", None, None, None, None),
                (
                    "6",
                    None,
                    None,
                    None,
                    Some(
                        "openid \"o6_****fL2M\" is not a WeChat OpenID (1 to 128 letters, digits, '-' or '_', as the official account gives it)".to_owned()
                    )
                ),
            ]
        );
        db.close().await;
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
        assert!(list.ends_with("END AS type_error, events_digest"));
    }
}
