//! `shipwatch copy` (issue 17): every row of one database into another, empty one, SQLite to
//! PostgreSQL or back, so that a shop that outgrows one machine keeps its history.
//!
//! The copy reads the tables itself, by [`TABLES`], rather than through the store's operations:
//! it must carry every column as stored (leases, counters, the outbox's states) and nothing else.
//! It reads in chunks ordered by each table's key, so memory stays bounded whatever the size,
//! from one snapshot of the source; it writes the whole copy in one transaction on the target,
//! so that a failure (a row the target refuses, a check that does not agree) leaves the target
//! as empty as it was. Before that transaction commits, the counts of every table and a sample
//! of rows spread over each table are compared between the two.

use std::fmt;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Postgres, Row, Sqlite, Transaction};

use super::rules::broken_rule;
use super::{Db, Engine, StorageError};

mod tables;

use tables::NOT_COPIED;
pub use tables::{Kind, TABLES, Table};

/// Rows read and written at a time: a few statements per thousand rows, and bounded memory.
const CHUNK: usize = 2000;

/// Rows compared between source and target per table, besides the first and the last.
const SAMPLE: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "{target} is not empty ({table} holds {rows} rows); copy writes only into an empty database"
    )]
    NotEmpty {
        target: String,
        table: &'static str,
        rows: i64,
    },
    #[error("{side} has {what} that this version does not copy; use the shipwatch that made it")]
    Unknown { side: String, what: String },
    #[error("cannot copy {table} row {key}: {reason}; nothing was written")]
    Refused {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("the copy does not agree with its source: {0}; nothing was written")]
    Differs(String),
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> CopyError {
        CopyError::Storage(StorageError::Sql(e))
    }
}

/// What one table held, for the printout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    pub rows: i64,
    /// Rows compared column by column between the two sides.
    pub sampled: usize,
}

/// A value as both engines hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Integer(i64),
    Text(String),
}

type Values = Vec<Value>;

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(n) => write!(f, "{n}"),
            Value::Text(text) => write!(f, "{text:?}"),
        }
    }
}

/// A row's key as the refusal names it: `id 7`, `(provider, value) ("top", "X")`.
fn shown_key(table: &Table, key: &[Value]) -> String {
    if let ([name], [value]) = (table.key, key) {
        return format!("{name} {value}");
    }
    let values: Vec<String> = key.iter().map(ToString::to_string).collect();
    format!("({}) ({})", table.key.join(", "), values.join(", "))
}

/// The key's values of a row (the key's columns come first).
fn key_of<'v>(table: &Table, row: &'v [Value]) -> &'v [Value] {
    &row[..table.key.len()]
}

fn column_kind(table: &Table, name: &str) -> Kind {
    table
        .columns
        .iter()
        .find(|(column, _)| *column == name)
        .map_or(Kind::Text, |(_, kind)| *kind)
}

