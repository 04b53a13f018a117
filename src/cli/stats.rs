//! `shipwatch stats`: counts of shipments and notifications, polls of the last hour, provider
//! and channel stops, and unmapped provider codes.

use anyhow::Result;

use crate::clock::{Clock, SystemClock};
use crate::overview::{Overview, ShipmentKey};

use super::print::{print_json, print_provider_state};
use super::{Access, Global, open, term};

pub(super) async fn stats(global: &Global, json: bool) -> Result<()> {
    let (db, config) = open(global, Access::Read).await?;
    let view = Overview::read(&db, SystemClock.now()).await?;
    if json {
        return print_json(&view);
    }
    println!(
        "shipments      {} ({} still polled)",
        view.total(),
        view.still_polled()
    );
    println!(
        "  due now      {} (the most overdue is {}s late)",
        view.due_now, view.lag_seconds
    );
    for (label, key) in [
        ("by status", ShipmentKey::Status),
        ("by tier", ShipmentKey::Tier),
        ("by provider", ShipmentKey::Provider),
    ] {
        let line: Vec<String> = view
            .shipments_by(key)
            .into_iter()
            .map(|(k, n)| format!("{n} {}", term(k)))
            .collect();
        println!("  {label:<12} {}", line.join(", "));
    }
    if view.polls_last_hour.is_empty() {
        println!("polls          none in the last hour");
    } else {
        println!("polls          in the last hour:");
        for (provider, counts) in view.polls_by_provider() {
            let results: Vec<String> = counts
                .iter()
                .map(|c| format!("{} {}", c.count, term(&c.result)))
                .collect();
            println!("  {:<12} {}", term(provider), results.join(", "));
        }
    }
    let line: Vec<String> = view
        .notifications
        .iter()
        .map(|c| format!("{} {} {}", c.count, term(&c.channel), term(&c.state)))
        .collect();
    println!(
        "notifications  {}",
        if line.is_empty() {
            "none".to_owned()
        } else {
            line.join(", ")
        }
    );
    if let Some(config) = &config {
        for provider in view.provider_lines(config) {
            let quota = provider
                .calls_per_minute
                .map_or("no rate limit".to_owned(), |n| {
                    format!("{n:.0} calls/min allowed")
                });
            println!(
                "provider       {} ({}): {}, {quota}",
                provider.name,
                provider.kind,
                provider.condition.as_str()
            );
        }
        for channel in view.channel_lines(config) {
            let state = channel.stopped.map_or("ok".to_owned(), |c| {
                format!(
                    "STOPPED until {}: {}",
                    crate::clock::to_rfc3339(c.paused_until),
                    term(&c.reason)
                )
            });
            println!(
                "channel        {}: {state}, on {} statuses{}",
                channel.kind,
                channel.triggers,
                channel
                    .quiet_hours
                    .map_or(String::new(), |q| format!(", quiet hours {q}"))
            );
        }
    }
    if view.providers.is_empty() {
        println!("providers      none paused or banned");
    }
    for state in &view.providers {
        print_provider_state(state);
    }
    if view.daemons.is_empty() {
        println!("daemons        none running");
    } else {
        let alive = view.daemons.iter().filter(|d| d.alive).count();
        println!("daemons        {alive} alive of {}", view.daemons.len());
        for d in &view.daemons {
            println!(
                "  {} ({}): host {}, pid {}, since {}, last seen {}, holds {} polls and {} deliveries",
                term(&d.id),
                if d.alive { "alive" } else { "GONE" },
                term(&d.host),
                d.pid,
                crate::clock::to_rfc3339(d.started_at),
                crate::clock::to_rfc3339(d.seen_at),
                d.polling,
                d.delivering
            );
        }
    }
    if view.unmapped.is_empty() {
        println!("unmapped       none");
    } else {
        println!(
            "unmapped       (provider values no table maps yet; the nearest safe status was used)"
        );
        for u in view.unmapped_shown() {
            println!(
                "  {:>6}  {}  {}",
                u.count,
                term(&u.provider),
                term(&u.value)
            );
        }
    }
    db.close().await;
    Ok(())
}
