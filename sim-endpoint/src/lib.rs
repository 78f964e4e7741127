//! # fortilab-endpoint: FortiClient endpoints
//!
//! One process simulates one or many FortiClient endpoints ([`identity`]). Each one registers
//! with EMS over the telemetry protocol ([`proto`], shared with sim-ems as a wire format), keeps
//! alive at the `KA_INTERVAL` EMS returns (on the lab clock), applies quarantine instructions
//! ([`agent`]), uploads its FortiClient logs to the FortiAnalyzer named in the EMS profile
//! ([`faz`], [`logs`]), and browses through the FortiGate proxy with its lab source address in
//! a PROXY v2 header ([`fetch`]).
//!
//! Scale: every endpoint is one tokio task sleeping on the runtime's timer wheel. Its telemetry
//! connection stays open between keep-alives while EMS says `PERCON=1` (else one TLS
//! connection per exchange, resuming the endpoint's own TLS session); at most
//! [`MAX_CONCURRENT_EXCHANGES`] exchanges run at once. 10,000 endpoints cost about 27 KB each
//! (task, TLS connection, identity, state, session cache).
//!
//! Lab surface (one HTTPS listener): `/_lab/health`, `/_lab/events` and per endpoint
//! `/endpoints/<name>/_lab/{fetch,access-code,status}`.

// Handlers return an axum `Response` as their error: it is what they answer with.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod cli;
pub mod faz;
pub mod fetch;
pub mod identity;
pub mod labstate;
pub mod logs;

/// The telemetry wire format (defined in `fortilab_core::telemetry`, shared with sim-ems).
pub use fortilab_core::telemetry as proto;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fortilab_core::tls::ClientAuth;
pub use fortilab_core::DeviceEnv;
use fortilab_core::EventKind;
use fortilab_core::{EventBus, LabCa, LabClock, LabMap};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use agent::{AgentState, Change};
use identity::Identity;

/// Telemetry exchanges in flight at once (all endpoints of the process together).
pub const MAX_CONCURRENT_EXCHANGES: usize = 512;
/// Timeout of one telemetry exchange.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// The browser the endpoints pretend to be.
pub const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) FortiClient/6.4.3";

/// What the endpoints start with (the lab they run in is the [`DeviceEnv`]: its data
/// directory holds the log queues and snapshot state, its seed the registration jitter).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub identities: Vec<Identity>,
    /// EMS telemetry, lab address.
    pub ems: SocketAddr,
    /// FortiGate explicit proxy, lab address.
    pub proxy: Option<SocketAddr>,
    /// Keep-alive interval until EMS sends one (lab time): also the retry period of a
    /// registration that failed (200 ms with `timing = "fast"`, so a lab starts quickly; EMS
    /// then gives its own interval).
    pub default_ka: Duration,
    /// Registrations are spread uniformly over this much real time.
    pub register_spread: Duration,
    /// Lab time between FortiClient log uploads to FortiAnalyzer (`log_upload_freq_minutes`,
    /// 90 minutes by default on the real FortiClient; short with `timing = "fast"`).
    pub log_upload_every: Duration,
    /// Namespaces mode: the network namespace of each endpoint, in identity order (empty:
    /// every endpoint's sockets in the process's own namespace).
    pub netns: Vec<String>,
}

/// One endpoint.
pub struct Endpoint {
    pub id: Identity,
    pub state: Mutex<AgentState>,
    pub uplink: faz::Uplink,
    /// TLS to EMS telemetry with this endpoint's own session cache (resumption).
    telemetry_tls: tokio_rustls::TlsConnector,
    /// Wakes the telemetry task early: a keep-alive now (an access code was entered: the
    /// endpoint reports its new state to EMS at once, as FortiClient "notifies the FortiGate
    /// and EMS of the status change").
    pub wake: tokio::sync::Notify,
    /// The endpoint's own network namespace (namespaces mode, a block of several endpoints):
    /// its telemetry, log upload and browsing connect from there.
    pub netns: Option<Arc<fortilab_core::netns::NetNs>>,
}

