//! The JSON document a status change is announced with (DESIGN.md, "Notifications"). It is built
//! once, when the change is recorded, and every delivery attempt sends it unchanged.

use serde::Serialize;

use crate::clock::{Millis, to_rfc3339};
use crate::domain::Status;
use crate::notify::dingtalk::RobotMessage;
use crate::notify::feishu::FeishuMessage;
use crate::notify::template::{self, Values};
use crate::notify::wechat::WechatMessage;
use crate::notify::wecom::WecomMessage;
use crate::notify::{ChannelKind, ChannelRule, EmailMessage, SmsMessage};
use crate::providers::{Trace, TraceEvent};
use crate::storage::ShipmentRow;

pub const STATUS_CHANGED: &str = "shipment.status_changed";
pub const STUCK: &str = "shipment.stuck";

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    order_id: &'a str,
    tracking_no: Option<&'a str>,
    carrier: Option<&'a str>,
    provider: &'a str,
    tier: &'a str,
    previous_status: Status,
    status: Status,
    raw_status: &'a str,
    event: Option<Event<'a>>,
}

#[derive(Serialize)]
struct Event<'a> {
    time: String,
    description: &'a str,
    location: Option<&'a str>,
}

/// The `shipment.status_changed` body for one transition of `shipment`.
pub fn status_changed(
    id: &str,
    now: Millis,
    shipment: &ShipmentRow,
    trace: &Trace,
    previous: Status,
    newest: Option<&TraceEvent>,
) -> String {
    let envelope = Envelope {
        kind: STATUS_CHANGED,
        id,
        timestamp: to_rfc3339(now),
        data: Data {
            order_id: &shipment.order_id,
            tracking_no: shipment
                .tracking_no
                .as_deref()
                .or(trace.tracking_no.as_deref()),
            carrier: shipment.carrier.as_deref().or(trace.carrier.as_deref()),
            provider: &shipment.provider,
            tier: shipment.tier.as_str(),
            previous_status: previous,
            status: trace.status,
            raw_status: &trace.raw_status,
            event: newest.map(|e| Event {
                time: e.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                description: &e.description,
                location: e.location.as_deref(),
            }),
        },
    };
    serde_json::to_string(&envelope).expect("the payload is plain data")
}

#[derive(Serialize)]
struct StuckEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    timestamp: String,
    data: StuckData<'a>,
}

#[derive(Serialize)]
struct StuckData<'a> {
    order_id: &'a str,
    tracking_no: Option<&'a str>,
    carrier: Option<&'a str>,
    provider: &'a str,
    tier: &'a str,
    status: &'a str,
    last_event_at: String,
    stalled_for_hours: i64,
}

/// The `shipment.stuck` body: a moving parcel has had no news since `quiet_since`.
pub fn stuck(id: &str, now: Millis, shipment: &ShipmentRow, quiet_since: Millis) -> String {
    let envelope = StuckEnvelope {
        kind: STUCK,
        id,
        timestamp: to_rfc3339(now),
        data: StuckData {
            order_id: &shipment.order_id,
            tracking_no: shipment.tracking_no.as_deref(),
            carrier: shipment.carrier.as_deref(),
            provider: &shipment.provider,
            tier: shipment.tier.as_str(),
            status: shipment.status.as_str(),
            last_event_at: to_rfc3339(quiet_since),
            stalled_for_hours: (now - quiet_since) / 3_600_000,
        },
    };
    serde_json::to_string(&envelope).expect("the payload is plain data")
}

/// What one channel queues for a change: the body to send and to whom, or why nothing can be
/// sent (the shipment has no address for this channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    Send {
        payload: String,
        recipient: Option<String>,
    },
    Skip(&'static str),
}

