//! The vocabulary every other module speaks: canonical statuses, priority tiers, and the small
//! value types that are validated once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The canonical status of a shipment (DESIGN.md, "Canonical status"). Every provider maps its own
/// vocabulary onto this enum; the database stores the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    InfoReceived,
    PickedUp,
    InTransit,
    OutForDelivery,
    AvailableForPickup,
    FailedAttempt,
    Exception,
    Returned,
    Delivered,
    Expired,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Pending,
        Status::InfoReceived,
        Status::PickedUp,
        Status::InTransit,
        Status::OutForDelivery,
        Status::AvailableForPickup,
        Status::FailedAttempt,
        Status::Exception,
        Status::Returned,
        Status::Delivered,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InfoReceived => "info_received",
            Status::PickedUp => "picked_up",
            Status::InTransit => "in_transit",
            Status::OutForDelivery => "out_for_delivery",
            Status::AvailableForPickup => "available_for_pickup",
            Status::FailedAttempt => "failed_attempt",
            Status::Exception => "exception",
            Status::Returned => "returned",
            Status::Delivered => "delivered",
            Status::Expired => "expired",
        }
    }

    /// A terminal status ends polling: nothing the carrier says afterwards is awaited.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Returned | Status::Delivered | Status::Expired)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown status {0:?}: expected one of pending, info_received, picked_up, in_transit, out_for_delivery, available_for_pickup, failed_attempt, exception, returned, delivered, expired"
)]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

// A stored row is parsed once, when it is read (`ShipmentRow`), through these.
impl TryFrom<String> for Status {
    type Error = UnknownStatus;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// The priority tier of a shipment; it sets how often the shipment is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    High,
    Normal,
    Low,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::High, Tier::Normal, Tier::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::High => "high",
            Tier::Normal => "normal",
            Tier::Low => "low",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown tier {0:?}: expected high, normal or low")]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|tier| tier.as_str() == s)
            .ok_or_else(|| UnknownTier(s.to_owned()))
    }
}

impl TryFrom<String> for Tier {
    type Error = UnknownTier;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// Masks a phone number or an email address for logs and tables: `138****5678`,
/// `z***@shop.example`.
pub fn mask_contact(value: &str) -> String {
    if let Some((local, domain)) = value.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 7 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// A mainland China mobile number as stored: its 11 digits (`13812345678`). `+86`, `0086`,
/// spaces and dashes are accepted on input and dropped. `Debug` masks it, as logs must.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

/// A phone number that is not a mainland mobile. The message shows it masked: it may end up in
/// the database and the logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "phone {masked:?} is not a mainland mobile number (11 digits starting with 13-19, optionally +86)"
)]
pub struct InvalidPhone {
    masked: String,
}