impl Endpoint {
    fn lock(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What all endpoints share.
pub struct Shared {
    pub cfg: EndpointConfig,
    /// Where the log queues and a snapshot's state are kept.
    pub data_dir: std::path::PathBuf,
    /// The lab token of the control listener (the endpoints' lab surface).
    pub lab_token: fortilab_core::secrets::LabToken,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub by_name: HashMap<String, usize>,
    pub clock: LabClock,
    pub bus: EventBus,
    /// Supervises the control listener and each endpoint's loop (`task.*` events on `bus`).
    pub supervisor: fortilab_core::supervise::Supervisor,
    pub lab_map: Arc<LabMap>,
    ems_real: SocketAddr,
    ems_name: rustls::pki_types::ServerName<'static>,
    proxy: Option<fetch::ProxyRoute>,
    sem: Semaphore,
    uplink_env: faz::UplinkEnv,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// A running process.
pub struct Running {
    pub control_addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// The control URL of an endpoint.
    pub fn control_url(&self, name: &str) -> String {
        format!("https://{}/endpoints/{name}", self.control_addr)
    }

    /// Waits for every task to end (after shutdown).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The telemetry client configuration: trusts the lab CA only, like
/// `fortilab_core::tls::client_config`, but prefers TLS_AES_128_GCM_SHA256 (SHA-256 runs on
/// the CPU's SHA instructions; the default first suite's SHA-384 does not, and the key schedule
/// of every handshake hashes a lot).
fn telemetry_base_config(ca: &LabCa) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A TLS connector for one endpoint with a session cache of its own (a FortiClient resumes its
/// own sessions, not another machine's).
fn telemetry_tls(base: &Arc<rustls::ClientConfig>) -> tokio_rustls::TlsConnector {
    let mut cfg = (**base).clone();
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(1);
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// The listener of the endpoints' process (bound by the caller; port 0 in tests).
pub struct Listeners {
    /// The control listener: the endpoints' lab surface (HTTPS).
    pub control: TcpListener,
}

/// Starts the endpoints and the control listener.
pub async fn start(
    cfg: EndpointConfig,
    env: DeviceEnv,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let data_dir = env.require_data_dir("sim-endpoint")?.to_path_buf();
    let control = listeners.control;
    let (ca, clock) = (env.ca.clone(), env.clock);
    let lab_map = Arc::new(env.lab_map.clone());
    let bus = EventBus::new("endpoints", clock);
    bus.close_on(&shutdown);
    let client_tls = fortilab_core::tls::client_config(&ca, None)?;
    let telemetry_base = telemetry_base_config(&ca)?;
    let ems_real = lab_map.resolve(cfg.ems);
    let ems_name = fortilab_core::tls::server_name(&cfg.ems.ip().to_string())?;
    let proxy = cfg.proxy.map(|lab| fetch::ProxyRoute {
        lab,
        real: lab_map.resolve(lab),
        tls: client_tls.clone(),
    });
    if !cfg.netns.is_empty() && cfg.netns.len() != cfg.identities.len() {
        anyhow::bail!(
            "{} network namespaces for {} endpoints",
            cfg.netns.len(),
            cfg.identities.len()
        );
    }
    let mut netns = Vec::with_capacity(cfg.netns.len());
    for n in &cfg.netns {
        netns.push(Arc::new(fortilab_core::netns::NetNs::open(n)?));
    }
    let endpoints: Vec<Arc<Endpoint>> = cfg
        .identities
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Arc::new(Endpoint {
                id: id.clone(),
                state: Mutex::new(AgentState::new(cfg.default_ka)),
                uplink: faz::Uplink::default(),
                telemetry_tls: telemetry_tls(&telemetry_base),
                wake: tokio::sync::Notify::new(),
                netns: netns.get(i).cloned(),
            })
        })
        .collect();
    let by_name = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.name.clone(), i))
        .collect();
    let uplink_env = faz::UplinkEnv {
        ca: ca.clone(),
        lab_map: lab_map.clone(),
        clock,
        data_dir: data_dir.clone(),
        shutdown: shutdown.clone(),
        upload_every: cfg.log_upload_every,
    };
    match labstate::take(&data_dir) {
        Ok(Some(saved)) => {
            labstate::apply(&saved, &endpoints);
            tracing::info!("restored the endpoints' state of a lab snapshot");
        }
        Ok(None) => {}
        Err(e) => anyhow::bail!("lab snapshot state: {e}"),
    }
    let shared = Arc::new(Shared {
        cfg,
        data_dir,
        lab_token: env.http.lab_token.clone(),
        endpoints,
        by_name,
        clock,
        supervisor: fortilab_core::supervise::Supervisor::new(Some(bus.clone())),
        bus,
        lab_map,
        ems_real,
        ems_name,
        proxy,
        sem: Semaphore::new(MAX_CONCURRENT_EXCHANGES),
        uplink_env,
    });

    let control_addr = control.local_addr()?;
    // The control listener's own address is a SAN when it is a specific one (a container or
    // namespace lab binds the endpoint's lab address), so clients verify it like any device.
    let sans: Vec<String> = if control_addr.ip().is_unspecified() {
        Vec::new()
    } else {
        vec![control_addr.ip().to_string()]
    };
    let cert = ca.issue("FCT-ENDPOINTS", &sans)?;
    let tls = fortilab_core::tls::server_config(&ca, &cert, ClientAuth::None, &[b"http/1.1"])?;
    let mut tasks = tokio::task::JoinSet::new();
    let sup = shared.supervisor.clone();
    {
        let app = router(shared.clone());
        let sd = shutdown.clone();
        let http = env.http.clone().with_supervisor(sup.clone());
        let h = sup.spawn_tcp("control", control, shutdown.clone(), move |listener| {
            let (tls, app, http, sd) = (tls.clone(), app.clone(), http.clone(), sd.clone());
            async move {
                if let Err(e) = fortilab_core::http::serve_https(listener, tls, app, http, sd).await
                {
                    tracing::error!(error = %e, "control server failed");
                }
            }
        })?;
        tasks.spawn(async move {
            let _ = h.await;
        });
    }
    let mut jitter = fortilab_core::rng::stream(env.seed, "endpoint/jitter");
    let spread = shared.cfg.register_spread;
    for idx in 0..shared.endpoints.len() {
        let delay = if spread.is_zero() {
            Duration::ZERO
        } else {
            spread.mul_f64(jitter.gen::<f64>())
        };
        // Where in the keep-alive period this endpoint's keep-alives fall (see run_endpoint).
        let phase = if shared.endpoints.len() > 1 {
            jitter.gen::<f64>()
        } else {
            1.0
        };
        let sh = shared.clone();
        let sd = shutdown.clone();
        let name = format!("endpoint {}", shared.endpoints[idx].id.name);
        let mut first = true;
        let h = sup.spawn(&name, shutdown.clone(), move || {
            // A restarted loop does not wait for the registration spread again.
            let d = if std::mem::take(&mut first) {
                delay
            } else {
                Duration::ZERO
            };
            run_endpoint(sh.clone(), idx, d, phase, sd.clone())
        });
        tasks.spawn(async move {
            let _ = h.await;
        });
    }
    tracing::info!(%control_addr, endpoints = shared.endpoints.len(), ems = %shared.cfg.ems, "endpoints started");
    Ok(Running {
        control_addr,
        shared,
        tasks,
    })
}

/// A telemetry connection kept open between exchanges (EMS replied `PERCON=1`).
pub struct TelemetryConn {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for TelemetryConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConn").finish_non_exhaustive()
    }
}

enum SendError {
    /// A kept connection the server closed meanwhile (nothing was processed): connect again.
    Stale,
    Failed(String),
}

async fn send_recv(c: &mut TelemetryConn, frame: &proto::Frame) -> Result<proto::Frame, SendError> {
    if proto::write_frame(&mut c.tls, frame).await.is_err() {
        return Err(SendError::Stale);
    }
    loop {
        match proto::read_frame(&mut c.tls, &mut c.buf).await {
            // A push that crossed this request: the reply to it carries what EMS had to say.
            Ok(f) if is_push(&f) => continue,
            Ok(reply) => return Ok(reply),
            Err(proto::ReadError::Closed) | Err(proto::ReadError::Io(_)) => {
                return Err(SendError::Stale)
            }
            Err(e) => return Err(SendError::Failed(format!("EMS reply: {e}"))),
        }
    }
}

/// Whether an EMS frame is a push (`X-FCCK-NOTIFY`): EMS asks for an exchange now, on the
/// persistent connection, because it has an action for this endpoint (see sim-ems's
/// `telemetry` module) [P].
fn is_push(f: &proto::Frame) -> bool {
    f.verb == "NOTIFY"
}

/// Waits on the kept connection, between two exchanges, for EMS to push: `true` on a push,
/// `false` when the connection closed or sent something else (it is dropped then). Never
/// returns without a kept connection. It waits for the socket to be readable first, so an
/// idle endpoint holds no read buffer; `read_frame` keeps what it read in the connection's
/// buffer, so dropping this for a timer loses nothing.
async fn wait_push(conn: &mut Option<TelemetryConn>) -> bool {
    let Some(c) = conn.as_mut() else {
        return std::future::pending().await;
    };
    if c.buf.is_empty() && c.tls.get_ref().0.readable().await.is_err() {
        *conn = None;
        return false;
    }
    match proto::read_frame(&mut c.tls, &mut c.buf).await {
        Ok(f) if is_push(&f) => true,
        _ => {
            *conn = None;
            false
        }
    }
}

async fn connect(shared: &Shared, ep: &Endpoint) -> Result<TelemetryConn, String> {
    let tcp = fortilab_core::netns::connect(ep.netns.as_deref(), shared.ems_real)
        .await
        .map_err(|err| {
            format!(
                "EMS {} ({}) unreachable: {err}",
                shared.cfg.ems, shared.ems_real
            )
        })?;
    let _ = tcp.set_nodelay(true);
    let tls = ep
        .telemetry_tls
        .connect(shared.ems_name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS to EMS: {e}"))?;
    Ok(TelemetryConn {
        tls,
        buf: Vec::new(),
    })
}

/// Whether EMS lets this connection stay open for the next exchange.
fn persistent(reply: &proto::Frame) -> bool {
    reply.value("PERCON").map(str::trim) == Some("1")
}

/// One telemetry exchange of endpoint `ep`: on the connection kept from the previous exchange
/// when there is one (connecting again if EMS closed it meanwhile), else on a new TLS
/// connection that resumes the endpoint's previous TLS session when it can. The connection is
/// kept in `conn` when the reply says `PERCON=1`, closed otherwise.
pub async fn exchange(
    shared: &Shared,
    ep: &Endpoint,
    conn: &mut Option<TelemetryConn>,
    frame: &proto::Frame,
) -> Result<proto::Frame, String> {
    let _permit = shared
        .sem
        .acquire()
        .await
        .map_err(|_| "shutting down".to_string())?;
    let fut = async {
        if let Some(mut c) = conn.take() {
            match send_recv(&mut c, frame).await {
                Ok(reply) => return Ok(finish(conn, c, reply).await),
                Err(SendError::Stale) => {}
                Err(SendError::Failed(e)) => return Err(e),
            }
        }
        let mut c = connect(shared, ep).await?;
        match send_recv(&mut c, frame).await {
            Ok(reply) => Ok(finish(conn, c, reply).await),
            Err(SendError::Stale) => Err("EMS closed the connection without a reply".to_string()),
            Err(SendError::Failed(e)) => Err(e),
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, fut)
        .await
        .map_err(|_| "EMS exchange timed out".to_string())?
}

async fn finish(
    slot: &mut Option<TelemetryConn>,
    mut c: TelemetryConn,
    reply: proto::Frame,
) -> proto::Frame {
    if persistent(&reply) {
        *slot = Some(c);
    } else {
        use tokio::io::AsyncWriteExt;
        let _ = c.tls.shutdown().await;
    }
    reply
}

/// One endpoint's telemetry loop. Keep-alives run at a fixed rate on the lab clock; the first
/// one after a registration comes `phase` (0..1) of a period later, so a process whose
/// endpoints registered within a short window spreads their keep-alives over the whole period
/// (as real endpoints, started at unrelated times, are) instead of sending them in bursts.
async fn run_endpoint(
    shared: Arc<Shared>,
    idx: usize,
    delay: Duration,
    phase: f64,
    shutdown: CancellationToken,
) {
    let ep = shared.endpoints[idx].clone();
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(delay) => {}
    }
    let mut retry_now = false;
    let mut conn: Option<TelemetryConn> = None;
    loop {
        // Keep-alives run at a fixed rate: the period counts from the start of an exchange.
        let period_start = tokio::time::Instant::now();
        let now_secs = shared.clock.now_secs();
        let request = ep.lock().next_request(&ep.id, now_secs);
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = exchange(&shared, &ep, &mut conn, &request) => r,
        };
        let mut next_at = None;
        match result {
            Ok(reply) => {
                let now_ms = shared.clock.now_ns() / 1_000_000;
                let changes = ep.lock().apply(&request, &reply, now_ms);
                retry_now = false;
                for c in changes {
                    // Register again at once; report a new quarantine state at once (FortiClient
                    // "notifies the FortiGate and EMS of the status change"), not a period later.
                    if matches!(
                        c,
                        Change::MustRegister { .. }
                            | Change::Quarantined { .. }
                            | Change::Released { .. }
                    ) {
                        retry_now = true;
                    }
                    if let Change::Profile(p) = c {
                        // Starting an uplink opens its log queue, which writes and fsyncs the
                        // queue's state: on the blocking pool, not on a runtime worker (1,000
                        // endpoints registering at once queued their fsyncs behind the two
                        // workers of a 2-core machine). Awaited, so the changes after it (a
                        // quarantine's event log) find the uplink running.
                        let (sh, e) = (shared.clone(), ep.clone());
                        let started =
                            tokio::task::spawn_blocking(move || ensure_uplink(&sh, &e, &p)).await;
                        if let Err(e) = started {
                            tracing::warn!(endpoint = %ep.id.name, error = %e, "log upload start failed");
                        }
                        continue;
                    }
                    on_change(&shared, &ep, c);
                }
                let (registered, ka) = {
                    let st = ep.lock();
                    (st.registered, st.ka_interval)
                };
                if request.verb == "REGISTER" && registered {
                    let real = shared.clock.to_real(ka).max(Duration::from_millis(1));
                    next_at = Some(tokio::time::Instant::now() + real.mul_f64(phase));
                }
            }
            Err(e) => {
                tracing::debug!(endpoint = %ep.id.name, error = %e, "telemetry exchange failed");
                ep.lock().last_error = Some(e);
            }
        }
        if retry_now {
            continue;
        }
        let ka = ep.lock().ka_interval;
        let real = shared.clock.to_real(ka).max(Duration::from_millis(1));
        let next_at = next_at.unwrap_or(period_start + real);
        // Until the next keep-alive, or earlier: EMS pushes on the kept connection (an action
        // waits), or the endpoint has news (an access code entered).
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_at) => break,
                _ = ep.wake.notified() => break,
                pushed = wait_push(&mut conn) => {
                    if pushed {
                        break;
                    }
                    // EMS closed the kept connection: the next keep-alive connects again.
                }
            }
        }
    }
}

