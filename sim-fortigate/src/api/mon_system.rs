//! Monitor selectors about the system itself: interfaces, resources, time, administrators,
//! the Security Fabric tree and FortiGuard. Every answer is computed from the lab's state:
//! `config system interface` with the data plane's traffic counters, the configuration's
//! object counts, this process's CPU and memory, the GUI/REST session table, the fabric
//! connectors' state and the lab Internet (FortiGuard ratings).

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::{Api, Env, Req};
use crate::config::Config;

/// The interface MAC a VM64 port has (stable per device and port) [P].
pub fn port_mac(serial: &str, name: &str) -> String {
    let h = serial
        .bytes()
        .chain(name.bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
    let b = h.to_be_bytes();
    format!("00:0c:29:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// `a.b.c.d m.m.m.m` or `a.b.c.d/n` → (address, prefix length).
pub(crate) fn ip_mask(v: &str) -> (String, u32) {
    let mut it = v.split_whitespace();
    let first = it.next().unwrap_or("0.0.0.0");
    if let Some((a, n)) = first.split_once('/') {
        return (a.to_string(), n.parse().unwrap_or(0));
    }
    let mask = it
        .next()
        .and_then(|m| m.parse::<std::net::Ipv4Addr>().ok())
        .map(|m| u32::from(m).count_ones())
        .unwrap_or(0);
    (first.to_string(), mask)
}

/// One row of `monitor/system/interface` (6.2/6.4 field set, exporter fixture).
fn interface_row(
    api: &Api,
    e: &crate::config::tree::Entry,
    counters: Option<&crate::dataplane::IntfCounters>,
) -> Value {
    let (ip, mask) = ip_mask(e.scalar("ip").unwrap_or("0.0.0.0 0.0.0.0"));
    let up = e.scalar("status").unwrap_or("up") == "up";
    let c = counters.copied().unwrap_or_default();
    let mut m = Map::new();
    m.insert("id".into(), Value::from(e.key.clone()));
    m.insert("name".into(), Value::from(e.key.clone()));
    m.insert("alias".into(), Value::from(e.scalar("alias").unwrap_or("")));
    m.insert("mac".into(), Value::from(port_mac(&api.dev.serial, &e.key)));
    m.insert("ip".into(), Value::from(ip));
    m.insert("mask".into(), Value::from(mask));
    m.insert("link".into(), Value::from(up));
    m.insert("speed".into(), Value::from(if up { 10000.0 } else { 0.0 }));
    m.insert("duplex".into(), Value::from(if up { 1 } else { 0 }));
    m.insert("tx_packets".into(), Value::from(c.tx_packets));
    m.insert("rx_packets".into(), Value::from(c.rx_packets));
    m.insert("tx_bytes".into(), Value::from(c.tx_bytes));
    m.insert("rx_bytes".into(), Value::from(c.rx_bytes));
    m.insert("tx_errors".into(), Value::from(0));
    m.insert("rx_errors".into(), Value::from(0));
    if e.scalar("type") == Some("vlan") || e.scalar("type").is_none() {
        if let Some(parent) = e.scalar("interface") {
            m.insert(
                "vlanid".into(),
                Value::from(
                    e.scalar("vlanid")
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0),
                ),
            );
            m.insert("interface".into(), Value::from(parent));
        }
    }
    Value::Object(m)
}

/// `GET monitor/system/interface[/select]` (`interface_name`, `include_vlan`,
/// `include_aggregate`): physical ports always, VLANs and aggregates when asked; tunnels
/// (`ssl.root`) never. Results are an object keyed by interface name.
pub fn interfaces(api: &Api, r: &Req) -> axum::response::Response {
    let counters = api
        .parts()
        .map(|p| p.dataplane.interface_counters())
        .unwrap_or_default();
    let want = r.query.get("interface_name").map(String::from);
    let vlan = r.query.flag("include_vlan");
    let aggregate = r.query.flag("include_aggregate");
    let results = api.dev.config.with(|config| {
        let mut m = Map::new();
        if let Some(t) = config.table("system interface") {
            for e in t.entries() {
                let ty = e.scalar("type").unwrap_or("vlan");
                let shown = match ty {
                    "physical" => true,
                    "vlan" => vlan,
                    "aggregate" | "redundant" => aggregate,
                    _ => false,
                };
                if !shown || want.as_ref().is_some_and(|w| *w != e.key) {
                    continue;
                }
                m.insert(e.key.clone(), interface_row(api, e, counters.get(&e.key)));
            }
        }
        m
    });
    env(api, r, "system", "interface").monitor_ok(Some(Value::Object(results)), Some("select"))
}

/// `GET monitor/system/available-interfaces` (`mkey`, `view_type`): every interface and
/// zone a policy can name, with its type, address, role and link [P: field subset].
pub fn available_interfaces(api: &Api, r: &Req) -> axum::response::Response {
    let want = r.query.get("mkey").map(String::from);
    let list = api.dev.config.with(|c| {
        let mut v = Vec::new();
        if let Some(t) = c.table("system interface") {
            for e in t.entries() {
                if want.as_ref().is_some_and(|w| *w != e.key) {
                    continue;
                }
                let (ip, mask) = ip_mask(e.scalar("ip").unwrap_or("0.0.0.0 0.0.0.0"));
                let up = e.scalar("status").unwrap_or("up") == "up";
                let mut m = Map::new();
                m.insert("name".into(), Value::from(e.key.clone()));
                m.insert("alias".into(), Value::from(e.scalar("alias").unwrap_or("")));
                m.insert(
                    "type".into(),
                    Value::from(e.scalar("type").unwrap_or("vlan")),
                );
                m.insert(
                    "role".into(),
                    Value::from(e.scalar("role").unwrap_or("undefined")),
                );
                m.insert(
                    "ipv4_addresses".into(),
                    if ip == "0.0.0.0" {
                        json!([])
                    } else {
                        json!([{"ip": ip, "netmask": mask, "cidr_netmask": mask}])
                    },
                );
                m.insert(
                    "mac_address".into(),
                    Value::from(port_mac(&api.dev.serial, &e.key)),
                );
                m.insert("link".into(), Value::from(if up { "up" } else { "down" }));
                m.insert("status".into(), Value::from(if up { "up" } else { "down" }));
                m.insert("is_used".into(), Value::from(interface_used(c, &e.key)));
                v.push(Value::Object(m));
            }
        }
        for path in ["system zone"] {
            if let Some(t) = c.table(path) {
                for z in t.entries() {
                    if want.as_ref().is_some_and(|w| *w != z.key) {
                        continue;
                    }
                    v.push(json!({"name": z.key, "type": "zone", "is_zone": true,
                                  "members": z.list("interface"),
                                  "is_used": interface_used(c, &z.key)}));
                }
            }
        }
        v
    });
    env(api, r, "system", "available-interfaces").monitor_ok(Some(Value::Array(list)), None)
}

/// Whether a policy names the interface or zone.
fn interface_used(c: &Config, name: &str) -> bool {
    c.table("firewall policy").is_some_and(|table| {
        table.entries().iter().any(|p| {
            p.list("srcintf").iter().any(|x| x == name)
                || p.list("dstintf").iter().any(|x| x == name)
        })
    })
}

/// This process's CPU time (user + system, clock ticks) and resident memory (kB), from
/// `/proc/self` (zeros where it cannot be read).
pub(crate) fn proc_usage() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    (ticks, rss, total)
}

/// Seconds since this process started (`/proc/self/stat` start time vs `/proc/uptime`).
pub(crate) fn process_uptime_secs() -> u64 {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let start: f64 = after
        .split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (uptime - start / 100.0).max(0.0) as u64
}

/// CPU percent of this process since it started (ticks / elapsed).
pub(crate) fn cpu_percent(ticks: u64) -> u64 {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let start: f64 = after
        .split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let hz = 100.0;
    let elapsed = uptime - start / hz;
    if elapsed <= 0.0 {
        return 0;
    }
    ((ticks as f64 / hz) / elapsed * 100.0)
        .round()
        .clamp(0.0, 100.0) as u64
}

/// `GET monitor/system/resource/usage` (`resource`, `interval`, `scope`): `current` and
/// `historical` per resource, as the 6.2/6.4 fixture shapes them. CPU and memory are this
/// FortiGate process's; `sessions` are the data plane's sessions; `disk` is 0 (a VM64
/// without a log disk) [P: one sample repeated as history].
pub fn resource_usage(api: &Api, r: &Req) -> axum::response::Response {
    let (ticks, rss, total) = proc_usage();
    let cpu = cpu_percent(ticks);
    let mem = (rss * 100).checked_div(total).unwrap_or(0);
    let sessions = api
        .parts()
        .map(|p| {
            p.dataplane
                .stats
                .connections
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .unwrap_or(0);
    let now_ms = api.dev.clock.now_ns() / 1_000_000;
    let series = |v: u64| -> Value {
        let mut hist = Map::new();
        for (name, step) in [
            ("1-min", 3_000i64),
            ("10-min", 30_000),
            ("30-min", 90_000),
            ("1-hour", 180_000),
            ("12-hour", 2_160_000),
            ("24-hour", 4_320_000),
        ] {
            let values: Vec<Value> = (0..20).map(|i| json!([now_ms - i * step, v])).collect();
            hist.insert(
                name.into(),
                json!({"values": values, "start": now_ms - 19 * step, "end": now_ms}),
            );
        }
        json!([{"current": v, "historical": hist}])
    };
    let want = r.query.get("resource");
    let mut m = Map::new();
    for (k, v) in [
        ("cpu", cpu),
        ("mem", mem),
        ("disk", 0),
        ("sessions", sessions),
        ("session_rate", 0),
        ("setup_rate", 0),
        ("disk_lograte", 0),
        ("faz_lograte", 0),
        ("forticloud_lograte", 0),
    ] {
        if want.is_none_or(|w| w == k) {
            m.insert(k.into(), series(v));
        }
    }
    env(api, r, "system", "resource").monitor_ok(Some(Value::Object(m)), Some("usage"))
}

/// The CMDB tables counted by `system/global-resources` / `vdom-resource`, with the VM64
/// maxima [P: the maxima].
const RESOURCES: &[(&str, &str, u64)] = &[
    ("firewall.address", "firewall address", 10000),
    ("firewall.addrgrp", "firewall addrgrp", 2500),
    ("firewall.policy", "firewall policy", 10000),
    ("firewall.service.custom", "firewall service custom", 4096),
    ("firewall.service.group", "firewall service group", 2000),
    (
        "firewall.schedule.recurring",
        "firewall schedule recurring",
        256,
    ),
    ("webfilter.profile", "webfilter profile", 500),
    ("webfilter.urlfilter", "webfilter urlfilter", 500),
    ("system.admin", "system admin", 500),
    ("system.api-user", "system api-user", 500),
    (
        "system.automation-trigger",
        "system automation-trigger",
        500,
    ),
    ("system.automation-action", "system automation-action", 500),
    ("system.automation-stitch", "system automation-stitch", 500),
    ("endpoint-control.fctems", "endpoint-control fctems", 7),
];

fn resource_counts(api: &Api) -> Map<String, Value> {
    api.dev.config.with(|config| {
        let mut m = Map::new();
        for (name, path, max) in RESOURCES {
            let n = config.table(path).map(|t| t.entries().len()).unwrap_or(0);
            m.insert(
                (*name).into(),
                json!({"current_usage": n, "usage_percent": (n as u64 * 100).checked_div(*max).unwrap_or(0),
                       "max": max, "min_custom_value": 0, "max_custom_value": max,
                       "guaranteed": 0, "custom_max": 0, "global_max": max}),
            );
        }
        m
    })
}

/// `GET monitor/system/global-resources`: object counts of the running configuration.
pub fn global_resources(api: &Api, r: &Req) -> axum::response::Response {
    env(api, r, "system", "global-resources")
        .monitor_ok(Some(Value::Object(resource_counts(api))), None)
}

/// `GET monitor/system/vdom-resource`: the same counts for the one VDOM (`root`).
pub fn vdom_resource(api: &Api, r: &Req) -> axum::response::Response {
    let mut m = resource_counts(api);
    m.insert("id".into(), Value::from(0));
    env(api, r, "system", "vdom-resource").monitor_ok(Some(Value::Object(m)), None)
}

/// `GET monitor/system/time`: the lab clock (`time` Unix seconds, GMT offset).
pub fn time(api: &Api, r: &Req) -> axum::response::Response {
    let now = api.dev.clock.now_secs();
    let tz = api.dev.clock.tz_minutes();
    env(api, r, "system", "time").monitor_ok(
        Some(json!({"time": now, "gmt_offset": tz * 60, "timezone": api.dev.clock.tz_string()})),
        None,
    )
}

/// `GET monitor/system/current-admins`: the GUI/REST sessions (token requests hold no
/// session, as on the product).
pub fn current_admins(api: &Api, r: &Req) -> axum::response::Response {
    let now = api.dev.clock.now_ns();
    let list: Vec<Value> = api
        .sessions()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "admin": s.user, "method": "https", "srcaddr": s.lab_peer.to_string(),
                   "time": s.since_ns / 1_000_000_000,
                   "expiry": (now - s.last_ns).max(0) / 1_000_000_000,
                   "profile": s.profile})
        })
        .collect();
    env(api, r, "system", "current-admins").monitor_ok(Some(Value::Array(list)), None)
}

