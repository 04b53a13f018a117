//! Provider adapters: each turns one shipment into one upstream request, and one upstream response
//! into a normalised [`Trace`] or a classified [`ProviderError`].

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, FixedOffset, Utc};

use crate::domain::{Phone, Status};

pub mod alibaba1688;
pub mod kuaidi100;
pub mod kuaidi100_push;
mod scans;
pub mod simulator;
pub mod taobao;

pub use crate::clock::shanghai;

/// What an adapter needs to know about a shipment to ask about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackRequest {
    pub order_id: String,
    pub tracking_no: Option<String>,
    pub carrier: Option<String>,
    pub phone: Option<Phone>,
    /// The sub-orders a split order's parcel carries, comma-separated.
    pub sub_orders: Option<String>,
    /// When the shipment was added: the simulator's journeys run on it.
    pub created_at: crate::clock::Millis,
}

/// One scan or step of a parcel's journey as the provider reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// When it happened, in Asia/Shanghai.
    pub time: DateTime<FixedOffset>,
    pub description: String,
    pub location: Option<String>,
    /// The provider's own code for the step (TOP `action`, Kuaidi100 `status`…), when it gives one.
    pub raw_code: Option<String>,
}

/// A provider's answer, normalised: events oldest first and the canonical status they amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub status: Status,
    /// The provider's own status text or code, kept beside the canonical status.
    pub raw_status: String,
    pub events: Vec<TraceEvent>,
    pub carrier: Option<String>,
    pub tracking_no: Option<String>,
    /// Raw codes or texts no mapping table knew (`action=XYZ`), so that operators can see and
    /// count them; the status above is then the nearest safe one.
    pub unmapped: Vec<String>,
}

/// Why a poll did not produce a trace, classified by what the daemon should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Try again at the next scheduled poll (network errors, 5xx, garbled answers, `isp.*`).
    #[error("transient: {0}")]
    Transient(String),
    /// Upstream asked us to stop calling for a while; the whole provider is paused that long.
    #[error("rate limited for {}s: {message}", retry_after.as_secs())]
    RateLimited {
        retry_after: Duration,
        message: String,
    },
    /// The credentials need renewal (expired session or token): stop the provider, alert loudly.
    #[error("credentials expired: {0}")]
    AuthExpired(String),
    /// The provider is misconfigured (signature, app key, permissions): stop it, alert loudly.
    #[error("configuration error: {0}")]
    Config(String),
    /// Upstream knows nothing about this shipment yet: keep polling, slowly.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request can never succeed for this shipment: flag it and stop polling it.
    #[error("permanent: {0}")]
    Permanent(String),
    /// Upstream refused this shipment with a code it does not explain, which for a shipment
    /// just shipped usually means "no trace yet": polled slowly while the shipment is younger
    /// than the no-info window (`[maintenance] no_info_after`), flagged invalid after that.
    #[error("refused: {0}")]
    Unconfirmed(String),
}

/// What a shipment lacks for a provider (a numeric order id, a tracking number…), in one line
/// that tells how to fix it, and the shipment's field at fault (the first, when several are):
/// the shipment is refused or flagged with the line, and the API names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnfitRequest {
    /// A column of the `shipments` table: `order_id`, `tracking_no`, `carrier`, `phone`, …
    pub field: &'static str,
    pub message: String,
}

impl UnfitRequest {
    pub fn new(field: &'static str, message: impl Into<String>) -> UnfitRequest {
        UnfitRequest {
            field,
            message: message.into(),
        }
    }
}

/// Polling a request that cannot work fails for good.
impl From<UnfitRequest> for ProviderError {
    fn from(unfit: UnfitRequest) -> Self {
        ProviderError::Permanent(unfit.message)
    }
}

/// One upstream logistics API.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The adapter kind as written in the config (`taobao`, `simulator`, …).
    fn kind(&self) -> &'static str;

    /// Says what a shipment lacks for this provider (a numeric order id, a tracking number…),
    /// in one line that tells how to fix it. Checked when a shipment is added or picked up.
    fn check(&self, _request: &TrackRequest) -> Result<(), UnfitRequest> {
        Ok(())
    }

    /// The shortest interval at which upstream lets one shipment be asked about, whatever its
    /// tier (Kuaidi100 locks a waybill queried more often than every 30 minutes).
    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// Asks upstream for the current trace of one shipment.
    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError>;
}

