//! Quiet hours on an injected clock: an SMS due at night waits for the morning, an email goes at
//! once, and waiting costs no attempt; nor does an SMS held back by a channel stop go out at
//! night when the stop ends or is lifted.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::TimeZone;
use shipwatch::clock::{Clock, ManualClock, Millis};
use shipwatch::config::{Delivery, Synchronous};
use shipwatch::domain::{Email, Phone, Status, Tier};
use shipwatch::events::Events;
use shipwatch::notify::sender::Sender;
use shipwatch::notify::template::QuietHours;
use shipwatch::notify::{
    Channel, ChannelKind, ChannelRule, DeliveryError, EmailMessage, Outgoing, SmsMessage,
};
use shipwatch::providers::Trace;
use shipwatch::storage::{Db, NewShipment};
use shipwatch::track::PollRecord;

/// A channel that writes down what it was given, at what time.
struct Recording {
    kind: ChannelKind,
    clock: Arc<ManualClock>,
    sent: Mutex<Vec<(Millis, Outgoing)>>,
    fail_first: Mutex<bool>,
}

#[async_trait]
impl Channel for Recording {
    fn kind(&self) -> ChannelKind {
        self.kind
    }

    async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        let mut fail = self.fail_first.lock().unwrap();
        if *fail {
            *fail = false;
            return Err(DeliveryError::Transient {
                message: "gateway busy".to_owned(),
                retry_after: None,
            });
        }
        self.sent
            .lock()
            .unwrap()
            .push((self.clock.now(), message.clone()));
        Ok(())
    }
}

fn shanghai(d: u32, h: u32, m: u32) -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 11, d, h, m, 0)
        .unwrap()
        .timestamp_millis()
}

/// A database at `at` holding one high-tier shipment (ZT1 with 中通) with the buyer's phone (and
/// `email`), whose change to `status` is recorded under SMS (with the default quiet hours) and
/// email rules that trigger on it: the queued outbox rows the sender then works on. Also returns
/// the shipment's id.
async fn one_change_queued(
    at: Millis,
    order_id: &str,
    email: Option<&str>,
    status: Status,
    raw_status: &str,
) -> (
    tempfile::TempDir,
    Db,
    Arc<ManualClock>,
    Vec<ChannelRule>,
    i64,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("q.db"), Synchronous::Normal)
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(at));
    let shipment = db
        .add_shipment(
            &NewShipment {
                order_id: order_id.to_owned(),
                provider: "taobao".to_owned(),
                tracking_no: Some("ZT1".to_owned()),
                carrier: Some("中通".to_owned()),
                tier: Tier::High,
                phone: Some(Phone::parse("13812345678").unwrap()),
                email: email.map(|e| Email::parse(e).unwrap()),
                openid: None,
                sub_orders: None,
            },
            clock.now(),
        )
        .await
        .unwrap();
    let mut sms = ChannelRule::new(ChannelKind::Sms, vec![status]);
    sms.quiet_hours = Some(QuietHours::parse("21:00-08:00", "Asia/Shanghai").unwrap());
    let rules = vec![sms, ChannelRule::new(ChannelKind::Email, vec![status])];
    let trace = Trace {
        status,
        raw_status: raw_status.to_owned(),
        events: Vec::new(),
        carrier: None,
        tracking_no: None,
        unmapped: Vec::new(),
    };
    db.record_poll(
        shipment.id,
        PollRecord {
            now: clock.now(),
            trace: &trace,
            next_poll_at: clock.now(),
            channels: &rules,
        },
    )
    .await
    .unwrap();
    (dir, db, clock, rules, shipment.id)
}

#[tokio::test]
async fn an_sms_due_at_night_waits_for_the_morning_and_an_email_goes_at_once() {
    let (_dir, db, clock, rules, shipment_id) = one_change_queued(
        shanghai(28, 22, 30),
        "123",
        Some("buyer@shop.example"),
        Status::Delivered,
        "对方已签收",
    )
    .await;

    let recording = |kind| {
        Arc::new(Recording {
            kind,
            clock: clock.clone(),
            sent: Mutex::default(),
            fail_first: Mutex::new(false),
        })
    };
    let (sms_channel, email_channel) = (recording(ChannelKind::Sms), recording(ChannelKind::Email));
    let sender = Sender::new(
        db.clone(),
        clock.clone(),
        Delivery::default(),
        vec![sms_channel.clone(), email_channel.clone()],
        &rules,
        Events::default(),
        std::time::Duration::from_secs(1),
    );

    assert_eq!(
        sender.run_once().await.unwrap(),
        1,
        "only the email at 22:30"
    );
    let emails = email_channel.sent.lock().unwrap().clone();
    assert_eq!(emails.len(), 1);
    let email: EmailMessage = serde_json::from_str(&emails[0].1.payload).unwrap();
    assert_eq!(email.subject, "订单123:已签收");
    assert!(
        email.body.starts_with("包裹已签收,感谢您的信任。"),
        "{}",
        email.body
    );
    assert_eq!(emails[0].1.recipient.as_deref(), Some("buyer@shop.example"));

    clock.set(shanghai(29, 7, 59));
    assert_eq!(sender.run_once().await.unwrap(), 0, "still quiet at 07:59");
    clock.set(shanghai(29, 8, 0));
    assert_eq!(sender.run_once().await.unwrap(), 1);
    let sms = sms_channel.sent.lock().unwrap().clone();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].0, shanghai(29, 8, 0));
    let message: SmsMessage = serde_json::from_str(&sms[0].1.payload).unwrap();
    assert_eq!(message.text, "订单123:包裹已签收,感谢您的信任。");
    assert_eq!(message.params["tracking_no"], "ZT1");
    assert_eq!(sms[0].1.recipient.as_deref(), Some("13812345678"));

    let outbox = db
        .list_notifications(None, Some(shipment_id))
        .await
        .unwrap();
    assert!(
        outbox.iter().all(|n| n.state == "sent" && n.attempts == 1),
        "waiting is not an attempt"
    );
}

