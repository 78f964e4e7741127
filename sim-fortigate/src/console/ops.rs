//! Operational commands: `get system status`, `diagnose ...`, `execute ...` — answered from
//! the device state (banned list, automation engine, fabric status, memory log, lab map, event
//! bus) in the FortiOS output format.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::automation;
use crate::config::FosVersion;
use crate::device::{AutomationRequest, Device};

use super::cli::{parse_error, resolve, CliOutput};
use fortilab_core::EventKind;

/// What an operational command needs.
pub struct OpsCtx<'a> {
    pub dev: &'a Arc<Device>,
    pub automation: Option<&'a Arc<automation::Engine>>,
    pub user: &'a str,
}

/// `execute log filter` state (per session, like FortiOS).
#[derive(Debug, Clone)]
pub struct LogFilter {
    /// 0 traffic, 1 event, 2 utm-virus, 3 utm-webfilter, ...
    pub category: u8,
    pub view_lines: usize,
    pub start_line: usize,
    /// `field` filters: (name, value).
    pub fields: Vec<(String, String)>,
}

impl Default for LogFilter {
    fn default() -> Self {
        Self {
            category: 1,
            view_lines: 10,
            start_line: 1,
            fields: Vec::new(),
        }
    }
}

/// FortiOS log categories (`execute log filter category ?`).
const CATEGORIES: &[(u8, &str, &str, &str)] = &[
    (0, "traffic", "traffic", "forward"),
    (1, "event", "event", "system"),
    (2, "utm-virus", "utm", "virus"),
    (3, "utm-webfilter", "utm", "webfilter"),
    (4, "utm-ips", "utm", "ips"),
    (5, "utm-emailfilter", "utm", "emailfilter"),
    (7, "utm-anomaly", "utm", "anomaly"),
    (9, "utm-dlp", "utm", "dlp"),
    (10, "utm-app-ctrl", "utm", "app-ctrl"),
    (12, "utm-waf", "utm", "waf"),
    (15, "utm-dns", "utm", "dns"),
    (16, "utm-ssh", "utm", "ssh"),
    (17, "utm-ssl", "utm", "ssl"),
];

/// The command tree (for abbreviations, `?` and TAB): words, description, versions where it
/// exists (`None` = all).
struct Node {
    path: &'static str,
    desc: &'static str,
    only: Option<fn(FosVersion) -> bool>,
}

fn v72(v: FosVersion) -> bool {
    v >= FosVersion::new(7, 2, 0)
}
fn pre72(v: FosVersion) -> bool {
    v < FosVersion::new(7, 2, 0)
}

