//! A fake HTTP SMS gateway on loopback that answers the way Tencent Cloud SMS's `SendSms` does
//! (API 3.0, https://www.tencentcloud.com/document/product/382/40536): HTTP 200 whatever
//! happened, with the verdict in the body. A message taken is
//! `{"Response":{"SendStatusSet":[{"Code":"Ok",…}],"RequestId":"…"}}`; a message refused has
//! another `Code` there (`LimitExceeded.PhoneNumberDailyLimit`, …); a request it cannot read gets
//! `{"Response":{"Error":{"Code":"InvalidParameter",…},"RequestId":"…"}}`, still with 200.
//!
//! It takes the JSON body [`FakeSmsGateway::channel_config`] writes (Tencent's own request is
//! signed with TC3, which a generic gateway channel does not do) and answers scripted codes,
//! `Ok` by default.

use std::collections::VecDeque;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

const REQUEST_ID: &str = "a0f1d2c3-0000-4b5c-8d9e-0123456789ab";

struct Inner {
    script: VecDeque<String>,
    /// Every request body that parsed, in arrival order.
    calls: Vec<Value>,
    /// The headers of every request, in arrival order.
    headers: Vec<axum::http::HeaderMap>,
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
            script: VecDeque::new(),
            calls: Vec::new(),
            headers: Vec::new(),
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

    /// A `[channels.sms]` section for this gateway with the success rule Tencent's answers need,
    /// quiet hours off.
    pub fn channel_config(&self) -> String {
        format!(
            "[channels.sms]\nkind = \"http\"\nurl = \"{}\"\n\
             body = '{{{{\"PhoneNumberSet\":[\"+86{{phone}}\"],\"TemplateId\":\"1110\",\"TemplateParamSet\":[\"{{order_id}}\",\"{{status}}\"]}}}}'\n\
             success_pointer = \"/Response/SendStatusSet/0/Code\"\nsuccess_value = \"Ok\"\n\
             quiet_hours = \"off\"\n",
            self.url
        )
    }

    /// The next `n` messages are answered `code` instead of `Ok`.
    pub fn reply(&self, code: &str, n: usize) {
        self.shared
            .lock()
            .script
            .extend(std::iter::repeat_n(code.to_owned(), n));
    }

    pub fn calls(&self) -> Vec<Value> {
        self.shared.lock().calls.clone()
    }

    /// The value of header `name` in each request that reached the gateway (empty when absent).
    pub fn header(&self, name: &str) -> Vec<String> {
        self.shared
            .lock()
            .headers
            .iter()
            .map(|h| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

async fn handle(
    State(shared): State<Shared>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    shared.lock().headers.push(headers);
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let phone = request
        .as_ref()
        .and_then(|r| r.pointer("/PhoneNumberSet/0"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (Some(request), Some(phone)) = (request, phone) else {
        return axum::Json(json!({"Response": {
            "Error": {"Code": "InvalidParameter", "Message": "PhoneNumberSet is missing"},
            "RequestId": REQUEST_ID,
        }}))
        .into_response();
    };
    let mut inner = shared.lock();
    inner.calls.push(request);
    let code = inner.script.pop_front().unwrap_or_else(|| "Ok".to_owned());
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
