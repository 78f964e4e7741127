//! Log forwarding: every line the [`crate::logs::LogWriter`] writes goes to FortiAnalyzer over
//! the log channel (`config log fortianalyzer setting`, [`fortilab_core::logchan::LogSender`])
//! and to syslog (`config log syslogd setting`, [`syslog`]). FortiAnalyzer notifications are
//! handed to the automation engine through a bounded queue (acknowledged only once queued); the
//! connection state feeds `/api/v2/monitor/log/fortianalyzer[-queue]`; connection down/up
//! writes FortiOS event logs.

pub mod syslog;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fortilab_core::logchan::{
    Hello, LogSender, Notification, RegStatus, SenderConfig, SenderStats, UploadOption,
};
use fortilab_core::supervise::{share_receiver, SharedReceiver};
use fortilab_core::EventKind;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::tree::Config;
use crate::config::ChangeEvent;
use crate::device::{Device, EmsState, FabricStatus, FazState};
use crate::logs::LogLine;

/// `config log fortianalyzer setting` as the forwarder uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FazSettings {
    pub server: String,
    /// `realtime`, `1-minute`, `5-minute`, `store-and-upload`.
    pub upload: String,
    pub reliable: bool,
}

impl FazSettings {
    pub fn from_config(cfg: &Config) -> Option<FazSettings> {
        let e = cfg.single("log fortianalyzer setting")?;
        if e.scalar("status") != Some("enable") {
            return None;
        }
        let server = e.scalar("server").unwrap_or("").trim().to_string();
        if server.is_empty() {
            return None;
        }
        Some(FazSettings {
            server,
            upload: e.scalar("upload-option").unwrap_or("5-minute").to_string(),
            reliable: e.scalar("reliable") == Some("enable"),
        })
    }

    /// Upload timing (lab time). `store-and-upload` uploads hourly [P].
    pub fn upload_option(&self) -> UploadOption {
        match self.upload.as_str() {
            "realtime" => UploadOption::Realtime,
            "1-minute" => UploadOption::Interval(Duration::from_secs(60)),
            "store-and-upload" => UploadOption::Interval(Duration::from_secs(3600)),
            _ => UploadOption::Interval(Duration::from_secs(300)),
        }
    }
}

/// `config log syslogd setting` (lab addresses, before the lab map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    pub server: String,
    pub port: u16,
    pub reliable: bool,
    pub format: String,
    pub facility: String,
}

impl SyslogConfig {
    pub fn from_config(cfg: &Config) -> Option<SyslogConfig> {
        let e = cfg.single("log syslogd setting")?;
        if e.scalar("status") != Some("enable") {
            return None;
        }
        let server = e.scalar("server").unwrap_or("").trim().to_string();
        if server.is_empty() {
            return None;
        }
        Some(SyslogConfig {
            server,
            port: e.scalar("port").and_then(|p| p.parse().ok()).unwrap_or(514),
            reliable: e.scalar("mode") == Some("reliable"),
            format: e.scalar("format").unwrap_or("default").to_string(),
            facility: e.scalar("facility").unwrap_or("local7").to_string(),
        })
    }
}

struct FazOut {
    settings: FazSettings,
    sender: LogSender,
    stop: CancellationToken,
}

struct SyslogOut {
    cfg: SyslogConfig,
    tx: mpsc::Sender<Arc<LogLine>>,
    stop: CancellationToken,
}

#[derive(Default)]
struct Outputs {
    faz: Option<FazOut>,
    syslog: Option<SyslogOut>,
}

/// The log forwarder of one FortiGate.
pub struct Forwarder {
    dev: Arc<Device>,
    tls: Arc<rustls::ClientConfig>,
    queue_dir: PathBuf,
    out: Mutex<Outputs>,
    pub syslog_stats: Arc<syslog::SyslogStats>,
    shutdown: CancellationToken,
    /// Serializes reconfiguration.
    reconf: tokio::sync::Mutex<()>,
    /// The automation engine's notification queue (bounded: see [`Forwarder::start`]).
    notify_tx: mpsc::Sender<Notification>,
    /// Whether the log writer's sink is in place (added once, by the first instance of the
    /// supervised configuration task).
    sink_added: AtomicBool,
}

