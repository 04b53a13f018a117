//! Notifications: what an outbox row says (payload, templates) and how a row is delivered. Which
//! rows a change queues is decided in `track`.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod delivery;
pub mod dingtalk;
pub mod email;
pub mod feishu;
mod lane;
pub mod ops;
pub mod payload;
pub mod receiver;
pub mod robot;
pub mod sample;
pub mod sender;
pub mod sms_aliyun;
pub mod sms_http;
mod smtp_connections;
mod smtp_url;
pub mod template;
pub mod webhook;
pub mod wechat;
pub mod wecom;

/// The channel names are domain values: storage keys outbox rows by them without depending on
/// how a channel sends.
pub use crate::domain::ChannelKind;
use crate::limiter::Limiter;

/// An enabled channel as the outbox sees it: which statuses it announces and in what words.
#[derive(Debug, Clone)]
pub struct ChannelRule {
    pub kind: ChannelKind,
    pub triggers: Vec<crate::domain::Status>,
    /// Messages due inside these hours wait until they end (SMS).
    pub quiet_hours: Option<template::QuietHours>,
    /// Texts per status that the config overrides; the rest take the defaults.
    pub texts: Texts,
    /// What the channel is told besides status changes.
    pub alerts: Alerts,
    /// `[notify] link`: the order's page.
    pub link: Option<template::Template>,
    /// Deliveries at once on this channel (its section's `concurrency`); `None` for
    /// `[delivery] concurrency`.
    pub concurrency: Option<usize>,
}

impl ChannelRule {
    pub fn new(kind: ChannelKind, triggers: Vec<crate::domain::Status>) -> Self {
        ChannelRule {
            kind,
            triggers,
            quiet_hours: None,
            texts: Texts::default(),
            alerts: Alerts::default_for(kind),
            link: None,
            concurrency: None,
        }
    }
}

/// What a channel is told besides a shipment's status changes: `shipment.stuck` (a moving
/// parcel quiet for `[maintenance] stuck_after`) and `ops` (shipwatch's own trouble, once per
/// incident).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alerts {
    pub stuck: bool,
    pub ops: bool,
}

impl Alerts {
    /// The names the config lists them by.
    pub const NAMES: [&str; 2] = [payload::STUCK, OPS];

    /// What a channel is told when its config says nothing: the webhook hears of stuck parcels
    /// (the shop's systems chase them), the group robots of stuck parcels and of incidents (the
    /// shop's staff act on both), the buyers' channels of neither.
    pub fn default_for(kind: ChannelKind) -> Alerts {
        match kind {
            ChannelKind::Webhook => Alerts {
                stuck: true,
                ops: false,
            },
            ChannelKind::Dingtalk | ChannelKind::Wecom | ChannelKind::Feishu => Alerts {
                stuck: true,
                ops: true,
            },
            ChannelKind::Email | ChannelKind::Sms | ChannelKind::Wechat => Alerts::default(),
        }
    }

    /// The alerts named in a channel's `alerts` list; an unknown name is refused with the known
    /// ones.
    pub fn parse(names: &[String]) -> Result<Alerts, UnknownAlert> {
        let mut alerts = Alerts::default();
        for name in names {
            match name.as_str() {
                payload::STUCK => alerts.stuck = true,
                OPS => alerts.ops = true,
                other => return Err(UnknownAlert(other.to_owned())),
            }
        }
        Ok(alerts)
    }
}

/// An alert name in a channel's `alerts` list that no alert has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alert {0:?} (known: {known})", known = Alerts::NAMES.join(", "))]
pub struct UnknownAlert(pub String);

/// The name of the alerts about shipwatch's own trouble.
pub const OPS: &str = "ops";

/// Texts per status, as overridden in the config.
#[derive(Debug, Clone, Default)]
pub struct Texts {
    pub subject: std::collections::HashMap<crate::domain::Status, template::Template>,
    pub body: std::collections::HashMap<crate::domain::Status, template::Template>,
    pub sms: std::collections::HashMap<crate::domain::Status, template::Template>,
    pub template_code: std::collections::HashMap<crate::domain::Status, String>,
    /// The vendor template used for statuses without one of their own (Aliyun `TemplateCode`).
    pub default_template_code: Option<String>,
    /// What each key of the WeChat template says (`thing1` → `{order_id}`).
    pub wechat_data: std::collections::BTreeMap<String, template::Template>,
    /// Where tapping a WeChat template message leads.
    pub wechat_url: Option<template::Template>,
}

