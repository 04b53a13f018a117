//! The TOML configuration: parsed once into typed settings, with every secret resolved, so that
//! the rest of the program never sees a raw string where a duration or a secret belongs.
//!
//! This file holds the whole `Config`, the raw shape of the file as written, and the loading;
//! each section that has rules of its own resolves itself in the file beside it.

mod api;
mod channels;
mod database;
mod durations;
mod maintenance;
mod polling;
mod providers;
mod secrets;
mod toml_error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::Tier;
pub use crate::notify::delivery::Delivery;
use crate::storage::Location;
pub use crate::storage::Synchronous;

pub use api::{ApiConfig, ApiToken, BadTokens, MIN_TOKEN_CHARS, parse_token_lines};
pub use channels::{ChannelSettings, Channels, SmsSettings};
pub use durations::{BadDuration, BadRateLimit, HumanDuration, POLL_HORIZON, RateLimit};
pub use maintenance::{InvalidMaintenance, MaintenanceConfig, Schedules};
pub use polling::{Http, Polling, Tiers};
pub use providers::{AdapterSettings, PROVIDER_KINDS, ProviderSettings};
pub use secrets::{SecretPlaces, io_reason};

use api::{RawApi, resolve_api};
use channels::{RawChannels, resolve_channels};
use database::{RawDatabase, resolve_database};
use maintenance::{RawMaintenance, resolve_maintenance};
use providers::{RawProvider, resolve_provider};
use secrets::{SecretResolver, Secrets};
use toml_error::toml_error;

/// Where the config is looked for when `--config` is not given.
pub const ENV_CONFIG: &str = "SHIPWATCH_CONFIG";
pub const DEFAULT_PATHS: [&str; 2] = ["./shipwatch.toml", "/etc/shipwatch/shipwatch.toml"];
pub const DEFAULT_DATABASE: &str = "/var/lib/shipwatch/shipwatch.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The most polls, or deliveries on one channel, at once that a config may ask for. Far above
/// what any upstream's quota or receiver allows; it keeps a typo (a stray digit) from asking for
/// more tasks and connections than the machine has.
pub const MAX_CONCURRENCY: usize = 1024;

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

#[derive(Debug)]
pub struct Config {
    /// The file it was read from, if any (the demo builds its config in code).
    pub source: Option<PathBuf>,
    /// A SQLite file, or a PostgreSQL server (`database = "postgres://…"` or `[database] url`).
    pub database: Location,
    /// On PostgreSQL, this daemon's delivery receipts' file (`[database] receipts`, or
    /// `postgres.sent` in systemd's `STATE_DIRECTORY`); None keeps none. A SQLite database keeps
    /// them beside its file. See [`Config::receipts_file`].
    pub postgres_receipts: Option<PathBuf>,
    pub synchronous: Synchronous,
    /// How long in-flight polls and deliveries get to finish on SIGTERM before they are released.
    pub shutdown_timeout: Duration,
    pub tiers: Tiers,
    pub polling: Polling,
    pub delivery: Delivery,
    pub http: Http,
    /// The shipments API, served on `[http] listen`; off without tokens.
    pub api: ApiConfig,
    pub maintenance: MaintenanceConfig,
    pub providers: BTreeMap<String, ProviderSettings>,
    pub channels: Channels,
    /// Where the secrets came from, for the warnings about who else can read them.
    pub secret_places: SecretPlaces,
}

// ---- raw shapes, as written in the file -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<RawDatabase>,
    synchronous: Option<Synchronous>,
    shutdown_timeout: Option<HumanDuration>,
    #[serde(default)]
    tiers: RawTiers,
    #[serde(default)]
    polling: RawPolling,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    maintenance: RawMaintenance,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    channels: RawChannels,
    #[serde(default)]
    notify: RawNotify,
}

