//! The FortiAnalyzer JSON-RPC API (`POST /jsonrpc`), transport-free: [`handle`] takes the body
//! bytes and the caller's credentials and returns the response JSON.
//!
//! Envelopes (reference faz-ems.md §1, proposals §8.1–8.3): the classic form answers
//! `{"id","result":[{"status":{"code","message"},"url","data"}]}`; the JSON-RPC 2.0 form (request
//! `"jsonrpc":"2.0"`, or a `logview`/`fortiview`/`ioc`/`eventmgmt`/`ueba` URL) answers
//! `{"jsonrpc":"2.0","result":{...,"status":{..}},"id"}` and errors as `{"error":{"code","message"}}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::faz::{Alert, Device, Faz, Session};
use crate::filter::{self, Expr, Op};
use crate::ioc::Host;
use crate::store::{logtype_code, logtype_name, SearchSpec};
use fortilab_core::EventKind;

/// Largest accepted request body.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Who is calling.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `Authorization: Bearer` token or `?access_token=`.
    pub token: Option<String>,
    pub peer: String,
}

/// A status error: (code, message).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiErr(pub i64, pub String);

fn e(code: i64, msg: &str) -> ApiErr {
    ApiErr(code, msg.to_string())
}

const NO_PERMISSION: i64 = -11;
const NOT_EXIST: i64 = -3;
const INVALID_DATA: i64 = -10;
const INVALID_URL: i64 = -6;

/// What a handler returns.
#[derive(Debug, Default)]
pub struct Reply {
    pub data: Option<Value>,
    /// Fields beside `data` (JSON-RPC 2.0 form) / merged into `data` (classic form).
    pub extra: Map<String, Value>,
    /// A login's new session.
    pub session: Option<String>,
}

fn data(v: Value) -> Result<Reply, ApiErr> {
    Ok(Reply {
        data: Some(v),
        ..Default::default()
    })
}

fn ok() -> Result<Reply, ApiErr> {
    Ok(Reply::default())
}

fn extra(v: Value) -> Result<Reply, ApiErr> {
    let extra = match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Ok(Reply {
        data: None,
        extra,
        session: None,
    })
}

/// A log search task (two-step logsearch).
#[derive(Debug, Clone)]
pub struct SearchTask {
    pub spec: SearchSpec,
    pub total: Option<u64>,
    pub logtype: String,
}

/// API-side state: log search tasks and device tasks.
#[derive(Debug, Default)]
pub struct ApiState {
    pub searches: Mutex<HashMap<u64, SearchTask>>,
    pub tasks: Mutex<HashMap<u64, Value>>,
}

const METHODS: &[&str] = &[
    "get", "set", "add", "update", "delete", "exec", "replace", "clone", "move", "unset",
];

fn is_v2_url(url: &str) -> bool {
    [
        "logview/",
        "fortiview/",
        "ioc/",
        "eventmgmt/",
        "ueba/",
        "incidentmgmt/",
        "soar/",
    ]
    .iter()
    .any(|p| url.starts_with(p))
}

