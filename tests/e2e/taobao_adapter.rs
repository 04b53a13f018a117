//! The real Taobao adapter against the fake TOP gateway, over HTTP.

use std::time::Duration;

use shipwatch::domain::{Secret, Status};
use shipwatch::providers::taobao::{SignMethod, Taobao, TaobaoConfig};
use shipwatch::providers::{Provider, ProviderError, Trace, TrackRequest};

use crate::support::fake_top::{self, FakeTop, Fault};

const APP_KEY: &str = "12345678";
const SECRET: &str = "helloworld";
const SESSION: &str = "6102a1b2c3d4e5f6session";
const TID: u64 = 3_141_592_653_589_793;

async fn gateway() -> FakeTop {
    FakeTop::start(APP_KEY, SECRET, SESSION).await
}

fn adapter(fake: &FakeTop, secret: &str, session: &str, method: SignMethod) -> Taobao {
    adapter_at(&fake.url, secret, session, method, Duration::from_secs(5))
}

fn adapter_at(
    endpoint: &str,
    secret: &str,
    session: &str,
    method: SignMethod,
    timeout: Duration,
) -> Taobao {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client");
    Taobao::new(
        TaobaoConfig {
            endpoint: endpoint.to_owned(),
            app_key: APP_KEY.to_owned(),
            app_secret: Secret::new(secret),
            session: Secret::new(session),
            sign_method: method,
            seller_nick: None,
        },
        http,
    )
}

