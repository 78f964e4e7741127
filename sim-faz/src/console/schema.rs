//! The configuration objects the FortiAnalyzer console edits: their fields, value types, help
//! texts and defaults, and how a field is read from and written to the shared state
//! ([`Faz::global`], [`Faz::ioc_settings`], [`Faz::admins`]: the same state the JSON-RPC
//! `/cli/global/system/...` objects read and write).
//!
//! Help texts follow the FortiAnalyzer CLI where public material shows them (the seed article's
//! `set jsonapi-log` listing; the FortiAnalyzer/FortiManager `system log ioc` schema); the rest
//! are written in the same style.

use crate::faz::{AdminUser, GlobalSettings};
use crate::ioc::IocSettings;

/// A field's value type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// One of the listed words (word, help).
    Enum(&'static [(&'static str, &'static str)]),
    /// An integer in the inclusive range.
    Int(i64, i64),
    /// A string of at most this many characters.
    Str(usize),
    /// A password (shown as `ENC ...`).
    Password,
}

/// One field of an object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub default: &'static str,
}

const ENABLE: &[(&str, &str)] = &[
    ("disable", "Disable setting."),
    ("enable", "Enable setting."),
];

/// `config system global` (the fields this lab keeps).
pub const GLOBAL: &[Field] = &[
    Field {
        name: "adom-status",
        help: "ADOM status.",
        kind: Kind::Enum(&[
            ("disable", "Disable ADOM mode."),
            ("enable", "Enable ADOM mode."),
        ]),
        default: "enable",
    },
    Field {
        name: "hostname",
        help: "System hostname.",
        kind: Kind::Str(35),
        default: "FAZ-LAB",
    },
    Field {
        name: "jsonapi-log",
        help: "Enable/disable jsonapi log.",
        kind: Kind::Enum(&[
            ("all", "logging both jsonapi request & response."),
            ("disable", "disable jsonapi log."),
            ("request", "logging jsonapi request."),
            ("response", "logging jsonapi response."),
        ]),
        default: "disable",
    },
    Field {
        name: "timezone",
        help: "Time zone.",
        kind: Kind::Str(63),
        default: "UTC",
    },
    Field {
        name: "workspace-mode",
        help: "Set workspace mode (ADOM Locking).",
        kind: Kind::Enum(&[
            ("disabled", "Workspace disabled."),
            ("normal", "Workspace lock mode."),
            ("workflow", "Workspace workflow mode."),
        ]),
        default: "disabled",
    },
];

/// `config system log ioc`.
pub const IOC: &[Field] = &[
    Field {
        name: "notification",
        help: "Disable/Enable IoC notification.",
        kind: Kind::Enum(ENABLE),
        default: "enable",
    },
    Field {
        name: "notification-throttle",
        help: "Minute value for throttling the rate of IoC notifications.",
        kind: Kind::Int(1, 10080),
        default: "1440",
    },
    Field {
        name: "rescan-max-runner",
        help: "Max count of cocurrent runner of IoC rescan.",
        kind: Kind::Int(1, 32),
        default: "8",
    },
    Field {
        name: "rescan-run-at",
        help: "When to run IoC rescan.",
        kind: Kind::Int(0, 24),
        default: "1",
    },
    Field {
        name: "rescan-status",
        help: "Disable/Enable IoC rescan.",
        kind: Kind::Enum(ENABLE),
        default: "enable",
    },
    Field {
        name: "status",
        help: "Disable/Enable IoC feature.",
        kind: Kind::Enum(ENABLE),
        default: "enable",
    },
];

pub const PROFILES: &[(&str, &str)] = &[
    ("No_Permission_User", "No permission."),
    ("Restricted_User", "Read-only access."),
    ("Standard_User", "Read-write access to devices and logs."),
    ("Super_User", "Full access."),
];

/// `config system admin user` (entry fields).
pub const ADMIN_USER: &[Field] = &[
    Field {
        name: "description",
        help: "Description.",
        kind: Kind::Str(127),
        default: "",
    },
    Field {
        name: "password",
        help: "Password.",
        kind: Kind::Password,
        default: "",
    },
    Field {
        name: "profileid",
        help: "Profile ID.",
        kind: Kind::Enum(PROFILES),
        default: "Restricted_User",
    },
    Field {
        name: "rpc-permit",
        help: "set none/read/read-write rpc-permission.",
        kind: Kind::Enum(&[
            ("none", "No permission."),
            ("read", "Read only permission."),
            ("read-write", "Read and write permission."),
        ]),
        default: "none",
    },
];