/// Handles one request body.
pub fn handle(faz: &Faz, api: &ApiState, body: &[u8], caller: &Caller) -> Value {
    faz.counters.api_requests.fetch_add(1, Ordering::Relaxed);
    if body.len() > MAX_BODY {
        faz.counters.oversized.fetch_add(1, Ordering::Relaxed);
        return rpc_error(Value::Null, -32600, "Invalid Request: body too large");
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(err) => {
            faz.counters.bad_json.fetch_add(1, Ordering::Relaxed);
            return rpc_error(Value::Null, -32700, &format!("Parse error: {err}"));
        }
    };
    let Some(obj) = req.as_object() else {
        faz.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return rpc_error(Value::Null, -32600, "Invalid Request: not an object");
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let v2 = obj.get("jsonrpc").and_then(|v| v.as_str()) == Some("2.0");
    let Some(method) = obj
        .get("method")
        .and_then(|m| m.as_str())
        .map(|m| m.to_ascii_lowercase())
    else {
        faz.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return rpc_error(id, -32600, "Invalid Request: missing method");
    };
    let params: Vec<Value> = match obj.get("params") {
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        Some(Value::Object(o)) => vec![Value::Object(o.clone())],
        _ => {
            faz.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            return rpc_error(
                id,
                -32600,
                "Invalid Request: params must be a non-empty list",
            );
        }
    };
    if !METHODS.contains(&method.as_str()) {
        faz.counters.unknown_methods.fetch_add(1, Ordering::Relaxed);
        return rpc_error(id, -32601, &format!("Method not found: {method}"));
    }
    let body_session = obj
        .get("session")
        .and_then(|s| s.as_str())
        .map(String::from);
    let log_mode = faz.settings.global().jsonapi_log;

    let mut entries = Vec::new();
    let mut new_session = None;
    let mut dict_mode = v2;
    let mut user_for_log = String::from("-");
    for p in &params {
        let Some(p) = p.as_object() else {
            faz.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            entries.push((
                "".to_string(),
                Err(e(
                    -32602,
                    "Invalid params: each params item must be an object",
                )),
            ));
            continue;
        };
        let raw_url = p.get("url").and_then(|u| u.as_str()).unwrap_or("");
        let url = raw_url
            .trim()
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        if is_v2_url(&url) || p.get("apiver").is_some() {
            dict_mode = true;
        }
        let auth = authenticate(faz, caller, body_session.as_deref(), &method, &url);
        let res = match auth {
            Err(err) => {
                faz.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
            Ok(user) => {
                user_for_log = user.clone();
                if matches!(log_mode.as_str(), "all" | "request") {
                    faz.local_event(
                        "JSON API request",
                        "jsonapi-request",
                        &user,
                        &redact(&method, p),
                    );
                }
                dispatch(faz, api, &method, &url, p, &user, body_session.as_deref())
            }
        };
        if let Ok(r) = &res {
            if r.session.is_some() {
                new_session = r.session.clone();
            }
        }
        if let Err(ApiErr(code, _)) = &res {
            faz.counters.api_errors.fetch_add(1, Ordering::Relaxed);
            if *code == INVALID_URL {
                faz.counters.unknown_urls.fetch_add(1, Ordering::Relaxed);
            }
        }
        entries.push((raw_url.to_string(), res));
    }

    let resp = if dict_mode {
        build_v2(id, entries)
    } else {
        build_classic(id, entries, new_session.or(body_session))
    };
    if matches!(log_mode.as_str(), "all" | "response") {
        let mut text = resp.to_string();
        if text.len() > 1024 {
            let mut cut = 1024;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        faz.local_event(
            "JSON API response",
            "jsonapi-response",
            &user_for_log,
            &text,
        );
    }
    faz.bus.emit(
        EventKind::ApiRequest,
        json!({"method": method, "urls": params.iter().map(|p| p.get("url").cloned().unwrap_or(Value::Null)).collect::<Vec<_>>(),
               "peer": caller.peer, "user": user_for_log}),
    );
    resp
}

/// The request as written to the event log, without secrets.
fn redact(method: &str, p: &Map<String, Value>) -> String {
    let mut p = Value::Object(p.clone());
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let lk = k.to_ascii_lowercase();
                    if lk.contains("passw")
                        || lk == "passwd"
                        || lk.contains("secret")
                        || lk.contains("token")
                        || lk.contains("key")
                    {
                        *x = json!("******");
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut p);
    let mut s = format!("{method} {p}");
    if s.len() > 1024 {
        let mut cut = 1024;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn rpc_error(id: Value, code: i64, msg: &str) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": msg}, "id": id})
}

fn status_json(code: i64, msg: &str) -> Value {
    json!({"code": code, "message": msg})
}

fn build_classic(
    id: Value,
    entries: Vec<(String, Result<Reply, ApiErr>)>,
    session: Option<String>,
) -> Value {
    let mut result = Vec::new();
    for (url, r) in entries {
        let mut m = Map::new();
        match r {
            Ok(rep) => {
                m.insert("status".into(), status_json(0, "OK"));
                m.insert("url".into(), json!(url));
                let d = match (rep.data, rep.extra.is_empty()) {
                    (Some(d), true) => Some(d),
                    (Some(d), false) => {
                        let mut x = rep.extra;
                        x.insert("data".into(), d);
                        Some(Value::Object(x))
                    }
                    (None, false) => Some(Value::Object(rep.extra)),
                    (None, true) => None,
                };
                if let Some(d) = d {
                    m.insert("data".into(), d);
                }
            }
            Err(ApiErr(code, msg)) => {
                m.insert("status".into(), status_json(code, &msg));
                m.insert("url".into(), json!(url));
            }
        }
        result.push(Value::Object(m));
    }
    let mut out = Map::new();
    out.insert("id".into(), id);
    out.insert("result".into(), Value::Array(result));
    if let Some(s) = session {
        out.insert("session".into(), json!(s));
    }
    Value::Object(out)
}

fn build_v2(id: Value, entries: Vec<(String, Result<Reply, ApiErr>)>) -> Value {
    let mut results = Vec::new();
    for (_, r) in entries {
        match r {
            Ok(rep) => {
                let mut m = rep.extra;
                if let Some(d) = rep.data {
                    m.insert("data".into(), d);
                }
                // A handler's own `status` (a rescan task's state) is kept: clients accept a
                // string status (reference §1.1).
                m.entry("status")
                    .or_insert_with(|| status_json(0, "succeeded"));
                results.push(Ok(Value::Object(m)));
            }
            Err(ApiErr(code, msg)) => results.push(Err((code, msg))),
        }
    }
    if results.len() == 1 {
        return match results.pop().unwrap() {
            Ok(v) => json!({"jsonrpc": "2.0", "result": v, "id": id}),
            Err((code, msg)) => {
                json!({"jsonrpc": "2.0", "error": {"code": code, "message": msg}, "id": id})
            }
        };
    }
    let list: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(v) => v,
            Err((code, msg)) => json!({"status": status_json(code, &msg)}),
        })
        .collect();
    json!({"jsonrpc": "2.0", "result": list, "id": id})
}

/// Checks credentials; returns the user name.
fn authenticate(
    faz: &Faz,
    caller: &Caller,
    session: Option<&str>,
    method: &str,
    url: &str,
) -> Result<String, ApiErr> {
    if method == "exec" && url == "sys/login/user" {
        return Ok("-".into());
    }
    if let Some(tok) = &caller.token {
        // A valid API key wins; any body session is then ignored (proposal §8.1).
        if constant_time_eq(tok.as_bytes(), faz.id.api_key.as_bytes()) {
            return Ok("api-user".into());
        }
        return Err(e(NO_PERMISSION, "No permission for the resource"));
    }
    let Some(sid) = session.filter(|s| !s.is_empty()) else {
        return Err(e(NO_PERMISSION, "No permission for the resource"));
    };
    let now = faz.now();
    let mut sessions = faz.admins.sessions();
    let timeout = faz.id.session_timeout;
    match sessions.get_mut(sid) {
        Some(s) if now - s.last_used <= timeout => {
            s.last_used = now;
            Ok(s.user.clone())
        }
        Some(_) => {
            sessions.remove(sid);
            Err(e(NO_PERMISSION, "No permission for the resource"))
        }
        None => Err(e(NO_PERMISSION, "No permission for the resource")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An argument beside `url`, or under `data` (classic write methods).
fn arg<'a>(p: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    p.get(key).or_else(|| {
        p.get("data")
            .and_then(|d| d.as_object())
            .and_then(|d| d.get(key))
    })
}

fn arg_str<'a>(p: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    arg(p, key).and_then(|v| v.as_str())
}

fn arg_u64(p: &Map<String, Value>, key: &str) -> Option<u64> {
    arg(p, key).and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    })
}

fn enable_str(b: bool) -> &'static str {
    if b {
        "enable"
    } else {
        "disable"
    }
}

