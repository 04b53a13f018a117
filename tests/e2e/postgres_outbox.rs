//! Polls, the outbox, the maintenance sweeps and the writer on PostgreSQL (issue 17): the same
//! calls on a SQLite file and on a PostgreSQL database give the same answers and leave the same
//! rows; and on one PostgreSQL database shared by two daemons (two `Db` handles), claims never
//! hand one notification to both, and a shipment's notifications go out one at a time in order.
//! Without PostgreSQL installed these tests fail, saying so.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::TimeZone;
use shipwatch::config::Synchronous;
use shipwatch::domain::Status;
use shipwatch::notify::{ChannelKind, ChannelRule};
use shipwatch::providers::{Trace, TraceEvent, shanghai};
use shipwatch::storage::{
    Db, Decide, Location, NotificationClaim, NotificationKind, OutboxRow, PollCount, PollWrite,
    ShipmentClaim, ShipmentRow, Sweep, SweepWrite,
};
use shipwatch::track::{PollRecord, events_digest};
use sqlx::{Connection, PgConnection, Row, SqliteConnection};

use crate::support::postgres::PgDatabase;

const T0: i64 = 1_800_000_000_000;
const WEBHOOK: [ChannelKind; 1] = [ChannelKind::Webhook];

fn trace(status: Status, events: usize, unmapped: &[&str]) -> Trace {
    Trace {
        status,
        raw_status: format!("raw {}", status.as_str()),
        events: (0..events)
            .map(|i| TraceEvent {
                time: shanghai()
                    .with_ymd_and_hms(2026, 11, 20, 8, i as u32, 0)
                    .unwrap(),
                description: format!("scan {i}"),
                location: Some("杭州市".to_owned()),
                raw_code: Some("ARRIVE".to_owned()),
            })
            .collect(),
        carrier: Some("中通速递".to_owned()),
        tracking_no: Some("ZT123".to_owned()),
        unmapped: unmapped.iter().map(|u| (*u).to_owned()).collect(),
    }
}

fn channels() -> Vec<ChannelRule> {
    vec![ChannelRule::new(ChannelKind::Webhook, Status::ALL.to_vec())]
}

/// A poll as the dispatcher hands it over: owned, decided once the row is read.
struct Owned {
    trace: Trace,
    now: i64,
    channels: Vec<ChannelRule>,
}

impl Decide for Owned {
    fn decide(&self, stored: &ShipmentRow) -> PollWrite<'_> {
        let record = PollRecord {
            now: self.now,
            trace: &self.trace,
            next_poll_at: self.now + 60_000,
            channels: &self.channels,
        };
        shipwatch::track::track(stored, &record, &mut shipwatch::track::new_public_id)
    }
}

fn owned(status: Status, events: usize, now: i64) -> Owned {
    Owned {
        trace: trace(status, events, &[]),
        now,
        channels: channels(),
    }
}

/// One engine under test: the store, and a plain connection to read and seed its rows.
enum Raw {
    Lite(SqliteConnection),
    Pg(PgConnection),
}

struct Engine {
    db: Db,
    raw: Raw,
}

impl Engine {
    async fn sqlite(dir: &tempfile::TempDir) -> Engine {
        let path = dir.path().join("s.db");
        let db = Db::open(&path, Synchronous::Normal).await.unwrap();
        let raw = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        Engine {
            db,
            raw: Raw::Lite(raw),
        }
    }

    async fn postgres(pg: &PgDatabase) -> Engine {
        let db = open_pg(pg).await;
        let raw = PgConnection::connect(&pg.url).await.unwrap();
        Engine {
            db,
            raw: Raw::Pg(raw),
        }
    }

    /// Adds a shipment created at `created_at`, due then. Through SQL, the same on both engines,
    /// so that these tests need only the operations they are about.
    async fn add(&mut self, order_id: &str, created_at: i64) -> i64 {
        match &mut self.raw {
            Raw::Lite(conn) => sqlx::query_scalar(
                "INSERT INTO shipments (order_id, provider, tier, next_poll_at, created_at) \
                 VALUES (?, 'taobao', 'high', ?, ?) RETURNING id",
            )
            .bind(order_id)
            .bind(created_at)
            .bind(created_at)
            .fetch_one(conn)
            .await
            .unwrap(),
            Raw::Pg(conn) => sqlx::query_scalar(
                "INSERT INTO shipments (order_id, provider, tier, next_poll_at, created_at) \
                 VALUES ($1, 'taobao', 'high', $2, $3) RETURNING id",
            )
            .bind(order_id)
            .bind(created_at)
            .bind(created_at)
            .fetch_one(conn)
            .await
            .unwrap(),
        }
    }

