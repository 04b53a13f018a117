//! SMS through any vendor with an HTTP API: a configured URL, method, headers and body template.
//!
//! The body template names values in braces: `{phone}` (the recipient as queued), `{text}` (the
//! whole SMS) and the message's parameters (`{order_id}`, `{tracking_no}`, `{carrier}`,
//! `{status}`, `{event}`, `{event_time}`). As in Rust's `format!`, a literal brace is written
//! twice, so a JSON body looks like `{{"to":"{phone}","content":"{text}"}}`.
//!
//! Values are escaped for the body they land in. A template that starts with `{` or `[` (after
//! leading whitespace) is taken as JSON: values are inserted JSON-escaped, without quotes, so the
//! template puts them inside its own string literals. Any other template is taken as a form
//! (`application/x-www-form-urlencoded`): values are form-encoded, so `to={phone}&msg={text}`
//! works. The `Content-Type` follows unless a configured header sets one.
//!
//! Many gateways answer HTTP 200 to a message they refuse and put the verdict in the body: Tencent
//! Cloud SMS, for one, answers `SendSms` with `Response.SendStatusSet[i].Code`, `"Ok"` for a
//! message accepted and an error code otherwise (Tencent Cloud API 3.0 `SendSms`,
//! https://www.tencentcloud.com/document/product/382/40536, and its data type `SendStatus`,
//! https://www.tencentcloud.com/document/product/382/40473). So a [`SuccessRule`] decides: the
//! status must be in its range (2xx by default) and, when it names a JSON pointer, the answer must
//! hold the expected value there. A status in range whose body fails the rule is a failed attempt
//! (retried, then dead), with the start of the gateway's answer as the reason. Outside the range,
//! any other 2xx, 408, 429 and 5xx are retried (honouring `Retry-After`); anything else is dead
//! with the status and the start of the body.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use super::sms_aliyun::redact;
use super::{Channel, ChannelKind, DeliveryError, Outgoing, SmsMessage, excerpt, read_answer};
use crate::domain::{Secret, mask_contact};

/// Every name a body template may use. Names a message does not carry render as empty.
pub const PLACEHOLDERS: [&str; 8] = [
    "phone",
    "text",
    "order_id",
    "tracking_no",
    "carrier",
    "status",
    "event",
    "event_time",
];

/// A `success_*` setting that cannot say when an answer means sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSuccessRule {
    #[error(
        "success_status = {0:?} is not an HTTP status or range: write e.g. \"200\" or \"200-299\""
    )]
    Status(String),
    #[error(
        "success_pointer = {0:?} is not a JSON pointer: it starts with `/`, e.g. \"/Response/SendStatusSet/0/Code\""
    )]
    Pointer(String),
    #[error("success_pointer needs success_value, the value that means sent (e.g. \"Ok\")")]
    PointerWithoutValue,
    #[error(
        "success_value needs success_pointer, where in the answer to look (e.g. \"/Response/SendStatusSet/0/Code\")"
    )]
    ValueWithoutPointer,
}

/// What is wrong with an SMS body template, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyTemplateError {
    #[error(
        "unmatched `}}` at byte {at} of the SMS body template (write `}}}}` for a literal brace)"
    )]
    Unmatched { at: usize },
    #[error(
        "unclosed `{{` at byte {at} of the SMS body template (write `{{{{` for a literal brace)"
    )]
    Unclosed { at: usize },
    #[error(
        "`{{{name}}}` at byte {at} of the SMS body template is not a placeholder \
         (write `{{{{` and `}}}}` for literal braces)"
    )]
    NotAPlaceholder { name: String, at: usize },
    #[error("unknown placeholder {{{name}}} in the SMS body template; known: {known}")]
    UnknownPlaceholder { name: String, known: String },
}

/// When a gateway's answer means the SMS was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessRule {
    /// The HTTP statuses that can mean sent.
    pub statuses: RangeInclusive<u16>,
    /// A JSON pointer (RFC 6901) into the answer and the value it must hold there. A string
    /// compares as its text, a number or boolean as its JSON (`0`, `true`).
    pub pointer: Option<(String, String)>,
}