/// One side's transaction: the source's snapshot, or the target's one writing transaction.
enum Side {
    Lite(Transaction<'static, Sqlite>),
    Pg(Transaction<'static, Postgres>),
}

/// Which rows a select takes.
enum Filter<'a> {
    /// The first ones in key order.
    First,
    /// Those after this key, in key order (the next chunk).
    After(&'a [Value]),
    /// The one with this key.
    Key(&'a [Value]),
    /// The first one whose (integer) key is at least this.
    AtLeast(i64),
    /// The one at this position in key order.
    Offset(i64),
}

impl Side {
    fn placeholder(&self, n: usize) -> String {
        match self {
            Side::Lite(_) => format!("?{n}"),
            Side::Pg(_) => format!("${n}"),
        }
    }

    /// The select list: on SQLite each column with its storage class, which the copy checks
    /// itself, as another program may have stored a value of the wrong type.
    fn select_list(&self, table: &Table) -> String {
        let columns = table.columns.iter().map(|(name, _)| match self {
            Side::Lite(_) => format!("\"{name}\", typeof(\"{name}\")"),
            Side::Pg(_) => format!("\"{name}\""),
        });
        columns.collect::<Vec<_>>().join(", ")
    }

    async fn rows(
        &mut self,
        table: &'static Table,
        filter: Filter<'_>,
        limit: usize,
    ) -> Result<Vec<Values>, CopyError> {
        let keys = table.key.join(", ");
        let mut binds: Vec<(Value, Kind)> = Vec::new();
        let mut offset = 0;
        let condition = match filter {
            Filter::First | Filter::Offset(_) => String::new(),
            Filter::After(key) | Filter::Key(key) => {
                let mut places = Vec::new();
                for (name, value) in table.key.iter().zip(key) {
                    binds.push((value.clone(), column_kind(table, name)));
                    places.push(self.placeholder(binds.len()));
                }
                if matches!(filter, Filter::Key(_)) {
                    let each: Vec<String> = table
                        .key
                        .iter()
                        .zip(&places)
                        .map(|(name, place)| format!("\"{name}\" = {place}"))
                        .collect();
                    format!("WHERE {}", each.join(" AND "))
                } else {
                    format!("WHERE ({keys}) > ({})", places.join(", "))
                }
            }
            Filter::AtLeast(from) => {
                binds.push((Value::Integer(from), Kind::Integer));
                format!("WHERE {keys} >= {}", self.placeholder(1))
            }
        };
        if let Filter::Offset(n) = filter {
            offset = n;
        }
        let sql = format!(
            "SELECT {} FROM {} {condition} ORDER BY {keys} LIMIT {limit} OFFSET {offset}",
            self.select_list(table),
            table.name
        );
        match self {
            Side::Lite(tx) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (value, _) in binds {
                    query = match value {
                        Value::Null => query.bind(None::<i64>),
                        Value::Integer(n) => query.bind(n),
                        Value::Text(text) => query.bind(text),
                    };
                }
                let rows = query.fetch_all(&mut **tx).await?;
                rows.iter().map(|row| lite_values(table, row)).collect()
            }
            Side::Pg(tx) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (value, kind) in binds {
                    query = match (value, kind) {
                        (Value::Null, Kind::Integer) => query.bind(None::<i64>),
                        (Value::Null, Kind::Text) => query.bind(None::<String>),
                        (Value::Integer(n), _) => query.bind(n),
                        (Value::Text(text), _) => query.bind(text),
                    };
                }
                let rows = query.fetch_all(&mut **tx).await?;
                rows.iter().map(|row| pg_values(table, row)).collect()
            }
        }
    }

    async fn count(&mut self, table: &Table) -> Result<i64, CopyError> {
        self.count_named(table.name).await
    }

    async fn count_named(&mut self, table: &str) -> Result<i64, CopyError> {
        let sql = format!("SELECT count(*) FROM \"{}\"", table.replace('"', "\"\""));
        Ok(match self {
            Side::Lite(tx) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut **tx)
                    .await?
            }
            Side::Pg(tx) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut **tx)
                    .await?
            }
        })
    }

    /// The lowest and highest value of an integer key, none for an empty table.
    async fn key_range(&mut self, table: &Table) -> Result<Option<(i64, i64)>, CopyError> {
        let key = table.key[0];
        let sql = format!("SELECT min({key}), max({key}) FROM {}", table.name);
        let (low, high): (Option<i64>, Option<i64>) = match self {
            Side::Lite(tx) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut **tx)
                    .await?
            }
            Side::Pg(tx) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut **tx)
                    .await?
            }
        };
        Ok(low.zip(high))
    }

    /// The tables of the database and their columns, for the check that [`TABLES`] covers them.
    async fn schema(&mut self) -> Result<Vec<(String, String)>, CopyError> {
        Ok(match self {
            Side::Lite(tx) => {
                sqlx::query_as(
                    "SELECT t.name, c.name FROM sqlite_schema AS t, pragma_table_info(t.name) AS c
                     WHERE t.type = 'table' AND t.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                )
                .fetch_all(&mut **tx)
                .await?
            }
            Side::Pg(tx) => {
                sqlx::query_as(
                    "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns
                     WHERE table_schema = current_schema()",
                )
                .fetch_all(&mut **tx)
                .await?
            }
        })
    }

    /// Writes rows of `table`; a row the database refuses fails with its key and the reason.
    async fn insert(&mut self, table: &'static Table, rows: &[Values]) -> Result<(), CopyError> {
        let names: Vec<String> = table
            .columns
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        match self {
            Side::Lite(tx) => {
                // A chunk goes in as one statement, its rows a JSON array read back by `->>`,
                // which keeps each value's type and whole text (an integer stays an integer, a
                // text a text, NUL characters included): a statement a row cost a hop to sqlx's
                // SQLite thread each, 730 s for a million shipments with three million
                // notifications and events. A chunk the target refuses goes again row by row,
                // to name the row.
                let picks: Vec<String> = (0..table.columns.len())
                    .map(|i| format!("value ->> {i}"))
                    .collect();
                let chunk_sql = format!(
                    "INSERT INTO {} ({}) SELECT {} FROM jsonb_each(?1)",
                    table.name,
                    names.join(", "),
                    picks.join(", ")
                );
                sqlx::query("SAVEPOINT chunk").execute(&mut **tx).await?;
                let inserted = sqlx::query(sqlx::AssertSqlSafe(chunk_sql))
                    .bind(json_rows(rows))
                    .execute(&mut **tx)
                    .await;
                if inserted.is_ok() {
                    sqlx::query("RELEASE chunk").execute(&mut **tx).await?;
                    return Ok(());
                }
                sqlx::query("ROLLBACK TO chunk").execute(&mut **tx).await?;
                sqlx::query("RELEASE chunk").execute(&mut **tx).await?;
                let places: Vec<String> =
                    (1..=table.columns.len()).map(|n| format!("?{n}")).collect();
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    table.name,
                    names.join(", "),
                    places.join(", ")
                );
                for row in rows {
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                    for value in row {
                        query = match value {
                            Value::Null => query.bind(None::<i64>),
                            Value::Integer(n) => query.bind(*n),
                            Value::Text(text) => query.bind(text.clone()),
                        };
                    }
                    if let Err(e) = query.execute(&mut **tx).await {
                        return Err(refused(table, row, e));
                    }
                }
                Ok(())
            }
            Side::Pg(tx) => {
                let arrays: Vec<String> = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| match kind {
                        Kind::Integer => format!("${}::BIGINT[]", i + 1),
                        Kind::Text => format!("${}::TEXT[]", i + 1),
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO {} ({}) SELECT * FROM unnest({})",
                    table.name,
                    names.join(", "),
                    arrays.join(", ")
                );
                // A refused chunk is tried again row by row, to name the row: the savepoint
                // keeps the rows written before it.
                sqlx::query("SAVEPOINT chunk").execute(&mut **tx).await?;
                if pg_insert(tx, &sql, table, rows).await.is_ok() {
                    sqlx::query("RELEASE SAVEPOINT chunk")
                        .execute(&mut **tx)
                        .await?;
                    return Ok(());
                }
                sqlx::query("ROLLBACK TO SAVEPOINT chunk")
                    .execute(&mut **tx)
                    .await?;
                for row in rows {
                    if let Err(e) = pg_insert(tx, &sql, table, std::slice::from_ref(row)).await {
                        return Err(refused(table, row, e));
                    }
                }
                sqlx::query("RELEASE SAVEPOINT chunk")
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }
    }

    /// Starts PostgreSQL's identity sequence of `table` past the highest id copied.
    async fn restart_identity(&mut self, table: &Table) -> Result<(), CopyError> {
        if let Side::Pg(tx) = self {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{0}', 'id'),
                    COALESCE((SELECT max(id) FROM {0}), 0) + 1, false)",
                table.name
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), CopyError> {
        match self {
            Side::Lite(tx) => tx.commit().await?,
            Side::Pg(tx) => tx.commit().await?,
        }
        Ok(())
    }

    async fn rollback(self) {
        let done = match self {
            Side::Lite(tx) => tx.rollback().await,
            Side::Pg(tx) => tx.rollback().await,
        };
        if let Err(e) = done {
            tracing::warn!("cannot roll the copy back: {e}; the connection drops it");
        }
    }
}

