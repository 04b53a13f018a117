//! The query plans the store relies on at scale, read from SQLite (`EXPLAIN QUERY PLAN`,
//! `EXPLAIN`) on an empty database made by the migrations: a statement that would read every row
//! of a table of millions fails here, not on a shop's machine.

use sqlx::{AssertSqlSafe, Row};

use super::*;
use crate::domain::ChannelKind;
use listing::PageReading;
use outbox::OutboxReading;

/// The `/metrics` gauges are counted at every scrape: from indexes, never by reading the
/// rows of the shipments or notifications table (1.1–1.2 s a scrape at a million shipments
/// and three million notifications; 0.16–0.19 s from the indexes). Read from the bytecode
/// of the statements (`EXPLAIN`): no `Column` is read through a cursor on either table. A
/// partial index whose condition the query repeats, as the outbox's counts do, leaves a table
/// cursor opened but never read, so the cursors opened alone would not say it.
#[tokio::test]
async fn the_gauges_are_counted_from_indexes_not_by_reading_rows() {
    let (_dir, db) = empty_db().await;
    let read = &db.lite().read;
    let tables: Vec<i64> = sqlx::query_scalar(
        "SELECT rootpage FROM sqlite_schema \
         WHERE type = 'table' AND name IN ('notifications', 'shipments')",
    )
    .fetch_all(read)
    .await
    .unwrap();
    assert_eq!(tables.len(), 2);
    for statement in [ops::OUTBOX_COUNTS, ops::SHIPMENT_COUNTS] {
        let program: Vec<(String, i64, i64)> =
            sqlx::query(AssertSqlSafe(format!("EXPLAIN {statement}")))
                .fetch_all(read)
                .await
                .unwrap()
                .iter()
                .map(|op| (op.get("opcode"), op.get("p1"), op.get("p2")))
                .collect();
        let on_a_table: Vec<i64> = program
            .iter()
            .filter(|(opcode, _, root)| opcode == "OpenRead" && tables.contains(root))
            .map(|(_, cursor, _)| *cursor)
            .collect();
        let rows_read = program
            .iter()
            .filter(|(opcode, cursor, _)| opcode == "Column" && on_a_table.contains(cursor))
            .count();
        assert_eq!(rows_read, 0, "{statement}: {program:?}");
    }
    // Each state of the outbox is counted on an index that holds its rows alone, never on
    // one of every row (the dead were what was left of the count of every row: 0.9 s a
    // scrape on PostgreSQL at three million notifications; migration 0019).
    assert_eq!(
        outbox_indexes_read(&db, ops::OUTBOX_COUNTS).await,
        [
            "notifications_due",
            "notifications_done (state=?)",
            "notifications_done (state=?)",
            "notifications_dead"
        ]
    );
    db.close().await;
}

/// A database made by the migrations with no rows, and the folder that holds it (kept while the
/// test runs).
async fn empty_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("plans.db"), Synchronous::Normal)
        .await
        .unwrap();
    (dir, db)
}

/// The index each step of `statement`'s plan reads the outbox by, with what it searches for
/// (`notifications_done (state=?)`); a step that reads the table itself is given whole.
async fn outbox_indexes_read(db: &Db, statement: &str) -> Vec<String> {
    query_plan(db, statement)
        .await
        .into_iter()
        .filter(|step| step.contains(" notifications "))
        .map(|step| match step.split_once(" INDEX ") {
            Some((_, index)) => index.to_owned(),
            None => step,
        })
        .collect()
}

/// The steps of SQLite's plan for `statement` (`EXPLAIN QUERY PLAN`), its parameters unbound.
async fn query_plan(db: &Db, statement: &str) -> Vec<String> {
    sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {statement}")))
        .fetch_all(&db.lite().read)
        .await
        .unwrap()
        .iter()
        .map(|step| step.get("detail"))
        .collect()
}

