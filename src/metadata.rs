//! `OPTIONS` on every resource: the `Allow` header and Django REST framework's metadata
//! (`name`, `description`, `renders`, `parses`, `actions`), as AWX's clients read it.
//! `actions` only holds the methods the caller may use.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// A field of a resource, as `actions.GET` / `actions.POST` describe it.
pub struct Field {
    pub name: &'static str,
    /// `integer`, `string`, `boolean`, `datetime`, `field`, `object` or `choice`.
    pub kind: &'static str,
    pub label: &'static str,
    pub help_text: &'static str,
    pub required: bool,
    /// Usable as `?name=value` and `?order_by=name` on the list.
    pub filterable: bool,
    pub max_length: Option<usize>,
    pub choices: &'static [&'static str],
}

impl Field {
    pub const fn new(name: &'static str, kind: &'static str, label: &'static str, help_text: &'static str) -> Field {
        Field { name, kind, label, help_text, required: false, filterable: false, max_length: None, choices: &[] }
    }

    pub const fn required(mut self) -> Field {
        self.required = true;
        self
    }

    pub const fn filterable(mut self) -> Field {
        self.filterable = true;
        self
    }

    pub const fn max_length(mut self, n: usize) -> Field {
        self.max_length = Some(n);
        self
    }

    pub const fn choices(mut self, choices: &'static [&'static str]) -> Field {
        self.choices = choices;
        self
    }

    fn describe(&self, writing: bool) -> Value {
        let mut field = json!({ "type": self.kind, "label": self.label, "help_text": self.help_text });
        if writing {
            field["required"] = json!(self.required);
        } else {
            field["filterable"] = json!(self.filterable);
        }
        if let Some(n) = self.max_length {
            field["max_length"] = json!(n);
        }
        if !self.choices.is_empty() {
            field["choices"] = json!(self.choices.iter().map(|c| [c, c]).collect::<Vec<_>>());
        }
        field
    }
}

fn describe(fields: &[Field], writing: bool) -> Value {
    Value::Object(fields.iter().map(|f| (f.name.to_owned(), f.describe(writing))).collect::<Map<_, _>>())
}

/// The `OPTIONS` answer of a resource. `actions` pairs a method with its fields; pass only
/// the methods this caller may use.
pub fn options(name: &str, description: &str, allow: &'static str, actions: &[(&str, &[Field])]) -> Response {
    let actions: Map<String, Value> =
        actions.iter().map(|(method, fields)| (method.to_string(), describe(fields, *method != "GET"))).collect();
    let body = json!({
        "name": name,
        "description": description,
        "renders": ["application/json"],
        "parses": ["application/json", "application/x-www-form-urlencoded"],
        "actions": actions,
    });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Resources AWX's CLI asks `OPTIONS` of before any command (organizations, projects, ...).
/// Bouncer has none of them; it answers that it has no actions, so the CLI carries on,
/// and 404 to anything else.
pub const AWX_PROBES: &[&str] = &[
    "organizations",
    "projects",
    "inventories",
    "teams",
    "credentials",
    "job_templates",
    "workflow_job_templates",
    "instance_groups",
];
