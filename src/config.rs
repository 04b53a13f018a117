//! The TOML configuration: parsed once into typed settings, with every secret resolved, so that
//! the rest of the program never sees a raw string where a duration or a secret belongs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{Secret, Status, Tier};
use crate::notify::email::EmailConfig;
pub use crate::notify::sender::Delivery;
use crate::notify::sms_aliyun::AliyunSmsConfig;
use crate::notify::sms_http::HttpSmsConfig;
use crate::notify::template::{PLACEHOLDERS, QuietHours, Template};
use crate::notify::webhook::{WebhookConfig, WebhookSecret};
use crate::notify::{ChannelKind, ChannelRule, Texts};
use crate::providers::alibaba1688::{self, Alibaba1688Config};
use crate::providers::kuaidi100::{self, Kuaidi100Config};
use crate::providers::taobao::{self, SignMethod, TaobaoConfig};
pub use crate::storage::Synchronous;
use tokio_cron_scheduler::Job;

/// The provider kinds a `[providers.NAME]` section may name.
pub const PROVIDER_KINDS: [&str; 4] = ["taobao", "alibaba1688", "kuaidi100", "simulator"];

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

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// A duration written as `30s`, `2m`, `1h`, `30d` or `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("{s:?} is not a duration ({e}); write it like 30s, 2m, 1h or 30d"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A call quota such as `500/min`: at most `calls` calls per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub calls: u32,
    pub per: Duration,
}

impl RateLimit {
    /// The spacing between two calls that keeps to the quota.
    pub fn interval(&self) -> Duration {
        self.per / self.calls
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.calls, humantime::format_duration(self.per))
    }
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint =
            || format!("rate_limit {s:?} is not a quota; write it like 500/min, 10/s or 1000/1h");
        let (calls, per) = s.split_once('/').ok_or_else(hint)?;
        let calls: u32 = calls.trim().parse().map_err(|_| hint())?;
        if calls == 0 {
            return Err(format!(
                "rate_limit {s:?} allows no calls at all; give at least 1"
            ));
        }
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| hint())?,
        };
        if per.is_zero() {
            return Err(hint());
        }
        Ok(RateLimit { calls, per })
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Poll interval per tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    pub high: Duration,
    pub normal: Duration,
    pub low: Duration,
}

impl Default for Tiers {
    fn default() -> Self {
        Tiers {
            high: Duration::from_secs(120),
            normal: Duration::from_secs(600),
            low: Duration::from_secs(3600),
        }
    }
}

impl Tiers {
    pub fn interval(&self, tier: Tier) -> Duration {
        match tier {
            Tier::High => self.high,
            Tier::Normal => self.normal,
            Tier::Low => self.low,
        }
    }
}

/// How the dispatcher behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polling {
    /// How often the database is looked at for due shipments (and rows inserted from outside).
    pub scan_interval: Duration,
    /// Polls in flight at once, over all providers.
    pub concurrency: usize,
    /// Longest wait for one upstream answer.
    pub timeout: Duration,
    /// Spread of each next poll around the tier interval, as a fraction (0.1 = ±10%).
    pub jitter: f64,
    /// How long a claimed shipment is held before another dispatcher may take it.
    pub lease: Duration,
    /// How long a provider whose credentials or configuration upstream rejected stays paused.
    pub auth_pause: Duration,
    /// How long an unexplained refusal of a shipment counts as "no trace yet": the
    /// maintenance `no_info_after`, so that both give a new shipment the same time.
    pub no_info_after: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            scan_interval: Duration::from_secs(1),
            concurrency: 16,
            timeout: Duration::from_secs(30),
            jitter: 0.1,
            lease: Duration::from_secs(300),
            auth_pause: Duration::from_secs(3600),
            no_info_after: MaintenanceConfig::default().no_info_after,
        }
    }
}

/// The one HTTP client all providers share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http {
    pub connect_timeout: Duration,
    /// The whole request, answer included.
    pub timeout: Duration,
    /// Where `/healthz` and `/metrics` are served; not at all when `None`.
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            listen: None,
        }
    }
}

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

/// A channel together with the statuses that trigger it.
#[derive(Debug, Clone)]
pub struct ChannelSettings<T> {
    pub settings: T,
    pub triggers: Vec<Status>,
    pub quiet_hours: Option<QuietHours>,
    pub texts: Texts,
}

impl<T> ChannelSettings<T> {
    fn rule(&self, kind: ChannelKind) -> ChannelRule {
        ChannelRule {
            kind,
            triggers: self.triggers.clone(),
            quiet_hours: self.quiet_hours,
            texts: self.texts.clone(),
        }
    }
}

/// The SMS vendor.
#[derive(Debug, Clone)]
pub enum SmsSettings {
    Aliyun(AliyunSmsConfig),
    Http(HttpSmsConfig),
}

#[derive(Default)]
pub struct Channels {
    pub webhook: Option<ChannelSettings<WebhookConfig>>,
    pub email: Option<ChannelSettings<EmailConfig>>,
    pub sms: Option<ChannelSettings<SmsSettings>>,
}

impl Channels {
    /// Where a channel sends, as it may be shown: the URL without its secrets (see
    /// [`crate::shown::url`]). `None` for email, whose server is shown by its own checks.
    pub fn shown_target(&self, kind: ChannelKind) -> Option<String> {
        let url = match kind {
            ChannelKind::Webhook => &self.webhook.as_ref()?.settings.url,
            ChannelKind::Sms => match &self.sms.as_ref()?.settings {
                SmsSettings::Aliyun(aliyun) => &aliyun.endpoint,
                SmsSettings::Http(http) => &http.url,
            },
            ChannelKind::Email => return None,
        };
        Some(crate::shown::url(url))
    }
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channels")
            .field("webhook", &self.webhook.as_ref().map(|w| &w.settings.url))
            .field("email", &self.email.as_ref().map(|e| &e.settings.smtp_url))
            .field("sms", &self.sms.is_some())
            .finish()
    }
}

