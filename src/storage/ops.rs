//! The state operators watch: provider bans and pauses, channel stops, the counts behind
//! `stats`, the demo's summary and the `/metrics` gauges, and the `/healthz` probe.

use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow};

use super::{Db, Result, ser_opt_time, ser_time};
use crate::clock::Millis;

impl Db {
    // ---- providers ----------------------------------------------------------------------------

    /// Pauses a provider until `until`; the pause survives restarts. A ban that ends sooner than
    /// the one already kept changes neither its end nor its reason: the reason shown is that of
    /// the ban that ends last.
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
             reason = CASE WHEN excluded.banned_until >= coalesce(banned_until, 0) \
             THEN excluded.reason ELSE reason END, updated_at = excluded.updated_at",
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
        let shipments = sqlx::query_as::<_, ShipmentCount>(STATS_SHIPMENTS)
            .fetch_all(&lite.read)
            .await?;
        let notifications =
            sqlx::query_as::<_, NotificationCount>(AssertSqlSafe(stats_notifications_sql("")))
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

    /// The few counts of the daemon's status line (`systemctl status`, at start and every 30 s),
    /// read in one statement: unlike [`Db::stats`], whose grouping reads every shipment row
    /// (about 0.75 s at a million shipments on a 2-core machine), it walks the active shipments'
    /// index and the pending notifications', and reads only the rows of the shipments due.
    pub async fn status_counts(&self, now: Millis) -> Result<StatusCounts> {
        let lite = on_postgres!(self, pg => pg.status_counts(now));
        Ok(sqlx::query_as::<_, StatusCounts>(STATUS_COUNTS)
            .bind(now)
            .fetch_one(&lite.read)
            .await?)
    }

    /// Asks the database a trivial question: it answers when it can be read.
    pub async fn ping(&self) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.ping());
        sqlx::query("SELECT 1").execute(&lite.read).await?;
        Ok(())
    }

    /// What the `/metrics` gauges show: notifications per state, shipments per tier and status,
    /// the oldest due poll, and whether each provider with a recorded state is banned or paused
    /// at `now`. The counts are read from indexes, not from every row (see `OUTBOX_COUNTS`).
    pub async fn gauge_counts(&self, now: Millis) -> Result<GaugeCounts> {
        let lite = on_postgres!(self, pg => pg.gauge_counts(now));
        let outbox = sqlx::query_as::<_, OutboxCounts>(OUTBOX_COUNTS)
            .fetch_one(&lite.read)
            .await?;
        let shipments = sqlx::query_as::<_, (String, String, i64)>(SHIPMENT_COUNTS)
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

    // ---- daemons ------------------------------------------------------------------------------

    /// True when several daemons may share this database (PostgreSQL): claims another daemon
    /// holds must then be left to run out, not released, and the providers' quotas are shared.
    pub fn is_shared(&self) -> bool {
        matches!(self.engine, super::Engine::Postgres(_))
    }

    /// Introduces a daemon that starts: its row, seen at `started_at`, holding nothing yet.
    /// Rows of daemons not seen for [`DAEMON_PRUNED_AFTER`] are deleted on the way.
    pub async fn register_daemon(&self, daemon: &DaemonIdentity) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.register_daemon(daemon));
        let mut tx = lite.begin_write().await?;
        sqlx::query("DELETE FROM daemons WHERE seen_at < ?")
            .bind(
                daemon
                    .started_at
                    .saturating_sub(DAEMON_PRUNED_AFTER.as_millis() as Millis),
            )
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO daemons (id, host, pid, version, started_at, seen_at, polling, delivering) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, 0) ON CONFLICT (id) DO UPDATE SET \
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

    /// A daemon's heartbeat: seen at `now`, holding `holds`. A row pruned meanwhile (the daemon
    /// was cut off from the database for long) is written again.
    pub async fn daemon_heartbeat(
        &self,
        daemon: &DaemonIdentity,
        now: Millis,
        holds: Holds,
    ) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.daemon_heartbeat(daemon, now, holds));
        sqlx::query(
            "INSERT INTO daemons (id, host, pid, version, started_at, seen_at, polling, delivering) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET \
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
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// A daemon that stops cleanly takes its row away.
    pub async fn leave(&self, id: &str) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.leave(id));
        sqlx::query("DELETE FROM daemons WHERE id = ?")
            .bind(id)
            .execute(&lite.write)
            .await?;
        Ok(())
    }

    /// Every daemon with a row, the longest running first; alive when seen within
    /// [`DAEMON_ALIVE_WITHIN`] of `now`.
    pub async fn daemons(&self, now: Millis) -> Result<Vec<DaemonRow>> {
        let lite = on_postgres!(self, pg => pg.daemons(now));
        Ok(sqlx::query_as::<_, DaemonRow>(
            "SELECT id, host, pid, version, started_at, seen_at, polling, delivering, \
                 seen_at >= ? AS alive \
             FROM daemons ORDER BY started_at, id",
        )
        .bind(now.saturating_sub(DAEMON_ALIVE_WITHIN.as_millis() as Millis))
        .fetch_all(&lite.read)
        .await?)
    }

    /// Takes the lock that lets one daemon at a time run the maintenance job `job`: `None` when
    /// another daemon holds it (the run is skipped). On PostgreSQL it is an advisory lock on a
    /// connection of its own, held until [`MaintenanceLock::release`] (or, should the job's task
    /// be cut short, until the connection closes); on SQLite, where one daemon runs per file, it
    /// is always granted.
    pub async fn maintenance_lock(&self, job: &str) -> Result<Option<MaintenanceLock>> {
        let _lite = on_postgres!(self, pg => pg.maintenance_lock(job));
        Ok(Some(MaintenanceLock { held: None }))
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

/// How often a running daemon refreshes its row.
pub const DAEMON_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// A daemon not seen for this long (three heartbeats) is shown as gone.
pub const DAEMON_ALIVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// The row of a daemon not seen for this long is deleted when another daemon registers.
pub const DAEMON_PRUNED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Who a running daemon is: its row's key and what `stats` shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonIdentity {
    /// `host:pid:started_at`, unique enough across machines and restarts.
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The shipwatch version it runs.
    pub version: String,
    pub started_at: Millis,
}

