//! Device state for the panels and the topology, read through the devices' vendor APIs (the
//! FortiGate's policy, stitches and stats, banned IPs, FortiAnalyzer and EMS connector status
//! and memory logs; the FortiAnalyzer's devices, compromised hosts and alerts; EMS endpoints and
//! fabric devices) and the endpoints' lab surface. Polled every [`POLL`] while a browser
//! watches, pushed to browsers over server-sent events.
//!
//! [`derive`] turns the raw answers into link and endpoint states; it has no I/O.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::session::{Clients, LabSession, LabStatus};

/// Poll period while at least one browser watches.
pub const POLL: Duration = Duration::from_millis(300);

/// How long one device answer may take before it counts as down.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The latest state, shared with every browser connection.
pub struct StatePoller {
    tx: watch::Sender<Arc<Value>>,
    viewers: AtomicUsize,
    pub wake: tokio::sync::Notify,
}

impl Default for StatePoller {
    fn default() -> Self {
        Self::new()
    }
}

impl StatePoller {
    pub fn new() -> Self {
        Self {
            tx: watch::channel(Arc::new(json!({"lab": {"status": "starting"}}))).0,
            viewers: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn latest(&self) -> Arc<Value> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Value>> {
        self.tx.subscribe()
    }

    /// A browser starts watching; the guard stops counting it when dropped.
    pub fn viewer(self: &Arc<Self>) -> ViewerGuard {
        self.viewers.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_waiters();
        ViewerGuard(self.clone())
    }

    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::SeqCst)
    }

    /// Polls while someone watches, until `shutdown`.
    pub async fn run(self: Arc<Self>, session: Arc<LabSession>, shutdown: CancellationToken) {
        loop {
            if self.viewers() > 0 {
                let st = snapshot(&session).await;
                self.tx.send_replace(Arc::new(st));
            }
            let idle = if self.viewers() > 0 {
                POLL
            } else {
                Duration::from_secs(5)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(idle) => {}
                _ = self.wake.notified() => {}
                _ = session.changed.notified() => {}
            }
        }
    }

    /// Polls once now (a GET of `/api/state` without a watching browser).
    pub async fn poll_now(&self, session: &LabSession) -> Arc<Value> {
        let st = Arc::new(snapshot(session).await);
        self.tx.send_replace(st.clone());
        st
    }
}

