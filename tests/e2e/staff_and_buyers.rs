//! Every messaging channel at once, through the real binary: one parcel with trouble on the way,
//! a DingTalk, a WeCom and a Feishu group robot for the shop's staff and WeChat for the buyer.
//! Each hears exactly what its triggers name, in the order it happened, once.

use std::time::Duration;

use crate::robot_channels::troubled_journey;
use crate::support::app::TestApp;
use crate::support::config;
use crate::support::fake_dingtalk::FakeDingtalk;
use crate::support::fake_feishu::FakeFeishu;
use crate::support::fake_wechat::FakeWechat;
use crate::support::fake_wecom::FakeWecom;

const TID: u64 = 7_600_000_000_000_000_001;
const OPENID: &str = "oia2TjuEGTNoeX76QEjQNrcALL01";

/// Three robot messages each, spaced 3 s apart by the robots' quotas, on a busy machine.
const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_troubled_parcel_reaches_each_group_and_the_buyer_with_what_their_triggers_name() {
    let dingtalk = FakeDingtalk::start("dtTOKENall", Some("SECdtALL")).await;
    let wecom = FakeWecom::start("wecom-KEY-all").await;
    let feishu = FakeFeishu::start("feishuHOOKall", Some("fsSECRETall")).await;
    let wechat = FakeWechat::start(
        "wx0123456789abcdef",
        "APPSECRETall0123456789",
        "tmplALL0123456789",
        &[OPENID],
    )
    .await;
    let app = TestApp::builder()
        .provider(config::Provider::top())
        .channel(config::Channel::dingtalk(&dingtalk))
        .channel(config::Channel::wecom(&wecom))
        .channel(config::Channel::feishu(&feishu))
        .channel(config::Channel::wechat(&wechat))
        .start()
        .await;
    app.edit_config(|text| {
        format!("{text}\n[notify]\nlink = \"https://shop.example/orders/{{order_id}}\"\n")
    });
    app.top.script(TID, troubled_journey(TID));
    app.cli_ok(&[
        "add",
        &TID.to_string(),
        "--tier",
        "high",
        "--openid",
        OPENID,
    ]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("every channel's messages are sent", LIMIT, || {
        let rows = app.outbox(None);
        dingtalk.delivered().len() == 3
            && wecom.delivered().len() == 3
            && feishu.delivered().len() == 3
            && !rows.is_empty()
            && rows.iter().all(|n| n["state"] == "sent")
            && wechat.delivered().len() == rows.iter().filter(|n| n["channel"] == "wechat").count()
    })
    .await;
    // Nothing more comes after a few more rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(daemon.terminate().success());

    // The staff: a failed delivery, the refusal, the return; in that order, once each.
    let trouble = ["派送未成功", "异常", "已退回"];
    let dingtalk: Vec<String> = dingtalk
        .delivered()
        .iter()
        .map(|m| m.title().to_owned())
        .collect();
    assert_eq!(
        dingtalk,
        trouble.map(|s| format!("订单{TID}:{s}")),
        "DingTalk"
    );
    let feishu: Vec<String> = feishu
        .delivered()
        .iter()
        .map(|m| m.title().to_owned())
        .collect();
    assert_eq!(feishu, trouble.map(|s| format!("订单{TID}:{s}")), "Feishu");
    let wecom = wecom.delivered();
    assert_eq!(wecom.len(), 3);
    for (message, status) in wecom.iter().zip(trouble) {
        assert!(
            message
                .content()
                .starts_with(&format!("#### 订单{TID}:{status}")),
            "WeCom: {}",
            message.content()
        );
    }

    // Each robot message ends with the order's page.
    let link = format!("[查看订单](https://shop.example/orders/{TID})");
    for message in &wecom {
        assert!(message.content().ends_with(&link), "{}", message.content());
    }

    // The buyer: the buyer statuses the journey passed, in order, once each, to the OpenID.
    let buyer: Vec<String> = wechat
        .delivered()
        .iter()
        .map(|s| s.value("phrase2").to_owned())
        .collect();
    assert_eq!(buyer, ["已发货", "派送中", "派送中", "异常"], "WeChat");
    assert!(wechat.delivered().iter().all(|s| s.touser() == OPENID));
    assert_eq!(wechat.repeats(), 0, "no message shown twice");
}
