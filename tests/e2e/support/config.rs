//! The pieces a test app's config is built from: a provider or a channel, each writing its own
//! section with the credentials of the fake it talks to beside the endpoint, so that a test
//! names what its daemon has instead of pasting TOML. `TestApp::builder` puts them together.

use super::fake_1688::Fake1688;
use super::fake_aliyun_sms::FakeAliyunSms;
use super::fake_dingtalk::FakeDingtalk;
use super::fake_feishu::FakeFeishu;
use super::fake_kuaidi100::FakeKuaidi100;
use super::fake_sms_gateway::{self, FakeSmsGateway};
use super::fake_wechat::FakeWechat;
use super::fake_wecom::FakeWecom;
use super::smtp_sink::SmtpSink;
use super::{
    ALI_APP_KEY, ALI_SECRET, ALI_TOKEN, ALIYUN_KEY_ID, ALIYUN_SECRET, ALIYUN_SIGN_NAME,
    KD_CUSTOMER, KD_KEY,
};

/// The harness's fake TOP gateway's credentials; its app secret is written to `taobao.secret`.
pub const APP_KEY: &str = "12345678";
pub const APP_SECRET: &str = "helloworld";
pub const SESSION: &str = "test-session";
/// The file, in the app's folder, that holds [`APP_SECRET`].
pub const APP_SECRET_FILE: &str = "taobao.secret";

/// What the harness knows once it has started, which a piece may refer to before then.
pub struct Harness<'a> {
    pub top_url: &'a str,
    pub receiver_url: &'a str,
    pub webhook_secret: &'a str,
}

/// A value in a section.
#[derive(Debug, Clone)]
enum Value {
    Toml(toml::Value),
    /// The harness's fake TOP gateway.
    TopUrl,
    /// The harness's webhook receiver.
    ReceiverUrl,
    /// The secret the harness's webhook receiver checks signatures with.
    WebhookSecret,
}

impl<T: Into<toml::Value>> From<T> for Value {
    fn from(value: T) -> Self {
        Value::Toml(value.into())
    }
}

/// One table of the config, with the tables under it.
#[derive(Debug, Clone)]
struct Section {
    /// `providers.ali`, `channels.email`…
    table: String,
    keys: Vec<(String, Value)>,
    /// Written after this one, their names under it: `templates.delivered` in `channels.email`.
    tables: Vec<Section>,
}

impl Section {
    fn new(table: String, keys: Vec<(&str, Value)>) -> Section {
        Section {
            table,
            keys: keys
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
            tables: Vec::new(),
        }
    }

    /// Sets `key`, in its place if it is there already.
    fn set(mut self, key: &str, value: impl Into<Value>) -> Section {
        let value = value.into();
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = value,
            None => self.keys.push((key.to_owned(), value)),
        }
        self
    }

    fn unset(mut self, key: &str) -> Section {
        self.keys.retain(|(k, _)| k != key);
        self
    }

    /// The section as TOML, a blank line before it.
    fn render(&self, harness: &Harness, parent: &str, out: &mut String) {
        let table = if parent.is_empty() {
            self.table.clone()
        } else {
            format!("{parent}.{}", self.table)
        };
        out.push_str(&format!("\n[{table}]\n"));
        for (key, value) in &self.keys {
            let value = match value {
                Value::Toml(value) => value.clone(),
                Value::TopUrl => harness.top_url.into(),
                Value::ReceiverUrl => harness.receiver_url.into(),
                Value::WebhookSecret => harness.webhook_secret.into(),
            };
            out.push_str(&format!("{key} = {value}\n"));
        }
        for sub in &self.tables {
            sub.render(harness, &table, out);
        }
    }
}

/// A `[providers.NAME]` section.
#[derive(Debug, Clone)]
pub struct Provider(Section);

