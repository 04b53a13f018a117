//! What a buyer reads: texts per channel and status with `{placeholder}`s, zh-CN defaults, and
//! the quiet hours that hold SMS back at night.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::clock::Millis;
use crate::domain::Status;

/// The names a template may use.
pub const PLACEHOLDERS: [&str; 6] = [
    "order_id",
    "tracking_no",
    "carrier",
    "status",
    "event",
    "event_time",
];

/// The names a channel's texts may use: the [`PLACEHOLDERS`] and `link`, the order's page as
/// `[notify] link` gives it (empty without one).
pub const TEXT_PLACEHOLDERS: [&str; 7] = [
    "order_id",
    "tracking_no",
    "carrier",
    "status",
    "event",
    "event_time",
    "link",
];

/// The names `[notify] link` may use: what identifies the parcel.
pub const LINK_PLACEHOLDERS: [&str; 3] = ["order_id", "tracking_no", "carrier"];

/// The placeholder values of one notification.
pub type Values = BTreeMap<String, String>;

/// A text with `{name}` placeholders; `{{` and `}}` stand for literal braces. Checked once, when
/// the config is read, so that rendering cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{name}}} (known: {known})")]
    Unknown { name: String, known: String },
    #[error("unclosed {{ at byte {0}; write {{{{ for a literal brace")]
    Unclosed(usize),
    #[error("stray }} at byte {0}; write }}}} for a literal brace")]
    Stray(usize),
}

enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

fn pieces(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let (mut i, mut start) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                out.push(Piece::Text(&text[start..=i]));
                i += 2;
                start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                out.push(Piece::Text(&text[start..=i]));
                i += 2;
                start = i;
            }
            b'{' => {
                out.push(Piece::Text(&text[start..i]));
                let end = text[i..].find('}').ok_or(TemplateError::Unclosed(i))? + i;
                out.push(Piece::Name(text[i + 1..end].trim()));
                i = end + 1;
                start = i;
            }
            b'}' => return Err(TemplateError::Stray(i)),
            _ => i += 1,
        }
    }
    out.push(Piece::Text(&text[start..]));
    Ok(out)
}

impl Template {
    /// Checks `text` against the placeholders `known`.
    pub fn parse(text: &str, known: &[&str]) -> Result<Template, TemplateError> {
        for piece in pieces(text)? {
            if let Piece::Name(name) = piece
                && !known.contains(&name)
            {
                return Err(TemplateError::Unknown {
                    name: name.to_owned(),
                    known: known.join(", "),
                });
            }
        }
        Ok(Template(text.to_owned()))
    }

    /// Fills the placeholders; a value not given renders empty.
    pub fn render(&self, values: &Values) -> String {
        let mut out = String::new();
        for piece in pieces(&self.0).expect("checked when parsed") {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Name(name) => out.push_str(values.get(name).map_or("", String::as_str)),
            }
        }
        out
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a status reads to a buyer.
pub fn status_text(status: Status) -> &'static str {
    match status {
        Status::Pending => "待处理",
        Status::InfoReceived => "已下单",
        Status::PickedUp => "已发货",
        Status::InTransit => "运输中",
        Status::OutForDelivery => "派送中",
        Status::AvailableForPickup => "待取件",
        Status::FailedAttempt => "派送未成功",
        Status::Exception => "异常",
        Status::Returned => "已退回",
        Status::Delivered => "已签收",
        Status::Expired => "已停止跟踪",
    }
}

/// The default line for a status (DESIGN.md gives those for pickup, transit and signing).
pub fn default_line(status: Status) -> &'static str {
    match status {
        Status::Pending => "我们正在跟踪您的包裹。",
        Status::InfoReceived => "您的订单已交给快递公司,等待揽收。",
        Status::PickedUp => "您的包裹已发货!",
        Status::InTransit => "包裹运输中,预计24小时内送达。",
        Status::OutForDelivery => "包裹正在派送中,请保持电话畅通。",
        Status::AvailableForPickup => "包裹已到达驿站或快递柜,请及时取件。",
        Status::FailedAttempt => "包裹派送未成功,快递员将再次派送。",
        Status::Exception => "包裹运输出现异常,我们正在处理。",
        Status::Returned => "包裹已退回。",
        Status::Delivered => "包裹已签收,感谢您的信任。",
        Status::Expired => "包裹长时间没有更新,已停止跟踪。",
    }
}

/// The default SMS: the status line with the order.
pub fn default_sms(status: Status) -> Template {
    Template(format!("订单{{order_id}}:{}", default_line(status)))
}

pub fn default_email_subject(_status: Status) -> Template {
    Template("订单{order_id}:{status}".to_owned())
}

