//! The dispatcher's rounds and timing, on a real SQLite file and a clock the tests move: when a
//! polled shipment is due again, what a round claims and starts (rate-limited buckets, rows
//! claimed ahead, rows it cannot poll), how claims are kept, and how long an idle round sleeps.

use super::*;
use crate::clock::ManualClock;
use crate::domain::Phone;
use crate::providers::simulator::Simulator;
use crate::storage::{NewShipment, Synchronous};

const NOW: Millis = 1_764_300_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    clock: Arc<ManualClock>,
    dispatcher: Arc<Dispatcher>,
}

/// A dispatcher of one simulated provider, `sim`, whose shipments are polled no more often than
/// `floor`.
async fn fixture(polling: Polling, floor: Duration) -> Fixture {
    let clock = Arc::new(ManualClock::new(NOW));
    let adapter = Simulator::with_clock(Duration::from_secs(2), clock.clone());
    fixture_of(polling, Arc::new(adapter), floor, clock).await
}

/// An adapter that notes each order it is asked about and never answers: its polls stay in their
/// slots.
#[derive(Default)]
struct Asked(std::sync::Mutex<Vec<String>>);

impl Asked {
    fn orders(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl crate::providers::Provider for Asked {
    fn kind(&self) -> &'static str {
        "asked"
    }

    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError> {
        self.0.lock().unwrap().push(request.order_id.clone());
        std::future::pending().await
    }
}

/// A dispatcher whose one provider, `sim`, never answers.
async fn silent() -> Fixture {
    let clock = Arc::new(ManualClock::new(NOW));
    fixture_of(
        no_jitter(),
        Arc::new(Asked::default()),
        Duration::ZERO,
        clock,
    )
    .await
}

async fn fixture_of(
    polling: Polling,
    adapter: Arc<dyn crate::providers::Provider>,
    floor: Duration,
    clock: Arc<ManualClock>,
) -> Fixture {
    let sim = ProviderRuntime::new("sim", adapter, None).with_min_interval(floor);
    fixture_with(polling, vec![sim], clock).await
}

/// A dispatcher of `providers`, on a new database.
async fn fixture_with(
    polling: Polling,
    providers: Vec<ProviderRuntime>,
    clock: Arc<ManualClock>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("dispatch.db"), Synchronous::Normal)
        .await
        .unwrap();
    let dispatcher = Dispatcher::new(
        db.clone(),
        clock.clone(),
        Tiers::default(),
        polling,
        providers
            .into_iter()
            .map(|p| (p.name.clone(), Arc::new(p)))
            .collect(),
        Vec::new(),
        Events::default(),
    );
    Fixture {
        _dir: dir,
        db,
        clock,
        dispatcher,
    }
}

fn no_jitter() -> Polling {
    Polling {
        jitter: 0.0,
        ..Polling::default()
    }
}

/// Claims of `lease`, calls of at most `timeout`, no jitter.
fn leased(lease: Duration, timeout: Duration) -> Polling {
    Polling {
        lease,
        timeout,
        ..no_jitter()
    }
}

fn shipment(order_id: &str) -> NewShipment {
    NewShipment {
        tracking_no: Some("SF1234567890".into()),
        carrier: Some("SF".into()),
        phone: Some(Phone::parse("13800138000").unwrap()),
        sub_orders: Some("1,2".into()),
        ..NewShipment::plain(order_id, "sim")
    }
}

/// Adds `order_id`, due at `due`.
async fn due_at(f: &Fixture, order_id: &str, due: Millis) -> ShipmentRow {
    let row = f.db.add_shipment(&shipment(order_id), due).await.unwrap();
    assert_eq!(row.next_poll_at, due);
    row
}

#[tokio::test]
async fn the_next_poll_is_the_tier_interval_spread_by_the_jitter() {
    let f = fixture(no_jitter(), Duration::ZERO).await;
    let tiers = Tiers::default();
    for tier in Tier::ALL {
        let interval = millis(tiers.interval(tier));
        assert_eq!(
            f.dispatcher.next_poll_at(NOW, tier),
            NOW + interval,
            "{tier}"
        );
    }

    // ±10% of the high tier's 2 minutes: 108 s to 132 s, spread over the whole span.
    let f = fixture(Polling::default(), Duration::ZERO).await;
    let next: Vec<Millis> = (0..200)
        .map(|_| f.dispatcher.next_poll_at(NOW, Tier::High) - NOW)
        .collect();
    assert!(
        next.iter().all(|ms| (108_000..=132_000).contains(ms)),
        "{next:?}"
    );
    assert!(next.iter().any(|ms| *ms < 114_000), "{next:?}");
    assert!(next.iter().any(|ms| *ms > 126_000), "{next:?}");
    f.db.close().await;
}

