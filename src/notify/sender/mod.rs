//! The sender: claims due notifications with a lease, makes one delivery attempt each, and
//! records the outcome: sent, retried later with backoff, or dead.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::delivery::{Delivery, retry_delay};
use super::lane::Lane;
use super::template::QuietHours;
use super::{Channel, ChannelKind, ChannelRule, DeliveryError, Outgoing};
use crate::clock::{Millis, SharedClock, millis};
use crate::events::{Events, PipelineEvent};
use crate::outage::Outage;
use crate::storage::{ClaimedNotification, Db, Handed, NotificationClaim, StorageError};
use crate::workers::{Grace, wait_keeping_claim};

pub struct Sender {
    db: Db,
    clock: SharedClock,
    delivery: Delivery,
    channels: BTreeMap<ChannelKind, Arc<dyn Channel>>,
    events: Events,
    /// Delivery slots, each channel's own ([`Lane::new`]): a receiver that never answers fills
    /// its own channel's slots only, and the other channels' messages go out meanwhile.
    lanes: BTreeMap<ChannelKind, Lane>,
    /// Rung when an attempt ends: its slot is free for the next due message.
    freed: Notify,
    /// Set when the sender stops: a slot that finishes no longer takes the next message.
    stopping: AtomicBool,
    /// How often the outbox is looked at when nothing is due sooner.
    scan_interval: Duration,
    /// Retries of these channels wait for the end of their quiet hours.
    quiet_hours: HashMap<ChannelKind, QuietHours>,
    /// The end of each channel's pause last put on the bus: every message a pause holds back
    /// meets it, and the bus hears of it once.
    pauses_told: Mutex<HashMap<ChannelKind, Millis>>,
}

/// How far a delivery attempt got, for a drain that cuts it short: the end of its claim (renewed
/// while it waits for a turn), and whether it left for the channel. One that never left is given
/// back whole, its start (if counted) taken back.
struct Progress {
    lease_until: Millis,
    sending: bool,
}

impl Progress {
    fn new(n: &ClaimedNotification) -> Progress {
        Progress {
            lease_until: n.lease_until,
            sending: false,
        }
    }
}