impl Channels {
    /// Each enabled channel with its triggers and texts, as the outbox needs them.
    pub fn rules(&self) -> Vec<ChannelRule> {
        let mut rules = Vec::new();
        if let Some(webhook) = &self.webhook {
            rules.push(webhook.rule(ChannelKind::Webhook));
        }
        if let Some(email) = &self.email {
            rules.push(email.rule(ChannelKind::Email));
        }
        if let Some(sms) = &self.sms {
            rules.push(sms.rule(ChannelKind::Sms));
        }
        rules
    }
}

#[derive(Debug)]
pub struct Config {
    /// The file it was read from, if any (the demo builds its config in code).
    pub source: Option<PathBuf>,
    pub database: PathBuf,
    pub synchronous: Synchronous,
    /// How long in-flight polls and deliveries get to finish on SIGTERM before they are released.
    pub shutdown_timeout: Duration,
    pub tiers: Tiers,
    pub polling: Polling,
    pub delivery: Delivery,
    pub http: Http,
    pub maintenance: MaintenanceConfig,
    pub providers: BTreeMap<String, ProviderSettings>,
    pub channels: Channels,
    /// Where the secrets came from, for the warnings about who else can read them.
    pub secret_places: SecretPlaces,
}

/// The keys whose secrets the config file holds inline, and the files secrets were read from.
#[derive(Debug, Default, Clone)]
pub struct SecretPlaces {
    /// `[section] key`, one per secret written in the config itself.
    pub inline: Vec<String>,
    pub files: Vec<PathBuf>,
}

// ---- raw shapes, as written in the file -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<PathBuf>,
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
    maintenance: RawMaintenance,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    channels: RawChannels,
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMaintenance {
    timezone: Option<String>,
    expire_after: Option<HumanDuration>,
    no_info_after: Option<HumanDuration>,
    stuck_after: Option<HumanDuration>,
    retain: Option<HumanDuration>,
    #[serde(default)]
    schedules: RawSchedules,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSchedules {
    expire: Option<String>,
    stuck: Option<String>,
    prune: Option<String>,
    checkpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawChannels {
    webhook: Option<RawWebhook>,
    email: Option<RawEmail>,
    sms: Option<RawSms>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    #[serde(default = "yes")]
    enabled: bool,
    smtp_url: String,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    from: String,
    reply_to: Option<String>,
    statuses: Option<Vec<String>>,
    #[serde(default)]
    templates: BTreeMap<String, RawTexts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSms {
    #[serde(default = "yes")]
    enabled: bool,
    kind: String,
    statuses: Option<Vec<String>>,
    /// `21:00-08:00` by default; `off` for none.
    quiet_hours: Option<String>,
    timezone: Option<String>,
    #[serde(default)]
    templates: BTreeMap<String, RawTexts>,
    // aliyun
    endpoint: Option<String>,
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
    access_key_secret_file: Option<PathBuf>,
    sign_name: Option<String>,
    template_code: Option<String>,
    /// The variables the registered templates use; every placeholder by default.
    params: Option<Vec<String>>,
    /// Each `TemplateParam` value is cut to this many characters (35 by default).
    param_max_chars: Option<usize>,
    // http
    url: Option<String>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// `Name: value` lines, for headers that carry a key.
    headers_file: Option<PathBuf>,
    body: Option<String>,
    /// The statuses that can mean sent, `200-299` by default.
    success_status: Option<String>,
    /// A JSON pointer into the answer and the value it must hold for the SMS to count as sent.
    success_pointer: Option<String>,
    success_value: Option<String>,
}

/// Texts for one status.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTexts {
    subject: Option<String>,
    body: Option<String>,
    text: Option<String>,
    template_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    #[serde(default = "yes")]
    enabled: bool,
    url: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    statuses: Option<Vec<String>>,
}

fn yes() -> bool {
    true
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
        if polling.concurrency == 0 {
            return Err(invalid("[polling] concurrency must be at least 1"));
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
        if delivery.concurrency == 0 {
            return Err(invalid("[delivery] concurrency must be at least 1"));
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
        };
        let maintenance = resolve_maintenance(raw.maintenance)?;
        polling.no_info_after = maintenance.no_info_after;
        if http.timeout.is_zero() || http.connect_timeout.is_zero() {
            return Err(invalid("[http] timeouts must be longer than 0s"));
        }

        let mut providers = BTreeMap::new();
        for (name, raw) in raw.providers {
            providers.insert(name.clone(), resolve_provider(&name, raw, &secrets)?);
        }

        let mut channels = Channels::default();
        if let Some(raw) = raw.channels.webhook.filter(|w| w.enabled) {
            channels.webhook = Some(resolve_webhook(raw, &secrets)?);
        }
        if let Some(raw) = raw.channels.email.filter(|e| e.enabled) {
            channels.email = Some(resolve_email(raw, &secrets, delivery.timeout)?);
        }
        if let Some(raw) = raw.channels.sms.filter(|s| s.enabled) {
            channels.sms = Some(resolve_sms(raw, &secrets, delivery.timeout)?);
        }

        Ok(Config {
            source: source.map(Path::to_owned),
            database: raw
                .database
                .map(|p| if p.is_relative() { base.join(p) } else { p })
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE)),
            synchronous: raw.synchronous.unwrap_or_default(),
            shutdown_timeout: raw
                .shutdown_timeout
                .map_or(Duration::from_secs(10), |d| d.0),
            tiers,
            polling,
            delivery,
            http,
            maintenance,
            providers,
            channels,
            secret_places: secrets.places.into_inner(),
        })
    }
}

