//! The dispatcher driven one round at a time on a clock the test moves: tiers, terminal
//! statuses and provider bans, in milliseconds instead of hours.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shipwatch::clock::{Clock, ManualClock};
use shipwatch::config::{Polling, Synchronous, Tiers};
use shipwatch::dispatch::{Dispatcher, ProviderRuntime};
use shipwatch::domain::{Status, Tier};
use shipwatch::events::Events;
use shipwatch::notify::{ChannelKind, ChannelRule};
use shipwatch::providers::simulator::Simulator;
use shipwatch::providers::{Provider, ProviderError, Trace, TrackRequest};
use shipwatch::storage::{Db, NewShipment};

const T0: i64 = 1_800_000_000_000;
const MINUTE: Duration = Duration::from_secs(60);

/// A provider that reports every parcel in transit, or the errors it is told to, and counts
/// the calls per order.
#[derive(Default)]
struct Counting {
    calls: Mutex<HashMap<String, usize>>,
    errors: Mutex<Vec<ProviderError>>,
}

impl Counting {
    fn calls(&self, order_id: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .get(order_id)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl Provider for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }

    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(request.order_id.clone())
            .or_default() += 1;
        if let Some(error) = self.errors.lock().unwrap().pop() {
            return Err(error);
        }
        Ok(Trace {
            status: Status::InTransit,
            raw_status: "物流公司揽收成功".to_owned(),
            events: Vec::new(),
            carrier: None,
            tracking_no: None,
            unmapped: Vec::new(),
        })
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    db: Db,
    clock: Arc<ManualClock>,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.db"), Synchronous::Normal)
            .await
            .unwrap();
        Harness {
            _dir: dir,
            db,
            clock: Arc::new(ManualClock::new(T0)),
        }
    }

    fn dispatcher(&self, name: &str, provider: Arc<dyn Provider>) -> Arc<Dispatcher> {
        let mut providers = BTreeMap::new();
        providers.insert(
            name.to_owned(),
            Arc::new(ProviderRuntime::new(name, provider, None)),
        );
        Dispatcher::new(
            self.db.clone(),
            self.clock.clone(),
            Tiers::default(),
            Polling {
                jitter: 0.0,
                ..Polling::default()
            },
            providers,
            vec![ChannelRule::new(ChannelKind::Webhook, Status::ALL.to_vec())],
            Events::default(),
        )
    }

    async fn add(&self, order_id: &str, provider: &str, tier: Tier) {
        let new = NewShipment {
            order_id: order_id.to_owned(),
            provider: provider.to_owned(),
            tracking_no: None,
            carrier: None,
            tier,
            phone: None,
            email: None,
            openid: None,
            sub_orders: None,
        };
        self.db.add_shipment(&new, self.clock.now()).await.unwrap();
    }
}

#[tokio::test]
async fn each_tier_is_polled_at_its_own_interval() {
    let h = Harness::new().await;
    let provider = Arc::new(Counting::default());
    let dispatcher = h.dispatcher("p", provider.clone());
    h.add("high", "p", Tier::High).await;
    h.add("normal", "p", Tier::Normal).await;
    h.add("low", "p", Tier::Low).await;

    // One simulated hour, one round a minute; defaults are 2m, 10m and 1h.
    for _ in 0..60 {
        dispatcher.run_once().await.unwrap();
        h.clock.advance(MINUTE);
    }
    assert_eq!(provider.calls("high"), 30);
    assert_eq!(provider.calls("normal"), 6);
    assert_eq!(provider.calls("low"), 1);

    let high = h.db.shipment("high").await.unwrap();
    assert_eq!(high.next_poll_at, T0 + 60 * 60_000);
    assert_eq!(high.last_polled_at, Some(T0 + 58 * 60_000));
    // Only the first poll changed the status; the others wrote nothing but poll times.
    assert_eq!(high.status_changed_at, Some(T0));
    assert_eq!(high.transitions, 1);
}

#[tokio::test]
async fn nothing_is_polled_before_it_is_due() {
    let h = Harness::new().await;
    let provider = Arc::new(Counting::default());
    let dispatcher = h.dispatcher("p", provider.clone());
    h.add("a", "p", Tier::High).await;
    assert_eq!(dispatcher.run_once().await.unwrap(), 1);
    h.clock.advance(2 * MINUTE - Duration::from_millis(1));
    assert_eq!(dispatcher.run_once().await.unwrap(), 0);
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(dispatcher.run_once().await.unwrap(), 1);
}

#[tokio::test]
async fn a_delivered_parcel_is_never_polled_again() {
    let h = Harness::new().await;
    // One step of the journey per high-tier interval, on the test's clock.
    let simulator = Simulator::with_clock(2 * MINUTE, h.clock.clone());
    let dispatcher = h.dispatcher("sim", Arc::new(simulator));
    h.add("DEMO-1000", "sim", Tier::High).await;
    let mut polls = 0;
    for _ in 0..200 {
        polls += dispatcher.run_once().await.unwrap();
        h.clock.advance(MINUTE);
    }
    assert_eq!(
        polls, 5,
        "info_received, picked_up, in_transit, out_for_delivery, delivered"
    );
    let row = h.db.shipment("DEMO-1000").await.unwrap();
    assert_eq!(row.status, Status::Delivered);
    assert!(!row.active);
    let outbox = h.db.list_notifications(None, Some(row.id)).await.unwrap();
    assert_eq!(outbox.len(), 5);
}

