//! Email channel: one plain-text message per notification, over SMTP.
//!
//! The server is named by one URL, so that the TLS mode is part of what the operator writes down
//! rather than a separate switch that can disagree with the port:
//!
//! | URL                                    | TLS                          | default port |
//! | -------------------------------------- | ---------------------------- | ------------ |
//! | `smtp://relay.local`                   | none (a trusted local relay) | 25           |
//! | `smtp://smtp.example:587?tls=starttls` | STARTTLS, required           | 587          |
//! | `smtps://user@smtp.example`            | implicit TLS                 | 465          |
//!
//! The password never goes in the URL (URLs end up in logs and process listings); it comes from
//! the configuration's `password` / `password_file`.
//!
//! Failures are classified for the outbox: SMTP 4xx replies, connection errors and timeouts are
//! transient; 5xx replies and unusable addresses are permanent. A TLS mode that does not match
//! the port is the most common setup mistake and lettre reports it as an opaque handshake or
//! timeout error, so the message names the likely fix instead (see [`Email::deliver`]).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, Message};

use super::smtp_connections::{ConnectError, SmtpConnections};
use super::smtp_url::SUBMISSIONS_PORT;
pub use super::smtp_url::{EmailConfigError, Security, SmtpEndpoint, parse_smtp_url};
use super::{Channel, ChannelKind, DeliveryError, EmailMessage, Outgoing};
use crate::domain::{Secret, mask_contact};

/// Where and as whom emails are sent.
#[derive(Clone)]
pub struct EmailConfig {
    /// See [`parse_smtp_url`].
    pub smtp_url: String,
    /// The login; may also be given in the URL (both at once must agree).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender mailbox, `Shop <noreply@shop.example>` or a bare address.
    pub from: String,
    pub reply_to: Option<String>,
    /// Bounds a whole attempt: connect, greeting, and the mail transaction.
    pub timeout: Duration,
}

