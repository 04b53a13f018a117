//! The DingTalk robot channel through the real daemon, against the fake robot: the staff group
//! hears of exactly the trouble its triggers name, in order; "send too fast" pauses the robot
//! without spending attempts; a wrong secret stops the channel with one loud line; and the
//! robot's `access_token` never shows whole.

use std::time::Duration;

use crate::support::app::{Engine, TestApp};
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

/// An app whose robot hears of failed attempts, with five troubled journeys added from order
/// `first` on, their failed attempts coming at once: the app and the orders.
async fn burst(robot: &FakeDingtalk, first: u64) -> (TestApp, Vec<u64>) {
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(config::Channel::dingtalk(robot).statuses(&["failed_attempt"]))
        .start()
        .await;
    let tids: Vec<u64> = (0..5).map(|i| first + i).collect();
    for tid in &tids {
        app.top.script(*tid, troubled_journey(*tid));
        app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    }
    (app, tids)
}

/// A burst for the robot waits its turn without outwaiting its lease: five shipments fail a
/// delivery at once, the robot takes one message every 3 s (20 a minute), and the test's lease is
/// 5 s. With every delivery slot claiming a message and waiting for the bucket inside it, the
/// third one outwaited its lease, was claimed again and reached the group twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_the_robot_reaches_the_group_once_each() {
    let robot = FakeDingtalk::start(TOKEN, Some(SECRET)).await;
    let (app, tids) = burst(&robot, TID + 100).await;
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
    let (app, tids) = burst(&robot, TID + 200).await;
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
    // The schedule they shared is the row docs/notifications.md names, apart from any provider's.
    let schedules: Vec<String> = app
        .sql_column("SELECT provider FROM quota ORDER BY provider")
        .await
        .unwrap();
    assert!(
        schedules.iter().any(|key| key == "channel:dingtalk"),
        "{schedules:?}"
    );
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
