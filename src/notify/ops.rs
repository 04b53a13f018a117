//! The `ops` alerts: shipwatch's own trouble, told to the group robots whose `alerts` include
//! `ops` (all of them by default), once per incident rather than once per shipment or per
//! failed write.
//!
//! Incidents: a provider paused (credentials or configuration refused, or banned by upstream),
//! a channel stopped or paused (credentials refused, out of credit, a robot's quota spent by
//! someone else), the database not writable and writable again, and notifications going dead. They
//! are sent from memory, not through the outbox: while the database is not writable nothing can be
//! queued there, and an incident still open at a restart is met again and told again by the next
//! process. A message gets up to [`ATTEMPTS`] attempts; a robot's own pause (its quota) delays it
//! without spending one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{Channel, DeliveryError, Outgoing, payload};
use crate::clock::{Millis, SharedClock, millis, to_rfc3339};
use crate::events::{Events, PipelineEvent};
use crate::outage::Outage;
use crate::workers::Grace;

/// Attempts per message and robot.
const ATTEMPTS: u32 = 3;
/// The wait after a failed attempt.
const RETRY: Duration = Duration::from_secs(30);
/// The longest a robot's pause is waited out for one message.
const LONGEST_PAUSE: Duration = Duration::from_secs(60 * 60);
/// Notifications going dead belong to one incident until this long passes without another.
const DEAD_QUIET: Duration = Duration::from_secs(60 * 60);
/// How often the database's state is looked at.
const LOOK: Duration = Duration::from_secs(1);

/// Something that may open or close an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    ProviderPaused {
        provider: String,
        until: Millis,
        reason: String,
    },
    ChannelPaused {
        channel: String,
        until: Millis,
        reason: String,
    },
    DatabaseDown {
        error: String,
    },
    DatabaseUp,
    WentDead {
        order_id: String,
        channel: String,
        error: String,
    },
}

/// One message about an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsMessage {
    pub title: String,
    pub body: String,
}

/// The incidents open now, each with when it ends by itself (`None`: when told it is over).
#[derive(Debug, Default)]
pub struct Incidents {
    open: HashMap<String, Option<Millis>>,
}

impl Incidents {
    /// Whether `key` is open at `now`.
    fn is_open(&self, key: &str, now: Millis) -> bool {
        match self.open.get(key) {
            Some(Some(until)) => *until > now,
            Some(None) => true,
            None => false,
        }
    }

    /// Keeps `key` open until `until` at least; true when that opens it (it was not open).
    fn open_until(&mut self, key: String, until: Millis, now: Millis) -> bool {
        let was_open = self.is_open(&key, now);
        let end = self
            .open
            .get(&key)
            .copied()
            .flatten()
            .unwrap_or(0)
            .max(until);
        self.open.insert(key, Some(end));
        !was_open
    }

    /// Takes in a signal; returns the message to send when it opens or closes an incident.
    pub fn observe(&mut self, signal: Signal, now: Millis) -> Option<OpsMessage> {
        match signal {
            Signal::ProviderPaused {
                provider,
                until,
                reason,
            } => {
                self.open_until(format!("provider:{provider}"), until, now)
                    .then(|| OpsMessage {
                    title: format!("shipwatch:{provider} 已暂停查询"),
                    body: format!(
                        "**{provider}** 暂停查询,直到 {until}\n\n- 原因:{reason}\n- 恢复前不会调用该接口,到期后自动恢复;凭据或配置问题修正后 `systemctl reload shipwatch`",
                        until = to_rfc3339(until),
                    ),
                })
            }
            Signal::ChannelPaused {
                channel,
                until,
                reason,
            } => self
                .open_until(format!("channel:{channel}"), until, now)
                .then(|| OpsMessage {
                    title: format!("shipwatch:{channel} 通道已暂停"),
                    body: format!(
                        "**{channel}** 暂停发送,直到 {until}\n\n- 原因:{reason}\n- 消息保留在队列中,不计入重试次数;修正后 `systemctl reload shipwatch`",
                        until = to_rfc3339(until),
                    ),
                }),
            Signal::DatabaseDown { error } => {
                let was_open = self.is_open("database", now);
                self.open.insert("database".to_owned(), None);
                (!was_open).then(|| OpsMessage {
                    title: "shipwatch:数据库不可写".to_owned(),
                    body: format!(
                        "查询与通知暂停,直到数据库恢复可写(磁盘满?只读文件系统?);已排队的通知不会丢失\n\n- 错误:{error}"
                    ),
                })
            }
            Signal::DatabaseUp => self.open.remove("database").map(|_| OpsMessage {
                title: "shipwatch:数据库已恢复可写".to_owned(),
                body: "查询与通知已恢复".to_owned(),
            }),
            Signal::WentDead {
                order_id,
                channel,
                error,
            } => {
                let was_open = self.is_open("dead", now);
                self.open
                    .insert("dead".to_owned(), Some(now + millis(DEAD_QUIET)));
                (!was_open).then(|| OpsMessage {
                    title: "shipwatch:通知投递失败".to_owned(),
                    body: format!(
                        "订单 {order_id} 的 {channel} 通知已放弃:{error}\n\n- 查看:`shipwatch outbox --state dead`\n- 重发:`shipwatch retry --dead`\n- 一小时内的其他失败不再单独提醒"
                    ),
                })
            }
        }
    }
}

