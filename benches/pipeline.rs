//! The pipeline benchmark: the real `shipwatch` binary against the fake TOP gateway (signatures
//! verified) and a real webhook receiver, all on 127.0.0.1, with data it builds itself in a
//! temporary folder that it removes.
//!
//! `cargo bench --bench pipeline` runs every scenario at full size; `-- --quick` runs a short
//! version; `-- --json` prints one JSON object of figures on stdout (progress goes to stderr).

#[path = "../tests/e2e/support/fake_top.rs"]
#[allow(dead_code)]
mod fake_top;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, TimeZone};
use fake_top::{FakeTop, GENERATED_STATUS, GENERATED_STEPS};
use shipwatch::config::{Http, Synchronous};
use shipwatch::notify::receiver::{Behaviour, Receiver, generate_secret};
use shipwatch::notify::webhook::WebhookSecret;
use shipwatch::providers::taobao::{SignMethod, sign};
use shipwatch::storage::Db;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

const APP_KEY: &str = "12345678";
const APP_SECRET: &str = "helloworld";
const SESSION: &str = "bench-session";
/// Order ids (TOP tids) start here.
const TID_BASE: u64 = 7_000_000_000_000;
/// Polls in flight at once: the daemon's default, used for the HTTP ceiling too.
const CONCURRENCY: usize = 16;

