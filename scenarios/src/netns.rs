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
    /// Links (`fortigate-endpoints`, …) → (namespace, interface) whose egress carries it
    /// (link faults: `tc netem`).
    pub links: Vec<(String, String, String)>,
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
    st.links.push(("fortigate-internet".into(), fgt.clone(), "wan1".into()));
    // FortiAnalyzer, EMS.
    for (role, short, ip, link) in [
        (
            "fortianalyzer",
            "faz",
            def.fortianalyzer.ip,
            "fortianalyzer-fortigate",
        ),
        ("ems", "ems", def.ems.ip, "ems-fortigate"),
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
        st.links.push((link.into(), n.clone(), "eth0".into()));
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
        st.links
            .push((format!("fortigate-endpoints#{}", i + 1), n.clone(), "eth0".into()));
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
    ns_batch.insert(0, (sw, swb));
    Ok(Plan {
        state: st,
        device_ns,
        host_batch,
        ns_batch,
        ns_exec,
        resolv,
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
        let inet = self.ns_of("internet").ok_or_else(|| anyhow!("no internet"))?;
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
        let fgt = &p.ns_batch.iter().find(|(n, _)| n == "fl123a-fgt").unwrap().1;
        assert!(fgt.contains(&"addr add 10.115.1.1/24 dev port1".to_string()));
        assert!(fgt.contains(&"addr add 10.115.2.1/24 dev port3".to_string()));
        let ep = &p.ns_batch.iter().find(|(n, _)| n == "fl123a-ep1").unwrap().1;
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
    fn prefixes_fit_interface_names() {
        let p = new_prefix();
        assert!(p.len() <= 12 && p.starts_with("fl"), "{p}");
        assert_ne!(new_prefix(), p);
    }
}
