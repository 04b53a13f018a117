//! Three daemons on one PostgreSQL database (issue 17), as the gateway, the receiver and the
//! database see them: together they stay within the provider's quota, never poll a shipment
//! twice within its tier interval, and announce each change once and in order; when one dies
//! with `kill -9`, the shipments it held are polled by the others within one lease and nothing
//! is lost.
//!
//! Daemon 0, the one that dies, signs its calls with `hmac` and the others with `hmac-sha256`,
//! so that the fake gateway tells its calls apart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::Connection;

use crate::support::app::{Engine, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::fake_top::{self, Call, Fault};

const DAEMONS: usize = 3;
const SHIPMENTS: u64 = 2_000;
/// `rate_limit` of the provider, for all daemons together.
const QUOTA_PER_SECOND: usize = 250;
/// Every tier's interval: the first polls spread over one interval (`SPREAD`), so that the
/// daemons poll about 170 shipments a second, below the quota, and a shipment given back by the
/// dead daemon does not queue behind a backlog.
const TIER: Duration = Duration::from_secs(12);
const SPREAD_MS: u64 = 12_000;
/// `[polling] lease`: how long a claim holds before another daemon may take the shipment.
const LEASE: Duration = Duration::from_secs(5);
/// Clock granularity and millisecond rounding between two polls of one shipment.
const TOLERANCE: Duration = Duration::from_millis(500);
/// After the lease: the next scan (200 ms) and a loaded machine.
const TAKEOVER_SLACK: Duration = Duration::from_secs(3);
/// How the dying daemon signs, where the others use `hmac-sha256`.
const DOOMED_SIGN: &str = "hmac";
/// The stall that keeps some of the dying daemon's polls in flight when it is killed (below
/// `[polling] timeout`, 5 s, so that the live daemons' stalled polls end in a 504).
const STALL_MS: u64 = 4_000;

fn tid(i: u64) -> u64 {
    7_800_000_000_000_000_000 + i
}

/// Three steps of the standard journey: picked up, out for delivery, delivered.
fn bodies(tid: u64) -> Vec<String> {
    let journey = fake_top::journey_bodies(tid);
    vec![journey[1].clone(), journey[3].clone(), journey[4].clone()]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn doomed(call: &Call) -> bool {
    call.sign_method.as_deref() == Some(DOOMED_SIGN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_the_work_the_quota_and_the_outbox_and_survive_a_kill() {
    let app = TestApp::builder()
        .provider(Provider::top().rate_limit(&format!("{QUOTA_PER_SECOND}/s")))
        .channel(Channel::webhook())
        .tiers("12s", "12s", "12s")
        .engine(Engine::Postgres)
        .start()
        .await;
    app.edit_config(|text| {
        text.replacen(
            "lease = \"10s\"\n",
            &format!("lease = \"{}s\"\n", LEASE.as_secs()),
            1,
        )
    });
    for i in 0..SHIPMENTS {
        app.top.script(tid(i), bodies(tid(i)));
    }
    app.create_database();
    app.sql(&format!(
        "INSERT INTO shipments (order_id, provider, tier, next_poll_at) \
         SELECT ({}::bigint + g)::text, 'taobao', 'high', \
                floor(extract(epoch FROM now()) * 1000)::bigint + g * {} \
         FROM generate_series(0, {}) AS g",
        tid(0),
        SPREAD_MS / SHIPMENTS,
        SHIPMENTS - 1
    ))
    .await
    .expect("2,000 shipments inserted in one statement");

    let mut daemons = app.spawn_daemons_with(DAEMONS, |i, config| {
        if i == 0
            && let Some(toml::Value::Table(providers)) = config.get_mut("providers")
            && let Some(toml::Value::Table(taobao)) = providers.get_mut("taobao")
        {
            taobao.insert("sign_method".to_owned(), DOOMED_SIGN.into());
        }
    });

    // Mid-run: some of daemon 0's polls held at the gateway, then kill -9.
    wait_for(
        "a third of the polls have reached the gateway",
        Duration::from_secs(60),
        || app.top.call_count() >= SHIPMENTS as usize,
    )
    .await;
    let all_doomed = app.top.calls().iter().filter(|c| doomed(c)).count();
    assert!(
        all_doomed > 0,
        "daemon 0 polled nothing: the daemons do not share the work\n{}",
        daemons[0].log()
    );
    app.top.fault(Fault::Stall { millis: STALL_MS }, 30);
    wait_for(
        "one of daemon 0's polls is held at the gateway",
        Duration::from_secs(10),
        || {
            app.top
                .calls()
                .iter()
                .any(|c| c.answered == "stall" && doomed(c))
        },
    )
    .await;
    daemons[0].kill9();
    let killed_at = Instant::now();
    let killed_ms = now_ms();
    let claimed_at_kill: BTreeSet<u64> = claimed_shipments(&app).await;

    let deadline = Instant::now() + Duration::from_secs(180);
    while !all_done(&app).await {
        assert!(
            Instant::now() < deadline,
            "not every shipment was delivered and announced within 180 s\n{}\n{}",
            daemons[1].log(),
            daemons[2].log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A little longer: a stray poll or a second delivery would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for daemon in &mut daemons[1..] {
        assert!(daemon.terminate().success(), "{}", daemon.log());
    }

    let calls = app.top.calls();
    assert_eq!(
        app.top.signature_failures(),
        0,
        "{:?}",
        app.top.rejections()
    );
    assert!(
        calls
            .iter()
            .all(|c| c.answered == "trace" || c.answered == "stall"),
        "only traces and the stalls the test asked for: {:?}",
        calls
            .iter()
            .filter(|c| c.answered != "trace" && c.answered != "stall")
            .collect::<Vec<_>>()
    );

    // The quota holds over all daemons as the gateway counts: no window of the quota's length
    // (a second) sees more calls than it allows.
    for (i, call) in calls.iter().enumerate() {
        let in_window = calls[i..]
            .iter()
            .take_while(|c| c.at.duration_since(call.at) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= QUOTA_PER_SECOND,
            "{in_window} calls within a second after call {i}: the daemons together \
             exceeded the {QUOTA_PER_SECOND}/s quota"
        );
    }

    // No shipment polled twice within its tier interval, by whichever daemons. The one
    // exception is a poll daemon 0 made and never committed: its shipment is polled again
    // once the lease is over.
    let mut polls: HashMap<u64, Vec<&Call>> = HashMap::new();
    for call in &calls {
        if let Some(tid) = call.tid {
            polls.entry(tid).or_default().push(call);
        }
    }
    assert_eq!(polls.len(), SHIPMENTS as usize, "every shipment was polled");
    for (tid, seen) in &polls {
        for pair in seen.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let given_back = doomed(a) && a.at <= killed_at && b.at > killed_at;
            // A stall the test injected is a failed poll (504), not a trace read: the tier
            // interval counts between reads.
            let given_back = given_back || a.answered == "stall";
            let gap = b.at.duration_since(a.at);
            assert!(
                given_back || gap + TOLERANCE >= TIER,
                "order {tid} was polled twice {gap:?} apart, within its {TIER:?} tier: {seen:?}"
            );
        }
    }

    // The dead daemon's work: the shipments it held when it died (claimed in the database and
    // last called by daemon 0, or claimed and not called yet). Each is polled by another daemon
    // within one lease of the kill.
    let last_before_kill = |tid: u64| -> Option<&Call> {
        polls
            .get(&tid)
            .and_then(|seen| seen.iter().rev().find(|c| c.at <= killed_at).copied())
    };
    let held: Vec<u64> = claimed_at_kill
        .iter()
        .copied()
        .filter(|tid| match last_before_kill(*tid) {
            Some(call) => doomed(call) || killed_at.duration_since(call.at) + TOLERANCE >= TIER,
            None => true,
        })
        .collect();
    let stalled: BTreeSet<u64> = calls
        .iter()
        .filter(|c| c.answered == "stall" && doomed(c) && c.at <= killed_at)
        .filter(|c| killed_at.duration_since(c.at) < Duration::from_millis(STALL_MS))
        .filter_map(|c| c.tid)
        .collect();
    assert!(!stalled.is_empty(), "daemon 0 held no stalled poll");
    for tid in &stalled {
        assert!(
            claimed_at_kill.contains(tid),
            "order {tid} was being polled by daemon 0 when it died, yet not claimed in the \
             database: {claimed_at_kill:?}"
        );
    }
    for tid in &held {
        let next = polls[tid]
            .iter()
            .find(|c| c.at > killed_at)
            .unwrap_or_else(|| {
                panic!("order {tid}, held by the dead daemon, was never polled again")
            });
        assert!(
            !doomed(next),
            "order {tid} polled by the dead daemon after the kill?"
        );
        let after = next.at.duration_since(killed_at);
        assert!(
            after <= LEASE + TAKEOVER_SLACK,
            "order {tid}, held by the dead daemon, was taken over {after:?} after the kill \
             (lease {LEASE:?})"
        );
    }
    eprintln!(
        "daemon 0 held {} shipments when killed ({} of them stalled at the gateway); \
         {} calls in all, killed at {killed_ms} ms",
        held.len(),
        stalled.len(),
        calls.len()
    );

    // In the database: one row per committed change, each sent, each shipment's changes linking
    // up from `pending` to `delivered` with no gap and no repeat. (An answer served to daemon 0
    // just before it died was never committed, so the next poll may skip a step.)
    let outbox = app.outbox(None);
    let mut chains: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for n in &outbox {
        assert_eq!(n["state"], "sent", "{n}");
        chains
            .entry(n["order_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push((
                n["previous_status"].as_str().unwrap_or_default().to_owned(),
                n["status"].as_str().unwrap_or_default().to_owned(),
            ));
    }
    assert_eq!(chains.len(), SHIPMENTS as usize, "every shipment announced");
    for (order, chain) in &chains {
        assert_chain(order, chain);
    }
    let queued: BTreeSet<String> = outbox
        .iter()
        .map(|n| n["webhook_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(queued.len(), outbox.len(), "one webhook-id per row");

    // At the receiver: every queued change exactly once, in order per shipment. A delivery the
    // dead daemon had in flight may arrive again under the same id (receivers deduplicate on
    // it); nothing else arrives twice.
    let deliveries = app.receiver.deliveries();
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    let mut arrived: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for d in deliveries.iter().filter(|d| d.answered == 200) {
        assert!(d.verified, "a delivery failed verification: {d:?}");
        if let Some(first) = first_seen.get(&d.webhook_id) {
            assert!(
                *first <= killed_at && killed_at.duration_since(*first) < LEASE,
                "webhook {} was delivered twice, not around the kill",
                d.webhook_id
            );
            continue;
        }
        first_seen.insert(d.webhook_id.clone(), d.at);
        let data = &d.body["data"];
        arrived
            .entry(data["order_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push((
                data["previous_status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                data["status"].as_str().unwrap_or_default().to_owned(),
            ));
    }
    assert_eq!(
        first_seen.keys().cloned().collect::<BTreeSet<_>>(),
        queued,
        "the receiver got exactly the queued changes"
    );
    for (order, chain) in &arrived {
        assert_chain(order, chain);
    }
}

/// A shipment's changes link up from `pending` to `delivered`: none lost, none repeated, none
/// out of order.
fn assert_chain(order: &str, chain: &[(String, String)]) {
    let mut at = "pending";
    for (from, to) in chain {
        assert_eq!(
            from, at,
            "order {order}: a change was lost, repeated or out of order: {chain:?}"
        );
        at = to;
    }
    assert_eq!(at, "delivered", "order {order}: {chain:?}");
}

/// The shipments claimed in the database right now, as TOP order ids.
async fn claimed_shipments(app: &TestApp) -> BTreeSet<u64> {
    let pg = app.pg.as_ref().expect("the app is on PostgreSQL");
    let mut conn = pg.connect().await;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT order_id FROM shipments WHERE claimed_until IS NOT NULL AND active = 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("the claimed shipments");
    conn.close().await.ok();
    rows.iter().filter_map(|id| id.parse().ok()).collect()
}

async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every shipment delivered and every notification sent, as the database says.
async fn all_done(app: &TestApp) -> bool {
    let undelivered = app
        .sql_count("SELECT count(*) FROM shipments WHERE status <> 'delivered'")
        .await;
    let unsent = app
        .sql_count("SELECT count(*) FROM notifications WHERE state <> 'sent'")
        .await;
    undelivered == Ok(0) && unsent == Ok(0)
}

/// Two daemons, one slow quota they share: each poll waits for its turn behind the other
/// daemon's, longer than a claim lasts (`rate_limit = "60/min"`, a turn about a second apart,
/// against `[polling] lease = "1500ms"`). A claim that ran out while its poll waited was taken
/// by the other daemon, and the shipment polled twice, spending the quota twice on one answer.
/// Now a poll keeps its claim while it waits (renewed as it would run out), and every shipment
/// is polled once. Before that, a poll renewed its claim only once its turn came, and gave the
/// call (and the turn) up when the other daemon had taken the shipment meanwhile: no shipment
/// was polled twice, but turns of the quota went to waste.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_outwaits_its_claim_is_not_made_twice_by_two_daemons() {
    const ORDERS: u64 = 8;
    let app = TestApp::builder()
        .provider(Provider::top().rate_limit("60/min"))
        .channel(Channel::webhook())
        .tiers("1h", "1h", "1h")
        .engine(Engine::Postgres)
        .start()
        .await;
    app.edit_config(|text| text.replacen("lease = \"10s\"\n", "lease = \"1500ms\"\n", 1));
    app.create_database();
    for i in 0..ORDERS {
        app.top.journey(tid(9_000 + i));
        app.cli_ok(&["add", &tid(9_000 + i).to_string(), "--tier", "high"]);
    }
    let mut daemons = app.spawn_daemons(2);
    wait_for("every order polled", Duration::from_secs(60), || {
        let polled: BTreeSet<u64> = app.top.calls().iter().filter_map(|c| c.tid).collect();
        polled.len() == ORDERS as usize
    })
    .await;
    // Long enough for a second poll of a shipment whose claim ran out to reach the gateway.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for daemon in &mut daemons {
        assert!(daemon.terminate().success(), "{}", daemon.log());
    }
    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for call in app.top.calls() {
        *times.entry(call.tid.unwrap_or_default()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "polled more than once: {twice:?}");
    // The two daemons take their turns from one schedule, a second apart: each pacing alone
    // would have made the eight calls in about half the time.
    let at: Vec<Instant> = app.top.calls().iter().map(|c| c.at).collect();
    let span = *at.iter().max().unwrap() - *at.iter().min().unwrap();
    assert!(
        span >= Duration::from_secs(5),
        "{} calls in {span:?}: the daemons did not share the quota",
        at.len()
    );
    for daemon in &daemons {
        let log = daemon.log();
        assert!(
            !log.contains("poll left to the daemon that took the shipment over"),
            "a claim was lost while its poll waited:\n{log}"
        );
    }
}
