//! A webhook receiver on loopback: what `shipwatch demo` delivers to, and what end-to-end tests
//! use to see exactly what a shop's endpoint would see, including how retries look to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use super::webhook::{WebhookSecret, verify};

/// Standard Webhooks recommends five minutes against replays.
const TOLERANCE_SECS: i64 = 5 * 60;

/// Deliveries kept for a subscriber that falls behind; the demo prints far fewer than this.
const FEED_CAPACITY: usize = 256;

/// A fresh secret in the `whsec_` form, for a demo that has no configured one.
pub fn generate_secret() -> String {
    let mut key = [0u8; 24];
    rand::rng().fill_bytes(&mut key);
    format!("whsec_{}", BASE64.encode(key))
}

/// One request as the receiver saw and answered it.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Empty when the header was missing.
    pub webhook_id: String,
    /// 0 when the header was missing or not a number.
    pub timestamp: i64,
    /// The `webhook-signature` header as received, for verifiers of their own; empty when
    /// missing.
    pub signature: String,
    pub verified: bool,
    /// `Null` when the body is not JSON.
    pub body: serde_json::Value,
    pub raw_body: String,
    /// The status code the receiver answered with.
    pub answered: u16,
    pub at: Instant,
}

/// How the receiver answers correctly signed requests (a bad signature is always 401).
/// Attempts are counted per `webhook-id` from the moment the behaviour is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 to everything.
    Accept,
    /// The first `failures` attempts of each id get `status`, later ones 200.
    FailFirst { failures: usize, status: u16 },
    /// `status` to everything.
    Always(u16),
    /// The first `failures` attempts of each id get 503 with `Retry-After: seconds`.
    RetryAfter { failures: usize, seconds: u64 },
    /// The first attempt of each notification announcing `status` gets 503 with
    /// `Retry-After: seconds`; everything else 200. Holds one change back while later ones come.
    HoldBack { status: String, seconds: u64 },
}

impl Behaviour {
    /// The answer to the `attempt`th (0-based) verified request for one id.
    fn answer(&self, attempt: usize, status: &str) -> (StatusCode, Option<u64>) {
        match *self {
            Behaviour::HoldBack {
                status: ref held,
                seconds,
            } if attempt == 0 && held == status => (StatusCode::SERVICE_UNAVAILABLE, Some(seconds)),
            Behaviour::HoldBack { .. } => (StatusCode::OK, None),
            Behaviour::Accept => (StatusCode::OK, None),
            Behaviour::FailFirst { failures, status } if attempt < failures => (code(status), None),
            Behaviour::FailFirst { .. } => (StatusCode::OK, None),
            Behaviour::Always(status) => (code(status), None),
            Behaviour::RetryAfter { failures, seconds } if attempt < failures => {
                (StatusCode::SERVICE_UNAVAILABLE, Some(seconds))
            }
            Behaviour::RetryAfter { .. } => (StatusCode::OK, None),
        }
    }
}

/// A status outside 100..=999 is a typo in a test; answering 500 keeps the sender's side sane.
fn code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

struct Shared {
    secret: WebhookSecret,
    behaviour: Mutex<Behaviour>,
    attempts: Mutex<HashMap<String, usize>>,
    deliveries: Mutex<Vec<Delivery>>,
    feed: broadcast::Sender<Delivery>,
}

