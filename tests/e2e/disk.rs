//! Disk trouble under the real binary: the database's disk fills up, or the file becomes
//! unwritable, while the daemon runs. The daemon says so once (not once per poll), reports it on
//! `/healthz`, holds nothing back in memory, and picks up where it was once the disk is writable
//! again: no status change lost, no corruption.
//!
//! Tests run as root, so file modes stop nothing. A full disk is a small tmpfs filled to the
//! last byte; an unwritable database is a file made immutable with `chattr +i`, which stops
//! writes through descriptors already open as well, root's included.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use crate::support::app::{Daemon, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::fake_top;
use crate::support::free_port;
use crate::support::immutable::Immutable;

const LIMIT: Duration = Duration::from_secs(60);
/// The API's token, for an order added over HTTP while the database cannot be written.
const TOKEN: &str = "5d2e8f0a1b3c4d6e7f8091a2b3c4d5e6";
const ORDERS: [u64; 3] = [
    8_400_000_000_000_000_001,
    8_400_000_000_000_000_002,
    8_400_000_000_000_000_003,
];

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tmpfs of `size` mounted at `path` for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let target = path.to_str().unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                target,
            ],
        )
        .unwrap_or_else(|e| panic!("this test needs root and a mountable tmpfs: {e}"));
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

fn info_received(tid: u64) -> String {
    fake_top::trace_response(tid, "物流公司已接单", &[])
}

fn delivered(tid: u64) -> String {
    fake_top::trace_response(
        tid,
        "对方已签收",
        &[(
            "2026-11-20 08:00:05",
            "【上海市】快件已签收，签收人：本人",
            "SIGNED",
        )],
    )
}

/// An app whose database is `db`, tracking [`ORDERS`], each of which has reached
/// `info_received` (its webhook delivered), with the daemon running and serving
/// `/healthz` and the API (its token [`TOKEN`]).
async fn tracking(db: Option<&Path>) -> (TestApp, Daemon, String) {
    let mut app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .tiers("1s", "1s", "1s")
        .api_tokens(&format!("{TOKEN}\n"))
        .start()
        .await;
    if let Some(db) = db {
        let old = app.db.display().to_string();
        let new = db.display().to_string();
        app.edit_config(|text| text.replace(&old, &new));
        app.db = db.to_owned();
    }
    for tid in ORDERS {
        app.top.script(tid, vec![info_received(tid)]);
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    }
    let daemon = app.spawn_daemon();
    // Received and marked sent: a delivery whose `sent` mark meets the outage is made again
    // after it under the same `webhook-id`, as it should be, and would count twice below.
    app.wait_until(
        "every order is info_received and its notification marked sent",
        LIMIT,
        || {
            app.receiver.deliveries().len() == ORDERS.len()
                && app.outbox(Some("pending")).is_empty()
        },
    )
    .await;
    let healthz = format!("{}/healthz", app.http.as_deref().expect("listening"));
    (app, daemon, healthz)
}

