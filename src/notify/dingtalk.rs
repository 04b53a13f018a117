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
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::robot::{Robot, Wording};
use super::{Channel, ChannelKind, DeliveryError, Outgoing};
use crate::domain::Secret;
use crate::limiter::Limiter;

pub use super::robot::{MISCONFIGURED_PAUSE, RobotConfig as DingtalkConfig, Verdict};

type HmacSha256 = Hmac<Sha256>;

/// Messages a minute one robot takes (custom-robot-access, above).
pub const DEFAULT_PER_MINUTE: u32 = 20;

/// How long DingTalk locks a robot that sent too fast (custom-robot-access, above).
pub const TOO_FAST_PAUSE: Duration = Duration::from_secs(10 * 60);

/// `errcode` values (custom-robots-send-group-messages, above).
pub const OK: i64 = 0;
/// 系统繁忙: DingTalk's own trouble, worth another attempt.
pub const BUSY: i64 = -1;
pub const SEND_TOO_FAST: i64 = 130101;
/// Keyword not in the message, signature mismatch or timestamp out of range, IP not allowed.
pub const SECURITY_MISMATCH: i64 = 310000;

const WORDING: Wording = Wording {
    kind: ChannelKind::Dingtalk,
    code_field: "errcode",
    too_fast: "send too fast",
    refused: "keyword, signature or IP mismatch",
    fix: "match the robot's security settings (a keyword the messages contain, the secret in [channels.dingtalk], this host's IP in the allow-list), then `systemctl reload shipwatch`",
    remedy: "fix the robot's security settings or secret in [channels.dingtalk], then reload or restart",
};

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
#[derive(Debug)]
pub struct Dingtalk {
    secret: Option<Secret>,
    http: reqwest::Client,
    robot: Robot,
}

impl Dingtalk {
    pub fn new(config: DingtalkConfig, http: reqwest::Client) -> Dingtalk {
        Dingtalk {
            robot: Robot::new(WORDING, &config, crate::shown::url, TOO_FAST_PAUSE),
            secret: config.secret,
            http,
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
    fn pace(&self) -> Option<&Limiter> {
        Some(self.robot.limiter())
    }

    /// A reload or restart ends both the stop and DingTalk's lock ([`Robot::resume`]).
    fn resume(&self) {
        self.robot.resume();
    }

    async fn ready(&self) -> Result<(), DeliveryError> {
        self.robot.ready().await
    }

    async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        let timestamp = chrono::Utc::now().timestamp_millis();
        let url = signed_url(
            self.robot.url(),
            self.secret.as_ref().map(Secret::expose),
            timestamp,
        )
        .map_err(|_| self.robot.not_a_url())?;
        let (status, body) = self
            .robot
            .post(&self.http, url, message.payload.clone())
            .await?;
        let Ok(answer) = serde_json::from_str::<Answer>(&body) else {
            return Err(self.robot.unreadable(status, &body));
        };
        self.robot
            .outcome(classify(answer.errcode), answer.errcode, &answer.errmsg)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::notify::robot::MISCONFIGURED_PAUSE;
    use crate::notify::robot::testing::{assert_pause, stand_in};

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

    /// A channel to a stand-in robot answering `answer`: the channel, its URL and the count of
    /// calls.
    async fn robot(answer: &'static str) -> (Dingtalk, String, Arc<AtomicUsize>) {
        let (addr, calls) = stand_in("/robot/send", answer).await;
        let url = format!("http://{addr}/robot/send?access_token=TOKEN-SECRET-77");
        let channel = Dingtalk::new(
            DingtalkConfig {
                url: Secret::new(url.clone()),
                secret: Some(Secret::new("SECxyz")),
                spacing: Duration::ZERO,
                window: Duration::ZERO,
                timeout: Duration::from_secs(5),
            },
            crate::notify::no_redirect_client().unwrap(),
        );
        (channel, url, calls)
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
        let (ok, _, _) = robot(r#"{"errcode":0,"errmsg":"ok"}"#).await;
        assert_eq!(ok.deliver(&outgoing()).await, Ok(()));

        // DingTalk locks a robot that sent too fast for 10 minutes: it pauses as long.
        let (fast, _, calls) = robot(r#"{"errcode":130101,"errmsg":"send too fast"}"#).await;
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(
            assert_pause(&fast, &outgoing(), &calls, ten_minutes).await,
            "dingtalk robot paused for 10 min: it answered 130101 (send too fast)"
        );

        // A refused signature stops the channel for an hour.
        let (wrong, _, calls) = robot(r#"{"errcode":310000,"errmsg":"sign not match"}"#).await;
        let message = assert_pause(&wrong, &outgoing(), &calls, MISCONFIGURED_PAUSE).await;
        assert!(message.contains("310000"), "{message}");
        assert!(!message.contains("TOKEN-SECRET-77"), "{message}");

        let (other, _, _) = robot(r#"{"errcode":400013,"errmsg":"bad"}"#).await;
        match other.deliver(&outgoing()).await {
            Err(DeliveryError::Permanent(message)) => {
                assert!(message.contains("400013"), "{message}");
                assert!(!message.contains("TOKEN-SECRET-77"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let (busy, _, _) = robot(r#"{"errcode":-1,"errmsg":"busy"}"#).await;
        assert!(matches!(
            busy.deliver(&outgoing()).await,
            Err(DeliveryError::Transient { .. })
        ));
        let (html, url, _) = robot("<html>gateway</html>").await;
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
                window: Duration::ZERO,
                timeout: Duration::from_secs(2),
            },
            crate::notify::no_redirect_client().unwrap(),
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