/// The most of one text field from upstream that is kept (status text, event description,
/// location, carrier, tracking number, raw code, unmapped value), in bytes of UTF-8. Upstream
/// documents no maximum for any of them (TOP's `status_desc`, 1688's `remark`, Kuaidi100's
/// `context` are free text), so this is our own bound, far above any real scan text (a few
/// hundred bytes at most): a longer one is cut on a character boundary and ends with `…`.
pub const MAX_FIELD_BYTES: usize = 1024;

/// The most events kept from one answer: the newest. Real journeys have tens of scans; a longer
/// list is a broken or hostile upstream, and the newest scans are the ones that decide.
pub const MAX_EVENTS: usize = 200;

/// Cuts `text` to at most `max` bytes on a character boundary, ending with `…` when cut.
pub fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let ellipsis = '…'.len_utf8();
    let mut end = max.saturating_sub(ellipsis);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if max >= ellipsis {
        text.push('…');
    }
}

fn cut_to_field(text: &str) -> String {
    let mut text = text.to_owned();
    cut(&mut text, MAX_FIELD_BYTES);
    text
}

impl Trace {
    /// What upstream sent, bounded: every text field cut to [`MAX_FIELD_BYTES`], and only the
    /// newest [`MAX_EVENTS`] events. Applied to every trace any adapter returns
    /// ([`Bounded`]), before anything is stored, logged or sent on.
    pub fn bounded(mut self) -> Trace {
        let field = |text: &mut String| cut(text, MAX_FIELD_BYTES);
        field(&mut self.raw_status);
        self.carrier.iter_mut().for_each(field);
        self.tracking_no.iter_mut().for_each(field);
        self.unmapped.iter_mut().for_each(field);
        let extra = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..extra);
        for event in &mut self.events {
            field(&mut event.description);
            event.location.iter_mut().for_each(field);
            event.raw_code.iter_mut().for_each(field);
        }
        self
    }
}

impl ProviderError {
    /// The same error with its message cut to [`MAX_FIELD_BYTES`]: messages quote upstream's
    /// own error texts, which are as unbounded as its trace fields.
    pub fn bounded(self) -> ProviderError {
        use ProviderError::*;
        match self {
            Transient(m) => Transient(cut_to_field(&m)),
            RateLimited {
                retry_after,
                message,
            } => RateLimited {
                retry_after,
                message: cut_to_field(&message),
            },
            AuthExpired(m) => AuthExpired(cut_to_field(&m)),
            Config(m) => Config(cut_to_field(&m)),
            NotFound(m) => NotFound(cut_to_field(&m)),
            Permanent(m) => Permanent(cut_to_field(&m)),
            Unconfirmed(m) => Unconfirmed(cut_to_field(&m)),
        }
    }
}

/// An adapter whose every answer is bounded ([`Trace::bounded`], [`ProviderError::bounded`]):
/// the one place where upstream's text is cut, whichever adapter read it.
pub struct Bounded(pub std::sync::Arc<dyn Provider>);

#[async_trait]
impl Provider for Bounded {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }

    fn check(&self, request: &TrackRequest) -> Result<(), UnfitRequest> {
        self.0.check(request)
    }

    fn min_interval(&self) -> Duration {
        self.0.min_interval()
    }

    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError> {
        self.0
            .fetch(request)
            .await
            .map(Trace::bounded)
            .map_err(ProviderError::bounded)
    }
}

/// Bounds the memory of unmapped values already reported, in bytes: free-text descriptions are
/// endless, and each is kept cut to [`MAX_FIELD_BYTES`].
const UNMAPPED_MEMORY_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct Sightings {
    seen: std::collections::HashSet<String>,
    bytes: usize,
}

static UNMAPPED: std::sync::LazyLock<std::sync::Mutex<Sightings>> =
    std::sync::LazyLock::new(Default::default);

impl Sightings {
    /// True the first time `key` is seen. Once `limit` bytes of keys are held, nothing more is
    /// remembered, and nothing more is reported as new.
    fn first(&mut self, key: String, limit: usize) -> bool {
        if self.bytes + key.len() > limit || self.seen.contains(&key) {
            return false;
        }
        self.bytes += key.len();
        self.seen.insert(key)
    }
}

