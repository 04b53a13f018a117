//! 1688 `alibaba.trade.getLogisticsTraceInfo.buyerView`.

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer};
use sha1::Sha1;

use super::scans::{action_status, event_status};
use super::{
    Provider, ProviderError, Scalar, Trace, TraceEvent, TrackRequest, UnfitRequest,
    lenient_order_number, lenient_string, oldest_first, snippet,
};
use crate::domain::{Secret, Status};

pub const DEFAULT_ENDPOINT: &str = "https://gw.open.1688.com/openapi";
const API_PATH: &str =
    "param2/1/com.alibaba.logistics/alibaba.trade.getLogisticsTraceInfo.buyerView";

/// Signs a 1688 request: `url_path` (no leading slash) followed by every parameter but
/// `_aop_signature` as `key+value`, those strings sorted, HMAC-SHA1 with the app secret,
/// uppercase hex.
pub fn sign(url_path: &str, params: &[(&str, &str)], secret: &str) -> String {
    // The gateway sorts the joined `key+value` strings, not the keys: the two orders differ only
    // when one key is a prefix of another (`a`, `ab`), and then only this one verifies.
    let mut pairs: Vec<String> = params
        .iter()
        .filter(|(key, _)| *key != "_aop_signature")
        .map(|(key, value)| format!("{key}{value}"))
        .collect();
    pairs.sort();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(url_path.as_bytes());
    for pair in &pairs {
        mac.update(pair.as_bytes());
    }
    hex::encode_upper(mac.finalize().into_bytes())
}

/// Everything the adapter needs to call the 1688 gateway on behalf of one buyer account.
#[derive(Debug, Clone)]
pub struct Alibaba1688Config {
    /// The gateway base, up to and including `/openapi`.
    pub endpoint: String,
    pub app_key: String,
    pub app_secret: Secret,
    /// The buyer's authorisation; it expires and must then be renewed.
    pub access_token: Secret,
}

/// The `alibaba.trade.getLogisticsTraceInfo.buyerView` adapter.
pub struct Alibaba1688 {
    config: Alibaba1688Config,
    http: reqwest::Client,
}

impl Alibaba1688 {
    /// `http` should carry a request timeout: the adapter adds none of its own, so that one
    /// client-wide setting governs every provider.
    pub fn new(config: Alibaba1688Config, http: reqwest::Client) -> Self {
        Alibaba1688 { config, http }
    }

    /// The path the signature covers; the app key is part of it.
    fn url_path(&self) -> String {
        format!("{API_PATH}/{}", self.config.app_key)
    }

    fn url(&self) -> String {
        format!(
            "{}/{}",
            self.config.endpoint.trim_end_matches('/'),
            self.url_path()
        )
    }

    fn form(&self, order_id: u64, timestamp_ms: i64) -> Vec<(&'static str, String)> {
        let mut params: Vec<(&'static str, String)> = vec![
            ("orderId", order_id.to_string()),
            ("webSite", "1688".to_owned()),
            ("access_token", self.config.access_token.expose().to_owned()),
            ("_aop_timestamp", timestamp_ms.to_string()),
        ];
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let signature = sign(&self.url_path(), &borrowed, self.config.app_secret.expose());
        params.push(("_aop_signature", signature));
        params
    }
}

impl fmt::Debug for Alibaba1688 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alibaba1688")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Provider for Alibaba1688 {
    fn kind(&self) -> &'static str {
        "alibaba1688"
    }

    fn check(&self, request: &TrackRequest) -> Result<(), UnfitRequest> {
        check(request)
    }

    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError> {
        let order_id = parse_order_id(&request.order_id)?;
        let response = self
            .http
            .post(self.url())
            .form(&self.form(order_id, Utc::now().timestamp_millis()))
            .send()
            .await
            .map_err(|err| super::transport_error("1688 gateway", &err))?;
        let status = response.status().as_u16();
        let retry_after = super::retry_after_secs(&response);
        let body = super::read_response(response).await?;
        let found = interpret(status, retry_after, &String::from_utf8_lossy(&body))?;
        if let Some(answered) = found.order_ids.iter().find(|id| **id != order_id) {
            // Serving another order's trace would notify the wrong buyer; better to retry.
            return Err(ProviderError::Transient(format!(
                "1688 answered for order {answered} when asked for order {order_id}"
            )));
        }
        Ok(found.trace)
    }
}

/// What a shipment must carry for the 1688 gateway: a numeric order id. Pure, so a shipment is
/// checked without an adapter or its HTTP client.
pub fn check(request: &TrackRequest) -> Result<(), UnfitRequest> {
    parse_order_id(&request.order_id)
        .map(drop)
        .map_err(|e| match e {
            ProviderError::Permanent(message) => UnfitRequest::new("order_id", message),
            other => UnfitRequest::new("order_id", other.to_string()),
        })
}

