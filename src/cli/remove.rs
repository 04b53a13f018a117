//! `shipwatch remove`: stop tracking an order and forget its history.

use anyhow::Result;

use super::{Access, Global, open, term};

pub(super) async fn remove(global: &Global, order_id: &str) -> Result<()> {
    let (db, _) = open(global, Access::Change).await?;
    db.remove_shipment(order_id).await?;
    println!("removed order {}", term(order_id));
    Ok(())
}
