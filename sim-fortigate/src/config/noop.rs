//! The fast path of a REST write that changes nothing (an Ansible re-run sends the object the
//! table already holds): decided by comparing the body with the stored entry, without building
//! CLI commands and running them through the [`super::engine::Engine`].
//!
//! [`body_unchanged`] answers `true` only when it can prove that the engine would accept the
//! body and store the same configuration: every attribute of the body, in the canonical form
//! the engine would store (the same parsing rules as `Engine::parse_value` in `set` mode), is
//! the same value as the entry's ([`diff::same_value`]); references are checked like the
//! engine checks them; the entry-level checks of `commit_entry` (required attributes, UUID)
//! pass. Anything else (a real change, an equivalent notation it does not canonicalize, `null`,
//! sub-tables, secrets, malformed JSON values) answers `false` and the caller runs the engine,
//! which decides and reports errors exactly as before. So the fast path can only make a
//! no-change write cheaper, never change what a write does.

use serde_json::{Map, Value as Json};

use super::diff;
use super::engine::{is_uuid, parse_ipmask};
use super::lexer::Token;
use super::schema::{FieldSchema, FieldType, Schema, TableSchema};
use super::tree::{Config, Entry, Value};
use super::version::FosVersion;

/// Whether a REST PUT of `body` on entry `e` of `ts` (already found, key unchanged) provably
/// leaves the configuration as it is. `false` means "not proven": run the engine.
pub fn body_unchanged(
    cfg: &Config,
    ts: &TableSchema,
    e: &Entry,
    body: &Map<String, Json>,
    version: FosVersion,
) -> bool {
    // `commit_entry`: a required attribute missing, or a UUID to generate, would fail or
    // change the entry whatever the body says.
    for f in ts.fields_at(version) {
        if f.required && f.default.is_empty() && !e.fields.contains_key(f.name) {
            return false;
        }
        if f.name == "uuid" && !e.fields.contains_key("uuid") {
            return false;
        }
    }
    for (k, v) in body {
        // As `json::json_to_commands`: meta attributes, the key and attributes this version
        // does not know are not applied.
        if k.starts_with("q_") || ts.mkey() == Some(k.as_str()) {
            continue;
        }
        let Some(f) = ts.field(k, version) else {
            continue;
        };
        let Some(new) = canonical(cfg, f, v) else {
            return false;
        };
        let new = new.filter(|n| !is_default(f, n));
        if !diff::same_value(f, e.fields.get(f.name), new.as_ref(), version) {
            return false;
        }
    }
    true
}

/// The value the engine would store for `set <f> <v>` or `unset <f>` (`Some(None)`: the
/// attribute removed), or `None` when not decided here (errors, sub-tables, secrets).
fn canonical(cfg: &Config, f: &FieldSchema, v: &Json) -> Option<Option<Value>> {
    match (&f.ty, v) {
        // `unset`: the attribute removed (the default).
        (_, Json::Null) => Some(None),
        // `config <f>` + `purge` + `end`: an empty list of sub-table entries removes them all.
        (FieldType::Table(sub), Json::Array(items)) if !sub.is_single() && items.is_empty() => {
            Some(None)
        }
        (FieldType::Table(_) | FieldType::Password, _) => None,
        (FieldType::Multi { ds, builtins, key }, Json::Array(items)) => {
            let mut members: Vec<String> = Vec::with_capacity(items.len());
            for it in items {
                let w = member_text(it, key)?;
                if w.is_empty() {
                    // An empty word is skipped by the engine; not worth deciding here.
                    return None;
                }
                if !ds.is_empty() && !ref_exists(cfg, ds, builtins, &w) {
                    return None;
                }
                if !members.contains(&w) {
                    members.push(w);
                }
            }
            Some((!members.is_empty()).then_some(Value::List(members)))
        }
        (FieldType::MultiInt { min, max, key }, Json::Array(items)) => {
            let mut members: Vec<String> = Vec::with_capacity(items.len());
            for it in items {
                for w in member_text(it, key)?.split_whitespace() {
                    let n = match w.parse::<i64>() {
                        Ok(n) if n >= *min && n <= *max => n.to_string(),
                        _ => return None,
                    };
                    if !members.contains(&n) {
                        members.push(n);
                    }
                }
            }
            Some((!members.is_empty()).then_some(Value::List(members)))
        }
        (FieldType::Multi { .. } | FieldType::MultiInt { .. }, _) => None,
        (_, Json::String(s)) => {
            if s.is_empty() && !matches!(f.ty, FieldType::Str(_)) {
                return Some(None); // `unset`
            }
            canonical_scalar(cfg, f, s)
        }
        (_, Json::Number(n)) => canonical_scalar(cfg, f, &n.to_string()),
        _ => None,
    }
}