const TREE: &[Node] = &[
    Node {
        path: "diagnose automation",
        desc: "Automation.",
        only: None,
    },
    Node {
        path: "diagnose automation test",
        desc: "Test an automation stitch: <stitch> [<log>].",
        only: None,
    },
    Node {
        path: "diagnose test",
        desc: "Diagnostic test.",
        only: None,
    },
    Node {
        path: "diagnose test application",
        desc: "Application.",
        only: None,
    },
    Node {
        path: "diagnose test application autod",
        desc: "Automation daemon.",
        only: None,
    },
    Node {
        path: "diagnose test application fcnacd",
        desc: "FortiClient NAC daemon (EMS connector).",
        only: None,
    },
    Node {
        path: "diagnose test application fgtlogd",
        desc: "FortiGate log daemon.",
        only: None,
    },
    Node {
        path: "diagnose user",
        desc: "User.",
        only: None,
    },
    Node {
        path: "diagnose user quarantine",
        desc: "Quarantine.",
        only: Some(pre72),
    },
    Node {
        path: "diagnose user quarantine list",
        desc: "List quarantined users.",
        only: Some(pre72),
    },
    Node {
        path: "diagnose user quarantine add",
        desc: "Add a user: src4 <ip> <expiry> <cause>.",
        only: Some(pre72),
    },
    Node {
        path: "diagnose user quarantine delete",
        desc: "Delete a user: src4 <ip>.",
        only: Some(pre72),
    },
    Node {
        path: "diagnose user quarantine clear",
        desc: "Clear all quarantined users.",
        only: Some(pre72),
    },
    Node {
        path: "diagnose user quarantine stat",
        desc: "Quarantine statistics.",
        only: Some(pre72),
    },
    Node {
        path: "diagnose user banned-ip",
        desc: "Banned IP.",
        only: Some(v72),
    },
    Node {
        path: "diagnose user banned-ip list",
        desc: "List banned IPs.",
        only: Some(v72),
    },
    Node {
        path: "diagnose user banned-ip add",
        desc: "Add a banned IP: src4 <ip> <expiry> <cause>.",
        only: Some(v72),
    },
    Node {
        path: "diagnose user banned-ip delete",
        desc: "Delete a banned IP: src4 <ip>.",
        only: Some(v72),
    },
    Node {
        path: "diagnose user banned-ip clear",
        desc: "Clear all banned IPs.",
        only: Some(v72),
    },
    Node {
        path: "diagnose user banned-ip stat",
        desc: "Banned IP statistics.",
        only: Some(v72),
    },
    Node {
        path: "diagnose endpoint",
        desc: "Endpoint.",
        only: None,
    },
    Node {
        path: "diagnose endpoint fctems",
        desc: "FortiClient EMS.",
        only: None,
    },
    Node {
        path: "diagnose endpoint fctems status",
        desc: "EMS connector status.",
        only: None,
    },
    Node {
        path: "diagnose endpoint record",
        desc: "Endpoint records.",
        only: None,
    },
    Node {
        path: "diagnose endpoint record list",
        desc: "List endpoint records (compromised hosts).",
        only: None,
    },
    Node {
        path: "diagnose sniffer",
        desc: "Sniffer.",
        only: None,
    },
    Node {
        path: "diagnose sniffer packet",
        desc: "Sniff packets: <interface> '<filter>' [verbose] [count].",
        only: None,
    },
    Node {
        path: "execute log",
        desc: "Log.",
        only: None,
    },
    Node {
        path: "execute log filter",
        desc: "Filter for reading logs.",
        only: None,
    },
    Node {
        path: "execute log filter category",
        desc: "Category.",
        only: None,
    },
    Node {
        path: "execute log filter field",
        desc: "Field filter: <name> <value>.",
        only: None,
    },
    Node {
        path: "execute log filter view-lines",
        desc: "Lines per view.",
        only: None,
    },
    Node {
        path: "execute log filter start-line",
        desc: "Start line to view.",
        only: None,
    },
    Node {
        path: "execute log filter reset",
        desc: "Reset the filter.",
        only: None,
    },
    Node {
        path: "execute log filter dump",
        desc: "Dump the filter.",
        only: None,
    },
    Node {
        path: "execute log filter device",
        desc: "Device to get logs from.",
        only: None,
    },
    Node {
        path: "execute log display",
        desc: "Display filtered logs.",
        only: None,
    },
    Node {
        path: "execute ping",
        desc: "PING command: <host name | host ip>.",
        only: None,
    },
    Node {
        path: "execute fctems",
        desc: "FortiClient EMS.",
        only: None,
    },
    Node {
        path: "execute fctems verify",
        desc: "Verify EMS server certificate: <name>.",
        only: None,
    },
];

fn nodes(v: FosVersion) -> impl Iterator<Item = &'static Node> {
    TREE.iter().filter(move |n| n.only.is_none_or(|f| f(v)))
}

/// Candidates for the word after `words` (`words[0]` is `diagnose`/`execute`).
pub fn candidates(v: FosVersion, words: &[String]) -> Vec<(String, String)> {
    let (path, consumed) = resolve_path(v, words);
    if consumed < words.len() {
        return arg_candidates(&path, &words[consumed..]);
    }
    let depth = path.split(' ').count();
    let mut out: Vec<(String, String)> = nodes(v)
        .filter(|n| {
            let ws: Vec<&str> = n.path.split(' ').collect();
            ws.len() == depth + 1 && ws[..depth].join(" ") == path
        })
        .map(|n| {
            (
                n.path.rsplit(' ').next().unwrap_or("").to_string(),
                n.desc.to_string(),
            )
        })
        .collect();
    if out.is_empty() {
        out = arg_candidates(&path, &[]);
    }
    out
}