struct Sizes {
    polls: usize,
    notifications: usize,
    quota_run: Duration,
    quota_shipments: usize,
    big: usize,
    events_per_shipment: usize,
    /// How long the daemon runs on the big database before its peak memory is read.
    big_run: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                polls: 20_000,
                notifications: 20_000,
                quota_run: Duration::from_secs(60),
                quota_shipments: 5_000,
                big: 1_000_000,
                events_per_shipment: 2,
                big_run: Duration::from_secs(3),
            }
        } else {
            Sizes {
                polls: 100_000,
                notifications: 100_000,
                quota_run: Duration::from_secs(180),
                quota_shipments: 5_000,
                big: 1_000_000,
                events_per_shipment: 10,
                big_run: Duration::from_secs(10),
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
    // `--only polls` (http, polls, notifications, quota, big) runs one scenario: for profiling.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
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

    let mut http_ceiling = None;
    if wants("http") {
        eprintln!("[1/5] HTTP ceiling");
        let http_limit = http_limit(sizes.polls).await?;
        http_ceiling = Some(http_limit);
        figures.push(Figure {
            name: "http_limit_per_sec",
            value: http_limit,
            unit: "req/s",
            target: Target::Reported,
        });
    }

    if wants("polls") {
        eprintln!("[2/5] polls: {} shipments all due", sizes.polls);
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
    }

    if wants("notifications") {
        eprintln!(
            "[3/5] notifications: {} pending webhooks",
            sizes.notifications
        );
        figures.push(Figure {
            name: "notifications_per_sec",
            value: notifications(sizes.notifications).await?,
            unit: "deliveries/s",
            target: Target::AtLeast(5_000.0),
        });
    }

    if wants("quota") {
        eprintln!(
            "[4/5] quota: 600/min, {} shipments due, {} s",
            sizes.quota_shipments,
            sizes.quota_run.as_secs()
        );
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
            "[5/5] {} shipments with {} events each",
            sizes.big, sizes.events_per_shipment
        );
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
            "| {:<22} | {:>12} | {:<12} | {:<14} | {:<4} |",
            "figure", "value", "unit", "target", "met"
        );
        println!(
            "|{:-<24}|{:->14}|{:-<14}|{:-<16}|{:-<6}|",
            "", "", "", "", ""
        );
        for figure in &figures {
            let met = match figure.target.met(figure.value) {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            println!(
                "| {:<22} | {:>12} | {:<12} | {:<14} | {:<4} |",
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

impl Setup {
    /// A fresh, migrated database and a config for it.
    async fn new(options: ConfigOptions<'_>) -> Result<Setup, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let db = dir.path().join("shipwatch.db");
        let config = dir.path().join("shipwatch.toml");
        let mut text = format!(
            r#"database = "{db}"

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
"#,
            db = db.display(),
            top = options.top,
        );
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
        Ok(Setup { dir, db, config })
    }

    /// Runs SQL through a connection of its own, as an outside tool would.
    async fn sql(&self, statement: &str) -> Result<u64, String> {
        let url = format!("sqlite://{}", self.db.display());
        let mut conn = SqliteConnection::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("{e} in {statement}"))?;
        conn.close().await.map_err(|e| e.to_string())?;
        Ok(done.rows_affected())
    }

    async fn count(&self, query: &str) -> Result<i64, String> {
        let url = format!("sqlite://{}?mode=ro", self.db.display());
        let mut conn = SqliteConnection::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        let n = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("{e} in {query}"))?;
        conn.close().await.map_err(|e| e.to_string())?;
        Ok(n)
    }

    /// Waits until the count `query` returns satisfies `done`.
    async fn wait_count(
        &self,
        what: &str,
        query: &str,
        done: impl Fn(i64) -> bool,
    ) -> Result<(), String> {
        wait_for(
            what,
            Duration::from_secs(120),
            Duration::from_millis(20),
            || async { Ok(done(self.count(query).await?)) },
        )
        .await
    }

    /// Starts `shipwatch run` under a stand-in for systemd and waits for READY=1.
    fn start_daemon(&self) -> Result<Daemon, String> {
        let socket_path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).map_err(|e| format!("notify socket: {e}"))?;
        socket
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        let log = self.dir.path().join("daemon.log");
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_shipwatch"))
            .arg("--config")
            .arg(&self.config)
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
        let mut buf = vec![0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).map_err(|e| {
                format!(
                    "no READY=1 from the daemon: {e}; its log:\n{}",
                    daemon.log_text()
                )
            })?;
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

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit that must follow.
    fn stop(mut self) -> Result<(), String> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!(
                "the daemon exited with {status}; its log:\n{}",
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

/// Waits until `done` holds, checking every `every`; fails after `limit`.
async fn wait_for<F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut done: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if done().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting until {what}"));
        }
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

/// SQL that inserts `n` shipments of the TOP provider, tids from `TID_BASE + first`, in transit
/// with the two events the fake's steady answer holds, due at `next_poll_at`.
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
             raw_status, active, transitions, next_poll_at, created_at, last_event_at) \
         SELECT {TID_BASE} + i, 'taobao', 'ZT' || ({TID_BASE} + i), '中通快递', 'high', \
             'buyer' || i || '@example.com', '{status}', '{GENERATED_STATUS}', {active}, 2, \
             {next_poll_at}, {created_at}, {m2} FROM n; \
         INSERT INTO events (shipment_id, time, description, raw_code) \
             SELECT id, {m1}, '{d1}', '{a1}' FROM shipments; \
         INSERT INTO events (shipment_id, time, description, raw_code) \
             SELECT id, {m2}, '{d2}', '{a2}' FROM shipments;",
        m1 = step_millis(t1),
        m2 = step_millis(t2),
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
                let tid = (TID_BASE + i as u64).to_string();
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
                    .post(&url)
                    .form(&params)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .bytes()
                    .await
                    .map_err(|e| e.to_string())?;
                if !body.starts_with(b"{\"logistics_trace_search_response\"") {
                    return Err(format!(
                        "the fake refused a request: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
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
        Duration::from_secs(1800),
        Duration::from_millis(50),
        || async { Ok(top.call_count() >= n) },
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
        Duration::from_secs(1800),
        Duration::from_millis(20),
        || async { Ok(arrived.load(Ordering::Relaxed) >= n) },
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
    wait_for(
        "the first call",
        Duration::from_secs(60),
        Duration::from_millis(5),
        || async { Ok(top.call_count() > 0) },
    )
    .await?;
    let first = top.calls()[0].at;
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
    for _ in 0..200 {
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
        let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
        setup
            .sql(&format!(
                "UPDATE shipments SET claimed_until = NULL, next_poll_at = {later} \
                 WHERE id IN ({})",
                ids.join(",")
            ))
            .await?;
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
