//! The daemon: the dispatcher and the sender side by side, from a config, until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::{Millis, SharedClock};
use crate::config::{Config, Http, SmsSettings};
use crate::dispatch::{Dispatcher, ProviderRuntime, Providers};
use crate::events::Events;
use crate::maintenance::{Maintenance, MaintenanceConfig};
use crate::notify::Channel;
use crate::notify::ChannelRule;
use crate::notify::dingtalk::Dingtalk;
use crate::notify::email::Email;
use crate::notify::feishu::Feishu;
use crate::notify::sender::Sender;
use crate::notify::sms_aliyun::AliyunSms;
use crate::notify::sms_http::HttpSms;
use crate::notify::webhook::Webhook;
use crate::notify::wechat::Wechat;
use crate::notify::wecom::Wecom;
use crate::service::Supervisor;
use crate::storage::{DAEMON_HEARTBEAT, DaemonIdentity, Db, DbQuota, Holds, StorageError};
use crate::workers::Grace;

/// The one HTTP client all upstream APIs share (its connection pool included).
pub fn upstream_client(http: &Http) -> reqwest::Result<reqwest::Client> {
    crate::upstream::client(http)
}

/// One adapter per configured provider, each with its token bucket.
pub fn build_providers(config: &Config, http: &reqwest::Client) -> Providers {
    crate::upstream::adapters(config, http)
        .into_iter()
        .map(|(name, adapter)| {
            let settings = &config.providers[&name];
            let min_interval = settings
                .min_interval
                .unwrap_or_else(|| adapter.min_interval());
            let subscriber = match &settings.adapter {
                crate::config::AdapterSettings::Kuaidi100(k) => {
                    crate::providers::kuaidi100_push::Subscriber::new(k, http.clone())
                }
                _ => None,
            };
            let runtime = ProviderRuntime::new(&name, adapter, settings.rate_limit)
                .with_min_interval(min_interval)
                .with_push(subscriber);
            (name, Arc::new(runtime))
        })
        .collect()
}

/// One delivery channel per enabled `[channels.*]` section.
pub fn build_channels(config: &Config) -> anyhow::Result<Vec<Arc<dyn Channel>>> {
    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    // One client for every HTTP channel: it follows no redirect, and keeps a connection pool per
    // host, so the channels' receivers stay apart.
    let client = crate::notify::no_redirect_client()?;
    if let Some(webhook) = &config.channels.webhook {
        channels.push(Arc::new(Webhook::new(
            webhook.settings.clone(),
            client.clone(),
            config.delivery.timeout,
        )));
    }
    if let Some(email) = &config.channels.email {
        let email = Email::new(email.settings.clone())
            .map_err(|e| anyhow::anyhow!("[channels.email] {e}"))?;
        channels.push(Arc::new(email));
    }
    if let Some(sms) = &config.channels.sms {
        channels.push(match &sms.settings {
            SmsSettings::Aliyun(aliyun) => Arc::new(AliyunSms::new(aliyun.clone(), client.clone())),
            SmsSettings::Http(http) => Arc::new(HttpSms::new(http.clone(), client.clone())),
        });
    }
    if let Some(dingtalk) = &config.channels.dingtalk {
        channels.push(Arc::new(Dingtalk::new(
            dingtalk.settings.clone(),
            client.clone(),
        )));
    }
    if let Some(wecom) = &config.channels.wecom {
        channels.push(Arc::new(Wecom::new(wecom.settings.clone(), client.clone())));
    }
    if let Some(feishu) = &config.channels.feishu {
        channels.push(Arc::new(Feishu::new(
            feishu.settings.clone(),
            client.clone(),
        )));
    }
    if let Some(wechat) = &config.channels.wechat {
        channels.push(Arc::new(Wechat::new(
            wechat.settings.clone(),
            client.clone(),
        )));
    }
    Ok(channels)
}

