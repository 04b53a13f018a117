//! The buyer hears about the parcel: the real binary, one shipment with a phone and an email,
//! an SMTP sink, a fake Aliyun SMS gateway and the webhook receiver. Each change goes to each
//! channel whose trigger list holds it, exactly once, and no log line shows the buyer's number
//! or address.

use std::time::Duration;

use crate::support::app::TestApp;
use crate::support::config::{Channel, Provider};
use crate::support::fake_aliyun_sms::FakeAliyunSms;
use crate::support::smtp_sink::SmtpSink;
use crate::support::{ALIYUN_KEY_ID, ALIYUN_SECRET, ALIYUN_SIGN_NAME};

const PHONE: &str = "13912345678";
const EMAIL: &str = "buyer.zhang@shop.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_reaches_sms_email_and_webhook_by_their_trigger_lists() {
    let sink = SmtpSink::start().await;
    let aliyun = FakeAliyunSms::start(ALIYUN_KEY_ID, ALIYUN_SECRET, ALIYUN_SIGN_NAME).await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .channel(
            Channel::email(&sink)
                .from("小店 <noreply@shop.example>")
                .subject("delivered", "订单{order_id}已签收"),
        )
        .channel(Channel::aliyun_sms(&aliyun))
        .start()
        .await;
    let tid = 9_400_000_000_000_000_001u64;
    app.top.journey(tid);
    app.cli_ok(&[
        "add",
        &tid.to_string(),
        "--tier",
        "high",
        "--phone",
        PHONE,
        "--email",
        EMAIL,
    ]);

    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the parcel is delivered and every message sent",
        Duration::from_secs(60),
        || app.shipments()[0]["status"] == "delivered" && app.outbox(Some("pending")).is_empty(),
    )
    .await;
    assert!(daemon.terminate().success());
    assert_eq!(
        sink.quits(),
        sink.connections(),
        "the SMTP connection kept between messages says QUIT at the stop"
    );

    // Webhook and email on every change; SMS on picked_up, out_for_delivery and delivered.
    let statuses = |channel: &str| -> Vec<String> {
        app.outbox(Some("sent"))
            .iter()
            .filter(|n| n["channel"] == channel)
            .map(|n| n["status"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = [
        "info_received",
        "picked_up",
        "in_transit",
        "out_for_delivery",
        "delivered",
    ];
    assert_eq!(statuses("webhook"), all);
    assert_eq!(statuses("email"), all);
    assert_eq!(
        statuses("sms"),
        ["picked_up", "out_for_delivery", "delivered"]
    );
    assert!(app.outbox(Some("dead")).is_empty());

    // What arrived: 5 webhooks, 5 emails, 3 SMS, each once.
    assert_eq!(app.receiver.deliveries().len(), 5);
    let mails = sink.messages();
    assert_eq!(mails.len(), 5);
    assert!(mails.iter().all(|m| m.to == [EMAIL.to_owned()]));
    let last = mails.last().unwrap();
    assert_eq!(
        last.subject().as_deref(),
        Some(format!("订单{tid}已签收").as_str())
    );
    let body = last.body_text();
    assert!(body.starts_with("包裹已签收,感谢您的信任。"), "{body}");
    assert!(body.contains(&format!("订单号:{tid}")), "{body}");
    let first = &mails[0];
    assert_eq!(
        first.subject().as_deref(),
        Some(format!("订单{tid}:已下单").as_str())
    );

    let sms = aliyun.calls();
    assert_eq!(sms.len(), 3, "{sms:#?}");
    assert_eq!(aliyun.signature_failures(), 0);
    assert!(sms.iter().all(|c| c.param("PhoneNumbers") == Some(PHONE)));
    assert!(sms.iter().all(|c| c.param("SignName") == Some("小店")));
    let params: serde_json::Value =
        serde_json::from_str(sms[2].param("TemplateParam").unwrap()).unwrap();
    assert_eq!(params["order_id"], tid.to_string());
    assert_eq!(params["status"], "已签收");

    // Privacy: the daemon's log and the CLI's tables never show the buyer's contact whole.
    let log = daemon.log();
    assert!(!log.contains(PHONE) && !log.contains(EMAIL), "{log}");
    let list = app.cli_ok(&["list"]);
    let show = app.cli_ok(&["show", &tid.to_string()]);
    for text in [&list, &show] {
        assert!(!text.contains(PHONE) && !text.contains(EMAIL), "{text}");
    }
    assert!(show.contains("139****5678"), "{show}");
    let revealed = app.cli_ok(&["show", &tid.to_string(), "--reveal"]);
    assert!(revealed.contains(PHONE) && revealed.contains(EMAIL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_without_a_phone_skips_sms_and_a_bad_phone_is_refused() {
    let aliyun = FakeAliyunSms::start(ALIYUN_KEY_ID, ALIYUN_SECRET, ALIYUN_SIGN_NAME).await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .channel(Channel::aliyun_sms(&aliyun).template_code("SMS_1"))
        .start()
        .await;
    let out = app.cli(&["add", "9400000000000000002", "--phone", "12345"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a mainland mobile number"), "{stderr}");

    let tid = 9_400_000_000_000_000_003u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the parcel is delivered", Duration::from_secs(60), || {
        app.shipments()[0]["status"] == "delivered" && app.outbox(Some("pending")).is_empty()
    })
    .await;
    assert!(daemon.terminate().success());
    let skipped = app.outbox(Some("skipped"));
    assert_eq!(skipped.len(), 3, "picked_up, out_for_delivery, delivered");
    assert!(
        skipped
            .iter()
            .all(|n| n["channel"] == "sms" && n["last_error"] == "no phone number")
    );
    assert!(aliyun.calls().is_empty());
    assert!(app.outbox(Some("dead")).is_empty());
    let show = app.cli_ok(&["show", &tid.to_string()]);
    assert!(show.contains("skipped"), "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_notify_sends_one_sample_through_each_channel() {
    let sink = SmtpSink::start().await;
    let aliyun = FakeAliyunSms::start(ALIYUN_KEY_ID, ALIYUN_SECRET, ALIYUN_SIGN_NAME).await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .channel(Channel::email(&sink))
        .channel(
            Channel::aliyun_sms(&aliyun)
                .template_code("SMS_1")
                .default_quiet_hours(),
        )
        .start()
        .await;

    let out = app.cli_ok(&["test-notify", "--channel", "email", "--to", EMAIL]);
    assert!(out.contains("accepted"), "{out}");
    assert!(!out.contains(EMAIL), "the address is masked: {out}");
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].subject().as_deref(), Some("订单TEST-0001:已签收"));

    // Quiet hours hold the daemon's SMS, not an operator's test.
    let out = app.cli_ok(&["test-notify", "--channel", "sms", "--to", PHONE]);
    assert!(out.contains("accepted"), "{out}");
    assert_eq!(aliyun.calls().len(), 1);
    assert_eq!(aliyun.calls()[0].param("PhoneNumbers"), Some(PHONE));

    let out = app.cli_ok(&["test-notify", "--channel", "webhook"]);
    assert!(out.contains("accepted"), "{out}");
    let deliveries = app.receiver.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].verified);
    assert_eq!(deliveries[0].body["data"]["order_id"], "TEST-0001");

    let bad = app.cli(&["test-notify", "--channel", "sms", "--to", "12345"]);
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
    aliyun.reply("isv.MOBILE_NUMBER_ILLEGAL", 1);
    let refused = app.cli(&["test-notify", "--channel", "sms", "--to", "13800000000"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refused for good") && !stderr.contains("13800000000"),
        "{stderr}"
    );
}
