//! WeChat official-account template messages (模板消息): the buyer hears of their parcel in
//! WeChat, from the shop's service account they follow.
//!
//! Every attempt POSTs `{touser, template_id, url?, data: {key: {value}}, client_msg_id}` to
//! `https://api.weixin.qq.com/cgi-bin/message/template/send?access_token=…` ("发送模板消息",
//! https://developers.weixin.qq.com/doc/service/api/notify/template/api_sendtemplatemessage.html).
//! `touser` is the shipment's OpenID; the data and the link were rendered when the change was
//! queued ([`WechatMessage`]), and the template id is the configured one at the time of sending,
//! so that a corrected id and a reload send what a wrong one held back. `client_msg_id` is the
//! notification's public id: WeChat sends one message per OpenID and `client_msg_id` within 10
//! minutes ("防重入id。对于同一个openid + client_msg_id, 只发送一条消息,
//! 10分钟有效,超过10分钟不保证效果", same page), so a delivery repeated after a crash inside those
//! minutes is not shown twice; past them WeChat promises nothing, and the buyer may see it twice,
//! as with every other channel.
//!
//! The access token comes from the stable-token endpoint, `POST /cgi-bin/stable_token` with
//! `{grant_type: "client_credential", appid, secret, force_refresh: false}`; in that normal mode a
//! call within a token's life hands back the same token, and force_refresh would void the one in
//! use ("获取稳定版接口调用凭据",
//! https://developers.weixin.qq.com/doc/service/api/base/api_getstableaccesstoken.html). One token
//! is cached and shared by every send until shortly before its `expires_in` ([`use_for`]). The
//! token and the secret are credentials: neither is logged, and a URL shown in an error reads
//! `access_token=***`.
//!
//! What WeChat's answer codes mean ("Global Return Code",
//! https://developers.weixin.qq.com/doc/service/en/Getting_Started/Global_Return_Code.html; 40243
//! from "服务端 API 调用说明",
//! https://developers.weixin.qq.com/doc/oplatform/developers/dev/api/index.md; 48001 from
//! "服务端 API 问题定位与解决",
//! https://developers.weixin.qq.com/doc/oplatform/developers/troubleshooting) and what the
//! channel does with each:
//! - 40001, 40014, 42001 (token invalid, not the latest, expired) on a send: the token is
//!   fetched again and the message resent once, inside the same attempt;
//! - 43004 (需要接收者关注: the buyer does not follow the account) and 40003 (invalid openid):
//!   this buyer cannot be reached; the row ends `skipped` with the reason and the others go on;
//! - 40037 (invalid template_id) and 48001 (api unauthorized: the account may not send template
//!   messages): the configuration is wrong, so the channel stops with one loud line, as the
//!   robots do, and every message waits without spending attempts;
//! - from the token endpoint, 40001 (AppSecret wrong), 40013 (invalid appid), 40125 (invalid
//!   appsecret), 40164 (this host's IP not in the account's allow-list), 40243 (AppSecret
//!   frozen), 41002 and 41004 (appid or secret missing): the channel stops the same way;
//! - -1 (system busy), 45009 (the day's quota is used up) and 45011 (the minute's): transient,
//!   worth another attempt;
//! - anything else (47003, a value WeChat refused): the row goes dead with WeChat's words.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::robot::{MISCONFIGURED_PAUSE, shown, unreadable};
use super::{Channel, ChannelKind, ChannelStop, DeliveryError, Outgoing, excerpt, read_answer};
use crate::domain::Secret;
use crate::limiter::Limiter;

/// Where WeChat's API lives; `endpoint` in `[channels.wechat]` overrides it (tests, a proxy).
pub const DEFAULT_ENDPOINT: &str = "https://api.weixin.qq.com";

const TOKEN_PATH: &str = "/cgi-bin/stable_token";
const SEND_PATH: &str = "/cgi-bin/message/template/send";

