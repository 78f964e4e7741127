//! Namespaces mode (`fortilab up --network namespaces`, `[lab] network = "namespaces"`): every
//! device in its own Linux network namespace with its real lab addresses on veth interfaces.
//!
//! Topology (per lab, every name starting with the lab's prefix `fl<pid><letter>`):
//!
//! | namespace | interfaces |
//! |---|---|
//! | `<p>-sw` (the switch) | bridges `br-m` (management), `br-l` (LAN), `br-w` (WAN) and the far ends of every veth |
//! | `<p>-fgt` | `port1` management (10.115.1.1/24), `port3` LAN (10.115.2.1/24), `wan1` 10.115.0.1/24; routes between them (`ip_forward`), default route to the lab Internet; LAN TCP 80/443 to anything outside the lab's /24s is redirected to the transparent proxy |
//! | `<p>-faz`, `<p>-ems` | `eth0` on management (.20, .30), default route via the FortiGate |
//! | `<p>-inet` | `eth0` 10.115.0.2/24 on the WAN, every site's public address on `lo`, a DNS server on 10.115.0.2:53 |
//! | `<p>-e<g>` (one per endpoint, `g` counting over every `[[endpoints]]` block) | `eth0` on the LAN bridge with the endpoint's address, default route via the FortiGate, `/etc/netns/<ns>/resolv.conf` naming the lab DNS |
//!
//! Endpoints past the LAN /24 (a block that continues into 10.115.3.x, 10.115.4.x …) are on
//! the same LAN segment in subnets of their own: the FortiGate's port3 has a secondary address
//! in each ([`lan_subnets`]; its configuration gets the matching `set secondary-IP enable` /
//! `config secondaryip`, so the CMDB shows what the network has), which is their gateway.
//! One process runs each `[[endpoints]]` block, in its first endpoint's namespace; it opens
//! every other endpoint's sockets in that endpoint's namespace (`--netns-prefix`).
//!
//! The host (where the orchestrator runs) gets one veth into each bridge (`<p>m`, `<p>l`,
//! `<p>w`, address .254 of each /24; the LAN's further subnets routed via port3) so the
//! orchestrator reaches every device's APIs and lab surfaces at their lab addresses. Before
//! anything else the host gets `unreachable` routes for 10.115.0.0/16 (and each site's public
//! /32 before that address exists anywhere): only the lab's own subnets (more specific, on the
//! lab's own veths) are reachable, nothing of the lab can take the host's default route. They
//! are removed last, by the last lab on the host.
//!
//! Several labs per host: the first lab's process claims the host's side
//! (`/run/fortilab/host-owner`, PID and start time, under a lock). A further `fortilab up` or
//! `fortilab run` executes itself again in a network namespace of its own
//! ([`claim_host_or_reexec`], [`enter_own_netns_if_asked`]): its host legs and routes live
//! there and end with the process (also after `kill -9`); its devices' namespaces carry its
//! own prefix, so the labs share nothing. `fortilab exec --lab PREFIX` picks one.
//!
//! A state file per lab (`/run/fortilab/<prefix>.json`, written before the first change) names
//! what was created and the owner's PID and start time; a lab whose owner is dead (`kill -9`)
//! is removed by the next start (or `fortilab netns-clean`). The command lists ([`Plan`]) are
//! built without I/O; namespaces are created and removed with `ip -batch`, the per-namespace
//! set-up runs a few `ip -n NS -batch` at a time.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use crate::labdef::LabDef;

/// Where the state files live.
pub const STATE_DIR: &str = "/run/fortilab";
/// The FortiGate's transparent proxy port (in its namespace; LAN TCP 80/443 is redirected
/// there).
pub const TRANSPARENT_PORT: u16 = 8008;
/// The lab range every namespaces lab makes unreachable on the host.
pub const LAB_RANGE: &str = "10.115.0.0/16";
/// Host part of the host's own address on each lab network.
pub const HOST_PART: u8 = 254;
/// A lab with more endpoints than this gets permanent neighbour (ARP) entries on the LAN: each
/// endpoint namespace for its gateway, the FortiGate's namespace for every endpoint. The
/// kernel's neighbour table is one for all namespaces, with a garbage-collection limit
/// (`net.ipv4.neigh.default.gc_thresh3`, 1,024 by default) on the dynamic entries: 1,000
/// endpoints resolving their gateway, and the FortiGate resolving them, need ~2,000 and
/// overflowed it ("neighbor table overflow", half the endpoints never reached EMS).
/// Permanent entries do not count towards it (Linux 5.0 and later), and the host's settings
/// stay untouched. Smaller labs resolve their neighbours with ARP as a real LAN does.
pub const STATIC_NEIGH_MIN: usize = 64;

/// The MAC address of a LAN interface with lab address `ip` (an endpoint's `eth0`, the
/// FortiGate's `port3`): locally administered, the address in its last four bytes
/// (`02:00:0a:73:04:01` for 10.115.4.1), so neighbour entries can be written in advance.
pub fn lan_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What a namespaces lab created (the state file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub prefix: String,
    pub owner_pid: u32,
    /// The owner's start time (clock ticks after boot, `/proc/PID/stat` field 22): a PID
    /// reused by another process does not keep a dead lab alive.
    #[serde(default)]
    pub owner_start: Option<u64>,
    /// The owner runs in a network namespace of its own (a second lab on the host): its host
    /// legs and routes went with that namespace; only the named namespaces remain to clean.
    #[serde(default)]
    pub own_netns: bool,
    /// Network namespaces (names under /var/run/netns).
    pub namespaces: Vec<String>,
    /// Interfaces in the host namespace.
    pub host_links: Vec<String>,
    /// `unreachable` routes in the host namespace.
    pub routes: Vec<String>,
    /// `/etc/netns/<ns>` directories (per-namespace resolv.conf).
    pub etc_dirs: Vec<String>,
    /// Lab host name or device role → namespace (for `fortilab exec`).
    pub hosts: Vec<(String, String)>,
}

/// One interface's traffic classes for link faults: packets to each destination go to the
/// `tc` band of the link they belong to (first match wins; `None`: no link, band 1:1 of the
/// default priority map).
#[derive(Debug, Clone, PartialEq)]
pub struct NetemIface {
    pub ns: String,
    pub iface: String,
    pub classes: Vec<(String, Option<String>)>,
}

impl NetemIface {
    /// The links on this interface, in band order (band 1:4 is the first link's).
    pub fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for l in self.classes.iter().filter_map(|(_, l)| l.clone()) {
            if !v.contains(&l) {
                v.push(l);
            }
        }
        v
    }

    /// The `tc` band (1..=16) of a link on this interface.
    pub fn band(&self, link: &str) -> Option<u16> {
        self.links()
            .iter()
            .position(|l| l == link)
            .map(|i| 4 + i as u16)
    }

    /// `tc -batch` lines that set the interface up: a prio root with one extra band per
    /// link (the default priority map uses bands 1-3 only), a pass-through netem in each, and
    /// the destination filters.
    pub fn setup(&self) -> Vec<String> {
        let links = self.links();
        let mut out = vec![format!(
            "qdisc replace dev {} root handle 1: prio bands {} priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
            self.iface,
            3 + links.len()
        )];
        for l in &links {
            let b = self.band(l).expect("own link");
            out.push(format!(
                "qdisc add dev {} parent 1:{b} handle {}: netem delay 0ms",
                self.iface,
                b * 10
            ));
        }
        for (i, (dst, link)) in self.classes.iter().enumerate() {
            let band = link.as_deref().and_then(|l| self.band(l)).unwrap_or(2);
            out.push(format!(
                "filter add dev {} parent 1: protocol ip prio {} u32 match ip dst {dst} flowid 1:{band}",
                self.iface,
                i + 1
            ));
        }
        out
    }

    /// `tc -batch` lines that give a link's band the condition `cond` (real time).
    pub fn apply(&self, link: &str, cond: &fortilab_core::linkfault::LinkCondition) -> Vec<String> {
        let Some(b) = self.band(link) else {
            return Vec::new();
        };
        vec![
            format!("qdisc del dev {} parent 1:{b}", self.iface),
            format!(
                "qdisc add dev {} parent 1:{b} handle {}: {}",
                self.iface,
                b * 10,
                netem_args(cond)
            ),
        ]
    }
}

/// The netem arguments of a link condition: `down` drops everything, latency is one-way
/// delay on each side, loss is per packet, rate per direction.
pub fn netem_args(cond: &fortilab_core::linkfault::LinkCondition) -> String {
    let mut a = format!("netem delay {}us", cond.latency.as_micros());
    let loss = if cond.down { 1.0 } else { cond.loss };
    if loss > 0.0 {
        a.push_str(&format!(" loss {:.4}%", loss * 100.0));
    }
    if let Some(r) = cond.rate_bps {
        a.push_str(&format!(" rate {r}bit"));
    }
    if cond.latency.is_zero() && cond.rate_bps.is_none() {
        return a;
    }
    // Enough queue for the delay-bandwidth product of a fast link.
    a.push_str(" limit 100000");
    a
}