fn resolve_provider(
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

fn resolve_webhook(
    raw: RawWebhook,
    secrets: &SecretResolver,
) -> Result<ChannelSettings<WebhookConfig>, ConfigError> {
    let section = "[channels.webhook]";
    check_url(section, "url", &raw.url)?;
    secrets.note_url(section, "url", &raw.url);
    let secret = secrets.resolve(section, "webhook", "secret", raw.secret, raw.secret_file)?;
    let secret = match WebhookSecret::parse(secret.expose()) {
        Ok(secret) => secret,
        // Admin commands sign nothing: a secret they cannot use must not stop `list`.
        Err(_) if secrets.mode == Secrets::Skipped => WebhookSecret::unloaded(),
        Err(e) => return Err(invalid(format!("{section} secret: {e}"))),
    };
    Ok(ChannelSettings {
        settings: WebhookConfig {
            url: raw.url,
            secret,
        },
        triggers: parse_triggers(section, raw.statuses, None)?,
        quiet_hours: None,
        texts: Texts::default(),
    })
}

fn resolve_email(
    raw: RawEmail,
    secrets: &SecretResolver,
    timeout: Duration,
) -> Result<ChannelSettings<EmailConfig>, ConfigError> {
    let section = "[channels.email]";
    secrets.note_url(section, "smtp_url", &raw.smtp_url);
    let named = raw.password.is_some() || raw.password_file.is_some();
    let has_user = raw.username.is_some() || raw.smtp_url.contains('@');
    // Without a password key, a login may still take its password from the systemd credential
    // `email.password`; without a login there is nothing to look for.
    let password = match secrets.resolve(
        section,
        "email",
        "password",
        raw.password,
        raw.password_file,
    ) {
        Ok(password) if named || has_user => Some(password),
        Ok(_) => None,
        Err(_) if !named => None,
        Err(e) => return Err(e),
    };
    let settings = EmailConfig {
        smtp_url: raw.smtp_url,
        username: raw.username,
        password,
        from: raw.from,
        reply_to: raw.reply_to,
        timeout,
    };
    // Building the channel checks the URL and the mailboxes, without connecting.
    crate::notify::email::Email::new(settings.clone())
        .map_err(|e| invalid(format!("{section} {e}")))?;
    Ok(ChannelSettings {
        settings,
        triggers: parse_triggers(section, raw.statuses, None)?,
        quiet_hours: None,
        texts: parse_texts("channels.email", raw.templates, &["subject", "body"])?,
    })
}

fn resolve_sms(
    raw: RawSms,
    secrets: &SecretResolver,
    timeout: Duration,
) -> Result<ChannelSettings<SmsSettings>, ConfigError> {
    let section = "[channels.sms]";
    let settings = match raw.kind.as_str() {
        "aliyun" => {
            let access_key_id = required(section, "access_key_id", raw.access_key_id)?;
            let access_key_secret = secrets.resolve(
                section,
                "sms",
                "access_key_secret",
                raw.access_key_secret,
                raw.access_key_secret_file,
            )?;
            let sign_name = raw
                .sign_name
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| {
                    invalid(format!(
                        "{section} needs sign_name (the registered SMS signature)"
                    ))
                })?;
            let endpoint = endpoint(
                section,
                raw.endpoint,
                crate::notify::sms_aliyun::DEFAULT_ENDPOINT,
            )?;
            let params = match raw.params {
                None => crate::notify::sms_aliyun::DEFAULT_PARAMS
                    .iter()
                    .map(|name| (*name).to_owned())
                    .collect(),
                Some(params) => {
                    let known = crate::notify::template::PLACEHOLDERS;
                    if let Some(unknown) = params.iter().find(|p| !known.contains(&p.as_str())) {
                        return Err(invalid(format!(
                            "{section} params: {unknown:?} is not a placeholder (known: {})",
                            known.join(", ")
                        )));
                    }
                    params
                }
            };
            let param_max_chars = match raw.param_max_chars {
                None => crate::notify::sms_aliyun::DEFAULT_PARAM_MAX_CHARS,
                Some(0) => {
                    return Err(invalid(format!(
                        "{section} param_max_chars must be at least 1 (Aliyun's default limit is {})",
                        crate::notify::sms_aliyun::DEFAULT_PARAM_MAX_CHARS
                    )));
                }
                Some(n) => n,
            };
            SmsSettings::Aliyun(AliyunSmsConfig {
                endpoint,
                access_key_id,
                access_key_secret,
                sign_name,
                template_code: raw.template_code.clone(),
                params,
                param_max_chars,
                timeout,
            })
        }
        "http" => {
            let url = raw
                .url
                .ok_or_else(|| invalid(format!("{section} kind = \"http\" needs url")))?;
            check_url(section, "url", &url)?;
            secrets.note_url(section, "url", &url);
            let body = raw.body.ok_or_else(|| {
                invalid(format!("{section} kind = \"http\" needs body (a template)"))
            })?;
            // Rendering once with every known name checks the syntax and the names now.
            let sample: BTreeMap<&str, String> = crate::notify::sms_http::PLACEHOLDERS
                .iter()
                .map(|name| (*name, String::new()))
                .collect();
            crate::notify::sms_http::render(&body, &sample)
                .map_err(|e| invalid(format!("{section} body: {e}")))?;
            let method = match raw.method.as_deref() {
                None => reqwest::Method::POST,
                Some(m) => m.to_ascii_uppercase().parse().map_err(|_| {
                    invalid(format!("{section} method {m:?} is not an HTTP method"))
                })?,
            };
            let success = crate::notify::sms_http::SuccessRule::parse(
                raw.success_status.as_deref(),
                raw.success_pointer,
                raw.success_value,
            )
            .map_err(|e| invalid(format!("{section} {e}")))?;
            SmsSettings::Http(HttpSmsConfig {
                url,
                method,
                success,
                headers: sms_headers(section, raw.headers, raw.headers_file, secrets)?,
                body,
                timeout,
            })
        }
        other => {
            return Err(invalid(format!(
                "{section} kind = {other:?} is not an SMS vendor; expected aliyun or http"
            )));
        }
    };
    let quiet_hours = match raw.quiet_hours.as_deref() {
        Some("off" | "") => None,
        window => Some(
            QuietHours::parse(
                window.unwrap_or("21:00-08:00"),
                raw.timezone.as_deref().unwrap_or("Asia/Shanghai"),
            )
            .map_err(|e| invalid(format!("{section} {e}")))?,
        ),
    };
    let mut texts = parse_texts("channels.sms", raw.templates, &["text", "template_code"])?;
    texts.default_template_code = raw.template_code;
    let triggers = parse_triggers(
        section,
        raw.statuses,
        Some(&[
            Status::PickedUp,
            Status::OutForDelivery,
            Status::Delivered,
            Status::Exception,
        ]),
    )?;
    // Aliyun sends only registered templates: a status without one could never be sent.
    if matches!(settings, SmsSettings::Aliyun(_)) && texts.default_template_code.is_none() {
        let missing: Vec<&str> = triggers
            .iter()
            .filter(|s| !texts.template_code.contains_key(s))
            .map(|s| s.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "{section} needs template_code (the Aliyun template registered for these messages), or one per status under [channels.sms.templates.STATUS]; missing for {}",
                missing.join(", ")
            )));
        }
    }
    Ok(ChannelSettings {
        settings,
        triggers,
        quiet_hours,
        texts,
    })
}

