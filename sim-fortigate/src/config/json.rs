//! JSON forms of entries for the FortiOS REST API, both ways.
//!
//! Out: field names as in the CLI, every field (defaults included), `q_origin_key` after the
//! key, integers as numbers, reference lists as `[{"name": .., "q_origin_key": ..}]`, option
//! words (`allowaccess`) as one string, sub-tables as arrays (single sub-tables as objects).
//! In: a JSON object becomes CLI commands run by the [`super::engine::Engine`], so REST changes
//! are validated exactly like CLI ones.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::engine::{scan_refs, value_names};
use super::lexer::Command;
use super::schema::{FieldSchema, FieldType, Schema, TableSchema};
use super::tree::{Config, Entry, Value};
use super::version::FosVersion;

/// Options of the JSON rendering (REST query parameters).
#[derive(Debug, Clone, Default)]
pub struct JsonOpts {
    /// `with_meta=1`: `q_ref`, `q_static`, `q_type`, ... on entries.
    pub with_meta: bool,
    /// `datasource=1`: members carry the table they come from.
    pub datasource: bool,
    /// `format=a|b`: only these fields.
    pub format: Option<Vec<String>>,
}

/// A JSON input error (maps to REST 500 + `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub code: i32,
    pub message: String,
    pub field: String,
}

fn jerr(code: i32, field: &str, message: impl Into<String>) -> JsonError {
    JsonError {
        code,
        message: message.into(),
        field: field.to_string(),
    }
}

/// Reference counts of the entries of `path` (for `q_ref`).
pub fn ref_counts(cfg: &Config, version: FosVersion, path: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (tpath, tb) in &cfg.tables {
        let Some(ts) = Schema::get().table(tpath, version) else {
            continue;
        };
        for e in tb.entries() {
            scan_refs(ts, e, version, &mut |f, v| {
                if f.datasources().contains(&path) {
                    for n in value_names(v) {
                        *counts.entry(n.to_string()).or_insert(0) += 1;
                    }
                }
            });
        }
    }
    counts
}

fn key_json(ts: &TableSchema, key: &str) -> Json {
    if ts.int_key() {
        key.parse::<u64>()
            .map(Json::from)
            .unwrap_or_else(|_| Json::from(key))
    } else {
        Json::from(key)
    }
}

/// An entry as a REST result object.
pub fn entry_to_json(
    cfg: &Config,
    ts: &TableSchema,
    e: &Entry,
    version: FosVersion,
    opts: &JsonOpts,
    refs: Option<&HashMap<String, usize>>,
) -> Map<String, Json> {
    let mut m = Map::new();
    let wanted = |name: &str| {
        opts.format
            .as_ref()
            .is_none_or(|f| f.iter().any(|x| x == name))
    };
    for f in ts.fields_at(version) {
        if ts.mkey() == Some(f.name) {
            if wanted(f.name) || opts.format.is_some() {
                m.insert(f.name.to_string(), key_json(ts, &e.key));
            }
            m.insert("q_origin_key".into(), key_json(ts, &e.key));
            continue;
        }
        if !wanted(f.name) {
            continue;
        }
        m.insert(
            f.name.to_string(),
            field_json(cfg, f, e.fields.get(f.name), version, opts),
        );
    }
    if opts.with_meta {
        let (p, n) = if ts.path.contains(' ') {
            ts.rest_path_name()
        } else {
            (String::new(), ts.path.clone())
        };
        m.insert("q_path".into(), Json::from(p));
        m.insert("q_name".into(), Json::from(n));
        m.insert(
            "q_mkey_type".into(),
            Json::from(if ts.int_key() { "integer" } else { "string" }),
        );
        m.insert(
            "q_ref".into(),
            Json::from(refs.and_then(|r| r.get(&e.key)).copied().unwrap_or(0)),
        );
        m.insert("q_static".into(), Json::from(false));
        m.insert("q_no_rename".into(), Json::from(false));
        m.insert("q_no_edit".into(), Json::from(false));
        m.insert("q_type".into(), Json::from(0));
    }
    m
}