/// The namespaces and commands of a lab (no I/O).
#[derive(Debug, Clone)]
pub struct Plan {
    pub state: State,
    /// Namespace of each device process label (`internet`, `fortianalyzer`, `ems`,
    /// `fortigate`, `endpoints-<i>`: the namespace of the block's first endpoint).
    pub device_ns: Vec<(String, String)>,
    /// Extra arguments of a device process by label (an endpoint block of more than one
    /// endpoint: where the namespaces of its endpoints are).
    pub device_args: Vec<(String, Vec<String>)>,
    /// `ip -batch` lines run in the host namespace (veths, host addresses, routes).
    pub host_batch: Vec<String>,
    /// `ip -n NS -batch` lines per namespace.
    pub ns_batch: Vec<(String, Vec<String>)>,
    /// Commands run with `ip netns exec NS` (sysctl, iptables).
    pub ns_exec: Vec<(String, Vec<String>)>,
    /// `/etc/netns/<ns>/resolv.conf` contents.
    pub resolv: Vec<(String, String)>,
    /// Link-fault classes per interface (`tc netem`, set up when the first fault is set).
    pub netem: Vec<NetemIface>,
    /// The LAN subnets past the LAN /24 (the FortiGate's port3 secondary addresses).
    pub extra_lan: Vec<LanSubnet>,
    /// Endpoint namespaces set up over netlink (namespace, address, prefix length, gateway,
    /// the gateway's MAC for a permanent neighbour entry: see [`STATIC_NEIGH_MIN`]); their
    /// `ns_batch` lines are the fallback.
    pub endpoint_conf: Vec<(String, Ipv4Addr, u8, Ipv4Addr, Option<[u8; 6]>)>,
    pub dns: Ipv4Addr,
    pub internet_ip: Ipv4Addr,
}

/// A LAN subnet past the FortiGate's LAN /24, for endpoints that continue into 10.115.3.x,
/// 10.115.4.x …: on the same segment as port3, with a secondary address of port3 as the
/// endpoints' gateway (FortiOS `set secondary-IP enable`, `config secondaryip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanSubnet {
    pub net: Ipv4Addr,
    pub len: u8,
    /// The FortiGate's secondary address in it.
    pub gateway: Ipv4Addr,
}

impl LanSubnet {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.len);
        u32::from(ip) & mask == u32::from(self.net)
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", self.net, self.len)
    }

    /// The dotted netmask (`255.255.254.0`).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - self.len))
    }
}

/// The subnets for endpoint addresses off the LAN /24: each /24 they use, the FortiGate at
/// the first free of .1, .254, .253 … ; a /24 the endpoints fill completely (they skip .0 and
/// .255) becomes part of its /23, where the FortiGate takes the lower half's .255 (a host
/// address in a /23). `taken`: the lab's own /24s (management, LAN, WAN).
pub fn lan_subnets(
    used: &std::collections::BTreeSet<u32>,
    lan: Ipv4Addr,
    taken: &[Ipv4Addr],
) -> anyhow::Result<Vec<LanSubnet>> {
    let nets: std::collections::BTreeSet<u32> = used
        .iter()
        .map(|a| a & 0xffff_ff00)
        .filter(|n| *n != u32::from(lan))
        .collect();
    let mut out: Vec<LanSubnet> = Vec::new();
    for net in nets {
        if out.iter().any(|s| s.contains(Ipv4Addr::from(net))) {
            continue;
        }
        if let Some(ip) = taken.iter().find(|t| u32::from(**t) == net) {
            bail!("endpoint addresses in {ip}/24, a lab network of its own (endpoints go on the LAN and past it)");
        }
        let free = std::iter::once(1u32)
            .chain((2..=254).rev())
            .map(|h| net | h)
            .find(|a| !used.contains(a));
        if let Some(gw) = free {
            out.push(LanSubnet {
                net: Ipv4Addr::from(net),
                len: 24,
                gateway: Ipv4Addr::from(gw),
            });
            continue;
        }
        let base = net & 0xffff_fe00;
        let clash = taken
            .iter()
            .chain(std::iter::once(&lan))
            .find(|t| u32::from(**t) & 0xffff_fe00 == base);
        if let Some(t) = clash {
            bail!(
                "the endpoints fill {}/24 (no free address for the FortiGate there) and its /23 holds the lab network {t}/24: start the block elsewhere",
                Ipv4Addr::from(net)
            );
        }
        out.push(LanSubnet {
            net: Ipv4Addr::from(base),
            len: 23,
            gateway: Ipv4Addr::from(base | 0xff),
        });
    }
    Ok(out)
}

/// The FortiGate configuration text with port3's secondary addresses for `extra` (inserted in
/// `config system interface` / `edit "port3"`, or a block of its own when the text has no
/// port3; a port3 that already has `config secondaryip` is left as it is).
pub fn with_secondary_ips(text: &str, port: &str, extra: &[LanSubnet]) -> String {
    if extra.is_empty() {
        return text.to_string();
    }
    let mut block = vec![
        "        set secondary-IP enable".to_string(),
        "        config secondaryip".to_string(),
    ];
    for (i, s) in extra.iter().enumerate() {
        block.push(format!("            edit {}", i + 1));
        block.push(format!(
            "                set ip {} {}",
            s.gateway,
            s.netmask()
        ));
        block.push("                set allowaccess ping".into());
        block.push("            next".into());
    }
    block.push("        end".into());
    let lines: Vec<&str> = text.lines().collect();
    let mut depth = 0usize;
    let mut in_if = false;
    let mut in_port = false;
    let mut has_secondary = false;
    let mut at = None;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        if let Some(what) = t.strip_prefix("config ") {
            if depth == 0 && what.trim() == "system interface" {
                in_if = true;
            }
            if in_port && what.trim() == "secondaryip" {
                has_secondary = true;
            }
            depth += 1;
        } else if t == "end" {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                in_if = false;
            }
        } else if in_if && depth == 1 {
            if let Some(name) = t.strip_prefix("edit ") {
                in_port = name.trim().trim_matches('"') == port;
            } else if t == "next" && in_port {
                at = Some(i);
                break;
            }
        }
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match at {
        Some(_) if has_secondary => {}
        Some(i) => {
            out.splice(i..i, block);
        }
        None => {
            out.push("config system interface".into());
            out.push(format!("    edit \"{port}\""));
            out.extend(block);
            out.push("    next".into());
            out.push("end".into());
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn subnet24(ip: Ipv4Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 0)
}

fn host(net: Ipv4Addr, h: u8) -> Ipv4Addr {
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], h)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new prefix for a lab of this process: `fl<pid><letter>` (at most 10 characters, so host
/// interface names stay within 15).
pub fn new_prefix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 26;
    format!("fl{}{}", std::process::id(), (b'a' + n as u8) as char)
}

/// The namespace of the lab's `g`-th endpoint (1-based over every `[[endpoints]]` block).
pub fn endpoint_ns(prefix: &str, g: usize) -> String {
    format!("{prefix}-e{g}")
}

