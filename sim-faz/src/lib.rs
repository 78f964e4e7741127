//! # fortilab-faz: the FortiAnalyzer twin
//!
//! - [`store`]: durable SQLite log store (WAL, `synchronous=FULL`), typed columns, exactly-once
//!   per sender sequence, retention.
//! - [`ioc`]: the TIDB and compromised-host engine (pure).
//! - [`filter`]: the log-view filter language → SQL.
//! - [`faz`]: the device registry, ingest, alerts, notifications, sessions, settings.
//! - [`jsonrpc`]: the JSON-RPC API (transport-free), served by [`api`] at `POST /jsonrpc`.
//! - [`logsink`]: the log channel's receiving side; [`syslog`]: plain syslog input.
//! - [`start`] runs it all over given listeners; [`cli::main`] is the `sim-faz` binary.

pub mod api;
pub mod cli;
pub mod config;
pub mod console;
pub mod faz;
pub mod filter;
pub mod ioc;
pub mod jsonrpc;
pub mod logsink;
pub mod rawlog;
pub mod store;
pub mod syslog;
/// The time-zone table (shared with the FortiGate: `monitor/system/timezone`).
pub use fortilab_core::tz;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::binary::Timing;
use fortilab_core::logchan::{Hello, LogReceiver};
use fortilab_core::tls::ClientAuth;
pub use fortilab_core::DeviceEnv;
use fortilab_core::EventKind;
use serde_json::{json, Value};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::FileConfig;

use crate::faz::{Faz, Identity};
/// Re-exported: [`start`] takes one, and so do callers without their own tokio-util.
pub use tokio_util::sync::CancellationToken as Shutdown;

/// What the FortiAnalyzer starts with (the lab it runs in is the [`DeviceEnv`]: its data
/// directory holds the log store; the admin password and API key (labels
/// `faz/admin-password`, `faz/api-key`) come from its secrets unless the config file sets them).
#[derive(Debug, Clone)]
pub struct FazConfig {
    pub file: FileConfig,
    pub auto_authorize: bool,
    /// Lab IP (SAN of the device certificate).
    pub lab_ip: String,
    /// Path of the lab CA certificate, for the ready report.
    pub ca_cert_path: Option<PathBuf>,
}

impl Default for FazConfig {
    fn default() -> Self {
        Self {
            file: FileConfig::default(),
            auto_authorize: false,
            lab_ip: "10.115.1.20".into(),
            ca_cert_path: None,
        }
    }
}

/// The listeners the device serves on (bound by the caller; port 0 in tests).
pub struct Listeners {
    pub api: TcpListener,
    pub logchan: TcpListener,
    pub syslog_udp: Option<UdpSocket>,
    pub syslog_tcp: Option<TcpListener>,
    /// The SSH console (`None`: no console).
    pub ssh: Option<TcpListener>,
}

impl Listeners {
    /// Binds everything on loopback ephemeral ports (syslog UDP+TCP on one port number).
    pub async fn ephemeral() -> std::io::Result<Self> {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (udp, tcp) = bind_syslog(any).await?;
        Ok(Self {
            api: TcpListener::bind(any).await?,
            logchan: TcpListener::bind(any).await?,
            syslog_udp: Some(udp),
            syslog_tcp: Some(tcp),
            ssh: Some(TcpListener::bind(any).await?),
        })
    }
}

/// Binds UDP and TCP on the same port number (retrying with a fresh port when port 0 gave a
/// number already taken on the other protocol).
pub async fn bind_syslog(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("cannot bind syslog")))
}

