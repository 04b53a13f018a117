//! The state operators watch: provider bans and pauses, channel stops, the counts behind
//! `stats`, the demo's summary and the `/metrics` gauges, and the `/healthz` probe.

use serde::Serialize;
use sqlx::FromRow;

use super::{Db, Result, ser_opt_time, ser_time};
use crate::clock::Millis;

impl Db {
    // ---- providers ----------------------------------------------------------------------------

    /// Pauses a provider until `until`; the pause survives restarts.
    pub async fn ban_provider(
        &self,
        provider: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.ban_provider(provider, until, reason, now));
        sqlx::query(
            "INSERT INTO provider_state (provider, banned_until, reason, updated_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET \
             banned_until = max(coalesce(banned_until, 0), excluded.banned_until), \
             reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(provider)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Shortens every provider ban that ends after `latest` to end then.
    pub async fn cap_provider_bans(&self, latest: Millis) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.cap_provider_bans(latest));
        sqlx::query("UPDATE provider_state SET banned_until = ?1 WHERE banned_until > ?1")
            .bind(latest)
            .execute(&lite.write)
            .await?;
        Ok(())
    }

    /// Providers banned beyond `now`, with the time each ban ends.
    pub async fn provider_bans(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        let lite = on_postgres!(self, pg => pg.provider_bans(now));
        Ok(sqlx::query_as::<_, (String, Millis)>(
            "SELECT provider, banned_until FROM provider_state WHERE banned_until > ?",
        )
        .bind(now)
        .fetch_all(&lite.read)
        .await?)
    }

    /// Records that a provider was stopped because upstream rejected its credentials or its
    /// configuration, for `stats` and `check-config`. A restart lifts it.
    pub async fn pause_provider(
        &self,
        provider: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.pause_provider(provider, until, reason, now));
        sqlx::query(
            "INSERT INTO provider_state (provider, paused_until, pause_reason, updated_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET \
             paused_until = excluded.paused_until, pause_reason = excluded.pause_reason, \
             updated_at = excluded.updated_at",
        )
        .bind(provider)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Lifts every credentials or configuration pause: at daemon start, with the config as it
    /// is now.
    pub async fn clear_provider_pauses(&self) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.clear_provider_pauses());
        sqlx::query("UPDATE provider_state SET paused_until = NULL, pause_reason = NULL")
            .execute(&lite.write)
            .await?;
        Ok(())
    }

    /// Every provider that is banned or paused beyond `now`.
    pub async fn provider_states(&self, now: Millis) -> Result<Vec<ProviderState>> {
        let lite = on_postgres!(self, pg => pg.provider_states(now));
        Ok(sqlx::query_as::<_, ProviderState>(
            "SELECT provider, \
                 CASE WHEN banned_until > ?1 THEN banned_until END AS banned_until, \
                 CASE WHEN banned_until > ?1 THEN reason END AS ban_reason, \
                 CASE WHEN paused_until > ?1 THEN paused_until END AS paused_until, \
                 CASE WHEN paused_until > ?1 THEN pause_reason END AS pause_reason \
             FROM provider_state WHERE banned_until > ?1 OR paused_until > ?1 ORDER BY provider",
        )
        .bind(now)
        .fetch_all(&lite.read)
        .await?)
    }

    /// Records that a channel stopped itself until `until`, for `stats`.
    pub async fn pause_channel(
        &self,
        channel: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.pause_channel(channel, until, reason, now));
        sqlx::query(
            "INSERT INTO channel_state (channel, paused_until, reason, updated_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (channel) DO UPDATE SET \
             paused_until = max(paused_until, excluded.paused_until), reason = excluded.reason, \
             updated_at = excluded.updated_at",
        )
        .bind(channel)
        .bind(until)
        .bind(reason)
        .bind(now)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Lifts a channel's stop (a reload or a restart): the notifications it postponed, the
    /// pending ones whose last error is the stop's `reason`, become due at `at` instead of at
    /// the stop's end, and `stats` stops showing it. One transaction.
    pub async fn resume_channel(&self, channel: &str, reason: &str, at: Millis) -> Result<u64> {
        let lite = on_postgres!(self, pg => pg.resume_channel(channel, reason, at));
        let mut tx = lite.begin_write().await?;
        let released = sqlx::query(
            "UPDATE notifications SET next_attempt_at = ?1 \
             WHERE state = 'pending' AND channel = ?2 AND last_error = ?3 AND next_attempt_at > ?1",
        )
        .bind(at)
        .bind(channel)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM channel_state WHERE channel = ?")
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(released)
    }

    /// Forgets every channel stop: at daemon start, when every channel is tried afresh.
    pub async fn clear_channel_pauses(&self) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.clear_channel_pauses());
        sqlx::query("DELETE FROM channel_state")
            .execute(&lite.write)
            .await?;
        Ok(())
    }

    /// Every channel stopped beyond `now`.
    pub async fn channel_states(&self, now: Millis) -> Result<Vec<ChannelState>> {
        let lite = on_postgres!(self, pg => pg.channel_states(now));
        Ok(sqlx::query_as::<_, ChannelState>(
            "SELECT channel, paused_until, reason FROM channel_state WHERE paused_until > ? \
             ORDER BY channel",
        )
        .bind(now)
        .fetch_all(&lite.read)
        .await?)
    }

    /// Shipments per provider, tier, status and activity, and notifications per channel and
    /// state: what `stats` shows.
    pub async fn stats(&self, now: Millis) -> Result<Stats> {
        let lite = on_postgres!(self, pg => pg.stats(now));
        let shipments = sqlx::query_as::<_, ShipmentCount>(
            "SELECT provider, tier, status, active, count(*) AS count FROM shipments \
             GROUP BY provider, tier, status, active ORDER BY provider, tier, status",
        )
        .fetch_all(&lite.read)
        .await?;
        let notifications = sqlx::query_as::<_, NotificationCount>(
            "SELECT channel, state, count(*) AS count FROM notifications \
             GROUP BY channel, state ORDER BY channel, state",
        )
        .fetch_all(&lite.read)
        .await?;
        let (due_now, oldest_due) = sqlx::query_as::<_, (i64, Option<Millis>)>(
            "SELECT count(*), min(next_poll_at) FROM shipments \
             WHERE active = 1 AND next_poll_at <= ? AND claimed_until IS NULL",
        )
        .bind(now)
        .fetch_one(&lite.read)
        .await?;
        Ok(Stats {
            shipments,
            notifications,
            due_now,
            lag_seconds: oldest_due.map_or(0, |at| now.saturating_sub(at).max(0) / 1000),
        })
    }

    /// Asks the database a trivial question: it answers when it can be read.
    pub async fn ping(&self) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.ping());
        sqlx::query("SELECT 1").execute(&lite.read).await?;
        Ok(())
    }

    /// What the `/metrics` gauges show: notifications per state, shipments per tier and status,
    /// the oldest due poll, and whether each provider with a recorded state is banned or paused
    /// at `now`.
    pub async fn gauge_counts(&self, now: Millis) -> Result<GaugeCounts> {
        let lite = on_postgres!(self, pg => pg.gauge_counts(now));
        let outbox = sqlx::query_as::<_, (String, i64)>(
            "SELECT state, count(*) FROM notifications GROUP BY state",
        )
        .fetch_all(&lite.read)
        .await?;
        let shipments = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT tier, status, count(*) FROM shipments GROUP BY tier, status",
        )
        .fetch_all(&lite.read)
        .await?;
        let oldest_due = sqlx::query_scalar::<_, Option<Millis>>(
            "SELECT min(next_poll_at) FROM shipments WHERE active = 1 AND next_poll_at <= ?",
        )
        .bind(now)
        .fetch_one(&lite.read)
        .await?;
        // Rows stay after a pause ends, so a provider that was paused once reads false afterwards.
        let providers = sqlx::query_as::<_, (String, bool)>(
            "SELECT provider, coalesce(banned_until > ?1, 0) OR coalesce(paused_until > ?1, 0) \
             FROM provider_state",
        )
        .bind(now)
        .fetch_all(&lite.read)
        .await?;
        Ok(GaugeCounts {
            outbox,
            shipments,
            oldest_due,
            providers,
        })
    }

    /// Counts for the demo's summary and for tests: shipments per status, notifications per state.
    pub async fn counts(&self) -> Result<Counts> {
        let lite = on_postgres!(self, pg => pg.counts());
        let statuses = sqlx::query_as::<_, (String, i64)>(
            "SELECT status, count(*) FROM shipments GROUP BY status ORDER BY status",
        )
        .fetch_all(&lite.read)
        .await?;
        let states = sqlx::query_as::<_, (String, i64)>(
            "SELECT state, count(*) FROM notifications GROUP BY state ORDER BY state",
        )
        .fetch_all(&lite.read)
        .await?;
        let active =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM shipments WHERE active = 1")
                .fetch_one(&lite.read)
                .await?;
        Ok(Counts {
            statuses,
            states,
            active,
        })
    }
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ProviderState {
    pub provider: String,
    #[serde(serialize_with = "ser_opt_time")]
    pub banned_until: Option<Millis>,
    pub ban_reason: Option<String>,
    #[serde(serialize_with = "ser_opt_time")]
    pub paused_until: Option<Millis>,
    pub pause_reason: Option<String>,
}