/// How long before its end a token is replaced: WeChat keeps the old and the new token both
/// valid for 5 minutes when one is renewed ("Access_token 使用说明",
/// https://developers.weixin.qq.com/doc/oplatform/developers/dev/AccessToken.html:
/// "此时公众平台后台会保证在5分钟内,新老access_token都可用").
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// `errcode` values (全局返回码 and the send page, above).
pub const OK: i64 = 0;
/// 系统繁忙.
pub const BUSY: i64 = -1;
/// 获取 access_token 时 AppSecret 错误,或者 access_token 无效.
pub const INVALID_CREDENTIAL: i64 = 40001;
/// 不合法的 OpenID.
pub const INVALID_OPENID: i64 = 40003;
/// 不合法的 AppID.
pub const INVALID_APPID: i64 = 40013;
/// 不合法的 access_token.
pub const INVALID_TOKEN: i64 = 40014;
/// 不合法的 template_id.
pub const INVALID_TEMPLATE: i64 = 40037;
/// 无效的 appsecret.
pub const INVALID_SECRET: i64 = 40125;
/// 调用接口的 IP 地址不在白名单中.
pub const IP_NOT_ALLOWED: i64 = 40164;
/// AppSecret 已被冻结.
pub const SECRET_FROZEN: i64 = 40243;
/// 缺少 appid 参数.
pub const APPID_MISSING: i64 = 41002;
/// 缺少 secret 参数.
pub const SECRET_MISSING: i64 = 41004;
/// access_token 超时.
pub const TOKEN_EXPIRED: i64 = 42001;
/// 需要接收者关注.
pub const NOT_FOLLOWING: i64 = 43004;
/// 接口调用超过限制 (the day's quota).
pub const DAILY_QUOTA: i64 = 45009;
/// 接口调用超过每分钟的频率限制.
pub const MINUTE_QUOTA: i64 = 45011;
/// api 功能未授权.
pub const UNAUTHORIZED: i64 = 48001;

/// Where the account is and how to reach it.
#[derive(Clone)]
pub struct WechatConfig {
    /// `https://api.weixin.qq.com`, or what the config says instead.
    pub endpoint: String,
    pub appid: String,
    pub secret: Secret,
    pub template_id: String,
    /// The spacing of `rate_limit`, when one is set.
    pub spacing: Option<Duration>,
    /// `rate_limit`'s `per`: how late a turn shared with other daemons may still be taken
    /// ([`Limiter::with_window`]).
    pub window: Duration,
    pub timeout: Duration,
}

/// The secret is never shown, nor anything past the endpoint's host.
impl std::fmt::Debug for WechatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatConfig")
            .field("endpoint", &crate::shown::endpoint(&self.endpoint))
            .field("appid", &self.appid)
            .field("secret", &self.secret)
            .field("template_id", &self.template_id)
            .field("spacing", &self.spacing)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What is queued for one buyer: the template's values by key, cut to WeChat's limits, and the
/// link the message opens, both rendered when the change was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WechatMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub data: BTreeMap<String, String>,
}

impl WechatMessage {
    /// A message of `data` (each value cut by [`cut_value`]) and `url`.
    pub fn new(url: Option<String>, data: BTreeMap<String, String>) -> WechatMessage {
        let data = data
            .into_iter()
            .map(|(key, value)| {
                let cut = cut_value(&key, &value);
                (key, cut)
            })
            .collect();
        WechatMessage { url, data }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data")
    }
}

/// The send request's body.
#[derive(Serialize)]
struct SendBody<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    data: BTreeMap<&'a str, Value<'a>>,
    client_msg_id: &'a str,
}

#[derive(Serialize)]
struct Value<'a> {
    value: &'a str,
}

/// The stable-token request's body.
#[derive(Serialize)]
struct TokenRequest<'a> {
    grant_type: &'a str,
    appid: &'a str,
    secret: &'a str,
    force_refresh: bool,
}

/// An answer: the token endpoint's `{access_token, expires_in}` or anyone's
/// `{errcode, errmsg}`.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// The value type WeChat reads from a template key's name (`thing1`, `character_string12`):
/// the keys of a category template (类目模板) are the type and a number ("类目模板消息",
/// https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// 事物: 20 characters of any kind.
    Thing,
    /// 字符串: 32 digits, letters or symbols.
    CharacterString,
    /// 数字: 32 digits.
    Number,
    /// 字母: 32 letters.
    Letter,
    /// 符号: 5 symbols.
    Symbol,
    /// 金额: a currency sign and 10 digits: a format, not a length.
    Amount,
    /// 时间 and 日期: a format, not a length.
    Time,
    /// 电话: 17 digits and symbols.
    PhoneNumber,
    /// 车牌: 8 characters.
    CarNumber,
    /// 姓名: 10 Chinese characters, or 20 letters.
    Name,
    /// 汉字: 5 Chinese characters.
    Phrase,
    /// 常量: 20 characters of an approved list.
    Const,
    /// A key of an older template (`first`, `keyword1`, `remark`): no documented limit.
    Other,
}

