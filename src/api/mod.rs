//! The shipments API under `/v1`, served beside `/healthz` and `/metrics` on `[http] listen`:
//! shops' systems add, read, change and remove shipments over HTTP, checked as `add` checks them
//! and written through the same storage operations. Off (every `/v1` path 404) without tokens.
//!
//! `mod.rs` holds the router, its state and the request counting; `auth` the bearer tokens,
//! `problem` the error answers, `body` the reading of bodies and queries (pure), `shipments`
//! the handlers, `openapi` the served description.

mod auth;
pub mod body;
mod openapi;
pub mod problem;
mod shipments;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::{get, post};
use metrics::counter;

use crate::clock::SharedClock;
use crate::config::{Config, Tiers};
use crate::intake::Intake;
use crate::storage::Db;

pub use auth::{Caller, Tokens};
pub use openapi::OPENAPI;
pub use problem::{FieldError, PROBLEM_JSON, Problem};
pub use shipments::differing_fields;

/// The largest request body read: 1 MiB holds a batch of 1,000 shipments with room to spare.
pub const MAX_BODY: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

struct Inner {
    db: Db,
    /// What a reload renews: the tokens and the providers a create is checked against.
    renewable: RwLock<Renewable>,
    tiers: Tiers,
    clock: SharedClock,
}

struct Renewable {
    intake: Arc<Intake>,
    tokens: Arc<Tokens>,
}

impl Renewable {
    fn of(config: &Config) -> Renewable {
        Renewable {
            intake: Arc::new(Intake::new(Some(config))),
            tokens: Arc::new(Tokens::new(&config.api.tokens)),
        }
    }
}

impl ApiState {
    /// The API's state for `config`, or `None` when it has no tokens (the API is off).
    pub fn new(config: &Config, db: Db, clock: SharedClock) -> Option<ApiState> {
        if !config.api.enabled() {
            return None;
        }
        Some(ApiState(Arc::new(Inner {
            db,
            renewable: RwLock::new(Renewable::of(config)),
            tiers: config.tiers,
            clock,
        })))
    }

    /// Takes the tokens and providers of a reloaded config: a token added to the file works,
    /// one removed is refused from now on (all of them removed: every request is refused until
    /// tokens come back; turning the API on or off takes a restart).
    pub fn renew(&self, config: &Config) -> usize {
        let renewed = Renewable::of(config);
        let count = config.api.tokens.len();
        *self.0.renewable.write().unwrap_or_else(|e| e.into_inner()) = renewed;
        count
    }

    fn intake(&self) -> Arc<Intake> {
        self.0
            .renewable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .intake
            .clone()
    }

    fn tokens(&self) -> Arc<Tokens> {
        self.0
            .renewable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .tokens
            .clone()
    }
}

/// The `/v1` routes, to be merged into the `[http]` listener's router.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/shipments", post(shipments::create).get(shipments::list))
        .route("/shipments/batch", post(shipments::batch))
        .route(
            "/shipments/{order_id}",
            get(shipments::show)
                .patch(shipments::patch)
                .delete(shipments::remove),
        )
        .route("/openapi.json", get(openapi::serve))
        .fallback(shipments::not_found)
        .method_not_allowed_fallback(shipments::not_allowed)
        .with_state(state);
    Router::new().nest("/v1", v1)
}

/// Counts one answer in `shipwatch_api_requests_total`.
fn count(route: &'static str, status: axum::http::StatusCode) {
    counter!(
        "shipwatch_api_requests_total",
        "route" => route,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
}
