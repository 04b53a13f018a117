//! A provider's quota shared by the daemons of one PostgreSQL database (issue 17): each
//! provider's token bucket takes its slots from the provider's schedule in the database
//! ([`DbQuota`]), so that the daemons together keep to the quota. On SQLite one daemon owns the
//! database and its buckets pace alone, as ever.

use crate::storage::{Db, DbQuota};

use super::Providers;

/// On a database other daemons share, turns each provider's bucket to its shared schedule.
pub(super) fn share_quotas(db: &Db, providers: &Providers) {
    for (name, provider) in providers {
        DbQuota::share(db, name, &provider.limiter);
    }
}
