//! The seed lab in one process: every device started on port 0 through its
//! `start(config, env, listeners, shutdown)`, with one lab CA, one lab token and one lab map
//! (built from the bound listeners before any device starts, so the start order only matters
//! for the FortiGate, which asks the lab Internet for its DNS and ratings).
//!
//! What it leaves out of the real lab: the links' relays (faults), the orchestrator's
//! dashboard and timeline, separate processes. Tests of those stay in `tests/e2e`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use fortilab_core::binary::Timing;
use fortilab_core::http::client::HttpsClient;
use fortilab_core::{DeviceEnv, LabMap};
use fortilab_fortigate::config::FosVersion;
use fortilab_fortigate::{ConfigSource, FortiGateConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fixtures::{addr, SEED_FORTIGATE_CONF};

/// Which devices an in-process lab runs, and with what configuration.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub seed: u64,
    pub timing: Timing,
    /// The lab Internet with its default sites.
    pub internet: bool,
    pub faz: Option<fortilab_faz::FazConfig>,
    pub ems: Option<fortilab_ems::EmsConfig>,
    pub fortigate: Option<FortiGateConfig>,
    /// How many endpoints (PC-52, PC-53, ... from 10.115.2.52); 0: none.
    pub endpoints: usize,
    /// Extra lab map entries (lab socket → real socket), e.g. a stand-in for a device left out.
    pub services: Vec<(SocketAddr, SocketAddr)>,
}

impl LabSpec {
    /// The seed lab (`fortilab up` without a lab file): FortiGate 6.4.4 with the seed
    /// configuration, FortiAnalyzer and EMS authorizing it on first contact, PC-52, fast timing.
    pub fn seed_lab() -> Self {
        let mut fortigate = FortiGateConfig::new(FosVersion::V6_4_4);
        fortigate.config = Some(ConfigSource {
            name: "seed-fortigate.conf".into(),
            text: SEED_FORTIGATE_CONF.into(),
        });
        fortigate.name = Some("FGT-LAB".into());
        fortigate.lab_ip = Some(ip(addr::FORTIGATE_MGMT));
        Self {
            seed: 1,
            timing: Timing::Fast,
            internet: true,
            faz: Some(fortilab_faz::FazConfig {
                auto_authorize: true,
                lab_ip: addr::FORTIANALYZER.into(),
                ..Default::default()
            }),
            ems: Some(fortilab_ems::EmsConfig {
                auto_authorize: true,
                faz: Some(format!("{}:514", addr::FORTIANALYZER)),
                log_upload_enabled: true,
                ..fortilab_ems::EmsConfig::for_tests()
            }),
            fortigate: Some(fortigate),
            endpoints: 1,
            services: Vec::new(),
        }
    }

