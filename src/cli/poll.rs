//! `shipwatch poll`: poll one order now, print what its provider says, and record it as the
//! daemon would only when asked.

use std::sync::Arc;

use anyhow::{Result, anyhow};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::events::Events;
use crate::storage::Db;

use super::{Global, require_config, term};

/// The configured provider names, for the error about an order on a provider the config lacks.
fn names(config: &Config) -> String {
    if config.providers.is_empty() {
        return "none".to_owned();
    }
    config
        .providers
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn poll(global: &Global, order_id: &str, apply: bool) -> Result<()> {
    let mut config = require_config(global)?;
    if let Some(db) = &global.db {
        config.database = db.clone();
    }
    let db = Db::open(&config.database, config.synchronous).await?;
    let row = db.shipment(order_id).await?;
    let daemon = Daemon::new(
        &config,
        db.clone(),
        Arc::new(SystemClock),
        Events::default(),
    )?;
    let dispatcher = daemon.dispatcher;
    let provider = dispatcher.provider(&row.provider).ok_or_else(|| {
        anyhow!(
            "order {order_id} is on provider {:?}, which the config does not define (configured: {})",
            row.provider,
            names(&config)
        )
    })?;
    let request = crate::dispatch::track_request(&row);
    provider
        .adapter
        .check(&request)
        .map_err(|reason| anyhow!("order {order_id}: {reason}"))?;
    println!(
        "order {} on {} ({}), tier {}, stored status {}",
        term(&row.order_id),
        term(&row.provider),
        provider.adapter.kind(),
        term(row.tier.as_str()),
        term(row.status.as_str())
    );
    let result = provider.adapter.fetch(&request).await;
    match &result {
        Ok(trace) => {
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
        Err(e) => println!("failed    {}", term(&e.to_string())),
    }
    if !apply {
        println!("nothing recorded (give --apply to record this poll as the daemon would)");
        return match result {
            Ok(_) => Ok(()),
            Err(e) => Err(anyhow!("poll of order {order_id} failed: {e}")),
        };
    }
    let failed = result.as_ref().err().map(ToString::to_string);
    let outcome = dispatcher.apply(&provider, &row, result).await?;
    match outcome {
        crate::dispatch::PollOutcome::Recorded(recorded) => match recorded.change {
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
        _ => println!("recorded the failure as the daemon would"),
    }
    db.close().await;
    match failed {
        None => Ok(()),
        Some(e) => Err(anyhow!("poll of order {order_id} failed: {e}")),
    }
}