/// The nightly prune of delivered notifications reads the done index from its start to the
/// cutoff, not every delivered message kept (0.68–0.79 s a night at three million over 90
/// days, 0.12–0.13 s by the range).
#[tokio::test]
async fn the_prune_reads_the_delivered_notifications_only_up_to_its_cutoff() {
    let (_dir, db) = empty_db().await;
    let plan = query_plan(&db, &maintenance::prune_notifications_sql("?1")).await;
    assert_eq!(
        plan,
        ["SEARCH notifications USING INDEX notifications_done \
             (state=? AND channel=? AND created_at<?)"]
    );
    // Naming the channels leaves none out: an old message of each goes, and nothing else.
    let write = &db.lite().write;
    sqlx::query("INSERT INTO shipments (order_id, provider) VALUES ('P-1', 'sim')")
        .execute(write)
        .await
        .unwrap();
    let day = 86_400_000;
    let mut transition = 0;
    for channel in ChannelKind::ALL {
        for (state, age) in [("sent", 100), ("skipped", 100), ("sent", 1), ("dead", 100)] {
            transition += 1;
            sqlx::query(
                "INSERT INTO notifications (public_id, shipment_id, transition, channel, \
                     previous_status, status, payload, state, next_attempt_at, created_at, \
                     sent_at) \
                 VALUES (?1, 1, ?2, ?3, 'pending', 'in_transit', '{}', ?4, 0, ?5, ?5)",
            )
            .bind(format!("msg_{transition}"))
            .bind(transition)
            .bind(channel.as_str())
            .bind(state)
            .bind(1_800_000_000_000_i64 - age * day)
            .execute(write)
            .await
            .unwrap();
        }
    }
    let pruned = db.prune(1_800_000_000_000 - 90 * day).await.unwrap();
    assert_eq!(pruned.notifications, 2 * ChannelKind::ALL.len() as u64);
    let left: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT channel, state FROM notifications ORDER BY 1, 2")
            .fetch_all(write)
            .await
            .unwrap();
    let mut kept: Vec<(String, String)> = ChannelKind::ALL
        .iter()
        .flat_map(|c| {
            [
                (c.to_string(), "dead".into()),
                (c.to_string(), "sent".into()),
            ]
        })
        .collect();
    kept.sort();
    assert_eq!(left, kept);
    db.close().await;
}

/// The nightly prune of events reads the shipments left to prune on the index of those alone,
/// from its start to the cutoff, not every shipment ever finished: at 700,000 shipments finished
/// and pruned already, each night read them all again. It goes a slice at a time, and every
/// slice leaves the index as its events go.
#[tokio::test]
async fn the_prune_of_events_reads_only_the_shipments_left_to_prune() {
    let (_dir, db) = empty_db().await;
    let plan = query_plan(&db, &maintenance::clear_left_to_prune_sql()).await;
    assert!(
        plan.iter()
            .any(|step| step == "SEARCH shipments USING INDEX shipments_prunable (<expr><?)"),
        "{plan:?}"
    );
    assert!(
        !plan.iter().any(|step| step.starts_with("SCAN")),
        "{plan:?}"
    );
    // More than a slice ended long ago, one lately, and one was pruned already.
    let write = &db.lite().write;
    let day = 86_400_000;
    let now = 1_800_000_000_000_i64;
    let old = maintenance::PRUNE_SLICE * 5 / 2;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
         INSERT INTO shipments (order_id, provider, status, active, transitions, created_at, \
             status_changed_at, events_digest) \
         SELECT 'old-' || i, 'sim', 'delivered', 0, 1, ?2, ?2, i FROM n",
    )
    .bind(old)
    .bind(now - 100 * day)
    .execute(write)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO shipments (order_id, provider, status, active, transitions, created_at, \
             status_changed_at, events_digest) \
         VALUES ('lately', 'sim', 'returned', 0, 1, ?1, ?1, 7), \
                ('pruned', 'sim', 'expired', 0, 1, ?2, ?2, NULL); \
         INSERT INTO events (shipment_id, time, description) \
         SELECT id, created_at + n, 'scan' FROM shipments, (SELECT 1 AS n UNION SELECT 2) \
         WHERE order_id <> 'pruned'",
    )
    .bind(now - day)
    .bind(now - 200 * day)
    .execute(write)
    .await
    .unwrap();
    let pruned = db.prune(now - 90 * day).await.unwrap();
    assert_eq!(pruned.events, 2 * old as u64);
    let left: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT order_id, (SELECT count(*) FROM events WHERE shipment_id = shipments.id), \
             events_digest \
         FROM shipments WHERE order_id NOT LIKE 'old-%' OR events_digest IS NOT NULL \
             OR id IN (SELECT shipment_id FROM events) ORDER BY order_id",
    )
    .fetch_all(write)
    .await
    .unwrap();
    assert_eq!(
        left,
        [("lately".into(), 2, Some(7)), ("pruned".into(), 0, None)]
    );
    assert_eq!(db.prune(now - 90 * day).await.unwrap().events, 0);
    db.close().await;
}