/// Waits for the next status change announced on the event bus: its notifications are queued
/// by then (the event follows the commit). A bus that overflowed may have carried one too.
async fn next_queued(events: &mut broadcast::Receiver<PipelineEvent>) {
    loop {
        match events.recv().await {
            Ok(PipelineEvent::StatusChanged { .. })
            | Err(broadcast::error::RecvError::Lagged(_)) => {
                return;
            }
            Ok(_) => {}
            // The sender holds the bus itself, so it never closes while this runs.
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

impl Sender {
    pub fn new(
        db: Db,
        clock: SharedClock,
        delivery: Delivery,
        channels: Vec<Arc<dyn Channel>>,
        rules: &[ChannelRule],
        events: Events,
        scan_interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Sender {
            db,
            clock,
            lanes: channels
                .iter()
                .map(|c| {
                    let kind = c.kind();
                    let configured = rules
                        .iter()
                        .find(|r| r.kind == kind)
                        .and_then(|r| r.concurrency)
                        .unwrap_or(delivery.concurrency);
                    let lane = Lane::new(configured);
                    (kind, lane.paced(c.pace().is_some()))
                })
                .collect(),
            freed: Notify::new(),
            stopping: AtomicBool::new(false),
            delivery,
            channels: channels.into_iter().map(|c| (c.kind(), c)).collect(),
            events,
            scan_interval,
            quiet_hours: rules
                .iter()
                .filter_map(|r| r.quiet_hours.map(|q| (r.kind, q)))
                .collect(),
            pauses_told: Mutex::new(HashMap::new()),
        })
    }

    /// Deliveries under way, all channels together, for the daemon's heartbeat in the database.
    pub fn deliveries_in_flight(&self) -> usize {
        self.lanes
            .values()
            .map(|lane| lane.slots.saturating_sub(lane.free()))
            .sum()
    }

    /// The channels with a free delivery slot.
    fn free_kinds(&self) -> Vec<ChannelKind> {
        self.lanes
            .iter()
            .filter(|(_, lane)| lane.free() > 0)
            .map(|(kind, _)| *kind)
            .collect()
    }

    /// One round: for each channel, starts an attempt in each free delivery slot with messages
    /// claimed ahead, claiming more (beyond the free slots, as many as [`Pace`] says) when too
    /// few are left. Returns how many attempts it started.
    pub async fn step(self: &Arc<Self>) -> Result<usize, StorageError> {
        let mut count = 0;
        for (kind, lane) in &self.lanes {
            let free = lane.free();
            if free == 0 {
                continue;
            }
            let now = self.clock.now();
            // A claim that ends before an attempt could finish goes back untried, its attempt
            // not spent: attempted that late, it could be claimed again while still in flight.
            let ending = lane.take_ending(now + millis(self.delivery.timeout));
            self.db.give_back_notifications(&ending).await?;
            let short = free.saturating_sub(lane.ahead.lock().expect("claimed-ahead lock").len());
            if short > 0 {
                let beyond = lane.pace.lock().expect("pace lock").claim(
                    now,
                    lane.slots,
                    self.delivery.lease,
                );
                let lease_until = now + millis(self.delivery.lease);
                let claimed = self
                    .db
                    .writer()
                    .claim_notifications(NotificationClaim {
                        now,
                        lease_until,
                        channels: vec![*kind],
                        max_attempts: self.delivery.attempts,
                        limit: short + beyond,
                    })
                    .await?;
                let mut ahead = lane.ahead.lock().expect("claimed-ahead lock");
                ahead.extend(claimed.into_iter().map(|n| (n, lease_until)));
            }
            let started: Vec<ClaimedNotification> = {
                let mut ahead = lane.ahead.lock().expect("claimed-ahead lock");
                let take = free.min(ahead.len());
                ahead.drain(..take).map(|(n, _)| n).collect()
            };
            lane.pace.lock().expect("pace lock").started(started.len());
            count += started.len();
            // Each attempt is counted as it starts, not when it was claimed: a message claimed
            // ahead spends nothing until it is tried, even if this daemon is killed first. A
            // paced channel's message is counted once its turn has come ([`Sender::deliver`]).
            let writer = self.db.writer();
            for notification in started {
                let mark = match lane.paced {
                    true => None,
                    false => Some(
                        writer
                            .started(notification.id, notification.lease_until)
                            .await?,
                    ),
                };
                let (me, kind) = (self.clone(), *kind);
                lane.workers.spawn(async move {
                    me.deliver_in_background(kind, notification, mark).await;
                    me.freed.notify_one();
                });
            }
        }
        Ok(count)
    }

    /// One round, waited for: claims what is due, makes one attempt each, and returns once every
    /// outcome is recorded.
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, StorageError> {
        let claimed = self.step().await?;
        for lane in self.lanes.values() {
            lane.workers.idle().await;
        }
        Ok(claimed)
    }

    async fn deliver_in_background(
        &self,
        kind: ChannelKind,
        notification: ClaimedNotification,
        started: Option<Handed<bool>>,
    ) {
        let Some(lane) = self.lanes.get(&kind) else {
            return;
        };
        let (mut notification, mut started) = (notification, started);
        loop {
            let mut next = None;
            let mut progress = Progress::new(&notification);
            let outcome = tokio::select! {
                biased;
                _ = lane.workers.aborted() => None,
                outcome = self.deliver(&notification, started, &mut next, &mut progress) => Some(outcome),
            };
            let result = match outcome {
                Some(outcome) => outcome,
                // Shutdown cut the attempt short: free the row for the next start at once.
                None => {
                    // So is the message this slot had taken next. It never left, and goes back
                    // under its claim: its start, whether committed before the give-back or
                    // after it, is not counted (a start counts only under its claim).
                    if let Some((next, _)) = next.take() {
                        let _ = self
                            .db
                            .give_back_notifications(&[(next.id, next.lease_until)])
                            .await;
                    }
                    if !progress.sending {
                        // Still waiting for its start mark or its turn: it never left either,
                        // and goes back under the claim it holds, its start (if committed first)
                        // taken back.
                        self.db
                            .give_back_notifications(&[(notification.id, progress.lease_until)])
                            .await
                    } else {
                        // A delivery whose `sent` mark was already handed to the writer still
                        // ends sent: the release leaves a sent row alone, and the mark sets it
                        // whatever the release did before it.
                        self.db.release_notification(notification.id).await
                    }
                }
            };
            if let Err(e) = result {
                // The row stays pending under its lease; it is attempted again once the lease
                // ends.
                Outage::database().failed(
                    &format!(
                        "recording delivery {} of order {}",
                        notification.public_id, notification.order_id
                    ),
                    &e,
                );
            }
            // The slot goes on with the message it started with its `sent` mark.
            match next {
                Some((n, mark)) => (notification, started) = (n, mark),
                None => return,
            }
        }
    }

    /// The next message claimed ahead for this slot, its start mark handed to the writer, so
    /// that it is committed with the `sent` mark of the delivery before it: a slot that keeps
    /// going waits for one commit between deliveries instead of two. None once the sender
    /// stops, or when nothing claimed ahead can still be attempted within its lease.
    async fn next_for_slot(
        &self,
        kind: ChannelKind,
    ) -> Result<Option<(ClaimedNotification, Option<Handed<bool>>)>, StorageError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(lane) = self.lanes.get(&kind) else {
            return Ok(None);
        };
        let by = self.clock.now() + millis(self.delivery.timeout);
        let next = {
            let mut ahead = lane.ahead.lock().expect("claimed-ahead lock");
            match ahead.front() {
                Some((_, until)) if *until > by => ahead.pop_front(),
                // Too late to start: the next round gives it back.
                _ => None,
            }
        };
        let Some((next, until)) = next else {
            return Ok(None);
        };
        if lane.paced {
            lane.pace.lock().expect("pace lock").started(1);
            return Ok(Some((next, None)));
        }
        match self.db.writer().started(next.id, until).await {
            Ok(mark) => {
                lane.pace.lock().expect("pace lock").started(1);
                Ok(Some((next, Some(mark))))
            }
            Err(e) => {
                // Not started after all: back to the head of the line.
                let mut ahead = lane.ahead.lock().expect("claimed-ahead lock");
                ahead.push_front((next, until));
                Err(e)
            }
        }
    }

    /// Makes one attempt for a claimed notification and records the outcome. `started` is the
    /// mark that counts the attempt, handed to the writer when the attempt was taken from the
    /// claimed ones: nothing goes out before it is committed, so that a message never arrives
    /// more often than its attempts and its attempts cut short (given back after a kill) count,
    /// whenever the daemon is killed. A paced channel's message has none yet: it may wait long
    /// for its turn, and a kill meanwhile must not count an attempt that never left, so its
    /// start is written and committed once the turn has come, before the send. A start counts
    /// only under the claim it was made under: one that finds its claim gone (a stop gave the
    /// message back while the start waited for the writer, or another daemon took it over)
    /// counts nothing, and the message does not leave.
    ///
    /// When the receiver accepts it, the slot's next message claimed ahead is put in `next`, its
    /// start mark handed to the writer before this one's `sent` mark (see
    /// [`Sender::next_for_slot`]).
    async fn deliver(
        &self,
        n: &ClaimedNotification,
        started: Option<Handed<bool>>,
        next: &mut Option<(ClaimedNotification, Option<Handed<bool>>)>,
        progress: &mut Progress,
    ) -> Result<(), StorageError> {
        // A paced channel's start comes with no mark: it is written once the turn has come.
        let start_at_turn = started.is_none();
        if let Some(started) = started
            && !started.written().await?
        {
            claim_gone(n);
            return Ok(());
        }
        let Ok(kind) = n.channel.parse::<ChannelKind>() else {
            return self
                .db
                .notification_failed(n.id, &format!("unknown channel {:?}", n.channel), None)
                .await;
        };
        let Some(channel) = self.channels.get(&kind) else {
            // Claims only cover configured channels; a channel removed since is retried later.
            return self.db.release_notification(n.id).await;
        };
        let message = Outgoing {
            public_id: n.public_id.clone(),
            payload: n.payload.clone(),
            recipient: n.recipient.clone(),
        };
        let result = match self
            .ready_keeping_claim(&**channel, n, &mut progress.lease_until)
            .await?
        {
            Some(Ok(())) => {
                if start_at_turn
                    && !self
                        .db
                        .writer()
                        .started(n.id, progress.lease_until)
                        .await?
                        .written()
                        .await?
                {
                    claim_gone(n);
                    return Ok(());
                }
                progress.sending = true;
                let send = channel.send(&message);
                let longest = self.delivery.timeout * channel.requests_per_attempt();
                if progress.lease_until > self.clock.now() + millis(longest) {
                    send.await
                } else {
                    // The claim is kept until the answer is in, however many requests the
                    // attempt makes (WeChat's may fetch a token, then send again with a fresh
                    // one). Only then: a timer for every delivery costs a webhook a tenth of
                    // its pace.
                    match self
                        .keeping_claim(n, &mut progress.lease_until, send)
                        .await?
                    {
                        Some(result) => result,
                        None => return Ok(()),
                    }
                }
            }
            Some(Err(refused)) => Err(refused),
            None => return Ok(()),
        };
        let now = self.clock.now();
        let attempt = n.attempts;
        match result {
            Ok(()) => {
                // A delivery the receiver accepted and that is not yet marked sent would be
                // repeated after a crash: its receipt is written first, before any other await
                // (a kill from then on does not repeat it); the mark goes ahead of everything
                // else the writer has waiting, and the slot stays taken until it is written.
                let received = self.db.writer().received(n.id, progress.lease_until, now);
                *next = self.next_for_slot(kind).await.ok().flatten();
                self.db.writer().sent(received).await?;
                info!(order_id = %n.order_id, channel = %kind, status = %n.status, attempt, notification = %n.public_id, "notification delivered");
                self.events.emit(PipelineEvent::Delivered {
                    order_id: n.order_id.clone(),
                    channel: kind,
                    status: n.status.clone(),
                    attempt,
                    notification: n.public_id.clone(),
                });
            }
            Err(error) => {
                let (retry_in, message) = match error {
                    DeliveryError::Paused {
                        message,
                        retry_after,
                    } => {
                        // The channel raised the alarm itself; the message only waits, and
                        // never into the channel's quiet hours.
                        let until = now + millis(retry_after);
                        self.db
                            .pause_channel(kind.as_str(), until, &message, now)
                            .await?;
                        if self.first_to_meet(kind, until, now) {
                            self.events.emit(PipelineEvent::ChannelPaused {
                                channel: kind,
                                until,
                                reason: message.clone(),
                            });
                        }
                        self.postpone(kind, n, message, retry_after, now).await?;
                        return Ok(());
                    }
                    DeliveryError::Undeliverable(reason) => {
                        // Not a failure of the channel: this recipient cannot be reached, and
                        // the row ends skipped with the reason, its attempt spent.
                        self.db.notification_undeliverable(n.id, &reason).await?;
                        info!(order_id = %n.order_id, channel = %kind, status = %n.status, attempt, notification = %n.public_id, reason = %reason, "notification skipped: the recipient cannot be reached");
                        return Ok(());
                    }
                    DeliveryError::LocalShortage(message) => {
                        // Not the receiver's fault nor the message's: wait as after a first
                        // failure, with the attempt given back.
                        let retry_after = retry_delay(&self.delivery, 1, None);
                        warn!(order_id = %n.order_id, channel = %kind, error = %message, retry_in = %humantime::format_duration(retry_after), "delivery postponed; the attempt is not counted");
                        self.postpone(kind, n, message, retry_after, now).await?;
                        return Ok(());
                    }
                    DeliveryError::Transient {
                        message,
                        retry_after,
                    } if attempt < i64::from(self.delivery.attempts) => (
                        Some(retry_delay(&self.delivery, attempt as u32, retry_after)),
                        message,
                    ),
                    DeliveryError::Transient { message, .. } => {
                        (None, format!("gave up after {attempt} attempts: {message}"))
                    }
                    DeliveryError::Permanent(message) => (None, message),
                };
                let retry_at = retry_in.map(|d| {
                    let at = now + millis(d);
                    self.quiet_hours
                        .get(&kind)
                        .map_or(at, |quiet| quiet.next_allowed(at))
                });
                self.db
                    .notification_failed(n.id, &message, retry_at)
                    .await?;
                match retry_in {
                    Some(delay) => {
                        warn!(order_id = %n.order_id, channel = %kind, attempt, error = %message, retry_in = %humantime::format_duration(delay), "delivery failed; will retry")
                    }
                    None => {
                        error!(order_id = %n.order_id, channel = %kind, attempt, error = %message, "delivery failed for good; see `shipwatch outbox --state dead`")
                    }
                }
                self.events.emit(PipelineEvent::DeliveryFailed {
                    order_id: n.order_id.clone(),
                    channel: kind,
                    status: n.status.clone(),
                    attempt,
                    error: message,
                    retry_in,
                });
            }
        }
        Ok(())
    }

    /// Waits for the channel's turn ([`Channel::ready`]) with the claim on `n` kept meanwhile,
    /// `lease_until` following it. A paced channel's turn can come late, after the turns of the
    /// other daemons sharing its quota; a claim that ran out meanwhile would let another daemon
    /// take the message and send it too. So the claim is renewed while the wait lasts
    /// ([`wait_keeping_claim`]), and once more after the turn if it could end before the answer
    /// is read. None when another daemon took the message over all the same (this one stalled
    /// past its lease): that one sends it, and this attempt counts as cut short.
    async fn ready_keeping_claim(
        &self,
        channel: &dyn Channel,
        n: &ClaimedNotification,
        lease_until: &mut Millis,
    ) -> Result<Option<Result<(), DeliveryError>>, StorageError> {
        if channel.pace().is_none() {
            if let Err(refused) = channel.ready().await {
                return Ok(Some(Err(refused)));
            }
        } else {
            match self.keeping_claim(n, lease_until, channel.ready()).await? {
                Some(Ok(())) => {}
                Some(Err(refused)) => return Ok(Some(Err(refused))),
                None => return Ok(None),
            }
        }
        let by = self.clock.now() + millis(self.delivery.timeout);
        if *lease_until <= by {
            match self.renew_claim(n, *lease_until).await? {
                Some(until) => *lease_until = until,
                None => return Ok(None),
            }
        }
        Ok(Some(Ok(())))
    }

    /// Waits for `work` with the claim on `n` kept meanwhile ([`wait_keeping_claim`] with the
    /// delivery's lease and timeout), `lease_until` following it. None when the claim was lost.
    async fn keeping_claim<T>(
        &self,
        n: &ClaimedNotification,
        lease_until: &mut Millis,
        work: impl Future<Output = T>,
    ) -> Result<Option<T>, StorageError> {
        let times = (self.delivery.lease, self.delivery.timeout);
        let renew = |held| self.renew_claim(n, held);
        wait_keeping_claim(work, &self.clock, lease_until, times, renew).await
    }

    /// Renews the claim on `n` for a lease from now, while it is still the one ending at `held`:
    /// its new end. None, with a line in the log, when another daemon took the message over.
    async fn renew_claim(
        &self,
        n: &ClaimedNotification,
        held: Millis,
    ) -> Result<Option<Millis>, StorageError> {
        let until = self.clock.now() + millis(self.delivery.lease);
        if self.db.renew_notification_claim(n.id, held, until).await? {
            return Ok(Some(until));
        }
        info!(order_id = %n.order_id, channel = %n.channel, notification = %n.public_id, "delivery left to the daemon that took it over");
        Ok(None)
    }

    /// Whether a pause of `kind` ending at `until` is news: no pause of it told yet, or the last
    /// one told ended by `now`. Records it when so.
    fn first_to_meet(&self, kind: ChannelKind, until: Millis, now: Millis) -> bool {
        let mut told = self.pauses_told.lock().expect("pauses-told lock");
        pause_is_news(&mut told, kind, until, now)
    }

    /// Puts a notification off by `retry_after` (never into its channel's quiet hours) with its
    /// attempt given back: the channel, not the message, could not go on.
    async fn postpone(
        &self,
        kind: ChannelKind,
        n: &ClaimedNotification,
        message: String,
        retry_after: Duration,
        now: Millis,
    ) -> Result<(), StorageError> {
        let at = now + millis(retry_after);
        let due = self
            .quiet_hours
            .get(&kind)
            .map_or(at, |quiet| quiet.next_allowed(at));
        self.db.notification_postponed(n.id, &message, due).await?;
        self.events.emit(PipelineEvent::DeliveryFailed {
            order_id: n.order_id.clone(),
            channel: kind,
            status: n.status.clone(),
            attempt: n.attempts,
            error: message,
            retry_in: Some(retry_after),
        });
        Ok(())
    }

    /// Lifts every channel stop (a reload or a restart says the cause is fixed): each channel
    /// forgets its stop, and the notifications a stop postponed become due now (or when the
    /// channel's quiet hours end), instead of waiting for the stop's end. Returns how many
    /// notifications were released.
    pub async fn resume_stopped_channels(&self) -> Result<u64, StorageError> {
        for channel in self.channels.values() {
            channel.resume();
        }
        self.pauses_told.lock().expect("pauses-told lock").clear();
        let now = self.clock.now();
        let mut released = 0;
        for stop in self.db.channel_states(now).await? {
            let at = stop
                .channel
                .parse::<ChannelKind>()
                .ok()
                .and_then(|kind| self.quiet_hours.get(&kind))
                .map_or(now, |quiet| quiet.next_allowed(now));
            let count = self
                .db
                .resume_channel(&stop.channel, &stop.reason, at)
                .await?;
            info!(channel = %stop.channel, notifications = count, "channel stop lifted; its notifications are due again");
            released += count;
        }
        // Stops that already ended postponed nothing that is not due by now.
        self.db.clear_channel_pauses().await?;
        Ok(released)
    }

    /// Delivers until `stop` fires, then lets in-flight attempts finish within `grace` and
    /// releases whatever is still unfinished after that.
    pub async fn run(self: Arc<Self>, stop: CancellationToken, grace: Grace) {
        // A fresh start tries every channel again, with the notifications their stops held
        // back; `stats` stops showing old stops.
        if let Err(e) = self.resume_stopped_channels().await {
            error!(error = %e, "could not lift old channel stops");
        }
        // A status change queued by the dispatcher (or by maintenance) is claimed at once,
        // not at the next scan.
        let mut queued = self.events.subscribe();
        while !stop.is_cancelled() {
            let wait = match self.step().await {
                // More may be due: claim again at once. Claiming nothing writes nothing, so
                // only a claim proves the database writable.
                Ok(claimed) if claimed > 0 => {
                    Outage::database().succeeded();
                    Duration::ZERO
                }
                Ok(_) => self.idle_wait().await,
                Err(e) => {
                    Outage::database().failed("claiming due notifications", &e);
                    self.scan_interval
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                // A slot came free: what waited for it can go now.
                _ = self.freed.notified() => {}
                () = next_queued(&mut queued) => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Slots that finish now take no next message: what is claimed ahead goes back below.
        self.stopping.store(true, Ordering::Relaxed);
        // One grace for all: the lanes drain at the same time, each waited for in turn.
        let since = tokio::time::Instant::now();
        for (kind, lane) in &self.lanes {
            lane.workers
                .drain(&grace, since, &format!("{kind} deliveries"))
                .await;
            // What was claimed ahead and never attempted is due again at once, its attempt
            // not spent.
            if let Err(e) = self.db.give_back_notifications(&lane.take_all()).await {
                error!(channel = %kind, error = %e, "could not give back the notifications claimed ahead");
            }
        }
        for channel in self.channels.values() {
            channel.close().await;
        }
    }

    /// How long to wait before the next round when it claimed nothing: until the next message
    /// of a channel with a free slot is due (a full channel rings [`Sender::freed`] itself).
    async fn idle_wait(&self) -> Duration {
        let free = self.free_kinds();
        if free.is_empty() {
            return self.scan_interval;
        }
        let now = self.clock.now();
        match self.db.next_notification_at(&free).await {
            Ok(Some(at)) if at > now => {
                Duration::from_millis((at - now) as u64).min(self.scan_interval)
            }
            Ok(Some(_)) => Duration::from_millis(10).min(self.scan_interval),
            _ => self.scan_interval,
        }
    }
}

/// A message whose start found its claim gone (given back by a stop, or taken over after its
/// lease ran out) does not leave: its next claim, this daemon's or another's, sends it.
fn claim_gone(n: &ClaimedNotification) {
    info!(order_id = %n.order_id, channel = %n.channel, notification = %n.public_id, "delivery not started: its claim ended before its start was counted; left to its next claim");
}

/// Whether a pause of `kind` ending at `until` is news, given the end of the last pause told
/// for each channel; records it in `told` when so.
fn pause_is_news(
    told: &mut HashMap<ChannelKind, Millis>,
    kind: ChannelKind,
    until: Millis,
    now: Millis,
) -> bool {
    match told.get(&kind) {
        Some(end) if *end > now => false,
        _ => {
            told.insert(kind, until);
            true
        }
    }
}

#[cfg(test)]
mod tests;
