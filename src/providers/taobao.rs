//! Taobao TOP `taobao.logistics.trace.search`.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde::{Deserialize, Deserializer};
use sha2::Sha256;

use super::scans::{action_status, event_status};
use super::{
    Provider, ProviderError, Scalar, Trace, TraceEvent, TrackRequest, UnfitRequest,
    lenient_order_number, lenient_string, snippet,
};
use crate::domain::{Secret, Status};

pub const DEFAULT_ENDPOINT: &str = "https://eco.taobao.com/router/rest";
const METHOD: &str = "taobao.logistics.trace.search";

/// How a TOP request is signed (`sign_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum SignMethod {
    Md5,
    Hmac,
    #[default]
    HmacSha256,
}

impl SignMethod {
    pub const ALL: [SignMethod; 3] = [SignMethod::Md5, SignMethod::Hmac, SignMethod::HmacSha256];

    /// The name TOP expects in the `sign_method` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            SignMethod::Md5 => "md5",
            SignMethod::Hmac => "hmac",
            SignMethod::HmacSha256 => "hmac-sha256",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sign_method {0:?}: expected md5, hmac or hmac-sha256")]
pub struct UnknownSignMethod(pub String);

impl FromStr for SignMethod {
    type Err = UnknownSignMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignMethod::ALL
            .into_iter()
            .find(|method| method.as_str() == s)
            .ok_or_else(|| UnknownSignMethod(s.to_owned()))
    }
}

// Routing serde through FromStr keeps config errors worded the same as CLI errors.
impl TryFrom<String> for SignMethod {
    type Error = UnknownSignMethod;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// Signs TOP request parameters: every pair but `sign`, sorted by key in byte order, pairs with an
/// empty key or value left out, concatenated as `key+value`, digested, uppercase hex.
pub fn sign(params: &[(&str, &str)], secret: &str, method: SignMethod) -> String {
    let mut pairs: Vec<&(&str, &str)> = params
        .iter()
        .filter(|(key, value)| *key != "sign" && !key.is_empty() && !value.is_empty())
        .collect();
    // Stable, so duplicate keys (which TOP never sends) at least sign deterministically.
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut text = String::new();
    for (key, value) in pairs {
        text.push_str(key);
        text.push_str(value);
    }
    let digest = match method {
        SignMethod::Md5 => {
            let mut hasher = Md5::new();
            hasher.update(secret.as_bytes());
            hasher.update(text.as_bytes());
            hasher.update(secret.as_bytes());
            hasher.finalize().to_vec()
        }
        SignMethod::Hmac => {
            let mut mac = Hmac::<Md5>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        SignMethod::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts keys of any length");
            mac.update(text.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    hex::encode_upper(digest)
}

/// Everything the adapter needs to call TOP on behalf of one shop.
#[derive(Debug, Clone)]
pub struct TaobaoConfig {
    pub endpoint: String,
    pub app_key: String,
    pub app_secret: Secret,
    /// The shop's authorisation (`sessionKey`); it expires and must then be renewed.
    pub session: Secret,
    pub sign_method: SignMethod,
    /// The shop's nick (`seller_nick`), sent when set: older versions of the API require it.
    pub seller_nick: Option<String>,
}

/// The `taobao.logistics.trace.search` adapter.
pub struct Taobao {
    config: TaobaoConfig,
    /// `config.endpoint`, parsed once for every call. None if it does not parse (the config
    /// refuses such a URL at load).
    endpoint: Option<reqwest::Url>,
    http: reqwest::Client,
}

impl Taobao {
    /// `http` should carry a request timeout: the adapter adds none of its own, so that one
    /// client-wide setting governs every provider.
    pub fn new(config: TaobaoConfig, http: reqwest::Client) -> Self {
        Taobao {
            endpoint: reqwest::Url::parse(&config.endpoint).ok(),
            config,
            http,
        }
    }

    fn form(&self, order: &Order, timestamp: &str) -> Vec<(&'static str, String)> {
        let mut params: Vec<(&'static str, String)> = vec![
            ("method", METHOD.to_owned()),
            ("app_key", self.config.app_key.clone()),
            ("session", self.config.session.expose().to_owned()),
            ("timestamp", timestamp.to_owned()),
            ("v", "2.0".to_owned()),
            ("format", "json".to_owned()),
            ("sign_method", self.config.sign_method.as_str().to_owned()),
            ("tid", order.tid.to_string()),
        ];
        // `is_split` = 1 with `sub_tid`, the sub-order ids separated by commas, for an order
        // shipped in several parcels (the API's request model in the TOP SDKs, e.g.
        // TaobaoLogisticsTraceSearchAPIRequest: "当is_split=1时，需要传入"; the comma is how
        // TOP's list parameters are written, as taobao.logistics.offline.send documents).
        if !order.sub_tids.is_empty() {
            params.push(("is_split", "1".to_owned()));
            let ids: Vec<String> = order.sub_tids.iter().map(u64::to_string).collect();
            params.push(("sub_tid", ids.join(",")));
        }
        if let Some(nick) = &self.config.seller_nick {
            params.push(("seller_nick", nick.clone()));
        }
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let signature = sign(
            &borrowed,
            self.config.app_secret.expose(),
            self.config.sign_method,
        );
        params.push(("sign", signature));
        params
    }
}

/// What TOP is asked about: the order, and the sub-orders of a split order's parcel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Order {
    tid: u64,
    sub_tids: Vec<u64>,
}

impl Order {
    fn of(request: &TrackRequest) -> Result<Order, ProviderError> {
        Ok(Order {
            tid: parse_tid(&request.order_id)?,
            sub_tids: parse_sub_tids(request.sub_orders.as_deref().unwrap_or(""))?,
        })
    }
}

impl fmt::Debug for Taobao {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Taobao")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Provider for Taobao {
    fn kind(&self) -> &'static str {
        "taobao"
    }

    fn check(&self, request: &TrackRequest) -> Result<(), UnfitRequest> {
        check(request)
    }

    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError> {
        let order = Order::of(request)?;
        let tid = order.tid;
        // TOP checks the timestamp against its own clock in China, whatever our zone is.
        let timestamp = super::shanghai_seconds(Utc::now());
        let endpoint = self.endpoint.as_ref();
        let response = crate::http_body::post(&self.http, endpoint, &self.config.endpoint)
            .form(&self.form(&order, &timestamp))
            .send()
            .await
            .map_err(|err| super::transport_error("TOP", &err))?;
        let status = response.status();
        let retry_after = super::retry_after_secs(&response);
        let body = super::read_response(response).await?;
        let body = String::from_utf8_lossy(&body);
        if let Some(failure) = super::http_failure("TOP", status, retry_after, &body) {
            return Err(failure);
        }
        let found = parse_response(&body)?;
        if let Some(answered) = found.tid
            && answered != tid
        {
            // Serving another order's trace would notify the wrong buyer; better to retry.
            return Err(ProviderError::Transient(format!(
                "TOP answered for tid {answered} when asked for tid {tid}"
            )));
        }
        Ok(found.trace)
    }
}

/// What a shipment must carry for TOP: a numeric order id (tid) and numeric sub-order ids.
/// Pure, so a shipment is checked without an adapter or its HTTP client.
pub fn check(request: &TrackRequest) -> Result<(), UnfitRequest> {
    let unfit = |field| {
        move |e| match e {
            ProviderError::Permanent(message) => UnfitRequest::new(field, message),
            other => UnfitRequest::new(field, other.to_string()),
        }
    };
    parse_tid(&request.order_id).map_err(unfit("order_id"))?;
    parse_sub_tids(request.sub_orders.as_deref().unwrap_or("")).map_err(unfit("sub_orders"))?;
    Ok(())
}

/// The trade id of an order id: the number itself, or the number before a `#` that tells apart
/// the parcels of a split order (`1234567890123456789#2`), since order ids are unique.
fn parse_tid(order_id: &str) -> Result<u64, ProviderError> {
    let tid = order_id.split_once('#').map_or(order_id, |(tid, _)| tid);
    tid.trim().parse::<u64>().map_err(|_| {
        ProviderError::Permanent(format!(
            "the taobao provider needs the numeric order id (tid), optionally with #PARCEL after it, got {order_id:?}"
        ))
    })
}

/// Sub-order ids separated by commas (spaces allowed); empty for a whole order.
fn parse_sub_tids(text: &str) -> Result<Vec<u64>, ProviderError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|id| id.trim().parse::<u64>())
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| {
            ProviderError::Permanent(format!(
                "sub_orders must be numeric sub-order ids separated by commas (like 111,222), got {text:?}"
            ))
        })
}