impl Provider {
    /// `[providers.taobao]`: the harness's fake TOP gateway, the app secret read from
    /// [`APP_SECRET_FILE`], signing with HMAC-SHA256.
    pub fn top() -> Provider {
        Provider(Section::new(
            "providers.taobao".to_owned(),
            vec![
                ("kind", "taobao".into()),
                ("endpoint", Value::TopUrl),
                ("app_key", APP_KEY.into()),
                ("app_secret_file", APP_SECRET_FILE.into()),
                ("session", SESSION.into()),
                ("sign_method", "hmac-sha256".into()),
            ],
        ))
    }

    /// This `rate_limit` (`6/min`, `5/s`…).
    pub fn rate_limit(self, rate: &str) -> Provider {
        Provider(self.0.set("rate_limit", rate))
    }

    /// `[providers.ali]`: 1688 on `fake`, with its credentials.
    pub fn alibaba1688(fake: &Fake1688) -> Provider {
        Provider::alibaba1688_with(
            &fake.url,
            &fake.app_key(),
            &fake.app_secret(),
            &fake.access_token(),
        )
    }

    /// `[providers.ali]`: 1688 at `endpoint` (not a fake), with the shared 1688 credentials.
    pub fn alibaba1688_at(endpoint: &str) -> Provider {
        Provider::alibaba1688_with(endpoint, ALI_APP_KEY, ALI_SECRET, ALI_TOKEN)
    }

    fn alibaba1688_with(endpoint: &str, app_key: &str, secret: &str, token: &str) -> Provider {
        Provider(Section::new(
            "providers.ali".to_owned(),
            vec![
                ("kind", "alibaba1688".into()),
                ("endpoint", endpoint.into()),
                ("app_key", app_key.into()),
                ("app_secret", secret.into()),
                ("access_token", token.into()),
            ],
        ))
    }

    /// `[providers.kd]`: Kuaidi100 on `fake`, with its credentials; Kuaidi100's own 30-minute
    /// floor lowered to a second, which a test can wait.
    pub fn kuaidi100(fake: &FakeKuaidi100) -> Provider {
        Provider::kuaidi100_with(&fake.url, &fake.customer(), &fake.key())
    }

    /// `[providers.kd]`: Kuaidi100 at `endpoint` (not a fake), with the shared Kuaidi100
    /// credentials, its floor lowered to a second.
    pub fn kuaidi100_at(endpoint: &str) -> Provider {
        Provider::kuaidi100_with(endpoint, KD_CUSTOMER, KD_KEY)
    }

    fn kuaidi100_with(endpoint: &str, customer: &str, key: &str) -> Provider {
        Provider(Section::new(
            "providers.kd".to_owned(),
            vec![
                ("kind", "kuaidi100".into()),
                ("endpoint", endpoint.into()),
                ("customer", customer.into()),
                ("key", key.into()),
                ("min_interval", "1s".into()),
            ],
        ))
    }

    /// For Kuaidi100: subscription push (`mode = "push"`), Kuaidi100 told to post to
    /// `callback_url` and to sign with `salt`.
    pub fn push(self, callback_url: &str, salt: &str) -> Provider {
        Provider(
            self.0
                .set("mode", "push")
                .set("callback_url", callback_url)
                .set("salt", salt),
        )
    }

    /// For Kuaidi100 in push mode: query the shipments silent for this long.
    pub fn fallback_poll(self, every: &str) -> Provider {
        Provider(self.0.set("fallback_poll", every))
    }

    /// `[providers.sim]`: the built-in simulator.
    pub fn simulator() -> Provider {
        Provider(Section::new(
            "providers.sim".to_owned(),
            vec![("kind", "simulator".into())],
        ))
    }

    /// The simulator's parcels move on every `step` (a duration such as `"1s"`).
    pub fn step(self, step: &str) -> Provider {
        Provider(self.0.set("step", step))
    }

    /// The same provider under another name: `[providers.NAME]`, shipments added with
    /// `--provider NAME`.
    pub fn named(mut self, name: &str) -> Provider {
        self.0.table = format!("providers.{name}");
        self
    }

