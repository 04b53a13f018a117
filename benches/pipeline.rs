//! The pipeline benchmark: the real `shipwatch` binary against the fake TOP gateway (signatures
//! verified) and a real webhook receiver, all on 127.0.0.1, with data it builds itself in a
//! temporary folder that it removes.
//!
//! `cargo bench --bench pipeline` runs every scenario at full size; `-- --quick` runs a short
//! version; `-- --json` prints one JSON object of figures on stdout (progress goes to stderr).

#[path = "../tests/e2e/support/fake.rs"]
#[allow(dead_code)]
mod fake;
#[path = "../tests/e2e/support/fake_top.rs"]
#[allow(dead_code)]
mod fake_top;
#[path = "../tests/e2e/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;
#[path = "../tests/e2e/support/smtp_sink.rs"]
#[allow(dead_code, unused_imports)]
mod smtp_sink;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, TimeZone};
use fake_top::{FakeTop, GENERATED_STATUS, GENERATED_STEPS};
use shipwatch::config::{Http, Synchronous};
use shipwatch::domain::Status;
use shipwatch::notify::receiver::{Behaviour, Receiver, generate_secret};
use shipwatch::notify::webhook::WebhookSecret;
use shipwatch::providers::taobao::{SignMethod, sign};
use shipwatch::providers::{Trace, TraceEvent};
use shipwatch::storage::{Db, Decide, Location, PollWrite, ShipmentRow, ShipmentWrite};
use shipwatch::track::PollRecord;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

const APP_KEY: &str = "12345678";
const APP_SECRET: &str = "helloworld";
const SESSION: &str = "bench-session";
/// Order ids (TOP tids) start here.
const TID_BASE: u64 = 7_000_000_000_000;
/// Polls in flight at once: the daemon's default, used for the HTTP ceiling too.
const CONCURRENCY: usize = 16;
/// How long the daemon may take to say READY=1, and to exit after SIGTERM.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// How much of the daemon's log a failure message shows.
const LOG_TAIL: u64 = 4096;

struct Sizes {
    polls: usize,
    /// Requests of the sequential client.
    sequential: usize,
    /// Status changes timed from the poll that sees them to the receiver, and their spacing.
    latency_samples: usize,
    latency_gap: Duration,
    notifications: usize,
    quota_run: Duration,
    quota_shipments: usize,
    big: usize,
    events_per_shipment: usize,
    /// How long the daemon runs on the big database before its peak memory is read.
    big_run: Duration,
    /// Shipments created through the API one POST each, and batches of [`API_BATCH`].
    api_single: usize,
    api_batches: usize,
    /// Shipments on PostgreSQL for the claim query's time, and claims timed on them.
    pg_claim_rows: usize,
    pg_claims: usize,
    /// Shipments polled by 1, 2 and 3 daemons sharing one PostgreSQL database.
    pg_polls: usize,
    /// Shipments whose polls are recorded in the store alone: a first round, then
    /// [`RECORD_ROUNDS`] timed ones.
    record: usize,
    /// Emails sent one after another through the email channel.
    emails: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                polls: 20_000,
                sequential: 2_000,
                latency_samples: 100,
                latency_gap: Duration::from_millis(100),
                notifications: 20_000,
                quota_run: Duration::from_secs(60),
                quota_shipments: 5_000,
                big: 1_000_000,
                events_per_shipment: 2,
                big_run: Duration::from_secs(3),
                api_single: 1_000,
                api_batches: 5,
                pg_claim_rows: 1_000_000,
                pg_claims: 200,
                pg_polls: 5_000,
                record: 6_400,
                emails: 500,
            }
        } else {
            Sizes {
                polls: 100_000,
                sequential: 10_000,
                latency_samples: 300,
                latency_gap: Duration::from_millis(100),
                notifications: 100_000,
                quota_run: Duration::from_secs(180),
                quota_shipments: 5_000,
                big: 1_000_000,
                events_per_shipment: 10,
                big_run: Duration::from_secs(10),
                api_single: 10_000,
                api_batches: 50,
                pg_claim_rows: 10_000_000,
                pg_claims: 1_000,
                pg_polls: 20_000,
                record: 64_000,
                emails: 2_000,
            }
        }
    }
}

/// One measured figure with its target.
struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    target: Target,
}

#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
    Between(f64, f64),
    Reported,
}

impl Target {
    fn met(self, value: f64) -> Option<bool> {
        match self {
            Target::AtLeast(t) => Some(value >= t),
            Target::AtMost(t) => Some(value <= t),
            Target::Between(lo, hi) => Some((lo..=hi).contains(&value)),
            Target::Reported => None,
        }
    }

    fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t}"),
            Target::AtMost(t) => format!("<= {t}"),
            Target::Between(lo, hi) => format!("{lo} .. {hi}"),
            Target::Reported => "reported".to_owned(),
        }
    }
}

