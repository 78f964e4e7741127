//! The lab as containers: `fortilab compose` writes a Compose project (a `compose.yaml` and a
//! `config/` directory) from a lab definition, and the hidden commands its services run
//! (`compose-init`, `ready-check`, `compose-report`).
//!
//! Address plan (the lab's real addresses on container networks, all `internal: true`: no NAT,
//! no route out of the machine; the bridge on the host takes `.254` of each subnet):
//!
//! | network | subnet | members |
//! |---|---|---|
//! | `mgmt` | the FortiGate management /24 (10.115.1.0/24) | FortiGate .1, FortiAnalyzer .20, EMS .30, each endpoint container .100 + i |
//! | `lan` | the FortiGate LAN /24 (10.115.2.0/24) | FortiGate .1, endpoint containers at their first endpoint's address (.52 …) |
//! | `wan` | 10.115.0.0/24 | FortiGate .1, the lab Internet .2 |
//!
//! Every device's lab map is the identity (`"identity": true`): they reach each other at their
//! lab addresses and see each other's real source addresses, so no PROXY header and no mapping
//! is needed between them. The FortiGate's map adds `"internet": "10.115.0.2"`: the lab
//! Internet's public site addresses (89.x, 195.22.28.198, …) are reached through it like a
//! default route, and the Internet picks the site from the PROXY header's destination (the
//! FortiGate's explicit proxy sends one, as on loopback). Containers cannot route through the
//! FortiGate without extra privileges, so endpoint containers also have a management address
//! (.100 + i) for EMS telemetry and FortiClient log upload.
//!
//! Services: `init` (no network) creates the lab CA and the lab's secrets once in the lab
//! directory (bind mount `/lab`); every device starts after it, with its data directory,
//! ready file and the shared CA/secrets under `/lab`; a device is healthy once its ready file
//! exists (`fortilab ready-check`); `report` (started with the devices) waits for every ready
//! file, for the Security Fabric links (as `fortilab up` does), and writes `/lab/ready.json`,
//! the ready report that
//! `fortilab run --attach lab/ready.json` reads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Map, Value};

use fortilab_core::LabClock;

use crate::labdef::LabDef;

/// The WAN network between the FortiGate and the lab Internet.
pub const WAN_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 115, 0, 0);
/// Host part of the Docker bridge's own address on every lab network (`.1` is the FortiGate's).
pub const BRIDGE_HOST: u8 = 254;
/// Host part of the `report` service on every lab network.
pub const REPORT_HOST: u8 = 250;
/// Ports inside the lab (the products' own where there is one).
pub const HTTPS: u16 = 443;
pub const SSH: u16 = 22;
pub const LOG_CHANNEL: u16 = 514;
/// FortiAnalyzer syslog: 514/udp on the product, but TCP 514 is the log channel here and the
/// syslog listener takes UDP and TCP on one number.
pub const SYSLOG: u16 = 5514;
pub const TELEMETRY: u16 = 8013;
pub const INTERNET_CONTROL: u16 = 8443;

/// How the devices of a plan reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressing {
    /// Compose: every device listens on its lab addresses on container networks; identity
    /// lab maps.
    #[default]
    LabNetworks,
    /// Kubernetes (`fortilab k8s`): every device listens on all of its pod's addresses; a lab
    /// address reaches the Service of the device that owns it through a lab map (`hosts`:
    /// lab IP → the Service's cluster IP) that the pod's init container writes to
    /// [`K8S_LABMAP`].
    Services,
    /// Namespaces mode (`fortilab up --network namespaces`): as [`Addressing::LabNetworks`],
    /// and an endpoint block may continue past the LAN /24 (the namespaces plan gives the
    /// FortiGate's port3 secondary addresses there).
    Namespaces,
}

/// The lab map a Kubernetes pod's init container writes.
pub const K8S_LABMAP: &str = "/lab/labmap.json";

/// A port a device listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// A name valid as a Kubernetes port name (≤ 15 characters, lowercase).
    pub name: &'static str,
    pub port: u16,
    /// Also (or, for syslog, as well as TCP) UDP.
    pub udp: bool,
}

const fn tcp(name: &'static str, port: u16) -> Port {
    Port {
        name,
        port,
        udp: false,
    }
}

/// A link of the lab (docs/architecture.md, links): `client` opens connections to `server`'s
/// `ports`. What a NetworkPolicy allows, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLink {
    pub client: String,
    pub server: String,
    pub ports: Vec<u16>,
}

/// Options of `fortilab compose`.
#[derive(Debug, Clone)]
pub struct ComposeOptions {
    /// The image every service runs (see `oci/build-image.sh`).
    pub image: String,
    /// The lab directory on the host (bind-mounted at `/lab`), relative to the compose file.
    pub lab_dir: String,
    /// The lab clock origin (Unix ms): every device gets the same clock flags.
    pub clock: LabClock,
    /// Lab addresses on container networks (Compose) or Services (Kubernetes).
    pub addressing: Addressing,
}

