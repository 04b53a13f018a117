//! kill -9 at any moment loses nothing: a status change and its notification commit together,
//! and a notification is never queued twice, however often the daemon dies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::app::TestApp;

fn tid(i: u64) -> u64 {
    6_100_000_000_000_000_000 + i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_mid_run_loses_and_duplicates_no_notification() {
    let app = TestApp::start().await;
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

    // In the database: five transitions per shipment, each with exactly one notification.
    let outbox = app.outbox(None);
    assert_eq!(
        outbox.len(),
        12 * 5,
        "one row per change, no more: {outbox:#?}"
    );
    let mut per_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for n in &outbox {
        assert_eq!(n["state"], "sent", "{n}");
        let change = format!("{}→{}", n["previous_status"], n["status"]);
        assert!(
            per_order
                .entry(n["order_id"].as_str().unwrap().to_owned())
                .or_default()
                .insert(change.clone()),
            "change {change} queued twice for {}",
            n["order_id"]
        );
    }
    assert_eq!(per_order.len(), 12);

    // At the receiver: every change arrived (a delivery cut short by the kill may arrive twice,
    // under the same webhook-id, which receivers deduplicate on).
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut bodies_per_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in app.receiver.deliveries() {
        assert!(d.verified);
        let data = &d.body["data"];
        seen.entry(data["order_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(data["status"].as_str().unwrap().to_owned());
        bodies_per_id
            .entry(d.webhook_id.clone())
            .or_default()
            .insert(d.raw_body.clone());
    }
    for (order, statuses) in &seen {
        assert_eq!(
            statuses.len(),
            5,
            "order {order} missed a change: {statuses:?}"
        );
    }
    assert_eq!(seen.len(), 12);
    assert!(
        bodies_per_id.values().all(|bodies| bodies.len() == 1),
        "a retry must resend the same body under the same id"
    );
    assert_eq!(bodies_per_id.len(), 12 * 5);
    assert_eq!(app.top.signature_failures(), 0);
}

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