/// One delivery attempt's input: the notification's stable id and the body queued with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Stable across retries (`webhook-id`).
    pub public_id: String,
    /// What the channel sends, built when the change was recorded; every attempt sends it
    /// unchanged. For a webhook, the JSON body; for email an [`EmailMessage`], for SMS an
    /// [`SmsMessage`], as JSON.
    pub payload: String,
    /// The buyer's email address, phone number or OpenID, for the channels that reach a person.
    pub recipient: Option<String>,
}

/// A rendered email, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailMessage {
    pub subject: String,
    /// Plain text.
    pub body: String,
}

/// A rendered SMS, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsMessage {
    /// The whole text, for gateways that take text.
    pub text: String,
    /// Placeholder values by name (`order_id`, `tracking_no`, `carrier`, `status`, `event`,
    /// `event_time`), for vendors whose registered templates take parameters (Aliyun's
    /// `TemplateParam`).
    pub params: std::collections::BTreeMap<String, String>,
    /// The vendor's registered template for this status (Aliyun's `TemplateCode`), if set.
    pub template_code: Option<String>,
}

/// Why a delivery attempt failed, classified by what the sender should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth another attempt (timeouts, connection errors, 5xx, 408, 429).
    #[error("{message}")]
    Transient {
        message: String,
        /// The receiver's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (other 4xx, invalid recipient): the row goes dead at once.
    #[error("{0}")]
    Permanent(String),
    /// The channel itself cannot send for a while (out of credit, credentials refused) and has
    /// raised the alarm: the message waits that long, and the attempt does not count.
    #[error("{message}")]
    Paused {
        message: String,
        retry_after: Duration,
    },
    /// The service took the request and said this recipient can never get the message (the
    /// buyer does not follow the official account, the OpenID is not one of its followers'):
    /// nothing is wrong with the channel, and no retry can help. The row ends `skipped` with
    /// this reason, as a row queued for a shipment with no address does, and its neighbours go
    /// on.
    #[error("{0}")]
    Undeliverable(String),
    /// This machine ran short of something the attempt needs (file descriptors, memory, local
    /// ports) before the receiver was reached: nothing is wrong with the message or the
    /// receiver, so the attempt does not count and the message waits for the first retry delay.
    #[error("{0}")]
    LocalShortage(String),
}

/// What this machine ran short of, when that is why `error` failed: a connection that could not
/// even be opened here says nothing about the receiver, and must not spend one of the
/// notification's attempts. The errno values are Linux's, from socket(2), connect(2) and
/// accept(2) (man7.org/linux/man-pages/man2/socket.2.html, .../connect.2.html): EMFILE and
/// ENFILE (descriptors, per process and system-wide), ENOBUFS and ENOMEM (kernel memory), and
/// EADDRNOTAVAIL from connect (no free local port).
pub fn local_shortage(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(what) = io.raw_os_error().and_then(shortage_of)
        {
            return Some(what);
        }
        cause = current.source();
    }
    None
}

/// The local resource an errno says ran out, if it says one did.
fn shortage_of(errno: i32) -> Option<&'static str> {
    match errno {
        libc::EMFILE => Some("this process has too many open files (raise LimitNOFILE=)"),
        libc::ENFILE => Some("the system has too many open files"),
        libc::ENOBUFS | libc::ENOMEM => Some("out of memory for a connection"),
        libc::EADDRNOTAVAIL => Some("no free local port for a connection"),
        _ => None,
    }
}

