//! Mistakes from outside — a bad row, a bad answer from upstream, a broken config, a bad admin
//! command — are refused or reported clearly, and never take the daemon down.

use std::process::Output;
use std::time::Duration;

use crate::support::app::{Engine, TestApp};
use crate::support::on_both_engines;

on_both_engines!(
    the_database_refuses_structural_mistakes,
    a_row_for_an_unknown_provider_is_flagged_and_the_rest_carry_on,
    garbage_from_the_gateway_is_reported_and_polling_goes_on,
    add_refuses_a_duplicate_and_an_unknown_provider_in_one_line,
);
use crate::support::config::{Channel, Provider};
use crate::support::fake_top::{self, Fault};

fn tid(i: u64) -> u64 {
    7_300_000_000_000_000_000 + i
}

/// Asserts the command failed with exactly one line on stderr, and returns that line.
fn one_line_error(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} must fail; stderr: {stderr:?}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{what}: exactly one line on stderr, got {stderr:?}"
    );
    stderr.trim_end().to_owned()
}

async fn the_database_refuses_structural_mistakes(engine: Engine) {
    let app = TestApp::start_on(engine).await;
    app.create_database();

    let error = app
        .sql("INSERT INTO shipments (order_id, provider, tier) VALUES ('1', 'taobao', 'urgent')")
        .await
        .expect_err("an unknown tier is refused");
    assert!(error.contains("tier"), "{error}");

    let error = app
        .sql("INSERT INTO shipments (order_id, provider) VALUES ('', 'taobao')")
        .await
        .expect_err("an empty order id is refused");
    assert!(error.contains("order_id"), "{error}");
    let error = app
        .sql("INSERT INTO shipments (order_id, provider) VALUES ('   ', 'taobao')")
        .await
        .expect_err("a blank order id is refused");
    assert!(error.contains("order_id"), "{error}");

    assert!(app.shipments().is_empty(), "nothing was stored");
}