pub struct ViewerGuard(Arc<StatePoller>);

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Ok(value)` as the value, an error as `{"error": "..."}` (the panel shows it).
async fn call<F>(f: F) -> Value
where
    F: Future<Output = anyhow::Result<Value>>,
{
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => json!({"error": format!("{e:#}")}),
        Err(_) => json!({"error": "no answer within 1.5 s"}),
    }
}

fn results(v: &Value) -> Value {
    if v.get("error").is_some() {
        return v.clone();
    }
    v.get("results").cloned().unwrap_or(Value::Null)
}

fn faz_data(v: &Value) -> Value {
    if v.get("error").is_some() {
        return v.clone();
    }
    v.get("data").cloned().unwrap_or(Value::Null)
}

async fn fgt_get(c: &Clients, path: &str) -> Value {
    results(&call(c.fgt.get(path)).await)
}

async fn lab_get(c: &Clients, url: String) -> Value {
    call(async {
        let r = c.endpoints_client().get(&url).send().await?;
        let st = r.status();
        let v: Value = r.json().await?;
        anyhow::ensure!(st.is_success(), "HTTP {st}: {v}");
        Ok(v)
    })
    .await
}

impl Clients {
    fn endpoints_client(&self) -> &reqwest::Client {
        self.endpoints.client()
    }
}

/// Reads every device once.
pub async fn snapshot(session: &LabSession) -> Value {
    let status = session.status();
    let procs = session.procs();
    let clock = session.timeline.clock();
    let def = session.def();
    let mut lab = json!({
        "status": match &status { LabStatus::Running => "running", LabStatus::Restarting(_) => "restarting", LabStatus::Failed(_) => "failed" },
        "message": match &status { LabStatus::Running => String::new(), LabStatus::Restarting(m) | LabStatus::Failed(m) => m.clone() },
        "name": def.lab.name, "speed": clock.speed(), "timing": format!("{:?}", def.lab.timing).to_lowercase(),
        "now": clock.now_ns(), "tz_minutes": clock.tz_minutes(), "procs": procs,
    });
    let Some(c) = session.clients() else {
        return json!({"lab": lab});
    };
    lab["seed"] = c.report["seed"].clone();
    let report = &c.report;
    let eps: Vec<Value> = report["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .take(24)
        .collect();
    let fgt = async {
        let (status, policy, stitches, stats, banned, fazmon, ems, wf, tr, ev, chosts) = tokio::join!(
            fgt_get(&c, "/api/v2/monitor/system/status"),
            fgt_get(&c, "/api/v2/cmdb/firewall/policy"),
            fgt_get(&c, "/api/v2/cmdb/system/automation-stitch"),
            fgt_get(&c, "/api/v2/monitor/system/automation-stitch/stats"),
            fgt_get(&c, "/api/v2/monitor/user/banned"),
            fgt_get(&c, "/api/v2/monitor/log/fortianalyzer"),
            fgt_get(&c, "/api/v2/monitor/endpoint-control/ems/status"),
            fgt_get(&c, "/api/v2/log/memory/webfilter?rows=12"),
            fgt_get(&c, "/api/v2/log/memory/traffic/forward?rows=12"),
            fgt_get(&c, "/api/v2/log/memory/event/system?rows=12"),
            // No vendor REST path lists the FortiGate's own compromised-host table; the lab
            // surface shows it (the GUI's "Compromised Hosts" widget reads FortiAnalyzer).
            lab_get(&c, format!("{}/_lab/compromised-hosts", c.fgt.base)),
        );
        json!({"status": status, "policy": policy, "stitches": stitches, "stitch_stats": stats,
               "banned": banned, "faz": fazmon, "ems": ems,
               "logs": {"webfilter": wf, "traffic": tr, "event": ev},
               "compromised": chosts.get("hosts").cloned().unwrap_or(chosts)})
    };
    let faz = async {
        let (devices, hosts, alerts) = tokio::join!(
            call(
                c.faz
                    .rpc("get", "/dvmdb/adom/root/device", json!({}), false)
            ),
            call(
                c.faz
                    .rpc("get", "/ioc/adom/root/compromised-hosts", json!({}), true)
            ),
            call(c.faz.rpc(
                "get",
                "/eventmgmt/adom/root/alerts",
                json!({"limit": 20}),
                true
            )),
        );
        json!({"devices": faz_data(&devices), "compromised": faz_data(&hosts), "alerts": faz_data(&alerts)})
    };
    let ems = async {
        let (endpoints, fabric) = tokio::join!(
            call(async { Ok(Value::Array(c.ems.endpoints().await?)) }),
            call(async {
                let v = c.ems.call("GET", "client_certificates/index", None).await?;
                Ok(v.get("data").cloned().unwrap_or(Value::Null))
            }),
        );
        json!({"endpoints": endpoints, "fabric": fabric})
    };
    let endpoints = async {
        let futs = eps.iter().map(|e| {
            let control = e["control"].as_str().unwrap_or_default().to_string();
            let c = &c;
            async move { lab_get(c, format!("{control}/_lab/status")).await }
        });
        futures::future::join_all(futs).await
    };
    let internet = async {
        match report["internet"]["control"].as_str() {
            Some(u) => lab_get(&c, format!("{u}/_lab/health")).await,
            None => json!({"error": "no control URL"}),
        }
    };
    let (fgt, faz, ems, ep_status, internet) = tokio::join!(fgt, faz, ems, endpoints, internet);
    let mut endpoints = Vec::new();
    for (e, st) in eps.iter().zip(ep_status) {
        let mut o = e.clone();
        o["status"] = st;
        endpoints.push(o);
    }
    let mut st = json!({
        "lab": lab,
        "report": {
            "fortigate": pick(&report["fortigate"], &["name", "serial", "version", "api"]),
            "fortianalyzer": pick(&report["fortianalyzer"], &["name", "serial", "version", "api"]),
            "ems": pick(&report["ems"], &["name", "serial", "version", "api"]),
            "sites": report["internet"]["sites"].as_array().map(|a| a.len()).unwrap_or(0),
        },
        "addr": {
            "fortigate_lan": def.fortigate.lan_ip.to_string(), "fortigate_mgmt": def.fortigate.mgmt_ip.to_string(),
            "fortianalyzer": def.fortianalyzer.ip.to_string(), "ems": def.ems.ip.to_string(),
        },
        "fortigate": fgt, "fortianalyzer": faz, "ems": ems,
        "endpoints": endpoints, "internet": internet,
    });
    let d = derive(&st);
    if let (Value::Object(m), Value::Object(extra)) = (&mut st, d) {
        m.extend(extra);
    }
    st
}

fn pick(v: &Value, keys: &[&str]) -> Value {
    let mut m = Map::new();
    for k in keys {
        if let Some(x) = v.get(*k) {
            m.insert(k.to_string(), x.clone());
        }
    }
    Value::Object(m)
}

fn ok(v: &Value) -> bool {
    !v.is_null() && v.get("error").is_none()
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true" | "enable" | "yes"),
        _ => false,
    }
}

/// Device up/down, link states and endpoint colours from one snapshot.
///
/// Links: `data` (endpoint → FortiGate → lab Internet), `log` (FortiGate → FortiAnalyzer,
/// FortiClient → FortiAnalyzer), `fabric` (FortiGate → EMS), `telemetry` (FortiClient ↔ EMS);
/// state `up`, `down`, `unauthorized` (log channel / fabric connector not authorized) or
/// `blocked` (the data path of a quarantined endpoint). Endpoints: `quarantined` (EMS or
/// FortiClient says so), `compromised` (an unacknowledged compromised host on FortiAnalyzer or
/// on the FortiGate's list), else `clean`; `down` when its process does not answer.
pub fn derive(st: &Value) -> Value {
    let fgt_up = ok(&st["fortigate"]["status"]);
    let faz_up = ok(&st["fortianalyzer"]["devices"]);
    let ems_up = ok(&st["ems"]["endpoints"]);
    let inet_up = ok(&st["internet"]);
    let fgt_serial = st["report"]["fortigate"]["serial"].as_str().unwrap_or("");

    // FortiGate → FortiAnalyzer.
    let fazmon = &st["fortigate"]["faz"];
    let faz_dev = st["fortianalyzer"]["devices"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["sn"].as_str() == Some(fgt_serial)));
    let fgt_faz = if !fgt_up || !faz_up {
        "down"
    } else if fazmon["registration"].as_str() == Some("unauthorized")
        || faz_dev.is_some_and(|d| !truthy(d.get("authorized")))
    {
        "unauthorized"
    } else if truthy(fazmon.get("connected")) {
        "up"
    } else {
        "down"
    };
    // FortiGate → EMS.
    let emsst = st["fortigate"]["ems"]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(Value::Null);
    let fabric_dev = st["ems"]["fabric"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["sn"].as_str() == Some(fgt_serial)));
    let fgt_ems = if !fgt_up || !ems_up {
        "down"
    } else if fabric_dev.is_some_and(|d| !truthy(d.get("authorized")))
        || matches!(
            emsst["status"].as_str(),
            Some("pending" | "unauthorized" | "not-authorized")
        )
    {
        "unauthorized"
    } else if truthy(emsst.get("connected")) {
        "up"
    } else {
        "down"
    };

    let mut links = vec![
        json!({"id": "fgt-internet", "kind": "data", "from": "fortigate", "to": "internet",
               "state": if fgt_up && inet_up { "up" } else { "down" }}),
        json!({"id": "fgt-faz", "kind": "log", "from": "fortigate", "to": "fortianalyzer", "state": fgt_faz}),
        json!({"id": "fgt-ems", "kind": "fabric", "from": "fortigate", "to": "ems", "state": fgt_ems}),
    ];

    let ems_eps = st["ems"]["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let faz_hosts = st["fortianalyzer"]["compromised"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fgt_hosts = st["fortigate"]["compromised"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut hosts = Vec::new();
    for e in st["endpoints"].as_array().cloned().unwrap_or_default() {
        let name = e["name"].as_str().unwrap_or("").to_string();
        let ip = e["ip"].as_str().unwrap_or("").to_string();
        let s = &e["status"];
        let ep_up = ok(s);
        let rec = ems_eps
            .iter()
            .find(|r| r["ip_addr"].as_str() == Some(ip.as_str()));
        let ems_q = rec.is_some_and(|r| truthy(r.get("is_quarantined")));
        let fct_q = ep_up && truthy(s.get("quarantined"));
        let faz_c = faz_hosts
            .iter()
            .any(|h| h["epip"].as_str() == Some(ip.as_str()) && !truthy(h.get("ack")));
        let fgt_c = fgt_hosts
            .iter()
            .any(|h| h["srcip"].as_str() == Some(ip.as_str()));
        let state = if !ep_up {
            "down"
        } else if ems_q || fct_q {
            "quarantined"
        } else if faz_c || fgt_c {
            "compromised"
        } else {
            "clean"
        };
        hosts.push(json!({
            "name": name, "ip": ip, "state": state,
            "ems_quarantined": ems_q, "fct_quarantined": fct_q,
            "faz_compromised": faz_c, "fgt_compromised": fgt_c,
            "access_code": rec.and_then(|r| r.get("quarantine_access_code")).cloned().unwrap_or(Value::Null),
        }));
        let data = if !ep_up || !fgt_up {
            "down"
        } else if fct_q {
            "blocked"
        } else {
            "up"
        };
        let up = &s["log_upload"];
        let log = if !ep_up || !faz_up {
            "down"
        } else if up["registration"].as_str() == Some("unauthorized") {
            "unauthorized"
        } else if truthy(up.get("connected")) {
            "up"
        } else {
            "down"
        };
        let tele = if !ep_up || !ems_up {
            "down"
        } else if truthy(s.get("registered")) && rec.is_some_and(|r| truthy(r.get("is_ems_online")))
        {
            "up"
        } else {
            "down"
        };
        links.push(json!({"id": format!("{name}-fortigate"), "kind": "data", "from": name, "to": "fortigate", "state": data}));
        links.push(json!({"id": format!("{name}-faz"), "kind": "log", "from": name, "to": "fortianalyzer", "state": log}));
        links.push(json!({"id": format!("{name}-ems"), "kind": "telemetry", "from": name, "to": "ems", "state": tele}));
    }
    json!({
        "devices": {"fortigate": fgt_up, "fortianalyzer": faz_up, "ems": ems_up, "internet": inet_up},
        "links": links,
        "hosts": hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "report": {"fortigate": {"serial": "FGVM01"}},
            "fortigate": {
                "status": {"hostname": "FGT-LAB"},
                "faz": {"connected": true, "registration": "registered"},
                "ems": [{"connected": true, "status": "connected"}],
                "compromised": [],
            },
            "fortianalyzer": {"devices": [{"sn": "FGVM01", "authorized": 1}], "compromised": []},
            "ems": {"endpoints": [{"ip_addr": "10.115.2.52", "is_quarantined": 0, "is_ems_online": 1}],
                    "fabric": [{"sn": "FGVM01", "authorized": true}]},
            "internet": {"ok": true},
            "endpoints": [{"name": "PC-52", "ip": "10.115.2.52", "status": {
                "registered": true, "quarantined": false,
                "log_upload": {"connected": true, "registration": "registered"}}}],
        })
    }

    fn link(d: &Value, id: &str) -> String {
        d["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("no link {id}"))["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_healthy_clean_lab() {
        let d = derive(&base());
        for id in [
            "fgt-internet",
            "fgt-faz",
            "fgt-ems",
            "PC-52-fortigate",
            "PC-52-faz",
            "PC-52-ems",
        ] {
            assert_eq!(link(&d, id), "up", "{id}");
        }
        assert_eq!(d["hosts"][0]["state"], "clean");
        assert_eq!(d["devices"]["fortianalyzer"], true);
    }

    #[test]
    fn compromised_then_quarantined_then_acknowledged() {
        let mut s = base();
        s["fortianalyzer"]["compromised"] = json!([{"epip": "10.115.2.52", "ack": 0}]);
        assert_eq!(derive(&s)["hosts"][0]["state"], "compromised");
        s["ems"]["endpoints"][0]["is_quarantined"] = json!(1);
        s["ems"]["endpoints"][0]["quarantine_access_code"] = json!("ABCD1234");
        s["endpoints"][0]["status"]["quarantined"] = json!(true);
        let d = derive(&s);
        assert_eq!(d["hosts"][0]["state"], "quarantined");
        assert_eq!(d["hosts"][0]["access_code"], "ABCD1234");
        assert_eq!(link(&d, "PC-52-fortigate"), "blocked");
        // Released on EMS and acknowledged on FortiAnalyzer: clean again.
        s["ems"]["endpoints"][0]["is_quarantined"] = json!(0);
        s["endpoints"][0]["status"]["quarantined"] = json!(false);
        s["fortianalyzer"]["compromised"] = json!([{"epip": "10.115.2.52", "ack": 1}]);
        assert_eq!(derive(&s)["hosts"][0]["state"], "clean");
    }

    #[test]
    fn down_and_unauthorized_links() {
        let mut s = base();
        s["fortianalyzer"]["devices"] = json!({"error": "connection refused"});
        let d = derive(&s);
        assert_eq!(link(&d, "fgt-faz"), "down");
        assert_eq!(link(&d, "PC-52-faz"), "down");
        assert_eq!(d["devices"]["fortianalyzer"], false);

        let mut s = base();
        s["fortigate"]["faz"]["registration"] = json!("unauthorized");
        s["ems"]["fabric"][0]["authorized"] = json!(false);
        let d = derive(&s);
        assert_eq!(link(&d, "fgt-faz"), "unauthorized");
        assert_eq!(link(&d, "fgt-ems"), "unauthorized");

        let mut s = base();
        s["endpoints"][0]["status"] = json!({"error": "refused"});
        let d = derive(&s);
        assert_eq!(d["hosts"][0]["state"], "down");
        assert_eq!(link(&d, "PC-52-ems"), "down");
    }
}
