//! Servers on loopback that misbehave at the level of TCP and HTTP, below what the wire-format
//! fakes can express: an upstream gateway that stalls, resets connections, answers errors,
//! garbage or an endless body, chosen per order; and a webhook endpoint slower than the
//! sender's timeout.
//!
//! Both speak just enough HTTP/1.1 by hand (a request line, headers, a `Content-Length` body) to
//! serve reqwest, so that every byte they send, or do not send, is under the test's control.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the hostile gateway answers a request for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Reads the request and never answers.
    Stall,
    /// Reads the request and resets the connection (RST, not FIN).
    Reset,
    /// This HTTP status with a short text body.
    Status(u16),
    /// An HTML page with 200, as an anti-crawler wall answers.
    Html,
    /// A JSON document cut off in the middle.
    TruncatedJson,
    /// Text that is not JSON at all, though it starts like it.
    MalformedJson,
    /// Valid JSON of a shape no TOP answer has.
    WrongShape,
    /// 200 and a body of `mib` MiB, streamed with no `Content-Length` until the client hangs up.
    Endless { mib: usize },
}

/// One request that reached the gateway.
#[derive(Debug, Clone)]
pub struct Request {
    /// The `tid` form field, if any.
    pub tid: Option<u64>,
    pub at: Instant,
}

#[derive(Default)]
struct GatewayState {
    modes: HashMap<u64, Misbehaviour>,
    requests: Vec<Request>,
    /// Bytes of endless bodies written before the client hung up.
    streamed: usize,
}

/// A gateway that misbehaves as told, per `tid`; a `tid` it was told nothing about gets a 500.
pub struct HostileGateway {
    pub url: String,
    state: Arc<Mutex<GatewayState>>,
    task: JoinHandle<()>,
}

impl HostileGateway {
    pub async fn start() -> HostileGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/router/rest", listener.local_addr().unwrap());
        let state: Arc<Mutex<GatewayState>> = Arc::default();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.retain(|task: &JoinHandle<()>| !task.is_finished());
                held.push(tokio::spawn(serve_gateway(stream, shared.clone())));
            }
        });
        HostileGateway { url, state, task }
    }

    pub fn set(&self, tid: u64, mode: Misbehaviour) {
        self.lock().modes.insert(tid, mode);
    }

    pub fn requests_for(&self, tid: u64) -> Vec<Request> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.tid == Some(tid))
            .cloned()
            .collect()
    }

    pub fn streamed_bytes(&self) -> usize {
        self.lock().streamed
    }

    fn lock(&self) -> MutexGuard<'_, GatewayState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for HostileGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The request line, headers and body, or `None` if the client went away first.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some((head, buffer[head_end..head_end + length].to_vec()))
}

fn form_field(body: &[u8], key: &str) -> Option<String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

