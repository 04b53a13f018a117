//! The store on PostgreSQL (issue 17): the same named operations as SQLite's files beside this
//! folder, in PostgreSQL's SQL, for several daemons sharing one database. One file here per file
//! there (`shipments.rs` for `../shipments.rs`, …), so that a change to an operation is made in
//! both places side by side.
//!
//! What differs from SQLite, and why:
//! - Many connections write at once, so there is no single write connection: every transaction
//!   that reads and then writes locks what it reads (`FOR UPDATE`), and claims skip rows another
//!   daemon holds (`FOR UPDATE SKIP LOCKED`), so that daemons take disjoint work.
//! - Column types refuse a value of the wrong type, so rows read without SQLite's guarded select
//!   list; `active` is a BIGINT 0/1 as in SQLite, read as a bool.
//! - A rule a row breaks is named by its CHECK; [`crate::storage::rules::broken_rule`] turns it
//!   into the line SQLite says.

mod listing;
mod maintenance;
pub(super) mod ops;
mod outbox;
mod polls;
mod quota;
mod recheck;
mod shipments;
mod subscriptions;
pub(super) mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

pub(super) use super::*;

/// PostgreSQL's connections, shared by every task of the process.
#[derive(Clone)]
pub(crate) struct Pg {
    pool: PgPool,
}

/// How many connections one process opens at most: the dispatcher's and the sender's claims and
/// commits, the API and the admin commands' reads. A few daemons stay well under PostgreSQL's
/// default `max_connections` (100).
const MAX_CONNECTIONS: u32 = 8;

/// A pooled connection idle for less than this is handed out without a test.
const RECENTLY_USED: Duration = Duration::from_secs(1);

/// What opening does with the schema it finds, as on SQLite for each kind of command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Schema {
    /// Create the tables, or bring them up to date (`run`, `add`, `import`, `copy`'s target).
    Migrate,
    /// Bring existing tables up to date; a database without them is refused as missing (the
    /// commands that change rows already there: `remove`, `retry`, `set-tier`, …).
    MigrateExisting,
    /// Use them as they are; missing or older tables are refused (the commands that only read).
    AsItIs,
}

impl Pg {
    /// Connects to the server at `url` and does with its schema what `schema` says: a database
    /// without shipwatch's tables is [`StorageError::Missing`] and, to a command that only reads,
    /// one older than the binary is [`StorageError::Outdated`].
    pub(super) async fn connect(url: &str, shown: &str, schema: Schema) -> Result<Pg> {
        let open_err = |source| StorageError::Open {
            path: shown.to_owned(),
            error: source,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(open_err)?
            .application_name("shipwatch");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            // sqlx tests every connection before handing it out, a round trip on each
            // operation (0.13 ms on loopback, more on two cores the server shares). A
            // connection used a moment ago is handed out as it is (should the server have
            // dropped it since, that one operation fails as the outage it is, and the pool,
            // which tests each connection it takes back, closes it); one idle longer, as after
            // a restart or a failover of the server, is tested first and replaced if it fails.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    Ok(meta.idle_for < RECENTLY_USED || sqlx::Connection::ping(conn).await.is_ok())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_err)?;
        if schema != Schema::Migrate {
            let (have, want) = match Pg::schema_version(&pool).await {
                Ok(version) => version,
                Err(e) => {
                    pool.close().await;
                    return Err(open_err(e));
                }
            };
            let refused = if have == 0 {
                Some(StorageError::Missing {
                    path: shown.to_owned(),
                })
            } else if have < want && schema == Schema::AsItIs {
                Some(StorageError::Outdated {
                    path: shown.to_owned(),
                    have,
                    want,
                })
            } else {
                None
            };
            if let Some(refused) = refused {
                pool.close().await;
                return Err(refused);
            }
        }
        if schema != Schema::AsItIs {
            // The migrator takes PostgreSQL's advisory lock, so that daemons starting together
            // migrate one after the other.
            if let Err(source) = POSTGRES_MIGRATOR.run(&pool).await {
                pool.close().await;
                return Err(StorageError::Migrate {
                    path: shown.to_owned(),
                    error: source,
                });
            }
        }
        Ok(Pg { pool })
    }

    /// How many of the binary's migrations the database has applied, and how many there are.
    async fn schema_version(pool: &PgPool) -> Result<(usize, usize), sqlx::Error> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(pool)
                .await
            {
                Ok(applied) => applied,
                // No such table: nothing applied.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
                Err(e) => return Err(e),
            };
        Ok(crate::storage::open::schema_of(
            &POSTGRES_MIGRATOR,
            &applied,
        ))
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// A transaction at PostgreSQL's default isolation (read committed); what it reads and then
    /// writes it locks with `FOR UPDATE`.
    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The select list of a shipment row on PostgreSQL: the same names as SQLite's guarded list,
/// with `active` read as a bool and no `type_error` (the column types let no misfit in).
pub(super) const PG_SHIPMENT_COLUMNS: &str = "id, order_id, provider, tracking_no, carrier, tier, \
     phone, email, openid, status, raw_status, (active = 1) AS active, error, transitions, \
     next_poll_at, last_polled_at, last_event_at, status_changed_at, created_at, sub_orders, \
     events_digest, NULL::TEXT AS type_error";
