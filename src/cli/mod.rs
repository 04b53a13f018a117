//! The `shipwatch` command line: the daemon, the demo, and the admin commands. This file holds
//! the arguments, the dispatch to one file per command, and what every command shares: finding
//! the config and the database, and turning an error into one line.

mod add;
mod check_config;
mod copy;
mod generate;
mod import;
mod list;
mod logging;
mod outbox;
mod poll;
mod print;
mod recheck;
mod remove;
mod retry;
mod run;
mod set_tier;
mod show;
mod stats;
mod test_notify;

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::domain::{Status, Tier};
use crate::storage::Db;
use crate::storage::Location;

use print::term;

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
    /// Database: a SQLite file, or postgres://USER@HOST/DB (overrides `database` in the config)
    #[arg(long, global = true, value_name = "FILE|URL", value_parser = Location::parse)]
    pub db: Option<Location>,
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
    /// List tracked shipments, the first added first
    List(ListArgs),
    /// Show one shipment with its event history and notifications
    Show {
        order_id: String,
        #[arg(long)]
        json: bool,
        /// Print the phone number, email address and OpenID whole (they are masked otherwise)
        #[arg(long)]
        reveal: bool,
    },
    /// Add the shipments of a CSV file whose header row names shipments columns, all or none
    Import(ImportArgs),
    /// Poll one order now and print what its provider says; record it only with --apply
    Poll {
        order_id: String,
        /// Record the result as the daemon would, notifications included
        #[arg(long)]
        apply: bool,
        /// Print one JSON object: the answer, what it would change, and what --apply did
        #[arg(long)]
        json: bool,
    },
    /// Counts of shipments and notifications, provider pauses, and unmapped provider codes
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Stop tracking an order and forget its history
    Remove { order_id: String },
    /// Move an order to another priority tier
    SetTier {
        order_id: String,
        #[arg(value_parser = tier_parser())]
        tier: Tier,
    },
    /// Check orders flagged invalid again, against the config and the rows as they are now, and
    /// poll again the ones that are fine
    #[command(group = clap::ArgGroup::new("which").required(true).args(["orders", "all_invalid"]))]
    Recheck {
        /// The orders to recheck
        #[arg(value_name = "ORDER")]
        orders: Vec<String>,
        /// Recheck every invalid order
        #[arg(long)]
        all_invalid: bool,
        #[arg(long)]
        json: bool,
    },
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
    /// Copy every row of the database into an empty one (SQLite to PostgreSQL or back), then
    /// check counts and a sample; stop the daemon first
    Copy {
        /// The target: a SQLite file, or postgres://USER@HOST/DB; it must hold no rows
        #[arg(long, value_name = "FILE|URL", value_parser = Location::parse)]
        to: Location,
    },
    /// Check the config (secrets included) and say what it sets up
    CheckConfig,
    /// Send one sample message through a configured channel, to check it before going live
    TestNotify {
        #[arg(long, value_enum)]
        channel: ChannelArg,
        /// The email address, phone number or WeChat OpenID to send to (for webhook: another URL,
        /// optional; for a robot: none, it posts to its group)
        #[arg(long)]
        to: Option<String>,
    },
    /// Print the completion script for SHELL (deploy/INSTALL.md says where it goes)
    Completions { shell: clap_complete::Shell },
    /// Print the man page, in roff (deploy/INSTALL.md says where it goes)
    Man,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only the shipments of this provider, as named under [providers.NAME]
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
    /// Only the shipments in this canonical status
    #[arg(long, value_parser = status_parser())]
    pub status: Option<Status>,
    /// Only the shipments of this tier
    #[arg(long, value_parser = tier_parser())]
    pub tier: Option<Tier>,
    /// Only the shipments whose status changed at or after WHEN (one whose status never changed:
    /// added at or after WHEN). WHEN is a duration back from now (2h, 3d) or an RFC 3339 time
    /// (2026-05-01T08:00:00+08:00)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<list::Since>,
    /// At most N shipments [default: all]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print JSON instead of a table (the shape of `show --json`'s shipment)
    #[arg(long)]
    pub json: bool,
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
    #[arg(long, default_value = "normal", value_parser = tier_parser())]
    pub tier: Tier,
    #[arg(long)]
    pub phone: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// The buyer's OpenID in the shop's WeChat official account, for [channels.wechat]
    #[arg(long)]
    pub openid: Option<String>,
    /// For a split Taobao order: the sub-order ids this parcel carries, like 111,222
    #[arg(long, value_name = "IDS")]
    pub sub_orders: Option<String>,
}

/// `shipwatch import`: a file of shipwatch's own columns, or a Taobao or 1688 seller centre's
/// order export.
#[derive(Args, Debug)]
pub struct ImportArgs {
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
    /// The file's text encoding: auto takes UTF-8 when the whole file is UTF-8, else GBK (as
    /// Excel saves CSV on Chinese Windows)
    #[arg(long, value_enum, default_value_t = EncodingArg::Auto)]
    pub encoding: EncodingArg,
    /// Provider of the rows that name none (a seller centre's export has no provider column)
    /// [default: the only one configured]
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
    /// Read and check the file and look its orders up in the database, and say what an import
    /// would add, skip and refuse, writing nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingArg {
    Auto,
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    #[value(alias = "gb18030")]
    Gbk,
}

