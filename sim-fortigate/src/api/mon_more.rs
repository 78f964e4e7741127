//! The rest of the monitor selectors of issue 14's areas (routing, system, HA, logging,
//! users, endpoint control, FortiGuard), each answered from the lab's state: the routing
//! table of `config system interface`, the time-zone table `system global` uses, this
//! process's threads and resources, the running configuration's checksum, the log channel's
//! figures, the data plane's hosts, the EMS connectors' inventories and the FortiGuard
//! (lab Internet) rating client's traffic. What the lab cannot have (HA peers, BGP/OSPF
//! neighbours, policy routes, a log disk, PoE, explicit-proxy users) answers as a FortiGate
//! without it does: empty lists and zero counts.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};
use sha2::Digest;

use super::mon_system::{env, ip_mask, ipv4_routes, proc_usage};
use super::{Api, Req};

/// The selectors of this module; `None`: not one of them.
pub async fn handle(api: &Api, r: &Req, s: &[&str]) -> Option<Response> {
    let m = &r.method;
    let resp = match (m, s) {
        // Routing.
        (&Method::GET, ["router", "ipv6"]) => list(api, r, "router", "ipv6", None),
        (&Method::GET, ["router", "statistics"]) => router_statistics(api, r),
        (&Method::GET, ["router", "lookup"]) => router_lookup(api, r, "lookup"),
        (&Method::GET, ["router", "lookup-policy"]) => router_lookup(api, r, "lookup-policy"),
        (&Method::GET, ["router", "policy"]) => list(api, r, "router", "policy", None),
        (&Method::GET, ["router", "policy6"]) => list(api, r, "router", "policy6", None),
        (
            &Method::GET,
            ["router", "bgp", what @ ("neighbors" | "neighbors6" | "paths" | "paths6")],
        ) => list(api, r, "router", "bgp", Some(what)),
        (&Method::GET, ["router", "bgp", what @ ("paths-statistics" | "neighbors-statistics")]) => {
            env(api, r, "router", "bgp").monitor_ok(
                Some(json!({"ipv4": {"total_paths": 0, "total_neighbors": 0},
                            "ipv6": {"total_paths": 0, "total_neighbors": 0}})),
                Some(what),
            )
        }
        (&Method::GET, ["router", "ospf", "neighbors"]) => {
            list(api, r, "router", "ospf", Some("neighbors"))
        }
        // Interfaces.
        (&Method::GET, ["network", "arp"]) => arp(api, r).await,
        (&Method::GET, ["system", "interface", "dhcp-status"]) => dhcp_status(api, r),
        (&Method::GET, ["system", "interface", "kernel-interfaces"]) => kernel_interfaces(api, r),
        (&Method::GET, ["system", "interface", what @ ("poe" | "poe-usage")]) => {
            list(api, r, "system", "interface", Some(what))
        }
        // System.
        (&Method::GET, ["system", "firmware"]) => firmware(api, r),
        (&Method::GET, ["system", "firmware", "upgrade-paths"]) => {
            list(api, r, "system", "firmware", Some("upgrade-paths"))
        }
        (&Method::GET, ["system", "storage"]) => list(api, r, "system", "storage", None),
        (&Method::GET, ["system", "timezone"]) => timezones(api, r),
        (&Method::GET, ["system", "running-processes"]) => running_processes(api, r),
        (&Method::GET, ["system", "performance", "status"]) => performance(api, r),
        // HA: the lab FortiGate is a standalone unit (no `config system ha` in the lab).
        (
            &Method::GET,
            ["system", name @ ("ha-statistics" | "ha-history" | "ha-peer" | "ha-hw-interface"
            | "ha-backup-hb-used")],
        ) => list(api, r, "system", name, None),
        (&Method::GET, ["system", name @ ("ha-checksums" | "ha-nonsync-checksums")]) => {
            ha_checksums(api, r, name)
        }
        (&Method::GET, ["system", "ha-table-checksums"]) => ha_table_checksums(api, r),
        // Logging.
        (&Method::GET, ["license", "fortianalyzer-status"]) => faz_license(api, r),
        (&Method::GET, ["log", "hourly-disk-usage"]) => {
            list(api, r, "log", "hourly-disk-usage", None)
        }
        (&Method::GET, ["log", "historic-daily-remote-logs"]) => daily_remote_logs(api, r),
        (&Method::GET, ["log", "local-report-list"]) => {
            list(api, r, "log", "local-report-list", None)
        }
        (&Method::GET, ["log", "local-report", "download"]) => no_report(api, r),
        (&Method::POST, ["log", "local-report", "delete"]) => no_report(api, r),
        (&Method::GET, ["log", "forticloud"]) => forticloud(api, r, None),
        (&Method::GET, ["log", "forticloud", "connection"]) => {
            forticloud(api, r, Some("connection"))
        }
        // Users and devices.
        (&Method::GET, ["user", "device"]) => super::mon_system::devices(api, r, "device", None),
        (&Method::GET, ["user", "device", "stats"]) => device_stats(api, r),
        (&Method::GET, ["user", "firewall", "count"]) => {
            // No firewall authentication in the lab: nobody is logged in.
            env(api, r, "user", "firewall").monitor_ok(Some(json!({"count": 0})), Some("count"))
        }
        (&Method::GET, ["user", "proxy"]) => list(api, r, "user", "proxy", None),
        (&Method::GET, ["user", "proxy", "count"]) => {
            env(api, r, "user", "proxy").monitor_ok(Some(json!({"count": 0})), Some("count"))
        }
        (&Method::GET, ["user", "collected-email"]) => {
            list(api, r, "user", "collected-email", None)
        }
        (&Method::POST, ["user", "firewall", "deauth"]) => deauth(api, r),
        // Endpoint control.
        (&Method::GET, ["endpoint-control", "registration", "summary"]) => {
            registration_summary(api, r).await
        }
        // FortiGuard.
        (&Method::GET, ["fortiguard", "service-communication-stats"]) => fortiguard_stats(api, r),
        (&Method::GET, ["network", "fortiguard", "live-services-latency"]) => {
            fortiguard_latency(api, r).await
        }
        (&Method::POST, ["system", "fortiguard", "test-availability"]) => {
            fortiguard_test(api, r).await
        }
        (&Method::POST, ["utm", "rating-lookup", "select"]) => rating_post(api, r).await,
        (&Method::POST, ["system", "fortiguard", "clear-statistics"]) => fortiguard_clear(api, r),
        _ => return None,
    };
    Some(resp)
}