/// The plan of a lab definition (the addresses are the Compose plan's, which checks them).
pub fn plan(def: &LabDef, prefix: &str) -> anyhow::Result<Plan> {
    let f = &def.fortigate;
    let mgmt = subnet24(f.mgmt_ip);
    let lan = subnet24(f.lan_ip);
    let wan = crate::compose::WAN_SUBNET;
    let fgt_wan = host(wan, 1);
    let internet_ip = host(wan, 2);
    if f.proxy_port == TRANSPARENT_PORT {
        bail!("the FortiGate proxy port {TRANSPARENT_PORT} is the namespaces mode's transparent proxy port");
    }
    let ns = |s: &str| format!("{prefix}-{s}");
    let sw = ns("sw");
    let mut st = State {
        prefix: prefix.to_string(),
        owner_pid: std::process::id(),
        owner_start: process_start(std::process::id()),
        routes: vec![LAB_RANGE.to_string()],
        ..Default::default()
    };
    // Every endpoint's address, checked against the lab's own.
    let blocks: Vec<Vec<Ipv4Addr>> = def
        .endpoints
        .iter()
        .map(|ep| crate::labdef::block_addrs(ep.ip, ep.count))
        .collect();
    let mut used = std::collections::BTreeSet::new();
    let lab16 = u32::from(mgmt) & 0xffff_0000;
    for ip in blocks.iter().flatten() {
        let a = u32::from(*ip);
        if a & 0xffff_0000 != lab16 {
            bail!(
                "endpoint {ip} is outside the lab range {}/16",
                Ipv4Addr::from(lab16)
            );
        }
        if *ip == f.lan_ip || *ip == host(lan, HOST_PART) {
            bail!("endpoint {ip}: the LAN's .1 (FortiGate port3) and .{HOST_PART} (this host) are taken");
        }
        if !used.insert(a) {
            bail!("endpoint {ip} is in two [[endpoints]] blocks");
        }
    }
    let extra_lan = lan_subnets(&used, lan, &[mgmt, wan])?;
    let static_neigh = used.len() > STATIC_NEIGH_MIN;
    let port3_mac = lan_mac(f.lan_ip);
    let mut host_batch = Vec::new();
    let mut ns_batch: Vec<(String, Vec<String>)> = Vec::new();
    let mut ns_exec = Vec::new();
    let mut resolv = Vec::new();
    let mut device_ns = Vec::new();
    let mut device_args = Vec::new();
    // The switch.
    let mut swb = vec!["link set lo up".to_string()];
    for br in ["br-m", "br-l", "br-w"] {
        swb.push(format!("link add {br} type bridge"));
        swb.push(format!("link set {br} up"));
    }
    st.namespaces.push(sw.clone());
    // veth: `inner` in namespace `n` (up from the start, with MAC address `mac` when given),
    // `outer` in the switch on bridge `br`.
    let mut wire = |n: &str,
                    inner: &str,
                    mac: Option<[u8; 6]>,
                    outer: &str,
                    br: &str,
                    swb: &mut Vec<String>| {
        let addr = mac
            .map(|m| format!(" address {}", mac_str(m)))
            .unwrap_or_default();
        host_batch.push(format!(
            "link add {inner}{addr} netns {n} up type veth peer name {outer} netns {sw}"
        ));
        swb.push(format!("link set {outer} master {br} up"));
    };
    // FortiGate.
    let fgt = ns("fgt");
    wire(&fgt, "port1", None, "fgt-m", "br-m", &mut swb);
    wire(&fgt, "port3", Some(port3_mac), "fgt-l", "br-l", &mut swb);
    wire(&fgt, "wan1", None, "fgt-w", "br-w", &mut swb);
    let mut fb = vec![
        "link set lo up".into(),
        format!("addr add {}/24 dev port1", f.mgmt_ip),
        format!("addr add {}/24 dev port3", f.lan_ip),
        format!("addr add {fgt_wan}/24 dev wan1"),
    ];
    for s in &extra_lan {
        fb.push(format!("addr add {}/{} dev port3", s.gateway, s.len));
    }
    fb.push(format!("route add default via {internet_ip}"));
    if static_neigh {
        for ip in blocks.iter().flatten() {
            fb.push(format!(
                "neigh replace {ip} lladdr {} dev port3 nud permanent",
                mac_str(lan_mac(*ip))
            ));
        }
    }
    ns_batch.push((fgt.clone(), fb));
    let ipt = |args: &str| -> Vec<String> {
        std::iter::once("iptables".to_string())
            .chain(args.split_whitespace().map(str::to_string))
            .collect()
    };
    ns_exec.push((
        fgt.clone(),
        vec![
            "sysctl".into(),
            "-qw".into(),
            "net.ipv4.ip_forward=1".into(),
            "net.ipv4.conf.all.send_redirects=0".into(),
            "net.ipv4.conf.port3.send_redirects=0".into(),
        ],
    ));
    let lab_nets: Vec<String> = [mgmt, lan, wan]
        .iter()
        .map(|n| format!("{n}/24"))
        .chain(extra_lan.iter().map(LanSubnet::cidr))
        .collect();
    for net in &lab_nets {
        ns_exec.push((
            fgt.clone(),
            ipt(&format!(
                "-w -t nat -A PREROUTING -i port3 -p tcp -d {net} -j RETURN"
            )),
        ));
    }
    ns_exec.push((
        fgt.clone(),
        ipt(&format!(
            "-w -t nat -A PREROUTING -i port3 -p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports {TRANSPARENT_PORT}"
        )),
    ));
    device_ns.push(("fortigate".to_string(), fgt.clone()));
    st.hosts.push(("fortigate".into(), fgt.clone()));
    // FortiAnalyzer, EMS.
    for (role, short, ip) in [
        ("fortianalyzer", "faz", def.fortianalyzer.ip),
        ("ems", "ems", def.ems.ip),
    ] {
        let n = ns(short);
        wire(&n, "eth0", None, short, "br-m", &mut swb);
        ns_batch.push((
            n.clone(),
            vec![
                "link set lo up".into(),
                format!("addr add {ip}/24 dev eth0"),
                format!("route add default via {}", f.mgmt_ip),
            ],
        ));
        device_ns.push((role.to_string(), n.clone()));
        st.hosts.push((role.into(), n.clone()));
    }
    // The lab Internet (its sites' addresses are added once it has reported them).
    let inet = ns("inet");
    wire(&inet, "eth0", None, "inet", "br-w", &mut swb);
    ns_batch.push((
        inet.clone(),
        vec![
            "link set lo up".into(),
            format!("addr add {internet_ip}/24 dev eth0"),
            format!("route add {}/16 via {fgt_wan}", Ipv4Addr::from(lab16)),
            format!("route add default via {fgt_wan}"),
        ],
    ));
    device_ns.push(("internet".into(), inet.clone()));
    st.hosts.push(("internet".into(), inet.clone()));
    // Endpoints: a namespace each, on the LAN bridge; one process per [[endpoints]] block, in
    // the namespace of its first endpoint (it opens its other endpoints' sockets in theirs).
    let specs = def.endpoint_specs();
    let mut ep_ns = Vec::new();
    let mut endpoint_conf = Vec::new();
    let mut g = 0usize;
    for (i, addrs) in blocks.iter().enumerate() {
        let first = g + 1;
        for ip in addrs {
            g += 1;
            let n = endpoint_ns(prefix, g);
            wire(
                &n,
                "eth0",
                Some(lan_mac(*ip)),
                &format!("e{g}"),
                "br-l",
                &mut swb,
            );
            let (len, gw) = match extra_lan.iter().find(|s| s.contains(*ip)) {
                Some(s) => (s.len, s.gateway),
                None => (24, f.lan_ip),
            };
            let mut lines = vec![
                "link set lo up".to_string(),
                format!("addr add {ip}/{len} dev eth0"),
                format!("route add default via {gw}"),
            ];
            if static_neigh {
                lines.push(format!(
                    "neigh replace {gw} lladdr {} dev eth0 nud permanent",
                    mac_str(port3_mac)
                ));
            }
            ns_batch.push((n.clone(), lines));
            endpoint_conf.push((n.clone(), *ip, len, gw, static_neigh.then_some(port3_mac)));
            resolv.push((n.clone(), format!("nameserver {internet_ip}\n")));
            st.etc_dirs.push(format!("/etc/netns/{n}"));
            st.namespaces.push(n.clone());
            if let Some(s) = specs.iter().find(|s| s.ip == *ip) {
                st.hosts.push((s.name.clone(), n.clone()));
            }
            st.hosts.push((ip.to_string(), n.clone()));
            ep_ns.push(n);
        }
        let label = format!("endpoints-{}", i + 1);
        device_ns.push((label.clone(), endpoint_ns(prefix, first)));
        if addrs.len() > 1 {
            device_args.push((
                label,
                vec![
                    "--netns-prefix".to_string(),
                    format!("{prefix}-e"),
                    "--netns-start".into(),
                    first.to_string(),
                ],
            ));
        }
    }
    // The host's legs; the LAN's further subnets through the FortiGate.
    for (suffix, br, net) in [("m", "br-m", mgmt), ("l", "br-l", lan), ("w", "br-w", wan)] {
        let h = format!("{prefix}{suffix}");
        host_batch.push(format!(
            "link add {h} type veth peer name host-{suffix} netns {sw}"
        ));
        host_batch.push(format!("addr add {}/24 dev {h}", host(net, HOST_PART)));
        host_batch.push(format!("link set {h} up"));
        swb.push(format!("link set host-{suffix} master {br} up"));
        st.host_links.push(h);
    }
    for s in &extra_lan {
        host_batch.push(format!(
            "route add {} via {} dev {prefix}l",
            s.cidr(),
            f.lan_ip
        ));
    }
    for (l, n) in &device_ns {
        if !l.starts_with("endpoints-") {
            st.namespaces.push(n.clone());
        }
    }
    // Link faults: each link's traffic by destination on both of its ends.
    let link = |a: &str, b: &str| {
        fortilab_core::linkfault::LinkId::new(a, b)
            .map(|l| l.name())
            .unwrap_or_default()
    };
    let (l_faz, l_ems, l_inet, l_ep) = (
        link("fortigate", "fortianalyzer"),
        link("fortigate", "ems"),
        link("fortigate", "internet"),
        link("fortigate", "endpoints"),
    );
    let (l_ep_ems, l_ep_faz) = (link("endpoints", "ems"), link("endpoints", "fortianalyzer"));
    let c = |dst: String, l: Option<&String>| (dst, l.cloned());
    let lan_all: Vec<String> = std::iter::once(format!("{lan}/24"))
        .chain(extra_lan.iter().map(LanSubnet::cidr))
        .collect();
    let to_lan = |l: &String| -> Vec<(String, Option<String>)> {
        lan_all.iter().map(|n| c(n.clone(), Some(l))).collect()
    };
    let mut netem = vec![
        NetemIface {
            ns: fgt.clone(),
            iface: "port1".into(),
            classes: vec![
                c(format!("{}/32", def.fortianalyzer.ip), Some(&l_faz)),
                c(format!("{}/32", def.ems.ip), Some(&l_ems)),
            ],
        },
        NetemIface {
            ns: fgt.clone(),
            iface: "wan1".into(),
            classes: vec![c("0.0.0.0/0".into(), Some(&l_inet))],
        },
        NetemIface {
            ns: fgt.clone(),
            iface: "port3".into(),
            classes: std::iter::once(c(format!("{}/32", host(lan, HOST_PART)), None))
                .chain(to_lan(&l_ep))
                .collect(),
        },
        NetemIface {
            ns: ns("faz"),
            iface: "eth0".into(),
            classes: std::iter::once(c(format!("{}/32", f.mgmt_ip), Some(&l_faz)))
                .chain(to_lan(&l_ep_faz))
                .collect(),
        },
        NetemIface {
            ns: ns("ems"),
            iface: "eth0".into(),
            classes: std::iter::once(c(format!("{}/32", f.mgmt_ip), Some(&l_ems)))
                .chain(to_lan(&l_ep_ems))
                .collect(),
        },
        NetemIface {
            ns: inet.clone(),
            iface: "eth0".into(),
            classes: std::iter::once(c(format!("{fgt_wan}/32"), Some(&l_inet)))
                .chain(to_lan(&l_inet))
                .collect(),
        },
    ];
    for n in ep_ns {
        netem.push(NetemIface {
            ns: n,
            iface: "eth0".into(),
            classes: vec![
                c(format!("{}/32", def.ems.ip), Some(&l_ep_ems)),
                c(format!("{}/32", def.fortianalyzer.ip), Some(&l_ep_faz)),
                c(format!("{}/32", f.lan_ip), Some(&l_ep)),
                c(format!("{}/16", Ipv4Addr::from(lab16)), None),
                c("0.0.0.0/0".into(), Some(&l_ep)),
            ],
        });
    }
    ns_batch.insert(0, (sw, swb));
    Ok(Plan {
        state: st,
        device_ns,
        device_args,
        host_batch,
        ns_batch,
        ns_exec,
        resolv,
        netem,
        extra_lan,
        endpoint_conf,
        dns: internet_ip,
        internet_ip,
    })
}

