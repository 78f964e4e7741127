//! Monitor selectors about logging, endpoint control (EMS) and automation, computed from the
//! lab's state: `config log fortianalyzer setting` with the log channel's sender figures,
//! the memory log, the EMS connectors' polls, the compromised-host list and the automation
//! engine's runs. POST actions have their effect: quarantine/unquarantine through the EMS
//! connector, reconnecting the FortiAnalyzer log channel.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::mon_system::env;
use super::{Api, Req};
use fortilab_core::EventKind;

/// `GET monitor/log/device/state`: which log devices exist and are enabled (the 6.2/6.4
/// fixture's shape). Memory logging is what this FortiGate keeps; a VM64 without a log
/// disk has none; FortiAnalyzer follows `log fortianalyzer setting`.
pub fn device_state(api: &Api, r: &Req) -> Response {
    let faz_on = api
        .dev
        .config
        .with(|c| crate::forward::FazSettings::from_config(c).is_some());
    let results = json!({
        "memory": {"is_available": true, "is_enabled": true, "is_default": true,
                   "is_ha_supported": true},
        "disk": {"is_available": false, "is_enabled": false, "is_loggable": false,
                 "num_ssds_available": 0, "disabled_by_default": true,
                 "is_ha_supported": false, "is_fortiview_supported": false,
                 "fortiview_weekly_data": false},
        "fortianalyzer": {"is_available": true, "is_enabled": faz_on,
                          "overrides_global_faz": false},
        "forticloud": {"is_available": false, "is_enabled": false},
    });
    env(api, r, "log", "device").monitor_ok(Some(results), Some("state"))
}

/// `GET monitor/log/current-disk-usage`: a VM64 without a log disk uses none.
pub fn current_disk_usage(api: &Api, r: &Req) -> Response {
    env(api, r, "log", "current-disk-usage").monitor_ok(
        Some(json!({"used_bytes": 0, "free_bytes": 0, "total_bytes": 0})),
        None,
    )
}

/// `GET monitor/log/fortianalyzer` (`server`, `srcip`, `scope`): the connection's
/// registration and figures (6.0 fixture field set) plus the configured `server`/`status`.
pub fn faz(api: &Api, r: &Req) -> Response {
    let f = api.dev.fabric().faz();
    let (server, status) = api.dev.config.with(|config| {
        let e = config.single("log fortianalyzer setting");
        (
            e.and_then(|e| e.scalar("server")).unwrap_or("").to_string(),
            e.and_then(|e| e.scalar("status"))
                .unwrap_or("disable")
                .to_string(),
        )
    });
    if let Some(want) = r.query.get("server") {
        if !want.is_empty() && want != server {
            // A server that is not the configured one: nothing is known about it [P].
            return env(api, r, "log", "fortianalyzer").monitor_ok(
                Some(
                    json!({"server": want, "registration": "unknown", "connection": "unknown",
                            "connected": false}),
                ),
                None,
            );
        }
    }
    let flow = |on: bool| json!({"tx": on, "rx": on});
    let results = json!({
        "status": status,
        "server": server,
        "device": api.dev.hostname(),
        "registration": f.registration,
        "connection": f.connection,
        "connected": f.connected,
        "serial": f.faz_serial,
        "received": f.sent_logs,
        "adom_name": "root",
        "log": flow(f.connected),
        "ips": flow(false),
        "dlp": flow(false),
        "quar": flow(false),
        "license": {},
    });
    env(api, r, "log", "fortianalyzer").monitor_ok(Some(results), None)
}

/// `GET monitor/log/fortianalyzer-queue`: the sender's queue (`cached_logs` = logs not yet
/// acknowledged by FortiAnalyzer).
pub fn faz_queue(api: &Api, r: &Req) -> Response {
    let f = api.dev.fabric().faz();
    let blocks = f.cached_logs.div_ceil(64);
    let results = json!({
        "connected": if f.connected { 1 } else { 0 },
        "total_memory_blocks": 2962,
        "used_memory_blocks": blocks.min(2962),
        "cached_logs": f.cached_logs,
        "failed_logs": f.failed_logs,
        "sent_logs": f.sent_logs,
    });
    env(api, r, "log", "fortianalyzer-queue").monitor_ok(Some(results), None)
}

