//! The real Kuaidi100 adapter against the fake Kuaidi100 endpoint, over HTTP.

use std::time::Duration;

use shipwatch::domain::{Phone, Secret, Status};
use shipwatch::providers::kuaidi100::{Kuaidi100, Kuaidi100Config};
use shipwatch::providers::{Provider, ProviderError, Trace, TrackRequest};

use crate::support::app::TestApp;
use crate::support::config;
use crate::support::fake_kuaidi100::{self, FakeKuaidi100, Fault};

const CUSTOMER: &str = "3564B6CBE3A1C7D5EA6B8A0A6D2C1E7F";
const KEY: &str = "fakekuaidi100key";
const NUM: &str = "YT7512345678901";

async fn endpoint() -> FakeKuaidi100 {
    FakeKuaidi100::start(CUSTOMER, KEY).await
}

fn adapter_at(endpoint: &str, customer: &str, key: &str) -> Kuaidi100 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    Kuaidi100::new(
        Kuaidi100Config {
            endpoint: endpoint.to_owned(),
            customer: customer.to_owned(),
            key: Secret::new(key),
            push: None,
        },
        http,
    )
}

fn good_adapter(fake: &FakeKuaidi100) -> Kuaidi100 {
    adapter_at(&fake.url, CUSTOMER, KEY)
}

fn request(carrier: &str, num: &str, phone: Option<&str>) -> TrackRequest {
    TrackRequest {
        order_id: format!("E-{num}"),
        tracking_no: Some(num.to_owned()),
        carrier: Some(carrier.to_owned()),
        phone: phone.map(|p| Phone::parse(p).unwrap()),
        ..TrackRequest::default()
    }
}

async fn poll(kuaidi100: &Kuaidi100, num: &str) -> Result<Trace, ProviderError> {
    kuaidi100.fetch(&request("yuantong", num, None)).await
}

fn assert_clean(fake: &FakeKuaidi100) {
    assert_eq!(fake.signature_failures(), 0, "{:?}", fake.rejections());
}

#[tokio::test]
async fn the_standard_journey_in_order() {
    let fake = endpoint().await;
    fake.journey(NUM);
    let kuaidi100 = good_adapter(&fake);
    let expected = [
        (Status::InfoReceived, "101", 1),
        (Status::PickedUp, "103", 2),
        (Status::InTransit, "0", 4),
        (Status::OutForDelivery, "5", 5),
        (Status::Delivered, "3", 6),
        (Status::Delivered, "3", 6),
    ];
    for (index, (status, raw, events)) in expected.into_iter().enumerate() {
        let trace = poll(&kuaidi100, NUM).await.unwrap();
        assert_eq!(trace.status, status, "poll {index}");
        assert_eq!(trace.raw_status, raw, "poll {index}");
        assert_eq!(trace.events.len(), events, "poll {index}");
        assert_eq!(trace.carrier.as_deref(), Some("yuantong"));
        assert_eq!(trace.tracking_no.as_deref(), Some(NUM));
        assert!(trace.unmapped.is_empty(), "poll {index}");
    }
    assert_eq!(fake.polls_of(NUM), 6);
    assert_eq!(fake.polls_after_final(NUM), 1);
    let steps: Vec<_> = fake.calls().iter().map(|call| call.step).collect();
    assert_eq!(steps, [0, 1, 2, 3, 4, 4].map(Some));
    assert_clean(&fake);
}

#[tokio::test]
async fn events_come_out_oldest_first() {
    let fake = endpoint().await;
    fake.journey(NUM);
    let kuaidi100 = good_adapter(&fake);
    let mut trace = poll(&kuaidi100, NUM).await.unwrap();
    for _ in 0..4 {
        trace = poll(&kuaidi100, NUM).await.unwrap();
    }
    assert!(trace.events.windows(2).all(|w| w[0].time <= w[1].time));
    let codes: Vec<_> = trace
        .events
        .iter()
        .map(|e| e.raw_code.as_deref().unwrap())
        .collect();
    assert_eq!(codes, ["101", "103", "0", "1002", "5", "301"]);
    let first = &trace.events[0];
    assert_eq!(first.time.to_rfc3339(), "2026-11-20T07:30:00+08:00");
    assert_eq!(first.location, None);
    let last = trace.events.last().unwrap();
    assert_eq!(last.time.to_rfc3339(), "2026-11-21T10:05:00+08:00");
    assert_eq!(last.description, "【上海市】快件已签收，签收人：本人");
    assert_eq!(last.location.as_deref(), Some("上海,上海市,浦东新区"));
}

