//! The dispatcher: finds due shipments, polls each through its provider's token bucket, and
//! records what came back.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::{Millis, SharedClock, millis, to_rfc3339};
use crate::config::{Polling, Tiers};
use crate::domain::Tier;
use crate::events::{Events, PipelineEvent};
use crate::notify::ChannelRule;
use crate::outage::Outage;
use crate::providers::{MAX_BAN, ProviderError, Trace, TrackRequest};
use crate::service::Heartbeat;
use crate::storage::{Db, Recorded, ShipmentClaim, ShipmentRow, StorageError};
use crate::workers::{Grace, Pace, Slot, Workers, wait_keeping_claim};

mod commit;
mod failure;
mod once;
pub mod pollable;
mod provider;
mod push;
mod quota;
mod tally;
mod turns;

#[cfg(test)]
mod tests;

use commit::Finished;
pub use once::{PollOnceError, PolledOnce};
use pollable::{Unpollable, pollable};
pub use provider::ProviderRuntime;
pub use push::CallbackApplied;

/// The configured providers by name.
pub type Providers = BTreeMap<String, Arc<ProviderRuntime>>;

use tally::PollTally;
use turns::Turn;
pub use turns::waiting_cap;

/// How often a daemon reads the bans and pauses stored by the daemons it shares the database
/// with (see [`Dispatcher::refresh_bans`]).
pub const BAN_REFRESH: Duration = Duration::from_secs(5);

/// What a poll led to, for `poll` and for tests.
#[derive(Debug)]
pub enum PollOutcome {
    Recorded(Recorded),
    Failed(ProviderError),
    /// The provider is paused; the shipment was given back untouched.
    Skipped,
    /// The shipment's claim is this poll's no more (another daemon took the shipment while this
    /// one stalled past its lease, or the claim was given back): no call was made, so that the
    /// shipment is not polled twice.
    TakenOver,
    /// A push-mode provider's shipment was subscribed (or found subscribed already).
    Subscribed,
    /// A one-off poll (`poll --apply`) whose credentials or configuration upstream rejected:
    /// nothing is recorded. A provider stop belongs to the daemon that holds the credentials,
    /// which keeps its stops in memory and meets the rejection itself on its next poll; a stop
    /// recorded from outside would show in `stats` and `check-config` while the daemon, whose
    /// credentials may differ, goes on polling.
    NotRecorded(ProviderError),
}

