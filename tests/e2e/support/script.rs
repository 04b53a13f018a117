//! What every scripted fake upstream keeps, whatever its wire format: per key (an order, a
//! waybill) a script of answers that moves one step per call and then stays on its last; answers
//! queued ahead of any script ("the next N calls fail"); an optional quota over a sliding
//! window; and a log of what was asked. A fake parses and verifies a request, asks its
//! [`Script`] what to answer, records the call in its [`Log`], and renders the answer in its
//! upstream's format: only that last part differs from one fake to the next.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What a call is answered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<A> {
    /// An answer queued with [`Script::answer_next`], served to whichever call comes first.
    Queued(A),
    /// Step `n` (0-based) of the key's script.
    Step(usize, A),
    /// Nothing queued, and the key has no script.
    Unscripted,
}

/// The answers a fake has been told to give, and how far it has got through them.
pub struct Script<K, A> {
    steps: HashMap<K, Steps<A>>,
    queued: VecDeque<A>,
    /// Per key: when each call for it arrived, whatever it was answered.
    arrivals: HashMap<K, Vec<Instant>>,
    /// Per key: calls that arrived once its final step had been served.
    after_final: HashMap<K, usize>,
    quota: Option<Window>,
}

struct Steps<A> {
    answers: Vec<A>,
    /// Calls served from these steps so far (queued answers and refusals do not count).
    served: usize,
}

impl<A> Steps<A> {
    fn final_served(&self) -> bool {
        self.served >= self.answers.len()
    }
}

impl<K: Eq + Hash + Clone, A: Clone> Default for Script<K, A> {
    fn default() -> Self {
        Script {
            steps: HashMap::new(),
            queued: VecDeque::new(),
            arrivals: HashMap::new(),
            after_final: HashMap::new(),
            quota: None,
        }
    }
}

impl<K: Eq + Hash + Clone, A: Clone> Script<K, A> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls for `key` are answered `answers` in turn, then the last one for good. Replaces the
    /// script `key` had, and forgets its calls after the final step.
    pub fn set(&mut self, key: K, answers: Vec<A>) {
        assert!(!answers.is_empty(), "a script needs at least one answer");
        self.after_final.remove(&key);
        self.steps.insert(key, Steps { answers, served: 0 });
    }

    /// The next `n` calls that reach the script, whatever their key, are answered `answer`
    /// instead of their step; such a call does not move any script on.
    pub fn answer_next(&mut self, n: usize, answer: A) {
        self.queued.extend(std::iter::repeat_n(answer, n));
    }

    /// Drops the queued answers not served yet.
    pub fn clear_next(&mut self) {
        self.queued.clear();
    }

    /// Counts calls in a sliding `window`: any beyond `limit` is over the quota.
    pub fn quota(&mut self, limit: usize, window: Duration) {
        self.quota = Some(Window {
            limit,
            window,
            recent: VecDeque::new(),
            over: 0,
        });
    }

    /// Counts a call as it arrives, before it is verified or answered; `key` is `None` when the
    /// request named none. `Some(wait)` when the call is over the quota: how long until the
    /// window has room again.
    pub fn arrive(&mut self, key: Option<&K>, now: Instant) -> Option<Duration> {
        if let Some(key) = key {
            if self.steps.get(key).is_some_and(Steps::final_served) {
                *self.after_final.entry(key.clone()).or_default() += 1;
            }
            self.arrivals.entry(key.clone()).or_default().push(now);
        }
        self.quota.as_mut().and_then(|quota| quota.arrive(now))
    }

    /// The next queued answer, if any.
    pub fn take_next(&mut self) -> Option<A> {
        self.queued.pop_front()
    }

    /// The next step of `key`'s script and its index, moving the script on; `None` without one.
    pub fn step(&mut self, key: &K) -> Option<(usize, A)> {
        let steps = self.steps.get_mut(key)?;
        let step = steps.served.min(steps.answers.len() - 1);
        steps.served += 1;
        Some((step, steps.answers[step].clone()))
    }

    /// What a verified call for `key` is answered: a queued answer first, else its next step.
    pub fn next_for(&mut self, key: Option<&K>) -> Next<A> {
        if let Some(answer) = self.take_next() {
            return Next::Queued(answer);
        }
        match key.and_then(|key| self.step(key)) {
            Some((step, answer)) => Next::Step(step, answer),
            None => Next::Unscripted,
        }
    }

    /// Calls for `key` that arrived, whatever they were answered.
    pub fn calls_for(&self, key: &K) -> usize {
        self.arrivals.get(key).map_or(0, Vec::len)
    }

    /// When each call for `key` arrived.
    pub fn arrivals(&self, key: &K) -> Vec<Instant> {
        self.arrivals.get(key).cloned().unwrap_or_default()
    }

    /// Calls for `key` that arrived after it had been served its final step.
    pub fn calls_after_final(&self, key: &K) -> usize {
        self.after_final.get(key).copied().unwrap_or(0)
    }

    /// Calls that arrived beyond the quota.
    pub fn over_quota(&self) -> usize {
        self.quota.as_ref().map_or(0, |quota| quota.over)
    }
}

