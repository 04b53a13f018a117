//! A fake Kuaidi100 real-time query endpoint on loopback. It speaks the Kuaidi100 wire format and
//! checks each signature with its own MD5 code over the exact `param` received, so that a signing
//! or serialisation bug in the adapter cannot hide behind the same bug in the fake. What it
//! answers, and the count of calls, is the shared script core's; this file keeps Kuaidi100's
//! requests, signatures and answers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::any;
use md5::{Digest, Md5};
use serde_json::{Value, json};

use super::fake::script::{Log, Next, Script};
use super::fake::{html_reply, http_status, json_reply, parse_form, too_many_requests};

pub const PATH: &str = "/poll/query.do";
/// The subscription endpoint of Kuaidi100's push service, beside the query.
pub const SUBSCRIBE_PATH: &str = "/poll";
/// The carrier a journey is served for unless told otherwise.
pub const COM: &str = "yuantong";
/// Carriers the real service refuses to answer for without a phone.
const PHONE_CARRIERS: [&str; 3] = ["shunfeng", "shunfengkuaiyun", "zhongtong"];

/// One request that reached the endpoint.
#[derive(Debug, Clone)]
pub struct Call {
    pub customer: Option<String>,
    /// `param` exactly as received.
    pub raw_param: Option<String>,
    /// `param` parsed, when it was JSON.
    pub param: Option<Value>,
    pub num: Option<String>,
    pub at: Instant,
    /// The script step served (0-based), when a step was served.
    pub step: Option<usize>,
    /// `trace` (a script or journey step), `rejected` (failed verification), `bad_param`,
    /// `phone_required`, `unknown_num`, or the fault's label.
    pub answered: &'static str,
}

impl Call {
    /// A field of the parsed `param`, when it was a string.
    pub fn param_field(&self, key: &str) -> Option<&str> {
        self.param.as_ref()?.get(key)?.as_str()
    }
}

/// A failure the endpoint serves instead of its normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// returnCode 500, 查询无结果.
    NotFound,
    /// returnCode 400, as for an unknown carrier code.
    BadCarrier,
    /// returnCode 408, as when a carrier wants the phone.
    NeedPhone,
    /// returnCode 601, the key expired or ran out of queries.
    KeyExpired,
    /// returnCode 400 with the documented account refusal (贵公司没授权), as for an account not
    /// enabled for the real-time query.
    Unauthorised,
    /// Any other returnCode, with a short message.
    ReturnCode(u16),
    /// HTTP 429 with `Retry-After: N`.
    TooManyRequests { retry_after: u64 },
    /// An HTML page with HTTP 200, as a gateway or anti-crawler wall answers.
    Html,
    /// HTTP 200 with a truncated JSON document.
    MalformedJson,
    /// HTTP 200 with no body at all.
    Empty,
    /// This HTTP status with a short text body.
    Http(u16),
}

impl Fault {
    fn label(&self) -> &'static str {
        match self {
            Fault::NotFound => "not_found",
            Fault::BadCarrier => "bad_carrier",
            Fault::NeedPhone => "need_phone",
            Fault::KeyExpired => "key_expired",
            Fault::Unauthorised => "unauthorised",
            Fault::ReturnCode(_) => "return_code",
            Fault::TooManyRequests { .. } => "too_many_requests",
            Fault::Html => "html",
            Fault::MalformedJson => "malformed_json",
            Fault::Empty => "empty",
            Fault::Http(_) => "http",
        }
    }
}

/// What a verified call is answered: a body as the endpoint sends it, or a fault.
#[derive(Debug, Clone)]
enum Answer {
    Body(String),
    Fault(Fault),
}

impl Answer {
    /// What [`Call::answered`] says of it.
    fn label(&self) -> &'static str {
        match self {
            Answer::Body(_) => "trace",
            Answer::Fault(fault) => fault.label(),
        }
    }
}

struct Inner {
    customer: String,
    key: String,
    /// Per waybill number, the bodies served in turn; ahead of them, the queued faults.
    script: Script<String, Answer>,
    /// The phone a waybill was shipped with, for the carriers that check it.
    phones: HashMap<String, String>,
    log: Log<Call>,
    /// Every subscription request, in order, whatever it was answered.
    subscriptions: Vec<Subscription>,
    /// The waybills Kuaidi100 tracks (`status=polling`), by number, with their subscription.
    subscribed: HashMap<String, Subscription>,
    /// Answers (returnCode, message) the next subscription requests get instead of theirs.
    subscribe_faults: VecDeque<(u16, String)>,
}

