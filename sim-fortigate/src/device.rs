//! The device state every module of the FortiGate shares: identity, running configuration,
//! event bus, logs, the banned-IP list, the automation request queue and the providers of
//! fabric status (EMS, FortiAnalyzer) that later modules fill in.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use fortilab_core::clock::LabClock;
use fortilab_core::events::EventBus;
use fortilab_core::labnet::LabMap;
use fortilab_core::EventKind;
use tokio::sync::mpsc;

use crate::config::{ChangeEvent, ConfigStore, FosVersion};
use crate::logs::LogWriter;

/// The file under `--data-dir` holding the saved configuration.
pub const CONFIG_FILE: &str = "fgt.conf";

/// A banned (quarantined) source address (`monitor/user/banned`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ban {
    pub ip_address: String,
    /// Lab time, Unix seconds.
    pub created: i64,
    /// Lab time, Unix seconds; 0 = never.
    pub expires: i64,
    /// `admin`, `ips`, `av`, `dos`, `dlp`... (what banned it).
    pub source: String,
    pub ipv6: bool,
}

/// The banned-IP list with expiry on the lab clock. The data plane enforces it.
#[derive(Debug)]
pub struct BannedList {
    clock: LabClock,
    inner: Mutex<BTreeMap<IpAddr, Ban>>,
}

impl BannedList {
    pub fn new(clock: LabClock) -> Self {
        Self {
            clock,
            inner: Mutex::new(BTreeMap::new()),
        }
    }

    fn purge(&self, m: &mut BTreeMap<IpAddr, Ban>) {
        let now = self.clock.now_secs();
        m.retain(|_, b| b.expires == 0 || b.expires > now);
    }

    /// Bans `ip` for `expiry_secs` lab seconds (0 = until cleared).
    pub fn add(&self, ip: IpAddr, expiry_secs: i64, source: &str) -> Ban {
        let now = self.clock.now_secs();
        let ban = Ban {
            ip_address: ip.to_string(),
            created: now,
            expires: if expiry_secs > 0 {
                now + expiry_secs
            } else {
                0
            },
            source: source.to_string(),
            ipv6: ip.is_ipv6(),
        };
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(ip, ban.clone());
        ban
    }

    pub fn remove(&self, ip: IpAddr) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip)
            .is_some()
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Replaces the list (a lab snapshot being restored); entries that do not name an
    /// address are skipped.
    pub fn restore(&self, bans: Vec<Ban>) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.clear();
        for b in bans {
            if let Ok(ip) = b.ip_address.parse::<IpAddr>() {
                m.insert(ip, b);
            }
        }
    }

    /// The current (unexpired) bans.
    pub fn list(&self) -> Vec<Ban> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.purge(&mut m);
        m.values().cloned().collect()
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.purge(&mut m);
        m.contains_key(&ip)
    }
}

/// A request for the automation engine (which consumes [`Automation::take_receiver`]).
#[derive(Debug, Clone, PartialEq)]
pub enum AutomationRequest {
    /// `monitor/system/automation-stitch/test` (`diagnose automation test`).
    Test { stitch: String, log: Option<String> },
    /// `monitor/system/automation-stitch/webhook/<name>` with its JSON body.
    Webhook {
        stitch: String,
        body: serde_json::Value,
        srcip: Option<String>,
    },
}

/// Per-stitch statistics (`monitor/system/automation-stitch/stats`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StitchStats {
    /// Times the trigger fired locally.
    pub triggered: u64,
    pub relayed_to: u64,
    pub relayed_from: u64,
    /// Lab time of the last trigger, Unix seconds (0 = never).
    pub last_triggered: i64,
}

/// The queue of automation requests and the stitch statistics.
#[derive(Debug)]
pub struct Automation {
    tx: mpsc::Sender<AutomationRequest>,
    rx: Mutex<Option<mpsc::Receiver<AutomationRequest>>>,
    stats: Mutex<HashMap<String, StitchStats>>,
}

impl Default for Automation {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1024);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            stats: Mutex::new(HashMap::new()),
        }
    }
}

impl Automation {
    /// Every stitch's statistics (a lab snapshot).
    pub fn all_stats(&self) -> std::collections::BTreeMap<String, StitchStats> {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Replaces the statistics (a lab snapshot being restored).
    pub fn restore_stats(&self, stats: std::collections::BTreeMap<String, StitchStats>) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats.into_iter().collect();
    }

    /// Queues a request; false when the queue is full (nobody consumes it).
    pub fn submit(&self, req: AutomationRequest) -> bool {
        self.tx.try_send(req).is_ok()
    }

    /// The receiving end, for the automation engine (once).
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<AutomationRequest>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Records that `stitch` was triggered at lab time `now_secs`.
    pub fn record_trigger(&self, stitch: &str, now_secs: i64) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let e = s.entry(stitch.to_string()).or_default();
        e.triggered += 1;
        e.last_triggered = now_secs;
    }

    pub fn stats(&self, stitch: &str) -> StitchStats {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stitch)
            .cloned()
            .unwrap_or_default()
    }
}