fn parse_order_id(order_id: &str) -> Result<u64, ProviderError> {
    order_id.trim().parse::<u64>().map_err(|_| {
        ProviderError::Permanent(format!(
            "the alibaba1688 provider needs the numeric 1688 order id, got {order_id:?}"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Wire format

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default, deserialize_with = "lenient_bool")]
    success: Option<bool>,
    #[serde(default, rename = "logisticsTrace")]
    logistics_trace: Option<Vec<Parcel>>,
    /// A business refusal, beside `success: false`.
    #[serde(default, rename = "errorCode", deserialize_with = "lenient_string")]
    error_code: Option<String>,
    #[serde(default, rename = "errorMessage", deserialize_with = "lenient_string")]
    error_message: Option<String>,
    /// A gateway refusal (`gw.*`), before the API was reached.
    #[serde(default, rename = "error_code", deserialize_with = "lenient_string")]
    gateway_code: Option<String>,
    #[serde(default, rename = "error_message", deserialize_with = "lenient_string")]
    gateway_message: Option<String>,
}

/// One waybill of the order; a split order has several.
///
/// Beside the text-only `logisticsSteps`, the gateway may send `traceNodeList` (物流周转节点):
/// nodes with the same `acceptTime` and `remark` plus an `action` code. Both lists, and the
/// node's fields (`action`, `areaCode`, `acceptTime`, `remark`, `facilityType`, `facilityNo`,
/// `facilityName`), are those of the 1688 open platform SDK's
/// `AlibabaLogisticsOpenPlatformLogisticsTrace` and `AlibabaLogisticsOpenPlatformTraceNode`
/// (package `com.alibaba.logistics.param`). The SDK does not say which `action` values exist,
/// nor how nodes line up with steps, and we found no 1688 page that does, so both lists are
/// read leniently: see [`parcel_events`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Parcel {
    #[serde(default, deserialize_with = "lenient_order_number")]
    order_id: Option<u64>,
    #[serde(default, deserialize_with = "lenient_string")]
    logistics_bill_no: Option<String>,
    #[serde(default)]
    logistics_steps: Option<Vec<Step>>,
    /// Lenient: an odd node list must not cost the steps, which alone are enough.
    #[serde(default, deserialize_with = "lenient_list")]
    trace_node_list: Vec<Node>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Step {
    #[serde(default, deserialize_with = "lenient_string")]
    accept_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    remark: Option<String>,
}

/// A `traceNodeList` entry: a step with the carrier's action code.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    #[serde(default, deserialize_with = "lenient_string")]
    action: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    accept_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    remark: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    facility_name: Option<String>,
}

/// A list that may be missing, `null`, or not a list at all: the last two read as empty rather
/// than failing the whole answer, and an entry that is not an object is skipped.
fn lenient_list<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Option::<serde_json::Value>::deserialize(de)?;
    Ok(match value {
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(de: D) -> Result<Option<bool>, D::Error> {
    Ok(match Option::<Scalar>::deserialize(de)? {
        Some(Scalar::Bool(flag)) => Some(flag),
        Some(Scalar::Text(text)) => match text.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        Some(_) | None => None,
    })
}

/// A successful answer, before the adapter checks it is about the order it asked for.
#[derive(Debug)]
pub(crate) struct Found {
    /// Every order id the answer names, one per waybill that names one.
    pub(crate) order_ids: Vec<u64>,
    pub(crate) trace: Trace,
}

/// Reads an answer whatever its HTTP status: the gateway's own error body says more than the
/// status does (it refuses a bad signature and an expired token alike with a 4xx).
pub(crate) fn interpret(
    http_status: u16,
    retry_after: Option<u64>,
    body: &str,
) -> Result<Found, ProviderError> {
    if http_status == 429 {
        return Err(ProviderError::rate_limited(
            retry_after.or_else(|| seconds_in(body)),
            format!("HTTP 429 from the 1688 gateway: {}", snippet(body)),
        ));
    }
    if (200..300).contains(&http_status) {
        return parse_response(body);
    }
    if let Ok(answer) = serde_json::from_str::<Answer>(body)
        && let Some(error) = refusal(&answer)
    {
        return Err(error);
    }
    let message = format!(
        "HTTP {http_status} from the 1688 gateway: {}",
        snippet(body)
    );
    Err(if http_status == 401 {
        ProviderError::AuthExpired(message)
    } else {
        ProviderError::Transient(message)
    })
}

fn parse_response(body: &str) -> Result<Found, ProviderError> {
    if body.trim().is_empty() {
        return Err(ProviderError::Transient(
            "empty body from the 1688 gateway".to_owned(),
        ));
    }
    let answer: Answer = serde_json::from_str(body).map_err(|err| {
        ProviderError::Transient(format!(
            "unreadable answer from the 1688 gateway ({err}): {}",
            snippet(body)
        ))
    })?;
    if let Some(error) = refusal(&answer) {
        return Err(error);
    }
    if answer.success != Some(true) && answer.logistics_trace.is_none() {
        return Err(ProviderError::Transient(format!(
            "the 1688 gateway answered neither a trace nor an error: {}",
            snippet(body)
        )));
    }
    let parcels = answer.logistics_trace.unwrap_or_default();
    let order_ids = parcels.iter().filter_map(|p| p.order_id).collect();
    let tracking_no = parcels.iter().find_map(|p| p.logistics_bill_no.clone());
    let journeys: Vec<Vec<TraceEvent>> = parcels
        .into_iter()
        .map(|parcel| {
            parcel_events(
                parcel.logistics_steps.unwrap_or_default(),
                parcel.trace_node_list,
            )
        })
        .collect();
    let decision = map_status(&journeys);
    Ok(Found {
        order_ids,
        trace: Trace {
            status: decision.status,
            raw_status: decision.raw_status,
            events: merge(journeys),
            carrier: None,
            tracking_no,
            unmapped: decision.unmapped,
        },
    })
}

/// A waybill's events, oldest first: its steps, each carrying the action of the node that
/// matches it (same `acceptTime` and `remark`, or the same time when the node has no remark).
/// A node that matches no step is an event of its own, so that nothing either list says is lost.
fn parcel_events(steps: Vec<Step>, nodes: Vec<Node>) -> Vec<TraceEvent> {
    let steps = steps.into_iter().filter_map(|step| {
        Some(TraceEvent {
            time: readable_time(step.accept_time)?,
            description: step.remark.unwrap_or_default(),
            location: None,
            raw_code: None,
        })
    });
    let mut events = oldest_first(steps.collect());
    let mut unmatched = Vec::new();
    for node in nodes {
        let Some(time) = readable_time(node.accept_time) else {
            continue;
        };
        let action = node.action.map(|a| a.trim().to_owned());
        let remark = node.remark;
        let step = events.iter_mut().find(|event| {
            event.time == time
                && event.raw_code.is_none()
                && remark.as_ref().is_none_or(|r| *r == event.description)
        });
        match step {
            Some(step) => {
                step.raw_code = action;
                step.location = step.location.take().or(node.facility_name);
            }
            None => unmatched.push(TraceEvent {
                time,
                description: remark.unwrap_or_default(),
                location: node.facility_name,
                raw_code: action,
            }),
        }
    }
    if !unmatched.is_empty() {
        events.extend(oldest_first(unmatched));
        events.sort_by_key(|event| event.time);
    }
    events
}

fn readable_time(raw: Option<String>) -> Option<DateTime<FixedOffset>> {
    let raw = raw.unwrap_or_default();
    let time = super::parse_local_time(&raw);
    if time.is_none() {
        // One bad timestamp must not hide the rest of the journey, nor fail every poll.
        tracing::warn!(accept_time = %raw, "skipping 1688 trace step with an unreadable time");
    }
    time
}

/// One history for the order: the waybills' steps side by side in time, a step that several
/// waybills repeat (the seller's shipping note) kept once.
fn merge(journeys: Vec<Vec<TraceEvent>>) -> Vec<TraceEvent> {
    let mut seen: HashSet<(DateTime<FixedOffset>, String)> = HashSet::new();
    let mut events: Vec<TraceEvent> = journeys
        .into_iter()
        .flatten()
        .filter(|event| seen.insert((event.time, event.description.clone())))
        .collect();
    // Stable: each waybill is already in order, and equal times keep waybill order.
    events.sort_by_key(|event| event.time);
    events
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The error an answer carries, if it is one.
fn refusal(answer: &Answer) -> Option<ProviderError> {
    if let Some(code) = &answer.gateway_code {
        return Some(classify_gateway(code, answer.gateway_message.as_deref()));
    }
    if answer.success == Some(false) {
        return Some(classify_business(
            answer.error_code.as_deref(),
            answer.error_message.as_deref(),
        ));
    }
    None
}

/// What the daemon should do about a gateway code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    RateLimited,
    AuthExpired,
    Config,
    NotFound,
    Permanent,
}

/// Gateway codes, matched ignoring case. 1688 publishes no table of its gateway's codes that
/// we could find, so each row reads the code's own name and message. Whatever does not depend
/// on the order asked about stops the provider with one loud line (`Config`): the request's
/// parameters and API path are the same for every shipment, so a missing parameter, an API the
/// gateway does not offer, an unknown app key, a bad signature or a permission the app lacks
/// would fail every poll alike, and marking shipments invalid one by one would lose them.
const GATEWAY_CODES: &[(&str, Class)] = &[
    ("gw.QosAppFrequencyLimit", Class::RateLimited),
    ("gw.QosApiFrequencyLimit", Class::RateLimited),
    ("gw.SignatureInvalid", Class::Config),
    ("gw.SignatureMissing", Class::Config),
    ("gw.IsvSignatureInvalid", Class::Config),
    ("gw.AppKeyMissing", Class::Config),
    ("gw.AppKeyNotExist", Class::Config),
    // "AppKey is not allowed(acl)": the app has not been granted this API.
    ("gw.APIACLDecline", Class::Config),
    // A parameter the gateway requires for every call is missing from ours.
    ("gw.ParamMissing", Class::Config),
    // No such API (or version) for this app: the path is wrong or the API was withdrawn.
    ("gw.APIUnsupported", Class::Config),
    ("gw.InvalidAccessToken", Class::AuthExpired),
    ("gw.AccessTokenExpired", Class::AuthExpired),
    ("gw.accessTokenInvalid", Class::AuthExpired),
];

/// Words of an unknown gateway code, tried in order: the gateway has more codes than any list,
/// and these name the few families the daemon must not retry blindly.
const GATEWAY_WORDS: &[(&str, Class)] = &[
    ("token", Class::AuthExpired),
    ("frequency", Class::RateLimited),
    ("signature", Class::Config),
    ("appkey", Class::Config),
    ("acl", Class::Config),
    ("permission", Class::Config),
    ("unsupported", Class::Config),
];

/// Texts of a business refusal (`success: false`), tried in order against its code and message.
/// "No trace yet" is normal right after the seller ships; an order that does not exist, or is
/// not this buyer's, will fail the same way on every poll.
const BUSINESS_TEXTS: &[(&str, Class)] = &[
    ("token", Class::AuthExpired),
    ("没有物流跟踪信息", Class::NotFound),
    ("没有物流信息", Class::NotFound),
    ("暂无物流", Class::NotFound),
    ("订单不存在", Class::Permanent),
    ("不存在该订单", Class::Permanent),
    ("不属于", Class::Permanent),
    ("不是该订单", Class::Permanent),
    ("无权", Class::Permanent),
    ("order not exist", Class::Permanent),
    ("order does not exist", Class::Permanent),
    ("not belong", Class::Permanent),
];

fn gateway_class(code: &str) -> Option<Class> {
    let code = code.trim();
    if let Some((_, class)) = GATEWAY_CODES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(code))
    {
        return Some(*class);
    }
    let lower = code.to_ascii_lowercase();
    GATEWAY_WORDS
        .iter()
        .find(|(word, _)| lower.contains(word))
        .map(|(_, class)| *class)
}

fn business_class(code: &str, message: &str) -> Option<Class> {
    let text = format!("{code} {message}").to_lowercase();
    BUSINESS_TEXTS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, class)| *class)
}

