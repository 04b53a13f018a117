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
mod tests;
