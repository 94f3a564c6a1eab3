//! Every setting Bouncer knows: its key, type, default, bounds, and the texts the API shows.
//! Parsing a value goes through here, whether it comes from the API, the CLI or a file.

use serde_json::Value;

/// What kind of value a setting holds, with its bounds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// An integer in `min ..= max`; values in `gap` (exclusive bounds) are rejected with
    /// `gap_message`, which says why (e.g. 0 for `AUTH_TOKEN_PER_USER`).
    Integer {
        min: i64,
        max: i64,
        gap: Option<(i64, i64, &'static str)>,
    },
    Boolean,
    Choice(&'static [&'static str]),
}

#[derive(Debug)]
pub struct SettingDef {
    pub key: &'static str,
    pub label: &'static str,
    pub help_text: &'static str,
    pub unit: Option<&'static str>,
    pub kind: Kind,
    pub default: fn() -> Value,
}

pub const CATEGORY: &str = "Authentication";
pub const CATEGORY_SLUG: &str = "authentication";

pub static SETTINGS: &[SettingDef] = &[
    SettingDef {
        key: "AUTH_TOKEN_EXPIRATION",
        label: "Idle Time Force Log Out",
        help_text: "Number of seconds that a user is inactive before they will need to login again. \
            Every authenticated request restarts the count (requests sent with X-Session-Quiet: 1 do not). \
            The value cannot be less than one minute (60).",
        unit: Some("seconds"),
        kind: Kind::Integer { min: 60, max: 30_000_000_000, gap: None },
        default: || Value::from(1800),
    },
    SettingDef {
        key: "AUTH_TOKEN_PER_USER",
        label: "Maximum number of simultaneous logged in sessions",
        help_text: "Maximum number of simultaneous logged in sessions a user may have. \
            To disable enter -1. 0 is not allowed: it would lock every user out. \
            Sessions authenticated with HTTP Basic are not counted or limited.",
        unit: None,
        kind: Kind::Integer {
            min: -1,
            max: 1_000_000,
            gap: Some((
                -1,
                1,
                "0 would lock every user out; enter -1 for no limit, or a number of sessions from 1 to 1000000.",
            )),
        },
        default: || Value::from(-1),
    },
    SettingDef {
        key: "AUTH_BASIC_ENABLED",
        label: "Enable HTTP Basic Auth",
        help_text: "Enable HTTP Basic Auth for the API. Requests authenticated with HTTP Basic create no \
            session, so the session limits (AUTH_TOKEN_PER_USER) and the idle timeout are not enforced \
            for them; disable HTTP Basic to make the session limits meaningful.",
        unit: None,
        kind: Kind::Boolean,
        default: || Value::from(true),
    },
    SettingDef {
        key: "AUTH_TOKEN_MAX_AGE",
        label: "Maximum Session Lifetime",
        help_text: "Number of seconds after login at which a session ends, however active it is. \
            0 turns the maximum lifetime off; otherwise the value cannot be less than one minute (60).",
        unit: Some("seconds"),
        kind: Kind::Integer {
            min: 0,
            max: 30_000_000_000,
            gap: Some((0, 60, "Enter 0 to turn the maximum lifetime off, or at least 60 seconds.")),
        },
        default: || Value::from(0),
    },
    SettingDef {
        key: "SESSION_LIMIT_POLICY",
        label: "Session Limit Policy",
        help_text: "What happens when a login would exceed AUTH_TOKEN_PER_USER: kick_oldest ends the \
            user's oldest sessions (by login time), deny_new refuses the new login with 403.",
        unit: None,
        kind: Kind::Choice(&["kick_oldest", "deny_new"]),
        default: || Value::from("kick_oldest"),
    },
    SettingDef {
        key: "AUTH_LOGIN_FAILURE_LIMIT",
        label: "Failed Logins Before Lockout",
        help_text: "Number of consecutive failed logins for one username (existing or not) after which \
            further logins for it are refused for AUTH_LOGIN_LOCKOUT_SECONDS. 0 turns the lockout off. \
            The count restarts after a successful login, after a lockout, or 24 hours after the last failure.",
        unit: None,
        kind: Kind::Integer { min: 0, max: 1000, gap: None },
        default: || Value::from(10),
    },
    SettingDef {
        key: "AUTH_LOGIN_LOCKOUT_SECONDS",
        label: "Login Lockout Duration",
        help_text: "Number of seconds a username stays locked out after AUTH_LOGIN_FAILURE_LIMIT \
            consecutive failed logins. A locked-out login gets 429 with Retry-After, whether or not the \
            password is right.",
        unit: Some("seconds"),
        kind: Kind::Integer { min: 1, max: 86_400, gap: None },
        default: || Value::from(300),
    },
];

pub fn find(key: &str) -> Option<&'static SettingDef> {
    SETTINGS.iter().find(|def| def.key == key)
}

impl SettingDef {
    /// Checks `value` against this setting's type and bounds; the error is a message for
    /// a person, in Django REST framework's words where DRF has them.
    pub fn parse(&self, value: &Value) -> Result<Value, String> {
        match self.kind {
            Kind::Integer { min, max, gap } => {
                let n = match value {
                    Value::Number(n) => n
                        .as_i64()
                        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64)),
                    _ => None,
                }
                .ok_or_else(|| "A valid integer is required.".to_owned())?;
                if n < min {
                    return Err(format!("Ensure this value is greater than or equal to {min}."));
                }
                if n > max {
                    return Err(format!("Ensure this value is less than or equal to {max}."));
                }
                if let Some((low, high, message)) = gap
                    && n > low
                    && n < high
                {
                    return Err(message.to_owned());
                }
                Ok(Value::from(n))
            }
            Kind::Boolean => match value {
                Value::Bool(_) => Ok(value.clone()),
                _ => Err("Must be a valid boolean.".to_owned()),
            },
            Kind::Choice(choices) => match value.as_str() {
                Some(s) if choices.contains(&s) => Ok(value.clone()),
                _ => Err(format!(
                    "\"{}\" is not a valid choice; choose one of: {}.",
                    value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string()),
                    choices.join(", ")
                )),
            },
        }
    }
}