/// `GET monitor/system/interface-connected-admins-info?interface=` [P]: administrators
/// connected through an interface (the management port carries every lab session).
pub fn interface_admins(api: &Api, r: &Req) -> axum::response::Response {
    let e = env(api, r, "system", "interface-connected-admins-info");
    let Some(intf) = r.query.get("interface") else {
        return e.error(424, None, None, None);
    };
    let mgmt = api.dev.config.with(|config| {
        config
            .table("system interface")
            .and_then(|table| {
                table
                    .entries()
                    .iter()
                    .find(|x| x.scalar("allowaccess").is_some_and(|a| a.contains("https")))
                    .map(|x| x.key.clone())
            })
            .unwrap_or_else(|| "port1".into())
    });
    let n = if intf == mgmt {
        api.sessions().len()
    } else {
        0
    };
    e.monitor_ok(Some(json!({"admins": n, "interface": intf})), None)
}

/// `GET monitor/system/csf`: the Security Fabric tree rooted at this FortiGate, with the
/// FortiAnalyzer and EMS connectors as fabric devices [P: field subset].
pub fn csf(api: &Api, r: &Req) -> axum::response::Response {
    let fabric = api.dev.fabric();
    let faz = fabric.faz();
    let (faz_server, ems) = api.dev.config.with(|config| {
        (
            crate::forward::FazSettings::from_config(config).map(|f| f.server),
            crate::automation::ems::configured(config, api.dev.version),
        )
    });
    let mut devices = Vec::new();
    if let Some(server) = faz_server {
        devices.push(
            json!({"type": "fortianalyzer", "serial": faz.faz_serial, "ip": server,
                            "connected": faz.connected, "registration": faz.registration}),
        );
    }
    for e in ems {
        let st = fabric.ems(&e.name);
        devices.push(
            json!({"type": "fortiems", "name": e.name, "serial": st.ems_serial,
                            "ip": e.server, "connected": st.connected, "status": st.status}),
        );
    }
    let ip = api.mgmt_ip().to_string();
    let results = json!({
        "devices": {"fortigate": [{
            "path": api.dev.serial, "mgmt_ip_str": ip, "mgmt_port": 443, "sync_mode": 1,
            "saml_role": "disable", "admin_port": 443, "serial": api.dev.serial,
            "host_name": api.dev.hostname(), "firmware_version_major": api.dev.version.major,
            "firmware_version_minor": api.dev.version.minor,
            "firmware_version_patch": api.dev.version.patch,
            "firmware_version_build": api.dev.version.build(), "is_root": true,
            "downstream": [], "fabric_devices": devices,
        }]},
        "matched_devices": [],
    });
    env(api, r, "system", "csf").monitor_ok(Some(results), None)
}

