//! A throwaway PostgreSQL cluster for the tests that need one (issue 17): Debian's `postgresql`
//! package's `initdb` in a temporary folder, a server on a free loopback port, one database per
//! test. The tests of one process share the cluster while any of them holds a database; the last
//! one to let go stops the server (`pg_ctl stop -m immediate`) and removes the folder, also when
//! it panicked. A process killed before that (a timeout, a signal) leaves its cluster running:
//! the next cluster started stops and removes those whose process is gone ([`OWNER`]). Without
//! PostgreSQL a test that asks for it fails, saying how to install it.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

use super::free_port;

/// The cluster's superuser; local connections are trusted, so no password.
const USER: &str = "shipwatch";

/// The file in a cluster's folder that names the test process it belongs to.
const OWNER: &str = "owner.pid";

/// The prefix of a cluster's folder in the temporary folder.
const PREFIX: &str = "shipwatch-pg-";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster the tests of this process share while any of them holds a database.
static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// Server settings (`name=value`) the clusters this process starts from now on are given
/// besides the tests' own; the tests give none, the bench sizes its server's memory.
static SERVER_SETTINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Gives the clusters this process starts from now on `settings` (`name=value` each).
pub fn server_settings(settings: &[String]) {
    *SERVER_SETTINGS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings.to_vec();
}

/// One test's own database in the shared cluster.
pub struct PgDatabase {
    /// `postgres://shipwatch@127.0.0.1:PORT/NAME`
    pub url: String,
    pub name: String,
    cluster: Arc<Cluster>,
}

impl PgDatabase {
    /// A new empty database, in the cluster the running tests share (started if none is).
    /// Panics with one line when PostgreSQL is not installed or does not start.
    pub async fn create() -> PgDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let cluster = shared_cluster();
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        cluster.admin(&format!("CREATE DATABASE {name}")).await;
        PgDatabase {
            url: cluster.url(&name),
            name,
            cluster,
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url))
    }

    /// Drops the database while its clients are still connected (their sessions end), as an
    /// operator could, or as it is lost with its server.
    pub async fn drop_while_in_use(&self) {
        let name = &self.name;
        self.cluster
            .admin(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await;
    }

    /// The URL of this database for another role of the cluster (one the test created).
    pub fn url_as(&self, role: &str) -> String {
        self.cluster.url_as(role, &self.name)
    }

    /// The cluster's port, for a test that wants to see it.
    pub fn port(&self) -> u16 {
        self.cluster.port
    }
}

fn shared_cluster() -> Arc<Cluster> {
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(Cluster::start().unwrap_or_else(|e| panic!("{e}")));
    // Shown with a failing test's output (or --nocapture): what the cluster cost.
    eprintln!(
        "PostgreSQL test cluster on port {} started in {:?}",
        cluster.port, cluster.started_in
    );
    *shared = Arc::downgrade(&cluster);
    cluster
}

/// A running server in a temporary folder: `data/` (the cluster), `sock/` (its Unix socket, so
/// that it never touches /var/run/postgresql), `server.log`.
pub struct Cluster {
    bin: PathBuf,
    pub port: u16,
    /// Set when the tests run as root: initdb and the server refuse root, so they run as the
    /// `postgres` user the package makes.
    as_postgres: bool,
    dir: Option<TempDir>,
    /// How long initdb and the start took, for the record.
    pub started_in: Duration,
}

