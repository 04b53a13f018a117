//! The operators' state on both engines (issue 17): provider bans and pauses, channel stops, the
//! counts behind `stats` and `/metrics`, the daemons' rows, and the maintenance lock. The same
//! calls on a SQLite file and on PostgreSQL give the same answers; what only PostgreSQL has to
//! get right (several daemons) is checked with two handles on one database. Without PostgreSQL
//! installed these tests fail, saying so.

use std::time::Duration;

use serde_json::Value;
use shipwatch::config::Synchronous;
use shipwatch::domain::{Status, Tier};
use shipwatch::storage::{DaemonIdentity, Db, Holds, Location, ShipmentFilter};
use sqlx::{AssertSqlSafe, Connection, Executor, SqliteConnection};

use crate::support::app::TestApp;
use crate::support::listed_page_by_page;
use crate::support::postgres::PgDatabase;

const NOW: i64 = 1_750_000_000_000;

async fn pg_db(pg: &PgDatabase) -> Db {
    Db::open(Location::parse(&pg.url).unwrap(), Synchronous::Normal)
        .await
        .unwrap()
}

/// Rows the store's own operations for them are not the subject here: two shipments and a
/// pending notification postponed by a webhook stop, in SQL both engines take.
const SEED: &[&str] = &[
    "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, created_at) \
     VALUES ('A1', 'taobao', 'high', 'in_transit', 1, 1749999990000, 1)",
    "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, created_at) \
     VALUES ('A2', 'kuaidi100', 'normal', 'delivered', 0, 1, 1)",
    "INSERT INTO notifications (public_id, shipment_id, transition, channel, previous_status, \
     status, payload, state, next_attempt_at, created_at, last_error) \
     VALUES ('n1', (SELECT id FROM shipments WHERE order_id = 'A1'), 1, 'webhook', 'pending', \
     'in_transit', '{}', 'pending', 1750000900000, 1, 'endpoint gone')",
];

/// A SQLite file and a PostgreSQL database, both migrated by the library and given the same rows
/// through connections of their own, as an outside tool would.
struct Seeded {
    lite: Db,
    postgres: Db,
    // Kept for as long as the databases are used: the file's folder and the PostgreSQL database.
    dir: tempfile::TempDir,
    pg: PgDatabase,
}

impl Seeded {
    async fn with(seed: &[&str]) -> Seeded {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ops.db");
        let lite = Db::open(&file, Synchronous::Normal).await.unwrap();
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        for statement in seed {
            conn.execute(AssertSqlSafe(*statement)).await.unwrap();
        }
        conn.close().await.unwrap();
        let pg = PgDatabase::create().await;
        let postgres = pg_db(&pg).await;
        let mut conn = pg.connect().await;
        for statement in seed {
            conn.execute(AssertSqlSafe(*statement)).await.unwrap();
        }
        conn.close().await.unwrap();
        Seeded {
            lite,
            postgres,
            dir,
            pg,
        }
    }
}