#[tokio::test]
async fn the_exact_param_is_sent_and_signed() {
    let fake = endpoint().await;
    fake.journey(NUM);
    poll(&good_adapter(&fake), NUM).await.unwrap();
    let call = fake.calls().pop().unwrap();
    assert_eq!(call.customer.as_deref(), Some(CUSTOMER));
    assert_eq!(
        call.raw_param.as_deref(),
        Some(r#"{"com":"yuantong","num":"YT7512345678901","resultv2":"4"}"#)
    );
    assert_eq!(call.param_field("phone"), None);
    assert_eq!(call.answered, "trace");
    assert_clean(&fake);
}

#[tokio::test]
async fn a_wrong_key_is_a_configuration_error() {
    let fake = endpoint().await;
    fake.journey(NUM);
    let err = poll(&adapter_at(&fake.url, CUSTOMER, "not-the-key"), NUM)
        .await
        .unwrap_err();
    match &err {
        ProviderError::Config(message) => {
            assert!(message.contains("returnCode 503"), "{message}");
            assert!(message.contains("key and customer"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.signature_failures(), 1);
    assert!(!err.to_string().contains("not-the-key"));
    // The refused call did not consume a step of the journey.
    let trace = poll(&good_adapter(&fake), NUM).await.unwrap();
    assert_eq!(trace.status, Status::InfoReceived);
}

#[tokio::test]
async fn a_wrong_customer_is_a_configuration_error() {
    let fake = endpoint().await;
    fake.journey(NUM);
    let err = poll(&adapter_at(&fake.url, "SOMEONEELSE", KEY), NUM)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
    assert_eq!(fake.signature_failures(), 1);
}

#[tokio::test]
async fn each_fault_has_its_class() {
    let fake = endpoint().await;
    fake.journey(NUM);
    let kuaidi100 = good_adapter(&fake);
    // Each fault with the verdict its error must satisfy.
    type Verdict = fn(&ProviderError) -> bool;
    let cases: [(Fault, Verdict); 13] = [
        (Fault::NotFound, |e| matches!(e, ProviderError::NotFound(_))),
        (
            Fault::BadCarrier,
            |e| matches!(e, ProviderError::Permanent(m) if m.contains("check the carrier code")),
        ),
        (
            Fault::NeedPhone,
            |e| matches!(e, ProviderError::Permanent(m) if m.contains("recipient's phone")),
        ),
        (
            Fault::KeyExpired,
            |e| matches!(e, ProviderError::AuthExpired(m) if m.contains("601")),
        ),
        (
            Fault::Unauthorised,
            |e| matches!(e, ProviderError::Config(m) if m.contains("not authorised")),
        ),
        (Fault::ReturnCode(501), |e| {
            matches!(e, ProviderError::Transient(_))
        }),
        (Fault::ReturnCode(502), |e| {
            matches!(e, ProviderError::Transient(_))
        }),
        (
            Fault::TooManyRequests { retry_after: 17 },
            |e| matches!(e, ProviderError::RateLimited { retry_after, .. } if *retry_after == Duration::from_secs(17)),
        ),
        (Fault::Html, |e| matches!(e, ProviderError::Transient(_))),
        (Fault::MalformedJson, |e| {
            matches!(e, ProviderError::Transient(_))
        }),
        (Fault::Empty, |e| matches!(e, ProviderError::Transient(_))),
        (
            Fault::Http(500),
            |e| matches!(e, ProviderError::Transient(m) if m.contains("HTTP 500")),
        ),
        (Fault::Http(503), |e| {
            matches!(e, ProviderError::Transient(_))
        }),
    ];
    for (fault, expected) in cases {
        fake.fault(fault.clone(), 1);
        let err = poll(&kuaidi100, NUM).await.unwrap_err();
        assert!(expected(&err), "{fault:?} gave {err:?}");
        assert!(err.to_string().chars().count() < 300, "{err}");
    }
    // None of the faults consumed a step of the journey.
    assert_eq!(
        poll(&kuaidi100, NUM).await.unwrap().status,
        Status::InfoReceived
    );
    assert_eq!(
        poll(&kuaidi100, NUM).await.unwrap().status,
        Status::PickedUp
    );
    assert_clean(&fake);
}

#[tokio::test]
async fn an_unknown_number_is_not_found() {
    let fake = endpoint().await;
    let err = poll(&good_adapter(&fake), "YT0000000000000")
        .await
        .unwrap_err();
    match err {
        ProviderError::NotFound(message) => {
            assert!(message.contains("查询无结果"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.calls()[0].answered, "unknown_num");
}

#[tokio::test]
async fn the_whole_phone_number_reaches_the_endpoint_for_zhongtong() {
    let fake = endpoint().await;
    let num = "75312345678901";
    fake.script(num, fake_kuaidi100::journey_bodies("zhongtong", num));
    fake.phone(num, "13800138123");
    let kuaidi100 = good_adapter(&fake);
    let trace = kuaidi100
        .fetch(&request("zhongtong", num, Some("+86 138-0013-8123")))
        .await
        .unwrap();
    assert_eq!(trace.status, Status::InfoReceived);
    assert_eq!(trace.carrier.as_deref(), Some("zhongtong"));
    let call = fake.calls().pop().unwrap();
    assert_eq!(call.param_field("phone"), Some("13800138123"));
    assert_eq!(
        call.raw_param.as_deref(),
        Some(r#"{"com":"zhongtong","num":"75312345678901","phone":"13800138123","resultv2":"4"}"#)
    );
    // Another number than the waybill's is refused by the carrier, for that shipment alone.
    let err = kuaidi100
        .fetch(&request("zhongtong", num, Some("13900139000")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("408")),
        "{err:?}"
    );
    assert_clean(&fake);
}

#[tokio::test]
async fn a_phone_carrier_without_a_phone_never_reaches_the_endpoint() {
    let fake = endpoint().await;
    let kuaidi100 = good_adapter(&fake);
    for carrier in ["shunfeng", "shunfengkuaiyun", "zhongtong"] {
        let bare = request(carrier, "SF1234567890123", None);
        let expected = kuaidi100.check(&bare).unwrap_err().to_string();
        assert!(expected.contains("--phone"), "{expected}");
        match kuaidi100.fetch(&bare).await.unwrap_err() {
            ProviderError::Permanent(message) => assert_eq!(message, expected),
            other => panic!("{carrier}: {other:?}"),
        }
    }
    let nothing = TrackRequest {
        order_id: "E-1".to_owned(),
        tracking_no: None,
        carrier: None,
        phone: None,
        ..TrackRequest::default()
    };
    assert!(matches!(
        kuaidi100.fetch(&nothing).await.unwrap_err(),
        ProviderError::Permanent(_)
    ));
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn scripted_states_map_and_unknown_ones_are_reported() {
    let fake = endpoint().await;
    let step: fake_kuaidi100::Step = (
        "2026-11-21 09:00:00",
        "快件已存放至【菜鸟驿站】，请凭取件码取件",
        "上海,上海市",
        "投柜或驿站",
        "501",
    );
    fake.script(
        NUM,
        vec![
            fake_kuaidi100::trace_response("yuantong", NUM, "501", &[step]),
            fake_kuaidi100::trace_response("yuantong", NUM, "204", &[step]),
            fake_kuaidi100::trace_response("yuantong", NUM, "6", &[step]),
            fake_kuaidi100::trace_response("yuantong", NUM, "1234", &[step]),
            fake_kuaidi100::error_response(601, "POLL:KEY已过期"),
        ],
    );
    let kuaidi100 = good_adapter(&fake);
    assert_eq!(
        poll(&kuaidi100, NUM).await.unwrap().status,
        Status::AvailableForPickup
    );
    assert_eq!(
        poll(&kuaidi100, NUM).await.unwrap().status,
        Status::FailedAttempt
    );
    // 退回: on its way back, not back yet.
    let back = poll(&kuaidi100, NUM).await.unwrap();
    assert_eq!(back.status, Status::Exception);
    assert_eq!(back.raw_status, "6");
    let unknown = poll(&kuaidi100, NUM).await.unwrap();
    assert_eq!(unknown.status, Status::InTransit);
    assert_eq!(unknown.raw_status, "1234");
    assert_eq!(unknown.unmapped, ["state=1234"]);
    let err = poll(&kuaidi100, NUM).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthExpired(_)), "{err:?}");
    assert_clean(&fake);
}

#[tokio::test]
async fn an_answer_about_another_number_is_refused() {
    let fake = endpoint().await;
    fake.script(
        NUM,
        vec![fake_kuaidi100::trace_response(
            "yuantong",
            "YT0000000000001",
            "3",
            &[],
        )],
    );
    let err = poll(&good_adapter(&fake), NUM).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nowhere = adapter_at(
        &format!("http://127.0.0.1:{closed}/poll/query.do"),
        CUSTOMER,
        KEY,
    );
    let err = poll(&nowhere, NUM).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn the_waybill_lock_sets_the_minimum_interval() {
    let fake = endpoint().await;
    let kuaidi100 = good_adapter(&fake);
    assert_eq!(kuaidi100.kind(), "kuaidi100");
    assert_eq!(kuaidi100.min_interval(), Duration::from_secs(30 * 60));
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// A daemon set up with a `kd` provider on `fake`, polling high-tier shipments every second.
async fn app_with(fake: &FakeKuaidi100) -> TestApp {
    TestApp::builder()
        .provider(config::Provider::top())
        .provider(config::Provider::kuaidi100(fake))
        .channel(config::Channel::webhook())
        .start()
        .await
}

fn add(app: &TestApp, order_id: &str, num: &str) {
    app.cli_ok(&[
        "add",
        order_id,
        "--provider",
        "kd",
        "--carrier",
        "yuantong",
        "--tracking-no",
        num,
        "--tier",
        "high",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuaidi100_a_parcel_on_its_way_back_is_polled_until_it_is_signed_back() {
    let fake = endpoint().await;
    let app = app_with(&fake).await;
    let num = "YT7500000000006";
    let steps: [fake_kuaidi100::Step; 5] = [
        (
            "2026-11-20 08:00:01",
            "【杭州市】快递员已揽收",
            "浙江,杭州市",
            "揽收",
            "103",
        ),
        (
            "2026-11-20 21:00:00",
            "快件已到达【上海转运中心】",
            "上海,上海市",
            "在途",
            "0",
        ),
        (
            "2026-11-21 15:00:00",
            "收件人拒收，快件退回寄件人",
            "上海,上海市",
            "退回",
            "6",
        ),
        (
            "2026-11-22 06:00:00",
            "退回件已到达【杭州转运中心】",
            "浙江,杭州市",
            "退回",
            "6",
        ),
        (
            "2026-11-23 10:00:00",
            "退回件已由寄件人签收",
            "浙江,杭州市",
            "退签",
            "4",
        ),
    ];
    fake.script(
        num,
        vec![
            fake_kuaidi100::trace_response("yuantong", num, "0", &steps[..2]),
            // Kuaidi100 says to ignore `ischeck`; set beside 退回 it must end nothing.
            fake_kuaidi100::checked_response("yuantong", num, "6", true, &steps[..3]),
            fake_kuaidi100::checked_response("yuantong", num, "6", true, &steps[..4]),
            fake_kuaidi100::trace_response("yuantong", num, "4", &steps[..5]),
        ],
    );
    add(&app, "KD-BACK-1", num);
    let mut daemon = app.spawn_daemon();

    app.wait_until("the way back is seen", Duration::from_secs(60), || {
        app.shipments()[0]["status"] == "exception"
    })
    .await;
    let shown = app.shipment("KD-BACK-1");
    assert_eq!(shown["shipment"]["raw_status"], "6", "{shown}");
    assert_eq!(shown["shipment"]["active"], true, "still polled: {shown}");

    app.wait_until(
        "the sign-back ends the journey and is announced",
        Duration::from_secs(60),
        || app.shipments()[0]["status"] == "returned" && app.outbox(Some("pending")).is_empty(),
    )
    .await;
    let shown = app.shipment("KD-BACK-1");
    assert_eq!(shown["shipment"]["raw_status"], "4");
    assert_eq!(
        shown["shipment"]["active"], false,
        "polling stopped: {shown}"
    );
    // Polled on after the way back began: the second 退回 answer was served too.
    let steps_served: Vec<_> = fake.calls().iter().filter_map(|call| call.step).collect();
    assert!(steps_served.contains(&2), "{steps_served:?}");
    assert_eq!(fake.polls_after_final(num), 0);
    assert!(daemon.terminate().success());

    let changes: Vec<(String, String)> = app
        .receiver
        .deliveries()
        .iter()
        .map(|d| {
            let data = &d.body["data"];
            (
                data["status"].as_str().unwrap_or("").to_owned(),
                data["raw_status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [("in_transit", "0"), ("exception", "6"), ("returned", "4")]
        .map(|(s, r)| (s.to_owned(), r.to_owned()));
    assert_eq!(changes, expected);
    assert_clean(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuaidi100_an_account_without_authorisation_stops_the_provider_not_the_shipments() {
    let fake = endpoint().await;
    let app = app_with(&fake).await;
    for (order, num) in [
        ("KD-AUTH-1", "YT7500000000101"),
        ("KD-AUTH-2", "YT7500000000102"),
    ] {
        fake.journey(num);
        add(&app, order, num);
    }
    fake.fault(Fault::Unauthorised, 1000);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the provider is stopped", Duration::from_secs(60), || {
        daemon.log().contains("PROVIDER STOPPED") && app.cli_ok(&["stats"]).contains("STOPPED   kd")
    })
    .await;
    let log = daemon.log();
    assert_eq!(log.matches("PROVIDER STOPPED").count(), 1, "{log}");
    assert!(log.contains("not authorised"), "{log}");
    for shipment in app.shipments() {
        assert_eq!(shipment["status"], "pending", "{shipment}");
        assert_eq!(shipment["active"], true, "not marked invalid: {shipment}");
    }
    assert!(daemon.terminate().success());
    assert!(
        fake.calls()
            .iter()
            .all(|call| call.answered == "unauthorised")
    );
    assert_clean(&fake);
}
