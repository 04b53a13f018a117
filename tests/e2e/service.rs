//! Supervision as systemd sees it: datagrams on a notify socket of the test's own, and the
//! health and metrics endpoints over real HTTP.

use std::time::Duration;

use shipwatch::service::{Heartbeat, Supervisor};
use tokio::net::UnixDatagram;
use tokio_util::sync::CancellationToken;

/// A stand-in for systemd's notify socket.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            _dir: dir,
            path,
            socket,
        }
    }

    fn supervisor(&self, watchdog: Option<Duration>) -> Supervisor {
        Supervisor::with_socket(&self.path, watchdog)
    }

    /// The next datagram, or `None` when nothing comes within `within`.
    async fn next(&self, within: Duration) -> Option<String> {
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(within, self.socket.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(String::from_utf8(buf[..n].to_vec()).unwrap())
    }

    /// Every datagram that arrives within `during`.
    async fn collect(&self, during: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + during;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return got;
            }
            match self.next(left).await {
                Some(message) => got.push(message),
                None => return got,
            }
        }
    }
}

#[tokio::test]
async fn ready_status_and_stopping_reach_the_notify_socket() {
    let systemd = NotifySocket::bind();
    let supervisor = systemd.supervisor(None);
    assert!(supervisor.is_enabled());

    supervisor.ready("polling 3 providers");
    let ready = systemd.next(Duration::from_secs(5)).await.unwrap();
    let lines: Vec<&str> = ready.lines().collect();
    assert!(lines.contains(&"READY=1"), "{ready:?}");
    assert!(lines.contains(&"STATUS=polling 3 providers"), "{ready:?}");

    supervisor.status("2 overdue\nWATCHDOG=1");
    let status = systemd.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, "STATUS=2 overdue WATCHDOG=1\n");

    supervisor.stopping();
    let stopping = systemd.next(Duration::from_secs(5)).await.unwrap();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

#[tokio::test]
async fn the_watchdog_is_fed_while_rounds_complete_and_starves_when_they_stop() {
    let systemd = NotifySocket::bind();
    let supervisor = systemd.supervisor(Some(Duration::from_millis(200)));
    assert_eq!(
        supervisor.watchdog_interval(),
        Some(Duration::from_millis(200))
    );
    let heartbeat = Heartbeat::new();
    let stop = CancellationToken::new();
    let watchdog = tokio::spawn(supervisor.run_watchdog(heartbeat.clone(), stop.clone()));

    // A dispatcher that completes a round every 50 ms.
    let rounds = CancellationToken::new();
    let dispatcher = {
        let (heartbeat, rounds) = (heartbeat.clone(), rounds.clone());
        tokio::spawn(async move {
            while !rounds.is_cancelled() {
                heartbeat.beat();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let alive = systemd.collect(Duration::from_millis(700)).await;
    let pings = alive.iter().filter(|m| *m == "WATCHDOG=1\n").count();
    assert!(pings >= 4, "expected a ping every 100 ms, got {alive:?}");

    // The dispatcher wedges: after at most one ping for the last round, silence.
    rounds.cancel();
    dispatcher.await.unwrap();
    let _ = systemd.collect(Duration::from_millis(150)).await;
    let wedged = systemd.collect(Duration::from_millis(600)).await;
    assert!(
        wedged.is_empty(),
        "pings went on without rounds: {wedged:?}"
    );

    // It recovers: pings resume.
    heartbeat.beat();
    let recovered = systemd.next(Duration::from_millis(500)).await;
    assert_eq!(recovered.as_deref(), Some("WATCHDOG=1\n"));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), watchdog)
        .await
        .expect("the watchdog stops when told")
        .unwrap();
}

#[tokio::test]
async fn a_heartbeat_that_never_beat_never_pings() {
    let systemd = NotifySocket::bind();
    let supervisor = systemd.supervisor(Some(Duration::from_millis(100)));
    let stop = CancellationToken::new();
    let watchdog = tokio::spawn(supervisor.run_watchdog(Heartbeat::new(), stop.clone()));
    assert!(systemd.collect(Duration::from_millis(400)).await.is_empty());
    stop.cancel();
    watchdog.await.unwrap();
}
