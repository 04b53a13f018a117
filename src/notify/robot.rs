//! What every group robot channel shares (DingTalk, WeCom, Feishu): the webhook URL is the
//! credential and is only ever shown masked; a token bucket keeps the robot's quota; a
//! rate-limit answer pauses the robot without spending attempts; a configuration refusal stops
//! the channel with one loud line; and the robot's answer code decides the rest. Each robot's
//! file says how to sign, what the body looks like and which code means what.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, USER_AGENT};

use super::{ChannelKind, ChannelStop, DeliveryError, excerpt, read_answer};
use crate::domain::Secret;
use crate::limiter::Limiter;

/// How long the channel stops after a configuration refusal when no reload or restart lifts it
/// sooner: an hour, after which one message tries again.
pub const MISCONFIGURED_PAUSE: Duration = Duration::from_secs(60 * 60);

/// Where a robot is and how fast it may be sent to.
#[derive(Clone)]
pub struct RobotConfig {
    /// The robot's webhook, credential included.
    pub url: Secret,
    /// The signing secret, for the robots that sign and have one.
    pub secret: Option<Secret>,
    /// The quota's spacing: a minute / `rate_limit`'s calls.
    pub spacing: Duration,
    /// The quota's window (`rate_limit`'s `per`, a minute by default): how late a turn shared
    /// with other daemons may still be taken ([`Limiter::with_window`]).
    pub window: Duration,
    pub timeout: Duration,
}

/// The URL is shown as its endpoint only: its query or path holds the credential.
impl std::fmt::Debug for RobotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotConfig")
            .field("url", &crate::shown::endpoint(self.url.expose()))
            .field("secret", &self.secret)
            .field("spacing", &self.spacing)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What an answer code means for the row and the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Sent,
    Retry,
    /// The robot is rate limited: every message waits, no attempt is spent.
    TooFast,
    /// No message can go until a person fixes the robot's settings or the config.
    Stop,
    Dead,
}

/// The words one robot's stops and pauses are told in.
#[derive(Debug, Clone, Copy)]
pub struct Wording {
    pub kind: ChannelKind,
    /// The answer's code field, as errors name it: `errcode` or `code`.
    pub code_field: &'static str,
    /// What the rate-limit answer means, e.g. "send too fast".
    pub too_fast: &'static str,
    /// What a configuration refusal means, e.g. "keyword, signature or IP mismatch".
    pub refused: &'static str,
    /// What the loud line tells the operator to do.
    pub fix: &'static str,
    /// What every held row's error tells the operator to do.
    pub remedy: &'static str,
}

/// The state a robot channel keeps between messages: its bucket, its stop and its pause.
pub struct Robot {
    wording: Wording,
    url: Secret,
    /// How the URL may be shown (its credential masked).
    shown_url: fn(&str) -> String,
    timeout: Duration,
    limiter: Limiter,
    /// A configuration refusal.
    stop: ChannelStop,
    /// The robot's own lock after a rate-limit answer.
    too_fast: ChannelStop,
}

impl std::fmt::Debug for Robot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Robot")
            .field("kind", &self.wording.kind)
            .field("url", &crate::shown::endpoint(self.url.expose()))
            .finish_non_exhaustive()
    }
}

impl Robot {
    pub fn new(
        wording: Wording,
        config: &RobotConfig,
        shown_url: fn(&str) -> String,
        too_fast_pause: Duration,
    ) -> Robot {
        Robot {
            wording,
            url: config.url.clone(),
            shown_url,
            timeout: config.timeout,
            limiter: Limiter::new(Some(config.spacing)).with_window(config.window),
            stop: ChannelStop::new(MISCONFIGURED_PAUSE),
            too_fast: ChannelStop::new(too_fast_pause),
        }
    }

    /// The configured webhook, credential and all, for the request only.
    pub fn url(&self) -> &str {
        self.url.expose()
    }

    /// The bucket that spaces the robot's messages.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// A reload or restart is the operator saying "try now": both the stop and the robot's lock
    /// end here. A robot still locked answers so again and pauses again.
    pub fn resume(&self) {
        self.stop.lift();
        self.too_fast.lift();
    }