fn parse_enable(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        Value::String(s) => match s.as_str() {
            "enable" | "enabled" | "1" => Some(true),
            "disable" | "disabled" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn dispatch(
    faz: &Faz,
    api: &ApiState,
    method: &str,
    url: &str,
    p: &Map<String, Value>,
    user: &str,
    session: Option<&str>,
) -> Result<Reply, ApiErr> {
    let seg: Vec<&str> = url.split('/').filter(|s| !s.is_empty()).collect();
    let read = method == "get";
    let write = matches!(method, "set" | "update" | "add" | "replace");
    match (method, seg.as_slice()) {
        ("exec", ["sys", "login", "user"]) => login(faz, p),
        ("exec", ["sys", "logout"]) => {
            if let Some(s) = session {
                faz.admins.sessions().remove(s);
            }
            ok()
        }
        (_, ["sys", "status"]) | (_, ["cli", "global", "system", "status"]) if read => {
            data(system_status(faz))
        }
        (_, ["sys", "ha", "status"]) if read => {
            data(json!({"mode": "standalone", "cluster-status": "n/a", "peer": []}))
        }
        (_, ["cli", "global", "system", "global"]) if read => data(global_json(faz)),
        (_, ["cli", "global", "system", "global"]) if write => set_global(faz, p),
        (_, ["cli", "global", "system", "log", "ioc"]) if read => data(ioc_settings_json(faz)),
        (_, ["cli", "global", "system", "log", "ioc"]) if write => set_ioc_settings(faz, p),
        (_, ["cli", "global", "system", "admin", "user", rest @ ..]) if rest.len() <= 1 => {
            crate::console::admin_rpc(faz, method, rest.first().copied(), p, user)
                .map(|v| match v {
                    Some(v) => Reply {
                        data: Some(v),
                        ..Default::default()
                    },
                    None => Reply::default(),
                })
                .map_err(|(code, msg)| ApiErr(code, msg))
        }
        (_, ["dvmdb", "adom"]) if read => data(json!([adom_json()])),
        (_, ["dvmdb", "adom", adom]) if read => {
            check_adom(adom)?;
            data(adom_json())
        }
        (_, ["dvmdb", "adom", adom, "device"]) if read => {
            check_adom(adom)?;
            data(Value::Array(device_list(faz, true)))
        }
        (_, ["dvmdb", "device"]) if read => data(Value::Array(device_list(faz, false))),
        (_, ["dvmdb", "adom", adom, "device", name]) if read => {
            check_adom(adom)?;
            find_device(faz, name)
                .map(|d| data(device_json(&d)))
                .unwrap_or_else(|| Err(e(NOT_EXIST, "Object does not exist")))
        }
        (_, ["dvmdb", "device", name]) if read => find_device(faz, name)
            .map(|d| data(device_json(&d)))
            .unwrap_or_else(|| Err(e(NOT_EXIST, "Object does not exist"))),
        ("update" | "set", ["dvmdb", "adom", adom, "device", name]) => {
            check_adom(adom)?;
            let Some(d) = find_device(faz, name) else {
                return Err(e(NOT_EXIST, "Object does not exist"));
            };
            let new_name = arg_str(p, "name").map(String::from);
            let desc = arg_str(p, "desc").map(String::from);
            let d = faz.authorize_device(
                &d.sn,
                new_name.as_deref().or(Some(&d.name)),
                desc.as_deref(),
                adom,
            );
            data(device_json(&d))
        }
        ("exec", ["dvm", "cmd", "add", "device"]) => add_device(faz, api, p),
        ("exec", ["dvm", "cmd", "del", "device"]) => {
            let dev = arg(p, "device").and_then(|d| {
                d.as_str()
                    .map(String::from)
                    .or_else(|| d.get("name").and_then(|n| n.as_str()).map(String::from))
            });
            let Some(dev) = dev else {
                return Err(e(INVALID_DATA, "The data is invalid for selected url"));
            };
            if faz.delete_device(&dev) {
                let tid = new_task(api, "del_device", &dev);
                data(json!({"taskid": tid}))
            } else {
                Err(e(NOT_EXIST, "Object does not exist"))
            }
        }
        (_, ["task", "task"]) if read => {
            let tasks = api.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<Value> = tasks.values().cloned().collect();
            v.sort_by_key(|t| t["id"].as_u64());
            data(Value::Array(v))
        }
        (_, ["task", "task", id]) | (_, ["task", "task", id, "line"]) if read => {
            let tasks = api.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let t = id.parse::<u64>().ok().and_then(|i| tasks.get(&i).cloned());
            match t {
                Some(t) if seg.len() == 4 => data(t["line"].clone()),
                Some(t) => data(t),
                None => Err(e(NOT_EXIST, "Object does not exist")),
            }
        }
        ("add", ["logview", "adom", adom, "logsearch"]) => {
            check_adom(adom)?;
            logsearch_add(faz, api, p)
        }
        ("get", ["logview", "adom", adom, "logsearch", "count", tid]) => {
            check_adom(adom)?;
            logsearch_count(faz, api, tid)
        }
        ("get", ["logview", "adom", adom, "logsearch", tid]) => {
            check_adom(adom)?;
            logsearch_get(faz, api, tid, p)
        }
        ("delete", ["logview", "adom", adom, "logsearch", tid]) => {
            check_adom(adom)?;
            let tid: u64 = tid
                .parse()
                .map_err(|_| e(NOT_EXIST, "Object does not exist"))?;
            match api
                .searches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&tid)
            {
                Some(_) => extra(json!({"tid": tid})),
                None => Err(e(NOT_EXIST, "Object does not exist")),
            }
        }
        ("get", ["logview", "adom", adom, "logfields"]) => {
            check_adom(adom)?;
            let lt = arg_str(p, "logtype").unwrap_or("traffic");
            if logtype_code(lt).is_none() {
                return Err(e(
                    INVALID_DATA,
                    &format!("Invalid params: logtype {lt:?} not supported"),
                ));
            }
            data(logfields(lt))
        }
        ("get", ["ioc", "license", "state"]) => data(json!({
            "license": "valid", "status": "licensed", "contract": "PBDS", "expires": "2038-01-01",
            "tidb-version": faz.ioc.engine().tidb.version,
        })),
        ("update" | "set" | "exec", ["ioc", "adom", adom, "events", "ack"]) => {
            check_adom(adom)?;
            events_ack(faz, p, user)
        }
        ("get", ["ioc", "adom", adom, "compromised-hosts"]) => {
            check_adom(adom)?;
            compromised_hosts(faz, p, None)
        }
        ("get", ["ioc", "adom", adom, "compromised-hosts", epid]) => {
            check_adom(adom)?;
            compromised_hosts(faz, p, Some(epid))
        }
        ("add" | "exec", ["ioc", "adom", adom, "rescan", "run"]) => {
            check_adom(adom)?;
            rescan_add(faz, p)
        }
        ("get", ["ioc", "adom", adom, "rescan", "run"]) => {
            check_adom(adom)?;
            match faz.rescans.current() {
                Some(r) => extra(
                    json!({"tid": r.tid, "percentage": r.percentage, "status": r.status,
                                        "threats-count": r.threats, "scanned-logs": r.scanned}),
                ),
                None => extra(
                    json!({"tid": 0, "percentage": 100, "status": "idle", "threats-count": 0}),
                ),
            }
        }
        ("get", ["ioc", "adom", adom, "rescan", "run", tid]) => {
            check_adom(adom)?;
            let tid: u64 = tid
                .parse()
                .map_err(|_| e(NOT_EXIST, "Object does not exist"))?;
            match faz.rescans.get(tid) {
                Some(r) => extra(
                    json!({"tid": r.tid, "percentage": r.percentage, "status": r.status,
                                        "threats-count": r.threats, "scanned-logs": r.scanned}),
                ),
                None => Err(e(NOT_EXIST, "Object does not exist")),
            }
        }
        ("delete", ["ioc", "adom", adom, "rescan", "run", tid]) => {
            check_adom(adom)?;
            let tid: u64 = tid
                .parse()
                .map_err(|_| e(NOT_EXIST, "Object does not exist"))?;
            match faz.rescans.cancel(tid) {
                Some(status) => extra(json!({"tid": tid, "status": status})),
                None => Err(e(NOT_EXIST, "Object does not exist")),
            }
        }
        ("get", ["ioc", "adom", adom, "rescan", "history"]) => {
            check_adom(adom)?;
            let v: Vec<Value> = faz
                .rescans
                .list()
                .iter()
                .rev()
                .map(|r| {
                    let mut j = serde_json::to_value(r).unwrap_or(Value::Null);
                    j["start-time"] = json!(faz.display_time(r.start));
                    j["end-time"] = json!(r.end.map(|t| faz.display_time(t)));
                    j
                })
                .collect();
            data(Value::Array(v))
        }
        (_, ["config", "adom", adom, "ueba", "ioc-rescan"]) => {
            check_adom(adom)?;
            let key = format!("ueba:ioc-rescan:{adom}");
            if read {
                let v = faz
                    .store
                    .kv_get(&key)
                    .ok()
                    .flatten()
                    .and_then(|s| serde_json::from_str(&s).ok());
                data(v.unwrap_or(json!({"last-ndays": 14, "logtype": 7, "status": 1})))
            } else {
                let d = arg(p, "data").cloned().unwrap_or(json!({}));
                let _ = faz.store.kv_put(&[(key, Some(d.to_string()))]);
                ok()
            }
        }
        ("get", ["eventmgmt", "adom", adom, "alerts"]) => {
            check_adom(adom)?;
            alerts_get(faz, p, false)
        }
        ("get", ["eventmgmt", "adom", adom, "alerts", "count"]) => {
            check_adom(adom)?;
            alerts_get(faz, p, true)
        }
        (
            "update" | "set",
            ["eventmgmt", "adom", adom, "alerts", what @ ("ack" | "unack" | "comment")],
        ) => {
            check_adom(adom)?;
            let ids: Vec<String> = match arg(p, "alertid") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Number(n)) => vec![n.to_string()],
                _ => return Err(e(INVALID_DATA, "Invalid params: alertid is required")),
            };
            let by = arg_str(p, "update-by").unwrap_or(user);
            let n = match *what {
                "ack" => faz.update_alerts(&ids, Some(true), None, by),
                "unack" => faz.update_alerts(&ids, Some(false), None, by),
                _ => {
                    let c = arg_str(p, "comment")
                        .ok_or_else(|| e(INVALID_DATA, "Invalid params: comment is required"))?;
                    faz.update_alerts(&ids, None, Some(c), by)
                }
            };
            if n == 0 {
                return Err(e(NOT_EXIST, "Object does not exist"));
            }
            extra(json!({"updated": n}))
        }
        _ => {
            let known = [
                "sys/",
                "cli/",
                "dvmdb/",
                "dvm/",
                "task/",
                "logview/",
                "ioc/",
                "eventmgmt/",
                "config/",
            ];
            if known.iter().any(|k| url.starts_with(k)) && !url.is_empty() {
                // A known tree but not this method/URL combination.
                Err(e(INVALID_URL, &format!("Invalid url: {method} {url}")))
            } else {
                Err(e(INVALID_URL, &format!("Invalid url: {url}")))
            }
        }
    }
}

