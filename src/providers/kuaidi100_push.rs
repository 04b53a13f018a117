//! Kuaidi100 subscription push (快递信息推送服务): the subscribe call (`poll`) and the callback
//! Kuaidi100 posts on each change, read and checked here; what they lead to is the dispatcher's
//! and the callback listener's.
//!
//! Wire facts, from Kuaidi100's documentation:
//! - subscribe: POST `https://poll.kuaidi100.com/poll`, form `schema=json` and `param`, a JSON
//!   object of `company`, `number`, `key` and `parameters` {`callbackurl`, `salt`, `resultv2`,
//!   `phone` (顺丰 needs it)} (快递订阅查询快递api接口技术文档,
//!   https://api.kuaidi100.com/document/5f0ffa8f2977d50a94e1023c; the same table at
//!   https://apifox.com/apidoc/project-514987/api-8567477);
//! - its answer `{"result":…,"returnCode":…,"message":…}`, with the return codes 200 提交成功,
//!   501 重复订阅 (the waybill is already subscribed and still polling), 500 server error,
//!   600 not a valid subscriber (the key), 601 key expired, 700 bad subscription data or
//!   callback URL, 701 carrier refused, 702 carrier not recognised (Kuaidi100's own article of
//!   its push service, https://cloud.tencent.com/developer/article/1828132). No code for a quota
//!   is documented: a quota or flood answer can only come as HTTP 429, handled as for a query;
//! - the callback: a form post of `param` (JSON: `status`, `message`, `autoCheck`, `comOld`,
//!   `comNew`, `lastResult`, the last in the real-time query's shape) and `sign`, the MD5 of
//!   `param + salt` (推送接口, https://apifox.com/apidoc/project-514987/api-8568518), answered
//!   `{"result":true,"returnCode":"200","message":"成功"}` once the data is saved
//!   (https://api.kuaidi100.com/document/timeout). `status` is `polling`, `shutdown` (signed
//!   for: the subscription ends), `abort` (3天查询无记录 or 60天无变化: it ends, and needs
//!   handling of our own) or `updateall` (a full re-push).
//!
//! The docs say nothing of the sign's letter case; Kuaidi100's query signatures are uppercase
//! hex, and either case is accepted here (it is the same digest).

use std::fmt;
use std::time::Duration;

use md5::digest::CtOutput;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::kuaidi100::{Kuaidi100Config, RESULT_V2, parse_response, post_form, to_query};
use super::{ProviderError, Trace, TrackRequest, lenient_string, snippet};
use crate::domain::Secret;

pub const DEFAULT_SUBSCRIBE_ENDPOINT: &str = "https://poll.kuaidi100.com/poll";

/// The most of a callback body that is read: a real one is a waybill's trace, a few KiB; the
/// largest journeys stay far below this.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;

/// The acknowledgement Kuaidi100 documents for a callback saved
/// (https://api.kuaidi100.com/document/timeout).
pub const ACK: &str = r#"{"result":true,"returnCode":"200","message":"成功"}"#;

/// What is answered when the callback could not be saved (the database is down): not the
/// acknowledgement, so that Kuaidi100 pushes it again. The docs give no failure body; this is
/// the acknowledgement's shape with `result` false, sent with HTTP 500.
pub const NOT_SAVED: &str = r#"{"result":false,"returnCode":"500","message":"保存失败"}"#;

/// `[providers.NAME]` of kind kuaidi100 with `mode = "push"`.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Where subscriptions go (`https://poll.kuaidi100.com/poll`).
    pub subscribe_endpoint: String,
    /// The public URL Kuaidi100 posts each change to.
    pub callback_url: String,
    /// Sent with each subscription; Kuaidi100 signs every callback with it.
    pub salt: Secret,
    /// Shipments that heard nothing for this long are queried once; never when `None`.
    pub fallback_poll: Option<Duration>,
}

