//! `shipwatch test-notify`: send one sample message through a configured channel, to check it
//! before going live.

use anyhow::{Result, anyhow, bail};

use crate::clock::{Clock, SystemClock};
use crate::domain::{Email, Phone, mask_contact};
use crate::storage::ShipmentRow;

use super::{ChannelArg, Global, require_config};

/// Sends one sample notification, as a delivered parcel would produce it, through a configured
/// channel, and prints what the other side answered.
pub(super) async fn test_notify(
    global: &Global,
    channel: ChannelArg,
    to: Option<String>,
) -> Result<()> {
    use crate::notify::payload::{Queued, for_channel};
    use crate::notify::{ChannelKind, DeliveryError, Outgoing};

    let mut config = require_config(global)?;
    let kind = match channel {
        ChannelArg::Webhook => ChannelKind::Webhook,
        ChannelArg::Email => ChannelKind::Email,
        ChannelArg::Sms => ChannelKind::Sms,
    };
    let (phone, email) = match (kind, &to) {
        (ChannelKind::Webhook, Some(url)) => {
            let webhook = config
                .channels
                .webhook
                .as_mut()
                .ok_or_else(|| anyhow!("the config has no [channels.webhook] section"))?;
            webhook.settings.url = url.clone();
            (None, None)
        }
        (ChannelKind::Webhook, None) => (None, None),
        (_, None) => bail!("give --to: the address or phone number to send the sample to"),
        (ChannelKind::Sms, Some(phone)) => (Some(Phone::parse(phone)?), None),
        (ChannelKind::Email, Some(email)) => (
            None,
            // Shown whole: the operator just typed it.
            Some(Email::parse(email).map_err(|_| anyhow!("{email:?} is not an email address"))?),
        ),
    };
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
    let now = SystemClock.now();
    let sample = ShipmentRow {
        id: 0,
        order_id: "TEST-0001".to_owned(),
        provider: "test".to_owned(),
        tracking_no: Some("SF1234567890".to_owned()),
        carrier: Some("顺丰速运".to_owned()),
        tier: crate::domain::Tier::Normal,
        phone,
        email,
        status: crate::domain::Status::OutForDelivery,
        raw_status: None,
        active: true,
        error: None,
        transitions: 0,
        next_poll_at: now,
        last_polled_at: None,
        last_event_at: None,
        status_changed_at: None,
        created_at: now,
        sub_orders: None,
        type_error: None,
        invalid_contact: None,
    };
    let event = crate::providers::TraceEvent {
        time: crate::clock::to_shanghai(now),
        description: "【北京市】已签收,签收人:本人(测试消息)".to_owned(),
        location: Some("北京市".to_owned()),
        raw_code: None,
    };
    let trace = crate::providers::Trace {
        status: crate::domain::Status::Delivered,
        raw_status: "对方已签收".to_owned(),
        events: vec![event],
        carrier: None,
        tracking_no: None,
        unmapped: Vec::new(),
    };
    let public_id = format!("msg_test{now}");
    let Queued::Send { payload, recipient } = for_channel(
        &rule,
        &public_id,
        now,
        &sample,
        &trace,
        crate::domain::Status::OutForDelivery,
        trace.events.last(),
    ) else {
        bail!("nothing to send: the sample has no address for {kind}");
    };
    let shown_to = recipient
        .as_deref()
        .map_or_else(String::new, |r| format!(" to {}", mask_contact(r)));
    println!("sending a sample {kind} notification{shown_to} ...");
    let message = Outgoing {
        public_id,
        payload,
        recipient,
    };
    match sender.deliver(&message).await {
        Ok(()) => {
            println!("accepted: the {kind} channel works");
            Ok(())
        }
        Err(DeliveryError::Permanent(e)) => bail!("refused for good: {e}"),
        Err(e) => bail!("failed for now (the daemon would retry): {e}"),
    }
}
