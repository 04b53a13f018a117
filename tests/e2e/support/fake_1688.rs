//! A fake 1688 open platform gateway on loopback. It speaks the
//! `alibaba.trade.getLogisticsTraceInfo.buyerView` wire format and checks every request the way
//! the real gateway does, with its own signature code, so that a signing bug in the adapter
//! cannot hide behind the same bug in the fake.
//!
//! Refusals: the real gateway's HTTP status for a refused request is not something a client may
//! rely on, only its `error_code` body. The fake answers credential refusals (signature, app key,
//! access token) with HTTP 401 and the frequency limit with HTTP 400, so an adapter that trusted
//! the status alone would take a wrong secret for an expired token, and fail these tests.
//!
//! What it answers, and the count of calls, is the shared script core's; this file keeps 1688's
//! requests, signatures and answers.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;

use super::fake::script::{Log, Next, Script};
use super::fake::{html_reply, http_status, json_reply, parse_form, too_many_requests};

pub const API: &str = "com.alibaba.logistics/alibaba.trade.getLogisticsTraceInfo.buyerView";
/// The fake refuses an `_aop_timestamp` further than this from its clock, which also catches
/// seconds sent where milliseconds are due.
const MAX_SKEW_MS: i64 = 10 * 60 * 1000;
pub const NO_TRACE: &str = "该订单没有物流跟踪信息";

/// One request that reached the gateway.
#[derive(Debug, Clone)]
pub struct Call {
    pub order_id: Option<u64>,
    pub at: Instant,
    /// The script step served (0-based), when a step was served.
    pub step: Option<usize>,
    /// `trace` (a script or journey step), `rate_limit`, `too_many_requests`, `html`,
    /// `malformed_json`, `empty`, `http`, `no_trace`, `rejected` (failed verification) or
    /// `unknown_order`.
    pub answered: &'static str,
}

/// A failure the gateway serves instead of its normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `gw.QosAppFrequencyLimit`, which names no duration.
    RateLimit,
    /// HTTP 429 with `Retry-After: N`.
    TooManyRequests { retry_after: u64 },
    /// An HTML page with HTTP 200, as an anti-crawler wall answers.
    Html,
    /// HTTP 200 with a truncated JSON document.
    MalformedJson,
    /// HTTP 200 with no body at all.
    Empty,
    /// This HTTP status with a short text body.
    Http(u16),
    /// `success: false` with 该订单没有物流跟踪信息, as before the seller's first scan.
    NoTrace,
    /// A gateway refusal `{"error_code": code, "error_message": message}` with HTTP 400, as the
    /// gateway answers a request it will not pass on (gw.ParamMissing, gw.APIACLDecline…).
    Gateway {
        code: &'static str,
        message: &'static str,
    },
}

impl Fault {
    fn label(&self) -> &'static str {
        match self {
            Fault::RateLimit => "rate_limit",
            Fault::TooManyRequests { .. } => "too_many_requests",
            Fault::Html => "html",
            Fault::MalformedJson => "malformed_json",
            Fault::Empty => "empty",
            Fault::Http(_) => "http",
            Fault::NoTrace => "no_trace",
            Fault::Gateway { .. } => "gateway",
        }
    }
}

/// What a verified call is answered: a body as the gateway sends it, or a fault.
#[derive(Debug, Clone)]
enum Answer {
    Body(String),
    Fault(Fault),
}

struct Inner {
    app_key: String,
    app_secret: String,
    access_token: String,
    newest_first: bool,
    /// Per order, the bodies served in turn; ahead of them, the queued faults.
    script: Script<u64, Answer>,
    log: Log<Call>,
}

type Shared = super::fake::Shared<Inner>;

pub struct Fake1688 {
    /// `http://127.0.0.1:PORT/openapi`, the adapter's endpoint.
    pub url: String,
    shared: Shared,
    _server: super::fake::Server,
}

impl Fake1688 {
    pub async fn start(app_key: &str, app_secret: &str, access_token: &str) -> Fake1688 {
        let shared = Shared::new(Inner {
            app_key: app_key.to_owned(),
            app_secret: app_secret.to_owned(),
            access_token: access_token.to_owned(),
            newest_first: false,
            script: Script::new(),
            log: Log::new(),
        });
        let app = Router::new()
            .route(&format!("/openapi/param2/1/{API}/{{app_key}}"), any(handle))
            .fallback(unknown_path)
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake 1688").await;
        Fake1688 {
            url: format!("{}/openapi", server.base),
            shared,
            _server: server,
        }
    }

