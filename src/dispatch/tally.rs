//! Polls counted by provider and result, for `stats`: counted in memory as they happen and
//! added to the `poll_counts` table every few seconds, so a poll costs no extra write.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tracing::warn;

use crate::clock::Millis;
use crate::storage::{Db, PollCount, StorageError};

/// How often counts are written: `stats` may be this much behind.
const FLUSH_EVERY_MS: Millis = 10_000;

#[derive(Default)]
pub struct PollTally(Mutex<Counts>);

#[derive(Default)]
struct Counts {
    /// When the counts were last written.
    flushed_at: Option<Millis>,
    by_result: BTreeMap<(String, &'static str), i64>,
}

impl PollTally {
    pub fn count(&self, provider: &str, result: &'static str) {
        let mut counts = self.lock();
        match counts.by_result.get_mut(&(provider.to_owned(), result)) {
            Some(n) => *n += 1,
            None => {
                counts.by_result.insert((provider.to_owned(), result), 1);
            }
        }
    }

    /// Writes the counts when the last write is [`FLUSH_EVERY_MS`] old.
    pub async fn flush_if_due(&self, db: &Db, now: Millis) {
        let due = {
            let mut counts = self.lock();
            let due = counts
                .flushed_at
                .is_none_or(|at| now - at >= FLUSH_EVERY_MS);
            if counts.flushed_at.is_none() {
                counts.flushed_at = Some(now);
            }
            due && !counts.by_result.is_empty()
        };
        if due && let Err(e) = self.flush(db, now).await {
            warn!(error = %e, "could not record poll counts; they are kept and written later");
        }
    }

    /// Adds the counts so far to the minute `now` falls in. On failure the counts are kept for
    /// the next attempt.
    pub async fn flush(&self, db: &Db, now: Millis) -> Result<(), StorageError> {
        let taken = {
            let mut counts = self.lock();
            counts.flushed_at = Some(now);
            std::mem::take(&mut counts.by_result)
        };
        if taken.is_empty() {
            return Ok(());
        }
        let rows: Vec<PollCount> = taken
            .iter()
            .map(|((provider, result), count)| PollCount {
                provider: provider.clone(),
                result: (*result).to_owned(),
                count: *count,
            })
            .collect();
        let written = db
            .add_poll_counts(now - now.rem_euclid(60_000), &rows)
            .await;
        if written.is_err() {
            let mut counts = self.lock();
            for (key, n) in taken {
                *counts.by_result.entry(key).or_default() += n;
            }
        }
        written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;

    #[tokio::test]
    async fn counts_reach_the_table_every_ten_seconds_and_stats_see_the_last_hour() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), Synchronous::Normal)
            .await
            .unwrap();
        let tally = PollTally::default();
        let t0: Millis = 1_800_000_000_000;
        tally.flush_if_due(&db, t0).await;
        tally.count("taobao", "ok");
        tally.count("taobao", "ok");
        tally.count("taobao", "transient");
        tally.count("kuaidi100", "ok");
        tally.flush_if_due(&db, t0 + 5_000).await;
        assert!(db.polls_last_hour(t0 + 5_000).await.unwrap().is_empty());
        tally.flush_if_due(&db, t0 + 10_000).await;
        let row = |p: &str, r: &str, n| PollCount {
            provider: p.into(),
            result: r.into(),
            count: n,
        };
        assert_eq!(
            db.polls_last_hour(t0 + 10_000).await.unwrap(),
            vec![
                row("kuaidi100", "ok", 1),
                row("taobao", "ok", 2),
                row("taobao", "transient", 1)
            ]
        );
        // Counts of the same minute add up; after an hour they no longer count.
        tally.count("taobao", "ok");
        tally.flush(&db, t0 + 20_000).await.unwrap();
        let later = db.polls_last_hour(t0 + 30_000).await.unwrap();
        assert_eq!(later[1], row("taobao", "ok", 3));
        // Counts go to the minute they were made in (t0 here, though flushed 20 s into it):
        // an hour after that minute began they are gone.
        assert_eq!(db.polls_last_hour(t0 + 3_599_999).await.unwrap().len(), 3);
        assert!(db.polls_last_hour(t0 + 3_600_000).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn counts_that_cannot_be_written_are_kept_for_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &'static str| {
            let path = dir.path().join(name);
            async move { Db::open(&path, Synchronous::Normal).await.unwrap() }
        };
        let (gone, db) = (open("gone.db").await, open("t.db").await);
        gone.close().await;
        let tally = PollTally::default();
        let t0: Millis = 1_800_000_000_000;
        tally.count("taobao", "ok");
        tally.count("taobao", "ok");
        assert!(tally.flush(&gone, t0).await.is_err());
        tally.count("taobao", "ok");
        tally.flush(&db, t0 + 1_000).await.unwrap();
        assert_eq!(
            db.polls_last_hour(t0 + 2_000).await.unwrap(),
            vec![PollCount {
                provider: "taobao".into(),
                result: "ok".into(),
                count: 3,
            }]
        );
    }
}