#[tokio::test]
async fn a_providers_floor_holds_back_a_poll_its_tier_would_make_sooner() {
    let f = fixture(no_jitter(), Duration::from_secs(600)).await;
    let sim = f.dispatcher.provider("sim").unwrap();
    assert_eq!(
        f.dispatcher.next_poll_for(&sim, NOW, Tier::High),
        NOW + 600_000
    );
    // A floor under the tier's interval changes nothing.
    let f = fixture(no_jitter(), Duration::from_secs(1)).await;
    let sim = f.dispatcher.provider("sim").unwrap();
    assert_eq!(
        f.dispatcher.next_poll_for(&sim, NOW, Tier::High),
        NOW + 120_000
    );
    assert!(f.dispatcher.provider("dhl").is_none());
    f.db.close().await;
}

#[tokio::test]
async fn a_claim_is_renewed_for_its_lease_and_never_less_than_a_polls_timeout() {
    let polling = leased(Duration::from_secs(10), Duration::from_secs(30));
    let f = fixture(polling, Duration::ZERO).await;
    assert_eq!(f.dispatcher.claim_lease(), Duration::from_secs(30));
    let long = fixture(no_jitter(), Duration::ZERO).await;
    assert_eq!(long.dispatcher.claim_lease(), Duration::from_secs(300));
    long.db.close().await;

    due_at(&f, "1001", NOW).await;
    let held = NOW + 10_000;
    let claimed = f.db.claim_due_shipments(NOW, held, &[], 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    f.clock.advance(Duration::from_secs(5));
    let renewed = f.dispatcher.renew_claim(claimed[0].id, held).await.unwrap();
    assert_eq!(renewed, Some(NOW + 35_000));
    // The claim held until `held` is gone once renewed: another renewal of it finds nothing.
    assert_eq!(
        f.dispatcher.renew_claim(claimed[0].id, held).await.unwrap(),
        None
    );
    f.db.close().await;
}

#[tokio::test]
async fn an_idle_round_sleeps_until_the_next_due_shipment_within_the_scan_interval() {
    let f = fixture(no_jitter(), Duration::ZERO).await;
    let idle = || f.dispatcher.idle_wait();
    // Nothing to poll: one scan interval, to find rows inserted from outside.
    assert_eq!(idle().await, Duration::from_secs(1));

    due_at(&f, "1001", NOW + 400).await;
    assert_eq!(idle().await, Duration::from_millis(400));
    // A watchdog's cap is shorter still.
    f.dispatcher.cap_idle_wait(Duration::from_millis(150));
    assert_eq!(idle().await, Duration::from_millis(150));
    f.dispatcher.cap_idle_wait(Duration::from_secs(60));
    // Due now, or overdue yet not claimed (the slots are busy): a short nap, not a spin.
    f.clock.set(NOW + 400);
    assert_eq!(idle().await, Duration::from_millis(10));
    f.clock.set(NOW + 3_000);
    assert_eq!(idle().await, Duration::from_millis(10));

    // A paused provider's shipments are not waited for.
    let sim = f.dispatcher.provider("sim").unwrap();
    sim.pause_until(NOW + 60_000, NOW + 3_000);
    assert_eq!(idle().await, Duration::from_secs(1));
    f.db.close().await;

    // A shipment due beyond the scan interval waits for the next scan.
    let f = fixture(no_jitter(), Duration::ZERO).await;
    due_at(&f, "1002", NOW + 5_000).await;
    assert_eq!(f.dispatcher.idle_wait().await, Duration::from_secs(1));
    f.db.close().await;
}

#[tokio::test]
async fn an_adapter_is_asked_about_the_shipment_as_stored() {
    let f = fixture(no_jitter(), Duration::ZERO).await;
    let row = due_at(&f, "1001", NOW).await;
    assert_eq!(
        track_request(&row),
        TrackRequest {
            order_id: "1001".into(),
            tracking_no: Some("SF1234567890".into()),
            carrier: Some("SF".into()),
            phone: Some(Phone::parse("13800138000").unwrap()),
            sub_orders: Some("1,2".into()),
            created_at: NOW,
        }
    );
    assert_eq!(f.dispatcher.polls_in_flight(), 0);
    f.db.close().await;
}

/// Waits (at most 10 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "still waiting for {what}");
}

#[tokio::test]
async fn a_poll_is_in_flight_until_its_answer_comes() {
    let f = silent().await;
    due_at(&f, "1001", NOW).await;
    due_at(&f, "1002", NOW).await;
    assert_eq!(f.dispatcher.step().await.unwrap(), 2);
    until("two polls in flight", || {
        f.dispatcher.polls_in_flight() == 2
    })
    .await;
    f.db.close().await;
}