impl Cluster {
    /// initdb, start, wait until the server accepts connections.
    pub fn start() -> Result<Cluster, String> {
        let began = Instant::now();
        let bin = postgres_bin()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        sweep_orphans(&bin, as_postgres);
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .map_err(|e| format!("a temporary folder for PostgreSQL: {e}"))?;
        std::fs::write(dir.path().join(OWNER), std::process::id().to_string())
            .map_err(|e| format!("naming this process in the PostgreSQL folder: {e}"))?;
        std::fs::create_dir(dir.path().join("sock"))
            .map_err(|e| format!("a socket folder for PostgreSQL: {e}"))?;
        if as_postgres {
            let (uid, gid) = postgres_user()?;
            for path in [dir.path().to_path_buf(), dir.path().join("sock")] {
                chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("giving {} to the postgres user: {e}", path.display()))?;
            }
        }
        let mut cluster = Cluster {
            bin,
            port: 0,
            as_postgres,
            dir: Some(dir),
            started_in: Duration::ZERO,
        };
        let data = cluster.path("data");
        let initdb_log = cluster.path("initdb.log");
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            &initdb_log,
        )?;
        let log = cluster.path("server.log");
        // A port another process took between free_port and the server's bind: try another.
        let mut tries = 0;
        loop {
            tries += 1;
            cluster.port = free_port();
            // The WAL is kept small: with the default max_wal_size (1 GB) one cluster of the
            // suite grew to 750 MB of WAL, on a machine whose free disk is not promised.
            let mut options = format!(
                "-h 127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                 -c max_wal_size=64MB -c min_wal_size=32MB",
                cluster.port,
                path_str(&cluster.path("sock"))
            );
            for setting in SERVER_SETTINGS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
            {
                options.push_str(&format!(" -c {setting}"));
            }
            let started = cluster.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&data),
                    "-l",
                    path_str(&log),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    &START_TIMEOUT.as_secs().to_string(),
                    "start",
                ],
                &cluster.path("pg_ctl.log"),
            );
            match started {
                Ok(()) => break,
                Err(_) if tries < 3 && read(&log).contains("could not bind") => continue,
                Err(e) => {
                    // Keep the folder: the message names the log. Without its owner, no later
                    // sweep takes it.
                    if let Some(dir) = cluster.dir.take() {
                        let _ = std::fs::remove_file(dir.path().join(OWNER));
                        let _ = dir.keep();
                    }
                    return Err(format!(
                        "PostgreSQL did not start within {}s ({e}); its log is {}",
                        START_TIMEOUT.as_secs(),
                        log.display()
                    ));
                }
            }
        }
        cluster.started_in = began.elapsed();
        Ok(cluster)
    }

    pub fn url(&self, database: &str) -> String {
        self.url_as(USER, database)
    }

    fn url_as(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one statement on the cluster's maintenance database (`postgres`), as its
    /// administrator: a statement that cannot run inside the database it is about.
    async fn admin(&self, statement: &str) {
        let mut admin = PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        admin.close().await.ok();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |dir| dir.path().join(name))
    }

    /// Runs one of PostgreSQL's programs (as the postgres user under root), its output to `log`.
    fn run(&self, program: &str, args: &[&str], log: &Path) -> Result<(), String> {
        let program_path = self.bin.join(program);
        let output = command(&self.bin, self.as_postgres, program)
            .args(args)
            .current_dir(self.path(""))
            .output()
            .map_err(|e| format!("running {}: {e}", program_path.display()))?;
        let mut text = output.stdout;
        text.extend_from_slice(&output.stderr);
        let _ = std::fs::write(log, &text);
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&text).trim()
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.dir.is_none() {
            return;
        }
        let data = self.path("data");
        let _ = self.run(
            "pg_ctl",
            &["-D", path_str(&data), "stop", "-m", "immediate", "-w"],
            &self.path("pg_ctl-stop.log"),
        );
        // TempDir's own drop removes the folder.
    }
}

/// One of PostgreSQL's programs, run as the postgres user under root.
fn command(bin: &Path, as_postgres: bool, program: &str) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

/// Stops and removes the clusters in the temporary folder whose test process is gone: killed
/// before its clusters' drop could run. A folder that names no process (one being made, or kept
/// for its log) is left alone, and so is one whose process still runs.
fn sweep_orphans(bin: &Path, as_postgres: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let folder = entry.path();
        let owner = read(&folder.join(OWNER))
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|&pid| pid > 0);
        if owner.is_none_or(is_running) {
            continue;
        }
        let data = folder.join("data");
        let pg_ctl = |args: &[&str]| {
            command(bin, as_postgres, "pg_ctl")
                .args(["-D", path_str(&data)])
                .args(args)
                .current_dir(&folder)
                .output()
        };
        let _ = pg_ctl(&["stop", "-m", "immediate", "-w"]);
        // `pg_ctl status` exits 3 when no server runs on the folder and 4 when it holds no
        // cluster. A server that would not stop keeps its folder, for the next sweep to try
        // again, rather than running on with its files gone.
        let stopped = pg_ctl(&["status"]).is_ok_and(|out| matches!(out.status.code(), Some(3 | 4)));
        if stopped && std::fs::remove_dir_all(&folder).is_ok() {
            swept += 1;
        }
    }
    swept
}

/// Whether a process `pid` is running (or a zombie not yet reaped).
fn is_running(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let answered = unsafe { libc::kill(pid, 0) };
    answered == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The folder of `initdb`, `pg_ctl` and `postgres` in Debian's package: the newest
/// `/usr/lib/postgresql/N/bin` that has all three.
fn postgres_bin() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|program| bin.join(program).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL is not installed (no initdb, pg_ctl and postgres under /usr/lib/postgresql/*/bin): \
         this test needs it; install it with `apt-get install postgresql`"
            .to_owned()
    })
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = read(Path::new("/etc/passwd"));
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            "the tests run as root and there is no `postgres` user to run PostgreSQL as \
             (Debian's postgresql package makes it): install it with `apt-get install postgresql`"
                .to_owned()
        })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// A cluster whose test process was killed (its drop never ran) is stopped and removed by the
    /// next sweep; a cluster whose process runs is left alone.
    #[test]
    fn a_cluster_left_by_a_killed_process_is_stopped_and_removed_by_the_next() {
        let orphan = super::Cluster::start().unwrap();
        let ours = super::Cluster::start().unwrap();
        let folder = orphan.path("");
        let port = orphan.port;
        // Above Linux's largest pid (2^22): a process that cannot be running.
        std::fs::write(folder.join(super::OWNER), i32::MAX.to_string()).unwrap();
        std::mem::forget(orphan);
        let reachable = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        assert!(reachable(port));

        let swept = super::sweep_orphans(&ours.bin, ours.as_postgres);
        assert!(swept >= 1, "{swept}");
        assert!(!folder.exists(), "{}", folder.display());
        assert!(!reachable(port), "the orphan's server still answers");
        assert!(ours.path("data").is_dir());
        assert!(reachable(ours.port));
    }
}
