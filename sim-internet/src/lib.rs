//! # fortilab-internet
//!
//! The lab Internet as its own process: named sites with lab IPs, host names and FortiGuard
//! categories over HTTP and HTTPS (lab-CA certificates), including `www.eicar.org` with the EICAR
//! test file (assembled at run time), the IOC test address 195.22.28.198, malicious (26) and
//! phishing (61) sites and benign ones.
//!
//! On loopback the process listens on one HTTP and one HTTPS port for every site: the site is
//! picked by the `Host` header (or SNI), falling back to the destination lab address of a PROXY
//! header, so address-only sites work when the FortiGate connects with a PROXY header. The lab
//! surface (`/_lab/health`, `/_lab/sites`, `/_lab/dns`, `/_lab/rating`, `/_lab/lab-map`,
//! `/_lab/events`) is on a separate HTTPS control listener.

use std::net::SocketAddr;
use std::sync::Arc;

use fortilab_core::events::EventBus;
use fortilab_core::tls::{self, ClientAuth};
pub use fortilab_core::DeviceEnv;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

pub mod cli;
pub mod control;
pub mod dns;
pub mod server;
pub mod sites;

pub use sites::{Site, Sites};

/// What the lab Internet serves (the lab it runs in is the [`DeviceEnv`]: its lab token
/// guards the control surface).
pub struct InternetConfig {
    pub sites: Sites,
}

/// The listeners (bind `127.0.0.1:0` in tests).
pub struct Listeners {
    pub http: TcpListener,
    pub https: TcpListener,
    pub control: TcpListener,
    /// A DNS server (UDP) answering the sites' names with their public lab addresses
    /// (namespaces mode: the endpoints' resolver).
    pub dns: Option<UdpSocket>,
}

/// A running lab Internet.
pub struct Running {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub control: SocketAddr,
    /// The DNS server's address (when [`Listeners::dns`] was given).
    pub dns: Option<SocketAddr>,
    pub sites: Arc<Sites>,
    pub bus: EventBus,
    /// The lab token of the control surface.
    pub lab_token: fortilab_core::secrets::LabToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Lab socket → real socket for every site: its lab IP on ports 80 and 443 map to the real HTTP
/// and HTTPS listeners (what the orchestrator puts in the lab map).
pub fn lab_map_entries(
    sites: &Sites,
    http: SocketAddr,
    https: SocketAddr,
) -> Vec<(SocketAddr, SocketAddr)> {
    sites
        .all()
        .iter()
        .flat_map(|s| {
            [
                (SocketAddr::new(s.ip, 80), http),
                (SocketAddr::new(s.ip, 443), https),
            ]
        })
        .collect()
}

impl Running {
    /// See [`lab_map_entries`].
    pub fn lab_map_entries(&self) -> Vec<(SocketAddr, SocketAddr)> {
        lab_map_entries(&self.sites, self.http, self.https)
    }

    /// The lab map entries as `{"services": {"lab-ip:port": "real"}}`.
    pub fn lab_map_json(&self) -> serde_json::Value {
        lab_map_json(&self.lab_map_entries())
    }

    /// The ready report (`{"internet": {...}}`).
    pub fn ready_json(&self) -> serde_json::Value {
        let mut ready = serde_json::json!({"internet": {
            "sites": self.sites.ready_rows(),
            "http": self.http.to_string(),
            "https": self.https.to_string(),
            "control": format!("https://{}", self.control),
            "lab_map": self.lab_map_json(),
            "lab_token": self.lab_token.as_str(),
        }});
        if let Some(dns) = self.dns {
            ready["internet"]["dns"] = serde_json::Value::String(dns.to_string());
        }
        ready
    }

