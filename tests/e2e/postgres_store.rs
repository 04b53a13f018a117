//! The store's shipment and subscription operations answer the same on both engines (issue 17):
//! each scenario runs the same calls on a SQLite file and on a throwaway PostgreSQL database and
//! writes down every answer (rows as `show --json` prints them, errors as their text); the two
//! transcripts must be equal. Then what only PostgreSQL has: several daemons claiming at once.
//! Without PostgreSQL installed these tests fail, saying so.

use std::collections::HashSet;
use std::sync::Arc;

use shipwatch::config::Synchronous;
use shipwatch::domain::{Email, Phone, Status, Tier};
use shipwatch::storage::{
    CallbackNote, CreateError, Created, Db, Invalid, InvalidKind, Location, NewShipment,
    RecheckWrite, ShipmentFilter, ShipmentRow, ShipmentUpdate, ShipmentView, SubscriptionState,
    rules::broken_rule,
};
use sqlx::{Connection, SqliteConnection};
use tempfile::TempDir;

use crate::support::listed_page_by_page;
use crate::support::postgres::PgDatabase;

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

/// A SQLite file and a PostgreSQL database, both migrated and empty.
struct Both {
    sqlite: Db,
    postgres: Db,
    dir: TempDir,
    pg: PgDatabase,
}

async fn both() -> Both {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::open(&dir.path().join("parity.db"), Synchronous::Normal)
        .await
        .unwrap();
    let pg = PgDatabase::create().await;
    let postgres = open_pg(&pg).await;
    Both {
        sqlite,
        postgres,
        dir,
        pg,
    }
}

async fn open_pg(pg: &PgDatabase) -> Db {
    Db::open(Location::parse(&pg.url).unwrap(), Synchronous::Normal)
        .await
        .unwrap()
}

impl Both {
    /// Runs `scenario` on each engine and checks that both wrote the same transcript.
    async fn same<F>(&self, scenario: F)
    where
        F: AsyncFn(&Db) -> Vec<String>,
    {
        let lite = scenario(&self.sqlite).await;
        let pg = scenario(&self.postgres).await;
        assert!(!lite.is_empty());
        for (i, (l, p)) in lite.iter().zip(&pg).enumerate() {
            assert_eq!(l, p, "step {i}: SQLite then PostgreSQL");
        }
        assert_eq!(lite.len(), pg.len());
    }

    async fn close(self) {
        self.sqlite.close().await;
        self.postgres.close().await;
        drop(self.dir);
        drop(self.pg);
    }
}

fn new(order_id: &str) -> NewShipment {
    NewShipment {
        order_id: order_id.to_owned(),
        provider: "taobao".to_owned(),
        tracking_no: None,
        carrier: None,
        tier: Tier::Normal,
        phone: None,
        email: None,
        openid: None,
        sub_orders: None,
    }
}

fn shown(row: &ShipmentRow) -> String {
    serde_json::to_string(&ShipmentView::from(row)).unwrap()
}

fn rows(rows: &[ShipmentRow]) -> String {
    rows.iter().map(shown).collect::<Vec<_>>().join("\n")
}