/// The HTTP client of a channel: redirects are never followed. A redirect means the URL is
/// wrong, and following it would hand the message, and the credentials it carries, to a host
/// nobody configured.
pub fn no_redirect_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// A request to a vendor that got no answer, told in the channel's words: `at` names the
/// channel and its endpoint, already masked. reqwest's own text is left out, as it repeats the
/// whole URL (tokens, phone numbers). A URL the client cannot use is permanent, a shortage on
/// this machine is no attempt at all, anything else is worth another attempt.
pub fn unanswered(at: &str, error: &reqwest::Error, timeout: Duration) -> DeliveryError {
    if error.is_builder() {
        return DeliveryError::Permanent(format!("{at}: the URL is unusable"));
    }
    if let Some(shortage) = local_shortage(error) {
        return not_attempted(at, shortage);
    }
    let what = if error.is_timeout() {
        format!("timed out after {timeout:?}")
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    DeliveryError::Transient {
        message: format!("{at}: {what}"),
        retry_after: None,
    }
}

/// The error for an attempt that never left this machine: `what` names the channel and its
/// receiver, as shown in logs.
pub fn not_attempted(what: &str, shortage: &str) -> DeliveryError {
    DeliveryError::LocalShortage(format!("{what} not attempted: {shortage}"))
}

/// A delivery channel. One channel per file; each implements this trait.
#[async_trait]
pub trait Channel: Send + Sync {
    fn kind(&self) -> ChannelKind;

    /// Makes one delivery attempt: waits for the channel's turn ([`Channel::ready`]), then sends.
    async fn deliver(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        self.ready().await?;
        self.send(message).await
    }

    /// Waits for the channel's next turn to send (a paced channel's bucket), or refuses at once
    /// while the channel is stopped or paused. The sender calls it apart from [`Channel::send`]
    /// to make sure of its claim between the two: the turn may come late, other daemons' turns
    /// coming first.
    async fn ready(&self) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// Sends one message now, its turn taken ([`Channel::ready`]).
    async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError>;

    /// At most this many requests in one attempt, each allowed `[delivery] timeout`: one unless
    /// the channel says otherwise. The sender keeps a claim that could run out before so many
    /// answers are in.
    fn requests_per_attempt(&self) -> u32 {
        1
    }

    /// The bucket that spaces the channel's sends (a group robot's, a paced WeChat channel's),
    /// for the daemon to share with the other daemons of a shared database: the quota is the
    /// vendor's, for all of them together.
    fn pace(&self) -> Option<&Limiter> {
        None
    }

    /// Lifts a stop the channel put on itself ([`ChannelStop`]): the operator says the cause is
    /// fixed (a reload). Channels that never stop have nothing to lift.
    fn resume(&self) {}

    /// Ends, politely and bounded in time, what the channel keeps open between attempts (the
    /// email channel's SMTP connections say `QUIT`): at the daemon's stop, once its deliveries
    /// are drained. Channels that keep nothing open have nothing to end.
    async fn close(&self) {}
}

/// A channel that stopped itself because no message can go out until a person acts (no credit,
/// credentials refused, the endpoint gone). While the stop lasts, every attempt fails at once as
/// [`DeliveryError::Paused`], without calling the vendor; the sender then postpones the row
/// without spending its attempt and records the stop for `stats`. The stop ends by itself after
/// its length, or at once on [`ChannelStop::lift`] (a reload) or a restart (it lives in memory).
#[derive(Debug)]
pub struct ChannelStop {
    length: Duration,
    current: Mutex<Option<StopState>>,
}

#[derive(Debug)]
struct StopState {
    until: Instant,
    message: String,
}

impl ChannelStop {
    pub fn new(length: Duration) -> ChannelStop {
        ChannelStop {
            length,
            current: Mutex::new(None),
        }
    }

    /// How long a stop lasts.
    pub fn length(&self) -> Duration {
        self.length
    }

    fn lock(&self) -> MutexGuard<'_, Option<StopState>> {
        // A panic elsewhere must not make the stop unreadable.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The refusal for an attempt made while stopped, or `None` when the channel may send.
    pub fn check(&self) -> Option<DeliveryError> {
        let current = self.lock();
        let state = current.as_ref()?;
        let left = state.until.checked_duration_since(Instant::now())?;
        Some(DeliveryError::Paused {
            message: state.message.clone(),
            retry_after: left,
        })
    }

    /// Stops the channel. `begin` runs only when no stop is running yet: it logs the one loud
    /// line and returns the reason every postponed row carries. Concurrent attempts that meet the
    /// same wall get the running stop's reason and log nothing.
    pub fn trip(&self, begin: impl FnOnce() -> String) -> DeliveryError {
        let mut current = self.lock();
        let now = Instant::now();
        if let Some(state) = current.as_ref()
            && state.until > now
        {
            return DeliveryError::Paused {
                message: state.message.clone(),
                retry_after: state.until - now,
            };
        }
        let message = begin();
        *current = Some(StopState {
            until: now + self.length,
            message: message.clone(),
        });
        DeliveryError::Paused {
            message,
            retry_after: self.length,
        }
    }

    /// Ends the stop now.
    pub fn lift(&self) {
        *self.lock() = None;
    }
}

/// The most of a vendor's or receiver's answer that is read. Its verdict or error message is at
/// the start; an answer that never ends must cost neither memory nor more than the timeout.
pub use crate::http_body::MAX_ANSWER_BYTES;

/// How much of an answer ends up in an error message: enough to read the vendor's error, not
/// enough to bloat the database with an HTML error page.
pub const EXCERPT_CHARS: usize = 200;

/// Reads at most [`MAX_ANSWER_BYTES`] of an answer's body, through the reader every provider and
/// channel shares ([`crate::http_body::read_capped`]); the rest is never downloaded. A read
/// error ends the body where it broke.
pub async fn read_answer(response: reqwest::Response) -> String {
    let body = crate::http_body::read_capped(response, MAX_ANSWER_BYTES)
        .await
        .map(|read| read.bytes)
        .unwrap_or_default();
    String::from_utf8_lossy(&body).into_owned()
}

/// The start of an answer, fit for a one-line error message: trimmed, cut to
/// [`EXCERPT_CHARS`] characters, and control characters (newlines, escapes that could rewrite a
/// terminal) written as escapes. Empty stays empty.
pub fn excerpt(body: &str) -> String {
    let body = body.trim();
    let mut out = String::with_capacity(body.len().min(EXCERPT_CHARS * 4));
    for (count, c) in body.chars().enumerate() {
        if count == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_one_bounded_line() {
        let long = "长".repeat(EXCERPT_CHARS + 50);
        let table: &[(&str, String)] = &[
            ("", String::new()),
            ("  ok  ", "ok".to_owned()),
            ("a\nb\r\tc", "a\\nb\\r\\tc".to_owned()),
            ("\u{1b}[31mred", "\\u{1b}[31mred".to_owned()),
            (long.as_str(), format!("{}…", "长".repeat(EXCERPT_CHARS))),
        ];
        for (body, shown) in table {
            assert_eq!(&excerpt(body), shown, "{body:?}");
        }
    }

    #[test]
    fn only_local_shortages_spare_the_attempt() {
        let table: &[(i32, bool)] = &[
            (libc::EMFILE, true),
            (libc::ENFILE, true),
            (libc::ENOBUFS, true),
            (libc::ENOMEM, true),
            (libc::EADDRNOTAVAIL, true),
            (libc::ECONNREFUSED, false),
            (libc::ECONNRESET, false),
            (libc::ETIMEDOUT, false),
            (libc::EHOSTUNREACH, false),
            (libc::ENETUNREACH, false),
        ];
        for &(errno, local) in table {
            let io = std::io::Error::from_raw_os_error(errno);
            assert_eq!(local_shortage(&io).is_some(), local, "errno {errno}: {io}");
            // Found however deep the client library wraps it.
            #[derive(Debug, thiserror::Error)]
            #[error("error sending request")]
            struct Wrapped(#[source] std::io::Error);
            let wrapped = Wrapped(std::io::Error::from_raw_os_error(errno));
            assert_eq!(
                local_shortage(&wrapped).is_some(),
                local,
                "wrapped errno {errno}"
            );
        }
        let plain = std::io::Error::other("no errno");
        assert_eq!(local_shortage(&plain), None);
    }

    #[test]
    fn a_stop_refuses_until_it_ends_or_is_lifted() {
        let stop = ChannelStop::new(Duration::from_secs(60));
        assert!(stop.check().is_none());
        let mut began = 0;
        let first = stop.trip(|| {
            began += 1;
            "stopped: reason".to_owned()
        });
        // A second wall met while stopped keeps the first reason and does not log again.
        let second = stop.trip(|| {
            began += 1;
            "another reason".to_owned()
        });
        assert_eq!(began, 1);
        for refusal in [first, second, stop.check().unwrap()] {
            match refusal {
                DeliveryError::Paused {
                    message,
                    retry_after,
                } => {
                    assert_eq!(message, "stopped: reason");
                    assert!(retry_after <= Duration::from_secs(60));
                }
                other => panic!("{other:?}"),
            }
        }
        stop.lift();
        assert!(stop.check().is_none());

        let brief = ChannelStop::new(Duration::ZERO);
        brief.trip(|| "gone".to_owned());
        assert!(
            brief.check().is_none(),
            "a stop of no length is over at once"
        );
    }
}