impl DaemonIdentity {
    pub fn new(host: &str, pid: u32, version: &str, started_at: Millis) -> DaemonIdentity {
        DaemonIdentity {
            id: format!("{host}:{pid}:{started_at}"),
            host: host.to_owned(),
            pid: i64::from(pid),
            version: version.to_owned(),
            started_at,
        }
    }
}

/// What a daemon holds, as its heartbeat reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holds {
    /// Shipments whose poll is under way.
    pub polling: i64,
    /// Notifications whose delivery is under way.
    pub delivering: i64,
}

/// A daemon's row, as `stats` shows it.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq, Eq)]
pub struct DaemonRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    #[serde(serialize_with = "ser_time")]
    pub started_at: Millis,
    #[serde(serialize_with = "ser_time")]
    pub seen_at: Millis,
    pub polling: i64,
    pub delivering: i64,
    /// Seen within the last few heartbeats.
    pub alive: bool,
}

/// The right to run one maintenance job now; see [`Db::maintenance_lock`].
pub struct MaintenanceLock {
    /// PostgreSQL's advisory lock, on its own connection; none on SQLite.
    held: Option<super::postgres::ops::AdvisoryLock>,
}

impl MaintenanceLock {
    pub(super) fn held(lock: super::postgres::ops::AdvisoryLock) -> MaintenanceLock {
        MaintenanceLock { held: Some(lock) }
    }

    /// Lets the next run, on any daemon, take the job. An unlock that fails closes the
    /// connection, which releases the lock just the same.
    pub async fn release(self) {
        if let Some(held) = self.held {
            held.release().await;
        }
    }
}

impl std::fmt::Debug for MaintenanceLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaintenanceLock")
            .field("advisory", &self.held.is_some())
            .finish()
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

/// [`Db::status_counts`]' statement, the same on both engines (`$1` is SQLite's `?1` too).
pub(super) const STATUS_COUNTS: &str = "SELECT \
    (SELECT count(*) FROM shipments WHERE active = 1) AS polled, \
    (SELECT count(*) FROM notifications WHERE state = 'pending') AS pending, \
    count(*) AS due_now, min(next_poll_at) AS oldest_due FROM shipments \
    WHERE active = 1 AND next_poll_at <= $1 AND claimed_until IS NULL";

