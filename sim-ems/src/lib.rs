//! # fortilab-ems: the FortiClient EMS twin
//!
//! - [`api`]: the EMS REST API under `/api/v1/` (two-cookie sign-in, CSRF, the `retval`
//!   envelope, endpoints, quarantine, fabric devices), the fabric connector side used by
//!   FortiGates with their lab-CA certificate, and the lab surface under `/_lab/`.
//! - [`telemetry`]: the FortiClient telemetry server (TLS, lab port 8013) with the framing of
//!   [`proto`].
//! - [`state`]: endpoints, quarantine and one-time access codes, fabric devices (pure logic);
//!   [`store`]: its persistence under `--data-dir`.
//!
//! [`start`] runs everything on listeners the caller binds and reports the real addresses.

pub mod api;
pub mod cli;
pub mod config;
pub mod state;
pub mod store;
pub mod telemetry;

/// The telemetry wire format (defined in `fortilab_core::telemetry`, shared with sim-endpoint).
pub use fortilab_core::telemetry as proto;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fortilab_core::tls::ClientAuth;
pub use fortilab_core::DeviceEnv;
use fortilab_core::{EventBus, LabClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use state::EmsState;

/// What the EMS starts with, resolved from flags and the config file (the lab it runs in is
/// the [`DeviceEnv`]: its data directory holds the EMS state).
#[derive(Debug, Clone)]
pub struct EmsConfig {
    pub hostname: String,
    pub serial: String,
    pub version: String,
    pub admin_user: String,
    pub admin_password: String,
    /// Keep-alive interval, lab time.
    pub ka_interval: Duration,
    pub auto_authorize: bool,
    /// Replies carry `PERCON=1`: FortiClient keeps its telemetry connection open for the next
    /// keep-alive instead of connecting (and resuming its TLS session) each time.
    pub persistent_connections: bool,
    pub lab_ip: String,
    pub profile_name: String,
    /// FortiAnalyzer lab address for FortiClient log upload.
    pub faz: Option<String>,
    pub log_upload_enabled: bool,
    pub quarantine_message: String,
}

impl EmsConfig {
    /// Defaults for tests and in-process use.
    pub fn for_tests() -> Self {
        EmsConfig {
            hostname: "EMS-LAB".into(),
            serial: "FCTEMS0000000001".into(),
            version: "6.4.3".into(),
            admin_user: "admin".into(),
            admin_password: "fortilab".into(),
            ka_interval: Duration::from_millis(200),
            auto_authorize: false,
            persistent_connections: true,
            lab_ip: "10.115.1.30".into(),
            profile_name: "Default".into(),
            faz: None,
            log_upload_enabled: false,
            quarantine_message: DEFAULT_QUARANTINE_MESSAGE.into(),
        }
    }
}

/// The message shown on a quarantined endpoint [P].
pub const DEFAULT_QUARANTINE_MESSAGE: &str =
    "This endpoint has been quarantined by your administrator. Contact IT support.";

/// An admin session (cookies `sessionid` + `csrftoken`).
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
}

/// Routine keep-alive events of one endpoint are at least this far apart (lab ms).
pub const ROUTINE_KA_EVENT_MS: i64 = 10_000;

