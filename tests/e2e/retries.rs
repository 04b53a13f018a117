//! Webhook delivery when the shop's endpoint misbehaves, as the endpoint and the operator see it:
//! how many requests arrive, with which id, when, and what `shipwatch outbox` says afterwards.
//!
//! Each test tracks one order whose trace goes straight from nothing to signed, so exactly one
//! status change (pending → delivered) and one notification are in play.

use std::time::Duration;

use serde_json::Value;
use shipwatch::notify::receiver::{Behaviour, Delivery};

use crate::support::app::{Daemon, Engine, TestApp};
use crate::support::on_both_engines;

on_both_engines!(
    a_flaky_endpoint_gets_the_notification_on_the_third_attempt,
    a_broken_endpoint_gets_three_attempts_then_the_row_is_dead_until_retried,
    a_400_is_not_retried,
    a_404_is_not_retried,
    retry_after_from_the_endpoint_is_honoured,
    retrying_an_unknown_notification_fails_with_one_line,
);
use crate::support::config::{Channel, Provider};
use crate::support::fake_top;

const TID: u64 = 7_100_000_000_000_000_001;

/// Long enough for a busy 2-core machine; the happy path takes a second or two.
const LIMIT: Duration = Duration::from_secs(20);

/// An app whose receiver behaves as given, tracking [`TID`], with the daemon running.
async fn one_change(engine: Engine, behaviour: Behaviour) -> (TestApp, Daemon) {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .receiver(behaviour)
        .engine(engine)
        .start()
        .await;
    app.top.script(
        TID,
        vec![fake_top::trace_response(
            TID,
            "对方已签收",
            &[(
                "2026-11-20 08:00:05",
                "【上海市】快件已签收，签收人：本人",
                "SIGNED",
            )],
        )],
    );
    app.cli_ok(&["add", &TID.to_string(), "--tier", "high"]);
    let daemon = app.spawn_daemon();
    (app, daemon)
}

/// The one outbox row, whatever its state; panics if there is not exactly one.
fn only_row(app: &TestApp) -> Value {
    let rows = app.outbox(None);
    assert_eq!(
        rows.len(),
        1,
        "one status change, one notification: {rows:?}"
    );
    rows.into_iter().next().unwrap()
}

fn answers(deliveries: &[Delivery]) -> Vec<u16> {
    deliveries.iter().map(|d| d.answered).collect()
}

fn assert_one_id(deliveries: &[Delivery], row: &Value) {
    for d in deliveries {
        assert!(d.verified, "every attempt is signed: {d:?}");
        assert_eq!(
            d.webhook_id, row["webhook_id"],
            "every attempt carries the notification's stable id"
        );
        assert_eq!(d.body["id"], row["webhook_id"]);
        assert_eq!(d.body["data"]["status"], "delivered");
    }
}

