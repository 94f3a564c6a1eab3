//! The pages of the browsable API: the layout (navbar, session timer, the banner that says
//! why a session ended), a resource page, and the login page.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::html::{esc, json};
use crate::auth::Authenticated;
use crate::settings::registry::{Kind, SETTINGS};

/// What the middleware knows when it renders a resource page.
pub struct ResourcePage<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub title: String,
    pub description: String,
    pub status: u16,
    pub status_text: &'a str,
    pub body: &'a Value,
    pub csrf: &'a str,
    /// Methods of the resource (its `Allow` header).
    pub allow: Vec<String>,
    /// Write methods this caller may use, in the raw-data form.
    pub writable: Vec<String>,
    /// OPTIONS `actions`, when known.
    pub actions: Option<&'a Value>,
    /// The OPTIONS metadata, when asked for.
    pub options: Option<&'a Value>,
    /// What was submitted and refused.
    pub submitted: Option<&'a Submitted>,
}

/// A write the API refused: the text, or the typed fields, and the field errors.
#[derive(Debug, Default, Clone)]
pub struct Submitted {
    pub method: String,
    pub content: String,
    pub typed: Option<Map<String, Value>>,
    pub errors: Value,
}

/// The whole document around `main`.
pub fn layout(title: &str, auth: Option<&Authenticated>, csrf: &str, path: &str, main: &str) -> String {
    let mut body_attrs = format!(" data-path=\"{}\"", esc(path));
    let mut who = String::new();
    if let Some(auth) = auth {
        if let Some(id) = auth.session_id {
            let _ = write!(body_attrs, " data-session-id=\"{id}\"");
        }
        if let Some(timeout) = auth.timeout {
            let _ = write!(body_attrs, " data-timeout=\"{timeout}\"");
        }
        let _ = write!(
            who,
            "<span id=\"session-timer\" class=\"timer\" title=\"Time left before this session ends if idle\"></span>\
             <span id=\"nav-user\" class=\"user\">{user}{role}</span>\
             <form id=\"logout-form\" method=\"post\" action=\"/api/logout/\">\
             <input type=\"hidden\" name=\"csrfmiddlewaretoken\" value=\"{csrf}\">\
             <button id=\"logout-button\" type=\"submit\">Log out</button></form>",
            user = esc(&auth.username),
            role = if auth.is_superuser { " <span class=\"badge\">superuser</span>" } else { "" },
            csrf = esc(csrf),
        );
    } else {
        let _ = write!(who, "<a id=\"login-link\" href=\"/api/login/?next={}\">Log in</a>", esc(&urlencode(path)));
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Bouncer</title>\
         <link rel=\"stylesheet\" href=\"/static/browse.css\">\
         <script src=\"/static/browse.js\" defer></script></head>\
         <body{body_attrs}>\
         <header id=\"navbar\"><a class=\"brand\" href=\"/api/v2/\">Bouncer</a>\
         <nav>{nav}<a href=\"/api/docs/\">Swagger UI</a></nav><div class=\"who\">{who}</div></header>\
         <div id=\"session-warning\" class=\"banner warn\" hidden role=\"status\">Your session ends in \
         <strong id=\"warning-seconds\"></strong> unless you use it. \
         <button id=\"stay-logged-in\" type=\"button\">Stay logged in</button></div>\
         <div id=\"session-ended\" class=\"banner ended\" hidden role=\"alert\"><strong>You were logged out.</strong> \
         <span id=\"session-ended-detail\"></span> \
         <a id=\"session-ended-login\" href=\"/api/login/?next={next}\">Log in again</a></div>\
         <main>{main}</main></body></html>\n",
        title = esc(title),
        next = esc(&urlencode(path)),
        nav = nav(auth),
    )
}

/// The navbar's links: what this user may open.
fn nav(auth: Option<&Authenticated>) -> &'static str {
    match auth {
        Some(a) if a.is_superuser || a.is_system_auditor => {
            "<a href=\"/api/v2/me/sessions/\">My sessions</a><a href=\"/api/v2/users/\">Users</a>\
             <a href=\"/api/v2/settings/authentication/\">Settings</a><a href=\"/api/v2/activity_stream/\">Activity</a>"
        }
        Some(_) => "<a href=\"/api/v2/me/\">Me</a><a href=\"/api/v2/me/sessions/\">My sessions</a>",
        None => "<a href=\"/api/v2/\">API</a>",
    }
}