fn classify_gateway(code: &str, message: Option<&str>) -> ProviderError {
    let text = describe("1688 gateway error", Some(code), message);
    // An unknown gateway code is the gateway's trouble until proven otherwise.
    to_error(gateway_class(code), text, message)
}

fn classify_business(code: Option<&str>, message: Option<&str>) -> ProviderError {
    let text = describe("1688 error", code, message);
    // Anything unrecognised may be a passing fault on 1688's side; retrying costs one call.
    let class = business_class(code.unwrap_or(""), message.unwrap_or(""));
    to_error(class, text, message)
}

fn to_error(class: Option<Class>, text: String, message: Option<&str>) -> ProviderError {
    match class {
        Some(Class::RateLimited) => ProviderError::rate_limited(message.and_then(seconds_in), text),
        Some(Class::AuthExpired) => ProviderError::AuthExpired(text),
        Some(Class::Config) => ProviderError::Config(text),
        Some(Class::NotFound) => ProviderError::NotFound(text),
        Some(Class::Permanent) => ProviderError::Permanent(text),
        None => ProviderError::Transient(text),
    }
}

fn describe(what: &str, code: Option<&str>, message: Option<&str>) -> String {
    let mut text = what.to_owned();
    if let Some(code) = code {
        text.push(' ');
        text.push_str(code.trim());
    }
    if let Some(message) = message {
        text.push_str(": ");
        text.push_str(message.trim());
    }
    text
}

/// Reads the first number of seconds a text mentions (`retry after 30 seconds`, `30s`,
/// `30秒后重试`); a zero becomes one, which would otherwise call straight back into the limit.
fn seconds_in(text: &str) -> Option<u64> {
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let from_digits = &rest[start..];
        let end = from_digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(from_digits.len());
        let (digits, after) = from_digits.split_at(end);
        let unit = after.trim_start().to_ascii_lowercase();
        let is_seconds = unit.starts_with("second")
            || unit.starts_with("sec")
            || unit.starts_with('秒')
            || (unit.starts_with('s') && !unit[1..].starts_with(|c: char| c.is_alphabetic()));
        if is_seconds {
            // Too many digits for a u64 is still "very long": capped to the longest ban.
            return Some(digits.parse::<u64>().unwrap_or(u64::MAX).max(1));
        }
        rest = after;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Canonical status

/// Where one waybill stands.
struct Standing<'a> {
    status: Status,
    /// The event that decided it.
    decided_by: &'a TraceEvent,
    /// When the waybill last moved, whatever its newest step says.
    latest: DateTime<FixedOffset>,
}

/// A waybill's status is that of its newest step that maps, by its action first and its text
/// second: carriers append courtesy notes after 签收 ("感谢使用…"), and those must not pull a
/// delivered parcel back into transit. With no step that maps, the parcel is at least moving.
/// `None` when it has no steps at all. What the newest step says that no table knows (an
/// action, a remark) is reported.
fn standing<'a>(events: &'a [TraceEvent], unmapped: &mut Vec<String>) -> Option<Standing<'a>> {
    let newest = events.last()?;
    if let Some(action) = newest.raw_code.as_deref()
        && action_status(action).is_none()
    {
        unmapped.push(format!("action={action}"));
    }
    if event_status(newest).is_none() && !newest.description.trim().is_empty() {
        unmapped.push(format!("remark={}", newest.description));
    }
    let mapped = events
        .iter()
        .rev()
        .find_map(|event| event_status(event).map(|s| (s, event)));
    Some(match mapped {
        Some((status, event)) => Standing {
            status,
            decided_by: event,
            latest: newest.time,
        },
        None => Standing {
            status: Status::InTransit,
            decided_by: newest,
            latest: newest.time,
        },
    })
}