/// An empty list: what a FortiGate without the feature (or its state) answers.
fn list(api: &Api, r: &Req, path: &str, name: &str, action: Option<&str>) -> Response {
    env(api, r, path, name).monitor_ok(Some(json!([])), action)
}

// ------------------------------------------------------------------------------------------
// Routing.

/// The route of `dst` in `routes` (rows of `ipv4_routes`): longest prefix, then lowest
/// distance.
pub fn lookup(routes: &[Value], dst: Ipv4Addr) -> Option<&Value> {
    routes
        .iter()
        .filter_map(|r| {
            let (net, len) = ip_mask(r["ip_mask"].as_str()?);
            let net: Ipv4Addr = net.parse().ok()?;
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            (u32::from(dst) & mask == u32::from(net) & mask).then_some((len, r))
        })
        .max_by_key(|(len, r)| (*len, std::cmp::Reverse(r["distance"].as_u64().unwrap_or(0))))
        .map(|(_, r)| r)
}

/// `GET monitor/router/lookup|lookup-policy?destination=` (the lab has no policy routes, so
/// both answer the routing table's choice).
fn router_lookup(api: &Api, r: &Req, name: &str) -> Response {
    let e = env(api, r, "router", name);
    let Some(dst) = r.query.get("destination") else {
        return e.error(424, None, None, None);
    };
    let Ok(dst) = dst.trim().parse::<Ipv4Addr>() else {
        // Names and IPv6 destinations: the lab has no DNS on the FortiGate and no IPv6.
        return e.error(400, None, None, None);
    };
    let routes = api.dev.config.with(ipv4_routes);
    let results = match lookup(&routes, dst) {
        Some(rt) => json!({"success": true, "network": rt["ip_mask"], "gateway": rt["gateway"],
                           "interface": rt["interface"], "type": rt["type"]}),
        None => json!({"success": false}),
    };
    e.monitor_ok(Some(results), None)
}

/// `GET monitor/router/statistics`: route counts of the routing table.
fn router_statistics(api: &Api, r: &Req) -> Response {
    let routes = api.dev.config.with(ipv4_routes);
    let count = |t: &str| routes.iter().filter(|x| x["type"] == t).count();
    env(api, r, "router", "statistics").monitor_ok(
        Some(
            json!({"total_lines": routes.len(), "total_lines_ipv4": routes.len(),
                    "total_lines_ipv6": 0,
                    "total_proto": {"connect": count("connect"), "static": count("static")}}),
        ),
        None,
    )
}

