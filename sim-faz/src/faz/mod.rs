//! The FortiAnalyzer's state, transport-free: the log channel, syslog, the JSON-RPC API and the
//! console call in. [`Faz`] holds the shared parts (identity, clock, event bus, store,
//! counters) and one owned part per concern, each with its own lock and methods:
//! [`Devices`] (`devices.rs`), log intake (`ingest.rs`), [`Compromised`] hosts and the IOC
//! engine (`compromised.rs`), [`Rescans`] (`rescan.rs`), [`Alerts`] (`alerts.rs`),
//! [`Notifications`] (`notify.rs`), [`Settings`] (`settings.rs`) and [`Admins`] with the login
//! sessions (`admins.rs`). This file builds it, restoring what the store kept.

mod admins;
mod alerts;
mod compromised;
mod counters;
mod devices;
mod ingest;
mod notify;
mod rescan;
mod settings;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use fortilab_core::binary::Timing;
use fortilab_core::{EventBus, LabClock};
use serde::Serialize;

pub use admins::{AdminUser, Admins, Session};
pub use alerts::{Alert, Alerts, TRIGGER_BY_ENDPOINT, TRIGGER_BY_THREAT};
pub use compromised::Compromised;
pub use counters::Counters;
pub use devices::{platform_of, syslog_serial, Device, DeviceModel, Devices};
pub use ingest::{Parsed, Submitted};
pub use notify::{Notifications, Notifier};
pub use rescan::{Rescan, Rescans};
pub use settings::{GlobalSettings, Settings};

use crate::ioc::{Host, IocEngine, IocSettings, Tidb};
use crate::store::Store;

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

/// The FortiAnalyzer.
pub struct Faz {
    pub id: Identity,
    pub clock: LabClock,
    pub timing: Timing,
    pub bus: EventBus,
    pub store: Store,
    pub counters: Counters,
    /// The device's task supervisor (reports `task.*` events on `bus`).
    pub supervisor: fortilab_core::supervise::Supervisor,
    /// Registered and waiting devices.
    pub devices: Devices,
    /// The IOC engine (TIDB, compromised hosts) and its settings.
    pub ioc: Compromised,
    pub rescans: Rescans,
    pub alerts: Alerts,
    /// Notifications to devices, until acknowledged.
    pub notifications: Notifications,
    /// `config system global`.
    pub settings: Settings,
    /// Administrators and login sessions.
    pub admins: Admins,
    /// Syslog's raw log files: lines stored, lines indexed into the SQL store, the insert lag.
    pub rawlog: crate::rawlog::RawStats,
    /// The last commit failed (a `store.error` event was emitted; `store.recovered` follows
    /// the next successful one).
    store_failing: AtomicBool,
}

impl std::fmt::Debug for Faz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faz")
            .field("serial", &self.id.serial)
            .finish_non_exhaustive()
    }
}

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
            counters: Counters::default(),
            supervisor,
            devices: Devices::new(devices, auto_authorize),
            ioc: Compromised::new(engine, settings),
            rescans: Rescans::new(rescans),
            alerts: Alerts::new(alerts),
            notifications: Notifications::new(next_notify),
            settings: Settings::new(global),
            admins: Admins::new(admins),
            rawlog: Default::default(),
            store_failing: AtomicBool::new(false),
        }))
    }

    /// Where syslog's raw log files live: `rawlogs/` beside the store's directory when that is
    /// `<data-dir>/store` (so a lab snapshot copies them with the data directory), else inside
    /// the store's directory.
    pub fn raw_log_dir(&self) -> std::path::PathBuf {
        let store_dir = self
            .store
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("."));
        match store_dir.parent() {
            Some(d) if store_dir.file_name().is_some_and(|n| n == "store") => d.join("rawlogs"),
            _ => store_dir.join("rawlogs"),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    /// Lab-local day number of a lab instant.
    pub fn day_of(&self, t: i64) -> i64 {
        (t + self.clock.tz_minutes() as i64 * 60).div_euclid(86_400)
    }
    /// A fresh random token (session ids): from the OS CSPRNG, never from the seed, so a
    /// session id seen before a restart is never issued again.
    pub fn token(&self, n: usize) -> String {
        fortilab_core::secrets::random_token(n)
    }
}
