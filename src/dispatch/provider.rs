//! A configured provider as the dispatcher holds it: its adapter, its quota's token bucket
//! (kept across a reload) and its pause.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Millis;
use crate::config::{Polling, RateLimit};
use crate::limiter::Limiter;
use crate::providers::Provider;

use super::turns::{Waiting, waiting_cap};

/// A configured provider with its quota and its pause.
pub struct ProviderRuntime {
    pub name: String,
    pub adapter: Arc<dyn Provider>,
    /// Shared with the runtime a reload replaces, retuned when the quota changed
    /// ([`ProviderRuntime::keep_bucket_of`]).
    pub(super) limiter: Arc<Limiter>,
    /// The quota the bucket was made for, which a reload compares.
    rate_limit: Option<RateLimit>,
    /// No shipment of this provider is polled more often than this, whatever its tier.
    pub(super) min_interval: Duration,
    paused_until: Mutex<Option<Millis>>,
    /// Polls started and still waiting for the bucket (see [`waiting_cap`]).
    waiting: Arc<AtomicUsize>,
    /// Kuaidi100 subscription push (`mode = "push"`): shipments are subscribed instead of
    /// queried, and queried only as `fallback_poll` says.
    pub push: Option<Arc<crate::providers::kuaidi100_push::Subscriber>>,
}

impl ProviderRuntime {
    pub fn new(name: &str, adapter: Arc<dyn Provider>, rate_limit: Option<RateLimit>) -> Self {
        ProviderRuntime {
            name: name.to_owned(),
            min_interval: adapter.min_interval(),
            // Every answer from upstream is cut to its documented bounds before it is used.
            adapter: Arc::new(crate::providers::Bounded(adapter)),
            limiter: Arc::new(
                Limiter::new(rate_limit.map(|l| l.interval()))
                    .with_window(rate_limit.map_or(Duration::ZERO, |l| l.per)),
            ),
            rate_limit,
            paused_until: Mutex::new(None),
            waiting: Arc::new(AtomicUsize::new(0)),
            push: None,
        }
    }

    /// The provider in push mode, subscribing through `subscriber`.
    pub fn with_push(
        mut self,
        subscriber: Option<crate::providers::kuaidi100_push::Subscriber>,
    ) -> Self {
        self.push = subscriber.map(Arc::new);
        self
    }

    pub fn with_min_interval(mut self, min_interval: Duration) -> Self {
        self.min_interval = min_interval;
        self
    }

    /// Pauses the provider until `until`; true when it was not paused already (so that a pause
    /// is reported once, not once per poll that was in flight).
    pub(super) fn pause_until(&self, until: Millis, now: Millis) -> bool {
        let mut paused = self.paused_until.lock().expect("pause lock");
        let was_paused = paused.is_some_and(|p| p > now);
        *paused = Some(paused.map_or(until, |p| p.max(until)));
        !was_paused
    }

    pub(super) fn is_paused(&self, now: Millis) -> bool {
        self.paused_until
            .lock()
            .expect("pause lock")
            .is_some_and(|until| until > now)
    }

    /// Takes over `old`'s bucket, and its count of waiting polls, across a reload: the polls
    /// waiting in it go on in their turns, and the next call keeps its distance from the last.
    /// With a bucket of its own, empty, a reloaded provider called at once while the old bucket's
    /// polls went on at the quota's pace: twice the quota for a while. A changed `rate_limit` is
    /// applied to the bucket in place ([`Limiter::retune`]), waiting polls included.
    pub(super) fn keep_bucket_of(&mut self, old: &ProviderRuntime) {
        if self.rate_limit != old.rate_limit {
            let shown =
                |limit: Option<RateLimit>| limit.map_or("none".to_owned(), |l| l.to_string());
            tracing::info!(
                provider = %self.name,
                from = %shown(old.rate_limit),
                to = %shown(self.rate_limit),
                "rate_limit changed; the polls waiting for their turns go at the new pace"
            );
            old.limiter.retune(
                self.rate_limit.map(|l| l.interval()),
                self.rate_limit.map_or(Duration::ZERO, |l| l.per),
            );
        }
        self.limiter = old.limiter.clone();
        self.waiting = old.waiting.clone();
    }

    /// Counts a poll among those waiting for the bucket until the guard is dropped.
    pub(super) fn wait_turn(&self) -> Waiting {
        Waiting::enter(&self.waiting)
    }

    /// How many more polls may wait for the bucket now ([`waiting_cap`]): none once as many wait
    /// as its quota serves while their claims last, since another would outwait its claim.
    pub(super) fn room(&self, polling: &Polling) -> usize {
        waiting_cap(self.limiter.interval(), polling.lease)
            .saturating_sub(self.waiting.load(Ordering::Relaxed))
    }
}
