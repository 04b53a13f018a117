//! The simulated carrier of `shipwatch demo` and the pipeline tests: each poll of an order moves
//! it one step along a scripted journey. It speaks no wire format; tests of the real adapters run
//! against fake servers instead.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Timelike;

use super::{Provider, ProviderError, Trace, TraceEvent, TrackRequest, shanghai};
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

#[derive(Default)]
pub struct Simulator {
    /// Events served so far, per order.
    served: Mutex<HashMap<String, Vec<TraceEvent>>>,
}

impl Simulator {
    pub fn new() -> Self {
        Simulator::default()
    }
}

#[async_trait]
impl Provider for Simulator {
    fn kind(&self) -> &'static str {
        "simulator"
    }

    async fn fetch(&self, request: &TrackRequest) -> Result<Trace, ProviderError> {
        let journey = journey_of(&request.order_id);
        let mut served = self.served.lock().expect("simulator lock");
        let events = served.entry(request.order_id.clone()).or_default();
        let step = events.len().min(journey.len() - 1);
        if events.len() < journey.len() {
            let (_, _, description, location) = journey[step];
            // Whole seconds, as carriers report them; never before the previous scan.
            let now = chrono::Utc::now()
                .with_timezone(&shanghai())
                .with_nanosecond(0)
                .expect("0 is a valid nanosecond");
            let time = events.last().map_or(now, |last| {
                now.max(last.time + chrono::Duration::seconds(1))
            });
            events.push(TraceEvent {
                time,
                description: description.to_owned(),
                location: Some(location.to_owned()),
                raw_code: Some(format!("SIM_{}", step + 1)),
            });
        }
        let (status, raw_status, _, _) = journey[step];
        Ok(Trace {
            status,
            raw_status: raw_status.to_owned(),
            events: events.clone(),
            carrier: Some("模拟快递".to_owned()),
            tracking_no: request
                .tracking_no
                .clone()
                .or_else(|| Some(format!("SIM{}", request.order_id))),
            unmapped: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(order_id: &str) -> TrackRequest {
        TrackRequest {
            order_id: order_id.to_owned(),
            tracking_no: None,
            carrier: None,
            phone: None,
        }
    }

    #[tokio::test]
    async fn each_poll_moves_one_step_and_stays_at_the_end() {
        let sim = Simulator::new();
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(sim.fetch(&request("DEMO-1000")).await.unwrap());
        }
        let statuses: Vec<Status> = seen.iter().map(|t| t.status).collect();
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
        let last = seen.last().unwrap();
        assert_eq!(last.events.len(), 5);
        assert!(last.events.windows(2).all(|w| w[0].time < w[1].time));
        assert_eq!(
            seen[4].events, last.events,
            "a finished journey adds no events"
        );
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
