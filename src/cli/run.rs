//! `shipwatch run`: start the daemon on the config's database, and reload its providers and
//! credentials on SIGHUP.

use std::sync::Arc;

use anyhow::{Result, bail};

use crate::clock::{Clock, SystemClock};
use crate::daemon::{Daemon, shutdown_signal};
use crate::events::Events;
use crate::storage::Db;

use super::{Global, require_config};

pub(super) async fn run_daemon(global: &Global) -> Result<()> {
    let mut config = require_config(global)?;
    if let Some(db) = &global.db {
        config.database = db.clone();
    }
    if config.providers.is_empty() {
        bail!(
            "the config defines no providers: add a [providers.NAME] section (see deploy/shipwatch.example.toml)"
        );
    }
    // Checked before opening: a database shipwatch creates is 0600 already.
    let mut exposed = crate::exposure::secret_warnings(&config);
    exposed.extend(crate::exposure::database_warnings(&config.database));
    for warning in &exposed {
        tracing::warn!("{warning}");
    }
    let db = Db::open(&config.database, config.synchronous).await?;
    let _lock = Db::lock_for_daemon(&config.database)?;
    // No other daemon runs on this database: claims left by one that died can go at once.
    db.release_all_claims(SystemClock.now()).await?;
    // A restart is how an operator says the credentials or the config are fixed.
    db.clear_provider_pauses().await?;
    let daemon = Daemon::new(
        &config,
        db.clone(),
        Arc::new(SystemClock),
        Events::default(),
    )?;
    // Both handlers are in place before the daemon says it started: from that line on, a SIGTERM
    // stops it cleanly and a SIGHUP reloads it (their default dispositions would kill it).
    let shutdown = shutdown_signal();
    let reloader = tokio::spawn(reload_on_hangup(
        global.clone(),
        daemon.dispatcher.clone(),
        daemon.sender.clone(),
    ));
    tracing::info!(
        database = %config.database.display(),
        providers = ?config.providers.keys().collect::<Vec<_>>(),
        channels = ?config.channels.rules().iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        "shipwatch started"
    );
    let outcome = daemon.run(shutdown).await;
    reloader.abort();
    db.close().await;
    outcome?;
    Ok(())
}

/// SIGHUP (`systemctl reload shipwatch`) re-reads the config and swaps in its providers, with
/// their credentials: a renewed session takes effect without a restart. It also lifts the stops
/// delivery channels put on themselves (SMS out of credit, a webhook endpoint gone): a reload is
/// how an operator says the cause is fixed. A config that does not load is reported and the
/// running one kept. The SIGHUP handler is installed by the call, before the returned future is
/// first polled.
fn reload_on_hangup(
    global: Global,
    dispatcher: Arc<crate::dispatch::Dispatcher>,
    sender: Arc<crate::notify::sender::Sender>,
) -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let Ok(mut hangup) = hangup else {
                return;
            };
            while hangup.recv().await.is_some() {
                let loaded = require_config(&global).and_then(|config| {
                    let http = crate::daemon::upstream_client(&config.http)?;
                    Ok(crate::daemon::build_providers(&config, &http))
                });
                match loaded {
                    Ok(providers) => {
                        let names: Vec<String> = providers.keys().cloned().collect();
                        match dispatcher.replace_providers(providers).await {
                            Ok(()) => tracing::info!(
                                providers = ?names,
                                "config reloaded: providers and credentials renewed (other settings take effect at restart)"
                            ),
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
        }
        #[cfg(not(unix))]
        {
            let _ = (global, dispatcher, sender);
        }
    }
}