/// State shared by the API, the telemetry server and the flusher.
pub struct Shared {
    pub cfg: EmsConfig,
    pub clock: LabClock,
    pub bus: EventBus,
    /// Supervises the listeners and background loops (`task.*` events on `bus`).
    pub supervisor: fortilab_core::supervise::Supervisor,
    pub state: Mutex<EmsState>,
    pub store: store::Store,
    pub auto_authorize: AtomicBool,
    pub sessions: Mutex<HashMap<String, Session>>,
    ka_count: AtomicU64,
    /// Lab ms of each endpoint's last routine `endpoint.keepalive` event.
    ka_events: Mutex<HashMap<u64, i64>>,
    /// Keep-alives handled since start.
    pub keepalives: AtomicU64,
    /// Per FortiClient UID, the persistent telemetry connection it keeps open, to ask it for
    /// an exchange at once (see [`Shared::push`]).
    pushers: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// `NOTIFY` frames sent (pushes).
    pub pushes: AtomicU64,
    /// Held by the one task writing the state (group commit, see [`Shared::persist`]).
    flush_lock: tokio::sync::Mutex<()>,
    /// Set when a write failed: the next write is a whole snapshot.
    force_snapshot: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("serial", &self.cfg.serial)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Lab time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ns() / 1_000_000
    }

    /// Runs `f` with the OS CSPRNG: session ids, CSRF tokens and access codes never come
    /// from the seed (they must not repeat after a restart).
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut rand::rngs::OsRng) -> T) -> T {
        f(&mut fortilab_core::secrets::csprng())
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, EmsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once every change made before the call is durable (group commit): the caller
    /// that gets the write lock appends everything changed so far as one journal record and
    /// fsyncs it; callers queued behind it usually find their change already written.
    pub async fn persist(self: &Arc<Self>) -> std::io::Result<()> {
        let target = self.lock().generation;
        if self.store.written() >= target && !self.force_snapshot.load(Ordering::Relaxed) {
            return Ok(());
        }
        let _writer = self.flush_lock.lock().await;
        if self.store.written() >= target && !self.force_snapshot.load(Ordering::Relaxed) {
            return Ok(());
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.flush_blocking())
            .await
            .map_err(std::io::Error::other)?
    }

    /// One write: the pending changes as a journal record, or a whole snapshot when the
    /// journal is large (or a previous write failed).
    fn flush_blocking(&self) -> std::io::Result<()> {
        let force = self.force_snapshot.swap(false, Ordering::Relaxed);
        let (rec, snapshot) = {
            let mut st = self.lock();
            let behind = st.generation > self.store.written();
            if force || self.store.wants_snapshot() || (behind && !st.has_changes()) {
                st.clear_changes();
                (None, Some(st.clone()))
            } else {
                (st.take_changes(), None)
            }
        };
        let result = match (&rec, snapshot) {
            (_, Some(st)) => serde_json::to_vec(&st)
                .map_err(std::io::Error::other)
                .and_then(|bytes| self.store.snapshot(st.generation, &bytes)),
            (Some(rec), None) => self.store.append(rec),
            (None, None) => Ok(()),
        };
        if result.is_err() {
            // The changes taken above are no longer marked: the next write is a snapshot.
            self.force_snapshot.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Writes the whole state including `last_seen` as a snapshot (shutdown).
    pub fn persist_all_blocking(&self) -> std::io::Result<()> {
        let st = {
            let mut st = self.lock();
            st.generation += 1;
            st.clear_changes();
            st.clone()
        };
        let bytes = serde_json::to_vec(&st).map_err(std::io::Error::other)?;
        self.store.snapshot(st.generation, &bytes)
    }

    /// Writes the whole state into `dir` with the layout of the data directory (a lab
    /// snapshot taken while EMS runs on): the state document as of now (cloned under the
    /// state lock, `last_seen` included; no journal) and the data directory's other files.
    pub fn snapshot_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let state_name = self
            .store
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let journal_name = self
            .store
            .journal_path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The store's files sit in the data directory.
        let data_dir = self
            .store
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        fortilab_core::snapshot::copy_dir_except(
            &data_dir,
            dir,
            &[state_name.as_str(), journal_name.as_str()],
        )?;
        let st = self.lock().clone();
        let bytes = serde_json::to_vec(&st).map_err(std::io::Error::other)?;
        store::write_atomic(&dir.join(&state_name), &bytes)
    }

    /// Whether a routine keep-alive (one that changed nothing) of `device_id` is an
    /// `endpoint.keepalive` event: one in `endpoints / 50` above 50 endpoints, and at most one
    /// per [`ROUTINE_KA_EVENT_MS`] of lab time per endpoint. With `--timing fast` (a keep-alive
    /// every 200 ms before pushes, 2 s now) every one was an event that every reader of the lab's events (the
    /// orchestrator's timeline files, a class) parsed: most of an idle lab's work. Keep-alives
    /// that change something (quarantine state, a code) are always events.
    pub fn sample_keepalive(&self, endpoints: usize, device_id: u64, now_ms: i64) -> bool {
        let n = self.ka_count.fetch_add(1, Ordering::Relaxed);
        let every = (endpoints / 50).max(1) as u64;
        if n % every != 0 {
            return false;
        }
        let mut last = self.ka_events.lock().unwrap_or_else(|e| e.into_inner());
        let due = last
            .get(&device_id)
            .is_none_or(|&t| now_ms - t >= ROUTINE_KA_EVENT_MS || now_ms < t);
        if due {
            last.insert(device_id, now_ms);
        }
        due
    }

    /// Asks the endpoint `fctuid` for an exchange now, through the persistent telemetry
    /// connection it keeps open (a `NOTIFY` frame, see [`telemetry`]): an action queued for it
    /// (quarantine, release) is delivered at once instead of at its next keep-alive. False
    /// when it has no such connection (it gets the action at its next keep-alive).
    pub fn push(&self, fctuid: &str) -> bool {
        let n = self
            .pushers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(fctuid)
            .cloned();
        match n {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// Registers the connection of `fctuid` that [`Shared::push`] wakes (the latest one wins).
    pub(crate) fn set_pusher(&self, fctuid: &str, n: &Arc<tokio::sync::Notify>) {
        self.pushers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fctuid.to_string(), n.clone());
    }

    /// Forgets a connection's registration (unless a newer connection replaced it).
    pub(crate) fn clear_pusher(&self, fctuid: &str, n: &Arc<tokio::sync::Notify>) {
        let mut m = self.pushers.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(fctuid).is_some_and(|cur| Arc::ptr_eq(cur, n)) {
            m.remove(fctuid);
        }
    }

    pub fn ka_interval_ms(&self) -> u64 {
        (self.cfg.ka_interval.as_millis() as u64).max(1)
    }

    /// An endpoint is online while its last contact is within three keep-alive periods.
    pub fn online_window_ms(&self) -> i64 {
        (3 * self.ka_interval_ms() as i64).max(1_000)
    }
}

/// Listeners handed to [`start`].
pub struct Listeners {
    pub api: TcpListener,
    pub telemetry: TcpListener,
}

/// A running EMS.
pub struct Running {
    pub api_addr: SocketAddr,
    pub telemetry_addr: SocketAddr,
    /// The lab token of the `/_lab/` routes.
    pub lab_token: fortilab_core::secrets::LabToken,
    pub shared: Arc<Shared>,
    pub tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// Waits until every server task ended (after the shutdown token fired), then writes the
    /// final state.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while self.tasks.join_next().await.is_some() {}
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.persist_all_blocking()).await??;
        Ok(())
    }
}