fn orders(rows: &[ShipmentRow]) -> String {
    rows.iter()
        .map(|r| r.order_id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn said<T, E: std::fmt::Display>(result: Result<T, E>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => format!("ok {}", ok(value)),
        Err(e) => format!("error {e}"),
    }
}

#[tokio::test]
async fn adding_showing_listing_and_removing_answer_the_same() {
    let both = both().await;
    both.same(async |db: &Db| {
        let mut out = Vec::new();
        let mut a = new("A-1");
        a.tracking_no = Some(" yt123 ".to_owned());
        a.phone = Some(Phone::parse("13812345678").unwrap());
        a.email = Some(Email::parse("zhang@shop.example").unwrap());
        a.sub_orders = Some("111,222".to_owned());
        out.push(said(db.add_shipment(&a, T0).await, |r| shown(&r)));
        out.push(said(db.add_shipment(&a, T0).await, |r| shown(&r)));
        out.push(said(db.add_shipment(&new("  "), T0).await, |r| shown(&r)));
        let mut bad = new("A-2");
        bad.sub_orders = Some("111,,222".to_owned());
        out.push(said(db.add_shipment(&bad, T0).await, |r| shown(&r)));
        let mut nobody = new("A-3");
        nobody.provider = String::new();
        out.push(said(db.add_shipment(&nobody, T0).await, |r| shown(&r)));
        for (i, tier) in [Tier::High, Tier::Low, Tier::Normal, Tier::High]
            .into_iter()
            .enumerate()
        {
            let mut more = new(&format!("B-{i}"));
            more.tier = tier;
            if i % 2 == 1 {
                more.provider = "cainiao".to_owned();
            }
            out.push(said(
                db.add_shipment(&more, T0 + i as i64 * MIN).await,
                |r| shown(&r),
            ));
        }
        out.push(said(db.shipment("A-1").await, |r| shown(&r)));
        out.push(said(db.shipment("nope").await, |r| shown(&r)));
        let all = db
            .shipments_page(&ShipmentFilter::default())
            .await
            .map(|page| page.rows);
        out.push(said(all, |r| rows(&r)));
        let filters = [
            ShipmentFilter {
                tier: Some(Tier::High),
                ..Default::default()
            },
            ShipmentFilter {
                provider: Some("cainiao".to_owned()),
                ..Default::default()
            },
            ShipmentFilter {
                status: Some(Status::Pending),
                changed_since: Some(T0 + 2 * MIN),
                ..Default::default()
            },
            ShipmentFilter {
                status: Some(Status::Delivered),
                ..Default::default()
            },
        ];
        for filter in &filters {
            out.push(said(
                db.shipments_page(filter).await.map(|page| page.rows),
                |r| orders(&r),
            ));
        }
        // Keyset paging: two at a time, each page after the last id of the one before.
        let mut after = None;
        loop {
            let page = db
                .shipments_page(&ShipmentFilter {
                    limit: Some(2),
                    after,
                    ..Default::default()
                })
                .await
                .map(|page| page.rows)
                .unwrap();
            out.push(format!("page {}", orders(&page)));
            match page.last() {
                Some(last) if page.len() == 2 => after = Some(last.id),
                _ => break,
            }
        }
        out.push(said(db.set_tier("B-1", Tier::High, T0 - MIN).await, |()| {
            String::new()
        }));
        out.push(said(
            db.set_tier("B-2", Tier::Low, T0 + 99 * MIN).await,
            |()| String::new(),
        ));
        out.push(said(db.set_tier("nope", Tier::Low, T0).await, |()| {
            String::new()
        }));
        out.push(said(db.shipment("B-1").await, |r| shown(&r)));
        out.push(said(db.shipment("B-2").await, |r| shown(&r)));
        let update = ShipmentUpdate {
            tier: Some((Tier::Low, T0 - 5 * MIN)),
            phone: Some(None),
            email: Some(Some(Email::parse("li@shop.example").unwrap())),
            openid: None,
        };
        out.push(said(db.update_shipment("A-1", &update).await, |r| {
            shown(&r)
        }));
        out.push(said(
            db.update_shipment("A-1", &ShipmentUpdate::default()).await,
            |r| shown(&r),
        ));
        out.push(said(db.update_shipment("nope", &update).await, |r| {
            shown(&r)
        }));
        out.push(said(db.remove_shipment("B-3").await, |()| String::new()));
        out.push(said(db.remove_shipment("B-3").await, |()| String::new()));
        out.push(said(
            db.shipments_page(&ShipmentFilter::default())
                .await
                .map(|page| page.rows),
            |r| orders(&r),
        ));
        out
    })
    .await;
    both.close().await;
}

/// `list --since` and the API's `updated_since` take the shipments changed since a time from
/// their index while they are fewer than 10,000, and read along the table from 10,000 on: either
/// way a listing pages through the same shipments, in the order they were added, each once, on
/// both engines. The shipments are added a batch at a time, the batches' times not in the order
/// of their ids, so that those changed since a time are spread along the table.
#[tokio::test]
async fn listings_since_a_time_keep_the_same_shipments_however_many_changed() {
    let both = both().await;
    both.same(async |db: &Db| {
        for batch in 0..52_i64 {
            let at = T0 + MIN * if batch % 2 == 0 { batch } else { 104 - batch };
            let rows: Vec<NewShipment> = (0..200)
                .map(|i| {
                    let mut shipment = new(&format!("S-{batch}-{i}"));
                    if i % 3 == 0 {
                        shipment.tier = Tier::High;
                    }
                    shipment
                })
                .collect();
            db.import_shipments(&rows, at).await.unwrap();
        }
        let all = db
            .shipments_page(&ShipmentFilter::default())
            .await
            .map(|page| page.rows)
            .unwrap();
        assert_eq!(all.len(), 10_400);
        let mut out = Vec::new();
        // 10,400 changed since T0 (read along the table), then 8,400, 4,400, 1,467 of the high
        // tier, 200 and none (from the index).
        for (since, tier) in [
            (T0, None),
            (T0 + 20 * MIN, None),
            (T0 + 60 * MIN, None),
            (T0 + 60 * MIN, Some(Tier::High)),
            (T0 + 103 * MIN, None),
            (T0 + 999 * MIN, None),
        ] {
            let expected: Vec<&str> = all
                .iter()
                .filter(|row| row.created_at >= since && tier.is_none_or(|t| row.tier == t))
                .map(|row| row.order_id.as_str())
                .collect();
            let filter = ShipmentFilter {
                tier,
                changed_since: Some(since),
                ..Default::default()
            };
            for limit in [1_000, 333] {
                let listed = listed_page_by_page(db, &filter, limit).await;
                assert_eq!(
                    listed, expected,
                    "since {since}, tier {tier:?}, {limit} a page"
                );
                out.push(format!(
                    "since {since} {tier:?}, {limit} a page: {}",
                    listed.len()
                ));
            }
        }
        out
    })
    .await;
    both.close().await;
}

#[tokio::test]
async fn imports_and_the_apis_create_answer_the_same() {
    let both = both().await;
    both.same(async |db: &Db| {
        let mut out = Vec::new();
        let batch: Vec<NewShipment> = (0..5).map(|i| new(&format!("I-{i}"))).collect();
        let imported = db
            .import_shipments(&batch, T0)
            .await
            .map_err(|(i, e)| format!("{i} {e}"));
        out.push(said(imported, |n| n.to_string()));
        // A duplicate of a stored row at index 2, then one within the batch at index 1.
        let again = vec![new("J-0"), new("J-1"), new("I-3"), new("J-3")];
        let err = db.import_shipments(&again, T0).await.unwrap_err();
        out.push(format!("at {}: {}", err.0, err.1));
        let twice = vec![new("K-0"), new("K-0")];
        let err = db.import_shipments(&twice, T0).await.unwrap_err();
        out.push(format!("at {}: {}", err.0, err.1));
        let mut broken = new("L-2");
        broken.sub_orders = Some("1,x".to_owned());
        let refused = vec![new("L-0"), new("L-1"), broken];
        let err = db.import_shipments(&refused, T0).await.unwrap_err();
        out.push(format!("at {}: {}", err.0, err.1));
        // Batches of one import, committed together.
        let mut import = db.begin_import(T0 + MIN).await.unwrap();
        import.add(&[new("M-0"), new("M-1")]).await.unwrap();
        import.add(&[new("M-2")]).await.unwrap();
        out.push(format!("committed {}", import.commit().await.unwrap()));
        // Dropped before its commit: nothing stays.
        let mut import = db.begin_import(T0).await.unwrap();
        import.add(&[new("N-0")]).await.unwrap();
        drop(import);
        out.push(said(
            db.shipments_page(&ShipmentFilter::default())
                .await
                .map(|page| page.rows),
            |r| orders(&r),
        ));

        let differs = |_: usize, new: &NewShipment, row: &ShipmentRow| {
            let mut fields = Vec::new();
            if new.provider != row.provider {
                fields.push("provider");
            }
            if new.tier != row.tier {
                fields.push("tier");
            }
            fields
        };
        let created = |result: Result<Vec<Created>, CreateError>| match result {
            Ok(done) => done
                .iter()
                .map(|c| match c {
                    Created::New(r) => format!("new {}", shown(r)),
                    Created::Existing(r) => format!("existing {}", shown(r)),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(CreateError::Conflict {
                index,
                order_id,
                fields,
            }) => format!("conflict at {index}: {order_id} {fields:?}"),
            Err(CreateError::Row { index, source }) => format!("row at {index}: {source}"),
            Err(e) => format!("error {e}"),
        };
        let first = vec![new("C-0"), new("I-0"), new("C-0")];
        out.push(created(db.create_shipments(&first, T0, &differs).await));
        let mut other = new("C-0");
        other.tier = Tier::High;
        let conflict = vec![new("C-9"), other];
        out.push(created(db.create_shipments(&conflict, T0, &differs).await));
        let blank = vec![new("C-8"), new(" ")];
        out.push(created(db.create_shipments(&blank, T0, &differs).await));
        out.push(said(
            db.shipments_page(&ShipmentFilter::default())
                .await
                .map(|page| page.rows),
            |r| orders(&r),
        ));
        out
    })
    .await;
    both.close().await;
}

#[tokio::test]
async fn claims_invalid_rows_and_rechecks_answer_the_same() {
    let both = both().await;
    both.same(async |db: &Db| {
        let mut out = Vec::new();
        for (i, provider) in ["taobao", "cainiao", "taobao", "gone", "taobao"]
            .into_iter()
            .enumerate()
        {
            let mut s = new(&format!("D-{i}"));
            s.provider = provider.to_owned();
            // Due at T0 + 4 min, + 3 min, …: the last added is due first.
            db.add_shipment(&s, T0 + (4 - i as i64) * MIN)
                .await
                .unwrap();
        }
        let paused = vec!["cainiao".to_owned()];
        out.push(format!("{:?}", db.next_due_at(&paused, T0).await.unwrap()));
        let claimed = db
            .claim_due_shipments(T0 + 10 * MIN, T0 + 11 * MIN, &paused, 2)
            .await
            .unwrap();
        out.push(format!("claimed {}", orders(&claimed)));
        out.push(format!(
            "{:?}",
            db.next_due_at(&paused, T0 + 10 * MIN).await.unwrap()
        ));
        let more = db
            .claim_due_shipments(T0 + 10 * MIN, T0 + 11 * MIN, &paused, 10)
            .await
            .unwrap();
        out.push(format!("then {}", orders(&more)));
        let none = db
            .claim_due_shipments(T0 + 10 * MIN, T0 + 11 * MIN, &[], 10)
            .await
            .unwrap();
        out.push(format!("then {}", orders(&none)));
        // A lease run out is claimable again, by whoever asks.
        let expired = db
            .claim_due_shipments(T0 + 11 * MIN, T0 + 12 * MIN, &[], 2)
            .await
            .unwrap();
        out.push(format!("expired {}", orders(&expired)));
        if let Some(first) = expired.first() {
            db.release_shipment(first.id).await.unwrap();
        }
        let given_back = db
            .claim_due_shipments(T0 + 11 * MIN, T0 + 12 * MIN, &[], 10)
            .await
            .unwrap();
        out.push(format!("given back {}", orders(&given_back)));

        let gone = db.shipment("D-3").await.unwrap();
        db.mark_invalid(
            gone.id,
            InvalidKind::UnknownProvider,
            "no provider gone",
            T0,
        )
        .await
        .unwrap();
        let d1 = db.shipment("D-1").await.unwrap();
        db.mark_invalid(d1.id, InvalidKind::Upstream, "refused", T0)
            .await
            .unwrap();
        let d0 = db.shipment("D-0").await.unwrap();
        db.mark_invalid(d0.id, InvalidKind::Row, "bad row", T0)
            .await
            .unwrap();
        out.push(said(db.shipment("D-3").await, |r| shown(&r)));
        let wanted = vec!["gone".to_owned()];
        let batch = db
            .recheck_invalid(
                Invalid::UnknownProviderIn(&wanted),
                0,
                10,
                T0 + 20 * MIN,
                |_| RecheckWrite::Revive,
            )
            .await
            .unwrap();
        out.push(format!(
            "read {} rechecked {} unreadable {:?}",
            batch.read,
            orders(
                &batch
                    .rechecked
                    .iter()
                    .map(|(r, _)| r.clone())
                    .collect::<Vec<_>>()
            ),
            batch.unreadable
        ));
        let batch = db
            .recheck_invalid(Invalid::All, 0, 10, T0 + 21 * MIN, |row| {
                if row.order_id == "D-1" {
                    RecheckWrite::StillInvalid {
                        kind: InvalidKind::Schedule,
                        reason: format!("still {}", row.order_id),
                    }
                } else {
                    RecheckWrite::Leave
                }
            })
            .await
            .unwrap();
        out.push(format!(
            "read {} rechecked {:?}",
            batch.read,
            batch
                .rechecked
                .iter()
                .map(|(r, w)| (r.order_id.clone(), w.clone()))
                .collect::<Vec<_>>()
        ));
        let paged = db
            .recheck_invalid(Invalid::All, d0.id, 1, T0, |_| RecheckWrite::Leave)
            .await
            .unwrap();
        out.push(format!("after D-0: {}", paged.read));
        let (row, write) = db
            .recheck_order("D-0", T0 + 30 * MIN, |_| RecheckWrite::Revive)
            .await
            .unwrap();
        out.push(format!("{} {write:?}", shown(&row)));
        out.push(said(
            db.recheck_order("nope", T0, |_| RecheckWrite::Revive).await,
            |(r, _)| shown(&r),
        ));
        out.push(said(
            db.shipments_page(&ShipmentFilter::default())
                .await
                .map(|page| page.rows),
            |r| rows(&r),
        ));
        out
    })
    .await;
    both.close().await;
}

/// A poll that waited long for its turn renews its claim before it calls: only while the claim
/// is still the one it took, never once another daemon has taken the shipment again or the
/// claim was given back.
#[tokio::test]
async fn a_claim_is_renewed_only_while_it_is_the_one_taken() {
    let both = both().await;
    both.same(async |db: &Db| {
        db.add_shipment(&new("R-1"), T0).await.unwrap();
        let mut out = Vec::new();
        let first = db.claim_due_shipments(T0, T0 + MIN, &[], 1).await.unwrap();
        let id = first[0].id;
        let renew =
            async |held: i64, until: i64| db.renew_shipment_claim(id, held, until).await.unwrap();
        out.push(format!("renewed {}", renew(T0 + MIN, T0 + 2 * MIN).await));
        out.push(format!(
            "renewed on the old claim {}",
            renew(T0 + MIN, T0 + 3 * MIN).await
        ));
        // Run out, and taken again (by another daemon): the first claim is gone.
        let again = db
            .claim_due_shipments(T0 + 3 * MIN, T0 + 4 * MIN, &[], 1)
            .await
            .unwrap();
        out.push(format!("taken again {}", orders(&again)));
        out.push(format!(
            "renewed once taken {}",
            renew(T0 + 2 * MIN, T0 + 5 * MIN).await
        ));
        db.release_shipment(id).await.unwrap();
        out.push(format!(
            "renewed once given back {}",
            renew(T0 + 4 * MIN, T0 + 5 * MIN).await
        ));
        assert_eq!(
            out,
            [
                "renewed true",
                "renewed on the old claim false",
                "taken again R-1",
                "renewed once taken false",
                "renewed once given back false",
            ]
        );
        out
    })
    .await;
    both.close().await;
}

#[tokio::test]
async fn subscriptions_answer_the_same() {
    let both = both().await;
    both.same(async |db: &Db| {
        let mut out = Vec::new();
        let mut a = new("S-1");
        a.provider = "kuaidi100".to_owned();
        a.tracking_no = Some("yt777".to_owned());
        let a = db.add_shipment(&a, T0).await.unwrap();
        let mut b = new("S-2");
        b.provider = "kuaidi100".to_owned();
        b.tracking_no = Some(" YT777 ".to_owned());
        let b = db.add_shipment(&b, T0).await.unwrap();
        out.push(format!("{:?}", db.subscription(a.id).await.unwrap()));
        db.record_subscribed(a.id, "kuaidi100", T0 + MIN, T0 + 60 * MIN)
            .await
            .unwrap();
        db.record_subscribed(a.id, "kuaidi100", T0 + 2 * MIN, T0 + 90 * MIN)
            .await
            .unwrap();
        out.push(format!("{:?}", db.subscription(a.id).await.unwrap()));
        out.push(said(db.shipment("S-1").await, |r| shown(&r)));
        out.push(said(
            db.shipments_by_waybill("kuaidi100", "yt777").await,
            |r| orders(&r),
        ));
        out.push(said(
            db.shipments_by_waybill("taobao", "yt777").await,
            |r| orders(&r),
        ));
        let plain = CallbackNote {
            state: None,
            message: Some("ignored"),
            now: T0 + 3 * MIN,
        };
        db.note_callback(a.id, "kuaidi100", &plain).await.unwrap();
        out.push(format!("{:?}", db.subscription(a.id).await.unwrap()));
        let end = CallbackNote {
            state: Some(SubscriptionState::Aborted),
            message: Some("3天查询无记录"),
            now: T0 + 4 * MIN,
        };
        db.note_callback(a.id, "kuaidi100", &end).await.unwrap();
        db.note_callback(b.id, "kuaidi100", &end).await.unwrap();
        out.push(format!("{:?}", db.subscription(a.id).await.unwrap()));
        out.push(format!("{:?}", db.subscription(b.id).await.unwrap()));
        db.reschedule(b.id, T0 + 7 * MIN).await.unwrap();
        out.push(said(db.shipment("S-2").await, |r| shown(&r)));
        out
    })
    .await;
    both.close().await;
}

#[tokio::test]
async fn a_row_written_from_outside_is_refused_with_the_same_line() {
    let both = both().await;
    let insert =
        "INSERT INTO shipments (order_id, provider, tier) VALUES ('X-1', 'taobao', 'urgent')";
    let mut lite = SqliteConnection::connect(&format!(
        "sqlite://{}",
        both.dir.path().join("parity.db").display()
    ))
    .await
    .unwrap();
    let mut pg = both.pg.connect().await;
    let line = |e: sqlx::Error| match e {
        sqlx::Error::Database(db) => broken_rule(db.message(), db.constraint()),
        _ => None,
    };
    let on_lite = line(
        sqlx::query(insert)
            .execute(&mut lite)
            .await
            .expect_err("SQLite took a bad tier"),
    );
    let on_pg = line(
        sqlx::query(insert)
            .execute(&mut pg)
            .await
            .expect_err("PostgreSQL took a bad tier"),
    );
    assert_eq!(
        on_lite.as_deref(),
        Some("tier must be one of high, normal, low")
    );
    assert_eq!(on_lite, on_pg);
    lite.close().await.unwrap();
    pg.close().await.unwrap();
    // Through the store, an empty order id reads the same on both.
    let mut said_by = Vec::new();
    for db in [&both.sqlite, &both.postgres] {
        said_by.push(db.add_shipment(&new(""), T0).await.unwrap_err().to_string());
    }
    assert_eq!(said_by[0], said_by[1]);
    assert!(
        said_by[0].starts_with("database refused the row: ")
            && said_by[0].ends_with("order_id must not be empty"),
        "{}",
        said_by[0]
    );
    both.close().await;
}

#[tokio::test]
async fn two_daemons_claiming_at_once_never_take_the_same_shipment() {
    let pg = PgDatabase::create().await;
    let one = Arc::new(open_pg(&pg).await);
    let two = Arc::new(open_pg(&pg).await);
    let batch: Vec<NewShipment> = (0..400).map(|i| new(&format!("P-{i}"))).collect();
    one.import_shipments(&batch, T0).await.unwrap();
    let claimer = |db: Arc<Db>| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = db
                    .claim_due_shipments(T0 + MIN, T0 + 10 * MIN, &[], 7)
                    .await
                    .unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|r| r.id));
            }
        })
    };
    let (a, b) = (claimer(one.clone()), claimer(two.clone()));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let a_set: HashSet<i64> = a.iter().copied().collect();
    let b_set: HashSet<i64> = b.iter().copied().collect();
    assert_eq!(a_set.len(), a.len(), "one daemon claimed a shipment twice");
    assert_eq!(b_set.len(), b.len(), "one daemon claimed a shipment twice");
    assert!(
        a_set.is_disjoint(&b_set),
        "both daemons claimed one shipment"
    );
    assert_eq!(a.len() + b.len(), 400, "every shipment claimed once");

    // The claims of a daemon that died run out, and the other takes them then, not before.
    assert!(
        two.claim_due_shipments(T0 + 5 * MIN, T0 + 20 * MIN, &[], 500)
            .await
            .unwrap()
            .is_empty()
    );
    // A daemon starting does not free what the others hold.
    two.release_all_claims(T0 + 5 * MIN).await.unwrap();
    assert!(
        two.claim_due_shipments(T0 + 5 * MIN, T0 + 20 * MIN, &[], 500)
            .await
            .unwrap()
            .is_empty()
    );
    let taken = two
        .claim_due_shipments(T0 + 10 * MIN, T0 + 20 * MIN, &[], 500)
        .await
        .unwrap();
    assert_eq!(taken.len(), 400);
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn the_claim_is_served_by_the_due_index() {
    let pg = PgDatabase::create().await;
    let db = open_pg(&pg).await;
    let batch: Vec<NewShipment> = (0..50).map(|i| new(&format!("Q-{i}"))).collect();
    db.import_shipments(&batch, T0).await.unwrap();
    db.close().await;
    let mut conn = pg.connect().await;
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN UPDATE shipments SET claimed_until = 2 WHERE id IN ( \
             SELECT id FROM shipments WHERE active = 1 AND next_poll_at <= 1 \
               AND (claimed_until IS NULL OR claimed_until <= 1) \
               AND provider <> ALL('{}'::text[]) \
             ORDER BY next_poll_at LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("shipments_due"), "{plan}");
    conn.close().await.unwrap();
}

