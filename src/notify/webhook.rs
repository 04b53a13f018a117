//! Webhook channel, signed per Standard Webhooks.