    /// Waits until every listener has stopped (after shutdown) and drained.
    pub async fn wait(self) -> std::io::Result<()> {
        for t in self.tasks {
            t.await.map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

fn lab_map_json(entries: &[(SocketAddr, SocketAddr)]) -> serde_json::Value {
    let services: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(l, r)| (l.to_string(), serde_json::Value::String(r.to_string())))
        .collect();
    serde_json::json!({ "services": services })
}

/// Starts serving. Certificates for every site are issued from `ca`.
pub async fn start(
    cfg: InternetConfig,
    env: DeviceEnv,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let ca = &*env.ca;
    let http = listeners.http.local_addr()?;
    let https = listeners.https.local_addr()?;
    let control = listeners.control.local_addr()?;
    let sites = Arc::new(cfg.sites);
    let head_timeout = env.http.header_read_timeout;
    let bus = EventBus::new("internet", env.clock);
    bus.close_on(&shutdown);
    let tls_set = Arc::new(server::TlsSet::new(ca, &sites)?);
    let ctx = Arc::new(server::Ctx {
        sites: sites.clone(),
        bus: bus.clone(),
        lab_map: env.lab_map.clone(),
    });
    let control_cert = ca.issue(
        "sim-internet",
        &["localhost".into(), control.ip().to_string()],
    )?;
    let control_tls =
        tls::server_config(ca, &control_cert, ClientAuth::None, &[b"h2", b"http/1.1"])?;
    let entries = lab_map_entries(&sites, http, https);
    let app = control::router(sites.clone(), bus.clone(), lab_map_json(&entries));
    // Supervised: a listener task that panics is reported (`task.panicked` on the lab
    // Internet's events) and restarted on the same socket.
    let sup = fortilab_core::supervise::Supervisor::new(Some(bus.clone()));
    let serve_sites = |name: &str, l: TcpListener, tls: Option<Arc<server::TlsSet>>| {
        let (ctx, stop) = (ctx.clone(), shutdown.clone());
        sup.spawn_tcp(name, l, shutdown.clone(), move |l| {
            let (tls, ctx, stop) = (tls.clone(), ctx.clone(), stop.clone());
            async move {
                if let Err(e) = server::serve(l, tls, ctx, head_timeout, stop).await {
                    tracing::error!(error = %e, "lab Internet listener failed");
                }
            }
        })
    };
    let mut tasks = vec![
        serve_sites("http", listeners.http, None)?,
        serve_sites("https", listeners.https, Some(tls_set))?,
    ];
    {
        let http_opts = env.http.clone().with_supervisor(sup.clone());
        let stop = shutdown.clone();
        tasks.push(
            sup.spawn_tcp("control", listeners.control, shutdown.clone(), move |l| {
                let (tls, app, http, stop) = (
                    control_tls.clone(),
                    app.clone(),
                    http_opts.clone(),
                    stop.clone(),
                );
                async move {
                    if let Err(e) = fortilab_core::http::serve_https(l, tls, app, http, stop).await
                    {
                        tracing::error!(error = %e, "control listener failed");
                    }
                }
            })?,
        );
    }
    let dns = match listeners.dns {
        Some(sock) => {
            let addr = sock.local_addr()?;
            tokio::spawn(dns::serve(sock, sites.clone(), shutdown.clone()));
            Some(addr)
        }
        None => None,
    };
    tracing::info!(%http, %https, %control, sites = sites.all().len(), "lab Internet serving");
    Ok(Running {
        http,
        https,
        control,
        dns,
        sites,
        bus,
        lab_token: env.http.lab_token.clone(),
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fortilab_core::http::client::{send, Request, Response, Route};
    use fortilab_core::proxy::ProxyHeader;
    use sha2::Digest;

    async fn running() -> (Running, Arc<fortilab_core::LabCa>, CancellationToken) {
        let env = DeviceEnv::for_tests(1, None).unwrap();
        let ca = env.ca.clone();
        let l = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let listeners = Listeners {
            http: l().await,
            https: l().await,
            control: l().await,
            dns: None,
        };
        let cfg = InternetConfig {
            sites: Sites::defaults(),
        };
        let stop = CancellationToken::new();
        let r = start(cfg, env, listeners, stop.clone()).await.unwrap();
        (r, ca, stop)
    }

    /// `GET path` with `Host: host` along `route`.
    async fn get(route: &Route, host: &str, path: &str) -> Response {
        send(route, &Request::get(path).header("host", host))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_sites_by_host_sni_and_proxy_destination() {
        let (r, ca, stop) = running().await;
        let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
        let f = get(&Route::to(r.http), "www.eicar.org", "/download/eicar.com").await;
        assert_eq!(f.status, 200);
        assert_eq!(f.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            sha(&f.body),
            "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
        );
        // HTTPS, SNI picks the site's certificate, verified against the lab CA.
        let lab_tls = tls::client_config(&ca, None).unwrap();
        let route = Route::to(r.https).tls(lab_tls.clone(), "www.eicar.org");
        let f = get(&route, "www.eicar.org", "/download/eicar.com").await;
        assert_eq!((f.status, f.body.len()), (200, 68));
        // Address-only site through a PROXY header, over HTTPS without SNI.
        let hdr = ProxyHeader {
            src: "10.115.2.52:50000".parse().unwrap(),
            dst: "195.22.28.198:443".parse().unwrap(),
        };
        let route = Route::to(r.https)
            .proxy_header(hdr)
            .tls(lab_tls, "195.22.28.198");
        let f = get(&route, "195.22.28.198", "/whatever").await;
        assert_eq!(f.status, 200);
        assert_eq!(f.header("x-lab-site"), Some("ioc-test"));
        // Unknown host, no PROXY: 404; unknown path on a known site: 404.
        let plain = Route::to(r.http);
        assert_eq!(get(&plain, "nowhere.example", "/").await.status, 404);
        assert_eq!(get(&plain, "www.mit.edu", "/nope").await.status, 404);
        // The request events carry the lab source.
        let (events, _) = r.bus.history_since(0);
        let ioc = events
            .iter()
            .find(|e| e.data["site"] == "ioc-test")
            .unwrap();
        assert_eq!(ioc.kind, "http.request");
        assert_eq!(ioc.data["src"], "10.115.2.52");
        assert_eq!(ioc.data["scheme"], "https");
        let entries = r.lab_map_entries();
        assert!(entries.contains(&("89.238.73.97:443".parse().unwrap(), r.https)));
        stop.cancel();
        r.wait().await.unwrap();
    }
}
