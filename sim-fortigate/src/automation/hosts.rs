//! The FortiGate's compromised-host list (reference fortios.md §8.1, seed step 9): one entry
//! per host (source address); a host is acted on once — per stitch — until the FortiAnalyzer's
//! `ioc-ack` notification clears it. Pure code.

use std::collections::{BTreeMap, BTreeSet};

use super::model::IocLevel;

/// A FortiAnalyzer compromised-host notification (`{"type":"ioc",...}`, docs/architecture.md).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IocNotice {
    pub id: Option<u64>,
    pub srcip: String,
    pub verdict: String,
    pub ioc_level: IocLevel,
    pub mac: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub devid: Option<String>,
    pub vdom: String,
    pub threat: String,
    pub detect_method: String,
    pub epid: Option<i64>,
    pub timestamp: Option<i64>,
}

impl IocNotice {
    /// The engine's view of a FortiAnalyzer IOC notification.
    pub fn from_notification(id: u64, n: &fortilab_core::logchan::IocNotification) -> Self {
        IocNotice {
            id: Some(id),
            srcip: n.srcip.clone(),
            verdict: n.verdict.clone(),
            ioc_level: match n.ioc_level {
                fortilab_core::logchan::IocLevel::High => IocLevel::High,
                fortilab_core::logchan::IocLevel::Medium => IocLevel::Medium,
            },
            mac: n.mac.clone(),
            user: n.user.clone(),
            hostname: n.hostname.clone(),
            devid: (!n.devid.is_empty()).then(|| n.devid.clone()),
            vdom: n.vdom.clone(),
            threat: n.threat.clone(),
            detect_method: n.detect_method.clone(),
            epid: n.epid.map(|e| e as i64),
            timestamp: (n.timestamp != 0).then_some(n.timestamp),
        }
    }

    /// The notification's fields as `%%log.<field>%%` variables.
    pub fn fields(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("srcip".into(), self.srcip.clone());
        m.insert("verdict".into(), self.verdict.clone());
        m.insert("ioc_level".into(), self.ioc_level.as_str().into());
        m.insert("threat".into(), self.threat.clone());
        m.insert("detect_method".into(), self.detect_method.clone());
        m.insert("vd".into(), self.vdom.clone());
        for (k, v) in [
            ("mac", &self.mac),
            ("user", &self.user),
            ("hostname", &self.hostname),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone());
            }
        }
        if let Some(e) = self.epid {
            m.insert("epid".into(), e.to_string());
        }
        m
    }
}

/// One compromised host.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostEntry {
    pub srcip: String,
    pub mac: Option<String>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub verdict: String,
    pub ioc_level: IocLevel,
    pub threat: String,
    pub detect_method: String,
    pub epid: Option<i64>,
    /// Lab time, Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Notifications received for this host since it was listed.
    pub count: u64,
    /// Stitches already run for this host (not run again until acknowledged).
    pub stitches_run: BTreeSet<String>,
}

/// What a notification did to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The host was not listed: it is now.
    New,
    /// Already listed (its details were refreshed).
    Known,
}

/// The compromised-host list.
#[derive(Debug, Default, Clone)]
pub struct CompromisedHosts {
    hosts: BTreeMap<String, HostEntry>,
}

impl CompromisedHosts {
    /// Records a notification at lab time `now`.
    pub fn observe(&mut self, n: &IocNotice, now: i64) -> Observed {
        match self.hosts.get_mut(&n.srcip) {
            Some(e) => {
                e.last_seen = now;
                e.count += 1;
                if n.ioc_level > e.ioc_level {
                    e.ioc_level = n.ioc_level;
                    e.verdict = n.verdict.clone();
                }
                if n.mac.is_some() {
                    e.mac = n.mac.clone();
                }
                if n.hostname.is_some() {
                    e.hostname = n.hostname.clone();
                }
                if !n.threat.is_empty() {
                    e.threat = n.threat.clone();
                }
                Observed::Known
            }
            None => {
                self.hosts.insert(
                    n.srcip.clone(),
                    HostEntry {
                        srcip: n.srcip.clone(),
                        mac: n.mac.clone(),
                        hostname: n.hostname.clone(),
                        user: n.user.clone(),
                        verdict: n.verdict.clone(),
                        ioc_level: n.ioc_level,
                        threat: n.threat.clone(),
                        detect_method: n.detect_method.clone(),
                        epid: n.epid,
                        first_seen: now,
                        last_seen: now,
                        count: 1,
                        stitches_run: BTreeSet::new(),
                    },
                );
                Observed::New
            }
        }
    }

