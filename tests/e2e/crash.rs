//! kill -9 at any moment loses nothing: a status change and its notification commit together,
//! and a notification is never queued twice, however often the daemon dies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shipwatch::storage::receipts::Receipt;
use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::support::app::{Engine, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::hostile::SlowWebhook;
use crate::support::on_both_engines;

on_both_engines!(
    killing_the_daemon_mid_run_loses_and_duplicates_no_notification,
    a_delivery_accepted_just_before_a_kill_is_not_sent_again,
);

fn tid(i: u64) -> u64 {
    6_100_000_000_000_000_000 + i
}

async fn killing_the_daemon_mid_run_loses_and_duplicates_no_notification(engine: Engine) {
    let app = TestApp::start_on(engine).await;
    for i in 0..12 {
        app.top.journey(tid(i));
        let tier = ["high", "normal", "low"][i as usize % 3];
        app.cli_ok(&["add", &tid(i).to_string(), "--tier", tier]);
    }

    // Three kills at different points of the run, each followed by a fresh start.
    let mut daemon = app.spawn_daemon();
    for target in [8, 20, 35] {
        app.wait_until(
            &format!("{target} webhook requests have arrived"),
            Duration::from_secs(60),
            || app.receiver.deliveries().len() >= target,
        )
        .await;
        daemon.kill9();
        daemon = app.spawn_daemon();
    }
    app.wait_until(
        "every parcel is delivered and every notification sent",
        Duration::from_secs(90),
        || {
            app.shipments().iter().all(|s| s["status"] == "delivered")
                && app.outbox(Some("pending")).is_empty()
        },
    )
    .await;
    assert!(daemon.terminate().success());

    // In the database: one row per change the daemon committed, each sent, and the changes of
    // each shipment link up from `pending` to `delivered` with no gap and no repeat. (The fake
    // serves each poll the next step of the journey; an answer served just before a kill is never
    // committed, so the next poll may skip a step, as a real trace read late would.)
    let outbox = app.outbox(None);
    let mut chains: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for n in &outbox {
        assert_eq!(n["state"], "sent", "{n}");
        chains
            .entry(n["order_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                n["previous_status"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            ));
    }
    assert_eq!(chains.len(), 12);
    for (order, chain) in &chains {
        let mut at = "pending";
        for (from, to) in chain {
            assert_eq!(
                from, at,
                "order {order}: a change was lost or queued twice: {chain:?}"
            );
            at = to;
        }
        assert_eq!(at, "delivered", "order {order}: {chain:?}");
    }
    assert!(
        outbox.len() >= 12 * 4,
        "most steps are seen even with three kills: {outbox:#?}"
    );

    // At the receiver: every queued change arrived (a delivery cut short by the kill may arrive
    // twice, under the same webhook-id, which receivers deduplicate on), and nothing else did.
    let mut bodies_per_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in app.receiver.deliveries() {
        assert!(d.verified);
        bodies_per_id
            .entry(d.webhook_id.clone())
            .or_default()
            .insert(d.raw_body.clone());
    }
    let queued: BTreeSet<String> = outbox
        .iter()
        .map(|n| n["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued.len(), outbox.len(), "one webhook-id per row");
    assert_eq!(
        bodies_per_id.keys().cloned().collect::<BTreeSet<_>>(),
        queued,
        "the receiver got exactly the queued changes"
    );
    assert!(
        bodies_per_id.values().all(|bodies| bodies.len() == 1),
        "a retry must resend the same body under the same id"
    );
    assert_eq!(app.top.signature_failures(), 0);
}

/// One SQLite file, one daemon; on PostgreSQL several share the database (`several_daemons`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_database_is_refused() {
    let app = TestApp::start().await;
    let mut first = app.spawn_daemon();
    app.wait_until(
        "the first daemon has started",
        Duration::from_secs(20),
        || first.log().contains("shipwatch started"),
    )
    .await;
    let mut second = app.spawn_daemon();
    let status = second
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("a second daemon exits at once");
    assert!(!status.success());
    let log = second.log();
    assert!(
        log.contains(&format!(
            "another shipwatch (pid {}) is running on",
            first.pid()
        )),
        "{log}"
    );
    assert!(first.terminate().success());
}

/// A daemon killed mid-poll and mid-delivery leaves the shipment claimed and the message leased
/// for minutes (`lease`, 5 minutes by default). One SQLite file has one daemon, so the next one
/// frees them as it starts: the order is polled and the message delivered within seconds, not
/// once the lease runs out, and the attempt begun before the kill stays counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_daemon_held_is_taken_up_at_once_by_the_next() {
    let app = TestApp::start().await;
    let (polling, delivering) = (tid(50).to_string(), tid(51).to_string());
    for order in [&polling, &delivering] {
        app.top.journey(order.parse().unwrap());
        app.cli_ok(&["add", order]);
    }
    // Its first change queued, the message not yet sent.
    app.cli_ok(&["poll", &delivering, "--apply"]);
    // As the killed daemon left them: both claimed, the message leased with an attempt begun.
    let held = chrono::Utc::now().timestamp_millis() + 10 * 60_000;
    app.sql(&format!(
        "UPDATE shipments SET claimed_until = {held}; \
         UPDATE notifications SET lease_until = {held}, attempts = 1"
    ))
    .await
    .unwrap();

    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the held order is polled and the held message delivered",
        Duration::from_secs(30),
        || {
            app.shipment(&polling)["shipment"]["status"] != "pending"
                && app
                    .receiver
                    .deliveries()
                    .iter()
                    .any(|d| d.raw_body.contains(&delivering))
        },
    )
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    // The attempt the killed daemon began stays counted.
    let sent: Vec<_> = app
        .outbox(None)
        .into_iter()
        .filter(|n| n["order_id"] == delivering.as_str() && n["state"] == "sent")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["attempts"], 2, "{sent:?}");
}

/// The receiver says yes, and the daemon is killed before its `sent` mark is committed (the
/// test holds the write lock meanwhile: SQLite's, or PostgreSQL's on the outbox table): the
/// receipt written at the yes keeps the next daemon from sending it again
/// (`storage::receipts`).
async fn a_delivery_accepted_just_before_a_kill_is_not_sent_again(engine: Engine) {
    let receiver = SlowWebhook::gated().await;
    let arrived = || -> Vec<String> { receiver.requests().into_iter().map(|(id, _)| id).collect() };
    let app = TestApp::builder()
        .engine(engine)
        .receipts_on_postgres()
        .provider(Provider::top())
        .channel(Channel::webhook_to(&receiver.url))
        .tiers("1s", "1s", "1s")
        .start()
        .await;
    let checked = app.cli_ok(&["check-config"]);
    assert!(
        checked.contains(&format!("receipts  {}", app.receipts().display())),
        "check-config says where the receipts go: {checked}"
    );
    let order = tid(900);
    app.top.journey(order);
    app.cli_ok(&["add", &order.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the first webhook reaches the receiver",
        Duration::from_secs(30),
        || !arrived().is_empty(),
    )
    .await;

    // Nothing the daemon writes to the outbox gets through from here on: its `sent` mark waits.
    let mut lock = WriteLock::take(&app).await;
    let first = arrived()[0].clone();
    receiver.open();
    let receipts = app.receipts();
    app.wait_until(
        "the daemon writes the receipt of the delivery accepted",
        Duration::from_secs(30),
        || std::fs::metadata(&receipts).is_ok_and(|m| m.len() > 0),
    )
    .await;
    daemon.kill9();
    // A first start has no receipts to read back, and says nothing of them.
    let log = daemon.log();
    assert!(
        !log.contains("marked_sent") && !log.contains("ignored_lines"),
        "{log}"
    );
    let written = std::fs::read_to_string(&receipts).unwrap();
    let receipt = Receipt::parse(written.lines().next().unwrap()).unwrap();
    // A receipt cut short, as a power cut leaves the line being written: ignored, and said so.
    std::fs::write(
        &receipts,
        format!("{written}{}", &written.lines().next().unwrap()[..20]),
    )
    .unwrap();
    assert_eq!(
        lock.state_of(&first).await,
        ("pending".to_owned(), Some(receipt.lease_until)),
        "killed before its mark: still pending under the claim the receipt names"
    );
    lock.release().await;

    // The next daemon marks it sent instead of sending it again, and the journey goes on.
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the parcel is delivered and every notification sent",
        Duration::from_secs(60),
        || app.shipments()[0]["status"] == "delivered" && app.outbox(Some("pending")).is_empty(),
    )
    .await;
    assert!(daemon.terminate().success());
    let log = daemon.log();
    assert!(log.contains("marked_sent=1"), "{log}");
    assert!(log.contains("ignored_lines=1"), "{log}");
    let outbox = app.outbox(None);
    let row = outbox
        .iter()
        .find(|n| n["webhook_id"] == first.as_str())
        .unwrap();
    assert_eq!(row["state"], "sent", "{row}");
    assert_eq!(row["attempts"], 1, "{row}");
    let arrived = arrived();
    for n in &outbox {
        let id = n["webhook_id"].as_str().unwrap();
        assert_eq!(
            arrived.iter().filter(|a| *a == id).count(),
            1,
            "{id} ({}) arrived {arrived:?}",
            n["status"]
        );
    }
}

/// Two daemons on one PostgreSQL database, on one machine, given the same receipts' file: the
/// file is the first one's, and the second says so and goes on without receipts (neither reads
/// nor empties the first one's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_given_the_same_receipts_file_goes_on_without_receipts() {
    let app = TestApp::builder()
        .engine(Engine::Postgres)
        .receipts_on_postgres()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .start()
        .await;
    let started = |daemon: &crate::support::app::Daemon| daemon.log().contains("shipwatch started");
    let first = app.spawn_daemon();
    app.wait_until("the first daemon starts", Duration::from_secs(30), || {
        started(&first)
    })
    .await;
    let second = app.spawn_daemon();
    app.wait_until("the second daemon starts", Duration::from_secs(30), || {
        started(&second)
    })
    .await;
    let held = "another running daemon keeps its delivery receipts in this file";
    assert!(second.log().contains(held), "{}", second.log());
    assert!(!first.log().contains(held), "{}", first.log());

    // Both go on: an order added now is delivered, by whichever claims it.
    let order = tid(901);
    app.top.journey(order);
    app.cli_ok(&["add", &order.to_string(), "--tier", "high"]);
    app.wait_until(
        "the order's first change is delivered",
        Duration::from_secs(30),
        || !app.receiver.deliveries().is_empty(),
    )
    .await;
    for mut daemon in [first, second] {
        assert!(daemon.terminate().success(), "{}", daemon.log());
    }
}