fn check_adom(adom: &str) -> Result<(), ApiErr> {
    if adom == "root" {
        Ok(())
    } else {
        Err(e(NOT_EXIST, "Object does not exist"))
    }
}

fn login(faz: &Faz, p: &Map<String, Value>) -> Result<Reply, ApiErr> {
    let user = arg_str(p, "user").unwrap_or("");
    let pass = arg_str(p, "passwd")
        .or_else(|| arg_str(p, "password"))
        .unwrap_or("");
    // Accounts of `config system admin user` (the ready file's admin among them) with a JSON
    // API permission.
    let account = faz
        .check_admin(user, pass)
        .filter(|a| a.rpc_permit != "none");
    if account.is_none() {
        faz.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        faz.bus
            .emit(EventKind::ApiLoginFailed, json!({"user": user}));
        crate::console::log_login(faz, user, "jsonrpc", None, false);
        return Err(e(-22, "Login fail"));
    }
    let now = faz.now();
    let mut sessions = faz.admins.sessions();
    sessions.retain(|_, s| now - s.last_used <= faz.id.session_timeout);
    if sessions.len() >= faz.id.max_sessions {
        return Err(e(
            -22,
            "Login fail: maximum number of login sessions reached",
        ));
    }
    let sid = format!("{}==", faz.token(22));
    sessions.insert(
        sid.clone(),
        Session {
            user: user.to_string(),
            last_used: now,
        },
    );
    drop(sessions);
    faz.bus.emit(EventKind::ApiLogin, json!({"user": user}));
    Ok(Reply {
        data: None,
        extra: Map::new(),
        session: Some(sid),
    })
}

fn system_status(faz: &Faz) -> Value {
    let v = &faz.id.version;
    let mut it = v.split('.').map(|x| x.parse::<i64>().unwrap_or(0));
    let (ma, mi, pa) = (
        it.next().unwrap_or(6),
        it.next().unwrap_or(4),
        it.next().unwrap_or(5),
    );
    let hostname = faz.settings.global().hostname;
    json!({
        "Admin Domain Configuration": "Enabled",
        "BIOS version": "04000002",
        "Branch Point": "2405",
        "Build": "2405",
        "Current Time": faz.display_time(faz.now()),
        "Daylight Time Saving": "Yes",
        "FIPS Mode": "Disabled",
        "HA Mode": "Stand Alone",
        "Hostname": hostname,
        "License Status": "Valid",
        "Major": ma,
        "Minor": mi,
        "Patch": pa,
        "Max Number of Admin Domains": 5,
        "Offline Mode": "Disabled",
        "Platform Full Name": "FortiAnalyzer-VM64",
        "Platform Type": "FAZVM64",
        "Release Version Information": " (GA)",
        "Serial Number": faz.id.serial,
        "Time Zone": crate::tz::display(&faz.tz_code()).unwrap_or_default(),
        "Version": format!("v{v}-build2405 210419 (GA)"),
        "x86-64 Applications": "Yes",
    })
}

