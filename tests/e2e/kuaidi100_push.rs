//! Kuaidi100 subscription push through the binary: shipments are subscribed on the fake
//! Kuaidi100, its callbacks are played (signed with the salt each subscription sent) to the
//! daemon's public listener, and what a buyer would notice is checked on the webhook receiver.
//! The journey and an abort run on both engines: each keeps its subscription's state in its own
//! SQL.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::{Engine, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::fake_kuaidi100::{
    COM, FakeKuaidi100, callback_param, callback_sign, journey_bodies, post_callback,
};
use crate::support::{KD_CUSTOMER, KD_KEY, free_port, on_both_engines};

const SALT: &str = "pushsalt-7c1e";
const CALLBACK_URL: &str = "https://shop.example/callbacks/kuaidi100/kd";
const ACK: &str = r#"{"result":true,"returnCode":"200","message":"成功"}"#;
const JOURNEY: [&str; 5] = [
    "info_received",
    "picked_up",
    "in_transit",
    "out_for_delivery",
    "delivered",
];

/// An app with the Kuaidi100 provider `kd` in push mode on `fake`, the webhook channel, the
/// admin listener and the public one, on SQLite. Returns the app and both ports (admin, public).
async fn push_app(fake: &FakeKuaidi100, fallback: Option<&str>) -> (TestApp, u16, u16) {
    push_app_on(Engine::Sqlite, fake, fallback).await
}

/// [`push_app`] on `engine`.
async fn push_app_on(
    engine: Engine,
    fake: &FakeKuaidi100,
    fallback: Option<&str>,
) -> (TestApp, u16, u16) {
    let (admin, public) = (free_port(), free_port());
    let mut provider = Provider::kuaidi100(fake).push(CALLBACK_URL, SALT);
    if let Some(every) = fallback {
        provider = provider.fallback_poll(every);
    }
    let app = TestApp::builder()
        .engine(engine)
        .provider(provider)
        .channel(Channel::webhook())
        .section(&format!(
            "[http]\nlisten = \"127.0.0.1:{admin}\"\npublic_listen = \"127.0.0.1:{public}\"\n"
        ))
        .start()
        .await;
    (app, admin, public)
}

fn add(app: &TestApp, order_id: &str, num: &str) {
    app.cli_ok(&[
        "add",
        order_id,
        "--provider",
        "kd",
        "--carrier",
        COM,
        "--tracking-no",
        num,
        "--tier",
        "high",
    ]);
}

fn callback_at(public: u16) -> String {
    format!("http://127.0.0.1:{public}/callbacks/kuaidi100/kd")
}

fn subscription_state(app: &TestApp, order_id: &str) -> Option<String> {
    app.shipment(order_id)["subscription"]["state"]
        .as_str()
        .map(str::to_owned)
}