    /// EMS and `endpoints` endpoints only (EMS with `ems`), the endpoints' proxy at
    /// `proxy` (a stand-in).
    pub fn ems_and_endpoints(
        ems: fortilab_ems::EmsConfig,
        endpoints: usize,
        proxy: SocketAddr,
    ) -> Self {
        Self {
            internet: false,
            faz: None,
            ems: Some(ems),
            fortigate: None,
            endpoints,
            services: vec![(proxy_lab(), proxy)],
            ..Self::seed_lab()
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn lab_addr(host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(host), port)
}

/// The endpoints' proxy, lab address (the FortiGate's port3 side).
fn proxy_lab() -> SocketAddr {
    lab_addr(addr::FORTIGATE_LAN, addr::PROXY_PORT)
}

/// The endpoints' source address on loopback, as the orchestrator maps it.
fn loopback_for(ip: Ipv4Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(127, o[1], o[2], o[3])
}

async fn bind() -> std::io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await
}

/// A running in-process lab. Stop it with [`InProcessLab::stop`] (dropping it cancels every
/// device without waiting).
pub struct InProcessLab {
    /// The lab's CA, clock, seed, timing, secrets and lab token (no data directory: each
    /// device has its own under [`InProcessLab::dir`]).
    pub env: DeviceEnv,
    /// The lab map every device uses.
    pub lab_map: LabMap,
    pub internet: Option<fortilab_internet::Running>,
    pub faz: Option<fortilab_faz::Running>,
    pub ems: Option<fortilab_ems::Running>,
    pub fortigate: Option<fortilab_fortigate::Running>,
    pub endpoints: Option<fortilab_endpoint::Running>,
    shutdown: CancellationToken,
    _guard: tokio_util::sync::DropGuard,
    dir: tempfile::TempDir,
}

impl InProcessLab {
    /// Starts the devices of `spec` (ready to serve when this returns).
    pub async fn start(spec: LabSpec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut env = DeviceEnv::for_tests(spec.seed, None)?;
        env.timing = spec.timing;
        let shutdown = CancellationToken::new();

        // Every listener first, so the lab map is complete before any device starts.
        let internet_listeners = if spec.internet {
            Some(fortilab_internet::Listeners {
                http: bind().await?,
                https: bind().await?,
                control: bind().await?,
                dns: None,
            })
        } else {
            None
        };
        let faz_listeners = if spec.faz.is_some() {
            Some(fortilab_faz::Listeners::ephemeral().await?)
        } else {
            None
        };
        let ems_listeners = if spec.ems.is_some() {
            Some(fortilab_ems::Listeners {
                api: bind().await?,
                telemetry: bind().await?,
            })
        } else {
            None
        };
        let fgt_listeners = if spec.fortigate.is_some() {
            Some(fortilab_fortigate::Listeners {
                api: bind().await?,
                proxy: Some(bind().await?),
                transparent: None,
                ssh: Some(bind().await?),
            })
        } else {
            None
        };
        let endpoint_listeners = match spec.endpoints {
            0 => None,
            _ => Some(fortilab_endpoint::Listeners {
                control: bind().await?,
            }),
        };

        let mut map = LabMap::new();
        let sites = fortilab_internet::Sites::defaults();
        if let Some(l) = &internet_listeners {
            for (lab, real) in fortilab_internet::lab_map_entries(
                &sites,
                l.http.local_addr()?,
                l.https.local_addr()?,
            ) {
                map.add_service(lab, real);
            }
        }
        if let Some(l) = &faz_listeners {
            map.add_service(lab_addr(addr::FORTIANALYZER, 514), l.logchan.local_addr()?);
            map.add_service(lab_addr(addr::FORTIANALYZER, 443), l.api.local_addr()?);
            if let Some(s) = &l.syslog_udp {
                map.add_service(lab_addr(addr::FORTIANALYZER, 5514), s.local_addr()?);
            }
        }
        if let Some(l) = &ems_listeners {
            map.add_service(lab_addr(addr::EMS, 443), l.api.local_addr()?);
            map.add_service(lab_addr(addr::EMS, 8013), l.telemetry.local_addr()?);
        }
        if let Some(l) = &fgt_listeners {
            if let Some(p) = &l.proxy {
                map.add_service(proxy_lab(), p.local_addr()?);
            }
            map.add_service(lab_addr(addr::FORTIGATE_MGMT, 443), l.api.local_addr()?);
        }
        let first: Ipv4Addr = addr::FIRST_ENDPOINT.parse()?;
        let identities = match spec.endpoints {
            0 => Vec::new(),
            n => fortilab_endpoint::identity::identities(n, "PC-{n}", "user{n}", first, spec.seed)
                .map_err(anyhow::Error::msg)?,
        };
        for id in &identities {
            map.add_host(IpAddr::V4(id.ip), IpAddr::V4(loopback_for(id.ip)));
        }
        for (lab, real) in &spec.services {
            map.add_service(*lab, *real);
        }
        env.lab_map = map.clone();
        let base: PathBuf = dir.path().to_path_buf();
        let device_env = |label: &str| -> anyhow::Result<DeviceEnv> {
            let d = base.join(label);
            std::fs::create_dir_all(&d)?;
            Ok(env.in_dir(d))
        };

        let mut lab = InProcessLab {
            env: env.clone(),
            lab_map: map,
            internet: None,
            faz: None,
            ems: None,
            fortigate: None,
            endpoints: None,
            _guard: shutdown.clone().drop_guard(),
            shutdown: shutdown.clone(),
            dir,
        };
        if let Some(l) = internet_listeners {
            let cfg = fortilab_internet::InternetConfig { sites };
            lab.internet = Some(
                fortilab_internet::start(cfg, device_env("internet")?, l, shutdown.clone()).await?,
            );
        }
        if let (Some(cfg), Some(l)) = (spec.faz, faz_listeners) {
            lab.faz =
                Some(fortilab_faz::start(cfg, device_env("faz")?, l, shutdown.clone()).await?);
        }
        if let (Some(cfg), Some(l)) = (spec.ems, ems_listeners) {
            lab.ems =
                Some(fortilab_ems::start(cfg, device_env("ems")?, l, shutdown.clone()).await?);
        }
        if let (Some(mut cfg), Some(l)) = (spec.fortigate, fgt_listeners) {
            if let Some(i) = &lab.internet {
                cfg.internet
                    .get_or_insert_with(|| format!("https://{}", i.control));
            }
            lab.fortigate = Some(
                fortilab_fortigate::start(cfg, device_env("fortigate")?, l, shutdown.clone())
                    .await
                    .map_err(anyhow::Error::new)?,
            );
        }
        if let Some(l) = endpoint_listeners {
            let cfg = fortilab_endpoint::EndpointConfig {
                identities,
                ems: lab_addr(addr::EMS, 8013),
                proxy: Some(proxy_lab()),
                default_ka: spec
                    .timing
                    .delay(Duration::from_secs(60), Duration::from_millis(200)),
                register_spread: Duration::ZERO,
                log_upload_every: spec
                    .timing
                    .delay(Duration::from_secs(90 * 60), Duration::from_secs(5)),
                netns: Vec::new(),
            };
            lab.endpoints = Some(
                fortilab_endpoint::start(cfg, device_env("endpoints")?, l, shutdown.clone())
                    .await?,
            );
        }
        Ok(lab)
    }

