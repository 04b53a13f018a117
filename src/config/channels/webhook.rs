//! The `[channels.webhook]` section: where to POST and the signing secret.

use std::path::PathBuf;

use serde::Deserialize;

use super::super::secrets::{SecretResolver, Secrets};
use super::super::{ConfigError, Delivery, check_url, invalid};
use super::{ChannelSettings, concurrency, parse_triggers, yes};
use crate::notify::Texts;
use crate::notify::webhook::{WebhookConfig, WebhookSecret};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    url: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    statuses: Option<Vec<String>>,
    concurrency: Option<usize>,
}

pub(super) fn resolve_webhook(
    raw: RawWebhook,
    secrets: &SecretResolver,
    delivery: &Delivery,
) -> Result<ChannelSettings<WebhookConfig>, ConfigError> {
    let section = "[channels.webhook]";
    check_url(section, "url", &raw.url)?;
    secrets.note_url(section, "url", &raw.url);
    let secret = secrets.resolve(section, "webhook", "secret", raw.secret, raw.secret_file)?;
    let secret = match WebhookSecret::parse(secret.expose()) {
        Ok(secret) => secret,
        // Admin commands sign nothing: a secret they cannot use must not stop `list`.
        Err(_) if secrets.mode == Secrets::Skipped => WebhookSecret::unloaded(),
        Err(e) => return Err(invalid(format!("{section} secret: {e}"))),
    };
    Ok(ChannelSettings {
        settings: WebhookConfig {
            url: raw.url,
            secret,
        },
        triggers: parse_triggers(section, raw.statuses, None)?,
        quiet_hours: None,
        texts: Texts::default(),
        alerts: None,
        concurrency: concurrency(section, raw.concurrency, delivery.concurrency)?,
    })
}