fn say(text: impl AsRef<str>) {
    eprintln!("  {}", text.as_ref());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    // `--only polls` (http, sequential, polls, record, notifications, latency, quota, big, api,
    // postgres, email) runs one
    // scenario: for profiling.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    watch::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(quick, json, only.as_deref())) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("pipeline bench failed: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(quick: bool, json: bool, only: Option<&str>) -> Result<(), String> {
    const SCENARIOS: [&str; 11] = [
        "http",
        "sequential",
        "polls",
        "record",
        "notifications",
        "latency",
        "quota",
        "big",
        "api",
        "postgres",
        "email",
    ];
    if let Some(name) = only.filter(|name| !SCENARIOS.contains(name)) {
        return Err(format!(
            "no scenario {name:?}: --only takes one of {}",
            SCENARIOS.join(", ")
        ));
    }
    let wants = |name: &str| only.is_none_or(|o| o == name);
    let sizes = Sizes::new(quick);
    let machine = Machine::read();
    let header = format!(
        "shipwatch pipeline benchmark ({})\nmachine: {} cores, {}; load average at start {}",
        if quick { "quick" } else { "full" },
        machine.cores,
        machine.cpu,
        machine.load
    );
    eprintln!("{header}");
    let mut figures = Vec::new();

    // Generous deadlines (tens of times what an idle 2-core machine needs), scaled with the
    // sizes: they catch a bench that waits for something that will never come.
    let per_row = |rows: usize| Duration::from_secs(120 + rows as u64 / 100);

    let mut http_ceiling = None;
    if wants("http") {
        eprintln!("[1/11] HTTP ceiling");
        watch::begin("http", per_row(sizes.polls));
        let http_limit = http_limit(sizes.polls).await?;
        http_ceiling = Some(http_limit);
        figures.push(Figure {
            name: "http_limit_per_sec",
            value: http_limit,
            unit: "req/s",
            target: Target::Reported,
        });
    }

    let mut sequential_rates = None;
    if wants("sequential") {
        eprintln!(
            "[2/11] sequential: {} polls by a script poller and {} bare requests, one at a time, \
             a new connection each",
            sizes.sequential, sizes.sequential
        );
        watch::begin("sequential", per_row(sizes.sequential * 10));
        let script = script_poller(sizes.sequential).await?;
        let bare = sequential(sizes.sequential).await?;
        sequential_rates = Some((script, bare));
        figures.push(Figure {
            name: "sequential_per_sec",
            value: script,
            unit: "polls/s",
            target: Target::Reported,
        });
        figures.push(Figure {
            name: "sequential_http_per_sec",
            value: bare,
            unit: "req/s",
            target: Target::Reported,
        });
    }

    if wants("polls") {
        eprintln!("[3/11] polls: {} shipments all due", sizes.polls);
        watch::begin("polls", per_row(sizes.polls));
        let polls = polls(sizes.polls).await?;
        figures.push(Figure {
            name: "polls_per_sec",
            value: polls.per_sec,
            unit: "polls/s",
            target: Target::AtLeast(10_000f64.max(0.5 * http_ceiling.unwrap_or(0.0)).round()),
        });
        figures.push(Figure {
            name: "cpu_us_per_poll",
            value: polls.cpu_us_per_poll,
            unit: "µs",
            target: Target::AtMost(100.0),
        });
        if let Some((script, bare)) = sequential_rates {
            figures.push(Figure {
                name: "ratio_vs_sequential",
                value: polls.per_sec / script,
                unit: "x",
                target: Target::AtLeast(10.0),
            });
            figures.push(Figure {
                name: "ratio_vs_sequential_http",
                value: polls.per_sec / bare,
                unit: "x",
                target: Target::Reported,
            });
        }
    }

    if wants("notifications") {
        eprintln!(
            "[4/11] notifications: {} pending webhooks",
            sizes.notifications
        );
        watch::begin("notifications", per_row(sizes.notifications));
        figures.push(Figure {
            name: "notifications_per_sec",
            value: notifications(sizes.notifications).await?,
            unit: "deliveries/s",
            target: Target::AtLeast(10_000.0),
        });
    }

    if wants("latency") {
        eprintln!(
            "[5/11] change to delivery: {} changes, {} ms apart",
            sizes.latency_samples,
            sizes.latency_gap.as_millis()
        );
        let spread = sizes.latency_gap * sizes.latency_samples as u32;
        watch::begin("latency", Duration::from_secs(120) + 3 * spread);
        let latency = change_to_delivery(sizes.latency_samples, sizes.latency_gap).await?;
        figures.push(Figure {
            name: "change_to_delivery_ms_p50",
            value: latency.p50_ms,
            unit: "ms",
            target: Target::AtMost(20.0),
        });
        figures.push(Figure {
            name: "change_to_delivery_ms_p99",
            value: latency.p99_ms,
            unit: "ms",
            target: Target::AtMost(200.0),
        });
    }

    if wants("quota") {
        eprintln!(
            "[6/11] quota: 600/min, {} shipments due, {} s",
            sizes.quota_shipments,
            sizes.quota_run.as_secs()
        );
        watch::begin("quota", sizes.quota_run + Duration::from_secs(120));
        let quota = quota(sizes.quota_shipments, sizes.quota_run).await?;
        figures.push(Figure {
            name: "quota_utilization",
            value: quota.utilization,
            unit: "of quota",
            target: Target::Between(0.98, 1.00),
        });
        figures.push(Figure {
            name: "over_quota_calls",
            value: quota.over as f64,
            unit: "calls",
            target: Target::AtMost(0.0),
        });
    }

    if wants("big") {
        eprintln!(
            "[7/11] {} shipments with {} events each",
            sizes.big, sizes.events_per_shipment
        );
        let rows = sizes.big * sizes.events_per_shipment;
        let limit = Duration::from_secs(300 + rows as u64 / 10_000) + sizes.big_run;
        watch::begin("big", limit);
        let big = big_database(sizes.big, sizes.events_per_shipment, sizes.big_run).await?;
        figures.push(Figure {
            name: "rss_mib_1m",
            value: big.rss_mib,
            unit: "MiB",
            target: Target::AtMost(64.0),
        });
        figures.push(Figure {
            name: "startup_ms_1m",
            value: big.startup_ms,
            unit: "ms",
            target: Target::AtMost(1_000.0),
        });
        figures.push(Figure {
            name: "due_query_us_1m",
            value: big.due_query_us,
            unit: "µs",
            target: Target::AtMost(1_000.0),
        });
        figures.push(Figure {
            name: "db_bytes_per_shipment",
            value: big.bytes_per_shipment,
            unit: "bytes",
            target: Target::Reported,
        });
    }
    if wants("api") {
        eprintln!(
            "[8/11] API creates: {} single POSTs from {API_CLIENTS} clients, {} batches of {API_BATCH}",
            sizes.api_single, sizes.api_batches
        );
        watch::begin(
            "api",
            per_row(sizes.api_single * 10 + sizes.api_batches * API_BATCH),
        );
        let api = api_creates(sizes.api_single, sizes.api_batches).await?;
        figures.push(Figure {
            name: "api_creates_per_sec_single",
            value: api.single_per_sec,
            unit: "creates/s",
            target: Target::Reported,
        });
        figures.push(Figure {
            name: "api_creates_per_sec_batch",
            value: api.batch_per_sec,
            unit: "creates/s",
            target: Target::Reported,
        });
    }
    if wants("record") {
        eprintln!(
            "[9/11] record: {} shipments with traces of {RECORD_EVENTS}+ events, polled in rounds, in the store alone",
            sizes.record
        );
        watch::begin("record", per_row(sizes.record * RECORD_ROUNDS));
        let record = record(sizes.record).await?;
        figures.push(Figure {
            name: "record_us_per_poll_same",
            value: record.same_us,
            unit: "µs",
            target: Target::Reported,
        });
        figures.push(Figure {
            name: "record_us_per_poll_newer",
            value: record.newer_us,
            unit: "µs",
            target: Target::Reported,
        });
    }
    if wants("postgres") {
        eprintln!(
            "[10/11] PostgreSQL: the claim query on {} shipments; {} shipments polled by 1, 2 and 3 daemons",
            sizes.pg_claim_rows, sizes.pg_polls
        );
        watch::begin(
            "postgres",
            per_row(sizes.pg_claim_rows / 20 + sizes.pg_polls * 3),
        );
        let buffers = shared_buffers_mib();
        say(format!(
            "the server gets shared_buffers = {buffers} MB, as docs/postgres.md advises"
        ));
        postgres::server_settings(&[
            format!("shared_buffers={buffers}MB"),
            // PostgreSQL's own account of each statement's planning and execution, for the
            // claim's time at the server.
            "shared_preload_libraries=pg_stat_statements".to_owned(),
            "pg_stat_statements.track_planning=on".to_owned(),
        ]);
        let claim = claim_query(sizes.pg_claim_rows, sizes.pg_claims).await?;
        // The target is the claim's time at the server; the library's round trip is shown beside it.
        let at_10m = sizes.pg_claim_rows >= 10_000_000;
        for ((at_10m_name, at_1m_name), value, target) in [
            (
                ("pg_claim_server_ms_mean_10m", "pg_claim_server_ms_mean_1m"),
                claim.server_mean_ms,
                Target::AtMost(2.0),
            ),
            (
                ("pg_claim_ms_p50_10m", "pg_claim_ms_p50_1m"),
                claim.p50_ms,
                Target::Reported,
            ),
            (
                ("pg_claim_ms_p99_10m", "pg_claim_ms_p99_1m"),
                claim.p99_ms,
                Target::Reported,
            ),
        ] {
            figures.push(Figure {
                name: if at_10m { at_10m_name } else { at_1m_name },
                value,
                unit: "ms",
                target,
            });
        }
        for (daemons, name) in [
            (1, "pg_polls_per_sec_1_daemon"),
            (2, "pg_polls_per_sec_2_daemons"),
            (3, "pg_polls_per_sec_3_daemons"),
        ] {
            figures.push(Figure {
                name,
                value: pg_polls(daemons, sizes.pg_polls).await?,
                unit: "polls/s",
                target: Target::Reported,
            });
        }
    }
    if wants("email") {
        eprintln!(
            "[11/11] email: {} messages one after another through the email channel to an SMTP sink",
            sizes.emails
        );
        watch::begin("email", per_row(sizes.emails * 100));
        figures.push(Figure {
            name: "email_ms_per_message",
            value: email_ms_per_message(sizes.emails).await?,
            unit: "ms",
            target: Target::Reported,
        });
    }
    watch::end();

    let load_end = Machine::read().load;
    if json {
        let mut object = serde_json::Map::new();
        object.insert("mode".into(), (if quick { "quick" } else { "full" }).into());
        object.insert("cores".into(), machine.cores.into());
        object.insert("cpu".into(), machine.cpu.clone().into());
        object.insert("load_start".into(), machine.load.clone().into());
        object.insert("load_end".into(), load_end.into());
        object.insert(
            "events_per_shipment".into(),
            sizes.events_per_shipment.into(),
        );
        for figure in &figures {
            object.insert(figure.name.into(), round(figure.value).into());
        }
        println!("{}", serde_json::Value::Object(object));
    } else {
        println!("{header}; at end {load_end}");
        println!();
        println!(
            "| {:<26} | {:>12} | {:<12} | {:<14} | {:<4} |",
            "figure", "value", "unit", "target", "met"
        );
        println!(
            "|{:-<28}|{:->14}|{:-<14}|{:-<16}|{:-<6}|",
            "", "", "", "", ""
        );
        for figure in &figures {
            let met = match figure.target.met(figure.value) {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            println!(
                "| {:<26} | {:>12} | {:<12} | {:<14} | {:<4} |",
                figure.name,
                round(figure.value),
                figure.unit,
                figure.target.text(),
                met
            );
        }
    }
    Ok(())
}

fn round(value: f64) -> f64 {
    if value.abs() >= 100.0 {
        value.round()
    } else {
        (value * 1000.0).round() / 1000.0
    }
}

// ---- deadlines -------------------------------------------------------------------------------

/// Every scenario runs against a deadline. `wait_for` fails with what it was waiting for and how
/// far it got when the deadline passes; a watchdog thread covers everything else (a blocking
/// call, an `.await` that never returns): a few seconds after the deadline it prints what the
/// scenario was doing, kills the daemon the bench started, removes the temporary folder and
/// exits non-zero. No scenario can hang.
mod watch {
    use std::path::PathBuf;
    use std::sync::{Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    /// Time the nicer failure of `wait_for` gets before the watchdog steps in.
    const GRACE: Duration = Duration::from_secs(5);

    struct Watch {
        scenario: &'static str,
        limit: Duration,
        deadline: Instant,
        doing: String,
        daemon: Option<u32>,
        dir: Option<PathBuf>,
    }

    static WATCH: Mutex<Option<Watch>> = Mutex::new(None);

    fn lock() -> MutexGuard<'static, Option<Watch>> {
        WATCH
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the watchdog thread (once).
    pub fn start() {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let guard = lock();
                let Some(watch) = guard.as_ref() else {
                    continue;
                };
                if Instant::now() < watch.deadline + GRACE {
                    continue;
                }
                eprintln!(
                    "pipeline bench failed: scenario {} passed its deadline of {} s while {}",
                    watch.scenario,
                    watch.limit.as_secs(),
                    watch.doing
                );
                if let Some(pid) = watch.daemon {
                    // Only the daemon this bench started, by its pid.
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                if let Some(dir) = &watch.dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                std::process::exit(2);
            }
        });
    }

    /// A scenario begins: it must be done within `limit`, or within `BENCH_DEADLINE` seconds
    /// when that is set and shorter (to see a deadline fail on purpose).
    pub fn begin(scenario: &'static str, limit: Duration) {
        let limit = std::env::var("BENCH_DEADLINE")
            .ok()
            .and_then(|secs| secs.trim().parse::<u64>().ok())
            .map_or(limit, |secs| limit.min(Duration::from_secs(secs)));
        *lock() = Some(Watch {
            scenario,
            limit,
            deadline: Instant::now() + limit,
            doing: "starting".to_owned(),
            daemon: None,
            dir: None,
        });
    }

    pub fn end() {
        *lock() = None;
    }

    /// What the scenario does now, reported if its deadline passes.
    pub fn doing(text: impl Into<String>) {
        if let Some(watch) = lock().as_mut() {
            watch.doing = text.into();
        }
    }

    pub fn daemon(pid: Option<u32>) {
        if let Some(watch) = lock().as_mut() {
            watch.daemon = pid;
        }
    }

    pub fn dir(dir: PathBuf) {
        if let Some(watch) = lock().as_mut() {
            watch.dir = Some(dir);
        }
    }

    /// The running scenario's deadline (an hour away outside any scenario).
    pub fn deadline() -> Instant {
        lock()
            .as_ref()
            .map_or(Instant::now() + Duration::from_secs(3600), |w| w.deadline)
    }

    /// The one-line failure of a scenario whose deadline passed while `doing`.
    pub fn overdue(doing: &str) -> String {
        match lock().as_ref() {
            Some(w) => format!(
                "scenario {} passed its deadline of {} s {doing}",
                w.scenario,
                w.limit.as_secs()
            ),
            None => format!("deadline passed {doing}"),
        }
    }
}