/// The SMTP URL is shown as its endpoint only (it may name the login).
impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("smtp_url", &crate::shown::endpoint(&self.smtp_url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("from", &self.from)
            .field("reply_to", &self.reply_to)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The email [`Channel`].
pub struct Email {
    endpoint: SmtpEndpoint,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    timeout: Duration,
    /// Holds the credentials.
    connections: SmtpConnections,
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connections hold the credentials; keep them out.
        f.debug_struct("Email")
            .field("endpoint", &self.endpoint.to_string())
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Email {
    /// Checks the configuration and prepares the connections; nothing is sent and no
    /// connection is opened (see [`Email::test_connection`] for that).
    pub fn new(config: EmailConfig) -> Result<Email, EmailConfigError> {
        let endpoint = parse_smtp_url(&config.smtp_url)?;
        let from: Mailbox = config.from.parse().map_err(|e| {
            EmailConfigError(format!(
                "email from {:?} is not a valid mailbox: {e}",
                config.from
            ))
        })?;
        let reply_to = config
            .reply_to
            .as_deref()
            .map(|reply_to| {
                reply_to.parse::<Mailbox>().map_err(|e| {
                    EmailConfigError(format!(
                        "email reply_to {reply_to:?} is not a valid mailbox: {e}"
                    ))
                })
            })
            .transpose()?;
        if config.timeout.is_zero() {
            return Err(EmailConfigError(
                "email timeout must be more than zero".to_owned(),
            ));
        }

        let username = match (&endpoint.username, config.username) {
            (Some(in_url), Some(configured)) if *in_url != configured => {
                return Err(EmailConfigError(format!(
                    "smtp user is {in_url:?} in smtp_url but {configured:?} in username; keep one"
                )));
            }
            (in_url, configured) => configured.or_else(|| in_url.clone()),
        };
        let credentials = match (username, config.password) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user, password.expose().to_owned()))
            }
            (Some(user), None) => {
                return Err(EmailConfigError(format!(
                    "smtp user {user:?} has no password: set `password`, `password_file` or the systemd \
                     credential email.password"
                )));
            }
            (None, Some(_)) => {
                return Err(EmailConfigError(
                    "smtp password is set but no user: add `username` or user@ in smtp_url"
                        .to_owned(),
                ));
            }
            (None, None) => None,
        };

        let tls = match endpoint.security {
            Security::Plain => Tls::None,
            Security::StartTls => Tls::Required(tls_parameters(&endpoint.host)?),
            Security::ImplicitTls => Tls::Wrapper(tls_parameters(&endpoint.host)?),
        };
        if endpoint.security == Security::Plain && credentials.is_some() {
            tracing::warn!(
                smtp = %endpoint,
                "smtp credentials will cross the network unencrypted; plain smtp:// is meant for a local relay"
            );
        }
        let connections = SmtpConnections::new(&endpoint.host, endpoint.port, tls, credentials);

        Ok(Email {
            endpoint,
            from,
            reply_to,
            timeout: config.timeout,
            connections,
        })
    }

    /// Where this channel sends, for logs and the operator.
    pub fn endpoint(&self) -> &SmtpEndpoint {
        &self.endpoint
    }

    /// Connects (with TLS and login as configured) and checks that the server answers `NOOP`:
    /// what an operator runs after editing the config. The error carries the same hints as a
    /// failed delivery.
    pub async fn test_connection(&self) -> Result<(), DeliveryError> {
        let check = async {
            let mut conn = self.connections.take().await?;
            let answered = conn.test_connected().await;
            Ok::<_, ConnectError>((answered, conn))
        };
        // The attempt as a whole is bounded by dropping it: a connection abandoned mid-way goes
        // with it and is never parked.
        match tokio::time::timeout(self.timeout, check).await {
            Ok(Ok((true, conn))) => {
                self.connections.give_back(conn);
                Ok(())
            }
            Ok(Ok((false, _))) => Err(DeliveryError::Permanent(format!(
                "{} accepted the connection but did not answer NOOP",
                self.endpoint
            ))),
            Ok(Err(error)) => Err(self.classify_connect(&error, None)),
            Err(_) => Err(self.timed_out(None)),
        }
    }

    /// `<{public_id}@{sender domain}>`: every attempt of one notification carries the same id,
    /// so a receiving server or mail client can drop a duplicate left by an attempt whose
    /// acceptance was lost on the way back.
    fn message_id(&self, public_id: &str) -> String {
        let local: String = public_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let local = local.trim_matches('.');
        format!("<{local}@{}>", self.from.email.domain())
    }

    fn build_message(
        &self,
        to: Address,
        public_id: &str,
        email: EmailMessage,
    ) -> Result<Message, DeliveryError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.subject)
            .message_id(Some(self.message_id(public_id)))
            .header(ContentType::TEXT_PLAIN);
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        builder
            .body(email.body)
            .map_err(|e| DeliveryError::Permanent(format!("could not build the email: {e}")))
    }

    fn timed_out(&self, recipient: Option<&str>) -> DeliveryError {
        let endpoint = &self.endpoint;
        let mut message = format!(
            "timed out after {} waiting for {endpoint}{}",
            format_duration(self.timeout),
            sending_to(recipient)
        );
        // A port that expects TLS from the first byte waits silently for our handshake while we
        // wait for its greeting: from here it looks exactly like a slow server.
        if endpoint.security != Security::ImplicitTls {
            message.push_str(&format!(
                "; if that port expects TLS from the first byte (465 usually does), use {}",
                endpoint.url_as(Security::ImplicitTls)
            ));
        }
        DeliveryError::Transient {
            message,
            retry_after: None,
        }
    }

    /// A connection that could not be had, sorted as [`Email::classify`] sorts lettre's errors.
    fn classify_connect(&self, error: &ConnectError, recipient: Option<&str>) -> DeliveryError {
        match error {
            ConnectError::Smtp(error) => self.classify(error, recipient),
            ConnectError::Tcp(io) => {
                let endpoint = &self.endpoint;
                let to = sending_to(recipient);
                if let Some(shortage) = super::local_shortage(io) {
                    return super::not_attempted(
                        &format!("email through {endpoint}{to}"),
                        shortage,
                    );
                }
                let message = if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    format!("connection refused by {endpoint}{to}")
                } else {
                    format!("connecting to {endpoint} failed{to}: {io}")
                };
                DeliveryError::Transient {
                    message,
                    retry_after: None,
                }
            }
        }
    }

    /// Sorts a lettre error into what the outbox should do, in one line an operator can act on.
    /// `recipient` is already masked.
    fn classify(&self, error: &SmtpError, recipient: Option<&str>) -> DeliveryError {
        let endpoint = &self.endpoint;
        let to = sending_to(recipient);
        let transient = |message: String| DeliveryError::Transient {
            message,
            retry_after: None,
        };

        if let Some(code) = error.status() {
            // Servers like to echo the rejected address back; the reason ends up in the database
            // and the logs, so every address in it is masked.
            let reply = reply_text(error);
            let answered = if reply.is_empty() {
                format!("{endpoint} answered {code}{to}")
            } else {
                format!("{endpoint} answered {code} {reply}{to}")
            };
            return if error.is_transient() {
                transient(answered)
            } else if endpoint.security == Security::Plain
                && reply.to_ascii_lowercase().contains("starttls")
            {
                DeliveryError::Permanent(format!(
                    "{answered}; the server wants TLS first: try {}",
                    endpoint.url_as(Security::StartTls)
                ))
            } else {
                DeliveryError::Permanent(answered)
            };
        }

        if let Some(shortage) = super::local_shortage(error) {
            return super::not_attempted(&format!("email through {endpoint}{to}"), shortage);
        }
        let cause = root_cause(error);
        if endpoint.security == Security::ImplicitTls && looks_like_plain_text_reply(&cause) {
            // Retrying cannot help until the configuration changes, and the hint is worth more in
            // the dead row now than after three backoffs; `shipwatch retry` requeues once fixed.
            return DeliveryError::Permanent(format!(
                "TLS handshake with {endpoint} failed{to}: looks like the server does not speak \
                 TLS on this port (it answered in plain text): try {} (plain) or {} \
                 ({cause})",
                endpoint.url_as(Security::Plain),
                endpoint.url_as(Security::StartTls),
            ));
        }
        if endpoint.security == Security::StartTls && cause.contains("STARTTLS is not supported") {
            return DeliveryError::Permanent(format!(
                "{endpoint} does not offer STARTTLS on this port{to}: use {} if the server takes \
                 TLS from the first byte, or {} (plain) only for a trusted local relay",
                SmtpEndpoint {
                    port: SUBMISSIONS_PORT,
                    ..endpoint.clone()
                }
                .url_as(Security::ImplicitTls),
                endpoint.url_as(Security::Plain),
            ));
        }
        if let Some(hint) = certificate_hint(&cause, &endpoint.host) {
            // Retried like any failure to connect (a server's certificate can be fixed or
            // renewed on its side), with what to do if it is ours to fix.
            return transient(format!(
                "sending through {endpoint} failed{to}: {cause}; {hint}"
            ));
        }
        if error.is_client() {
            // lettre's client errors are refusals on our side (no shared AUTH mechanism, a
            // non-ASCII address the server cannot take): the same message would fail again.
            return DeliveryError::Permanent(format!(
                "cannot send through {endpoint}{to}: {cause}"
            ));
        }
        if error.is_timeout() {
            return transient(format!(
                "timed out after {} connecting to {endpoint}{to}",
                format_duration(self.timeout)
            ));
        }
        transient(format!("sending through {endpoint} failed{to}: {cause}"))
    }
}

