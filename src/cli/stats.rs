//! `shipwatch stats`: counts of shipments and notifications, polls of the last hour, provider
//! and channel stops, and unmapped provider codes.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::clock::{Clock, SystemClock};

use super::print::print_provider_state;
use super::{Global, open, term};

#[derive(Serialize)]
struct StatsView {
    shipments: Vec<crate::storage::ShipmentCount>,
    due_now: i64,
    lag_seconds: i64,
    /// Polls in the last hour by provider and result (the daemon writes them every 10 s).
    polls_last_hour: Vec<crate::storage::PollCount>,
    notifications: Vec<crate::storage::NotificationCount>,
    providers: Vec<crate::storage::ProviderState>,
    /// Channels that stopped themselves (SMS out of credit, credentials refused).
    channels: Vec<crate::storage::ChannelState>,
    unmapped: Vec<crate::storage::UnmappedRow>,
}

pub(super) async fn stats(global: &Global, json: bool) -> Result<()> {
    let (db, config) = open(global).await?;
    let now = SystemClock.now();
    let stats = db.stats(now).await?;
    let view = StatsView {
        shipments: stats.shipments,
        due_now: stats.due_now,
        lag_seconds: stats.lag_seconds,
        polls_last_hour: db.polls_last_hour(now).await?,
        notifications: stats.notifications,
        providers: db.provider_states(now).await?,
        channels: db.channel_states(now).await?,
        unmapped: db.unmapped().await?,
    };
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &view)?;
        writeln!(out)?;
        return Ok(());
    }
    let total: i64 = view.shipments.iter().map(|c| c.count).sum();
    let active: i64 = view
        .shipments
        .iter()
        .filter(|c| c.active)
        .map(|c| c.count)
        .sum();
    println!("shipments      {total} ({active} still polled)");
    println!(
        "  due now      {} (the most overdue is {}s late)",
        view.due_now, view.lag_seconds
    );
    let by = |label: &str, key: &dyn Fn(&crate::storage::ShipmentCount) -> String| {
        let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
        for c in &view.shipments {
            *counts.entry(key(c)).or_default() += c.count;
        }
        let line: Vec<String> = counts
            .iter()
            .map(|(k, n)| format!("{n} {}", term(k)))
            .collect();
        println!("  {label:<12} {}", line.join(", "));
    };
    by("by status", &|c| c.status.clone());
    by("by tier", &|c| c.tier.clone());
    by("by provider", &|c| c.provider.clone());
    if view.polls_last_hour.is_empty() {
        println!("polls          none in the last hour");
    } else {
        println!("polls          in the last hour:");
        let mut by_provider: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for c in &view.polls_last_hour {
            by_provider.entry(&c.provider).or_default().push(format!(
                "{} {}",
                c.count,
                term(&c.result)
            ));
        }
        for (provider, results) in by_provider {
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
        for (name, provider) in &config.providers {
            let quota = provider.rate_limit.map_or("no rate limit".to_owned(), |r| {
                format!(
                    "{:.0} calls/min allowed",
                    f64::from(r.calls) * 60.0 / r.per.as_secs_f64()
                )
            });
            let state = view
                .providers
                .iter()
                .find(|s| &s.provider == name)
                .map_or("ok", |s| {
                    if s.paused_until.is_some() {
                        "STOPPED"
                    } else {
                        "BANNED"
                    }
                });
            println!(
                "provider       {name} ({}): {state}, {quota}",
                provider.adapter.kind()
            );
        }
        for rule in config.channels.rules() {
            let state = view
                .channels
                .iter()
                .find(|c| c.channel == rule.kind.as_str())
                .map_or("ok".to_owned(), |c| {
                    format!(
                        "STOPPED until {}: {}",
                        crate::clock::to_rfc3339(c.paused_until),
                        term(&c.reason)
                    )
                });
            println!(
                "channel        {}: {state}, on {} statuses{}",
                rule.kind,
                rule.triggers.len(),
                rule.quiet_hours
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
    if view.unmapped.is_empty() {
        println!("unmapped       none");
    } else {
        println!(
            "unmapped       (provider values no table maps yet; the nearest safe status was used)"
        );
        for u in view.unmapped.iter().take(20) {
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