// ---- the machine -----------------------------------------------------------------------------

struct Machine {
    cores: usize,
    cpu: String,
    load: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
        let load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            load,
        }
    }
}

// ---- the daemon and its files ----------------------------------------------------------------

/// A temporary folder with a database, a config and the fakes the config points at.
struct Setup {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
}

struct ConfigOptions<'a> {
    top: &'a str,
    webhook: Option<(&'a str, &'a str)>,
    rate_limit: Option<&'a str>,
}

/// The config every bench daemon starts from: `database` (a path or a URL), hour-long tiers, and
/// the fake TOP gateway at `top` as the one provider.
fn base_config(database: &str, top: &str) -> String {
    format!(
        r#"database = "{database}"

# The fake's journeys carry fixed dates, days old by now: without this, the stuck sweep (every
# ten minutes on the clock) would queue a `shipment.stuck` webhook for every parcel still moving
# whenever a scenario spans one, and the latency scenario would count them as its own.
[maintenance]
stuck_after = "3650days"

[tiers]
high = "1h"
normal = "1h"
low = "2h"

[providers.taobao]
kind = "taobao"
endpoint = "{top}"
app_key = "{APP_KEY}"
app_secret = "{APP_SECRET}"
session = "{SESSION}"
sign_method = "hmac-sha256"
"#
    )
}

impl Setup {
    /// A fresh, migrated database and a config for it.
    async fn new(options: ConfigOptions<'_>) -> Result<Setup, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let db = dir.path().join("shipwatch.db");
        let config = dir.path().join("shipwatch.toml");
        let mut text = base_config(&db.display().to_string(), options.top);
        if let Ok(extra) = std::env::var("BENCH_EXTRA") {
            text = format!("{text}\n{extra}\n");
        }
        if let Some(limit) = options.rate_limit {
            text.push_str(&format!("rate_limit = \"{limit}\"\n"));
        }
        if let Some((url, secret)) = options.webhook {
            text.push_str(&format!(
                "\n[channels.webhook]\nurl = \"{url}\"\nsecret = \"{secret}\"\n"
            ));
        }
        std::fs::write(&config, text).map_err(|e| format!("config: {e}"))?;
        // The library migrates, exactly as the daemon would.
        let handle = Db::open(&db, Synchronous::Normal)
            .await
            .map_err(|e| e.to_string())?;
        handle.close().await;
        watch::dir(dir.path().to_owned());
        Ok(Setup { dir, db, config })
    }

    /// Runs SQL through a connection of its own, as an outside tool would.
    async fn sql(&self, statement: &str) -> Result<(), String> {
        let url = format!("sqlite://{}", self.db.display());
        let conn = SqliteConnection::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        run_sql(conn, statement).await
    }

    async fn count(&self, query: &str) -> Result<i64, String> {
        let url = format!("sqlite://{}?mode=ro", self.db.display());
        let conn = SqliteConnection::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        count_on(conn, query).await
    }

    /// Waits until the count `query` returns satisfies `done`.
    async fn wait_count(
        &self,
        what: &str,
        query: &str,
        done: impl Fn(i64) -> bool,
    ) -> Result<(), String> {
        wait_for(what, Duration::from_millis(20), || async {
            let n = self.count(query).await?;
            Ok((done(n), format!("{n} from `{query}`")))
        })
        .await
    }

    /// Starts `shipwatch run` under a stand-in for systemd and waits for READY=1.
    fn start_daemon(&self) -> Result<Daemon, String> {
        start_daemon(self.dir.path(), &self.config, "daemon")
    }
}

