//! The real 1688 adapter against the fake 1688 gateway, over HTTP.

use std::time::Duration;

use shipwatch::domain::{Secret, Status};
use shipwatch::providers::alibaba1688::{Alibaba1688, Alibaba1688Config};
use shipwatch::providers::{Provider, ProviderError, Trace, TrackRequest};

use crate::support::app::TestApp;
use crate::support::config;
use crate::support::fake_1688::{self, Fake1688, Fault};

const APP_KEY: &str = "7654321";
const SECRET: &str = "s3cr3t-1688";
const TOKEN: &str = "b2c3d4e5-buyer-token";
const ORDER: u64 = 2_718_281_828_459_045;

async fn gateway() -> Fake1688 {
    Fake1688::start(APP_KEY, SECRET, TOKEN).await
}

fn adapter(fake: &Fake1688, app_key: &str, secret: &str, token: &str) -> Alibaba1688 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    Alibaba1688::new(
        Alibaba1688Config {
            endpoint: fake.url.clone(),
            app_key: app_key.to_owned(),
            app_secret: Secret::new(secret),
            access_token: Secret::new(token),
        },
        http,
    )
}

fn good_adapter(fake: &Fake1688) -> Alibaba1688 {
    adapter(fake, APP_KEY, SECRET, TOKEN)
}

fn request(order_id: impl Into<String>) -> TrackRequest {
    TrackRequest {
        order_id: order_id.into(),
        tracking_no: None,
        carrier: None,
        phone: None,
        ..TrackRequest::default()
    }
}

async fn poll(a1688: &Alibaba1688, order_id: u64) -> Result<Trace, ProviderError> {
    a1688.fetch(&request(order_id.to_string())).await
}

fn assert_clean(fake: &Fake1688) {
    assert_eq!(fake.signature_failures(), 0, "{:?}", fake.rejections());
}

#[tokio::test]
async fn the_standard_journey_in_order() {
    let fake = gateway().await;
    fake.journey(ORDER);
    let a1688 = good_adapter(&fake);
    let expected = [
        (Status::InfoReceived, 1),
        (Status::PickedUp, 2),
        (Status::InTransit, 3),
        (Status::OutForDelivery, 4),
        (Status::Delivered, 5),
        (Status::Delivered, 5),
    ];
    for (index, (status, events)) in expected.into_iter().enumerate() {
        let trace = poll(&a1688, ORDER).await.unwrap();
        assert_eq!(trace.status, status, "poll {index}");
        assert_eq!(trace.events.len(), events, "poll {index}");
        assert_eq!(
            trace.raw_status,
            fake_1688::JOURNEY[events - 1].1,
            "poll {index}"
        );
        assert_eq!(trace.tracking_no, Some(fake_1688::bill_no(ORDER)));
        assert!(trace.unmapped.is_empty(), "{:?}", trace.unmapped);
        assert!(trace.events.windows(2).all(|w| w[0].time <= w[1].time));
    }
    let trace = poll(&a1688, ORDER).await.unwrap();
    let newest = trace.events.last().unwrap();
    assert_eq!(newest.time.to_rfc3339(), "2026-11-21T11:02:00+08:00");
    assert_eq!(newest.description, fake_1688::JOURNEY[4].1);
    assert_eq!(fake.polls_of(ORDER), 7);
    assert_eq!(fake.polls_after_final(ORDER), 2);
    let steps: Vec<_> = fake.calls().iter().map(|call| call.step).collect();
    assert_eq!(steps, [0, 1, 2, 3, 4, 4, 4].map(Some));
    assert_clean(&fake);
}

#[tokio::test]
async fn a_newest_first_list_yields_the_same_history() {
    let fake = gateway().await;
    fake.journey(ORDER);
    fake.newest_first(true);
    fake.journey(ORDER + 1);
    let a1688 = good_adapter(&fake);
    for index in 0..fake_1688::JOURNEY.len() {
        let oldest = poll(&a1688, ORDER).await.unwrap();
        let newest = poll(&a1688, ORDER + 1).await.unwrap();
        assert_eq!(newest.status, oldest.status, "poll {index}");
        assert_eq!(newest.events, oldest.events, "poll {index}");
        assert_eq!(newest.raw_status, oldest.raw_status, "poll {index}");
    }
    assert_clean(&fake);
}

