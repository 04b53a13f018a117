//! The API's request bodies and queries, read into the same `Fields` that `add` and `import`
//! check. Pure functions: the handlers and the property tests call them alike. The JSON is read
//! as a `serde_json::Value` first, so that a syntax error (400) is told apart from a field of the
//! wrong kind (422), and every field at fault is named, not only the first.

use serde_json::{Map, Value};

use super::problem::{FieldError, Problem};
use crate::clock::Millis;
use crate::domain::{Email, OpenId, Phone, Status, Tier};
use crate::intake::{COLUMNS, Fields, Intake, IntakeError};
use crate::storage::NewShipment;

/// Items in one batch, at most.
pub const MAX_BATCH: usize = 1000;
/// Rows in one page of `GET /v1/shipments`: the default and the most.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// The longest field name or query key repeated back to the client.
const SHOWN_NAME: usize = 64;

/// A create: the fields as given, and which of them were given (not null, not blank).
#[derive(Debug, Clone)]
pub struct CreateItem {
    pub fields: Fields,
    pub given: Vec<&'static str>,
}

/// A PATCH: the new tier, and each contact to set (`Some(Some)`) or clear (`Some(None)`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub tier: Option<Tier>,
    pub phone: Option<Option<Phone>>,
    pub email: Option<Option<Email>>,
    pub openid: Option<Option<OpenId>>,
}

/// `GET /v1/shipments`'s query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub tier: Option<Tier>,
    pub provider: Option<String>,
    pub updated_since: Option<Millis>,
    pub limit: u32,
    /// The last row id of the previous page.
    pub after: Option<i64>,
}

/// A name the client wrote, shown back safely: control characters escaped, and cut short.
pub fn shown_name(name: &str) -> String {
    let cut: String = name.chars().take(SHOWN_NAME).collect();
    let escaped = cut.escape_debug().to_string();
    if name.chars().count() > SHOWN_NAME {
        format!("{escaped}…")
    } else {
        escaped
    }
}

fn json(bytes: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(bytes).map_err(|e| {
        // A syntax error's message gives a line and a column, never the text.
        Problem::malformed(format!("{e}"))
    })
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, FieldError> {
    value
        .as_object()
        .ok_or_else(|| FieldError::new(what, format!("must be a JSON object, not {}", kind(value))))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string field: `None` for null, an error naming the field for any other kind.
fn text(field: &str, value: &Value) -> Result<Option<String>, FieldError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(_) if field == "order_id" => Err(FieldError::new(
            field,
            "must be a string, not a number: long order ids lose digits as JSON numbers",
        )),
        other => Err(FieldError::new(
            field,
            format!("must be a string or null, not {}", kind(other)),
        )),
    }
}

fn unknown(field: &str, known: &[&str]) -> FieldError {
    FieldError::new(
        shown_name(field),
        format!("unknown field (known: {})", known.join(", ")),
    )
}