/// Starts `shipwatch run` on `config` under a stand-in for systemd and waits for READY=1; its
/// socket and log in `dir` are named after `name`, so that several can run side by side.
fn start_daemon(
    dir: &std::path::Path,
    config: &std::path::Path,
    name: &str,
) -> Result<Daemon, String> {
    {
        let socket_path = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).map_err(|e| format!("notify socket: {e}"))?;
        // Short reads, so that a daemon that dies or never gets ready is seen in time.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let log = dir.join(format!("{name}.log"));
        let started = Instant::now();
        // `BENCH_BIN` runs another build of the daemon against the same scenarios, to compare
        // two builds on the same machine state.
        let bin =
            std::env::var_os("BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_shipwatch").into());
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("SHIPWATCH_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("RUST_LOG")
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot start shipwatch: {e}"))?;
        let mut daemon = Daemon {
            child,
            log,
            startup: Duration::ZERO,
        };
        watch::daemon(Some(daemon.pid()));
        watch::doing("waiting for READY=1 from the daemon");
        let deadline = watch::deadline().min(started + STARTUP_LIMIT);
        let mut buf = vec![0u8; 4096];
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "the daemon exited with {status} before READY=1; its log ends:\n{}",
                    daemon.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no READY=1 from the daemon within {} s; its log ends:\n{}",
                    deadline.duration_since(started).as_secs(),
                    daemon.log_text()
                ));
            }
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(format!("notify socket: {e}")),
            };
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                daemon.startup = started.elapsed();
                // Named so that a profiler can be attached to it (`perf record -p PID`).
                say(format!("daemon pid {} ready", daemon.pid()));
                return Ok(daemon);
            }
        }
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
    startup: Duration,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU time so far, from /proc/PID/stat.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The command name may hold spaces; fields are counted after its closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// The end of the daemon's log (at most `LOG_TAIL` bytes), for failure messages.
    fn log_text(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return String::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)));
        let mut bytes = Vec::new();
        let _ = file.take(LOG_TAIL).read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// SIGTERM, and the exit that must follow within `STOP_LIMIT`.
    fn stop(mut self) -> Result<(), String> {
        let pid = self.pid().to_string();
        watch::doing(format!("stopping the daemon (pid {pid}, SIGTERM sent)"));
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let asked = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if asked.elapsed() > STOP_LIMIT {
                return Err(format!(
                    "the daemon did not exit within {} s of SIGTERM (killed); its log ends:\n{}",
                    STOP_LIMIT.as_secs(),
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        watch::daemon(None);
        if !status.success() {
            return Err(format!(
                "the daemon exited with {status}; its log ends:\n{}",
                self.log_text()
            ));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        watch::daemon(None);
    }
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Waits until `check` says done, checking every `every`, at most until the scenario's
/// deadline; `check` also says how far things got, for the message when the deadline passes.
async fn wait_for<F, Fut>(what: &str, every: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(bool, String), String>>,
{
    let deadline = watch::deadline();
    loop {
        let (done, so_far) = check().await?;
        if done {
            return Ok(());
        }
        let doing = format!("waiting until {what} (so far: {so_far})");
        if Instant::now() > deadline {
            return Err(watch::overdue(&doing));
        }
        watch::doing(doing);
        tokio::time::sleep(every).await;
    }
}

/// Epoch milliseconds of a TOP step time (Asia/Shanghai).
fn step_millis(time: &str) -> i64 {
    let naive = NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S").expect("a step time");
    chrono::FixedOffset::east_opt(8 * 3600)
        .expect("+08:00")
        .from_local_datetime(&naive)
        .single()
        .expect("unambiguous")
        .timestamp_millis()
}

/// The digest the daemon stores with a shipment once it has written the events of the fake's
/// steady answer (`track::events_digest`), as a poll of an earlier run would have left it.
fn steady_digest() -> i64 {
    let events: Vec<TraceEvent> = GENERATED_STEPS[..2]
        .iter()
        .map(|(time, description, action)| TraceEvent {
            time: chrono::FixedOffset::east_opt(8 * 3600)
                .expect("+08:00")
                .timestamp_millis_opt(step_millis(time))
                .single()
                .expect("a step time"),
            description: (*description).to_owned(),
            location: None,
            raw_code: Some((*action).to_owned()),
        })
        .collect();
    shipwatch::track::events_digest(&events)
}

/// SQL that inserts `n` shipments of the TOP provider, tids from `TID_BASE + first`, in transit
/// with the two events the fake's steady answer holds, due at `next_poll_at`: as the daemon
/// leaves a shipment it has polled before, the digest of those events included.
fn insert_shipments(first: usize, n: usize, active: bool, next_poll_at: i64) -> String {
    let [(t1, d1, a1), (t2, d2, a2), _] = GENERATED_STEPS;
    let (status, active) = if active {
        ("in_transit", 1)
    } else {
        ("delivered", 0)
    };
    let last = first + n - 1;
    format!(
        "WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
         INSERT INTO shipments (order_id, provider, tracking_no, carrier, tier, email, status, \
             raw_status, active, transitions, next_poll_at, created_at, last_event_at, \
             events_digest) \
         SELECT {TID_BASE} + i, 'taobao', 'ZT' || ({TID_BASE} + i), '中通快递', 'high', \
             'buyer' || i || '@example.com', '{status}', '{GENERATED_STATUS}', {active}, 2, \
             {next_poll_at}, {created_at}, {m2}, {digest} FROM n; \
         INSERT INTO events (shipment_id, time, description, raw_code) \
             SELECT id, {m1}, '{d1}', '{a1}' FROM shipments; \
         INSERT INTO events (shipment_id, time, description, raw_code) \
             SELECT id, {m2}, '{d2}', '{a2}' FROM shipments;",
        m1 = step_millis(t1),
        m2 = step_millis(t2),
        digest = steady_digest(),
        // A real start of tracking: the daemon flags a row whose created_at is before 2000.
        created_at = now_millis() - 3_600_000,
    )
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn receiver() -> Result<(Receiver, String), String> {
    let secret = generate_secret();
    let receiver = Receiver::start(
        WebhookSecret::parse(&secret).map_err(|e| e.to_string())?,
        Behaviour::Accept,
    )
    .await
    .map_err(|e| format!("webhook receiver: {e}"))?;
    Ok((receiver, secret))
}

/// The fake gateway (answering any tid), a webhook receiver, and a setup whose daemon polls the
/// one and notifies the other.
async fn with_webhook() -> Result<(FakeTop, Receiver, Setup), String> {
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(10);
    let (receiver, secret) = receiver().await?;
    let setup = Setup::new(ConfigOptions {
        top: &top.url,
        webhook: Some((&receiver.url, &secret)),
        rate_limit: None,
    })
    .await?;
    Ok((top, receiver, setup))
}

// ---- scenarios -------------------------------------------------------------------------------

/// The same HTTP client the daemon uses, `CONCURRENCY` requests at a time, each one signed as
/// the adapter signs it, against the same fake: the ceiling for `polls_per_sec`.
async fn http_limit(requests: usize) -> Result<f64, String> {
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(10);
    let client = shipwatch::daemon::upstream_client(&Http::default()).map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, next, url) = (client.clone(), next.clone(), top.url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<(), String>(());
                }
                trace_request(&client, &url, TID_BASE + i as u64).await?;
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    say(format!("{requests} requests at {rate:.0}/s"));
    Ok(rate)
}

/// One `taobao.logistics.trace.search` for `tid`, signed as the adapter signs it; an answer
/// other than a trace is an error.
async fn trace_request(client: &reqwest::Client, url: &str, tid: u64) -> Result<(), String> {
    let tid = tid.to_string();
    let timestamp = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00"))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let mut params = vec![
        ("method", fake_top::METHOD),
        ("app_key", APP_KEY),
        ("session", SESSION),
        ("timestamp", timestamp.as_str()),
        ("v", "2.0"),
        ("format", "json"),
        ("sign_method", "hmac-sha256"),
        ("tid", tid.as_str()),
    ];
    let signature = sign(&params, APP_SECRET, SignMethod::HmacSha256);
    params.push(("sign", &signature));
    let body = client
        .post(url)
        .form(&params)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    if !body.starts_with(b"{\"logistics_trace_search_response\"") {
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(format!("the fake refused a request: {shown}"));
    }
    Ok(())
}

/// The bare-HTTP figure beside the script poller: one request at a time, each on a new
/// connection, signed the same way, against the same fake; compiled Rust in the bench's own
/// process that reads each answer and stores nothing.
async fn sequential(requests: usize) -> Result<f64, String> {
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(10);
    // With no idle connection allowed per host (reqwest's `ClientBuilder::pool_max_idle_per_host`,
    // docs.rs/reqwest: "the maximum idle connection per host allowed in the pool"), a connection
    // is closed after its response and every request opens its own: 2,000 requests left 2,000
    // more loopback sockets in TIME_WAIT (`ss -tan state time-wait`).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for i in 0..requests {
        if i % 100 == 0 {
            watch::doing(format!("sending request {i} of {requests}"));
        }
        trace_request(&client, &top.url, TID_BASE + i as u64).await?;
    }
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    if top.signature_failures() > 0 || top.call_count() != requests {
        return Err(format!(
            "the fake counted {} calls for {requests} requests, {} refused",
            top.call_count(),
            top.signature_failures()
        ));
    }
    say(format!("{requests} requests at {rate:.0}/s"));
    Ok(rate)
}

/// The side-by-side baseline the ratio is taken against: `benches/script_poller.py`, a simple
/// script poller in Python's standard library (one order at a time, a new connection each, the
/// answer read and its status committed to SQLite), against the same fake. Its polls a second,
/// timed by the script from its first request to its last commit.
async fn script_poller(polls: usize) -> Result<f64, String> {
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(10);
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let db = dir.path().join("script.db");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/script_poller.py");
    watch::doing(format!("python3 {script} polls {polls} orders"));
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&top.url)
        .arg(&db)
        .arg(TID_BASE.to_string())
        .arg(polls.to_string())
        .args([APP_KEY, APP_SECRET, SESSION])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            format!("cannot start python3 for the script poller ({e}): install Python 3")
        })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "the script poller failed ({}): {}",
            out.status,
            said.trim()
        ));
    }
    let said: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the script poller printed no figure ({e})"))?;
    let seconds = said["seconds"]
        .as_f64()
        .filter(|s| *s > 0.0)
        .ok_or_else(|| format!("the script poller printed {said} without its seconds"))?;
    // It did the whole job: every order answered by the fake with a valid signature, and every
    // answer's status read and stored (every 10th answer is the out-for-delivery trace).
    let url = format!("sqlite://{}?mode=ro", db.display());
    let count = |query: &'static str| {
        let url = url.clone();
        async move {
            let conn = SqliteConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            count_on(conn, query).await
        }
    };
    let stored = count(
        "SELECT count(*) FROM orders WHERE last_polled_at IS NOT NULL \
         AND status IN ('in_transit', 'out_for_delivery')",
    )
    .await?;
    let changed = count("SELECT count(*) FROM orders WHERE status = 'out_for_delivery'").await?;
    if top.signature_failures() > 0
        || top.call_count() != polls
        || stored != polls as i64
        || changed != (polls / 10) as i64
    {
        return Err(format!(
            "the script poller: the fake counted {} calls for {polls} orders, {} refused; \
             {stored} statuses stored, {changed} out for delivery (expected {})",
            top.call_count(),
            top.signature_failures(),
            polls / 10
        ));
    }
    let rate = polls as f64 / seconds;
    say(format!("{polls} polls at {rate:.0}/s"));
    Ok(rate)
}

