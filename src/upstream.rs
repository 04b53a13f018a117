//! The upstream APIs a config names: the one HTTP client they share, and one adapter per
//! `[providers.NAME]`, which the daemon polls through; and the rules each kind of provider sets
//! for a shipment, which intake checks without building a client or an adapter.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{AdapterSettings, Config, Http};
use crate::providers::alibaba1688::{self, Alibaba1688};
use crate::providers::kuaidi100::{self, Kuaidi100};
use crate::providers::simulator::Simulator;
use crate::providers::taobao::{self, Taobao};
use crate::providers::{Provider, TrackRequest, UnfitRequest};

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

/// What a shipment lacks for a provider of this kind: the rules its adapter's `check` applies
/// when the dispatcher picks the row up, without a client or an adapter built.
pub fn check(settings: &AdapterSettings, request: &TrackRequest) -> Result<(), UnfitRequest> {
    match settings {
        AdapterSettings::Taobao(_) => taobao::check(request),
        AdapterSettings::Alibaba1688(_) => alibaba1688::check(request),
        AdapterSettings::Kuaidi100(_) => kuaidi100::check(request),
        AdapterSettings::Simulator { .. } => Ok(()),
    }
}
