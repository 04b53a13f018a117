//! The webhook channel through the real binary: what a receiver's own verifier accepts, which
//! secrets `check-config` refuses, and what a receiver that answers 410 Gone does to the
//! channel and to the notifications behind it.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use shipwatch::notify::receiver::Behaviour;

use crate::support::app::{Daemon, TestApp};
use crate::support::config::{Channel, Provider};

const TID: u64 = 7_400_000_000_000_000_001;

/// Long enough for a busy 2-core machine; the journey itself takes about five seconds.
const LIMIT: Duration = Duration::from_secs(40);

/// The secret the test config gives the webhook channel, as written there.
fn configured_secret(app: &TestApp) -> String {
    std::fs::read_to_string(&app.config)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("secret = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the test config has a webhook secret")
        .to_owned()
}

fn webhook_rows(app: &TestApp) -> Vec<Value> {
    app.outbox(None)
        .into_iter()
        .filter(|n| n["channel"] == "webhook")
        .collect()
}

/// The whole journey of [`TID`] (five changes, five webhooks), with the daemon running.
async fn journey(behaviour: Behaviour) -> (TestApp, Daemon) {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .receiver(behaviour)
        .start()
        .await;
    app.top.journey(TID);
    app.cli_ok(&["add", &TID.to_string(), "--tier", "high"]);
    let daemon = app.spawn_daemon();
    (app, daemon)
}

