//! What an operator does around the daemon: importing orders from a file, asking a provider
//! about one order, reading `stats`, and living through rejected credentials.

use std::time::Duration;

use crate::support::app::{SESSION, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::fake_top;

fn write_csv(app: &TestApp, name: &str, text: &str) -> String {
    let path = app.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn stderr_line(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_takes_a_whole_file_or_nothing_and_names_the_bad_line() {
    let app = TestApp::start().await;
    let good = write_csv(
        &app,
        "good.csv",
        "order_id,tier,phone\n5000000000000000001,high,13812345678\n5000000000000000002,low,\n5000000000000000003,,\n",
    );
    let out = app.cli_ok(&["import", &good]);
    assert!(out.contains("imported 3 shipments"), "{out}");
    let shipments = app.shipments();
    assert_eq!(shipments.len(), 3);
    assert_eq!(shipments[0]["tier"], "high");
    assert_eq!(shipments[0]["phone"], "138****5678");
    assert_eq!(shipments[2]["tier"], "normal");
    assert_eq!(shipments[2]["provider"], "taobao");

    let mut text = "order_id,provider,tier\n".to_owned();
    for i in 0..5 {
        text.push_str(&format!("600000000000000000{i},taobao,normal\n"));
    }
    text.push_str("6000000000000000005,taobao,urgent\n");
    text.push_str("6000000000000000006,taobao,high\n");
    let bad = write_csv(&app, "bad.csv", &text);
    let out = app.cli(&["import", &bad]);
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(line.contains("line 7, column tier"), "{line}");
    assert!(line.contains("urgent"), "{line}");
    assert_eq!(
        app.shipments().len(),
        3,
        "nothing of the bad file was imported"
    );

    let unknown = write_csv(&app, "unknown.csv", "order_id,colour\n1,red\n");
    let out = app.cli(&["import", &unknown]);
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("unknown column \"colour\""));

    // A file that repeats an order already tracked is refused whole, too.
    let again = write_csv(
        &app,
        "again.csv",
        "order_id\n7000000000000000001\n5000000000000000001\n",
    );
    let out = app.cli(&["import", &again]);
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains("line 3") && line.contains("already tracked"),
        "{line}"
    );
    assert_eq!(app.shipments().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_shows_what_upstream_says_and_records_only_with_apply() {
    let app = TestApp::start().await;
    let tid = 8_000_000_000_000_000_001u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string()]);
    // Let the CLI's connection close and checkpoint, then take the bytes.
    let before = std::fs::read(&app.db).unwrap();

    let out = app.cli_ok(&["poll", &tid.to_string()]);
    assert!(
        out.contains("status    info_received (raw: 物流公司已接单)"),
        "{out}"
    );
    assert!(out.contains("nothing recorded"), "{out}");
    assert_eq!(
        std::fs::read(&app.db).unwrap(),
        before,
        "poll without --apply changes nothing"
    );
    assert_eq!(app.shipments()[0]["status"], "pending");

    let out = app.cli_ok(&["poll", &tid.to_string(), "--apply"]);
    assert!(out.contains("status    picked_up"), "{out}");
    assert!(out.contains("recorded: pending → picked_up"), "{out}");
    assert!(out.contains("1 notifications queued"), "{out}");
    let show = app.shipment(&tid.to_string());
    assert_eq!(show["shipment"]["status"], "picked_up");
    assert_eq!(show["notifications"].as_array().unwrap().len(), 1);
    assert!(!show["events"].as_array().unwrap().is_empty());
    assert_eq!(app.top.signature_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_stop_one_provider_loudly_and_the_others_go_on() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .provider(Provider::simulator())
        .channel(Channel::webhook())
        .start()
        .await;
    app.edit_config(|text| {
        text.replace(&format!("session = \"{SESSION}\""), "session = \"expired\"")
    });
    for i in 0..4u64 {
        let tid = 8_100_000_000_000_000_000 + i;
        app.top.journey(tid);
        app.cli_ok(&[
            "add",
            &tid.to_string(),
            "--provider",
            "taobao",
            "--tier",
            "high",
        ]);
        app.cli_ok(&[
            "add",
            &format!("SIM-{}", 1000 + 4 * i),
            "--provider",
            "sim",
            "--tier",
            "high",
        ]);
    }
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the simulated parcels are delivered",
        Duration::from_secs(60),
        || {
            app.shipments()
                .iter()
                .filter(|s| s["provider"] == "sim")
                .all(|s| s["status"] == "delivered")
        },
    )
    .await;
    let log = daemon.log();
    assert_eq!(
        log.matches("PROVIDER STOPPED").count(),
        1,
        "one loud line per pause, not per shipment:\n{log}"
    );
    assert!(
        app.shipments()
            .iter()
            .filter(|s| s["provider"] == "taobao")
            .all(|s| s["status"] == "pending" && s["active"] == true),
        "taobao shipments wait, they are not lost"
    );
    let stats = app.cli_ok(&["stats"]);
    assert!(stats.contains("STOPPED   taobao"), "{stats}");
    let check = app.cli_ok(&["check-config"]);
    assert!(check.contains("STOPPED   taobao"), "{check}");
    assert!(daemon.terminate().success());

    // The operator renews the session and restarts: polling resumes on its own.
    app.edit_config(|text| {
        text.replace("session = \"expired\"", &format!("session = \"{SESSION}\""))
    });
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the taobao parcels are delivered too",
        Duration::from_secs(60),
        || app.shipments().iter().all(|s| s["status"] == "delivered"),
    )
    .await;
    assert!(!app.cli_ok(&["stats"]).contains("STOPPED"));
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_code_moves_the_parcel_on_and_is_counted() {
    let app = TestApp::start().await;
    let tid = 8_200_000_000_000_000_001u64;
    app.top.script(
        tid,
        vec![fake_top::trace_response(
            tid,
            "物流公司揽收成功",
            &[
                ("2026-11-20 08:00:00", "【杭州市】已揽收", "GOT"),
                (
                    "2026-11-20 12:00:00",
                    "【杭州市】包裹正在打包升空",
                    "DRONE_LAUNCH",
                ),
            ],
        )],
    );
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the parcel has moved", Duration::from_secs(30), || {
        app.shipments()[0]["status"] != "pending"
    })
    .await;
    assert_eq!(
        app.shipments()[0]["status"],
        "in_transit",
        "the nearest safe status"
    );
    let stats: serde_json::Value = serde_json::from_str(&app.cli_ok(&["stats", "--json"])).unwrap();
    let unmapped = stats["unmapped"].as_array().unwrap();
    assert_eq!(unmapped[0]["provider"], "taobao");
    assert_eq!(unmapped[0]["value"], "action=DRONE_LAUNCH");
    assert!(unmapped[0]["count"].as_i64().unwrap() >= 1);
    assert!(daemon.log().contains("unmapped"));
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_session_takes_effect_on_reload_without_a_restart() {
    let app = TestApp::start().await;
    app.edit_config(|text| {
        text.replace(&format!("session = \"{SESSION}\""), "session = \"expired\"")
    });
    let tid = 8_300_000_000_000_000_001u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the provider is stopped", Duration::from_secs(30), || {
        daemon.log().contains("PROVIDER STOPPED")
    })
    .await;

    // A config that does not load is refused, and the daemon keeps running.
    let good = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(&app.config, "[tiers]\nhigh = \"often\"\n").unwrap();
    daemon.signal("HUP");
    app.wait_until(
        "the bad reload is reported",
        Duration::from_secs(30),
        || daemon.log().contains("config reload failed"),
    )
    .await;
    assert!(daemon.is_running());

    std::fs::write(
        &app.config,
        good.replace("session = \"expired\"", &format!("session = \"{SESSION}\"")),
    )
    .unwrap();
    daemon.signal("HUP");
    app.wait_until(
        "the parcel is delivered after the reload",
        Duration::from_secs(60),
        || app.shipments()[0]["status"] == "delivered",
    )
    .await;
    assert!(daemon.log().contains("config reloaded"));
    assert!(!app.cli_ok(&["stats"]).contains("STOPPED"));
    assert!(daemon.terminate().success());
}
