//! The scenario format: a lab definition plus `[scenario]` and `[[step]]`s.
//!
//! Each step is one table with exactly one action or expectation key, plus optional `name`,
//! `within` (lab-time deadline of an expectation, default 10 s) and `not = true` (a negative
//! expectation: the condition must stay false for the whole `within`).
//!
//! ```toml
//! [[step]]
//! fetch = { endpoint = "PC-52", url = "http://www.eicar.org/download/eicar.com" }
//!
//! [[step]]
//! expect_compromised = { ip = "10.115.2.52", verdict = "Infected" }
//! within = "5s"
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::labdef::{line_col, DefError, LabDef};

/// `[scenario]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScenarioMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A parsed step.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based position in the file.
    pub index: usize,
    /// Line of the step's table in the file.
    pub line: usize,
    pub name: String,
    pub kind: StepKind,
    /// Deadline of an expectation, lab time.
    pub within: Duration,
    /// Negative expectation.
    pub negate: bool,
}

/// Default deadline of an expectation, lab time.
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(10);

/// What a step does or expects.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// An endpoint fetches a URL (lab surface); optional checks on the answer.
    Fetch {
        endpoint: String,
        url: String,
        expect: FetchExpect,
    },
    /// An endpoint's user enters a quarantine access code (`code = "ems"` reads it from EMS).
    AccessCode {
        endpoint: String,
        code: String,
        expect_ok: Option<bool>,
    },
    /// Acknowledge a compromised host on FortiAnalyzer (JSON-RPC `events/ack`).
    FazAck {
        ip: String,
        comment: String,
    },
    /// EMS admin quarantines / unquarantines an endpoint (EMS REST).
    EmsQuarantine {
        ip: String,
    },
    EmsUnquarantine {
        ip: String,
    },
    /// Apply FortiOS CLI text to the FortiGate.
    FgtCli {
        text: String,
    },
    /// A FortiOS REST call.
    FgtRest {
        method: String,
        path: String,
        body: Option<Value>,
        status: Option<u16>,
    },
    /// Process control.
    Stop {
        device: String,
    },
    Kill {
        device: String,
    },
    Start {
        device: String,
    },
    Restart {
        device: String,
    },
    /// Let lab time pass.
    Wait {
        duration: Duration,
    },
    /// Set the condition of the link between two devices (down/up, latency, loss, rate).
    Link {
        spec: crate::links::LinkSpec,
    },
    /// Save the whole lab as a snapshot (`snapshot = "NAME"`).
    Snapshot {
        name: String,
    },
    /// Restore a snapshot into the running lab (`restore = "NAME"`).
    Restore {
        name: String,
    },
    /// A FortiGate log (memory log API) with these fields.
    ExpectFgtLog {
        path: String,
        fields: serde_json::Map<String, Value>,
    },
    /// A FortiAnalyzer log search with results.
    ExpectFazLog {
        logtype: String,
        filter: String,
        min: u64,
    },
    /// A compromised host on FortiAnalyzer.
    ExpectCompromised {
        ip: String,
        verdict: Option<String>,
        level: Option<String>,
        ack: Option<bool>,
    },
    /// A FortiAnalyzer alert.
    ExpectAlert {
        trigger: Option<String>,
        ip: Option<String>,
    },
    /// A stitch ran (FortiOS automation-stitch stats).
    ExpectStitch {
        stitch: String,
        min_runs: u64,
    },
    /// An endpoint's state on EMS.
    ExpectEms {
        ip: String,
        quarantined: bool,
    },
    /// An endpoint's fetch gives this answer (retried until the deadline).
    ExpectFetch {
        endpoint: String,
        url: String,
        expect: FetchExpect,
    },
    /// An IP is (not) on the FortiGate's banned list.
    ExpectBanned {
        ip: String,
        banned: bool,
    },
    /// An event in the merged timeline.
    ExpectEvent {
        device: Option<String>,
        kind: String,
        fields: serde_json::Map<String, Value>,
    },
}

/// Checks on a fetch answer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FetchExpect {
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    pub status: Option<u16>,
    /// `"none"`, `"fortigate"` or `"quarantine"`.
    #[serde(default)]
    pub blocked_by: Option<String>,
}