/// The database's write lock, held by the test: SQLite's (`BEGIN IMMEDIATE`), or on PostgreSQL
/// the outbox table's (`LOCK TABLE … IN EXCLUSIVE MODE`: reads go on, writes wait).
enum WriteLock {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl WriteLock {
    async fn take(app: &TestApp) -> WriteLock {
        match &app.pg {
            None => {
                let mut conn = SqliteConnection::connect(&format!("sqlite://{}", app.db.display()))
                    .await
                    .unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                WriteLock::Sqlite(conn)
            }
            Some(pg) => {
                let mut conn = PgConnection::connect(&pg.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("LOCK TABLE notifications IN EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                WriteLock::Postgres(conn)
            }
        }
    }

    /// A notification's state and lease, read under the lock.
    async fn state_of(&mut self, public_id: &str) -> (String, Option<i64>) {
        match self {
            WriteLock::Sqlite(conn) => {
                sqlx::query_as("SELECT state, lease_until FROM notifications WHERE public_id = ?")
                    .bind(public_id)
                    .fetch_one(conn)
                    .await
                    .unwrap()
            }
            WriteLock::Postgres(conn) => {
                sqlx::query_as("SELECT state, lease_until FROM notifications WHERE public_id = $1")
                    .bind(public_id)
                    .fetch_one(conn)
                    .await
                    .unwrap()
            }
        }
    }

    /// Lets go. On PostgreSQL, the killed daemon's sessions are ended first, as the server ends
    /// them once it notices: otherwise its `sent` mark, waiting on the lock, would commit now.
    async fn release(self) {
        match self {
            WriteLock::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            WriteLock::Postgres(mut conn) => {
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .execute(&mut conn)
                .await
                .unwrap();
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}
