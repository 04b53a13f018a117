//! Kuaidi100 subscription push in the dispatcher: a push-mode shipment's turn is its
//! subscription (or, with `fallback_poll`, a query when it has heard nothing for that long), and
//! a callback's trace goes through the same change detection and commit as a poll's.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Dispatcher, PollOutcome, ProviderRuntime, track_request};
use crate::clock::{Millis, millis};
use crate::config::POLL_HORIZON;
use crate::outage::Outage;
use crate::providers::ProviderError;
use crate::providers::kuaidi100_push::{Callback, PushStatus, Subscribed, Subscriber};
use crate::storage::{CallbackNote, ShipmentRow, StorageError, SubscriptionState};

/// Kuaidi100 takes at most 4 subscriptions of one waybill a month (快递订阅查询快递api接口技术文档,
/// https://api.kuaidi100.com/document/5f0ffa8f2977d50a94e1023c): past that, an aborted
/// subscription is not renewed, and the shipment is left to `fallback_poll` and the no-info
/// window.
pub const MAX_SUBSCRIBES: i64 = 4;

/// After `abort` or `shutdown`, Kuaidi100 asks for half an hour before the waybill is subscribed
/// again (501's row of the return codes, https://cloud.tencent.com/developer/article/1828132).
pub const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(30 * 60);

/// When a push-mode shipment is next looked at by the dispatcher: after `fallback_poll` (never
/// sooner than the provider's floor), or, without it, not within the poll horizon (a callback
/// or a resubscription moves it).
pub fn next_look(provider: &ProviderRuntime, subscriber: &Subscriber, now: Millis) -> Millis {
    match subscriber.push().fallback_poll {
        Some(every) => now.saturating_add(millis(every.max(provider.min_interval))),
        None => now.saturating_add(millis(POLL_HORIZON)),
    }
}

/// What a callback came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackApplied {
    /// Saved for this many shipments.
    Saved(usize),
    /// No shipment of the provider has the waybill.
    Unknown,
}

impl Dispatcher {
    /// A push-mode shipment's turn: subscribes it when it is not subscribed, answers `None`
    /// when it is and `fallback_poll` asks for a query (made as any poll), and otherwise only
    /// sets its next look.
    pub(super) async fn push_turn(
        &self,
        provider: &ProviderRuntime,
        subscriber: &Subscriber,
        row: &ShipmentRow,
    ) -> Result<Option<PollOutcome>, StorageError> {
        let now = self.clock.now();
        let subscription = self.db.subscription(row.id).await?;
        let subscribe = match &subscription {
            None => true,
            Some(s) => s.state == SubscriptionState::Aborted && s.subscribes < MAX_SUBSCRIBES,
        };
        if !subscribe {
            if subscriber.push().fallback_poll.is_some() {
                debug!(order_id = %row.order_id, provider = %provider.name, "no callback for fallback_poll; querying");
                return Ok(None);
            }
            self.db
                .reschedule(row.id, next_look(provider, subscriber, now))
                .await?;
            return Ok(Some(PollOutcome::Skipped));
        }
        let result = match tokio::time::timeout(
            self.polling.timeout,
            subscriber.subscribe(&track_request(row)),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Transient(format!(
                "no answer to the subscription within {}",
                humantime::format_duration(self.polling.timeout)
            ))),
        };
        let label = match &result {
            Ok(Subscribed::New) => "subscribed",
            Ok(Subscribed::Already) => "already_subscribed",
            Err(_) => "failed",
        };
        metrics::counter!("shipwatch_subscriptions_total", "provider" => provider.name.clone(), "result" => label)
            .increment(1);
        match result {
            Ok(how) => {
                self.db
                    .record_subscribed(
                        row.id,
                        &provider.name,
                        now,
                        next_look(provider, subscriber, now),
                    )
                    .await?;
                info!(order_id = %row.order_id, provider = %provider.name, already = how == Subscribed::Already, "subscribed to Kuaidi100 push");
                Ok(Some(PollOutcome::Subscribed))
            }
            Err(error) => {
                // Retried, paused or flagged exactly as a failed poll.
                let error = error.bounded();
                self.failed(provider, row, &error, now).await?;
                Ok(Some(PollOutcome::Failed(error)))
            }
        }
    }

    /// Applies a signed callback for the push-mode provider `name`: its trace to every shipment
    /// of the provider with the waybill, through `track` and the writer as a poll's, and its
    /// status to their subscriptions. Returns once all of it is committed.
    pub async fn apply_callback(
        &self,
        name: &str,
        callback: Callback,
    ) -> Result<CallbackApplied, StorageError> {
        let Some(provider) = self.provider(name) else {
            return Ok(CallbackApplied::Unknown);
        };
        let Some(subscriber) = provider.push.clone() else {
            return Ok(CallbackApplied::Unknown);
        };
        let Some(number) = callback.number.as_deref() else {
            return Ok(CallbackApplied::Unknown);
        };
        // Matched on the number alone: Kuaidi100 may have corrected the carrier (`comNew`).
        let rows = self.db.shipments_by_waybill(name, number).await?;
        if rows.is_empty() {
            return Ok(CallbackApplied::Unknown);
        }
        let trace = callback.trace.map(|t| t.bounded());
        let (state, resubscribe) = match callback.status {
            PushStatus::Shutdown => (Some(SubscriptionState::Ended), false),
            // With a corrected carrier code Kuaidi100 subscribed the waybill again itself;
            // without one it gave up, and the shipment is subscribed again after the wait.
            PushStatus::Abort if callback.com_new.as_deref().is_some_and(|c| !c.is_empty()) => {
                (None, false)
            }
            PushStatus::Abort => (Some(SubscriptionState::Aborted), true),
            PushStatus::Polling | PushStatus::UpdateAll | PushStatus::Other(_) => (None, false),
        };
        let note_message = callback
            .message
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|m| {
                let mut m = m.to_owned();
                crate::providers::cut(&mut m, crate::providers::MAX_FIELD_BYTES);
                m
            });
        for row in &rows {
            let now = self.clock.now();
            if let Some(trace) = trace.clone() {
                self.record_trace(
                    row,
                    trace,
                    now,
                    next_look(&provider, &subscriber, now),
                    None,
                )
                .await?;
            }
            self.db
                .note_callback(
                    row.id,
                    name,
                    &CallbackNote {
                        state,
                        message: note_message.as_deref(),
                        now,
                    },
                )
                .await?;
            if resubscribe {
                warn!(order_id = %row.order_id, provider = %name, message = note_message.as_deref().unwrap_or(""), "Kuaidi100 aborted the subscription; subscribing again in 30 minutes");
                self.db
                    .reschedule(row.id, now.saturating_add(millis(RESUBSCRIBE_AFTER)))
                    .await?;
            }
        }
        // A saved callback proves the database writable.
        Outage::database().succeeded();
        Ok(CallbackApplied::Saved(rows.len()))
    }
}
