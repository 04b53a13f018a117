//! PostgreSQL: the operations of `storage/subscriptions.rs`.

#![allow(unused_variables, unused_mut)]

use super::*;

impl Pg {
    pub async fn subscription(&self, id: i64) -> Result<Option<SubscriptionRow>> {
        Err(not_yet("subscription"))
    }

    pub async fn record_subscribed(
        &self,
        id: i64,
        provider: &str,
        now: Millis,
        next_poll_at: Millis,
    ) -> Result<()> {
        Err(not_yet("record_subscribed"))
    }

    pub async fn shipments_by_waybill(
        &self,
        provider: &str,
        number: &str,
    ) -> Result<Vec<ShipmentRow>> {
        Err(not_yet("shipments_by_waybill"))
    }

    pub async fn note_callback(
        &self,
        id: i64,
        provider: &str,
        note: &CallbackNote<'_>,
    ) -> Result<()> {
        Err(not_yet("note_callback"))
    }

    pub async fn reschedule(&self, id: i64, next_poll_at: Millis) -> Result<()> {
        Err(not_yet("reschedule"))
    }
}