struct Polls {
    per_sec: f64,
    cpu_us_per_poll: f64,
}

/// `n` shipments all due, no rate limit, every 10th poll a status change (and a webhook queued
/// and delivered): from READY until every shipment is polled and recorded.
async fn polls(n: usize) -> Result<Polls, String> {
    let (top, _receiver, setup) = with_webhook().await?;
    setup.sql(&insert_shipments(1, n, true, 0)).await?;
    let daemon = setup.start_daemon()?;
    let (started, cpu_start) = (Instant::now(), daemon.cpu());
    wait_for(
        "the fake has answered every shipment",
        Duration::from_millis(50),
        || async {
            let calls = top.call_count();
            Ok((calls >= n, format!("{calls} of {n} answered")))
        },
    )
    .await?;
    setup
        .wait_count(
            "every poll is recorded",
            "SELECT count(*) FROM shipments WHERE last_polled_at IS NOT NULL",
            |polled| polled >= n as i64,
        )
        .await?;
    let elapsed = started.elapsed();
    let cpu = daemon.cpu() - cpu_start;
    daemon.stop()?;
    let failed = setup
        .count("SELECT count(*) FROM shipments WHERE error IS NOT NULL")
        .await?;
    let changed = setup
        .count("SELECT count(*) FROM shipments WHERE status = 'out_for_delivery'")
        .await?;
    if top.signature_failures() > 0 || failed > 0 {
        return Err(format!(
            "{} requests refused, {failed} polls failed: {:?}",
            top.signature_failures(),
            top.rejections().first()
        ));
    }
    if top.call_count() > n {
        return Err(format!(
            "{} calls for {n} shipments: some were polled twice",
            top.call_count()
        ));
    }
    // The steady polls found their events written already, as in a daemon that has polled them
    // before; a digest that no longer matches the adapter's reading of the answer would make
    // every poll write its events again, and measure something else.
    let steady = setup
        .count(&format!(
            "SELECT count(*) FROM shipments WHERE events_digest = {}",
            steady_digest()
        ))
        .await?;
    if steady + changed != n as i64 {
        return Err(format!(
            "{steady} of the {} steady polls kept the seeded digest of their events: \
             steady_digest() no longer matches what the daemon reads from the fake's answer",
            n as i64 - changed
        ));
    }
    let per_sec = n as f64 / elapsed.as_secs_f64();
    let cpu_us_per_poll = cpu.as_secs_f64() * 1e6 / n as f64;
    say(format!(
        "{n} polls in {:.2} s ({per_sec:.0}/s), {changed} status changes, daemon CPU {:.2} s ({cpu_us_per_poll:.1} µs/poll)",
        elapsed.as_secs_f64(),
        cpu.as_secs_f64()
    ));
    Ok(Polls {
        per_sec,
        cpu_us_per_poll,
    })
}

/// Events in the first trace of the record scenario: a parcel some days on its way.
const RECORD_EVENTS: usize = 15;
/// Timed rounds of the record scenario, after one that writes the first trace: a newer trace,
/// then the same one again, three times.
const RECORD_ROUNDS: usize = 6;

struct Record {
    same_us: f64,
    newer_us: f64,
}

/// What recording a poll costs the store, without HTTP or a daemon: `n` shipments in transit,
/// each recorded through the store call the dispatcher's commit makes (`Db::record_polls`,
/// batches of 64 decided by `track`), in rounds, after one untimed round of a first trace. A
/// newer round brings the trace with one event more, so that every event is handed to the
/// database and all but one found stored (as every poll did before the digest of events); a
/// same round brings that trace again, as most polls of a tracked parcel do. Mean wall time per
/// poll of each kind of round.
async fn record(n: usize) -> Result<Record, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    watch::dir(dir.path().to_owned());
    let path = dir.path().join("shipwatch.db");
    let db = Db::open(&path, Synchronous::Normal)
        .await
        .map_err(|e| e.to_string())?;
    let created_at = now_millis() - 3_600_000;
    let conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .map_err(|e| e.to_string())?;
    run_sql(
        conn,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO shipments (order_id, provider, status, raw_status, active, \
                 transitions, next_poll_at, created_at) \
             SELECT {TID_BASE} + i, 'taobao', 'in_transit', '{GENERATED_STATUS}', 1, 1, 0, \
                 {created_at} FROM n"
        ),
    )
    .await?;
    let ids: Vec<i64> = (1..=n as i64).collect();
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00");
    let step = |i: usize| TraceEvent {
        time: offset
            .timestamp_millis_opt(created_at + i as i64 * 60_000)
            .single()
            .expect("a step time"),
        description: format!("快件已到达【第{i}转运中心】，正在发往下一站"),
        location: None,
        raw_code: Some("ARRIVAL".to_owned()),
    };
    let (mut same, mut newer) = (Duration::ZERO, Duration::ZERO);
    for round in 0..=RECORD_ROUNDS {
        let events = RECORD_EVENTS + round.div_ceil(2);
        let trace = Trace {
            status: Status::InTransit,
            raw_status: GENERATED_STATUS.to_owned(),
            events: (0..events).map(step).collect(),
            carrier: None,
            tracking_no: None,
            unmapped: Vec::new(),
        };
        let now = now_millis();
        watch::doing(format!("recording round {round} of {RECORD_ROUNDS}"));
        let began = Instant::now();
        for chunk in ids.chunks(64) {
            let polls: Vec<(i64, PollRecord<'_>)> = chunk
                .iter()
                .map(|id| {
                    let poll = PollRecord {
                        now,
                        trace: &trace,
                        next_poll_at: now + 3_600_000,
                        channels: &[],
                    };
                    (*id, poll)
                })
                .collect();
            db.record_polls(&polls).await.map_err(|e| e.to_string())?;
        }
        let took = began.elapsed();
        match round {
            0 => {}
            _ if round % 2 == 1 => newer += took,
            _ => same += took,
        }
    }
    let stored = db
        .events(ids[n / 2])
        .await
        .map_err(|e| e.to_string())?
        .len();
    db.close().await;
    let expected = RECORD_EVENTS + RECORD_ROUNDS / 2;
    if stored != expected {
        return Err(format!(
            "a shipment holds {stored} events after the rounds, where {expected} were brought"
        ));
    }
    let per_poll = |total: Duration| total.as_secs_f64() * 1e6 / (n * RECORD_ROUNDS / 2) as f64;
    let record = Record {
        same_us: per_poll(same),
        newer_us: per_poll(newer),
    };
    say(format!(
        "a newer trace: {:.1} µs a poll; the same trace again: {:.1} µs a poll",
        record.newer_us, record.same_us
    ));
    Ok(record)
}