/// One shipment of a create, from its JSON object.
fn create_item(value: &Value) -> Result<CreateItem, Vec<FieldError>> {
    let map = object(value, "shipment").map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut fields = Fields::default();
    let mut given = Vec::new();
    let mut order_id = None;
    for (key, value) in map {
        let Some(&column) = COLUMNS.iter().find(|c| **c == key) else {
            errors.push(unknown(key, &COLUMNS));
            continue;
        };
        let value = match text(column, value) {
            Ok(value) => value,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if value.as_deref().is_some_and(|v| !v.trim().is_empty()) {
            given.push(column);
        }
        match column {
            "order_id" => order_id = value,
            "provider" => fields.provider = value,
            "tracking_no" => fields.tracking_no = value,
            "carrier" => fields.carrier = value,
            "tier" => fields.tier = value,
            "phone" => fields.phone = value,
            "email" => fields.email = value,
            "openid" => fields.openid = value,
            _ => fields.sub_orders = value,
        }
    }
    match order_id {
        Some(id) => fields.order_id = id,
        None if !errors.iter().any(|e| e.field == "order_id") => {
            errors.push(FieldError::new("order_id", "is required"));
        }
        None => {}
    }
    if errors.is_empty() {
        Ok(CreateItem { fields, given })
    } else {
        Err(errors)
    }
}

/// `POST /v1/shipments`'s body.
pub fn create(bytes: &[u8]) -> Result<CreateItem, Problem> {
    create_item(&json(bytes)?).map_err(Problem::invalid)
}

/// `POST /v1/shipments/batch`'s body: `{"shipments": [...]}`, 1 to [`MAX_BATCH`] items. Errors
/// carry the index of their item.
pub fn batch(bytes: &[u8]) -> Result<Vec<CreateItem>, Problem> {
    let value = json(bytes)?;
    let map = object(&value, "body").map_err(|e| Problem::invalid(vec![e]))?;
    let mut errors: Vec<FieldError> = map
        .keys()
        .filter(|k| *k != "shipments")
        .map(|k| unknown(k, &["shipments"]))
        .collect();
    let items = match map.get("shipments") {
        Some(Value::Array(items)) if items.is_empty() => {
            errors.push(FieldError::new("shipments", "has no items"));
            return Err(Problem::invalid(errors));
        }
        Some(Value::Array(items)) if items.len() > MAX_BATCH => {
            errors.push(FieldError::new(
                "shipments",
                format!(
                    "has {} items; a batch takes at most {MAX_BATCH}",
                    items.len()
                ),
            ));
            return Err(Problem::invalid(errors));
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            errors.push(FieldError::new(
                "shipments",
                format!("must be an array, not {}", kind(other)),
            ));
            return Err(Problem::invalid(errors));
        }
        None => {
            errors.push(FieldError::new("shipments", "is required"));
            return Err(Problem::invalid(errors));
        }
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match create_item(item) {
            Ok(item) => parsed.push(item),
            Err(errs) => errors.extend(errs.into_iter().map(|e| e.at(i))),
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(Problem::invalid(errors))
    }
}

const PATCH_FIELDS: [&str; 4] = ["tier", "phone", "email", "openid"];

/// `PATCH /v1/shipments/{order_id}`'s body: tier and contacts; `null` (or blank) clears a
/// contact.
pub fn patch(bytes: &[u8]) -> Result<Patch, Problem> {
    let value = json(bytes)?;
    let map = object(&value, "body").map_err(|e| Problem::invalid(vec![e]))?;
    let mut patch = Patch::default();
    let mut errors = Vec::new();
    for (key, value) in map {
        let Some(&field) = PATCH_FIELDS.iter().find(|f| **f == key) else {
            let mut e = unknown(key, &PATCH_FIELDS);
            if COLUMNS.contains(&key.as_str()) {
                e.detail = format!(
                    "cannot be changed (a PATCH changes {})",
                    PATCH_FIELDS.join(", ")
                );
            }
            errors.push(e);
            continue;
        };
        let value = match text(field, value) {
            Ok(value) => value.filter(|v| !v.trim().is_empty()),
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let outcome = match field {
            "tier" => match value {
                None => Err(FieldError::new(
                    "tier",
                    "cannot be cleared: give high, normal or low",
                )),
                Some(t) => t
                    .parse::<Tier>()
                    .map(|t| patch.tier = Some(t))
                    .map_err(|e| FieldError::new("tier", e.to_string())),
            },
            "phone" => value
                .map(|p| Phone::parse(&p))
                .transpose()
                .map(|p| patch.phone = Some(p))
                .map_err(|e| FieldError::new("phone", e.to_string())),
            "email" => value
                .map(|e| Email::parse(&e).map_err(|_| e))
                .transpose()
                .map(|e| patch.email = Some(e))
                .map_err(|e| FieldError::new("email", IntakeError::Email(e).to_string())),
            _ => value
                .map(|o| OpenId::parse(&o))
                .transpose()
                .map(|o| patch.openid = Some(o))
                .map_err(|e| FieldError::new("openid", e.to_string())),
        };
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(patch)
    } else {
        Err(Problem::invalid(errors))
    }
}

const LIST_KEYS: [&str; 6] = [
    "status",
    "tier",
    "provider",
    "updated_since",
    "limit",
    "cursor",
];

/// `GET /v1/shipments`'s query string (`None`: no query).
pub fn list_query(query: Option<&str>) -> Result<ListQuery, Problem> {
    let mut list = ListQuery {
        limit: DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    let mut errors = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let (key, value) = (decode(key), decode(value));
        let outcome = match key.as_str() {
            "status" => value
                .parse::<Status>()
                .map(|s| list.status = Some(s))
                .map_err(|e| e.to_string()),
            "tier" => value
                .parse::<Tier>()
                .map(|t| list.tier = Some(t))
                .map_err(|e| e.to_string()),
            "provider" if !value.is_empty() => {
                list.provider = Some(value);
                Ok(())
            }
            "provider" => Err("is empty".to_owned()),
            "updated_since" => chrono::DateTime::parse_from_rfc3339(&value)
                .map(|t| list.updated_since = Some(t.timestamp_millis()))
                .map_err(|_| {
                    "is not an RFC 3339 time such as 2026-11-20T08:00:00+08:00".to_owned()
                }),
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => {
                    list.limit = n;
                    Ok(())
                }
                _ => Err(format!("must be a whole number from 1 to {MAX_LIMIT}")),
            },
            "cursor" => decode_cursor(&value)
                .map(|id| list.after = Some(id))
                .ok_or_else(|| "is not a cursor this API gave (next_cursor)".to_owned()),
            _ => {
                errors.push(unknown(&key, &LIST_KEYS));
                continue;
            }
        };
        if let Err(detail) = outcome {
            errors.push(FieldError::new(key, detail));
        }
    }
    if errors.is_empty() {
        Ok(list)
    } else {
        Err(Problem::invalid(errors))
    }
}

/// The cursor after a row: opaque to clients, the row's id underneath (the stable key the list
/// is ordered by, so that rows added or changed meanwhile neither repeat nor go missing).
pub fn encode_cursor(id: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

pub fn decode_cursor(cursor: &str) -> Option<i64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("v1:")?
        .parse()
        .ok()
}

/// A create checked as `add` checks it; a refusal names the field (and the item's index).
pub fn check(
    intake: &Intake,
    index: Option<usize>,
    item: CreateItem,
) -> Result<NewShipment, FieldError> {
    let order_id = item.fields.order_id.clone();
    intake.shipment(item.fields).map_err(|e| {
        let error = FieldError::new(intake_field(&e, &order_id), e.to_string());
        match index {
            Some(i) => error.at(i),
            None => error,
        }
    })
}

/// The field an intake refusal is about, for the `errors` extension.
pub fn intake_field(error: &IntakeError, order_id: &str) -> &'static str {
    match error {
        IntakeError::Provider(unfit) => unfit.field,
        other => other.column(order_id).unwrap_or("order_id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(problem: &Problem) -> Vec<(Option<usize>, String)> {
        problem
            .errors
            .iter()
            .map(|e| (e.index, e.field.clone()))
            .collect()
    }

    #[test]
    fn a_create_names_every_field_at_fault_and_tells_syntax_from_kind() {
        let item = create(br#"{"order_id": "42", "tier": "high", "phone": null}"#).unwrap();
        assert_eq!(item.fields.order_id, "42");
        assert_eq!(item.given, vec!["order_id", "tier"]);
        assert_eq!(create(b"{\"order_id\": ").unwrap_err().status, 400);
        let p = create(br#"{"order_id": 42, "tier": ["high"], "colour": "red"}"#).unwrap_err();
        assert_eq!(p.status, 422);
        let mut got = fields_of(&p);
        got.sort();
        assert_eq!(
            got,
            vec![
                (None, "colour".to_owned()),
                (None, "order_id".to_owned()),
                (None, "tier".to_owned())
            ]
        );
        assert_eq!(
            fields_of(&create(b"{}").unwrap_err()),
            vec![(None, "order_id".to_owned())]
        );
        assert_eq!(create(b"[1]").unwrap_err().status, 422);
    }

    #[test]
    fn a_create_puts_each_column_in_its_own_field() {
        let item = create(
            br#"{"order_id": "42", "provider": "tb", "tracking_no": "SF1", "carrier": "SF",
                 "tier": "low", "phone": "13800138000", "email": "a@shop.example",
                 "openid": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "sub_orders": "1;2"}"#,
        )
        .unwrap();
        let f = &item.fields;
        let got = [
            &f.provider,
            &f.tracking_no,
            &f.carrier,
            &f.tier,
            &f.phone,
            &f.email,
            &f.openid,
            &f.sub_orders,
        ]
        .map(|v| v.as_deref());
        assert_eq!(
            got,
            [
                Some("tb"),
                Some("SF1"),
                Some("SF"),
                Some("low"),
                Some("13800138000"),
                Some("a@shop.example"),
                Some("o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
                Some("1;2"),
            ]
        );
        assert_eq!(item.given.len(), COLUMNS.len());
    }

    #[test]
    fn an_order_id_given_as_a_number_is_one_error_that_says_why() {
        let p = create(br#"{"order_id": 7100000000000000001}"#).unwrap_err();
        assert_eq!(fields_of(&p), vec![(None, "order_id".to_owned())]);
        assert!(
            p.errors[0].detail.contains("long order ids lose digits"),
            "{p:?}"
        );
        // A missing order id is named even beside another field at fault.
        let p = create(br#"{"colour": "red"}"#).unwrap_err();
        let mut got = fields_of(&p);
        got.sort();
        assert_eq!(
            got,
            vec![(None, "colour".to_owned()), (None, "order_id".to_owned())]
        );
    }

    #[test]
    fn a_batch_gives_the_index_of_each_bad_item() {
        let p = batch(br#"{"shipments": [{"order_id": "1"}, {"order_id": "2", "tier": 3}]}"#)
            .unwrap_err();
        assert_eq!(fields_of(&p), vec![(Some(1), "tier".to_owned())]);
        assert_eq!(
            p.detail,
            "item 1: tier: must be a string or null, not a number"
        );
        let many = format!(
            "{{\"shipments\": [{}]}}",
            vec!["{\"order_id\": \"1\"}"; MAX_BATCH + 1].join(",")
        );
        assert_eq!(
            fields_of(&batch(many.as_bytes()).unwrap_err()),
            vec![(None, "shipments".to_owned())]
        );
        assert_eq!(batch(br#"{"shipments": []}"#).unwrap_err().status, 422);
        let full = format!(
            "{{\"shipments\": [{}]}}",
            vec!["{\"order_id\": \"1\"}"; MAX_BATCH].join(",")
        );
        assert_eq!(batch(full.as_bytes()).unwrap().len(), MAX_BATCH);
    }

    #[test]
    fn a_patch_sets_and_clears_contacts_but_never_the_tier() {
        let p = patch(br#"{"tier": "low", "phone": null, "email": "a@shop.example"}"#).unwrap();
        assert_eq!(p.tier, Some(Tier::Low));
        assert_eq!(p.phone, Some(None));
        assert!(matches!(p.email, Some(Some(_))));
        assert_eq!(p.openid, None);
        for (body, field) in [
            (&br#"{"tier": null}"#[..], "tier"),
            (br#"{"tier": "urgent"}"#, "tier"),
            (br#"{"phone": "12"}"#, "phone"),
            (br#"{"provider": "x"}"#, "provider"),
        ] {
            assert_eq!(
                fields_of(&patch(body).unwrap_err()),
                vec![(None, field.to_owned())]
            );
        }
    }

    #[test]
    fn list_queries_and_cursors() {
        let q = list_query(Some("status=delivered&limit=5&cursor=".to_owned().as_str()));
        assert!(q.is_err());
        let q = list_query(Some(&format!(
            "status=delivered&limit=5&cursor={}",
            encode_cursor(7)
        )))
        .unwrap();
        assert_eq!(
            (q.status, q.limit, q.after),
            (Some(Status::Delivered), 5, Some(7))
        );
        assert_eq!(list_query(None).unwrap().limit, DEFAULT_LIMIT);
        // Every key read into its place, percent-encoding decoded (`%20` a space, `%2B` a plus).
        let q = list_query(Some(
            "tier=low&provider=tb%20shop&updated_since=2026-11-20T08:00:00%2B08:00&limit=1000",
        ))
        .unwrap();
        assert_eq!(
            q,
            ListQuery {
                status: None,
                tier: Some(Tier::Low),
                provider: Some("tb shop".to_owned()),
                updated_since: Some(1_795_132_800_000),
                limit: MAX_LIMIT,
                after: None,
            }
        );
        // A known key with a bad value says what is wrong with the value, not that the key is
        // unknown.
        for (query, detail) in [
            ("provider=", "is empty"),
            ("tier=urgent", "urgent"),
            ("updated_since=yesterday", "RFC 3339"),
        ] {
            let p = list_query(Some(query)).unwrap_err();
            assert!(p.errors[0].detail.contains(detail), "{query}: {p:?}");
        }
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("tier=urgent", "tier"),
            ("updated_since=yesterday", "updated_since"),
            ("colour=red", "colour"),
        ] {
            assert_eq!(
                fields_of(&list_query(Some(query)).unwrap_err()),
                vec![(None, field.to_owned())]
            );
        }
    }

    #[test]
    fn an_intake_refusal_names_its_field_and_item() {
        let config = crate::config::Config::parse(
            "[providers.taobao]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret = \"s\"\nsession = \"s\"",
            None,
            std::path::Path::new("."),
        )
        .unwrap();
        let intake = Intake::new(Some(&config));
        let item = |json: &str| create(json.as_bytes()).unwrap();
        let refused = |index, json: &str| {
            let e = check(&intake, index, item(json)).unwrap_err();
            (e.index, e.field)
        };
        assert_eq!(
            refused(Some(3), r#"{"order_id": "42", "tier": "urgent"}"#),
            (Some(3), "tier".to_owned())
        );
        // Taobao's order ids are numbers: its refusal is about the order id.
        assert_eq!(
            refused(None, r#"{"order_id": "abc"}"#),
            (None, "order_id".to_owned())
        );
        assert_eq!(
            refused(None, r#"{"order_id": "42", "email": "nobody"}"#),
            (None, "email".to_owned())
        );
        let unfit = IntakeError::Provider(crate::providers::UnfitRequest::new(
            "carrier",
            "needs a carrier code",
        ));
        assert_eq!(intake_field(&unfit, "42"), "carrier");
        let added = check(
            &intake,
            Some(0),
            item(r#"{"order_id": "42", "tier": "high"}"#),
        )
        .unwrap();
        assert_eq!((added.order_id.as_str(), added.tier), ("42", Tier::High));
    }

    #[test]
    fn names_sent_back_are_escaped_and_cut() {
        assert_eq!(shown_name("a\u{1b}[31m"), "a\\u{1b}[31m");
        assert!(shown_name(&"x".repeat(500)).ends_with('…'));
        let name = "é".repeat(SHOWN_NAME);
        assert_eq!(shown_name(&name), name);
        assert_eq!(shown_name(&format!("{name}x")), format!("{name}…"));
    }
}
