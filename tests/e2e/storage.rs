//! The database under the rules the daemon relies on: deduplicated history, one notification per
//! change and channel, leases that count, and many writers without "database is locked".

use std::sync::Arc;

use chrono::TimeZone;
use shipwatch::config::Synchronous;
use shipwatch::domain::{MOST_ATTEMPTS_CUT_SHORT, Status, Tier};
use shipwatch::notify::{ChannelKind, ChannelRule};
use shipwatch::providers::{Trace, TraceEvent, shanghai};
use shipwatch::storage::{ClaimedNotification, Db, NewShipment};
use shipwatch::track::{PollRecord, events_digest};
use sqlx::{AssertSqlSafe, Connection};

const T0: i64 = 1_800_000_000_000;

fn trace(status: Status, events: usize) -> Trace {
    Trace {
        status,
        raw_status: "物流公司揽收成功".to_owned(),
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
        unmapped: Vec::new(),
    }
}

async fn open(dir: &tempfile::TempDir) -> Db {
    Db::open(&dir.path().join("s.db"), Synchronous::Normal)
        .await
        .unwrap()
}

async fn add(db: &Db, order_id: &str) -> i64 {
    db.add_shipment(
        &NewShipment {
            order_id: order_id.to_owned(),
            provider: "taobao".to_owned(),
            tracking_no: None,
            carrier: None,
            tier: Tier::High,
            phone: None,
            email: None,
            openid: None,
            sub_orders: None,
        },
        T0,
    )
    .await
    .unwrap()
    .id
}

const WEBHOOK: &[ChannelRule] = &[];

/// Counts the start of an attempt for each message claimed, under its claim, as the sender does.
async fn start(db: &Db, claimed: &[ClaimedNotification]) {
    let claims: Vec<(i64, i64)> = claimed.iter().map(|n| (n.id, n.lease_until)).collect();
    let counted = db.notifications_started(&claims).await.unwrap();
    assert_eq!(
        counted.len(),
        claims.len(),
        "every start counted under its claim"
    );
}

/// The webhook's claim of up to 10 notifications at the start of lease number `k` (leases of a
/// minute from `T0`, each running until the next), up to 3 attempts.
async fn claim_in_lease(db: &Db, k: i64) -> Vec<ClaimedNotification> {
    const LEASE: i64 = 60_000;
    db.claim_notifications(
        T0 + k * LEASE,
        T0 + (k + 1) * LEASE,
        &[ChannelKind::Webhook],
        3,
        10,
    )
    .await
    .unwrap()
}

/// Adds `order_id` and records it picked up at `T0`, which queues its webhook notification.
async fn picked_up(db: &Db, order_id: &str) -> i64 {
    let id = add(db, order_id).await;
    let t = trace(Status::PickedUp, 1);
    db.record_poll(
        id,
        PollRecord {
            now: T0,
            trace: &t,
            next_poll_at: T0,
            channels: &channels(),
        },
    )
    .await
    .unwrap();
    id
}

fn channels() -> Vec<ChannelRule> {
    vec![ChannelRule::new(ChannelKind::Webhook, Status::ALL.to_vec())]
}

