//! `shipwatch add`: track one order, checked as every other way in is.

use anyhow::Result;

use crate::clock::{Clock, SystemClock};
use crate::intake::{Fields, Intake};

use super::{Access, AddArgs, Global, open, term};

pub(super) async fn add(global: &Global, args: AddArgs) -> Result<()> {
    let (db, config) = open(global, Access::Create).await?;
    let intake = Intake::new(config.as_ref());
    let new = intake.shipment(Fields {
        order_id: args.order_id,
        provider: args.provider,
        tracking_no: args.tracking_no,
        carrier: args.carrier,
        tier: Some(args.tier.to_string()),
        phone: args.phone,
        email: args.email,
        openid: args.openid,
        sub_orders: args.sub_orders,
    })?;
    db.add_shipment(&new, SystemClock.now()).await?;
    println!(
        "tracking order {} on {}, tier {}",
        term(&new.order_id),
        term(&new.provider),
        new.tier
    );
    db.close().await;
    Ok(())
}
