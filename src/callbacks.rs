//! The public listener (`[http] public_listen`): the callbacks upstream posts to, and nothing
//! else. Kept apart from the admin listener (`/healthz`, `/metrics`) so that exposing it to the
//! internet exposes no more than the callbacks; served with the same hardening (header-read
//! timeout, connection cap and lifetime) and a body limit of its own.
//!
//! `POST /callbacks/kuaidi100/{provider}`: Kuaidi100's subscription push for the push-mode
//! provider `[providers.{provider}]`, whose `callback_url` should reach it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dispatch::{CallbackApplied, Dispatcher};
use crate::health::BodyRefused;
use crate::outage::Outage;
use crate::providers::kuaidi100_push::{
    ACK, CallbackError, MAX_CALLBACK_BYTES, NOT_SAVED, read_callback,
};

pub const KUAIDI100_PATH: &str = "/callbacks/kuaidi100/{provider}";

/// Serves the callbacks on `listen` until `stop` fires. Returns the bound address (port 0 picks
/// a free one) and the server task.
pub async fn serve(
    listen: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(crate::health::serve_connections(
        "[http] public_listen",
        listener,
        router(dispatcher),
        stop,
    ));
    Ok((bound, task))
}

/// The public routes; anything else is 404.
pub fn router(dispatcher: Arc<Dispatcher>) -> Router {
    Router::new()
        .route(KUAIDI100_PATH, post(kuaidi100))
        .with_state(dispatcher)
}

fn json(status: StatusCode, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

fn count(provider: &str, outcome: &'static str) {
    metrics::counter!("shipwatch_callbacks_total", "provider" => provider.to_owned(), "outcome" => outcome)
        .increment(1);
}

async fn kuaidi100(
    State(dispatcher): State<Arc<Dispatcher>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match crate::health::read_body(&headers, body, MAX_CALLBACK_BYTES).await {
        Ok(body) => body,
        Err(BodyRefused::TooLarge) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Err(BodyRefused::Broken) => return StatusCode::BAD_REQUEST.into_response(),
    };
    // Only a configured push-mode provider has a callback; the name is the caller's, not ours,
    // until it is found.
    let Some(provider) = dispatcher.provider(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(subscriber) = provider.push.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let callback = match read_callback(&body, subscriber.push().salt.expose()) {
        Ok(callback) => callback,
        Err(error) => {
            let outcome = match error {
                CallbackError::MissingSign | CallbackError::BadSign => "bad_sign",
                CallbackError::NotAForm | CallbackError::BadParam(_) => "bad_request",
            };
            count(&name, outcome);
            // One line a minute for a flood of the same refusal.
            if let Some(suppressed) =
                crate::throttle::admit(&format!("callback refused\0{name}\0{outcome}"))
            {
                warn!(provider = %name, reason = %crate::shown::for_terminal(&error.to_string()), suppressed, "Kuaidi100 callback refused; nothing stored");
            }
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let number = callback.number.clone().unwrap_or_default();
    match dispatcher.apply_callback(&name, callback).await {
        Ok(CallbackApplied::Saved(_)) => {
            count(&name, "saved");
            json(StatusCode::OK, ACK)
        }
        Ok(CallbackApplied::Unknown) => {
            count(&name, "unknown");
            // Acknowledged so that Kuaidi100 stops pushing what nobody here tracks.
            if crate::throttle::admit(&format!("callback unknown\0{name}\0{number}")).is_some() {
                info!(provider = %name, tracking_no = %crate::shown::for_terminal(&number), "Kuaidi100 callback for a waybill no shipment has; acknowledged");
            }
            json(StatusCode::OK, ACK)
        }
        Err(e) => {
            count(&name, "not_saved");
            Outage::database().failed("saving a Kuaidi100 callback", &e);
            // Not the acknowledgement: Kuaidi100 pushes it again later.
            json(StatusCode::INTERNAL_SERVER_ERROR, NOT_SAVED)
        }
    }
}
