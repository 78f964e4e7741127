//! Event-handler alerts (the two default compromised-host triggers): raised from IOC changes,
//! acknowledged and commented over JSON-RPC, persisted under `alert:` keys.

use fortilab_core::EventKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{kv_json, Faz};
use crate::ioc::Host;

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

/// The alerts raised, oldest first, and the next alert id.
#[derive(Debug)]
pub struct Alerts {
    list: Mutex<Vec<Alert>>,
    next_id: AtomicU64,
}

impl Alerts {
    pub(super) fn new(alerts: Vec<Alert>) -> Self {
        let next = alerts
            .iter()
            .filter_map(|a| a.alertid.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        Self {
            list: Mutex::new(alerts),
            next_id: AtomicU64::new(next),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<Alert>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Every alert, oldest first.
    pub fn list(&self) -> Vec<Alert> {
        self.lock().clone()
    }
}

impl Faz {
    pub(super) fn raise_alert(
        &self,
        trigger: &str,
        host: &Host,
        threat: &str,
        method: &str,
        rescan: bool,
    ) {
        let id = self.alerts.new_id();
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
            EventKind::AlertRaised,
            json!({"alertid": a.alertid, "triggername": trigger, "epip": a.epip, "threat": threat, "severity": a.severity}),
        );
        self.alerts.lock().push(a);
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
            let mut alerts = self.alerts.lock();
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
}
