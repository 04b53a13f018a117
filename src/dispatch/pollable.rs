//! Whether a stored shipment can be polled as it stands, against the configured providers: the
//! one set of rules the dispatcher applies to every row it picks up, and that a recheck applies
//! to a row flagged invalid, to revive it once it is fixed (the row, or the config).

use std::sync::Arc;

use tracing::info;

use super::{ProviderRuntime, Providers, track_request};
use crate::clock::Millis;
use crate::intake::StoredRowError;
use crate::providers::UnfitRequest;
use crate::storage::{Db, Invalid, InvalidKind, RecheckWrite, ShipmentRow, StorageError};

/// Why a shipment cannot be polled as it stands, in one line: the row's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unpollable {
    /// A column holds a value of the wrong storage class.
    #[error("{0}")]
    Mistyped(String),
    #[error(
        "unknown provider {name:?}: configured providers are {configured}; fix the row or add [providers.{name}] to the config"
    )]
    UnknownProvider {
        name: String,
        /// The configured provider names, or `none`.
        configured: String,
    },
    /// What `add` and `import` would have refused: a contact, the start of tracking.
    #[error(transparent)]
    Stored(#[from] StoredRowError),
    /// What the provider needs and the row lacks.
    #[error(transparent)]
    Unfit(#[from] UnfitRequest),
}

impl Unpollable {
    pub fn kind(&self) -> InvalidKind {
        match self {
            Unpollable::UnknownProvider { .. } => InvalidKind::UnknownProvider,
            Unpollable::Mistyped(_) | Unpollable::Stored(_) | Unpollable::Unfit(_) => {
                InvalidKind::Row
            }
        }
    }
}

/// The provider that polls `row`, or why the row cannot be polled as it stands. Rows inserted
/// with SQL were never checked by `add` or `import`, so everything they check is checked here.
pub fn pollable(
    row: &ShipmentRow,
    providers: &Providers,
    now: Millis,
) -> Result<Arc<ProviderRuntime>, Unpollable> {
    // A mistyped column first: the provider name itself may be the misfit.
    if let Some(reason) = &row.type_error {
        return Err(Unpollable::Mistyped(reason.clone()));
    }
    let Some(provider) = providers.get(&row.provider) else {
        return Err(Unpollable::UnknownProvider {
            name: row.provider.clone(),
            configured: configured(providers),
        });
    };
    crate::intake::check_stored(row, now)?;
    provider.adapter.check(&track_request(row))?;
    Ok(provider.clone())
}

/// The configured provider names, comma-separated, or `none`.
pub fn configured(providers: &Providers) -> String {
    if providers.is_empty() {
        return "none".to_owned();
    }
    providers.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// What a recheck does with `row`: an invalid row that the rules now let through is revived;
/// one that they still stop stays invalid with today's reason (which may differ from the one it
/// was flagged with); any other row is left alone. A row that the provider refused when it was
/// polled passes the rules, which cannot ask upstream: it is revived and polled again, and
/// flagged again if the provider still refuses it.
pub fn recheck(row: &ShipmentRow, providers: &Providers, now: Millis) -> RecheckWrite {
    if !row.is_invalid() {
        return RecheckWrite::Leave;
    }
    match pollable(row, providers, now) {
        Ok(_) => RecheckWrite::Revive,
        Err(why) => RecheckWrite::StillInvalid {
            kind: why.kind(),
            reason: why.to_string(),
        },
    }
}

/// What a recheck found for one shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rechecked {
    /// Polled again from now on.
    Revived,
    /// Still stopped, for this reason.
    StillInvalid(String),
    /// Not flagged invalid: nothing to do.
    NotInvalid,
}

impl From<RecheckWrite> for Rechecked {
    fn from(write: RecheckWrite) -> Self {
        match write {
            RecheckWrite::Revive => Rechecked::Revived,
            RecheckWrite::StillInvalid { reason, .. } => Rechecked::StillInvalid(reason),
            RecheckWrite::Leave => Rechecked::NotInvalid,
        }
    }
}

/// Rechecks the shipment of `order_id` against `providers`, and revives it if it is now fine.
pub async fn recheck_order(
    db: &Db,
    providers: &Providers,
    order_id: &str,
    now: Millis,
) -> Result<Rechecked, StorageError> {
    match db
        .recheck_order(order_id, now, |row| recheck(row, providers, now))
        .await
    {
        Ok((_, write)) => Ok(write.into()),
        // It was flagged when it could not be read, and stays so.
        Err(StorageError::Rejected(reason)) => Ok(Rechecked::StillInvalid(reason)),
        Err(e) => Err(e),
    }
}

/// Rows rechecked per transaction.
const BATCH: i64 = 500;

/// A shipment a bulk recheck saw: its order id, or its row id when the row cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Order(String),
    Unreadable(i64),
}