fn state_path(prefix: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{prefix}.json"))
}

fn write_state(st: &State) -> anyhow::Result<()> {
    std::fs::create_dir_all(STATE_DIR).with_context(|| STATE_DIR.to_string())?;
    let p = state_path(&st.prefix);
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(st)?)?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn batch(ns: Option<&str>, lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut c = Command::new("ip");
    if let Some(n) = ns {
        c.args(["-n", n]);
    }
    c.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().context("ip -batch (is iproute2 installed?)")?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(lines.join("\n").as_bytes())?;
        stdin.write_all(b"\n")?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip{} -batch failed: {}",
            ns.map(|n| format!(" -n {n}")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn tc_batch(ns: &str, lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("tc")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("tc -batch (iproute2)")?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(lines.join("\n").as_bytes())?;
        stdin.write_all(b"\n")?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "tc -n {ns} -batch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether this process may create network namespaces (root; CAP_NET_ADMIN alone is not
/// enough for `ip netns add`, which also mounts).
pub fn check_privileges() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "namespaces mode needs root (network namespaces, veths, routes and iptables rules \
             are created for the lab): run `sudo fortilab up --network namespaces`, or use the \
             default loopback mode"
        );
    }
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        bail!("namespaces mode needs the `ip` command (iproute2) and `iptables`");
    }
    Ok(())
}

/// The start time of a process (clock ticks after boot, `/proc/PID/stat` field 22).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether the process that owns a state file still runs (same PID and start time).
fn owner_alive(pid: u32, start: Option<u64>) -> bool {
    pid_alive(pid) && (start.is_none() || process_start(pid) == start)
}

/// The state files of namespaces labs on this machine.
pub fn list_states() -> Vec<State> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(STATE_DIR) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            if let Some(st) = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<State>(&b).ok())
            {
                if !st.prefix.is_empty() {
                    out.push(st);
                }
            }
        }
    }
    out
}

/// Runs `ip -force -batch -` (every line, errors or not) and returns its standard output.
fn batch_force(lines: &[String]) -> String {
    use std::io::Write;
    let Ok(mut child) = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return String::new();
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(lines.join("\n").as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Removes everything a state file names: processes left in its namespaces (SIGKILL by pid),
/// the namespaces (their veths go with them), the host's interfaces, `/etc/netns` entries,
/// then the host's unreachable routes (unless another live lab on the host still needs them),
/// then the state file. A lab whose owner ran in a namespace of its own left its host legs
/// and routes there: they went with it. Batched (`ip -batch`): a lab of 1,000 endpoints has
/// over 1,000 namespaces.
pub fn teardown(st: &State) {
    let pids = batch_force(
        &st.namespaces
            .iter()
            .map(|n| format!("netns pids {n}"))
            .collect::<Vec<_>>(),
    );
    for pid in pids.split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    batch_force(
        &st.namespaces
            .iter()
            .map(|n| format!("netns del {n}"))
            .collect::<Vec<_>>(),
    );
    let here = !st.own_netns || st.owner_pid == std::process::id();
    if here {
        batch_force(
            &st.host_links
                .iter()
                .map(|l| format!("link del {l}"))
                .collect::<Vec<_>>(),
        );
    }
    for d in &st.etc_dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let others_live = !st.own_netns
        && list_states().iter().any(|o| {
            o.prefix != st.prefix
                && !o.own_netns
                && o.owner_pid != st.owner_pid
                && owner_alive(o.owner_pid, o.owner_start)
        });
    if here && !others_live {
        batch_force(
            &st.routes
                .iter()
                .map(|r| format!("route del unreachable {r}"))
                .collect::<Vec<_>>(),
        );
    }
    let _ = std::fs::remove_file(state_path(&st.prefix));
}

/// Removes the labs whose owner process is gone. Returns their prefixes. A process in a
/// network namespace of its own leaves a dead host lab (its routes are on the host) to the
/// next host process (`fortilab netns-clean`, the next `fortilab up`).
pub fn clean_stale() -> Vec<String> {
    let mut done = Vec::new();
    for st in list_states() {
        if owner_alive(st.owner_pid, st.owner_start) {
            continue;
        }
        if in_own_netns() && !st.own_netns {
            continue;
        }
        teardown(&st);
        done.push(st.prefix);
    }
    done
}

/// Removes one lab by prefix if its owner is gone (`fortilab netns-clean PREFIX`).
pub fn clean_one(prefix: &str) -> anyhow::Result<()> {
    let st = list_states()
        .into_iter()
        .find(|s| s.prefix == prefix)
        .ok_or_else(|| anyhow!("no namespaces lab {prefix} on this machine"))?;
    if owner_alive(st.owner_pid, st.owner_start) {
        bail!(
            "lab {prefix} is running (process {}): stop it instead",
            st.owner_pid
        );
    }
    teardown(&st);
    Ok(())
}

/// Set when this process was started in a network namespace of its own (see
/// [`enter_own_netns_if_asked`]).
static OWN_NETNS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The environment variable that asks a (re-executed) `fortilab` to move into a new network
/// namespace before anything else.
pub const OWN_NETNS_ENV: &str = "FORTILAB_OWN_NETNS";

/// The file naming the process whose namespaces lab holds the host's side (its legs into the
/// lab networks, so that the host reaches 10.115.1.1).
fn host_claim_path() -> PathBuf {
    Path::new(STATE_DIR).join("host-owner")
}

/// Whether this process runs in a network namespace of its own.
pub fn in_own_netns() -> bool {
    OWN_NETNS.load(Ordering::Relaxed)
}

/// Called first thing in `main` (one thread only): with [`OWN_NETNS_ENV`] set, moves the
/// process into a new network namespace (loopback up). The namespace needs no name and no
/// cleanup: it ends with the process, `kill -9` included, and takes the lab's host legs with it.
pub fn enter_own_netns_if_asked() {
    if std::env::var_os(OWN_NETNS_ENV).is_none() {
        return;
    }
    std::env::remove_var(OWN_NETNS_ENV);
    match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        Ok(()) => {
            quiet(&["ip", "link", "set", "lo", "up"]);
            OWN_NETNS.store(true, Ordering::Relaxed);
        }
        Err(e) => eprintln!("fortilab: no network namespace of its own: {e}"),
    }
}

/// Runs `f` with the host claim file locked (flock on the state directory's lock file).
fn with_claim_lock<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::fs::create_dir_all(STATE_DIR).with_context(|| STATE_DIR.to_string())?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(STATE_DIR).join(".lock"))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("lock {STATE_DIR}/.lock: {e}"))?;
    f()
}

