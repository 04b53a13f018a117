//! The `[channels.wechat]` section: the official account (its AppID, its AppSecret, a secret),
//! the template message's id, what each of the template's keys says, the link it opens, the
//! buyer statuses it announces and an optional quota.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::super::secrets::SecretResolver;
use super::super::{ConfigError, Delivery, RateLimit, check_url, endpoint, invalid};
use super::{BUYER_TRIGGERS, ChannelSettings, concurrency, parse_triggers, yes};
use crate::notify::Texts;
use crate::notify::template::{PLACEHOLDERS, Template, Values};
use crate::notify::wechat::{DEFAULT_ENDPOINT, WechatConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWechat {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    appid: Option<String>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    template_id: Option<String>,
    /// Where tapping the message leads, a template.
    url: Option<String>,
    /// The template's keys (`thing1`) and what each says, as templates.
    #[serde(default)]
    data: BTreeMap<String, String>,
    statuses: Option<Vec<String>>,
    rate_limit: Option<RateLimit>,
    /// `https://api.weixin.qq.com` by default.
    endpoint: Option<String>,
    /// Deliveries at once; `[delivery] concurrency` by default.
    concurrency: Option<usize>,
}

pub(super) fn resolve_wechat(
    raw: RawWechat,
    secrets: &SecretResolver,
    delivery: &Delivery,
) -> Result<ChannelSettings<WechatConfig>, ConfigError> {
    let section = "[channels.wechat]";
    let appid = raw.appid.filter(|a| !a.trim().is_empty()).ok_or_else(|| {
        invalid(format!(
            "{section} needs appid: the official account's AppID (wx…), from 设置与开发 → 基本配置"
        ))
    })?;
    let secret = secrets
        .resolve(section, "wechat", "secret", raw.secret, raw.secret_file)
        .map_err(|e| {
            invalid(format!(
                "{e}: the official account's AppSecret, from 基本配置"
            ))
        })?;
    let template_id = raw
        .template_id
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "{section} needs template_id: the id of a template message the account added, from its 模板消息 page"
            ))
        })?;
    if raw.data.is_empty() {
        return Err(invalid(format!(
            "{section} needs data: the template's keys and what each says, like data = {{ thing1 = \"{{order_id}}\", phrase3 = \"{{status}}\" }}"
        )));
    }
    let mut data = BTreeMap::new();
    for (key, text) in raw.data {
        let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain {
            return Err(invalid(format!(
                "{section} data: {:?} is not a template key (letters, digits and _, like thing1)",
                crate::shown::for_terminal(&key)
            )));
        }
        let template = Template::parse(&text, &PLACEHOLDERS)
            .map_err(|e| invalid(format!("{section} data {key}: {e}")))?;
        data.insert(key, template);
    }
    let url = match raw.url {
        None => None,
        Some(text) => {
            let template = Template::parse(&text, &PLACEHOLDERS)
                .map_err(|e| invalid(format!("{section} url: {e}")))?;
            // Rendered with sample values, it must be a link WeChat can open.
            let sample: Values = PLACEHOLDERS
                .iter()
                .map(|name| ((*name).to_owned(), "1".to_owned()))
                .collect();
            check_url(section, "url", &template.render(&sample))?;
            Some(template)
        }
    };
    let endpoint = endpoint(section, raw.endpoint, DEFAULT_ENDPOINT)?;
    let spacing = raw.rate_limit.map(|r| r.interval());
    Ok(ChannelSettings {
        settings: WechatConfig {
            endpoint,
            appid,
            secret,
            template_id,
            spacing,
            window: raw.rate_limit.map_or(Duration::ZERO, |r| r.per),
            timeout: delivery.timeout,
        },
        triggers: parse_triggers(section, raw.statuses, Some(&BUYER_TRIGGERS))?,
        alerts: None,
        quiet_hours: None,
        texts: Texts {
            wechat_data: data,
            wechat_url: url,
            ..Texts::default()
        },
        concurrency: paced_concurrency(section, raw.concurrency, spacing, delivery)?,
    })
}

/// Messages at once. A paced channel takes one at a time unless told otherwise, as the group
/// robots do: more slots only wait for the same turns. A message waiting in its slot keeps its
/// claim meanwhile (the sender renews it), however many wait before it.
fn paced_concurrency(
    section: &str,
    given: Option<usize>,
    spacing: Option<Duration>,
    delivery: &Delivery,
) -> Result<usize, ConfigError> {
    let default = if spacing.is_some() {
        1
    } else {
        delivery.concurrency
    };
    concurrency(section, given, default)
}
