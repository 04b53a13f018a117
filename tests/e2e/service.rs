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

// ---- /healthz and /metrics ----------------------------------------------------------------------

use chrono::TimeZone;
use shipwatch::clock::{Clock, SystemClock};
use shipwatch::config::Synchronous;
use shipwatch::domain::{Status, Tier};
use shipwatch::events::{Events, PipelineEvent};
use shipwatch::health;
use shipwatch::notify::{ChannelKind, ChannelRule};
use shipwatch::providers::{Trace, TraceEvent, shanghai};
use shipwatch::storage::{Db, Location, NewShipment};
use shipwatch::track::PollRecord;

use crate::support::postgres::PgDatabase;

struct HealthServer {
    _dir: Option<tempfile::TempDir>,
    db: Db,
    base: String,
    stop: CancellationToken,
}

impl HealthServer {
    async fn start(heartbeat: Heartbeat, max_heartbeat_age: Duration) -> HealthServer {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.db"), Synchronous::Normal)
            .await
            .unwrap();
        HealthServer::serving(db, Some(dir), heartbeat, max_heartbeat_age).await
    }

    /// A server on `db`, which lives in `dir` if it is a file.
    async fn serving(
        db: Db,
        dir: Option<tempfile::TempDir>,
        heartbeat: Heartbeat,
        max_heartbeat_age: Duration,
    ) -> HealthServer {
        let stop = CancellationToken::new();
        let (addr, _task) = health::serve(
            "127.0.0.1:0".parse().unwrap(),
            db.clone(),
            heartbeat,
            max_heartbeat_age,
            health::install_recorder(),
            stop.clone(),
        )
        .await
        .unwrap();
        HealthServer {
            _dir: dir,
            db,
            base: format!("http://{addr}"),
            stop,
        }
    }

    async fn healthz(&self) -> (u16, serde_json::Value) {
        let response = reqwest::get(format!("{}/healthz", self.base))
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn metrics(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The value of the sample `name` whose labels include every one of `labels`.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let series = line.rsplit_once(' ').map_or(*line, |(s, _)| s);
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit_once(' '))
        .map(|(_, value)| value.parse().unwrap())
}

#[tokio::test]
async fn healthz_is_ok_while_the_dispatcher_completes_rounds() {
    let heartbeat = Heartbeat::new();
    heartbeat.beat();
    let server = HealthServer::start(heartbeat, Duration::from_secs(60)).await;
    let (status, body) = server.healthz().await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

/// No timing window a busy machine could miss: one server allows a minute between rounds, the
/// other a millisecond, and both watch the same heartbeat.
#[tokio::test]
async fn healthz_is_unhealthy_when_the_dispatcher_is_stuck() {
    let heartbeat = Heartbeat::new();
    let patient = HealthServer::start(heartbeat.clone(), Duration::from_secs(60)).await;
    let strict = HealthServer::start(heartbeat.clone(), Duration::from_millis(1)).await;

    let (status, body) = patient.healthz().await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unhealthy");
    assert!(
        body["reason"].as_str().unwrap().contains("no round"),
        "{body}"
    );

    heartbeat.beat();
    assert_eq!(patient.healthz().await.0, 200);
    // At least a millisecond has passed since the beat once this sleep returns.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = strict.healthz().await;
    assert_eq!(status, 503);
    assert!(
        body["reason"].as_str().unwrap().contains("last round"),
        "{body}"
    );
}

#[tokio::test]
async fn healthz_is_unhealthy_when_the_database_is_gone() {
    let heartbeat = Heartbeat::new();
    heartbeat.beat();
    let server = HealthServer::start(heartbeat, Duration::from_secs(60)).await;
    server.db.close().await;
    let (status, body) = server.healthz().await;
    assert_eq!(status, 503);
    // The reason in the database's own words, after `database: ` alone.
    assert_eq!(
        body["reason"],
        format!("database: {}", sqlx::Error::PoolClosed),
        "{body}"
    );
}

/// A PostgreSQL database can go away under a running daemon (dropped by an operator, or lost
/// with its server); `/healthz` says so, from the database's answer alone.
#[tokio::test]
async fn healthz_is_unhealthy_when_the_postgres_database_is_gone() {
    let pg = PgDatabase::create().await;
    let db = Db::open(Location::parse(&pg.url).unwrap(), Synchronous::Normal)
        .await
        .unwrap();
    let heartbeat = Heartbeat::new();
    heartbeat.beat();
    let server = HealthServer::serving(db, None, heartbeat, Duration::from_secs(60)).await;
    assert_eq!(server.healthz().await.0, 200);

    pg.drop_while_in_use().await;
    // The first probe finds its session ended, the next one no database to connect to.
    for _ in 0..2 {
        let (status, body) = server.healthz().await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["reason"].as_str().unwrap().starts_with("database: "),
            "{body}"
        );
    }
}

fn in_transit() -> Trace {
    Trace {
        status: Status::InTransit,
        raw_status: "运输中".to_owned(),
        events: vec![TraceEvent {
            time: shanghai().with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap(),
            description: "到达杭州转运中心".to_owned(),
            location: Some("杭州市".to_owned()),
            raw_code: Some("ARRIVE".to_owned()),
        }],
        carrier: None,
        tracking_no: None,
        unmapped: Vec::new(),
    }
}

#[tokio::test]
async fn metrics_show_what_the_database_holds() {
    let heartbeat = Heartbeat::new();
    heartbeat.beat();
    let server = HealthServer::start(heartbeat, Duration::from_secs(60)).await;
    let db = &server.db;
    let now = SystemClock.now();
    let an_hour_ago = now - 3_600_000;
    let mut ids = Vec::new();
    for order_id in ["M-1", "M-2", "M-3"] {
        let row = db
            .add_shipment(
                &NewShipment {
                    order_id: order_id.to_owned(),
                    provider: "metrics-gauges".to_owned(),
                    tracking_no: None,
                    carrier: None,
                    tier: Tier::Low,
                    phone: None,
                    email: None,
                    openid: None,
                    sub_orders: None,
                },
                an_hour_ago,
            )
            .await
            .unwrap();
        ids.push(row.id);
    }
    // Two polled into transit (a webhook queued for each) and due tomorrow; one an hour overdue.
    let webhook = [ChannelRule::new(
        ChannelKind::Webhook,
        vec![Status::InTransit],
    )];
    let trace = in_transit();
    for id in &ids[..2] {
        let recorded = db
            .record_poll(
                *id,
                PollRecord {
                    now,
                    trace: &trace,
                    next_poll_at: now + 86_400_000,
                    channels: &webhook,
                },
            )
            .await
            .unwrap();
        assert_eq!(recorded.queued.len(), 1);
    }
    db.pause_provider("metrics-paused", now + 600_000, "credentials rejected", now)
        .await
        .unwrap();
    db.pause_provider(
        "metrics-resumed",
        now - 1_000,
        "credentials rejected",
        now - 60_000,
    )
    .await
    .unwrap();

    let page = server.metrics().await;
    let shipments = |status| {
        sample(
            &page,
            "shipwatch_shipments",
            &[("tier", "low"), ("status", status)],
        )
    };
    assert_eq!(shipments("in_transit"), Some(2.0), "{page}");
    assert_eq!(shipments("pending"), Some(1.0), "{page}");
    assert_eq!(shipments("delivered"), Some(0.0), "{page}");
    assert_eq!(
        sample(&page, "shipwatch_outbox", &[("state", "pending")]),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "shipwatch_outbox", &[("state", "dead")]),
        Some(0.0)
    );
    let lag = sample(&page, "shipwatch_poll_lag_seconds", &[]).unwrap();
    assert!((3600.0..3700.0).contains(&lag), "lag {lag}");
    assert_eq!(
        sample(
            &page,
            "shipwatch_provider_paused",
            &[("provider", "metrics-paused")]
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            "shipwatch_provider_paused",
            &[("provider", "metrics-resumed")]
        ),
        Some(0.0),
        "{page}"
    );
    assert_eq!(sample(&page, "shipwatch_database_up", &[]), Some(1.0));
}

