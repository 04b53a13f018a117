//! Text written into the shipments table by another program reaches the operator in two places,
//! the daemon's text log and the admin commands' output. CR LF in an order id must not forge a
//! log line, ESC and BEL must not drive the terminal, and one huge id must not blow up `list`.

use std::process::Output;
use std::time::Duration;

use crate::support::app::TestApp;

/// What an attacker would like the operator to read as a line of its own.
const FORGED: &str = "ERROR shipwatch: PROVIDER STOPPED taobao";

/// CR LF and the forged line, then an OSC sequence that would retitle the terminal.
fn hostile_id_sql() -> String {
    format!("'W1' || char(13, 10) || '{FORGED}' || char(27) || ']0;owned' || char(7)")
}

/// The id as the escaped text shows it.
fn hostile_id_shown() -> String {
    format!("W1\\r\\n{FORGED}\\u{{1b}}]0;owned\\u{{7}}")
}

/// Every control character a terminal acts on, except the newlines that end lines.
fn controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect()
}

fn stdout_and_stderr(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_a_row_are_escaped_in_the_log_and_on_the_terminal() {
    let app = TestApp::start().await;
    app.create_database();
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider) VALUES ({}, 'taobao')",
        hostile_id_sql()
    ))
    .await
    .unwrap();
    // A provider name that clears the screen, with a NUL: it shows in `stats` and `show`.
    app.sql(
        "INSERT INTO shipments (order_id, provider) VALUES ('W2', 'tao' || char(27) || '[2J' || char(0) || 'x')",
    )
    .await
    .unwrap();

    let mut daemon = app.spawn_daemon();
    app.wait_until(
        "both rows are judged invalid",
        Duration::from_secs(30),
        || daemon.log().matches("shipment invalid").count() >= 2,
    )
    .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let log = daemon.log();
    assert_eq!(controls(&log), Vec::<char>::new(), "{log:?}");
    assert!(
        !log.lines().any(|line| line.starts_with(FORGED)),
        "a forged line: {log}"
    );
    let escaped = hostile_id_shown();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shipment invalid") && l.contains(&escaped))
        .collect();
    assert_eq!(lines.len(), 1, "one escaped line for W1: {log}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);

    let listed = app.json(&["list", "--json"]);
    let id = listed
        .iter()
        .find_map(|s| s["order_id"].as_str().filter(|id| id.starts_with("W1")))
        .unwrap()
        .to_owned();
    assert!(id.contains('\u{1b}'), "--json keeps the value whole");
    for args in [
        vec!["list"],
        vec!["show", id.as_str()],
        vec!["show", "W2"],
        vec!["stats"],
        vec!["outbox"],
        // An error that repeats what it was given.
        vec!["show", "nope\u{1b}]0;x\u{7}"],
    ] {
        let out = app.cli(&args);
        let text = stdout_and_stderr(&out);
        assert_eq!(controls(&text), Vec::<char>::new(), "{args:?}: {text:?}");
        if args[0] == "list" {
            // The column is cut, but what it shows is escaped.
            assert!(text.contains("W1\\r\\nERROR shipwatch: PROVIDER"), "{text}");
            assert!(text.contains("tao\\u{1b}[2J\\0x"), "{text}");
        }
        if args[0] == "show" && args[1] == id {
            assert!(text.contains(&escaped), "{text}");
        }
        if args == ["stats"] {
            assert!(text.contains("tao\\u{1b}[2J\\0x"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_huge_order_id_does_not_blow_up_list() {
    let app = TestApp::start().await;
    app.create_database();
    // 1 MiB of id beside 16 ordinary rows.
    app.sql(
        "INSERT INTO shipments (order_id, provider) VALUES ('BIG' || hex(zeroblob(524288)), 'taobao')",
    )
    .await
    .unwrap();
    let values: Vec<String> = (0..16)
        .map(|i| format!("('{}', 'taobao')", 7_400_000_000_000_000_100u64 + i))
        .collect();
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();

    let list = app.cli_ok(&["list"]);
    assert_eq!(list.lines().count(), 18, "{list}");
    let longest = list.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(longest < 600, "a line of {longest} characters");
    assert!(list.len() < 18 * 600, "{} bytes", list.len());
    assert!(list.contains("BIG000"), "the id starts as it does: {list}");
    assert!(list.contains('…'), "the cut shows: {list}");

    let whole = app.json(&["list", "--json"]);
    assert!(
        whole
            .iter()
            .any(|s| s["order_id"].as_str().unwrap().len() == 3 + (1 << 20)),
        "--json prints the id whole"
    );
}