/// The supervised task that follows the configuration (`/_lab/tasks`).
pub const CONFIG_TASK: &str = "log forward: configuration";
/// A reconfiguration run after a configuration change (reported if it panics).
pub const RECONFIGURE_TASK: &str = "log forward: reconfigure";
/// The supervised task that watches the FortiAnalyzer connection (event logs, queue errors).
pub const FAZ_WATCH_TASK: &str = "log forward: FortiAnalyzer connection";

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

/// Feeds the monitor API from the sender's figures; EMS state comes from the provider that
/// was installed before.
struct FazStatus {
    prev: Arc<dyn FabricStatus>,
    fwd: std::sync::Weak<Forwarder>,
}

impl FabricStatus for FazStatus {
    fn ems(&self, name: &str) -> EmsState {
        self.prev.ems(name)
    }

    fn faz(&self) -> FazState {
        match self.fwd.upgrade().and_then(|f| f.faz_stats()) {
            None => FazState::default(),
            Some(s) => FazState {
                registration: match s.registration {
                    Some(RegStatus::Registered) => "registered",
                    Some(RegStatus::Unauthorized) => "unregistered",
                    None => "unknown",
                }
                .into(),
                connection: match s.registration {
                    Some(RegStatus::Registered) => "allow",
                    Some(RegStatus::Unauthorized) => "deny",
                    None => "unknown",
                }
                .into(),
                connected: s.connected,
                faz_serial: s.server_serial.clone().unwrap_or_default(),
                cached_logs: s.queued,
                failed_logs: 0,
                sent_logs: s.acked_seq,
            },
        }
    }
}

impl Forwarder {
    /// Starts forwarding. Registers with the log writer, which first hands over the memory
    /// ring's lines, so no line written before or during start is missed. `tls`: lab CA roots
    /// and the FortiGate's certificate (CN = serial). `notify_tx`: where FortiAnalyzer
    /// notifications go (the automation engine's queue); a notification is acknowledged to
    /// FortiAnalyzer only once it is in that queue, and the channel waits while it is full.
    pub fn start(
        dev: Arc<Device>,
        tls: Arc<rustls::ClientConfig>,
        notify_tx: mpsc::Sender<Notification>,
        shutdown: CancellationToken,
    ) -> Arc<Forwarder> {
        let queue_dir = match &dev.data_dir {
            Some(d) => d.join("logqueue"),
            None => std::env::temp_dir().join(format!(
                "fortilab-logqueue-{}-{}",
                dev.serial,
                std::process::id()
            )),
        };
        let fwd = Arc::new(Forwarder {
            dev: dev.clone(),
            tls,
            queue_dir,
            out: Mutex::new(Outputs::default()),
            syslog_stats: Arc::new(syslog::SyslogStats::default()),
            shutdown: shutdown.clone(),
            reconf: tokio::sync::Mutex::new(()),
            notify_tx,
            sink_added: AtomicBool::new(false),
        });
        dev.set_fabric(Arc::new(FazStatus {
            prev: dev.fabric(),
            fwd: Arc::downgrade(&fwd),
        }));
        // Supervised (`/_lab/tasks`, `task.*` events): a restarted instance goes on with the
        // same configuration subscription and keeps the log writer's sink, which is added once.
        let cfg_rx = share_receiver(dev.config.subscribe());
        let f2 = fwd.clone();
        let stop = shutdown.clone();
        dev.supervisor.spawn(CONFIG_TASK, shutdown, move || {
            f2.clone().config_task(cfg_rx.clone(), stop.clone())
        });
        fwd
    }