/// The notification `rule` queues for one transition of `shipment`.
pub fn for_channel(
    rule: &ChannelRule,
    id: &str,
    now: Millis,
    shipment: &ShipmentRow,
    trace: &Trace,
    previous: Status,
    newest: Option<&TraceEvent>,
) -> Queued {
    let status = trace.status;
    match rule.kind {
        ChannelKind::Webhook => Queued::Send {
            payload: status_changed(id, now, shipment, trace, previous, newest),
            recipient: None,
        },
        ChannelKind::Email => {
            let Some(email) = &shipment.email else {
                return Queued::Skip("no email address");
            };
            let values = text_values(rule, shipment, trace, newest);
            let subject = rule
                .texts
                .subject
                .get(&status)
                .cloned()
                .unwrap_or_else(|| template::default_email_subject(status));
            let body = rule
                .texts
                .body
                .get(&status)
                .cloned()
                .unwrap_or_else(|| template::default_email_body(status));
            let message = EmailMessage {
                subject: subject.render(&values),
                body: body.render(&values),
            };
            Queued::Send {
                payload: serde_json::to_string(&message).expect("plain data"),
                recipient: Some(email.to_string()),
            }
        }
        ChannelKind::Sms => {
            let Some(phone) = &shipment.phone else {
                return Queued::Skip("no phone number");
            };
            let params = values(shipment, trace, newest);
            let values = text_values(rule, shipment, trace, newest);
            let text = rule
                .texts
                .sms
                .get(&status)
                .cloned()
                .unwrap_or_else(|| template::default_sms(status));
            let message = SmsMessage {
                text: text.render(&values),
                template_code: rule
                    .texts
                    .template_code
                    .get(&status)
                    .cloned()
                    .or_else(|| rule.texts.default_template_code.clone()),
                // A template's parameters are the gateway's: the link is for the text only.
                params,
            };
            Queued::Send {
                payload: serde_json::to_string(&message).expect("plain data"),
                recipient: Some(phone.to_string()),
            }
        }
        ChannelKind::Dingtalk | ChannelKind::Wecom | ChannelKind::Feishu => {
            let robot = RobotText::new(rule, shipment, trace, newest, previous);
            match robot_message(rule.kind, &robot.title, &robot.body()) {
                Some(payload) => Queued::Send {
                    payload,
                    recipient: None,
                },
                None => Queued::Skip("not a group robot"),
            }
        }
        ChannelKind::Wechat => {
            let Some(openid) = &shipment.openid else {
                return Queued::Skip("no OpenID");
            };
            let values = text_values(rule, shipment, trace, newest);
            let data = rule
                .texts
                .wechat_data
                .iter()
                .map(|(key, template)| (key.clone(), template.render(&values)))
                .collect();
            // The channel's own `url`, or else the order's page from `[notify] link`.
            let url = match &rule.texts.wechat_url {
                Some(url) => Some(url.render(&values)),
                None => link(rule, shipment, Some(trace)),
            };
            Queued::Send {
                payload: WechatMessage::new(url, data).to_json(),
                recipient: Some(openid.to_string()),
            }
        }
    }
}

/// A group robot's message in its own shape: a markdown `title` and `body`. DingTalk and WeCom
/// show the title as a heading above the body; Feishu's card shows it in its header. `None` for
/// the channels that are not robots.
pub fn robot_message(kind: ChannelKind, title: &str, body: &str) -> Option<String> {
    let with_heading = || format!("#### {title}\n\n{body}");
    Some(match kind {
        ChannelKind::Dingtalk => RobotMessage::markdown(title.to_owned(), with_heading()).to_json(),
        ChannelKind::Wecom => WecomMessage::markdown(&with_heading()).to_json(),
        ChannelKind::Feishu => FeishuMessage::card(title, body).to_json(),
        ChannelKind::Webhook | ChannelKind::Email | ChannelKind::Sms | ChannelKind::Wechat => {
            return None;
        }
    })
}