// ---------------------------------------------------------------------------------------------
// Wire format

#[derive(Debug, Deserialize)]
struct Envelope {
    logistics_trace_search_response: Option<SearchResponse>,
    error_response: Option<TopError>,
}

#[derive(Debug, Deserialize)]
struct SearchResponse {
    #[serde(default, deserialize_with = "lenient_string")]
    out_sid: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    company_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_order_number")]
    tid: Option<u64>,
    #[serde(default, deserialize_with = "lenient_string")]
    status: Option<String>,
    trace_list: Option<TraceList>,
}

#[derive(Debug, Deserialize)]
struct TraceList {
    transit_step_info: Option<OneOrMany<Step>>,
}

/// TOP's XML heritage shows through in JSON: a one-element list sometimes arrives as an object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(items) => items,
            OneOrMany::One(item) => vec![item],
        }
    }
}

#[derive(Debug, Deserialize)]
struct Step {
    #[serde(default, deserialize_with = "lenient_string")]
    status_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    status_desc: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    action: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct TopError {
    #[serde(default, deserialize_with = "lenient_code")]
    code: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    msg: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    sub_code: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    sub_msg: Option<String>,
}

fn lenient_code<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<Scalar>::deserialize(de)? {
        Some(Scalar::Unsigned(n)) => i64::try_from(n).ok(),
        Some(Scalar::Signed(n)) => Some(n),
        Some(Scalar::Text(text)) => text.trim().parse().ok(),
        Some(Scalar::Bool(_) | Scalar::Other) | None => None,
    })
}

/// A successful answer, before the adapter checks it is about the order it asked for.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) tid: Option<u64>,
    pub(crate) trace: Trace,
}

pub(crate) fn parse_response(body: &str) -> Result<Found, ProviderError> {
    if body.trim().is_empty() {
        return Err(ProviderError::Transient("empty body from TOP".to_owned()));
    }
    let envelope: Envelope = serde_json::from_str(body).map_err(|err| {
        ProviderError::Transient(format!(
            "unreadable answer from TOP ({err}): {}",
            snippet(body)
        ))
    })?;
    if let Some(error) = envelope.error_response {
        return Err(classify(&error));
    }
    let Some(found) = envelope.logistics_trace_search_response else {
        return Err(ProviderError::Transient(format!(
            "TOP answered neither a trace nor an error: {}",
            snippet(body)
        )));
    };
    let steps = found
        .trace_list
        .and_then(|list| list.transit_step_info)
        .map(OneOrMany::into_vec)
        .unwrap_or_default();
    let events = events_oldest_first(steps);
    let raw_status = found.status.unwrap_or_default();
    let (status, unmapped) = map_status(&raw_status, &events);
    Ok(Found {
        tid: found.tid,
        trace: Trace {
            status,
            raw_status,
            events,
            carrier: found.company_name,
            tracking_no: found.out_sid,
            unmapped,
        },
    })
}