/// Rows as one JSON array of arrays, for SQLite's `json_each`.
fn json_rows(rows: &[Values]) -> String {
    let rows: Vec<Vec<serde_json::Value>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|value| match value {
                    Value::Null => serde_json::Value::Null,
                    Value::Integer(n) => serde_json::Value::from(*n),
                    Value::Text(text) => serde_json::Value::from(text.as_str()),
                })
                .collect()
        })
        .collect();
    serde_json::to_string(&rows).expect("plain values")
}

async fn pg_insert(
    tx: &mut Transaction<'static, Postgres>,
    sql: &str,
    table: &Table,
    rows: &[Values],
) -> sqlx::Result<()> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for (i, (_, kind)) in table.columns.iter().enumerate() {
        let column = rows.iter().map(|row| &row[i]);
        query = match kind {
            Kind::Integer => query.bind(
                column
                    .map(|value| match value {
                        Value::Integer(n) => Some(*n),
                        _ => None,
                    })
                    .collect::<Vec<Option<i64>>>(),
            ),
            Kind::Text => query.bind(
                column
                    .map(|value| match value {
                        Value::Text(text) => Some(text.clone()),
                        _ => None,
                    })
                    .collect::<Vec<Option<String>>>(),
            ),
        };
    }
    query.execute(&mut **tx).await.map(|_| ())
}