fn arg_candidates(path: &str, args: &[String]) -> Vec<(String, String)> {
    match (path, args.len()) {
        ("execute log filter category", 0) => CATEGORIES
            .iter()
            .map(|(n, name, _, _)| (n.to_string(), name.to_string()))
            .collect(),
        ("diagnose test application autod", 0) => vec![
            ("1".into(), "Toggle log dumping.".into()),
            ("2".into(), "Dump the automation stitches.".into()),
            ("3".into(), "Dump the automation history.".into()),
        ],
        ("diagnose test application fcnacd", 0) => {
            vec![("2".into(), "Dump the EMS context status.".into())]
        }
        ("diagnose test application fgtlogd", 0) => vec![
            (
                "1".into(),
                "Show the FortiAnalyzer connection status.".into(),
            ),
            ("41".into(), "Show the log queues.".into()),
        ],
        ("diagnose automation test", 0) => {
            vec![("<stitch>".into(), "Automation stitch name.".into())]
        }
        ("execute ping", 0) => vec![("<host>".into(), "Host name or IP address.".into())],
        _ => Vec::new(),
    }
}

/// Resolves abbreviated command words along the tree: the path and how many words it took.
pub(crate) fn resolve_path(v: FosVersion, words: &[String]) -> (String, usize) {
    let mut path = String::new();
    for (i, w) in words.iter().enumerate() {
        if i == 0 {
            path = w.clone();
            continue;
        }
        let depth = i;
        let opts: Vec<&'static str> = nodes(v)
            .filter(|n| {
                let ws: Vec<&str> = n.path.split(' ').collect();
                ws.len() == depth + 1 && ws[..depth].join(" ") == path
            })
            .map(|n| n.path.rsplit(' ').next().unwrap_or(""))
            .collect();
        if opts.is_empty() {
            return (path, i);
        }
        match resolve(w, opts) {
            Some(x) => path = format!("{path} {x}"),
            None => return (path, i),
        }
    }
    (path, words.len())
}

/// Runs an operational command.
pub async fn run(ctx: &OpsCtx<'_>, filter: &mut LogFilter, words: &[String]) -> CliOutput {
    let v = ctx.dev.version;
    if words.first().map(String::as_str) == Some("get") {
        return if words.get(1).map(String::as_str) == Some("system")
            && words.get(2).map(String::as_str) == Some("status")
        {
            ok(system_status(ctx.dev))
        } else {
            fail(parse_error(
                words.last().map(String::as_str).unwrap_or("get"),
            ))
        };
    }
    let (path, n) = resolve_path(v, words);
    let args: Vec<String> = words[n..].to_vec();
    let leaf = nodes(v).any(|x| x.path == path)
        && !nodes(v).any(|x| x.path.starts_with(&format!("{path} ")));
    if !leaf {
        // Stopped inside the tree: the next word is wrong (or missing).
        let bad = words
            .get(n)
            .cloned()
            .unwrap_or_else(|| words.last().cloned().unwrap_or_default());
        return fail(parse_error(&bad));
    }
    match path.as_str() {
        "diagnose automation test" => automation_test(ctx, &args),
        "diagnose test application autod" => autod(ctx, &args),
        "diagnose test application fcnacd" => fcnacd(ctx, &args),
        "diagnose test application fgtlogd" => fgtlogd(ctx, &args),
        "diagnose user quarantine list" | "diagnose user banned-ip list" => banned_list(ctx),
        "diagnose user quarantine stat" | "diagnose user banned-ip stat" => {
            ok(format!("Total: {}\n", ctx.dev.banned.list().len()))
        }
        "diagnose user quarantine clear" | "diagnose user banned-ip clear" => {
            ctx.dev.banned.clear();
            ok(String::new())
        }
        "diagnose user quarantine delete" | "diagnose user banned-ip delete" => {
            banned_delete(ctx, &args)
        }
        "diagnose user quarantine add" | "diagnose user banned-ip add" => banned_add(ctx, &args),
        "diagnose endpoint fctems status" => fcnacd(ctx, &["2".to_string()]),
        "diagnose endpoint record list" => endpoint_records(ctx),
        "diagnose sniffer packet" => sniffer(ctx, &args).await,
        "execute log filter category" => match args.first().and_then(|a| a.parse::<u8>().ok()) {
            Some(c) if CATEGORIES.iter().any(|x| x.0 == c) => {
                filter.category = c;
                ok(String::new())
            }
            _ => fail(parse_error(
                args.first().map(String::as_str).unwrap_or("category"),
            )),
        },
        "execute log filter field" => match args.as_slice() {
            [name, value, ..] => {
                filter.fields.push((name.clone(), value.clone()));
                ok(String::new())
            }
            _ => fail(parse_error("field")),
        },
        "execute log filter view-lines" => match args.first().and_then(|a| a.parse().ok()) {
            Some(n) if (5..=1000).contains(&n) => {
                filter.view_lines = n;
                ok(String::new())
            }
            _ => fail(parse_error(
                args.first().map(String::as_str).unwrap_or("view-lines"),
            )),
        },
        "execute log filter start-line" => match args.first().and_then(|a| a.parse().ok()) {
            Some(n) if n >= 1 => {
                filter.start_line = n;
                ok(String::new())
            }
            _ => fail(parse_error(
                args.first().map(String::as_str).unwrap_or("start-line"),
            )),
        },
        "execute log filter reset" => {
            *filter = LogFilter::default();
            ok(String::new())
        }
        "execute log filter device" => ok(String::new()),
        "execute log filter dump" => {
            let cat = CATEGORIES
                .iter()
                .find(|c| c.0 == filter.category)
                .map(|c| c.1)
                .unwrap_or("event");
            let mut s = format!(
                "category: {cat}\nstart-line: {}\nview-lines: {}\n",
                filter.start_line, filter.view_lines
            );
            for (k, val) in &filter.fields {
                s.push_str(&format!("filter: {k}={val}\n"));
            }
            ok(s)
        }
        "execute log display" => log_display(ctx, filter),
        "execute ping" => ping(ctx, &args).await,
        "execute fctems verify" => fctems_verify(ctx, &args),
        _ => fail(parse_error(&path)),
    }
}