/// `[channels.X.templates.STATUS]` tables: every text checked for unknown placeholders now, so
/// that a typo is a config error, not a blank in a customer's message.
fn parse_texts(
    section: &str,
    raw: BTreeMap<String, RawTexts>,
    allowed: &[&str],
) -> Result<Texts, ConfigError> {
    let mut texts = Texts::default();
    for (status_name, raw) in raw {
        let table = format!("[{section}.templates.{status_name}]");
        let status: Status = status_name
            .parse()
            .map_err(|e| invalid(format!("{table}: {e}")))?;
        let given = [
            ("subject", raw.subject.is_some()),
            ("body", raw.body.is_some()),
            ("text", raw.text.is_some()),
            ("template_code", raw.template_code.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(k, g)| *g && !allowed.contains(k)) {
            return Err(invalid(format!(
                "{table} {key} does not apply here; use {}",
                allowed.join(" or ")
            )));
        }
        let template = |key: &str, text: Option<String>| -> Result<Option<Template>, ConfigError> {
            text.map(|text| {
                Template::parse(&text, &PLACEHOLDERS)
                    .map_err(|e| invalid(format!("{table} {key}: {e}")))
            })
            .transpose()
        };
        if let Some(t) = template("subject", raw.subject)? {
            texts.subject.insert(status, t);
        }
        if let Some(t) = template("body", raw.body)? {
            texts.body.insert(status, t);
        }
        if let Some(t) = template("text", raw.text)? {
            texts.sms.insert(status, t);
        }
        if let Some(code) = raw.template_code {
            texts.template_code.insert(status, code);
        }
    }
    Ok(texts)
}

fn resolve_maintenance(raw: RawMaintenance) -> Result<MaintenanceConfig, ConfigError> {
    let d = MaintenanceConfig::default();
    let config = MaintenanceConfig {
        timezone: match raw.timezone {
            None => d.timezone,
            Some(zone) => zone.parse().map_err(|_| {
                invalid(format!(
                    "[maintenance] timezone {zone:?} is not a time zone name such as Asia/Shanghai"
                ))
            })?,
        },
        expire_after: raw.expire_after.map_or(d.expire_after, |v| v.0),
        no_info_after: raw.no_info_after.map_or(d.no_info_after, |v| v.0),
        stuck_after: raw.stuck_after.map_or(d.stuck_after, |v| v.0),
        retain: raw.retain.map_or(d.retain, |v| v.0),
        schedules: Schedules {
            expire: raw.schedules.expire.unwrap_or(d.schedules.expire),
            stuck: raw.schedules.stuck.unwrap_or(d.schedules.stuck),
            prune: raw.schedules.prune.unwrap_or(d.schedules.prune),
            checkpoint: raw.schedules.checkpoint.unwrap_or(d.schedules.checkpoint),
        },
    };
    config
        .validate()
        .map_err(|e| invalid(format!("[maintenance] {e}")))?;
    Ok(config)
}

/// A channel's trigger list; when not given, `default`, or every change.
fn parse_triggers(
    section: &str,
    statuses: Option<Vec<String>>,
    default: Option<&[Status]>,
) -> Result<Vec<Status>, ConfigError> {
    match statuses {
        None => Ok(default.map(<[Status]>::to_vec).unwrap_or_else(|| {
            Status::ALL
                .into_iter()
                .filter(|s| *s != Status::Pending)
                .collect()
        })),
        Some(list) => list
            .iter()
            .map(|s| {
                s.parse::<Status>()
                    .map_err(|e| invalid(format!("{section} statuses: {e}")))
            })
            .collect(),
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
fn check_url(section: &str, key: &str, url: &str) -> Result<(), ConfigError> {
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

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A TOML error as one line that names the place (line, column, key and section) and the
/// mistake, never the text: the toml crate's own rendering quotes the offending line, and that
/// line may hold a secret.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = one_line(&without_values(error.message()));
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    let mut place = format!("line {line}, column {column}");
    let key = text.lines().nth(line - 1).and_then(key_of_line);
    let section = text.lines().take(line).filter_map(section_of_line).last();
    match (key, section) {
        (Some(key), Some(section)) => place.push_str(&format!(", key {key} in [{section}]")),
        (Some(key), None) => place.push_str(&format!(", key {key}")),
        (None, Some(section)) => place.push_str(&format!(", in [{section}]")),
        (None, None) => {}
    }
    format!("{place}: {message} (the line is not shown: it may hold a secret)")
}

/// The key a `key = value` line sets, when it looks like a key (and so cannot be a value).
fn key_of_line(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"');
    (!key.is_empty() && key.len() <= 64 && key.chars().all(plain)).then_some(key)
}

/// The table a `[section]` or `[[section]]` header line opens.
fn section_of_line(line: &str) -> Option<&str> {
    let name = line
        .trim()
        .strip_prefix('[')?
        .trim_start_matches('[')
        .split(']')
        .next()?
        .trim();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' ');
    (!name.is_empty() && name.len() <= 128 && name.chars().all(plain)).then_some(name)
}

/// serde's and our own messages quote the value they refused (`invalid type: string "…"`,
/// `"x" is not a duration`, ``invalid value: integer `5` ``): each quoted value becomes `…`.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`']) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let quote = tail.chars().next().unwrap_or('"');
        let body = &tail[1..];
        // Backquoted names of keys and expected tokens stay; backquoted values go.
        let is_value = quote == '"'
            || [
                "integer ",
                "floating point ",
                "boolean ",
                "character ",
                "unknown variant ",
            ]
            .iter()
            .any(|word| head.ends_with(word));
        let mut end = None;
        let mut escaped = false;
        for (j, c) in body.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                end = Some(j);
                break;
            }
        }
        let Some(end) = end else {
            // An unmatched quote: the rest may be a value.
            out.push(quote);
            out.push('…');
            return out;
        };
        out.push(quote);
        if is_value {
            out.push('…');
        } else {
            out.push_str(&body[..end]);
        }
        out.push(quote);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Required,
    /// Secrets that cannot be read are replaced by a placeholder.
    Skipped,
}

