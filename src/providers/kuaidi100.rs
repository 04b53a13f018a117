//! Kuaidi100 real-time query (`poll/query.do`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use md5::{Digest, Md5};
use serde::{Deserialize, Deserializer, Serialize};

use super::{
    Provider, ProviderError, Scalar, Trace, TraceEvent, TrackRequest, UnfitRequest, snippet,
};
use crate::domain::{Phone, Secret, Status};

pub const DEFAULT_ENDPOINT: &str = "https://poll.kuaidi100.com/poll/query.do";
/// Kuaidi100 locks a waybill that is queried more often than this.
const MIN_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Asks for the sub-states (101, 1002, 501, 204…) rather than the eight coarse ones.
pub(super) const RESULT_V2: &str = "4";
/// Carriers that refuse to answer without the recipient's (or sender's) phone: 顺丰速运,
/// 顺丰快运 and 中通快递, per the `phone` row of Kuaidi100's real-time query documentation
/// (https://api.kuaidi100.com/document/5f0ffb5ebc8da837cbd8aefc, 实时快递查询接口).
const PHONE_CARRIERS: [&str; 3] = ["shunfeng", "shunfengkuaiyun", "zhongtong"];

/// Signs a query: uppercase hex MD5 of `param + key + customer`, over the exact `param` sent.
pub fn sign(param: &str, key: &str, customer: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(param.as_bytes());
    hasher.update(key.as_bytes());
    hasher.update(customer.as_bytes());
    hex::encode_upper(hasher.finalize())
}

/// Everything the adapter needs to call Kuaidi100 for one enterprise account.
#[derive(Debug, Clone)]
pub struct Kuaidi100Config {
    pub endpoint: String,
    /// The account's `customer` id.
    pub customer: String,
    /// The authorisation key that signs every query.
    pub key: Secret,
    /// Subscription push instead of the real-time query (`mode = "push"`), when set.
    pub push: Option<super::kuaidi100_push::PushConfig>,
}

/// The real-time query adapter.
pub struct Kuaidi100 {
    config: Kuaidi100Config,
    http: reqwest::Client,
}

/// The `param` JSON. Field order is wire order: the signature covers the serialised text.
#[derive(Debug, Serialize)]
struct Param<'a> {
    com: &'a str,
    num: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<&'a str>,
    resultv2: &'a str,
}

/// A shipment reduced to what Kuaidi100 is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Query {
    pub(super) com: String,
    pub(super) num: String,
    pub(super) phone: Option<Phone>,
}

impl Query {
    fn param(&self) -> String {
        let param = Param {
            com: &self.com,
            num: &self.num,
            phone: self.phone.as_ref().map(Phone::as_str),
            resultv2: RESULT_V2,
        };
        serde_json::to_string(&param).expect("a struct of strings serialises")
    }
}

impl Kuaidi100 {
    /// `http` should carry a request timeout: the adapter adds none of its own, so that one
    /// client-wide setting governs every provider.
    pub fn new(config: Kuaidi100Config, http: reqwest::Client) -> Self {
        Kuaidi100 { config, http }
    }

    fn form(&self, query: &Query) -> Vec<(&'static str, String)> {
        let param = query.param();
        let signature = sign(&param, self.config.key.expose(), &self.config.customer);
        vec![
            ("customer", self.config.customer.clone()),
            ("param", param),
            ("sign", signature),
        ]
    }
}

/// POSTs a form to one of Kuaidi100's endpoints and gives the body of a 200 answer, as text;
/// a failed request or another status is classified as for every provider.
pub(super) async fn post_form(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&'static str, String)],
) -> Result<String, ProviderError> {
    let response = http
        .post(endpoint)
        .form(form)
        .send()
        .await
        .map_err(|err| super::transport_error("Kuaidi100", &err))?;
    let status = response.status();
    let retry_after = super::retry_after_secs(&response);
    let body = super::read_response(response).await?;
    let body = String::from_utf8_lossy(&body).into_owned();
    match super::http_failure("Kuaidi100", status, retry_after, &body) {
        Some(failure) => Err(failure),
        None => Ok(body),
    }
}

impl fmt::Debug for Kuaidi100 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kuaidi100")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Provider for Kuaidi100 {
    fn kind(&self) -> &'static str {
        "kuaidi100"
    }

    fn check(&self, request: &TrackRequest) -> Result<(), UnfitRequest> {
        check(request)
    }

    fn min_interval(&self) -> Duration {
        MIN_INTERVAL
    }

    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError> {
        let query = to_query(request)?;
        let body = post_form(&self.http, &self.config.endpoint, &self.form(&query)).await?;
        let trace = parse_response(&body)?;
        if let Some(answered) = &trace.tracking_no
            && !same_number(answered, &query.num)
        {
            // Serving another parcel's trace would notify the wrong buyer; better to retry.
            return Err(ProviderError::Transient(format!(
                "Kuaidi100 answered for {answered} when asked for {}",
                query.num
            )));
        }
        Ok(trace)
    }
}

