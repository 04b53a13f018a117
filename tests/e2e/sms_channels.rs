//! The SMS channels over HTTP: the Aliyun channel against the fake Aliyun endpoint, and the
//! generic gateway channel against a loopback receiver; then both through the real daemon, as
//! `shipwatch outbox` shows them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use shipwatch::domain::Secret;
use shipwatch::notify::sms_aliyun::{self, AliyunSms, AliyunSmsConfig};
use shipwatch::notify::sms_http::{HttpSms, HttpSmsConfig, SuccessRule};
use shipwatch::notify::{Channel, ChannelKind, DeliveryError, Outgoing, SmsMessage};

use crate::support::app::TestApp;
use crate::support::config;
use crate::support::fake;
use crate::support::fake_aliyun_sms::{self, FakeAliyunSms};
use crate::support::fake_sms_gateway::FakeSmsGateway;
use crate::support::fake_top;

const KEY_ID: &str = "LTAI5tFakeKeyForTests";
const KEY_SECRET: &str = "fake/secret*with~odd chars";
const SIGN_NAME: &str = "船运通知";
const PHONE: &str = "+8613812345678";
const MAINLAND: &str = "13812345678";

async fn fake() -> FakeAliyunSms {
    FakeAliyunSms::start(KEY_ID, KEY_SECRET, SIGN_NAME).await
}

fn aliyun(fake: &FakeAliyunSms, secret: &str) -> AliyunSms {
    aliyun_at(fake.url.clone(), secret)
}

/// The channel as `aliyun` builds it, sending to `endpoint`.
fn aliyun_at(endpoint: String, secret: &str) -> AliyunSms {
    AliyunSms::new(
        AliyunSmsConfig {
            endpoint,
            access_key_id: KEY_ID.to_owned(),
            access_key_secret: Secret::new(secret),
            sign_name: SIGN_NAME.to_owned(),
            template_code: Some("SMS_100000001".to_owned()),
            params: default_params(),
            param_max_chars: sms_aliyun::DEFAULT_PARAM_MAX_CHARS,
            timeout: Duration::from_secs(5),
        },
        shipwatch::notify::no_redirect_client().unwrap(),
    )
}

fn default_params() -> Vec<String> {
    sms_aliyun::DEFAULT_PARAMS.map(str::to_owned).to_vec()
}

