//! The `[channels.email]` section: the SMTP server, the login and the mailboxes, checked without
//! connecting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::super::secrets::SecretResolver;
use super::super::{ConfigError, Delivery, invalid};
use super::{ChannelSettings, RawTexts, concurrency, parse_texts, parse_triggers, yes};
use crate::notify::email::EmailConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    smtp_url: String,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    from: String,
    reply_to: Option<String>,
    statuses: Option<Vec<String>>,
    #[serde(default)]
    templates: BTreeMap<String, RawTexts>,
    concurrency: Option<usize>,
}

pub(super) fn resolve_email(
    raw: RawEmail,
    secrets: &SecretResolver,
    delivery: &Delivery,
) -> Result<ChannelSettings<EmailConfig>, ConfigError> {
    let section = "[channels.email]";
    secrets.note_url(section, "smtp_url", &raw.smtp_url);
    let named = raw.password.is_some() || raw.password_file.is_some();
    let has_user = raw.username.is_some() || raw.smtp_url.contains('@');
    // Without a password key, a login may still take its password from the systemd credential
    // `email.password`; without a login there is nothing to look for.
    let password = match secrets.resolve(
        section,
        "email",
        "password",
        raw.password,
        raw.password_file,
    ) {
        Ok(password) if named || has_user => Some(password),
        Ok(_) => None,
        Err(_) if !named => None,
        Err(e) => return Err(e),
    };
    let settings = EmailConfig {
        smtp_url: raw.smtp_url,
        username: raw.username,
        password,
        from: raw.from,
        reply_to: raw.reply_to,
        timeout: delivery.timeout,
    };
    // Building the channel checks the URL and the mailboxes, without connecting.
    crate::notify::email::Email::new(settings.clone())
        .map_err(|e| invalid(format!("{section} {e}")))?;
    Ok(ChannelSettings {
        settings,
        triggers: parse_triggers(section, raw.statuses, None)?,
        quiet_hours: None,
        texts: parse_texts("channels.email", raw.templates, &["subject", "body"])?,
        alerts: None,
        concurrency: concurrency(section, raw.concurrency, delivery.concurrency)?,
    })
}
