use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::notify::ChannelKind;

fn headers(pairs: &[(&'static str, &str)]) -> axum::http::HeaderMap {
    let mut map = axum::http::HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, value.parse().unwrap());
    }
    map
}

#[tokio::test]
async fn a_body_is_read_up_to_its_limit_and_refused_beyond() {
    let body = |n: usize| axum::body::Body::from(vec![b'x'; n]);
    let none = headers(&[]);
    assert_eq!(read_body(&none, body(10), 10).await.unwrap().len(), 10);
    assert_eq!(
        read_body(&none, body(11), 10).await,
        Err(BodyRefused::TooLarge)
    );
    // A length declared over the limit is refused whatever follows, and so it is for a
    // client waiting for 100 Continue.
    let declared = headers(&[("content-length", "11")]);
    assert_eq!(
        read_body(&declared, body(11), 10).await,
        Err(BodyRefused::TooLarge)
    );
    let waiting = headers(&[("content-length", "11"), ("expect", "100-continue")]);
    assert_eq!(
        read_body(&waiting, body(11), 10).await,
        Err(BodyRefused::TooLarge)
    );
    // The declared length decides before a byte is read; a length of exactly the limit is
    // taken.
    assert_eq!(
        read_body(&declared, body(3), 10).await,
        Err(BodyRefused::TooLarge)
    );
    let at_limit = headers(&[("content-length", "10")]);
    assert_eq!(read_body(&at_limit, body(10), 10).await.unwrap().len(), 10);
}

/// A body of `frames` frames of `size` bytes each that counts the bytes pulled from it.
struct Counted {
    size: usize,
    frames: usize,
    pulled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.frames == 0 {
            return std::task::Poll::Ready(None);
        }
        self.frames -= 1;
        self.pulled
            .fetch_add(self.size, std::sync::atomic::Ordering::SeqCst);
        let data = axum::body::Bytes::from(vec![b'x'; self.size]);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }
}

/// How many bytes `read_body` with a limit of 10 pulls from a body of `bytes` bytes sent in
/// frames of 5, under `headers`.
async fn pulled_by_a_refusal(pairs: &[(&'static str, &str)], bytes: usize) -> usize {
    let pulled = std::sync::Arc::default();
    let body = Counted {
        size: 5,
        frames: bytes / 5,
        pulled: std::sync::Arc::clone(&pulled),
    };
    let answer = read_body(&headers(pairs), axum::body::Body::new(body), 10).await;
    assert_eq!(answer, Err(BodyRefused::TooLarge));
    pulled.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn a_refused_body_is_drained_up_to_eight_times_the_limit_unless_it_waits() {
    // Sent without a length: the 10 taken, the frame that went over, then 70 more, eight
    // times the limit in all (to the frame), and the rest is left for the close.
    assert_eq!(pulled_by_a_refusal(&[], 200).await, 85);
    // A declared length within eight times the limit is drained whole before the refusal.
    assert_eq!(
        pulled_by_a_refusal(&[("content-length", "50")], 50).await,
        50
    );
    // Nothing is read from a client that waits for 100 Continue (it has sent nothing), nor
    // from one that declares more than draining would take.
    let waits = [("content-length", "50"), ("expect", "100-continue")];
    assert_eq!(pulled_by_a_refusal(&waits, 50).await, 0);
    assert_eq!(
        pulled_by_a_refusal(&[("content-length", "1000")], 1000).await,
        0
    );
}

/// The metrics the operations page lists, with the type it gives each:
/// `("shipwatch_polls_total", "counter")`, ….
fn documented_metrics() -> Vec<(String, &'static str)> {
    include_str!("../../docs/operations.md")
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("| `shipwatch_")?.split_once('`')?;
            let name = name.split('{').next()?;
            let kind = rest.trim_start().strip_prefix('|')?.split('|').next()?;
            Some((format!("shipwatch_{name}"), kind.trim()))
        })
        .collect()
}

#[test]
fn every_metric_the_operations_page_lists_has_its_help_text_and_type() {
    let documented = documented_metrics();
    assert_eq!(documented.len(), 16, "{documented:?}");
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        for (name, kind) in &documented {
            match *kind {
                "gauge" => gauge!(name.clone()).set(1.0),
                "counter" => counter!(name.clone()).increment(1),
                "summary" => metrics::histogram!(name.clone()).record(0.5),
                other => panic!("{name}: unknown type {other} on the operations page"),
            }
        }
    });
    let page = handle.render();
    for (name, kind) in documented {
        assert!(
            page.contains(&format!("# HELP {name} ")),
            "{name} has no help text in\n{page}"
        );
        assert!(
            page.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind} in\n{page}"
        );
    }
    assert!(
        page.contains("# HELP shipwatch_database_writable 0 while the daemon's writes fail"),
        "{page}"
    );
    assert!(
        page.contains("# HELP shipwatch_rate_limit_wait_seconds Time each poll waited"),
        "{page}"
    );
}

#[test]
fn unhealthy_reasons_read_as_one_line_to_the_second() {
    let stalled = Unhealthy::Stalled {
        age: whole_seconds(Duration::from_millis(95_500)),
        limit: Duration::from_secs(60),
    };
    assert_eq!(
        stalled.to_string(),
        "dispatcher: last round completed 1m 35s ago (limit 1m)"
    );
    let down = Unhealthy::NotWritable {
        for_how_long: whole_seconds(Duration::from_millis(3_200)),
        error: "disk full".to_owned(),
    };
    assert_eq!(down.to_string(), "database not writable for 3s: disk full");
    assert_eq!(
        Unhealthy::DatabaseSilent(Duration::from_secs(2)).to_string(),
        "database: no answer within 2s"
    );
}

