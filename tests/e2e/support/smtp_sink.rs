//! A real SMTP server on loopback, for the email channel.
//!
//! It speaks enough of RFC 5321 for a real client: greeting, EHLO/HELO, MAIL FROM, RCPT TO,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT; anything else gets a 500 or 502, as from a real
//! server. [`SmtpSink::start`] speaks plain text and neither advertises nor accepts `STARTTLS`;
//! [`SmtpSink::start_tls`] speaks TLS from the first byte or after `STARTTLS` (RFC 3207), with a
//! certificate for 127.0.0.1 from a certificate authority made for the sink
//! ([`SmtpSink::ca_pem`]), which no client trusts unless told to.
//!
//! Answers are scripted per mail transaction: each MAIL FROM takes the next [`Reply`] (the
//! default, once the script is used up, is to accept). A transaction rejected at RCPT never
//! reaches DATA; one rejected at the end of DATA is still recorded in [`SmtpSink::attempts`] so
//! that a test can compare what each attempt carried.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How the sink answers one mail transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 250 to every step.
    Accept,
    /// This code and text to MAIL FROM, which then starts no transaction (e.g. `530 5.7.0 Must
    /// issue a STARTTLS command first`, from a server that takes mail over TLS only).
    Mail(u16, String),
    /// This code and text to RCPT TO (e.g. `550 5.1.1 <addr> no such mailbox`).
    Rcpt(u16, String),
    /// This code and text after the message data (e.g. `451 4.3.0 try later`).
    Data(u16, String),
    /// Takes the message data and never answers it: for client timeouts.
    Stall,
    /// Closes the connection after the first line of the message data: a server that crashes
    /// mid-DATA. Nothing is recorded.
    DropInData,
}

impl Reply {
    pub fn mail(code: u16, text: impl Into<String>) -> Reply {
        Reply::Mail(code, text.into())
    }

    pub fn rcpt(code: u16, text: impl Into<String>) -> Reply {
        Reply::Rcpt(code, text.into())
    }

    pub fn data(code: u16, text: impl Into<String>) -> Reply {
        Reply::Data(code, text.into())
    }
}

/// One message whose data reached the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The envelope sender, without the angle brackets.
    pub from: String,
    /// The envelope recipients accepted at RCPT.
    pub to: Vec<String>,
    /// The raw message as transmitted (CRLF line ends, dot-unstuffed).
    pub data: String,
    /// What the sink answered to the data: 250, the scripted code, or nothing ([`Reply::Stall`]).
    pub code: Option<u16>,
    /// Whether the message came over TLS.
    pub tls: bool,
}

impl Received {
    /// The header's value, continuation lines unfolded; the first one if repeated.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut found: Option<String> = None;
        let mut in_wanted = false;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if in_wanted && let Some(value) = found.as_mut() {
                    value.push_str(line);
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            in_wanted = false;
            if let Some((key, value)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                found = Some(value.trim_start().to_owned());
                in_wanted = true;
            }
        }
        found
    }

    /// The `Subject`, RFC 2047 encoded words decoded.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject").map(|raw| decode_encoded_words(&raw))
    }

    pub fn message_id(&self) -> Option<String> {
        self.header("Message-ID")
    }

    /// The body as text: the transfer encoding (7bit, 8bit, quoted-printable, base64) undone,
    /// line ends as `\n`, no trailing line end.
    pub fn body_text(&self) -> String {
        let body = self
            .data
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = match encoding.trim() {
            "base64" => {
                let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                BASE64.decode(compact).expect("base64 body decodes")
            }
            "quoted-printable" => decode_quoted_printable(body),
            _ => body.as_bytes().to_vec(),
        };
        let text = String::from_utf8(bytes).expect("body is UTF-8");
        text.replace("\r\n", "\n").trim_end_matches('\n').to_owned()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    attempts: Vec<Received>,
    connections: usize,
    /// `user password` of each AUTH PLAIN.
    logins: Vec<String>,
    /// Clients that said `QUIT`.
    quits: usize,
}

/// The running server; it stops when dropped.
pub struct SmtpSink {
    pub port: u16,
    tls: SinkTls,
    /// The certificate authority of a TLS sink, PEM.
    ca_pem: Option<String>,
    state: Arc<Mutex<State>>,
    /// Bumped by [`SmtpSink::hang_up_idle`].
    hang_up: watch::Sender<u64>,
    task: JoinHandle<()>,
}

/// How a sink speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    /// Plain text; `STARTTLS` is refused.
    None,
    /// TLS from the first byte, as on port 465.
    Implicit,
    /// Plain text until the client says `STARTTLS`, which is advertised.
    StartTls,
}

