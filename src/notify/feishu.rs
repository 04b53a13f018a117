//! Feishu/Lark custom bot (自定义机器人): the shop's staff group hears of the changes that need a
//! person, as with the DingTalk and WeCom robots.
//!
//! Every attempt POSTs JSON to the bot's webhook, `https://open.feishu.cn/open-apis/bot/v2/hook/…`,
//! whose last path segment is the credential: anyone who has it can post into the group, so the
//! URL is a secret and is only ever shown as `/hook/***`. A bot with the "签名校验" security
//! setting also needs `timestamp` (seconds, as a string) and `sign` in the body: `sign` is
//! base64(HMAC-SHA256 keyed by `timestamp + "\n" + secret`, over an empty message), and a
//! timestamp more than an hour off is refused with 19021 like a wrong signature. A bot takes
//! 100 messages a minute and 5 a second, and a body of at most 20 KB; beyond the rate it answers
//! 11232 ("自定义机器人使用指南",
//! https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot,
//! formerly https://open.feishu.cn/document/ukTMukTMukTM/ucTM5YjL3ETO24yNxkjN).
//!
//! The message is an `interactive` card: a header with the title and one `markdown` element,
//! the card element that renders markdown (bold, links, lists); `post` rich text takes no
//! markdown ("卡片 Markdown 组件",
//! https://open.feishu.cn/document/common-capabilities/message-card/message-cards-content/using-markdown-tags).
//!
//! Success is `code` 0; the bot's older answers carry `StatusCode` 0 instead, and both are
//! accepted (the guide's examples show both). 19021 (signature or timestamp), 19022 (IP not
//! allowed) and 19024 (keyword not found) are configuration errors no retry can fix: the channel
//! stops with one loud line. 11232 pauses the bot for a minute without spending attempts.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::robot::{Robot, Wording, cut_to_bytes};
use super::{Channel, ChannelKind, DeliveryError, Outgoing};
use crate::domain::Secret;
use crate::limiter::Limiter;

pub use super::robot::{RobotConfig as FeishuConfig, Verdict};

/// Messages a minute one bot takes (自定义机器人使用指南, above); 5 a second also holds at this
/// spacing.
pub const DEFAULT_PER_MINUTE: u32 = 100;

/// The longest body Feishu takes is 20 KB; the markdown is cut to leave room for the rest.
pub const MAX_MARKDOWN_BYTES: usize = 18 * 1024;

/// The longest title kept in the card's header.
pub const MAX_TITLE_BYTES: usize = 512;

/// How long the bot waits after an 11232: the quota is per minute.
pub const TOO_FAST_PAUSE: Duration = Duration::from_secs(60);

/// `code` values (自定义机器人使用指南, above).
pub const OK: i64 = 0;
/// frequency limited: over 100 a minute or 5 a second.
pub const FREQUENCY_LIMITED: i64 = 11232;
/// sign match fail or timestamp is not within one hour from current time.
pub const SIGN_MISMATCH: i64 = 19021;
/// Ip Not Allowed.
pub const IP_NOT_ALLOWED: i64 = 19022;
/// Key Words Not Found.
pub const KEYWORDS_NOT_FOUND: i64 = 19024;

type HmacSha256 = Hmac<Sha256>;

const WORDING: Wording = Wording {
    kind: ChannelKind::Feishu,
    code_field: "code",
    too_fast: "frequency limited",
    refused: "signature, timestamp, IP or keyword mismatch",
    fix: "match the bot's security settings (the secret in [channels.feishu], a keyword the messages contain, this host's IP in the allow-list) and the clock, then `systemctl reload shipwatch`",
    remedy: "fix the bot's security settings or secret in [channels.feishu], then reload or restart",
};

/// The queued body: an interactive card with the title and the markdown text. `timestamp` and
/// `sign` are added by each attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeishuMessage {
    pub msg_type: String,
    pub card: Card,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub header: CardHeader,
    pub elements: Vec<CardElement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardHeader {
    pub title: CardElement,
}

/// `{"tag": "plain_text" | "markdown", "content": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardElement {
    pub tag: String,
    pub content: String,
}