fn response(status: u16, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn serve_gateway(mut stream: TcpStream, state: Arc<Mutex<GatewayState>>) {
    let Some((_, body)) = read_request(&mut stream).await else {
        return;
    };
    let tid = form_field(&body, "tid").and_then(|t| t.parse::<u64>().ok());
    let mode = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.requests.push(Request {
            tid,
            at: Instant::now(),
        });
        tid.and_then(|tid| state.modes.get(&tid).copied())
            .unwrap_or(Misbehaviour::Status(500))
    };
    let json = "application/json;charset=UTF-8";
    let reply = match mode {
        Misbehaviour::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Misbehaviour::Reset => {
            // SO_LINGER 0: closing sends RST and drops whatever was buffered.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
            return;
        }
        Misbehaviour::Status(code) => response(code, "text/plain", "upstream exploded"),
        Misbehaviour::Html => response(
            200,
            "text/html;charset=UTF-8",
            "<!DOCTYPE html><html><body><h1>亲，访问受限了</h1></body></html>",
        ),
        Misbehaviour::TruncatedJson => response(
            200,
            json,
            r#"{"logistics_trace_search_response":{"tid":1,"status":"物流公司揽"#,
        ),
        Misbehaviour::MalformedJson => response(
            200,
            json,
            r#"{"logistics_trace_search_response":{tid:1,,"status":}]"#,
        ),
        Misbehaviour::WrongShape => response(
            200,
            json,
            r#"{"success":true,"data":{"items":[{"tid":1,"status":"ok"}]}}"#,
        ),
        Misbehaviour::Endless { mib } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {json}\r\nConnection: close\r\n\r\n\
                 {{\"logistics_trace_search_response\":{{\"status\":\""
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..mib {
                if stream.write_all(&chunk).await.is_err() {
                    break;
                }
                state.lock().unwrap_or_else(|p| p.into_inner()).streamed += chunk.len();
            }
            return;
        }
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A webhook endpoint (or any HTTP receiver: an SMS gateway) that answers 200, but only after
/// `delay` (slower than the sender waits), or only once the test opens it
/// ([`SlowWebhook::gated`]). It counts the requests it holds at once.
pub struct SlowWebhook {
    pub url: String,
    ids: Arc<Mutex<Vec<(String, Instant)>>>,
    held: Arc<Held>,
    task: JoinHandle<()>,
    gate: Option<watch::Sender<bool>>,
}

/// Requests taken and not answered yet, and the most of them at any one time.
#[derive(Default)]
struct Held {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl SlowWebhook {
    pub async fn start(delay: Duration) -> SlowWebhook {
        SlowWebhook::hold(delay, None).await
    }

    /// Holds every answer until [`SlowWebhook::open`]: the test decides what happens between a
    /// request's arrival and its answer.
    pub async fn gated() -> SlowWebhook {
        SlowWebhook::hold(Duration::ZERO, Some(watch::channel(false).0)).await
    }

    /// From now on, answers at once, those held included.
    pub fn open(&self) {
        if let Some(gate) = &self.gate {
            gate.send_replace(true);
        }
    }

    async fn hold(delay: Duration, gate: Option<watch::Sender<bool>>) -> SlowWebhook {
        let opened = gate.as_ref().map(|gate| gate.subscribe());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let ids: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let held: Arc<Held> = Arc::default();
        let (shared, holding) = (ids.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (shared, mut opened) = (shared.clone(), opened.clone());
                let holding = holding.clone();
                tokio::spawn(async move {
                    // A kept-alive connection may carry several requests.
                    while let Some((head, _)) = read_request(&mut stream).await {
                        let id = head
                            .lines()
                            .filter_map(|line| line.split_once(':'))
                            .find(|(name, _)| name.trim().eq_ignore_ascii_case("webhook-id"))
                            .map(|(_, value)| value.trim().to_owned())
                            .unwrap_or_default();
                        shared
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, Instant::now()));
                        let now = holding.now.fetch_add(1, Ordering::SeqCst) + 1;
                        holding.peak.fetch_max(now, Ordering::SeqCst);
                        match opened.as_mut() {
                            Some(opened) => {
                                let _ = opened.wait_for(|open| *open).await;
                            }
                            None => tokio::time::sleep(delay).await,
                        }
                        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                        let written = stream.write_all(ok.as_bytes()).await;
                        holding.now.fetch_sub(1, Ordering::SeqCst);
                        if written.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowWebhook {
            url,
            ids,
            held,
            task,
            gate,
        }
    }

    /// The most requests held at once since the start or the last call, which starts the count
    /// again from those held now.
    pub fn take_peak(&self) -> usize {
        let now = self.held.now.load(Ordering::SeqCst);
        self.held.peak.swap(now, Ordering::SeqCst)
    }

    /// The `webhook-id` of every request, in arrival order.
    pub fn requests(&self) -> Vec<(String, Instant)> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for SlowWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server whose every answer is an error with a body that never ends: chunked, streamed as
/// fast as the client reads, until the client hangs up. The status is chosen per path prefix
/// (`/top`, `/hook`…), so that one server stands in for every upstream and every channel; a
/// 429 carries `Retry-After: 600`. Each request's streamed bytes are recorded.
pub struct EndlessBodies {
    base: String,
    served: Arc<Mutex<Vec<(String, usize)>>>,
    task: JoinHandle<()>,
}

/// Where an endless body stops if the client never does, so that a failing test fails on its
/// assertions rather than by filling the machine.
const ENDLESS_SAFETY_STOP: usize = 4 << 30;

impl EndlessBodies {
    pub async fn start(routes: &[(&'static str, u16)]) -> EndlessBodies {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let served: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
        let shared = served.clone();
        let routes = routes.to_vec();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let shared = shared.clone();
                let routes = routes.clone();
                tokio::spawn(async move {
                    let Some((head, _)) = read_request(&mut stream).await else {
                        return;
                    };
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let status = routes
                        .iter()
                        .find(|(prefix, _)| path.starts_with(prefix))
                        .map_or(500, |(_, status)| *status);
                    let index = {
                        let mut served = shared.lock().unwrap_or_else(|p| p.into_inner());
                        served.push((path, 0));
                        served.len() - 1
                    };
                    let retry_after = if status == 429 {
                        "Retry-After: 600\r\n"
                    } else {
                        ""
                    };
                    let head = format!(
                        "HTTP/1.1 {status} Whatever\r\nContent-Type: text/html\r\n{retry_after}\
                         Transfer-Encoding: chunked\r\n\r\n"
                    );
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let data = vec![b'x'; 64 << 10];
                    let frame =
                        [format!("{:x}\r\n", data.len()).as_bytes(), &data, b"\r\n"].concat();
                    let mut sent = 0;
                    while sent < ENDLESS_SAFETY_STOP {
                        if stream.write_all(&frame).await.is_err() {
                            break;
                        }
                        sent += data.len();
                        shared.lock().unwrap_or_else(|p| p.into_inner())[index].1 = sent;
                    }
                });
            }
        });
        EndlessBodies { base, served, task }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The body bytes streamed to each request whose path starts with `prefix`, in order.
    pub fn streamed(&self, prefix: &str) -> Vec<usize> {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, bytes)| *bytes)
            .collect()
    }
}

impl Drop for EndlessBodies {
    fn drop(&mut self) {
        self.task.abort();
    }
}