impl SmtpSink {
    /// A plain-text sink.
    pub async fn start() -> SmtpSink {
        SmtpSink::start_tls(SinkTls::None).await
    }

    /// A sink that speaks TLS as `tls` says.
    pub async fn start_tls(tls: SinkTls) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let (hang_up, hang_ups) = watch::channel(0);
        let (ca_pem, acceptor) = match tls {
            SinkTls::None => (None, None),
            SinkTls::Implicit | SinkTls::StartTls => {
                let (ca_pem, acceptor) = certified();
                (Some(ca_pem), Some(acceptor))
            }
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                let (state, hang_ups, acceptor) =
                    (shared.clone(), hang_ups.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let plain = Session {
                        tls: false,
                        greet: true,
                        offer_starttls: tls == SinkTls::StartTls,
                    };
                    let encrypted = |greet| Session {
                        tls: true,
                        greet,
                        offer_starttls: false,
                    };
                    match (tls, acceptor) {
                        (SinkTls::Implicit, Some(acceptor)) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, state, hang_ups, encrypted(true)).await;
                            }
                        }
                        (SinkTls::StartTls, Some(acceptor)) => {
                            let asked = serve(stream, state.clone(), hang_ups.clone(), plain).await;
                            if let Some(stream) = asked
                                && let Ok(stream) = acceptor.accept(stream).await
                            {
                                serve(stream, state, hang_ups, encrypted(false)).await;
                            }
                        }
                        _ => {
                            serve(stream, state, hang_ups, plain).await;
                        }
                    }
                });
            }
        });
        SmtpSink {
            port,
            tls,
            ca_pem,
            state,
            hang_up,
            task,
        }
    }

    /// Closes every connection waiting for its next command with `421`, as a server does when a
    /// client has idled past its limit.
    pub fn hang_up_idle(&self) {
        self.hang_up.send_modify(|n| *n += 1);
    }

    /// `smtp://127.0.0.1:{port}`, `smtps://…` or `smtp://…?tls=starttls`, as the sink speaks.
    pub fn url(&self) -> String {
        match self.tls {
            SinkTls::None => format!("smtp://127.0.0.1:{}", self.port),
            SinkTls::Implicit => format!("smtps://127.0.0.1:{}", self.port),
            SinkTls::StartTls => format!("smtp://127.0.0.1:{}?tls=starttls", self.port),
        }
    }

    /// The certificate authority that signed a TLS sink's certificate, PEM: for a client's
    /// `SSL_CERT_FILE`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Replaces the script; transactions beyond it are accepted.
    pub fn set_script(&self, script: Vec<Reply>) {
        self.lock().script = script.into();
    }

    /// How many messages the sink accepted, without copying them (for a loop that asks often).
    pub fn accepted(&self) -> usize {
        self.lock()
            .attempts
            .iter()
            .filter(|m| m.code == Some(250))
            .count()
    }

    /// The messages the sink accepted, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.lock()
            .attempts
            .iter()
            .filter(|m| m.code == Some(250))
            .cloned()
            .collect()
    }

    /// Every message whose data reached the sink, accepted or refused at the end of DATA.
    pub fn attempts(&self) -> Vec<Received> {
        self.lock().attempts.clone()
    }

    /// `user password` of each AUTH PLAIN a client sent.
    pub fn logins(&self) -> Vec<String> {
        self.state.lock().unwrap().logins.clone()
    }

    /// How many clients said `QUIT` before closing.
    pub fn quits(&self) -> usize {
        self.lock().quits
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port that accepts connections and never says a word: what an implicit-TLS port looks like
/// to a client that waits for a plain-text greeting.
pub struct SilentPort {
    pub port: u16,
    task: JoinHandle<()>,
}

impl SilentPort {
    pub async fn start() -> SilentPort {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        SilentPort { port, task }
    }
}

impl Drop for SilentPort {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A transaction in progress: MAIL FROM seen, DATA not yet finished.
struct Transaction {
    from: String,
    to: Vec<String>,
    reply: Reply,
}

/// A certificate authority made here, and a TLS acceptor with a certificate for 127.0.0.1 that
/// it signed.
fn certified() -> (String, TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use tokio_rustls::rustls;
    let mut authority = CertificateParams::new(Vec::<String>::new()).unwrap();
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    authority
        .distinguished_name
        .push(DnType::CommonName, "shipwatch test sink CA");
    let authority = CertifiedIssuer::self_signed(authority, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &authority)
        .unwrap();
    let acceptor = tls_acceptor(
        certificate.der().clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    );
    (authority.pem(), acceptor)
}

/// A TLS acceptor that presents `certificate` (the sink's, and the TLS tests of other channels).
pub fn tls_acceptor(
    certificate: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    key: tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
) -> TlsAcceptor {
    use tokio_rustls::rustls;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certificate], key)
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// What one stretch of a conversation is.
#[derive(Clone, Copy)]
struct Session {
    /// Over TLS.
    tls: bool,
    /// Says the greeting first (not after `STARTTLS`).
    greet: bool,
    /// Advertises and accepts `STARTTLS`.
    offer_starttls: bool,
}

/// Serves one connection until it ends (`None`) or the client asks for `STARTTLS` where it is
/// offered: then the stream is handed back, for the TLS handshake.
async fn serve<S>(
    stream: S,
    state: Arc<Mutex<State>>,
    mut hang_ups: watch::Receiver<u64>,
    session: Session,
) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    macro_rules! say {
        ($($arg:tt)*) => {
            if write
                .write_all(format!("{}\r\n", format!($($arg)*)).as_bytes())
                .await
                .is_err()
            {
                return None;
            }
        };
    }

    if session.greet {
        say!("220 sink.test ESMTP shipwatch test sink");
    }
    let mut greeted = false;
    let mut transaction: Option<Transaction> = None;
    hang_ups.mark_unchanged();
    loop {
        // A hang-up already signalled wins over a command that arrived with it.
        let line = tokio::select! {
            biased;
            _ = hang_ups.changed() => {
                say!("421 4.4.2 sink.test closing idle connection");
                return None;
            }
            line = read_line(&mut reader) => line,
        };
        let line = line?;
        let (verb, argument) = match line.split_once(' ') {
            Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" => {
                greeted = true;
                transaction = None;
                say!("250-sink.test greets {argument}");
                say!("250-8BITMIME");
                say!("250-ENHANCEDSTATUSCODES");
                if session.offer_starttls {
                    say!("250-STARTTLS");
                }
                say!("250-AUTH PLAIN");
                say!("250 SIZE 10485760");
            }
            "HELO" => {
                greeted = true;
                transaction = None;
                say!("250 sink.test");
            }
            "NOOP" => say!("250 2.0.0 OK"),
            "RSET" => {
                transaction = None;
                say!("250 2.0.0 OK");
            }
            "QUIT" => {
                state.lock().unwrap().quits += 1;
                say!("221 2.0.0 bye");
                return None;
            }
            "STARTTLS" if session.offer_starttls => {
                say!("220 2.0.0 ready to start TLS");
                return Some(reader.into_inner().unsplit(write));
            }
            "STARTTLS" => say!("502 5.5.1 STARTTLS not available"),
            "AUTH" => match argument.split_once(' ') {
                Some((mechanism, encoded)) if mechanism.eq_ignore_ascii_case("PLAIN") => {
                    use base64::Engine;
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim())
                        .unwrap_or_default();
                    // authzid NUL authcid NUL password
                    let login = String::from_utf8_lossy(&decoded).replace('\0', " ");
                    state.lock().unwrap().logins.push(login.trim().to_owned());
                    say!("235 2.7.0 Authentication successful");
                }
                _ => say!("504 5.5.4 only AUTH PLAIN with an initial response"),
            },
            "MAIL" if !greeted => say!("503 5.5.1 say EHLO first"),
            "MAIL" if transaction.is_some() => say!("503 5.5.1 nested MAIL command"),
            "MAIL" => match path_argument(argument, "FROM:") {
                Some(from) => {
                    let reply = state
                        .lock()
                        .unwrap()
                        .script
                        .pop_front()
                        .unwrap_or(Reply::Accept);
                    if let Reply::Mail(code, text) = &reply {
                        say!("{code} {text}");
                    } else {
                        transaction = Some(Transaction {
                            from,
                            to: Vec::new(),
                            reply,
                        });
                        say!("250 2.1.0 OK");
                    }
                }
                None => say!("501 5.5.4 syntax: MAIL FROM:<address>"),
            },
            "RCPT" => match (&mut transaction, path_argument(argument, "TO:")) {
                (None, _) => say!("503 5.5.1 need MAIL first"),
                (Some(_), None) => say!("501 5.5.4 syntax: RCPT TO:<address>"),
                (Some(t), Some(to)) => {
                    if let Reply::Rcpt(code, text) = &t.reply {
                        say!("{code} {text}");
                    } else {
                        t.to.push(to);
                        say!("250 2.1.5 OK");
                    }
                }
            },
            "DATA" => {
                let Some(t) = transaction.take() else {
                    say!("503 5.5.1 need MAIL first");
                    continue;
                };
                if t.to.is_empty() {
                    say!("554 5.5.1 no valid recipients");
                    continue;
                }
                say!("354 end data with <CR><LF>.<CR><LF>");
                if t.reply == Reply::DropInData {
                    let _ = read_line(&mut reader).await;
                    return None;
                }
                let data = read_data(&mut reader).await?;
                let code = match &t.reply {
                    Reply::Data(code, _) => Some(*code),
                    Reply::Stall => None,
                    _ => Some(250),
                };
                state.lock().unwrap().attempts.push(Received {
                    from: t.from,
                    to: t.to,
                    data,
                    code,
                    tls: session.tls,
                });
                match t.reply {
                    Reply::Data(code, text) => say!("{code} {text}"),
                    Reply::Stall => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return None;
                    }
                    _ => say!("250 2.0.0 queued"),
                }
            }
            "" => say!("500 5.5.2 empty command"),
            _ => say!("500 5.5.2 command not recognized"),
        }
    }
}