/// The live process holding the host's side of a namespaces lab, other than this one.
fn host_owner() -> Option<u32> {
    let text = std::fs::read_to_string(host_claim_path()).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start = it.next().and_then(|s| s.parse().ok());
    (pid != std::process::id() && owner_alive(pid, start)).then_some(pid)
}

/// Claims the host's side for this process; `Err(pid)` when another live process has it.
fn claim_host() -> anyhow::Result<Result<(), u32>> {
    with_claim_lock(|| {
        if let Some(pid) = host_owner() {
            return Ok(Err(pid));
        }
        let me = std::process::id();
        let start = process_start(me).map(|s| s.to_string()).unwrap_or_default();
        std::fs::write(host_claim_path(), format!("{me} {start}\n"))?;
        Ok(Ok(()))
    })
}

/// Before a namespaces lab starts (`fortilab up`, `fortilab run`): the first lab on the host
/// claims the host's side; while another lab's process holds it, this process executes itself
/// again in a network namespace of its own (same PID, same arguments), where its lab's
/// host legs and routes live. Returns only when this process may go on.
pub fn claim_host_or_reexec() -> anyhow::Result<()> {
    if in_own_netns() {
        return Ok(());
    }
    check_privileges()?;
    match claim_host()? {
        Ok(()) => Ok(()),
        Err(pid) => {
            use std::os::unix::process::CommandExt;
            tracing::info!(
                owner = pid,
                "another namespaces lab holds the host's side; running this lab's orchestrator in a network namespace of its own"
            );
            let mut args = std::env::args_os();
            let argv0 = args.next().unwrap_or_else(|| "fortilab".into());
            let err = Command::new("/proc/self/exe")
                .arg0(argv0)
                .args(args)
                .env(OWN_NETNS_ENV, "1")
                .exec();
            Err(anyhow!(
                "re-executing in a network namespace of its own: {err}"
            ))
        }
    }
}

/// A namespaces lab's network, removed on drop.
#[derive(Debug)]
pub struct NetLab {
    pub plan: Plan,
    torn_down: bool,
}

/// Runs `f` on every item with a few threads (namespaces are configured one `ip` process
/// each); the first error wins.
fn parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let err: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(2, 8)
        .min(items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                if err.lock().unwrap().is_some() {
                    break;
                }
                if let Err(e) = f(item) {
                    err.lock().unwrap().get_or_insert(e);
                    break;
                }
            });
        }
    });
    match err.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl NetLab {
    /// Cleans up dead labs, then creates the network of `plan`. The host's unreachable
    /// route for the lab range comes first.
    pub fn create(mut plan: Plan) -> anyhow::Result<NetLab> {
        check_privileges()?;
        for p in clean_stale() {
            eprintln!("fortilab: removed the network of a dead namespaces lab ({p})");
        }
        if in_own_netns() {
            plan.state.own_netns = true;
        }
        // One lab per network namespace: the labs' host legs would claim the same subnets.
        if let Some(o) = list_states().into_iter().find(|o| {
            o.prefix != plan.state.prefix
                && o.owner_pid == std::process::id()
                && owner_alive(o.owner_pid, o.owner_start)
        }) {
            bail!(
                "this process already runs namespaces lab {} (one lab per process at a time)",
                o.prefix
            );
        }
        if !in_own_netns() {
            if let Err(pid) = claim_host()? {
                bail!(
                "another namespaces lab (process {pid}) holds the lab addresses on this machine; \
                 stop it first, or start this one with `fortilab up`/`fortilab run`, which run a \
                 second lab in a network namespace of their own"
                );
            }
        }
        // The state file first: whatever happens next, the next start can clean up.
        write_state(&plan.state)?;
        let mut lab = NetLab {
            plan,
            torn_down: false,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let p = &self.plan;
        run(Command::new("ip").args(["route", "replace", "unreachable", LAB_RANGE]))?;
        batch(
            None,
            &p.state
                .namespaces
                .iter()
                .map(|n| format!("netns add {n}"))
                .collect::<Vec<_>>(),
        )?;
        // Before any veth exists, so none of them ever speaks IPv6.
        parallel(&p.state.namespaces, |n| nl::without_ipv6(n))?;
        batch(None, &p.host_batch)?;
        let by_netlink: std::collections::HashSet<&str> =
            p.endpoint_conf.iter().map(|(n, ..)| n.as_str()).collect();
        let by_ip: Vec<&(String, Vec<String>)> = p
            .ns_batch
            .iter()
            .filter(|(n, _)| !by_netlink.contains(n.as_str()))
            .collect();
        parallel(&by_ip, |(n, lines)| batch(Some(n.as_str()), lines))?;
        parallel(&p.endpoint_conf, |(n, ip, len, gw, gw_mac)| {
            nl::configure(n, *ip, *len, *gw, *gw_mac).or_else(|e| {
                tracing::debug!(error = %format!("{e:#}"), "netlink set-up failed; using ip");
                let lines = p
                    .ns_batch
                    .iter()
                    .find(|(x, _)| x == n)
                    .map(|(_, l)| l.as_slice())
                    .unwrap_or_default();
                batch(Some(n.as_str()), lines)
            })
        })?;
        for (n, argv) in &p.ns_exec {
            run(Command::new("ip").args(["netns", "exec", n]).args(argv))?;
        }
        for (n, text) in &p.resolv {
            let d = Path::new("/etc/netns").join(n);
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("resolv.conf"), text)?;
        }
        Ok(())
    }

    /// Adds the lab Internet's sites: first an unreachable route on the host for each public
    /// address, then the address on the Internet namespace's loopback.
    pub fn add_sites(&mut self, ips: &[Ipv4Addr]) -> anyhow::Result<()> {
        let inet = self
            .ns_of("internet")
            .ok_or_else(|| anyhow!("no internet"))?;
        let mut lines = Vec::new();
        let mut routes = Vec::new();
        for ip in ips {
            let r = format!("{ip}/32");
            if !self.plan.state.routes.contains(&r) {
                self.plan.state.routes.push(r.clone());
                routes.push(format!("route replace unreachable {r}"));
            }
            lines.push(format!("addr replace {ip}/32 dev lo"));
        }
        if !routes.is_empty() {
            write_state(&self.plan.state)?;
            batch(None, &routes)?;
        }
        if !lines.is_empty() {
            batch(Some(&inet), &lines)?;
        }
        Ok(())
    }

    /// What link faults need (`LabLinks` keeps a copy).
    pub fn netem_set(&self) -> NetemSet {
        NetemSet {
            netem: std::sync::Arc::new(self.plan.netem.clone()),
            setup: Default::default(),
            state: Default::default(),
            shapers: Default::default(),
        }
    }

    /// The namespace of a device process label.
    pub fn ns_of(&self, label: &str) -> Option<String> {
        self.plan
            .device_ns
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, n)| n.clone())
    }

    /// Extra arguments of a device process (see [`Plan::device_args`]).
    pub fn args_of(&self, label: &str) -> Vec<String> {
        self.plan
            .device_args
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    }

    /// Removes the lab's network (idempotent).
    pub fn teardown(&mut self) {
        if !self.torn_down {
            self.torn_down = true;
            teardown(&self.plan.state);
        }
    }
}

/// The `tc netem` side of a namespaces lab's links. The qdiscs are set up when the first
/// fault is set (a lab of 1,000 endpoints has 1,000 endpoint interfaces; most labs set none).
#[derive(Debug, Clone)]
pub struct NetemSet {
    netem: std::sync::Arc<Vec<NetemIface>>,
    /// `None` until set up; then whether `tc netem` works here (else link faults use
    /// iptables for down and loss and netfilter queues for latency and rate).
    setup: std::sync::Arc<std::sync::Mutex<Option<bool>>>,
    /// Real-time conditions set so far (the iptables fallback rebuilds every rule from them).
    state: std::sync::Arc<
        std::sync::Mutex<
            std::collections::BTreeMap<String, fortilab_core::linkfault::LinkCondition>,
        >,
    >,
    /// The iptables fallback's running shapers, by (namespace, link): latency and rate.
    shapers: Shapers,
}

