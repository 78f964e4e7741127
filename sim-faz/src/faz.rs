//! The FortiAnalyzer's state: device registry, ingest (store + IOC), alerts, notifications,
//! sessions and settings. Transport-free: the log channel, syslog and the JSON-RPC API call in.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use fortilab_core::device::Timing;
use fortilab_core::logchan::{IocAckNotification, IocLevel, IocNotification, Notice, Notification};
use fortilab_core::{EventBus, LabClock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ioc::{Change, Host, IocEngine, IocSettings, Source, Tidb};
use crate::store::{parse_row, Row, Store};

/// Where notifications go: the log channel's receiver (or a test double).
pub trait Notifier: Send + Sync + 'static {
    /// Pushes a notification to a connected device; false when it is not connected.
    fn notify(&self, serial: &str, n: Notification) -> bool;
    /// Tells the channel a device was authorized (it re-sends a registered hello reply).
    fn authorize(&self, serial: &str);
}

/// Lines parsed by [`Faz::parse_lines`], ready for [`Faz::submit`].
#[derive(Debug)]
pub struct Parsed {
    rows: Vec<Row>,
    n: usize,
    unparsed: u64,
    sample: Option<String>,
    now: i64,
    durability: crate::store::Durability,
}

impl Parsed {
    /// Marks lines nobody is told are stored (syslog): [`Faz::submit`] commits them without
    /// waiting for an fsync of their own ([`crate::store::Durability::Unacknowledged`]).
    pub fn unacknowledged(mut self) -> Self {
        self.durability = crate::store::Durability::Unacknowledged;
        self
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// A batch queued for the durable commit by [`Faz::submit`].
#[derive(Debug)]
pub struct Submitted {
    pending: crate::store::Pending,
    changes: Vec<Change>,
    sender: String,
    n: usize,
    unparsed: u64,
    sample: Option<String>,
}

impl Submitted {
    /// Waits for the commit, then raises the lab event, alerts and notifications. Returns the
    /// sender's last stored sequence.
    pub fn finish(self, faz: &Faz) -> Result<u64, String> {
        let last = match self.pending.wait() {
            Ok(l) => l,
            Err(e) => return Err(faz.store_failed(e.to_string())),
        };
        if faz.store_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("the log store accepts logs again");
            faz.bus
                .emit("store.recovered", json!({"sender": self.sender}));
        }
        if self.n > 0 {
            faz.bus.emit(
                "log.received",
                json!({"from": self.sender, "count": self.n, "unparsed": self.unparsed,
                       "last_seq": last, "sample": self.sample}),
            );
        }
        faz.handle_changes(self.changes, false);
        Ok(last)
    }
}

/// The serial of a syslog-only device: `SYSLOG-` and its address in hex (`SYSLOG-0A731214`).
pub fn syslog_serial(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("SYSLOG-{:08X}", u32::from(v4)),
        std::net::IpAddr::V6(v6) => format!("SYSLOG-{:032X}", u128::from(v6)),
    }
}

/// Static identity and credentials.
#[derive(Debug, Clone)]
pub struct Identity {
    pub hostname: String,
    pub serial: String,
    pub version: String,
    pub platform: String,
    pub admin_user: String,
    pub admin_password: String,
    pub api_key: String,
    pub lab_ip: String,
    pub session_timeout: i64,
    pub max_sessions: usize,
    pub retention_days: u64,
    pub max_size_mb: u64,
}

/// A registered (or waiting) device.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Device {
    pub sn: String,
    pub name: String,
    pub hostname: String,
    pub platform: String,
    pub version: String,
    pub ip: String,
    /// `fortigate` or `forticlient`.
    pub device_type: String,
    pub vdom: String,
    pub adom: String,
    pub authorized: bool,
    pub connected: bool,
    /// `logchan` or `syslog`.
    pub via: String,
    pub last_seen: i64,
    pub connected_since: Option<i64>,
    pub desc: String,
}

/// What a JSON-RPC device add names about a device.
#[derive(Debug, Clone, Default)]
pub struct DeviceModel {
    /// `major.minor.patch` from `os_ver`, `mr`, `patch`.
    pub version: Option<String>,
    pub platform: Option<String>,
    pub ip: Option<String>,
    pub forticlient: Option<bool>,
}

/// An event-handler alert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    pub alertid: String,
    pub triggername: String,
    pub subject: String,
    pub severity: String,
    pub epid: u64,
    pub epip: String,
    pub epname: Option<String>,
    pub euid: u64,
    pub devid: String,
    pub vdom: String,
    pub threat: String,
    pub detect_method: String,
    pub alerttime: i64,
    pub ackflag: bool,
    pub ack_by: Option<String>,
    pub comment: String,
    pub tag: Vec<String>,
}

pub const TRIGGER_BY_ENDPOINT: &str = "Default-Compromised Host-Detection-IOC-By-Endpoint";
pub const TRIGGER_BY_THREAT: &str = "Default-Compromised Host-Detection-IOC-By-Threat";

/// `config system global` settings the API exposes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GlobalSettings {
    pub hostname: String,
    pub timezone: String,
    /// `disable`, `request`, `response` or `all`.
    pub jsonapi_log: String,
    pub adom_status: String,
    pub workspace_mode: String,
}

/// An administrator account (`config system admin user`). The password is kept as a salted
/// SHA-256 digest, never in clear.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdminUser {
    pub name: String,
    pub salt: String,
    pub password_sha256: String,
    /// `Super_User`, `Standard_User`, `Restricted_User` or `No_Permission_User`.
    pub profileid: String,
    /// JSON-RPC permission: `none`, `read` or `read-write`.
    pub rpc_permit: String,
    pub description: String,
}

impl AdminUser {
    /// A new account without a password.
    pub fn new(name: &str, profileid: &str) -> Self {
        Self {
            name: name.to_string(),
            salt: String::new(),
            password_sha256: digest("", ""),
            profileid: profileid.to_string(),
            rpc_permit: "none".into(),
            description: String::new(),
        }
    }