impl FetchExpect {
    /// What the fetch must give, in words ("is blocked by the quarantine", "succeeds with
    /// HTTP 200", "fails").
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.blocked_by.as_deref() {
            Some("none") => parts.push("is not blocked".to_string()),
            Some("fortigate") => parts.push("is blocked by the FortiGate".to_string()),
            Some("quarantine") => parts.push("is blocked by the quarantine".to_string()),
            Some(other) => parts.push(format!("is blocked by {other}")),
            None => {}
        }
        match (self.ok, self.status) {
            (Some(true), Some(st)) => parts.push(format!("succeeds with HTTP {st}")),
            (Some(true), None) => parts.push("succeeds".into()),
            (Some(false), Some(st)) => parts.push(format!("fails with HTTP {st}")),
            (Some(false), None) => parts.push("fails".into()),
            (None, Some(st)) => parts.push(format!("answers HTTP {st}")),
            (None, None) => {}
        }
        if parts.is_empty() {
            "any outcome".into()
        } else {
            parts.join(" and ")
        }
    }
}

/// A duration as a person writes it: `90s` → "1m30s", `500ms` → "500ms".
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, n) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= n {
            out.push_str(&format!("{}{unit}", secs / n));
            secs %= n;
        }
    }
    out
}

impl StepKind {
    pub fn is_expectation(&self) -> bool {
        matches!(
            self,
            StepKind::ExpectFgtLog { .. }
                | StepKind::ExpectFazLog { .. }
                | StepKind::ExpectCompromised { .. }
                | StepKind::ExpectAlert { .. }
                | StepKind::ExpectStitch { .. }
                | StepKind::ExpectEms { .. }
                | StepKind::ExpectFetch { .. }
                | StepKind::ExpectBanned { .. }
                | StepKind::ExpectEvent { .. }
        )
    }
}

/// The action and expectation keys a step may have.
pub const STEP_KEYS: &[&str] = &[
    "fetch",
    "access_code",
    "faz_ack",
    "ems_quarantine",
    "ems_unquarantine",
    "fgt_cli",
    "fgt_rest",
    "stop",
    "kill",
    "start",
    "restart",
    "wait",
    "link",
    "snapshot",
    "restore",
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

/// The devices process-control steps may name.
pub const DEVICES: &[&str] = &["fortigate", "fortianalyzer", "ems", "endpoints", "internet"];

/// Parses a duration: `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(p) => (&s[..p], &s[p..]),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    // `try_`: a duration past u64 seconds (`99999999999999999999h`) is an error, not a panic.
    Duration::try_from_secs_f64(secs).ok()
}

/// Parses the steps of a loaded definition. `text` is the file's text (for line numbers).
pub fn parse_steps(def: &LabDef, text: &str) -> Result<Vec<Step>, DefError> {
    let file = def.source.as_str();
    let mut steps = Vec::new();
    for (i, spanned) in def.step.iter().enumerate() {
        let offset = spanned.span().start;
        let (line, _) = line_col(text, offset);
        let table = spanned.get_ref();
        let at = |key: &str, msg: String| {
            // Point at the key inside this step when it can be found.
            let region = &text[offset.min(text.len())..spanned.span().end.min(text.len())];
            let off = region.find(key).map(|p| offset + p).unwrap_or(offset);
            DefError::at(file, text, off, format!("step {}: {msg}", i + 1))
        };
        let mut action: Option<&str> = None;
        for key in table.keys() {
            match key.as_str() {
                "name" | "within" | "not" => {}
                k if STEP_KEYS.contains(&k) => {
                    if let Some(prev) = action {
                        return Err(at(k, format!("has two actions, `{prev}` and `{k}`")));
                    }
                    action = Some(STEP_KEYS.iter().find(|s| **s == k).unwrap());
                }
                other => {
                    return Err(at(
                        other,
                        format!(
                            "unknown key `{other}` (expected one of: {})",
                            STEP_KEYS.join(", ")
                        ),
                    ))
                }
            }
        }
        let Some(action) = action else {
            return Err(at("[[step]]", "has no action or expectation".into()));
        };
        let value = toml_to_json(&toml::Value::Table(table.clone()));
        let body = value.get(action).cloned().unwrap_or(Value::Null);
        let kind = step_kind(action, &body).map_err(|m| at(action, format!("`{action}`: {m}")))?;
        // The step's line is the line of its action key (what a reader looks for).
        let line = {
            let end = spanned.span().end.min(text.len());
            let region = &text[offset.min(end)..end];
            region
                .find(action)
                .map(|p| line_col(text, offset + p).0)
                .unwrap_or(line)
        };
        let within = match table.get("within") {
            None => DEFAULT_WITHIN,
            Some(toml::Value::String(s)) => parse_duration(s)
                .ok_or_else(|| at("within", format!("bad duration {s:?} (use 500ms, 5s, 2m)")))?,
            Some(toml::Value::Integer(n)) if *n >= 0 => Duration::from_secs(*n as u64),
            Some(toml::Value::Float(f)) if *f >= 0.0 => Duration::try_from_secs_f64(*f)
                .map_err(|_| at("within", format!("bad duration {f}")))?,
            Some(_) => return Err(at("within", "bad duration".into())),
        };
        let negate = match table.get("not") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => return Err(at("not", "`not` must be true or false".into())),
        };
        if negate && !kind.is_expectation() {
            return Err(at("not", "`not` applies to expectations only".into()));
        }
        if table.contains_key("within")
            && !kind.is_expectation()
            && !matches!(kind, StepKind::Fetch { .. })
        {
            return Err(at("within", "`within` applies to expectations only".into()));
        }
        let name = match table.get("name") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => describe(&kind),
        };
        steps.push(Step {
            index: i + 1,
            line,
            name,
            kind,
            within,
            negate,
        });
    }
    Ok(steps)
}