fn ok(s: impl Into<String>) -> CliOutput {
    CliOutput {
        text: s.into(),
        failed: false,
    }
}

fn fail(s: impl Into<String>) -> CliOutput {
    CliOutput {
        text: s.into(),
        failed: true,
    }
}

/// FortiOS date style (`Sat Nov 28 10:50:00 2026`) of lab Unix seconds, in the lab's time
/// zone.
fn ctime(dev: &Device, secs: i64) -> String {
    ctime_local(secs.saturating_add(dev.clock.tz_minutes() as i64 * 60))
}

/// [`ctime`] of seconds already shifted to local time (the `time` crate's calendar through
/// `fortilab_core::clock`).
fn ctime_local(local_secs: i64) -> String {
    use fortilab_core::clock::{civil_from_days, format_date_time, weekday_from_days};
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DOW: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let days = local_secs.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (_, time) = format_date_time(local_secs);
    format!(
        "{} {} {d:>2} {time} {y}",
        DOW[weekday_from_days(days) as usize],
        MON[(m as usize).clamp(1, 12) - 1],
    )
}

fn system_status(dev: &Device) -> String {
    let v = dev.version;
    let host = dev.hostname();
    let build = v.build();
    let branch_date = if v < FosVersion::new(7, 0, 0) {
        "201209"
    } else {
        "230418"
    };
    format!(
        "Version: FortiGate-VM64 v{v},build{build:04},{branch_date} (GA)\n\
Virus-DB: 1.00000(2018-04-09 18:07)\n\
Extended DB: 1.00000(2018-04-09 18:07)\n\
IPS-DB: 6.00741(2015-12-01 02:30)\n\
IPS-ETDB: 0.00000(2001-01-01 00:00)\n\
APP-DB: 6.00741(2015-12-01 02:30)\n\
INDUSTRIAL-DB: 6.00741(2015-12-01 02:30)\n\
Serial-Number: {serial}\n\
IPS Malicious URL Database: 1.00001(2015-01-01 01:01)\n\
License Status: Valid\n\
VM Resources: 1 CPU/1 allowed, 2007 MB RAM/2048 MB allowed\n\
Log hard disk: Not available\n\
Hostname: {host}\n\
Operation Mode: NAT\n\
Current virtual domain: root\n\
Max number of virtual domains: 1\n\
Virtual domains status: 1 in NAT mode, 0 in TP mode\n\
Virtual domain configuration: disable\n\
FIPS-CC mode: disable\n\
Current HA mode: standalone\n\
Branch point: {build}\n\
Release Version Information: GA\n\
FortiOS x86-64: Yes\n\
System time: {time}\n",
        serial = dev.serial,
        time = ctime(dev, dev.clock.now_secs()),
    )
}

