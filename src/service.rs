//! Supervision by systemd (`Type=notify`): readiness, a status line for `systemctl status`, the
//! stop notice, and a watchdog that pings only while the dispatcher keeps completing rounds, so
//! that a wedged daemon is restarted instead of looking alive.
//!
//! The sd-notify crate reads `NOTIFY_SOCKET` from the environment on every send, which makes it
//! impossible to aim at a socket of our own choosing (tests run in parallel in one process). So
//! the datagram is sent here; sd-notify formats the `KEY=VALUE` lines and parses the watchdog
//! variables.

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Where notifications go: the service manager's socket, or nowhere when not started by one.
#[derive(Debug, Clone)]
pub struct Supervisor {
    #[cfg(unix)]
    socket: Option<std::os::unix::net::SocketAddr>,
    watchdog: Option<Duration>,
}

impl Supervisor {
    /// From the variables systemd sets: `NOTIFY_SOCKET`, and `WATCHDOG_USEC` with `WATCHDOG_PID`
    /// when `WatchdogSec=` is on. Without `NOTIFY_SOCKET` every call is a no-op.
    pub fn from_env() -> Supervisor {
        let watchdog = sd_notify::watchdog_enabled();
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) if !path.is_empty() => Supervisor::with_socket(&path, watchdog),
            _ => Supervisor::disabled(),
        }
    }

    /// Notifies the socket at `path` (a leading `@` names an abstract socket, as systemd writes
    /// it); `watchdog` is the interval within which systemd expects a ping.
    pub fn with_socket(path: impl AsRef<OsStr>, watchdog: Option<Duration>) -> Supervisor {
        #[cfg(unix)]
        {
            let socket = match socket_addr(path.as_ref()) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    warn!(socket = ?path.as_ref(), error = %e, "NOTIFY_SOCKET is unusable; systemd will not hear from us");
                    None
                }
            };
            Supervisor { socket, watchdog }
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            Supervisor { watchdog }
        }
    }

    /// Not supervised: nothing is sent and there is no watchdog.
    pub fn disabled() -> Supervisor {
        Supervisor {
            #[cfg(unix)]
            socket: None,
            watchdog: None,
        }
    }

    pub fn is_enabled(&self) -> bool {
        #[cfg(unix)]
        {
            self.socket.is_some()
        }
        #[cfg(not(unix))]
        {
            false
        }
    }

    /// The interval systemd expects pings within, when the unit has `WatchdogSec=`.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.is_enabled())
    }

    /// Startup is over: the unit becomes active and dependent units may start.
    pub fn ready(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// The line `systemctl status` shows under the unit.
    pub fn status(&self, status: &str) {
        let status = one_line(status);
        self.send(&[NotifyState::Status(&status)]);
    }

    /// Shutdown has begun; systemd then waits for the exit instead of treating it as a crash.
    pub fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: finishing polls and deliveries in flight"),
        ]);
    }

    /// Pings the watchdog every half interval until `stop` fires, but only when `heartbeat` has
    /// moved since the previous ping: a dispatcher stuck somewhere lets the pings lapse and
    /// systemd restarts the service. Returns at once when there is no watchdog.
    pub async fn run_watchdog(self, heartbeat: Heartbeat, stop: CancellationToken) {
        let Some(interval) = self.watchdog_interval() else {
            return;
        };
        let mut ticks = tokio::time::interval(interval / 2);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pinged_at = 0;
        let mut withheld = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let beats = heartbeat.beats();
            if beats != pinged_at {
                self.send(&[NotifyState::Watchdog]);
                pinged_at = beats;
                withheld = false;
            } else if !withheld && beats > 0 {
                // Said once per stall: the restart that follows should not come unexplained.
                warn!(
                    since = ?heartbeat.age(),
                    "the dispatcher has not completed a round since the last watchdog ping; withholding pings"
                );
                withheld = true;
            }
        }
    }

    fn send(&self, states: &[NotifyState]) {
        #[cfg(unix)]
        if let Some(addr) = &self.socket {
            let message: String = states.iter().map(|s| format!("{s}\n")).collect();
            // Never block the runtime on a manager that is not reading: a full socket buffer
            // drops this message (the next one follows soon) instead of stalling the daemon.
            let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|socket| {
                socket.set_nonblocking(true)?;
                socket.send_to_addr(message.as_bytes(), addr)
            });
            match sent {
                Ok(_) => debug!(message = message.trim_end(), "told systemd"),
                // Supervision is a courtesy to the service manager; the work goes on without it.
                Err(e) => warn!(error = %e, "could not notify systemd"),
            }
        }
        #[cfg(not(unix))]
        let _ = states;
    }
}

#[cfg(unix)]
fn socket_addr(path: &OsStr) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;
    match path.as_bytes().split_first() {
        #[cfg(target_os = "linux")]
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        _ => SocketAddr::from_pathname(path),
    }
}

/// A newline would start another `KEY=VALUE` line in the datagram.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Proof of life from the dispatcher: it beats after every round, the watchdog and the health
/// check read it. Clones share the same heartbeat.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<Pulse>);