/// The subscribe endpoint on the same host as a query endpoint: `…/poll/query.do` → `…/poll`,
/// as on Kuaidi100's own host; the documented endpoint for any other.
pub fn subscribe_endpoint_beside(query_endpoint: &str) -> String {
    match query_endpoint.strip_suffix("/query.do") {
        Some(base) if base.ends_with("/poll") => base.to_owned(),
        _ => DEFAULT_SUBSCRIBE_ENDPOINT.to_owned(),
    }
}

/// The `param` of a subscription. Field order is the documentation's.
#[derive(Debug, Serialize)]
struct SubscribeParam<'a> {
    company: &'a str,
    number: &'a str,
    key: &'a str,
    parameters: Parameters<'a>,
}

#[derive(Debug, Serialize)]
struct Parameters<'a> {
    callbackurl: &'a str,
    salt: &'a str,
    resultv2: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<&'a str>,
}

/// How a subscription went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// 200: Kuaidi100 now tracks the waybill.
    New,
    /// 501: it was tracking it already (still `polling`): as good as new.
    Already,
}

/// Subscribes shipments for one Kuaidi100 account.
pub struct Subscriber {
    key: Secret,
    push: PushConfig,
    http: reqwest::Client,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("push", &self.push)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// `None` for a provider in query mode.
    pub fn new(config: &Kuaidi100Config, http: reqwest::Client) -> Option<Subscriber> {
        Some(Subscriber {
            key: config.key.clone(),
            push: config.push.clone()?,
            http,
        })
    }

    pub fn push(&self) -> &PushConfig {
        &self.push
    }

    /// The form of one subscription: `schema=json` and the `param` JSON.
    pub fn form(
        &self,
        request: &TrackRequest,
    ) -> Result<Vec<(&'static str, String)>, ProviderError> {
        let query = to_query(request)?;
        let param = SubscribeParam {
            company: &query.com,
            number: &query.num,
            key: self.key.expose(),
            parameters: Parameters {
                callbackurl: &self.push.callback_url,
                salt: self.push.salt.expose(),
                resultv2: RESULT_V2,
                phone: query.phone.as_ref().map(|p| p.as_str()),
            },
        };
        let param = serde_json::to_string(&param).expect("a struct of strings serialises");
        Ok(vec![("schema", "json".to_owned()), ("param", param)])
    }

    /// Subscribes one shipment. `http` carries the request timeout, as for queries.
    pub async fn subscribe(&self, request: &TrackRequest) -> Result<Subscribed, ProviderError> {
        let form = self.form(request)?;
        let body = post_form(&self.http, &self.push.subscribe_endpoint, &form).await?;
        parse_subscribe_answer(&body)
    }
}

#[derive(Debug, Deserialize)]
struct SubscribeAnswer {
    #[serde(default, rename = "returnCode", deserialize_with = "lenient_string")]
    return_code: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    message: Option<String>,
}