fn automation_test(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    let Some(stitch) = args.first() else {
        return fail(parse_error("test"));
    };
    if !ctx.dev.config.exists("system automation-stitch", stitch) {
        return fail(format!(
            "stitch:{stitch} not found.\nCommand fail. Return code -3\n"
        ));
    }
    let log = if args.len() > 1 {
        Some(args[1..].join(" "))
    } else {
        None
    };
    ctx.dev.events.emit(
        EventKind::StitchTest,
        serde_json::json!({"stitch": stitch, "log": log, "ui": "cli"}),
    );
    if !ctx.dev.automation.submit(AutomationRequest::Test {
        stitch: stitch.clone(),
        log,
    }) {
        return fail("automation test failed: queue full\n");
    }
    ok(format!("automation test is done. stitch:{stitch}\n"))
}

fn autod(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    let Some(engine) = ctx.automation else {
        return fail("autod is not running\n");
    };
    let model = engine.model();
    let runs = engine.runs();
    match args.first().map(String::as_str) {
        Some("1") => ok("autod log dumping is enabled\n"),
        Some("2") => {
            let mut s = format!(
                "csf: disabled  root:yes\ntotal stitches activated: {}\n\n",
                model.stitches.iter().filter(|x| x.enabled).count()
            );
            for st in &model.stitches {
                let stats = ctx.dev.automation.stats(&st.name);
                s.push_str(&format!(
                    "stitch: {}{}\n\tdestinations: all\n\ttrigger: {}\n\tlocal hit: {} relayed to: {} relayed from: {}\n\tactions:\n",
                    st.name,
                    if st.enabled { "" } else { " (disabled)" },
                    st.trigger,
                    stats.triggered,
                    stats.relayed_to,
                    stats.relayed_from
                ));
                for a in &st.steps {
                    let (ty, interval) = model
                        .actions
                        .get(&a.action)
                        .map(|d| (d.action_type.clone(), d.minimum_interval))
                        .unwrap_or_default();
                    s.push_str(&format!("\t\t{} type:{ty} interval:{interval}\n", a.action));
                }
                s.push('\n');
            }
            ok(s)
        }
        Some("3") => {
            let mut s = String::new();
            for st in &model.stitches {
                let stats = ctx.dev.automation.stats(&st.name);
                let last = if stats.last_triggered > 0 {
                    ctime(ctx.dev, stats.last_triggered)
                } else {
                    String::new()
                };
                s.push_str(&format!(
                    "stitch: {}\n\tlocal hit: {} relayed to: {} relayed from: {}\n\tlast trigger:{last}\n\tlast relay:\n\tactions:\n",
                    st.name, stats.triggered, stats.relayed_to, stats.relayed_from
                ));
                for a in &st.steps {
                    let done: Vec<_> = runs
                        .iter()
                        .filter(|r| r.stitch == st.name)
                        .flat_map(|r| r.results.iter())
                        .filter(|x| x.action == a.action)
                        .collect();
                    s.push_str(&format!(
                        "\t\t{}:\n\t\t\tdone: {} relayed to: 0 relayed from: 0\n\t\t\tlast trigger:{last}\n\t\t\tlast relay:\n",
                        a.action,
                        done.len()
                    ));
                }
                s.push('\n');
            }
            ok(s)
        }
        Some(other) => fail(parse_error(other)),
        None => fail(parse_error("autod")),
    }
}

fn fcnacd(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    if args.first().map(String::as_str) != Some("2") {
        return fail(parse_error(
            args.first().map(String::as_str).unwrap_or("fcnacd"),
        ));
    }
    let ems = ctx
        .dev
        .config
        .with(|c| automation::ems::configured(c, ctx.dev.version));
    let mut s = String::from("EMS context status:\n");
    if ems.is_empty() {
        s.push_str("No EMS is configured.\n");
    }
    let fabric = ctx.dev.fabric();
    for (i, e) in ems.iter().enumerate() {
        let st = fabric.ems(&e.name);
        s.push_str(&format!(
            "FortiClient EMS number {}:\n\tname: {} confirmed: {}\n\tfetched-serial-number: {}\n\tserver: {}:{}\n\tconnection status: {}\n\tWebsocket status: {}\n",
            i + 1,
            e.name,
            if st.status == "connected" { "yes" } else { "no" },
            if st.ems_serial.is_empty() { "N/A" } else { &st.ems_serial },
            e.server,
            e.port,
            st.status,
            st.websocket
        ));
    }
    ok(s)
}

