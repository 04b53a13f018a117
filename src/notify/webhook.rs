//! Webhook channel, signed per Standard Webhooks.
// Placeholder until the channel lands; same public surface.
use std::time::Duration;
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);
impl WebhookSecret {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(Self(s.as_bytes().to_vec()))
    }
}
pub struct WebhookConfig {
    pub url: String,
    pub secret: WebhookSecret,
}
pub struct Webhook;
impl Webhook {
    pub fn new(_c: WebhookConfig, _h: reqwest::Client, _t: Duration) -> Self {
        Webhook
    }
}
#[async_trait::async_trait]
impl super::Channel for Webhook {
    fn kind(&self) -> super::ChannelKind {
        super::ChannelKind::Webhook
    }
    async fn deliver(&self, _m: &super::Outgoing) -> Result<(), super::DeliveryError> {
        unimplemented!()
    }
}