/// Running shapers by (namespace, link); each stops when removed or when the last copy of the
/// lab's [`NetemSet`] goes.
type Shapers = std::sync::Arc<
    std::sync::Mutex<std::collections::BTreeMap<(String, String), crate::shaper::Shaper>>,
>;

/// The iptables fallback's rules of one interface (no netem): for each destination class in
/// order, DROP (down), a random DROP (loss), the link's netfilter queue (latency, rate: a
/// [`crate::shaper::Shaper`] holds the packets), then RETURN. `links` numbers the queues:
/// a link's queue is its position there plus one.
pub fn iptables_rules(
    i: &NetemIface,
    state: &std::collections::BTreeMap<String, fortilab_core::linkfault::LinkCondition>,
    links: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for (dst, link) in &i.classes {
        let c = link.as_ref().and_then(|l| state.get(l));
        let base = format!("-w -A FLLINK -o {} -d {dst}", i.iface);
        if let Some(c) = c {
            if c.down {
                out.push(format!("{base} -j DROP"));
                continue;
            }
            if c.loss > 0.0 {
                out.push(format!(
                    "{base} -m statistic --mode random --probability {:.4} -j DROP",
                    c.loss
                ));
            }
            if let Some(q) = link
                .as_ref()
                .filter(|_| shape_of(c).is_active())
                .and_then(|l| queue_of(links, l))
            {
                out.push(format!("{base} -j NFQUEUE --queue-num {q} --queue-bypass"));
            }
        }
        out.push(format!("{base} -j RETURN"));
    }
    out
}

/// The netfilter queue number of a link (its position in `links` plus one).
fn queue_of(links: &[String], link: &str) -> Option<u16> {
    links
        .iter()
        .position(|l| l == link)
        .and_then(|i| u16::try_from(i + 1).ok())
}

/// What a shaper does for a link condition (real time).
fn shape_of(c: &fortilab_core::linkfault::LinkCondition) -> crate::shaper::Shape {
    crate::shaper::Shape {
        latency: c.latency,
        rate_bps: c.rate_bps,
    }
}