/// `n` pending webhook notifications, a receiver that verifies each signature and answers 200:
/// from READY until every row is marked sent.
async fn notifications(n: usize) -> Result<f64, String> {
    let (_top, receiver, setup) = with_webhook().await?;
    let now = now_millis();
    setup
        .sql(&format!(
            "{} \
             INSERT INTO notifications (public_id, shipment_id, transition, channel, \
                 previous_status, status, payload, state, next_attempt_at, created_at) \
             SELECT 'msg_bench' || id, id, 3, 'webhook', 'out_for_delivery', 'delivered', \
                 json_object('type', 'shipment.status_changed', 'id', 'msg_bench' || id, \
                     'timestamp', '2026-11-20T08:00:05+08:00', 'data', json_object( \
                     'order_id', order_id, 'tracking_no', tracking_no, 'carrier', carrier, \
                     'provider', provider, 'tier', tier, 'previous_status', 'out_for_delivery', \
                     'status', 'delivered', 'raw_status', '对方已签收', 'event', json_object( \
                     'time', '2026-11-20T08:00:05+08:00', \
                     'description', '【上海市】快件已签收，签收人：本人', 'location', NULL))), \
                 'pending', {now}, {now} FROM shipments;",
            insert_shipments(1, n, false, 0)
        ))
        .await?;
    // Counted as they arrive rather than by asking the database over and over: a count of
    // 100,000 pending rows every few milliseconds would take a core from the daemon.
    let arrived = Arc::new(AtomicUsize::new(0));
    let mut feed = receiver.subscribe();
    let counter = arrived.clone();
    tokio::spawn(async move {
        loop {
            match feed.recv().await {
                Ok(_) => counter.fetch_add(1, Ordering::Relaxed),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    counter.fetch_add(n as usize, Ordering::Relaxed)
                }
                Err(_) => return,
            };
        }
    });
    let daemon = setup.start_daemon()?;
    let started = Instant::now();
    wait_for(
        "the receiver has every notification",
        Duration::from_millis(20),
        || async {
            let got = arrived.load(Ordering::Relaxed);
            Ok((got >= n, format!("{got} of {n} received")))
        },
    )
    .await?;
    setup
        .wait_count(
            "every notification is marked sent",
            "SELECT count(*) FROM notifications WHERE state = 'pending'",
            |pending| pending == 0,
        )
        .await?;
    let elapsed = started.elapsed();
    daemon.stop()?;
    let sent = setup
        .count("SELECT count(*) FROM notifications WHERE state = 'sent'")
        .await?;
    let verified = receiver.deliveries().iter().filter(|d| d.verified).count();
    if sent != n as i64 || verified < n {
        return Err(format!(
            "{sent} of {n} notifications sent, {verified} verified by the receiver"
        ));
    }
    let rate = n as f64 / elapsed.as_secs_f64();
    say(format!(
        "{n} deliveries in {:.2} s ({rate:.0}/s), every signature verified",
        elapsed.as_secs_f64()
    ));
    Ok(rate)
}

struct Latency {
    p50_ms: f64,
    p99_ms: f64,
}

/// `samples` shipments in transit, made due one after another `gap` apart while the daemon
/// runs, each poll answered one step further (out for delivery): for each, the time from the
/// gateway's answer to the poll that saw the change to the receiver's receipt of its webhook
/// (answered 200). The fake and the receiver run in this process, so both instants are read
/// from the same clock. Nothing else is pending, so the sender is idle when a change arrives.
async fn change_to_delivery(samples: usize, gap: Duration) -> Result<Latency, String> {
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(1);
    let (receiver, secret) = receiver().await?;
    let setup = Setup::new(ConfigOptions {
        top: &top.url,
        webhook: Some((&receiver.url, &secret)),
        rate_limit: None,
    })
    .await?;
    let later = now_millis() + 86_400_000;
    setup
        .sql(&insert_shipments(1, samples, true, later))
        .await?;
    let daemon = setup.start_daemon()?;
    // Written while the daemon runs, as an outside tool would: found at its next scan.
    let first = now_millis() + 1_000;
    setup
        .sql(&format!(
            "UPDATE shipments SET next_poll_at = {first} + (id - 1) * {gap}",
            gap = gap.as_millis()
        ))
        .await?;
    wait_for(
        "the receiver has a webhook for every change",
        Duration::from_millis(20),
        || async {
            let got = receiver.deliveries().len();
            let polled = top.call_count();
            Ok((
                got >= samples,
                format!("{polled} of {samples} polled, {got} webhooks received"),
            ))
        },
    )
    .await?;
    daemon.stop()?;

    let changes: std::collections::HashMap<u64, Instant> = top
        .calls()
        .iter()
        .filter(|call| call.changed)
        .filter_map(|call| Some((call.tid?, call.at)))
        .collect();
    if top.signature_failures() > 0 || top.call_count() != samples {
        // What arrived instead says where to look: repeats of the changes, or other events.
        let mut types = std::collections::BTreeMap::<String, usize>::new();
        for delivery in receiver.deliveries() {
            let kind = delivery.body["type"].as_str().unwrap_or("(no type)");
            *types.entry(kind.to_owned()).or_default() += 1;
        }
        return Err(format!(
            "{} calls for {samples} shipments polled once each, {} refused; webhooks by type: {types:?}",
            top.call_count(),
            top.signature_failures()
        ));
    }
    let mut times = Vec::with_capacity(samples);
    for delivery in receiver.deliveries() {
        let order = delivery.body.pointer("/data/order_id");
        let tid = order
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()))
            .ok_or_else(|| format!("a webhook without an order id: {}", delivery.raw_body))?;
        let changed = changes.get(&tid).ok_or_else(|| {
            format!("a webhook for order {tid}, whose change the fake never served")
        })?;
        if !delivery.verified || delivery.answered != 200 {
            return Err(format!(
                "the webhook for order {tid} was answered {} (signature verified: {})",
                delivery.answered, delivery.verified
            ));
        }
        times.push(delivery.at.saturating_duration_since(*changed));
    }
    if times.len() != samples {
        return Err(format!(
            "{} webhooks for {samples} changes: some were sent twice",
            times.len()
        ));
    }
    times.sort();
    let at = |q: f64| {
        let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
        times[rank - 1].as_secs_f64() * 1000.0
    };
    let latency = Latency {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    };
    say(format!(
        "{samples} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms from the poll's answer to the receiver",
        latency.p50_ms,
        latency.p99_ms,
        at(1.0)
    ));
    Ok(latency)
}

struct Quota {
    utilization: f64,
    over: usize,
}

/// `rate_limit = "600/min"` against a gateway that enforces 600 calls in any sliding minute:
/// calls in the run's window over what the quota allows in it, and calls refused with code 7.
async fn quota(shipments: usize, run: Duration) -> Result<Quota, String> {
    const PER_MINUTE: f64 = 600.0;
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(10);
    top.enforce_quota(PER_MINUTE as usize, Duration::from_secs(60));
    let setup = Setup::new(ConfigOptions {
        top: &top.url,
        webhook: None,
        rate_limit: Some("600/min"),
    })
    .await?;
    setup.sql(&insert_shipments(1, shipments, true, 0)).await?;
    let daemon = setup.start_daemon()?;
    wait_for("the first call", Duration::from_millis(5), || async {
        Ok((top.call_count() > 0, "no call yet".to_owned()))
    })
    .await?;
    let first = top.calls()[0].at;
    watch::doing(format!("letting the daemon poll for {} s", run.as_secs()));
    tokio::time::sleep_until((first + run).into()).await;
    // A call racing the window's end is counted if it arrived inside it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    daemon.stop()?;
    let in_window = top
        .calls()
        .iter()
        .filter(|c| c.at.duration_since(first) < run)
        .count();
    let allowed = PER_MINUTE * run.as_secs_f64() / 60.0;
    let utilization = in_window as f64 / allowed;
    let over = top.over_quota();
    say(format!(
        "{in_window} calls in {} s where the quota allows {allowed:.0}: {utilization:.4}; {over} over the quota",
        run.as_secs()
    ));
    Ok(Quota { utilization, over })
}

struct Big {
    rss_mib: f64,
    startup_ms: f64,
    due_query_us: f64,
    bytes_per_shipment: f64,
}