/// `[notify]`: what every channel's messages share.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    /// Where a message's reader follows the order, e.g. `https://shop.example/orders/{order_id}`.
    link: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTiers {
    high: Option<HumanDuration>,
    normal: Option<HumanDuration>,
    low: Option<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolling {
    scan_interval: Option<HumanDuration>,
    concurrency: Option<usize>,
    timeout: Option<HumanDuration>,
    jitter: Option<f64>,
    lease: Option<HumanDuration>,
    auth_pause: Option<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    attempts: Option<u32>,
    backoff: Option<HumanDuration>,
    backoff_max: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
    lease: Option<HumanDuration>,
    concurrency: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    connect_timeout: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
    listen: Option<String>,
    public_listen: Option<String>,
}

// ---- loading ----------------------------------------------------------------------------------

/// Finds the config file: `--config`, else `$SHIPWATCH_CONFIG`, else `./shipwatch.toml`, else
/// `/etc/shipwatch/shipwatch.toml`. `None` when no file exists at any default place.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    if let Some(path) = std::env::var_os(ENV_CONFIG).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    DEFAULT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Secrets::Required)
    }

    /// Loads a config for the admin commands, which need the database and the provider names
    /// but no secrets: an operator's shell has no `$CREDENTIALS_DIRECTORY`, and a missing secret
    /// must not stop `list` from working.
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Secrets::Skipped)
    }

    fn load_with(path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_with(&text, Some(path), base, secrets).map_err(|e| match e {
            ConfigError::Parse { message, .. } | ConfigError::Invalid(message) => {
                ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                }
            }
            other => other,
        })
    }

    /// Parses a config text. Relative `*_file` paths are taken from `base` (the config's folder).
    pub fn parse(text: &str, source: Option<&Path>, base: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, source, base, Secrets::Required)
    }

    fn parse_with(
        text: &str,
        source: Option<&Path>,
        base: &Path,
        secrets: Secrets,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.map(Path::to_owned).unwrap_or_default(),
            message: toml_error(text, &e),
        })?;
        let secrets = SecretResolver::from_env(base, secrets);

        let defaults = Tiers::default();
        let tiers = Tiers {
            high: raw.tiers.high.map_or(defaults.high, |d| d.0),
            normal: raw.tiers.normal.map_or(defaults.normal, |d| d.0),
            low: raw.tiers.low.map_or(defaults.low, |d| d.0),
        };
        for tier in Tier::ALL {
            if tiers.interval(tier) < Duration::from_secs(1) {
                return Err(invalid(format!(
                    "[tiers] {tier} = {:?} is too short; the shortest interval is 1s",
                    humantime::format_duration(tiers.interval(tier)).to_string()
                )));
            }
            // Further than that, a row's next poll reads as a mistake (see POLL_HORIZON).
            if tiers.interval(tier) > POLL_HORIZON {
                return Err(invalid(format!(
                    "[tiers] {tier} = {:?} is too long; the longest interval is 366d",
                    humantime::format_duration(tiers.interval(tier)).to_string()
                )));
            }
        }

        let d = Polling::default();
        let mut polling = Polling {
            scan_interval: raw.polling.scan_interval.map_or(d.scan_interval, |v| v.0),
            concurrency: raw.polling.concurrency.unwrap_or(d.concurrency),
            timeout: raw.polling.timeout.map_or(d.timeout, |v| v.0),
            jitter: raw.polling.jitter.unwrap_or(d.jitter),
            lease: raw.polling.lease.map_or(d.lease, |v| v.0),
            auth_pause: raw.polling.auth_pause.map_or(d.auth_pause, |v| v.0),
            no_info_after: d.no_info_after,
        };
        if !(1..=MAX_CONCURRENCY).contains(&polling.concurrency) {
            return Err(invalid(format!(
                "[polling] concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        if !(0.0..=0.5).contains(&polling.jitter) {
            return Err(invalid(
                "[polling] jitter must be between 0 and 0.5 (a fraction of the interval)",
            ));
        }
        if polling.scan_interval.is_zero() {
            return Err(invalid("[polling] scan_interval must be longer than 0s"));
        }

        let d = Delivery::default();
        let delivery = Delivery {
            attempts: raw.delivery.attempts.unwrap_or(d.attempts),
            backoff: raw.delivery.backoff.map_or(d.backoff, |v| v.0),
            backoff_max: raw.delivery.backoff_max.map_or(d.backoff_max, |v| v.0),
            timeout: raw.delivery.timeout.map_or(d.timeout, |v| v.0),
            lease: raw.delivery.lease.map_or(d.lease, |v| v.0),
            concurrency: raw.delivery.concurrency.unwrap_or(d.concurrency),
        };
        if !(1..=20).contains(&delivery.attempts) {
            return Err(invalid("[delivery] attempts must be between 1 and 20"));
        }
        if !(1..=MAX_CONCURRENCY).contains(&delivery.concurrency) {
            return Err(invalid(format!(
                "[delivery] concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        if delivery.lease <= delivery.timeout {
            return Err(invalid(format!(
                "[delivery] lease ({}) must be longer than timeout ({}), or a slow delivery would be sent twice",
                humantime::format_duration(delivery.lease),
                humantime::format_duration(delivery.timeout)
            )));
        }

        let d = Http::default();
        let http = Http {
            connect_timeout: raw.http.connect_timeout.map_or(d.connect_timeout, |v| v.0),
            timeout: raw.http.timeout.map_or(d.timeout, |v| v.0),
            listen: raw
                .http
                .listen
                .map(|l| {
                    l.parse().map_err(|_| {
                        invalid("[http] listen is not an address and port such as 127.0.0.1:9464")
                    })
                })
                .transpose()?,
            public_listen: raw
                .http
                .public_listen
                .map(|l| {
                    l.parse().map_err(|_| {
                        invalid(
                            "[http] public_listen is not an address and port such as 127.0.0.1:9465",
                        )
                    })
                })
                .transpose()?,
        };
        if http.listen.is_some() && http.listen == http.public_listen {
            return Err(invalid(
                "[http] public_listen must differ from listen: the callbacks are exposed to the internet, /metrics must not be",
            ));
        }
        let maintenance = resolve_maintenance(raw.maintenance)?;
        polling.no_info_after = maintenance.no_info_after;
        if http.timeout.is_zero() || http.connect_timeout.is_zero() {
            return Err(invalid("[http] timeouts must be longer than 0s"));
        }

        let api = resolve_api(raw.api, &secrets)?;
        if api.enabled() && http.listen.is_none() {
            return Err(invalid(
                "[api] has tokens but [http] listen is not set: the API is served there; set it (e.g. 127.0.0.1:9464)",
            ));
        }

        let mut providers = BTreeMap::new();
        for (name, raw) in raw.providers {
            providers.insert(name.clone(), resolve_provider(&name, raw, &secrets)?);
        }

        if http.public_listen.is_none()
            && let Some(name) =
                providers
                    .iter()
                    .find_map(|(name, p): (&String, &ProviderSettings)| {
                        matches!(&p.adapter, AdapterSettings::Kuaidi100(k) if k.push.is_some())
                            .then_some(name)
                    })
        {
            return Err(invalid(format!(
                "[providers.{name}] mode = \"push\" needs [http] public_listen, the address Kuaidi100's callbacks reach (through a reverse proxy with TLS)"
            )));
        }

        let mut channels = resolve_channels(raw.channels, &secrets, &delivery)?;
        channels.link = raw.notify.link.map(|link| parse_link(&link)).transpose()?;

        let (database, postgres_receipts) = resolve_database(raw.database, base)?;

        Ok(Config {
            source: source.map(Path::to_owned),
            database,
            postgres_receipts,
            synchronous: raw.synchronous.unwrap_or_default(),
            shutdown_timeout: raw
                .shutdown_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            tiers,
            polling,
            delivery,
            http,
            api,
            maintenance,
            providers,
            channels,
            secret_places: secrets.places.into_inner(),
        })
    }
}

/// A key that must be given and not blank.
fn required(section: &str, key: &str, value: Option<String>) -> Result<String, ConfigError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid(format!("{section} needs {key}")))
}

/// The upstream's URL: as given, else the provider's default.
fn endpoint(section: &str, given: Option<String>, default: &str) -> Result<String, ConfigError> {
    let url = given.unwrap_or_else(|| default.to_owned());
    check_url(section, "endpoint", &url)?;
    Ok(url)
}

/// The URL itself is not echoed: it may carry a password or a token.
/// `[notify] link`: a template over the placeholders that must give an http(s) URL.
fn parse_link(link: &str) -> Result<crate::notify::template::Template, ConfigError> {
    use crate::notify::template::{LINK_PLACEHOLDERS, Template};
    let template = Template::parse(link, &LINK_PLACEHOLDERS)
        .map_err(|e| invalid(format!("[notify] link: {e}")))?;
    let sample: crate::notify::template::Values = LINK_PLACEHOLDERS
        .iter()
        .map(|name| ((*name).to_owned(), "x".to_owned()))
        .collect();
    check_url("[notify]", "link", &template.render(&sample))?;
    Ok(template)
}

pub(super) fn check_url(section: &str, key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(u) => Err(invalid(format!(
            "{section} {key} has the scheme {}; give an http(s) URL such as https://host/path",
            crate::shown::for_terminal(u.scheme())
        ))),
        Err(e) => Err(invalid(format!(
            "{section} {key} is not an http(s) URL ({e}); give one such as https://host/path"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;
    use crate::notify::ChannelKind;
    use crate::providers::taobao::SignMethod;

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, None, Path::new("/nonexistent"))
    }

    #[test]
    fn an_empty_config_takes_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.tiers, Tiers::default());
        assert_eq!(config.tiers.high, Duration::from_secs(120));
        assert_eq!(config.delivery.attempts, 3);
        assert_eq!(config.delivery.backoff, Duration::from_secs(300));
        assert_eq!(config.delivery.backoff_max, Duration::from_secs(3600));
        assert_eq!(config.delivery.timeout, Duration::from_secs(15));
        assert_eq!(config.delivery.lease, Duration::from_secs(60));
        assert_eq!(
            config.database,
            Location::Sqlite(PathBuf::from(DEFAULT_DATABASE))
        );
        assert_eq!(config.http.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.http.timeout, Duration::from_secs(15));
        assert!(config.providers.is_empty());
    }

    #[test]
    fn a_full_config_parses() {
        let config = parse(
            r#"
            database = "/tmp/x.db"
            [tiers]
            high = "1s"
            normal = "10m"
            low = "1h"
            [providers.taobao]
            kind = "taobao"
            endpoint = "http://127.0.0.1:9/router/rest"
            app_key = "12345678"
            app_secret = "helloworld"
            session = "test"
            sign_method = "md5"
            seller_nick = "shop-nick"
            rate_limit = "500/min"
            [channels.webhook]
            url = "https://shop.example/hooks"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            statuses = ["delivered"]
            "#,
        )
        .unwrap();
        assert_eq!(config.tiers.high, Duration::from_secs(1));
        let taobao = &config.providers["taobao"];
        assert_eq!(taobao.rate_limit.unwrap().calls, 500);
        match &taobao.adapter {
            AdapterSettings::Taobao(t) => {
                assert_eq!(t.app_secret.expose(), "helloworld");
                assert_eq!(t.sign_method, SignMethod::Md5);
                assert_eq!(t.seller_nick.as_deref(), Some("shop-nick"));
            }
            other => panic!("{other:?}"),
        }
        // A blank nick is not sent at all.
        let blank = parse(
            "[providers.t]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret = \"s\"\nsession = \"s\"\nseller_nick = \"  \"",
        )
        .unwrap();
        match &blank.providers["t"].adapter {
            AdapterSettings::Taobao(t) => assert_eq!(t.seller_nick, None),
            other => panic!("{other:?}"),
        }
        let rules = config.channels.rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].kind, ChannelKind::Webhook);
        assert_eq!(rules[0].triggers, vec![Status::Delivered]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("[tiers]\nhigh = \"500ms\"").contains("shortest interval is 1s"));
        assert!(err("[tiers]\nhigh = \"often\"").contains("not a duration"));
        assert!(err("[providers.x]\nkind = \"dhl\"").contains("not a provider kind"));
        assert!(err("[providers.t]\nkind = \"taobao\"").contains("needs app_key"));
        assert!(err("colour = \"blue\"").contains("colour"));
        let missing = err(
            "[providers.t]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret_file = \"/nonexistent/taobao.secret\"\nsession = \"s\"",
        );
        assert!(
            missing.contains("/nonexistent/taobao.secret")
                && missing.contains("No such file or directory"),
            "{missing}"
        );
        assert!(!missing.contains('\n'));
        // Either timeout at 0 would fail every request at once.
        for key in ["timeout", "connect_timeout"] {
            let zero = err(&format!("[http]\n{key} = \"0s\""));
            assert_eq!(zero, "[http] timeouts must be longer than 0s", "{key}");
        }
    }

    #[test]
    fn admin_commands_load_a_config_whose_secrets_are_out_of_reach() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shipwatch.toml");
        std::fs::write(
            &path,
            "database = \"x.db\"\n[providers.t]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret_file = \"missing.secret\"\nsession = \"s\"",
        )
        .unwrap();
        assert!(
            Config::load(&path)
                .unwrap_err()
                .to_string()
                .contains("missing.secret")
        );
        let config = Config::load_without_secrets(&path).unwrap();
        assert!(config.providers.contains_key("t"));
        assert_eq!(config.database, Location::Sqlite(dir.path().join("x.db")));
    }

    /// `Debug` of the whole config, as a careless `{config:?}` in a log line would print it,
    /// shows none of the secrets: provider keys and tokens, the webhook secret, the SMTP
    /// password, the Aliyun key secret, an HTTP SMS vendor's header values.
    #[test]
    fn config_debug_redacts_every_secret() {
        let secrets = [
            "tb-secret-0a1b",
            "tb-session-2c3d",
            "ali-secret-4e5f",
            "ali-token-6a7b",
            "kd-key-8c9d",
            "hook-secret-0e1f-long-enough-key",
            "smtp-pw-2a3b",
            "aliyun-secret-4c5d",
        ];
        let providers = format!(
            r#"
[providers.tb]
kind = "taobao"
app_key = "1"
app_secret = "{}"
session = "{}"
[providers.ali]
kind = "alibaba1688"
app_key = "2"
app_secret = "{}"
access_token = "{}"
[providers.kd]
kind = "kuaidi100"
customer = "C"
key = "{}"
[channels.webhook]
url = "https://shop.example/hooks"
secret = "{}"
[channels.email]
smtp_url = "smtps://mailer@smtp.example"
password = "{}"
from = "noreply@shop.example"
"#,
            secrets[0], secrets[1], secrets[2], secrets[3], secrets[4], secrets[5], secrets[6]
        );
        let aliyun = format!(
            "{providers}[channels.sms]\nkind = \"aliyun\"\naccess_key_id = \"LTAI\"\n\
             access_key_secret = \"{}\"\nsign_name = \"s\"\ntemplate_code = \"SMS_1\"\n",
            secrets[7]
        );
        let http = format!(
            "{providers}[channels.sms]\nkind = \"http\"\nurl = \"https://sms.example/send\"\n\
             body = \"{{{{phone}}}}\"\n[channels.sms.headers]\nAuthorization = \"Bearer sms-token-6e7f\"\n"
        );
        for (text, extra) in [(aliyun, secrets[7]), (http, "sms-token-6e7f")] {
            let config = parse(&text).unwrap();
            let debug = format!("{config:?} {:?}", config.channels.sms);
            for secret in secrets.iter().take(7).chain([&extra]) {
                assert!(!debug.contains(secret), "{secret} in {debug}");
            }
            let pretty = format!("{config:#?}");
            assert!(!pretty.contains(extra), "{pretty}");
        }
    }

    #[test]
    fn an_oversized_secret_file_or_interval_is_refused() {
        let secret_from = |path: &str| {
            parse(&format!(
                "[providers.t]\nkind = \"taobao\"\napp_key = \"1\"\nsession = \"s\"\napp_secret_file = \"{path}\""
            ))
            .unwrap_err()
            .to_string()
        };
        // A device that never ends is read to the limit, not to the end of memory.
        let err = secret_from("/dev/zero");
        assert!(err.contains("/dev/zero is over 65536 bytes"), "{err}");
        // 64 KiB is the most a secret file may hold, its own end of line included.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        let taobao = |path: &Path| {
            parse(&format!(
                "[providers.t]\nkind = \"taobao\"\napp_key = \"1\"\nsession = \"s\"\napp_secret_file = \"{}\"",
                path.display()
            ))
        };
        std::fs::write(&file, "k".repeat(65_535) + "\n").unwrap();
        assert!(taobao(&file).is_ok());
        std::fs::write(&file, "k".repeat(65_536) + "\n").unwrap();
        let err = taobao(&file).unwrap_err().to_string();
        assert!(err.contains("is over 65536 bytes"), "{err}");
        let err = parse("[tiers]\nlow = \"400d\"").unwrap_err().to_string();
        assert!(
            err.contains("[tiers] low") && err.contains("too long"),
            "{err}"
        );
        let err = parse("[providers.s]\nkind = \"simulator\"\nmin_interval = \"1000d\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_interval is too long"), "{err}");
        assert!(parse("[tiers]\nlow = \"366d\"").is_ok());
        assert!(parse("[providers.s]\nkind = \"simulator\"\nmin_interval = \"366d\"").is_ok());
    }

    /// The example shipped for operators is read by the real loader, so it cannot drift from it.
    #[test]
    fn the_example_config_in_deploy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/shipwatch.example.toml");
        let config = Config::load_without_secrets(&path).unwrap();
        assert!(!config.providers.is_empty());
        assert!(config.channels.webhook.is_some());
    }

    #[test]
    fn notify_link_is_a_checked_template_given_to_every_channel() {
        let config = parse(
            "[notify]\nlink = \"https://shop.example/o/{order_id}\"\n[channels.dingtalk]\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=t\"",
        )
        .unwrap();
        let rules = config.channels.rules();
        assert_eq!(
            rules[0].link.as_ref().map(|l| l.as_str()),
            Some("https://shop.example/o/{order_id}")
        );
        for (link, want) in [
            (
                "https://shop.example/{status}",
                "[notify] link: unknown placeholder {status} (known: order_id, tracking_no, carrier)",
            ),
            (
                "shop.example/{order_id}",
                "[notify] link is not an http(s) URL",
            ),
            (
                "ftp://shop.example/{order_id}",
                "[notify] link has the scheme ftp",
            ),
        ] {
            let e = parse(&format!("[notify]\nlink = \"{link}\""))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{link}: {e}");
        }
        let e = parse("[notify]\nurl = \"https://x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `url`"), "{e}");
    }

    /// The example's group robot and WeChat sections, uncommented, load as written.
    #[test]
    fn the_example_robot_and_wechat_sections_load_when_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/shipwatch.example.toml");
        let example = std::fs::read_to_string(&path).unwrap();
        let start = example
            .find("#[channels.dingtalk]")
            .expect("a dingtalk section");
        let mut text = example[..start].to_owned();
        for line in example[start..].lines() {
            // Keys and section headers are commented without a space; prose has one.
            match line.strip_prefix('#') {
                Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => text.push_str(rest),
                _ => text.push_str(line),
            }
            text.push('\n');
        }
        let text = text
            .replace("access_token=…", "access_token=t")
            .replace("key=…", "key=k")
            .replace("hook/…", "hook/h");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shipwatch.toml");
        std::fs::write(&file, text).unwrap();
        let config = Config::load_without_secrets(&file).unwrap();
        let kinds: Vec<&str> = config
            .channels
            .rules()
            .iter()
            .map(|rule| rule.kind.as_str())
            .collect();
        for robot in ["dingtalk", "wecom", "feishu", "wechat"] {
            assert!(kinds.contains(&robot), "{robot} missing from {kinds:?}");
        }
    }
}