/// What an event on the bus means for the incidents, if anything.
pub fn signal_of(event: &PipelineEvent) -> Option<Signal> {
    match event {
        PipelineEvent::ProviderPaused {
            provider,
            until,
            reason,
        } => Some(Signal::ProviderPaused {
            provider: provider.clone(),
            until: *until,
            reason: reason.clone(),
        }),
        PipelineEvent::ChannelPaused {
            channel,
            until,
            reason,
        } => Some(Signal::ChannelPaused {
            channel: channel.to_string(),
            until: *until,
            reason: reason.clone(),
        }),
        PipelineEvent::DeliveryFailed {
            order_id,
            channel,
            error,
            retry_in: None,
            ..
        } => Some(Signal::WentDead {
            order_id: order_id.clone(),
            channel: channel.to_string(),
            error: error.clone(),
        }),
        _ => None,
    }
}

/// Watches the bus and the database's state until `stop`, and tells `robots` of each incident.
/// At `stop`, a message on its way is given the shutdown's `grace` to arrive; one waiting for
/// its next attempt is dropped (an incident still open is told again by the next process).
pub async fn run(
    events: Events,
    robots: Vec<Arc<dyn Channel>>,
    clock: SharedClock,
    stop: CancellationToken,
    grace: Grace,
) {
    if robots.is_empty() {
        return;
    }
    let mut bus = events.subscribe();
    let mut incidents = Incidents::default();
    let mut look = tokio::time::interval(LOOK);
    let telling = TaskTracker::new();
    loop {
        let signal = tokio::select! {
            _ = stop.cancelled() => break,
            event = bus.recv() => match event {
                Ok(event) => signal_of(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = look.tick() => Some(match Outage::database().current() {
                Some(outage) => Signal::DatabaseDown { error: outage.error },
                None => Signal::DatabaseUp,
            }),
        };
        let Some(message) = signal.and_then(|s| incidents.observe(s, clock.now())) else {
            continue;
        };
        info!(title = %message.title, "ops alert");
        for robot in &robots {
            telling.spawn(tell(robot.clone(), message.clone(), stop.clone()));
        }
    }
    telling.close();
    let since = tokio::time::Instant::now();
    tokio::select! {
        () = telling.wait() => {}
        () = grace.over(since) => {}
    }
}

/// Sends one ops message to one robot: up to [`ATTEMPTS`] attempts, a robot's pause waited out
/// without spending one.
async fn tell(robot: Arc<dyn Channel>, message: OpsMessage, stop: CancellationToken) {
    let kind = robot.kind();
    let Some(body) = payload::robot_message(kind, &message.title, &message.body) else {
        return;
    };
    let outgoing = Outgoing {
        public_id: "ops".to_owned(),
        payload: body,
        recipient: None,
    };
    let mut attempts = 0;
    let mut paused_for = Duration::ZERO;
    loop {
        let wait = match robot.deliver(&outgoing).await {
            Ok(()) => return,
            Err(DeliveryError::Paused { retry_after, .. })
                if paused_for + retry_after <= LONGEST_PAUSE =>
            {
                paused_for += retry_after;
                retry_after
            }
            Err(DeliveryError::Transient { message: error, .. }) if attempts + 1 < ATTEMPTS => {
                attempts += 1;
                warn!(channel = %kind, %error, title = %message.title, "ops alert not delivered; will retry");
                RETRY
            }
            Err(e) => {
                warn!(channel = %kind, error = %e, title = %message.title, "ops alert not delivered; given up");
                return;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_767_196_800_000;

    /// A robot that gives the answers of its script in turn (then `Ok`), and keeps the body of
    /// every call: a call its pause refuses is no attempt spent, but is one call.
    struct Scripted {
        answers: std::sync::Mutex<std::collections::VecDeque<Result<(), DeliveryError>>>,
        sent: std::sync::Mutex<Vec<String>>,
    }

    impl Scripted {
        fn answering(answers: Vec<Result<(), DeliveryError>>) -> Arc<Scripted> {
            Arc::new(Scripted {
                answers: std::sync::Mutex::new(answers.into()),
                sent: std::sync::Mutex::default(),
            })
        }

        fn calls(&self) -> usize {
            self.sent.lock().unwrap().len()
        }

        /// The attempts whose message is about `what`.
        fn about(&self, what: &str) -> usize {
            let sent = self.sent.lock().unwrap();
            sent.iter().filter(|body| body.contains(what)).count()
        }
    }

    #[async_trait::async_trait]
    impl Channel for Scripted {
        fn kind(&self) -> crate::domain::ChannelKind {
            crate::domain::ChannelKind::Dingtalk
        }

        async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError> {
            self.sent.lock().unwrap().push(message.payload.clone());
            self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()))
        }
    }

    fn transient() -> Result<(), DeliveryError> {
        Err(DeliveryError::Transient {
            message: "503".to_owned(),
            retry_after: None,
        })
    }

    fn robot_paused(minutes: u64) -> Result<(), DeliveryError> {
        Err(DeliveryError::Paused {
            message: "send too fast".to_owned(),
            retry_after: Duration::from_secs(minutes * 60),
        })
    }

    fn message() -> OpsMessage {
        OpsMessage {
            title: "shipwatch:taobao 已暂停查询".to_owned(),
            body: "credentials refused".to_owned(),
        }
    }

    /// Tells `robot` one message, and says how long it took on the paused clock.
    async fn tell_timed(robot: &Arc<Scripted>) -> Duration {
        let started = tokio::time::Instant::now();
        tell(robot.clone(), message(), CancellationToken::new()).await;
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_gets_three_attempts_thirty_seconds_apart() {
        let robot = Scripted::answering((0..5).map(|_| transient()).collect());
        let took = tell_timed(&robot).await;
        assert_eq!(robot.calls(), 3);
        assert_eq!(took, Duration::from_secs(60));
        // A robot that answers on the third attempt has the message.
        let robot = Scripted::answering(vec![transient(), transient(), Ok(())]);
        tell_timed(&robot).await;
        assert_eq!(robot.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_that_no_retry_helps_is_one_attempt() {
        let robot = Scripted::answering(vec![Err(DeliveryError::Permanent("400".to_owned()))]);
        assert_eq!(tell_timed(&robot).await, Duration::ZERO);
        assert_eq!(robot.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_robots_pause_is_waited_out_without_spending_an_attempt() {
        let robot = Scripted::answering(vec![
            robot_paused(10),
            transient(),
            robot_paused(10),
            transient(),
            Ok(()),
        ]);
        let took = tell_timed(&robot).await;
        assert_eq!(robot.calls(), 5, "two pauses and two failures, then sent");
        assert_eq!(took, Duration::from_secs(20 * 60 + 2 * 30));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_are_waited_out_for_an_hour_in_all_and_no_longer() {
        // Forty minutes and twenty: an hour exactly, waited out.
        let robot = Scripted::answering(vec![robot_paused(40), robot_paused(20), Ok(())]);
        assert_eq!(tell_timed(&robot).await, Duration::from_secs(3_600));
        assert_eq!(robot.calls(), 3);
        // One minute more is past the hour: given up without waiting for it.
        let robot = Scripted::answering(vec![robot_paused(40), robot_paused(20), robot_paused(1)]);
        assert_eq!(tell_timed(&robot).await, Duration::from_secs(3_600));
        assert_eq!(robot.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_for_the_next_attempt() {
        let robot = Scripted::answering((0..5).map(|_| transient()).collect());
        let stop = CancellationToken::new();
        let telling = tokio::spawn(tell(robot.clone(), message(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.cancel();
        telling.await.unwrap();
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(robot.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_robot_is_told_of_an_incident_once_and_the_watch_ends_at_the_stop() {
        let events = Events::default();
        let robots = [
            Scripted::answering(Vec::new()),
            Scripted::answering(Vec::new()),
        ];
        let stop = CancellationToken::new();
        let watching = tokio::spawn(run(
            events.clone(),
            robots
                .iter()
                .map(|r| r.clone() as Arc<dyn Channel>)
                .collect(),
            Arc::new(crate::clock::ManualClock::new(T0)),
            stop.clone(),
            Grace::new(Duration::from_secs(5)),
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let paused = || PipelineEvent::ProviderPaused {
            provider: "taobao".to_owned(),
            until: T0 + 3_600_000,
            reason: "credentials refused".to_owned(),
        };
        events.emit(paused());
        events.emit(paused());
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Other tests of this process may put the database down (a process-wide state): only
        // this incident's messages are counted.
        for robot in &robots {
            assert_eq!(robot.about("taobao"), 1);
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), watching)
            .await
            .expect("the watch ends at the stop")
            .unwrap();
        events.emit(PipelineEvent::ProviderPaused {
            provider: "k100".to_owned(),
            until: T0 + 3_600_000,
            reason: "banned".to_owned(),
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(robots[0].about("k100"), 0);
    }

    fn paused(provider: &str, until: Millis) -> Signal {
        Signal::ProviderPaused {
            provider: provider.to_owned(),
            until,
            reason: "credentials refused".to_owned(),
        }
    }

    #[test]
    fn a_paused_provider_is_told_once_until_its_pause_ends() {
        let mut incidents = Incidents::default();
        let first = incidents
            .observe(paused("taobao", T0 + 3_600_000), T0)
            .unwrap();
        assert!(first.title.contains("taobao"), "{first:?}");
        assert!(first.body.contains("credentials refused"), "{first:?}");
        // The same pause, met again by every poll of the provider: nothing more.
        assert_eq!(
            incidents.observe(paused("taobao", T0 + 3_600_000), T0 + 1),
            None
        );
        // Another provider is another incident.
        assert!(
            incidents
                .observe(paused("k100", T0 + 60_000), T0 + 2)
                .is_some()
        );
        // After the pause ended, a new one is a new incident.
        assert!(
            incidents
                .observe(paused("taobao", T0 + 7_200_000), T0 + 3_600_000)
                .is_some()
        );
    }

    #[test]
    fn a_stopped_channel_is_told_once_until_its_stop_ends() {
        let mut incidents = Incidents::default();
        let stopped = |until| Signal::ChannelPaused {
            channel: "wecom".to_owned(),
            until,
            reason: "WeCom refused the key (93000)".to_owned(),
        };
        let told = incidents.observe(stopped(T0 + 3_600_000), T0).unwrap();
        assert_eq!(told.title, "shipwatch:wecom 通道已暂停");
        assert!(told.body.contains("93000"), "{told:?}");
        // Every message the stop holds back says so again: nothing more.
        assert_eq!(incidents.observe(stopped(T0 + 3_600_000), T0 + 5), None);
        // A provider of the same name is another incident.
        assert!(
            incidents
                .observe(paused("wecom", T0 + 60_000), T0 + 6)
                .is_some()
        );
        assert!(
            incidents
                .observe(stopped(T0 + 9_000_000), T0 + 3_600_001)
                .is_some()
        );
    }

    #[test]
    fn the_database_is_told_down_once_and_up_once() {
        let mut incidents = Incidents::default();
        assert_eq!(incidents.observe(Signal::DatabaseUp, T0), None);
        let down = Signal::DatabaseDown {
            error: "disk full".to_owned(),
        };
        let told = incidents.observe(down.clone(), T0).unwrap();
        assert!(told.body.contains("disk full"), "{told:?}");
        assert_eq!(incidents.observe(down.clone(), T0 + 1_000), None);
        let up = incidents.observe(Signal::DatabaseUp, T0 + 2_000).unwrap();
        assert!(up.title.contains("恢复"), "{up:?}");
        assert_eq!(incidents.observe(Signal::DatabaseUp, T0 + 3_000), None);
        assert!(incidents.observe(down, T0 + 4_000).is_some());
    }

    #[test]
    fn notifications_going_dead_are_one_incident_until_an_hour_passes_without_one() {
        let mut incidents = Incidents::default();
        let dead = |order: &str| Signal::WentDead {
            order_id: order.to_owned(),
            channel: "sms".to_owned(),
            error: "gave up after 3 attempts: 503".to_owned(),
        };
        let told = incidents.observe(dead("1"), T0).unwrap();
        assert!(
            told.body.contains("shipwatch outbox --state dead"),
            "{told:?}"
        );
        assert_eq!(incidents.observe(dead("2"), T0 + 1_800_000), None);
        // Each one keeps the incident open for another hour.
        assert_eq!(incidents.observe(dead("3"), T0 + 3_000_000), None);
        assert!(
            incidents
                .observe(dead("4"), T0 + 3_000_000 + 3_600_000)
                .is_some()
        );
    }

    #[test]
    fn only_pauses_stops_and_notifications_gone_dead_are_signals() {
        let failed = |retry_in| PipelineEvent::DeliveryFailed {
            order_id: "1".to_owned(),
            channel: crate::domain::ChannelKind::Sms,
            status: "delivered".to_owned(),
            attempt: 1,
            error: "503".to_owned(),
            retry_in,
        };
        assert_eq!(signal_of(&failed(Some(Duration::from_secs(60)))), None);
        let dead = failed(None);
        assert!(matches!(signal_of(&dead), Some(Signal::WentDead { .. })));
        let stopped = PipelineEvent::ChannelPaused {
            channel: crate::domain::ChannelKind::Wecom,
            until: T0,
            reason: "93000".to_owned(),
        };
        assert!(matches!(
            signal_of(&stopped),
            Some(Signal::ChannelPaused { channel, .. }) if channel == "wecom"
        ));
    }
}