    pub fn app_key(&self) -> String {
        self.shared.lock().app_key.clone()
    }

    pub fn app_secret(&self) -> String {
        self.shared.lock().app_secret.clone()
    }

    pub fn access_token(&self) -> String {
        self.shared.lock().access_token.clone()
    }

    /// Whether journeys defined from now on list their steps newest first, as some carriers'
    /// feeds reach 1688.
    pub fn newest_first(&self, on: bool) {
        self.shared.lock().newest_first = on;
    }

    /// Each poll of `order_id` serves the next step of the standard journey, staying on the
    /// last: info_received → picked_up → in_transit → out_for_delivery → delivered.
    pub fn journey(&self, order_id: u64) {
        let newest_first = self.shared.lock().newest_first;
        self.script(order_id, journey_bodies(order_id, newest_first));
    }

    /// Each poll of `order_id` serves the next body, staying on the last.
    pub fn script(&self, order_id: u64, bodies: Vec<String>) {
        let answers = bodies.into_iter().map(Answer::Body).collect();
        self.shared.lock().script.set(order_id, answers);
    }

    /// The next `n` verified calls (any order) get this fault instead of their answer; a
    /// faulted call does not advance any script.
    pub fn fault(&self, fault: Fault, n: usize) {
        self.shared
            .lock()
            .script
            .answer_next(n, Answer::Fault(fault));
    }

    /// Drops the faults not served yet.
    pub fn clear_faults(&self) {
        self.shared.lock().script.clear_next();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().log.calls()
    }

    /// Every request for `order_id` that reached the gateway, whatever it was answered.
    pub fn polls_of(&self, order_id: u64) -> usize {
        self.shared.lock().script.calls_for(&order_id)
    }

    /// Requests for `order_id` that arrived after it had already been served its final step.
    pub fn polls_after_final(&self, order_id: u64) -> usize {
        self.shared.lock().script.calls_after_final(&order_id)
    }

    /// Requests refused by verification (signature, app key, access token, timestamp…).
    pub fn signature_failures(&self) -> usize {
        self.shared.lock().log.refused()
    }

    /// Why each refused request was refused, for assertion messages.
    pub fn rejections(&self) -> Vec<String> {
        self.shared.lock().log.refusals()
    }
}

/// The standard journey's steps `(acceptTime, remark)`, oldest first; each remark is one the
/// adapter's keyword table maps to the next status of the journey.
pub const JOURNEY: [(&str, &str); 5] = [
    ("2026-11-20 08:00:01", "商家已下单，等待快递员揽收"),
    ("2026-11-20 09:15:00", "【杭州市】韵达快递 已揽收"),
    (
        "2026-11-20 21:40:00",
        "【杭州转运中心】已发出 下一站【上海转运中心】",
    ),
    (
        "2026-11-21 07:30:00",
        "【上海市】快递员 张师傅（138****5678）正在派件",
    ),
    (
        "2026-11-21 11:02:00",
        "【上海市】您的快件已签收，签收人：本人",
    ),
];

/// The waybill number the fake gives `order_id`.
pub fn bill_no(order_id: u64) -> String {
    format!("YD{order_id}")
}

/// The five bodies of the standard journey of `order_id`, each holding every step before it.
pub fn journey_bodies(order_id: u64, newest_first: bool) -> Vec<String> {
    (1..=JOURNEY.len())
        .map(|n| {
            let mut steps = JOURNEY[..n].to_vec();
            if newest_first {
                steps.reverse();
            }
            trace_response(order_id, &bill_no(order_id), &steps)
        })
        .collect()
}

/// A successful answer with one waybill; `steps` are `(acceptTime, remark)` in the order given.
pub fn trace_response(order_id: u64, bill_no: &str, steps: &[(&str, &str)]) -> String {
    split_response(order_id, &[(bill_no, steps)])
}

