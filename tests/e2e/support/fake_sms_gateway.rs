//! A fake HTTP SMS gateway on loopback that answers the way Tencent Cloud SMS's `SendSms` does
//! (API 3.0, https://www.tencentcloud.com/document/product/382/40536): HTTP 200 whatever
//! happened, with the verdict in the body. A message taken is
//! `{"Response":{"SendStatusSet":[{"Code":"Ok",…}],"RequestId":"…"}}`; a message refused has
//! another `Code` there (`LimitExceeded.PhoneNumberDailyLimit`, …); a request it cannot read gets
//! `{"Response":{"Error":{"Code":"InvalidParameter",…},"RequestId":"…"}}`, still with 200.
//!
//! It takes the JSON body [`BODY`] describes (Tencent's own request is signed with TC3, which a
//! generic gateway channel does not do) and answers the codes queued in its script, `Ok` by
//! default.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::fake::script::{Log, Script};

const REQUEST_ID: &str = "a0f1d2c3-0000-4b5c-8d9e-0123456789ab";

/// The channel's `body` template for this gateway: Tencent's `SendSms` fields, the `{{`/`}}` of
/// the JSON object escaped from the template's own placeholders.
pub const BODY: &str = r#"{{"PhoneNumberSet":["+86{phone}"],"TemplateId":"1110","TemplateParamSet":["{order_id}","{status}"]}}"#;
/// Where in Tencent's answer the channel finds the verdict, and the verdict that means sent.
pub const SUCCESS_POINTER: &str = "/Response/SendStatusSet/0/Code";
pub const SUCCESS_VALUE: &str = "Ok";

/// One request that reached the gateway.
#[derive(Debug, Clone)]
struct Request {
    headers: HeaderMap,
    /// The body, when it parsed and named a phone: a message the gateway answered for.
    message: Option<Value>,
}

struct Inner {
    /// The codes queued for the next messages.
    script: Script<(), String>,
    log: Log<Request>,
}

type Shared = super::fake::Shared<Inner>;

pub struct FakeSmsGateway {
    /// Where the channel posts: `http://127.0.0.1:PORT/sms/send`.
    pub url: String,
    shared: Shared,
    _server: super::fake::Server,
}

impl FakeSmsGateway {
    pub async fn start() -> FakeSmsGateway {
        let shared = Shared::new(Inner {
            script: Script::new(),
            log: Log::new(),
        });
        let app = Router::new()
            .route("/sms/send", post(handle))
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake SMS gateway").await;
        FakeSmsGateway {
            url: format!("{}/sms/send", server.base),
            shared,
            _server: server,
        }
    }

    /// The next `n` messages are answered `code` instead of `Ok`.
    pub fn reply(&self, code: &str, n: usize) {
        self.shared.lock().script.answer_next(n, code.to_owned());
    }

    /// The body of every message the gateway answered for, in arrival order.
    pub fn calls(&self) -> Vec<Value> {
        let calls = self.shared.lock().log.calls();
        calls.into_iter().filter_map(|r| r.message).collect()
    }

    /// The value of header `name` in each request that reached the gateway (empty when absent).
    pub fn header(&self, name: &str) -> Vec<String> {
        let calls = self.shared.lock().log.calls();
        calls
            .iter()
            .map(|r| {
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let phone = request
        .as_ref()
        .and_then(|r| r.pointer("/PhoneNumberSet/0"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (Some(request), Some(phone)) = (request, phone) else {
        shared.lock().log.record(Request {
            headers,
            message: None,
        });
        return axum::Json(json!({"Response": {
            "Error": {"Code": "InvalidParameter", "Message": "PhoneNumberSet is missing"},
            "RequestId": REQUEST_ID,
        }}))
        .into_response();
    };
    let mut inner = shared.lock();
    inner.log.record(Request {
        headers,
        message: Some(request),
    });
    let code = inner
        .script
        .take_next()
        .unwrap_or_else(|| SUCCESS_VALUE.to_owned());
    let message = match code.as_str() {
        "Ok" => "send success".to_owned(),
        // The real service names the number in some refusals; the channel must mask it.
        "LimitExceeded.PhoneNumberDailyLimit" => {
            format!("the number {phone} exceeds the daily limit")
        }
        other => format!("scripted {other}"),
    };
    axum::Json(json!({"Response": {
        "SendStatusSet": [{
            "SerialNo": "5000:104571113",
            "PhoneNumber": phone,
            "Fee": 1,
            "SessionContext": "",
            "Code": code,
            "Message": message,
            "IsoCode": "CN",
        }],
        "RequestId": REQUEST_ID,
    }}))
    .into_response()
}