/// A quota over a sliding window.
struct Window {
    limit: usize,
    window: Duration,
    recent: VecDeque<Instant>,
    over: usize,
}

impl Window {
    /// Counts a call arriving `now`; `Some(time until there is room)` when it is over the quota.
    fn arrive(&mut self, now: Instant) -> Option<Duration> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() <= self.limit {
            return None;
        }
        self.over += 1;
        let oldest = self.recent[self.recent.len() - 1 - self.limit];
        Some(self.window.saturating_sub(now.duration_since(oldest)))
    }
}

/// What reached a fake: every call as the fake recorded it, and why each refused one was
/// refused (for assertion messages).
pub struct Log<C> {
    calls: Vec<C>,
    refusals: Vec<String>,
}

impl<C: Clone> Default for Log<C> {
    fn default() -> Self {
        Log {
            calls: Vec::new(),
            refusals: Vec::new(),
        }
    }
}

impl<C: Clone> Log<C> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, call: C) {
        self.calls.push(call);
    }

    /// Notes a request refused by verification, and why.
    pub fn refuse(&mut self, why: String) {
        self.refusals.push(why);
    }

    pub fn calls(&self) -> Vec<C> {
        self.calls.clone()
    }

    pub fn count(&self) -> usize {
        self.calls.len()
    }

    /// How many calls `which` picks, without copying them.
    pub fn count_where(&self, which: impl Fn(&C) -> bool) -> usize {
        self.calls.iter().filter(|call| which(call)).count()
    }

    pub fn refusals(&self) -> Vec<String> {
        self.refusals.clone()
    }

    pub fn refused(&self) -> usize {
        self.refusals.len()
    }
}

// Imports go inside each test: the pipeline bench compiles this file with `cfg(test)` but
// without its tests.
#[cfg(test)]
mod tests {
    #[test]
    fn a_script_moves_one_step_per_call_and_stays_on_its_last() {
        use super::{Next, Script};
        use std::time::Instant;

        let mut script = Script::new();
        script.set(7, vec!["a", "b"]);
        let now = Instant::now();
        let mut served = Vec::new();
        for _ in 0..4 {
            script.arrive(Some(&7), now);
            served.push(script.next_for(Some(&7)));
        }
        assert_eq!(
            served,
            [
                Next::Step(0, "a"),
                Next::Step(1, "b"),
                Next::Step(1, "b"),
                Next::Step(1, "b")
            ]
        );
        // The call that served the final step is not after it; the two later ones are.
        assert_eq!(script.calls_after_final(&7), 2);
        assert_eq!(script.calls_for(&7), 4);
        assert_eq!(script.next_for(Some(&8)), Next::Unscripted);
        assert_eq!(script.next_for(None), Next::Unscripted);

        script.set(7, vec!["c"]);
        assert_eq!(
            script.calls_after_final(&7),
            0,
            "a new script starts afresh"
        );
        assert_eq!(script.calls_for(&7), 4, "calls that arrived stay counted");
    }

    #[test]
    fn queued_answers_come_first_and_do_not_move_the_script_on() {
        use super::{Next, Script};

        let mut script = Script::new();
        script.set("YT1", vec!["trace"]);
        script.answer_next(2, "fault");
        assert_eq!(script.next_for(Some(&"YT1")), Next::Queued("fault"));
        assert_eq!(script.next_for(Some(&"other")), Next::Queued("fault"));
        assert_eq!(script.next_for(Some(&"YT1")), Next::Step(0, "trace"));
        script.answer_next(3, "fault");
        script.clear_next();
        assert_eq!(script.take_next(), None);
    }

    #[test]
    fn the_quota_counts_calls_in_a_sliding_window() {
        use super::Script;
        use std::time::{Duration, Instant};

        let mut script: Script<u64, ()> = Script::new();
        script.quota(2, Duration::from_secs(10));
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(script.arrive(None, at(0)), None);
        assert_eq!(script.arrive(None, at(4)), None);
        assert_eq!(script.arrive(None, at(6)), Some(Duration::from_secs(4)));
        // The call at 0 has left the window; the refused one at 6 still counts in it.
        assert_eq!(script.arrive(None, at(10)), Some(Duration::from_secs(4)));
        assert_eq!(script.arrive(None, at(16)), None);
        assert_eq!(script.over_quota(), 2);
    }
}