/// `GET monitor/system/csf/pending-authorizations`: none (this FortiGate is the fabric root
/// and no downstream device asks to join).
pub fn csf_pending(api: &Api, r: &Req) -> axum::response::Response {
    env(api, r, "system", "csf").monitor_ok(Some(json!([])), Some("pending-authorizations"))
}

/// `GET monitor/webfilter/fortiguard-categories`: the FortiGuard category list of this
/// FortiOS version (the list the web filter profiles use).
pub fn fortiguard_categories(api: &Api, r: &Req) -> axum::response::Response {
    let v = api.dev.version;
    let mut list: Vec<Value> =
        fortilab_core::fortiguard::categories(v.major as u32, v.minor as u32)
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name}))
            .collect();
    if r.query.flag("include_unrated") {
        list.push(json!({"id": 0, "name": "Unrated"}));
    }
    env(api, r, "webfilter", "fortiguard-categories").monitor_ok(Some(Value::Array(list)), None)
}

/// `GET monitor/system/fortiguard/server-info`: the FortiGuard servers this FortiGate
/// rates URLs with (the lab Internet's rating service) [P: field subset].
pub fn fortiguard_server_info(api: &Api, r: &Req) -> axum::response::Response {
    let up = api
        .parts()
        .is_some_and(|p| p.dataplane.internet.configured());
    let list = if up {
        json!([{"ip": "lab-internet", "port": 443, "weight": 0, "rtt": 1, "flags": "I",
                "tz": api.dev.clock.tz_minutes() / 60, "service": "webfilter", "status": "up"}])
    } else {
        json!([])
    };
    env(api, r, "system", "fortiguard").monitor_ok(Some(list), Some("server-info"))
}