fn tls_parameters(host: &str) -> Result<TlsParameters, EmailConfigError> {
    TlsParameters::new(host.to_owned())
        .map_err(|e| EmailConfigError(format!("cannot set up TLS for {host}: {e}")))
}

/// What to do about a server certificate that rustls refused, from its error's text.
fn certificate_hint(cause: &str, host: &str) -> Option<String> {
    if !cause.contains("invalid peer certificate") {
        return None;
    }
    Some(if cause.contains("UnknownIssuer") {
        "the server's certificate is not signed by an authority this machine trusts: add that \
         authority to the system's certificate store, or name a PEM file of the certificates to \
         trust in SSL_CERT_FILE"
            .to_owned()
    } else if cause.contains("NotValidForName") {
        format!(
            "the server's certificate is not made out to {host}: write the host name it names in \
             smtp_url"
        )
    } else if cause.contains("Expired") {
        "the server's certificate has expired (or this machine's clock is wrong)".to_owned()
    } else {
        "the server's certificate was refused".to_owned()
    })
}

/// The tail of an error message naming the (masked) recipient, when there is one.
fn sending_to(recipient: Option<&str>) -> String {
    recipient
        .map(|r| format!(" (sending to {r})"))
        .unwrap_or_default()
}

/// rustls reads the plain-text greeting `220 …` as a TLS record of an unknown content type.
fn looks_like_plain_text_reply(cause: &str) -> bool {
    cause.contains("InvalidContentType") || cause.contains("corrupt message")
}

