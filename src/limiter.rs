//! The token bucket that keeps calls within a quota: one per provider (the upstream's quota) and
//! one per group robot (DingTalk's messages a minute). A shared leaf, so that polling and delivery
//! both use it without importing each other.
//!
//! When several daemons share one database (PostgreSQL), a provider's quota is theirs together:
//! its bucket then takes its slots from a schedule they share ([`SharedQuota`]), a few at a time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

/// Upstream counts calls as they arrive, and arrivals bunch up when the network or this machine
/// delays some requests more than others: pacing at exactly the quota would then exceed it. So
/// the pace keeps this share of the quota in reserve.
pub const HEADROOM: f64 = 0.02;

/// How late a waiter may wake and still leave on its own slot: tokio's timer fires on whole
/// milliseconds, so a wake a little after its slot is the timer, not a stall. A later wake moves
/// the following slots on rather than letting them catch up.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// How much of the quota's time one grant from a shared schedule covers: small, so that one
/// daemon cannot hoard the quota and the slots it leaves unused waste little; large enough that
/// the database is asked a few times a second at most, not once a call.
pub const GRANT_SPAN: Duration = Duration::from_millis(100);

/// The most slots one grant holds, however fast the quota.
const MAX_GRANT: u32 = 1_000;

/// How long the bucket waits before asking a shared schedule again after it could not be reached:
/// doubling from the first to the last, then every `RETRY_MAX` until it answers.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A run of call slots granted from a schedule shared with other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The first slot, in microseconds of the keeper's clock (the database server's).
    pub first_slot_us: i64,
    /// The keeper's clock when it made the grant, which places its clock against ours.
    pub keeper_now_us: i64,
    pub count: u32,
    /// The spacing of the slots, as the keeper counted them.
    pub interval: Duration,
}

/// Future of a grant from a [`SharedQuota`].
pub type GrantFuture<'a> = Pin<Box<dyn Future<Output = Result<Granted, GrantError>> + Send + 'a>>;

/// Why the shared schedule gave a bucket (a provider's, a paced channel's) no slots: its keeper,
/// the database, did not answer.
/// The keeper's error is told in the text, and only there (not also as the error's `source`), so
/// that a reporter walking the chain does not print it twice.
#[derive(Debug, thiserror::Error)]
#[error("quota {schedule}: {reason}")]
pub struct GrantError {
    /// The schedule's key: the provider's name, or `channel:` and the channel's kind.
    pub schedule: String,
    pub reason: Box<dyn std::error::Error + Send + Sync>,
}

/// A schedule of call slots shared with other processes (a row in the shared database): a grant
/// takes the next `count` slots, `interval` apart, for this process alone.
pub trait SharedQuota: Send + Sync {
    fn grant(&self, interval: Duration, count: u32) -> GrantFuture<'_>;
}

/// A token bucket holding one token, refilled every `per / (calls × 0.98)`: calls are spaced
/// evenly, so no window of the quota's length sees more than 98% of the quota leave (plus the
/// one call at its edge), however large the backlog; the rest absorbs jitter on the way. Waiters
/// go one at a time, and the next slot is counted from when the last waiter really left: when the
/// process stalls (a busy machine, a paused VM), the waiters it held back leave spaced out as
/// ever, not all at once when it resumes. Built on tokio's clock so that tests can pause time.
///
/// Shared ([`Limiter::share`]), the slots come from the shared schedule instead, in grants sized
/// by [`grant_size`]; a slot is never taken early, and one missed by more than its window's
/// headroom allows ([`late_allowed`]) is lost, never made up later.
pub struct Limiter {
    /// The spacing in nanoseconds; zero without a quota. Changed in place by
    /// [`Limiter::retune`].
    interval_ns: AtomicU64,
    /// The quota's window (a second for `20/s`), in nanoseconds: what a shared slot's lateness is
    /// measured by.
    window_ns: AtomicU64,
    /// The slot the last caller was given and when it left, from which the next slot is counted
    /// at the pace of the moment.
    last: Mutex<Option<(Instant, Instant)>>,
    /// Wakes the waiters when the pace changes, so that the one asleep on its slot counts it again.
    retuned: Notify,
    shared: OnceLock<Shared>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("interval", &self.interval())
            .field("shared", &self.shared.get().is_some())
            .finish()
    }
}

