//! Webhook channel, signed per Standard Webhooks.
//!
//! Every attempt POSTs the queued payload unchanged with three headers: `webhook-id` (the
//! notification's stable id, so a receiver can drop duplicates across retries),
//! `webhook-timestamp` (unix seconds, so it can refuse replays) and `webhook-signature`
//! (`v1,` + base64 HMAC-SHA256 over `{id}.{timestamp}.{body}`).
//!
//! A receiver that answers 410 Gone says the endpoint is no more: every later notification
//! would meet the same answer. Rather than kill one row and send the next one to the same dead
//! end, the channel stops itself ([`ChannelStop`], as the SMS channel does when it runs out of
//! credit): one loud log line, `stats` shows it, the notifications wait `pending` without
//! spending attempts, and a reload or restart (after the endpoint is fixed) lifts it.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::Utc;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use sha2::Sha256;

use super::{Channel, ChannelKind, ChannelStop, DeliveryError, Outgoing, excerpt, read_answer};

pub use super::MAX_ANSWER_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// The Standard Webhooks forms of a key, from the specification's "Signature scheme" table
/// (https://github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md):
/// `whsec_` + base64 for an HMAC-SHA256 secret; `whsk_` / `whpk_` for an ed25519 secret / public
/// key (signatures `v1a`), which this sender does not make.
const SECRET_PREFIX: &str = "whsec_";
const ASYMMETRIC_PREFIXES: [&str; 2] = ["whsk_", "whpk_"];

/// The specification asks for a random signing secret of at least 24 bytes (192 bits), same
/// table. The reference libraries (libraries/ in the same repository) only refuse an empty key,
/// so a shorter key would still verify there; it is refused here because it is too weak to
/// keep the payloads authentic.
pub const MIN_KEY_BYTES: usize = 24;

/// Base64 with or without padding: the Python reference library accepts both, so a secret that
/// one receiver takes must not be refused here.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How long the channel stops after a 410 Gone when no reload or restart lifts it sooner: an
/// hour, after which one delivery tries the endpoint again (it may have come back).
pub const GONE_PAUSE: Duration = Duration::from_secs(60 * 60);

/// How to make a key that passes: 32 random bytes in the Standard Webhooks form.
const HOW_TO_GENERATE: &str = "generate one with `echo \"whsec_$(head -c 32 /dev/urandom | base64)\"` and give the receiver the same";

/// The key shared with the receiver. Parsed once from the config so that signing cannot fail.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

/// Why a configured webhook secret is unusable. No variant holds any part of the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("webhook secret is empty; {HOW_TO_GENERATE}")]
    Empty,
    #[error(
        "webhook secret starts with `whsec_` but the rest is not base64 (first fault at character {0} after the prefix); {HOW_TO_GENERATE}"
    )]
    InvalidBase64(usize),
    #[error(
        "webhook secret is a Standard Webhooks ed25519 key (`{0}`), but shipwatch signs with HMAC-SHA256 (v1): use a `whsec_` secret; {HOW_TO_GENERATE}"
    )]
    Asymmetric(&'static str),
    #[error(
        "webhook secret is a {0}-byte key; Standard Webhooks requires at least {MIN_KEY_BYTES} random bytes; {HOW_TO_GENERATE}"
    )]
    TooShort(usize),
}

impl WebhookSecret {
    /// `whsec_<base64>` is the Standard Webhooks form: the key is the decoded bytes. Anything
    /// else is taken as the raw key, which is what receivers that only document "a shared
    /// secret" expect. Either way the key has at least [`MIN_KEY_BYTES`] bytes.
    pub fn parse(secret: &str) -> Result<WebhookSecret, SecretError> {
        if let Some(prefix) = ASYMMETRIC_PREFIXES.iter().find(|p| secret.starts_with(*p)) {
            return Err(SecretError::Asymmetric(prefix));
        }
        let key = match secret.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => LENIENT_BASE64.decode(encoded).map_err(|e| {
                // The error's own text quotes the offending character: a piece of the secret.
                let at = match e {
                    base64::DecodeError::InvalidByte(at, _)
                    | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                    _ => encoded.len(),
                };
                SecretError::InvalidBase64(at)
            })?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        if key.len() < MIN_KEY_BYTES {
            return Err(SecretError::TooShort(key.len()));
        }
        Ok(WebhookSecret(key))
    }