    /// The minutes `poll_counts` keeps, oldest first.
    async fn poll_minutes(&mut self) -> Vec<i64> {
        const QUERY: &str = "SELECT DISTINCT minute FROM poll_counts ORDER BY minute";
        match &mut self.raw {
            Raw::Lite(conn) => sqlx::query_scalar(QUERY).fetch_all(conn).await.unwrap(),
            Raw::Pg(conn) => sqlx::query_scalar(QUERY).fetch_all(conn).await.unwrap(),
        }
    }

    /// Every shipment's columns, as text, in id order.
    async fn shipments(&mut self) -> Vec<String> {
        const COLUMNS: &str = "id, order_id, status, raw_status, active, error, transitions, \
             claimed_until, next_poll_at, last_polled_at, last_event_at, status_changed_at, \
             tracking_no, carrier, stalls, stuck_alerted_for, invalid_kind";
        let query = format!("SELECT {COLUMNS} FROM shipments ORDER BY id");
        match &mut self.raw {
            Raw::Lite(conn) => sqlx::query(sqlx::AssertSqlSafe(query))
                .fetch_all(conn)
                .await
                .unwrap()
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| lite_text(row, i))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect(),
            Raw::Pg(conn) => sqlx::query(sqlx::AssertSqlSafe(query))
                .fetch_all(conn)
                .await
                .unwrap()
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| pg_text(row, i))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect(),
        }
    }
}

fn lite_text(row: &sqlx::sqlite::SqliteRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return format!("{v:?}");
    }
    format!("{:?}", row.try_get::<Option<String>, _>(i).unwrap())
}

fn pg_text(row: &sqlx::postgres::PgRow, i: usize) -> String {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return format!("{v:?}");
    }
    format!("{:?}", row.try_get::<Option<String>, _>(i).unwrap())
}

async fn open_pg(pg: &PgDatabase) -> Db {
    Db::open(Location::parse(&pg.url).unwrap(), Synchronous::Normal)
        .await
        .unwrap()
}

fn outbox_row(row: &ShipmentRow, transition: i64, status: Status, at: i64) -> OutboxRow {
    OutboxRow {
        public_id: format!("{}-{}-{transition}", row.order_id, status.as_str()),
        kind: NotificationKind::StatusChanged,
        transition,
        channel: ChannelKind::Webhook,
        previous: row.status,
        status,
        payload: format!("{{\"order\":\"{}\"}}", row.order_id),
        recipient: None,
        skipped: None,
        next_attempt_at: at,
        created_at: at,
    }
}

