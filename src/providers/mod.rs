//! Provider adapters: each turns one shipment into one upstream request, and one upstream response
//! into a normalised [`Trace`] or a classified [`ProviderError`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};

use crate::domain::Status;

pub mod simulator;
pub mod taobao;

/// Carriers and platforms report local time in China; events keep that offset.
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// What an adapter needs to know about a shipment to ask about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRequest {
    pub order_id: String,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    pub phone: Option<String>,
}

/// One scan or step of a parcel's journey as the provider reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// When it happened, in Asia/Shanghai.
    pub time: DateTime<FixedOffset>,
    pub description: String,
    pub location: Option<String>,
    /// The provider's own code for the step (TOP `action`, Kuaidi100 `status`…), when it gives one.
    pub raw_code: Option<String>,
}

/// A provider's answer, normalised: events oldest first and the canonical status they amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub status: Status,
    /// The provider's own status text or code, kept beside the canonical status.
    pub raw_status: String,
    pub events: Vec<TraceEvent>,
    pub carrier: Option<String>,
    pub tracking_no: Option<String>,
}

/// Why a poll did not produce a trace, classified by what the daemon should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Try again at the next scheduled poll (network errors, 5xx, garbled answers, `isp.*`).
    #[error("transient: {0}")]
    Transient(String),
    /// Upstream asked us to stop calling for a while; the whole provider is paused that long.
    #[error("rate limited for {}s: {message}", retry_after.as_secs())]
    RateLimited {
        retry_after: Duration,
        message: String,
    },
    /// The credentials need renewal (expired session or token): stop the provider, alert loudly.
    #[error("credentials expired: {0}")]
    AuthExpired(String),
    /// The provider is misconfigured (signature, app key, permissions): stop it, alert loudly.
    #[error("configuration error: {0}")]
    Config(String),
    /// Upstream knows nothing about this shipment yet: keep polling, slowly.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request can never succeed for this shipment: flag it and stop polling it.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// One upstream logistics API.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The adapter kind as written in the config (`taobao`, `simulator`, …).
    fn kind(&self) -> &'static str;

    /// Asks upstream for the current trace of one shipment.
    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError>;
}
