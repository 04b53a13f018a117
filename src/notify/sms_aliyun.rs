//! SMS through Aliyun (Alibaba Cloud) SMS, `SendSms` on the RPC (POP v1) API.
//!
//! Every attempt is a signed GET: the common RPC parameters plus `PhoneNumbers`, `SignName`,
//! `TemplateCode` and `TemplateParam`, signed with HMAC-SHA1 under `AccessKeySecret&` over
//! `GET&%2F&` + percent-encode(canonical query). Aliyun answers with a JSON `Code`; the code, not
//! the HTTP status, says what happened, so it decides between sent, retry later, and dead.
//!
//! Some codes mean that no SMS can go out until a person acts: the account is out of credit, or
//! the credentials are wrong. Retrying each queued row would only burn its attempts, so the
//! channel stops itself for [`PAUSE`] (a [`ChannelStop`]): it logs one loud error naming the fix,
//! and until the pause ends (or a reload or restart lifts it) every attempt is postponed at once
//! without calling Aliyun and without spending the row's attempt.
//!
//! `TemplateParam` carries only the variables the registered template uses (`params` in
//! `[channels.sms]`), each cut to the length Aliyun allows a template variable, so that a long
//! trace text is shortened instead of making the message dead.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;

use super::{Channel, ChannelKind, ChannelStop, DeliveryError, Outgoing, SmsMessage, excerpt};
use crate::domain::{Secret, mask_contact};

type HmacSha1 = Hmac<Sha1>;

pub const DEFAULT_ENDPOINT: &str = "https://dysmsapi.aliyuncs.com/";

/// How long the channel stops after an answer that needs a person (no credit, bad credentials).
/// Long enough not to hammer Aliyun with requests that cannot succeed, short enough that a
/// top-up is noticed within the hour without a restart.
pub const PAUSE: Duration = Duration::from_secs(60 * 60);

/// `isv.BUSINESS_LIMIT_CONTROL` is Aliyun's per-number flow control. Its message names the window
/// that tripped (分钟级 / 小时级 / 天级); the documented default windows are one minute and one
/// hour, and a natural day (Asia/Shanghai) for the daily cap.
const LIMIT_MINUTE: Duration = Duration::from_secs(60);
const LIMIT_HOUR: Duration = Duration::from_secs(60 * 60);

/// `Throttling.*` is API-level flow control (requests per second): a few seconds clears it.
const THROTTLING: Duration = Duration::from_secs(5);

/// The longest value a template variable takes, in characters (a Chinese character counts as
/// one). Aliyun's default limit is 35 characters per variable; an account can ask Aliyun to lift
/// it for a template, and the whole SMS stays within 500 characters either way: "长变量短信发送与
/// 字符限制是什么?", https://help.aliyun.com/zh/document_detail/3041859.html. A longer value is
/// answered `isv.PARAM_LENGTH_LIMIT` ("变量长度受限", per the error code list
/// https://help.aliyun.com/zh/sms/error-code-intl) and the message is dead, so values are cut.
pub const DEFAULT_PARAM_MAX_CHARS: usize = 35;

/// The variables `TemplateParam` carries unless `params` says otherwise: every placeholder.
pub const DEFAULT_PARAMS: [&str; 6] = super::template::PLACEHOLDERS;

/// Where and as whom SMS are sent.
#[derive(Clone)]
pub struct AliyunSmsConfig {
    /// [`DEFAULT_ENDPOINT`] in production; the path must be `/`, which is what is signed.
    pub endpoint: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
    /// The registered signature (签名) shown in front of every SMS.
    pub sign_name: String,
    /// Used when the message has no template of its own.
    pub template_code: Option<String>,
    /// The variables the registered templates use: only these travel in `TemplateParam`.
    pub params: Vec<String>,
    /// Each value is cut to this many characters ([`DEFAULT_PARAM_MAX_CHARS`]).
    pub param_max_chars: usize,
    pub timeout: Duration,
}

/// The endpoint is shown without path or query, as every channel URL is.
impl std::fmt::Debug for AliyunSmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunSmsConfig")
            .field("endpoint", &crate::shown::endpoint(&self.endpoint))
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &self.access_key_secret)
            .field("sign_name", &self.sign_name)
            .field("template_code", &self.template_code)
            .field("params", &self.params)
            .field("param_max_chars", &self.param_max_chars)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `TemplateParam`'s JSON: the `wanted` variables only (a name the message lacks is sent empty,
