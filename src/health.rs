//! `/healthz` for load balancers and uptime checks, `/metrics` for Prometheus.
//!
//! Gauges are read from the database at scrape time, so they are right even for rows other
//! programs wrote; counters come from the pipeline's events, so they count what this process did
//! since it started (Prometheus handles the resets).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::clock::{Millis, SharedClock, SystemClock};
use crate::domain::{Status, Tier};
use crate::events::{Events, PipelineEvent};
use crate::service::Heartbeat;
use crate::storage::{Db, GaugeCounts, StorageError};

/// Where the endpoint listens; meant for a `[health]` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    pub listen: SocketAddr,
}

/// A database that does not answer this fast counts as down: a probe must not hang.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client has this long to send a request's headers, counted from when its connection opens or
/// from the previous answer on a kept-alive one: idle connections and headers trickled a byte at
/// a time (slowloris) are closed then. A probe sends its few headers at once. hyper's
/// `http1::Builder::header_read_timeout`
/// (docs.rs/hyper/1/hyper/server/conn/http1/struct.Builder.html) does this, and only with a timer
/// set (`axum::serve` sets none, hence no timeout at all); its timer starts whenever a request head
/// is awaited, the first or the next one on a kept-alive connection (hyper 1.x, `proto/h1/conn.rs`,
/// `poll_read_head`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// No connection lives longer than this, whatever it does: a client that never reads its answer
/// holds a descriptor too.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The most connections held at once. A new one beyond this closes the oldest: probes and scrapes
/// are over in milliseconds, so the oldest is the least likely to be one, and however many idle
/// connections someone opens, a real probe still gets in and the daemon's descriptors stay for
/// its deliveries.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection closed early (evicted, or the daemon stopping) may take to finish the
/// answer it is writing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The process's Prometheus recorder, installed on first use. The `metrics` facade takes one
/// global recorder per process, so the daemon and every test share this one.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = match PrometheusBuilder::new().install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    // Someone else's recorder got there first: serve an empty page rather than
                    // stop the daemon over metrics.
                    warn!(error = %e, "cannot install the metrics recorder; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!("shipwatch_outbox", "Notifications in the outbox by state");
    describe_gauge!("shipwatch_shipments", "Shipments by tier and status");
    describe_gauge!(
        "shipwatch_poll_lag_seconds",
        "How long the most overdue active shipment has been waiting for its poll"
    );
    describe_gauge!(
        "shipwatch_provider_paused",
        "1 while a provider is paused (upstream ban or rejected credentials)"
    );
    describe_gauge!(
        "shipwatch_database_up",
        "0 when the last scrape could not read the database"
    );
    describe_gauge!(
        "shipwatch_database_writable",
        "0 while the daemon's writes fail (full disk, read-only file system): polls and deliveries wait"
    );
    describe_counter!(
        "shipwatch_status_changes_total",
        "Status changes by new status"
    );
    describe_counter!(
        "shipwatch_polls_failed_total",
        "Polls that failed and will be retried"
    );
    describe_counter!(
        "shipwatch_notifications_total",
        "Delivery attempts by channel and result (sent, failed: will retry, dead: given up)"
    );
    describe_counter!(
        "shipwatch_provider_pauses_total",
        "Times a provider was paused"
    );
    describe_counter!(
        "shipwatch_shipments_invalid_total",
        "Shipments whose polling stopped as invalid"
    );
    describe_counter!(
        "shipwatch_polls_total",
        "Polls by provider and result (ok, transient, rate_limited, not_found, permanent, auth_expired, config, unconfirmed)"
    );
    describe_histogram!(
        "shipwatch_rate_limit_wait_seconds",
        "Time each poll waited for its provider's quota"
    );
    describe_counter!(
        "shipwatch_subscriptions_total",
        "Kuaidi100 subscriptions (push mode) by result (subscribed, already_subscribed, failed)"
    );
    describe_counter!(
        "shipwatch_callbacks_total",
        "Callbacks on the public listener by provider and outcome"
    );
    describe_counter!(
        "shipwatch_api_requests_total",
        "Shipments API requests by route and answer status (401s are refused tokens)"
    );
}

#[derive(Clone)]
struct Probe {
    db: Db,
    heartbeat: Heartbeat,
    max_heartbeat_age: Duration,
    metrics: PrometheusHandle,
    clock: SharedClock,
}

/// Serves `/healthz` and `/metrics` on `listen` until `stop` fires. Returns the bound address
/// (port 0 picks a free one) and the server task. Poll lag is measured on the system clock.
pub async fn serve(
    listen: SocketAddr,
    db: Db,
    heartbeat: Heartbeat,
    max_heartbeat_age: Duration,
    handle: PrometheusHandle,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let clock: SharedClock = Arc::new(SystemClock);
    serve_with_routes(
        listen,
        db,
        heartbeat,
        max_heartbeat_age,
        handle,
        clock,
        Router::new(),
        stop,
    )
    .await
}