    /// A stand-in for a secret that was not loaded (admin commands read no secrets). It is
    /// random, so nothing signed with it by mistake verifies anywhere.
    pub(crate) fn unloaded() -> WebhookSecret {
        WebhookSecret(rand::random::<[u8; 32]>().to_vec())
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `webhook-signature` value for one attempt.
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &str) -> String {
    let tag = secret
        .mac(id, &timestamp.to_string(), body.as_bytes())
        .finalize()
        .into_bytes();
    format!("v1,{}", BASE64.encode(tag))
}

/// Why a received webhook was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp {0:?} is not unix seconds")]
    InvalidTimestamp(String),
    #[error(
        "webhook-timestamp is {skew_secs}s away from now, more than the {tolerance_secs}s allowed"
    )]
    OutsideTolerance { skew_secs: i64, tolerance_secs: i64 },
    #[error("no v1 signature in webhook-signature matches")]
    NoMatchingSignature,
}

/// Checks a received webhook the way a receiver should: the timestamp within `tolerance_secs`
/// of `now_unix` (against replays), then any `v1` entry of the space-separated signature list
/// (senders list several while rotating secrets).
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let sent_at: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp(timestamp.to_owned()))?;
    let skew_secs = now_unix.saturating_sub(sent_at).saturating_abs();
    if skew_secs > tolerance_secs {
        return Err(VerifyError::OutsideTolerance {
            skew_secs,
            tolerance_secs,
        });
    }

    let mac = secret.mac(id, timestamp, body);
    let matches = signature_header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if matches {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// Where webhooks go and the key they are signed with.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: WebhookSecret,
}

/// The URL is shown as its endpoint only: webhook URLs often carry a token.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &crate::shown::endpoint(&self.url))
            .field("secret", &self.secret)
            .finish()
    }
}

/// The webhook [`Channel`].
#[derive(Debug)]
pub struct Webhook {
    config: WebhookConfig,
    /// `config.url`, parsed once: every delivery sends to it and compares the answer's URL
    /// with it. None if it does not parse (the config refuses such a URL at load).
    url: Option<reqwest::Url>,
    http: reqwest::Client,
    timeout: Duration,
    stop: ChannelStop,
}

impl Webhook {
    /// `http` should be built with `redirect(reqwest::redirect::Policy::none())` (see
    /// [`super::no_redirect_client`]): a redirect means the configured URL is wrong, and following
    /// it would hand the signed payload to whatever host the redirect names.
    pub fn new(config: WebhookConfig, http: reqwest::Client, timeout: Duration) -> Webhook {
        Webhook {
            url: reqwest::Url::parse(&config.url).ok(),
            config,
            http,
            timeout,
            stop: ChannelStop::new(GONE_PAUSE),
        }
    }

    /// The receiver said the endpoint is gone: stop, with one loud line naming the fix.
    fn gone(&self, answered: &str) -> DeliveryError {
        let url = self.shown_url();
        let minutes = self.stop.length().as_secs().div_ceil(60);
        self.stop.trip(|| {
            tracing::error!(
                url = %url,
                "WEBHOOK CHANNEL STOPPED: {answered}; no webhook is sent until a reload or restart (or a retry in {minutes} min). To fix: correct url in [channels.webhook] or restore the endpoint, then `systemctl reload shipwatch`"
            );
            // Without the receiver's body: every stop of this endpoint then reads the same, and
            // a reload or restart finds every notification a stop held back by this reason.
            format!(
                "webhook channel stopped: {url} answered 410 Gone (the endpoint no longer exists); fix url in [channels.webhook] or the receiver, then reload or restart"
            )
        })
    }

    /// The URL as messages show it: no user info, query values masked.
    fn shown_url(&self) -> String {
        crate::shown::url(&self.config.url)
    }

