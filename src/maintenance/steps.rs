//! What each maintenance step decides: which shipments it picks, what their new status says,
//! and which notifications a change queues. The SQL is in the store (`storage/maintenance.rs`);
//! each step is one short `BEGIN IMMEDIATE` transaction there that works through at most
//! [`BATCH`] shipments, so it never holds the write lock for long; a backlog (after downtime)
//! drains over the next runs.

use std::time::Duration;

use tracing::instrument;

use crate::clock::{Millis, millis};
use crate::domain::{Status, Tier};
use crate::notify::ChannelRule;
use crate::providers::Trace;
use crate::storage::{Checkpointed, Db, Pruned, Result, ShipmentRow, Sweep, SweepWrite};
use crate::track::{Change, announce, new_public_id, stuck_alert};

/// Shipments one run of a step looks at, at most.
pub const BATCH: i64 = 500;

/// Statuses in which a parcel is expected to move: silence there means it is stuck. A parcel
/// waiting for the buyer (failed attempt, locker) or already flagged (exception) is not.
pub const MOVING: [Status; 3] = [Status::PickedUp, Status::InTransit, Status::OutForDelivery];

/// A status change a maintenance step made, for the pipeline's listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub order_id: String,
    pub provider: String,
    pub tier: Tier,
    pub from: Status,
    pub to: Status,
    pub raw_status: String,
}

