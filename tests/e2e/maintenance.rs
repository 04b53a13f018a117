//! Maintenance jobs against a real database file, with time passed in explicitly; and a prune of a
//! large history through the real binary, whose SQLite is configured as a user's is.

use std::sync::Arc;
use std::time::Duration;

use shipwatch::clock::ManualClock;
use shipwatch::config::Synchronous;
use shipwatch::domain::{Status, Tier};
use shipwatch::events::Events;
use shipwatch::maintenance::{self, Maintenance, MaintenanceConfig, Schedules};
use shipwatch::notify::{ChannelKind, ChannelRule};
use shipwatch::storage::{Db, NewShipment};
use sqlx::SqlitePool;

use crate::support::app::{Engine, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::on_both_engines;

const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

struct Fixture {
    db: Db,
    /// A second connection, as an outside tool would have, to set up rows and read them back.
    sql: SqlitePool,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let db = Db::open(&path, Synchronous::Normal).await.unwrap();
    let sql = SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    Fixture { db, sql, dir }
}

fn webhook() -> Vec<ChannelRule> {
    vec![ChannelRule::new(ChannelKind::Webhook, Status::ALL.to_vec())]
}

impl Fixture {
    async fn add(&self, order_id: &str, created_at: i64) -> i64 {
        self.db
            .add_shipment(
                &NewShipment {
                    order_id: order_id.to_owned(),
                    provider: "taobao".to_owned(),
                    tracking_no: Some("ZT123".to_owned()),
                    carrier: Some("中通速递".to_owned()),
                    tier: Tier::Normal,
                    phone: None,
                    email: None,
                    openid: None,
                    sub_orders: None,
                },
                created_at,
            )
            .await
            .unwrap()
            .id
    }

    async fn set(&self, id: i64, status: &str, active: bool, last_event_at: Option<i64>) {
        sqlx::query(
            "UPDATE shipments SET status = ?, active = ?, last_event_at = ?, transitions = 1, \
             status_changed_at = coalesce(?, status_changed_at) WHERE id = ?",
        )
        .bind(status)
        .bind(active)
        .bind(last_event_at)
        .bind(last_event_at)
        .bind(id)
        .execute(&self.sql)
        .await
        .unwrap();
    }

    async fn notifications(&self, id: i64) -> Vec<(String, String, String, String)> {
        sqlx::query_as(
            "SELECT kind, channel, status, state FROM notifications WHERE shipment_id = ? \
             ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.sql)
        .await
        .unwrap()
    }

    async fn payloads(&self, id: i64) -> Vec<serde_json::Value> {
        sqlx::query_scalar::<_, String>(
            "SELECT payload FROM notifications WHERE shipment_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.sql)
        .await
        .unwrap()
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect()
    }
}

/// The orders a sweep changed.
fn orders(changed: Vec<maintenance::Changed>) -> Vec<String> {
    changed.into_iter().map(|c| c.order_id).collect()
}

/// What a sweep with nothing to do returns.
const NOTHING_CHANGED: [&str; 0] = [];

fn row(kind: &str, status: &str, state: &str) -> (String, String, String, String) {
    (
        kind.to_owned(),
        "webhook".to_owned(),
        status.to_owned(),
        state.to_owned(),
    )
}

#[tokio::test]
async fn a_shipment_with_no_news_for_a_month_expires_once_and_is_announced() {
    let f = fixture().await;
    let now = T0 + 40 * DAY;
    let quiet = f.add("quiet", T0).await;
    f.set(quiet, "in_transit", true, Some(now - 31 * DAY)).await;
    let delivered = f.add("delivered", T0).await;
    f.set(delivered, "delivered", false, Some(now - 35 * DAY))
        .await;
    let fresh = f.add("fresh", T0).await;
    f.set(fresh, "in_transit", true, Some(now - 2 * DAY)).await;
    let expire_after = Duration::from_secs(30 * 86_400);

    assert_eq!(
        orders(
            maintenance::expire_changes(&f.db, now, expire_after, &webhook())
                .await
                .unwrap()
        ),
        ["quiet"]
    );
    let row_after = f.db.shipment("quiet").await.unwrap();
    assert_eq!(row_after.status, Status::Expired);
    assert!(!row_after.active);
    assert_eq!(row_after.transitions, 2);
    assert_eq!(row_after.status_changed_at, Some(now));
    assert_eq!(
        f.notifications(quiet).await,
        [row("status_changed", "expired", "pending")]
    );
    let payload = &f.payloads(quiet).await[0];
    assert_eq!(payload["type"], "shipment.status_changed");
    assert_eq!(payload["data"]["previous_status"], "in_transit");
    assert_eq!(payload["data"]["raw_status"], "no update for 30 days");

    assert_eq!(
        orders(
            maintenance::expire_changes(&f.db, now + DAY, expire_after, &webhook())
                .await
                .unwrap()
        ),
        NOTHING_CHANGED
    );
    assert_eq!(f.notifications(quiet).await.len(), 1);
    assert_eq!(
        f.db.shipment("delivered").await.unwrap().status,
        Status::Delivered
    );
    assert_eq!(
        f.db.shipment("fresh").await.unwrap().status,
        Status::InTransit
    );
    assert!(f.notifications(delivered).await.is_empty());
    assert!(f.notifications(fresh).await.is_empty());
}

#[tokio::test]
async fn a_shipment_the_carrier_never_saw_becomes_an_exception_and_stays_polled() {
    let f = fixture().await;
    let now = T0 + 4 * DAY;
    let old = f.add("old", T0).await;
    let young = f.add("young", now - 2 * DAY).await;
    let after = Duration::from_secs(3 * 86_400);

    assert_eq!(
        orders(
            maintenance::no_info_changes(&f.db, now, after, &webhook())
                .await
                .unwrap()
        ),
        ["old"]
    );
    let flagged = f.db.shipment("old").await.unwrap();
    assert_eq!(flagged.status, Status::Exception);
    assert!(flagged.active, "the carrier may still scan it");
    assert_eq!(
        flagged.error.as_deref(),
        Some("no carrier information after 3 days")
    );
    assert_eq!(
        flagged.raw_status.as_deref(),
        Some("no carrier information after 3 days")
    );
    assert_eq!(
        f.notifications(old).await,
        [row("status_changed", "exception", "pending")]
    );
    assert_eq!(
        f.db.shipment("young").await.unwrap().status,
        Status::Pending
    );
    assert!(f.notifications(young).await.is_empty());
    assert_eq!(
        orders(
            maintenance::no_info_changes(&f.db, now + DAY, after, &webhook())
                .await
                .unwrap()
        ),
        NOTHING_CHANGED
    );
}

/// The group robots hear of a stalled parcel too, in their own message shape; the buyers'
/// channels do not, and a robot whose `alerts` leave it out is not told.
#[tokio::test]
async fn a_stalled_parcel_is_told_to_the_robots_as_well_as_the_webhook() {
    let f = fixture().await;
    let now = T0 + 10 * DAY;
    let id = f.add("stalled", T0).await;
    f.set(id, "in_transit", true, Some(now - 80 * HOUR)).await;
    let mut quiet_wecom = ChannelRule::new(ChannelKind::Wecom, Status::ALL.to_vec());
    quiet_wecom.alerts.stuck = false;
    let channels = vec![
        ChannelRule::new(ChannelKind::Webhook, Status::ALL.to_vec()),
        ChannelRule::new(ChannelKind::Email, Status::ALL.to_vec()),
        ChannelRule::new(ChannelKind::Dingtalk, Status::ALL.to_vec()),
        quiet_wecom,
        ChannelRule::new(ChannelKind::Feishu, Status::ALL.to_vec()),
    ];
    let after = Duration::from_secs(72 * 3_600);
    assert_eq!(
        maintenance::stuck_alerts(&f.db, now, after, &channels)
            .await
            .unwrap(),
        ["stalled"]
    );
    let rows: Vec<(String, String)> = f
        .notifications(id)
        .await
        .into_iter()
        .map(|(kind, channel, _, _)| (kind, channel))
        .collect();
    assert_eq!(
        rows,
        [
            ("stuck".to_owned(), "webhook".to_owned()),
            ("stuck".to_owned(), "dingtalk".to_owned()),
            ("stuck".to_owned(), "feishu".to_owned()),
        ]
    );
    let payloads = f.payloads(id).await;
    let dingtalk = payloads[1]["markdown"]["text"].as_str().unwrap();
    assert!(dingtalk.contains("已 80 小时没有新动态"), "{dingtalk}");
    assert!(dingtalk.contains("stalled"), "{dingtalk}");
    assert_eq!(payloads[2]["msg_type"], "interactive", "{}", payloads[2]);
    // Once per stall on every channel.
    assert_eq!(
        maintenance::stuck_alerts(&f.db, now + HOUR, after, &channels)
            .await
            .unwrap(),
        NOTHING_CHANGED
    );
}

#[tokio::test]
async fn a_stalled_parcel_is_reported_once_per_stall() {
    let f = fixture().await;
    let now = T0 + 10 * DAY;
    let id = f.add("stalled", T0).await;
    f.set(id, "in_transit", true, Some(now - 80 * HOUR)).await;
    let moving = f.add("moving", T0).await;
    f.set(moving, "in_transit", true, Some(now - 5 * HOUR))
        .await;
    let after = Duration::from_secs(72 * 3_600);

    assert_eq!(
        maintenance::stuck_alerts(&f.db, now, after, &webhook())
            .await
            .unwrap(),
        ["stalled"]
    );
    assert_eq!(
        f.notifications(id).await,
        [row("stuck", "in_transit", "pending")]
    );
    let payload = &f.payloads(id).await[0];
    assert_eq!(payload["type"], "shipment.stuck");
    assert_eq!(payload["data"]["order_id"], "stalled");
    assert_eq!(payload["data"]["status"], "in_transit");
    assert_eq!(payload["data"]["stalled_for_hours"], 80);
    assert!(payload["id"].as_str().unwrap().starts_with("msg_"));
    assert!(f.notifications(moving).await.is_empty());

    // The same stall is not reported again.
    assert_eq!(
        maintenance::stuck_alerts(&f.db, now + HOUR, after, &webhook())
            .await
            .unwrap(),
        NOTHING_CHANGED
    );
    // News, then a new stall: a new report (the other parcel keeps moving meanwhile).
    f.set(id, "in_transit", true, Some(now + 2 * HOUR)).await;
    f.set(moving, "in_transit", true, Some(now + 70 * HOUR))
        .await;
    assert_eq!(
        maintenance::stuck_alerts(&f.db, now + 3 * HOUR, after, &webhook())
            .await
            .unwrap(),
        NOTHING_CHANGED
    );
    assert_eq!(
        maintenance::stuck_alerts(&f.db, now + 80 * HOUR, after, &webhook())
            .await
            .unwrap(),
        ["stalled"]
    );
    assert_eq!(
        f.notifications(id).await,
        [
            row("stuck", "in_transit", "pending"),
            row("stuck", "in_transit", "pending")
        ]
    );
    // Without a webhook there is nobody to tell.
    assert_eq!(
        maintenance::stuck_alerts(&f.db, now + 400 * HOUR, after, &[])
            .await
            .unwrap(),
        NOTHING_CHANGED
    );
}

#[tokio::test]
async fn pruning_removes_old_delivered_history_and_keeps_what_needs_attention() {
    let f = fixture().await;
    let now = T0 + 200 * DAY;
    let done = f.add("done", T0).await;
    f.set(done, "delivered", false, Some(T0 + DAY)).await;
    let live = f.add("live", T0).await;
    f.set(live, "in_transit", true, Some(T0 + DAY)).await;
    for (id, n) in [(done, 0), (live, 0), (done, 1)] {
        sqlx::query("INSERT INTO events (shipment_id, time, description) VALUES (?, ?, ?)")
            .bind(id)
            .bind(T0 + n * HOUR)
            .bind(format!("scan {n}"))
            .execute(&f.sql)
            .await
            .unwrap();
    }
    // As a poll writes events: with the digest of their trace.
    sqlx::query("UPDATE shipments SET events_digest = id")
        .execute(&f.sql)
        .await
        .unwrap();
    for (transition, state, sent_at) in [
        (1, "sent", Some(T0 + DAY)),
        (2, "skipped", None),
        (3, "dead", None),
        (4, "pending", None),
        (5, "sent", Some(now - DAY)),
    ] {
        sqlx::query(
            "INSERT INTO notifications (public_id, shipment_id, transition, channel, \
             previous_status, status, payload, state, next_attempt_at, created_at, sent_at) \
             VALUES (?, ?, ?, 'webhook', 'pending', 'in_transit', '{}', ?, ?, ?, ?)",
        )
        .bind(format!("msg_{transition}"))
        .bind(live)
        .bind(transition)
        .bind(state)
        .bind(T0)
        .bind(sent_at.unwrap_or(T0))
        .bind(sent_at)
        .execute(&f.sql)
        .await
        .unwrap();
    }

    let pruned = maintenance::prune(&f.db, now, Duration::from_secs(90 * 86_400))
        .await
        .unwrap();
    assert_eq!((pruned.notifications, pruned.events), (2, 2));
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM notifications ORDER BY transition")
            .fetch_all(&f.sql)
            .await
            .unwrap();
    assert_eq!(states, ["dead", "pending", "sent"]);
    assert!(f.db.events(done).await.unwrap().is_empty());
    assert_eq!(f.db.events(live).await.unwrap().len(), 1);
    // The shipment itself stays: it belongs to the shop. Its digest goes with its events.
    let done_row = f.db.shipment("done").await.unwrap();
    assert_eq!(
        (done_row.status, done_row.events_digest),
        (Status::Delivered, None)
    );
    assert_eq!(
        f.db.shipment("live").await.unwrap().events_digest,
        Some(live)
    );
}

/// The sweeps search on a reader, so a run with nothing to do (most runs) never takes the
/// writer, and never waits for it. Here another program holds the write lock meanwhile, as the
/// daemon's own writer holds it for each round of polls: the expiry, no-information and stuck
/// runs answer that there is nothing to do, where they used to wait for the lock (30 s) and
/// fail with "database is locked". Once the lock is free, one with something to do does it.
#[tokio::test]
async fn sweeps_with_nothing_to_do_never_wait_for_the_writer() {
    let f = fixture().await;
    let now = T0 + 10 * DAY;
    let moving = f.add("moving", now - HOUR).await;
    f.set(moving, "in_transit", true, Some(now - HOUR)).await;
    let (expire_after, no_info_after, stuck_after) = (
        Duration::from_secs(30 * 86_400),
        Duration::from_secs(3 * 86_400),
        Duration::from_secs(72 * 3_600),
    );

    let mut lock = f.sql.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let nothing = (
        maintenance::expire_changes(&f.db, now, expire_after, &webhook()).await,
        maintenance::no_info_changes(&f.db, now, no_info_after, &webhook()).await,
        maintenance::stuck_alerts(&f.db, now, stuck_after, &webhook()).await,
    );
    assert_eq!(
        (
            nothing.0.map(orders).map_err(|e| e.to_string()),
            nothing.1.map(orders).map_err(|e| e.to_string()),
            nothing.2.map_err(|e| e.to_string())
        ),
        (Ok(vec![]), Ok(vec![]), Ok(vec![]))
    );
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);

    let later = now + 31 * DAY;
    assert_eq!(
        maintenance::stuck_alerts(&f.db, now + 4 * DAY, stuck_after, &webhook())
            .await
            .unwrap(),
        ["moving"]
    );
    assert_eq!(
        orders(
            maintenance::expire_changes(&f.db, later, expire_after, &webhook())
                .await
                .unwrap()
        ),
        ["moving"]
    );
    assert_eq!(
        f.db.shipment("moving").await.unwrap().status,
        Status::Expired
    );
}

/// A checkpoint folds the write-ahead log into the file and empties it, and says how much it
/// folded. While a reader (a `sqlite3` shell, a backup) holds a snapshot it says it is busy and
/// gives up after a moment, rather than holding every write for the writer's 30 s busy timeout;
/// once the reader is gone, the next one empties the log. A file removed meanwhile stays removed.
#[tokio::test]
async fn checkpoint_empties_the_wal_and_does_not_wait_out_a_reader() {
    let f = fixture().await;
    let wal = f.dir.path().join("s.db-wal");
    let wal_bytes = || std::fs::metadata(&wal).unwrap().len();
    f.add("a", T0).await;
    assert!(wal_bytes() > 0);
    let done = maintenance::checkpoint(&f.db).await.unwrap();
    assert!(!done.busy, "{done:?}");
    assert!(done.wal_frames > 0, "{done:?}");
    assert_eq!(done.checkpointed_frames, done.wal_frames, "{done:?}");
    assert_eq!(wal_bytes(), 0, "the log is emptied");

    f.add("b", T0).await;
    let mut reader = f.sql.begin().await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM shipments")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(seen, 2);
    f.add("c", T0).await;
    let done = tokio::time::timeout(Duration::from_secs(10), maintenance::checkpoint(&f.db))
        .await
        .expect("the checkpoint gives up on the reader within 10 s")
        .unwrap();
    assert!(done.busy, "{done:?}");
    assert!(wal_bytes() > 0, "a log a reader still reads is kept");
    reader.rollback().await.unwrap();

    let done = maintenance::checkpoint(&f.db).await.unwrap();
    assert!(!done.busy, "{done:?}");
    assert_eq!(wal_bytes(), 0, "the log is emptied once the reader is gone");
    assert_eq!(f.db.shipment("c").await.unwrap().order_id, "c");

    // A file removed under the running daemon is not made anew, empty, by its next checkpoint.
    let file = f.dir.path().join("s.db");
    std::fs::remove_file(&file).unwrap();
    assert!(maintenance::checkpoint(&f.db).await.is_err());
    assert!(
        !file.exists(),
        "the checkpoint created the removed file again"
    );
}

#[tokio::test]
async fn the_scheduler_starts_with_a_valid_config_and_stops_promptly() {
    let f = fixture().await;
    let mut config = MaintenanceConfig {
        schedules: Schedules {
            expire: "* * * * * *".to_owned(),
            stuck: "* * * * * *".to_owned(),
            prune: "* * * * * *".to_owned(),
            checkpoint: "* * * * * *".to_owned(),
        },
        ..MaintenanceConfig::default()
    };
    let quiet = f.add("quiet", T0).await;
    f.set(quiet, "in_transit", true, Some(T0)).await;
    let clock = Arc::new(ManualClock::new(T0 + 40 * DAY));
    let events = Events::default();
    let mut heard = events.subscribe();
    let jobs = Maintenance::start(f.db.clone(), clock, config.clone(), webhook(), events)
        .await
        .unwrap();
    // Within a couple of seconds the every-second expiry job has run on the injected time.
    let change = tokio::time::timeout(Duration::from_secs(3), heard.recv())
        .await
        .expect("the expiry job ran")
        .unwrap();
    assert!(matches!(
        change,
        shipwatch::events::PipelineEvent::StatusChanged {
            to: Status::Expired,
            ..
        }
    ));
    let begun = std::time::Instant::now();
    assert!(
        jobs.shutdown(&shipwatch::workers::Grace::new(Duration::from_secs(5)))
            .await
    );
    assert!(begun.elapsed() < Duration::from_secs(5));

    config.schedules.stuck = "0 */10 * * *".to_owned();
    let err = Maintenance::start(
        f.db.clone(),
        Arc::new(ManualClock::new(T0)),
        config,
        webhook(),
        Events::default(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("[maintenance.schedules] stuck = \"0 */10 * * *\""),
        "{err}"
    );
}

/// A prune whose statements change more pages than fit in 4 MiB goes through, in the real
/// binary, which configures SQLite's statement journals before anything else touches SQLite.
/// With the journal kept in memory up to 4 MiB, a statement that outgrew it could not be written
/// out (SQLite writes at most 128 KiB less a byte in one call) and failed with "database or disk
/// is full": the prune failed every time, and the daemon took the database for unwritable.
/// The checkpoint that follows says in its INFO line how much of the log it folded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_of_a_busy_months_history_goes_through() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .section("[maintenance.schedules]\nprune = \"* * * * * *\"\ncheckpoint = \"* * * * * *\"\n")
        .start()
        .await;
    app.create_database();
    // 3,000 parcels delivered a year ago, each row about 5 KiB, with their webhooks sent then:
    // past the 90 days kept, the prune clears each row's event digest under the table's
    // typed-update trigger (a statement that may abort, and so is journaled), 1,000 rows and
    // about 5 MiB of pages a statement.
    let year_ago = chrono::Utc::now().timestamp_millis() - 365 * DAY;
    app.sql(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
         INSERT INTO shipments (order_id, provider, carrier, tier, status, active, transitions, \
             next_poll_at, created_at, status_changed_at, events_digest) \
         SELECT 'old-' || i, 'taobao', printf('%.5000c', 'x'), 'normal', 'delivered', 0, 1, \
             {year_ago}, {year_ago}, {year_ago}, i FROM n; \
         INSERT INTO notifications (public_id, shipment_id, transition, channel, \
             previous_status, status, payload, state, attempts, next_attempt_at, created_at, \
             sent_at) \
         SELECT 'msg-' || id, id, 1, 'webhook', 'in_transit', 'delivered', '{{}}', 'sent', 1, \
             {year_ago}, {year_ago}, {year_ago} \
         FROM shipments;"
    ))
    .await
    .unwrap();
    let left = "SELECT (SELECT count(*) FROM notifications) \
                + (SELECT count(*) FROM shipments WHERE events_digest IS NOT NULL)";
    assert_eq!(app.sql_count(left).await.unwrap(), 2 * 3_000);

    let daemon = app.spawn_daemon();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.sql_count(left).await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the year-old webhooks or digests are still there after a minute of prunes; the daemon's log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!daemon.log().contains("disk is full"), "{}", daemon.log());
    app.wait_until(
        "a checkpoint says how many frames it folded",
        Duration::from_secs(30),
        || {
            daemon
                .log()
                .lines()
                .any(|l| l.contains("WAL checkpointed") && l.contains("frames="))
        },
    )
    .await;
}

on_both_engines!(events_kept_before_digests_are_pruned_after_the_upgrade);

/// The prune finds the shipments whose events are left to delete by their digest (migration
/// 0021), and events written before shipments kept a digest (migration 0016) have none. The
/// upgrade marks every shipment that has events with a digest no trace has: the events of one
/// that ended long ago then go at the next prune, those of one that ended lately stay, and a
/// shipment without events is left unmarked.
async fn events_kept_before_digests_are_pruned_after_the_upgrade(engine: Engine) {
    let app = TestApp::builder()
        .engine(engine)
        .provider(Provider::top())
        .channel(Channel::webhook())
        .section("[maintenance.schedules]\nprune = \"* * * * * *\"\n")
        .start()
        .await;
    // Long ago, lately, still on its way, and long ago without events.
    let orders = [
        "8400000000000000001",
        "8400000000000000002",
        "8400000000000000003",
        "8400000000000000004",
    ];
    for order in orders {
        app.cli_ok(&["add", order]);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let (year_ago, yesterday) = (now - 365 * DAY, now - DAY);
    let undone = match engine {
        Engine::Sqlite => 21,
        Engine::Postgres => 11,
    };
    app.sql(&format!(
        "UPDATE shipments SET status = 'delivered', active = 0, transitions = 1, \
             status_changed_at = {year_ago} WHERE order_id IN ('{0}', '{3}'); \
         UPDATE shipments SET status = 'delivered', active = 0, transitions = 1, \
             status_changed_at = {yesterday} WHERE order_id = '{1}'; \
         UPDATE shipments SET status = 'in_transit', transitions = 1, \
             next_poll_at = {yesterday} + 2 * {DAY} WHERE order_id = '{2}'; \
         INSERT INTO events (shipment_id, time, description) \
             SELECT id, {year_ago} + n, 'scan ' || n FROM shipments, \
                 (SELECT 1 AS n UNION ALL SELECT 2) AS two \
             WHERE order_id IN ('{0}', '{1}', '{2}'); \
         UPDATE shipments SET events_digest = NULL; \
         DELETE FROM _sqlx_migrations WHERE version = {undone}; DROP INDEX shipments_prunable",
        orders[0], orders[1], orders[2], orders[3]
    ))
    .await
    .unwrap();
    let digests =
        || app.sql_column::<Option<i64>>("SELECT events_digest FROM shipments ORDER BY order_id");
    assert_eq!(digests().await.unwrap(), [None; 4]);

    // A command that writes upgrades the database.
    app.cli_ok(&["retry", "--dead"]);
    assert_eq!(
        digests().await.unwrap(),
        [Some(-1), Some(-1), Some(-1), None]
    );

    let daemon = app.spawn_daemon();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while events_of(&app, orders[0]).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the year-old events are still there after 30 s of prunes; the daemon's log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(events_of(&app, orders[1]).await, 2, "ended yesterday: kept");
    assert_eq!(events_of(&app, orders[2]).await, 2, "on its way: kept");
    let after = digests().await.unwrap();
    assert_eq!((after[0], after[1], after[3]), (None, Some(-1), None));
}

/// How many events of the order `order_id` the database holds.
async fn events_of(app: &TestApp, order_id: &str) -> i64 {
    app.sql_count(&format!(
        "SELECT count(*) FROM events JOIN shipments ON shipments.id = shipment_id \
         WHERE order_id = '{order_id}'"
    ))
    .await
    .unwrap()
}
