//! The `shipwatch` command line: the daemon, the demo, and the admin commands.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::clock::{Clock, SystemClock, to_rfc3339};
use crate::config::{self, Config};
use crate::daemon::{Daemon, shutdown_signal};
use crate::domain::{Status, Tier, mask_contact};
use crate::events::Events;
use crate::intake::{Fields, Intake};
use crate::storage::{Db, NewShipment, NotificationView, ShipmentRow, ShipmentView, StorageError};

#[derive(Parser, Debug)]
#[command(
    name = "shipwatch",
    version,
    about = "Tracks parcels on Taobao/Tmall and Chinese carriers, and tells shops and buyers when their status changes"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Config file [default: $SHIPWATCH_CONFIG, ./shipwatch.toml, /etc/shipwatch/shipwatch.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database file (overrides `database` in the config)
    #[arg(long, global = true, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: poll due shipments and deliver notifications until SIGTERM or Ctrl-C
    Run,
    /// Run the whole pipeline on a simulated carrier, on loopback, with no config or credentials
    Demo(crate::demo::DemoArgs),
    /// Track an order
    Add(AddArgs),
    /// List tracked shipments
    List {
        #[arg(long)]
        status: Option<Status>,
        #[arg(long)]
        tier: Option<Tier>,
        #[arg(long)]
        json: bool,
    },
    /// Show one shipment with its event history and notifications
    Show {
        order_id: String,
        #[arg(long)]
        json: bool,
        /// Print the phone number and email address whole (they are masked otherwise)
        #[arg(long)]
        reveal: bool,
    },
    /// Add the shipments of a CSV file whose header row names shipments columns, all or none
    Import {
        #[arg(value_name = "FILE.csv")]
        file: PathBuf,
    },
    /// Poll one order now and print what its provider says; record it only with --apply
    Poll {
        order_id: String,
        /// Record the result as the daemon would, notifications included
        #[arg(long)]
        apply: bool,
    },
    /// Counts of shipments and notifications, provider pauses, and unmapped provider codes
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Stop tracking an order and forget its history
    Remove { order_id: String },
    /// Move an order to another priority tier
    SetTier { order_id: String, tier: Tier },
    /// List notifications in the outbox
    Outbox {
        #[arg(long)]
        state: Option<OutboxState>,
        #[arg(long)]
        json: bool,
    },
    /// Requeue notifications (by id, or every dead one) with a fresh set of attempts
    Retry {
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        ids: Vec<i64>,
        #[arg(long)]
        dead: bool,
    },
    /// Check the config (secrets included) and say what it sets up
    CheckConfig,
    /// Send one sample message through a configured channel, to check it before going live
    TestNotify {
        #[arg(long, value_enum)]
        channel: ChannelArg,
        /// The email address or phone number to send to (for webhook: another URL, optional)
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    pub order_id: String,
    #[arg(long)]
    pub tracking_no: Option<String>,
    #[arg(long)]
    pub carrier: Option<String>,
    /// Provider name as configured under [providers.NAME] [default: the only one configured]
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long, default_value = "normal")]
    pub tier: Tier,
    #[arg(long)]
    pub phone: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// For a split Taobao order: the sub-order ids this parcel carries, like 111,222
    #[arg(long, value_name = "IDS")]
    pub sub_orders: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelArg {
    Webhook,
    Email,
    Sms,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Sent,
    Dead,
    /// Not sent because the shipment has no address for the channel.
    Skipped,
}

impl OutboxState {
    fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Dead => "dead",
            OutboxState::Skipped => "skipped",
        }
    }
}

