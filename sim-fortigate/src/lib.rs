//! # sim-fortigate
//!
//! A FortiGate twin for the Compromised Host Quarantine lab.
//!
//! ## Layout
//! - [`config`]: the FortiOS configuration engine (pure code): CLI parser, versioned schema,
//!   factory defaults, `show` serializer, REST JSON forms and the [`config::ConfigStore`].
//! - [`api`]: the FortiOS REST API on HTTPS (tokens, GUI sessions, CMDB, monitor, logs) and the
//!   lab surface (`/_lab/health`, `/_lab/events`, `/_lab/config`).
//! - [`device`]: the shared [`device::Device`] state: identity, configuration, events, logs,
//!   banned IPs, automation queue, fabric status providers. Further modules (data plane,
//!   automation engine, log forwarding) take an `Arc<Device>` from [`Running::device`].
//! - [`logs`]: FortiOS event logs (memory ring + broadcast).
//! - [`cli`]: the `sim-fortigate` binary.

pub mod api;
pub mod automation;
pub mod cli;
pub mod config;
pub mod console;
pub mod dataplane;
pub mod device;
pub mod forward;
pub mod labstate;
pub mod logs;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use fortilab_core::secrets::Secrets;
use fortilab_core::tls::{self, ClientAuth};
pub use fortilab_core::DeviceEnv;
use fortilab_core::EventKind;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use config::{ConfigError, ConfigStore, FosVersion, Origin, Warning};
use device::{Device, CONFIG_FILE};

/// The lab api-user created at first boot.
pub const LAB_API_USER: &str = "fortilab";
/// The admin account.
pub const ADMIN_USER: &str = "admin";

/// A configuration text and the name used in messages.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub name: String,
    pub text: String,
}

/// What the FortiGate starts with (the lab it runs in is the [`DeviceEnv`]).
#[derive(Debug, Clone)]
pub struct FortiGateConfig {
    pub version: FosVersion,
    /// `--config`: applied on top of the factory configuration at first boot.
    pub config: Option<ConfigSource>,
    /// Warnings in `--config` are errors.
    pub strict: bool,
    /// `--name`: hostname override.
    pub name: Option<String>,
    /// `--lab-ip`: management address (certificate SAN, log `dstip`).
    pub lab_ip: Option<IpAddr>,
    /// `--internet`: the lab Internet's control URL (`https://host:port`), for lab DNS and
    /// FortiGuard ratings. Without it only IP-literal hosts resolve and every site is Unrated.
    pub internet: Option<String>,
}

impl FortiGateConfig {
    /// FortiOS `version`, factory configuration, hostname = serial, no lab Internet.
    pub fn new(version: FosVersion) -> Self {
        Self {
            version,
            config: None,
            strict: false,
            name: None,
            lab_ip: None,
            internet: None,
        }
    }
}

/// The listeners the device serves on (bound by the caller; port 0 in tests). The
/// environment's data directory holds `fgt.conf` and `secrets.json` (`None`: nothing is
/// persisted); the API token and admin password at first boot come from its secrets (labels
/// `fortigate/api-token`, `fortigate/admin-password`).
#[derive(Debug)]
pub struct Listeners {
    /// The REST API (HTTPS).
    pub api: TcpListener,
    /// The explicit proxy standing for the port3 side (the lab maps 10.115.2.1:8080 to it).
    pub proxy: Option<TcpListener>,
    /// The transparent proxy (namespaces mode: connections redirected here keep their
    /// original destination, read back with `SO_ORIGINAL_DST`).
    pub transparent: Option<TcpListener>,
    /// The SSH console (FortiOS CLI; host key kept in the data directory, which it needs).
    pub ssh: Option<TcpListener>,
}

impl Listeners {
    /// Just the API (no proxy, no console).
    pub fn api_only(api: TcpListener) -> Self {
        Self {
            api,
            proxy: None,
            transparent: None,
            ssh: None,
        }
    }
}

/// Why the FortiGate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad setting given with the configuration (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