// ------------------------------------------------------------------------------------------
// Interfaces.

/// `GET monitor/network/arp`: the neighbours the data plane has seen on its connected
/// subnets (source hosts of sessions), with the MAC address EMS reports for that address
/// where one does (the transparent proxy itself sees no MACs) [P: MAC source].
async fn arp(api: &Api, r: &Req) -> Response {
    let hosts = api
        .parts()
        .map(|p| p.dataplane.hosts_seen())
        .unwrap_or_default();
    let macs: Vec<(String, String)> = match api.automation_engine() {
        Some(e) => e
            .ems
            .cached_inventory()
            .into_iter()
            .map(|x| (x.ip, x.mac))
            .collect(),
        None => Vec::new(),
    };
    let now = api.dev.clock.now_secs();
    let list: Vec<Value> = hosts
        .iter()
        .map(|h| {
            let ip = h.ip.to_string();
            let mac = macs
                .iter()
                .find(|(a, _)| *a == ip)
                .map(|(_, m)| m.clone())
                .unwrap_or_default();
            json!({"ip": ip, "age": (now - h.last_seen).max(0), "mac": mac,
                   "interface": h.interface})
        })
        .collect();
    env(api, r, "network", "arp").monitor_ok(Some(Value::Array(list)), None)
}

/// `GET monitor/system/interface/dhcp-status?interface=`: the DHCP client state of an
/// interface (`mode dhcp`); a static interface runs no DHCP client [P: shape].
fn dhcp_status(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "system", "interface");
    let Some(name) = r.query.get("interface").or_else(|| r.query.get("mkey")) else {
        return e.error(424, None, None, None);
    };
    let mode = api.dev.config.with(|config| {
        config
            .table("system interface")
            .and_then(|t| t.entries().iter().find(|x| x.key == name))
            .map(|x| x.scalar("mode").unwrap_or("static").to_string())
    });
    let Some(mode) = mode else {
        return e.error(404, Some(-3), None, Some(Value::from(name)));
    };
    // The lab network has no DHCP server: a DHCP client never gets a lease.
    let status = if mode == "dhcp" { "failed" } else { "stopped" };
    e.monitor_ok(
        Some(json!({"interface": name, "mode": mode, "status": status})),
        Some("dhcp-status"),
    )
}

/// `GET monitor/system/interface/kernel-interfaces`: the kernel's interfaces (every
/// `config system interface` entry, index in configuration order) [P: shape].
fn kernel_interfaces(api: &Api, r: &Req) -> Response {
    let list: Vec<Value> = api.dev.config.with(|config| {
        config
            .table("system interface")
            .map(|table| {
                table
                    .entries()
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        json!({"name": x.key, "index": i + 3,
                               "type": x.scalar("type").unwrap_or("vlan")})
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    env(api, r, "system", "interface")
        .monitor_ok(Some(Value::Array(list)), Some("kernel-interfaces"))
}

// ------------------------------------------------------------------------------------------
// System.

/// `GET monitor/system/firmware`: the running image; no FortiGuard image server in the lab,
/// so nothing is available to upgrade to.
fn firmware(api: &Api, r: &Req) -> Response {
    let v = api.dev.version;
    env(api, r, "system", "firmware").monitor_ok(
        Some(json!({
            "current": {"platform-id": "FGVM64", "version": v.rest_string(),
                        "major": v.major, "minor": v.minor, "patch": v.patch,
                        "build": v.build(), "branch-point": v.build(), "source": "fortinet"},
            "available": [],
        })),
        None,
    )
}

/// `GET monitor/system/timezone`: the zones `config system global` / `set timezone`
/// accepts (the table FortiAnalyzer uses too), the configured one marked [P: shape].
fn timezones(api: &Api, r: &Req) -> Response {
    let current = api.dev.config.with(|config| {
        config
            .single("system global")
            .and_then(|g| g.scalar("timezone"))
            .unwrap_or("04")
            .to_string()
    });
    let list: Vec<Value> = fortilab_core::tz::ZONES
        .iter()
        .map(|(code, off, _)| {
            json!({"tzid": code, "name": fortilab_core::tz::display(code).unwrap_or_default(),
                   "offset": off, "current": *code == current.as_str()})
        })
        .collect();
    env(api, r, "system", "timezone").monitor_ok(Some(Value::Array(list)), None)
}

/// One `/proc/self/task/<tid>/stat` line → (name, state, CPU ticks).
fn task_stat(stat: &str) -> Option<(String, String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((name, f.first()?.to_string(), ticks))
}

/// `GET monitor/system/running-processes`: the FortiGate's own threads (the twin is one
/// process: its threads stand for the daemons), with state and CPU time [P: shape].
fn running_processes(api: &Api, r: &Req) -> Response {
    let mut list = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let tid = t.file_name().to_string_lossy().to_string();
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            if let Some((name, state, ticks)) = task_stat(&stat) {
                list.push(json!({"pid": tid.parse::<u64>().unwrap_or(0), "name": name,
                                 "state": state, "cpu_time": ticks as f64 / 100.0}));
            }
        }
    }
    list.sort_by_key(|x| x["pid"].as_u64());
    env(api, r, "system", "running-processes").monitor_ok(Some(Value::Array(list)), None)
}

/// `GET monitor/system/performance/status`: CPU and memory of this FortiGate process and
/// its uptime [P: field subset].
fn performance(api: &Api, r: &Req) -> Response {
    let (ticks, rss, total) = proc_usage();
    let cpu = super::mon_system::cpu_percent(ticks);
    let uptime = super::mon_system::process_uptime_secs();
    env(api, r, "system", "performance").monitor_ok(
        Some(json!({
            "cpu": {"user": cpu, "system": 0, "nice": 0, "idle": 100 - cpu.min(100), "iowait": 0},
            "mem": {"total": total * 1024, "used": rss * 1024,
                    "free": total.saturating_sub(rss) * 1024},
            "uptime": uptime,
        })),
        Some("status"),
    )
}

/// A FortiOS-style 32-hex-digit checksum of a text.
fn checksum(text: &str) -> String {
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16])
}

