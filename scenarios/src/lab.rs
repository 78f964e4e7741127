//! A running lab: every device process, the lab CA, the lab clock and the lab network map.
//!
//! Start order follows the dependencies: the lab Internet, FortiAnalyzer and EMS first (in
//! parallel; nobody calls out to them at start), then the FortiGate (its lab map names them),
//! then the endpoints (their map names the FortiGate's proxy); then the lab waits for the
//! Security Fabric links to come up ([`Lab::settle`]). A device restarted by a scenario
//! gets the same real ports again, so the others' maps stay true.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

use fortilab_core::secrets::{LabToken, Secrets, SecretsMode};
use fortilab_core::{LabCa, LabClock, LabMap};

use crate::labdef::LabDef;
use crate::links::LabLinks;
use crate::procs::DeviceProc;
use fortilab_core::linkfault::LinkId;

/// How long a device may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a started lab waits for its Security Fabric links (see [`Lab::settle`]).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// What [`settle_timeout`] adds per endpoint: every endpoint's registration with EMS and its
/// log channel to FortiAnalyzer is part of "ready", and a large lab's endpoints register in a
/// burst that a loaded machine serves at a few hundred a second (BENCHMARKS.md, namespaces
/// mode at scale), so the wait grows with the lab instead of reporting a half-registered lab.
pub const SETTLE_PER_ENDPOINT: Duration = Duration::from_millis(15);

/// How long a lab of `endpoints` endpoints waits for its fabric: [`SETTLE_TIMEOUT`] plus
/// [`SETTLE_PER_ENDPOINT`] each (15 s for the seed lab, 30 s for 1,000 endpoints).
pub fn settle_timeout(endpoints: usize) -> Duration {
    SETTLE_TIMEOUT + SETTLE_PER_ENDPOINT * endpoints.min(100_000) as u32
}

/// Options of a lab start.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Where device state, logs and the CA live.
    pub data_dir: PathBuf,
    /// Seed override (`--seed`).
    pub seed: Option<u64>,
}

/// The device roles of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Internet,
    Faz,
    Ems,
    Fortigate,
    Endpoints,
}

impl Role {
    /// The device name of the role in link names.
    pub fn link_name(self) -> &'static str {
        match self {
            Role::Internet => "internet",
            Role::Faz => "fortianalyzer",
            Role::Ems => "ems",
            Role::Fortigate => "fortigate",
            Role::Endpoints => "endpoints",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Some(match name {
            "internet" => Role::Internet,
            "fortianalyzer" | "faz" => Role::Faz,
            "ems" => Role::Ems,
            "fortigate" | "fgt" => Role::Fortigate,
            "endpoints" | "endpoint" => Role::Endpoints,
            _ => return None,
        })
    }

    /// Ready-report keys holding real addresses, and the flag that binds each on restart.
    fn listen_flags(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Role::Internet => &[
                ("http", "--listen-http"),
                ("https", "--listen-https"),
                // The FortiGate's FortiGuard rating and DNS source (`--internet`).
                ("control", "--listen-control"),
            ],
            Role::Faz => &[
                ("api", "--listen"),
                ("log_channel", "--log-listen"),
                ("syslog", "--syslog-listen"),
                ("ssh", "--ssh-listen"),
            ],
            Role::Ems => &[("api", "--listen"), ("telemetry", "--telemetry-listen")],
            Role::Fortigate => &[
                ("api", "--listen"),
                ("proxy", "--proxy-listen"),
                ("ssh", "--ssh-listen"),
            ],
            Role::Endpoints => &[("control", "--listen")],
        }
    }
}

/// A running lab.
pub struct Lab {
    pub def: LabDef,
    pub dir: PathBuf,
    pub ca: LabCa,
    pub ca_cert: PathBuf,
    pub clock: LabClock,
    pub seed: u64,
    /// The lab token every `/_lab/` route of every device requires (`X-Fortilab-Token`).
    pub lab_token: LabToken,
    /// Where the credentials came from (`[lab] secrets`).
    pub secrets: SecretsMode,
    /// The lab's secrets file (mode 0600; kept across resets, like the lab CA).
    pub secrets_path: PathBuf,
    /// The direct map (every lab service at its real socket): the lab Internet, FortiAnalyzer
    /// and EMS get this one (they call no peer).
    pub map: LabMap,
    map_path: PathBuf,
    /// The links between devices and their fault relays; the FortiGate's and the endpoints'
    /// maps (`labmap-<label>.json`) send their peers' services through them.
    pub links: Arc<LabLinks>,
    pub internet: DeviceProc,
    pub faz: DeviceProc,
    pub ems: DeviceProc,
    pub fortigate: DeviceProc,
    pub endpoints: Vec<DeviceProc>,
    /// Listen flags learned at first start, per device label, reused on restart.
    pinned: std::collections::HashMap<String, Vec<String>>,
    /// Namespaces mode: the lab's network namespaces (removed by [`Lab::stop_all`] or on
    /// drop).
    pub netns: Option<crate::netns::NetLab>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What [`Lab::start_netns`] takes over from [`Lab::start_pinned`].
struct NetnsStart {
    def: LabDef,
    dir: PathBuf,
    ca: LabCa,
    ca_cert: PathBuf,
    clock: LabClock,
    seed: u64,
    lab_token: LabToken,
    secrets_mode: SecretsMode,
    secrets_path: PathBuf,
    map_path: PathBuf,
    links: Arc<LabLinks>,
    logs: PathBuf,
}

/// `10.a.b.c` → `127.a.b.c`: the loopback address that stands for a lab host, so that
/// `curl --interface 127.a.b.c` acts as that host.
pub fn loopback_for(ip: Ipv4Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(127, o[1], o[2], o[3])
}

/// Parses `https://127.0.0.1:P[/...]` or `127.0.0.1:P` into the socket address.
pub fn url_socket(v: &Value) -> Option<SocketAddr> {
    let s = v.as_str()?;
    let rest = s.split("://").nth(1).unwrap_or(s);
    let hostport = rest.split('/').next()?;
    hostport.parse().ok()
}

/// `url` with its port replaced (`https://127.0.0.1:7/x` → `https://127.0.0.1:9/x`).
fn with_port(url: &str, port: u16) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => &hostport[..i],
        _ => hostport,
    };
    format!("{scheme}{host}:{port}{path}")
}

/// A device's ready object: the report itself, or the named object inside it.
pub fn unwrap_ready<'a>(ready: &'a Value, key: &str) -> &'a Value {
    match ready.get(key) {
        Some(inner) if inner.is_object() || inner.is_array() => inner,
        _ => ready,
    }
}

impl Lab {
    /// Starts every device and waits until all are ready.
    pub async fn start(def: LabDef, opts: LabOptions) -> anyhow::Result<Lab> {
        Self::start_pinned(def, opts, Default::default()).await
    }