/// Everything the ops answer, as text both engines must agree on.
async fn run_ops(db: &Db) -> Vec<String> {
    let mut seen = Vec::new();
    db.ping().await.unwrap();
    db.ban_provider("taobao", NOW + 60_000, "rate limited", NOW)
        .await
        .unwrap();
    // A shorter ban later keeps the longer end, with its reason.
    db.ban_provider("taobao", NOW + 30_000, "rate limited again", NOW)
        .await
        .unwrap();
    db.ban_provider("kuaidi100", NOW + 7_200_000, "banned", NOW)
        .await
        .unwrap();
    // A longer ban later takes its end and its reason.
    db.ban_provider("kuaidi100", NOW + 7_300_000, "banned longer", NOW)
        .await
        .unwrap();
    db.cap_provider_bans(NOW + 3_600_000).await.unwrap();
    db.pause_provider("cainiao", NOW + 10_000, "credentials refused", NOW)
        .await
        .unwrap();
    let mut bans = db.provider_bans(NOW).await.unwrap();
    bans.sort();
    seen.push(format!("bans {bans:?}"));
    seen.push(format!(
        "provider states {:?}",
        db.provider_states(NOW).await.unwrap()
    ));
    db.clear_provider_pauses().await.unwrap();
    seen.push(format!(
        "after clear {:?}",
        db.provider_states(NOW).await.unwrap()
    ));
    let mut gauges = db.gauge_counts(NOW).await.unwrap();
    gauges.shipments.sort();
    gauges.providers.sort();
    seen.push(format!("gauges {gauges:?}"));
    db.pause_channel("webhook", NOW + 900_000, "endpoint gone", NOW)
        .await
        .unwrap();
    db.pause_channel("sms", NOW + 100, "out of credit", NOW)
        .await
        .unwrap();
    db.pause_channel("sms", NOW + 50, "still out of credit", NOW)
        .await
        .unwrap();
    seen.push(format!(
        "channels {:?}",
        db.channel_states(NOW).await.unwrap()
    ));
    seen.push(format!(
        "released {}",
        db.resume_channel("webhook", "endpoint gone", NOW + 1)
            .await
            .unwrap()
    ));
    seen.push(format!(
        "channels after resume {:?}",
        db.channel_states(NOW).await.unwrap()
    ));
    db.clear_channel_pauses().await.unwrap();
    seen.push(format!(
        "channels after clear {:?}",
        db.channel_states(NOW).await.unwrap()
    ));
    seen.push(format!("stats {:?}", db.stats(NOW).await.unwrap()));
    let counts = db.counts().await.unwrap();
    seen.push(format!(
        "counts {:?} {:?} {}",
        counts.statuses, counts.states, counts.active
    ));
    // Daemons: one alive, one not seen for a minute, one that left.
    let alive = DaemonIdentity::new("host-a", 11, "1.0.0", NOW - 30_000);
    let dead = DaemonIdentity::new("host-b", 22, "1.0.0", NOW - 120_000);
    let gone = DaemonIdentity::new("host-c", 33, "1.0.0", NOW - 10_000);
    for d in [&alive, &dead, &gone] {
        db.register_daemon(d).await.unwrap();
    }
    let holds = Holds {
        polling: 3,
        delivering: 1,
    };
    db.daemon_heartbeat(&alive, NOW - 2_000, holds)
        .await
        .unwrap();
    db.daemon_heartbeat(&dead, NOW - 60_000, Holds::default())
        .await
        .unwrap();
    db.leave(&gone.id).await.unwrap();
    seen.push(format!("daemons {:?}", db.daemons(NOW).await.unwrap()));
    // A day later, a daemon that registers prunes the rows not seen for a day, and keeps one
    // that was seen five hours before.
    let evening = DaemonIdentity::new("host-d", 44, "1.0.0", NOW + 20 * 3_600_000);
    db.register_daemon(&evening).await.unwrap();
    let later = DaemonIdentity::new("host-a", 12, "1.0.1", NOW + 25 * 3_600_000);
    db.register_daemon(&later).await.unwrap();
    seen.push(format!(
        "daemons a day later {:?}",
        db.daemons(later.started_at)
            .await
            .unwrap()
            .iter()
            .map(|d| (d.id.clone(), d.alive))
            .collect::<Vec<_>>()
    ));
    seen.push(format!(
        "maintenance lock {}",
        db.maintenance_lock("prune").await.unwrap().is_some()
    ));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_answer_the_same_on_sqlite_and_postgres() {
    let seeded = Seeded::with(SEED).await;
    let (lite, postgres) = (&seeded.lite, &seeded.postgres);

    let on_sqlite = run_ops(lite).await;
    let on_postgres = run_ops(postgres).await;
    for (sqlite, postgres) in on_sqlite.iter().zip(&on_postgres) {
        assert_eq!(sqlite, postgres);
    }
    assert_eq!(on_sqlite.len(), on_postgres.len());
    // The answers are the expected ones, not only the same ones.
    let all = on_sqlite.join("\n");
    assert!(
        all.contains("bans [(\"kuaidi100\", 1750003600000), (\"taobao\", 1750000060000)]"),
        "{all}"
    );
    assert!(all.contains("ban_reason: Some(\"rate limited\")"), "{all}");
    assert!(!all.contains("rate limited again"), "{all}");
    assert!(all.contains("ban_reason: Some(\"banned longer\")"), "{all}");
    assert!(all.contains("released 1"), "{all}");
    assert!(all.contains("alive: true"), "{all}");
    assert!(all.contains("alive: false"), "{all}");
    assert!(!all.contains("host-c"), "{all}");
    assert!(
        all.contains(
            "daemons a day later [(\"host-d:44:1750072000000\", false), \
             (\"host-a:12:1750090000000\", true)]"
        ),
        "{all}"
    );
    // A pause is shown until it is cleared, and the clear leaves the bans.
    let line = |start: &str| {
        on_sqlite
            .iter()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in {all}"))
            .clone()
    };
    assert!(
        line("provider states ").contains("pause_reason: Some(\"credentials refused\")"),
        "{all}"
    );
    let cleared = line("after clear ");
    assert!(!cleared.contains("credentials refused"), "{all}");
    assert!(
        cleared.contains("ban_reason: Some(\"banned longer\")"),
        "{all}"
    );
    // A channel stop is shown until it is lifted or forgotten.
    assert!(
        line("channels after resume ").contains("out of credit"),
        "{all}"
    );
    assert_eq!(line("channels after clear "), "channels after clear []");
    assert_eq!(
        line("counts "),
        "counts [(\"delivered\", 1), (\"in_transit\", 1)] [(\"pending\", 1)] 1"
    );
    lite.close().await;
    postgres.close().await;
}

/// Rows that each count, or do not, toward one figure of the status line: due, due but under a
/// poll, not yet due, no longer polled though overdue; a pending notification, a sent one.
const STATUS_SEED: &[&str] = &[
    "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, created_at) \
     VALUES ('due', 'taobao', 'high', 'in_transit', 1, 1749999990000, 1)",
    "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, created_at) \
     VALUES ('most-overdue', 'taobao', 'high', 'in_transit', 1, 1749999875500, 1)",
    "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, \
     claimed_until, created_at) \
     VALUES ('under-a-poll', 'taobao', 'high', 'in_transit', 1, 1, 1750000030000, 1)",
    "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, created_at) \
     VALUES ('later', 'taobao', 'normal', 'in_transit', 1, 1750000600000, 1)",
    "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, created_at) \
     VALUES ('done', 'taobao', 'normal', 'delivered', 0, 1, 1)",
    "INSERT INTO notifications (public_id, shipment_id, transition, channel, previous_status, \
     status, payload, state, next_attempt_at, created_at) \
     VALUES ('n1', (SELECT id FROM shipments WHERE order_id = 'due'), 1, 'webhook', 'pending', \
     'in_transit', '{}', 'pending', 1, 1)",
    "INSERT INTO notifications (public_id, shipment_id, transition, channel, previous_status, \
     status, payload, state, next_attempt_at, created_at) \
     VALUES ('n2', (SELECT id FROM shipments WHERE order_id = 'done'), 1, 'webhook', \
     'in_transit', 'delivered', '{}', 'sent', 1, 1)",
];

/// The daemon's status line (`systemctl status`) is read from the partial indexes, and says the
/// same on both engines: four shipments polled, two of them due and not under a poll, the most
/// overdue 124.5 s late, one notification pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_line_counts_the_polled_the_due_and_the_pending_on_both_engines() {
    let seeded = Seeded::with(STATUS_SEED).await;
    let (lite, postgres) = (&seeded.lite, &seeded.postgres);

    for (engine, db) in [("SQLite", lite), ("PostgreSQL", postgres)] {
        let counts = db.status_counts(NOW).await.unwrap();
        let seen = (
            counts.polled,
            counts.due_now,
            counts.lag_seconds(NOW),
            counts.pending,
        );
        assert_eq!(seen, (4, 2, 124, 1), "{engine}: {counts:?}");
    }
    lite.close().await;
    postgres.close().await;
}