/// The refusal of a row, in the line SQLite says for the rule it breaks when there is one.
fn refused(table: &'static Table, row: &[Value], error: sqlx::Error) -> CopyError {
    let reason = match &error {
        sqlx::Error::Database(db) => {
            let constraint = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.constraint());
            broken_rule(db.message(), constraint).unwrap_or_else(|| db.message().to_owned())
        }
        other => other.to_string(),
    };
    CopyError::Refused {
        table: table.name,
        key: shown_key(table, key_of(table, row)),
        reason,
    }
}

/// A SQLite row, each value checked against its column's type.
fn lite_values(table: &'static Table, row: &SqliteRow) -> Result<Values, CopyError> {
    let mut values = Vec::with_capacity(table.columns.len());
    let mut wrong = None;
    for (i, (name, kind)) in table.columns.iter().enumerate() {
        let class: String = row.try_get(2 * i + 1)?;
        let value = match (class.as_str(), kind) {
            ("null", _) => Ok(Value::Null),
            ("integer", Kind::Integer) => row.try_get(2 * i).map(Value::Integer),
            ("text", Kind::Text) => row.try_get(2 * i).map(Value::Text),
            (other, kind) => {
                let belongs = match kind {
                    Kind::Integer => "an integer",
                    Kind::Text => "text",
                };
                wrong.get_or_insert(format!(
                    "{name} holds a {other} value where {belongs} belongs"
                ));
                Ok(Value::Null)
            }
        };
        match value {
            Ok(value) => values.push(value),
            Err(e) => {
                wrong.get_or_insert(format!("{name} cannot be read ({e})"));
                values.push(Value::Null);
            }
        }
    }
    match wrong {
        None => Ok(values),
        Some(reason) => Err(CopyError::Refused {
            table: table.name,
            key: shown_key(table, key_of(table, &values)),
            reason,
        }),
    }
}

fn pg_values(table: &'static Table, row: &PgRow) -> Result<Values, CopyError> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Kind::Integer => row
                    .try_get::<Option<i64>, _>(i)?
                    .map_or(Value::Null, Value::Integer),
                Kind::Text => row
                    .try_get::<Option<String>, _>(i)?
                    .map_or(Value::Null, Value::Text),
            })
        })
        .collect()
}