/// The text of a negative reply (lettre keeps it as the error's source), addresses masked.
fn reply_text(error: &SmtpError) -> String {
    std::error::Error::source(error)
        .map(|text| mask_addresses(&text.to_string()))
        .unwrap_or_default()
}

/// Masks every `local@domain` token in a server's reply.
fn mask_addresses(text: &str) -> String {
    let is_delimiter = |c: char| c.is_whitespace() || "<>()[],;:\"'".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        match token.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                out.push_str(&mask_contact(token));
            }
            _ => out.push_str(token),
        }
        token.clear();
    };
    for c in text.chars() {
        if is_delimiter(c) {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// lettre's own messages are generic ("Connection error") and sometimes nested twice; the
/// innermost cause is the one that says what happened.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[async_trait]
impl Channel for Email {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    /// One attempt. Classification:
    /// - SMTP 4xx (421, 450, 451, 452 …), connection errors, timeouts → transient;
    /// - SMTP 5xx (550, 553, 554 …), an unusable recipient address, a payload that is not an
    ///   [`EmailMessage`] → permanent, with the server's reply (addresses masked);
    /// - `smtps://` to a port that answers in plain text → permanent, with a hint naming
    ///   `smtp://` and `?tls=starttls`: a configuration mistake no retry can fix;
    /// - `?tls=starttls` to a server that does not offer STARTTLS → permanent, with a hint;
    /// - `smtp://` to a port that expects implicit TLS → a timeout (the server waits for a
    ///   handshake, we wait for a greeting), so transient, with a hint naming `smtps://`.
    /// The parked connections say `QUIT`.
    async fn close(&self) {
        self.connections.close_idle().await;
    }

    async fn send(&self, message: &Outgoing) -> Result<(), DeliveryError> {
        let email: EmailMessage = serde_json::from_str(&message.payload).map_err(|e| {
            DeliveryError::Permanent(format!("queued email payload is unreadable: {e}"))
        })?;
        let Some(recipient) = message.recipient.as_deref() else {
            return Err(DeliveryError::Permanent(
                "no email address for this notification".to_owned(),
            ));
        };
        let masked = mask_contact(recipient.trim());
        let to: Address = recipient.trim().parse().map_err(|e| {
            DeliveryError::Permanent(format!("invalid email address {masked}: {e}"))
        })?;
        let mail = self.build_message(to, &message.public_id, email)?;

        // The SMTP server's replies are read by lettre, not by our bounded HTTP reader. lettre
        // caps a reply at 1,000 bytes a line and 100,000 in all (lettre PR #1143, in 0.11.23),
        // but checks a line only once its line break has arrived: a server sending one endless
        // line is read until this timeout. The timeout is the bound (see docs/operations.md,
        // "What upstream may send").
        //
        // A connection abandoned at the timeout goes with the dropped attempt and is never
        // parked, so no later message reads a reply meant for this one.
        let envelope = mail.envelope().clone();
        let formatted = mail.formatted();
        let attempt = async {
            let mut conn = self.connections.take().await?;
            let sent = conn.send(&envelope, &formatted).await;
            Ok::<_, ConnectError>((sent, conn))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((sent, conn))) => {
                // Parked or closed without waiting on the server: the outcome is known.
                self.connections.give_back(conn);
                sent.map(drop)
                    .map_err(|error| self.classify(&error, Some(&masked)))
            }
            Ok(Err(error)) => Err(self.classify_connect(&error, Some(&masked))),
            Err(_) => Err(self.timed_out(Some(&masked))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> EmailConfig {
        EmailConfig {
            smtp_url: url.to_owned(),
            username: None,
            password: None,
            from: "Shop <noreply@shop.example>".to_owned(),
            reply_to: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn config_debug_hides_the_password() {
        let mut config = config("smtps://smtp.example");
        config.username = Some("noreply@shop.example".into());
        config.password = Some(Secret::new("hunter2"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("smtps://smtp.example/"), "{shown}");
        assert!(shown.contains("Shop <noreply@shop.example>"), "{shown}");
        let email = Email::new(config).unwrap();
        let shown = format!("{email:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("smtps://smtp.example:465"), "{shown}");
    }

    #[test]
    fn config_is_checked_up_front() {
        let mut bad_from = config("smtp://relay.local");
        bad_from.from = "not an address".into();
        assert!(
            Email::new(bad_from)
                .unwrap_err()
                .to_string()
                .contains("email from")
        );

        let mut bad_reply_to = config("smtp://relay.local");
        bad_reply_to.reply_to = Some("@nowhere".into());
        assert!(
            Email::new(bad_reply_to)
                .unwrap_err()
                .to_string()
                .contains("reply_to")
        );

        let mut user_without_password = config("smtps://someone@smtp.example");
        user_without_password.password = None;
        assert!(
            Email::new(user_without_password)
                .unwrap_err()
                .to_string()
                .contains("no password")
        );

        let mut password_without_user = config("smtps://smtp.example");
        password_without_user.password = Some(Secret::new("hunter2"));
        let error = Email::new(password_without_user).unwrap_err().to_string();
        assert!(
            error.contains("no user") && !error.contains("hunter2"),
            "{error}"
        );

        let mut two_users = config("smtps://someone@smtp.example");
        two_users.username = Some("someone-else".into());
        two_users.password = Some(Secret::new("hunter2"));
        assert!(
            Email::new(two_users)
                .unwrap_err()
                .to_string()
                .contains("keep one")
        );

        let mut zero_timeout = config("smtp://relay.local");
        zero_timeout.timeout = Duration::ZERO;
        assert!(
            Email::new(zero_timeout)
                .unwrap_err()
                .to_string()
                .contains("timeout")
        );

        assert!(Email::new(config("smtp://relay.local")).is_ok());
    }

    #[test]
    fn message_id_is_stable_and_well_formed() {
        let email = Email::new(config("smtp://relay.local")).unwrap();
        assert_eq!(
            email.message_id("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            "<msg_p5jXN8AQM9LWM0D4loKWxJek@shop.example>"
        );
        assert_eq!(email.message_id("a b<c>@d"), "<a-b-c--d@shop.example>");
    }

    #[test]
    fn refused_certificates_say_what_to_fix() {
        let hint = |cause: &str| certificate_hint(cause, "smtp.example").unwrap_or_default();
        assert!(hint("invalid peer certificate: UnknownIssuer").contains("SSL_CERT_FILE"));
        assert!(
            hint("invalid peer certificate: NotValidForName")
                .contains("not made out to smtp.example")
        );
        assert!(hint("invalid peer certificate: Expired").contains("expired"));
        assert_eq!(
            hint("invalid peer certificate: BadSignature"),
            "the server's certificate was refused"
        );
        assert_eq!(certificate_hint("connection reset", "smtp.example"), None);
    }

    #[test]
    fn addresses_in_replies_are_masked() {
        assert_eq!(
            mask_addresses("5.1.1 <zhang@buyer.example>: Recipient address rejected"),
            "5.1.1 <z***@buyer.example>: Recipient address rejected"
        );
        assert_eq!(
            mask_addresses("mailbox Zhang@Buyer.Example unavailable"),
            "mailbox Z***@Buyer.Example unavailable"
        );
        assert_eq!(mask_addresses("4.3.0 try later"), "4.3.0 try later");
        assert_eq!(mask_addresses("user@ or @host"), "user@ or @host");
    }

    fn outgoing(recipient: Option<&str>) -> Outgoing {
        Outgoing {
            public_id: "msg_0001".into(),
            payload: serde_json::to_string(&EmailMessage {
                subject: "包裹已签收".into(),
                body: "包裹已签收,感谢您的信任。".into(),
            })
            .unwrap(),
            recipient: recipient.map(str::to_owned),
        }
    }

    fn permanent(result: Result<(), DeliveryError>) -> String {
        match result {
            Err(DeliveryError::Permanent(message)) => message,
            other => panic!("expected a permanent failure, got {other:?}"),
        }
    }

    fn transient(result: Result<(), DeliveryError>) -> String {
        match result {
            Err(DeliveryError::Transient {
                message,
                retry_after: None,
            }) => message,
            other => panic!("expected a transient failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unusable_messages_are_permanent_without_a_connection() {
        // Nothing listens on the discard port of a documentation address: any attempt to connect
        // would show up as a transient error instead.
        let email = Email::new(config("smtp://192.0.2.1:9")).unwrap();
        assert_eq!(email.kind(), ChannelKind::Email);

        let reason = permanent(email.deliver(&outgoing(None)).await);
        assert_eq!(reason, "no email address for this notification");

        let reason = permanent(
            email
                .deliver(&outgoing(Some("zhang.at.buyer.example")))
                .await,
        );
        assert!(reason.starts_with("invalid email address"), "{reason}");
        let reason = permanent(email.deliver(&outgoing(Some("zhang@@buyer.example"))).await);
        assert!(
            reason.contains("z***@") && !reason.contains("zhang"),
            "{reason}"
        );

        let mut not_an_email = outgoing(Some("zhang@buyer.example"));
        not_an_email.payload = r#"{"type":"shipment.status_changed"}"#.into();
        let reason = permanent(email.deliver(&not_an_email).await);
        assert!(reason.contains("payload is unreadable"), "{reason}");
    }

    /// A port that accepts connections and never says a word, as an implicit-TLS port does to a
    /// client that waits for a plain-text greeting.
    async fn silent_port() -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn plain_smtp_to_a_tls_port_times_out_with_a_hint() {
        let (port, server) = silent_port().await;
        let mut config = config(&format!("smtp://127.0.0.1:{port}"));
        config.timeout = Duration::from_millis(300);
        let email = Email::new(config).unwrap();
        let message = transient(email.deliver(&outgoing(Some("zhang@buyer.example"))).await);
        assert!(message.starts_with("timed out after 300ms"), "{message}");
        assert!(
            message.contains(&format!("use smtps://127.0.0.1:{port}")),
            "{message}"
        );
        assert!(message.contains("z***@buyer.example") && !message.contains("zhang"));

        let error = email.test_connection().await.unwrap_err().to_string();
        assert!(error.contains("use smtps://"), "{error}");
        server.abort();
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let email = Email::new(config(&format!("smtp://127.0.0.1:{port}"))).unwrap();
        let message = transient(email.deliver(&outgoing(Some("zhang@buyer.example"))).await);
        assert_eq!(
            message,
            format!(
                "connection refused by smtp://127.0.0.1:{port} (sending to z***@buyer.example)"
            )
        );
    }
}