/// Under the write lock, a sweep or alert reads again only the shipments it found on a reader,
/// each by its id: the lock is held for them, not for another read of the table.
#[tokio::test]
async fn the_sweeps_read_under_the_lock_only_the_shipments_they_found() {
    use maintenance::Reading;
    let (_dir, db) = empty_db().await;
    let columns = SHIPMENT_COLUMNS.to_string();
    for statement in [
        maintenance::sweep_sql(maintenance::QUIET_FOR_GOOD, &columns, Reading::Found),
        maintenance::sweep_sql(maintenance::NEVER_SEEN, &columns, Reading::Found),
        maintenance::stuck_sql(&columns, Reading::Found),
    ] {
        let plan = query_plan(&db, &statement).await;
        let shipments: Vec<&String> = plan.iter().filter(|s| s.contains(" shipments")).collect();
        assert_eq!(
            shipments,
            ["SEARCH shipments USING INTEGER PRIMARY KEY (rowid=?)"],
            "{statement}: {plan:?}"
        );
    }
    db.close().await;
}

/// `stats` counts shipments and notifications from indexes, never by grouping every row of
/// either table (2.1 s at a million shipments and three million notifications; 0.5 s).
#[tokio::test]
async fn stats_counts_from_indexes() {
    let (_dir, db) = empty_db().await;
    assert_eq!(
        query_plan(&db, ops::STATS_SHIPMENTS).await,
        [
            "SCAN shipments USING COVERING INDEX shipments_status",
            "USE TEMP B-TREE FOR ORDER BY"
        ]
    );
    assert_eq!(
        outbox_indexes_read(&db, &ops::stats_notifications_sql("")).await,
        [
            "notifications_queue",
            "notifications_done (state=?)",
            "notifications_dead"
        ]
    );
    db.close().await;
}

/// A page of a listing (`list`, `outbox`, the API's `GET /v1/shipments`) starts at its
/// cursor in the table, and a shipment's notifications (`show`, the API's `GET` of one) are
/// found by the outbox's key on the shipment: neither reads the rows before it or beside it
/// (a page at the end of a million shipments took 89 ms, a `show` at three million
/// notifications 0.85 s).
#[tokio::test]
async fn listings_read_from_their_cursor_and_a_shipment_s_notifications_by_its_key() {
    let (_dir, db) = empty_db().await;
    assert_eq!(
        query_plan(
            &db,
            &listing::shipments_page_sql(PageReading::FromCursor, None)
        )
        .await,
        ["SEARCH shipments USING INTEGER PRIMARY KEY (rowid>?)"]
    );
    assert_eq!(
        query_plan(
            &db,
            &outbox::notifications_page_sql(OutboxReading::FromCursor)
        )
        .await,
        [
            "SEARCH n USING INTEGER PRIMARY KEY (rowid>?)",
            "SEARCH s USING INTEGER PRIMARY KEY (rowid=?)"
        ]
    );
    // The dead ones, from their own index (migration 0019), in its order.
    assert_eq!(
        query_plan(&db, &outbox::notifications_page_sql(OutboxReading::Dead)).await,
        [
            "SEARCH n USING INDEX notifications_dead (id>?)",
            "SEARCH s USING INTEGER PRIMARY KEY (rowid=?)"
        ]
    );
    // The pending ones, while few, from their own index, counted there first.
    assert_eq!(
        query_plan(
            &db,
            &outbox::notifications_page_sql(OutboxReading::FewPending)
        )
        .await,
        [
            "SCAN n USING INDEX notifications_due",
            "SEARCH s USING INTEGER PRIMARY KEY (rowid=?)",
            "USE TEMP B-TREE FOR ORDER BY"
        ]
    );
    let count = query_plan(&db, outbox::PENDING_COUNT).await;
    assert!(
        count.contains(&"SCAN notifications USING COVERING INDEX notifications_due".to_owned()),
        "{count:?}"
    );
    // `retry --dead` finds them there too; `retry ID…` by their keys.
    assert_eq!(
        query_plan(&db, &outbox::requeue_sql(false)).await,
        ["SCAN notifications USING COVERING INDEX notifications_dead"]
    );
    let named = query_plan(&db, &outbox::requeue_sql(true)).await;
    assert!(
        named[0].starts_with("SEARCH notifications USING INTEGER PRIMARY KEY (rowid=?)"),
        "{named:?}"
    );
    let by_shipment = query_plan(&db, &outbox::shipment_notifications_sql()).await;
    assert!(
        by_shipment
            .iter()
            .any(|step| step.starts_with("SEARCH n USING INDEX")
                && step.ends_with("(shipment_id=?)"))
            && !by_shipment.iter().any(|step| step.starts_with("SCAN")),
        "{by_shipment:?}"
    );
    db.close().await;
}

