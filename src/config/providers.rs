//! The `[providers.NAME]` sections: the raw keys every kind may write, and their resolution into
//! the settings of one upstream adapter.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::secrets::SecretResolver;
use super::{ConfigError, HumanDuration, POLL_HORIZON, RateLimit, endpoint, invalid, required};
use crate::providers::alibaba1688::{self, Alibaba1688Config};
use crate::providers::kuaidi100::{self, Kuaidi100Config};
use crate::providers::kuaidi100_push::{self, PushConfig};
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
    mode: Option<String>,
    callback_url: Option<String>,
    salt: Option<String>,
    salt_file: Option<PathBuf>,
    fallback_poll: Option<HumanDuration>,
    subscribe_endpoint: Option<String>,
}

pub(super) fn resolve_provider(
    name: &str,
    raw: RawProvider,
    secrets: &SecretResolver,
) -> Result<ProviderSettings, ConfigError> {
    let section = format!("[providers.{name}]");
    if raw.kind != "kuaidi100" {
        refuse_push_keys(
            &section,
            [
                ("mode", raw.mode.is_some()),
                ("callback_url", raw.callback_url.is_some()),
                ("salt", raw.salt.is_some() || raw.salt_file.is_some()),
                ("fallback_poll", raw.fallback_poll.is_some()),
                ("subscribe_endpoint", raw.subscribe_endpoint.is_some()),
            ],
        )?;
    }
    let (rate_limit, min_interval) = (raw.rate_limit, raw.min_interval);
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
            let push = match raw.mode.as_deref().map(str::trim) {
                None | Some("query") => {
                    refuse_push_keys(
                        &section,
                        [
                            ("callback_url", raw.callback_url.is_some()),
                            ("salt", raw.salt.is_some() || raw.salt_file.is_some()),
                            ("fallback_poll", raw.fallback_poll.is_some()),
                            ("subscribe_endpoint", raw.subscribe_endpoint.is_some()),
                        ],
                    )?;
                    None
                }
                Some("push") => {
                    let Some(callback_url) = raw.callback_url else {
                        return Err(invalid(format!(
                            "{section} mode = \"push\" needs callback_url, the public https URL Kuaidi100 will post each change to (e.g. https://shop.example/callbacks/kuaidi100/{name})"
                        )));
                    };
                    check_callback_url(&section, &callback_url)?;
                    let salt = secrets.resolve(&section, name, "salt", raw.salt, raw.salt_file)?;
                    let subscribe_endpoint = match raw.subscribe_endpoint {
                        Some(url) => {
                            super::check_url(&section, "subscribe_endpoint", &url)?;
                            url
                        }
                        None => kuaidi100_push::subscribe_endpoint_beside(&endpoint),
                    };
                    let fallback_poll = raw.fallback_poll.map(|d| d.0);
                    if fallback_poll.is_some_and(|d| d.is_zero() || d > POLL_HORIZON) {
                        return Err(invalid(format!(
                            "{section} fallback_poll must be longer than 0s and at most 366d"
                        )));
                    }
                    Some(PushConfig {
                        subscribe_endpoint,
                        callback_url,
                        salt,
                        fallback_poll,
                    })
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "{section} mode = {:?} is not a Kuaidi100 mode; expected \"query\" (the real-time query, the default) or \"push\" (subscription push)",
                        crate::shown::for_terminal(other)
                    )));
                }
            };
            AdapterSettings::Kuaidi100(Kuaidi100Config {
                endpoint,
                customer,
                key,
                push,
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
    if min_interval.is_some_and(|d| d.0 > POLL_HORIZON) {
        return Err(invalid(format!(
            "{section} min_interval is too long; the longest is 366d"
        )));
    }
    Ok(ProviderSettings {
        rate_limit,
        min_interval: min_interval.map(|d| d.0),
        adapter,
    })
}

/// The push keys mean nothing outside a Kuaidi100 provider in push mode: one given there is a
/// mistake worth a line rather than a setting silently ignored.
fn refuse_push_keys<const N: usize>(
    section: &str,
    keys: [(&str, bool); N],
) -> Result<(), ConfigError> {
    match keys.iter().find(|(_, given)| *given) {
        Some((key, _)) => Err(invalid(format!(
            "{section} {key} is only for kind = \"kuaidi100\" with mode = \"push\""
        ))),
        None => Ok(()),
    }
}

/// Kuaidi100 posts to the callback URL from the internet: it must be an absolute http(s) URL
/// with a host, and not a loopback or private address Kuaidi100 could never reach. https is
/// expected (the salt signs the body, but the buyer's trace travels in it); plain http is
/// accepted because Kuaidi100's own documentation says its push supports http by default and
/// https on request (callbackurl, https://api.kuaidi100.com/document/5f0ffa8f2977d50a94e1023c).
fn check_callback_url(section: &str, url: &str) -> Result<(), ConfigError> {
    super::check_url(section, "callback_url", url)?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| invalid(format!("{section} callback_url is not a URL ({e})")))?;
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(invalid(format!(
            "{section} callback_url has no host; give the public URL Kuaidi100 will call, such as https://shop.example/callbacks/kuaidi100/NAME"
        )));
    };
    let local = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| match ip {
                std::net::IpAddr::V4(v4) => {
                    v4.is_loopback() || v4.is_private() || v4.is_unspecified() || v4.is_link_local()
                }
                std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
            });
    if local {
        return Err(invalid(format!(
            "{section} callback_url points at {host}, which Kuaidi100 cannot reach from the internet; give the public URL of the reverse proxy in front of [http] public_listen"
        )));
    }
    Ok(())
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

