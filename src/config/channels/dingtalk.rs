//! The `[channels.dingtalk]` section: the robot's webhook (a secret: its `access_token` lets anyone
//! post into the group), its optional signing secret, the statuses the staff want and the
//! robot's quota.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::super::secrets::{SecretResolver, Secrets};
use super::super::{ConfigError, RateLimit, check_url, invalid};
use super::{ChannelSettings, RawTexts, parse_texts, parse_triggers, yes};
use crate::domain::Status;
use crate::notify::dingtalk::{DEFAULT_PER_MINUTE, DingtalkConfig};

/// What the shop's staff act on: a parcel in trouble, not every step of a good one.
pub const DEFAULT_TRIGGERS: [Status; 3] =
    [Status::Exception, Status::FailedAttempt, Status::Returned];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDingtalk {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    url: Option<String>,
    url_file: Option<PathBuf>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    statuses: Option<Vec<String>>,
    /// `20/min` by default, DingTalk's own limit.
    rate_limit: Option<RateLimit>,
    /// `subject` is the message's title, `body` its markdown text.
    #[serde(default)]
    templates: BTreeMap<String, RawTexts>,
}

pub(super) fn resolve_dingtalk(
    raw: RawDingtalk,
    secrets: &SecretResolver,
    timeout: Duration,
) -> Result<ChannelSettings<DingtalkConfig>, ConfigError> {
    let section = "[channels.dingtalk]";
    let url = secrets
        .resolve(section, "dingtalk", "url", raw.url, raw.url_file)
        .map_err(|e| {
            invalid(format!(
                "{e}: the robot's webhook, https://oapi.dingtalk.com/robot/send?access_token=…, from the group's robot settings"
            ))
        })?;
    match check_url(section, "url", url.expose()) {
        // Admin commands send nothing: a URL they did not load must not stop `list`.
        Err(_) if secrets.mode == Secrets::Skipped => {}
        checked => checked?,
    }
    let secret = match raw.secret {
        Some(inline) => {
            Some(secrets.resolve(section, "dingtalk", "secret", Some(inline), raw.secret_file)?)
        }
        None => secrets.optional(section, "dingtalk", "secret", raw.secret_file)?,
    };
    let rate_limit = raw.rate_limit.unwrap_or(RateLimit {
        calls: DEFAULT_PER_MINUTE,
        per: Duration::from_secs(60),
    });
    Ok(ChannelSettings {
        settings: DingtalkConfig {
            url,
            secret,
            spacing: rate_limit.interval(),
            timeout,
        },
        triggers: parse_triggers(section, raw.statuses, Some(&DEFAULT_TRIGGERS))?,
        quiet_hours: None,
        texts: parse_texts("channels.dingtalk", raw.templates, &["subject", "body"])?,
    })
}
