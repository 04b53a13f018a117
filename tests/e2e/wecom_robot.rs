//! The WeCom robot channel through the real daemon, against the fake robot: the staff group hears
//! of exactly the trouble its triggers name, in order; 45009 pauses the robot without spending
//! attempts; a wrong key (93000) stops the channel with one loud line; and the robot's `key`
//! never shows whole.

use std::time::Duration;

use crate::robot_channels::{app_with, assert_held_by_stop, held_by_stop, rows_of};
use crate::support::app::TestApp;
use crate::support::config;
use crate::support::fake_wecom::{self, FakeWecom};

const KEY: &str = "693a91f6-7e1c-4bc4-97a0-0ec2KEYSECRET5aaa";
const TID: u64 = 7_400_000_000_000_000_002;

/// Long enough for a busy 2-core machine; a robot's quota spaces messages 3 s apart.
const LIMIT: Duration = Duration::from_secs(60);

fn robot_rows(app: &TestApp) -> Vec<serde_json::Value> {
    rows_of(app, "wecom")
}

fn assert_no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} shows the robot's key: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_tells_the_wecom_group_exactly_its_trouble_in_order() {
    let robot = FakeWecom::start(KEY).await;
    let app = app_with(config::Channel::wecom(&robot), TID).await;
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

    let contents: Vec<String> = robot
        .delivered()
        .iter()
        .map(|m| m.content().to_owned())
        .collect();
    assert!(
        contents[0].starts_with(&format!(
            "#### 订单{TID}:派送未成功\n\n**派送中** → **派送未成功**"
        )),
        "{}",
        contents[0]
    );
    assert!(
        contents[0].contains("派送失败,收件人电话无人接听"),
        "{}",
        contents[0]
    );
    assert!(
        contents[1].starts_with(&format!("#### 订单{TID}:异常")),
        "{}",
        contents[1]
    );
    assert!(contents[1].contains("收件人拒收"), "{}", contents[1]);
    assert!(
        contents[2].contains("**异常** → **已退回**"),
        "{}",
        contents[2]
    );
    assert!(
        contents[2].contains(&format!("- 订单号:{TID}")),
        "{}",
        contents[2]
    );
    assert!(robot.refusals().is_empty(), "{:?}", robot.refusals());
    let rows = robot_rows(&app);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|n| n["attempts"] == 1), "{rows:?}");

    assert_no_key("the daemon log", &daemon.log());
    assert_no_key("outbox", &app.cli_ok(&["outbox", "--json"]));
    assert_no_key("stats", &app.cli_ok(&["stats"]));
    let checked = app.cli_ok(&["check-config"]);
    assert_no_key("check-config", &checked);
    assert!(
        checked.contains("channel   wecom on exception, failed_attempt, returned"),
        "{checked}"
    );
    assert!(checked.contains("key=***"), "{checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_45009_pauses_the_wecom_robot_and_nothing_goes_dead() {
    let robot = FakeWecom::start(KEY).await;
    robot.reply(45009, 1);
    let app = app_with(
        config::Channel::wecom(&robot).statuses(&["failed_attempt"]),
        TID,
    )
    .await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the robot is paused", LIMIT, || {
        robot_rows(&app).first().is_some_and(|n| {
            n["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("45009"))
        })
    })
    .await;
    let row = &robot_rows(&app)[0];
    assert_eq!(row["state"], "pending", "{row}");
    assert_eq!(row["attempts"], 0, "the pause spends no attempt: {row}");
    assert_eq!(robot.messages().len(), 1);
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
        log.matches("wecom robot paused for 1 min").count(),
        1,
        "{log}"
    );
    assert_no_key("the daemon log", &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_stops_the_wecom_channel_once() {
    let robot = FakeWecom::start(KEY).await;
    let wrong = robot.url.replace(KEY, "not-the-robots-key");
    let app = app_with(config::Channel::wecom_at(&wrong), TID).await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("every trouble is queued and held", LIMIT, || {
        held_by_stop(&app, "wecom")
    })
    .await;
    assert!(daemon.terminate().success());
    let log = daemon.log();
    assert_held_by_stop(&app, &log, "wecom", "93000");
    assert_eq!(robot.refusals(), ["invalid key"]);
    assert!(robot.delivered().is_empty());
    assert!(!log.contains("not-the-robots-key"), "{log}");
    let outbox = app.cli_ok(&["outbox", "--json"]);
    assert!(!outbox.contains("not-the-robots-key"), "{outbox}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_notify_posts_a_sample_to_the_wecom_group_and_check_config_explains_a_missing_url() {
    let robot = FakeWecom::start(KEY).await;
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::wecom(&robot))
        .start()
        .await;
    let out = app.cli_ok(&["test-notify", "--channel", "wecom"]);
    assert!(out.contains("accepted: the wecom channel works"), "{out}");
    assert_no_key("test-notify", &out);
    let sent = robot.delivered();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].content().starts_with("#### 订单TEST-0001:已签收"),
        "{}",
        sent[0].content()
    );

    app.edit_config(|text| {
        text.lines()
            .filter(|l| !l.starts_with("url = ") || !l.contains("key="))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let out = app.cli(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[channels.wecom] needs url"), "{err}");
    assert!(err.contains("url_file"), "{err}");
}

/// The fake refuses what WeCom refuses, so the tests above prove the channel sends right.
#[tokio::test]
async fn the_fake_wecom_robot_checks_the_key_the_length_and_its_quota() {
    let robot = FakeWecom::start(KEY).await;
    let http = reqwest::Client::new();
    let send = |url: String, content: String| {
        let http = http.clone();
        async move {
            let answer: serde_json::Value = http
                .post(url)
                .json(&serde_json::json!({"msgtype": "markdown", "markdown": {"content": content}}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["errcode"].as_i64().unwrap()
        }
    };
    assert_eq!(send(robot.url.clone(), "x".into()).await, 0);
    assert_eq!(
        send(robot.url.replace(KEY, "other"), "x".into()).await,
        93000
    );
    let long = "长".repeat(fake_wecom::MAX_CONTENT_BYTES / 3 + 1);
    assert_eq!(send(robot.url.clone(), long).await, 40058);
    for _ in 1..fake_wecom::PER_MINUTE {
        assert_eq!(send(robot.url.clone(), "x".into()).await, 0);
    }
    assert_eq!(send(robot.url.clone(), "x".into()).await, 45009);
}
