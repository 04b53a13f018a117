//! `shipwatch copy --to` (issue 17), through the binary: a SQLite database with rows in every
//! table and every state goes into a throwaway PostgreSQL database and back into a new SQLite
//! file, and every table of the last holds the rows of the first, value for value and type for
//! type. A target that already holds rows is refused, and a row the target cannot take fails
//! the copy with its table, its key and the reason, leaving the target empty. Without
//! PostgreSQL installed these tests fail, saying so.

use sqlx::{Connection, SqliteConnection};

use crate::support::app::{Engine, TestApp};
use crate::support::postgres::PgDatabase;

/// Rows in every table, in the states the daemon leaves them: shipments active, delivered,
/// invalid and claimed; notifications pending (one leased), sent, dead and skipped; text with
/// quotes, new lines and Chinese; ids with gaps.
const ROWS: &str = r#"
INSERT INTO shipments (id, order_id, provider, tracking_no, carrier, tier, phone, email, openid,
    status, raw_status, active, error, transitions, claimed_until, next_poll_at, last_polled_at,
    last_event_at, status_changed_at, created_at, stalls, stuck_alerted_for, sub_orders,
    invalid_kind)
VALUES
    (1, '1001', 'taobao', 'SF100', '顺丰', 'high', '13812345678', 'a@shop.example', NULL,
     'in_transit', '运输中', 1, NULL, 2, 1700000009000, 1700000010000, 1700000000000,
     1699999990000, 1699999000000, 1699990000000, 0, NULL, '111,222', NULL),
    (2, '1002', 'taobao', NULL, NULL, 'normal', NULL, NULL, 'o6_bmjrPTlm6_2sgVt7hMZOPfL2M',
     'delivered', 'SIGNED', 0, NULL, 4, NULL, 1700000020000, 1700000001000, 1700000001000,
     1700000001000, 1699990001000, 1, 1699999999000, NULL, NULL),
    (5, '1005', 'taobao', 'YT5', NULL, 'low', NULL, NULL, NULL, 'pending', NULL, 0,
     'unknown provider "kd": configured providers are taobao; fix the row or add [providers.kd] to the config',
     0, NULL, 1700000030000, NULL, NULL, NULL, 1699990002000, 0, NULL, NULL, 'unknown_provider'),
    (9, 'it''s "quoted"
and on two lines', 'taobao', NULL, NULL, 'normal', NULL, NULL, NULL, 'exception', 'X', 1, NULL,
     1, NULL, 1700000040000, NULL, NULL, NULL, 1699990003000, 0, NULL, NULL, NULL);

INSERT INTO events (id, shipment_id, time, description, location, raw_code) VALUES
    (1, 1, 1699999980000, '已揽收', '杭州', 'ACCEPT'),
    (2, 1, 1699999990000, '运输中', NULL, NULL),
    (7, 2, 1700000001000, '已签收', '上海', 'SIGN');

INSERT INTO notifications (id, public_id, shipment_id, kind, transition, channel,
    previous_status, status, payload, recipient, state, attempts, next_attempt_at, lease_until,
    last_error, created_at, sent_at)
VALUES
    (1, 'msg_a', 1, 'status_changed', 1, 'webhook', 'pending', 'picked_up', '{"a":1}', NULL,
     'sent', 1, 1699999000000, NULL, NULL, 1699999000000, 1699999001000),
    (2, 'msg_b', 1, 'status_changed', 2, 'sms', 'picked_up', 'in_transit', '{}', '13812345678',
     'pending', 2, 1700000050000, 1700000060000, 'timed out', 1699999100000, NULL),
    (3, 'msg_c', 2, 'status_changed', 4, 'email', 'in_transit', 'delivered', 'x', NULL,
     'skipped', 0, 1700000001000, NULL, NULL, 1700000001000, NULL),
    (4, 'msg_d', 2, 'stuck', 1, 'wechat', 'in_transit', 'in_transit', '{}', 'o6_x', 'dead', 5,
     1700000002000, NULL, '40003 invalid openid', 1700000000500, NULL),
    (8, 'msg_e', 9, 'status_changed', 1, 'dingtalk', 'pending', 'exception', '{}', NULL,
     'pending', 0, 1700000070000, NULL, NULL, 1700000040000, NULL);

INSERT INTO subscriptions (shipment_id, provider, state, subscribed_at, subscribes,
    last_callback_at, ended_at, message)
VALUES (1, 'kuaidi100', 'active', 1699990000000, 1, 1699999990000, NULL, NULL),
       (2, 'kuaidi100', 'ended', 1699990001000, 2, NULL, 1700000001000, 'shutdown');