fn fgtlogd(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    let st = ctx.dev.fabric().faz();
    let settings = ctx
        .dev
        .config
        .with(crate::forward::FazSettings::from_config);
    match args.first().map(String::as_str) {
        Some("1") => {
            let mut s = String::new();
            match &settings {
                None => s.push_str("faz: global , disabled\n"),
                Some(f) => {
                    s.push_str(&format!(
                        "faz: global , enabled\n\tserver={}, realtime={}, ipsec=0\n\tSSL_Conn={}\n\tstatus: {}\n\tregistration: {}\n\tconnection: {}\n\tSN: {}\n\tsent logs: {}\n\tcached logs: {}\n\tfailed logs: {}\n",
                        f.server,
                        if f.upload == "realtime" { 3 } else { 0 },
                        if st.connected { "connected" } else { "disconnected" },
                        if st.connected { "connected" } else { "disconnected" },
                        st.registration,
                        st.connection,
                        if st.faz_serial.is_empty() { "N/A" } else { &st.faz_serial },
                        st.sent_logs,
                        st.cached_logs,
                        st.failed_logs
                    ));
                }
            }
            ok(s)
        }
        Some("41") => ok(format!(
            "cache maximum: 169020620(161MB) objects: {q} used: 0(0MB) allocated: 0(0MB)\nVDOM:root\nMemory queue for: global-faz\nqueue:\n\tnum:{q} size:0(0MB) total size:0(0MB) max:165304566(157MB) logs:{q}\n",
            q = st.cached_logs
        )),
        Some(other) => fail(parse_error(other)),
        None => fail(parse_error("fgtlogd")),
    }
}

fn cause_of(source: &str) -> &'static str {
    match source {
        "ips" => "IPS",
        "av" => "Antivirus",
        "dos" => "DOS",
        "dlp" => "DLP",
        "app" => "Application Control",
        _ => "Administrative",
    }
}

fn banned_list(ctx: &OpsCtx<'_>) -> CliOutput {
    let mut s = format!(
        "{:<18}{:<26}{:<26}{}\n",
        "src-ip-addr", "created", "expires", "cause"
    );
    for b in ctx.dev.banned.list() {
        let expires = if b.expires == 0 {
            "indefinite".to_string()
        } else {
            ctime(ctx.dev, b.expires)
        };
        s.push_str(&format!(
            "{:<18}{:<26}{:<26}{}\n",
            b.ip_address,
            ctime(ctx.dev, b.created),
            expires,
            cause_of(&b.source)
        ));
    }
    ok(s)
}

fn parse_src4(args: &[String]) -> Result<IpAddr, String> {
    match args {
        [kw, ip, ..] if kw == "src4" || kw == "src6" => {
            ip.parse::<IpAddr>().map_err(|_| parse_error(ip))
        }
        [other, ..] => Err(parse_error(other)),
        [] => Err(parse_error("delete")),
    }
}

fn banned_delete(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    match parse_src4(args) {
        Ok(ip) => {
            ctx.dev.banned.remove(ip);
            ok(String::new())
        }
        Err(e) => fail(e),
    }
}

fn banned_add(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    let ip = match parse_src4(args) {
        Ok(ip) => ip,
        Err(e) => return fail(e),
    };
    let expiry: i64 = match args.get(2).map(|e| e.parse()) {
        Some(Ok(n)) => n,
        Some(Err(_)) => return fail(parse_error(&args[2])),
        None => 0,
    };
    let source = match args.get(3).map(String::as_str) {
        None | Some("admin") => "admin",
        Some("ips") => "ips",
        Some("av") => "av",
        Some("dos") => "dos",
        Some("dlp") => "dlp",
        Some(other) => return fail(parse_error(other)),
    };
    ctx.dev.banned.add(ip, expiry, source);
    ok(String::new())
}

