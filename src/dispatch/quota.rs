//! A provider's quota shared by the daemons of one PostgreSQL database (issue 17): each
//! provider's token bucket takes its slots from the provider's schedule in the database
//! (`Db::quota_grant`), so that the daemons together keep to the quota. On SQLite one daemon
//! owns the database and its buckets pace alone, as ever.

use std::sync::Arc;
use std::time::Duration;

use crate::limiter::{GrantError, GrantFuture, Granted, SharedQuota};
use crate::storage::Db;

use super::Providers;

/// One provider's schedule in the shared database.
pub struct DbQuota {
    db: Db,
    provider: String,
}

impl DbQuota {
    pub fn new(db: Db, provider: &str) -> Self {
        DbQuota {
            db,
            provider: provider.to_owned(),
        }
    }
}

impl SharedQuota for DbQuota {
    fn grant(&self, interval: Duration, count: u32) -> GrantFuture<'_> {
        Box::pin(async move {
            let grant = self
                .db
                .quota_grant(&self.provider, interval, count)
                .await
                .map_err(|e| GrantError {
                    provider: self.provider.clone(),
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

/// On a database other daemons share, turns each provider's bucket to its shared schedule.
pub(super) fn share_quotas(db: &Db, providers: &Providers) {
    if !db.is_shared() {
        return;
    }
    for (name, provider) in providers {
        provider
            .limiter
            .share(Arc::new(DbQuota::new(db.clone(), name)));
    }
}