/// The `shipment.stuck` message for a group robot: which parcel, in which status, quiet since
/// when, and how to reach the carrier. `None` for the channels that are not robots.
pub fn stuck_for_robot(
    rule: &ChannelRule,
    shipment: &ShipmentRow,
    quiet_since: Millis,
    now: Millis,
) -> Option<String> {
    let hours = (now - quiet_since) / 3_600_000;
    let since = chrono::DateTime::from_timestamp_millis(quiet_since)
        .map(|t| {
            t.with_timezone(&crate::providers::shanghai())
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default();
    let title = format!("订单{}:包裹停滞", shipment.order_id);
    let body = format!(
        "**{status}**,已 {hours} 小时没有新动态\n\n- 订单号:{order}\n- 运单号:{tracking}({carrier})\n- 最后动态:{since}",
        status = template::status_text(shipment.status),
        order = shipment.order_id,
        tracking = shipment.tracking_no.as_deref().unwrap_or(""),
        carrier = shipment.carrier.as_deref().unwrap_or(""),
    );
    let body = with_link(body, link(rule, shipment, None).as_deref());
    robot_message(rule.kind, &title, &body)
}

/// A group robot's message: its title, the change (from which status to which) and the
/// configured or default text.
struct RobotText {
    title: String,
    change: String,
    text: String,
}

impl RobotText {
    fn new(
        rule: &ChannelRule,
        shipment: &ShipmentRow,
        trace: &Trace,
        newest: Option<&TraceEvent>,
        previous: Status,
    ) -> RobotText {
        let status = trace.status;
        let values = text_values(rule, shipment, trace, newest);
        let title = rule
            .texts
            .subject
            .get(&status)
            .cloned()
            .unwrap_or_else(|| template::default_robot_title(status))
            .render(&values);
        let text = rule
            .texts
            .body
            .get(&status)
            .cloned()
            .unwrap_or_else(|| template::default_robot_text(status))
            .render(&values);
        let text = with_link(text, link(rule, shipment, Some(trace)).as_deref());
        let change = format!(
            "**{}** → **{}**",
            template::status_text(previous),
            template::status_text(status)
        );
        RobotText {
            title,
            change,
            text,
        }
    }

    /// The change, then the text.
    fn body(&self) -> String {
        format!("{}\n\n{}", self.change, self.text)
    }
}

/// The order's page, from `[notify] link` with the parcel's values put in URL-safe: an order id
/// with `/`, `?`, spaces or `)` cannot change where the link leads or break the markdown around it.
pub fn link(rule: &ChannelRule, shipment: &ShipmentRow, trace: Option<&Trace>) -> Option<String> {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let template = rule.link.as_ref()?;
    let mut values = Values::new();
    let mut put = |name: &str, value: Option<&str>| {
        let encoded = percent_encoding::utf8_percent_encode(value.unwrap_or(""), UNRESERVED);
        values.insert(name.to_owned(), encoded.to_string());
    };
    put("order_id", Some(&shipment.order_id));
    put(
        "tracking_no",
        shipment
            .tracking_no
            .as_deref()
            .or(trace.and_then(|t| t.tracking_no.as_deref())),
    );
    put(
        "carrier",
        shipment
            .carrier
            .as_deref()
            .or(trace.and_then(|t| t.carrier.as_deref())),
    );
    Some(template.render(&values))
}

/// A robot's markdown text with the order's page as its last line, unless the text shows it
/// already (a template that places `{link}` itself).
fn with_link(text: String, link: Option<&str>) -> String {
    match link {
        Some(link) if !text.contains(link) => format!("{text}\n\n[查看订单]({link})"),
        _ => text,
    }
}

/// The values a channel's texts render with: the change's [`values`] and `link`.
fn text_values(
    rule: &ChannelRule,
    shipment: &ShipmentRow,
    trace: &Trace,
    newest: Option<&TraceEvent>,
) -> Values {
    let mut values = values(shipment, trace, newest);
    values.insert(
        "link".to_owned(),
        link(rule, shipment, Some(trace)).unwrap_or_default(),
    );
    values
}

/// The placeholder values of a change, times in Asia/Shanghai.
pub fn values(shipment: &ShipmentRow, trace: &Trace, newest: Option<&TraceEvent>) -> Values {
    let mut values = Values::new();
    let mut put = |name: &str, value: Option<&str>| {
        values.insert(name.to_owned(), value.unwrap_or("").to_owned());
    };
    put("order_id", Some(&shipment.order_id));
    put(
        "tracking_no",
        shipment
            .tracking_no
            .as_deref()
            .or(trace.tracking_no.as_deref()),
    );
    put(
        "carrier",
        shipment.carrier.as_deref().or(trace.carrier.as_deref()),
    );
    put("status", Some(template::status_text(trace.status)));
    put("event", newest.map(|e| e.description.as_str()));
    let time = newest.map(|e| {
        e.time
            .with_timezone(&crate::providers::shanghai())
            .format("%Y-%m-%d %H:%M")
            .to_string()
    });
    put("event_time", time.as_deref());
    values
}
