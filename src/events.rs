//! What the pipeline tells whoever listens (the demo's printout, tests) besides the logs.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::clock::Millis;
use crate::domain::{ChannelKind, Status, Tier};

#[derive(Debug, Clone, PartialEq)]
pub enum PipelineEvent {
    StatusChanged {
        order_id: String,
        provider: String,
        tier: Tier,
        from: Status,
        to: Status,
        raw_status: String,
    },
    PollFailed {
        order_id: String,
        provider: String,
        error: String,
    },
    ShipmentInvalid {
        order_id: String,
        reason: String,
    },
    ProviderPaused {
        provider: String,
        until: Millis,
        reason: String,
    },
    /// A channel stopped or paused itself (credentials refused, out of credit, a robot's quota):
    /// its messages wait until `until`.
    ChannelPaused {
        channel: ChannelKind,
        until: Millis,
        reason: String,
    },
    Delivered {
        order_id: String,
        channel: ChannelKind,
        status: String,
        attempt: i64,
        notification: String,
    },
    DeliveryFailed {
        order_id: String,
        channel: ChannelKind,
        status: String,
        attempt: i64,
        error: String,
        /// When the next attempt comes; `None` when the notification is now dead.
        retry_in: Option<Duration>,
    },
}

/// A sender nobody has to listen to: sending with no receiver is not an error.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<PipelineEvent>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(1024).0)
    }
}

impl Events {
    pub fn emit(&self, event: PipelineEvent) {
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PipelineEvent> {
        self.0.subscribe()
    }
}
