//! `shipwatch list`: the tracked shipments, as a table or as JSON, filtered by provider, status,
//! tier and time of the last status change, and cut to a number of rows.

use std::str::FromStr;

use anyhow::Result;
use chrono::DateTime;

use crate::clock::{Clock, Millis, SystemClock, millis, to_rfc3339};
use crate::config::HumanDuration;
use crate::storage::{ShipmentFilter, ShipmentRow, ShipmentView};

use super::print::{Listing, PAGE};
use super::{Access, Global, ListArgs, open};

const HEADERS: &[&str] = &[
    "ORDER",
    "PROVIDER",
    "TIER",
    "STATUS",
    "RAW STATUS",
    "NEXT POLL",
    "NOTE",
];

/// Reads and prints a page of shipments at a time ([`PAGE`]), so that a listing of a million
/// starts at once and holds one page in memory.
pub(super) async fn list(global: &Global, args: ListArgs) -> Result<()> {
    let (db, _) = open(global, Access::Read).await?;
    let mut filter = ShipmentFilter {
        provider: args.provider,
        status: args.status,
        tier: args.tier,
        changed_since: args.since.map(|since| since.at(SystemClock.now())),
        limit: None,
        after: None,
    };
    let mut left = args.limit;
    let mut listing = Listing::new(args.json, HEADERS);
    loop {
        let want = left.map_or(PAGE, |left| left.min(PAGE));
        filter.limit = Some(want);
        let page = db.shipments_page(&filter).await?;
        listing.page(&page.rows, |row| ShipmentView::from(row), shipment_line)?;
        left = left.map(|left| left - page.rows.len() as u32);
        match page.ids.last() {
            Some(&last) if page.ids.len() == want as usize && left != Some(0) => {
                filter.after = Some(last);
            }
            _ => break,
        }
    }
    listing.finish("no shipments")?;
    db.close().await;
    Ok(())
}

/// Where `list --since` starts: a duration back from now (`2h`, `3d`, written as the config
/// writes durations) or a moment (RFC 3339, `2026-05-01T08:00:00+08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(std::time::Duration),
    At(Millis),
}

impl Since {
    /// The moment it names, `now` being now.
    pub fn at(self, now: Millis) -> Millis {
        match self {
            Since::Ago(ago) => now.saturating_sub(millis(ago)),
            Since::At(at) => at,
        }
    }
}

/// A `--since` that is neither a duration nor a moment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("neither a duration (like 2h or 3d) nor an RFC 3339 time (like 2026-05-01T08:00:00+08:00)")]
pub struct BadSince;

impl FromStr for Since {
    type Err = BadSince;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(at) = DateTime::parse_from_rfc3339(s.trim()) {
            return Ok(Since::At(at.timestamp_millis()));
        }
        match s.parse::<HumanDuration>() {
            Ok(HumanDuration(ago)) => Ok(Since::Ago(ago)),
            Err(_) => Err(BadSince),
        }
    }
}

fn shipment_line(row: &ShipmentRow) -> Vec<String> {
    let next = if row.active {
        to_rfc3339(row.next_poll_at)
    } else {
        "-".to_owned()
    };
    let note = match (&row.error, row.active) {
        (Some(e), false) => format!("INVALID: {e}"),
        (Some(e), true) => format!("last poll failed: {e}"),
        (None, _) => String::new(),
    };
    vec![
        row.order_id.clone(),
        row.provider.clone(),
        row.tier.to_string(),
        row.status.to_string(),
        row.raw_status.clone().unwrap_or_default(),
        next,
        note,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_back_from_now_or_a_moment() {
        let now = 1_800_000_000_000;
        let at = |s: &str| s.parse::<Since>().map(|since| since.at(now));
        assert_eq!(at("2h"), Ok(now - 2 * 3_600_000));
        assert_eq!(at("3d"), Ok(now - 3 * 86_400_000));
        assert_eq!(at("90s"), Ok(now - 90_000));
        assert_eq!(at("1970-01-01T08:00:00+08:00"), Ok(0));
        assert_eq!(at("2016-01-01T04:00:00Z"), Ok(1_451_620_800_000));
        for bad in ["", "soon", "2", "-2h", "2026-05-01", "2026-05-01 08:00:00"] {
            let err = bad.parse::<Since>().expect_err(bad).to_string();
            assert!(
                err.contains("RFC 3339") && err.contains("2h"),
                "{bad}: {err}"
            );
        }
        // Far back is the beginning of time, not an overflow.
        assert!(Since::Ago(std::time::Duration::MAX).at(now) < 0);
    }
}
