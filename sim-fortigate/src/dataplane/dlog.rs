//! Traffic and web filter logs in FortiOS format by version (reference §6.1–6.4), written
//! through the device's [`crate::logs::LogWriter`] with a lab event for each.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use fortilab_core::logfmt::LogRecord;
use fortilab_core::EventKind;

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

/// FortiOS 7.x adds fields (source and destination country) to session logs.
fn is_fos7(dev: &Device) -> bool {
    dev.version.major >= 7
}

/// The session's end points: addresses, ports, interfaces and their roles (and countries on 7.x).
fn session_endpoints(r: &mut LogRecord, dev: &Device, s: &SessionLog, with_country: bool) {
    r.ip("srcip", IpAddr::V4(*s.src.ip()))
        .int("srcport", s.src.port() as i64);
    if with_country && is_fos7(dev) {
        r.str("srccountry", country(*s.src.ip()));
    }
    r.str("srcintf", s.srcside.intf.clone())
        .str("srcintfrole", s.srcside.role.clone())
        .ip("dstip", IpAddr::V4(*s.dst.ip()))
        .int("dstport", s.dst.port() as i64);
    if with_country && is_fos7(dev) {
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
            session_endpoints(r, dev, s, true);
            if is_fos7(dev) {
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
    dev.events.emit_line(
        EventKind::LogTraffic,
        line.line.clone(),
        serde_json::json!({
            "summary": format!("{} {}:{} → {}:{} policy {} {}", action, s.src.ip(), s.src.port(), s.dst.ip(), s.dst.port(), s.policyid, s.service),
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
            if is_fos7(dev) {
                r.str("poluuid", s.poluuid.clone())
                    .str("policytype", "policy");
            }
            r.int("sessionid", s.sessionid as i64);
            session_endpoints(r, dev, s, true);
            r.int("proto", s.proto as i64);
            if is_fos7(dev) {
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
    dev.events.emit_line(
        EventKind::LogWebfilter,
        line.line.clone(),
        serde_json::json!({
            "summary": format!("{} {} {} ({})", w.action, s.src.ip(), c.full_url, c.catdesc),
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

/// Fields FortiOS writes as bare numbers.
pub const NUMERIC: &[&str] = &[
    "eventtime",
    "policyid",
    "sessionid",
    "srcport",
    "dstport",
    "proto",
    "transport",
    "duration",
    "sentbyte",
    "rcvdbyte",
    "sentpkt",
    "rcvdpkt",
    "countweb",
    "crscore",
    "craction",
    "cat",
    "cfgtid",
    "urlfilteridx",
];
/// Fields FortiOS writes as bare IP addresses.
pub const ADDRESSES: &[&str] = &["srcip", "dstip", "transip"];

/// Checks a log line (optionally `<PRI>`-prefixed) against the FortiOS format rules: header
/// order of the version (`v64plus`: 6.4/7.x), quoted 10-digit `logid`, bare `date`/`time`,
/// bare numbers and IPs, every other value quoted.
pub fn check_format(line: &str, v64plus: bool) -> Result<(), String> {
    use fortilab_core::logfmt::LogValue;
    let rec = LogRecord::parse(line).map_err(|e| format!("{e}: {line}"))?;
    let keys: Vec<&str> = rec.keys().collect();
    let has_et = keys.contains(&"eventtype");
    let mut want: Vec<&str> = vec!["date", "time", "devname", "devid"];
    if v64plus {
        want.extend(["eventtime", "tz", "logid", "type", "subtype"]);
        if has_et {
            want.push("eventtype");
        }
        want.extend(["level", "vd"]);
    } else {
        want.extend(["logid", "type", "subtype"]);
        if has_et {
            want.push("eventtype");
        }
        want.extend(["level", "vd", "eventtime", "tz"]);
    }
    if keys.len() < want.len() || keys[..want.len()] != want[..] {
        return Err(format!(
            "header order {:?} != {:?}",
            &keys[..want.len().min(keys.len())],
            want
        ));
    }
    for (k, v) in rec.fields() {
        let ok = match k.as_ref() {
            "date" | "time" => matches!(v, LogValue::Bare(_)),
            "logid" => {
                matches!(v, LogValue::Str(s) if s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()))
            }
            k if NUMERIC.contains(&k) => matches!(v, LogValue::Int(_)),
            k if ADDRESSES.contains(&k) => matches!(v, LogValue::Ip(_)),
            _ => v.is_quoted(),
        };
        if !ok {
            return Err(format!(
                "field {k}={v:?} breaks the format rules in: {line}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigStore, FosVersion};
    use fortilab_core::clock::LabClock;
    use fortilab_core::labnet::LabMap;

    fn dev(version: &str) -> Device {
        let v = FosVersion::parse(version).unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let cfg = crate::config::factory(v, "FGT-LAB", &mut rng);
        let store = ConfigStore::new(cfg, v, 1, "FGVM01TM00000001");
        Device::new(
            "FGVM01TM00000001".into(),
            v,
            1,
            LabClock::real(),
            store,
            LabMap::new(),
            None,
            None,
        )
    }

    fn session() -> SessionLog {
        let side = |i: &str, r: &str| Side {
            intf: i.into(),
            role: r.into(),
            names: vec![i.into()],
            ip: None,
        };
        SessionLog {
            sessionid: 381780,
            policyid: 1,
            poluuid: "ccb269e0-5735-51e9-a218-a397dd08b7eb".into(),
            policyname: String::new(),
            src: "10.115.2.52:44258".parse().unwrap(),
            dst: "89.160.20.128:80".parse().unwrap(),
            srcside: side("port3", "lan"),
            dstside: side("port1", "wan"),
            proto: 6,
            service: "HTTP".into(),
            nat: Some(("10.115.1.1".parse().unwrap(), 44258)),
            start_ns: 0,
        }
    }

    fn ctx<'a>() -> WfContext<'a> {
        WfContext {
            profile: "default",
            hostname: "morrishittu.ddns.net",
            path: "/",
            full_url: "http://morrishittu.ddns.net/",
            method: "GET",
            cat: 26,
            catdesc: "Malicious Websites",
            sentbyte: 84,
            urlfilter_idx: None,
        }
    }

    /// A category-26 block by profile `default`: its web filter log, the session's close log
    /// and a deny.
    fn write_blocked_session(d: &Device) {
        let s = session();
        let blk = crate::dataplane::webfilter::decide(
            &crate::dataplane::webfilter::Profile::from_config(&d.config.snapshot(), "default")
                .unwrap(),
            "morrishittu.ddns.net",
            "/",
            26,
        );
        webfilter(d, &s, &blk.logs[0], &ctx());
        let t = SessionTotals {
            sentbyte: 736,
            rcvdbyte: 3138,
            sentpkt: 14,
            rcvdpkt: 5,
            countweb: 1,
            utmaction: Some("block"),
            threat: true,
        };
        traffic(d, &s, "close", &t);
        traffic(d, &s, "deny", &SessionTotals::default());
    }

    #[test]
    fn webfilter_and_traffic_logs_follow_the_64_rules() {
        let d = dev("6.4.4");
        write_blocked_session(&d);
        let (w, _) = d.logs.query("utm", "webfilter", 0, 10);
        let line = &w[0].line;
        check_format(line, true).unwrap();
        // Field order after the header as in reference §6.3/6.4 (6.x).
        let keys: Vec<&str> = w[0].record.keys().collect();
        let after: Vec<&str> = keys[keys.iter().position(|k| *k == "vd").unwrap() + 1..].to_vec();
        assert_eq!(
            after,
            [
                "policyid",
                "sessionid",
                "srcip",
                "srcport",
                "srcintf",
                "srcintfrole",
                "dstip",
                "dstport",
                "dstintf",
                "dstintfrole",
                "proto",
                "service",
                "hostname",
                "profile",
                "action",
                "reqtype",
                "url",
                "sentbyte",
                "rcvdbyte",
                "direction",
                "msg",
                "method",
                "cat",
                "catdesc",
                "crscore",
                "craction",
                "crlevel"
            ]
        );
        assert!(line.contains(r#"logid="0316013056" type="utm" subtype="webfilter" eventtype="ftgd_blk" level="warning""#));
        assert!(line.contains(r#"action="blocked" reqtype="direct" url="/""#));
        assert!(line.contains(
            "cat=26 catdesc=\"Malicious Websites\" crscore=30 craction=4194304 crlevel=\"high\""
        ));
        let (tr, _) = d.logs.query("traffic", "forward", 0, 10);
        assert_eq!(tr.len(), 2);
        for l in &tr {
            check_format(&l.line, true).unwrap();
        }
        let close = &tr[1].line;
        assert!(
            close.contains(r#"action="close" policyid=1 policytype="policy" service="HTTP""#),
            "{close}"
        );
        assert!(close.contains(r#"trandisp="snat" transip=10.115.1.1 transport=44258"#));
        assert!(close.contains("sentbyte=736 rcvdbyte=3138 sentpkt=14 rcvdpkt=5"));
        assert!(close.contains(
            r#"utmaction="block" countweb=1 crscore=30 craction=4194304 crlevel="high""#
        ));
        assert!(
            close.contains(r#"poluuid="ccb269e0-5735-51e9-a218-a397dd08b7eb" sessionid=381780"#)
        );
        let deny = &tr[0].line;
        assert!(
            deny.contains(r#"action="deny" policyid=1"#) && deny.contains(r#"trandisp="noop""#)
        );
    }

    #[test]
    fn version_7_layout() {
        let d = dev("7.2.5");
        let s = session();
        let allow = crate::dataplane::webfilter::WfLog {
            logid: "0317013312",
            eventtype: "ftgd_allow",
            level: "notice",
            action: "passthrough",
            msg: "URL belongs to an allowed category in policy",
            with_category: true,
            threat: false,
        };
        webfilter(&d, &s, &allow, &ctx());
        traffic(&d, &s, "close", &SessionTotals::default());
        let (w, _) = d.logs.query("utm", "webfilter", 0, 1);
        check_format(&w[0].line, true).unwrap();
        assert!(w[0].line.contains(r#"policyid=1 poluuid="ccb269e0-5735-51e9-a218-a397dd08b7eb" policytype="policy" sessionid=381780"#));
        assert!(w[0].line.contains(r#"url="http://morrishittu.ddns.net/""#));
        assert!(w[0].line.contains(r#"ratemethod="domain" cat=26"#));
        assert!(w[0].line.contains(r#"srccountry="Reserved""#));
        let (t, _) = d.logs.query("traffic", "forward", 0, 1);
        check_format(&t[0].line, true).unwrap();
        assert!(t[0]
            .line
            .contains(r#"action="close" policyid=1 policytype="policy" poluuid="#));
        // A 6.2-style line fails the 6.4 header rule and passes its own.
        let old = r#"date=2019-05-13 time=16:29:45 devname="F" devid="S" logid="0316013056" type="utm" subtype="webfilter" eventtype="ftgd_blk" level="warning" vd="vdom1" eventtime=1557790184975119738 tz="+0000" policyid=1"#;
        assert!(check_format(old, true).is_err());
        check_format(old, false).unwrap();
        assert!(check_format(r#"date=2019-05-13 time=16:29:45 devname="F" devid="S" eventtime=1 tz="+0000" logid="316013056" type="utm" subtype="x" level="w" vd="r""#, true).is_err());
        assert!(check_format(r#"date=2019-05-13 time=16:29:45 devname="F" devid="S" eventtime=1 tz="+0000" logid="0316013056" type="utm" subtype="x" level="w" vd="r" srcport="5""#, true).is_err());
    }

    /// The memory log keeps only the text and parses it again when read: what the REST log
    /// API serves must be exactly the record the writer built, on both header layouts.
    #[test]
    fn the_memory_log_reads_back_the_record_as_written() {
        for version in ["6.4.4", "7.2.5"] {
            let d = dev(version);
            let tapped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let t2 = tapped.clone();
            d.logs.add_tap(move |l| t2.lock().unwrap().push(l.clone()));
            write_blocked_session(&d);
            d.logs
                .event_system("0100032001", "information", "Admin login successful", |r| {
                    r.str("user", "admin").str("ui", "https(10.115.2.52)");
                });
            let written = tapped.lock().unwrap().clone();
            assert_eq!(written.len(), 4);
            for w in &written {
                let (rows, _) = d.logs.query(w.log_type, w.subtype, 0, 10);
                let read = rows.iter().find(|r| r.seq == w.seq).expect("in the ring");
                assert_eq!(read.line, w.line);
                assert_eq!(
                    read.record.to_json(),
                    w.record.to_json(),
                    "{version} {}",
                    w.line
                );
                for (k, v) in w.record.fields() {
                    assert_eq!(read.record.text(k).as_deref(), Some(&*v.as_text()), "{k}");
                    assert_eq!(
                        read.record.get(k).map(|r| r.is_quoted()),
                        Some(v.is_quoted()),
                        "{k}"
                    );
                }
                // The filtered path parses the same way.
                let (f, _) = d
                    .logs
                    .query_where(w.log_type, w.subtype, 0, 10, |l| l.seq == w.seq);
                assert_eq!(f[0].record.to_json(), w.record.to_json());
            }
        }
    }
}