/// Reads a subscription's answer by the documented return codes (see the file's header).
pub fn parse_subscribe_answer(body: &str) -> Result<Subscribed, ProviderError> {
    let answer: SubscribeAnswer = serde_json::from_str(body).map_err(|err| {
        ProviderError::Transient(format!(
            "unreadable subscription answer from Kuaidi100 ({err}): {}",
            snippet(body)
        ))
    })?;
    let Some(code) = answer.return_code else {
        return Err(ProviderError::Transient(format!(
            "Kuaidi100 answered a subscription without a returnCode: {}",
            snippet(body)
        )));
    };
    let text = match &answer.message {
        Some(message) => format!("Kuaidi100 subscription returnCode {code} {message}"),
        None => format!("Kuaidi100 subscription returnCode {code}"),
    };
    match code.as_str() {
        "200" => Ok(Subscribed::New),
        "501" => Ok(Subscribed::Already),
        "600" => Err(ProviderError::Config(format!(
            "{text}: Kuaidi100 does not know the key as a subscriber; check the kuaidi100 key and that the push service is enabled for the account"
        ))),
        "601" => Err(ProviderError::AuthExpired(format!(
            "{text}: the kuaidi100 key has expired"
        ))),
        // 700 covers a bad callback URL as well as a bad waybill: the URL is the same for every
        // shipment, so a message naming it stops the provider instead of each shipment in turn.
        "700" if mentions_callback(answer.message.as_deref()) => Err(ProviderError::Config(
            format!("{text}: check callback_url in the provider's section"),
        )),
        "700" => Err(ProviderError::Permanent(format!(
            "{text}: check the carrier code (--carrier, e.g. yuantong) and the tracking number"
        ))),
        "701" => Err(ProviderError::Permanent(format!(
            "{text}: Kuaidi100 refuses subscriptions for this carrier"
        ))),
        "702" => Err(ProviderError::Permanent(format!(
            "{text}: Kuaidi100 cannot tell the carrier of this tracking number; check --carrier"
        ))),
        // 500 is Kuaidi100's own fault; an undocumented code is treated the same rather than
        // dropping a shipment over a code nobody has seen yet.
        _ => Err(ProviderError::Transient(text)),
    }
}

fn mentions_callback(message: Option<&str>) -> bool {
    message.is_some_and(|m| {
        let lower = m.to_ascii_lowercase();
        lower.contains("callback") || m.contains("回调")
    })
}

// ---------------------------------------------------------------------------------------------
// The callback

/// The subscription's state as Kuaidi100 reports it in a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushStatus {
    /// Still tracked: more callbacks will come.
    Polling,
    /// Tracking ended, normally because the parcel was signed for.
    Shutdown,
    /// Tracking gave up (3天查询无记录, 60天无变化), or moved to a corrected carrier code
    /// (`comNew`), which Kuaidi100 then tracks itself.
    Abort,
    /// A full re-push of the trace.
    UpdateAll,
    /// A value the docs do not list: read as `polling`, which changes no subscription state.
    Other(String),
}

impl PushStatus {
    fn parse(raw: &str) -> PushStatus {
        match raw {
            "polling" => PushStatus::Polling,
            "shutdown" => PushStatus::Shutdown,
            "abort" => PushStatus::Abort,
            "updateall" => PushStatus::UpdateAll,
            other => PushStatus::Other(other.to_owned()),
        }
    }
}

/// A callback whose sign was good, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub status: PushStatus,
    /// `message`: why it ended, for `abort`.
    pub message: Option<String>,
    /// The waybill's carrier code and number, from `lastResult` (`com`, `nu`).
    pub company: Option<String>,
    pub number: Option<String>,
    /// The corrected carrier code Kuaidi100 resubscribed under, on an `abort`.
    pub com_new: Option<String>,
    /// `lastResult` read as a real-time query answer; `None` when it carries no trace (an
    /// abort for 3天查询无记录 has none).
    pub trace: Option<Trace>,
}

/// Why a callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the body is not a form with param and sign")]
    NotAForm,
    #[error("the sign is missing")]
    MissingSign,
    #[error("the sign does not match param and the salt")]
    BadSign,
    #[error("param is not the documented JSON ({0})")]
    BadParam(String),
}

#[derive(Debug, Deserialize)]
struct CallbackParam {
    #[serde(default, deserialize_with = "lenient_string")]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    message: Option<String>,
    #[serde(default, rename = "comNew", deserialize_with = "lenient_string")]
    com_new: Option<String>,
    #[serde(default, rename = "lastResult")]
    last_result: Option<serde_json::Value>,
}

/// `application/x-www-form-urlencoded` into its pairs, later keys winning. Any bytes give an
/// answer: bad percent escapes are kept as written, invalid UTF-8 is refused.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, CallbackError> {
    let text = std::str::from_utf8(body).map_err(|_| CallbackError::NotAForm)?;
    let decode = |part: &str| -> Result<String, CallbackError> {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| CallbackError::NotAForm)
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