/// A claim writes only `claimed_until`, which no index holds; with room left on each page
/// (migration 0005's `fillfactor`), PostgreSQL writes each claimed row's new version on the row's
/// own page and touches no index. Rows on full pages moved instead, each with an entry in every
/// index: the claim on 10 million shipments took twice as long (docs/benchmarks.md#postgresql).
/// The due rows are spread over the table, one in 25, as a grown shop's are; the room kept is
/// for a few rows a page, not for a page whose rows are all due at once.
#[tokio::test]
async fn a_claim_updates_its_rows_in_place() {
    let pg = PgDatabase::create().await;
    let db = open_pg(&pg).await;
    let mut conn = pg.connect().await;
    sqlx::query(
        "INSERT INTO shipments (order_id, provider, tracking_no, next_poll_at, created_at) \
         SELECT 'P-' || g, 'taobao', 'ZT' || g, \
             CASE WHEN g % 25 = 0 THEN $1 ELSE $1 + 86400000 END, $1 \
         FROM generate_series(1, 5000) g",
    )
    .bind(T0)
    .execute(&mut conn)
    .await
    .unwrap();
    let page_of = "SELECT id, (ctid::text::point)[0]::BIGINT FROM shipments ORDER BY id";
    let before: Vec<(i64, i64)> = sqlx::query_as(page_of).fetch_all(&mut conn).await.unwrap();
    let pages: std::collections::HashSet<i64> = before.iter().map(|(_, page)| *page).collect();
    assert!(pages.len() > 10, "2,000 rows on {} pages", pages.len());
    let claimed = db
        .claim_due_shipments(T0 + 10 * MIN, T0 + 11 * MIN, &[], 64)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 64);
    let after: Vec<(i64, i64)> = sqlx::query_as(page_of).fetch_all(&mut conn).await.unwrap();
    let moved: Vec<i64> = before
        .iter()
        .zip(&after)
        .filter(|(was, is)| was != is)
        .map(|((id, _), _)| *id)
        .collect();
    assert!(
        moved.is_empty(),
        "claimed rows moved to other pages: {moved:?}"
    );
    let claimed_until: i64 =
        sqlx::query_scalar("SELECT count(*) FROM shipments WHERE claimed_until = $1")
            .bind(T0 + 11 * MIN)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(claimed_until, 64);
    conn.close().await.unwrap();
    db.close().await;
}