fn global_json(faz: &Faz) -> Value {
    let g = faz.settings.global();
    json!({
        "hostname": g.hostname, "timezone": faz.tz_code(), "jsonapi-log": g.jsonapi_log,
        "adom-status": g.adom_status, "adom-mode": "normal", "workspace-mode": g.workspace_mode,
        "admintimeout": faz.id.session_timeout / 60, "language": "english", "log-mode": "analyzer",
    })
}

fn set_global(faz: &Faz, p: &Map<String, Value>) -> Result<Reply, ApiErr> {
    let mut g = faz.settings.global();
    if let Some(v) = arg(p, "jsonapi-log") {
        let s = v.as_str().unwrap_or("");
        if !matches!(s, "all" | "request" | "response" | "disable") {
            return Err(e(INVALID_DATA, "The data is invalid for selected url: jsonapi-log must be all|request|response|disable"));
        }
        g.jsonapi_log = s.to_string();
    }
    if let Some(h) = arg_str(p, "hostname") {
        if h.trim().is_empty() || h.len() > 35 {
            return Err(e(
                INVALID_DATA,
                "The data is invalid for selected url: hostname",
            ));
        }
        g.hostname = h.to_string();
        faz.bus.set_device(h);
    }
    if let Some(v) = arg(p, "timezone") {
        // A two-digit zone code (`04`), as a string or a number.
        let t = match v {
            Value::Number(n) => format!("{:02}", n.as_u64().unwrap_or(999)),
            Value::String(s) => s.trim().to_string(),
            _ => String::new(),
        };
        if crate::tz::by_code(&t).is_none() {
            return Err(e(
                INVALID_DATA,
                "The data is invalid for selected url: timezone must be a zone code such as 04",
            ));
        }
        g.timezone = t;
    }
    let _ = faz
        .store
        .kv_put(&[("settings:global".into(), serde_json::to_string(&g).ok())]);
    faz.settings.set_global(g);
    ok()
}

fn ioc_settings_json(faz: &Faz) -> Value {
    let s = faz.ioc.settings();
    json!({
        "status": enable_str(s.status), "notification": enable_str(s.notification),
        "notification-throttle": s.notification_throttle, "rescan-status": enable_str(s.rescan_status),
        "rescan-run-at": s.rescan_run_at, "rescan-max-runner": s.rescan_max_runner,
        "suspicious-threshold": s.suspicious_threshold,
    })
}

fn set_ioc_settings(faz: &Faz, p: &Map<String, Value>) -> Result<Reply, ApiErr> {
    let mut s = faz.ioc.settings();
    let bad = |k: &str| {
        e(
            INVALID_DATA,
            &format!("The data is invalid for selected url: {k}"),
        )
    };
    for k in ["status", "notification", "rescan-status"] {
        if let Some(v) = arg(p, k) {
            let b = parse_enable(v).ok_or_else(|| bad(k))?;
            match k {
                "status" => s.status = b,
                "notification" => s.notification = b,
                _ => s.rescan_status = b,
            }
        }
    }
    let num = |k: &str, lo: u64, hi: u64| -> Result<Option<u32>, ApiErr> {
        match arg(p, k) {
            None => Ok(None),
            Some(v) => {
                let n = v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| bad(k))?;
                if n < lo || n > hi {
                    return Err(bad(k));
                }
                Ok(Some(n as u32))
            }
        }
    };
    if let Some(n) = num("notification-throttle", 1, 10080)? {
        s.notification_throttle = n;
    }
    if let Some(n) = num("rescan-run-at", 0, 24)? {
        s.rescan_run_at = n;
    }
    if let Some(n) = num("rescan-max-runner", 1, 32)? {
        s.rescan_max_runner = n;
    }
    if let Some(n) = num("suspicious-threshold", 1, 1_000_000)? {
        s.suspicious_threshold = n;
    }
    let _ = faz
        .store
        .kv_put(&[("settings:ioc".into(), serde_json::to_string(&s).ok())]);
    faz.ioc.set_settings(s);
    ok()
}

fn adom_json() -> Value {
    json!({"name": "root", "oid": 3, "desc": "", "os_ver": "6.0", "mr": 4, "restricted_prds": "fos",
           "state": 1, "mode": "gms", "flags": "no_vpn_console", "uuid": "f5d5b8f6-0000-4000-8000-000000000003"})
}

fn device_list(faz: &Faz, authorized_only: bool) -> Vec<Value> {
    faz.devices
        .list()
        .iter()
        .filter(|d| !authorized_only || d.authorized)
        .map(device_json)
        .collect()
}

fn find_device(faz: &Faz, key: &str) -> Option<Device> {
    faz.devices.find(key)
}

fn device_json(d: &Device) -> Value {
    let mut it = d.version.split('.').map(|x| x.parse::<i64>().unwrap_or(0));
    let (ma, mi, pa) = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    json!({
        "name": d.name, "hostname": d.hostname, "sn": d.sn, "platform_str": d.platform,
        "os_type": if d.device_type == "forticlient" { "fct" } else { "fos" },
        "os_ver": format!("{ma}.0"), "mr": mi, "patch": pa, "version": ma * 100 + mi * 10 + pa,
        "ip": d.ip, "conn_status": if d.connected { 1 } else { 2 },
        "conn_mode": if d.via == "syslog" { "syslog" } else { "active" },
        "mgmt_mode": if d.authorized { "faz" } else { "unreg" },
        "authorized": d.authorized as u8, "dev_status": if d.authorized { "installed" } else { "unknown" },
        "adom": d.adom, "vdom": [{"name": d.vdom, "status": null}], "desc": d.desc,
        "device_type": d.device_type, "last_checked": d.last_seen, "logdisk_size": 0,
        "meta fields": {},
    })
}

fn new_task(api: &ApiState, title: &str, target: &str) -> u64 {
    let mut tasks = api.tasks.lock().unwrap_or_else(|e| e.into_inner());
    let id = tasks.keys().max().copied().unwrap_or(0) + 1;
    let line = json!([{"name": target, "oid": id, "state": "done", "percent": 100, "detail": "success", "err": 0}]);
    tasks.insert(
        id,
        json!({"id": id, "title": title, "state": "done", "percent": 100, "num_done": 1,
                            "num_err": 0, "num_lines": 1, "num_warn": 0, "src": "device manager",
                            "line": line}),
    );
    if tasks.len() > 1000 {
        let min = *tasks.keys().min().unwrap_or(&0);
        tasks.remove(&min);
    }
    id
}