#[tokio::test]
async fn the_running_dispatcher_beats_its_heartbeat_and_gives_back_a_poll_cut_short_at_its_stop() {
    let f = silent().await;
    due_at(&f, "1001", NOW).await;
    let heartbeat = f.dispatcher.heartbeat();
    assert_eq!(heartbeat.age(), None);
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        f.dispatcher
            .clone()
            .run(stop.clone(), Grace::new(Duration::ZERO)),
    );
    until("a round", || heartbeat.beats() > 0).await;
    stop.cancel();
    running.await.unwrap();
    // The poll that never came back was cut short and its shipment given back, due at once.
    let row = f.db.shipment("1001").await.unwrap();
    assert_eq!(row.next_poll_at, NOW);
    assert_eq!(row.last_polled_at, None);
    f.db.close().await;
}

/// A provider allowed one call in ten minutes: within the default 5 min lease, one poll at a
/// time may wait for its bucket.
fn one_in_ten_minutes(name: &str, adapter: Arc<Asked>) -> ProviderRuntime {
    let quota = crate::config::RateLimit {
        calls: 1,
        per: Duration::from_secs(600),
    };
    ProviderRuntime::new(name, adapter, Some(quota))
}

async fn add(f: &Fixture, order_id: &str, provider: &str, due: Millis) {
    let shipment = NewShipment::plain(order_id, provider);
    f.db.add_shipment(&shipment, due).await.unwrap();
}

/// The orders another daemon would claim at `at` (claimed for it, so: last in a test).
async fn claimable(f: &Fixture, at: Millis) -> Vec<String> {
    let rows =
        f.db.claim_due_shipments(at, at + 1, &[], 100)
            .await
            .unwrap();
    let mut orders: Vec<String> = rows.into_iter().map(|row| row.order_id).collect();
    orders.sort();
    orders
}

#[tokio::test]
async fn a_rate_limited_provider_starts_no_more_polls_than_its_bucket_lets_wait() {
    let asked = Arc::new(Asked::default());
    let polling = Polling {
        concurrency: 4,
        ..no_jitter()
    };
    let clock = Arc::new(ManualClock::new(NOW));
    let f = fixture_with(
        polling,
        vec![one_in_ten_minutes("slow", asked.clone())],
        clock,
    )
    .await;
    for order_id in ["1", "2", "3"] {
        add(&f, order_id, "slow", NOW).await;
    }
    // Four free slots, three due shipments, room for one in the bucket: one poll starts, and
    // the other two stay claimed ahead rather than wait in slots beyond their claims.
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    assert_eq!(f.dispatcher.polls_in_flight(), 1);
    until("the first poll's call", || asked.orders().len() == 1).await;
    // All three are this daemon's for a lease: no other daemon takes them before it ends, and
    // any may after.
    let lease = millis(Polling::default().lease);
    assert_eq!(claimable(&f, NOW + lease - 1).await, Vec::<String>::new());
    assert_eq!(claimable(&f, NOW + lease).await, ["1", "2", "3"]);
    f.db.close().await;
}

#[tokio::test]
async fn shipments_held_for_a_full_bucket_leave_the_free_slots_to_other_providers() {
    let (slow, fast) = (Arc::new(Asked::default()), Arc::new(Asked::default()));
    let polling = Polling {
        concurrency: 3,
        ..no_jitter()
    };
    let clock = Arc::new(ManualClock::new(NOW));
    let providers = vec![
        one_in_ten_minutes("slow", slow.clone()),
        ProviderRuntime::new("fast", fast.clone(), None),
    ];
    let f = fixture_with(polling, providers, clock).await;
    for (order_id, due) in [("1", NOW - 3), ("2", NOW - 2), ("3", NOW - 1)] {
        add(&f, order_id, "slow", due).await;
    }
    add(&f, "9", "fast", NOW + 1_000).await;
    add(&f, "10", "fast", NOW + 1_001).await;

    // The first of the three has its call at once; the other two stay claimed ahead.
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    until("the first call", || slow.orders() == ["1"]).await;
    // The second starts and waits in the bucket for its turn, ten minutes on; the bucket has no
    // room for the third.
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    assert_eq!(f.dispatcher.polls_in_flight(), 2);
    // Two of another provider's shipments fall due: the one free slot is the first's, while
    // the third waits.
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    until("the other provider's call", || fast.orders() == ["9"]).await;
    assert_eq!(f.dispatcher.polls_in_flight(), 3);
    assert_eq!(slow.orders(), ["1"]);
    f.db.close().await;
}