/// PostgreSQL's errors are told apart by their SQLSTATE class, not read as SQLite's result codes
/// (`StorageError::is_outage`): a value the server cannot take is the row's fault, a statement
/// the server cancelled is an outage.
#[tokio::test]
async fn postgres_errors_are_outages_by_their_class() {
    use shipwatch::storage::StorageError;
    let pg = PgDatabase::create().await;
    let mut conn = pg.connect().await;
    // What a statement fails with, and its SQLSTATE.
    async fn refused(conn: &mut sqlx::PgConnection, sql: &'static str) -> (String, sqlx::Error) {
        let error = sqlx::raw_sql(sql).execute(conn).await.unwrap_err();
        let code = error.as_database_error().and_then(|d| d.code());
        (code.map(|c| c.into_owned()).unwrap_or_default(), error)
    }
    let (code, bad_value) = refused(&mut conn, "SELECT 'twelve'::int").await;
    assert_eq!(code, "22P02");
    let bad_value = StorageError::Sql(bad_value);
    assert!(!bad_value.is_outage(), "{bad_value}");
    let (code, cancelled) =
        refused(&mut conn, "SET statement_timeout = 1; SELECT pg_sleep(1)").await;
    assert_eq!(code, "57014");
    let cancelled = StorageError::Sql(cancelled);
    assert!(cancelled.is_outage(), "{cancelled}");
}
