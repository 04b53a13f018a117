//! `shipwatch test-notify`: send one sample message through a configured channel, to check it
//! before going live.

use anyhow::{Result, anyhow, bail};

use crate::clock::{Clock, SystemClock};
use crate::domain::mask_contact;
use crate::notify::sample::{self, Recipient};
use crate::notify::{ChannelKind, DeliveryError};

use super::{ChannelArg, Global, require_config};

/// Sends one sample notification, as a delivered parcel would produce it, through a configured
/// channel, and prints what the other side answered.
pub(super) async fn test_notify(
    global: &Global,
    channel: ChannelArg,
    to: Option<String>,
) -> Result<()> {
    let mut config = require_config(global)?;
    let kind = match channel {
        ChannelArg::Webhook => ChannelKind::Webhook,
        ChannelArg::Email => ChannelKind::Email,
        ChannelArg::Sms => ChannelKind::Sms,
        ChannelArg::Dingtalk => ChannelKind::Dingtalk,
        ChannelArg::Wecom => ChannelKind::Wecom,
        ChannelArg::Feishu => ChannelKind::Feishu,
        ChannelArg::Wechat => ChannelKind::Wechat,
    };
    let recipient = Recipient::parse(kind, to.as_deref())?;
    if let Recipient::Webhook(Some(url)) = &recipient {
        let webhook = config
            .channels
            .webhook
            .as_mut()
            .ok_or_else(|| anyhow!("the config has no [channels.webhook] section"))?;
        webhook.settings.url = url.clone();
    }
    let rule = config
        .channels
        .rules()
        .into_iter()
        .find(|r| r.kind == kind)
        .ok_or_else(|| anyhow!("the config has no [channels.{kind}] section"))?;
    let sender = crate::daemon::build_channels(&config)?
        .into_iter()
        .find(|c| c.kind() == kind)
        .expect("a configured channel is built");
    let message = sample::message(&rule, SystemClock.now(), &recipient)?;
    let shown_to = message
        .recipient
        .as_deref()
        .map_or_else(String::new, |r| format!(" to {}", mask_contact(r)));
    println!("sending a sample {kind} notification{shown_to} ...");
    match sender.deliver(&message).await {
        Ok(()) => {
            println!("accepted: the {kind} channel works");
            Ok(())
        }
        Err(DeliveryError::Permanent(e)) => bail!("refused for good: {e}"),
        Err(DeliveryError::Undeliverable(e)) => bail!("cannot reach this recipient: {e}"),
        Err(e) => bail!("failed for now (the daemon would retry): {e}"),
    }
}
