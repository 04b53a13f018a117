//! Change detection: from a shipment as stored and a fresh trace to what a poll writes, and from
//! a change to the outbox rows that announce it. Pure: no I/O and no clock (time and ids come in
//! as arguments), so every rule here is a table test away. Storage executes what this decides
//! inside one transaction ([`crate::storage::Decide`]); maintenance announces its own changes
//! (expiry, no information, stuck parcels) through the same rendering.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::domain::{ChannelKind, Status};
use crate::notify::ChannelRule;
use crate::notify::payload::{self, Queued};
use crate::providers::{Trace, TraceEvent};
use crate::storage::{
    Decide, Details, NotificationKind, OutboxRow, PollWrite, ShipmentRow, ShipmentWrite,
};

/// What one successful poll brings to be recorded.
#[derive(Debug, Clone)]
pub struct PollRecord<'a> {
    pub now: Millis,
    pub trace: &'a Trace,
    /// When to poll next; ignored once the new status is terminal (polling stops).
    pub next_poll_at: Millis,
    /// Each enabled channel, with the statuses that trigger it and its texts.
    pub channels: &'a [ChannelRule],
}

impl Decide for PollRecord<'_> {
    fn decide(&self, stored: &ShipmentRow) -> PollWrite<'_> {
        track(stored, self, &mut new_public_id)
    }
}

/// Decides what `poll` writes for the shipment `stored`:
/// - a shipment removed or deactivated while the poll was in flight: nothing;
/// - a stale trace (see [`is_stale`]): the schedule only;
/// - the trace's events, unless the stored row says this very list of events was written
///   already (see [`events_digest`]);
/// - the same status: the details (raw status, newest event time, tracking
///   number and carrier when unknown) when any of them is news, else the schedule only;
/// - a new status: the new events, the status with the next transition number (a terminal
///   status stops polling), and one outbox row per channel the new status triggers.
///
/// `new_id` names each outbox row (see [`new_public_id`]).
pub fn track<'a>(
    stored: &ShipmentRow,
    poll: &PollRecord<'a>,
    new_id: &mut dyn FnMut() -> String,
) -> PollWrite<'a> {
    let trace = poll.trace;
    let mut write = PollWrite {
        now: poll.now,
        next_poll_at: poll.next_poll_at,
        events: &[],
        events_digest: None,
        shipment: ShipmentWrite::Skip,
        outbox: Vec::new(),
        unmapped: &trace.unmapped,
    };
    if !stored.active {
        write.unmapped = &[];
        return write;
    }
    let newest = trace.events.iter().max_by_key(|e| e.time);
    let newest_at = newest.map(|e| e.time.timestamp_millis());
    // An older picture than the one stored (an upstream cache, a replayed answer) changes
    // nothing but the schedule: time goes one way.
    if is_stale(stored.last_event_at, newest_at) {
        tracing::debug!(order_id = %stored.order_id, "stale trace ignored: older than the events stored");
        write.shipment = ShipmentWrite::Schedule;
        return write;
    }
    let digest = events_digest(&trace.events);
    if stored.events_digest != Some(digest) {
        write.events = &trace.events;
        write.events_digest = Some(digest);
    }
    let details = Details {
        raw_status: &trace.raw_status,
        last_event_at: newest_at,
        tracking_no: trace.tracking_no.as_deref(),
        carrier: trace.carrier.as_deref(),
    };
    let previous = stored.status;
    if trace.status == previous {
        let news = stored.raw_status.as_deref() != Some(trace.raw_status.as_str())
            || newest_at > stored.last_event_at
            || (stored.tracking_no.is_none() && details.tracking_no.is_some())
            || (stored.carrier.is_none() && details.carrier.is_some());
        write.shipment = if news {
            ShipmentWrite::Refresh(details)
        } else {
            ShipmentWrite::Schedule
        };
        return write;
    }
    let transition = stored.transitions + 1;
    let change = Change {
        shipment: stored,
        transition,
        previous,
        trace,
        newest,
        now: poll.now,
    };
    write.outbox = announce(&change, poll.channels, new_id);
    write.shipment = ShipmentWrite::Change {
        previous,
        status: trace.status,
        transition,
        keep_polling: !trace.status.is_terminal(),
        details,
    };
    write
}