    /// [`Lab::start`] with each device bound to the real addresses a former lab used
    /// ([`Lab::pinned`]): a reset lab keeps the URLs users and scripts already have.
    pub async fn start_pinned(
        def: LabDef,
        opts: LabOptions,
        pinned: std::collections::HashMap<String, Vec<String>>,
    ) -> anyhow::Result<Lab> {
        let dir = opts.data_dir.clone();
        fortilab_core::secrets::create_private_dir(&dir)
            .with_context(|| format!("--data-dir {}", dir.display()))?;
        let ca = LabCa::load_or_create(&dir.join("ca"), &def.lab.name)?;
        let ca_cert = dir.join("ca").join("ca.pem");
        let ca_key = dir.join("ca").join("ca.key");
        let seed = opts.seed.unwrap_or(def.lab.seed);
        // The lab's secrets: the lab token and (unless seeded) every credential, created once
        // per lab directory and handed to each device as a file (never on the command line).
        let secrets_path = dir.join(fortilab_core::secrets::SECRETS_FILE);
        let secrets = Secrets::open(Some(&secrets_path), None, def.lab.secrets, seed)?;
        let lab_token = secrets.lab_token()?;
        let secrets_mode = def.lab.secrets;
        for (label, n) in fortilab_core::secrets::CREDENTIALS {
            secrets.credential(label, *n)?;
        }
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
        let clock = LabClock::new(epoch_ms, now_ms, def.lab.speed, tz);
        let map_path = dir.join("labmap.json");
        let mut map = LabMap::new();
        for ep in def.endpoint_specs() {
            map.add_host(IpAddr::V4(ep.ip), IpAddr::V4(loopback_for(ep.ip)));
        }
        write_map(&map_path, &map)?;
        let links = LabLinks::new(seed, clock);

        let common = |label: &str| -> Vec<String> {
            let mut a = vec![
                "--data-dir".to_string(),
                dir.join(label).display().to_string(),
                "--lab-map".into(),
                device_map_path(&dir, label).display().to_string(),
                "--ca-cert".into(),
                ca_cert.display().to_string(),
                "--ca-key".into(),
                ca_key.display().to_string(),
                "--seed".into(),
                seed.to_string(),
                "--secrets".into(),
                def.lab.secrets.as_str().into(),
                "--secrets-file".into(),
                secrets_path.display().to_string(),
                "--timing".into(),
                match def.lab.timing {
                    fortilab_core::binary::Timing::Fast => "fast".into(),
                    fortilab_core::binary::Timing::Realistic => "realistic".into(),
                },
            ];
            a.extend(clock.to_args());
            a
        };
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        if def.lab.network == crate::labdef::NetworkMode::Namespaces {
            return Self::start_netns(NetnsStart {
                def,
                dir,
                ca,
                ca_cert,
                clock,
                seed,
                lab_token,
                secrets_mode,
                secrets_path,
                map_path,
                links,
                logs,
            })
            .await;
        }

        // The lab Internet.
        let mut internet_args = common("internet");
        if let Some(cfg) = internet_config(&def) {
            let p = dir.join("internet.toml");
            std::fs::write(&p, cfg)?;
            internet_args.extend(["--config".into(), p.display().to_string()]);
        }
        let internet = DeviceProc::new("sim-internet", "internet", &logs, internet_args);

        // FortiAnalyzer and EMS: a config file, the lab address, auto-authorization.
        let manager = |label: &str, file: &str, cfg: String, ip: std::net::Ipv4Addr, auto: bool| {
            let path = dir.join(file);
            std::fs::write(&path, cfg)?;
            let mut args = common(label);
            args.extend([
                "--config".into(),
                path.display().to_string(),
                "--lab-ip".into(),
                ip.to_string(),
            ]);
            if auto {
                args.push("--auto-authorize".into());
            }
            anyhow::Ok(args)
        };
        let faz_args = manager(
            "fortianalyzer",
            "faz.toml",
            faz_config(&def),
            def.fortianalyzer.ip,
            def.fortianalyzer.auto_authorize,
        )?;
        let faz = DeviceProc::new("sim-faz", "fortianalyzer", &logs, faz_args);
        let ems_args = manager(
            "ems",
            "ems.toml",
            ems_config(&def),
            def.ems.ip,
            def.ems.auto_authorize,
        )?;
        let ems = DeviceProc::new("sim-ems", "ems", &logs, ems_args);

        // FortiGate.
        let fgt_cfg = dir.join("fortigate.conf");
        std::fs::write(&fgt_cfg, def.fortigate_config()?)?;
        let mut fgt_args = common("fortigate");
        fgt_args.extend([
            "--config".into(),
            fgt_cfg.display().to_string(),
            "--version".into(),
            def.fortigate.version.clone(),
            "--lab-ip".into(),
            def.fortigate.mgmt_ip.to_string(),
            "--name".into(),
            def.fortigate.name.clone(),
        ]);
        let fortigate = DeviceProc::new("sim-fortigate", "fortigate", &logs, fgt_args);

        // Endpoints: one process per [[endpoints]] entry.
        let mut endpoints = Vec::new();
        for (i, ep) in def.endpoints.iter().enumerate() {
            let label = format!("endpoints-{}", i + 1);
            let mut args = common(&label);
            args.extend([
                "--count".into(),
                ep.count.to_string(),
                "--name-pattern".into(),
                ep.name.clone(),
                "--ip-start".into(),
                ep.ip.to_string(),
                "--ems".into(),
                SocketAddr::new(IpAddr::V4(def.ems.ip), 8013).to_string(),
                "--proxy".into(),
                SocketAddr::new(IpAddr::V4(def.fortigate.lan_ip), def.fortigate.proxy_port)
                    .to_string(),
            ]);
            if let Some(u) = &ep.user {
                args.extend(["--user".into(), u.clone()]);
            }
            endpoints.push(DeviceProc::new("sim-endpoint", &label, &logs, args));
        }

        let mut lab = Lab {
            def,
            dir,
            ca,
            ca_cert,
            clock,
            seed,
            lab_token,
            secrets: secrets_mode,
            secrets_path,
            map,
            map_path,
            links,
            internet,
            faz,
            ems,
            fortigate,
            endpoints,
            pinned,
            netns: None,
        };
        match lab.boot().await {
            Ok(()) => Ok(lab),
            Err(e) => {
                lab.stop_all().await;
                Err(e)
            }
        }
    }