/// A webhook endpoint on 127.0.0.1 that checks every signature. Dropping it stops the server
/// without waiting; [`Receiver::shutdown`] waits for in-flight requests.
pub struct Receiver {
    /// Where to point the webhook channel.
    pub url: String,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Receiver {
    pub async fn start(secret: WebhookSecret, behaviour: Behaviour) -> std::io::Result<Receiver> {
        Receiver::start_with_backlog(secret, behaviour, 1024).await
    }

    /// A receiver whose listen queue holds `backlog` connections not yet accepted: a small one
    /// makes connections wait or retry, as a busy receiver does.
    pub async fn start_with_backlog(
        secret: WebhookSecret,
        behaviour: Behaviour,
        backlog: u32,
    ) -> std::io::Result<Receiver> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(backlog)?;
        let url = format!("http://{}/webhook", listener.local_addr()?);
        let shared = Arc::new(Shared {
            secret,
            behaviour: Mutex::new(behaviour),
            attempts: Mutex::default(),
            deliveries: Mutex::default(),
            feed: broadcast::channel(FEED_CAPACITY).0,
        });
        // Any path and method is recorded, so a misrouted request shows up instead of a 404.
        let router = Router::new().fallback(receive).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    // Dropping the sender counts as a stop too.
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Receiver {
            url,
            shared,
            stop,
            server,
        })
    }

    /// Replaces the behaviour and forgets earlier attempts, so `FailFirst` starts counting anew.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        let mut attempts = lock(&self.shared.attempts);
        *lock(&self.shared.behaviour) = behaviour;
        attempts.clear();
    }

    /// Every request so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared.deliveries).clone()
    }

    /// How many requests were answered `status`, without copying them (for a loop that asks
    /// often).
    pub fn answered(&self, status: u16) -> usize {
        lock(&self.shared.deliveries)
            .iter()
            .filter(|d| d.answered == status)
            .count()
    }

    /// Requests from now on, as they arrive.
    pub fn subscribe(&self) -> broadcast::Receiver<Delivery> {
        self.shared.feed.subscribe()
    }

    /// Stops accepting connections and waits for requests in flight to be answered.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "webhook receiver stopped with an error"),
            Err(error) => tracing::warn!(%error, "webhook receiver task failed"),
        }
    }
}