/// `n` shipments (none due) with `events` events each: the daemon's start-up time and peak
/// memory on it, the claim of a batch of due shipments, and the file size per shipment.
async fn big_database(n: usize, events: usize, run: Duration) -> Result<Big, String> {
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(10);
    let setup = Setup::new(ConfigOptions {
        top: &top.url,
        webhook: None,
        rate_limit: None,
    })
    .await?;
    let built = Instant::now();
    let later = now_millis() + 86_400_000;
    let mut sql = insert_shipments(1, n, true, later);
    // The generated answer's two events are there; the rest of the history is older.
    for k in 2..events {
        sql.push_str(&format!(
            "INSERT INTO events (shipment_id, time, description, location, raw_code) \
             SELECT id, {time}, '快件已到达【中转站{k}】，正发往下一站', '杭州市', 'ARRIVAL' FROM shipments;",
            time = step_millis(GENERATED_STEPS[0].0) - 3_600_000 * k as i64,
        ));
    }
    setup
        .sql(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; {sql}"
        ))
        .await?;
    setup.sql("PRAGMA wal_checkpoint(TRUNCATE);").await?;
    say(format!("built in {:.1} s", built.elapsed().as_secs_f64()));
    let bytes = std::fs::metadata(&setup.db)
        .map_err(|e| e.to_string())?
        .len();
    let bytes_per_shipment = bytes as f64 / n as f64;

    let daemon = setup.start_daemon()?;
    let startup_ms = daemon.startup.as_secs_f64() * 1000.0;
    watch::doing(format!("letting the daemon run {} s", run.as_secs()));
    tokio::time::sleep(run).await;
    let rss_mib = daemon.peak_rss_mib();
    daemon.stop()?;
    if top.call_count() > 0 {
        return Err(format!("{} polls of shipments not due", top.call_count()));
    }

    // Every 100th shipment due; claims of one batch each, as the dispatcher makes them. Between
    // claims the batch is recorded as polled (untimed), as the dispatcher does before its next
    // claims, so that the claimed rows do not pile up in front of the due ones.
    setup
        .sql("UPDATE shipments SET next_poll_at = id WHERE id % 100 = 0")
        .await?;
    let db = Db::open(&setup.db, Synchronous::Normal)
        .await
        .map_err(|e| e.to_string())?;
    let now = now_millis();
    let mut times = Vec::new();
    for claim in 0..200 {
        watch::doing(format!("timing claim {claim} of 200 through the library"));
        let started = Instant::now();
        let rows = db
            .claim_due_shipments(now, now + 300_000, &[], CONCURRENCY)
            .await
            .map_err(|e| e.to_string())?;
        times.push(started.elapsed());
        if rows.len() != CONCURRENCY {
            return Err(format!(
                "claimed {} shipments, not {CONCURRENCY}",
                rows.len()
            ));
        }
        record_unchanged(&db, &rows, now, later).await?;
    }
    db.close().await;
    times.sort();
    let due_query_us = times[times.len() / 2].as_secs_f64() * 1e6;
    say(format!(
        "{:.0} MiB file ({bytes_per_shipment:.0} bytes/shipment); ready in {startup_ms:.0} ms; peak RSS {rss_mib:.1} MiB; claim of {CONCURRENCY} due: median {due_query_us:.0} µs",
        bytes as f64 / 1048576.0
    ));
    Ok(Big {
        rss_mib,
        startup_ms,
        due_query_us,
        bytes_per_shipment,
    })
}

/// Clients posting single creates at once, and the size of each batch.
const API_CLIENTS: usize = 4;
const API_BATCH: usize = 1_000;
/// The bench's API token.
const API_TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";

struct ApiCreates {
    single_per_sec: f64,
    batch_per_sec: f64,
}

/// Shipments created through the API while the daemon runs (and polls them, as it would): first
/// `single` POSTs of one shipment from [`API_CLIENTS`] clients on kept-alive connections, then
/// `batches` POSTs of [`API_BATCH`] each, one after another. Each answer must be 201.
async fn api_creates(single: usize, batches: usize) -> Result<ApiCreates, String> {
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(1);
    let setup = Setup::new(ConfigOptions {
        top: &top.url,
        webhook: None,
        rate_limit: None,
    })
    .await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    std::fs::write(
        setup.dir.path().join("api.tokens"),
        format!("{API_TOKEN}\n"),
    )
    .map_err(|e| e.to_string())?;
    let mut config = std::fs::read_to_string(&setup.config).map_err(|e| e.to_string())?;
    config.push_str(&format!(
        "\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[api]\ntokens_file = \"api.tokens\"\n"
    ));
    std::fs::write(&setup.config, config).map_err(|e| e.to_string())?;
    let daemon = setup.start_daemon()?;
    let base = format!("http://127.0.0.1:{port}/v1/shipments");
    let client = reqwest::Client::new();

    watch::doing(format!("{single} single creates through the API"));
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..API_CLIENTS {
        let (client, base) = (client.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            for i in (c..single).step_by(API_CLIENTS) {
                let body = serde_json::json!({"order_id": (TID_BASE + i as u64).to_string()});
                let answer = client
                    .post(&base)
                    .bearer_auth(API_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("POST {base}: {e}"))?;
                if answer.status() != 201 {
                    return Err(format!("POST {base} answered {}", answer.status()));
                }
            }
            Ok::<(), String>(())
        }));
    }
    for task in clients {
        task.await.map_err(|e| e.to_string())??;
    }
    let single_per_sec = single as f64 / started.elapsed().as_secs_f64();
    say(format!("{single} single creates: {single_per_sec:.0}/s"));

    watch::doing(format!("{batches} batches of {API_BATCH} through the API"));
    let batch_url = format!("{base}/batch");
    let first = TID_BASE + single as u64;
    let bodies: Vec<Vec<u8>> = (0..batches)
        .map(|b| {
            let items: Vec<serde_json::Value> = (0..API_BATCH)
                .map(|i| {
                    let tid = first + (b * API_BATCH + i) as u64;
                    serde_json::json!({"order_id": tid.to_string(), "tier": "low"})
                })
                .collect();
            serde_json::to_vec(&serde_json::json!({ "shipments": items })).unwrap_or_default()
        })
        .collect();
    let started = Instant::now();
    for body in bodies {
        let answer = client
            .post(&batch_url)
            .bearer_auth(API_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {batch_url}: {e}"))?;
        if answer.status() != 201 {
            return Err(format!("POST {batch_url} answered {}", answer.status()));
        }
    }
    let batched = batches * API_BATCH;
    let batch_per_sec = batched as f64 / started.elapsed().as_secs_f64();
    say(format!(
        "{batched} creates in batches: {batch_per_sec:.0}/s"
    ));
    daemon.stop()?;
    let rows = setup.count("SELECT count(*) FROM shipments").await?;
    if rows != (single + batched) as i64 {
        return Err(format!("{rows} rows after {} creates", single + batched));
    }
    Ok(ApiCreates {
        single_per_sec,
        batch_per_sec,
    })
}

// ---- PostgreSQL ------------------------------------------------------------------------------

/// A free port on 127.0.0.1, for the PostgreSQL cluster the bench starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_or(0, |addr| addr.port())
}

struct Claim {
    /// Through the library, from the call to its rows: the round trip and the client's work
    /// included.
    p50_ms: f64,
    p99_ms: f64,
    /// At the server: planning and execution of the claim statement, the mean over the timed
    /// claims as `pg_stat_statements` counts them.
    server_mean_ms: f64,
}

/// Runs SQL (one statement or several) through `conn`, on either engine, and closes it.
async fn run_sql<C>(mut conn: C, statement: &str) -> Result<(), String>
where
    C: Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
{
    let shown: String = statement.chars().take(100).collect();
    watch::doing(format!("running SQL: {shown}…"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("{e} in {statement}"))?;
    conn.close().await.map_err(|e| e.to_string())
}

/// The count `query` returns through `conn`, on either engine; then closes it.
async fn count_on<C>(mut conn: C, query: &str) -> Result<i64, String>
where
    C: Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    (i64,): for<'r> sqlx::FromRow<'r, <C::Database as sqlx::Database>::Row>,
    <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
{
    let n = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("{e} in {query}"))?;
    conn.close().await.map_err(|e| e.to_string())?;
    Ok(n)
}

/// Runs SQL on a PostgreSQL database through a connection of its own.
async fn pg_sql(pg: &postgres::PgDatabase, statement: &str) -> Result<(), String> {
    run_sql(pg.connect().await, statement).await
}

async fn pg_count(pg: &postgres::PgDatabase, query: &str) -> Result<i64, String> {
    count_on(pg.connect().await, query).await
}

/// PostgreSQL's `shared_buffers` as docs/postgres.md advises for a server of its own: a quarter
/// of the machine's memory (PostgreSQL's documentation), here at most 4 GB, which holds the
/// bench's 10 million shipments and their indexes; 128 MB (PostgreSQL's default) when the
/// memory cannot be read.
fn shared_buffers_mib() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        });
    total_kib.map_or(128, |kib| (kib / 1024 / 4).clamp(128, 4096))
}

/// A poll that found nothing new: the shipment is next due at `next`.
struct Unchanged {
    now: i64,
    next: i64,
}

impl Decide for Unchanged {
    fn decide(&self, _stored: &ShipmentRow) -> PollWrite<'_> {
        PollWrite {
            now: self.now,
            next_poll_at: self.next,
            events: &[],
            events_digest: None,
            shipment: ShipmentWrite::Schedule,
            outbox: Vec::new(),
            unmapped: &[],
        }
    }
}