    pub fn set_password(&mut self, password: &str, salt: &str) {
        self.salt = salt.to_string();
        self.password_sha256 = digest(salt, password);
    }

    /// Constant-time comparison of the digest.
    pub fn check_password(&self, password: &str) -> bool {
        let d = digest(&self.salt, password);
        d.len() == self.password_sha256.len()
            && d.bytes()
                .zip(self.password_sha256.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }

    pub fn is_super(&self) -> bool {
        self.profileid == "Super_User"
    }
}

fn digest(salt: &str, password: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

/// Counters exposed on `/_lab/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub api_requests: AtomicU64,
    pub api_errors: AtomicU64,
    pub bad_json: AtomicU64,
    pub bad_requests: AtomicU64,
    pub unknown_urls: AtomicU64,
    pub unknown_methods: AtomicU64,
    pub auth_failures: AtomicU64,
    pub oversized: AtomicU64,
    pub log_batches: AtomicU64,
    pub log_lines: AtomicU64,
    pub unparsed_lines: AtomicU64,
    pub unauthorized_batches: AtomicU64,
    pub syslog_messages: AtomicU64,
    pub syslog_dropped: AtomicU64,
    pub syslog_bad: AtomicU64,
    /// Datagrams the kernel dropped on the syslog UDP socket (its receive buffer was full).
    pub syslog_udp_kernel_drops: AtomicU64,
    /// Syslog messages from a sender whose device is not authorized (not stored).
    pub syslog_unauthorized: AtomicU64,
    /// Syslog messages lost to a store error (the disk is full, ...).
    pub syslog_store_errors: AtomicU64,
    pub notifications: AtomicU64,
    pub notifications_acked: AtomicU64,
    pub store_errors: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "api_requests": g(&self.api_requests), "api_errors": g(&self.api_errors),
            "bad_json": g(&self.bad_json), "bad_requests": g(&self.bad_requests),
            "unknown_urls": g(&self.unknown_urls), "unknown_methods": g(&self.unknown_methods),
            "auth_failures": g(&self.auth_failures), "oversized": g(&self.oversized),
            "log_batches": g(&self.log_batches), "log_lines": g(&self.log_lines),
            "unparsed_lines": g(&self.unparsed_lines), "unauthorized_batches": g(&self.unauthorized_batches),
            "syslog_messages": g(&self.syslog_messages), "syslog_dropped": g(&self.syslog_dropped),
            "syslog_bad": g(&self.syslog_bad),
            "syslog_udp_kernel_drops": g(&self.syslog_udp_kernel_drops),
            "syslog_unauthorized": g(&self.syslog_unauthorized),
            "syslog_store_errors": g(&self.syslog_store_errors), "notifications": g(&self.notifications),
            "notifications_acked": g(&self.notifications_acked), "store_errors": g(&self.store_errors),
        })
    }
}

/// A login session.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub last_used: i64,
}

/// A rescan run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rescan {
    pub tid: u64,
    pub start: i64,
    pub end: Option<i64>,
    pub status: String,
    pub percentage: u32,
    #[serde(rename = "scanned-logs")]
    pub scanned: u64,
    #[serde(rename = "threats-count")]
    pub threats: u64,
    #[serde(rename = "new-threats")]
    pub new_threats: u64,
    #[serde(rename = "package-version")]
    pub package: String,
    pub trigger: String,
    pub range_start: i64,
    pub range_end: i64,
}

/// The FortiAnalyzer.
pub struct Faz {
    pub id: Identity,
    pub clock: LabClock,
    pub timing: Timing,
    pub bus: EventBus,
    pub store: Store,
    pub ioc: Mutex<IocEngine>,
    pub ioc_settings: Mutex<IocSettings>,
    pub devices: Mutex<BTreeMap<String, Device>>,
    pub auto_authorize: AtomicBool,
    pub notifier: OnceLock<Arc<dyn Notifier>>,
    /// Notifications not yet acknowledged by the device: serial → id → payload.
    pub pending: Mutex<HashMap<String, BTreeMap<u64, Notification>>>,
    next_notify_id: AtomicU64,
    pub alerts: Mutex<Vec<Alert>>,
    next_alert_id: AtomicU64,
    pub sessions: Mutex<HashMap<String, Session>>,
    pub global: Mutex<GlobalSettings>,
    /// `config system admin user` (JSON-RPC login, SSH console login).
    pub admins: Mutex<BTreeMap<String, AdminUser>>,
    pub rescans: Mutex<Vec<Rescan>>,
    pub next_tid: AtomicU64,
    /// Endpoint IP → host name learned from FortiClient devices.
    pub ip_names: Mutex<HashMap<String, String>>,
    pub counters: Counters,
    /// The last commit failed (a `store.error` event was emitted; `store.recovered` follows
    /// the next successful one).
    pub store_failing: AtomicBool,
    /// Rescan runs to execute: (tid, start, end), taken by the rescan worker thread.
    pub rescan_tx: OnceLock<Mutex<std::sync::mpsc::Sender<(u64, i64, i64)>>>,
    /// The device's task supervisor (reports `task.*` events on `bus`).
    pub supervisor: fortilab_core::supervise::Supervisor,
}

impl std::fmt::Debug for Faz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faz")
            .field("serial", &self.id.serial)
            .finish_non_exhaustive()
    }
}

/// Batches at least this large are parsed on two threads.
const PARALLEL_PARSE: usize = 1000;

fn kv_json<T: Serialize>(v: &T) -> Option<String> {
    serde_json::to_string(v).ok()
}