/// One subscription request that reached the endpoint.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub schema: Option<String>,
    pub company: Option<String>,
    pub number: Option<String>,
    pub key: Option<String>,
    pub callbackurl: Option<String>,
    pub salt: Option<String>,
    pub resultv2: Option<String>,
    pub phone: Option<String>,
    /// The returnCode it was answered.
    pub answered: u16,
}

type Shared = super::fake::Shared<Inner>;

pub struct FakeKuaidi100 {
    /// `http://127.0.0.1:PORT/poll/query.do`
    pub url: String,
    shared: Shared,
    _server: super::fake::Server,
}

impl FakeKuaidi100 {
    pub async fn start(customer: &str, key: &str) -> FakeKuaidi100 {
        let shared = Shared::new(Inner {
            customer: customer.to_owned(),
            key: key.to_owned(),
            script: Script::new(),
            phones: HashMap::new(),
            log: Log::new(),
            subscriptions: Vec::new(),
            subscribed: HashMap::new(),
            subscribe_faults: VecDeque::new(),
        });
        let app = Router::new()
            .route(PATH, any(handle))
            .route(SUBSCRIBE_PATH, any(subscribe))
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake Kuaidi100").await;
        FakeKuaidi100 {
            url: format!("{}{}", server.base, PATH),
            shared,
            _server: server,
        }
    }

    pub fn customer(&self) -> String {
        self.shared.lock().customer.clone()
    }

    pub fn key(&self) -> String {
        self.shared.lock().key.clone()
    }

    /// Each poll of `num` serves the next step of the standard journey on yuantong, staying on
    /// the last: info_received → picked_up → in_transit → out_for_delivery → delivered.
    pub fn journey(&self, num: &str) {
        self.script(num, journey_bodies(COM, num));
    }

    /// Each poll of `num` serves the next body, staying on the last.
    pub fn script(&self, num: &str, bodies: Vec<String>) {
        let answers = bodies.into_iter().map(Answer::Body).collect();
        self.shared.lock().script.set(num.to_owned(), answers);
    }

    /// The waybill `num` was shipped to `phone`: a query for it on a carrier that checks phones
    /// must carry that number whole, as Kuaidi100's documentation asks, or is refused with 408.
    pub fn phone(&self, num: &str, phone: &str) {
        self.shared
            .lock()
            .phones
            .insert(num.to_owned(), phone.to_owned());
    }

    /// The next `n` verified calls (any number) get this fault instead of their answer; a
    /// faulted call does not advance any script.
    pub fn fault(&self, fault: Fault, n: usize) {
        self.shared
            .lock()
            .script
            .answer_next(n, Answer::Fault(fault));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().log.calls()
    }

    /// Every request for `num` that reached the endpoint, whatever it was answered.
    pub fn polls_of(&self, num: &str) -> usize {
        self.shared.lock().script.calls_for(&num.to_owned())
    }

    /// When each request for `num` arrived, so tests can check the 30-minute spacing.
    pub fn poll_times(&self, num: &str) -> Vec<Instant> {
        self.shared.lock().script.arrivals(&num.to_owned())
    }

    /// Requests for `num` that arrived after it had already been served its final step.
    pub fn polls_after_final(&self, num: &str) -> usize {
        self.shared.lock().script.calls_after_final(&num.to_owned())
    }