    /// Namespaces mode: the network first (unreachable routes on the host, namespaces,
    /// veths, the FortiGate's redirect), then the devices in their namespaces with the
    /// Compose plan's commands (real lab addresses and the products' ports).
    async fn start_netns(s: NetnsStart) -> anyhow::Result<Lab> {
        let NetnsStart {
            def,
            dir,
            ca,
            ca_cert,
            clock,
            seed,
            lab_token,
            secrets_mode,
            secrets_path,
            map_path,
            links,
            logs,
        } = s;
        let prefix = crate::netns::new_prefix();
        let net_plan = crate::netns::plan(&def, &prefix)?;
        let t_net = std::time::Instant::now();
        let net = tokio::task::spawn_blocking(move || crate::netns::NetLab::create(net_plan))
            .await
            .map_err(|e| anyhow!("network set-up: {e}"))??;
        let network = t_net.elapsed();
        let cfg_dir = dir.join("config");
        std::fs::create_dir_all(&cfg_dir)?;
        let copts = crate::compose::ComposeOptions {
            image: String::new(),
            lab_dir: String::new(),
            clock,
            addressing: crate::compose::Addressing::Namespaces,
        };
        let cplan = crate::compose::plan_at(
            &def,
            &copts,
            &dir.display().to_string(),
            &cfg_dir.display().to_string(),
        )?;
        // Real networks: every map is the identity (no mapping, no PROXY header between
        // devices); the FortiGate reaches the sites' public addresses by its default route.
        let mut map = LabMap::new();
        map.identity = true;
        for (name, text) in &cplan.files {
            let text = if name.starts_with("labmap") {
                serde_json::to_string_pretty(&map)?
            } else if name == "fortigate.conf" {
                crate::netns::with_secondary_ips(text, "port3", &net.plan.extra_lan)
            } else {
                text.clone()
            };
            std::fs::write(cfg_dir.join(name), text)?;
        }
        write_map(&map_path, &map)?;
        let mut procs = std::collections::HashMap::new();
        for d in &cplan.devices {
            let mut args = Vec::new();
            let mut it = d.args.iter();
            while let Some(a) = it.next() {
                if a == "--ready-file" {
                    it.next();
                    continue;
                }
                args.push(a.clone());
            }
            match d.name.as_str() {
                "internet" => {
                    for (flag, port) in [("--listen-http", 80), ("--listen-https", 443)] {
                        if let Some(i) = args.iter().position(|a| a == flag) {
                            args[i + 1] = format!("0.0.0.0:{port}");
                        }
                    }
                    args.extend(["--dns-listen".into(), format!("{}:53", net.plan.dns)]);
                }
                "fortigate" => args.extend([
                    "--transparent-listen".into(),
                    format!(
                        "{}:{}",
                        def.fortigate.lan_ip,
                        crate::netns::TRANSPARENT_PORT
                    ),
                ]),
                _ => {}
            }
            args.extend(net.args_of(&d.name));
            let mut p = DeviceProc::new(d.program, &d.name, &logs, args);
            p.netns = net.ns_of(&d.name);
            procs.insert(d.name.clone(), p);
        }
        links.use_netem(net.netem_set());
        let mut take = |n: &str| {
            procs
                .remove(n)
                .ok_or_else(|| anyhow!("no {n} in the namespaces plan"))
        };
        let internet = take("internet")?;
        let faz = take("fortianalyzer")?;
        let ems = take("ems")?;
        let fortigate = take("fortigate")?;
        let mut endpoints = Vec::new();
        for i in 0..def.endpoints.len() {
            endpoints.push(take(&format!("endpoints-{}", i + 1))?);
        }
        let mut lab = Lab {
            def,
            dir,
            ca,
            ca_cert,
            clock,
            seed,
            lab_token,
            secrets: secrets_mode,
            secrets_path,
            map,
            map_path,
            links,
            internet,
            faz,
            ems,
            fortigate,
            endpoints,
            pinned: Default::default(),
            netns: Some(net),
        };
        match lab.boot_netns(network).await {
            Ok(()) => Ok(lab),
            Err(e) => {
                lab.stop_all().await;
                Err(e)
            }
        }
    }