/// A listing of the shipments of a status, tier or provider (`list --status`, `--tier`,
/// `--provider`, the API's `status`, `tier`, `provider`) or changed since a time (`list
/// --since`, `updated_since`) counts them on the index that holds them, and when they are few
/// takes them from it (0.13–0.16 s a page at a million shipments along the table, under a
/// millisecond from the index): it never reads the table for a count, nor along the table for
/// the few, nor the whole status index for a tier or a provider alone.
#[tokio::test]
async fn a_listing_of_few_shipments_takes_them_from_their_index() {
    let (_dir, db) = empty_db().await;
    let filter =
        |status: Option<Status>, tier: Option<Tier>, provider: Option<&str>| ShipmentFilter {
            status,
            tier,
            provider: provider.map(str::to_owned),
            ..Default::default()
        };
    let of_status = [
        (
            filter(Some(Status::Exception), None, None),
            "shipments_status (status=?)",
        ),
        (
            filter(Some(Status::Exception), Some(Tier::High), None),
            "shipments_status (status=? AND tier=?)",
        ),
        (
            filter(None, Some(Tier::High), None),
            "shipments_status (status=? AND tier=?)",
        ),
        (
            filter(None, None, Some("kuaidi100")),
            "shipments_status (status=? AND tier=? AND provider=?)",
        ),
        (
            filter(Some(Status::Exception), None, Some("kuaidi100")),
            "shipments_status (status=? AND tier=? AND provider=?)",
        ),
    ];
    fn terms(filter: &ShipmentFilter) -> Option<String> {
        listing::status_index_terms(filter, ["?1", "?2", "?3"])
    }
    assert_eq!(terms(&ShipmentFilter::default()), None);
    for (filter, index) in &of_status {
        let terms = terms(filter).unwrap();
        let count = listing::status_count_sql(&terms);
        let plan = query_plan(&db, &count).await;
        let of_shipments: Vec<&String> = plan.iter().filter(|s| s.contains(" shipments")).collect();
        assert_eq!(
            of_shipments,
            [&format!("SEARCH shipments USING COVERING INDEX {index}")],
            "{filter:?}: {plan:?}"
        );
        assert_eq!(
            query_plan(
                &db,
                &listing::shipments_page_sql(PageReading::FewOfStatus, Some(&terms))
            )
            .await,
            [
                format!("SEARCH shipments USING INDEX {index}"),
                "USE TEMP B-TREE FOR ORDER BY".to_owned()
            ],
            "{filter:?}"
        );
    }
    let plan = query_plan(&db, listing::CHANGED_COUNT).await;
    let of_shipments: Vec<&String> = plan.iter().filter(|s| s.contains(" shipments")).collect();
    assert_eq!(
        of_shipments,
        ["SEARCH shipments USING COVERING INDEX shipments_changed (<expr>>?)"],
        "{plan:?}"
    );
    assert_eq!(
        query_plan(
            &db,
            &listing::shipments_page_sql(PageReading::FewChanged, None)
        )
        .await,
        [
            "SEARCH shipments USING INDEX shipments_changed (<expr>>?)",
            "USE TEMP B-TREE FOR ORDER BY"
        ]
    );
    db.close().await;
}

