//! `shipwatch demo`: the whole pipeline on a simulated carrier, with a webhook receiver of its own
//! on loopback that verifies every signature. No config, no credentials, no network.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, HumanDuration};
use crate::daemon::{Daemon, shutdown_signal};
use crate::domain::Tier;
use crate::events::{Events, PipelineEvent};
use crate::notify::receiver::{Behaviour, Receiver, generate_secret};
use crate::notify::webhook::WebhookSecret;
use crate::storage::{Db, NewShipment};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Stop after this long even if parcels are still moving
    #[arg(long, default_value = "60s")]
    pub duration: HumanDuration,
    /// How many shipments to seed
    #[arg(long, default_value_t = 10)]
    pub shipments: usize,
}

/// The demo's config, written as an operator would write one.
fn demo_config(database: &str, webhook_url: &str, secret: &str) -> String {
    format!(
        r#"
database = "{database}"

[tiers]
high = "1s"
normal = "2s"
low = "4s"

[polling]
scan_interval = "200ms"

[delivery]
backoff = "1s"
backoff_max = "4s"
timeout = "5s"
lease = "10s"

[providers.sim]
kind = "simulator"
step = "2s"
rate_limit = "20/s"

[channels.webhook]
url = "{webhook_url}"
secret = "{secret}"
"#
    )
}

pub async fn run(args: DemoArgs, db_path: Option<PathBuf>) -> Result<()> {
    let started = Instant::now();
    let scratch = tempfile::tempdir().context("cannot create a temporary folder")?;
    let keep_db = db_path.is_some();
    // The demo's shipments and the end it waits for (every shipment final, the outbox empty)
    // assume a database of its own: on one that exists, the seed collides with rows already
    // there, and the demo would poll and wait on shipments that are not its own.
    if let Some(path) = &db_path
        && std::fs::symlink_metadata(path).is_ok()
    {
        anyhow::bail!(
            "{} already exists; the demo seeds a database of its own: give --db a path that does not exist yet, or leave --db out for a temporary one",
            path.display()
        );
    }
    let db_path = match db_path {
        Some(path) => std::path::absolute(&path)
            .with_context(|| format!("cannot resolve {}", path.display()))?,
        None => scratch.path().join("demo.db"),
    };

    let secret = generate_secret();
    let receiver = Receiver::start(
        WebhookSecret::parse(&secret).expect("a generated secret parses"),
        // The receiver turns the first delivery away, to show a retry; then it takes everything.
        Behaviour::FailFirst {
            failures: 1,
            status: 503,
        },
    )
    .await
    .map(Arc::new)
    .context("cannot start the loopback webhook receiver")?;
    let text = demo_config(
        &db_path.display().to_string().replace('\\', "\\\\"),
        &receiver.url,
        &secret,
    );
    let config = Config::parse(&text, None, scratch.path())?;
    let db = Db::open(&config.database, config.synchronous).await?;

    println!(
        "shipwatch demo: a simulated carrier, a webhook receiver on {}",
        receiver.url
    );
    println!(
        "database: {}{}",
        db_path.display(),
        if keep_db { "" } else { " (temporary)" }
    );
    println!("tiers: high every 1s, normal every 2s, low every 4s\n");

    let now = SystemClock.now();
    for i in 0..args.shipments {
        let tier = match i % 10 {
            0..=2 => Tier::High,
            3..=6 => Tier::Normal,
            _ => Tier::Low,
        };
        let order_id = format!("DEMO-{}", 1000 + i);
        let new = NewShipment {
            order_id: order_id.clone(),
            provider: "sim".to_owned(),
            tracking_no: Some(format!("SIM{:010}", 7_700_000 + i)),
            carrier: Some("sim-express".to_owned()),
            tier,
            phone: None,
            email: None,
            openid: None,
            sub_orders: None,
        };
        db.add_shipment(&new, now).await?;
    }
    println!("seeded {} shipments; watching them move:\n", args.shipments);

    let events = Events::default();
    let daemon = Daemon::new(&config, db.clone(), Arc::new(SystemClock), events.clone())?;
    let done = CancellationToken::new();
    let printer = tokio::spawn(print_progress(
        events.subscribe(),
        receiver.subscribe(),
        started,
    ));
    let watcher = tokio::spawn(watch_until_done(db.clone(), done.clone(), args.duration.0));
    let first_retry_shown = tokio::spawn(accept_after_first_failure(
        events.subscribe(),
        receiver.clone(),
    ));

    let stop = done.clone();
    daemon
        .run(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = shutdown_signal() => println!("\ninterrupted"),
            }
        })
        .await?;
    watcher.abort();
    first_retry_shown.abort();
    let _ = first_retry_shown.await;
    // Let the printer catch up with the last deliveries.
    tokio::time::sleep(Duration::from_millis(100)).await;
    printer.abort();

    let deliveries = receiver.deliveries();
    let verified = deliveries.iter().filter(|d| d.verified).count();
    let accepted = deliveries.iter().filter(|d| d.answered == 200).count();
    let counts = db.counts().await?;
    println!("\nsummary after {:.1}s", started.elapsed().as_secs_f64());
    let statuses: Vec<String> = counts
        .statuses
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    println!("  shipments      {}", statuses.join(", "));
    println!(
        "  notifications  {} sent, {} pending, {} dead",
        counts.state("sent"),
        counts.state("pending"),
        counts.state("dead")
    );
    println!(
        "  webhook        {} requests, {verified} with a valid signature, {accepted} accepted",
        deliveries.len()
    );
    if keep_db {
        println!(
            "  look closer    shipwatch --db {} list   (or show DEMO-1000, outbox)",
            db_path.display()
        );
    }
    db.close().await;
    if let Ok(receiver) = Arc::try_unwrap(receiver) {
        receiver.shutdown().await;
    }
    if verified != deliveries.len() {
        anyhow::bail!(
            "{} webhook request(s) failed signature verification",
            deliveries.len() - verified
        );
    }
    Ok(())
}

