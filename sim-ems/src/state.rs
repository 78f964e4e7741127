//! EMS state and its rules, free of I/O: endpoints, quarantine with one-time access codes,
//! fabric devices (FortiGates), and what a telemetry exchange changes.
//!
//! The desired quarantine state (`is_quarantined`, set by an admin or an authorized FortiGate)
//! and the state the endpoint last reported (`EC_QUARANTINED`) are kept apart: every keep-alive
//! reply carries the action that brings the endpoint to the desired state, so an instruction
//! lost on the way is simply sent again on the next keep-alive.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Alphabet of access codes: no 0/O/1/I, so a user can read one out.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// One quarantine of one endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Quarantine {
    /// Increases with every quarantine (EMS-wide); the endpoint echoes it.
    pub id: u64,
    /// The one-time access code (shown to admins while quarantined).
    pub code: String,
    /// Salt and SHA-256(salt ‖ code), both hex: what travels to the endpoint.
    pub salt: String,
    pub hash: String,
    pub message: String,
    /// Who asked: `admin:<user>`, `fortigate:<serial>`.
    pub by: String,
    pub reason: Option<String>,
    /// Lab time (ms) of the request.
    pub at_ms: i64,
    /// Lab time (ms) the instruction was first handed to the endpoint.
    pub delivered_ms: Option<i64>,
}

/// An endpoint record (faz-ems.md §5.3 field names where they exist).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub device_id: u64,
    pub uid: String,
    pub name: String,
    pub host: String,
    pub ip_addr: String,
    pub mac_addr: String,
    pub username: String,
    pub user_domain: String,
    pub os_version: String,
    pub fct_version: String,
    pub fct_sn: String,
    pub group_path: String,
    pub is_ems_onnet: bool,
    pub registered_ms: i64,
    pub last_seen_ms: i64,
    /// What the endpoint last reported in `EC_QUARANTINED`.
    pub reported_quarantined: bool,
    /// The quarantine EMS wants applied (the record's `is_quarantined`).
    pub quarantine: Option<Quarantine>,
    /// Hashes of access codes already used or voided (never accepted again).
    #[serde(default)]
    pub voided_codes: Vec<String>,
    /// [`code_digest`]s of this endpoint's access codes that were used or voided: no code in
    /// any endpoint's list is accepted again or issued again, across restarts (the list is
    /// part of the persisted endpoint record).
    #[serde(default)]
    pub used_codes: Vec<String>,
    /// The last quarantine message (kept after release, as the record field).
    #[serde(default)]
    pub quarantine_message: String,
}

/// A FortiGate that contacted EMS with its lab-CA certificate (`client_certificates`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FabricDevice {
    pub id: u64,
    pub cn: String,
    pub authorized: bool,
    pub peer: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// What an endpoint reported at registration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SysInfo {
    pub fctuid: String,
    pub ip: String,
    pub mac: String,
    pub onnet: bool,
    pub ec_quarantined: bool,
    pub hostname: String,
    pub user: String,
    pub domain: String,
    pub os: String,
    pub fct_version: String,
    pub fct_sn: String,
}

/// A keep-alive's content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeepAlive {
    pub fctuid: String,
    pub ip: Option<String>,
    pub ec_quarantined: bool,
    /// An access code the user entered (the endpoint already released itself offline).
    pub release_code: Option<String>,
}

/// The instruction a telemetry reply carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    Quarantine {
        id: u64,
        message: String,
        salt: String,
        hash: String,
    },
    Unquarantine,
}

/// Result of a keep-alive.
#[derive(Debug, Clone, PartialEq)]
pub enum KaOutcome {
    UnknownFctuid,
    Ok {
        device_id: u64,
        action: Action,
        /// Some(true/false) when the keep-alive carried an access code.
        code_accepted: Option<bool>,
        /// A quarantine instruction handed out for the first time (event).
        first_delivery: Option<u64>,
        /// Quarantine cleared by a valid access code: (quarantine id, by).
        released_by_code: Option<u64>,
        /// EC_QUARANTINED changed since the last contact.
        reported_changed: bool,
    },
}

/// How an endpoint is picked for quarantine.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Id(u64),
    Ip(String),
    Mac(String),
    Fctuid(String),
}

