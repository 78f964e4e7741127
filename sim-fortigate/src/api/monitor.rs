//! `/api/v2/monitor/...` (reference §2) and `/api/v2/log/memory/...`.

use std::net::IpAddr;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{bare_error, json_response, Api, Env, Req};
use crate::device::AutomationRequest;
use fortilab_core::EventKind;

fn env<'a>(api: &'a Api, r: &'a Req, path: &str, name: &str) -> Env<'a> {
    Env {
        api,
        method: &r.method,
        path: path.into(),
        name: name.into(),
        vdom: r.query.get("vdom").unwrap_or("root").to_string(),
    }
}

pub async fn handle(api: &Api, r: Req) -> Response {
    use super::{mon_fabric as fab, mon_system as sys};
    let segs: Vec<String> = r.segments[1..].to_vec();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = &r.method;
    if let Some(resp) = super::mon_more::handle(api, &r, s.as_slice()).await {
        return resp;
    }
    match (m, s.as_slice()) {
        (&Method::GET, ["system", "status"]) => status(api, &r),
        // Interfaces.
        (&Method::GET, ["system", "interface"])
        | (&Method::GET, ["system", "interface", "select"]) => sys::interfaces(api, &r),
        (&Method::GET, ["system", "available-interfaces"]) => sys::available_interfaces(api, &r),
        (&Method::GET, ["system", "interface", "transceivers"]) => {
            sys::empty_list(api, &r, "system", "interface", Some("transceivers"))
        }
        (&Method::GET, ["router", "ipv4"]) => sys::router_ipv4(api, &r),
        (&Method::GET, ["system", "sensor-info"]) => {
            sys::empty_list(api, &r, "system", "sensor-info", None)
        }
        (&Method::GET, ["system", "vm-information"]) => sys::vm_information(api, &r),
        (&Method::GET, ["user", "device", "query"]) => {
            sys::devices(api, &r, "device", Some("query"))
        }
        (&Method::GET, ["user", "detected-device"]) => {
            sys::devices(api, &r, "detected-device", None)
        }
        (&Method::GET, ["system", "interface-connected-admins-info"]) => {
            sys::interface_admins(api, &r)
        }
        // System resources, time, administrators.
        (&Method::GET, ["system", "resource", "usage"]) => sys::resource_usage(api, &r),
        (&Method::GET, ["system", "global-resources"]) => sys::global_resources(api, &r),
        (&Method::GET, ["system", "vdom-resource"]) => sys::vdom_resource(api, &r),
        (&Method::GET, ["system", "time"]) => sys::time(api, &r),
        (&Method::GET, ["system", "current-admins"]) => sys::current_admins(api, &r),
        // Security Fabric, FortiGuard.
        (&Method::GET, ["system", "csf"]) => sys::csf(api, &r),
        (&Method::GET, ["system", "csf", "pending-authorizations"]) => sys::csf_pending(api, &r),
        (&Method::GET, ["webfilter", "fortiguard-categories"]) => {
            sys::fortiguard_categories(api, &r)
        }
        (&Method::GET, ["system", "fortiguard", "server-info"]) => {
            sys::fortiguard_server_info(api, &r)
        }
        (&Method::GET, ["license", "status"]) => sys::license_status(api, &r),
        (&Method::GET, ["utm", "rating-lookup"])
        | (&Method::GET, ["utm", "rating-lookup", "select"]) => sys::rating_lookup(api, &r).await,
        // Automation.
        (&Method::GET, ["system", "automation-stitch", "stats"]) => stitch_stats(api, &r),
        (&Method::GET, ["system", "automation-action", "stats"]) => fab::action_stats(api, &r),
        (&Method::POST, ["system", "automation-stitch", "test"]) => stitch_test(api, &r),
        (&Method::POST, ["system", "automation-stitch", "webhook"]) => webhook(api, &r, None),
        (&Method::POST, ["system", "automation-stitch", "webhook", name]) => {
            webhook(api, &r, Some(name.to_string()))
        }
        // Users, banned IPs.
        (&Method::GET, ["user", "banned"]) | (&Method::GET, ["user", "banned", "select"]) => {
            banned_list(api, &r)
        }
        (&Method::GET, ["user", "banned", "check"]) => banned_check(api, &r),
        (&Method::POST, ["user", "banned", "add_users"]) => banned_add(api, &r),
        (&Method::POST, ["user", "banned", "clear_users"]) => banned_clear(api, &r),
        (&Method::POST, ["user", "banned", "clear_all"]) => {
            api.dev.banned.clear();
            api.dev.events.emit(EventKind::BannedClearAll, json!({}));
            env(api, &r, "user", "banned").monitor_ok(None, Some("clear_all"))
        }
        (&Method::GET, ["user", "firewall"]) | (&Method::GET, ["user", "firewall", "select"]) => {
            // No firewall authentication is configured in the lab: nobody is logged in.
            env(api, &r, "user", "firewall").monitor_ok(Some(Value::Array(vec![])), Some("select"))
        }
        // Logging.
        (&Method::GET, ["log", "device", "state"]) => fab::device_state(api, &r),
        (&Method::GET, ["log", "current-disk-usage"]) => fab::current_disk_usage(api, &r),
        (&Method::GET, ["log", "fortianalyzer"]) => fab::faz(api, &r),
        (&Method::GET, ["log", "fortianalyzer-queue"]) => fab::faz_queue(api, &r),
        (&Method::POST, ["log", "fortianalyzer", "restart"]) => fab::faz_restart(api, &r),
        (&Method::GET, ["log", "stats"]) => fab::log_stats(api, &r),
        // Endpoint control and EMS.
        (&Method::GET, ["endpoint-control", "ems", "status"]) => fab::ems_status(api, &r),
        (&Method::GET, ["endpoint-control", "ems", "status-summary"]) => {
            fab::ems_status_summary(api, &r)
        }
        (&Method::GET, ["endpoint-control", "ems", "cert-status"]) => fab::ems_cert_status(api, &r),
        (&Method::POST, ["endpoint-control", "ems", "verify-cert"]) => {
            fab::ems_verify_cert(api, &r).await
        }
        (&Method::GET, ["endpoint-control", "summary"]) => fab::endpoint_summary(api, &r).await,
        (&Method::GET, ["endpoint-control", "record-list"]) => fab::record_list(api, &r).await,
        (&Method::POST, ["endpoint-control", "registration", "quarantine"]) => {
            fab::registration(api, &r, true).await
        }
        (&Method::POST, ["endpoint-control", "registration", "unquarantine"]) => {
            fab::registration(api, &r, false).await
        }
        (&Method::GET, ["system", "config", "backup"]) => backup(api, &r),
        (_, ["system", "status"])
        | (_, ["system", "interface", ..])
        | (_, ["system", "resource", ..])
        | (_, ["system", "automation-stitch", _])
        | (_, ["system", "automation-action", _])
        | (_, ["user", "banned", ..])
        | (_, ["log", ..])
        | (_, ["endpoint-control", "ems", _])
        | (_, ["endpoint-control", "registration", _])
        | (_, ["system", "config", "backup"]) => {
            let name = s.get(1).copied().unwrap_or("");
            env(api, &r, s[0], name).error(405, None, None, None)
        }
        _ => bare_error(api, m, 404),
    }
}