fn events_oldest_first(steps: Vec<Step>) -> Vec<TraceEvent> {
    let mut events: Vec<TraceEvent> = steps
        .into_iter()
        .filter_map(|step| {
            let raw_time = step.status_time.unwrap_or_default();
            let Some(time) = parse_time(&raw_time) else {
                // One bad timestamp must not hide the rest of the journey, nor fail every poll.
                tracing::warn!(status_time = %raw_time, "skipping TOP trace step with an unreadable time");
                return None;
            };
            Some(TraceEvent {
                time,
                description: step.status_desc.unwrap_or_default(),
                location: None,
                raw_code: step.action,
            })
        })
        .collect();
    // TOP lists oldest first; should it ever flip, turning the list over keeps equal-time
    // steps in their real order before the stable sort.
    if events.len() > 1 && events[0].time > events[events.len() - 1].time {
        events.reverse();
    }
    events.sort_by_key(|event| event.time);
    events
}

fn parse_time(raw: &str) -> Option<DateTime<FixedOffset>> {
    super::parse_shanghai_time(raw.trim())
}

// ---------------------------------------------------------------------------------------------
// Errors

/// TOP's error codes, as the platform's error-code page lists them ("错误码一览",
/// open.taobao.com/doc.htm?docId=114): codes below 100 are platform errors, `isp.*` sub-codes
/// are server faults worth a retry, `isv.*` sub-codes are refusals of the request itself.
fn classify(error: &TopError) -> ProviderError {
    let message = describe(error);
    let sub_code = error.sub_code.as_deref().unwrap_or("");
    match error.code {
        // 4 User, 5 Session, 6 Partner, 7 App Call Limited, 8 App Call Exceeds Limited
        // Frequency: all call limits, some with `This ban will last for N more seconds`.
        Some(4..=8) => rate_limited(error, message),
        _ if sub_code.starts_with("accesscontrol.") => rate_limited(error, message),
        // 26 Missing Session, 27 Invalid Session, 53 the session expired or was revoked.
        Some(26 | 27 | 53) => ProviderError::AuthExpired(message),
        _ if sub_code.contains("invalid-sessionkey") => ProviderError::AuthExpired(message),
        // 31 Invalid Timestamp: the gateway allows ten minutes either way, so our clock is off.
        Some(31) => ProviderError::Config(clock_is_wrong(&message)),
        _ if sub_code.contains("timestamp") => ProviderError::Config(clock_is_wrong(&message)),
        Some(11 | 25 | 28 | 29) => ProviderError::Config(message),
        Some(40 | 41) => ProviderError::Permanent(message),
        // The sub_code is the finer verdict: code 15 wraps both platform faults (isp.*) and
        // business refusals (isv.*). No page lists the refusals of this API, and a just-shipped
        // order that TOP has no trace for yet is refused too (isv.trade-not-exist and the
        // like), so an unexplained one is "nothing yet" until the no-info window has passed.
        _ if sub_code.starts_with("isp.") => ProviderError::Transient(message),
        // A parameter TOP names as invalid or missing (the tid) stays so at every retry.
        _ if sub_code.starts_with("isv.invalid-parameter")
            || sub_code.starts_with("isv.missing-parameter") =>
        {
            ProviderError::Permanent(message)
        }
        _ if sub_code.starts_with("isv.") => ProviderError::Unconfirmed(message),
        _ => ProviderError::Transient(message),
    }
}

fn rate_limited(error: &TopError, message: String) -> ProviderError {
    let seconds = [error.sub_msg.as_deref(), error.msg.as_deref()]
        .into_iter()
        .flatten()
        .find_map(ban_seconds);
    ProviderError::rate_limited(seconds, message)
}

fn clock_is_wrong(message: &str) -> String {
    format!(
        "TOP refused the request's timestamp, so this host's clock is more than 10 minutes off \
         China time: set it right (timedatectl set-ntp true), then reload or restart ({message})"
    )
}

fn describe(error: &TopError) -> String {
    let mut text = match error.code {
        Some(code) => format!("TOP error {code}"),
        None => "TOP error".to_owned(),
    };
    if let Some(msg) = &error.msg {
        text.push(' ');
        text.push_str(msg);
    }
    let details: Vec<&str> = [error.sub_code.as_deref(), error.sub_msg.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(": ")));
    }
    text
}

/// Reads N from `This ban will last for N more seconds`.
fn ban_seconds(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("last for")?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if digits.is_empty() {
        return None;
    }
    // Too many digits for a u64 is still "very long": capped to the longest ban by the caller.
    Some(digits.parse::<u64>().unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------------
// Canonical status
//
// The parcel's own scans decide, not TOP's order-level `status`. TOP documents that field as valid
// only for orders shipped with `taobao.logistics.online.send`: an order shipped with
// `taobao.logistics.offline.send` (the usual ERP path) reads 对方已签收 as soon as it ships
// (the description of taobao.logistics.trace.search on open.taobao.com, as carried by the TOP
// SDKs' request models, e.g. TaobaoLogisticsTraceSearchAPIRequest). So `status` is only a hint
// for an order without any scan, and it never declares a final status on its own.

/// What TOP's order-level `status` hints when there is no scan at all. No row is final: a
/// wrong `delivered` would stop polling for good and tell the buyer a falsehood.
const STATUS_HINTS: &[(&str, Status)] = &[
    ("等候发送给物流公司", Status::InfoReceived),
    ("已提交给物流公司,等待物流公司接单", Status::InfoReceived),
    ("已经确认消息接收，等待物流公司接单", Status::InfoReceived),
    ("物流公司已接单", Status::InfoReceived),
    ("物流公司揽收成功", Status::PickedUp),
    ("物流公司不接单", Status::Exception),
    ("物流公司揽收失败", Status::Exception),
    ("签收失败", Status::FailedAttempt),
    // Offline-shipped orders read this from the moment they ship: it proves shipping, no more.
    ("对方已签收", Status::PickedUp),
    // A refused parcel is a problem to act on, not yet a return: the carrier decides that later.
    ("对方拒绝签收", Status::Exception),
];

fn status_hint(raw: &str) -> Option<Status> {
    let raw = raw.trim();
    STATUS_HINTS
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, status)| *status)
}

