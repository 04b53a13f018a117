//! The real `shipwatch` binary against a fake TOP gateway and a loopback webhook receiver, each
//! test in a folder of its own. A test says which providers and channels its daemon has
//! ([`TestApp::builder`]); `TestApp::start` is the TOP provider and the webhook channel alone.
//! The database is a SQLite file in that folder unless the test asks for PostgreSQL
//! ([`Builder::engine`]), then a database of its own in the shared test cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use shipwatch::notify::receiver::{Behaviour, Receiver, generate_secret};
use shipwatch::notify::webhook::WebhookSecret;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

pub use super::config::{APP_KEY, APP_SECRET, SESSION};
use super::config::{APP_SECRET_FILE, Channel, Harness, Provider};
use super::fake_top::FakeTop;
use super::postgres::PgDatabase;

/// The receipts' file of a daemon on PostgreSQL, in the test's folder.
const POSTGRES_RECEIPTS: &str = "daemon.sent";

/// Which database engine a test app's daemon and commands run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `shipwatch.db` in the test's folder.
    Sqlite,
    /// A database of its own in the throwaway cluster the tests share.
    Postgres,
}

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The SQLite file (on PostgreSQL, where it would be: nothing is ever written there).
    pub db: PathBuf,
    pub engine: Engine,
    /// The test's PostgreSQL database, held for as long as the app lives.
    pub pg: Option<PgDatabase>,
    pub top: FakeTop,
    pub receiver: Receiver,
    /// `http://127.0.0.1:PORT` of `[http] listen`, when the builder was told to listen.
    pub http: Option<String>,
}

/// An app still to be started: its providers, channels and settings.
pub struct Builder {
    providers: Vec<Provider>,
    channels: Vec<Channel>,
    /// Other sections, as TOML, for settings with no piece of their own (`[http]`, say).
    sections: Vec<String>,
    tiers: (&'static str, &'static str, &'static str),
    backoff: &'static str,
    /// `[delivery] concurrency`, when not the default.
    delivery_concurrency: Option<usize>,
    behaviour: Behaviour,
    backlog: u32,
    /// `[http] listen` on a free loopback port.
    listen: bool,
    /// The API's tokens file, as written to `api.tokens` (`[api] tokens_file`).
    api_tokens: Option<String>,
    engine: Engine,
    /// On PostgreSQL, `[database] receipts` (see [`TestApp::receipts`]).
    receipts_on_postgres: bool,
}

impl Builder {
    pub fn provider(mut self, provider: Provider) -> Builder {
        self.providers.push(provider);
        self
    }

    pub fn channel(mut self, channel: Channel) -> Builder {
        self.channels.push(channel);
        self
    }

    /// A section the pieces do not write, as TOML (`[http]`, `[maintenance.schedules]`…).
    pub fn section(mut self, toml: &str) -> Builder {
        self.sections.push(toml.to_owned());
        self
    }

    /// The polling intervals of the high, normal and low tiers (`1s`, `1s`, `2s` unless told).
    pub fn tiers(mut self, high: &'static str, normal: &'static str, low: &'static str) -> Builder {
        self.tiers = (high, normal, low);
        self
    }

    /// The first delay before a failed delivery is tried again (`200ms` unless told).
    pub fn backoff(mut self, backoff: &'static str) -> Builder {
        self.backoff = backoff;
        self
    }

    /// Deliveries at once on each channel (`[delivery] concurrency`; the default unless told).
    pub fn delivery_concurrency(mut self, concurrency: usize) -> Builder {
        self.delivery_concurrency = Some(concurrency);
        self
    }

    /// How the harness's webhook receiver answers (it accepts everything unless told).
    pub fn receiver(mut self, behaviour: Behaviour) -> Builder {
        self.behaviour = behaviour;
        self
    }

    /// The webhook receiver's listen queue.
    pub fn receiver_backlog(mut self, backlog: u32) -> Builder {
        self.backlog = backlog;
        self
    }

    /// Serves `/healthz` and `/metrics` on a free loopback port (`TestApp::http`).
    pub fn listen(mut self) -> Builder {
        self.listen = true;
        self
    }

    /// Turns the shipments API on with `tokens` as its tokens file (one token a line, `contacts`
    /// after one that may read contacts), listening on a free port (`TestApp::http`).
    pub fn api_tokens(mut self, tokens: &str) -> Builder {
        self.api_tokens = Some(tokens.to_owned());
        self.listen = true;
        self
    }

