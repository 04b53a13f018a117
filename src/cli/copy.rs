//! `shipwatch copy --to FILE|URL`: every row of the database into an empty one, SQLite to
//! PostgreSQL or back (issue 17), so that a shop moves to a shared PostgreSQL database, or back
//! to one file, without losing its history. The copy and its check are the store's
//! ([`crate::storage::copy`]); this file opens both sides and prints what was copied.

use anyhow::{Result, bail};

use crate::storage::copy::{Copied, copy_database};
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
    target.close().await;
    let copied = done?;
    let sampled: usize = copied.iter().map(|c| c.sampled).sum();
    println!(
        "checked: every table holds as many rows on both sides, and {sampled} sampled rows are equal column by column"
    );
    Ok(())
}