/// `outbox` reads the dead from their index, the pending from theirs while they are fewer than
/// 10,000, and every other listing along the table.
#[test]
fn the_outbox_reads_the_dead_and_the_few_pending_from_their_indexes() {
    use OutboxReading::*;
    let few = listing::FEW;
    for (state, pending, reading) in [
        (None, None, FromCursor),
        (Some("sent"), None, FromCursor),
        (Some("skipped"), None, FromCursor),
        (Some("dead"), None, Dead),
        (Some("pending"), Some(0), FewPending),
        (Some("pending"), Some(few - 1), FewPending),
        (Some("pending"), Some(few), FromCursor),
    ] {
        assert_eq!(
            outbox::outbox_reading(state, pending),
            reading,
            "{state:?} with {pending:?} pending"
        );
    }
}

/// A listing reads from the index that holds fewer of the shipments it asks for, while they
/// are fewer than 10,000, and along the table otherwise.
#[test]
fn a_listing_reads_from_the_index_of_the_fewest() {
    use PageReading::*;
    let few = listing::FEW;
    for (of_status, changed, reading) in [
        (None, None, FromCursor),
        (Some(0), None, FewOfStatus),
        (Some(few - 1), None, FewOfStatus),
        (Some(few), None, FromCursor),
        (None, Some(3), FewChanged),
        (None, Some(few), FromCursor),
        (Some(5), Some(3), FewChanged),
        (Some(3), Some(5), FewOfStatus),
        (Some(3), Some(3), FewOfStatus),
        (Some(few), Some(few - 1), FewChanged),
        (Some(few - 1), Some(few), FewOfStatus),
        (Some(few), Some(few), FromCursor),
    ] {
        assert_eq!(
            listing::page_reading(of_status, changed),
            reading,
            "{of_status:?} of the status, {changed:?} changed"
        );
    }
}

/// A poll that brings events without a new status writes none of the indexes of the status or
/// of the time it changed: SQLite rewrites the entries of every index on a column an UPDATE sets,
/// whatever the value, so the statement that refreshes details does not set those columns. Read
/// from the bytecode: the indexes each statement opens to write.
#[tokio::test]
async fn a_poll_without_a_new_status_leaves_the_status_indexes_alone() {
    let (_dir, db) = empty_db().await;
    let read = &db.lite().read;
    let indexes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT name, rootpage FROM sqlite_schema \
         WHERE type = 'index' AND tbl_name = 'shipments' AND sql IS NOT NULL",
    )
    .fetch_all(read)
    .await
    .unwrap();
    let written = async |statement: &str| -> Vec<String> {
        let program: Vec<(String, i64)> =
            sqlx::query(AssertSqlSafe(format!("EXPLAIN {statement}")))
                .fetch_all(read)
                .await
                .unwrap()
                .iter()
                .map(|op| (op.get("opcode"), op.get("p2")))
                .collect();
        let mut names: Vec<String> = indexes
            .iter()
            .filter(|(_, root)| program.contains(&("OpenWrite".to_owned(), *root)))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    };
    let refresh = written(polls::update_sql(false)).await;
    let change = written(polls::update_sql(true)).await;
    for index in [
        "shipments_changed",
        "shipments_status",
        "shipments_unknown_provider",
    ] {
        assert!(!refresh.contains(&index.to_owned()), "{index}: {refresh:?}");
        assert!(change.contains(&index.to_owned()), "{index}: {change:?}");
    }
    db.close().await;
}