/// A panic while holding a lock is a test failure already reported; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    let webhook_id = text("webhook-id");
    let timestamp = text("webhook-timestamp");
    let verified = verify(
        &shared.secret,
        webhook_id,
        timestamp,
        text("webhook-signature"),
        &body,
        chrono::Utc::now().timestamp(),
        TOLERANCE_SECS,
    )
    .is_ok();

    let payload: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let announced = payload["data"]["status"].as_str().unwrap_or_default();
    let (status, retry_after) = if verified {
        // Both locks in the same order as `set_behaviour`, so a change lands between requests.
        let mut attempts = lock(&shared.attempts);
        let behaviour = lock(&shared.behaviour);
        let attempt = attempts.entry(webhook_id.to_owned()).or_default();
        let answer = behaviour.answer(*attempt, announced);
        *attempt += 1;
        answer
    } else {
        (StatusCode::UNAUTHORIZED, None)
    };

    let delivery = Delivery {
        webhook_id: webhook_id.to_owned(),
        timestamp: timestamp.parse().unwrap_or(0),
        signature: text("webhook-signature").to_owned(),
        verified,
        body: payload,
        raw_body: String::from_utf8_lossy(&body).into_owned(),
        answered: status.as_u16(),
        at: Instant::now(),
    };
    lock(&shared.deliveries).push(delivery.clone());
    // Nobody listening is the normal case outside the demo.
    let _ = shared.feed.send(delivery);

    let mut response = status.into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::notify::webhook::{Webhook, WebhookConfig, sign};
    use crate::notify::{Channel, DeliveryError, Outgoing};

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    fn channel(receiver: &Receiver, secret: WebhookSecret) -> Webhook {
        let config = WebhookConfig {
            url: receiver.url.clone(),
            secret,
        };
        Webhook::new(
            config,
            crate::notify::no_redirect_client().unwrap(),
            Duration::from_secs(5),
        )
    }

    fn outgoing(id: &str) -> Outgoing {
        Outgoing {
            public_id: id.into(),
            payload: format!(r#"{{"type":"shipment.status_changed","id":"{id}"}}"#),
            recipient: None,
        }
    }

    fn answers(receiver: &Receiver, id: &str) -> Vec<u16> {
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.webhook_id == id)
            .map(|d| d.answered)
            .collect()
    }

    #[test]
    fn generated_secrets_are_fresh_24_byte_keys() {
        let first = generate_secret();
        assert!(first.starts_with("whsec_"));
        let key = BASE64.decode(&first["whsec_".len()..]).unwrap();
        assert_eq!(key.len(), 24);
        assert!(WebhookSecret::parse(&first).is_ok());
        assert_ne!(first, generate_secret());
    }

    #[tokio::test]
    async fn records_a_verified_delivery_and_feeds_it_live() {
        let receiver = Receiver::start(secret(), Behaviour::Accept).await.unwrap();
        let mut feed = receiver.subscribe();
        let message = outgoing("ntf_1");
        channel(&receiver, secret())
            .deliver(&message)
            .await
            .unwrap();

        let deliveries = receiver.deliveries();
        assert_eq!(deliveries.len(), 1);
        let delivery = &deliveries[0];
        assert!(delivery.verified);
        assert_eq!(delivery.webhook_id, "ntf_1");
        assert_eq!(delivery.answered, 200);
        assert_eq!(delivery.raw_body, message.payload);
        assert_eq!(delivery.body["type"], "shipment.status_changed");
        assert!((chrono::Utc::now().timestamp() - delivery.timestamp).abs() <= 5);

        let live = feed.recv().await.unwrap();
        assert_eq!(live.webhook_id, "ntf_1");
        assert!(live.verified);
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn a_wrong_signature_is_refused_and_recorded_unverified() {
        let receiver = Receiver::start(secret(), Behaviour::Accept).await.unwrap();
        let other = WebhookSecret::parse(&generate_secret()).unwrap();
        let result = channel(&receiver, other).deliver(&outgoing("ntf_2")).await;
        match result {
            Err(DeliveryError::Permanent(reason)) => assert!(reason.contains("401"), "{reason}"),
            other => panic!("expected a permanent failure, got {other:?}"),
        }

        // A stale but otherwise valid signature is a replay.
        let stale = chrono::Utc::now().timestamp() - 600;
        let body = "not json";
        let response = reqwest::Client::new()
            .post(&receiver.url)
            .header("webhook-id", "ntf_3")
            .header("webhook-timestamp", stale.to_string())
            .header("webhook-signature", sign(&secret(), "ntf_3", stale, body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);

        let deliveries = receiver.deliveries();
        assert_eq!(deliveries.len(), 2);
        assert!(deliveries.iter().all(|d| !d.verified && d.answered == 401));
        assert_eq!(deliveries[1].timestamp, stale);
        assert_eq!(deliveries[1].body, serde_json::Value::Null);
        assert_eq!(deliveries[1].raw_body, "not json");
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn fail_first_counts_attempts_per_id() {
        let behaviour = Behaviour::FailFirst {
            failures: 2,
            status: 500,
        };
        let receiver = Receiver::start(secret(), behaviour).await.unwrap();
        let webhook = channel(&receiver, secret());
        for id in ["ntf_a", "ntf_b"] {
            for _ in 0..2 {
                let result = webhook.deliver(&outgoing(id)).await;
                assert!(
                    matches!(result, Err(DeliveryError::Transient { .. })),
                    "{result:?}"
                );
            }
            webhook.deliver(&outgoing(id)).await.unwrap();
        }
        assert_eq!(answers(&receiver, "ntf_a"), [500, 500, 200]);
        assert_eq!(answers(&receiver, "ntf_b"), [500, 500, 200]);
        assert!(receiver.deliveries().iter().all(|d| d.verified));
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn retry_after_and_always_and_behaviour_changes() {
        let behaviour = Behaviour::RetryAfter {
            failures: 1,
            seconds: 7,
        };
        let receiver = Receiver::start(secret(), behaviour).await.unwrap();
        let webhook = channel(&receiver, secret());
        match webhook.deliver(&outgoing("ntf_r")).await {
            Err(DeliveryError::Transient { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("expected a transient failure, got {other:?}"),
        }
        webhook.deliver(&outgoing("ntf_r")).await.unwrap();

        receiver.set_behaviour(Behaviour::Always(410));
        let result = webhook.deliver(&outgoing("ntf_r")).await;
        assert!(
            matches!(result, Err(DeliveryError::Paused { .. })),
            "{result:?}"
        );
        // 410 Gone stops the channel until it is lifted (a reload or a restart).
        webhook.resume();

        receiver.set_behaviour(Behaviour::FailFirst {
            failures: 1,
            status: 429,
        });
        assert!(webhook.deliver(&outgoing("ntf_r")).await.is_err());
        webhook.deliver(&outgoing("ntf_r")).await.unwrap();
        assert_eq!(answers(&receiver, "ntf_r"), [503, 200, 410, 429, 200]);
        receiver.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_the_port() {
        let receiver = Receiver::start(secret(), Behaviour::Accept).await.unwrap();
        let webhook = channel(&receiver, secret());
        webhook.deliver(&outgoing("ntf_s")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), receiver.shutdown())
            .await
            .expect("shutdown does not hang on the sender's idle keep-alive connection");
        let result = webhook.deliver(&outgoing("ntf_s")).await;
        match result {
            Err(DeliveryError::Transient { message, .. }) => {
                assert!(message.starts_with("connection refused"), "{message}")
            }
            other => panic!("expected a transient failure, got {other:?}"),
        }
    }
}