/// Percent-encodes a path for a query string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn breadcrumbs(path: &str) -> String {
    let mut out = String::from("<ol class=\"breadcrumbs\">");
    let mut href = String::from("/");
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    for (i, segment) in segments.iter().enumerate() {
        href.push_str(segment);
        href.push('/');
        let name = match *segment {
            "api" => "REST API".to_owned(),
            "v2" => "Version 2".to_owned(),
            other => other.replace('_', " "),
        };
        if i + 1 == segments.len() {
            let _ = write!(out, "<li aria-current=\"page\">{}</li>", esc(&name));
        } else {
            let _ = write!(out, "<li><a href=\"{}\">{}</a></li>", esc(&href), esc(&name));
        }
    }
    out.push_str("</ol>");
    out
}

/// A resource page: breadcrumbs, title, description, the response, pagination, forms.
pub fn resource(page: &ResourcePage) -> String {
    let mut main = breadcrumbs(page.path);
    let _ = write!(
        main,
        "<div class=\"title\"><h1>{}</h1><a class=\"button\" id=\"options-button\" href=\"{}?{}_options=1\">OPTIONS</a>\
         <a class=\"button\" href=\"{}\">JSON</a></div>",
        esc(&page.title),
        esc(page.path),
        page.query.map(|q| format!("{}&", esc(q))).unwrap_or_default(),
        esc(&format!("{}?{}format=json", page.path, page.query.map(|q| format!("{q}&")).unwrap_or_default())),
    );
    if !page.description.is_empty() {
        let _ = write!(main, "<div class=\"description\">{}</div>", paragraphs(&page.description));
    }
    if let Some(options) = page.options {
        let _ = write!(
            main,
            "<section class=\"panel\"><h2>OPTIONS {}</h2><pre id=\"options\">{}</pre></section>",
            esc(page.path),
            json(options)
        );
    }
    if let Some(values) = page.body.as_object().filter(|_| page.status < 300)
        && page.path.starts_with("/api/v2/settings/")
        && page.actions.is_some()
    {
        main.push_str(&settings_form(page, values));
    }
    let _ = write!(
        main,
        "<section class=\"panel response\"><div class=\"request\"><span class=\"method\">GET</span> <code>{path}{query}</code></div>\
         <div class=\"meta\"><span class=\"status s{class}\">HTTP {status} {status_text}</span> \
         <span>Allow: {allow}</span><span>Content-Type: application/json</span></div>\
         <pre id=\"response\">{body}</pre>{pager}</section>",
        path = esc(page.path),
        query = page.query.map(|q| format!("?{}", esc(q))).unwrap_or_default(),
        class = page.status / 100,
        status = page.status,
        status_text = esc(page.status_text),
        allow = esc(&page.allow.join(", ")),
        body = json(page.body),
        pager = pager(page.body),
    );
    if !page.writable.is_empty() {
        main.push_str(&raw_form(page));
    }
    main
}

fn paragraphs(text: &str) -> String {
    text.split("\n\n").map(|p| format!("<p>{}</p>", code_spans(&esc(p.trim())))).collect()
}