fn failed(retry_in: Option<Duration>) -> PipelineEvent {
    PipelineEvent::DeliveryFailed {
        order_id: "1".to_owned(),
        channel: ChannelKind::Email,
        status: "delivered".to_owned(),
        attempt: 2,
        error: "mailbox full".to_owned(),
        retry_in,
    }
}

#[test]
fn a_failure_with_no_retry_counts_as_dead() {
    // A recorder of the test's own: the global one is shared with every other test.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        count(&failed(Some(Duration::from_secs(60))));
        count(&failed(None));
        count(&failed(None));
    });
    let page = handle.render();
    assert!(
        page.contains(r#"shipwatch_notifications_total{channel="email",result="failed"} 1"#),
        "{page}"
    );
    assert!(
        page.contains(r#"shipwatch_notifications_total{channel="email",result="dead"} 2"#),
        "{page}"
    );
}

/// A listener serving `ok` at `/`, stopped by the token; the handle ends once it has drained.
async fn listening() -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", get(|| async { "ok" }));
    let stop = CancellationToken::new();
    let served = tokio::spawn(serve_connections("test", listener, app, stop.clone()));
    (addr, stop, served)
}

/// Asks for `/` again on a kept-alive connection: whether `ok` came back.
async fn served(stream: &mut TcpStream) -> bool {
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        match read.expect("an answer or a close within 5 s") {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        let answer = String::from_utf8_lossy(&seen);
        if answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nok") {
            return true;
        }
    }
}

/// Whether the listener closes an idle connection within 2 s.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("unasked bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

#[tokio::test]
async fn kept_alive_connections_are_held_up_to_the_cap_and_the_oldest_gives_way_past_it() {
    let (addr, stop, serving) = listening().await;
    let mut oldest = TcpStream::connect(addr).await.unwrap();
    assert!(served(&mut oldest).await);
    let mut others = Vec::new();
    for _ in 1..MAX_CONNECTIONS {
        let mut next = TcpStream::connect(addr).await.unwrap();
        assert!(served(&mut next).await);
        others.push(next);
    }
    // 64 open: a probe's kept-alive connection is served again however many came after it.
    assert!(served(&mut oldest).await, "the oldest of 64 is held");
    assert!(!closed(&mut others[0]).await);

    let mut newest = TcpStream::connect(addr).await.unwrap();
    assert!(served(&mut newest).await);
    assert!(closed(&mut oldest).await, "the 65th closes the oldest");
    assert!(served(&mut others[0]).await, "and only the oldest");
    assert!(served(&mut newest).await);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the listener stops within its close grace")
        .unwrap();
    assert!(closed(&mut newest).await);
}

#[test]
fn a_connection_given_up_is_skipped_and_running_out_of_descriptors_is_not() {
    for kind in [
        std::io::ErrorKind::ConnectionRefused,
        std::io::ErrorKind::ConnectionAborted,
        std::io::ErrorKind::ConnectionReset,
    ] {
        assert!(is_connection_error(&kind.into()), "{kind:?}");
    }
    // EMFILE, ENFILE: the connection waits in the backlog for a descriptor.
    for errno in [24, 23] {
        let error = std::io::Error::from_raw_os_error(errno);
        assert!(!is_connection_error(&error), "{error}");
    }
    assert!(!is_connection_error(
        &std::io::ErrorKind::OutOfMemory.into()
    ));
}

/// Accept errors in the order given, then nothing more: keeps when each accept was asked for.
struct Failing {
    errors: std::collections::VecDeque<std::io::Error>,
    asked: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl Accept for Failing {
    async fn next(&mut self) -> std::io::Result<TcpStream> {
        lock(&self.asked).push(tokio::time::Instant::now());
        match self.errors.pop_front() {
            Some(error) => Err(error),
            None => std::future::pending().await,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_given_up_is_passed_over_at_once_and_no_descriptor_left_waits_a_second() {
    let (logs, _guard) = crate::test_logs::Logs::capture();
    let asked = Arc::default();
    let script = Failing {
        errors: [
            std::io::ErrorKind::ConnectionReset.into(),
            std::io::Error::from_raw_os_error(24),
            std::io::ErrorKind::ConnectionAborted.into(),
            std::io::Error::from_raw_os_error(23),
        ]
        .into(),
        asked: Arc::clone(&asked),
    };
    let start = tokio::time::Instant::now();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(serve_connections(
        "test",
        script,
        Router::new(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;

    let seconds: Vec<u64> = lock(&asked)
        .iter()
        .map(|at| (*at - start).as_secs())
        .collect();
    // The client's reset is passed over at once; EMFILE and ENFILE wait a second each before
    // accepting again rather than spinning on a backlog no descriptor can take.
    assert_eq!(seconds, [0, 0, 1, 1, 2]);
    assert_eq!(
        logs.lines("WARN", "cannot accept a connection; trying again in 1s"),
        2,
        "{}",
        logs.text()
    );
    stop.cancel();
    serving.await.unwrap();
}
