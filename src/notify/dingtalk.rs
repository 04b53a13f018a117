//! DingTalk custom robot (自定义机器人): the shop's staff group hears of the changes that need a
//! person (an exception, a failed delivery, a return).
//!
//! Every attempt POSTs the queued JSON body (`msgtype: markdown`) to the robot's webhook,
//! `https://oapi.dingtalk.com/robot/send?access_token=…`. The URL is the credential: anyone who
//! has it can post into the group, so it is a secret and is only ever shown masked. A robot with
//! the "加签" security setting also gets `timestamp` (ms) and `sign` = URL-encoded
//! base64(HMAC-SHA256(key = secret, message = timestamp + "\n" + secret)) in the query; DingTalk
//! refuses a timestamp more than an hour off ("自定义机器人安全设置",
//! https://open.dingtalk.com/document/robots/customize-robot-security-settings).
//!
//! DingTalk answers HTTP 200 either way; `errcode` 0 is the only success ("自定义机器人发送群
//! 消息", https://open.dingtalk.com/document/orgapp/custom-robots-send-group-messages). A robot
//! takes 20 messages a minute and beyond that answers 130101 ("send too fast") and locks for
//! 10 minutes ("自定义机器人接入", https://open.dingtalk.com/document/group/custom-robot-access):
//! a token bucket per robot keeps under that, and should the robot still say so, it pauses for
//! the lock without spending attempts. 310000 is a keyword, signature or IP allow-list mismatch:
//! a configuration error no retry can fix, so the channel stops with one loud line, as the SMS
//! channel does when Aliyun refuses its credentials.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Channel, ChannelKind, ChannelStop, DeliveryError, Outgoing, excerpt, read_answer};
use crate::domain::Secret;
use crate::limiter::Limiter;

type HmacSha256 = Hmac<Sha256>;

/// Messages a minute one robot takes (custom-robot-access, above).
pub const DEFAULT_PER_MINUTE: u32 = 20;

/// How long DingTalk locks a robot that sent too fast (custom-robot-access, above).
pub const TOO_FAST_PAUSE: Duration = Duration::from_secs(10 * 60);

/// How long the channel stops after a configuration refusal when no reload or restart lifts it
/// sooner: an hour, after which one message tries again.
pub const MISCONFIGURED_PAUSE: Duration = Duration::from_secs(60 * 60);

/// `errcode` values (custom-robots-send-group-messages, above).
pub const OK: i64 = 0;
/// 系统繁忙: DingTalk's own trouble, worth another attempt.
pub const BUSY: i64 = -1;
pub const SEND_TOO_FAST: i64 = 130101;
/// Keyword not in the message, signature mismatch or timestamp out of range, IP not allowed.
pub const SECURITY_MISMATCH: i64 = 310000;

/// Where the robot is and how to sign for it.
#[derive(Clone)]
pub struct DingtalkConfig {
    /// The robot's webhook with its `access_token`.
    pub url: Secret,
    /// The "加签" secret (`SEC…`), when the robot has one.
    pub secret: Option<Secret>,
    /// The quota's spacing: a minute / `rate_limit`'s calls.
    pub spacing: Duration,
    pub timeout: Duration,
}

/// The URL is shown as its endpoint only: the `access_token` is the credential.
impl std::fmt::Debug for DingtalkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingtalkConfig")
            .field("url", &crate::shown::endpoint(self.url.expose()))
            .field("secret", &self.secret)
            .field("spacing", &self.spacing)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The queued body: what DingTalk's markdown message type takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotMessage {
    pub msgtype: String,
    pub markdown: Markdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Markdown {
    /// What the conversation list shows.
    pub title: String,
    pub text: String,
}

