//! The Grafana dashboard and the Prometheus alert rules in `deploy/` name metrics by hand. Every
//! name they use must be one the real daemon's `/metrics` serves, so that renaming a metric fails
//! here rather than leaving an operator with an empty panel or an alert that can never fire.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::app::TestApp;
use crate::support::config::{Channel, Provider};
use crate::support::fake_top::Fault;
use crate::support::free_port;

const LIMIT: Duration = Duration::from_secs(30);

fn deploy_file(name: &str) -> String {
    let path = format!("{}/deploy/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Every `shipwatch_…` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("shipwatch_") {
        let starts_a_name = !rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if starts_a_name {
            names.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// The names of the samples on a `/metrics` page (`_sum` and `_count` of a summary included).
fn served_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("/metrics answers");
    assert_eq!(response.status(), 200);
    response.text().await.expect("/metrics has a body")
}

#[test]
fn the_dashboard_is_json_and_the_files_name_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(&deploy_file("grafana-dashboard.json"))
        .expect("the dashboard is JSON");
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "the dashboard has panels"
    );
    // The extraction itself: a file full of names that all went unseen would prove nothing.
    assert!(metric_names(&deploy_file("grafana-dashboard.json")).len() >= 8);
    assert!(metric_names(&deploy_file("alerts.yml")).len() >= 5);
    assert_eq!(
        metric_names("up{job=\"shipwatch\"} rate(shipwatch_polls_total[5m]) x_shipwatch_no"),
        BTreeSet::from(["shipwatch_polls_total".to_owned()])
    );
}

/// The daemon polls a parcel, delivers its webhook and is banned by the gateway, so that every
/// counter, gauge and summary it has has been touched; then every metric the dashboard and the
/// alert rules use must be on its `/metrics` page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_served() {
    let port = free_port();
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .tiers("1s", "1s", "1s")
        .section(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .start()
        .await;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let tid = 9_600_000_000_000_000_001u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();

    app.wait_until("a notification is delivered", LIMIT, || {
        !app.receiver.deliveries().is_empty()
    })
    .await;
    app.top.fault(Fault::Ban { seconds: 3_600 }, 1);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let page = loop {
        let page = scrape(&metrics).await;
        if page
            .lines()
            .any(|l| l.starts_with("shipwatch_provider_paused{") && l.ends_with(" 1"))
        {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ban never showed as a paused provider:\n{page}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(daemon.terminate().success(), "{}", daemon.log());

    let served = served_names(&page);
    for file in ["grafana-dashboard.json", "alerts.yml", "alerts.test.yml"] {
        let missing: Vec<String> = metric_names(&deploy_file(file))
            .into_iter()
            .filter(|name| !served.contains(name))
            .collect();
        assert!(
            missing.is_empty(),
            "deploy/{file} uses metrics that /metrics does not serve: {missing:?}\nserved: {served:?}"
        );
    }
}