/// [`serve`] with the daemon's clock (which the shipments' due times are written in) and more
/// routes beside `/healthz` and `/metrics` (the shipments API), served through the same
/// listener, with the same timeouts and connection cap.
#[allow(clippy::too_many_arguments)]
pub async fn serve_with_routes(
    listen: SocketAddr,
    db: Db,
    heartbeat: Heartbeat,
    max_heartbeat_age: Duration,
    handle: PrometheusHandle,
    clock: SharedClock,
    routes: Router,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page))
        .with_state(Probe {
            db,
            heartbeat,
            max_heartbeat_age,
            metrics: handle,
            clock,
        })
        .merge(routes);
    let task = tokio::spawn(serve_connections("[http] listen", listener, app, stop));
    Ok((bound, task))
}

/// Why a request's body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefused {
    /// Over the limit, declared or sent.
    TooLarge,
    /// The connection broke or the body was malformed (chunked framing, say).
    Broken,
}

/// How long a refused body is still read (and dropped) at most.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request's body, at most `limit` bytes, read frame by frame on either listener. Over the
/// limit, up to seven times as much again is read and dropped (for [`DRAIN_TIME`] at most)
/// before the refusal goes out: a client that sends its whole body before reading the answer
/// would otherwise meet a connection closed with its data unread, which resets it and can take
/// the refusal with it (the client sees a broken pipe and no reason). Beyond that the connection
/// is closed anyway, so an endless body holds nothing. A client that sent `Expect:
/// 100-continue` with a length over the limit has sent nothing yet and is refused at once.
pub async fn read_body(
    headers: &axum::http::HeaderMap,
    mut body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, BodyRefused> {
    use http_body_util::BodyExt;
    let drain_bytes = limit.saturating_mul(8);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > limit as u64
    {
        let waits = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits && declared <= drain_bytes as u64 {
            drain(body, drain_bytes).await;
        }
        return Err(BodyRefused::TooLarge);
    }
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyRefused::Broken)?.into_data() else {
            continue;
        };
        if read.len() + data.len() > limit {
            drain(body, drain_bytes - limit).await;
            return Err(BodyRefused::TooLarge);
        }
        read.extend_from_slice(&data);
    }
    Ok(read.into())
}

/// Reads and drops up to `bytes` more of `body`, for at most [`DRAIN_TIME`].
async fn drain(mut body: axum::body::Body, bytes: usize) {
    use http_body_util::BodyExt;
    let mut left = bytes;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let size = frame.data_ref().map_or(0, |data| data.len());
            if size >= left {
                return;
            }
            left -= size;
        }
    })
    .await;
}

/// Accepts connections until `stop` fires, serving each with the timeouts and the cap above, then
/// lets the open ones finish within [`CLOSE_GRACE`]. `name` is the listener's, for the log
/// (`[http] listen`, `[http] public_listen`).
pub(crate) async fn serve_connections(
    name: &'static str,
    mut listener: impl Accept,
    app: Router,
    stop: CancellationToken,
) {
    let open: Arc<Mutex<BTreeMap<u64, CancellationToken>>> = Arc::default();
    let tracker = TaskTracker::new();
    for id in 0u64.. {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.next() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            // The client gave up before we took its connection: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: the connection waits in the
                // backlog, and accepting again at once would only spin.
                warn!(listener = name, error = %e, "cannot accept a connection; trying again in 1s");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let close = stop.child_token();
        {
            let mut open = lock(&open);
            while open.len() >= MAX_CONNECTIONS {
                match open.pop_first() {
                    Some((_, oldest)) => oldest.cancel(),
                    None => break,
                }
            }
            open.insert(id, close.clone());
        }
        let service = TowerToHyperService::new(app.clone());
        let open = open.clone();
        tracker.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                // Errors are the client's doing (a timeout, a malformed request, a reset): the
                // connection is closed either way and there is nothing to tell the operator.
                _ = connection.as_mut() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = close.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
                }
            }
            lock(&open).remove(&id);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Where [`serve_connections`] takes its connections from: a listener, or in tests a script
/// of accept errors.
pub(crate) trait Accept: Send {
    fn next(&mut self) -> impl Future<Output = std::io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn next(&mut self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one connection must not take the listener with it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accept errors that concern one connection only, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

async fn healthz(State(probe): State<Probe>) -> Response {
    match probe.check().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unhealthy", "reason": reason.to_string()})),
        )
            .into_response(),
    }
}

/// Why `/healthz` answers 503: the reason it gives.
#[derive(Debug, thiserror::Error)]
enum Unhealthy {
    #[error("database: {}", .0.in_its_own_words())]
    Database(StorageError),
    #[error("database: no answer within {}", humantime::format_duration(*.0))]
    DatabaseSilent(Duration),
    #[error(
        "database not writable for {}: {error}",
        humantime::format_duration(*.for_how_long)
    )]
    NotWritable {
        for_how_long: Duration,
        error: String,
    },
    #[error("dispatcher: no round completed yet")]
    NoRound,
    #[error(
        "dispatcher: last round completed {} ago (limit {})",
        humantime::format_duration(*.age),
        humantime::format_duration(*.limit)
    )]
    Stalled { age: Duration, limit: Duration },
}

