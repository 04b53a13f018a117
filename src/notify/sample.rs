//! The sample notification `shipwatch test-notify` sends to check a channel before going live: a
//! made-up parcel, out for delivery and now signed for, rendered through the channel's own rule
//! exactly as a real change would be.

use crate::clock::{Millis, to_shanghai};
use crate::domain::{Email, InvalidOpenId, InvalidPhone, OpenId, Phone, Status, Tier};
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
    /// A group robot's own group.
    Robot,
    Phone(Phone),
    Email(Email),
    OpenId(OpenId),
}

/// Why `--to` names no one a sample can go to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecipient {
    #[error("give --to: the address or phone number to send the sample to")]
    Missing,
    #[error("give --to: the OpenID of a follower of the official account to send the sample to")]
    MissingOpenId,
    #[error("a {0} robot posts to its own group: leave out --to")]
    Robot(ChannelKind),
    #[error(transparent)]
    Phone(#[from] InvalidPhone),
    #[error(transparent)]
    OpenId(#[from] InvalidOpenId),
    /// Shown whole: the operator just typed it.
    #[error("{0:?} is not an email address")]
    Email(String),
}

/// Why a sample would send nothing: the channel's rule skips the sample parcel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nothing to send: the sample has no address for {0}")]
pub struct NothingToSend(pub ChannelKind);

impl Recipient {
    /// Reads `to` for a sample through `kind`: a webhook may go elsewhere than configured, an
    /// email or an SMS needs someone to reach.
    pub fn parse(kind: ChannelKind, to: Option<&str>) -> Result<Recipient, InvalidRecipient> {
        match (kind, to) {
            (ChannelKind::Webhook, url) => Ok(Recipient::Webhook(url.map(str::to_owned))),
            (ChannelKind::Dingtalk | ChannelKind::Wecom | ChannelKind::Feishu, None) => {
                Ok(Recipient::Robot)
            }
            (ChannelKind::Dingtalk | ChannelKind::Wecom | ChannelKind::Feishu, Some(_)) => {
                Err(InvalidRecipient::Robot(kind))
            }
            (ChannelKind::Wechat, None) => Err(InvalidRecipient::MissingOpenId),
            (_, None) => Err(InvalidRecipient::Missing),
            (ChannelKind::Wechat, Some(openid)) => Ok(Recipient::OpenId(OpenId::parse(openid)?)),
            (ChannelKind::Sms, Some(phone)) => Ok(Recipient::Phone(Phone::parse(phone)?)),
            (ChannelKind::Email, Some(email)) => Email::parse(email)
                .map(Recipient::Email)
                .map_err(|_| InvalidRecipient::Email(email.to_owned())),
        }
    }
}

/// The sample parcel: an order out for delivery with a Shunfeng waybill, reachable at
/// `recipient` when that is a phone, an email address or an OpenID.
pub fn shipment(now: Millis, recipient: &Recipient) -> ShipmentRow {
    let (mut phone, mut email, mut openid) = (None, None, None);
    match recipient {
        Recipient::Webhook(_) | Recipient::Robot => {}
        Recipient::Phone(p) => phone = Some(p.clone()),
        Recipient::Email(e) => email = Some(e.clone()),
        Recipient::OpenId(o) => openid = Some(o.clone()),
    }
    ShipmentRow {
        id: 0,
        order_id: "TEST-0001".to_owned(),
        provider: "test".to_owned(),
        tracking_no: Some("SF1234567890".to_owned()),
        carrier: Some("顺丰速运".to_owned()),
        tier: Tier::Normal,
        phone,
        email,
        openid,
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
        events_digest: None,
        type_error: None,
        invalid_contact: None,
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
pub fn message(
    rule: &ChannelRule,
    now: Millis,
    recipient: &Recipient,
) -> Result<Outgoing, NothingToSend> {
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
        Queued::Skip(_) => Err(NothingToSend(rule.kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn phone(text: &str) -> Phone {
        Phone::parse(text).expect("a mainland mobile")
    }

    fn email(text: &str) -> Email {
        Email::parse(text).expect("an email address")
    }

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
            Err(InvalidRecipient::Missing)
        );
        assert_eq!(
            InvalidRecipient::Missing.to_string(),
            "give --to: the address or phone number to send the sample to"
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Email, Some("not an address")).map_err(|e| e.to_string()),
            Err("\"not an address\" is not an email address".to_owned())
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Email, Some("buyer@example.com")),
            Ok(Recipient::Email(email("buyer@example.com")))
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Sms, Some("+86 138-1234-5678")),
            Ok(Recipient::Phone(phone("13812345678")))
        );
        assert!(Recipient::parse(ChannelKind::Sms, Some("12")).is_err());
        assert_eq!(
            Recipient::parse(ChannelKind::Wechat, None),
            Err(InvalidRecipient::MissingOpenId)
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Wechat, Some("oia2TjuEGTNoeX76QEjQNrcURxG8")),
            Ok(Recipient::OpenId(
                OpenId::parse("oia2TjuEGTNoeX76QEjQNrcURxG8").unwrap()
            ))
        );
        let err = Recipient::parse(ChannelKind::Wechat, Some("not an openid"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a WeChat OpenID"), "{err}");
        let row = shipment(
            NOW,
            &Recipient::OpenId(OpenId::parse("oia2TjuEGTNoeX76QEjQNrcURxG8").unwrap()),
        );
        assert_eq!(
            row.openid.as_ref().map(OpenId::as_str),
            Some("oia2TjuEGTNoeX76QEjQNrcURxG8")
        );
        assert_eq!((row.phone, row.email), (None, None));
    }

    #[test]
    fn the_sample_parcel_is_out_for_delivery_and_reachable_where_the_sample_goes() {
        let row = shipment(NOW, &Recipient::Phone(phone("13812345678")));
        assert_eq!(row.order_id, "TEST-0001");
        assert_eq!(row.status, Status::OutForDelivery);
        assert_eq!(row.phone.as_ref().map(Phone::as_str), Some("13812345678"));
        assert_eq!(row.email, None);
        assert_eq!((row.created_at, row.next_poll_at), (NOW, NOW));
        let emailed = shipment(NOW, &Recipient::Email(email("buyer@example.com")));
        assert_eq!(
            (emailed.phone, emailed.email.as_ref().map(Email::as_str)),
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
            &Recipient::Phone(phone("13812345678")),
        )
        .expect("a phone number to send to");
        assert_eq!(sms.recipient.as_deref(), Some("13812345678"));
    }

    #[test]
    fn a_robot_sample_is_markdown_for_the_group() {
        assert_eq!(
            Recipient::parse(ChannelKind::Dingtalk, None),
            Ok(Recipient::Robot)
        );
        assert_eq!(
            Recipient::parse(ChannelKind::Dingtalk, Some("13812345678")).map_err(|e| e.to_string()),
            Err("a dingtalk robot posts to its own group: leave out --to".to_owned())
        );
        let robot = message(&rule(ChannelKind::Dingtalk), NOW, &Recipient::Robot)
            .expect("a robot always sends");
        assert_eq!(robot.recipient, None);
        let body: crate::notify::dingtalk::RobotMessage =
            serde_json::from_str(&robot.payload).unwrap();
        assert_eq!(body.msgtype, "markdown");
        assert_eq!(body.markdown.title, "订单TEST-0001:已签收");
        let text = &body.markdown.text;
        assert!(
            text.starts_with("#### 订单TEST-0001:已签收\n\n**派送中** → **已签收**"),
            "{text}"
        );
        for part in [
            "- 运单号:SF1234567890(顺丰速运)",
            "已签收,签收人:本人(测试消息)",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }

    #[test]
    fn a_sample_with_no_address_for_its_channel_sends_nothing() {
        let refused = message(&rule(ChannelKind::Email), NOW, &Recipient::Webhook(None));
        assert_eq!(
            refused.map(|m| m.public_id).map_err(|e| e.to_string()),
            Err("nothing to send: the sample has no address for email".to_owned())
        );
    }
}
