//! The PostgreSQL schema (`migrations/postgres/`) agrees with SQLite's (`migrations/NNNN_*.sql`),
//! through real servers: a SQLite file migrated by the binary and a throwaway PostgreSQL cluster
//! migrated with the PostgreSQL set. The same tables, columns (name, nullability, a normalised
//! type and default), keys and indexes; and a row that breaks a rule is refused by both with the
//! same line (`storage::rules`). Without PostgreSQL installed these tests fail, saying so.

use std::collections::{BTreeMap, BTreeSet};

use shipwatch::storage::{POSTGRES_MIGRATOR, rules::broken_rule};
use sqlx::{Connection, PgConnection, Row, SqliteConnection};

use crate::support::app::TestApp;
use crate::support::postgres::PgDatabase;

/// A column as both engines can describe it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    name: String,
    /// `integer` or `text`.
    kind: String,
    not_null: bool,
    primary_key: bool,
    default: Option<String>,
}

/// An index made by `CREATE INDEX` (the ones behind keys are in `keys`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Index {
    table: String,
    columns: Vec<String>,
    unique: bool,
    partial: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Schema {
    columns: BTreeMap<String, Vec<Column>>,
    indexes: BTreeMap<String, Index>,
    /// UNIQUE keys: (table, columns).
    unique: BTreeSet<(String, Vec<String>)>,
    /// Foreign keys: (table, column, referenced table, referenced column, on delete).
    foreign: BTreeSet<(String, String, String, String, String)>,
}

fn kind(declared: &str) -> String {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "integer".to_owned(),
        other => other.to_owned(),
    }
}

/// `'normal'::text` and `'normal'` alike; both engines' "now in milliseconds" as `now_ms`.
fn default(text: Option<String>) -> Option<String> {
    let text = text?;
    if text.contains("julianday('now')") || text.contains("now()") {
        return Some("now_ms".to_owned());
    }
    Some(
        text.trim_end_matches("::text")
            .trim_end_matches("::bigint")
            .to_owned(),
    )
}

async fn sqlite_schema(conn: &mut SqliteConnection) -> Schema {
    let mut schema = Schema::default();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for table in &tables {
        let rows = sqlx::query(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let columns = rows
            .iter()
            .map(|row| {
                let primary_key = row.get::<i64, _>("pk") > 0;
                Column {
                    name: row.get("name"),
                    kind: kind(row.get("type")),
                    // A key column counts as NOT NULL (SQLite lets a NULL into a TEXT key).
                    not_null: row.get::<i64, _>("notnull") == 1 || primary_key,
                    primary_key,
                    default: default(row.get("dflt_value")),
                }
            })
            .collect();
        schema.columns.insert(table.clone(), columns);

        let indexes = sqlx::query(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?) WHERE origin <> 'pk'",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for index in indexes {
            let name: String = index.get("name");
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT coalesce(name, '(expression)') FROM pragma_index_info(?) \
                     ORDER BY seqno",
            )
            .bind(&name)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            if index.get::<String, _>("origin") == "u" {
                schema.unique.insert((table.clone(), columns));
            } else {
                schema.indexes.insert(
                    name,
                    Index {
                        table: table.clone(),
                        columns,
                        unique: index.get::<i64, _>("unique") == 1,
                        partial: index.get::<i64, _>("partial") == 1,
                    },
                );
            }
        }

        let foreign = sqlx::query(
            "SELECT \"from\", \"table\", \"to\", on_delete FROM pragma_foreign_key_list(?)",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for key in foreign {
            schema.foreign.insert((
                table.clone(),
                key.get("from"),
                key.get("table"),
                key.get("to"),
                key.get("on_delete"),
            ));
        }
    }
    schema
}