fn message(template_code: Option<&str>) -> SmsMessage {
    let params: BTreeMap<String, String> = [
        ("order_id", "E20240501-0001"),
        ("tracking_no", "YT7512345678901"),
        ("carrier", "圆通"),
        ("status", "delivered"),
        ("event", "您的快件已签收,签收人:\"前台\"\n感谢使用"),
        ("event_time", "2024-05-01 16:00:00"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    SmsMessage {
        text: "【船运通知】包裹已签收,感谢您的信任。".to_owned(),
        params,
        template_code: template_code.map(str::to_owned),
    }
}

fn outgoing(message: &SmsMessage) -> Outgoing {
    Outgoing {
        public_id: "ntf_sms_0001".to_owned(),
        payload: serde_json::to_string(message).unwrap(),
        recipient: Some(PHONE.to_owned()),
    }
}

/// A stopped channel: the message waits, and the attempt does not count.
fn paused(result: Result<(), DeliveryError>) -> (String, Option<Duration>) {
    match result {
        Err(DeliveryError::Paused {
            message,
            retry_after,
        }) => (message, Some(retry_after)),
        other => panic!("expected the channel to pause, got {other:?}"),
    }
}

fn transient(result: Result<(), DeliveryError>) -> (String, Option<Duration>) {
    match result {
        Err(DeliveryError::Transient {
            message,
            retry_after,
        }) => (message, retry_after),
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

fn permanent(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Permanent(message)) => message,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

fn assert_no_phone(text: &str) {
    assert!(
        !text.contains(MAINLAND) && !text.contains(PHONE),
        "full phone number in {text:?}"
    );
}

/// Log lines written while the guard lives, on this thread (tokio tests run on one).
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (Logs(buffer), guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn aliyun_ok_sends_the_signed_request_with_the_right_params() {
    let (logs, _guard) = Logs::capture();
    let fake = fake().await;
    let channel = aliyun(&fake, KEY_SECRET);
    assert_eq!(channel.kind(), ChannelKind::Sms);

    let with_own_template = message(Some("SMS_200000002"));
    channel
        .deliver(&outgoing(&with_own_template))
        .await
        .unwrap();
    // The second attempt needs a fresh nonce, or the fake refuses it as a replay.
    channel.deliver(&outgoing(&message(None))).await.unwrap();

    assert_eq!(fake.signature_failures(), 0);
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(call.code, "OK");
        assert_eq!(call.param("Action"), Some("SendSms"));
        assert_eq!(call.param("Version"), Some("2017-05-25"));
        assert_eq!(call.param("PhoneNumbers"), Some(MAINLAND));
        assert_eq!(call.param("SignName"), Some(SIGN_NAME));
        assert_eq!(call.param("AccessKeyId"), Some(KEY_ID));
        let params = call.template_param().unwrap();
        assert_eq!(params["order_id"], "E20240501-0001");
        assert_eq!(params["carrier"], "圆通");
        assert_eq!(params["event"], "您的快件已签收,签收人:\"前台\"\n感谢使用");
    }
    assert_eq!(calls[0].param("TemplateCode"), Some("SMS_200000002"));
    assert_eq!(calls[1].param("TemplateCode"), Some("SMS_100000001"));
    assert_ne!(
        calls[0].param("SignatureNonce"),
        calls[1].param("SignatureNonce")
    );
    let logs = logs.text();
    assert!(logs.contains("SMS accepted by Aliyun"), "{logs}");
    assert_no_phone(&logs);
}

#[tokio::test]
async fn aliyun_rate_limit_is_transient_with_a_delay() {
    let fake = fake().await;
    fake.reply("isv.BUSINESS_LIMIT_CONTROL", 1);
    let channel = aliyun(&fake, KEY_SECRET);
    let (text, retry_after) = transient(channel.deliver(&outgoing(&message(None))).await);
    assert!(text.contains("isv.BUSINESS_LIMIT_CONTROL"), "{text}");
    assert_eq!(retry_after, Some(Duration::from_secs(60)));
    assert_no_phone(&text);
    // A rate limit concerns one number: the channel keeps going.
    channel.deliver(&outgoing(&message(None))).await.unwrap();
    assert_eq!(fake.calls().len(), 2);
}

#[tokio::test]
async fn aliyun_rejected_number_is_permanent_and_masked() {
    let fake = fake().await;
    fake.reply("isv.MOBILE_NUMBER_ILLEGAL", 1);
    let channel = aliyun(&fake, KEY_SECRET);
    let reason = permanent(channel.deliver(&outgoing(&message(None))).await);
    assert!(reason.contains("isv.MOBILE_NUMBER_ILLEGAL"), "{reason}");
    // The fake echoed the number in its Message; the reason carries only the mask.
    assert!(reason.contains("138****5678"), "{reason}");
    assert_no_phone(&reason);

    // A number that is not one is refused before any request.
    let mut bad = outgoing(&message(None));
    bad.recipient = Some("138-abc-5678".to_owned());
    let reason = permanent(channel.deliver(&bad).await);
    assert!(reason.contains("not a phone number"), "{reason}");
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn aliyun_without_a_template_is_permanent() {
    let fake = fake().await;
    let mut config = AliyunSmsConfig {
        endpoint: fake.url.clone(),
        access_key_id: KEY_ID.to_owned(),
        access_key_secret: Secret::new(KEY_SECRET),
        sign_name: SIGN_NAME.to_owned(),
        template_code: None,
        params: default_params(),
        param_max_chars: sms_aliyun::DEFAULT_PARAM_MAX_CHARS,
        timeout: Duration::from_secs(5),
    };
    let channel = AliyunSms::new(
        config.clone(),
        shipwatch::notify::no_redirect_client().unwrap(),
    );
    let reason = permanent(channel.deliver(&outgoing(&message(None))).await);
    assert!(reason.contains("template_code"), "{reason}");
    assert!(fake.calls().is_empty());

    config.template_code = Some("SMS_100000001".to_owned());
    config.sign_name = "别的签名".to_owned();
    let channel = AliyunSms::new(config, shipwatch::notify::no_redirect_client().unwrap());
    let reason = permanent(channel.deliver(&outgoing(&message(None))).await);
    assert!(reason.contains("isv.SMS_SIGNATURE_ILLEGAL"), "{reason}");
}

#[tokio::test]
async fn aliyun_out_of_credit_stops_the_channel_and_alerts_once() {
    let (logs, _guard) = Logs::capture();
    let fake = fake().await;
    fake.reply("isv.AMOUNT_NOT_ENOUGH", 1);
    let channel = aliyun(&fake, KEY_SECRET);

    let (first, retry_after) = paused(channel.deliver(&outgoing(&message(None))).await);
    assert!(first.contains("isv.AMOUNT_NOT_ENOUGH"), "{first}");
    // docs/notifications.md: a stopped channel sends nothing for one hour.
    assert_eq!(retry_after, Some(Duration::from_secs(60 * 60)));

    // While stopped, attempts fail at once without reaching Aliyun.
    for _ in 0..3 {
        let (again, retry_after) = paused(channel.deliver(&outgoing(&message(None))).await);
        assert_eq!(again, first);
        let left = retry_after.unwrap();
        assert!(
            left <= sms_aliyun::PAUSE && left > sms_aliyun::PAUSE - Duration::from_secs(60),
            "{left:?}"
        );
    }
    assert_eq!(fake.calls().len(), 1);

    let logs = logs.text();
    assert_eq!(logs.matches("SMS CHANNEL STOPPED").count(), 1, "{logs}");
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(
        logs.contains("[channels.sms]") || logs.contains("top up"),
        "{logs}"
    );
    assert_no_phone(&logs);
}

/// A reload lifts a stop at once (`resume`): the next message goes to Aliyun without waiting
/// for the pause to end. Still out of credit, it stops again, with one more alert; topped up,
/// the next message after a reload goes through.
#[tokio::test]
async fn aliyun_is_tried_again_at_once_after_a_reload() {
    let (logs, _guard) = Logs::capture();
    let fake = fake().await;
    fake.reply("isv.AMOUNT_NOT_ENOUGH", 2);
    let channel = aliyun(&fake, KEY_SECRET);

    paused(channel.deliver(&outgoing(&message(None))).await);
    paused(channel.deliver(&outgoing(&message(None))).await);
    assert_eq!(fake.calls().len(), 1);

    channel.resume();
    let (_, retry_after) = paused(channel.deliver(&outgoing(&message(None))).await);
    assert_eq!(retry_after, Some(sms_aliyun::PAUSE), "a new stop, whole");
    assert_eq!(fake.calls().len(), 2);
    assert_eq!(logs.text().matches("SMS CHANNEL STOPPED").count(), 2);

    channel.resume();
    channel.deliver(&outgoing(&message(None))).await.unwrap();
    assert_eq!(fake.calls().len(), 3);
    assert_eq!(fake.accepted(), 1);
}

#[tokio::test]
async fn aliyun_wrong_secret_stops_the_channel() {
    let (logs, _guard) = Logs::capture();
    let fake = fake().await;
    let channel = aliyun(&fake, "not the secret");

    let (text, retry_after) = paused(channel.deliver(&outgoing(&message(None))).await);
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(text.contains("access_key_secret"), "{text}");
    assert_eq!(retry_after, Some(sms_aliyun::PAUSE));
    assert_eq!(fake.signature_failures(), 1);

    paused(channel.deliver(&outgoing(&message(None))).await);
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(fake.signature_failures(), 1);
    let logs = logs.text();
    assert_eq!(logs.matches("SMS CHANNEL STOPPED").count(), 1, "{logs}");
    assert!(!logs.contains("not the secret"), "{logs}");
}

#[tokio::test]
async fn aliyun_unknown_key_id_stops_the_channel() {
    let fake = fake().await;
    let channel = AliyunSms::new(
        AliyunSmsConfig {
            endpoint: fake.url.clone(),
            access_key_id: "LTAI_unknown".to_owned(),
            access_key_secret: Secret::new(KEY_SECRET),
            sign_name: SIGN_NAME.to_owned(),
            template_code: Some("SMS_100000001".to_owned()),
            params: default_params(),
            param_max_chars: sms_aliyun::DEFAULT_PARAM_MAX_CHARS,
            timeout: Duration::from_secs(5),
        },
        shipwatch::notify::no_redirect_client().unwrap(),
    );
    let (text, retry_after) = paused(channel.deliver(&outgoing(&message(None))).await);
    assert!(text.contains("InvalidAccessKeyId.NotFound"), "{text}");
    assert_eq!(retry_after, Some(sms_aliyun::PAUSE));
}

#[tokio::test]
async fn aliyun_unreachable_is_transient_without_the_number() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let channel = aliyun_at(endpoint, KEY_SECRET);
    let (text, retry_after) = transient(channel.deliver(&outgoing(&message(None))).await);
    assert!(text.contains("could not connect"), "{text}");
    assert_eq!(retry_after, None);
    assert_no_phone(&text);
    // Not a stop: the next message tries again.
    transient(channel.deliver(&outgoing(&message(None))).await);
}

/// A stand-in that answers every request at `path` with the status `code` and `body`, as a proxy,
/// a firewall or a gateway's error page does; `name` says which stand-in failed, should it.
async fn answering(
    path: &str,
    code: u16,
    body: &'static str,
    name: &'static str,
) -> (StatusCode, fake::Server) {
    let status = StatusCode::from_u16(code).unwrap();
    let router = Router::new().route(path, any(move || async move { (status, body) }));
    (status, fake::serve(router, name).await)
}

/// An answer that is not Aliyun's JSON (a proxy's or a firewall's page, an empty body) is sorted
/// by its HTTP status: a 200, 408, 429 or 5xx is retried (Aliyun or the way to it may be better
/// later), any other refusal is final. The message quotes the start of the body, or says it was
/// empty, and never the number.
#[tokio::test]
async fn aliyun_answers_that_are_not_json_are_sorted_by_their_status() {
    let cases: [(u16, &str, bool); 5] = [
        (200, "<html>upgrade in progress</html>", true),
        (408, "request timeout", true),
        (429, "", true),
        (503, "", true),
        (403, "<html>blocked by the firewall</html>", false),
    ];
    for (code, body, retried) in cases {
        let (status, stand_in) = answering("/", code, body, "the stand-in for Aliyun").await;
        let result = aliyun_at(format!("{}/", stand_in.base), KEY_SECRET)
            .deliver(&outgoing(&message(None)))
            .await;
        let text = if retried {
            let (text, retry_after) = transient(result);
            assert_eq!(retry_after, None, "{code}");
            text
        } else {
            permanent(result)
        };
        let quoted = if body.is_empty() { "empty body" } else { body };
        assert!(
            text.starts_with(&format!("Aliyun SMS answered {status}: {quoted}")),
            "{code}: {text}"
        );
        assert_no_phone(&text);
    }
}

/// The fake itself refuses replays and stale requests, so the tests above prove the channel
/// sends fresh ones.
#[tokio::test]
async fn the_fake_refuses_reused_nonces_and_stale_timestamps() {
    let fake = fake().await;
    let http = reqwest::Client::new();
    let send = |timestamp: String, nonce: &'static str| {
        let params: BTreeMap<String, String> = [
            ("Action", "SendSms"),
            ("Version", "2017-05-25"),
            ("Format", "JSON"),
            ("AccessKeyId", KEY_ID),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
            ("Timestamp", timestamp.as_str()),
            ("RegionId", "cn-hangzhou"),
            ("PhoneNumbers", MAINLAND),
            ("SignName", SIGN_NAME),
            ("TemplateCode", "SMS_100000001"),
            ("TemplateParam", r#"{"order_id":"E1"}"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let url = format!(
            "{}?{}&Signature={}",
            fake.url,
            sms_aliyun::canonical_query(&params),
            sms_aliyun::percent_encode(&sms_aliyun::sign(&params, KEY_SECRET))
        );
        let http = http.clone();
        async move {
            let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            body["Code"].as_str().unwrap().to_owned()
        }
    };
    let now = chrono::Utc::now();
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(send(stamp(now), "nonce-a").await, "OK");
    assert_eq!(send(stamp(now), "nonce-a").await, "SignatureNonceUsed");
    assert_eq!(
        send(stamp(now - chrono::Duration::minutes(20)), "nonce-b").await,
        "InvalidTimeStamp.Expired"
    );
    assert_eq!(fake.signature_failures(), 0);
}

/// What the gateway receiver saw.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver that records every request and answers with `status` (and `Retry-After: 30` when
/// the status is 503) and a body that echoes the number, as some vendors do.
async fn gateway(status: StatusCode) -> (String, Arc<Mutex<Vec<Received>>>) {
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = seen.clone();
    let router = Router::new().route(
        "/sms/send",
        any(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
                sink.lock().unwrap().push(Received {
                    method,
                    uri,
                    headers,
                    body,
                });
                let mut response =
                    (status, format!("{{\"error\":\"rejected {MAINLAND}\"}}")).into_response();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    response
                        .headers_mut()
                        .insert("retry-after", "30".parse().unwrap());
                }
                response
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (
        format!("http://{addr}/sms/send?apikey=sk-in-the-query"),
        seen,
    )
}

fn http_sms(url: String) -> HttpSms {
    HttpSms::new(
        HttpSmsConfig {
            url,
            headers: vec![
                (
                    "Authorization".to_owned(),
                    Secret::new("Bearer gw-token-123"),
                ),
                ("X-Tenant".to_owned(), Secret::new("shop-7")),
            ],
            body: r#"{{"to":"{phone}","content":"{text}","vars":{{"order":"{order_id}","event":"{event}"}}}}"#
                .to_owned(),
            timeout: Duration::from_secs(5),
            ..HttpSmsConfig::default()
        },
        shipwatch::notify::no_redirect_client().unwrap(),
    )
}

#[tokio::test]
async fn gateway_gets_the_rendered_json_body_and_headers() {
    let (url, seen) = gateway(StatusCode::OK).await;
    let channel = http_sms(url);
    assert_eq!(channel.kind(), ChannelKind::Sms);
    let sms = message(None);
    channel.deliver(&outgoing(&sms)).await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let received = &seen[0];
    assert_eq!(received.method, Method::POST);
    assert_eq!(received.uri.query(), Some("apikey=sk-in-the-query"));
    let header = |name: &str| received.headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("authorization"), "Bearer gw-token-123");
    assert_eq!(header("x-tenant"), "shop-7");
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(
        header("user-agent"),
        concat!("shipwatch/", env!("CARGO_PKG_VERSION"))
    );
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "to": PHONE,
            "content": sms.text,
            "vars": {"order": "E20240501-0001", "event": sms.params["event"]},
        })
    );
}

#[tokio::test]
async fn gateway_5xx_is_transient_with_retry_after() {
    let (url, _) = gateway(StatusCode::INTERNAL_SERVER_ERROR).await;
    let (text, retry_after) = transient(http_sms(url).deliver(&outgoing(&message(None))).await);
    assert!(text.contains("500"), "{text}");
    assert_eq!(retry_after, None);
    assert_no_phone(&text);
    assert!(!text.contains("sk-in-the-query"), "{text}");

    let (url, _) = gateway(StatusCode::SERVICE_UNAVAILABLE).await;
    let (text, retry_after) = transient(http_sms(url).deliver(&outgoing(&message(None))).await);
    assert!(text.contains("503"), "{text}");
    assert_eq!(retry_after, Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn gateway_4xx_is_permanent_with_the_body_masked() {
    let (url, seen) = gateway(StatusCode::BAD_REQUEST).await;
    // The gateway is named by its URL with the query's values masked.
    let shown = url.replace("sk-in-the-query", "***");
    let reason = permanent(http_sms(url).deliver(&outgoing(&message(None))).await);
    assert!(
        reason.starts_with(&format!("SMS gateway {shown} answered 400 Bad Request")),
        "{reason}"
    );
    assert!(reason.contains("rejected 138****5678"), "{reason}");
    assert_no_phone(&reason);
    assert!(!reason.contains("sk-in-the-query"), "{reason}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A status outside the success range: a timeout, a rate limit, a server's trouble and a 2xx the
/// rule does not count are retried, any other 4xx is dead. The message quotes the body's start,
/// or says it was empty.
#[tokio::test]
async fn gateway_answers_outside_the_success_range_are_sorted_by_their_status() {
    let cases: [(u16, &str, bool); 6] = [
        (202, "queued", true),
        (408, "", true),
        (429, "slow down", true),
        (502, "<html>bad gateway</html>", true),
        (401, "", false),
        (404, "no such route", false),
    ];
    for (code, body, retried) in cases {
        let (status, stand_in) = answering("/send", code, body, "the stand-in SMS gateway").await;
        let channel = HttpSms::new(
            HttpSmsConfig {
                url: format!("{}/send", stand_in.base),
                body: "to={phone}&msg={text}".to_owned(),
                success: SuccessRule::parse(Some("200"), None, None).unwrap(),
                ..HttpSmsConfig::default()
            },
            shipwatch::notify::no_redirect_client().unwrap(),
        );

        let result = channel.deliver(&outgoing(&message(None))).await;
        let text = if retried {
            transient(result).0
        } else {
            permanent(result)
        };
        let quoted = if body.is_empty() { "empty body" } else { body };
        assert_eq!(
            text,
            format!(
                "SMS gateway {}/send answered {status} for +86****5678: {quoted}",
                stand_in.base
            ),
            "{code}"
        );
    }
}

#[tokio::test]
async fn gateway_with_a_bad_template_is_permanent_before_sending() {
    let (url, seen) = gateway(StatusCode::OK).await;
    let channel = HttpSms::new(
        HttpSmsConfig {
            url,
            body: r#"{{"to":"{phone}","x":"{parcel}"}}"#.to_owned(),
            ..HttpSmsConfig::default()
        },
        shipwatch::notify::no_redirect_client().unwrap(),
    );
    let reason = permanent(channel.deliver(&outgoing(&message(None))).await);
    assert!(reason.contains("{parcel}"), "{reason}");
    assert!(seen.lock().unwrap().is_empty());
}

/// The channel's own limit raised past the template's (as after an operator set it too high):
/// Aliyun refuses, and the reason says what to change.
#[tokio::test]
async fn aliyun_param_length_limit_is_dead_with_the_explanation() {
    let fake = fake().await;
    let channel = AliyunSms::new(
        AliyunSmsConfig {
            endpoint: fake.url.clone(),
            access_key_id: KEY_ID.to_owned(),
            access_key_secret: Secret::new(KEY_SECRET),
            sign_name: SIGN_NAME.to_owned(),
            template_code: Some("SMS_100000001".to_owned()),
            params: vec!["event".to_owned()],
            param_max_chars: 500,
            timeout: Duration::from_secs(5),
        },
        shipwatch::notify::no_redirect_client().unwrap(),
    );
    let mut sms = message(None);
    sms.params.insert("event".to_owned(), "派".repeat(200));
    let reason = permanent(channel.deliver(&outgoing(&sms)).await);
    assert!(reason.contains("isv.PARAM_LENGTH_LIMIT"), "{reason}");
    assert!(
        reason.contains("param_max_chars = 500") && reason.contains("lift"),
        "{reason}"
    );
    assert_no_phone(&reason);

    // With the default limit the same message goes through, its event cut to fit.
    let channel = aliyun(&fake, KEY_SECRET);
    channel.deliver(&outgoing(&sms)).await.unwrap();
    let sent = fake.calls().last().unwrap().template_param().unwrap();
    let event = sent["event"].as_str().unwrap();
    assert_eq!(event.chars().count(), fake_aliyun_sms::PARAM_MAX_CHARS);
    assert!(event.ends_with('…'), "{event}");
}

// ---- through the daemon ------------------------------------------------------------------------

const TID: u64 = 7_300_000_000_000_000_001;

/// Long enough for a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(30);

/// An app with `sms` as its SMS channel, tracking [`TID`] with a phone, whose trace goes straight
/// to signed with `event` as the newest event: one status change, one SMS.
async fn one_sms(sms: config::Channel, event: &str) -> TestApp {
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(sms)
        .start()
        .await;
    app.top.script(
        TID,
        vec![fake_top::trace_response(
            TID,
            "对方已签收",
            &[("2026-11-20 08:00:05", event, "SIGNED")],
        )],
    );
    app.cli_ok(&[
        "add",
        &TID.to_string(),
        "--tier",
        "high",
        "--phone",
        MAINLAND,
    ]);
    app
}

fn sms_rows(app: &TestApp) -> Vec<serde_json::Value> {
    app.outbox(None)
        .into_iter()
        .filter(|n| n["channel"] == "sms")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_system_error_is_retried_and_sent_on_the_second_attempt() {
    let aliyun = fake().await;
    aliyun.reply("isv.SYSTEM_ERROR", 1);
    let app = one_sms(config::Channel::aliyun_sms(&aliyun), "【上海市】快件已签收").await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the SMS is sent", LIMIT, || {
        sms_rows(&app).first().is_some_and(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());

    let row = &sms_rows(&app)[0];
    assert_eq!(row["attempts"], 2, "{row}");
    let codes: Vec<String> = aliyun.calls().into_iter().map(|c| c.code).collect();
    assert_eq!(codes, ["isv.SYSTEM_ERROR", "OK"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_gets_only_the_template_variables_with_a_long_event_cut_to_fit() {
    let aliyun = fake().await;
    // A carrier's text of 200 characters: far past what a template variable takes.
    let event =
        "快件已到达【上海浦东新区张江高科技园区分部】，派件员正在派送途中，请保持电话畅通。"
            .repeat(5);
    let event: String = event.chars().take(200).collect();
    assert_eq!(event.chars().count(), 200);
    let sms = config::Channel::aliyun_sms(&aliyun).params(&["order_id", "event"]);
    let app = one_sms(sms, &event).await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the SMS is sent", LIMIT, || {
        sms_rows(&app).first().is_some_and(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());

    assert_eq!(sms_rows(&app)[0]["attempts"], 1);
    let calls = aliyun.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].code, "OK");
    let sent = calls[0].template_param().unwrap();
    let keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["event", "order_id"]);
    assert_eq!(sent["order_id"], TID.to_string());
    let cut = sent["event"].as_str().unwrap();
    assert_eq!(cut.chars().count(), fake_aliyun_sms::PARAM_MAX_CHARS);
    let kept: String = event
        .chars()
        .take(fake_aliyun_sms::PARAM_MAX_CHARS - 1)
        .collect();
    assert_eq!(cut, format!("{kept}…"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refusing_in_a_200_body_fails_each_attempt_then_dies_never_sent() {
    let gateway = FakeSmsGateway::start().await;
    gateway.reply("LimitExceeded.PhoneNumberDailyLimit", 10);
    let app = one_sms(
        config::Channel::sms_gateway(&gateway),
        "【上海市】快件已签收",
    )
    .await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the SMS is dead", LIMIT, || {
        sms_rows(&app).first().is_some_and(|n| n["state"] == "dead")
    })
    .await;
    assert!(daemon.terminate().success());

    let row = &sms_rows(&app)[0];
    assert_eq!(row["attempts"], 3, "{row}");
    assert!(row["sent_at"].is_null(), "{row}");
    let reason = row["last_error"].as_str().unwrap();
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
    assert!(
        reason.contains("200 OK") && reason.contains("refused"),
        "{reason}"
    );
    assert!(
        reason.contains(
            r#"/Response/SendStatusSet/0/Code is "LimitExceeded.PhoneNumberDailyLimit", not "Ok""#
        ),
        "{reason}"
    );
    assert_no_phone(reason);
    assert!(reason.contains("138****5678"), "{reason}");
    assert_eq!(gateway.calls().len(), 3);
    assert!(
        app.outbox(Some("sent"))
            .iter()
            .all(|n| n["channel"] != "sms")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_saying_ok_in_the_body_is_sent() {
    let gateway = FakeSmsGateway::start().await;
    let app = one_sms(
        config::Channel::sms_gateway(&gateway),
        "【上海市】快件已签收",
    )
    .await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the SMS is sent", LIMIT, || {
        sms_rows(&app).first().is_some_and(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());

    assert_eq!(sms_rows(&app)[0]["attempts"], 1);
    let calls = gateway.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["PhoneNumberSet"][0], format!("+86{MAINLAND}"));
    assert_eq!(calls[0]["TemplateParamSet"][0], TID.to_string());
}