impl RobotMessage {
    pub fn markdown(title: String, text: String) -> RobotMessage {
        RobotMessage {
            msgtype: "markdown".to_owned(),
            markdown: Markdown { title, text },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data")
    }
}

/// base64(HMAC-SHA256(key = secret, message = timestamp + "\n" + secret)), before URL encoding.
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The URL of one attempt: the configured one, with `timestamp` and `sign` when signing. The
/// query encoder percent-encodes the signature's `+`, `/` and `=`.
pub fn signed_url(
    url: &str,
    secret: Option<&str>,
    timestamp_ms: i64,
) -> Result<reqwest::Url, url_error::Unusable> {
    let mut url = reqwest::Url::parse(url).map_err(|_| url_error::Unusable)?;
    if let Some(secret) = secret {
        url.query_pairs_mut()
            .append_pair("timestamp", &timestamp_ms.to_string())
            .append_pair("sign", &sign(secret, timestamp_ms));
    }
    Ok(url)
}

pub mod url_error {
    /// The configured URL does not parse; the value is not repeated (it is a credential).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Unusable;
}

/// DingTalk's answer.
#[derive(Debug, Deserialize)]
struct Answer {
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// What an `errcode` means for the row and the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    Retry,
    /// The robot is locked for sending too fast: every message waits.
    TooFast,
    /// No message can go until a person fixes the robot's security settings or the config.
    Stop,
    Dead,
}

pub fn classify(errcode: i64) -> Verdict {
    match errcode {
        OK => Verdict::Sent,
        BUSY => Verdict::Retry,
        SEND_TOO_FAST => Verdict::TooFast,
        SECURITY_MISMATCH => Verdict::Stop,
        _ => Verdict::Dead,
    }
}

/// The DingTalk robot [`Channel`].
pub struct Dingtalk {
    config: DingtalkConfig,
    http: reqwest::Client,
    limiter: Limiter,
    /// A configuration refusal (310000).
    stop: ChannelStop,
    /// DingTalk's lock after "send too fast" (130101).
    too_fast: ChannelStop,
}

impl std::fmt::Debug for Dingtalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dingtalk")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dingtalk {
    pub fn new(config: DingtalkConfig, http: reqwest::Client) -> Dingtalk {
        Dingtalk {
            limiter: Limiter::new(Some(config.spacing)),
            config,
            http,
            stop: ChannelStop::new(MISCONFIGURED_PAUSE),
            too_fast: ChannelStop::new(TOO_FAST_PAUSE),
        }
    }

    /// Overrides [`TOO_FAST_PAUSE`]; tests use a short one to see the robot resume.
    pub fn with_too_fast_pause(mut self, pause: Duration) -> Dingtalk {
        self.too_fast = ChannelStop::new(pause);
        self
    }

    /// A client that does not follow redirects: a redirect means the URL is wrong, and
    /// following it would hand the message to a host nobody configured.
    pub fn http_client() -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }

    /// Whether the channel is stopped or paused, and for how much longer.
    pub fn stopped_for(&self) -> Option<Duration> {
        self.stop.remaining().or_else(|| self.too_fast.remaining())
    }

    fn shown_url(&self) -> String {
        crate::shown::url(self.config.url.expose())
    }

    fn misconfigured(&self, detail: &str) -> DeliveryError {
        let url = self.shown_url();
        let minutes = self.stop.length().as_secs().div_ceil(60);
        self.stop.trip(|| {
            tracing::error!(
                url = %url,
                "DINGTALK CHANNEL STOPPED: the robot answered 310000 ({detail}); no message is sent until a reload or restart (or a retry in {minutes} min). To fix: match the robot's security settings (a keyword the messages contain, the secret in [channels.dingtalk], this host's IP in the allow-list), then `systemctl reload shipwatch`"
            );
            "dingtalk channel stopped: the robot refused the message (310000: keyword, signature or IP mismatch); fix the robot's security settings or secret in [channels.dingtalk], then reload or restart"
                .to_owned()
        })
    }

    fn paused_too_fast(&self) -> DeliveryError {
        let minutes = self.too_fast.length().as_secs().div_ceil(60);
        self.too_fast.trip(|| {
            tracing::warn!(
                "dingtalk robot paused for {minutes} min: it answered 130101 (send too fast); messages wait without spending attempts. Lower rate_limit in [channels.dingtalk] if another program posts through the same robot"
            );
            format!(
                "dingtalk robot paused for {minutes} min: it answered 130101 (send too fast)"
            )
        })
    }

    fn send_error(&self, error: reqwest::Error) -> DeliveryError {
        let url = self.shown_url();
        // reqwest's own text repeats the whole URL, the access token included.
        let error = error.without_url();
        if error.is_builder() {
            return DeliveryError::Permanent(format!("dingtalk url {url} is unusable"));
        }
        if let Some(shortage) = super::local_shortage(&error) {
            return super::not_attempted(&format!("dingtalk robot at {url}"), shortage);
        }
        let what = if error.is_timeout() {
            format!("timed out after {:?}", self.config.timeout)
        } else if error.is_connect() {
            "could not connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        DeliveryError::Transient {
            message: format!("dingtalk robot at {url}: {what}"),
            retry_after: None,
        }
    }
}

