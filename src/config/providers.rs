//! The `[providers.NAME]` sections: the raw keys every kind may write, and their resolution into
//! the settings of one upstream adapter.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::secrets::SecretResolver;
use super::{ConfigError, HumanDuration, POLL_HORIZON, RateLimit, endpoint, invalid, required};
use crate::providers::alibaba1688::{self, Alibaba1688Config};
use crate::providers::kuaidi100::{self, Kuaidi100Config};
use crate::providers::taobao::{self, SignMethod, TaobaoConfig};

/// The provider kinds a `[providers.NAME]` section may name.
pub const PROVIDER_KINDS: [&str; 4] = ["taobao", "alibaba1688", "kuaidi100", "simulator"];

/// One configured upstream.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub rate_limit: Option<RateLimit>,
    /// The shortest interval between two polls of one shipment; `None` takes the provider's
    /// own floor (30m for kuaidi100, none for the others).
    pub min_interval: Option<Duration>,
    pub adapter: AdapterSettings,
}

#[derive(Debug, Clone)]
pub enum AdapterSettings {
    Taobao(TaobaoConfig),
    Alibaba1688(Alibaba1688Config),
    Kuaidi100(Kuaidi100Config),
    /// Moves each order one step along its journey every `step`.
    Simulator {
        step: Duration,
    },
}

impl AdapterSettings {
    pub fn kind(&self) -> &'static str {
        match self {
            AdapterSettings::Taobao(_) => "taobao",
            AdapterSettings::Alibaba1688(_) => "alibaba1688",
            AdapterSettings::Kuaidi100(_) => "kuaidi100",
            AdapterSettings::Simulator { .. } => "simulator",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    kind: String,
    rate_limit: Option<RateLimit>,
    min_interval: Option<HumanDuration>,
    endpoint: Option<String>,
    app_key: Option<String>,
    app_secret: Option<String>,
    app_secret_file: Option<PathBuf>,
    session: Option<String>,
    session_file: Option<PathBuf>,
    sign_method: Option<String>,
    seller_nick: Option<String>,
    step: Option<HumanDuration>,
    customer: Option<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    access_token: Option<String>,
    access_token_file: Option<PathBuf>,
}

pub(super) fn resolve_provider(
    name: &str,
    raw: RawProvider,
    secrets: &SecretResolver,
) -> Result<ProviderSettings, ConfigError> {
    let section = format!("[providers.{name}]");
    let adapter = match raw.kind.as_str() {
        "taobao" => {
            let app_key = required(&section, "app_key", raw.app_key)?;
            let app_secret = secrets.resolve(
                &section,
                name,
                "app_secret",
                raw.app_secret,
                raw.app_secret_file,
            )?;
            let session =
                secrets.resolve(&section, name, "session", raw.session, raw.session_file)?;
            let sign_method = match raw.sign_method {
                None => SignMethod::default(),
                Some(m) => m
                    .parse()
                    .map_err(|e| invalid(format!("{section} sign_method: {e}")))?,
            };
            let endpoint = endpoint(&section, raw.endpoint, taobao::DEFAULT_ENDPOINT)?;
            AdapterSettings::Taobao(TaobaoConfig {
                endpoint,
                app_key,
                app_secret,
                session,
                sign_method,
                seller_nick: raw.seller_nick.filter(|nick| !nick.trim().is_empty()),
            })
        }
        "alibaba1688" => {
            let app_key = required(&section, "app_key", raw.app_key)?;
            let app_secret = secrets.resolve(
                &section,
                name,
                "app_secret",
                raw.app_secret,
                raw.app_secret_file,
            )?;
            let access_token = secrets.resolve(
                &section,
                name,
                "access_token",
                raw.access_token,
                raw.access_token_file,
            )?;
            let endpoint = endpoint(&section, raw.endpoint, alibaba1688::DEFAULT_ENDPOINT)?;
            AdapterSettings::Alibaba1688(Alibaba1688Config {
                endpoint,
                app_key,
                app_secret,
                access_token,
            })
        }
        "kuaidi100" => {
            let customer = required(&section, "customer", raw.customer)?;
            let key = secrets.resolve(&section, name, "key", raw.key, raw.key_file)?;
            let endpoint = endpoint(&section, raw.endpoint, kuaidi100::DEFAULT_ENDPOINT)?;
            AdapterSettings::Kuaidi100(Kuaidi100Config {
                endpoint,
                customer,
                key,
            })
        }
        "simulator" => AdapterSettings::Simulator {
            step: raw
                .step
                .map_or(crate::providers::simulator::DEFAULT_STEP, |d| d.0),
        },
        other => {
            return Err(invalid(format!(
                "{section} kind = {other:?} is not a provider kind; expected {}",
                PROVIDER_KINDS.join(", ")
            )));
        }
    };
    if raw.min_interval.is_some_and(|d| d.0 > POLL_HORIZON) {
        return Err(invalid(format!(
            "{section} min_interval is too long; the longest is 366d"
        )));
    }
    Ok(ProviderSettings {
        rate_limit: raw.rate_limit,
        min_interval: raw.min_interval.map(|d| d.0),
        adapter,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn kuaidi100_and_1688_providers_parse_with_their_own_fields() {
        let config = parse(
            "[providers.kd]\nkind = \"kuaidi100\"\ncustomer = \"C1\"\nkey = \"k\"\nmin_interval = \"1s\"",
        )
        .unwrap();
        let kd = &config.providers["kd"];
        assert_eq!(kd.min_interval, Some(Duration::from_secs(1)));
        match &kd.adapter {
            AdapterSettings::Kuaidi100(k) => {
                assert_eq!(k.customer, "C1");
                assert_eq!(k.key.expose(), "k");
                assert_eq!(k.endpoint, kuaidi100::DEFAULT_ENDPOINT);
            }
            other => panic!("{other:?}"),
        }
        let config = parse(
            "[providers.a]\nkind = \"alibaba1688\"\napp_key = \"1000000\"\napp_secret = \"test123\"\naccess_token = \"t\"",
        )
        .unwrap();
        match &config.providers["a"].adapter {
            AdapterSettings::Alibaba1688(a) => {
                assert_eq!(a.app_key, "1000000");
                assert_eq!(a.access_token.expose(), "t");
                assert_eq!(a.endpoint, alibaba1688::DEFAULT_ENDPOINT);
            }
            other => panic!("{other:?}"),
        }
        let err = parse("[providers.kd]\nkind = \"kuaidi100\"\nkey = \"k\"").unwrap_err();
        assert!(err.to_string().contains("needs customer"), "{err}");
    }
}