/// Readies the database for the daemon that holds its lock ([`Db::lock_for_daemon`]). No other
/// daemon runs on it, so claims left by one that died can go at once; and a restart is how an
/// operator says the credentials or the config are fixed, so provider stops are lifted.
/// `receipts` is where this daemon keeps its delivery receipts ([`Config::receipts_file`],
/// `storage::receipts`): those of the run before are read and marked first.
///
/// On PostgreSQL other daemons may be running on the database and holding claims: those are
/// left alone, and a dead daemon's claims run out with their leases.
pub async fn take_over(db: &Db, receipts: Option<&Path>, now: Millis) -> Result<(), StorageError> {
    if let Some(file) = receipts {
        // Before the claims are released: a receipt marks its delivery sent only while the row
        // is still under the claim that delivered it.
        let recovered = db.keep_receipts(file).await?;
        if recovered.marked > 0 {
            info!(
                marked_sent = recovered.marked,
                "deliveries accepted before the last run ended, their sent mark not yet written: marked sent now, not sent again"
            );
        }
        if recovered.ignored > 0 {
            warn!(
                ignored_lines = recovered.ignored,
                "lines of the delivery receipts that do not read back as receipts were ignored (cut short by a power cut, or not written by shipwatch); the deliveries they stood for may be sent again"
            );
        }
    }
    if !db.is_shared() {
        db.release_all_claims(now).await?;
    }
    db.clear_provider_pauses().await
}

/// This machine's name, as `stats` shows a daemon's host.
pub fn host_name() -> String {
    host_name_from(
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::env::var("HOSTNAME").ok(),
    )
}

/// The first of the kernel's name for the machine and `$HOSTNAME` that is not blank, trimmed;
/// `localhost` when neither is.
fn host_name_from(kernel: Option<String>, env: Option<String>) -> String {
    [kernel, env]
        .into_iter()
        .flatten()
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Keeps this daemon's row in the `daemons` table: refreshed every [`DAEMON_HEARTBEAT`] with
/// the polls and deliveries under way until `stop`. A failed write is logged and tried again at
/// the next beat; the work goes on without it.
async fn keep_presence(
    db: Db,
    clock: SharedClock,
    identity: DaemonIdentity,
    dispatcher: Arc<Dispatcher>,
    sender: Arc<Sender>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DAEMON_HEARTBEAT) => {}
        }
        let holds = Holds {
            polling: dispatcher.polls_in_flight() as i64,
            delivering: sender.deliveries_in_flight() as i64,
        };
        if let Err(e) = db.daemon_heartbeat(&identity, clock.now(), holds).await {
            tracing::debug!(error = %e, "could not refresh this daemon's row");
        }
    }
}

/// What a reload (SIGHUP, `systemctl reload shipwatch`) does with the config as `loaded`: swaps
/// in its providers, with their credentials, so that a renewed session takes effect without a
/// restart; revives the shipments flagged for a provider it did not define and now does; and
/// lifts the stops delivery channels put on themselves (SMS out of credit, a
/// webhook endpoint gone), since a reload is how an operator says the cause is fixed. Other
/// settings take effect at restart. A config that did not load is reported and the running
/// one kept. Every outcome is logged; nothing is returned.
pub async fn reload(
    loaded: anyhow::Result<Config>,
    dispatcher: &Dispatcher,
    sender: &Sender,
    api: Option<&crate::api::ApiState>,
) {
    let providers = loaded.and_then(|config| {
        let http = upstream_client(&config.http)?;
        if let Some(api) = api {
            let tokens = api.renew(&config);
            info!(
                tokens,
                "config reloaded: the shipments API's tokens renewed"
            );
        }
        Ok(build_providers(&config, &http))
    });
    match providers {
        Ok(providers) => {
            let names: Vec<String> = providers.keys().cloned().collect();
            match dispatcher.replace_providers(providers).await {
                Ok(()) => {
                    info!(
                        providers = ?names,
                        "config reloaded: providers and credentials renewed (other settings take effect at restart)"
                    );
                    // A provider the reload brings may be the one rows were flagged for.
                    if let Err(e) = dispatcher.revive_known_providers().await {
                        tracing::error!(error = %e, "could not recheck the shipments flagged for an unknown provider");
                    }
                }
                Err(e) => tracing::error!(error = %e, "config reload failed"),
            }
            if let Err(e) = sender.resume_stopped_channels().await {
                tracing::error!(error = %e, "could not lift the channel stops on reload");
            }
        }
        Err(e) => tracing::error!(
            error = %format!("{e:#}"),
            "config reload failed; keeping the running config"
        ),
    }
}

pub struct Daemon {
    pub dispatcher: Arc<Dispatcher>,
    pub sender: Arc<Sender>,
    /// The channels told of shipwatch's own incidents (`ops`).
    ops: Vec<Arc<dyn Channel>>,
    pub grace: Duration,
    db: Db,
    clock: SharedClock,
    events: Events,
    rules: Vec<ChannelRule>,
    maintenance: MaintenanceConfig,
    /// Where `/healthz` and `/metrics` are served, if anywhere.
    listen: Option<SocketAddr>,
    /// Where upstream's callbacks are served, if anywhere.
    public_listen: Option<SocketAddr>,
    /// How stale the dispatcher's heartbeat may grow before `/healthz` says unhealthy.
    max_heartbeat_age: Duration,
    /// The shipments API, served beside `/healthz` when `[api]` has tokens.
    pub api: Option<crate::api::ApiState>,
}