pub struct Dispatcher {
    db: Db,
    clock: SharedClock,
    tiers: Tiers,
    polling: Polling,
    /// Replaced whole when the config is reloaded.
    providers: RwLock<Arc<Providers>>,
    /// What a change is announced on, and how.
    channels: Arc<[ChannelRule]>,
    events: Events,
    workers: Workers,
    /// Shipments whose poll is under way. A poll that waits long for its provider's quota may
    /// outlive its claim; the shipment is then claimed again but must not be polled twice.
    in_flight: Mutex<HashSet<i64>>,
    /// Shipments claimed but not polled yet, each with the end of its claim. Claiming a round
    /// of slots ahead lets a freed slot start its next poll at once instead of waiting for the
    /// writer to claim one.
    ahead: Mutex<VecDeque<(ShipmentRow, Millis)>>,
    /// How fast the slots have been taking what was claimed ahead, which sizes the next claim.
    pace: Mutex<Pace>,
    /// Beats once per completed round; systemd's watchdog and `/healthz` watch it, so a wedged
    /// dispatcher gets noticed.
    heartbeat: Heartbeat,
    /// Polls by provider and result since the last write to `poll_counts`.
    tally: PollTally,
    /// The longest an idle round sleeps, in ms, beyond the scan interval's own cap: under a
    /// systemd watchdog, rounds must beat often enough for every ping.
    max_idle_ms: AtomicU64,
    /// When [`Dispatcher::refresh_bans`] last read the stored bans (0: never).
    bans_read_at: AtomicI64,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        clock: SharedClock,
        tiers: Tiers,
        polling: Polling,
        providers: BTreeMap<String, Arc<ProviderRuntime>>,
        channels: Vec<ChannelRule>,
        events: Events,
    ) -> Arc<Self> {
        quota::share_quotas(&db, &providers);
        Arc::new(Dispatcher {
            channels: channels.into(),
            db,
            clock,
            tiers,
            workers: Workers::new(polling.concurrency),
            polling,
            providers: RwLock::new(Arc::new(providers)),
            events,
            in_flight: Mutex::new(HashSet::new()),
            ahead: Mutex::new(VecDeque::new()),
            pace: Mutex::new(Pace::default()),
            heartbeat: Heartbeat::new(),
            tally: PollTally::default(),
            max_idle_ms: AtomicU64::new(u64::MAX),
            bans_read_at: AtomicI64::new(0),
        })
    }

    fn providers(&self) -> Arc<Providers> {
        self.providers.read().expect("providers lock").clone()
    }

    /// Swaps in the providers of a reloaded config: new credentials take effect, and pauses for
    /// rejected credentials or configuration are lifted. Upstream bans stay: they are restored
    /// from the database. Polls in flight finish with the providers they started with.
    pub async fn replace_providers(&self, mut providers: Providers) -> Result<(), StorageError> {
        let old = self.providers();
        for (name, provider) in &mut providers {
            if let (Some(new), Some(old)) = (Arc::get_mut(provider), old.get(name)) {
                new.keep_bucket_of(old);
            }
        }
        quota::share_quotas(&self.db, &providers);
        *self.providers.write().expect("providers lock") = Arc::new(providers);
        self.db.clear_provider_pauses().await?;
        self.load_bans().await
    }

    /// Restores the provider bans recorded before a restart.
    pub async fn load_bans(&self) -> Result<(), StorageError> {
        let providers = self.providers();
        // A ban recorded before bans were capped (or written by hand) ends within the maximum.
        let latest = self.clock.now().saturating_add(millis(MAX_BAN));
        self.db.cap_provider_bans(latest).await?;
        for (name, until) in self.db.provider_bans(self.clock.now()).await? {
            if let Some(provider) = providers.get(&name) {
                provider.pause_until(until, self.clock.now());
                warn!(provider = %name, until = %to_rfc3339(until), "provider still banned by upstream; no calls until then");
            }
        }
        Ok(())
    }

    /// Picks up the bans and pauses stored by the other daemons sharing the database (one small
    /// read), so that a ban upstream pronounced to any of them pauses all of them. At most once
    /// per [`BAN_REFRESH`]; this daemon's own are in memory already, and nothing changes for them.
    pub async fn refresh_bans(&self) -> Result<(), StorageError> {
        let now = self.clock.now();
        let last = self.bans_read_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < millis(BAN_REFRESH) {
            return Ok(());
        }
        self.bans_read_at.store(now.max(1), Ordering::Relaxed);
        let providers = self.providers();
        for state in self.db.provider_states(now).await? {
            let until = state.banned_until.max(state.paused_until);
            if let (Some(until), Some(provider)) = (until, providers.get(&state.provider))
                && provider.pause_until(until, now)
            {
                warn!(provider = %state.provider, until = %to_rfc3339(until), "provider paused by another daemon; no calls until then");
            }
        }
        Ok(())
    }

    /// The providers whose shipments are not claimed now: those paused, and those whose bucket
    /// has as many polls waiting as it serves within a claim's lease ([`waiting_cap`]).
    fn held_back(&self, now: Millis) -> Vec<String> {
        self.providers()
            .values()
            .filter(|p| p.is_paused(now) || p.room(&self.polling) == 0)
            .map(|p| p.name.clone())
            .collect()
    }

    /// When a shipment of `tier` polled at `now` is next due: the tier interval ± jitter.
    pub fn next_poll_at(&self, now: Millis, tier: Tier) -> Millis {
        let interval = self.tiers.interval(tier).as_secs_f64();
        let jitter = self.polling.jitter;
        let factor = if jitter > 0.0 {
            1.0 + rand::rng().random_range(-jitter..=jitter)
        } else {
            1.0
        };
        now + (interval * factor * 1000.0) as Millis
    }

    /// When a shipment of `provider` is next due: its tier's interval ± jitter, and never sooner
    /// than the provider's floor.
    fn next_poll_for(&self, provider: &ProviderRuntime, now: Millis, tier: Tier) -> Millis {
        self.next_poll_at(now, tier)
            .max(now + millis(provider.min_interval))
    }

    /// One round: starts a poll in each free slot, with shipments claimed ahead, claiming more
    /// (beyond the free slots, as many as [`Pace`] says) when too few are left. Returns how many
    /// shipments it took up (polls started, rows flagged); the polls go on in the background.
    pub async fn step(self: &Arc<Self>) -> Result<usize, StorageError> {
        let free = self.workers.free();
        if free == 0 {
            return Ok(0);
        }
        let now = self.clock.now();
        let providers = self.providers();
        // How many more polls each provider's bucket takes now: rows of one that takes none
        // stay claimed ahead, unstarted, and none of its shipments is claimed meanwhile.
        let mut room: Vec<(&str, usize)> = providers
            .values()
            .map(|p| (p.name.as_str(), p.room(&self.polling)))
            .collect();
        let short = {
            let mut ahead = self.ahead.lock().expect("claimed-ahead lock");
            // A claim that ran out is anyone's again: its shipment may be polled elsewhere.
            ahead.retain(|(_, until)| *until > now);
            let ready = ahead
                .iter()
                .filter(|(row, _)| {
                    room.iter()
                        .find(|(name, _)| *name == row.provider)
                        .is_none_or(|(_, n)| *n > 0)
                })
                .count();
            free.saturating_sub(ready)
        };
        if short > 0 {
            let paused = self.held_back(now);
            let claimed_until = now + millis(self.polling.lease);
            let beyond = self.pace.lock().expect("pace lock").claim(
                now,
                self.polling.concurrency,
                self.polling.lease,
            );
            let rows = self
                .db
                .writer()
                .claim_shipments(ShipmentClaim {
                    now,
                    claimed_until,
                    paused,
                    limit: short + beyond,
                })
                .await?;
            if !rows.is_empty() {
                // Claiming writes: the database is writable.
                Outage::database().succeeded();
            }
            let mut ahead = self.ahead.lock().expect("claimed-ahead lock");
            ahead.extend(rows.into_iter().map(|row| (row, claimed_until)));
        }
        let rows: Vec<(ShipmentRow, Millis)> = {
            let mut ahead = self.ahead.lock().expect("claimed-ahead lock");
            if room.iter().all(|(_, n)| *n >= free) {
                // Every bucket takes what the slots can: the claimed-ahead rows go in order.
                let take = free.min(ahead.len());
                ahead.drain(..take).collect()
            } else {
                let mut taken = Vec::new();
                let mut kept = VecDeque::with_capacity(ahead.len());
                for (row, until) in ahead.drain(..) {
                    let bucket = room.iter_mut().find(|(name, _)| *name == row.provider);
                    if taken.len() < free && bucket.as_ref().is_none_or(|(_, n)| *n > 0) {
                        if let Some((_, n)) = bucket {
                            *n -= 1;
                        }
                        taken.push((row, until));
                    } else {
                        kept.push_back((row, until));
                    }
                }
                *ahead = kept;
                taken
            }
        };
        let claimed = rows.len();
        self.pace.lock().expect("pace lock").started(claimed);
        for (row, claimed_until) in rows {
            let provider = match pollable(&row, &providers, now) {
                Ok(provider) => provider,
                Err(why) => {
                    self.flag_invalid(row, why, now).await?;
                    continue;
                }
            };
            if !self
                .in_flight
                .lock()
                .expect("in-flight lock")
                .insert(row.id)
            {
                // Claimed again while its last poll is still finishing (that poll gave it back
                // early, as a pause does): give this claim back too, or the shipment would wait
                // out the whole lease before anyone polls it again.
                self.db.release_shipment(row.id).await?;
                continue;
            }
            let turn = Turn {
                waiting: provider.wait_turn(),
                claimed_until,
            };
            let me = self.clone();
            self.workers.spawn_with_slot(move |slot| async move {
                let id = row.id;
                me.poll_in_background(&provider, row, slot, turn).await;
                me.in_flight.lock().expect("in-flight lock").remove(&id);
            });
        }
        Ok(claimed)
    }

    /// One round, waited for: claims what is due, polls it, and returns once every poll is
    /// recorded. Lets tests drive the dispatcher step by step.
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, StorageError> {
        let claimed = self.step().await?;
        self.workers.idle().await;
        Ok(claimed)
    }

    /// Stops polling a shipment that can never be polled as it stands, with the reason.
    async fn flag_invalid(
        &self,
        row: ShipmentRow,
        why: Unpollable,
        now: Millis,
    ) -> Result<(), StorageError> {
        let reason = why.to_string();
        warn!(order_id = %row.order_id, provider = %row.provider, tier = %row.tier, %reason, "shipment invalid");
        self.db
            .mark_invalid(row.id, why.kind(), &reason, now)
            .await?;
        self.events.emit(PipelineEvent::ShipmentInvalid {
            order_id: row.order_id,
            reason,
        });
        Ok(())
    }

    /// Rechecks the shipments flagged for a provider the config did not define and that it
    /// defines now, reviving those that are fine: at start and after a reload.
    pub async fn revive_known_providers(&self) -> Result<usize, StorageError> {
        pollable::revive_known_providers(&self.db, &self.providers(), self.clock.now()).await
    }

    /// Polls `row` in a worker slot, freed as soon as the answer is handed to the writer: the
    /// next poll's request goes out while this one is written (the shipment stays claimed until
    /// then).
    async fn poll_in_background(
        &self,
        provider: &ProviderRuntime,
        row: ShipmentRow,
        slot: Slot,
        turn: Turn,
    ) {
        let released = tokio::select! {
            biased;
            _ = self.workers.aborted() => true,
            outcome = self.poll_in(provider, &row, Some(slot), Some(turn)) => {
                match outcome {
                    Err(e) => {
                        // The shipment stays due: its poll is repeated once the database is
                        // writable.
                        Outage::database().failed(&format!("recording a poll of order {}", row.order_id), &e);
                    }
                    Ok(PollOutcome::TakenOver) => {
                        info!(order_id = %row.order_id, provider = %provider.name, "poll left to the daemon that took the shipment over");
                    }
                    Ok(_) => {}
                }
                false
            }
        };
        if released {
            // Shutdown cut the poll short: give the shipment back as it was.
            if let Err(e) = self.db.release_shipment(row.id).await {
                error!(order_id = %row.order_id, error = %e, "could not release shipment");
            }
        }
    }

    /// Polls one shipment now, through its provider's token bucket, and records the result.
    pub async fn poll(
        &self,
        provider: &ProviderRuntime,
        row: &ShipmentRow,
    ) -> Result<PollOutcome, StorageError> {
        self.poll_in(provider, row, None, None).await
    }

    /// How long a claim lasts, renewed: the lease, and never less than a poll's timeout.
    fn claim_lease(&self) -> std::time::Duration {
        self.polling.lease.max(self.polling.timeout)
    }

    /// Renews the claim on shipment `id` for a lease from now, while it is still the one ending
    /// at `held`: its new end, or None once another daemon has taken the shipment (or the claim
    /// was given back).
    async fn renew_claim(&self, id: i64, held: Millis) -> Result<Option<Millis>, StorageError> {
        let until = self.clock.now() + millis(self.claim_lease());
        let renewed = self.db.renew_shipment_claim(id, held, until).await?;
        Ok(renewed.then_some(until))
    }

    async fn poll_in(
        &self,
        provider: &ProviderRuntime,
        row: &ShipmentRow,
        slot: Option<Slot>,
        turn: Option<Turn>,
    ) -> Result<PollOutcome, StorageError> {
        // Time spent waiting for the quota: its sum per provider shows how far behind the quota
        // keeps the daemon.
        let waited = tokio::time::Instant::now();
        // The claim is kept while the poll waits: on a shared database the other daemons' turns
        // in a shared quota make waits longer than the lease this daemon sized its queue by.
        let mut claimed_until = turn.as_ref().map(|turn| turn.claimed_until);
        let came = match claimed_until.as_mut() {
            Some(held) if provider.limiter.is_limited() => {
                let times = (self.claim_lease(), self.polling.timeout);
                let renew = |held| self.renew_claim(row.id, held);
                let turn = provider.limiter.acquire();
                wait_keeping_claim(turn, &self.clock, held, times, renew)
                    .await
                    .map(|came| came.is_some())
            }
            _ => {
                provider.limiter.acquire().await;
                Ok(true)
            }
        };
        if let Some(Turn { waiting, .. }) = turn {
            let was_full = provider.room(&self.polling) == 0;
            drop(waiting);
            if was_full {
                // The bucket took all it could: its next shipment may start waiting now.
                self.workers.nudge();
            }
        }
        if !came? {
            return Ok(PollOutcome::TakenOver);
        }
        metrics::histogram!("shipwatch_rate_limit_wait_seconds", "provider" => provider.name.clone())
            .record(waited.elapsed().as_secs_f64());
        let now = self.clock.now();
        if provider.is_paused(now) {
            self.db.release_shipment(row.id).await?;
            return Ok(PollOutcome::Skipped);
        }
        if let Some(held) = claimed_until
            && held <= now + millis(self.polling.timeout)
            && self.renew_claim(row.id, held).await?.is_none()
        {
            // The claim could run out before the answer is recorded, and is renewed first;
            // taken over already, the call is not made: one poll each.
            return Ok(PollOutcome::TakenOver);
        }
        if let Some(subscriber) = &provider.push
            && let Some(outcome) = Box::pin(self.push_turn(provider, subscriber, row)).await?
        {
            return Ok(outcome);
        }
        let request = track_request(row);
        let result = match tokio::time::timeout(
            self.polling.timeout,
            provider.adapter.fetch(&request),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Transient(format!(
                "no answer within {}",
                humantime::format_duration(self.polling.timeout)
            ))),
        };
        self.apply_in(provider, row, result, slot).await
    }

    /// Records what a poll of `row` returned, as the daemon does after every poll.
    pub async fn apply(
        &self,
        provider: &ProviderRuntime,
        row: &ShipmentRow,
        result: Result<Trace, ProviderError>,
    ) -> Result<PollOutcome, StorageError> {
        self.apply_in(provider, row, result, None).await
    }

    /// [`Dispatcher::apply`], freeing `slot` once a trace is handed to the writer.
    async fn apply_in(
        &self,
        provider: &ProviderRuntime,
        row: &ShipmentRow,
        result: Result<Trace, ProviderError>,
        slot: Option<Slot>,
    ) -> Result<PollOutcome, StorageError> {
        let now = self.clock.now();
        let tier = row.tier;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ProviderError::Transient(_)) => "transient",
            Err(ProviderError::RateLimited { .. }) => "rate_limited",
            Err(ProviderError::AuthExpired(_)) => "auth_expired",
            Err(ProviderError::Config(_)) => "config",
            Err(ProviderError::NotFound(_)) => "not_found",
            Err(ProviderError::Permanent(_)) => "permanent",
            Err(ProviderError::Unconfirmed(_)) => "unconfirmed",
        };
        metrics::counter!("shipwatch_polls_total", "provider" => provider.name.clone(), "result" => outcome)
            .increment(1);
        self.tally.count(&provider.name, outcome);
        let trace = match result {
            Ok(trace) => trace,
            Err(error) => {
                Box::pin(self.failed(provider, row, &error, now)).await?;
                return Ok(PollOutcome::Failed(error));
            }
        };
        let next_poll_at = match &provider.push {
            Some(subscriber) => push::next_look(provider, subscriber, now),
            None => self.next_poll_for(provider, now, tier),
        };
        self.record_trace(row, trace, now, next_poll_at, slot).await
    }

    /// Hands a trace of `row` to the writer (`track` decides what changes), frees `slot` once
    /// it is handed, and tells of the change once it is written: the same for a poll's answer
    /// and a pushed one.
    async fn record_trace(
        &self,
        row: &ShipmentRow,
        trace: Trace,
        now: Millis,
        next_poll_at: Millis,
        slot: Option<Slot>,
    ) -> Result<PollOutcome, StorageError> {
        let tier = row.tier;
        let (status, raw_status) = (trace.status, trace.raw_status.clone());
        let handed = self
            .db
            .writer()
            .record_poll((
                row.id,
                Box::new(Finished {
                    trace,
                    now,
                    next_poll_at,
                    channels: self.channels.clone(),
                }),
            ))
            .await?;
        drop(slot);
        let recorded = handed.written().await?;
        match recorded.change {
            Some((from, to)) => {
                info!(
                    order_id = %row.order_id, provider = %row.provider, tier = %tier,
                    from = %from, to = %to, raw_status = %raw_status,
                    notifications = recorded.queued.len(), "status changed"
                );
                self.events.emit(PipelineEvent::StatusChanged {
                    order_id: row.order_id.clone(),
                    provider: row.provider.clone(),
                    tier,
                    from,
                    to,
                    raw_status,
                });
            }
            None => debug!(
                order_id = %row.order_id, provider = %row.provider, tier = %tier,
                %status, new_events = recorded.new_events, "polled"
            ),
        }
        Ok(PollOutcome::Recorded(recorded))
    }

    /// Claims and polls until `stop` fires, then lets in-flight polls finish within `grace`
    /// and gives back whatever is still unfinished after that.
    pub async fn run(self: Arc<Self>, stop: CancellationToken, grace: Grace) {
        if let Err(e) = self.load_bans().await {
            error!(error = %e, "could not read provider bans");
        }
        if let Err(e) = self.revive_known_providers().await {
            error!(error = %e, "could not recheck the shipments flagged for an unknown provider");
        }
        let me = &self;
        self.workers
            .feed(&stop, || async move {
                if let Err(e) = me.refresh_bans().await {
                    debug!(error = %e, "could not read the bans other daemons stored");
                }
                match me.step().await {
                    // More may be due: claim again as soon as a slot is free, rather than
                    // after the idle wait. Claiming nothing writes nothing, so only a claim
                    // proves the database writable.
                    Ok(claimed) if claimed > 0 => {
                        me.heartbeat.beat();
                        me.tally.flush_if_due(&me.db, me.clock.now()).await;
                        Duration::ZERO
                    }
                    Ok(_) => {
                        me.heartbeat.beat();
                        me.tally.flush_if_due(&me.db, me.clock.now()).await;
                        me.idle_wait().await
                    }
                    Err(e) => {
                        Outage::database().failed("claiming due shipments", &e);
                        // Waiting for the database is not being wedged: a watchdog restart
                        // would not make it writable. `/healthz` reports the outage.
                        me.heartbeat.beat();
                        me.polling.scan_interval
                    }
                }
            })
            .await;
        self.workers
            .drain(&grace, tokio::time::Instant::now(), "polls")
            .await;
        // What was claimed ahead and never started is due again at once.
        let unstarted: Vec<ShipmentRow> = self
            .ahead
            .lock()
            .expect("claimed-ahead lock")
            .drain(..)
            .map(|(row, _)| row)
            .collect();
        for row in unstarted {
            if let Err(e) = self.db.release_shipment(row.id).await {
                error!(order_id = %row.order_id, error = %e, "could not release shipment");
            }
        }
        if let Err(e) = self.tally.flush(&self.db, self.clock.now()).await {
            error!(error = %e, "could not record the last poll counts");
        }
    }

    /// How long to sleep when nothing more is due now: until the next due shipment, at most one
    /// scan interval (rows inserted by other programs are found at the next scan).
    async fn idle_wait(&self) -> Duration {
        let now = self.clock.now();
        let longest = self.polling.scan_interval.min(Duration::from_millis(
            self.max_idle_ms.load(Ordering::Relaxed),
        ));
        match self.db.next_due_at(&self.held_back(now), now).await {
            Ok(Some(at)) if at > now => Duration::from_millis((at - now) as u64).min(longest),
            Ok(Some(_)) => Duration::from_millis(10).min(longest),
            _ => longest,
        }
    }

    /// Caps how long an idle round sleeps: a watchdog that expects a ping every `interval`
    /// needs a completed round at least that often, however long the scan interval.
    pub fn cap_idle_wait(&self, longest: Duration) {
        self.max_idle_ms
            .store(longest.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Polls under way, for the daemon's heartbeat in the database.
    pub fn polls_in_flight(&self) -> usize {
        self.in_flight.lock().expect("in-flight lock").len()
    }

    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    pub fn provider(&self, name: &str) -> Option<Arc<ProviderRuntime>> {
        self.providers().get(name).cloned()
    }
}

/// What an adapter needs to know about a shipment.
pub fn track_request(row: &ShipmentRow) -> TrackRequest {
    TrackRequest {
        order_id: row.order_id.clone(),
        tracking_no: row.tracking_no.clone(),
        carrier: row.carrier.clone(),
        phone: row.phone.clone(),
        sub_orders: row.sub_orders.clone(),
        created_at: row.created_at,
    }
}
