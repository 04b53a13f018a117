//! A fake Aliyun SMS `SendSms` endpoint on loopback. It checks each request the way Aliyun does:
//! the signature is recomputed with the fake's own encoding and HMAC code over the parameters it
//! received (so a signing bug in the channel cannot hide behind the same bug here), timestamps
//! older than 15 minutes and reused nonces are refused, and the business parameters are checked.
//! Verified requests are answered with the codes queued in its script, `OK` by default.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use chrono::{NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use super::fake::script::{Log, Script};

/// How far a `Timestamp` may be from now, as on the real service.
const TIMESTAMP_TOLERANCE_SECS: i64 = 15 * 60;

/// The longest value a template variable takes, in characters: Aliyun's default limit
/// (https://help.aliyun.com/zh/document_detail/3041859.html). A longer one is refused with
/// `isv.PARAM_LENGTH_LIMIT`, as the real service does for a template whose limit was not lifted.
pub const PARAM_MAX_CHARS: usize = 35;

/// One request that reached the endpoint.
#[derive(Debug, Clone)]
pub struct Call {
    /// Every query parameter, decoded (the signature included).
    pub params: BTreeMap<String, String>,
    pub at: Instant,
    /// The `Code` answered.
    pub code: String,
}

impl Call {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// `TemplateParam`, parsed.
    pub fn template_param(&self) -> Option<Value> {
        serde_json::from_str(self.param("TemplateParam")?).ok()
    }
}

struct Inner {
    access_key_id: String,
    secret: String,
    sign_name: String,
    /// The codes queued for the next verified requests; one number is as good as another.
    script: Script<(), String>,
    /// Every request; its refusals are the signature mismatches only.
    log: Log<Call>,
    nonces: HashSet<String>,
}

type Shared = super::fake::Shared<Inner>;

pub struct FakeAliyunSms {
    /// `http://127.0.0.1:PORT/`: the path is `/`, which is what the signature covers.
    pub url: String,
    shared: Shared,
    _server: super::fake::Server,
}

impl FakeAliyunSms {
    pub async fn start(access_key_id: &str, secret: &str, sign_name: &str) -> FakeAliyunSms {
        let shared = Shared::new(Inner {
            access_key_id: access_key_id.to_owned(),
            secret: secret.to_owned(),
            sign_name: sign_name.to_owned(),
            script: Script::new(),
            log: Log::new(),
            nonces: HashSet::new(),
        });
        let app = Router::new()
            .route("/", get(handle))
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake Aliyun SMS").await;
        FakeAliyunSms {
            url: format!("{}/", server.base),
            shared,
            _server: server,
        }
    }

    pub fn access_key_id(&self) -> String {
        self.shared.lock().access_key_id.clone()
    }

    pub fn access_key_secret(&self) -> String {
        self.shared.lock().secret.clone()
    }

    pub fn sign_name(&self) -> String {
        self.shared.lock().sign_name.clone()
    }

    /// The next `n` verified requests are answered `code` instead of `OK`.
    pub fn reply(&self, code: &str, n: usize) {
        self.shared.lock().script.answer_next(n, code.to_owned());
    }

    /// Forgets the scripted codes not yet answered: every later request gets `OK` (the account
    /// was topped up, say).
    pub fn clear_replies(&self) {
        self.shared.lock().script.clear_next();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().log.calls()
    }

    /// How many requests were answered `OK`, without copying them (for a loop that asks often).
    pub fn accepted(&self) -> usize {
        self.shared.lock().log.count_where(|call| call.code == "OK")
    }

    pub fn signature_failures(&self) -> usize {
        self.shared.lock().log.refused()
    }
}

async fn handle(State(shared): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let params = match parse_query(query.as_deref().unwrap_or("")) {
        Ok(params) => params,
        Err(message) => return answer(StatusCode::BAD_REQUEST, "InvalidParameter", &message),
    };
    let mut inner = shared.lock();
    let (status, code, message) = check(&mut inner, &params);
    inner.log.record(Call {
        params,
        at: Instant::now(),
        code: code.clone(),
    });
    answer(status, &code, &message)
}