/// Finds a field by exact name or unique prefix.
pub fn field(fields: &'static [Field], name: &str) -> Option<&'static Field> {
    if let Some(f) = fields.iter().find(|f| f.name == name) {
        return Some(f);
    }
    let mut it = fields.iter().filter(|f| f.name.starts_with(name));
    match (it.next(), it.next()) {
        (Some(f), None) if !name.is_empty() => Some(f),
        _ => None,
    }
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueError {
    /// Not one of the enumerated words / not a number / too long.
    Invalid,
    /// A number outside the range.
    OutOfRange,
}

/// Checks (and normalises: unique enum prefixes are completed) a value for a field.
pub fn check(f: &Field, v: &str) -> Result<String, ValueError> {
    match f.kind {
        Kind::Enum(words) => {
            if let Some((w, _)) = words.iter().find(|(w, _)| *w == v) {
                return Ok(w.to_string());
            }
            let m: Vec<_> = words.iter().filter(|(w, _)| w.starts_with(v)).collect();
            match m.as_slice() {
                [(w, _)] if !v.is_empty() => Ok(w.to_string()),
                _ => Err(ValueError::Invalid),
            }
        }
        Kind::Int(lo, hi) => {
            let n: i64 = v.parse().map_err(|_| ValueError::Invalid)?;
            if n < lo || n > hi {
                return Err(ValueError::OutOfRange);
            }
            Ok(n.to_string())
        }
        Kind::Str(max) => {
            if v.chars().count() > max {
                return Err(ValueError::Invalid);
            }
            Ok(v.to_string())
        }
        Kind::Password => {
            if v.chars().count() > 128 {
                return Err(ValueError::Invalid);
            }
            Ok(v.to_string())
        }
    }
}

fn enable(b: bool) -> String {
    if b { "enable" } else { "disable" }.to_string()
}

/// Reads a `system global` field.
pub fn global_get(g: &GlobalSettings, name: &str) -> String {
    match name {
        "adom-status" => g.adom_status.clone(),
        "hostname" => g.hostname.clone(),
        "jsonapi-log" => g.jsonapi_log.clone(),
        "timezone" => g.timezone.clone(),
        "workspace-mode" => g.workspace_mode.clone(),
        _ => String::new(),
    }
}

/// Writes a (checked) `system global` field.
pub fn global_set(g: &mut GlobalSettings, name: &str, v: &str) {
    let v = v.to_string();
    match name {
        "adom-status" => g.adom_status = v,
        "hostname" => g.hostname = v,
        "jsonapi-log" => g.jsonapi_log = v,
        "timezone" => g.timezone = v,
        "workspace-mode" => g.workspace_mode = v,
        _ => {}
    }
}

/// Reads a `system log ioc` field.
pub fn ioc_get(s: &IocSettings, name: &str) -> String {
    match name {
        "notification" => enable(s.notification),
        "notification-throttle" => s.notification_throttle.to_string(),
        "rescan-max-runner" => s.rescan_max_runner.to_string(),
        "rescan-run-at" => s.rescan_run_at.to_string(),
        "rescan-status" => enable(s.rescan_status),
        "status" => enable(s.status),
        _ => String::new(),
    }
}

/// Writes a (checked) `system log ioc` field.
pub fn ioc_set(s: &mut IocSettings, name: &str, v: &str) {
    let n = || v.parse::<u32>().unwrap_or(0);
    match name {
        "notification" => s.notification = v == "enable",
        "notification-throttle" => s.notification_throttle = n(),
        "rescan-max-runner" => s.rescan_max_runner = n(),
        "rescan-run-at" => s.rescan_run_at = n(),
        "rescan-status" => s.rescan_status = v == "enable",
        "status" => s.status = v == "enable",
        _ => {}
    }
}

/// Reads an admin entry field (the password as its `ENC` form).
pub fn admin_get(a: &AdminUser, name: &str) -> String {
    match name {
        "description" => a.description.clone(),
        "password" => format!(
            "ENC {}",
            &a.password_sha256[..a.password_sha256.len().min(32)]
        ),
        "profileid" => a.profileid.clone(),
        "rpc-permit" => a.rpc_permit.clone(),
        _ => String::new(),
    }
}

/// Writes a (checked) admin entry field; a password needs a fresh salt.
pub fn admin_set(a: &mut AdminUser, name: &str, v: &str, salt: &str) {
    match name {
        "description" => a.description = v.to_string(),
        "password" => a.set_password(v, salt),
        "profileid" => a.profileid = v.to_string(),
        "rpc-permit" => a.rpc_permit = v.to_string(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_prefixes_completed() {
        let f = field(GLOBAL, "jsonapi-log").unwrap();
        assert_eq!(check(f, "all").unwrap(), "all");
        assert_eq!(check(f, "req").unwrap(), "request");
        assert_eq!(check(f, "r"), Err(ValueError::Invalid)); // request/response
        assert_eq!(check(f, "sometimes"), Err(ValueError::Invalid));
        let f = field(IOC, "notification-throttle").unwrap();
        assert_eq!(check(f, "60").unwrap(), "60");
        assert_eq!(check(f, "0"), Err(ValueError::OutOfRange));
        assert_eq!(check(f, "x"), Err(ValueError::Invalid));
        assert_eq!(field(IOC, "notification").unwrap().name, "notification");
        assert!(field(IOC, "rescan").is_none());
        assert_eq!(field(IOC, "rescan-s").unwrap().name, "rescan-status");
        assert!(field(GLOBAL, "bogus").is_none());
    }

    #[test]
    fn ioc_fields_round_trip() {
        let mut s = IocSettings::default();
        for f in IOC {
            let v = ioc_get(&s, f.name);
            ioc_set(&mut s, f.name, &v);
        }
        assert_eq!(s, IocSettings::default());
        ioc_set(&mut s, "notification", "disable");
        ioc_set(&mut s, "notification-throttle", "5");
        assert!(!s.notification);
        assert_eq!(s.notification_throttle, 5);
    }
}