/// `POST monitor/log/fortianalyzer/restart` [P: no public catalogue names this action]:
/// closes the log channel and connects again at once, resending what is unacknowledged.
pub fn faz_restart(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "log", "fortianalyzer");
    let done = api.parts().is_some_and(|p| p.forwarder.restart_faz());
    if !done {
        // Logging to FortiAnalyzer is off: nothing to restart.
        return e.error(424, Some(-3), None, None);
    }
    api.dev.events.emit(EventKind::FazRestart, json!({}));
    e.monitor_ok(None, Some("restart"))
}

/// `GET monitor/log/stats` [P: shape]: logs in the memory log per type.
pub fn log_stats(api: &Api, r: &Req) -> Response {
    let mut m = Map::new();
    for (t, st) in [
        ("traffic", "forward"),
        ("event", "system"),
        ("utm", "webfilter"),
        ("event", "endpoint"),
    ] {
        let (_, n) = api.dev.logs.query(t, st, 0, 0);
        m.insert(format!("{t}/{st}"), Value::from(n));
    }
    env(api, r, "log", "stats").monitor_ok(Some(json!({"memory": m})), None)
}

// ------------------------------------------------------------------------------------------
// Endpoint control and EMS.

/// EMS rows of `endpoint-control/ems/status` (`ems_id` filter).
fn ems_rows(api: &Api, want: Option<&str>) -> Vec<Value> {
    let fabric = api.dev.fabric();
    api.dev.config.with(|config| {
        config.table("endpoint-control fctems")
            .map(|table| {
                table.entries()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        let name = e.scalar("name").unwrap_or(&e.key).to_string();
                        let id = e.key.parse::<u64>().unwrap_or(i as u64 + 1);
                        if want.is_some_and(|w| w != id.to_string()) {
                            return None;
                        }
                        let st = fabric.ems(&name);
                        let (sid, s) = match st.status.as_str() {
                            "connected" => (1, "success"),
                            "waiting for authorization" => (-3, "auth_pending"),
                            _ => (-1, "not_reachable"),
                        };
                        Some(json!({
                            "ems_id": id, "ems_name": name,
                            "server": e.scalar("server").unwrap_or(""),
                            "https_port": e.scalar("https-port").and_then(|p| p.parse::<u64>().ok()).unwrap_or(443),
                            "ems_serial": st.ems_serial,
                            "connected": st.connected,
                            "status": st.status,
                            "ems_status_id": sid,
                            "ems_status": s,
                            "websocket_status": st.websocket,
                        }))
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// `GET monitor/endpoint-control/ems/status` (`ems_id`): one row per configured EMS.
pub fn ems_status(api: &Api, r: &Req) -> Response {
    let list = ems_rows(api, r.query.get("ems_id"));
    env(api, r, "endpoint-control", "ems").monitor_ok(Some(Value::Array(list)), Some("status"))
}

/// `GET monitor/endpoint-control/ems/status-summary`: counts by connection status.
pub fn ems_status_summary(api: &Api, r: &Req) -> Response {
    let rows = ems_rows(api, None);
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rows {
        *by.entry(row["ems_status"].as_str().unwrap_or("other").to_string())
            .or_default() += 1;
    }
    env(api, r, "endpoint-control", "ems").monitor_ok(
        Some(json!({"total": rows.len(), "status": by})),
        Some("status-summary"),
    )
}

/// `GET monitor/endpoint-control/ems/cert-status` (`ems_id`): the EMS certificate is the lab
/// CA's and verified on every call, so a connected EMS has a valid, verified certificate.
pub fn ems_cert_status(api: &Api, r: &Req) -> Response {
    let list: Vec<Value> = ems_rows(api, r.query.get("ems_id"))
        .into_iter()
        .map(|row| {
            let ok = row["connected"].as_bool().unwrap_or(false);
            json!({"ems_id": row["ems_id"], "ems_name": row["ems_name"],
                   "status": if ok { "success" } else { "pending" },
                   "ems_status_id": row["ems_status_id"], "ems_status": row["ems_status"],
                   "cert": {"status": if ok { "valid" } else { "unknown" },
                            "issuer": {"CN": "fortilab lab CA"}, "is_ca": false}})
        })
        .collect();
    env(api, r, "endpoint-control", "ems").monitor_ok(Some(Value::Array(list)), Some("cert-status"))
}

/// `POST monitor/endpoint-control/ems/verify-cert` (`ems_id`): checks the EMS now.
pub async fn ems_verify_cert(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "endpoint-control", "ems");
    let body = match r.json_object() {
        Ok(b) => b,
        Err(_) => return e.error(400, None, None, None),
    };
    let Some(id) = body
        .get("ems_id")
        .map(|v| v.to_string().trim_matches('"').to_string())
    else {
        return e.error(424, None, None, None);
    };
    let Some(engine) = api.automation_engine() else {
        return e.error(500, None, None, None);
    };
    let conns = api
        .dev
        .config
        .with(|c| crate::automation::ems::configured(c, api.dev.version));
    let rows = ems_rows(api, Some(&id));
    let Some(name) = rows.first().and_then(|r| r["ems_name"].as_str()) else {
        return e.error(404, Some(-3), None, None);
    };
    let Some(conn) = conns.iter().find(|c| c.name == name) else {
        return e.error(404, Some(-3), None, None);
    };
    let st = engine.ems.check(conn).await;
    e.monitor_ok(
        Some(json!({"ems_id": id, "ems_name": name,
                    "status": if st.connected { "success" } else { "error" }})),
        Some("verify-cert"),
    )
}

/// The endpoints EMS reports (every configured connector's inventory, fetched now; the
/// last one of an EMS that cannot be reached).
async fn inventory(api: &Api) -> Vec<crate::automation::ems::EmsEndpoint> {
    match api.automation_engine() {
        Some(e) => e.ems.inventory().await,
        None => Vec::new(),
    }
}

/// `GET monitor/endpoint-control/summary`: the endpoints EMS reports, counted, plus the
/// FortiGate's own compromised-host list and the connected EMS [P: field subset].
pub async fn endpoint_summary(api: &Api, r: &Req) -> Response {
    let hosts = api
        .automation_engine()
        .map(|e| e.compromised_hosts())
        .unwrap_or_default();
    let inv = inventory(api).await;
    let ems = ems_rows(api, None);
    let online = inv.iter().filter(|x| x.online).count();
    env(api, r, "endpoint-control", "summary").monitor_ok(
        Some(
            json!({"total": inv.len(), "online": online, "offline": inv.len() - online,
                    "quarantined": inv.iter().filter(|x| x.quarantined).count(),
                    "on_net": inv.iter().filter(|x| x.onnet).count(),
                    "compromised": hosts.len(),
                    "ems_connected":
                    ems.iter().filter(|r| r["connected"] == Value::Bool(true)).count()}),
        ),
        None,
    )
}

/// The interface whose connected subnet holds `ip` (the endpoint's side of the FortiGate).
fn interface_of(api: &Api, ip: &str) -> String {
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return String::new();
    };
    api.dev.config.with(|config| {
        config
            .table("system interface")
            .and_then(|table| {
                table.entries().iter().find(|entry| {
                    entry
                        .scalar("ip")
                        .is_some_and(|net| super::mon_system::in_subnet(addr, net))
                })
            })
            .map(|e| e.key.clone())
            .unwrap_or_default()
    })
}

/// `GET monitor/endpoint-control/record-list` (`intf_name`): the endpoint records, from
/// what EMS reports through the connector (`endpoints/index`): FortiClient UID, host, address,
/// MAC, user, OS, FortiClient version, online/on-net, quarantine; `interface` is the
/// FortiGate interface whose subnet holds the address, `compromised` whether the FortiGate's
/// compromised-host list has it [P: field names].
pub async fn record_list(api: &Api, r: &Req) -> Response {
    let inv = inventory(api).await;
    let compromised: Vec<String> = api
        .automation_engine()
        .map(|e| e.compromised_hosts())
        .unwrap_or_default()
        .into_iter()
        .map(|h| h.srcip)
        .collect();
    let want = r.query.get("intf_name").filter(|s| !s.is_empty());
    let list: Vec<Value> = inv
        .iter()
        .filter_map(|x| {
            let intf = interface_of(api, &x.ip);
            if want.is_some_and(|w| w != intf) {
                return None;
            }
            Some(json!({
                "uid": x.uid, "fctuid": x.uid, "host": x.host, "addr": x.ip, "ip": x.ip,
                "mac": x.mac, "mac_list": [x.mac], "os": x.os, "fct_ver": x.fct_version,
                "fct_sn": x.fct_sn, "avatar_username": x.user, "domain": x.domain,
                "group": x.group, "online": u8::from(x.online), "on_net": u8::from(x.onnet),
                "quarantined": x.quarantined, "last_seen": x.last_seen,
                "ems_name": x.ems, "ems_sn": x.ems_serial, "interface": intf, "vdom": "root",
                "compromised": compromised.contains(&x.ip),
            }))
        })
        .collect();
    env(api, r, "endpoint-control", "record-list").monitor_ok(Some(Value::Array(list)), None)
}

/// `POST monitor/endpoint-control/registration/quarantine|unquarantine` (`uid` = the
/// FortiClient UID and/or `mac`): asks EMS through the FortiGate's EMS connector, as the
/// automation's `quarantine-forticlient` action does. EMS applies it on the endpoint's next
/// telemetry contact.
pub async fn registration(api: &Api, r: &Req, quarantine: bool) -> Response {
    let action = if quarantine {
        "quarantine"
    } else {
        "unquarantine"
    };
    let e = env(api, r, "endpoint-control", "registration");
    let body = match r.json_object() {
        Ok(b) => b,
        Err(_) => return e.error(400, None, None, None),
    };
    let field = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .map(String::from)
            .or_else(|| r.query.get(k).map(String::from))
            .filter(|s| !s.is_empty())
    };
    let uid = field("uid");
    let mac = field("mac");
    if uid.is_none() && mac.is_none() {
        return e.error(424, None, None, None);
    }
    let Some(engine) = api.automation_engine() else {
        return e.error(500, None, None, None);
    };
    let reason = format!(
        "FortiGate {} REST API ({})",
        api.dev.hostname(),
        r.principal.user()
    );
    let res = if quarantine {
        engine
            .ems
            .quarantine(None, mac.as_deref(), uid.as_deref(), &reason, "")
            .await
    } else {
        engine
            .ems
            .unquarantine(None, mac.as_deref(), uid.as_deref(), &reason)
            .await
    };
    match res {
        Ok(done) => {
            api.dev.events.emit(
                if quarantine {
                    EventKind::EndpointQuarantine
                } else {
                    EventKind::EndpointUnquarantine
                },
                json!({"uid": uid, "mac": mac, "ems": done.ems}),
            );
            e.monitor_ok(
                Some(json!({"uid": uid, "mac": mac, "ems": done.ems})),
                Some(action),
            )
        }
        Err(msg) => {
            tracing::info!(error = %msg, "endpoint {action} refused");
            e.error(500, Some(-1), Some(&msg), None)
        }
    }
}

// ------------------------------------------------------------------------------------------
// Automation.

/// `GET monitor/system/automation-action/stats` (`mkey`): per action, how often it ran and
/// how it ended, from the automation engine's runs [P: field names].
pub fn action_stats(api: &Api, r: &Req) -> Response {
    let want = r.query.get("mkey");
    let runs = api
        .automation_engine()
        .map(|e| e.runs())
        .unwrap_or_default();
    let names: Vec<(String, String)> = api.dev.config.with(|config| {
        config
            .table("system automation-action")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .map(|entry| {
                        (
                            entry.key.clone(),
                            entry.scalar("action-type").unwrap_or("alert").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let list: Vec<Value> = names
        .into_iter()
        .filter(|(n, _)| want.is_none_or(|w| w == n))
        .map(|(name, ty)| {
            let mut total = 0u64;
            let mut ok = 0u64;
            let mut failed = 0u64;
            let mut last = 0i64;
            for run in &runs {
                for res in run.results.iter().filter(|x| x.action == name) {
                    total += 1;
                    match res.status.as_str() {
                        "success" => ok += 1,
                        "failed" => failed += 1,
                        _ => {}
                    }
                    last = last.max(res.finished / 1_000_000_000);
                }
            }
            json!({"name": name, "type": ty, "triggered": total, "success": ok,
                   "failure": failed, "last_triggered": last})
        })
        .collect();
    env(api, r, "system", "automation-action").monitor_ok(Some(Value::Array(list)), Some("stats"))
}