/// A limiter's side of a shared schedule: the slots of its current grant, and how many callers
/// wait, which sizes the next grant.
struct Shared {
    source: Arc<dyn SharedQuota>,
    slots: Mutex<Slots>,
    waiting: AtomicUsize,
    offset: std::sync::Mutex<Option<ClockOffset>>,
}

/// The slots of the current grant, and how late each may still be taken.
#[derive(Default)]
struct Slots {
    queue: VecDeque<Instant>,
    /// The pace they were granted at.
    interval: Duration,
    late_allowed: Duration,
}

/// Where the keeper's clock stands against ours: its time `keeper_us` was our `local`, give or
/// take `uncertainty` (half the round trip of the grant that told us), as read at `local`.
/// Every grant's slots are placed by the best such reading rather than by the grant's own round
/// trip, so that a grant slow to come back does not push its slots onto the next daemon's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    pub local: Instant,
    pub keeper_us: i64,
    pub uncertainty: Duration,
}

/// How fast a reading of the keeper's clock loses its worth: 100 µs a second, far more than two
/// clocks drift apart.
const DRIFT_PER_SEC: Duration = Duration::from_micros(100);

impl ClockOffset {
    /// The reading of a grant asked at `sent` and answered at `received`, the keeper's clock
    /// reading `keeper_us` in between.
    pub fn sample(sent: Instant, received: Instant, keeper_us: i64) -> ClockOffset {
        let half = received.saturating_duration_since(sent) / 2;
        ClockOffset {
            local: sent + half,
            keeper_us,
            uncertainty: half,
        }
    }

    /// The better of `self` and a newer `sample`: the one with the smaller uncertainty, `self`'s
    /// growing with its age.
    pub fn better(self, sample: ClockOffset) -> ClockOffset {
        let age = sample.local.saturating_duration_since(self.local);
        if sample.uncertainty <= self.uncertainty + DRIFT_PER_SEC.mul_f64(age.as_secs_f64()) {
            sample
        } else {
            self
        }
    }

    /// Our instant for the keeper's time `keeper_us`.
    pub fn local_at(&self, keeper_us: i64) -> Instant {
        let delta = keeper_us.saturating_sub(self.keeper_us);
        let magnitude = Duration::from_micros(delta.unsigned_abs());
        if delta >= 0 {
            self.local + magnitude
        } else {
            self.local.checked_sub(magnitude).unwrap_or(self.local)
        }
    }
}

impl Limiter {
    /// `spacing` is the quota's own spacing between two calls (a minute / 20 for 20 a minute);
    /// `None` for no quota.
    pub fn new(spacing: Option<Duration>) -> Self {
        Limiter {
            interval_ns: AtomicU64::new(nanos(paced(spacing))),
            window_ns: AtomicU64::new(0),
            last: Mutex::new(None),
            retuned: Notify::new(),
            shared: OnceLock::new(),
        }
    }

    /// The quota's window (`per` of `calls/per`), which bounds how late a shared slot may be
    /// taken; without it, a single interval is assumed, the strictest.
    pub fn with_window(self, window: Duration) -> Self {
        self.window_ns.store(nanos(window), Ordering::Relaxed);
        self
    }

    /// Changes the quota in place (a reload that changed `rate_limit`): the next call is spaced
    /// from the last one at the new pace, the caller already waiting for its slot included, so
    /// that no window sees more calls than the stricter of the two quotas allows around the change
    /// and none waits on at the old pace. Slots already granted from a shared schedule at the old
    /// pace are given up. A bucket without a quota lets its waiters go at once.
    pub fn retune(&self, spacing: Option<Duration>, window: Duration) {
        self.window_ns.store(nanos(window), Ordering::Relaxed);
        self.interval_ns
            .store(nanos(paced(spacing)), Ordering::Relaxed);
        self.retuned.notify_waiters();
    }