/// Result of a quarantine request for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineResult {
    pub device_id: u64,
    pub uid: String,
    pub ip_addr: String,
    pub host: String,
    /// False when the endpoint was already in the requested state.
    pub changed: bool,
    pub quarantine_id: Option<u64>,
}

/// The whole EMS state (persisted as one document).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmsState {
    pub endpoints: BTreeMap<u64, Endpoint>,
    pub fabric: BTreeMap<u64, FabricDevice>,
    pub next_device_id: u64,
    pub next_fabric_id: u64,
    pub next_quarantine_id: u64,
    #[serde(skip)]
    by_uid: HashMap<String, u64>,
    /// Bumped on every change that must survive a restart; saved with the snapshot so journal
    /// records already contained in it are skipped on load.
    #[serde(default)]
    pub generation: u64,
    /// What changed since the last [`take_changes`](Self::take_changes) (the journal's
    /// next record).
    #[serde(skip)]
    dirty: Dirty,
}

/// Keys changed since the last journal record.
#[derive(Debug, Clone, Default)]
struct Dirty {
    endpoints: BTreeSet<u64>,
    fabric: BTreeSet<u64>,
    deleted_endpoints: BTreeSet<u64>,
    deleted_fabric: BTreeSet<u64>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
            && self.fabric.is_empty()
            && self.deleted_endpoints.is_empty()
            && self.deleted_fabric.is_empty()
    }
}

/// One journal record: the durable changes of one group commit (whole records, so applying
/// one is idempotent), tagged with the generation it brings the state to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub generation: u64,
    /// `next_device_id`, `next_fabric_id`, `next_quarantine_id` after the change.
    pub next: [u64; 3],
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fabric: Vec<FabricDevice>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_endpoints: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_fabric: Vec<u64>,
}

/// Salted SHA-256 verifier of an access code (hex).
pub fn code_hash(salt: &str, code: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(code.trim().to_ascii_uppercase().as_bytes());
    hex::encode(h.finalize())
}

/// Unsalted SHA-256 of a normalised access code (hex): how EMS remembers used codes.
pub fn code_digest(code: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"fortilab-ems-access-code:");
    h.update(code.trim().to_ascii_uppercase().as_bytes());
    hex::encode(h.finalize())
}

/// Is `ip` a plausible IPv4/IPv6 text?
fn norm_ip(ip: &str) -> String {
    ip.trim().to_string()
}

impl EmsState {
    pub fn new() -> Self {
        EmsState {
            next_device_id: 1,
            next_fabric_id: 1,
            next_quarantine_id: 1,
            ..Default::default()
        }
    }

    /// Rebuilds indexes after loading.
    pub fn reindex(&mut self) {
        self.by_uid = self
            .endpoints
            .values()
            .map(|e| (e.uid.clone(), e.device_id))
            .collect();
        let max_dev = self.endpoints.keys().max().copied().unwrap_or(0);
        self.next_device_id = self.next_device_id.max(max_dev + 1);
        let max_fab = self.fabric.keys().max().copied().unwrap_or(0);
        self.next_fabric_id = self.next_fabric_id.max(max_fab + 1);
        let max_q = self
            .endpoints
            .values()
            .filter_map(|e| e.quarantine.as_ref())
            .map(|q| q.id)
            .max();
        self.next_quarantine_id = self.next_quarantine_id.max(max_q.unwrap_or(0) + 1);
    }

    fn touch_endpoint(&mut self, id: u64) {
        self.generation += 1;
        self.dirty.endpoints.insert(id);
    }

    fn touch_fabric(&mut self, id: u64) {
        self.generation += 1;
        self.dirty.fabric.insert(id);
    }

    /// Whether changes wait for the journal.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The changes since the last call, as one journal record (None when nothing changed).
    pub fn take_changes(&mut self) -> Option<JournalRecord> {
        if self.dirty.is_empty() {
            return None;
        }
        let d = std::mem::take(&mut self.dirty);
        Some(JournalRecord {
            generation: self.generation,
            next: [
                self.next_device_id,
                self.next_fabric_id,
                self.next_quarantine_id,
            ],
            endpoints: d
                .endpoints
                .iter()
                .filter_map(|id| self.endpoints.get(id).cloned())
                .collect(),
            fabric: d
                .fabric
                .iter()
                .filter_map(|id| self.fabric.get(id).cloned())
                .collect(),
            deleted_endpoints: d.deleted_endpoints.into_iter().collect(),
            deleted_fabric: d.deleted_fabric.into_iter().collect(),
        })
    }