    /// Refuses while stopped or paused, else waits for the bucket's next slot.
    pub async fn ready(&self) -> Result<(), DeliveryError> {
        if let Some(stopped) = self.stop.check().or_else(|| self.too_fast.check()) {
            return Err(stopped);
        }
        self.limiter.acquire().await;
        Ok(())
    }

    /// The error for a configured URL that does not parse; the value is not repeated.
    pub fn not_a_url(&self) -> DeliveryError {
        let kind = self.wording.kind;
        DeliveryError::Permanent(format!("{kind} url in [channels.{kind}] is not a URL"))
    }

    fn shown_url(&self) -> String {
        (self.shown_url)(self.url.expose())
    }

    /// POSTs `body` as JSON to `url` and returns the answer's status and (capped) text.
    pub async fn post(
        &self,
        http: &reqwest::Client,
        url: reqwest::Url,
        body: String,
    ) -> Result<(reqwest::StatusCode, String), DeliveryError> {
        let response = http
            .post(url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .header(USER_AGENT, concat!("shipwatch/", env!("CARGO_PKG_VERSION")))
            .body(body)
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        let status = response.status();
        Ok((status, read_answer(response).await))
    }

    /// An answer that is not the robot's JSON: a gateway's page or an empty body. Worth another
    /// attempt when the server or the network is the trouble.
    pub fn unreadable(&self, status: reqwest::StatusCode, body: &str) -> DeliveryError {
        let answered = format!(
            "{} robot at {} answered {status}: {}",
            self.wording.kind,
            self.shown_url(),
            shown(body)
        );
        unreadable(answered, status)
    }

    /// What the robot's answer `code` (classified as `verdict`, with its message `msg`) does.
    pub fn outcome(&self, verdict: Verdict, code: i64, msg: &str) -> Result<(), DeliveryError> {
        let detail = excerpt(msg);
        let answered = || {
            format!(
                "{} robot at {} answered {} {code} ({detail})",
                self.wording.kind,
                self.shown_url(),
                self.wording.code_field
            )
        };
        match verdict {
            Verdict::Sent => Ok(()),
            Verdict::TooFast => Err(self.paused_too_fast(code)),
            Verdict::Stop => Err(self.misconfigured(code, &detail)),
            Verdict::Retry => Err(DeliveryError::Transient {
                message: answered(),
                retry_after: None,
            }),
            Verdict::Dead => Err(DeliveryError::Permanent(answered())),
        }
    }

    fn misconfigured(&self, code: i64, detail: &str) -> DeliveryError {
        let url = self.shown_url();
        let minutes = self.stop.length().as_secs().div_ceil(60);
        let Wording {
            kind,
            refused,
            fix,
            remedy,
            ..
        } = self.wording;
        let loud = kind.as_str().to_uppercase();
        self.stop.trip(|| {
            tracing::error!(
                url = %url,
                "{loud} CHANNEL STOPPED: the robot answered {code} ({detail}); no message is sent until a reload or restart (or a retry in {minutes} min). To fix: {fix}"
            );
            format!(
                "{kind} channel stopped: the robot refused the message ({code}: {refused}); {remedy}"
            )
        })
    }

    fn paused_too_fast(&self, code: i64) -> DeliveryError {
        let minutes = self.too_fast.length().as_secs().div_ceil(60);
        let Wording { kind, too_fast, .. } = self.wording;
        self.too_fast.trip(|| {
            tracing::warn!(
                "{kind} robot paused for {minutes} min: it answered {code} ({too_fast}); messages wait without spending attempts. Lower rate_limit in [channels.{kind}] if another program posts through the same robot"
            );
            format!("{kind} robot paused for {minutes} min: it answered {code} ({too_fast})")
        })
    }

    fn send_error(&self, error: reqwest::Error) -> DeliveryError {
        let at = format!("{} robot at {}", self.wording.kind, self.shown_url());
        super::unanswered(&at, &error, self.timeout)
    }
}

/// The error for an answer that is not the vendor's JSON (a gateway's page, an empty body), as
/// `answered` tells it: worth another attempt when the server or the network is the trouble.
pub fn unreadable(answered: String, status: reqwest::StatusCode) -> DeliveryError {
    let retryable = status.is_success()
        || status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    if retryable {
        DeliveryError::Transient {
            message: answered,
            retry_after: None,
        }
    } else {
        DeliveryError::Permanent(answered)
    }
}

/// An answer's start for an error message ([`excerpt`]), saying so when it is empty.
pub fn shown(body: &str) -> String {
    match excerpt(body) {
        text if text.is_empty() => "empty body".to_owned(),
        text => text,
    }
}

/// `text` cut to at most `max` bytes of UTF-8, on a character boundary, with `…` at the end
/// when anything was cut: a robot refuses a message longer than it takes, and a cut one still
/// says what happened.
pub fn cut_to_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let ellipsis = if max >= "…".len() { "…" } else { "" };
    let mut end = max - ellipsis.len();
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

/// What the robots' tests share: a stand-in robot, and the check of a pause (WeChat's tests use it
/// too).
#[cfg(test)]
pub(super) mod testing {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::notify::{Channel, DeliveryError, Outgoing};