    /// Starts the devices of a namespaces lab (its network took `network` to set up) and
    /// waits for the fabric; logs the start's phases (BENCHMARKS.md, namespaces mode at scale).
    async fn boot_netns(&mut self, network: Duration) -> anyhow::Result<()> {
        let t_dev = std::time::Instant::now();
        self.internet.spawn(&[])?;
        self.faz.spawn(&[])?;
        self.ems.spawn(&[])?;
        let (a, b, c) = tokio::join!(
            self.internet.wait_ready(READY_TIMEOUT),
            self.faz.wait_ready(READY_TIMEOUT),
            self.ems.wait_ready(READY_TIMEOUT)
        );
        a?;
        b?;
        c?;
        // The sites' public addresses: unreachable on the host first, then on the Internet's
        // loopback.
        let inet = unwrap_ready(&self.internet.ready, "internet").clone();
        let ips: Vec<Ipv4Addr> = inet
            .get("sites")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("ip").and_then(Value::as_str)?.parse().ok())
            .collect();
        if let Some(n) = self.netns.as_mut() {
            n.add_sites(&ips)?;
        }
        self.fortigate.spawn(&[])?;
        self.fortigate.wait_ready(READY_TIMEOUT).await?;
        for ep in &mut self.endpoints {
            ep.spawn(&[])?;
        }
        for ep in &mut self.endpoints {
            ep.wait_ready(READY_TIMEOUT).await?;
        }
        let devices = t_dev.elapsed();
        let t_fabric = std::time::Instant::now();
        let within = self.settle_timeout();
        let down = self.settle(within).await;
        if !down.is_empty() {
            tracing::warn!(
                "the lab started, but these Security Fabric links were not up within {within:?}: {}",
                down.join("; ")
            );
        }
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::info!(
            namespaces = self
                .netns
                .as_ref()
                .map_or(0, |n| n.plan.state.namespaces.len()),
            network_ms = ms(network),
            devices_ms = ms(devices),
            fabric_ms = ms(t_fabric.elapsed()),
            "namespaces lab started"
        );
        Ok(())
    }

    /// The listen flags each device was started with, by process label (see
    /// [`Lab::start_pinned`]).
    pub fn pinned(&self) -> std::collections::HashMap<String, Vec<String>> {
        self.pinned.clone()
    }

    fn pins(&self, label: &str) -> Vec<String> {
        self.pinned.get(label).cloned().unwrap_or_default()
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let pins = self.pins("internet");
        self.internet.spawn(&pins)?;
        let pins = self.pins("fortianalyzer");
        self.faz.spawn(&pins)?;
        let pins = self.pins("ems");
        self.ems.spawn(&pins)?;
        let (a, b, c) = tokio::join!(
            self.internet.wait_ready(READY_TIMEOUT),
            self.faz.wait_ready(READY_TIMEOUT),
            self.ems.wait_ready(READY_TIMEOUT)
        );
        a?;
        b?;
        c?;
        for (label, role) in [
            ("internet", Role::Internet),
            ("fortianalyzer", Role::Faz),
            ("ems", Role::Ems),
        ] {
            self.pin(label, role);
        }
        self.map_internet()?;
        self.map_faz_ems()?;
        write_map(&self.map_path, &self.map)?;
        // The FortiGate reaches FortiAnalyzer, EMS and the Internet's sites through the relays
        // of those links.
        let fgt_map = self.relayed_map(&[
            (Role::Faz, Role::Fortigate),
            (Role::Ems, Role::Fortigate),
            (Role::Internet, Role::Fortigate),
        ])?;
        write_map(&device_map_path(&self.dir, "fortigate"), &fgt_map)?;

        // The FortiGate's FortiGuard rating and DNS come from the lab Internet's control
        // surface, over the FortiGate ↔ Internet link (its relay: a down link holds the lookups
        // until they time out).
        let inet = unwrap_ready(&self.internet.ready, "internet").clone();
        if let Some(control) = inet.get("control").and_then(Value::as_str) {
            let control = self.relayed_control(control)?;
            self.fortigate
                .args
                .extend(["--internet".to_string(), control]);
        }
        let pins = self.pins("fortigate");
        self.fortigate.spawn(&pins)?;
        self.fortigate.wait_ready(READY_TIMEOUT).await?;
        self.pin("fortigate", Role::Fortigate);
        let fgt = unwrap_ready(&self.fortigate.ready, "fortigate").clone();
        if let Some(proxy) = fgt.get("proxy").and_then(url_socket) {
            let lab = SocketAddr::new(
                IpAddr::V4(self.def.fortigate.lan_ip),
                self.def.fortigate.proxy_port,
            );
            self.map.add_service(lab, proxy);
        }
        if let Some(api) = fgt.get("api").and_then(url_socket) {
            self.map.add_service(
                SocketAddr::new(IpAddr::V4(self.def.fortigate.mgmt_ip), 443),
                api,
            );
        }
        write_map(&self.map_path, &self.map)?;
        // The endpoints reach the FortiGate, EMS and FortiAnalyzer through those links' relays
        // (their other lab services stay direct).
        let ep_map = self.relayed_map(&[
            (Role::Fortigate, Role::Endpoints),
            (Role::Ems, Role::Endpoints),
            (Role::Faz, Role::Endpoints),
        ])?;
        for ep in &self.endpoints {
            write_map(&device_map_path(&self.dir, &ep.label), &ep_map)?;
        }

        for i in 0..self.endpoints.len() {
            let pins = self.pins(&self.endpoints[i].label);
            self.endpoints[i].spawn(&pins)?;
        }
        for ep in &mut self.endpoints {
            ep.wait_ready(READY_TIMEOUT).await?;
        }
        for i in 0..self.endpoints.len() {
            let label = self.endpoints[i].label.clone();
            self.pin(&label, Role::Endpoints);
        }
        let within = self.settle_timeout();
        let down = self.settle(within).await;
        if !down.is_empty() {
            tracing::warn!(
                "the lab started, but these Security Fabric links were not up within {within:?}: {}",
                down.join("; ")
            );
        }
        Ok(())
    }

    /// Waits until the Security Fabric links the lab's configuration asks for are up, so that
    /// the first step of every run finds the same fabric: the FortiGate's log channel to
    /// FortiAnalyzer, its EMS connectors (when EMS authorizes FortiGates itself), and every
    /// endpoint registered with EMS and, when its profile uploads logs, connected to
    /// FortiAnalyzer (which is how FortiAnalyzer learns the endpoint's host name). Returns the
    /// links still down after `timeout`; empty when all are up.
    /// [`settle_timeout`] for this lab's endpoints.
    pub fn settle_timeout(&self) -> Duration {
        settle_timeout(self.def.endpoints.iter().map(|e| e.count as usize).sum())
    }

    pub async fn settle(&self, timeout: Duration) -> Vec<String> {
        let client = match crate::clients::http_client(&self.ca, false, Some(&self.lab_token)) {
            Ok(c) => c,
            Err(e) => return vec![format!("no lab HTTP client: {e:#}")],
        };
        settle_sources(
            &client,
            &self.event_sources(),
            self.def.ems.auto_authorize,
            timeout,
        )
        .await
    }

    fn pin(&mut self, label: &str, role: Role) {
        let proc_ = self.proc_by_label(label);
        let ready = match role {
            Role::Internet => unwrap_ready(&proc_.ready, "internet").clone(),
            Role::Faz => unwrap_ready(&proc_.ready, "fortianalyzer").clone(),
            Role::Ems => unwrap_ready(&proc_.ready, "ems").clone(),
            Role::Fortigate => unwrap_ready(&proc_.ready, "fortigate").clone(),
            Role::Endpoints => {
                let eps = unwrap_ready(&proc_.ready, "endpoints");
                eps.get(0).cloned().unwrap_or(Value::Null)
            }
        };
        let mut flags = Vec::new();
        for (key, flag) in role.listen_flags() {
            if let Some(addr) = ready.get(*key).and_then(url_socket) {
                flags.push(flag.to_string());
                flags.push(addr.to_string());
            }
        }
        self.pinned.insert(label.to_string(), flags);
    }

    fn proc_by_label(&mut self, label: &str) -> &mut DeviceProc {
        match label {
            "internet" => &mut self.internet,
            "fortianalyzer" => &mut self.faz,
            "ems" => &mut self.ems,
            "fortigate" => &mut self.fortigate,
            other => self
                .endpoints
                .iter_mut()
                .find(|p| p.label == other)
                .expect("known endpoint process label"),
        }
    }

    /// Which device a lab service (from the direct map) belongs to.
    fn owner_of(&self, lab: SocketAddr) -> Option<Role> {
        let ip = match lab.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => return None,
        };
        if ip == self.def.fortianalyzer.ip {
            Some(Role::Faz)
        } else if ip == self.def.ems.ip {
            Some(Role::Ems)
        } else if ip == self.def.fortigate.mgmt_ip || ip == self.def.fortigate.lan_ip {
            Some(Role::Fortigate)
        } else {
            // Everything else in the map is a lab Internet site (endpoint hosts are `hosts`,
            // not services).
            Some(Role::Internet)
        }
    }

    /// The direct map with the services of each `(owner, caller)` pair's owner sent through
    /// the relay of the link between the two.
    fn relayed_map(&self, pairs: &[(Role, Role)]) -> anyhow::Result<LabMap> {
        let mut m = self.map.clone();
        for (lab, real) in &self.map.services {
            let Some(owner) = self.owner_of(*lab) else {
                continue;
            };
            let Some((_, caller)) = pairs.iter().find(|(o, _)| *o == owner) else {
                continue;
            };
            let id = LinkId::new(owner.link_name(), caller.link_name())
                .map_err(|e| anyhow!("link: {e}"))?;
            // Syslog (lab port 5514 stands for 514/udp and tcp): its relay takes both forms
            // on one port number.
            let relay = if owner == Role::Faz && lab.port() == 5514 {
                self.links.relay_tcp_udp(&id, *lab, *real)
            } else {
                self.links.relay(&id, *lab, *real)
            }
            .with_context(|| format!("starting the relay of link {id} for {lab}"))?;
            m.add_service(*lab, relay);
        }
        Ok(m)
    }

    /// The lab Internet's control URL as the FortiGate reaches it: through the relay of the
    /// FortiGate ↔ Internet link (same host name, the relay's port), so that link's faults
    /// reach FortiGuard rating and DNS lookups too.
    fn relayed_control(&self, control: &str) -> anyhow::Result<String> {
        let Some(real) = url_socket(&Value::String(control.to_string())) else {
            return Ok(control.to_string());
        };
        let id = LinkId::new(Role::Fortigate.link_name(), Role::Internet.link_name())
            .map_err(|e| anyhow!("link: {e}"))?;
        let relay = self
            .links
            .relay(&id, real, real)
            .with_context(|| format!("starting the relay of link {id} for {control}"))?;
        Ok(with_port(control, relay.port()))
    }

    fn map_internet(&mut self) -> anyhow::Result<()> {
        let ready = unwrap_ready(&self.internet.ready, "internet").clone();
        let http = ready.get("http").and_then(url_socket);
        let https = ready.get("https").and_then(url_socket);
        if let Some(sites) = ready.get("sites").and_then(Value::as_array) {
            for s in sites {
                let Some(ip) = s
                    .get("ip")
                    .and_then(Value::as_str)
                    .and_then(|i| i.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                if let Some(h) = http {
                    self.map.add_service(SocketAddr::new(ip, 80), h);
                }
                if let Some(h) = https {
                    self.map.add_service(SocketAddr::new(ip, 443), h);
                }
            }
        }
        Ok(())
    }

    fn map_faz_ems(&mut self) -> anyhow::Result<()> {
        let faz = unwrap_ready(&self.faz.ready, "fortianalyzer").clone();
        let faz_ip = IpAddr::V4(self.def.fortianalyzer.ip);
        if let Some(a) = faz.get("log_channel").and_then(url_socket) {
            self.map.add_service(SocketAddr::new(faz_ip, 514), a);
        }
        if let Some(a) = faz.get("api").and_then(url_socket) {
            self.map.add_service(SocketAddr::new(faz_ip, 443), a);
        }
        if let Some(a) = faz.get("syslog").and_then(url_socket) {
            // Syslog listens on the same number for UDP and TCP; lab port 514/udp is not
            // distinguishable in a socket map, so it is listed under lab port 5514.
            self.map.add_service(SocketAddr::new(faz_ip, 5514), a);
        }
        let ems = unwrap_ready(&self.ems.ready, "ems").clone();
        let ems_ip = IpAddr::V4(self.def.ems.ip);
        if let Some(a) = ems.get("api").and_then(url_socket) {
            self.map.add_service(SocketAddr::new(ems_ip, 443), a);
        }
        if let Some(a) = ems.get("telemetry").and_then(url_socket) {
            self.map.add_service(SocketAddr::new(ems_ip, 8013), a);
        }
        Ok(())
    }

    /// The ready report of ARCHITECTURE.md section 7.
    pub fn ready_report(&self, dashboard: Option<&str>) -> Value {
        let endpoints: Vec<&Value> = self.endpoints.iter().map(|p| &p.ready).collect();
        let mut r = assemble_report(
            &self.fortigate.ready,
            &self.faz.ready,
            &self.ems.ready,
            &self.internet.ready,
            &endpoints,
        );
        let extra = json!({
            "ca_cert": self.ca_cert.display().to_string(),
            "dashboard": dashboard,
            "lab_token": self.lab_token.as_str(),
            "secrets": self.secrets.as_str(),
            "seed": self.seed,
            "clock": crate::attach::clock_json(&self.clock),
            "data_dir": self.dir.display().to_string(),
            "network": self.def.lab.network.as_str(),
            "netns": self.netns.as_ref().map(|n| n.plan.state.prefix.clone()),
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            r[k] = v.clone();
        }
        r
    }

    /// Base URLs of every process's lab surface (for `/_lab/events`), with a label.
    pub fn event_sources(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let base = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(|s| s.trim_end_matches('/').to_string())
        };
        if let Some(u) = base(unwrap_ready(&self.fortigate.ready, "fortigate"), "api") {
            out.push(("fortigate".to_string(), u));
        }
        if let Some(u) = base(unwrap_ready(&self.faz.ready, "fortianalyzer"), "api") {
            out.push(("fortianalyzer".to_string(), u));
        }
        if let Some(u) = base(unwrap_ready(&self.ems.ready, "ems"), "api") {
            out.push(("ems".to_string(), u));
        }
        let inet = unwrap_ready(&self.internet.ready, "internet");
        if let Some(u) = base(inet, "control") {
            out.push(("internet".to_string(), u));
        }
        for p in &self.endpoints {
            let eps = unwrap_ready(&p.ready, "endpoints");
            if let Some(c) = eps
                .get(0)
                .and_then(|e| e.get("control"))
                .and_then(Value::as_str)
            {
                let root = match c.find("/endpoints/") {
                    Some(i) => c[..i].to_string(),
                    None => c.trim_end_matches('/').to_string(),
                };
                out.push((p.label.clone(), root));
            }
        }
        out
    }

    /// Stops every device (endpoints first, the lab Internet last). Returns the labels of
    /// devices that did not exit 0.
    pub async fn stop_all(&mut self) -> Vec<String> {
        let mut bad = Vec::new();
        let grace = Duration::from_secs(10);
        for p in &mut self.endpoints {
            if p.pid().is_some() && p.stop(grace).await != Some(0) {
                bad.push(p.label.clone());
            }
        }
        for p in [
            &mut self.fortigate,
            &mut self.ems,
            &mut self.faz,
            &mut self.internet,
        ] {
            if p.pid().is_some() && p.stop(grace).await != Some(0) {
                bad.push(p.label.clone());
            }
        }
        self.links.stop();
        if let Some(mut n) = self.netns.take() {
            tokio::task::spawn_blocking(move || n.teardown()).await.ok();
        }
        bad
    }

    fn labels_of(&self, role: Role) -> Vec<String> {
        match role {
            Role::Internet => vec!["internet".into()],
            Role::Faz => vec!["fortianalyzer".into()],
            Role::Ems => vec!["ems".into()],
            Role::Fortigate => vec!["fortigate".into()],
            Role::Endpoints => self.endpoints.iter().map(|p| p.label.clone()).collect(),
        }
    }

    /// SIGTERM a device (and wait for it).
    pub async fn stop_device(&mut self, role: Role) -> anyhow::Result<()> {
        for label in self.labels_of(role) {
            self.proc_by_label(&label)
                .stop(Duration::from_secs(10))
                .await;
        }
        Ok(())
    }

    /// SIGKILL a device.
    pub async fn kill_device(&mut self, role: Role) -> anyhow::Result<()> {
        for label in self.labels_of(role) {
            self.proc_by_label(&label).kill().await;
        }
        Ok(())
    }

    /// Starts a stopped device on its former ports and waits until it is ready.
    pub async fn start_device(&mut self, role: Role) -> anyhow::Result<()> {
        for label in self.labels_of(role) {
            let pinned = self.pinned.get(&label).cloned().unwrap_or_default();
            let p = self.proc_by_label(&label);
            // A process that died behind the orchestrator's back (`kill -9` from outside) still
            // has its child handle, and for a few milliseconds after the kill it cannot be
            // reaped yet: wait for that, then only a running one is left alone.
            if p.settled_state(Duration::from_secs(5)).await == crate::procs::ProcState::Running {
                continue;
            }
            // The pinned flags come last so they override the first start's defaults.
            p.spawn(&pinned)?;
            p.wait_ready(READY_TIMEOUT)
                .await
                .map_err(|e| anyhow!("restart of {label}: {e}"))?;
        }
        Ok(())
    }

    pub async fn restart_device(&mut self, role: Role) -> anyhow::Result<()> {
        self.stop_device(role).await?;
        self.start_device(role).await
    }

    /// Every device process label, in start order (the lab Internet, FortiAnalyzer, EMS, the
    /// FortiGate, the endpoint processes): the data directories a snapshot holds.
    pub fn device_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = ["internet", "fortianalyzer", "ems", "fortigate"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(self.endpoints.iter().map(|p| p.label.clone()));
        v
    }

    /// Saves the whole lab as snapshot `name` (`<data-dir>/snapshots/NAME/`, replacing one of
    /// the same name): every device's state and the lab time, taken as a consistent cut
    /// **in place** — nothing restarts, consoles and sessions stay open. The links between
    /// the devices are held (loopback mode), every device writes its state into the snapshot
    /// under its own locks (`POST /_lab/snapshot`, senders before their receivers), then the
    /// links go on; see [`crate::snapshot`].
    pub async fn snapshot_save(
        &mut self,
        name: &str,
    ) -> anyhow::Result<crate::snapshot::SnapshotInfo> {
        let started = std::time::Instant::now();
        crate::snapshot::validate_name(name)?;
        let labels = self.device_labels();
        let tmp = crate::snapshot::begin_snapshot(&self.dir, name)?;
        // Pause: nothing passes between the devices from here to the release.
        self.links.hold_all();
        let cut_ms = self.clock.now_ns() / 1_000_000;
        let t_pause = started.elapsed();
        let saved = self.save_devices(&tmp).await;
        self.links.release_all();
        let t_save = started.elapsed();
        let mut info = crate::snapshot::SnapshotInfo {
            name: name.to_string(),
            lab: self.def.lab.name.clone(),
            seed: self.seed,
            lab_time_ms: cut_ms,
            lab_time: self.clock.display(cut_ms.saturating_mul(1_000_000)),
            saved_at_ms: real_now_ms(),
            devices: Vec::new(),
            bytes: 0,
            elapsed_ms: 0,
            phases_ms: Default::default(),
        };
        let finished = saved.and_then(|()| {
            crate::snapshot::finish_snapshot(&self.dir, &tmp, &labels, &mut info)
                .map_err(anyhow::Error::from)
        });
        if let Err(e) = finished {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context("saving the snapshot"));
        }
        info.elapsed_ms = started.elapsed().as_millis() as u64;
        let ms = |d: Duration| d.as_millis() as u64;
        info.phases_ms = [
            ("pause", ms(t_pause)),
            ("save", ms(t_save.saturating_sub(t_pause))),
            ("finish", ms(started.elapsed().saturating_sub(t_save))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        tracing::info!(name, lab_time = %info.lab_time, bytes = info.bytes, ms = info.elapsed_ms, phases = ?info.phases_ms, "lab snapshot saved");
        Ok(info)
    }

    /// Every device writes its state into `tmp/<label>/` (`POST /_lab/snapshot` on its lab
    /// surface; the lab Internet keeps nothing at run time, so its data directory is copied):
    /// the endpoint processes first, then the FortiGate, then FortiAnalyzer and EMS, so every
    /// sender's state is taken before its receivers' — with the links held that order does
    /// not matter; without (namespaces mode) it keeps the log channels consistent: a line is
    /// either still queued at its sender or stored by its receiver.
    async fn save_devices(&self, tmp: &Path) -> anyhow::Result<()> {
        let client = crate::clients::http_client(&self.ca, false, Some(&self.lab_token))?;
        let sources: std::collections::HashMap<String, String> =
            self.event_sources().into_iter().collect();
        let endpoints: Vec<String> = self.endpoints.iter().map(|p| p.label.clone()).collect();
        let rounds: [Vec<String>; 3] = [
            endpoints,
            vec!["fortigate".into()],
            vec!["fortianalyzer".into(), "ems".into()],
        ];
        for round in rounds {
            let calls = round.iter().map(|label| {
                let client = client.clone();
                let base = sources.get(label).cloned();
                let dir = tmp.join(label);
                async move {
                    let base = base.ok_or_else(|| anyhow!("{label}: not running"))?;
                    let url = format!("{base}{}", fortilab_core::snapshot::ROUTE);
                    let r = client
                        .post(&url)
                        .json(&json!({"dir": dir.display().to_string()}))
                        .send()
                        .await
                        .map_err(|e| anyhow!("{label}: POST {url}: {e}"))?;
                    let status = r.status();
                    if !status.is_success() {
                        let body = r.text().await.unwrap_or_default();
                        anyhow::bail!("{label}: POST {url}: HTTP {status}: {body}");
                    }
                    Ok::<(), anyhow::Error>(())
                }
            });
            let errors: Vec<String> = futures::future::join_all(calls)
                .await
                .into_iter()
                .filter_map(|r| r.err().map(|e| format!("{e:#}")))
                .collect();
            anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
        }
        let inet = self.dir.join("internet");
        if inet.is_dir() {
            crate::snapshot::copy_tree(&inet, &tmp.join("internet"))?;
        } else {
            std::fs::create_dir_all(tmp.join("internet"))?;
        }
        Ok(())
    }

    /// Restores snapshot `name` into the running lab: every device's state is replaced by the
    /// snapshot's and the lab clock continues from the snapshot's lab time. The lab keeps its
    /// ports, CA, credentials, lab maps and link conditions.
    pub async fn snapshot_restore(
        &mut self,
        name: &str,
    ) -> anyhow::Result<crate::snapshot::SnapshotInfo> {
        let started = std::time::Instant::now();
        let labels = self.device_labels();
        let mut info = crate::snapshot::read_snapshot(
            &self.dir,
            name,
            &self.def.lab.name,
            self.seed,
            &labels,
        )?;
        let (_, quiesce) = self.quiesce().await;
        let t_quiesce = started.elapsed();
        let replaced = match &quiesce {
            Ok(()) => crate::snapshot::restore_dirs(&self.dir, name, &labels)
                .map(|_| ())
                .map_err(anyhow::Error::from),
            Err(e) => Err(anyhow!("{e:#}")),
        };
        // Without the snapshot's files the lab restarts with its own state, as it was.
        let resume_at = if replaced.is_ok() {
            info.lab_time_ms
        } else {
            self.clock.now_ns() / 1_000_000
        };
        let t_copy = started.elapsed();
        let resumed = self.resume(resume_at).await;
        replaced.context("restoring the snapshot")?;
        resumed.context("restarting the lab after the restore")?;
        info.elapsed_ms = started.elapsed().as_millis() as u64;
        info.phases_ms = phases(t_quiesce, t_copy, started.elapsed());
        tracing::info!(name, lab_time = %info.lab_time, ms = info.elapsed_ms, phases = ?info.phases_ms, "lab snapshot restored");
        Ok(info)
    }

    /// Stops every device for a restore (SIGTERM, drain) in dependency order — endpoints, the
    /// FortiGate, then FortiAnalyzer, EMS and the lab Internet — so nothing is in flight
    /// between two stopped devices. Returns the lab time once all have stopped and whether
    /// every device stopped cleanly.
    async fn quiesce(&mut self) -> (i64, anyhow::Result<()>) {
        let mut problems = Vec::new();
        let grace = Duration::from_secs(10);
        let mut bad = Vec::new();
        let stops = self.endpoints.iter_mut().map(|p| async move {
            let ran = p.pid().is_some();
            (p.label.clone(), ran, p.stop(grace).await)
        });
        let mut results = futures::future::join_all(stops).await;
        let ran = self.fortigate.pid().is_some();
        results.push(("fortigate".into(), ran, self.fortigate.stop(grace).await));
        let (faz_ran, ems_ran, inet_ran) = (
            self.faz.pid().is_some(),
            self.ems.pid().is_some(),
            self.internet.pid().is_some(),
        );
        let (f, e, i) = tokio::join!(
            self.faz.stop(grace),
            self.ems.stop(grace),
            self.internet.stop(grace)
        );
        results.push(("fortianalyzer".into(), faz_ran, f));
        results.push(("ems".into(), ems_ran, e));
        results.push(("internet".into(), inet_ran, i));
        for (label, ran, code) in results {
            if ran && code != Some(0) {
                bad.push(label);
            }
        }
        if !bad.is_empty() {
            problems.push(format!("did not stop cleanly: {}", bad.join(", ")));
        }
        let cut = self.clock.now_ns() / 1_000_000;
        let r = if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("quiescing the lab: {}", problems.join("; ")))
        };
        (cut, r)
    }

    /// Starts every device again on its former ports with the lab clock at `lab_ms` now (in
    /// the start order of [`Lab::start`]), then waits for the fabric to settle.
    async fn resume(&mut self, lab_ms: i64) -> anyhow::Result<()> {
        let clock = LabClock::new(
            lab_ms,
            real_now_ms(),
            self.clock.speed(),
            self.clock.tz_minutes(),
        );
        self.clock = clock;
        for label in self.device_labels() {
            crate::snapshot::set_clock_args(&mut self.proc_by_label(&label).args, &clock);
        }
        for label in ["internet", "fortianalyzer", "ems"] {
            let pins = self.pins(label);
            self.proc_by_label(label).spawn(&pins)?;
        }
        let (a, b, c) = tokio::join!(
            self.internet.wait_ready(READY_TIMEOUT),
            self.faz.wait_ready(READY_TIMEOUT),
            self.ems.wait_ready(READY_TIMEOUT)
        );
        a?;
        b?;
        c?;
        // Every address is pinned and every map already written: the endpoints need not wait
        // for the FortiGate (they reach it only to browse), so both start together.
        let pins = self.pins("fortigate");
        self.fortigate.spawn(&pins)?;
        for i in 0..self.endpoints.len() {
            let pins = self.pins(&self.endpoints[i].label);
            self.endpoints[i].spawn(&pins)?;
        }
        self.fortigate.wait_ready(READY_TIMEOUT).await?;
        for ep in &mut self.endpoints {
            ep.wait_ready(READY_TIMEOUT).await?;
        }
        let within = self.settle_timeout();
        let down = self.settle(within).await;
        if !down.is_empty() {
            tracing::warn!(
                "the lab restarted, but these Security Fabric links were not up within {within:?}: {}",
                down.join("; ")
            );
        }
        Ok(())
    }

    /// Process ids of every running device.
    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = [&self.internet, &self.faz, &self.ems, &self.fortigate]
            .iter()
            .filter_map(|p| p.pid())
            .collect();
        v.extend(self.endpoints.iter().filter_map(|p| p.pid()));
        v
    }

    pub fn map_path(&self) -> &Path {
        &self.map_path
    }
}

