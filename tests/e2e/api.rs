//! The shipments API through the real binary: every route, the tokens, the refusals and their
//! problem answers, the limits, the masking, and a shipment added over HTTP travelling to its
//! doorstep like any other.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::app::{Daemon, TestApp};
use crate::support::config::{Channel, Provider};

/// Two tokens, as during a rotation; only the second may read contacts.
const TOKEN: &str = "4f1c2a9be07d43e8a5b6c7d8e9f00112";
const READER: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29";
const TOKENS: &str = "# the shop's ERP\n4f1c2a9be07d43e8a5b6c7d8e9f00112\n\n9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29 contacts\n";
const LIMIT: Duration = Duration::from_secs(30);

fn tid(i: u64) -> String {
    (7_100_000_000_000_000_000 + i).to_string()
}

/// Every shipment `GET /v1/shipments` lists in pages of `limit`, following `next_cursor`, and
/// how many pages it took.
async fn every_page(api: &Client, limit: u32) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut path = format!("/v1/shipments?limit={limit}");
    let mut pages = 0;
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, 200, "{page:?}");
        pages += 1;
        let shipments = page.body["shipments"].as_array().unwrap();
        assert!(shipments.len() <= limit as usize, "{page:?}");
        for s in shipments {
            seen.push(s["order_id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/shipments?limit={limit}&cursor={cursor}"),
            None => return (seen, pages),
        }
    }
}

/// An app with the API on, its daemon running and answering.
async fn api_app() -> (TestApp, Daemon, Client) {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .api_tokens(TOKENS)
        .start()
        .await;
    let daemon = app.spawn_daemon();
    let client = Client::new(app.http.clone().expect("listening"), TOKEN);
    client.wait_up().await;
    (app, daemon, client)
}

/// The API's answer: status, content type, and the body as JSON (null when empty).
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    fn new(base: String, token: &str) -> Client {
        Client {
            base,
            token: Some(token.to_owned()),
            http: reqwest::Client::new(),
        }
    }

    fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    async fn wait_up(&self) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await
                && r.status().as_u16() != 0
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the listener never came up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let mut request = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request.send().await.expect("the API answers")).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, Some(body)).await
    }

    async fn raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token.as_deref().unwrap_or(""))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the API answers");
        answer(response).await
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