    /// A stand-in robot that answers every POST to `path` with `answer`: its address, and the
    /// count of the calls that reached it.
    pub async fn stand_in(path: &str, answer: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            path,
            axum::routing::post(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                answer
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, calls)
    }

    /// Delivers `message` through `channel`, whose vendor answers so that the channel pauses or
    /// stops, and asserts what the sender relies on: the pause lasts `length`; a second message
    /// meets it without reaching the vendor (`calls` counts what reaches it); once resumed (a
    /// reload), the next message reaches the vendor again. The pause's message, for the caller's
    /// own checks.
    pub async fn assert_pause(
        channel: &dyn Channel,
        message: &Outgoing,
        calls: &AtomicUsize,
        length: Duration,
    ) -> String {
        let before = calls.load(Ordering::SeqCst);
        let (first, retry_after) = paused(channel.deliver(message).await);
        assert_eq!(retry_after, length, "{first}");
        let (again, left) = paused(channel.deliver(message).await);
        assert_eq!(again, first);
        assert!(
            left < length && left > length - Duration::from_secs(10),
            "{left:?}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 1,
            "the paused channel called its vendor"
        );
        channel.resume();
        let (resumed, retry_after) = paused(channel.deliver(message).await);
        assert_eq!((resumed.as_str(), retry_after), (first.as_str(), length));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 2,
            "the resumed channel did not call its vendor"
        );
        first
    }