/// True when `sign` is the MD5 of `param + salt` in hex, compared in constant time.
pub fn sign_matches(param: &str, salt: &str, sign: &str) -> bool {
    let mut given = [0u8; 16];
    if hex::decode_to_slice(sign.trim(), &mut given).is_err() {
        return false;
    }
    let mut hasher = Md5::new();
    hasher.update(param.as_bytes());
    hasher.update(salt.as_bytes());
    CtOutput::<Md5>::new(hasher.finalize()) == CtOutput::<Md5>::new(given.into())
}

/// The uppercase hex MD5 of `param + salt`, as Kuaidi100 signs a callback.
pub fn sign(param: &str, salt: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(param.as_bytes());
    hasher.update(salt.as_bytes());
    hex::encode_upper(hasher.finalize())
}

/// Reads a callback's body: the form, its sign checked against `salt`, then `param`. Nothing
/// of `param` is read before its sign is checked.
pub fn read_callback(body: &[u8], salt: &str) -> Result<Callback, CallbackError> {
    let form = parse_form(body)?;
    let field = |name: &str| {
        form.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let param = field("param").ok_or(CallbackError::NotAForm)?;
    let sign = field("sign")
        .filter(|s| !s.trim().is_empty())
        .ok_or(CallbackError::MissingSign)?;
    if !sign_matches(param, salt, sign) {
        return Err(CallbackError::BadSign);
    }
    read_param(param)
}

/// Reads a signed `param`.
pub fn read_param(param: &str) -> Result<Callback, CallbackError> {
    let parsed: CallbackParam =
        serde_json::from_str(param).map_err(|e| CallbackError::BadParam(e.to_string()))?;
    let status = PushStatus::parse(parsed.status.as_deref().unwrap_or("polling"));
    let last = parsed.last_result.filter(|v| v.is_object());
    let field = |name: &str| {
        last.as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.trim().to_owned()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    let (company, number) = (field("com"), field("nu"));
    let trace = last
        .as_ref()
        .and_then(|v| parse_response(&v.to_string()).ok());
    Ok(Callback {
        status,
        message: parsed.message,
        company,
        number,
        com_new: parsed.com_new,
        trace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Phone, Status};

    fn push() -> PushConfig {
        PushConfig {
            subscribe_endpoint: DEFAULT_SUBSCRIBE_ENDPOINT.to_owned(),
            callback_url: "https://shop.example/callbacks/kuaidi100/kd".to_owned(),
            salt: Secret::new("salt-9f"),
            fallback_poll: None,
        }
    }

    fn subscriber() -> Subscriber {
        let config = Kuaidi100Config {
            endpoint: super::super::kuaidi100::DEFAULT_ENDPOINT.to_owned(),
            customer: "C".to_owned(),
            key: Secret::new("k3y"),
            push: Some(push()),
        };
        Subscriber::new(&config, reqwest::Client::new()).unwrap()
    }

    fn request(carrier: &str, num: &str, phone: Option<&str>) -> TrackRequest {
        TrackRequest {
            order_id: "1".to_owned(),
            tracking_no: Some(num.to_owned()),
            carrier: Some(carrier.to_owned()),
            phone: phone.map(|p| Phone::parse(p).unwrap()),
            ..TrackRequest::default()
        }
    }

    #[test]
    fn the_subscribe_endpoint_sits_beside_the_query_endpoint() {
        assert_eq!(
            subscribe_endpoint_beside("https://poll.kuaidi100.com/poll/query.do"),
            "https://poll.kuaidi100.com/poll"
        );
        assert_eq!(
            subscribe_endpoint_beside("http://127.0.0.1:7/poll/query.do"),
            "http://127.0.0.1:7/poll"
        );
        assert_eq!(
            subscribe_endpoint_beside("http://127.0.0.1:7/other"),
            DEFAULT_SUBSCRIBE_ENDPOINT
        );
        // A query endpoint that is not Kuaidi100's layout says nothing of where subscriptions go.
        assert_eq!(
            subscribe_endpoint_beside("http://127.0.0.1:7/api/query.do"),
            DEFAULT_SUBSCRIBE_ENDPOINT
        );
    }

    /// The subscriber in a log line names where it subscribes and where callbacks come, and
    /// never the account's key or the callbacks' salt.
    #[test]
    fn the_subscriber_debugs_without_its_secrets() {
        let shown = format!("{:?}", subscriber());
        assert!(shown.starts_with("Subscriber"), "{shown}");
        assert!(shown.contains(DEFAULT_SUBSCRIBE_ENDPOINT), "{shown}");
        assert!(
            shown.contains("https://shop.example/callbacks/kuaidi100/kd"),
            "{shown}"
        );
        assert!(!shown.contains("k3y"), "{shown}");
        assert!(!shown.contains("salt-9f"), "{shown}");
    }

    #[test]
    fn the_form_is_the_documented_one() {
        let form = subscriber()
            .form(&request("ShunFeng", "SF1", Some("13800138000")))
            .unwrap();
        assert_eq!(form[0], ("schema", "json".to_owned()));
        assert_eq!(form[1].0, "param");
        assert_eq!(
            form[1].1,
            r#"{"company":"shunfeng","number":"SF1","key":"k3y","parameters":{"callbackurl":"https://shop.example/callbacks/kuaidi100/kd","salt":"salt-9f","resultv2":"4","phone":"13800138000"}}"#
        );
        let plain = subscriber()
            .form(&request("yuantong", "YT1", None))
            .unwrap();
        assert!(!plain[1].1.contains("phone"), "{}", plain[1].1);
        let unfit = subscriber().form(&request("shunfeng", "SF1", None));
        assert!(matches!(unfit, Err(ProviderError::Permanent(m)) if m.contains("phone")));
    }

    #[test]
    fn every_subscribe_code_row() {
        let answer = |code: &str, message: &str| {
            parse_subscribe_answer(&format!(
                r#"{{"result":false,"returnCode":"{code}","message":"{message}"}}"#
            ))
        };
        assert_eq!(answer("200", "提交成功"), Ok(Subscribed::New));
        assert_eq!(answer("501", "重复订阅"), Ok(Subscribed::Already));
        assert!(matches!(
            answer("600", "您不是合法的订阅者"),
            Err(ProviderError::Config(_))
        ));
        assert!(matches!(
            answer("601", "POLL:KEY已过期"),
            Err(ProviderError::AuthExpired(_))
        ));
        assert!(matches!(
            answer("700", "单号为空"),
            Err(ProviderError::Permanent(_))
        ));
        assert!(matches!(
            answer("700", "错误的回调地址"),
            Err(ProviderError::Config(_))
        ));
        assert!(matches!(
            answer("701", "拒绝订阅的快递公司"),
            Err(ProviderError::Permanent(_))
        ));
        assert!(matches!(
            answer("702", "识别不到"),
            Err(ProviderError::Permanent(_))
        ));
        assert!(matches!(
            answer("500", "服务器错误"),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(
            answer("999", "?"),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(
            parse_subscribe_answer("<html>"),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(
            parse_subscribe_answer("{}"),
            Err(ProviderError::Transient(_))
        ));
        // A number where the docs write a string is read alike.
        assert_eq!(
            parse_subscribe_answer(r#"{"result":true,"returnCode":200}"#),
            Ok(Subscribed::New)
        );
    }

    fn param(status: &str, state: &str) -> String {
        serde_json::json!({
            "status": status,
            "billstatus": "got",
            "message": "",
            "autoCheck": "0",
            "comOld": "",
            "comNew": "",
            "lastResult": {
                "message": "ok", "state": state, "status": "200", "condition": "F00",
                "ischeck": "0", "com": "yuantong", "nu": "YT1",
                "data": [{"time": "2026-03-01 10:00:00", "ftime": "2026-03-01 10:00:00",
                          "context": "已揽收", "status": "揽收", "statusCode": "1"}]
            }
        })
        .to_string()
    }

    fn body(param: &str, sign: &str) -> Vec<u8> {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!("param={}&sign={}", enc(param), enc(sign)).into_bytes()
    }

    #[test]
    fn a_signed_callback_is_read_like_a_query_answer() {
        let p = param("polling", "1");
        let callback = read_callback(&body(&p, &sign(&p, "salt-9f")), "salt-9f").unwrap();
        assert_eq!(callback.status, PushStatus::Polling);
        assert_eq!(callback.company.as_deref(), Some("yuantong"));
        assert_eq!(callback.number.as_deref(), Some("YT1"));
        let trace = callback.trace.unwrap();
        assert_eq!(trace.status, Status::PickedUp);
        assert_eq!(trace.events.len(), 1);
        // Lowercase hex is the same digest.
        let lower = sign(&p, "salt-9f").to_ascii_lowercase();
        assert!(read_callback(&body(&p, &lower), "salt-9f").is_ok());
    }

    #[test]
    fn a_bad_or_missing_sign_is_refused_before_param_is_read() {
        let p = param("polling", "1");
        assert_eq!(
            read_callback(&body(&p, &sign(&p, "other")), "salt-9f"),
            Err(CallbackError::BadSign)
        );
        assert_eq!(
            read_callback(&body(&p, "zz"), "salt-9f"),
            Err(CallbackError::BadSign)
        );
        let unsigned = format!("param={}", "x");
        assert_eq!(
            read_callback(unsigned.as_bytes(), "salt-9f"),
            Err(CallbackError::MissingSign)
        );
        assert_eq!(read_callback(b"sign=AB", "s"), Err(CallbackError::NotAForm));
        assert_eq!(
            read_callback(&[0xff, 0xfe], "s"),
            Err(CallbackError::NotAForm)
        );
        // Garbage that is signed is refused as param, not as sign.
        assert!(matches!(
            read_callback(&body("{", &sign("{", "s")), "s"),
            Err(CallbackError::BadParam(_))
        ));
    }

    #[test]
    fn abort_and_shutdown_are_told_apart() {
        let abort = read_param(
            r#"{"status":"abort","message":"3天查询无记录","comNew":"","lastResult":{"message":"3天查询无记录","com":"yuantong","nu":"YT1"}}"#,
        )
        .unwrap();
        assert_eq!(abort.status, PushStatus::Abort);
        assert_eq!(abort.message.as_deref(), Some("3天查询无记录"));
        assert_eq!(abort.com_new, None);
        assert_eq!(abort.number.as_deref(), Some("YT1"));
        let shutdown = read_param(&param("shutdown", "3")).unwrap();
        assert_eq!(shutdown.status, PushStatus::Shutdown);
        assert_eq!(shutdown.trace.unwrap().status, Status::Delivered);
        let odd = read_param(r#"{"status":"later"}"#).unwrap();
        assert_eq!(odd.status, PushStatus::Other("later".to_owned()));
        assert_eq!(odd.trace, None);
    }

    /// The waybill a callback is matched to its shipments by: a number written as a JSON
    /// number is still that waybill, not an unmatched callback.
    #[test]
    fn a_waybill_number_written_as_a_number_reads_as_its_digits() {
        let abort = read_param(
            r#"{"status":"abort","message":"3天查询无记录","lastResult":{"com":"zhongtong","nu":773012345678}}"#,
        )
        .unwrap();
        assert_eq!(abort.number.as_deref(), Some("773012345678"));
        assert_eq!(abort.company.as_deref(), Some("zhongtong"));
    }
}
