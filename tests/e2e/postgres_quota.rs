//! A provider's `rate_limit` held by several daemons together on one PostgreSQL database: each
//! daemon's bucket takes small grants of slots from the provider's schedule in the database
//! (`Db::quota_grant`). Three handles on one database, each driving its own bucket at full
//! demand, stay within the quota together and use nearly all of it; the grant itself answers
//! the same on both engines. Without PostgreSQL installed these tests fail, saying so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shipwatch::limiter::Limiter;
use shipwatch::storage::DbQuota;
use shipwatch::storage::{Db, Location, QuotaGrant, Synchronous};

use crate::support::postgres::PgDatabase;

async fn open(location: &str) -> Db {
    let location = Location::parse(location).unwrap();
    Db::open(location, Synchronous::Normal).await.unwrap()
}

/// Two grants in a row and one for another provider, as (slots ahead of the server's now at
/// the grant, slot count, spacing, gap between the grants' first slots).
async fn grants(db: &Db) -> Vec<(bool, u32, Duration, i64)> {
    let interval = Duration::from_micros(20_400);
    let a: QuotaGrant = db.quota_grant("top", interval, 5).await.unwrap();
    let b = db.quota_grant("top", interval, 0).await.unwrap();
    let other = db.quota_grant("kuaidi100", interval, 2).await.unwrap();
    [(a, 0), (b, b.first_slot_us - a.first_slot_us), (other, 0)]
        .into_iter()
        .map(|(g, gap)| (g.first_slot_us > g.server_now_us, g.count, g.interval, gap))
        .collect()
}

#[tokio::test]
async fn a_grant_answers_the_same_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let lite = open(dir.path().join("quota.db").to_str().unwrap()).await;
    let pg = PgDatabase::create().await;
    let shared = open(&pg.url).await;
    let on_sqlite = grants(&lite).await;
    let on_postgres = grants(&shared).await;
    // The first grant starts now; the second follows the first's five slots at once, the
    // schedule being ahead of the clock; a count of 0 is one slot; providers keep apart.
    let interval = Duration::from_micros(20_400);
    assert_eq!(
        on_sqlite,
        [
            (false, 5, interval, 0),
            (true, 1, interval, 5 * 20_400),
            (false, 2, interval, 0),
        ]
    );
    assert_eq!(on_postgres, on_sqlite);
    lite.close().await;
    shared.close().await;
}

/// Calls a second the quota allows in the test below.
const RATE: usize = 20;
const RUN: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_keep_to_one_quota_together_and_use_it() {
    let pg = PgDatabase::create().await;
    let start = Instant::now();
    let calls = Arc::new(Mutex::new(Vec::<(usize, Duration)>::new()));
    let mut tasks = Vec::new();
    let mut dbs = Vec::new();
    for daemon in 0..3 {
        let db = open(&pg.url).await;
        let limiter = Limiter::new(Some(Duration::from_secs(1) / RATE as u32))
            .with_window(Duration::from_secs(1));
        limiter.share(Arc::new(DbQuota::new(db.clone(), "top")));
        let limiter = Arc::new(limiter);
        dbs.push(db);
        // Eight polls always waiting on each daemon's bucket.
        for _ in 0..8 {
            let (limiter, calls) = (limiter.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                while start.elapsed() < RUN {
                    limiter.acquire().await;
                    calls.lock().unwrap().push((daemon, start.elapsed()));
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut calls: Vec<_> = calls
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|(_, at)| *at < RUN)
        .collect();
    calls.sort_by_key(|(_, at)| *at);
    // As the gateway counts them: no second holds more calls than the quota.
    for (i, (_, t)) in calls.iter().enumerate() {
        let in_window = calls[i..]
            .iter()
            .take_while(|(_, u)| *u - *t < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= RATE,
            "{in_window} calls within a second from {t:?}: {calls:?}"
        );
    }
    let allowed = RATE as f64 * RUN.as_secs_f64();
    let used = calls.len() as f64 / allowed;
    // Sharing must not waste the quota: turns lost between the daemons left most of it unused
    // (a bucket whose late turns were dropped sent almost nothing). The bucket itself keeps 2%
    // back, and a turn its timer wakes too late for (a loaded machine) is dropped rather than
    // crowded into the next: 87.5% was seen with builds running beside the test, so the bound
    // is three quarters, well clear of both.
    eprintln!("quota use: {used:.3}");
    assert!(
        used >= 0.75,
        "{} calls in {RUN:?} where the quota allows {allowed}: {used:.3}",
        calls.len()
    );
    // Every daemon had its share of the calls.
    for daemon in 0..3 {
        let own = calls.iter().filter(|(d, _)| *d == daemon).count();
        assert!(
            own as f64 >= allowed / 6.0,
            "daemon {daemon} made {own} calls"
        );
    }
    for db in dbs {
        db.close().await;
    }
}
