//! The handlers of `/v1/shipments`: each checks the token, then the body or the query, then
//! calls one storage operation, and answers JSON (or a problem). Every answer is counted.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use tracing::{debug, error, info};

use super::auth::Caller;
use super::body::{self, CreateItem};
use super::problem::{FieldError, Problem};
use super::{ApiState, MAX_BODY, count};
use crate::domain::{Email, OpenId, Phone};
use crate::health::BodyRefused;
use crate::storage::{
    CreateError, Created, NewShipment, NotificationView, ShipmentFilter, ShipmentRow,
    ShipmentUpdate, ShipmentView, StorageError,
};

type Answer = Result<Response, Problem>;

/// Counts the answer and turns a problem into its response.
fn finish(route: &'static str, answer: Answer) -> Response {
    let response = answer.unwrap_or_else(IntoResponse::into_response);
    count(route, response.status());
    debug!(route, status = response.status().as_u16(), "api request");
    response
}

fn json_answer(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            error!(error = %e, "api: cannot write an answer");
            Problem::internal().into_response()
        }
    }
}

/// A storage failure as the client sees it; the log gets the reason.
fn storage_problem(e: StorageError) -> Problem {
    match e {
        StorageError::NoSuchOrder(order_id) => Problem::not_found(format!(
            "no shipment with order id {}",
            body::shown_name(&order_id)
        )),
        e if e.is_outage() => {
            error!(error = %e, "api: the database failed");
            Problem::unavailable()
        }
        e => {
            error!(error = %e, "api: a storage operation failed");
            Problem::internal()
        }
    }
}

impl ApiState {
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        self.tokens().caller(headers)
    }

    /// The body of a POST or PATCH: JSON, and no larger than [`MAX_BODY`]. A `Content-Length`
    /// over it is refused before a byte is read; a body sent in chunks is cut at it.
    async fn body(&self, headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, Problem> {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|media| media == "application/json" || media.ends_with("+json"));
        if !json {
            return Err(Problem::unsupported_media_type());
        }
        crate::health::read_body(headers, body, MAX_BODY)
            .await
            .map_err(|refused| match refused {
                BodyRefused::TooLarge => Problem::too_large(MAX_BODY),
                BodyRefused::Broken => Problem::malformed("the body could not be read to its end"),
            })
    }

    async fn create_all(
        &self,
        items: Vec<CreateItem>,
        batch: bool,
    ) -> Result<Vec<Created>, Problem> {
        let intake = self.intake();
        let mut news = Vec::with_capacity(items.len());
        let mut given = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let gave = item.given.clone();
            match body::check(&intake, batch.then_some(i), item) {
                Ok(new) => {
                    news.push(new);
                    given.push(gave);
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        let differs = |i: usize, new: &NewShipment, row: &ShipmentRow| {
            given
                .get(i)
                .map_or_else(Vec::new, |gave| differing_fields(gave, new, row))
        };
        let now = self.0.clock.now();
        match self.0.db.create_shipments(&news, now, &differs).await {
            Ok(done) => Ok(done),
            Err(CreateError::Conflict {
                index,
                order_id,
                fields,
            }) => {
                let errors = fields
                    .iter()
                    .map(|f| {
                        let e = FieldError::new(*f, "differs from the tracked shipment's");
                        if batch { e.at(index) } else { e }
                    })
                    .collect();
                let at = if batch {
                    format!("item {index}: ")
                } else {
                    String::new()
                };
                Err(Problem::conflict(
                    format!(
                        "{at}order {} is already tracked with another {}",
                        body::shown_name(&order_id),
                        fields.join(", ")
                    ),
                    errors,
                ))
            }
            Err(CreateError::Row { index, source }) => {
                let e = FieldError::new("shipment", source.to_string());
                Err(Problem::invalid(vec![if batch { e.at(index) } else { e }]))
            }
            Err(CreateError::Storage(e)) => Err(storage_problem(e)),
        }
    }
}

/// The fields a create gave (`given`) whose values differ from the stored row's: a repeat of
/// the same create differs in none, whoever added the row first (`add`, `import`, SQL or the
/// API). Fields the create left out are not compared.
pub fn differing_fields(
    given: &[&'static str],
    new: &NewShipment,
    row: &ShipmentRow,
) -> Vec<&'static str> {
    given
        .iter()
        .copied()
        .filter(|field| match *field {
            "provider" => new.provider != row.provider,
            "tracking_no" => new.tracking_no != row.tracking_no,
            "carrier" => new.carrier != row.carrier,
            "tier" => new.tier != row.tier,
            "phone" => {
                new.phone.as_ref().map(Phone::as_str) != row.phone.as_ref().map(Phone::as_str)
            }
            "email" => {
                new.email.as_ref().map(Email::as_str) != row.email.as_ref().map(Email::as_str)
            }
            "openid" => {
                new.openid.as_ref().map(OpenId::as_str) != row.openid.as_ref().map(OpenId::as_str)
            }
            "sub_orders" => new.sub_orders != row.sub_orders,
            _ => false,
        })
        .collect()
}

/// A shipment as answered: contacts masked as `show` masks them, unless the token may read
/// them.
fn view(row: &ShipmentRow, caller: Caller) -> ShipmentView {
    let mut view = ShipmentView::from(row);
    if caller.contacts {
        view.phone = row.phone.as_ref().map(ToString::to_string);
        view.email = row.email.as_ref().map(ToString::to_string);
        view.openid = row.openid.as_ref().map(ToString::to_string);
    }
    view
}

fn location(order_id: &str) -> Option<HeaderValue> {
    let path = format!(
        "/v1/shipments/{}",
        percent_encoding::utf8_percent_encode(order_id, percent_encoding::NON_ALPHANUMERIC)
    );
    HeaderValue::from_str(&path).ok()
}

pub(super) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish("POST /v1/shipments", async {
        let caller = state.caller(&headers)?;
        let bytes = state.body(&headers, body).await?;
        let item = body::create(&bytes)?;
        let done = state.create_all(vec![item], false).await?;
        let Some(created) = done.into_iter().next() else {
            return Err(Problem::internal());
        };
        let status = match &created {
            Created::New(row) => {
                info!(order_id = ?row.order_id, provider = %row.provider, "shipment added through the API");
                StatusCode::CREATED
            }
            Created::Existing(_) => StatusCode::OK,
        };
        let mut response = json_answer(status, &view(created.row(), caller));
        if let Some(location) = location(&created.row().order_id) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    }
    .await)
}

