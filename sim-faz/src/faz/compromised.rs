//! Compromised hosts: the IOC engine (TIDB and per-endpoint verdicts) and `config system log
//! ioc`, each behind its own lock; the engine's pass over an incoming batch, the alerts,
//! notifications and lab events its changes raise, acknowledgements and the half-hour cycle.

use fortilab_core::EventKind;
use std::sync::{Mutex, MutexGuard};

use fortilab_core::logchan::{IocAckNotification, IocLevel, IocNotification, Notice};
use serde_json::json;

use super::alerts::{TRIGGER_BY_ENDPOINT, TRIGGER_BY_THREAT};
use super::{kv_json, Faz};
use crate::ioc::{Change, Host, IocEngine, IocSettings, Source};
use crate::store::Row;

/// The IOC engine and its settings.
#[derive(Debug)]
pub struct Compromised {
    engine: Mutex<IocEngine>,
    settings: Mutex<IocSettings>,
}

impl Compromised {
    pub(super) fn new(engine: IocEngine, settings: IocSettings) -> Self {
        Self {
            engine: Mutex::new(engine),
            settings: Mutex::new(settings),
        }
    }

    /// The engine (TIDB, hosts), locked.
    pub fn engine(&self) -> MutexGuard<'_, IocEngine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `config system log ioc` in force.
    pub fn settings(&self) -> IocSettings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the settings in memory (see [`Faz::save_ioc_settings`] to persist them).
    pub fn set_settings(&self, s: IocSettings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

impl Faz {
    pub(super) fn ioc_hook(
        &self,
        sender: &str,
        rows: &[Row],
        client_name: Option<&str>,
        now: i64,
        day: i64,
        changes: &mut Vec<Change>,
    ) -> crate::store::KvUpdates {
        let mut touched: Vec<String> = Vec::new();
        let mut eng = self.ioc.engine();
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
                    learned = self.devices.names().get(epip).cloned();
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
                self.devices
                    .names()
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
                let mut eng = self.ioc.engine();
                let s = self.ioc.settings();
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
                    EventKind::IocCompromised,
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
                    let mut eng = self.ioc.engine();
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
            let json = self.ioc.engine().host(&epip).and_then(kv_json);
            let _ = self.store.kv_put(&[(format!("host:{epip}"), json)]);
        }
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
            let mut eng = self.ioc.engine();
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
                EventKind::IocAck,
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
        let threshold = self.ioc.settings().suspicious_threshold;
        let (changes, summary) = {
            let mut eng = self.ioc.engine();
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
            self.bus.emit(EventKind::IocDay, json!({"summary": s}));
        }
        if !changes.is_empty() {
            self.handle_changes(changes, false);
        }
    }

    /// Replaces `config system log ioc` and persists it before returning.
    pub fn save_ioc_settings(&self, s: IocSettings) -> anyhow::Result<()> {
        self.store.kv_put(&[("settings:ioc".into(), kv_json(&s))])?;
        self.ioc.set_settings(s);
        Ok(())
    }
}