impl ValueKind {
    /// The kind a key names.
    pub fn of(key: &str) -> ValueKind {
        let name = key.trim_end_matches(|c: char| c.is_ascii_digit());
        match name {
            "thing" => ValueKind::Thing,
            "character_string" => ValueKind::CharacterString,
            "number" => ValueKind::Number,
            "letter" => ValueKind::Letter,
            "symbol" => ValueKind::Symbol,
            "amount" => ValueKind::Amount,
            "time" | "date" => ValueKind::Time,
            "phone_number" => ValueKind::PhoneNumber,
            "car_number" => ValueKind::CarNumber,
            "name" => ValueKind::Name,
            "phrase" => ValueKind::Phrase,
            "const" => ValueKind::Const,
            _ => ValueKind::Other,
        }
    }

    /// The most characters a value of this kind may have, and whether a cut one may end in
    /// `…`: only a `thing` takes any character; the others take digits, letters, ASCII symbols
    /// or Chinese characters only, which `…` is not. `None`: no length is documented (a key of
    /// an older template), or the limit is a format that a cut would break (a time, an amount):
    /// the value goes as it is, and WeChat's refusal, if any, names it.
    pub fn limit(self, value: &str) -> Option<(usize, bool)> {
        match self {
            ValueKind::Thing => Some((20, true)),
            ValueKind::CharacterString | ValueKind::Number | ValueKind::Letter => Some((32, false)),
            ValueKind::Symbol | ValueKind::Phrase => Some((5, false)),
            ValueKind::PhoneNumber => Some((17, false)),
            ValueKind::CarNumber => Some((8, false)),
            ValueKind::Const => Some((20, false)),
            // "中文和字母混合按中文名算": any character beyond ASCII makes it a Chinese name.
            ValueKind::Name if value.is_ascii() => Some((20, false)),
            ValueKind::Name => Some((10, false)),
            ValueKind::Amount | ValueKind::Time | ValueKind::Other => None,
        }
    }
}

/// `value` cut to what WeChat takes for `key`'s type, counted in characters (WeChat counts
/// characters, not bytes), with `…` as the last of them when the type allows it. WeChat does not
/// deliver a message with a value over its limit; a cut one still tells the buyer most of it.
pub fn cut_value(key: &str, value: &str) -> String {
    let Some((max, ellipsis)) = ValueKind::of(key).limit(value) else {
        return value.to_owned();
    };
    if value.chars().count() <= max {
        return value.to_owned();
    }
    if ellipsis && max > 0 {
        let mut cut: String = value.chars().take(max - 1).collect();
        cut.push('…');
        cut
    } else {
        value.chars().take(max).collect()
    }
}

/// How long a token that WeChat says lasts `expires_in` is used: until [`REFRESH_MARGIN`]
/// before its end, or for half its life when that is shorter than twice the margin.
pub fn use_for(expires_in: Duration) -> Duration {
    expires_in - REFRESH_MARGIN.min(expires_in / 2)
}

/// What a send's `errcode` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendVerdict {
    Sent,
    /// The token is no longer good: fetch another and resend once.
    Refresh,
    /// This buyer cannot be reached: the row ends skipped.
    Unreachable,
    /// The configuration is wrong: the channel stops.
    Stop,
    Retry,
    Dead,
}

pub fn classify_send(errcode: i64) -> SendVerdict {
    match errcode {
        OK => SendVerdict::Sent,
        INVALID_CREDENTIAL | INVALID_TOKEN | TOKEN_EXPIRED => SendVerdict::Refresh,
        NOT_FOLLOWING | INVALID_OPENID => SendVerdict::Unreachable,
        INVALID_TEMPLATE | UNAUTHORIZED => SendVerdict::Stop,
        BUSY | DAILY_QUOTA | MINUTE_QUOTA => SendVerdict::Retry,
        _ => SendVerdict::Dead,
    }
}

/// Whether a token endpoint's `errcode` says the appid, the secret or this host is refused:
/// no retry can fix that.
pub fn token_refused(errcode: i64) -> bool {
    matches!(
        errcode,
        INVALID_CREDENTIAL
            | INVALID_APPID
            | INVALID_SECRET
            | IP_NOT_ALLOWED
            | SECRET_FROZEN
            | APPID_MISSING
            | SECRET_MISSING
    )
}

/// A token as cached.
#[derive(Debug)]
struct CachedToken {
    token: Secret,
    use_until: Instant,
}

/// The WeChat template message [`Channel`].
#[derive(Debug)]
pub struct Wechat {
    config: WechatConfig,
    http: reqwest::Client,
    /// Held while a token is fetched, so that concurrent sends wait for that one fetch.
    token: tokio::sync::Mutex<Option<CachedToken>>,
    limiter: Limiter,
    stop: ChannelStop,
}

