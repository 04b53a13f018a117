//! The `[channels.*]` sections: what every channel shares (its triggers, quiet hours and texts)
//! and the set of enabled channels; each channel's own keys are resolved in the file beside.

mod email;
mod robot;
mod sms;
mod webhook;
mod wechat;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::secrets::SecretResolver;
use super::{ConfigError, Delivery, MAX_CONCURRENCY, invalid};
use crate::domain::Status;
use crate::notify::email::EmailConfig;
use crate::notify::robot::RobotConfig;
use crate::notify::template::{QuietHours, TEXT_PLACEHOLDERS, Template};
use crate::notify::webhook::WebhookConfig;
use crate::notify::wechat::WechatConfig;
use crate::notify::{Alerts, ChannelKind, ChannelRule, Texts};

use email::{RawEmail, resolve_email};
use robot::{DINGTALK, FEISHU, RawRobot, WECOM, resolve_robot};
pub use sms::SmsSettings;
use sms::{RawSms, resolve_sms};
use webhook::{RawWebhook, resolve_webhook};
use wechat::{RawWechat, resolve_wechat};

/// The changes a buyer hears of by default through the channels that reach them one by one
/// (SMS, WeChat): the parcel leaves, is about to arrive, arrives, or is in trouble.
pub(super) const BUYER_TRIGGERS: [Status; 4] = [
    Status::PickedUp,
    Status::OutForDelivery,
    Status::Delivered,
    Status::Exception,
];

/// A channel together with the statuses that trigger it.
#[derive(Debug, Clone)]
pub struct ChannelSettings<T> {
    pub settings: T,
    pub triggers: Vec<Status>,
    pub quiet_hours: Option<QuietHours>,
    pub texts: Texts,
    /// What the channel is told besides status changes; `None` for the channel's default.
    pub alerts: Option<Alerts>,
    /// Deliveries at once on this channel (`concurrency` in its section).
    pub concurrency: usize,
}

impl<T> ChannelSettings<T> {
    fn rule(&self, kind: ChannelKind) -> ChannelRule {
        ChannelRule {
            kind,
            triggers: self.triggers.clone(),
            quiet_hours: self.quiet_hours,
            texts: self.texts.clone(),
            alerts: self.alerts.unwrap_or_else(|| Alerts::default_for(kind)),
            link: None,
            concurrency: Some(self.concurrency),
        }
    }
}

#[derive(Default)]
pub struct Channels {
    pub webhook: Option<ChannelSettings<WebhookConfig>>,
    pub email: Option<ChannelSettings<EmailConfig>>,
    pub sms: Option<ChannelSettings<SmsSettings>>,
    pub dingtalk: Option<ChannelSettings<RobotConfig>>,
    pub wecom: Option<ChannelSettings<RobotConfig>>,
    pub feishu: Option<ChannelSettings<RobotConfig>>,
    pub wechat: Option<ChannelSettings<WechatConfig>>,
    /// `[notify] link`: the order's page, shown in the messages that can carry a link.
    pub link: Option<Template>,
}

