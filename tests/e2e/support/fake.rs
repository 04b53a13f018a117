//! What every fake upstream shares below its wire format: its state, locked by the handlers and
//! the test alike; its server on 127.0.0.1:0, stopped when the fake is dropped; form decoding;
//! and the HTTP answers a gateway gives whatever API it fronts (a JSON body, 429 with
//! `Retry-After`, an anti-crawler HTML page). What a fake answers is kept in `script.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

// Under `fake` rather than beside it: the pipeline bench includes this file and `fake_top.rs` by
// path, and the fake needs its script core there too.
#[path = "script.rs"]
pub mod script;

/// A fake's state, shared by its handlers and the test that drives it.
pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(state: T) -> Self {
        Shared(Arc::new(Mutex::new(state)))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        // A panicking test thread must not take every later assertion down with it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A fake's HTTP server on loopback; dropping it stops the server.
pub struct Server {
    /// `http://127.0.0.1:PORT`, without a path.
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on a free loopback port; `name` says which fake failed, should it.
pub async fn serve(router: Router, name: &'static str) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .unwrap_or_else(|e| panic!("{name} stopped serving: {e}"));
    });
    Server {
        base: format!("http://127.0.0.1:{port}"),
        task,
    }
}

/// `body` as JSON with this status.
pub fn json_reply(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

/// HTTP 429 with `Retry-After: N`.
pub fn too_many_requests(retry_after: u64) -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&retry_after.to_string()).expect("digits are a header value"),
    );
    response
}

/// An HTML page with HTTP 200, as an anti-crawler wall or a busy gateway answers.
pub fn html_reply(page: &'static str) -> Response {
    let mut response = (StatusCode::OK, page).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=UTF-8"),
    );
    response
}

/// This HTTP status with a short text body naming the fake.
pub fn http_status(code: u16, name: &str) -> Response {
    let status = StatusCode::from_u16(code).expect("a valid HTTP status");
    (status, format!("{name} answered {code}")).into_response()
}

/// `application/x-www-form-urlencoded`, later keys winning; a `%` not followed by two hex
/// digits is kept as it is.
pub fn parse_form(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// Imports go inside each test: the pipeline bench compiles this file with `cfg(test)` but
// without its tests.
#[cfg(test)]
mod tests {
    #[test]
    fn forms_are_decoded() {
        use super::{parse_form, percent_decode};

        let form = parse_form(
            "timestamp=2026-11-20+08%3A00%3A01&status=%E7%AD%BE%E6%94%B6&x=%zz&e=&t=%4&\
             param=%7B%22com%22%3A%22yuantong%22%2C%22num%22%3A%22YT+1%22%7D",
        );
        assert_eq!(form["timestamp"], "2026-11-20 08:00:01");
        assert_eq!(form["status"], "签收");
        assert_eq!(form["x"], "%zz");
        assert_eq!(form["e"], "");
        assert_eq!(form["t"], "%4");
        assert_eq!(form["param"], r#"{"com":"yuantong","num":"YT 1"}"#);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
