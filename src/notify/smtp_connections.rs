//! The email channel's SMTP connections: opened with Nagle's algorithm off, kept open between
//! messages, checked with `NOOP` before reuse.
//!
//! Why not lettre's own pool: lettre 0.11.23, the newest release, writes a message's body and its
//! closing `\r\n.\r\n` in two writes on a socket with Nagle on, so the last five bytes wait for
//! the server's delayed ACK, about 40 ms on Linux, on every message. lettre sets `TCP_NODELAY`
//! from its PR #1159 ("perf(transport-smtp): set TCP_NODELAY on connections", merged after
//! 0.11.23), which measured 42–44 ms a message before and 1.2–2.0 ms after. Besides the time, a
//! daemon killed within those 40 ms leaves the closing dot in the kernel's send queue; the kernel
//! sends it after the process is gone, the server accepts a message whose acceptance the daemon
//! never saw, and the next daemon sends it again. So we open the TCP stream, set `TCP_NODELAY`
//! and hand it to lettre (`AsyncSmtpConnection::connect_with_transport`), which still speaks
//! SMTP, STARTTLS and AUTH; this file only keeps the connections. Once a lettre release sets the
//! option itself, its pool can take this file's place.
//!
//! Implicit TLS (`smtps://`) needs the TLS session before the greeting, which
//! `connect_with_transport` does not open. lettre's own TLS (its `TlsParameters`, certificate
//! checks and errors) is opened on our stream with `AsyncNetworkStream::upgrade_tls`, and the
//! encrypted stream is handed to `connect_with_transport` like a plain one ([`Encrypted`]).
//! `AsyncNetworkStream` is public but deprecated ("not meant to be made public"); it goes with
//! this file.
//!
//! The pool follows lettre's defaults: at most [`MOST_IDLE`] idle connections, none idle longer
//! than [`IDLE_TIMEOUT`], a `NOOP` before a parked connection is used again, and a connection
//! whose transaction failed is closed rather than parked. A connection abandoned mid-transaction
//! (the attempt timed out) is dropped with the attempt and never parked. As lettre's pool does,
//! a task looks for connections idle too long every [`REAP_EVERY`] and closes them, so none
//! waits open for a next message that may not come; at the daemon's stop the rest say `QUIT`
//! ([`SmtpConnections::close_idle`]).

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
#[allow(deprecated)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, Tls};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

/// Idle connections kept at most (lettre's `PoolConfig` default).
pub const MOST_IDLE: usize = 10;
/// A parked connection older than this is closed instead of used (lettre's default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the connections left idle too long are looked for.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection itself (refused, unreachable, no address).
    #[error(transparent)]
    Tcp(std::io::Error),
    /// The greeting, EHLO, STARTTLS or AUTH, or lettre's own connect for implicit TLS.
    #[error(transparent)]
    Smtp(#[from] SmtpError),
}

struct Parked {
    conn: AsyncSmtpConnection,
    /// Tokio's clock, so that a test can move it past the idle limit.
    since: tokio::time::Instant,
}

/// Where to connect and how; the connections kept for reuse.
pub struct SmtpConnections {
    host: String,
    port: u16,
    tls: Tls,
    hello: ClientId,
    credentials: Option<Credentials>,
    idle: Arc<Mutex<Vec<Parked>>>,
    /// Whether the task that closes connections left idle too long runs (see
    /// [`SmtpConnections::reap`]).
    reaping: AtomicBool,
}

impl fmt::Debug for SmtpConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credentials stay out.
        f.debug_struct("SmtpConnections")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("idle", &self.idle_count())
            .finish_non_exhaustive()
    }
}

impl SmtpConnections {
    /// Opens nothing yet.
    pub fn new(host: &str, port: u16, tls: Tls, credentials: Option<Credentials>) -> Self {
        SmtpConnections {
            host: host.to_owned(),
            port,
            tls,
            hello: ClientId::default(),
            credentials,
            idle: Arc::default(),
            reaping: AtomicBool::new(false),
        }
    }

    /// A parked connection that still answers `NOOP`, or a new one. Unbounded in time: the
    /// caller bounds the whole attempt.
    pub async fn take(&self) -> Result<AsyncSmtpConnection, ConnectError> {
        loop {
            let parked = self.lock().pop();
            let Some(parked) = parked else {
                return self.connect().await;
            };
            let mut conn = parked.conn;
            if parked.since.elapsed() <= IDLE_TIMEOUT && conn.test_connected().await {
                return Ok(conn);
            }
            close(conn);
        }
    }