/// True when a trace is older than what is stored: its newest event is older than the newest
/// event already stored, or it has no event at all where events were stored. No upstream
/// documents a guarantee that answers arrive in order, so an older one is taken for a cached or
/// replayed answer and changes nothing: keeping what is stored loses nothing, while going back
/// would announce a status the buyer has already left behind.
pub fn is_stale(stored_newest: Option<Millis>, trace_newest: Option<Millis>) -> bool {
    match (stored_newest, trace_newest) {
        (Some(stored), Some(newest)) => newest < stored,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A fingerprint of a trace's list of events, stored with the shipment when they are written, so
/// that the next poll that brings the same list (most polls: nothing happened since) need not
/// hand every event to the database again only to find each one stored. A list that differs in
/// anything (an event more, a field changed, another order) has another digest and is written,
/// each event stored already skipped as before; so a digest that misses costs one write and
/// loses nothing. The first 8 bytes of the SHA-256 of each event's time (as stored,
/// in milliseconds) and texts, each text length-prefixed, less the sign bit: never negative, so
/// that no text form of it (a JSON batch) meets the one value whose minus sign overflows.
pub fn events_digest(events: &[TraceEvent]) -> i64 {
    fn text(hash: &mut Sha256, value: Option<&str>) {
        match value {
            None => hash.update([0]),
            Some(value) => {
                hash.update([1]);
                hash.update((value.len() as u64).to_le_bytes());
                hash.update(value.as_bytes());
            }
        }
    }
    let mut hash = Sha256::new();
    for e in events {
        hash.update(e.time.timestamp_millis().to_le_bytes());
        text(&mut hash, Some(&e.description));
        text(&mut hash, e.location.as_deref());
        text(&mut hash, e.raw_code.as_deref());
    }
    let digest = hash.finalize();
    i64::from_le_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes")) & i64::MAX
}

/// What recording a trace would change in a stored shipment, as `poll` reports it before (or
/// without) `--apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WouldChange {
    /// Only the poll schedule: the same picture, a stale one, or a shipment no longer tracked.
    Nothing,
    /// The raw status, the events, the waybill or the carrier, with the same status.
    Details,
    /// The status, with the notifications it triggers.
    Status,
}

/// What [`track`] would write for `trace` on `stored`, told without writing anything.
pub fn would_change(stored: &ShipmentRow, trace: &Trace) -> WouldChange {
    let poll = PollRecord {
        now: 0,
        trace,
        next_poll_at: 0,
        channels: &[],
    };
    match track(stored, &poll, &mut String::new).shipment {
        ShipmentWrite::Skip | ShipmentWrite::Schedule => WouldChange::Nothing,
        ShipmentWrite::Refresh(_) => WouldChange::Details,
        ShipmentWrite::Change { .. } => WouldChange::Status,
    }
}

/// One status change of a shipment, as the outbox rows announcing it need it.
pub struct Change<'a> {
    /// The row as it was before the change.
    pub shipment: &'a ShipmentRow,
    /// The shipment's transition count after the change: with the channel it keys the row.
    pub transition: i64,
    pub previous: Status,
    /// The new status and raw status, with the events that carry them.
    pub trace: &'a Trace,
    pub newest: Option<&'a TraceEvent>,
    pub now: Millis,
}

/// One outbox row per channel whose triggers hold the new status, rendered in full. A channel
/// that has no address for this shipment gets a skipped row that says why. Quiet hours hold a
/// message back until they end (DESIGN.md, "Notifications": they delay, never drop); waiting is
/// not an attempt.
pub fn announce(
    change: &Change<'_>,
    channels: &[ChannelRule],
    new_id: &mut dyn FnMut() -> String,
) -> Vec<OutboxRow> {
    let status = change.trace.status;
    channels
        .iter()
        .filter(|rule| rule.triggers.contains(&status))
        .map(|rule| {
            let public_id = new_id();
            let message = payload::for_channel(
                rule,
                &public_id,
                change.now,
                change.shipment,
                change.trace,
                change.previous,
                change.newest,
            );
            let (payload, recipient, skipped) = match message {
                Queued::Send { payload, recipient } => (payload, recipient, None),
                Queued::Skip(reason) => (String::new(), None, Some(reason)),
            };
            OutboxRow {
                public_id,
                kind: NotificationKind::StatusChanged,
                transition: change.transition,
                channel: rule.kind,
                previous: change.previous,
                status,
                payload,
                recipient,
                skipped,
                next_attempt_at: rule
                    .quiet_hours
                    .map_or(change.now, |quiet| quiet.next_allowed(change.now)),
                created_at: change.now,
            }
        })
        .collect()
}