impl Channels {
    /// Where a channel sends, as it may be shown: the URL without its secrets (see
    /// [`crate::shown::url`]). `None` for email, whose server is shown by its own checks.
    pub fn shown_target(&self, kind: ChannelKind) -> Option<String> {
        let url = match kind {
            ChannelKind::Webhook => &self.webhook.as_ref()?.settings.url,
            ChannelKind::Sms => match &self.sms.as_ref()?.settings {
                SmsSettings::Aliyun(aliyun) => &aliyun.endpoint,
                SmsSettings::Http(http) => &http.url,
            },
            ChannelKind::Dingtalk => self.dingtalk.as_ref()?.settings.url.expose(),
            ChannelKind::Wecom => self.wecom.as_ref()?.settings.url.expose(),
            ChannelKind::Feishu => {
                let url = self.feishu.as_ref()?.settings.url.expose();
                return Some(crate::shown::url_with_path_token(url));
            }
            ChannelKind::Wechat => {
                let endpoint = &self.wechat.as_ref()?.settings.endpoint;
                return Some(crate::shown::endpoint(endpoint));
            }
            ChannelKind::Email => return None,
        };
        Some(crate::shown::url(url))
    }
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channels")
            .field(
                "webhook",
                &self
                    .webhook
                    .as_ref()
                    .map(|w| crate::shown::endpoint(&w.settings.url)),
            )
            .field(
                "email",
                &self
                    .email
                    .as_ref()
                    .map(|e| crate::shown::endpoint(&e.settings.smtp_url)),
            )
            .field("sms", &self.sms.as_ref().map(|s| &s.settings))
            .field("dingtalk", &self.dingtalk.as_ref().map(|d| &d.settings))
            .field("wecom", &self.wecom.as_ref().map(|w| &w.settings))
            .field("feishu", &self.feishu.as_ref().map(|f| &f.settings))
            .field("wechat", &self.wechat.as_ref().map(|w| &w.settings))
            .finish()
    }
}

impl Channels {
    /// Each enabled channel with its triggers and texts, as the outbox needs them.
    pub fn rules(&self) -> Vec<ChannelRule> {
        let mut rules = Vec::new();
        if let Some(webhook) = &self.webhook {
            rules.push(webhook.rule(ChannelKind::Webhook));
        }
        if let Some(email) = &self.email {
            rules.push(email.rule(ChannelKind::Email));
        }
        if let Some(sms) = &self.sms {
            rules.push(sms.rule(ChannelKind::Sms));
        }
        if let Some(dingtalk) = &self.dingtalk {
            rules.push(dingtalk.rule(ChannelKind::Dingtalk));
        }
        if let Some(wecom) = &self.wecom {
            rules.push(wecom.rule(ChannelKind::Wecom));
        }
        if let Some(feishu) = &self.feishu {
            rules.push(feishu.rule(ChannelKind::Feishu));
        }
        if let Some(wechat) = &self.wechat {
            rules.push(wechat.rule(ChannelKind::Wechat));
        }
        for rule in &mut rules {
            rule.link = self.link.clone();
        }
        rules
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannels {
    webhook: Option<RawWebhook>,
    email: Option<RawEmail>,
    sms: Option<RawSms>,
    dingtalk: Option<RawRobot>,
    wecom: Option<RawRobot>,
    feishu: Option<RawRobot>,
    wechat: Option<RawWechat>,
}

/// Texts for one status.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTexts {
    subject: Option<String>,
    body: Option<String>,
    text: Option<String>,
    template_code: Option<String>,
}

fn yes() -> bool {
    true
}

/// Each enabled channel, resolved in the order webhook, email, SMS, DingTalk, WeCom, Feishu,
/// WeChat.
pub(super) fn resolve_channels(
    raw: RawChannels,
    secrets: &SecretResolver,
    delivery: &Delivery,
) -> Result<Channels, ConfigError> {
    let mut channels = Channels::default();
    if let Some(raw) = raw.webhook.filter(|w| w.enabled) {
        channels.webhook = Some(resolve_webhook(raw, secrets, delivery)?);
    }
    if let Some(raw) = raw.email.filter(|e| e.enabled) {
        channels.email = Some(resolve_email(raw, secrets, delivery)?);
    }
    if let Some(raw) = raw.sms.filter(|s| s.enabled) {
        channels.sms = Some(resolve_sms(raw, secrets, delivery)?);
    }
    if let Some(raw) = raw.dingtalk.filter(|d| d.enabled) {
        channels.dingtalk = Some(resolve_robot(raw, secrets, delivery.timeout, &DINGTALK)?);
    }
    if let Some(raw) = raw.wecom.filter(|w| w.enabled) {
        channels.wecom = Some(resolve_robot(raw, secrets, delivery.timeout, &WECOM)?);
    }
    if let Some(raw) = raw.feishu.filter(|f| f.enabled) {
        channels.feishu = Some(resolve_robot(raw, secrets, delivery.timeout, &FEISHU)?);
    }
    if let Some(raw) = raw.wechat.filter(|w| w.enabled) {
        channels.wechat = Some(resolve_wechat(raw, secrets, delivery)?);
    }
    Ok(channels)
}

/// Deliveries at once on SMS unless its section says otherwise (and never more than
/// `[delivery] concurrency`). An SMS carries nothing a phone could deduplicate on, unlike a
/// webhook's `webhook-id`, an email's `Message-ID` or a WeChat message's `client_msg_id` (which
/// WeChat itself deduplicates on, `notify::wechat`): an SMS that a crash repeats reaches the
/// buyer twice and is billed twice, and a crash repeats at most the deliveries under way (an SMS
/// repeated also counts against Aliyun's limit of 50 notifications a day to one number:
/// https://help.aliyun.com/document_detail/2881383.html). Four at once still sends about 40 a
/// second to a gateway that answers in 100 ms, far more than a shop's buyers' texts need. Nothing
/// upstream asks for fewer: Aliyun allows 5,000 `SendSms` calls a second
/// (https://help.aliyun.com/en/sms/developer-reference/api-dysmsapi-2017-05-25-quota).
pub(super) const SMS_CONCURRENCY: usize = 4;

/// A channel's `concurrency` key, or `default` without it.
fn concurrency(section: &str, given: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        Some(n) => Err(invalid(format!(
            "{section} concurrency = {n} is out of range: the deliveries at once on this channel are between 1 and {MAX_CONCURRENCY}"
        ))),
    }
}