/// so Aliyun names the template's real fault), each value cut to `max_chars` characters, an
/// ellipsis marking a cut.
pub fn template_param(
    values: &BTreeMap<String, String>,
    wanted: &[String],
    max_chars: usize,
) -> String {
    let picked: BTreeMap<&str, String> = wanted
        .iter()
        .map(|name| {
            let value = values.get(name).map_or("", String::as_str);
            (name.as_str(), cut(value, max_chars))
        })
        .collect();
    serde_json::to_string(&picked).expect("a string map serialises")
}

/// `value` if it has at most `max_chars` characters; else its start and `…`, `max_chars` in all.
fn cut(value: &str, max_chars: usize) -> String {
    if value.chars().count() <= max_chars {
        return value.to_owned();
    }
    let mut out: String = value.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// RFC 3986 percent-encoding as Aliyun's RPC signature wants it: only `A-Za-z0-9-_.~` stay as
/// they are; everything else, spaces (`%20`, never `+`) and `*` (`%2A`) included, is encoded
/// byte by byte in UTF-8 with upper-case hex.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The canonical query: parameters sorted by key (the map keeps them sorted), keys and values
/// percent-encoded, joined as `k=v` with `&`. It is both what is signed and what is sent.
pub fn canonical_query(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(key, value)| format!("{}={}", percent_encode(key), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `GET&%2F&` + percent-encode(canonical query).
pub fn string_to_sign(params: &BTreeMap<String, String>) -> String {
    format!(
        "GET&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// base64(HMAC-SHA1(key = `secret&`, string to sign)), before URL encoding.
pub fn sign(params: &BTreeMap<String, String>, secret: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign(params).as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// What Aliyun's answer means for the row and for the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    /// Retry this row after the delay, when one is known.
    Retry(Option<Duration>),
    /// This row cannot be sent.
    Dead,
    /// No row can be sent until someone acts; the hint says what to fix.
    Stop(&'static str),
}

const FIX_CREDIT: &str = "top up the Aliyun account or SMS package, or check that SMS is activated";
const FIX_CREDENTIALS: &str = "fix access_key_id / access_key_secret and the RAM permission (AliyunDysmsFullAccess) in [channels.sms]";

/// Classifies a `Code` (and its `Message`, which says which flow-control window tripped), after
/// Aliyun's SMS API error code list (https://help.aliyun.com/document_detail/101346.html).
/// Unknown `isv.*` codes are the caller's fault and dead at once; any other unknown code is
/// retried, which the outbox bounds to three attempts.
pub fn classify(code: &str, message: &str, now: DateTime<Utc>) -> Verdict {
    match code {
        "OK" => Verdict::Sent,
        // A system error on Aliyun's side: `isp.SYSTEM_ERROR` (系统错误) in the SMS API error
        // codes, `SYSTEM_ERROR` (内部系统错误) in the international list
        // (https://help.aliyun.com/zh/sms/error-code-intl). `isv.SYSTEM_ERROR` is how many
        // integrations meet the same error; no Aliyun page found describes it apart, and its
        // `isv.` prefix would make it dead below. Nothing is wrong with the request, so it is
        // retried, which the outbox bounds: retrying loses nothing, dying loses the SMS.
        "isv.SYSTEM_ERROR" | "isp.SYSTEM_ERROR" | "SYSTEM_ERROR" => Verdict::Retry(None),
        "isv.BUSINESS_LIMIT_CONTROL" => Verdict::Retry(Some(limit_delay(message, now))),
        "isv.DAY_LIMIT_CONTROL" => Verdict::Retry(Some(until_next_day(now))),
        c if c == "Throttling" || c.starts_with("Throttling.") => Verdict::Retry(Some(THROTTLING)),
        "isv.MOBILE_NUMBER_ILLEGAL"
        | "isv.TEMPLATE_MISSING_PARAMETERS"
        | "isv.SMS_TEMPLATE_ILLEGAL"
        | "isv.SMS_SIGNATURE_ILLEGAL"
        | "isv.INVALID_PARAMETERS"
        | "isv.INVALID_JSON_PARAM"
        | "isv.BLACK_KEY_CONTROL_LIMIT"
        | "isv.PARAM_LENGTH_LIMIT"
        | "isv.PARAM_NOT_SUPPORT_URL"
        | "isv.MOBILE_COUNT_OVER_LIMIT"
        | "MissingParameter"
        | "InvalidParameter" => Verdict::Dead,
        "isv.AMOUNT_NOT_ENOUGH"
        | "isv.OUT_OF_SERVICE"
        | "isv.PRODUCT_UN_SUBSCRIPT"
        | "isv.PRODUCT_UNSUBSCRIBE"
        | "isv.ACCOUNT_NOT_EXISTS"
        | "isv.ACCOUNT_ABNORMAL" => Verdict::Stop(FIX_CREDIT),
        "InvalidAccessKeyId.NotFound"
        | "InvalidAccessKeyId.Inactive"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "Forbidden.RAM"
        | "Forbidden.AccessKeyDisabled"
        | "isp.RAM_PERMISSION_DENY"
        | "isv.RAM_PERMISSION_DENY" => Verdict::Stop(FIX_CREDENTIALS),
        // The request carried a timestamp Aliyun thinks is out of date: the host clock is off,
        // and every request will fail the same way until it is fixed.
        "InvalidTimeStamp.Expired" | "InvalidTimeStamp.Format" => {
            Verdict::Stop("synchronise the system clock (NTP); Aliyun refuses stale timestamps")
        }
        c if c.starts_with("isv.") => Verdict::Dead,
        _ => Verdict::Retry(None),
    }
}

fn limit_delay(message: &str, now: DateTime<Utc>) -> Duration {
    if message.contains("天级") {
        until_next_day(now)
    } else if message.contains("小时级") {
        LIMIT_HOUR
    } else {
        LIMIT_MINUTE
    }
}

/// The daily caps count a natural day in China Standard Time.
fn until_next_day(now: DateTime<Utc>) -> Duration {
    let shanghai = FixedOffset::east_opt(8 * 3600).expect("valid offset");
    let local = now.with_timezone(&shanghai);
    let next = local
        .date_naive()
        .succ_opt()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .and_then(|midnight| shanghai.from_local_datetime(&midnight).single());
    match next {
        Some(next) => (next.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(LIMIT_HOUR),
        // Only at the end of chrono's calendar.
        None => LIMIT_HOUR,
    }
}

/// The number Aliyun wants: mainland numbers without `+86`/`0086`, others as country code and
/// number without `+`. Spaces and dashes are dropped; anything else that is not a digit is
/// refused.
pub fn normalize_phone(recipient: &str) -> Option<String> {
    let compact: String = recipient
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let number = compact
        .strip_prefix("+86")
        .or_else(|| compact.strip_prefix("0086"))
        .or_else(|| compact.strip_prefix('+'))
        .unwrap_or(&compact);
    if number.len() < 5 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(number.to_owned())
}

/// Replaces the number in `text` by its mask, as queued and as sent (vendors echo it in their
/// error messages, in either form).
pub(crate) fn redact(text: &str, recipient: &str) -> String {
    let phone = normalize_phone(recipient);
    let mask = mask_contact(phone.as_deref().unwrap_or(recipient.trim()));
    let mut out = text.to_owned();
    for form in [Some(recipient.trim()), phone.as_deref()]
        .into_iter()
        .flatten()
    {
        if !form.is_empty() {
            out = out.replace(form, &mask);
        }
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    biz_id: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
}

/// The Aliyun SMS [`Channel`].
pub struct AliyunSms {
    config: AliyunSmsConfig,
    http: reqwest::Client,
    stop: ChannelStop,
}

impl std::fmt::Debug for AliyunSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunSms")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AliyunSms {
    /// `http` should not follow redirects (see [`super::no_redirect_client`]): the signature covers
    /// the path `/`, and a redirect means the endpoint is misconfigured.
    pub fn new(config: AliyunSmsConfig, http: reqwest::Client) -> AliyunSms {
        AliyunSms {
            config,
            http,
            stop: ChannelStop::new(PAUSE),
        }
    }

    /// Overrides [`PAUSE`]; tests use a short one to see the channel resume.
    pub fn with_pause(mut self, pause: Duration) -> AliyunSms {
        self.stop = ChannelStop::new(pause);
        self
    }

    /// Whether the channel is stopped, and until when.
    pub fn paused_for(&self) -> Option<Duration> {
        self.stop.remaining()
    }

    /// Stops the channel, logging once per pause: concurrent attempts that hit the same wall
    /// while a pause is already running do not log again.
    fn stop(&self, code: &str, detail: &str, fix: &str) -> DeliveryError {
        let minutes = self.stop.length().as_secs().div_ceil(60);
        self.stop.trip(|| {
            tracing::error!(
                code,
                detail,
                "SMS CHANNEL STOPPED: Aliyun answered {code}; no SMS is sent for the next {minutes} min. To fix: {fix}"
            );
            format!(
                "SMS channel stopped for {minutes} min: Aliyun answered {code} ({detail}); {fix}"
            )
        })
    }

    fn params(
        &self,
        phone: &str,
        message: &SmsMessage,
        template: &str,
    ) -> BTreeMap<String, String> {
        let template_param = template_param(
            &message.params,
            &self.config.params,
            self.config.param_max_chars,
        );
        let nonce = format!("{:032x}", rand::random::<u128>());
        let timestamp = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        [
            ("Action", "SendSms"),
            ("Version", "2017-05-25"),
            ("Format", "JSON"),
            ("AccessKeyId", self.config.access_key_id.as_str()),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce.as_str()),
            ("Timestamp", timestamp.as_str()),
            ("RegionId", "cn-hangzhou"),
            ("PhoneNumbers", phone),
            ("SignName", self.config.sign_name.as_str()),
            ("TemplateCode", template),
            ("TemplateParam", template_param.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn send_error(&self, error: &reqwest::Error) -> DeliveryError {
        // The error's own text holds the URL, and with it the phone number: it is left out.
        let endpoint = crate::shown::url(&self.config.endpoint);
        super::unanswered(
            &format!("Aliyun SMS at {endpoint}"),
            error,
            self.config.timeout,
        )
    }
}

#[async_trait]
impl Channel for AliyunSms {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    fn resume(&self) {
        self.stop.lift();
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<(), DeliveryError> {
        if let Some(paused) = self.stop.check() {
            return Err(paused);
        }
        let recipient = outgoing
            .recipient
            .as_deref()
            .ok_or_else(|| DeliveryError::Permanent("SMS without a phone number".into()))?;
        let phone = normalize_phone(recipient).ok_or_else(|| {
            DeliveryError::Permanent(format!(
                "{} is not a phone number",
                mask_contact(recipient.trim())
            ))
        })?;
        let message: SmsMessage = serde_json::from_str(&outgoing.payload).map_err(|e| {
            DeliveryError::Permanent(format!("queued SMS payload is not an SmsMessage: {e}"))
        })?;
        let template = message
            .template_code
            .as_deref()
            .or(self.config.template_code.as_deref())
            .ok_or_else(|| {
                DeliveryError::Permanent(
                    "no Aliyun TemplateCode for this SMS: set template_code in [channels.sms]"
                        .into(),
                )
            })?;

        let params = self.params(&phone, &message, template);
        let signature = sign(&params, self.config.access_key_secret.expose());
        let url = format!(
            "{}?{}&Signature={}",
            self.config.endpoint,
            canonical_query(&params),
            percent_encode(&signature)
        );
        let response = self
            .http
            .get(url)
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(|e| self.send_error(&e))?;
        let status = response.status();
        let body = super::read_answer(response).await;
        let redacted = |text: &str| redact(text, recipient);

        if status.is_server_error() {
            return Err(DeliveryError::Transient {
                message: format!("Aliyun SMS answered {status}: {}", redacted(&shown(&body))),
                retry_after: None,
            });
        }
        let Ok(answer) = serde_json::from_str::<Answer>(&body) else {
            let answered = format!("Aliyun SMS answered {status}: {}", redacted(&shown(&body)));
            let retryable = status.is_success()
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            return Err(if retryable {
                DeliveryError::Transient {
                    message: answered,
                    retry_after: None,
                }
            } else {
                DeliveryError::Permanent(answered)
            });
        };

        let detail = redacted(&answer.message);
        let request_id = answer.request_id.as_deref().unwrap_or("-");
        let answered = format!(
            "Aliyun SMS answered {} ({detail}), RequestId {request_id}",
            answer.code
        );
        let answered = if answer.code == "isv.PARAM_LENGTH_LIMIT" {
            format!(
                "{answered}: a TemplateParam value is longer than this template's variables allow; \
                 shipwatch cuts each to param_max_chars = {} characters in [channels.sms], so lower it \
                 to the template's limit or ask Aliyun to lift the variable length limit",
                self.config.param_max_chars
            )
        } else {
            answered
        };
        match classify(&answer.code, &answer.message, Utc::now()) {
            Verdict::Sent => {
                tracing::debug!(
                    to = %mask_contact(&phone),
                    biz_id = answer.biz_id.as_deref().unwrap_or("-"),
                    request_id,
                    "SMS accepted by Aliyun"
                );
                Ok(())
            }
            Verdict::Retry(retry_after) => Err(DeliveryError::Transient {
                message: answered,
                retry_after,
            }),
            Verdict::Dead => Err(DeliveryError::Permanent(format!(
                "{answered}, to {}",
                mask_contact(&phone)
            ))),
            Verdict::Stop(fix) => Err(self.stop(&answer.code, &detail, fix)),
        }
    }
}

/// An answer's start for an error message ([`excerpt`]), saying so when it is empty.
fn shown(body: &str) -> String {
    match excerpt(body) {
        text if text.is_empty() => "empty body".to_owned(),
        text => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The config's `Debug` (the channel's too) names the endpoint and the key's id, and hides
    /// the secret and anything the endpoint's path or query might carry.
    #[test]
    fn the_config_shows_its_endpoint_and_hides_its_secret() {
        let config = AliyunSmsConfig {
            endpoint: "https://dysmsapi.aliyuncs.com/?token=s3cr3t-query".into(),
            access_key_id: "LTAI5tExampleKeyId".into(),
            access_key_secret: Secret::new("s3cr3t-key"),
            sign_name: "小店".into(),
            template_code: Some("SMS_154950909".into()),
            params: vec!["status".into()],
            param_max_chars: DEFAULT_PARAM_MAX_CHARS,
            timeout: Duration::from_secs(5),
        };
        let channel = AliyunSms::new(config.clone(), reqwest::Client::new());
        for shown in [format!("{config:?}"), format!("{channel:?}")] {
            assert!(shown.contains("https://dysmsapi.aliyuncs.com/…"), "{shown}");
            assert!(shown.contains("LTAI5tExampleKeyId"), "{shown}");
            assert!(shown.contains("SMS_154950909"), "{shown}");
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
    }

    #[test]
    fn percent_encoding_follows_rfc_3986() {
        for (raw, encoded) in [
            ("A-Za-z0-9-_.~", "A-Za-z0-9-_.~"),
            ("a b", "a%20b"),
            ("*", "%2A"),
            ("~", "~"),
            // An already-encoded tilde is data, not an escape: its `%` is encoded again.
            ("%7E", "%257E"),
            ("+/=", "%2B%2F%3D"),
            ("a&b=c", "a%26b%3Dc"),
            (r#"{"k":"v"}"#, "%7B%22k%22%3A%22v%22%7D"),
            ("é", "%C3%A9"),
            ("签收", "%E7%AD%BE%E6%94%B6"),
            ("", ""),
        ] {
            assert_eq!(percent_encode(raw), encoded, "{raw:?}");
        }
    }

    /// A vector worked out independently of this code, with Python's standard library:
    ///
    /// ```text
    /// pe = lambda s: urllib.parse.quote(s, safe='-_.~')
    /// canonical = '&'.join(pe(k) + '=' + pe(v) for k, v in sorted(params.items()))
    /// to_sign = 'GET&' + pe('/') + '&' + pe(canonical)
    /// base64.b64encode(hmac.new(b's3cr3t/*~ key&', to_sign.encode(), hashlib.sha1).digest())
    /// ```
    ///
    /// The parameters carry what usually goes wrong: a space in the sign name (`%20`, never
    /// `+`), `*` and `~` in a template value (`%2A`, kept), Chinese in UTF-8, the JSON of
    /// `TemplateParam`, and `:` in the timestamp. In the string to sign every `%` of the
    /// canonical query is encoded once more (`%20` → `%2520`).
    #[test]
    fn signs_a_worked_vector() {
        let params = params(&[
            ("AccessKeyId", "LTAI_example"),
            ("Action", "SendSms"),
            ("Format", "JSON"),
            ("PhoneNumbers", "13812345678"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "船运 通知"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "nonce-0001"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_000001"),
            (
                "TemplateParam",
                r#"{"order_id":"E 1*2~3","status":"已签收"}"#,
            ),
            ("Timestamp", "2024-05-01T08:00:00Z"),
            ("Version", "2017-05-25"),
        ]);
        assert_eq!(
            canonical_query(&params),
            "AccessKeyId=LTAI_example&Action=SendSms&Format=JSON&PhoneNumbers=13812345678\
             &RegionId=cn-hangzhou&SignName=%E8%88%B9%E8%BF%90%20%E9%80%9A%E7%9F%A5\
             &SignatureMethod=HMAC-SHA1&SignatureNonce=nonce-0001&SignatureVersion=1.0\
             &TemplateCode=SMS_000001\
             &TemplateParam=%7B%22order_id%22%3A%22E%201%2A2~3%22%2C%22status%22%3A%22%E5%B7%B2%E7%AD%BE%E6%94%B6%22%7D\
             &Timestamp=2024-05-01T08%3A00%3A00Z&Version=2017-05-25"
        );
        assert_eq!(
            string_to_sign(&params),
            "GET&%2F&AccessKeyId%3DLTAI_example%26Action%3DSendSms%26Format%3DJSON\
             %26PhoneNumbers%3D13812345678%26RegionId%3Dcn-hangzhou\
             %26SignName%3D%25E8%2588%25B9%25E8%25BF%2590%2520%25E9%2580%259A%25E7%259F%25A5\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dnonce-0001%26SignatureVersion%3D1.0\
             %26TemplateCode%3DSMS_000001\
             %26TemplateParam%3D%257B%2522order_id%2522%253A%2522E%25201%252A2~3%2522%252C%2522status%2522%253A%2522%25E5%25B7%25B2%25E7%25AD%25BE%25E6%2594%25B6%2522%257D\
             %26Timestamp%3D2024-05-01T08%253A00%253A00Z%26Version%3D2017-05-25"
        );
        assert_eq!(
            sign(&params, "s3cr3t/*~ key"),
            "b5jK+yXgXgSXqNmDLGKckr5t5ZM="
        );
    }

    /// The example in Aliyun's own signature documentation (keys `testId` / `testSecret`),
    /// which the same Python lines reproduce: `zJDF+Lrzhj/ThnlvIToysFRq6t4=`.
    #[test]
    fn signs_the_documented_example() {
        let params = params(&[
            ("AccessKeyId", "testId"),
            ("Action", "SendSms"),
            ("Format", "XML"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", r#"{"customer":"test"}"#),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Version", "2017-05-25"),
        ]);
        assert_eq!(sign(&params, "testSecret"), "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn classifies_codes() {
        let now = at("2024-05-01T08:00:00Z");
        let minute = Some(Duration::from_secs(60));
        // 16:00 in Shanghai: eight hours to the next natural day.
        let to_midnight = Some(Duration::from_secs(8 * 3600));
        let table: &[(&str, &str, Verdict)] = &[
            ("OK", "OK", Verdict::Sent),
            (
                "isv.BUSINESS_LIMIT_CONTROL",
                "触发分钟级流控Permits:1",
                Verdict::Retry(minute),
            ),
            (
                "isv.BUSINESS_LIMIT_CONTROL",
                "触发小时级流控Permits:5",
                Verdict::Retry(Some(Duration::from_secs(3600))),
            ),
            (
                "isv.BUSINESS_LIMIT_CONTROL",
                "触发天级流控Permits:10",
                Verdict::Retry(to_midnight),
            ),
            ("isv.BUSINESS_LIMIT_CONTROL", "", Verdict::Retry(minute)),
            ("isv.DAY_LIMIT_CONTROL", "", Verdict::Retry(to_midnight)),
            ("Throttling.User", "", Verdict::Retry(Some(THROTTLING))),
            ("Throttling.Api", "", Verdict::Retry(Some(THROTTLING))),
            ("Throttling", "", Verdict::Retry(Some(THROTTLING))),
            ("isp.SYSTEM_ERROR", "", Verdict::Retry(None)),
            ("isv.SYSTEM_ERROR", "系统错误", Verdict::Retry(None)),
            ("SYSTEM_ERROR", "", Verdict::Retry(None)),
            ("InternalError", "", Verdict::Retry(None)),
            ("isv.PARAM_LENGTH_LIMIT", "参数超出长度限制", Verdict::Dead),
            ("ServiceUnavailable", "", Verdict::Retry(None)),
            ("isv.MOBILE_NUMBER_ILLEGAL", "", Verdict::Dead),
            ("isv.TEMPLATE_MISSING_PARAMETERS", "", Verdict::Dead),
            ("isv.SMS_TEMPLATE_ILLEGAL", "", Verdict::Dead),
            ("isv.SMS_SIGNATURE_ILLEGAL", "", Verdict::Dead),
            ("isv.INVALID_PARAMETERS", "", Verdict::Dead),
            ("isv.SOMETHING_NEW", "", Verdict::Dead),
            // The gateway's own refusals of a malformed request: no retry mends them either.
            ("MissingParameter", "", Verdict::Dead),
            ("InvalidParameter", "", Verdict::Dead),
            ("isv.AMOUNT_NOT_ENOUGH", "", Verdict::Stop(FIX_CREDIT)),
            ("isv.OUT_OF_SERVICE", "", Verdict::Stop(FIX_CREDIT)),
            (
                "InvalidAccessKeyId.NotFound",
                "",
                Verdict::Stop(FIX_CREDENTIALS),
            ),
            (
                "InvalidAccessKeyId.Inactive",
                "",
                Verdict::Stop(FIX_CREDENTIALS),
            ),
            ("SignatureDoesNotMatch", "", Verdict::Stop(FIX_CREDENTIALS)),
            ("Forbidden.RAM", "", Verdict::Stop(FIX_CREDENTIALS)),
            (
                "isp.RAM_PERMISSION_DENY",
                "",
                Verdict::Stop(FIX_CREDENTIALS),
            ),
        ];
        for (code, message, verdict) in table {
            assert_eq!(&classify(code, message, now), verdict, "{code} {message}");
        }
        assert!(matches!(
            classify("InvalidTimeStamp.Expired", "", now),
            Verdict::Stop(fix) if fix.contains("clock")
        ));
        // Just before midnight in Shanghai the daily window is about to reset.
        assert_eq!(
            classify("isv.DAY_LIMIT_CONTROL", "", at("2024-05-01T15:59:30Z")),
            Verdict::Retry(Some(Duration::from_secs(30)))
        );
    }

    #[test]
    fn template_param_carries_the_wanted_variables_cut_to_the_limit() {
        let values: BTreeMap<String, String> = [
            ("order_id", "E1"),
            (
                "event",
                "快件已由菜鸟驿站代收，请凭取件码领取，如有疑问请联系派件员，感谢使用，期待再次为您服务",
            ),
            ("carrier", "中通快递"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let wanted = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let table: &[(&[&str], usize, &str)] = &[
            (&["order_id"], 35, r#"{"order_id":"E1"}"#),
            (&[], 35, "{}"),
            // A name the message lacks goes out empty: Aliyun then names the template's fault.
            (
                &["order_id", "tracking_no"],
                35,
                r#"{"order_id":"E1","tracking_no":""}"#,
            ),
            // Cut by characters, not bytes: 34 of them and an ellipsis.
            (
                &["event"],
                35,
                r#"{"event":"快件已由菜鸟驿站代收，请凭取件码领取，如有疑问请联系派件员，感谢使用…"}"#,
            ),
            (
                &["carrier", "event"],
                4,
                r#"{"carrier":"中通快递","event":"快件已…"}"#,
            ),
            (&["event"], 1, r#"{"event":"…"}"#),
        ];
        for (names, max, json) in table {
            assert_eq!(
                &template_param(&values, &wanted(names), *max),
                json,
                "{names:?} {max}"
            );
        }
        let cut: serde_json::Value =
            serde_json::from_str(&template_param(&values, &wanted(&["event"]), 35)).unwrap();
        assert_eq!(cut["event"].as_str().unwrap().chars().count(), 35);
    }

    #[test]
    fn phones_lose_the_mainland_prefix() {
        for (raw, phone) in [
            ("13812345678", Some("13812345678")),
            ("+8613812345678", Some("13812345678")),
            ("+86 138-1234-5678", Some("13812345678")),
            ("008613812345678", Some("13812345678")),
            ("+85261234567", Some("85261234567")),
            ("138abc45678", None),
            ("", None),
            ("+86", None),
            // Five digits is the shortest number sent; four is a typo, refused before Aliyun.
            ("+86 10086", Some("10086")),
            ("1008", None),
        ] {
            assert_eq!(normalize_phone(raw).as_deref(), phone, "{raw:?}");
        }
    }

    #[test]
    fn redaction_covers_every_form_of_the_number() {
        let text = "invalid mobile +86 138 1234 5678 / 13812345678";
        let out = redact(text, "+86 138 1234 5678");
        assert_eq!(out, "invalid mobile 138****5678 / 138****5678");
    }
}
