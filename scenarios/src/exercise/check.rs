//! Exercise checks: the scenario expectations plus what exercises need (a CMDB object with
//! fields, a device authorized on FortiAnalyzer or EMS, a FortiAnalyzer setting, a console
//! command used). Evaluation reads the devices through their vendor APIs (FortiOS REST,
//! FortiAnalyzer JSON-RPC, EMS REST) and the lab's event timeline, never process internals.
//! The matching itself is pure (unit-tested on API answers).

use serde_json::{Map, Value};

use crate::runner::Probe;
use crate::scenario::StepKind;

/// One check of a task.
#[derive(Debug, Clone)]
pub struct Check {
    /// What it checks, in words.
    pub name: String,
    pub kind: CheckKind,
    /// The check holds when the condition does not.
    pub negate: bool,
    /// Line of the check's key in the file.
    pub line: usize,
}

/// What a check looks at.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// A scenario expectation (`expect_*`), checked once per evaluation.
    Expect(StepKind),
    /// A FortiOS CMDB table or object (`GET /api/v2/cmdb/<path>`) with a row whose fields
    /// match (`mkey` names one entry).
    Cmdb {
        path: String,
        mkey: Option<String>,
        fields: Map<String, Value>,
    },
    /// A device known to FortiAnalyzer (`/dvmdb/device`), authorized or not.
    FazDevice {
        name: Option<String>,
        authorized: bool,
    },
    /// A FortiGate known to EMS (`client_certificates/index`), authorized or not.
    EmsFabric {
        name: Option<String>,
        authorized: bool,
    },
    /// A FortiAnalyzer setting (JSON-RPC `get` of `url`, default `/cli/global/system/global`).
    FazSetting {
        url: String,
        fields: Map<String, Value>,
    },
    /// A console command used (the `console.command` lab event of the device's SSH console),
    /// matched by its first words.
    Console { device: String, command: String },
}

/// The exercise check keys (beside the scenario expectation keys).
pub const EXERCISE_KEYS: &[&str] = &["cmdb", "faz_device", "ems_fabric", "faz_setting", "console"];

/// Every key a check may have.
pub const CHECK_KEYS: &[&str] = &[
    "cmdb",
    "faz_device",
    "ems_fabric",
    "faz_setting",
    "console",
    "expect_fgt_log",
    "expect_faz_log",
    "expect_compromised",
    "expect_alert",
    "expect_stitch",
    "expect_ems",
    "expect_fetch",
    "expect_banned",
    "expect_event",
];

