//! `shipwatch show`: one shipment with its event history and notifications, contacts masked
//! unless revealed.

use anyhow::Result;
use serde::Serialize;

use crate::clock::to_rfc3339;
use crate::domain::{Email, OpenId, Phone, mask_contact};
use crate::storage::{NotificationView, ShipmentView};

use super::print::{notification_line, print_json, print_table};
use super::{Access, Global, open, term};

#[derive(Serialize)]
struct ShowView<'a> {
    shipment: ShipmentView,
    events: &'a [crate::storage::EventRow],
    notifications: Vec<NotificationView>,
    /// The Kuaidi100 subscription of a push-mode provider's shipment, once subscribed.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<crate::storage::SubscriptionRow>,
}

pub(super) async fn show(global: &Global, order_id: &str, json: bool, reveal: bool) -> Result<()> {
    let (db, _) = open(global, Access::Read).await?;
    let row = db.shipment(order_id).await?;
    let events = db.events(row.id).await?;
    let notifications = db.list_notifications(None, Some(row.id)).await?;
    let subscription = db.subscription(row.id).await?;
    if json {
        let mut shipment = ShipmentView::from(&row);
        if reveal {
            shipment.phone = row.phone.as_ref().map(ToString::to_string);
            shipment.email = row.email.as_ref().map(ToString::to_string);
            shipment.openid = row.openid.as_ref().map(ToString::to_string);
        }
        return print_json(&ShowView {
            shipment,
            events: &events,
            notifications: notifications.iter().map(NotificationView::from).collect(),
            subscription,
        });
    }
    let field = |name: &str, value: Option<String>| {
        let value = value.unwrap_or_else(|| "-".to_owned());
        println!("{name:<18}{}", term(&value));
    };
    field("order", Some(row.order_id.clone()));
    field("provider", Some(row.provider.clone()));
    field("tier", Some(row.tier.to_string()));
    field(
        "status",
        Some(match &row.raw_status {
            Some(raw) => format!("{} ({raw})", row.status),
            None => row.status.to_string(),
        }),
    );
    field("tracking no", row.tracking_no.clone());
    field("carrier", row.carrier.clone());
    if row.sub_orders.is_some() {
        field("sub-orders", row.sub_orders.clone());
    }
    let contact = |value: Option<&str>| {
        value.map(|v| {
            if reveal {
                v.to_owned()
            } else {
                mask_contact(v)
            }
        })
    };
    field("phone", contact(row.phone.as_ref().map(Phone::as_str)));
    field("email", contact(row.email.as_ref().map(Email::as_str)));
    if row.openid.is_some() {
        field("openid", contact(row.openid.as_ref().map(OpenId::as_str)));
    }
    if let Some(s) = &subscription {
        let mut text = format!("{} since {}", s.state.as_str(), to_rfc3339(s.subscribed_at));
        if let Some(at) = s.last_callback_at {
            text.push_str(&format!(", last callback {}", to_rfc3339(at)));
        }
        if let Some(message) = &s.message {
            text.push_str(&format!(" ({message})"));
        }
        field("subscription", Some(text));
    }
    field(
        "polling",
        Some(match (&row.error, row.active) {
            (Some(e), false) => format!("stopped: INVALID: {e}"),
            (None, false) => "stopped (final status)".to_owned(),
            (_, true) => format!("next at {}", to_rfc3339(row.next_poll_at)),
        }),
    );
    if let (Some(e), true) = (&row.error, row.active) {
        field("last poll failed", Some(e.clone()));
    }
    field("last polled", row.last_polled_at.map(to_rfc3339));
    field("status changed", row.status_changed_at.map(to_rfc3339));
    println!();
    if events.is_empty() {
        println!("no events yet");
    } else {
        println!("events:");
        for e in &events {
            let location = e
                .location
                .as_deref()
                .map_or(String::new(), |l| format!(" [{l}]"));
            println!(
                "  {}  {}",
                to_rfc3339(e.time),
                term(&format!("{}{location}", e.description))
            );
        }
    }
    println!();
    if notifications.is_empty() {
        println!("no notifications");
    } else {
        println!("notifications:");
        let table: Vec<Vec<String>> = notifications.iter().map(notification_line).collect();
        print_table(
            &["ID", "CHANNEL", "CHANGE", "STATE", "ATTEMPTS", "LAST ERROR"],
            &table,
        )?;
    }
    db.close().await;
    Ok(())
}
