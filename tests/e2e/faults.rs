//! Fault injection against the real binary: an upstream gateway and delivery endpoints that fail
//! in every way the network allows. For each fault: the daemon keeps running and never panics,
//! the operator sees the right class of error (`show`, `outbox`, `stats`, the log), the retry
//! count is what docs/webhooks.md promises, memory stays bounded, and the other shipments and
//! channels keep flowing meanwhile.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::{Daemon, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::fake_top;
use crate::support::hostile::{HostileGateway, Misbehaviour, SlowWebhook};
use crate::support::smtp_sink::{Reply, SmtpSink};

/// The most memory the daemon may ever have held (`VmHWM`), whatever it was sent. A debug build
/// runs in about 30 MiB and peaks near 55 MiB here: reading an answer up to its 8 MiB limit costs
/// more than that while the buffer grows (the old and the new allocation coexist). A 50 MB
/// answer read whole would need well over 100 MiB.
const MEMORY_BOUND_KIB: u64 = 80 * 1024;

const LIMIT: Duration = Duration::from_secs(60);

/// The peak resident memory of a running daemon, from `/proc/PID/status`.
fn peak_memory_kib(daemon: &Daemon) -> u64 {
    daemon.peak_memory_kib()
}

/// Still running, never panicked, and within the memory bound.
fn assert_healthy(daemon: &mut Daemon) {
    assert!(daemon.is_running(), "the daemon died:\n{}", daemon.log());
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    let peak = peak_memory_kib(daemon);
    println!("daemon peak memory (VmHWM): {peak} KiB");
    assert!(
        peak < MEMORY_BOUND_KIB,
        "the daemon held {peak} KiB at its peak, over {MEMORY_BOUND_KIB} KiB"
    );
}

