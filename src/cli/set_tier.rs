//! `shipwatch set-tier`: move an order to another priority tier, polled next on the new tier's
//! interval from now.

use anyhow::Result;

use crate::clock::{Clock, SystemClock};
use crate::domain::Tier;

use super::{Access, Global, open, term};

pub(super) async fn set_tier(global: &Global, order_id: &str, tier: Tier) -> Result<()> {
    let (db, config) = open(global, Access::Change).await?;
    let tiers = config.as_ref().map(|c| c.tiers).unwrap_or_default();
    let next = tiers.next_poll_after_move(tier, SystemClock.now());
    db.set_tier(order_id, tier, next).await?;
    println!("order {} is now tier {tier}", term(order_id));
    Ok(())
}