fn endpoint_records(ctx: &OpsCtx<'_>) -> CliOutput {
    let Some(engine) = ctx.automation else {
        return ok("Record #0:\n");
    };
    let hosts = engine.compromised_hosts();
    let mut s = String::new();
    for (i, h) in hosts.iter().enumerate() {
        let v = serde_json::to_value(h).unwrap_or_default();
        s.push_str(&format!(
            "Record #{}:\n\tIP Address = {}\n\tMAC Address = {}\n\tFortiClient UID = {}\n\tcompromised = yes (verdict: {})\n",
            i + 1,
            v["srcip"].as_str().unwrap_or(""),
            v["mac"].as_str().unwrap_or("none"),
            v["fctuid"].as_str().unwrap_or("none"),
            v["verdict"].as_str().unwrap_or("")
        ));
    }
    s.push_str(&format!("Total records: {}\n", hosts.len()));
    ok(s)
}

fn log_display(ctx: &OpsCtx<'_>, f: &LogFilter) -> CliOutput {
    let (_, ty, sub) = CATEGORIES
        .iter()
        .find(|c| c.0 == f.category)
        .map(|c| (c.1, c.2, c.3))
        .unwrap_or(("event", "event", "system"));
    let pred = |l: &crate::logs::LogLine| {
        f.fields.iter().all(|(k, v)| {
            let needle = format!("{k}={v}");
            let quoted = format!("{k}=\"{v}\"");
            l.line.contains(&needle) || l.line.contains(&quoted)
        })
    };
    let (lines, total) = if sub == "system" {
        // Event logs of every subtype.
        let mut all = Vec::new();
        let mut total = 0;
        for s in ["system", "user", "endpoint", "connector"] {
            let (l, t) = ctx.dev.logs.query_where(ty, s, 0, usize::MAX, pred);
            all.extend(l);
            total += t;
        }
        all.sort_by_key(|l| std::cmp::Reverse(l.seq));
        let page: Vec<_> = all
            .into_iter()
            .skip(f.start_line.saturating_sub(1))
            .take(f.view_lines)
            .collect();
        (page, total)
    } else {
        ctx.dev
            .logs
            .query_where(ty, sub, f.start_line.saturating_sub(1), f.view_lines, pred)
    };
    let mut s = format!("{total} logs found.\n{} logs returned.\n\n", lines.len());
    for (i, l) in lines.iter().enumerate() {
        s.push_str(&format!("{}: {}\n\n", f.start_line + i, l.line));
    }
    ok(s)
}

async fn ping(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    let Some(host) = args.first() else {
        return fail(parse_error("ping"));
    };
    let ip: IpAddr = match host.parse() {
        Ok(ip) => ip,
        Err(_) => return fail("Unable to resolve hostname.\n"),
    };
    let map = &ctx.dev.lab_map;
    let reachable = map.identity
        || map.hosts.contains_key(&ip)
        || map.services.keys().any(|s| s.ip() == ip)
        || ip.is_loopback()
        || Some(ip) == ctx.dev.lab_ip;
    let mut s = format!("PING {ip} ({ip}): 56 data bytes\n");
    let count: u32 = 5;
    let mut times = Vec::new();
    for seq in 0..count {
        if reachable {
            let t = 0.2 + 0.05 * f64::from(seq % 3);
            times.push(t);
            s.push_str(&format!(
                "64 bytes from {ip}: icmp_seq={seq} ttl=64 time={t:.1} ms\n"
            ));
        }
    }
    // FortiOS waits a second per probe; the lab answers at once.
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.push_str(&format!("\n--- {ip} ping statistics ---\n"));
    let rcvd = times.len() as u32;
    s.push_str(&format!(
        "{count} packets transmitted, {rcvd} packets received, {}% packet loss\n",
        (count - rcvd) * 100 / count
    ));
    if rcvd > 0 {
        let min = times.iter().cloned().fold(f64::MAX, f64::min);
        let max = times.iter().cloned().fold(0.0, f64::max);
        let avg = times.iter().sum::<f64>() / f64::from(rcvd);
        s.push_str(&format!(
            "round-trip min/avg/max = {min:.1}/{avg:.1}/{max:.1} ms\n"
        ));
    }
    ok(s)
}

