//! The checks of a row another program inserted with SQL, made when the dispatcher picks it up:
//! what `add` and `import` check before a row is written, for rows that never went through them.

use crate::clock::Millis;
use crate::domain::InvalidContact;
use crate::storage::ShipmentRow;

/// Why a row another program inserted cannot be polled as it stands: one line that names the
/// column and never shows a phone number or an email address whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredRowError {
    #[error(transparent)]
    Contact(#[from] InvalidContact),
    #[error(
        "{column} = {at} is before 2000: times are milliseconds since 1970-01-01 UTC, not seconds"
    )]
    Seconds { column: &'static str, at: Millis },
    #[error(
        "{column} = {at} ({}) is in the future: times are milliseconds since 1970-01-01 UTC",
        shown_time(*.at)
    )]
    Future { column: &'static str, at: Millis },
}

/// 2000-01-01T00:00:00Z: no parcel shipwatch tracks began earlier, and a time before it is
/// almost always seconds written where milliseconds belong.
const EARLIEST: Millis = 946_684_800_000;

/// How far ahead of our clock the start of tracking may be (another machine's clock): a day.
/// Further is a wrong unit or a typo, and would keep the shipment from ever expiring.
const AHEAD_SLACK: Millis = 86_400_000;

/// Checks what `add` and `import` check, for a row some other program inserted with SQL: the
/// contact details, and when tracking began. The reason is one line that names the
/// column and never shows a phone number or an email address whole.
pub fn check_stored(row: &ShipmentRow, now: Millis) -> Result<(), StoredRowError> {
    // Parsed when the row was read; what did not parse is kept apart for this.
    if let Some(invalid) = &row.invalid_contact {
        return Err(invalid.clone().into());
    }
    // Only the start of tracking: the other times are the daemon's own, or the carrier's, whose
    // clock is not the shop's mistake.
    check_time("created_at", row.created_at, now)
}

fn check_time(column: &'static str, at: Millis, now: Millis) -> Result<(), StoredRowError> {
    if at < EARLIEST {
        return Err(StoredRowError::Seconds { column, at });
    }
    if at > now.saturating_add(AHEAD_SLACK) {
        return Err(StoredRowError::Future { column, at });
    }
    Ok(())
}

/// A database time for a message about the raw value: RFC 3339 in UTC, like the value itself.
pub fn shown_time(at: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at).map_or_else(
        || "not a date".to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Phone, Tier};

    fn stored(created_at: Millis) -> ShipmentRow {
        ShipmentRow {
            id: 1,
            order_id: "123".into(),
            provider: "taobao".into(),
            tracking_no: None,
            carrier: None,
            tier: Tier::Normal,
            phone: None,
            email: None,
            openid: None,
            status: crate::domain::Status::Pending,
            raw_status: None,
            active: true,
            error: None,
            transitions: 0,
            next_poll_at: created_at,
            last_polled_at: None,
            last_event_at: None,
            status_changed_at: None,
            created_at,
            sub_orders: None,
            events_digest: None,
            type_error: None,
            invalid_contact: None,
        }
    }

    const NOW: Millis = 1_764_300_000_000;

    #[test]
    fn stored_rows_are_judged_like_added_ones_without_showing_contacts() {
        assert_eq!(check_stored(&stored(NOW), NOW), Ok(()));
        let good = ShipmentRow {
            phone: Some(Phone::parse("+86 138-1234-5678").unwrap()),
            email: Some(Email::parse("zhang@shop.example").unwrap()),
            ..stored(NOW - 1)
        };
        assert_eq!(check_stored(&good, NOW), Ok(()));

        // What the reader keeps apart when a contact column does not parse (storage's tests
        // read such rows from a real database).
        let bad_phone = ShipmentRow {
            invalid_contact: Some(Phone::parse("138-1234-567").unwrap_err().into()),
            ..stored(NOW)
        };
        let err = check_stored(&bad_phone, NOW).unwrap_err().to_string();
        assert!(err.contains("not a mainland mobile"), "{err}");
        assert!(!err.contains("138-1234-567"), "{err}");
        let bad_email = ShipmentRow {
            invalid_contact: Some(Email::parse("zhang.wei at shop").unwrap_err().into()),
            ..stored(NOW)
        };
        let err = check_stored(&bad_email, NOW).unwrap_err().to_string();
        assert!(err.contains("not an email address"), "{err}");
        assert!(!err.contains("zhang.wei"), "{err}");
    }

    #[test]
    fn a_start_of_tracking_in_the_future_or_in_seconds_is_refused() {
        let err = check_stored(&stored(253_402_300_799_000), NOW)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "created_at = 253402300799000 (9999-12-31T23:59:59Z) is in the future: times are milliseconds since 1970-01-01 UTC"
        );
        let err = check_stored(&stored(i64::MAX), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(not a date) is in the future"), "{err}");
        let err = check_stored(&stored(NOW / 1000), NOW)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("before 2000") && err.contains("not seconds"),
            "{err}"
        );
        // Another machine's clock a few hours ahead is not a mistake.
        assert_eq!(check_stored(&stored(NOW + 3_600_000), NOW), Ok(()));
        // The bounds themselves: 2000-01-01T00:00:00Z is taken, and so is a whole day ahead.
        assert_eq!(check_stored(&stored(EARLIEST), NOW), Ok(()));
        assert!(check_stored(&stored(EARLIEST - 1), NOW).is_err());
        assert_eq!(check_stored(&stored(NOW + AHEAD_SLACK), NOW), Ok(()));
        assert!(check_stored(&stored(NOW + AHEAD_SLACK + 1), NOW).is_err());
    }
}
