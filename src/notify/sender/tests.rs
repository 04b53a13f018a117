//! The sender's rules, on a real SQLite file, a clock the tests move and a channel that answers
//! as each test scripts it: what a refusal does to a message, its attempts and its next try, and
//! how long an idle round sleeps.

use std::collections::VecDeque;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::domain::Status;
use crate::storage::{
    Decide, Details, NewShipment, NotificationKind, NotificationRow, OutboxRow, PollWrite,
    ShipmentRow, ShipmentWrite, Synchronous,
};

/// 2025-11-28 11:20 in Shanghai.
const NOW: Millis = 1_764_300_000_000;
const MINUTE: Millis = 60_000;

fn claimed(id: i64) -> ClaimedNotification {
    ClaimedNotification {
        id,
        public_id: format!("msg_{id}"),
        order_id: id.to_string(),
        channel: "webhook".to_owned(),
        status: "in_transit".to_owned(),
        payload: "{}".to_owned(),
        recipient: None,
        attempts: 1,
        lease_until: 60_000,
    }
}

#[test]
fn a_pause_is_news_once_until_it_ends_and_per_channel() {
    let mut told = HashMap::new();
    let (dingtalk, wecom) = (ChannelKind::Dingtalk, ChannelKind::Wecom);
    // A backlog meets the same pause again and again: told once.
    assert!(pause_is_news(&mut told, dingtalk, 60_000, 1_000));
    assert!(!pause_is_news(&mut told, dingtalk, 60_000, 2_000));
    assert!(!pause_is_news(&mut told, dingtalk, 61_000, 59_999));
    // Another channel's pause is its own news.
    assert!(pause_is_news(&mut told, wecom, 30_000, 2_000));
    // Once the pause has ended, a new one is news again.
    assert!(pause_is_news(&mut told, dingtalk, 120_000, 60_000));
    assert!(!pause_is_news(&mut told, dingtalk, 120_000, 60_001));
}

#[test]
fn a_channel_gets_the_slots_its_config_gives_and_at_least_one() {
    assert_eq!(Lane::new(16).slots, 16);
    assert_eq!(Lane::new(1).slots, 1);
    assert_eq!(Lane::new(0).slots, 1);
}

#[test]
fn claims_that_end_before_an_attempt_could_finish_are_taken_out_in_order() {
    let lane = Lane::new(2);
    lane.ahead.lock().unwrap().extend([
        (claimed(1), 1_000),
        (claimed(2), 5_000),
        (claimed(3), 900),
    ]);
    assert_eq!(lane.take_ending(1_000), vec![(1, 1_000), (3, 900)]);
    let left: Vec<i64> = lane
        .ahead
        .lock()
        .unwrap()
        .iter()
        .map(|(n, _)| n.id)
        .collect();
    assert_eq!(left, vec![2]);
    assert_eq!(lane.take_all(), vec![(2, 5_000)]);
    assert!(lane.ahead.lock().unwrap().is_empty());
}

/// A webhook channel that answers each send as scripted (then accepts), or never; paced (its
/// sends spaced by a bucket, as a robot's are) when it has one.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Result<(), DeliveryError>>>,
    sent: Mutex<Vec<String>>,
    resumed: AtomicBool,
    silent: bool,
    pace: Option<crate::limiter::Limiter>,
    /// What the turn ([`Channel::ready`]) does: refuses with a pause of this long, or takes
    /// this long on the clock.
    turn: Option<Turn>,
}

enum Turn {
    Refused(Duration),
    Takes(Arc<ManualClock>, Duration),
}