pub(super) async fn batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(
        "POST /v1/shipments/batch",
        async {
            let caller = state.caller(&headers)?;
            let bytes = state.body(&headers, body).await?;
            let items = body::batch(&bytes)?;
            let done = state.create_all(items, true).await?;
            let created = done.iter().filter(|c| matches!(c, Created::New(_))).count();
            if created > 0 {
                info!(created, "shipments added through the API");
            }
            let shipments: Vec<ShipmentView> = done.iter().map(|c| view(c.row(), caller)).collect();
            let status = if created > 0 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_answer(
                status,
                &json!({
                    "created": created,
                    "existing": done.len() - created,
                    "shipments": shipments,
                }),
            ))
        }
        .await,
    )
}

#[derive(Serialize)]
struct ShowView {
    shipment: ShipmentView,
    events: Vec<crate::storage::EventRow>,
    notifications: Vec<NotificationView>,
}

pub(super) async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    finish(
        "GET /v1/shipments/{order_id}",
        async {
            let caller = state.caller(&headers)?;
            let db = &state.0.db;
            let row = db.shipment(&order_id).await.map_err(storage_problem)?;
            let events = db.events(row.id).await.map_err(storage_problem)?;
            let notifications = db
                .list_notifications(None, Some(row.id))
                .await
                .map_err(storage_problem)?;
            Ok(json_answer(
                StatusCode::OK,
                &ShowView {
                    shipment: view(&row, caller),
                    events,
                    notifications: notifications.iter().map(NotificationView::from).collect(),
                },
            ))
        }
        .await,
    )
}

pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    finish(
        "GET /v1/shipments",
        async {
            let caller = state.caller(&headers)?;
            let query = body::list_query(query.as_deref())?;
            let filter = ShipmentFilter {
                provider: query.provider,
                status: query.status,
                tier: query.tier,
                changed_since: query.updated_since,
                // One more than the page, to tell whether another follows.
                limit: Some(query.limit + 1),
                after: query.after,
            };
            let page = state
                .0
                .db
                .shipments_page(&filter)
                .await
                .map_err(storage_problem)?;
            // Another page follows when one row more than `limit` was read; this one then ends
            // at the `limit`th row read, one that cannot be read (logged and left out)
            // included: such a row neither ends the listing nor is served twice.
            let limit = query.limit as usize;
            let end = (page.ids.len() > limit).then(|| page.ids[limit - 1]);
            let shipments: Vec<ShipmentView> = page
                .rows
                .iter()
                .filter(|row| end.is_none_or(|end| row.id <= end))
                .map(|row| view(row, caller))
                .collect();
            let next_cursor = end.map(body::encode_cursor);
            Ok(json_answer(
                StatusCode::OK,
                &json!({ "shipments": shipments, "next_cursor": next_cursor }),
            ))
        }
        .await,
    )
}