    /// Applies the configuration, adds the log writer's sink (the first instance only), then
    /// follows configuration changes until shutdown, when it stops the outputs.
    async fn config_task(
        self: Arc<Self>,
        cfg_rx: SharedReceiver<broadcast::Receiver<ChangeEvent>>,
        stop: CancellationToken,
    ) {
        let mut cfg_rx = cfg_rx.lock().await;
        self.reconfigure().await;
        // Every line is handed over by the writer itself, the ring's lines first: the
        // FortiAnalyzer queue loses none however fast logs are written; syslog is best
        // effort (a full queue drops, as on the product).
        if !self.sink_added.swap(true, Ordering::SeqCst) {
            let weak = Arc::downgrade(&self);
            self.dev.logs.add_sink(move |line| {
                if let Some(f) = weak.upgrade() {
                    f.dispatch(line);
                }
            });
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                c = cfg_rx.recv() => {
                    if matches!(c, Err(broadcast::error::RecvError::Closed)) { break; }
                    if cfg_rx.is_empty() {
                        let f3 = self.clone();
                        self.dev.supervisor.spawn_once(RECONFIGURE_TASK, async move {
                            f3.reconfigure().await
                        });
                    }
                }
            }
        }
        self.stop_all().await;
        // The configuration store is gone before shutdown: nothing more to follow (returning
        // now would have the supervisor start the task again).
        stop.cancelled().await;
    }

    /// Hands a line to the outputs (called by the log writer for every line): the
    /// FortiAnalyzer queue, and the syslog sender's queue while it has room.
    fn dispatch(&self, l: &Arc<LogLine>) {
        let out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = &out.faz {
            f.sender.send(l.line.to_string());
        }
        if let Some(s) = &out.syslog {
            if s.tx.try_send(l.clone()).is_err() {
                let n = self
                    .syslog_stats
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n % 10_000 == 0 {
                    tracing::warn!(
                        dropped = n + 1,
                        "syslog sender's queue is full: lines not sent to syslog (best effort)"
                    );
                }
            }
        }
    }

    /// The FortiAnalyzer sender's figures (None when forwarding is off).
    pub fn faz_stats(&self) -> Option<SenderStats> {
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .faz
            .as_ref()
            .map(|f| f.sender.stats())
    }

    /// Drops the FortiAnalyzer connection and connects again at once (monitor
    /// `log/fortianalyzer/restart` [P]); false when forwarding to FortiAnalyzer is off.
    pub fn restart_faz(&self) -> bool {
        let cur = self
            .out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .faz
            .as_ref()
            .map(|f| (f.sender.clone(), f.settings.server.clone()));
        match cur {
            Some((sender, server)) => match self.lab_target(&server, 514) {
                Some(t) => {
                    sender.set_server(t, server);
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// The FortiAnalyzer sender (tests and benchmarks: flush, stats).
    pub fn faz_sender(&self) -> Option<LogSender> {
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .faz
            .as_ref()
            .map(|f| f.sender.clone())
    }

    /// The lab surface: `GET /_lab/logforward` (sender queue figures, syslog counters).
    pub fn lab_router(self: &Arc<Self>) -> axum::Router {
        async fn h(
            axum::extract::State(f): axum::extract::State<Arc<Forwarder>>,
        ) -> axum::Json<serde_json::Value> {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &f.syslog_stats;
            axum::Json(serde_json::json!({
                "fortianalyzer": f.faz_stats(),
                "syslog": {"sent": s.sent.load(Relaxed), "dropped": s.dropped.load(Relaxed), "errors": s.errors.load(Relaxed)},
                "queue_dir": f.queue_dir.display().to_string(),
            }))
        }
        axum::Router::new()
            .route("/_lab/logforward", axum::routing::get(h))
            .with_state(self.clone())
    }

    async fn stop_all(&self) {
        let (faz, sys) = {
            let mut o = self.out.lock().unwrap_or_else(|p| p.into_inner());
            (o.faz.take(), o.syslog.take())
        };
        if let Some(s) = sys {
            s.stop.cancel();
        }
        if let Some(f) = faz {
            f.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), f.sender.stopped()).await;
        }
    }

    fn lab_target(&self, server: &str, port: u16) -> Option<SocketAddr> {
        let ip: IpAddr = server.parse().ok()?;
        Some(self.dev.lab_map.resolve(SocketAddr::new(ip, port)))
    }

    /// Applies the current configuration (starts, stops, re-points outputs).
    pub async fn reconfigure(self: &Arc<Self>) {
        let _g = self.reconf.lock().await;
        if self.shutdown.is_cancelled() {
            return;
        }
        let (faz, sys) = self
            .dev
            .config
            .with(|c| (FazSettings::from_config(c), SyslogConfig::from_config(c)));
        // Syslog.
        {
            let mut o = self.out.lock().unwrap_or_else(|p| p.into_inner());
            let same = o.syslog.as_ref().map(|s| &s.cfg) == sys.as_ref();
            if !same {
                if let Some(old) = o.syslog.take() {
                    old.stop.cancel();
                }
                if let Some(cfg) = sys {
                    match self.lab_target(&cfg.server, cfg.port) {
                        Some(target) => {
                            let stop = self.shutdown.child_token();
                            let settings = syslog::SyslogSettings {
                                target,
                                reliable: cfg.reliable,
                                format: cfg.format.clone(),
                                facility: syslog::facility_code(&cfg.facility),
                                hostname: self.dev.hostname(),
                            };
                            let tx = syslog::start(
                                settings,
                                self.syslog_stats.clone(),
                                &self.dev.supervisor,
                                stop.clone(),
                            );
                            o.syslog = Some(SyslogOut { cfg, tx, stop });
                        }
                        None => {
                            tracing::warn!(server = %cfg.server, "syslogd server is not an IP address; not sending")
                        }
                    }
                }
            }
        }
        // FortiAnalyzer.
        let current = {
            let o = self.out.lock().unwrap_or_else(|p| p.into_inner());
            o.faz
                .as_ref()
                .map(|f| (f.settings.clone(), f.sender.clone()))
        };
        match (current, faz) {
            (None, None) => {}
            (Some((old, sender)), Some(new))
                if old.upload == new.upload && old.reliable == new.reliable =>
            {
                if old.server != new.server {
                    if let Some(t) = self.lab_target(&new.server, 514) {
                        sender.set_server(t, new.server.clone());
                        if let Some(f) = self
                            .out
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .faz
                            .as_mut()
                        {
                            f.settings = new;
                        }
                    }
                }
            }
            (cur, new) => {
                let old = self
                    .out
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .faz
                    .take();
                if let Some(old) = old {
                    old.stop.cancel();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), old.sender.stopped()).await;
                }
                drop(cur);
                if let Some(new) = new {
                    if let Err(e) = self.start_faz(new) {
                        tracing::warn!(error = %e, "could not start log forwarding to FortiAnalyzer");
                    }
                }
            }
        }
    }

    fn start_faz(self: &Arc<Self>, s: FazSettings) -> Result<(), String> {
        let target = self
            .lab_target(&s.server, 514)
            .ok_or_else(|| format!("FortiAnalyzer server {:?} is not an IP address", s.server))?;
        let stop = self.shutdown.child_token();
        let cfg = SenderConfig {
            server: target,
            server_name: s.server.clone(),
            tls: self.tls.clone(),
            hello: Hello {
                serial: self.dev.serial.clone(),
                hostname: self.dev.hostname(),
                platform: "FortiGate-VM64".into(),
                version: self.dev.version.to_string(),
                device_type: "fortigate".into(),
                vdom: "root".into(),
                ip: self.dev.lab_ip.map(|i| i.to_string()),
            },
            queue_dir: self.queue_dir.clone(),
            // Lab knob: FORTILAB_LOG_QUEUE_MEM (lines kept in memory before spilling to disk).
            mem_limit: std::env::var("FORTILAB_LOG_QUEUE_MEM")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20_000),
            upload: s.upload_option(),
            clock: self.dev.clock,
            reconnect_delay: Duration::from_millis(200),
        };
        // Notifications go straight to the automation engine's queue (it emits the lab event).
        let sender = LogSender::start_supervised(
            cfg,
            self.notify_tx.clone(),
            &self.dev.supervisor,
            stop.clone(),
        )
        .map_err(|e| e.to_string())?;
        // Connection state → event logs; queue trouble (disk full) → lab events. Supervised;
        // what it last reported outlives a restarted instance (no repeated event logs).
        let watch = FazWatch {
            dev: self.dev.clone(),
            sender: sender.clone(),
            server: s.server.clone(),
            seen: Arc::new(Mutex::new((false, None))),
        };
        let stop2 = stop.clone();
        self.dev
            .supervisor
            .spawn(FAZ_WATCH_TASK, stop.clone(), move || {
                watch.clone().run(stop2.clone())
            });
        self.out.lock().unwrap_or_else(|p| p.into_inner()).faz = Some(FazOut {
            settings: s,
            sender,
            stop,
        });
        Ok(())
    }
}