/// A running FortiAnalyzer.
pub struct Running {
    pub faz: Arc<Faz>,
    pub receiver: LogReceiver,
    pub api_addr: SocketAddr,
    pub log_addr: SocketAddr,
    pub syslog_addr: Option<SocketAddr>,
    /// The SSH console's address.
    pub ssh_addr: Option<SocketAddr>,
    pub ca_cert_path: Option<PathBuf>,
    /// The lab token of the `/_lab/` routes.
    pub lab_token: fortilab_core::secrets::LabToken,
    /// Keeps the SSH console server alive.
    _console: Option<console::SshConsoleHandle>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Running {
    /// The ready report: the `fortianalyzer` object of ARCHITECTURE.md §7 plus the log channel,
    /// syslog and lab addresses.
    pub fn ready_json(&self) -> Value {
        // The bound address as clients reach it: loopback for a wildcard bind, else itself (a
        // container lab binds the lab address).
        let shown = |a: SocketAddr| -> SocketAddr {
            if a.ip().is_unspecified() {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            } else {
                a
            }
        };
        let api = format!("https://{}", shown(self.api_addr));
        json!({
            "name": self.faz.bus.device(),
            "serial": self.faz.id.serial,
            "version": self.faz.id.version,
            "api": api,
            "api_token": self.faz.id.api_key,
            "admin": {"user": self.faz.id.admin_user, "password": self.faz.id.admin_password},
            "log_channel": self.log_addr.to_string(),
            "syslog": self.syslog_addr.map(|a| a.to_string()),
            "ssh": self.ssh_addr.map(|a| shown(a).to_string()),
            "lab_ip": self.faz.id.lab_ip,
            "ca_cert": self.ca_cert_path.as_ref().map(|p| p.display().to_string()),
            "events": format!("{api}/_lab/events"),
            "lab_token": self.lab_token.as_str(),
        })
    }

    /// Waits until every task has stopped (after the shutdown token fired).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// Starts the FortiAnalyzer over the given listeners.
pub async fn start(
    cfg: FazConfig,
    env: DeviceEnv,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let ca = &*env.ca;
    let data_dir = env.require_data_dir("the FortiAnalyzer")?.to_path_buf();
    let serial = fortilab_core::rng::serial(
        &mut fortilab_core::rng::stream(env.seed, "faz-serial"),
        "FAZ-VMTM",
    );
    let admin_password = match cfg.file.admin.password.clone() {
        Some(p) => p,
        None => env.secrets.credential("faz/admin-password", 16)?,
    };
    let api_key = match cfg.file.api_key.clone() {
        Some(k) => k,
        None => env.secrets.credential("faz/api-key", 30)?,
    };
    let id = Identity {
        hostname: cfg.file.hostname.clone(),
        serial: serial.clone(),
        version: cfg.file.version.clone(),
        platform: "FortiAnalyzer-VM64".into(),
        admin_user: cfg.file.admin.user.clone(),
        admin_password,
        api_key,
        lab_ip: cfg.lab_ip.clone(),
        session_timeout: cfg.file.api.session_timeout as i64,
        max_sessions: cfg.file.api.max_sessions.max(1),
        retention_days: cfg.file.store.retention_days,
        max_size_mb: cfg.file.store.max_size_mb,
    };
    let store_dir = data_dir.join("store");
    let store = tokio::task::spawn_blocking(move || store::Store::open(&store_dir)).await??;
    let mut tidb = ioc::Tidb::default_lab();
    tidb.extend(&cfg.file.tidb)
        .map_err(|e| fortilab_core::binary::UsageError::new(format!("[tidb] {e}")))?;
    let faz = Faz::new(
        id,
        env.clock,
        env.timing,
        store,
        tidb,
        cfg.file.ioc.clone(),
        cfg.auto_authorize,
        env.seed,
    )?;
    faz.bus.close_on(&shutdown);

    let cert = ca.issue(
        &serial,
        &[cfg.lab_ip.clone(), "localhost".into(), "127.0.0.1".into()],
    )?;
    let api_tls =
        fortilab_core::tls::server_config(ca, &cert, ClientAuth::Optional, &[b"h2", b"http/1.1"])?;
    let log_tls = fortilab_core::tls::server_config(
        ca,
        &cert,
        ClientAuth::Required,
        &[fortilab_core::logchan::ALPN],
    )?;

    let receiver = LogReceiver::new(
        Arc::new(logsink::FazSink { faz: faz.clone() }),
        Hello::fortianalyzer(&serial, &cfg.file.hostname, &cfg.file.version),
        env.clock,
    );
    faz.notifications
        .set_notifier(Arc::new(logsink::ChannelNotifier(receiver.clone())));

    let api_addr = listeners.api.local_addr()?;
    let log_addr = listeners.logchan.local_addr()?;
    let syslog_addr = match &listeners.syslog_udp {
        Some(u) => Some(u.local_addr()?),
        None => None,
    };
    let mut tasks = Vec::new();

    // Rescan worker.
    let (rtx, rrx) = std::sync::mpsc::channel::<(u64, i64, i64)>();
    faz.rescans.set_queue(rtx);
    {
        let faz = faz.clone();
        std::thread::Builder::new()
            .name("faz-rescan".into())
            .spawn(move || {
                while let Ok((tid, s, e)) = rrx.recv() {
                    // A rescan that panics is reported; the worker goes on with the next.
                    let run = std::panic::AssertUnwindSafe(|| faz.run_rescan(tid, s, e));
                    if let Err(p) = std::panic::catch_unwind(run) {
                        let msg = fortilab_core::supervise::panic_message(&*p);
                        faz.supervisor.report_panic("rescan", &msg);
                    }
                }
            })?;
    }

    let app = Arc::new(api::App {
        faz: faz.clone(),
        api: jsonrpc::ApiState::default(),
        receiver: Some(receiver.clone()),
        data_dir: Some(data_dir.clone()),
    });
    // Every long-running task is supervised: a panic is reported (`task.panicked`) and the
    // task restarted on the same listener.
    let sup = faz.supervisor.clone();
    receiver.set_supervisor(sup.clone());
    {
        let router = api::router(app);
        let stop = shutdown.clone();
        let http = env.http.clone().with_supervisor(sup.clone());
        tasks.push(
            sup.spawn_tcp("api", listeners.api, shutdown.clone(), move |listener| {
                let (tls, router, http, stop) =
                    (api_tls.clone(), router.clone(), http.clone(), stop.clone());
                async move {
                    if let Err(e) =
                        fortilab_core::http::serve_https(listener, tls, router, http, stop).await
                    {
                        tracing::error!(error = %e, "API server failed");
                    }
                }
            })?,
        );
    }
    {
        let r = receiver.clone();
        let stop = shutdown.clone();
        tasks.push(sup.spawn_tcp(
            "log channel",
            listeners.logchan,
            shutdown.clone(),
            move |listener| {
                let (r, tls, stop) = (r.clone(), log_tls.clone(), stop.clone());
                async move {
                    if let Err(e) = r.serve(listener, tls, stop).await {
                        tracing::error!(error = %e, "log channel failed");
                    }
                }
            },
        )?);
    }
    if let (Some(u), Some(t)) = (listeners.syslog_udp, listeners.syslog_tcp) {
        // A started syslog message has as long to complete as an HTTP request head.
        let partial = env.http.header_read_timeout;
        let _ = syslog::start(faz.clone(), u, t, partial, shutdown.clone());
    }
    let (console, ssh_addr) = match listeners.ssh {
        Some(l) => match console::serve(faz.clone(), l, &data_dir, shutdown.clone()).await {
            Ok(c) => {
                let a = c.local_addr;
                (Some(c), Some(a))
            }
            Err(e) => {
                tracing::warn!(error = %e, "SSH console not started");
                (None, None)
            }
        },
        None => (None, None),
    };
    {
        let (f, stop) = (faz.clone(), shutdown.clone());
        tasks.push(sup.spawn("housekeeping", shutdown.clone(), move || {
            housekeeping(f.clone(), stop.clone())
        }));
        let (f, r, stop) = (faz.clone(), receiver.clone(), shutdown.clone());
        tasks.push(sup.spawn("reauthorize", shutdown.clone(), move || {
            reauthorize(f.clone(), r.clone(), stop.clone())
        }));
    }
    faz.bus.emit(
        EventKind::DeviceReady,
        json!({"serial": serial, "api": api_addr.to_string(), "log_channel": log_addr.to_string()}),
    );
    tracing::info!(%serial, api = %api_addr, log_channel = %log_addr, syslog = ?syslog_addr, ssh = ?ssh_addr, "FortiAnalyzer ready");
    Ok(Running {
        faz,
        receiver,
        api_addr,
        log_addr,
        syslog_addr,
        ssh_addr,
        ca_cert_path: cfg.ca_cert_path,
        lab_token: env.http.lab_token.clone(),
        _console: console,
        tasks,
        shutdown,
    })
}

/// Repairs a lost authorization: a device authorized while its session was still being set up
/// may still be waiting as unauthorized on the channel; tell the channel again.
async fn reauthorize(faz: Arc<Faz>, receiver: LogReceiver, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for s in receiver.sessions() {
            if s.status == fortilab_core::logchan::RegStatus::Unauthorized
                && faz.is_authorized(&s.serial)
            {
                receiver.authorize(&s.serial);
            }
        }
    }
}

/// The IOC half-hour cycle (and daily roll-over), scheduled rescans, retention and planner
/// statistics. With `--timing fast` the half-hour cycle runs every lab second.
async fn housekeeping(faz: Arc<Faz>, stop: CancellationToken) {
    let cycle = faz
        .timing
        .delay(Duration::from_secs(30 * 60), Duration::from_secs(1));
    let cycle_real = faz.clock.to_real(cycle).max(Duration::from_millis(50));
    let mut last_retention = faz.now();
    let mut last_rescan_day = faz.day_of(faz.now());
    let mut last_optimize_rows = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(cycle_real) => {}
        }
        let f = faz.clone();
        let now = faz.now();
        let day = faz.day_of(now);
        let settings = faz.ioc.settings();
        let hour = ((now + faz.clock.tz_minutes() as i64 * 60).rem_euclid(86_400) / 3600) as u32;
        let rescan_due =
            settings.rescan_status && day != last_rescan_day && hour >= settings.rescan_run_at;
        if rescan_due {
            last_rescan_day = day;
        }
        let retention_due = now - last_retention >= 3600
            || faz.timing == Timing::Fast && now - last_retention >= 10;
        if retention_due {
            last_retention = now;
        }
        let inserted = faz
            .store
            .counters
            .inserted
            .load(std::sync::atomic::Ordering::Relaxed);
        let optimize_due = inserted >= last_optimize_rows * 2 + 10_000;
        if optimize_due {
            last_optimize_rows = inserted;
        }
        let _ = tokio::task::spawn_blocking(move || {
            f.ioc_cycle();
            if rescan_due {
                let days = settings.rescan_days as i64;
                f.new_rescan(now - days * 86_400, now, "schedule");
            }
            if retention_due {
                let age = (f.id.retention_days > 0).then(|| f.id.retention_days as i64 * 86_400);
                let size = (f.id.max_size_mb > 0).then(|| f.id.max_size_mb * 1024 * 1024);
                match f.store.retain(now, age, size) {
                    Ok(n) if n > 0 => {
                        f.bus.emit(EventKind::StoreRetention, json!({"deleted": n}));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention failed"),
                }
            }
            if optimize_due {
                f.store.optimize();
            }
        })
        .await;
    }
}
