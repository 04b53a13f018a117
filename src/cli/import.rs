//! `shipwatch import`: add the shipments of a CSV file, all of them or none.

use anyhow::{Result, anyhow, bail};

use crate::clock::{Clock, SystemClock};
use crate::config;
use crate::intake::Intake;
use crate::storage::{Db, NewShipment, StorageError};

use super::{Global, open};

/// Rows inserted per batch: memory holds one batch, whatever the file's size.
const IMPORT_BATCH: usize = 1000;

pub(super) async fn import(global: &Global, file: &std::path::Path) -> Result<()> {
    let (db, config) = open(global).await?;
    let intake = Intake::new(config.as_ref())?;
    let shown = file.display().to_string();
    let input = std::fs::File::open(file)
        .map_err(|e| anyhow!("cannot read {shown}: {}", config::io_reason(&e)))?;
    let mut rows = intake
        .csv_rows(input, &shown)
        .map_err(|reason| anyhow!("{reason}; nothing was imported"))?;
    // One transaction for the whole file: all of it or nothing, however many batches.
    let mut import = db.begin_import(SystemClock.now()).await?;
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    loop {
        batch.clear();
        for row in rows.by_ref().take(IMPORT_BATCH) {
            batch.push(row.map_err(|reason| anyhow!("{reason}; nothing was imported"))?);
        }
        if batch.is_empty() {
            break;
        }
        let shipments: Vec<_> = batch.iter().map(|(_, new)| new.clone()).collect();
        if let Err((i, e)) = import.add(&shipments).await {
            let (line, new) = &batch[i];
            drop(import);
            bail!(
                "{}; nothing was imported",
                import_refusal(&db, &intake, file, *line, new, e).await
            );
        }
    }
    let n = import.commit().await?;
    println!("imported {n} shipments from {shown}");
    db.close().await;
    Ok(())
}

/// Why the database refused line `line` of an import, in one line. A repeated order id says
/// where it was first: earlier in the file, or tracked already.
async fn import_refusal(
    db: &Db,
    intake: &Intake,
    file: &std::path::Path,
    line: u64,
    new: &NewShipment,
    error: StorageError,
) -> String {
    let shown = file.display();
    if !matches!(error, StorageError::Duplicate(_)) {
        return format!("{shown} line {line}: {error}");
    }
    // The import's own rows are not committed: what the database holds was there before.
    if db.shipment(&new.order_id).await.is_ok() {
        return format!("{shown} line {line}: {error}");
    }
    match intake.line_of(file, &new.order_id).filter(|&l| l < line) {
        Some(first) => format!(
            "{shown} line {line}, column order_id: order {} is already on line {first}",
            new.order_id
        ),
        // A file that cannot be read twice (a pipe).
        None => format!(
            "{shown} line {line}, column order_id: order {} is already on an earlier line",
            new.order_id
        ),
    }
}
