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
//! | `<p>-ep<i>` | `eth0` on the LAN with every address of the `[[endpoints]]` entry, default route via the FortiGate, `/etc/netns/<ns>/resolv.conf` naming the lab DNS |
//!
//! The host (where the orchestrator runs) gets one veth into each bridge (`<p>m`, `<p>l`,
//! `<p>w`, address .254 of each /24) so the orchestrator reaches every device's APIs and lab
//! surfaces at their lab addresses. Before anything else the host gets `unreachable` routes
//! for 10.115.0.0/16 (and each site's public /32 before that address exists anywhere): only
//! the three /24s (more specific, on the lab's own veths) are reachable, nothing of the lab can
//! take the host's default route. They are removed last.
//!
//! A state file (`/run/fortilab/<prefix>.json`, written before the first change) names what
//! was created and the owner's PID; a lab whose owner is dead (`kill -9`) is removed by the
//! next start (or `fortilab netns-clean`). The command lists ([`Plan`]) are built without I/O.

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

/// What a namespaces lab created (the state file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub prefix: String,
    pub owner_pid: u32,
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
    /// `fortigate`, `endpoints-<i>`).
    pub device_ns: Vec<(String, String)>,
    /// `ip -batch` lines run in the host namespace (veths, host addresses).
    pub host_batch: Vec<String>,
    /// `ip -n NS -batch` lines per namespace.
    pub ns_batch: Vec<(String, Vec<String>)>,
    /// Commands run with `ip netns exec NS` (sysctl, iptables).
    pub ns_exec: Vec<(String, Vec<String>)>,
    /// `/etc/netns/<ns>/resolv.conf` contents.
    pub resolv: Vec<(String, String)>,
    /// Link-fault classes per interface (`tc netem`).
    pub netem: Vec<NetemIface>,
    pub dns: Ipv4Addr,
    pub internet_ip: Ipv4Addr,
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
        routes: vec![LAB_RANGE.to_string()],
        ..Default::default()
    };
    let mut host_batch = Vec::new();
    let mut ns_batch: Vec<(String, Vec<String>)> = Vec::new();
    let mut ns_exec = Vec::new();
    let mut resolv = Vec::new();
    let mut device_ns = Vec::new();
    // The switch.
    let mut swb = vec!["link set lo up".to_string()];
    for br in ["br-m", "br-l", "br-w"] {
        swb.push(format!("link add {br} type bridge"));
        swb.push(format!("link set {br} up"));
    }
    st.namespaces.push(sw.clone());
    // veth: `inner` in namespace `n`, `outer` in the switch on bridge `br`.
    let mut wire = |n: &str, inner: &str, outer: &str, br: &str, swb: &mut Vec<String>| {
        host_batch.push(format!(
            "link add {inner} netns {n} type veth peer name {outer} netns {sw}"
        ));
        swb.push(format!("link set {outer} master {br} up"));
    };
    // FortiGate.
    let fgt = ns("fgt");
    wire(&fgt, "port1", "fgt-m", "br-m", &mut swb);
    wire(&fgt, "port3", "fgt-l", "br-l", &mut swb);
    wire(&fgt, "wan1", "fgt-w", "br-w", &mut swb);
    ns_batch.push((
        fgt.clone(),
        vec![
            "link set lo up".into(),
            format!("addr add {}/24 dev port1", f.mgmt_ip),
            format!("addr add {}/24 dev port3", f.lan_ip),
            format!("addr add {fgt_wan}/24 dev wan1"),
            "link set port1 up".into(),
            "link set port3 up".into(),
            "link set wan1 up".into(),
            format!("route add default via {internet_ip}"),
        ],
    ));
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
        ],
    ));
    for net in [mgmt, lan, wan] {
        ns_exec.push((
            fgt.clone(),
            ipt(&format!(
                "-w -t nat -A PREROUTING -i port3 -p tcp -d {net}/24 -j RETURN"
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
        wire(&n, "eth0", short, "br-m", &mut swb);
        ns_batch.push((
            n.clone(),
            vec![
                "link set lo up".into(),
                format!("addr add {ip}/24 dev eth0"),
                "link set eth0 up".into(),
                format!("route add default via {}", f.mgmt_ip),
            ],
        ));
        device_ns.push((role.to_string(), n.clone()));
        st.hosts.push((role.into(), n.clone()));
    }
    // The lab Internet (its sites' addresses are added once it has reported them).
    let inet = ns("inet");
    wire(&inet, "eth0", "inet", "br-w", &mut swb);
    ns_batch.push((
        inet.clone(),
        vec![
            "link set lo up".into(),
            format!("addr add {internet_ip}/24 dev eth0"),
            "link set eth0 up".into(),
            format!("route add 10.115.0.0/16 via {fgt_wan}"),
            format!("route add default via {fgt_wan}"),
        ],
    ));
    device_ns.push(("internet".into(), inet.clone()));
    st.hosts.push(("internet".into(), inet.clone()));
    // Endpoints: a namespace per [[endpoints]] entry.
    let specs = def.endpoint_specs();
    for (i, ep) in def.endpoints.iter().enumerate() {
        let n = ns(&format!("ep{}", i + 1));
        wire(&n, "eth0", &format!("ep{}", i + 1), "br-l", &mut swb);
        let mut b = vec!["link set lo up".to_string()];
        let start = u32::from(ep.ip);
        for k in 0..ep.count {
            let ip = Ipv4Addr::from(start.wrapping_add(k));
            if subnet24(ip) != lan {
                bail!("endpoint {ip} is not on the LAN {lan}/24");
            }
            b.push(format!("addr add {ip}/24 dev eth0"));
        }
        b.push("link set eth0 up".into());
        b.push(format!("route add default via {}", f.lan_ip));
        ns_batch.push((n.clone(), b));
        resolv.push((n.clone(), format!("nameserver {internet_ip}\n")));
        st.etc_dirs.push(format!("/etc/netns/{n}"));
        device_ns.push((format!("endpoints-{}", i + 1), n.clone()));
        for s in specs
            .iter()
            .filter(|s| u32::from(s.ip) >= start && u32::from(s.ip) < start + ep.count)
        {
            st.hosts.push((s.name.clone(), n.clone()));
            st.hosts.push((s.ip.to_string(), n.clone()));
        }
    }
    // The host's legs.
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
    for (_, n) in &device_ns {
        st.namespaces.push(n.clone());
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
    let lan24 = format!("{lan}/24");
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
            classes: vec![
                c(format!("{}/32", host(lan, HOST_PART)), None),
                c(lan24.clone(), Some(&l_ep)),
            ],
        },
        NetemIface {
            ns: ns("faz"),
            iface: "eth0".into(),
            classes: vec![
                c(format!("{}/32", f.mgmt_ip), Some(&l_faz)),
                c(lan24.clone(), Some(&l_ep_faz)),
            ],
        },
        NetemIface {
            ns: ns("ems"),
            iface: "eth0".into(),
            classes: vec![
                c(format!("{}/32", f.mgmt_ip), Some(&l_ems)),
                c(lan24.clone(), Some(&l_ep_ems)),
            ],
        },
        NetemIface {
            ns: inet.clone(),
            iface: "eth0".into(),
            classes: vec![
                c(format!("{fgt_wan}/32"), Some(&l_inet)),
                c(lan24.clone(), Some(&l_inet)),
            ],
        },
    ];
    for i in 0..def.endpoints.len() {
        netem.push(NetemIface {
            ns: ns(&format!("ep{}", i + 1)),
            iface: "eth0".into(),
            classes: vec![
                c(format!("{}/32", def.ems.ip), Some(&l_ep_ems)),
                c(format!("{}/32", def.fortianalyzer.ip), Some(&l_ep_faz)),
                c(format!("{}/32", f.lan_ip), Some(&l_ep)),
                c("10.115.0.0/16".into(), None),
                c("0.0.0.0/0".into(), Some(&l_ep)),
            ],
        });
    }
    ns_batch.insert(0, (sw, swb));
    Ok(Plan {
        state: st,
        device_ns,
        host_batch,
        ns_batch,
        ns_exec,
        resolv,
        netem,
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

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
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
                out.push(st);
            }
        }
    }
    out
}

/// Removes everything a state file names: processes left in its namespaces (SIGKILL by pid),
/// the namespaces (their veths go with them), the host's interfaces, `/etc/netns` entries,
/// then the host's unreachable routes (unless another live lab still needs them), then the
/// state file.
pub fn teardown(st: &State) {
    for n in &st.namespaces {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", n]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    for n in &st.namespaces {
        quiet(&["ip", "netns", "del", n]);
    }
    for l in &st.host_links {
        quiet(&["ip", "link", "del", l]);
    }
    for d in &st.etc_dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let others_live = list_states()
        .iter()
        .any(|o| o.prefix != st.prefix && pid_alive(o.owner_pid) && o.owner_pid != st.owner_pid);
    if !others_live {
        for r in &st.routes {
            quiet(&["ip", "route", "del", "unreachable", r]);
        }
    }
    let _ = std::fs::remove_file(state_path(&st.prefix));
}

/// Removes the labs whose owner process is gone. Returns their prefixes.
pub fn clean_stale() -> Vec<String> {
    let mut done = Vec::new();
    for st in list_states() {
        if !pid_alive(st.owner_pid) {
            teardown(&st);
            done.push(st.prefix);
        }
    }
    done
}

/// A namespaces lab's network, removed on drop.
#[derive(Debug)]
pub struct NetLab {
    pub plan: Plan,
    torn_down: bool,
    /// Whether `tc netem` works here (else link faults use iptables for down and loss and
    /// netfilter queues for latency and rate: [`crate::shaper`]).
    netem_ok: bool,
}

impl NetLab {
    /// Cleans up dead labs, then creates the network of `plan`. The host's unreachable
    /// route for the lab range comes first.
    pub fn create(plan: Plan) -> anyhow::Result<NetLab> {
        check_privileges()?;
        for p in clean_stale() {
            eprintln!("fortilab: removed the network of a dead namespaces lab ({p})");
        }
        if let Some(o) = list_states()
            .into_iter()
            .find(|o| o.prefix != plan.state.prefix && pid_alive(o.owner_pid))
        {
            bail!(
                "another namespaces lab ({}, process {}) holds the lab addresses on this machine; \
                 stop it first (two namespaces labs with the same addresses cannot share the host)",
                o.prefix,
                o.owner_pid
            );
        }
        // The state file first: whatever happens next, the next start can clean up.
        write_state(&plan.state)?;
        let mut lab = NetLab {
            plan,
            torn_down: false,
            netem_ok: true,
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let p = &self.plan;
        run(Command::new("ip").args(["route", "replace", "unreachable", LAB_RANGE]))?;
        for n in &p.state.namespaces {
            run(Command::new("ip").args(["netns", "add", n]))?;
        }
        batch(None, &p.host_batch)?;
        for (n, lines) in &p.ns_batch {
            batch(Some(n), lines)?;
        }
        for (n, argv) in &p.ns_exec {
            run(Command::new("ip").args(["netns", "exec", n]).args(argv))?;
        }
        let mut netem_ok = true;
        for n in &p.state.namespaces {
            let lines: Vec<String> = p
                .netem
                .iter()
                .filter(|i| &i.ns == n)
                .flat_map(NetemIface::setup)
                .collect();
            if lines.is_empty() {
                continue;
            }
            if netem_ok {
                if let Err(e) = tc_batch(n, &lines) {
                    // A kernel without sch_prio/sch_netem: link faults fall back to
                    // iptables (down, loss) and netfilter queues (latency, rate).
                    tracing::warn!(error = %format!("{e:#}"), "tc netem unavailable; link faults use iptables and netfilter queues");
                    netem_ok = false;
                }
            }
            if !netem_ok {
                for a in [
                    "-w -N FLLINK",
                    "-w -I OUTPUT -j FLLINK",
                    "-w -I FORWARD -j FLLINK",
                ] {
                    run(Command::new("ip")
                        .args(["netns", "exec", n, "iptables"])
                        .args(a.split_whitespace()))?;
                }
            }
        }
        self.netem_ok = netem_ok;
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
        for ip in ips {
            let r = format!("{ip}/32");
            if !self.plan.state.routes.contains(&r) {
                self.plan.state.routes.push(r.clone());
                write_state(&self.plan.state)?;
                run(Command::new("ip").args(["route", "replace", "unreachable", &r]))?;
            }
            lines.push(format!("addr replace {ip}/32 dev lo"));
        }
        if !lines.is_empty() {
            batch(Some(&inet), &lines)?;
        }
        Ok(())
    }

    /// What link faults need (`LabLinks` keeps a copy).
    pub fn netem_set(&self) -> NetemSet {
        NetemSet {
            namespaces: self.plan.state.namespaces.clone(),
            netem: self.plan.netem.clone(),
            netem_ok: self.netem_ok,
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

    /// Removes the lab's network (idempotent).
    pub fn teardown(&mut self) {
        if !self.torn_down {
            self.torn_down = true;
            teardown(&self.plan.state);
        }
    }
}

/// The `tc netem` side of a namespaces lab's links.
#[derive(Debug, Clone)]
pub struct NetemSet {
    namespaces: Vec<String>,
    netem: Vec<NetemIface>,
    netem_ok: bool,
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
        if self.netem_ok {
            "tc netem"
        } else {
            "iptables and netfilter queues"
        }
    }

    /// The links `tc netem` can shape in this lab.
    pub fn link_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.netem.iter().flat_map(|i| i.links()).collect();
        v.sort();
        v.dedup();
        v
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
        if !self.netem_ok {
            let links = self.link_names();
            let mut st = self.state.lock().unwrap();
            st.insert(link.to_string(), *real);
            let shape = shape_of(real);
            let mut shapers = self.shapers.lock().unwrap();
            for n in &self.namespaces {
                let ifs: Vec<&NetemIface> = self.netem.iter().filter(|i| &i.ns == n).collect();
                if ifs.is_empty() {
                    continue;
                }
                let key = (n.clone(), link.to_string());
                let here = ifs.iter().any(|i| i.links().iter().any(|l| l == link));
                // A shaper is bound before its queue's rule exists and stopped after it is gone
                // (with --queue-bypass nothing is lost in between).
                if here && shape.is_active() {
                    match shapers.get(&key) {
                        Some(s) => s.set(shape),
                        None => {
                            let q = queue_of(&links, link).expect("a link of this lab");
                            let s = crate::shaper::Shaper::start(n, q, shape).map_err(|e| {
                                anyhow!(
                                    "{e:#}: latency and rate need tc netem (sch_netem) or \
                                     netfilter queues (nfnetlink_queue); this kernel has neither"
                                )
                            })?;
                            shapers.insert(key.clone(), s);
                        }
                    }
                }
                run(
                    Command::new("ip").args(["netns", "exec", n, "iptables", "-w", "-F", "FLLINK"])
                )?;
                for i in ifs {
                    for r in iptables_rules(i, &st, &links) {
                        run(Command::new("ip")
                            .args(["netns", "exec", n, "iptables"])
                            .args(r.split_whitespace()))?;
                    }
                }
                if !shape.is_active() {
                    shapers.remove(&key);
                }
            }
            return Ok(());
        }
        let mut any = false;
        for n in &self.namespaces {
            let lines: Vec<String> = self
                .netem
                .iter()
                .filter(|i| &i.ns == n)
                .flat_map(|i| i.apply(link, real))
                .collect();
            if !lines.is_empty() {
                any = true;
                tc_batch(n, &lines)?;
            }
        }
        if !any {
            bail!("no link {link} in this lab");
        }
        Ok(())
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
        .filter(|s| pid_alive(s.owner_pid))
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
            "fl123a-ep1",
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
        let ep = &p
            .ns_batch
            .iter()
            .find(|(n, _)| n == "fl123a-ep1")
            .unwrap()
            .1;
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
            .contains(&("PC-52".to_string(), "fl123a-ep1".to_string())));
        assert_eq!(p.resolv[0].1, "nameserver 10.115.0.2\n");
    }

    #[test]
    fn link_faults_classify_by_destination() {
        let p = plan(&LabDef::seed(), "fl1a").unwrap();
        let ep = p.netem.iter().find(|i| i.ns == "fl1a-ep1").unwrap();
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
    fn prefixes_fit_interface_names() {
        let p = new_prefix();
        assert!(p.len() <= 12 && p.starts_with("fl"), "{p}");
        assert_ne!(new_prefix(), p);
    }
}