#[tokio::test]
async fn reading_the_same_trace_again_writes_only_the_poll_times() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let id = add(&db, "1").await;
    let channels = channels();
    let t = trace(Status::InTransit, 3);
    let first = db
        .record_poll(
            id,
            PollRecord {
                now: T0,
                trace: &t,
                next_poll_at: T0 + 1,
                channels: &channels,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.change, Some((Status::Pending, Status::InTransit)));
    assert_eq!(first.new_events, 3);
    assert_eq!(first.queued.len(), 1);

    let again = db
        .record_poll(
            id,
            PollRecord {
                now: T0 + 5,
                trace: &t,
                next_poll_at: T0 + 9,
                channels: &channels,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.change, None);
    assert_eq!(again.new_events, 0);
    assert!(again.queued.is_empty());

    let row = db.shipment("1").await.unwrap();
    assert_eq!(row.last_polled_at, Some(T0 + 5));
    assert_eq!(row.next_poll_at, T0 + 9);
    assert_eq!(row.status_changed_at, Some(T0));
    assert_eq!(row.transitions, 1);
    assert_eq!(row.tracking_no.as_deref(), Some("ZT123"));
    assert_eq!(db.events(id).await.unwrap().len(), 3);
    assert_eq!(
        db.list_notifications(None, Some(id)).await.unwrap().len(),
        1
    );

    // A longer trace adds only the new scan.
    let longer = trace(Status::InTransit, 4);
    let more = db
        .record_poll(
            id,
            PollRecord {
                now: T0 + 10,
                trace: &longer,
                next_poll_at: T0 + 11,
                channels: &channels,
            },
        )
        .await
        .unwrap();
    assert_eq!((more.change, more.new_events), (None, 1));
    assert_eq!(db.events(id).await.unwrap().len(), 4);
    // No channel configured: the change is recorded, nothing is queued.
    let delivered = trace(Status::Delivered, 4);
    let last = db
        .record_poll(
            id,
            PollRecord {
                now: T0 + 20,
                trace: &delivered,
                next_poll_at: T0 + 21,
                channels: WEBHOOK,
            },
        )
        .await
        .unwrap();
    assert!(last.queued.is_empty());
    assert!(
        !db.shipment("1").await.unwrap().active,
        "delivered stops polling"
    );
}

#[tokio::test]
async fn the_same_status_refreshes_what_was_unknown_and_announces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let id = add(&db, "1").await;
    let channels = channels();
    let poll = |now, trace| PollRecord {
        now,
        trace,
        next_poll_at: now + 1,
        channels: &channels,
    };
    let bare = Trace {
        carrier: None,
        tracking_no: None,
        ..trace(Status::InTransit, 2)
    };
    db.record_poll(id, poll(T0, &bare)).await.unwrap();
    let row = db.shipment("1").await.unwrap();
    assert_eq!((row.carrier, row.tracking_no), (None, None));

    // The same scans and raw status, now with the carrier and waybill.
    let told = trace(Status::InTransit, 2);
    let again = db.record_poll(id, poll(T0 + 10, &told)).await.unwrap();
    assert_eq!((again.change, again.new_events), (None, 0));
    assert!(again.queued.is_empty());
    let row = db.shipment("1").await.unwrap();
    assert_eq!(row.carrier.as_deref(), Some("中通速递"));
    assert_eq!(row.tracking_no.as_deref(), Some("ZT123"));

    // Only the raw status is new.
    let reworded = Trace {
        raw_status: "物流公司已接单".to_owned(),
        ..trace(Status::InTransit, 2)
    };
    let third = db.record_poll(id, poll(T0 + 20, &reworded)).await.unwrap();
    assert!(third.change.is_none() && third.queued.is_empty());
    let row = db.shipment("1").await.unwrap();
    assert_eq!(row.raw_status.as_deref(), Some("物流公司已接单"));
    assert_eq!((row.transitions, row.last_polled_at), (1, Some(T0 + 20)));
    assert_eq!(
        db.list_notifications(None, Some(id)).await.unwrap().len(),
        1,
        "only the first change is announced"
    );
}

#[tokio::test]
async fn the_same_change_recorded_by_two_processes_at_once_is_queued_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = open(&dir).await;
    let admin = open(&dir).await;
    let id = add(&daemon, "1").await;
    let channels = channels();
    let t = trace(Status::PickedUp, 1);
    let (a, b) = tokio::join!(
        daemon.record_poll(
            id,
            PollRecord {
                now: T0,
                trace: &t,
                next_poll_at: T0,
                channels: &channels
            }
        ),
        admin.record_poll(
            id,
            PollRecord {
                now: T0,
                trace: &t,
                next_poll_at: T0,
                channels: &channels
            }
        ),
    );
    let changes = [a.unwrap(), b.unwrap()]
        .iter()
        .filter(|r| r.change.is_some())
        .count();
    assert_eq!(changes, 1);
    assert_eq!(
        daemon
            .list_notifications(None, Some(id))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(daemon.shipment("1").await.unwrap().transitions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_in_two_processes_never_see_database_locked() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Arc::new(open(&dir).await);
    let admin = Arc::new(open(&dir).await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            add(&admin, &format!("a{i}")).await;
        }));
        let daemon = daemon.clone();
        tasks.push(tokio::spawn(async move {
            let claimed = daemon
                .claim_due_shipments(T0 + 1, T0 + 60_000, &[], 5)
                .await
                .unwrap();
            let channels = channels();
            let t = trace(Status::InTransit, 2);
            for row in claimed {
                daemon
                    .record_poll(
                        row.id,
                        PollRecord {
                            now: T0 + 1,
                            trace: &t,
                            next_poll_at: T0 + 120_000,
                            channels: &channels,
                        },
                    )
                    .await
                    .unwrap();
            }
            daemon
                .claim_notifications(T0 + 1, T0 + 60_000, &[ChannelKind::Webhook], 3, 5)
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.expect("no writer failed");
    }
    assert_eq!(
        admin
            .shipments_page(&shipwatch::storage::ShipmentFilter::default())
            .await
            .unwrap()
            .rows
            .len(),
        200
    );
}

#[tokio::test]
async fn a_start_that_comes_after_its_claim_was_given_back_counts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    picked_up(&db, "1").await;
    // A stop gives the message back while its start waits for the writer; the start lands
    // after the give-back, under the claim that is no longer there.
    let claimed = claim_in_lease(&db, 0).await;
    let claim = (claimed[0].id, claimed[0].lease_until);
    db.give_back_notifications(&[claim]).await.unwrap();
    assert!(db.notifications_started(&[claim]).await.unwrap().is_empty());
    let row = &db.list_notifications(Some("pending"), None).await.unwrap()[0];
    assert_eq!((row.attempts, row.cut_short, row.lease_until), (0, 0, None));
    // The next claim offers the first attempt: the late start spent nothing.
    let again = claim_in_lease(&db, 1).await;
    assert_eq!(again[0].attempts, 1);
    // A start under the earlier claim does not count on this one either.
    assert!(db.notifications_started(&[claim]).await.unwrap().is_empty());
    start(&db, &again).await;
    let row = &db.list_notifications(Some("pending"), None).await.unwrap()[0];
    assert_eq!((row.attempts, row.cut_short), (1, 0));
}