fn ems_sn(ep: &Endpoint) -> String {
    ep.lock().ems_serial.clone().unwrap_or_default()
}

fn on_change(shared: &Shared, ep: &Endpoint, change: Change) {
    let id = &ep.id;
    match change {
        Change::Registered { device_id } => {
            shared.bus.emit_as(
                &id.name,
                EventKind::EndpointRegistered,
                json!({"endpoint": id.name, "fctuid": id.fctuid, "ip": id.ip.to_string(), "device_id": device_id}),
            );
        }
        Change::Quarantined { id: qid, message } => {
            tracing::info!(endpoint = %id.name, quarantine_id = qid, "quarantined by EMS");
            shared.bus.emit_as(
                &id.name,
                EventKind::EndpointQuarantined,
                json!({"endpoint": id.name, "fctuid": id.fctuid, "ip": id.ip.to_string(), "quarantine_id": qid, "message": message}),
            );
            ep.uplink.send(logs::event_log(
                &shared.clock,
                id,
                &ems_sn(ep),
                "Endpoint quarantined by EMS",
            ));
        }
        Change::Released { by, id: qid } => {
            shared.bus.emit_as(
                &id.name,
                EventKind::EndpointReleased,
                json!({"endpoint": id.name, "fctuid": id.fctuid, "ip": id.ip.to_string(), "quarantine_id": qid, "by": by}),
            );
            ep.uplink.send(logs::event_log(
                &shared.clock,
                id,
                &ems_sn(ep),
                "Endpoint released from quarantine by EMS",
            ));
        }
        Change::CodeConfirmed { accepted } => {
            shared.bus.emit_as(
                &id.name,
                EventKind::EndpointCodeReported,
                json!({"endpoint": id.name, "accepted": accepted}),
            );
        }
        Change::MustRegister { message } => {
            tracing::info!(endpoint = %id.name, %message, "EMS asks to register again");
        }
        Change::Error { code, message } => {
            tracing::warn!(endpoint = %id.name, %code, %message, "EMS refused the telemetry request");
        }
        Change::Profile(p) => ensure_uplink(shared, ep, &p),
    }
}