/// One device service of the plan.
#[derive(Debug, Clone)]
pub struct DeviceService {
    /// Service name and ready-file stem (`fortigate`, `endpoints-1`, …).
    pub name: String,
    /// The program (argv[0]).
    pub program: &'static str,
    /// Its arguments.
    pub args: Vec<String>,
    /// Network name → address.
    pub networks: Vec<(&'static str, Ipv4Addr)>,
    /// What it listens on.
    pub ports: Vec<Port>,
}

/// A lab's Compose plan: networks, device services and the files of `config/`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mgmt: Ipv4Addr,
    pub lan: Ipv4Addr,
    pub wan: Ipv4Addr,
    pub internet_ip: Ipv4Addr,
    pub fortigate_wan_ip: Ipv4Addr,
    pub devices: Vec<DeviceService>,
    /// `config/` file name → content.
    pub files: Vec<(String, String)>,
    /// What `compose-report` needs (`config/lab.json`).
    pub lab_json: Value,
    /// The links between the devices.
    pub links: Vec<PlanLink>,
}

impl Plan {
    /// Every lab address of the plan and the device that owns it (an endpoint container owns
    /// every address of its range).
    pub fn lab_hosts(&self, def: &LabDef) -> Vec<(Ipv4Addr, String)> {
        let mut out = Vec::new();
        for d in &self.devices {
            for (_, ip) in &d.networks {
                out.push((*ip, d.name.clone()));
            }
        }
        for (i, ep) in def.endpoints.iter().enumerate() {
            let name = format!("endpoints-{}", i + 1);
            for k in 1..ep.count {
                out.push((
                    Ipv4Addr::from(u32::from(ep.ip).wrapping_add(k)),
                    name.clone(),
                ));
            }
        }
        out
    }

    /// The device service called `name`.
    pub fn device(&self, name: &str) -> Option<&DeviceService> {
        self.devices.iter().find(|d| d.name == name)
    }
}

/// The lab clock of a lab written now: its `[lab] epoch` (or now) at the current instant.
pub fn lab_clock_now(def: &LabDef) -> LabClock {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let tz = def.tz_minutes();
    let epoch_ms = def
        .lab
        .epoch
        .as_deref()
        .and_then(|e| fortilab_core::clock::parse_date_time(e, tz))
        .map(|s| s * 1000)
        .unwrap_or(now_ms);
    LabClock::new(epoch_ms, now_ms, def.lab.speed, tz)
}

fn subnet24(ip: Ipv4Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 0)
}

fn host(net: Ipv4Addr, h: u8) -> Ipv4Addr {
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], h)
}

fn sock(ip: Ipv4Addr, port: u16) -> String {
    SocketAddr::new(IpAddr::V4(ip), port).to_string()
}

/// The Compose plan of a lab definition. Errors name what does not fit the address plan.
pub fn plan(def: &LabDef, opts: &ComposeOptions) -> anyhow::Result<Plan> {
    plan_at(def, opts, "/lab", "/config")
}