/// A successful answer with one entry per waybill `(logisticsBillNo, steps)`.
pub fn split_response(order_id: u64, parcels: &[(&str, &[(&str, &str)])]) -> String {
    let parcels: Vec<_> = parcels
        .iter()
        .enumerate()
        .map(|(index, (bill_no, steps))| {
            let steps: Vec<_> = steps
                .iter()
                .map(|(time, remark)| json!({ "acceptTime": time, "remark": remark }))
                .collect();
            json!({
                "logisticsId": format!("BX{order_id}-{index}"),
                // A JSON integer, as the gateway sends it: exact up to u64::MAX.
                "orderId": order_id,
                "logisticsBillNo": bill_no,
                "logisticsSteps": steps,
            })
        })
        .collect();
    json!({ "success": true, "logisticsTrace": parcels }).to_string()
}

/// A successful answer with one waybill whose history comes as both `logisticsSteps` and
/// `traceNodeList`, side by side as the 1688 SDK's `AlibabaLogisticsOpenPlatformLogisticsTrace`
/// holds them: `nodes` are `(acceptTime, action, remark, facilityName)`, oldest first, and each
/// is also a step `(acceptTime, remark)`.
pub fn node_response(order_id: u64, bill_no: &str, nodes: &[(&str, &str, &str, &str)]) -> String {
    let steps: Vec<_> = nodes
        .iter()
        .map(|(time, _, remark, _)| json!({ "acceptTime": time, "remark": remark }))
        .collect();
    let nodes: Vec<_> = nodes
        .iter()
        .map(|(time, action, remark, facility)| {
            json!({
                "action": action,
                "areaCode": "310115",
                "encrypt": "",
                "acceptTime": time,
                "remark": remark,
                "facilityType": "1",
                "facilityNo": "",
                "facilityName": facility,
            })
        })
        .collect();
    json!({ "success": true, "logisticsTrace": [{
        "logisticsId": format!("BX{order_id}-0"),
        "orderId": order_id,
        "logisticsBillNo": bill_no,
        "logisticsSteps": steps,
        "traceNodeList": nodes,
    }]})
    .to_string()
}

/// A business refusal (`success: false`).
pub fn error_response(code: &str, message: &str) -> String {
    json!({ "success": false, "errorCode": code, "errorMessage": message }).to_string()
}

/// A gateway refusal, before the API is reached.
pub fn gateway_error(code: &str, message: &str) -> String {
    json!({ "error_code": code, "error_message": message }).to_string()
}

/// A refusal by verification: the HTTP status, `error_code`, `error_message`, and why.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    why: String,
}

