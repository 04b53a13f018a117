//! The JSON document a status change is announced with (DESIGN.md, "Notifications"). It is built
//! once, when the change is recorded, and every delivery attempt sends it unchanged.

use serde::Serialize;

use crate::clock::{Millis, to_rfc3339};
use crate::domain::Status;
use crate::providers::{Trace, TraceEvent};
use crate::storage::ShipmentRow;

pub const STATUS_CHANGED: &str = "shipment.status_changed";

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
            tier: &shipment.tier,
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
