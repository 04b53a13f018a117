//! The real `shipwatch` binary against a fake TOP gateway and a loopback webhook receiver, each
//! test in a folder of its own.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use shipwatch::notify::receiver::{Behaviour, Receiver, generate_secret};
use shipwatch::notify::webhook::WebhookSecret;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use super::fake_top::FakeTop;

pub const APP_KEY: &str = "12345678";
pub const APP_SECRET: &str = "helloworld";
pub const SESSION: &str = "test-session";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub db: PathBuf,
    pub top: FakeTop,
    pub receiver: Receiver,
}

/// Knobs a test may turn before the config is written.
pub struct Options {
    pub sign_method: &'static str,
    pub behaviour: Behaviour,
    /// Extra TOML appended to the config.
    pub extra: String,
    pub tiers: (&'static str, &'static str, &'static str),
    pub backoff: &'static str,
    /// The webhook receiver's listen queue.
    pub backlog: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sign_method: "hmac-sha256",
            behaviour: Behaviour::Accept,
            extra: String::new(),
            tiers: ("1s", "1s", "2s"),
            backoff: "200ms",
            backlog: 1024,
        }
    }
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::with(Options::default()).await
    }

    pub async fn with(options: Options) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let top = FakeTop::start(APP_KEY, APP_SECRET, SESSION).await;
        let secret = generate_secret();
        let receiver = Receiver::start_with_backlog(
            WebhookSecret::parse(&secret).unwrap(),
            options.behaviour,
            options.backlog,
        )
        .await
        .expect("receiver starts");
        let db = dir.path().join("shipwatch.db");
        let config = dir.path().join("shipwatch.toml");
        std::fs::write(dir.path().join("taobao.secret"), format!("{APP_SECRET}\n")).unwrap();
        let (high, normal, low) = options.tiers;
        let text = format!(
            r#"
database = "{db}"

[tiers]
high = "{high}"
normal = "{normal}"
low = "{low}"

[polling]
scan_interval = "200ms"
jitter = 0.0
timeout = "5s"

[delivery]
backoff = "{backoff}"
backoff_max = "1s"
timeout = "2s"
lease = "5s"

[providers.taobao]
kind = "taobao"
endpoint = "{endpoint}"
app_key = "{APP_KEY}"
app_secret_file = "taobao.secret"
session = "{SESSION}"
sign_method = "{sign_method}"

[channels.webhook]
url = "{webhook}"
secret = "{secret}"
{extra}
"#,
            db = db.display(),
            backoff = options.backoff,
            endpoint = top.url,
            sign_method = options.sign_method,
            webhook = receiver.url,
            extra = options.extra,
        );
        std::fs::write(&config, text).unwrap();
        TestApp {
            dir,
            config,
            db,
            top,
            receiver,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shipwatch"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("SHIPWATCH_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("RUST_LOG", "shipwatch=debug")
            .stdin(Stdio::null());
        command
    }

    /// Runs an admin command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("shipwatch runs")
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
        let child = self
            .command(&["run"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("shipwatch run starts");
        Daemon { child, log }
    }

    /// Runs SQL on the database through a connection of its own, as an outside tool would.
    pub async fn sql(&self, statement: &str) -> Result<u64, String> {
        let url = format!("sqlite://{}?mode=rwc", self.db.display());
        let mut conn = SqliteConnection::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .map(|done| done.rows_affected())
            .map_err(|e| e.to_string())
    }

    /// Rewrites the config file, for settings `Options` has no knob for (a `[polling]` key, a
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