    /// Every subscription request so far.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.shared.lock().subscriptions.clone()
    }

    /// Subscription requests for `num` so far, whatever they were answered.
    pub fn subscriptions_of(&self, num: &str) -> usize {
        self.subscriptions()
            .iter()
            .filter(|s| s.number.as_deref() == Some(num))
            .count()
    }

    /// `num` is tracked already, as if subscribed before: its next subscription is answered
    /// 501 (重复订阅).
    pub fn already_subscribed(&self, num: &str, salt: &str) {
        let subscription = Subscription {
            schema: Some("json".to_owned()),
            company: Some(COM.to_owned()),
            number: Some(num.to_owned()),
            key: None,
            callbackurl: None,
            salt: Some(salt.to_owned()),
            resultv2: None,
            phone: None,
            answered: 200,
        };
        self.shared
            .lock()
            .subscribed
            .insert(num.to_owned(), subscription);
    }

    /// The next `n` subscription requests are answered `code` with `message`.
    pub fn subscribe_fault(&self, code: u16, message: &str, n: usize) {
        let mut inner = self.shared.lock();
        for _ in 0..n {
            inner.subscribe_faults.push_back((code, message.to_owned()));
        }
    }

    /// Kuaidi100's push of `status` with `last_result` (a query answer's body) for the
    /// subscribed waybill `num`, signed with the salt its subscription sent, posted to
    /// `callback_url` (the daemon's public listener): the daemon's HTTP status and body.
    pub async fn push(
        &self,
        callback_url: &str,
        num: &str,
        status: &str,
        message: &str,
        last_result: &str,
    ) -> (u16, String) {
        let salt = self
            .shared
            .lock()
            .subscribed
            .get(num)
            .and_then(|s| s.salt.clone())
            .unwrap_or_else(|| panic!("{num} was never subscribed with a salt"));
        let param = callback_param(status, message, last_result);
        let sign = callback_sign(&param, &salt);
        if status == "shutdown" || status == "abort" {
            self.shared.lock().subscribed.remove(num);
        }
        post_callback(callback_url, &param, Some(&sign)).await
    }

    /// Step `step` (0-based) of the standard journey of `num`, pushed as `polling` (`shutdown`
    /// for the last, signed-for step, as Kuaidi100 does).
    pub async fn push_step(&self, callback_url: &str, num: &str, step: usize) -> (u16, String) {
        let bodies = journey_bodies(COM, num);
        let status = if step + 1 == bodies.len() {
            "shutdown"
        } else {
            "polling"
        };
        self.push(callback_url, num, status, "", &bodies[step])
            .await
    }

    /// Requests refused by verification (customer or signature).
    pub fn signature_failures(&self) -> usize {
        self.shared.lock().log.refused()
    }

    /// Why each refused request was refused, for assertion messages.
    pub fn rejections(&self) -> Vec<String> {
        self.shared.lock().log.refusals()
    }
}

/// One entry of `data`: `(ftime, context, areaName, status, statusCode)`.
pub type Step<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// The five bodies of the standard journey of `num` on `com`, each holding every step before it.
pub fn journey_bodies(com: &str, num: &str) -> Vec<String> {
    let steps: [Step; 6] = [
        (
            "2026-11-20 07:30:00",
            "商家已下单，等待快递员揽收",
            "",
            "已下单",
            "101",
        ),
        (
            "2026-11-20 08:00:01",
            "【杭州市】快递员已揽收",
            "浙江,杭州市",
            "揽收",
            "103",
        ),
        (
            "2026-11-20 09:30:00",
            "快件已到达【杭州转运中心】",
            "浙江,杭州市",
            "在途",
            "0",
        ),
        (
            "2026-11-20 12:00:00",
            "快件已从【杭州转运中心】发出，发往【上海转运中心】",
            "浙江,杭州市",
            "干线",
            "1002",
        ),
        (
            "2026-11-21 07:10:00",
            "【上海市】快递员正在派件",
            "上海,上海市,浦东新区",
            "派件",
            "5",
        ),
        (
            "2026-11-21 10:05:00",
            "【上海市】快件已签收，签收人：本人",
            "上海,上海市,浦东新区",
            "签收",
            "301",
        ),
    ];
    vec![
        trace_response(com, num, "101", &steps[..1]),
        trace_response(com, num, "103", &steps[..2]),
        trace_response(com, num, "0", &steps[..4]),
        trace_response(com, num, "5", &steps[..5]),
        trace_response(com, num, "3", &steps[..6]),
    ]
}

/// A successful answer; `steps` are given oldest first and served newest first, as Kuaidi100
/// does by default. `ischeck` is 1 for the 签收 states.
pub fn trace_response(com: &str, num: &str, state: &str, steps: &[Step]) -> String {
    let signed = state.starts_with('3');
    checked_response(com, num, state, signed, steps)
}

/// A successful answer with `ischeck` as given: Kuaidi100's documentation says to ignore the
/// flag, so a fake that sets it beside any state shows whether an adapter does.
pub fn checked_response(
    com: &str,
    num: &str,
    state: &str,
    ischeck: bool,
    steps: &[Step],
) -> String {
    let data: Vec<Value> = steps
        .iter()
        .rev()
        .map(|(time, context, area, status, code)| {
            json!({
                "time": time,
                "ftime": time,
                "context": context,
                "location": "",
                "areaName": if area.is_empty() { Value::Null } else { json!(area) },
                "status": status,
                "statusCode": code,
            })
        })
        .collect();
    json!({
        "message": "ok",
        "nu": num,
        "ischeck": if ischeck { "1" } else { "0" },
        "condition": "F00",
        "com": com,
        "status": "200",
        "state": state,
        "data": data,
    })
    .to_string()
}