    /// Forgets pending changes (a snapshot of the whole state was just taken).
    pub fn clear_changes(&mut self) {
        self.dirty = Dirty::default();
    }

    /// Applies a journal record (loading); call [`reindex`](Self::reindex) afterwards.
    pub fn apply_record(&mut self, rec: JournalRecord) {
        for ep in rec.endpoints {
            self.endpoints.insert(ep.device_id, ep);
        }
        for dev in rec.fabric {
            self.fabric.insert(dev.id, dev);
        }
        for id in rec.deleted_endpoints {
            self.endpoints.remove(&id);
        }
        for id in rec.deleted_fabric {
            self.fabric.remove(&id);
        }
        self.next_device_id = self.next_device_id.max(rec.next[0]);
        self.next_fabric_id = self.next_fabric_id.max(rec.next[1]);
        self.next_quarantine_id = self.next_quarantine_id.max(rec.next[2]);
        self.generation = self.generation.max(rec.generation);
    }

    pub fn endpoint_by_uid(&self, uid: &str) -> Option<&Endpoint> {
        self.by_uid
            .get(&uid.trim().to_ascii_uppercase())
            .and_then(|id| self.endpoints.get(id))
    }

    /// Registers (or re-registers) an endpoint. Returns (device_id, new?).
    pub fn register(&mut self, info: &SysInfo, now_ms: i64) -> (u64, bool) {
        let uid = info.fctuid.trim().to_ascii_uppercase();
        let existing = self.by_uid.get(&uid).copied();
        let (id, new) = match existing {
            Some(id) => (id, false),
            None => {
                let id = self.next_device_id;
                self.next_device_id += 1;
                (id, true)
            }
        };
        let prev = self.endpoints.remove(&id);
        let ep = Endpoint {
            device_id: id,
            uid: uid.clone(),
            name: info.hostname.clone(),
            host: info.hostname.clone(),
            ip_addr: norm_ip(&info.ip),
            mac_addr: crate::proto::mac_colon(&info.mac),
            username: info.user.clone(),
            user_domain: info.domain.clone(),
            os_version: info.os.clone(),
            fct_version: info.fct_version.clone(),
            fct_sn: info.fct_sn.clone(),
            group_path: "All Groups".to_string(),
            is_ems_onnet: info.onnet,
            registered_ms: prev.as_ref().map(|p| p.registered_ms).unwrap_or(now_ms),
            last_seen_ms: now_ms,
            reported_quarantined: info.ec_quarantined,
            quarantine: prev.as_ref().and_then(|p| p.quarantine.clone()),
            voided_codes: prev
                .as_ref()
                .map(|p| p.voided_codes.clone())
                .unwrap_or_default(),
            used_codes: prev
                .as_ref()
                .map(|p| p.used_codes.clone())
                .unwrap_or_default(),
            quarantine_message: prev.map(|p| p.quarantine_message).unwrap_or_default(),
        };
        self.endpoints.insert(id, ep);
        self.by_uid.insert(uid, id);
        self.touch_endpoint(id);
        (id, new)
    }

    /// The action that brings endpoint `id` to the desired state, marking first delivery.
    fn action_for(&mut self, id: u64, now_ms: i64) -> (Action, Option<u64>) {
        let Some(ep) = self.endpoints.get_mut(&id) else {
            return (Action::None, None);
        };
        match (&mut ep.quarantine, ep.reported_quarantined) {
            (Some(q), false) => {
                let first = if q.delivered_ms.is_none() {
                    q.delivered_ms = Some(now_ms);
                    Some(q.id)
                } else {
                    None
                };
                let a = Action::Quarantine {
                    id: q.id,
                    message: q.message.clone(),
                    salt: q.salt.clone(),
                    hash: q.hash.clone(),
                };
                if first.is_some() {
                    self.touch_endpoint(id);
                }
                (a, first)
            }
            (None, true) => (Action::Unquarantine, None),
            _ => (Action::None, None),
        }
    }