impl NetemSet {
    /// How this lab shapes its links (reported with each link).
    pub fn via(&self) -> &'static str {
        match *self.setup.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(false) => "iptables and netfilter queues",
            _ => "tc netem",
        }
    }

    /// The links `tc netem` can shape in this lab.
    pub fn link_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.netem.iter().flat_map(|i| i.links()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The namespaces with shaped interfaces, each once, in plan order.
    fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for i in self.netem.iter() {
            if v.last() != Some(&i.ns) && !v.contains(&i.ns) {
                v.push(i.ns.clone());
            }
        }
        v
    }

    /// Sets the qdiscs up on first use; returns whether `tc netem` works.
    fn ensure_setup(&self) -> anyhow::Result<bool> {
        let mut g = self.setup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ok) = *g {
            return Ok(ok);
        }
        let nss = self.namespaces();
        if nss.is_empty() {
            *g = Some(true);
            return Ok(true);
        }
        let lines = |n: &String| -> Vec<String> {
            self.netem
                .iter()
                .filter(|i| &i.ns == n)
                .flat_map(NetemIface::setup)
                .collect()
        };
        let ok = match tc_batch(&nss[0], &lines(&nss[0])) {
            Ok(()) => {
                parallel(&nss[1..], |n| tc_batch(n, &lines(n)))?;
                true
            }
            Err(e) => {
                // A kernel without sch_prio/sch_netem: link faults fall back to iptables
                // (down, loss) and netfilter queues (latency, rate).
                tracing::warn!(error = %format!("{e:#}"), "tc netem unavailable; link faults use iptables and netfilter queues");
                parallel(&nss, |n| {
                    for a in [
                        "-w -N FLLINK",
                        "-w -I OUTPUT -j FLLINK",
                        "-w -I FORWARD -j FLLINK",
                    ] {
                        run(Command::new("ip")
                            .args(["netns", "exec", n, "iptables"])
                            .args(a.split_whitespace()))?;
                    }
                    Ok(())
                })?;
                false
            }
        };
        *g = Some(ok);
        Ok(ok)
    }

    /// Gives a link the condition `real` (real time) on both of its ends.
    pub fn set_link(
        &self,
        link: &str,
        real: &fortilab_core::linkfault::LinkCondition,
    ) -> anyhow::Result<()> {
        if !self.link_names().iter().any(|l| l == link) {
            bail!("no link {link} in this lab");
        }
        let nss: Vec<String> = self
            .namespaces()
            .into_iter()
            .filter(|n| {
                self.netem
                    .iter()
                    .any(|i| &i.ns == n && i.band(link).is_some())
            })
            .collect();
        if !self.ensure_setup()? {
            let links = self.link_names();
            let shape = shape_of(real);
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.insert(link.to_string(), *real);
            let st = st.clone();
            let mut shapers = self.shapers.lock().unwrap_or_else(|e| e.into_inner());
            // A shaper is bound before its queue's rule exists and stopped after it is gone
            // (with --queue-bypass nothing is lost in between).
            if shape.is_active() {
                let q = queue_of(&links, link).expect("a link of this lab");
                for n in &nss {
                    let key = (n.clone(), link.to_string());
                    match shapers.get(&key) {
                        Some(s) => s.set(shape),
                        None => {
                            let s = crate::shaper::Shaper::start(n, q, shape).map_err(|e| {
                                anyhow!(
                                    "{e:#}: latency and rate need tc netem (sch_netem) or \
                                     netfilter queues (nfnetlink_queue); this kernel has neither"
                                )
                            })?;
                            shapers.insert(key, s);
                        }
                    }
                }
            }
            parallel(&nss, |n| {
                run(
                    Command::new("ip").args(["netns", "exec", n, "iptables", "-w", "-F", "FLLINK"])
                )?;
                for i in self.netem.iter().filter(|i| &i.ns == n) {
                    for r in iptables_rules(i, &st, &links) {
                        run(Command::new("ip")
                            .args(["netns", "exec", n, "iptables"])
                            .args(r.split_whitespace()))?;
                    }
                }
                Ok(())
            })?;
            if !shape.is_active() {
                shapers.retain(|(_, l), _| l != link);
            }
            return Ok(());
        }
        parallel(&nss, |n| {
            let lines: Vec<String> = self
                .netem
                .iter()
                .filter(|i| &i.ns == n)
                .flat_map(|i| i.apply(link, real))
                .collect();
            tc_batch(n, &lines)
        })
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `fortilab exec NAME -- CMD…`: the namespace of a lab host (`PC-52`, `10.115.2.52`) or
/// device (`fortigate`, …) in the running namespaces lab (`prefix`: which one, when several).
pub fn find_host(name: &str, prefix: Option<&str>) -> anyhow::Result<String> {
    let live: Vec<State> = list_states()
        .into_iter()
        .filter(|s| owner_alive(s.owner_pid, s.owner_start))
        .filter(|s| prefix.is_none_or(|p| s.prefix == p))
        .collect();
    let st = match live.as_slice() {
        [] => bail!("no namespaces lab is running (fortilab up --network namespaces)"),
        [one] => one,
        _ => bail!(
            "several namespaces labs are running ({}): choose one with --lab",
            live.iter()
                .map(|s| s.prefix.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let want = match name {
        "fgt" => "fortigate",
        "faz" => "fortianalyzer",
        other => other,
    };
    st.hosts
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(want))
        .map(|(_, n)| n.clone())
        .ok_or_else(|| {
            anyhow!(
                "{name}: not a host of lab {} (hosts: {})",
                st.prefix,
                st.hosts
                    .iter()
                    .map(|(h, _)| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_lab_plan() {
        let p = plan(&LabDef::seed(), "fl123a").unwrap();
        let st = &p.state;
        assert_eq!(st.routes, vec!["10.115.0.0/16"]);
        for n in [
            "fl123a-sw",
            "fl123a-fgt",
            "fl123a-faz",
            "fl123a-ems",
            "fl123a-inet",
            "fl123a-e1",
        ] {
            assert!(st.namespaces.contains(&n.to_string()), "{n}");
        }
        assert_eq!(st.host_links, vec!["fl123am", "fl123al", "fl123aw"]);
        assert!(st.host_links.iter().all(|l| l.len() <= 15));
        let fgt = &p
            .ns_batch
            .iter()
            .find(|(n, _)| n == "fl123a-fgt")
            .unwrap()
            .1;
        assert!(fgt.contains(&"addr add 10.115.1.1/24 dev port1".to_string()));
        assert!(fgt.contains(&"addr add 10.115.2.1/24 dev port3".to_string()));
        let ep = &p.ns_batch.iter().find(|(n, _)| n == "fl123a-e1").unwrap().1;
        assert!(ep.contains(&"addr add 10.115.2.52/24 dev eth0".to_string()));
        assert!(ep.contains(&"route add default via 10.115.2.1".to_string()));
        assert!(p
            .host_batch
            .contains(&"addr add 10.115.1.254/24 dev fl123am".to_string()));
        // The REDIRECT rule comes after the lab networks' RETURNs.
        let rules: Vec<String> = p
            .ns_exec
            .iter()
            .filter(|(_, a)| a[0] == "iptables")
            .map(|(_, a)| a.join(" "))
            .collect();
        assert_eq!(rules.len(), 4);
        assert!(rules[3].ends_with("REDIRECT --to-ports 8008"), "{rules:?}");
        assert!(st
            .hosts
            .contains(&("PC-52".to_string(), "fl123a-e1".to_string())));
        assert_eq!(p.resolv[0].1, "nameserver 10.115.0.2\n");
    }

    #[test]
    fn link_faults_classify_by_destination() {
        let p = plan(&LabDef::seed(), "fl1a").unwrap();
        let ep = p.netem.iter().find(|i| i.ns == "fl1a-e1").unwrap();
        assert_eq!(ep.band("ems-endpoints"), Some(4));
        let setup = ep.setup();
        assert!(setup[0].contains("prio bands 6"), "{setup:?}");
        // The lab's own other addresses stay on the normal band; the Internet (through the
        // FortiGate) is the FortiGate link's.
        assert!(setup
            .iter()
            .any(|l| l.contains("dst 10.115.0.0/16 flowid 1:2")));
        let fgt_link = ep.band("fortigate-endpoints").unwrap();
        assert!(setup
            .last()
            .unwrap()
            .ends_with(&format!("dst 0.0.0.0/0 flowid 1:{fgt_link}")));
        let down = fortilab_core::linkfault::LinkCondition {
            down: true,
            ..Default::default()
        };
        let a = ep.apply("ems-endpoints", &down);
        assert_eq!(
            a[1],
            "qdisc add dev eth0 parent 1:4 handle 40: netem delay 0us loss 100.0000%"
        );
        let slow = fortilab_core::linkfault::LinkCondition {
            latency: std::time::Duration::from_millis(50),
            rate_bps: Some(1_000_000),
            ..Default::default()
        };
        assert_eq!(
            netem_args(&slow),
            "netem delay 50000us rate 1000000bit limit 100000"
        );
    }

    #[test]
    fn a_large_lab_gets_permanent_neighbour_entries_and_the_seed_lab_arp() {
        // The seed lab: fixed MACs on the LAN, neighbours resolved by ARP.
        let p = plan(&LabDef::seed(), "fl8a").unwrap();
        assert!(p.host_batch.contains(
            &"link add eth0 address 02:00:0a:73:02:34 netns fl8a-e1 up type veth peer name e1 netns fl8a-sw"
                .to_string()
        ));
        assert!(p
            .host_batch
            .iter()
            .any(|l| l.starts_with("link add port3 address 02:00:0a:73:02:01 ")));
        assert!(p
            .ns_batch
            .iter()
            .all(|(_, l)| l.iter().all(|x| !x.starts_with("neigh"))));
        assert!(p.endpoint_conf.iter().all(|c| c.4.is_none()));
        // 1,000 endpoints: every endpoint knows its gateway, the FortiGate every endpoint.
        let mut def = LabDef::seed();
        def.endpoints.push(crate::labdef::EndpointDef {
            name: "HOST-{i}".into(),
            ip: "10.115.4.1".parse().unwrap(),
            count: 999,
            user: None,
        });
        let p = plan(&def, "fl8b").unwrap();
        let fgt = &p.ns_batch.iter().find(|(n, _)| n == "fl8b-fgt").unwrap().1;
        let neigh: Vec<&String> = fgt.iter().filter(|l| l.starts_with("neigh ")).collect();
        assert_eq!(neigh.len(), 1000);
        assert!(fgt.contains(
            &"neigh replace 10.115.4.1 lladdr 02:00:0a:73:04:01 dev port3 nud permanent"
                .to_string()
        ));
        let e2 = &p.ns_batch.iter().find(|(n, _)| n == "fl8b-e2").unwrap().1;
        assert!(e2.contains(
            &"neigh replace 10.115.4.255 lladdr 02:00:0a:73:02:01 dev eth0 nud permanent"
                .to_string()
        ));
        let c = p.endpoint_conf.iter().find(|c| c.0 == "fl8b-e2").unwrap();
        assert_eq!(c.4, Some([2, 0, 10, 115, 2, 1]));
        // Over netlink: a fourth message, RTM_NEWNEIGH for the gateway, permanent.
        let m = nl::messages(7, c.1, c.2, c.3, c.4);
        assert_eq!(m.len(), 4);
        assert_eq!(u16::from_ne_bytes([m[3][4], m[3][5]]), 28);
        assert_eq!(u16::from_ne_bytes([m[3][24], m[3][25]]), 0x80);
        assert!(m[3].windows(6).any(|w| w == [2, 0, 10, 115, 2, 1]));
        assert_eq!(nl::messages(7, c.1, c.2, c.3, None).len(), 3);
    }

    #[test]
    fn many_endpoints_get_a_namespace_each_and_subnets_past_the_lan() {
        let mut def = LabDef::seed();
        def.endpoints.push(crate::labdef::EndpointDef {
            name: "HOST-{i}".into(),
            ip: "10.115.4.1".parse().unwrap(),
            count: 1200,
            user: None,
        });
        let p = plan(&def, "fl9z").unwrap();
        // 1 + 1,200 endpoint namespaces, the switch, FortiGate, FAZ, EMS, Internet.
        assert_eq!(p.state.namespaces.len(), 1201 + 5);
        assert!(p.state.namespaces.contains(&"fl9z-e1201".to_string()));
        // 10.115.4-7 are full (.1-.254): their /23s, the FortiGate at .255 of the lower
        // half; 10.115.8.x (.1-.184) a /24 with the FortiGate at .254.
        let cidrs: Vec<(String, String)> = p
            .extra_lan
            .iter()
            .map(|s| (s.cidr(), s.gateway.to_string()))
            .collect();
        assert_eq!(
            cidrs,
            vec![
                ("10.115.4.0/23".to_string(), "10.115.4.255".to_string()),
                ("10.115.6.0/23".to_string(), "10.115.6.255".to_string()),
                ("10.115.8.0/24".to_string(), "10.115.8.254".to_string()),
            ]
        );
        let fgt = &p.ns_batch.iter().find(|(n, _)| n == "fl9z-fgt").unwrap().1;
        assert!(fgt.contains(&"addr add 10.115.4.255/23 dev port3".to_string()));
        let last = &p
            .ns_batch
            .iter()
            .find(|(n, _)| n == "fl9z-e1201")
            .unwrap()
            .1;
        assert!(
            last.contains(&"addr add 10.115.8.184/24 dev eth0".to_string()),
            "{last:?}"
        );
        assert!(last.contains(&"route add default via 10.115.8.254".to_string()));
        let second = &p.ns_batch.iter().find(|(n, _)| n == "fl9z-e3").unwrap().1;
        assert!(second.contains(&"addr add 10.115.4.2/23 dev eth0".to_string()));
        assert!(p
            .host_batch
            .contains(&"route add 10.115.4.0/23 via 10.115.2.1 dev fl9zl".to_string()));
        // The block's process runs in its first endpoint's namespace and is told the others.
        assert_eq!(
            p.device_ns
                .iter()
                .find(|(l, _)| l == "endpoints-2")
                .unwrap()
                .1,
            "fl9z-e2"
        );
        assert_eq!(
            p.device_args[0],
            (
                "endpoints-2".to_string(),
                vec![
                    "--netns-prefix".to_string(),
                    "fl9z-e".into(),
                    "--netns-start".into(),
                    "2".into()
                ]
            )
        );
        assert!(p
            .state
            .hosts
            .contains(&("HOST-1200".to_string(), "fl9z-e1201".to_string())));
        // Switch-side names fit IFNAMSIZ.
        assert!(p.ns_batch[0]
            .1
            .iter()
            .any(|l| l == "link set e1201 master br-l up"));
        // The FortiGate's configuration shows the secondary addresses on port3.
        let conf = with_secondary_ips(crate::labdef::SEED_FORTIGATE_CONF, "port3", &p.extra_lan);
        let i = conf.find("set secondary-IP enable").expect("secondary");
        let port3 = conf.find("edit \"port3\"").expect("port3");
        assert!(port3 < i, "{conf}");
        assert!(conf.contains("set ip 10.115.4.255 255.255.254.0"));
        assert!(conf.contains("set ip 10.115.8.254 255.255.255.0"));
    }

    #[test]
    fn endpoints_off_the_lab_or_on_its_own_addresses_are_refused() {
        let mut def = LabDef::seed();
        def.endpoints[0].ip = "10.115.2.254".parse().unwrap();
        assert!(plan(&def, "fl1a").is_err());
        def.endpoints[0].ip = "10.115.1.77".parse().unwrap();
        let e = plan(&def, "fl1a").unwrap_err().to_string();
        assert!(e.contains("10.115.1.0/24"), "{e}");
        def.endpoints[0].ip = "10.116.2.52".parse().unwrap();
        assert!(plan(&def, "fl1a").is_err());
        // A full /24 whose /23 is a lab network's.
        def.endpoints[0].ip = "10.115.3.1".parse().unwrap();
        def.endpoints[0].count = 254;
        let e = plan(&def, "fl1a").unwrap_err().to_string();
        assert!(e.contains("10.115.3.0/24"), "{e}");
        // One free address is enough for a /24.
        def.endpoints[0].count = 253;
        let p = plan(&def, "fl1a").unwrap();
        assert_eq!(p.extra_lan[0].gateway.to_string(), "10.115.3.254");
    }

    #[test]
    fn secondary_ips_without_a_port3_block_get_one() {
        let s = LanSubnet {
            net: "10.115.3.0".parse().unwrap(),
            len: 24,
            gateway: "10.115.3.1".parse().unwrap(),
        };
        let t = with_secondary_ips(
            "config system global\n    set hostname x\nend\n",
            "port3",
            std::slice::from_ref(&s),
        );
        assert!(t.ends_with("    next\nend\n"), "{t}");
        assert!(t.contains(
            "config system interface\n    edit \"port3\"\n        set secondary-IP enable"
        ));
        let own = "config system interface\n    edit port3\n        config secondaryip\n        end\n    next\nend\n";
        assert_eq!(with_secondary_ips(own, "port3", &[s]), own);
    }

    #[test]
    fn process_start_times_tell_reused_pids_apart() {
        let me = std::process::id();
        let t = process_start(me).expect("own start time");
        assert!(owner_alive(me, Some(t)));
        assert!(!owner_alive(me, Some(t + 1)));
    }

    #[test]
    fn prefixes_fit_interface_names() {
        let p = new_prefix();
        assert!(p.len() <= 12 && p.starts_with("fl"), "{p}");
        assert_ne!(new_prefix(), p);
    }
}

/// Minimal rtnetlink (no crate): an endpoint namespace's loopback up, its address and its
/// default route in three messages, without an `ip` process. 1,000 endpoint namespaces
/// configured with `ip -n NS -batch` cost 1,000 process starts (each also remounts `/sys`):
/// about 40 s on the loaded 2-core machine; netlink from a thread that enters the namespace
/// costs milliseconds. `ip` stays the fallback.
mod nl {
    use std::net::Ipv4Addr;
    use std::os::fd::AsRawFd;

    use anyhow::{anyhow, bail};
    use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockType};

    const RTM_NEWLINK: u16 = 16;
    const RTM_NEWADDR: u16 = 20;
    const RTM_NEWROUTE: u16 = 24;
    const RTM_NEWNEIGH: u16 = 28;
    const NUD_PERMANENT: u16 = 0x80;
    const F_REPLACE: u16 = 0x100;
    const NLMSG_ERROR: u16 = 2;
    const F_REQUEST: u16 = 1;
    const F_ACK: u16 = 4;
    const F_EXCL: u16 = 0x200;
    const F_CREATE: u16 = 0x400;
    const IFF_UP: u32 = 1;

    fn attr(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
        out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }

    fn msg(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(16 + body.len());
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&(flags | F_REQUEST | F_ACK).to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    /// The messages: `lo` up, `ip/len` on interface `ifindex`, default route via `gw`, and
    /// with `gw_mac` a permanent neighbour entry for `gw`.
    pub fn messages(
        ifindex: u32,
        ip: Ipv4Addr,
        len: u8,
        gw: Ipv4Addr,
        gw_mac: Option<[u8; 6]>,
    ) -> Vec<Vec<u8>> {
        // ifinfomsg: family, pad, type, index, flags, change.
        let mut link = vec![0u8, 0, 0, 0];
        link.extend_from_slice(&1i32.to_ne_bytes());
        link.extend_from_slice(&IFF_UP.to_ne_bytes());
        link.extend_from_slice(&IFF_UP.to_ne_bytes());
        // ifaddrmsg: family AF_INET, prefix length, flags, scope universe, index.
        let mut addr = vec![2u8, len, 0, 0];
        addr.extend_from_slice(&ifindex.to_ne_bytes());
        attr(&mut addr, 2, &ip.octets()); // IFA_LOCAL
        attr(&mut addr, 1, &ip.octets()); // IFA_ADDRESS
                                          // rtmsg: family, dst_len, src_len, tos, table main, protocol boot, scope universe,
                                          // type unicast, flags.
        let mut route = vec![2u8, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        attr(&mut route, 5, &gw.octets()); // RTA_GATEWAY
        attr(&mut route, 4, &ifindex.to_ne_bytes()); // RTA_OIF
        let mut out = vec![
            msg(RTM_NEWLINK, 0, 1, &link),
            msg(RTM_NEWADDR, F_CREATE | F_EXCL, 2, &addr),
            msg(RTM_NEWROUTE, F_CREATE | F_EXCL, 3, &route),
        ];
        if let Some(mac) = gw_mac {
            // ndmsg: family AF_INET, pad, pad, index, state, flags, type.
            let mut neigh = vec![2u8, 0, 0, 0];
            neigh.extend_from_slice(&ifindex.to_ne_bytes());
            neigh.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
            neigh.extend_from_slice(&[0, 0]);
            attr(&mut neigh, 1, &gw.octets()); // NDA_DST
            attr(&mut neigh, 2, &mac); // NDA_LLADDR
            out.push(msg(RTM_NEWNEIGH, F_CREATE | F_REPLACE, 4, &neigh));
        }
        out
    }

    /// Sends the messages on a netlink socket of the calling thread's namespace, each
    /// acknowledged before the next.
    fn send_all(msgs: &[Vec<u8>]) -> anyhow::Result<()> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            socket::SockProtocol::NetlinkRoute,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let mut buf = vec![0u8; 8192];
        for m in msgs {
            socket::send(fd.as_raw_fd(), m, MsgFlags::empty())?;
            let seq = u32::from_ne_bytes([m[8], m[9], m[10], m[11]]);
            loop {
                let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
                if n < 20 {
                    bail!("short netlink reply");
                }
                let ty = u16::from_ne_bytes([buf[4], buf[5]]);
                let rseq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
                if ty != NLMSG_ERROR || rseq != seq {
                    continue;
                }
                let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
                if code != 0 {
                    return Err(anyhow!(
                        "netlink message {seq}: {}",
                        nix::errno::Errno::from_raw(-code)
                    ));
                }
                break;
            }
        }
        Ok(())
    }

    /// Runs `f` with the calling thread in the namespace `ns`, then returns it to its own.
    fn in_netns<T>(ns: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        use nix::sched::{setns, CloneFlags};
        let target = std::fs::File::open(std::path::Path::new("/run/netns").join(ns))?;
        let home = std::fs::File::open("/proc/thread-self/ns/net")?;
        setns(&target, CloneFlags::CLONE_NEWNET)?;
        let r = f();
        if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
            eprintln!("fortilab: cannot return to the thread's network namespace: {e}");
            std::process::abort();
        }
        r.map_err(|e| anyhow!("{ns}: {e:#}"))
    }

    /// Configures `eth0` of the namespace `ns` (see [`messages`]).
    pub fn configure(
        ns: &str,
        ip: Ipv4Addr,
        len: u8,
        gw: Ipv4Addr,
        gw_mac: Option<[u8; 6]>,
    ) -> anyhow::Result<()> {
        in_netns(ns, || {
            let i = nix::net::if_::if_nametoindex("eth0")?;
            send_all(&messages(i, ip, len, gw, gw_mac))
        })
    }

    /// Turns IPv6 off for every interface made in (or moved into) the namespace `ns` from now
    /// on (`net.ipv6.conf.default.disable_ipv6`, per namespace; its loopback keeps `::1`).
    /// The lab is IPv4 only, and with IPv6 on, each of a big lab's 2,000 veth ends sends
    /// duplicate-address probes, MLD reports and router solicitations that its bridge floods
    /// to every other port: measured, the kernel's IPv6 work took most of both cores while a
    /// 1,000-endpoint lab registered. Nothing to do on a kernel without IPv6.
    pub fn without_ipv6(ns: &str) -> anyhow::Result<()> {
        in_netns(ns, || {
            let knob = std::path::Path::new("/proc/sys/net/ipv6/conf/default/disable_ipv6");
            if knob.exists() {
                std::fs::write(knob, "1")?;
            }
            Ok(())
        })
    }
}