#[tokio::test]
async fn a_wrong_secret_is_a_configuration_error() {
    let fake = gateway().await;
    fake.journey(ORDER);
    let err = poll(&adapter(&fake, APP_KEY, "not-the-secret", TOKEN), ORDER)
        .await
        .unwrap_err();
    match &err {
        ProviderError::Config(message) => {
            assert!(message.contains("gw.SignatureInvalid"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.signature_failures(), 1);
    assert!(!err.to_string().contains("not-the-secret"));
    // A refused call does not advance the journey.
    let trace = poll(&good_adapter(&fake), ORDER).await.unwrap();
    assert_eq!(trace.status, Status::InfoReceived);
}

#[tokio::test]
async fn an_unknown_app_key_is_a_configuration_error() {
    let fake = gateway().await;
    fake.journey(ORDER);
    let err = poll(&adapter(&fake, "1111111", SECRET, TOKEN), ORDER)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Config(m) if m.contains("gw.AppKeyNotExist")),
        "{err:?}"
    );
    assert_eq!(fake.signature_failures(), 1);
}

#[tokio::test]
async fn a_bad_token_means_the_credentials_expired() {
    let fake = gateway().await;
    fake.journey(ORDER);
    let err = poll(&adapter(&fake, APP_KEY, SECRET, "stale-token"), ORDER)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::AuthExpired(m) if m.contains("gw.InvalidAccessToken")),
        "{err:?}"
    );
    assert!(!err.to_string().contains("stale-token"));
    assert_eq!(fake.signature_failures(), 1);
}