/// The same calls on either engine; what each answered and what it left, as lines of text
/// (public ids are random, so notifications are told apart by their other columns).
async fn script(e: &mut Engine) -> Vec<String> {
    let mut out = Vec::new();
    let a = e.add("A", T0).await;
    let b = e.add("B", T0).await;
    let c = e.add("C", T0 - 10_000).await;
    let d = e.add("D", T0 + 5).await;
    let db = e.db.clone();

    // Polls one by one, then a batch in which B comes twice (written in two rounds).
    for (id, status, at) in [
        (a, Status::PickedUp, T0),
        (a, Status::InTransit, T0 + 1),
        (a, Status::InTransit, T0 + 2),
        (a, Status::OutForDelivery, T0 + 3),
    ] {
        let r = db.record_poll(id, owned(status, 2, at)).await.unwrap();
        let queued: Vec<_> = r.queued.iter().map(|(channel, _)| *channel).collect();
        out.push(format!(
            "record {id}: {:?} {} {queued:?} {}",
            r.change, r.new_events, r.applied
        ));
    }
    let batch = [
        (b, owned(Status::PickedUp, 1, T0 + 4)),
        (d, owned(Status::Pending, 0, T0 + 4)),
        (b, owned(Status::InTransit, 3, T0 + 5)),
        (999, owned(Status::InTransit, 3, T0 + 5)),
    ];
    let recorded = db.record_polls(&batch).await.unwrap();
    out.push(format!(
        "batch: {:?}",
        recorded
            .iter()
            .map(|r| (r.change, r.new_events, r.queued.len(), r.applied))
            .collect::<Vec<_>>()
    ));
    let unmapped = Owned {
        trace: trace(Status::InTransit, 3, &["X1", "X2", "X1"]),
        now: T0 + 6,
        channels: channels(),
    };
    db.record_poll(b, unmapped).await.unwrap();
    db.record_poll_error(d, "upstream said no", T0 + 7, T0 + 70)
        .await
        .unwrap();
    for id in [a, b, c] {
        let events: Vec<_> = db
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.time, e.description, e.location, e.raw_code))
            .collect();
        out.push(format!("events {id}: {events:?}"));
    }
    // The digest of each shipment's events as last written: A's second poll of the same two
    // events kept it, B's batch wrote a new one with its longer trace, C was never polled.
    let mut digests = Vec::new();
    for order in ["A", "B", "C"] {
        digests.push(db.shipment(order).await.unwrap().events_digest);
    }
    out.push(format!("digests: {digests:?}"));
    assert_eq!(
        digests,
        [
            Some(events_digest(&trace(Status::OutForDelivery, 2, &[]).events)),
            Some(events_digest(&trace(Status::InTransit, 3, &[]).events)),
            None
        ]
    );
    out.push(format!("unmapped: {:?}", {
        let rows = db.unmapped().await.unwrap();
        rows.into_iter()
            .map(|u| (u.provider, u.value, u.count, u.first_seen, u.last_seen))
            .collect::<Vec<_>>()
    }));
    let count = |provider: &str, result: &str, count| PollCount {
        provider: provider.to_owned(),
        result: result.to_owned(),
        count,
    };
    db.add_poll_counts(T0 - 2 * 86_400_000, &[count("taobao", "ok", 100)])
        .await
        .unwrap();
    db.add_poll_counts(T0 - 7_200_000, &[count("taobao", "ok", 50)])
        .await
        .unwrap();
    db.add_poll_counts(T0, &[count("taobao", "ok", 3), count("taobao", "error", 1)])
        .await
        .unwrap();
    db.add_poll_counts(T0 + 60_000, &[count("taobao", "ok", 2)])
        .await
        .unwrap();
    out.push(format!(
        "polls: {:?}",
        db.polls_last_hour(T0 + 120_000).await.unwrap()
    ));
    // The minutes of the last day are kept, older ones forgotten.
    let minutes = e.poll_minutes().await;
    assert_eq!(minutes, [T0 - 7_200_000, T0, T0 + 60_000]);

    // The outbox: the head of each line, one attempt at a time.
    let claim = |at: i64, max_attempts: u32| {
        let db = db.clone();
        async move {
            db.claim_notifications(at, at + 60_000, &WEBHOOK, max_attempts, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|n| (n.id, n.order_id, n.status, n.attempts, n.recipient))
                .collect::<Vec<_>>()
        }
    };
    let first = claim(T0 + 10, 3).await;
    out.push(format!("claim 1: {first:?}"));
    out.push(format!("claim 2: {:?}", claim(T0 + 11, 3).await));
    out.push(format!(
        "next: {:?} {:?}",
        db.next_notification_at(&WEBHOOK).await.unwrap(),
        db.next_notification_at(&[ChannelKind::Sms]).await.unwrap()
    ));
    let (a1, b1) = (first[0].0, first[1].0);
    db.notification_sent(a1, T0 + 12).await.unwrap();
    db.release_notification(b1).await.unwrap();
    let second = claim(T0 + 13, 3).await;
    out.push(format!("claim 3: {second:?}"));
    let a2 = second[0].0;
    // A claim is renewed while it is the one held (a message waiting long for a paced
    // channel's turn), never on a lease it no longer has nor once its message is sent.
    let held = T0 + 13 + 60_000;
    let renew = async |id: i64, held: i64, until: i64| {
        db.renew_notification_claim(id, held, until).await.unwrap()
    };
    out.push(format!(
        "renewed {}, on the old lease {}, once sent {}",
        renew(a2, held, held + 5).await,
        renew(a2, held, held + 9).await,
        renew(a1, T0 + 10 + 60_000, held + 9).await,
    ));
    assert!(
        out.last()
            .unwrap()
            .ends_with("renewed true, on the old lease false, once sent false")
    );
    db.notification_failed(a2, "HTTP 400", None).await.unwrap();
    let third = claim(T0 + 14, 3).await;
    out.push(format!("claim 4: {third:?}"));
    for (id, ..) in &third {
        db.notification_postponed(*id, "no credit", T0 + 1_000)
            .await
            .unwrap();
    }
    // Put off with their leases let go: due again at the time given, the reason kept.
    let postponed: Vec<_> = db
        .list_notifications(Some("pending"), None)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| third.iter().any(|(id, ..)| *id == n.id))
        .map(|n| (n.id, n.last_error, n.next_attempt_at, n.lease_until))
        .collect();
    assert!(
        !postponed.is_empty()
            && postponed.iter().all(|(_, error, at, lease)| {
                error.as_deref() == Some("no credit") && *at == T0 + 1_000 && lease.is_none()
            }),
        "{postponed:?}"
    );
    out.push(format!("postponed: {postponed:?}"));
    let fourth = claim(T0 + 70_000, 3).await;
    out.push(format!("claim 5: {fourth:?}"));
    db.notification_failed(fourth[0].0, "HTTP 503", Some(T0 + 75_000))
        .await
        .unwrap();
    let given: Vec<(i64, i64)> = fourth[1..]
        .iter()
        .map(|(id, ..)| (*id, T0 + 70_000 + 60_000))
        .chain([(a1, 1)])
        .collect();
    // One of them had its start marked: given back unsent, the start is taken back. A start
    // under a claim the row no longer has (the first, failed above) counts nothing.
    let counted = db
        .notifications_started(&[(fourth[1].0, T0 + 130_000), (fourth[0].0, T0 + 130_000)])
        .await
        .unwrap();
    assert_eq!(
        counted,
        [fourth[1].0],
        "counted only under the row's own lease"
    );
    out.push(format!("started: {counted:?}"));
    db.give_back_notifications(&given).await.unwrap();
    db.give_back_notifications(&[]).await.unwrap();
    // A start that comes after its claim was given back counts nothing either.
    let late = db
        .notifications_started(&[(fourth[1].0, T0 + 130_000)])
        .await
        .unwrap();
    assert!(
        late.is_empty(),
        "a start after the give-back counted {late:?}"
    );
    out.push(format!("late start: {late:?}"));
    out.push(format!(
        "given back: {:?}",
        db.list_notifications(Some("pending"), None)
            .await
            .unwrap()
            .iter()
            .map(|n| (n.id, n.attempts, n.cut_short, n.lease_until))
            .collect::<Vec<_>>()
    ));
    let fifth = claim(T0 + 75_000, 2).await;
    out.push(format!("claim 6: {fifth:?}"));
    db.notifications_sent(&[(fifth[0].0, T0 + 75_001)])
        .await
        .unwrap();
    db.notification_undeliverable(fifth[1].0, "blocked")
        .await
        .unwrap();
    // Leases that ran out on the last attempt go dead; the dead are requeued.
    let sixth = claim(T0 + 200_000, 1).await;
    out.push(format!("claim 7: {sixth:?}"));
    let seventh = claim(T0 + 400_000, 1).await;
    out.push(format!("claim 8: {seventh:?}"));
    out.push(format!(
        "requeue some: {:?}",
        db.requeue(Some(&[a1, a2, 12345]), T0 + 500_000)
            .await
            .unwrap()
    ));
    out.push(format!(
        "requeue dead: {:?}",
        db.requeue(None, T0 + 500_000).await.unwrap()
    ));

    // Maintenance.
    let swept = db
        .sweep_shipments(
            Sweep::NeverSeen,
            T0,
            T0 + 600_000,
            10,
            SweepWrite {
                status: Status::Expired,
                raw_status: "never seen upstream",
                stop_polling: true,
            },
            |row, transition| vec![outbox_row(row, transition, Status::Expired, T0 + 600_000)],
        )
        .await
        .unwrap();
    out.push(format!(
        "swept never seen: {:?}",
        swept.iter().map(|r| &r.order_id).collect::<Vec<_>>()
    ));
    let swept = db
        .sweep_shipments(
            Sweep::Quiet,
            T0 + 700_000,
            T0 + 700_000,
            10,
            SweepWrite {
                status: Status::Exception,
                raw_status: "quiet for too long",
                stop_polling: false,
            },
            |row, transition| vec![outbox_row(row, transition, Status::Exception, T0 + 700_000)],
        )
        .await
        .unwrap();
    out.push(format!(
        "swept quiet: {:?}",
        swept
            .iter()
            .map(|r| (&r.order_id, r.status, r.transitions))
            .collect::<Vec<_>>()
    ));
    for round in 0..2 {
        let stuck = db
            .alert_stuck_shipments(
                &[Status::InTransit, Status::Exception],
                T0 + 800_000,
                10,
                |row, stall, quiet_since| {
                    let mut o = outbox_row(row, 1000 + stall, row.status, quiet_since);
                    o.kind = NotificationKind::Stuck;
                    o.public_id = format!("stuck-{}-{stall}", row.order_id);
                    vec![o]
                },
            )
            .await
            .unwrap();
        out.push(format!("stuck {round}: {stuck:?}"));
    }
    out.push(format!(
        "unreachable: {:?}",
        db.unreachable_polls(T0 + 60_004, 10).await.unwrap()
    ));
    out.push(format!(
        "stop: {} {}",
        db.stop_unreachable_poll(b, "too far", T0 + 900_000, T0 + 60_004)
            .await
            .unwrap(),
        db.stop_unreachable_poll(b, "too far", T0 + 900_000, T0 + 60_004)
            .await
            .unwrap()
    ));
    // Attempts cut short: each claim's attempt starts and its lease runs out with no outcome.
    // Each is given back, so every claim offers the same attempt; the tenth gives the message
    // up, saying why.
    for k in 0..11 {
        let at = T0 + 1_000_000 + k * 60_000;
        let claimed = claim(at, 3).await;
        let claims: Vec<(i64, i64)> = claimed.iter().map(|(id, ..)| (*id, at + 60_000)).collect();
        db.notifications_started(&claims).await.unwrap();
        out.push(format!("cut short {k}: {claimed:?}"));
    }
    for n in db.list_notifications(None, None).await.unwrap() {
        out.push(format!(
            "notification {} {} {} {} {}->{} {} attempts {} next {} lease {:?} error {:?} \
             created {} sent {:?}",
            n.id,
            n.order_id,
            n.kind,
            n.channel,
            n.previous_status,
            n.status,
            n.state,
            n.attempts,
            n.next_attempt_at,
            n.lease_until,
            n.last_error,
            n.created_at,
            n.sent_at
        ));
    }
    out.push(format!(
        "dead of A: {:?}",
        db.list_notifications(Some("dead"), Some(a))
            .await
            .unwrap()
            .iter()
            .map(|n| n.id)
            .collect::<Vec<_>>()
    ));
    out.extend(e.shipments().await);
    let db = e.db.clone();
    out.push(format!(
        "prune: {:?}",
        db.prune(T0 + 10_000_000).await.unwrap()
    ));
    out.push(format!(
        "after prune: {} notifications, events of B {}, digests {:?}",
        db.list_notifications(None, None).await.unwrap().len(),
        db.events(b).await.unwrap().len(),
        [
            db.shipment("A").await.unwrap().events_digest,
            db.shipment("B").await.unwrap().events_digest
        ]
    ));
    out
}