/// Runs the command line; the error, if any, is for `main` to print as one line.
pub async fn run(cli: Cli) -> Result<()> {
    let Cli { global, command } = cli;
    let default_level = match command {
        Command::Run => "info",
        // The demo's printout tells the story; logs would only repeat it.
        Command::Demo(_) => "error",
        _ => "warn",
    };
    init_logging(&global, default_level);
    match command {
        Command::Run => run_daemon(&global).await,
        Command::Demo(args) => crate::demo::run(args, global.db.clone()).await,
        Command::CheckConfig => check_config(&global).await,
        Command::TestNotify { channel, to } => test_notify(&global, channel, to).await,
        Command::Add(args) => add(&global, args).await,
        Command::List { status, tier, json } => list(&global, status, tier, json).await,
        Command::Show {
            order_id,
            json,
            reveal,
        } => show(&global, &order_id, json, reveal).await,
        Command::Import { file } => import(&global, &file).await,
        Command::Poll { order_id, apply } => poll(&global, &order_id, apply).await,
        Command::Stats { json } => stats(&global, json).await,
        Command::Remove { order_id } => {
            let (db, _) = open(&global).await?;
            db.remove_shipment(&order_id).await?;
            println!("removed order {}", term(&order_id));
            Ok(())
        }
        Command::SetTier { order_id, tier } => {
            let (db, config) = open(&global).await?;
            let tiers = config.as_ref().map(|c| c.tiers).unwrap_or_default();
            let next = SystemClock.now() + crate::clock::millis(tiers.interval(tier));
            db.set_tier(&order_id, tier, next).await?;
            println!("order {} is now tier {tier}", term(&order_id));
            Ok(())
        }
        Command::Outbox { state, json } => outbox(&global, state, json).await,
        Command::Retry { ids, dead } => retry(&global, ids, dead).await,
    }
}

fn init_logging(global: &Global, default: &str) {
    use tracing_subscriber::EnvFilter;
    // The scheduler library narrates its own start at info; only its warnings matter here.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},tokio_cron_scheduler=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // journald stamps every line itself and sets JOURNAL_STREAM for the services it captures.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match (global.log_format, journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder
            .fmt_fields(escaped_fields())
            .without_time()
            .with_ansi(false)
            .try_init(),
        (LogFormat::Text, false) => builder
            .fmt_fields(escaped_fields())
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    let _ = result;
}

/// Text log fields as `name=value`, the message bare, each with its control characters shown as
/// escapes: an order id or an upstream text holding `\r\n` stays inside its own line.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = crate::shown::for_log(&text);
        match field.name() {
            "message" => write!(writer, "{text}"),
            name => write!(writer, "{name}={text}"),
        }
    })
    .delimited(" ")
}

/// The config, required: for `run` and `check-config`.
fn require_config(global: &Global) -> Result<Config> {
    let path = config::locate(global.config.as_deref()).ok_or_else(|| {
        anyhow!(
            "no config file found: give --config FILE, set {}, or create ./shipwatch.toml (see deploy/shipwatch.example.toml)",
            config::ENV_CONFIG
        )
    })?;
    Ok(Config::load(&path)?)
}

/// The config when there is one; admin commands also work with only `--db`.
fn optional_config(global: &Global) -> Result<Option<Config>> {
    match config::locate(global.config.as_deref()) {
        Some(path) => Ok(Some(Config::load_without_secrets(&path)?)),
        None => Ok(None),
    }
}

fn database_path(global: &Global, config: Option<&Config>) -> Result<PathBuf> {
    global
        .db
        .clone()
        .or_else(|| config.map(|c| c.database.clone()))
        .ok_or_else(|| {
            anyhow!(
                "no database: give --db FILE, or a config file with `database = ...` (--config FILE or {})",
                config::ENV_CONFIG
            )
        })
}

/// Opens the database for an admin command. Each command closes it when done rather than letting
/// it drop at exit: the last connection to close checkpoints the WAL into the file, so that the
/// file alone is whole after every command (a backup by copy, an outside reader).
async fn open(global: &Global) -> Result<(Db, Option<Config>)> {
    let config = optional_config(global)?;
    let path = database_path(global, config.as_ref())?;
    let sync = config.as_ref().map(|c| c.synchronous).unwrap_or_default();
    let db = Db::open(&path, sync).await?;
    Ok((db, config))
}

