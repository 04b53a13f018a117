//! The daemon's edges under the real binary: what it checks before it says it started, how a
//! second stop signal ends the drain, how its start is logged, and what its config warns about.

use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use crate::support::app::{Daemon, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::free_port;
use crate::support::hostile::SlowWebhook;

const LIMIT: Duration = Duration::from_secs(30);

async fn started(app: &TestApp, daemon: &Daemon) {
    app.wait_until("the daemon starts", LIMIT, || {
        daemon.log().contains("shipwatch started")
    })
    .await;
}

/// A top-level key goes above the first table.
fn top_level(app: &TestApp, line: &str) {
    app.edit_config(|text| format!("{line}\n{text}"));
}

/// A daemon's app whose webhook takes a minute to answer, with a delivery timeout and lease
/// long enough to wait for it.
async fn behind_a_slow_receiver() -> (SlowWebhook, TestApp) {
    let slow = SlowWebhook::start(Duration::from_secs(60)).await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook_to(&slow.url))
        .start()
        .await;
    app.edit_config(|text| text.replace("timeout = \"2s\"", "timeout = \"5m\""));
    app.edit_config(|text| text.replace("lease = \"5s\"", "lease = \"10m\""));
    (slow, app)
}

/// The first SIGTERM drains within `shutdown_timeout` (here ten minutes, behind a receiver that
/// takes a minute to answer); a second one during that drain stops now: the delivery in flight
/// is given back (its lease ended, still pending, to be sent at the next start) and the daemon
/// exits with status 1 and one line saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_signal_cuts_the_shutdown_grace_short() {
    let (slow, app) = behind_a_slow_receiver().await;
    top_level(&app, "shutdown_timeout = \"10m\"");
    let tid = 8_400_000_000_000_200_001u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string()]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("a delivery is in flight", LIMIT, || {
        !slow.requests().is_empty()
    })
    .await;

    daemon.signal("TERM");
    app.wait_until("the drain begins", LIMIT, || {
        daemon.log().contains("shutting down")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        daemon.is_running(),
        "the first signal waits for the delivery in flight\n{}",
        daemon.log()
    );

    let second = std::time::Instant::now();
    daemon.signal("INT");
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running after the second signal\n{}", daemon.log()));
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("second stop signal: stopping now"), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        [
            "error: stopped at a second signal before the work in flight finished; it was given back and runs again at the next start"
        ],
        "{log}"
    );

    // Given back: pending, its lease ended, no attempt counted against it.
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", app.db.display()))
        .await
        .unwrap();
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT state, lease_until FROM notifications")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let _ = conn.close().await;
    assert!(!rows.is_empty());
    for (state, lease) in rows {
        assert_eq!(state, "pending");
        assert_eq!(lease, None, "the lease is given back");
    }
}

/// Messages claimed ahead of the free delivery slots and never attempted are given back at the
/// stop with no attempt spent; the attempts a second signal cut short are given back too and
/// counted apart: after the stop, each message has exactly as many attempts cut short as the
/// receiver saw requests for it, and none counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_claimed_ahead_and_never_attempted_spend_no_attempt_at_the_stop() {
    let (slow, app) = behind_a_slow_receiver().await;
    app.edit_config(|text| text.replace("[delivery]", "[delivery]\nconcurrency = 2"));
    // Six changes queued before the daemon starts: its first claim takes the two free slots'
    // messages and two more ahead of them.
    for k in 0..6u64 {
        let tid = 8_400_000_000_000_300_001 + k;
        app.top.journey(tid);
        app.cli_ok(&["add", &tid.to_string()]);
        app.cli_ok(&["poll", &tid.to_string(), "--apply"]);
    }
    let mut daemon = app.spawn_daemon();
    app.wait_until("both delivery slots are busy", LIMIT, || {
        slow.requests().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.signal("TERM");
    app.wait_until("the drain begins", LIMIT, || {
        daemon.log().contains("shutting down")
    })
    .await;
    daemon.signal("INT");
    daemon
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running after the second signal\n{}", daemon.log()));

    let seen = slow.requests();
    assert_eq!(seen.len(), 2, "two slots, two requests: {seen:?}");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", app.db.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT public_id, state, attempts, cut_short, lease_until FROM notifications",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    assert!(rows.len() >= 6, "{rows:?}");
    for (id, state, attempts, cut_short, lease) in rows {
        let requests = seen.iter().filter(|(seen, _)| *seen == id).count() as i64;
        assert_eq!(state, "pending", "{id}");
        assert_eq!(lease, None, "{id}: the claim is given back");
        // The two attempts under way were cut short by the second signal, with no answer: given
        // back and counted apart, as a kill's are; the messages claimed ahead spent nothing.
        assert_eq!(
            (attempts, cut_short),
            (0, requests),
            "{id}: {attempts} attempts counted and {cut_short} cut short, {requests} requests \
             made\n{}",
            daemon.log()
        );
    }
}

/// A listen address that is taken, or not this machine's, fails the start before the daemon
/// says it started and before systemd hears READY: one error line naming the address and the
/// fix, a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_in_use_fails_the_start_before_it_is_announced() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap();
    // TEST-NET-1 (RFC 5737): documentation only, never a machine's address.
    let elsewhere: std::net::SocketAddr = "192.0.2.1:9464".parse().unwrap();
    for (address, error) in [
        (
            in_use,
            format!("error: address {in_use} is in use; free it or change [http] listen"),
        ),
        (
            elsewhere,
            format!(
                "error: address {elsewhere} is not an address of this machine; change [http] listen"
            ),
        ),
    ] {
        let app = TestApp::builder()
            .provider(Provider::top())
            .channel(Channel::webhook())
            .section(&format!("[http]\nlisten = \"{address}\"\n"))
            .start()
            .await;
        let socket_path = app.dir.path().join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
        notify.set_nonblocking(true).unwrap();
        let mut daemon =
            app.spawn_daemon_with(&[], &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
        let status = daemon
            .wait_exit(LIMIT)
            .await
            .unwrap_or_else(|| panic!("the daemon runs without its listener\n{}", daemon.log()));
        assert!(!status.success());
        let log = daemon.log();
        assert!(!log.contains("shipwatch started"), "{log}");
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors, [error], "{log}");
        let mut buf = [0u8; 4096];
        let mut told = Vec::new();
        while let Ok(n) = notify.recv(&mut buf) {
            told.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert!(
            told.iter().all(|m| !m.contains("READY=1")),
            "systemd heard READY: {told:?}"
        );
    }
    drop(taken);
}

/// With `--log-format json` the start line's lists (providers, channels) are JSON arrays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_give_list_fields_as_arrays() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .provider(Provider::simulator())
        .channel(Channel::webhook())
        .start()
        .await;
    let mut daemon = app.spawn_daemon_with(&["--log-format", "json"], &[]);
    started(&app, &daemon).await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("shipwatch started"))
        .expect("the start line");
    let event: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let fields = &event["fields"];
    assert_eq!(fields["message"], "shipwatch started", "{line}");
    assert_eq!(
        fields["providers"],
        serde_json::json!(["sim", "taobao"]),
        "{line}"
    );
    assert_eq!(fields["channels"], serde_json::json!(["webhook"]), "{line}");
    assert!(fields["database"].is_string(), "{line}");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("every line is JSON ({e}): {line}"));
    }
}

