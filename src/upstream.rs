//! The upstream APIs a config names: the one HTTP client they share, and one adapter per
//! `[providers.NAME]`. Intake checks new shipments against these adapters and the daemon polls
//! through them, so both build them here.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{AdapterSettings, Config, Http};
use crate::providers::Provider;
use crate::providers::alibaba1688::Alibaba1688;
use crate::providers::kuaidi100::Kuaidi100;
use crate::providers::simulator::Simulator;
use crate::providers::taobao::Taobao;

/// The one HTTP client all upstream APIs share (its connection pool included).
pub fn client(http: &Http) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("shipwatch/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(http.connect_timeout)
        .timeout(http.timeout)
        .build()
}

/// One adapter per configured provider, by name.
pub fn adapters(config: &Config, http: &reqwest::Client) -> BTreeMap<String, Arc<dyn Provider>> {
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
                AdapterSettings::Simulator { step } => Arc::new(Simulator::new(*step)),
            };
            (name.clone(), adapter)
        })
        .collect()
}