fn add_device(faz: &Faz, api: &ApiState, p: &Map<String, Value>) -> Result<Reply, ApiErr> {
    let adom = arg_str(p, "adom").unwrap_or("root").to_string();
    check_adom(&adom)?;
    let dev = arg(p, "device")
        .and_then(|d| d.as_object())
        .ok_or_else(|| {
            e(
                INVALID_DATA,
                "The data is invalid for selected url: device is required",
            )
        })?;
    let sn = dev.get("sn").and_then(|v| v.as_str()).map(String::from);
    let name = dev.get("name").and_then(|v| v.as_str()).map(String::from);
    let desc = dev.get("desc").and_then(|v| v.as_str()).map(String::from);
    // Authorize by serial, or by the name of a device waiting unauthorized.
    let sn = match sn {
        Some(s) if !s.trim().is_empty() => s,
        _ => match name.as_deref().and_then(|n| find_device(faz, n)) {
            Some(d) => d.sn,
            None => {
                return Err(e(
                    INVALID_DATA,
                    "The data is invalid for selected url: device.sn is required",
                ))
            }
        },
    };
    if sn.len() > 64
        || !sn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(e(
            INVALID_DATA,
            "The data is invalid for selected url: device.sn",
        ));
    }
    // What the add names about the device (`os_ver` "6.0" + `mr` 4 + `patch` = 6.4.x,
    // `platform_str`, `ip`, `os_type`) is what the device list shows, until the device
    // itself reports otherwise over the log channel.
    let major = dev.get("os_ver").and_then(|v| {
        v.as_str()
            .and_then(|s| {
                s.split('.')
                    .next()
                    .and_then(|m| m.trim().parse::<u64>().ok())
            })
            .or_else(|| v.as_u64())
    });
    let num = |k: &str| {
        dev.get(k).and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
    };
    let version = major.map(|ma| {
        format!(
            "{ma}.{}.{}",
            num("mr").unwrap_or(0),
            num("patch").unwrap_or(0)
        )
    });
    let model = crate::faz::DeviceModel {
        version,
        platform: dev
            .get("platform_str")
            .and_then(|v| v.as_str())
            .map(String::from),
        ip: dev.get("ip").and_then(|v| v.as_str()).map(String::from),
        forticlient: dev
            .get("os_type")
            .and_then(|v| v.as_str())
            .map(|t| t == "fct"),
    };
    faz.authorize_device(&sn, name.as_deref(), desc.as_deref(), &adom);
    let d = faz.set_device_model(&sn, &model);
    let tid = new_task(api, "add_device", &d.name);
    data(json!({"device": device_json(&d), "taskid": tid}))
}

/// Parses a time-range bound: `YYYY-MM-DD HH:MM:SS` (lab-local) or Unix seconds.
fn time_bound(faz: &Faz, v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| fortilab_core::clock::parse_date_time(s, faz.clock.tz_minutes())),
        _ => None,
    }
}

fn logsearch_add(faz: &Faz, api: &ApiState, p: &Map<String, Value>) -> Result<Reply, ApiErr> {
    let logtype = arg_str(p, "logtype").unwrap_or("traffic").to_string();
    let code = logtype_code(&logtype).ok_or_else(|| {
        e(
            INVALID_DATA,
            &format!("Invalid params: logtype {logtype:?} not supported"),
        )
    })?;
    let filter_text = arg_str(p, "filter").unwrap_or("");
    let filter = filter::parse(filter_text)
        .map_err(|err| e(INVALID_DATA, &format!("Invalid params: filter: {err}")))?;
    if let Some(f) = &filter {
        // Compile now so a bad value is reported by the add, not the fetch.
        filter::to_sql(f, false, 0)
            .map_err(|err| e(INVALID_DATA, &format!("Invalid params: filter: {err}")))?;
    }
    let mut devices = Vec::new();
    if let Some(Value::Array(list)) = arg(p, "device") {
        for d in list {
            let id = d
                .get("devid")
                .or_else(|| d.get("devname"))
                .or_else(|| d.get("csfname"))
                .and_then(|v| v.as_str());
            match id {
                Some("All_Devices") | Some("All_FortiGates") | Some("All_FortiClients") | None => {}
                Some(x) => devices.push(x.to_string()),
            }
        }
    }
    let (mut start, mut end) = (None, None);
    if let Some(tr) = arg(p, "time-range").and_then(|v| v.as_object()) {
        if let Some(s) = tr.get("start") {
            start = Some(
                time_bound(faz, s)
                    .ok_or_else(|| e(INVALID_DATA, "Invalid params: time-range.start"))?,
            );
        }
        if let Some(s) = tr.get("end") {
            end = Some(
                time_bound(faz, s)
                    .ok_or_else(|| e(INVALID_DATA, "Invalid params: time-range.end"))?,
            );
        }
    }
    let desc = arg_str(p, "time-order").map(|o| o != "asc").unwrap_or(true);
    let case = arg(p, "case-sensitive")
        .and_then(parse_enable)
        .unwrap_or(false);
    let spec = SearchSpec {
        ltypes: vec![code],
        devices,
        filter,
        case_sensitive: case,
        start,
        end,
        desc,
    };
    let tid = faz.rescans.new_tid();
    let mut s = api.searches.lock().unwrap_or_else(|e| e.into_inner());
    if s.len() >= 256 {
        let min = *s.keys().min().unwrap_or(&0);
        s.remove(&min);
    }
    s.insert(
        tid,
        SearchTask {
            spec,
            total: None,
            logtype,
        },
    );
    extra(json!({"tid": tid}))
}

fn search_task(api: &ApiState, tid: &str) -> Result<(u64, SearchTask), ApiErr> {
    let tid: u64 = tid
        .parse()
        .map_err(|_| e(NOT_EXIST, "Object does not exist"))?;
    let s = api.searches.lock().unwrap_or_else(|e| e.into_inner());
    s.get(&tid)
        .cloned()
        .map(|t| (tid, t))
        .ok_or_else(|| e(NOT_EXIST, "Object does not exist: no such search task"))
}