/// Starts (or re-points) the endpoint's log upload when its profile enables it (blocking: the
/// log queue's state is written and fsynced).
fn ensure_uplink(shared: &Shared, ep: &Endpoint, p: &agent::Profile) {
    if let (true, Some(server)) = (p.log_upload_enabled, p.log_upload_server.as_deref()) {
        if let Err(e) = ep
            .uplink
            .ensure(&shared.uplink_env, &ep.id, ep.netns.clone(), server)
        {
            tracing::warn!(endpoint = %ep.id.name, error = %e, "cannot start the log upload");
        }
    }
}

// ---------------------------------------------------------------- control surface

/// The state every control-surface handler extracts: the endpoints' shared state.
type ApiState = State<Arc<Shared>>;

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_lab/health", get(health))
        .route(fortilab_core::snapshot::ROUTE, post(snapshot))
        .route(
            "/_lab/events",
            get(fortilab_core::events::sse_handler).with_state(shared.bus.clone()),
        )
        .route("/endpoints/{name}/_lab/fetch", post(fetch_h))
        .route("/endpoints/{name}/_lab/access-code", post(access_code))
        .route("/endpoints/{name}/_lab/status", get(status))
        .with_state(shared)
}

fn find(sh: &Shared, name: &str) -> Result<Arc<Endpoint>, Response> {
    sh.by_name
        .get(name)
        .map(|i| sh.endpoints[*i].clone())
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"ok": false, "error": format!("no endpoint named {name:?}")})),
            )
                .into_response()
        })
}

fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"ok": false, "error": msg.into()})),
    )
        .into_response()
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// `GET /_lab/health`: how many endpoints have ever registered, are quarantined, and are
/// `linked`: registered with EMS now and, when their profile enables log upload, connected to
/// the FortiAnalyzer (an orchestrator waits for every endpoint to be linked).
async fn health(State(sh): ApiState) -> Response {
    let (mut registered, mut quarantined, mut linked) = (0usize, 0usize, 0usize);
    for e in &sh.endpoints {
        let (reg, upload) = {
            let st = e.lock();
            registered += usize::from(st.ever_registered);
            quarantined += usize::from(st.is_quarantined());
            (
                st.registered,
                st.profile.log_upload_enabled && st.profile.log_upload_server.is_some(),
            )
        };
        linked += usize::from(reg && (!upload || e.uplink.connected()));
    }
    Json(
        json!({"ok": true, "endpoints": sh.endpoints.len(), "registered": registered,
                "quarantined": quarantined, "linked": linked}),
    )
    .into_response()
}

/// `POST /_lab/snapshot` (`{"dir"}`): every endpoint's state into a new directory while they
/// run on: the agents' state ([`labstate::STATE_FILE`], so the start from it registers again
/// with the saved quarantine), each running uplink's log queue (copied under its lock) and the
/// data directory's other files.
async fn snapshot(State(sh): ApiState, body: axum::body::Bytes) -> Response {
    fortilab_core::snapshot::handle(&body, |dir| async move {
        tokio::task::spawn_blocking(move || snapshot_to(&sh, &dir))
            .await
            .map_err(|e| format!("snapshot task: {e}"))?
    })
    .await
}