async fn a_row_for_an_unknown_provider_is_flagged_and_the_rest_carry_on(engine: Engine) {
    let app = TestApp::start_on(engine).await;
    app.create_database();
    let mut daemon = app.spawn_daemon();

    app.sql(
        "INSERT INTO shipments (order_id, provider, tracking_no, carrier) \
         VALUES ('DHL-1', 'dhl', '1234567890', 'DHL')",
    )
    .await
    .expect("the database cannot judge provider names; the daemon does");
    for i in 0..3 {
        app.top.journey(tid(i));
        app.sql(&format!(
            "INSERT INTO shipments (order_id, provider, tier) VALUES ('{}', 'taobao', 'high')",
            tid(i)
        ))
        .await
        .unwrap();
    }

    app.wait_until(
        "the dhl row is flagged and the others delivered",
        Duration::from_secs(30),
        || {
            app.shipments().iter().all(|s| {
                if s["provider"] == "dhl" {
                    s["active"] == false
                } else {
                    s["status"] == "delivered"
                }
            })
        },
    )
    .await;

    let list = app.shipments();
    let dhl = list.iter().find(|s| s["order_id"] == "DHL-1").unwrap();
    assert_eq!(dhl["active"], false);
    assert_eq!(dhl["status"], "pending");
    let error = dhl["error"]
        .as_str()
        .expect("the row says why it is not polled");
    assert!(error.contains("dhl"), "{error}");
    assert!(error.contains("unknown provider"), "{error}");
    assert_eq!(list.len(), 4);
    for shipment in list.iter().filter(|s| s["provider"] == "taobao") {
        assert!(shipment["error"].is_null(), "{shipment}");
    }
    // The human table says so too.
    let table = app.cli_ok(&["list"]);
    assert!(table.contains("INVALID"), "{table}");
    assert!(daemon.is_running(), "{}", daemon.log());
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

async fn garbage_from_the_gateway_is_reported_and_polling_goes_on(engine: Engine) {
    // A 3s tier keeps each poll error on show for a few seconds, long enough to see in `list`.
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .tiers("1s", "3s", "3s")
        .engine(engine)
        .start()
        .await;
    let order = tid(10);
    let id = order.to_string();
    app.top.script(
        order,
        vec![
            fake_top::trace_response(order, "物流公司已接单", &[]),
            fake_top::trace_response(
                order,
                "对方已签收",
                &[(
                    "2026-11-20 08:00:05",
                    "【上海市】快件已签收，签收人：本人",
                    "SIGNED",
                )],
            ),
        ],
    );
    app.top.fault(Fault::Html, 1);
    app.top.fault(Fault::MalformedJson, 1);
    app.top.fault(Fault::Empty, 1);
    app.cli_ok(&["add", &id, "--tier", "normal"]);
    let mut daemon = app.spawn_daemon();

    let mut errors_seen: Vec<String> = Vec::new();
    app.wait_until("the shipment is delivered", Duration::from_secs(30), || {
        let s = app.shipment(&id)["shipment"].clone();
        if let Some(error) = s["error"].as_str() {
            assert_eq!(s["active"], true, "a poll error does not stop polling: {s}");
            if errors_seen.last().map(String::as_str) != Some(error) {
                errors_seen.push(error.to_owned());
            }
        }
        s["status"] == "delivered"
    })
    .await;

    let answered: Vec<&str> = app.top.calls().iter().map(|c| c.answered).collect();
    assert_eq!(
        &answered[..3],
        ["html", "malformed_json", "empty"],
        "{answered:?}"
    );
    assert!(
        !errors_seen.is_empty(),
        "the poll error never showed in `show --json`"
    );
    let log = daemon.log();
    assert!(
        log.matches("poll failed").count() >= 3,
        "each bad answer is logged:\n{log}"
    );
    assert!(log.contains("empty body"), "{log}");
    let shipment = app.shipment(&id)["shipment"].clone();
    assert!(
        shipment["error"].is_null(),
        "a good poll clears the error: {shipment}"
    );
    app.wait_until(
        "both changes are announced",
        Duration::from_secs(20),
        || app.outbox(Some("sent")).len() == 2,
    )
    .await;
    assert!(daemon.is_running(), "{log}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_file_is_named_in_one_line() {
    let app = TestApp::start().await;
    let secret = app.dir.path().join("taobao.secret");
    std::fs::remove_file(&secret).unwrap();
    let shown = secret.display().to_string();

    let line = one_line_error("check-config", &app.cli(&["check-config"]));
    assert!(line.contains(&shown), "{line}");

    let mut daemon = app.spawn_daemon();
    let status = daemon
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("`run` with a broken config exits at once instead of running");
    assert!(!status.success());
    let log = daemon.log();
    assert_eq!(
        log.lines().count(),
        1,
        "exactly one line on stderr: {log:?}"
    );
    assert!(log.contains(&shown), "{log}");
}

async fn add_refuses_a_duplicate_and_an_unknown_provider_in_one_line(engine: Engine) {
    let app = TestApp::start_on(engine).await;
    app.cli_ok(&["add", "42"]);

    let line = one_line_error("a duplicate add", &app.cli(&["add", "42"]));
    assert!(line.contains("42"), "{line}");
    assert!(line.contains("already"), "{line}");

    let line = one_line_error(
        "add --provider dhl",
        &app.cli(&["add", "43", "--provider", "dhl"]),
    );
    assert!(line.contains("dhl"), "{line}");
    assert!(line.contains("taobao"), "names the configured ones: {line}");

    let list = app.shipments();
    assert_eq!(list.len(), 1, "neither mistake stored a row: {list:?}");
}

// An argument mistake is answered as clap answers it, with the usage and the values there are
// (tests/e2e/cli.rs has the rest); every other error is one line of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_refuses_an_unknown_tier_naming_the_tiers_there_are() {
    let app = TestApp::start().await;
    let out = app.cli(&["add", "44", "--tier", "urgent"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an argument mistake exits with 2"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("urgent"), "{stderr}");
    assert!(
        stderr.contains("[possible values: high, normal, low]"),
        "names the tiers there are: {stderr}"
    );
    // Nothing was stored: the refused `add` did not even create the database.
    assert!(!app.db.exists() || app.shipments().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_in_a_missing_folder_is_refused_in_one_line_that_says_what_to_do() {
    let app = TestApp::start().await;
    let missing = app.dir.path().join("no-such-folder");
    let db = missing.join("shipwatch.db");
    let expected = format!(
        "folder {} does not exist; create it or fix the path",
        missing.display()
    );
    let line = one_line_error(
        "add into a missing folder",
        &app.cli(&["--db", db.to_str().unwrap(), "add", "7300000000000000901"]),
    );
    assert!(line.contains(&expected), "{line}");
    // `run` may warn about the test's file modes first; its error is the last line.
    let out = app.cli(&["--db", db.to_str().unwrap(), "run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error:") && last.contains(&expected),
        "{stderr}"
    );
    assert!(!missing.exists(), "nothing was created on the way");
}