pub(crate) fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

fn obj<'a>(v: &'a Value, allowed: &[&str]) -> Result<&'a serde_json::Map<String, Value>, String> {
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

fn req_str(m: &serde_json::Map<String, Value>, k: &str) -> Result<String, String> {
    match m.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{k}` must be a string")),
        None => Err(format!("missing `{k}`")),
    }
}

fn opt_str(m: &serde_json::Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match m.get(k) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{k}` must be a string")),
        None => Ok(None),
    }
}

fn opt_bool(m: &serde_json::Map<String, Value>, k: &str) -> Result<Option<bool>, String> {
    match m.get(k) {
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("`{k}` must be true or false")),
        None => Ok(None),
    }
}

fn fields(m: &serde_json::Map<String, Value>) -> Result<serde_json::Map<String, Value>, String> {
    match m.get("fields") {
        None => Ok(Default::default()),
        Some(Value::Object(f)) => Ok(f.clone()),
        Some(_) => Err("`fields` must be a table".into()),
    }
}

fn fetch_expect(m: &serde_json::Map<String, Value>) -> Result<FetchExpect, String> {
    let status = match m.get("status") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .filter(|s| (100..600).contains(s))
                .ok_or("`status` must be an HTTP status")? as u16,
        ),
        Some(_) => return Err("`status` must be a number".into()),
    };
    let blocked_by = opt_str(m, "blocked_by")?;
    if let Some(b) = &blocked_by {
        if !matches!(b.as_str(), "none" | "fortigate" | "quarantine") {
            return Err(format!(
                "`blocked_by` must be \"none\", \"fortigate\" or \"quarantine\", got {b:?}"
            ));
        }
    }
    Ok(FetchExpect {
        ok: opt_bool(m, "ok")?,
        status,
        blocked_by,
    })
}

fn device_name(v: &Value) -> Result<String, String> {
    let d = v.as_str().ok_or("expects a device name string")?;
    if DEVICES.contains(&d) {
        Ok(d.to_string())
    } else {
        Err(format!(
            "unknown device {d:?} (expected one of: {})",
            DEVICES.join(", ")
        ))
    }
}

