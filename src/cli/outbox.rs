//! `shipwatch outbox`: the notifications in the outbox, by state.

use anyhow::Result;

use crate::storage::NotificationView;

use super::print::{notification_line, print_json, print_table};
use super::{Access, Global, OutboxState, open};

pub(super) async fn outbox(global: &Global, state: Option<OutboxState>, json: bool) -> Result<()> {
    let (db, _) = open(global, Access::Read).await?;
    let rows = db
        .list_notifications(state.map(OutboxState::as_str), None)
        .await?;
    if json {
        let views: Vec<NotificationView> = rows.iter().map(NotificationView::from).collect();
        return print_json(&views);
    }
    if rows.is_empty() {
        println!("no notifications");
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|n| {
            let mut line = notification_line(n);
            line.insert(1, n.order_id.clone());
            line
        })
        .collect();
    print_table(
        &[
            "ID",
            "ORDER",
            "CHANNEL",
            "CHANGE",
            "STATE",
            "ATTEMPTS",
            "LAST ERROR",
        ],
        &table,
    );
    db.close().await;
    Ok(())
}
