//! A fake DingTalk custom robot on loopback, checking each message as DingTalk does: the
//! `access_token` must be the robot's; with a signing secret, `timestamp` must be within an hour
//! of now and `sign` must be what the fake computes itself (with its own HMAC code, so that a
//! signing bug in the channel cannot hide behind the same bug here), else 310000; beyond
//! 20 messages a minute it answers 130101. Every answer is HTTP 200 with `errcode` and `errmsg`,
//! as the real robot's are ("自定义机器人安全设置",
//! https://open.dingtalk.com/document/robots/customize-robot-security-settings; "自定义机器人接入",
//! https://open.dingtalk.com/document/group/custom-robot-access). Accepted messages are recorded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::fake::script::{Log, Script};

/// The robot's quota: 20 messages a minute.
pub const PER_MINUTE: usize = 20;

/// How far `timestamp` may be from now.
const TIMESTAMP_TOLERANCE_MS: i64 = 60 * 60 * 1000;

/// A message the robot took (or refused with a scripted code).
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Value,
    pub errcode: i64,
    /// The webhook's query, `access_token`, `timestamp` and `sign` included.
    pub query: BTreeMap<String, String>,
}

impl Message {
    pub fn title(&self) -> &str {
        self.body["markdown"]["title"].as_str().unwrap_or("")
    }

    pub fn text(&self) -> &str {
        self.body["markdown"]["text"].as_str().unwrap_or("")
    }
}

struct Inner {
    token: String,
    secret: Option<String>,
    /// `errcode`s queued for the next verified messages; the key is unused.
    script: Script<(), i64>,
    log: Log<Message>,
}

type Shared = super::fake::Shared<Inner>;

pub struct FakeDingtalk {
    /// The robot's webhook, with its `access_token`.
    pub url: String,
    shared: Shared,
    _server: super::fake::Server,
}

impl FakeDingtalk {
    /// A robot with `token`, and signing with `secret` when given.
    pub async fn start(token: &str, secret: Option<&str>) -> FakeDingtalk {
        let mut script = Script::new();
        script.quota(PER_MINUTE, Duration::from_secs(60));
        let shared = Shared::new(Inner {
            token: token.to_owned(),
            secret: secret.map(str::to_owned),
            script,
            log: Log::new(),
        });
        let app = Router::new()
            .route("/robot/send", post(handle))
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake DingTalk robot").await;
        FakeDingtalk {
            url: format!("{}/robot/send?access_token={token}", server.base),
            shared,
            _server: server,
        }
    }

    pub fn secret(&self) -> Option<String> {
        self.shared.lock().secret.clone()
    }

    /// Takes `limit` messages a `window` from now on instead of DingTalk's 20 a minute.
    pub fn quota(&self, limit: usize, window: Duration) {
        self.shared.lock().script.quota(limit, window);
    }

    /// The next `n` verified messages are answered `errcode` instead of 0.
    pub fn reply(&self, errcode: i64, n: usize) {
        self.shared.lock().script.answer_next(n, errcode);
    }

    /// Every message that passed the security checks, with what it was answered.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.lock().log.calls()
    }

    /// The messages shown in the group.
    pub fn delivered(&self) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.errcode == 0)
            .collect()
    }

    /// Why messages were refused by the security checks or the quota.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.lock().log.refusals()
    }
}

/// `base64(HMAC-SHA256(secret, timestamp + "\n" + secret))`, computed here apart from the
/// channel's code.
pub fn expected_sign(secret: &str, timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn answer(errcode: i64, errmsg: &str) -> Response {
    super::fake::json_reply(
        StatusCode::OK,
        json!({"errcode": errcode, "errmsg": errmsg}).to_string(),
    )
}

async fn handle(State(shared): State<Shared>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let params: BTreeMap<String, String> = super::fake::parse_form(query.as_deref().unwrap_or(""));
    let mut inner = shared.lock();
    if params.get("access_token") != Some(&inner.token) {
        inner.log.refuse("unknown access_token".into());
        return answer(300001, "token is not exist");
    }
    if let Some(secret) = inner.secret.clone() {
        let (Some(timestamp), Some(sign)) = (params.get("timestamp"), params.get("sign")) else {
            inner.log.refuse("no timestamp or sign".into());
            return answer(
                310000,
                "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
            );
        };
        let now = chrono::Utc::now().timestamp_millis();
        let fresh = timestamp
            .parse::<i64>()
            .is_ok_and(|at| (now - at).abs() <= TIMESTAMP_TOLERANCE_MS);
        if !fresh {
            inner.log.refuse(format!("stale timestamp {timestamp}"));
            return answer(
                310000,
                "timestamp is not in the valid range, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
            );
        }
        let expected = expected_sign(&secret, timestamp);
        if *sign != expected {
            inner.log.refuse(format!("sign {sign} expected {expected}"));
            return answer(
                310000,
                "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
            );
        }
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        inner.log.refuse("body is not JSON".into());
        return answer(40035, "缺少参数 json");
    };
    if body["msgtype"] != "markdown"
        || !body["markdown"]["title"].is_string()
        || !body["markdown"]["text"].is_string()
    {
        inner.log.refuse(format!("not a markdown message: {body}"));
        return answer(40035, "缺少参数 markdown");
    }
    if inner.script.arrive(None, Instant::now()).is_some() {
        inner.log.refuse("over the robot's quota".into());
        return answer(130101, "send too fast, exceed 20 times per minute");
    }
    let errcode = inner.script.take_next().unwrap_or(0);
    inner.log.record(Message {
        body,
        errcode,
        query: params,
    });
    match errcode {
        0 => answer(0, "ok"),
        130101 => answer(130101, "send too fast, exceed 20 times per minute"),
        310000 => answer(
            310000,
            "keywords not in content, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
        ),
        other => answer(other, "scripted"),
    }
}
