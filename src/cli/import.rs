//! `shipwatch import`: add the shipments of a CSV file, all of them or none.

use anyhow::{Result, anyhow};

use crate::clock::{Clock, SystemClock};
use crate::config;
use crate::intake::Intake;

use super::{Access, Global, open};

pub(super) async fn import(global: &Global, file: &std::path::Path) -> Result<()> {
    let (db, config) = open(global, Access::Create).await?;
    let intake = Intake::new(config.as_ref())?;
    let shown = file.display().to_string();
    let input = std::fs::File::open(file)
        .map_err(|e| anyhow!("cannot read {shown}: {}", config::io_reason(&e)))?;
    let n = intake.import(&db, file, input, SystemClock.now()).await?;
    println!("imported {n} shipments from {shown}");
    db.close().await;
    Ok(())
}