impl Wechat {
    pub fn new(config: WechatConfig, http: reqwest::Client) -> Wechat {
        Wechat {
            limiter: Limiter::new(config.spacing).with_window(config.window),
            config,
            http,
            token: tokio::sync::Mutex::new(None),
            stop: ChannelStop::new(MISCONFIGURED_PAUSE),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.endpoint.trim_end_matches('/'))
    }

    /// The send URL as it may be shown: the token masked.
    fn shown_send_url(&self) -> String {
        crate::shown::url(&format!("{}?access_token=***", self.url(SEND_PATH)))
    }

    /// The cached token, or a new one when there is none or it is about to end.
    async fn token(&self) -> Result<Secret, DeliveryError> {
        let mut cached = self.token.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.use_until
        {
            return Ok(current.token.clone());
        }
        let fetched_at = Instant::now();
        let (token, expires_in) = self.fetch_token().await?;
        *cached = Some(CachedToken {
            token: token.clone(),
            use_until: fetched_at + use_for(expires_in),
        });
        Ok(token)
    }

    /// Drops `used` from the cache, unless another send has replaced it already.
    async fn forget(&self, used: &Secret) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == used) {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<(Secret, Duration), DeliveryError> {
        let url = self.url(TOKEN_PATH);
        let at = format!("wechat token endpoint {}", crate::shown::url(&url));
        let body = serde_json::to_string(&TokenRequest {
            grant_type: "client_credential",
            appid: &self.config.appid,
            secret: self.config.secret.expose(),
            force_refresh: false,
        })
        .expect("plain data");
        let (status, text) = self.post(&url, body, &at).await?;
        let Ok(answer) = serde_json::from_str::<Answer>(&text) else {
            return Err(unreadable(
                format!("{at} answered {status}: {}", shown(&text)),
                status,
            ));
        };
        match (answer.access_token, answer.expires_in) {
            (Some(token), Some(seconds)) if !token.is_empty() && seconds > 0 => {
                Ok((Secret::new(token), Duration::from_secs(seconds)))
            }
            _ if token_refused(answer.errcode) => {
                Err(self.credentials_refused(answer.errcode, &excerpt(&answer.errmsg)))
            }
            _ => Err(DeliveryError::Transient {
                message: format!(
                    "{at} gave no token: errcode {} ({})",
                    answer.errcode,
                    excerpt(&answer.errmsg)
                ),
                retry_after: None,
            }),
        }
    }

    /// One send with `token`; its `errcode` and `errmsg`.
    async fn send_with(&self, token: &Secret, body: &str) -> Result<(i64, String), DeliveryError> {
        let at = format!("wechat at {}", self.shown_send_url());
        let mut url = reqwest::Url::parse(&self.url(SEND_PATH))
            .map_err(|_| DeliveryError::Permanent(format!("{at}: the URL is unusable")))?;
        url.query_pairs_mut()
            .append_pair("access_token", token.expose());
        let (status, text) = self.post(url.as_str(), body.to_owned(), &at).await?;
        match serde_json::from_str::<Answer>(&text) {
            Ok(answer) => Ok((answer.errcode, answer.errmsg)),
            Err(_) => Err(unreadable(
                format!("{at} answered {status}: {}", shown(&text)),
                status,
            )),
        }
    }

    async fn post(
        &self,
        url: &str,
        body: String,
        at: &str,
    ) -> Result<(reqwest::StatusCode, String), DeliveryError> {
        let response = self
            .http
            .post(url)
            .timeout(self.config.timeout)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .header(USER_AGENT, concat!("shipwatch/", env!("CARGO_PKG_VERSION")))
            .body(body)
            .send()
            .await
            .map_err(|e| super::unanswered(at, &e, self.config.timeout))?;
        let status = response.status();
        Ok((status, read_answer(response).await))
    }

    /// What a send's final answer does.
    fn outcome(&self, errcode: i64, errmsg: &str, openid: &str) -> Result<(), DeliveryError> {
        let detail = excerpt(errmsg);
        let answered = || {
            format!(
                "wechat at {} answered errcode {errcode} ({detail})",
                self.shown_send_url()
            )
        };
        match classify_send(errcode) {
            SendVerdict::Sent => Ok(()),
            SendVerdict::Unreachable => {
                let why = if errcode == NOT_FOLLOWING {
                    "the buyer does not follow the official account"
                } else {
                    "the OpenID is not one of this official account's"
                };
                Err(DeliveryError::Undeliverable(format!(
                    "wechat: {why} (errcode {errcode}, openid {})",
                    crate::domain::mask_contact(openid)
                )))
            }
            SendVerdict::Stop => Err(self.template_refused(errcode, &detail)),
            SendVerdict::Refresh => Err(DeliveryError::Transient {
                message: format!("{}; a fresh token was refused too", answered()),
                retry_after: None,
            }),
            SendVerdict::Retry => Err(DeliveryError::Transient {
                message: answered(),
                retry_after: None,
            }),
            SendVerdict::Dead => Err(DeliveryError::Permanent(answered())),
        }
    }

    fn template_refused(&self, errcode: i64, detail: &str) -> DeliveryError {
        let minutes = self.stop.length().as_secs().div_ceil(60);
        let refused = if errcode == INVALID_TEMPLATE {
            "invalid template_id"
        } else {
            "the account may not send template messages"
        };
        self.stop.trip(|| {
            tracing::error!(
                "WECHAT CHANNEL STOPPED: WeChat refused the template message with errcode {errcode} ({detail}); no message is sent until a reload or restart (or a retry in {minutes} min). To fix: copy the template's id from the official account's 模板消息 page into template_id in [channels.wechat] (and check the account may send template messages), then `systemctl reload shipwatch`"
            );
            format!(
                "wechat channel stopped: WeChat refused the template ({errcode}: {refused}); fix template_id in [channels.wechat], then reload or restart"
            )
        })
    }

    fn credentials_refused(&self, errcode: i64, detail: &str) -> DeliveryError {
        let minutes = self.stop.length().as_secs().div_ceil(60);
        let appid = crate::shown::for_log(&self.config.appid).into_owned();
        self.stop.trip(|| {
            tracing::error!(
                "WECHAT CHANNEL STOPPED: the token endpoint refused appid {appid} with errcode {errcode} ({detail}); no message is sent until a reload or restart (or a retry in {minutes} min). To fix: check appid and secret in [channels.wechat] against the official account's 基本配置 page, and that this host's IP is in its IP allow-list, then `systemctl reload shipwatch`"
            );
            format!(
                "wechat channel stopped: the token endpoint refused the appid, the secret or this host ({errcode}); fix [channels.wechat] or the account's IP allow-list, then reload or restart"
            )
        })
    }
}

