//! Settings files: every `*.toml` and `*.py` file of the `conf.d` directory, read together in
//! name order (later files win). Both formats are `KEY = value` lines: TOML with `true`/`false`,
//! integers and quoted strings; Tower-style Python with `True`/`False`, integers and strings in
//! single or double quotes. `#` starts a comment. A key defined here overrides the database
//! and is read-only in the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::registry;

/// A value defined in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileValue {
    pub value: Value,
    pub file: PathBuf,
    pub line: usize,
}

/// The values the files define, by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileLayer {
    pub values: BTreeMap<&'static str, FileValue>,
}

/// What went wrong in the files: one `FILE:LINE: KEY: message` line per problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct FileErrors(pub Vec<String>);

#[derive(Clone, Copy, PartialEq)]
enum Syntax {
    Toml,
    Python,
}

impl FileLayer {
    /// Reads the directory. A missing directory is an error; an empty one defines nothing.
    pub fn load(dir: &Path) -> Result<FileLayer, FileErrors> {
        let entries = std::fs::read_dir(dir)
            .map_err(|err| FileErrors(vec![format!("{}: cannot read the settings directory: {err}", dir.display())]))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| matches!(path.extension().and_then(|e| e.to_str()), Some("toml" | "py")) && path.is_file())
            .collect();
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let mut layer = FileLayer::default();
        let mut errors = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => layer.parse(&file, &text, &mut errors),
                Err(err) => errors.push(format!("{}: cannot read: {err}", file.display())),
            }
        }
        if errors.is_empty() { Ok(layer) } else { Err(FileErrors(errors)) }
    }

    /// Parses one file's text into this layer, recording problems in `errors`.
    pub fn parse(&mut self, file: &Path, text: &str, errors: &mut Vec<String>) {
        let syntax = if file.extension().is_some_and(|e| e == "py") { Syntax::Python } else { Syntax::Toml };
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let at = |message: String| format!("{}:{line}: {message}", file.display());
            let content = strip_comment(raw).trim();
            if content.is_empty() {
                continue;
            }
            if syntax == Syntax::Toml && content.starts_with('[') {
                errors.push(at("tables are not supported: write KEY = value lines at the top level".into()));
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                errors.push(at(format!("expected KEY = value, found {content:?}")));
                continue;
            };
            let key = key.trim();
            let Some(def) = registry::find(key) else {
                errors.push(at(format!("{key}: unknown setting")));
                continue;
            };
            let parsed = parse_value(value.trim(), syntax).and_then(|value| def.parse(&value));
            match parsed {
                Ok(value) => {
                    self.values.insert(def.key, FileValue { value, file: file.to_owned(), line });
                }
                Err(message) => errors.push(at(format!("{key}: {message}"))),
            }
        }
    }
}

/// The line without a `#` comment (a `#` inside quotes is kept).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return &line[..i],
            _ => {}
        }
        escaped = false;
    }
    line
}

fn parse_value(raw: &str, syntax: Syntax) -> Result<Value, String> {
    let (truthy, falsy) = match syntax {
        Syntax::Toml => ("true", "false"),
        Syntax::Python => ("True", "False"),
    };
    if raw == truthy {
        return Ok(Value::Bool(true));
    }
    if raw == falsy {
        return Ok(Value::Bool(false));
    }
    if let Some(inner) = unquote(raw, '"').or_else(|| unquote(raw, '\'')) {
        return Ok(Value::String(inner));
    }
    let digits: String = raw.chars().filter(|c| *c != '_').collect();
    if !digits.is_empty() && digits.trim_start_matches(['-', '+']).chars().all(|c| c.is_ascii_digit()) {
        return digits.parse::<i64>().map(Value::from).map_err(|_| format!("{raw} is too large"));
    }
    Err(match raw {
        "True" | "False" if syntax == Syntax::Toml => format!("{raw} is Python; TOML writes {}", raw.to_lowercase()),
        "true" | "false" if syntax == Syntax::Python => {
            format!("{raw} is not Python; write {}{}", raw[..1].to_uppercase(), &raw[1..])
        }
        _ => format!("{raw} is not a boolean, an integer or a quoted string"),
    })
}

