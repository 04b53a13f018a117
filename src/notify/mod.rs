//! Notifications: how a status change becomes an outbox row, and how a row is delivered.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod email;
pub mod payload;
pub mod receiver;
pub mod sender;
pub mod sms_aliyun;
pub mod sms_http;
pub mod template;
pub mod webhook;

/// The ways a notification can travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Webhook,
    Email,
    Sms,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "webhook" => Ok(ChannelKind::Webhook),
            "email" => Ok(ChannelKind::Email),
            "sms" => Ok(ChannelKind::Sms),
            other => Err(format!(
                "unknown channel {other:?}: expected webhook, email or sms"
            )),
        }
    }
}

/// An enabled channel as the outbox sees it: which statuses it announces and in what words.
#[derive(Debug, Clone)]
pub struct ChannelRule {
    pub kind: ChannelKind,
    pub triggers: Vec<crate::domain::Status>,
    /// Messages due inside these hours wait until they end (SMS).
    pub quiet_hours: Option<template::QuietHours>,
    /// Texts per status that the config overrides; the rest take the defaults.
    pub texts: Texts,
}

impl ChannelRule {
    pub fn new(kind: ChannelKind, triggers: Vec<crate::domain::Status>) -> Self {
        ChannelRule {
            kind,
            triggers,
            quiet_hours: None,
            texts: Texts::default(),
        }
    }
}

/// Texts per status, as overridden in the config.
#[derive(Debug, Clone, Default)]
pub struct Texts {
    pub subject: std::collections::HashMap<crate::domain::Status, template::Template>,
    pub body: std::collections::HashMap<crate::domain::Status, template::Template>,
    pub sms: std::collections::HashMap<crate::domain::Status, template::Template>,
    pub template_code: std::collections::HashMap<crate::domain::Status, String>,
    /// The vendor template used for statuses without one of their own (Aliyun `TemplateCode`).
    pub default_template_code: Option<String>,
}

/// One delivery attempt's input: the notification's stable id and the body queued with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Stable across retries (`webhook-id`).
    pub public_id: String,
    /// What the channel sends, built when the change was recorded; every attempt sends it
    /// unchanged. For a webhook, the JSON body; for email an [`EmailMessage`], for SMS an
    /// [`SmsMessage`], as JSON.
    pub payload: String,
    /// The buyer's email address or phone number, for the channels that reach a person.
    pub recipient: Option<String>,
}

/// A rendered email, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailMessage {
    pub subject: String,
    /// Plain text.
    pub body: String,
}

/// A rendered SMS, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsMessage {
    /// The whole text, for gateways that take text.
    pub text: String,
    /// Placeholder values by name (`order_id`, `tracking_no`, `carrier`, `status`, `event`,
    /// `event_time`), for vendors whose registered templates take parameters (Aliyun's
    /// `TemplateParam`).
    pub params: std::collections::BTreeMap<String, String>,
    /// The vendor's registered template for this status (Aliyun's `TemplateCode`), if set.
    pub template_code: Option<String>,
}

/// Why a delivery attempt failed, classified by what the sender should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth another attempt (timeouts, connection errors, 5xx, 408, 429).
    #[error("{message}")]
    Transient {
        message: String,
        /// The receiver's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (other 4xx, invalid recipient): the row goes dead at once.
    #[error("{0}")]
    Permanent(String),
    /// The channel itself cannot send for a while (out of credit, credentials refused) and has
    /// raised the alarm: the message waits that long, and the attempt does not count.
    #[error("{message}")]
    Paused {
        message: String,
        retry_after: Duration,
    },
}

/// A delivery channel. One channel per file; each implements this trait.
#[async_trait]
pub trait Channel: Send + Sync {
    fn kind(&self) -> ChannelKind;

    /// Makes one delivery attempt.
    async fn deliver(&self, message: &Outgoing) -> Result<(), DeliveryError>;
}