impl Daemon {
    pub fn new(
        config: &Config,
        db: Db,
        clock: SharedClock,
        events: Events,
    ) -> anyhow::Result<Daemon> {
        let http = upstream_client(&config.http)?;
        let rules = config.channels.rules();
        let dispatcher = Dispatcher::new(
            db.clone(),
            clock.clone(),
            config.tiers,
            config.polling,
            build_providers(config, &http),
            rules.clone(),
            events.clone(),
        );
        let channels = build_channels(config)?;
        // A paced channel's quota is the vendor's, for every daemon of a shared database together:
        // a robot that hears 20 a minute from each of two daemons locks itself for 10 minutes.
        for channel in &channels {
            if let Some(pace) = channel.pace() {
                DbQuota::share(&db, &DbQuota::channel_key(channel.kind().as_str()), pace);
            }
        }
        // The robots that hear of incidents share their channel (and its quota) with the sender.
        let ops = channels
            .iter()
            .filter(|c| rules.iter().any(|r| r.kind == c.kind() && r.alerts.ops))
            .cloned()
            .collect();
        let sender = Sender::new(
            db.clone(),
            clock.clone(),
            config.delivery,
            channels,
            &rules,
            events.clone(),
            config.polling.scan_interval,
        );
        Ok(Daemon {
            dispatcher,
            sender,
            ops,
            grace: config.shutdown_timeout,
            db: db.clone(),
            clock: clock.clone(),
            events,
            rules,
            maintenance: config.maintenance.clone(),
            listen: config.http.listen,
            public_listen: config.http.public_listen,
            // A round ends at the latest when a poll times out and frees its slot.
            max_heartbeat_age: (config.polling.timeout + config.polling.scan_interval) * 2,
            api: crate::api::ApiState::new(config, db.clone(), clock.clone()),
        })
    }

    /// Does what can fail at start: binds the `[http]` listener and starts the maintenance
    /// schedules. Nothing is claimed yet; [`Started::run`] sets the work going.
    pub async fn start(self) -> anyhow::Result<Started> {
        let stop = CancellationToken::new();
        let heartbeat = self.dispatcher.heartbeat();
        let maintenance = Maintenance::start(
            self.db.clone(),
            self.clock.clone(),
            self.maintenance.clone(),
            self.rules.clone(),
            self.events.clone(),
        )
        .await?;
        if let Some(listen) = self.listen {
            let metrics = crate::health::install_recorder();
            let routes = self
                .api
                .clone()
                .map_or_else(axum::Router::new, crate::api::router);
            let (bound, _) = crate::health::serve_with_routes(
                listen,
                self.db.clone(),
                heartbeat.clone(),
                self.max_heartbeat_age,
                metrics,
                self.clock.clone(),
                routes,
                stop.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}", cannot_listen(listen, &e)))?;
            crate::health::record_events(&self.events);
            if self.api.is_some() {
                info!(listen = %bound, "serving /healthz, /metrics and the shipments API under /v1");
            } else {
                info!(listen = %bound, "serving /healthz and /metrics");
            }
        }
        if let Some(listen) = self.public_listen {
            let (bound, _) = crate::callbacks::serve(listen, self.dispatcher.clone(), stop.clone())
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}",
                        cannot_listen(listen, &e).replace("[http] listen", "[http] public_listen")
                    )
                })?;
            info!(listen = %bound, "serving the upstream callbacks");
        }
        Ok(Started {
            daemon: self,
            maintenance,
            stop,
        })
    }

    /// [`Daemon::start`], then [`Started::run`] until `shutdown` completes (a second stop cuts
    /// nothing short).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.start()
            .await?
            .run(shutdown, std::future::pending())
            .await
            .map(|_| ())
    }
}

/// The one line that says the `[http]` listener cannot be had, and what to do.
fn cannot_listen(listen: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("address {listen} is in use; free it or change [http] listen")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!("address {listen} is not an address of this machine; change [http] listen")
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "not allowed to listen on {listen} (ports below 1024 need privileges); change [http] listen"
        ),
        _ => format!("cannot listen on {listen}: {e}; change [http] listen"),
    }
}

