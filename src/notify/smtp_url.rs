//! The email channel's `smtp_url`: one URL names the server and its TLS mode, so that the mode
//! is part of what the operator writes down rather than a separate switch that can disagree with
//! the port (see the table in [`super::email`]).

use std::fmt;

const SMTP_PORT: u16 = 25;
const SUBMISSION_PORT: u16 = 587;
pub(super) const SUBMISSIONS_PORT: u16 = 465;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No TLS at all: only for a relay on the same host or a trusted network.
    Plain,
    /// Plain connect, then `STARTTLS`; a server that does not offer it is an error, never a
    /// silent downgrade.
    StartTls,
    /// TLS from the first byte (`smtps`, usually port 465).
    ImplicitTls,
}

/// A parsed `smtp_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub security: Security,
    pub host: String,
    pub port: u16,
    /// The login, when the URL carries one (`smtps://user@host`).
    pub username: Option<String>,
}

impl SmtpEndpoint {
    /// The URL for this host and port in another mode: what a hint tells the operator to write.
    pub(super) fn url_as(&self, security: Security) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match security {
            Security::Plain => format!("smtp://{host}:{}", self.port),
            Security::StartTls => format!("smtp://{host}:{}?tls=starttls", self.port),
            Security::ImplicitTls => format!("smtps://{host}:{}", self.port),
        }
    }
}

/// Shown in every error message; the username is left out because it is often an address.
impl fmt::Display for SmtpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url_as(self.security))
    }
}

/// Why the email settings cannot work, in one line that says what to write instead. Only a
/// message: the operator reads it, nothing decides on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EmailConfigError(pub(super) String);

/// Parses `smtp://host[:port]`, `smtp://host[:port]?tls=starttls` or `smtps://host[:port]`, each
/// optionally with `user@` before the host (percent-encode an `@` inside the user as `%40`).
/// Errors never quote the URL: a password typed into it by mistake would be echoed.
pub fn parse_smtp_url(url: &str) -> Result<SmtpEndpoint, EmailConfigError> {
    const FORMS: &str = "smtp://host:port, smtp://host:587?tls=starttls or smtps://host:465";
    let url = url.trim();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| EmailConfigError(format!("smtp_url has no scheme: expected {FORMS}")))?;
    let implicit_tls = match scheme.to_ascii_lowercase().as_str() {
        "smtp" => false,
        "smtps" => true,
        other => {
            return Err(EmailConfigError(format!(
                "smtp url scheme {other:?} is not supported: expected {FORMS}"
            )));
        }
    };
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('/') || authority.contains('#') {
        return Err(EmailConfigError(format!(
            "smtp_url has a path: expected only user, host and port ({FORMS})"
        )));
    }

    // The host cannot contain `@`, so the last one ends the user part.
    let (username, host_port) = match authority.rsplit_once('@') {
        Some((user, host_port)) => {
            if user.contains(':') {
                return Err(EmailConfigError(
                    "smtp url carries a password: set it with `password` or `password_file` \
                     instead, so that it never shows up where the URL is logged"
                        .to_owned(),
                ));
            }
            let user = percent_decode(user).ok_or_else(|| {
                EmailConfigError("smtp_url user has a broken %-escape".to_owned())
            })?;
            if user.is_empty() {
                return Err(EmailConfigError(
                    "smtp_url has an empty user before `@`".to_owned(),
                ));
            }
            (Some(user), host_port)
        }
        None => (None, authority),
    };
    let (host, port) = split_host_port(host_port)
        .map_err(|why| EmailConfigError(format!("smtp_url: {why} (expected {FORMS})")))?;

    let mut starttls = false;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value.to_ascii_lowercase().as_str()) {
            ("tls", _) if implicit_tls => {
                return Err(EmailConfigError(format!(
                    "smtp_url: smtps:// already means TLS from the first byte; drop \
                     ?{pair}, or use smtp://host:587?tls=starttls for STARTTLS"
                )));
            }
            // `required` is lettre's spelling for the same thing; people copy its examples.
            ("tls", "starttls" | "required") => starttls = true,
            ("tls", "opportunistic") => {
                return Err(EmailConfigError(
                    "smtp_url: tls=opportunistic is not supported because it silently \
                     falls back to plain text; use tls=starttls"
                        .to_owned(),
                ));
            }
            ("tls", other) => {
                return Err(EmailConfigError(format!(
                    "smtp_url: unknown tls mode {other:?}: the only one is tls=starttls \
                     (use smtps:// for implicit TLS, no parameter for plain)"
                )));
            }
            (other, _) => {
                return Err(EmailConfigError(format!(
                    "smtp_url: unknown parameter {other:?}: the only one is tls=starttls"
                )));
            }
        }
    }

    let security = match (implicit_tls, starttls) {
        (true, _) => Security::ImplicitTls,
        (false, true) => Security::StartTls,
        (false, false) => Security::Plain,
    };
    let port = port.unwrap_or(match security {
        Security::Plain => SMTP_PORT,
        Security::StartTls => SUBMISSION_PORT,
        Security::ImplicitTls => SUBMISSIONS_PORT,
    });
    Ok(SmtpEndpoint {
        security,
        host,
        port,
        username,
    })
}

