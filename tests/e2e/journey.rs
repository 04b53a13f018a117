//! The whole loop with the real binary: shipments added by CLI and by SQL while the daemon runs,
//! polled from a fake TOP gateway through every status, each change delivered once as a signed
//! webhook.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use shipwatch::notify::receiver::Behaviour;

use crate::support::app::{Engine, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::on_both_engines;

on_both_engines!(
    twenty_shipments_travel_from_order_to_doorstep,
    each_shipments_notifications_arrive_in_the_order_they_were_queued,
);

const CHAIN: [(&str, &str); 5] = [
    ("pending", "info_received"),
    ("info_received", "picked_up"),
    ("picked_up", "in_transit"),
    ("in_transit", "out_for_delivery"),
    ("out_for_delivery", "delivered"),
];

fn tid(i: u64) -> u64 {
    // 19 digits: beyond f64's exact range, as real Taobao order ids are.
    7_000_000_000_000_000_000 + i
}

/// Every accepted delivery per order, as `(previous_status, status)` in arrival order.
fn accepted_changes(app: &TestApp) -> BTreeMap<String, Vec<(String, String)>> {
    let mut per_order: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for d in app.receiver.deliveries() {
        assert!(
            d.verified,
            "a delivery failed signature verification: {d:?}"
        );
        if d.answered != 200 {
            continue;
        }
        let data = &d.body["data"];
        per_order
            .entry(data["order_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                data["previous_status"].as_str().unwrap().to_owned(),
                data["status"].as_str().unwrap().to_owned(),
            ));
    }
    per_order
}

async fn twenty_shipments_travel_from_order_to_doorstep(engine: Engine) {
    let app = TestApp::start_on(engine).await;
    for i in 0..20 {
        app.top.journey(tid(i));
    }
    // The table exists before the daemon starts.
    app.create_database();
    let mut daemon = app.spawn_daemon();

    for i in 0..10 {
        let id = tid(i).to_string();
        let tier = ["high", "normal", "low"][i as usize % 3];
        app.cli_ok(&["add", &id, "--tier", tier]);
    }
    for i in 10..20 {
        let tier = ["high", "normal", "low"][i as usize % 3];
        app.sql(&format!(
            "INSERT INTO shipments (order_id, provider, tier) VALUES ('{}', 'taobao', '{tier}')",
            tid(i)
        ))
        .await
        .expect("an outside INSERT works while the daemon runs");
    }

    app.wait_until(
        "all 20 parcels are delivered and announced",
        Duration::from_secs(60),
        || {
            app.receiver
                .deliveries()
                .iter()
                .filter(|d| d.answered == 200)
                .count()
                >= 100
                && app.shipments().iter().all(|s| s["status"] == "delivered")
        },
    )
    .await;
    // A little longer: any stray poll or duplicate delivery would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let changes = accepted_changes(&app);
    assert_eq!(changes.len(), 20, "{changes:?}");
    let expected: Vec<(String, String)> = CHAIN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for (order, seen) in &changes {
        assert_eq!(
            seen, &expected,
            "order {order}: each change exactly once, in order"
        );
    }
    let ids: HashSet<String> = app
        .receiver
        .deliveries()
        .iter()
        .map(|d| d.webhook_id.clone())
        .collect();
    assert_eq!(ids.len(), 100, "one webhook id per change");

    for i in 0..20 {
        assert_eq!(
            app.top.polls_after_final(tid(i)),
            0,
            "order {} was polled after it was delivered",
            tid(i)
        );
    }
    assert_eq!(
        app.top.signature_failures(),
        0,
        "{:?}",
        app.top.rejections()
    );

    for shipment in app.shipments() {
        assert_eq!(shipment["active"], false);
        assert_eq!(shipment["raw_status"], "对方已签收");
        assert!(shipment["error"].is_null());
        assert!(shipment["status_changed_at"].is_string());
        assert!(shipment["last_polled_at"].is_string());
    }
    let sent = app.outbox(Some("sent"));
    assert_eq!(sent.len(), 100);
    assert!(
        sent.iter()
            .all(|n| n["attempts"] == 1 && n["channel"] == "webhook")
    );

    // The payload carries the shipment and the newest event.
    let last = app
        .receiver
        .deliveries()
        .into_iter()
        .find(|d| d.body["data"]["status"] == "delivered")
        .unwrap();
    assert_eq!(last.body["type"], "shipment.status_changed");
    assert_eq!(last.body["id"], last.webhook_id);
    assert_eq!(last.body["data"]["provider"], "taobao");
    assert_eq!(last.body["data"]["raw_status"], "对方已签收");
    assert!(
        last.body["data"]["event"]["time"]
            .as_str()
            .unwrap()
            .ends_with("+08:00")
    );

    // Shown history: every event once, however often the trace was read.
    let show = app.shipment(&tid(0).to_string());
    let events = show["events"].as_array().unwrap();
    let distinct: HashSet<String> = events.iter().map(|e| e.to_string()).collect();
    assert_eq!(distinct.len(), events.len());
    assert!(events.len() >= 4, "{show}");

    assert!(
        daemon.terminate().success(),
        "SIGTERM exits 0\n{}",
        daemon.log()
    );
}

/// The issue that found it: 20 shipments on a 1 s tier against a receiver with a listen queue of
/// 5 received `delivered` before `out_for_delivery` for 12 of them. Here, besides the small
/// queue, the receiver turns every `picked_up` away once (503, `Retry-After: 3`), while the next
/// change of the same shipment is queued a second later: it must wait, not overtake. A
/// shipment's notifications on a channel go out one at a time, in the order they were queued.
async fn each_shipments_notifications_arrive_in_the_order_they_were_queued(engine: Engine) {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .tiers("1s", "1s", "1s")
        .receiver(Behaviour::HoldBack {
            status: "picked_up".to_owned(),
            seconds: 3,
        })
        .receiver_backlog(5)
        .engine(engine)
        .start()
        .await;
    for i in 100..120 {
        app.top.journey(tid(i));
        app.cli_ok(&["add", &tid(i).to_string(), "--tier", "high"]);
    }
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "all 20 parcels are delivered and every change announced",
        Duration::from_secs(90),
        || {
            app.receiver
                .deliveries()
                .iter()
                .filter(|d| d.answered == 200)
                .count()
                >= 100
        },
    )
    .await;
    let expected: Vec<(String, String)> = CHAIN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let changes = accepted_changes(&app);
    assert_eq!(changes.len(), 20, "{changes:?}");
    for (order, seen) in &changes {
        assert_eq!(seen, &expected, "order {order}: in the order queued");
    }
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