impl Default for SuccessRule {
    fn default() -> Self {
        SuccessRule {
            statuses: 200..=299,
            pointer: None,
        }
    }
}

impl SuccessRule {
    /// From the config keys `success_status` (`"200"` or `"200-299"`), `success_pointer` and
    /// `success_value` (given together or not at all).
    pub fn parse(
        status: Option<&str>,
        pointer: Option<String>,
        value: Option<String>,
    ) -> Result<SuccessRule, InvalidSuccessRule> {
        let statuses = match status {
            None => 200..=299,
            Some(text) => {
                let (low, high) = text.split_once('-').unwrap_or((text, text));
                let code = |part: &str| {
                    part.trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|code| (100..=599).contains(code))
                };
                match (code(low), code(high)) {
                    (Some(low), Some(high)) if low <= high => low..=high,
                    _ => return Err(InvalidSuccessRule::Status(text.to_owned())),
                }
            }
        };
        let pointer = match (pointer, value) {
            (None, None) => None,
            (Some(pointer), Some(value)) => {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    return Err(InvalidSuccessRule::Pointer(pointer));
                }
                Some((pointer, value))
            }
            (Some(_), None) => return Err(InvalidSuccessRule::PointerWithoutValue),
            (None, Some(_)) => return Err(InvalidSuccessRule::ValueWithoutPointer),
        };
        Ok(SuccessRule { statuses, pointer })
    }

    /// Why an answer whose status is in range does not mean sent, or `None` when it does.
    pub fn refusal(&self, body: &str) -> Option<String> {
        let (pointer, expected) = self.pointer.as_ref()?;
        let Ok(answer) = serde_json::from_str::<serde_json::Value>(body) else {
            return Some(format!(
                "the answer is not JSON, so {pointer} cannot say {expected:?}"
            ));
        };
        let found = match answer.pointer(pointer) {
            None => {
                return Some(format!(
                    "the answer has no {pointer}, expected {expected:?}"
                ));
            }
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        };
        if found == *expected {
            None
        } else {
            Some(format!(
                "{pointer} is {:?}, not {expected:?}",
                excerpt(&found)
            ))
        }
    }
}

/// The gateway and what to send it.
#[derive(Clone)]
pub struct HttpSmsConfig {
    /// May carry an API key in its query; error messages show only scheme, host and path.
    pub url: String,
    pub method: reqwest::Method,
    /// Sent as configured; values are secrets because they usually hold tokens.
    pub headers: Vec<(String, Secret)>,
    /// The body template (see the module documentation).
    pub body: String,
    /// When an answer means sent.
    pub success: SuccessRule,
    pub timeout: Duration,
}