fn fctems_verify(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    let Some(name) = args.first() else {
        return fail(parse_error("verify"));
    };
    let ems = ctx
        .dev
        .config
        .with(|c| automation::ems::configured(c, ctx.dev.version));
    let Some(conn) = ems
        .iter()
        .find(|e| &e.name == name || ctx.dev.config.exists("endpoint-control fctems", name))
    else {
        return fail("entry not found in datasource\nCommand fail. Return code -3\n");
    };
    let st = ctx.dev.fabric().ems(&conn.name);
    if st.connected {
        ok(format!(
            "Server certificate already verified.\nServer: {}:{} serial: {}\n",
            conn.server,
            conn.port,
            if st.ems_serial.is_empty() {
                "N/A"
            } else {
                &st.ems_serial
            }
        ))
    } else {
        fail(format!(
            "Failed to connect to EMS {}:{} (status: {}).\n",
            conn.server, conn.port, st.status
        ))
    }
}

/// `diagnose sniffer packet <intf> '<filter>' [verbose] [count]`: one summary line per session
/// through the proxy (traffic logs and drops of the data plane), until `count` lines or 5 s.
async fn sniffer(ctx: &OpsCtx<'_>, args: &[String]) -> CliOutput {
    let intf = args.first().cloned().unwrap_or_else(|| "any".into());
    let filter = args.get(1).cloned().unwrap_or_default();
    let count: usize = args
        .get(3)
        .and_then(|c| c.parse().ok())
        .unwrap_or(10)
        .clamp(1, 1000);
    let hosts: Vec<String> = filter
        .split_whitespace()
        .filter(|w| w.parse::<IpAddr>().is_ok())
        .map(String::from)
        .collect();
    let mut s = format!("interfaces=[{intf}]\nfilters=[{filter}]\n");
    let (_, _, mut rx) = ctx.dev.events.subscribe_since(ctx.dev.events.last_seq());
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(5);
    let mut n = 0;
    while n < count {
        let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            _ => break,
        };
        if ev.kind != "log.traffic" && ev.kind != "dataplane.drop" {
            continue;
        }
        let src = ev.data.get("srcip").and_then(|v| v.as_str()).unwrap_or("");
        let dst = ev.data.get("dstip").and_then(|v| v.as_str()).unwrap_or("");
        if !hosts.is_empty() && !hosts.iter().any(|h| h == src || h == dst) {
            continue;
        }
        let t = start.elapsed().as_secs_f64();
        let line = match ev.kind.as_str() {
            "dataplane.drop" => format!(
                "{t:.6} port3 in {src} -> any: dropped ({})\n",
                ev.data.get("reason").and_then(|v| v.as_str()).unwrap_or("")
            ),
            _ => format!(
                "{t:.6} port3 in {src} -> {dst}: {} policy {} sent {} rcvd {}\n",
                ev.data.get("action").and_then(|v| v.as_str()).unwrap_or(""),
                ev.data
                    .get("policyid")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                ev.data
                    .get("sentbyte")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                ev.data
                    .get("rcvdbyte")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ),
        };
        s.push_str(&line);
        n += 1;
    }
    s.push_str(&format!(
        "\n{n} packets received by filter\n0 packets dropped by kernel\n"
    ));
    ok(s)
}

#[cfg(test)]
mod tests {
    use super::ctime_local;
    use fortilab_core::clock::days_from_civil;

    fn at(y: i64, m: u32, d: u32, hms: i64) -> i64 {
        days_from_civil(y, m, d).unwrap() * 86_400 + hms
    }

    #[test]
    fn ctime_across_month_year_and_leap_boundaries() {
        assert_eq!(
            ctime_local(at(2026, 11, 28, 10 * 3600 + 50 * 60)),
            "Sat Nov 28 10:50:00 2026"
        );
        // New Year: the last second of 2020, then 2021's first.
        let ny = at(2021, 1, 1, 0);
        assert_eq!(ctime_local(ny - 1), "Thu Dec 31 23:59:59 2020");
        assert_eq!(ctime_local(ny), "Fri Jan  1 00:00:00 2021");
        // A leap day, and the day after it.
        assert_eq!(
            ctime_local(at(2024, 2, 29, 12 * 3600)),
            "Thu Feb 29 12:00:00 2024"
        );
        assert_eq!(ctime_local(at(2024, 3, 1, 0)), "Fri Mar  1 00:00:00 2024");
        // Not a leap year: 28 February, then 1 March.
        assert_eq!(
            ctime_local(at(2023, 3, 1, 0) - 1),
            "Tue Feb 28 23:59:59 2023"
        );
        // Before 1970.
        assert_eq!(ctime_local(-1), "Wed Dec 31 23:59:59 1969");
    }
}