fn total_of(faz: &Faz, api: &ApiState, tid: u64, t: &SearchTask) -> Result<u64, ApiErr> {
    if let Some(n) = t.total {
        return Ok(n);
    }
    let n = faz
        .store
        .count(&t.spec)
        .map_err(|err| e(-1, &err.to_string()))?;
    if let Some(x) = api
        .searches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&tid)
    {
        x.total = Some(n);
    }
    Ok(n)
}

fn logsearch_get(
    faz: &Faz,
    api: &ApiState,
    tid: &str,
    p: &Map<String, Value>,
) -> Result<Reply, ApiErr> {
    let (tid, t) = search_task(api, tid)?;
    let limit = arg_u64(p, "limit").unwrap_or(100).clamp(1, 1000) as usize;
    let offset = arg_u64(p, "offset").unwrap_or(0) as usize;
    let rows = faz
        .store
        .search(&t.spec, limit, offset)
        .map_err(|err| e(-1, &err.to_string()))?;
    let total = total_of(faz, api, tid, &t)?;
    let data_rows: Vec<Value> = rows
        .iter()
        .map(|f| {
            let mut m = match fortilab_core::logfmt::LogRecord::parse(&f.raw) {
                Ok(r) => r.to_json(),
                Err(_) => {
                    let mut m = Map::new();
                    m.insert("rawdata".into(), json!(f.raw));
                    m
                }
            };
            m.insert("id".into(), json!(f.id.to_string()));
            m.insert("logtype".into(), json!(logtype_name(f.ltype)));
            if let Some(s) = f.seq {
                m.insert("seq".into(), json!(s));
            }
            m.insert("_dev".into(), json!(f.dev));
            Value::Object(m)
        })
        .collect();
    let n = data_rows.len();
    Ok(Reply {
        data: Some(Value::Array(data_rows)),
        extra: json!({"offset": offset, "percentage": 100, "return-lines": n, "total-count": total, "tid": tid, "logtype": t.logtype})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        session: None,
    })
}

fn logsearch_count(faz: &Faz, api: &ApiState, tid: &str) -> Result<Reply, ApiErr> {
    let (tid, t) = search_task(api, tid)?;
    let n = total_of(faz, api, tid, &t)?;
    extra(
        json!({"tid": tid, "matched-logs": n, "scanned-logs": n, "total-logs": n, "progress-percent": 100}),
    )
}

fn logfields(logtype: &str) -> Value {
    let common = [
        ("date", "string"),
        ("time", "string"),
        ("devid", "string"),
        ("devname", "string"),
        ("vd", "string"),
        ("eventtime", "int"),
        ("logid", "string"),
        ("type", "string"),
        ("subtype", "string"),
        ("level", "string"),
    ];
    let specific: &[(&str, &str)] = match logtype {
        "traffic" | "fct-traffic" => &[
            ("srcip", "ip"),
            ("srcport", "int"),
            ("dstip", "ip"),
            ("dstport", "int"),
            ("action", "string"),
            ("policyid", "int"),
            ("service", "string"),
            ("sentbyte", "int"),
            ("rcvdbyte", "int"),
            ("user", "string"),
            ("fct_devid", "string"),
        ],
        "webfilter" => &[
            ("srcip", "ip"),
            ("dstip", "ip"),
            ("hostname", "string"),
            ("url", "string"),
            ("action", "string"),
            ("cat", "int"),
            ("catdesc", "string"),
            ("policyid", "int"),
            ("user", "string"),
            ("eventtype", "string"),
        ],
        "dns" => &[
            ("srcip", "ip"),
            ("dstip", "ip"),
            ("qname", "string"),
            ("ipaddr", "string"),
            ("action", "string"),
        ],
        _ => &[
            ("msg", "string"),
            ("logdesc", "string"),
            ("user", "string"),
            ("action", "string"),
        ],
    };
    let fields: Vec<Value> = common
        .iter()
        .chain(specific.iter())
        .map(|(n, t)| json!({"name": n, "type": t, "indexed": filter::column(n).is_some()}))
        .collect();
    json!({"devtype": "FortiGate", "logtype": logtype, "fields": fields})
}

fn host_json(faz: &Faz, h: &Host, detail: bool) -> Value {
    let mut v = json!({
        "epid": h.epid, "epip": h.epip, "epname": h.epname, "euid": h.epid, "user": h.user, "os": null,
        "mac": h.mac, "verdict": h.verdict, "verdict-level": h.level.as_str(),
        "threat-count": h.threat_count(), "event-count": h.event_count,
        "first-detected": faz.display_time(h.first_detected), "last-detected": faz.display_time(h.last_detected),
        "ack": h.ack as u8, "ack-time": h.ack_time.map(|t| faz.display_time(t)), "ack-by": h.ack_by,
        "comment": h.comment, "rescan": h.rescan as u8, "devid": h.devid, "vdom": h.vdom,
    });
    if detail {
        let threats: Vec<Value> = h
            .threats
            .iter()
            .map(|t| json!({"threat": t.threat, "detect-method": t.detect_method, "detect-pattern": t.detect_pattern,
                            "log-type": t.log_type, "event-count": t.event_count,
                            "first-seen": faz.display_time(t.first), "last-seen": faz.display_time(t.last), "rescan": t.rescan as u8}))
            .collect();
        v["threats"] = Value::Array(threats);
    }
    v
}

/// Evaluates a filter on a JSON row (compromised hosts, alerts).
pub fn eval_json(e: &Expr, row: &Value) -> bool {
    match e {
        Expr::And(v) => v.iter().all(|x| eval_json(x, row)),
        Expr::Or(v) => v.iter().any(|x| eval_json(x, row)),
        Expr::Not(x) => !eval_json(x, row),
        Expr::Cond { field, op, value } => {
            let key = match field.as_str() {
                "trigger_name" => "triggername",
                "verdict_level" => "verdict-level",
                f => f,
            };
            let fv = match row.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            let negate = matches!(op, Op::Ne | Op::NotContains);
            let m = match op {
                Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                    let (Ok(a), Ok(b)) = (fv.parse::<f64>(), value.parse::<f64>()) else {
                        return false;
                    };
                    match op {
                        Op::Gt => a > b,
                        Op::Ge => a >= b,
                        Op::Lt => a < b,
                        _ => a <= b,
                    }
                }
                Op::Contains | Op::NotContains => fv
                    .to_ascii_lowercase()
                    .contains(&value.to_ascii_lowercase()),
                _ => {
                    if let (Ok(ip), Some((lo, hi))) =
                        (fv.parse::<IpAddr>(), filter::ip_range_pub(value))
                    {
                        match ip {
                            IpAddr::V4(v4) => (lo..=hi).contains(&(u32::from(v4) as i64)),
                            _ => false,
                        }
                    } else if value.contains('*') {
                        wildcard(&fv.to_ascii_lowercase(), &value.to_ascii_lowercase())
                    } else {
                        fv.eq_ignore_ascii_case(value)
                    }
                }
            };
            m != negate
        }
    }
}