/// [`plan`] with the lab directory at `lab_root` and the `config/` files at `config_root`
/// (namespaces mode runs the same device commands on the host's file system).
pub fn plan_at(
    def: &LabDef,
    opts: &ComposeOptions,
    lab_root: &str,
    config_root: &str,
) -> anyhow::Result<Plan> {
    let f = &def.fortigate;
    let mgmt = subnet24(f.mgmt_ip);
    let lan = subnet24(f.lan_ip);
    let wan = WAN_SUBNET;
    if mgmt == lan || mgmt == wan || lan == wan {
        bail!("the FortiGate's management ({mgmt}/24) and LAN ({lan}/24) networks must be distinct /24s other than {wan}/24");
    }
    for (what, ip) in [
        ("fortianalyzer.ip", def.fortianalyzer.ip),
        ("ems.ip", def.ems.ip),
    ] {
        if subnet24(ip) != mgmt {
            bail!("{what} {ip} is not on the management network {mgmt}/24 (a Compose lab puts FortiAnalyzer and EMS there)");
        }
    }
    let reserved = [BRIDGE_HOST, REPORT_HOST, 0, 255];
    let mut used: Vec<Ipv4Addr> = vec![f.mgmt_ip, f.lan_ip, def.fortianalyzer.ip, def.ems.ip];
    for ip in &used {
        if reserved.contains(&ip.octets()[3]) {
            bail!("{ip}: .0, .250, .254 and .255 are taken by the Compose address plan");
        }
    }
    let fortigate_wan_ip = host(wan, 1);
    let internet_ip = host(wan, 2);
    let clock_args = opts.clock.to_args();
    let services = opts.addressing == Addressing::Services;
    // Where a device listens for one of its lab addresses.
    let sock = |ip: Ipv4Addr, port: u16| {
        if services {
            sock(Ipv4Addr::UNSPECIFIED, port)
        } else {
            sock(ip, port)
        }
    };
    let common = |label: &str, map: &str| -> Vec<String> {
        let map = if services {
            K8S_LABMAP.to_string()
        } else {
            format!("{config_root}/{map}")
        };
        let timing = match def.lab.timing {
            fortilab_core::binary::Timing::Fast => "fast",
            fortilab_core::binary::Timing::Realistic => "realistic",
        };
        let mut a: Vec<String> = vec![
            "--data-dir".into(),
            format!("{lab_root}/{label}"),
            "--ready-file".into(),
            format!("{lab_root}/ready/{label}.json"),
            "--lab-map".into(),
            map,
            "--ca-cert".into(),
            format!("{lab_root}/ca/ca.pem"),
            "--ca-key".into(),
            format!("{lab_root}/ca/ca.key"),
            "--seed".into(),
            def.lab.seed.to_string(),
            "--secrets".into(),
            def.lab.secrets.as_str().into(),
            "--secrets-file".into(),
            format!("{lab_root}/secrets.json"),
            "--timing".into(),
            timing.into(),
        ];
        a.extend(clock_args.iter().cloned());
        a
    };
    let mut files: Vec<(String, String)> = Vec::new();
    let identity = json!({"identity": true});
    files.push((
        "labmap.json".into(),
        serde_json::to_string_pretty(&identity)?,
    ));
    files.push((
        "labmap-fortigate.json".into(),
        serde_json::to_string_pretty(&json!({"identity": true, "internet": internet_ip}))?,
    ));
    let mut devices = Vec::new();

    // The lab Internet.
    let mut args = common("internet", "labmap.json");
    args.extend([
        "--listen-http".into(),
        sock(internet_ip, 80),
        "--listen-https".into(),
        sock(internet_ip, HTTPS),
        "--listen-control".into(),
        sock(internet_ip, INTERNET_CONTROL),
    ]);
    if let Some(cfg) = crate::lab::internet_config(def) {
        files.push(("internet.toml".into(), cfg));
        args.extend(["--config".into(), format!("{config_root}/internet.toml")]);
    }
    devices.push(DeviceService {
        name: "internet".into(),
        program: "sim-internet",
        args,
        networks: vec![("wan", internet_ip)],
        ports: vec![
            tcp("http", 80),
            tcp("https", HTTPS),
            tcp("control", INTERNET_CONTROL),
        ],
    });

    // FortiAnalyzer.
    let z = def.fortianalyzer.ip;
    files.push(("faz.toml".into(), crate::lab::faz_config(def)));
    let mut args = common("fortianalyzer", "labmap.json");
    args.extend([
        "--config".into(),
        format!("{config_root}/faz.toml"),
        "--lab-ip".into(),
        z.to_string(),
        "--listen".into(),
        sock(z, HTTPS),
        "--log-listen".into(),
        sock(z, LOG_CHANNEL),
        "--syslog-listen".into(),
        sock(z, SYSLOG),
        "--ssh-listen".into(),
        sock(z, SSH),
    ]);
    if def.fortianalyzer.auto_authorize {
        args.push("--auto-authorize".into());
    }
    devices.push(DeviceService {
        name: "fortianalyzer".into(),
        program: "sim-faz",
        args,
        networks: vec![("mgmt", z)],
        ports: vec![
            tcp("https", HTTPS),
            tcp("logchan", LOG_CHANNEL),
            Port {
                name: "syslog",
                port: SYSLOG,
                udp: true,
            },
            tcp("ssh", SSH),
        ],
    });

    // EMS.
    let e = def.ems.ip;
    files.push(("ems.toml".into(), crate::lab::ems_config(def)));
    let mut args = common("ems", "labmap.json");
    args.extend([
        "--config".into(),
        format!("{config_root}/ems.toml"),
        "--lab-ip".into(),
        e.to_string(),
        "--listen".into(),
        sock(e, HTTPS),
        "--telemetry-listen".into(),
        sock(e, TELEMETRY),
    ]);
    if def.ems.auto_authorize {
        args.push("--auto-authorize".into());
    }
    devices.push(DeviceService {
        name: "ems".into(),
        program: "sim-ems",
        args,
        networks: vec![("mgmt", e)],
        ports: vec![tcp("https", HTTPS), tcp("telemetry", TELEMETRY)],
    });

    // The FortiGate.
    files.push(("fortigate.conf".into(), def.fortigate_config()?));
    let mut args = common("fortigate", "labmap-fortigate.json");
    args.extend([
        "--config".into(),
        format!("{config_root}/fortigate.conf"),
        "--version".into(),
        f.version.clone(),
        "--lab-ip".into(),
        f.mgmt_ip.to_string(),
        "--name".into(),
        f.name.clone(),
        "--listen".into(),
        sock(f.mgmt_ip, HTTPS),
        "--proxy-listen".into(),
        sock(f.lan_ip, f.proxy_port),
        "--ssh-listen".into(),
        sock(f.mgmt_ip, SSH),
        "--internet".into(),
        if services {
            // The control surface by its Service name (its certificate names it).
            format!("https://internet:{INTERNET_CONTROL}")
        } else {
            format!("https://{}", sock(internet_ip, INTERNET_CONTROL))
        },
    ]);
    devices.push(DeviceService {
        name: "fortigate".into(),
        program: "sim-fortigate",
        args,
        networks: vec![
            ("mgmt", f.mgmt_ip),
            ("lan", f.lan_ip),
            ("wan", fortigate_wan_ip),
        ],
        ports: vec![
            tcp("https", HTTPS),
            tcp("ssh", SSH),
            tcp("proxy", f.proxy_port),
        ],
    });
    let mut links = vec![
        PlanLink {
            client: "fortigate".into(),
            server: "fortianalyzer".into(),
            ports: vec![HTTPS, LOG_CHANNEL, SYSLOG],
        },
        PlanLink {
            client: "fortigate".into(),
            server: "ems".into(),
            ports: vec![HTTPS],
        },
        PlanLink {
            client: "fortigate".into(),
            server: "internet".into(),
            ports: vec![80, HTTPS, INTERNET_CONTROL],
        },
    ];

    // Endpoints: one container per [[endpoints]] entry, at its first endpoint's address.
    for (i, ep) in def.endpoints.iter().enumerate() {
        let label = format!("endpoints-{}", i + 1);
        let last = u32::from(ep.ip).wrapping_add(ep.count.saturating_sub(1));
        let spans = subnet24(ep.ip) != lan || subnet24(Ipv4Addr::from(last)) != lan;
        if spans && opts.addressing != Addressing::Namespaces {
            bail!(
                "endpoints {:?} ({} + {}) are not all on the LAN {lan}/24",
                ep.name,
                ep.ip,
                ep.count
            );
        }
        if used.contains(&ep.ip) || reserved.contains(&ep.ip.octets()[3]) {
            bail!("endpoints {:?}: {} is taken", ep.name, ep.ip);
        }
        used.push(ep.ip);
        let mgmt_ip = host(mgmt, 100u8.saturating_add(i as u8));
        if i >= 100 || used.contains(&mgmt_ip) {
            bail!("too many [[endpoints]] entries for the management addresses .100-.199");
        }
        used.push(mgmt_ip);
        let mut args = common(&label, "labmap.json");
        args.extend([
            "--count".into(),
            ep.count.to_string(),
            "--name-pattern".into(),
            ep.name.clone(),
            "--ip-start".into(),
            ep.ip.to_string(),
            "--ems".into(),
            sock(def.ems.ip, TELEMETRY),
            "--proxy".into(),
            sock(f.lan_ip, f.proxy_port),
            "--listen".into(),
            sock(ep.ip, HTTPS),
        ]);
        if let Some(u) = &ep.user {
            args.extend(["--user".into(), u.clone()]);
        }
        for (server, ports) in [
            ("fortigate", vec![f.proxy_port, HTTPS]),
            ("ems", vec![TELEMETRY, HTTPS]),
            ("fortianalyzer", vec![LOG_CHANNEL]),
        ] {
            links.push(PlanLink {
                client: label.clone(),
                server: server.into(),
                ports,
            });
        }
        devices.push(DeviceService {
            name: label,
            program: "sim-endpoint",
            args,
            networks: vec![("lan", ep.ip), ("mgmt", mgmt_ip)],
            ports: vec![tcp("control", HTTPS)],
        });
    }
    let lab_json = json!({
        "routes": unreachable_routes(def),
        "name": def.lab.name,
        "seed": def.lab.seed,
        "secrets": def.lab.secrets.as_str(),
        "clock": crate::attach::clock_json(&opts.clock),
        "ems_auto_authorize": def.ems.auto_authorize,
        "lab_dir": opts.lab_dir,
        "devices": devices.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
    });
    files.push(("lab.json".into(), serde_json::to_string_pretty(&lab_json)?));
    Ok(Plan {
        mgmt,
        lan,
        wan,
        internet_ip,
        fortigate_wan_ip,
        devices,
        files,
        lab_json,
        links,
    })
}