    /// The provider at another endpoint than its fake's (a hostile gateway, say).
    pub fn endpoint(self, url: &str) -> Provider {
        Provider(self.0.set("endpoint", url))
    }

    /// For TOP: the app secret written in the config instead of read from its file.
    pub fn inline_secret(self) -> Provider {
        Provider(
            self.0
                .unset("app_secret_file")
                .set("app_secret", APP_SECRET),
        )
    }

    /// For TOP: this session key instead of the one the fake gateway expects.
    pub fn session(self, session: &str) -> Provider {
        Provider(self.0.set("session", session))
    }

    pub(super) fn render(&self, harness: &Harness, out: &mut String) {
        self.0.render(harness, "", out);
    }
}

/// A `[channels.NAME]` section.
#[derive(Debug, Clone)]
pub struct Channel(Section);

impl Channel {
    /// `[channels.webhook]`: the harness's receiver, with the secret it checks signatures with.
    pub fn webhook() -> Channel {
        Channel(Section::new(
            "channels.webhook".to_owned(),
            vec![
                ("url", Value::ReceiverUrl),
                ("secret", Value::WebhookSecret),
            ],
        ))
    }

    /// `[channels.webhook]` to `url` instead of the harness's receiver (a slow or hostile
    /// endpoint), with the same secret.
    pub fn webhook_to(url: &str) -> Channel {
        Channel(Channel::webhook().0.set("url", url))
    }

    /// `[channels.email]`: through the SMTP sink, from `noreply@shop.example`.
    pub fn email(sink: &SmtpSink) -> Channel {
        Channel(Section::new(
            "channels.email".to_owned(),
            vec![
                ("smtp_url", sink.url().into()),
                ("from", "noreply@shop.example".into()),
            ],
        ))
    }

    /// For email: this sender (`小店 <noreply@shop.example>`, say).
    pub fn from(self, from: &str) -> Channel {
        Channel(self.0.set("from", from))
    }

    /// For email: log in with this user name and password.
    pub fn login(self, username: &str, password: &str) -> Channel {
        Channel(self.0.set("username", username).set("password", password))
    }

    /// For email: log in with this user name, the password left to the credential
    /// `email.password`.
    pub fn username(self, username: &str) -> Channel {
        Channel(self.0.set("username", username))
    }

    /// For email: the subject of the mail for `status` (a template such as `订单{order_id}已签收`).
    pub fn subject(mut self, status: &str, subject: &str) -> Channel {
        self.0.tables.push(Section::new(
            format!("templates.{status}"),
            vec![("subject", subject.into())],
        ));
        self
    }

    /// `[channels.sms]`: through the fake Aliyun endpoint with its credentials and template
    /// `SMS_100000001`, quiet hours off (tests may run at any hour; quiet hours have their own
    /// test on an injected clock).
    pub fn aliyun_sms(fake: &FakeAliyunSms) -> Channel {
        Channel::aliyun_sms_with(
            &fake.url,
            &fake.access_key_id(),
            &fake.access_key_secret(),
            &fake.sign_name(),
        )
    }

    /// The same at `endpoint` (not a fake), with the shared Aliyun credentials.
    pub fn aliyun_sms_at(endpoint: &str) -> Channel {
        Channel::aliyun_sms_with(endpoint, ALIYUN_KEY_ID, ALIYUN_SECRET, ALIYUN_SIGN_NAME)
    }

    fn aliyun_sms_with(endpoint: &str, key_id: &str, secret: &str, sign_name: &str) -> Channel {
        Channel(Section::new(
            "channels.sms".to_owned(),
            vec![
                ("kind", "aliyun".into()),
                ("endpoint", endpoint.into()),
                ("access_key_id", key_id.into()),
                ("access_key_secret", secret.into()),
                ("sign_name", sign_name.into()),
                ("template_code", "SMS_100000001".into()),
                ("quiet_hours", "off".into()),
            ],
        ))
    }