    fn send_error(&self, error: reqwest::Error) -> DeliveryError {
        let url = self.shown_url();
        // reqwest's own text repeats the whole URL, secrets included.
        let error = error.without_url();
        if error.is_builder() {
            return DeliveryError::Permanent(format!(
                "webhook url {url} is unusable: {}",
                error_chain(&error)
            ));
        }
        if let Some(shortage) = super::local_shortage(&error) {
            return super::not_attempted(&format!("webhook to {url}"), shortage);
        }
        let message = if error.is_timeout() {
            format!(
                "timed out after {} waiting for {url}",
                format_duration(self.timeout)
            )
        } else if let Some(reason) = certificate_error(&error) {
            format!(
                "TLS certificate of {url} not accepted ({reason}); webhooks go only to receivers whose certificate the system trusts"
            )
        } else if is_connection_refused(&error) {
            format!("connection refused to {url}")
        } else if error.is_connect() {
            format!("could not connect to {url}: {}", error_chain(&error))
        } else {
            format!("request to {url} failed: {}", error_chain(&error))
        };
        DeliveryError::Transient {
            message,
            retry_after: None,
        }
    }
}

#[async_trait]
impl Channel for Webhook {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn resume(&self) {
        self.stop.lift();
    }

    async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        if let Some(stopped) = self.stop.check() {
            return Err(stopped);
        }
        let timestamp = Utc::now().timestamp();
        let signature = sign(
            &self.config.secret,
            &message.public_id,
            timestamp,
            &message.payload,
        );
        let response = crate::http_body::post(&self.http, self.url.as_ref(), &self.config.url)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("shipwatch/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &message.public_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.payload.clone())
            .send()
            .await
            .map_err(|e| self.send_error(e))?;

        let status = response.status();
        if status.is_success() {
            // A client that follows redirects lands here with the final answer; the configured
            // URL is still wrong and the payload went somewhere nobody configured.
            if self.url.as_ref() != Some(response.url()) {
                return Err(DeliveryError::Permanent(format!(
                    "webhook url {} redirected to {}; configure the final URL",
                    self.shown_url(),
                    crate::shown::url(response.url().as_str())
                )));
            }
            return Ok(());
        }

        let retry_after = crate::http_body::retry_after(response.headers(), Utc::now());
        let excerpt = excerpt(&read_answer(response).await);
        let url = self.shown_url();
        let answered = if excerpt.is_empty() {
            format!("{url} answered {status}")
        } else {
            format!("{url} answered {status}: {excerpt}")
        };
        if status == StatusCode::GONE {
            return Err(self.gone(&answered));
        }
        Err(classify(status, answered, retry_after))
    }
}

fn classify(status: StatusCode, answered: String, retry_after: Option<Duration>) -> DeliveryError {
    let retryable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if retryable {
        DeliveryError::Transient {
            message: answered,
            retry_after,
        }
    } else if status.is_redirection() {
        DeliveryError::Permanent(format!(
            "{answered} (a redirect: the webhook url is misconfigured, configure the final URL)"
        ))
    } else {
        DeliveryError::Permanent(answered)
    }
}

/// The TLS layer's reason when the receiver's certificate was refused (self-signed, expired,
/// another host's), so that the message names the certificate rather than a generic failure.
fn certificate_error(error: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if text.contains("certificate") {
            return Some(text);
        }
        source = cause.source();
    }
    None
}

