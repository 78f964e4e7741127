//! Traffic and web filter logs in FortiOS format by version (reference §6.1–6.4), written
//! through the device's [`crate::logs::LogWriter`] with a lab event for each.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use fortilab_core::logfmt::LogRecord;

use super::net::Side;
use super::webfilter::WfLog;
use crate::device::Device;
use crate::logs::LogKind;

/// What the logs of one session share.
#[derive(Debug, Clone)]
pub struct SessionLog {
    pub sessionid: u64,
    pub policyid: u64,
    pub poluuid: String,
    pub policyname: String,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub srcside: Side,
    pub dstside: Side,
    pub proto: u8,
    pub service: String,
    /// Source NAT: (transip, transport).
    pub nat: Option<(Ipv4Addr, u16)>,
    pub start_ns: i64,
}

/// Counters and UTM results at session close.
#[derive(Debug, Clone, Default)]
pub struct SessionTotals {
    pub sentbyte: u64,
    pub rcvdbyte: u64,
    pub sentpkt: u64,
    pub rcvdpkt: u64,
    pub countweb: u64,
    /// `block` | `allow` | `passthrough` (None: no UTM event).
    pub utmaction: Option<&'static str>,
    pub threat: bool,
}

/// Packets for a byte count [P]: one per 1460-byte segment plus the handshake/teardown.
pub fn packets(bytes: u64) -> u64 {
    bytes.div_ceil(1460) + 2
}

fn country(ip: Ipv4Addr) -> &'static str {
    if ip.is_private() || ip.is_loopback() || ip.is_link_local() {
        "Reserved"
    } else {
        "N/A"
    }
}

fn v7(dev: &Device) -> bool {
    dev.version.major >= 7
}

fn ep(r: &mut LogRecord, dev: &Device, s: &SessionLog, with_country: bool) {
    r.ip("srcip", IpAddr::V4(*s.src.ip()))
        .int("srcport", s.src.port() as i64);
    if with_country && v7(dev) {
        r.str("srccountry", country(*s.src.ip()));
    }
    r.str("srcintf", s.srcside.intf.clone())
        .str("srcintfrole", s.srcside.role.clone())
        .ip("dstip", IpAddr::V4(*s.dst.ip()))
        .int("dstport", s.dst.port() as i64);
    if with_country && v7(dev) {
        r.str("dstcountry", country(*s.dst.ip()));
    }
    r.str("dstintf", s.dstside.intf.clone())
        .str("dstintfrole", s.dstside.role.clone());
}

/// The traffic/forward log of a session (`action` = `close` | `deny`).
pub fn traffic(dev: &Device, s: &SessionLog, action: &str, t: &SessionTotals) {
    let now = dev.clock.now_ns();
    let duration = ((now - s.start_ns).max(0) / 1_000_000_000).max(0);
    let line = dev.logs.write(
        LogKind {
            logid: "0000000013",
            log_type: "traffic",
            subtype: "forward",
            eventtype: None,
            level: "notice",
        },
        |r| {
            ep(r, dev, s, true);
            if v7(dev) {
                r.int("sessionid", s.sessionid as i64)
                    .int("proto", s.proto as i64)
                    .str("action", action)
                    .int("policyid", s.policyid as i64)
                    .str("policytype", "policy");
                if s.policyid != 0 {
                    r.str("poluuid", s.poluuid.clone());
                    if !s.policyname.is_empty() {
                        r.str("policyname", s.policyname.clone());
                    }
                }
                r.str("service", s.service.clone());
            } else {
                if s.policyid != 0 {
                    r.str("poluuid", s.poluuid.clone());
                }
                r.int("sessionid", s.sessionid as i64)
                    .int("proto", s.proto as i64)
                    .str("action", action)
                    .int("policyid", s.policyid as i64)
                    .str("policytype", "policy")
                    .str("service", s.service.clone())
                    .str("dstcountry", country(*s.dst.ip()))
                    .str("srccountry", country(*s.src.ip()));
            }
            match (action, s.nat) {
                ("deny", _) | (_, None) => {
                    r.str("trandisp", "noop");
                }
                (_, Some((ip, port))) => {
                    r.str("trandisp", "snat")
                        .ip("transip", IpAddr::V4(ip))
                        .int("transport", port as i64);
                }
            }
            r.int("duration", duration)
                .int("sentbyte", t.sentbyte as i64)
                .int("rcvdbyte", t.rcvdbyte as i64)
                .int("sentpkt", t.sentpkt as i64);
            if action != "deny" {
                r.int("rcvdpkt", t.rcvdpkt as i64);
            }
            r.str("appcat", "unscanned");
            if let Some(u) = t.utmaction {
                r.str("utmaction", u);
            }
            if t.countweb > 0 {
                r.int("countweb", t.countweb as i64);
            }
            if action == "deny" {
                r.int("crscore", 30)
                    .int("craction", 131072)
                    .str("crlevel", "high");
            } else if t.threat {
                r.int("crscore", 30)
                    .int("craction", 4194304)
                    .str("crlevel", "high");
            }
        },
    );
    dev.events.emit(
        "log.traffic",
        serde_json::json!({
            "summary": format!("{} {}:{} → {}:{} policy {} {}", action, s.src.ip(), s.src.port(), s.dst.ip(), s.dst.port(), s.policyid, s.service),
            "line": line.line,
            "srcip": s.src.ip().to_string(),
            "dstip": s.dst.ip().to_string(),
            "policyid": s.policyid,
            "action": action,
            "sentbyte": t.sentbyte,
            "rcvdbyte": t.rcvdbyte,
        }),
    );
}

