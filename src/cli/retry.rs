//! `shipwatch retry`: requeue notifications, by id or every dead one, with a fresh set of
//! attempts.

use anyhow::{Result, bail};

use crate::clock::{Clock, SystemClock};

use super::{Access, Global, open};

pub(super) async fn retry(global: &Global, ids: Vec<i64>, dead: bool) -> Result<()> {
    let (db, _) = open(global, Access::Change).await?;
    let now = SystemClock.now();
    let requeued = if dead {
        db.requeue(None, now).await?
    } else {
        db.requeue(Some(&ids), now).await?
    };
    println!("requeued {} notification(s)", requeued.len());
    let skipped: Vec<String> = ids
        .iter()
        .filter(|id| !requeued.contains(id))
        .map(i64::to_string)
        .collect();
    if !skipped.is_empty() {
        bail!(
            "not requeued (unknown, already sent, or being delivered): {}",
            skipped.join(", ")
        );
    }
    db.close().await;
    Ok(())
}