#[async_trait]
impl Channel for Dingtalk {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Dingtalk
    }

    /// One message at a time: the robot's token bucket spaces them 3 s apart at 20 a minute, so
    /// a claimed message waits one spacing at most, never its lease.
    fn max_in_flight(&self) -> Option<usize> {
        Some(1)
    }

    /// A reload or restart is the operator saying "try now": both the stop and DingTalk's lock
    /// end here. A robot still locked answers 130101 again and pauses again.
    fn resume(&self) {
        self.stop.lift();
        self.too_fast.lift();
    }

    async fn deliver(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        if let Some(stopped) = self.stop.check().or_else(|| self.too_fast.check()) {
            return Err(stopped);
        }
        self.limiter.acquire().await;
        let timestamp = chrono::Utc::now().timestamp_millis();
        let url = signed_url(
            self.config.url.expose(),
            self.config.secret.as_ref().map(Secret::expose),
            timestamp,
        )
        .map_err(|_| {
            DeliveryError::Permanent("dingtalk url in [channels.dingtalk] is not a URL".into())
        })?;
        let response = self
            .http
            .post(url)
            .timeout(self.config.timeout)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .header(USER_AGENT, concat!("shipwatch/", env!("CARGO_PKG_VERSION")))
            .body(message.payload.clone())
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        let status = response.status();
        let body = read_answer(response).await;
        let url = self.shown_url();
        let Ok(answer) = serde_json::from_str::<Answer>(&body) else {
            let answered = format!(
                "dingtalk robot at {url} answered {status}: {}",
                shown(&body)
            );
            let retryable = status.is_success()
                || status.is_server_error()
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
        let detail = excerpt(&answer.errmsg);
        match classify(answer.errcode) {
            Verdict::Sent => Ok(()),
            Verdict::TooFast => Err(self.paused_too_fast()),
            Verdict::Stop => Err(self.misconfigured(&detail)),
            Verdict::Retry => Err(DeliveryError::Transient {
                message: format!(
                    "dingtalk robot at {url} answered errcode {} ({detail})",
                    answer.errcode
                ),
                retry_after: None,
            }),
            Verdict::Dead => Err(DeliveryError::Permanent(format!(
                "dingtalk robot at {url} answered errcode {} ({detail})",
                answer.errcode
            ))),
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
    use axum::Router;
    use axum::routing::post;

    /// DingTalk's Python sample (customize-robot-security-settings): HMAC-SHA256 keyed by the
    /// secret over `timestamp\nsecret`, base64, then URL-encoded.
    #[test]
    fn signs_as_dingtalk_documents() {
        let secret = "SEC0123456789abcdef";
        let timestamp = 1_700_000_000_000;
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(b"1700000000000\nSEC0123456789abcdef");
        let expected = BASE64.encode(mac.finalize().into_bytes());
        assert_eq!(sign(secret, timestamp), expected);
        let url = signed_url(
            "https://oapi.dingtalk.com/robot/send?access_token=abc",
            Some(secret),
            timestamp,
        )
        .unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("access_token".to_owned(), "abc".to_owned()),
                ("timestamp".to_owned(), "1700000000000".to_owned()),
                ("sign".to_owned(), expected.clone()),
            ]
        );
        // The raw query carries the signature URL-encoded: no bare `+`, `/` or `=` survives.
        let raw = url.query().unwrap();
        let sent = raw.split("sign=").nth(1).unwrap();
        assert!(!sent.contains(['+', '/', '=']), "{sent}");
        let unsigned = signed_url(
            "https://oapi.dingtalk.com/robot/send?access_token=abc",
            None,
            1,
        )
        .unwrap();
        assert_eq!(unsigned.query(), Some("access_token=abc"));
    }

    #[test]
    fn errcodes() {
        assert_eq!(classify(0), Verdict::Sent);
        assert_eq!(classify(-1), Verdict::Retry);
        assert_eq!(classify(130101), Verdict::TooFast);
        assert_eq!(classify(310000), Verdict::Stop);
        assert_eq!(classify(400013), Verdict::Dead);
    }

    async fn robot(answer: &'static str) -> (Dingtalk, String) {
        let app = Router::new().route("/robot/send", post(move || async move { answer }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/robot/send?access_token=TOKEN-SECRET-77");
        let channel = Dingtalk::new(
            DingtalkConfig {
                url: Secret::new(url.clone()),
                secret: Some(Secret::new("SECxyz")),
                spacing: Duration::ZERO,
                timeout: Duration::from_secs(5),
            },
            Dingtalk::http_client().unwrap(),
        );
        (channel, url)
    }

    fn outgoing() -> Outgoing {
        Outgoing {
            public_id: "msg_1".into(),
            payload: RobotMessage::markdown("t".into(), "x".into()).to_json(),
            recipient: None,
        }
    }

    #[tokio::test]
    async fn answers_decide_the_outcome_and_never_show_the_token() {
        let (ok, _) = robot(r#"{"errcode":0,"errmsg":"ok"}"#).await;
        assert_eq!(ok.deliver(&outgoing()).await, Ok(()));

        let (fast, _) = robot(r#"{"errcode":130101,"errmsg":"send too fast"}"#).await;
        let fast = fast.with_too_fast_pause(Duration::from_secs(60));
        for _ in 0..2 {
            match fast.deliver(&outgoing()).await {
                Err(DeliveryError::Paused { message, .. }) => {
                    assert!(message.contains("130101"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
        fast.resume();
        assert!(fast.stopped_for().is_none());

        let (wrong, _) = robot(r#"{"errcode":310000,"errmsg":"sign not match"}"#).await;
        match wrong.deliver(&outgoing()).await {
            Err(DeliveryError::Paused { message, .. }) => {
                assert!(message.contains("310000"), "{message}");
                assert!(!message.contains("TOKEN-SECRET-77"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        wrong.resume();
        assert!(wrong.stopped_for().is_none());

        let (other, _) = robot(r#"{"errcode":400013,"errmsg":"bad"}"#).await;
        match other.deliver(&outgoing()).await {
            Err(DeliveryError::Permanent(message)) => {
                assert!(message.contains("400013"), "{message}");
                assert!(!message.contains("TOKEN-SECRET-77"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let (busy, _) = robot(r#"{"errcode":-1,"errmsg":"busy"}"#).await;
        assert!(matches!(
            busy.deliver(&outgoing()).await,
            Err(DeliveryError::Transient { .. })
        ));
        let (html, url) = robot("<html>gateway</html>").await;
        match html.deliver(&outgoing()).await {
            Err(DeliveryError::Transient { message, .. }) => {
                assert!(!message.contains("TOKEN-SECRET-77"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{html:?}");
        assert!(
            !shown.contains("TOKEN-SECRET-77") && !shown.contains("SECxyz"),
            "{shown}"
        );
        assert!(url.contains("TOKEN-SECRET-77"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_masked() {
        let channel = Dingtalk::new(
            DingtalkConfig {
                url: Secret::new("http://127.0.0.1:1/robot/send?access_token=TOKEN-SECRET-77"),
                secret: None,
                spacing: Duration::ZERO,
                timeout: Duration::from_secs(2),
            },
            Dingtalk::http_client().unwrap(),
        );
        match channel.deliver(&outgoing()).await {
            Err(DeliveryError::Transient { message, .. }) => {
                assert!(!message.contains("TOKEN-SECRET-77"), "{message}");
                assert!(message.contains("access_token=***"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