/// What a web filter log is about.
#[derive(Debug, Clone)]
pub struct WfContext<'a> {
    pub profile: &'a str,
    pub hostname: &'a str,
    /// Path (`/download/eicar.com`) and full URL (`http://host/path`).
    pub path: &'a str,
    pub full_url: &'a str,
    pub method: &'a str,
    pub cat: u8,
    pub catdesc: &'a str,
    pub sentbyte: u64,
    pub urlfilter_idx: Option<u64>,
}

/// One utm/webfilter log.
pub fn webfilter(dev: &Device, s: &SessionLog, w: &WfLog, c: &WfContext<'_>) {
    let v72 = dev.version.major > 7 || (dev.version.major == 7 && dev.version.minor >= 2);
    let line = dev.logs.write(
        LogKind {
            logid: w.logid,
            log_type: "utm",
            subtype: "webfilter",
            eventtype: Some(w.eventtype),
            level: w.level,
        },
        |r| {
            r.int("policyid", s.policyid as i64);
            if v7(dev) {
                r.str("poluuid", s.poluuid.clone())
                    .str("policytype", "policy");
            }
            r.int("sessionid", s.sessionid as i64);
            ep(r, dev, s, true);
            r.int("proto", s.proto as i64);
            if v7(dev) {
                r.str("httpmethod", c.method);
            }
            r.str("service", s.service.clone())
                .str("hostname", c.hostname)
                .str("profile", c.profile)
                .str("action", w.action)
                .str("reqtype", "direct")
                .str("url", if v72 { c.full_url } else { c.path })
                .int("sentbyte", c.sentbyte as i64)
                .int("rcvdbyte", 0)
                .str("direction", "outgoing")
                .str("msg", w.msg);
            if let Some(i) = c.urlfilter_idx {
                r.int("urlfilteridx", i as i64)
                    .str("urlfilterlist", "Auto-webfilter-urlfilter");
            }
            if w.with_category {
                r.str(if v72 { "ratemethod" } else { "method" }, "domain")
                    .int("cat", c.cat as i64)
                    .str("catdesc", c.catdesc);
            }
            if w.threat {
                r.int("crscore", 30)
                    .int("craction", 4194304)
                    .str("crlevel", "high");
            }
        },
    );
    dev.events.emit(
        "log.webfilter",
        serde_json::json!({
            "summary": format!("{} {} {} ({})", w.action, s.src.ip(), c.full_url, c.catdesc),
            "line": line.line,
            "srcip": s.src.ip().to_string(),
            "url": c.full_url,
            "hostname": c.hostname,
            "action": w.action,
            "cat": c.cat,
            "catdesc": c.catdesc,
            "logid": w.logid,
            "profile": c.profile,
        }),
    );
}