INSERT INTO provider_state (provider, banned_until, reason, updated_at, paused_until, pause_reason)
VALUES ('taobao', 1700000600000, 'isv.api-call-limited', 1700000000000, NULL, NULL),
       ('kd', NULL, NULL, 1700000000000, 1700000900000, 'credentials refused');

INSERT INTO unmapped (provider, value, count, first_seen, last_seen)
VALUES ('taobao', 'WEIRD', 3, 1699990000000, 1700000000000),
       ('taobao', '奇怪', 1, 1699990000000, 1699990000000);

INSERT INTO poll_counts (minute, provider, result, count)
VALUES (1699999980000, 'taobao', 'ok', 12), (1699999980000, 'taobao', 'error', 1),
       (1700000040000, 'taobao', 'ok', 7);

INSERT INTO channel_state (channel, paused_until, reason, updated_at)
VALUES ('sms', 1700003600000, 'out of credit', 1700000000000);
"#;

/// Every table of a SQLite file but the migrations' and the daemons' running state (`daemons`,
/// `quota`, which `copy` leaves behind), each as its rows, every value `quote`d (so that 1 and
/// '1' differ), ordered by all columns, the key first.
async fn dump(path: &std::path::Path) -> Vec<(String, Vec<String>)> {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'
         AND name NOT IN ('_sqlx_migrations', 'daemons', 'quota') ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut dumped = Vec::new();
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind(&table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
        let order: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM {table} ORDER BY {}",
            quoted.join(" || ', ' || "),
            order.join(", ")
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        dumped.push((table, rows));
    }
    conn.close().await.ok();
    dumped
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn pg_count(pg: &PgDatabase, table: &str) -> i64 {
    let mut conn = pg.connect().await;
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    n
}

#[tokio::test]
async fn a_round_trip_through_postgres_gives_the_same_rows() {
    let app = TestApp::start().await;
    app.create_database();
    app.sql(ROWS).await.unwrap();
    let before = dump(&app.db).await;
    for (table, rows) in &before {
        assert!(!rows.is_empty(), "the test leaves {table} empty");
    }

    let pg = PgDatabase::create().await;
    let there = app.cli_ok(&["copy", "--to", &pg.url]);
    assert!(
        there.contains("shipments") && there.contains("4 rows"),
        "{there}"
    );
    assert!(
        there.contains("notifications") && there.contains("5 rows"),
        "{there}"
    );
    assert!(there.contains("checked"), "{there}");
    // PostgreSQL is given its statistics and visibility map at once, not when autovacuum
    // comes by: each table the copy wrote was vacuumed and analyzed.
    assert!(there.contains("vacuumed and analyzed"), "{there}");
    let mut conn = pg.connect().await;
    let settled: Vec<String> = sqlx::query_scalar(
        "SELECT relname::TEXT FROM pg_stat_user_tables \
         WHERE last_vacuum IS NOT NULL AND last_analyze IS NOT NULL ORDER BY relname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    for table in ["events", "notifications", "shipments"] {
        assert!(settled.iter().any(|t| t == table), "{table}: {settled:?}");
    }

    let back = app.dir.path().join("back.db");
    let back_str = back.to_str().unwrap();
    let again = app.cli_ok(&["--db", &pg.url, "copy", "--to", back_str]);
    assert!(again.contains("checked"), "{again}");
    assert!(!again.contains("vacuumed"), "{again}");
    assert_eq!(dump(&back).await, before);

    // PostgreSQL's ids go on past the copied ones.
    let mut conn = pg.connect().await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO shipments (order_id, provider) VALUES ('2001', 'taobao') RETURNING id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(id, 10);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (shipment_id, time, description) VALUES (1, 1, 'x') RETURNING id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(id, 8);
    conn.close().await.ok();

    // A target that holds rows is refused, whichever engine it is, and keeps them.
    let out = app.cli(&["copy", "--to", &pg.url]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not empty (shipments holds 5 rows)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pg_count(&pg, "shipments").await, 5);
    let out = app.cli(&["copy", "--to", back_str]);
    assert!(
        stderr(&out).contains(
            "is not empty (shipments holds 4 rows); copy writes only into an empty database"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(dump(&back).await, before);
    // And so is the source itself.
    let out = app.cli(&["copy", "--to", app.db.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_row_the_target_cannot_take_fails_the_copy_and_leaves_it_empty() {
    let app = TestApp::start().await;
    app.create_database();
    app.sql(ROWS).await.unwrap();
    // Another program stored text where a time belongs (events has no typed triggers).
    app.sql("UPDATE events SET time = 'yesterday' WHERE id = 7")
        .await
        .unwrap();
    let pg = PgDatabase::create().await;
    let out = app.cli(&["copy", "--to", &pg.url]);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains(
            "cannot copy events row id 7: time holds a text value where an integer belongs; nothing was written"
        ),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    for table in ["shipments", "events", "notifications"] {
        assert_eq!(pg_count(&pg, table).await, 0, "{table}");
    }

    // A value PostgreSQL refuses by itself: text holding a NUL character.
    app.sql(
        "UPDATE events SET time = 1700000001000 WHERE id = 7;
         UPDATE notifications SET last_error = 'a' || char(0) || 'b' WHERE id = 4",
    )
    .await
    .unwrap();
    let out = app.cli(&["copy", "--to", &pg.url]);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("cannot copy notifications row id 4: ")
            && said.contains("nothing was written"),
        "{said}"
    );
    for table in ["shipments", "events", "notifications"] {
        assert_eq!(pg_count(&pg, table).await, 0, "{table}");
    }

    // Rows in a table the copy does not know would be left behind: refused. Empty, it is
    // passed over.
    app.sql(
        "UPDATE notifications SET last_error = 'ab' WHERE id = 4;
         CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me')",
    )
    .await
    .unwrap();
    let out = app.cli(&["copy", "--to", &pg.url]);
    assert!(
        stderr(&out)
            .contains("the source has rows in a table \"notes\" that this version does not copy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pg_count(&pg, "shipments").await, 0);

    // And so would a column the copy does not know.
    app.sql("DELETE FROM notes; ALTER TABLE events ADD COLUMN note TEXT")
        .await
        .unwrap();
    let out = app.cli(&["copy", "--to", &pg.url]);
    assert!(
        stderr(&out).contains(
            "the source has a column events.note that this version does not copy; use the shipwatch that made it"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(pg_count(&pg, "shipments").await, 0);

    // Fixed, the copy goes through into the same database.
    app.sql("ALTER TABLE events DROP COLUMN note")
        .await
        .unwrap();
    let out = app.cli_ok(&["copy", "--to", &pg.url]);
    assert!(out.contains("checked"), "{out}");
    assert_eq!(pg_count(&pg, "notifications").await, 5);
}

#[tokio::test]
async fn the_copy_waits_for_no_daemon_on_its_source() {
    let app = TestApp::start().await;
    app.create_database();
    let _lock = shipwatch::storage::Db::lock_for_daemon(&app.db).unwrap();
    let target = app.dir.path().join("target.db");
    let out = app.cli(&["copy", "--to", target.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is running on") && stderr(&out).contains("stop it first"),
        "{}",
        stderr(&out)
    );
}

/// A source whose daemon was killed may have left receipts of deliveries accepted and not yet
/// marked sent: the copy marks those sent, each only under the claim it names, so that the
/// target's daemon does not send them again; the source and its receipts stay as they were.
#[tokio::test]
async fn the_copy_marks_sent_what_the_killed_daemons_receipts_say_was_accepted() {
    use shipwatch::storage::receipts::{Receipt, path_beside};

    let app = TestApp::start().await;
    app.create_database();
    app.sql(ROWS).await.unwrap();
    // msg_b (id 2) was under way under its lease when the daemon died; so was msg_e (id 8),
    // but the receipt left for it names another claim.
    app.sql(
        "UPDATE notifications SET attempt_started = 1 WHERE id = 2; \
         UPDATE notifications SET attempt_started = 1, lease_until = 1700000080000 WHERE id = 8",
    )
    .await
    .unwrap();
    let accepted = Receipt {
        id: 2,
        lease_until: 1_700_000_060_000,
        sent_at: 1_700_000_055_000,
    };
    let other_claim = Receipt {
        id: 8,
        lease_until: 1_700_000_070_000,
        sent_at: 1_700_000_056_000,
    };
    let receipts = path_beside(&app.db);
    let lines = accepted.line() + &other_claim.line();
    std::fs::write(&receipts, &lines).unwrap();
    let before = dump(&app.db).await;

    let target = app.dir.path().join("target.db");
    let out = app.cli_ok(&["copy", "--to", target.to_str().unwrap()]);
    assert!(
        out.contains("marked sent in the copy: 1 deliveries accepted just before"),
        "{out}"
    );
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", target.display()))
        .await
        .unwrap();
    let rows: Vec<(i64, String, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT id, state, sent_at, lease_until FROM notifications WHERE id IN (2, 8) ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.ok();
    assert_eq!(
        rows,
        vec![
            (2, "sent".to_owned(), Some(1_700_000_055_000), None),
            (8, "pending".to_owned(), None, Some(1_700_000_080_000)),
        ]
    );
    assert_eq!(dump(&app.db).await, before, "the source is left as it was");
    assert_eq!(std::fs::read_to_string(&receipts).unwrap(), lines);
}

/// On PostgreSQL the receipts are where the config says its daemon keeps them: the copy of the
/// config's database marks sent what they say; the copy of another database (`--db`) leaves them
/// out, since their ids name the config's rows. A copy of that copy finds nothing left to mark
/// and says nothing of it.
#[tokio::test]
async fn a_copy_of_a_postgres_database_takes_its_daemons_receipts_and_no_other_databases() {
    use shipwatch::storage::receipts::{Receipt, path_beside};

    let app = TestApp::builder()
        .engine(Engine::Postgres)
        .receipts_on_postgres()
        .start()
        .await;
    app.create_database();
    let other = PgDatabase::create().await;
    app.cli_ok(&[
        "--db",
        &other.url,
        "import",
        app.dir.path().join("no-shipments.csv").to_str().unwrap(),
    ]);
    let under_way = "UPDATE notifications SET attempt_started = 1 WHERE id = 2";
    for url in [&app.pg.as_ref().unwrap().url, &other.url] {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{ROWS}; {under_way}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
    }
    let accepted = Receipt {
        id: 2,
        lease_until: 1_700_000_060_000,
        sent_at: 1_700_000_055_000,
    };
    std::fs::write(app.receipts(), accepted.line()).unwrap();
    let state_of_2 = async |db: &std::path::Path| -> String {
        one(db, "SELECT state FROM notifications WHERE id = 2").await
    };

    let copy = app.dir.path().join("copy.db");
    let out = app.cli_ok(&["copy", "--to", copy.to_str().unwrap()]);
    assert!(
        out.contains("marked sent in the copy: 1 deliveries accepted just before"),
        "{out}"
    );
    assert_eq!(state_of_2(&copy).await, "sent");

    let of_other = app.dir.path().join("of-other.db");
    let out = app.cli_ok(&[
        "--db",
        &other.url,
        "copy",
        "--to",
        of_other.to_str().unwrap(),
    ]);
    assert!(!out.contains("marked sent"), "{out}");
    assert_eq!(state_of_2(&of_other).await, "pending");

    // The copy's own receipts, beside it, name a delivery it already holds as sent.
    std::fs::write(path_beside(&copy), accepted.line()).unwrap();
    let again = app.dir.path().join("again.db");
    let out = app.cli_ok(&[
        "--db",
        copy.to_str().unwrap(),
        "copy",
        "--to",
        again.to_str().unwrap(),
    ]);
    assert!(!out.contains("marked sent"), "{out}");
    assert_eq!(state_of_2(&again).await, "sent");
}

/// More rows than one chunk, in a table keyed by id and in one keyed by three columns: the copy
/// goes on from where each chunk ended and carries every row once.
#[tokio::test]
async fn tables_larger_than_a_chunk_are_copied_whole() {
    let app = TestApp::start().await;
    app.create_database();
    app.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4500)
         INSERT INTO shipments (id, order_id, provider, next_poll_at, created_at)
         SELECT 1000000 + 3 * i, 'o' || i, 'taobao', 1700000000000 + i, 1699990000000 + i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
         INSERT INTO poll_counts (minute, provider, result, count)
         SELECT 60000 * (i / 2), 'taobao', CASE i % 2 WHEN 0 THEN 'ok' ELSE 'error' END, i FROM n;",
    )
    .await
    .unwrap();
    let before = dump(&app.db).await;
    let pg = PgDatabase::create().await;
    let there = app.cli_ok(&["copy", "--to", &pg.url]);
    assert!(
        there.contains("4500 rows") && there.contains("2500 rows"),
        "{there}"
    );
    // 101 rows of each table are compared, spread from its first to its last: the ids (from
    // 1,000,003, as after older rows were removed) step by 3 and the sample by about 135, so
    // none is taken twice.
    assert!(
        there.contains("and 202 sampled rows are equal column by column"),
        "{there}"
    );
    assert_eq!(pg_count(&pg, "shipments").await, 4500);
    let back = app.dir.path().join("back.db");
    app.cli_ok(&["--db", &pg.url, "copy", "--to", back.to_str().unwrap()]);
    assert_eq!(dump(&back).await, before);
}

/// Into a SQLite file, a chunk of rows goes in as one statement (a JSON array read back value by
/// value), and nothing of a value changes on the way: an integer at either end of its range, a
/// text that reads as a number, a text holding a NUL character.
/// A row the target refuses (a status outside the CHECK, stored by another program with the
/// constraints off) fails the copy naming the row, and leaves nothing behind.
#[tokio::test]
async fn a_copy_into_sqlite_keeps_every_value_and_its_type_and_names_a_refused_row() {
    let app = TestApp::start().await;
    app.create_database();
    app.sql(ROWS).await.unwrap();
    app.sql(
        "UPDATE notifications SET last_error = 'a' || char(0) || 'b' WHERE id = 4;
         UPDATE shipments SET tracking_no = '12', carrier = '007' WHERE id = 2;
         UPDATE poll_counts SET count = 9223372036854775807 WHERE result = 'error';
         UPDATE events SET time = -9223372036854775808 WHERE id = 2;",
    )
    .await
    .unwrap();
    let before = dump(&app.db).await;
    let back = app.dir.path().join("back.db");
    let back_str = back.to_str().unwrap();
    let out = app.cli_ok(&["copy", "--to", back_str]);
    assert!(out.contains("checked"), "{out}");
    assert_eq!(dump(&back).await, before);
    let nul: String = one(
        &back,
        "SELECT hex(last_error) FROM notifications WHERE id = 4",
    )
    .await;
    assert_eq!(nul, "610062");

    app.sql(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE shipments SET status = 'lost' WHERE id = 5;",
    )
    .await
    .unwrap();
    let fresh = app.dir.path().join("fresh.db");
    let out = app.cli(&["copy", "--to", fresh.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("cannot copy shipments row id 5: ")
            && said.contains("status must be a canonical status")
            && said.contains("nothing was written"),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    let left: i64 = one(&fresh, "SELECT count(*) FROM shipments").await;
    assert_eq!(left, 0);
}

/// The one value `query` reads from the SQLite file at `path`.
async fn one<T>(path: &std::path::Path, query: &'static str) -> T
where
    T: Send + Unpin + sqlx::Type<sqlx::Sqlite> + for<'r> sqlx::Decode<'r, sqlx::Sqlite>,
{
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let value = sqlx::query_scalar(query)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    value
}

/// The check before the commit compares the copy with its source: a target that changes a value
/// on the way, loses a row, or files a row under another key (here a trigger another program
/// put on the target) fails the copy with the table, the row and what differs, and leaves the
/// target empty.
#[tokio::test]
async fn a_copy_that_does_not_agree_with_its_source_is_not_committed() {
    let app = TestApp::start().await;
    app.create_database();
    let pg = PgDatabase::create().await;
    // The copy of an empty database makes the target's tables, for the trigger.
    app.cli_ok(&["copy", "--to", &pg.url]);
    app.sql(ROWS).await.unwrap();
    let cases = [
        (
            "shipments",
            "IF NEW.id = 9 THEN NEW.raw_status := 'Y'; END IF; RETURN NEW;",
            "shipments row id 9 holds \"Y\" in raw_status where the source holds \"X\"",
        ),
        (
            "events",
            "IF NEW.id = 2 THEN RETURN NULL; END IF; RETURN NEW;",
            "events holds 3 rows in the source, 3 were copied and the target holds 2",
        ),
        (
            "events",
            "IF NEW.id = 2 THEN NEW.id := 200; END IF; RETURN NEW;",
            "events row id 2 is missing from the target",
        ),
    ];
    for (table, body, differs) in cases {
        let mut conn = pg.connect().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE OR REPLACE FUNCTION meddle() RETURNS trigger AS $$ BEGIN {body} END $$
                 LANGUAGE plpgsql;
             DROP TRIGGER IF EXISTS meddle ON shipments;
             DROP TRIGGER IF EXISTS meddle ON events;
             CREATE TRIGGER meddle BEFORE INSERT ON {table} FOR EACH ROW
                 EXECUTE FUNCTION meddle();"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
        let out = app.cli(&["copy", "--to", &pg.url]);
        assert!(!out.status.success(), "{table}: {body}");
        let said = stderr(&out);
        assert!(
            said.contains(&format!(
                "the copy does not agree with its source: {differs}; nothing was written"
            )),
            "{said}"
        );
        assert_eq!(said.trim().lines().count(), 1, "{said}");
        for table in ["shipments", "events", "notifications"] {
            assert_eq!(pg_count(&pg, table).await, 0, "{table}");
        }
    }
}