async fn postgres_schema(conn: &mut PgConnection) -> Schema {
    let mut schema = Schema::default();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations' ORDER BY table_name",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for table in &tables {
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
             WHERE c.contype = 'p' AND c.conrelid = $1::regclass",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let rows = sqlx::query(
            "SELECT column_name::text AS name, data_type::text AS type, is_nullable::text AS nullable, \
             column_default::text AS dflt FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let columns = rows
            .iter()
            .map(|row| {
                let name: String = row.get("name");
                Column {
                    kind: kind(row.get("type")),
                    not_null: row.get::<String, _>("nullable") == "NO",
                    primary_key: keys.contains(&name),
                    default: default(row.get("dflt")),
                    name,
                }
            })
            .collect();
        schema.columns.insert(table.clone(), columns);
    }

    let indexes = sqlx::query(
        "SELECT i.relname::text AS name, t.relname::text AS table, ix.indisunique AS uniq, \
           ix.indpred IS NOT NULL AS partial, \
           ARRAY(SELECT coalesce(a.attname::text, '(expression)') \
                 FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(attnum, ord) \
                 LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
                 ORDER BY k.ord) AS columns \
         FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid \
         WHERE t.relnamespace = 'public'::regnamespace AND t.relname <> '_sqlx_migrations' \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for index in indexes {
        schema.indexes.insert(
            index.get("name"),
            Index {
                table: index.get("table"),
                columns: index.get("columns"),
                unique: index.get("uniq"),
                partial: index.get("partial"),
            },
        );
    }

    let unique = sqlx::query(
        "SELECT t.relname::text AS table, \
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns \
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
         WHERE c.contype = 'u' AND c.connamespace = 'public'::regnamespace",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for key in unique {
        schema.unique.insert((key.get("table"), key.get("columns")));
    }

    let foreign = sqlx::query(
        "SELECT t.relname::text AS table, a.attname::text AS from, r.relname::text AS to_table, \
           ra.attname::text AS to, CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' \
           WHEN 'r' THEN 'RESTRICT' ELSE 'NO ACTION' END AS on_delete \
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class r ON r.oid = c.confrelid \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
         JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1] \
         WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for key in foreign {
        schema.foreign.insert((
            key.get("table"),
            key.get("from"),
            key.get("to_table"),
            key.get("to"),
            key.get("on_delete"),
        ));
    }
    schema
}

