//! WeChat official-account template messages for buyers, through the real binary against the
//! fake account: the buyer's OpenID comes in with `add --openid` or an `openid` CSV column, is
//! refused in one line when it cannot be one, and is shown masked like a phone number; a journey
//! reaches the buyer in order with the template's keys filled; a shipment without an OpenID gets
//! skipped rows; a token that ends mid-run is replaced once and nothing is lost; 43004 skips that
//! buyer only; a wrong template or secret stops the channel once; and neither the secret nor a
//! token ever shows.

use std::time::Duration;

use crate::support::app::TestApp;
use crate::support::config;
use crate::support::fake_wechat::FakeWechat;

const OPENID: &str = "oia2TjuEGTNoeX76QEjQNrcURxG8";
const OTHER_OPENID: &str = "oia2TjuEGTNoeX76QEjQNrcOTHER";
const APPID: &str = "wx8f2c9a1b3d4e5f60";
const SECRET: &str = "a1b2c3d4e5f6APPSECRET7a8b9c0d1e2f";
const TEMPLATE: &str = "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY";
const TID: u64 = 7_500_000_000_000_000_001;

/// Long enough for a busy 2-core machine.
const LIMIT: Duration = Duration::from_secs(60);

async fn account() -> FakeWechat {
    FakeWechat::start(APPID, SECRET, TEMPLATE, &[OPENID, OTHER_OPENID]).await
}

/// An app with the webhook and `wechat`, and the standard journey scripted for each tid.
async fn app_with(wechat: config::Channel, tids: &[u64]) -> TestApp {
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::webhook())
        .channel(wechat)
        .start()
        .await;
    for tid in tids {
        app.top.journey(*tid);
    }
    app
}

/// Adds order `tid` on the high tier for the buyer `openid`.
fn add_for(app: &TestApp, tid: u64, openid: &str) {
    app.cli_ok(&[
        "add",
        &tid.to_string(),
        "--tier",
        "high",
        "--openid",
        openid,
    ]);
}

fn wechat_rows(app: &TestApp, tid: u64) -> Vec<serde_json::Value> {
    let order_id = tid.to_string();
    app.outbox(None)
        .into_iter()
        .filter(|n| n["channel"] == "wechat" && n["order_id"] == order_id.as_str())
        .collect()
}

