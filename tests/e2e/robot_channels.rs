//! The DingTalk robot channel through the real daemon, against the fake robot: the staff group
//! hears of exactly the trouble its triggers name, in order; "send too fast" pauses the robot
//! without spending attempts; a wrong secret stops the channel with one loud line; and the
//! robot's `access_token` never shows whole.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::app::{Daemon, Engine, TestApp};
use crate::support::config;
use crate::support::fake_dingtalk::{self, FakeDingtalk};
use crate::support::fake_top;

const TOKEN: &str = "d1f2e3TOKEN0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4";
const SECRET: &str = "SECa1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2";
const TID: u64 = 7_400_000_000_000_000_001;

/// Long enough for a busy 2-core machine; a robot's quota spaces messages 3 s apart.
const LIMIT: Duration = Duration::from_secs(60);

/// A parcel that is picked up, fails a delivery, is refused and comes back signed for by the
/// sender: one poll a step.
pub(crate) fn troubled_journey(tid: u64) -> Vec<String> {
    let steps: [(&str, &str, &str); 6] = [
        ("2026-11-20 08:00:01", "【杭州市】中通快递 已揽收", "GOT"),
        (
            "2026-11-20 08:00:02",
            "【上海市】快递员正在派件",
            "TMS_DELIVERING",
        ),
        (
            "2026-11-20 08:00:03",
            "【上海市】派送失败,收件人电话无人接听",
            "FAILED",
        ),
        (
            "2026-11-20 08:00:04",
            "【上海市】快递员正在派件",
            "TMS_DELIVERING",
        ),
        ("2026-11-20 08:00:05", "【上海市】收件人拒收", "TMS_REJECT"),
        ("2026-11-20 08:00:06", "【杭州市】退回件已签收", ""),
    ];
    (1..=steps.len())
        .map(|n| fake_top::trace_response(tid, "物流公司揽收成功", &steps[..n]))
        .collect()
}

pub(crate) async fn app_with(robot: config::Channel, tid: u64) -> TestApp {
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(robot)
        .start()
        .await;
    app.top.script(tid, troubled_journey(tid));
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    app
}

fn robot_rows(app: &TestApp) -> Vec<serde_json::Value> {
    rows_of(app, "dingtalk")
}

/// The outbox rows of one channel.
pub(crate) fn rows_of(app: &TestApp, channel: &str) -> Vec<serde_json::Value> {
    app.outbox(None)
        .into_iter()
        .filter(|n| n["channel"] == channel)
        .collect()
}

/// Whether the troubled journey's three rows on `channel` are queued and the first has met the
/// channel's stop (the two behind it wait their turn).
pub(crate) fn held_by_stop(app: &TestApp, channel: &str) -> bool {
    let rows = rows_of(app, channel);
    rows.len() == 3
        && rows[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("{channel} channel stopped")))
}

/// After a stop: every row of `channel` waits with no attempt spent, and the log has the
/// channel's one loud line, naming the robot's `code`.
pub(crate) fn assert_held_by_stop(app: &TestApp, log: &str, channel: &str, code: &str) {
    let rows = rows_of(app, channel);
    assert!(
        rows.iter()
            .all(|n| n["state"] == "pending" && n["attempts"] == 0),
        "{rows:?}"
    );
    let loud = format!("{} CHANNEL STOPPED", channel.to_uppercase());
    assert_eq!(log.matches(&loud).count(), 1, "{log}");
    assert!(log.contains(code), "{log}");
}