impl Faz {
    /// Builds the state over an opened store, restoring devices, hosts, alerts and settings.
    /// (`_seed` is kept for callers: session ids no longer come from it.)
    pub fn new(
        id: Identity,
        clock: LabClock,
        timing: Timing,
        store: Store,
        tidb: Tidb,
        settings: IocSettings,
        auto_authorize: bool,
        _seed: u64,
    ) -> anyhow::Result<Arc<Self>> {
        let bus = EventBus::new(&id.hostname, clock);
        let supervisor = fortilab_core::supervise::Supervisor::new(Some(bus.clone()));
        let mut engine = IocEngine::new(tidb);
        engine.tidb.loaded_at = clock.now_secs();
        let hosts: Vec<Host> = store
            .kv_scan("host:")?
            .into_iter()
            .filter_map(|(_, j)| serde_json::from_str(&j).ok())
            .collect();
        engine.restore(hosts);
        engine.current_day = 0;
        let devices: BTreeMap<String, Device> = store
            .kv_scan("dev:")?
            .into_iter()
            .filter_map(|(_, j)| serde_json::from_str::<Device>(&j).ok())
            .map(|mut d| {
                d.connected = false;
                (d.sn.clone(), d)
            })
            .collect();
        let alerts: Vec<Alert> = store
            .kv_scan("alert:")?
            .into_iter()
            .filter_map(|(_, j)| serde_json::from_str(&j).ok())
            .collect();
        let next_alert = alerts
            .iter()
            .filter_map(|a| a.alertid.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let settings = match store.kv_get("settings:ioc")? {
            Some(j) => serde_json::from_str(&j).unwrap_or(settings),
            None => settings,
        };
        let global = match store.kv_get("settings:global")? {
            Some(j) => serde_json::from_str(&j).ok(),
            None => None,
        }
        .unwrap_or(GlobalSettings {
            hostname: id.hostname.clone(),
            timezone: crate::tz::code_for_offset(clock.tz_minutes())
                .unwrap_or("80")
                .into(),
            jsonapi_log: "disable".into(),
            adom_status: "enable".into(),
            workspace_mode: "disabled".into(),
        });
        let mut admins: BTreeMap<String, AdminUser> = store
            .kv_scan("admin:")?
            .into_iter()
            .filter_map(|(_, j)| serde_json::from_str::<AdminUser>(&j).ok())
            .map(|a| (a.name.clone(), a))
            .collect();
        if !admins.contains_key(&id.admin_user) {
            // The built-in account of the ready file: not persisted until changed, so a new
            // `[admin] password` in the config file takes effect on restart.
            let mut a = AdminUser::new(&id.admin_user, "Super_User");
            a.rpc_permit = "read-write".into();
            a.set_password(
                &id.admin_password,
                &format!("{}-{}", id.serial, id.admin_user),
            );
            admins.insert(a.name.clone(), a);
        }
        let rescans: Vec<Rescan> = store
            .kv_scan("rescan:")?
            .into_iter()
            .filter_map(|(_, j)| serde_json::from_str(&j).ok())
            .collect();
        let next_tid = rescans.iter().map(|r| r.tid).max().unwrap_or(0) + 1;
        let next_notify = store
            .kv_get("counter:notify")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        Ok(Arc::new(Faz {
            id,
            clock,
            timing,
            bus,
            store,
            ioc: Mutex::new(engine),
            ioc_settings: Mutex::new(settings),
            devices: Mutex::new(devices),
            auto_authorize: AtomicBool::new(auto_authorize),
            notifier: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            next_notify_id: AtomicU64::new(next_notify),
            alerts: Mutex::new(alerts),
            next_alert_id: AtomicU64::new(next_alert),
            sessions: Mutex::new(HashMap::new()),
            global: Mutex::new(global),
            admins: Mutex::new(admins),
            rescans: Mutex::new(rescans),
            next_tid: AtomicU64::new(next_tid.max(1)),
            ip_names: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            store_failing: AtomicBool::new(false),
            rescan_tx: OnceLock::new(),
            supervisor,
        }))
    }

    pub fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    /// Lab-local day number of a lab instant.
    pub fn day_of(&self, t: i64) -> i64 {
        (t + self.clock.tz_minutes() as i64 * 60).div_euclid(86_400)
    }

    pub fn display_time(&self, t: i64) -> String {
        let (d, tm) =
            fortilab_core::clock::format_date_time(t + self.tz_offset_minutes() as i64 * 60);
        format!("{d} {tm}")
    }

    /// The `config system global` time zone code in force (a code the table does not know,
    /// such as an old `UTC`, falls back to the lab clock's offset).
    pub fn tz_code(&self) -> String {
        let g = self
            .global
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .timezone
            .clone();
        if crate::tz::by_code(&g).is_some() {
            return g;
        }
        crate::tz::code_for_offset(self.clock.tz_minutes())
            .unwrap_or("80")
            .to_string()
    }

    /// The offset from UTC, in minutes, of the configured time zone.
    pub fn tz_offset_minutes(&self) -> i32 {
        crate::tz::by_code(&self.tz_code())
            .map(|z| z.1)
            .unwrap_or_else(|| self.clock.tz_minutes())
    }

    /// A fresh random token (session ids): from the OS CSPRNG, never from the seed, so a
    /// session id seen before a restart is never issued again.
    pub fn token(&self, n: usize) -> String {
        fortilab_core::secrets::random_token(n)
    }

    // ---------------------------------------------------------------- devices

    fn persist_device(&self, d: &Device) {
        if let Err(e) = self.store.kv_put(&[(format!("dev:{}", d.sn), kv_json(d))]) {
            tracing::warn!(error = %e, "cannot persist device");
        }
    }

    /// A device said hello on the log channel. Returns whether it is authorized.
    pub fn device_hello(
        &self,
        serial: &str,
        hostname: &str,
        platform: &str,
        version: &str,
        device_type: &str,
        vdom: &str,
        ip: &str,
    ) -> bool {
        let now = self.now();
        let auto = self.auto_authorize.load(Ordering::Relaxed);
        let (dev, new) = {
            let mut devs = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            let new = !devs.contains_key(serial);
            let d = devs.entry(serial.to_string()).or_insert_with(|| Device {
                sn: serial.to_string(),
                name: hostname.to_string(),
                hostname: hostname.to_string(),
                platform: platform.to_string(),
                version: version.to_string(),
                ip: ip.to_string(),
                device_type: device_type.to_string(),
                vdom: vdom.to_string(),
                adom: "root".into(),
                authorized: false,
                connected: false,
                via: "logchan".into(),
                last_seen: now,
                connected_since: None,
                desc: String::new(),
            });
            d.hostname = hostname.to_string();
            if d.name.is_empty() || d.name == d.sn {
                d.name = hostname.to_string();
            }
            d.platform = platform.to_string();
            d.version = version.to_string();
            d.ip = ip.to_string();
            d.device_type = device_type.to_string();
            d.vdom = vdom.to_string();
            d.via = "logchan".into();
            d.connected = true;
            d.connected_since = Some(now);
            d.last_seen = now;
            if auto {
                d.authorized = true;
            }
            (d.clone(), new)
        };
        self.persist_device(&dev);
        if new {
            self.bus.emit(
                "device.registered",
                json!({"sn": serial, "name": dev.name, "platform": platform, "device_type": device_type,
                       "authorized": dev.authorized, "ip": ip}),
            );
        }
        self.bus.emit(
            "device.connected",
            json!({"sn": serial, "authorized": dev.authorized}),
        );
        if dev.device_type == "forticlient" {
            // FortiClient hostnames name the endpoint in compromised-host rows.
            if !dev.ip.is_empty() {
                self.ip_names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(dev.ip.clone(), dev.hostname.clone());
            }
        }
        dev.authorized
    }

    pub fn device_disconnected(&self, serial: &str) {
        let d = {
            let mut devs = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            let Some(d) = devs.get_mut(serial) else {
                return;
            };
            d.connected = false;
            d.connected_since = None;
            d.last_seen = self.now();
            d.clone()
        };
        self.persist_device(&d);
        self.bus.emit("device.disconnected", json!({"sn": serial}));
    }

    /// Authorizes (adds) a device: `exec /dvm/cmd/add/device`. Creates a model device when the
    /// serial has not connected yet.
    /// Records what a JSON-RPC device add said about a device (fields it left out keep
    /// their value); returns the device.
    pub fn set_device_model(&self, sn: &str, m: &DeviceModel) -> Device {
        let d = {
            let mut devs = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            let Some(d) = devs.get_mut(sn) else {
                return Device::default();
            };
            if let Some(v) = &m.version {
                d.version = v.clone();
            }
            if let Some(p) = &m.platform {
                d.platform = p.clone();
            }
            if let Some(ip) = &m.ip {
                d.ip = ip.clone();
            }
            if let Some(fct) = m.forticlient {
                d.device_type = if fct { "forticlient" } else { "fortigate" }.into();
            }
            d.clone()
        };
        self.persist_device(&d);
        d
    }

    pub fn authorize_device(
        &self,
        sn: &str,
        name: Option<&str>,
        desc: Option<&str>,
        adom: &str,
    ) -> Device {
        let now = self.now();
        let d = {
            let mut devs = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            let d = devs.entry(sn.to_string()).or_insert_with(|| Device {
                sn: sn.to_string(),
                name: name.unwrap_or(sn).to_string(),
                hostname: name.unwrap_or(sn).to_string(),
                platform: platform_of(sn).into(),
                version: String::new(),
                ip: String::new(),
                device_type: if sn.starts_with("FCT") {
                    "forticlient".into()
                } else {
                    "fortigate".into()
                },
                vdom: "root".into(),
                adom: adom.to_string(),
                authorized: false,
                connected: false,
                via: "model".into(),
                last_seen: now,
                connected_since: None,
                desc: String::new(),
            });
            if let Some(n) = name {
                d.name = n.to_string();
            }
            if let Some(ds) = desc {
                d.desc = ds.to_string();
            }
            d.adom = adom.to_string();
            d.authorized = true;
            d.clone()
        };
        self.persist_device(&d);
        self.bus
            .emit("device.authorized", json!({"sn": sn, "name": d.name}));
        if let Some(n) = self.notifier.get() {
            n.authorize(sn);
        }
        d
    }

    pub fn delete_device(&self, key: &str) -> bool {
        let removed = {
            let mut devs = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            let sn = devs
                .values()
                .find(|d| d.sn == key || d.name == key)
                .map(|d| d.sn.clone());
            sn.and_then(|s| devs.remove(&s))
        };
        match removed {
            Some(d) => {
                let _ = self.store.kv_put(&[(format!("dev:{}", d.sn), None)]);
                self.bus.emit("device.deleted", json!({"sn": d.sn}));
                true
            }
            None => false,
        }
    }

    pub fn device(&self, sn: &str) -> Option<Device> {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sn)
            .cloned()
    }

