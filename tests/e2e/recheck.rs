//! Shipments flagged invalid come back once they are fixed: `recheck` revives the ones that the
//! daemon's rules now let through (the row was corrected, or the config gained the provider), a
//! reload or a restart that brings the provider revives the rows flagged for it, and `set-tier`
//! refuses an invalid order instead of moving it to a tier it is never polled on.

use std::time::Duration;

use crate::support::app::TestApp;

fn tid(i: u64) -> u64 {
    9_600_000_000_000_000_000 + i
}

/// The config with a copy of its `[providers.taobao]` section under the name `name`.
fn with_top_named(text: String, name: &str) -> String {
    let start = text.find("[providers.taobao]").expect("a TOP provider");
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |at| start + 1 + at + 1);
    let copy = text[start..end].replace("[providers.taobao]", &format!("[providers.{name}]"));
    format!("{text}\n{copy}\n")
}

async fn flagged(app: &TestApp, orders: &[String]) {
    app.wait_until(
        "the rows are flagged invalid",
        Duration::from_secs(30),
        || {
            app.shipments().iter().all(|s| {
                !orders.iter().any(|o| s["order_id"] == o.as_str())
                    || (s["active"] == false && s["error"].is_string())
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_revives_fixed_rows_and_says_why_the_others_stay_invalid() {
    let app = TestApp::start().await;
    // Creates the database, for the rows inserted with SQL.
    app.create_database();
    // tb2 is not configured yet; dhl never is; the third row names a provider by mistake and is
    // corrected with SQL.
    let (on_tb2, on_dhl, mistyped) = (tid(1), tid(2), tid(3));
    for order in [on_tb2, mistyped] {
        app.top.journey(order);
    }
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tier) VALUES ('{on_tb2}', 'tb2', 'high'); \
         INSERT INTO shipments (order_id, provider, tier) \
             VALUES ('{on_dhl}', 'dhl' || char(27) || '[31m', 'high'); \
         INSERT INTO shipments (order_id, provider, tier) VALUES ('{mistyped}', 'taobo', 'high');"
    ))
    .await
    .unwrap();
    let orders: Vec<String> = [on_tb2, on_dhl, mistyped]
        .iter()
        .map(u64::to_string)
        .collect();
    let mut daemon = app.spawn_daemon();
    flagged(&app, &orders).await;
    assert!(daemon.terminate().success(), "{}", daemon.log());

    // set-tier on an invalid order is refused in one line that says what to do.
    let out = app.cli(&["set-tier", &orders[0], "low"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "order {on_tb2} is invalid (unknown provider \"tb2\": configured providers are taobao;"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("fix it and run `shipwatch recheck {on_tb2}`")),
        "{stderr}"
    );
    assert_eq!(app.shipment(&orders[0])["shipment"]["tier"], "high");

    // poll --apply would clear its reason and leave it unpolled: refused the same way, and the
    // row stays as it was.
    let out = app.cli(&["poll", "--apply", &orders[0]]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("order {on_tb2} is invalid (unknown provider"))
            && stderr.contains(&format!("run `shipwatch recheck {on_tb2}`")),
        "{stderr}"
    );
    assert!(
        app.shipment(&orders[0])["shipment"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown provider")),
        "still flagged"
    );

    // Neither orders nor --all-invalid: a usage error.
    let out = app.cli(&["recheck"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("required arguments were not provided")
            && stderr.contains("<ORDER|--all-invalid>"),
        "{stderr}"
    );

    // The mistyped provider is corrected by hand: `recheck` revives that row; the others are
    // still bad and say why; an order that does not exist is an error of its own.
    app.sql(&format!(
        "UPDATE shipments SET provider = 'taobao' WHERE order_id = '{mistyped}'"
    ))
    .await
    .unwrap();
    let out = app.cli(&[
        "recheck",
        &orders[2],
        "NO-SUCH-ORDER",
        &orders[1],
        &orders[0],
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: no shipment with order id NO-SUCH-ORDER",
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("order {mistyped}: revived\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "order {on_dhl}: still invalid: unknown provider \"dhl\\u{{1b}}[31m\": configured providers are taobao"
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "escaped for the terminal: {stdout:?}"
    );
    assert!(
        stdout.contains(&format!(
            "order {on_tb2}: still invalid: unknown provider \"tb2\": configured providers are taobao; fix the row or add [providers.tb2] to the config"
        )),
        "{stdout}"
    );
    let revived = app.shipment(&orders[2]);
    assert_eq!(revived["shipment"]["active"], true, "{revived}");
    assert!(revived["shipment"]["error"].is_null(), "{revived}");

    // The config gains tb2: every invalid row is rechecked against it.
    app.edit_config(|text| with_top_named(text, "tb2"));
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&app.cli_ok(&["recheck", "--all-invalid", "--json"])).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let of = |order: u64| {
        all.iter()
            .find(|l| l["order_id"].as_str() == Some(order.to_string().as_str()))
            .unwrap_or_else(|| panic!("{order} in {all:?}"))
    };
    assert_eq!(of(on_tb2)["result"], "revived");
    assert_eq!(of(on_dhl)["result"], "still_invalid");
    assert!(
        of(on_dhl)["reason"]
            .as_str()
            .unwrap()
            .contains("configured providers are taobao, tb2"),
        "{all:?}"
    );

    // Revived rows are due at once, as new ones are, and travel to delivered.
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the revived rows are delivered",
        Duration::from_secs(60),
        || {
            app.shipments()
                .iter()
                .filter(|s| s["status"] == "delivered")
                .count()
                == 2
        },
    )
    .await;
    let dhl = app.shipment(&orders[1]);
    assert_eq!(dhl["shipment"]["active"], false, "{dhl}");
    // Its row keeps the reason of this recheck, not the one before.
    assert!(
        dhl["shipment"]["error"]
            .as_str()
            .is_some_and(|error| error.contains("configured providers are taobao, tb2")),
        "{dhl}"
    );
    // An invalid order can still be removed.
    app.cli_ok(&["remove", &orders[1]]);
    assert_eq!(app.shipments().len(), 2);
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_brings_the_provider_revives_its_rows_which_are_then_notified() {
    let app = TestApp::start().await;
    // Creates the database, for the rows inserted with SQL.
    app.create_database();
    let order = tid(10);
    app.top.journey(order);
    let mut daemon = app.spawn_daemon();
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tier) VALUES ('{order}', 'tb2', 'high')"
    ))
    .await
    .unwrap();
    flagged(&app, &[order.to_string()]).await;
    assert_eq!(app.top.polls_of(order), 0);

    app.edit_config(|text| with_top_named(text, "tb2"));
    daemon.signal("HUP");
    app.wait_until(
        "the revived row is delivered and announced",
        Duration::from_secs(60),
        || {
            app.receiver.deliveries().iter().any(|d| {
                d.body["data"]["order_id"].as_str() == Some(order.to_string().as_str())
                    && d.body["data"]["status"] == "delivered"
            })
        },
    )
    .await;
    let log = daemon.log();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(log.contains("1 revived"), "{log}");
    assert_eq!(app.shipments()[0]["status"], "delivered");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_provider_revives_its_rows() {
    let app = TestApp::start().await;
    // Creates the database, for the rows inserted with SQL.
    app.create_database();
    let order = tid(20);
    app.top.journey(order);
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tier) VALUES ('{order}', 'tb2', 'high')"
    ))
    .await
    .unwrap();
    let mut daemon = app.spawn_daemon();
    flagged(&app, &[order.to_string()]).await;
    assert!(daemon.terminate().success(), "{}", daemon.log());

    app.edit_config(|text| with_top_named(text, "tb2"));
    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "the revived row is delivered",
        Duration::from_secs(60),
        || app.shipments()[0]["status"] == "delivered",
    )
    .await;
    assert!(daemon.log().contains("1 revived"), "{}", daemon.log());
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// `recheck --all-invalid` in text: a line for each row it looked at, then how many it revived
/// and how many stay invalid; with none left, it says so. A row that is not invalid is said to be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_of_every_invalid_row_ends_with_its_counts() {
    let app = TestApp::start().await;
    app.create_database();
    let (fixed, on_dhl, on_ups) = (tid(11), tid(12), tid(13));
    // Flagged by hand: the first row's provider is the configured one now.
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tier, active, error) VALUES \
         ('{fixed}', 'taobao', 'high', 0, 'unknown provider \"taobo\"'), \
         ('{on_dhl}', 'dhl', 'high', 0, 'unknown provider \"dhl\"'), \
         ('{on_ups}', 'ups', 'high', 0, 'unknown provider \"ups\"');"
    ))
    .await
    .unwrap();
    let first = app.cli_ok(&["recheck", "--all-invalid"]);
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 4, "{first}");
    assert!(
        lines.contains(&format!("order {fixed}: revived").as_str()),
        "{first}"
    );
    for order in [on_dhl, on_ups] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("order {order}: still invalid: unknown provider"))),
            "{first}"
        );
    }
    assert_eq!(lines[3], "1 revived, 2 still invalid", "{first}");
    // A row that is not invalid (any more) is left as it is, and said so.
    assert_eq!(
        app.cli_ok(&["recheck", &fixed.to_string()]),
        format!("order {fixed}: not invalid; nothing to do\n")
    );

    app.cli_ok(&["remove", &on_ups.to_string()]);
    let second = app.cli_ok(&["recheck", "--all-invalid"]);
    assert_eq!(
        second.lines().last(),
        Some("0 revived, 1 still invalid"),
        "{second}"
    );

    app.cli_ok(&["remove", &on_dhl.to_string()]);
    assert_eq!(
        app.cli_ok(&["recheck", "--all-invalid"]),
        "no invalid shipments\n"
    );
}
