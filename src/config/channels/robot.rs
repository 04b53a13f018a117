//! The group robots' sections, `[channels.dingtalk]`, `[channels.wecom]` and `[channels.feishu]`:
//! the robot's webhook (a secret: its `access_token`, `key` or path lets anyone post into the
//! group), the signing secret for a robot that signs, the statuses the staff want and the robot's
//! quota.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::super::secrets::{SecretResolver, Secrets};
use super::super::{ConfigError, RateLimit, check_url, invalid};
use super::{ChannelSettings, RawTexts, parse_texts, parse_triggers, yes};
use crate::domain::Status;
use crate::notify::Alerts;
use crate::notify::ChannelKind;
use crate::notify::robot::RobotConfig;

/// What the shop's staff act on: a parcel in trouble, not every step of a good one.
pub const DEFAULT_TRIGGERS: [Status; 3] =
    [Status::Exception, Status::FailedAttempt, Status::Returned];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRobot {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    url: Option<String>,
    url_file: Option<PathBuf>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    statuses: Option<Vec<String>>,
    /// `shipment.stuck` and `ops` by default.
    alerts: Option<Vec<String>>,
    /// The robot's own limit by default.
    rate_limit: Option<RateLimit>,
    /// `subject` is the message's title, `body` its markdown text.
    #[serde(default)]
    templates: BTreeMap<String, RawTexts>,
}

/// What differs between the robots' sections.
pub(super) struct RobotSection {
    pub(super) kind: ChannelKind,
    /// Where the operator finds the webhook, for a missing `url`.
    pub(super) url_hint: &'static str,
    pub(super) per_minute: u32,
    /// Whether the robot can sign its messages with a secret.
    pub(super) signs: bool,
}

pub(super) const DINGTALK: RobotSection = RobotSection {
    kind: ChannelKind::Dingtalk,
    url_hint: "the robot's webhook, https://oapi.dingtalk.com/robot/send?access_token=…, from the group's robot settings",
    per_minute: crate::notify::dingtalk::DEFAULT_PER_MINUTE,
    signs: true,
};

pub(super) const WECOM: RobotSection = RobotSection {
    kind: ChannelKind::Wecom,
    url_hint: "the robot's webhook, https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…, from the group's robot settings",
    per_minute: crate::notify::wecom::DEFAULT_PER_MINUTE,
    signs: false,
};

pub(super) const FEISHU: RobotSection = RobotSection {
    kind: ChannelKind::Feishu,
    url_hint: "the bot's webhook, https://open.feishu.cn/open-apis/bot/v2/hook/…, from the group's bot settings",
    per_minute: crate::notify::feishu::DEFAULT_PER_MINUTE,
    signs: true,
};

pub(super) fn resolve_robot(
    raw: RawRobot,
    secrets: &SecretResolver,
    timeout: Duration,
    robot: &RobotSection,
) -> Result<ChannelSettings<RobotConfig>, ConfigError> {
    let name = robot.kind.as_str();
    let section = format!("[channels.{name}]");
    let section = section.as_str();
    let url = secrets
        .resolve(section, name, "url", raw.url, raw.url_file)
        .map_err(|e| invalid(format!("{e}: {}", robot.url_hint)))?;
    match check_url(section, "url", url.expose()) {
        // Admin commands send nothing: a URL they did not load must not stop `list`.
        Err(_) if secrets.mode == Secrets::Skipped => {}
        checked => checked?,
    }
    if !robot.signs && (raw.secret.is_some() || raw.secret_file.is_some()) {
        return Err(invalid(format!(
            "{section} secret does not apply: this robot does not sign, its key is in the url"
        )));
    }
    let secret = match raw.secret {
        Some(inline) => {
            Some(secrets.resolve(section, name, "secret", Some(inline), raw.secret_file)?)
        }
        None => secrets.optional(section, name, "secret", raw.secret_file)?,
    };
    let rate_limit = raw.rate_limit.unwrap_or(RateLimit {
        calls: robot.per_minute,
        per: Duration::from_secs(60),
    });
    Ok(ChannelSettings {
        settings: RobotConfig {
            url,
            secret,
            spacing: rate_limit.interval(),
            window: rate_limit.per,
            timeout,
        },
        triggers: parse_triggers(section, raw.statuses, Some(&DEFAULT_TRIGGERS))?,
        alerts: raw
            .alerts
            .map(|names| {
                Alerts::parse(&names).map_err(|e| invalid(format!("{section} alerts: {e}")))
            })
            .transpose()?,
        quiet_hours: None,
        texts: parse_texts(
            &format!("channels.{name}"),
            raw.templates,
            &["subject", "body"],
        )?,
        // One at a time, whatever `[delivery] concurrency` says: the robot paces its sends, so
        // more slots would only wait for the same turns, and once it answers "send too fast" no
        // message already in line for its turn may reach it during the pause.
        concurrency: 1,
    })
}
