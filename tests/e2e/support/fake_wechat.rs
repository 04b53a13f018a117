//! A fake WeChat official account on loopback, checking what WeChat checks and answering in its
//! shapes (HTTP 200, `{"errcode":…,"errmsg":…}`):
//! - `POST /cgi-bin/stable_token` takes `{grant_type: "client_credential", appid, secret,
//!   force_refresh}`: a wrong appid is 40013, a wrong secret 40125; in normal mode a token still
//!   alive is handed back with the rest of its life, else a new one with `expires_in` seconds
//!   ("getStableAccessToken", https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/getStableAccessToken.html);
//! - `POST /cgi-bin/message/template/send?access_token=…`: a token never handed out is 40001, a
//!   token past its life (or expired by the test) 42001, a wrong template id 40037, an OpenID
//!   that does not follow 43004, one the account never saw 40003, a value over its type's limit
//!   47003; a repeated `client_msg_id` for the same OpenID is answered ok and not shown twice
//!   ("发送模板消息", https://developers.weixin.qq.com/doc/service/api/notify/template/api_sendtemplatemessage.html).
//!
//! Messages shown to a buyer are recorded, as are the checks' refusals.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use super::fake::script::{Log, Script};

/// A template message the account took (or refused with a scripted code).
#[derive(Debug, Clone)]
pub struct Sent {
    pub body: Value,
    /// The token it came with.
    pub token: String,
    pub errcode: i64,
    /// When it arrived.
    pub at: Instant,
}

impl Sent {
    pub fn touser(&self) -> &str {
        self.body["touser"].as_str().unwrap_or("")
    }

    /// The value sent for a template key.
    pub fn value(&self, key: &str) -> &str {
        self.body["data"][key]["value"].as_str().unwrap_or("")
    }

    pub fn client_msg_id(&self) -> &str {
        self.body["client_msg_id"].as_str().unwrap_or("")
    }
}

struct Token {
    value: String,
    ends: Instant,
}

struct Inner {
    appid: String,
    secret: String,
    template_id: String,
    /// How long the tokens handed out live.
    expires_in: Duration,
    /// Every token handed out, with the end of its life.
    tokens: Vec<Token>,
    /// Token requests, each with the `force_refresh` it asked for.
    token_requests: Vec<bool>,
    followers: BTreeSet<String>,
    /// OpenIDs of the account that no longer follow it.
    unfollowed: BTreeSet<String>,
    /// (OpenID, client_msg_id) already shown.
    shown: BTreeSet<(String, String)>,
    /// `errcode`s queued for the next sends that pass the checks.
    script: Script<(), i64>,
    log: Log<Sent>,
    repeats: usize,
    /// How long every answer takes.
    delay: Duration,
}

type Shared = super::fake::Shared<Inner>;

pub struct FakeWechat {
    /// `http://127.0.0.1:PORT`: the channel's `endpoint`.
    pub base: String,
    shared: Shared,
    _server: super::fake::Server,
}

impl FakeWechat {
    /// An account `appid` with `secret` and one template, `template_id`, followed by
    /// `followers`.
    pub async fn start(
        appid: &str,
        secret: &str,
        template_id: &str,
        followers: &[&str],
    ) -> FakeWechat {
        let shared = Shared::new(Inner {
            appid: appid.to_owned(),
            secret: secret.to_owned(),
            template_id: template_id.to_owned(),
            expires_in: Duration::from_secs(7200),
            tokens: Vec::new(),
            token_requests: Vec::new(),
            followers: followers.iter().map(|f| (*f).to_owned()).collect(),
            unfollowed: BTreeSet::new(),
            shown: BTreeSet::new(),
            script: Script::new(),
            log: Log::new(),
            repeats: 0,
            delay: Duration::ZERO,
        });
        let app = Router::new()
            .route("/cgi-bin/stable_token", post(token))
            .route("/cgi-bin/message/template/send", post(send))
            .with_state(shared.clone());
        let server = super::fake::serve(app, "fake WeChat").await;
        FakeWechat {
            base: server.base.clone(),
            shared,
            _server: server,
        }
    }

    pub fn appid(&self) -> String {
        self.shared.lock().appid.clone()
    }

    pub fn secret(&self) -> String {
        self.shared.lock().secret.clone()
    }

    pub fn template_id(&self) -> String {
        self.shared.lock().template_id.clone()
    }

    /// `openid` belongs to the account but no longer follows it: sends to it are 43004.
    pub fn unfollow(&self, openid: &str) {
        let mut inner = self.shared.lock();
        inner.followers.remove(openid);
        inner.unfollowed.insert(openid.to_owned());
    }

    /// Every token handed out so far ends now: sends with one are answered 42001.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for token in &mut self.shared.lock().tokens {
            token.ends = token.ends.min(now);
        }
    }

    /// Every answer, a token's or a send's, comes `delay` after its request from now on.
    pub fn slow(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// The next `n` sends that pass the checks are answered `errcode` instead of 0.
    pub fn reply(&self, errcode: i64, n: usize) {
        self.shared.lock().script.answer_next(n, errcode);
    }

    /// How many tokens were asked for, and whether any asked to force a refresh.
    pub fn token_requests(&self) -> Vec<bool> {
        self.shared.lock().token_requests.clone()
    }

    /// Every token handed out.
    pub fn tokens(&self) -> Vec<String> {
        self.shared
            .lock()
            .tokens
            .iter()
            .map(|t| t.value.clone())
            .collect()
    }

    /// Every send that passed the checks, with what it was answered.
    pub fn sends(&self) -> Vec<Sent> {
        self.shared.lock().log.calls()
    }

    /// The messages shown to buyers.
    pub fn delivered(&self) -> Vec<Sent> {
        self.sends()
            .into_iter()
            .filter(|s| s.errcode == 0)
            .collect()
    }

    /// Why requests were refused by the checks.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.lock().log.refusals()
    }

    /// Sends answered ok without showing anything: their `client_msg_id` was seen.
    pub fn repeats(&self) -> usize {
        self.shared.lock().repeats
    }
}