/// Decides the answer to one request: a refusal, or the next scripted code.
fn check(inner: &mut Inner, params: &BTreeMap<String, String>) -> (StatusCode, String, String) {
    let refuse =
        |status: StatusCode, code: &str, message: String| (status, code.to_owned(), message);
    let Some(signature) = params.get("Signature") else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            "no Signature".into(),
        );
    };
    if params.get("AccessKeyId") != Some(&inner.access_key_id) {
        return refuse(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.".into(),
        );
    }
    let mut signed = params.clone();
    signed.remove("Signature");
    let expected = expected_signature(&signed, &inner.secret);
    if *signature != expected {
        inner
            .log
            .refuse(format!("Signature {signature} expected {expected}"));
        return refuse(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.".into(),
        );
    }

    let fixed = [
        ("Action", "SendSms"),
        ("Version", "2017-05-25"),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("RegionId", "cn-hangzhou"),
    ];
    for (key, value) in fixed {
        if params.get(key).map(String::as_str) != Some(value) {
            return refuse(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                format!("{key} must be {value}, got {:?}", params.get(key)),
            );
        }
    }
    let timestamp = params.get("Timestamp").map(String::as_str).unwrap_or("");
    let fresh = NaiveDateTime::parse_from_str(timestamp, "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .filter(|_| timestamp.len() == 20)
        .is_some_and(|at| {
            (Utc::now().timestamp() - at.and_utc().timestamp()).abs() <= TIMESTAMP_TOLERANCE_SECS
        });
    if !fresh {
        return refuse(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            format!("Specified time stamp or date value is expired: {timestamp}"),
        );
    }
    let nonce = params.get("SignatureNonce").cloned().unwrap_or_default();
    if nonce.is_empty() || !inner.nonces.insert(nonce) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.".into(),
        );
    }

    let phone = params.get("PhoneNumbers").map(String::as_str).unwrap_or("");
    let mainland =
        phone.len() == 11 && phone.starts_with('1') && phone.bytes().all(|b| b.is_ascii_digit());
    if !mainland {
        return refuse(
            StatusCode::OK,
            "isv.MOBILE_NUMBER_ILLEGAL",
            format!("invalid mobile number {phone}"),
        );
    }
    if params.get("SignName") != Some(&inner.sign_name) {
        return refuse(
            StatusCode::OK,
            "isv.SMS_SIGNATURE_ILLEGAL",
            "该账号下找不到对应签名".into(),
        );
    }
    if params
        .get("TemplateCode")
        .is_none_or(|code| !code.starts_with("SMS_"))
    {
        return refuse(
            StatusCode::OK,
            "isv.SMS_TEMPLATE_ILLEGAL",
            "该账号下找不到对应模板".into(),
        );
    }
    let strings_only = params
        .get("TemplateParam")
        .and_then(|raw| serde_json::from_str::<Value>(raw).ok())
        .and_then(|value| value.as_object().map(|o| o.values().all(Value::is_string)))
        .unwrap_or(false);
    if !strings_only {
        return refuse(
            StatusCode::OK,
            "isv.INVALID_JSON_PARAM",
            "JSON参数不合法,只接受字符串值".into(),
        );
    }
    let too_long = params
        .get("TemplateParam")
        .and_then(|raw| serde_json::from_str::<BTreeMap<String, String>>(raw).ok())
        .and_then(|values| {
            values
                .into_iter()
                .find(|(_, value)| value.chars().count() > PARAM_MAX_CHARS)
        });
    if let Some((name, _)) = too_long {
        return refuse(
            StatusCode::OK,
            "isv.PARAM_LENGTH_LIMIT",
            format!("参数超出长度限制: {name}"),
        );
    }

    let code = inner.script.take_next().unwrap_or_else(|| "OK".to_owned());
    let message = match code.as_str() {
        "OK" => "OK".to_owned(),
        "isv.BUSINESS_LIMIT_CONTROL" => "触发分钟级流控Permits:1".to_owned(),
        // The real service echoes the number here; the channel must not pass it on.
        "isv.MOBILE_NUMBER_ILLEGAL" => format!("invalid mobile number {phone}"),
        "isv.AMOUNT_NOT_ENOUGH" => "账户余额不足".to_owned(),
        other => format!("scripted {other}"),
    };
    (StatusCode::OK, code, message)
}

fn answer(status: StatusCode, code: &str, message: &str) -> Response {
    let mut body = json!({
        "Code": code,
        "Message": message,
        "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990",
    });
    if code == "OK" {
        body["BizId"] = json!("900619746936498440^0");
    }
    (status, axum::Json(body)).into_response()
}

/// Splits a raw query into decoded pairs. `+` is left alone: in this API it is data, encoded as
/// `%2B`, never a space.
fn parse_query(query: &str) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = unescape(key)?;
        if params.insert(key.clone(), unescape(value)?).is_some() {
            return Err(format!("{key} given twice"));
        }
    }
    Ok(params)
}

fn unescape(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("truncated escape in {text:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {text:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

/// RFC 3986 encoding, written independently of the channel's: a byte is kept only when it is in
/// this set.
fn escape(text: &str) -> String {
    const KEEP: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~";
    text.bytes()
        .map(|b| {
            if KEEP.contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn expected_signature(params: &BTreeMap<String, String>, secret: &str) -> String {
    let mut pairs: Vec<(String, String)> =
        params.iter().map(|(k, v)| (escape(k), escape(v))).collect();
    pairs.sort();
    let canonical = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let to_sign = format!("GET&%2F&{}", escape(&canonical));
    let mut mac =
        Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).expect("any key length");
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