/// `monitor/system/status` (also answers the `cmdb/system/status` probe).
pub fn status(api: &Api, r: &Req) -> Response {
    let results = json!({
        "model_name": "FortiGate",
        "model_number": "VM64",
        "model": "FGVM64",
        "hostname": api.dev.hostname(),
        "log_disk_status": "not_available",
    });
    env(api, r, "system", "status").monitor_ok(Some(results), None)
}

fn stitch_names(api: &Api) -> Vec<(String, String, bool)> {
    api.dev.config.with(|config| {
        config
            .table("system automation-stitch")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .map(|entry| {
                        (
                            entry.key.clone(),
                            entry.scalar("trigger").unwrap_or("").to_string(),
                            entry.scalar("status").unwrap_or("enable") == "enable",
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

fn stitch_stats(api: &Api, r: &Req) -> Response {
    let want = r.query.get("mkey");
    let results: Vec<Value> = stitch_names(api)
        .into_iter()
        .filter(|(n, _, _)| want.is_none_or(|w| w == n))
        .map(|(name, trigger, enabled)| {
            let s = api.dev.automation.stats(&name);
            json!({"name": name, "trigger": trigger, "status": if enabled { "enable" } else { "disable" },
                   "triggered": s.triggered, "relayed_to": s.relayed_to, "relayed_from": s.relayed_from,
                   "last_triggered": s.last_triggered})
        })
        .collect();
    env(api, r, "system", "automation-stitch")
        .monitor_ok(Some(Value::Array(results)), Some("stats"))
}

fn stitch_test(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "system", "automation-stitch");
    let body = match r.json_object() {
        Ok(b) => b,
        Err(_) => return e.error(400, None, None, None),
    };
    let Some(mkey) = body
        .get("mkey")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| r.query.get("mkey").map(String::from))
    else {
        return e.error(424, None, None, None);
    };
    if !api.dev.config.exists("system automation-stitch", &mkey) {
        return e.error(404, Some(-3), None, Some(Value::from(mkey)));
    }
    let log = body.get("log").and_then(Value::as_str).map(String::from);
    api.dev
        .events
        .emit(EventKind::StitchTest, json!({"stitch": mkey, "log": log}));
    if !api
        .dev
        .automation
        .submit(AutomationRequest::Test { stitch: mkey, log })
    {
        tracing::warn!("automation queue full; test request dropped");
    }
    e.monitor_ok(None, Some("test"))
}

fn webhook(api: &Api, r: &Req, name: Option<String>) -> Response {
    let e = env(api, r, "system", "automation-stitch");
    let body: Value = if r.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&r.body) {
            Ok(v) => v,
            Err(_) => return e.error(400, None, None, None),
        }
    };
    let Some(mkey) = name.or_else(|| body.get("mkey").and_then(Value::as_str).map(String::from))
    else {
        return e.error(424, None, None, None);
    };
    if !api.dev.config.exists("system automation-stitch", &mkey) {
        return e.error(404, Some(-3), None, Some(Value::from(mkey)));
    }
    let srcip = api
        .dev
        .lab_map
        .lab_of_real(r.peer)
        .unwrap_or(r.peer)
        .to_string();
    api.dev.events.emit(
        EventKind::StitchWebhook,
        json!({"stitch": mkey, "body": body, "srcip": srcip}),
    );
    if !api.dev.automation.submit(AutomationRequest::Webhook {
        stitch: mkey,
        body,
        srcip: Some(srcip),
    }) {
        tracing::warn!("automation queue full; webhook dropped");
    }
    // The exact shape of the Admin Guide's example (reference §1.3).
    json_response(
        StatusCode::OK,
        json!({"http_method": "POST", "status": "success", "http_status": 200,
               "serial": api.dev.serial, "version": api.dev.version.rest_string(), "build": api.dev.version.build()}),
    )
}

fn banned_list(api: &Api, r: &Req) -> Response {
    let list: Vec<Value> = api
        .dev
        .banned
        .list()
        .into_iter()
        .map(|b| serde_json::to_value(b).unwrap_or(Value::Null))
        .collect();
    env(api, r, "user", "banned").monitor_ok(Some(Value::Array(list)), Some("select"))
}

fn banned_check(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "user", "banned");
    let Some(ip) = r.query.get("ip_address") else {
        return e.error(424, None, None, None);
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return e.error(400, None, None, None);
    };
    e.monitor_ok(
        Some(json!({"is_banned": api.dev.banned.is_banned(ip)})),
        Some("check"),
    )
}

fn ip_list(v: Option<&Value>) -> Result<Vec<IpAddr>, ()> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().and_then(|s| s.parse().ok()).ok_or(()))
            .collect(),
        Some(Value::String(s)) => s.parse().map(|ip| vec![ip]).map_err(|_| ()),
        _ => Err(()),
    }
}