/// A SQLite file as the binary makes it, and a PostgreSQL database with the PostgreSQL set.
async fn both() -> (TestApp, SqliteConnection, PgDatabase, PgConnection) {
    let app = TestApp::start().await;
    app.create_database();
    let sqlite = SqliteConnection::connect(&format!("sqlite://{}", app.db.display()))
        .await
        .unwrap();
    let pg = PgDatabase::create().await;
    let mut postgres = pg.connect().await;
    POSTGRES_MIGRATOR.run(&mut postgres).await.unwrap();
    (app, sqlite, pg, postgres)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_have_the_same_tables_columns_keys_and_indexes() {
    let (_app, mut sqlite, _pg, mut postgres) = both().await;
    let lite = sqlite_schema(&mut sqlite).await;
    let pg = postgres_schema(&mut postgres).await;
    assert!(lite.columns.len() >= 8, "{:?}", lite.columns.keys());
    assert_eq!(
        lite.columns.keys().collect::<Vec<_>>(),
        pg.columns.keys().collect::<Vec<_>>(),
        "tables"
    );
    for (table, columns) in &lite.columns {
        assert_eq!(
            Some(columns),
            pg.columns.get(table),
            "the columns of {table}"
        );
    }
    assert_eq!(lite.indexes, pg.indexes, "indexes");
    assert_eq!(lite.unique, pg.unique, "unique keys");
    assert_eq!(lite.foreign, pg.foreign, "foreign keys");
    // The partial indexes the queues and sweeps rely on are there, by name.
    for name in [
        "shipments_due",
        "shipments_unknown_provider",
        "notifications_due",
        "notifications_done",
        "notifications_leased",
        "notifications_queue",
    ] {
        assert!(pg.indexes.get(name).is_some_and(|i| i.partial), "{name}");
    }
}

fn line(err: sqlx::Error, what: &str) -> String {
    match err {
        sqlx::Error::Database(db) => {
            broken_rule(db.message(), db.constraint()).unwrap_or_else(|| {
                panic!(
                    "{what}: no rule in {:?} ({:?})",
                    db.message(),
                    db.constraint()
                )
            })
        }
        other => panic!("{what}: {other}"),
    }
}

/// Rows that break a rule, in SQL both engines read, with the line each must give.
const BAD_ROWS: &[(&str, &str)] = &[
    (
        "INSERT INTO shipments (order_id, provider, tier) VALUES ('B-1', 'taobao', 'weird')",
        "tier must be one of high, normal, low",
    ),
    (
        "INSERT INTO shipments (order_id, provider, status) VALUES ('B-2', 'taobao', 'nope')",
        "status must be a canonical status",
    ),
    (
        "INSERT INTO shipments (order_id, provider) VALUES ('  ', 'taobao')",
        "order_id must not be empty",
    ),
    (
        "INSERT INTO shipments (order_id, provider) VALUES ('B-3', '')",
        "provider must not be empty",
    ),
    (
        "INSERT INTO shipments (order_id, provider, active) VALUES ('B-4', 'taobao', 2)",
        "active must be one of 0, 1",
    ),
    (
        "INSERT INTO shipments (order_id, provider, sub_orders) VALUES ('B-5', 'taobao', '111,,222')",
        "sub_orders must be sub-order ids separated by commas, like 111,222",
    ),
    (
        "INSERT INTO shipments (order_id, provider, sub_orders) VALUES ('B-6', 'taobao', '111,x')",
        "sub_orders must be sub-order ids separated by commas, like 111,222",
    ),
    (
        "INSERT INTO shipments (order_id, provider, invalid_kind) VALUES ('B-7', 'taobao', 'bogus')",
        "invalid_kind must be one of unknown_provider, row, upstream, schedule",
    ),
    (
        "UPDATE shipments SET tier = 'urgent' WHERE order_id = 'GOOD-1'",
        "tier must be one of high, normal, low",
    ),
    (
        "INSERT INTO notifications (public_id, shipment_id, transition, channel, previous_status, \
         status, payload, next_attempt_at, created_at) \
         VALUES ('n-1', 1, 1, 'pigeon', 'pending', 'in_transit', '{}', 0, 0)",
        "channel must be one of webhook, email, sms, dingtalk, wecom, feishu, wechat",
    ),
    (
        "INSERT INTO notifications (public_id, shipment_id, kind, transition, channel, \
         previous_status, status, payload, next_attempt_at, created_at) \
         VALUES ('n-2', 1, 'late', 1, 'webhook', 'pending', 'in_transit', '{}', 0, 0)",
        "kind must be one of status_changed, stuck",
    ),
    (
        "INSERT INTO notifications (public_id, shipment_id, transition, channel, previous_status, \
         status, payload, state, next_attempt_at, created_at) \
         VALUES ('n-3', 1, 1, 'webhook', 'pending', 'in_transit', '{}', 'lost', 0, 0)",
        "state must be one of pending, sent, dead, skipped",
    ),
    (
        "INSERT INTO subscriptions (shipment_id, provider, state, subscribed_at) \
         VALUES (1, 'kuaidi100', 'paused', 0)",
        "state must be one of active, ended, aborted",
    ),
];

/// Values of the wrong type, bound as a program's driver would: (column, text bound to it, line).
const MISTYPED: &[(&str, &str)] = &[
    (
        "created_at",
        "created_at must be an integer (milliseconds since 1970-01-01 UTC)",
    ),
    (
        "next_poll_at",
        "next_poll_at must be an integer (milliseconds since 1970-01-01 UTC)",
    ),
    ("transitions", "transitions must be an integer"),
    ("stalls", "stalls must be an integer"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rule_reads_the_same_on_both_engines() {
    let (_app, mut sqlite, _pg, mut postgres) = both().await;
    let good = "INSERT INTO shipments (id, order_id, provider) VALUES (1, 'GOOD-1', 'taobao')";
    sqlx::query(good).execute(&mut sqlite).await.unwrap();
    sqlx::query(good).execute(&mut postgres).await.unwrap();

    for (sql, expected) in BAD_ROWS {
        let lite = sqlx::query(*sql).execute(&mut sqlite).await.unwrap_err();
        let pg = sqlx::query(*sql).execute(&mut postgres).await.unwrap_err();
        assert_eq!(line(lite, sql), *expected, "SQLite: {sql}");
        assert_eq!(line(pg, sql), *expected, "PostgreSQL: {sql}");
    }

    for (column, expected) in MISTYPED {
        let lite = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO shipments (order_id, provider, {column}) VALUES ('M-1', 'taobao', ?)"
        )))
        .bind("yesterday")
        .execute(&mut sqlite)
        .await
        .unwrap_err();
        let pg = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO shipments (order_id, provider, {column}) VALUES ('M-1', 'taobao', $1)"
        )))
        .bind("yesterday")
        .execute(&mut postgres)
        .await
        .unwrap_err();
        assert_eq!(line(lite, column), *expected, "SQLite: {column}");
        assert_eq!(line(pg, column), *expected, "PostgreSQL: {column}");
    }

    // Every CHECK of the PostgreSQL schema is a rule with a line, and a bad row above breaks it.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint \
         WHERE contype = 'c' AND connamespace = 'public'::regnamespace",
    )
    .fetch_all(&mut postgres)
    .await
    .unwrap();
    let covered: BTreeSet<&str> = BAD_ROWS.iter().map(|(_, line)| *line).collect();
    for name in &names {
        let line = broken_rule("", Some(name)).unwrap_or_else(|| panic!("no line for {name}"));
        assert!(
            covered.contains(line.as_str()),
            "no bad row breaks {line:?}"
        );
    }
    assert_eq!(names.len(), covered.len(), "{names:?}");

    // Nothing bad got in.
    let count = "SELECT count(*) FROM shipments";
    let lite: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut sqlite)
        .await
        .unwrap();
    let pg: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut postgres)
        .await
        .unwrap();
    assert_eq!((lite, pg), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_cluster_starts_and_gives_each_test_its_own_database() {
    let a = PgDatabase::create().await;
    let b = PgDatabase::create().await;
    assert_ne!(a.name, b.name);
    assert!(
        a.url.starts_with("postgres://shipwatch@127.0.0.1:"),
        "{}",
        a.url
    );
    let mut conn = a.connect().await;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!version.is_empty());
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(fsync, "off");
}
