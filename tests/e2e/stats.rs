//! `stats` through the real binary: polls of the last hour by result, and a delivery channel
//! that stopped itself, as the daemon recorded them.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::TestApp;
use crate::support::config::{Channel, Provider};
use crate::support::fake_aliyun_sms::FakeAliyunSms;
use crate::support::fake_top::Fault;
use crate::support::{ALIYUN_KEY_ID, ALIYUN_SECRET, ALIYUN_SIGN_NAME};

fn polls(stats: &Value, provider: &str, result: &str) -> i64 {
    stats["polls_last_hour"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == provider && c["result"] == result)
        .map_or(0, |c| c["count"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_shows_polls_by_result_and_a_stopped_sms_channel() {
    let aliyun = FakeAliyunSms::start(ALIYUN_KEY_ID, ALIYUN_SECRET, ALIYUN_SIGN_NAME).await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .channel(Channel::aliyun_sms(&aliyun))
        .start()
        .await;
    // The account is out of credit until the restart below.
    aliyun.reply("isv.AMOUNT_NOT_ENOUGH", 1000);
    let tid = 9_300_000_000_000_000_001u64;
    app.top.journey(tid);
    app.top.fault(Fault::Http(503), 2);
    app.cli_ok(&[
        "add",
        &tid.to_string(),
        "--tier",
        "high",
        "--phone",
        "13912345678",
    ]);

    let mut daemon = app.spawn_daemon();
    app.wait_until("the parcel is delivered", Duration::from_secs(60), || {
        app.shipments()[0]["status"] == "delivered"
    })
    .await;
    app.wait_until(
        "stats shows the SMS channel stopped",
        Duration::from_secs(30),
        || app.cli_ok(&["stats"]).contains("sms: STOPPED until"),
    )
    .await;
    // All 3 SMS are queued: the first waits for the channel, the others behind it (a shipment's
    // messages go out in the order they were queued).
    app.wait_until(
        "the 3 SMS wait for the channel",
        Duration::from_secs(30),
        || {
            let sms: Vec<Value> = app
                .outbox(None)
                .into_iter()
                .filter(|n| n["channel"] == "sms")
                .collect();
            sms.len() == 3
                && !sms[0]["last_error"].is_null()
                && sms.iter().all(|n| n["state"] == "pending")
        },
    )
    .await;
    let text = app.cli_ok(&["stats"]);
    assert!(text.contains("isv.AMOUNT_NOT_ENOUGH"), "{text}");
    assert!(text.contains("webhook: ok"), "{text}");
    // A shutdown writes the last counts.
    assert!(daemon.terminate().success());

    let stats: Value = serde_json::from_str(&app.cli_ok(&["stats", "--json"])).unwrap();
    assert_eq!(polls(&stats, "taobao", "transient"), 2, "{stats:#}");
    assert_eq!(polls(&stats, "taobao", "ok"), 5, "{stats:#}");
    assert_eq!(stats["channels"][0]["channel"], "sms", "{stats:#}");
    let text = app.cli_ok(&["stats"]);
    assert!(text.contains("taobao       5 ok, 2 transient"), "{text}");

    // The account is topped up. A new start tries the channel again with the SMS the stop held
    // back, and `stats` no longer says it is stopped.
    aliyun.clear_replies();
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the restarted daemon sends the 3 SMS the stop held back",
        Duration::from_secs(30),
        || {
            app.outbox(Some("sent"))
                .iter()
                .filter(|n| n["channel"] == "sms")
                .count()
                == 3
        },
    )
    .await;
    assert!(app.cli_ok(&["stats"]).contains("sms: ok"));
    assert!(daemon.terminate().success());
}
