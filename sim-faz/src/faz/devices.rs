//! The device registry: FortiGates and FortiClients of the log channel, syslog-only senders and
//! model devices added over JSON-RPC, their authorization (and the lab's auto-authorize
//! switch), and the endpoint names learned from FortiClients. Persisted under `dev:` keys.

use fortilab_core::EventKind;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{kv_json, Faz};

/// The serial of a syslog-only device: `SYSLOG-` and its address in hex (`SYSLOG-0A731214`).
pub fn syslog_serial(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("SYSLOG-{:08X}", u32::from(v4)),
        std::net::IpAddr::V6(v6) => format!("SYSLOG-{:032X}", u128::from(v6)),
    }
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

/// The registered (and waiting) devices, by serial, with the auto-authorize switch and the
/// endpoint names learned from FortiClients. One lock each.
#[derive(Debug)]
pub struct Devices {
    map: Mutex<BTreeMap<String, Device>>,
    auto_authorize: AtomicBool,
    /// Endpoint IP → host name learned from FortiClient devices.
    ip_names: Mutex<HashMap<String, String>>,
}

impl Devices {
    /// The registry restored from the store (every device disconnected).
    pub(super) fn new(devices: BTreeMap<String, Device>, auto_authorize: bool) -> Self {
        Self {
            map: Mutex::new(devices),
            auto_authorize: AtomicBool::new(auto_authorize),
            ip_names: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn map(&self) -> MutexGuard<'_, BTreeMap<String, Device>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn names(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.ip_names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every device, by serial.
    pub fn list(&self) -> Vec<Device> {
        self.map().values().cloned().collect()
    }

    pub fn get(&self, sn: &str) -> Option<Device> {
        self.map().get(sn).cloned()
    }

    /// The device with this name or serial.
    pub fn find(&self, key: &str) -> Option<Device> {
        self.map()
            .values()
            .find(|d| d.name == key || d.sn == key)
            .cloned()
    }

    /// Whether a device that says hello is authorized at once (`/_lab/auto-authorize`).
    pub fn auto_authorize(&self) -> bool {
        self.auto_authorize.load(Ordering::Relaxed)
    }

    pub fn set_auto_authorize(&self, on: bool) {
        self.auto_authorize.store(on, Ordering::Relaxed);
    }
}

impl Faz {
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
        let auto = self.devices.auto_authorize();
        let (dev, new) = {
            let mut devs = self.devices.map();
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
                EventKind::DeviceRegistered,
                json!({"sn": serial, "name": dev.name, "platform": platform, "device_type": device_type,
                       "authorized": dev.authorized, "ip": ip}),
            );
        }
        self.bus.emit(
            EventKind::DeviceConnected,
            json!({"sn": serial, "authorized": dev.authorized}),
        );
        if dev.device_type == "forticlient" {
            // FortiClient hostnames name the endpoint in compromised-host rows.
            if !dev.ip.is_empty() {
                self.devices
                    .names()
                    .insert(dev.ip.clone(), dev.hostname.clone());
            }
        }
        dev.authorized
    }

    pub fn device_disconnected(&self, serial: &str) {
        let d = {
            let mut devs = self.devices.map();
            let Some(d) = devs.get_mut(serial) else {
                return;
            };
            d.connected = false;
            d.connected_since = None;
            d.last_seen = self.now();
            d.clone()
        };
        self.persist_device(&d);
        self.bus
            .emit(EventKind::DeviceDisconnected, json!({"sn": serial}));
    }

    /// Authorizes (adds) a device: `exec /dvm/cmd/add/device`. Creates a model device when the
    /// serial has not connected yet.
    /// Records what a JSON-RPC device add said about a device (fields it left out keep
    /// their value); returns the device.
    pub fn set_device_model(&self, sn: &str, m: &DeviceModel) -> Device {
        let d = {
            let mut devs = self.devices.map();
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
            let mut devs = self.devices.map();
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
        self.bus.emit(
            EventKind::DeviceAuthorized,
            json!({"sn": sn, "name": d.name}),
        );
        if let Some(n) = self.notifications.notifier() {
            n.authorize(sn);
        }
        d
    }

    pub fn delete_device(&self, key: &str) -> bool {
        let removed = {
            let mut devs = self.devices.map();
            let sn = devs
                .values()
                .find(|d| d.sn == key || d.name == key)
                .map(|d| d.sn.clone());
            sn.and_then(|s| devs.remove(&s))
        };
        match removed {
            Some(d) => {
                let _ = self.store.kv_put(&[(format!("dev:{}", d.sn), None)]);
                self.bus.emit(EventKind::DeviceDeleted, json!({"sn": d.sn}));
                true
            }
            None => false,
        }
    }

    pub fn device(&self, sn: &str) -> Option<Device> {
        self.devices.get(sn)
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
        let auto = self.devices.auto_authorize();
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
            let mut devs = self.devices.map();
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
                EventKind::DeviceRegistered,
                json!({"sn": d.sn, "name": d.name, "via": "syslog", "authorized": d.authorized, "ip": text}),
            );
        }
        d.authorized.then_some(d)
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