#[async_trait::async_trait]
impl Channel for Script {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        self.sent.lock().unwrap().push(message.public_id.clone());
        if self.silent {
            std::future::pending::<()>().await;
        }
        self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()))
    }

    fn resume(&self) {
        self.resumed.store(true, Ordering::SeqCst);
    }

    fn pace(&self) -> Option<&crate::limiter::Limiter> {
        self.pace.as_ref()
    }

    async fn ready(&self) -> Result<(), DeliveryError> {
        match &self.turn {
            Some(Turn::Refused(retry_after)) => paused(*retry_after),
            Some(Turn::Takes(clock, long)) => {
                clock.advance(*long);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Script {
    fn answering(answers: impl IntoIterator<Item = Result<(), DeliveryError>>) -> Script {
        Script {
            answers: Mutex::new(answers.into_iter().collect()),
            ..Script::default()
        }
    }

    fn sends(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

fn transient(retry_after: Duration) -> Result<(), DeliveryError> {
    Err(DeliveryError::Transient {
        message: "502 Bad Gateway".into(),
        retry_after: Some(retry_after),
    })
}

fn paused(retry_after: Duration) -> Result<(), DeliveryError> {
    Err(DeliveryError::Paused {
        message: "out of credit".into(),
        retry_after,
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    clock: Arc<ManualClock>,
    channel: Arc<Script>,
    sender: Arc<Sender>,
    events: Events,
}

/// A sender of `channel` under `rule` (a webhook's), with a scan interval of one second.
async fn fixture(rule: ChannelRule, channel: Script) -> Fixture {
    fixture_on(Arc::new(ManualClock::new(NOW)), rule, channel).await
}

async fn fixture_on(clock: Arc<ManualClock>, rule: ChannelRule, channel: Script) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("sender.db"), Synchronous::Normal)
        .await
        .unwrap();
    let events = Events::default();
    let channel = Arc::new(channel);
    let sender = Sender::new(
        db.clone(),
        clock.clone(),
        Delivery::default(),
        vec![channel.clone() as Arc<dyn Channel>],
        &[rule],
        events.clone(),
        Duration::from_secs(1),
    );
    Fixture {
        _dir: dir,
        db,
        clock,
        channel,
        sender,
        events,
    }
}

fn webhook() -> ChannelRule {
    ChannelRule::new(ChannelKind::Webhook, vec![Status::InTransit])
}

/// The webhook's rule with `slots` deliveries at once.
fn webhook_with_slots(slots: usize) -> ChannelRule {
    ChannelRule {
        concurrency: Some(slots),
        ..webhook()
    }
}

/// A poll that finds the shipment in transit and queues its webhook, due at once, as the
/// dispatcher records one.
struct InTransit(Millis);

impl Decide for InTransit {
    fn decide(&self, stored: &ShipmentRow) -> PollWrite<'_> {
        let (now, transition) = (self.0, stored.transitions + 1);
        PollWrite {
            now,
            next_poll_at: now + 60 * MINUTE,
            events: &[],
            events_digest: None,
            shipment: ShipmentWrite::Change {
                previous: stored.status,
                status: Status::InTransit,
                transition,
                keep_polling: true,
                details: Details {
                    raw_status: "TRANSPORT",
                    last_event_at: None,
                    tracking_no: None,
                    carrier: None,
                },
            },
            outbox: vec![OutboxRow {
                public_id: format!("msg_{}", stored.order_id),
                kind: NotificationKind::StatusChanged,
                transition,
                channel: ChannelKind::Webhook,
                previous: stored.status,
                status: Status::InTransit,
                payload: format!(r#"{{"order_id":"{}"}}"#, stored.order_id),
                recipient: None,
                skipped: None,
                next_attempt_at: now,
                created_at: now,
            }],
            unmapped: &[],
        }
    }
}

/// Queues the webhook of `order_id` going in transit.
async fn queue(f: &Fixture, order_id: &str) {
    let new = NewShipment::plain(order_id, "sim");
    let now = f.clock.now();
    let row = f.db.add_shipment(&new, now).await.unwrap();
    f.db.record_poll(row.id, InTransit(now)).await.unwrap();
}

/// Waits (10 s at most) until the channel has been handed a message.
async fn until_handed_over(f: &Fixture) {
    let handed = tokio::time::timeout(Duration::from_secs(10), async {
        while f.channel.sends() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(handed.await.is_ok(), "the message never left");
}

/// Every notification queued, oldest first.
async fn outbox(f: &Fixture) -> Vec<NotificationRow> {
    f.db.list_notifications(None, None).await.unwrap()
}

#[tokio::test]
async fn a_message_the_receiver_takes_is_sent_once() {
    let f = fixture(webhook(), Script::default()).await;
    queue(&f, "1001").await;
    assert_eq!(f.sender.run_once().await.unwrap(), 1);
    assert_eq!(f.sender.run_once().await.unwrap(), 0);
    let row = &outbox(&f).await[0];
    assert_eq!((row.state.as_str(), row.attempts), ("sent", 1));
    assert_eq!(row.sent_at, Some(NOW));
    assert_eq!(*f.channel.sent.lock().unwrap(), vec![row.public_id.clone()]);
    f.db.close().await;
}

#[tokio::test]
async fn a_failed_message_is_tried_again_when_its_delay_is_over_and_given_up_after_the_third() {
    // The receiver's Retry-After of two hours is longer than any backoff of the defaults (5
    // minutes doubling, an hour at most), so it decides.
    let hours = Duration::from_secs(2 * 3600);
    let script = Script::answering([transient(hours), transient(hours), transient(hours)]);
    let f = fixture(webhook(), script).await;
    queue(&f, "1001").await;
    let mut failures = f.events.subscribe();
    for attempt in 1..=3 {
        assert_eq!(f.sender.run_once().await.unwrap(), 1, "attempt {attempt}");
        let row = &outbox(&f).await[0];
        assert_eq!(row.attempts, attempt);
        let failed = tokio::time::timeout(Duration::from_secs(10), failures.recv()).await;
        let Ok(Ok(PipelineEvent::DeliveryFailed { retry_in, .. })) = failed else {
            panic!("attempt {attempt} did not fail");
        };
        if attempt < 3 {
            // Still pending: due again once the delay is over.
            assert_eq!(row.state, "pending");
            assert_eq!(row.last_error.as_deref(), Some("502 Bad Gateway"));
            assert_eq!(retry_in, Some(hours));
            assert_eq!(row.next_attempt_at, f.clock.now() + 120 * MINUTE);
            // Not a moment sooner.
            f.clock.advance(Duration::from_secs(2 * 3600 - 1));
            assert_eq!(f.sender.run_once().await.unwrap(), 0);
            f.clock.advance(Duration::from_secs(1));
        } else {
            assert_eq!(row.state, "dead");
            assert_eq!(retry_in, None);
            assert_eq!(
                row.last_error.as_deref(),
                Some("gave up after 3 attempts: 502 Bad Gateway")
            );
        }
    }
    assert_eq!(f.channel.sends(), 3);
    f.clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(f.sender.run_once().await.unwrap(), 0);
    f.db.close().await;
}

#[tokio::test]
async fn a_retry_never_falls_in_the_channels_quiet_hours() {
    // 11:20 in Shanghai; a retry ten minutes on falls in 11:25-12:00 and waits for its end.
    let rule = ChannelRule {
        quiet_hours: Some(QuietHours::parse("11:25-12:00", "Asia/Shanghai").unwrap()),
        ..webhook()
    };
    let script = Script::answering([transient(Duration::from_secs(600))]);
    let f = fixture(rule, script).await;
    queue(&f, "1001").await;
    f.sender.run_once().await.unwrap();
    let row = &outbox(&f).await[0];
    assert_eq!((row.state.as_str(), row.attempts), ("pending", 1));
    assert_eq!(row.next_attempt_at, NOW + 40 * MINUTE);
    f.db.close().await;
}

#[tokio::test]
async fn a_paused_channel_holds_its_messages_without_spending_attempts_until_resumed() {
    let hour = Duration::from_secs(3600);
    let f = fixture(webhook(), Script::answering([paused(hour), paused(hour)])).await;
    queue(&f, "1001").await;
    queue(&f, "1002").await;
    let mut told = f.events.subscribe();
    assert_eq!(f.sender.run_once().await.unwrap(), 2);
    for row in outbox(&f).await {
        assert_eq!(row.state, "pending", "{}", row.order_id);
        assert_eq!(row.attempts, 0, "{}", row.order_id);
        assert_eq!(row.next_attempt_at, NOW + 60 * MINUTE, "{}", row.order_id);
        assert_eq!(row.last_error.as_deref(), Some("out of credit"));
    }
    // Two messages met the pause; the bus hears of it once.
    let mut pauses = 0;
    while let Ok(event) = told.try_recv() {
        if let PipelineEvent::ChannelPaused { until, .. } = event {
            assert_eq!(until, NOW + 60 * MINUTE);
            pauses += 1;
        }
    }
    assert_eq!(pauses, 1);
    assert_eq!(f.sender.run_once().await.unwrap(), 0);

    // A reload says the cause is fixed: the channel is resumed and both go at once.
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(f.sender.resume_stopped_channels().await.unwrap(), 2);
    assert!(f.channel.resumed.load(Ordering::SeqCst));
    assert_eq!(f.sender.run_once().await.unwrap(), 2);
    let states: Vec<(String, i64)> = outbox(&f)
        .await
        .into_iter()
        .map(|row| (row.state, row.attempts))
        .collect();
    assert_eq!(states, vec![("sent".into(), 1), ("sent".into(), 1)]);
    f.db.close().await;
}

#[tokio::test]
async fn a_recipient_no_one_can_reach_is_skipped_and_a_local_shortage_spends_no_attempt() {
    let script = Script::answering([
        Err(DeliveryError::Undeliverable("not a follower".into())),
        Err(DeliveryError::LocalShortage("too many open files".into())),
    ]);
    // One slot, so that the answers meet the messages in the order they were queued.
    let rule = webhook_with_slots(1);
    let f = fixture(rule, script).await;
    queue(&f, "1001").await;
    queue(&f, "1002").await;
    assert_eq!(f.sender.run_once().await.unwrap(), 1);
    assert_eq!(f.sender.run_once().await.unwrap(), 1);
    let rows = outbox(&f).await;
    let (skipped, short) = (&rows[0], &rows[1]);
    assert_eq!(skipped.state, "skipped");
    assert_eq!(skipped.last_error.as_deref(), Some("not a follower"));
    assert_eq!(short.state, "pending");
    assert_eq!(short.attempts, 0);
    assert_eq!(short.last_error.as_deref(), Some("too many open files"));
    // The first retry delay: 5 minutes with jitter, never less.
    let wait = short.next_attempt_at - NOW;
    assert!((5 * MINUTE..=10 * MINUTE).contains(&wait), "{wait} ms");
    f.db.close().await;
}

#[tokio::test]
async fn an_idle_round_sleeps_until_the_next_message_of_a_channel_with_a_free_slot() {
    let rule = webhook_with_slots(1);
    let f = fixture(
        rule,
        Script::answering([transient(Duration::from_millis(400))]),
    )
    .await;
    // Nothing queued: one scan interval.
    assert_eq!(f.sender.idle_wait().await, Duration::from_secs(1));
    queue(&f, "1001").await;
    // Due now yet not claimed: a short nap, not a spin.
    assert_eq!(f.sender.idle_wait().await, Duration::from_millis(10));
    f.sender.run_once().await.unwrap();
    // The backoff is five minutes at least: beyond the scan interval, which caps the wait.
    assert_eq!(f.sender.idle_wait().await, Duration::from_secs(1));
    let due = outbox(&f).await[0].next_attempt_at;
    f.clock.set(due - 250);
    assert_eq!(f.sender.idle_wait().await, Duration::from_millis(250));
    assert_eq!(f.sender.deliveries_in_flight(), 0);
    f.db.close().await;
}

#[tokio::test]
async fn a_channel_whose_slots_are_all_taken_is_not_waited_for() {
    let rule = webhook_with_slots(1);
    let silent = Script {
        silent: true,
        ..Script::default()
    };
    let f = fixture(rule, silent).await;
    queue(&f, "1001").await;
    queue(&f, "1002").await;
    assert_eq!(f.sender.step().await.unwrap(), 1);
    assert_eq!(f.sender.deliveries_in_flight(), 1);
    assert!(f.sender.free_kinds().is_empty());
    // The second is due, but its channel has no slot: the freed slot rings, not the clock.
    assert_eq!(f.sender.idle_wait().await, Duration::from_secs(1));
    assert_eq!(f.sender.step().await.unwrap(), 0);
    f.db.close().await;
}

#[tokio::test(start_paused = true)]
async fn the_sender_wakes_for_a_status_change_and_nothing_else() {
    let events = Events::default();
    let mut bus = events.subscribe();
    let never = Duration::from_secs(3600);
    let pause = || PipelineEvent::ChannelPaused {
        channel: ChannelKind::Webhook,
        until: NOW,
        reason: "out of credit".into(),
    };
    events.emit(pause());
    let woken = tokio::time::timeout(never, next_queued(&mut bus)).await;
    assert!(woken.is_err(), "woken by a channel's pause");
    events.emit(PipelineEvent::StatusChanged {
        order_id: "1001".into(),
        provider: "sim".into(),
        tier: crate::domain::Tier::Normal,
        from: Status::Pending,
        to: Status::InTransit,
        raw_status: "TRANSPORT".into(),
    });
    let woken = tokio::time::timeout(never, next_queued(&mut bus)).await;
    assert!(woken.is_ok(), "not woken by a status change");
    // A bus that overflowed may have carried one.
    for _ in 0..1_100 {
        events.emit(pause());
    }
    let woken = tokio::time::timeout(never, next_queued(&mut bus)).await;
    assert!(woken.is_ok(), "not woken by an overflow");
}

#[tokio::test]
async fn a_round_claims_a_round_of_slots_ahead_for_a_lease_and_starts_them_next() {
    let rule = webhook_with_slots(2);
    let later = Duration::from_secs(600);
    let f = fixture(
        rule,
        Script::answering([transient(later), transient(later)]),
    )
    .await;
    for order in 1001..=1005 {
        queue(&f, &order.to_string()).await;
    }
    // Two slots: two tried (and refused), two more claimed ahead for the delivery lease (a
    // minute), the fifth left for whoever gets to it.
    assert_eq!(f.sender.run_once().await.unwrap(), 2);
    let rows = outbox(&f).await;
    let leases: Vec<Option<Millis>> = rows.iter().map(|row| row.lease_until).collect();
    let claimed = Some(NOW + MINUTE);
    assert_eq!(leases, [None, None, claimed, claimed, None]);
    // The next round starts the two claimed ahead and claims nothing more: its slots had them.
    assert_eq!(f.sender.run_once().await.unwrap(), 2);
    let states: Vec<String> = outbox(&f).await.into_iter().map(|row| row.state).collect();
    assert_eq!(states, ["pending", "pending", "sent", "sent", "pending"]);
    assert_eq!(outbox(&f).await[4].lease_until, None);
    f.db.close().await;
}

#[tokio::test]
async fn a_slot_that_delivered_goes_on_with_the_next_message_claimed_ahead() {
    let rule = webhook_with_slots(1);
    let f = fixture(rule, Script::default()).await;
    for order in 1001..=1003 {
        queue(&f, &order.to_string()).await;
    }
    // One slot, one message claimed for it and one ahead: the slot sends both in its round,
    // the second as soon as the first is taken; the third waits for the next claim.
    assert_eq!(f.sender.run_once().await.unwrap(), 1);
    let states: Vec<String> = outbox(&f).await.into_iter().map(|row| row.state).collect();
    assert_eq!(states, ["sent", "sent", "pending"]);
    assert_eq!(f.channel.sends(), 2);
    f.db.close().await;
}

#[tokio::test]
async fn a_paced_channels_attempt_counts_once_its_turn_has_come() {
    let paced = Script {
        pace: Some(crate::limiter::Limiter::new(None)),
        ..Script::default()
    };
    let f = fixture(webhook(), paced).await;
    queue(&f, "1001").await;
    queue(&f, "1002").await;
    assert_eq!(f.sender.run_once().await.unwrap(), 2);
    for row in outbox(&f).await {
        assert_eq!(
            (row.state.as_str(), row.attempts),
            ("sent", 1),
            "{}",
            row.order_id
        );
    }
    f.db.close().await;
}

#[tokio::test]
async fn a_stop_gives_back_a_message_under_way_counted_as_cut_short() {
    let silent = Script {
        silent: true,
        ..Script::default()
    };
    let f = fixture(webhook(), silent).await;
    queue(&f, "1001").await;
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        f.sender
            .clone()
            .run(stop.clone(), Grace::new(Duration::ZERO)),
    );
    until_handed_over(&f).await;
    stop.cancel();
    running.await.unwrap();
    // It left, so it may have arrived: its attempt is not counted, but the outbox shows it was
    // cut short, and it is due again at once.
    let row = &outbox(&f).await[0];
    assert_eq!(row.state, "pending");
    assert_eq!((row.attempts, row.cut_short), (0, 1));
    assert_eq!(row.lease_until, None);
    f.db.close().await;
}

#[tokio::test]
async fn a_channel_that_refuses_its_turn_sends_nothing_and_spends_no_attempt() {
    let refusing = Script {
        turn: Some(Turn::Refused(Duration::from_secs(3600))),
        ..Script::default()
    };
    let f = fixture(webhook(), refusing).await;
    queue(&f, "1001").await;
    assert_eq!(f.sender.run_once().await.unwrap(), 1);
    assert_eq!(f.channel.sends(), 0);
    let row = &outbox(&f).await[0];
    assert_eq!((row.state.as_str(), row.attempts), ("pending", 0));
    assert_eq!(row.next_attempt_at, NOW + 60 * MINUTE);
    f.db.close().await;
}

#[tokio::test]
async fn a_claim_that_a_long_turn_brought_near_its_end_is_renewed_before_the_send() {
    // The turn takes 50 s of the minute's lease: 10 s are left, less than the 15 s a send may
    // take, so the claim is renewed for a lease from then before the message leaves.
    let clock = Arc::new(ManualClock::new(NOW));
    let paced = Script {
        pace: Some(crate::limiter::Limiter::new(None)),
        turn: Some(Turn::Takes(clock.clone(), Duration::from_secs(50))),
        silent: true,
        ..Script::default()
    };
    let f = fixture_on(clock, webhook(), paced).await;
    queue(&f, "1001").await;
    assert_eq!(f.sender.step().await.unwrap(), 1);
    until_handed_over(&f).await;
    let row = &outbox(&f).await[0];
    assert_eq!(row.lease_until, Some(NOW + 50_000 + MINUTE));
    assert_eq!(row.attempts, 1);
    f.db.close().await;
}
