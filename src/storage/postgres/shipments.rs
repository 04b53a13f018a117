//! PostgreSQL: the operations of `storage/shipments.rs`.

#![allow(unused_variables, unused_mut)]

use super::*;

impl Pg {
    pub async fn add_shipment(&self, new: &NewShipment, now: Millis) -> Result<ShipmentRow> {
        Err(not_yet("add_shipment"))
    }

    pub async fn import_shipments(
        &self,
        rows: &[NewShipment],
        now: Millis,
    ) -> Result<usize, (usize, StorageError)> {
        Err((0, not_yet("import_shipments")))
    }

    pub async fn begin_import(&self, now: Millis) -> Result<Import> {
        Err(not_yet("begin_import"))
    }

    pub async fn list_shipments(&self, filter: &ShipmentFilter) -> Result<Vec<ShipmentRow>> {
        Err(not_yet("list_shipments"))
    }

    pub async fn shipment(&self, order_id: &str) -> Result<ShipmentRow> {
        Err(not_yet("shipment"))
    }

    pub async fn remove_shipment(&self, order_id: &str) -> Result<()> {
        Err(not_yet("remove_shipment"))
    }

    pub async fn set_tier(&self, order_id: &str, tier: Tier, next_poll_at: Millis) -> Result<()> {
        Err(not_yet("set_tier"))
    }

    pub async fn claim_due_shipments(
        &self,
        now: Millis,
        claimed_until: Millis,
        paused: &[String],
        limit: usize,
    ) -> Result<Vec<ShipmentRow>> {
        Err(not_yet("claim_due_shipments"))
    }

    pub async fn release_all_claims(&self, now: Millis) -> Result<()> {
        Err(not_yet("release_all_claims"))
    }

    pub async fn next_due_at(&self, paused: &[String], now: Millis) -> Result<Option<Millis>> {
        Err(not_yet("next_due_at"))
    }

    pub async fn release_shipment(&self, id: i64) -> Result<()> {
        Err(not_yet("release_shipment"))
    }

    pub async fn mark_invalid(
        &self,
        id: i64,
        kind: InvalidKind,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        Err(not_yet("mark_invalid"))
    }

    pub async fn recheck_order(
        &self,
        order_id: &str,
        now: Millis,
        decide: impl FnOnce(&ShipmentRow) -> RecheckWrite,
    ) -> Result<(ShipmentRow, RecheckWrite)> {
        Err(not_yet("recheck_order"))
    }

    pub async fn recheck_invalid(
        &self,
        which: Invalid<'_>,
        after: i64,
        limit: i64,
        now: Millis,
        mut decide: impl FnMut(&ShipmentRow) -> RecheckWrite,
    ) -> Result<RecheckBatch> {
        Err(not_yet("recheck_invalid"))
    }

    pub async fn create_shipments(
        &self,
        rows: &[NewShipment],
        now: Millis,
        differs: Differs<'_>,
    ) -> Result<Vec<Created>, CreateError> {
        Err(not_yet("create_shipments").into())
    }

    pub async fn update_shipment(
        &self,
        order_id: &str,
        update: &ShipmentUpdate,
    ) -> Result<ShipmentRow> {
        Err(not_yet("update_shipment"))
    }
}
