//! A provider's quota shared by the daemons of one database: grants of call slots from its GCRA
//! schedule (`quota`), timed by the database server's clock.

use std::time::Duration;

use super::{Db, Result};

/// `count` calls of one provider, one `interval` apart from `first_slot_us` on, in microseconds of
/// the database server's clock, which read `server_now_us` while granting them: the daemon turns
/// the slots into its own instants by their distance from that reading, so that a skewed clock
/// on its machine does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaGrant {
    pub first_slot_us: i64,
    pub server_now_us: i64,
    pub count: u32,
    pub interval: Duration,
}

impl QuotaGrant {
    /// How far after the server's reading the first slot is (never negative: a grant starts at
    /// the earliest at the moment it was made).
    pub fn first_after_now(&self) -> Duration {
        Duration::from_micros(
            u64::try_from(self.first_slot_us.saturating_sub(self.server_now_us)).unwrap_or(0),
        )
    }
}

/// The interval in whole microseconds, rounded up so that a grant never spaces calls closer than
/// asked; at least one.
pub(super) fn interval_us(interval: Duration) -> i64 {
    let us = interval.as_nanos().div_ceil(1_000).max(1);
    i64::try_from(us).unwrap_or(i64::MAX)
}

impl Db {
    /// Takes the next `count` slots (at least one) of `provider`'s schedule, calls `interval`
    /// apart: from the schedule's end, or from now when the schedule lies in the past (an idle
    /// quota saves up no burst). The slots are the caller's whether it uses them or not.
    pub async fn quota_grant(
        &self,
        provider: &str,
        interval: Duration,
        count: u32,
    ) -> Result<QuotaGrant> {
        let lite = on_postgres!(self, pg => pg.quota_grant(provider, interval, count));
        let count = count.max(1);
        let step = interval_us(interval);
        let span = step.saturating_mul(i64::from(count));
        // SQLite reads 'now' once per statement, so both readings below are the same instant.
        let (first_slot_us, server_now_us) = sqlx::query_as::<_, (i64, i64)>(
            "INSERT INTO quota (provider, next_at_us) \
             VALUES (?1, CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) + ?2) \
             ON CONFLICT (provider) DO UPDATE SET \
             next_at_us = max(next_at_us + ?2, excluded.next_at_us) \
             RETURNING next_at_us - ?2, \
             CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
        )
        .bind(provider)
        .bind(span)
        .fetch_one(&lite.write)
        .await?;
        Ok(QuotaGrant {
            first_slot_us,
            server_now_us,
            count,
            interval: Duration::from_micros(u64::try_from(step).unwrap_or(u64::MAX)),
        })
    }
}