/// The writer's marks (on SQLite one batch of statements, its transaction included): two starts
/// handed together, one of them under a claim given back, and a `sent` mark behind them. Each
/// start answers for itself, and each row says what its mark did.
#[tokio::test]
async fn the_writers_marks_answer_for_each_start_and_mark_the_sent() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    for order in ["1", "2", "3"] {
        picked_up(&db, order).await;
    }
    let claimed = claim_in_lease(&db, 0).await;
    assert_eq!(claimed.len(), 3);
    let (kept, given_back, delivered) = (&claimed[0], &claimed[1], &claimed[2]);
    start(&db, std::slice::from_ref(delivered)).await;
    db.give_back_notifications(&[(given_back.id, given_back.lease_until)])
        .await
        .unwrap();

    let writer = db.writer();
    let first = writer.started(kept.id, kept.lease_until).await.unwrap();
    let second = writer
        .started(given_back.id, given_back.lease_until)
        .await
        .unwrap();
    let received = writer.received(delivered.id, delivered.lease_until, T0 + 5);
    writer.sent(received).await.unwrap();
    assert!(
        first.written().await.unwrap(),
        "the start under its claim counts"
    );
    assert!(
        !second.written().await.unwrap(),
        "the start under a claim given back counts nothing"
    );

    // State, attempts, and whether a claim is held, of each row.
    let rows = db.list_notifications(None, None).await.unwrap();
    let seen = |id| {
        let n = rows.iter().find(|n| n.id == id).unwrap();
        (n.state.clone(), n.attempts, n.lease_until.is_some())
    };
    assert_eq!(
        [seen(kept.id), seen(given_back.id), seen(delivered.id)],
        [
            ("pending".to_owned(), 1, true),
            ("pending".to_owned(), 0, false),
            ("sent".to_owned(), 1, false),
        ],
        "{rows:?}"
    );
}

#[tokio::test]
async fn an_attempt_cut_short_is_given_back_and_the_tenth_in_a_row_gives_the_message_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    picked_up(&db, "1").await;
    let webhook = [ChannelKind::Webhook];
    let lease = 60_000;

    // A sender claims it, starts the attempt and dies; nobody else may take it until the lease
    // runs out.
    let claimed = claim_in_lease(&db, 0).await;
    assert_eq!(claimed[0].attempts, 1);
    start(&db, &claimed[..1]).await;
    assert!(
        db.claim_notifications(T0 + 30_000, T0 + 30_000 + lease, &webhook, 3, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Its lease runs out with no outcome: the attempt was cut short and is given back, so the
    // next claim offers the first attempt again. Nine daemons in a row die that way.
    for k in 1..MOST_ATTEMPTS_CUT_SHORT as i64 {
        let again = claim_in_lease(&db, k).await;
        assert_eq!(again.len(), 1, "claim {k}");
        assert_eq!(again[0].public_id, claimed[0].public_id);
        assert_eq!(
            again[0].attempts, 1,
            "claim {k}: the attempts cut short are not spent"
        );
        start(&db, &again[..1]).await;
    }
    let pending = db.list_notifications(Some("pending"), None).await.unwrap();
    assert_eq!(pending[0].attempts, 1, "the attempt under way is counted");

    // The tenth runs out too: the message is given up, and says why.
    let k = MOST_ATTEMPTS_CUT_SHORT as i64;
    assert!(claim_in_lease(&db, k).await.is_empty());
    let dead = db.list_notifications(Some("dead"), None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 0, "no attempt had an outcome");
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("cut short 10 times with no outcome"),
        "{:?}",
        dead[0].last_error
    );

    // `retry` gives it a fresh set of attempts, and of attempts that may be cut short: the next
    // one cut short is given back again instead of ending the message at once.
    assert_eq!(
        db.requeue(None, T0 + 20 * lease).await.unwrap(),
        vec![dead[0].id]
    );
    let retried = claim_in_lease(&db, 20).await;
    assert_eq!(retried[0].attempts, 1);
    start(&db, &retried[..1]).await;
    let after = claim_in_lease(&db, 21).await;
    assert_eq!(
        after.len(),
        1,
        "cut short once after the retry, and still pending"
    );
    let rows = db.list_notifications(None, None).await.unwrap();
    let row = rows.iter().find(|r| r.id == after[0].id).unwrap();
    assert_eq!((row.attempts, row.cut_short), (0, 1));
}