    pub fn is_authorized(&self, sn: &str) -> bool {
        self.device(sn).map(|d| d.authorized).unwrap_or(false)
    }

    /// The device syslog from `ip` is stored as, attributed by the sender's address as
    /// FortiAnalyzer does (never by the `devid` a line claims): the registered device with that
    /// address (a lab host `10.a.b.c` also sends from loopback `127.a.b.c`), else a syslog
    /// device `SYSLOG-<address in hex>` registered on first sight (unauthorized unless the lab
    /// auto-authorizes). `None` while that device is not authorized (its logs are not stored).
    pub fn syslog_sender(&self, ip: std::net::IpAddr) -> Option<Device> {
        let auto = self.auto_authorize.load(Ordering::Relaxed);
        let now = self.now();
        let text = ip.to_string();
        let lab = match ip {
            std::net::IpAddr::V4(v4) if v4.octets()[0] == 127 => {
                let o = v4.octets();
                Some(format!("10.{}.{}.{}", o[1], o[2], o[3]))
            }
            _ => None,
        };
        let (d, new, changed) = {
            let mut devs = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            let known = devs
                .values()
                .filter(|d| d.ip == text || lab.as_deref() == Some(d.ip.as_str()))
                // A device of the log channel before a syslog-only one.
                .min_by_key(|d| (d.via == "syslog", d.sn.clone()))
                .map(|d| d.sn.clone());
            let new = known.is_none();
            let sn = known.unwrap_or_else(|| syslog_serial(ip));
            let d = devs.entry(sn.clone()).or_insert_with(|| Device {
                sn: sn.clone(),
                name: sn.clone(),
                hostname: sn.clone(),
                platform: "Syslog".into(),
                version: String::new(),
                ip: text.clone(),
                device_type: "syslog".into(),
                vdom: "root".into(),
                adom: "root".into(),
                authorized: false,
                connected: true,
                via: "syslog".into(),
                last_seen: now,
                connected_since: Some(now),
                desc: String::new(),
            });
            let mut changed = new;
            if auto && !d.authorized {
                d.authorized = true;
                changed = true;
            }
            // Only persist `last_seen` occasionally (every minute of lab time).
            if now - d.last_seen >= 60 {
                changed = true;
            }
            d.last_seen = now;
            (d.clone(), new, changed)
        };
        if changed {
            self.persist_device(&d);
        }
        if new {
            self.bus.emit(
                "device.registered",
                json!({"sn": d.sn, "name": d.name, "via": "syslog", "authorized": d.authorized, "ip": text}),
            );
        }
        d.authorized.then_some(d)
    }