    fn paused(result: Result<(), DeliveryError>) -> (String, Duration) {
        match result {
            Err(DeliveryError::Paused {
                message,
                retry_after,
            }) => (message, retry_after),
            other => panic!("expected a pause, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn retried(status: u16) -> bool {
        let status = StatusCode::from_u16(status).unwrap();
        match unreadable("dingtalk robot answered".to_owned(), status) {
            DeliveryError::Transient { message, .. } => {
                assert_eq!(message, "dingtalk robot answered");
                true
            }
            DeliveryError::Permanent(message) => {
                assert_eq!(message, "dingtalk robot answered");
                false
            }
            other => panic!("{status}: {other:?}"),
        }
    }

    #[test]
    fn an_unreadable_answer_is_retried_when_the_server_or_the_network_is_the_trouble() {
        // A 200 with a gateway's page, a server's error, a timeout, a rate limit: another try.
        for status in [200, 500, 502, 503, 504, 408, 429] {
            assert!(retried(status), "{status}");
        }
        // The request itself is wrong (a bad URL, a robot deleted): no retry helps.
        for status in [400, 401, 403, 404, 405, 410, 413] {
            assert!(!retried(status), "{status}");
        }
    }

    const WORDING: Wording = Wording {
        kind: ChannelKind::Dingtalk,
        code_field: "errcode",
        too_fast: "send too fast",
        refused: "keyword mismatch",
        fix: "add the keyword",
        remedy: "fix the keyword, then reload",
    };

    fn config() -> RobotConfig {
        RobotConfig {
            url: Secret::new("https://oapi.dingtalk.com/robot/send?access_token=TOKEN-abc123"),
            secret: Some(Secret::new("SEC-xyz789")),
            spacing: Duration::from_secs(3),
            window: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }

    fn robot() -> Robot {
        let too_fast_pause = Duration::from_secs(600);
        Robot::new(WORDING, &config(), crate::shown::endpoint, too_fast_pause)
    }

    /// A pause's message and length.
    fn paused(refusal: Result<(), DeliveryError>) -> (String, Duration) {
        let Err(DeliveryError::Paused {
            message,
            retry_after,
        }) = refusal
        else {
            panic!("not a pause: {refusal:?}");
        };
        (message, retry_after)
    }

    /// The stop's message and length as the refusal tells them, and what is left of it when the
    /// next message asks for its turn.
    async fn stopped(
        robot: &Robot,
        refusal: Result<(), DeliveryError>,
    ) -> (String, Duration, Duration) {
        let (message, retry_after) = paused(refusal);
        let (again, left) = paused(robot.ready().await);
        assert_eq!(again, message);
        (message, retry_after, left)
    }

    // The paused clock lets the bucket's turns, 3 s apart, come at once.
    #[tokio::test(start_paused = true)]
    async fn a_refused_configuration_stops_the_robot_for_an_hour_until_it_is_resumed() {
        let robot = robot();
        assert!(robot.ready().await.is_ok());
        let refusal = robot.outcome(Verdict::Stop, 310_000, "keywords not in content");
        let (message, retry_after, left) = stopped(&robot, refusal).await;
        assert_eq!(
            message,
            "dingtalk channel stopped: the robot refused the message (310000: keyword mismatch); fix the keyword, then reload"
        );
        assert_eq!(retry_after, Duration::from_secs(3_600));
        assert!(
            left > Duration::from_secs(3_590) && left <= retry_after,
            "{left:?}"
        );
        robot.resume();
        assert!(robot.ready().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_answer_pauses_the_robot_for_its_pause_until_it_is_resumed() {
        let robot = robot();
        let refusal = robot.outcome(Verdict::TooFast, 130_101, "send too fast");
        let (message, retry_after, left) = stopped(&robot, refusal).await;
        assert_eq!(
            message,
            "dingtalk robot paused for 10 min: it answered 130101 (send too fast)"
        );
        assert_eq!(retry_after, Duration::from_secs(600));
        assert!(
            left > Duration::from_secs(590) && left <= retry_after,
            "{left:?}"
        );
        robot.resume();
        assert!(robot.ready().await.is_ok());
    }

    #[test]
    fn a_robot_is_shown_by_its_endpoint_never_its_credentials() {
        let shown = format!("{:?} {:?}", config(), robot());
        assert!(
            !shown.contains("TOKEN-abc123") && !shown.contains("SEC-xyz789"),
            "{shown}"
        );
        assert_eq!(
            shown.matches("https://oapi.dingtalk.com/…").count(),
            2,
            "{shown}"
        );
        assert!(
            shown.starts_with("RobotConfig {") && shown.contains("Robot { kind: Dingtalk"),
            "{shown}"
        );
    }

    #[test]
    fn an_answer_is_shown_by_its_start_and_an_empty_one_says_so() {
        assert_eq!(shown(""), "empty body");
        assert_eq!(shown(" \r\n"), "empty body");
        assert_eq!(
            shown("<h1>502 Bad Gateway</h1>\n"),
            "<h1>502 Bad Gateway</h1>"
        );
        assert_eq!(shown("a\nb"), "a\\nb");
    }

    #[test]
    fn cutting_keeps_characters_whole_and_within_the_limit() {
        assert_eq!(cut_to_bytes("短", 10), "短");
        let fits = "长".repeat(1365);
        assert_eq!(cut_to_bytes(&fits, 4096), fits);
        let longer = "长".repeat(1400);
        let cut = cut_to_bytes(&longer, 4096);
        assert!(cut.len() <= 4096, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.len() > 4096 - 6, "{}", cut.len());
        assert_eq!(cut_to_bytes("abcdef", 2), "ab");
        assert_eq!(cut_to_bytes("abcdef", 4), "a…");
    }
}
