//! One daemon, one database, three upstreams: Taobao, 1688 and Kuaidi100 shipments all travel to
//! delivered, each change announced once by webhook.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::app::TestApp;
use crate::support::config::{Channel, Provider};
use crate::support::fake_1688::Fake1688;
use crate::support::fake_kuaidi100::FakeKuaidi100;
use crate::support::{ALI_APP_KEY, ALI_SECRET, ALI_TOKEN, KD_CUSTOMER, KD_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taobao_1688_and_kuaidi100_shipments_progress_side_by_side() {
    let alibaba = Fake1688::start(ALI_APP_KEY, ALI_SECRET, ALI_TOKEN).await;
    let kuaidi = FakeKuaidi100::start(KD_CUSTOMER, KD_KEY).await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .provider(Provider::alibaba1688(&alibaba))
        .provider(Provider::kuaidi100(&kuaidi))
        .channel(Channel::webhook())
        .start()
        .await;

    let taobao_tid = 9_100_000_000_000_000_001u64;
    let ali_order = 9_200_000_000_000_000_001u64;
    app.top.journey(taobao_tid);
    alibaba.journey(ali_order);
    kuaidi.journey("YT9300000001");

    app.cli_ok(&[
        "add",
        &taobao_tid.to_string(),
        "--provider",
        "taobao",
        "--tier",
        "high",
    ]);
    app.cli_ok(&[
        "add",
        &ali_order.to_string(),
        "--provider",
        "ali",
        "--tier",
        "high",
    ]);
    // What a shipment needs is checked per provider.
    let out = app.cli(&["add", "KD-1", "--provider", "kd"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("carrier"));
    app.cli_ok(&[
        "add",
        "KD-1",
        "--provider",
        "kd",
        "--carrier",
        "yuantong",
        "--tracking-no",
        "YT9300000001",
        "--tier",
        "high",
    ]);

    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "all three parcels are delivered and announced",
        Duration::from_secs(60),
        || {
            app.shipments().iter().all(|s| s["status"] == "delivered")
                && app.outbox(Some("pending")).is_empty()
        },
    )
    .await;
    assert!(daemon.terminate().success());

    let mut changes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in app.receiver.deliveries() {
        assert!(d.verified);
        let data = &d.body["data"];
        changes
            .entry(data["provider"].as_str().unwrap().to_owned())
            .or_default()
            .push(data["status"].as_str().unwrap().to_owned());
    }
    let journey = [
        "info_received",
        "picked_up",
        "in_transit",
        "out_for_delivery",
        "delivered",
    ];
    for provider in ["taobao", "ali", "kd"] {
        assert_eq!(
            changes[provider], journey,
            "{provider}: each change once, in order"
        );
    }
    assert_eq!(app.top.signature_failures(), 0);
    assert_eq!(alibaba.signature_failures(), 0);
    assert_eq!(kuaidi.signature_failures(), 0);
    assert_eq!(alibaba.polls_after_final(ali_order), 0);
    assert_eq!(kuaidi.polls_after_final("YT9300000001"), 0);
}