fn good_adapter(fake: &FakeTop) -> Taobao {
    adapter(fake, SECRET, SESSION, SignMethod::default())
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

async fn poll(taobao: &Taobao, tid: u64) -> Result<Trace, ProviderError> {
    taobao.fetch(&request(tid.to_string())).await
}

fn assert_clean(fake: &FakeTop) {
    assert_eq!(fake.signature_failures(), 0, "{:?}", fake.rejections());
}

#[tokio::test]
async fn every_sign_method_is_accepted() {
    let fake = gateway().await;
    for method in [SignMethod::Md5, SignMethod::Hmac, SignMethod::HmacSha256] {
        let tid = TID + method as u64;
        fake.journey(tid);
        let name = method.as_str();
        let trace = poll(&adapter(&fake, SECRET, SESSION, method), tid)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(trace.status, Status::InfoReceived, "{name}");
        let call = fake.calls().pop().unwrap();
        assert_eq!(call.sign_method.as_deref(), Some(method.as_str()));
        assert_eq!(call.answered, "trace");
    }
    assert_clean(&fake);
}

#[tokio::test]
async fn a_wrong_secret_is_a_configuration_error() {
    let fake = gateway().await;
    fake.journey(TID);
    let err = poll(
        &adapter(&fake, "not-the-secret", SESSION, SignMethod::Hmac),
        TID,
    )
    .await
    .unwrap_err();
    match &err {
        ProviderError::Config(message) => {
            assert!(
                message.contains("TOP error 25 Invalid signature"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.signature_failures(), 1);
    assert!(!err.to_string().contains("not-the-secret"));
}

#[tokio::test]
async fn a_wrong_session_means_the_credentials_expired() {
    let fake = gateway().await;
    fake.journey(TID);
    let err = poll(&adapter(&fake, SECRET, "stale", SignMethod::Md5), TID)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::AuthExpired(_)), "{err:?}");
    assert_eq!(fake.signature_failures(), 1);
}

#[tokio::test]
async fn the_standard_journey_in_order() {
    let fake = gateway().await;
    fake.journey(TID);
    let taobao = good_adapter(&fake);
    let expected = [
        (Status::InfoReceived, "物流公司已接单", 0),
        (Status::PickedUp, "物流公司揽收成功", 1),
        (Status::InTransit, "物流公司揽收成功", 3),
        (Status::OutForDelivery, "物流公司揽收成功", 4),
        (Status::Delivered, "对方已签收", 5),
        (Status::Delivered, "对方已签收", 5),
    ];
    for (index, (status, raw, events)) in expected.into_iter().enumerate() {
        let trace = poll(&taobao, TID).await.unwrap();
        assert_eq!(trace.status, status, "poll {index}");
        assert_eq!(trace.raw_status, raw, "poll {index}");
        assert_eq!(trace.events.len(), events, "poll {index}");
        assert_eq!(trace.carrier.as_deref(), Some("中通快递"));
        assert_eq!(trace.tracking_no, Some(format!("ZT{TID}")));
        assert!(trace.events.windows(2).all(|w| w[0].time <= w[1].time));
    }
    let trace = poll(&taobao, TID).await.unwrap();
    let newest = trace.events.last().unwrap();
    assert_eq!(newest.raw_code.as_deref(), Some("SIGNED"));
    assert_eq!(newest.time.to_rfc3339(), "2026-11-20T08:00:05+08:00");
    assert_eq!(fake.polls_of(TID), 7);
    assert_eq!(fake.polls_after_final(TID), 2);
    let steps: Vec<_> = fake.calls().iter().map(|call| call.step).collect();
    assert_eq!(steps, [0, 1, 2, 3, 4, 4, 4].map(Some));
    assert_clean(&fake);
}

#[tokio::test]
async fn a_ban_is_rate_limited_for_its_seconds_and_does_not_advance_the_journey() {
    let fake = gateway().await;
    fake.journey(TID);
    fake.fault(Fault::Ban { seconds: 5 }, 1);
    let taobao = good_adapter(&fake);
    match poll(&taobao, TID).await.unwrap_err() {
        ProviderError::RateLimited {
            retry_after,
            message,
        } => {
            assert_eq!(retry_after, Duration::from_secs(5));
            assert!(message.contains("App Call Limited"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let trace = poll(&taobao, TID).await.unwrap();
    assert_eq!(trace.status, Status::InfoReceived);
    let answered: Vec<_> = fake.calls().iter().map(|call| call.answered).collect();
    assert_eq!(answered, ["ban", "trace"]);
    assert_clean(&fake);
}

#[tokio::test]
async fn http_429_honours_retry_after() {
    let fake = gateway().await;
    fake.journey(TID);
    fake.fault(Fault::TooManyRequests { retry_after: 17 }, 1);
    match poll(&good_adapter(&fake), TID).await.unwrap_err() {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Duration::from_secs(17))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbled_answers_are_transient() {
    let fake = gateway().await;
    fake.journey(TID);
    let taobao = good_adapter(&fake);
    let faults = [
        Fault::Html,
        Fault::MalformedJson,
        Fault::Empty,
        Fault::Http(500),
        Fault::Http(502),
    ];
    for fault in faults {
        fake.fault(fault.clone(), 1);
        match poll(&taobao, TID).await {
            Err(ProviderError::Transient(message)) => {
                assert!(message.chars().count() < 300, "{fault:?}: {message}")
            }
            other => panic!("{fault:?} gave {other:?}"),
        }
    }
    // None of the faults consumed a step of the journey.
    assert_eq!(
        poll(&taobao, TID).await.unwrap().status,
        Status::InfoReceived
    );
    assert_eq!(poll(&taobao, TID).await.unwrap().status, Status::PickedUp);
    assert_clean(&fake);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transient() {
    let fake = gateway().await;
    fake.journey(TID);
    fake.fault(Fault::Stall { millis: 2_000 }, 1);
    let impatient = adapter_at(
        &fake.url,
        SECRET,
        SESSION,
        SignMethod::default(),
        Duration::from_millis(200),
    );
    let err = poll(&impatient, TID).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Transient(m) if m.contains("timed out")),
        "{err:?}"
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nowhere = adapter_at(
        &format!("http://127.0.0.1:{closed}/router/rest"),
        SECRET,
        SESSION,
        SignMethod::default(),
        Duration::from_secs(5),
    );
    let err = poll(&nowhere, TID).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_nineteen_digit_tid_round_trips_exactly() {
    let fake = gateway().await;
    let taobao = good_adapter(&fake);
    for tid in [
        1_234_567_890_123_456_789,
        9_223_372_036_854_775_807,
        9_007_199_254_740_993,
    ] {
        fake.journey(tid);
        // The adapter refuses an answer about another tid, so Ok means the tid came back intact.
        let trace = poll(&taobao, tid).await.unwrap();
        assert_eq!(trace.status, Status::InfoReceived);
        assert_eq!(trace.tracking_no, Some(format!("ZT{tid}")));
        assert_eq!(fake.calls().last().unwrap().tid, Some(tid));
        assert_eq!(fake.polls_of(tid), 1);
    }
    assert_clean(&fake);
}

#[tokio::test]
async fn an_answer_about_another_order_is_refused() {
    let fake = gateway().await;
    fake.script(
        TID,
        vec![fake_top::trace_response(TID + 1, "对方已签收", &[])],
    );
    let err = poll(&good_adapter(&fake), TID).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn a_non_numeric_order_id_never_reaches_the_gateway() {
    let fake = gateway().await;
    let err = good_adapter(&fake)
        .fetch(&request("E20261120-0001"))
        .await
        .unwrap_err();
    match err {
        ProviderError::Permanent(message) => {
            assert!(message.contains("numeric order id (tid)"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn scripted_bodies_cover_stations_and_errors() {
    let fake = gateway().await;
    fake.script(
        TID,
        vec![
            fake_top::trace_response(
                TID,
                "物流公司揽收成功",
                &[
                    ("2026-11-20 08:00:01", "已揽收", "GOT"),
                    (
                        "2026-11-20 08:00:02",
                        "快件已到达菜鸟驿站，请凭取件码取件",
                        "STA_INBOUND",
                    ),
                ],
            ),
            fake_top::trace_response(
                TID,
                "物流公司揽收成功",
                &[("2026-11-20 08:00:01", "快件已存入快递柜", "")],
            ),
            fake_top::error_response(27, "Invalid session", "", ""),
            fake_top::error_response(
                15,
                "Remote service error",
                "isp.top-remote-connection-timeout",
                "",
            ),
            fake_top::error_response(41, "Invalid Arguments", "", ""),
        ],
    );
    let taobao = good_adapter(&fake);
    let station = poll(&taobao, TID).await.unwrap();
    assert_eq!(station.status, Status::AvailableForPickup);
    let locker = poll(&taobao, TID).await.unwrap();
    assert_eq!(locker.status, Status::AvailableForPickup);
    assert_eq!(locker.events[0].raw_code, None);
    let err = poll(&taobao, TID).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthExpired(_)), "{err:?}");
    let err = poll(&taobao, TID).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    let err = poll(&taobao, TID).await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent(_)), "{err:?}");
    assert_clean(&fake);
}

#[tokio::test]
async fn every_call_limit_code_pauses_for_its_ban_or_the_default() {
    let fake = gateway().await;
    let mut bodies = Vec::new();
    for code in 4..=8 {
        bodies.push(fake_top::error_response(
            code,
            "Call Limited",
            "accesscontrol.limited-by-api-access-count",
            "This ban will last for 120 more seconds",
        ));
        bodies.push(fake_top::error_response(code, "Call Limited", "", ""));
    }
    bodies.push(fake_top::error_response(
        15,
        "Remote service error",
        "accesscontrol.limited-by-app-access-count",
        "This ban will last for 7 more seconds",
    ));
    let expected: Vec<u64> = (4..=8).flat_map(|_| [120, 60]).chain([7]).collect();
    fake.script(TID, bodies);
    let taobao = good_adapter(&fake);
    for want in expected {
        match poll(&taobao, TID).await.unwrap_err() {
            ProviderError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Duration::from_secs(want))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_clean(&fake);
}
