//! PostgreSQL: the operations of `storage/subscriptions.rs`.

use sqlx::AssertSqlSafe;

use super::*;

/// The most shipments one callback is applied to, as on SQLite.
const MAX_SHARED_WAYBILL: i64 = 100;

#[derive(sqlx::FromRow)]
struct RawSubscription {
    state: String,
    subscribed_at: i64,
    subscribes: i64,
    last_callback_at: Option<i64>,
    ended_at: Option<i64>,
    message: Option<String>,
}

fn state(text: &str) -> SubscriptionState {
    match text {
        "ended" => SubscriptionState::Ended,
        "aborted" => SubscriptionState::Aborted,
        // The table's CHECK allows nothing else.
        _ => SubscriptionState::Active,
    }
}

impl Pg {
    pub async fn subscription(&self, id: i64) -> Result<Option<SubscriptionRow>> {
        let raw: Option<RawSubscription> = sqlx::query_as(
            "SELECT state, subscribed_at, subscribes, last_callback_at, ended_at, message \
             FROM subscriptions WHERE shipment_id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(raw.map(|r| SubscriptionRow {
            state: state(&r.state),
            subscribed_at: r.subscribed_at,
            subscribes: r.subscribes,
            last_callback_at: r.last_callback_at,
            ended_at: r.ended_at,
            message: r.message,
        }))
    }

    pub async fn record_subscribed(
        &self,
        id: i64,
        provider: &str,
        now: Millis,
        next_poll_at: Millis,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO subscriptions (shipment_id, provider, state, subscribed_at, subscribes) \
             VALUES ($1, $2, 'active', $3, 1) ON CONFLICT (shipment_id) DO UPDATE SET \
             provider = excluded.provider, state = 'active', subscribed_at = excluded.subscribed_at, \
             subscribes = subscriptions.subscribes + 1, ended_at = NULL, message = NULL",
        )
        .bind(id)
        .bind(provider)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE shipments SET error = NULL, last_polled_at = $1, next_poll_at = $2, \
             claimed_until = NULL WHERE id = $3 AND active = 1",
        )
        .bind(now)
        .bind(next_poll_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn shipments_by_waybill(
        &self,
        provider: &str,
        number: &str,
    ) -> Result<Vec<ShipmentRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PG_SHIPMENT_COLUMNS} FROM shipments \
             WHERE provider = $1 AND upper(trim(tracking_no)) = upper(trim($2)) \
             ORDER BY id LIMIT $3"
        )))
        .bind(provider)
        .bind(number)
        .bind(MAX_SHARED_WAYBILL)
        .fetch_all(self.pool())
        .await?;
        let (rows, unreadable) = decode_shipments(rows);
        for (id, reason) in unreadable {
            tracing::warn!(shipment_id = id, %reason, "shipment left out of a callback");
        }
        Ok(rows)
    }

    pub async fn note_callback(
        &self,
        id: i64,
        provider: &str,
        note: &CallbackNote<'_>,
    ) -> Result<()> {
        let state = note.state.map(SubscriptionState::as_str);
        let ended = note
            .state
            .filter(|s| *s != SubscriptionState::Active)
            .map(|_| note.now);
        sqlx::query(
            "INSERT INTO subscriptions (shipment_id, provider, state, subscribed_at, subscribes, \
                 last_callback_at, ended_at, message) \
             VALUES ($1, $2, coalesce($3::text, 'active'), $4, 0, $4, $5::bigint, $6::text) \
             ON CONFLICT (shipment_id) DO UPDATE SET last_callback_at = $4, \
                 state = coalesce($3::text, subscriptions.state), \
                 ended_at = CASE WHEN $3::text IS NULL THEN subscriptions.ended_at \
                            ELSE $5::bigint END, \
                 message = CASE WHEN $3::text IS NULL THEN subscriptions.message \
                           ELSE $6::text END",
        )
        .bind(id)
        .bind(provider)
        .bind(state)
        .bind(note.now)
        .bind(ended)
        .bind(note.message)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn reschedule(&self, id: i64, next_poll_at: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE shipments SET next_poll_at = $1, claimed_until = NULL \
             WHERE id = $2 AND active = 1",
        )
        .bind(next_poll_at)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