/// Shipments in three tier and status pairs, and notifications in each of the four states, a
/// different number in each (1 pending, 2 sent, 3 dead, 4 skipped) so that a state counted as
/// another shows, on two channels by turns.
fn gauge_seed() -> Vec<String> {
    let mut seed: Vec<String> = [
        ("g1", "high", "in_transit", 1),
        ("g2", "high", "in_transit", 1),
        ("g3", "low", "exception", 1),
        ("g4", "normal", "delivered", 0),
    ]
    .iter()
    .map(|(order, tier, status, active)| {
        format!(
            "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, \
             created_at) VALUES ('{order}', 'taobao', '{tier}', '{status}', {active}, \
             1750000600000, 1)"
        )
    })
    .collect();
    let states = [(1, "pending"), (2, "sent"), (3, "dead"), (4, "skipped")];
    let mut transition = 0;
    for (count, state) in states {
        for _ in 0..count {
            transition += 1;
            let channel = if transition % 2 == 0 {
                "email"
            } else {
                "webhook"
            };
            seed.push(format!(
                "INSERT INTO notifications (public_id, shipment_id, transition, channel, \
                 previous_status, status, payload, state, next_attempt_at, created_at) \
                 VALUES ('n{transition}', (SELECT id FROM shipments WHERE order_id = 'g4'), \
                 {transition}, '{channel}', 'in_transit', 'delivered', '{{}}', '{state}', 1, 1)"
            ));
        }
    }
    seed
}