/// How a daemon's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Everything in flight finished, or was given back when the grace ran out.
    Drained,
    /// A second signal ended the drain early: work in flight was given back at once.
    CutShort,
}

/// A daemon whose listener is bound and whose maintenance runs; see [`Started::run`].
pub struct Started {
    daemon: Daemon,
    maintenance: Maintenance,
    stop: CancellationToken,
}

impl Started {
    /// Runs until `shutdown` completes; then stops claiming work, lets in-flight polls,
    /// deliveries and maintenance runs finish within the grace period, and returns. If `hurry`
    /// completes during that drain (a second SIGTERM or Ctrl-C), the grace ends there: what is
    /// still in flight is given back (claims released, leases ended) and the run returns
    /// [`Stopped::CutShort`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        hurry: impl Future<Output = ()>,
    ) -> anyhow::Result<Stopped> {
        let Started {
            daemon: this,
            maintenance,
            stop,
        } = self;
        let supervisor = Supervisor::from_env();
        let heartbeat = this.dispatcher.heartbeat();
        if let Some(interval) = supervisor.watchdog_interval() {
            // Pings go out every half interval, each one needing a round since the last.
            this.dispatcher.cap_idle_wait(interval / 4);
        }
        let grace = Grace::new(this.grace);
        let identity = DaemonIdentity::new(
            &host_name(),
            std::process::id(),
            env!("CARGO_PKG_VERSION"),
            this.clock.now(),
        );
        if let Err(e) = this.db.register_daemon(&identity).await {
            tracing::warn!(error = %e, "could not record this daemon in the database; `stats` will not show it");
        }
        // The row stays fresh through the drain too: the work in flight is still this daemon's.
        let present = CancellationToken::new();
        let presence = tokio::spawn(keep_presence(
            this.db.clone(),
            this.clock.clone(),
            identity.clone(),
            this.dispatcher.clone(),
            this.sender.clone(),
            present.clone(),
        ));
        let dispatcher = tokio::spawn(this.dispatcher.clone().run(stop.clone(), grace.clone()));
        let sender = tokio::spawn(this.sender.clone().run(stop.clone(), grace.clone()));
        let ops = tokio::spawn(crate::notify::ops::run(
            this.events.clone(),
            this.ops.clone(),
            this.clock.clone(),
            stop.clone(),
            grace.clone(),
        ));
        supervisor.ready(&summary(&this.db, &this.clock).await);
        let watchdog = tokio::spawn(supervisor.clone().run_watchdog(heartbeat, stop.clone()));
        let (db, clock) = (this.db.clone(), this.clock.clone());
        let status = tokio::spawn(report_status(supervisor.clone(), stop.clone(), move || {
            let (db, clock) = (db.clone(), clock.clone());
            async move { summary(&db, &clock).await }
        }));
        shutdown.await;
        info!("shutting down: no new work; waiting for polls and deliveries in flight");
        supervisor.stopping();
        stop.cancel();
        let drain = async {
            tokio::join!(maintenance.shutdown(&grace), async {
                let _ = tokio::join!(dispatcher, sender, ops, watchdog, status);
            })
        };
        tokio::pin!(drain);
        let (maintenance_done, _) = tokio::select! {
            done = &mut drain => done,
            () = hurry => {
                tracing::warn!(
                    "second stop signal: stopping now; polls and deliveries in flight are given back and run again at the next start"
                );
                grace.cut_short();
                drain.await
            }
        };
        present.cancel();
        let _ = presence.await;
        if let Err(e) = this.db.leave(&identity.id).await {
            tracing::warn!(error = %e, "could not take this daemon's row out of the database");
        }
        if !maintenance_done {
            tracing::warn!(
                "a maintenance job was cut short by the shutdown; it runs again on schedule"
            );
        }
        info!("stopped");
        Ok(if grace.is_cut() {
            Stopped::CutShort
        } else {
            Stopped::Drained
        })
    }
}

/// A one-line summary for systemd's STATUS=.
async fn summary(db: &Db, clock: &SharedClock) -> String {
    let now = clock.now();
    match db.status_counts(now).await {
        Ok(counts) => format!(
            "tracking {} shipments, {} due, lag {}s, {} notifications pending",
            counts.polled,
            counts.due_now,
            counts.lag_seconds(now),
            counts.pending
        ),
        Err(e) => format!("database unreadable: {e}"),
    }
}

