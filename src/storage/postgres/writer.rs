//! PostgreSQL: the writer's transaction (`storage/writer.rs`). Many daemons write at once here,
//! so the writer task keeps its batching (a round of polls and claims in one transaction) but
//! takes a connection from the pool for each round instead of owning the only one.

use super::outbox::{claim_notifications_in, mark_sent_in, mark_started_in};
use super::polls::record_polls_in;
use super::*;
use crate::storage::writer::{Work, Written};

/// Runs `work` in one transaction and commits it: SQLite's `write_work` in the same order (the
/// polls, whose shipments' claims end with them, then the notification claims, then the
/// shipment claims). A transaction that fails is rolled back when dropped, and its connection
/// goes back to the pool clean.
pub(in crate::storage) async fn in_transaction(pg: &Pg, work: &Work<'_>) -> Result<Written> {
    let mut tx = pg.begin().await?;
    let mut written = Written::default();
    match work {
        Work::Marks(started, sent) => {
            written.started = mark_started_in(&mut tx, started).await?;
            mark_sent_in(&mut tx, sent).await?;
        }
        Work::Rest(polls, notification_claims, shipment_claims) => {
            if !polls.is_empty() {
                let polls: Vec<(i64, &(dyn Decide + Sync))> = polls
                    .iter()
                    .map(|(id, poll)| (*id, poll.as_ref() as &(dyn Decide + Sync)))
                    .collect();
                written.recorded = record_polls_in(&mut tx, &polls).await?;
            }
            for c in notification_claims.iter() {
                written.notifications.push(
                    claim_notifications_in(
                        &mut tx,
                        c.now,
                        c.lease_until,
                        &c.channels,
                        c.max_attempts,
                        c.limit,
                    )
                    .await?,
                );
            }
            for c in shipment_claims.iter() {
                written.shipments.push(
                    Pg::claim_due_in(&mut tx, c.now, c.claimed_until, &c.paused, c.limit).await?,
                );
            }
        }
    }
    tx.commit().await?;
    Ok(written)
}
