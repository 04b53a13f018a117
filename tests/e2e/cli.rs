//! The command line's own edges: argument mistakes answered with clap's whole message (usage,
//! what is missing, what was meant), the `list` filters, `poll --json`, `set-tier`, and the
//! completions and man page, which need neither a config nor a database.

use std::process::{Output, Stdio};

use serde_json::Value;

use crate::support::app::{Engine, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::{on_both_engines, shipwatch};

/// The binary run in `dir` with no `$SHIPWATCH_CONFIG` and no credentials: it finds a config
/// as `dir/shipwatch.toml` or not at all (a test machine has no /etc/shipwatch).
fn bare(dir: &std::path::Path, args: &[&str]) -> Output {
    bare_with(dir, args, &[])
}

/// [`bare`] with these variables set.
fn bare_with(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    shipwatch()
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("shipwatch runs")
}

/// Without `--config`, `$SHIPWATCH_CONFIG` names the config file; set but empty, it counts as
/// unset and `./shipwatch.toml` is read.
#[test]
fn the_config_is_the_one_shipwatch_config_names_and_an_empty_name_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("elsewhere.toml");
    std::fs::write(&named, "[tiers]\nhigh = \"3m\"\n").unwrap();
    std::fs::write(
        dir.path().join("shipwatch.toml"),
        "[tiers]\nhigh = \"4m\"\n",
    )
    .unwrap();
    let check = |value: &str| {
        bare_with(
            dir.path(),
            &["check-config"],
            &[("SHIPWATCH_CONFIG", value)],
        )
    };
    let out = check(named.to_str().unwrap());
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("config {} is valid", named.display())) && said.contains("high 3m"),
        "{said}"
    );
    let out = check("");
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("shipwatch.toml is valid") && said.contains("high 4m"),
        "{said}"
    );
}