fn wildcard(s: &str, pat: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    let mut pos = 0;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            if !s.starts_with(part) {
                return false;
            }
            pos = part.len();
        } else if let Some(at) = s[pos..].find(part) {
            pos += at + part.len();
        } else {
            return false;
        }
    }
    parts
        .last()
        .map(|l| l.is_empty() || s.ends_with(l))
        .unwrap_or(true)
}

fn page(p: &Map<String, Value>, rows: Vec<Value>) -> Result<Reply, ApiErr> {
    let total = rows.len();
    let limit = arg_u64(p, "limit").unwrap_or(1000).clamp(1, 10_000) as usize;
    let offset = arg_u64(p, "offset").unwrap_or(0) as usize;
    let v: Vec<Value> = rows.into_iter().skip(offset).take(limit).collect();
    let n = v.len();
    Ok(Reply {
        data: Some(Value::Array(v)),
        extra: json!({"total-count": total, "return-lines": n})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        session: None,
    })
}

fn row_filter(p: &Map<String, Value>) -> Result<Option<Expr>, ApiErr> {
    match arg(p, "filter") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => filter::parse(s)
            .map_err(|err| e(INVALID_DATA, &format!("Invalid params: filter: {err}"))),
        Some(_) => Err(e(INVALID_DATA, "Invalid params: filter must be a string")),
    }
}

fn compromised_hosts(
    faz: &Faz,
    p: &Map<String, Value>,
    epid: Option<&str>,
) -> Result<Reply, ApiErr> {
    let f = row_filter(p)?;
    let detail = arg_u64(p, "detail-level").unwrap_or(0) > 0 || epid.is_some();
    let show_ack = arg(p, "show-acknowledged")
        .and_then(parse_enable)
        .unwrap_or(true);
    let eng = faz.ioc.engine();
    if let Some(id) = epid {
        let id: u64 = id
            .parse()
            .map_err(|_| e(NOT_EXIST, "Object does not exist"))?;
        let h = eng
            .host_by_epid(id)
            .filter(|h| h.listed)
            .ok_or_else(|| e(NOT_EXIST, "Object does not exist"))?;
        return data(host_json(faz, h, true));
    }
    let rows: Vec<Value> = eng
        .listed()
        .into_iter()
        .filter(|h| show_ack || !h.ack)
        .map(|h| host_json(faz, h, detail))
        .filter(|r| f.as_ref().map(|f| eval_json(f, r)).unwrap_or(true))
        .collect();
    drop(eng);
    page(p, rows)
}

fn events_ack(faz: &Faz, p: &Map<String, Value>, user: &str) -> Result<Reply, ApiErr> {
    let events = match arg(p, "events") {
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        _ => {
            return Err(e(
                INVALID_DATA,
                "Invalid params: events must be a non-empty list",
            ))
        }
    };
    let by = arg_str(p, "update-by").unwrap_or(user).to_string();
    let mut acked = Vec::new();
    for ev in &events {
        let Some(o) = ev.as_object() else {
            return Err(e(INVALID_DATA, "Invalid params: events[] must be objects"));
        };
        let epid = o
            .get("endpoint-id")
            .or_else(|| o.get("epid"))
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            });
        let epip = o
            .get("source-ip")
            .or_else(|| o.get("epip"))
            .and_then(|v| v.as_str())
            .map(String::from);
        if epid.is_none() && epip.is_none() {
            return Err(e(
                INVALID_DATA,
                "Invalid params: each event needs endpoint-id or source-ip",
            ));
        }
        let comment = o.get("comment").and_then(|v| v.as_str());
        for h in faz.ack_hosts(epid, epip.as_deref(), comment, &by) {
            acked.push(json!({"endpoint-id": h.epid, "source-ip": h.epip}));
        }
    }
    if acked.is_empty() {
        return Err(e(
            NOT_EXIST,
            "Object does not exist: no compromised host matched",
        ));
    }
    extra(json!({"acked": acked}))
}

fn rescan_add(faz: &Faz, p: &Map<String, Value>) -> Result<Reply, ApiErr> {
    if faz.rescans.any_running() {
        return Err(e(-10, "A rescan is already running"));
    }
    let now = faz.now();
    let days = faz.ioc.settings().rescan_days as i64;
    let (mut start, mut end) = (now - days * 86_400, now);
    if let Some(tr) = arg(p, "time-range").and_then(|v| v.as_object()) {
        if let Some(s) = tr.get("start") {
            start = time_bound(faz, s)
                .ok_or_else(|| e(INVALID_DATA, "Invalid params: time-range.start"))?;
        }
        if let Some(s) = tr.get("end") {
            end = time_bound(faz, s)
                .ok_or_else(|| e(INVALID_DATA, "Invalid params: time-range.end"))?;
        }
    }
    let tid = faz.new_rescan(start, end, "api");
    extra(json!({"tid": tid, "_start": start, "_end": end}))
}

fn alerts_get(faz: &Faz, p: &Map<String, Value>, count: bool) -> Result<Reply, ApiErr> {
    let f = row_filter(p)?;
    let rows: Vec<Value> = faz
        .alerts
        .list()
        .iter()
        .rev()
        .map(|a| alert_json(faz, a))
        .filter(|r| f.as_ref().map(|f| eval_json(f, r)).unwrap_or(true))
        .collect();
    if count {
        return extra(json!({"count": rows.len()}));
    }
    page(p, rows)
}

fn alert_json(faz: &Faz, a: &Alert) -> Value {
    json!({
        "alertid": a.alertid, "triggername": a.triggername, "subject": a.subject, "severity": a.severity,
        "epid": a.epid, "epip": a.epip, "epname": a.epname, "euid": a.euid, "devid": a.devid, "vdom": a.vdom,
        "alerttime": faz.display_time(a.alerttime), "alerttime_epoch": a.alerttime,
        "ackflag": if a.ackflag { "yes" } else { "no" }, "ack-by": a.ack_by, "comment": a.comment,
        "eventtype": "Compromised Host", "tag": a.tag,
        "event_details": {"src_ip": a.epip, "host_name": a.epname, "threat": a.threat, "detect_method": a.detect_method},
    })
}