pub(super) fn same_number(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// What a shipment must carry for Kuaidi100 ([`to_query`]). Pure, so a shipment is checked
/// without an adapter or its HTTP client.
pub fn check(request: &TrackRequest) -> Result<(), UnfitRequest> {
    to_query(request).map(drop)
}

/// What the shipment must carry: the carrier's Kuaidi100 code, the tracking number and, for the
/// carriers that insist, a phone. Every missing piece is named in one line.
pub(super) fn to_query(request: &TrackRequest) -> Result<Query, UnfitRequest> {
    let carrier = request.carrier.as_deref().map(str::trim).unwrap_or("");
    let num = request.tracking_no.as_deref().map(str::trim).unwrap_or("");
    // Kuaidi100 codes are lowercase; a shop that typed `ZhongTong` still means zhongtong.
    let com = carrier.to_ascii_lowercase();
    // The whole number, as Kuaidi100 asks (收、寄件人的电话号码, on the real-time query page
    // https://api.kuaidi100.com/document/5f0ffb5ebc8da837cbd8aefc). It would take a landline or
    // a virtual number's extension too, but a shipment's phone is a mainland mobile's 11 digits.
    let phone = request.phone.clone();

    let mut missing = Vec::new();
    if com.is_empty() {
        missing.push((
            "carrier",
            "the carrier code (--carrier, e.g. yuantong)".to_owned(),
        ));
    } else if !com.bytes().all(|b| b.is_ascii_alphanumeric()) {
        missing.push(("carrier", format!(
            "the carrier's Kuaidi100 code such as yuantong or zhongtong, not {carrier:?} (--carrier)"
        )));
    }
    if num.is_empty() {
        missing.push((
            "tracking_no",
            "the tracking number (--tracking-no)".to_owned(),
        ));
    }
    if PHONE_CARRIERS.contains(&com.as_str()) && phone.is_none() {
        missing.push(("phone", format!(
            "the recipient's phone for {com} (--phone, the whole number: Kuaidi100 checks it against the waybill)"
        )));
    }
    if let Some((field, _)) = missing.first() {
        let pieces: Vec<String> = missing.iter().map(|(_, piece)| piece.clone()).collect();
        return Err(UnfitRequest::new(
            field,
            format!("kuaidi100 needs {}", join_and(&pieces)),
        ));
    }
    Ok(Query {
        com,
        num: num.to_owned(),
        phone,
    })
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

// ---------------------------------------------------------------------------------------------
// Wire format

/// A success and an error share one shape: a success has `status` 200 and the trace, an error
/// `result: false` and a `returnCode`.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default, deserialize_with = "lenient_string")]
    message: Option<String>,
    #[serde(default, rename = "returnCode", deserialize_with = "lenient_string")]
    return_code: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    state: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    nu: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    com: Option<String>,
    #[serde(default)]
    data: Option<Vec<Entry>>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default, deserialize_with = "lenient_string")]
    time: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    ftime: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    context: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    location: Option<String>,
    #[serde(default, rename = "areaName", deserialize_with = "lenient_string")]
    area_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    status: Option<String>,
    #[serde(default, rename = "statusCode", deserialize_with = "lenient_string")]
    status_code: Option<String>,
}

fn lenient_string<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Scalar>::deserialize(de)? {
        Some(Scalar::Text(text)) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
        Some(Scalar::Unsigned(n)) => Some(n.to_string()),
        Some(Scalar::Signed(n)) => Some(n.to_string()),
        Some(Scalar::Bool(_) | Scalar::Other) | None => None,
    })
}

pub(crate) fn parse_response(body: &str) -> Result<Trace, ProviderError> {
    if body.trim().is_empty() {
        return Err(ProviderError::Transient(
            "empty body from Kuaidi100".to_owned(),
        ));
    }
    let answer: Answer = serde_json::from_str(body).map_err(|err| {
        ProviderError::Transient(format!(
            "unreadable answer from Kuaidi100 ({err}): {}",
            snippet(body)
        ))
    })?;
    if let Some(code) = answer.return_code.as_deref()
        && code != "200"
    {
        return Err(classify(code, answer.message.as_deref()));
    }
    let ok = match answer.status.as_deref() {
        Some(status) => status == "200",
        None => answer.message.as_deref() == Some("ok"),
    };
    if !ok {
        return Err(ProviderError::Transient(format!(
            "Kuaidi100 answered neither a trace nor an error: {}",
            snippet(body)
        )));
    }
    let events = super::oldest_first(
        answer
            .data
            .unwrap_or_default()
            .into_iter()
            .filter_map(event)
            .collect(),
    );
    let raw_status = answer.state.unwrap_or_default();
    let (status, unmapped) = map_state(&raw_status, !events.is_empty());
    Ok(Trace {
        status,
        raw_status,
        events,
        carrier: answer.com,
        tracking_no: answer.nu,
        unmapped,
    })
}