pub(crate) fn step_kind(action: &str, v: &Value) -> Result<StepKind, String> {
    Ok(match action {
        "fetch" => {
            let m = obj(v, &["endpoint", "url", "ok", "status", "blocked_by"])?;
            StepKind::Fetch {
                endpoint: req_str(m, "endpoint")?,
                url: req_str(m, "url")?,
                expect: fetch_expect(m)?,
            }
        }
        "expect_fetch" => {
            let m = obj(v, &["endpoint", "url", "ok", "status", "blocked_by"])?;
            StepKind::ExpectFetch {
                endpoint: req_str(m, "endpoint")?,
                url: req_str(m, "url")?,
                expect: fetch_expect(m)?,
            }
        }
        "access_code" => {
            let m = obj(v, &["endpoint", "code", "ok"])?;
            StepKind::AccessCode {
                endpoint: req_str(m, "endpoint")?,
                code: opt_str(m, "code")?.unwrap_or_else(|| "ems".into()),
                expect_ok: opt_bool(m, "ok")?,
            }
        }
        "faz_ack" => {
            let m = obj(v, &["ip", "comment"])?;
            StepKind::FazAck {
                ip: req_str(m, "ip")?,
                comment: opt_str(m, "comment")?.unwrap_or_default(),
            }
        }
        "ems_quarantine" => StepKind::EmsQuarantine {
            ip: req_str(obj(v, &["ip"])?, "ip")?,
        },
        "ems_unquarantine" => StepKind::EmsUnquarantine {
            ip: req_str(obj(v, &["ip"])?, "ip")?,
        },
        "fgt_cli" => StepKind::FgtCli {
            text: v.as_str().ok_or("expects CLI text (a string)")?.to_string(),
        },
        "fgt_rest" => {
            let m = obj(v, &["method", "path", "body", "status"])?;
            let method = opt_str(m, "method")?
                .unwrap_or_else(|| "GET".into())
                .to_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "DELETE") {
                return Err(format!(
                    "method must be GET, POST, PUT or DELETE, got {method}"
                ));
            }
            let path = req_str(m, "path")?;
            if !path.starts_with("/api/v2/") {
                return Err("path must start with /api/v2/".into());
            }
            let status = m.get("status").and_then(Value::as_u64).map(|s| s as u16);
            StepKind::FgtRest {
                method,
                path,
                body: m.get("body").cloned(),
                status,
            }
        }
        "stop" => StepKind::Stop {
            device: device_name(v)?,
        },
        "kill" => StepKind::Kill {
            device: device_name(v)?,
        },
        "start" => StepKind::Start {
            device: device_name(v)?,
        },
        "restart" => StepKind::Restart {
            device: device_name(v)?,
        },
        "wait" => {
            let d = match v {
                Value::String(s) => {
                    parse_duration(s).ok_or_else(|| format!("bad duration {s:?}"))?
                }
                Value::Number(n) => Duration::try_from_secs_f64(n.as_f64().unwrap_or(0.0).max(0.0))
                    .map_err(|_| format!("bad duration {n}"))?,
                _ => return Err("expects a duration like \"30s\"".into()),
            };
            StepKind::Wait { duration: d }
        }
        "link" => {
            let m = obj(v, &["a", "b", "state", "latency", "loss", "rate"])?;
            let loss = match m.get("loss") {
                None => None,
                Some(Value::Number(n)) => n.as_f64(),
                Some(_) => return Err("`loss` must be a number between 0 and 1".into()),
            };
            let spec = crate::links::LinkSpec {
                a: req_str(m, "a")?,
                b: req_str(m, "b")?,
                state: opt_str(m, "state")?,
                latency: opt_str(m, "latency")?,
                loss,
                rate: opt_str(m, "rate")?,
            };
            spec.resolve()?;
            StepKind::Link { spec }
        }
        "snapshot" | "restore" => {
            let name = v
                .as_str()
                .ok_or("expects a snapshot name (a string)")?
                .to_string();
            crate::snapshot::validate_name(&name).map_err(|e| e.to_string())?;
            if action == "snapshot" {
                StepKind::Snapshot { name }
            } else {
                StepKind::Restore { name }
            }
        }
        "expect_fgt_log" => {
            let m = obj(v, &["path", "fields"])?;
            let path = req_str(m, "path")?;
            if !matches!(
                path.as_str(),
                "traffic/forward"
                    | "traffic/local"
                    | "webfilter"
                    | "event/system"
                    | "event/endpoint"
                    | "event/user"
            ) {
                return Err(format!(
                    "unknown log path {path:?} (traffic/forward, webfilter, event/system, ...)"
                ));
            }
            StepKind::ExpectFgtLog {
                path,
                fields: fields(m)?,
            }
        }
        "expect_faz_log" => {
            let m = obj(v, &["logtype", "filter", "min"])?;
            StepKind::ExpectFazLog {
                logtype: req_str(m, "logtype")?,
                filter: opt_str(m, "filter")?.unwrap_or_default(),
                min: m.get("min").and_then(Value::as_u64).unwrap_or(1),
            }
        }
        "expect_compromised" => {
            let m = obj(v, &["ip", "verdict", "level", "ack"])?;
            StepKind::ExpectCompromised {
                ip: req_str(m, "ip")?,
                verdict: opt_str(m, "verdict")?,
                level: opt_str(m, "level")?,
                ack: opt_bool(m, "ack")?,
            }
        }
        "expect_alert" => {
            let m = obj(v, &["trigger", "ip"])?;
            StepKind::ExpectAlert {
                trigger: opt_str(m, "trigger")?,
                ip: opt_str(m, "ip")?,
            }
        }
        "expect_stitch" => {
            let m = obj(v, &["stitch", "runs"])?;
            StepKind::ExpectStitch {
                stitch: req_str(m, "stitch")?,
                min_runs: m.get("runs").and_then(Value::as_u64).unwrap_or(1),
            }
        }
        "expect_ems" => {
            let m = obj(v, &["ip", "quarantined"])?;
            StepKind::ExpectEms {
                ip: req_str(m, "ip")?,
                quarantined: opt_bool(m, "quarantined")?.ok_or("missing `quarantined`")?,
            }
        }
        "expect_banned" => {
            let m = obj(v, &["ip", "banned"])?;
            StepKind::ExpectBanned {
                ip: req_str(m, "ip")?,
                banned: opt_bool(m, "banned")?.unwrap_or(true),
            }
        }
        "expect_event" => {
            let m = obj(v, &["device", "kind", "fields"])?;
            let kind = req_str(m, "kind")?;
            let fields = fields(m)?;
            // Only kinds and fields of the event catalog can ever match.
            let known =
                fortilab_core::events::catalog::parse_kind(&kind).map_err(|e| e.to_string())?;
            fortilab_core::events::catalog::check_field_names(
                known,
                fields.keys().map(String::as_str),
            )
            .map_err(|e| e.to_string())?;
            StepKind::ExpectEvent {
                device: opt_str(m, "device")?,
                kind,
                fields,
            }
        }
        other => return Err(format!("unknown action {other}")),
    })
}

