//! The order exports of the Taobao and 1688 seller centres, read as they are: their Chinese
//! column headers name `shipments` columns, their carrier names become Kuaidi100 codes, and the
//! ways they keep Excel from mangling long numbers are undone.
//!
//! Sources:
//! - Taobao's 卖家中心 → 已卖出的宝贝 → 批量导出 订单报表: the columns as a seller tool reads
//!   them, in order (订单编号, 买家会员名, 买家支付宝账号, … 收货人姓名, 收货地址, 运送方式,
//!   联系电话, 联系手机, … 物流单号, 物流公司, …), in github.com/c2003070110/TBTool,
//!   `src/com/walk_nie/taobao/object/TaobaoSaledObject.java`. It has no buyer email column.
//! - 1688's order export: no published list of its columns was found. The README of a tool
//!   that reads 1688 exports says they pair 订单编号 with 运单号; 物流公司 / 快递公司,
//!   收货人手机 and 买家邮箱 are taken as the issue names them, unconfirmed.
//! - Kuaidi100's company codes: the 快递公司编码 table of its API documentation
//!   (https://api.kuaidi100.com/document/5f0ff6e82977d50a94e10237, 电子面单参数: zhongtong
//!   中通快递, yuantong 圆通速递, yunda 韵达快递, shentong 申通快递, shunfeng 顺丰速运, jtexpress
//!   极兔速递, youzhengguonei 邮政快递包裹, ems EMS, jd 京东快递, debangkuaidi 德邦快递, …) and the
//!   list of its 198 most used codes (cnblogs.com/shellphen/p/8991490.html, 2020).
//! - Excel-safe numbers: exporters write an order id as `="123…"` or with a leading `'` so
//!   that Excel keeps every digit instead of showing 1.23E+18 (the Alipay-style quoting in
//!   github.com/Sky-seeker/BuyerOrdersExport pull request 2).

/// The `shipments` column a header names: one of [`super::COLUMNS`] as it is, or a seller
/// centre's name for it.
pub fn column_of(header: &str) -> Option<&'static str> {
    let header = header.trim();
    if let Some(own) = super::COLUMNS.iter().find(|c| **c == header) {
        return Some(own);
    }
    ALIASES
        .iter()
        .find(|(names, _)| names.contains(&header))
        .map(|(_, column)| *column)
}

/// Whether a header is a seller centre's name (not one of shipwatch's own).
pub fn is_alias(header: &str) -> bool {
    let header = header.trim();
    ALIASES.iter().any(|(names, _)| names.contains(&header))
}

const ALIASES: &[(&[&str], &str)] = &[
    (&["订单编号", "订单号"], "order_id"),
    (&["物流单号", "运单号", "快递单号"], "tracking_no"),
    (&["物流公司", "快递公司"], "carrier"),
    (&["联系手机", "收货人手机", "收货人手机号"], "phone"),
    (&["买家邮箱"], "email"),
];

/// A carrier name no code is known for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown carrier {0:?}: write its Kuaidi100 code instead (like zhongtong or yuantong; the codes are listed at https://api.kuaidi100.com/document/5f0ff6e82977d50a94e10237)"
)]
pub struct UnknownCarrier(pub String);

/// The Kuaidi100 code of a carrier cell: a known name (中通快递, 顺丰, EMS…) becomes its code; a
/// value in ASCII is taken as a code already and kept; any other name is refused.
pub fn carrier_code(cell: &str) -> Result<String, UnknownCarrier> {
    let name: String = cell.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some((_, code)) = CARRIERS
        .iter()
        .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(&name)))
    {
        return Ok((*code).to_owned());
    }
    if cell.is_ascii() {
        return Ok(cell.trim().to_owned());
    }
    Err(UnknownCarrier(cell.trim().to_owned()))
}