/// Fails naming `what` when `text` holds the secret or any token the fake handed out.
fn assert_no_credentials(what: &str, text: &str, wechat: &FakeWechat) {
    assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
    for token in wechat.tokens() {
        assert!(!text.contains(&token), "{what} shows a token: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_comes_in_checked_and_is_shown_masked() {
    let app = TestApp::start().await;
    app.cli_ok(&["add", &TID.to_string(), "--openid", OPENID]);
    let listed = app.shipments();
    assert_eq!(listed[0]["openid"], "oia****RxG8", "{listed:?}");
    let shown = app.shipment(&TID.to_string());
    assert_eq!(shown["shipment"]["openid"], "oia****RxG8", "{shown}");
    let table = app.cli_ok(&["show", &TID.to_string()]);
    assert!(table.contains("oia****RxG8"), "{table}");
    assert!(!table.contains(OPENID), "{table}");
    let revealed = app.cli_ok(&["show", &TID.to_string(), "--json", "--reveal"]);
    assert!(revealed.contains(OPENID), "{revealed}");

    // A shipment without one has no openid key at all in the JSON.
    app.cli_ok(&["add", &(TID + 1).to_string()]);
    let plain = app.shipment(&(TID + 1).to_string());
    assert!(plain["shipment"].get("openid").is_none(), "{plain}");

    for bad in ["has space", "oia2Tju/EG", "微信用户", &"o".repeat(129)] {
        let out = app.cli(&["add", &(TID + 2).to_string(), "--openid", bad]);
        assert!(!out.status.success(), "{bad:?} was taken");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is not a WeChat OpenID"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains(bad), "{stderr}");
    }

    let csv = app_file(
        &app,
        "with-openid.csv",
        &format!("order_id,openid\n{},{OPENID}\n", TID + 3),
    );
    app.cli_ok(&["import", &csv]);
    assert_eq!(
        app.shipment(&(TID + 3).to_string())["shipment"]["openid"],
        "oia****RxG8"
    );
}

/// Writes `text` to a file beside the app's config and returns its path.
fn app_file(app: &TestApp, name: &str, text: &str) -> String {
    let path = app.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_reaches_the_buyer_in_order_and_a_shipment_without_openid_is_skipped() {
    let wechat = account().await;
    let app = app_with(config::Channel::wechat(&wechat), &[TID, TID + 1]).await;
    add_for(&app, TID, OPENID);
    app.cli_ok(&["add", &(TID + 1).to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the buyer heard of the delivery", LIMIT, || {
        wechat.delivered().len() == 3
            && wechat_rows(&app, TID).iter().all(|n| n["state"] == "sent")
            && wechat_rows(&app, TID + 1).len() == 3
    })
    .await;
    assert!(daemon.terminate().success());

    // The buyer statuses, in order, each once, to the buyer's OpenID.
    let sent = wechat.delivered();
    let statuses: Vec<&str> = sent.iter().map(|s| s.value("phrase2")).collect();
    assert_eq!(statuses, ["已发货", "派送中", "已签收"], "{sent:?}");
    for message in &sent {
        assert_eq!(message.touser(), OPENID);
        assert_eq!(message.body["template_id"], TEMPLATE);
        assert_eq!(message.value("character_string1"), TID.to_string());
        assert_eq!(
            message.body["url"],
            format!("https://shop.example/orders/{TID}")
        );
        assert!(
            message.value("time4").starts_with("2026-11-20 08:00"),
            "{message:?}"
        );
        assert!(!message.value("thing3").is_empty());
    }
    assert!(sent[2].value("thing3").chars().count() <= 20);
    // Each message carries its notification's id, so a resend after a crash is not shown twice.
    let rows = wechat_rows(&app, TID);
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["webhook_id"].as_str().unwrap())
        .collect();
    let sent_ids: Vec<&str> = sent.iter().map(|s| s.client_msg_id()).collect();
    assert_eq!(ids, sent_ids);
    assert!(rows.iter().all(|r| r["attempts"] == 1), "{rows:?}");
    // One token served every send, and none was forced.
    assert_eq!(wechat.token_requests(), [false]);
    assert!(wechat.refusals().is_empty(), "{:?}", wechat.refusals());

    let skipped = wechat_rows(&app, TID + 1);
    assert!(
        skipped
            .iter()
            .all(|n| n["state"] == "skipped" && n["last_error"] == "no OpenID"),
        "{skipped:?}"
    );
    let log = daemon.log();
    assert_no_credentials("the daemon log", &log, &wechat);
    assert!(
        !log.contains(OPENID),
        "the daemon log shows the OpenID whole: {log}"
    );
    for args in [
        &["outbox", "--json"][..],
        &["outbox"],
        &["stats"],
        &["stats", "--json"],
        &["check-config"],
        &["list", "--json"],
    ] {
        assert_no_credentials(&format!("{args:?}"), &app.cli_ok(args), &wechat);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_ends_mid_run_is_replaced_once_and_nothing_is_lost() {
    let wechat = account().await;
    let app = app_with(config::Channel::wechat(&wechat), &[TID]).await;
    add_for(&app, TID, OPENID);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the first message is shown", LIMIT, || {
        !wechat.delivered().is_empty()
    })
    .await;
    wechat.expire_tokens();
    app.wait_until("the buyer heard of the delivery", LIMIT, || {
        wechat_rows(&app, TID).len() == 3
            && wechat_rows(&app, TID).iter().all(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());

    let sent = wechat.delivered();
    let statuses: Vec<&str> = sent.iter().map(|s| s.value("phrase2")).collect();
    assert_eq!(statuses, ["已发货", "派送中", "已签收"], "{sent:?}");
    // One refusal of the ended token, one new token, and every message once with one attempt.
    assert_eq!(
        wechat.refusals(),
        ["expired token"],
        "{:?}",
        wechat.refusals()
    );
    assert_eq!(wechat.token_requests(), [false, false]);
    assert_eq!(wechat.tokens().len(), 2);
    assert_eq!(sent[2].token, wechat.tokens()[1]);
    assert_eq!(wechat.repeats(), 0);
    let rows = wechat_rows(&app, TID);
    assert!(rows.iter().all(|r| r["attempts"] == 1), "{rows:?}");
    assert_no_credentials("the daemon log", &daemon.log(), &wechat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_who_does_not_follow_is_skipped_with_the_reason_and_the_others_go_on() {
    let wechat = account().await;
    wechat.unfollow(OTHER_OPENID);
    let app = app_with(config::Channel::wechat(&wechat), &[TID, TID + 1]).await;
    add_for(&app, TID, OPENID);
    add_for(&app, TID + 1, OTHER_OPENID);
    let mut daemon = app.spawn_daemon();
    app.wait_until("every wechat row has settled", LIMIT, || {
        let (mine, theirs) = (wechat_rows(&app, TID), wechat_rows(&app, TID + 1));
        mine.len() == 3
            && theirs.len() == 3
            && mine.iter().all(|n| n["state"] == "sent")
            && theirs.iter().all(|n| n["state"] == "skipped")
    })
    .await;
    assert!(daemon.terminate().success());
    let theirs = wechat_rows(&app, TID + 1);
    for row in &theirs {
        let reason = row["last_error"].as_str().unwrap();
        assert!(reason.contains("does not follow"), "{reason}");
        assert!(reason.contains("43004"), "{reason}");
        assert!(!reason.contains(OTHER_OPENID), "{reason}");
        assert_eq!(row["attempts"], 1);
    }
    assert_eq!(wechat.delivered().len(), 3);
    assert!(wechat.delivered().iter().all(|s| s.touser() == OPENID));
    let log = daemon.log();
    assert!(!log.contains("CHANNEL STOPPED"), "{log}");
    assert!(
        !log.contains(OTHER_OPENID),
        "the log shows the OpenID whole: {log}"
    );
    assert!(log.contains("oia****THER"), "{log}");
}

/// WeChat busy (-1), then over its minute's quota (45011): each is worth another attempt, and the
/// warning names the send URL with the token masked and WeChat's own words; the third attempt
/// shows the message, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_account_gets_the_message_on_a_later_attempt_and_the_error_masks_the_token() {
    let wechat = account().await;
    wechat.reply(-1, 1);
    wechat.reply(45011, 1);
    let app = app_with(config::Channel::wechat(&wechat), &[TID]).await;
    add_for(&app, TID, OPENID);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the buyer heard of the delivery", LIMIT, || {
        let rows = wechat_rows(&app, TID);
        rows.len() == 3 && rows.iter().all(|n| n["state"] == "sent")
    })
    .await;
    assert!(daemon.terminate().success());

    let attempts: Vec<i64> = wechat_rows(&app, TID)
        .iter()
        .map(|n| n["attempts"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [3, 1, 1], "the first message met both answers");
    let codes: Vec<i64> = wechat.sends().iter().map(|s| s.errcode).collect();
    assert_eq!(codes, [-1, 45011, 0, 0, 0]);
    assert_eq!(wechat.delivered().len(), 3);
    let log = daemon.log();
    let send_url = format!(
        "wechat at {}/cgi-bin/message/template/send?access_token=*** answered errcode",
        wechat.base
    );
    for said in ["-1 (system error", "45011 (scripted"] {
        assert!(log.contains(&format!("{send_url} {said}")), "{log}");
    }
    assert_no_credentials("the daemon log", &log, &wechat);
}

/// Runs the standard journey of `TID` through `channel` until its first message meets the stop,
/// then checks that all three are held untried and the loud line came once; returns the log.
async fn held_by_a_stop(wechat: &FakeWechat, channel: config::Channel) -> (TestApp, String) {
    let app = app_with(channel, &[TID]).await;
    add_for(&app, TID, OPENID);
    let mut daemon = app.spawn_daemon();
    app.wait_until("every message is queued and held", LIMIT, || {
        let rows = wechat_rows(&app, TID);
        rows.len() == 3
            && rows[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("wechat channel stopped"))
    })
    .await;
    assert!(daemon.terminate().success());
    let rows = wechat_rows(&app, TID);
    assert!(
        rows.iter()
            .all(|n| n["state"] == "pending" && n["attempts"] == 0),
        "{rows:?}"
    );
    assert!(wechat.delivered().is_empty());
    let log = daemon.log();
    assert_eq!(log.matches("WECHAT CHANNEL STOPPED").count(), 1, "{log}");
    assert_no_credentials("the daemon log", &log, wechat);
    assert_no_credentials("outbox", &app.cli_ok(&["outbox", "--json"]), wechat);
    (app, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_template_stops_the_channel_once_and_holds_every_message() {
    let wechat = account().await;
    let channel = config::Channel::wechat(&wechat).template_id("not-the-accounts-template");
    let (app, log) = held_by_a_stop(&wechat, channel).await;
    assert_eq!(wechat.refusals(), ["wrong template_id"]);
    assert!(log.contains("40037"), "{log}");
    let reason = wechat_rows(&app, TID)[0]["last_error"].clone();
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("(40037: invalid template_id); fix template_id")),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_stops_the_channel_once_at_the_token_endpoint() {
    const WRONG: &str = "not-the-accounts-secret-000";
    let wechat = account().await;
    let channel = config::Channel::wechat(&wechat).secret(WRONG);
    let (app, log) = held_by_a_stop(&wechat, channel).await;
    assert_eq!(wechat.refusals(), ["wrong secret"]);
    assert!(wechat.sends().is_empty());
    assert!(log.contains("40125"), "{log}");
    assert!(!log.contains(WRONG), "{log}");
    let outbox = app.cli_ok(&["outbox", "--json"]);
    assert!(!outbox.contains(WRONG), "{outbox}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_notify_sends_a_sample_to_an_openid_and_check_config_explains_a_missing_key() {
    let wechat = account().await;
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::wechat(&wechat))
        .start()
        .await;
    let out = app.cli_ok(&["test-notify", "--channel", "wechat", "--to", OPENID]);
    assert!(out.contains("accepted: the wechat channel works"), "{out}");
    assert!(!out.contains(OPENID), "{out}");
    assert_no_credentials("test-notify", &out, &wechat);
    let sent = wechat.delivered();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].touser(), OPENID);
    assert_eq!(sent[0].value("character_string1"), "TEST-0001");
    assert_eq!(sent[0].value("phrase2"), "已签收");

    let out = app.cli(&["test-notify", "--channel", "wechat"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give --to: the OpenID"), "{err}");

    wechat.unfollow(OPENID);
    let out = app.cli(&["test-notify", "--channel", "wechat", "--to", OPENID]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not follow"), "{err}");

    let check = app.cli_ok(&["check-config"]);
    assert_no_credentials("check-config", &check, &wechat);
    app.edit_config(|text| {
        text.lines()
            .filter(|l| !l.starts_with("template_id = "))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let out = app.cli(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[channels.wechat] needs template_id"), "{err}");
    assert_no_credentials("check-config", &err, &wechat);
}

/// An attempt that outlasts its claim's lease: a token fetched, a send refused for its token
/// (40001), a fresh token and the send again, each answer 1.5 s in coming, 6 s in all against
/// the test's 5 s lease. The claim ran out while the attempt went on, a free slot claimed the
/// message again and sent it a second time. Now the claim is kept until the answer is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_longer_than_its_lease_sends_the_message_once() {
    let wechat = account().await;
    wechat.slow(Duration::from_millis(1_500));
    wechat.reply(40001, 1);
    let tid = TID + 600;
    let app = app_with(config::Channel::wechat(&wechat), &[]).await;
    crate::faults::signed_in_one_step_reaching(&app, tid, &["--openid", OPENID]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the message is sent", LIMIT, || {
        app.outbox(Some("sent"))
            .iter()
            .any(|n| n["channel"] == "wechat")
    })
    .await;
    // Long enough for a second attempt that claimed the message at the lease's end to arrive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_eq!(
        wechat.token_requests().len(),
        2,
        "a token, then a fresh one"
    );
    assert_eq!(wechat.repeats(), 0, "a message sent a second time");
    assert_eq!(wechat.delivered().len(), 1);
}

/// Six buyers' messages at once through a channel paced at 30 a minute (one every 2 s), with
/// the test's 5 s lease and a slot for each: the last waits about 12 s for its turn, well past
/// its claim, and every message is still sent once. Waiting in their slots, the later ones used
/// to outwait their claims, were claimed again and sent a second time (WeChat drops a repeated
/// `client_msg_id`, but each was still a call of the account's quota), so such a `concurrency`
/// was refused; each now keeps its claim while it waits. Unless told, a paced channel still
/// takes one at a time. However many slots wait, the account hears the messages at its pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_channel_sends_each_message_once_however_long_its_turn() {
    let wechat = account().await;
    let tids: Vec<u64> = (0..6).map(|i| TID + 500 + i).collect();
    let app = app_with(config::Channel::wechat(&wechat), &[]).await;
    app.edit_config(|text| {
        text.replace(
            "[channels.wechat]\n",
            "[channels.wechat]\nrate_limit = \"30/min\"\n",
        )
    });
    let checked = app.cli_ok(&["check-config"]);
    assert!(checked.contains(", 1 at once"), "{checked}");
    app.edit_config(|text| {
        text.replace(
            "rate_limit = \"30/min\"\n",
            "rate_limit = \"30/min\"\nconcurrency = 6\n",
        )
    });
    let checked = app.cli_ok(&["check-config"]);
    assert!(checked.contains(", 6 at once"), "{checked}");
    for tid in &tids {
        crate::faults::signed_in_one_step_reaching(&app, *tid, &["--openid", OPENID]);
    }
    let mut daemon = app.spawn_daemon();
    app.wait_until("every message is sent", LIMIT, || {
        app.outbox(Some("sent"))
            .iter()
            .filter(|n| n["channel"] == "wechat")
            .count()
            == tids.len()
    })
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let sent = wechat.delivered();
    assert_eq!(sent.len(), tids.len());
    assert_eq!(wechat.repeats(), 0, "a message sent a second time");
    // Five turns at least 2 s apart; a late first request may shorten the span a little.
    let span = sent[sent.len() - 1].at - sent[0].at;
    assert!(span >= Duration::from_secs(8), "{span:?}");
}