/// `GET monitor/license/status`: the FortiGuard services of the lab VM [P: statuses].
pub fn license_status(api: &Api, r: &Req) -> axum::response::Response {
    let up = api
        .parts()
        .is_some_and(|p| p.dataplane.internet.configured());
    let svc = |s: &str| json!({"status": s, "type": "paid", "expires": 1924991999});
    let licensed = if up { "licensed" } else { "expired" };
    env(api, r, "license", "status").monitor_ok(
        Some(json!({
            "fortiguard": {"status": if up { "connected" } else { "disconnected" }},
            "forticare": {"status": "registered", "account": "lab@fortilab.invalid"},
            "vdom": {"status": "licensed", "max": 10, "used": 1, "type": "default"},
            "web_filtering": svc(licensed),
            "antivirus": svc(licensed),
            "ips": svc(licensed),
            "industrial_db": svc(licensed),
            "forticlient": {"status": "licensed", "type": "trial", "max": 2000},
            "vm": {"status": "valid", "type": "standard", "cpu_max": 2, "mem_max": 24576},
        })),
        None,
    )
}

/// `GET monitor/utm/rating-lookup?url=`: the FortiGuard category of a URL, from the same
/// rating service the web filter uses.
pub async fn rating_lookup(api: &Api, r: &Req) -> axum::response::Response {
    let e = env(api, r, "utm", "rating-lookup");
    let urls: Vec<String> = r.query.all("url").map(String::from).collect();
    if urls.is_empty() {
        return e.error(424, None, None, None);
    }
    let Some(parts) = api.parts() else {
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
        let rating = parts.dataplane.internet.rating(&host).await;
        out.push(json!({"url": u, "category_id": rating.cat,
                        "category_description": rating.catdesc}));
    }
    let results = if out.len() == 1 {
        out.remove(0)
    } else {
        Value::Array(out)
    };
    e.monitor_ok(Some(results), Some("select"))
}

