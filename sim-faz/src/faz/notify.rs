//! Notifications to devices (`ioc`, `ioc-ack`): numbered, kept until the device acknowledges
//! them, pushed through the log channel (a [`Notifier`]) to the FortiGate that should act.

use fortilab_core::EventKind;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use fortilab_core::logchan::{Notice, Notification};
use serde_json::json;

use super::Faz;
use crate::ioc::Host;

/// Where notifications go: the log channel's receiver (or a test double).
pub trait Notifier: Send + Sync + 'static {
    /// Pushes a notification to a connected device; false when it is not connected.
    fn notify(&self, serial: &str, n: Notification) -> bool;
    /// Tells the channel a device was authorized (it re-sends a registered hello reply).
    fn authorize(&self, serial: &str);
}

/// Notifications not yet acknowledged, the next id and where they are pushed.
pub struct Notifications {
    notifier: OnceLock<Arc<dyn Notifier>>,
    /// Notifications not yet acknowledged by the device: serial → id → payload.
    pending: Mutex<HashMap<String, BTreeMap<u64, Notification>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("pending", &self.pending_count())
            .finish_non_exhaustive()
    }
}

impl Notifications {
    pub(super) fn new(next_id: u64) -> Self {
        Self {
            notifier: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(next_id),
        }
    }

    /// Sets where notifications are pushed (once: the log channel's receiver, or a test
    /// double).
    pub fn set_notifier(&self, n: Arc<dyn Notifier>) {
        let _ = self.notifier.set(n);
    }

    pub(super) fn notifier(&self) -> Option<&Arc<dyn Notifier>> {
        self.notifier.get()
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<u64, Notification>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Notifications not yet acknowledged, over all devices.
    pub fn pending_count(&self) -> usize {
        self.pending().values().map(|m| m.len()).sum()
    }
}

impl Faz {
    /// FortiGates to notify about a host: the sender of the hit when it is a FortiGate, else
    /// the FortiGate that last logged the endpoint, else every authorized FortiGate.
    pub(super) fn targets_for(&self, host: &Host) -> Vec<String> {
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
        let devs = self.devices.map();
        devs.values()
            .filter(|d| d.authorized && d.device_type == "fortigate")
            .map(|d| d.sn.clone())
            .collect()
    }

    /// Sends (or queues until the device reconnects) a notification; returns its id.
    pub fn send_notification(&self, serial: &str, notice: Notice) -> u64 {
        let id = self.notifications.new_id();
        let _ = self
            .store
            .kv_put(&[("counter:notify".into(), Some((id + 1).to_string()))]);
        let n = Notification::new(id, notice);
        self.notifications
            .pending()
            .entry(serial.to_string())
            .or_default()
            .insert(id, n.clone());
        let (kind, srcip) = match &n.notice {
            Notice::Ioc(i) => ("ioc", Some(i.srcip.clone())),
            Notice::IocAck(a) => ("ioc-ack", Some(a.srcip.clone())),
            Notice::FazEvent(_) => ("faz-event", None),
        };
        let delivered = self
            .notifications
            .notifier()
            .map(|x| x.notify(serial, n))
            .unwrap_or(false);
        self.counters.notifications.fetch_add(1, Ordering::Relaxed);
        self.bus.emit(
            EventKind::IocNotify,
            json!({"target": serial, "id": id, "type": kind, "srcip": srcip, "delivered": delivered}),
        );
        id
    }

    /// A device acknowledged a notification.
    pub fn notification_acked(&self, serial: &str, id: u64) {
        let removed = self
            .notifications
            .pending()
            .get_mut(serial)
            .and_then(|m| m.remove(&id))
            .is_some();
        if removed {
            self.counters
                .notifications_acked
                .fetch_add(1, Ordering::Relaxed);
            self.bus.emit(
                EventKind::IocNotifyAcked,
                json!({"target": serial, "id": id}),
            );
        }
    }
}