/// True the first time this process sees `value` (as cut) from `provider`.
fn first_sighting(provider: &str, value: &str) -> bool {
    UNMAPPED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .first(format!("{provider}\u{0}{value}"), UNMAPPED_MEMORY_BYTES)
}

/// Logs a value no mapping table knew, once per process, so that operators can extend the
/// tables without drowning in logs; the value is cut to [`MAX_FIELD_BYTES`], and a provider
/// logs at most one new value a minute ([`crate::throttle`]): one that sends a fresh one on
/// every poll is broken. (`stats` lists and counts every value.)
pub fn note_unmapped(provider: &'static str, value: &str) {
    let value = cut_to_field(value);
    if first_sighting(provider, &value)
        && let Some(suppressed) = crate::throttle::admit(&format!("unmapped\0{provider}"))
    {
        tracing::warn!(provider, raw = %value, suppressed, "unmapped");
    }
}

/// How much of an unexpected body an error message quotes.
pub const SNIPPET_CHARS: usize = 80;

/// The start of a body, on one line, for error messages.
pub fn snippet(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "empty body".to_owned();
    }
    let mut cut: String = flat.chars().take(SNIPPET_CHARS).collect();
    if cut.len() < flat.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// A request that got no answer: worth another try at the next poll.
pub fn transport_error(upstream: &str, err: &reqwest::Error) -> ProviderError {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // reqwest's text names the URL; shown without user info or query values.
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), &crate::shown::url(url.as_str()));
    }
    ProviderError::Transient(format!("{upstream} {what}: {text}"))
}

/// How long a provider is paused when upstream says "too many" without saying for how long.
pub const DEFAULT_BAN: Duration = Duration::from_secs(60);

/// The longest upstream may pause a provider. No authoritative maximum exists: TOP's error-code
/// page ("错误码一览", open.taobao.com) names the call-limit codes 4-8 and the `accesscontrol.*`
/// sub-codes with `This ban will last for N more seconds` but no longest ban, and 1688's gateway
/// docs name `gw.QosAppFrequencyLimit` without one either. A ban longer than a day is taken to be
/// an upstream bug or a hostile answer (`18446744073709551615 more seconds` once paused a
/// provider for good). A day loses nothing: a ban still in force at its end is simply answered,
/// and obeyed, again.
pub const MAX_BAN: Duration = Duration::from_secs(24 * 60 * 60);

impl ProviderError {
    /// Upstream said "too many": for `seconds` when it said how long (at least a second, so as
    /// not to call straight back into the limit, and at most [`MAX_BAN`]), else [`DEFAULT_BAN`].
    pub fn rate_limited(seconds: Option<u64>, message: String) -> ProviderError {
        ProviderError::RateLimited {
            retry_after: seconds
                .map_or(DEFAULT_BAN, |s| Duration::from_secs(s.max(1)).min(MAX_BAN)),
            message,
        }
    }
}

/// The classification of an HTTP status that is not a success: 429 pauses the provider (for
/// `Retry-After` seconds when given), anything else is worth another try later.
pub fn http_failure(
    upstream: &str,
    status: reqwest::StatusCode,
    retry_after: Option<u64>,
    body: &str,
) -> Option<ProviderError> {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Some(ProviderError::rate_limited(
            retry_after,
            format!("HTTP 429 from {upstream}: {}", snippet(body)),
        ));
    }
    (!status.is_success()).then(|| {
        ProviderError::Transient(format!(
            "HTTP {} from {upstream}: {}",
            status.as_u16(),
            snippet(body)
        ))
    })
}

/// A `Retry-After`, in whole seconds (delta-seconds or an HTTP-date).
pub fn retry_after_secs(response: &reqwest::Response) -> Option<u64> {
    crate::http_body::retry_after(response.headers(), chrono::Utc::now()).map(|d| d.as_secs())
}

/// The largest response body an adapter reads: a gateway that sends more is broken, and must not
/// cost the daemon its memory.
pub const MAX_BODY: usize = 8 << 20;