/// What the daemon's status line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct StatusCounts {
    /// Shipments still polled.
    pub polled: i64,
    /// Notifications waiting to be sent.
    pub pending: i64,
    /// Shipments whose poll is due and not under way.
    pub due_now: i64,
    /// The `next_poll_at` of the most overdue of them.
    pub oldest_due: Option<Millis>,
}

impl StatusCounts {
    /// How late the most overdue shipment is at `now`, in whole seconds.
    pub fn lag_seconds(&self, now: Millis) -> i64 {
        self.oldest_due
            .map_or(0, |at| now.saturating_sub(at).max(0) / 1000)
    }
}

/// [`Db::stats`]' shipments by provider, tier, status and activity: read from the status index,
/// which holds all four (migration 0020), not from every row (1.1 s → 0.14 s at a million).
pub(super) const STATS_SHIPMENTS: &str = "SELECT provider, tier, status, active, \
    count(*) AS count FROM shipments \
    GROUP BY provider, tier, status, active ORDER BY provider, tier, status";

/// [`Db::stats`]' notifications by channel and state, each state from an index of its own rows:
/// pending on the queue index, which holds the channel; sent and skipped on the done index, in
/// its order (state, channel; migration 0020); dead on the dead index (migration 0019), with the
/// channel read from the few rows. Not one grouping of every row (1.5 s → 0.4 s at three
/// million). The table's CHECK allows no fifth state. On PostgreSQL the same, ordered by byte.
pub(super) fn stats_notifications_sql(collate: &str) -> String {
    format!(
        "SELECT channel, state, count FROM (\
         SELECT channel, 'pending' AS state, count(*) AS count FROM notifications \
         WHERE state = 'pending' GROUP BY channel \
         UNION ALL SELECT channel, state, count(*) FROM notifications \
         WHERE state IN ('sent', 'skipped') GROUP BY state, channel \
         UNION ALL SELECT channel, 'dead', count(*) FROM notifications \
         WHERE state = 'dead' GROUP BY channel) AS counts \
         ORDER BY channel{collate}, state{collate}"
    )
}

/// [`Db::gauge_counts`]' count of the outbox, the same on both engines, from indexes alone,
/// never by reading every row: pending on `notifications_due`, sent and skipped apart on
/// `notifications_done` (which holds the state, migration 0018), dead on `notifications_dead`
/// (migration 0019). The sent and skipped counts repeat that index's whole condition: SQLite
/// uses a partial index only for a query whose WHERE holds each of the index's own terms, and
/// does not infer `state IN ('sent', 'skipped')` from `state = 'sent'`
/// (sqlite.org/partialindex.html, "Queries Using Partial Indexes"). One statement, so the
/// counts are of one moment; each count is a column of its own, not computed from the others in
/// SQL, as PostgreSQL evaluates again each count that an outer expression repeats.
pub(super) const OUTBOX_COUNTS: &str = "SELECT \
    (SELECT count(*) FROM notifications WHERE state = 'pending') AS pending, \
    (SELECT count(*) FROM notifications \
     WHERE state IN ('sent', 'skipped') AND state = 'sent') AS sent, \
    (SELECT count(*) FROM notifications \
     WHERE state IN ('sent', 'skipped') AND state = 'skipped') AS skipped, \
    (SELECT count(*) FROM notifications WHERE state = 'dead') AS dead";

/// [`Db::gauge_counts`]' count of shipments by tier and status, the same on both engines: read
/// from the status index, which holds the tier too (migration 0018), in its order.
pub(super) const SHIPMENT_COUNTS: &str =
    "SELECT tier, status, count(*) FROM shipments GROUP BY status, tier";

/// The outbox by state, for the `/metrics` gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromRow)]
pub struct OutboxCounts {
    pub pending: i64,
    pub sent: i64,
    pub dead: i64,
    pub skipped: i64,
}

impl OutboxCounts {
    /// Each state with its count, every state present.
    pub fn by_state(&self) -> [(&'static str, i64); 4] {
        [
            ("pending", self.pending),
            ("sent", self.sent),
            ("dead", self.dead),
            ("skipped", self.skipped),
        ]
    }
}

/// What the `/metrics` gauges are set from; tier and status pairs without rows are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GaugeCounts {
    /// Notifications per state.
    pub outbox: OutboxCounts,
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