    /// The database engine (SQLite unless told).
    pub fn engine(mut self, engine: Engine) -> Builder {
        self.engine = engine;
        self
    }

    /// On PostgreSQL, the daemon keeps delivery receipts in the test's folder (`[database]
    /// receipts`), as a SQLite database does beside its file; without, it keeps none.
    pub fn receipts_on_postgres(mut self) -> Builder {
        self.receipts_on_postgres = true;
        self
    }

    /// Starts the harness's fake TOP gateway and webhook receiver, creates the PostgreSQL
    /// database when the app is on PostgreSQL, and writes the config.
    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = match self.engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(PgDatabase::create().await),
        };
        let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
        let secret = generate_secret();
        let receiver = Receiver::start_with_backlog(
            WebhookSecret::parse(&secret).unwrap(),
            self.behaviour,
            self.backlog,
        )
        .await
        .expect("receiver starts");
        let db = dir.path().join("shipwatch.db");
        let database = match &pg {
            Some(pg) if self.receipts_on_postgres => format!(
                "[database]\nurl = \"{}\"\nreceipts = \"{POSTGRES_RECEIPTS}\"",
                pg.url
            ),
            Some(pg) => format!("database = \"{}\"", pg.url),
            None => format!("database = \"{}\"", db.display()),
        };
        let config = dir.path().join("shipwatch.toml");
        std::fs::write(dir.path().join(APP_SECRET_FILE), format!("{APP_SECRET}\n")).unwrap();
        let (high, normal, low) = self.tiers;
        let mut text = format!(
            r#"
{database}

[tiers]
high = "{high}"
normal = "{normal}"
low = "{low}"

[polling]
scan_interval = "200ms"
jitter = 0.0
timeout = "5s"
{polling_lease}
[delivery]
backoff = "{backoff}"
backoff_max = "1s"
timeout = "2s"
lease = "5s"
{delivery_concurrency}

# The fakes' journeys carry fixed dates, days old by now: without this, the stuck sweep (every
# ten minutes on the clock) would report the parcels still moving whenever a test spans one.
[maintenance]
stuck_after = "3650days"
"#,
            backoff = self.backoff,
            delivery_concurrency = self
                .delivery_concurrency
                .map(|n| format!("concurrency = {n}\n"))
                .unwrap_or_default(),
            // SQLite's one daemon takes the claims of the one before it back at start; on
            // PostgreSQL, other daemons may be running, so a killed one's claims wait out the
            // lease (five minutes unless told), longer than a test waits.
            polling_lease = match self.engine {
                Engine::Sqlite => "",
                Engine::Postgres => "lease = \"10s\"\n",
            },
        );
        let harness = Harness {
            top_url: &top.url,
            receiver_url: &receiver.url,
            webhook_secret: &secret,
        };
        for provider in &self.providers {
            provider.render(&harness, &mut text);
        }
        for channel in &self.channels {
            channel.render(&harness, &mut text);
        }
        for section in &self.sections {
            text.push('\n');
            text.push_str(section);
        }
        let http = self.listen.then(|| {
            let port = super::free_port();
            text.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
            format!("http://127.0.0.1:{port}")
        });
        if let Some(tokens) = &self.api_tokens {
            std::fs::write(dir.path().join("api.tokens"), tokens).unwrap();
            text.push_str("\n[api]\ntokens_file = \"api.tokens\"\n");
        }
        std::fs::write(&config, text).unwrap();
        TestApp {
            dir,
            config,
            db,
            engine: self.engine,
            pg,
            top,
            receiver,
            http,
        }
    }
}

impl TestApp {
    /// The TOP provider on the harness's fake gateway and the webhook channel to its receiver,
    /// nothing else.
    pub async fn start() -> TestApp {
        TestApp::builder()
            .provider(Provider::top())
            .channel(Channel::webhook())
            .start()
            .await
    }

    /// [`TestApp::start`] on `engine`.
    pub async fn start_on(engine: Engine) -> TestApp {
        TestApp::builder()
            .provider(Provider::top())
            .channel(Channel::webhook())
            .engine(engine)
            .start()
            .await
    }

    /// An app with the providers and channels it is given, and no others. The harness's fake
    /// TOP gateway (`top`) and webhook receiver (`receiver`) run either way.
    pub fn builder() -> Builder {
        Builder {
            providers: Vec::new(),
            channels: Vec::new(),
            sections: Vec::new(),
            tiers: ("1s", "1s", "2s"),
            backoff: "200ms",
            delivery_concurrency: None,
            behaviour: Behaviour::Accept,
            backlog: 1024,
            listen: false,
            api_tokens: None,
            engine: Engine::Sqlite,
            receipts_on_postgres: false,
        }
    }