#[async_trait]
impl Channel for Wechat {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Wechat
    }

    fn pace(&self) -> Option<&Limiter> {
        self.limiter.is_limited().then_some(&self.limiter)
    }

    /// A token when none is cached, the send, and once more both when WeChat refuses the token.
    fn requests_per_attempt(&self) -> u32 {
        4
    }

    /// A reload or restart ends the stop, and the next send fetches a token anew.
    fn resume(&self) {
        self.stop.lift();
        if let Ok(mut cached) = self.token.try_lock() {
            *cached = None;
        }
    }

    async fn ready(&self) -> Result<(), DeliveryError> {
        if let Some(stopped) = self.stop.check() {
            return Err(stopped);
        }
        self.limiter.acquire().await;
        Ok(())
    }

    async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        if let Some(stopped) = self.stop.check() {
            return Err(stopped);
        }
        let Some(openid) = message.recipient.as_deref() else {
            return Err(DeliveryError::Permanent(
                "wechat: the notification has no OpenID to send to".to_owned(),
            ));
        };
        let Ok(queued) = serde_json::from_str::<WechatMessage>(&message.payload) else {
            return Err(DeliveryError::Permanent(
                "wechat: the queued notification is not a template message".to_owned(),
            ));
        };
        let body = serde_json::to_string(&SendBody {
            touser: openid,
            template_id: &self.config.template_id,
            url: queued.url.as_deref(),
            data: queued
                .data
                .iter()
                .map(|(key, value)| (key.as_str(), Value { value }))
                .collect(),
            client_msg_id: &message.public_id,
        })
        .expect("plain data");
        let token = self.token().await?;
        let (mut errcode, mut errmsg) = self.send_with(&token, &body).await?;
        if classify_send(errcode) == SendVerdict::Refresh {
            // The token ended early (renewed elsewhere, or WeChat's clock): one fresh token and
            // one resend, inside this attempt.
            tracing::debug!(errcode, "wechat token refused; fetching a fresh one");
            self.forget(&token).await;
            let fresh = self.token().await?;
            (errcode, errmsg) = self.send_with(&fresh, &body).await?;
        }
        self.outcome(errcode, &errmsg, openid)
    }
}

#[cfg(test)]
mod tests;