fn banned_add(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "user", "banned");
    let body = match r.json_object() {
        Ok(b) => b,
        Err(_) => return e.error(400, None, None, None),
    };
    if body.get("ip_addresses").is_none() {
        return e.error(424, None, None, None);
    }
    let Ok(ips) = ip_list(body.get("ip_addresses")) else {
        return e.error(400, None, None, None);
    };
    let expiry = body.get("expiry").and_then(Value::as_i64).unwrap_or(0);
    for ip in &ips {
        api.dev.banned.add(*ip, expiry, "admin");
    }
    api.dev.events.emit(
        EventKind::BannedAdd,
        json!({"ip_addresses": ips, "expiry": expiry}),
    );
    e.monitor_ok(None, Some("add_users"))
}

fn banned_clear(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "user", "banned");
    let body = match r.json_object() {
        Ok(b) => b,
        Err(_) => return e.error(400, None, None, None),
    };
    if body.get("ip_addresses").is_none() {
        return e.error(424, None, None, None);
    }
    let Ok(ips) = ip_list(body.get("ip_addresses")) else {
        return e.error(400, None, None, None);
    };
    for ip in &ips {
        api.dev.banned.remove(*ip);
    }
    api.dev
        .events
        .emit(EventKind::BannedClear, json!({"ip_addresses": ips}));
    e.monitor_ok(None, Some("clear_users"))
}