fn answer(errcode: i64, errmsg: &str) -> Response {
    super::fake::json_reply(
        StatusCode::OK,
        json!({"errcode": errcode, "errmsg": format!("{errmsg} rid: 6566f6d9-4a477f28-21702d49")})
            .to_string(),
    )
}

async fn token(State(shared): State<Shared>, body: Bytes) -> Response {
    let delay = shared.lock().delay;
    tokio::time::sleep(delay).await;
    let mut inner = shared.lock();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        inner.log.refuse("token request is not JSON".into());
        return answer(47001, "data format error");
    };
    inner
        .token_requests
        .push(body["force_refresh"].as_bool().unwrap_or(false));
    if body["grant_type"] != "client_credential" {
        inner
            .log
            .refuse(format!("grant_type {}", body["grant_type"]));
        return answer(40002, "invalid grant_type");
    }
    if body["appid"].as_str() != Some(inner.appid.as_str()) {
        inner.log.refuse("wrong appid".into());
        return answer(40013, "invalid appid");
    }
    if body["secret"].as_str() != Some(inner.secret.as_str()) {
        inner.log.refuse("wrong secret".into());
        return answer(40125, "invalid appsecret");
    }
    let now = Instant::now();
    let force = body["force_refresh"].as_bool().unwrap_or(false);
    let alive = inner.tokens.last().filter(|t| t.ends > now && !force);
    let (value, left) = match alive {
        Some(token) => (token.value.clone(), token.ends - now),
        None => {
            let value = format!("96_TOKEN{}x{}", inner.tokens.len() + 1, "Ab9".repeat(20));
            let left = inner.expires_in;
            if force {
                // Forcing voids the token in use.
                for old in &mut inner.tokens {
                    old.ends = old.ends.min(now);
                }
            }
            inner.tokens.push(Token {
                value: value.clone(),
                ends: now + left,
            });
            (value, left)
        }
    };
    super::fake::json_reply(
        StatusCode::OK,
        json!({"access_token": value, "expires_in": left.as_secs().max(1)}).to_string(),
    )
}

/// The limit WeChat documents for a template key's value type, in characters, if any.
fn limit(key: &str) -> Option<usize> {
    match key.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "thing" | "const" => Some(20),
        "character_string" | "number" | "letter" => Some(32),
        "phrase" | "symbol" => Some(5),
        "phone_number" => Some(17),
        "car_number" => Some(8),
        _ => None,
    }
}

async fn send(State(shared): State<Shared>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let params = super::fake::parse_form(query.as_deref().unwrap_or(""));
    let delay = shared.lock().delay;
    tokio::time::sleep(delay).await;
    let mut inner = shared.lock();
    let Some(token) = params.get("access_token").cloned() else {
        inner.log.refuse("no access_token".into());
        return answer(41001, "access_token missing");
    };
    let now = Instant::now();
    match inner.tokens.iter().find(|t| t.value == token) {
        None => {
            inner.log.refuse("unknown token".into());
            return answer(
                40001,
                "invalid credential, access_token is invalid or not latest",
            );
        }
        Some(t) if t.ends <= now => {
            inner.log.refuse("expired token".into());
            return answer(42001, "access_token expired");
        }
        Some(_) => {}
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        inner.log.refuse("send body is not JSON".into());
        return answer(47001, "data format error");
    };
    if body["template_id"].as_str() != Some(inner.template_id.as_str()) {
        inner.log.refuse("wrong template_id".into());
        return answer(40037, "invalid template_id");
    }
    let touser = body["touser"].as_str().unwrap_or("").to_owned();
    if inner.unfollowed.contains(&touser) {
        inner.log.refuse("not following".into());
        return answer(43004, "require subscribe");
    }
    if !inner.followers.contains(&touser) {
        inner.log.refuse("unknown openid".into());
        return answer(40003, "invalid openid");
    }
    let Some(data) = body["data"].as_object() else {
        inner.log.refuse("no data".into());
        return answer(47003, "argument invalid! data invalid");
    };
    for (key, item) in data {
        let Some(value) = item["value"].as_str() else {
            inner.log.refuse(format!("data.{key} has no value"));
            return answer(
                47003,
                &format!("argument invalid! data.{key}.value invalid"),
            );
        };
        if limit(key).is_some_and(|max| value.chars().count() > max) {
            inner.log.refuse(format!("data.{key} too long: {value}"));
            return answer(
                47003,
                &format!("argument invalid! data.{key}.value invalid"),
            );
        }
    }
    let client_msg_id = body["client_msg_id"].as_str().unwrap_or("").to_owned();
    if !client_msg_id.is_empty()
        && inner
            .shown
            .contains(&(touser.clone(), client_msg_id.clone()))
    {
        inner.repeats += 1;
        return answer(0, "ok");
    }
    let errcode = inner.script.take_next().unwrap_or(0);
    if errcode == 0 && !client_msg_id.is_empty() {
        inner.shown.insert((touser, client_msg_id));
    }
    inner.log.record(Sent {
        body,
        token,
        errcode,
        at: Instant::now(),
    });
    match errcode {
        0 => super::fake::json_reply(
            StatusCode::OK,
            json!({"errcode": 0, "errmsg": "ok", "msgid": 200228332}).to_string(),
        ),
        -1 => answer(-1, "system error"),
        45009 => answer(45009, "reach max api daily quota limit"),
        other => answer(other, "scripted"),
    }
}