fn snapshot_to(sh: &Shared, dir: &std::path::Path) -> Result<(), String> {
    let data = &sh.data_dir;
    fortilab_core::snapshot::copy_dir_except(data, dir, &[labstate::STATE_FILE, "logqueue"])
        .map_err(|e| format!("copying {}: {e}", data.display()))?;
    for e in &sh.endpoints {
        let dst = dir.join("logqueue").join(&e.id.name);
        let res = match e.uplink.snapshot_to(&dst) {
            Some(r) => r,
            None => {
                let src = data.join("logqueue").join(&e.id.name);
                if src.is_dir() {
                    std::fs::create_dir_all(&dst)
                        .and_then(|()| fortilab_core::snapshot::copy_dir_except(&src, &dst, &[]))
                        .map(|_| ())
                } else {
                    Ok(())
                }
            }
        };
        res.map_err(|err| format!("log queue of {}: {err}", e.id.name))?;
    }
    labstate::save(dir, &labstate::export(&sh.endpoints))
        .map_err(|e| format!("{}: {e}", labstate::STATE_FILE))
}

async fn status(State(sh): ApiState, Path(name): Path<String>) -> Response {
    let ep = match find(&sh, &name) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let st = ep.lock().clone();
    Json(json!({
        "name": ep.id.name, "ip": ep.id.ip.to_string(), "mac": ep.id.mac, "fctuid": ep.id.fctuid,
        "hostname": ep.id.hostname, "user": ep.id.user, "os": ep.id.os, "fct_version": ep.id.fct_version,
        "registered": st.registered, "device_id": st.device_id, "ems_serial": st.ems_serial,
        "quarantined": st.is_quarantined(),
        "quarantine_id": st.quarantine.as_ref().map(|q| q.id),
        "quarantine_message": st.quarantine.as_ref().map(|q| q.message.clone()),
        "pending_release": st.pending_release.is_some(),
        "ka_interval_ms": st.ka_interval.as_millis() as u64,
        "contacts": st.contacts, "last_contact": st.last_contact_ms, "last_error": st.last_error,
        "profile": {"name": st.profile.name, "log_upload_enabled": st.profile.log_upload_enabled,
                    "log_upload_server": st.profile.log_upload_server},
        "log_upload": ep.uplink.status(),
    }))
    .into_response()
}