fn assert_no_token(what: &str, text: &str) {
    assert!(
        !text.contains(TOKEN),
        "{what} shows the access token: {text}"
    );
    assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_tells_the_staff_group_exactly_its_trouble_in_order() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let app = app_with(config::Channel::dingtalk(&robot), TID).await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the robot told of the return", LIMIT, || {
        robot.delivered().len() == 3
    })
    .await;
    app.wait_until("the rows are marked sent", LIMIT, || {
        robot_rows(&app).iter().all(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());

    let titles: Vec<String> = robot
        .delivered()
        .iter()
        .map(|m| m.title().to_owned())
        .collect();
    assert_eq!(
        titles,
        [
            format!("订单{TID}:派送未成功"),
            format!("订单{TID}:异常"),
            format!("订单{TID}:已退回"),
        ]
    );
    let texts: Vec<String> = robot
        .delivered()
        .iter()
        .map(|m| m.text().to_owned())
        .collect();
    assert!(
        texts[0].contains("**派送中** → **派送未成功**"),
        "{}",
        texts[0]
    );
    assert!(
        texts[0].contains("派送失败,收件人电话无人接听"),
        "{}",
        texts[0]
    );
    assert!(texts[1].contains("收件人拒收"), "{}", texts[1]);
    assert!(texts[2].contains("**异常** → **已退回**"), "{}", texts[2]);
    assert!(
        texts[2].contains(&format!("- 订单号:{TID}")),
        "{}",
        texts[2]
    );
    assert!(robot.refusals().is_empty(), "{:?}", robot.refusals());
    let rows = robot_rows(&app);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|n| n["attempts"] == 1), "{rows:?}");

    // The token shows nowhere: not in the log, the outbox, check-config or stats.
    assert_no_token("the daemon log", &daemon.log());
    assert_no_token("outbox", &app.cli_ok(&["outbox", "--json"]));
    assert_no_token("stats", &app.cli_ok(&["stats"]));
    let checked = app.cli_ok(&["check-config"]);
    assert_no_token("check-config", &checked);
    assert!(
        checked.contains("channel   dingtalk on exception, failed_attempt, returned"),
        "{checked}"
    );
    assert!(checked.contains("access_token=***"), "{checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_too_fast_pauses_the_robot_and_nothing_goes_dead() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    robot.reply(130101, 1);
    let app = app_with(
        config::Channel::dingtalk(&robot).statuses(&["failed_attempt"]),
        TID,
    )
    .await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the robot is paused", LIMIT, || {
        robot_rows(&app).first().is_some_and(|n| {
            n["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("130101"))
        })
    })
    .await;
    let row = &robot_rows(&app)[0];
    assert_eq!(row["state"], "pending", "{row}");
    assert_eq!(row["attempts"], 0, "the pause spends no attempt: {row}");
    assert_eq!(robot.messages().len(), 1);
    // A reload tries the robot again at once; the lock is over by then.
    daemon.signal("HUP");
    app.wait_until("the message is sent", LIMIT, || {
        robot_rows(&app)
            .first()
            .is_some_and(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());
    assert!(app.outbox(Some("dead")).is_empty());
    assert_eq!(robot.delivered().len(), 1);
    assert_eq!(robot_rows(&app)[0]["attempts"], 1);
    let log = daemon.log();
    assert_eq!(
        log.matches("dingtalk robot paused for 10 min").count(),
        1,
        "{log}"
    );
    assert_no_token("the daemon log", &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_stops_the_channel_once() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let app = app_with(
        config::Channel::dingtalk(&robot).secret("SECnot-the-robots-secret"),
        TID,
    )
    .await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("every trouble is queued and held", LIMIT, || {
        held_by_stop(&app, "dingtalk")
    })
    .await;
    assert!(daemon.terminate().success());
    let log = daemon.log();
    assert_held_by_stop(&app, &log, "dingtalk", "310000");
    // One refused message, then the channel held the rest without asking the robot.
    assert_eq!(robot.refusals().len(), 1, "{:?}", robot.refusals());
    assert!(
        robot.refusals()[0].starts_with("sign "),
        "{:?}",
        robot.refusals()
    );
    assert!(robot.delivered().is_empty());
    assert_no_token("the daemon log", &log);
    assert_no_token("outbox", &app.cli_ok(&["outbox", "--json"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_notify_posts_a_sample_to_the_group_and_check_config_explains_a_missing_url() {
    let robot = FakeDingtalk::start(TOKEN, None).await;
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::dingtalk(&robot))
        .start()
        .await;
    let out = app.cli_ok(&["test-notify", "--channel", "dingtalk"]);
    assert!(
        out.contains("accepted: the dingtalk channel works"),
        "{out}"
    );
    assert_no_token("test-notify", &out);
    let sent = robot.delivered();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].title(), "订单TEST-0001:已签收");

    app.edit_config(|text| {
        text.lines()
            .filter(|l| !l.starts_with("url = ") || !l.contains("access_token"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let out = app.cli(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[channels.dingtalk] needs url"), "{err}");
    assert!(err.contains("url_file"), "{err}");
}

/// The fake refuses what DingTalk refuses, so the tests above prove the channel signs right.
#[tokio::test]
async fn the_fake_robot_refuses_a_wrong_or_stale_signature_and_keeps_its_quota() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let http = reqwest::Client::new();
    let body = r#"{"msgtype":"markdown","markdown":{"title":"t","text":"x"}}"#;
    let send = |timestamp: i64, sign: String| {
        let url = format!(
            "{}&timestamp={timestamp}&sign={}",
            robot.url,
            url_encode(&sign)
        );
        let http = http.clone();
        async move {
            let answer: serde_json::Value = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["errcode"].as_i64().unwrap()
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let sign = |at: i64| fake_dingtalk::expected_sign(SECRET, &at.to_string());
    assert_eq!(send(now, sign(now)).await, 0);
    assert_eq!(send(now, sign(now - 1)).await, 310000);
    let stale = now - 61 * 60 * 1000;
    assert_eq!(send(stale, sign(stale)).await, 310000);
    for _ in 1..fake_dingtalk::PER_MINUTE {
        assert_eq!(send(now, sign(now)).await, 0);
    }
    assert_eq!(send(now, sign(now)).await, 130101);
    // The channel's own signature is what the fake expects.
    assert_eq!(
        shipwatch::notify::dingtalk::sign(SECRET, now),
        fake_dingtalk::expected_sign(SECRET, &now.to_string())
    );
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A burst for the robot waits its turn without outwaiting its lease: five shipments fail a
/// delivery at once, the robot takes one message every 3 s (20 a minute), and the test's lease is
/// 5 s. With every delivery slot claiming a message and waiting for the bucket inside it, the
/// third one outwaited its lease, was claimed again and reached the group twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_the_robot_reaches_the_group_once_each() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(config::Channel::dingtalk(&robot).statuses(&["failed_attempt"]))
        .start()
        .await;
    let tids: Vec<u64> = (0..5).map(|i| TID + 100 + i).collect();
    for tid in &tids {
        app.top.script(*tid, troubled_journey(*tid));
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    }
    let mut daemon = app.spawn_daemon();
    app.wait_until("every failed attempt is marked sent", LIMIT, || {
        let rows = robot_rows(&app);
        rows.len() == tids.len() && rows.iter().all(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());

    assert_each_failed_attempt_once(&robot.delivered(), &tids);
    assert!(robot.refusals().is_empty(), "{:?}", robot.refusals());
}

/// "Send too fast" in a burst: the robot hears nothing more until the pause ends. Five shipments
/// fail a delivery at once; the robot takes the first message, and its lock answers the second,
/// 3 s later (its turn at 20 a minute). The three behind it wait out the pause without being
/// sent and without spending an attempt. Were every delivery slot to hold a message in line for
/// the robot's turn, those already in line when the pause began would reach the locked robot one
/// by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_too_fast_in_a_burst_sends_nothing_more_during_the_pause() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    robot.reply(0, 1);
    robot.reply(130101, 1);
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(config::Channel::dingtalk(&robot).statuses(&["failed_attempt"]))
        .start()
        .await;
    let tids: Vec<u64> = (0..5).map(|i| TID + 200 + i).collect();
    for tid in &tids {
        app.top.script(*tid, troubled_journey(*tid));
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    }
    let mut daemon = app.spawn_daemon();
    // Each message's turn would have come within 15 s; the pause is 10 min.
    app.wait_until("every message is sent or held by the pause", LIMIT, || {
        let rows = robot_rows(&app);
        rows.len() == tids.len()
            && rows.iter().all(|n| {
                n["state"] == "sent"
                    || n["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("130101"))
            })
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());

    let calls: Vec<i64> = robot.messages().iter().map(|m| m.errcode).collect();
    assert_eq!(calls, [0, 130101], "the locked robot was called again");
    let rows = robot_rows(&app);
    let held = rows
        .iter()
        .filter(|n| n["state"] == "pending" && n["attempts"] == 0)
        .count();
    assert_eq!(held, 4, "{rows:?}");
}

/// The group was told of each order's failed attempt once.
fn assert_each_failed_attempt_once(delivered: &[fake_dingtalk::Message], tids: &[u64]) {
    let mut titles: Vec<String> = delivered.iter().map(|m| m.title().to_owned()).collect();
    titles.sort();
    let mut expected: Vec<String> = tids
        .iter()
        .map(|tid| format!("订单{tid}:派送未成功"))
        .collect();
    expected.sort();
    assert_eq!(titles, expected, "each message once");
}

/// An app on a PostgreSQL database for several daemons, whose robot hears of failed attempts at
/// `rate`, with `count` troubled journeys added from order `first` on: the app and the orders.
async fn shared_robot(
    robot: &FakeDingtalk,
    rate: &str,
    first: u64,
    count: u64,
) -> (TestApp, Vec<u64>) {
    let app = TestApp::builder()
        .engine(Engine::Postgres)
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(
            config::Channel::dingtalk(robot)
                .statuses(&["failed_attempt"])
                .rate_limit(rate),
        )
        .start()
        .await;
    app.create_database();
    let tids: Vec<u64> = (0..count).map(|i| first + i).collect();
    for tid in &tids {
        app.top.script(*tid, troubled_journey(*tid));
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    }
    (app, tids)
}

/// Two daemons on one PostgreSQL database keep to the robot's quota together: the quota is the
/// robot's, whichever daemon sends. Each daemon used to pace alone at `rate_limit`, so two sent
/// twice as fast, and DingTalk locks a robot that hears more than its 20 a minute for 10 minutes
/// (130101). Here the robot takes 25 messages in any second and `rate_limit` is 20 a second:
/// alone, the two daemons sent 40 a second. At that pace the turns of the shared schedule must
/// also be taken when the timer wakes a millisecond late: with no more slack than a fiftieth of
/// the spacing, most were lost and the robot sent almost nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_database_keep_to_the_robots_quota_together() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    robot.quota(25, Duration::from_secs(1));
    let (app, tids) = shared_robot(&robot, "20/s", TID + 200, 40).await;
    // Each daemon's webhook names it, for the count below; the robot ignores the extra key.
    let mut daemons = app.spawn_daemons_with(2, |i, config| {
        if let Some(toml::Value::Table(channels)) = config.get_mut("channels")
            && let Some(toml::Value::Table(dingtalk)) = channels.get_mut("dingtalk")
        {
            let url = format!("{}&daemon={i}", robot.url);
            dingtalk.insert("url".to_owned(), url.into());
        }
    });
    // A refusal ends the wait: the robot pauses for 10 minutes after it.
    app.wait_until(
        "every failed attempt is marked sent, or the robot refuses one",
        LIMIT,
        || {
            let rows = robot_rows(&app);
            !robot.refusals().is_empty()
                || rows.len() == tids.len() && rows.iter().all(|n| n["state"] == "sent")
        },
    )
    .await;
    for daemon in &mut daemons {
        assert!(daemon.terminate().success(), "{}", daemon.log());
    }

    assert!(robot.refusals().is_empty(), "{:?}", robot.refusals());
    let delivered = robot.delivered();
    assert_each_failed_attempt_once(&delivered, &tids);
    for daemon in ["0", "1"] {
        let sent = delivered
            .iter()
            .filter(|m| m.query.get("daemon").map(String::as_str) == Some(daemon))
            .count();
        assert!(
            sent > 0,
            "daemon {daemon} sent nothing: the test shows no sharing"
        );
    }
}

/// A message that waits for a turn of a robot shared by several daemons can wait past its
/// claim: each daemon takes one message at a time, but the turns of the other daemons come
/// between its own. Once the claim ran out another daemon took the message and sent it too, so
/// the group heard of the same trouble twice (4 of 6 here). Here three daemons share a robot at
/// one message every 4 s under a 6 s lease and a 4 s timeout: a message whose turn comes after
/// two other daemons' waits past its claim. It is now sent once: its claim is renewed while it
/// waits. (At half these times one run on a busy machine failed: a turn then left its claim 2 s
/// at least, and a daemon held still that long before its `sent` mark loses the claim, and the
/// message is sent again or waits for another turn. Twice the times double that margin. Six
/// turns 4 s apart take 24 s: the wait allows twice the usual limit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_outwaits_its_claim_for_a_shared_robots_turn_is_sent_once() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let (app, tids) = shared_robot(&robot, "1/4s", TID + 300, 6).await;
    let mut daemons = app.spawn_daemons_with(3, |_, config| {
        if let Some(toml::Value::Table(delivery)) = config.get_mut("delivery") {
            delivery.insert("lease".to_owned(), "6s".into());
            delivery.insert("timeout".to_owned(), "4s".into());
        }
    });
    app.wait_until("every failed attempt is marked sent", 2 * LIMIT, || {
        let rows = robot_rows(&app);
        rows.len() == tids.len() && rows.iter().all(|n| n["state"] == "sent")
    })
    .await;
    for daemon in &mut daemons {
        assert!(daemon.terminate().success(), "{}", daemon.log());
    }

    assert_each_failed_attempt_once(&robot.delivered(), &tids);
}

/// An app whose DingTalk robot takes one message every 30 s, and a daemon that has sent one of
/// two robot messages and holds the other, claimed, waiting for the robot's next turn.
async fn one_sent_one_waiting_for_its_turn(robot: &FakeDingtalk, first: u64) -> (TestApp, Daemon) {
    one_sent_one_waiting_at(robot, first, "1/30s", "5s").await
}

/// [`one_sent_one_waiting_for_its_turn`], the robot taking one message per `rate` and a
/// delivery's claim lasting `lease`.
async fn one_sent_one_waiting_at(
    robot: &FakeDingtalk,
    first: u64,
    rate: &str,
    lease: &str,
) -> (TestApp, Daemon) {
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(
            config::Channel::dingtalk(robot)
                .statuses(&["failed_attempt"])
                .rate_limit(rate),
        )
        .start()
        .await;
    app.edit_config(|text| {
        let text = text.replace("lease = \"5s\"", &format!("lease = \"{lease}\""));
        format!("shutdown_timeout = \"1s\"\n{text}")
    });
    for tid in [first, first + 1] {
        app.top.script(tid, troubled_journey(tid));
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    }
    let daemon = app.spawn_daemon();
    app.wait_until("one robot message sent and another queued", LIMIT, || {
        robot_rows(&app).len() == 2 && robot.delivered().len() == 1
    })
    .await;
    // The slot takes the next message as soon as the first is sent; a second is ample.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let claimed = app
        .sql_count(
            "SELECT count(*) FROM notifications \
             WHERE channel = 'dingtalk' AND state = 'pending' AND lease_until IS NOT NULL",
        )
        .await
        .unwrap();
    assert_eq!(claimed, 1, "{}", daemon.log());
    (app, daemon)
}

/// The robot's one waiting message, as the outbox shows it.
fn waiting_row(app: &TestApp) -> Value {
    let waiting: Vec<_> = robot_rows(app)
        .into_iter()
        .filter(|n| n["state"] == "pending")
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    waiting[0].clone()
}

/// A row's state, attempts and attempts cut short.
fn counts(row: &Value) -> (Value, Value, Value) {
    (
        row["state"].clone(),
        row["attempts"].clone(),
        row["cut_short"].clone(),
    )
}

/// Asserts that the robot's `waiting` message ended sent, with one attempt and none cut short.
fn assert_sent_with_one_attempt(app: &TestApp, waiting: &Value) {
    let sent = robot_rows(app)
        .into_iter()
        .find(|n| n["id"] == waiting["id"])
        .unwrap();
    assert_eq!(
        counts(&sent),
        (json!("sent"), json!(1), json!(0)),
        "{sent:?}"
    );
}

/// A message still waiting for the robot's turn when the daemon stops never left: the drain
/// gives it back with no attempt counted, not as an attempt cut short (a message cut short ten
/// times is given up, so restarts alone used to wear down one that waited for a slow robot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_for_its_turn_at_a_stop_is_given_back_whole() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let (app, mut daemon) = one_sent_one_waiting_for_its_turn(&robot, TID + 400).await;
    assert!(daemon.terminate().success(), "{}", daemon.log());

    assert_eq!(robot.delivered().len(), 1);
    assert_eq!(
        counts(&waiting_row(&app)),
        (json!("pending"), json!(0), json!(0))
    );
}

/// Nor does a kill count it: a paced channel's attempt is counted once its turn has come, just
/// before the send. It used to be counted as the message took its slot, so a kill while it
/// waited (for half a minute here, for longer behind other daemons' turns) counted an attempt cut
/// short that never left, and ten such kills gave the message up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_a_message_waits_for_its_turn_counts_no_attempt() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let (app, mut daemon) = one_sent_one_waiting_for_its_turn(&robot, TID + 410).await;
    daemon.kill9();
    let waiting = waiting_row(&app);
    assert_eq!(counts(&waiting), (json!("pending"), json!(0), json!(0)));

    // The next daemon takes it once the dead one's claim ends, and its first turn comes at once.
    let mut daemon = app.spawn_daemon();
    app.wait_until("the waiting message sent", LIMIT, || {
        robot.delivered().len() == 2
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_sent_with_one_attempt(&app, &waiting);
}

/// A message whose claim ends while it waits for its turn is not sent under that claim. Here the
/// claim is written over, as another daemon's takeover after a stall past the lease would: the
/// start at the turn counts nothing, since a start counts only under the claim it was made
/// under, and the message does not leave (with the claim left out of the start's SQL, this test
/// finds the message sent at the turn). It is sent once, by its next claim, with one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_claim_ends_while_it_waits_for_its_turn_is_not_sent_under_it() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    // The turn comes 8 s after the first message, 6 s or more after this point; the claim, 30 s
    // long, is not renewed before it.
    let (app, mut daemon) = one_sent_one_waiting_at(&robot, TID + 420, "1/8s", "30s").await;
    let waiting = waiting_row(&app);
    let id = waiting["id"].as_i64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Another claim, ending well after the turn, so that no claim of this daemon's takes the
    // message before the turn's start has been looked at.
    let taken = app
        .sql(&format!(
            "UPDATE notifications SET lease_until = {} WHERE id = {id} AND state = 'pending'",
            now_ms + 15_000
        ))
        .await
        .unwrap();
    assert_eq!(taken, 1);

    let gone = "delivery not started: its claim ended before its start was counted";
    for _ in 0..LIMIT.as_millis() / 100 {
        if daemon.log().contains(gone) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(daemon.log().contains(gone), "{}", daemon.log());
    assert_eq!(robot.delivered().len(), 1, "{}", daemon.log());
    let row = waiting_row(&app);
    assert_eq!(
        counts(&row),
        (json!("pending"), json!(0), json!(0)),
        "{row:?}"
    );

    // Once the other claim ends, the daemon claims the message again and sends it.
    app.wait_until("the message sent under its next claim", LIMIT, || {
        robot_rows(&app)
            .iter()
            .any(|n| n["id"] == waiting["id"] && n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_eq!(robot.delivered().len(), 2, "{:?}", robot.delivered());
    assert_sent_with_one_attempt(&app, &waiting);
}

/// The `ops` trigger: a provider whose session the gateway refuses stops, and the staff group
/// hears of it once, however many shipments and rounds meet the stop; the shipments' own
/// messages are not sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_stops_is_told_to_the_staff_group_once() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let app = TestApp::builder()
        .provider(config::Provider::top().session("revoked-session"))
        .channel(config::Channel::dingtalk(&robot))
        .start()
        .await;
    for k in 0..3u64 {
        let tid = TID + 100 + k;
        app.top.script(tid, troubled_journey(tid));
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    }
    let mut daemon = app.spawn_daemon();
    app.wait_until("the staff group hears of the stop", LIMIT, || {
        !robot.delivered().is_empty()
    })
    .await;
    // Rounds go on meeting the stop meanwhile; still one message.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = daemon.log();
    assert!(daemon.terminate().success());
    let told = robot.delivered();
    assert_eq!(told.len(), 1, "{told:?}\n{log}");
    assert_eq!(told[0].title(), "shipwatch:taobao 已暂停查询", "{told:?}");
    assert!(
        told[0].text().contains("**taobao** 暂停查询"),
        "{}",
        told[0].text()
    );
    assert!(robot_rows(&app).is_empty(), "no shipment changed");
    assert_eq!(log.matches("ops alert").count(), 1, "{log}");
}

/// A channel that stops (a WeCom robot whose key is refused) is told to the other group once,
/// however many messages the stop holds back, and without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_stops_is_told_to_the_other_group_once() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let wecom = crate::support::fake_wecom::FakeWecom::start("the-wecom-key").await;
    let wrong = wecom.url.replace("the-wecom-key", "not-the-robots-key");
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::dingtalk(&robot))
        .channel(config::Channel::wecom_at(&wrong))
        .start()
        .await;
    app.top.script(TID, troubled_journey(TID));
    app.cli_ok(&["add", &TID.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the group heard of the return and of the stop",
        LIMIT,
        || robot.delivered().len() == 4 && rows_of(&app, "wecom").len() == 3,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = daemon.log();
    assert!(daemon.terminate().success());
    let titles: Vec<String> = robot
        .delivered()
        .iter()
        .map(|m| m.title().to_owned())
        .collect();
    let stops: Vec<&String> = titles.iter().filter(|t| t.contains("通道已暂停")).collect();
    assert_eq!(stops, ["shipwatch:wecom 通道已暂停"], "{titles:?}\n{log}");
    assert_eq!(titles.len(), 4, "three changes and one stop: {titles:?}");
    for message in robot.delivered() {
        assert!(
            !message.text().contains("not-the-robots-key"),
            "{}",
            message.text()
        );
    }
}
