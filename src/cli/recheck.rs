//! `shipwatch recheck`: check shipments flagged invalid again, against the config and the rows as
//! they are now, and revive the ones that are fine.

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::daemon::{build_providers, upstream_client};
use crate::dispatch::pollable::{self, Rechecked, Seen};
use crate::storage::{Db, Invalid, StorageError};

use super::print::print_json;
use super::{Global, Reported, database_path, term};

/// One shipment's line in `--json`.
#[derive(Debug, Serialize)]
struct Line {
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    /// For a row that cannot be read, whose order id cannot be told.
    #[serde(skip_serializing_if = "Option::is_none")]
    shipment_id: Option<i64>,
    /// `revived`, `still_invalid`, `not_invalid`, or `not_found`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub(super) async fn recheck(
    global: &Global,
    orders: &[String],
    all_invalid: bool,
    json: bool,
) -> Result<()> {
    // The providers decide, so the config is needed; their secrets are not.
    let path = config::locate(global.config.as_deref()).ok_or_else(|| {
        anyhow!(
            "recheck needs the config, to know the providers: give --config FILE, set {}, or create ./shipwatch.toml",
            config::ENV_CONFIG
        )
    })?;
    let config = Config::load_without_secrets(&path)?;
    let providers = build_providers(&config, &upstream_client(&config.http)?);
    let db = Db::open_existing(&database_path(global, Some(&config))?, config.synchronous).await?;
    let now = SystemClock.now();
    let mut lines = Vec::new();
    let mut missing = 0;
    if all_invalid {
        for (seen, rechecked) in
            pollable::recheck_invalid(&db, &providers, Invalid::All, now).await?
        {
            lines.push(match seen {
                Seen::Order(order_id) => line(Some(order_id), None, rechecked),
                Seen::Unreadable(id) => line(None, Some(id), rechecked),
            });
        }
    } else {
        for order_id in orders {
            match pollable::recheck_order(&db, &providers, order_id, now).await {
                Ok(rechecked) => lines.push(line(Some(order_id.clone()), None, rechecked)),
                Err(e @ StorageError::NoSuchOrder(_)) => {
                    missing += 1;
                    eprintln!("error: {}", term(&e.to_string()));
                    lines.push(Line {
                        order_id: Some(order_id.clone()),
                        shipment_id: None,
                        result: "not_found",
                        reason: Some(e.to_string()),
                    });
                }
                Err(e) => {
                    db.close().await;
                    return Err(e.into());
                }
            }
        }
    }
    db.close().await;
    if json {
        print_json(&lines)?;
    } else {
        print_lines(&lines, all_invalid);
    }
    if missing > 0 {
        return Err(Reported.into());
    }
    Ok(())
}

fn line(order_id: Option<String>, shipment_id: Option<i64>, rechecked: Rechecked) -> Line {
    let (result, reason) = match rechecked {
        Rechecked::Revived => ("revived", None),
        Rechecked::StillInvalid(reason) => ("still_invalid", Some(reason)),
        Rechecked::NotInvalid => ("not_invalid", None),
    };
    Line {
        order_id,
        shipment_id,
        result,
        reason,
    }
}

fn print_lines(lines: &[Line], all_invalid: bool) {
    if all_invalid && lines.is_empty() {
        println!("no invalid shipments");
        return;
    }
    for line in lines {
        let who = match (&line.order_id, line.shipment_id) {
            (Some(order_id), _) => format!("order {}", term(order_id)),
            (None, Some(id)) => format!("shipment #{id}"),
            (None, None) => continue,
        };
        match (line.result, &line.reason) {
            ("revived", _) => println!("{who}: revived"),
            ("still_invalid", Some(reason)) => {
                println!("{who}: still invalid: {}", term(reason))
            }
            ("not_invalid", _) => println!("{who}: not invalid; nothing to do"),
            // Said on stderr as it happened.
            _ => {}
        }
    }
    if all_invalid {
        let revived = lines.iter().filter(|l| l.result == "revived").count();
        println!("{revived} revived, {} still invalid", lines.len() - revived);
    }
}
