//! A quota shared by the daemons of one database: grants of call slots from its GCRA schedule
//! (`quota`), timed by the database server's clock. A provider's `rate_limit` keeps its schedule
//! under the provider's name (issue 17); a paced channel's (a group robot's 20 a minute, WeChat's
//! `rate_limit`) under `channel:` and its kind.

use std::sync::Arc;
use std::time::Duration;

use super::{Db, Result};
use crate::limiter::{GrantError, GrantFuture, Granted, Limiter, SharedQuota};

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

/// One schedule in the shared database, as a bucket's source of slots ([`Limiter::share`]).
///
/// A provider named like a channel's key (`[providers."channel:dingtalk"]`) would share that
/// channel's schedule: each call of either then waits for the other's, so both keep within their
/// quotas, only more slowly. Nothing is sent over a quota for it.
pub struct DbQuota {
    db: Db,
    key: String,
}

impl DbQuota {
    /// The schedule kept under `key`: a provider's name, or [`DbQuota::channel_key`].
    pub fn new(db: Db, key: &str) -> Self {
        DbQuota {
            db,
            key: key.to_owned(),
        }
    }

    /// The key of a paced channel's schedule.
    pub fn channel_key(kind: &str) -> String {
        format!("channel:{kind}")
    }

    /// Turns `limiter` to the schedule under `key` when other daemons share `db`; on a database
    /// this daemon owns alone (SQLite) the bucket paces alone, as ever.
    pub fn share(db: &Db, key: &str, limiter: &Limiter) {
        if db.is_shared() {
            limiter.share(Arc::new(DbQuota::new(db.clone(), key)));
        }
    }
}

impl SharedQuota for DbQuota {
    fn grant(&self, interval: Duration, count: u32) -> GrantFuture<'_> {
        Box::pin(async move {
            let grant = self
                .db
                .quota_grant(&self.key, interval, count)
                .await
                .map_err(|e| GrantError {
                    schedule: self.key.clone(),
                    reason: e.into(),
                })?;
            Ok(Granted {
                first_slot_us: grant.first_slot_us,
                keeper_now_us: grant.server_now_us,
                count: grant.count,
                interval: grant.interval,
            })
        })
    }
}