/// `GET monitor/system/ha-checksums|ha-nonsync-checksums`: a standalone unit lists itself
/// with the checksums of its running configuration (global and `root` are the one VDOM's).
fn ha_checksums(api: &Api, r: &Req, name: &str) -> Response {
    let v = api.dev.version;
    let sum = api
        .dev
        .config
        .with(|c| checksum(&crate::config::show::show(c, v, false, None)));
    env(api, r, "system", name).monitor_ok(
        Some(json!([{"is_manage_master": 1, "is_root_master": 1,
                     "serial_no": api.dev.serial,
                     "checksum": {"global": sum, "root": sum, "all": sum}}])),
        None,
    )
}

/// `GET monitor/system/ha-table-checksums?serial_no=&vdom_name=`: per table of the running
/// configuration, the checksum of its `show` text (this unit only: standalone).
fn ha_table_checksums(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "system", "ha-table-checksums");
    let Some(sn) = r.query.get("serial_no") else {
        return e.error(424, None, None, None);
    };
    if sn != api.dev.serial {
        return e.error(404, Some(-3), None, Some(Value::from(sn)));
    }
    let v = api.dev.version;
    let text = api
        .dev
        .config
        .with(|c| crate::config::show::show(c, v, false, None));
    let mut sums = serde_json::Map::new();
    let mut table: Option<(String, String)> = None;
    for line in text.lines() {
        if table.is_none() {
            if let Some(path) = line.strip_prefix("config ") {
                table = Some((path.trim().to_string(), String::new()));
                continue;
            }
        }
        if let Some((path, body)) = table.as_mut() {
            if line == "end" {
                sums.insert(path.clone(), Value::from(checksum(body)));
                table = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    e.monitor_ok(Some(Value::Object(sums)), None)
}

// ------------------------------------------------------------------------------------------
// Logging.

/// `GET monitor/license/fortianalyzer-status`: the FortiAnalyzer this FortiGate logs to, as
/// the log channel registered with it.
fn faz_license(api: &Api, r: &Req) -> Response {
    let f = api.dev.fabric().faz();
    let server = api.dev.config.with(|config| {
        crate::forward::FazSettings::from_config(config)
            .map(|s| s.server)
            .unwrap_or_default()
    });
    env(api, r, "license", "fortianalyzer-status").monitor_ok(
        Some(json!({"server": server, "serial": f.faz_serial,
                    "registration": f.registration, "connected": f.connected,
                    "status": if server.is_empty() { "disable" }
                              else if f.registration == "registered" { "licensed" }
                              else { "unlicensed" }})),
        None,
    )
}

/// `GET monitor/log/historic-daily-remote-logs?server=faz`: logs delivered to the remote
/// server today (the log channel's acknowledged count since this FortiGate started) [P].
fn daily_remote_logs(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "log", "historic-daily-remote-logs");
    let server = r.query.get("server").unwrap_or("faz");
    let sent = match server {
        "faz" | "fortianalyzer" => api.dev.fabric().faz().sent_logs,
        "forticloud" | "fortiguard" => 0,
        _ => return e.error(400, None, None, None),
    };
    let (date, _) = api.dev.clock.date_time(api.dev.clock.now_ns());
    e.monitor_ok(
        Some(json!([{"date": date, "server": server, "logs": sent}])),
        None,
    )
}

/// `log/local-report/download|delete?mkey=`: a VM64 without a log disk keeps no local
/// reports, so every name is unknown.
fn no_report(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "log", "local-report");
    let mkey = r
        .json_object()
        .ok()
        .and_then(|b| b.get("mkey").and_then(Value::as_str).map(String::from))
        .or_else(|| r.query.get("mkey").map(String::from));
    match mkey {
        None => e.error(424, None, None, None),
        Some(k) => e.error(404, Some(-3), None, Some(Value::from(k))),
    }
}

