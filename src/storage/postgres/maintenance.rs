//! PostgreSQL: the operations of `storage/maintenance.rs`.

#![allow(unused_variables, unused_mut)]

use super::*;

impl Pg {
    pub async fn sweep_shipments(
        &self,
        which: Sweep,
        cutoff: Millis,
        now: Millis,
        limit: i64,
        write: SweepWrite<'_>,
        announce: impl FnMut(&ShipmentRow, i64) -> Vec<OutboxRow>,
    ) -> Result<Vec<ShipmentRow>> {
        Err(not_yet("sweep_shipments"))
    }

    pub async fn unreachable_polls(
        &self,
        cutoff: Millis,
        limit: i64,
    ) -> Result<Vec<UnreachablePoll>> {
        Err(not_yet("unreachable_polls"))
    }

    pub async fn stop_unreachable_poll(
        &self,
        id: i64,
        reason: &str,
        now: Millis,
        cutoff: Millis,
    ) -> Result<bool> {
        Err(not_yet("stop_unreachable_poll"))
    }

    pub async fn alert_stuck_shipments(
        &self,
        moving: &[Status],
        quiet_before: Millis,
        limit: i64,
        mut alert: impl FnMut(&ShipmentRow, i64, Millis) -> Vec<OutboxRow>,
    ) -> Result<Vec<String>> {
        Err(not_yet("alert_stuck_shipments"))
    }

    pub async fn prune(&self, cutoff: Millis) -> Result<Pruned> {
        Err(not_yet("prune"))
    }

    pub async fn checkpoint(&self) -> Result<Checkpointed> {
        Err(not_yet("checkpoint"))
    }
}