    /// The lab's data directory (one sub-directory per device).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The lab token every `/_lab/` route wants.
    pub fn lab_token(&self) -> &str {
        self.env.http.lab_token.as_str()
    }

    /// The lab CA's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.env.ca.cert_pem()
    }

    /// An HTTPS client for `addr` trusting the lab CA and sending the lab token.
    ///
    /// The seam for the shared lab-core HTTP client: every in-process test gets its client
    /// here.
    pub fn client(&self, addr: SocketAddr) -> anyhow::Result<HttpsClient> {
        Ok(HttpsClient::new(self.ca_pem(), None, addr)?.with_lab_token(self.lab_token()))
    }

    /// The endpoints' control address (their lab surface).
    pub fn endpoint_control(&self) -> Option<SocketAddr> {
        self.endpoints.as_ref().map(|e| e.control_addr)
    }

    /// Cancels every device and waits until each has drained and saved its state.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(e) = self.endpoints.take() {
            e.wait().await;
        }
        if let Some(f) = self.fortigate.take() {
            if let Err(e) = f.wait().await {
                tracing::warn!(error = %e, "FortiGate stop");
            }
        }
        if let Some(e) = self.ems.take() {
            if let Err(e) = e.wait().await {
                tracing::warn!(error = %e, "EMS stop");
            }
        }
        if let Some(f) = self.faz.take() {
            f.wait().await;
        }
        if let Some(i) = self.internet.take() {
            if let Err(e) = i.wait().await {
                tracing::warn!(error = %e, "lab Internet stop");
            }
        }
    }
}

/// An [`InProcessLab`] on a runtime of its own, for tests without one (blocking clients,
/// `std::thread`s). Derefs to the lab; dropping it stops every device and waits.
pub struct BlockingLab {
    lab: Option<InProcessLab>,
    rt: tokio::runtime::Runtime,
}

impl BlockingLab {
    /// Starts `spec` on a new two-thread runtime.
    pub fn start(spec: LabSpec) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let lab = rt.block_on(InProcessLab::start(spec))?;
        Ok(Self { lab: Some(lab), rt })
    }

    /// Runs `f` on the lab's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

impl std::ops::Deref for BlockingLab {
    type Target = InProcessLab;
    fn deref(&self) -> &InProcessLab {
        self.lab.as_ref().expect("the lab runs until dropped")
    }
}

impl Drop for BlockingLab {
    fn drop(&mut self) {
        if let Some(lab) = self.lab.take() {
            self.rt.block_on(lab.stop());
        }
    }
}
