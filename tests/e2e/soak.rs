//! Crash soak: many shipments move through the five statuses of the fake TOP gateway while the
//! real daemon is killed with SIGKILL at random moments and started again. Afterwards every status
//! change the daemon committed must have exactly one outbox row per channel, each of them either
//! delivered (seen by the webhook receiver, the SMTP sink or the fake Aliyun gateway) or dead,
//! none missing; a delivery may arrive twice only because a kill cut its bookkeeping short (so at
//! most the deliveries in flight at each kill, and never more often than it was attempted); and
//! the database must pass `PRAGMA integrity_check`.
//!
//! The CI size is the default. The full size, as docs/reliability.md reports it:
//!
//! ```sh
//! SHIPWATCH_SOAK_SHIPMENTS=2000 SHIPWATCH_SOAK_KILLS=20 cargo test --release --locked --test e2e soak -- --nocapture
//! ```
//!
//! `SHIPWATCH_SOAK_SEED` replays the kill moments of an earlier run (each run prints its seed);
//! `SHIPWATCH_SOAK_CONCURRENCY` sets `[delivery] concurrency` (16, the default, unless given; SMS
//! takes at most 4 at once, its own default), to see what fewer deliveries at once do to the
//! repeats; `SHIPWATCH_SOAK_ENGINE=postgres` runs it
//! on a PostgreSQL database of the tests' cluster, the daemon keeping its receipts in the test's
//! folder (`[database] receipts`), instead of SQLite.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use shipwatch::domain::Status;
use shipwatch::notify::template::status_text;

use crate::support::app::{Daemon, Engine, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::fake_aliyun_sms::FakeAliyunSms;
use crate::support::fake_top::journey_bodies;
use crate::support::smtp_sink::SmtpSink;

/// The statuses that trigger an SMS by default; webhook and email get every change.
const SMS_TRIGGERS: [Status; 4] = [
    Status::PickedUp,
    Status::OutForDelivery,
    Status::Delivered,
    Status::Exception,
];
const CHANNELS: [&str; 3] = ["webhook", "email", "sms"];
/// The default `[delivery] concurrency`, which the soak runs with unless told otherwise.
const DELIVERY_CONCURRENCY: u64 = 16;
/// The SMS channel's default: at most this many at once, fewer if `[delivery] concurrency` is.
const SMS_CONCURRENCY: usize = 4;

struct Size {
    shipments: u64,
    kills: usize,
    seed: u64,
    /// `[delivery] concurrency`.
    concurrency: usize,
    /// The SMS channel's, from it.
    sms_concurrency: usize,
    engine: Engine,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}")),
        Err(_) => default,
    }
}

fn size() -> Size {
    let random_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let concurrency =
        env_number("SHIPWATCH_SOAK_CONCURRENCY", DELIVERY_CONCURRENCY).max(1) as usize;
    Size {
        shipments: env_number("SHIPWATCH_SOAK_SHIPMENTS", 200).max(1),
        kills: env_number("SHIPWATCH_SOAK_KILLS", 5) as usize,
        seed: env_number("SHIPWATCH_SOAK_SEED", random_seed),
        concurrency,
        sms_concurrency: concurrency.min(SMS_CONCURRENCY),
        engine: match std::env::var("SHIPWATCH_SOAK_ENGINE").as_deref() {
            Err(_) | Ok("sqlite") => Engine::Sqlite,
            Ok("postgres") => Engine::Postgres,
            Ok(other) => panic!("SHIPWATCH_SOAK_ENGINE is sqlite or postgres, got {other:?}"),
        },
    }
}

fn tid(i: u64) -> u64 {
    6_200_000_000_000_000_000 + i
}

/// Each shipment has a phone and an address of its own, so that every SMS and every mail can be
/// traced back to its shipment.
fn phone(i: u64) -> String {
    format!("139{i:08}")
}

fn email(i: u64) -> String {
    format!("buyer{i}@soak.example")
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.sql_count(sql).await.expect("count query")
}

/// Deliveries the three fakes have accepted so far (first attempts and repeats alike), counted
/// in place: asked ten times a second, copying tens of thousands of records each time would take
/// the CPU the daemon is measured on.
fn delivered(app: &TestApp, sink: &SmtpSink, aliyun: &FakeAliyunSms) -> usize {
    app.receiver.answered(200) + sink.accepted() + aliyun.accepted()
}