    // ---------------------------------------------------------------- ingest

    /// Parses and stores a batch durably, runs the IOC engine on it, then raises alerts and
    /// notifications. `first_seq` 0: unsequenced (syslog, FAZ's own event log). Returns the
    /// sender's last stored sequence.
    pub fn ingest(
        &self,
        sender: &str,
        from_client: bool,
        first_seq: u64,
        lines: Vec<String>,
    ) -> Result<u64, String> {
        let parsed = self.parse_lines(from_client, lines);
        self.submit(sender, from_client, first_seq, parsed)?
            .finish(self)
    }

    /// Parses lines into rows (large batches on two threads). No side effects: callers may
    /// parse several batches at once and [`Faz::submit`] them in order.
    pub fn parse_lines(&self, from_client: bool, lines: Vec<String>) -> Parsed {
        let now = self.now();
        let tz = self.clock.tz_minutes();
        let n = lines.len();
        let sample = lines
            .first()
            .map(|l| l.chars().take(300).collect::<String>());
        let parse = |part: &[String]| -> (Vec<Row>, u64) {
            let mut bad = 0u64;
            let rows = part
                .iter()
                .map(|l| {
                    let (r, ok) = parse_row(l, from_client, now, tz);
                    bad += (!ok) as u64;
                    r
                })
                .collect();
            (rows, bad)
        };
        // Large batches are parsed on two threads (the log channel hands us up to 5000 lines).
        let (rows, unparsed) = if lines.len() >= PARALLEL_PARSE {
            let (a, b) = lines.split_at(lines.len() / 2);
            let (ra, rb) = std::thread::scope(|s| {
                let h = s.spawn(|| parse(b));
                let ra = parse(a);
                (ra, h.join().unwrap_or_default())
            });
            let mut rows = ra.0;
            rows.extend(rb.0);
            (rows, ra.1 + rb.1)
        } else {
            parse(&lines)
        };
        Parsed {
            rows,
            n,
            unparsed,
            sample,
            now,
            durability: Default::default(),
        }
    }

    /// Runs the IOC engine on parsed rows and queues them for the durable commit (in call
    /// order); [`Submitted::finish`] waits for the commit and raises alerts and notifications.
    pub fn submit(
        &self,
        sender: &str,
        from_client: bool,
        first_seq: u64,
        parsed: Parsed,
    ) -> Result<Submitted, String> {
        let Parsed {
            rows,
            n,
            unparsed,
            sample,
            now,
            durability,
        } = parsed;
        self.counters.log_batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .log_lines
            .fetch_add(n as u64, Ordering::Relaxed);
        self.counters
            .unparsed_lines
            .fetch_add(unparsed, Ordering::Relaxed);
        let client_name = if from_client {
            self.device(sender).map(|d| d.hostname)
        } else {
            None
        };
        let ioc_on = self
            .ioc_settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status;
        let mut changes: Vec<Change> = Vec::new();
        let day = self.day_of(now);
        let pending = self
            .store
            .submit_with(durability, sender, first_seq, rows, now, |rows| {
                if !ioc_on {
                    return Vec::new();
                }
                self.ioc_hook(sender, rows, client_name.as_deref(), now, day, &mut changes)
            })
            .map_err(|e| self.store_failed(e.to_string()))?;
        Ok(Submitted {
            pending,
            changes,
            sender: sender.to_string(),
            n,
            unparsed,
            sample,
        })
    }