/// A member of a JSON list as `json_to_commands` turns it into a word.
fn member_text(it: &Json, key: &str) -> Option<String> {
    match it {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Object(o) => match o
            .get(key)
            .or_else(|| o.get("name"))
            .or_else(|| o.get("q_origin_key"))
        {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Number(n)) => Some(n.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// `Engine::parse_value` (`set` mode) of one scalar value given as one word.
fn canonical_scalar(cfg: &Config, f: &FieldSchema, t: &str) -> Option<Option<Value>> {
    let v = match &f.ty {
        FieldType::Str(max) => {
            if t.chars().count() > *max {
                return None;
            }
            t.to_string()
        }
        FieldType::Int(min, max) => match t.parse::<i64>() {
            Ok(n) if n >= *min && n <= *max => n.to_string(),
            _ => return None,
        },
        FieldType::Enum(opts) => opts.iter().find(|o| o.eq_ignore_ascii_case(t))?.to_string(),
        FieldType::Ip => t.parse::<std::net::Ipv4Addr>().ok()?.to_string(),
        FieldType::IpMask => {
            let words: Vec<Token> = t
                .split_whitespace()
                .map(|w| Token {
                    text: w.to_string(),
                    line: 0,
                    col: 0,
                    quoted: true,
                })
                .collect();
            parse_ipmask(&words).ok()?
        }
        FieldType::Uuid => {
            if !is_uuid(t) {
                return None;
            }
            t.to_ascii_lowercase()
        }
        FieldType::Ref { ds, builtins } => {
            if !ref_exists(cfg, ds, builtins, t) {
                return None;
            }
            t.to_string()
        }
        FieldType::Words(opts) => {
            let mut members: Vec<&str> = Vec::new();
            for w in t.split_whitespace() {
                let w = if opts.is_empty() {
                    w
                } else {
                    opts.iter().find(|o| o.eq_ignore_ascii_case(w))?
                };
                if !members.contains(&w) {
                    members.push(w);
                }
            }
            members.join(" ")
        }
        FieldType::Password
        | FieldType::Table(_)
        | FieldType::Multi { .. }
        | FieldType::MultiInt { .. } => return None,
    };
    Some(Some(Value::Scalar(v)))
}

/// As the engine's `is_default` (a value equal to the default is not stored).
fn is_default(f: &FieldSchema, v: &Value) -> bool {
    match v {
        Value::Scalar(s) => s == f.default,
        Value::List(l) => l.is_empty(),
        Value::Table(t) => t.is_empty(),
    }
}

/// As `Engine::ref_exists` with nothing staged (the entry being edited is the stored one, and a
/// body the fast path accepts changes none of its sub-tables).
fn ref_exists(cfg: &Config, ds: &[&str], builtins: &[&str], name: &str) -> bool {
    if builtins.contains(&name) {
        return true;
    }
    ds.iter().any(|d| {
        let (t, sub) = Schema::split_ds(d);
        match sub {
            None => cfg.table(t).is_some_and(|tb| tb.contains(name)),
            Some(sub) => cfg
                .table(t)
                .and_then(|tb| tb.get(""))
                .and_then(|e| e.table(sub))
                .is_some_and(|tb| tb.contains(name)),
        }
    })
}
