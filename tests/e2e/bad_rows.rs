//! Rows written straight into `shipments` by another program, with every kind of wrong value the
//! schema lets through. The running daemon marks each one invalid with a reason that `list` and
//! `show` carry, keeps running, and the good rows inserted beside them still travel to delivered.

use std::time::Duration;

use crate::support::app::{Engine, TestApp};
use crate::support::on_both_engines;

on_both_engines!(
    bad_rows_from_outside_are_flagged_and_good_ones_flow,
    an_absurd_ban_from_upstream_pauses_the_provider_without_a_crash,
);
use crate::support::config::{Channel, Provider};
use crate::support::fake_1688::Fake1688;
use crate::support::fake_kuaidi100::{FakeKuaidi100, Fault};
use crate::support::{ALI_APP_KEY, ALI_SECRET, ALI_TOKEN, KD_CUSTOMER, KD_KEY};

fn tid(i: u64) -> u64 {
    9_400_000_000_000_000_000 + i
}

/// 9999-12-31T23:59:59Z in milliseconds: a date no parcel has.
const YEAR_9999: i64 = 253_402_300_799_000;

async fn bad_rows_from_outside_are_flagged_and_good_ones_flow(engine: Engine) {
    let alibaba = Fake1688::start(ALI_APP_KEY, ALI_SECRET, ALI_TOKEN).await;
    let kuaidi = FakeKuaidi100::start(KD_CUSTOMER, KD_KEY).await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .provider(Provider::alibaba1688(&alibaba))
        .provider(Provider::kuaidi100(&kuaidi))
        .channel(Channel::webhook())
        .section(
            r#"[maintenance.schedules]
# The sweep for polls that would never come runs with expiry; every second here.
expire = "* * * * * *"
"#,
        )
        .engine(engine)
        .start()
        .await;
    app.create_database();
    let mut daemon = app.spawn_daemon();

    // Kuaidi100 answers returnCode 400 for a carrier code it does not know.
    kuaidi.fault(Fault::BadCarrier, 1);
    let good_ali = 9_500_000_000_000_000_001u64;
    alibaba.journey(good_ali);
    for i in [10, 11, 12] {
        app.top.journey(tid(i));
    }

    // (order id, the SQL, what the reason must say)
    let bad: Vec<(String, String, &str)> = vec![
        (
            "DHL-7".into(),
            "INSERT INTO shipments (order_id, provider) VALUES ('DHL-7', 'dhl')".into(),
            "unknown provider \"dhl\"",
        ),
        (
            "TB12345X".into(),
            "INSERT INTO shipments (order_id, provider) VALUES ('TB12345X', 'taobao')".into(),
            "numeric order id",
        ),
        (
            "1688-ABC".into(),
            "INSERT INTO shipments (order_id, provider) VALUES ('1688-ABC', 'ali')".into(),
            "numeric 1688 order id",
        ),
        (
            tid(1).to_string(),
            format!(
                "INSERT INTO shipments (order_id, provider, phone) VALUES ('{}', 'taobao', '138-1234-567')",
                tid(1)
            ),
            "not a mainland mobile number",
        ),
        (
            tid(2).to_string(),
            format!(
                "INSERT INTO shipments (order_id, provider, email) VALUES ('{}', 'taobao', 'zhang.wei at shop.example')",
                tid(2)
            ),
            "is not an email address",
        ),
        (
            "KD-SF".into(),
            "INSERT INTO shipments (order_id, provider, carrier, tracking_no) \
             VALUES ('KD-SF', 'kd', '顺丰速运', 'SF1234567890')"
                .into(),
            "Kuaidi100 code",
        ),
        (
            "KD-NOSUCH".into(),
            "INSERT INTO shipments (order_id, provider, carrier, tracking_no) \
             VALUES ('KD-NOSUCH', 'kd', 'nosuchcarrier', 'NS1234567890')"
                .into(),
            "找不到对应公司",
        ),
        (
            tid(3).to_string(),
            format!(
                "INSERT INTO shipments (order_id, provider, created_at) VALUES ('{}', 'taobao', {YEAR_9999})",
                tid(3)
            ),
            "created_at = 253402300799000 (9999-12-31",
        ),
        (
            tid(4).to_string(),
            format!(
                "INSERT INTO shipments (order_id, provider, next_poll_at) VALUES ('{}', 'taobao', {YEAR_9999})",
                tid(4)
            ),
            "would never be polled",
        ),
    ];
    for (_, sql, _) in &bad {
        app.sql(sql)
            .await
            .unwrap_or_else(|e| panic!("the schema lets it through: {sql}: {e}"));
    }
    // Good rows beside them, one with a poll time far in the past (it is simply due).
    for i in [10, 11] {
        app.sql(&format!(
            "INSERT INTO shipments (order_id, provider, tier, phone, email) \
             VALUES ('{}', 'taobao', 'high', '+86 138-1234-5678', 'buyer{i}@shop.example')",
            tid(i)
        ))
        .await
        .unwrap();
    }
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tier, next_poll_at) VALUES ('{}', 'taobao', 'high', {})",
        tid(12),
        i64::MIN
    ))
    .await
    .unwrap();
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tier) VALUES ('{good_ali}', 'ali', 'high')"
    ))
    .await
    .unwrap();

    let bad_ids: Vec<String> = bad.iter().map(|(id, _, _)| id.clone()).collect();
    app.wait_until(
        "every bad row is flagged and every good one delivered",
        Duration::from_secs(60),
        || {
            app.shipments().iter().all(|s| {
                if bad_ids.iter().any(|id| s["order_id"] == id.as_str()) {
                    s["active"] == false
                } else {
                    s["status"] == "delivered"
                }
            })
        },
    )
    .await;

    for (order_id, _, says) in &bad {
        let shown = app.shipment(order_id);
        let error = shown["shipment"]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{order_id} says why it is not polled: {shown}"));
        assert!(error.contains(says), "{order_id}: {error}");
        assert!(!error.contains('\n'), "{order_id}: {error}");
        assert_eq!(shown["shipment"]["status"], "pending", "{order_id}");
        let table = app.cli_ok(&["show", order_id]);
        assert!(table.contains("INVALID"), "{table}");
    }
    // Reasons name a bad contact without showing it whole.
    let phone_reason = app.shipment(&tid(1).to_string())["shipment"]["error"].to_string();
    assert!(!phone_reason.contains("138-1234-567"), "{phone_reason}");
    let email_reason = app.shipment(&tid(2).to_string())["shipment"]["error"].to_string();
    assert!(!email_reason.contains("zhang.wei"), "{email_reason}");

    let table = app.cli_ok(&["list"]);
    assert_eq!(table.matches("INVALID").count(), bad.len(), "{table}");
    app.cli_ok(&["stats"]);
    // Good rows were announced, bad ones never.
    let announced: Vec<String> = app
        .receiver
        .deliveries()
        .iter()
        .map(|d| d.body["data"]["order_id"].as_str().unwrap_or("").to_owned())
        .collect();
    for i in [10, 11, 12] {
        assert!(announced.contains(&tid(i).to_string()), "{announced:?}");
    }
    assert!(announced.contains(&good_ali.to_string()));
    for id in &bad_ids {
        assert!(!announced.contains(id), "{id} was announced");
    }
    assert_eq!(app.top.polls_of(tid(3)) + app.top.polls_of(tid(4)), 0);
    assert!(daemon.is_running(), "{}", daemon.log());
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    assert!(daemon.terminate().success(), "{}", daemon.log());
    // The maintenance job that finds a poll time out of reach names the order in its warning,
    // not only the row's number.
    let log = daemon.log();
    let named = format!("order_id={}", tid(4));
    assert!(
        log.lines().any(|line| line.contains("shipment invalid")
            && line.contains(&named)
            && line.contains("would never be polled")),
        "{log}"
    );
}

/// Upstream's numbers are as untrusted as a row's: a ban "for 18446744073709551615 more seconds"
/// pauses the provider (for as long as a date can say) instead of overflowing the clock.
async fn an_absurd_ban_from_upstream_pauses_the_provider_without_a_crash(engine: Engine) {
    let app = TestApp::start_on(engine).await;
    app.top.fault(
        crate::support::fake_top::Fault::Ban { seconds: u64::MAX },
        1,
    );
    let order = tid(20);
    app.top.journey(order);
    app.cli_ok(&["add", &order.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the provider is banned", Duration::from_secs(20), || {
        app.cli_ok(&["stats"]).contains("BANNED")
    })
    .await;
    let stats = app.cli_ok(&["stats"]);
    assert!(stats.contains("18446744073709551615"), "{stats}");
    assert_eq!(app.top.polls_of(order), 1, "no call during the ban");
    assert!(daemon.is_running(), "{}", daemon.log());
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