fn event(entry: Entry) -> Option<TraceEvent> {
    let time = [entry.ftime.as_deref(), entry.time.as_deref()]
        .into_iter()
        .flatten()
        .find_map(super::parse_local_time);
    let Some(time) = time else {
        // One bad timestamp must not hide the rest of the journey, nor fail every poll.
        tracing::warn!(
            ftime = entry.ftime.as_deref().unwrap_or(""),
            time = entry.time.as_deref().unwrap_or(""),
            "skipping Kuaidi100 trace entry with an unreadable time"
        );
        return None;
    };
    Some(TraceEvent {
        time,
        description: entry.context.unwrap_or_default(),
        location: entry.location.or(entry.area_name),
        // The code is the stable vocabulary; the text is its label and may be reworded.
        raw_code: entry.status_code.or(entry.status),
    })
}

// ---------------------------------------------------------------------------------------------
// Errors

/// What a returnCode 400 is about. Kuaidi100's documentation gives one meaning for two causes
/// (提交的数据不完整，或者贵公司没授权: incomplete data, or the account is not authorised), so
/// the message tells them apart. An account problem fails every query alike: it stops the
/// provider, as rejected credentials do, instead of marking each shipment invalid in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not authorised for the real-time query: a configuration problem.
    Unauthorised,
    /// No balance or queries left: the account needs renewing, as for 601.
    NoBalance,
}

/// Words of a returnCode 400 message that mean the account, not the shipment, tried in order.
/// `授权` covers 没授权, 未授权 and 授权码错误 alike.
const ACCOUNT_WORDS: &[(&str, Refusal)] = &[
    ("授权", Refusal::Unauthorised),
    ("余额", Refusal::NoBalance),
    ("欠费", Refusal::NoBalance),
    ("充值", Refusal::NoBalance),
];

fn account_refusal(message: &str) -> Option<Refusal> {
    ACCOUNT_WORDS
        .iter()
        .find(|(word, _)| message.contains(word))
        .map(|(_, refusal)| *refusal)
}