/// The canonical status of an order from its scans, and TOP's `status` when there are none.
#[cfg(test)]
fn canonical_status(raw_status: &str, events: &[TraceEvent]) -> Status {
    map_status(raw_status, events).0
}

/// The canonical status of an order from its scans (oldest first) and TOP's `status`, with the
/// raw values no table knew (`status=…`, `action=…`, `status_desc=…`), each logged once per
/// process.
fn map_status(raw_status: &str, events: &[TraceEvent]) -> (Status, Vec<String>) {
    let mut unmapped = Vec::new();
    let status = status_from(raw_status, events, &mut unmapped);
    for value in &unmapped {
        super::note_unmapped("taobao", value);
    }
    (status, unmapped)
}

fn status_from(raw_status: &str, events: &[TraceEvent], unmapped: &mut Vec<String>) -> Status {
    let Some(newest) = events.last() else {
        let hint = status_hint(raw_status);
        if hint.is_none() && !raw_status.trim().is_empty() {
            unmapped.push(format!("status={}", raw_status.trim()));
        }
        return hint.unwrap_or(Status::Pending);
    };
    let action = newest.raw_code.as_deref().unwrap_or("").trim();
    if !action.is_empty() && action_status(action).is_none() {
        unmapped.push(format!("action={action}"));
    }
    if let Some(status) = event_status(newest) {
        return status;
    }
    if action.is_empty() {
        unmapped.push(format!("status_desc={}", newest.description));
    }
    // The newest scan says nothing known: the newest one that does, newest first. A parcel
    // scanned again since it was collected has moved on, so that is at least in transit.
    match events.iter().rev().skip(1).find_map(event_status) {
        Some(Status::Pending | Status::InfoReceived | Status::PickedUp) | None => Status::InTransit,
        Some(status) => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::DEFAULT_BAN;
    use std::time::Duration;

    const TRACE_PARAMS: [(&str, &str); 7] = [
        ("app_key", "12345678"),
        ("format", "json"),
        ("method", "taobao.logistics.trace.search"),
        ("session", "test"),
        ("tid", "1234567890123456789"),
        ("timestamp", "2016-01-01 12:00:00"),
        ("v", "2.0"),
    ];

    fn with_method(method: SignMethod) -> Vec<(&'static str, &'static str)> {
        let mut params = TRACE_PARAMS.to_vec();
        params.push(("sign_method", method.as_str()));
        params
    }

    #[test]
    fn md5_vector_from_the_platform_docs() {
        let params = [
            ("app_key", "12345678"),
            ("fields", "num_iid,title,nick,price,num"),
            ("format", "json"),
            ("method", "taobao.item.seller.get"),
            ("num_iid", "11223344"),
            ("session", "test"),
            ("sign_method", "md5"),
            ("timestamp", "2016-01-01 12:00:00"),
            ("v", "2.0"),
        ];
        assert_eq!(
            sign(&params, "helloworld", SignMethod::Md5),
            "66987CB115214E59E6EC978214934FB8"
        );
    }

    #[test]
    fn hmac_sha256_vector() {
        let params = with_method(SignMethod::HmacSha256);
        assert_eq!(
            sign(&params, "helloworld", SignMethod::HmacSha256),
            "2B67FC79B6AB2D6CE18E38A75995A2B1995D78994AB258C57E16897304966D6C"
        );
    }

    #[test]
    fn hmac_md5_vector() {
        let params = with_method(SignMethod::Hmac);
        assert_eq!(
            sign(&params, "helloworld", SignMethod::Hmac),
            "D54CB27172A9295719B4B736D956FF64"
        );
    }

    #[test]
    fn order_sign_and_empty_pairs_do_not_change_the_signature() {
        let params = with_method(SignMethod::HmacSha256);
        let expected = sign(&params, "helloworld", SignMethod::HmacSha256);
        let mut shuffled: Vec<_> = params.iter().rev().copied().collect();
        shuffled.push(("sign", "WHATEVER"));
        shuffled.push(("is_split", ""));
        shuffled.push(("", "orphan"));
        assert_eq!(
            sign(&shuffled, "helloworld", SignMethod::HmacSha256),
            expected
        );
    }

    #[test]
    fn sign_method_names_round_trip() {
        for method in SignMethod::ALL {
            assert_eq!(method.as_str().parse::<SignMethod>().unwrap(), method);
            let json = format!("\"{}\"", method.as_str());
            assert_eq!(serde_json::from_str::<SignMethod>(&json).unwrap(), method);
        }
        assert_eq!(SignMethod::default(), SignMethod::HmacSha256);
    }

    #[test]
    fn unknown_sign_method_names_the_value_and_the_choices() {
        let err = "sha1".parse::<SignMethod>().unwrap_err().to_string();
        assert!(err.contains("\"sha1\""), "{err}");
        assert!(err.contains("md5, hmac or hmac-sha256"), "{err}");
        let err = serde_json::from_str::<SignMethod>("\"HMAC\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"HMAC\"") && err.contains("hmac-sha256"),
            "{err}"
        );
    }

    // ----- canonical status -------------------------------------------------------------------

    fn event(time: &str, desc: &str, action: Option<&str>) -> TraceEvent {
        TraceEvent {
            time: parse_time(time).unwrap(),
            description: desc.to_owned(),
            location: None,
            raw_code: action.map(str::to_owned),
        }
    }

    fn scan(desc: &str, action: Option<&str>) -> TraceEvent {
        event("2026-11-20 08:00:00", desc, action)
    }

    #[test]
    fn every_status_hint_row_and_none_is_final() {
        use Status::*;
        let expected = [
            ("等候发送给物流公司", InfoReceived),
            ("已提交给物流公司,等待物流公司接单", InfoReceived),
            ("已经确认消息接收，等待物流公司接单", InfoReceived),
            ("物流公司已接单", InfoReceived),
            ("物流公司揽收成功", PickedUp),
            ("物流公司不接单", Exception),
            ("物流公司揽收失败", Exception),
            ("签收失败", FailedAttempt),
            ("对方已签收", PickedUp),
            ("对方拒绝签收", Exception),
        ];
        assert_eq!(expected.len(), STATUS_HINTS.len());
        for (name, status) in expected {
            assert_eq!(status_hint(name), Some(status), "{name}");
            assert_eq!(canonical_status(name, &[]), status, "{name} without scans");
            assert!(!status.is_terminal(), "{name} must not end polling");
        }
    }

    #[test]
    fn every_scan_row_decides_whatever_tops_status_says() {
        use super::super::scans::{ACTIONS, KEYWORDS};
        for (action, status) in ACTIONS {
            let events = [scan("系统消息", Some(action))];
            assert_eq!(canonical_status("对方已签收", &events), *status, "{action}");
        }
        for (keyword, status) in KEYWORDS {
            let events = [scan(keyword, None)];
            assert_eq!(
                canonical_status("对方已签收", &events),
                *status,
                "{keyword}"
            );
        }
    }

    #[test]
    fn an_offline_shipped_order_reading_signed_follows_its_scans() {
        // taobao.logistics.offline.send: 对方已签收 from the moment the order ships.
        let events = [
            event(
                "2026-11-20 08:00:01",
                "【杭州市】中通快递 已揽收",
                Some("GOT"),
            ),
            event(
                "2026-11-20 09:30:00",
                "快件已从【杭州转运中心】发出",
                Some("DEPARTURE"),
            ),
        ];
        assert_eq!(canonical_status("对方已签收", &events), Status::InTransit);
        assert_eq!(
            canonical_status("对方已签收", &events[..1]),
            Status::PickedUp
        );
        assert_eq!(canonical_status("对方已签收", &[]), Status::PickedUp);
        let mut signed = events.to_vec();
        signed.push(event("2026-11-21 10:00:00", "已签收", Some("TMS_SIGN")));
        assert_eq!(canonical_status("对方已签收", &signed), Status::Delivered);
    }

    #[test]
    fn the_status_field_never_overrides_a_scan() {
        let delivering = [scan("派件中", Some("TMS_DELIVERING"))];
        for raw in ["对方已签收", "签收失败", "对方拒绝签收", "物流公司已接单"]
        {
            assert_eq!(
                canonical_status(raw, &delivering),
                Status::OutForDelivery,
                "{raw}"
            );
        }
        let ordered = [scan("商家已下单", None)];
        assert_eq!(
            canonical_status("物流公司揽收成功", &ordered),
            Status::InfoReceived
        );
    }

    #[test]
    fn the_newest_scan_that_says_something_decides() {
        let unknown_action = [scan(
            "快件已到达【北京分拨中心】",
            Some("TEST_UNKNOWN_ACTION"),
        )];
        assert_eq!(
            canonical_status("物流公司揽收成功", &unknown_action),
            Status::InTransit
        );
        let lowercase = [scan("", Some("tms_sign"))];
        assert_eq!(canonical_status("", &lowercase), Status::Delivered);
        // An unknown action with an unknown text: the newest known scan, at least in transit.
        let after_pickup = [
            event("2026-11-20 08:00:01", "已揽收", Some("GOT")),
            event("2026-11-20 09:00:00", "系统处理中", Some("TEST_MYSTERY")),
        ];
        assert_eq!(
            canonical_status("对方已签收", &after_pickup),
            Status::InTransit
        );
        let after_delivery = [
            event("2026-11-20 08:00:01", "派件中", Some("TMS_DELIVERING")),
            event("2026-11-20 09:00:00", "感谢使用", None),
        ];
        assert_eq!(
            canonical_status("", &after_delivery),
            Status::OutForDelivery
        );
    }

    #[test]
    fn unknown_values_fall_back_to_safe_statuses_and_are_reported() {
        let (status, unmapped) = map_status("TEST_UNKNOWN_STATUS", &[]);
        assert_eq!(status, Status::Pending);
        assert_eq!(unmapped, ["status=TEST_UNKNOWN_STATUS"]);
        assert_eq!(canonical_status("", &[]), Status::Pending);
        // A status TOP's table knows, or none at all, is nothing to report.
        for known_or_none in ["物流公司揽收成功", "", "  "] {
            let (_, unmapped) = map_status(known_or_none, &[]);
            assert!(unmapped.is_empty(), "{known_or_none:?}: {unmapped:?}");
        }
        let mystery = [scan("系统处理中", Some("TEST_MYSTERY"))];
        let (status, unmapped) = map_status("对方已签收", &mystery);
        assert_eq!(status, Status::InTransit);
        assert_eq!(unmapped, ["action=TEST_MYSTERY"]);
        // An unknown action is read by its text, and still reported.
        let signed_text = [scan("已签收", Some("TEST_NEW_SIGN"))];
        let (status, unmapped) = map_status("", &signed_text);
        assert_eq!(status, Status::Delivered);
        assert_eq!(unmapped, ["action=TEST_NEW_SIGN"]);
        let plain = [scan("系统处理中", None)];
        let (status, unmapped) = map_status("", &plain);
        assert_eq!(status, Status::InTransit);
        assert_eq!(unmapped, ["status_desc=系统处理中"]);
    }

    // ----- parsing ----------------------------------------------------------------------------

    const FULL: &str = r#"{"logistics_trace_search_response":{
        "out_sid":"ZT75312345678","company_name":"中通速递","tid":1234567890123456789,
        "status":"物流公司揽收成功",
        "trace_list":{"transit_step_info":[
            {"status_time":"2026-11-20 08:00:01","status_desc":"【杭州市】中通快递 已揽收","action":"GOT"},
            {"status_time":"2026-11-20 09:30:00","status_desc":"快件已到达【杭州转运中心】","action":"ARRIVAL"},
            {"status_time":"2026-11-21 07:10:00","status_desc":"【上海市】快递员正在派件","action":"TMS_DELIVERING"}
        ]},
        "request_id":"abc123"}}"#;

    #[test]
    fn full_success_response() {
        let found = parse_response(FULL).unwrap();
        assert_eq!(found.tid, Some(1_234_567_890_123_456_789));
        let trace = found.trace;
        assert_eq!(trace.status, Status::OutForDelivery);
        assert_eq!(trace.raw_status, "物流公司揽收成功");
        assert_eq!(trace.carrier.as_deref(), Some("中通速递"));
        assert_eq!(trace.tracking_no.as_deref(), Some("ZT75312345678"));
        assert_eq!(trace.events.len(), 3);
        let first = &trace.events[0];
        assert_eq!(first.time.to_rfc3339(), "2026-11-20T08:00:01+08:00");
        assert_eq!(first.description, "【杭州市】中通快递 已揽收");
        assert_eq!(first.raw_code.as_deref(), Some("GOT"));
        assert_eq!(first.location, None);
        assert_eq!(trace.events[2].raw_code.as_deref(), Some("TMS_DELIVERING"));
    }

    #[test]
    fn tid_as_string_and_maximum_u64_stay_exact() {
        let body = r#"{"logistics_trace_search_response":{"tid":"18446744073709551615","status":"物流公司已接单"}}"#;
        assert_eq!(parse_response(body).unwrap().tid, Some(u64::MAX));
        let body = r#"{"logistics_trace_search_response":{"tid":9007199254740993,"status":"物流公司已接单"}}"#;
        assert_eq!(
            parse_response(body).unwrap().tid,
            Some(9_007_199_254_740_993)
        );
    }

    #[test]
    fn response_without_trace_list() {
        let body = r#"{"logistics_trace_search_response":{"out_sid":"","company_name":"中通速递","tid":42,"status":"物流公司已接单","request_id":"x"}}"#;
        let found = parse_response(body).unwrap();
        assert_eq!(found.trace.status, Status::InfoReceived);
        assert!(found.trace.events.is_empty());
        assert_eq!(found.trace.tracking_no, None);
        let body = r#"{"logistics_trace_search_response":{"tid":42,"status":"物流公司揽收成功","trace_list":{}}}"#;
        let found = parse_response(body).unwrap();
        assert_eq!(found.trace.status, Status::PickedUp);
        assert!(found.trace.events.is_empty());
        let body = r#"{"logistics_trace_search_response":{}}"#;
        assert_eq!(parse_response(body).unwrap().trace.status, Status::Pending);
    }

    /// The trace's steps as their descriptions, in the order the trace gives them.
    fn descriptions(trace: &Trace) -> Vec<&str> {
        trace
            .events
            .iter()
            .map(|e| e.description.as_str())
            .collect()
    }

    #[test]
    fn events_come_out_oldest_first_whatever_the_order_in() {
        let body = r#"{"logistics_trace_search_response":{"tid":1,"status":"物流公司揽收成功",
            "trace_list":{"transit_step_info":[
                {"status_time":"2026-11-21 07:10:00","status_desc":"派件","action":"SENT_SCAN"},
                {"status_time":"2026-11-20 09:30:00","status_desc":"到达b","action":"ARRIVAL"},
                {"status_time":"2026-11-20 09:30:00","status_desc":"到达a","action":"ARRIVAL"},
                {"status_time":"2026-11-20 08:00:01","status_desc":"揽收","action":"GOT"}
            ]}}}"#;
        let trace = parse_response(body).unwrap().trace;
        let descs = descriptions(&trace);
        assert_eq!(descs, ["揽收", "到达a", "到达b", "派件"]);
        assert_eq!(trace.status, Status::OutForDelivery);
    }

    /// Steps of one second (a parcel scanned and sent out together) keep the order TOP lists
    /// them in, oldest first, and the last of them decides the status.
    #[test]
    fn steps_of_the_same_second_keep_the_order_top_lists_them_in() {
        let body = r#"{"logistics_trace_search_response":{"tid":1,"status":"物流公司揽收成功",
            "trace_list":{"transit_step_info":[
                {"status_time":"2026-11-20 08:00:01","status_desc":"揽收","action":"GOT"},
                {"status_time":"2026-11-20 08:00:01","status_desc":"派件","action":"SENT_SCAN"}
            ]}}}"#;
        let trace = parse_response(body).unwrap().trace;
        let descs = descriptions(&trace);
        assert_eq!(descs, ["揽收", "派件"]);
        assert_eq!(trace.status, Status::OutForDelivery);
    }

    #[test]
    fn a_single_step_object_and_a_bad_time_are_tolerated() {
        let body = r#"{"logistics_trace_search_response":{"tid":1,"status":"物流公司揽收成功",
            "trace_list":{"transit_step_info":{"status_time":"2026-11-20 08:00:01","status_desc":"已揽收","action":"GOT"}}}}"#;
        assert_eq!(parse_response(body).unwrap().trace.events.len(), 1);
        let body = r#"{"logistics_trace_search_response":{"tid":1,"status":"物流公司揽收成功",
            "trace_list":{"transit_step_info":[
                {"status_time":"yesterday","status_desc":"?","action":"SIGNED"},
                {"status_time":"2026-11-20 08:00","status_desc":"已揽收","action":"GOT"}]}}}"#;
        let trace = parse_response(body).unwrap().trace;
        assert_eq!(trace.events.len(), 1);
        assert_eq!(trace.status, Status::PickedUp);
    }

    // ----- errors -----------------------------------------------------------------------------

    fn top_error(code: i64, sub_code: Option<&str>, sub_msg: Option<&str>) -> ProviderError {
        let mut error = serde_json::json!({"code": code, "msg": "Some message", "request_id": "r"});
        if let Some(sub_code) = sub_code {
            error["sub_code"] = sub_code.into();
        }
        if let Some(sub_msg) = sub_msg {
            error["sub_msg"] = sub_msg.into();
        }
        let body = serde_json::json!({ "error_response": error }).to_string();
        parse_response(&body).unwrap_err()
    }

    #[test]
    fn the_documented_ban_is_rate_limited_for_its_seconds() {
        let body = r#"{"error_response":{"code":7,"msg":"App Call Limited","sub_code":"accesscontrol.limited-by-app-access-count","sub_msg":"This ban will last for 31062 more seconds","request_id":"3vh1qb3wpo1k"}}"#;
        match parse_response(body).unwrap_err() {
            ProviderError::RateLimited {
                retry_after,
                message,
            } => {
                assert_eq!(retry_after, Duration::from_secs(31062));
                assert!(
                    message.starts_with("TOP error 7 App Call Limited ("),
                    "{message}"
                );
                assert!(message.contains("31062"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_codes_are_classified() {
        let ban = Some("This ban will last for 9 more seconds");
        let limited = |retry: u64| ProviderError::RateLimited {
            retry_after: Duration::from_secs(retry),
            message: String::new(),
        };
        let auth = || ProviderError::AuthExpired(String::new());
        let config = || ProviderError::Config(String::new());
        let cases: Vec<(i64, Option<&str>, Option<&str>, ProviderError)> = vec![
            (4, None, None, limited(60)),
            (5, None, ban, limited(9)),
            (6, None, None, limited(60)),
            (7, None, ban, limited(9)),
            (8, None, ban, limited(9)),
            (7, None, None, limited(60)),
            (
                15,
                Some("accesscontrol.limited-by-api-access-count"),
                ban,
                limited(9),
            ),
            (27, None, None, auth()),
            (26, None, None, auth()),
            (53, None, None, auth()),
            (15, Some("isv.invalid-sessionkey"), None, auth()),
            (15, Some("invalid-sessionkey"), None, auth()),
            (27, Some("isv.whatever"), None, auth()),
            (31, None, None, config()),
            (15, Some("isv.invalid-timestamp"), None, config()),
            (11, None, None, config()),
            (25, None, None, config()),
            (28, None, None, config()),
            (29, None, None, config()),
            (40, None, None, ProviderError::Permanent(String::new())),
            (41, None, None, ProviderError::Permanent(String::new())),
            (
                15,
                Some("isv.invalid-parameter:tid"),
                None,
                ProviderError::Permanent(String::new()),
            ),
            (15, None, None, ProviderError::Transient(String::new())),
            (
                15,
                Some("isp.remote-service-timeout"),
                None,
                ProviderError::Transient(String::new()),
            ),
            (
                99,
                Some("isp.top-remote-unknown-error"),
                None,
                ProviderError::Transient(String::new()),
            ),
            (
                15,
                Some("isv.trade-not-exist"),
                None,
                ProviderError::Unconfirmed(String::new()),
            ),
            (
                15,
                Some("isv.logistics-trace-not-found"),
                None,
                ProviderError::Unconfirmed(String::new()),
            ),
            (10, None, None, ProviderError::Transient(String::new())),
        ];
        for (code, sub_code, sub_msg, expected) in cases {
            let got = top_error(code, sub_code, sub_msg);
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&expected),
                "code {code} {sub_code:?}: {got:?}"
            );
            if let (
                ProviderError::RateLimited { retry_after, .. },
                ProviderError::RateLimited {
                    retry_after: want, ..
                },
            ) = (&got, &expected)
            {
                assert_eq!(retry_after, want, "code {code}");
            }
            assert!(
                got.to_string()
                    .contains(&format!("TOP error {code} Some message")),
                "{got}"
            );
        }
    }

    #[test]
    fn a_refused_timestamp_says_the_clock_is_wrong() {
        let body = r#"{"error_response":{"code":31,"msg":"Invalid Timestamp"}}"#;
        match parse_response(body).unwrap_err() {
            ProviderError::Config(message) => {
                assert!(message.contains("clock"), "{message}");
                assert!(
                    message.contains("TOP error 31 Invalid Timestamp"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_messages_say_what_it_was() {
        let body = r#"{"error_response":{"code":25,"msg":"Invalid signature","sub_code":"isv.invalid-signature","sub_msg":"check the secret"}}"#;
        let err = parse_response(body).unwrap_err();
        assert_eq!(
            err,
            ProviderError::Config(
                "TOP error 25 Invalid signature (isv.invalid-signature: check the secret)"
                    .to_owned()
            )
        );
        let body = r#"{"error_response":{"code":"27","msg":"Invalid session"}}"#;
        assert_eq!(
            parse_response(body).unwrap_err(),
            ProviderError::AuthExpired("TOP error 27 Invalid session".to_owned())
        );
    }

    /// One row per kind of ban text: the pause it gives, at least a second and at most a day.
    #[test]
    fn ban_seconds_are_read_from_the_text_and_capped() {
        let day = crate::providers::MAX_BAN;
        let table: &[(&str, Duration)] = &[
            (
                "This ban will last for 31062 more seconds",
                Duration::from_secs(31062),
            ),
            (
                "This ban will last for 1 more seconds",
                Duration::from_secs(1),
            ),
            (
                "This ban will last for 0 more seconds",
                Duration::from_secs(1),
            ),
            ("This ban will last for 86400 more seconds", day),
            ("This ban will last for 86401 more seconds", day),
            (
                "This ban will last for 18446744073709551615 more seconds",
                day,
            ),
            (
                "This ban will last for 99999999999999999999999 more seconds",
                day,
            ),
            ("This ban will last for  more seconds", DEFAULT_BAN),
            ("App Call Limited", DEFAULT_BAN),
            ("", DEFAULT_BAN),
        ];
        for (sub_msg, pause) in table {
            let body = format!(
                r#"{{"error_response":{{"code":7,"msg":"App Call Limited","sub_code":"accesscontrol.limited-by-app-access-count","sub_msg":"{sub_msg}"}}}}"#
            );
            match parse_response(&body) {
                Err(ProviderError::RateLimited { retry_after, .. }) => {
                    assert_eq!(retry_after, *pause, "{sub_msg:?}");
                }
                other => panic!("{sub_msg:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_bodies_are_transient_and_described() {
        let long_html = format!("<html><body>{}</body></html>", "访问受限 ".repeat(100));
        let bodies = [
            "",
            "   \n",
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>",
            long_html.as_str(),
            r#"{"logistics_trace_search_response":{"tid":"#,
            "null",
            "[]",
            "42",
            r#"{"something_else":{"code":1}}"#,
            "\u{feff}{}",
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
            ProviderError::Transient("empty body from TOP".to_owned())
        );
    }

    // ----- request ----------------------------------------------------------------------------

    #[test]
    fn order_ids_must_be_numeric_tids() {
        assert_eq!(
            parse_tid("1234567890123456789").unwrap(),
            1_234_567_890_123_456_789
        );
        assert_eq!(parse_tid(" 42 ").unwrap(), 42);
        assert_eq!(parse_tid("42#2").unwrap(), 42);
        assert_eq!(parse_tid("42#parcel-b").unwrap(), 42);
        for bad in [
            "E2026-001",
            "",
            "-5",
            "12.5",
            "99999999999999999999",
            "#2",
            "x#2",
        ] {
            match parse_tid(bad) {
                Err(ProviderError::Permanent(message)) => {
                    assert!(message.contains("numeric order id (tid)"), "{message}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    /// An adapter on TOP's endpoint whose secret and session are `helloworld` and `test`.
    fn adapter() -> Taobao {
        Taobao::new(
            TaobaoConfig {
                endpoint: DEFAULT_ENDPOINT.to_owned(),
                app_key: "12345678".to_owned(),
                app_secret: Secret::new("helloworld"),
                session: Secret::new("test"),
                sign_method: SignMethod::HmacSha256,
                seller_nick: None,
            },
            reqwest::Client::new(),
        )
    }

    /// A row TOP could never be asked about is refused when it is added or checked, with the
    /// column to mend named; a tid with its parcel and its sub-orders is fine.
    #[test]
    fn a_request_top_cannot_answer_is_unfit_and_names_its_column() {
        let taobao = adapter();
        let request = |order_id: &str, sub_orders: Option<&str>| TrackRequest {
            order_id: order_id.to_owned(),
            tracking_no: None,
            carrier: None,
            phone: None,
            sub_orders: sub_orders.map(str::to_owned),
            created_at: 0,
        };
        assert!(taobao.check(&request("42#2", Some("7, 8"))).is_ok());
        let unfit = taobao.check(&request("E2026-001", None)).unwrap_err();
        assert_eq!(unfit.field, "order_id");
        assert!(
            unfit.message.contains("numeric order id (tid)"),
            "{}",
            unfit.message
        );
        let unfit = taobao.check(&request("42", Some("7;8"))).unwrap_err();
        assert_eq!(unfit.field, "sub_orders");
    }

    /// The adapter in a log line names its endpoint and app key, and never its secret or the
    /// shop's session.
    #[test]
    fn the_adapter_debugs_without_its_secrets() {
        let shown = format!("{:?}", adapter());
        assert!(shown.starts_with("Taobao"), "{shown}");
        assert!(shown.contains(DEFAULT_ENDPOINT), "{shown}");
        assert!(shown.contains("12345678"), "{shown}");
        assert!(!shown.contains("helloworld"), "{shown}");
        assert!(!shown.contains("\"test\""), "{shown}");
    }

    #[test]
    fn the_form_carries_every_system_parameter_and_a_valid_signature() {
        let taobao = adapter();
        let order = Order {
            tid: 1_234_567_890_123_456_789,
            sub_tids: Vec::new(),
        };
        let form = taobao.form(&order, "2016-01-01 12:00:00");
        assert!(
            form.iter()
                .all(|(k, _)| !["is_split", "sub_tid", "seller_nick"].contains(k))
        );
        let get = |key: &str| {
            form.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("method"), "taobao.logistics.trace.search");
        assert_eq!(get("v"), "2.0");
        assert_eq!(get("format"), "json");
        assert_eq!(get("sign_method"), "hmac-sha256");
        assert_eq!(get("tid"), "1234567890123456789");
        // The DESIGN.md vector, reached through the adapter's own form.
        assert_eq!(
            get("sign"),
            "2B67FC79B6AB2D6CE18E38A75995A2B1995D78994AB258C57E16897304966D6C"
        );
        assert_eq!(taobao.kind(), "taobao");
        let debug = format!("{taobao:?}");
        assert!(!debug.contains("helloworld"), "{debug}");
    }

    #[test]
    fn sub_orders_are_numbers_separated_by_commas() {
        assert_eq!(parse_sub_tids("").unwrap(), Vec::<u64>::new());
        assert_eq!(parse_sub_tids("111").unwrap(), [111]);
        assert_eq!(parse_sub_tids("111, 222").unwrap(), [111, 222]);
        for bad in ["111,", "a,b", "111;222", ",", "1.5"] {
            match parse_sub_tids(bad) {
                Err(ProviderError::Permanent(message)) => {
                    assert!(message.contains("like 111,222"), "{message}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
