//! PostgreSQL: the operations of `storage/outbox.rs`.

#![allow(unused_variables, unused_mut)]

use super::*;
use crate::domain::ChannelKind;

impl Pg {
    pub async fn claim_notifications(
        &self,
        now: Millis,
        lease_until: Millis,
        channels: &[ChannelKind],
        max_attempts: u32,
        limit: usize,
    ) -> Result<Vec<ClaimedNotification>> {
        Err(not_yet("claim_notifications"))
    }

    pub async fn next_notification_at(&self, channels: &[ChannelKind]) -> Result<Option<Millis>> {
        Err(not_yet("next_notification_at"))
    }

    pub async fn notification_sent(&self, id: i64, now: Millis) -> Result<()> {
        Err(not_yet("notification_sent"))
    }

    pub async fn notifications_sent(&self, sent: &[(i64, Millis)]) -> Result<()> {
        Err(not_yet("notifications_sent"))
    }

    pub async fn notification_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
    ) -> Result<()> {
        Err(not_yet("notification_failed"))
    }

    pub async fn notification_undeliverable(&self, id: i64, reason: &str) -> Result<()> {
        Err(not_yet("notification_undeliverable"))
    }

    pub async fn notification_postponed(&self, id: i64, reason: &str, at: Millis) -> Result<()> {
        Err(not_yet("notification_postponed"))
    }

    pub async fn release_notification(&self, id: i64) -> Result<()> {
        Err(not_yet("release_notification"))
    }

    pub async fn give_back_notifications(&self, claims: &[(i64, Millis)]) -> Result<()> {
        Err(not_yet("give_back_notifications"))
    }

    pub async fn list_notifications(
        &self,
        state: Option<&str>,
        shipment_id: Option<i64>,
    ) -> Result<Vec<NotificationRow>> {
        Err(not_yet("list_notifications"))
    }

    pub async fn requeue(&self, ids: Option<&[i64]>, now: Millis) -> Result<Vec<i64>> {
        Err(not_yet("requeue"))
    }
}
