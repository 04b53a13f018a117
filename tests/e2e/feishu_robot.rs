//! The Feishu bot channel through the real daemon, against the fake bot: the staff group hears
//! of exactly the trouble its triggers name, in order; 11232 pauses the bot without spending
//! attempts; a wrong secret (19021) stops the channel with one loud line; and neither the hook
//! token nor the secret ever shows whole.

use std::time::Duration;

use crate::robot_channels::{app_with, assert_held_by_stop, held_by_stop, rows_of};
use crate::support::app::TestApp;
use crate::support::config;
use crate::support::fake_feishu::{self, FakeFeishu};

const TOKEN: &str = "2f6e1c0aHOOKTOKEN-9b7d-4e21-a3f5-0c8b1d2e3f4a";
const SECRET: &str = "fSIGNSECRETq8Wm3Zr5Tn7Kp";
const TID: u64 = 7_400_000_000_000_000_003;

/// Long enough for a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(60);

fn bot_rows(app: &TestApp) -> Vec<serde_json::Value> {
    rows_of(app, "feishu")
}

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "{what} shows the hook token: {text}");
    assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_tells_the_feishu_group_exactly_its_trouble_in_order() {
    let bot = FakeFeishu::start(TOKEN, Some(SECRET)).await;
    let app = app_with(config::Channel::feishu(&bot), TID).await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the bot told of the return", LIMIT, || {
        bot.delivered().len() == 3
    })
    .await;
    app.wait_until("the rows are marked sent", LIMIT, || {
        bot_rows(&app).iter().all(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());

    let titles: Vec<String> = bot
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
    let texts: Vec<String> = bot
        .delivered()
        .iter()
        .map(|m| m.markdown().to_owned())
        .collect();
    assert!(
        texts[0].starts_with("**派送中** → **派送未成功**"),
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
    assert!(bot.refusals().is_empty(), "{:?}", bot.refusals());
    let rows = bot_rows(&app);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|n| n["attempts"] == 1), "{rows:?}");

    assert_hidden("the daemon log", &daemon.log());
    assert_hidden("outbox", &app.cli_ok(&["outbox", "--json"]));
    assert_hidden("stats", &app.cli_ok(&["stats"]));
    let checked = app.cli_ok(&["check-config"]);
    assert_hidden("check-config", &checked);
    assert!(
        checked.contains("channel   feishu on exception, failed_attempt, returned"),
        "{checked}"
    );
    assert!(checked.contains("/open-apis/bot/v2/hook/***"), "{checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_11232_pauses_the_feishu_bot_and_nothing_goes_dead() {
    let bot = FakeFeishu::start(TOKEN, Some(SECRET)).await;
    bot.reply(11232, 1);
    let app = app_with(
        config::Channel::feishu(&bot).statuses(&["failed_attempt"]),
        TID,
    )
    .await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("the bot is paused", LIMIT, || {
        bot_rows(&app).first().is_some_and(|n| {
            n["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("11232"))
        })
    })
    .await;
    let row = &bot_rows(&app)[0];
    assert_eq!(row["state"], "pending", "{row}");
    assert_eq!(row["attempts"], 0, "the pause spends no attempt: {row}");
    assert_eq!(bot.messages().len(), 1);
    daemon.signal("HUP");
    app.wait_until("the message is sent", LIMIT, || {
        bot_rows(&app).first().is_some_and(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());
    assert!(app.outbox(Some("dead")).is_empty());
    assert_eq!(bot.delivered().len(), 1);
    assert_eq!(bot_rows(&app)[0]["attempts"], 1);
    let log = daemon.log();
    assert_eq!(
        log.matches("feishu robot paused for 1 min").count(),
        1,
        "{log}"
    );
    assert_hidden("the daemon log", &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_stops_the_feishu_channel_once() {
    let bot = FakeFeishu::start(TOKEN, Some(SECRET)).await;
    let app = app_with(
        config::Channel::feishu(&bot).secret("not-the-bots-secret"),
        TID,
    )
    .await;
    let mut daemon = app.spawn_daemon();
    app.wait_until("every trouble is queued and held", LIMIT, || {
        held_by_stop(&app, "feishu")
    })
    .await;
    assert!(daemon.terminate().success());
    let log = daemon.log();
    assert_held_by_stop(&app, &log, "feishu", "19021");
    assert_eq!(bot.refusals().len(), 1, "{:?}", bot.refusals());
    assert!(
        bot.refusals()[0].starts_with("sign "),
        "{:?}",
        bot.refusals()
    );
    assert!(bot.delivered().is_empty());
    assert_hidden("the daemon log", &log);
    assert_hidden("outbox", &app.cli_ok(&["outbox", "--json"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_notify_posts_a_sample_card_and_check_config_explains_a_missing_url() {
    let bot = FakeFeishu::start(TOKEN, None).await;
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::feishu(&bot))
        .start()
        .await;
    let out = app.cli_ok(&["test-notify", "--channel", "feishu"]);
    assert!(out.contains("accepted: the feishu channel works"), "{out}");
    assert_hidden("test-notify", &out);
    let sent = bot.delivered();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].title(), "订单TEST-0001:已签收");

    app.edit_config(|text| {
        text.lines()
            .filter(|l| !l.starts_with("url = ") || !l.contains("/hook/"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let out = app.cli(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[channels.feishu] needs url"), "{err}");
    assert!(err.contains("url_file"), "{err}");
}

/// The fake refuses what Feishu refuses, so the tests above prove the channel signs right.
#[tokio::test]
async fn the_fake_feishu_bot_refuses_a_wrong_or_stale_signature_and_keeps_its_rate() {
    let bot = FakeFeishu::start(TOKEN, Some(SECRET)).await;
    // Its five-a-second limit, counted over a minute here: no timing on a busy machine decides.
    bot.burst_window(std::time::Duration::from_secs(60));
    let http = reqwest::Client::new();
    let send = |timestamp: i64, sign: String| {
        let http = http.clone();
        let url = bot.url.clone();
        async move {
            let answer: serde_json::Value = http
                .post(url)
                .json(&serde_json::json!({
                    "timestamp": timestamp.to_string(),
                    "sign": sign,
                    "msg_type": "interactive",
                    "card": {"elements": [{"tag": "markdown", "content": "x"}]},
                }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["code"].as_i64().unwrap()
        }
    };
    let now = chrono::Utc::now().timestamp();
    let sign = |at: i64| fake_feishu::expected_sign(SECRET, &at.to_string());
    assert_eq!(send(now, sign(now)).await, 0);
    assert_eq!(send(now, sign(now - 1)).await, 19021);
    let stale = now - 61 * 60;
    assert_eq!(send(stale, sign(stale)).await, 19021);
    // The refused ones count toward nothing; 5 in a second is the most.
    for _ in 1..fake_feishu::PER_SECOND {
        assert_eq!(send(now, sign(now)).await, 0);
    }
    assert_eq!(send(now, sign(now)).await, 11232);
    // The channel's own signature is what the fake expects.
    assert_eq!(
        shipwatch::notify::feishu::sign(SECRET, now),
        fake_feishu::expected_sign(SECRET, &now.to_string())
    );
}