/// An error answer, as Kuaidi100 sends them: HTTP 200 with `result: false`.
pub fn error_response(code: u16, message: &str) -> String {
    json!({ "result": false, "returnCode": code.to_string(), "message": message }).to_string()
}

pub fn not_found_response() -> String {
    error_response(500, "查询无结果，请隔段时间再查")
}

async fn handle(State(shared): State<Shared>, body: Bytes) -> Response {
    let form = parse_form(&String::from_utf8_lossy(&body));
    let raw_param = form.get("param").cloned();
    let param: Option<Value> = raw_param
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw).ok())
        .filter(Value::is_object);
    let field = |key: &str| {
        param
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let num = field("num");
    let com = field("com");
    let phone = field("phone");

    let mut guard = shared.lock();
    let inner = &mut *guard;
    let now = Instant::now();
    inner.script.arrive(num.as_ref(), now);
    let refuse = |code, message| json_reply(StatusCode::OK, error_response(code, message));
    let (response, answered, step) = if let Some(why) = verify(inner, &form) {
        inner.log.refuse(why);
        (refuse(503, "验证签名失败"), "rejected", None)
    } else if num.is_none() || com.is_none() {
        let response = refuse(400, "参数异常：找不到对应公司或单号");
        (response, "bad_param", None)
    } else if PHONE_CARRIERS.contains(&com.as_deref().unwrap_or(""))
        && (phone.as_deref().is_none_or(str::is_empty)
            || num
                .as_ref()
                .and_then(|num| inner.phones.get(num))
                .is_some_and(|shipped| Some(shipped) != phone.as_ref()))
    {
        let response = refuse(408, "快递公司参数异常：验证码错误");
        (response, "phone_required", None)
    } else {
        match inner.script.next_for(num.as_ref()) {
            Next::Queued(answer) => (render(&answer), answer.label(), None),
            Next::Step(step, answer) => (render(&answer), answer.label(), Some(step)),
            Next::Unscripted => (
                json_reply(StatusCode::OK, not_found_response()),
                "unknown_num",
                None,
            ),
        }
    };
    inner.log.record(Call {
        customer: form.get("customer").cloned(),
        raw_param,
        param,
        num,
        at: now,
        step,
        answered,
    });
    response
}

/// A callback's `param`, as Kuaidi100's push sends it (推送接口).
pub fn callback_param(status: &str, message: &str, last_result: &str) -> String {
    let last: Value = serde_json::from_str(last_result).expect("a query body is JSON");
    json!({
        "status": status,
        "billstatus": "got",
        "message": message,
        "autoCheck": "0",
        "comOld": "",
        "comNew": "",
        "lastResult": last,
    })
    .to_string()
}

/// The sign of a callback: uppercase hex MD5 of `param + salt`, computed here on its own.
pub fn callback_sign(param: &str, salt: &str) -> String {
    let digest = Md5::digest(format!("{param}{salt}"));
    digest.iter().map(|byte| format!("{byte:02X}")).collect()
}