/// A higher tier polled less often than a lower one is a warning, not an error: one line naming
/// both, in `check-config` and at the daemon's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_out_of_order_are_one_warning_in_check_config_and_at_start() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .tiers("1h", "1h", "1m")
        .start()
        .await;
    let out = app.cli_ok(&["check-config"]);
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("[tiers]")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].trim_start().starts_with("WARNING")
            && warnings[0].contains(r#"high = "1h" is polled less often than low = "1m""#)
            && warnings[0].contains(r#"normal = "1h" is polled less often than low = "1m""#),
        "{out}"
    );

    let mut daemon = app.spawn_daemon();
    started(&app, &daemon).await;
    assert!(daemon.terminate().success());
    let log = daemon.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("[tiers] out of order"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains(r#"high = \"1h\""#) || warned[0].contains(r#"high = "1h""#));

    // In order: no warning.
    app.edit_config(|text| {
        text.replace("high = \"1h\"", "high = \"1s\"")
            .replace("normal = \"1h\"", "normal = \"1s\"")
    });
    let out = app.cli_ok(&["check-config"]);
    assert!(!out.contains("[tiers]"), "{out}");
}

/// A channel URL's token never reaches `check-config`'s output or the daemon's log, in either
/// log format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_url_token_is_never_printed() {
    const TOKEN: &str = "SECRET-Tk91";
    let port = free_port();
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook_to(&format!(
            "https://hooks.example/x?token={TOKEN}"
        )))
        .section(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .start()
        .await;
    let out = app.cli(&["check-config"]);
    assert!(out.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("hooks.example"), "{printed}");
    assert!(!printed.contains(TOKEN), "{printed}");

    for args in [&[][..], &["--log-format", "json"][..]] {
        let mut daemon = app.spawn_daemon_with(args, &[("RUST_LOG", "trace")]);
        started(&app, &daemon).await;
        assert!(daemon.terminate().success(), "{}", daemon.log());
        let log = daemon.log();
        assert!(!log.contains(TOKEN), "{log}");
    }
}

/// `poll --apply` with credentials upstream rejects records no provider stop: the running daemon
/// keeps its stops in memory and would never see one written from outside, while `stats` and
/// `check-config` would show the provider stopped. The daemon, with the credentials it loaded,
/// goes on polling; it stops the provider itself if upstream rejects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_apply_with_rejected_credentials_records_no_stop_behind_the_daemons_back() {
    let app = TestApp::start().await;
    let tid = 8_400_000_000_000_300_001u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the first change is delivered", LIMIT, || {
        !app.receiver.deliveries().is_empty()
    })
    .await;

    // The config on disk now holds a session upstream rejects (not reloaded).
    app.edit_config(|text| text.replace("session = \"test-session\"", "session = \"stale\""));
    let out = app.cli(&["poll", &tid.to_string(), "--apply"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("not recorded"), "{stdout}");
    let check = app.cli_ok(&["check-config"]);
    assert!(!check.contains("STOPPED"), "{check}");

    app.wait_until("the daemon goes on to delivered", LIMIT, || {
        app.shipment(&tid.to_string())["shipment"]["status"] == "delivered"
    })
    .await;
    assert!(daemon.terminate().success());
    assert!(
        !daemon.log().contains("PROVIDER STOPPED"),
        "{}",
        daemon.log()
    );
}

/// Without `RUST_LOG`, as its systemd unit runs it, the daemon logs at info: its start, each
/// notification it delivers and its stop, and not the debug line of every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rust_log_the_daemon_logs_its_start_its_deliveries_and_its_stop() {
    let app = TestApp::start().await;
    let tid: u64 = 8_300_000_000_000_000_001;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon_at_default_level();
    app.wait_until("a notification is delivered", LIMIT, || {
        !app.receiver.deliveries().is_empty() && daemon.log().contains("notification delivered")
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let log = daemon.log();
    for line in ["shipwatch started", "notification delivered", "stopped"] {
        assert!(
            log.lines()
                .any(|l| l.contains(" INFO ") && l.contains(line)),
            "no {line:?} at info: {log}"
        );
    }
    assert!(!log.contains(" DEBUG "), "{log}");
}