    /// The reply to a registration (after [`register`](Self::register)).
    pub fn registration_action(&mut self, id: u64, now_ms: i64) -> (Action, Option<u64>) {
        self.action_for(id, now_ms)
    }

    /// Applies a keep-alive.
    pub fn keepalive(&mut self, ka: &KeepAlive, now_ms: i64) -> KaOutcome {
        let uid = ka.fctuid.trim().to_ascii_uppercase();
        let Some(&id) = self.by_uid.get(&uid) else {
            return KaOutcome::UnknownFctuid;
        };
        let mut code_accepted = None;
        let mut released_by_code = None;
        let mut durable = false;
        let used = ka
            .release_code
            .as_deref()
            .is_some_and(|c| self.code_used(&code_digest(c)));
        {
            let ep = self.endpoints.get_mut(&id).expect("index is consistent");
            ep.last_seen_ms = now_ms;
            if let Some(ip) = &ka.ip {
                if !ip.is_empty() && *ip != ep.ip_addr {
                    ep.ip_addr = ip.clone();
                    durable = true;
                }
            }
            if let Some(code) = &ka.release_code {
                let ok = !used
                    && match &ep.quarantine {
                        Some(q) => code_hash(&q.salt, code) == q.hash,
                        None => false,
                    };
                code_accepted = Some(ok);
                if ok {
                    let q = ep.quarantine.take().expect("checked above");
                    ep.voided_codes.push(q.hash.clone());
                    ep.used_codes.push(code_digest(&q.code));
                    released_by_code = Some(q.id);
                    durable = true;
                }
            }
        }
        let ep = self.endpoints.get_mut(&id).expect("index is consistent");
        let reported_changed = ep.reported_quarantined != ka.ec_quarantined;
        ep.reported_quarantined = ka.ec_quarantined;
        if reported_changed || durable {
            self.touch_endpoint(id);
        }
        let (action, first_delivery) = self.action_for(id, now_ms);
        KaOutcome::Ok {
            device_id: id,
            action,
            code_accepted,
            first_delivery,
            released_by_code,
            reported_changed,
        }
    }

    /// Whether a code with this [`code_digest`] was ever used or voided on any endpoint.
    pub fn code_used(&self, digest: &str) -> bool {
        self.endpoints
            .values()
            .any(|e| e.used_codes.iter().any(|d| d == digest))
    }

    /// The endpoints a selector picks.
    pub fn select(&self, sel: &Selector) -> Vec<u64> {
        match sel {
            Selector::Id(id) => self
                .endpoints
                .get(id)
                .map(|e| vec![e.device_id])
                .unwrap_or_default(),
            Selector::Fctuid(u) => {
                let u = u.trim().to_ascii_uppercase();
                self.by_uid.get(&u).map(|id| vec![*id]).unwrap_or_default()
            }
            Selector::Ip(ip) => {
                let ip = norm_ip(ip);
                self.endpoints
                    .values()
                    .filter(|e| e.ip_addr == ip)
                    .map(|e| e.device_id)
                    .collect()
            }
            Selector::Mac(m) => {
                let m = crate::proto::mac_colon(m);
                self.endpoints
                    .values()
                    .filter(|e| e.mac_addr == m)
                    .map(|e| e.device_id)
                    .collect()
            }
        }
    }

