//! `shipwatch run`: start the daemon on the config's database, and reload its providers and
//! credentials on SIGHUP.

use std::sync::Arc;

use anyhow::{Result, bail};

use crate::clock::{Clock, SystemClock};
use crate::daemon::{Daemon, Stopped, stop_signals};
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
    let mut exposed: Vec<String> = config.tiers.order_warning().into_iter().collect();
    exposed.extend(crate::exposure::secret_warnings(&config));
    if let Some(file) = config.database.file() {
        exposed.extend(crate::exposure::database_warnings(file));
    }
    for warning in &exposed {
        tracing::warn!("{warning}");
    }
    let db = Db::open(&config.database, config.synchronous).await?;
    let _lock = match config.database.file() {
        Some(file) => Some(Db::lock_for_daemon(file)?),
        None => None,
    };
    crate::daemon::take_over(&db, config.receipts_file().as_deref(), SystemClock.now()).await?;
    let daemon = Daemon::new(
        &config,
        db.clone(),
        Arc::new(SystemClock),
        Events::default(),
    )?;
    // Both handlers are in place before the daemon says it started: from that line on, a SIGTERM
    // stops it cleanly and a SIGHUP reloads it (their default dispositions would kill it).
    let (shutdown, hurry) = stop_signals();
    let reloader = tokio::spawn(reload_on_hangup(
        global.clone(),
        daemon.dispatcher.clone(),
        daemon.sender.clone(),
        daemon.api.clone(),
    ));
    // What can fail at start (the listener, the schedules) fails before the daemon says it
    // started, and before systemd hears it is ready.
    let started = match daemon.start().await {
        Ok(started) => started,
        Err(e) => {
            reloader.abort();
            db.close().await;
            return Err(e);
        }
    };
    tracing::info!(
        database = %config.database,
        providers = ?config.providers.keys().collect::<Vec<_>>(),
        channels = ?config.channels.rules().iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        "shipwatch started"
    );
    let outcome = started.run(shutdown, hurry).await;
    reloader.abort();
    db.close().await;
    match outcome? {
        Stopped::Drained => Ok(()),
        Stopped::CutShort => bail!(
            "stopped at a second signal before the work in flight finished; it was given back and runs again at the next start"
        ),
    }
}

/// Reloads the daemon (see [`crate::daemon::reload`]) on every SIGHUP, with the config as it
/// reads then. The SIGHUP handler is installed by the call, before the returned future is first
/// polled.
fn reload_on_hangup(
    global: Global,
    dispatcher: Arc<crate::dispatch::Dispatcher>,
    sender: Arc<crate::notify::sender::Sender>,
    api: Option<crate::api::ApiState>,
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
                crate::daemon::reload(require_config(&global), &dispatcher, &sender, api.as_ref())
                    .await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (global, dispatcher, sender, api);
        }
    }
}