async fn fetch_h(
    State(sh): ApiState,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let ep = match find(&sh, &name) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(raw) = body.get("url").and_then(|v| v.as_str()) else {
        return bad("body must be {\"url\": \"http://...\"}");
    };
    let url = match fetch::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return bad(e),
    };
    let quarantined = ep.lock().is_quarantined();
    let result = if quarantined {
        fetch::FetchResult::quarantined()
    } else {
        match &sh.proxy {
            Some(route) => {
                fetch::fetch(
                    route,
                    ep.netns.as_deref(),
                    ep.id.ip.into(),
                    &url,
                    USER_AGENT,
                )
                .await
            }
            None => fetch::FetchResult::failed("no proxy configured (--proxy)"),
        }
    };
    let sn = ems_sn(&ep);
    for line in logs::fetch_logs(&sh.clock, &ep.id, &sn, &url, &result) {
        ep.uplink.send(line);
    }
    sh.bus.emit_as(
        &ep.id.name,
        EventKind::EndpointFetch,
        json!({"endpoint": ep.id.name, "ip": ep.id.ip.to_string(), "url": url.absolute(), "ok": result.ok,
               "status": result.status, "blocked_by": result.blocked_by, "bytes": result.bytes,
               "sha256": result.sha256, "error": result.error}),
    );
    Json(serde_json::to_value(&result).unwrap_or(Value::Null)).into_response()
}