/// Tells systemd the [`summary`] every [`STATUS_EVERY`] until `stop`, when supervised.
async fn report_status<F: Future<Output = String>>(
    supervisor: Supervisor,
    stop: CancellationToken,
    mut summary: impl FnMut() -> F,
) {
    if !supervisor.is_enabled() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STATUS_EVERY) => {
                supervisor.status(&summary().await);
            }
        }
    }
}

/// How often `systemctl status` gets a fresh summary.
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// The first and the second SIGINT (Ctrl-C) or SIGTERM, as two futures: the first starts the
/// graceful stop, the second cuts its grace short. The handlers are installed by this call, as
/// [`shutdown_signal`]'s are. Call it from within the runtime.
pub fn stop_signals() -> (
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
) {
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let tokens = [first.clone(), second.clone()];
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::spawn(async move {
                    for token in tokens {
                        tokio::select! {
                            _ = interrupt.recv() => {}
                            _ = term.recv() => {}
                        }
                        token.cancel();
                    }
                });
            }
            // Without handlers the default dispositions still end the process.
            (term, interrupt) => {
                let e = term.err().or(interrupt.err());
                tracing::error!(error = ?e, "cannot handle SIGTERM and SIGINT: they will end the process without a clean stop");
            }
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        for token in tokens {
            let _ = tokio::signal::ctrl_c().await;
            token.cancel();
        }
    });
    (first.cancelled_owned(), second.cancelled_owned())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed by this call, not when the
/// future is first awaited: the daemon awaits it only once its workers are up, and a SIGTERM in
/// between (systemd stopping a daemon that has just said it started) would otherwise kill the
/// process instead of stopping it cleanly. Call it from within the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                // Without handlers the default dispositions still end the process.
                (term, interrupt) => {
                    let e = term.err().or(interrupt.err());
                    tracing::error!(error = ?e, "cannot handle SIGTERM and SIGINT: they will end the process without a clean stop");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_kernels_name_else_hostname_else_localhost() {
        let some = |name: &str| Some(name.to_owned());
        assert_eq!(host_name_from(some("shop-1\n"), some("other")), "shop-1");
        for blank in [None, some(""), some(" \n")] {
            assert_eq!(host_name_from(blank.clone(), some("shop-2")), "shop-2");
            assert_eq!(host_name_from(blank.clone(), some("")), "localhost");
            assert_eq!(host_name_from(blank, None), "localhost");
        }
    }

    #[test]
    fn a_listener_refused_says_why_and_what_to_change() {
        use std::io::{Error, ErrorKind};
        let listen: SocketAddr = "0.0.0.0:80".parse().unwrap();
        for (kind, said) in [
            (
                ErrorKind::AddrInUse,
                "address 0.0.0.0:80 is in use; free it or change [http] listen",
            ),
            (
                ErrorKind::AddrNotAvailable,
                "address 0.0.0.0:80 is not an address of this machine; change [http] listen",
            ),
            (
                ErrorKind::PermissionDenied,
                "not allowed to listen on 0.0.0.0:80 (ports below 1024 need privileges); change [http] listen",
            ),
            (
                ErrorKind::OutOfMemory,
                "cannot listen on 0.0.0.0:80: the OS's words; change [http] listen",
            ),
        ] {
            let e = Error::new(kind, "the OS's words");
            assert_eq!(cannot_listen(listen, &e), said, "{kind:?}");
        }
    }

    /// `systemctl status` hears the summary every 30 s while supervised, and nothing after the
    /// stop; unsupervised, nothing is reported and the task ends at once.
    #[cfg(target_os = "linux")]
    #[tokio::test(start_paused = true)]
    async fn the_status_is_told_every_thirty_seconds_while_supervised() {
        let systemd = crate::service::FakeSystemd::bind("status-test");
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        let summary = move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { format!("summary {n}") }
        };
        let stop = CancellationToken::new();
        let reporting = tokio::spawn(report_status(
            systemd.supervisor(None),
            stop.clone(),
            summary.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(systemd.heard().is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(systemd.heard(), ["STATUS=summary 1\n"]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            systemd.heard(),
            ["STATUS=summary 2\n", "STATUS=summary 3\n"]
        );
        stop.cancel();
        reporting.await.unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(systemd.heard().is_empty());

        let unsupervised = tokio::time::timeout(
            Duration::from_secs(3600),
            report_status(Supervisor::disabled(), CancellationToken::new(), summary),
        )
        .await;
        assert!(
            unsupervised.is_ok(),
            "an unsupervised daemon reports nothing"
        );
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