/// `GET monitor/log/forticloud[/connection]`: the lab has no FortiCloud, so logging to it
/// is neither available nor connected.
fn forticloud(api: &Api, r: &Req, action: Option<&str>) -> Response {
    let results = match action {
        Some(_) => json!({"status": "disconnected", "connected": false}),
        None => json!({"is_available": false, "is_enabled": false, "status": "disable",
                       "connected": false}),
    };
    env(api, r, "log", "forticloud").monitor_ok(Some(results), action)
}

// ------------------------------------------------------------------------------------------
// Users and devices.

/// `GET monitor/user/device/stats`: the hosts the data plane has seen, counted by
/// interface and online state (seen in the last 5 lab minutes) [P: shape].
fn device_stats(api: &Api, r: &Req) -> Response {
    let hosts = api
        .parts()
        .map(|p| p.dataplane.hosts_seen())
        .unwrap_or_default();
    let now = api.dev.clock.now_secs();
    let online = hosts.iter().filter(|h| now - h.last_seen < 300).count();
    let mut by = serde_json::Map::new();
    for h in &hosts {
        let n = by.get(&h.interface).and_then(Value::as_u64).unwrap_or(0) + 1;
        by.insert(h.interface.clone(), Value::from(n));
    }
    env(api, r, "user", "device").monitor_ok(
        Some(json!({"total": hosts.len(), "online": online,
                    "offline": hosts.len() - online, "interface": by})),
        Some("stats"),
    )
}

/// `POST monitor/user/firewall/deauth` (`user_type`, `id`, `ip`, `all`): no firewall user
/// is ever authenticated in the lab, so there is nobody to log out.
fn deauth(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "user", "firewall");
    if r.json_object().is_err() {
        return e.error(400, None, None, None);
    }
    e.monitor_ok(Some(json!({"deauthenticated": 0})), Some("deauth"))
}

// ------------------------------------------------------------------------------------------
// Endpoint control.

/// `GET monitor/endpoint-control/registration/summary`: the endpoints EMS reports, counted
/// (from the connectors' inventories, fetched now) [P: shape].
async fn registration_summary(api: &Api, r: &Req) -> Response {
    let inv = match api.automation_engine() {
        Some(e) => e.ems.inventory().await,
        None => Vec::new(),
    };
    let online = inv.iter().filter(|x| x.online).count();
    env(api, r, "endpoint-control", "registration").monitor_ok(
        Some(
            json!({"total": inv.len(), "registered": inv.len(), "online": online,
                    "offline": inv.len() - online,
                    "quarantined": inv.iter().filter(|x| x.quarantined).count(),
                    "on_net": inv.iter().filter(|x| x.onnet).count()}),
        ),
        Some("summary"),
    )
}

// ------------------------------------------------------------------------------------------
// FortiGuard.

/// `GET monitor/fortiguard/service-communication-stats`: the web filter's rating queries to
/// the FortiGuard service (the lab Internet) [P: shape].
fn fortiguard_stats(api: &Api, r: &Req) -> Response {
    let results = match api.parts() {
        Some(p) => {
            let s = &p.dataplane.internet.stats;
            json!([{"service": "webfilter", "queries": s.queries.load(Ordering::Relaxed),
                    "cache_hits": s.cache_hits.load(Ordering::Relaxed),
                    "failures": s.failures.load(Ordering::Relaxed),
                    "last_rtt_ms": s.last_rtt_us.load(Ordering::Relaxed) as f64 / 1000.0}])
        }
        None => json!([]),
    };
    env(api, r, "fortiguard", "service-communication-stats").monitor_ok(Some(results), None)
}