/// One line without its line end; `None` at end of stream. Bytes that are not UTF-8 (a TLS
/// handshake sent to this plain port) are kept lossily so that they get a 500, as from a real
/// server.
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Option<String> {
    let mut buffer = Vec::new();
    match reader.read_until(b'\n', &mut buffer).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let line = String::from_utf8_lossy(&buffer);
            Some(line.trim_end_matches(['\r', '\n']).to_owned())
        }
    }
}

/// The message data up to the lone `.`, dot-unstuffed, lines joined with CRLF.
async fn read_data(reader: &mut (impl AsyncBufRead + Unpin)) -> Option<String> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(reader).await?;
        if line == "." {
            return Some(lines.join("\r\n"));
        }
        lines.push(line.strip_prefix('.').unwrap_or(&line).to_owned());
    }
}

/// `FROM:<a@b> SIZE=123` → `a@b`.
fn path_argument(argument: &str, prefix: &str) -> Option<String> {
    let head = argument.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = argument[prefix.len()..].trim_start();
    let path = rest.strip_prefix('<')?;
    let (address, _parameters) = path.split_once('>')?;
    Some(address.to_owned())
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`); whitespace between two
/// encoded words is dropped, as the RFC says.
fn decode_encoded_words(raw: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut gap = String::new();
    let mut rest = raw;
    while !rest.is_empty() {
        if let Some(word) = rest.strip_prefix("=?")
            && let Some((charset, after)) = word.split_once('?')
            && let Some((encoding, after)) = after.split_once('?')
            && let Some((text, after)) = after.split_once("?=")
        {
            assert!(
                charset.eq_ignore_ascii_case("utf-8"),
                "unexpected charset {charset}"
            );
            let bytes = match encoding {
                "b" | "B" => BASE64.decode(text).expect("encoded word is base64"),
                "q" | "Q" => decode_quoted_printable(&text.replace('_', " ")),
                other => panic!("unknown encoded-word encoding {other}"),
            };
            pending.extend(bytes);
            gap.clear();
            rest = after;
            continue;
        }
        let c = rest.chars().next().unwrap();
        rest = &rest[c.len_utf8()..];
        if c.is_whitespace() && !pending.is_empty() {
            // Dropped if another encoded word follows, kept otherwise.
            gap.push(c);
            continue;
        }
        if !pending.is_empty() {
            out.push_str(&String::from_utf8(std::mem::take(&mut pending)).expect("UTF-8"));
            out.push_str(&std::mem::take(&mut gap));
        }
        out.push(c);
    }
    out.push_str(&String::from_utf8(pending).expect("UTF-8"));
    out
}

fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3,
            b'=' if bytes[i + 1..].starts_with(b"\n") => i += 2,
            b'=' => {
                let hex = text.get(i + 1..i + 3).expect("escape has two hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_subject_encoded_words_decode() {
        assert_eq!(
            decode_encoded_words("=?utf-8?b?5YyF6KO55bey562+5pS2?="),
            "包裹已签收"
        );
        assert_eq!(
            decode_encoded_words("=?utf-8?b?5YyF6KO5?= =?utf-8?b?5bey562+5pS2?= ok"),
            "包裹已签收 ok"
        );
        assert_eq!(
            decode_encoded_words("=?UTF-8?Q?caf=C3=A9_au_lait?="),
            "café au lait"
        );
        assert_eq!(decode_encoded_words("plain subject"), "plain subject");
    }
}