    /// Counts a failed commit; the first of a run raises a `store.error` lab event.
    fn store_failed(&self, msg: String) -> String {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        if !self.store_failing.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %msg, "the log store refuses logs");
            self.bus.emit("store.error", json!({"error": msg}));
        }
        msg
    }

    fn ioc_hook(
        &self,
        sender: &str,
        rows: &[Row],
        client_name: Option<&str>,
        now: i64,
        day: i64,
        changes: &mut Vec<Change>,
    ) -> crate::store::KvUpdates {
        let mut touched: Vec<String> = Vec::new();
        let mut eng = self.ioc.lock().unwrap_or_else(|e| e.into_inner());
        for r in rows {
            let Some(hit) = eng.tidb.check(&r.ioc_view()) else {
                continue;
            };
            let Some(epip) = r.srcip.as_deref() else {
                continue;
            };
            let learned;
            let epname = match (client_name, r.srcname.as_deref()) {
                (Some(c), _) => Some(c),
                (None, Some(s)) => Some(s),
                _ => {
                    learned = self
                        .ip_names
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(epip)
                        .cloned();
                    learned.as_deref()
                }
            };
            let src = Source {
                epip,
                epname,
                user: r.user.as_deref(),
                mac: r.srcmac.as_deref(),
                devid: r.devid.as_deref().unwrap_or(sender),
                vdom: r.vd.as_deref().unwrap_or("root"),
                sender,
                log_type: crate::store::logtype_name(r.ltype),
            };
            let t = if r.etime > 0 { r.etime.min(now) } else { now };
            if let Some(c) = eng.apply(&hit, &src, t, day, false) {
                changes.push(c);
            }
            if !touched.iter().any(|x| x == epip) {
                touched.push(epip.to_string());
            }
            if let (Some(name), Some(ip)) = (client_name, r.srcip.as_deref()) {
                self.ip_names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ip.to_string(), name.to_string());
            }
        }
        touched
            .into_iter()
            .filter_map(|ip| eng.host(&ip).map(|h| (format!("host:{ip}"), kv_json(h))))
            .collect()
    }

    /// Alerts, notifications and lab events for IOC changes.
    pub fn handle_changes(&self, changes: Vec<Change>, rescan: bool) {
        for c in changes {
            let (epip, listed, threat, method, new_threat) = match &c {
                Change::Listed {
                    epip,
                    new_threat,
                    threat,
                    detect_method,
                } => (
                    epip.clone(),
                    true,
                    threat.clone(),
                    detect_method.clone(),
                    *new_threat,
                ),
                Change::NewThreat {
                    epip,
                    threat,
                    detect_method,
                } => (
                    epip.clone(),
                    false,
                    threat.clone(),
                    detect_method.clone(),
                    true,
                ),
            };
            let (host, throttle, notify_on) = {
                let mut eng = self.ioc.lock().unwrap_or_else(|e| e.into_inner());
                let s = self
                    .ioc_settings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if listed {
                    eng.reset_throttle(&epip);
                }
                let Some(h) = eng.host(&epip).cloned() else {
                    continue;
                };
                (h, s.notification_throttle, s.notification)
            };
            if listed {
                self.bus.emit(
                    "ioc.compromised",
                    json!({"epip": epip, "epid": host.epid, "epname": host.epname, "verdict": host.verdict,
                           "level": host.level.as_str(), "threat": threat, "detect_method": method,
                           "devid": host.devid, "rescan": rescan}),
                );
                self.raise_alert(TRIGGER_BY_ENDPOINT, &host, &threat, &method, rescan);
            }
            if new_threat || listed {
                self.raise_alert(TRIGGER_BY_THREAT, &host, &threat, &method, rescan);
            }
            if notify_on {
                let due = {
                    let mut eng = self.ioc.lock().unwrap_or_else(|e| e.into_inner());
                    eng.take_notification(&epip, self.now(), throttle)
                };
                if due {
                    let payload = Notice::Ioc(IocNotification {
                        verdict: host.verdict.clone(),
                        ioc_level: match host.level {
                            crate::ioc::Level::High => IocLevel::High,
                            _ => IocLevel::Medium,
                        },
                        srcip: host.epip.clone(),
                        mac: host.mac.clone(),
                        user: host.user.clone(),
                        hostname: host.epname.clone(),
                        devid: host.devid.clone(),
                        vdom: host.vdom.clone(),
                        threat: threat.clone(),
                        detect_method: method.clone(),
                        epid: Some(host.epid),
                        timestamp: self.now(),
                    });
                    for target in self.targets_for(&host) {
                        self.send_notification(&target, payload.clone());
                    }
                }
            }
            // The throttle time is part of the host's state.
            let json = self
                .ioc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .host(&epip)
                .and_then(kv_json);
            let _ = self.store.kv_put(&[(format!("host:{epip}"), json)]);
        }
    }

    /// FortiGates to notify about a host: the sender of the hit when it is a FortiGate, else
    /// the FortiGate that last logged the endpoint, else every authorized FortiGate.
    fn targets_for(&self, host: &Host) -> Vec<String> {
        if let Some(d) = self.device(&host.last_sender) {
            if d.device_type == "fortigate" {
                return vec![d.sn];
            }
        }
        if let Ok(Some(dev)) = self.store.last_fortigate_for(&host.epip) {
            if self
                .device(&dev)
                .map(|d| d.device_type == "fortigate")
                .unwrap_or(false)
            {
                return vec![dev];
            }
        }
        let devs = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devs.values()
            .filter(|d| d.authorized && d.device_type == "fortigate")
            .map(|d| d.sn.clone())
            .collect()
    }

    /// Sends (or queues until the device reconnects) a notification; returns its id.
    pub fn send_notification(&self, serial: &str, notice: Notice) -> u64 {
        let id = self.next_notify_id.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .store
            .kv_put(&[("counter:notify".into(), Some((id + 1).to_string()))]);
        let n = Notification::new(id, notice);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(serial.to_string())
            .or_default()
            .insert(id, n.clone());
        let (kind, srcip) = match &n.notice {
            Notice::Ioc(i) => ("ioc", Some(i.srcip.clone())),
            Notice::IocAck(a) => ("ioc-ack", Some(a.srcip.clone())),
            Notice::FazEvent(_) => ("faz-event", None),
        };
        let delivered = self
            .notifier
            .get()
            .map(|x| x.notify(serial, n))
            .unwrap_or(false);
        self.counters.notifications.fetch_add(1, Ordering::Relaxed);
        self.bus.emit(
            "ioc.notify",
            json!({"target": serial, "id": id, "type": kind, "srcip": srcip, "delivered": delivered}),
        );
        id
    }

    /// A device acknowledged a notification.
    pub fn notification_acked(&self, serial: &str, id: u64) {
        let removed = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(serial)
            .and_then(|m| m.remove(&id))
            .is_some();
        if removed {
            self.counters
                .notifications_acked
                .fetch_add(1, Ordering::Relaxed);
            self.bus
                .emit("ioc.notify.acked", json!({"target": serial, "id": id}));
        }
    }

    fn raise_alert(&self, trigger: &str, host: &Host, threat: &str, method: &str, rescan: bool) {
        let id = self.next_alert_id.fetch_add(1, Ordering::Relaxed);
        let by_endpoint = trigger == TRIGGER_BY_ENDPOINT;
        let subject = if by_endpoint {
            format!("Compromised host {} detected ({})", host.epip, host.verdict)
        } else {
            format!("IOC threat {threat} detected on {}", host.epip)
        };
        let mut tag = vec!["Compromised Host".to_string(), "IOC".to_string()];
        if rescan {
            tag.push("Ioc_Rescan".into());
        }
        let a = Alert {
            alertid: id.to_string(),
            triggername: trigger.to_string(),
            subject,
            severity: host.level.as_str().to_string(),
            epid: host.epid,
            epip: host.epip.clone(),
            epname: host.epname.clone(),
            euid: host.epid,
            devid: host.devid.clone(),
            vdom: host.vdom.clone(),
            threat: threat.to_string(),
            detect_method: method.to_string(),
            alerttime: self.now(),
            ackflag: false,
            ack_by: None,
            comment: String::new(),
            tag,
        };
        let _ = self
            .store
            .kv_put(&[(format!("alert:{id:012}"), kv_json(&a))]);
        self.bus.emit(
            "alert.raised",
            json!({"alertid": a.alertid, "triggername": trigger, "epip": a.epip, "threat": threat, "severity": a.severity}),
        );
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(a);
    }

    /// Acknowledges / un-acknowledges / comments alerts. Returns how many matched.
    pub fn update_alerts(
        &self,
        ids: &[String],
        ack: Option<bool>,
        comment: Option<&str>,
        by: &str,
    ) -> usize {
        let mut changed = Vec::new();
        {
            let mut alerts = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
            for a in alerts.iter_mut().filter(|a| ids.contains(&a.alertid)) {
                if let Some(f) = ack {
                    a.ackflag = f;
                    a.ack_by = f.then(|| by.to_string());
                }
                if let Some(c) = comment {
                    a.comment = c.to_string();
                }
                changed.push(a.clone());
            }
        }
        let updates: Vec<(String, Option<String>)> = changed
            .iter()
            .map(|a| {
                (
                    format!("alert:{:012}", a.alertid.parse::<u64>().unwrap_or(0)),
                    kv_json(a),
                )
            })
            .collect();
        let _ = self.store.kv_put(&updates);
        changed.len()
    }

    /// `events/ack`: acknowledges hosts and sends `ioc-ack` to their FortiGates.
    pub fn ack_hosts(
        &self,
        epid: Option<u64>,
        epip: Option<&str>,
        comment: Option<&str>,
        by: &str,
    ) -> Vec<Host> {
        let now = self.now();
        let hosts: Vec<Host> = {
            let mut eng = self.ioc.lock().unwrap_or_else(|e| e.into_inner());
            let ips = eng.ack(epid, epip, now, by, comment);
            ips.iter().filter_map(|ip| eng.host(ip).cloned()).collect()
        };
        let updates: Vec<(String, Option<String>)> = hosts
            .iter()
            .map(|h| (format!("host:{}", h.epip), kv_json(h)))
            .collect();
        let _ = self.store.kv_put(&updates);
        for h in &hosts {
            self.bus.emit(
                "ioc.ack",
                json!({"epip": h.epip, "epid": h.epid, "by": by, "comment": h.comment}),
            );
            let payload = Notice::IocAck(IocAckNotification {
                srcip: h.epip.clone(),
                epid: Some(h.epid),
                devid: h.devid.clone(),
                comment: h.comment.clone(),
            });
            for t in self.targets_for(h) {
                self.send_notification(&t, payload.clone());
            }
        }
        hosts
    }

    /// The half-hour suspicious-score evaluation and the daily roll-over.
    pub fn ioc_cycle(&self) {
        let now = self.now();
        let day = self.day_of(now);
        let threshold = self
            .ioc_settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .suspicious_threshold;
        let (changes, summary) = {
            let mut eng = self.ioc.lock().unwrap_or_else(|e| e.into_inner());
            let clock = self.clock;
            let summary = eng.roll_over(day, |d| {
                let (date, _) = fortilab_core::clock::format_date_time(d * 86_400);
                let _ = clock;
                date
            });
            (eng.evaluate(threshold, now, day), summary)
        };
        if let Some(s) = summary {
            let _ = self
                .store
                .kv_put(&[(format!("day:{}", s.day), kv_json(&s))]);
            self.bus.emit("ioc.day", json!({"summary": s}));
        }
        if !changes.is_empty() {
            self.handle_changes(changes, false);
        }
    }

    /// Runs a rescan of stored logs against the current TIDB (blocking; call off the runtime).
    pub fn run_rescan(&self, tid: u64, start: i64, end: i64) {
        let day = self.day_of(self.now());
        let mut scanned = 0u64;
        let mut threats = 0u64;
        let mut changes = Vec::new();
        let ltypes = [1i64, 2, 4, 5, 6];
        let res = self.store.scan(&ltypes, start, end, |found, row| {
            scanned += 1;
            let mut eng = self.ioc.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hit) = eng.tidb.check(&row.ioc_view()) {
                threats += 1;
                if let Some(epip) = row.srcip.as_deref() {
                    // Only threats the host does not list yet (insert-time hits are counted).
                    let known = eng
                        .host(epip)
                        .map(|h| h.threats.iter().any(|t| t.threat == hit.threat))
                        .unwrap_or(false);
                    if !known {
                        let src = Source {
                            epip,
                            epname: row.srcname.as_deref(),
                            user: row.user.as_deref(),
                            mac: row.srcmac.as_deref(),
                            devid: row.devid.as_deref().unwrap_or(&found.dev),
                            vdom: row.vd.as_deref().unwrap_or("root"),
                            sender: &found.dev,
                            log_type: crate::store::logtype_name(found.ltype),
                        };
                        if let Some(c) = eng.apply(&hit, &src, row.etime, day, true) {
                            changes.push(c);
                        }
                    }
                }
            }
            if scanned % 1000 == 0 {
                if let Some(r) = self
                    .rescans
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter_mut()
                    .find(|r| r.tid == tid)
                {
                    if r.status == "cancelled" {
                        return false;
                    }
                    r.scanned = scanned;
                }
            }
            true
        });
        let new_threats = changes.len() as u64;
        self.handle_changes(changes, true);
        let rec = {
            let mut rs = self.rescans.lock().unwrap_or_else(|e| e.into_inner());
            let Some(r) = rs.iter_mut().find(|r| r.tid == tid) else {
                return;
            };
            r.scanned = scanned;
            r.threats = threats;
            r.new_threats = new_threats;
            r.percentage = 100;
            r.end = Some(self.now());
            if r.status != "cancelled" {
                r.status = if res.is_ok() {
                    "done".into()
                } else {
                    "failed".into()
                };
            }
            r.clone()
        };
        let _ = self
            .store
            .kv_put(&[(format!("rescan:{tid:012}"), kv_json(&rec))]);
        self.bus.emit("ioc.rescan", json!({"tid": tid, "scanned": scanned, "threats": threats, "new_threats": new_threats, "status": rec.status}));
    }

    /// Registers a rescan run and returns its task id.
    pub fn new_rescan(&self, start: i64, end: i64, trigger: &str) -> u64 {
        let tid = self.next_tid.fetch_add(1, Ordering::Relaxed);
        let package = self
            .ioc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tidb
            .version
            .clone();
        let r = Rescan {
            tid,
            start: self.now(),
            end: None,
            status: "running".into(),
            percentage: 0,
            scanned: 0,
            threats: 0,
            new_threats: 0,
            package,
            trigger: trigger.into(),
            range_start: start,
            range_end: end,
        };
        self.rescans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
        if let Some(tx) = self.rescan_tx.get() {
            let _ = tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send((tid, start, end));
        }
        tid
    }

    // ------------------------------------------------------- settings and admins

    /// Replaces `config system global` (shared by the JSON-RPC API and the console) and
    /// persists it before returning.
    pub fn save_global(&self, g: GlobalSettings) -> anyhow::Result<()> {
        self.store
            .kv_put(&[("settings:global".into(), kv_json(&g))])?;
        if g.hostname != self.bus.device() {
            self.bus.set_device(&g.hostname);
        }
        *self.global.lock().unwrap_or_else(|e| e.into_inner()) = g;
        Ok(())
    }

    /// Replaces `config system log ioc` and persists it before returning.
    pub fn save_ioc_settings(&self, s: IocSettings) -> anyhow::Result<()> {
        self.store.kv_put(&[("settings:ioc".into(), kv_json(&s))])?;
        *self.ioc_settings.lock().unwrap_or_else(|e| e.into_inner()) = s;
        Ok(())
    }

    pub fn admin(&self, name: &str) -> Option<AdminUser> {
        self.admins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Checks an administrator's password (SSH console and JSON-RPC login).
    pub fn check_admin(&self, name: &str, password: &str) -> Option<AdminUser> {
        self.admin(name).filter(|a| a.check_password(password))
    }

    /// Creates or replaces an administrator and persists it before returning.
    pub fn save_admin(&self, a: AdminUser) -> anyhow::Result<()> {
        self.store
            .kv_put(&[(format!("admin:{}", a.name), kv_json(&a))])?;
        self.admins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(a.name.clone(), a);
        Ok(())
    }

    /// Deletes an administrator; false when it did not exist.
    pub fn delete_admin(&self, name: &str) -> anyhow::Result<bool> {
        let existed = self
            .admins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some();
        if existed {
            self.store.kv_put(&[(format!("admin:{name}"), None)])?;
        }
        Ok(existed)
    }

    /// A fresh salt for a password digest.
    pub fn new_salt(&self) -> String {
        self.token(16)
    }

    /// One of FAZ's own event logs about an administrator (`ui` is e.g. `ssh(10.0.0.1)` or
    /// `jsonrpc(10.0.0.1)`): logins, failed logins, configuration changes.
    #[allow(clippy::too_many_arguments)]
    pub fn admin_event(
        &self,
        logid: &str,
        level: &str,
        logdesc: &str,
        user: &str,
        ui: &str,
        action: &str,
        status: &str,
        msg: &str,
    ) {
        let now_ns = self.clock.now_ns();
        let (date, time) = self.clock.date_time(now_ns);
        let mut r = fortilab_core::logfmt::LogRecord::new();
        r.bare("date", date).bare("time", time);
        r.str("devname", self.bus.device())
            .str("devid", self.id.serial.clone());
        r.int("eventtime", now_ns).str("tz", self.clock.tz_string());
        r.str("logid", logid)
            .str("type", "event")
            .str("subtype", "system");
        r.str("level", level)
            .str("vd", "root")
            .str("logdesc", logdesc);
        r.str("user", user)
            .str("ui", ui)
            .str("action", action)
            .str("status", status)
            .str("msg", msg);
        let serial = self.id.serial.clone();
        let _ = self.ingest(&serial, false, 0, vec![r.render()]);
    }

    /// Writes one of FAZ's own event logs (jsonapi-log) into the store.
    pub fn local_event(&self, logdesc: &str, action: &str, user: &str, msg: &str) {
        let now_ns = self.clock.now_ns();
        let (date, time) = self.clock.date_time(now_ns);
        let mut r = fortilab_core::logfmt::LogRecord::new();
        r.bare("date", date).bare("time", time);
        r.str("devname", self.id.hostname.clone())
            .str("devid", self.id.serial.clone());
        r.int("eventtime", now_ns).str("tz", self.clock.tz_string());
        r.str("logid", "0031040031")
            .str("type", "event")
            .str("subtype", "system");
        r.str("level", "information")
            .str("vd", "root")
            .str("logdesc", logdesc);
        r.str("user", user).str("action", action).str("msg", msg);
        let serial = self.id.serial.clone();
        let _ = self.ingest(&serial, false, 0, vec![r.render()]);
    }
}

/// Platform string from a serial prefix.
pub fn platform_of(sn: &str) -> &'static str {
    if sn.starts_with("FGVM") {
        "FortiGate-VM64"
    } else if sn.starts_with("FCT") {
        "FortiClient"
    } else if sn.starts_with("FAZ") {
        "FortiAnalyzer-VM64"
    } else {
        "FortiGate"
    }
}
