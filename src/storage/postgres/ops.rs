//! PostgreSQL: the operations of `storage/ops.rs`.

use sqlx::Connection;
use sqlx::{AssertSqlSafe, PgConnection};

use super::*;

/// The class of shipwatch's advisory locks (`'shpw'`): the job's name, hashed, is the object.
const ADVISORY_CLASS: i32 = 0x7368_7077;

/// A maintenance job's advisory lock, on a connection taken out of the pool for as long as the
/// job runs: a session lock stays with its connection, so it must never go back to the pool.
/// Dropped without [`AdvisoryLock::release`], the connection closes and the server lets go.
pub(crate) struct AdvisoryLock {
    conn: PgConnection,
    job: String,
}

impl AdvisoryLock {
    pub(crate) async fn release(mut self) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(ADVISORY_CLASS)
            .bind(&self.job)
            .execute(&mut self.conn)
            .await;
        if let Err(e) = unlocked {
            tracing::debug!(job = %self.job, error = %e, "cannot unlock the maintenance job; closing its connection instead");
        }
        let _ = self.conn.close().await;
    }
}

impl Pg {
    pub async fn ban_provider(
        &self,
        provider: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        // One statement: two daemons banning at once both land, and the later end wins, with
        // its reason.
        sqlx::query(
            "INSERT INTO provider_state (provider, banned_until, reason, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (provider) DO UPDATE SET \
             banned_until = greatest(coalesce(provider_state.banned_until, 0), excluded.banned_until), \
             reason = CASE WHEN excluded.banned_until >= coalesce(provider_state.banned_until, 0) \
             THEN excluded.reason ELSE provider_state.reason END, updated_at = excluded.updated_at",
        )
        .bind(provider)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn cap_provider_bans(&self, latest: Millis) -> Result<()> {
        sqlx::query("UPDATE provider_state SET banned_until = $1 WHERE banned_until > $1")
            .bind(latest)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn provider_bans(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        Ok(sqlx::query_as::<_, (String, Millis)>(
            "SELECT provider, banned_until FROM provider_state WHERE banned_until > $1",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn pause_provider(
        &self,
        provider: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO provider_state (provider, paused_until, pause_reason, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (provider) DO UPDATE SET \
             paused_until = excluded.paused_until, pause_reason = excluded.pause_reason, \
             updated_at = excluded.updated_at",
        )
        .bind(provider)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn clear_provider_pauses(&self) -> Result<()> {
        sqlx::query("UPDATE provider_state SET paused_until = NULL, pause_reason = NULL")
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn provider_states(&self, now: Millis) -> Result<Vec<ProviderState>> {
        Ok(sqlx::query_as::<_, ProviderState>(
            "SELECT provider, \
                 CASE WHEN banned_until > $1 THEN banned_until END AS banned_until, \
                 CASE WHEN banned_until > $1 THEN reason END AS ban_reason, \
                 CASE WHEN paused_until > $1 THEN paused_until END AS paused_until, \
                 CASE WHEN paused_until > $1 THEN pause_reason END AS pause_reason \
             FROM provider_state WHERE banned_until > $1 OR paused_until > $1 \
             ORDER BY provider COLLATE \"C\"",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn pause_channel(
        &self,
        channel: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO channel_state (channel, paused_until, reason, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (channel) DO UPDATE SET \
             paused_until = greatest(channel_state.paused_until, excluded.paused_until), \
             reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(channel)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn resume_channel(&self, channel: &str, reason: &str, at: Millis) -> Result<u64> {
        let mut tx = self.begin().await?;
        let released = sqlx::query(
            "UPDATE notifications SET next_attempt_at = $1 \
             WHERE state = 'pending' AND channel = $2 AND last_error = $3 AND next_attempt_at > $1",
        )
        .bind(at)
        .bind(channel)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM channel_state WHERE channel = $1")
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(released)
    }

    pub async fn clear_channel_pauses(&self) -> Result<()> {
        sqlx::query("DELETE FROM channel_state")
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn channel_states(&self, now: Millis) -> Result<Vec<ChannelState>> {
        Ok(sqlx::query_as::<_, ChannelState>(
            "SELECT channel, paused_until, reason FROM channel_state WHERE paused_until > $1 \
             ORDER BY channel COLLATE \"C\"",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn stats(&self, now: Millis) -> Result<Stats> {
        // One snapshot for the three reads, as SQLite's reader gives.
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let shipments = sqlx::query_as::<_, ShipmentCount>(
            "SELECT provider, tier, status, (active = 1) AS active, count(*) AS count \
             FROM shipments GROUP BY provider, tier, status, active \
             ORDER BY provider COLLATE \"C\", tier COLLATE \"C\", status COLLATE \"C\"",
        )
        .fetch_all(&mut *tx)
        .await?;
        let notifications = sqlx::query_as::<_, NotificationCount>(AssertSqlSafe(
            crate::storage::ops::stats_notifications_sql(" COLLATE \"C\""),
        ))
        .fetch_all(&mut *tx)
        .await?;
        let (due_now, oldest_due) = sqlx::query_as::<_, (i64, Option<Millis>)>(
            "SELECT count(*), min(next_poll_at) FROM shipments \
             WHERE active = 1 AND next_poll_at <= $1 AND claimed_until IS NULL",
        )
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Stats {
            shipments,
            notifications,
            due_now,
            lag_seconds: oldest_due.map_or(0, |at| now.saturating_sub(at).max(0) / 1000),
        })
    }

    pub async fn status_counts(&self, now: Millis) -> Result<StatusCounts> {
        Ok(
            sqlx::query_as::<_, StatusCounts>(crate::storage::ops::STATUS_COUNTS)
                .bind(now)
                .fetch_one(self.pool())
                .await?,
        )
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }

    pub async fn gauge_counts(&self, now: Millis) -> Result<GaugeCounts> {
        let outbox = sqlx::query_as::<_, OutboxCounts>(crate::storage::ops::OUTBOX_COUNTS)
            .fetch_one(self.pool())
            .await?;
        let shipments =
            sqlx::query_as::<_, (String, String, i64)>(crate::storage::ops::SHIPMENT_COUNTS)
                .fetch_all(self.pool())
                .await?;
        let oldest_due = sqlx::query_scalar::<_, Option<Millis>>(
            "SELECT min(next_poll_at) FROM shipments WHERE active = 1 AND next_poll_at <= $1",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        // Rows stay after a pause ends, so a provider that was paused once reads false afterwards.
        let providers = sqlx::query_as::<_, (String, bool)>(
            "SELECT provider, coalesce(banned_until > $1, false) OR coalesce(paused_until > $1, false) \
             FROM provider_state",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(GaugeCounts {
            outbox,
            shipments,
            oldest_due,
            providers,
        })
    }

    pub async fn register_daemon(&self, daemon: &DaemonIdentity) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM daemons WHERE seen_at < $1")
            .bind(
                daemon
                    .started_at
                    .saturating_sub(DAEMON_PRUNED_AFTER.as_millis() as Millis),
            )
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO daemons (id, host, pid, version, started_at, seen_at, polling, delivering) \
             VALUES ($1, $2, $3, $4, $5, $5, 0, 0) ON CONFLICT (id) DO UPDATE SET \
             host = excluded.host, pid = excluded.pid, version = excluded.version, \
             started_at = excluded.started_at, seen_at = excluded.seen_at, polling = 0, delivering = 0",
        )
        .bind(&daemon.id)
        .bind(&daemon.host)
        .bind(daemon.pid)
        .bind(&daemon.version)
        .bind(daemon.started_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn daemon_heartbeat(
        &self,
        daemon: &DaemonIdentity,
        now: Millis,
        holds: Holds,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO daemons (id, host, pid, version, started_at, seen_at, polling, delivering) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
             seen_at = excluded.seen_at, polling = excluded.polling, \
             delivering = excluded.delivering",
        )
        .bind(&daemon.id)
        .bind(&daemon.host)
        .bind(daemon.pid)
        .bind(&daemon.version)
        .bind(daemon.started_at)
        .bind(now)
        .bind(holds.polling)
        .bind(holds.delivering)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn leave(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM daemons WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn daemons(&self, now: Millis) -> Result<Vec<DaemonRow>> {
        Ok(sqlx::query_as::<_, DaemonRow>(
            "SELECT id, host, pid, version, started_at, seen_at, polling, delivering, \
                 seen_at >= $1 AS alive \
             FROM daemons ORDER BY started_at, id COLLATE \"C\"",
        )
        .bind(now.saturating_sub(DAEMON_ALIVE_WITHIN.as_millis() as Millis))
        .fetch_all(self.pool())
        .await?)
    }

    /// `pg_try_advisory_lock` on a connection of the job's own: the lock is the session's, so
    /// that a daemon that dies mid-job lets go of it with its connection.
    pub async fn maintenance_lock(&self, job: &str) -> Result<Option<MaintenanceLock>> {
        let mut conn = self.pool().acquire().await?.detach();
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(ADVISORY_CLASS)
            .bind(job)
            .fetch_one(&mut conn)
            .await?;
        if !taken {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(MaintenanceLock::held(AdvisoryLock {
            conn,
            job: job.to_owned(),
        })))
    }

    pub async fn counts(&self) -> Result<Counts> {
        let statuses = sqlx::query_as::<_, (String, i64)>(
            "SELECT status, count(*) FROM shipments GROUP BY status ORDER BY status COLLATE \"C\"",
        )
        .fetch_all(self.pool())
        .await?;
        let states = sqlx::query_as::<_, (String, i64)>(
            "SELECT state, count(*) FROM notifications GROUP BY state ORDER BY state COLLATE \"C\"",
        )
        .fetch_all(self.pool())
        .await?;
        let active =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM shipments WHERE active = 1")
                .fetch_one(self.pool())
                .await?;
        Ok(Counts {
            statuses,
            states,
            active,
        })
    }
}