/// Starts the EMS on the given listeners.
pub async fn start(
    cfg: EmsConfig,
    env: DeviceEnv,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let (ca, clock) = (&*env.ca, env.clock);
    let store = store::Store::new(env.require_data_dir("the EMS")?);
    let st = store.load()?;
    let bus = EventBus::new(&cfg.hostname, clock);
    bus.close_on(&shutdown);
    let mut sans = vec![cfg.lab_ip.clone(), cfg.hostname.clone()];
    sans.retain(|s| !s.is_empty());
    let cert = ca.issue(&cfg.serial, &sans)?;
    let api_tls =
        fortilab_core::tls::server_config(ca, &cert, ClientAuth::Optional, &[b"http/1.1"])?;
    let tel_tls = telemetry::with_session_tickets(fortilab_core::tls::server_config(
        ca,
        &cert,
        ClientAuth::None,
        &[],
    )?)?;
    let shared = Arc::new(Shared {
        auto_authorize: AtomicBool::new(cfg.auto_authorize),
        cfg,
        clock,
        supervisor: fortilab_core::supervise::Supervisor::new(Some(bus.clone())),
        bus,
        state: Mutex::new(st),
        store,
        sessions: Mutex::new(HashMap::new()),
        ka_count: AtomicU64::new(0),
        ka_events: Mutex::new(HashMap::new()),
        keepalives: AtomicU64::new(0),
        pushers: Mutex::new(HashMap::new()),
        pushes: AtomicU64::new(0),
        flush_lock: tokio::sync::Mutex::new(()),
        force_snapshot: AtomicBool::new(false),
    });
    let api_addr = listeners.api.local_addr()?;
    let telemetry_addr = listeners.telemetry.local_addr()?;
    let mut tasks = tokio::task::JoinSet::new();
    // Supervised: a task that panics is reported (`task.panicked`) and restarted on the same
    // listener.
    let sup = shared.supervisor.clone();
    {
        let app = api::router(shared.clone());
        let sd = shutdown.clone();
        let http = env.http.clone().with_supervisor(sup.clone());
        let h = sup.spawn_tcp("api", listeners.api, shutdown.clone(), move |listener| {
            let (tls, app, http, sd) = (api_tls.clone(), app.clone(), http.clone(), sd.clone());
            async move {
                if let Err(e) = fortilab_core::http::serve_https(listener, tls, app, http, sd).await
                {
                    tracing::error!(error = %e, "API server failed");
                }
            }
        })?;
        tasks.spawn(async move {
            let _ = h.await;
        });
    }
    {
        let sh = shared.clone();
        let sd = shutdown.clone();
        let h = sup.spawn_tcp(
            "telemetry",
            listeners.telemetry,
            shutdown.clone(),
            move |l| telemetry::serve(sh.clone(), l, tel_tls.clone(), sd.clone()),
        )?;
        tasks.spawn(async move {
            let _ = h.await;
        });
    }
    {
        // Background writer for changes nobody waits for.
        let sh = shared.clone();
        let sd = shutdown.clone();
        let h = sup.spawn("state writer", shutdown.clone(), move || {
            let (sh, sd) = (sh.clone(), sd.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = sd.cancelled() => break,
                        _ = tokio::time::sleep(store::FLUSH_EVERY) => {}
                    }
                    if let Err(e) = sh.persist().await {
                        tracing::error!(error = %e, "writing the EMS state failed");
                    }
                }
            }
        });
        tasks.spawn(async move {
            let _ = h.await;
        });
    }
    tracing::info!(%api_addr, %telemetry_addr, serial = %shared.cfg.serial, "EMS ready");
    Ok(Running {
        api_addr,
        telemetry_addr,
        lab_token: env.http.lab_token.clone(),
        shared,
        tasks,
    })
}

#[cfg(test)]
mod no_panic_tests;