    /// Where the daemon keeps its delivery receipts: beside the SQLite file, or, on PostgreSQL,
    /// in the test's folder when the builder was told [`Builder::receipts_on_postgres`].
    pub fn receipts(&self) -> PathBuf {
        match self.engine {
            Engine::Sqlite => shipwatch::storage::receipts::path_beside(&self.db),
            Engine::Postgres => self.dir.path().join(POSTGRES_RECEIPTS),
        }
    }

    /// An admin command, not yet started: for a test that watches it while it runs.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_from(&self.config, args)
    }

    fn command_from(&self, config: &Path, args: &[&str]) -> Command {
        let mut command = super::shipwatch();
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "shipwatch=debug")
            .stdin(Stdio::null());
        command
    }

    /// Runs an admin command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_env(args, &[])
    }

    /// Runs an admin command to completion with extra environment variables.
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args)
            .envs(env.iter().copied())
            .output()
            .expect("shipwatch runs")
    }

    /// Runs an admin command that must succeed, and returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "shipwatch {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Vec<Value> {
        serde_json::from_str(&self.cli_ok(args)).expect("--json prints JSON")
    }

    pub fn shipments(&self) -> Vec<Value> {
        self.json(&["list", "--json"])
    }

    pub fn shipment(&self, order_id: &str) -> Value {
        serde_json::from_str(&self.cli_ok(&["show", order_id, "--json"])).unwrap()
    }

    pub fn outbox(&self, state: Option<&str>) -> Vec<Value> {
        match state {
            Some(state) => self.json(&["outbox", "--state", state, "--json"]),
            None => self.json(&["outbox", "--json"]),
        }
    }

    /// Starts `shipwatch run`; its log goes to `daemon-N.log` in the test folder.
    pub fn spawn_daemon(&self) -> Daemon {
        self.spawn_daemon_with_env(&[])
    }

    /// Starts `shipwatch run` with extra environment variables (systemd's, say).
    pub fn spawn_daemon_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.spawn_daemon_with(&[], env)
    }

    /// Starts `shipwatch run` with extra arguments (`--log-format json`, say) and environment
    /// variables.
    pub fn spawn_daemon_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.spawn_daemon_from(&self.config, args, env)
    }

    /// Starts `shipwatch run` without `RUST_LOG`, as its systemd unit does: at the daemon's own
    /// default level.
    pub fn spawn_daemon_at_default_level(&self) -> Daemon {
        let mut command = self.command_from(&self.config, &["run"]);
        command.env_remove("RUST_LOG");
        self.spawn_logged(command)
    }

    fn spawn_daemon_from(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut command = self.command_from(config, &[&["run"], args].concat());
        command.envs(env.iter().copied());
        self.spawn_logged(command)
    }

    /// Starts `command` (a `shipwatch run`), its stderr in the next `daemon-N.log` of the app's
    /// folder.
    fn spawn_logged(&self, mut command: Command) -> Daemon {
        let n = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("daemon-")
            })
            .count();
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("shipwatch run starts");
        Daemon {
            child,
            log,
            http: None,
        }
    }

    /// Starts `n` daemons on the same database, each from a config of its own
    /// (`daemon-config-N.toml` beside the app's) that differs only in its `[http] listen`: a
    /// free loopback port per daemon (`Daemon::http`). Several daemons share one database only
    /// on PostgreSQL; on SQLite the second is refused.
    pub fn spawn_daemons(&self, n: usize) -> Vec<Daemon> {
        self.spawn_daemons_with(n, |_, _| {})
    }

    /// [`TestApp::spawn_daemons`], each daemon's config changed by `edit(i, config)` first (a
    /// key that tells daemon `i`'s calls apart at a fake, say).
    pub fn spawn_daemons_with(
        &self,
        n: usize,
        edit: impl Fn(usize, &mut toml::Table),
    ) -> Vec<Daemon> {
        let text = std::fs::read_to_string(&self.config).expect("config readable");
        (0..n)
            .map(|i| {
                let mut table: toml::Table = text.parse().expect("the harness writes TOML");
                let port = super::free_port();
                let http = table
                    .entry("http")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(http) = http {
                    http.insert(
                        "listen".to_owned(),
                        toml::Value::String(format!("127.0.0.1:{port}")),
                    );
                }
                edit(i, &mut table);
                let config = self.dir.path().join(format!("daemon-config-{i}.toml"));
                std::fs::write(&config, table.to_string()).expect("config writable");
                let mut daemon = self.spawn_daemon_from(&config, &[], &[]);
                daemon.http = Some(format!("http://127.0.0.1:{port}"));
                daemon
            })
            .collect()
    }

    /// Creates the database with its tables and no rows, as a first `import` does: the commands
    /// that only read (`list`) refuse a database that does not exist.
    pub fn create_database(&self) {
        let empty = self.dir.path().join("no-shipments.csv");
        std::fs::write(&empty, "order_id,provider\n").unwrap();
        self.cli_ok(&["import", empty.to_str().unwrap()]);
    }

    /// Runs SQL on the database through a connection of its own, as an outside tool would.
    /// Plain SQL (an INSERT of text and integers) reads the same on both engines; the error is
    /// the engine's own message (on PostgreSQL, a broken CHECK names its constraint).
    pub async fn sql(&self, statement: &str) -> Result<u64, String> {
        let statement = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()));
        let done = match &self.pg {
            Some(pg) => {
                let mut conn = PgConnection::connect(&pg.url)
                    .await
                    .map_err(|e| e.to_string())?;
                let done = statement.execute(&mut conn).await;
                conn.close().await.ok();
                done.map(|done| done.rows_affected())
            }
            None => {
                let url = format!("sqlite://{}?mode=rwc", self.db.display());
                let mut conn = SqliteConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                statement
                    .execute(&mut conn)
                    .await
                    .map(|done| done.rows_affected())
            }
        };
        done.map_err(|e| match e {
            // PostgreSQL's Display is the message alone; the constraint it names is the rule.
            sqlx::Error::Database(db) => match db.constraint() {
                Some(constraint) => format!("{db} ({constraint})"),
                None => db.to_string(),
            },
            other => other.to_string(),
        })
    }

    /// One number from the database (`SELECT count(*) …`), on either engine.
    pub async fn sql_count(&self, query: &str) -> Result<i64, String> {
        self.sql_column::<i64>(query)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| format!("no row from {query}"))
    }

    /// The first column of every row a query returns, on either engine (read-only on SQLite).
    pub async fn sql_column<T>(&self, query: &str) -> Result<Vec<T>, String>
    where
        T: Send
            + Unpin
            + sqlx::Type<sqlx::Postgres>
            + for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Sqlite>
            + for<'r> sqlx::Decode<'r, sqlx::Sqlite>,
    {
        let query = sqlx::AssertSqlSafe(query.to_owned());
        match &self.pg {
            Some(pg) => {
                let mut conn = PgConnection::connect(&pg.url)
                    .await
                    .map_err(|e| e.to_string())?;
                let values = sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .map_err(|e| e.to_string());
                conn.close().await.ok();
                values
            }
            None => {
                let url = format!("sqlite://{}?mode=ro", self.db.display());
                let mut conn = SqliteConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Rewrites the config file, for settings the builder has no knob for (a `[polling]` key, a
    /// provider's `rate_limit`). Takes effect for commands and daemons started afterwards.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("config readable");
        std::fs::write(&self.config, edit(text)).expect("config writable");
    }

    /// Polls `condition` every 100 ms until it holds; panics with `what` after `limit`.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut condition: impl FnMut() -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        while !condition() {
            if tokio::time::Instant::now() > deadline {
                panic!("timed out after {limit:?} waiting until {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running `shipwatch run`. Killed when dropped.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
    /// `http://127.0.0.1:PORT` of its own `[http] listen`, for one of several daemons.
    pub http: Option<String>,
}

impl Daemon {
    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`HUP`, `TERM`…) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("daemon exits")
    }

    /// Waits at most `limit` for the daemon to exit on its own; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id, for reading `/proc/PID/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The most memory the process has held (`VmHWM` from `/proc/PID/status`), in KiB.
    pub fn peak_memory_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the daemon is running");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// The CPU time the process has used so far, user and system (`utime` and `stime` of
    /// `/proc/PID/stat`, in the kernel's clock ticks of 1/100 s that it shows to user space).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("the daemon is running");
        // The command's name, in parentheses, may hold spaces: count the fields after it.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 1..]
            .split_whitespace()
            .collect();
        let ticks: u64 = [11, 12]
            .iter()
            .map(|&i| {
                fields[i]
                    .parse::<u64>()
                    .expect("utime and stime are numbers")
            })
            .sum();
        Duration::from_millis(ticks * 10)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