/// The text between matching quotes, with `\\` escapes resolved.
fn unquote(raw: &str, quote: char) -> Option<String> {
    let inner = raw.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c if c == quote => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<FileLayer, Vec<String>> {
        let mut layer = FileLayer::default();
        let mut errors = Vec::new();
        layer.parse(Path::new(name), text, &mut errors);
        if errors.is_empty() { Ok(layer) } else { Err(errors) }
    }

    #[test]
    fn a_tower_style_python_file_is_read_as_it_is() {
        let layer = parse(
            "/etc/tower/conf.d/limits.py",
            "# Session limits\nAUTH_TOKEN_PER_USER = 3  # per user\nAUTH_BASIC_ENABLED = False\n\
             SESSION_LIMIT_POLICY = 'deny_new'\nAUTH_TOKEN_EXPIRATION=600\n",
        )
        .unwrap();
        assert_eq!(layer.values["AUTH_TOKEN_PER_USER"].value, Value::from(3));
        assert_eq!(layer.values["AUTH_TOKEN_PER_USER"].line, 2);
        assert_eq!(layer.values["AUTH_BASIC_ENABLED"].value, Value::from(false));
        assert_eq!(layer.values["SESSION_LIMIT_POLICY"].value, Value::from("deny_new"));
        assert_eq!(layer.values["AUTH_TOKEN_EXPIRATION"].value, Value::from(600));
    }

    #[test]
    fn a_toml_file_is_read() {
        let layer =
            parse("a.toml", "AUTH_TOKEN_MAX_AGE = 86_400\nSESSION_LIMIT_POLICY = \"kick_oldest\" # why\n").unwrap();
        assert_eq!(layer.values["AUTH_TOKEN_MAX_AGE"].value, Value::from(86400));
        assert_eq!(layer.values["SESSION_LIMIT_POLICY"].value, Value::from("kick_oldest"));
    }

    #[test]
    fn every_problem_names_file_line_and_key() {
        let errors = parse(
            "bad.py",
            "AUTH_TOKEN_PER_USER = 0\nAUTH_TOKEN_PER_USR = 3\nAUTH_BASIC_ENABLED = true\nnonsense\nAUTH_TOKEN_EXPIRATION = '60'\n",
        )
        .unwrap_err();
        assert!(errors[0].starts_with("bad.py:1: AUTH_TOKEN_PER_USER: 0 would lock every user out"), "{errors:?}");
        assert_eq!(errors[1], "bad.py:2: AUTH_TOKEN_PER_USR: unknown setting");
        assert_eq!(errors[2], "bad.py:3: AUTH_BASIC_ENABLED: true is not Python; write True");
        assert!(errors[3].starts_with("bad.py:4: expected KEY = value"));
        assert_eq!(errors[4], "bad.py:5: AUTH_TOKEN_EXPIRATION: A valid integer is required.");
        let toml = parse("x.toml", "[auth]\nAUTH_BASIC_ENABLED = False\n").unwrap_err();
        assert!(toml[0].starts_with("x.toml:1: tables are not supported"));
        assert_eq!(toml[1], "x.toml:2: AUTH_BASIC_ENABLED: False is Python; TOML writes false");
    }

    #[test]
    fn a_hash_inside_quotes_is_not_a_comment() {
        assert_eq!(strip_comment("A = 'x # y' # z"), "A = 'x # y' ");
        assert_eq!(strip_comment(r#"A = "a \" # b" # c"#), r#"A = "a \" # b" "#);
    }

    #[test]
    fn later_files_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-base.toml"), "AUTH_TOKEN_PER_USER = 5\nAUTH_TOKEN_EXPIRATION = 600\n")
            .unwrap();
        std::fs::write(dir.path().join("20-site.py"), "AUTH_TOKEN_PER_USER = 2\n").unwrap();
        std::fs::write(dir.path().join("README.md"), "not read\n").unwrap();
        let layer = FileLayer::load(dir.path()).unwrap();
        assert_eq!(layer.values["AUTH_TOKEN_PER_USER"].value, Value::from(2));
        assert!(layer.values["AUTH_TOKEN_PER_USER"].file.ends_with("20-site.py"));
        assert_eq!(layer.values["AUTH_TOKEN_EXPIRATION"].value, Value::from(600));
    }
}
