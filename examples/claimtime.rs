use shipwatch::config::Synchronous;
use shipwatch::storage::{Db, Location};
use sqlx::Row;
use std::time::{Duration, Instant};

const COLS: &str = "id, order_id, provider, tracking_no, carrier, tier, \
     phone, email, openid, status, raw_status, (active = 1) AS active, error, transitions, \
     next_poll_at, last_polled_at, last_event_at, status_changed_at, created_at, sub_orders, \
     NULL::TEXT AS type_error";

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{name}: p50 {:.3} ms p90 {:.3} p99 {:.3}",
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

fn main() {
    let flavor = std::env::args().nth(5).unwrap_or_default();
    let rt = if flavor == "current" {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    rt.block_on(run());
}

async fn run() {
    let url = std::env::args().nth(1).unwrap();
    let now: i64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let n: usize = std::env::args().nth(3).unwrap().parse().unwrap();
    let mode = std::env::args().nth(4).unwrap_or_default();
    let db = Db::open(Location::parse(&url).unwrap(), Synchronous::Normal)
        .await
        .unwrap();
    let mut conn = <sqlx::postgres::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let mut conn2 = <sqlx::postgres::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let sql = format!(
        "WITH picked AS MATERIALIZED ( \
                 SELECT id AS picked_id FROM shipments \
                 WHERE active = 1 AND next_poll_at <= $2 \
                   AND (claimed_until IS NULL OR claimed_until <= $2) \
                   AND provider <> ALL($3::text[]) \
                 ORDER BY next_poll_at, id LIMIT $4 \
                 FOR UPDATE SKIP LOCKED) \
             UPDATE shipments SET claimed_until = $1 FROM picked WHERE id = picked_id \
             RETURNING {COLS}"
    );
    let mut times = Vec::new();
    for _ in 0..n {
        let began = Instant::now();
        let ids: Vec<i64> = if mode == "raw" {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(now + 60_000)
                .bind(now)
                .bind(Vec::<String>::new())
                .bind(64i64)
                .fetch_all(&mut conn2)
                .await
                .unwrap();
            rows.iter().map(|r| r.get::<i64, _>(0)).collect()
        } else {
            db.claim_due_shipments(now, now + 60_000, &[], 64)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect()
        };
        times.push(began.elapsed());
        assert_eq!(ids.len(), 64);
        sqlx::query(
            "UPDATE shipments SET claimed_until = NULL, next_poll_at = $1 WHERE id = ANY($2)",
        )
        .bind(now + 3_600_000)
        .bind(&ids)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    report(&mode, times);
}
