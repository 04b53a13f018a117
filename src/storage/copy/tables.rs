//! What [`super`] copies: every table of the schema with its key and its columns' types, and the
//! tables it leaves out.

/// The type a column holds: every column of the schema is an integer (BIGINT on PostgreSQL) or
/// text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Integer,
    Text,
}

/// A table as the copy carries it: its key (what orders the chunks and finds a sampled row on
/// the other side) and every column with its type, the key's first.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static [&'static str],
    pub columns: &'static [(&'static str, Kind)],
    /// `id` is an identity column on PostgreSQL, whose sequence must start past the copied ids.
    pub identity: bool,
}

use Kind::{Integer, Text};

/// Every table of the schema, a referenced table before those that reference it. A table or a
/// column the source has and this list lacks stops the copy before it writes anything, so that
/// a new migration cannot be forgotten here silently.
pub const TABLES: &[Table] = &[
    Table {
        name: "shipments",
        key: &["id"],
        columns: &[
            ("id", Integer),
            ("order_id", Text),
            ("provider", Text),
            ("tracking_no", Text),
            ("carrier", Text),
            ("tier", Text),
            ("phone", Text),
            ("email", Text),
            ("status", Text),
            ("raw_status", Text),
            ("active", Integer),
            ("error", Text),
            ("transitions", Integer),
            ("claimed_until", Integer),
            ("next_poll_at", Integer),
            ("last_polled_at", Integer),
            ("last_event_at", Integer),
            ("status_changed_at", Integer),
            ("created_at", Integer),
            ("stalls", Integer),
            ("stuck_alerted_for", Integer),
            ("sub_orders", Text),
            ("invalid_kind", Text),
            ("openid", Text),
            ("events_digest", Integer),
        ],
        identity: true,
    },
    Table {
        name: "events",
        key: &["id"],
        columns: &[
            ("id", Integer),
            ("shipment_id", Integer),
            ("time", Integer),
            ("description", Text),
            ("location", Text),
            ("raw_code", Text),
        ],
        identity: true,
    },
    Table {
        name: "notifications",
        key: &["id"],
        columns: &[
            ("id", Integer),
            ("public_id", Text),
            ("shipment_id", Integer),
            ("kind", Text),
            ("transition", Integer),
            ("channel", Text),
            ("previous_status", Text),
            ("status", Text),
            ("payload", Text),
            ("recipient", Text),
            ("state", Text),
            ("attempts", Integer),
            ("next_attempt_at", Integer),
            ("lease_until", Integer),
            ("last_error", Text),
            ("created_at", Integer),
            ("sent_at", Integer),
            ("attempt_started", Integer),
            ("cut_short", Integer),
        ],
        identity: true,
    },
    Table {
        name: "subscriptions",
        key: &["shipment_id"],
        columns: &[
            ("shipment_id", Integer),
            ("provider", Text),
            ("state", Text),
            ("subscribed_at", Integer),
            ("subscribes", Integer),
            ("last_callback_at", Integer),
            ("ended_at", Integer),
            ("message", Text),
        ],
        identity: false,
    },
    Table {
        name: "provider_state",
        key: &["provider"],
        columns: &[
            ("provider", Text),
            ("banned_until", Integer),
            ("reason", Text),
            ("updated_at", Integer),
            ("paused_until", Integer),
            ("pause_reason", Text),
        ],
        identity: false,
    },
    Table {
        name: "unmapped",
        key: &["provider", "value"],
        columns: &[
            ("provider", Text),
            ("value", Text),
            ("count", Integer),
            ("first_seen", Integer),
            ("last_seen", Integer),
        ],
        identity: false,
    },
    Table {
        name: "poll_counts",
        key: &["minute", "provider", "result"],
        columns: &[
            ("minute", Integer),
            ("provider", Text),
            ("result", Text),
            ("count", Integer),
        ],
        identity: false,
    },
    Table {
        name: "channel_state",
        key: &["channel"],
        columns: &[
            ("channel", Text),
            ("paused_until", Integer),
            ("reason", Text),
            ("updated_at", Integer),
        ],
        identity: false,
    },
];

/// The tables a copy does not carry: the engines' own bookkeeping (each side's migrations), and
/// any state that only lives while daemons run: who is running (`daemons`, each daemon registers
/// itself at start) and where each provider's shared call schedule stands (`quota`, which starts
/// afresh from the server's clock).
pub(super) const NOT_COPIED: &[&str] = &["_sqlx_migrations", "daemons", "quota"];