    /// For Aliyun: this template instead of `SMS_100000001`.
    pub fn template_code(self, code: &str) -> Channel {
        Channel(self.0.set("template_code", code))
    }

    /// For Aliyun: only these template variables are sent.
    pub fn params(self, names: &[&str]) -> Channel {
        Channel(self.0.set("params", names.to_vec()))
    }

    /// For SMS: quiet hours as the daemon has them when the config says nothing.
    pub fn default_quiet_hours(self) -> Channel {
        Channel(self.0.unset("quiet_hours"))
    }

    /// `[channels.sms]`: the generic HTTP gateway channel posting `body` (a template) to `url`,
    /// quiet hours off.
    pub fn http_sms(url: &str, body: &str) -> Channel {
        Channel(Section::new(
            "channels.sms".to_owned(),
            vec![
                ("kind", "http".into()),
                ("url", url.into()),
                ("body", body.into()),
                ("quiet_hours", "off".into()),
            ],
        ))
    }

    /// `[channels.sms]`: the generic HTTP gateway channel to the fake gateway, with the body and
    /// the success rule its Tencent-style answers need, quiet hours off.
    pub fn sms_gateway(fake: &FakeSmsGateway) -> Channel {
        let section = Channel::http_sms(&fake.url, fake_sms_gateway::BODY)
            .0
            .set("success_pointer", fake_sms_gateway::SUCCESS_POINTER)
            .set("success_value", fake_sms_gateway::SUCCESS_VALUE);
        Channel(section)
    }

    /// For the HTTP gateway: request headers read from this file, in the app's folder.
    pub fn headers_file(self, file: &str) -> Channel {
        Channel(self.0.set("headers_file", file))
    }

    /// `[channels.dingtalk]`: the fake robot's webhook and, when it signs, its secret, both
    /// inline.
    pub fn dingtalk(fake: &FakeDingtalk) -> Channel {
        let mut keys = vec![("url", fake.url.as_str().into())];
        if let Some(secret) = fake.secret() {
            keys.push(("secret", secret.into()));
        }
        Channel(Section::new("channels.dingtalk".to_owned(), keys))
    }

    /// `[channels.wecom]`: the fake robot's webhook, its key inline.
    pub fn wecom(fake: &FakeWecom) -> Channel {
        Channel::wecom_at(&fake.url)
    }

    /// `[channels.wecom]` posting to `url`.
    pub fn wecom_at(url: &str) -> Channel {
        Channel(Section::new(
            "channels.wecom".to_owned(),
            vec![("url", url.into())],
        ))
    }

    /// `[channels.feishu]`: the fake bot's webhook and, when it signs, its secret, both inline.
    pub fn feishu(fake: &FakeFeishu) -> Channel {
        let mut keys = vec![("url", fake.url.as_str().into())];
        if let Some(secret) = fake.secret() {
            keys.push(("secret", secret.into()));
        }
        Channel(Section::new("channels.feishu".to_owned(), keys))
    }

    /// `[channels.wechat]`: the fake account's endpoint, appid, secret (inline) and template,
    /// with data keys of four types filled from the change and a link to the order.
    pub fn wechat(fake: &FakeWechat) -> Channel {
        let mut data = toml::Table::new();
        data.insert("character_string1".into(), "{order_id}".into());
        data.insert("phrase2".into(), "{status}".into());
        data.insert("thing3".into(), "{event}".into());
        data.insert("time4".into(), "{event_time}".into());
        Channel(Section::new(
            "channels.wechat".to_owned(),
            vec![
                ("endpoint", fake.base.as_str().into()),
                ("appid", fake.appid().into()),
                ("secret", fake.secret().into()),
                ("template_id", fake.template_id().into()),
                ("url", "https://shop.example/orders/{order_id}".into()),
                ("data", Value::Toml(toml::Value::Table(data))),
            ],
        ))
    }