/// `check-config` names each provider with its kind and its quota, as the operator wrote them.
#[test]
fn check_config_names_each_provider_with_its_kind_and_quota() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shipwatch.toml"),
        "[providers.shop]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret = \"s\"\nsession = \"s\"\nrate_limit = \"500/min\"\n\
         [providers.b2b]\nkind = \"alibaba1688\"\napp_key = \"1\"\napp_secret = \"s\"\naccess_token = \"t\"\n\
         [providers.kd]\nkind = \"kuaidi100\"\ncustomer = \"C1\"\nkey = \"k\"\nrate_limit = \"10/s\"\n\
         [providers.demo]\nkind = \"simulator\"\n",
    )
    .unwrap();
    let out = bare(dir.path(), &["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    for line in [
        "  provider  shop (taobao, rate limit 500/1m)",
        "  provider  b2b (alibaba1688, no rate limit)",
        "  provider  kd (kuaidi100, rate limit 10/1s)",
        "  provider  demo (simulator, no rate limit)",
    ] {
        assert!(said.lines().any(|l| l == line), "{line:?} in\n{said}");
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts an argument mistake: exit status 2, nothing on stdout, and on stderr clap's usage or
/// its pointer to `--help` (a bad value gets the values there are instead of the usage); returns
/// stderr.
fn usage_error(what: &str, out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: exit status 2; {err}");
    assert!(out.stdout.is_empty(), "{what}: nothing on stdout");
    assert!(
        err.contains("Usage: shipwatch") || err.contains("For more information, try '--help'."),
        "{what}: the usage or the way to it: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_argument_is_named_with_the_usage() {
    let app = TestApp::start().await;

    let err = usage_error("add", &app.cli(&["add"]));
    assert!(
        err.contains("the following required arguments were not provided")
            && err.contains("<ORDER_ID>"),
        "{err}"
    );
    assert!(err.contains("Usage: shipwatch add"), "{err}");

    let err = usage_error("retry", &app.cli(&["retry"]));
    assert!(err.contains("<IDS>"), "{err}");

    let err = usage_error("set-tier A-1", &app.cli(&["set-tier", "A-1"]));
    assert!(err.contains("<TIER>"), "{err}");

    let err = usage_error("test-notify", &app.cli(&["test-notify"]));
    assert!(err.contains("--channel <CHANNEL>"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_subcommand_gets_clap_s_suggestion() {
    let app = TestApp::start().await;
    let err = usage_error("lst", &app.cli(&["lst"]));
    assert!(err.contains("unrecognized subcommand 'lst'"), "{err}");
    assert!(err.contains("a similar subcommand exists: 'list'"), "{err}");
}

#[test]
fn bare_shipwatch_prints_the_help_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = bare(dir.path(), &[]);
    let err = usage_error("bare shipwatch", &out);
    assert!(err.contains("Commands:"), "{err}");
    assert!(err.contains("list") && err.contains("set-tier"), "{err}");
    assert!(!err.starts_with("error:"), "help, not an error: {err}");

    // --help and --version are answers, not mistakes.
    let out = bare(dir.path(), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("Usage: shipwatch"),
        "{}",
        stdout(&out)
    );
    assert!(out.stderr.is_empty());
    let out = bare(dir.path(), &["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("shipwatch "), "{}", stdout(&out));
}

#[test]
fn tier_and_status_help_list_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let out = bare(dir.path(), &["list", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    assert!(
        help.contains("[possible values: high, normal, low]"),
        "{help}"
    );
    assert!(
        help.contains(
            "[possible values: pending, info_received, picked_up, in_transit, out_for_delivery, \
             available_for_pickup, failed_attempt, exception, returned, delivered, expired]"
        ),
        "{help}"
    );
    let out = bare(dir.path(), &["set-tier", "--help"]);
    assert!(
        stdout(&out).contains("[possible values: high, normal, low]"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tier_or_status_names_the_valid_ones() {
    let app = TestApp::start().await;
    let err = usage_error(
        "add --tier urgent",
        &app.cli(&["add", "44", "--tier", "urgent"]),
    );
    assert!(
        err.contains("invalid value 'urgent' for '--tier <TIER>'"),
        "{err}"
    );
    assert!(
        err.contains("[possible values: high, normal, low]"),
        "{err}"
    );
    let err = usage_error("set-tier", &app.cli(&["set-tier", "44", "urgent"]));
    assert!(
        err.contains("[possible values: high, normal, low]"),
        "{err}"
    );
    let err = usage_error(
        "list --status lost",
        &app.cli(&["list", "--status", "lost"]),
    );
    assert!(
        err.contains("'lost'") && err.contains("in_transit"),
        "{err}"
    );
    // A mistake after parsing is still one line of our own.
    app.cli_ok(&["add", "44"]);
    let out = app.cli(&["add", "44"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_eq!(app.shipments().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_value_in_an_argument_mistake_is_escaped() {
    let app = TestApp::start().await;
    let out = app.cli(&["add", "45", "--tier", "high\r\u{202e}wol"]);
    let err = usage_error("add --tier with a CR", &out);
    assert!(
        !err.contains('\r') && !err.contains('\u{202e}'),
        "no control characters reach the terminal: {err:?}"
    );
    assert!(err.contains("high\\r\\u{202e}wol"), "shown escaped: {err}");
}

fn orders(listed: &[Value]) -> Vec<String> {
    listed
        .iter()
        .map(|s| s["order_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_provider_status_tier_since_and_limit() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .provider(Provider::simulator())
        .channel(Channel::webhook())
        .start()
        .await;
    app.cli_ok(&["add", "1001", "--provider", "taobao", "--tier", "high"]);
    app.cli_ok(&["add", "1002", "--provider", "taobao"]);
    app.cli_ok(&["add", "SIM-1000", "--provider", "sim", "--tier", "high"]);
    app.cli_ok(&["add", "SIM-1004", "--provider", "sim", "--tier", "low"]);
    // 1001 moved a day ago; 1002 was added three days ago and never moved; the rest are new.
    let day = 86_400_000i64;
    app.sql(&format!(
        "UPDATE shipments SET status = 'in_transit', transitions = 1, \
         status_changed_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - {day}, \
         created_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - 5 * {day} \
         WHERE order_id = '1001'"
    ))
    .await
    .unwrap();
    app.sql(&format!(
        "UPDATE shipments SET created_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - 3 * {day} \
         WHERE order_id = '1002'"
    ))
    .await
    .unwrap();

    let list = |args: &[&str]| {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        orders(&app.json(&all))
    };
    assert_eq!(list(&[]), ["1001", "1002", "SIM-1000", "SIM-1004"]);
    assert_eq!(list(&["--provider", "sim"]), ["SIM-1000", "SIM-1004"]);
    assert_eq!(list(&["--provider", "nowhere"]), Vec::<String>::new());
    assert_eq!(list(&["--tier", "high"]), ["1001", "SIM-1000"]);
    assert_eq!(list(&["--status", "in_transit"]), ["1001"]);
    assert_eq!(
        list(&["--provider", "taobao", "--status", "pending"]),
        ["1002"]
    );
    assert_eq!(list(&["--since", "2h"]), ["SIM-1000", "SIM-1004"]);
    assert_eq!(list(&["--since", "2d"]), ["1001", "SIM-1000", "SIM-1004"]);
    assert_eq!(
        list(&["--since", "4d"]),
        ["1001", "1002", "SIM-1000", "SIM-1004"]
    );
    assert_eq!(list(&["--since", "2000-01-01T00:00:00Z"]).len(), 4);
    assert_eq!(list(&["--since", "2999-01-01T00:00:00+08:00"]).len(), 0);
    assert_eq!(list(&["--limit", "2"]), ["1001", "1002"]);
    assert_eq!(
        list(&["--tier", "high", "--since", "2d", "--limit", "1"]),
        ["1001"]
    );

    // The table takes the same filters.
    let table = app.cli_ok(&["list", "--provider", "sim", "--limit", "1"]);
    assert!(
        table.contains("SIM-1000") && !table.contains("SIM-1004"),
        "{table}"
    );
    assert!(!table.contains("1001"), "{table}");

    let err = usage_error("--since soon", &app.cli(&["list", "--since", "soon"]));
    assert!(
        err.contains("'soon'") && err.contains("RFC 3339") && err.contains("2h"),
        "{err}"
    );
    let err = usage_error("--limit 0", &app.cli(&["list", "--limit", "0"]));
    assert!(err.contains("--limit"), "{err}");
    let help = app.cli_ok(&["list", "--help"]);
    assert!(help.contains("[default: all]"), "{help}");
}

/// An admin command's answer is its printout: on stderr it logs only what asks for action
/// (warnings and errors) unless `RUST_LOG` asks for more, as the daemon logs at info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_logs_only_warnings_unless_rust_log_asks_for_more() {
    let app = TestApp::start().await;
    let tid = 8_000_000_000_000_000_103u64;
    app.top.journey(tid);
    let tid = tid.to_string();
    app.cli_ok(&["add", &tid]);

    let quiet = app
        .command(&["poll", &tid, "--apply"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(
        stdout(&quiet).contains("info_received"),
        "{}",
        stdout(&quiet)
    );
    assert_eq!(stderr(&quiet), "", "no log line at the default level");

    // The same command at info tells of the change it recorded: the default kept it quiet.
    let told = app.cli_with_env(&["poll", &tid, "--apply"], &[("RUST_LOG", "info")]);
    assert!(told.status.success(), "{}", stderr(&told));
    assert!(
        stderr(&told).contains("status changed"),
        "{}",
        stderr(&told)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_json_shows_the_answer_and_what_apply_did() {
    let app = TestApp::start().await;
    let tid = 8_000_000_000_000_000_101u64;
    app.top.journey(tid);
    app.cli_ok(&["add", &tid.to_string()]);
    let before = std::fs::read(&app.db).unwrap();

    let out = app.cli_ok(&["poll", &tid.to_string(), "--json"]);
    let polled: Value = serde_json::from_str(&out).expect("poll --json prints JSON");
    assert_eq!(polled["order_id"], tid.to_string());
    assert_eq!(polled["provider"], "taobao");
    assert_eq!(polled["provider_kind"], "taobao");
    assert_eq!(polled["tier"], "normal");
    assert_eq!(polled["stored_status"], "pending");
    assert_eq!(polled["answer"]["status"], "info_received");
    assert_eq!(polled["answer"]["raw_status"], "物流公司已接单");
    assert!(polled["answer"]["events"].is_array(), "{polled}");
    assert_eq!(polled["error"], Value::Null);
    assert_eq!(polled["would_change"], "status");
    assert_eq!(polled["recorded"], Value::Null);
    assert_eq!(
        std::fs::read(&app.db).unwrap(),
        before,
        "poll --json without --apply changes nothing"
    );

    let out = app.cli_ok(&["poll", &tid.to_string(), "--json", "--apply"]);
    let polled: Value = serde_json::from_str(&out).expect("poll --json prints JSON");
    assert_eq!(polled["answer"]["status"], "picked_up");
    let events = polled["answer"]["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{polled}");
    assert_eq!(events[0]["time"], "2026-11-20T08:00:01+08:00");
    assert!(
        events[0]["description"]
            .as_str()
            .unwrap()
            .contains("已揽收")
    );
    assert_eq!(events[0]["raw_code"], "GOT");
    assert_eq!(polled["would_change"], "status");
    let recorded = &polled["recorded"];
    assert_eq!(recorded["outcome"], "recorded");
    assert_eq!(recorded["status_change"]["from"], "pending");
    assert_eq!(recorded["status_change"]["to"], "picked_up");
    assert_eq!(recorded["new_events"], events.len());
    assert_eq!(recorded["notifications_queued"], 1);
    assert_eq!(app.shipments()[0]["status"], "picked_up");

    // The same answer again (the journey's second, picked up) would change nothing.
    app.top.script(
        tid,
        vec![crate::support::fake_top::journey_bodies(tid)[1].clone()],
    );
    let out = app.cli_ok(&["poll", &tid.to_string(), "--json"]);
    let polled: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(polled["stored_status"], "picked_up");
    assert_eq!(polled["would_change"], "nothing", "{polled}");

    // A failed poll is still one object, with the error; the exit status says it failed.
    app.top.fault(crate::support::fake_top::Fault::Http(502), 1);
    let out = app.cli(&["poll", &tid.to_string(), "--json", "--apply"]);
    assert_eq!(out.status.code(), Some(1));
    let polled: Value = serde_json::from_slice(&out.stdout).expect("JSON on a failed poll too");
    assert_eq!(polled["answer"], Value::Null);
    assert!(
        polled["error"].as_str().unwrap().contains("502"),
        "{polled}"
    );
    assert_eq!(polled["would_change"], Value::Null);
    assert_eq!(polled["recorded"]["outcome"], "failure_recorded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("poll of order") && err.contains("failed"),
        "{err}"
    );
}

on_both_engines!(set_tier_moves_an_order_and_brings_its_next_poll_forward);

/// `set-tier` moves an order to another tier, and its next poll comes on the new tier's
/// interval from now, never later than it was already due: a low order polled a moment ago (next
/// poll an hour away) moved to high is polled within the minute, and moved back to low keeps
/// that sooner poll. An order that is not tracked is named, with a non-zero exit.
async fn set_tier_moves_an_order_and_brings_its_next_poll_forward(engine: Engine) {
    let app = TestApp::builder()
        .provider(Provider::top())
        .tiers("1m", "10m", "1h")
        .engine(engine)
        .start()
        .await;
    let tid = 8_000_000_000_000_000_102u64.to_string();
    app.top.journey(tid.parse().unwrap());
    app.cli_ok(&["add", &tid, "--tier", "low"]);
    app.cli_ok(&["poll", &tid, "--apply"]);
    let shown = |app: &TestApp| {
        let shipment = app.shipment(&tid)["shipment"].clone();
        let next = shipment["next_poll_at"].as_str().unwrap();
        let next = chrono::DateTime::parse_from_rfc3339(next).unwrap();
        (shipment["tier"].as_str().unwrap().to_owned(), next)
    };
    let start = chrono::Utc::now();
    let (tier, polled) = shown(&app);
    assert_eq!(tier, "low");
    assert!(polled > start + chrono::Duration::minutes(50), "{polled}");

    let said = app.cli_ok(&["set-tier", &tid, "high"]);
    assert!(
        said.contains(&format!("order {tid} is now tier high")),
        "{said}"
    );
    let (tier, moved) = shown(&app);
    assert_eq!(tier, "high");
    assert!(moved >= start, "{moved}");
    assert!(
        moved <= chrono::Utc::now() + chrono::Duration::minutes(1),
        "{moved}"
    );

    app.cli_ok(&["set-tier", &tid, "low"]);
    assert_eq!(
        shown(&app),
        ("low".to_owned(), moved),
        "moved back, it keeps the sooner poll"
    );

    let out = app.cli(&["set-tier", "8000000000000000999", "high"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "error: no shipment with order id 8000000000000000999"
    );
}

#[test]
fn completions_and_the_man_page_need_no_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = bare(dir.path(), &["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bash = stdout(&out);
    assert!(bash.contains("_shipwatch()"), "a bash function");
    for sub in [
        "list",
        "show",
        "set-tier",
        "test-notify",
        "completions",
        "man",
    ] {
        assert!(bash.contains(sub), "bash completion offers {sub}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = bare(dir.path(), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("set-tier"), "{shell}");
    }
    let err = usage_error(
        "completions tcsh",
        &bare(dir.path(), &["completions", "tcsh"]),
    );
    assert!(err.contains("[possible values: bash"), "{err}");

    let out = bare(dir.path(), &["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let man = stdout(&out);
    assert!(man.starts_with(".TH shipwatch 1"), "{man}");
    assert!(
        man.contains(".SH SUBCOMMANDS") || man.contains(".SH COMMANDS"),
        "{man}"
    );
    for sub in ["list", "show", "set\\-tier", "poll", "completions"] {
        assert!(
            man.contains(&format!("shipwatch\\-{sub}")),
            "the man page names {sub}"
        );
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was written"
    );
}

on_both_engines!(long_listings_go_a_page_at_a_time_and_print_every_row_once);

/// `list` and `outbox` read and print 1,000 rows at a time, so a listing of a million starts at
/// once and holds one page in memory. Across the pages of 2,345 shipments and their 2,368
/// notifications every row is printed once and in order, `--limit` counts across pages, and on
/// SQLite a row that cannot be read (a status no shipwatch writes, put there with the CHECK
/// constraints off) is left out while the rows after it, on its page and the next, still come.
/// So are more than a page of pending notifications, read from their index.
async fn long_listings_go_a_page_at_a_time_and_print_every_row_once(engine: Engine) {
    let app = TestApp::builder()
        .provider(Provider::simulator())
        .channel(Channel::webhook())
        .engine(engine)
        .start()
        .await;
    app.create_database();
    let shipments = 2_345;
    app.sql(&format!(
        "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {shipments}) \
         INSERT INTO shipments (order_id, provider, status, active, transitions) \
         SELECT 'P' || i, 'sim', 'delivered', 0, 2 FROM n"
    ))
    .await
    .unwrap();
    // A sent webhook for each, and a dead one more for every hundredth.
    app.sql(
        "INSERT INTO notifications (public_id, shipment_id, transition, channel, \
             previous_status, status, payload, state, next_attempt_at, created_at, sent_at) \
         SELECT 'msg_' || id, id, 1, 'webhook', 'pending', 'in_transit', '{}', 'sent', \
             1764000000000, 1764000000000, 1764000000000 FROM shipments",
    )
    .await
    .unwrap();
    app.sql(
        "INSERT INTO notifications (public_id, shipment_id, transition, channel, \
             previous_status, status, payload, state, next_attempt_at, created_at) \
         SELECT 'dead_' || s.id, s.id, 2, 'webhook', 'in_transit', 'delivered', '{}', 'dead', \
             1764000000000, 1764000000000 FROM shipments s \
         WHERE CAST(substr(s.order_id, 2) AS INTEGER) % 100 = 0",
    )
    .await
    .unwrap();
    let mut expected: Vec<String> = (1..=shipments).map(|i| format!("P{i}")).collect();
    if engine == Engine::Sqlite {
        app.sql(
            "PRAGMA ignore_check_constraints = ON; \
             UPDATE shipments SET status = 'lost' WHERE order_id = 'P1500'",
        )
        .await
        .unwrap();
        expected.retain(|order| order != "P1500");
    }

    let listed = orders(&app.json(&["list", "--json"]));
    assert_eq!(listed.len(), expected.len());
    assert!(listed == expected, "not every shipment once and in order");
    let table = app.cli_ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + expected.len(), "{:?}", &lines[..3]);
    assert!(lines[0].starts_with("ORDER"), "{}", lines[0]);
    let first_column: Vec<&str> = lines[1..]
        .iter()
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    assert!(first_column == expected, "the table's orders");
    let limited = orders(&app.json(&["list", "--json", "--limit", "1500"]));
    assert!(
        limited == expected[..1500],
        "--limit 1500: {:?}",
        limited.last()
    );

    let ids = |listed: &[Value]| -> Vec<i64> {
        listed.iter().map(|n| n["id"].as_i64().unwrap()).collect()
    };
    let all = ids(&app.json(&["outbox", "--json"]));
    let stored: Vec<i64> = app
        .sql_column("SELECT id FROM notifications ORDER BY id")
        .await
        .unwrap();
    assert_eq!(all.len(), shipments + shipments / 100);
    assert!(all == stored, "not every notification once and in order");
    let dead = app.json(&["outbox", "--state", "dead", "--json"]);
    assert_eq!(dead.len(), shipments / 100);
    assert!(dead.iter().all(|n| n["state"] == "dead"), "{dead:?}");
    // A row that waits for no attempt shows no next attempt.
    assert!(
        dead.iter().all(|n| n["next_attempt_at"].is_null()),
        "{dead:?}"
    );
    let table = app.cli_ok(&["outbox"]);
    assert_eq!(table.lines().count(), 1 + stored.len());
    let show = app.shipment("P2300");
    let shown: Vec<&str> = show["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["sent", "dead"]);

    // `retry --dead` requeues those and no other.
    let out = app.cli_ok(&["retry", "--dead"]);
    assert!(
        out.contains(&format!("requeued {} notification(s)", shipments / 100)),
        "{out}"
    );
    let requeued = app.json(&["outbox", "--state", "pending", "--json"]);
    assert!(
        requeued.iter().all(|n| n["next_attempt_at"].is_string()),
        "{requeued:?}"
    );
    let pending = ids(&requeued);
    assert!(pending == ids(&dead), "{pending:?}");
    assert!(
        app.json(&["outbox", "--state", "dead", "--json"])
            .is_empty()
    );

    // Half the sent ones pending again: more than a page of pending notifications, read from
    // their index while they are few, each once and in order.
    app.sql(
        "UPDATE notifications SET state = 'pending', sent_at = NULL \
         WHERE state = 'sent' AND id % 2 = 0",
    )
    .await
    .unwrap();
    let pending = ids(&app.json(&["outbox", "--state", "pending", "--json"]));
    let stored: Vec<i64> = app
        .sql_column("SELECT id FROM notifications WHERE state = 'pending' ORDER BY id")
        .await
        .unwrap();
    assert!(pending.len() > 1_000, "{}", pending.len());
    assert!(
        pending == stored,
        "not every pending notification once and in order"
    );
}