/// Rechecks the invalid shipments `which` picks, in batches, reviving those that are now fine,
/// and hands each one to `each` as its batch is committed: what is kept of them is the caller's
/// (a mass recheck of a million holds one batch).
pub async fn recheck_invalid(
    db: &Db,
    providers: &Providers,
    which: Invalid<'_>,
    now: Millis,
    mut each: impl FnMut(Seen, Rechecked),
) -> Result<(), StorageError> {
    let mut after = 0;
    loop {
        let batch = db
            .recheck_invalid(which, after, BATCH, now, |row| recheck(row, providers, now))
            .await?;
        after = batch
            .rechecked
            .iter()
            .map(|(row, _)| row.id)
            .chain(batch.unreadable.iter().map(|(id, _)| *id))
            .fold(after, i64::max);
        for (row, write) in batch.rechecked {
            each(Seen::Order(row.order_id), write.into());
        }
        for (id, reason) in batch.unreadable {
            each(Seen::Unreadable(id), Rechecked::StillInvalid(reason));
        }
        if batch.read < BATCH as usize {
            return Ok(());
        }
    }
}

/// Rechecks the shipments flagged for an unknown provider that `providers` now defines, and
/// logs what came of it: at daemon start, and after a reload. Returns how many were revived.
pub async fn revive_known_providers(
    db: &Db,
    providers: &Providers,
    now: Millis,
) -> Result<usize, StorageError> {
    let names: Vec<String> = providers.keys().cloned().collect();
    let (mut seen, mut revived) = (0, 0);
    recheck_invalid(
        db,
        providers,
        Invalid::UnknownProviderIn(&names),
        now,
        |_, rechecked| {
            seen += 1;
            revived += usize::from(rechecked == Rechecked::Revived);
        },
    )
    .await?;
    if seen > 0 {
        info!(
            revived,
            still_invalid = seen - revived,
            "rechecked the shipments flagged for a provider the config now defines: {revived} revived"
        );
    }
    Ok(revived)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::{Status, Tier};
    use crate::providers::{Provider, ProviderError, Trace, TrackRequest};

    /// Wants numeric order ids, as TOP does.
    struct Numeric;

    #[async_trait]
    impl Provider for Numeric {
        fn kind(&self) -> &'static str {
            "numeric"
        }

        fn check(&self, request: &TrackRequest) -> Result<(), UnfitRequest> {
            if request.order_id.bytes().all(|b| b.is_ascii_digit()) {
                Ok(())
            } else {
                Err(UnfitRequest::new(
                    "order_id",
                    format!("order id {:?} is not a numeric order id", request.order_id),
                ))
            }
        }

        async fn fetch(&self, _: &TrackRequest) -> Result<Trace, ProviderError> {
            Err(ProviderError::Transient("not in unit tests".into()))
        }
    }

    fn providers(names: &[&str]) -> Providers {
        names
            .iter()
            .map(|name| {
                let runtime = ProviderRuntime::new(name, Arc::new(Numeric), None);
                (name.to_string(), Arc::new(runtime))
            })
            .collect::<BTreeMap<_, _>>()
    }

    const NOW: Millis = 1_764_300_000_000;

    fn invalid(provider: &str, order_id: &str, error: &str) -> ShipmentRow {
        ShipmentRow {
            id: 1,
            order_id: order_id.into(),
            provider: provider.into(),
            tracking_no: None,
            carrier: None,
            tier: Tier::Normal,
            phone: None,
            email: None,
            openid: None,
            status: Status::Pending,
            raw_status: None,
            active: false,
            error: Some(error.into()),
            transitions: 0,
            next_poll_at: NOW,
            last_polled_at: Some(NOW),
            last_event_at: None,
            status_changed_at: None,
            created_at: NOW - 1_000,
            sub_orders: None,
            events_digest: None,
            type_error: None,
            invalid_contact: None,
        }
    }

    #[test]
    fn an_unknown_provider_reads_as_before_and_is_its_own_kind() {
        let row = invalid("dhl", "123", "x");
        let why = pollable(&row, &providers(&["taobao", "kd"]), NOW)
            .err()
            .expect("refused");
        assert_eq!(
            why.to_string(),
            "unknown provider \"dhl\": configured providers are kd, taobao; fix the row or add [providers.dhl] to the config"
        );
        assert_eq!(why.kind(), InvalidKind::UnknownProvider);
        let none = pollable(&row, &providers(&[]), NOW).err().expect("refused");
        assert!(
            none.to_string().contains("configured providers are none"),
            "{none}"
        );
    }

    #[test]
    fn a_recheck_revives_what_the_rules_now_let_through() {
        let flagged = "unknown provider \"dhl\": …";
        let with = providers(&["taobao", "dhl"]);
        let without = providers(&["taobao"]);
        let contact = crate::domain::Phone::parse("138-1234-567").unwrap_err();
        // (the row, the providers, what a recheck writes)
        let table: Vec<(ShipmentRow, &Providers, RecheckWrite)> = vec![
            // The provider was added.
            (invalid("dhl", "123", flagged), &with, RecheckWrite::Revive),
            // Still missing: the same reason, today's list of providers.
            (
                invalid("dhl", "123", flagged),
                &without,
                RecheckWrite::StillInvalid {
                    kind: InvalidKind::UnknownProvider,
                    reason: "unknown provider \"dhl\": configured providers are taobao; fix the row or add [providers.dhl] to the config".into(),
                },
            ),
            // The provider came, but the row has another fault: that one is reported now.
            (
                invalid("dhl", "TB-1", flagged),
                &with,
                RecheckWrite::StillInvalid {
                    kind: InvalidKind::Row,
                    reason: "order id \"TB-1\" is not a numeric order id".into(),
                },
            ),
            (
                ShipmentRow {
                    invalid_contact: Some(contact.into()),
                    ..invalid("taobao", "123", "phone …")
                },
                &with,
                RecheckWrite::StillInvalid {
                    kind: InvalidKind::Row,
                    reason: "phone \"138****-567\" is not a mainland mobile number (11 digits starting with 13-19, optionally +86)".into(),
                },
            ),
            (
                ShipmentRow {
                    created_at: NOW / 1000,
                    ..invalid("taobao", "123", "created_at …")
                },
                &with,
                RecheckWrite::StillInvalid {
                    kind: InvalidKind::Row,
                    reason: format!(
                        "created_at = {} is before 2000: times are milliseconds since 1970-01-01 UTC, not seconds",
                        NOW / 1000
                    ),
                },
            ),
            (
                ShipmentRow {
                    type_error: Some("carrier holds a blob value where text belongs".into()),
                    ..invalid("dhl", "123", flagged)
                },
                &with,
                RecheckWrite::StillInvalid {
                    kind: InvalidKind::Row,
                    reason: "carrier holds a blob value where text belongs".into(),
                },
            ),
            // Refused by upstream: the rules cannot ask it, so it is polled again.
            (
                invalid("taobao", "123", "permanent: no such order"),
                &with,
                RecheckWrite::Revive,
            ),
            // Rows that are not flagged are left alone.
            (
                ShipmentRow {
                    active: true,
                    error: None,
                    ..invalid("dhl", "123", "")
                },
                &with,
                RecheckWrite::Leave,
            ),
            (
                ShipmentRow {
                    status: Status::Delivered,
                    error: None,
                    ..invalid("taobao", "123", "")
                },
                &with,
                RecheckWrite::Leave,
            ),
            (
                ShipmentRow {
                    status: Status::Expired,
                    ..invalid("taobao", "123", "transient: timed out")
                },
                &with,
                RecheckWrite::Leave,
            ),
        ];
        for (row, providers, want) in table {
            assert_eq!(
                recheck(&row, providers, NOW),
                want,
                "{} on {}",
                row.order_id,
                row.provider
            );
        }
    }

    /// A bulk recheck goes a batch at a time, and every invalid shipment is seen once: the
    /// last batch is the one short of [`BATCH`] (here 500, 500 and 1 of 1,001).
    #[tokio::test]
    async fn a_recheck_of_more_than_a_batch_sees_every_shipment_once() {
        use crate::storage::{Created, NewShipment, Synchronous};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("recheck.db"), Synchronous::Normal)
            .await
            .unwrap();
        // One in a hundred has an order id the provider refuses, and stays invalid.
        let total = 2 * BATCH as usize + 1;
        let news: Vec<NewShipment> = (0..total)
            .map(|i| match i % 100 {
                7 => NewShipment::plain(&format!("TB-{i}"), "dhl"),
                _ => NewShipment::plain(&format!("{}", 1_000_000 + i), "dhl"),
            })
            .collect();
        let created = db
            .create_shipments(&news, NOW, &|_, _, _| Vec::new())
            .await
            .unwrap();
        let flag_all = async || {
            for created in &created {
                let (Created::New(row) | Created::Existing(row)) = created;
                db.mark_invalid(
                    row.id,
                    InvalidKind::UnknownProvider,
                    "unknown provider",
                    NOW,
                )
                .await
                .unwrap();
            }
        };
        flag_all().await;

        let mut seen = BTreeMap::new();
        recheck_invalid(
            &db,
            &providers(&["dhl"]),
            Invalid::UnknownProviderIn(&["dhl".to_owned()]),
            NOW,
            |shipment, rechecked| {
                let Seen::Order(order) = shipment else {
                    panic!("every row is readable: {shipment:?}");
                };
                assert!(seen.insert(order, rechecked).is_none(), "seen twice");
            },
        )
        .await
        .unwrap();
        assert_eq!(seen.len(), total);
        let still: Vec<&String> = seen
            .iter()
            .filter(|(_, rechecked)| **rechecked != Rechecked::Revived)
            .map(|(order, _)| order)
            .collect();
        assert_eq!(still.len(), 10, "{still:?}");
        assert!(
            still.iter().all(|order| order.starts_with("TB-")),
            "{still:?}"
        );

        // Flagged for an unknown provider again, all of them: the revival a start or a reload
        // makes counts the 991 it revives, over the same batches.
        flag_all().await;
        let providers = providers(&["dhl"]);
        assert_eq!(
            revive_known_providers(&db, &providers, NOW).await.unwrap(),
            991
        );
        // The 10 left are flagged for their order ids now, which no provider fixes.
        assert_eq!(
            revive_known_providers(&db, &providers, NOW).await.unwrap(),
            0
        );
        db.close().await;
    }
}
