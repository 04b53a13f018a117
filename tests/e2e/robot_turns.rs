//! A message waiting in its slot for a group robot's turn (a robot takes a few messages a
//! minute): given back whole when the daemon stops, not counted by a kill, whichever of the three
//! robots it waits for, and never sent under a claim that ended while it waited.

use std::time::Duration;

use serde_json::{Value, json};

use crate::robot_channels::{rows_of, troubled_journey};
use crate::support::app::{Daemon, TestApp};
use crate::support::config;
use crate::support::fake_dingtalk::FakeDingtalk;
use crate::support::fake_feishu::FakeFeishu;
use crate::support::fake_wecom::FakeWecom;

const TID: u64 = 7_400_000_000_000_000_003;

/// Long enough for a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(60);

/// A robot under test: its section in the config, its channel's name in the outbox, and how
/// many messages its fake has shown in the group.
struct Robot<'a> {
    channel: config::Channel,
    kind: &'static str,
    delivered: Box<dyn Fn() -> usize + Send + Sync + 'a>,
}

impl<'a> Robot<'a> {
    fn dingtalk(fake: &'a FakeDingtalk) -> Robot<'a> {
        Robot {
            channel: config::Channel::dingtalk(fake),
            kind: "dingtalk",
            delivered: Box::new(|| fake.delivered().len()),
        }
    }

    fn wecom(fake: &'a FakeWecom) -> Robot<'a> {
        Robot {
            channel: config::Channel::wecom(fake),
            kind: "wecom",
            delivered: Box::new(|| fake.delivered().len()),
        }
    }

    fn feishu(fake: &'a FakeFeishu) -> Robot<'a> {
        Robot {
            channel: config::Channel::feishu(fake),
            kind: "feishu",
            delivered: Box::new(|| fake.delivered().len()),
        }
    }

    fn delivered(&self) -> usize {
        (self.delivered)()
    }
}

async fn dingtalk() -> FakeDingtalk {
    FakeDingtalk::start("d1f2e3TOKEN0a9b8c7d6", Some("SECa1b2c3d4e5f6")).await
}

/// An app whose `robot` takes one message every 30 s, and a daemon that has sent one of two
/// robot messages and holds the other, claimed, waiting for the robot's next turn.
async fn one_sent_one_waiting_for_its_turn(robot: &Robot<'_>, first: u64) -> (TestApp, Daemon) {
    one_sent_one_waiting_at(robot, first, "1/30s", "5s").await
}

/// [`one_sent_one_waiting_for_its_turn`], the robot taking one message per `rate` and a
/// delivery's claim lasting `lease`.
async fn one_sent_one_waiting_at(
    robot: &Robot<'_>,
    first: u64,
    rate: &str,
    lease: &str,
) -> (TestApp, Daemon) {
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(
            robot
                .channel
                .clone()
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
        rows_of(&app, robot.kind).len() == 2 && robot.delivered() == 1
    })
    .await;
    // The slot takes the next message as soon as the first is sent; a second is ample.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let claimed = app
        .sql_count(&format!(
            "SELECT count(*) FROM notifications \
             WHERE channel = '{}' AND state = 'pending' AND lease_until IS NOT NULL",
            robot.kind
        ))
        .await
        .unwrap();
    assert_eq!(claimed, 1, "{}", daemon.log());
    (app, daemon)
}

/// The one waiting message of the robot's `kind`, as the outbox shows it.
fn waiting_row(app: &TestApp, kind: &str) -> Value {
    let waiting: Vec<_> = rows_of(app, kind)
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
fn assert_sent_with_one_attempt(app: &TestApp, kind: &str, waiting: &Value) {
    let sent = rows_of(app, kind)
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
    let fake = dingtalk().await;
    let robot = Robot::dingtalk(&fake);
    let (app, mut daemon) = one_sent_one_waiting_for_its_turn(&robot, TID).await;
    assert!(daemon.terminate().success(), "{}", daemon.log());

    assert_eq!(robot.delivered(), 1);
    assert_eq!(
        counts(&waiting_row(&app, robot.kind)),
        (json!("pending"), json!(0), json!(0))
    );
}

/// Nor does a kill count it: a paced channel's attempt is counted once its turn has come, just
/// before the send. It used to be counted as the message took its slot, so a kill while it
/// waited (for half a minute here, for longer behind other daemons' turns) counted an attempt cut
/// short that never left, and ten such kills gave the message up. Each robot is one the sender
/// knows as paced (`Channel::pace`).
async fn a_kill_while_a_message_waits_for_its_turn_counts_no_attempt(robot: Robot<'_>) {
    let (app, mut daemon) = one_sent_one_waiting_for_its_turn(&robot, TID + 10).await;
    daemon.kill9();
    let waiting = waiting_row(&app, robot.kind);
    assert_eq!(counts(&waiting), (json!("pending"), json!(0), json!(0)));

    // The next daemon takes it once the dead one's claim ends, and its first turn comes at once.
    let mut daemon = app.spawn_daemon();
    app.wait_until("the waiting message sent", LIMIT, || robot.delivered() == 2)
        .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_sent_with_one_attempt(&app, robot.kind, &waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_a_message_waits_for_the_dingtalk_robots_turn_counts_no_attempt() {
    let fake = dingtalk().await;
    a_kill_while_a_message_waits_for_its_turn_counts_no_attempt(Robot::dingtalk(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_a_message_waits_for_the_wecom_robots_turn_counts_no_attempt() {
    let fake = FakeWecom::start("693a91f6-7e1c-4bc4-97a0-0ec2KEY").await;
    a_kill_while_a_message_waits_for_its_turn_counts_no_attempt(Robot::wecom(&fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_a_message_waits_for_the_feishu_bots_turn_counts_no_attempt() {
    let fake = FakeFeishu::start("feishu-hook-TOKEN", Some("feishuSECRET")).await;
    a_kill_while_a_message_waits_for_its_turn_counts_no_attempt(Robot::feishu(&fake)).await;
}

/// A message whose claim ends while it waits for its turn is not sent under that claim. Here the
/// claim is written over, as another daemon's takeover after a stall past the lease would: the
/// start at the turn counts nothing, since a start counts only under the claim it was made
/// under, and the message does not leave (with the claim left out of the start's SQL, this test
/// finds the message sent at the turn). It is sent once, by its next claim, with one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_claim_ends_while_it_waits_for_its_turn_is_not_sent_under_it() {
    let fake = dingtalk().await;
    let robot = Robot::dingtalk(&fake);
    // The turn comes 8 s after the first message, 6 s or more after this point; the claim, 30 s
    // long, is not renewed before it.
    let (app, mut daemon) = one_sent_one_waiting_at(&robot, TID + 20, "1/8s", "30s").await;
    let waiting = waiting_row(&app, robot.kind);
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
    assert_eq!(robot.delivered(), 1, "{}", daemon.log());
    let row = waiting_row(&app, robot.kind);
    assert_eq!(
        counts(&row),
        (json!("pending"), json!(0), json!(0)),
        "{row:?}"
    );

    // Once the other claim ends, the daemon claims the message again and sends it.
    app.wait_until("the message sent under its next claim", LIMIT, || {
        rows_of(&app, robot.kind)
            .iter()
            .any(|n| n["id"] == waiting["id"] && n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_eq!(robot.delivered(), 2, "{}", daemon.log());
    assert_sent_with_one_attempt(&app, robot.kind, &waiting);
}