/// The URL is shown as its endpoint only: gateways take API keys in the path or the query.
impl std::fmt::Debug for HttpSmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSmsConfig")
            .field("url", &crate::shown::endpoint(&self.url))
            .field("method", &self.method)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .field("success", &self.success)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for HttpSmsConfig {
    fn default() -> Self {
        HttpSmsConfig {
            url: String::new(),
            method: reqwest::Method::POST,
            headers: Vec::new(),
            body: String::new(),
            success: SuccessRule::default(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Whether a template is a JSON body, which decides how values are escaped.
pub fn is_json_template(template: &str) -> bool {
    matches!(template.trim_start().chars().next(), Some('{' | '['))
}

enum Piece<'a> {
    Literal(&'a str),
    Placeholder(&'a str),
}

/// Splits a template into literals and placeholders; `{{` and `}}` are literal braces.
fn parse(template: &str) -> Result<Vec<Piece<'_>>, BodyTemplateError> {
    let mut pieces = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(at) = rest.find(['{', '}']) {
        if at > 0 {
            pieces.push(Piece::Literal(&rest[..at]));
        }
        let brace = &rest[at..at + 1];
        if rest[at + 1..].starts_with(brace) {
            pieces.push(Piece::Literal(brace));
            rest = &rest[at + 2..];
            offset += at + 2;
            continue;
        }
        if brace == "}" {
            return Err(BodyTemplateError::Unmatched { at: offset + at });
        }
        let Some(len) = rest[at + 1..].find('}') else {
            return Err(BodyTemplateError::Unclosed { at: offset + at });
        };
        let name = &rest[at + 1..at + 1 + len];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(BodyTemplateError::NotAPlaceholder {
                name: name.to_owned(),
                at: offset + at,
            });
        }
        pieces.push(Piece::Placeholder(name));
        rest = &rest[at + len + 2..];
        offset += at + len + 2;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

/// Fills a template with `values`, escaped for the body kind (see the module documentation).
/// Fails on a placeholder that has no value, naming it, and on stray braces.
pub fn render(
    template: &str,
    values: &BTreeMap<&str, String>,
) -> Result<String, BodyTemplateError> {
    let json = is_json_template(template);
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Literal(text) => out.push_str(text),
            Piece::Placeholder(name) => {
                let Some(value) = values.get(name) else {
                    let known: Vec<&str> = values.keys().copied().collect();
                    return Err(BodyTemplateError::UnknownPlaceholder {
                        name: name.to_owned(),
                        known: known.join(", "),
                    });
                };
                if json {
                    out.push_str(&json_escape(value));
                } else {
                    out.push_str(&form_encode(value));
                }
            }
        }
    }
    Ok(out)
}

/// The inside of a JSON string literal holding `value`.
fn json_escape(value: &str) -> String {
    let quoted = serde_json::to_string(value).expect("a string serialises");
    quoted[1..quoted.len() - 1].to_owned()
}

/// `application/x-www-form-urlencoded`: alphanumerics and `*-._` kept, space as `+`, the rest
/// percent-encoded in UTF-8.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The HTTP SMS gateway [`Channel`].
#[derive(Debug, Clone)]
pub struct HttpSms {
    config: HttpSmsConfig,
    http: reqwest::Client,
}

impl HttpSms {
    /// `http` should not follow redirects (see [`super::no_redirect_client`]): a redirect means the
    /// URL is wrong, and following it would hand the phone number and tokens to another host.
    pub fn new(config: HttpSmsConfig, http: reqwest::Client) -> HttpSms {
        HttpSms { config, http }
    }

    /// The URL without credentials and with query values masked, for messages: gateways often
    /// take a key in the query.
    fn shown_url(&self) -> String {
        crate::shown::url(&self.config.url)
    }

    fn headers(&self) -> Result<HeaderMap, DeliveryError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.config.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                DeliveryError::Permanent(format!("SMS gateway header name {name:?} is invalid"))
            })?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                DeliveryError::Permanent(format!("SMS gateway header {name} has an invalid value"))
            })?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            let kind = if is_json_template(&self.config.body) {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
        }
        if !headers.contains_key(USER_AGENT) {
            headers.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("shipwatch/", env!("CARGO_PKG_VERSION"))),
            );
        }
        Ok(headers)
    }

    fn send_error(&self, error: &reqwest::Error) -> DeliveryError {
        super::unanswered(
            &format!("SMS gateway {}", self.shown_url()),
            error,
            self.config.timeout,
        )
    }
}

#[async_trait]
impl Channel for HttpSms {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<(), DeliveryError> {
        let phone = outgoing
            .recipient
            .as_deref()
            .map(str::trim)
            .filter(|phone| !phone.is_empty())
            .ok_or_else(|| DeliveryError::Permanent("SMS without a phone number".into()))?;
        let message: SmsMessage = serde_json::from_str(&outgoing.payload).map_err(|e| {
            DeliveryError::Permanent(format!("queued SMS payload is not an SmsMessage: {e}"))
        })?;

        let mut values: BTreeMap<&str, String> = PLACEHOLDERS
            .iter()
            .map(|name| (*name, String::new()))
            .collect();
        for (name, value) in &message.params {
            values.insert(name.as_str(), value.clone());
        }
        values.insert("phone", phone.to_owned());
        values.insert("text", message.text.clone());
        let body = render(&self.config.body, &values)
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;