fn assert_no_panic(daemon: &Daemon) {
    let log = daemon.log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

/// A shipment's count of status changes, read as a JSON object on either engine.
#[derive(Deserialize)]
struct Changes {
    order_id: String,
    transitions: i64,
}

/// One outbox row as the soak checks it, read as a JSON object on either engine.
#[derive(Deserialize)]
struct OutboxRow {
    kind: String,
    transition: i64,
    public_id: String,
    order_id: String,
    channel: String,
    status: String,
    state: String,
    attempts: i64,
    /// Attempts cut short by a kill with no outcome, given back rather than counted.
    cut_short: i64,
    last_error: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_kill9_at_random_moments_loses_no_change_and_repeats_only_deliveries_in_flight() {
    let size = size();
    // Printed first so that a failing run can be replayed.
    println!(
        "soak: seed {} ({} shipments, {} kills, {} deliveries at once, {} for SMS, on {:?}); \
         replay with SHIPWATCH_SOAK_SEED={}",
        size.seed,
        size.shipments,
        size.kills,
        size.concurrency,
        size.sms_concurrency,
        size.engine,
        size.seed
    );
    let mut rng = StdRng::seed_from_u64(size.seed);
    let sink = SmtpSink::start().await;
    let aliyun = FakeAliyunSms::start("LTAI-soak", "aliyun-soak-secret", "小店").await;
    let app = TestApp::builder()
        .engine(size.engine)
        .receipts_on_postgres()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .channel(Channel::email(&sink).from("小店 <noreply@shop.example>"))
        .channel(Channel::aliyun_sms(&aliyun))
        .tiers("1s", "1s", "1s")
        .delivery_concurrency(size.concurrency)
        .start()
        .await;

    let mut csv = String::from("order_id,tier,phone,email\n");
    for i in 0..size.shipments {
        app.top.journey(tid(i));
        let tier = ["high", "normal", "low"][i as usize % 3];
        csv.push_str(&format!("{},{tier},{},{}\n", tid(i), phone(i), email(i)));
    }
    let file = app.dir.path().join("soak.csv");
    std::fs::write(&file, csv).unwrap();
    app.cli_ok(&["import", file.to_str().unwrap()]);

    // Kill moments: when the fakes have seen a random share of the deliveries a run without kills
    // would make, plus a random few milliseconds, so that kills land mid-poll, mid-delivery and
    // mid-commit alike.
    let expected = (size.shipments * (5 + 5 + 3)) as usize;
    let mut targets: Vec<usize> = (0..size.kills)
        .map(|_| rng.random_range(expected / 20..=expected * 19 / 20))
        .collect();
    targets.sort_unstable();
    // Generous for a busy 2-core machine: a debug daemon needs far less.
    let limit = Duration::from_secs(60 + size.shipments * 150 / 1000);

    let steps = journey_bodies(tid(0)).len();
    let started = Instant::now();
    let mut daemon = app.spawn_daemon();
    for (k, target) in targets.iter().enumerate() {
        // A kill drops the polls answered but not yet committed, and the fake has moved those
        // journeys on: their next poll skips a status, and the deliveries it would have made.
        // On a busy machine the kills before may have skipped enough that a late target is out
        // of reach; once every journey has served its last step and no delivery has come for
        // 3 s, the work is done and this kill lands at its end instead.
        let mut seen = (0, Instant::now());
        app.wait_until(
            &format!("{target} deliveries before kill {}", k + 1),
            limit,
            || {
                let now = delivered(&app, &sink, &aliyun);
                if now != seen.0 {
                    seen = (now, Instant::now());
                }
                now >= *target
                    || (seen.1.elapsed() > Duration::from_secs(3)
                        && (0..size.shipments).all(|i| app.top.polls_of(tid(i)) >= steps))
            },
        )
        .await;
        if seen.0 < *target {
            println!(
                "soak: kill {} at the end of the work, {} deliveries, short of its target {target}",
                k + 1,
                seen.0
            );
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..250))).await;
        daemon.kill9();
        assert_no_panic(&daemon);
        if rng.random_bool(0.5) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
        }
        daemon = app.spawn_daemon();
    }
    // Kills at the end of the work leave the last daemon only just spawned, and the settle below
    // may pass at once: its SIGTERM must find the handlers in place, as systemd's stop would
    // after start-up.
    app.wait_until("the last daemon started", limit, || {
        daemon.log().contains("shipwatch started")
    })
    .await;
    let deadline = Instant::now() + limit;
    loop {
        let undelivered = count(
            &app,
            "SELECT count(*) FROM shipments WHERE status != 'delivered'",
        )
        .await;
        let pending = count(
            &app,
            "SELECT count(*) FROM notifications WHERE state = 'pending'",
        )
        .await;
        if undelivered == 0 && pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?}: {undelivered} shipments not delivered, {pending} notifications \
             pending\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let duration = started.elapsed();
    assert_no_panic(&daemon);
    let status = daemon.terminate();
    assert!(
        status.success(),
        "the daemon ended {status}\n{}",
        daemon.log()
    );

    // What the daemon committed.
    let integrity = match size.engine {
        Engine::Sqlite => {
            let integrity = app
                .sql_column::<String>("PRAGMA integrity_check")
                .await
                .unwrap()
                .join("; ");
            assert_eq!(integrity, "ok");
            integrity
        }
        // PostgreSQL checks its pages itself; what is left to check is the rows, below.
        Engine::Postgres => "not checked on PostgreSQL".to_owned(),
    };
    // The rows as JSON objects, which both engines build (under two names).
    let object = match size.engine {
        Engine::Sqlite => "json_object",
        Engine::Postgres => "json_build_object",
    };
    let transitions: BTreeMap<String, i64> = app
        .sql_column::<String>(&format!(
            "SELECT CAST({object}('order_id', order_id, 'transitions', transitions) AS TEXT) \
             FROM shipments"
        ))
        .await
        .unwrap()
        .iter()
        .map(|json| {
            let shipment: Changes = serde_json::from_str(json).unwrap();
            (shipment.order_id, shipment.transitions)
        })
        .collect();
    assert_eq!(transitions.len() as u64, size.shipments);
    let rows: Vec<(i64, OutboxRow)> = app
        .sql_column::<String>(&format!(
            "SELECT CAST({object}('public_id', n.public_id, 'order_id', s.order_id, \
                 'kind', n.kind, 'transition', n.transition, 'channel', n.channel, \
                 'status', n.status, 'state', n.state, 'attempts', n.attempts, \
                 'cut_short', n.cut_short, 'last_error', n.last_error) AS TEXT) \
             FROM notifications n JOIN shipments s ON s.id = n.shipment_id \
             ORDER BY s.order_id, n.transition, n.channel"
        ))
        .await
        .unwrap()
        .iter()
        .map(|json| {
            let row: OutboxRow = serde_json::from_str(json).unwrap();
            assert_eq!(row.kind, "status_changed");
            (row.transition, row)
        })
        .collect();

    // Every committed change has its webhook and email row, and its SMS row when the new status
    // triggers one; no other row exists.
    let mut by_change: HashMap<(String, i64), Vec<&OutboxRow>> = HashMap::new();
    for (transition, row) in &rows {
        by_change
            .entry((row.order_id.clone(), *transition))
            .or_default()
            .push(row);
    }
    let changes: i64 = transitions.values().sum();
    for (order_id, &n) in &transitions {
        assert!(n >= 1, "order {order_id} never changed");
        for transition in 1..=n {
            let rows = by_change
                .remove(&(order_id.clone(), transition))
                .unwrap_or_default();
            let status = rows
                .first()
                .map(|r| r.status.clone())
                .unwrap_or_else(|| panic!("change {transition} of {order_id} has no outbox row"));
            let sms = SMS_TRIGGERS.contains(&Status::from_str(&status).unwrap());
            let mut channels: Vec<&str> = rows.iter().map(|r| r.channel.as_str()).collect();
            channels.sort_unstable();
            let want: Vec<&str> = if sms {
                vec!["email", "sms", "webhook"]
            } else {
                vec!["email", "webhook"]
            };
            assert_eq!(
                channels, want,
                "change {transition} ({status}) of {order_id}"
            );
            assert!(rows.iter().all(|r| r.status == status));
        }
    }
    assert!(
        by_change.is_empty(),
        "outbox rows beyond the committed changes: {:?}",
        by_change.keys().collect::<Vec<_>>()
    );

    // What the fakes received, per notification.
    let mut webhook: HashMap<String, usize> = HashMap::new();
    for d in app.receiver.deliveries() {
        assert!(d.verified, "every webhook is signed: {d:?}");
        if d.answered == 200 {
            *webhook.entry(d.webhook_id.clone()).or_default() += 1;
        }
    }
    let mut mail: HashMap<String, usize> = HashMap::new();
    for m in sink.messages() {
        let id = m.message_id().expect("every mail has a Message-ID");
        let public_id = id
            .trim_start_matches('<')
            .split('@')
            .next()
            .unwrap()
            .to_owned();
        *mail.entry(public_id).or_default() += 1;
    }
    assert_eq!(aliyun.signature_failures(), 0);
    let mut sms: HashMap<(String, String), usize> = HashMap::new();
    for call in aliyun.calls().iter().filter(|c| c.code == "OK") {
        let params = call.template_param().expect("TemplateParam is JSON");
        let key = (
            params["order_id"].as_str().unwrap().to_owned(),
            params["status"].as_str().unwrap().to_owned(),
        );
        *sms.entry(key).or_default() += 1;
    }

    let mut sent: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dead: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dead_reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut duplicates: BTreeMap<&str, usize> = BTreeMap::new();
    let mut cut_short = 0;
    for (_, row) in &rows {
        let received = match row.channel.as_str() {
            "webhook" => webhook.remove(&row.public_id),
            "email" => mail.remove(&row.public_id),
            "sms" => {
                let label = status_text(Status::from_str(&row.status).unwrap());
                sms.remove(&(row.order_id.clone(), label.to_owned()))
            }
            other => panic!("unknown channel {other}"),
        }
        .unwrap_or(0);
        let channel = CHANNELS.iter().find(|c| **c == row.channel).unwrap();
        // A repeat needs a second claim: one attempt never sends twice. An attempt cut short by
        // a kill may have arrived; it is given back and counted apart.
        assert!(
            received as i64 <= row.attempts + row.cut_short,
            "{} {} of {} arrived {received} times in {} attempts and {} cut short",
            row.channel,
            row.public_id,
            row.order_id,
            row.attempts,
            row.cut_short
        );
        cut_short += row.cut_short;
        match row.state.as_str() {
            "sent" => {
                assert!(
                    received >= 1,
                    "{} {} of {} ({}) is recorded sent but never arrived",
                    row.channel,
                    row.public_id,
                    row.order_id,
                    row.status
                );
                *sent.entry(channel).or_default() += 1;
            }
            "dead" => {
                assert!(
                    row.last_error.is_some(),
                    "a dead letter says why: {}",
                    row.public_id
                );
                *dead.entry(channel).or_default() += 1;
                let why: String = row
                    .last_error
                    .iter()
                    .flat_map(|e| e.chars())
                    .take(160)
                    .collect();
                *dead_reasons.entry(format!("{channel}: {why}")).or_default() += 1;
            }
            other => panic!(
                "{} {} of {} ends {other}, neither delivered nor dead",
                row.channel, row.public_id, row.order_id
            ),
        }
        *duplicates.entry(channel).or_default() += received.saturating_sub(1);
    }
    assert!(
        webhook.is_empty(),
        "webhooks with no outbox row: {webhook:?}"
    );
    assert!(mail.is_empty(), "mails with no outbox row: {mail:?}");
    assert!(sms.is_empty(), "SMS with no outbox row: {sms:?}");

    // Deliveries accepted before a kill whose `sent` mark the kill cut short: each daemon's
    // start marked them sent from its receipts, where they would otherwise have been repeated.
    let from_receipts: u64 = std::fs::read_dir(app.dir.path())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("daemon-"))
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .flat_map(|log| {
            log.lines()
                .filter_map(|line| line.split("marked_sent=").nth(1))
                .filter_map(|n| n.split_whitespace().next()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum();
    println!(
        "soak: {} shipments, {} kills, seed {}, {:.1}s; {changes} status changes committed, \
         {} outbox rows; sent {sent:?}; dead letters {dead:?}; duplicates {duplicates:?}; \
         {cut_short} attempts cut short; {from_receipts} marked sent from receipts at a start; \
         integrity_check {integrity}",
        size.shipments,
        size.kills,
        size.seed,
        duration.as_secs_f64(),
        rows.len(),
    );
    for (why, n) in &dead_reasons {
        println!("soak: {n} dead, {why}");
    }
    // Nothing lost: the receivers accept everything, and a kill gives back the attempts it cut
    // short, so every notification arrives however the kills fall.
    assert!(
        dead.is_empty(),
        "dead letters {dead:?}, where every receiver accepts: {dead_reasons:?}"
    );
    // A kill repeats at most the deliveries in flight at that moment: those that reached the
    // receiver before the daemon could record them as sent. The sender runs at most
    // `[delivery] concurrency` (16 by default) at a time on webhook and email, 4 on SMS.
    let in_flight = size.concurrency * (CHANNELS.len() - 1) + size.sms_concurrency;
    let repeats: usize = duplicates.values().sum();
    assert!(
        repeats <= size.kills * in_flight,
        "{repeats} repeated deliveries for {} kills of {in_flight} deliveries in flight",
        size.kills
    );
}
