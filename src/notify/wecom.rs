//! WeCom (企业微信) group robot (群机器人): the shop's staff group hears of the changes that need a
//! person, as with the DingTalk robot.
//!
//! Every attempt POSTs the queued JSON body (`{"msgtype":"markdown","markdown":{"content":…}}`)
//! to the robot's webhook, `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`. The `key` is
//! the credential: anyone who has the URL can post into the group
//! ("特别特别要注意:一定要保护好机器人的webhook地址"), so the URL is a secret and is only ever
//! shown as `key=***`. The markdown `content` takes at most 4096 bytes of UTF-8, and a robot
//! takes at most 20 messages a minute ("群机器人配置说明",
//! https://developer.work.weixin.qq.com/document/path/91770).
//!
//! WeCom answers `errcode` 0 for a message it took ("全局错误码",
//! https://developer.work.weixin.qq.com/document/path/90313): 45009 is the frequency limit, so
//! the robot pauses for a minute without spending attempts (the token bucket keeps under it in
//! normal use); 93000 is an invalid webhook key, a configuration error no retry can fix, so the
//! channel stops with one loud line; -1 is WeCom busy, worth another attempt.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::robot::{Robot, Wording, cut_to_bytes};
use super::{Channel, ChannelKind, DeliveryError, Outgoing};
use crate::limiter::Limiter;

pub use super::robot::{RobotConfig as WecomConfig, Verdict};

/// Messages a minute one robot takes (群机器人配置说明, above).
pub const DEFAULT_PER_MINUTE: u32 = 20;

/// The longest markdown `content`, in bytes of UTF-8 (群机器人配置说明, above).
pub const MAX_CONTENT_BYTES: usize = 4096;

/// How long the robot waits after a 45009: the quota is per minute.
pub const TOO_FAST_PAUSE: Duration = Duration::from_secs(60);

/// `errcode` values (全局错误码, above).
pub const OK: i64 = 0;
/// 系统繁忙: WeCom's own trouble, worth another attempt.
pub const BUSY: i64 = -1;
/// 接口调用超过限制: more than 20 messages a minute.
pub const FREQ_OUT_OF_LIMIT: i64 = 45009;
/// 无效的webhook地址: the key is wrong or the robot was removed.
pub const INVALID_KEY: i64 = 93000;

const WORDING: Wording = Wording {
    kind: ChannelKind::Wecom,
    code_field: "errcode",
    too_fast: "api freq out of limit",
    refused: "invalid webhook key",
    fix: "copy the robot's webhook (with its key) from the group's robot settings into [channels.wecom] url, then `systemctl reload shipwatch`",
    remedy: "put the robot's webhook with its current key in [channels.wecom], then reload or restart",
};

/// The queued body: WeCom's markdown message type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WecomMessage {
    pub msgtype: String,
    pub markdown: WecomMarkdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WecomMarkdown {
    pub content: String,
}

impl WecomMessage {
    /// A markdown message, `content` cut to [`MAX_CONTENT_BYTES`].
    pub fn markdown(content: &str) -> WecomMessage {
        WecomMessage {
            msgtype: "markdown".to_owned(),
            markdown: WecomMarkdown {
                content: cut_to_bytes(content, MAX_CONTENT_BYTES),
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data")
    }
}

/// WeCom's answer.
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
        FREQ_OUT_OF_LIMIT => Verdict::TooFast,
        INVALID_KEY => Verdict::Stop,
        _ => Verdict::Dead,
    }
}

/// The WeCom robot [`Channel`].
#[derive(Debug)]
pub struct Wecom {
    http: reqwest::Client,
    robot: Robot,
}

impl Wecom {
    pub fn new(config: WecomConfig, http: reqwest::Client) -> Wecom {
        Wecom {
            robot: Robot::new(WORDING, &config, crate::shown::url, TOO_FAST_PAUSE),
            http,
        }
    }
}

