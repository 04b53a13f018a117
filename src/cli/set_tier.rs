//! `shipwatch set-tier`: move an order to another priority tier, polled next on the new tier's
//! interval from now. An order flagged invalid is not polled on any tier: it is refused, with
//! what to do instead.

use anyhow::{Result, bail};

use crate::clock::{Clock, SystemClock};
use crate::domain::Tier;

use super::{Access, Global, open, term};

pub(super) async fn set_tier(global: &Global, order_id: &str, tier: Tier) -> Result<()> {
    let (db, config) = open(global, Access::Change).await?;
    let tiers = config.as_ref().map(|c| c.tiers).unwrap_or_default();
    let row = db.shipment(order_id).await?;
    if row.is_invalid() {
        db.close().await;
        bail!(
            "order {order_id} is invalid ({}); fix it and run `shipwatch recheck {order_id}`",
            row.error.as_deref().unwrap_or_default()
        );
    }
    let next = tiers.next_poll_after_move(tier, SystemClock.now());
    db.set_tier(order_id, tier, next).await?;
    db.close().await;
    println!("order {} is now tier {tier}", term(order_id));
    Ok(())
}