/// `[channels.X.templates.STATUS]` tables: every text checked for unknown placeholders now, so
/// that a typo is a config error, not a blank in a customer's message.
fn parse_texts(
    section: &str,
    raw: BTreeMap<String, RawTexts>,
    allowed: &[&str],
) -> Result<Texts, ConfigError> {
    let mut texts = Texts::default();
    for (status_name, raw) in raw {
        let table = format!("[{section}.templates.{status_name}]");
        let status: Status = status_name
            .parse()
            .map_err(|e| invalid(format!("{table}: {e}")))?;
        let given = [
            ("subject", raw.subject.is_some()),
            ("body", raw.body.is_some()),
            ("text", raw.text.is_some()),
            ("template_code", raw.template_code.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(k, g)| *g && !allowed.contains(k)) {
            return Err(invalid(format!(
                "{table} {key} does not apply here; use {}",
                allowed.join(" or ")
            )));
        }
        let template = |key: &str, text: Option<String>| -> Result<Option<Template>, ConfigError> {
            text.map(|text| {
                Template::parse(&text, &TEXT_PLACEHOLDERS)
                    .map_err(|e| invalid(format!("{table} {key}: {e}")))
            })
            .transpose()
        };
        if let Some(t) = template("subject", raw.subject)? {
            texts.subject.insert(status, t);
        }
        if let Some(t) = template("body", raw.body)? {
            texts.body.insert(status, t);
        }
        if let Some(t) = template("text", raw.text)? {
            texts.sms.insert(status, t);
        }
        if let Some(code) = raw.template_code {
            texts.template_code.insert(status, code);
        }
    }
    Ok(texts)
}

/// A channel's trigger list; when not given, `default`, or every change.
fn parse_triggers(
    section: &str,
    statuses: Option<Vec<String>>,
    default: Option<&[Status]>,
) -> Result<Vec<Status>, ConfigError> {
    match statuses {
        None => Ok(default.map(<[Status]>::to_vec).unwrap_or_else(|| {
            Status::ALL
                .into_iter()
                .filter(|s| *s != Status::Pending)
                .collect()
        })),
        Some(list) => list
            .iter()
            .map(|s| {
                s.parse::<Status>()
                    .map_err(|e| invalid(format!("{section} statuses: {e}")))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