pub fn default_email_body(status: Status) -> Template {
    Template(format!(
        "{}\n\n订单号:{{order_id}}\n运单号:{{tracking_no}}\n快递公司:{{carrier}}\n最新动态:{{event_time}} {{event}}\n",
        default_line(status)
    ))
}

/// The title a group robot's message shows in the conversation list.
pub fn default_robot_title(_status: Status) -> Template {
    Template("订单{order_id}:{status}".to_owned())
}

/// A group robot's markdown text, for the shop's staff: the order, the newest event and the
/// carrier. The change itself (from which status) is put in front by the payload.
pub fn default_robot_text(_status: Status) -> Template {
    Template(
        "- 订单号:{order_id}\n- 运单号:{tracking_no}({carrier})\n- 最新动态:{event_time} {event}"
            .to_owned(),
    )
}

/// Quiet hours: SMS due inside them waits until they end. The window may cross midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub zone: Tz,
}

/// Quiet hours as written in the config that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidQuietHours {
    #[error("quiet_hours {0:?} is not a window; write it like 21:00-08:00")]
    Window(String),
    #[error("timezone {0:?} is not a time zone name such as Asia/Shanghai")]
    Zone(String),
}

impl QuietHours {
    /// Parses `21:00-08:00` and a zone name such as `Asia/Shanghai`.
    pub fn parse(window: &str, zone: &str) -> Result<QuietHours, InvalidQuietHours> {
        let hint = || InvalidQuietHours::Window(window.to_owned());
        let (start, end) = window.split_once('-').ok_or_else(hint)?;
        let time = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| hint());
        let zone: Tz = zone
            .parse()
            .map_err(|_| InvalidQuietHours::Zone(zone.to_owned()))?;
        Ok(QuietHours {
            start: time(start)?,
            end: time(end)?,
            zone,
        })
    }

    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// The earliest time at or after `at` outside the quiet hours.
    pub fn next_allowed(&self, at: Millis) -> Millis {
        let Some(utc) = DateTime::<Utc>::from_timestamp_millis(at) else {
            return at;
        };
        let local = utc.with_timezone(&self.zone);
        if self.start == self.end || !self.contains(local.time()) {
            return at;
        }
        let mut day = local.date_naive();
        if local.time() >= self.end && self.start > self.end {
            day = day.succ_opt().unwrap_or(day);
        }
        let end = day.and_time(self.end);
        let readings = self.zone.from_local_datetime(&end);
        // When clocks go back, the end reads twice: the first, unless it has passed already (a
        // message held in the repeated hour waits for the second).
        let first_to_come = readings
            .earliest()
            .filter(|first| first.timestamp_millis() >= at)
            .or(readings.latest());
        match first_to_come {
            Some(end) => end.timestamp_millis(),
            // The end falls in the hour a clock skips when it is set forward: it is read with the
            // offset in force before the jump, so the message waits as long past the jump as the
            // end lay into it (02:30 in a jump from 02:00 to 03:00 is 03:30), never less.
            None => (end - local.offset().fix()).and_utc().timestamp_millis(),
        }
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{} {}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M"),
            self.zone
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        [
            ("order_id", "123"),
            ("tracking_no", "ZT9"),
            ("status", "已签收"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_refused() {
        let t = Template::parse(
            "订单{order_id} {status}, {{literal}} {carrier}",
            &PLACEHOLDERS,
        )
        .unwrap();
        assert_eq!(t.render(&values()), "订单123 已签收, {literal} ");
        assert_eq!(
            t.to_string(),
            "订单{order_id} {status}, {{literal}} {carrier}"
        );
        let err = Template::parse("hi {name}", &PLACEHOLDERS).unwrap_err();
        assert!(err.to_string().contains("{name}"), "{err}");
        assert!(Template::parse("oops {order_id", &PLACEHOLDERS).is_err());
        assert!(Template::parse("oops }", &PLACEHOLDERS).is_err());
    }

    #[test]
    fn every_default_names_known_placeholders_only() {
        for status in Status::ALL {
            for t in [
                default_sms(status),
                default_email_subject(status),
                default_email_body(status),
            ] {
                Template::parse(t.as_str(), &PLACEHOLDERS).unwrap();
            }
        }
        assert_eq!(default_line(Status::PickedUp), "您的包裹已发货!");
        assert_eq!(
            default_line(Status::InTransit),
            "包裹运输中,预计24小时内送达。"
        );
        assert_eq!(default_line(Status::Delivered), "包裹已签收,感谢您的信任。");
        assert_eq!(
            default_sms(Status::Delivered).render(&values()),
            "订单123:包裹已签收,感谢您的信任。"
        );
    }

    fn shanghai_ms(y: i32, m: u32, d: u32, h: u32, min: u32) -> Millis {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn quiet_hours_hold_messages_until_morning() {
        let quiet = QuietHours::parse("21:00-08:00", "Asia/Shanghai").unwrap();
        let morning = shanghai_ms(2026, 11, 29, 8, 0);
        assert_eq!(
            quiet.next_allowed(shanghai_ms(2026, 11, 28, 22, 30)),
            morning
        );
        assert_eq!(quiet.next_allowed(shanghai_ms(2026, 11, 29, 3, 0)), morning);
        assert_eq!(
            quiet.next_allowed(shanghai_ms(2026, 11, 28, 21, 0)),
            morning
        );
        let noon = shanghai_ms(2026, 11, 28, 12, 0);
        assert_eq!(quiet.next_allowed(noon), noon);
        let eight = shanghai_ms(2026, 11, 28, 8, 0);
        assert_eq!(quiet.next_allowed(eight), eight);

        let lunch = QuietHours::parse("12:00-13:30", "Asia/Shanghai").unwrap();
        let lunch_end = shanghai_ms(2026, 11, 28, 13, 30);
        for (h, min) in [(12, 0), (12, 45), (13, 29)] {
            let at = shanghai_ms(2026, 11, 28, h, min);
            assert_eq!(lunch.next_allowed(at), lunch_end, "{h}:{min:02}");
        }
        for (h, min) in [(11, 59), (13, 30), (23, 0), (0, 0)] {
            let at = shanghai_ms(2026, 11, 28, h, min);
            assert_eq!(lunch.next_allowed(at), at, "{h}:{min:02} is outside");
        }
        let off = QuietHours::parse("08:00-08:00", "Asia/Shanghai").unwrap();
        assert_eq!(
            off.next_allowed(eight),
            eight,
            "an empty window holds nothing"
        );
        assert!(QuietHours::parse("late", "Asia/Shanghai").is_err());
        assert!(QuietHours::parse("21:00-08:00", "Mars/Olympus").is_err());
    }

    /// New York sets its clocks back from 02:00 to 01:00 on 1 November 2026, so that night reads
    /// 01:15 twice: a message held by quiet hours ending at 01:30 goes at the first 01:30 when
    /// held before it, and at the second when held in the repeated hour.
    #[test]
    fn quiet_hours_ending_in_a_repeated_hour_end_at_the_next_reading() {
        let quiet = QuietHours::parse("21:00-01:30", "America/New_York").unwrap();
        let utc = |h, min| {
            Utc.with_ymd_and_hms(2026, 11, 1, h, min, 0)
                .unwrap()
                .timestamp_millis()
        };
        let evening = chrono_tz::America::New_York
            .with_ymd_and_hms(2026, 10, 31, 23, 0, 0)
            .unwrap()
            .timestamp_millis();
        // 01:30 EDT is 05:30 UTC; 01:30 EST is 06:30 UTC.
        assert_eq!(quiet.next_allowed(evening), utc(5, 30));
        assert_eq!(quiet.next_allowed(utc(5, 15)), utc(5, 30), "01:15 EDT");
        assert_eq!(
            quiet.next_allowed(utc(5, 45)),
            utc(5, 45),
            "01:45 EDT is free"
        );
        assert_eq!(quiet.next_allowed(utc(6, 15)), utc(6, 30), "01:15 EST");
    }

    /// New York sets its clocks from 02:00 to 03:00 on 8 March 2026, so that night has no 02:30:
    /// a message held by quiet hours ending at 02:30 goes at 03:30 (07:30 UTC), not at once.
    #[test]
    fn quiet_hours_ending_in_a_skipped_hour_end_after_the_jump() {
        let quiet = QuietHours::parse("21:00-02:30", "America/New_York").unwrap();
        let zone = chrono_tz::America::New_York;
        let late = zone.with_ymd_and_hms(2026, 3, 7, 23, 0, 0).unwrap();
        let after_jump = Utc.with_ymd_and_hms(2026, 3, 8, 7, 30, 0).unwrap();
        assert_eq!(
            quiet.next_allowed(late.timestamp_millis()),
            after_jump.timestamp_millis()
        );
        assert_eq!(
            after_jump.with_timezone(&zone).time(),
            NaiveTime::from_hms_opt(3, 30, 0).unwrap()
        );
        // The night after, with the end on the clock again: 02:30 EDT.
        let next_night = zone.with_ymd_and_hms(2026, 3, 8, 22, 0, 0).unwrap();
        assert_eq!(
            quiet.next_allowed(next_night.timestamp_millis()),
            zone.with_ymd_and_hms(2026, 3, 9, 2, 30, 0)
                .unwrap()
                .timestamp_millis()
        );
    }
}