#[tokio::test]
async fn an_attempt_cut_short_after_failures_keeps_the_failures_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    picked_up(&db, "1").await;
    let lease = 60_000;
    // Two attempts fail at the receiver; the third is cut short by a kill and given back, so
    // the claim after it offers the third again: the failures stay counted, the cut is not.
    for k in 0..2 {
        let claimed = claim_in_lease(&db, k).await;
        assert_eq!(claimed[0].attempts, k + 1);
        start(&db, &claimed[..1]).await;
        db.notification_failed(claimed[0].id, "HTTP 503", Some(T0 + (k + 1) * lease))
            .await
            .unwrap();
    }
    let third = claim_in_lease(&db, 2).await;
    assert_eq!(third[0].attempts, 3);
    start(&db, &third[..1]).await;
    let again = claim_in_lease(&db, 3).await;
    assert_eq!(again[0].attempts, 3, "the third attempt offered again");
    assert_eq!(
        db.list_notifications(Some("dead"), None)
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn a_last_attempt_counted_at_its_claim_by_an_older_daemon_still_goes_dead() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let id = picked_up(&db, "1").await;
    // As a daemon from before `attempt_started` left it: its third attempt counted when
    // claimed, and its lease ran out.
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let mut outside = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE notifications SET attempts = 3, lease_until = ? \
         WHERE shipment_id = ? AND channel = 'webhook'",
    )
    .bind(T0 + 1_000)
    .bind(id)
    .execute(&mut outside)
    .await
    .unwrap();
    outside.close().await.unwrap();
    let webhook = [ChannelKind::Webhook];
    assert!(
        db.claim_notifications(T0 + 2_000, T0 + 62_000, &webhook, 3, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let dead = db.list_notifications(Some("dead"), None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no answer within the lease on the last attempt")
    );
}

#[tokio::test]
async fn a_claim_whose_sender_died_before_trying_it_spends_no_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    picked_up(&db, "1").await;
    // Claimed ahead by three senders in a row, each killed before the message's turn came: no
    // attempt was made, none is counted, and the fourth claim still offers the first attempt.
    for k in 0..4 {
        let claimed = claim_in_lease(&db, k).await;
        assert_eq!(claimed.len(), 1, "claim {k}: {claimed:?}");
        assert_eq!(claimed[0].attempts, 1, "claim {k}");
    }
    assert!(
        db.list_notifications(Some("dead"), None)
            .await
            .unwrap()
            .is_empty()
    );
    let pending = db.list_notifications(Some("pending"), None).await.unwrap();
    assert_eq!(pending[0].attempts, 0);
}

#[tokio::test]
async fn a_claim_given_back_untried_spends_no_attempt_and_only_the_lease_given_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    for order in ["1", "2"] {
        picked_up(&db, order).await;
    }
    let webhook = [ChannelKind::Webhook];
    let lease = 60_000;
    let claimed = db
        .claim_notifications(T0, T0 + lease, &webhook, 3, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|n| n.attempts == 1));

    // The first goes back with the lease it was claimed with; the second names a lease it
    // does not hold (its claim ran out and was taken again), so it stays as it is.
    db.give_back_notifications(&[(claimed[0].id, T0 + lease), (claimed[1].id, T0 + 1)])
        .await
        .unwrap();
    let again = db
        .claim_notifications(T0 + 1, T0 + 1 + lease, &webhook, 3, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "only the one given back is free: {again:?}");
    assert_eq!(again[0].id, claimed[0].id);
    assert_eq!(
        again[0].attempts, 1,
        "the claim given back spent no attempt"
    );
    let rows = db.list_notifications(Some("pending"), None).await.unwrap();
    let kept = rows.iter().find(|r| r.id == claimed[1].id).unwrap();
    assert_eq!(kept.attempts, 0, "claimed, not yet tried: nothing counted");
    assert_eq!(kept.lease_until, Some(T0 + lease));
}

#[tokio::test]
async fn a_message_given_back_unsent_has_its_start_taken_back_not_cut_short() {
    // A slot takes its next message with the `sent` mark of the one before; a hurried stop
    // between the two gives that next message back, unsent. Counted as cut short, three such
    // stops would make it dead without it ever leaving.
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    picked_up(&db, "1").await;
    let webhook = [ChannelKind::Webhook];
    let lease = 60_000;
    for round in 0..4 {
        let now = T0 + round * 10;
        let claimed = db
            .claim_notifications(now, now + lease, &webhook, 3, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "round {round}: still due at once");
        start(&db, &claimed[..1]).await;
        db.give_back_notifications(&[(claimed[0].id, now + lease)])
            .await
            .unwrap();
        let row = &db.list_notifications(Some("pending"), None).await.unwrap()[0];
        assert_eq!(
            (row.attempts, row.cut_short, row.lease_until),
            (0, 0, None),
            "round {round}"
        );
    }
    // Given back with `release_notification` instead, as an attempt that may have left is,
    // the start counts as cut short.
    let claimed = db
        .claim_notifications(T0 + 100, T0 + 100 + lease, &webhook, 3, 10)
        .await
        .unwrap();
    start(&db, &claimed[..1]).await;
    db.release_notification(claimed[0].id).await.unwrap();
    let row = &db.list_notifications(Some("pending"), None).await.unwrap()[0];
    assert_eq!((row.attempts, row.cut_short), (0, 1));
}

