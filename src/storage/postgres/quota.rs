//! PostgreSQL: the operations of `storage/quota.rs`.

use std::time::Duration;

use super::*;
use crate::storage::quota::{QuotaGrant, interval_us};

impl Pg {
    /// One statement: the row is locked by the update, so grants made at once by several daemons
    /// follow one another on the schedule. The clock is read before the row's lock is waited
    /// for; a reading late by that wait only puts the grant's slots later for its daemon.
    pub async fn quota_grant(
        &self,
        provider: &str,
        interval: Duration,
        count: u32,
    ) -> Result<QuotaGrant> {
        let count = count.max(1);
        let step = interval_us(interval);
        let span = step.saturating_mul(i64::from(count));
        let (first_slot_us, server_now_us) = sqlx::query_as::<_, (i64, i64)>(
            "WITH now AS (\
                 SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT AS us) \
             INSERT INTO quota AS q (provider, next_at_us) \
             SELECT $1, now.us + $2 FROM now \
             ON CONFLICT (provider) DO UPDATE SET \
             next_at_us = GREATEST(q.next_at_us + $2, excluded.next_at_us) \
             RETURNING q.next_at_us - $2, (SELECT us FROM now)",
        )
        .bind(provider)
        .bind(span)
        .fetch_one(self.pool())
        .await?;
        Ok(QuotaGrant {
            first_slot_us,
            server_now_us,
            count,
            interval: Duration::from_micros(u64::try_from(step).unwrap_or(u64::MAX)),
        })
    }
}