/// The ranges a container lab's host must make unreachable before any lab network exists:
/// the lab's private /16 and every lab Internet site's public address (built-in and the lab's
/// own), so that no packet to a lab address can take the host's default route.
pub fn unreachable_routes(def: &LabDef) -> Vec<String> {
    let o = def.fortigate.mgmt_ip.octets();
    let mut v = vec![format!("{}.{}.0.0/16", o[0], o[1])];
    let sites = fortilab_internet::sites::default_sites()
        .into_iter()
        .map(|s| s.ip)
        .chain(def.internet.sites.iter().map(|s| IpAddr::V4(s.ip)));
    for ip in sites {
        if let IpAddr::V4(ip) = ip {
            let r = format!("{ip}/32");
            if !v.contains(&r) {
                v.push(r);
            }
        }
    }
    v
}

/// The Compose command of this machine: `docker-compose` (v1) or `docker compose` (v2).
pub fn compose_command() -> Option<Vec<String>> {
    let ok = |c: &mut std::process::Command| {
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if ok(std::process::Command::new("docker-compose").arg("version")) {
        return Some(vec!["docker-compose".into()]);
    }
    if ok(std::process::Command::new("docker").args(["compose", "version"])) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    None
}

fn ip_route(verb: &str, range: &str) -> anyhow::Result<()> {
    let o = std::process::Command::new("ip")
        .args(["route", verb, "unreachable", range])
        .output()
        .with_context(|| format!("ip route {verb} unreachable {range}"))?;
    if !o.status.success() {
        bail!(
            "ip route {verb} unreachable {range}: {} (root or CAP_NET_ADMIN is needed)",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

fn compose_run(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let cmd = compose_command()
        .ok_or_else(|| anyhow!("neither docker-compose nor docker compose is installed"))?;
    let file = dir.join("compose.yaml");
    let mut c = std::process::Command::new(&cmd[0]);
    c.args(&cmd[1..]).arg("-f").arg(&file).args(args);
    // The lab's processes run as the owner of the project directory unless told otherwise.
    if let Ok(m) = std::fs::metadata(dir) {
        use std::os::unix::fs::MetadataExt;
        if std::env::var_os("FORTILAB_UID").is_none() {
            c.env("FORTILAB_UID", m.uid().to_string());
        }
        if std::env::var_os("FORTILAB_GID").is_none() {
            c.env("FORTILAB_GID", m.gid().to_string());
        }
    }
    let st = c
        .status()
        .with_context(|| format!("{} {}", cmd.join(" "), args.join(" ")))?;
    if !st.success() {
        bail!(
            "{} -f {} {}: {st}",
            cmd.join(" "),
            file.display(),
            args.join(" ")
        );
    }
    Ok(())
}

fn project_routes(dir: &Path) -> anyhow::Result<(Vec<String>, Value)> {
    let plan = read_lab_json(&dir.join("config"))?;
    let routes: Vec<String> = plan["routes"]
        .as_array()
        .ok_or_else(|| {
            anyhow!(
                "{}: no \"routes\" (written by an older `fortilab compose`: write the project again)",
                dir.join("config/lab.json").display()
            )
        })?
        .iter()
        .filter_map(|r| r.as_str().map(String::from))
        .collect();
    Ok((routes, plan))
}

/// `fortilab compose up [--out DIR]`: the host's unreachable routes for every lab range first,
/// then the lab directory and `compose up -d`. On failure everything is undone.
pub fn up(dir: &Path) -> anyhow::Result<()> {
    let (routes, plan) = project_routes(dir)?;
    let mut installed = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for r in &routes {
            ip_route("replace", r)?;
            installed.push(r.clone());
        }
        let lab = plan["lab_dir"].as_str().unwrap_or("./lab");
        let lab = if Path::new(lab).is_absolute() {
            PathBuf::from(lab)
        } else {
            dir.join(lab)
        };
        std::fs::create_dir_all(&lab).with_context(|| lab.display().to_string())?;
        compose_run(dir, &["up", "-d"])
    })();
    if let Err(e) = result {
        let _ = compose_run(dir, &["down", "-v", "-t", "15"]);
        for r in &installed {
            let _ = ip_route("del", r);
        }
        return Err(e);
    }
    println!(
        "fortilab: lab up; {} lab range(s) unreachable from the host until `fortilab compose down`",
        routes.len()
    );
    Ok(())
}

/// `fortilab compose down [--out DIR]`: `compose down -v`, then the routes `up` installed
/// (last: no lab packet may leave while anything of the lab exists).
pub fn down(dir: &Path) -> anyhow::Result<()> {
    let (routes, _) = project_routes(dir)?;
    let r = compose_run(dir, &["down", "-v", "--remove-orphans", "-t", "15"]);
    if r.is_ok() {
        for route in &routes {
            let _ = ip_route("del", route);
        }
    }
    r
}

/// The Compose document of a plan (as JSON; [`to_yaml`] writes it).
pub fn compose_document(plan: &Plan, opts: &ComposeOptions) -> Value {
    let volumes = json!(["./config:/config:ro", format!("{}:/lab", opts.lab_dir)]);
    // The lab's processes run as the user that owns the lab directory (FORTILAB_UID/GID, root
    // by default), and may bind the products' ports below 1024 without privileges.
    let user = "${FORTILAB_UID:-0}:${FORTILAB_GID:-0}";
    let mut services = Map::new();
    services.insert(
        "init".into(),
        json!({
            "image": opts.image,
            "command": ["compose-init", "--config", "/config", "--lab", "/lab"],
            "network_mode": "none",
            "user": user,
            "volumes": volumes,
        }),
    );
    for d in &plan.devices {
        let mut nets = Map::new();
        for (n, ip) in &d.networks {
            nets.insert(n.to_string(), json!({"ipv4_address": ip.to_string()}));
        }
        services.insert(
            d.name.clone(),
            json!({
                "image": opts.image,
                "entrypoint": [format!("/{}", d.program)],
                "command": d.args,
                "user": user,
                "volumes": volumes,
                "networks": nets,
                "sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"},
                "depends_on": {"init": {"condition": "service_completed_successfully"}},
                "healthcheck": {
                    "test": ["CMD", "/fortilab", "ready-check", format!("/lab/ready/{}.json", d.name)],
                    "interval": "500ms",
                    "timeout": "5s",
                    "retries": 120,
                },
                "stop_grace_period": "15s",
            }),
        );
    }
    let mut report_nets = Map::new();
    for (n, net) in [("mgmt", plan.mgmt), ("lan", plan.lan), ("wan", plan.wan)] {
        report_nets.insert(
            n.into(),
            json!({"ipv4_address": host(net, REPORT_HOST).to_string()}),
        );
    }
    services.insert(
        "report".into(),
        json!({
            "image": opts.image,
            "command": ["compose-report", "--config", "/config", "--lab", "/lab"],
            "user": user,
            "volumes": volumes,
            "networks": report_nets,
            // It waits for the devices' ready files itself: gating it on their health checks
            // would add Compose's health polling to every start.
            "depends_on": {"init": {"condition": "service_completed_successfully"}},
        }),
    );
    let mut networks = Map::new();
    for (n, net) in [("mgmt", plan.mgmt), ("lan", plan.lan), ("wan", plan.wan)] {
        networks.insert(
            n.into(),
            json!({
                "internal": true,
                "ipam": {"config": [{"subnet": format!("{net}/24"), "gateway": host(net, BRIDGE_HOST).to_string()}]},
            }),
        );
    }
    json!({"services": services, "networks": networks})
}

/// YAML for a JSON document: block mappings, flow sequences, every string double-quoted (a
/// JSON string is a valid YAML double-quoted scalar), so nothing is reinterpreted (`yes`,
/// `0:0`, `500ms`).
pub fn to_yaml(v: &Value) -> String {
    fn key(k: &str) -> String {
        if !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !k.starts_with(['-', '.'])
        {
            k.to_string()
        } else {
            Value::String(k.to_string()).to_string()
        }
    }
    fn walk(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        if let Value::Object(m) = v {
            for (k, x) in m {
                match x {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        walk(x, indent + 2, out);
                    }
                    // Scalars, sequences (flow style: JSON is YAML) and empty mappings.
                    other => out.push_str(&format!("{pad}{}: {other}\n", key(k))),
                }
            }
        }
    }
    let mut out = String::new();
    walk(v, 0, &mut out);
    out
}

