//! `shipwatch copy --to FILE|URL`: every row of the database into an empty one, SQLite to
//! PostgreSQL or back (issue 17), so that a shop moves to a shared PostgreSQL database, or back
//! to one file, without losing its history. The copy and its check are the store's
//! ([`crate::storage::copy`]); this file opens both sides and prints what was copied.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::config::Config;
use crate::storage::copy::{Copied, copy_database};
use crate::storage::receipts::path_beside;
use crate::storage::{Db, Location};

use super::{Global, database_path, optional_config, term};

pub(super) async fn copy(global: &Global, to: &Location) -> Result<()> {
    let config = optional_config(global)?;
    let from = database_path(global, config.as_ref())?;
    if from == *to {
        bail!("--to names the database the copy reads from; give another");
    }
    let sync = config.as_ref().map(|c| c.synchronous).unwrap_or_default();
    let source = Db::open_read_only(&from).await?;
    // A daemon writing the source while it is read would leave the copy behind it, and one on
    // the target would write into the copy: on a SQLite file the daemon's lock says whether one
    // runs, and holding it keeps one from starting until the copy is done. PostgreSQL's daemons
    // have no such lock; the docs say to stop them.
    let _source_lock = match from.file() {
        Some(path) => Some(Db::lock_for_daemon(path)?),
        None => None,
    };
    let target = Db::open(to, sync).await?;
    let _target_lock = match to.file() {
        Some(path) => Some(Db::lock_for_daemon(path)?),
        None => None,
    };
    println!(
        "copying {} to {}",
        term(&from.to_string()),
        term(&to.to_string())
    );
    let done = copy_database(&source, &target, &to.to_string(), |copied: &Copied| {
        println!("{:<16}{:>12} rows", copied.table, copied.rows);
    })
    .await;
    source.close().await;
    let copied = match done {
        Ok(copied) => copied,
        Err(e) => {
            target.close().await;
            return Err(e.into());
        }
    };
    let sampled: usize = copied.iter().map(|c| c.sampled).sum();
    println!(
        "checked: every table holds as many rows on both sides, and {sampled} sampled rows are equal column by column"
    );
    // The copy is committed: a failure here loses nothing, and autovacuum does the same later.
    let started = std::time::Instant::now();
    match target.settle_after_copy().await {
        Ok(true) => println!(
            "vacuumed and analyzed in {:.1} s: PostgreSQL has statistics of every table",
            started.elapsed().as_secs_f64()
        ),
        Ok(false) => {}
        Err(e) => eprintln!(
            "warning: the copy is whole, but VACUUM (ANALYZE) failed: {}; PostgreSQL's autovacuum will do it within minutes",
            term(&e.to_string())
        ),
    }
    target.close().await;
    // A source whose daemon was killed, not stopped, may have left receipts of deliveries its
    // receivers accepted, not yet marked sent: the copy marks them, or its daemon would send
    // them again. The source and its receipts stay as they are.
    if let Some(receipts) = source_receipts(&from, config.as_ref()).filter(|file| file.exists()) {
        let target = Db::open(to, sync).await?;
        let marked = target.mark_from_receipts(&receipts).await;
        target.close().await;
        let marked = marked?.marked;
        if marked > 0 {
            println!(
                "marked sent in the copy: {marked} deliveries accepted just before the source's daemon stopped (its receipts, {})",
                term(&receipts.display().to_string())
            );
        }
    }
    Ok(())
}

/// The delivery receipts of the source's daemon: beside a SQLite file, or on PostgreSQL the file
/// the config names for this machine's daemon.
fn source_receipts(from: &Location, config: Option<&Config>) -> Option<PathBuf> {
    match (from, config) {
        (Location::Sqlite(file), _) => Some(path_beside(
            &std::fs::canonicalize(file).unwrap_or_else(|_| file.clone()),
        )),
        (Location::Postgres(_), Some(config)) if config.database == *from => config.receipts_file(),
        (Location::Postgres(_), _) => None,
    }
}