/// Carrier names as the seller centres and shops write them, and Kuaidi100's code for each
/// (see the sources at the top of this file).
const CARRIERS: &[(&[&str], &str)] = &[
    (&["中通快递", "中通速递", "中通"], "zhongtong"),
    (&["圆通速递", "圆通快递", "圆通"], "yuantong"),
    (&["韵达快递", "韵达速递", "韵达"], "yunda"),
    (&["申通快递", "申通"], "shentong"),
    (&["顺丰速运", "顺丰快递", "顺丰"], "shunfeng"),
    (&["顺丰快运"], "shunfengkuaiyun"),
    (&["极兔速递", "极兔快递", "极兔"], "jtexpress"),
    (
        &["邮政快递包裹", "邮政包裹", "中国邮政", "邮政"],
        "youzhengguonei",
    ),
    (&["邮政标准快递"], "youzhengbk"),
    (&["EMS", "邮政EMS", "中国邮政EMS", "EMS快递"], "ems"),
    (&["京东快递", "京东物流", "京东"], "jd"),
    (&["德邦快递", "德邦"], "debangkuaidi"),
    (&["德邦物流"], "debangwuliu"),
    (&["百世快递", "百世汇通", "汇通快递"], "huitongkuaidi"),
    (&["优速快递", "优速"], "youshuwuliu"),
    (&["宅急送"], "zhaijisong"),
    (&["天天快递"], "tiantian"),
    (&["丹鸟"], "danniao"),
    (&["众邮快递"], "zhongyouex"),
    (&["跨越速运"], "kuayue"),
    (&["中通快运"], "zhongtongkuaiyun"),
    (&["韵达快运"], "yundakuaiyun"),
    (&["安能快运"], "annengwuliu"),
];

/// A cell as the export meant it: `="123"` and `'123`, which keep Excel from turning a long
/// number into 1.23E+18, are the text inside.
pub fn excel_text(cell: &str) -> &str {
    let cell = cell.trim();
    if let Some(inner) = cell
        .strip_prefix("=\"")
        .and_then(|rest| rest.strip_suffix('"'))
    {
        return inner.trim();
    }
    cell.strip_prefix('\'').map_or(cell, str::trim)
}

/// Whether an export's contact cell is masked (`138****5678`, `a***@example.com`): seller
/// centres hide buyers' contacts in exports under their privacy rules. No published export
/// format documents the mask; a masked value cannot reach anyone, so it is read as no contact
/// (the row is still imported, and a provider that needs the phone says so on that row) rather
/// than refusing the whole file as a malformed phone.
pub fn is_masked(cell: &str) -> bool {
    cell.contains('*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_contacts_are_recognised() {
        assert!(is_masked("138****5678"));
        assert!(is_masked("a***@example.com"));
        assert!(!is_masked("13812345678"));
        assert!(!is_masked(""));
    }

    #[test]
    fn seller_centre_headers_name_shipments_columns() {
        let table = [
            ("订单编号", Some("order_id")),
            (" 物流单号 ", Some("tracking_no")),
            ("运单号", Some("tracking_no")),
            ("物流公司", Some("carrier")),
            ("快递公司", Some("carrier")),
            ("联系手机", Some("phone")),
            ("收货人手机", Some("phone")),
            ("买家邮箱", Some("email")),
            ("order_id", Some("order_id")),
            ("sub_orders", Some("sub_orders")),
            ("联系电话", None),
            ("买家会员名", None),
            ("Order_ID", None),
        ];
        for (header, column) in table {
            assert_eq!(column_of(header), column, "{header}");
        }
        assert!(is_alias("订单编号"));
        assert!(!is_alias("order_id"));
        assert!(!is_alias("收货地址"));
    }

    #[test]
    fn carrier_names_become_kuaidi100_codes() {
        let table = [
            ("中通快递", "zhongtong"),
            ("圆通速递", "yuantong"),
            ("韵达快递", "yunda"),
            ("申通快递", "shentong"),
            ("顺丰速运", "shunfeng"),
            ("顺丰快运", "shunfengkuaiyun"),
            ("极兔速递", "jtexpress"),
            ("邮政快递包裹", "youzhengguonei"),
            ("EMS", "ems"),
            ("ems", "ems"),
            ("京东快递", "jd"),
            ("德邦快递", "debangkuaidi"),
            (" 中通 快递 ", "zhongtong"),
            ("yuantong", "yuantong"),
            ("ZhongTong", "ZhongTong"),
        ];
        for (name, code) in table {
            assert_eq!(carrier_code(name), Ok(code.to_owned()), "{name}");
        }
        let err = carrier_code("飞鸽快递").unwrap_err();
        assert_eq!(err, UnknownCarrier("飞鸽快递".to_owned()));
        let shown = err.to_string();
        assert!(shown.contains("\"飞鸽快递\"") && shown.contains("Kuaidi100 code"));
        // Escaped where printed.
        let err = carrier_code("快递\n\u{1b}[31m").unwrap_err().to_string();
        assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err}");
    }

    #[test]
    fn excel_quoting_is_undone() {
        assert_eq!(
            excel_text("=\"1234567890123456789\""),
            "1234567890123456789"
        );
        assert_eq!(excel_text("'13812345678"), "13812345678");
        assert_eq!(excel_text(" 123\t"), "123");
        assert_eq!(excel_text("=1+1"), "=1+1");
        assert_eq!(excel_text(""), "");
    }
}