/// `code` in backticks, as the doc comments write it.
fn code_spans(escaped: &str) -> String {
    let mut out = String::new();
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn pager(body: &Value) -> String {
    let link = |key: &str, label: &str| match body.get(key).and_then(Value::as_str) {
        Some(url) if super::html::is_api_link(url) => {
            format!("<a class=\"button\" rel=\"{key}\" href=\"{}\">{label}</a>", esc(url))
        }
        _ => String::new(),
    };
    let (previous, next) = (link("previous", "‹ Previous"), link("next", "Next ›"));
    if previous.is_empty() && next.is_empty() {
        return String::new();
    }
    let count = body.get("count").and_then(Value::as_i64).unwrap_or_default();
    format!("<nav class=\"pager\">{previous}<span>{count} in all</span>{next}</nav>")
}

/// The text the raw-data form starts with for `method`.
fn prefill(page: &ResourcePage, method: &str) -> String {
    let fields = page.actions.and_then(|a| a.get(method)).and_then(Value::as_object);
    let value = match (method, fields) {
        ("POST", Some(fields)) => Value::Object(
            fields
                .iter()
                .map(|(name, field)| {
                    let empty = match field["type"].as_str() {
                        Some("boolean") => Value::Bool(false),
                        Some("integer") => Value::from(0),
                        _ => Value::String(String::new()),
                    };
                    (name.clone(), empty)
                })
                .collect(),
        ),
        (_, Some(fields)) => Value::Object(
            fields.keys().filter_map(|name| page.body.get(name).map(|v| (name.clone(), v.clone()))).collect(),
        ),
        _ => page.body.clone(),
    };
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn raw_form(page: &ResourcePage) -> String {
    let submitted = page.submitted.filter(|s| s.typed.is_none());
    let first = submitted.map(|s| s.method.clone()).unwrap_or_else(|| page.writable[0].clone());
    let content = submitted
        .map(|s| s.content.clone())
        .unwrap_or_else(|| if first == "DELETE" { String::new() } else { prefill(page, &first) });
    let mut options = String::new();
    for method in &page.writable {
        let _ = write!(
            options,
            "<option value=\"{m}\" data-prefill=\"{p}\"{sel}>{m}</option>",
            m = esc(method),
            p = esc(&if method == "DELETE" { String::new() } else { prefill(page, method) }),
            sel = if *method == first { " selected" } else { "" }
        );
    }
    let errors = match submitted {
        Some(s) if !s.errors.is_null() => format!(
            "<div class=\"errors\" role=\"alert\"><strong>The request was refused:</strong><pre id=\"raw-errors\">{}</pre></div>",
            json(&s.errors)
        ),
        _ => String::new(),
    };
    format!(
        "<section class=\"panel\"><h2>Send a request</h2>{errors}\
         <form id=\"raw-form\" method=\"post\" action=\"{path}\">\
         <input type=\"hidden\" name=\"csrfmiddlewaretoken\" value=\"{csrf}\">\
         <label>Method <select name=\"_method\" id=\"raw-method\">{options}</select></label>\
         <label for=\"raw-content\">Content (application/json)</label>\
         <textarea name=\"_content\" id=\"raw-content\" rows=\"10\" spellcheck=\"false\">{content}</textarea>\
         <button id=\"raw-submit\" type=\"submit\">Send</button></form></section>",
        path = esc(page.path),
        csrf = esc(page.csrf),
        content = esc(&content),
    )
}

/// The typed form of the settings, built from OPTIONS: number inputs with their bounds,
/// checkboxes, selects; a key defined in a file shown read-only with the file named.
fn settings_form(page: &ResourcePage, values: &Map<String, Value>) -> String {
    let actions = page.actions.cloned().unwrap_or_default();
    let writable = actions.get("PUT").and_then(Value::as_object);
    let Some(writable) = writable else {
        return String::new();
    };
    let submitted = page.submitted.and_then(|s| s.typed.as_ref().map(|typed| (typed, &s.errors)));
    let mut rows = String::new();
    let mut resets = String::new();
    for def in SETTINGS {
        let key = def.key;
        let get = &actions["GET"][key];
        let put = writable.get(key);
        let value =
            submitted.and_then(|(typed, _)| typed.get(key)).or_else(|| values.get(key)).cloned().unwrap_or(Value::Null);
        let disabled = if put.is_none() { " disabled" } else { "" };
        let id = format!("f-{key}");
        let input = match def.kind {
            Kind::Integer { min, max, .. } => format!(
                "<input type=\"number\" id=\"{id}\" name=\"{key}\" value=\"{v}\" min=\"{min}\" max=\"{max}\" step=\"1\" required{disabled}>{unit}",
                v = esc(&value
                    .as_i64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| value.as_str().unwrap_or("").to_owned())),
                unit = def.unit.map(|u| format!("<span class=\"unit\">{u}</span>")).unwrap_or_default(),
            ),
            Kind::Boolean => format!(
                "{hidden}<input type=\"checkbox\" id=\"{id}\" name=\"{key}\" value=\"true\"{checked}{disabled}>",
                hidden = if put.is_some() {
                    format!("<input type=\"hidden\" name=\"_bools\" value=\"{key}\">")
                } else {
                    String::new()
                },
                checked = if value == Value::Bool(true) { " checked" } else { "" },
            ),
            Kind::Choice(choices) => {
                let options: String = choices
                    .iter()
                    .map(|c| {
                        format!(
                            "<option value=\"{c}\"{}>{c}</option>",
                            if value.as_str() == Some(c) { " selected" } else { "" }
                        )
                    })
                    .collect();
                format!("<select id=\"{id}\" name=\"{key}\"{disabled}>{options}</select>")
            }
        };
        let errors = submitted
            .and_then(|(_, errors)| errors.get(key))
            .and_then(Value::as_array)
            .map(|messages| {
                let items: String =
                    messages.iter().filter_map(Value::as_str).map(|m| format!("<li>{}</li>", esc(m))).collect();
                format!("<ul class=\"field-errors\" role=\"alert\">{items}</ul>")
            })
            .unwrap_or_default();
        let note = if put.is_none() {
            let file = get["help_text"]
                .as_str()
                .and_then(|h| h.rsplit_once("Defined in "))
                .map(|(_, f)| f)
                .unwrap_or("a settings file");
            format!("<p class=\"file\">Defined in {}</p>", esc(file.trim_end_matches("; read-only here.")))
        } else {
            let default = put.map(|p| p["default"].to_string()).unwrap_or_default();
            let _ = write!(
                resets,
                "<form id=\"reset-{key}\" method=\"post\" action=\"{path}\" hidden>\
                 <input type=\"hidden\" name=\"csrfmiddlewaretoken\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"_method\" value=\"PATCH\">\
                 <input type=\"hidden\" name=\"_content\" value=\"{content}\"></form>",
                path = esc(page.path),
                csrf = esc(page.csrf),
                content = esc(&format!("{{\"{key}\": null}}")),
            );
            format!(
                "<button type=\"submit\" class=\"link\" form=\"reset-{key}\" id=\"reset-button-{key}\">Reset to default ({})</button>",
                esc(&default)
            )
        };
        let help = def.help_text;
        let _ = write!(
            rows,
            "<div class=\"field{err}\"><div class=\"label\"><label for=\"{id}\">{label}</label><code>{key}</code></div>\
             <div class=\"control\">{input}{note}</div><p class=\"help\">{help}</p>{errors}</div>",
            err = if errors.is_empty() { "" } else { " invalid" },
            label = esc(def.label),
            help = esc(help),
        );
    }
    format!(
        "<section class=\"panel\"><h2>Session settings</h2>\
         <form id=\"settings-form\" method=\"post\" action=\"{path}\">\
         <input type=\"hidden\" name=\"csrfmiddlewaretoken\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"_method\" value=\"PATCH\"><input type=\"hidden\" name=\"_typed\" value=\"1\">\
         {rows}<div class=\"actions\"><button id=\"settings-save\" type=\"submit\" class=\"primary\">Save</button></div></form>\
         {resets}</section>",
        path = esc(page.path),
        csrf = esc(page.csrf),
    )
}

/// The login page, with a message (an error, or why the previous session ended).
pub fn login(next: &str, csrf: &str, message: Option<(&str, &str)>, username: &str) -> String {
    let message = match message {
        Some((class, text)) => {
            format!("<p id=\"login-message\" class=\"message {class}\" role=\"alert\">{}</p>", esc(text))
        }
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Log in · Bouncer</title>\
         <link rel=\"stylesheet\" href=\"/static/browse.css\"></head>\
         <body class=\"login-page\"><main class=\"login\"><h1><span class=\"brand\">Bouncer</span></h1>\
         <p class=\"tagline\">Session limits, idle timeouts and the reasons sessions end.</p>{message}\
         <form id=\"login-form\" method=\"post\" action=\"/api/login/\">\
         <input type=\"hidden\" name=\"csrfmiddlewaretoken\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus value=\"{username}\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button id=\"login-submit\" type=\"submit\" class=\"primary\">Log in</button></form>\
         <p class=\"links\"><a href=\"/api/docs/\">API documentation (Swagger UI)</a></p></main></body></html>\n",
        csrf = esc(csrf),
        next = esc(next),
        username = esc(username),
    )
}