impl Probe {
    async fn check(&self) -> Result<(), Unhealthy> {
        let answered = tokio::time::timeout(DB_PROBE_TIMEOUT, self.db.ping()).await;
        match answered {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Unhealthy::Database(e)),
            Err(_) => return Err(Unhealthy::DatabaseSilent(DB_PROBE_TIMEOUT)),
        }
        if let Some(outage) = crate::outage::Outage::database().current() {
            return Err(Unhealthy::NotWritable {
                for_how_long: whole_seconds(outage.for_how_long),
                error: outage.error,
            });
        }
        match self.heartbeat.age() {
            None => Err(Unhealthy::NoRound),
            Some(age) if age > self.max_heartbeat_age => Err(Unhealthy::Stalled {
                age: whole_seconds(age),
                limit: self.max_heartbeat_age,
            }),
            Some(_) => Ok(()),
        }
    }
}

/// A span as a reason shows it: to the second.
fn whole_seconds(span: Duration) -> Duration {
    Duration::from_secs(span.as_secs())
}

async fn metrics_page(State(probe): State<Probe>) -> Response {
    // Gauges are global: two scrapes refreshing at once must not interleave their values.
    static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = SCRAPE.lock().await;
    match refresh_gauges(&probe.db, probe.clock.now()).await {
        Ok(()) => gauge!("shipwatch_database_up").set(1.0),
        Err(e) => {
            warn!(error = %e.in_its_own_words(), "metrics: cannot read the database; gauges are stale");
            gauge!("shipwatch_database_up").set(0.0);
        }
    }
    // Readable is not writable: a full disk still answers reads, and only the daemon's own
    // failed writes tell, the same outage `/healthz` reports.
    let writable = crate::outage::Outage::database().current().is_none();
    gauge!("shipwatch_database_writable").set(f64::from(u8::from(writable)));
    probe.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        probe.metrics.render(),
    )
        .into_response()
}

/// Sets every database gauge. Label sets that have no rows are set to 0, not left at their last
/// value, so that a drained outbox reads as empty.
async fn refresh_gauges(db: &Db, now: Millis) -> Result<(), StorageError> {
    let GaugeCounts {
        outbox,
        shipments,
        oldest_due,
        providers,
    } = db.gauge_counts(now).await?;
    for (state, n) in outbox.by_state() {
        gauge!("shipwatch_outbox", "state" => state).set(n as f64);
    }
    for tier in Tier::ALL {
        for status in Status::ALL {
            let n = shipments
                .iter()
                .find(|(t, s, _)| t == tier.as_str() && s == status.as_str())
                .map_or(0, |r| r.2);
            gauge!("shipwatch_shipments", "tier" => tier.as_str(), "status" => status.as_str())
                .set(n as f64);
        }
    }
    let lag = oldest_due.map_or(0, |due| now - due).max(0);
    gauge!("shipwatch_poll_lag_seconds").set(lag as f64 / 1000.0);
    for (provider, paused) in providers {
        gauge!("shipwatch_provider_paused", "provider" => provider)
            .set(f64::from(u8::from(paused)));
    }
    Ok(())
}

/// Counts the pipeline's events into the Prometheus counters until `events` is dropped.
/// Subscribes before returning, so every event emitted after the call is counted.
pub fn record_events(events: &Events) -> JoinHandle<()> {
    let mut receiver = events.subscribe();
    tokio::spawn(async move {
        loop {
            match receiver.recv().await {
                Ok(event) => count(&event),
                Err(RecvError::Lagged(missed)) => {
                    warn!(
                        missed,
                        "metrics fell behind the pipeline; some events were not counted"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

fn count(event: &PipelineEvent) {
    match event {
        PipelineEvent::StatusChanged { to, .. } => {
            counter!("shipwatch_status_changes_total", "status" => to.as_str()).increment(1);
        }
        PipelineEvent::PollFailed { provider, .. } => {
            counter!("shipwatch_polls_failed_total", "provider" => provider.clone()).increment(1);
        }
        PipelineEvent::ShipmentInvalid { .. } => {
            counter!("shipwatch_shipments_invalid_total").increment(1);
        }
        PipelineEvent::ProviderPaused { provider, .. } => {
            counter!("shipwatch_provider_pauses_total", "provider" => provider.clone())
                .increment(1);
        }
        // `stats` shows the stop; the event comes once per message it holds back.
        PipelineEvent::ChannelPaused { .. } => {}
        PipelineEvent::Delivered { channel, .. } => {
            counter!("shipwatch_notifications_total", "channel" => channel.as_str(), "result" => "sent")
                .increment(1);
        }
        PipelineEvent::DeliveryFailed {
            channel, retry_in, ..
        } => {
            let result = if retry_in.is_some() { "failed" } else { "dead" };
            counter!("shipwatch_notifications_total", "channel" => channel.as_str(), "result" => result)
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests;
