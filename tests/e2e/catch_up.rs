//! After a long stop, a thousand overdue shipments drain through the provider's token bucket,
//! oldest first, and the gateway never sees more calls than the quota allows.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::app::TestApp;
use crate::support::config::{Channel, Provider};

const QUOTA_PER_SECOND: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_a_thousand_drains_oldest_first_within_the_quota() {
    let app = TestApp::builder()
        .provider(Provider::top().rate_limit(&format!("{QUOTA_PER_SECOND}/s")))
        .channel(Channel::webhook())
        .start()
        .await;
    app.create_database();
    let base = 7_700_000_000_000_000_000u64;
    // Overdue by 1000 s down to 1 s: shipment i is the i-th oldest.
    let mut insert = String::from("BEGIN;");
    for i in 0..1000u64 {
        app.top.journey(base + i);
        insert.push_str(&format!(
            "INSERT INTO shipments (order_id, provider, next_poll_at) VALUES ('{}', 'taobao', \
             CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - {});",
            base + i,
            (1000 - i) * 1000
        ));
    }
    insert.push_str("COMMIT;");
    app.sql(&insert).await.unwrap();

    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "every overdue shipment has been polled once",
        Duration::from_secs(60),
        || {
            let polled: HashSet<u64> = app.top.calls().iter().filter_map(|c| c.tid).collect();
            polled.len() == 1000
        },
    )
    .await;
    assert!(daemon.terminate().success());

    let calls = app.top.calls();
    // The quota holds as the gateway counts, arrivals jitter included: no two-second window
    // sees more than two seconds' worth.
    for (i, call) in calls.iter().enumerate() {
        let in_window = calls[i..]
            .iter()
            .take_while(|c| c.at.duration_since(call.at) < Duration::from_secs(2))
            .count();
        assert!(
            in_window <= 2 * QUOTA_PER_SECOND,
            "{in_window} calls within two seconds after call {i}"
        );
    }
    // Oldest first: the first 200 calls reach only the 250 most overdue shipments.
    let first: Vec<u64> = calls.iter().take(200).filter_map(|c| c.tid).collect();
    assert!(
        first.iter().all(|tid| tid - base < 250),
        "first calls went to {:?}",
        first
            .iter()
            .map(|t| t - base)
            .filter(|i| *i >= 250)
            .collect::<Vec<_>>()
    );
    assert_eq!(app.top.signature_failures(), 0);
}