/// `POST /v1/shipments` of `order_id` through the API: the status and the body.
async fn create(app: &TestApp, order_id: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/shipments", app.http.as_deref().unwrap()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "order_id": order_id }))
        .send()
        .await
        .expect("the API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn health(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("/healthz answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The `shipwatch_database_writable` gauge as `/metrics` (beside `healthz`) serves it.
async fn writable_gauge(healthz: &str) -> Option<String> {
    let page = reqwest::get(healthz.replace("/healthz", "/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap_or_default();
    page.lines()
        .find_map(|line| line.strip_prefix("shipwatch_database_writable "))
        .map(str::to_owned)
}

fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// While the database cannot be written: upstream moves every order on to `delivered`, the
/// daemon keeps running and says so once, `/healthz` says why it is unhealthy and `/metrics` that
/// the database is not writable. Returns the daemon's log at the end of the outage.
async fn during_the_outage(app: &TestApp, daemon: &mut Daemon, healthz: &str) -> String {
    for tid in ORDERS {
        app.top.script(tid, vec![delivered(tid)]);
    }
    app.wait_until("the daemon reports the outage", LIMIT, || {
        daemon.log().contains("DATABASE NOT WRITABLE")
    })
    .await;
    // Twenty scan intervals (200ms) and more: a daemon that logged per attempt would show it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(daemon.is_running(), "{}", daemon.log());
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(lines_with(&log, "DATABASE NOT WRITABLE"), 1, "{log}");
    assert_eq!(lines_with(&log, "ERROR"), 1, "one error line in all: {log}");

    let (status, body) = health(healthz).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database not writable"), "{body}");
    assert_eq!(writable_gauge(healthz).await.as_deref(), Some("0"));

    log
}

/// Once writable again: every order reaches `delivered`, each change notified exactly once, the
/// end of the outage logged, `/healthz` healthy, `/metrics` writable, and the database intact.
async fn after_the_outage(app: &TestApp, daemon: &mut Daemon, healthz: &str) {
    app.wait_until("every order is delivered and notified", LIMIT, || {
        app.receiver.deliveries().len() >= 2 * ORDERS.len()
            && app.outbox(Some("pending")).is_empty()
    })
    .await;
    // The outage ends once writes have gone on succeeding for a moment (`outage::SETTLE`).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while health(healthz).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "still unhealthy 5 s after every change was delivered: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = daemon.log();
    for line in log
        .lines()
        .filter(|l| l.contains("WRITABLE") || l.contains("writable again"))
    {
        println!("{line}");
    }
    assert_eq!(
        lines_with(&log, "database writable again"),
        1,
        "the end of the outage is said once: {log}"
    );
    assert_eq!(writable_gauge(healthz).await.as_deref(), Some("1"));
    assert!(daemon.terminate().success(), "{}", daemon.log());

    for tid in ORDERS {
        let shown = app.shipment(&tid.to_string());
        assert_eq!(shown["shipment"]["status"], "delivered", "{shown}");
        let statuses: Vec<&str> = shown["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                assert_eq!(n["state"], "sent", "{n}");
                n["status"].as_str().unwrap()
            })
            .collect();
        assert_eq!(statuses, ["info_received", "delivered"], "order {tid}");
    }
    let deliveries = app.receiver.deliveries();
    assert_eq!(
        deliveries.len(),
        2 * ORDERS.len(),
        "each change arrived once: {deliveries:?}"
    );
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", app.db.display()))
        .await
        .unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_one_error_and_the_daemon_resumes_when_space_returns() {
    let scratch = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&scratch.path().join("disk"), "4m");
    let (app, mut daemon, healthz) = tracking(Some(&disk.0.join("shipwatch.db"))).await;

    // Fill the disk to the last byte.
    let filler = disk.0.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.write_all(&[0u8; 512]);
    drop(file);

    let log = during_the_outage(&app, &mut daemon, &healthz).await;
    assert!(log.contains("disk is full"), "{log}");
    // No `add` here: a full disk still takes a small write now and then, into WAL space that a
    // failed transaction had already allocated.

    std::fs::remove_file(&filler).unwrap();
    after_the_outage(&app, &mut daemon, &healthz).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_one_error_and_the_daemon_resumes_when_writable() {
    let (app, mut daemon, healthz) = tracking(None).await;
    let wal = PathBuf::from(format!("{}-wal", app.db.display()));
    assert!(wal.exists(), "the daemon runs in WAL mode");
    let immutable = Immutable::set(&[app.db.clone(), wal]);

    during_the_outage(&app, &mut daemon, &healthz).await;
    // The database is at fault, not the order: `add` says so, and the API answers 503 (try
    // again), not 422 (a bad row, not worth sending again).
    let out = app.cli(&["add", "8400000000000000009", "--tier", "high"]);
    assert!(!out.status.success(), "add cannot write an immutable file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains("readonly"), "{stderr}");
    assert!(!stderr.contains("refused the row"), "{stderr}");
    let (status, problem) = create(&app, "8400000000000000010").await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(
        problem["type"], "urn:shipwatch:problem:unavailable",
        "{problem}"
    );

    drop(immutable);
    after_the_outage(&app, &mut daemon, &healthz).await;
    let listed = app.cli_ok(&["list"]);
    for refused in ["8400000000000000009", "8400000000000000010"] {
        assert!(!listed.contains(refused), "{listed}");
    }
}

/// The outage as an operator makes it by hand while the daemon polls: both files immutable for
/// four seconds, then writable again. A `COMMIT` that fails can leave a connection inside its
/// transaction; the daemon must not keep using it, and must be healthy again within a scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_write_outage_mid_run_is_recovered_from_within_a_scan() {
    let (app, mut daemon, healthz) = tracking(None).await;
    let wal = PathBuf::from(format!("{}-wal", app.db.display()));
    assert!(wal.exists(), "the daemon runs in WAL mode");
    // Several outages at different moments of the one-second polls, so that one of them cuts a
    // commit short.
    for round in 0..3u64 {
        let immutable = Immutable::set(&[app.db.clone(), wal.clone()]);
        tokio::time::sleep(Duration::from_millis(4_000 + 300 * round)).await;
        drop(immutable);
        app.wait_until(
            "/healthz is healthy again after the files are writable",
            Duration::from_secs(10),
            || {
                let log = daemon.log();
                lines_with(&log, "database writable again")
                    >= lines_with(&log, "DATABASE NOT WRITABLE")
            },
        )
        .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = health(&healthz).await;
            if status == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still unhealthy 5 s after the outage ended: {body}\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = daemon.log();
        assert!(
            !log.contains("transaction depth"),
            "a connection was reused inside a failed transaction: {log}"
        );
    }
    // Polling goes on: every order moves on and each change is announced once.
    for tid in ORDERS {
        app.top.script(tid, vec![delivered(tid)]);
    }
    app.wait_until("every order is delivered and notified", LIMIT, || {
        app.receiver.deliveries().len() >= 2 * ORDERS.len()
            && app.outbox(Some("pending")).is_empty()
    })
    .await;
    assert_eq!(health(&healthz).await.0, 200);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    for tid in ORDERS {
        let shown = app.shipment(&tid.to_string());
        assert_eq!(shown["shipment"]["status"], "delivered", "{shown}");
    }
    assert_eq!(
        app.receiver.deliveries().len(),
        2 * ORDERS.len(),
        "each change arrived once"
    );
}

/// Where `chattr +i` works, for the test that makes the outage with it: the app's own folder
/// when its file system takes the flag, else the build's scratch folder (tmpfs and overlay
/// mounts often refuse it). `None`, with the reason printed, when neither does or the test is
/// not root.
fn immutable_capable(app_dir: &Path) -> Option<PathBuf> {
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut refusals = Vec::new();
    for dir in [app_dir.to_owned(), scratch] {
        let probe = dir.join(format!("chattr-probe-{}", std::process::id()));
        if let Err(e) = std::fs::write(&probe, b"probe") {
            refusals.push(format!("{}: {e}", dir.display()));
            continue;
        }
        let made = run("chattr", &["+i", probe.to_str().unwrap()]);
        let _ = run("chattr", &["-i", probe.to_str().unwrap()]);
        let _ = std::fs::remove_file(&probe);
        match made {
            Ok(()) => return Some(dir),
            Err(e) => refusals.push(e),
        }
    }
    println!(
        "skipped: `chattr +i` works nowhere here (it needs root and a file system that takes \
         the flag): {}",
        refusals.join("; ")
    );
    None
}

/// The outage exactly as it was reported, made as an operator makes it: a daemon with a steady
/// flow of status changes, `chattr +i` on the database and its `-wal` file, four seconds, then
/// `chattr -i`. Within one scan interval of the files being writable again `/healthz` is
/// healthy, polls go on, and in the end every change reached the receiver exactly once; no
/// connection was ever reused inside a transaction whose `COMMIT` had failed (sqlx then
/// refuses every later `BEGIN` with "non-zero transaction depth", and the daemon never
/// recovers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_second_chattr_outage_under_a_steady_flow_of_changes_is_recovered_from_within_a_scan()
 {
    /// Parcels on the move through the whole test, each holding every step of its journey for
    /// [`HOLD`] polls and starting at its own offset, so that some change is seen every second.
    const PARCELS: u64 = 12;
    const HOLD: usize = 3;
    const SCAN: Duration = Duration::from_secs(1);
    let port = free_port();
    let mut app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .tiers("1s", "1s", "1s")
        .section(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .start()
        .await;
    let Some(dir) = immutable_capable(app.dir.path()) else {
        return;
    };
    let scratch;
    if dir != app.dir.path() {
        scratch = tempfile::tempdir_in(&dir).unwrap();
        let db = scratch.path().join("shipwatch.db");
        let old = app.db.display().to_string();
        app.edit_config(|text| text.replace(&old, &db.display().to_string()));
        app.db = db;
    }
    app.edit_config(|text| text.replace("scan_interval = \"200ms\"", "scan_interval = \"1s\""));
    let tids: Vec<u64> = (0..PARCELS)
        .map(|i| 8_400_000_000_000_100_000 + i)
        .collect();
    for (i, &tid) in tids.iter().enumerate() {
        let journey = fake_top::journey_bodies(tid);
        let mut bodies = vec![journey[0].clone(); i % HOLD];
        for body in journey {
            bodies.extend(std::iter::repeat_n(body, HOLD));
        }
        app.top.script(tid, bodies);
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    }
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let mut daemon = app.spawn_daemon();
    app.wait_until("changes flow", LIMIT, || {
        app.receiver.deliveries().len() >= PARCELS as usize + 4
    })
    .await;
    assert_eq!(health(&healthz).await.0, 200, "{}", daemon.log());

    let wal = PathBuf::from(format!("{}-wal", app.db.display()));
    assert!(wal.exists(), "the daemon runs in WAL mode");
    let immutable = Immutable::set(&[app.db.clone(), wal]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = app.receiver.deliveries().len();
    drop(immutable);
    let writable = std::time::Instant::now();
    let calls_then = app.top.call_count();

    // Healthy again within a scan, give or take the probe's own round trip.
    let mut last = (0, String::new());
    while writable.elapsed() < SCAN + Duration::from_millis(500) {
        last = health(&healthz).await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last.0,
        200,
        "still unhealthy {:?} after the files became writable: {}\n{}",
        writable.elapsed(),
        last.1,
        daemon.log()
    );

    app.wait_until("every parcel is delivered and notified", LIMIT, || {
        app.shipments().iter().all(|s| s["status"] == "delivered")
            && app.outbox(Some("pending")).is_empty()
    })
    .await;
    assert!(
        app.top.call_count() > calls_then,
        "polls went on after the outage"
    );
    assert!(
        app.receiver.deliveries().len() > during,
        "deliveries went on after the outage"
    );
    assert_eq!(health(&healthz).await.0, 200);
    let log = daemon.log();
    assert!(daemon.terminate().success(), "{log}");
    assert!(
        !log.contains("transaction depth"),
        "a connection was reused inside a failed transaction: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    for line in log
        .lines()
        .filter(|l| l.contains("WRITABLE") || l.contains("writable again"))
    {
        println!("{line}");
    }

    // Every change the daemon recorded reached the receiver once, and only those.
    let outbox = app.outbox(None);
    assert!(outbox.iter().all(|n| n["state"] == "sent"), "{outbox:#?}");
    let deliveries = app.receiver.deliveries();
    let mut ids: Vec<&str> = deliveries.iter().map(|d| d.webhook_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), deliveries.len(), "a change arrived twice");
    assert_eq!(deliveries.len(), outbox.len(), "one delivery per change");
    for tid in &tids {
        let shown = app.shipment(&tid.to_string());
        let statuses: Vec<&str> = shown["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["status"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            statuses.last(),
            Some(&"delivered"),
            "order {tid}: {statuses:?}"
        );
        assert_eq!(statuses[0], "info_received", "order {tid}: {statuses:?}");
    }
}
