//! What one scan of a parcel says, for the platforms whose scans carry Taobao/Cainiao action codes
//! and free text (TOP's `transit_step_info`, 1688's `traceNodeList` and `logisticsSteps`): one
//! table of actions and one of keywords, so that both read a scan alike.

use super::TraceEvent;
use crate::domain::Status;

/// Scan `action` codes, matched ignoring case. Neither TOP, Cainiao nor the 1688 SDK (which only
/// calls the field 动作, `AlibabaLogisticsOpenPlatformTraceNode`) publishes a table of them: these
/// are the codes seen in answers (DESIGN.md lists them), mapped by what their names say. Where a
/// name could mean more than one thing, the row takes the status that keeps polling.
pub(crate) const ACTIONS: &[(&str, Status)] = &[
    ("GOT", Status::PickedUp),
    ("ACCEPT", Status::PickedUp),
    ("TMS_ACCEPT", Status::PickedUp),
    ("ARRIVAL", Status::InTransit),
    ("ARRIVE", Status::InTransit),
    ("DEPARTURE", Status::InTransit),
    ("SENT_CITY", Status::InTransit),
    // Into and out of the delivering station: not yet onto a courier nor into a locker.
    ("TMS_STATION_IN", Status::InTransit),
    ("TMS_STATION_OUT", Status::InTransit),
    ("SENT_SCAN", Status::OutForDelivery),
    ("TMS_DELIVERING", Status::OutForDelivery),
    // Into a Cainiao station or locker, waiting for the buyer.
    ("STA_INBOUND", Status::AvailableForPickup),
    ("SIGNED", Status::Delivered),
    ("TMS_SIGN", Status::Delivered),
    ("STA_SIGN", Status::Delivered),
    ("FAILED", Status::FailedAttempt),
    ("TMS_FAILED", Status::FailedAttempt),
    ("TMS_REJECT", Status::Exception),
    ("TMS_ERROR", Status::Exception),
    // On its way back to the seller: not yet returned, so polling goes on until a sign-back
    // (退签) says it is over.
    ("TMS_RETURN", Status::Exception),
];

/// Keywords of a scan's text, tried in order, first match wins. No source lists them; the order
/// carries the meaning:
/// - failures and refusals before 签收 and 派件, which they contain (签收失败, 拒绝签收,
///   派件异常), pickup failures before 揽收;
/// - a parcel signed back to its sender (退签, 退回件已签收) is over, one on its way back (退回)
///   is not yet;
/// - the buyer taking the parcel out (已取件, 取件签收) before lockers, and lockers and stations
///   before 代收 and 签收: a station "receiving on the buyer's behalf" still waits for the buyer,
///   and a false `delivered` would stop polling for good, while a later scan still turns the
///   waiting parcel into a delivered one; a courier collecting from the sender (快递员已取件)
///   before the buyer's 已取件;
/// - a courier announcing a signature (待签收, 准备签收) is still out for delivery;
/// - 待揽收 before 揽收, and the bare 收件 and 异常 (which hide inside 收件人 and
///   "如有异常请联系…") last.
pub(crate) const KEYWORDS: &[(&str, Status)] = &[
    ("签收失败", Status::FailedAttempt),
    ("未签收", Status::FailedAttempt),
    ("派件异常", Status::FailedAttempt),
    ("派送异常", Status::FailedAttempt),
    ("派送失败", Status::FailedAttempt),
    ("投递失败", Status::FailedAttempt),
    ("拒绝签收", Status::Exception),
    ("拒收", Status::Exception),
    ("拒签", Status::Exception),
    ("退签", Status::Returned),
    ("退回件已签收", Status::Returned),
    ("退回签收", Status::Returned),
    ("退件签收", Status::Returned),
    ("退回", Status::Exception),
    ("疑难", Status::Exception),
    ("问题件", Status::Exception),
    ("滞留", Status::Exception),
    ("揽收失败", Status::Exception),
    ("揽件失败", Status::Exception),
    ("不接单", Status::Exception),
    ("快递员已取件", Status::PickedUp),
    ("已取件", Status::Delivered),
    ("取件签收", Status::Delivered),
    ("待取件", Status::AvailableForPickup),
    ("驿站", Status::AvailableForPickup),
    ("代收点", Status::AvailableForPickup),
    ("快递柜", Status::AvailableForPickup),
    ("智能柜", Status::AvailableForPickup),
    ("丰巢", Status::AvailableForPickup),
    ("投柜", Status::AvailableForPickup),
    ("自提", Status::AvailableForPickup),
    ("取件码", Status::AvailableForPickup),
    ("待签收", Status::OutForDelivery),
    ("准备签收", Status::OutForDelivery),
    // A doorman or a relative taking it in; stations and lockers were matched above.
    ("代收", Status::Delivered),
    ("签收", Status::Delivered),
    ("代签", Status::Delivered),
    ("妥投", Status::Delivered),
    ("派件", Status::OutForDelivery),
    ("派送", Status::OutForDelivery),
    ("待揽收", Status::InfoReceived),
    ("待揽件", Status::InfoReceived),
    ("已下单", Status::InfoReceived),
    ("已接单", Status::InfoReceived),
    ("揽收", Status::PickedUp),
    ("揽件", Status::PickedUp),
    ("已收件", Status::PickedUp),
    ("已发货", Status::PickedUp),
    ("已出库", Status::PickedUp),
    ("到达", Status::InTransit),
    ("发往", Status::InTransit),
    ("发出", Status::InTransit),
    ("离开", Status::InTransit),
    ("转运", Status::InTransit),
    ("中转", Status::InTransit),
    ("在途", Status::InTransit),
    ("运输中", Status::InTransit),
    ("收件", Status::PickedUp),
    ("异常", Status::Exception),
];

