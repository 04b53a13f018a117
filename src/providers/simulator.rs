//! The simulated carrier of `shipwatch demo` and the pipeline tests: an order moves one step along
//! a scripted journey every `step` after it was added. It speaks no wire format; tests of the real
//! adapters run against fake servers instead.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Provider, ProviderError, Trace, TraceEvent, TrackRequest};
use crate::clock::{Millis, SharedClock, SystemClock, to_shanghai};
use crate::domain::Status;

type Step = (Status, &'static str, &'static str, &'static str);

const STANDARD: &[Step] = &[
    (
        Status::InfoReceived,
        "物流公司已接单",
        "商家已下单，等待快递员揽收",
        "杭州市",
    ),
    (
        Status::PickedUp,
        "物流公司揽收成功",
        "快递员已揽收",
        "杭州市",
    ),
    (
        Status::InTransit,
        "物流公司揽收成功",
        "到达【上海转运中心】",
        "上海市",
    ),
    (
        Status::OutForDelivery,
        "物流公司揽收成功",
        "快递员正在派件",
        "北京市朝阳区",
    ),
    (
        Status::Delivered,
        "对方已签收",
        "已签收，签收人：本人",
        "北京市朝阳区",
    ),
];

const LOCKER: &[Step] = &[
    (
        Status::InfoReceived,
        "物流公司已接单",
        "商家已下单，等待快递员揽收",
        "广州市",
    ),
    (
        Status::PickedUp,
        "物流公司揽收成功",
        "快递员已揽收",
        "广州市",
    ),
    (
        Status::InTransit,
        "物流公司揽收成功",
        "发往【成都转运中心】",
        "广州市",
    ),
    (
        Status::AvailableForPickup,
        "物流公司揽收成功",
        "已投柜，请凭取件码取件",
        "成都市",
    ),
    (
        Status::Delivered,
        "对方已签收",
        "已从快递柜取件签收",
        "成都市",
    ),
];

const SECOND_TRY: &[Step] = &[
    (
        Status::InfoReceived,
        "物流公司已接单",
        "商家已下单，等待快递员揽收",
        "义乌市",
    ),
    (
        Status::PickedUp,
        "物流公司揽收成功",
        "快递员已揽收",
        "义乌市",
    ),
    (
        Status::InTransit,
        "物流公司揽收成功",
        "到达【南京转运中心】",
        "南京市",
    ),
    (
        Status::OutForDelivery,
        "物流公司揽收成功",
        "快递员正在派件",
        "南京市",
    ),
    (
        Status::FailedAttempt,
        "签收失败",
        "派件异常：收件人电话无人接听",
        "南京市",
    ),
    (
        Status::OutForDelivery,
        "物流公司揽收成功",
        "快递员再次派件",
        "南京市",
    ),
    (
        Status::Delivered,
        "对方已签收",
        "已签收，签收人：门卫",
        "南京市",
    ),
];

const REFUSED: &[Step] = &[
    (
        Status::InfoReceived,
        "物流公司已接单",
        "商家已下单，等待快递员揽收",
        "深圳市",
    ),
    (
        Status::PickedUp,
        "物流公司揽收成功",
        "快递员已揽收",
        "深圳市",
    ),
    (
        Status::InTransit,
        "物流公司揽收成功",
        "到达【武汉转运中心】",
        "武汉市",
    ),
    (Status::Exception, "对方拒绝签收", "收件人拒收", "武汉市"),
    (Status::Returned, "对方拒绝签收", "已退回寄件人", "深圳市"),
];

/// The journeys an order can take; an order's trailing number picks one.
pub const JOURNEYS: [&[Step]; 4] = [STANDARD, LOCKER, SECOND_TRY, REFUSED];

/// The journey an order id follows: its trailing digits modulo the number of journeys.
pub fn journey_of(order_id: &str) -> &'static [Step] {
    let digits: String = order_id
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let n: usize = digits
        .get(digits.len().saturating_sub(6)..)
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    JOURNEYS[n % JOURNEYS.len()]
}

/// How long a simulated parcel spends on each step of its journey, unless configured.
pub const DEFAULT_STEP: Duration = Duration::from_secs(2);

/// Serves each order the part of its journey that the time since the shipment was added
/// covers: one step every `step`. The answer depends on nothing else, so a restarted daemon
/// (or a second one) sees the same journey, never one that starts over.
pub struct Simulator {
    step: Duration,
    clock: SharedClock,
}