/// `GET monitor/network/fortiguard/live-services-latency`: one rating query timed now.
async fn fortiguard_latency(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "network", "fortiguard");
    let Some(p) = api.parts() else {
        return e.error(500, None, None, None);
    };
    let results = match p.dataplane.internet.probe().await {
        Ok(rtt) => json!([{"service": "webfilter", "latency": rtt.as_secs_f64() * 1000.0,
                           "status": "up"}]),
        Err(_) => json!([{"service": "webfilter", "latency": -1, "status": "down"}]),
    };
    e.monitor_ok(Some(results), Some("live-services-latency"))
}

/// `POST monitor/system/fortiguard/test-availability`: a rating query to the service now.
async fn fortiguard_test(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "system", "fortiguard");
    if r.json_object().is_err() {
        return e.error(400, None, None, None);
    }
    let Some(p) = api.parts() else {
        return e.error(500, None, None, None);
    };
    match p.dataplane.internet.probe().await {
        Ok(rtt) => e.monitor_ok(
            Some(json!({"result": "success", "latency": rtt.as_secs_f64() * 1000.0})),
            Some("test-availability"),
        ),
        Err(msg) => e.monitor_ok(
            Some(json!({"result": "failure", "error": msg})),
            Some("test-availability"),
        ),
    }
}

/// `POST monitor/utm/rating-lookup/select` (`url`: one or a list): the FortiGuard category
/// of each URL from the web filter's own rating source, as the GET form answers.
async fn rating_post(api: &Api, r: &Req) -> Response {
    let e = env(api, r, "utm", "rating-lookup");
    let Ok(body) = r.json_object() else {
        return e.error(400, None, None, None);
    };
    let urls: Vec<String> = match body.get("url") {
        Some(Value::String(u)) => vec![u.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    if urls.is_empty() {
        return e.error(424, None, None, None);
    }
    let Some(p) = api.parts() else {
        return e.error(500, None, None, None);
    };
    let mut out = Vec::new();
    for u in &urls {
        let host = u
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_string();
        let rating = p.dataplane.internet.rating(&host).await;
        out.push(json!({"url": u, "category_id": rating.cat,
                        "category_description": rating.catdesc}));
    }
    e.monitor_ok(Some(Value::Array(out)), Some("select"))
}

/// `POST monitor/system/fortiguard/clear-statistics`: zeroes the rating statistics.
fn fortiguard_clear(api: &Api, r: &Req) -> Response {
    if let Some(p) = api.parts() {
        let s = &p.dataplane.internet.stats;
        s.queries.store(0, Ordering::Relaxed);
        s.cache_hits.store(0, Ordering::Relaxed);
        s.failures.store(0, Ordering::Relaxed);
    }
    env(api, r, "system", "fortiguard").monitor_ok(None, Some("clear-statistics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_lookup_takes_the_longest_prefix() {
        let routes = vec![
            json!({"ip_mask": "10.115.2.0/24", "interface": "port3", "distance": 0}),
            json!({"ip_mask": "10.115.1.0/24", "interface": "port1", "distance": 0}),
            json!({"ip_mask": "0.0.0.0/0", "interface": "port1", "distance": 10}),
        ];
        let at = |ip: &str| lookup(&routes, ip.parse().unwrap()).map(|r| r["ip_mask"].clone());
        assert_eq!(at("10.115.2.52"), Some(json!("10.115.2.0/24")));
        assert_eq!(at("10.115.1.20"), Some(json!("10.115.1.0/24")));
        assert_eq!(at("93.184.216.34"), Some(json!("0.0.0.0/0")));
        assert_eq!(lookup(&routes[..2], "8.8.8.8".parse().unwrap()), None);
    }

    #[test]
    fn task_stat_reads_names_with_spaces() {
        let line = "123 (tokio-rt worker) S 1 2 3 4 5 6 7 8 9 10 40 2 0 0 20 0";
        assert_eq!(
            task_stat(line),
            Some(("tokio-rt worker".to_string(), "S".to_string(), 42))
        );
        assert_eq!(checksum("a").len(), 32);
        assert_ne!(checksum("a"), checksum("b"));
    }
}
