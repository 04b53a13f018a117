//! What a failed poll leads to, by the kind of failure: a pause of the whole provider (a rate
//! limit, rejected credentials), another try at the next poll, a slower look for a shipment
//! upstream knows nothing of yet, or the shipment flagged invalid.

use std::time::Duration;

use tracing::{debug, error, warn};

use super::{Dispatcher, ProviderRuntime};
use crate::clock::{Millis, millis, to_rfc3339};
use crate::domain::Tier;
use crate::events::PipelineEvent;
use crate::providers::{MAX_BAN, ProviderError};
use crate::storage::{InvalidKind, ShipmentRow, StorageError};

impl Dispatcher {
    pub(super) async fn failed(
        &self,
        provider: &ProviderRuntime,
        row: &ShipmentRow,
        error: &ProviderError,
        now: Millis,
    ) -> Result<(), StorageError> {
        let tier = row.tier;
        let (order_id, name) = (&row.order_id, &provider.name);
        let settled;
        let error = match error {
            ProviderError::Unconfirmed(message) => {
                settled =
                    settle_unconfirmed(message, now, row.created_at, self.polling.no_info_after);
                &settled
            }
            other => other,
        };
        match error {
            ProviderError::RateLimited { retry_after, .. } => {
                // Upstream chooses the number, and may choose an absurd one: never longer than
                // the documented maximum, whoever built the error.
                let until = now.saturating_add(millis((*retry_after).min(MAX_BAN)));
                let first = provider.pause_until(until, now);
                self.db
                    .ban_provider(name, until, &error.to_string(), now)
                    .await?;
                self.db.release_shipment(row.id).await?;
                if first {
                    warn!(provider = %name, until = %to_rfc3339(until), %error, "provider paused: upstream rate limit");
                    self.events.emit(PipelineEvent::ProviderPaused {
                        provider: name.clone(),
                        until,
                        reason: error.to_string(),
                    });
                }
            }
            ProviderError::AuthExpired(_) | ProviderError::Config(_) => {
                let until = now.saturating_add(millis(self.polling.auth_pause));
                // Paused before the shipment is given back, so that no round claims it again
                // in between.
                let first = provider.pause_until(until, now);
                self.db.release_shipment(row.id).await?;
                // One loud line per pause, not one per poll that was in flight.
                if first {
                    self.db
                        .pause_provider(name, until, &error.to_string(), now)
                        .await?;
                    error!(
                        provider = %name, until = %to_rfc3339(until), %error,
                        "PROVIDER STOPPED: upstream rejected our credentials or configuration; fix [providers.{name}], then reload or restart"
                    );
                    self.events.emit(PipelineEvent::ProviderPaused {
                        provider: name.clone(),
                        until,
                        reason: error.to_string(),
                    });
                }
            }
            ProviderError::Transient(_) => {
                let next = self.next_poll_for(provider, now, tier);
                self.db
                    .record_poll_error(row.id, &error.to_string(), now, next)
                    .await?;
                // A provider failing every poll the same way logs it once a minute.
                if let Some(suppressed) =
                    crate::throttle::admit(&format!("poll failed\0{name}\0{error}"))
                {
                    warn!(%order_id, provider = %name, %tier, %error, suppressed, "poll failed; will retry");
                }
                self.events.emit(PipelineEvent::PollFailed {
                    order_id: order_id.clone(),
                    provider: name.clone(),
                    error: error.to_string(),
                });
            }
            ProviderError::NotFound(_) => {
                // Nothing to see yet: ask again no sooner than the slowest tier.
                let next = self
                    .next_poll_for(provider, now, tier)
                    .max(self.next_poll_at(now, Tier::Low));
                self.db
                    .record_poll_error(row.id, &error.to_string(), now, next)
                    .await?;
                debug!(%order_id, provider = %name, %tier, %error, "no trace yet");
            }
            ProviderError::Permanent(_) | ProviderError::Unconfirmed(_) => {
                self.db
                    .mark_invalid(row.id, InvalidKind::Upstream, &error.to_string(), now)
                    .await?;
                warn!(%order_id, provider = %name, %tier, %error, "shipment invalid; polling stopped");
                self.events.emit(PipelineEvent::ShipmentInvalid {
                    order_id: order_id.clone(),
                    reason: error.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// An unexplained refusal is "no trace yet" while the shipment is younger than `window`, and
/// stands (the shipment is flagged) once it is older.
fn settle_unconfirmed(
    message: &str,
    now: Millis,
    created_at: Millis,
    window: Duration,
) -> ProviderError {
    if now.saturating_sub(created_at) < millis(window) {
        ProviderError::NotFound(message.to_owned())
    } else {
        ProviderError::Permanent(format!(
            "{message}, still after {} (the no-info window)",
            humantime::format_duration(window)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unexplained_refusal_is_nothing_yet_until_the_no_info_window_passes() {
        let window = Duration::from_secs(3 * 86_400);
        let created = 1_000_000;
        let young = settle_unconfirmed("TOP error 15 (isv.x)", created + 1_000, created, window);
        assert_eq!(
            young,
            ProviderError::NotFound("TOP error 15 (isv.x)".to_owned())
        );
        let old = settle_unconfirmed(
            "TOP error 15 (isv.x)",
            created + millis(window),
            created,
            window,
        );
        match old {
            ProviderError::Permanent(message) => {
                assert!(
                    message.starts_with("TOP error 15 (isv.x), still after 3days"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