fn sent_statuses(app: &TestApp, order_id: &str, channel: &str) -> Vec<String> {
    app.shipment(order_id)["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == channel && n["state"] == "sent")
        .map(|n| n["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Each order on the hostile gateway gets one misbehaviour, for every poll; one order on the
/// healthy fake TOP gateway goes through its whole journey meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_fault_is_a_transient_error_retried_at_the_tier_interval() {
    let hostile = HostileGateway::start().await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .provider(Provider::top().named("flaky").endpoint(&hostile.url))
        .channel(Channel::webhook())
        .tiers("1s", "1s", "1s")
        .start()
        .await;
    // Misbehaviour, and what `show` says about it afterwards.
    let faults: [(Misbehaviour, &str); 10] = [
        (Misbehaviour::Stall, "no answer within 5s"),
        (Misbehaviour::Reset, "TOP request failed"),
        (Misbehaviour::Status(500), "HTTP 500 from TOP"),
        (Misbehaviour::Status(502), "HTTP 502 from TOP"),
        (Misbehaviour::Status(503), "HTTP 503 from TOP"),
        (Misbehaviour::Html, "unreadable answer from TOP"),
        (Misbehaviour::TruncatedJson, "unreadable answer from TOP"),
        (Misbehaviour::MalformedJson, "unreadable answer from TOP"),
        (
            Misbehaviour::WrongShape,
            "TOP answered neither a trace nor an error",
        ),
        (
            Misbehaviour::Endless { mib: 50 },
            "response body over the 8388608-byte limit",
        ),
    ];
    let tid = |k: usize| 8_300_000_000_000_000_000u64 + k as u64;
    for (k, (mode, _)) in faults.iter().enumerate() {
        hostile.set(tid(k), *mode);
        app.cli_ok(&[
            "add",
            &tid(k).to_string(),
            "--provider",
            "flaky",
            "--tier",
            "high",
        ]);
    }
    let healthy = 8_300_000_000_000_000_999u64;
    app.top.journey(healthy);
    app.cli_ok(&[
        "add",
        &healthy.to_string(),
        "--provider",
        "taobao",
        "--tier",
        "high",
    ]);

    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the healthy parcel is delivered and every faulty order polled 3 times",
        LIMIT,
        || {
            (0..faults.len()).all(|k| {
                // A stalled poll takes the 5s poll timeout before it can be retried.
                let want = if faults[k].0 == Misbehaviour::Stall {
                    2
                } else {
                    3
                };
                hostile.requests_for(tid(k)).len() >= want
            }) && sent_statuses(&app, &healthy.to_string(), "webhook").len() == 5
        },
    )
    .await;
    assert_healthy(&mut daemon);

    let log = daemon.log();
    for (k, (mode, error)) in faults.iter().enumerate() {
        let order_id = tid(k).to_string();
        let shown = app.shipment(&order_id);
        let shipment = &shown["shipment"];
        assert_eq!(shipment["status"], "pending", "{mode:?}: {shipment}");
        assert_eq!(
            shipment["active"], true,
            "{mode:?} is transient: the order stays polled"
        );
        let text = shipment["error"].as_str().unwrap_or_default();
        assert!(text.contains(error), "{mode:?}: show says {text:?}");
        assert!(
            shown["notifications"].as_array().unwrap().is_empty(),
            "{mode:?}: a fault is no status change"
        );
        assert!(
            log.lines()
                .any(|line| line.contains("poll failed; will retry")
                    && line.contains(&order_id)
                    && line.contains(error)),
            "{mode:?}: no log line for {order_id}"
        );
        // Retried at the next turn, never sooner: the tier interval (1s, no jitter) separates
        // polls.
        let requests = hostile.requests_for(tid(k));
        for pair in requests.windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap >= Duration::from_millis(950),
                "{mode:?}: polled again after {gap:?}"
            );
        }
    }
    // The daemon stopped reading each endless answer at its limit instead of taking in 50 MB.
    let endless = hostile.requests_for(tid(faults.len() - 1)).len();
    let streamed = hostile.streamed_bytes();
    assert!(
        streamed < endless * (16 << 20),
        "{streamed} bytes streamed over {endless} requests"
    );
    // Transient faults pause no provider: `stats` lists none as banned or stopped.
    let stats: Value = serde_json::from_str(&app.cli_ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["providers"], serde_json::json!([]), "{stats}");

    // The healthy order went its whole way meanwhile.
    assert_eq!(
        sent_statuses(&app, &healthy.to_string(), "webhook"),
        [
            "info_received",
            "picked_up",
            "in_transit",
            "out_for_delivery",
            "delivered"
        ]
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// One order whose trace goes straight to signed: one change, one webhook and one email.
pub(crate) async fn signed_in_one_step(app: &TestApp, tid: u64) {
    signed_in_one_step_reaching(app, tid, &["--email", "buyer@shop.example"]);
}

/// One high-tier order whose trace goes straight to signed, its buyer reached as `contact` says
/// (`add`'s `--email`, `--phone`…).
pub(crate) fn signed_in_one_step_reaching(app: &TestApp, tid: u64, contact: &[&str]) {
    app.top.script(
        tid,
        vec![fake_top::trace_response(
            tid,
            "对方已签收",
            &[(
                "2026-11-20 08:00:05",
                "【上海市】快件已签收，签收人：本人",
                "SIGNED",
            )],
        )],
    );
    let tid = tid.to_string();
    let mut args = vec!["add", &tid, "--tier", "high"];
    args.extend_from_slice(contact);
    app.cli_ok(&args);
}

fn row<'a>(rows: &'a [Value], channel: &str) -> &'a Value {
    rows.iter()
        .find(|n| n["channel"] == channel)
        .unwrap_or_else(|| panic!("no {channel} row in {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_that_drops_mid_data_costs_three_attempts_then_a_dead_letter() {
    let sink = SmtpSink::start().await;
    sink.set_script(vec![Reply::DropInData; 3]);
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .channel(Channel::email(&sink))
        .start()
        .await;
    let tid = 8_310_000_000_000_000_001u64;
    signed_in_one_step(&app, tid).await;

    let mut daemon = app.spawn_daemon();
    app.wait_until("the email is dead", LIMIT, || {
        app.outbox(Some("dead")).len() == 1
    })
    .await;
    // backoff_max is 1s: a fourth attempt, if the sender made one, would come within this.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_healthy(&mut daemon);

    let rows = app.outbox(None);
    let email = row(&rows, "email");
    assert_eq!(email["state"], "dead", "{email}");
    assert_eq!(email["attempts"], 3, "{email}");
    assert_eq!(sink.connections(), 3, "one connection per attempt, no more");
    assert!(
        sink.attempts().is_empty(),
        "no message was ever complete at the server"
    );
    let error = email["last_error"].as_str().unwrap();
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    // The webhook of the same change went out meanwhile.
    assert_eq!(row(&rows, "webhook")["state"], "sent");
    assert_eq!(app.receiver.deliveries().len(), 1);
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("delivery failed for good") && l.contains("channel=email")),
        "{log}"
    );
    let stats: Value = serde_json::from_str(&app.cli_ok(&["stats", "--json"])).unwrap();
    assert!(
        stats["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["channel"] == "email" && c["state"] == "dead" && c["count"] == 1),
        "{stats}"
    );

    // The server is back (its script is used up): the operator requeues, the mail goes out once.
    app.cli_ok(&["retry", "--dead"]);
    app.wait_until("the requeued email is sent", LIMIT, || {
        app.outbox(Some("sent")).len() == 2
    })
    .await;
    assert_eq!(sink.messages().len(), 1);
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_endpoint_slower_than_the_timeout_costs_three_attempts_then_a_dead_letter() {
    // The delivery timeout is 2s; the endpoint answers after 3s.
    let slow = SlowWebhook::start(Duration::from_secs(3)).await;
    let sink = SmtpSink::start().await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook_to(&slow.url))
        .channel(Channel::email(&sink))
        .start()
        .await;
    let tid = 8_320_000_000_000_000_001u64;
    signed_in_one_step(&app, tid).await;

    let mut daemon = app.spawn_daemon();
    app.wait_until("the webhook is dead", LIMIT, || {
        app.outbox(Some("dead")).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_healthy(&mut daemon);

    let rows = app.outbox(None);
    let webhook = row(&rows, "webhook");
    assert_eq!(webhook["state"], "dead", "{webhook}");
    assert_eq!(webhook["attempts"], 3, "{webhook}");
    let error = webhook["last_error"].as_str().unwrap();
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert!(error.contains("timed out"), "{error}");
    let requests = slow.requests();
    assert_eq!(requests.len(), 3, "three attempts in all: {requests:?}");
    assert!(
        requests.iter().all(|(id, _)| *id == webhook["webhook_id"]),
        "every attempt carries the notification's id"
    );
    // The email of the same change went out meanwhile.
    assert_eq!(row(&rows, "email")["state"], "sent");
    assert_eq!(sink.messages().len(), 1);
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
