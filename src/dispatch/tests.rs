//! The dispatcher's timing, on a real SQLite file and a clock the tests move: when a polled
//! shipment is due again, how long a claim is renewed for, and how long an idle round sleeps.

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

/// An adapter whose answer never comes.
struct Silent;

#[async_trait::async_trait]
impl crate::providers::Provider for Silent {
    fn kind(&self) -> &'static str {
        "silent"
    }

    async fn fetch(&self, _: &TrackRequest) -> Result<Trace, ProviderError> {
        std::future::pending().await
    }
}

/// A dispatcher whose one provider, `sim`, never answers.
async fn silent() -> Fixture {
    let clock = Arc::new(ManualClock::new(NOW));
    fixture_of(no_jitter(), Arc::new(Silent), Duration::ZERO, clock).await
}

async fn fixture_of(
    polling: Polling,
    adapter: Arc<dyn crate::providers::Provider>,
    floor: Duration,
    clock: Arc<ManualClock>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("dispatch.db"), Synchronous::Normal)
        .await
        .unwrap();
    let sim = ProviderRuntime::new("sim", adapter, None).with_min_interval(floor);
    let dispatcher = Dispatcher::new(
        db.clone(),
        clock.clone(),
        Tiers::default(),
        polling,
        BTreeMap::from([("sim".to_owned(), Arc::new(sim))]),
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
    let polling = Polling {
        lease: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
        ..no_jitter()
    };
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