/// Reads an upstream answer's body. A success is read whole up to [`MAX_BODY`] (a longer one is an
/// error: an answer cut short cannot be parsed); any other status only up to
/// [`crate::http_body::MAX_ANSWER_BYTES`], whose start is kept: it is quoted in the error, and
/// must not turn a 429 or a 500 into "body too long".
pub async fn read_response(response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    if response.status().is_success() {
        return read_body(response, MAX_BODY).await;
    }
    crate::http_body::read_capped(response, crate::http_body::MAX_ANSWER_BYTES)
        .await
        .map(|read| read.bytes)
        .map_err(|e| ProviderError::Transient(format!("reading the response: {e}")))
}

/// Reads a response body of at most `limit` bytes, through the reader every provider and channel
/// shares ([`crate::http_body::read_capped`]). An answer cut short cannot be parsed, so a body
/// over the limit is an error, worth another try at the next poll.
pub async fn read_body(
    response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ProviderError> {
    let read = crate::http_body::read_capped(response, limit)
        .await
        .map_err(|e| ProviderError::Transient(format!("reading the response: {e}")))?;
    if read.cut {
        return Err(ProviderError::Transient(format!(
            "response body over the {limit}-byte limit"
        )));
    }
    Ok(read.bytes)
}

/// Reads a carrier's local time: `yyyy-MM-dd HH:mm:ss` (or without seconds) in Asia/Shanghai,
/// or epoch milliseconds.
pub fn parse_local_time(raw: &str) -> Option<DateTime<FixedOffset>> {
    use chrono::TimeZone;
    let raw = raw.trim();
    if !raw.is_empty() && raw.len() >= 12 && raw.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = raw.parse().ok()?;
        return shanghai().timestamp_millis_opt(ms).single();
    }
    parse_shanghai_time(raw)
}

/// `yyyy-MM-dd HH:mm:ss` and `yyyy-MM-dd HH:mm`, the way TOP and the carriers write a time,
/// each read into chrono's items once: reading the format string anew cost more than reading
/// the time (`parse_from_str` 213 ns a time, 85 ns with the items ready; formatting 300 ns
/// against 155), and a trace holds a time for every step.
static SECONDS: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| items("%Y-%m-%d %H:%M:%S"));
static MINUTES: LazyLock<Vec<Item<'static>>> = LazyLock::new(|| items("%Y-%m-%d %H:%M"));

fn items(format: &'static str) -> Vec<Item<'static>> {
    StrftimeItems::new(format)
        .parse()
        .expect("the format is a constant that chrono reads")
}

/// Reads `yyyy-MM-dd HH:mm:ss` (or without seconds) as a time in Asia/Shanghai; what
/// `NaiveDateTime::parse_from_str` with those formats reads.
pub fn parse_shanghai_time(raw: &str) -> Option<DateTime<FixedOffset>> {
    let read = |items: &[Item<'_>]| {
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, raw, items.iter()).ok()?;
        parsed.to_naive_datetime_with_offset(0).ok()
    };
    let naive = read(&SECONDS).or_else(|| read(&MINUTES))?;
    naive.and_local_timezone(shanghai()).single()
}

/// `time` in Asia/Shanghai as `yyyy-MM-dd HH:mm:ss`.
pub fn shanghai_seconds(time: DateTime<Utc>) -> String {
    time.with_timezone(&shanghai())
        .format_with_items(SECONDS.iter())
        .to_string()
}

/// Orders events oldest first, whichever way upstream listed them. Events with the same time
/// keep their listed order, oldest first.
pub fn oldest_first(mut events: Vec<TraceEvent>) -> Vec<TraceEvent> {
    if events.len() > 1 && events[0].time > events[events.len() - 1].time {
        events.reverse();
    }
    events.sort_by_key(|event| event.time);
    events
}

/// A scalar that upstream APIs send sometimes as a string and sometimes as a number (or a bool);
/// anything else (a float, a list, an object) is kept as `Other` and dropped by the caller rather
/// than failing the whole answer.
///
/// Written by hand rather than as an untagged enum: serde tries an untagged enum's variants in
/// turn and formats an error message for each miss, and for the many text fields of every answer
/// that was a large share of a poll's cost.
pub(crate) enum Scalar {
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Text(String),
    Other,
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

        struct ScalarVisitor;

        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, a number or a bool")
            }

            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }

            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Unsigned(v))
            }

            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(u64::try_from(v).map_or(Scalar::Signed(v), Scalar::Unsigned))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }

            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }

            fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Text(v))
            }

            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }

        de.deserialize_any(ScalarVisitor)
    }
}