/// Finds a secret inline, in a `*_file`, or among systemd credentials.
struct SecretResolver {
    base: PathBuf,
    credentials: Option<PathBuf>,
    mode: Secrets,
    places: std::cell::RefCell<SecretPlaces>,
}

impl SecretResolver {
    fn from_env(base: &Path, mode: Secrets) -> Self {
        SecretResolver {
            mode,
            places: Default::default(),
            base: base.to_owned(),
            credentials: std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        }
    }

    /// `key` inline wins; then `key_file` (relative paths are looked up in
    /// `$CREDENTIALS_DIRECTORY` first, then beside the config); then a credential named
    /// `{name}.{key}` (systemd `LoadCredential=taobao.app_secret:…`).
    fn resolve(
        &self,
        section: &str,
        name: &str,
        key: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Secret, ConfigError> {
        match self.find(section, name, key, inline, file) {
            Err(_) if self.mode == Secrets::Skipped => Ok(Secret::new("(not loaded)")),
            found => found,
        }
    }

    fn find(
        &self,
        section: &str,
        name: &str,
        key: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Secret, ConfigError> {
        if inline.is_some() && file.is_some() {
            return Err(invalid(format!(
                "{section} gives both {key} and {key}_file; keep one"
            )));
        }
        if let Some(value) = inline {
            if value.is_empty() {
                return Err(invalid(format!("{section} {key} is empty")));
            }
            self.note_inline(section, key);
            return Ok(Secret::new(value));
        }
        if let Some(file) = file {
            let path = if file.is_absolute() {
                file
            } else {
                match &self.credentials {
                    Some(dir) if dir.join(&file).is_file() => dir.join(&file),
                    _ => self.base.join(&file),
                }
            };
            self.note_file(&path);
            return read_secret(section, &format!("{key}_file"), &path);
        }
        if let Some(dir) = &self.credentials {
            let path = dir.join(format!("{name}.{key}"));
            if path.is_file() {
                self.note_file(&path);
                return read_secret(section, "credential", &path);
            }
        }
        Err(invalid(format!(
            "{section} needs {key} (inline, as {key}_file, or as the systemd credential {name}.{key})"
        )))
    }
}

impl SecretResolver {
    fn note_inline(&self, section: &str, key: &str) {
        self.places
            .borrow_mut()
            .inline
            .push(format!("{section} {key}"));
    }

    /// A secret file whose mode is worth a warning. Files in `$CREDENTIALS_DIRECTORY` are not:
    /// systemd makes that folder accessible to the service's user only (systemd.exec(5),
    /// "Credentials", https://www.freedesktop.org/software/systemd/man/latest/systemd.exec.html#Credentials),
    /// whatever the files' own modes say.
    fn note_file(&self, path: &Path) {
        if self
            .credentials
            .as_ref()
            .is_some_and(|dir| path.starts_with(dir))
        {
            return;
        }
        self.places.borrow_mut().files.push(path.to_owned());
    }

    /// A URL with a password or a query may carry a secret in the config itself.
    fn note_url(&self, section: &str, key: &str, url: &str) {
        if let Ok(u) = reqwest::Url::parse(url)
            && (u.password().is_some() || u.query().is_some())
        {
            self.note_inline(section, key);
        }
    }

    /// A secret that may be absent: from `key_file`, else the systemd credential `{name}.{key}`.
    fn optional(
        &self,
        section: &str,
        name: &str,
        key: &str,
        file: Option<PathBuf>,
    ) -> Result<Option<Secret>, ConfigError> {
        let credential = self
            .credentials
            .as_ref()
            .is_some_and(|dir| dir.join(format!("{name}.{key}")).is_file());
        if file.is_none() && !credential {
            return Ok(None);
        }
        match self.find(section, name, key, None, file) {
            Ok(secret) => Ok(Some(secret)),
            Err(_) if self.mode == Secrets::Skipped => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The HTTP SMS gateway's headers: `headers` inline, and `headers_file` (or the systemd
/// credential `sms.headers`) with one `Name: value` per line, the form curl's `-H @file` reads
/// (curl's `--header` documentation, https://curl.se/docs/manpage.html#-H: one header per line
/// of the file). Blank lines and lines starting with `#` are skipped: no standard defines such a
/// file, and a comment is how an operator notes where a key came from. Errors name the line,
/// never its text.
fn sms_headers(
    section: &str,
    inline: BTreeMap<String, String>,
    file: Option<PathBuf>,
    secrets: &SecretResolver,
) -> Result<Vec<(String, Secret)>, ConfigError> {
    if !inline.is_empty() {
        secrets.note_inline(section, "headers");
    }
    let mut headers: Vec<(String, Secret)> = inline
        .into_iter()
        .map(|(k, v)| (k, Secret::new(v)))
        .collect();
    let Some(text) = secrets.optional(section, "sms", "headers", file)? else {
        return Ok(headers);
    };
    for (name, value) in parse_header_lines(text.expose())
        .map_err(|why| invalid(format!("{section} headers_file {why}")))?
    {
        if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(invalid(format!(
                "{section} header {name} is given both in headers and in headers_file; keep one"
            )));
        }
        headers.push((name, Secret::new(value)));
    }
    Ok(headers)
}

/// `Name: value` lines into pairs; the error says which line is wrong and how, not what it holds.
fn parse_header_lines(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {n}: expected `Name: value`"))?;
        let (name, value) = (name.trim(), value.trim());
        // A field name is an RFC 9110 token (https://www.rfc-editor.org/rfc/rfc9110#section-5.1).
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!(
                "line {n}: the header name is not a valid HTTP token"
            ));
        }
        if value.is_empty() || reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "line {n}: the value of header {name} is empty or not a valid header value"
            ));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(headers)
}