    /// Quarantines endpoint `id` with a fresh one-time code drawn from `rng`.
    pub fn quarantine(
        &mut self,
        id: u64,
        by: &str,
        reason: Option<String>,
        message: &str,
        rng: &mut impl Rng,
        now_ms: i64,
    ) -> Option<QuarantineResult> {
        let qid = self.next_quarantine_id;
        let ep = self.endpoints.get_mut(&id)?;
        if let Some(q) = &ep.quarantine {
            return Some(QuarantineResult {
                device_id: id,
                uid: ep.uid.clone(),
                ip_addr: ep.ip_addr.clone(),
                host: ep.host.clone(),
                changed: false,
                quarantine_id: Some(q.id),
            });
        }
        // A code that was ever used or voided is never issued again (32^8 codes: a repeat
        // from the CSPRNG is all but impossible, this makes it impossible).
        let used: BTreeSet<&str> = self
            .endpoints
            .values()
            .flat_map(|e| e.used_codes.iter().map(String::as_str))
            .collect();
        let code = loop {
            let c: String = (0..8)
                .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
                .collect();
            if !used.contains(code_digest(&c).as_str()) {
                break c;
            }
        };
        let ep = self.endpoints.get_mut(&id)?;
        let salt: [u8; 8] = rng.gen();
        let salt = hex::encode(salt);
        let hash = code_hash(&salt, &code);
        ep.quarantine = Some(Quarantine {
            id: qid,
            code,
            salt,
            hash,
            message: message.to_string(),
            by: by.to_string(),
            reason,
            at_ms: now_ms,
            delivered_ms: None,
        });
        ep.quarantine_message = message.to_string();
        let res = QuarantineResult {
            device_id: id,
            uid: ep.uid.clone(),
            ip_addr: ep.ip_addr.clone(),
            host: ep.host.clone(),
            changed: true,
            quarantine_id: Some(qid),
        };
        self.next_quarantine_id += 1;
        self.touch_endpoint(id);
        Some(res)
    }

    /// Clears the quarantine of endpoint `id` (the code is voided).
    pub fn unquarantine(&mut self, id: u64) -> Option<QuarantineResult> {
        let ep = self.endpoints.get_mut(&id)?;
        let q = ep.quarantine.take();
        let changed = q.is_some();
        if let Some(q) = &q {
            ep.voided_codes.push(q.hash.clone());
            ep.used_codes.push(code_digest(&q.code));
        }
        let res = QuarantineResult {
            device_id: id,
            uid: ep.uid.clone(),
            ip_addr: ep.ip_addr.clone(),
            host: ep.host.clone(),
            changed,
            quarantine_id: q.map(|q| q.id),
        };
        if changed {
            self.touch_endpoint(id);
        }
        Some(res)
    }