/// State of one EMS connector (`monitor/endpoint-control/ems/status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EmsState {
    pub connected: bool,
    /// `connected`, `not connected`, `waiting for authorization`.
    pub status: String,
    pub ems_serial: String,
    pub websocket: String,
}

impl Default for EmsState {
    fn default() -> Self {
        Self {
            connected: false,
            status: "not connected".into(),
            ems_serial: String::new(),
            websocket: "disconnected".into(),
        }
    }
}

/// State of the FortiAnalyzer log connection (`monitor/log/fortianalyzer[-queue]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FazState {
    /// `registered`, `unregistered`, `unknown`.
    pub registration: String,
    /// `allow`, `deny`, `unknown`.
    pub connection: String,
    pub connected: bool,
    pub faz_serial: String,
    pub cached_logs: u64,
    pub failed_logs: u64,
    pub sent_logs: u64,
}

impl Default for FazState {
    fn default() -> Self {
        Self {
            registration: "unknown".into(),
            connection: "unknown".into(),
            connected: false,
            faz_serial: String::new(),
            cached_logs: 0,
            failed_logs: 0,
            sent_logs: 0,
        }
    }
}

/// Where the monitor API gets fabric connection state from. The default reports nothing
/// connected; the EMS connector and the log forwarder install their own.
pub trait FabricStatus: Send + Sync {
    /// The state of the EMS connector `name`.
    fn ems(&self, _name: &str) -> EmsState {
        EmsState::default()
    }
    /// The state of the FortiAnalyzer connection.
    fn faz(&self) -> FazState {
        FazState::default()
    }
}

/// The default [`FabricStatus`]: nothing connected.
#[derive(Debug, Default)]
pub struct NotConnected;
impl FabricStatus for NotConnected {}

/// The device's TLS identity: its lab-CA certificate (CN = serial), used as client identity
/// towards EMS and FortiAnalyzer, and the lab CA certificate peers are verified against.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub cert: fortilab_core::tls::DeviceCert,
    pub ca_pem: String,
}