/// A receiver that checks signatures with nothing of shipwatch's: the base64 and HMAC crates,
/// the way the Standard Webhooks reference libraries read a `whsec_` secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_verifier_accepts_what_a_whsec_secret_signs() {
    let (app, mut daemon) = journey(Behaviour::Accept).await;
    app.wait_until("the five webhooks are sent", LIMIT, || {
        let rows = webhook_rows(&app);
        rows.len() == 5 && rows.iter().all(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());

    let secret = configured_secret(&app);
    let key = BASE64
        .decode(
            secret
                .strip_prefix("whsec_")
                .expect("the Standard Webhooks form"),
        )
        .unwrap();
    assert!(key.len() >= 24, "the config's key is {} bytes", key.len());
    let deliveries = app.receiver.deliveries();
    assert_eq!(deliveries.len(), 5);
    for d in &deliveries {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.{}", d.webhook_id, d.timestamp, d.raw_body).as_bytes());
        let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        assert_eq!(d.signature, expected, "{d:?}");
        // Signed with the raw secret text instead, it would not verify.
        let mut wrong = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        wrong.update(format!("{}.{}.{}", d.webhook_id, d.timestamp, d.raw_body).as_bytes());
        let wrong = format!("v1,{}", BASE64.encode(wrong.finalize().into_bytes()));
        assert_ne!(d.signature, wrong);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_a_short_secret_in_one_line_without_echoing_it() {
    let app = TestApp::start().await;
    let good = configured_secret(&app);
    app.cli_ok(&["check-config"]);
    // 16 bytes, then 12 raw bytes: both under the 24 Standard Webhooks asks for.
    let short_encoded = BASE64.encode(b"sixteen byte key");
    for (short, bytes) in [
        (format!("whsec_{short_encoded}"), "16-byte"),
        ("hunter2hunter2".to_owned(), "14-byte"),
    ] {
        app.edit_config(|text| text.replace(&good, &short));
        let out = app.cli(&["check-config"]);
        assert!(!out.status.success(), "{short} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("[channels.webhook] secret"), "{stderr}");
        assert!(
            stderr.contains(bytes) && stderr.contains("at least 24"),
            "{stderr}"
        );
        assert!(
            stderr.contains("whsec_$(head -c 32 /dev/urandom | base64)"),
            "{stderr}"
        );
        let body = short.strip_prefix("whsec_").unwrap_or(&short);
        assert!(!stderr.contains(body), "the secret is echoed: {stderr}");
        // The daemon refuses it too, before doing anything.
        let out = app.cli(&["run"]);
        assert!(!out.status.success());
        app.edit_config(|text| text.replace(&short, &good));
    }
    app.cli_ok(&["check-config"]);
}

/// Waits until the receiver's 410 has stopped the channel and every webhook of the journey
/// waits behind the stop, then checks what the operator and the receiver see.
async fn wait_for_the_stop(app: &TestApp) {
    app.wait_until("the parcel is delivered", LIMIT, || {
        app.shipments()[0]["status"] == "delivered"
    })
    .await;
    // The first waits behind the stop; the other four behind the first (a shipment's webhooks
    // go out in the order they were queued).
    app.wait_until("all five webhooks wait behind the stop", LIMIT, || {
        let rows = webhook_rows(app);
        rows.len() == 5
            && rows[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("webhook channel stopped"))
    })
    .await;
    let rows = webhook_rows(app);
    for row in &rows {
        // Not dead, and no attempt spent: a fixed endpoint gets every one of them.
        assert_eq!(row["state"], "pending", "{row}");
        assert_eq!(row["attempts"], 0, "{row}");
    }
    let reason = rows[0]["last_error"].as_str().unwrap();
    assert!(
        reason.contains("410 Gone") && reason.contains("[channels.webhook]"),
        "{reason}"
    );
    // Only the first notification reached the dead endpoint; the others never left.
    let answered: Vec<u16> = app
        .receiver
        .deliveries()
        .iter()
        .map(|d| d.answered)
        .collect();
    assert_eq!(answered, [410]);
    let stats = app.cli_ok(&["stats"]);
    assert!(stats.contains("webhook: STOPPED until"), "{stats}");
    assert!(stats.contains("410 Gone"), "{stats}");
}

/// Every webhook of the journey is sent once the receiver is back, the first one on its second
/// request (after the 410), the others on their first.
async fn wait_for_all_sent(app: &TestApp) {
    app.wait_until("all five webhooks are sent", LIMIT, || {
        let rows = webhook_rows(app);
        rows.len() == 5 && rows.iter().all(|n| n["state"] == "sent")
    })
    .await;
    let deliveries = app.receiver.deliveries();
    assert_eq!(deliveries.len(), 6, "{deliveries:?}");
    assert_eq!(deliveries[0].answered, 410);
    assert!(deliveries[1..].iter().all(|d| d.answered == 200));
    // Released together, they may arrive in any order; each once, the gone one once more.
    for row in webhook_rows(app) {
        assert_eq!(row["attempts"], 1, "{row}");
        let requests = deliveries
            .iter()
            .filter(|d| d.webhook_id == row["webhook_id"])
            .count();
        let expected = if row["webhook_id"] == deliveries[0].webhook_id.as_str() {
            2
        } else {
            1
        };
        assert_eq!(requests, expected, "{row}");
    }
    app.wait_until("stats no longer shows the stop", LIMIT, || {
        app.cli_ok(&["stats"]).contains("webhook: ok")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_the_webhook_channel_and_a_restart_delivers_everything() {
    let (app, mut daemon) = journey(Behaviour::Always(410)).await;
    wait_for_the_stop(&app).await;
    let log = daemon.log();
    assert_eq!(
        log.matches("WEBHOOK CHANNEL STOPPED").count(),
        1,
        "one loud line: {log}"
    );
    assert!(daemon.terminate().success());

    // The endpoint is fixed; the operator restarts.
    app.receiver.set_behaviour(Behaviour::Accept);
    let mut daemon = app.spawn_daemon();
    wait_for_all_sent(&app).await;
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_the_webhook_channel_and_a_reload_delivers_everything() {
    let (app, mut daemon) = journey(Behaviour::Always(410)).await;
    wait_for_the_stop(&app).await;

    app.receiver.set_behaviour(Behaviour::Accept);
    daemon.signal("HUP");
    wait_for_all_sent(&app).await;
    assert!(daemon.terminate().success());
}