    /// For WeChat: this template id instead of the fake's.
    pub fn template_id(self, id: &str) -> Channel {
        Channel(self.0.set("template_id", id))
    }

    /// For a robot: this signing secret instead of the fake's.
    pub fn secret(self, secret: &str) -> Channel {
        Channel(self.0.set("secret", secret))
    }

    /// For a robot or WeChat: this `rate_limit`.
    pub fn rate_limit(self, rate: &str) -> Channel {
        Channel(self.0.set("rate_limit", rate))
    }

    /// For a robot: these trigger statuses.
    pub fn statuses(self, statuses: &[&str]) -> Channel {
        let list: Vec<toml::Value> = statuses.iter().map(|s| (*s).into()).collect();
        Channel(self.0.set("statuses", list))
    }

    pub(super) fn render(&self, harness: &Harness, out: &mut String) {
        self.0.render(harness, "", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARNESS: Harness = Harness {
        top_url: "http://127.0.0.1:1/router/rest",
        receiver_url: "http://127.0.0.1:2/hook",
        webhook_secret: "whsec_c2VjcmV0",
    };

    fn parse(pieces: &[&dyn Fn(&mut String)]) -> toml::Table {
        let mut text = String::new();
        for piece in pieces {
            piece(&mut text);
        }
        text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn pieces_write_the_sections_they_stand_for() {
        let top = Provider::top()
            .named("tb2")
            .inline_secret()
            .session("other");
        let sim = Provider::simulator().step("1s");
        let hook = Channel::webhook();
        let sms = Channel::http_sms("http://127.0.0.1:3/sms", fake_sms_gateway::BODY)
            .params(&["order_id", "event"])
            .default_quiet_hours();
        let config = parse(&[
            &|out| top.render(&HARNESS, out),
            &|out| sim.render(&HARNESS, out),
            &|out| hook.render(&HARNESS, out),
            &|out| sms.render(&HARNESS, out),
        ]);
        let tb2 = &config["providers"]["tb2"];
        assert_eq!(tb2["endpoint"].as_str(), Some(HARNESS.top_url));
        assert_eq!(tb2["app_secret"].as_str(), Some(APP_SECRET));
        assert_eq!(tb2["session"].as_str(), Some("other"));
        assert!(tb2.get("app_secret_file").is_none());
        assert_eq!(config["providers"]["sim"]["step"].as_str(), Some("1s"));
        let hook = &config["channels"]["webhook"];
        assert_eq!(hook["url"].as_str(), Some(HARNESS.receiver_url));
        assert_eq!(hook["secret"].as_str(), Some(HARNESS.webhook_secret));
        let sms = &config["channels"]["sms"];
        assert_eq!(sms["body"].as_str(), Some(fake_sms_gateway::BODY));
        assert_eq!(sms["params"].as_array().map(Vec::len), Some(2));
        assert!(sms.get("quiet_hours").is_none());
    }

    #[test]
    fn email_subjects_are_tables_under_the_channel() {
        let email = Channel(Section::new(
            "channels.email".to_owned(),
            vec![
                ("smtp_url", "smtp://127.0.0.1:4".into()),
                ("from", "noreply@shop.example".into()),
            ],
        ))
        .from("小店 <noreply@shop.example>")
        .login("shop-mailer", "pw \"quoted\"")
        .subject("delivered", "订单{order_id}已签收");
        let mut text = String::new();
        email.render(&HARNESS, &mut text);
        assert!(
            text.contains("from = \"小店 <noreply@shop.example>\"\n"),
            "{text}"
        );
        let config: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        let email = &config["channels"]["email"];
        assert_eq!(email["password"].as_str(), Some("pw \"quoted\""));
        assert_eq!(
            email["templates"]["delivered"]["subject"].as_str(),
            Some("订单{order_id}已签收")
        );
    }
}