/// The longest secret file read: keys and tokens are short, and a path that names a device or
/// a huge file by mistake must not cost the daemon its memory.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

fn read_secret(section: &str, what: &str, path: &Path) -> Result<Secret, ConfigError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        invalid(format!(
            "{section} {what}: cannot read {}: {}",
            path.display(),
            io_reason(&e)
        ))
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_BYTES + 1).read_to_string(&mut text))
        .map_err(cannot)?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(invalid(format!(
            "{section} {what}: {} is over {MAX_SECRET_BYTES} bytes; is it the right file?",
            path.display()
        )));
    }
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(invalid(format!(
            "{section} {what}: {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(value))
}

/// `No such file or directory` without the `(os error 2)` tail.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

// ---- maintenance ---------------------------------------------------------------------------

const DAY: Duration = Duration::from_secs(86_400);

/// How far ahead a shipment's next poll may be. The daemon never schedules one further (the
/// config refuses longer intervals), so a row beyond it was written by hand with a wrong time.
pub const POLL_HORIZON: Duration = Duration::from_secs(366 * 86_400);

/// Cron expressions in tokio-cron-scheduler's six-field form, seconds first
/// (`sec min hour day-of-month month day-of-week`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedules {
    /// Expiry and the missing-carrier-information check.
    pub expire: String,
    pub stuck: String,
    pub prune: String,
    pub checkpoint: String,
}

impl Default for Schedules {
    fn default() -> Self {
        Schedules {
            expire: "0 */10 * * * *".to_owned(),
            stuck: "0 */10 * * * *".to_owned(),
            // At night, when the shops are quiet.
            prune: "0 30 3 * * *".to_owned(),
            checkpoint: "0 0 * * * *".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// The zone the schedules' wall-clock times are read in.
    pub timezone: chrono_tz::Tz,
    /// No news for this long: the shipment expires and polling stops.
    pub expire_after: Duration,
    /// Still no carrier information this long after tracking began: flagged as an exception.
    pub no_info_after: Duration,
    /// A moving parcel quiet for this long is reported stuck to the shop.
    pub stuck_after: Duration,
    /// How long delivered notifications and the history of finished shipments are kept.
    pub retain: Duration,
    pub schedules: Schedules,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            timezone: chrono_tz::Asia::Shanghai,
            expire_after: 30 * DAY,
            no_info_after: 3 * DAY,
            stuck_after: 3 * DAY,
            retain: 90 * DAY,
            schedules: Schedules::default(),
        }
    }
}

impl MaintenanceConfig {
    /// Checks every schedule parses and every span is positive; the error names the culprit.
    pub fn validate(&self) -> Result<(), String> {
        for (name, expr) in self.schedules.named() {
            parse_schedule(name, expr, self.timezone)?;
        }
        for (name, span) in [
            ("expire_after", self.expire_after),
            ("no_info_after", self.no_info_after),
            ("stuck_after", self.stuck_after),
            ("retain", self.retain),
        ] {
            if span.is_zero() {
                return Err(format!("maintenance {name} must be longer than zero"));
            }
        }
        Ok(())
    }
}

impl Schedules {
    pub(crate) fn named(&self) -> [(&'static str, &str); 4] {
        [
            ("expire", &self.expire),
            ("stuck", &self.stuck),
            ("prune", &self.prune),
            ("checkpoint", &self.checkpoint),
        ]
    }
}

/// Parsing through the scheduler itself means `validate` accepts exactly what `start` will.
fn parse_schedule(name: &str, expr: &str, tz: chrono_tz::Tz) -> Result<Job, String> {
    Job::new_async_tz(expr, tz, |_, _| Box::pin(async {})).map_err(|_| {
        format!(
            "maintenance schedule {name} {expr:?} is not a cron expression \
             (six fields: sec min hour day-of-month month day-of-week, e.g. \"0 */10 * * * *\")"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, None, Path::new("/nonexistent"))
    }

    #[test]
    fn durations_and_quotas_parse() {
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            "30d".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30 * 86_400)
        );
        assert!("soon".parse::<HumanDuration>().is_err());
        let q: RateLimit = "500/min".parse().unwrap();
        assert_eq!((q.calls, q.per), (500, Duration::from_secs(60)));
        assert_eq!(q.interval(), Duration::from_millis(120));
        let q: RateLimit = "10/s".parse().unwrap();
        assert_eq!(q.interval(), Duration::from_millis(100));
        let q: RateLimit = "100/5m".parse().unwrap();
        assert_eq!(q.per, Duration::from_secs(300));
        assert!("0/min".parse::<RateLimit>().is_err());
        assert!("fast".parse::<RateLimit>().is_err());
    }

    #[test]
    fn an_empty_config_takes_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.tiers, Tiers::default());
        assert_eq!(config.tiers.high, Duration::from_secs(120));
        assert_eq!(config.delivery.attempts, 3);
        assert_eq!(config.delivery.backoff, Duration::from_secs(30));
        assert_eq!(config.delivery.backoff_max, Duration::from_secs(900));
        assert_eq!(config.delivery.timeout, Duration::from_secs(15));
        assert_eq!(config.delivery.lease, Duration::from_secs(60));
        assert_eq!(config.database, PathBuf::from(DEFAULT_DATABASE));
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
            }
            other => panic!("{other:?}"),
        }
        let rules = config.channels.rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].kind, ChannelKind::Webhook);
        assert_eq!(rules[0].triggers, vec![Status::Delivered]);
    }

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

    #[test]
    fn email_and_sms_channels_parse_with_their_texts_and_quiet_hours() {
        let config = parse(
            r#"
            [channels.email]
            smtp_url = "smtp://127.0.0.1:2525"
            from = "Shop <noreply@shop.example>"
            [channels.email.templates.delivered]
            subject = "订单{order_id}已签收"
            [channels.sms]
            kind = "aliyun"
            access_key_id = "id"
            access_key_secret = "secret"
            sign_name = "小店"
            template_code = "SMS_1"
            [channels.sms.templates.delivered]
            text = "{carrier}:订单{order_id}已签收"
            template_code = "SMS_2"
            "#,
        )
        .unwrap();
        let rules = config.channels.rules();
        let kinds: Vec<ChannelKind> = rules.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [ChannelKind::Email, ChannelKind::Sms]);
        let sms = &rules[1];
        assert_eq!(
            sms.triggers,
            [
                Status::PickedUp,
                Status::OutForDelivery,
                Status::Delivered,
                Status::Exception
            ]
        );
        assert_eq!(
            sms.quiet_hours.unwrap().to_string(),
            "21:00-08:00 Asia/Shanghai"
        );
        assert_eq!(sms.texts.template_code[&Status::Delivered], "SMS_2");
        assert_eq!(sms.texts.default_template_code.as_deref(), Some("SMS_1"));
        assert_eq!(rules[0].triggers.len(), Status::ALL.len() - 1);
        assert!(rules[0].quiet_hours.is_none());

        let http = parse(
            "[channels.sms]\nkind = \"http\"\nurl = \"https://sms.example/send\"\nbody = '{{\"to\":\"{phone}\",\"text\":\"{text}\"}}'\nquiet_hours = \"off\"",
        )
        .unwrap();
        assert!(http.channels.rules()[0].quiet_hours.is_none());
    }

    /// The SMS keys of the fidelity rules: their defaults, and one refusal per kind of mistake.
    #[test]
    fn sms_params_and_success_rules_parse_with_their_defaults() {
        let aliyun = "[channels.sms]\nkind = \"aliyun\"\naccess_key_id = \"i\"\naccess_key_secret = \"s\"\nsign_name = \"n\"\ntemplate_code = \"SMS_1\"\n";
        let settings = |text: &str| parse(text).unwrap().channels.sms.unwrap().settings;
        match settings(aliyun) {
            SmsSettings::Aliyun(c) => {
                assert_eq!(c.params, crate::notify::template::PLACEHOLDERS);
                assert_eq!(c.param_max_chars, 35);
            }
            other => panic!("{other:?}"),
        }
        match settings(&format!(
            "{aliyun}params = [\"order_id\", \"event\"]\nparam_max_chars = 20\n"
        )) {
            SmsSettings::Aliyun(c) => {
                assert_eq!(c.params, ["order_id", "event"]);
                assert_eq!(c.param_max_chars, 20);
            }
            other => panic!("{other:?}"),
        }
        let http = "[channels.sms]\nkind = \"http\"\nurl = \"https://sms.example/send\"\nbody = \"to={phone}\"\n";
        match settings(http) {
            SmsSettings::Http(c) => assert_eq!(c.success, Default::default()),
            other => panic!("{other:?}"),
        }
        match settings(&format!(
            "{http}success_status = \"200\"\nsuccess_pointer = \"/Response/SendStatusSet/0/Code\"\nsuccess_value = \"Ok\"\n"
        )) {
            SmsSettings::Http(c) => {
                assert_eq!(c.success.statuses, 200..=200);
                assert_eq!(
                    c.success.pointer,
                    Some(("/Response/SendStatusSet/0/Code".into(), "Ok".into()))
                );
            }
            other => panic!("{other:?}"),
        }
        for (text, hint) in [
            (
                format!("{aliyun}params = [\"order\"]\n"),
                "\"order\" is not a placeholder",
            ),
            (format!("{aliyun}param_max_chars = 0\n"), "at least 1"),
            (
                format!("{http}success_status = \"2xx\"\n"),
                "not an HTTP status",
            ),
            (
                format!("{http}success_pointer = \"/code\"\n"),
                "needs success_value",
            ),
            (
                format!("{http}success_value = \"0\"\n"),
                "needs success_pointer",
            ),
        ] {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains("[channels.sms]"), "{error}");
            assert!(error.contains(hint), "{hint}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn aliyun_sms_needs_a_registered_template_for_every_status_it_sends() {
        let base = "[channels.sms]\nkind = \"aliyun\"\naccess_key_id = \"i\"\naccess_key_secret = \"s\"\nsign_name = \"n\"\nstatuses = [\"delivered\", \"picked_up\"]\n";
        let err = parse(base).unwrap_err().to_string();
        assert!(
            err.contains("needs template_code") && err.contains("delivered, picked_up"),
            "{err}"
        );
        let one = format!("{base}[channels.sms.templates.delivered]\ntemplate_code = \"SMS_1\"\n");
        let err = parse(&one).unwrap_err().to_string();
        assert!(err.contains("missing for picked_up"), "{err}");
        let both = format!("{one}[channels.sms.templates.picked_up]\ntemplate_code = \"SMS_2\"\n");
        parse(&both).unwrap();
    }

    #[test]
    fn a_template_with_an_unknown_placeholder_is_refused_by_name() {
        let err = parse(
            "[channels.sms]\nkind = \"aliyun\"\naccess_key_id = \"i\"\naccess_key_secret = \"s\"\nsign_name = \"n\"\n[channels.sms.templates.delivered]\ntext = \"订单{order} 已签收\"",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("[channels.sms.templates.delivered] text"),
            "{err}"
        );
        assert!(err.contains("{order}"), "{err}");
        let err = parse(
            "[channels.sms]\nkind = \"http\"\nurl = \"https://sms.example/\"\nbody = \"to={phone}&msg={message}\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("{message}"), "{err}");
        let err = parse(
            "[channels.email]\nsmtp_url = \"smtp://h:25\"\nfrom = \"a@b.example\"\n[channels.email.templates.shipped]\nsubject = \"x\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("shipped"), "{err}");
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
        assert_eq!(config.database, dir.path().join("x.db"));
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
    fn secrets_come_from_files_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tb.secret"), "s3cret\n").unwrap();
        let config = Config::parse(
            "[providers.t]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret_file = \"tb.secret\"\nsession = \"s\"",
            None,
            dir.path(),
        )
        .unwrap();
        match &config.providers["t"].adapter {
            AdapterSettings::Taobao(t) => assert_eq!(t.app_secret.expose(), "s3cret"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn toml_errors_name_the_place_and_never_the_value() {
        // (config text, what the error must say, the secret it must not)
        let rows: &[(&str, &str, &str)] = &[
            (
                "[providers.t]\nkind = \"taobao\"\napp_secret = \"tb-Secret-1\n",
                "line 3, column 26, key app_secret in [providers.t]",
                "tb-Secret-1",
            ),
            (
                "[channels.webhook]\nurl = \"https://u:pw-Secret-2@h/\" trailing\n",
                "line 2, column",
                "pw-Secret-2",
            ),
            (
                "[providers.t]\nkind = \"taobao\"\napp_secret = 12345678901\n",
                "key app_secret in [providers.t]: invalid type: integer `…`",
                "12345678901",
            ),
            (
                "[tiers]\nhigh = \"Secret-3-often\"\n",
                "key high in [tiers]",
                "Secret-3-often",
            ),
            (
                "synchronous = \"Secret-4\"\n",
                "key synchronous: unknown variant `…`",
                "Secret-4",
            ),
            ("colour = \"blue\"\n", "unknown field `colour`", "blue"),
            (
                "[channels.webhook]\nurl = 'https://h/?token=Secret-5\n",
                "line 2",
                "Secret-5",
            ),
        ];
        for (text, said, secret) in rows {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(said), "{text:?}: {err}");
            assert!(!err.contains(secret), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{text:?}: {err}");
        }
    }

    #[test]
    fn url_errors_do_not_echo_the_url() {
        for text in [
            "[channels.webhook]\nurl = \"ftp://u:Secret-6@h/\"\nsecret = \"s\"",
            "[channels.webhook]\nurl = \"Secret-6 pasted here\"\nsecret = \"s\"",
            "[channels.sms]\nkind = \"http\"\nurl = \"gw.example/?key=Secret-6\"\nbody = \"x\"",
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("url"), "{err}");
            assert!(!err.contains("Secret-6"), "{err}");
        }
    }

    #[test]
    fn header_lines_parse_and_mistakes_name_the_line() {
        type Pairs = Vec<(&'static str, &'static str)>;
        let rows: &[(&str, Result<Pairs, &str>)] = &[
            (
                "Authorization: Bearer t0k\n",
                Ok(vec![("Authorization", "Bearer t0k")]),
            ),
            (
                "# comment\n\nX-Api-Key:  k1 \r\nX-Other: a:b\n",
                Ok(vec![("X-Api-Key", "k1"), ("X-Other", "a:b")]),
            ),
            (
                "Authorization Bearer t0k\n",
                Err("line 1: expected `Name: value`"),
            ),
            (
                "\nBad Name: v\n",
                Err("line 2: the header name is not a valid"),
            ),
            (
                "X-Key:\n",
                Err("line 1: the value of header X-Key is empty"),
            ),
        ];
        for (text, expected) in rows {
            let got = parse_header_lines(text);
            match expected {
                Ok(pairs) => {
                    let pairs: Vec<(String, String)> = pairs
                        .iter()
                        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                        .collect();
                    assert_eq!(got.as_ref(), Ok(&pairs), "{text:?}");
                }
                Err(said) => {
                    let err = got.unwrap_err();
                    assert!(err.contains(said), "{text:?}: {err}");
                    assert!(!err.contains("t0k"), "{err}");
                }
            }
        }
    }

    #[test]
    fn sms_headers_come_from_headers_file_too_and_places_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sms.headers"),
            "Authorization: Bearer hf-9\n",
        )
        .unwrap();
        let sms = "[channels.sms]\nkind = \"http\"\nurl = \"https://gw.example/send?key=k\"\nbody = \"{phone}\"\n";
        let config = Config::parse(
            &format!(
                "{sms}headers_file = \"sms.headers\"\n[channels.sms.headers]\nX-Tenant = \"7\"\n"
            ),
            None,
            dir.path(),
        )
        .unwrap();
        let Some(ChannelSettings {
            settings: SmsSettings::Http(http),
            ..
        }) = &config.channels.sms
        else {
            panic!("an http SMS channel");
        };
        let headers: Vec<(&str, &str)> = http
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose()))
            .collect();
        assert_eq!(
            headers,
            vec![("X-Tenant", "7"), ("Authorization", "Bearer hf-9")]
        );
        assert_eq!(
            config.secret_places.inline,
            vec!["[channels.sms] url", "[channels.sms] headers"]
        );
        assert_eq!(
            config.secret_places.files,
            vec![dir.path().join("sms.headers")]
        );
        let err = Config::parse(
            &format!("{sms}headers_file = \"sms.headers\"\n[channels.sms.headers]\nauthorization = \"x\"\n"),
            None,
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("both in headers and in headers_file"), "{err}");
        let err = Config::parse(
            &format!("{sms}headers_file = \"missing.headers\"\n"),
            None,
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("headers_file") && err.contains("missing.headers"),
            "{err}"
        );
    }
}
