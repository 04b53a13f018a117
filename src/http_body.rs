//! The one way an HTTP answer's body is read, by every provider and every channel, on success
//! and error paths alike: at most a given number of bytes, whatever the other end sends. Also
//! the answer's `Retry-After`, and a POST to a URL parsed once.
//!
//! An upstream gateway or a receiver is outside our control: a broken one can answer with a body
//! that never ends (an error page streamed forever, a proxy looping). Read whole, such a body
//! costs the daemon all its memory, and the same again at each restart while the message is
//! still due. Reading stops at the limit; the rest is never downloaded (dropping the response
//! closes the connection), and the client's request timeout bounds the time spent.

/// A POST to a configured URL, parsed once by its owner (`parsed`) rather than at every request:
/// reqwest parses a URL given as text at each call. With `parsed` None (a URL that does not
/// parse, which the config refuses at load), the text goes to reqwest, whose error then names
/// what is wrong with it.
pub fn post(
    http: &reqwest::Client,
    parsed: Option<&reqwest::Url>,
    raw: &str,
) -> reqwest::RequestBuilder {
    match parsed {
        Some(url) => http.post(url.clone()),
        None => http.post(raw),
    }
}

/// How long an answer's `Retry-After` asks to wait: delta-seconds or an HTTP-date (RFC 9110,
/// section 10.2.3); a date in the past means "now". `None` when there is none or it is neither.
pub fn retry_after(
    headers: &reqwest::header::HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<std::time::Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(std::time::Duration::from_secs(seconds));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is valid RFC 2822.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        at.with_timezone(&chrono::Utc)
            .signed_duration_since(now)
            .to_std()
            .unwrap_or(std::time::Duration::ZERO),
    )
}

/// The most of an error answer (any answer that is not a success, and every channel's answer)
/// that is read: the verdict or error message is at its start.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What was read of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    /// At most the limit's worth of bytes.
    pub bytes: Vec<u8>,
    /// True when the body went on past the limit (or said it would): `bytes` is only its start.
    pub cut: bool,
}

/// Reads at most `limit` bytes of `response`'s body: its start is kept even when the whole is
/// longer (an error page's first lines say what went wrong). A read that breaks after some bytes
/// arrived returns what arrived; one that breaks before is the error.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Capped, reqwest::Error> {
    let mut bytes = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) if bytes.is_empty() => return Err(e),
            Err(_) => break,
        };
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Capped { bytes, cut: true });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Capped { bytes, cut: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let header = |value: &'static str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::RETRY_AFTER,
                reqwest::header::HeaderValue::from_static(value),
            );
            retry_after(&headers, now)
        };
        assert_eq!(header("7"), Some(std::time::Duration::from_secs(7)));
        assert_eq!(
            header("Wed, 21 Oct 2015 07:30:00 GMT"),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            header("Wed, 21 Oct 2015 07:00:00 GMT"),
            Some(std::time::Duration::ZERO)
        );
        assert_eq!(header("soon"), None);
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new(), now), None);
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `status` and `mib` MiB of body, chunked, or
    /// with a `Content-Length` when `announce` is set.
    async fn serve(status: u16, mib: usize, announce: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let framing = if announce {
                        format!("Content-Length: {}", mib << 20)
                    } else {
                        "Transfer-Encoding: chunked".to_owned()
                    };
                    let head = format!("HTTP/1.1 {status} X\r\n{framing}\r\n\r\n");
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let data = vec![b'x'; 1 << 20];
                    for _ in 0..mib {
                        let wrote = if announce {
                            socket.write_all(&data).await
                        } else {
                            let size = format!("{:x}\r\n", data.len());
                            let _ = socket.write_all(size.as_bytes()).await;
                            let _ = socket.write_all(&data).await;
                            socket.write_all(b"\r\n").await
                        };
                        if wrote.is_err() {
                            return;
                        }
                    }
                    if !announce {
                        let _ = socket.write_all(b"0\r\n\r\n").await;
                    }
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_the_limit_and_no_further() {
        // (status, MiB sent, Content-Length given, limit, bytes kept, cut)
        let table: &[(u16, usize, bool, usize, usize, bool)] = &[
            // An error answer: 64 KiB of it, as docs/operations.md says.
            (500, 50, false, MAX_ANSWER_BYTES, 64 << 10, true),
            (200, 50, false, 8 << 20, 8 << 20, true),
            (200, 2, false, 8 << 20, 2 << 20, false),
            (500, 50, true, 64 << 10, 64 << 10, true),
            (200, 1, true, 1 << 20, 1 << 20, false),
        ];
        for &(status, mib, announce, limit, kept, cut) in table {
            let url = serve(status, mib, announce).await;
            let response = reqwest::get(&url).await.unwrap();
            let read = read_capped(response, limit).await.unwrap();
            let row = (status, mib, announce, limit);
            assert_eq!(read.bytes.len(), kept, "{row:?}");
            assert_eq!(read.cut, cut, "{row:?}");
        }
    }

    /// A server that announces 1,000 bytes of body, sends `sent` of them and hangs up.
    async fn serve_broken(sent: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 502 X\r\nContent-Length: 1000\r\n\r\n";
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&vec![b'x'; sent]).await;
        });
        url
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_keeps_what_arrived_and_one_with_nothing_is_the_error() {
        let response = reqwest::get(&serve_broken(300).await).await.unwrap();
        let read = read_capped(response, MAX_ANSWER_BYTES).await.unwrap();
        assert_eq!(read.bytes, vec![b'x'; 300]);
        let response = reqwest::get(&serve_broken(0).await).await.unwrap();
        assert!(read_capped(response, MAX_ANSWER_BYTES).await.is_err());
    }
}
