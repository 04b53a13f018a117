//! The daemon: the dispatcher and the sender side by side, from a config, until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::clock::SharedClock;
use crate::config::{AdapterSettings, Config, Http, SmsSettings};
use crate::dispatch::{Dispatcher, ProviderRuntime, Providers};
use crate::events::Events;
use crate::notify::Channel;
use crate::notify::email::Email;
use crate::notify::sender::Sender;
use crate::notify::sms_aliyun::AliyunSms;
use crate::notify::sms_http::HttpSms;
use crate::notify::webhook::Webhook;
use crate::providers::Provider;
use crate::providers::alibaba1688::Alibaba1688;
use crate::providers::kuaidi100::Kuaidi100;
use crate::providers::simulator::Simulator;
use crate::providers::taobao::Taobao;
use crate::storage::Db;

/// The one HTTP client all upstream APIs share (its connection pool included).
pub fn upstream_client(http: &Http) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("shipwatch/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(http.connect_timeout)
        .timeout(http.timeout)
        .build()
}

/// One adapter per configured provider, each with its token bucket.
pub fn build_providers(config: &Config, http: &reqwest::Client) -> Providers {
    config
        .providers
        .iter()
        .map(|(name, settings)| {
            let adapter: Arc<dyn Provider> = match &settings.adapter {
                AdapterSettings::Taobao(taobao) => {
                    Arc::new(Taobao::new(taobao.clone(), http.clone()))
                }
                AdapterSettings::Alibaba1688(alibaba) => {
                    Arc::new(Alibaba1688::new(alibaba.clone(), http.clone()))
                }
                AdapterSettings::Kuaidi100(kuaidi100) => {
                    Arc::new(Kuaidi100::new(kuaidi100.clone(), http.clone()))
                }
                AdapterSettings::Simulator => Arc::new(Simulator::new()),
            };
            let min_interval = settings
                .min_interval
                .unwrap_or_else(|| adapter.min_interval());
            let runtime = ProviderRuntime::new(name, adapter, settings.rate_limit)
                .with_min_interval(min_interval);
            (name.clone(), Arc::new(runtime))
        })
        .collect()
}

/// One delivery channel per enabled `[channels.*]` section.
pub fn build_channels(config: &Config) -> anyhow::Result<Vec<Arc<dyn Channel>>> {
    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    if let Some(webhook) = &config.channels.webhook {
        channels.push(Arc::new(Webhook::new(
            webhook.settings.clone(),
            Webhook::http_client()?,
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
            SmsSettings::Aliyun(aliyun) => {
                Arc::new(AliyunSms::new(aliyun.clone(), AliyunSms::http_client()?))
            }
            SmsSettings::Http(http) => {
                Arc::new(HttpSms::new(http.clone(), HttpSms::http_client()?))
            }
        });
    }
    Ok(channels)
}

pub struct Daemon {
    pub dispatcher: Arc<Dispatcher>,
    pub sender: Arc<Sender>,
    pub grace: Duration,
}

impl Daemon {
    pub fn new(
        config: &Config,
        db: Db,
        clock: SharedClock,
        events: Events,
    ) -> anyhow::Result<Daemon> {
        let http = upstream_client(&config.http)?;
        let dispatcher = Dispatcher::new(
            db.clone(),
            clock.clone(),
            config.tiers,
            config.polling,
            build_providers(config, &http),
            config.channels.rules(),
            events.clone(),
        );
        let sender = Sender::new(
            db,
            clock,
            config.delivery,
            build_channels(config)?,
            &config.channels.rules(),
            events,
            config.polling.scan_interval,
        );
        Ok(Daemon {
            dispatcher,
            sender,
            grace: config.shutdown_timeout,
        })
    }

    /// Runs until `shutdown` completes; then stops claiming work, lets in-flight polls and
    /// deliveries finish within the grace period, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let stop = CancellationToken::new();
        let dispatcher = tokio::spawn(self.dispatcher.run(stop.clone(), self.grace));
        let sender = tokio::spawn(self.sender.run(stop.clone(), self.grace));
        shutdown.await;
        info!("shutting down: no new work; waiting for polls and deliveries in flight");
        stop.cancel();
        let _ = tokio::join!(dispatcher, sender);
        info!("stopped");
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