/// `fortilab compose`: writes `DIR/compose.yaml` and `DIR/config/`. Returns the compose file.
pub fn write(def: &LabDef, opts: &ComposeOptions, dir: &Path) -> anyhow::Result<PathBuf> {
    let plan = plan(def, opts)?;
    let cfg = dir.join("config");
    std::fs::create_dir_all(&cfg).with_context(|| format!("{}", cfg.display()))?;
    for (name, text) in &plan.files {
        std::fs::write(cfg.join(name), text)
            .with_context(|| format!("{}", cfg.join(name).display()))?;
    }
    let doc = compose_document(&plan, opts);
    let head = format!(
        "# fortilab lab {:?} as containers, written by `fortilab compose` from {}.\n\
         # Up: oci/build-image.sh target/release/fortilab {}; mkdir -p {lab};\n\
         #     FORTILAB_UID=$(id -u) FORTILAB_GID=$(id -g) docker compose up -d\n\
         # The ready report appears in {lab}/ready.json once the lab is up:\n\
         #     fortilab run --attach {lab}/ready.json scenarios/library/seed-flow.toml\n\
         # Networks are internal (no route out); the host's unreachable routes for the lab's\n\
         # ranges come first: `fortilab compose up --out DIR` installs them, then runs\n\
         # `compose up -d`; `fortilab compose down --out DIR` removes them last.\n",
        def.lab.name,
        def.source,
        opts.image,
        lab = opts.lab_dir,
    );
    let path = dir.join("compose.yaml");
    std::fs::write(&path, format!("{head}{}", to_yaml(&doc)))
        .with_context(|| format!("{}", path.display()))?;
    Ok(path)
}