/// Watches the FortiAnalyzer sender: connection up/down → event logs, queue errors → lab
/// events.
#[derive(Clone)]
struct FazWatch {
    dev: Arc<Device>,
    sender: LogSender,
    server: String,
    /// What was last reported: connected, queue error.
    seen: Arc<Mutex<(bool, Option<String>)>>,
}

impl FazWatch {
    /// Woken by the sender's state changes (no polling while nothing happens).
    async fn run(self, stop: CancellationToken) {
        let mut changes = self.sender.changed();
        loop {
            self.check();
            tokio::select! {
                _ = stop.cancelled() => break,
                r = changes.changed() => if r.is_err() { break },
            }
        }
    }

    fn check(&self) {
        let dev = &self.dev;
        let st = self.sender.stats();
        let now = st.connected && st.registration.is_some();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if now != seen.0 {
            seen.0 = now;
            faz_event(dev, &self.server, now);
        }
        if st.queue_error != seen.1 {
            match &st.queue_error {
                Some(e) => {
                    tracing::error!(error = %e, "the FortiAnalyzer log queue cannot spill to disk");
                    dev.events.emit(
                        EventKind::LogQueueError,
                        serde_json::json!({"error": e, "dropped": st.dropped,
                                           "in_memory": st.in_memory}),
                    );
                }
                None => {
                    dev.events.emit(
                        EventKind::LogQueueRecovered,
                        serde_json::json!({"dropped": st.dropped, "spilled": st.spilled}),
                    );
                }
            }
            seen.1 = st.queue_error;
        }
    }
}