    /// Parks a connection after its transaction, unless it broke or enough are parked. Never
    /// waits on the server: the transaction's outcome is already known and must not change.
    pub fn give_back(&self, conn: AsyncSmtpConnection) {
        if !conn.has_broken() {
            let mut idle = self.lock();
            // Those idle too long go now rather than at their turn, which may not come soon.
            close_stale(&mut idle);
            if idle.len() < MOST_IDLE {
                idle.push(Parked {
                    conn,
                    since: tokio::time::Instant::now(),
                });
                drop(idle);
                self.reap();
                return;
            }
        }
        close(conn);
    }

    /// Starts, at the first park (inside the runtime), a task that closes every
    /// [`REAP_EVERY`] the connections idle longer than [`IDLE_TIMEOUT`], so that none stays
    /// open long after the last message (at most 90 s in all). It ends once the connections are
    /// dropped.
    fn reap(&self) {
        if self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let idle = Arc::downgrade(&self.idle);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                let Some(idle) = idle.upgrade() else {
                    return;
                };
                close_stale(&mut lock(&idle));
            }
        });
    }

    /// Says `QUIT` on every parked connection and closes it, all at once and waiting at most
    /// [`QUIT_WAIT`] in all: at the daemon's stop, so that the server hears a goodbye instead of
    /// a connection dropped.
    pub async fn close_idle(&self) {
        let parked = std::mem::take(&mut *self.lock());
        let mut quits = tokio::task::JoinSet::new();
        for Parked { mut conn, .. } in parked {
            quits.spawn(async move {
                let _ = conn.abort().await;
            });
        }
        let _ = tokio::time::timeout(QUIT_WAIT, quits.join_all()).await;
    }

    /// Connections parked now.
    fn idle_count(&self) -> usize {
        self.lock().len()
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, ConnectError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(ConnectError::Tcp)?;
        stream.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let mut conn = match &self.tls {
            Tls::Wrapper(parameters) => {
                #[allow(deprecated)]
                let mut tls = AsyncNetworkStream::use_existing_tokio1(Box::new(stream));
                tls.upgrade_tls(parameters.clone()).await?;
                let encrypted = Encrypted(tls.compat());
                AsyncSmtpConnection::connect_with_transport(Box::new(encrypted), &self.hello)
                    .await?
            }
            tls => {
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                        .await?;
                match tls {
                    Tls::Required(parameters) => {
                        conn.starttls(parameters.clone(), &self.hello).await?;
                    }
                    Tls::Opportunistic(parameters) if conn.can_starttls() => {
                        conn.starttls(parameters.clone(), &self.hello).await?;
                    }
                    _ => {}
                }
                conn
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        lock(&self.idle)
    }
}

/// lettre's TLS session on our `TCP_NODELAY` stream, as the plain stream
/// `connect_with_transport` takes. lettre then sees an unencrypted stream, which changes nothing
/// it does for implicit TLS: it offers STARTTLS only when asked, and it sends AUTH whatever the
/// stream.
#[allow(deprecated)]
#[derive(Debug)]
struct Encrypted(Compat<AsyncNetworkStream>);

impl AsyncTokioStream for Encrypted {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

impl AsyncRead for Encrypted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Encrypted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn lock(idle: &Mutex<Vec<Parked>>) -> std::sync::MutexGuard<'_, Vec<Parked>> {
    // A panic while the list was held leaves a list of parked connections, still sound.
    idle.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Closes the parked connections idle longer than [`IDLE_TIMEOUT`].
fn close_stale(idle: &mut Vec<Parked>) {
    for stale in idle.extract_if(.., |parked| parked.since.elapsed() > IDLE_TIMEOUT) {
        close(stale.conn);
    }
}

/// How long a connection let go may take to say `QUIT`.
const QUIT_WAIT: Duration = Duration::from_secs(5);

/// Says `QUIT` (unless lettre already did, on a failed command) and closes, in the background and
/// bounded: a server that no longer answers does not hold up the attempt.
fn close(mut conn: AsyncSmtpConnection) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(QUIT_WAIT, conn.abort()).await;
    });
}