#[tokio::test]
async fn a_postponed_message_takes_back_only_the_start_it_counted() {
    // A channel that stops (no credit, credentials refused) postpones the message without
    // spending its attempt. A paced channel refuses before the attempt is counted (the count
    // waits for the turn), so the postponement takes back only a start that was counted: taking
    // one back regardless used to erase a failure counted before.
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    picked_up(&db, "1").await;
    let attempts = async || {
        let row = &db.list_notifications(Some("pending"), None).await.unwrap()[0];
        (row.attempts, row.cut_short, row.lease_until)
    };
    // One failure, counted; each claim in a lease of its own, the row due again by then.
    let claimed = claim_in_lease(&db, 0).await;
    start(&db, &claimed).await;
    let id = claimed[0].id;
    db.notification_failed(id, "HTTP 503", Some(T0))
        .await
        .unwrap();
    assert_eq!(attempts().await, (1, 0, None));
    // Refused before its turn: nothing counted, nothing taken back.
    let id = claim_in_lease(&db, 1).await[0].id;
    db.notification_postponed(id, "robot stopped", T0)
        .await
        .unwrap();
    assert_eq!(attempts().await, (1, 0, None));
    // Refused once counted: the start is taken back.
    let claimed = claim_in_lease(&db, 2).await;
    start(&db, &claimed).await;
    let id = claimed[0].id;
    db.notification_postponed(id, "no credit", T0)
        .await
        .unwrap();
    assert_eq!(attempts().await, (1, 0, None));
}

#[tokio::test]
async fn events_written_once_are_not_written_again_until_the_trace_or_the_digest_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let id = add(&db, "1").await;
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let mut outside = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let t = trace(Status::InTransit, 3);
    let poll = |now: i64, trace: &Trace| {
        let trace = trace.clone();
        let db = &db;
        async move {
            db.record_poll(
                id,
                PollRecord {
                    now,
                    trace: &trace,
                    next_poll_at: now + 1,
                    channels: WEBHOOK,
                },
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(poll(T0, &t).await.new_events, 3);
    let digest = db.shipment("1").await.unwrap().events_digest;
    assert_eq!(digest, Some(events_digest(&t.events)));

    // The same trace again hands no event to the database: one deleted by hand meanwhile
    // stays deleted, where each event would otherwise be offered again and this one re-added.
    sqlx::query("DELETE FROM events WHERE shipment_id = ? AND description = 'scan 0'")
        .bind(id)
        .execute(&mut outside)
        .await
        .unwrap();
    assert_eq!(poll(T0 + 10, &t).await.new_events, 0);
    assert_eq!(db.events(id).await.unwrap().len(), 2);
    let row = db.shipment("1").await.unwrap();
    assert_eq!(
        (row.last_polled_at, row.events_digest),
        (Some(T0 + 10), digest)
    );

    // A digest cleared (or never written, as for a row another program inserted) is unknown:
    // the next poll offers every event again, the missing one is back, and so is the digest.
    sqlx::query("UPDATE shipments SET events_digest = NULL WHERE id = ?")
        .bind(id)
        .execute(&mut outside)
        .await
        .unwrap();
    assert_eq!(poll(T0 + 20, &t).await.new_events, 1);
    assert_eq!(db.events(id).await.unwrap().len(), 3);
    assert_eq!(db.shipment("1").await.unwrap().events_digest, digest);

    // Another program may not put anything but an integer there.
    let refused = sqlx::query("UPDATE shipments SET events_digest = 'abc' WHERE id = ?")
        .bind(id)
        .execute(&mut outside)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("events_digest must be an integer or NULL"),
        "{refused}"
    );

    // A longer trace is written, with its own digest.
    let longer = trace(Status::Delivered, 4);
    assert_eq!(poll(T0 + 30, &longer).await.new_events, 1);
    let row = db.shipment("1").await.unwrap();
    assert_eq!(row.events_digest, Some(events_digest(&longer.events)));
    assert!(!row.active, "delivered: polling stops");

    // Pruning a finished shipment's history drops its digest with it, so that nothing would
    // keep its events from being written again.
    let pruned = db.prune(T0 + 1_000).await.unwrap();
    assert_eq!(pruned.events, 4);
    assert_eq!(db.shipment("1").await.unwrap().events_digest, None);
}

#[tokio::test]
async fn the_table_refuses_structural_mistakes_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let bad_tier = NewShipment {
        order_id: "1".to_owned(),
        provider: "taobao".to_owned(),
        tracking_no: None,
        carrier: None,
        tier: Tier::High,
        phone: None,
        email: None,
        openid: None,
        sub_orders: None,
    };
    db.add_shipment(&bad_tier, T0).await.unwrap();
    let duplicate = db
        .add_shipment(&bad_tier, T0)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(duplicate, "order 1 is already tracked");
    let blank = NewShipment {
        order_id: "  ".to_owned(),
        ..bad_tier
    };
    let err = db.add_shipment(&blank, T0).await.unwrap_err().to_string();
    assert!(err.contains("order_id must not be empty"), "{err}");
}