#[tokio::test]
async fn the_frequency_limit_pauses_for_the_default_minute() {
    let fake = gateway().await;
    fake.journey(ORDER);
    fake.fault(Fault::RateLimit, 1);
    let a1688 = good_adapter(&fake);
    match poll(&a1688, ORDER).await.unwrap_err() {
        ProviderError::RateLimited {
            retry_after,
            message,
        } => {
            assert_eq!(retry_after, Duration::from_secs(60));
            assert!(message.contains("gw.QosAppFrequencyLimit"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        poll(&a1688, ORDER).await.unwrap().status,
        Status::InfoReceived
    );
    let answered: Vec<_> = fake.calls().iter().map(|call| call.answered).collect();
    assert_eq!(answered, ["rate_limit", "trace"]);
    assert_clean(&fake);
}

#[tokio::test]
async fn http_429_honours_retry_after() {
    let fake = gateway().await;
    fake.journey(ORDER);
    fake.fault(Fault::TooManyRequests { retry_after: 17 }, 1);
    match poll(&good_adapter(&fake), ORDER).await.unwrap_err() {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(17))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_trace_yet_is_not_found() {
    let fake = gateway().await;
    fake.journey(ORDER);
    fake.fault(Fault::NoTrace, 1);
    let err = poll(&good_adapter(&fake), ORDER).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::NotFound(m) if m.contains(fake_1688::NO_TRACE)),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbled_answers_are_transient_and_a_bare_401_is_expired_credentials() {
    let fake = gateway().await;
    fake.journey(ORDER);
    let a1688 = good_adapter(&fake);
    let faults = [
        Fault::Html,
        Fault::MalformedJson,
        Fault::Empty,
        Fault::Http(500),
        Fault::Http(502),
        Fault::Http(503),
    ];
    for fault in faults {
        fake.fault(fault.clone(), 1);
        match poll(&a1688, ORDER).await {
            Err(ProviderError::Transient(message)) => {
                assert!(message.chars().count() < 300, "{fault:?}: {message}")
            }
            other => panic!("{fault:?} gave {other:?}"),
        }
    }
    fake.fault(Fault::Http(401), 1);
    let err = poll(&a1688, ORDER).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthExpired(_)), "{err:?}");
    // None of the faults consumed a step of the journey.
    assert_eq!(
        poll(&a1688, ORDER).await.unwrap().status,
        Status::InfoReceived
    );
    assert_eq!(poll(&a1688, ORDER).await.unwrap().status, Status::PickedUp);
    assert_clean(&fake);
}

#[tokio::test]
async fn big_order_ids_round_trip_exactly() {
    let fake = gateway().await;
    let a1688 = good_adapter(&fake);
    for order_id in [u64::MAX, 9_223_372_036_854_775_807, 9_007_199_254_740_993] {
        fake.journey(order_id);
        // The adapter refuses an answer about another order, so Ok means the id came back intact.
        let trace = poll(&a1688, order_id).await.unwrap();
        assert_eq!(trace.status, Status::InfoReceived);
        assert_eq!(trace.tracking_no, Some(fake_1688::bill_no(order_id)));
        assert_eq!(fake.calls().last().unwrap().order_id, Some(order_id));
        assert_eq!(fake.polls_of(order_id), 1);
    }
    assert_clean(&fake);
}

#[tokio::test]
async fn an_answer_about_another_order_is_refused() {
    let fake = gateway().await;
    let steps = [fake_1688::JOURNEY[4]];
    fake.script(
        ORDER,
        vec![fake_1688::trace_response(ORDER + 1, "YD1", &steps)],
    );
    let err = poll(&good_adapter(&fake), ORDER).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn an_order_the_gateway_does_not_know_is_permanent() {
    let fake = gateway().await;
    let err = poll(&good_adapter(&fake), ORDER).await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent(_)), "{err:?}");
    assert_eq!(fake.calls().last().unwrap().answered, "unknown_order");
    assert_clean(&fake);
}

#[tokio::test]
async fn a_non_numeric_order_id_never_reaches_the_gateway() {
    let fake = gateway().await;
    let a1688 = good_adapter(&fake);
    let bad = request("E20261120-0001");
    let message = a1688.check(&bad).unwrap_err().to_string();
    assert!(message.contains("numeric 1688 order id"), "{message}");
    let err = a1688.fetch(&bad).await.unwrap_err();
    assert_eq!(err, ProviderError::Permanent(message));
    assert!(fake.calls().is_empty());
    assert!(a1688.check(&request(ORDER.to_string())).is_ok());
}

#[tokio::test]
async fn scripted_bodies_cover_split_parcels_stations_and_errors() {
    let fake = gateway().await;
    let shipped = ("2026-11-20 08:00:00", "卖家已发货");
    let first: [(&str, &str); 2] = [shipped, ("2026-11-21 10:00:00", "您的快件已签收")];
    let second: [(&str, &str); 2] = [
        shipped,
        ("2026-11-21 08:00:00", "快件已到达【上海转运中心】"),
    ];
    let station = [(
        "2026-11-22 09:00:00",
        "【上海市】快件已被 菜鸟驿站 代收，请凭取件码取件",
    )];
    fake.script(
        ORDER,
        vec![
            fake_1688::split_response(ORDER, &[("YD-A", &first), ("YD-B", &second)]),
            fake_1688::split_response(ORDER, &[("YD-A", &first), ("YD-B", &station)]),
            fake_1688::error_response("401", "access_token expired"),
            fake_1688::error_response("500", "系统繁忙，请稍后再试"),
        ],
    );
    let a1688 = good_adapter(&fake);
    let split = poll(&a1688, ORDER).await.unwrap();
    // One parcel delivered, the other on its way: the order is not done.
    assert_eq!(split.status, Status::InTransit);
    assert_eq!(split.tracking_no.as_deref(), Some("YD-A"));
    assert_eq!(
        split.events.len(),
        3,
        "the shared shipping note is kept once"
    );
    let station = poll(&a1688, ORDER).await.unwrap();
    assert_eq!(station.status, Status::AvailableForPickup);
    let err = poll(&a1688, ORDER).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthExpired(_)), "{err:?}");
    let err = poll(&a1688, ORDER).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    assert_clean(&fake);
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// A daemon set up with an `ali` provider on `fake`, polling high-tier shipments every second.
async fn app_with(fake: &Fake1688) -> TestApp {
    TestApp::builder()
        .provider(config::Provider::top())
        .provider(config::Provider::alibaba1688(fake))
        .channel(config::Channel::webhook())
        .start()
        .await
}