/// Posts a callback form (`param`, and `sign` when given) to `url`: the status and body.
pub async fn post_callback(url: &str, param: &str, sign: Option<&str>) -> (u16, String) {
    let mut form = vec![("param", param.to_owned())];
    if let Some(sign) = sign {
        form.push(("sign", sign.to_owned()));
    }
    let response = reqwest::Client::new()
        .post(url)
        .form(&form)
        .send()
        .await
        .expect("the public listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The subscription endpoint: checks the form and the key as the real one does, records what
/// was asked, and answers the documented codes.
async fn subscribe(State(shared): State<Shared>, body: Bytes) -> Response {
    let form = parse_form(&String::from_utf8_lossy(&body));
    let param: Option<Value> = form
        .get("param")
        .and_then(|raw| serde_json::from_str(raw).ok())
        .filter(Value::is_object);
    let field = |value: Option<&Value>, key: &str| {
        value
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let parameters = param.as_ref().and_then(|p| p.get("parameters"));
    let mut subscription = Subscription {
        schema: form.get("schema").cloned(),
        company: field(param.as_ref(), "company"),
        number: field(param.as_ref(), "number"),
        key: field(param.as_ref(), "key"),
        callbackurl: field(parameters, "callbackurl"),
        salt: field(parameters, "salt"),
        resultv2: field(parameters, "resultv2"),
        phone: field(parameters, "phone"),
        answered: 0,
    };
    let mut inner = shared.lock();
    let (code, message) = if let Some(fault) = inner.subscribe_faults.pop_front() {
        fault
    } else if subscription.key.as_deref() != Some(inner.key.as_str()) {
        (600, "您不是合法的订阅者".to_owned())
    } else if subscription.schema.as_deref() != Some("json")
        || subscription.company.is_none()
        || subscription.number.is_none()
        || subscription.callbackurl.is_none()
    {
        (700, "订阅方的订阅数据存在错误".to_owned())
    } else if PHONE_CARRIERS.contains(&subscription.company.as_deref().unwrap_or(""))
        && subscription.phone.is_none()
    {
        (
            700,
            "订阅方的订阅数据存在错误：顺丰单号需提供手机号".to_owned(),
        )
    } else if inner
        .subscribed
        .contains_key(subscription.number.as_deref().unwrap_or(""))
    {
        (501, "重复订阅".to_owned())
    } else {
        (200, "提交成功".to_owned())
    };
    subscription.answered = code;
    if code == 200 {
        let number = subscription.number.clone().unwrap_or_default();
        inner.subscribed.insert(number, subscription.clone());
    }
    inner.subscriptions.push(subscription);
    json_reply(
        StatusCode::OK,
        json!({ "result": code == 200, "returnCode": code.to_string(), "message": message })
            .to_string(),
    )
}

/// An answer as the endpoint sends it.
fn render(answer: &Answer) -> Response {
    let fault = match answer {
        Answer::Body(body) => return json_reply(StatusCode::OK, body.clone()),
        Answer::Fault(fault) => fault,
    };
    let error = |code, message| json_reply(StatusCode::OK, error_response(code, message));
    match *fault {
        Fault::NotFound => json_reply(StatusCode::OK, not_found_response()),
        Fault::BadCarrier => error(400, "找不到对应公司，请检查快递公司编码"),
        Fault::NeedPhone => error(408, "快递公司参数异常：验证码错误"),
        Fault::KeyExpired => error(601, "POLL:KEY已过期"),
        Fault::Unauthorised => error(400, "提交的数据不完整，或者贵公司没授权"),
        Fault::ReturnCode(code) => error(code, "服务器繁忙，请稍后再试"),
        Fault::TooManyRequests { retry_after } => too_many_requests(retry_after),
        Fault::Html => html_reply(
            "<!DOCTYPE html><html><head><title>系统繁忙</title></head>\
             <body><h1>系统繁忙，请稍后再试</h1></body></html>",
        ),
        Fault::MalformedJson => json_reply(
            StatusCode::OK,
            r#"{"message":"ok","nu":"YT1","status":"200","data":[{"time":"#.to_owned(),
        ),
        Fault::Empty => json_reply(StatusCode::OK, String::new()),
        Fault::Http(code) => http_status(code, "fake Kuaidi100"),
    }
}

/// Checks a request as the real service does; `Some(reason)` refuses it.
fn verify(inner: &Inner, form: &BTreeMap<String, String>) -> Option<String> {
    let get = |key: &str| form.get(key).map(String::as_str).unwrap_or("");
    if get("customer") != inner.customer {
        return Some(format!("customer {:?}", get("customer")));
    }
    if get("param").is_empty() {
        return Some("no param".to_owned());
    }
    let expected = expected_sign(get("param"), &inner.key, &inner.customer);
    if get("sign") != expected {
        return Some(format!("sign {:?} expected {expected}", get("sign")));
    }
    None
}

/// The signature over the `param` text as received, byte for byte.
fn expected_sign(param: &str, key: &str, customer: &str) -> String {
    let digest = Md5::digest(format!("{param}{key}{customer}"));
    digest.iter().map(|byte| format!("{byte:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_signs_the_design_vector() {
        assert_eq!(
            expected_sign(
                r#"{"com":"yuantong","num":"YT1234567890","resultv2":"4"}"#,
                "testkey",
                "TESTCUSTOMER"
            ),
            "FA7EB816944CA58C4AD495F4A3B7F50D"
        );
    }

    #[test]
    fn journey_bodies_list_newest_first() {
        let bodies = journey_bodies(COM, "YT1");
        assert_eq!(bodies.len(), 5);
        let last: Value = serde_json::from_str(&bodies[4]).unwrap();
        assert_eq!(last["state"], "3");
        assert_eq!(last["ischeck"], "1");
        assert_eq!(last["data"][0]["statusCode"], "301");
        assert_eq!(last["data"][5]["statusCode"], "101");
    }
}
