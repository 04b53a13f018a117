//! A channel's delivery slots in the sender, and the messages claimed ahead for them.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::clock::Millis;
use crate::storage::ClaimedNotification;
use crate::workers::{Pace, Workers};

/// One channel's delivery slots and the messages claimed for them ahead.
pub(super) struct Lane {
    pub(super) workers: Workers,
    pub(super) slots: usize,
    /// Claimed but not attempted yet, each with the end of its lease. Claiming ahead of the free
    /// slots lets a freed slot start its next attempt without waiting for a claim.
    pub(super) ahead: Mutex<VecDeque<(ClaimedNotification, Millis)>>,
    /// How fast the slots have been taking what was claimed ahead, which sizes the next claim.
    pub(super) pace: Mutex<Pace>,
    /// The channel paces its sends ([`Channel::pace`]): a message may wait long in its slot for
    /// its turn, and its attempt is counted only once the turn has come.
    pub(super) paced: bool,
}

impl Lane {
    /// A lane of `slots` delivery slots, at least one: what the config gives the channel (its
    /// section's `concurrency`, else `[delivery] concurrency`; one for a group robot).
    pub(super) fn new(slots: usize) -> Lane {
        let slots = slots.max(1);
        Lane {
            workers: Workers::new(slots),
            slots,
            ahead: Mutex::new(VecDeque::new()),
            pace: Mutex::new(Pace::default()),
            paced: false,
        }
    }

    /// The lane of a channel that paces its sends (see [`Lane::paced`]).
    pub(super) fn paced(mut self, paced: bool) -> Lane {
        self.paced = paced;
        self
    }

    pub(super) fn free(&self) -> usize {
        self.workers.free()
    }

    /// Takes out the claims that end before `by`: too late to start an attempt on.
    pub(super) fn take_ending(&self, by: Millis) -> Vec<(i64, Millis)> {
        let mut ahead = self.ahead.lock().expect("claimed-ahead lock");
        let (ending, keep): (Vec<_>, Vec<_>) = ahead.drain(..).partition(|(_, until)| *until <= by);
        ahead.extend(keep);
        ending.into_iter().map(|(n, until)| (n.id, until)).collect()
    }

    /// Takes out every claim not started, to give back.
    pub(super) fn take_all(&self) -> Vec<(i64, Millis)> {
        self.ahead
            .lock()
            .expect("claimed-ahead lock")
            .drain(..)
            .map(|(n, until)| (n.id, until))
            .collect()
    }
}