/// The raw value kept beside the status: the step's text, or its action when it has no text.
fn raw_of(event: &TraceEvent) -> String {
    if event.description.trim().is_empty() {
        event.raw_code.clone().unwrap_or_default()
    } else {
        event.description.clone()
    }
}

/// The order's canonical status, the remark beside it, and the remarks no keyword knew.
struct Decision {
    status: Status,
    raw_status: String,
    unmapped: Vec<String>,
}

/// The order's status from its waybills' journeys (each oldest first). A split order is only
/// done when every parcel is: one delivered parcel must not stop the polling of another still
/// on its way, so the freshest news of an unfinished parcel wins over any finished one.
fn map_status(journeys: &[Vec<TraceEvent>]) -> Decision {
    let mut unmapped = Vec::new();
    let standings: Vec<Standing<'_>> = journeys
        .iter()
        .filter_map(|events| standing(events, &mut unmapped))
        .collect();
    for value in &unmapped {
        super::note_unmapped("alibaba1688", value);
    }
    let unfinished = standings.iter().filter(|s| !s.status.is_terminal());
    let freshest = |a: &&Standing<'_>, b: &&Standing<'_>| a.latest.cmp(&b.latest);
    // max_by keeps the last of equals; reversing keeps the first listed waybill instead.
    let chosen = unfinished
        .rev()
        .max_by(freshest)
        .or_else(|| standings.iter().rev().max_by(freshest));
    match chosen {
        Some(standing) => Decision {
            status: standing.status,
            raw_status: raw_of(standing.decided_by),
            unmapped,
        },
        // Shipped but not yet scanned: not even the carrier's order is known.
        None => Decision {
            status: Status::Pending,
            raw_status: String::new(),
            unmapped,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::scans::keyword_status;
    use super::*;
    use std::time::Duration;

    // ----- signing ----------------------------------------------------------------------------

    #[test]
    fn signature_vector_from_the_design() {
        assert_eq!(
            sign(
                "param2/1/system/currentTime/1000000",
                &[("a", "1"), ("b", "2")],
                "test123"
            ),
            "33E54F4F7B989E3E0E912D3FBD2F1A03CA7CCE88"
        );
    }

    #[test]
    fn order_and_the_signature_itself_do_not_change_the_signature() {
        let path = "param2/1/system/currentTime/1000000";
        let expected = sign(path, &[("a", "1"), ("b", "2")], "test123");
        let shuffled = [("_aop_signature", "WHATEVER"), ("b", "2"), ("a", "1")];
        assert_eq!(sign(path, &shuffled, "test123"), expected);
        assert_ne!(sign(path, &[("a", "1"), ("b", "3")], "test123"), expected);
        assert_ne!(sign(path, &[("a", "1"), ("b", "2")], "test124"), expected);
    }

    #[test]
    fn joined_pairs_are_sorted_not_keys() {
        // By key, `a` would come before `ab`; as joined strings, `ab1` sorts before `az`.
        let path = "p";
        let secret = "s";
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(b"pab1az");
        let expected = hex::encode_upper(mac.finalize().into_bytes());
        assert_eq!(sign(path, &[("a", "z"), ("ab", "1")], secret), expected);
    }

    fn adapter(endpoint: &str) -> Alibaba1688 {
        Alibaba1688::new(
            Alibaba1688Config {
                endpoint: endpoint.to_owned(),
                app_key: "1000000".to_owned(),
                app_secret: Secret::new("test123"),
                access_token: Secret::new("buyer-token"),
            },
            reqwest::Client::new(),
        )
    }

    /// The adapter in a log line names its gateway and app key, and never its secret or the
    /// buyer's token.
    #[test]
    fn the_adapter_debugs_without_its_secrets() {
        let shown = format!("{:?}", adapter(DEFAULT_ENDPOINT));
        assert!(shown.starts_with("Alibaba1688"), "{shown}");
        assert!(shown.contains(DEFAULT_ENDPOINT), "{shown}");
        assert!(shown.contains("1000000"), "{shown}");
        assert!(!shown.contains("test123"), "{shown}");
        assert!(!shown.contains("buyer-token"), "{shown}");
    }

    #[test]
    fn the_form_carries_every_parameter_and_a_valid_signature() {
        let a1688 = adapter(DEFAULT_ENDPOINT);
        let form = a1688.form(18_446_744_073_709_551_615, 1_764_000_000_000);
        let get = |key: &str| {
            form.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("orderId"), "18446744073709551615");
        assert_eq!(get("webSite"), "1688");
        assert_eq!(get("access_token"), "buyer-token");
        assert_eq!(get("_aop_timestamp"), "1764000000000");
        let path =
            "param2/1/com.alibaba.logistics/alibaba.trade.getLogisticsTraceInfo.buyerView/1000000";
        let unsigned: Vec<(&str, &str)> = form
            .iter()
            .filter(|(k, _)| *k != "_aop_signature")
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        assert_eq!(get("_aop_signature"), sign(path, &unsigned, "test123"));
        assert_eq!(
            a1688.url(),
            format!("https://gw.open.1688.com/openapi/{path}")
        );
        assert_eq!(
            adapter("http://127.0.0.1:9/openapi/").url(),
            format!("http://127.0.0.1:9/openapi/{path}")
        );
        assert_eq!(a1688.kind(), "alibaba1688");
        let debug = format!("{a1688:?}");
        assert!(
            !debug.contains("test123") && !debug.contains("buyer-token"),
            "{debug}"
        );
    }

    #[test]
    fn order_ids_must_be_numeric() {
        assert_eq!(
            parse_order_id("1234567890123456789").unwrap(),
            1_234_567_890_123_456_789
        );
        assert_eq!(parse_order_id(" 42 ").unwrap(), 42);
        let a1688 = adapter(DEFAULT_ENDPOINT);
        for bad in ["E2026-001", "", "-5", "12.5", "99999999999999999999"] {
            match parse_order_id(bad) {
                Err(ProviderError::Permanent(message)) => {
                    assert!(message.contains("numeric 1688 order id"), "{message}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
            let request = TrackRequest {
                order_id: bad.to_owned(),
                tracking_no: None,
                carrier: None,
                phone: None,
                ..TrackRequest::default()
            };
            let message = a1688.check(&request).unwrap_err().to_string();
            assert!(
                message.starts_with("the alibaba1688 provider needs the numeric 1688 order id")
            );
            assert!(!message.contains('\n'));
        }
    }

    // ----- canonical status -------------------------------------------------------------------

    fn event(time: &str, remark: &str) -> TraceEvent {
        TraceEvent {
            time: super::super::parse_local_time(time).unwrap(),
            description: remark.to_owned(),
            location: None,
            raw_code: None,
        }
    }

    fn status_of(remarks: &[&str]) -> Status {
        let events: Vec<TraceEvent> = remarks
            .iter()
            .enumerate()
            .map(|(i, r)| event(&format!("2026-11-20 08:00:{i:02}"), r))
            .collect();
        map_status(&[events]).status
    }

    fn acted(time: &str, remark: &str, action: &str) -> TraceEvent {
        TraceEvent {
            raw_code: Some(action.to_owned()),
            ..event(time, remark)
        }
    }

    #[test]
    fn the_action_wins_over_the_text() {
        use Status::*;
        let cases = [
            // The text alone would say delivered and stop polling for good.
            (
                "TMS_FAILED",
                "快递员派送，收件人电话未接通，未能签收",
                FailedAttempt,
            ),
            (
                "TMS_STATION_IN",
                "快件已到达【浦东花木驿站】分拨",
                InTransit,
            ),
            // On its way back is not back: the text alone would say delivered.
            ("TMS_RETURN", "快件已签收，转交寄件人", Exception),
            ("SENT_SCAN", "快件已到达【上海浦东营业部】", OutForDelivery),
            ("STA_INBOUND", "快件已送达", AvailableForPickup),
        ];
        for (action, remark, status) in cases {
            assert_ne!(keyword_status(remark), Some(status), "{remark} alone");
            let events = vec![
                event("2026-11-20 08:00:00", "已揽收"),
                acted("2026-11-20 09:00:00", remark, action),
            ];
            let decision = map_status(&[events]);
            assert_eq!(decision.status, status, "{action}");
            assert_eq!(decision.raw_status, remark);
        }
    }

    #[test]
    fn an_unknown_action_falls_back_to_the_text_and_is_reported() {
        let events = vec![acted(
            "2026-11-20 08:00:00",
            "快件已到达【上海】",
            "DRONE_LAND",
        )];
        let decision = map_status(&[events]);
        assert_eq!(decision.status, Status::InTransit);
        assert_eq!(decision.unmapped, ["action=DRONE_LAND"]);
        // Neither the action nor the text is known: moving, never a final status guessed from
        // the action's name.
        let events = vec![
            event("2026-11-20 08:00:00", "已揽收"),
            acted("2026-11-20 09:00:00", "包裹处理中", "TMS_SIGN_BACK"),
        ];
        let decision = map_status(&[events]);
        assert_eq!(decision.status, Status::PickedUp);
        assert!(!decision.status.is_terminal());
        assert_eq!(
            decision.unmapped,
            ["action=TMS_SIGN_BACK", "remark=包裹处理中"]
        );
        // A node with an action and no text keeps the action as the raw value.
        let decision = map_status(&[vec![acted("2026-11-20 08:00:00", "", "TMS_SIGN")]]);
        assert_eq!(decision.status, Status::Delivered);
        assert_eq!(decision.raw_status, "TMS_SIGN");
        assert!(decision.unmapped.is_empty());
    }

    #[test]
    fn real_looking_remarks() {
        use Status::*;
        let cases = [
            ("商家已下单，等待快递员揽收", InfoReceived),
            ("您的包裹已打包完成，等待揽收", InfoReceived),
            ("卖家已发货", PickedUp),
            ("您的订单已出库", PickedUp),
            ("【杭州市】韵达快递 已揽收", PickedUp),
            ("【杭州市】圆通速递 已揽件，发往【杭州转运中心】", PickedUp),
            ("快递员揽收失败，原因：联系不上寄件人", Exception),
            ("【上海转运中心】已发出 下一站【北京】", InTransit),
            ("快件已到达【北京顺义分拨中心】", InTransit),
            (
                "快件离开【北京顺义分拨中心】，发往【北京朝阳营业部】",
                InTransit,
            ),
            (
                "【北京市】快递员 张师傅（138****5678）正在派件",
                OutForDelivery,
            ),
            (
                "【北京市】正在为您派送，请保持电话畅通，准备签收",
                OutForDelivery,
            ),
            (
                "【杭州市】快件已被 菜鸟驿站 代收，请凭取件码取件",
                AvailableForPickup,
            ),
            (
                "【杭州市】快件已存放至丰巢智能柜，请及时取件",
                AvailableForPickup,
            ),
            ("快件已放入代收点【XX便利店】", AvailableForPickup),
            ("您的快件已签收，签收人：本人", Delivered),
            ("快件已由【门卫】代收，感谢使用", Delivered),
            ("【北京市】快件已妥投", Delivered),
            ("【北京市】快件签收失败，收件人不在", FailedAttempt),
            ("客户不在家，未签收，明日再派", FailedAttempt),
            ("派件异常：地址不详", FailedAttempt),
            ("客户拒绝签收，快件待处理", Exception),
            ("收件人拒收", Exception),
            ("快件已退回，发往【杭州转运中心】", Exception),
            ("退回件已签收", Returned),
            ("疑难件：地址不详，待联系", Exception),
            ("快件在【上海转运中心】异常滞留", Exception),
        ];
        for (text, status) in cases {
            assert_eq!(keyword_status(text), Some(status), "{text}");
        }
        assert_eq!(keyword_status("系统消息"), None);
        assert_eq!(keyword_status(""), None);
    }

    #[test]
    fn the_newest_step_that_maps_decides() {
        assert_eq!(
            status_of(&["已揽收", "到达【杭州】", "正在派件"]),
            Status::OutForDelivery
        );
        // A courtesy note after signing keeps the parcel delivered.
        assert_eq!(
            status_of(&["已揽收", "您的快件已签收", "感谢使用，期待再次为您服务"]),
            Status::Delivered
        );
        // Only what the table does not know is a guess: moving, since there are steps.
        assert_eq!(status_of(&["系统处理中"]), Status::InTransit);
        assert_eq!(map_status(&[]).status, Status::Pending);
        assert_eq!(map_status(&[vec![]]).status, Status::Pending);
    }

    #[test]
    fn an_unknown_newest_remark_is_reported() {
        let events = vec![
            event("2026-11-20 08:00:00", "已揽收"),
            event("2026-11-20 09:00:00", "TEST 系统处理中 a"),
        ];
        let decision = map_status(&[events]);
        assert_eq!(decision.status, Status::PickedUp);
        assert_eq!(decision.raw_status, "已揽收");
        assert_eq!(decision.unmapped, ["remark=TEST 系统处理中 a"]);
        let events = vec![event("2026-11-20 08:00:00", "TEST 系统处理中 b")];
        let decision = map_status(&[events]);
        assert_eq!(decision.status, Status::InTransit);
        assert_eq!(decision.raw_status, "TEST 系统处理中 b");
        assert_eq!(decision.unmapped, ["remark=TEST 系统处理中 b"]);
        let events = vec![event("2026-11-20 08:00:00", "已揽收")];
        assert!(map_status(&[events]).unmapped.is_empty());
    }

    #[test]
    fn a_split_order_is_done_only_when_every_parcel_is() {
        let delivered = vec![
            event("2026-11-20 08:00:00", "已揽收"),
            event("2026-11-21 10:00:00", "您的快件已签收"),
        ];
        let moving = vec![
            event("2026-11-20 09:00:00", "已揽收"),
            event("2026-11-21 08:00:00", "快件已到达【上海转运中心】"),
        ];
        let decision = map_status(&[delivered.clone(), moving.clone()]);
        assert_eq!(decision.status, Status::InTransit);
        assert_eq!(decision.raw_status, "快件已到达【上海转运中心】");
        assert_eq!(
            map_status(&[moving, delivered.clone()]).status,
            Status::InTransit
        );
        let returned = vec![event("2026-11-21 09:00:00", "退回件已签收")];
        assert_eq!(
            map_status(&[returned.clone(), delivered.clone()]).status,
            Status::Delivered
        );
        assert_eq!(
            map_status(&[delivered.clone(), returned]).status,
            Status::Delivered
        );
        // A waybill not scanned yet holds nothing back.
        assert_eq!(map_status(&[vec![], delivered]).status, Status::Delivered);
    }

    // ----- parsing ----------------------------------------------------------------------------

    const FULL: &str = r#"{"success":true,"logisticsTrace":[{
        "logisticsId":"BX1234567890","orderId":1234567890123456789,
        "logisticsBillNo":"YT7531234567890",
        "logisticsSteps":[
            {"acceptTime":"2026-11-20 08:00:01","remark":"【杭州市】圆通速递 已揽收"},
            {"acceptTime":"2026-11-20 09:30:00","remark":"快件已到达【杭州转运中心】"},
            {"acceptTime":"2026-11-21 07:10:00","remark":"【上海市】快递员正在派件"}
        ]}]}"#;

    #[test]
    fn full_success_response() {
        let found = parse_response(FULL).unwrap();
        assert_eq!(found.order_ids, [1_234_567_890_123_456_789]);
        let trace = found.trace;
        assert_eq!(trace.status, Status::OutForDelivery);
        assert_eq!(trace.raw_status, "【上海市】快递员正在派件");
        assert_eq!(trace.tracking_no.as_deref(), Some("YT7531234567890"));
        assert_eq!(trace.carrier, None);
        assert_eq!(trace.events.len(), 3);
        let first = &trace.events[0];
        assert_eq!(first.time.to_rfc3339(), "2026-11-20T08:00:01+08:00");
        assert_eq!(first.description, "【杭州市】圆通速递 已揽收");
        assert_eq!(first.raw_code, None);
        assert_eq!(first.location, None);
        assert!(trace.unmapped.is_empty());
    }

    #[test]
    fn big_order_ids_stay_exact() {
        for (raw, id) in [
            ("18446744073709551615", u64::MAX),
            ("\"18446744073709551615\"", u64::MAX),
            ("9007199254740993", 9_007_199_254_740_993),
        ] {
            let body = format!(r#"{{"success":true,"logisticsTrace":[{{"orderId":{raw}}}]}}"#);
            assert_eq!(parse_response(&body).unwrap().order_ids, [id], "{raw}");
        }
        // Too big for any order id: dropped rather than rounded into another order's id.
        let body = r#"{"success":true,"logisticsTrace":[{"orderId":18446744073709551616}]}"#;
        assert!(parse_response(body).unwrap().order_ids.is_empty());
    }

    fn steps_json(steps: &[(String, String)]) -> String {
        let steps: Vec<_> = steps
            .iter()
            .map(|(time, remark)| serde_json::json!({"acceptTime": time, "remark": remark}))
            .collect();
        serde_json::json!({"success": true, "logisticsTrace": [{
            "orderId": 1, "logisticsBillNo": "SF1", "logisticsSteps": steps}]})
        .to_string()
    }

    #[test]
    fn newest_first_and_oldest_first_give_the_same_events() {
        let oldest: Vec<(String, String)> = [
            ("2026-11-20 08:00:01", "已揽收"),
            ("2026-11-20 09:30:00", "到达a"),
            ("2026-11-20 09:30:00", "到达b"),
            ("2026-11-21 07:10:00", "正在派件"),
        ]
        .iter()
        .map(|(t, r)| ((*t).to_owned(), (*r).to_owned()))
        .collect();
        let mut newest = oldest.clone();
        newest.reverse();
        let a = parse_response(&steps_json(&oldest)).unwrap().trace;
        let b = parse_response(&steps_json(&newest)).unwrap().trace;
        assert_eq!(a, b);
        let remarks: Vec<&str> = a.events.iter().map(|e| e.description.as_str()).collect();
        assert_eq!(remarks, ["已揽收", "到达a", "到达b", "正在派件"]);
        assert_eq!(a.status, Status::OutForDelivery);
    }

    #[test]
    fn a_500_step_trace_parses() {
        let start = super::super::parse_local_time("2026-11-01 00:00:00").unwrap();
        let mut steps: Vec<(String, String)> = (0..500)
            .map(|i| {
                let time = start + chrono::Duration::minutes(i);
                (
                    time.format("%Y-%m-%d %H:%M:%S").to_string(),
                    format!("快件已到达【第{i}站】"),
                )
            })
            .collect();
        steps.last_mut().unwrap().1 = "您的快件已签收，签收人：本人".to_owned();
        steps.reverse();
        let trace = parse_response(&steps_json(&steps)).unwrap().trace;
        assert_eq!(trace.events.len(), 500);
        assert!(trace.events.windows(2).all(|w| w[0].time < w[1].time));
        assert_eq!(trace.events[0].description, "快件已到达【第0站】");
        assert_eq!(trace.status, Status::Delivered);
    }

    #[test]
    fn split_parcels_are_merged_and_deduplicated() {
        let body = r#"{"success":true,"logisticsTrace":[
            {"orderId":7,"logisticsBillNo":"SF001","logisticsSteps":[
                {"acceptTime":"2026-11-21 10:00:00","remark":"您的快件已签收"},
                {"acceptTime":"2026-11-20 08:00:00","remark":"卖家已发货"}]},
            {"orderId":"7","logisticsBillNo":"SF002","logisticsSteps":[
                {"acceptTime":"2026-11-20 08:00:00","remark":"卖家已发货"},
                {"acceptTime":"2026-11-20 12:00:00","remark":"快件已到达【上海转运中心】"}]}
        ]}"#;
        let found = parse_response(body).unwrap();
        assert_eq!(found.order_ids, [7, 7]);
        let trace = found.trace;
        assert_eq!(trace.tracking_no.as_deref(), Some("SF001"));
        let remarks: Vec<&str> = trace
            .events
            .iter()
            .map(|e| e.description.as_str())
            .collect();
        assert_eq!(
            remarks,
            ["卖家已发货", "快件已到达【上海转运中心】", "您的快件已签收"]
        );
        assert_eq!(trace.status, Status::InTransit);
        // The first waybill without a number defers to the next one that has it.
        let body = r#"{"success":true,"logisticsTrace":[{"logisticsBillNo":""},{"logisticsBillNo":"SF2"}]}"#;
        let trace = parse_response(body).unwrap().trace;
        assert_eq!(trace.tracking_no.as_deref(), Some("SF2"));
    }

    #[test]
    fn trace_nodes_lend_their_actions_to_the_steps() {
        let body = r#"{"success":true,"logisticsTrace":[{"orderId":7,"logisticsBillNo":"SF1",
            "logisticsSteps":[
                {"acceptTime":"2026-11-21 09:00:00","remark":"快递员派送，收件人不在，未能签收"},
                {"acceptTime":"2026-11-20 08:00:00","remark":"卖家已发货"}],
            "traceNodeList":[
                {"action":"GOT","areaCode":"330100","encrypt":"","acceptTime":"2026-11-20 08:00:00",
                 "remark":"卖家已发货","facilityType":"1","facilityNo":"A1","facilityName":"杭州网点"},
                {"action":"TMS_FAILED","acceptTime":"2026-11-21 09:00:00",
                 "remark":"快递员派送，收件人不在，未能签收","facilityName":"上海浦东营业部"}]}]}"#;
        let trace = parse_response(body).unwrap().trace;
        assert_eq!(trace.events.len(), 2, "{:?}", trace.events);
        let codes: Vec<_> = trace.events.iter().map(|e| e.raw_code.as_deref()).collect();
        assert_eq!(codes, [Some("GOT"), Some("TMS_FAILED")]);
        assert_eq!(trace.events[1].location.as_deref(), Some("上海浦东营业部"));
        // The text alone says 签收; the action says the attempt failed.
        assert_eq!(trace.status, Status::FailedAttempt);
        assert_eq!(trace.raw_status, "快递员派送，收件人不在，未能签收");
        assert!(trace.unmapped.is_empty());
    }

    #[test]
    fn nodes_without_a_matching_step_are_kept() {
        // Only nodes: they are the history.
        let body = r#"{"success":true,"logisticsTrace":[{"orderId":7,"traceNodeList":[
            {"action":"TMS_SIGN","acceptTime":"2026-11-21 10:00:00"},
            {"action":"ACCEPT","acceptTime":"2026-11-20 08:00:00","remark":"已收件"}]}]}"#;
        let trace = parse_response(body).unwrap().trace;
        let seen: Vec<_> = trace
            .events
            .iter()
            .map(|e| (e.description.as_str(), e.raw_code.as_deref()))
            .collect();
        assert_eq!(seen, [("已收件", Some("ACCEPT")), ("", Some("TMS_SIGN"))]);
        assert_eq!(trace.status, Status::Delivered);
        assert_eq!(trace.raw_status, "TMS_SIGN");
        // A node whose text differs from the step at its time is kept beside it; a node with no
        // text takes the step at its time.
        let body = r#"{"success":true,"logisticsTrace":[{"orderId":7,
            "logisticsSteps":[{"acceptTime":"2026-11-20 08:00:00","remark":"已揽收"},
                              {"acceptTime":"2026-11-20 09:00:00","remark":"到达【杭州】"}],
            "traceNodeList":[{"action":"ARRIVE","acceptTime":"2026-11-20 09:00:00"},
                             {"action":"GOT","acceptTime":"2026-11-20 08:00:00","remark":"揽件扫描"},
                             {"action":"GOT","acceptTime":"yesterday","remark":"?"}]}]}"#;
        let trace = parse_response(body).unwrap().trace;
        let seen: Vec<_> = trace
            .events
            .iter()
            .map(|e| (e.description.as_str(), e.raw_code.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("已揽收", None),
                ("揽件扫描", Some("GOT")),
                ("到达【杭州】", Some("ARRIVE"))
            ]
        );
    }

    #[test]
    fn an_odd_node_list_costs_nothing() {
        for nodes in [
            "null",
            "\"oops\"",
            "{\"action\":\"GOT\"}",
            "[1, \"x\", null]",
            "[]",
        ] {
            let body = format!(
                r#"{{"success":true,"logisticsTrace":[{{"orderId":7,"traceNodeList":{nodes},
                "logisticsSteps":[{{"acceptTime":"2026-11-20 08:00:00","remark":"已揽收"}}]}}]}}"#
            );
            let trace = parse_response(&body).unwrap().trace;
            assert_eq!(trace.status, Status::PickedUp, "{nodes}");
            assert_eq!(trace.events.len(), 1, "{nodes}");
            assert_eq!(trace.events[0].raw_code, None, "{nodes}");
        }
    }

    #[test]
    fn empty_traces_are_pending() {
        for body in [
            r#"{"success":true,"logisticsTrace":[]}"#,
            r#"{"success":true}"#,
            r#"{"success":"true"}"#,
            r#"{"success":"true","logisticsTrace":[{"orderId":1,"logisticsSteps":[]}]}"#,
            r#"{"logisticsTrace":[{"orderId":1}]}"#,
        ] {
            let trace = parse_response(body).unwrap().trace;
            assert_eq!(trace.status, Status::Pending, "{body}");
            assert!(trace.events.is_empty());
            assert_eq!(trace.raw_status, "");
        }
    }

    #[test]
    fn epoch_milliseconds_and_bad_times_are_tolerated() {
        let body = r#"{"success":true,"logisticsTrace":[{"logisticsSteps":[
            {"acceptTime":1763596801000,"remark":"已揽收"},
            {"acceptTime":"yesterday","remark":"您的快件已签收"},
            {"remark":"您的快件已签收"}]}]}"#;
        let trace = parse_response(body).unwrap().trace;
        assert_eq!(trace.events.len(), 1);
        assert_eq!(
            trace.events[0].time.to_rfc3339(),
            "2025-11-20T08:00:01+08:00"
        );
        assert_eq!(trace.status, Status::PickedUp);
    }

    // ----- errors -----------------------------------------------------------------------------

    fn kind(err: &ProviderError) -> std::mem::Discriminant<ProviderError> {
        std::mem::discriminant(err)
    }

    fn limited(seconds: u64) -> ProviderError {
        ProviderError::RateLimited {
            retry_after: Duration::from_secs(seconds),
            message: String::new(),
        }
    }

    fn assert_class(got: &ProviderError, want: &ProviderError, what: &str) {
        assert_eq!(kind(got), kind(want), "{what}: {got:?}");
        if let (
            ProviderError::RateLimited { retry_after, .. },
            ProviderError::RateLimited {
                retry_after: want, ..
            },
        ) = (got, want)
        {
            assert_eq!(retry_after, want, "{what}");
        }
    }

    #[test]
    fn gateway_errors_are_classified() {
        let config = ProviderError::Config(String::new());
        let auth = ProviderError::AuthExpired(String::new());
        let transient = ProviderError::Transient(String::new());
        let cases = [
            (
                "gw.QosAppFrequencyLimit",
                "App call exceeds limited frequency",
                limited(60),
            ),
            (
                "gw.QosAppFrequencyLimit",
                "retry after 30 seconds",
                limited(30),
            ),
            ("gw.QosApiFrequencyLimit", "请 5秒后重试", limited(5)),
            (
                "gw.SignatureInvalid",
                "Request signature is invalid",
                config.clone(),
            ),
            ("gw.IsvSignatureInvalid", "", config.clone()),
            ("gw.AppKeyMissing", "", config.clone()),
            ("gw.AppKeyNotExist", "", config.clone()),
            (
                "gw.APIACLDecline",
                "AppKey is not allowed(acl)",
                config.clone(),
            ),
            (
                "gw.ParamMissing",
                "Required argument orderId",
                config.clone(),
            ),
            ("gw.APIUnsupported", "API unsupported", config.clone()),
            ("gw.SignatureMissing", "", config.clone()),
            ("gw.PermissionDenied", "", config.clone()),
            ("gw.InvalidAccessToken", "", auth.clone()),
            ("gw.AccessTokenExpired", "", auth.clone()),
            ("gw.accessTokenInvalid", "", auth.clone()),
            ("gw.AccessTokenMissing", "", auth.clone()),
            ("gw.SomethingNew", "", transient.clone()),
            ("gw.InternalError", "", transient),
        ];
        for (code, message, want) in cases {
            let body =
                serde_json::json!({"error_code": code, "error_message": message}).to_string();
            let got = parse_response(&body).unwrap_err();
            assert_class(&got, &want, code);
            assert!(
                got.to_string()
                    .contains(&format!("1688 gateway error {code}")),
                "{got}"
            );
        }
    }

    #[test]
    fn business_errors_are_classified() {
        let cases = [
            (
                "该订单没有物流跟踪信息",
                ProviderError::NotFound(String::new()),
            ),
            ("订单没有物流信息", ProviderError::NotFound(String::new())),
            ("该订单不存在", ProviderError::Permanent(String::new())),
            (
                "该订单不属于当前买家",
                ProviderError::Permanent(String::new()),
            ),
            (
                "Order does not exist",
                ProviderError::Permanent(String::new()),
            ),
            (
                "access_token is expired",
                ProviderError::AuthExpired(String::new()),
            ),
            (
                "系统繁忙，请稍后再试",
                ProviderError::Transient(String::new()),
            ),
            ("", ProviderError::Transient(String::new())),
        ];
        for (message, want) in cases {
            let body =
                serde_json::json!({"success": false, "errorCode": "500", "errorMessage": message})
                    .to_string();
            assert_class(&parse_response(&body).unwrap_err(), &want, message);
        }
        // `success` written as text reads as the flag it spells.
        for success in ["false", r#""false""#, r#"" false ""#] {
            let body = format!(
                r#"{{"success":{success},"errorCode":"500","errorMessage":"该订单没有物流跟踪信息"}}"#
            );
            assert_eq!(
                parse_response(&body).unwrap_err(),
                ProviderError::NotFound("1688 error 500: 该订单没有物流跟踪信息".to_owned()),
                "{body}"
            );
        }
        let body = r#"{"success":false}"#;
        assert_eq!(
            parse_response(body).unwrap_err(),
            ProviderError::Transient("1688 error".to_owned())
        );
    }

    #[test]
    fn http_statuses_are_classified_but_the_body_has_the_last_word() {
        let signature = r#"{"error_code":"gw.SignatureInvalid","error_message":"Request signature is invalid"}"#;
        let token = r#"{"error_code":"gw.AccessTokenExpired","error_message":"expired"}"#;
        let html = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>";
        let cases = [
            (401, None, signature, ProviderError::Config(String::new())),
            (400, None, signature, ProviderError::Config(String::new())),
            (401, None, token, ProviderError::AuthExpired(String::new())),
            (401, None, "", ProviderError::AuthExpired(String::new())),
            (401, None, html, ProviderError::AuthExpired(String::new())),
            (429, Some(17), "", limited(17)),
            (429, None, "", limited(60)),
            (429, None, "slow down for 12 seconds", limited(12)),
            (429, Some(0), "", limited(1)),
            (500, None, "", ProviderError::Transient(String::new())),
            (502, None, html, ProviderError::Transient(String::new())),
            (503, None, "{}", ProviderError::Transient(String::new())),
            (
                404,
                None,
                "not found",
                ProviderError::Transient(String::new()),
            ),
        ];
        for (status, retry, body, want) in cases {
            let got = interpret(status, retry, body).unwrap_err();
            assert_class(&got, &want, &format!("HTTP {status} {body:?}"));
            assert!(got.to_string().chars().count() < 300, "{got}");
        }
        assert!(interpret(200, None, FULL).is_ok());
    }

    #[test]
    fn seconds_are_read_from_the_text() {
        assert_eq!(seconds_in("retry after 30 seconds"), Some(30));
        assert_eq!(seconds_in("banned for 45s"), Some(45));
        assert_eq!(seconds_in("请 120 秒后重试"), Some(120));
        assert_eq!(seconds_in("limit 100 calls, wait 0 sec"), Some(1));
        assert_eq!(seconds_in("App call exceeds limited frequency"), None);
        assert_eq!(seconds_in("100 calls"), None);
        assert_eq!(seconds_in("12 sheep"), None);
        assert_eq!(seconds_in(""), None);
    }

    #[test]
    fn garbage_bodies_are_transient_and_described() {
        let long_html = format!("<html><body>{}</body></html>", "访问受限 ".repeat(100));
        let bodies = [
            "",
            "   \n",
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>",
            long_html.as_str(),
            r#"{"success":true,"logisticsTrace":[{"orderId":"#,
            "null",
            "42",
            r#"{"something_else":{"code":1}}"#,
            "{}",
        ];
        for body in bodies {
            match parse_response(body) {
                Err(ProviderError::Transient(message)) => {
                    assert!(message.chars().count() < 300, "{message}");
                    if body.contains("502") {
                        assert!(message.contains("502 Bad Gateway"), "{message}");
                    }
                }
                other => panic!("{body:?} gave {other:?}"),
            }
        }
        assert_eq!(
            parse_response("").unwrap_err(),
            ProviderError::Transient("empty body from the 1688 gateway".to_owned())
        );
    }
}