#[tokio::test]
async fn polls_the_outbox_and_the_sweeps_answer_the_same_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgDatabase::create().await;
    let mut lite = Engine::sqlite(&dir).await;
    let mut postgres = Engine::postgres(&pg).await;
    let on_sqlite = script(&mut lite).await;
    let on_postgres = script(&mut postgres).await;
    for (line, (l, p)) in on_sqlite.iter().zip(&on_postgres).enumerate() {
        assert_eq!(l, p, "line {line}: SQLite, then PostgreSQL");
    }
    assert_eq!(on_sqlite.len(), on_postgres.len());
    // PostgreSQL keeps its own write-ahead log: nothing to fold, nothing busy.
    let checkpointed = postgres.db.checkpoint().await.unwrap();
    assert!(!checkpointed.busy);
    assert_eq!(checkpointed.wal_frames, 0);
}

/// Seeds `shipments` shipments on PostgreSQL, each with a line of `line` notifications on the
/// webhook (one per status change), all due at `T0`.
async fn seed(pg: &PgDatabase, db: &Db, shipments: usize, line: usize) -> Vec<i64> {
    let mut engine = Engine::postgres(pg).await;
    let mut ids = Vec::new();
    for i in 0..shipments {
        ids.push(engine.add(&format!("S-{i}"), T0).await);
    }
    let statuses = [
        Status::PickedUp,
        Status::InTransit,
        Status::OutForDelivery,
        Status::Delivered,
    ];
    for (round, status) in statuses.iter().take(line).enumerate() {
        let polls: Vec<(i64, Owned)> = ids
            .iter()
            .map(|id| (*id, owned(*status, round + 1, T0 + round as i64)))
            .collect();
        let recorded = db.record_polls(&polls).await.unwrap();
        assert!(recorded.iter().all(|r| r.queued.len() == 1), "{recorded:?}");
    }
    ids
}