/// The `shipment.stuck` rows for stall number `stall` of a moving shipment quiet since
/// `quiet_since`: one for each channel told of stuck parcels (the webhook's event, the group
/// robots' message). The status does not change: each row says so by carrying it twice.
pub fn stuck_alert(
    shipment: &ShipmentRow,
    stall: i64,
    quiet_since: Millis,
    now: Millis,
    channels: &[ChannelRule],
    new_id: &mut dyn FnMut() -> String,
) -> Vec<OutboxRow> {
    channels
        .iter()
        .filter(|rule| rule.alerts.stuck)
        .filter_map(|rule| {
            let public_id = new_id();
            let payload = match rule.kind {
                ChannelKind::Webhook => payload::stuck(&public_id, now, shipment, quiet_since),
                _ => payload::stuck_for_robot(rule, shipment, quiet_since, now)?,
            };
            Some(OutboxRow {
                public_id,
                kind: NotificationKind::Stuck,
                transition: stall,
                channel: rule.kind,
                previous: shipment.status,
                status: shipment.status,
                payload,
                recipient: None,
                skipped: None,
                next_attempt_at: now,
                created_at: now,
            })
        })
        .collect()
}

/// A notification id in the style of Standard Webhooks (`msg_` and random characters): unique
/// across databases, so receivers can deduplicate on it.
pub fn new_public_id() -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("msg_{suffix}")
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, FixedOffset, TimeZone};

    use super::*;
    use crate::notify::template::QuietHours;
    use crate::notify::{EmailMessage, SmsMessage};

    /// 2026-01-01 00:00:00 Asia/Shanghai.
    const T0: Millis = 1_767_196_800_000;
    const HOUR: Millis = 3_600_000;
    const NOW: Millis = T0 + 10 * HOUR;
    const NEXT: Millis = NOW + 600_000;

    fn at(ms: Millis) -> DateTime<FixedOffset> {
        FixedOffset::east_opt(8 * 3600)
            .expect("valid offset")
            .timestamp_millis_opt(ms)
            .single()
            .expect("valid time")
    }

    fn event(ms: Millis, description: &str) -> TraceEvent {
        TraceEvent {
            time: at(ms),
            description: description.to_owned(),
            location: None,
            raw_code: None,
        }
    }

    fn stored(status: Status, last_event_at: Option<Millis>) -> ShipmentRow {
        ShipmentRow {
            id: 7,
            order_id: "1234567890123456789".into(),
            provider: "taobao".into(),
            tracking_no: Some("YT1".into()),
            carrier: Some("yuantong".into()),
            tier: crate::domain::Tier::Normal,
            phone: Some(crate::domain::Phone::parse("13812345678").expect("a mobile")),
            email: Some(crate::domain::Email::parse("buyer@example.com").expect("an address")),
            openid: None,
            status,
            raw_status: Some(format!("raw {status}")),
            active: true,
            error: None,
            transitions: 2,
            next_poll_at: NOW,
            last_polled_at: None,
            last_event_at,
            status_changed_at: None,
            created_at: T0,
            sub_orders: None,
            events_digest: None,
            type_error: None,
            invalid_contact: None,
        }
    }

    fn trace(status: Status, events: Vec<TraceEvent>) -> Trace {
        Trace {
            status,
            raw_status: format!("raw {status}"),
            events,
            carrier: None,
            tracking_no: None,
            unmapped: Vec::new(),
        }
    }

    /// The defaults of DESIGN.md: SMS on pickup, out for delivery, delivery and exception;
    /// email and webhook on every change.
    fn channels() -> Vec<ChannelRule> {
        vec![
            ChannelRule::new(ChannelKind::Webhook, Status::ALL.to_vec()),
            ChannelRule::new(ChannelKind::Email, Status::ALL.to_vec()),
            ChannelRule::new(
                ChannelKind::Sms,
                vec![
                    Status::PickedUp,
                    Status::OutForDelivery,
                    Status::Delivered,
                    Status::Exception,
                ],
            ),
        ]
    }

    fn decide<'a>(
        stored: &ShipmentRow,
        trace: &'a Trace,
        channels: &'a [ChannelRule],
    ) -> PollWrite<'a> {
        let poll = PollRecord {
            now: NOW,
            trace,
            next_poll_at: NEXT,
            channels,
        };
        let mut n = 0;
        track(stored, &poll, &mut || {
            n += 1;
            format!("msg_{n}")
        })
    }

    /// What a decision amounts to, in one comparable line.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        Skip,
        Schedule,
        Refresh,
        /// Previous and new status, transition number, whether polling goes on, the channels.
        Change(Status, Status, i64, bool, Vec<ChannelKind>),
    }

    fn outcome(write: &PollWrite<'_>) -> Outcome {
        match &write.shipment {
            ShipmentWrite::Skip => Outcome::Skip,
            ShipmentWrite::Schedule => Outcome::Schedule,
            ShipmentWrite::Refresh(_) => Outcome::Refresh,
            ShipmentWrite::Change {
                previous,
                status,
                transition,
                keep_polling,
                ..
            } => Outcome::Change(
                *previous,
                *status,
                *transition,
                *keep_polling,
                write.outbox.iter().map(|row| row.channel).collect(),
            ),
        }
    }

    #[test]
    fn each_stored_state_and_trace_decides_one_write() {
        use ChannelKind::{Email, Sms, Webhook};
        use Status::*;
        let e1 = event(T0 + HOUR, "揽收");
        let e2 = event(T0 + 2 * HOUR, "到达杭州");
        let e3 = event(T0 + 3 * HOUR, "派件中");
        let inactive = ShipmentRow {
            active: false,
            ..stored(InTransit, Some(T0 + 2 * HOUR))
        };
        let same_raw_changed = Trace {
            raw_status: "物流公司揽收成功".into(),
            ..trace(InTransit, vec![e1.clone(), e2.clone()])
        };
        let carrier_news = ShipmentRow {
            carrier: None,
            ..stored(InTransit, Some(T0 + 2 * HOUR))
        };
        let carrier_trace = Trace {
            carrier: Some("中通速递".into()),
            ..trace(InTransit, vec![e1.clone(), e2.clone()])
        };
        let waybill_news = ShipmentRow {
            tracking_no: None,
            ..stored(InTransit, Some(T0 + 2 * HOUR))
        };
        let waybill_trace = Trace {
            tracking_no: Some("YT2".into()),
            ..trace(InTransit, vec![e1.clone(), e2.clone()])
        };
        // A trace naming a waybill and a carrier of its own where the row knows both: the row's
        // are kept (learnt only when unknown), so there is nothing to write.
        let both_known_trace = Trace {
            tracking_no: Some("YT2".into()),
            carrier: Some("中通速递".into()),
            ..trace(InTransit, vec![e1.clone(), e2.clone()])
        };
        #[rustfmt::skip]
        let rows: Vec<(&str, ShipmentRow, Trace, Outcome, usize)> = vec![
            ("first trace, no events yet",
             stored(Pending, None), trace(Pending, vec![]), Outcome::Schedule, 0),
            ("first trace with an event: pickup fires every channel",
             stored(Pending, None), trace(PickedUp, vec![e1.clone()]),
             Outcome::Change(Pending, PickedUp, 3, true, vec![Webhook, Email, Sms]), 1),
            ("same status, same events",
             stored(InTransit, Some(T0 + 2 * HOUR)), trace(InTransit, vec![e1.clone(), e2.clone()]),
             Outcome::Schedule, 2),
            ("same status, a newer event",
             stored(InTransit, Some(T0 + HOUR)), trace(InTransit, vec![e1.clone(), e2.clone()]),
             Outcome::Refresh, 2),
            ("same status, new raw status",
             stored(InTransit, Some(T0 + 2 * HOUR)), same_raw_changed, Outcome::Refresh, 2),
            ("same status, carrier learnt",
             carrier_news, carrier_trace, Outcome::Refresh, 2),
            ("same status, waybill learnt",
             waybill_news, waybill_trace, Outcome::Refresh, 2),
            ("same status, waybill and carrier known already",
             stored(InTransit, Some(T0 + 2 * HOUR)), both_known_trace, Outcome::Schedule, 2),
            ("in transit: SMS does not fire",
             stored(PickedUp, Some(T0 + HOUR)), trace(InTransit, vec![e1.clone(), e2.clone()]),
             Outcome::Change(PickedUp, InTransit, 3, true, vec![Webhook, Email]), 2),
            ("out for delivery: SMS fires",
             stored(InTransit, Some(T0 + 2 * HOUR)), trace(OutForDelivery, vec![e1.clone(), e2.clone(), e3.clone()]),
             Outcome::Change(InTransit, OutForDelivery, 3, true, vec![Webhook, Email, Sms]), 3),
            ("delivered: terminal, every channel",
             stored(OutForDelivery, Some(T0 + 3 * HOUR)), trace(Delivered, vec![e1.clone(), e3.clone()]),
             Outcome::Change(OutForDelivery, Delivered, 3, false, vec![Webhook, Email, Sms]), 2),
            ("exception: SMS fires, polling goes on",
             stored(InTransit, Some(T0 + 2 * HOUR)), trace(Exception, vec![e1.clone(), e2.clone(), e3.clone()]),
             Outcome::Change(InTransit, Exception, 3, true, vec![Webhook, Email, Sms]), 3),
            ("returned: terminal, SMS does not fire",
             stored(Exception, Some(T0 + 2 * HOUR)), trace(Returned, vec![e1.clone(), e2.clone(), e3.clone()]),
             Outcome::Change(Exception, Returned, 3, false, vec![Webhook, Email]), 3),
            ("stale trace: older than the newest stored event",
             stored(OutForDelivery, Some(T0 + 3 * HOUR)), trace(InTransit, vec![e1.clone(), e2.clone()]),
             Outcome::Schedule, 0),
            ("no events where events were stored: stale",
             stored(InTransit, Some(T0 + 2 * HOUR)), trace(Delivered, vec![]), Outcome::Schedule, 0),
            ("removed or deactivated while the poll was in flight",
             inactive, trace(Delivered, vec![e1.clone(), e2.clone(), e3.clone()]), Outcome::Skip, 0),
        ];
        let channels = channels();
        for (case, stored, trace, want, events) in rows {
            let write = decide(&stored, &trace, &channels);
            assert_eq!(outcome(&write), want, "{case}");
            assert_eq!(write.events.len(), events, "{case}: events to store");
            assert_eq!((write.now, write.next_poll_at), (NOW, NEXT), "{case}");
        }
    }

    #[test]
    fn events_written_once_are_not_handed_over_again_while_the_trace_stays_the_same() {
        use Status::*;
        let e1 = event(T0 + HOUR, "揽收");
        let e2 = event(T0 + 2 * HOUR, "到达杭州");
        let same = trace(InTransit, vec![e1.clone(), e2.clone()]);
        let channels = channels();
        let first = decide(&stored(InTransit, None), &same, &channels);
        let digest = first
            .events_digest
            .expect("the first write stores a digest");
        assert_eq!(first.events.len(), 2);
        assert_eq!(digest, events_digest(&same.events));

        let written = ShipmentRow {
            events_digest: Some(digest),
            ..stored(InTransit, Some(T0 + 2 * HOUR))
        };
        let again = decide(&written, &same, &channels);
        assert_eq!(outcome(&again), Outcome::Schedule);
        assert!(
            again.events.is_empty(),
            "the same events again: none to write"
        );
        assert_eq!(again.events_digest, None, "the stored digest stays");

        // Anything else in the list is written, whole, with its own digest: an event more, a
        // field of one changed, the same events in another order, a status change.
        let mut located = e2.clone();
        located.location = Some("杭州".into());
        let mut coded = e2.clone();
        coded.raw_code = Some("ARRIVAL".into());
        let e3 = event(T0 + 3 * HOUR, "派件中");
        for (case, other) in [
            (
                "an event more",
                trace(InTransit, vec![e1.clone(), e2.clone(), e3.clone()]),
            ),
            (
                "a location learnt",
                trace(InTransit, vec![e1.clone(), located]),
            ),
            ("a code learnt", trace(InTransit, vec![e1.clone(), coded])),
            (
                "another order",
                trace(InTransit, vec![e2.clone(), e1.clone()]),
            ),
            (
                "a new status",
                trace(OutForDelivery, vec![e1.clone(), e2.clone(), e3.clone()]),
            ),
        ] {
            let write = decide(&written, &other, &channels);
            assert_eq!(write.events.len(), other.events.len(), "{case}");
            let new = write.events_digest.expect(case);
            assert_ne!(new, digest, "{case}");
            assert_eq!(new, events_digest(&other.events), "{case}");
        }

        // A stale trace writes no events, so it leaves the digest alone.
        let older = trace(InTransit, vec![e1.clone()]);
        let stale = decide(&written, &older, &channels);
        assert_eq!((stale.events.len(), stale.events_digest), (0, None));
    }

    #[test]
    fn the_digest_tells_texts_apart_by_their_bounds() {
        // Length-prefixed: moving characters from one text to the next changes the digest, and
        // so does a missing text against an empty one.
        let mut a = event(T0, "ab");
        a.location = Some("c".into());
        let mut b = event(T0, "a");
        b.location = Some("bc".into());
        assert_ne!(events_digest(&[a]), events_digest(&[b]));
        let mut empty = event(T0, "a");
        empty.location = Some(String::new());
        assert_ne!(events_digest(&[event(T0, "a")]), events_digest(&[empty]));
        assert_ne!(events_digest(&[]), events_digest(&[event(T0, "")]));
        // Never negative (the sign bit is dropped): half of 64 digests would be otherwise.
        for i in 0..64 {
            assert!(events_digest(&[event(T0 + i, "scan")]) >= 0, "{i}");
        }
    }

    #[test]
    fn the_order_link_reaches_robots_email_and_wechat_made_url_safe() {
        let link = crate::notify::template::Template::parse(
            "https://shop.example/orders/{order_id}?waybill={tracking_no}",
            &crate::notify::template::LINK_PLACEHOLDERS,
        )
        .expect("a link template");
        let mut stored = stored(Status::InTransit, Some(T0 + 2 * HOUR));
        stored.order_id = "A/1 ?)x".into();
        stored.openid =
            Some(crate::domain::OpenId::parse("oia2TjuEGTNoeX76QEjQNrcURxG8").expect("an OpenID"));
        let trace = trace(Status::Delivered, vec![event(T0 + 4 * HOUR, "已签收")]);
        let mut email = ChannelRule::new(ChannelKind::Email, Status::ALL.to_vec());
        email.texts.body.insert(
            Status::Delivered,
            crate::notify::template::Template::parse(
                "详情:{link}",
                &crate::notify::template::TEXT_PLACEHOLDERS,
            )
            .expect("a body"),
        );
        let mut channels = vec![
            ChannelRule::new(ChannelKind::Dingtalk, Status::ALL.to_vec()),
            email,
            ChannelRule::new(ChannelKind::Wechat, Status::ALL.to_vec()),
        ];
        let want = "https://shop.example/orders/A%2F1%20%3F%29x?waybill=YT1";
        for rule in &mut channels {
            rule.link = Some(link.clone());
        }
        let write = decide(&stored, &trace, &channels);
        let [robot, email, wechat] = &write.outbox[..] else {
            panic!("three rows: {:?}", write.outbox);
        };
        let robot: serde_json::Value = serde_json::from_str(&robot.payload).expect("JSON");
        let text = robot["markdown"]["text"].as_str().expect("markdown");
        assert!(text.ends_with(&format!("[查看订单]({want})")), "{text}");
        let email: EmailMessage = serde_json::from_str(&email.payload).expect("email");
        assert_eq!(email.body, format!("详情:{want}"));
        let wechat: serde_json::Value = serde_json::from_str(&wechat.payload).expect("JSON");
        assert_eq!(wechat["url"], want, "{wechat}");

        // A robot text that places {link} itself shows it there, and not again below.
        let mut placed = channels[0].clone();
        placed.texts.body.insert(
            Status::Delivered,
            crate::notify::template::Template::parse(
                "签收了,[订单]({link})",
                &crate::notify::template::TEXT_PLACEHOLDERS,
            )
            .expect("a body"),
        );
        let placed = [placed];
        let write = decide(&stored, &trace, &placed);
        let robot: serde_json::Value =
            serde_json::from_str(&write.outbox[0].payload).expect("JSON");
        let text = robot["markdown"]["text"].as_str().expect("markdown");
        assert!(text.ends_with(&format!("签收了,[订单]({want})")), "{text}");
        assert!(!text.contains("查看订单"), "{text}");

        // Without [notify] link: no link line, and {link} is empty.
        for rule in &mut channels {
            rule.link = None;
        }
        let write = decide(&stored, &trace, &channels);
        assert!(!write.outbox[0].payload.contains("查看订单"));
        let email: EmailMessage = serde_json::from_str(&write.outbox[1].payload).expect("email");
        assert_eq!(email.body, "详情:");
    }

    #[test]
    fn a_change_renders_each_row_for_its_channel() {
        let stored = stored(Status::InTransit, Some(T0 + 2 * HOUR));
        let trace = trace(
            Status::Delivered,
            vec![event(T0 + 2 * HOUR, "到达"), event(T0 + 4 * HOUR, "已签收")],
        );
        let channels = channels();
        let write = decide(&stored, &trace, &channels);
        let ShipmentWrite::Change { details, .. } = &write.shipment else {
            panic!("expected a change, got {:?}", write.shipment);
        };
        assert_eq!(details.last_event_at, Some(T0 + 4 * HOUR));
        assert_eq!(details.raw_status, "raw delivered");
        let [webhook, email, sms] = &write.outbox[..] else {
            panic!("expected three rows, got {:?}", write.outbox);
        };
        for (row, id) in [(webhook, "msg_1"), (email, "msg_2"), (sms, "msg_3")] {
            assert_eq!(row.public_id, id);
            assert_eq!(row.kind, NotificationKind::StatusChanged);
            assert_eq!(
                (row.transition, row.previous, row.status),
                (3, Status::InTransit, Status::Delivered)
            );
            assert_eq!(
                (row.next_attempt_at, row.created_at, row.skipped),
                (NOW, NOW, None)
            );
        }
        let body: serde_json::Value = serde_json::from_str(&webhook.payload).expect("JSON body");
        assert_eq!(body.pointer("/id").and_then(|v| v.as_str()), Some("msg_1"));
        assert_eq!(
            body.pointer("/data/previous_status")
                .and_then(|v| v.as_str()),
            Some("in_transit")
        );
        assert_eq!(
            body.pointer("/data/event/description")
                .and_then(|v| v.as_str()),
            Some("已签收")
        );
        assert_eq!(email.recipient.as_deref(), Some("buyer@example.com"));
        let email: EmailMessage = serde_json::from_str(&email.payload).expect("email message");
        assert!(email.body.contains("1234567890123456789"), "{}", email.body);
        assert_eq!(sms.recipient.as_deref(), Some("13812345678"));
        let sms: SmsMessage = serde_json::from_str(&sms.payload).expect("sms message");
        assert!(sms.text.contains("已签收"), "{}", sms.text);
    }

    #[test]
    fn a_channel_without_an_address_gets_a_skipped_row() {
        // A blank column reads as none (see `ShipmentRow`).
        let stored = ShipmentRow {
            phone: None,
            email: None,
            ..stored(Status::Pending, None)
        };
        let trace = trace(Status::PickedUp, vec![event(T0, "揽收")]);
        let channels = channels();
        let write = decide(&stored, &trace, &channels);
        let skipped: Vec<_> = write
            .outbox
            .iter()
            .map(|row| (row.channel, row.skipped, row.recipient.is_some()))
            .collect();
        assert_eq!(
            skipped,
            vec![
                (ChannelKind::Webhook, None, false),
                (ChannelKind::Email, Some("no email address"), false),
                (ChannelKind::Sms, Some("no phone number"), false),
            ]
        );
    }

    #[test]
    fn quiet_hours_delay_sms_and_leave_other_channels_alone() {
        let mut channels = channels();
        channels[2].quiet_hours = Some(QuietHours::parse("21:00-08:00", "Asia/Shanghai").unwrap());
        let trace = trace(Status::PickedUp, vec![event(T0, "揽收")]);
        let stored = stored(Status::Pending, None);
        // 22:30 in Shanghai is inside 21:00–08:00: SMS waits for 08:00 the next morning.
        let late = T0 + 22 * HOUR + HOUR / 2;
        let poll = PollRecord {
            now: late,
            trace: &trace,
            next_poll_at: late + HOUR,
            channels: &channels,
        };
        let write = track(&stored, &poll, &mut new_public_id);
        let due: Vec<_> = write
            .outbox
            .iter()
            .map(|row| (row.channel, row.next_attempt_at))
            .collect();
        assert_eq!(
            due,
            vec![
                (ChannelKind::Webhook, late),
                (ChannelKind::Email, late),
                (ChannelKind::Sms, T0 + 32 * HOUR),
            ]
        );
        // At 10:00 nothing waits.
        let poll = PollRecord { now: NOW, ..poll };
        let write = track(&stored, &poll, &mut new_public_id);
        assert!(write.outbox.iter().all(|row| row.next_attempt_at == NOW));
    }

    #[test]
    fn a_stale_trace_stores_no_events_but_still_counts_unmapped_codes() {
        let trace = Trace {
            unmapped: vec!["action=XYZ".into()],
            ..trace(Status::InTransit, vec![event(T0, "揽收")])
        };
        let channels = channels();
        let fresh = decide(&stored(Status::Pending, None), &trace, &channels);
        assert_eq!(fresh.unmapped, ["action=XYZ".to_owned()]);
        // The unmapped code is still counted on a stale answer: operators see what upstream says.
        let stale = decide(
            &stored(Status::InTransit, Some(T0 + HOUR)),
            &trace,
            &channels,
        );
        assert_eq!((stale.events.len(), stale.unmapped.len()), (0, 1));
        let mut gone = stored(Status::InTransit, None);
        gone.active = false;
        assert!(decide(&gone, &trace, &channels).unmapped.is_empty());
    }

    #[test]
    fn staleness_compares_newest_events() {
        #[rustfmt::skip]
        let rows = [
            (None, None, false),
            (None, Some(5), false),
            (Some(5), Some(5), false),
            (Some(5), Some(6), false),
            (Some(5), Some(4), true),
            (Some(5), None, true),
        ];
        for (stored, newest, stale) in rows {
            assert_eq!(is_stale(stored, newest), stale, "{stored:?} {newest:?}");
        }
    }

    #[test]
    fn a_stuck_alert_is_a_row_per_channel_told_of_stuck_parcels_keyed_by_its_stall() {
        let stored = stored(Status::InTransit, Some(T0));
        let channels = [
            ChannelRule::new(ChannelKind::Webhook, Status::ALL.to_vec()),
            ChannelRule::new(ChannelKind::Email, Status::ALL.to_vec()),
            ChannelRule::new(ChannelKind::Dingtalk, Status::ALL.to_vec()),
            ChannelRule::new(ChannelKind::Feishu, Status::ALL.to_vec()),
        ];
        let mut n = 0;
        let rows = stuck_alert(&stored, 4, T0, NOW, &channels, &mut || {
            n += 1;
            format!("msg_{n}")
        });
        let kinds: Vec<ChannelKind> = rows.iter().map(|r| r.channel).collect();
        assert_eq!(
            kinds,
            [
                ChannelKind::Webhook,
                ChannelKind::Dingtalk,
                ChannelKind::Feishu
            ],
            "the buyer's email is not told"
        );
        for row in &rows {
            assert_eq!(
                (row.kind, row.transition, row.previous, row.status),
                (
                    NotificationKind::Stuck,
                    4,
                    Status::InTransit,
                    Status::InTransit
                )
            );
        }
        let body: serde_json::Value = serde_json::from_str(&rows[0].payload).expect("JSON body");
        assert_eq!(
            body.pointer("/type").and_then(|v| v.as_str()),
            Some("shipment.stuck")
        );
        assert_eq!(body.pointer("/id").and_then(|v| v.as_str()), Some("msg_1"));
        assert_eq!(
            body.pointer("/data/stalled_for_hours")
                .and_then(|v| v.as_i64()),
            Some(10)
        );
        let robot: serde_json::Value = serde_json::from_str(&rows[1].payload).expect("JSON body");
        let text = robot
            .pointer("/markdown/text")
            .and_then(|v| v.as_str())
            .expect("DingTalk markdown");
        assert!(text.contains("已 10 小时没有新动态"), "{text}");
        assert!(text.contains(&stored.order_id), "{text}");
        // A channel can be told not to.
        let mut quiet = channels[2].clone();
        quiet.alerts.stuck = false;
        assert!(stuck_alert(&stored, 5, T0, NOW, &[quiet], &mut String::new).is_empty());
    }

    #[test]
    fn notification_ids_are_msg_and_24_random_letters_or_digits() {
        let (a, b) = (new_public_id(), new_public_id());
        for id in [&a, &b] {
            let suffix = id.strip_prefix("msg_").expect(id);
            assert_eq!(suffix.len(), 24, "{id}");
            assert!(suffix.bytes().all(|c| c.is_ascii_alphanumeric()), "{id}");
        }
        assert_ne!(a, b, "two notifications, two ids");
    }

    #[test]
    fn would_change_tells_what_recording_would_write() {
        let stored = stored(Status::InTransit, Some(T0));
        let cases = [
            (
                trace(Status::InTransit, vec![event(T0, "a")]),
                WouldChange::Nothing,
            ),
            (
                trace(
                    Status::InTransit,
                    vec![event(T0, "a"), event(T0 + HOUR, "b")],
                ),
                WouldChange::Details,
            ),
            (
                trace(Status::Delivered, vec![event(T0 + HOUR, "c")]),
                WouldChange::Status,
            ),
            // Older than what is stored: nothing.
            (trace(Status::Delivered, vec![]), WouldChange::Nothing),
        ];
        for (trace, expected) in cases {
            assert_eq!(would_change(&stored, &trace), expected, "{trace:?}");
        }
        let gone = ShipmentRow {
            active: false,
            ..stored.clone()
        };
        let news = trace(Status::Delivered, vec![event(T0 + HOUR, "c")]);
        assert_eq!(would_change(&gone, &news), WouldChange::Nothing);
    }
}
