//! The rules of the schema a row can break, as one line whichever engine refused the row, so that
//! a violation reads the same on SQLite and on PostgreSQL (issue 17).
//!
//! SQLite says a broken rule in one of three ways: the text of a typed trigger's `RAISE` (`tier
//! must be text`), `CHECK constraint failed: NAME` for a named CHECK whose name is the line, and
//! `CHECK constraint failed: EXPR` for the few unnamed ones (`channel IN ('webhook', …)`).
//! PostgreSQL names the CHECK: its constraints are named with the same lines, save those longer
//! than its 63-byte identifiers, which [`SHORT_NAMES`] maps back; and its column types stand for
//! SQLite's typed triggers: a value of the wrong type bound to a BIGINT column is refused with
//! `column "X" is of type bigint but expression is of type text`, which becomes X's trigger line.

/// PostgreSQL's names for the rules whose line does not fit in an identifier, with that line.
pub const SHORT_NAMES: &[(&str, &str)] = &[
    (
        "sub_orders must be sub-order ids separated by commas",
        "sub_orders must be sub-order ids separated by commas, like 111,222",
    ),
    (
        "invalid_kind must be a known kind",
        "invalid_kind must be one of unknown_provider, row, upstream, schedule",
    ),
    (
        "channel must be a known channel",
        "channel must be one of webhook, email, sms, dingtalk, wecom, feishu, wechat",
    ),
];

/// The columns whose typed-trigger line says they hold times.
const TIME_COLUMNS: &[&str] = &[
    "claimed_until",
    "next_poll_at",
    "last_polled_at",
    "last_event_at",
    "status_changed_at",
    "created_at",
    "stuck_alerted_for",
];

/// The line for the rule an engine's error says a row broke: `message` is the database's message,
/// `constraint` the constraint it names (PostgreSQL gives it for a CHECK). None when the error is
/// not a broken rule of the schema (a lock, a unique key, a lost connection).
pub fn broken_rule(message: &str, constraint: Option<&str>) -> Option<String> {
    if let Some(name) = constraint {
        return is_rule_line(name).then(|| full_line(name).to_owned());
    }
    if let Some(check) = message.strip_prefix("CHECK constraint failed: ") {
        return if is_rule_line(check) {
            Some(check.to_owned())
        } else {
            unnamed_check(check)
        };
    }
    if let Some(column) = bigint_given_another_type(message) {
        return Some(integer_line(column));
    }
    is_typed_trigger_line(message).then(|| message.to_owned())
}

/// A PostgreSQL constraint name as the full line.
fn full_line(name: &str) -> &str {
    SHORT_NAMES
        .iter()
        .find(|(short, _)| *short == name)
        .map_or(name, |(_, line)| line)
}

/// `COLUMN must …`: the form of every rule's line.
fn is_rule_line(text: &str) -> bool {
    text.split_once(" must ")
        .is_some_and(|(column, _)| is_identifier(column))
}

/// What SQLite's typed triggers say: `COLUMN must be text` or `COLUMN must be an integer…`.
fn is_typed_trigger_line(text: &str) -> bool {
    text.split_once(" must be ").is_some_and(|(column, rest)| {
        is_identifier(column) && (rest == "text" || rest.starts_with("an integer"))
    })
}

fn integer_line(column: &str) -> String {
    if TIME_COLUMNS.contains(&column) {
        format!("{column} must be an integer (milliseconds since 1970-01-01 UTC)")
    } else {
        format!("{column} must be an integer")
    }
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// SQLite's text of an unnamed `COLUMN IN ('a', 'b')` or `COLUMN IN (0, 1)` as
/// `COLUMN must be one of a, b`.
fn unnamed_check(expression: &str) -> Option<String> {
    let (column, list) = expression.trim().split_once(" IN ")?;
    if !is_identifier(column) {
        return None;
    }
    let list = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values: Vec<&str> = list
        .split(',')
        .map(|value| value.trim().trim_matches('\''))
        .collect();
    if values.iter().any(|value| value.is_empty()) {
        return None;
    }
    Some(format!("{column} must be one of {}", values.join(", ")))
}

/// The column of PostgreSQL's `column "X" is of type bigint but expression is of type T`.
fn bigint_given_another_type(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("column \"")?;
    let (column, rest) = rest.split_once('"')?;
    rest.starts_with(" is of type bigint but expression is of type ")
        .then_some(column)
        .filter(|column| is_identifier(column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_names_fit_in_an_identifier() {
        for (short, line) in SHORT_NAMES {
            assert!(short.len() <= 63, "{short}");
            assert!(line.len() > 63, "{line} fits, it needs no short name");
            assert_eq!(broken_rule("", Some(short)).as_deref(), Some(*line));
        }
    }

    #[test]
    fn both_engines_give_one_line() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (
                "CHECK constraint failed: tier must be one of high, normal, low",
                None,
                "tier must be one of high, normal, low",
            ),
            (
                "new row for relation \"shipments\" violates check constraint \"tier must be one of high, normal, low\"",
                Some("tier must be one of high, normal, low"),
                "tier must be one of high, normal, low",
            ),
            (
                "CHECK constraint failed: channel IN (\n        'webhook', 'email', 'sms', 'dingtalk', 'wecom', 'feishu', 'wechat')",
                None,
                "channel must be one of webhook, email, sms, dingtalk, wecom, feishu, wechat",
            ),
            (
                "CHECK constraint failed: active IN (0, 1)",
                None,
                "active must be one of 0, 1",
            ),
            (
                "created_at must be an integer (milliseconds since 1970-01-01 UTC)",
                None,
                "created_at must be an integer (milliseconds since 1970-01-01 UTC)",
            ),
            (
                "column \"created_at\" is of type bigint but expression is of type text",
                None,
                "created_at must be an integer (milliseconds since 1970-01-01 UTC)",
            ),
            (
                "column \"transitions\" is of type bigint but expression is of type text",
                None,
                "transitions must be an integer",
            ),
            ("carrier must be text", None, "carrier must be text"),
        ];
        for (message, constraint, line) in cases {
            assert_eq!(
                broken_rule(message, *constraint).as_deref(),
                Some(*line),
                "{message}"
            );
        }
    }

    #[test]
    fn other_errors_are_no_rule() {
        for (message, constraint) in [
            ("database is locked", None),
            ("UNIQUE constraint failed: shipments.order_id", None),
            (
                "duplicate key value violates unique constraint \"shipments_order_id_key\"",
                Some("shipments_order_id_key"),
            ),
            ("CHECK constraint failed: length(trim(x)) > 0", None),
            ("column \"x\" does not exist", None),
            // A trigger of another program's, in the same form but not one of ours.
            ("price must be positive", None),
            ("Order Id must be text", None),
            ("CHECK constraint failed: Tier IN ('a', 'b')", None),
        ] {
            assert_eq!(broken_rule(message, constraint), None, "{message}");
        }
    }
}