fn is_connection_refused(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// reqwest's top-level message is generic ("error sending request"); the cause is further down.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::{any, post};
    use reqwest::header::RETRY_AFTER;

    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_secret() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).unwrap()
    }

    fn verify_spec(id: &str, timestamp: &str, header: &str, body: &str) -> Result<(), VerifyError> {
        verify(
            &spec_secret(),
            id,
            timestamp,
            header,
            body.as_bytes(),
            SPEC_TIMESTAMP + 10,
            300,
        )
    }

    #[test]
    fn signs_the_spec_vector() {
        assert_eq!(
            sign(&spec_secret(), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
    }

    /// One row per form of secret: what `check-config` accepts, and the key it signs with.
    #[test]
    fn secret_forms() {
        let key24 = [7u8; 24];
        let encoded = BASE64.encode(key24);
        let short = BASE64.encode([7u8; 23]);
        let accepted: &[(String, Vec<u8>)] = &[
            // The spec's own secret: 24 bytes once decoded.
            (
                SPEC_SECRET.to_owned(),
                BASE64.decode(&SPEC_SECRET[6..]).unwrap(),
            ),
            (format!("whsec_{encoded}"), key24.to_vec()),
            // Unpadded base64, as the Python reference library takes it.
            (
                format!("whsec_{}", BASE64.encode([9u8; 32]).trim_end_matches('=')),
                vec![9u8; 32],
            ),
            // Not the Standard Webhooks form: the bytes as they are.
            (
                "a-plain-shared-secret-of-32-bytes".to_owned(),
                b"a-plain-shared-secret-of-32-bytes".to_vec(),
            ),
            (encoded.clone(), encoded.as_bytes().to_vec()),
        ];
        for (secret, key) in accepted {
            assert_eq!(&WebhookSecret::parse(secret).unwrap().0, key, "{secret}");
        }

        let refused: &[(String, SecretError)] = &[
            (String::new(), SecretError::Empty),
            ("whsec_".to_owned(), SecretError::Empty),
            (format!("whsec_{short}"), SecretError::TooShort(23)),
            ("plain-shared-secret".to_owned(), SecretError::TooShort(19)),
            ("whsec_not*base64".to_owned(), SecretError::InvalidBase64(3)),
            (format!("whsk_{encoded}"), SecretError::Asymmetric("whsk_")),
            (format!("whpk_{encoded}"), SecretError::Asymmetric("whpk_")),
        ];
        for (secret, error) in refused {
            assert_eq!(
                WebhookSecret::parse(secret).as_ref(),
                Err(error),
                "{secret}"
            );
        }
        assert_eq!(format!("{:?}", spec_secret()), "WebhookSecret(<redacted>)");
    }

    /// The config's `Debug` (in a reload's or a test's output) names the receiver's endpoint, and
    /// neither the token in its URL nor the key.
    #[test]
    fn the_config_shows_its_endpoint_and_hides_its_token_and_key() {
        let config = WebhookConfig {
            url: "https://hooks.shop.example:8443/T0123/B456/s3cr3t-path?token=s3cr3t-query".into(),
            secret: spec_secret(),
        };
        let shown = format!("{config:?}");
        assert!(
            shown.contains("https://hooks.shop.example:8443/…"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            !shown.contains(SPEC_SECRET.trim_start_matches("whsec_")),
            "{shown}"
        );
    }

    /// A refusal says what is wrong and how to fix it, in one line, and quotes no part of the
    /// secret (not even the character that is not base64).
    #[test]
    fn secret_errors_are_one_line_and_never_echo_the_secret() {
        for secret in [
            "whsec_c2hvcnQ=",
            "whsec_bad*secret",
            "tiny-secret",
            "whsk_c2hvcnQ=",
        ] {
            let error = WebhookSecret::parse(secret).unwrap_err().to_string();
            assert!(!error.contains('\n'), "{error}");
            assert!(
                error.contains("whsec_$(head -c 32 /dev/urandom | base64)"),
                "{error}"
            );
            let body = secret.split_once('_').map_or(secret, |(_, rest)| rest);
            assert!(!error.contains(body), "{error}");
            assert!(!error.contains('*'), "{error}");
        }
        let short = WebhookSecret::parse("whsec_c2hvcnQ=")
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("5-byte") && short.contains("at least 24"),
            "{short}"
        );
    }

    #[test]
    fn verifies_the_spec_vector() {
        let ts = SPEC_TIMESTAMP.to_string();
        assert_eq!(verify_spec(SPEC_ID, &ts, SPEC_SIGNATURE, SPEC_BODY), Ok(()));
    }

    #[test]
    fn tampering_fails_verification() {
        let ts = SPEC_TIMESTAMP.to_string();
        let no_match = Err(VerifyError::NoMatchingSignature);
        assert_eq!(
            verify_spec(SPEC_ID, &ts, SPEC_SIGNATURE, r#"{"test": 2432232315}"#),
            no_match
        );
        assert_eq!(
            verify_spec("msg_other", &ts, SPEC_SIGNATURE, SPEC_BODY),
            no_match
        );
        let shifted = (SPEC_TIMESTAMP + 1).to_string();
        assert_eq!(
            verify_spec(SPEC_ID, &shifted, SPEC_SIGNATURE, SPEC_BODY),
            no_match
        );
        let other = WebhookSecret::parse("another secret, long enough to use").unwrap();
        let forged = sign(&other, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(verify_spec(SPEC_ID, &ts, &forged, SPEC_BODY), no_match);
        let wrong_version = SPEC_SIGNATURE.replacen("v1,", "v2,", 1);
        assert_eq!(
            verify_spec(SPEC_ID, &ts, &wrong_version, SPEC_BODY),
            no_match
        );
    }

    #[test]
    fn stale_or_future_timestamps_fail() {
        let ts = SPEC_TIMESTAMP.to_string();
        let verify_at = |now| {
            verify(
                &spec_secret(),
                SPEC_ID,
                &ts,
                SPEC_SIGNATURE,
                SPEC_BODY.as_bytes(),
                now,
                300,
            )
        };
        assert_eq!(verify_at(SPEC_TIMESTAMP + 300), Ok(()));
        assert_eq!(
            verify_at(SPEC_TIMESTAMP + 301),
            Err(VerifyError::OutsideTolerance {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert!(matches!(
            verify_at(SPEC_TIMESTAMP - 3600),
            Err(VerifyError::OutsideTolerance { .. })
        ));
        assert_eq!(
            verify_spec(SPEC_ID, "yesterday", SPEC_SIGNATURE, SPEC_BODY),
            Err(VerifyError::InvalidTimestamp("yesterday".into()))
        );
    }

    #[test]
    fn any_of_several_signatures_passes() {
        let ts = SPEC_TIMESTAMP.to_string();
        let old = sign(
            &WebhookSecret::parse("a rotated-out secret, long enough").unwrap(),
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
        );
        for header in [
            format!("{old} {SPEC_SIGNATURE}"),
            format!("{SPEC_SIGNATURE} {old}"),
            format!("v2,abc v1,!!notbase64 {SPEC_SIGNATURE}"),
        ] {
            assert_eq!(
                verify_spec(SPEC_ID, &ts, &header, SPEC_BODY),
                Ok(()),
                "{header}"
            );
        }
        assert_eq!(
            verify_spec(SPEC_ID, &ts, &format!("{old} v1,AAAA"), SPEC_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    /// Serves `router` on a fresh loopback port and returns its base URL.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}/hook")
    }

    fn webhook(url: String, timeout: Duration) -> Webhook {
        let config = WebhookConfig {
            url,
            secret: spec_secret(),
        };
        Webhook::new(
            config,
            crate::notify::no_redirect_client().unwrap(),
            timeout,
        )
    }

    fn outgoing() -> Outgoing {
        Outgoing {
            public_id: "ntf_0001".into(),
            payload: r#"{"type":"shipment.status_changed","id":"ntf_0001"}"#.into(),
            recipient: None,
        }
    }

    /// One attempt against a server that always gives `response`.
    async fn deliver_against(response: Response) -> Result<(), DeliveryError> {
        let response = Arc::new(Mutex::new(Some(response)));
        let router = Router::new().route(
            "/hook",
            post(move || {
                let response = response.clone();
                async move { response.lock().unwrap().take().unwrap() }
            }),
        );
        let url = serve(router).await;
        webhook(url, Duration::from_secs(5))
            .deliver(&outgoing())
            .await
    }

    fn transient(result: Result<(), DeliveryError>) -> (String, Option<Duration>) {
        match result {
            Err(DeliveryError::Transient {
                message,
                retry_after,
            }) => (message, retry_after),
            other => panic!("expected a transient failure, got {other:?}"),
        }
    }

    fn permanent(result: Result<(), DeliveryError>) -> String {
        match result {
            Err(DeliveryError::Permanent(message)) => message,
            other => panic!("expected a permanent failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn success_statuses_deliver() {
        assert_eq!(
            deliver_against(StatusCode::OK.into_response()).await,
            Ok(())
        );
        assert_eq!(
            deliver_against(StatusCode::NO_CONTENT.into_response()).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn client_errors_are_permanent_with_the_body() {
        let reason = permanent(
            deliver_against((StatusCode::BAD_REQUEST, "unknown event type").into_response()).await,
        );
        assert!(reason.contains("400 Bad Request"), "{reason}");
        assert!(reason.contains("unknown event type"), "{reason}");

        let long_page = "x".repeat(5000);
        let reason =
            permanent(deliver_against((StatusCode::NOT_FOUND, long_page).into_response()).await);
        assert!(reason.contains("404 Not Found"), "{reason}");
        assert!(
            reason.len() < 400,
            "body excerpt not cut: {} bytes",
            reason.len()
        );
        // A body that would write lines of its own into the log stays on one line.
        let reason = permanent(
            deliver_against(
                (StatusCode::BAD_REQUEST, "bad\nERROR forged line\u{1b}[2J").into_response(),
            )
            .await,
        );
        assert!(
            !reason.contains('\n') && !reason.contains('\u{1b}'),
            "{reason:?}"
        );
        assert!(reason.contains("bad\\nERROR forged line"), "{reason}");
    }

    /// 410 Gone stops the channel: the attempt and every later one wait (paused, attempts not
    /// spent) without reaching the endpoint, until the stop is lifted.
    #[tokio::test]
    async fn gone_stops_the_channel_until_lifted() {
        let hits = Arc::new(Mutex::new(0usize));
        let counter = hits.clone();
        let router = Router::new().route(
            "/hook",
            post(move || {
                let counter = counter.clone();
                async move {
                    *counter.lock().unwrap() += 1;
                    (StatusCode::GONE, "endpoint removed")
                }
            }),
        );
        let url = serve(router).await;
        let channel = webhook(url, Duration::from_secs(5));
        let first = match channel.deliver(&outgoing()).await {
            Err(DeliveryError::Paused {
                message,
                retry_after,
            }) => {
                // docs/webhooks.md: the endpoint is tried again after an hour.
                assert_eq!(retry_after, Duration::from_secs(60 * 60));
                message
            }
            other => panic!("expected the channel to stop, got {other:?}"),
        };
        assert!(first.contains("410 Gone"), "{first}");
        assert!(first.contains("[channels.webhook]"), "{first}");
        for _ in 0..3 {
            match channel.deliver(&outgoing()).await {
                Err(DeliveryError::Paused {
                    message,
                    retry_after,
                }) => {
                    assert_eq!(message, first);
                    assert!(
                        retry_after > Duration::from_secs(59 * 60) && retry_after < GONE_PAUSE,
                        "{retry_after:?}"
                    );
                }
                other => panic!("expected the channel to stay stopped, got {other:?}"),
            }
        }
        assert_eq!(*hits.lock().unwrap(), 1);

        // Lifted, the next message reaches the endpoint again (gone still: stopped again).
        channel.resume();
        assert!(matches!(
            channel.deliver(&outgoing()).await,
            Err(DeliveryError::Paused { .. })
        ));
        assert_eq!(*hits.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn retryable_statuses_are_transient() {
        let (message, retry_after) =
            transient(deliver_against(StatusCode::REQUEST_TIMEOUT.into_response()).await);
        assert!(message.contains("408"), "{message}");
        assert_eq!(retry_after, None);

        let (message, retry_after) = transient(
            deliver_against(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(RETRY_AFTER, "7")],
                    "slow down",
                )
                    .into_response(),
            )
            .await,
        );
        assert!(
            message.contains("429") && message.contains("slow down"),
            "{message}"
        );
        assert_eq!(retry_after, Some(Duration::from_secs(7)));

        let (message, _) =
            transient(deliver_against(StatusCode::INTERNAL_SERVER_ERROR.into_response()).await);
        assert!(message.contains("500"), "{message}");

        let in_two_minutes = (Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let (message, retry_after) = transient(
            deliver_against(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(RETRY_AFTER, in_two_minutes)],
                )
                    .into_response(),
            )
            .await,
        );
        assert!(message.contains("503"), "{message}");
        let retry_after = retry_after.expect("HTTP-date Retry-After parsed");
        assert!(
            (Duration::from_secs(115)..=Duration::from_secs(120)).contains(&retry_after),
            "{retry_after:?}"
        );
    }

    #[tokio::test]
    async fn redirects_are_permanent_and_not_followed() {
        let reached_target = Arc::new(Mutex::new(false));
        let flag = reached_target.clone();
        let router = Router::new()
            .route("/hook", post(|| async { Redirect::permanent("/moved") }))
            .route(
                "/moved",
                any(move || async move {
                    *flag.lock().unwrap() = true;
                }),
            );
        let url = serve(router).await;
        let reason = permanent(
            webhook(url, Duration::from_secs(5))
                .deliver(&outgoing())
                .await,
        );
        assert!(
            reason.contains("308") && reason.contains("redirect"),
            "{reason}"
        );
        assert!(!*reached_target.lock().unwrap());
    }

    #[tokio::test]
    async fn a_client_that_follows_redirects_still_reports_them() {
        let router = Router::new()
            .route("/hook", post(|| async { Redirect::temporary("/moved") }))
            .route("/moved", any(|| async { StatusCode::OK }));
        let url = serve(router).await;
        let config = WebhookConfig {
            url,
            secret: spec_secret(),
        };
        let following = Webhook::new(config, reqwest::Client::new(), Duration::from_secs(5));
        let reason = permanent(following.deliver(&outgoing()).await);
        assert!(
            reason.contains("redirected to") && reason.contains("/moved"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        drop(listener);
        let (message, retry_after) = transient(
            webhook(url.clone(), Duration::from_secs(5))
                .deliver(&outgoing())
                .await,
        );
        assert_eq!(message, format!("connection refused to {url}"));
        assert_eq!(retry_after, None);
    }

    /// A receiver that takes the request and hangs up without an answer: a failed attempt, to be
    /// retried, whose message gives the cause reqwest's own top line leaves out (and does not
    /// call it a refused connection: the connection was made).
    #[tokio::test]
    async fn a_receiver_that_hangs_up_is_transient_and_the_cause_is_said() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                // The whole request is read first, so that the hang-up is a clean close.
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                while !request.ends_with(outgoing().payload.as_bytes()) {
                    match tokio::io::AsyncReadExt::read(&mut socket, &mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        });
        let (message, retry_after) = transient(
            webhook(url.clone(), Duration::from_secs(5))
                .deliver(&outgoing())
                .await,
        );
        assert!(
            message.starts_with(&format!("request to {url} failed: ")),
            "{message}"
        );
        assert!(
            message.contains("connection closed before message completed"),
            "{message}"
        );
        assert_eq!(retry_after, None);
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out() {
        let router = Router::new().route(
            "/hook",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }),
        );
        let url = serve(router).await;
        let started = std::time::Instant::now();
        let (message, _) = transient(
            webhook(url, Duration::from_millis(200))
                .deliver(&outgoing())
                .await,
        );
        assert!(message.starts_with("timed out after 200ms"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_receiver_gets_signed_headers_and_the_exact_body() {
        let seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let sink = seen.clone();
        let router = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| async move {
                sink.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }),
        );
        let url = serve(router).await;
        let channel = webhook(url, Duration::from_secs(5));
        assert_eq!(channel.kind(), ChannelKind::Webhook);
        let message = outgoing();
        channel.deliver(&message).await.unwrap();
        channel.deliver(&message).await.unwrap();

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (headers, body) in seen.iter() {
            let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
            assert_eq!(body.as_ref(), message.payload.as_bytes());
            assert_eq!(header("content-type"), "application/json");
            assert_eq!(
                header("user-agent"),
                format!("shipwatch/{}", env!("CARGO_PKG_VERSION"))
            );
            assert_eq!(header("webhook-id"), message.public_id);
            let timestamp = header("webhook-timestamp");
            let sent_at: i64 = timestamp.parse().unwrap();
            assert!((Utc::now().timestamp() - sent_at).abs() <= 5);
            let signature = header("webhook-signature");
            assert_eq!(
                signature,
                sign(
                    &spec_secret(),
                    &message.public_id,
                    sent_at,
                    &message.payload
                )
            );
            assert_eq!(
                verify(
                    &spec_secret(),
                    &header("webhook-id"),
                    &timestamp,
                    &signature,
                    body,
                    Utc::now().timestamp(),
                    300,
                ),
                Ok(())
            );
        }
    }
}