fn obj<'a>(v: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, String> {
    let m = v
        .as_object()
        .ok_or("expects a table, e.g. { key = \"value\" }")?;
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown field `{k}` (expected: {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(m)
}

fn opt_str(m: &Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match m.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{k}` must be a string")),
    }
}

fn opt_bool(m: &Map<String, Value>, k: &str, default: bool) -> Result<bool, String> {
    match m.get(k) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("`{k}` must be true or false")),
    }
}

fn fields(m: &Map<String, Value>, required: bool) -> Result<Map<String, Value>, String> {
    match m.get("fields") {
        None if required => Err("missing `fields`".into()),
        None => Ok(Map::new()),
        Some(Value::Object(f)) => Ok(f.clone()),
        Some(_) => Err("`fields` must be a table".into()),
    }
}

/// Parses one check body.
pub fn parse_check(key: &str, v: &Value) -> Result<CheckKind, String> {
    Ok(match key {
        "cmdb" => {
            let m = obj(v, &["path", "mkey", "fields"])?;
            let path = opt_str(m, "path")?.ok_or("missing `path`")?;
            let path = path.trim_matches('/').to_string();
            if path.is_empty()
                || path.starts_with("api/")
                || !path.contains('/')
                || path.contains("..")
                || path.contains('?')
            {
                return Err(format!(
                    "`path` is a CMDB path such as \"firewall/policy\" or \"log.fortianalyzer/setting\", got {path:?}"
                ));
            }
            CheckKind::Cmdb {
                path,
                mkey: opt_str(m, "mkey")?,
                fields: fields(m, false)?,
            }
        }
        "faz_device" => {
            let m = obj(v, &["name", "authorized"])?;
            CheckKind::FazDevice {
                name: opt_str(m, "name")?,
                authorized: opt_bool(m, "authorized", true)?,
            }
        }
        "ems_fabric" => {
            let m = obj(v, &["name", "authorized"])?;
            CheckKind::EmsFabric {
                name: opt_str(m, "name")?,
                authorized: opt_bool(m, "authorized", true)?,
            }
        }
        "faz_setting" => {
            let m = obj(v, &["url", "fields"])?;
            let url = opt_str(m, "url")?.unwrap_or_else(|| "/cli/global/system/global".into());
            if !url.starts_with('/') {
                return Err(format!(
                    "`url` is a JSON-RPC url such as /cli/global/system/global, got {url:?}"
                ));
            }
            CheckKind::FazSetting {
                url,
                fields: fields(m, true)?,
            }
        }
        "console" => {
            let m = obj(v, &["device", "command"])?;
            let device = opt_str(m, "device")?.unwrap_or_else(|| "fortigate".into());
            let device = match device.as_str() {
                "fortigate" | "fgt" => "fortigate".to_string(),
                "fortianalyzer" | "faz" => "fortianalyzer".to_string(),
                other => {
                    return Err(format!(
                        "`device` must be \"fortigate\" or \"fortianalyzer\" (the devices with a console), got {other:?}"
                    ))
                }
            };
            let command = opt_str(m, "command")?.ok_or("missing `command`")?;
            if command.trim().is_empty() {
                return Err("`command` is empty".into());
            }
            CheckKind::Console {
                device,
                command: normalize(&command),
            }
        }
        expect => {
            let k = crate::scenario::step_kind(expect, v)?;
            if !k.is_expectation() {
                return Err("not an expectation".into());
            }
            CheckKind::Expect(k)
        }
    })
}

/// A check in words.
pub fn describe(k: &CheckKind) -> String {
    let fields_text = |f: &Map<String, Value>| {
        f.iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match k {
        CheckKind::Expect(s) => crate::scenario::describe(s),
        CheckKind::Cmdb { path, mkey, fields } => format!(
            "FortiGate {path}{} has {}",
            mkey.as_ref().map(|m| format!(" {m:?}")).unwrap_or_default(),
            if fields.is_empty() {
                "an entry".into()
            } else {
                fields_text(fields)
            }
        ),
        CheckKind::FazDevice { name, authorized } => format!(
            "{} {} on FortiAnalyzer",
            name.clone().unwrap_or_else(|| "a FortiGate".into()),
            if *authorized {
                "is authorized"
            } else {
                "is not authorized"
            }
        ),
        CheckKind::EmsFabric { name, authorized } => format!(
            "{} {} on EMS",
            name.clone().unwrap_or_else(|| "the FortiGate".into()),
            if *authorized {
                "is authorized"
            } else {
                "is not authorized"
            }
        ),
        CheckKind::FazSetting { url, fields } => {
            format!("FortiAnalyzer {url} has {}", fields_text(fields))
        }
        CheckKind::Console { device, command } => {
            format!("`{command}` was used on the {device} console")
        }
    }
}

/// Lower case, one blank between words, no quotes (how a typed command and a written one
/// compare).
pub fn normalize(s: &str) -> String {
    s.split_whitespace()
        .map(|w| w.trim_matches('"').to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether an API value matches an expected one: compared as text without quotes and case;
/// a list of `{name: ..}` (FortiOS table references; `{action: ..}` for the 7.0 stitch's
/// `actions`) matches an expected name it contains (or every one of space-separated names);
/// an expected list matches exactly the same members in any order.
pub fn value_matches(actual: Option<&Value>, expected: &Value) -> bool {
    let Some(a) = actual else {
        return false;
    };
    let words = |v: &Value| -> Vec<String> {
        match v {
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::Object(o) => o
                        .get("name")
                        .or_else(|| o.get("action"))
                        .or_else(|| o.get("q_origin_key"))
                        .map(text)
                        .unwrap_or_default(),
                    other => text(other),
                })
                .map(|s| normalize(&s))
                .collect(),
            other => vec![normalize(&text(other))],
        }
    };
    match (a, expected) {
        (Value::Array(_), Value::String(s)) => {
            // A member: `srcaddr = "10.115.2.52/32"` holds when the policy's sources include
            // it; "a b" (as `set srcaddr "a" "b"` is written) when they include both.
            let have = words(a);
            let whole = normalize(s);
            have.contains(&whole)
                || s.split_whitespace()
                    .map(normalize)
                    .all(|w| have.contains(&w))
        }
        (_, Value::Array(_)) => {
            let mut have = words(a);
            let mut want = words(expected);
            have.sort();
            want.sort();
            have == want
        }
        _ => normalize(&text(a)) == normalize(&text(expected)),
    }
}

/// Whether an object has every expected field.
pub fn fields_match(obj: &Value, fields: &Map<String, Value>) -> bool {
    fields.iter().all(|(k, v)| value_matches(obj.get(k), v))
}

/// The rows of a FortiOS CMDB answer (`results` is a list for tables, an object for single
/// settings).
pub fn cmdb_rows(answer: &Value) -> Vec<Value> {
    match answer.get("results") {
        Some(Value::Array(a)) => a.clone(),
        Some(o @ Value::Object(_)) => vec![o.clone()],
        _ => Vec::new(),
    }
}

/// Whether a device row (FortiAnalyzer `dvmdb` or EMS `client_certificates`) is the one named
/// (by name, host name or serial; any FortiGate when no name is given) and authorized as
/// wanted.
pub fn device_matches(row: &Value, name: Option<&str>, authorized: bool) -> bool {
    if let Some(n) = name {
        let hit = ["name", "hostname", "sn", "cn"]
            .iter()
            .any(|k| row.get(*k).and_then(Value::as_str) == Some(n));
        if !hit {
            return false;
        }
    } else {
        // Any FortiGate: FortiAnalyzer also lists FortiClients.
        let fgt = row
            .get("os_type")
            .and_then(Value::as_str)
            .is_none_or(|t| t == "fos")
            && row
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(|t| t == "FortiGate");
        if !fgt {
            return false;
        }
    }
    let is = match row.get("authorized") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::String(s)) => s == "1" || s == "true",
        _ => false,
    };
    is == authorized
}

/// Whether a `console.command` timeline event is the command wanted on that device (`command`
/// normalized, in full words). The device's CLI reports the command as it understood it
/// (`resolved`: every abbreviation expanded along its own command tree, so `diag deb app`
/// counts as `diagnose debug application`, and an ambiguous or unknown abbreviation the CLI
/// refused never counts); its first words must be the wanted ones.
pub fn console_matches(ev: &Value, device: &str, command: &str) -> bool {
    if ev.get("kind").and_then(Value::as_str)
        != Some(fortilab_core::EventKind::ConsoleCommand.name())
    {
        return false;
    }
    if ev.get("source").and_then(Value::as_str) != Some(device) {
        return false;
    }
    let Some(resolved) = ev.get("resolved").and_then(Value::as_str) else {
        return false;
    };
    let resolved = normalize(resolved);
    let have: Vec<&str> = resolved.split(' ').collect();
    let wanted: Vec<&str> = command.split(' ').collect();
    have.len() >= wanted.len() && have.iter().zip(&wanted).all(|(h, w)| h == w)
}

impl Check {
    /// Evaluates the check once: whether it holds, and what was seen.
    pub async fn eval(&self, p: &Probe<'_>) -> anyhow::Result<(bool, String)> {
        let (ok, seen) = eval_kind(&self.kind, p).await?;
        Ok((ok != self.negate, seen))
    }
}

async fn eval_kind(k: &CheckKind, p: &Probe<'_>) -> anyhow::Result<(bool, String)> {
    Ok(match k {
        CheckKind::Expect(s) => p.check(s).await?,
        CheckKind::Cmdb { path, mkey, fields } => {
            let url = match mkey {
                Some(m) => format!(
                    "/api/v2/cmdb/{path}/{}",
                    percent_encoding::utf8_percent_encode(m, percent_encoding::NON_ALPHANUMERIC)
                ),
                None => format!("/api/v2/cmdb/{path}"),
            };
            let (st, v) = p.fgt.call("GET", &url, None).await?;
            if st == 404 {
                return Ok((false, format!("{url}: not found")));
            }
            if st != 200 {
                anyhow::bail!("GET {url}: HTTP {st}");
            }
            let rows = cmdb_rows(&v);
            let hit = rows.iter().any(|r| fields_match(r, fields));
            (
                hit,
                format!(
                    "{} entr{} in {path}",
                    rows.len(),
                    if rows.len() == 1 { "y" } else { "ies" }
                ),
            )
        }
        CheckKind::FazDevice { name, authorized } => {
            let rows = p.faz.get_rows("/dvmdb/device").await?;
            let hit = rows
                .iter()
                .any(|d| device_matches(d, name.as_deref(), *authorized));
            let seen: Vec<String> = rows
                .iter()
                .map(|d| {
                    format!(
                        "{} (authorized {})",
                        d.get("name").and_then(Value::as_str).unwrap_or("?"),
                        d.get("authorized").map(text).unwrap_or_default()
                    )
                })
                .collect();
            (hit, format!("FortiAnalyzer devices: {}", seen.join(", ")))
        }
        CheckKind::EmsFabric { name, authorized } => {
            let v = p.ems.call("GET", "client_certificates/index", None).await?;
            let rows = v
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let hit = rows
                .iter()
                .any(|d| device_matches(d, name.as_deref(), *authorized));
            (hit, format!("EMS knows {} FortiGate(s)", rows.len()))
        }
        CheckKind::FazSetting { url, fields } => {
            let r = p.faz.rpc("get", url, serde_json::json!({}), true).await?;
            let data = r.get("data").cloned().unwrap_or(Value::Null);
            (
                fields_match(&data, fields),
                format!("{url}: {}", crate::exercise::check::short(&data)),
            )
        }
        CheckKind::Console { device, command } => {
            let hits = p.timeline.find(|e| console_matches(e, device, command));
            (
                !hits.is_empty(),
                format!("{} matching command(s)", hits.len()),
            )
        }
    })
}

pub(crate) fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn cmdb_fields_match_as_fortios_answers_them() {
        let policy = json!({"policyid": 1, "srcintf": [{"name": "port3"}], "dstintf": [{"name": "virtual-wan-link"}],
                            "srcaddr": [{"name": "10.115.2.52/32"}], "action": "accept",
                            "webfilter-profile": "monitor-all", "utm-status": "enable"});
        assert!(fields_match(
            &policy,
            &f(
                json!({"srcintf": "port3", "srcaddr": "10.115.2.52/32", "webfilter-profile": "monitor-all", "utm-status": "ENABLE", "policyid": 1})
            )
        ));
        assert!(!fields_match(
            &policy,
            &f(json!({"webfilter-profile": "default"}))
        ));
        assert!(!fields_match(&policy, &f(json!({"av-profile": "default"}))));
        let two = json!({"srcaddr": [{"name": "a"}, {"name": "b"}]});
        assert!(fields_match(&two, &f(json!({"srcaddr": "b a"}))));
        assert!(fields_match(&two, &f(json!({"srcaddr": ["a", "b"]}))));
        assert!(fields_match(&two, &f(json!({"srcaddr": "a"}))));
        assert!(!fields_match(&two, &f(json!({"srcaddr": "c"}))));
        assert!(!fields_match(&two, &f(json!({"srcaddr": ["a"]}))));
        let setting =
            json!({"http_method": "GET", "results": {"status": "enable", "server": "10.115.1.20"}});
        assert_eq!(cmdb_rows(&setting).len(), 1);
        assert!(fields_match(
            &cmdb_rows(&setting)[0],
            &f(json!({"status": "enable", "server": "10.115.1.20"}))
        ));
    }

    #[test]
    fn devices_match_by_name_and_authorization() {
        let faz = json!({"name": "FGT-LAB", "sn": "FGVM01", "os_type": "fos", "authorized": 0});
        assert!(device_matches(&faz, Some("FGT-LAB"), false));
        assert!(!device_matches(&faz, Some("FGT-LAB"), true));
        assert!(device_matches(&faz, Some("FGVM01"), false));
        assert!(!device_matches(&faz, Some("other"), false));
        let fct = json!({"name": "PC-52", "os_type": "fct", "authorized": 1});
        assert!(!device_matches(&fct, None, true));
        let ems =
            json!({"cn": "FGVM01", "name": "FGVM01", "type": "FortiGate", "authorized": true});
        assert!(device_matches(&ems, None, true));
        assert!(!device_matches(&ems, None, false));
    }

    #[test]
    fn console_commands_match_the_command_the_cli_understood() {
        let ev = json!({"kind": "console.command", "source": "fortigate",
                        "command": "diag   debug app fgfmd -1",
                        "resolved": "diagnose debug application fgfmd -1"});
        let wanted = normalize("diagnose debug application");
        assert!(console_matches(&ev, "fortigate", &wanted));
        assert!(console_matches(&ev, "fortigate", "diagnose debug"));
        assert!(!console_matches(&ev, "fortianalyzer", &wanted));
        assert!(!console_matches(
            &ev,
            "fortigate",
            "diagnose test application"
        ));
        assert!(!console_matches(
            &ev,
            "fortigate",
            "diagnose debug application fgfmd -1 extra"
        ));
        // A line the CLI did not understand (an ambiguous abbreviation) never counts, even
        // when its typed words are prefixes of the wanted ones.
        let refused = json!({"kind": "console.command", "source": "fortigate",
                             "command": "diagnose debug application", "resolved": null});
        assert!(!console_matches(&refused, "fortigate", &wanted));
        let old = json!({"kind": "console.command", "source": "fortigate",
                         "command": "diagnose debug application"});
        assert!(!console_matches(&old, "fortigate", &wanted));
    }

    #[test]
    fn checks_parse_and_refuse_bad_bodies() {
        assert!(matches!(
            parse_check("cmdb", &json!({"path": "/firewall/policy/", "fields": {"action": "accept"}})).unwrap(),
            CheckKind::Cmdb { ref path, .. } if path == "firewall/policy"
        ));
        assert!(parse_check("cmdb", &json!({"path": "policy"})).is_err());
        assert!(
            parse_check("cmdb", &json!({"path": "firewall/policy", "feilds": {}}))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(parse_check("faz_setting", &json!({}))
            .unwrap_err()
            .contains("missing `fields`"));
        assert!(parse_check("console", &json!({"device": "ems", "command": "x"})).is_err());
        assert!(parse_check("expect_stitch", &json!({"stitch": "S"})).is_ok());
        assert!(parse_check("fgt_cli", &json!("show")).is_err());
        assert_eq!(
            describe(&parse_check("faz_device", &json!({"name": "FGT-LAB"})).unwrap()),
            "FGT-LAB is authorized on FortiAnalyzer"
        );
    }
}