fn field_json(
    cfg: &Config,
    f: &FieldSchema,
    v: Option<&Value>,
    version: FosVersion,
    opts: &JsonOpts,
) -> Json {
    match &f.ty {
        FieldType::Multi { ds, key, .. } => {
            let list = match v {
                Some(Value::List(l)) => l.as_slice(),
                _ => &[],
            };
            Json::Array(
                list.iter()
                    .map(|n| {
                        let mut o = Map::new();
                        o.insert((*key).to_string(), Json::from(n.as_str()));
                        o.insert("q_origin_key".into(), Json::from(n.as_str()));
                        if opts.datasource {
                            if let Some(d) = ds.iter().find(|d| {
                                let (t, _) = Schema::split_ds(d);
                                cfg.table(t).is_some_and(|tb| tb.contains(n))
                            }) {
                                o.insert("datasource".into(), Json::from(d.replace(' ', ".")));
                            }
                        }
                        Json::Object(o)
                    })
                    .collect(),
            )
        }
        FieldType::MultiInt { key, .. } => {
            let list = match v {
                Some(Value::List(l)) => l.as_slice(),
                _ => &[],
            };
            Json::Array(
                list.iter()
                    .map(|n| {
                        let num = n
                            .parse::<i64>()
                            .map(Json::from)
                            .unwrap_or_else(|_| Json::from(n.as_str()));
                        let mut o = Map::new();
                        o.insert((*key).to_string(), num.clone());
                        o.insert("q_origin_key".into(), num);
                        Json::Object(o)
                    })
                    .collect(),
            )
        }
        FieldType::Table(sub) => {
            let t = match v {
                Some(Value::Table(t)) => Some(t),
                _ => None,
            };
            let inner = JsonOpts {
                format: None,
                with_meta: false,
                ..opts.clone()
            };
            if sub.is_single() {
                let empty = Entry::new("");
                let e = t.and_then(|t| t.get("")).unwrap_or(&empty);
                Json::Object(entry_to_json(cfg, sub, e, version, &inner, None))
            } else {
                Json::Array(
                    t.map(|t| {
                        t.entries()
                            .iter()
                            .map(|e| {
                                Json::Object(entry_to_json(cfg, sub, e, version, &inner, None))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                )
            }
        }
        FieldType::Int(..) => {
            let s = match v {
                Some(Value::Scalar(s)) => s.as_str(),
                _ => f.default,
            };
            s.parse::<i64>()
                .map(Json::from)
                .unwrap_or_else(|_| Json::from(s))
        }
        _ => {
            let s = match v {
                Some(Value::Scalar(s)) => s.as_str(),
                _ => f.default,
            };
            Json::from(s)
        }
    }
}

/// The default entry of a table (REST `action=default`).
pub fn default_json(cfg: &Config, ts: &TableSchema, version: FosVersion) -> Map<String, Json> {
    let mut m = entry_to_json(
        cfg,
        ts,
        &Entry::new(""),
        version,
        &JsonOpts::default(),
        None,
    );
    m.remove("q_origin_key");
    m
}

/// The mkey given in a REST body, as CLI text.
pub fn body_key(ts: &TableSchema, body: &Map<String, Json>) -> Option<String> {
    let k = ts.mkey()?;
    match body.get(k)? {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Converts a JSON object into `set`/`unset`/`config` commands for the entry being edited.
/// Sub-tables present in the body replace the existing ones (`purge` first), as FortiOS does.
pub fn json_to_commands(
    ts: &TableSchema,
    body: &Map<String, Json>,
    version: FosVersion,
    out: &mut Vec<Command>,
) -> Result<(), JsonError> {
    for (k, v) in body {
        if k.starts_with("q_") || ts.mkey() == Some(k.as_str()) {
            continue;
        }
        let Some(f) = ts.field(k, version) else {
            // FortiOS ignores attributes it does not know, including those of other
            // versions (the Ansible collection only warns on a version mismatch and sends
            // them anyway) [P].
            tracing::debug!(table = %ts.path, field = %k, "REST: attribute not known here, ignored");
            continue;
        };
        match (&f.ty, v) {
            (_, Json::Null) => out.push(Command::from_words(&["unset", k])),
            (FieldType::Table(sub), Json::Array(items)) if !sub.is_single() => {
                out.push(Command::from_words(&["config", k]));
                out.push(Command::from_words(&["purge"]));
                for item in items {
                    let Json::Object(o) = item else {
                        return Err(jerr(
                            -651,
                            k,
                            "value parse error: table members must be objects",
                        ));
                    };
                    let key = body_key(sub, o).unwrap_or_else(|| "0".into());
                    out.push(Command::from_words(&["edit", &key]));
                    json_to_commands(sub, o, version, out)?;
                    out.push(Command::from_words(&["next"]));
                }
                out.push(Command::from_words(&["end"]));
            }
            (FieldType::Table(sub), Json::Object(o)) if sub.is_single() => {
                out.push(Command::from_words(&["config", k]));
                json_to_commands(sub, o, version, out)?;
                out.push(Command::from_words(&["end"]));
            }
            (FieldType::Table(_), _) => return Err(jerr(-651, k, "value parse error")),
            (
                FieldType::Multi { key, .. } | FieldType::MultiInt { key, .. },
                Json::Array(items),
            ) => {
                let mut words = vec!["set".to_string(), k.clone()];
                for it in items {
                    let w = match it {
                        Json::String(s) => s.clone(),
                        Json::Number(n) => n.to_string(),
                        Json::Object(o) => match o
                            .get(*key)
                            .or_else(|| o.get("name"))
                            .or_else(|| o.get("q_origin_key"))
                        {
                            Some(Json::String(s)) => s.clone(),
                            Some(Json::Number(n)) => n.to_string(),
                            _ => {
                                return Err(jerr(-651, k, "value parse error: member without name"))
                            }
                        },
                        _ => return Err(jerr(-651, k, "value parse error")),
                    };
                    words.push(w);
                }
                if words.len() == 2 {
                    out.push(Command::from_words(&["unset", k]));
                } else {
                    out.push(Command::from_words(&words));
                }
            }
            (_, Json::String(s)) => {
                // An empty value is the attribute's default (what GET shows for an unset
                // integer, option or list); a string attribute takes it literally.
                if s.is_empty() && !matches!(f.ty, FieldType::Str(_)) {
                    out.push(Command::from_words(&["unset", k]));
                } else {
                    out.push(Command::from_words(&["set", k, s]));
                }
            }
            (
                FieldType::Int(..) | FieldType::MultiInt { .. } | FieldType::Str(_),
                Json::Number(n),
            ) => out.push(Command::from_words(&["set", k.as_str(), &n.to_string()])),
            (_, Json::Number(n)) => {
                out.push(Command::from_words(&["set", k.as_str(), &n.to_string()]))
            }
            _ => return Err(jerr(-651, k, "value parse error: unexpected JSON type")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_json_has_q_origin_key_and_member_objects() {
        let v = FosVersion::V6_4_4;
        let ts = Schema::get().table("firewall policy", v).unwrap();
        let mut e = Entry::new("7");
        e.fields
            .insert("srcaddr".into(), Value::List(vec!["all".into()]));
        e.fields
            .insert("action".into(), Value::Scalar("accept".into()));
        let j = entry_to_json(&Config::default(), ts, &e, v, &JsonOpts::default(), None);
        assert_eq!(j["policyid"], 7);
        assert_eq!(j["q_origin_key"], 7);
        assert_eq!(j["srcaddr"][0]["name"], "all");
        assert_eq!(j["srcaddr"][0]["q_origin_key"], "all");
        assert_eq!(j["action"], "accept");
        assert_eq!(j["logtraffic"], "utm");
        assert_eq!(j["tcp-mss-sender"], 0);
        let keys: Vec<&String> = j.keys().take(3).collect();
        assert_eq!(keys, ["policyid", "q_origin_key", "name"]);
    }

    #[test]
    fn json_becomes_commands() {
        let v = FosVersion::V6_4_4;
        let ts = Schema::get().table("firewall policy", v).unwrap();
        let body: Map<String, Json> = serde_json::from_str(
            r#"{"policyid": 3, "srcaddr": [{"name": "all"}], "action": "accept", "tcp-mss-sender": 5, "comments": null, "bogus": 1}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        json_to_commands(ts, &body, v, &mut out).unwrap();
        let words: Vec<Vec<&str>> = out
            .iter()
            .map(|c| c.tokens.iter().map(|t| t.text.as_str()).collect())
            .collect();
        assert_eq!(
            words,
            vec![
                vec!["set", "srcaddr", "all"],
                vec!["set", "action", "accept"],
                vec!["set", "tcp-mss-sender", "5"],
                vec!["unset", "comments"]
            ]
        );
        let bad: Map<String, Json> = serde_json::from_str(r#"{"action": true}"#).unwrap();
        assert_eq!(
            json_to_commands(ts, &bad, v, &mut Vec::new())
                .unwrap_err()
                .code,
            -651
        );
    }
}