async fn accept_after_first_failure(
    mut events: tokio::sync::broadcast::Receiver<PipelineEvent>,
    receiver: Arc<Receiver>,
) {
    while let Ok(event) = events.recv().await {
        if matches!(event, PipelineEvent::DeliveryFailed { .. }) {
            receiver.set_behaviour(Behaviour::Accept);
            return;
        }
    }
}

/// Ends the demo once every shipment has reached a final status and the outbox is empty, or
/// when `limit` has passed.
async fn watch_until_done(db: Db, done: CancellationToken, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if tokio::time::Instant::now() >= deadline {
            println!("\ntime is up ({})", humantime::format_duration(limit));
            break;
        }
        if let Ok(counts) = db.counts().await
            && counts.active == 0
            && counts.state("pending") == 0
        {
            break;
        }
    }
    done.cancel();
}

async fn print_progress(
    mut events: tokio::sync::broadcast::Receiver<PipelineEvent>,
    mut deliveries: tokio::sync::broadcast::Receiver<crate::notify::receiver::Delivery>,
    started: Instant,
) {
    let stamp = |started: Instant| format!("[{:>5.1}s]", started.elapsed().as_secs_f64());
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(PipelineEvent::StatusChanged { order_id, tier, from, to, raw_status, .. }) => {
                    println!("{} {order_id}  {:<6} {from} → {to}  ({raw_status})", stamp(started), tier.as_str());
                }
                Ok(PipelineEvent::DeliveryFailed { order_id, status, attempt, error, retry_in, .. }) => {
                    let next = retry_in.map_or("dead".to_owned(), |d| format!("retry in {:.1}s", d.as_secs_f64()));
                    println!("{}   webhook attempt {attempt} for {order_id} {status} failed: {error}; {next}", stamp(started));
                }
                Ok(PipelineEvent::PollFailed { order_id, error, .. }) => {
                    println!("{}   poll of {order_id} failed: {error}", stamp(started));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
            delivery = deliveries.recv() => match delivery {
                Ok(d) => {
                    let data = &d.body["data"];
                    let verdict = if d.verified { "signature verified" } else { "BAD SIGNATURE" };
                    println!(
                        "{}   webhook {} {} {} → {}: answered {}, {verdict}",
                        stamp(started),
                        d.webhook_id,
                        data["order_id"].as_str().unwrap_or("?"),
                        data["previous_status"].as_str().unwrap_or("?"),
                        data["status"].as_str().unwrap_or("?"),
                        d.answered,
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
        }
    }
}