/// `GET monitor/router/ipv4` (`ip_mask`, `interface`, `type`): the connected subnets of
/// `config system interface` and the default route out of the wan side (the lab's routing)
/// [P: field subset].
pub fn router_ipv4(api: &Api, r: &Req) -> axum::response::Response {
    let want_intf = r.query.get("interface").map(String::from);
    let want_type = r.query.get("type").map(String::from);
    let mut list = api.dev.config.with(ipv4_routes);
    list.retain(|x| {
        want_intf
            .as_ref()
            .is_none_or(|w| x["interface"] == w.as_str())
            && want_type.as_ref().is_none_or(|t| x["type"] == t.as_str())
    });
    env(api, r, "router", "ipv4").monitor_ok(Some(Value::Array(list)), None)
}

/// The IPv4 routing table of a configuration: the connected subnets of `config system
/// interface` and the default route out of the wan side (the lab's routing).
pub fn ipv4_routes(c: &Config) -> Vec<Value> {
    let net = crate::dataplane::net::Network::from_config(c);
    let mut v = Vec::new();
    for i in &net.interfaces {
        let (Some(_), Some((lo, hi))) = (i.ip, i.subnet) else {
            continue;
        };
        let len = 32 - (hi - lo + 1).trailing_zeros().min(32);
        v.push(json!({"ip_version": 4, "type": "connect", "ip_mask": format!("{}/{len}", std::net::Ipv4Addr::from(lo)),
                      "distance": 0, "metric": 0, "priority": 0, "vrf": 0,
                      "gateway": "0.0.0.0", "non_rc_gateway": "0.0.0.0", "interface": i.name,
                      "is_tunnel_route": false, "tunnel_parent": "", "install_date": 0}));
    }
    if let Some(w) = net.wan() {
        v.push(
            json!({"ip_version": 4, "type": "static", "ip_mask": "0.0.0.0/0",
                      "distance": 10, "metric": 0, "priority": 1, "vrf": 0,
                      "gateway": "0.0.0.0", "non_rc_gateway": "0.0.0.0", "interface": w.name,
                      "is_tunnel_route": false, "tunnel_parent": "", "install_date": 0}),
        );
    }
    v
}