    /// Removes endpoints; returns the ids removed.
    pub fn delete(&mut self, ids: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(ep) = self.endpoints.remove(id) {
                self.by_uid.remove(&ep.uid);
                out.push(*id);
                self.generation += 1;
                self.dirty.endpoints.remove(id);
                self.dirty.deleted_endpoints.insert(*id);
            }
        }
        out
    }

    /// Records a FortiGate's contact; returns (device, first contact?).
    pub fn fabric_contact(
        &mut self,
        cn: &str,
        peer: &str,
        auto_authorize: bool,
        now_ms: i64,
    ) -> (FabricDevice, bool) {
        if let Some(dev) = self.fabric.values_mut().find(|d| d.cn == cn) {
            dev.last_seen_ms = now_ms;
            dev.peer = peer.to_string();
            let mut changed = false;
            if auto_authorize && !dev.authorized {
                dev.authorized = true;
                changed = true;
            }
            let d = dev.clone();
            if changed {
                self.touch_fabric(d.id);
            }
            return (d, false);
        }
        let id = self.next_fabric_id;
        self.next_fabric_id += 1;
        let dev = FabricDevice {
            id,
            cn: cn.to_string(),
            authorized: auto_authorize,
            peer: peer.to_string(),
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
        };
        self.fabric.insert(id, dev.clone());
        self.touch_fabric(id);
        (dev, true)
    }

    /// Sets a fabric device's authorization; None if unknown.
    pub fn fabric_authorize(&mut self, id: u64, authorized: bool) -> Option<FabricDevice> {
        let dev = self.fabric.get_mut(&id)?;
        dev.authorized = authorized;
        let d = dev.clone();
        self.touch_fabric(id);
        Some(d)
    }

    pub fn fabric_delete(&mut self, id: u64) -> bool {
        let r = self.fabric.remove(&id).is_some();
        if r {
            self.generation += 1;
            self.dirty.fabric.remove(&id);
            self.dirty.deleted_fabric.insert(id);
        }
        r
    }

    pub fn fabric_by_cn(&self, cn: &str) -> Option<&FabricDevice> {
        self.fabric.values().find(|d| d.cn == cn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(uid: &str, ip: &str) -> SysInfo {
        SysInfo {
            fctuid: uid.into(),
            ip: ip.into(),
            mac: "02-00-00-00-00-01".into(),
            hostname: "PC-52".into(),
            user: "alice".into(),
            os: "Microsoft Windows 10".into(),
            fct_version: "6.4.3.1608".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_used_access_code_is_never_accepted_or_issued_again_even_after_a_restart() {
        let mut st = EmsState::new();
        let (id, _) = st.register(&info("AAA", "10.115.2.52"), 1000);
        // The same random stream twice: without the used-code list the second quarantine
        // would mint the first one's code again (what a seeded EMS did after each restart).
        st.quarantine(
            id,
            "admin:admin",
            None,
            "q",
            &mut fortilab_core::rng::stream(9, "codes"),
            2000,
        )
        .unwrap();
        let first = st.endpoints[&id].quarantine.as_ref().unwrap().code.clone();
        let ka = |code: &str| KeepAlive {
            fctuid: "AAA".into(),
            ec_quarantined: true,
            release_code: Some(code.to_string()),
            ..Default::default()
        };
        let KaOutcome::Ok { code_accepted, .. } = st.keepalive(&ka(&first), 3000) else {
            panic!()
        };
        assert_eq!(code_accepted, Some(true));
        // A restart: the state goes through its persisted form.
        let mut st: EmsState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        st.reindex();
        st.quarantine(
            id,
            "admin:admin",
            None,
            "q",
            &mut fortilab_core::rng::stream(9, "codes"),
            4000,
        )
        .unwrap();
        let second = st.endpoints[&id].quarantine.as_ref().unwrap().code.clone();
        assert_ne!(second, first, "a used code is not issued again");
        let KaOutcome::Ok { code_accepted, .. } = st.keepalive(&ka(&first), 5000) else {
            panic!()
        };
        assert_eq!(code_accepted, Some(false), "the used code is refused");
        assert!(st.endpoints[&id].quarantine.is_some());
        // Unquarantine voids the current code too.
        st.unquarantine(id).unwrap();
        assert!(st.code_used(&code_digest(&second)));
    }

    #[test]
    fn register_quarantine_deliver_release_by_code() {
        let mut st = EmsState::new();
        let mut r = fortilab_core::rng::stream(1, "t");
        let (id, new) = st.register(&info("AAA", "10.115.2.52"), 1000);
        assert!(new);
        assert_eq!(st.register(&info("AAA", "10.115.2.52"), 1001), (id, false));
        assert_eq!(st.registration_action(id, 1001).0, Action::None);
        assert_eq!(st.select(&Selector::Ip("10.115.2.52".into())), vec![id]);
        assert_eq!(
            st.select(&Selector::Mac("02:00:00:00:00:01".into())),
            vec![id]
        );
        assert_eq!(st.select(&Selector::Fctuid("aaa".into())), vec![id]);

        let q = st
            .quarantine(id, "admin:admin", None, "quarantined", &mut r, 2000)
            .unwrap();
        assert!(q.changed);
        // A second request does not mint a new code.
        let again = st
            .quarantine(id, "fortigate:FGT", None, "x", &mut r, 2001)
            .unwrap();
        assert!(!again.changed);
        let code = st.endpoints[&id].quarantine.as_ref().unwrap().code.clone();
        assert_eq!(code.len(), 8);

        let ka = KeepAlive {
            fctuid: "AAA".into(),
            ..Default::default()
        };
        let KaOutcome::Ok {
            action,
            first_delivery,
            ..
        } = st.keepalive(&ka, 3000)
        else {
            panic!()
        };
        let Action::Quarantine { salt, hash, .. } = action else {
            panic!("{action:?}")
        };
        assert_eq!(code_hash(&salt, &code), hash);
        assert_eq!(first_delivery, q.quarantine_id);
        // Not yet applied: sent again, but not a first delivery.
        let KaOutcome::Ok {
            action,
            first_delivery,
            ..
        } = st.keepalive(&ka, 3100)
        else {
            panic!()
        };
        assert!(matches!(action, Action::Quarantine { .. }));
        assert_eq!(first_delivery, None);
        // Applied.
        let ka_q = KeepAlive {
            ec_quarantined: true,
            ..ka.clone()
        };
        let KaOutcome::Ok { action, .. } = st.keepalive(&ka_q, 3200) else {
            panic!()
        };
        assert_eq!(action, Action::None);

        // Wrong code: nothing changes.
        let wrong = KeepAlive {
            release_code: Some("WRONG123".into()),
            ..ka.clone()
        };
        let KaOutcome::Ok {
            action,
            code_accepted,
            ..
        } = st.keepalive(&wrong, 3300)
        else {
            panic!()
        };
        assert_eq!(code_accepted, Some(false));
        assert!(matches!(action, Action::Quarantine { .. }));
        assert!(st.endpoints[&id].quarantine.is_some());
        // Right code: released and voided.
        let right = KeepAlive {
            release_code: Some(code.to_lowercase()),
            ..ka.clone()
        };
        let KaOutcome::Ok {
            action,
            code_accepted,
            released_by_code,
            ..
        } = st.keepalive(&right, 3400)
        else {
            panic!()
        };
        assert_eq!(code_accepted, Some(true));
        assert_eq!(released_by_code, q.quarantine_id);
        assert_eq!(action, Action::None);
        assert!(st.endpoints[&id].quarantine.is_none());
        // The same code again: refused.
        let KaOutcome::Ok { code_accepted, .. } = st.keepalive(&right, 3500) else {
            panic!()
        };
        assert_eq!(code_accepted, Some(false));
    }

    #[test]
    fn unquarantine_is_sent_until_applied_and_unknown_fctuid() {
        let mut st = EmsState::new();
        let mut r = fortilab_core::rng::stream(1, "t");
        let (id, _) = st.register(&info("BBB", "10.0.0.1"), 0);
        st.quarantine(id, "admin:admin", None, "m", &mut r, 1)
            .unwrap();
        let ka = KeepAlive {
            fctuid: "BBB".into(),
            ec_quarantined: true,
            ..Default::default()
        };
        st.keepalive(&ka, 2);
        assert!(st.unquarantine(id).unwrap().changed);
        assert!(!st.unquarantine(id).unwrap().changed);
        let KaOutcome::Ok { action, .. } = st.keepalive(&ka, 3) else {
            panic!()
        };
        assert_eq!(action, Action::Unquarantine);
        let ka0 = KeepAlive {
            ec_quarantined: false,
            ..ka
        };
        let KaOutcome::Ok { action, .. } = st.keepalive(&ka0, 4) else {
            panic!()
        };
        assert_eq!(action, Action::None);
        let unknown = KeepAlive {
            fctuid: "NOPE".into(),
            ..Default::default()
        };
        assert_eq!(st.keepalive(&unknown, 5), KaOutcome::UnknownFctuid);
    }

    #[test]
    fn fabric_devices_and_persistence_round_trip() {
        let mut st = EmsState::new();
        let (d, first) = st.fabric_contact("FGVM01TM00000001", "127.0.0.1:1", false, 0);
        assert!(first && !d.authorized);
        let (d2, first) = st.fabric_contact("FGVM01TM00000001", "127.0.0.1:2", false, 1);
        assert!(!first && d2.id == d.id);
        assert!(st.fabric_authorize(d.id, true).unwrap().authorized);
        let mut r = fortilab_core::rng::stream(1, "t");
        let (id, _) = st.register(&info("CCC", "10.0.0.2"), 0);
        st.quarantine(
            id,
            "fortigate:FGVM01TM00000001",
            Some("ioc".into()),
            "m",
            &mut r,
            1,
        );
        let json = serde_json::to_string(&st).unwrap();
        let mut back: EmsState = serde_json::from_str(&json).unwrap();
        back.reindex();
        assert_eq!(
            back.endpoint_by_uid("CCC").unwrap().quarantine,
            st.endpoints[&id].quarantine
        );
        assert!(back.fabric_by_cn("FGVM01TM00000001").unwrap().authorized);
        let (id2, new) = back.register(&info("DDD", "10.0.0.3"), 2);
        assert!(new && id2 > id);
        assert_eq!(back.delete(&[id, 999]), vec![id]);
        assert!(back.endpoint_by_uid("CCC").is_none());
    }
}