/// Everything the FortiGate's modules share.
pub struct Device {
    pub serial: String,
    pub version: FosVersion,
    pub seed: u64,
    pub clock: LabClock,
    pub config: Arc<ConfigStore>,
    pub events: EventBus,
    /// Supervises the device's long-running tasks (`task.*` events on `events`).
    pub supervisor: fortilab_core::supervise::Supervisor,
    pub logs: Arc<LogWriter>,
    pub banned: BannedList,
    pub automation: Automation,
    pub lab_map: LabMap,
    /// The management (lab) address, for log `dstip` and certificates.
    pub lab_ip: Option<IpAddr>,
    pub data_dir: Option<PathBuf>,
    /// The certificate `start()` issued (set once, before any traffic flows).
    pub tls: OnceLock<TlsIdentity>,
    /// Config scripts run through the console engine (`monitor/system/config-script`).
    pub scripts: crate::console::script::ScriptHistory,
    /// The lab token and HTTP limits (set once by `start()`): the token is required on this
    /// device's `/_lab/` routes and sent on its own calls to other devices' lab surfaces (the
    /// lab Internet's ratings); the request head timeout also applies to the explicit proxy.
    pub http: OnceLock<fortilab_core::http::HttpOptions>,
    fabric: RwLock<Arc<dyn FabricStatus>>,
    persist_lock: Mutex<()>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("serial", &self.serial)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Device {
    pub fn new(
        serial: String,
        version: FosVersion,
        seed: u64,
        clock: LabClock,
        config: ConfigStore,
        lab_map: LabMap,
        lab_ip: Option<IpAddr>,
        data_dir: Option<PathBuf>,
    ) -> Self {
        let hostname = config.hostname();
        let events = EventBus::new(&hostname, clock);
        let supervisor = fortilab_core::supervise::Supervisor::new(Some(events.clone()));
        let logs = Arc::new(LogWriter::new(
            &hostname,
            &serial,
            &version.to_string(),
            clock,
            10_000,
        ));
        Self {
            serial,
            version,
            seed,
            clock,
            config: Arc::new(config),
            events,
            supervisor,
            logs,
            banned: BannedList::new(clock),
            automation: Automation::default(),
            lab_map,
            lab_ip,
            data_dir,
            tls: OnceLock::new(),
            scripts: Default::default(),
            http: OnceLock::new(),
            fabric: RwLock::new(Arc::new(NotConnected)),
            persist_lock: Mutex::new(()),
        }
    }

    /// The lab token, once `start()` set it.
    pub fn lab_token(&self) -> Option<fortilab_core::secrets::LabToken> {
        self.http.get().map(|h| h.lab_token.clone())
    }

    /// How long a client may take to send a request head (API and proxy).
    pub fn header_read_timeout(&self) -> std::time::Duration {
        self.http
            .get()
            .map(|h| h.header_read_timeout)
            .unwrap_or(fortilab_core::http::DEFAULT_HEADER_READ_TIMEOUT)
    }

    /// The hostname (`config system global` / `set hostname`).
    pub fn hostname(&self) -> String {
        self.config.hostname()
    }

    pub fn fabric(&self) -> Arc<dyn FabricStatus> {
        self.fabric
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs the provider of EMS/FortiAnalyzer connection state.
    pub fn set_fabric(&self, f: Arc<dyn FabricStatus>) {
        *self.fabric.write().unwrap_or_else(|p| p.into_inner()) = f;
    }

    /// Writes the configuration to `data-dir/fgt.conf` atomically (temporary file + rename).
    pub fn persist(&self) -> std::io::Result<()> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        self.persist_to(dir)
    }

    /// Writes the configuration as `dir/fgt.conf` atomically (the data directory, or a lab
    /// snapshot's directory).
    pub fn persist_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let _g = self.persist_lock.lock().unwrap_or_else(|p| p.into_inner());
        let text = self.config.show(false, "admin");
        let path = dir.join(CONFIG_FILE);
        let tmp = dir.join(format!("{CONFIG_FILE}.tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// Reacts to a committed configuration change: the config-change event log, the lab
    /// event `config.change`, hostname follow-up.
    ///
    /// FortiOS writes 0100044547 "Object attribute configured" for entries of a table (with
    /// `cfgobj`, and `uuid` for objects that have one) and 0100044546 "Attribute configured"
    /// for single tables such as `system global`; `cfgattr` names only what changed
    /// (`dstintf[port1->port2]`; an added object lists what it sets: `name[x]srcintf[port5]`;
    /// a delete has none).
    pub fn on_change(&self, ev: &ChangeEvent) {
        let c = &ev.change;
        let cfgpath = c.path.replace(' ', ".");
        let action = c.action.log_word();
        let single = self
            .config
            .table_schema(&c.path)
            .is_some_and(|t| t.is_single());
        let (logid, logdesc) = if single {
            ("0100044546", "Attribute configured")
        } else {
            ("0100044547", "Object attribute configured")
        };
        self.logs
            .event_system(logid, "information", logdesc, |record| {
                record
                    .str("user", ev.origin.user.clone())
                    .str("ui", ev.origin.ui.clone())
                    .str("action", action)
                    .int("cfgtid", (self.clock.now_ns() / 1000) & 0x7fff_ffff);
                if let Some(u) = &c.uuid {
                    record.str("uuid", u.clone());
                }
                record.str("cfgpath", cfgpath.clone());
                if !single {
                    record.str("cfgobj", c.key.clone());
                }
                if !c.cfgattr.is_empty() {
                    record.str("cfgattr", c.cfgattr.clone());
                }
                record.str(
                    "msg",
                    format!("{action} {cfgpath} {}", c.key)
                        .trim_end()
                        .to_string(),
                );
            });
        self.events.emit(
            EventKind::ConfigChange,
            serde_json::json!({
                "path": cfgpath, "key": c.key, "action": c.action, "attrs": c.attrs,
                "user": ev.origin.user, "ui": ev.origin.ui, "revision": ev.revision,
            }),
        );
        if c.path == "system global" {
            let h = self.hostname();
            self.events.set_device(&h);
            self.logs.set_devname(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire_on_the_lab_clock() {
        // A clock running 1000x: a 1 s ban expires after ~1 ms real time.
        let clock = LabClock::starting_now(1_600_000_000_000, 1000.0, 0);
        let b = BannedList::new(clock);
        let ip: IpAddr = "10.115.2.52".parse().unwrap();
        let other: IpAddr = "10.115.2.53".parse().unwrap();
        b.add(ip, 1, "admin");
        b.add(other, 0, "ips");
        assert!(b.is_banned(ip));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.is_banned(ip) {
            assert!(std::time::Instant::now() < deadline, "ban did not expire");
            std::thread::yield_now();
        }
        assert!(b.is_banned(other));
        assert_eq!(b.list().len(), 1);
        assert!(b.remove(other));
        assert!(b.list().is_empty());
    }

    #[test]
    fn automation_queue_and_stats() {
        let a = Automation::default();
        let mut rx = a.take_receiver().unwrap();
        assert!(a.take_receiver().is_none());
        assert!(a.submit(AutomationRequest::Test {
            stitch: "S".into(),
            log: None
        }));
        assert_eq!(
            rx.try_recv().unwrap(),
            AutomationRequest::Test {
                stitch: "S".into(),
                log: None
            }
        );
        a.record_trigger("S", 42);
        assert_eq!(a.stats("S").triggered, 1);
        assert_eq!(a.stats("S").last_triggered, 42);
    }
}