#[tokio::test]
async fn a_ban_pauses_the_provider_for_its_full_length_even_across_a_restart() {
    let h = Harness::new().await;
    let provider = Arc::new(Counting::default());
    provider
        .errors
        .lock()
        .unwrap()
        .push(ProviderError::RateLimited {
            retry_after: Duration::from_secs(300),
            message: "This ban will last for 300 more seconds".to_owned(),
        });
    let dispatcher = h.dispatcher("p", provider.clone());
    h.add("a", "p", Tier::High).await;
    dispatcher.run_once().await.unwrap();
    assert_eq!(provider.calls("a"), 1);

    // Due again after the high tier's 2 minutes, but banned for 5.
    h.clock.advance(Duration::from_secs(299));
    assert_eq!(dispatcher.run_once().await.unwrap(), 0);

    // A restart reads the ban back from the database.
    let restarted = h.dispatcher("p", provider.clone());
    restarted.load_bans().await.unwrap();
    assert_eq!(restarted.run_once().await.unwrap(), 0);
    assert_eq!(provider.calls("a"), 1);

    h.clock.advance(Duration::from_secs(1));
    assert_eq!(restarted.run_once().await.unwrap(), 1);
    assert_eq!(provider.calls("a"), 2);
}

#[tokio::test]
async fn a_transient_failure_keeps_the_schedule_and_shows_the_error() {
    let h = Harness::new().await;
    let provider = Arc::new(Counting::default());
    provider
        .errors
        .lock()
        .unwrap()
        .push(ProviderError::Transient("HTTP 502 from gateway".to_owned()));
    let dispatcher = h.dispatcher("p", provider.clone());
    h.add("a", "p", Tier::High).await;
    dispatcher.run_once().await.unwrap();
    let row = h.db.shipment("a").await.unwrap();
    assert!(row.active);
    assert!(row.error.as_deref().unwrap().contains("502"));
    assert_eq!(row.next_poll_at, T0 + 2 * 60_000);
    h.clock.advance(2 * MINUTE);
    dispatcher.run_once().await.unwrap();
    let row = h.db.shipment("a").await.unwrap();
    assert_eq!(row.error, None, "a successful poll clears the error");
    assert_eq!(row.status, Status::InTransit);
}

#[tokio::test]
async fn a_permanent_failure_or_an_unknown_provider_stops_only_that_shipment() {
    let h = Harness::new().await;
    let provider = Arc::new(Counting::default());
    provider
        .errors
        .lock()
        .unwrap()
        .push(ProviderError::Permanent("TOP error 41 bad tid".to_owned()));
    let dispatcher = h.dispatcher("p", provider.clone());
    h.add("bad", "p", Tier::High).await;
    h.add("lost", "dhl", Tier::High).await;
    dispatcher.run_once().await.unwrap();
    h.add("good", "p", Tier::High).await;
    dispatcher.run_once().await.unwrap();

    let bad = h.db.shipment("bad").await.unwrap();
    assert!(!bad.active);
    assert!(bad.error.unwrap().contains("41"));
    let lost = h.db.shipment("lost").await.unwrap();
    assert!(!lost.active);
    assert!(lost.error.unwrap().contains("unknown provider \"dhl\""));
    assert_eq!(provider.calls("lost"), 0);
    let good = h.db.shipment("good").await.unwrap();
    assert_eq!(good.status, Status::InTransit);
}

#[tokio::test]
async fn jitter_spreads_the_next_polls() {
    let h = Harness::new().await;
    let mut providers = BTreeMap::new();
    providers.insert(
        "p".to_owned(),
        Arc::new(ProviderRuntime::new(
            "p",
            Arc::new(Counting::default()),
            None,
        )),
    );
    let dispatcher = Dispatcher::new(
        h.db.clone(),
        h.clock.clone(),
        Tiers::default(),
        Polling::default(),
        providers,
        Vec::new(),
        Events::default(),
    );
    let times: Vec<i64> = (0..1000)
        .map(|_| dispatcher.next_poll_at(T0, Tier::Normal) - T0)
        .collect();
    let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    assert!(
        min >= 540_000 && max <= 660_000,
        "within ±10% of 10 minutes: {min}..{max}"
    );
    assert!(max - min > 60_000, "actually spread: {min}..{max}");
}

#[tokio::test]
async fn a_provider_floor_holds_whatever_the_tier() {
    let h = Harness::new().await;
    let provider = Arc::new(Counting::default());
    let mut providers = BTreeMap::new();
    // Kuaidi100 locks a waybill asked about more often than every 30 minutes.
    providers.insert(
        "kd".to_owned(),
        Arc::new(
            ProviderRuntime::new("kd", provider.clone(), None)
                .with_min_interval(Duration::from_secs(30 * 60)),
        ),
    );
    let dispatcher = Dispatcher::new(
        h.db.clone(),
        h.clock.clone(),
        Tiers::default(),
        Polling {
            jitter: 0.0,
            ..Polling::default()
        },
        providers,
        Vec::new(),
        Events::default(),
    );
    h.add("high", "kd", Tier::High).await;
    for _ in 0..120 {
        dispatcher.run_once().await.unwrap();
        h.clock.advance(MINUTE);
    }
    assert_eq!(
        provider.calls("high"),
        4,
        "at 0, 30, 60 and 90 minutes, not every 2"
    );
}