/// Classifies a `returnCode` by the return-code table of Kuaidi100's real-time query
/// documentation (https://api.kuaidi100.com/document/5f0ffb5ebc8da837cbd8aefc, 返回码).
fn classify(code: &str, message: Option<&str>) -> ProviderError {
    let text = match message {
        Some(message) => format!("Kuaidi100 returnCode {code} {message}"),
        None => format!("Kuaidi100 returnCode {code}"),
    };
    match code {
        // Carriers often publish a waybill hours after it is printed: ask again later.
        "500" => ProviderError::NotFound(text),
        "400" => match account_refusal(message.unwrap_or("")) {
            Some(Refusal::Unauthorised) => ProviderError::Config(format!(
                "{text}: the kuaidi100 account is not authorised for the real-time query; check customer and key, and that the service is enabled for the account"
            )),
            Some(Refusal::NoBalance) => ProviderError::AuthExpired(format!(
                "{text}: the kuaidi100 account has no balance or queries left; top it up, then reload or restart"
            )),
            None => ProviderError::Permanent(format!(
                "{text}: check the carrier code (--carrier, e.g. yuantong) and the tracking number"
            )),
        },
        "408" => ProviderError::Permanent(format!(
            "{text}: the carrier needs the recipient's phone (--phone, the whole number)"
        )),
        "503" => ProviderError::Config(format!(
            "{text}: the signature was refused; check the kuaidi100 key and customer"
        )),
        "601" => ProviderError::AuthExpired(format!(
            "{text}: the kuaidi100 key has expired or run out of queries"
        )),
        // 501 and 502 are Kuaidi100's own server faults; anything new is treated the same
        // rather than dropping a shipment over a code nobody has seen yet.
        _ => ProviderError::Transient(text),
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical status

/// Every `state` Kuaidi100 documents with `resultv2=4`: the coarse states and their sub-states,
/// as listed in 运单快递状态(state)说明 of the real-time query documentation
/// (https://api.kuaidi100.com/document/5f0ffb5ebc8da837cbd8aefc; the same table is in Kuaidi100's
/// API manual at https://apifox.com/apidoc/project-514987/api-8562559). Only 签收 and 退签 end
/// polling: a parcel refused or on its way back still has a journey to report.
///
/// `ischeck` is not read: the documentation calls it a signed-for flag to ignore (是否签收标记，
/// 请忽略，明细状态请参考state字段), so a `1` beside a state that is not final ends nothing.
const STATES: &[(&str, Status)] = &[
    // 揽收
    ("1", Status::PickedUp),
    ("101", Status::InfoReceived), // 已下单
    ("102", Status::InfoReceived), // 待揽收
    ("103", Status::PickedUp),     // 已揽收
    // 在途
    ("0", Status::InTransit),
    ("1001", Status::InTransit), // 到达派件城市
    ("1002", Status::InTransit), // 干线
    ("1003", Status::InTransit), // 转递: readdressed, still moving
    // 派件
    ("5", Status::OutForDelivery),
    ("501", Status::AvailableForPickup), // 投柜或驿站
    // 签收
    ("3", Status::Delivered),
    ("301", Status::Delivered), // 本人签收
    ("302", Status::Delivered), // 派件异常后签收
    ("303", Status::Delivered), // 代签
    // 投柜或站签收: the carrier closes the waybill here; no later scan will report the buyer
    // collecting it, so waiting for one would only poll until expiry.
    ("304", Status::Delivered),
    // 退回: 快件正处于返回发货人的途中, on its way back. Not returned yet: a problem for the
    // shop, with the raw state kept, and polled until 退签 says it is back.
    ("6", Status::Exception),
    // 退签: 此快件单已退签, back with the sender.
    ("4", Status::Returned),
    // 已销单: the waybill was cancelled. Not a parcel back with the sender, and a false terminal
    // status would stop polling for good, so the shop is told of a problem instead.
    ("401", Status::Exception),
    // 拒签: 收件人拒签快件, refused by the buyer. The documentation does not call it final and the
    // carrier goes on to report the way back (6, then 4), so it is polled on.
    ("14", Status::Exception),
    // 转投: handed to another carrier, still moving.
    ("7", Status::InTransit),
    // 疑难
    ("2", Status::Exception),
    ("201", Status::Exception),     // 超时未签收
    ("202", Status::Exception),     // 超时未更新
    ("203", Status::Exception),     // 拒收, waiting for the sender's decision
    ("204", Status::FailedAttempt), // 派件异常
    // 柜或驿站超时未取: still in the locker and the remedy is to collect it; `exception` would
    // tell the buyer something went wrong with the parcel.
    ("205", Status::AvailableForPickup),
    ("206", Status::FailedAttempt), // 无法联系
    ("207", Status::Exception),     // 超区
    ("208", Status::Exception),     // 滞留
    ("209", Status::Exception),     // 破损
    ("210", Status::Exception),     // 销单
    // 清关
    ("8", Status::InTransit),
    ("10", Status::InTransit), // 待清关
    ("11", Status::InTransit), // 清关中
    ("12", Status::InTransit), // 已清关
    ("13", Status::Exception), // 清关异常
];

fn state_status(state: &str) -> Option<Status> {
    let state = state.trim();
    STATES
        .iter()
        .find(|(code, _)| *code == state)
        .map(|(_, status)| *status)
}

/// The canonical status of a `state`, with the raw value no table knew (`state=…`), logged once
/// per process. An unknown state falls back on what the events alone can tell.
fn map_state(state: &str, has_events: bool) -> (Status, Vec<String>) {
    let state = state.trim();
    if let Some(status) = state_status(state) {
        return (status, Vec::new());
    }
    let mut unmapped = Vec::new();
    if !state.is_empty() {
        let value = format!("state={state}");
        super::note_unmapped("kuaidi100", &value);
        unmapped.push(value);
    }
    // There are scans, so the parcel is moving; anything stronger would be a guess.
    let status = if has_events {
        Status::InTransit
    } else {
        Status::Pending
    };
    (status, unmapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Kuaidi100Config {
        Kuaidi100Config {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            customer: "TESTCUSTOMER".to_owned(),
            key: Secret::new("testkey"),
            push: None,
        }
    }

    fn adapter() -> Kuaidi100 {
        Kuaidi100::new(config(), reqwest::Client::new())
    }

    fn request(carrier: Option<&str>, num: Option<&str>, phone: Option<&str>) -> TrackRequest {
        TrackRequest {
            order_id: "E20261120-0001".to_owned(),
            tracking_no: num.map(str::to_owned),
            carrier: carrier.map(str::to_owned),
            phone: phone.map(|p| Phone::parse(p).expect("a mobile")),
            ..TrackRequest::default()
        }
    }

    // ----- request ----------------------------------------------------------------------------

    #[test]
    fn design_vector() {
        assert_eq!(
            sign(
                r#"{"com":"yuantong","num":"YT1234567890","resultv2":"4"}"#,
                "testkey",
                "TESTCUSTOMER"
            ),
            "FA7EB816944CA58C4AD495F4A3B7F50D"
        );
    }

    #[test]
    fn the_param_is_compact_json_in_wire_order() {
        let query = to_query(&request(Some("yuantong"), Some("YT1234567890"), None)).unwrap();
        assert_eq!(
            query.param(),
            r#"{"com":"yuantong","num":"YT1234567890","resultv2":"4"}"#
        );
        let query = query_of("zhongtong", "ZT75312345678", "13800138000");
        assert_eq!(
            query.param(),
            r#"{"com":"zhongtong","num":"ZT75312345678","phone":"13800138000","resultv2":"4"}"#
        );
    }

    fn query_of(carrier: &str, num: &str, phone: &str) -> Query {
        to_query(&request(Some(carrier), Some(num), Some(phone))).unwrap()
    }

    #[test]
    fn the_form_signs_the_param_it_sends() {
        let kuaidi100 = adapter();
        let form = kuaidi100
            .form(&to_query(&request(Some("yuantong"), Some("YT1234567890"), None)).unwrap());
        let keys: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["customer", "param", "sign"]);
        assert_eq!(form[0].1, "TESTCUSTOMER");
        assert_eq!(
            form[1].1,
            r#"{"com":"yuantong","num":"YT1234567890","resultv2":"4"}"#
        );
        // The DESIGN.md vector, reached through the adapter's own form.
        assert_eq!(form[2].1, "FA7EB816944CA58C4AD495F4A3B7F50D");
        let phoned = kuaidi100.form(&query_of("shunfeng", "SF1234567890", "+86 138-0013-8000"));
        assert_eq!(phoned[2].1, sign(&phoned[1].1, "testkey", "TESTCUSTOMER"));
    }

    #[test]
    fn kind_interval_and_debug() {
        let kuaidi100 = adapter();
        assert_eq!(kuaidi100.kind(), "kuaidi100");
        assert_eq!(kuaidi100.min_interval(), Duration::from_secs(1800));
        let debug = format!("{kuaidi100:?}");
        assert!(!debug.contains("testkey"), "{debug}");
        assert!(debug.contains("TESTCUSTOMER"), "{debug}");
    }

    #[test]
    fn the_whole_phone_number_is_sent() {
        // However the shop wrote it, the number is sent as its 11 digits.
        for written in ["13800138123", "+86 138-0013-8123", "008613800138123"] {
            assert_eq!(
                query_of("zhongtong", "ZT1", written).param(),
                r#"{"com":"zhongtong","num":"ZT1","phone":"13800138123","resultv2":"4"}"#,
                "{written:?}"
            );
        }
        // Carriers that do not need it still get it: Kuaidi100 uses it to tell waybills apart.
        let query = query_of("yuantong", "YT1", "13800138000");
        assert_eq!(query.phone.as_ref().map(Phone::as_str), Some("13800138000"));
        let query = to_query(&request(Some("yuantong"), Some("YT1"), None)).unwrap();
        assert_eq!(query.phone, None);
    }

    #[test]
    fn carrier_codes_are_trimmed_and_lowercased() {
        let query = to_query(&request(Some(" YuanTong "), Some(" YT1 "), None)).unwrap();
        assert_eq!(query.com, "yuantong");
        assert_eq!(query.num, "YT1");
    }

    #[test]
    fn check_names_every_missing_piece_in_one_line() {
        let kuaidi100 = adapter();
        let cases = [
            (
                "carrier",
                request(None, None, None),
                "kuaidi100 needs the carrier code (--carrier, e.g. yuantong) and the tracking number (--tracking-no)",
            ),
            (
                "carrier",
                request(Some(""), Some("YT1"), None),
                "kuaidi100 needs the carrier code (--carrier, e.g. yuantong)",
            ),
            (
                "tracking_no",
                request(Some("yuantong"), Some("  "), None),
                "kuaidi100 needs the tracking number (--tracking-no)",
            ),
            (
                "phone",
                request(Some("shunfeng"), Some("SF1"), None),
                "kuaidi100 needs the recipient's phone for shunfeng (--phone, the whole number: Kuaidi100 checks it against the waybill)",
            ),
            (
                "phone",
                request(Some("shunfengkuaiyun"), Some("SF1"), None),
                "kuaidi100 needs the recipient's phone for shunfengkuaiyun (--phone, the whole number: Kuaidi100 checks it against the waybill)",
            ),
            (
                "tracking_no",
                request(Some("ZhongTong"), None, None),
                "kuaidi100 needs the tracking number (--tracking-no) and the recipient's phone for zhongtong (--phone, the whole number: Kuaidi100 checks it against the waybill)",
            ),
            (
                "carrier",
                request(Some("圆通"), None, None),
                "kuaidi100 needs the carrier's Kuaidi100 code such as yuantong or zhongtong, not \"圆通\" (--carrier) and the tracking number (--tracking-no)",
            ),
        ];
        for (field, request, expected) in cases {
            assert_eq!(
                kuaidi100.check(&request),
                Err(UnfitRequest::new(field, expected)),
                "{request:?}"
            );
            assert!(!expected.contains('\n'));
        }
        for ok in [
            request(Some("yuantong"), Some("YT1234567890"), None),
            request(Some("zhongtong"), Some("ZT1"), Some("13800138000")),
            request(Some("shunfeng"), Some("SF1"), Some("+86 138-0013-8000")),
        ] {
            assert_eq!(kuaidi100.check(&ok), Ok(()), "{ok:?}");
        }
    }

    #[tokio::test]
    async fn fetch_refuses_what_check_refuses_without_a_request() {
        // An endpoint nothing listens on: reaching it would be a Transient error, not Permanent.
        let kuaidi100 = Kuaidi100::new(
            Kuaidi100Config {
                endpoint: "http://127.0.0.1:9/poll/query.do".to_owned(),
                ..config()
            },
            reqwest::Client::new(),
        );
        let bad = request(Some("zhongtong"), Some("ZT1"), None);
        let expected = kuaidi100.check(&bad).unwrap_err().to_string();
        assert_eq!(
            kuaidi100.fetch(&bad).await.unwrap_err(),
            ProviderError::Permanent(expected)
        );
    }

    // ----- canonical status -------------------------------------------------------------------

    #[test]
    fn every_state_row() {
        use Status::*;
        let expected = [
            ("1", PickedUp),
            ("101", InfoReceived),
            ("102", InfoReceived),
            ("103", PickedUp),
            ("0", InTransit),
            ("1001", InTransit),
            ("1002", InTransit),
            ("1003", InTransit),
            ("5", OutForDelivery),
            ("501", AvailableForPickup),
            ("3", Delivered),
            ("301", Delivered),
            ("302", Delivered),
            ("303", Delivered),
            ("304", Delivered),
            ("6", Exception),
            ("4", Returned),
            ("401", Exception),
            ("14", Exception),
            ("7", InTransit),
            ("2", Exception),
            ("201", Exception),
            ("202", Exception),
            ("203", Exception),
            ("204", FailedAttempt),
            ("205", AvailableForPickup),
            ("206", FailedAttempt),
            ("207", Exception),
            ("208", Exception),
            ("209", Exception),
            ("210", Exception),
            ("8", InTransit),
            ("10", InTransit),
            ("11", InTransit),
            ("12", InTransit),
            ("13", Exception),
        ];
        assert_eq!(expected.len(), STATES.len());
        for (state, status) in expected {
            assert_eq!(state_status(state), Some(status), "{state}");
            // The state settles it, with or without events.
            assert_eq!(map_state(state, false), (status, Vec::new()), "{state}");
            assert_eq!(map_state(state, true), (status, Vec::new()), "{state}");
        }
        let mut codes: Vec<&str> = STATES.iter().map(|(code, _)| *code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), STATES.len(), "a state is listed twice");
    }

    #[test]
    fn only_delivered_and_returned_states_end_polling() {
        let terminal: Vec<&str> = STATES
            .iter()
            .filter(|(_, status)| status.is_terminal())
            .map(|(code, _)| *code)
            .collect();
        assert_eq!(terminal, ["3", "301", "302", "303", "304", "4"]);
    }

    #[test]
    fn unknown_states_fall_back_to_safe_statuses() {
        assert_eq!(
            map_state("999", true),
            (Status::InTransit, vec!["state=999".to_owned()])
        );
        assert_eq!(
            map_state(" 305 ", false),
            (Status::Pending, vec!["state=305".to_owned()])
        );
        assert_eq!(map_state("", true), (Status::InTransit, Vec::new()));
        assert_eq!(map_state("", false), (Status::Pending, Vec::new()));
    }

    // ----- parsing ----------------------------------------------------------------------------

    const FULL: &str = r#"{"message":"ok","nu":"YT1234567890","ischeck":"1","condition":"F00",
        "com":"yuantong","status":"200","state":"3","data":[
        {"time":"2026-11-21 10:05:00","ftime":"2026-11-21 10:05:00","context":"【上海市】快件已签收，签收人：本人","location":"","areaName":"上海,上海市","status":"签收","statusCode":"3"},
        {"time":"2026-11-21 07:10:00","ftime":"2026-11-21 07:10:00","context":"【上海市】快递员正在派件","location":"上海市浦东新区","areaName":null,"status":"派件"},
        {"time":"2026-11-20 09:30:00","ftime":"2026-11-20 09:30:00","context":"快件已到达【杭州转运中心】","areaCode":"CN330100000000","areaName":"浙江,杭州市","status":"在途","statusCode":"0"},
        {"time":"2026-11-20 08:00:01","ftime":"2026-11-20 08:00:01","context":"【杭州市】圆通快递 已揽收","status":"揽收","statusCode":"1"}
    ]}"#;

    #[test]
    fn full_success_response() {
        let trace = parse_response(FULL).unwrap();
        assert_eq!(trace.status, Status::Delivered);
        assert_eq!(trace.raw_status, "3");
        assert_eq!(trace.carrier.as_deref(), Some("yuantong"));
        assert_eq!(trace.tracking_no.as_deref(), Some("YT1234567890"));
        assert!(trace.unmapped.is_empty());
        assert_eq!(trace.events.len(), 4);
        let first = &trace.events[0];
        assert_eq!(first.time.to_rfc3339(), "2026-11-20T08:00:01+08:00");
        assert_eq!(first.description, "【杭州市】圆通快递 已揽收");
        assert_eq!(first.raw_code.as_deref(), Some("1"));
        assert_eq!(first.location, None);
        assert_eq!(trace.events[1].location.as_deref(), Some("浙江,杭州市"));
        // A location wins over the area; a missing code leaves the status text.
        assert_eq!(trace.events[2].location.as_deref(), Some("上海市浦东新区"));
        assert_eq!(trace.events[2].raw_code.as_deref(), Some("派件"));
        let last = &trace.events[3];
        assert_eq!(last.location.as_deref(), Some("上海,上海市"));
        assert_eq!(last.raw_code.as_deref(), Some("3"));
        assert_eq!(last.time.to_rfc3339(), "2026-11-21T10:05:00+08:00");
    }

    #[test]
    fn numbers_where_strings_are_expected_are_read_alike() {
        let body = r#"{"message":"ok","nu":"YT1","com":"yuantong","status":200,"state":301,
            "data":[{"time":1763596801000,"context":"已签收","statusCode":301}]}"#;
        let trace = parse_response(body).unwrap();
        assert_eq!(trace.status, Status::Delivered);
        assert_eq!(trace.raw_status, "301");
        assert_eq!(trace.events[0].raw_code.as_deref(), Some("301"));
        let body = r#"{"result":false,"returnCode":500,"message":"查询无结果，请隔段时间再查"}"#;
        assert!(matches!(
            parse_response(body).unwrap_err(),
            ProviderError::NotFound(_)
        ));
    }

    fn entry(time: &str, context: &str, code: &str) -> serde_json::Value {
        serde_json::json!({"time": time, "ftime": time, "context": context, "status": "在途", "statusCode": code})
    }

    fn body(state: &str, entries: &[serde_json::Value]) -> String {
        serde_json::json!({
            "message": "ok", "nu": "YT1", "ischeck": "0", "com": "yuantong",
            "status": "200", "state": state, "data": entries,
        })
        .to_string()
    }

    #[test]
    fn newest_first_and_oldest_first_give_the_same_history() {
        let oldest = [
            entry("2026-11-20 08:00:01", "揽收", "1"),
            entry("2026-11-20 09:30:00", "到达a", "0"),
            entry("2026-11-20 09:30:00", "到达b", "0"),
            entry("2026-11-21 07:10:00", "派件", "5"),
        ];
        let mut newest = oldest.clone();
        newest.reverse();
        let from_newest = parse_response(&body("5", &newest)).unwrap();
        let from_oldest = parse_response(&body("5", &oldest)).unwrap();
        assert_eq!(from_newest, from_oldest);
        let descs: Vec<&str> = from_newest
            .events
            .iter()
            .map(|e| e.description.as_str())
            .collect();
        assert_eq!(descs, ["揽收", "到达a", "到达b", "派件"]);
    }

    #[test]
    fn a_long_history_is_read_whole_and_in_order() {
        use chrono::Duration as Span;
        let start = super::super::parse_local_time("2026-11-01 00:00:00").unwrap();
        let newest_first: Vec<serde_json::Value> = (0..500)
            .rev()
            .map(|i| {
                let time = (start + Span::minutes(i))
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string();
                entry(&time, &format!("scan {i}"), "0")
            })
            .collect();
        let trace = parse_response(&body("0", &newest_first)).unwrap();
        assert_eq!(trace.events.len(), 500);
        assert!(trace.events.windows(2).all(|w| w[0].time < w[1].time));
        assert_eq!(trace.events[0].description, "scan 0");
        assert_eq!(trace.events[499].description, "scan 499");
        assert_eq!(trace.status, Status::InTransit);
    }

    #[test]
    fn times_fall_back_and_bad_ones_are_skipped() {
        let body = r#"{"message":"ok","status":"200","state":"0","data":[
            {"time":"2026-11-20 09:30:00","ftime":"","context":"b"},
            {"time":"yesterday","ftime":"soon","context":"?"},
            {"time":"2026-11-20 08:00","context":"a"}]}"#;
        let trace = parse_response(body).unwrap();
        let descs: Vec<&str> = trace
            .events
            .iter()
            .map(|e| e.description.as_str())
            .collect();
        assert_eq!(descs, ["a", "b"]);
    }

    #[test]
    fn an_unknown_state_is_carried_in_the_trace() {
        let trace =
            parse_response(&body("9999", &[entry("2026-11-20 08:00:01", "?", "9999")])).unwrap();
        assert_eq!(trace.status, Status::InTransit);
        assert_eq!(trace.raw_status, "9999");
        assert_eq!(trace.unmapped, ["state=9999"]);
        let trace = parse_response(&body("9999", &[])).unwrap();
        assert_eq!(trace.status, Status::Pending);
    }

    #[test]
    fn a_trace_without_data_or_state() {
        let trace =
            parse_response(r#"{"message":"ok","status":"200","state":"101","data":[]}"#).unwrap();
        assert_eq!(trace.status, Status::InfoReceived);
        assert!(trace.events.is_empty());
        let trace = parse_response(r#"{"message":"ok","status":"200","data":null}"#).unwrap();
        assert_eq!(trace.status, Status::Pending);
        assert_eq!(trace.raw_status, "");
        assert!(trace.unmapped.is_empty());
        // Without a `status` field, `message: ok` alone says it is an answer.
        let trace = parse_response(r#"{"message":"ok","state":"1002"}"#).unwrap();
        assert_eq!(trace.status, Status::InTransit);
    }

    // ----- errors -----------------------------------------------------------------------------

    fn error_body(code: &str, message: &str) -> String {
        serde_json::json!({"result": false, "returnCode": code, "message": message}).to_string()
    }

    #[test]
    fn the_documented_no_result_answer_is_not_found() {
        let body = r#"{"result":false,"returnCode":"500","message":"查询无结果，请隔段时间再查"}"#;
        assert_eq!(
            parse_response(body).unwrap_err(),
            ProviderError::NotFound(
                "Kuaidi100 returnCode 500 查询无结果，请隔段时间再查".to_owned()
            )
        );
    }

    #[test]
    fn return_codes_are_classified() {
        let cases = [
            ("500", ProviderError::NotFound(String::new()), ""),
            (
                "400",
                ProviderError::Permanent(String::new()),
                "check the carrier code",
            ),
            (
                "408",
                ProviderError::Permanent(String::new()),
                "recipient's phone",
            ),
            ("501", ProviderError::Transient(String::new()), ""),
            ("502", ProviderError::Transient(String::new()), ""),
            (
                "503",
                ProviderError::Config(String::new()),
                "check the kuaidi100 key and customer",
            ),
            ("601", ProviderError::AuthExpired(String::new()), "expired"),
            ("600", ProviderError::Transient(String::new()), ""),
            ("999", ProviderError::Transient(String::new()), ""),
        ];
        for (code, expected, hint) in cases {
            let got = parse_response(&error_body(code, "Some message")).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&expected),
                "returnCode {code}: {got:?}"
            );
            let text = got.to_string();
            assert!(
                text.contains(&format!("Kuaidi100 returnCode {code} Some message")),
                "{text}"
            );
            assert!(text.contains(hint), "{text}");
        }
        let bare = parse_response(r#"{"result":false,"returnCode":"503"}"#).unwrap_err();
        assert!(
            matches!(&bare, ProviderError::Config(m) if m.starts_with("Kuaidi100 returnCode 503:")),
            "{bare:?}"
        );
    }

    #[test]
    fn every_account_word_row() {
        let expected = [
            ("授权", Refusal::Unauthorised),
            ("余额", Refusal::NoBalance),
            ("欠费", Refusal::NoBalance),
            ("充值", Refusal::NoBalance),
        ];
        assert_eq!(expected.len(), ACCOUNT_WORDS.len());
        for (index, (word, refusal)) in expected.into_iter().enumerate() {
            assert_eq!(ACCOUNT_WORDS[index].0, word, "row {index}");
            assert_eq!(account_refusal(word), Some(refusal), "{word}");
        }
    }

    #[test]
    fn a_400_about_the_account_stops_the_provider_not_the_shipment() {
        let cases = [
            ("提交的数据不完整，或者贵公司没授权", "not authorised"),
            ("贵公司没授权，请联系快递100", "not authorised"),
            ("账号未授权实时查询", "not authorised"),
            ("授权码错误", "not authorised"),
        ];
        for (message, hint) in cases {
            match parse_response(&error_body("400", message)).unwrap_err() {
                ProviderError::Config(text) => {
                    assert!(text.contains(message) && text.contains(hint), "{text}")
                }
                other => panic!("{message}: {other:?}"),
            }
        }
        for message in ["账户余额不足", "账号已欠费，请充值后使用"] {
            match parse_response(&error_body("400", message)).unwrap_err() {
                ProviderError::AuthExpired(text) => {
                    assert!(text.contains("no balance"), "{text}")
                }
                other => panic!("{message}: {other:?}"),
            }
        }
        // About the shipment: that shipment alone is refused.
        for message in ["找不到对应公司，请检查快递公司编码", "参数异常", ""] {
            let err = parse_response(&error_body("400", message)).unwrap_err();
            assert!(
                matches!(err, ProviderError::Permanent(_)),
                "{message}: {err:?}"
            );
        }
    }

    #[test]
    fn ischeck_does_not_end_a_journey_the_state_has_not_ended() {
        for (state, ischeck, status) in [
            ("6", "1", Status::Exception),
            ("14", "1", Status::Exception),
            ("5", "1", Status::OutForDelivery),
            ("3", "0", Status::Delivered),
            ("4", "1", Status::Returned),
        ] {
            let body = serde_json::json!({
                "message": "ok", "nu": "YT1", "ischeck": ischeck, "com": "yuantong",
                "status": "200", "state": state,
                "data": [entry("2026-11-20 08:00:01", "?", state)],
            })
            .to_string();
            let trace = parse_response(&body).unwrap();
            assert_eq!(trace.status, status, "state {state}, ischeck {ischeck}");
            assert_eq!(trace.raw_status, state);
        }
    }

    #[test]
    fn on_the_way_back_is_polled_until_signed_back() {
        let back = parse_response(&body(
            "6",
            &[entry("2026-11-22 09:00:00", "快件退回中", "6")],
        ))
        .unwrap();
        assert_eq!(back.status, Status::Exception);
        assert_eq!(back.raw_status, "6");
        assert!(!back.status.is_terminal());
        let signed_back = parse_response(&body(
            "4",
            &[entry("2026-11-24 09:00:00", "退件已签收", "4")],
        ))
        .unwrap();
        assert_eq!(signed_back.status, Status::Returned);
        assert!(signed_back.status.is_terminal());
    }

    #[test]
    fn garbage_bodies_are_transient_and_described() {
        let long_html = format!("<html><body>{}</body></html>", "系统繁忙 ".repeat(100));
        let bodies = [
            "",
            "   \n",
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>",
            long_html.as_str(),
            r#"{"message":"ok","status":"200","data":[{"#,
            "null",
            "[]",
            "42",
            "{}",
            r#"{"result":false,"message":"?"}"#,
            r#"{"message":"error","status":"0"}"#,
            r#"{"message":"ok","status":"200","data":{"a":1}}"#,
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
            ProviderError::Transient("empty body from Kuaidi100".to_owned())
        );
    }

    #[test]
    fn tracking_numbers_compare_loosely() {
        assert!(same_number("YT1234567890", " yt1234567890 "));
        assert!(!same_number("YT1234567890", "YT1234567891"));
    }
}
