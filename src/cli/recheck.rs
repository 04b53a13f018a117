//! `shipwatch recheck`: check shipments flagged invalid again, against the config and the rows as
//! they are now, and revive the ones that are fine.

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::daemon::{build_providers, upstream_client};
use crate::dispatch::pollable::{self, Rechecked, Seen};
use crate::storage::{Db, Invalid, StorageError};

use super::print::JsonArray;
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
    let mut out = Out::new(json, all_invalid);
    let mut missing = 0;
    if all_invalid {
        pollable::recheck_invalid(&db, &providers, Invalid::All, now, |seen, rechecked| {
            out.push(match seen {
                Seen::Order(order_id) => line(Some(order_id), None, rechecked),
                Seen::Unreadable(id) => line(None, Some(id), rechecked),
            })
        })
        .await?;
    } else {
        for order_id in orders {
            match pollable::recheck_order(&db, &providers, order_id, now).await {
                Ok(rechecked) => out.push(line(Some(order_id.clone()), None, rechecked)),
                Err(e @ StorageError::NoSuchOrder(_)) => {
                    missing += 1;
                    eprintln!("error: {}", term(&e.to_string()));
                    out.push(Line {
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
    out.finish()?;
    if missing > 0 {
        return Err(Reported.into());
    }
    Ok(())
}

/// Where the lines go, each as it comes (a recheck of every invalid shipment may see a million):
/// elements of one JSON array, or a line of text each and, after `--all-invalid`, the counts.
enum Out {
    Json {
        array: JsonArray<std::io::BufWriter<std::io::Stdout>>,
        /// The first failure to write, returned by [`Out::finish`].
        failed: Option<anyhow::Error>,
    },
    Text {
        all_invalid: bool,
        seen: usize,
        revived: usize,
    },
}

impl Out {
    fn new(json: bool, all_invalid: bool) -> Out {
        if json {
            Out::Json {
                array: JsonArray::stdout(),
                failed: None,
            }
        } else {
            Out::Text {
                all_invalid,
                seen: 0,
                revived: 0,
            }
        }
    }

    fn push(&mut self, line: Line) {
        match self {
            Out::Json { array, failed } => {
                if failed.is_none()
                    && let Err(e) = array.push(&line)
                {
                    *failed = Some(e);
                }
            }
            Out::Text { seen, revived, .. } => {
                *seen += 1;
                *revived += usize::from(line.result == "revived");
                print_line(&line);
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Out::Json { array, failed } => {
                if let Some(e) = failed {
                    return Err(e);
                }
                array.finish()?;
            }
            Out::Text {
                all_invalid: true,
                seen: 0,
                ..
            } => println!("no invalid shipments"),
            Out::Text {
                all_invalid: true,
                seen,
                revived,
            } => println!("{revived} revived, {} still invalid", seen - revived),
            Out::Text { .. } => {}
        }
        Ok(())
    }
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

fn print_line(line: &Line) {
    let who = match (&line.order_id, line.shipment_id) {
        (Some(order_id), _) => format!("order {}", term(order_id)),
        (None, Some(id)) => format!("shipment #{id}"),
        (None, None) => return,
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