async fn run_daemon(global: &Global) -> Result<()> {
    let mut config = require_config(global)?;
    if let Some(db) = &global.db {
        config.database = db.clone();
    }
    if config.providers.is_empty() {
        bail!(
            "the config defines no providers: add a [providers.NAME] section (see deploy/shipwatch.example.toml)"
        );
    }
    // Checked before opening: a database shipwatch creates is 0600 already.
    let mut exposed = crate::exposure::secret_warnings(&config);
    exposed.extend(crate::exposure::database_warnings(&config.database));
    for warning in &exposed {
        tracing::warn!("{warning}");
    }
    let db = Db::open(&config.database, config.synchronous).await?;
    let _lock = Db::lock_for_daemon(&config.database).map_err(|e| anyhow!(e))?;
    // No other daemon runs on this database: claims left by one that died can go at once.
    db.release_all_claims(SystemClock.now()).await?;
    // A restart is how an operator says the credentials or the config are fixed.
    db.clear_provider_pauses().await?;
    let daemon = Daemon::new(
        &config,
        db.clone(),
        Arc::new(SystemClock),
        Events::default(),
    )?;
    tracing::info!(
        database = %config.database.display(),
        providers = ?config.providers.keys().collect::<Vec<_>>(),
        channels = ?config.channels.rules().iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        "shipwatch started"
    );
    let reloader = tokio::spawn(reload_on_hangup(
        global.clone(),
        daemon.dispatcher.clone(),
        daemon.sender.clone(),
    ));
    let outcome = daemon.run(shutdown_signal()).await;
    reloader.abort();
    db.close().await;
    outcome?;
    Ok(())
}

/// SIGHUP (`systemctl reload shipwatch`) re-reads the config and swaps in its providers, with
/// their credentials: a renewed session takes effect without a restart. It also lifts the stops
/// delivery channels put on themselves (SMS out of credit, a webhook endpoint gone): a reload is
/// how an operator says the cause is fixed. A config that does not load is reported and the
/// running one kept.
async fn reload_on_hangup(
    global: Global,
    dispatcher: Arc<crate::dispatch::Dispatcher>,
    sender: Arc<crate::notify::sender::Sender>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            let loaded = require_config(&global).and_then(|config| {
                let http = crate::daemon::upstream_client(&config.http)?;
                Ok(crate::daemon::build_providers(&config, &http))
            });
            match loaded {
                Ok(providers) => {
                    let names: Vec<String> = providers.keys().cloned().collect();
                    match dispatcher.replace_providers(providers).await {
                        Ok(()) => tracing::info!(
                            providers = ?names,
                            "config reloaded: providers and credentials renewed (other settings take effect at restart)"
                        ),
                        Err(e) => tracing::error!(error = %e, "config reload failed"),
                    }
                    if let Err(e) = sender.resume_stopped_channels().await {
                        tracing::error!(error = %e, "could not lift the channel stops on reload");
                    }
                }
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "config reload failed; keeping the running config"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (global, dispatcher, sender);
    }
}

