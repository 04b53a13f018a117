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

/// Messages at once. Each waits in its slot for the `rate_limit` bucket's turn, and a message
/// that outwaits its claim's lease is claimed again and sent twice. So a paced channel takes one
/// at a time unless told otherwise, as the group robots do, and a `concurrency` whose last
/// message would wait past the lease is refused.
fn paced_concurrency(
    section: &str,
    given: Option<usize>,
    spacing: Option<Duration>,
    delivery: &Delivery,
) -> Result<usize, ConfigError> {
    let Some(spacing) = spacing else {
        return concurrency(section, given, delivery.concurrency);
    };
    let n = concurrency(section, given, 1)?;
    // The limiter's own spacing, a little wider than the quota's (`limiter::HEADROOM`).
    let wait = spacing.div_f64(1.0 - crate::limiter::HEADROOM) * n as u32;
    if n > 1 && wait + delivery.timeout >= delivery.lease {
        return Err(invalid(format!(
            "{section} concurrency = {n} with its rate_limit makes a message wait up to {} for its turn, which with [delivery] timeout ({}) outlasts [delivery] lease ({}): it could be sent twice; lower concurrency, or raise lease",
            humantime::format_duration(round_to_millis(wait)),
            humantime::format_duration(delivery.timeout),
            humantime::format_duration(delivery.lease),
        )));
    }
    Ok(n)
}

fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