/// A running FortiGate.
pub struct Running {
    pub api_addr: SocketAddr,
    pub device: Arc<Device>,
    pub api_token: String,
    pub admin_user: String,
    pub admin_password: String,
    /// Warnings from loading the configuration.
    pub warnings: Vec<Warning>,
    /// The CA certificate (PEM) clients verify the API against.
    pub ca_pem: String,
    /// The data plane (policy lookup, proxy) and the log forwarder.
    pub dataplane: Arc<dataplane::DataPlane>,
    pub forwarder: Arc<forward::Forwarder>,
    /// The automation engine (`autod`).
    pub automation: Arc<automation::Engine>,
    /// The explicit proxy's address (when [`Listeners::proxy`] was given).
    pub proxy_addr: Option<SocketAddr>,
    /// The transparent proxy's address (when [`Listeners::transparent`] was given).
    pub transparent_addr: Option<SocketAddr>,
    /// The SSH console (when [`Listeners::ssh`] was given).
    pub ssh: Option<fortilab_core::ssh_console::SshConsole>,
    task: JoinHandle<()>,
    listener_task: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("api_addr", &self.api_addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The ready report (ARCHITECTURE.md §7 `fortigate` object, plus `ca_cert`).
    pub fn ready_json(&self, ca_cert: Option<&Path>) -> serde_json::Value {
        serde_json::json!({
            "name": self.device.hostname(),
            "serial": self.device.serial,
            "version": self.device.version.to_string(),
            "api": format!("https://{}", self.api_addr),
            "api_token": self.api_token,
            "admin": {"user": self.admin_user, "password": self.admin_password},
            "proxy": self.proxy_addr.map(|a| a.to_string()),
            "transparent": self.transparent_addr.map(|a| a.to_string()),
            "ssh": self.ssh.as_ref().map(|s| s.local_addr.to_string()),
            "ca_cert": ca_cert.map(|p| p.display().to_string()),
            "lab_token": self.device.lab_token().map(|t| t.as_str().to_string()),
        })
    }

    /// Waits until the server has drained after shutdown, then saves the configuration.
    pub async fn wait(self) -> anyhow::Result<()> {
        let r = self.task.await;
        self.listener_task.abort();
        if let Err(e) = self.device.persist() {
            tracing::warn!(error = %e, "could not save the configuration at shutdown");
        }
        r.map_err(|e| anyhow::anyhow!("API server task: {e}"))
    }
}

struct Credentials {
    api_token: String,
    admin_password: String,
}

fn credentials(secrets: &Secrets) -> Result<Credentials, StartError> {
    let get = |label: &str, n: usize| {
        secrets
            .credential(label, n)
            .map_err(|e| StartError::Io(e.to_string()))
    };
    Ok(Credentials {
        api_token: get("fortigate/api-token", 30)?,
        admin_password: get("fortigate/admin-password", 16)?,
    })
}

/// The device serial of a seed (`FGVM01TM` + 8).
pub fn serial_for(seed: u64) -> String {
    fortilab_core::rng::serial(
        &mut fortilab_core::rng::stream(seed, "fortigate/serial"),
        "FGVM01TM",
    )
}

/// Loads the configuration (saved one first, else factory + `--config`) and bootstraps the lab
/// accounts. Pure apart from reading/writing `data_dir`.
pub fn load_config(
    opts: &FortiGateConfig,
    env: &DeviceEnv,
    serial: &str,
    secrets_token: &str,
    admin_password: &str,
) -> Result<(ConfigStore, Vec<Warning>), StartError> {
    let version = opts.version;
    let mut rng = ChaCha8Rng::seed_from_u64(env.seed ^ 0xc0f1_9000);
    let saved = env
        .data_dir
        .as_ref()
        .map(|d| d.join(CONFIG_FILE))
        .filter(|p| p.exists());
    let (cfg, warnings) = match saved {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| StartError::Io(format!("{}: {e}", p.display())))?;
            let (cfg, a) = config::parse_config(
                &config::Config::default(),
                &text,
                &p.display().to_string(),
                version,
                false,
                &mut rng,
            )?;
            (cfg, a.warnings)
        }
        None => {
            let base = config::factory(version, serial, &mut rng);
            match &opts.config {
                Some(src) => {
                    let (cfg, a) = config::parse_config(
                        &base,
                        &src.text,
                        &src.name,
                        version,
                        opts.strict,
                        &mut rng,
                    )?;
                    (cfg, a.warnings)
                }
                None => (base, Vec::new()),
            }
        }
    };
    let store = ConfigStore::new(cfg, version, env.seed, serial);
    let mut boot = String::new();
    if let Some(n) = &opts.name {
        if store.hostname() != *n {
            boot.push_str(&format!(
                "config system global\nset hostname {}\nend\n",
                config::lexer::quote(n)
            ));
        }
    }
    if !store.exists("system api-user", LAB_API_USER) {
        boot.push_str(&format!(
            "config system api-user\nedit {LAB_API_USER}\nset comments \"fortilab lab automation\"\nset api-key {}\nset accprofile super_admin\nset vdom root\nnext\nend\n",
            config::lexer::quote(secrets_token)
        ));
    }
    let admin_pw_empty = store.with(|config| {
        config
            .entry("system admin", ADMIN_USER)
            .map(|e| e.scalar("password").is_none())
    });
    match admin_pw_empty {
        Some(true) => boot.push_str(&format!(
            "config system admin\nedit {ADMIN_USER}\nset password {}\nnext\nend\n",
            config::lexer::quote(admin_password)
        )),
        Some(false) => {}
        None => boot.push_str(&format!(
            "config system admin\nedit {ADMIN_USER}\nset accprofile super_admin\nset vdom root\nset password {}\nnext\nend\n",
            config::lexer::quote(admin_password)
        )),
    }
    if !boot.is_empty() {
        store.apply_cli(&boot, "<bootstrap>", false, &Origin::system())?;
    }
    Ok((store, warnings))
}