/// A text field that may come as a string or a number; blank or of another kind is `None`.
pub(crate) fn lenient_string<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<String>, D::Error> {
    use serde::Deserialize;
    Ok(match Option::<Scalar>::deserialize(de)? {
        Some(Scalar::Text(text)) => Some(text).filter(|t| !t.trim().is_empty()),
        Some(Scalar::Unsigned(n)) => Some(n.to_string()),
        Some(Scalar::Signed(n)) => Some(n.to_string()),
        Some(Scalar::Bool(_) | Scalar::Other) | None => None,
    })
}

/// An order number that may come as a number or a string. Integers stay integers: a number above
/// 2^53 would silently change if it went through f64, and the adapter would then refuse the
/// answer as being about another order.
pub(crate) fn lenient_order_number<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize;
    Ok(match Option::<Scalar>::deserialize(de)? {
        Some(Scalar::Unsigned(n)) => Some(n),
        Some(Scalar::Text(text)) => text.trim().parse().ok(),
        Some(Scalar::Bool(_) | Scalar::Signed(_) | Scalar::Other) | None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway that streams 50 MB: the read stops at the limit instead of taking it all in.
    #[tokio::test]
    async fn an_oversized_body_is_an_error_not_a_memory_hog() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    // No length given: the body runs until the connection closes.
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                        .await;
                    let chunk = vec![b'x'; 1 << 20];
                    for _ in 0..50 {
                        if socket.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let response = reqwest::get(&url).await.unwrap();
        let err = read_body(response, MAX_BODY).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Transient(m) if m.contains("limit")),
            "{err}"
        );
        let whole = reqwest::get(&url).await.unwrap();
        assert_eq!(read_body(whole, 100 << 20).await.unwrap().len(), 50 << 20);
    }

    #[test]
    fn unmapped_values_are_reported_once_per_provider() {
        assert!(first_sighting("test", "reported-once"));
        assert!(!first_sighting("test", "reported-once"));
        assert!(first_sighting("other", "reported-once"));
    }

    #[test]
    fn the_unmapped_memory_is_bounded_in_bytes() {
        // Fresh values of the largest size a trace keeps: the memory stops growing at its bound.
        let mut sightings = Sightings::default();
        let big = "u".repeat(MAX_FIELD_BYTES);
        let fresh = |n: usize| format!("{n}{big}");
        assert!(sightings.first(fresh(0), UNMAPPED_MEMORY_BYTES));
        assert!(!sightings.first(fresh(0), UNMAPPED_MEMORY_BYTES));
        for n in 1..2 * UNMAPPED_MEMORY_BYTES / MAX_FIELD_BYTES {
            sightings.first(fresh(n), UNMAPPED_MEMORY_BYTES);
        }
        assert!(
            sightings.bytes <= UNMAPPED_MEMORY_BYTES,
            "{}",
            sightings.bytes
        );
        assert!(sightings.bytes > UNMAPPED_MEMORY_BYTES - 2 * MAX_FIELD_BYTES);
        let held: usize = sightings.seen.iter().map(String::len).sum();
        assert_eq!(held, sightings.bytes);
    }

    /// One row per case: (text, limit, result).
    #[test]
    fn texts_are_cut_on_a_character_boundary_with_an_ellipsis() {
        let table: &[(&str, usize, &str)] = &[
            ("", 10, ""),
            ("short", 10, "short"),
            ("exactly10!", 10, "exactly10!"),
            ("eleven char", 10, "eleven …"),
            // 快 is three bytes: never split.
            ("快递快递", 10, "快递…"),
            ("快递快递", 8, "快…"),
            ("快递快递", 12, "快递快递"),
            ("abcdef", 2, ""),
        ];
        for (text, max, want) in table {
            let mut cut_text = (*text).to_owned();
            cut(&mut cut_text, *max);
            assert_eq!(cut_text, *want, "{text:?} to {max}");
            assert!(cut_text.len() <= *max, "{text:?} to {max}");
        }
    }

    #[test]
    fn every_field_of_a_trace_is_bounded() {
        let huge = "长".repeat(2 * MAX_FIELD_BYTES);
        let event = |n: usize| TraceEvent {
            time: parse_local_time("2026-11-20 08:00:00").unwrap()
                + chrono::TimeDelta::seconds(n as i64),
            description: format!("{n} {huge}"),
            location: Some(huge.clone()),
            raw_code: Some(huge.clone()),
        };
        let trace = Trace {
            status: Status::InTransit,
            raw_status: huge.clone(),
            events: (0..MAX_EVENTS + 50).map(event).collect(),
            carrier: Some(huge.clone()),
            tracking_no: Some(huge.clone()),
            unmapped: vec![huge.clone()],
        }
        .bounded();
        assert_eq!(trace.events.len(), MAX_EVENTS);
        assert!(
            trace.events[0].description.starts_with("50 "),
            "the newest are kept"
        );
        let mut fields = vec![
            &trace.raw_status,
            trace.carrier.as_ref().unwrap(),
            trace.tracking_no.as_ref().unwrap(),
            &trace.unmapped[0],
        ];
        for event in &trace.events {
            fields.push(&event.description);
            fields.extend(event.location.as_ref());
            fields.extend(event.raw_code.as_ref());
        }
        for field in fields {
            assert!(
                field.len() <= MAX_FIELD_BYTES && field.ends_with('…'),
                "{}",
                field.len()
            );
        }
        let error = ProviderError::Transient(huge).bounded();
        assert!(error.to_string().len() <= MAX_FIELD_BYTES + "transient: ".len());
    }

    #[test]
    fn snippets_are_short_and_on_one_line() {
        let text = snippet(&format!("<html>\n  {}\n</html>", "x".repeat(500)));
        assert!(!text.contains('\n'));
        assert!(text.chars().count() <= SNIPPET_CHARS + 3, "{text}");
        assert_eq!(snippet(" \n "), "empty body");
    }

    #[test]
    fn local_times_are_exact_instants() {
        let t = parse_local_time("2016-01-01 12:00:00").unwrap();
        assert_eq!(t.timestamp(), 1_451_620_800);
        assert_eq!(t.offset(), &shanghai());
        assert_eq!(parse_local_time("2016-01-01 12:00").unwrap(), t);
        assert_eq!(parse_local_time("1451620800000").unwrap(), t);
        assert_eq!(parse_local_time("yesterday"), None);
        assert_eq!(parse_local_time(""), None);
    }

    #[test]
    fn shanghai_times_read_as_chrono_reads_their_formats() {
        use chrono::NaiveDateTime;
        // What `parse_from_str` accepts and refuses, read through the items kept ready.
        let cases = [
            "2026-11-20 08:00:01",
            "2026-11-20 08:00",
            "2026-1-2 3:04:05",
            "2026-11-20  08:00:01",
            "2026-11-20 08:00:01.5",
            "2026-11-20 08:00:60",
            "2026-02-30 08:00:00",
            "2026-11-20 24:00:00",
            "2026-11-20 08:00:01 ",
            "2026-11-20T08:00:01",
            "2026-11-20",
            "+12026-11-20 08:00:01",
            "99999-11-20 08:00:01",
            "",
            "昨天 08:00",
        ];
        for raw in cases {
            let chrono = NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M"))
                .ok()
                .and_then(|naive| naive.and_local_timezone(shanghai()).single());
            assert_eq!(parse_shanghai_time(raw), chrono, "{raw:?}");
        }
        assert!(parse_shanghai_time(cases[0]).is_some());
        let now = DateTime::parse_from_rfc3339("2026-11-20T00:00:01Z").unwrap();
        assert_eq!(shanghai_seconds(now.to_utc()), "2026-11-20 08:00:01");
    }

    #[test]
    fn events_come_out_oldest_first_either_way() {
        let event = |s: &str, d: &str| TraceEvent {
            time: parse_local_time(s).unwrap(),
            description: d.to_owned(),
            location: None,
            raw_code: None,
        };
        let oldest = vec![
            event("2026-11-20 08:00:00", "a"),
            event("2026-11-20 09:00:00", "b"),
            event("2026-11-20 09:00:00", "c"),
            event("2026-11-20 10:00:00", "d"),
        ];
        let mut newest = oldest.clone();
        newest.reverse();
        assert_eq!(oldest_first(newest), oldest);
        assert_eq!(oldest_first(oldest.clone()), oldest);
    }
}