/// Two daemons claim from one outbox at once, each sending what it claimed: every
/// notification is claimed exactly once.
#[tokio::test]
async fn two_daemons_claiming_at_once_never_get_the_same_notification() {
    let pg = PgDatabase::create().await;
    let first = open_pg(&pg).await;
    let second = open_pg(&pg).await;
    seed(&pg, &first, 120, 1).await;
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let mut daemons = Vec::new();
    for db in [first.clone(), second.clone(), first.clone(), second] {
        let claimed = claimed.clone();
        daemons.push(tokio::spawn(async move {
            loop {
                let got = db
                    .claim_notifications(T0 + 10, T0 + 600_000, &WEBHOOK, 3, 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                // As the sender does: each attempt counted as it starts.
                let claims: Vec<(i64, i64)> = got.iter().map(|n| (n.id, n.lease_until)).collect();
                db.notifications_started(&claims).await.unwrap();
                let sent: Vec<(i64, i64)> = got.iter().map(|n| (n.id, T0 + 11)).collect();
                claimed.lock().unwrap().extend(got.iter().map(|n| n.id));
                db.notifications_sent(&sent).await.unwrap();
            }
        }));
    }
    for daemon in daemons {
        daemon.await.unwrap();
    }
    let claimed = claimed.lock().unwrap().clone();
    let distinct: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        claimed.len(),
        "a notification claimed twice"
    );
    assert_eq!(distinct.len(), 120);
    let rows = first.list_notifications(None, None).await.unwrap();
    assert!(rows.iter().all(|n| n.state == "sent" && n.attempts == 1));
}