#[tokio::test]
async fn a_round_whose_claimed_ahead_shipments_fill_its_free_slots_claims_no_more() {
    let polling = Polling {
        concurrency: 3,
        ..no_jitter()
    };
    let f = fixture(polling, Duration::ZERO).await;
    let orders = ["1", "2", "3", "4", "5", "6", "7", "8", "9"];
    for (n, order_id) in (0..).zip(orders) {
        due_at(&f, order_id, NOW - 10 + n).await;
    }
    // The first round polls three, oldest first, and claims a round of slots ahead.
    assert_eq!(f.dispatcher.run_once().await.unwrap(), 3);
    // The second polls those three and claims nothing more: the last three stay anyone's.
    assert_eq!(f.dispatcher.run_once().await.unwrap(), 3);
    let mut polled = Vec::new();
    for order_id in orders {
        let row = f.db.shipment(order_id).await.unwrap();
        if row.last_polled_at.is_some() {
            polled.push(order_id);
        }
    }
    assert_eq!(polled, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(claimable(&f, NOW).await, ["7", "8", "9"]);
    f.db.close().await;
}

#[tokio::test]
async fn a_shipment_of_a_provider_the_config_lacks_is_flagged_and_revived_once_it_is_added() {
    let f = silent().await;
    let mut events = f.dispatcher.events.subscribe();
    add(&f, "1", "dhl", NOW).await;
    // Taken up, not polled: flagged with what is wrong and how to fix it.
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    assert_eq!(f.dispatcher.polls_in_flight(), 0);
    let row = f.db.shipment("1").await.unwrap();
    assert!(!row.active);
    let reason = row.error.unwrap();
    assert_eq!(
        reason,
        "unknown provider \"dhl\": configured providers are sim; fix the row or add \
         [providers.dhl] to the config"
    );
    match events.try_recv() {
        Ok(PipelineEvent::ShipmentInvalid {
            order_id,
            reason: told,
        }) => assert_eq!((order_id.as_str(), told), ("1", reason)),
        other => panic!("expected the row flagged, got {other:?}"),
    }
    assert_eq!(f.dispatcher.revive_known_providers().await.unwrap(), 0);

    // The reloaded config defines it: the row is tracked again, and polled.
    let asked = Arc::new(Asked::default());
    let dhl = ProviderRuntime::new("dhl", asked.clone(), None);
    let providers = BTreeMap::from([("dhl".to_owned(), Arc::new(dhl))]);
    f.dispatcher.replace_providers(providers).await.unwrap();
    assert_eq!(f.dispatcher.revive_known_providers().await.unwrap(), 1);
    let row = f.db.shipment("1").await.unwrap();
    assert!(row.active);
    assert_eq!(row.error, None);
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    until("the call", || asked.orders() == ["1"]).await;
    f.db.close().await;
}

#[tokio::test]
async fn a_poll_whose_claim_would_end_within_its_timeout_renews_the_claim_before_calling() {
    // A 10 s lease under a 30 s timeout: the claim would run out while the call may still be
    // waiting for its answer, and another daemon would poll the shipment too.
    let polling = leased(Duration::from_secs(10), Duration::from_secs(30));
    let asked = Arc::new(Asked::default());
    let clock = Arc::new(ManualClock::new(NOW));
    let f = fixture_of(polling, asked.clone(), Duration::ZERO, clock).await;
    due_at(&f, "1", NOW).await;
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    until("the call", || asked.orders() == ["1"]).await;
    // Renewed for the timeout before the call went out.
    assert_eq!(claimable(&f, NOW + 29_999).await, Vec::<String>::new());
    assert_eq!(claimable(&f, NOW + 30_000).await, ["1"]);
    f.db.close().await;
}

#[tokio::test]
async fn a_poll_waiting_for_its_buckets_turn_keeps_its_claim() {
    // One call in ten minutes and a 1 s lease: the second poll waits far longer than its claim.
    let polling = leased(Duration::from_secs(1), Duration::from_secs(1));
    let asked = Arc::new(Asked::default());
    let clock = Arc::new(ManualClock::new(NOW));
    let f = fixture_with(
        polling,
        vec![one_in_ten_minutes("slow", asked.clone())],
        clock,
    )
    .await;
    add(&f, "1", "slow", NOW - 1).await;
    add(&f, "2", "slow", NOW).await;
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    until("the first call", || asked.orders() == ["1"]).await;
    assert_eq!(f.dispatcher.step().await.unwrap(), 1);
    // Five seconds on, the waiting poll's claim is renewed for a lease from then.
    f.clock.advance(Duration::from_secs(5));
    let id = f.db.shipment("2").await.unwrap().id;
    let renewed = NOW + 6_000;
    let kept = tokio::time::timeout(Duration::from_secs(10), async {
        // Renewing a claim for the end it has already tells whether it has that end.
        while !f
            .db
            .renew_shipment_claim(id, renewed, renewed)
            .await
            .unwrap()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(kept.is_ok(), "the waiting poll's claim was not renewed");
    assert_eq!(asked.orders(), ["1"]);
    f.db.close().await;
}
