//! `shipwatch poll`: poll one order now, print what its provider says, and record it as the
//! daemon would only when asked. `--json` prints the same as one object for scripts.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::clock::SystemClock;
use crate::daemon::Daemon;
use crate::dispatch::{PollOutcome, PolledOnce};
use crate::domain::{Status, Tier};
use crate::events::Events;
use crate::providers::{Trace, TraceEvent};
use crate::storage::{Db, Recorded};
use crate::track::{WouldChange, would_change};

use super::print::print_json;
use super::{Global, require_config, term};

pub(super) async fn poll(global: &Global, order_id: &str, apply: bool, json: bool) -> Result<()> {
    let mut config = require_config(global)?;
    if let Some(db) = &global.db {
        config.database = db.clone();
    }
    // Without --apply nothing is recorded, so the database is only read.
    let db = if apply {
        Db::open_existing(&config.database, config.synchronous).await?
    } else {
        Db::open_read_only(&config.database).await?
    };
    let daemon = Daemon::new(
        &config,
        db.clone(),
        Arc::new(SystemClock),
        Events::default(),
    )?;
    let polled = daemon.dispatcher.poll_once(order_id, apply).await?;
    let failed = polled.result.as_ref().err().map(ToString::to_string);
    let recorded = polled.recorded.is_some();
    if json {
        print_polled_json(polled)?;
    } else {
        print_polled(polled)?;
    }
    if recorded {
        db.close().await;
    }
    match failed {
        None => Ok(()),
        Some(e) => Err(anyhow!("poll of order {order_id} failed: {e}")),
    }
}

fn print_polled(polled: PolledOnce) -> Result<()> {
    let row = &polled.shipment;
    println!(
        "order {} on {} ({}), tier {}, stored status {}",
        term(&row.order_id),
        term(&row.provider),
        polled.provider_kind,
        term(row.tier.as_str()),
        term(row.status.as_str())
    );
    match &polled.result {
        Ok(trace) => print_trace(trace),
        Err(e) => println!("failed    {}", term(&e.to_string())),
    }
    match polled.recorded {
        None => {
            println!("nothing recorded (give --apply to record this poll as the daemon would)");
        }
        Some(recorded) => match recorded? {
            PollOutcome::Recorded(recorded) => match recorded.change {
                Some((from, to)) => println!(
                    "recorded: {from} → {to}, {} new events, {} notifications queued",
                    recorded.new_events,
                    recorded.queued.len()
                ),
                None => println!(
                    "recorded: no status change, {} new events",
                    recorded.new_events
                ),
            },
            PollOutcome::NotRecorded(_) => println!(
                "not recorded: upstream rejected the credentials or configuration; a running daemon stops the provider itself when upstream rejects it"
            ),
            _ => println!("recorded the failure as the daemon would"),
        },
    }
    Ok(())
}

fn print_trace(trace: &Trace) {
    println!(
        "status    {} (raw: {})",
        trace.status,
        term(&trace.raw_status)
    );
    if let Some(carrier) = &trace.carrier {
        println!("carrier   {}", term(carrier));
    }
    if let Some(tracking_no) = &trace.tracking_no {
        println!("waybill   {}", term(tracking_no));
    }
    println!("events    {} (oldest first)", trace.events.len());
    for e in &trace.events {
        let location = e
            .location
            .as_deref()
            .map_or(String::new(), |l| format!(" [{l}]"));
        let code = e
            .raw_code
            .as_deref()
            .map_or(String::new(), |c| format!("  ({c})"));
        println!(
            "  {}  {}",
            event_time(e),
            term(&format!("{}{location}{code}", e.description))
        );
    }
    for value in &trace.unmapped {
        println!("unmapped  {}", term(value));
    }
}

fn event_time(e: &TraceEvent) -> String {
    e.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// The stable JSON shape of `poll --json` (the field names are documented for scripts).
#[derive(Serialize)]
struct PollView<'a> {
    order_id: &'a str,
    provider: &'a str,
    provider_kind: &'a str,
    tier: Tier,
    /// The status stored before this poll.
    stored_status: Status,
    /// What the provider answered; null when the poll failed.
    answer: Option<AnswerView<'a>>,
    /// Why the poll failed; null when it did not.
    error: Option<String>,
    /// What recording the answer changes in the stored row: `status`, `details` (raw status,
    /// events, waybill or carrier, with the same status) or `nothing`; null when the poll failed.
    would_change: Option<WouldChange>,
    /// What `--apply` did; null without `--apply`.
    recorded: Option<RecordedView>,
}

#[derive(Serialize)]
struct AnswerView<'a> {
    status: Status,
    raw_status: &'a str,
    carrier: Option<&'a str>,
    tracking_no: Option<&'a str>,
    /// Oldest first.
    events: Vec<EventView<'a>>,
    /// Provider codes or texts no mapping knew.
    unmapped: &'a [String],
}

#[derive(Serialize)]
struct EventView<'a> {
    time: String,
    description: &'a str,
    location: Option<&'a str>,
    raw_code: Option<&'a str>,
}

#[derive(Serialize)]
struct RecordedView {
    /// `recorded` (the answer was written), `untracked` (the shipment was removed or stopped
    /// while the poll was under way: nothing was written), `failure_recorded` (the failure was
    /// counted as the daemon counts it) or `skipped` (its provider is paused).
    outcome: &'static str,
    status_change: Option<StatusChange>,
    new_events: u64,
    notifications_queued: usize,
}

#[derive(Serialize)]
struct StatusChange {
    from: Status,
    to: Status,
}

fn print_polled_json(polled: PolledOnce) -> Result<()> {
    let recorded = match polled.recorded {
        None => None,
        Some(recorded) => Some(recorded_view(&recorded?)),
    };
    let row = &polled.shipment;
    let answer = polled.result.as_ref().ok();
    print_json(&PollView {
        order_id: &row.order_id,
        provider: &row.provider,
        provider_kind: polled.provider_kind,
        tier: row.tier,
        stored_status: row.status,
        answer: answer.map(|trace| AnswerView {
            status: trace.status,
            raw_status: &trace.raw_status,
            carrier: trace.carrier.as_deref(),
            tracking_no: trace.tracking_no.as_deref(),
            events: trace
                .events
                .iter()
                .map(|e| EventView {
                    time: event_time(e),
                    description: &e.description,
                    location: e.location.as_deref(),
                    raw_code: e.raw_code.as_deref(),
                })
                .collect(),
            unmapped: &trace.unmapped,
        }),
        error: polled.result.as_ref().err().map(ToString::to_string),
        would_change: answer.map(|trace| would_change(row, trace)),
        recorded,
    })
}

fn recorded_view(outcome: &PollOutcome) -> RecordedView {
    let none = |outcome| RecordedView {
        outcome,
        status_change: None,
        new_events: 0,
        notifications_queued: 0,
    };
    match outcome {
        PollOutcome::Recorded(Recorded {
            change,
            new_events,
            queued,
            applied,
        }) => RecordedView {
            outcome: if *applied { "recorded" } else { "untracked" },
            status_change: change.map(|(from, to)| StatusChange { from, to }),
            new_events: *new_events,
            notifications_queued: queued.len(),
        },
        PollOutcome::Failed(_) => none("failure_recorded"),
        PollOutcome::Skipped => none("skipped"),
        PollOutcome::TakenOver => none("taken_over"),
        PollOutcome::Subscribed => none("subscribed"),
        PollOutcome::NotRecorded(_) => none("not_recorded"),
    }
}
