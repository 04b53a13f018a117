//! `shipwatch poll`: poll one order now, print what its provider says, and record it as the
//! daemon would only when asked.

use std::sync::Arc;

use anyhow::{Result, anyhow};

use crate::clock::SystemClock;
use crate::daemon::Daemon;
use crate::dispatch::PollOutcome;
use crate::events::Events;
use crate::providers::Trace;
use crate::storage::Db;

use super::{Global, require_config, term};

pub(super) async fn poll(global: &Global, order_id: &str, apply: bool) -> Result<()> {
    let mut config = require_config(global)?;
    if let Some(db) = &global.db {
        config.database = db.clone();
    }
    let db = Db::open(&config.database, config.synchronous).await?;
    let daemon = Daemon::new(
        &config,
        db.clone(),
        Arc::new(SystemClock),
        Events::default(),
    )?;
    let polled = daemon.dispatcher.poll_once(order_id, apply).await?;
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
    let failed = polled.result.as_ref().err().map(ToString::to_string);
    match polled.recorded {
        None => {
            println!("nothing recorded (give --apply to record this poll as the daemon would)");
        }
        Some(recorded) => {
            match recorded? {
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
            }
            db.close().await;
        }
    }
    match failed {
        None => Ok(()),
        Some(e) => Err(anyhow!("poll of order {order_id} failed: {e}")),
    }
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
            e.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            term(&format!("{}{location}{code}", e.description))
        );
    }
    for value in &trace.unmapped {
        println!("unmapped  {}", term(value));
    }
}
