//! Values of the wrong storage class in `shipments` (SQLite's affinity lets a REAL, a BLOB or a
//! TEXT into any column): the schema refuses them at INSERT, naming the column; and rows that got
//! in before the schema refused them are flagged one by one while their neighbours are polled,
//! with `list` working and `/healthz` healthy throughout.

use std::time::Duration;

use crate::support::app::TestApp;
use crate::support::config::{Channel, Provider};
use crate::support::free_port;

fn tid(i: u64) -> u64 {
    9_600_000_000_000_000_000 + i
}

/// The mistyped rows of the issue that found this: (order id, the SQL, the column the reason names).
fn mistyped() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "W-REAL",
            "INSERT INTO shipments (order_id, provider, transitions) VALUES ('W-REAL', 'taobao', 1.5)",
            "transitions",
        ),
        (
            "W-BLOB",
            "INSERT INTO shipments (order_id, provider, carrier) VALUES ('W-BLOB', 'taobao', x'00ff1b')",
            "carrier",
        ),
        (
            "W-TEXT",
            "INSERT INTO shipments (order_id, provider, next_poll_at) VALUES ('W-TEXT', 'taobao', 'soon')",
            "next_poll_at",
        ),
        (
            "W-CREATED",
            "INSERT INTO shipments (order_id, provider, created_at) VALUES ('W-CREATED', 'taobao', 1764300000000.5)",
            "created_at",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_refuses_a_mistyped_value_and_names_the_column() {
    let app = TestApp::start().await;
    app.create_database();
    for (_, sql, column) in mistyped() {
        let err = app.sql(sql).await.unwrap_err();
        assert!(err.contains(&format!("{column} must be")), "{sql}: {err}");
    }
    // What affinity turns into the right class is fine: '5' into 5, 2.0 into 2.
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, transitions, next_poll_at) VALUES ('{}', 'taobao', '5', 2.0)",
        tid(0)
    ))
    .await
    .unwrap();
    // An UPDATE is held to the same rule.
    let err = app
        .sql("UPDATE shipments SET last_event_at = 'yesterday'")
        .await
        .unwrap_err();
    assert!(err.contains("last_event_at must be an integer"), "{err}");
    assert_eq!(app.shipments().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_rows_from_before_the_check_are_flagged_alone_and_their_neighbours_flow() {
    let port = free_port();
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .section(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .start()
        .await;
    app.create_database();
    // Rows stored before the schema refused them: the insert check (as 0011 made it last) is
    // lifted for them only.
    let trigger = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/0011_openid.sql"
    ))
    .unwrap();
    let create_insert_check = trigger
        .split("CREATE TRIGGER shipments_typed_update")
        .next()
        .unwrap()
        .split_once("CREATE TRIGGER")
        .map(|(_, rest)| format!("CREATE TRIGGER{rest}"))
        .unwrap();
    let mut sql = String::from("DROP TRIGGER shipments_typed_insert;\n");
    for (_, insert, _) in mistyped() {
        sql.push_str(insert);
        sql.push_str(";\n");
    }
    sql.push_str(&create_insert_check);
    app.sql(&sql).await.unwrap();
    // Good rows beside them, more than one claim's worth together with the bad ones.
    for i in 1..=6 {
        app.top.journey(tid(i));
        app.sql(&format!(
            "INSERT INTO shipments (order_id, provider, tier) VALUES ('{}', 'taobao', 'high')",
            tid(i)
        ))
        .await
        .unwrap();
    }
    // `list` reads every row, the mistyped ones included.
    let before = app.shipments();
    assert_eq!(before.len(), 10, "{before:?}");

    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the good rows are delivered",
        Duration::from_secs(60),
        || {
            app.shipments()
                .iter()
                .filter(|s| s["order_id"].as_str().unwrap().starts_with("96"))
                .all(|s| s["status"] == "delivered")
        },
    )
    .await;
    let list = app.shipments();
    for (order_id, _, column) in mistyped() {
        let row = list.iter().find(|s| s["order_id"] == order_id).unwrap();
        assert_eq!(row["active"], false, "{row}");
        let reason = row["error"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("{column} holds a ")),
            "{reason}"
        );
    }
    let table = app.cli_ok(&["list"]);
    assert!(
        table.contains("INVALID: transitions holds a real value"),
        "{table}"
    );
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let log = daemon.log();
    assert!(!log.contains("NOT WRITABLE"), "{log}");
    assert!(daemon.terminate().success(), "{log}");
}
