//! The real binary under a stand-in for systemd: readiness after migrations, watchdog pings
//! while the dispatcher works, STOPPING=1 on SIGTERM, and the health and metrics endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixDatagram;

use crate::support::app::{Daemon, TestApp};
use crate::support::config::{Channel, Provider};

/// Reads the notify socket as systemd would, keeping every message.
fn listen(socket: UnixDatagram) -> Arc<Mutex<Vec<String>>> {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let kept = messages.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    messages
}

fn count(messages: &Mutex<Vec<String>>, needle: &str) -> usize {
    messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_and_stopping_and_health_answers() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .section("[http]\nlisten = \"127.0.0.1:0\"\n")
        .start()
        .await;
    let tid = 9_500_000_000_000_000_001u64;
    app.top.journey(tid);
    let socket_path = app.dir.path().join("notify.sock");
    let messages = listen(UnixDatagram::bind(&socket_path).unwrap());
    let mut daemon = app.spawn_daemon_with_env(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);

    app.wait_until("READY=1 arrives", Duration::from_secs(30), || {
        count(&messages, "READY=1") == 1
    })
    .await;
    let ready = messages.lock().unwrap()[0].clone();
    assert!(ready.contains("READY=1"), "READY=1 comes first: {ready}");
    assert!(ready.contains("STATUS=tracking 0 shipments"), "{ready}");
    // Ready means migrated: the public table takes rows at once.
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tier) VALUES ('{tid}', 'taobao', 'high')"
    ))
    .await
    .unwrap();
    app.wait_until(
        "the watchdog is fed regularly",
        Duration::from_secs(10),
        || count(&messages, "WATCHDOG=1") >= 5,
    )
    .await;

    let log = daemon.log();
    let listen = log
        .lines()
        .find(|l| l.contains("serving /healthz and /metrics"))
        .and_then(|l| l.split("listen=").nth(1))
        .map(|s| s.split_whitespace().next().unwrap().to_owned())
        .expect("the daemon says where it listens");
    let health = reqwest::get(format!("http://{listen}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    app.wait_until("the parcel is delivered", Duration::from_secs(30), || {
        app.shipments()[0]["status"] == "delivered"
    })
    .await;
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shipwatch_shipments{")
                && l.contains("status=\"delivered\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shipwatch_status_changes_total") && l.contains("delivered")),
        "{metrics}"
    );
    // Five successful polls took the parcel to delivered.
    let ok_polls = metrics
        .lines()
        .find(|l| {
            l.starts_with("shipwatch_polls_total{")
                && l.contains("provider=\"taobao\"")
                && l.contains("result=\"ok\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(ok_polls >= 5.0, "{metrics}");
    assert!(
        metrics.contains("shipwatch_rate_limit_wait_seconds_count{provider=\"taobao\"}"),
        "{metrics}"
    );

    assert!(daemon.terminate().success());
    app.wait_until("STOPPING=1 arrives", Duration::from_secs(5), || {
        count(&messages, "STOPPING=1") == 1
    })
    .await;
    // A stop with nothing cut short says so by saying nothing of it.
    let log = daemon.log();
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("cut short"), "{log}");
}

/// A database another program keeps locked wedges the dispatcher: its rounds cannot claim, so
/// the pings stop and systemd would restart the service; once the lock goes, pings resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_dispatcher_starves_the_watchdog_until_it_moves_again() {
    use sqlx::Connection;

    let app = TestApp::start().await;
    let tid = 9_500_000_000_000_000_002u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string(), "--tier", "low"]);
    // A scan interval longer than the watchdog's: idle rounds must still come often enough.
    app.edit_config(|text| text.replace("scan_interval = \"200ms\"", "scan_interval = \"10s\""));
    let socket_path = app.dir.path().join("notify.sock");
    let messages = listen(UnixDatagram::bind(&socket_path).unwrap());
    let mut daemon = app.spawn_daemon_with_env(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "400000"),
    ]);
    // One ping each half interval (200 ms) with a round in it: an idle dispatcher that slept a
    // scan (10 s), or even a second, between rounds could not send twenty in 15 s.
    app.wait_until(
        "the watchdog is fed every 200 ms, not every scan",
        Duration::from_secs(15),
        || count(&messages, "WATCHDOG=1") >= 20,
    )
    .await;

    // Another program takes the write lock and sits on it, as a long backup or a stuck admin
    // shell would.
    let url = format!("sqlite://{}", app.db.display());
    let mut blocker = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    // A round already past its claim may still complete and earn one more ping.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = count(&messages, "WATCHDOG=1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = count(&messages, "WATCHDOG=1") - before;
    assert!(
        during <= 1,
        "{during} pings while the dispatcher could not claim anything"
    );
    assert!(
        daemon.log().contains("withholding pings"),
        "{}",
        daemon.log()
    );

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let after = count(&messages, "WATCHDOG=1");
    app.wait_until(
        "pings resume once the dispatcher moves",
        Duration::from_secs(40),
        || count(&messages, "WATCHDOG=1") >= after + 3,
    )
    .await;
    assert!(daemon.terminate().success());
}

/// Waits for the daemon's start line, looking every millisecond: a supervisor's signal can land
/// right after it.
async fn started(daemon: &Daemon) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !daemon.log().contains("shipwatch started") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon did not start\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// systemd may stop or reload the daemon the moment it has started. From its start line on,
/// SIGTERM stops it cleanly (status 0) and SIGHUP reloads it; the signals' default dispositions
/// would kill it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_or_reload_right_after_start_is_handled_not_fatal() {
    let app = TestApp::start().await;
    for _ in 0..3 {
        let mut daemon = app.spawn_daemon();
        started(&daemon).await;
        let status = daemon.terminate();
        assert!(
            status.success(),
            "SIGTERM right after start: {status}\n{}",
            daemon.log()
        );
    }

    let mut daemon = app.spawn_daemon();
    started(&daemon).await;
    let pid = daemon.pid().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    app.wait_until("the daemon reloads", Duration::from_secs(30), || {
        daemon.log().contains("config reloaded")
    })
    .await;
    let status = daemon.terminate();
    assert!(status.success(), "{status}\n{}", daemon.log());
}

/// A `NOTIFY_SOCKET` that is set but empty (a wrapper that clears it with `NOTIFY_SOCKET=`)
/// names no socket: the daemon is not supervised, as when it is unset. It runs, stops cleanly,
/// and says nothing about a socket it was never given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_notify_socket_means_not_supervised() {
    let app = TestApp::start().await;
    let mut daemon =
        app.spawn_daemon_with_env(&[("NOTIFY_SOCKET", ""), ("WATCHDOG_USEC", "400000")]);
    started(&daemon).await;
    let status = daemon.terminate();
    let log = daemon.log();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("shutting down"),
        "the stop went its whole way:\n{log}"
    );
    for complaint in ["NOTIFY_SOCKET", "notify systemd"] {
        assert!(!log.contains(complaint), "{complaint:?} in the log:\n{log}");
    }
}