/// A delivery channel that stopped itself.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ChannelState {
    pub channel: String,
    #[serde(serialize_with = "ser_time")]
    pub paused_until: Millis,
    pub reason: String,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ShipmentCount {
    pub provider: String,
    pub tier: String,
    pub status: String,
    pub active: bool,
    pub count: i64,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct NotificationCount {
    pub channel: String,
    pub state: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub shipments: Vec<ShipmentCount>,
    pub notifications: Vec<NotificationCount>,
    /// Shipments whose poll is due and not under way.
    pub due_now: i64,
    /// How late the most overdue of them is.
    pub lag_seconds: i64,
}

/// What the `/metrics` gauges are set from; label sets without rows are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GaugeCounts {
    /// Notifications per state.
    pub outbox: Vec<(String, i64)>,
    /// Shipments per tier and status.
    pub shipments: Vec<(String, String, i64)>,
    /// The `next_poll_at` of the most overdue active shipment, if any is due.
    pub oldest_due: Option<Millis>,
    /// Every provider with a recorded state, and whether it is banned or paused now.
    pub providers: Vec<(String, bool)>,
}

#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub statuses: Vec<(String, i64)>,
    pub states: Vec<(String, i64)>,
    pub active: i64,
}

impl Counts {
    pub fn state(&self, state: &str) -> i64 {
        self.states
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    }
}