fn split_host_port(host_port: &str) -> Result<(String, Option<u16>), BadHostPort> {
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(BadHostPort::Unclosed)?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(BadHostPort::AfterIpv6(after.to_owned())),
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(BadHostPort::Unbracketed);
            }
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(BadHostPort::NoHost);
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(BadHostPort::Port(port.to_owned())),
            Ok(port) => Some(port),
        },
    };
    Ok((host.to_owned(), port))
}

/// What is wrong with the host and port of an `smtp_url`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BadHostPort {
    #[error("an IPv6 host is missing its closing `]`")]
    Unclosed,
    #[error("unexpected {0:?} after the IPv6 host")]
    AfterIpv6(String),
    #[error("an IPv6 host must be written in brackets: [::1]:25")]
    Unbracketed,
    #[error("no host")]
    NoHost,
    #[error("port {0:?} is not a port number")]
    Port(String),
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> SmtpEndpoint {
        parse_smtp_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn url_forms_and_default_ports() {
        let plain = endpoint("smtp://relay.local");
        assert_eq!(plain.security, Security::Plain);
        assert_eq!((plain.host.as_str(), plain.port), ("relay.local", 25));
        assert_eq!(plain.username, None);

        let starttls = endpoint("smtp://smtp.example?tls=starttls");
        assert_eq!(starttls.security, Security::StartTls);
        assert_eq!(starttls.port, 587);
        assert_eq!(endpoint("smtp://smtp.example:2587?tls=required").port, 2587);

        let implicit = endpoint("smtps://smtp.example");
        assert_eq!(implicit.security, Security::ImplicitTls);
        assert_eq!(implicit.port, 465);

        let with_user = endpoint("smtps://noreply%40shop.example@smtp.example:1465/");
        assert_eq!(with_user.username.as_deref(), Some("noreply@shop.example"));
        assert_eq!(
            (with_user.host.as_str(), with_user.port),
            ("smtp.example", 1465)
        );
        assert_eq!(
            endpoint("SMTPS://a@b@smtp.example").username.as_deref(),
            Some("a@b")
        );

        let v6 = endpoint("smtp://[::1]:2525");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2525));
        assert_eq!(v6.to_string(), "smtp://[::1]:2525");
        let v6 = endpoint("smtps://[2001:db8::25]");
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::25", 465));
    }

    #[test]
    fn display_leaves_the_user_out() {
        assert_eq!(
            endpoint("smtps://someone@smtp.example").to_string(),
            "smtps://smtp.example:465"
        );
        assert_eq!(
            endpoint("smtp://smtp.example?tls=starttls").to_string(),
            "smtp://smtp.example:587?tls=starttls"
        );
    }

    #[test]
    fn url_mistakes_are_one_clear_line() {
        let cases = [
            ("relay.local:25", "has no scheme"),
            ("http://relay.local", "scheme \"http\" is not supported"),
            ("smtps://user:hunter2@smtp.example", "carries a password"),
            (
                "smtp://smtp.example?tls=opportunistic",
                "falls back to plain text",
            ),
            ("smtp://smtp.example?tls=yes", "unknown tls mode \"yes\""),
            ("smtps://smtp.example?tls=starttls", "already means TLS"),
            (
                "smtp://smtp.example?timeout=5",
                "unknown parameter \"timeout\"",
            ),
            ("smtp://smtp.example:smtp", "not a port number"),
            ("smtp://smtp.example:0", "not a port number"),
            ("smtp://:25", "no host"),
            ("smtp://::1:25", "in brackets"),
            ("smtp://smtp.example/ehlo-name", "has a path"),
            ("smtp://@smtp.example", "empty user"),
            // The URL is never quoted back: it may hold a password in the wrong place.
            ("user:hunter2@relay.local:25", "has no scheme"),
            ("smtp://u:hunter2@smtp.example/x", "has a path"),
            ("smtp://hunter2@smtp.example:x", "not a port number"),
        ];
        for (url, expected) in cases {
            let error = parse_smtp_url(url).unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains('\n'), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
    }
}