    /// Marks `stitch` as run for `srcip`; false if it already ran (then it must not run again).
    pub fn claim(&mut self, srcip: &str, stitch: &str) -> bool {
        match self.hosts.get_mut(srcip) {
            Some(e) => e.stitches_run.insert(stitch.to_string()),
            None => false,
        }
    }

    /// The FortiAnalyzer acknowledged the host: it leaves the list (by address, else by
    /// endpoint id).
    pub fn ack(&mut self, srcip: Option<&str>, epid: Option<i64>) -> Option<HostEntry> {
        if let Some(ip) = srcip {
            if let Some(e) = self.hosts.remove(ip) {
                return Some(e);
            }
        }
        let epid = epid?;
        let key = self
            .hosts
            .iter()
            .find(|(_, e)| e.epid == Some(epid))
            .map(|(k, _)| k.clone())?;
        self.hosts.remove(&key)
    }

    pub fn get(&self, srcip: &str) -> Option<&HostEntry> {
        self.hosts.get(srcip)
    }

    pub fn list(&self) -> Vec<HostEntry> {
        self.hosts.values().cloned().collect()
    }

    /// Replaces the list (a lab snapshot being restored).
    pub fn restore(&mut self, entries: Vec<HostEntry>) {
        self.hosts = entries.into_iter().map(|e| (e.srcip.clone(), e)).collect();
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notice(ip: &str, verdict: &str) -> IocNotice {
        let n: fortilab_core::logchan::Notification = serde_json::from_value(json!({
            "id": 7, "type": "ioc", "verdict": verdict, "srcip": ip,
            "ioc_level": if verdict == "Infected" { "high" } else { "medium" },
            "mac": null, "user": null, "hostname": "PC-52", "devid": "FGVM01TM00000001",
            "vdom": "root", "threat": "www.eicar.org", "detect_method": "Infected-domain",
            "epid": 1041, "timestamp": 1614881482}))
        .unwrap();
        match &n.notice {
            fortilab_core::logchan::Notice::Ioc(i) => IocNotice::from_notification(n.id, i),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_documented_notification() {
        let n = notice("10.115.2.52", "Infected");
        assert_eq!(n.id, Some(7));
        assert_eq!(n.srcip, "10.115.2.52");
        assert_eq!(n.ioc_level, IocLevel::High);
        assert_eq!(n.mac, None);
        assert_eq!(n.hostname.as_deref(), Some("PC-52"));
        assert_eq!(n.devid.as_deref(), Some("FGVM01TM00000001"));
        assert_eq!(n.epid, Some(1041));
        assert_eq!(n.fields()["threat"], "www.eicar.org");
        assert_eq!(notice("10.0.0.1", "Suspicious").ioc_level, IocLevel::Medium);
    }

    #[test]
    fn a_host_is_acted_on_once_until_acknowledged() {
        let mut h = CompromisedHosts::default();
        let n = notice("10.115.2.52", "Infected");
        assert_eq!(h.observe(&n, 100), Observed::New);
        assert!(h.claim("10.115.2.52", "Compromised Host Quarantine"));
        // A second notification: known, the stitch may not run again.
        assert_eq!(h.observe(&n, 160), Observed::Known);
        assert!(!h.claim("10.115.2.52", "Compromised Host Quarantine"));
        // Another stitch that starts matching (e.g. configured later) may still run once.
        assert!(h.claim("10.115.2.52", "Other"));
        let e = h.get("10.115.2.52").unwrap();
        assert_eq!((e.first_seen, e.last_seen, e.count), (100, 160, 2));
        // Another host is independent.
        assert_eq!(
            h.observe(&notice("10.115.2.53", "Infected"), 170),
            Observed::New
        );
        assert_eq!(h.len(), 2);
        // The acknowledgement clears the host: the next notification acts again.
        assert!(h.ack(Some("10.115.2.52"), None).is_some());
        assert!(h.ack(Some("10.115.2.52"), None).is_none());
        assert_eq!(h.observe(&n, 200), Observed::New);
        assert!(h.claim("10.115.2.52", "Compromised Host Quarantine"));
        // Ack by endpoint id when the address is not given.
        assert!(h.ack(None, Some(1041)).is_some());
        assert!(!h.claim("10.115.2.52", "x"));
    }

    #[test]
    fn escalation_updates_the_entry() {
        let mut h = CompromisedHosts::default();
        h.observe(&notice("10.0.0.9", "Suspicious"), 1);
        assert_eq!(h.get("10.0.0.9").unwrap().ioc_level, IocLevel::Medium);
        h.observe(&notice("10.0.0.9", "Infected"), 2);
        let e = h.get("10.0.0.9").unwrap();
        assert_eq!(e.ioc_level, IocLevel::High);
        assert_eq!(e.verdict, "Infected");
    }
}