#[cfg(test)]
mod push_tests {
    use super::super::tests::parse;
    use super::*;

    const PUSH: &str = "[http]\npublic_listen = \"127.0.0.1:9465\"\n[providers.kd]\nkind = \"kuaidi100\"\ncustomer = \"C1\"\nkey = \"k\"\nmode = \"push\"\n";

    fn push_of(text: &str) -> PushConfig {
        let config = parse(text).unwrap();
        match &config.providers["kd"].adapter {
            AdapterSettings::Kuaidi100(k) => k.push.clone().expect("push mode"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn push_mode_reads_its_keys() {
        let push = push_of(&format!(
            "{PUSH}callback_url = \"https://shop.example/callbacks/kuaidi100/kd\"\nsalt = \"s4lt\"\nfallback_poll = \"6h\"\n"
        ));
        assert_eq!(
            push.callback_url,
            "https://shop.example/callbacks/kuaidi100/kd"
        );
        assert_eq!(push.salt.expose(), "s4lt");
        assert_eq!(push.fallback_poll, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(
            push.subscribe_endpoint,
            kuaidi100_push::DEFAULT_SUBSCRIBE_ENDPOINT
        );
        let quiet = push_of(&format!(
            "{PUSH}callback_url = \"https://shop.example/k\"\nsalt = \"s\"\nendpoint = \"http://127.0.0.1:7/poll/query.do\"\n"
        ));
        assert_eq!(quiet.fallback_poll, None, "off by default");
        // As long as a tier may be, and no longer.
        let longest = push_of(&format!(
            "{PUSH}callback_url = \"https://shop.example/k\"\nsalt = \"s\"\nfallback_poll = \"366d\"\n"
        ));
        assert_eq!(longest.fallback_poll, Some(POLL_HORIZON));
        // A public address is taken as it is.
        let public = push_of(&format!(
            "{PUSH}callback_url = \"https://203.0.113.7/k\"\nsalt = \"s\"\n"
        ));
        assert_eq!(public.callback_url, "https://203.0.113.7/k");
        assert_eq!(quiet.subscribe_endpoint, "http://127.0.0.1:7/poll");
        // Query mode is the default and has no push.
        let config =
            parse("[providers.kd]\nkind = \"kuaidi100\"\ncustomer = \"C1\"\nkey = \"k\"").unwrap();
        assert!(
            matches!(&config.providers["kd"].adapter, AdapterSettings::Kuaidi100(k) if k.push.is_none())
        );
    }

    #[test]
    fn each_missing_or_bad_push_key_is_one_line() {
        let cases = [
            (PUSH.to_owned(), "needs callback_url"),
            (format!("{PUSH}callback_url = \"https://shop.example/k\"\n"), "salt"),
            (format!("{PUSH}callback_url = \"ftp://shop.example/k\"\nsalt = \"s\"\n"), "callback_url has the scheme ftp"),
            (format!("{PUSH}callback_url = \"https://127.0.0.1/k\"\nsalt = \"s\"\n"), "Kuaidi100 cannot reach"),
            (format!("{PUSH}callback_url = \"https://localhost/k\"\nsalt = \"s\"\n"), "Kuaidi100 cannot reach"),
            (format!("{PUSH}callback_url = \"https://shop.example/k\"\nsalt = \"s\"\nfallback_poll = \"0s\"\n"), "fallback_poll must be longer than 0s"),
            (format!("{PUSH}callback_url = \"https://shop.example/k\"\nsalt = \"s\"\nfallback_poll = \"367d\"\n"), "fallback_poll must be longer than 0s and at most 366d"),
            (PUSH.replace("\"push\"", "\"pull\""), "is not a Kuaidi100 mode"),
            (
                PUSH.replace("[http]\npublic_listen = \"127.0.0.1:9465\"\n", "")
                    + "callback_url = \"https://shop.example/k\"\nsalt = \"s\"\n",
                "needs [http] public_listen",
            ),
            (
                "[providers.kd]\nkind = \"kuaidi100\"\ncustomer = \"C1\"\nkey = \"k\"\nsalt = \"s\"\n".to_owned(),
                "salt is only for kind = \"kuaidi100\" with mode = \"push\"",
            ),
            (
                "[providers.sim]\nkind = \"simulator\"\nmode = \"push\"\n".to_owned(),
                "mode is only for kind = \"kuaidi100\"",
            ),
            (
                "[providers.sim]\nkind = \"simulator\"\nsalt_file = \"kd.salt\"\n".to_owned(),
                "salt is only for kind = \"kuaidi100\"",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:9464\"\npublic_listen = \"127.0.0.1:9464\"\n".to_owned(),
                "public_listen must differ from listen",
            ),
            (
                "[http]\npublic_listen = \"nowhere\"\n".to_owned(),
                "[http] public_listen is not an address",
            ),
        ];
        let unreachable = [
            "10.0.0.5",
            "192.168.1.2",
            "0.0.0.0",
            "169.254.1.1",
            "[::1]",
            "[::]",
        ]
        .map(|host| {
            (
                format!("{PUSH}callback_url = \"https://{host}/k\"\nsalt = \"s\"\n"),
                "Kuaidi100 cannot reach",
            )
        });
        for (text, expected) in cases.into_iter().chain(unreachable) {
            let err = parse(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{text}\n→ {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