#[tokio::test]
async fn a_shipments_notifications_are_claimed_one_at_a_time_in_queue_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let (a, b) = (add(&db, "A").await, add(&db, "B").await);
    let channels = channels();
    let record = |id, status, at| {
        let db = db.clone();
        let channels = channels.clone();
        async move {
            let t = trace(status, 1);
            db.record_poll(
                id,
                PollRecord {
                    now: at,
                    trace: &t,
                    next_poll_at: at,
                    channels: &channels,
                },
            )
            .await
            .unwrap();
        }
    };
    record(a, Status::PickedUp, T0).await;
    record(a, Status::InTransit, T0 + 1).await;
    record(a, Status::OutForDelivery, T0 + 2).await;
    record(b, Status::PickedUp, T0 + 3).await;
    let webhook = [ChannelKind::Webhook];
    let lease = 60_000;
    let claim = |at: i64| {
        let db = db.clone();
        async move {
            db.claim_notifications(at, at + lease, &webhook, 3, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|n| (n.order_id, n.status))
                .collect::<Vec<_>>()
        }
    };
    let pair = |order: &str, status: &str| (order.to_owned(), status.to_owned());

    // All four are due, but only the head of each shipment's queue goes out.
    let first = claim(T0 + 10).await;
    assert_eq!(first, [pair("A", "picked_up"), pair("B", "picked_up")]);
    // While A's first is in flight, its next one waits.
    assert!(claim(T0 + 20).await.is_empty());
    let rows = db.list_notifications(None, Some(a)).await.unwrap();
    let id_of = |status: &str| rows.iter().find(|n| n.status == status).unwrap().id;
    db.notification_sent(id_of("picked_up"), T0 + 30)
        .await
        .unwrap();
    assert_eq!(claim(T0 + 40).await, [pair("A", "in_transit")]);
    // A dead one no longer holds the line.
    db.notification_failed(id_of("in_transit"), "HTTP 400", None)
        .await
        .unwrap();
    assert_eq!(claim(T0 + 50).await, [pair("A", "out_for_delivery")]);
}

