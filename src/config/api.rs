//! `[api]`: the bearer tokens of the shipments API, read from `tokens_file` or the systemd
//! credential `api.tokens`, one token per line, so that a new token can be added before the old
//! one is taken out. Without tokens the API is off.

use std::path::PathBuf;

use serde::Deserialize;

use super::secrets::SecretResolver;
use super::{ConfigError, invalid};
use crate::domain::Secret;

/// The shortest token accepted: 32 characters, as `openssl rand -hex 16` gives (128 bits).
pub const MIN_TOKEN_CHARS: usize = 32;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    tokens_file: Option<PathBuf>,
}

/// One bearer token, and what it may read besides the shipments.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub secret: Secret,
    /// `contacts` after the token: answers show phone, email and openid whole.
    pub contacts: bool,
}

/// The API's settings; off when `tokens` is empty.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    pub tokens: Vec<ApiToken>,
}

impl ApiConfig {
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

pub(super) fn resolve_api(raw: RawApi, secrets: &SecretResolver) -> Result<ApiConfig, ConfigError> {
    let Some(text) = secrets.optional("[api]", "api", "tokens", raw.tokens_file)? else {
        return Ok(ApiConfig::default());
    };
    let tokens = parse_token_lines(text.expose())
        .map_err(|why| invalid(format!("[api] tokens_file {why}")))?;
    Ok(ApiConfig { tokens })
}

/// A tokens file: one token a line, optionally followed by the grant `contacts`; blank lines and
/// lines starting with `#` are skipped. Errors name the line, never the token.
pub fn parse_token_lines(text: &str) -> Result<Vec<ApiToken>, BadTokens> {
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(token) = words.next() else { continue };
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(BadTokens::Short(n));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadTokens::NotPrintable(n));
        }
        let mut contacts = false;
        for grant in words {
            match grant {
                "contacts" => contacts = true,
                _ => return Err(BadTokens::UnknownGrant(n, grant.to_owned())),
            }
        }
        tokens.push(ApiToken {
            secret: Secret::new(token),
            contacts,
        });
    }
    if tokens.is_empty() {
        return Err(BadTokens::None);
    }
    Ok(tokens)
}

/// What is wrong with a tokens file, by line number; never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTokens {
    #[error(
        "line {0}: the token is shorter than {MIN_TOKEN_CHARS} characters; make one with `openssl rand -hex 32`"
    )]
    Short(usize),
    #[error("line {0}: the token has a character that is not printable ASCII")]
    NotPrintable(usize),
    #[error(
        "line {0}: unknown grant {grant:?} after the token (known: contacts)",
        grant = crate::shown::for_terminal(.1)
    )]
    UnknownGrant(usize, String),
    #[error("has no token (one a line; lines starting with # are comments)")]
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const B: &str = "ffeeddccbbaa99887766554433221100ffee";

    #[test]
    fn token_lines_with_comments_grants_and_rotation() {
        let tokens = parse_token_lines(&format!(
            "# the shop's ERP\n{A}\n\n  # the new one, while the old is rotated out\n{B} contacts\n"
        ))
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].secret.expose(), A);
        assert!(!tokens[0].contacts);
        assert_eq!(tokens[1].secret.expose(), B);
        assert!(tokens[1].contacts);
    }

    #[test]
    fn bad_lines_are_named_without_the_token() {
        for (text, said) in [
            (
                "short-token\n",
                "line 1: the token is shorter than 32 characters",
            ),
            (
                &*format!("{A}\n{B} write\n"),
                "line 2: unknown grant \"write\"",
            ),
            ("# only a comment\n", "has no token"),
        ] {
            let err = parse_token_lines(text).unwrap_err().to_string();
            assert!(err.contains(said), "{text:?}: {err}");
            assert!(!err.contains("short-token") && !err.contains(A), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
