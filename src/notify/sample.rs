//! The sample notification `shipwatch test-notify` sends to check a channel before going live: a
//! made-up parcel, out for delivery and now signed for, rendered through the channel's own rule
//! exactly as a real change would be.

use crate::clock::{Millis, to_shanghai};
use crate::domain::{Status, Tier};
use crate::notify::payload::{Queued, for_channel};
use crate::notify::{ChannelKind, ChannelRule, Outgoing};
use crate::providers::{Trace, TraceEvent};
use crate::storage::ShipmentRow;

/// The status the sample parcel had before the sample change.
pub const PREVIOUS: Status = Status::OutForDelivery;

/// Where a sample goes, as given for its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// The configured webhook URL, or another one.
    Webhook(Option<String>),
    /// A mainland mobile number, normalised.
    Phone(String),
    Email(String),
}

impl Recipient {
    /// Reads `to` for a sample through `kind`: a webhook may go elsewhere than configured, an
    /// email or an SMS needs someone to reach.
    pub fn parse(kind: ChannelKind, to: Option<&str>) -> Result<Recipient, String> {
        match (kind, to) {
            (ChannelKind::Webhook, url) => Ok(Recipient::Webhook(url.map(str::to_owned))),
            (_, None) => Err("give --to: the address or phone number to send the sample to".into()),
            (ChannelKind::Sms, Some(phone)) => {
                crate::domain::mainland_mobile(phone).map(Recipient::Phone)
            }
            (ChannelKind::Email, Some(email)) => match email.parse::<lettre::Address>() {
                Ok(_) => Ok(Recipient::Email(email.to_owned())),
                Err(_) => Err(format!("{email:?} is not an email address")),
            },
        }
    }
}

/// The sample parcel: an order out for delivery with a Shunfeng waybill, reachable at
/// `recipient` when that is a phone or an email address.
pub fn shipment(now: Millis, recipient: &Recipient) -> ShipmentRow {
    let (phone, email) = match recipient {
        Recipient::Webhook(_) => (None, None),
        Recipient::Phone(phone) => (Some(phone.clone()), None),
        Recipient::Email(email) => (None, Some(email.clone())),
    };
    ShipmentRow {
        id: 0,
        order_id: "TEST-0001".to_owned(),
        provider: "test".to_owned(),
        tracking_no: Some("SF1234567890".to_owned()),
        carrier: Some("顺丰速运".to_owned()),
        tier: Tier::Normal,
        phone,
        email,
        status: PREVIOUS,
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
    }
}

/// What the sample parcel's carrier says at `now`: signed for, with one event saying so.
pub fn trace(now: Millis) -> Trace {
    let event = TraceEvent {
        time: to_shanghai(now),
        description: "【北京市】已签收,签收人:本人(测试消息)".to_owned(),
        location: Some("北京市".to_owned()),
        raw_code: None,
    };
    Trace {
        status: Status::Delivered,
        raw_status: "对方已签收".to_owned(),
        events: vec![event],
        carrier: None,
        tracking_no: None,
        unmapped: Vec::new(),
    }
}

/// The sample message `rule` sends to `recipient` at `now`, as the delivery of a real change
/// would send it; an error when the rule would send nothing.
pub fn message(rule: &ChannelRule, now: Millis, recipient: &Recipient) -> Result<Outgoing, String> {
    let sample = shipment(now, recipient);
    let trace = trace(now);
    let public_id = format!("msg_test{now}");
    match for_channel(
        rule,
        &public_id,
        now,
        &sample,
        &trace,
        PREVIOUS,
        trace.events.last(),
    ) {
        Queued::Send { payload, recipient } => Ok(Outgoing {
            public_id,
            payload,
            recipient,
        }),
        Queued::Skip(_) => Err(format!(
            "nothing to send: the sample has no address for {}",
            rule.kind
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn rule(kind: ChannelKind) -> ChannelRule {
        ChannelRule::new(kind, Status::ALL.to_vec())
    }

    #[test]
    fn a_sample_needs_someone_to_reach_except_on_a_webhook() {
        assert_eq!(
            Recipient::parse(ChannelKind::Webhook, None),
            Ok(Recipient::Webhook(None))
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Webhook, Some("https://elsewhere.example/hook")),
            Ok(Recipient::Webhook(Some(
                "https://elsewhere.example/hook".to_owned()
            )))
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Sms, None),
            Err("give --to: the address or phone number to send the sample to".to_owned())
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Email, Some("not an address")),
            Err("\"not an address\" is not an email address".to_owned())
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Email, Some("buyer@example.com")),
            Ok(Recipient::Email("buyer@example.com".to_owned()))
        );
        assert!(Recipient::parse(ChannelKind::Sms, Some("12")).is_err());
    }

    #[test]
    fn the_sample_parcel_is_out_for_delivery_and_reachable_where_the_sample_goes() {
        let phone = Recipient::Phone("13812345678".to_owned());
        let row = shipment(NOW, &phone);
        assert_eq!(row.order_id, "TEST-0001");
        assert_eq!(row.status, Status::OutForDelivery);
        assert_eq!(row.phone.as_deref(), Some("13812345678"));
        assert_eq!(row.email, None);
        assert_eq!((row.created_at, row.next_poll_at), (NOW, NOW));
        let email = shipment(NOW, &Recipient::Email("buyer@example.com".to_owned()));
        assert_eq!(
            (email.phone, email.email.as_deref()),
            (None, Some("buyer@example.com"))
        );
        let trace = trace(NOW);
        assert_eq!(trace.status, Status::Delivered);
        assert_eq!(trace.events.len(), 1);
    }

    #[test]
    fn the_sample_message_is_a_delivery_rendered_for_the_channel() {
        let webhook = message(&rule(ChannelKind::Webhook), NOW, &Recipient::Webhook(None))
            .expect("a webhook always sends");
        assert_eq!(webhook.public_id, format!("msg_test{NOW}"));
        assert_eq!(webhook.recipient, None);
        for part in [
            "\"order_id\":\"TEST-0001\"",
            "\"previous_status\":\"out_for_delivery\"",
            "\"status\":\"delivered\"",
        ] {
            assert!(
                webhook.payload.contains(part),
                "{part}: {}",
                webhook.payload
            );
        }
        let sms = message(
            &rule(ChannelKind::Sms),
            NOW,
            &Recipient::Phone("13812345678".to_owned()),
        )
        .expect("a phone number to send to");
        assert_eq!(sms.recipient.as_deref(), Some("13812345678"));
    }

    #[test]
    fn a_sample_with_no_address_for_its_channel_sends_nothing() {
        let refused = message(&rule(ChannelKind::Email), NOW, &Recipient::Webhook(None));
        assert_eq!(
            refused.map(|m| m.public_id),
            Err("nothing to send: the sample has no address for email".to_owned())
        );
    }
}
