//! The OpenAPI 3.1 description of the API: `docs/openapi.json`, written by hand and served as
//! it is at `GET /v1/openapi.json`, without a token (it holds no data, and a client generator
//! needs it before it has one). A test calls every route it lists and checks the answers
//! against it.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The document, as in `docs/`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub(super) async fn serve() -> Response {
    super::count("GET /v1/openapi.json", StatusCode::OK);
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::OPENAPI;
    use crate::api::body::MAX_BATCH;
    use crate::domain::{Status, Tier};
    use crate::intake::COLUMNS;

    /// The names the document lists are the program's own: statuses, tiers, the create's fields
    /// and the batch's size.
    #[test]
    fn the_document_names_what_the_program_knows() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = &doc["components"]["schemas"];
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let statuses: Vec<String> = Status::ALL.iter().map(|s| s.as_str().to_owned()).collect();
        assert_eq!(names(&schemas["Status"]["enum"]), statuses);
        let tiers: Vec<String> = Tier::ALL.iter().map(|t| t.as_str().to_owned()).collect();
        assert_eq!(names(&schemas["Tier"]["enum"]), tiers);
        let mut fields: Vec<&String> = schemas["ShipmentCreate"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        fields.sort();
        let mut columns = COLUMNS.to_vec();
        columns.sort();
        assert_eq!(fields, columns);
        assert_eq!(
            schemas["ShipmentBatch"]["properties"]["shipments"]["maxItems"],
            MAX_BATCH
        );
    }
}
