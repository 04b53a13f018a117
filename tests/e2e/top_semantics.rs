//! What TOP's answers mean, through the real binary: the scans decide the status (an offline-shipped
//! order reads 对方已签收 from the day it ships), split orders name their sub-orders, and each
//! kind of refusal leads where it should.

use std::time::Duration;

use chrono::DateTime;

use crate::support::app::TestApp;
use crate::support::fake_top;

fn tid(i: u64) -> u64 {
    6_000_000_000_000_000_000 + i
}

const PICKED_UP: (&str, &str, &str) = ("2026-11-20 08:00:01", "【杭州市】中通快递 已揽收", "GOT");
const DEPARTED: (&str, &str, &str) = (
    "2026-11-20 09:30:00",
    "快件已从【杭州转运中心】发出，发往【上海】",
    "DEPARTURE",
);
const SIGNED: (&str, &str, &str) = ("2026-11-21 10:00:00", "包裹已签收", "TMS_SIGN");

fn delivered_webhooks(app: &TestApp, order: &str) -> usize {
    app.receiver
        .deliveries()
        .iter()
        .filter(|d| d.answered == 200)
        .filter(|d| d.body["data"]["order_id"] == order && d.body["data"]["status"] == "delivered")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_shipped_order_reading_signed_stays_in_transit_until_a_sign_scan() {
    let app = TestApp::start().await;
    let order = tid(1);
    let id = order.to_string();
    // taobao.logistics.offline.send: 对方已签收 from the first poll, with only the pickup and
    // departure scans; the sign scan comes on the fifth poll.
    let shipped = fake_top::trace_response(order, "对方已签收", &[PICKED_UP, DEPARTED]);
    let signed = fake_top::trace_response(order, "对方已签收", &[PICKED_UP, DEPARTED, SIGNED]);
    app.top.script(
        order,
        vec![
            shipped.clone(),
            shipped.clone(),
            shipped.clone(),
            shipped,
            signed,
        ],
    );
    app.cli_ok(&["add", &id, "--tier", "high"]);
    let mut daemon = app.spawn_daemon();

    app.wait_until(
        "three polls of the shipped order",
        Duration::from_secs(30),
        || app.top.polls_of(order) >= 3,
    )
    .await;
    let shipment = app.shipment(&id)["shipment"].clone();
    assert_eq!(shipment["status"], "in_transit", "{shipment}");
    assert_eq!(shipment["active"], true, "{shipment}");
    assert_eq!(
        delivered_webhooks(&app, &id),
        0,
        "the buyer was told it was signed for"
    );

    app.wait_until(
        "the sign scan is announced",
        Duration::from_secs(30),
        || delivered_webhooks(&app, &id) == 1,
    )
    .await;
    // Longer than a poll interval: a second announcement or a poll after delivery would show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered_webhooks(&app, &id), 1);
    assert_eq!(app.top.polls_after_final(order), 0);
    let changes: Vec<(String, String)> = app
        .receiver
        .deliveries()
        .iter()
        .filter(|d| d.answered == 200 && d.body["data"]["order_id"] == id.as_str())
        .map(|d| {
            (
                d.body["data"]["previous_status"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                d.body["data"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("pending".to_owned(), "in_transit".to_owned()),
            ("in_transit".to_owned(), "delivered".to_owned())
        ]
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_order_sends_is_split_and_its_sub_orders_signed() {
    let app = TestApp::start().await;
    let (split, whole) = (tid(2), tid(3));
    app.top.split(split, &["5001,5002", "5003"]);
    app.top.journey(split);
    app.top.journey(whole);
    app.edit_config(|text| {
        text.replace(
            "[providers.taobao]\n",
            "[providers.taobao]\nseller_nick = \"小店一号\"\n",
        )
    });
    // Two parcels of one trade, told apart by a suffix that is not sent.
    let (first, second) = (format!("{split}#1"), format!("{split}#2"));
    app.cli_ok(&["add", &first, "--sub-orders", "5001, 5002"]);
    app.cli_ok(&["add", &second, "--sub-orders", "5003"]);
    app.cli_ok(&["add", &whole.to_string()]);
    assert!(app.cli_ok(&["show", &first]).contains("5001,5002"));

    for order in [&first, &second, &whole.to_string()] {
        app.cli_ok(&["poll", order]);
    }
    assert_eq!(
        app.top.signature_failures(),
        0,
        "{:?}",
        app.top.rejections()
    );
    let calls = app.top.calls();
    assert_eq!(calls.len(), 3);
    let sent: Vec<(Option<u64>, Option<&str>, Option<&str>)> = calls
        .iter()
        .map(|c| (c.tid, c.is_split.as_deref(), c.sub_tid.as_deref()))
        .collect();
    assert_eq!(
        sent,
        [
            (Some(split), Some("1"), Some("5001,5002")),
            (Some(split), Some("1"), Some("5003")),
            (Some(whole), None, None),
        ]
    );
    assert!(calls.iter().all(|c| c.answered == "trace"));
    assert!(
        calls
            .iter()
            .all(|c| c.seller_nick.as_deref() == Some("小店一号"))
    );

    // Sub-orders that are not ids are refused at the door, by the CLI and by the table.
    let out = app.cli(&["add", &tid(4).to_string(), "--sub-orders", "5001;5002"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("like 111,222"), "{err}");
    let err = app
        .sql(&format!(
            "INSERT INTO shipments (order_id, provider, sub_orders) VALUES ('{}', 'taobao', '5001,')",
            tid(5)
        ))
        .await
        .unwrap_err();
    assert!(err.contains("sub_orders must be sub-order ids"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_code_53_stops_the_provider_without_flagging_shipments() {
    let app = TestApp::start().await;
    let order = tid(6);
    app.top.script(
        order,
        vec![fake_top::error_response(
            53,
            "Invalid session",
            "invalid-sessionkey",
            "sessionkey expired",
        )],
    );
    app.cli_ok(&["add", &order.to_string(), "--tier", "high"]);
    let daemon = app.spawn_daemon();
    app.wait_until("the provider stops", Duration::from_secs(30), || {
        daemon.log().contains("PROVIDER STOPPED")
    })
    .await;
    let log = daemon.log();
    assert!(log.contains("credentials expired"), "{log}");
    assert_eq!(log.matches("PROVIDER STOPPED").count(), 1, "{log}");
    let shipment = &app.shipments()[0];
    assert_eq!(shipment["active"], true, "{shipment}");
    let stats = app.cli_ok(&["stats"]);
    assert!(stats.contains("STOPPED"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_timestamp_stops_the_provider_and_says_the_clock_is_wrong() {
    let app = TestApp::start().await;
    let order = tid(7);
    app.top.script(
        order,
        vec![fake_top::error_response(31, "Invalid Timestamp", "", "")],
    );
    app.cli_ok(&["add", &order.to_string(), "--tier", "high"]);
    let daemon = app.spawn_daemon();
    app.wait_until("the provider stops", Duration::from_secs(30), || {
        daemon.log().contains("PROVIDER STOPPED")
    })
    .await;
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("PROVIDER STOPPED"))
        .unwrap();
    assert!(line.contains("clock"), "{line}");
    assert_eq!(app.shipments()[0]["active"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexplained_isv_refusal_is_nothing_yet_on_a_new_shipment_and_invalid_on_an_old_one() {
    let app = TestApp::start().await;
    let (young, old) = (tid(8), tid(9));
    for order in [young, old] {
        app.top.script(
            order,
            vec![fake_top::error_response(
                15,
                "Remote service error",
                "isv.logistics-trace-not-ready",
                "物流信息尚未生成",
            )],
        );
        app.cli_ok(&["add", &order.to_string(), "--tier", "high"]);
    }
    // Added ten days ago: past the default three-day no-info window.
    app.sql(&format!(
        "UPDATE shipments SET created_at = created_at - 10 * 86400000 WHERE order_id = '{old}'"
    ))
    .await
    .unwrap();
    let mut daemon = app.spawn_daemon();
    app.wait_until("both are polled", Duration::from_secs(30), || {
        let list = app.shipments();
        list.iter()
            .all(|s| !s["last_polled_at"].is_null() || !s["active"].as_bool().unwrap())
            && app.top.polls_of(young) >= 1
            && app.top.polls_of(old) >= 1
    })
    .await;
    let old_row = app.shipment(&old.to_string())["shipment"].clone();
    assert_eq!(old_row["active"], false, "{old_row}");
    let reason = old_row["error"].as_str().unwrap();
    assert!(reason.contains("isv.logistics-trace-not-ready"), "{reason}");
    assert!(reason.contains("no-info window"), "{reason}");

    let young_row = app.shipment(&young.to_string())["shipment"].clone();
    assert_eq!(young_row["active"], true, "{young_row}");
    assert_eq!(young_row["status"], "pending", "{young_row}");
    // Asked again no sooner than the low tier (2s here), not at its own high tier (1s).
    let at = |key: &str| DateTime::parse_from_rfc3339(young_row[key].as_str().unwrap()).unwrap();
    let gap = at("next_poll_at") - at("last_polled_at");
    assert!(gap >= chrono::Duration::seconds(2), "{young_row}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_answer_after_a_newer_one_changes_nothing() {
    let app = TestApp::start().await;
    let order = tid(10);
    let id = order.to_string();
    app.top.script(
        order,
        vec![
            fake_top::trace_response(order, "物流公司揽收成功", &[PICKED_UP, DEPARTED]),
            // An upstream cache serving yesterday's picture: only the pickup scan.
            fake_top::trace_response(order, "物流公司揽收成功", &[PICKED_UP]),
            fake_top::trace_response(order, "物流公司揽收成功", &[]),
            fake_top::trace_response(order, "对方已签收", &[PICKED_UP, DEPARTED, SIGNED]),
        ],
    );
    app.cli_ok(&["add", &id]);
    let status = || app.shipment(&id)["shipment"]["status"].clone();
    app.cli_ok(&["poll", &id, "--apply"]);
    assert_eq!(status(), "in_transit");
    for _ in 0..2 {
        app.cli_ok(&["poll", &id, "--apply"]);
        let shown = app.shipment(&id);
        assert_eq!(shown["shipment"]["status"], "in_transit", "{shown}");
        assert_eq!(shown["events"].as_array().unwrap().len(), 2, "{shown}");
        assert_eq!(
            shown["notifications"].as_array().unwrap().len(),
            1,
            "{shown}"
        );
    }
    app.cli_ok(&["poll", &id, "--apply"]);
    assert_eq!(status(), "delivered");
    let statuses: Vec<String> = app
        .outbox(None)
        .iter()
        .map(|n| n["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["in_transit", "delivered"]);
}