/// Mean time of one email sent through the channel (`Email::deliver`) to the tests' SMTP sink on
/// loopback, one after another on the connection the channel keeps, after an untimed first one
/// that opens it. Every message is checked to have arrived. The figure shows the wait for the
/// server's delayed ACK that lettre's own pool costs every message (about 40 ms on Linux) staying
/// gone; see `src/notify/smtp_connections.rs`.
async fn email_ms_per_message(n: usize) -> Result<f64, String> {
    use shipwatch::notify::email::{Email, EmailConfig};
    use shipwatch::notify::{Channel, EmailMessage, Outgoing};

    let sink = smtp_sink::SmtpSink::start().await;
    let email = Email::new(EmailConfig {
        smtp_url: sink.url(),
        username: None,
        password: None,
        from: "Shop <noreply@shop.example>".to_owned(),
        reply_to: None,
        timeout: Duration::from_secs(10),
    })
    .map_err(|e| format!("email channel: {e}"))?;
    let payload = serde_json::to_string(&EmailMessage {
        subject: "包裹已签收".to_owned(),
        body: "您的包裹已签收,感谢您的信任。".to_owned(),
    })
    .map_err(|e| e.to_string())?;
    let outgoing = |i: usize| Outgoing {
        public_id: format!("bench_{i}"),
        payload: payload.clone(),
        recipient: Some(format!("buyer{i}@bench.example")),
    };
    let send = |i: usize| {
        let message = outgoing(i);
        let email = &email;
        async move {
            email
                .deliver(&message)
                .await
                .map_err(|e| format!("email {i}: {e}"))
        }
    };
    send(0).await?;
    let started = Instant::now();
    for i in 1..=n {
        send(i).await?;
    }
    let per_message = started.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let arrived = sink.messages().len();
    if arrived != n + 1 {
        return Err(format!("the SMTP sink has {arrived} of {} emails", n + 1));
    }
    say(format!(
        "{per_message:.3} ms a message over {} connection(s)",
        sink.connections()
    ));
    Ok(per_message)
}

/// Records claimed shipments as polled without a change, next due at `next`, through the store
/// call the dispatcher's commit makes (not timed), which also lets the claims go: the due rows
/// ahead of the next claim are the untaken ones.
async fn record_unchanged(
    db: &Db,
    claimed: &[ShipmentRow],
    now: i64,
    next: i64,
) -> Result<(), String> {
    let polls: Vec<(i64, Unchanged)> = claimed
        .iter()
        .map(|row| (row.id, Unchanged { now, next }))
        .collect();
    db.record_polls(&polls)
        .await
        .map(drop)
        .map_err(|e| format!("recording a claimed batch: {e}"))
}

/// `n` shipments on PostgreSQL as a grown shop has them (70% delivered and no longer polled,
/// 28% polled later, 2% due now, all due at the same moment as after an import or an outage):
/// the time of the claim of a batch of 64 due shipments, as the daemon asks for it, through the
/// library, each batch then recorded as polled before the next claim.
async fn claim_query(n: usize, samples: usize) -> Result<Claim, String> {
    let pg = postgres::PgDatabase::create().await;
    let db = Db::open(
        Location::parse(&pg.url).map_err(|e| e.to_string())?,
        Synchronous::Normal,
    )
    .await
    .map_err(|e| e.to_string())?;
    let now = now_millis();
    let started = Instant::now();
    pg_sql(
        &pg,
        &format!(
            "INSERT INTO shipments (order_id, provider, tracking_no, carrier, tier, status, active, \
                 transitions, next_poll_at, created_at) \
             SELECT g::text, 'taobao', 'ZT' || g, '中通快递', 'normal', \
                 CASE WHEN g % 10 < 7 THEN 'delivered' ELSE 'in_transit' END, \
                 CASE WHEN g % 10 < 7 THEN 0 ELSE 1 END, 3, \
                 CASE WHEN g % 50 = 49 THEN {now} - 1000 ELSE {now} + 86400000 + g END, \
                 {now} - 3600000 \
             FROM generate_series(1, {n}) g"
        ),
    )
    .await?;
    say(format!(
        "{n} shipments inserted in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    // Statistics taken, and the load's dirty pages written out before the timing starts, so
    // that the timed claims do not share the cores with the load's checkpoint.
    let settled = Instant::now();
    pg_sql(&pg, "ANALYZE shipments").await?;
    pg_sql(&pg, "CHECKPOINT").await?;
    say(format!(
        "analysed and checkpointed in {:.1} s",
        settled.elapsed().as_secs_f64()
    ));
    if samples * 64 > n / 50 {
        return Err(format!(
            "{samples} claims of 64 need more than the {} due",
            n / 50
        ));
    }
    // Counted from here: the timed claims are the only ones.
    pg_sql(
        &pg,
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
    )
    .await?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        watch::doing("timing the claim of due shipments");
        let began = Instant::now();
        let claimed = db
            .claim_due_shipments(now, now + 60_000, &[], 64)
            .await
            .map_err(|e| e.to_string())?;
        times.push(began.elapsed());
        if claimed.len() != 64 {
            return Err(format!(
                "a claim took {} shipments where 64 were due",
                claimed.len()
            ));
        }
        // Polled and recorded (not timed): next due in an hour, the claim let go, so that the
        // due rows ahead of the next claim are the untaken ones.
        record_unchanged(&db, &claimed, now, now + 3_600_000).await?;
    }
    db.close().await;
    let server_mean_ms = claim_time_at_the_server(&pg, samples).await?;
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let claim = Claim {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        server_mean_ms,
    };
    say(format!(
        "claim of 64 due among {n}: p50 {:.3} ms, p99 {:.3} ms through the library; \
         {:.3} ms at the server (mean of planning and execution)",
        claim.p50_ms, claim.p99_ms, claim.server_mean_ms
    ));
    Ok(claim)
}

/// The claim statement's mean time at the server over the `samples` claims just timed (its
/// planning and execution, as `pg_stat_statements` counts them in this database).
async fn claim_time_at_the_server(
    pg: &postgres::PgDatabase,
    samples: usize,
) -> Result<f64, String> {
    let mut conn = pg.connect().await;
    let (calls, mean_ms) = sqlx::query_as::<_, (Option<i64>, Option<f64>)>(
        "SELECT sum(calls)::bigint, \
             sum((mean_plan_time + mean_exec_time) * calls) / nullif(sum(calls), 0) \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND query LIKE '%UPDATE shipments SET claimed_until = $1 FROM picked%'",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| format!("reading pg_stat_statements: {e}"))?;
    conn.close().await.map_err(|e| e.to_string())?;
    match (calls, mean_ms) {
        (Some(calls), Some(mean_ms)) if calls == samples as i64 => Ok(mean_ms),
        (calls, _) => Err(format!(
            "pg_stat_statements counted {} claims where {samples} were timed",
            calls.unwrap_or(0)
        )),
    }
}

/// `n` shipments due on one PostgreSQL database, polled by `daemons` daemons at once against the
/// fake gateway: from the moment they are all ready until every shipment is polled. Each
/// shipment must be polled once, whichever daemon took it.
async fn pg_polls(daemons: usize, n: usize) -> Result<f64, String> {
    let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
    top.answer_any_tid(10);
    let pg = postgres::PgDatabase::create().await;
    let db = Db::open(
        Location::parse(&pg.url).map_err(|e| e.to_string())?,
        Synchronous::Normal,
    )
    .await
    .map_err(|e| e.to_string())?;
    db.close().await;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    watch::dir(dir.path().to_owned());
    let config = dir.path().join("shipwatch.toml");
    std::fs::write(&config, base_config(&pg.url, &top.url)).map_err(|e| format!("config: {e}"))?;
    // Not due until every daemon is up, so that they start together.
    let later = now_millis() + 3_600_000;
    pg_sql(&pg, &insert_shipments(1, n, true, later)).await?;
    let mut running = Vec::new();
    for i in 0..daemons {
        running.push(start_daemon(dir.path(), &config, &format!("daemon{i}"))?);
    }
    let started = Instant::now();
    pg_sql(&pg, "UPDATE shipments SET next_poll_at = 0").await?;
    wait_for(
        "the fake has answered every shipment",
        Duration::from_millis(50),
        || async {
            let calls = top.call_count();
            Ok((calls >= n, format!("{calls} of {n} answered")))
        },
    )
    .await?;
    wait_for(
        "every poll is recorded",
        Duration::from_millis(50),
        || async {
            let polled = pg_count(
                &pg,
                "SELECT count(*) FROM shipments WHERE last_polled_at IS NOT NULL",
            )
            .await?;
            Ok((polled >= n as i64, format!("{polled} of {n} recorded")))
        },
    )
    .await?;
    let elapsed = started.elapsed();
    for daemon in running {
        daemon.stop()?;
    }
    if top.signature_failures() > 0 {
        return Err(format!(
            "{} requests refused: {:?}",
            top.signature_failures(),
            top.rejections().first()
        ));
    }
    if top.call_count() > n {
        return Err(format!(
            "{} calls for {n} shipments with {daemons} daemons: some were polled twice",
            top.call_count()
        ));
    }
    let per_sec = n as f64 / elapsed.as_secs_f64();
    say(format!(
        "{daemons} daemon(s) on PostgreSQL: {n} polls in {:.2} s ({per_sec:.0}/s)",
        elapsed.as_secs_f64()
    ));
    Ok(per_sec)
}
