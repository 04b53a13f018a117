//! One poll of one order on request (`shipwatch poll`): made now, whatever the schedule, quota
//! or pause, and recorded as the daemon would only when asked.

use super::pollable::configured;
use super::{Dispatcher, PollOutcome, track_request};
use crate::providers::{ProviderError, Trace, UnfitRequest};
use crate::storage::{ShipmentRow, StorageError};

/// Why a poll of one order on request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PollOnceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "order {order_id} is on provider {provider:?}, which the config does not define (configured: {configured})"
    )]
    UnknownProvider {
        order_id: String,
        provider: String,
        /// The configured provider names, or `none`.
        configured: String,
    },
    /// The provider's adapter refuses the shipment as it stands.
    #[error("order {order_id}: {reason}")]
    Refused {
        order_id: String,
        reason: UnfitRequest,
    },
    /// `--apply` on a row flagged invalid: recording the answer would clear its reason and
    /// leave it unpolled, neither invalid nor tracked. `recheck` is the way back.
    #[error(
        "order {order_id} is invalid ({reason}); fix it and run `shipwatch recheck {order_id}` (poll without --apply only looks)"
    )]
    Invalid { order_id: String, reason: String },
}

/// One poll of one order, made on request (`shipwatch poll`).
#[derive(Debug)]
pub struct PolledOnce {
    /// The shipment as it was stored before the poll.
    pub shipment: ShipmentRow,
    /// The kind of adapter that polled it (`taobao`, `kuaidi100`...).
    pub provider_kind: &'static str,
    /// What the provider answered.
    pub result: Result<Trace, ProviderError>,
    /// What recording the answer did, when recording was asked for.
    pub recorded: Option<Result<PollOutcome, StorageError>>,
}

impl Dispatcher {
    /// Polls the shipment of `order_id` once, now, and records the answer as the daemon would
    /// (notifications included) only when `record` is true. Unlike the daemon's polls it waits
    /// for no quota, pause or timeout: an operator asked for this one poll.
    pub async fn poll_once(
        &self,
        order_id: &str,
        record: bool,
    ) -> Result<PolledOnce, PollOnceError> {
        let shipment = self.db.shipment(order_id).await?;
        if record && shipment.is_invalid() {
            return Err(PollOnceError::Invalid {
                order_id: order_id.to_owned(),
                reason: shipment.error.clone().unwrap_or_default(),
            });
        }
        let provider =
            self.provider(&shipment.provider)
                .ok_or_else(|| PollOnceError::UnknownProvider {
                    order_id: order_id.to_owned(),
                    provider: shipment.provider.clone(),
                    configured: configured(&self.providers()),
                })?;
        let request = track_request(&shipment);
        provider
            .adapter
            .check(&request)
            .map_err(|reason| PollOnceError::Refused {
                order_id: order_id.to_owned(),
                reason,
            })?;
        let result = provider.adapter.fetch(&request).await;
        let recorded = match &result {
            _ if !record => None,
            Err(error @ (ProviderError::AuthExpired(_) | ProviderError::Config(_))) => {
                Some(Ok(PollOutcome::NotRecorded(error.clone())))
            }
            _ => Some(self.apply(&provider, &shipment, result.clone()).await),
        };
        Ok(PolledOnce {
            provider_kind: provider.adapter.kind(),
            shipment,
            result,
            recorded,
        })
    }
}