/// A problem answer: its status, and the fields (with their item's index) it names.
fn problem(answer: &Answer, status: u16) -> Vec<(Option<u64>, String)> {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(
        answer.content_type, "application/problem+json",
        "{answer:?}"
    );
    for member in ["type", "title", "status", "detail"] {
        assert!(
            answer.body.get(member).is_some(),
            "{member} missing: {answer:?}"
        );
    }
    assert_eq!(answer.body["status"], status);
    answer.body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| (e["index"].as_u64(), e["field"].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipments_are_added_read_paged_changed_and_removed() {
    let (app, mut daemon, api) = api_app().await;
    let order = tid(1);
    let body = json!({"order_id": order, "tier": "high", "phone": "13812345678"});
    let created = api.post("/v1/shipments", &body).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.content_type, "application/json");
    assert_eq!(created.body["order_id"], order.as_str());
    assert_eq!(created.body["tier"], "high");
    assert_eq!(created.body["provider"], "taobao");
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/v1/shipments/{order}")
    );
    // The same body again: the row as it is, 200.
    let again = api.post("/v1/shipments", &body).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["order_id"], order.as_str());
    // Another tier for the same order: 409 naming the field; nothing changes.
    let conflict = api
        .post("/v1/shipments", &json!({"order_id": order, "tier": "low"}))
        .await;
    assert_eq!(problem(&conflict, 409), vec![(None, "tier".to_owned())]);
    assert_eq!(app.shipment(&order)["shipment"]["tier"], "high");
    // So is any other field given with another value than the tracked row's.
    for (field, value) in [
        ("tracking_no", "YT0000000001"),
        ("carrier", "圆通速递"),
        ("sub_orders", "1001,1002"),
    ] {
        let conflict = api
            .post(
                "/v1/shipments",
                &json!({"order_id": order, "tier": "high", field: value}),
            )
            .await;
        assert_eq!(problem(&conflict, 409), vec![(None, field.to_owned())]);
    }
    assert_eq!(app.shipment(&order)["shipment"]["tracking_no"], Value::Null);
    // An order `add` inserted compares the same way: the fields given, nothing else.
    app.cli_ok(&["add", &tid(2), "--tier", "low"]);
    let same = api
        .post("/v1/shipments", &json!({"order_id": tid(2)}))
        .await;
    assert_eq!(same.status, 200, "{same:?}");

    let shown = api.get(&format!("/v1/shipments/{order}")).await;
    assert_eq!(shown.status, 200, "{shown:?}");
    let cli = app.shipment(&order);
    // The same shape as show --json, and the same values but for what a poll in between
    // may have changed.
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&shown.body), keys(&cli), "GET answers as show --json");
    assert_eq!(keys(&shown.body["shipment"]), keys(&cli["shipment"]));
    for field in [
        "order_id",
        "provider",
        "tier",
        "phone",
        "email",
        "created_at",
    ] {
        assert_eq!(
            shown.body["shipment"][field], cli["shipment"][field],
            "{field}"
        );
    }
    assert!(shown.body["events"].is_array() && shown.body["notifications"].is_array());

    // A batch of 23, one of them already tracked with the same values.
    let items: Vec<Value> = (10..32)
        .map(|i| {
            let tier = ["high", "normal", "low"][i as usize % 3];
            json!({"order_id": tid(i), "tier": tier})
        })
        .chain([json!({"order_id": order, "tier": "high"})])
        .collect();
    let items = json!({ "shipments": items });
    let batch = api.post("/v1/shipments/batch", &items).await;
    assert_eq!(batch.status, 201, "{batch:?}");
    assert_eq!(batch.body["created"], 22);
    assert_eq!(batch.body["existing"], 1);
    assert_eq!(batch.body["shipments"].as_array().unwrap().len(), 23);
    // The same batch again adds nothing: 200, as a repeat of one create is.
    let again = api.post("/v1/shipments/batch", &items).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["created"], 0);
    assert_eq!(again.body["existing"], 23);

    // Pages of 5 over all 24: each row once, none missed, in a stable order.
    let (seen, pages) = every_page(&api, 5).await;
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 24, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 24, "{seen:?}");
    // Pages of 6: the fourth is full and the last, with no cursor to an empty fifth.
    let (sixes, pages) = every_page(&api, 6).await;
    assert_eq!(pages, 4);
    assert_eq!(sixes, seen);
    // A row no shipwatch writes (a status outside the CHECK, put there by another program with
    // the constraints off) cannot be read: it is left out of its page, the last row of the first,
    // and the pages go on past it.
    app.sql(&format!(
        "PRAGMA ignore_check_constraints = ON; \
         UPDATE shipments SET status = 'lost', active = 0 WHERE order_id = '{}'",
        seen[4]
    ))
    .await
    .unwrap();
    let (after, pages) = every_page(&api, 5).await;
    assert_eq!(pages, 5);
    let mut expected = seen.clone();
    expected.remove(4);
    assert_eq!(after, expected);
    // Asked for alone, that row is a 500 (the log says why), not the 503 of an outage that a
    // retry would outlast.
    let unreadable = api.get(&format!("/v1/shipments/{}", seen[4])).await;
    problem(&unreadable, 500);
    assert_eq!(
        unreadable.body["type"], "urn:shipwatch:problem:internal",
        "{unreadable:?}"
    );
    let lows = api.get("/v1/shipments?tier=low&limit=1000").await;
    assert!(
        lows.body["shipments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["tier"] == "low")
    );

    // PATCH: tier and contacts; null clears one.
    let patched = api
        .send(
            "PATCH",
            &format!("/v1/shipments/{order}"),
            Some(&json!({"tier": "low", "email": "buyer@shop.example", "phone": null})),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["tier"], "low");
    assert_eq!(patched.body["phone"], Value::Null);
    assert_eq!(patched.body["email"], "b***@shop.example");
    let cli = app.shipment(&order);
    assert_eq!(cli["shipment"]["tier"], "low");
    assert_eq!(cli["shipment"]["phone"], Value::Null);

    let gone = api
        .send("DELETE", &format!("/v1/shipments/{order}"), None)
        .await;
    assert_eq!(gone.status, 204, "{gone:?}");
    let again = api
        .send("DELETE", &format!("/v1/shipments/{order}"), None)
        .await;
    problem(&again, 404);
    problem(&api.get(&format!("/v1/shipments/{order}")).await, 404);
    let not_allowed = api.send("PUT", "/v1/shipments", None).await;
    problem(&not_allowed, 405);
    assert_eq!(
        not_allowed.headers["allow"], "POST,GET,HEAD",
        "{not_allowed:?}"
    );
    problem(&api.get("/v1/nothing-here").await, 404);
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_configured_token_opens_the_api_and_refusals_are_counted() {
    let (app, mut daemon, api) = api_app().await;
    let wrong = "0000000000000000000000000000000000000000";
    // RFC 6750, section 3: the challenge names the scheme, and says `invalid_token` when the
    // request brought a token that failed, `invalid_request` (with a 400) when the header says
    // Bearer and brings none.
    for (client, status, challenge) in [
        (api.with_token(None), 401, "Bearer realm=\"shipwatch\""),
        (
            api.with_token(Some(wrong)),
            401,
            "Bearer realm=\"shipwatch\", error=\"invalid_token\"",
        ),
        (
            api.with_token(Some("")),
            400,
            "Bearer realm=\"shipwatch\", error=\"invalid_request\"",
        ),
    ] {
        let refused = client.get("/v1/shipments").await;
        problem(&refused, status);
        assert_eq!(
            refused.headers["www-authenticate"], challenge,
            "{refused:?}"
        );
        assert!(!format!("{:?}", refused.body).contains(wrong));
        let refused = client
            .post("/v1/shipments", &json!({"order_id": tid(1)}))
            .await;
        problem(&refused, status);
        assert_eq!(refused.headers["www-authenticate"], challenge);
    }
    assert!(
        app.cli_ok(&["list"]).lines().count() <= 1,
        "nothing was added"
    );
    // Both tokens of a rotation work.
    assert_eq!(api.get("/v1/shipments").await.status, 200);
    assert_eq!(
        api.with_token(Some(READER))
            .get("/v1/shipments")
            .await
            .status,
        200
    );
    // The document is served without a token, as it is in docs/.
    let doc = api.with_token(None).get("/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc.body, file);

    let metrics = reqwest::get(format!("{}/metrics", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"shipwatch_api_requests_total{route="GET /v1/shipments",status="401"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"shipwatch_api_requests_total{route="GET /v1/shipments",status="400"} 1"#),
        "{metrics}"
    );
    let log = daemon.log();
    assert!(!log.contains(TOKEN) && !log.contains(wrong), "{log}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// A token is rotated with a reload, not a restart: the new one works and the old one is refused
/// once the file is rewritten and the daemon gets SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_tokens() {
    let (app, mut daemon, api) = api_app().await;
    let fresh = "7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f";
    assert_eq!(
        api.with_token(Some(fresh))
            .get("/v1/shipments")
            .await
            .status,
        401
    );
    std::fs::write(
        app.dir.path().join("api.tokens"),
        format!("# rotated\n{fresh}\n{READER} contacts\n"),
    )
    .unwrap();
    daemon.signal("HUP");
    app.wait_until("the daemon has reloaded", LIMIT, || {
        daemon.log().contains("the shipments API's tokens renewed")
    })
    .await;
    let created = api
        .with_token(Some(fresh))
        .post(
            "/v1/shipments",
            &json!({"order_id": tid(7), "tier": "high"}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    problem(&api.get("/v1/shipments").await, 401);
    assert_eq!(
        api.with_token(Some(READER))
            .get("/v1/shipments")
            .await
            .status,
        200
    );
    let log = daemon.log();
    assert!(!log.contains(fresh) && !log.contains(TOKEN), "{log}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_field_is_a_422_naming_it() {
    let (app, mut daemon, api) = api_app().await;
    let cases = [
        (json!({"order_id": tid(1), "tier": "urgent"}), "tier"),
        (json!({"order_id": "not-a-number"}), "order_id"),
        (json!({"order_id": "  "}), "order_id"),
        (json!({"order_id": tid(1), "phone": "12345"}), "phone"),
        (json!({"order_id": tid(1), "email": "nobody"}), "email"),
        (json!({"order_id": tid(1), "openid": "o pen id"}), "openid"),
        (json!({"order_id": tid(1), "provider": "dhl"}), "provider"),
        (json!({"order_id": tid(1), "colour": "red"}), "colour"),
        (json!({"order_id": tid(1), "tier": 1}), "tier"),
        (json!({"order_id": 7100000000000000001u64}), "order_id"),
        (
            json!({"order_id": tid(1), "sub_orders": "a,b"}),
            "sub_orders",
        ),
        (json!({"tier": "high"}), "order_id"),
    ];
    for (body, field) in cases {
        let refused = api.post("/v1/shipments", &body).await;
        assert_eq!(
            problem(&refused, 422),
            vec![(None, field.to_owned())],
            "{body}"
        );
    }
    let patch = api
        .send(
            "PATCH",
            &format!("/v1/shipments/{}", tid(1)),
            Some(&json!({"order_id": "2"})),
        )
        .await;
    assert_eq!(problem(&patch, 422), vec![(None, "order_id".to_owned())]);
    problem(&api.get("/v1/shipments?limit=5000").await, 422);

    // Not JSON: 400; not sent as JSON: 415.
    let malformed = api
        .raw(
            "/v1/shipments",
            "application/json",
            b"{\"order_id\": ".to_vec(),
        )
        .await;
    problem(&malformed, 400);
    let form = api
        .raw(
            "/v1/shipments",
            "application/x-www-form-urlencoded",
            b"order_id=1".to_vec(),
        )
        .await;
    problem(&form, 415);

    // A batch with one bad item adds nothing and names the item.
    let items: Vec<Value> = (0..10)
        .map(|i| {
            if i == 6 {
                json!({"order_id": tid(i), "phone": "555"})
            } else {
                json!({"order_id": tid(i)})
            }
        })
        .collect();
    let refused = api
        .post("/v1/shipments/batch", &json!({ "shipments": items }))
        .await;
    assert_eq!(problem(&refused, 422), vec![(Some(6), "phone".to_owned())]);
    // A conflict in a batch is a 409 naming the item too, and adds nothing either.
    app.cli_ok(&["add", &tid(50), "--tier", "low"]);
    let items =
        json!({"shipments": [{"order_id": tid(51)}, {"order_id": tid(50), "tier": "high"}]});
    let conflict = api.post("/v1/shipments/batch", &items).await;
    assert_eq!(problem(&conflict, 409), vec![(Some(1), "tier".to_owned())]);
    let listed = api.get("/v1/shipments").await;
    assert_eq!(
        listed.body["shipments"].as_array().unwrap().len(),
        1,
        "{listed:?}"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// Sends `head` and then `body` (ignoring a server that hangs up early) and reads the answer's
/// status line.
fn raw_exchange(base: &str, head: String, body: &[u8]) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_a_mebibyte_is_refused() {
    let (_app, mut daemon, api) = api_app().await;
    let two_mib = 2 * 1024 * 1024;
    // Declared too large by a client that waits to be let go on: refused from the headers,
    // before the body is sent.
    let head = format!(
        "POST /v1/shipments/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {two_mib}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    let base = api.base.clone();
    let status = tokio::task::spawn_blocking(move || raw_exchange(&base, head, &[]))
        .await
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Declared too large and sent at once: the client still reads the refusal, not a reset.
    let head = format!(
        "POST /v1/shipments/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {two_mib}\r\nConnection: close\r\n\r\n"
    );
    let base = api.base.clone();
    let whole = vec![b' '; two_mib];
    let status = tokio::task::spawn_blocking(move || raw_exchange(&base, head, &whole))
        .await
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Sent in chunks with no length: cut at the limit.
    let mut chunked = Vec::new();
    let piece = vec![b' '; 64 * 1024];
    for _ in 0..32 {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(&piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /v1/shipments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let base = api.base.clone();
    let status = tokio::task::spawn_blocking(move || raw_exchange(&base, head, &chunked))
        .await
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // And through an ordinary client, a 2 MiB JSON document.
    let big = json!({"shipments": [{"order_id": "1", "carrier": "x".repeat(two_mib)}]});
    let refused = api
        .raw(
            "/v1/shipments/batch",
            "application/json",
            serde_json::to_vec(&big).unwrap(),
        )
        .await;
    problem(&refused, 413);
    assert!(daemon.is_running());
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// The largest batch, each shipment with its contacts, fits in the largest body with room to
/// spare: padded to exactly a mebibyte it is taken whole; a byte more is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_in_a_body_of_exactly_a_mebibyte_is_taken() {
    let (app, mut daemon, api) = api_app().await;
    let items: Vec<Value> = (0..shipwatch::api::body::MAX_BATCH as u64)
        .map(|i| {
            json!({
                "order_id": tid(100_000 + i),
                "tier": "low",
                "phone": format!("139{:08}", i),
                "email": format!("buyer{i}@example.com"),
            })
        })
        .collect();
    let mut body = serde_json::to_vec(&json!({ "shipments": items })).unwrap();
    // The limit docs/api.md gives.
    const MEBIBYTE: usize = 1024 * 1024;
    assert!(body.len() < MEBIBYTE / 2, "{}", body.len());
    // JSON allows whitespace after the document.
    body.resize(MEBIBYTE + 1, b' ');
    let refused = api
        .raw("/v1/shipments/batch", "application/json", body.clone())
        .await;
    problem(&refused, 413);
    body.pop();
    let taken = api
        .raw("/v1/shipments/batch", "application/json", body)
        .await;
    assert_eq!(taken.status, 201, "{taken:?}");
    assert_eq!(taken.body["created"], shipwatch::api::body::MAX_BATCH);
    assert_eq!(app.shipments().len(), shipwatch::api::body::MAX_BATCH);
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_masked_unless_the_token_may_read_them() {
    let (_app, mut daemon, api) = api_app().await;
    let order = tid(3);
    let body = json!({
        "order_id": order,
        "phone": "13812345678",
        "email": "zhang@shop.example",
        "openid": "oAbCdEfGhIjKlMnOpQrStUvWxYz1"
    });
    let created = api.post("/v1/shipments", &body).await;
    assert_eq!(created.status, 201, "{created:?}");
    let path = format!("/v1/shipments/{order}");
    for shipment in [
        created.body.clone(),
        api.get(&path).await.body["shipment"].clone(),
        api.get("/v1/shipments").await.body["shipments"][0].clone(),
    ] {
        assert_eq!(shipment["phone"], "138****5678");
        assert_eq!(shipment["email"], "z***@shop.example");
        assert_eq!(shipment["openid"], "oAb****xYz1");
    }
    let reader = api.with_token(Some(READER));
    for shipment in [
        reader.post("/v1/shipments", &body).await.body,
        reader.get(&path).await.body["shipment"].clone(),
        reader.get("/v1/shipments").await.body["shipments"][0].clone(),
    ] {
        assert_eq!(shipment["phone"], "13812345678");
        assert_eq!(shipment["email"], "zhang@shop.example");
        assert_eq!(shipment["openid"], "oAbCdEfGhIjKlMnOpQrStUvWxYz1");
    }
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_api_is_off() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .listen()
        .start()
        .await;
    let mut daemon = app.spawn_daemon();
    let api = Client::new(app.http.clone().unwrap(), TOKEN);
    api.wait_up().await;
    for path in ["/v1/shipments", "/v1/openapi.json", "/v1/shipments/1"] {
        assert_eq!(api.get(path).await.status, 404, "{path}");
    }
    assert_eq!(
        api.post("/v1/shipments", &json!({"order_id": tid(1)}))
            .await
            .status,
        404
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_token_is_refused_by_check_config_in_one_line() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .api_tokens(&format!("{TOKEN}\nshort-one contacts\n"))
        .start()
        .await;
    let out = app.cli(&["check-config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("line 2: the token is shorter than 32 characters"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("short-one") && !stderr.contains(TOKEN),
        "{stderr}"
    );
}

/// The whole loop: shipments added over HTTP are polled from the fake TOP gateway through every
/// status, each change delivered once as a signed webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_added_by_the_api_travels_to_its_doorstep() {
    let (app, mut daemon, api) = api_app().await;
    for i in 0..3 {
        app.top.journey(tid(i).parse().unwrap());
    }
    let created = api
        .post(
            "/v1/shipments",
            &json!({"order_id": tid(0), "tier": "high"}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let batch = api
        .post(
            "/v1/shipments/batch",
            &json!({"shipments": [{"order_id": tid(1)}, {"order_id": tid(2), "tier": "low"}]}),
        )
        .await;
    assert_eq!(batch.status, 201, "{batch:?}");
    app.wait_until(
        "all 3 parcels are delivered and announced",
        Duration::from_secs(60),
        || {
            app.receiver
                .deliveries()
                .iter()
                .filter(|d| d.answered == 200)
                .count()
                >= 15
                && app.shipments().iter().all(|s| s["status"] == "delivered")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut per_order: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for d in app.receiver.deliveries() {
        assert!(d.verified, "{d:?}");
        if d.answered == 200 {
            per_order
                .entry(d.body["data"]["order_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(d.body["data"]["status"].as_str().unwrap().to_owned());
        }
    }
    let chain = [
        "info_received",
        "picked_up",
        "in_transit",
        "out_for_delivery",
        "delivered",
    ];
    assert_eq!(per_order.len(), 3, "{per_order:?}");
    for (order, seen) in &per_order {
        assert_eq!(seen, &chain, "order {order}: each change once, in order");
    }
    let shown = api.get(&format!("/v1/shipments/{}", tid(0))).await;
    assert_eq!(shown.body["shipment"]["status"], "delivered");
    assert_eq!(
        shown.body["events"].as_array().unwrap().len(),
        5,
        "{shown:?}"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// `value` has every field `schema` requires and, where the schema allows no others, no field
/// it does not list; recursively, through `$ref`s, objects and arrays.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object())
    {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap();
            assert!(
                object.contains_key(name),
                "{at}: documented field {name} missing: {value}"
            );
        }
        if schema["additionalProperties"] == false {
            for key in object.keys() {
                assert!(
                    properties.contains_key(key),
                    "{at}: undocumented field {key}: {value}"
                );
            }
        }
        for (key, field) in object {
            if let Some(field_schema) = properties.get(key) {
                conforms(doc, field_schema, field, &format!("{at}.{key}"));
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            conforms(doc, items, item, &format!("{at}[{i}]"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_openapi_document_answers_as_documented() {
    let (_app, mut daemon, api) = api_app().await;
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    // Creates first, removals last, so that the examples build on each other.
    let rank = |method: &str| {
        ["post", "get", "patch", "delete"]
            .iter()
            .position(|m| *m == method)
    };
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method != "parameters" {
                operations.push((
                    path.clone(),
                    method.clone(),
                    operation.clone(),
                    item.clone(),
                ));
            }
        }
    }
    operations.sort_by_key(|(_, method, _, _)| rank(method));
    assert_eq!(operations.len(), 7, "every route of the API is documented");
    for (template, method, operation, item) in &operations {
        let what = format!("{} {template}", method.to_uppercase());
        let mut path = template.clone();
        let mut missing = template.clone();
        for parameter in item["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap();
            path = path.replace(
                &format!("{{{name}}}"),
                parameter["example"].as_str().unwrap(),
            );
            missing = missing.replace(&format!("{{{name}}}"), "7199999999999999999");
        }
        let body = operation["requestBody"]["content"]["application/json"]["example"].clone();
        let body = (!body.is_null()).then_some(body);
        let method_upper = method.to_uppercase();
        let answer = api.send(&method_upper, &path, body.as_ref()).await;
        let responses = &operation["responses"];
        let documented = &responses[answer.status.to_string()];
        assert!(
            documented.is_object(),
            "{what}: {} is not documented: {answer:?}",
            answer.status
        );
        assert!((200..300).contains(&answer.status), "{what}: {answer:?}");
        if let Some(schema) = documented["content"]["application/json"].get("schema") {
            assert_eq!(answer.content_type, "application/json", "{what}");
            conforms(&doc, schema, &answer.body, &what);
        } else {
            assert_eq!(
                answer.body,
                Value::Null,
                "{what}: an answer with no documented body"
            );
        }
        // Each refusal it documents, provoked.
        if responses.get("401").is_some() {
            let refused = api
                .with_token(None)
                .send(&method_upper, &path, body.as_ref())
                .await;
            problem(&refused, 401);
            // The bearer scheme with no token: a malformed request, documented as a 400.
            assert!(responses.get("400").is_some(), "{what}: 400 undocumented");
            let refused = api
                .with_token(Some(""))
                .send(&method_upper, &path, body.as_ref())
                .await;
            problem(&refused, 400);
        }
        if responses.get("404").is_some() {
            let refused = api.send(&method_upper, &missing, body.as_ref()).await;
            problem(&refused, 404);
        }
        if responses.get("422").is_some() {
            let refused = if body.is_some() {
                api.send(&method_upper, &path, Some(&json!({"colour": 1})))
                    .await
            } else {
                api.get(&format!("{path}?colour=1")).await
            };
            let named = problem(&refused, 422);
            assert!(
                named.contains(&(None, "colour".to_owned())),
                "{what}: {named:?}"
            );
        }
        if responses.get("415").is_some() {
            let request = api
                .http
                .request(
                    reqwest::Method::from_bytes(method_upper.as_bytes()).unwrap(),
                    format!("{}{path}", api.base),
                )
                .bearer_auth(TOKEN)
                .header("content-type", "text/plain")
                .body("{}");
            problem(&answer_of(request).await, 415);
            let request = api
                .http
                .request(
                    reqwest::Method::from_bytes(method_upper.as_bytes()).unwrap(),
                    format!("{}{path}", api.base),
                )
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{");
            problem(&answer_of(request).await, 400);
        }
    }
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

async fn answer_of(request: reqwest::RequestBuilder) -> Answer {
    answer(request.send().await.expect("the API answers")).await
}