pub(super) async fn patch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
    body: Body,
) -> Response {
    finish(
        "PATCH /v1/shipments/{order_id}",
        async {
            let caller = state.caller(&headers)?;
            let bytes = state.body(&headers, body).await?;
            let patch = body::patch(&bytes)?;
            let now = state.0.clock.now();
            let update = ShipmentUpdate {
                tier: patch
                    .tier
                    .map(|tier| (tier, state.0.tiers.next_poll_after_move(tier, now))),
                phone: patch.phone,
                email: patch.email,
                openid: patch.openid,
            };
            let row = state
                .0
                .db
                .update_shipment(&order_id, &update)
                .await
                .map_err(storage_problem)?;
            Ok(json_answer(StatusCode::OK, &view(&row, caller)))
        }
        .await,
    )
}

pub(super) async fn remove(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    finish(
        "DELETE /v1/shipments/{order_id}",
        async {
            state.caller(&headers)?;
            state
                .0
                .db
                .remove_shipment(&order_id)
                .await
                .map_err(storage_problem)?;
            info!(order_id = ?order_id, "shipment removed through the API");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

pub(super) async fn not_found() -> Response {
    finish(
        "unmatched",
        Err(Problem::not_found(
            "no such path; the API's paths are in /v1/openapi.json",
        )),
    )
}

pub(super) async fn not_allowed() -> Response {
    finish("unmatched", Err(Problem::method_not_allowed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Tier;
    use crate::notify::sample::Recipient;

    /// The stored row: `add`'s, tier high, phone 13812345678, on provider `test`.
    fn stored() -> ShipmentRow {
        let phone = Phone::parse("13812345678").unwrap();
        let mut row = crate::notify::sample::shipment(0, &Recipient::Phone(phone));
        row.tier = Tier::High;
        row
    }

    fn new(tier: Tier, phone: &str) -> NewShipment {
        let row = stored();
        NewShipment {
            order_id: row.order_id,
            provider: row.provider,
            tracking_no: row.tracking_no,
            carrier: row.carrier,
            tier,
            phone: Some(Phone::parse(phone).unwrap()),
            email: None,
            openid: None,
            sub_orders: None,
        }
    }

    #[test]
    fn only_the_fields_a_create_gives_are_compared() {
        let row = stored();
        for (given, create, differ) in [
            // A repeat, the phone written another way: the same after intake.
            (
                &["order_id", "tier", "phone"][..],
                new(Tier::High, "+86 138 1234 5678"),
                &[][..],
            ),
            // Tier left out (intake's default, normal): not compared.
            (
                &["order_id", "phone"],
                new(Tier::Normal, "13812345678"),
                &[],
            ),
            (
                &["order_id", "tier"],
                new(Tier::Low, "13812345678"),
                &["tier"],
            ),
            (
                &["order_id", "tier", "phone"],
                new(Tier::Low, "13900000000"),
                &["tier", "phone"],
            ),
            // An email where the row has none differs.
            (
                &["order_id", "email"],
                NewShipment {
                    email: Some(Email::parse("a@shop.example").unwrap()),
                    ..new(Tier::High, "13812345678")
                },
                &["email"],
            ),
        ] {
            assert_eq!(differing_fields(given, &create, &row), differ, "{given:?}");
        }
    }

    #[test]
    fn a_repeat_of_every_field_differs_in_none_and_each_field_changed_alone_is_named() {
        // Every column a create may give.
        const EVERY: &[&str] = &crate::intake::COLUMNS;
        let mut row = stored();
        row.email = Some(Email::parse("buyer@shop.example").unwrap());
        row.openid = Some(OpenId::parse("o6_bmjrPTlm6_2sgVt7hMZOPfL2M").unwrap());
        row.sub_orders = Some("1001,1002".to_owned());
        let same = NewShipment {
            email: row.email.clone(),
            openid: row.openid.clone(),
            sub_orders: row.sub_orders.clone(),
            ..new(Tier::High, "13812345678")
        };
        assert_eq!(differing_fields(EVERY, &same, &row), Vec::<&str>::new());
        let changes: [(&str, NewShipment); 5] = [
            (
                "provider",
                NewShipment {
                    provider: "taobao".to_owned(),
                    ..same.clone()
                },
            ),
            (
                "tracking_no",
                NewShipment {
                    tracking_no: Some("YT0000000001".to_owned()),
                    ..same.clone()
                },
            ),
            (
                "carrier",
                NewShipment {
                    carrier: Some("圆通速递".to_owned()),
                    ..same.clone()
                },
            ),
            (
                "openid",
                NewShipment {
                    openid: Some(OpenId::parse("o6_bmjrPTlm6_2sgVt7hMZOPfL2N").unwrap()),
                    ..same.clone()
                },
            ),
            (
                "sub_orders",
                NewShipment {
                    sub_orders: Some("1001,1003".to_owned()),
                    ..same.clone()
                },
            ),
        ];
        for (field, changed) in changes {
            assert_eq!(differing_fields(EVERY, &changed, &row), [field], "{field}");
        }
    }
}