impl Phone {
    pub fn parse(input: &str) -> Result<Phone, InvalidPhone> {
        let digits: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        let digits = digits
            .strip_prefix("+86")
            .or_else(|| digits.strip_prefix("0086"))
            .unwrap_or(&digits);
        let bytes = digits.as_bytes();
        let valid = bytes.len() == 11
            && bytes[0] == b'1'
            && (b'3'..=b'9').contains(&bytes[1])
            && bytes.iter().all(u8::is_ascii_digit);
        if valid {
            Ok(Phone(digits.to_owned()))
        } else {
            Err(InvalidPhone {
                masked: mask_contact(input),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({:?})", mask_contact(&self.0))
    }
}

impl TryFrom<String> for Phone {
    type Error = InvalidPhone;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Phone::parse(&value)
    }
}

/// An email address as stored: trimmed, and one that SMTP can send to. `Debug` masks it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Text that is not an email address. The message shows it masked: it may end up in the
/// database and the logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("email {masked:?} is not an email address (like name@example.com)")]
pub struct InvalidEmail {
    masked: String,
}

impl Email {
    pub fn parse(input: &str) -> Result<Email, InvalidEmail> {
        let address = input.trim();
        match address.parse::<lettre::Address>() {
            Ok(_) => Ok(Email(address.to_owned())),
            Err(_) => Err(InvalidEmail {
                masked: mask_contact(input),
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", mask_contact(&self.0))
    }
}

impl TryFrom<String> for Email {
    type Error = InvalidEmail;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Email::parse(&value)
    }
}

/// A buyer's OpenID in the shop's WeChat official account, as the template message's `touser`
/// takes it. WeChat documents no format beyond "the user's openid" (sendTemplateMessage,
/// https://developers.weixin.qq.com/doc/service/api/notify/template/api_sendtemplatemessage.html);
/// the ones it hands out are 28 characters of letters, digits, `-` and `_`. Anything else (a
/// blank, a space, a character outside that set, more than [`OpenId::MAX_CHARS`]) is a typo or
/// another column pasted here, refused at intake. `Debug` masks it: with the account's token it
/// reaches the buyer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OpenId(String);

/// Text that is not an OpenID. The message shows it masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "openid {masked:?} is not a WeChat OpenID (1 to 128 letters, digits, '-' or '_', as the official account gives it)"
)]
pub struct InvalidOpenId {
    masked: String,
}

impl OpenId {
    /// Longer than any OpenID WeChat hands out (28), short enough to refuse a pasted paragraph.
    pub const MAX_CHARS: usize = 128;

    pub fn parse(input: &str) -> Result<OpenId, InvalidOpenId> {
        let value = input.trim();
        let valid = !value.is_empty()
            && value.len() <= Self::MAX_CHARS
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(OpenId(value.to_owned()))
        } else {
            Err(InvalidOpenId {
                masked: mask_contact(input),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OpenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OpenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenId({:?})", mask_contact(&self.0))
    }
}

impl TryFrom<String> for OpenId {
    type Error = InvalidOpenId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        OpenId::parse(&value)
    }
}

/// A contact column of a stored row that does not parse (another program wrote the row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidContact {
    #[error(transparent)]
    Phone(#[from] InvalidPhone),
    #[error(transparent)]
    Email(#[from] InvalidEmail),
    #[error(transparent)]
    OpenId(#[from] InvalidOpenId),
}

/// A secret from the configuration. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

/// How many attempts of one notification may be cut short, with no outcome recorded, before it is
/// given up. An attempt cut short (its daemon killed, crashed or stalled past the lease while it
/// was under way) is given back rather than counted against the receiver: kills close together
/// must not turn messages that no receiver refused into dead letters. The limit still ends a
/// message that is in flight at every one of a run of daemon deaths, as one that kills the
/// daemon would be.
pub const MOST_ATTEMPTS_CUT_SHORT: u32 = 10;

/// The ways a notification can travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Webhook,
    Email,
    Sms,
    /// A DingTalk custom robot in a staff group.
    Dingtalk,
    /// A WeCom (企业微信) group robot in a staff group.
    Wecom,
    /// A Feishu/Lark custom bot in a staff group.
    Feishu,
    /// A WeChat official account's template message to the buyer.
    Wechat,
}

impl ChannelKind {
    /// Every kind, in the order the schema's CHECK lists them.
    pub const ALL: [ChannelKind; 7] = [
        ChannelKind::Webhook,
        ChannelKind::Email,
        ChannelKind::Sms,
        ChannelKind::Dingtalk,
        ChannelKind::Wecom,
        ChannelKind::Feishu,
        ChannelKind::Wechat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
            ChannelKind::Dingtalk => "dingtalk",
            ChannelKind::Wecom => "wecom",
            ChannelKind::Feishu => "feishu",
            ChannelKind::Wechat => "wechat",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel name that no channel kind has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel {0:?}: expected webhook, email, sms, dingtalk, wecom, feishu or wechat")]
pub struct UnknownChannel(pub String);

impl FromStr for ChannelKind {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "webhook" => Ok(ChannelKind::Webhook),
            "email" => Ok(ChannelKind::Email),
            "sms" => Ok(ChannelKind::Sms),
            "dingtalk" => Ok(ChannelKind::Dingtalk),
            "wecom" => Ok(ChannelKind::Wecom),
            "feishu" => Ok(ChannelKind::Feishu),
            "wechat" => Ok(ChannelKind::Wechat),
            other => Err(UnknownChannel(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_an_unknown_one_lists_the_known() {
        let names = [
            "webhook", "email", "sms", "dingtalk", "wecom", "feishu", "wechat",
        ];
        for name in names {
            let kind: ChannelKind = name.parse().expect(name);
            assert_eq!(kind.as_str(), name);
        }
        assert_eq!(ChannelKind::ALL.map(ChannelKind::as_str), names);
        let err = "telegram".parse::<ChannelKind>().unwrap_err();
        assert_eq!(err, UnknownChannel("telegram".to_owned()));
        assert_eq!(
            err.to_string(),
            "unknown channel \"telegram\": expected webhook, email, sms, dingtalk, wecom, feishu or wechat"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>().unwrap(), status);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert!("shipped".parse::<Status>().is_err());
    }

    #[test]
    fn only_returned_delivered_expired_are_terminal() {
        let terminal: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [Status::Returned, Status::Delivered, Status::Expired]
        );
    }

    #[test]
    fn tier_parse_names_the_bad_value() {
        assert_eq!("low".parse::<Tier>().unwrap(), Tier::Low);
        let err = "urgent".parse::<Tier>().unwrap_err().to_string();
        assert!(
            err.contains("urgent") && err.contains("high, normal or low"),
            "{err}"
        );
    }

    #[test]
    fn contacts_are_masked() {
        assert_eq!(mask_contact("13812345678"), "138****5678");
        assert_eq!(mask_contact("+8613812345678"), "+86****5678");
        assert_eq!(mask_contact("zhang@shop.example"), "z***@shop.example");
        assert_eq!(mask_contact("12345"), "*****");
    }

    #[test]
    fn mainland_mobiles_are_normalised_or_refused() {
        let parsed = |input: &str| Phone::parse(input).map(|p| p.as_str().to_owned());
        assert_eq!(parsed("13812345678").unwrap(), "13812345678");
        assert_eq!(parsed("+86 138-1234-5678").unwrap(), "13812345678");
        assert_eq!(parsed("008613812345678").unwrap(), "13812345678");
        for bad in ["12345", "12812345678", "1381234567x", "+1 415 555 0100", ""] {
            let err = Phone::parse(bad).unwrap_err().to_string();
            assert!(err.contains("mainland mobile"), "{err}");
        }
        assert!(
            !Phone::parse("19912345678123")
                .unwrap_err()
                .to_string()
                .contains("19912345678123")
        );
        let phone: Phone = "13812345678".to_owned().try_into().unwrap();
        assert_eq!(phone.to_string(), "13812345678");
        assert_eq!(format!("{phone:?}"), r#"Phone("138****5678")"#);
    }

    #[test]
    fn email_addresses_are_trimmed_or_refused_masked() {
        let email = Email::parse(" zhang@shop.example ").unwrap();
        assert_eq!(email.as_str(), "zhang@shop.example");
        assert_eq!(email.to_string(), "zhang@shop.example");
        assert_eq!(format!("{email:?}"), r#"Email("z***@shop.example")"#);
        let err = Email::parse("zhang.wei at shop").unwrap_err().to_string();
        assert!(err.contains("is not an email address"), "{err}");
        assert!(!err.contains("zhang.wei"), "{err}");
        assert!(Email::try_from(String::new()).is_err());
    }

    #[test]
    fn openids_are_trimmed_or_refused_masked() {
        let openid = OpenId::parse(" oia2TjuEGTNoeX76QEjQNrcURxG8 ").unwrap();
        assert_eq!(openid.as_str(), "oia2TjuEGTNoeX76QEjQNrcURxG8");
        assert_eq!(openid.to_string(), "oia2TjuEGTNoeX76QEjQNrcURxG8");
        assert_eq!(format!("{openid:?}"), r#"OpenId("oia****RxG8")"#);
        assert!(OpenId::parse("o-_9").is_ok());
        assert!(OpenId::parse(&"a".repeat(OpenId::MAX_CHARS)).is_ok());
        let too_long = "a".repeat(OpenId::MAX_CHARS + 1);
        for bad in [
            "",
            "   ",
            "oia2 TjuEG",
            "oia2Tju/EG",
            "微信用户",
            too_long.as_str(),
        ] {
            let err = OpenId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not a WeChat OpenID"), "{bad:?}: {err}");
        }
        let err = OpenId::parse("oia2TjuEGTNoeX76QEjQNrcURxG8!")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("oia2TjuEGTNoeX76QEjQNrcURxG8"), "{err}");
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), r#"Secret("***")"#);
        assert_eq!(secret.expose(), "hunter2");
    }
}