impl Db {
    /// A snapshot of the database to read from.
    async fn begin_snapshot(&self) -> Result<Side, CopyError> {
        Ok(match &self.engine {
            Engine::Sqlite(lite) => Side::Lite(lite.read.begin().await?),
            Engine::Postgres(pg) => Side::Pg(
                pg.pool()
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        })
    }

    async fn begin_copy_write(&self) -> Result<Side, CopyError> {
        Ok(match &self.engine {
            Engine::Sqlite(lite) => Side::Lite(lite.begin_write().await?),
            Engine::Postgres(pg) => Side::Pg(pg.begin().await?),
        })
    }

    /// After a copy into PostgreSQL, `VACUUM (ANALYZE)` of each table it wrote, so that the first
    /// daemon starts on a database PostgreSQL knows: planner statistics for the tables
    /// (PostgreSQL's own advice after a bulk load: "Run ANALYZE Afterwards",
    /// postgresql.org/docs/current/populate.html), and a visibility map that lets the counts be
    /// read from indexes alone. Until autovacuum gets to the new rows (a minute or so later), a
    /// `/metrics` scrape's counts took 3.2 s instead of 0.2–0.4 s at three million
    /// notifications, and `stats` 2.0 s instead of 0.5 s; this takes 2.2 s at that size. Nothing
    /// to do on SQLite, whose plans use no statistics. `Ok(false)` when there was nothing to do.
    pub async fn settle_after_copy(&self) -> Result<bool, CopyError> {
        let Engine::Postgres(pg) = &self.engine else {
            return Ok(false);
        };
        for table in TABLES {
            // VACUUM cannot run inside a transaction: each on a pooled connection by itself.
            sqlx::raw_sql(AssertSqlSafe(format!("VACUUM (ANALYZE) {}", table.name)))
                .execute(pg.pool())
                .await?;
        }
        Ok(true)
    }
}

/// Copies every row of `source` into `target`, which must hold none, in one transaction on the
/// target; then compares counts and a sample of each table before committing. `target_shown`
/// names the target in a refusal; `progress` hears of each table once it is written.
pub async fn copy_database(
    source: &Db,
    target: &Db,
    target_shown: &str,
    mut progress: impl FnMut(&Copied),
) -> Result<Vec<Copied>, CopyError> {
    let mut from = source.begin_snapshot().await?;
    let mut to = target.begin_copy_write().await?;
    let done = copy_in(&mut from, &mut to, target_shown, &mut progress).await;
    from.rollback().await;
    match done {
        Ok(copied) => {
            to.commit().await?;
            Ok(copied)
        }
        Err(e) => {
            to.rollback().await;
            Err(e)
        }
    }
}

async fn copy_in(
    from: &mut Side,
    to: &mut Side,
    target_shown: &str,
    progress: &mut impl FnMut(&Copied),
) -> Result<Vec<Copied>, CopyError> {
    covered(from).await?;
    for table in TABLES {
        let rows = to.count(table).await?;
        if rows > 0 {
            return Err(CopyError::NotEmpty {
                target: target_shown.to_owned(),
                table: table.name,
                rows,
            });
        }
    }
    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let mut rows = 0;
        let mut last: Option<Values> = None;
        loop {
            let filter = match &last {
                None => Filter::First,
                Some(key) => Filter::After(key),
            };
            let chunk = from.rows(table, filter, CHUNK).await?;
            let Some(tail) = chunk.last() else { break };
            last = Some(key_of(table, tail).to_vec());
            to.insert(table, &chunk).await?;
            rows += i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            if chunk.len() < CHUNK {
                break;
            }
        }
        if table.identity {
            to.restart_identity(table).await?;
        }
        let sampled = check(from, to, table, rows).await?;
        let table_copied = Copied {
            table: table.name,
            rows,
            sampled,
        };
        progress(&table_copied);
        copied.push(table_copied);
    }
    Ok(copied)
}