async fn a_flaky_endpoint_gets_the_notification_on_the_third_attempt(engine: Engine) {
    let (app, mut daemon) = one_change(
        engine,
        Behaviour::FailFirst {
            failures: 2,
            status: 500,
        },
    )
    .await;

    app.wait_until("the notification is sent", LIMIT, || {
        app.outbox(Some("sent")).len() == 1
    })
    .await;

    let deliveries = app.receiver.deliveries();
    assert_eq!(answers(&deliveries), [500, 500, 200]);
    let row = only_row(&app);
    assert_one_id(&deliveries, &row);
    assert_eq!(row["state"], "sent");
    assert_eq!(row["attempts"], 3);
    assert!(row["sent_at"].is_string(), "{row}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

async fn a_broken_endpoint_gets_three_attempts_then_the_row_is_dead_until_retried(engine: Engine) {
    let (app, mut daemon) = one_change(engine, Behaviour::Always(500)).await;

    app.wait_until("the notification is dead", LIMIT, || {
        app.outbox(Some("dead")).len() == 1
    })
    .await;
    // backoff_max is 1s: a fourth attempt, if the sender made one, would arrive well within this.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let deliveries = app.receiver.deliveries();
    assert_eq!(
        answers(&deliveries),
        [500, 500, 500],
        "three attempts in all"
    );
    let dead = app.outbox(Some("dead"));
    assert_eq!(dead.len(), 1);
    let row = &dead[0];
    assert_one_id(&deliveries, row);
    assert_eq!(row["attempts"], 3);
    let error = row["last_error"].as_str().expect("a dead row says why");
    assert!(error.contains("500"), "{error}");
    assert!(app.outbox(Some("pending")).is_empty());

    // The shop fixed its endpoint; the operator requeues what died.
    app.receiver.set_behaviour(Behaviour::Accept);
    let out = app.cli_ok(&["retry", "--dead"]);
    assert!(out.contains('1'), "says how many were requeued: {out}");
    app.wait_until("the requeued notification is sent", LIMIT, || {
        app.outbox(Some("sent")).len() == 1
    })
    .await;

    let deliveries = app.receiver.deliveries();
    assert_eq!(answers(&deliveries), [500, 500, 500, 200]);
    let row = only_row(&app);
    assert_one_id(&deliveries, &row);
    assert_eq!(row["state"], "sent");
    assert_eq!(
        row["attempts"], 1,
        "a requeued row starts a fresh set of attempts"
    );
    assert_eq!(
        row["last_error"],
        serde_json::Value::Null,
        "a sent row shows no error, not the one that made it dead: {row}"
    );
    assert!(app.outbox(Some("dead")).is_empty());
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// A 4xx other than 408/429 cannot get better by retrying: one attempt, then dead.
async fn refused_for_good(engine: Engine, status: u16) {
    let (app, mut daemon) = one_change(engine, Behaviour::Always(status)).await;

    app.wait_until(&format!("the {status} makes the row dead"), LIMIT, || {
        app.outbox(Some("dead")).len() == 1
    })
    .await;
    // A retry would have come after at most backoff_max (1s).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let deliveries = app.receiver.deliveries();
    assert_eq!(answers(&deliveries), [status], "exactly one attempt");
    let row = only_row(&app);
    assert_one_id(&deliveries, &row);
    assert_eq!(row["state"], "dead");
    assert_eq!(row["attempts"], 1);
    let error = row["last_error"].as_str().expect("a dead row says why");
    assert!(error.contains(&status.to_string()), "{error}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

async fn a_400_is_not_retried(engine: Engine) {
    refused_for_good(engine, 400).await;
}

/// (A 410 Gone is different: it stops the whole channel, see `webhook_channel`.)
async fn a_404_is_not_retried(engine: Engine) {
    refused_for_good(engine, 404).await;
}

async fn retry_after_from_the_endpoint_is_honoured(engine: Engine) {
    let (app, mut daemon) = one_change(
        engine,
        Behaviour::RetryAfter {
            failures: 1,
            seconds: 2,
        },
    )
    .await;

    app.wait_until("the notification is sent", LIMIT, || {
        app.outbox(Some("sent")).len() == 1
    })
    .await;

    let deliveries = app.receiver.deliveries();
    assert_eq!(answers(&deliveries), [503, 200]);
    let row = only_row(&app);
    assert_one_id(&deliveries, &row);
    assert_eq!(row["attempts"], 2);
    // The configured backoff is 200ms (at most 1s): only Retry-After explains a 2s wait. A few
    // milliseconds of slack cover the millisecond rounding of the stored retry time.
    let gap = deliveries[1].at - deliveries[0].at;
    assert!(
        gap >= Duration::from_millis(1_950),
        "second attempt came {gap:?} after the first, before the 2s Retry-After"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

async fn retrying_an_unknown_notification_fails_with_one_line(engine: Engine) {
    let app = TestApp::start_on(engine).await;
    app.create_database();
    let out = app.cli(&["retry", "99999"]);
    assert!(!out.status.success(), "an unknown id is an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(stderr.contains("99999"), "names the id: {stderr:?}");
}