async fn handle(
    State(shared): State<Shared>,
    Path(app_key): Path<String>,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    // The gateway reads parameters from the query string and the form alike.
    let mut params = parse_form(query.as_deref().unwrap_or(""));
    params.extend(parse_form(&String::from_utf8_lossy(&body)));
    let order_id = params.get("orderId").and_then(|id| id.parse::<u64>().ok());
    // The signature covers the path after `/openapi/`, with no leading slash.
    let url_path = uri
        .path()
        .strip_prefix("/openapi/")
        .unwrap_or(uri.path())
        .to_owned();

    let mut guard = shared.lock();
    let inner = &mut *guard;
    let now = Instant::now();
    inner.script.arrive(order_id.as_ref(), now);
    let (response, answered, step) =
        if let Some(refusal) = verify(inner, &app_key, &url_path, &params) {
            inner.log.refuse(refusal.why);
            let body = gateway_error(refusal.code, refusal.message);
            (json_reply(refusal.status, body), "rejected", None)
        } else {
            match inner.script.next_for(order_id.as_ref()) {
                Next::Queued(answer) => (render(&answer), answer.label(), None),
                Next::Step(step, answer) => (render(&answer), answer.label(), Some(step)),
                Next::Unscripted => {
                    let body = error_response("500", "该订单不存在");
                    (json_reply(StatusCode::OK, body), "unknown_order", None)
                }
            }
        };
    inner.log.record(Call {
        order_id,
        at: now,
        step,
        answered,
    });
    response
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

/// An answer as the gateway sends it.
fn render(answer: &Answer) -> Response {
    let fault = match answer {
        Answer::Body(body) => return json_reply(StatusCode::OK, body.clone()),
        Answer::Fault(fault) => fault,
    };
    match *fault {
        Fault::RateLimit => json_reply(
            StatusCode::BAD_REQUEST,
            gateway_error(
                "gw.QosAppFrequencyLimit",
                "App call exceeds limited frequency",
            ),
        ),
        Fault::TooManyRequests { retry_after } => too_many_requests(retry_after),
        Fault::Html => html_reply(
            "<!DOCTYPE html><html><head><title>访问受限</title></head>\
             <body><h1>亲，访问受限了</h1></body></html>",
        ),
        Fault::MalformedJson => json_reply(
            StatusCode::OK,
            r#"{"success":true,"logisticsTrace":[{"orderId":12,"logisticsSteps":[{"remark":"已"#
                .to_owned(),
        ),
        Fault::Empty => json_reply(StatusCode::OK, String::new()),
        Fault::Http(code) => http_status(code, "fake 1688"),
        Fault::NoTrace => json_reply(StatusCode::OK, error_response("500", NO_TRACE)),
        Fault::Gateway { code, message } => {
            json_reply(StatusCode::BAD_REQUEST, gateway_error(code, message))
        }
    }
}

async fn unknown_path(State(shared): State<Shared>, uri: Uri) -> Response {
    shared.lock().log.refuse(format!("path {}", uri.path()));
    (StatusCode::NOT_FOUND, "no such API").into_response()
}

/// Checks a request as the real gateway does; `Some` refuses it.
fn verify(
    inner: &Inner,
    app_key: &str,
    url_path: &str,
    params: &BTreeMap<String, String>,
) -> Option<Refusal> {
    let refuse = |code, message, why: String| {
        Some(Refusal {
            status: StatusCode::UNAUTHORIZED,
            code,
            message,
            why,
        })
    };
    let get = |key: &str| params.get(key).map(String::as_str).unwrap_or("");
    if app_key.is_empty() {
        return refuse(
            "gw.AppKeyMissing",
            "App key is missing",
            "no app key".into(),
        );
    }
    if app_key != inner.app_key {
        return refuse(
            "gw.AppKeyNotExist",
            "App key does not exist",
            format!("app key {app_key:?}"),
        );
    }
    if get("_aop_signature").is_empty() {
        return refuse(
            "gw.SignatureInvalid",
            "Request signature is missing",
            "no _aop_signature".into(),
        );
    }
    let expected = expected_signature(url_path, params, &inner.app_secret);
    if get("_aop_signature") != expected {
        return refuse(
            "gw.SignatureInvalid",
            "Request signature is invalid",
            format!(
                "_aop_signature {} expected {expected}",
                get("_aop_signature")
            ),
        );
    }
    if let Some(raw) = params.get("_aop_timestamp") {
        let skew = raw
            .parse::<i64>()
            .map(|sent| (Utc::now().timestamp_millis() - sent).abs());
        if !skew.is_ok_and(|skew| skew <= MAX_SKEW_MS) {
            return refuse(
                "gw.TimestampInvalid",
                "Request timestamp is invalid",
                format!("_aop_timestamp {raw:?}"),
            );
        }
    }
    if get("access_token").is_empty() {
        return refuse(
            "gw.AccessTokenMissing",
            "Access token is missing",
            "no access_token".into(),
        );
    }
    if get("access_token") != inner.access_token {
        return refuse(
            "gw.InvalidAccessToken",
            "Access token is invalid or expired",
            "wrong access_token".into(),
        );
    }
    if get("webSite") != "1688" {
        return Some(Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "gw.ParamInvalid",
            message: "webSite must be 1688",
            why: format!("webSite {:?}", get("webSite")),
        });
    }
    None
}

/// The signature the gateway expects: HMAC-SHA1 of the URL path followed by the sorted
/// `key+value` strings of every parameter but the signature itself, uppercase hex.
fn expected_signature(url_path: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    let mut joined: Vec<String> = params
        .iter()
        .filter(|(key, _)| key.as_str() != "_aop_signature")
        .map(|(key, value)| [key.as_str(), value.as_str()].concat())
        .collect();
    joined.sort_unstable();
    let text = url_path.to_owned() + &joined.concat();
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(text.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_signs_the_design_vector() {
        let params: BTreeMap<String, String> = [("b", "2"), ("a", "1")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(
            expected_signature("param2/1/system/currentTime/1000000", &params, "test123"),
            "33E54F4F7B989E3E0E912D3FBD2F1A03CA7CCE88"
        );
    }

    #[test]
    fn journeys_list_steps_either_way() {
        let oldest = journey_bodies(7, false);
        let newest = journey_bodies(7, true);
        assert_eq!(oldest.len(), 5);
        assert_eq!(oldest[0], newest[0]);
        assert_ne!(oldest[4], newest[4]);
        assert!(oldest[4].contains(&bill_no(7)));
    }
}