#[tokio::test]
async fn metrics_count_the_pipeline_events() {
    let heartbeat = Heartbeat::new();
    heartbeat.beat();
    let server = HealthServer::start(heartbeat, Duration::from_secs(60)).await;
    let events = Events::default();
    let recorder = health::record_events(&events);

    // The recorder is the process's own: other tests may count too, so compare before and after.
    let before = server.metrics().await;
    let count =
        |page: &str, name, labels: &[(&str, &str)]| sample(page, name, labels).unwrap_or(0.0);
    let sent = [("channel", "webhook"), ("result", "sent")];
    let failed = [("channel", "sms"), ("result", "failed")];
    let dead = [("channel", "sms"), ("result", "dead")];

    events.emit(PipelineEvent::StatusChanged {
        order_id: "C-1".to_owned(),
        provider: "metrics-counters".to_owned(),
        tier: Tier::High,
        from: Status::InTransit,
        to: Status::Exception,
        raw_status: "疑难件".to_owned(),
    });
    for _ in 0..2 {
        events.emit(PipelineEvent::PollFailed {
            order_id: "C-1".to_owned(),
            provider: "metrics-counters".to_owned(),
            error: "no answer within 10s".to_owned(),
        });
    }
    events.emit(PipelineEvent::ProviderPaused {
        provider: "metrics-counters".to_owned(),
        until: SystemClock.now() + 60_000,
        reason: "rate limited".to_owned(),
    });
    events.emit(PipelineEvent::Delivered {
        order_id: "C-1".to_owned(),
        channel: ChannelKind::Webhook,
        status: "exception".to_owned(),
        attempt: 1,
        notification: "msg_x".to_owned(),
    });
    for retry_in in [Some(Duration::from_secs(30)), None] {
        events.emit(PipelineEvent::DeliveryFailed {
            order_id: "C-1".to_owned(),
            channel: ChannelKind::Sms,
            status: "exception".to_owned(),
            attempt: 3,
            error: "gateway said no".to_owned(),
            retry_in,
        });
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = server.metrics().await;
        if count(&page, "shipwatch_notifications_total", &dead)
            > count(&before, "shipwatch_notifications_total", &dead)
            || tokio::time::Instant::now() > deadline
        {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let delta =
        |name, labels: &[(&str, &str)]| count(&page, name, labels) - count(&before, name, labels);
    assert_eq!(
        delta("shipwatch_status_changes_total", &[("status", "exception")]),
        1.0,
        "{page}"
    );
    assert_eq!(
        delta(
            "shipwatch_polls_failed_total",
            &[("provider", "metrics-counters")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "shipwatch_provider_pauses_total",
            &[("provider", "metrics-counters")]
        ),
        1.0
    );
    assert_eq!(delta("shipwatch_notifications_total", &sent), 1.0);
    assert_eq!(delta("shipwatch_notifications_total", &failed), 1.0);
    assert_eq!(delta("shipwatch_notifications_total", &dead), 1.0);

    drop(events);
    tokio::time::timeout(Duration::from_secs(5), recorder)
        .await
        .expect("the recorder ends with the pipeline")
        .unwrap();
}
