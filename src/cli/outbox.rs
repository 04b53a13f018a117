//! `shipwatch outbox`: the notifications in the outbox, by state, a page at a time.

use anyhow::Result;

use crate::storage::NotificationView;

use super::print::{Listing, PAGE, notification_line};
use super::{Access, Global, OutboxState, open};

const HEADERS: &[&str] = &[
    "ID",
    "ORDER",
    "CHANNEL",
    "CHANGE",
    "STATE",
    "ATTEMPTS",
    "LAST ERROR",
];

/// Reads and prints a page of notifications at a time ([`PAGE`]): the outbox keeps every
/// message for its retention (three million took 4 GiB and 42 s read whole).
pub(super) async fn outbox(global: &Global, state: Option<OutboxState>, json: bool) -> Result<()> {
    let (db, _) = open(global, Access::Read).await?;
    let state = state.map(OutboxState::as_str);
    let mut listing = Listing::new(json, HEADERS);
    let mut after = None;
    loop {
        let rows = db.notifications_page(state, after, Some(PAGE)).await?;
        listing.page(
            &rows,
            |n| NotificationView::from(n),
            |n| {
                let mut line = notification_line(n);
                line.insert(1, n.order_id.clone());
                line
            },
        )?;
        match rows.last() {
            Some(last) if rows.len() == PAGE as usize => after = Some(last.id),
            _ => break,
        }
    }
    listing.finish("no notifications")?;
    db.close().await;
    Ok(())
}