        let response = self
            .http
            .request(self.config.method.clone(), &self.config.url)
            .timeout(self.config.timeout)
            .headers(self.headers()?)
            .body(body)
            .send()
            .await
            .map_err(|e| self.send_error(&e))?;

        let status = response.status();
        let retry_after = crate::http_body::retry_after(response.headers(), Utc::now());
        let body = read_answer(response).await;
        let shown = match excerpt(&body) {
            text if text.is_empty() => "empty body".to_owned(),
            text => text,
        };
        let url = self.shown_url();
        let to = mask_contact(phone);
        if self.config.success.statuses.contains(&status.as_u16()) {
            let Some(refusal) = self.config.success.refusal(&body) else {
                tracing::debug!(to = %to, %status, "SMS accepted by the gateway");
                return Ok(());
            };
            // Refused in the body: the gateway's own words say why. Whether a retry can help is
            // not known, so it is retried, which the outbox bounds to its attempts.
            let answered = format!(
                "SMS gateway {url} answered {status} for {to} but refused it: {refusal}: {shown}"
            );
            return Err(DeliveryError::Transient {
                message: redact(&answered, phone),
                retry_after,
            });
        }
        let answered = redact(
            &format!("SMS gateway {url} answered {status} for {to}: {shown}"),
            phone,
        );
        let retryable = status.is_success()
            || status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        Err(if retryable {
            DeliveryError::Transient {
                message: answered,
                retry_after,
            }
        } else {
            DeliveryError::Permanent(answered)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn json_templates_get_json_escaped_values() {
        let template = r#"{{"to":"{phone}","content":"{text}"}}"#;
        let text = "包裹已签收,\"前台\"代收\n谢谢\\ \u{1}";
        let body = render(
            template,
            &values(&[("phone", "+8613812345678"), ("text", text)]),
        )
        .unwrap();
        assert_eq!(
            body,
            r#"{"to":"+8613812345678","content":"包裹已签收,\"前台\"代收\n谢谢\\ \u0001"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["content"], text);

        let array = render(
            " [{{\"id\":\"{order_id}\"}}]",
            &values(&[("order_id", "E\"1")]),
        );
        assert_eq!(array.unwrap(), r#" [{"id":"E\"1"}]"#);
    }

    #[test]
    fn other_templates_get_form_encoded_values() {
        let body = render(
            "to={phone}&msg={text}",
            &values(&[("phone", "+86 138"), ("text", "已签收 a&b=c*~")]),
        )
        .unwrap();
        assert_eq!(
            body,
            "to=%2B86+138&msg=%E5%B7%B2%E7%AD%BE%E6%94%B6+a%26b%3Dc*%7E"
        );
    }

    #[test]
    fn doubled_braces_are_literal() {
        let body = render("{{literal}} {{{text}}}", &values(&[("text", "x")])).unwrap();
        assert_eq!(body, "{literal} {x}");
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let err = render(
            r#"{{"to":"{phone}","x":"{tracking_number}"}}"#,
            &values(&[("phone", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("{tracking_number}"), "{err}");
        assert!(err.contains("known: phone"), "{err}");
    }

    #[test]
    fn stray_braces_are_errors() {
        for (template, hint) in [
            (r#"{"to":"{phone}"}"#, "not a placeholder"),
            ("text {phone", "unclosed `{`"),
            ("text } more", "unmatched `}`"),
            ("{}", "not a placeholder"),
        ] {
            let err = render(template, &values(&[("phone", "1")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(hint), "{template}: {err}");
        }
    }

    /// The error names the byte where the mistake is, counted over the escaped braces and the
    /// placeholders before it, so that a long JSON template can be fixed without guessing.
    #[test]
    fn stray_braces_are_placed_at_their_byte() {
        let values = values(&[("phone", "1"), ("text", "x")]);
        for (template, error) in [
            ("{{ {phone} } ", BodyTemplateError::Unmatched { at: 11 }),
            (
                "{phone} {{x}} {text",
                BodyTemplateError::Unclosed { at: 14 },
            ),
            (
                "{{{phone}}} {bad-name}",
                BodyTemplateError::NotAPlaceholder {
                    name: "bad-name".into(),
                    at: 12,
                },
            ),
        ] {
            assert_eq!(render(template, &values), Err(error), "{template}");
        }
    }

    #[test]
    fn success_rules_parse_from_the_config_keys() {
        let rule = |status: Option<&str>, pointer: Option<&str>, value: Option<&str>| {
            SuccessRule::parse(status, pointer.map(str::to_owned), value.map(str::to_owned))
        };
        assert_eq!(rule(None, None, None), Ok(SuccessRule::default()));
        assert_eq!(rule(Some("200"), None, None).unwrap().statuses, 200..=200);
        assert_eq!(
            rule(Some("200-202"), None, None).unwrap().statuses,
            200..=202
        );
        let tencent = rule(None, Some("/Response/SendStatusSet/0/Code"), Some("Ok")).unwrap();
        assert_eq!(
            tencent.pointer,
            Some(("/Response/SendStatusSet/0/Code".to_owned(), "Ok".to_owned()))
        );
        for (status, pointer, value, hint) in [
            (Some("2xx"), None, None, "not an HTTP status"),
            (Some("299-200"), None, None, "not an HTTP status"),
            (Some("600"), None, None, "not an HTTP status"),
            (None, Some("Response/Code"), Some("Ok"), "starts with `/`"),
            (None, Some("/Code"), None, "needs success_value"),
            (None, None, Some("Ok"), "needs success_pointer"),
        ] {
            let error = rule(status, pointer, value).unwrap_err().to_string();
            assert!(
                error.contains(hint),
                "{status:?} {pointer:?} {value:?}: {error}"
            );
        }
    }

    /// One row per kind of answer to a Tencent-style rule.
    #[test]
    fn success_rule_reads_the_verdict_in_the_body() {
        let rule = SuccessRule::parse(
            None,
            Some("/Response/SendStatusSet/0/Code".to_owned()),
            Some("Ok".to_owned()),
        )
        .unwrap();
        let tencent = |code: &str| {
            format!(
                r#"{{"Response":{{"SendStatusSet":[{{"SerialNo":"5000:1","PhoneNumber":"+8613812345678","Fee":1,"Code":"{code}","Message":"m"}}],"RequestId":"r"}}}}"#
            )
        };
        let table: &[(String, Option<&str>)] = &[
            (tencent("Ok"), None),
            (tencent("ok"), Some(r#"is "ok", not "Ok""#)),
            (
                tencent("LimitExceeded.PhoneNumberDailyLimit"),
                Some(r#"is "LimitExceeded.PhoneNumberDailyLimit", not "Ok""#),
            ),
            (
                r#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"m"}}}"#
                    .to_owned(),
                Some("has no /Response/SendStatusSet/0/Code"),
            ),
            ("<html>busy</html>".to_owned(), Some("not JSON")),
            (String::new(), Some("not JSON")),
        ];
        for (body, refusal) in table {
            match (rule.refusal(body), refusal) {
                (None, None) => {}
                (Some(found), Some(hint)) => assert!(found.contains(hint), "{body}: {found}"),
                (found, _) => panic!("{body}: {found:?}, expected {refusal:?}"),
            }
        }
        // Numbers and booleans compare as their JSON.
        let numeric =
            SuccessRule::parse(None, Some("/code".to_owned()), Some("0".to_owned())).unwrap();
        assert_eq!(numeric.refusal(r#"{"code":0}"#), None);
        assert!(numeric.refusal(r#"{"code":1}"#).is_some());
        // Without a pointer, any body in range is sent.
        assert_eq!(SuccessRule::default().refusal("anything"), None);
    }

    #[test]
    fn json_detection_looks_at_the_first_character() {
        assert!(is_json_template("  {{\"a\":1}}"));
        assert!(is_json_template("\n[1]"));
        assert!(!is_json_template("to={phone}"));
        assert!(!is_json_template(""));
    }
}