fn backup(api: &Api, r: &Req) -> Response {
    let scope = r.query.get("scope").unwrap_or("global");
    if scope != "global" && scope != "vdom" {
        return env(api, r, "system", "config").error(424, None, None, None);
    }
    let text = api.dev.config.show(false, r.principal.user());
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// `/api/v2/log/memory/<type>/<subtype>[/raw]`.
pub fn handle_log(api: &Api, r: Req) -> Response {
    let s: Vec<&str> = r.segments[1..].iter().map(String::as_str).collect();
    if r.method != Method::GET {
        return bare_error(api, &r.method, 405);
    }
    // UTM logs are addressed by their subtype alone (`/log/memory/webfilter[/raw]`).
    const UTM: &[&str] = &[
        "virus",
        "webfilter",
        "waf",
        "ips",
        "anomaly",
        "app-ctrl",
        "emailfilter",
        "dlp",
        "voip",
        "dns",
        "ssh",
        "ssl",
        "file-filter",
        "cifs",
    ];
    let (device, log_type, subtype, raw) = match s.as_slice() {
        [d, st] if UTM.contains(st) => (*d, "utm", *st, false),
        [d, st, "raw"] if UTM.contains(st) => (*d, "utm", *st, true),
        [d, t, st] => (*d, *t, *st, false),
        [d, t, st, "raw"] => (*d, *t, *st, true),
        _ => return bare_error(api, &r.method, 404),
    };
    if device != "memory" && device != "disk" {
        return bare_error(api, &r.method, 404);
    }
    let rows: usize = r
        .query
        .get("rows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .min(2000);
    let start: usize = r
        .query
        .get("start")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let filter = match super::query::Filter::parse(r.query.all("filter")) {
        Ok(f) => f,
        Err(_) => return bare_error(api, &r.method, 400),
    };
    if r.query
        .get("serial_no")
        .is_some_and(|s| !s.is_empty() && s != api.dev.serial)
    {
        // Another device's logs: this FortiGate has none [P].
        return bare_error(api, &r.method, 404);
    }
    let (lines, total) = if filter.is_empty() {
        api.dev.logs.query(log_type, subtype, start, rows)
    } else {
        api.dev
            .logs
            .query_where(log_type, subtype, start, rows, |l| {
                filter.matches(&Value::Object(l.record.to_json()))
            })
    };
    if raw {
        let mut text = String::new();
        for l in &lines {
            text.push_str(&l.line);
            text.push('\n');
        }
        let mut resp = (StatusCode::OK, text).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return resp;
    }
    let results: Vec<Value> = lines
        .iter()
        .map(|l| Value::Object(l.record.to_json()))
        .collect();
    let n = results.len();
    json_response(
        StatusCode::OK,
        json!({
            "http_method": "GET", "results": results, "vdom": "root", "device": device,
            "total_lines": total, "start": start, "rows": n,
            "session_id": super::session_id(api), "completed": 100,
            "status": "success", "serial": api.dev.serial,
            "version": api.dev.version.rest_string(), "build": api.dev.version.build(),
        }),
    )
}