impl Simulator {
    pub fn new(step: Duration) -> Self {
        Simulator::with_clock(step, Arc::new(SystemClock))
    }

    pub fn with_clock(step: Duration, clock: SharedClock) -> Self {
        Simulator {
            step: step.max(Duration::from_millis(1)),
            clock,
        }
    }

    /// The trace of a shipment added at `created_at`, as seen at `now`.
    pub fn trace_at(&self, request: &TrackRequest, now: Millis) -> Trace {
        let journey = journey_of(&request.order_id);
        let step_ms = i64::try_from(self.step.as_millis()).unwrap_or(i64::MAX);
        let elapsed = now.saturating_sub(request.created_at).max(0);
        let reached = usize::try_from(elapsed / step_ms)
            .unwrap_or(usize::MAX)
            .min(journey.len() - 1);
        let events = journey[..=reached]
            .iter()
            .enumerate()
            .map(|(k, (_, _, description, location))| {
                // Whole seconds, as carriers report them.
                let at = request.created_at.saturating_add(k as i64 * step_ms) / 1000 * 1000;
                TraceEvent {
                    time: to_shanghai(at),
                    description: (*description).to_owned(),
                    location: Some((*location).to_owned()),
                    raw_code: Some(format!("SIM_{}", k + 1)),
                }
            })
            .collect();
        let (status, raw_status, _, _) = journey[reached];
        Trace {
            status,
            raw_status: raw_status.to_owned(),
            events,
            carrier: Some("模拟快递".to_owned()),
            tracking_no: request
                .tracking_no
                .clone()
                .or_else(|| Some(format!("SIM{}", request.order_id))),
            unmapped: Vec::new(),
        }
    }
}

#[async_trait]
impl Provider for Simulator {
    fn kind(&self) -> &'static str {
        "simulator"
    }

    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError> {
        Ok(self.trace_at(request, self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDED: Millis = 1_764_300_000_000;
    const STEP: Duration = Duration::from_secs(60);

    fn request(order_id: &str) -> TrackRequest {
        TrackRequest {
            order_id: order_id.to_owned(),
            created_at: ADDED,
            ..TrackRequest::default()
        }
    }

    fn at(minutes: i64) -> Millis {
        ADDED + minutes * 60_000
    }

    #[test]
    fn one_step_per_interval_since_the_shipment_was_added_then_it_stays() {
        let sim = Simulator::new(STEP);
        let statuses: Vec<Status> = (0..7)
            .map(|minute| sim.trace_at(&request("DEMO-1000"), at(minute)).status)
            .collect();
        assert_eq!(
            statuses,
            [
                Status::InfoReceived,
                Status::PickedUp,
                Status::InTransit,
                Status::OutForDelivery,
                Status::Delivered,
                Status::Delivered,
                Status::Delivered
            ]
        );
        let last = sim.trace_at(&request("DEMO-1000"), at(6));
        assert_eq!(last.events.len(), 5);
        assert!(last.events.windows(2).all(|w| w[0].time < w[1].time));
        assert_eq!(last.events[1].time, to_shanghai(at(1)));
    }

    #[test]
    fn the_same_moment_gives_the_same_answer_whoever_asks_and_time_never_runs_back() {
        // Two simulators stand for a daemon before and after a restart.
        let before = Simulator::new(STEP);
        let after = Simulator::new(STEP);
        let mut previous = 0;
        for second in (0..400).step_by(7) {
            let now = ADDED + second * 1000;
            let trace = before.trace_at(&request("DEMO-1003"), now);
            assert_eq!(trace, after.trace_at(&request("DEMO-1003"), now));
            assert!(trace.events.len() >= previous, "went back at {second}s");
            previous = trace.events.len();
        }
        // A clock behind the shipment's creation shows its first step, not a panic.
        let early = before.trace_at(&request("DEMO-1000"), ADDED - 5_000);
        assert_eq!(early.status, Status::InfoReceived);
    }

    #[test]
    fn every_journey_ends_terminal_and_is_reachable() {
        for (i, journey) in JOURNEYS.iter().enumerate() {
            assert!(journey.last().unwrap().0.is_terminal());
            assert!(
                journey[..journey.len() - 1]
                    .iter()
                    .all(|s| !s.0.is_terminal())
            );
            assert_eq!(journey_of(&format!("DEMO-{}", 1000 + i)), *journey);
        }
        assert_eq!(journey_of("no-digits"), STANDARD);
    }
}
