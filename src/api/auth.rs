//! Bearer tokens (RFC 6750): the `Authorization` header's token against every configured one,
//! in constant time, so that neither a token's characters nor which token matched can be told
//! from how long the answer takes.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::config::ApiToken;

/// What the caller's token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Phone, email and openid are shown whole.
    pub contacts: bool,
}

/// The configured tokens, kept as SHA-256 digests: comparing digests of equal length hides the
/// length of the tokens too.
pub struct Tokens(Vec<([u8; 32], bool)>);

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub fn new(tokens: &[ApiToken]) -> Tokens {
        Tokens(
            tokens
                .iter()
                .map(|t| (digest(t.secret.expose().as_bytes()), t.contacts))
                .collect(),
        )
    }

    /// The caller a request's `Authorization` header names, or a refusal that never repeats
    /// what was sent.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Problem::unauthorized(
                "send Authorization: Bearer TOKEN with a token from [api] tokens_file",
            ));
        };
        match bearer_token(value.as_bytes()) {
            Bearer::OtherScheme => Err(Problem::unauthorized(
                "the Authorization header is not Bearer TOKEN",
            )),
            Bearer::Empty => Err(Problem::invalid_request(
                "the Authorization header says Bearer but gives no token; send Bearer TOKEN",
            )),
            Bearer::Token(token) => self.check(token).ok_or_else(|| {
                Problem::invalid_token("the token is not one of the configured tokens")
            }),
        }
    }

    /// Every token is compared, whichever matches.
    fn check(&self, token: &[u8]) -> Option<Caller> {
        let given = digest(token);
        let mut found = subtle::Choice::from(0);
        let mut contacts = subtle::Choice::from(0);
        for (known, may_read) in &self.0 {
            let same = known.ct_eq(&given);
            found |= same;
            contacts |= same & subtle::Choice::from(u8::from(*may_read));
        }
        bool::from(found).then_some(Caller {
            contacts: bool::from(contacts),
        })
    }
}

/// What an `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
enum Bearer<'a> {
    /// Another scheme, or none: the request "lacks any authentication information".
    OtherScheme,
    /// The `Bearer` scheme with no token after it.
    Empty,
    Token(&'a [u8]),
}

/// Reads an `Authorization: Bearer TOKEN` header. The scheme's name is case-insensitive and is
/// followed by one or more spaces and the token (RFC 9110, sections 11.1 and 11.4:
/// `credentials = auth-scheme [ 1*SP ( token68 / … ) ]`; RFC 6750, section 2.1, for `Bearer`,
/// whose token is one character at least).
fn bearer_token(value: &[u8]) -> Bearer<'_> {
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => value.split_at(space),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        return Bearer::OtherScheme;
    }
    match rest.trim_ascii() {
        b"" => Bearer::Empty,
        token => Bearer::Token(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Secret;

    const A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const B: &str = "ffeeddccbbaa99887766554433221100ffee";

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn either_token_opens_and_only_the_granted_one_reads_contacts() {
        let tokens = Tokens::new(&[
            ApiToken {
                secret: Secret::new(A),
                contacts: false,
            },
            ApiToken {
                secret: Secret::new(B),
                contacts: true,
            },
        ]);
        let a = tokens.caller(&headers(&format!("Bearer {A}"))).unwrap();
        assert!(!a.contacts);
        // The scheme's name in any case, the token after one space or more.
        for scheme in ["bearer", "BEARER", "bEaReR", "Bearer  "] {
            let a = tokens.caller(&headers(&format!("{scheme} {A}")));
            assert_eq!(a.ok(), Some(Caller { contacts: false }), "{scheme}");
        }
        let b = tokens.caller(&headers(&format!("Bearer {B}"))).unwrap();
        assert!(b.contacts);
        // A token that is not one of them: the challenge says so (RFC 6750, section 3.1).
        let unknown = tokens
            .caller(&headers(&format!("Bearer {A}x")))
            .unwrap_err();
        assert_eq!(unknown.status, 401);
        assert_eq!(
            unknown.challenge,
            Some("Bearer realm=\"shipwatch\", error=\"invalid_token\"")
        );
        assert!(!unknown.detail.contains(A), "{}", unknown.detail);
        // The bearer scheme with no token is a malformed request: 400 and `invalid_request`
        // (RFC 6750, sections 2.1 and 3.1), so that a client whose token came out empty is
        // told so rather than asked for one it believes it sent.
        for empty in ["Bearer", "Bearer ", "bearer    "] {
            let refused = tokens.caller(&headers(empty)).unwrap_err();
            assert_eq!(refused.status, 400, "{empty}");
            assert_eq!(
                refused.challenge,
                Some("Bearer realm=\"shipwatch\", error=\"invalid_request\""),
                "{empty}"
            );
        }
        // No bearer token at all: the challenge names the scheme, with no error.
        for wrong in [
            format!("Basic {A}"),
            format!("Bearer{A}"),
            format!("Bearers {A}"),
            "Basic ".to_owned(),
            "Bearers".to_owned(),
            A.to_owned(),
        ] {
            let refused = tokens.caller(&headers(&wrong)).unwrap_err();
            assert_eq!(refused.status, 401, "{wrong}");
            assert_eq!(
                refused.challenge,
                Some("Bearer realm=\"shipwatch\""),
                "{wrong}"
            );
            assert!(!refused.detail.contains(A), "{}", refused.detail);
        }
        let none = tokens.caller(&HeaderMap::new()).unwrap_err();
        assert_eq!(none.status, 401);
        assert_eq!(none.challenge, Some("Bearer realm=\"shipwatch\""));
    }
}