/// Starts the FortiGate on the given listeners; it serves until `shutdown` is cancelled.
pub async fn start(
    opts: FortiGateConfig,
    env: DeviceEnv,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let io = |e: &dyn std::fmt::Display| StartError::Io(e.to_string());
    if let Some(u) = &opts.internet {
        dataplane::internet::parse_base(u).ok_or_else(|| {
            StartError::Usage(format!("--internet {u}: expected https://host:port"))
        })?;
    }
    let ssh_key = match (&listeners.ssh, &env.data_dir) {
        (Some(_), Some(d)) => Some(d.join(fortilab_core::ssh_console::HOST_KEY_FILE)),
        (Some(_), None) => {
            return Err(StartError::Io(
                "the SSH console needs a data directory (its host key)".into(),
            ))
        }
        (None, _) => None,
    };
    let serial = serial_for(env.seed);
    let secrets = credentials(&env.secrets)?;
    let (store, warnings) = load_config(
        &opts,
        &env,
        &serial,
        &secrets.api_token,
        &secrets.admin_password,
    )?;
    // A saved configuration means this start is a reboot (automation `reboot` triggers).
    let rebooted = env
        .data_dir
        .as_ref()
        .is_some_and(|d| d.join(CONFIG_FILE).exists());
    let device = Arc::new(Device::new(
        serial.clone(),
        opts.version,
        env.seed,
        env.clock,
        store,
        env.lab_map.clone(),
        opts.lab_ip,
        env.data_dir.clone(),
    ));
    device
        .persist()
        .map_err(|e| StartError::Io(format!("saving the configuration: {e}")))?;
    // A lab snapshot's in-memory state (saved at the last shutdown the orchestrator asked for):
    // the memory log goes in before any consumer registers with the writer.
    let saved_state = match &env.data_dir {
        Some(d) => labstate::LabState::take(d).map_err(StartError::Io)?,
        None => None,
    };
    if let Some(st) = &saved_state {
        device.logs.import(&st.logs);
        device.banned.restore(st.banned.clone());
        device.automation.restore_stats(st.stitch_stats.clone());
    }
    device.events.close_on(&shutdown);
    let sup = device.supervisor.clone();
    let http = env.http.clone().with_supervisor(sup.clone());
    let _ = device.http.set(http.clone());

    // React to every committed change (event log 0100044547, lab event, saved config).
    // The first subscription is taken now, so no change committed before the task first runs
    // is missed; a restarted listener subscribes again.
    let dev = device.clone();
    let mut first_rx = Some(device.config.subscribe());
    let listener_task = sup.spawn("config changes", shutdown.clone(), move || {
        let mut rx = first_rx.take().unwrap_or_else(|| dev.config.subscribe());
        let dev2 = dev.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        dev2.on_change(&ev);
                        if rx.is_empty() {
                            if let Err(e) = dev2.persist() {
                                tracing::warn!(error = %e, "could not save the configuration");
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "configuration change listener lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    });

    let mut sans: Vec<String> = Vec::new();
    if let Some(ip) = opts.lab_ip {
        sans.push(ip.to_string());
    }
    let cert = env
        .ca
        .issue(&serial, &sans)
        .map_err(|e| StartError::Io(e.to_string()))?;
    let _ = device.tls.set(device::TlsIdentity {
        cert: cert.clone(),
        ca_pem: env.ca.cert_pem().to_string(),
    });
    let tls_cfg = tls::server_config(&env.ca, &cert, ClientAuth::None, &[b"h2", b"http/1.1"])
        .map_err(|e| StartError::Io(e.to_string()))?;
    // The automation engine subscribes to notifications, logs and changes before any flow.
    // FortiAnalyzer notifications travel from the log forwarder to the engine through a
    // bounded queue: the forwarder acknowledges one only once it is queued, and waits while
    // the queue is full (back-pressure to the FortiAnalyzer), so none is lost.
    let (notify_tx, notify_rx) = tokio::sync::mpsc::channel(fortilab_core::logchan::NOTIFY_QUEUE);
    let automation = automation::start(
        device.clone(),
        // A lab snapshot's restart resumes the saved moment: no reboot happened there.
        automation::StartOptions {
            rebooted: rebooted && saved_state.is_none(),
        },
        notify_rx,
        shutdown.clone(),
    );
    if let Some(st) = saved_state {
        automation.restore(st.compromised_hosts, st.runs);
        tracing::info!("restored the in-memory state of a lab snapshot");
    }
    // Data plane and log forwarding (client TLS: lab CA + this certificate, CN = serial).
    let client_tls =
        tls::client_config(&env.ca, Some(&cert)).map_err(|e| StartError::Io(e.to_string()))?;
    let forwarder = forward::Forwarder::start(
        device.clone(),
        client_tls.clone(),
        notify_tx,
        shutdown.clone(),
    );
    let dataplane = dataplane::DataPlane::new(device.clone(), client_tls, shutdown.clone());
    let api_addr = listeners
        .api
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let api = api::Api::new(device.clone(), api_addr.port());
    api.attach(api::Parts {
        dataplane: dataplane.clone(),
        forwarder: forwarder.clone(),
        automation: automation.clone(),
    });
    let app = api::router(api)
        .merge(dataplane.lab_router())
        .merge(forwarder.lab_router())
        .merge(automation::lab_router(automation.clone()))
        .merge(labstate::lab_router(labstate::LabParts {
            device: device.clone(),
            automation: automation.clone(),
            forwarder: forwarder.clone(),
        }));
    let task = sup
        .spawn_tcp("api", listeners.api, shutdown.clone(), {
            let shutdown = shutdown.clone();
            move |listener| {
                let (tls_cfg, app, http, stop) =
                    (tls_cfg.clone(), app.clone(), http.clone(), shutdown.clone());
                async move {
                    if let Err(e) =
                        fortilab_core::http::serve_https(listener, tls_cfg, app, http, stop).await
                    {
                        tracing::error!(error = %e, "API server failed");
                    }
                }
            }
        })
        .map_err(|e| io(&e))?;
    device.events.emit(
        EventKind::DeviceReady,
        serde_json::json!({"serial": serial, "version": opts.version.to_string(), "api": format!("https://{api_addr}")}),
    );
    tracing::info!(%api_addr, serial = %serial, version = %opts.version, "FortiGate ready");
    // The lab Internet, the proxy and the console after `device.ready` (the order the
    // binary always had).
    if let Some(url) = &opts.internet {
        dataplane.set_internet(url).await.map_err(StartError::Io)?;
    }
    let proxy_addr = match listeners.proxy {
        Some(l) => Some(dataplane::serve_proxy(&dataplane, l, &shutdown).map_err(|e| io(&e))?),
        None => None,
    };
    let transparent_addr = match listeners.transparent {
        Some(l) => {
            Some(dataplane::serve_transparent(&dataplane, l, &shutdown).map_err(|e| io(&e))?)
        }
        None => None,
    };
    let ssh = match (listeners.ssh, ssh_key) {
        (Some(l), Some(key)) => Some(
            console::serve_ssh(&device, &automation, l, &key, &shutdown)
                .await
                .map_err(|e| StartError::Io(format!("ssh console: {e}")))?,
        ),
        _ => None,
    };
    Ok(Running {
        api_addr,
        device,
        api_token: secrets.api_token,
        admin_user: ADMIN_USER.into(),
        admin_password: secrets.admin_password,
        warnings,
        ca_pem: env.ca.cert_pem().to_string(),
        dataplane,
        forwarder,
        automation,
        proxy_addr,
        transparent_addr,
        ssh,
        task,
        listener_task,
    })
}

#[cfg(test)]
mod no_panic_tests;
