//! A fake Feishu/Lark custom bot on loopback, checking each message as Feishu does: the hook
//! token in the path must be the bot's, else 19001; with a signing secret, `timestamp` (seconds)
//! must be within an hour of now and `sign` must be what the fake computes itself (with its own
//! HMAC code, so that a signing bug in the channel cannot hide behind the same bug here), else
//! 19021; the body must be an interactive card or a text message; beyond 100 messages a minute
//! or 5 a second it answers 11232. Answers carry `code`, `msg` and `data`, as the real bot's do
//! ("自定义机器人使用指南", https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot).
//! Accepted messages are recorded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::fake::script::{Log, Script};

/// The bot's quota: 100 messages a minute ...
pub const PER_MINUTE: usize = 100;
/// ... and 5 a second.
pub const PER_SECOND: usize = 5;

/// How far `timestamp` may be from now, in seconds.
const TIMESTAMP_TOLERANCE_S: i64 = 60 * 60;

/// A message the bot took (or refused with a scripted code).
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Value,
    pub code: i64,
}

impl Message {
    pub fn title(&self) -> &str {
        self.body["card"]["header"]["title"]["content"]
            .as_str()
            .unwrap_or("")
    }

    pub fn markdown(&self) -> &str {
        self.body["card"]["elements"][0]["content"]
            .as_str()
            .unwrap_or("")
    }
}

struct Inner {
    token: String,
    secret: Option<String>,
    /// `code`s queued for the next verified messages; the key is unused.
    script: Script<(), i64>,
    /// Arrivals within the last `burst_window`, for the per-second limit.
    last_second: VecDeque<Instant>,
    /// A second, as Feishu counts; a test of the limit itself widens it, so that a slow machine
    /// cannot spread its burst over two windows.
    burst_window: Duration,
    log: Log<Message>,
}

type Shared = super::fake::Shared<Inner>;

pub struct FakeFeishu {
    /// The bot's webhook, its token as the last path segment.
    pub url: String,
    shared: Shared,
    _server: super::fake::Server,
}

impl FakeFeishu {
    /// A bot with `token`, and signing with `secret` when given.
    pub async fn start(token: &str, secret: Option<&str>) -> FakeFeishu {
        let mut script = Script::new();
        script.quota(PER_MINUTE, Duration::from_secs(60));
        let shared = Shared::new(Inner {
            token: token.to_owned(),
            secret: secret.map(str::to_owned),
            script,
            last_second: VecDeque::new(),
            burst_window: Duration::from_secs(1),
            log: Log::new(),
        });
        let app = Router::new()
            .route("/open-apis/bot/v2/hook/{token}", post(handle))
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake Feishu bot").await;
        FakeFeishu {
            url: format!("{}/open-apis/bot/v2/hook/{token}", server.base),
            shared,
            _server: server,
        }
    }

    pub fn secret(&self) -> Option<String> {
        self.shared.lock().secret.clone()
    }

    /// Counts the per-second limit over `window` instead of a second.
    pub fn burst_window(&self, window: Duration) {
        self.shared.lock().burst_window = window;
    }

    /// The next `n` verified messages are answered `code` instead of 0.
    pub fn reply(&self, code: i64, n: usize) {
        self.shared.lock().script.answer_next(n, code);
    }

    /// Every message that passed the checks, with what it was answered.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.lock().log.calls()
    }

    /// The messages shown in the group.
    pub fn delivered(&self) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.code == 0)
            .collect()
    }

    /// Why messages were refused by the checks or the quota.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.lock().log.refusals()
    }
}

/// `base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = ""))`, computed here apart
/// from the channel's code.
pub fn expected_sign(secret: &str, timestamp: &str) -> String {
    let mut key = timestamp.as_bytes().to_vec();
    key.push(b'\n');
    key.extend_from_slice(secret.as_bytes());
    let mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn answer(code: i64, msg: &str) -> Response {
    super::fake::json_reply(
        StatusCode::OK,
        json!({"code": code, "data": {}, "msg": msg}).to_string(),
    )
}

const SIGN_FAIL: &str = "sign match fail or timestamp is not within one hour from current time";
const FREQUENCY: &str = "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]";

async fn handle(State(shared): State<Shared>, Path(token): Path<String>, body: Bytes) -> Response {
    let mut inner = shared.lock();
    if token != inner.token {
        inner.log.refuse("unknown hook token".into());
        return answer(
            19001,
            "param invalid: incoming webhook access token invalid",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        inner.log.refuse("body is not JSON".into());
        return answer(9499, "Bad Request");
    };
    if let Some(secret) = inner.secret.clone() {
        let (Some(timestamp), Some(sign)) = (body["timestamp"].as_str(), body["sign"].as_str())
        else {
            inner.log.refuse("no timestamp or sign".into());
            return answer(19021, SIGN_FAIL);
        };
        let now = chrono::Utc::now().timestamp();
        let fresh = timestamp
            .parse::<i64>()
            .is_ok_and(|at| (now - at).abs() <= TIMESTAMP_TOLERANCE_S);
        if !fresh {
            inner.log.refuse(format!("stale timestamp {timestamp}"));
            return answer(19021, SIGN_FAIL);
        }
        let expected = expected_sign(&secret, timestamp);
        if sign != expected {
            inner.log.refuse(format!("sign {sign} expected {expected}"));
            return answer(19021, SIGN_FAIL);
        }
    }
    let card = body["msg_type"] == "interactive" && body["card"].is_object();
    let text = body["msg_type"] == "text" && body["content"]["text"].is_string();
    if !card && !text {
        inner
            .log
            .refuse(format!("not a card or text message: {body}"));
        return answer(9499, "Bad Request");
    }
    let now = Instant::now();
    let window = inner.burst_window;
    while inner
        .last_second
        .front()
        .is_some_and(|at| now - *at >= window)
    {
        inner.last_second.pop_front();
    }
    if inner.last_second.len() >= PER_SECOND {
        inner.log.refuse("over 5 a second".into());
        return answer(11232, FREQUENCY);
    }
    inner.last_second.push_back(now);
    if inner.script.arrive(None, now).is_some() {
        inner.log.refuse("over 100 a minute".into());
        return answer(11232, FREQUENCY);
    }
    let code = inner.script.take_next().unwrap_or(0);
    inner.log.record(Message { body, code });
    match code {
        0 => answer(0, "success"),
        11232 => answer(11232, FREQUENCY),
        19021 => answer(19021, SIGN_FAIL),
        19024 => answer(19024, "Key Words Not Found"),
        other => answer(other, "scripted"),
    }
}