/// Refuses a source with a column [`TABLES`] does not carry, or with rows in a table it does
/// not know, so that nothing is left behind silently. An unknown table that holds no rows is
/// passed over, and so is one the target has and the source lacks: the target's migrations made
/// it, and it starts empty there.
async fn covered(side: &mut Side) -> Result<(), CopyError> {
    let mut unknown_tables: Vec<String> = Vec::new();
    for (table, column) in side.schema().await? {
        if NOT_COPIED.contains(&table.as_str()) {
            continue;
        }
        let Some(known) = TABLES.iter().find(|t| t.name == table) else {
            if !unknown_tables.contains(&table) {
                unknown_tables.push(table);
            }
            continue;
        };
        if !known.columns.iter().any(|(name, _)| *name == column) {
            return Err(CopyError::Unknown {
                side: "the source".to_owned(),
                what: format!("a column {table}.{column}"),
            });
        }
    }
    for table in unknown_tables {
        if side.count_named(&table).await? > 0 {
            return Err(CopyError::Unknown {
                side: "the source".to_owned(),
                what: format!("rows in a table {table:?}"),
            });
        }
    }
    Ok(())
}

/// Compares the counts of `table` on both sides, and a sample of rows spread over it, first
/// and last included, column by column; returns how many rows it compared.
async fn check(
    from: &mut Side,
    to: &mut Side,
    table: &'static Table,
    rows: i64,
) -> Result<usize, CopyError> {
    let (source_rows, target_rows) = (from.count(table).await?, to.count(table).await?);
    if source_rows != rows || target_rows != rows {
        return Err(CopyError::Differs(format!(
            "{} holds {source_rows} rows in the source, {rows} were copied and the target holds {target_rows}",
            table.name
        )));
    }
    let mut sample: Vec<Values> = Vec::new();
    let integer_key = table.key.len() == 1 && column_kind(table, table.key[0]) == Kind::Integer;
    if integer_key {
        if let Some((low, high)) = from.key_range(table).await? {
            let span = i128::from(high) - i128::from(low);
            let mut points = vec![low, high];
            for step in 1..SAMPLE {
                let point = i128::from(low) + span * i128::from(step) / i128::from(SAMPLE);
                points.push(i64::try_from(point).unwrap_or(high));
            }
            for point in points {
                sample.extend(from.rows(table, Filter::AtLeast(point), 1).await?);
            }
        }
    } else if rows > 0 {
        let mut points = vec![0, rows - 1];
        for step in 1..SAMPLE {
            points.push(rows * step / SAMPLE);
        }
        for point in points {
            sample.extend(from.rows(table, Filter::Offset(point), 1).await?);
        }
    }
    sample.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    sample.dedup();
    for row in &sample {
        let key = key_of(table, row);
        let there = to.rows(table, Filter::Key(key), 1).await?;
        let Some(copy) = there.first() else {
            return Err(CopyError::Differs(format!(
                "{} row {} is missing from the target",
                table.name,
                shown_key(table, key)
            )));
        };
        for ((name, _), (theirs, ours)) in table.columns.iter().zip(copy.iter().zip(row)) {
            if theirs != ours {
                return Err(CopyError::Differs(format!(
                    "{} row {} holds {theirs} in {name} where the source holds {ours}",
                    table.name,
                    shown_key(table, key)
                )));
            }
        }
    }
    Ok(sample.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_lists_its_key_first() {
        for table in TABLES {
            for (i, key) in table.key.iter().enumerate() {
                assert_eq!(table.columns[i].0, *key, "{}", table.name);
            }
            assert_eq!(table.identity, table.key == ["id"], "{}", table.name);
        }
    }

    #[test]
    fn a_key_is_shown_by_its_names_and_values() {
        let shipments = &TABLES[0];
        assert_eq!(shown_key(shipments, &[Value::Integer(7)]), "id 7");
        let unmapped = TABLES.iter().find(|t| t.name == "unmapped").unwrap();
        assert_eq!(
            shown_key(
                unmapped,
                &[Value::Text("top".into()), Value::Text("X".into())]
            ),
            "(provider, value) (\"top\", \"X\")"
        );
    }
}
