//! The EMS connector (`config endpoint-control fctems`, FortiOS `fcnacd`): HTTPS to the EMS
//! API port with the FortiGate's lab-CA certificate as client identity (CN = serial), the EMS
//! certificate verified against the lab CA. It polls `GET /api/v1/fabric/status` every
//! `status-check-interval` (lab seconds) to fill the EMS status the monitor API reports, and
//! sends `POST /api/v1/fabric/quarantine` for the `quarantine-forticlient` action
//! (faz-ems.md §5.2/§5.4, paths agreed with sim-ems [P]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::http::{self, Target};
use crate::config::{Config, FosVersion};
use crate::device::{Device, EmsState, FabricStatus, FazState};
use fortilab_core::EventKind;

/// One configured EMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmsConn {
    /// The name the monitor API reports (`name`, else the entry key).
    pub name: String,
    pub server: String,
    pub port: u16,
    /// Real-time limit of one call.
    pub call_timeout: Duration,
    /// Lab seconds between status checks.
    pub interval: u64,
}

/// The EMS connectors of a configuration (7.0.8+: only `status enable` entries).
pub fn configured(cfg: &Config, version: FosVersion) -> Vec<EmsConn> {
    let ms_timeout = version >= FosVersion::new(7, 0, 8);
    cfg.table("endpoint-control fctems")
        .map(|table| {
            table
                .entries()
                .iter()
                .filter(|e| !ms_timeout || e.scalar("status") == Some("enable"))
                .filter_map(|e| {
                    let server = e.scalar("server")?.trim().to_string();
                    if server.is_empty() {
                        return None;
                    }
                    let timeout: u64 = e
                        .scalar("call-timeout")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(if ms_timeout { 30_000 } else { 30 });
                    Some(EmsConn {
                        name: e.scalar("name").unwrap_or(&e.key).to_string(),
                        server,
                        port: e
                            .scalar("https-port")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(443),
                        call_timeout: if ms_timeout {
                            Duration::from_millis(timeout)
                        } else {
                            Duration::from_secs(timeout)
                        },
                        interval: e
                            .scalar("status-check-interval")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(60)
                            .max(1),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the EMS answered to a quarantine request.
#[derive(Debug, Clone)]
pub struct QuarantineDone {
    pub ems: String,
    pub data: Value,
    pub message: String,
}

/// One endpoint of an EMS's inventory: what EMS reports to the connector
/// (`GET /api/v1/endpoints/index`), the source of `monitor/endpoint-control/record-list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmsEndpoint {
    /// The connector (`fctems` name) that reported it, and that EMS's serial.
    pub ems: String,
    pub ems_serial: String,
    /// FortiClient UID.
    pub uid: String,
    pub host: String,
    pub ip: String,
    pub mac: String,
    pub user: String,
    pub domain: String,
    pub os: String,
    pub fct_version: String,
    pub fct_sn: String,
    pub group: String,
    pub online: bool,
    pub onnet: bool,
    pub quarantined: bool,
    /// Unix seconds (EMS's `last_seen`).
    pub last_seen: i64,
}

impl EmsEndpoint {
    /// One row of `endpoints/index` (`is_*` flags as 0/1 or booleans).
    pub fn from_row(ems: &str, ems_serial: &str, v: &Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let b = |k: &str| match &v[k] {
            Value::Bool(x) => *x,
            Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
            _ => false,
        };
        Self {
            ems: ems.to_string(),
            ems_serial: ems_serial.to_string(),
            uid: s("uid"),
            host: if v["host"].as_str().unwrap_or("").is_empty() {
                s("name")
            } else {
                s("host")
            },
            ip: s("ip_addr"),
            mac: s("mac_addr"),
            user: s("username"),
            domain: s("user_domain"),
            os: s("os_version"),
            fct_version: s("fct_version"),
            fct_sn: s("fct_sn"),
            group: s("group_path"),
            online: b("is_ems_online"),
            onnet: b("is_ems_onnet"),
            quarantined: b("is_quarantined"),
            last_seen: v["last_seen"].as_i64().unwrap_or(0),
        }
    }
}

/// Largest page the connector asks EMS for.
const INVENTORY_PAGE: usize = 1000;

/// The connector: state per EMS and the calls.
pub struct EmsConnector {
    dev: Arc<Device>,
    states: RwLock<BTreeMap<String, EmsState>>,
    /// The last inventory each EMS reported (kept while an EMS is unreachable, as FortiOS
    /// keeps its endpoint records).
    inventories: RwLock<BTreeMap<String, Vec<EmsEndpoint>>>,
    /// The provider installed on the device (to notice when another module replaces it).
    installed: Mutex<Option<Arc<dyn FabricStatus>>>,
    wake: Notify,
}

impl std::fmt::Debug for EmsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmsConnector").finish_non_exhaustive()
    }
}

/// The device's fabric-status provider with EMS state from the connector; FortiAnalyzer state
/// comes from whatever provider was installed before (the log forwarder's).
struct Fabric {
    prev: Arc<dyn FabricStatus>,
    ems: Arc<EmsConnector>,
}

impl FabricStatus for Fabric {
    fn ems(&self, name: &str) -> EmsState {
        self.ems.state(name)
    }
    fn faz(&self) -> FazState {
        self.prev.faz()
    }
}

impl EmsConnector {
    pub fn new(dev: Arc<Device>) -> Arc<Self> {
        Arc::new(Self {
            dev,
            states: RwLock::new(BTreeMap::new()),
            inventories: RwLock::new(BTreeMap::new()),
            installed: Mutex::new(None),
            wake: Notify::new(),
        })
    }

    /// The state of EMS `name` (not connected until checked).
    pub fn state(&self, name: &str) -> EmsState {
        self.states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Installs the connector as the device's EMS status provider, wrapping (for the
    /// FortiAnalyzer state) whatever provider is installed now. Idempotent; called again
    /// after another module installed its own provider.
    pub fn ensure_installed(self: &Arc<Self>) {
        let current = self.dev.fabric();
        let mut g = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mine) = g.as_ref() {
            if std::ptr::addr_eq(Arc::as_ptr(mine), Arc::as_ptr(&current)) {
                return;
            }
        }
        let mine: Arc<dyn FabricStatus> = Arc::new(Fabric {
            prev: current,
            ems: self.clone(),
        });
        self.dev.set_fabric(mine.clone());
        *g = Some(mine);
    }

    /// Asks the poller to check now (the connector configuration changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn set_state(&self, name: &str, st: EmsState) {
        let changed = {
            let mut m = self.states.write().unwrap_or_else(|p| p.into_inner());
            let prev = m.insert(name.to_string(), st.clone());
            prev.as_ref() != Some(&st)
        };
        if changed {
            self.dev.events.emit(
                EventKind::EmsStatus,
                json!({"ems": name, "status": st.status, "connected": st.connected,
                       "ems_serial": st.ems_serial}),
            );
            tracing::info!(ems = name, status = %st.status, "EMS connector state");
        }
    }

    fn target(&self, c: &EmsConn) -> Result<Target, String> {
        let tls = self
            .dev
            .tls
            .get()
            .ok_or_else(|| "the FortiGate has no certificate yet".to_string())?;
        let ip: IpAddr = match c.server.parse() {
            Ok(ip) => ip,
            Err(_) if c.server.eq_ignore_ascii_case("localhost") => IpAddr::from([127, 0, 0, 1]),
            Err(_) => {
                return Err(format!(
                "cannot resolve the EMS server \"{}\" (the lab has no DNS: use its lab address)",
                c.server
            ))
            }
        };
        let addr = self.dev.lab_map.resolve(SocketAddr::new(ip, c.port));
        Ok(Target {
            addr,
            host: c.server.clone(),
            tls: Some(http::tls_config(&tls.ca_pem, Some(&tls.cert))?),
        })
    }

    /// `GET /api/v1/fabric/status` → the connector state.
    pub async fn check(&self, c: &EmsConn) -> EmsState {
        let prev = self.state(&c.name);
        let st = match self.target(c) {
            Err(e) => {
                tracing::warn!(ems = %c.name, error = %e, "EMS status check");
                EmsState::default()
            }
            Ok(t) => match http::request(
                &t,
                "GET",
                "/api/v1/fabric/status",
                &[],
                None,
                c.call_timeout,
            )
            .await
            {
                Ok(r) => {
                    let v = r.json().unwrap_or(Value::Null);
                    let d = &v["data"];
                    let authorized = d["authorized"].as_bool().unwrap_or(false)
                        || d["status"].as_str() == Some("authorized");
                    EmsState {
                        connected: r.status == 200 || r.status == 403,
                        status: if r.status == 200 && authorized {
                            "connected".into()
                        } else if r.status == 200 || r.status == 403 {
                            "waiting for authorization".into()
                        } else {
                            "not connected".into()
                        },
                        ems_serial: d["ems_serial"].as_str().unwrap_or(&prev.ems_serial).into(),
                        websocket: "disconnected".into(),
                    }
                }
                Err(e) => {
                    tracing::debug!(ems = %c.name, error = %e, "EMS unreachable");
                    EmsState {
                        ems_serial: prev.ems_serial.clone(),
                        ..EmsState::default()
                    }
                }
            },
        };
        self.set_state(&c.name, st.clone());
        st
    }

    /// The endpoint inventory of every configured EMS, fetched now (`GET
    /// /api/v1/endpoints/index`, paged). An EMS that cannot be reached contributes the
    /// inventory it reported last; one that has not authorized this FortiGate contributes
    /// nothing (EMS shares its endpoints with authorized FortiGates only).
    pub async fn inventory(&self) -> Vec<EmsEndpoint> {
        let conns = self.dev.config.with(|c| configured(c, self.dev.version));
        {
            let mut m = self.inventories.write().unwrap_or_else(|p| p.into_inner());
            m.retain(|k, _| conns.iter().any(|c| &c.name == k));
        }
        for c in &conns {
            match self.fetch_inventory(c).await {
                Ok(list) => {
                    self.inventories
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(c.name.clone(), list);
                }
                Err(e) => tracing::debug!(ems = %c.name, error = %e, "EMS inventory"),
            }
        }
        let m = self.inventories.read().unwrap_or_else(|p| p.into_inner());
        conns
            .iter()
            .filter_map(|c| m.get(&c.name))
            .flatten()
            .cloned()
            .collect()
    }

    /// The inventories as last fetched (no EMS call).
    pub fn cached_inventory(&self) -> Vec<EmsEndpoint> {
        self.inventories
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    /// One EMS's whole inventory (`Err` when it could not be read: keep the last one).
    async fn fetch_inventory(&self, c: &EmsConn) -> Result<Vec<EmsEndpoint>, String> {
        let t = self.target(c)?;
        let mut out = Vec::new();
        loop {
            let path = format!(
                "/api/v1/endpoints/index?offset={}&count={INVENTORY_PAGE}",
                out.len()
            );
            let r = http::request(&t, "GET", &path, &[], None, c.call_timeout).await?;
            if r.status == 403 {
                // Not (or no longer) authorized on that EMS: it shares nothing.
                let mut st = self.state(&c.name);
                st.connected = true;
                st.status = "waiting for authorization".into();
                self.set_state(&c.name, st);
                return Ok(Vec::new());
            }
            let v = r.json().unwrap_or(Value::Null);
            if r.status != 200 || v["result"]["retval"].as_i64() != Some(1) {
                return Err(format!("endpoints/index answered HTTP {}", r.status));
            }
            let serial = self.state(&c.name).ems_serial;
            let rows = v["data"]["endpoints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let n = rows.len();
            out.extend(
                rows.iter()
                    .map(|row| EmsEndpoint::from_row(&c.name, &serial, row)),
            );
            let total = v["data"]["total"].as_u64().unwrap_or(0) as usize;
            if n == 0 || out.len() >= total {
                return Ok(out);
            }
        }
    }

    /// Polls every configured EMS every `status-check-interval` lab seconds (unreachable or
    /// unauthorized ones again after at most 5 lab seconds) until `shutdown`.
    pub async fn poll_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let clock = self.dev.clock;
        let mut next: BTreeMap<String, i64> = BTreeMap::new();
        loop {
            self.ensure_installed();
            let conns = self.dev.config.with(|c| configured(c, self.dev.version));
            // Forget EMS entries that are no longer configured.
            {
                let mut m = self.states.write().unwrap_or_else(|p| p.into_inner());
                m.retain(|k, _| conns.iter().any(|c| &c.name == k));
            }
            next.retain(|k, _| conns.iter().any(|c| &c.name == k));
            let now = clock.now_ns();
            let mut wait_ns = i64::MAX;
            for c in &conns {
                let due = *next.get(&c.name).unwrap_or(&0);
                if due <= now {
                    let st = self.check(c).await;
                    let secs = if st.status == "connected" {
                        c.interval
                    } else {
                        c.interval.min(5)
                    };
                    next.insert(c.name.clone(), clock.now_ns() + secs as i64 * 1_000_000_000);
                }
                let due = next[&c.name] - clock.now_ns();
                wait_ns = wait_ns.min(due.max(0));
            }
            let wait = if wait_ns == i64::MAX {
                Duration::from_secs(3600)
            } else {
                Duration::from_nanos(wait_ns as u64)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = clock.sleep(wait) => {}
                _ = self.wake.notified() => { next.clear(); }
            }
        }
    }

    /// `POST /api/v1/fabric/quarantine` to each configured EMS in turn until one accepts.
    pub async fn quarantine(
        self: &Arc<Self>,
        ip: Option<&str>,
        mac: Option<&str>,
        fctuid: Option<&str>,
        reason: &str,
        stitch: &str,
    ) -> Result<QuarantineDone, String> {
        self.fabric_q(true, ip, mac, fctuid, reason, stitch)
            .await
            .map_err(|e| e.message)
    }

    /// [`EmsConnector::quarantine`] telling apart "no EMS answered" (worth a retry) from a
    /// refusal.
    pub async fn quarantine_call(
        self: &Arc<Self>,
        ip: Option<&str>,
        mac: Option<&str>,
        fctuid: Option<&str>,
        reason: &str,
        stitch: &str,
    ) -> Result<QuarantineDone, FabricError> {
        self.fabric_q(true, ip, mac, fctuid, reason, stitch).await
    }

    /// `POST /api/v1/fabric/unquarantine` (monitor `endpoint-control/registration/
    /// unquarantine`), to each configured EMS in turn until one accepts.
    pub async fn unquarantine(
        self: &Arc<Self>,
        ip: Option<&str>,
        mac: Option<&str>,
        fctuid: Option<&str>,
        reason: &str,
    ) -> Result<QuarantineDone, String> {
        self.fabric_q(false, ip, mac, fctuid, reason, "")
            .await
            .map_err(|e| e.message)
    }

    async fn fabric_q(
        self: &Arc<Self>,
        quarantine: bool,
        ip: Option<&str>,
        mac: Option<&str>,
        fctuid: Option<&str>,
        reason: &str,
        stitch: &str,
    ) -> Result<QuarantineDone, FabricError> {
        let (path, kind) = if quarantine {
            ("/api/v1/fabric/quarantine", EventKind::EmsQuarantineRequest)
        } else {
            (
                "/api/v1/fabric/unquarantine",
                EventKind::EmsUnquarantineRequest,
            )
        };
        self.ensure_installed();
        let conns = self.dev.config.with(|c| configured(c, self.dev.version));
        if conns.is_empty() {
            return Err(FabricError {
                message:
                    "no EMS connector is configured (config endpoint-control fctems / set server)"
                        .into(),
                answered: true,
            });
        }
        let body = json!({"ip": ip, "mac": mac, "fctuid": fctuid, "reason": reason,
                          "source": self.dev.serial});
        let mut errors = Vec::new();
        let mut answered = false;
        for c in &conns {
            self.dev.events.emit(
                kind,
                json!({"ems": c.name, "server": format!("{}:{}", c.server, c.port), "ip": ip,
                       "mac": mac, "fctuid": fctuid, "reason": reason, "stitch": stitch}),
            );
            let t = match self.target(c) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("EMS {}: {e}", c.name));
                    continue;
                }
            };
            let reply = http::request(
                &t,
                "POST",
                path,
                &[],
                Some(body.to_string().into_bytes()),
                c.call_timeout,
            )
            .await;
            match reply {
                Err(e) => {
                    self.set_state(
                        &c.name,
                        EmsState {
                            ems_serial: self.state(&c.name).ems_serial,
                            ..EmsState::default()
                        },
                    );
                    errors.push(format!("EMS {}: {e}", c.name));
                }
                Ok(r) => {
                    answered = true;
                    let v = r.json().unwrap_or(Value::Null);
                    let retval = v["result"]["retval"].as_i64().unwrap_or(0);
                    let message = v["result"]["message"].as_str().unwrap_or("").to_string();
                    if r.status == 403 {
                        let mut st = self.state(&c.name);
                        st.connected = true;
                        st.status = "waiting for authorization".into();
                        self.set_state(&c.name, st);
                    }
                    if r.status == 200 && retval == 1 {
                        let mut st = self.state(&c.name);
                        st.connected = true;
                        st.status = "connected".into();
                        self.set_state(&c.name, st);
                        return Ok(QuarantineDone {
                            ems: c.name.clone(),
                            data: v["data"].clone(),
                            message,
                        });
                    }
                    errors.push(format!(
                        "EMS {} refused: HTTP {} retval {retval}{}",
                        c.name,
                        r.status,
                        if message.is_empty() {
                            String::new()
                        } else {
                            format!(" ({message})")
                        }
                    ));
                }
            }
        }
        Err(FabricError {
            message: errors.join("; "),
            answered,
        })
    }
}

/// A failed fabric call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricError {
    pub message: String,
    /// Whether any EMS answered (a refusal); `false`: none could be reached.
    pub answered: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;
    use rand::SeedableRng;

    #[test]
    fn reads_connectors_per_version() {
        let v64 = FosVersion::parse("6.4.4").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (cfg, _) = parse_config(
            &Config::default(),
            "config endpoint-control fctems\nedit \"EMS-LAB\"\nset server \"10.115.1.30\"\nset https-port 8443\nset status-check-interval 10\nnext\nedit \"empty\"\nnext\nend\n",
            "t",
            v64,
            false,
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            configured(&cfg, v64),
            [EmsConn {
                name: "EMS-LAB".into(),
                server: "10.115.1.30".into(),
                port: 8443,
                call_timeout: Duration::from_secs(30),
                interval: 10
            }]
        );
        let v72 = FosVersion::parse("7.2.5").unwrap();
        let (cfg, _) = parse_config(
            &Config::default(),
            "config endpoint-control fctems\nedit 1\nset status enable\nset name \"ems1\"\nset server \"10.115.1.30\"\nnext\nedit 2\nset name \"off\"\nset server \"10.0.0.9\"\nnext\nend\n",
            "t",
            v72,
            false,
            &mut rng,
        )
        .unwrap();
        let c = configured(&cfg, v72);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "ems1");
        assert_eq!(c[0].port, 443);
        assert_eq!(c[0].call_timeout, Duration::from_millis(30_000));
    }
}