/// A snapshot operation's phases from the elapsed times at their ends.
fn phases(
    quiesce: Duration,
    copy: Duration,
    total: Duration,
) -> std::collections::BTreeMap<String, u64> {
    let ms = |d: Duration| d.as_millis() as u64;
    [
        ("quiesce", ms(quiesce)),
        ("copy", ms(copy.saturating_sub(quiesce))),
        ("restart", ms(total.saturating_sub(copy))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Real time now, Unix milliseconds.
fn real_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// [`Lab::settle`] for any lab known by its lab surfaces (`sources` as from
/// [`Lab::event_sources`]): polls the FortiGate's and every endpoint process's `/_lab/health`
/// until the Security Fabric links are up or `timeout` passes; returns those still down.
pub async fn settle_sources(
    client: &reqwest::Client,
    sources: &[(String, String)],
    ems_authorizes: bool,
    timeout: Duration,
) -> Vec<String> {
    let started = std::time::Instant::now();
    let deadline = started + timeout;
    loop {
        let mut down = Vec::new();
        for (label, base) in sources {
            let fgt = label == "fortigate";
            if !fgt && !label.starts_with("endpoints") {
                continue;
            }
            let url = format!("{base}/_lab/health");
            let h: Value = match client.get(&url).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(e) => {
                    down.push(format!("{label}: GET {url}: {e}"));
                    continue;
                }
            };
            if fgt {
                down.extend(fortigate_links_down(&h, ems_authorizes));
            } else {
                let all = h["endpoints"].as_u64().unwrap_or(0);
                let linked = h["linked"].as_u64().unwrap_or(0);
                if linked < all {
                    down.push(format!(
                        "{label}: {linked} of {all} endpoints registered with EMS and uploading to FortiAnalyzer"
                    ));
                }
            }
        }
        if down.is_empty() || std::time::Instant::now() >= deadline {
            tracing::debug!(
                waited_ms = started.elapsed().as_millis() as u64,
                down = down.len(),
                "fabric links checked"
            );
            return down;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The device part of the ready report of ARCHITECTURE.md section 7, from each device's own
/// ready report (the orchestrator adds the lab's keys: CA, token, clock, ...).
pub fn assemble_report(
    fortigate: &Value,
    faz: &Value,
    ems: &Value,
    internet: &Value,
    endpoint_procs: &[&Value],
) -> Value {
    let fgt = unwrap_ready(fortigate, "fortigate");
    let faz = unwrap_ready(faz, "fortianalyzer");
    let ems = unwrap_ready(ems, "ems");
    let internet = unwrap_ready(internet, "internet");
    let mut endpoints = Vec::new();
    for p in endpoint_procs {
        if let Some(a) = unwrap_ready(p, "endpoints").as_array() {
            endpoints.extend(a.iter().cloned());
        }
    }
    let pick = |v: &Value, keys: &[&str]| -> Value {
        let mut m = serde_json::Map::new();
        for k in keys {
            if let Some(x) = v.get(*k) {
                m.insert(k.to_string(), x.clone());
            }
        }
        Value::Object(m)
    };
    json!({
        "fortigate": pick(fgt, &["name", "serial", "version", "api", "api_token", "admin", "proxy", "ssh"]),
        "fortianalyzer": pick(faz, &["name", "serial", "version", "api", "api_token", "admin", "ssh", "log_channel", "syslog"]),
        "ems": pick(ems, &["name", "serial", "version", "api", "admin", "telemetry"]),
        "endpoints": endpoints,
        "internet": {"sites": internet.get("sites").cloned().unwrap_or(json!([])), "control": internet.get("control").cloned().unwrap_or(Value::Null)},
    })
}

/// Ready-report keys that name a listener (a URL or `ip:port`).
const LISTENER_KEYS: &[&str] = &[
    "api",
    "proxy",
    "ssh",
    "log_channel",
    "syslog",
    "telemetry",
    "control",
    "dashboard",
    "http",
    "https",
];

/// The listeners of a ready report that are not on loopback (`"fortigate.api 0.0.0.0:443"`):
/// every lab listener is on loopback by default, and anything else exposes a lab surface to the
/// network, so `fortilab up` warns about each.
pub fn non_loopback_listeners(report: &Value) -> Vec<String> {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if let (true, Some(s)) = (LISTENER_KEYS.contains(&k.as_str()), x.as_str()) {
                        let addr = url_socket(&json!(s)).map(|a| a.ip()).or_else(|| {
                            let rest = s.split("://").nth(1).unwrap_or(s);
                            let host = rest.split('/').next()?.rsplit_once(':')?.0;
                            host.trim_matches(['[', ']']).parse::<IpAddr>().ok()
                        });
                        match addr {
                            Some(ip) if ip.is_loopback() => {}
                            Some(_) => out.push(format!("{p} {s}")),
                            None => {
                                // A host name: only `localhost` is known to be loopback.
                                let rest = s.split("://").nth(1).unwrap_or(s);
                                let host = rest.split(['/', ':']).next().unwrap_or("");
                                if !host.eq_ignore_ascii_case("localhost") {
                                    out.push(format!("{p} {s}"));
                                }
                            }
                        }
                    } else {
                        walk(x, &p, out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(report, "", &mut out);
    out
}

/// The FortiGate's fabric links that are down, from its `/_lab/health` answer. EMS
/// connectors count only when EMS authorizes FortiGates itself (`ems.auto_authorize`): a lab
/// that leaves the authorization to the user starts with the connector waiting for it.
pub(crate) fn fortigate_links_down(health: &Value, ems_authorizes: bool) -> Vec<String> {
    let mut down = Vec::new();
    let links = &health["links"];
    if links.is_null() {
        down.push("fortigate: no links in /_lab/health".to_string());
        return down;
    }
    if let Some(faz) = links["fortianalyzer"].as_object() {
        if faz.get("connected") != Some(&Value::Bool(true)) {
            down.push("fortigate: log channel to FortiAnalyzer".to_string());
        }
    }
    if ems_authorizes {
        for e in links["ems"].as_array().into_iter().flatten() {
            if e["connected"] != Value::Bool(true) {
                down.push(format!(
                    "fortigate: EMS connector {} ({})",
                    e["name"].as_str().unwrap_or("?"),
                    e["status"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    down
}

/// The lab map file a device process is started with: the FortiGate and the endpoint
/// processes get their own (their peers' services through the link relays), the others the
/// direct `labmap.json`.
pub fn device_map_path(dir: &Path, label: &str) -> PathBuf {
    if label == "fortigate" || label.starts_with("endpoints") {
        dir.join(format!("labmap-{label}.json"))
    } else {
        dir.join("labmap.json")
    }
}

fn write_map(path: &Path, map: &LabMap) -> anyhow::Result<()> {
    fortilab_core::ready::write_ready(path, &serde_json::to_value(map)?)?;
    Ok(())
}

/// sim-internet configuration (`[[site]]` tables added to its built-in set) for the lab's site
/// additions; `None` when the lab adds none.
pub(crate) fn internet_config(def: &LabDef) -> Option<String> {
    if def.internet.sites.is_empty() {
        return None;
    }
    let mut sites = Vec::new();
    for s in &def.internet.sites {
        let mut hosts = vec![toml::Value::String(s.host.clone())];
        hosts.extend(s.aliases.iter().cloned().map(toml::Value::String));
        let mut t = toml::Table::new();
        t.insert("name".into(), toml::Value::String(s.host.clone()));
        t.insert("hosts".into(), toml::Value::Array(hosts));
        t.insert("ip".into(), toml::Value::String(s.ip.to_string()));
        t.insert("category".into(), toml::Value::Integer(s.category as i64));
        let pages: Vec<toml::Value> = s
            .pages
            .iter()
            .map(|(path, body)| {
                let mut p = toml::Table::new();
                p.insert("path".into(), toml::Value::String(path.clone()));
                p.insert("body".into(), toml::Value::String(body.clone()));
                toml::Value::Table(p)
            })
            .collect();
        if !pages.is_empty() {
            t.insert("page".into(), toml::Value::Array(pages));
        }
        sites.push(toml::Value::Table(t));
    }
    let mut root = toml::Table::new();
    root.insert("site".into(), toml::Value::Array(sites));
    toml::to_string(&root).ok()
}

pub(crate) fn faz_config(def: &LabDef) -> String {
    let t = &def.fortianalyzer.tidb;
    let strings =
        |v: &[String]| toml::Value::Array(v.iter().cloned().map(toml::Value::String).collect());
    let mut tidb = toml::Table::new();
    tidb.insert("black_ip".into(), strings(&t.black_ips));
    tidb.insert("black_domain".into(), strings(&t.black_domains));
    tidb.insert("black_url".into(), strings(&t.black_urls));
    let mut sus = toml::Table::new();
    for s in &t.suspicious_urls {
        sus.insert(s.url.clone(), toml::Value::Integer(s.score as i64));
    }
    tidb.insert("suspicious_url".into(), toml::Value::Table(sus));
    let mut root = toml::Table::new();
    root.insert(
        "hostname".into(),
        toml::Value::String(def.fortianalyzer.name.clone()),
    );
    root.insert(
        "version".into(),
        toml::Value::String(def.fortianalyzer.version.clone()),
    );
    root.insert("tidb".into(), toml::Value::Table(tidb));
    toml::to_string(&root).unwrap_or_default()
}

pub(crate) fn ems_config(def: &LabDef) -> String {
    #[derive(serde::Serialize)]
    struct Profile {
        faz: String,
    }
    #[derive(serde::Serialize)]
    struct Cfg<'a> {
        hostname: &'a str,
        version: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        ka_interval: Option<f64>,
        profile: Profile,
    }
    toml::to_string(&Cfg {
        hostname: &def.ems.name,
        version: &def.ems.version,
        ka_interval: def.ems.ka_interval,
        profile: Profile {
            faz: SocketAddr::new(IpAddr::V4(def.fortianalyzer.ip), 514).to_string(),
        },
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settle_wait_grows_with_the_endpoints() {
        assert_eq!(settle_timeout(1), Duration::from_millis(15_015));
        assert_eq!(settle_timeout(1000), Duration::from_secs(30));
    }

    #[test]
    fn a_url_gets_the_relays_port() {
        assert_eq!(with_port("https://127.0.0.1:7/", 9), "https://127.0.0.1:9/");
        assert_eq!(with_port("https://[::1]:7/x/y", 9), "https://[::1]:9/x/y");
        assert_eq!(with_port("http://127.0.0.1:7", 10), "http://127.0.0.1:10");
    }

    #[test]
    fn fortigate_links_down_names_each_link_that_is_not_up() {
        let h = json!({"links": {"fortianalyzer": {"connected": false},
                                 "ems": [{"name": "EMS-LAB", "connected": false, "status": "waiting for authorization"},
                                         {"name": "ok", "connected": true}]}});
        assert_eq!(
            fortigate_links_down(&h, true),
            vec![
                "fortigate: log channel to FortiAnalyzer".to_string(),
                "fortigate: EMS connector EMS-LAB (waiting for authorization)".to_string()
            ]
        );
        // EMS left to authorize the FortiGate by hand: its connector is not waited for.
        assert_eq!(fortigate_links_down(&h, false).len(), 1);
        let up =
            json!({"links": {"fortianalyzer": null, "ems": [{"name": "ok", "connected": true}]}});
        assert!(fortigate_links_down(&up, true).is_empty());
        assert_eq!(fortigate_links_down(&json!({"ok": true}), true).len(), 1);
    }

    #[test]
    fn listeners_off_loopback_are_named() {
        let r = json!({"dashboard": "http://127.0.0.1:80/",
                       "fortigate": {"api": "https://0.0.0.0:443", "proxy": "127.0.0.1:8080",
                                     "ssh": null, "name": "FGT"},
                       "endpoints": [{"control": "https://192.168.1.5:9/endpoints/PC-52"}],
                       "internet": {"control": "https://localhost:7/"},
                       "fortianalyzer": {"api": "https://[::1]:443"}});
        let mut found = non_loopback_listeners(&r);
        found.sort();
        assert_eq!(
            found,
            vec![
                "endpoints[0].control https://192.168.1.5:9/endpoints/PC-52".to_string(),
                "fortigate.api https://0.0.0.0:443".to_string()
            ]
        );
    }

    #[test]
    fn loopback_mapping_and_url_parsing() {
        assert_eq!(
            loopback_for(Ipv4Addr::new(10, 115, 2, 52)),
            Ipv4Addr::new(127, 115, 2, 52)
        );
        assert_eq!(
            url_socket(&json!("https://127.0.0.1:4443/x")),
            Some("127.0.0.1:4443".parse().unwrap())
        );
        assert_eq!(
            url_socket(&json!("127.0.0.1:514")),
            Some("127.0.0.1:514".parse().unwrap())
        );
        let r = json!({"fortigate": {"name": "FGT-LAB"}});
        assert_eq!(unwrap_ready(&r, "fortigate")["name"], "FGT-LAB");
        let flat = json!({"name": "FAZ"});
        assert_eq!(unwrap_ready(&flat, "fortianalyzer")["name"], "FAZ");
    }
}