/// The `/metrics` gauges and `stats`, counted from indexes (migrations 0018 to 0020), count every
/// state of the outbox and every tier and status pair the same on both engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauges_count_each_outbox_state_and_each_tier_and_status_on_both_engines() {
    let seed = gauge_seed();
    let seeded = Seeded::with(&seed.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (lite, postgres) = (&seeded.lite, &seeded.postgres);

    for (engine, db) in [("SQLite", lite), ("PostgreSQL", postgres)] {
        let gauges = db.gauge_counts(NOW).await.unwrap();
        assert_eq!(
            gauges.outbox.by_state(),
            [("pending", 1), ("sent", 2), ("dead", 3), ("skipped", 4)],
            "{engine}"
        );
        let mut shipments = gauges.shipments.clone();
        shipments.sort();
        let expected = [
            ("high", "in_transit", 2),
            ("low", "exception", 1),
            ("normal", "delivered", 1),
        ]
        .map(|(tier, status, n)| (tier.to_owned(), status.to_owned(), n));
        assert_eq!(shipments, expected, "{engine}");

        let stats = db.stats(NOW).await.unwrap();
        let notifications: Vec<(&str, &str, i64)> = stats
            .notifications
            .iter()
            .map(|n| (n.channel.as_str(), n.state.as_str(), n.count))
            .collect();
        assert_eq!(
            notifications,
            [
                ("email", "dead", 2),
                ("email", "sent", 1),
                ("email", "skipped", 2),
                ("webhook", "dead", 1),
                ("webhook", "pending", 1),
                ("webhook", "sent", 1),
                ("webhook", "skipped", 2),
            ],
            "{engine}"
        );
        let shipments: Vec<(&str, &str, &str, bool, i64)> = stats
            .shipments
            .iter()
            .map(|s| {
                (
                    s.provider.as_str(),
                    s.tier.as_str(),
                    s.status.as_str(),
                    s.active,
                    s.count,
                )
            })
            .collect();
        assert_eq!(
            shipments,
            [
                ("taobao", "high", "in_transit", true, 2),
                ("taobao", "low", "exception", true, 1),
                ("taobao", "normal", "delivered", false, 1),
            ],
            "{engine}"
        );
    }
    lite.close().await;
    postgres.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_job_runs_on_one_daemon_at_a_time() {
    let pg = PgDatabase::create().await;
    let one = pg_db(&pg).await;
    let two = pg_db(&pg).await;
    let held = one.maintenance_lock("expire").await.unwrap();
    assert!(held.is_some());
    // The same job is refused to the other daemon, and to this one's next run...
    assert!(two.maintenance_lock("expire").await.unwrap().is_none());
    assert!(one.maintenance_lock("expire").await.unwrap().is_none());
    // ...while another job is free.
    let prune = two.maintenance_lock("prune").await.unwrap();
    assert!(prune.is_some());
    if let Some(lock) = held {
        lock.release().await;
    }
    let again = two.maintenance_lock("expire").await.unwrap();
    assert!(again.is_some(), "released, the job is free again");
    // A daemon that dies mid-job lets go with its connection: a lock dropped unreleased.
    drop(again);
    let mut taken = false;
    for _ in 0..50 {
        if let Some(lock) = one.maintenance_lock("expire").await.unwrap() {
            lock.release().await;
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(taken, "a lock whose connection closed is free again");
    if let Some(lock) = prune {
        lock.release().await;
    }
    one.close().await;
    two.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_stored_by_one_daemon_reaches_the_others_and_both_show_in_daemons() {
    let pg = PgDatabase::create().await;
    let one = pg_db(&pg).await;
    let two = pg_db(&pg).await;
    let a = DaemonIdentity::new("machine-a", 100, "1.0.0", NOW);
    let b = DaemonIdentity::new("machine-b", 200, "1.0.0", NOW + 1);
    one.register_daemon(&a).await.unwrap();
    two.register_daemon(&b).await.unwrap();
    one.daemon_heartbeat(
        &a,
        NOW + 5_000,
        Holds {
            polling: 4,
            delivering: 0,
        },
    )
    .await
    .unwrap();
    two.daemon_heartbeat(
        &b,
        NOW + 5_000,
        Holds {
            polling: 2,
            delivering: 1,
        },
    )
    .await
    .unwrap();
    let seen = one.daemons(NOW + 6_000).await.unwrap();
    let shown: Vec<_> = seen
        .iter()
        .map(|d| (d.host.as_str(), d.pid, d.polling, d.delivering, d.alive))
        .collect();
    assert_eq!(
        shown,
        [
            ("machine-a", 100, 4, 0, true),
            ("machine-b", 200, 2, 1, true)
        ]
    );
    // One daemon is banned by upstream; the other reads the ban at its next refresh.
    one.ban_provider("taobao", NOW + 60_000, "isv.api-call-limited", NOW)
        .await
        .unwrap();
    assert_eq!(
        two.provider_bans(NOW).await.unwrap(),
        [("taobao".to_owned(), NOW + 60_000)]
    );
    let states = two.provider_states(NOW).await.unwrap();
    assert_eq!(
        states[0].ban_reason.as_deref(),
        Some("isv.api-call-limited")
    );
    // B stops cleanly; A, silent for a while, reads as gone.
    two.leave(&b.id).await.unwrap();
    let seen = two.daemons(NOW + 60_000).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, a.id);
    assert!(!seen[0].alive);
    one.close().await;
    two.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_shows_the_running_daemon_and_a_dead_one() {
    let app = TestApp::start().await;
    let mut daemon = app.spawn_daemon();
    let pid = i64::from(daemon.pid());
    let mut alive = false;
    for _ in 0..100 {
        let out = app.cli(&["stats", "--json"]);
        if out.status.success() {
            let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
            if let Some(daemons) = stats["daemons"].as_array()
                && daemons
                    .iter()
                    .any(|d| d["pid"].as_i64() == Some(pid) && d["alive"] == true)
            {
                alive = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(alive, "the daemon's row shows: {}", daemon.log());
    // Its host is this machine's name, as `uname -n` gives it.
    let uname = std::process::Command::new("uname")
        .arg("-n")
        .output()
        .unwrap();
    let machine = String::from_utf8(uname.stdout).unwrap().trim().to_owned();
    let stats: Value = serde_json::from_str(&app.cli_ok(&["stats", "--json"])).unwrap();
    let ours = stats["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pid"].as_i64() == Some(pid))
        .unwrap();
    assert_eq!(ours["host"], machine.as_str(), "{stats:#}");
    // Its row is refreshed while it runs (every 5 s), not only written at its start.
    let started = ours["started_at"].clone();
    app.wait_until(
        "the daemon's row is seen again after its start",
        Duration::from_secs(30),
        || {
            let stats: Value = serde_json::from_str(&app.cli_ok(&["stats", "--json"])).unwrap();
            stats["daemons"].as_array().unwrap().iter().any(|d| {
                d["pid"].as_i64() == Some(pid) && d["seen_at"] != started && d["alive"] == true
            })
        },
    )
    .await;
    // A daemon that died long ago on another machine, as PostgreSQL mode would show it.
    let db = Db::open(&app.db, Synchronous::Normal).await.unwrap();
    let dead = DaemonIdentity::new("old-machine", 4242, "0.9.0", 1_000);
    db.register_daemon(&dead).await.unwrap();
    db.close().await;
    let text = app.cli_ok(&["stats"]);
    assert!(text.contains("daemons        1 alive of 2"), "{text}");
    assert!(
        text.contains(&format!(":{pid}:")) && text.contains(&format!("pid {pid}, since")),
        "{text}"
    );
    assert!(
        text.contains("old-machine:4242:1000 (GONE): host old-machine, pid 4242"),
        "{text}"
    );
    assert!(text.contains("holds 0 polls and 0 deliveries"), "{text}");
    // A clean stop takes the row away.
    assert!(daemon.terminate().success());
    let stats: Value = serde_json::from_str(&app.cli_ok(&["stats", "--json"])).unwrap();
    let daemons = stats["daemons"].as_array().unwrap();
    assert_eq!(daemons.len(), 1, "{stats:#}");
    assert_eq!(daemons[0]["host"], "old-machine");
}

/// A provider that counts its calls and says every parcel is in transit.
#[derive(Default)]
struct Counting(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl shipwatch::providers::Provider for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }

    async fn fetch(
        &self,
        _: &shipwatch::providers::TrackRequest,
    ) -> Result<shipwatch::providers::Trace, shipwatch::providers::ProviderError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(shipwatch::providers::Trace {
            status: shipwatch::domain::Status::InTransit,
            raw_status: "运输中".to_owned(),
            events: Vec::new(),
            carrier: None,
            tracking_no: None,
            unmapped: Vec::new(),
        })
    }
}

/// A daemon's dispatcher picks up, at its refresh, a ban another daemon stored: it stops
/// calling the provider until the ban ends. (On SQLite here, where the store's shipment
/// operations are all there; the bans' own SQL is the same on PostgreSQL, checked above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_stored_by_another_daemon_pauses_this_one_at_its_refresh() {
    use shipwatch::clock::{Clock, ManualClock};
    use shipwatch::config::{Polling, Tiers};
    use shipwatch::dispatch::{BAN_REFRESH, Dispatcher, ProviderRuntime};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bans.db");
    let mine = Db::open(&file, Synchronous::Normal).await.unwrap();
    let other = Db::open(&file, Synchronous::Normal).await.unwrap();
    let clock = std::sync::Arc::new(ManualClock::new(NOW));
    let provider = std::sync::Arc::new(Counting::default());
    let mut providers = std::collections::BTreeMap::new();
    providers.insert(
        "p".to_owned(),
        std::sync::Arc::new(ProviderRuntime::new("p", provider.clone(), None)),
    );
    let dispatcher = Dispatcher::new(
        mine.clone(),
        clock.clone(),
        Tiers::default(),
        Polling {
            jitter: 0.0,
            ..Polling::default()
        },
        providers,
        Vec::new(),
        shipwatch::events::Events::default(),
    );
    dispatcher.refresh_bans().await.unwrap();
    other
        .ban_provider("p", NOW + 600_000, "isv.api-call-limited", NOW)
        .await
        .unwrap();
    let new = shipwatch::storage::NewShipment {
        order_id: "o1".to_owned(),
        provider: "p".to_owned(),
        tracking_no: None,
        carrier: None,
        tier: shipwatch::domain::Tier::High,
        phone: None,
        email: None,
        openid: None,
        sub_orders: None,
    };
    mine.add_shipment(&new, clock.now()).await.unwrap();
    // Within the refresh period the ban is not read yet; after it, it is, and nothing is polled.
    clock.advance(BAN_REFRESH);
    dispatcher.refresh_bans().await.unwrap();
    dispatcher.run_once().await.unwrap();
    assert_eq!(provider.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Once the ban ends, polling resumes.
    clock.advance(Duration::from_secs(601));
    dispatcher.refresh_bans().await.unwrap();
    dispatcher.run_once().await.unwrap();
    assert_eq!(provider.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    mine.close().await;
    other.close().await;
}

/// Four reads at once, so that the pool holds several connections, all used a moment ago.
async fn fill_the_pool(db: &Db) {
    let reads = tokio::join!(db.stats(0), db.stats(0), db.stats(0), db.stats(0));
    for read in [reads.0, reads.1, reads.2, reads.3] {
        read.unwrap();
    }
}

/// Past the second within which the pool trusts a connection it used, eight reads that must
/// each succeed.
async fn read_after_the_recent_use_second(db: &Db) {
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..8 {
        db.stats(0).await.unwrap();
    }
}

/// The server drops every connection (a restart, a failover, an administrator's
/// `pg_terminate_backend`): once they have been idle a moment, the next operations get fresh
/// connections instead of failing as an outage. A connection in use a moment ago is not tested
/// before each operation (a round trip each), so a busy daemon pays nothing for this.
#[tokio::test]
async fn connections_the_server_dropped_are_replaced_before_use() {
    let pg = PgDatabase::create().await;
    let db = pg_db(&pg).await;
    fill_the_pool(&db).await;
    let mut admin = pg.connect().await;
    let dropped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'shipwatch' AND datname = current_database()) AS t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(dropped >= 1, "no connection of the pool to drop");
    read_after_the_recent_use_second(&db).await;
    admin.close().await.unwrap();
    db.close().await;
}

/// A connection idle a moment that the server still holds is tested and kept: after the pause
/// the sessions the pool held before the pause are all still open, none closed and replaced (a
/// new session forks a server process).
#[tokio::test]
async fn connections_idle_a_moment_are_kept_when_the_server_still_holds_them() {
    let pg = PgDatabase::create().await;
    let db = pg_db(&pg).await;
    let mut admin = pg.connect().await;
    let sessions = async |admin: &mut sqlx::PgConnection| -> Vec<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = 'shipwatch' AND datname = current_database() ORDER BY pid",
        )
        .fetch_all(admin)
        .await
        .unwrap()
    };
    fill_the_pool(&db).await;
    let before = sessions(&mut admin).await;
    assert!(!before.is_empty(), "the pool holds no session");
    read_after_the_recent_use_second(&db).await;
    let after = sessions(&mut admin).await;
    let closed: Vec<_> = before.iter().filter(|pid| !after.contains(pid)).collect();
    assert!(
        closed.is_empty(),
        "sessions {closed:?} closed; before {before:?}, after {after:?}"
    );
    admin.close().await.unwrap();
    db.close().await;
}

/// The nightly prune takes the shipments left to prune 1,000 a transaction, each slice read on
/// from where the one before left the index: with 2,500 of them both engines delete every
/// event of the three slices, clear their digests, and keep the history of the shipments that
/// ended after the cutoff; a second prune finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_of_more_than_a_slice_deletes_the_same_on_both_engines() {
    const DAY: i64 = 86_400_000;
    let (year_ago, yesterday) = (NOW - 365 * DAY, NOW - DAY);
    let seed = [
        format!(
            "INSERT INTO shipments (order_id, provider, tier, status, active, transitions, \
                 next_poll_at, created_at, status_changed_at, events_digest) \
             WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2510) \
             SELECT 'P-' || i, 'taobao', 'normal', 'delivered', 0, 1, 1, {year_ago}, \
                 CASE WHEN i <= 2500 THEN {year_ago} + i ELSE {yesterday} END, 7 FROM n"
        ),
        "INSERT INTO events (shipment_id, time, description) \
         SELECT id, created_at + 1, 'collected' FROM shipments \
         UNION ALL SELECT id, created_at + 2, 'signed' FROM shipments"
            .to_owned(),
    ];
    let seeded = Seeded::with(&seed.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let cutoff = NOW - 90 * DAY;
    const LEFT: &str = "SELECT (SELECT count(*) FROM events) * 1000 \
         + (SELECT count(*) FROM shipments WHERE events_digest IS NOT NULL)";
    for (engine, db) in [("SQLite", &seeded.lite), ("PostgreSQL", &seeded.postgres)] {
        let pruned = db.prune(cutoff).await.unwrap();
        assert_eq!(pruned.events, 5_000, "{engine}");
        let left: i64 = if engine == "SQLite" {
            let file = seeded.dir.path().join("ops.db");
            let mut conn = SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            sqlx::query_scalar(LEFT).fetch_one(&mut conn).await.unwrap()
        } else {
            let mut conn = seeded.pg.connect().await;
            sqlx::query_scalar(LEFT).fetch_one(&mut conn).await.unwrap()
        };
        assert_eq!(
            left,
            20 * 1000 + 10,
            "{engine}: the ten that ended yesterday keep their events and digests"
        );
        assert_eq!(db.prune(cutoff).await.unwrap().events, 0, "{engine}");
    }
    seeded.lite.close().await;
    seeded.postgres.close().await;
}

/// `list --status` and the API's `status` take the shipments of a status from the status index
/// while they are fewer than 10,000 (with the tier and provider asked for), and read along the
/// table from 10,000 on; with a time too, from whichever index holds fewer. Every way, a listing
/// pages through the same shipments in the order they were added, each once, on both engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_of_a_status_keep_the_same_shipments_however_many_it_has() {
    const MIN: i64 = 60_000;
    // 10,400 shipments, one in a hundred in exception, the others on their way (10,296: read
    // along the table), a third of them high, one in forty on kuaidi100 (260, half of the
    // exceptions), added a minute apart in batches of 200 whose times are not in the order of
    // their ids.
    let seed = [format!(
        "INSERT INTO shipments (order_id, provider, tier, status, active, next_poll_at, \
             created_at) \
         WITH RECURSIVE n (i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 10399) \
         SELECT 'Q-' || i, CASE WHEN i % 40 = 0 THEN 'kuaidi100' ELSE 'taobao' END, \
             CASE WHEN i % 3 = 0 THEN 'high' ELSE 'normal' END, \
             CASE WHEN i % 100 = 0 THEN 'exception' ELSE 'in_transit' END, 1, {NOW}, \
             {NOW} + {MIN} * CASE WHEN (i / 200) % 2 = 0 THEN i / 200 ELSE 104 - i / 200 END \
         FROM n"
    )];
    let seeded = Seeded::with(&seed.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (exception, in_transit, delivered) = (
        Some(Status::Exception),
        Some(Status::InTransit),
        Some(Status::Delivered),
    );
    let (high, normal) = (Some(Tier::High), Some(Tier::Normal));
    let (kuaidi100, taobao) = (Some("kuaidi100"), Some("taobao"));
    for (engine, db) in [("SQLite", &seeded.lite), ("PostgreSQL", &seeded.postgres)] {
        let all = db
            .shipments_page(&ShipmentFilter::default())
            .await
            .unwrap()
            .rows;
        assert_eq!(all.len(), 10_400, "{engine}");
        for (status, tier, provider, since) in [
            (exception, None, None, None),
            (in_transit, None, None, None),
            (in_transit, high, None, None),
            (exception, None, None, Some(NOW + 60 * MIN)),
            (in_transit, None, None, Some(NOW + 103 * MIN)),
            (in_transit, high, None, Some(NOW + 20 * MIN)),
            (delivered, None, None, None),
            // A tier or a provider alone: few (the high ones, 3,467, and kuaidi100's) from the
            // status index, many (the normal ones, taobao's) along the table.
            (None, high, None, None),
            (None, normal, None, None),
            (None, None, kuaidi100, None),
            (None, None, taobao, None),
            (None, high, kuaidi100, None),
            (None, normal, kuaidi100, Some(NOW + 50 * MIN)),
            (exception, None, kuaidi100, None),
            (exception, None, taobao, None),
        ] {
            let expected: Vec<&str> = all
                .iter()
                .filter(|row| {
                    status.is_none_or(|status| row.status == status)
                        && tier.is_none_or(|tier| row.tier == tier)
                        && provider.is_none_or(|provider| row.provider == provider)
                        && since.is_none_or(|since| row.created_at >= since)
                })
                .map(|row| row.order_id.as_str())
                .collect();
            let what = format!("{status:?} {tier:?} {provider:?} since {since:?}");
            assert_eq!(expected.is_empty(), status == delivered, "{what}");
            let filter = ShipmentFilter {
                status,
                tier,
                provider: provider.map(str::to_owned),
                changed_since: since,
                ..Default::default()
            };
            for limit in [1_000, 333] {
                let listed = listed_page_by_page(db, &filter, limit).await;
                assert_eq!(listed, expected, "{engine}: {what}, {limit} a page");
            }
        }
    }
    seeded.lite.close().await;
    seeded.postgres.close().await;
}
