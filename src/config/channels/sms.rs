//! The `[channels.sms]` section: the vendor (Aliyun or a generic HTTP gateway) with its keys,
//! quiet hours and the registered templates Aliyun needs for every status it sends.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::super::secrets::SecretResolver;
use super::super::{ConfigError, Delivery, check_url, endpoint, invalid, required};
use super::{
    BUYER_TRIGGERS, ChannelSettings, RawTexts, SMS_CONCURRENCY, concurrency, parse_texts,
    parse_triggers, yes,
};
use crate::domain::Secret;
use crate::notify::sms_aliyun::AliyunSmsConfig;
use crate::notify::sms_http::HttpSmsConfig;
use crate::notify::template::QuietHours;

/// The SMS vendor.
#[derive(Debug, Clone)]
pub enum SmsSettings {
    Aliyun(AliyunSmsConfig),
    Http(HttpSmsConfig),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSms {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
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
    /// Deliveries at once; `SMS_CONCURRENCY` by default.
    concurrency: Option<usize>,
}

pub(super) fn resolve_sms(
    raw: RawSms,
    secrets: &SecretResolver,
    delivery: &Delivery,
) -> Result<ChannelSettings<SmsSettings>, ConfigError> {
    let section = "[channels.sms]";
    let timeout = delivery.timeout;
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
    let triggers = parse_triggers(section, raw.statuses, Some(&BUYER_TRIGGERS))?;
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
        alerts: None,
        concurrency: concurrency(
            section,
            raw.concurrency,
            SMS_CONCURRENCY.min(delivery.concurrency),
        )?,
    })
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
fn parse_header_lines(text: &str) -> Result<Vec<(String, String)>, BadHeaderLine> {
    let mut headers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let (name, value) = line.split_once(':').ok_or(BadHeaderLine::NoColon(n))?;
        let (name, value) = (name.trim(), value.trim());
        // A field name is an RFC 9110 token (https://www.rfc-editor.org/rfc/rfc9110#section-5.1).
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(BadHeaderLine::Name(n));
        }
        if value.is_empty() || reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(BadHeaderLine::Value(n, name.to_owned()));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(headers)
}

/// What is wrong with a line of a headers file; never the value it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BadHeaderLine {
    #[error("line {0}: expected `Name: value`")]
    NoColon(usize),
    #[error("line {0}: the header name is not a valid HTTP token")]
    Name(usize),
    // The name is a valid HTTP token by now: printable ASCII, nothing to escape.
    #[error("line {0}: the value of header {1} is empty or not a valid header value")]
    Value(usize, String),
}

#[cfg(test)]
mod tests {
    use super::super::super::Config;
    use super::super::super::tests::parse;
    use super::super::ChannelSettings;
    use super::*;

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
                    let err = got.unwrap_err().to_string();
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