async fn wait_subscribed(app: &TestApp, order_id: &str) {
    app.wait_until(
        &format!("{order_id} is subscribed"),
        Duration::from_secs(30),
        || subscription_state(app, order_id).as_deref() == Some("active"),
    )
    .await;
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn statuses(app: &TestApp, order_id: &str) -> Vec<String> {
    app.receiver
        .deliveries()
        .iter()
        .filter(|d| d.body["data"]["order_id"] == order_id)
        .map(|d| d.body["data"]["status"].as_str().unwrap_or("").to_owned())
        .collect()
}

on_both_engines!(a_journey_played_by_callbacks_is_notified_once_each_in_order);

async fn a_journey_played_by_callbacks_is_notified_once_each_in_order(engine: Engine) {
    let fake = FakeKuaidi100::start(KD_CUSTOMER, KD_KEY).await;
    let (app, _, public) = push_app_on(engine, &fake, None).await;
    let num = "YT9400000001";
    add(&app, "KP-1", num);
    let mut daemon = app.spawn_daemon();
    wait_subscribed(&app, "KP-1").await;

    // The subscription is the documented form, with what the config says.
    let subscriptions = fake.subscriptions();
    assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
    let s = &subscriptions[0];
    assert_eq!(s.schema.as_deref(), Some("json"));
    assert_eq!(s.company.as_deref(), Some(COM));
    assert_eq!(s.number.as_deref(), Some(num));
    assert_eq!(s.key.as_deref(), Some(KD_KEY));
    assert_eq!(s.callbackurl.as_deref(), Some(CALLBACK_URL));
    assert_eq!(s.salt.as_deref(), Some(SALT));
    assert_eq!(s.resultv2.as_deref(), Some("4"));
    assert_eq!(s.answered, 200);

    let url = callback_at(public);
    for step in 0..3 {
        assert_eq!(
            fake.push_step(&url, num, step).await,
            (200, ACK.to_owned()),
            "step {step}"
        );
    }
    // Acknowledged only once committed: the change is there when the answer comes.
    assert_eq!(app.shipment("KP-1")["shipment"]["status"], "in_transit");
    // A stale callback (an older step) and a replayed one change nothing.
    let bodies = journey_bodies(COM, num);
    for (status, body) in [("polling", &bodies[1]), ("polling", &bodies[2])] {
        assert_eq!(
            fake.push(&url, num, status, "", body).await,
            (200, ACK.to_owned())
        );
    }
    assert_eq!(app.shipment("KP-1")["shipment"]["status"], "in_transit");
    for step in 3..5 {
        assert_eq!(
            fake.push_step(&url, num, step).await,
            (200, ACK.to_owned()),
            "step {step}"
        );
    }
    app.wait_until("every change is delivered", Duration::from_secs(30), || {
        app.outbox(Some("pending")).is_empty() && statuses(&app, "KP-1").len() >= 5
    })
    .await;
    // A repeat of the end after delivery changes nothing either.
    let param = callback_param("shutdown", "", &bodies[4]);
    assert_eq!(
        post_callback(&url, &param, Some(&callback_sign(&param, SALT))).await,
        (200, ACK.to_owned())
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(daemon.terminate().success());

    assert_eq!(
        statuses(&app, "KP-1"),
        JOURNEY,
        "each change once, in order"
    );
    assert!(app.receiver.deliveries().iter().all(|d| d.verified));
    let shown = app.shipment("KP-1");
    assert_eq!(shown["shipment"]["status"], "delivered");
    assert_eq!(shown["subscription"]["state"], "ended");
    assert!(shown["subscription"]["last_callback_at"].is_string());
    // Push mode without fallback_poll never queries.
    assert_eq!(fake.polls_of(num), 0, "{:?}", fake.calls());
    assert_eq!(fake.subscriptions_of(num), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signs_are_refused_counted_and_change_nothing() {
    let fake = FakeKuaidi100::start(KD_CUSTOMER, KD_KEY).await;
    let (app, admin, public) = push_app(&fake, None).await;
    let num = "YT9400000002";
    add(&app, "KP-2", num);
    let mut daemon = app.spawn_daemon();
    wait_subscribed(&app, "KP-2").await;
    let url = callback_at(public);
    let bodies = journey_bodies(COM, num);
    let param = callback_param("polling", "", &bodies[2]);

    assert_eq!(
        post_callback(&url, &param, Some(&callback_sign(&param, "not-the-salt")))
            .await
            .0,
        400
    );
    assert_eq!(post_callback(&url, &param, None).await.0, 400);
    // The sign of another param.
    let other = callback_param("polling", "", &bodies[1]);
    assert_eq!(
        post_callback(&url, &param, Some(&callback_sign(&other, SALT)))
            .await
            .0,
        400
    );
    let shown = app.shipment("KP-2");
    assert_eq!(shown["shipment"]["status"], "pending");
    assert_eq!(shown["events"].as_array().map(Vec::len), Some(0));
    assert!(app.outbox(None).is_empty());

    // A waybill nobody tracks is acknowledged, so that Kuaidi100 stops.
    let stranger = journey_bodies(COM, "YT0000000000")[0].clone();
    let param = callback_param("polling", "", &stranger);
    assert_eq!(
        post_callback(&url, &param, Some(&callback_sign(&param, SALT))).await,
        (200, ACK.to_owned())
    );
    // A provider that is not in push mode, or not configured, has no callback.
    assert_eq!(
        post_callback(
            &format!("http://127.0.0.1:{public}/callbacks/kuaidi100/nope"),
            &param,
            Some("00")
        )
        .await
        .0,
        404
    );

    // The public listener serves the callbacks alone; the admin one never serves them.
    assert_eq!(
        get(&format!("http://127.0.0.1:{public}/metrics")).await.0,
        404
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{public}/healthz")).await.0,
        404
    );
    assert_eq!(
        post_callback(
            &format!("http://127.0.0.1:{admin}/callbacks/kuaidi100/kd"),
            &param,
            Some(&callback_sign(&param, SALT))
        )
        .await
        .0,
        404
    );
    // A body over the limit is refused before it is read.
    let huge = "x".repeat(128 * 1024);
    assert_eq!(post_callback(&url, &huge, Some("00")).await.0, 413);

    let (status, metrics) = get(&format!("http://127.0.0.1:{admin}/metrics")).await;
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("shipwatch_callbacks_total")
                && l.contains("outcome=\"bad_sign\"")
                && l.contains("provider=\"kd\"")
        })
        .unwrap_or_else(|| panic!("no bad_sign count in:\n{metrics}"));
    assert!(line.ends_with(" 3"), "{line}");
    assert!(daemon.terminate().success());
    assert!(
        daemon
            .log()
            .contains("Kuaidi100 callback refused; nothing stored"),
        "{}",
        daemon.log()
    );
    assert_eq!(app.shipment("KP-2")["shipment"]["status"], "pending");
}

on_both_engines!(abort_ends_the_subscription_and_the_waybill_is_subscribed_again);

async fn abort_ends_the_subscription_and_the_waybill_is_subscribed_again(engine: Engine) {
    let fake = FakeKuaidi100::start(KD_CUSTOMER, KD_KEY).await;
    let (app, _, public) = push_app_on(engine, &fake, None).await;
    let num = "YT9400000003";
    add(&app, "KP-3", num);
    let mut daemon = app.spawn_daemon();
    wait_subscribed(&app, "KP-3").await;
    let url = callback_at(public);
    // Kuaidi100's abort after three days without information: no trace in lastResult.
    let last = serde_json::json!({"message": "3天查询无记录", "com": COM, "nu": num}).to_string();
    assert_eq!(
        fake.push(&url, num, "abort", "3天查询无记录", &last).await,
        (200, ACK.to_owned())
    );
    let shown = app.shipment("KP-3");
    assert_eq!(shown["subscription"]["state"], "aborted");
    assert_eq!(shown["subscription"]["message"], "3天查询无记录");
    assert!(shown["subscription"]["ended_at"].is_string());
    assert_eq!(shown["shipment"]["status"], "pending");
    // Subscribed again after the half hour Kuaidi100 asks for, not before.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.subscriptions_of(num), 1);
    let next: Value = app.shipment("KP-3")["shipment"]["next_poll_at"].clone();
    let next = chrono::DateTime::parse_from_rfc3339(next.as_str().unwrap()).unwrap();
    let ahead = next.signed_duration_since(chrono::Utc::now());
    assert!(
        ahead > chrono::Duration::minutes(25) && ahead <= chrono::Duration::minutes(30),
        "{ahead}"
    );
    // The half hour passes.
    app.sql("UPDATE shipments SET next_poll_at = 0 WHERE order_id = 'KP-3'")
        .await
        .unwrap();
    app.wait_until(
        "the waybill is subscribed again",
        Duration::from_secs(30),
        || fake.subscriptions_of(num) == 2,
    )
    .await;
    wait_subscribed(&app, "KP-3").await;
    assert_eq!(app.shipment("KP-3")["subscription"]["subscribes"], 2);
    assert!(daemon.terminate().success());
    assert_eq!(fake.polls_of(num), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_subscribed_is_success_and_a_failed_subscription_is_retried() {
    let fake = FakeKuaidi100::start(KD_CUSTOMER, KD_KEY).await;
    let (app, _, public) = push_app(&fake, None).await;
    let num = "YT9400000004";
    // Kuaidi100 answers 500 once, then finds the waybill tracked already (501).
    fake.subscribe_fault(500, "服务器错误", 1);
    fake.already_subscribed(num, SALT);
    add(&app, "KP-4", num);
    let mut daemon = app.spawn_daemon();
    wait_subscribed(&app, "KP-4").await;
    let answered: Vec<u16> = fake.subscriptions().iter().map(|s| s.answered).collect();
    assert_eq!(answered, [500, 501]);
    // Pushes for it are applied as any.
    assert_eq!(
        fake.push_step(&callback_at(public), num, 1).await,
        (200, ACK.to_owned())
    );
    assert_eq!(app.shipment("KP-4")["shipment"]["status"], "picked_up");
    assert!(daemon.terminate().success());
    assert!(
        daemon.log().contains("poll failed; will retry"),
        "{}",
        daemon.log()
    );
    assert_eq!(fake.polls_of(num), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_poll_queries_exactly_the_silent_shipments() {
    let fake = FakeKuaidi100::start(KD_CUSTOMER, KD_KEY).await;
    let (app, _, public) = push_app(&fake, Some("5s")).await;
    let (loud, silent) = ("YT9400000005", "YT9400000006");
    fake.journey(loud);
    fake.journey(silent);
    add(&app, "KP-LOUD", loud);
    add(&app, "KP-SILENT", silent);
    let mut daemon = app.spawn_daemon();
    wait_subscribed(&app, "KP-LOUD").await;
    wait_subscribed(&app, "KP-SILENT").await;
    let url = callback_at(public);
    // The loud one hears from Kuaidi100 every half second for twelve seconds; the silent one
    // hears nothing and is queried once every fallback_poll (5s: room for a loaded machine).
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        assert_eq!(fake.push_step(&url, loud, 0).await, (200, ACK.to_owned()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(daemon.terminate().success());
    assert_eq!(fake.polls_of(loud), 0, "{:?}", fake.calls());
    let polls = fake.polls_of(silent);
    assert!((1..=3).contains(&polls), "{polls} fallback queries in 12s");
    assert_ne!(app.shipment("KP-SILENT")["shipment"]["status"], "pending");
    assert_eq!(fake.signature_failures(), 0);
}

#[tokio::test]
async fn check_config_explains_push_mode_in_one_line_each() {
    let fake = FakeKuaidi100::start(KD_CUSTOMER, KD_KEY).await;
    let (app, _, public) = push_app(&fake, Some("12h")).await;
    let out = app.cli_ok(&["check-config"]);
    assert!(
        out.contains(&format!(
            "push      kd: subscribed, Kuaidi100 posts to {CALLBACK_URL} (fallback_poll 12h)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("callbacks served on 127.0.0.1:{public}")),
        "{out}"
    );
    assert!(!out.contains(SALT), "the salt is a secret: {out}");

    // Without the public listener, push mode is refused with one line.
    app.edit_config(|text| {
        text.lines()
            .filter(|l| !l.starts_with("public_listen"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let out = app.cli(&["check-config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("[providers.kd] mode = \"push\" needs [http] public_listen"),
        "{stderr}"
    );
    // Nor does the daemon start.
    let run = app.cli(&["run"]);
    assert!(!run.status.success());
}
