//! A fake WeCom (企业微信) group robot on loopback, checking each message as WeCom does: the
//! `key` must be the robot's, else 93000; the body must be a markdown message whose content
//! fits 4096 bytes; beyond 20 messages a minute it answers 45009. Every answer is HTTP 200 with
//! `errcode` and `errmsg`, as the real robot's are ("群机器人配置说明",
//! https://developer.work.weixin.qq.com/document/path/91770; "全局错误码",
//! https://developer.work.weixin.qq.com/document/path/90313). Accepted messages are recorded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use super::fake::script::{Log, Script};

/// The robot's quota: 20 messages a minute.
pub const PER_MINUTE: usize = 20;

/// The longest markdown content WeCom takes, in bytes.
pub const MAX_CONTENT_BYTES: usize = 4096;

/// A message the robot took (or refused with a scripted code).
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Value,
    pub errcode: i64,
}

impl Message {
    pub fn content(&self) -> &str {
        self.body["markdown"]["content"].as_str().unwrap_or("")
    }
}

struct Inner {
    key: String,
    /// `errcode`s queued for the next accepted messages; the key is unused.
    script: Script<(), i64>,
    log: Log<Message>,
}

type Shared = super::fake::Shared<Inner>;

pub struct FakeWecom {
    /// The robot's webhook, with its `key`.
    pub url: String,
    shared: Shared,
    _server: super::fake::Server,
}

impl FakeWecom {
    pub async fn start(key: &str) -> FakeWecom {
        let mut script = Script::new();
        script.quota(PER_MINUTE, Duration::from_secs(60));
        let shared = Shared::new(Inner {
            key: key.to_owned(),
            script,
            log: Log::new(),
        });
        let app = Router::new()
            .route("/cgi-bin/webhook/send", post(handle))
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake WeCom robot").await;
        FakeWecom {
            url: format!("{}/cgi-bin/webhook/send?key={key}", server.base),
            shared,
            _server: server,
        }
    }

    /// The next `n` accepted messages are answered `errcode` instead of 0.
    pub fn reply(&self, errcode: i64, n: usize) {
        self.shared.lock().script.answer_next(n, errcode);
    }

    /// Every message that passed the checks, with what it was answered.
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

    /// Why messages were refused by the checks or the quota.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.lock().log.refusals()
    }
}

fn answer(errcode: i64, errmsg: &str) -> Response {
    super::fake::json_reply(
        StatusCode::OK,
        json!({"errcode": errcode, "errmsg": errmsg}).to_string(),
    )
}

const FREQ: &str =
    "api freq out of limit, more info at https://open.work.weixin.qq.com/devtool/query?e=45009";

async fn handle(State(shared): State<Shared>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let params: BTreeMap<String, String> = super::fake::parse_form(query.as_deref().unwrap_or(""));
    let mut inner = shared.lock();
    if params.get("key") != Some(&inner.key) {
        inner.log.refuse("invalid key".into());
        return answer(
            93000,
            "invalid webhook url, hint: [1700000000_1_abc], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e=93000",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        inner.log.refuse("body is not JSON".into());
        return answer(40058, "invalid Request Parameter");
    };
    let Some(content) = body["markdown"]["content"].as_str() else {
        inner.log.refuse(format!("not a markdown message: {body}"));
        return answer(40008, "invalid message type");
    };
    if body["msgtype"] != "markdown" {
        inner.log.refuse(format!("not a markdown message: {body}"));
        return answer(40008, "invalid message type");
    }
    if content.len() > MAX_CONTENT_BYTES {
        inner
            .log
            .refuse(format!("content of {} bytes", content.len()));
        return answer(40058, "markdown.content exceed max length 4096");
    }
    if inner.script.arrive(None, Instant::now()).is_some() {
        inner.log.refuse("over 20 a minute".into());
        return answer(45009, FREQ);
    }
    let errcode = inner.script.take_next().unwrap_or(0);
    inner.log.record(Message { body, errcode });
    match errcode {
        0 => answer(0, "ok"),
        45009 => answer(45009, FREQ),
        -1 => answer(-1, "system busy"),
        other => answer(other, "scripted"),
    }
}