/// Two daemons drain shipments' lines at once: a shipment's next notification is never claimed
/// while an earlier one is pending, whichever daemon holds it, and every line goes out in order.
#[tokio::test]
async fn a_shipments_notifications_go_out_in_order_across_two_daemons() {
    let pg = PgDatabase::create().await;
    let first = open_pg(&pg).await;
    let second = open_pg(&pg).await;
    seed(&pg, &first, 15, 4).await;
    let rows = first.list_notifications(None, None).await.unwrap();
    assert_eq!(rows.len(), 60);
    // Each notification's shipment, and the ids before it in its line.
    let mut lines: HashMap<String, Vec<i64>> = HashMap::new();
    for n in &rows {
        lines.entry(n.order_id.clone()).or_default().push(n.id);
    }
    // Marked done before the mark is committed, so that a claim that sees the mark's commit
    // always finds it here.
    let done = Arc::new(Mutex::new(HashSet::new()));
    let order = Arc::new(Mutex::new(HashMap::<String, Vec<i64>>::new()));
    let mut daemons = Vec::new();
    for (k, db) in [first.clone(), second.clone(), first.clone(), second]
        .into_iter()
        .enumerate()
    {
        let (done, order, lines) = (done.clone(), order.clone(), lines.clone());
        daemons.push(tokio::spawn(async move {
            let mut idle = 0;
            while idle < 20 {
                let got = db
                    .claim_notifications(T0 + 10, T0 + 600_000, &WEBHOOK, 3, 4)
                    .await
                    .unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                let claims: Vec<(i64, i64)> = got.iter().map(|n| (n.id, n.lease_until)).collect();
                db.notifications_started(&claims).await.unwrap();
                for n in &got {
                    let earlier = &lines[&n.order_id];
                    let done = done.lock().unwrap();
                    for id in earlier.iter().filter(|id| **id < n.id) {
                        assert!(
                            done.contains(id),
                            "{} claimed while {id} of {} was pending",
                            n.id,
                            n.order_id
                        );
                    }
                }
                for n in &got {
                    order
                        .lock()
                        .unwrap()
                        .entry(n.order_id.clone())
                        .or_default()
                        .push(n.id);
                }
                // A delivery takes a moment; some are failed once and retried.
                tokio::time::sleep(std::time::Duration::from_millis(1 + k as u64)).await;
                for n in got {
                    if n.attempts == 1 && n.id % 3 == 0 {
                        db.notification_failed(n.id, "HTTP 503", Some(T0))
                            .await
                            .unwrap();
                    } else {
                        done.lock().unwrap().insert(n.id);
                        db.notification_sent(n.id, T0 + 11).await.unwrap();
                    }
                }
            }
        }));
    }
    for daemon in daemons {
        daemon.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    for (shipment, line) in &lines {
        let mut sent = order[shipment].clone();
        sent.dedup();
        assert_eq!(&sent, line, "{shipment} went out of order");
    }
    let rows = first.list_notifications(None, None).await.unwrap();
    assert!(rows.iter().all(|n| n.state == "sent"), "{rows:?}");
}

/// The writer on PostgreSQL: a round of polls commits shipments, events and outbox rows, and
/// its claims see them.
#[tokio::test]
async fn a_poll_handed_to_the_writer_on_postgres_commits_its_shipment_events_and_outbox() {
    let pg = PgDatabase::create().await;
    let db = open_pg(&pg).await;
    let mut engine = Engine::postgres(&pg).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(engine.add(&format!("W-{i}"), T0).await);
    }
    let writer = db.writer();
    let claimed = writer
        .claim_shipments(ShipmentClaim {
            now: T0,
            claimed_until: T0 + 60_000,
            paused: vec!["kuaidi100".to_owned()],
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    let again = writer
        .claim_shipments(ShipmentClaim {
            now: T0,
            claimed_until: T0 + 60_000,
            paused: Vec::new(),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    let mut handed = Vec::new();
    for id in &ids {
        let poll: Box<dyn Decide + Send + Sync> = Box::new(owned(Status::PickedUp, 2, T0 + 10));
        handed.push(writer.record_poll((*id, poll)).await.unwrap());
    }
    let claim = writer.claim_notifications(NotificationClaim {
        now: T0 + 10,
        lease_until: T0 + 60_000,
        channels: vec![ChannelKind::Webhook],
        max_attempts: 3,
        limit: 100,
    });
    for h in handed {
        let recorded = h.written().await.unwrap();
        assert_eq!(recorded.change, Some((Status::Pending, Status::PickedUp)));
        assert_eq!(recorded.new_events, 2);
        assert_eq!(recorded.queued.len(), 1);
    }
    let claimed = claim.await.unwrap();
    assert_eq!(claimed.len(), 5);
    for n in &claimed {
        writer
            .sent(writer.received(n.id, n.lease_until, T0 + 20))
            .await
            .unwrap();
    }
    let rows = db.list_notifications(Some("sent"), None).await.unwrap();
    assert_eq!(rows.len(), 5);
    for id in &ids {
        assert_eq!(db.events(*id).await.unwrap().len(), 2);
    }
    let shipments = engine.shipments().await;
    assert_eq!(shipments.len(), 5);
    for row in &shipments {
        // status picked_up, claim ended, polled at T0 + 10.
        assert!(row.contains("|Some(\"picked_up\")|"), "{row}");
        assert!(
            row.contains(&format!(
                "|None|Some({})|Some({})|",
                T0 + 10 + 60_000,
                T0 + 10
            )),
            "{row}"
        );
    }
}
