//! How webhooks travel, with the real binary: certificates are verified, redirects are failed
//! attempts that are never followed, a receiver's answer is read to 64 KiB at most, and the
//! destination comes from the config alone, whatever a shipment row says.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::app::TestApp;
use crate::support::config::{Channel, Provider};

/// Waits until the notifications have all settled (none pending) and returns the outbox.
/// The outbox once no notification is pending, read in one go; with `journeys_end`, also once
/// every shipment's journey is over (a journey still under way would queue more meanwhile).
async fn settled(app: &TestApp, what: &str, journeys_end: bool) -> Vec<serde_json::Value> {
    app.wait_until(what, Duration::from_secs(60), || {
        let over = !journeys_end || app.shipments().iter().all(|s| s["active"] == false);
        let all = app.outbox(None);
        over && !all.is_empty() && all.iter().all(|n| n["state"] != "pending")
    })
    .await;
    app.outbox(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_a_self_signed_certificate_gets_nothing() {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let acceptor = crate::support::smtp_sink::tls_acceptor(certified.cert.der().clone(), key);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let (tried, handshakes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (t, h) = (tried.clone(), handshakes.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            t.fetch_add(1, Ordering::SeqCst);
            let (acceptor, h) = (acceptor.clone(), h.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(socket).await {
                    h.fetch_add(1, Ordering::SeqCst);
                    let mut request = [0u8; 4096];
                    let _ = tls.read(&mut request).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });

    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook_to(&url))
        .start()
        .await;
    let tid = 9_700_000_000_000_000_001u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    let outbox = settled(&app, "every webhook has given up", true).await;
    assert!(daemon.terminate().success());

    assert!(
        tried.load(Ordering::SeqCst) > 0,
        "the daemon never connected"
    );
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "a TLS session was set up"
    );
    for row in &outbox {
        assert_eq!(row["state"], "dead", "{row}");
        assert_eq!(row["attempts"], 3, "{row}");
        let error = row["last_error"].as_str().unwrap();
        assert!(
            error.contains("TLS certificate of https://127.0.0.1:"),
            "{error}"
        );
        assert!(error.contains("not accepted"), "{error}");
    }
}

/// A receiver on raw TCP that answers every request with `head` and then streams up to
/// `stream_bytes` of body without a length, counting what each connection took.
struct Streamer {
    url: String,
    written: Arc<std::sync::Mutex<Vec<usize>>>,
}

async fn streamer(head: &'static str, stream_bytes: usize) -> Streamer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let written: Arc<std::sync::Mutex<Vec<usize>>> = Arc::default();
    let record = written.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(head.as_bytes()).await;
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < stream_bytes {
                    match tokio::time::timeout(Duration::from_secs(5), socket.write_all(&chunk))
                        .await
                    {
                        Ok(Ok(())) => sent += chunk.len(),
                        _ => break,
                    }
                }
                record.lock().unwrap().push(sent);
            });
        }
    });
    Streamer { url, written }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_is_read_to_64_kib_and_the_attempt_completes() {
    const ENDLESS: usize = 512 << 20;
    let refusing = streamer(
        "HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\r\n",
        ENDLESS,
    )
    .await;
    let accepting = streamer("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", ENDLESS).await;

    for (receiver, state) in [(&refusing, "dead"), (&accepting, "sent")] {
        let app = TestApp::builder()
            .provider(Provider::top())
            .channel(Channel::webhook_to(&receiver.url))
            .backoff("100ms")
            .start()
            .await;
        let tid = 9_700_000_000_000_000_002u64;
        app.top.script(
            tid,
            vec![crate::support::fake_top::trace_response(
                tid,
                "物流公司揽收成功",
                &[("2026-11-20 08:00:00", "快件已揽收", "GOT")],
            )],
        );
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
        let mut daemon = app.spawn_daemon();
        let outbox = settled(&app, "the webhook attempt completed", false).await;
        assert!(daemon.is_running(), "{}", daemon.log());
        assert!(daemon.terminate().success());
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0]["state"], state, "{}", outbox[0]);
        if state == "dead" {
            assert_eq!(outbox[0]["attempts"], 3);
            let error = outbox[0]["last_error"].as_str().unwrap();
            assert!(error.contains("500"), "{error}");
            assert!(error.len() < 1024, "the reason quotes an excerpt only");
        }
    }
    // The daemon hung up long before the end of each answer: what a connection managed to send
    // is the 64 KiB read plus what the sockets' buffers held.
    let written: Vec<usize> = [&refusing, &accepting]
        .iter()
        .flat_map(|r| r.written.lock().unwrap().clone())
        .collect();
    assert!(written.len() >= 4, "{written:?}");
    for sent in written {
        assert!(
            sent < 32 << 20,
            "a receiver sent {sent} bytes on one connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_and_is_never_followed() {
    use axum::Router;
    use axum::response::Redirect;
    use axum::routing::any;

    let followed = Arc::new(AtomicUsize::new(0));
    let hits = followed.clone();
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_url = format!("http://{}/elsewhere", target.local_addr().unwrap());
    let target_router = Router::new().route(
        "/elsewhere",
        any(move || async move {
            hits.fetch_add(1, Ordering::SeqCst);
            "thanks"
        }),
    );
    tokio::spawn(async move { axum::serve(target, target_router).await.unwrap() });
    let redirecting = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", redirecting.local_addr().unwrap());
    let to = target_url.clone();
    let router = Router::new().route(
        "/hook",
        any(move || {
            let to = to.clone();
            async move { Redirect::temporary(&to) }
        }),
    );
    tokio::spawn(async move { axum::serve(redirecting, router).await.unwrap() });

    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook_to(&url))
        .start()
        .await;
    let tid = 9_700_000_000_000_000_003u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    let outbox = settled(&app, "every webhook has failed", true).await;
    assert!(daemon.terminate().success());
    for row in &outbox {
        assert_eq!(row["state"], "dead", "{row}");
        let error = row["last_error"].as_str().unwrap();
        assert!(
            error.contains("307") && error.contains("redirect"),
            "{error}"
        );
    }
    assert_eq!(
        followed.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_like_values_in_a_shipment_row_never_redirect_its_webhook() {
    // Where a row's values would send the payload if anything took them for a destination.
    let decoy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let decoy_url = format!("http://{}/steal", decoy.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = decoy.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });

    let app = TestApp::builder()
        .provider(Provider::top())
        .provider(Provider::simulator())
        .channel(Channel::webhook())
        .start()
        .await;
    app.create_database();
    let mut daemon = app.spawn_daemon();
    // Every text column an outside program may write holds a URL (the contacts excepted: a
    // URL there makes the row invalid, which another test shows).
    let order_id = format!("{decoy_url}?order=1");
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tracking_no, carrier, tier, raw_status, error) \
         VALUES ('{order_id}', 'sim', '{decoy_url}/tracking', '{decoy_url}/carrier', 'high', \
         '{decoy_url}/raw', '{decoy_url}/error')"
    ))
    .await
    .unwrap();
    app.wait_until(
        "the shipment's changes reached the configured receiver",
        Duration::from_secs(60),
        || app.receiver.deliveries().len() >= 2 && app.outbox(Some("pending")).is_empty(),
    )
    .await;
    assert!(daemon.terminate().success());

    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a delivery went to the row's URL"
    );
    let deliveries = app.receiver.deliveries();
    assert!(deliveries.iter().all(|d| d.verified));
    assert!(
        deliveries
            .iter()
            .all(|d| d.body["data"]["order_id"] == order_id.as_str()),
        "the URL is carried as data"
    );
    for row in app.outbox(None) {
        assert_eq!(row["channel"], "webhook");
        assert_eq!(row["state"], "sent", "{row}");
    }
}