#[async_trait]
impl Channel for Wecom {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Wecom
    }

    /// One message at a time, as the DingTalk robot: the bucket spaces them 3 s apart, so a
    /// claimed message waits one spacing at most, never its lease.
    fn pace(&self) -> Option<&Limiter> {
        Some(self.robot.limiter())
    }

    /// A reload or restart ends both the stop and the pause ([`Robot::resume`]).
    fn resume(&self) {
        self.robot.resume();
    }

    async fn ready(&self) -> Result<(), DeliveryError> {
        self.robot.ready().await
    }

    async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        let url = reqwest::Url::parse(self.robot.url()).map_err(|_| self.robot.not_a_url())?;
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
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use crate::domain::Secret;
    use crate::notify::robot::MISCONFIGURED_PAUSE;
    use crate::notify::robot::testing::{assert_pause, stand_in};

    #[test]
    fn errcodes() {
        assert_eq!(classify(0), Verdict::Sent);
        assert_eq!(classify(-1), Verdict::Retry);
        assert_eq!(classify(45009), Verdict::TooFast);
        assert_eq!(classify(93000), Verdict::Stop);
        assert_eq!(classify(40008), Verdict::Dead);
    }

    #[test]
    fn content_is_cut_to_wecoms_limit() {
        let long = "最新动态".repeat(1000);
        let message = WecomMessage::markdown(&long);
        assert!(message.markdown.content.len() <= MAX_CONTENT_BYTES);
        assert!(message.markdown.content.ends_with('…'));
        let body: serde_json::Value =
            serde_json::from_str(&WecomMessage::markdown("**x**").to_json()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"msgtype": "markdown", "markdown": {"content": "**x**"}})
        );
    }

    /// A channel to a stand-in robot answering `answer`, and the count of calls.
    async fn counted(answer: &'static str) -> (Wecom, Arc<AtomicUsize>) {
        let (addr, calls) = stand_in("/cgi-bin/webhook/send", answer).await;
        let channel = Wecom::new(
            WecomConfig {
                url: Secret::new(format!(
                    "http://{addr}/cgi-bin/webhook/send?key=KEY-SECRET-77"
                )),
                secret: None,
                spacing: Duration::ZERO,
                window: Duration::ZERO,
                timeout: Duration::from_secs(5),
            },
            crate::notify::no_redirect_client().unwrap(),
        );
        (channel, calls)
    }

    async fn robot(answer: &'static str) -> Wecom {
        counted(answer).await.0
    }

    fn outgoing() -> Outgoing {
        Outgoing {
            public_id: "msg_1".into(),
            payload: WecomMessage::markdown("x").to_json(),
            recipient: None,
        }
    }

    #[tokio::test]
    async fn answers_decide_the_outcome_and_never_show_the_key() {
        assert_eq!(
            robot(r#"{"errcode":0,"errmsg":"ok"}"#)
                .await
                .deliver(&outgoing())
                .await,
            Ok(())
        );
        // The quota is per minute: the robot pauses a minute.
        let (fast, calls) = counted(r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#).await;
        let minute = Duration::from_secs(60);
        assert_eq!(
            assert_pause(&fast, &outgoing(), &calls, minute).await,
            "wecom robot paused for 1 min: it answered 45009 (api freq out of limit)"
        );

        // A wrong key stops the channel for an hour.
        let (wrong, calls) = counted(r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#).await;
        let message = assert_pause(&wrong, &outgoing(), &calls, MISCONFIGURED_PAUSE).await;
        assert!(message.contains("wecom channel stopped"), "{message}");
        assert!(message.contains("93000"), "{message}");
        assert!(!message.contains("KEY-SECRET-77"), "{message}");
        let busy = robot(r#"{"errcode":-1,"errmsg":"system busy"}"#).await;
        match busy.deliver(&outgoing()).await {
            Err(DeliveryError::Transient { message, .. }) => {
                assert!(message.contains("key=***"), "{message}");
                assert!(!message.contains("KEY-SECRET-77"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let other = robot(r#"{"errcode":40008,"errmsg":"invalid message type"}"#).await;
        assert!(matches!(
            other.deliver(&outgoing()).await,
            Err(DeliveryError::Permanent(_))
        ));
        let shown = format!("{other:?}");
        assert!(!shown.contains("KEY-SECRET-77"), "{shown}");
    }
}