async fn check_config(global: &Global) -> Result<()> {
    let config = require_config(global)?;
    let source = config
        .source
        .as_deref()
        .map_or_else(String::new, |p| p.display().to_string());
    println!("config {source} is valid");
    let database = global.db.as_deref().unwrap_or(&config.database);
    println!("  database  {}", database.display());
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
        println!(
            "  channel   {} on {}{quiet}{target}",
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
    let mut exposed = crate::exposure::secret_warnings(&config);
    exposed.extend(crate::exposure::database_warnings(database));
    for warning in &exposed {
        println!("  WARNING   {warning}");
    }
    // What the daemon found out about the providers, if it has run on this database.
    if database.exists() {
        let db = Db::open(database, config.synchronous).await?;
        for state in db.provider_states(SystemClock.now()).await? {
            print_provider_state(&state);
        }
    }
    Ok(())
}

async fn add(global: &Global, args: AddArgs) -> Result<()> {
    let (db, config) = open(global).await?;
    let intake = Intake::new(config.as_ref())?;
    let new = intake
        .shipment(Fields {
            order_id: args.order_id,
            provider: args.provider,
            tracking_no: args.tracking_no,
            carrier: args.carrier,
            tier: Some(args.tier.to_string()),
            phone: args.phone,
            email: args.email,
            sub_orders: args.sub_orders,
        })
        .map_err(|reason| anyhow!(reason))?;
    db.add_shipment(&new, SystemClock.now()).await?;
    println!(
        "tracking order {} on {}, tier {}",
        term(&new.order_id),
        term(&new.provider),
        new.tier
    );
    db.close().await;
    Ok(())
}

/// Rows inserted per batch: memory holds one batch, whatever the file's size.
const IMPORT_BATCH: usize = 1000;

async fn import(global: &Global, file: &std::path::Path) -> Result<()> {
    let (db, config) = open(global).await?;
    let intake = Intake::new(config.as_ref())?;
    let shown = file.display().to_string();
    let input = std::fs::File::open(file)
        .map_err(|e| anyhow!("cannot read {shown}: {}", config::io_reason(&e)))?;
    let mut rows = intake
        .csv_rows(input, &shown)
        .map_err(|reason| anyhow!("{reason}; nothing was imported"))?;
    // One transaction for the whole file: all of it or nothing, however many batches.
    let mut import = db.begin_import(SystemClock.now()).await?;
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    loop {
        batch.clear();
        for row in rows.by_ref().take(IMPORT_BATCH) {
            batch.push(row.map_err(|reason| anyhow!("{reason}; nothing was imported"))?);
        }
        if batch.is_empty() {
            break;
        }
        let shipments: Vec<_> = batch.iter().map(|(_, new)| new.clone()).collect();
        if let Err((i, e)) = import.add(&shipments).await {
            let (line, new) = &batch[i];
            drop(import);
            bail!(
                "{}; nothing was imported",
                import_refusal(&db, &intake, file, *line, new, e).await
            );
        }
    }
    let n = import.commit().await?;
    println!("imported {n} shipments from {shown}");
    db.close().await;
    Ok(())
}

/// Why the database refused line `line` of an import, in one line. A repeated order id says
/// where it was first: earlier in the file, or tracked already.
async fn import_refusal(
    db: &Db,
    intake: &Intake,
    file: &std::path::Path,
    line: u64,
    new: &NewShipment,
    error: StorageError,
) -> String {
    let shown = file.display();
    if !matches!(error, StorageError::Duplicate(_)) {
        return format!("{shown} line {line}: {error}");
    }
    // The import's own rows are not committed: what the database holds was there before.
    if db.shipment(&new.order_id).await.is_ok() {
        return format!("{shown} line {line}: {error}");
    }
    match intake.line_of(file, &new.order_id).filter(|&l| l < line) {
        Some(first) => format!(
            "{shown} line {line}, column order_id: order {} is already on line {first}",
            new.order_id
        ),
        // A file that cannot be read twice (a pipe).
        None => format!(
            "{shown} line {line}, column order_id: order {} is already on an earlier line",
            new.order_id
        ),
    }
}

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

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

async fn list(
    global: &Global,
    status: Option<Status>,
    tier: Option<Tier>,
    json: bool,
) -> Result<()> {
    let (db, _) = open(global).await?;
    let rows = db.list_shipments(status, tier).await?;
    if json {
        let views: Vec<ShipmentView> = rows.iter().map(ShipmentView::from).collect();
        return print_json(&views);
    }
    if rows.is_empty() {
        println!("no shipments");
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows.iter().map(shipment_line).collect();
    print_table(
        &[
            "ORDER",
            "PROVIDER",
            "TIER",
            "STATUS",
            "RAW STATUS",
            "NEXT POLL",
            "NOTE",
        ],
        &table,
    );
    db.close().await;
    Ok(())
}

fn shipment_line(row: &ShipmentRow) -> Vec<String> {
    let next = if row.active {
        to_rfc3339(row.next_poll_at)
    } else {
        "-".to_owned()
    };
    let note = match (&row.error, row.active) {
        (Some(e), false) => format!("INVALID: {e}"),
        (Some(e), true) => format!("last poll failed: {e}"),
        (None, _) => String::new(),
    };
    vec![
        row.order_id.clone(),
        row.provider.clone(),
        row.tier.clone(),
        row.status.clone(),
        row.raw_status.clone().unwrap_or_default(),
        next,
        note,
    ]
}

/// The widest a table column gets, in terminal columns; the last column, which is not padded,
/// gets `MAX_LAST_CELL`. Longer cells are cut with `…` (`--json` prints them whole): one huge
/// value must not pad every row of the table to its width.
const MAX_CELL: usize = 48;
const MAX_LAST_CELL: usize = 120;

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let last = headers.len().saturating_sub(1);
    let cut = |i: usize, cell: &str| {
        crate::shown::cell(cell, if i == last { MAX_LAST_CELL } else { MAX_CELL })
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().enumerate().map(|(i, c)| cut(i, c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| crate::shown::width(h)).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(crate::shown::width(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - crate::shown::width(cell) + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[derive(Serialize)]
struct ShowView<'a> {
    shipment: ShipmentView,
    events: &'a [crate::storage::EventRow],
    notifications: Vec<NotificationView>,
}

async fn show(global: &Global, order_id: &str, json: bool, reveal: bool) -> Result<()> {
    let (db, _) = open(global).await?;
    let row = db.shipment(order_id).await?;
    let events = db.events(row.id).await?;
    let notifications = db.list_notifications(None, Some(row.id)).await?;
    if json {
        let mut shipment = ShipmentView::from(&row);
        if reveal {
            shipment.phone = row.phone.clone();
            shipment.email = row.email.clone();
        }
        return print_json(&ShowView {
            shipment,
            events: &events,
            notifications: notifications.iter().map(NotificationView::from).collect(),
        });
    }
    let field = |name: &str, value: Option<String>| {
        let value = value.unwrap_or_else(|| "-".to_owned());
        println!("{name:<18}{}", term(&value));
    };
    field("order", Some(row.order_id.clone()));
    field("provider", Some(row.provider.clone()));
    field("tier", Some(row.tier.clone()));
    field(
        "status",
        Some(match &row.raw_status {
            Some(raw) => format!("{} ({raw})", row.status),
            None => row.status.clone(),
        }),
    );
    field("tracking no", row.tracking_no.clone());
    field("carrier", row.carrier.clone());
    if row.sub_orders.is_some() {
        field("sub-orders", row.sub_orders.clone());
    }
    let contact = |value: &Option<String>| {
        value.as_deref().map(|v| {
            if reveal {
                v.to_owned()
            } else {
                mask_contact(v)
            }
        })
    };
    field("phone", contact(&row.phone));
    field("email", contact(&row.email));
    field(
        "polling",
        Some(match (&row.error, row.active) {
            (Some(e), false) => format!("stopped: INVALID: {e}"),
            (None, false) => "stopped (final status)".to_owned(),
            (_, true) => format!("next at {}", to_rfc3339(row.next_poll_at)),
        }),
    );
    if let (Some(e), true) = (&row.error, row.active) {
        field("last poll failed", Some(e.clone()));
    }
    field("last polled", row.last_polled_at.map(to_rfc3339));
    field("status changed", row.status_changed_at.map(to_rfc3339));
    println!();
    if events.is_empty() {
        println!("no events yet");
    } else {
        println!("events:");
        for e in &events {
            let location = e
                .location
                .as_deref()
                .map_or(String::new(), |l| format!(" [{l}]"));
            println!(
                "  {}  {}",
                to_rfc3339(e.time),
                term(&format!("{}{location}", e.description))
            );
        }
    }
    println!();
    if notifications.is_empty() {
        println!("no notifications");
    } else {
        println!("notifications:");
        let table: Vec<Vec<String>> = notifications.iter().map(notification_line).collect();
        print_table(
            &["ID", "CHANNEL", "CHANGE", "STATE", "ATTEMPTS", "LAST ERROR"],
            &table,
        );
    }
    db.close().await;
    Ok(())
}

fn notification_line(n: &crate::storage::NotificationRow) -> Vec<String> {
    vec![
        n.id.to_string(),
        n.channel.clone(),
        if n.kind == "stuck" {
            format!("stuck in {}", n.status)
        } else {
            format!("{} → {}", n.previous_status, n.status)
        },
        n.state.clone(),
        n.attempts.to_string(),
        n.last_error.clone().unwrap_or_default(),
    ]
}

async fn outbox(global: &Global, state: Option<OutboxState>, json: bool) -> Result<()> {
    let (db, _) = open(global).await?;
    let rows = db
        .list_notifications(state.map(OutboxState::as_str), None)
        .await?;
    if json {
        let views: Vec<NotificationView> = rows.iter().map(NotificationView::from).collect();
        return print_json(&views);
    }
    if rows.is_empty() {
        println!("no notifications");
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|n| {
            let mut line = notification_line(n);
            line.insert(1, n.order_id.clone());
            line
        })
        .collect();
    print_table(
        &[
            "ID",
            "ORDER",
            "CHANNEL",
            "CHANGE",
            "STATE",
            "ATTEMPTS",
            "LAST ERROR",
        ],
        &table,
    );
    db.close().await;
    Ok(())
}

async fn retry(global: &Global, ids: Vec<i64>, dead: bool) -> Result<()> {
    let (db, _) = open(global).await?;
    let now = SystemClock.now();
    let requeued = if dead {
        db.requeue(None, now).await?
    } else {
        db.requeue(Some(&ids), now).await?
    };
    println!("requeued {} notification(s)", requeued.len());
    let skipped: Vec<String> = ids
        .iter()
        .filter(|id| !requeued.contains(id))
        .map(i64::to_string)
        .collect();
    if !skipped.is_empty() {
        bail!(
            "not requeued (unknown, already sent, or being delivered): {}",
            skipped.join(", ")
        );
    }
    db.close().await;
    Ok(())
}

/// `shipwatch list | head` must end when `head` has read enough, as every Unix tool does. Rust
/// ignores SIGPIPE, so the next print would panic ("failed printing to stdout: Broken pipe") and
/// could hang on the way out; the default disposition ends the process at once instead. Only for
/// the admin commands: the daemon must outlive a log reader that goes away.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called before any thread is started; setting a signal's disposition to its
    // default touches no memory of this program.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Text from the database, an upstream or an error, as it may reach the terminal.
fn term(s: &str) -> std::borrow::Cow<'_, str> {
    crate::shown::for_terminal(s)
}

/// The program's entry point: parses the arguments, runs, and turns an error into one line.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, like every other error: clap's first line names the mistake.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see --help)");
            return std::process::ExitCode::from(2);
        }
    };
    if !matches!(cli.command, Command::Run | Command::Demo(_)) {
        end_quietly_on_a_closed_pipe();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Errors often repeat their source in their own text; say each part once.
            let mut chain: Vec<String> = Vec::new();
            for part in e.chain().map(|c| c.to_string()) {
                if !chain.iter().any(|said| said.contains(&part)) {
                    chain.push(part);
                }
            }
            eprintln!("error: {}", term(&chain.join(": ")));
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_provider_state(state: &crate::storage::ProviderState) {
    if let (Some(until), Some(reason)) = (state.paused_until, &state.pause_reason) {
        println!(
            "  STOPPED   {} until {} or a restart: {}",
            term(&state.provider),
            to_rfc3339(until),
            term(reason)
        );
    }
    if let (Some(until), Some(reason)) = (state.banned_until, &state.ban_reason) {
        println!(
            "  BANNED    {} by upstream until {}: {}",
            term(&state.provider),
            to_rfc3339(until),
            term(reason)
        );
    }
}

async fn poll(global: &Global, order_id: &str, apply: bool) -> Result<()> {
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
        term(&row.tier),
        term(&row.status)
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

async fn stats(global: &Global, json: bool) -> Result<()> {
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

/// Sends one sample notification, as a delivered parcel would produce it, through a configured
/// channel, and prints what the other side answered.
async fn test_notify(global: &Global, channel: ChannelArg, to: Option<String>) -> Result<()> {
    use crate::notify::payload::{Queued, for_channel};
    use crate::notify::{ChannelKind, DeliveryError, Outgoing};

    let mut config = require_config(global)?;
    let kind = match channel {
        ChannelArg::Webhook => ChannelKind::Webhook,
        ChannelArg::Email => ChannelKind::Email,
        ChannelArg::Sms => ChannelKind::Sms,
    };
    let (phone, email) = match (kind, &to) {
        (ChannelKind::Webhook, Some(url)) => {
            let webhook = config
                .channels
                .webhook
                .as_mut()
                .ok_or_else(|| anyhow!("the config has no [channels.webhook] section"))?;
            webhook.settings.url = url.clone();
            (None, None)
        }
        (ChannelKind::Webhook, None) => (None, None),
        (_, None) => bail!("give --to: the address or phone number to send the sample to"),
        (ChannelKind::Sms, Some(phone)) => (
            Some(crate::domain::mainland_mobile(phone).map_err(|e| anyhow!(e))?),
            None,
        ),
        (ChannelKind::Email, Some(email)) => {
            email
                .parse::<lettre::Address>()
                .map_err(|_| anyhow!("{email:?} is not an email address"))?;
            (None, Some(email.clone()))
        }
    };
    let rule = config
        .channels
        .rules()
        .into_iter()
        .find(|r| r.kind == kind)
        .ok_or_else(|| anyhow!("the config has no [channels.{kind}] section"))?;
    let sender = crate::daemon::build_channels(&config)?
        .into_iter()
        .find(|c| c.kind() == kind)
        .expect("a configured channel is built");
    let now = SystemClock.now();
    let sample = ShipmentRow {
        id: 0,
        order_id: "TEST-0001".to_owned(),
        provider: "test".to_owned(),
        tracking_no: Some("SF1234567890".to_owned()),
        carrier: Some("顺丰速运".to_owned()),
        tier: "normal".to_owned(),
        phone,
        email,
        status: "out_for_delivery".to_owned(),
        raw_status: None,
        active: true,
        error: None,
        transitions: 0,
        next_poll_at: now,
        last_polled_at: None,
        last_event_at: None,
        status_changed_at: None,
        created_at: now,
        sub_orders: None,
        type_error: None,
    };
    let event = crate::providers::TraceEvent {
        time: crate::clock::to_shanghai(now),
        description: "【北京市】已签收,签收人:本人(测试消息)".to_owned(),
        location: Some("北京市".to_owned()),
        raw_code: None,
    };
    let trace = crate::providers::Trace {
        status: crate::domain::Status::Delivered,
        raw_status: "对方已签收".to_owned(),
        events: vec![event],
        carrier: None,
        tracking_no: None,
        unmapped: Vec::new(),
    };
    let public_id = format!("msg_test{now}");
    let Queued::Send { payload, recipient } = for_channel(
        &rule,
        &public_id,
        now,
        &sample,
        &trace,
        crate::domain::Status::OutForDelivery,
        trace.events.last(),
    ) else {
        bail!("nothing to send: the sample has no address for {kind}");
    };
    let shown_to = recipient
        .as_deref()
        .map_or_else(String::new, |r| format!(" to {}", mask_contact(r)));
    println!("sending a sample {kind} notification{shown_to} ...");
    let message = Outgoing {
        public_id,
        payload,
        recipient,
    };
    match sender.deliver(&message).await {
        Ok(()) => {
            println!("accepted: the {kind} channel works");
            Ok(())
        }
        Err(DeliveryError::Permanent(e)) => bail!("refused for good: {e}"),
        Err(e) => bail!("failed for now (the daemon would retry): {e}"),
    }
}