/// The tiers, by their names: `--help` lists them and a wrong one is answered with them.
fn tier_parser() -> impl TypedValueParser<Value = Tier> {
    PossibleValuesParser::new(Tier::ALL.map(Tier::as_str)).try_map(|tier| tier.parse::<Tier>())
}

/// The canonical statuses, by their names, as [`tier_parser`] does for tiers.
fn status_parser() -> impl TypedValueParser<Value = Status> {
    PossibleValuesParser::new(Status::ALL.map(Status::as_str))
        .try_map(|status| status.parse::<Status>())
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelArg {
    Webhook,
    Email,
    Sms,
    Dingtalk,
    Wecom,
    Feishu,
    Wechat,
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
    logging::init(&global, default_level);
    match command {
        Command::Run => run::run_daemon(&global).await,
        Command::Demo(args) => crate::demo::run(args, demo_file(&global)?).await,
        Command::CheckConfig => check_config::check_config(&global).await,
        Command::TestNotify { channel, to } => test_notify::test_notify(&global, channel, to).await,
        Command::Add(args) => add::add(&global, args).await,
        Command::List(args) => list::list(&global, args).await,
        Command::Show {
            order_id,
            json,
            reveal,
        } => show::show(&global, &order_id, json, reveal).await,
        Command::Import(args) => import::import(&global, args).await,
        Command::Poll {
            order_id,
            apply,
            json,
        } => poll::poll(&global, &order_id, apply, json).await,
        Command::Stats { json } => stats::stats(&global, json).await,
        Command::Remove { order_id } => remove::remove(&global, &order_id).await,
        Command::SetTier { order_id, tier } => set_tier::set_tier(&global, &order_id, tier).await,
        Command::Recheck {
            orders,
            all_invalid,
            json,
        } => recheck::recheck(&global, &orders, all_invalid, json).await,
        Command::Outbox { state, json } => outbox::outbox(&global, state, json).await,
        Command::Retry { ids, dead } => retry::retry(&global, ids, dead).await,
        Command::Copy { to } => copy::copy(&global, &to).await,
        Command::Completions { shell } => generate::completions(shell),
        Command::Man => generate::man(),
    }
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

/// The demo seeds a SQLite file of its own.
fn demo_file(global: &Global) -> Result<Option<PathBuf>> {
    match &global.db {
        None => Ok(None),
        Some(Location::Sqlite(path)) => Ok(Some(path.clone())),
        Some(Location::Postgres(_)) => {
            bail!(
                "the demo runs on a SQLite file of its own; give --db a file path or leave it out"
            )
        }
    }
}

fn database_path(global: &Global, config: Option<&Config>) -> Result<Location> {
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

/// How an admin command uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Adds rows: the database is created if missing (`add`, `import`).
    Create,
    /// Changes rows that must be there already: a missing database is refused (`remove`,
    /// `retry`, `set-tier`; `recheck` and `poll --apply` open it the same way).
    Change,
    /// Only looks: nothing is created, migrated or written (`list`, `show`, `stats`, `outbox`,
    /// `check-config`; `poll` without `--apply` too).
    Read,
}

/// Opens the database for an admin command. Each command closes it when done rather than letting
/// it drop at exit: the last connection to close checkpoints the WAL into the file, so that the
/// file alone is whole after every command (a backup by copy, an outside reader).
async fn open(global: &Global, access: Access) -> Result<(Db, Option<Config>)> {
    let config = optional_config(global)?;
    let path = database_path(global, config.as_ref())?;
    let sync = config.as_ref().map(|c| c.synchronous).unwrap_or_default();
    let db = match access {
        Access::Create => Db::open(&path, sync).await?,
        Access::Change => Db::open_existing(&path, sync).await?,
        Access::Read => Db::open_read_only(&path).await?,
    };
    Ok((db, config))
}

/// Opens the database read-only for a command that only looks and for which no database means
/// nothing tracked yet (`import --dry-run`): `None` when there is none, and none is created.
async fn open_if_there(global: &Global) -> Result<(Option<Db>, Option<Config>)> {
    let config = optional_config(global)?;
    let path = database_path(global, config.as_ref())?;
    if path.file().is_some_and(|file| !file.exists()) {
        return Ok((None, config));
    }
    Ok((Some(Db::open_read_only(&path).await?), config))
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

/// An error whose lines the command printed itself as they came: the exit status is all that is
/// left to say.
#[derive(Debug, thiserror::Error)]
#[error("(reported above)")]
struct Reported;

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
            // An argument mistake gets clap's whole answer: the usage, what is missing, what
            // was probably meant (bare `shipwatch` gets the help). The mistaken value is the
            // user's own text, so it is escaped like any outside text.
            let rendered = e.render().to_string();
            for line in rendered.lines() {
                eprintln!("{}", term(line));
            }
            return std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
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
        Err(e) if e.is::<Reported>() => std::process::ExitCode::FAILURE,
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
