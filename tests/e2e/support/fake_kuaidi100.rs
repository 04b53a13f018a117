//! A fake Kuaidi100 real-time query endpoint on loopback. It speaks the Kuaidi100 wire format and
//! checks each signature with its own MD5 code over the exact `param` received, so that a signing
//! or serialisation bug in the adapter cannot hide behind the same bug in the fake.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use md5::{Digest, Md5};
use serde_json::{Value, json};

pub const PATH: &str = "/poll/query.do";
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

struct Script {
    bodies: Vec<String>,
    /// Steps served so far (faults and rejections do not count).
    served: usize,
    final_served: bool,
}

struct Inner {
    customer: String,
    key: String,
    scripts: HashMap<String, Script>,
    /// The phone a waybill was shipped with, for the carriers that check it.
    phones: HashMap<String, String>,
    faults: VecDeque<Fault>,
    calls: Vec<Call>,
    rejections: Vec<String>,
    /// Per number: requests that arrived once the final step had been served.
    after_final: HashMap<String, usize>,
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
            scripts: HashMap::new(),
            phones: HashMap::new(),
            faults: VecDeque::new(),
            calls: Vec::new(),
            rejections: Vec::new(),
            after_final: HashMap::new(),
        });
        let app = Router::new()
            .route(PATH, any(handle))
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake Kuaidi100").await;
        FakeKuaidi100 {
            url: format!("{}{}", server.base, PATH),
            shared,
            _server: server,
        }
    }

    /// Each poll of `num` serves the next step of the standard journey on yuantong, staying on
    /// the last: info_received → picked_up → in_transit → out_for_delivery → delivered.
    pub fn journey(&self, num: &str) {
        self.script(num, journey_bodies(COM, num));
    }

    /// Each poll of `num` serves the next body, staying on the last.
    pub fn script(&self, num: &str, bodies: Vec<String>) {
        assert!(!bodies.is_empty(), "a script needs at least one body");
        let mut inner = self.shared.lock();
        inner.scripts.insert(
            num.to_owned(),
            Script {
                bodies,
                served: 0,
                final_served: false,
            },
        );
        inner.after_final.remove(num);
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
        let mut inner = self.shared.lock();
        inner.faults.extend(std::iter::repeat_n(fault, n));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// Every request for `num` that reached the endpoint, whatever it was answered.
    pub fn polls_of(&self, num: &str) -> usize {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|call| call.num.as_deref() == Some(num))
            .count()
    }

    /// When each request for `num` arrived, so tests can check the 30-minute spacing.
    pub fn poll_times(&self, num: &str) -> Vec<Instant> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|call| call.num.as_deref() == Some(num))
            .map(|call| call.at)
            .collect()
    }

    /// Requests for `num` that arrived after it had already been served its final step.
    pub fn polls_after_final(&self, num: &str) -> usize {
        self.shared
            .lock()
            .after_final
            .get(num)
            .copied()
            .unwrap_or(0)
    }

    /// Requests refused by verification (customer or signature).
    pub fn signature_failures(&self) -> usize {
        self.shared.lock().rejections.len()
    }

    /// Why each refused request was refused, for assertion messages.
    pub fn rejections(&self) -> Vec<String> {
        self.shared.lock().rejections.clone()
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

fn json_reply(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
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

    let (fault, reply) = {
        let mut inner = shared.lock();
        let already_final = num
            .as_ref()
            .and_then(|num| inner.scripts.get(num))
            .is_some_and(|script| script.final_served);
        let (fault, reply, answered, step) = if let Some(why) = verify(&inner, &form) {
            inner.rejections.push(why);
            let body = error_response(503, "验证签名失败");
            (None, Some(body), "rejected", None)
        } else if num.is_none() || com.is_none() {
            let body = error_response(400, "参数异常：找不到对应公司或单号");
            (None, Some(body), "bad_param", None)
        } else if PHONE_CARRIERS.contains(&com.as_deref().unwrap_or(""))
            && (phone.as_deref().is_none_or(str::is_empty)
                || num
                    .as_ref()
                    .and_then(|num| inner.phones.get(num))
                    .is_some_and(|shipped| Some(shipped) != phone.as_ref()))
        {
            let body = error_response(408, "快递公司参数异常：验证码错误");
            (None, Some(body), "phone_required", None)
        } else if let Some(fault) = inner.faults.pop_front() {
            let label = fault.label();
            (Some(fault), None, label, None)
        } else {
            match num.as_ref().and_then(|num| inner.scripts.get_mut(num)) {
                Some(script) => {
                    let last = script.bodies.len() - 1;
                    let step = script.served.min(last);
                    script.served += 1;
                    script.final_served |= step == last;
                    (None, Some(script.bodies[step].clone()), "trace", Some(step))
                }
                None => (None, Some(not_found_response()), "unknown_num", None),
            }
        };
        if let Some(num) = &num
            && already_final
        {
            *inner.after_final.entry(num.clone()).or_default() += 1;
        }
        inner.calls.push(Call {
            customer: form.get("customer").cloned(),
            raw_param,
            param,
            num,
            at: Instant::now(),
            step,
            answered,
        });
        (fault, reply)
    };

    if let Some(body) = reply {
        return json_reply(StatusCode::OK, body);
    }
    match fault.expect("either a reply or a fault") {
        Fault::NotFound => json_reply(StatusCode::OK, not_found_response()),
        Fault::BadCarrier => json_reply(
            StatusCode::OK,
            error_response(400, "找不到对应公司，请检查快递公司编码"),
        ),
        Fault::NeedPhone => json_reply(
            StatusCode::OK,
            error_response(408, "快递公司参数异常：验证码错误"),
        ),
        Fault::KeyExpired => json_reply(StatusCode::OK, error_response(601, "POLL:KEY已过期")),
        Fault::Unauthorised => json_reply(
            StatusCode::OK,
            error_response(400, "提交的数据不完整，或者贵公司没授权"),
        ),
        Fault::ReturnCode(code) => json_reply(
            StatusCode::OK,
            error_response(code, "服务器繁忙，请稍后再试"),
        ),
        Fault::TooManyRequests { retry_after } => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after.to_string()).expect("digits are a header value"),
            );
            response
        }
        Fault::Html => {
            let page = "<!DOCTYPE html><html><head><title>系统繁忙</title></head>\
                        <body><h1>系统繁忙，请稍后再试</h1></body></html>";
            let mut response = (StatusCode::OK, page).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html;charset=UTF-8"),
            );
            response
        }
        Fault::MalformedJson => json_reply(
            StatusCode::OK,
            r#"{"message":"ok","nu":"YT1","status":"200","data":[{"time":"#.to_owned(),
        ),
        Fault::Empty => json_reply(StatusCode::OK, String::new()),
        Fault::Http(code) => {
            let status = StatusCode::from_u16(code).expect("a valid HTTP status");
            (status, format!("fake Kuaidi100 answered {code}")).into_response()
        }
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

/// `application/x-www-form-urlencoded`, later keys winning.
fn parse_form(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn forms_are_decoded() {
        let form = parse_form(
            "customer=C1&param=%7B%22com%22%3A%22yuantong%22%2C%22num%22%3A%22YT+1%22%7D&x=%zz&e=",
        );
        assert_eq!(form["customer"], "C1");
        assert_eq!(form["param"], r#"{"com":"yuantong","num":"YT 1"}"#);
        assert_eq!(form["x"], "%zz");
        assert_eq!(form["e"], "");
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