/// `fortilab compose-init`: the lab CA and secrets, created once in the lab directory; stale
/// ready files of a former run are removed.
pub fn init(config: &Path, lab: &Path) -> anyhow::Result<()> {
    let plan = read_lab_json(config)?;
    create_ca_and_secrets(&plan, lab)?;
    let ready = lab.join("ready");
    fortilab_core::secrets::create_private_dir(&ready)?;
    for e in std::fs::read_dir(&ready)?.flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let _ = std::fs::remove_file(lab.join("ready.json"));
    println!("fortilab: lab CA and secrets ready in {}", lab.display());
    Ok(())
}

/// The lab CA (`LAB/ca/ca.pem`, `ca.key`) and secrets (`LAB/secrets.json`) of a plan's
/// `lab.json`, created unless they exist. Returns the lab token.
pub fn create_ca_and_secrets(
    plan: &Value,
    lab: &Path,
) -> anyhow::Result<fortilab_core::secrets::LabToken> {
    fortilab_core::secrets::create_private_dir(lab)
        .with_context(|| format!("--lab {}", lab.display()))?;
    let name = plan["name"].as_str().unwrap_or("fortilab");
    fortilab_core::LabCa::load_or_create(&lab.join("ca"), name)?;
    let mode = match plan["secrets"].as_str() {
        Some("seeded") => fortilab_core::secrets::SecretsMode::Seeded,
        _ => fortilab_core::secrets::SecretsMode::Random,
    };
    let seed = plan["seed"].as_u64().unwrap_or(1);
    let secrets = fortilab_core::secrets::Secrets::open(
        Some(&lab.join(fortilab_core::secrets::SECRETS_FILE)),
        None,
        mode,
        seed,
    )?;
    let token = secrets.lab_token()?;
    for (label, n) in fortilab_core::secrets::CREDENTIALS {
        secrets.credential(label, *n)?;
    }
    Ok(token)
}