/// Event logs for the FortiAnalyzer connection: down 0100022902 [I], up 0100022903 [P].
fn faz_event(dev: &Device, server: &str, up: bool) {
    let (logid, level, desc, status) = if up {
        (
            "0100022903",
            "information",
            "FortiAnalyzer connection up",
            "up",
        )
    } else {
        (
            "0100022902",
            "warning",
            "FortiAnalyzer connection down",
            "down",
        )
    };
    dev.logs.event_system(logid, level, desc, |record| {
        record
            .str("server", server.to_string())
            .str("status", status)
            .str("msg", format!("{desc}: {server}"));
    });
    dev.events.emit(
        if up {
            EventKind::FazConnected
        } else {
            EventKind::FazDisconnected
        },
        serde_json::json!({"server": server}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_the_seed() {
        let version = crate::config::FosVersion::parse("6.4.4").unwrap();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let base = crate::config::factory(version, "FGT", &mut rng);
        let c = crate::config::parse_config(
            &base,
            "config log fortianalyzer setting\nset status enable\nset server \"10.115.1.20\"\nset upload-option realtime\nset reliable enable\nend\nconfig log syslogd setting\nset status enable\nset server 10.115.1.40\nset mode reliable\nend\n",
            "t",
            version,
            false,
            &mut rng,
        )
        .unwrap()
        .0;
        let f = FazSettings::from_config(&c).unwrap();
        assert_eq!(f.server, "10.115.1.20");
        assert_eq!(f.upload_option(), UploadOption::Realtime);
        assert!(f.reliable);
        let s = SyslogConfig::from_config(&c).unwrap();
        assert_eq!(
            (s.port, s.reliable, s.format.as_str()),
            (514, true, "default")
        );
        assert!(FazSettings::from_config(&base).is_none());
    }
}