/// Each claim takes at most the limit it is given, a different one at each call as the
/// dispatcher's and the sender's pace asks (the statements read their limit when they run, so
/// that SQLite does not prepare them again for every new value), and never a row twice.
#[tokio::test]
async fn claims_take_at_most_the_limit_each_call_gives() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    for i in 0..6 {
        picked_up(&db, &format!("L{i}")).await;
    }
    let lease = 60_000;
    let mut shipments = std::collections::BTreeSet::new();
    for limit in [2, 3, 1] {
        let claimed = db
            .claim_due_shipments(T0 + 1, T0 + 1 + lease, &[], limit)
            .await
            .unwrap();
        assert_eq!(claimed.len(), limit, "a claim of {limit} shipments");
        for row in claimed {
            assert!(
                shipments.insert(row.id),
                "shipment {} claimed twice",
                row.id
            );
        }
    }
    assert!(
        db.claim_due_shipments(T0 + 1, T0 + 1 + lease, &[], 5)
            .await
            .unwrap()
            .is_empty()
    );

    let webhook = [ChannelKind::Webhook];
    let mut notifications = std::collections::BTreeSet::new();
    for limit in [4, 1, 1] {
        let claimed = db
            .claim_notifications(T0 + 1, T0 + 1 + lease, &webhook, 3, limit)
            .await
            .unwrap();
        assert_eq!(claimed.len(), limit, "a claim of {limit} notifications");
        for n in claimed {
            assert!(
                notifications.insert(n.id),
                "notification {} claimed twice",
                n.id
            );
        }
    }
    assert!(
        db.claim_notifications(T0 + 1, T0 + 1 + lease, &webhook, 3, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A poll as the dispatcher hands it to the writer: owned, decided once the row is read.
struct Owned {
    trace: Trace,
    now: i64,
    channels: Vec<ChannelRule>,
}

impl shipwatch::storage::Decide for Owned {
    fn decide(
        &self,
        stored: &shipwatch::storage::ShipmentRow,
    ) -> shipwatch::storage::PollWrite<'_> {
        let record = PollRecord {
            now: self.now,
            trace: &self.trace,
            next_poll_at: self.now + 60_000,
            channels: &self.channels,
        };
        shipwatch::track::track(stored, &record, &mut shipwatch::track::new_public_id)
    }
}

fn owned(status: Status, now: i64) -> Box<dyn shipwatch::storage::Decide + Send + Sync> {
    Box::new(Owned {
        trace: trace(status, 2),
        now,
        channels: channels(),
    })
}

#[tokio::test]
async fn the_writer_answers_each_job_its_own_and_a_row_that_fails_costs_only_its_own_poll() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(add(&db, &format!("W-{i}")).await);
    }
    // Another tool breaks one row behind the table's back (as an older schema allowed): its
    // status reads as nothing the daemon knows.
    let mut other = sqlx::sqlite::SqliteConnection::connect(&format!(
        "sqlite://{}",
        dir.path().join("s.db").display()
    ))
    .await
    .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "PRAGMA ignore_check_constraints = ON; \
         UPDATE shipments SET status = 'teleported' WHERE id = {}",
        ids[7]
    )))
    .execute(&mut other)
    .await
    .unwrap();

    // Everything handed over before anything is awaited: the writer takes them together.
    let writer = db.writer();
    let mut handed = Vec::new();
    for id in &ids {
        handed.push(
            writer
                .record_poll((*id, owned(Status::PickedUp, T0 + 10)))
                .await
                .unwrap(),
        );
    }
    let claim = writer.claim_notifications(shipwatch::storage::NotificationClaim {
        now: T0 + 10,
        lease_until: T0 + 60_000,
        channels: vec![ChannelKind::Webhook],
        max_attempts: 3,
        limit: 100,
    });
    let mut outcomes = Vec::new();
    for h in handed {
        outcomes.push(h.written().await);
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 7 {
            let error = outcome.as_ref().unwrap_err().to_string();
            assert!(error.contains("status"), "{error}");
        } else {
            let recorded = outcome.as_ref().unwrap();
            assert_eq!(
                recorded.change,
                Some((Status::Pending, Status::PickedUp)),
                "{i}"
            );
            assert_eq!(recorded.new_events, 2, "{i}");
            assert_eq!(recorded.queued.len(), 1, "{i}");
        }
    }
    // The claim came after the polls: it sees their 19 notifications, one per shipment.
    let claimed = claim.await.unwrap();
    assert_eq!(claimed.len(), 19);
    for n in &claimed {
        writer
            .sent(writer.received(n.id, n.lease_until, T0 + 20))
            .await
            .unwrap();
    }
    let states = db.list_notifications(None, None).await.unwrap();
    assert_eq!(states.len(), 19);
    assert!(
        states
            .iter()
            .all(|n| n.state == "sent" && n.sent_at == Some(T0 + 20))
    );
    // The broken row was left as it was, its neighbours moved on.
    let broken: (String, Option<i64>) =
        sqlx::query_as("SELECT status, last_polled_at FROM shipments WHERE id = ?")
            .bind(ids[7])
            .fetch_one(&mut other)
            .await
            .unwrap();
    assert_eq!(broken, ("teleported".to_owned(), None));
    assert_eq!(db.shipment("W-8").await.unwrap().status, Status::PickedUp);
}

/// Delivery receipts (`storage::receipts`): a line written the moment a receiver accepts a
/// delivery, read at the next start so that a kill before the `sent` mark does not repeat it.
#[tokio::test]
async fn receipts_left_by_a_killed_daemon_mark_sent_only_the_claims_they_were_written_for() {
    use shipwatch::storage::receipts::{Receipt, path_beside};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.db");
    let db = open(&dir).await;
    for order in ["1", "2", "3", "4"] {
        picked_up(&db, order).await;
    }
    let lease_until = T0 + 60_000;
    let claimed = claim_in_lease(&db, 0).await;
    assert_eq!(claimed.len(), 4);
    assert!(claimed.iter().all(|n| n.lease_until == lease_until));
    start(&db, &claimed).await;
    let ids: Vec<i64> = claimed.iter().map(|n| n.id).collect();
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    // D was marked sent before the kill; its receipt was still in the file.
    let writer = db.writer();
    writer
        .sent(writer.received(d, lease_until, T0 + 100))
        .await
        .unwrap();

    // What the killed daemon left: A's receipt under its claim, B's under a claim it no longer
    // holds, D's, a line that is not a receipt, and a last line cut short. C has none.
    let receipt = |id, lease_until, sent_at| Receipt {
        id,
        lease_until,
        sent_at,
    };
    let mut text = String::new();
    text += &receipt(a, lease_until, T0 + 200).line();
    text += &receipt(b, T0 + 1, T0 + 300).line();
    text += &receipt(d, lease_until, T0 + 400).line();
    text += "7 1 1 0000000000000000\n";
    text += &receipt(c, lease_until, T0 + 500).line()[..12];
    std::fs::write(path_beside(&file), text).unwrap();

    let recovered = db.keep_receipts(&path_beside(&file)).await.unwrap();
    assert_eq!(
        (recovered.read, recovered.marked, recovered.ignored),
        (3, 1, 2)
    );
    let rows = db.list_notifications(None, None).await.unwrap();
    let row = |id| rows.iter().find(|r| r.id == id).unwrap();
    assert_eq!(row(a).state, "sent");
    assert_eq!(
        row(a).sent_at,
        Some(T0 + 200),
        "sent when the receiver said"
    );
    assert_eq!((row(a).attempts, row(a).cut_short), (1, 0));
    assert_eq!(row(a).lease_until, None);
    assert_eq!(row(b).state, "pending", "its receipt names another claim");
    assert_eq!(row(c).state, "pending", "no whole receipt of its own");
    assert_eq!(
        row(d).sent_at,
        Some(T0 + 100),
        "marked once, by its own mark"
    );
    assert_eq!(
        std::fs::read(path_beside(&file)).unwrap(),
        b"",
        "read, then emptied for this run"
    );

    // This run's receipts: written at once, and a kill before the mark (the database closed
    // with the mark never handed over) is made good at the next start.
    let unmarked = writer.received(c, lease_until, T0 + 600);
    let written = std::fs::read_to_string(path_beside(&file)).unwrap();
    assert_eq!(written, receipt(c, lease_until, T0 + 600).line());
    drop(unmarked);
    drop(writer);
    db.close().await;
    // As at a kill, the file's lock goes with the run that held it.
    drop(db);
    let db = open(&dir).await;
    let recovered = db.keep_receipts(&path_beside(&file)).await.unwrap();
    assert_eq!((recovered.read, recovered.marked), (1, 1));
    let rows = db.list_notifications(None, None).await.unwrap();
    let c_row = rows.iter().find(|r| r.id == c).unwrap();
    assert_eq!(
        (c_row.state.as_str(), c_row.sent_at),
        ("sent", Some(T0 + 600))
    );
}

