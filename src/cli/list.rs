//! `shipwatch list`: the tracked shipments, as a table or as JSON.

use anyhow::Result;

use crate::clock::to_rfc3339;
use crate::domain::{Status, Tier};
use crate::storage::{ShipmentRow, ShipmentView};

use super::print::{print_json, print_table};
use super::{Access, Global, open};

pub(super) async fn list(
    global: &Global,
    status: Option<Status>,
    tier: Option<Tier>,
    json: bool,
) -> Result<()> {
    let (db, _) = open(global, Access::Read).await?;
    let rows = db.list_shipments(status, tier).await?;
    if json {
        let views: Vec<ShipmentView> = rows.iter().map(ShipmentView::from).collect();
        return print_json(&views);
    }
    if rows.is_empty() {
        println!("no shipments");
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows.iter().map(shipment_line).collect();
    print_table(
        &[
            "ORDER",
            "PROVIDER",
            "TIER",
            "STATUS",
            "RAW STATUS",
            "NEXT POLL",
            "NOTE",
        ],
        &table,
    );
    db.close().await;
    Ok(())
}

fn shipment_line(row: &ShipmentRow) -> Vec<String> {
    let next = if row.active {
        to_rfc3339(row.next_poll_at)
    } else {
        "-".to_owned()
    };
    let note = match (&row.error, row.active) {
        (Some(e), false) => format!("INVALID: {e}"),
        (Some(e), true) => format!("last poll failed: {e}"),
        (None, _) => String::new(),
    };
    vec![
        row.order_id.clone(),
        row.provider.clone(),
        row.tier.to_string(),
        row.status.to_string(),
        row.raw_status.clone().unwrap_or_default(),
        next,
        note,
    ]
}