/// "30 days", "1 day", "72 hours": how a span reads in a status text.
pub fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else {
        (secs / 3_600, "hour")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn trace(status: Status, raw_status: String) -> Trace {
    Trace {
        status,
        raw_status,
        events: Vec::new(),
        carrier: None,
        tracking_no: None,
        unmapped: Vec::new(),
    }
}

/// What a sweep's change says and queues: the new status for every shipment `sweep` moved, and
/// the notifications of each change.
fn announce_each(
    now: Millis,
    trace: &Trace,
    channels: &[ChannelRule],
) -> impl FnMut(&ShipmentRow, i64) -> Vec<crate::storage::OutboxRow> {
    move |row, transition| {
        let change = Change {
            shipment: row,
            transition,
            previous: row.status,
            trace,
            newest: None,
            now,
        };
        announce(&change, channels, &mut new_public_id)
    }
}

/// The changes a sweep made, from the rows as they were before it.
fn changed(rows: Vec<ShipmentRow>, trace: &Trace) -> Vec<Changed> {
    rows.into_iter()
        .map(|row| Changed {
            order_id: row.order_id,
            provider: row.provider,
            tier: row.tier,
            from: row.status,
            to: trace.status,
            raw_status: trace.raw_status.clone(),
        })
        .collect()
}

/// Gives up on shipments with no news for `expire_after` (newest event, else when tracking
/// began): they become `expired`, polling stops, and the change is announced like any other.
/// A shipment whose poll is in flight is left for the next run: its answer may be news.
#[instrument(skip_all)]
pub async fn expire_changes(
    db: &Db,
    now: Millis,
    expire_after: Duration,
    channels: &[ChannelRule],
) -> Result<Vec<Changed>> {
    let reason = format!("no update for {}", span(expire_after));
    let trace = trace(Status::Expired, reason);
    sweep_changes(
        db,
        Sweep::Quiet,
        &trace,
        true,
        now - millis(expire_after),
        now,
        channels,
    )
    .await
}

/// Flags shipments that never got any carrier information within `no_info_after` as
/// `exception`, with the reason in `error` and `raw_status`. Polling goes on: the carrier may
/// still scan the parcel. Only shipments that never changed status qualify, so a shipment that
/// a later poll puts back to `pending` is not flagged (and announced) over and over.
#[instrument(skip_all)]
pub async fn no_info_changes(
    db: &Db,
    now: Millis,
    no_info_after: Duration,
    channels: &[ChannelRule],
) -> Result<Vec<Changed>> {
    let reason = format!("no carrier information after {}", span(no_info_after));
    let trace = trace(Status::Exception, reason);
    let cutoff = now - millis(no_info_after);
    sweep_changes(db, Sweep::NeverSeen, &trace, false, cutoff, now, channels).await
}

/// Moves the shipments `which` picks before `cutoff` to the status of `trace`, and announces
/// each change.
async fn sweep_changes(
    db: &Db,
    which: Sweep,
    trace: &Trace,
    stop_polling: bool,
    cutoff: Millis,
    now: Millis,
    channels: &[ChannelRule],
) -> Result<Vec<Changed>> {
    let write = SweepWrite {
        status: trace.status,
        raw_status: &trace.raw_status,
        stop_polling,
    };
    let rows = db
        .sweep_shipments(
            which,
            cutoff,
            now,
            BATCH,
            write,
            announce_each(now, trace, channels),
        )
        .await?;
    Ok(changed(rows, trace))
}

pub use crate::config::POLL_HORIZON;

/// Why a shipment polled next at `at` is flagged: it is beyond [`POLL_HORIZON`].
fn unreachable_reason(at: Millis) -> String {
    format!(
        "next_poll_at = {at} ({}) is more than {} ahead, so it would never be polled: times are milliseconds since 1970-01-01 UTC",
        crate::intake::shown_time(at),
        span(POLL_HORIZON)
    )
}

/// Marks invalid each active shipment whose `next_poll_at` is beyond `now` + [`POLL_HORIZON`]
/// (year 9999, microseconds where milliseconds belong): it would never come up for a poll, and
/// nobody would notice. Returns the order ids with their reasons.
#[instrument(skip_all)]
pub async fn unreachable_polls(db: &Db, now: Millis) -> Result<Vec<(String, String)>> {
    let cutoff = now.saturating_add(millis(POLL_HORIZON));
    let mut invalid = Vec::new();
    for poll in db.unreachable_polls(cutoff, BATCH).await? {
        let reason = unreachable_reason(poll.next_poll_at);
        if db
            .stop_unreachable_poll(poll.id, &reason, now, cutoff)
            .await?
        {
            invalid.push((poll.order_id, reason));
        }
    }
    Ok(invalid)
}

/// Queues `shipment.stuck` notifications for each moving shipment (see [`MOVING`]) that has been
/// quiet for `stuck_after`, once per stall, on each channel told of stuck parcels (the webhook
/// and the group robots by default). Buyers are not told: a stall is for the shop to chase with
/// the carrier. Without such a channel nothing is queued or remembered.
#[instrument(skip_all)]
pub async fn stuck_alerts(
    db: &Db,
    now: Millis,
    stuck_after: Duration,
    channels: &[ChannelRule],
) -> Result<Vec<String>> {
    if !channels.iter().any(|c| c.alerts.stuck) {
        return Ok(Vec::new());
    }
    db.alert_stuck_shipments(
        &MOVING,
        now - millis(stuck_after),
        BATCH,
        |shipment, stall, quiet_since| {
            stuck_alert(
                shipment,
                stall,
                quiet_since,
                now,
                channels,
                &mut new_public_id,
            )
        },
    )
    .await
}

/// Deletes what nobody needs after `retain`: notifications delivered (or skipped) that long ago,
/// and the whole event history of shipments that ended (delivered, returned, expired) that long
/// ago. Dead and pending notifications stay: an operator has yet to look at them. The shipment
/// rows stay too: they belong to the shop.
#[instrument(skip_all)]
pub async fn prune(db: &Db, now: Millis, retain: Duration) -> Result<Pruned> {
    db.prune(now - millis(retain)).await
}

/// Folds the write-ahead log back into the database file and truncates it, so the WAL does not
/// grow without bound while readers (the CLI, outside tools) keep it from resetting.
#[instrument(skip_all)]
pub async fn checkpoint(db: &Db) -> Result<Checkpointed> {
    db.checkpoint().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_poll_says_when_it_would_have_been_and_why_it_never_comes() {
        let reason = unreachable_reason(253_402_300_799_000_000);
        assert!(
            reason.starts_with("next_poll_at = 253402300799000000 ("),
            "{reason}"
        );
        assert!(
            reason.ends_with(
                "so it would never be polled: times are milliseconds since 1970-01-01 UTC"
            ),
            "{reason}"
        );
    }
}