async fn access_code(
    State(sh): ApiState,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let ep = match find(&sh, &name) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(code) = body.get("code").and_then(|v| v.as_str()) else {
        return bad("body must be {\"code\": \"...\"}");
    };
    let result = ep.lock().enter_code(code);
    match result {
        Ok(qid) => {
            tracing::info!(endpoint = %ep.id.name, quarantine_id = qid, "released with the access code");
            // EMS learns it now, not at the next keep-alive.
            ep.wake.notify_one();
            sh.bus.emit_as(
                &ep.id.name,
                EventKind::EndpointReleased,
                json!({"endpoint": ep.id.name, "fctuid": ep.id.fctuid, "ip": ep.id.ip.to_string(),
                       "quarantine_id": qid, "by": "access-code"}),
            );
            ep.uplink.send(logs::event_log(
                &sh.clock,
                &ep.id,
                &ems_sn(&ep),
                "Endpoint released from quarantine with the access code",
            ));
            Json(json!({"ok": true, "released": true, "quarantine_id": qid})).into_response()
        }
        Err(e) => {
            let quarantined = ep.lock().is_quarantined();
            let status = if quarantined {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::CONFLICT
            };
            (
                status,
                Json(
                    json!({"ok": false, "released": false, "quarantined": quarantined, "error": e}),
                ),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A stand-in EMS telemetry server: answers every frame `OK` with `PERCON=1`; with
    /// `close_after_reply` it closes the connection after each reply anyway (an EMS that timed
    /// the idle connection out), so the endpoint finds its kept connection stale.
    async fn fake_ems(
        ca: &LabCa,
        close_after_reply: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let cert = ca
            .issue("FCTEMS0000000001", &["10.115.1.30".into()])
            .unwrap();
        let tls = fortilab_core::tls::server_config(ca, &cert, ClientAuth::None, &[]).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns, frames) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c2, f2) = (conns.clone(), frames.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                c2.fetch_add(1, Ordering::SeqCst);
                let (acceptor, f2) = (acceptor.clone(), f2.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    while let Ok(_req) = proto::read_frame(&mut s, &mut buf).await {
                        f2.fetch_add(1, Ordering::SeqCst);
                        let mut r = proto::Frame::new("FCTEMS", "FCTEMS0000000001", "REPLY", "OK");
                        r.put("STATUS", "OK")
                            .put("KA_INTERVAL_MS", 30)
                            .put("DEVICE_ID", 1)
                            .put("PERCON", 1);
                        if proto::write_frame(&mut s, &r).await.is_err() || close_after_reply {
                            return;
                        }
                    }
                });
            }
        });
        (addr, conns, frames)
    }

    async fn run(close_after_reply: bool) -> (usize, usize, Option<String>) {
        let ca = LabCa::generate("t").unwrap();
        let (real, conns, frames) = fake_ems(&ca, close_after_reply).await;
        let lab: SocketAddr = "10.115.1.30:8013".parse().unwrap();
        let mut map = LabMap::new();
        map.add_service(lab, real);
        let dir = tempfile::tempdir().unwrap();
        let cfg = EndpointConfig {
            identities: identity::identities(1, "PC-{n}", "u", "10.115.2.52".parse().unwrap(), 1)
                .unwrap(),
            ems: lab,
            proxy: None,
            default_ka: Duration::from_millis(30),
            register_spread: Duration::ZERO,
            log_upload_every: Duration::from_secs(1),
            netns: Vec::new(),
        };
        let env = DeviceEnv {
            lab_map: map,
            ..DeviceEnv::with_ca(Arc::new(ca), 1, Some(dir.path()))
        };
        let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sd = CancellationToken::new();
        let running = start(cfg, env, Listeners { control }, sd.clone())
            .await
            .unwrap();
        let ep = running.shared.endpoints[0].clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while ep.lock().contacts < 6 {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", ep.lock());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = ep.lock().last_error.clone();
        sd.cancel();
        running.wait().await;
        (
            conns.load(Ordering::SeqCst),
            frames.load(Ordering::SeqCst),
            err,
        )
    }

    #[tokio::test]
    async fn keeps_the_telemetry_connection_while_ems_says_percon() {
        let (conns, frames, err) = run(false).await;
        assert_eq!(err, None);
        assert!(frames >= 6, "{frames}");
        assert_eq!(conns, 1, "one connection for {frames} exchanges");
    }

    #[tokio::test]
    async fn reconnects_when_ems_closed_the_kept_connection() {
        let (conns, frames, err) = run(true).await;
        assert_eq!(err, None, "a stale kept connection is not an error");
        assert!(frames >= 6, "{frames}");
        assert_eq!(conns, frames, "one connection per exchange");
    }
}