/// `GET monitor/system/sensor-info` and `system/interface/transceivers`: a VM has neither
/// hardware sensors nor transceivers: an empty list, as a FortiGate-VM answers.
pub fn empty_list(
    api: &Api,
    r: &Req,
    path: &str,
    name: &str,
    action: Option<&str>,
) -> axum::response::Response {
    env(api, r, path, name).monitor_ok(Some(json!([])), action)
}

/// `GET monitor/system/vm-information`: the VM licence of the lab unit [P: field subset].
pub fn vm_information(api: &Api, r: &Req) -> axum::response::Response {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (_, _, total_kb) = proc_usage();
    env(api, r, "system", "vm-information").monitor_ok(
        Some(
            json!({"type": "v-64", "license_model": "perpetual", "cpu_used": cpus,
                    "cpu_max": 2, "mem_used": total_kb / 1024, "mem_max": 2048,
                    "valid": true, "status": "valid"}),
        ),
        None,
    )
}

/// `GET monitor/user/device/query` and `user/detected-device`: the source hosts the data
/// plane has seen (address, ingress interface, first/last seen on the lab clock); the proxy
/// sees no MAC addresses, so none is reported [P: field subset].
pub fn devices(api: &Api, r: &Req, name: &str, action: Option<&str>) -> axum::response::Response {
    let hosts = api
        .parts()
        .map(|p| p.dataplane.hosts_seen())
        .unwrap_or_default();
    let now = api.dev.clock.now_secs();
    let list: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({"ipv4_address": h.ip.to_string(), "master_mac": "", "mac": "",
                   "detected_interface": h.interface, "is_online": now - h.last_seen < 300,
                   "first_seen": h.first_seen, "last_seen": h.last_seen,
                   "sessions": h.sessions, "tx_bytes": h.sent_bytes, "rx_bytes": h.rcvd_bytes,
                   "hardware_vendor": "", "os_name": "", "hostname": ""})
        })
        .collect();
    env(api, r, "user", name).monitor_ok(Some(Value::Array(list)), action)
}

pub(crate) fn env<'a>(api: &'a Api, r: &'a Req, path: &str, name: &str) -> Env<'a> {
    Env {
        api,
        method: &r.method,
        path: path.into(),
        name: name.into(),
        vdom: if r.query.flag("global") {
            "global".into()
        } else {
            r.query.get("vdom").unwrap_or("root").to_string()
        },
    }
}

/// Whether `ip` is in `ip/prefix`-style `net` (both v4).
pub fn in_subnet(ip: IpAddr, net: &str) -> bool {
    let (a, n) = ip_mask(net);
    match (ip, a.parse::<std::net::Ipv4Addr>()) {
        (IpAddr::V4(ip), Ok(a)) if n <= 32 => {
            let m = if n == 0 { 0 } else { u32::MAX << (32 - n) };
            u32::from(ip) & m == u32::from(a) & m
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_macs() {
        assert_eq!(
            ip_mask("10.115.2.1 255.255.255.0"),
            ("10.115.2.1".into(), 24)
        );
        assert_eq!(ip_mask("10.0.0.1/16"), ("10.0.0.1".into(), 16));
        assert_eq!(ip_mask("0.0.0.0 0.0.0.0"), ("0.0.0.0".into(), 0));
        let a = port_mac("FGVM01", "port1");
        assert_eq!(a, port_mac("FGVM01", "port1"));
        assert_ne!(a, port_mac("FGVM01", "port2"));
        assert!(a.starts_with("00:0c:29:") && a.len() == 17, "{a}");
        assert!(in_subnet(
            "10.115.2.52".parse().unwrap(),
            "10.115.2.1 255.255.255.0"
        ));
        assert!(!in_subnet(
            "10.115.3.52".parse().unwrap(),
            "10.115.2.1 255.255.255.0"
        ));
    }
}
