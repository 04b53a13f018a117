//! Kuaidi100 subscriptions: which shipments of a push-mode provider Kuaidi100 tracks for us, and
//! what its callbacks said of them (`subscriptions`, migration 0012).

use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow};
use tracing::instrument;

use super::{Db, Result, SHIPMENT_COLUMNS, ShipmentRow, decode_shipments, ser_opt_time, ser_time};
use crate::clock::Millis;

/// The most shipments one callback is applied to: a waybill shared by more orders than this
/// (split orders share one) is a mistake, and the rest wait for the next callback.
const MAX_SHARED_WAYBILL: i64 = 100;

/// A subscription's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Kuaidi100 tracks the waybill and posts each change.
    Active,
    /// Kuaidi100 said `shutdown`: tracking is over (normally signed for).
    Ended,
    /// Kuaidi100 said `abort` (no information for days, or no change for 60 days).
    Aborted,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Active => "active",
            SubscriptionState::Ended => "ended",
            SubscriptionState::Aborted => "aborted",
        }
    }

    fn parse(text: &str) -> SubscriptionState {
        match text {
            "ended" => SubscriptionState::Ended,
            "aborted" => SubscriptionState::Aborted,
            // The table's CHECK allows nothing else.
            _ => SubscriptionState::Active,
        }
    }
}

/// One shipment's subscription, as `show --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionRow {
    pub state: SubscriptionState,
    #[serde(serialize_with = "ser_time")]
    pub subscribed_at: Millis,
    /// How many times it was subscribed (Kuaidi100 takes at most 4 a month per waybill).
    pub subscribes: i64,
    #[serde(serialize_with = "ser_opt_time")]
    pub last_callback_at: Option<Millis>,
    #[serde(serialize_with = "ser_opt_time")]
    pub ended_at: Option<Millis>,
    /// Kuaidi100's `message` with the end (3天查询无记录…).
    pub message: Option<String>,
}

#[derive(FromRow)]
struct RawSubscription {
    state: String,
    subscribed_at: i64,
    subscribes: i64,
    last_callback_at: Option<i64>,
    ended_at: Option<i64>,
    message: Option<String>,
}

/// What a callback says of its subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackNote<'a> {
    /// The new state, when the callback changes it (`shutdown`, `abort`).
    pub state: Option<SubscriptionState>,
    pub message: Option<&'a str>,
    pub now: Millis,
}

impl Db {
    /// The subscription of shipment `id`, if it was ever subscribed.
    #[instrument(skip_all)]
    pub async fn subscription(&self, id: i64) -> Result<Option<SubscriptionRow>> {
        let lite = on_postgres!(self, pg => pg.subscription(id));
        let raw: Option<RawSubscription> = sqlx::query_as(
            "SELECT state, subscribed_at, subscribes, last_callback_at, ended_at, message \
             FROM subscriptions WHERE shipment_id = ?",
        )
        .bind(id)
        .fetch_optional(&lite.read)
        .await?;
        Ok(raw.map(|r| SubscriptionRow {
            state: SubscriptionState::parse(&r.state),
            subscribed_at: r.subscribed_at,
            subscribes: r.subscribes,
            last_callback_at: r.last_callback_at,
            ended_at: r.ended_at,
            message: r.message,
        }))
    }

    /// Records a subscription Kuaidi100 accepted (or already had), and gives the shipment back
    /// with its next look at `next_poll_at`, in one transaction.
    #[instrument(skip_all)]
    pub async fn record_subscribed(
        &self,
        id: i64,
        provider: &str,
        now: Millis,
        next_poll_at: Millis,
    ) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.record_subscribed(id, provider, now, next_poll_at));
        let mut tx = lite.write.begin().await?;
        sqlx::query(
            "INSERT INTO subscriptions (shipment_id, provider, state, subscribed_at, subscribes) \
             VALUES (?1, ?2, 'active', ?3, 1) ON CONFLICT (shipment_id) DO UPDATE SET \
             provider = excluded.provider, state = 'active', subscribed_at = excluded.subscribed_at, \
             subscribes = subscriptions.subscribes + 1, ended_at = NULL, message = NULL",
        )
        .bind(id)
        .bind(provider)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE shipments SET error = NULL, last_polled_at = ?, next_poll_at = ?, \
             claimed_until = NULL WHERE id = ? AND active = 1",
        )
        .bind(now)
        .bind(next_poll_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The shipments of `provider` with tracking number `number` (compared as Kuaidi100 does,
    /// trimmed and case-blind), tracked or not: a callback for a finished one changes nothing,
    /// but is still acknowledged.
    #[instrument(skip_all)]
    pub async fn shipments_by_waybill(
        &self,
        provider: &str,
        number: &str,
    ) -> Result<Vec<ShipmentRow>> {
        let lite = on_postgres!(self, pg => pg.shipments_by_waybill(provider, number));
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SHIPMENT_COLUMNS} FROM shipments \
             WHERE provider = ? AND upper(trim(tracking_no)) = upper(trim(?)) ORDER BY id LIMIT ?"
        )))
        .bind(provider)
        .bind(number)
        .bind(MAX_SHARED_WAYBILL)
        .fetch_all(&lite.read)
        .await?;
        let (rows, unreadable) = decode_shipments(rows);
        for (id, reason) in unreadable {
            tracing::warn!(shipment_id = id, %reason, "shipment left out of a callback");
        }
        Ok(rows)
    }

    /// Notes a saved callback on the subscription of shipment `id`: when it came and, for a
    /// `shutdown` or `abort`, the end. A shipment never subscribed (the callback came after a
    /// restore, say) gets its row, so that the end is not lost.
    #[instrument(skip_all)]
    pub async fn note_callback(
        &self,
        id: i64,
        provider: &str,
        note: &CallbackNote<'_>,
    ) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.note_callback(id, provider, note));
        let state = note.state.map(SubscriptionState::as_str);
        let ended = note
            .state
            .filter(|s| *s != SubscriptionState::Active)
            .map(|_| note.now);
        sqlx::query(
            "INSERT INTO subscriptions (shipment_id, provider, state, subscribed_at, subscribes, \
                 last_callback_at, ended_at, message) \
             VALUES (?1, ?2, coalesce(?3, 'active'), ?4, 0, ?4, ?5, ?6) \
             ON CONFLICT (shipment_id) DO UPDATE SET last_callback_at = ?4, \
                 state = coalesce(?3, subscriptions.state), \
                 ended_at = CASE WHEN ?3 IS NULL THEN subscriptions.ended_at ELSE ?5 END, \
                 message = CASE WHEN ?3 IS NULL THEN subscriptions.message ELSE ?6 END",
        )
        .bind(id)
        .bind(provider)
        .bind(state)
        .bind(note.now)
        .bind(ended)
        .bind(note.message)
        .execute(&lite.write)
        .await?;
        Ok(())
    }

    /// Sets when shipment `id` is next looked at, if it is still tracked, and gives back its
    /// claim.
    #[instrument(skip_all)]
    pub async fn reschedule(&self, id: i64, next_poll_at: Millis) -> Result<()> {
        let lite = on_postgres!(self, pg => pg.reschedule(id, next_poll_at));
        sqlx::query(
            "UPDATE shipments SET next_poll_at = ?, claimed_until = NULL WHERE id = ? AND active = 1",
        )
            .bind(next_poll_at)
            .bind(id)
            .execute(&lite.write)
            .await?;
        Ok(())
    }
}