#[derive(Debug)]
struct Pulse {
    origin: Instant,
    /// How many beats so far; the watchdog compares counts, so beats in the same instant still
    /// count as progress.
    beats: AtomicU64,
    /// Nanoseconds from `origin` to the last beat.
    last: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A heartbeat that has not beaten yet.
    pub fn new() -> Heartbeat {
        Heartbeat(Arc::new(Pulse {
            origin: Instant::now(),
            beats: AtomicU64::new(0),
            last: AtomicU64::new(0),
        }))
    }

    /// Records that a round just completed.
    pub fn beat(&self) {
        let since = u64::try_from(self.0.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.last.store(since, Ordering::Relaxed);
        self.0.beats.fetch_add(1, Ordering::Release);
    }

    /// Beats so far.
    pub fn beats(&self) -> u64 {
        self.0.beats.load(Ordering::Acquire)
    }

    /// Time since the last beat; `None` before the first.
    pub fn age(&self) -> Option<Duration> {
        if self.beats() == 0 {
            return None;
        }
        let last = self.0.origin + Duration::from_nanos(self.0.last.load(Ordering::Relaxed));
        Some(Instant::now().saturating_duration_since(last))
    }
}

/// systemd's end of a notify socket, for tests: an abstract socket (`@…`, which `sd_notify(3)`
/// says `NOTIFY_SOCKET` may name), so that no file is left behind.
#[cfg(all(test, target_os = "linux"))]
pub(crate) struct FakeSystemd {
    socket: std::os::unix::net::UnixDatagram,
    name: String,
}

#[cfg(all(test, target_os = "linux"))]
impl FakeSystemd {
    /// Listens on a name of its own: `test` and this process's id.
    pub fn bind(test: &str) -> FakeSystemd {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let name = format!("shipwatch-{test}-{}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        socket.set_nonblocking(true).unwrap();
        FakeSystemd { socket, name }
    }

    /// A supervisor that speaks to this listener.
    pub fn supervisor(&self, watchdog: Option<Duration>) -> Supervisor {
        Supervisor::with_socket(format!("@{}", self.name), watchdog)
    }

    /// The messages heard since the last call.
    pub fn heard(&self) -> Vec<String> {
        let mut buf = [0u8; 512];
        let mut messages = Vec::new();
        while let Ok(len) = self.socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_logs::Logs;

    #[tokio::test(start_paused = true)]
    async fn heartbeat_age_counts_from_the_last_beat() {
        let heartbeat = Heartbeat::new();
        assert_eq!(heartbeat.age(), None);
        heartbeat.clone().beat();
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(heartbeat.age(), Some(Duration::from_secs(7)));
        heartbeat.beat();
        assert_eq!(heartbeat.age(), Some(Duration::ZERO));
        assert_eq!(heartbeat.beats(), 2);
    }

    #[test]
    fn without_a_socket_nothing_is_supervised() {
        let supervisor = Supervisor::disabled();
        assert!(!supervisor.is_enabled());
        assert_eq!(supervisor.watchdog_interval(), None);
        supervisor.ready("no one listens");
    }

    #[tokio::test]
    async fn without_a_watchdog_the_pinger_returns_at_once() {
        let supervisor = Supervisor::with_socket("/nonexistent/notify", None);
        supervisor
            .run_watchdog(Heartbeat::new(), CancellationToken::new())
            .await;
    }

    /// The watchdog as systemd hears it: no ping before the dispatcher's first round, a ping
    /// each half interval in which it completed one, none while it is stuck, and one warning per
    /// stall.
    #[cfg(target_os = "linux")]
    #[tokio::test(start_paused = true)]
    async fn the_watchdog_pings_after_rounds_only_and_warns_once_per_stall() {
        let systemd = FakeSystemd::bind("watchdog-test");
        let pings = || {
            systemd
                .heard()
                .iter()
                .filter(|m| m.starts_with("WATCHDOG=1"))
                .count()
        };
        let (logs, _logging) = Logs::capture();
        let stalls = || logs.lines("WARN", "withholding pings");
        let heartbeat = Heartbeat::new();
        let stop = CancellationToken::new();
        let watchdog = tokio::spawn(
            systemd
                .supervisor(Some(Duration::from_millis(400)))
                .run_watchdog(heartbeat.clone(), stop.clone()),
        );

        // Ticks every 200 ms from 0; the test acts between them. Starting takes its time.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!((pings(), stalls()), (0, 0), "before the first round");
        for _ in 0..5 {
            heartbeat.beat();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            (pings(), stalls()),
            (5, 0),
            "a round between each two ticks"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!((pings(), stalls()), (0, 1), "ten ticks with no round");
        heartbeat.beat();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!((pings(), stalls()), (1, 2), "one round, then stuck again");
        stop.cancel();
        watchdog.await.unwrap();
    }

    #[test]
    fn a_status_cannot_inject_other_keys() {
        assert_eq!(one_line("polling\nREADY=1"), "polling READY=1");
    }
}