/// A one-line description of a step.
pub fn describe(k: &StepKind) -> String {
    match k {
        StepKind::Fetch { endpoint, url, .. } => format!("{endpoint} fetches {url}"),
        StepKind::AccessCode { endpoint, code, .. } => {
            format!("{endpoint} enters access code ({code})")
        }
        StepKind::FazAck { ip, .. } => {
            format!("acknowledge compromised host {ip} on FortiAnalyzer")
        }
        StepKind::EmsQuarantine { ip } => format!("EMS quarantines {ip}"),
        StepKind::EmsUnquarantine { ip } => format!("EMS unquarantines {ip}"),
        StepKind::FgtCli { text } => {
            format!("FortiGate CLI: {}", text.lines().next().unwrap_or(""))
        }
        StepKind::FgtRest { method, path, .. } => format!("FortiOS REST {method} {path}"),
        StepKind::Stop { device } => format!("stop {device}"),
        StepKind::Kill { device } => format!("kill -9 {device}"),
        StepKind::Start { device } => format!("start {device}"),
        StepKind::Restart { device } => format!("restart {device}"),
        StepKind::Wait { duration } => format!("wait {} (lab time)", human_duration(*duration)),
        StepKind::Link { spec } => {
            let mut parts = vec![spec.state.clone().unwrap_or_else(|| "up".into())];
            if let Some(l) = &spec.latency {
                parts.push(format!("latency {l}"));
            }
            if let Some(l) = spec.loss {
                parts.push(format!("loss {l}"));
            }
            if let Some(r) = &spec.rate {
                parts.push(format!("rate {r}"));
            }
            format!("link {} ↔ {}: {}", spec.a, spec.b, parts.join(", "))
        }
        StepKind::Snapshot { name } => format!("save lab snapshot {name}"),
        StepKind::Restore { name } => format!("restore lab snapshot {name}"),
        StepKind::ExpectFgtLog { path, fields } => {
            format!("FortiGate log {path} {}", Value::Object(fields.clone()))
        }
        StepKind::ExpectFazLog {
            logtype, filter, ..
        } => {
            if filter.trim().is_empty() {
                format!("FortiAnalyzer has a {logtype} log")
            } else {
                format!("FortiAnalyzer has a {logtype} log matching `{filter}`")
            }
        }
        StepKind::ExpectCompromised { ip, verdict, .. } => {
            format!(
                "{ip} compromised on FortiAnalyzer{}",
                verdict
                    .as_ref()
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default()
            )
        }
        StepKind::ExpectAlert { trigger, ip } => format!(
            "FortiAnalyzer alert {} {}",
            trigger.clone().unwrap_or_default(),
            ip.clone().unwrap_or_default()
        ),
        StepKind::ExpectStitch { stitch, min_runs } => {
            if *min_runs == 1 {
                format!("stitch \"{stitch}\" ran at least once")
            } else {
                format!("stitch \"{stitch}\" ran at least {min_runs} times")
            }
        }
        StepKind::ExpectEms { ip, quarantined } => format!(
            "EMS shows {ip} {}",
            if *quarantined {
                "quarantined"
            } else {
                "not quarantined"
            }
        ),
        StepKind::ExpectFetch {
            endpoint,
            url,
            expect,
        } => format!("{endpoint} fetches {url}: {}", expect.describe()),
        StepKind::ExpectBanned { ip, banned } => format!(
            "{ip} {}on the FortiGate banned list",
            if *banned { "" } else { "not " }
        ),
        StepKind::ExpectEvent { device, kind, .. } => format!(
            "event {kind} from {}",
            device.clone().unwrap_or_else(|| "any device".into())
        ),
    }
}