pub(crate) fn action_status(action: &str) -> Option<Status> {
    let action = action.trim();
    ACTIONS
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(action))
        .map(|(_, status)| *status)
}

pub(crate) fn keyword_status(text: &str) -> Option<Status> {
    KEYWORDS
        .iter()
        .find(|(keyword, _)| text.contains(keyword))
        .map(|(_, status)| *status)
}

/// What one scan says: its action when the table knows it, else its text.
pub(crate) fn event_status(event: &TraceEvent) -> Option<Status> {
    event
        .raw_code
        .as_deref()
        .and_then(action_status)
        .or_else(|| keyword_status(&event.description))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_row() {
        use Status::*;
        let expected = [
            ("GOT", PickedUp),
            ("ACCEPT", PickedUp),
            ("TMS_ACCEPT", PickedUp),
            ("ARRIVAL", InTransit),
            ("ARRIVE", InTransit),
            ("DEPARTURE", InTransit),
            ("SENT_CITY", InTransit),
            ("TMS_STATION_IN", InTransit),
            ("TMS_STATION_OUT", InTransit),
            ("SENT_SCAN", OutForDelivery),
            ("TMS_DELIVERING", OutForDelivery),
            ("STA_INBOUND", AvailableForPickup),
            ("SIGNED", Delivered),
            ("TMS_SIGN", Delivered),
            ("STA_SIGN", Delivered),
            ("FAILED", FailedAttempt),
            ("TMS_FAILED", FailedAttempt),
            ("TMS_REJECT", Exception),
            ("TMS_ERROR", Exception),
            ("TMS_RETURN", Exception),
        ];
        assert_eq!(expected.len(), ACTIONS.len());
        for (index, (action, status)) in expected.into_iter().enumerate() {
            assert_eq!(ACTIONS[index].0, action, "row {index}");
            assert_eq!(action_status(action), Some(status), "{action}");
            let lower = format!(" {} ", action.to_ascii_lowercase());
            assert_eq!(action_status(&lower), Some(status), "{lower}");
        }
        assert_eq!(action_status("TEST_UNKNOWN"), None);
    }

    #[test]
    fn every_keyword_row() {
        use Status::*;
        let expected = [
            ("签收失败", FailedAttempt),
            ("未签收", FailedAttempt),
            ("派件异常", FailedAttempt),
            ("派送异常", FailedAttempt),
            ("派送失败", FailedAttempt),
            ("投递失败", FailedAttempt),
            ("拒绝签收", Exception),
            ("拒收", Exception),
            ("拒签", Exception),
            ("退签", Returned),
            ("退回件已签收", Returned),
            ("退回签收", Returned),
            ("退件签收", Returned),
            ("退回", Exception),
            ("疑难", Exception),
            ("问题件", Exception),
            ("滞留", Exception),
            ("揽收失败", Exception),
            ("揽件失败", Exception),
            ("不接单", Exception),
            ("快递员已取件", PickedUp),
            ("已取件", Delivered),
            ("取件签收", Delivered),
            ("待取件", AvailableForPickup),
            ("驿站", AvailableForPickup),
            ("代收点", AvailableForPickup),
            ("快递柜", AvailableForPickup),
            ("智能柜", AvailableForPickup),
            ("丰巢", AvailableForPickup),
            ("投柜", AvailableForPickup),
            ("自提", AvailableForPickup),
            ("取件码", AvailableForPickup),
            ("待签收", OutForDelivery),
            ("准备签收", OutForDelivery),
            ("代收", Delivered),
            ("签收", Delivered),
            ("代签", Delivered),
            ("妥投", Delivered),
            ("派件", OutForDelivery),
            ("派送", OutForDelivery),
            ("待揽收", InfoReceived),
            ("待揽件", InfoReceived),
            ("已下单", InfoReceived),
            ("已接单", InfoReceived),
            ("揽收", PickedUp),
            ("揽件", PickedUp),
            ("已收件", PickedUp),
            ("已发货", PickedUp),
            ("已出库", PickedUp),
            ("到达", InTransit),
            ("发往", InTransit),
            ("发出", InTransit),
            ("离开", InTransit),
            ("转运", InTransit),
            ("中转", InTransit),
            ("在途", InTransit),
            ("运输中", InTransit),
            ("收件", PickedUp),
            ("异常", Exception),
        ];
        assert_eq!(expected.len(), KEYWORDS.len());
        for (index, (keyword, status)) in expected.into_iter().enumerate() {
            assert_eq!(KEYWORDS[index].0, keyword, "row {index}");
            assert_eq!(keyword_status(keyword), Some(status), "{keyword}");
            // No row may be shadowed by an earlier, shorter one.
            let first = KEYWORDS.iter().position(|(k, _)| keyword.contains(k));
            assert_eq!(first, Some(index), "{keyword} is shadowed");
        }
    }

    #[test]
    fn keyword_order_resolves_overlapping_texts() {
        use Status::*;
        let cases = [
            ("【上海市】快件签收失败，收件人不在", FailedAttempt),
            ("客户不在家，未签收，明日再派", FailedAttempt),
            ("客户拒绝签收，快件待处理", Exception),
            ("快件已退回，发往【杭州转运中心】", Exception),
            ("退回件已由寄件人退签", Returned),
            ("退回件已签收", Returned),
            (
                "您的快件已由菜鸟驿站代收，请凭取件码取件",
                AvailableForPickup,
            ),
            ("快件已被【丰巢智能快递柜】代收", AvailableForPickup),
            ("您的快件已由门卫代收", Delivered),
            ("您已从快递柜取件签收", Delivered),
            ("快件已取件，感谢使用菜鸟驿站", Delivered),
            ("快件已签收，签收人：本人", Delivered),
            ("快递员正在派送，请准备签收", OutForDelivery),
            ("快递员揽收失败", Exception),
            ("商家已下单，等待揽收", InfoReceived),
            ("【杭州市】中通快递 已揽收", PickedUp),
            ("快递员已取件，准备发往转运中心", PickedUp),
            ("快件已到达【上海转运中心】，收件人：张三", InTransit),
            (
                "【上海市】快递员正在派件，如有异常请联系快递员",
                OutForDelivery,
            ),
            ("快件在【武汉】滞留", Exception),
            ("快件异常，请联系客服", Exception),
        ];
        for (text, status) in cases {
            assert_eq!(keyword_status(text), Some(status), "{text}");
        }
        assert_eq!(keyword_status("系统消息"), None);
        assert_eq!(keyword_status(""), None);
    }
}