    /// The bucket's spacing between two calls (the quota's, stretched by the headroom); zero
    /// without a quota.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns.load(Ordering::Relaxed))
    }

    /// The quota's window given by [`Limiter::with_window`] (zero without one).
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window_ns.load(Ordering::Relaxed))
    }

    /// True when the bucket limits anything.
    pub fn is_limited(&self) -> bool {
        self.interval_ns.load(Ordering::Relaxed) != 0
    }

    /// From now on the bucket takes its slots from `source`, a schedule shared with other
    /// processes, instead of pacing alone. A bucket without a quota, or shared already, stays as
    /// it is.
    pub fn share(&self, source: Arc<dyn SharedQuota>) {
        if self.is_limited() {
            let _ = self.shared.set(Shared {
                source,
                slots: Mutex::new(Slots::default()),
                waiting: AtomicUsize::new(0),
                offset: std::sync::Mutex::new(None),
            });
        }
    }

    /// Waits for this caller's slot. Waiters queue on the bucket in turn (tokio's mutex is
    /// fair); one cancelled while waiting leaves its slot to the next.
    pub async fn acquire(&self) {
        if !self.is_limited() {
            return;
        }
        if let Some(shared) = self.shared.get() {
            return self.acquire_shared(shared).await;
        }
        let mut last = self.last.lock().await;
        loop {
            let (retuned, interval) = self.pace();
            if interval.is_zero() {
                return;
            }
            let now = Instant::now();
            let slot = last.map_or(now, |(slot, left)| next_slot(slot, left, interval).max(now));
            tokio::select! {
                () = tokio::time::sleep_until(slot) => {
                    *last = Some((slot, Instant::now()));
                    return;
                }
                () = retuned => {}
            }
        }
    }

    /// The spacing of the moment, with a wake for the next [`Limiter::retune`], registered
    /// before the spacing is read so that no change between the two goes unnoticed.
    fn pace(&self) -> (Pin<Box<Notified<'_>>>, Duration) {
        let mut retuned = Box::pin(self.retuned.notified());
        retuned.as_mut().enable();
        (retuned, self.interval())
    }

    async fn acquire_shared(&self, shared: &Shared) {
        let _waiting = Waiting::enter(&shared.waiting);
        let mut slots = shared.slots.lock().await;
        loop {
            let (retuned, interval) = self.pace();
            if interval.is_zero() {
                return;
            }
            if slots.interval != interval {
                // Granted at another pace: given up, the next grant is at the new one.
                slots.queue.clear();
            }
            let Some(&slot) = slots.queue.front() else {
                let waiting = shared.waiting.load(Ordering::Relaxed);
                *slots = self.take_grant(shared, interval, waiting).await;
                continue;
            };
            if !in_time(slot, Instant::now(), slots.late_allowed) {
                slots.queue.pop_front();
                continue;
            }
            // Cancelled while asleep, the slot stays for the next waiter.
            tokio::select! {
                () = tokio::time::sleep_until(slot) => {}
                () = retuned => continue,
            }
            slots.queue.pop_front();
            // A wake later than the slot allows (a stall) loses it: taken late, it would crowd
            // the slots other processes hold after it.
            if in_time(slot, Instant::now(), slots.late_allowed) {
                return;
            }
        }
    }

    /// The next grant from the shared schedule, as instants of this process. While the schedule
    /// cannot be reached (the database is down) no call leaves: a call made without a grant
    /// would spend quota that the other processes cannot account for. So the bucket asks again,
    /// spaced out, until it answers, and the caller waits meanwhile.
    async fn take_grant(&self, shared: &Shared, interval: Duration, waiting: usize) -> Slots {
        let mut retry = RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            let count = grant_size(interval, waiting);
            let sent = Instant::now();
            match shared.source.grant(interval, count).await {
                Ok(granted) => {
                    if failures > 0 {
                        tracing::info!(failures, "the shared quota answers again");
                    }
                    let sample = ClockOffset::sample(sent, Instant::now(), granted.keeper_now_us);
                    let mut offset = shared.offset.lock().unwrap_or_else(|e| e.into_inner());
                    let best = offset.map_or(sample, |best| best.better(sample));
                    *offset = Some(best);
                    return Slots {
                        queue: local_slots(&best, &granted),
                        interval,
                        late_allowed: late_allowed(interval, self.window(), best.uncertainty),
                    };
                }
                Err(error) => {
                    if failures == 0 {
                        tracing::warn!(%error, "cannot take slots from the shared quota; calls wait until it answers");
                    } else {
                        tracing::debug!(%error, failures, "the shared quota still does not answer");
                    }
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// The bucket's spacing for a quota's own `spacing`: stretched by [`HEADROOM`]; zero for none.
fn paced(spacing: Option<Duration>) -> Duration {
    spacing.map_or(Duration::ZERO, |s| s.div_f64(1.0 - HEADROOM))
}

/// A duration in whole nanoseconds, as the bucket keeps it (saturating: 584 years).
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Counts a caller among the waiters for as long as it waits (cancelled too).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many slots to ask a shared schedule for: enough for [`GRANT_SPAN`] of the quota, at least
/// one, and no more than the callers waiting for them (`waiting`), since unused slots are lost.
pub fn grant_size(interval: Duration, waiting: usize) -> u32 {
    let span = if interval.is_zero() {
        u128::from(MAX_GRANT)
    } else {
        GRANT_SPAN.as_nanos().div_ceil(interval.as_nanos())
    };
    let waiting = u128::try_from(waiting).unwrap_or(u128::MAX);
    let size = span.min(waiting).clamp(1, u128::from(MAX_GRANT));
    u32::try_from(size).unwrap_or(MAX_GRANT)
}

/// A grant's slots as this process's instants, placed by `offset` and put off by its uncertainty,
/// so that none is taken before its time on the keeper's clock, whichever way the reading errs
/// (slots that have passed by the time they are reached are dropped then, see [`in_time`]).
pub fn local_slots(offset: &ClockOffset, granted: &Granted) -> VecDeque<Instant> {
    let first = offset.local_at(granted.first_slot_us) + offset.uncertainty;
    (0..granted.count)
        .map(|i| first + granted.interval * i)
        .collect()
}

/// How late a shared slot may be taken, on the keeper's clock: the slots are spaced with
/// [`HEADROOM`] (`interval` is the quota's spacing / 0.98), so a window of the quota (`window`)
/// holds no more slots than the quota allows even when stretched by the headroom's share of it:
/// calls never leave before their slots, and each leaves less than `window × HEADROOM` after its
/// slot, so no window holds more calls than the quota. The placement's error (up to twice the
/// reading's `uncertainty`: put off by one, off by one more either way) comes out of it; and never
/// more than half an interval. Zero (only a wake on time leaves) when the reading is too poor.
pub fn late_allowed(interval: Duration, window: Duration, uncertainty: Duration) -> Duration {
    let window = window.max(interval);
    (window.mul_f64(HEADROOM).min(interval / 2)).saturating_sub(uncertainty * 2)
}

/// True when a caller at `now` may still leave on `slot`, up to `late` after it.
fn in_time(slot: Instant, now: Instant, late: Duration) -> bool {
    now <= slot + late
}

/// The slot after one planned for `slot` that was left at `left`: a whole interval on, counted
/// from the slot when the wake was on time (within [`TIMER_SLACK`]), from the leaving otherwise.
fn next_slot(slot: Instant, left: Instant, interval: Duration) -> Instant {
    let slack = TIMER_SLACK.min(interval / 2);
    (slot + interval).max(left + interval - slack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_logs::Logs;
    use std::sync::Arc;

    #[test]
    fn a_grant_error_tells_the_keepers_error_once() {
        let e = GrantError {
            schedule: "taobao".to_owned(),
            reason: "database is locked".into(),
        };
        assert_eq!(e.to_string(), "quota taobao: database is locked");
        // A reporter that walks the chain (`{:#}` of anyhow) adds nothing to the text.
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "quota taobao: database is locked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_to_the_quota() {
        let limiter = Arc::new(Limiter::new(Some(Duration::from_millis(100))));
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..1200 {
            let limiter = limiter.clone();
            handles.push(tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for h in handles {
            times.push(h.await.unwrap() - start);
        }
        times.sort();
        // 1200 calls at 600/min, paced at 98% of it, take just over two minutes; every minute
        // holds 588 or 589 of them: the quota used to 98%, never more.
        assert_eq!(times[0], Duration::ZERO);
        let spacing = Duration::from_millis(100).div_f64(0.98);
        let last = times[1199].as_secs_f64();
        assert!(
            (last - spacing.as_secs_f64() * 1199.0).abs() < 0.001,
            "{last}"
        );
        for (i, t) in times.iter().enumerate().take(600) {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_secs(60))
                .count();
            assert!(
                (588..=589).contains(&in_window),
                "{in_window} calls within a minute from {t:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_held_back_by_a_stall_leave_spaced_out_not_together() {
        let interval = Duration::from_millis(100).div_f64(1.0 - HEADROOM);
        let limiter = Arc::new(Limiter::new(Some(Duration::from_millis(100))));
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..5 {
            let (limiter, tx) = (limiter.clone(), tx.clone());
            tokio::spawn(async move {
                limiter.acquire().await;
                tx.send(Instant::now()).unwrap();
            });
        }
        drop(tx);
        tokio::task::yield_now().await;
        // The first leaves at once; then the process stalls for a second and a half, past the
        // slots of all the others.
        let first = rx.recv().await.unwrap();
        assert_eq!(first, start);
        tokio::time::advance(Duration::from_millis(1500)).await;
        let mut left = vec![first];
        for _ in 0..4 {
            left.push(rx.recv().await.unwrap());
        }
        for pair in left.windows(2) {
            assert!(
                pair[1] - pair[0] >= interval - TIMER_SLACK,
                "two calls {:?} apart after the stall: {left:?}",
                pair[1] - pair[0]
            );
        }
    }

    #[test]
    fn a_wake_late_by_the_timer_keeps_the_schedule_and_a_stall_moves_it() {
        let slot = Instant::now();
        let interval = Duration::from_millis(100);
        let on_time = next_slot(slot, slot + Duration::from_millis(1), interval);
        assert_eq!(on_time, slot + interval);
        let stalled = next_slot(slot, slot + Duration::from_millis(500), interval);
        assert_eq!(stalled, slot + Duration::from_millis(598));
        // An interval shorter than the slack keeps half of it.
        let short = Duration::from_millis(2);
        assert_eq!(
            next_slot(slot, slot + Duration::from_millis(10), short),
            slot + Duration::from_millis(11)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_means_no_wait() {
        let limiter = Limiter::new(None);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_does_not_save_up_a_burst() {
        let limiter = Limiter::new(Some(Duration::from_secs(1)));
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        // One spacing, not two: the idle time bought no burst (tokio's timer counts whole ms).
        let waited = Instant::now() - start;
        let spacing = Duration::from_secs(1).div_f64(1.0 - HEADROOM);
        assert!(
            waited >= spacing && waited < spacing + Duration::from_millis(2),
            "{waited:?}"
        );
    }

    /// Callers always waiting on `limiter` until `until`, each call's time since `start` sent.
    fn callers(
        limiter: &Arc<Limiter>,
        count: usize,
        start: Instant,
        until: Duration,
    ) -> tokio::sync::mpsc::UnboundedReceiver<Duration> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..count {
            let (limiter, tx) = (limiter.clone(), tx.clone());
            tokio::spawn(async move {
                for _ in 0..CALLS_AT_MOST {
                    if Instant::now() - start >= until {
                        return;
                    }
                    limiter.acquire().await;
                    if tx.send(Instant::now() - start).is_err() {
                        return;
                    }
                }
            });
        }
        rx
    }

    /// Each caller's calls at the most: far more than any quota of these tests lets through,
    /// so a limiter that stops waiting fails its test on the count instead of spinning it
    /// forever at one paused instant.
    const CALLS_AT_MOST: usize = 1_000;

    async fn times(mut rx: tokio::sync::mpsc::UnboundedReceiver<Duration>) -> Vec<Duration> {
        let mut times = Vec::new();
        while let Some(t) = rx.recv().await {
            times.push(t);
        }
        times.sort();
        times
    }

    #[tokio::test(start_paused = true)]
    async fn a_retuned_bucket_counts_the_next_call_from_the_last_at_the_new_pace() {
        let limiter = Arc::new(Limiter::new(Some(Duration::from_millis(100))));
        let start = Instant::now();
        let rx = callers(&limiter, 10, start, Duration::from_secs(5));
        let (slow, fast) = (Duration::from_secs(1), Duration::from_millis(100));
        tokio::time::sleep_until(start + Duration::from_secs(1)).await;
        limiter.retune(Some(slow), slow);
        tokio::time::sleep_until(start + Duration::from_millis(3500)).await;
        limiter.retune(Some(fast), slow);
        let times = times(rx).await;

        let ms = |ms: u64| Duration::from_millis(ms);
        let before: Vec<_> = times.iter().filter(|t| **t < ms(1000)).collect();
        assert_eq!(before.len(), 10, "{times:?}");
        // Lowered: every call after the change keeps the new spacing from the one before it,
        // the caller already asleep on its old slot included.
        let spacing = slow.div_f64(1.0 - HEADROOM);
        let slowed: Vec<_> = times
            .iter()
            .filter(|t| (ms(1000)..ms(3500)).contains(*t))
            .collect();
        assert_eq!(slowed.len(), 2, "{times:?}");
        assert!(
            *slowed[0] - *before[9] >= spacing - TIMER_SLACK,
            "{times:?}"
        );
        assert!(
            *slowed[1] - *slowed[0] >= spacing - TIMER_SLACK,
            "{times:?}"
        );
        // Raised: the caller asleep until a second after the last call leaves at once, as the
        // new spacing from the last call has passed, and the rest follow at the new pace.
        let raised: Vec<_> = times
            .iter()
            .filter(|t| (ms(3500)..ms(5000)).contains(*t))
            .collect();
        assert_eq!(*raised[0], ms(3500), "{times:?}");
        let fast_spacing = fast.div_f64(1.0 - HEADROOM);
        for pair in raised.windows(2) {
            assert!(
                *pair[1] - *pair[0] >= fast_spacing - TIMER_SLACK,
                "{times:?}"
            );
        }
        assert!((14..=16).contains(&raised.len()), "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_retuned_to_no_quota_lets_its_waiters_go_at_once() {
        let limiter = Arc::new(Limiter::new(Some(Duration::from_secs(60))));
        limiter.acquire().await;
        let start = Instant::now();
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                limiter.acquire().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        limiter.retune(None, Duration::ZERO);
        assert!(!limiter.is_limited());
        assert_eq!(waiter.await.unwrap() - start, Duration::from_secs(1));
    }

    /// The keeper of a shared schedule, in memory: GCRA on tokio's clock, unreachable for the
    /// first `down` grants asked.
    #[derive(Default)]
    struct Keeper {
        /// When its clock read 10^12 µs: another clock than ours.
        epoch: std::sync::OnceLock<Instant>,
        next: std::sync::Mutex<Option<Instant>>,
        down: std::sync::atomic::AtomicU32,
        grants: std::sync::atomic::AtomicU32,
        /// How many slots the last grant asked for.
        last_count: std::sync::atomic::AtomicU32,
    }

    impl SharedQuota for Keeper {
        fn grant(&self, interval: Duration, count: u32) -> GrantFuture<'_> {
            Box::pin(async move {
                if self
                    .down
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
                    .is_ok()
                {
                    return Err(GrantError {
                        schedule: "taobao".to_owned(),
                        reason: std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                    });
                }
                // A limiter asking again and again without waiting would spin the test forever
                // at one paused instant; this ends it, and the test fails on what it counts.
                let asked = self.grants.fetch_add(1, Ordering::Relaxed);
                self.last_count.store(count, Ordering::Relaxed);
                assert!(asked < 10_000, "10,000 grants: the limiter asks in a loop");
                let now = Instant::now();
                let mut next = self.next.lock().unwrap();
                let first = next.map_or(now, |n| n.max(now));
                *next = Some(first + interval * count);
                let epoch = *self.epoch.get_or_init(Instant::now);
                let us = |t: Instant| 1_000_000_000_000 + (t - epoch).as_micros() as i64;
                Ok(Granted {
                    first_slot_us: us(first),
                    keeper_now_us: us(now),
                    count,
                    interval,
                })
            })
        }
    }

    fn shared_limiter(spacing: Duration, keeper: &Arc<Keeper>) -> Arc<Limiter> {
        // The quotas of these tests are so many a second.
        let limiter = Limiter::new(Some(spacing)).with_window(Duration::from_secs(1));
        limiter.share(keeper.clone());
        Arc::new(limiter)
    }

    #[tokio::test(start_paused = true)]
    async fn processes_sharing_a_schedule_keep_to_the_quota_together() {
        let keeper = Arc::new(Keeper::default());
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Three processes at 100 calls a second together, each with ten callers always waiting.
        for _ in 0..3 {
            let limiter = shared_limiter(Duration::from_millis(10), &keeper);
            for _ in 0..10 {
                let (limiter, tx) = (limiter.clone(), tx.clone());
                tokio::spawn(async move {
                    for _ in 0..CALLS_AT_MOST {
                        if Instant::now() - start >= Duration::from_secs(20) {
                            return;
                        }
                        limiter.acquire().await;
                        if tx.send(Instant::now() - start).is_err() {
                            return;
                        }
                    }
                });
            }
        }
        drop(tx);
        let mut times = Vec::new();
        while let Some(t) = rx.recv().await {
            if t < Duration::from_secs(20) {
                times.push(t);
            }
        }
        times.sort();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u - *t < Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 99,
                "{in_window} calls within a second from {t:?}"
            );
        }
        // 98 a second is the pace, and grants of about ten slots lose none at full demand.
        assert!(times.len() >= 1940, "{} calls in 20 s", times.len());
        let grants = keeper.grants.load(Ordering::Relaxed);
        assert!(
            (190..=210).contains(&grants),
            "{grants} grants for {} calls",
            times.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_granted_at_the_old_pace_are_given_up_when_the_quota_changes() {
        let keeper = Arc::new(Keeper::default());
        let limiter = shared_limiter(Duration::from_millis(10), &keeper);
        let start = Instant::now();
        let rx = callers(&limiter, 10, start, Duration::from_secs(2));
        // Within the first grant of ten slots, 10 ms apart.
        tokio::time::sleep_until(start + Duration::from_millis(45)).await;
        limiter.retune(Some(Duration::from_millis(100)), Duration::from_secs(1));
        let times = times(rx).await;

        let changed = Duration::from_millis(45);
        assert_eq!(
            times.iter().filter(|t| **t < changed).count(),
            5,
            "{times:?}"
        );
        let after: Vec<_> = times.iter().filter(|t| **t >= changed).collect();
        let spacing = Duration::from_millis(100).div_f64(1.0 - HEADROOM);
        // The first new grant starts where the keeper's schedule stood, after the old grant's
        // last slot; from then on the new pace.
        assert!(*after[0] >= Duration::from_millis(100), "{times:?}");
        for pair in after.windows(2) {
            assert!(*pair[1] - *pair[0] >= spacing - TIMER_SLACK, "{times:?}");
        }
        assert!(after.len() >= 17, "{times:?}");
    }

    /// A caller counts among the waiters only while it waits: once ten callers have had their
    /// calls, a lone one's grant is one slot, not ten that it would leave unused and lost to the
    /// other processes.
    #[tokio::test(start_paused = true)]
    async fn a_grant_is_sized_by_the_callers_still_waiting() {
        let keeper = Arc::new(Keeper::default());
        let limiter = shared_limiter(Duration::from_millis(10), &keeper);
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let limiter = limiter.clone();
            callers.spawn(async move { limiter.acquire().await });
        }
        while let Some(done) = callers.join_next().await {
            done.expect("a caller");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        limiter.acquire().await;
        assert_eq!(keeper.last_count.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_call_leaves_while_the_schedule_cannot_be_reached() {
        let keeper = Arc::new(Keeper::default());
        keeper.down.store(3, Ordering::Relaxed);
        let limiter = shared_limiter(Duration::from_millis(10), &keeper);
        let start = Instant::now();
        let (logs, _logging) = Logs::capture();
        limiter.acquire().await;
        // Asked again after 100, 200 and 400 ms, and the call left on the grant of the fourth.
        assert_eq!(Instant::now() - start, Duration::from_millis(700));
        assert_eq!(keeper.grants.load(Ordering::Relaxed), 1);
        // The next grant comes at the first asking, and says nothing.
        limiter.acquire().await;
        assert_eq!(keeper.grants.load(Ordering::Relaxed), 2);

        // The operator reads one warning when the schedule stops answering and one line when
        // it answers again; the askings between are for debugging.
        let text = logs.text();
        assert_eq!(
            logs.lines("WARN", "cannot take slots from the shared quota"),
            1,
            "{text}"
        );
        assert_eq!(logs.lines("WARN", "connection refused"), 1, "{text}");
        assert_eq!(
            logs.lines("DEBUG", "the shared quota still does not answer"),
            2,
            "{text}"
        );
        assert_eq!(
            logs.lines("INFO", "the shared quota answers again"),
            1,
            "{text}"
        );
        assert_eq!(logs.lines("INFO", "failures=3"), 1, "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn slots_missed_in_a_stall_are_lost_not_made_up() {
        let keeper = Arc::new(Keeper::default());
        let limiter = shared_limiter(Duration::from_millis(10), &keeper);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..10 {
            let (limiter, tx) = (limiter.clone(), tx.clone());
            tokio::spawn(async move {
                limiter.acquire().await;
                tx.send(Instant::now()).unwrap();
            });
        }
        drop(tx);
        tokio::task::yield_now().await;
        let first = rx.recv().await.unwrap();
        // A stall past the whole grant: its other slots are gone, and the waiters leave on a new
        // grant's, spaced out.
        tokio::time::advance(Duration::from_millis(500)).await;
        let mut left = vec![first];
        for _ in 0..9 {
            left.push(rx.recv().await.unwrap());
        }
        assert!(keeper.grants.load(Ordering::Relaxed) >= 2);
        let interval = Duration::from_millis(10).div_f64(1.0 - HEADROOM);
        for pair in left[1..].windows(2) {
            assert!(pair[1] - pair[0] >= interval / 2, "{left:?}");
        }
    }

    #[test]
    fn a_grant_covers_a_tenth_of_a_second_but_no_more_than_the_waiters() {
        let ms = Duration::from_millis;
        assert_eq!(grant_size(ms(10), 50), 10);
        assert_eq!(grant_size(ms(10), 3), 3);
        assert_eq!(grant_size(ms(10), 0), 1);
        assert_eq!(grant_size(ms(30), 50), 4);
        assert_eq!(grant_size(Duration::from_secs(1), 50), 1);
        assert_eq!(grant_size(Duration::from_micros(10), 1_000_000), MAX_GRANT);
    }

    #[test]
    fn a_grant_is_placed_by_its_distance_from_the_keepers_now() {
        let ms = Duration::from_millis;
        let sent = Instant::now();
        // The keeper read 5_000_000 µs 4 ms after we asked; the answer came 4 ms later.
        let offset = ClockOffset::sample(sent, sent + ms(8), 5_000_000);
        assert_eq!(offset.uncertainty, ms(4));
        let granted = Granted {
            first_slot_us: 5_050_000,
            keeper_now_us: 5_000_000,
            count: 3,
            interval: ms(10),
        };
        let received = sent + ms(4);
        // Put off by the reading's uncertainty, so that none leaves early on the keeper's clock.
        assert_eq!(
            local_slots(&offset, &granted),
            [received + ms(54), received + ms(64), received + ms(74)]
        );
        // A slower answer later does not move the schedule; a quicker one, or an old reading
        // gone stale, does.
        let slow = ClockOffset::sample(sent + ms(100), sent + ms(180), 5_100_000);
        assert_eq!(offset.better(slow), offset);
        let quick = ClockOffset::sample(sent + ms(100), sent + ms(102), 5_097_500);
        assert_eq!(offset.better(quick), quick);
        let late = ClockOffset::sample(
            sent + Duration::from_secs(60),
            sent + Duration::from_secs(60) + ms(10),
            65_000_000,
        );
        assert_eq!(offset.better(late), late);
        // Up to the allowed lateness still leaves; later does not.
        let slot = received;
        assert!(in_time(slot, slot + ms(5), ms(5)));
        assert!(!in_time(slot, slot + ms(6), ms(5)));
        // 20/s: 2% of the second is 20 ms, less twice a 1 ms reading; never over half an
        // interval (5 ms at 100/s); nothing left of it with a poor reading.
        let interval = ms(50).div_f64(1.0 - HEADROOM);
        assert_eq!(late_allowed(interval, ms(1000), ms(1)), ms(18));
        assert_eq!(late_allowed(ms(10), ms(1000), ms(1)), ms(3));
        assert_eq!(late_allowed(interval, ms(1000), ms(15)), Duration::ZERO);
    }
}