fn add(app: &TestApp, order_id: u64) {
    app.cli_ok(&[
        "add",
        &order_id.to_string(),
        "--provider",
        "ali",
        "--tier",
        "high",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alibaba1688_node_actions_drive_the_status_over_the_step_text() {
    let fake = gateway().await;
    let app = app_with(&fake).await;
    let order = 3_141_592_653_589_793u64;
    // Each step's text alone would map differently from its action: 驿站 reads as a pickup
    // point, 签收 in 未能签收 as delivered, and the last text names no status at all.
    let nodes: [(&str, &str, &str, &str); 4] = [
        (
            "2026-11-20 08:00:00",
            "ACCEPT",
            "【杭州市】包裹已由快递员取走",
            "杭州余杭网点",
        ),
        (
            "2026-11-20 21:00:00",
            "TMS_STATION_IN",
            "快件已到达【浦东花木驿站】分拨",
            "浦东花木站",
        ),
        (
            "2026-11-21 09:30:00",
            "TMS_FAILED",
            "快递员派送，收件人电话未接通，未能签收",
            "浦东花木站",
        ),
        (
            "2026-11-22 10:00:00",
            "TMS_SIGN",
            "包裹已由本人取走，感谢使用",
            "浦东花木站",
        ),
    ];
    let bill = fake_1688::bill_no(order);
    fake.script(
        order,
        (1..=nodes.len())
            .map(|n| fake_1688::node_response(order, &bill, &nodes[..n]))
            .collect(),
    );
    add(&app, order);
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the parcel is delivered and every change announced",
        Duration::from_secs(60),
        || app.shipments()[0]["status"] == "delivered" && app.outbox(Some("pending")).is_empty(),
    )
    .await;
    let shown = app.shipment(&order.to_string());
    assert_eq!(shown["shipment"]["active"], false, "{shown}");
    assert_eq!(fake.polls_after_final(order), 0);
    assert!(daemon.terminate().success());

    let statuses: Vec<String> = app
        .receiver
        .deliveries()
        .iter()
        .map(|d| d.body["data"]["status"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        statuses,
        ["picked_up", "in_transit", "failed_attempt", "delivered"]
    );
    let stats: serde_json::Value = serde_json::from_str(&app.cli_ok(&["stats", "--json"])).unwrap();
    assert_eq!(
        stats["unmapped"],
        serde_json::json!([]),
        "every action was known"
    );
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alibaba1688_each_gateway_configuration_error_stops_the_provider_once() {
    let fake = gateway().await;
    let app = app_with(&fake).await;
    let orders = [4_100_000_000_000_000_001u64, 4_100_000_000_000_000_002];
    for order in orders {
        fake.journey(order);
        add(&app, order);
    }
    let refusals = [
        ("gw.ParamMissing", "Required argument orderId"),
        ("gw.APIUnsupported", "API unsupported"),
        ("gw.AppKeyNotExist", "App key does not exist"),
        ("gw.SignatureInvalid", "Request signature is invalid"),
        ("gw.APIACLDecline", "AppKey is not allowed(acl)"),
    ];
    for (code, message) in refusals {
        fake.clear_faults();
        fake.fault(Fault::Gateway { code, message }, 1000);
        let calls_before = fake.calls().len();
        // Each run starts afresh: a restart lifts the previous stop.
        let mut daemon = app.spawn_daemon();
        app.wait_until(
            &format!("{code} stops the provider"),
            Duration::from_secs(60),
            || {
                daemon.log().contains("PROVIDER STOPPED")
                    && app.cli_ok(&["stats"]).contains("STOPPED   ali")
            },
        )
        .await;
        let log = daemon.log();
        assert_eq!(log.matches("PROVIDER STOPPED").count(), 1, "{code}: {log}");
        assert!(log.contains(code), "{code}: {log}");
        assert!(daemon.terminate().success());
        assert!(fake.calls().len() > calls_before, "{code} was served");
        for shipment in app.shipments() {
            assert_eq!(shipment["status"], "pending", "{code}: {shipment}");
            assert_eq!(
                shipment["active"], true,
                "{code}: not marked invalid: {shipment}"
            );
        }
    }
    assert!(fake.calls().iter().all(|call| call.answered == "gateway"));
    assert_clean(&fake);
}