pub fn read_lab_json(config: &Path) -> anyhow::Result<Value> {
    let p = config.join("lab.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("{}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}:{}: {e}", p.display(), e.line()))
}

/// `fortilab ready-check FILE`: whether a device's ready report exists and parses (the Compose
/// health check).
pub fn ready_check(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v.is_object() || v.is_array())
}

/// `fortilab compose-report`: waits for every device's ready report, assembles the lab's
/// (ARCHITECTURE.md section 7, with `ca_cert` relative to the lab directory, `ca_pem`,
/// `lab_token` and `clock`), waits for the Security Fabric links, and writes
/// `LAB/ready.json`.
pub async fn report(config: &Path, lab: &Path, timeout: Duration) -> anyhow::Result<Value> {
    let plan = read_lab_json(config)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut ready = std::collections::HashMap::new();
    for d in plan["devices"].as_array().into_iter().flatten() {
        let Some(name) = d.as_str() else { continue };
        let p = lab.join("ready").join(format!("{name}.json"));
        loop {
            if let Some(v) = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                ready.insert(name.to_string(), v);
                break;
            }
            if std::time::Instant::now() >= deadline {
                bail!("{}: no ready report within {timeout:?}", p.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ca_pem = std::fs::read_to_string(lab.join("ca").join("ca.pem"))?;
    let secrets = fortilab_core::secrets::Secrets::open(
        Some(&lab.join(fortilab_core::secrets::SECRETS_FILE)),
        None,
        fortilab_core::secrets::SecretsMode::Random,
        1,
    )?;
    let token = secrets.lab_token()?;
    let mut r = lab_report(&plan, &ready, &ca_pem, &token, "compose", deadline).await?;
    r["ca_cert"] = json!("ca/ca.pem");
    fortilab_core::ready::write_ready(&lab.join("ready.json"), &r)?;
    println!("fortilab: lab ready: {}", lab.join("ready.json").display());
    Ok(r)
}

/// The lab's ready report from its devices' (`ready`: service name → the device's report),
/// with `ca_pem`, `lab_token`, `secrets`, `seed`, `clock` and `network`, once the Security
/// Fabric links are up (as `fortilab up` waits for them; a link still down by `deadline` is
/// a warning). Shared by Compose's `report` service and Kubernetes' `k8s-report`.
pub async fn lab_report(
    plan: &Value,
    ready: &std::collections::HashMap<String, Value>,
    ca_pem: &str,
    token: &fortilab_core::secrets::LabToken,
    network: &str,
    deadline: std::time::Instant,
) -> anyhow::Result<Value> {
    let get = |k: &str| ready.get(k).cloned().unwrap_or(Value::Null);
    let mut eps: Vec<(usize, Value)> = ready
        .iter()
        .filter_map(|(k, v)| {
            let i = k.strip_prefix("endpoints-")?.parse::<usize>().ok()?;
            Some((i, v.clone()))
        })
        .collect();
    eps.sort_by_key(|(i, _)| *i);
    let ep_refs: Vec<&Value> = eps.iter().map(|(_, v)| v).collect();
    let mut r = crate::lab::assemble_report(
        &get("fortigate"),
        &get("fortianalyzer"),
        &get("ems"),
        &get("internet"),
        &ep_refs,
    );
    for (k, v) in [
        ("ca_pem", json!(ca_pem)),
        ("lab_token", json!(token.as_str())),
        ("secrets", plan["secrets"].clone()),
        ("seed", plan["seed"].clone()),
        ("clock", plan["clock"].clone()),
        ("network", json!(network)),
    ] {
        r[k] = v;
    }
    // The fabric settles as in `fortilab up`: the FortiGate's log channel and EMS connector,
    // every endpoint registered and uploading.
    let tls = fortilab_core::tls::client_config_from_pem(ca_pem, None)?;
    let client = crate::clients::http_client_tls(&tls, false, Some(token))?;
    let ems_authorizes = plan["ems_auto_authorize"].as_bool().unwrap_or(true);
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let down = crate::lab::settle_sources(
        &client,
        &crate::attach::event_sources(&r),
        ems_authorizes,
        left.min(crate::lab::SETTLE_TIMEOUT),
    )
    .await;
    if !down.is_empty() {
        eprintln!(
            "fortilab: warning: these Security Fabric links are not up: {}",
            down.join("; ")
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ComposeOptions {
        ComposeOptions {
            image: "fortilab:dev".into(),
            lab_dir: "./lab".into(),
            clock: LabClock::new(1_000, 1_000, 1.0, -480),
            addressing: Addressing::LabNetworks,
        }
    }

    #[test]
    fn the_seed_lab_gets_the_lab_addresses() {
        let p = plan(&LabDef::seed(), &opts()).unwrap();
        let find = |n: &str| p.devices.iter().find(|d| d.name == n).unwrap();
        let fgt = find("fortigate");
        assert_eq!(
            fgt.networks,
            vec![
                ("mgmt", Ipv4Addr::new(10, 115, 1, 1)),
                ("lan", Ipv4Addr::new(10, 115, 2, 1)),
                ("wan", Ipv4Addr::new(10, 115, 0, 1))
            ]
        );
        assert!(fgt
            .args
            .windows(2)
            .any(|w| w == ["--listen", "10.115.1.1:443"]));
        assert!(fgt
            .args
            .windows(2)
            .any(|w| w == ["--proxy-listen", "10.115.2.1:8080"]));
        let faz = find("fortianalyzer");
        assert_eq!(faz.networks, vec![("mgmt", Ipv4Addr::new(10, 115, 1, 20))]);
        assert!(faz
            .args
            .windows(2)
            .any(|w| w == ["--log-listen", "10.115.1.20:514"]));
        assert_eq!(
            find("ems").networks,
            vec![("mgmt", Ipv4Addr::new(10, 115, 1, 30))]
        );
        let ep = find("endpoints-1");
        assert_eq!(ep.networks[0], ("lan", Ipv4Addr::new(10, 115, 2, 52)));
        assert!(ep
            .args
            .windows(2)
            .any(|w| w == ["--listen", "10.115.2.52:443"]));
        // The FortiGate reaches the lab Internet's public addresses through its WAN side.
        let map = p
            .files
            .iter()
            .find(|(n, _)| n == "labmap-fortigate.json")
            .unwrap();
        let m: fortilab_core::LabMap = serde_json::from_str(&map.1).unwrap();
        assert_eq!(
            m.resolve("89.238.73.97:80".parse().unwrap()),
            "10.115.0.2:80".parse().unwrap()
        );
        assert_eq!(
            m.resolve("10.115.1.20:514".parse().unwrap()),
            "10.115.1.20:514".parse().unwrap()
        );
    }

    #[test]
    fn addresses_off_the_plan_are_refused() {
        let mut def = LabDef::seed();
        def.fortianalyzer.ip = Ipv4Addr::new(10, 115, 9, 20);
        let e = plan(&def, &opts()).unwrap_err().to_string();
        assert!(e.contains("not on the management network"), "{e}");
        let mut def = LabDef::seed();
        def.endpoints[0].ip = Ipv4Addr::new(10, 115, 2, 254);
        assert!(plan(&def, &opts()).is_err());
    }

    #[test]
    fn the_document_has_internal_networks_health_checks_and_an_init() {
        let p = plan(&LabDef::seed(), &opts()).unwrap();
        let d = compose_document(&p, &opts());
        for n in ["mgmt", "lan", "wan"] {
            assert_eq!(d["networks"][n]["internal"], true, "{n}");
        }
        assert_eq!(
            d["networks"]["mgmt"]["ipam"]["config"][0]["gateway"],
            "10.115.1.254"
        );
        let s = &d["services"];
        assert_eq!(s["init"]["network_mode"], "none");
        assert_eq!(
            s["fortigate"]["healthcheck"]["test"][3],
            "/lab/ready/fortigate.json"
        );
        assert_eq!(
            s["report"]["depends_on"]["init"]["condition"],
            "service_completed_successfully"
        );
        let y = to_yaml(&d);
        assert!(y.contains("services:\n  init:\n"), "{y}");
        assert!(y.contains("    internal: true\n"), "{y}");
        assert!(
            y.contains("net.ipv4.ip_unprivileged_port_start: \"0\""),
            "{y}"
        );
    }

    #[test]
    fn the_lab_ranges_to_make_unreachable_are_the_lab_16_and_every_site() {
        let mut def = LabDef::seed();
        def.internet.sites.push(crate::labdef::SiteDef {
            host: "extra.example".into(),
            ip: Ipv4Addr::new(198, 51, 100, 7),
            category: 0,
            aliases: vec![],
            pages: Default::default(),
        });
        let r = unreachable_routes(&def);
        assert_eq!(r[0], "10.115.0.0/16");
        for want in ["89.238.73.97/32", "195.22.28.198/32", "198.51.100.7/32"] {
            assert!(r.iter().any(|x| x == want), "{want} in {r:?}");
        }
        let p = plan(&def, &opts()).unwrap();
        assert_eq!(p.lab_json["routes"], json!(r));
        assert_eq!(p.lab_json["lab_dir"], "./lab");
    }

    #[test]
    fn yaml_quotes_every_string() {
        let y = to_yaml(&json!({"a": {"b": "yes", "c": [1, "0:0"], "d": {}}, "e f": true}));
        assert_eq!(
            y,
            "a:\n  b: \"yes\"\n  c: [1,\"0:0\"]\n  d: {}\n\"e f\": true\n"
        );
    }
}
