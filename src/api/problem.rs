//! Errors as the API answers them: `application/problem+json` (RFC 9457, "Problem Details for
//! HTTP APIs", https://www.rfc-editor.org/rfc/rfc9457), with the members the RFC defines
//! (`type`, `title`, `status`, `detail`) and one extension, `errors`, that names each field at
//! fault (and, in a batch, the item's index).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of a problem (RFC 9457 section 3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The item's position in a batch, counted from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            index: None,
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn at(mut self, index: usize) -> FieldError {
        self.index = Some(index);
        self
    }
}

/// A refused request: what the client is told, nothing more.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    /// The last part of the `type` URI: `urn:shipwatch:problem:{kind}`.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// The `WWW-Authenticate` challenge of a refusal for want of a valid token.
    pub challenge: Option<&'static str>,
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            challenge: None,
        }
    }

    /// A request without a bearer token. RFC 6750, section 3: the challenge names the scheme
    /// and the realm, and no error, when the request "lacks any authentication information"
    /// (no `Authorization`, or another scheme).
    pub fn unauthorized(detail: &str) -> Problem {
        Problem {
            challenge: Some("Bearer realm=\"shipwatch\""),
            ..Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid bearer token is needed",
                detail,
            )
        }
    }

    /// A request whose bearer token is not one of the configured ones. RFC 6750, section 3:
    /// when the request "included an access token and failed authentication", the challenge
    /// says `error="invalid_token"` (section 3.1), so that a client tells a wrong or revoked
    /// token from a missing one.
    pub fn invalid_token(detail: &str) -> Problem {
        Problem {
            challenge: Some("Bearer realm=\"shipwatch\", error=\"invalid_token\""),
            ..Problem::unauthorized(detail)
        }
    }

    /// A request whose `Authorization` header names the bearer scheme but holds no token.
    /// RFC 6750, section 3.1: a malformed request is `error="invalid_request"` with a 400.
    pub fn invalid_request(detail: &str) -> Problem {
        Problem {
            challenge: Some("Bearer realm=\"shipwatch\", error=\"invalid_request\""),
            ..Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "The Authorization header is malformed",
                detail,
            )
        }
    }

    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "The body is not well-formed JSON",
            detail,
        )
    }

    pub fn invalid(errors: Vec<FieldError>) -> Problem {
        let detail = match errors.as_slice() {
            [one] => match one.index {
                Some(i) => format!("item {i}: {}: {}", one.field, one.detail),
                None => format!("{}: {}", one.field, one.detail),
            },
            many => format!("{} fields are invalid; see errors", many.len()),
        };
        Problem {
            errors,
            ..Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-fields",
                "Some fields are invalid",
                detail,
            )
        }
    }

    pub fn unsupported_media_type() -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "The body must be JSON",
            "send the body with Content-Type: application/json",
        )
    }

    pub fn too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The body is too large",
            format!("a request body may be at most {limit} bytes"),
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn method_not_allowed() -> Problem {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this path does not answer that method; see /v1/openapi.json",
        )
    }

    pub fn conflict(detail: impl Into<String>, errors: Vec<FieldError>) -> Problem {
        Problem {
            errors,
            ..Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "The order is already tracked with other values",
                detail,
            )
        }
    }

    pub fn unavailable() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The database is unavailable",
            "the database cannot be written or read just now; try again shortly",
        )
    }

    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; the daemon's log says why",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let wire = Wire {
            kind: format!("urn:shipwatch:problem:{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
        };
        let body = serde_json::to_vec(&wire).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
