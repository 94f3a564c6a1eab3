//! The finishing pass over the OpenAPI document the routes generate: what is true of every
//! operation of a kind is written here once, instead of in each handler's annotation.
//!
//! - Every operation that reads a body documents `413` (over 64 KiB) and `415` (not JSON).
//! - Every `400` is `BadRequest`: either `{"detail": ...}` or DRF's field-error map.
//! - The settings' value schemas come from the registry, gaps included (`-1` or `1..` for
//!   `AUTH_TOKEN_PER_USER`); `PUT` has its own body schema, with every key required.
//! - Every list documents `400` (unknown filter or order field) and `404` (no such page),
//!   and its `page`, `order_by` and `active` parameters say exactly what the server takes.
//!
//! schemathesis (`tests/schemathesis/`) holds the document to what the server does.

use serde_json::{Value, json};

use crate::listing::Column;
use crate::settings::registry::{CATEGORY_SLUG, Kind, SETTINGS};

/// The lists: their path and the columns `order_by` may name.
const LISTS: &[(&str, &[Column])] = &[
    ("/api/v2/users/", crate::users::handlers::COLUMNS),
    ("/api/v2/me/sessions/", crate::sessions::handlers::COLUMNS),
    ("/api/v2/users/{id}/sessions/", crate::sessions::handlers::COLUMNS),
    ("/api/v2/activity_stream/", crate::activity::handlers::COLUMNS),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

/// Applies the pass to `doc`. The result is JSON: utoipa's types cannot hold every schema
/// written here (an `anyOf` with a description beside it, say).
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut value = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
    finish_value(&mut value);
    value
}

fn finish_value(doc: &mut Value) {
    doc["components"]["schemas"]["BadRequest"] = json!({
        "description": "A request the server refuses: `{\"detail\": ...}` (malformed JSON, a bad query \
                        parameter, an operation that is not allowed) or field errors (DRF's shape).",
        "anyOf": [{"$ref": "#/components/schemas/ErrorBody"}, {"$ref": "#/components/schemas/ValidationErrors"}],
    });
    settings_schemas(doc);
    user_booleans(doc);
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        let columns = LISTS.iter().find(|(p, _)| p == path).map(|(_, c)| *c);
        for method in METHODS {
            let Some(op) = item.get_mut(*method).filter(|op| op.is_object()) else { continue };
            if *method == "get"
                && let Some(columns) = columns
            {
                list_parameters(op, columns);
                add_response(op, "400", "An unknown filter or order field, or a filter value of the wrong type");
                add_response(op, "404", "No such page");
            }
            if path_parameter(op, "id") {
                add_response(op, "400", "The id is not a number");
                add_response(op, "404", "No such object");
            }
            if path_parameter(op, "slug") {
                for parameter in op["parameters"].as_array_mut().into_iter().flatten() {
                    if parameter["name"] == "slug" {
                        parameter["schema"] = json!({"type": "string", "enum": ["all", CATEGORY_SLUG]});
                    }
                }
                add_response(op, "404", "No such category");
            }
            if op.get("requestBody").is_some() {
                add_response(op, "400", "Malformed JSON, or field errors; nothing was written");
                add_response(op, "413", "The body is over 64 KiB");
                add_response(op, "415", "The body is not JSON (`Content-Type: application/json`)");
            }
            if let Some(bad) = op.pointer_mut("/responses/400") {
                bad["content"] = json!({"application/json": {"schema": {"$ref": "#/components/schemas/BadRequest"}}});
            }
        }
    }
}