/// Loads and checks a scenario file: the lab definition and every step.
pub fn load(path: &std::path::Path) -> Result<(LabDef, Vec<Step>), DefError> {
    let def = LabDef::load(path)?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if crate::exercise::is_exercise(&def) {
        let offset = text
            .find("[exercise]")
            .or_else(|| text.find("[[task]]"))
            .unwrap_or(0);
        return Err(DefError::at(
            &def.source,
            &text,
            offset,
            "this is an exercise (it has [exercise] or [[task]]): start it with `fortilab exercise FILE`",
        ));
    }
    let steps = parse_steps(&def, &text)?;
    // Endpoints named by steps must exist.
    let names: Vec<String> = def.endpoint_specs().into_iter().map(|e| e.name).collect();
    for s in &steps {
        let ep = match &s.kind {
            StepKind::Fetch { endpoint, .. }
            | StepKind::ExpectFetch { endpoint, .. }
            | StepKind::AccessCode { endpoint, .. } => Some(endpoint),
            _ => None,
        };
        if let Some(ep) = ep {
            if !names.contains(ep) {
                return Err(DefError {
                    file: def.source.clone(),
                    line: s.line,
                    column: 1,
                    message: format!(
                        "step {}: no endpoint named {ep:?} in this lab (have: {})",
                        s.index,
                        names.join(", ")
                    ),
                });
            }
        }
    }
    Ok((def, steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_descriptions_are_sentences() {
        let fetch = StepKind::ExpectFetch {
            endpoint: "PC-52".into(),
            url: "http://www.example.com/".into(),
            expect: FetchExpect {
                ok: Some(false),
                status: None,
                blocked_by: Some("quarantine".into()),
            },
        };
        assert_eq!(
            describe(&fetch),
            "PC-52 fetches http://www.example.com/: is blocked by the quarantine and fails"
        );
        let stitch = StepKind::ExpectStitch {
            stitch: "Compromised Host Quarantine".into(),
            min_runs: 1,
        };
        assert_eq!(
            describe(&stitch),
            "stitch \"Compromised Host Quarantine\" ran at least once"
        );
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        for k in [fetch, stitch] {
            assert!(!describe(&k).contains("Some("), "{}", describe(&k));
        }
    }

    fn parse(text: &str) -> Result<Vec<Step>, DefError> {
        let def = LabDef::parse("s.toml", text)?;
        parse_steps(&def, text)
    }

    #[test]
    fn parses_actions_and_expectations() {
        let steps = parse(
            r#"
[scenario]
name = "seed"

[[step]]
fetch = { endpoint = "PC-52", url = "http://www.eicar.org/download/eicar.com", ok = true }

[[step]]
expect_compromised = { ip = "10.115.2.52", verdict = "Infected" }
within = "5s"

[[step]]
expect_stitch = { stitch = "Compromised Host Quarantine" }
not = true
within = "500ms"
"#,
        )
        .unwrap();
        assert_eq!(steps.len(), 3);
        assert!(matches!(steps[0].kind, StepKind::Fetch { .. }));
        assert_eq!(steps[1].within, Duration::from_secs(5));
        assert!(steps[2].negate);
        assert_eq!(steps[2].within, Duration::from_millis(500));
        assert_eq!(steps[1].line, 9);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = parse("[[step]]\nfecth = { endpoint = \"PC-52\" }\n").unwrap_err();
        assert_eq!((e.line, e.file.as_str()), (2, "s.toml"));
        assert!(e.message.contains("unknown key `fecth`"), "{}", e.message);
        let e = parse("[[step]]\nfetch = { endpoint = \"PC-52\" }\n").unwrap_err();
        assert!(e.message.contains("missing `url`"), "{}", e.message);
        let e = parse("[[step]]\nwait = \"5s\"\nnot = true\n").unwrap_err();
        assert!(e.message.contains("expectations only"), "{}", e.message);
        let e = parse("[[step]]\nstop = \"fortigat\"\n").unwrap_err();
        assert!(e.message.contains("unknown device"), "{}", e.message);
    }

    #[test]
    fn link_steps_parse_and_bad_ones_name_the_line() {
        let steps = parse(
            r#"
[[step]]
link = { a = "fortigate", b = "fortianalyzer", state = "down" }

[[step]]
link = { a = "fortigate", b = "fortianalyzer", latency = "200ms", loss = 0.1, rate = "64kbit" }
"#,
        )
        .unwrap();
        let StepKind::Link { spec } = &steps[1].kind else {
            panic!("{:?}", steps[1].kind)
        };
        assert_eq!(spec.rate.as_deref(), Some("64kbit"));
        assert_eq!(
            steps[1].name,
            "link fortigate ↔ fortianalyzer: up, latency 200ms, loss 0.1, rate 64kbit"
        );
        let e = parse("[[step]]\n\nlink = { a = \"fortigate\", b = \"faz\", rate = \"fast\" }\n")
            .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("bad rate"), "{}", e.message);
        let e = parse("[[step]]\nlink = { a = \"fortigate\", b = \"faz\", loss = \"10%\" }\n")
            .unwrap_err();
        assert!(e.message.contains("loss"), "{}", e.message);
        let e = parse("[[step]]\nlink = { a = \"fortigate\", b = \"router\" }\n").unwrap_err();
        assert!(e.message.contains("unknown device"), "{}", e.message);
    }

    #[test]
    fn snapshot_steps_parse_and_bad_names_name_the_line() {
        let steps =
            parse("[[step]]\nsnapshot = \"task-1\"\n\n[[step]]\nrestore = \"task-1\"\n").unwrap();
        assert!(matches!(&steps[0].kind, StepKind::Snapshot { name } if name == "task-1"));
        assert!(matches!(&steps[1].kind, StepKind::Restore { name } if name == "task-1"));
        assert_eq!(steps[0].name, "save lab snapshot task-1");
        assert_eq!(steps[1].name, "restore lab snapshot task-1");
        let e = parse("[[step]]\n\nrestore = \"../up\"\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("bad snapshot name"), "{}", e.message);
        let e = parse("[[step]]\nsnapshot = 3\n").unwrap_err();
        assert!(e.message.contains("snapshot name"), "{}", e.message);
    }

    #[test]
    fn expect_event_takes_catalog_kinds_and_fields_only() {
        let steps = parse(
            "[[step]]\nexpect_event = { device = \"FGT-LAB\", kind = \"ioc.ack\", fields = { host = \"10.115.2.52\" } }\n",
        )
        .unwrap();
        assert!(matches!(&steps[0].kind, StepKind::ExpectEvent { kind, .. } if kind == "ioc.ack"));
        let e = parse("[[step]]\nname = \"x\"\n\nexpect_event = { kind = \"stich.run\" }\n")
            .unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("s.toml", 4));
        assert!(
            e.message
                .contains(r#"unknown event kind "stich.run" (did you mean "stitch.run"?)"#),
            "{}",
            e.message
        );
        let e =
            parse("[[step]]\nexpect_event = { kind = \"ioc.ack\", fields = { hots = \"x\" } }\n")
                .unwrap_err();
        assert!(
            e.message
                .contains(r#"unknown field `hots` (did you mean "host"?)"#),
            "{}",
            e.message
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("x"), None);
    }
}

#[cfg(test)]
mod library_tests {
    /// Every scenario shipped in `scenarios/library` is valid.
    #[test]
    fn library_scenarios_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("library");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().and_then(|e| e.to_str()) == Some("toml") {
                let (_, steps) = super::load(&p).unwrap_or_else(|e| panic!("{e}"));
                assert!(!steps.is_empty(), "{} has no steps", p.display());
                n += 1;
            }
        }
        assert!(n >= 9, "only {n} scenarios in {}", dir.display());
    }
}