/// A round of polls that bring nothing new, newer details and a new status writes each shipment
/// its own columns. The polls that bring nothing (most of them) are written by a statement of
/// their own that sets only the schedule: they still clear the error, end the claim and count
/// the provider's unmapped values, and leave the status and details as they were.
#[tokio::test]
async fn a_round_of_unchanged_refreshed_and_changed_polls_writes_each_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let mut ids = Vec::new();
    for order in ["same", "reworded", "changed"] {
        let id = add(&db, order).await;
        let first = Owned {
            trace: trace(Status::InTransit, 2),
            now: T0,
            channels: channels(),
        };
        db.record_poll(id, first).await.unwrap();
        db.record_poll_error(id, "upstream said no", T0 + 1, T0 + 2)
            .await
            .unwrap();
        ids.push(id);
    }
    let claimed = db
        .claim_due_shipments(T0 + 2, T0 + 3_600_000, &[], 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3, "all three claimed for the round");

    let at = T0 + 10;
    let poll = |trace| Owned {
        trace,
        now: at,
        channels: channels(),
    };
    let round = [
        (
            ids[0],
            poll(Trace {
                unmapped: vec!["X9".to_owned()],
                ..trace(Status::InTransit, 2)
            }),
        ),
        (
            ids[1],
            poll(Trace {
                raw_status: "运输中".to_owned(),
                ..trace(Status::InTransit, 2)
            }),
        ),
        (ids[2], poll(trace(Status::Delivered, 2))),
    ];
    let recorded = db.record_polls(&round).await.unwrap();
    let changes: Vec<_> = recorded.iter().map(|r| r.change).collect();
    assert_eq!(
        changes,
        [None, None, Some((Status::InTransit, Status::Delivered))]
    );

    // Every row: its error cleared, polled at `at`, due a minute later; then what each changed.
    let next = at + 60_000;
    let expected = [
        ("same", Status::InTransit, "物流公司揽收成功", 1, true, T0),
        ("reworded", Status::InTransit, "运输中", 1, true, T0),
        (
            "changed",
            Status::Delivered,
            "物流公司揽收成功",
            2,
            false,
            at,
        ),
    ];
    for (order, status, raw_status, transitions, active, changed_at) in expected {
        let row = db.shipment(order).await.unwrap();
        assert_eq!(
            (row.error, row.last_polled_at, row.next_poll_at),
            (None, Some(at), next),
            "{order}"
        );
        assert_eq!(
            (
                row.status,
                row.raw_status.as_deref(),
                row.transitions,
                row.active,
                row.status_changed_at
            ),
            (
                status,
                Some(raw_status),
                transitions,
                active,
                Some(changed_at)
            ),
            "{order}"
        );
    }
    let unmapped: Vec<_> = db
        .unmapped()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.value, u.count))
        .collect();
    assert_eq!(unmapped, [("X9".to_owned(), 1)]);
    // The claims ended with the round: the two still polled are claimed again when due, long
    // before the first claim's lease would have run out.
    let again: Vec<i64> = db
        .claim_due_shipments(next, next + 3_600_000, &[], 10)
        .await
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(again, ids[..2]);
}