/// `SettingValues` from the registry, and `SettingValuesReplace` (every key required) for PUT.
fn settings_schemas(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    let mut values = schemas["SettingValues"].take();
    for def in SETTINGS {
        let property = &mut values["properties"][def.key];
        let description = property["description"].take();
        let null = json!({"type": "null"});
        let one = match def.kind {
            Kind::Integer { min, max, gap: None } => vec![json!({"type": "integer", "minimum": min, "maximum": max})],
            Kind::Integer { min, max, gap: Some((below, above, _)) } => vec![
                json!({"type": "integer", "minimum": min, "maximum": below}),
                json!({"type": "integer", "minimum": above, "maximum": max}),
            ],
            Kind::Boolean => vec![json!({"type": "boolean"})],
            Kind::Choice(choices) => vec![json!({"type": "string", "enum": choices})],
        };
        *property = json!({"description": description, "anyOf": one.into_iter().chain([null]).collect::<Vec<_>>()});
    }
    let mut replace = values.clone();
    replace["required"] = SETTINGS.iter().map(|def| def.key).collect();
    replace["description"] = json!(
        "Every session setting (`null` resets one to its default); a key defined \
                                    in a settings file may be left out."
    );
    schemas["SettingValues"] = values;
    schemas["SettingValuesReplace"] = replace;
    if let Some(put) = doc.pointer_mut("/paths/~1api~1v2~1settings~1{slug}~1/put/requestBody/content/application~1json")
    {
        put["schema"] = json!({"$ref": "#/components/schemas/SettingValuesReplace"});
    }
}

fn path_parameter(op: &Value, name: &str) -> bool {
    op["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "path" && p["name"] == name))
}

/// The booleans of a user body, as `extract::bool_field` reads them (DRF's `BooleanField`;
/// the awx CLI sends `1` and `0`); `null` is "not given".
fn user_booleans(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    for schema in ["CreateUser", "UpdateUser"] {
        for (_, property) in schemas[schema]["properties"].as_object_mut().into_iter().flatten() {
            let is_boolean = property["type"] == "boolean" || property["type"] == json!(["boolean", "null"]);
            if is_boolean {
                let description = property.get("description").cloned();
                *property = json!({"anyOf": [
                    {"type": "boolean"},
                    {"type": "integer", "enum": [0, 1]},
                    {"type": "string", "enum": ["true", "false", "True", "False", "TRUE", "FALSE", "1", "0", "on", "off", "yes", "no"]},
                    {"type": "null"},
                ]});
                if let Some(description) = description {
                    property["description"] = description;
                }
            }
        }
    }
}

/// Documents `status` with an `ErrorBody` unless the operation already documents it.
fn add_response(op: &mut Value, status: &str, description: &str) {
    let responses = &mut op["responses"];
    if responses.get(status).is_none() {
        responses[status] = json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        });
    }
}

/// The exact shapes of a list's own query parameters.
fn list_parameters(op: &mut Value, columns: &[Column]) {
    let Some(parameters) = op.get_mut("parameters").and_then(Value::as_array_mut) else { return };
    for parameter in parameters {
        let schema = match parameter["name"].as_str() {
            // `Listing::parse` splits on commas and trims spaces; empty terms are skipped.
            Some("order_by") => json!({"type": "string", "pattern": order_by_pattern(columns)}),
            // `PageParams::resolve`: a page number from 1, or `last`.
            Some("page") => json!({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["last"]}]}),
            // `SessionFilter::active`.
            Some("active") => json!({"type": "string", "enum": ["true", "false", "True", "False", "1", "0"]}),
            _ => continue,
        };
        parameter["schema"] = schema;
    }
}

/// `order_by` as `Listing::parse` reads it: comma-separated terms, each empty or a column
/// name with an optional `-`, with spaces around.
fn order_by_pattern(columns: &[Column]) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let term = format!(" *(-?({}) *)?", names.join("|"));
    format!("^{term}(,{term})*$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_by_pattern_accepts_what_the_listing_accepts() {
        let columns = crate::users::handlers::COLUMNS;
        let pattern = order_by_pattern(columns);
        for ok in ["", "id", "-id", "id,-username", " id , -created ", ",,id,"] {
            crate::listing::Listing::parse(Some(&format!("order_by={}", ok.replace(' ', "+"))), columns, &[], "id", 1)
                .unwrap_or_else(|_| panic!("{ok:?} should be accepted"));
            assert!(matches(&pattern, ok), "{pattern} should match {ok:?}");
        }
        for bad in ["password_hash", "-", "id;DROP", "--id", "\tid"] {
            assert!(
                crate::listing::Listing::parse(Some(&format!("order_by={bad}")), columns, &[], "id", 1).is_err(),
                "{bad:?} should be refused"
            );
            assert!(!matches(&pattern, bad), "{pattern} should not match {bad:?}");
        }
    }

    fn matches(pattern: &str, text: &str) -> bool {
        regex::Regex::new(pattern).expect("the pattern is a regex").is_match(text)
    }
}