#[tokio::test]
async fn a_retry_that_would_fall_at_night_waits_too_and_a_missing_address_is_skipped() {
    let (_dir, db, clock, rules, _) = one_change_queued(
        shanghai(28, 20, 59) + 45_000,
        "124",
        None,
        Status::PickedUp,
        "物流公司揽收成功",
    )
    .await;
    let channel = Arc::new(Recording {
        kind: ChannelKind::Sms,
        clock: clock.clone(),
        sent: Mutex::default(),
        fail_first: Mutex::new(true),
    });
    let sender = Sender::new(
        db.clone(),
        clock.clone(),
        Delivery::default(),
        vec![channel.clone()],
        &rules,
        Events::default(),
        std::time::Duration::from_secs(1),
    );
    // 20:59:45: the first attempt fails; its 5m+ backoff lands after 21:00, so it waits for 08:00.
    assert_eq!(sender.run_once().await.unwrap(), 1);
    let pending = db.list_notifications(Some("pending"), None).await.unwrap();
    assert_eq!(pending[0].next_attempt_at, shanghai(29, 8, 0));

    // No email address: recorded as skipped, never sent, never a failure.
    let skipped = db.list_notifications(Some("skipped"), None).await.unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].channel, "email");
    assert_eq!(skipped[0].last_error.as_deref(), Some("no email address"));
    assert!(
        db.list_notifications(Some("dead"), None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A channel that stops itself (out of credit, say) on its first attempt, for `stop`, and sends
/// afterwards.
struct StopsOnce {
    clock: Arc<ManualClock>,
    stop: std::time::Duration,
    stopped: Mutex<bool>,
    sent: Mutex<Vec<Millis>>,
}

#[async_trait]
impl Channel for StopsOnce {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn send(&self, _message: &Outgoing) -> Result<(), DeliveryError> {
        let mut stopped = self.stopped.lock().unwrap();
        if !*stopped {
            *stopped = true;
            return Err(DeliveryError::Paused {
                message: "SMS channel stopped: out of credit".to_owned(),
                retry_after: self.stop,
            });
        }
        self.sent.lock().unwrap().push(self.clock.now());
        Ok(())
    }
}

async fn stopped_at(
    at: Millis,
    stop_hours: u64,
) -> (
    tempfile::TempDir,
    Db,
    Arc<ManualClock>,
    Arc<StopsOnce>,
    Arc<Sender>,
) {
    let (dir, db, clock, rules, _) =
        one_change_queued(at, "125", None, Status::Delivered, "对方已签收").await;
    let channel = Arc::new(StopsOnce {
        clock: clock.clone(),
        stop: std::time::Duration::from_secs(stop_hours * 3600),
        stopped: Mutex::new(false),
        sent: Mutex::default(),
    });
    let sender = Sender::new(
        db.clone(),
        clock.clone(),
        Delivery::default(),
        vec![channel.clone()],
        &rules,
        Events::default(),
        std::time::Duration::from_secs(1),
    );
    assert_eq!(
        sender.run_once().await.unwrap(),
        1,
        "the attempt that meets the stop"
    );
    (dir, db, clock, channel, sender)
}

#[tokio::test]
async fn a_lifted_stop_sends_what_it_held_back_at_once_by_day() {
    let (_dir, db, clock, channel, sender) = stopped_at(shanghai(28, 14, 0), 1).await;
    let pending = db.list_notifications(Some("pending"), None).await.unwrap();
    assert_eq!(
        pending[0].next_attempt_at,
        shanghai(28, 15, 0),
        "held until the stop ends"
    );
    assert_eq!(pending[0].attempts, 0, "meeting the stop is not an attempt");

    // 14:10: the operator topped up and reloaded.
    clock.set(shanghai(28, 14, 10));
    assert_eq!(sender.resume_stopped_channels().await.unwrap(), 1);
    assert!(
        db.channel_states(clock.now()).await.unwrap().is_empty(),
        "stats shows no stop"
    );
    assert_eq!(sender.run_once().await.unwrap(), 1);
    assert_eq!(*channel.sent.lock().unwrap(), [shanghai(28, 14, 10)]);
    let sent = db.list_notifications(Some("sent"), None).await.unwrap();
    assert_eq!(sent[0].attempts, 1);
}

#[tokio::test]
async fn an_sms_held_back_by_a_stop_never_goes_out_at_night() {
    // Stopped at 20:30 for four hours: the stop ends at 00:30, inside the quiet hours.
    let (_dir, db, clock, channel, sender) = stopped_at(shanghai(28, 20, 30), 4).await;
    let pending = db.list_notifications(Some("pending"), None).await.unwrap();
    assert_eq!(pending[0].next_attempt_at, shanghai(29, 8, 0));

    // Lifted at 23:00 while it still runs (a restart at night): still the morning.
    clock.set(shanghai(28, 23, 0));
    assert_eq!(db.channel_states(clock.now()).await.unwrap().len(), 1);
    sender.resume_stopped_channels().await.unwrap();
    assert_eq!(sender.run_once().await.unwrap(), 0, "not at 23:00");
    clock.set(shanghai(29, 0, 30));
    assert_eq!(sender.run_once().await.unwrap(), 0, "not at 00:30");
    clock.set(shanghai(29, 8, 0));
    assert_eq!(sender.run_once().await.unwrap(), 1);
    assert_eq!(*channel.sent.lock().unwrap(), [shanghai(29, 8, 0)]);
}