impl FeishuMessage {
    /// A card titled `title` holding `markdown`, both cut to fit Feishu's body limit.
    pub fn card(title: &str, markdown: &str) -> FeishuMessage {
        FeishuMessage {
            msg_type: "interactive".to_owned(),
            card: Card {
                header: CardHeader {
                    title: CardElement {
                        tag: "plain_text".to_owned(),
                        content: cut_to_bytes(title, MAX_TITLE_BYTES),
                    },
                },
                elements: vec![CardElement {
                    tag: "markdown".to_owned(),
                    content: cut_to_bytes(markdown, MAX_MARKDOWN_BYTES),
                }],
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data")
    }
}

/// base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = "")), as the guide's samples
/// compute it: unlike DingTalk, the string is the key and the message is empty.
pub fn sign(secret: &str, timestamp_s: i64) -> String {
    let mac = HmacSha256::new_from_slice(format!("{timestamp_s}\n{secret}").as_bytes())
        .expect("HMAC accepts keys of any length");
    BASE64.encode(mac.finalize().into_bytes())
}

/// The body of one attempt: the queued one, with `timestamp` and `sign` when signing. `None`
/// when the queued body is not a JSON object.
pub fn signed_body(payload: &str, secret: Option<&str>, timestamp_s: i64) -> Option<String> {
    let mut body: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(payload).ok()?;
    if let Some(secret) = secret {
        body.insert("timestamp".to_owned(), timestamp_s.to_string().into());
        body.insert("sign".to_owned(), sign(secret, timestamp_s).into());
    }
    Some(serde_json::Value::Object(body).to_string())
}

/// Feishu's answer: `code`/`msg`, or the older `StatusCode`/`StatusMessage`.
#[derive(Debug, Deserialize)]
struct Answer {
    code: Option<i64>,
    #[serde(default)]
    msg: String,
    #[serde(rename = "StatusCode")]
    status_code: Option<i64>,
    #[serde(rename = "StatusMessage", default)]
    status_message: String,
}

impl Answer {
    fn code(&self) -> Option<(i64, &str)> {
        match (self.code, self.status_code) {
            (Some(code), _) => Some((code, &self.msg)),
            (None, Some(code)) => Some((code, &self.status_message)),
            (None, None) => None,
        }
    }
}

pub fn classify(code: i64) -> Verdict {
    match code {
        OK => Verdict::Sent,
        FREQUENCY_LIMITED => Verdict::TooFast,
        SIGN_MISMATCH | IP_NOT_ALLOWED | KEYWORDS_NOT_FOUND => Verdict::Stop,
        _ => Verdict::Dead,
    }
}

/// The Feishu bot [`Channel`].
#[derive(Debug)]
pub struct Feishu {
    secret: Option<Secret>,
    http: reqwest::Client,
    robot: Robot,
}

impl Feishu {
    pub fn new(config: FeishuConfig, http: reqwest::Client) -> Feishu {
        Feishu {
            robot: Robot::new(
                WORDING,
                &config,
                crate::shown::url_with_path_token,
                TOO_FAST_PAUSE,
            ),
            secret: config.secret,
            http,
        }
    }
}

#[async_trait]
impl Channel for Feishu {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Feishu
    }

    /// One message at a time, as the other robots.
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
        let timestamp = chrono::Utc::now().timestamp();
        let body = signed_body(
            &message.payload,
            self.secret.as_ref().map(Secret::expose),
            timestamp,
        )
        .ok_or_else(|| {
            DeliveryError::Permanent("feishu message is not a JSON object".to_owned())
        })?;
        let (status, text) = self.robot.post(&self.http, url, body).await?;
        let answer = serde_json::from_str::<Answer>(&text).ok();
        let Some((code, msg)) = answer.as_ref().and_then(Answer::code) else {
            return Err(self.robot.unreadable(status, &text));
        };
        self.robot.outcome(classify(code), code, msg)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::notify::robot::MISCONFIGURED_PAUSE;
    use crate::notify::robot::testing::{assert_pause, stand_in};

    /// The guide's Python sample: `hmac.new(f"{timestamp}\n{secret}", b"", sha256)`, base64.
    #[test]
    fn signs_as_feishu_documents() {
        let mut mac = HmacSha256::new_from_slice(b"1599360473\nsecret-1").unwrap();
        mac.update(b"");
        let expected = BASE64.encode(mac.finalize().into_bytes());
        assert_eq!(sign("secret-1", 1_599_360_473), expected);
        let body: serde_json::Value = serde_json::from_str(
            &signed_body(
                &FeishuMessage::card("t", "x").to_json(),
                Some("secret-1"),
                1_599_360_473,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(body["timestamp"], "1599360473");
        assert_eq!(body["sign"], expected.as_str());
        assert_eq!(body["msg_type"], "interactive");
        assert_eq!(body["card"]["elements"][0]["tag"], "markdown");
        assert_eq!(body["card"]["header"]["title"]["content"], "t");
        let unsigned = signed_body(r#"{"msg_type":"interactive"}"#, None, 1).unwrap();
        assert_eq!(unsigned, r#"{"msg_type":"interactive"}"#);
        assert_eq!(signed_body("[1]", None, 1), None);
    }

    /// Feishu takes a body of at most 20 KB: a long card is cut so that, signed, it fits, and it
    /// keeps as much of the text as its share of the body holds.
    #[test]
    fn a_long_card_is_cut_to_fit_the_body_limit() {
        let card = FeishuMessage::card(&"标题".repeat(400), &"派送异常。".repeat(3_000));
        let markdown = &card.card.elements[0].content;
        assert!(markdown.ends_with('…'), "{}", markdown.len());
        assert!(
            markdown.len() <= 18 * 1024 && markdown.len() > 18 * 1024 - 6,
            "{}",
            markdown.len()
        );
        let title = &card.card.header.title.content;
        assert!(
            title.len() <= 512 && title.ends_with('…'),
            "{}",
            title.len()
        );
        let signed = signed_body(&card.to_json(), Some("secret-1"), 1_599_360_473).unwrap();
        assert!(signed.len() <= 20_000, "{}", signed.len());
    }

    #[test]
    fn codes() {
        assert_eq!(classify(0), Verdict::Sent);
        assert_eq!(classify(11232), Verdict::TooFast);
        assert_eq!(classify(19021), Verdict::Stop);
        assert_eq!(classify(19024), Verdict::Stop);
        assert_eq!(classify(9499), Verdict::Dead);
    }

    /// A channel to a stand-in bot answering `answer`, and the count of calls.
    async fn counted(answer: &'static str) -> (Feishu, Arc<AtomicUsize>) {
        let (addr, calls) = stand_in("/open-apis/bot/v2/hook/{token}", answer).await;
        let channel = Feishu::new(
            FeishuConfig {
                url: Secret::new(format!(
                    "http://{addr}/open-apis/bot/v2/hook/HOOK-SECRET-77"
                )),
                secret: Some(Secret::new("SIGN-SECRET-78")),
                spacing: Duration::ZERO,
                window: Duration::ZERO,
                timeout: Duration::from_secs(5),
            },
            crate::notify::no_redirect_client().unwrap(),
        );
        (channel, calls)
    }

    async fn bot(answer: &'static str) -> Feishu {
        counted(answer).await.0
    }

    fn outgoing() -> Outgoing {
        Outgoing {
            public_id: "msg_1".into(),
            payload: FeishuMessage::card("t", "x").to_json(),
            recipient: None,
        }
    }

    #[tokio::test]
    async fn answers_decide_the_outcome_and_never_show_the_token() {
        for ok in [
            r#"{"code":0,"data":{},"msg":"success"}"#,
            r#"{"Extra":null,"StatusCode":0,"StatusMessage":"success"}"#,
        ] {
            assert_eq!(bot(ok).await.deliver(&outgoing()).await, Ok(()), "{ok}");
        }
        // Over its rate, the bot pauses a minute.
        let (fast, calls) = counted(r#"{"code":11232,"data":{},"msg":"frequency limited"}"#).await;
        let minute = Duration::from_secs(60);
        assert_eq!(
            assert_pause(&fast, &outgoing(), &calls, minute).await,
            "feishu robot paused for 1 min: it answered 11232 (frequency limited)"
        );
        // A refused signature stops the channel for an hour.
        let (wrong, calls) = counted(r#"{"code":19021,"data":{},"msg":"sign match fail or timestamp is not within one hour from current time"}"#).await;
        let message = assert_pause(&wrong, &outgoing(), &calls, MISCONFIGURED_PAUSE).await;
        assert!(message.contains("feishu channel stopped"), "{message}");
        assert!(message.contains("19021"), "{message}");
        let other = bot(r#"{"code":9499,"data":{},"msg":"Bad Request"}"#).await;
        match other.deliver(&outgoing()).await {
            Err(DeliveryError::Permanent(message)) => {
                assert!(message.contains("code 9499"), "{message}");
                assert!(message.contains("/hook/***"), "{message}");
                assert!(!message.contains("HOOK-SECRET-77"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let html = bot("<html>gateway</html>").await;
        match html.deliver(&outgoing()).await {
            Err(DeliveryError::Transient { message, .. }) => {
                assert!(!message.contains("HOOK-SECRET-77"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{html:?}");
        assert!(
            !shown.contains("HOOK-SECRET-77") && !shown.contains("SIGN-SECRET-78"),
            "{shown}"
        );
    }
}
