//! `shipwatch check-config`: load the config with its secrets, say what it sets up, and what the
//! daemon found out about the providers if it has run on the database.

use anyhow::Result;

use crate::clock::{Clock, SystemClock};
use crate::storage::{Db, StorageError};

use super::print::print_provider_state;
use super::{Global, require_config, term};

pub(super) async fn check_config(global: &Global) -> Result<()> {
    let config = require_config(global)?;
    let source = config
        .source
        .as_deref()
        .map_or_else(String::new, |p| p.display().to_string());
    println!("config {source} is valid");
    let database = global.db.as_ref().unwrap_or(&config.database);
    println!("  database  {database}");
    if global.db.is_none() {
        match config.receipts_file() {
            Some(file) => println!("  receipts  {}", term(&file.display().to_string())),
            // Only PostgreSQL has none without the key, and then only outside systemd, whose
            // unit gives the daemon a state folder: this command may well run outside it.
            None => println!(
                "  receipts  none here; the daemon under systemd keeps postgres.sent in its StateDirectory= (set [database] receipts = PATH to choose; without receipts a crash repeats the deliveries accepted just before it)"
            ),
        }
    }
    println!(
        "  tiers     high {}, normal {}, low {}",
        humantime::format_duration(config.tiers.high),
        humantime::format_duration(config.tiers.normal),
        humantime::format_duration(config.tiers.low)
    );
    if config.providers.is_empty() {
        println!("  providers none (add a [providers.NAME] section before `run`)");
    }
    for (name, provider) in &config.providers {
        let quota = provider
            .rate_limit
            .map_or("no rate limit".to_owned(), |r| format!("rate limit {r}"));
        println!("  provider  {name} ({}, {quota})", provider.adapter.kind());
        if let crate::config::AdapterSettings::Kuaidi100(k) = &provider.adapter
            && let Some(push) = &k.push
        {
            let fallback = push
                .fallback_poll
                .map_or("fallback_poll off".to_owned(), |d| {
                    format!("fallback_poll {}", humantime::format_duration(d))
                });
            println!(
                "  push      {name}: subscribed, Kuaidi100 posts to {} ({fallback})",
                crate::shown::url(&push.callback_url)
            );
        }
    }
    if let Some(public) = config.http.public_listen {
        println!("  callbacks served on {public} (POST /callbacks/kuaidi100/NAME, nothing else)");
    }
    let rules = config.channels.rules();
    if rules.is_empty() {
        println!("  channels  none: status changes are recorded but nobody is told");
    }
    for rule in rules {
        let triggers: Vec<&str> = rule.triggers.iter().map(|s| s.as_str()).collect();
        let quiet = rule
            .quiet_hours
            .map_or(String::new(), |q| format!(", quiet hours {q}"));
        let target = config
            .channels
            .shown_target(rule.kind)
            .map_or(String::new(), |url| format!(", to {url}"));
        let at_once = rule.concurrency.unwrap_or(config.delivery.concurrency);
        println!(
            "  channel   {} on {}{quiet}{target}, {at_once} at once",
            rule.kind,
            triggers.join(", ")
        );
    }
    println!(
        "  delivery  {} attempts, backoff {} doubling to {}, timeout {}",
        config.delivery.attempts,
        humantime::format_duration(config.delivery.backoff),
        humantime::format_duration(config.delivery.backoff_max),
        humantime::format_duration(config.delivery.timeout)
    );
    let mut exposed: Vec<String> = config.tiers.order_warning().into_iter().collect();
    exposed.extend(crate::exposure::secret_warnings(&config));
    if let Some(file) = database.file() {
        exposed.extend(crate::exposure::database_warnings(file));
    }
    for warning in &exposed {
        println!("  WARNING   {warning}");
    }
    // What the daemon found out about the providers, if it has run on this database: read
    // only, so that checking a config changes nothing.
    match Db::open_read_only(database).await {
        Ok(db) => {
            for state in db.provider_states(SystemClock.now()).await? {
                print_provider_state(&state);
            }
            db.close().await;
        }
        Err(StorageError::Missing { .. }) => {}
        // A binary newer than the database: the daemon upgrades it at start.
        Err(e @ StorageError::Outdated { .. }) => println!("  WARNING   {}", term(&e.to_string())),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
