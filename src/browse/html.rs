//! Small HTML helpers: escaping, and JSON pretty-printed as HTML with every API URL a link.

use std::fmt::Write;

use serde_json::Value;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `value` pretty-printed (4-space indent, as DRF does) with strings that are API paths as links.
pub fn json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    let pad = |n: usize| "    ".repeat(n);
    match value {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push_str("{\n");
            for (i, (key, value)) in map.iter().enumerate() {
                let _ = write!(out, "{}<span class=\"key\">{}</span>: ", pad(depth + 1), esc(&quote(key)));
                write_value(out, value, depth + 1);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(depth));
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write_value(out, item, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(depth));
        }
        Value::String(s) if is_api_link(s) => {
            let _ = write!(out, "<a class=\"str\" href=\"{}\">{}</a>", esc(s), esc(&quote(s)));
        }
        Value::String(s) => {
            let _ = write!(out, "<span class=\"str\">{}</span>", esc(&quote(s)));
        }
        Value::Null => out.push_str("<span class=\"lit\">null</span>"),
        other => {
            let _ = write!(out, "<span class=\"lit\">{}</span>", esc(&other.to_string()));
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A local API path (with an optional query), safe to put in an `href`.
pub fn is_api_link(s: &str) -> bool {
    (s.starts_with("/api/") || s == "/healthz" || s == "/readyz") && !s.contains(['"', '<', '>', ' ', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_urls_become_links_and_everything_is_escaped() {
        let html = json(&json!({"url": "/api/v2/users/1/", "name": "<script>", "n": 1, "none": null}));
        assert!(html.contains("<a class=\"str\" href=\"/api/v2/users/1/\">&quot;/api/v2/users/1/&quot;</a>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("<span class=\"lit\">null</span>"));
    }

    #[test]
    fn only_local_api_paths_are_links() {
        assert!(is_api_link("/api/v2/?page=2"));
        assert!(!is_api_link("https://evil.example/api/"));
        assert!(!is_api_link("/api/\" onclick=\"x"));
        assert!(!is_api_link("javascript:alert(1)"));
    }
}
