//! Scenarios against a running lab this process did not start (`fortilab run --attach
//! READY_FILE_OR_URL`): a loopback `fortilab up`, a Compose lab, any lab that publishes the
//! ready report of ARCHITECTURE.md section 7.
//!
//! The ready report names every surface a scenario uses (vendor APIs with their credentials,
//! the endpoints' `control` URLs, the lab Internet's control), the lab CA (`ca_cert`, a path,
//! or `ca_pem`, the certificate itself), the lab token (`lab_token`, else the environment
//! variable `FORTILAB_LAB_TOKEN`) and the lab clock (`clock`). Steps act and check through the
//! same clients as on a lab the runner starts; device control steps (`stop`, `kill`, `start`,
//! `restart`) have no lab surface on the devices (the processes belong to whoever started the
//! lab), so they fail with "not supported on an attached lab".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use fortilab_core::secrets::LabToken;
use fortilab_core::LabClock;

use crate::lab::Role;
use crate::runner::{DeviceOp, LabControl};

/// The environment variable that gives the lab token when the report has none (a report
/// fetched from a URL, a report written without secrets).
pub const TOKEN_ENV: &str = "FORTILAB_LAB_TOKEN";

/// A running lab known by its ready report.
#[derive(Clone)]
pub struct Attached {
    /// The ready report as read.
    pub report: Value,
    /// Where it came from (a path or URL), for messages.
    pub source: String,
    clock: LabClock,
    tls: Arc<rustls::ClientConfig>,
    token: Option<LabToken>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The lab clock of a ready report: `{"clock": {"epoch_ms", "origin_ms", "speed", "tz_minutes"}}`.
/// Without one, lab time is real time (a lab whose devices were started without clock flags).
pub fn report_clock(report: &Value) -> LabClock {
    let c = &report["clock"];
    match (c["epoch_ms"].as_i64(), c["origin_ms"].as_i64()) {
        (Some(epoch), Some(origin)) => LabClock::new(
            epoch,
            origin,
            c["speed"].as_f64().filter(|s| *s > 0.0).unwrap_or(1.0),
            c["tz_minutes"].as_i64().unwrap_or(0) as i32,
        ),
        _ => LabClock::real(),
    }
}

/// The `clock` object of a ready report (see [`report_clock`]).
pub fn clock_json(clock: &LabClock) -> Value {
    json!({"epoch_ms": clock.epoch_ms(), "origin_ms": clock.origin_ms(),
           "speed": clock.speed(), "tz_minutes": clock.tz_minutes()})
}

impl Attached {
    /// Reads the ready report from a file or an `http(s)://` URL and prepares the lab's TLS
    /// trust and token.
    pub async fn open(src: &str) -> anyhow::Result<Attached> {
        let env_token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| LabToken::new(t.trim()));
        let (report, base) = if src.starts_with("http://") || src.starts_with("https://") {
            (fetch_report(src, env_token.as_ref()).await?, None)
        } else {
            let p = PathBuf::from(src);
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("--attach {src}: cannot read the ready file"))?;
            let v: Value = serde_json::from_str(&text).map_err(|err| {
                anyhow!(
                    "--attach {src}:{}:{}: not a ready report: {err}",
                    err.line(),
                    err.column()
                )
            })?;
            (v, p.parent().map(Path::to_path_buf))
        };
        Self::from_report(report, src, base.as_deref(), env_token)
    }

    /// An attached lab from a ready report already read. Relative `ca_cert` paths are taken
    /// from `base` (the ready file's directory).
    pub fn from_report(
        report: Value,
        source: &str,
        base: Option<&Path>,
        env_token: Option<LabToken>,
    ) -> anyhow::Result<Attached> {
        if !report.is_object() {
            bail!("--attach {source}: the ready report is not a JSON object");
        }
        for key in ["fortigate", "fortianalyzer", "ems"] {
            if report[key]["api"].as_str().is_none() {
                bail!("--attach {source}: the ready report has no {key}.api");
            }
        }
        let ca_pem = match report["ca_pem"].as_str() {
            Some(p) => p.to_string(),
            None => {
                let path = report["ca_cert"].as_str().ok_or_else(|| {
                    anyhow!(
                        "--attach {source}: the ready report names no lab CA (ca_cert or ca_pem)"
                    )
                })?;
                let mut p = PathBuf::from(path);
                if p.is_relative() {
                    if let Some(b) = base {
                        p = b.join(p);
                    }
                }
                std::fs::read_to_string(&p).with_context(|| {
                    format!("--attach {source}: the lab CA certificate {}", p.display())
                })?
            }
        };
        let tls = fortilab_core::tls::client_config_from_pem(&ca_pem, None)
            .map_err(|e| anyhow!("--attach {source}: the lab CA certificate: {e}"))?;
        let token = report["lab_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(LabToken::new)
            .or(env_token);
        if token.is_none() {
            tracing::warn!(
                "--attach {source}: no lab token (neither lab_token in the report nor {TOKEN_ENV}); \
                 every /_lab/ route will answer 401"
            );
        }
        Ok(Attached {
            clock: report_clock(&report),
            report,
            source: source.to_string(),
            tls,
            token,
        })
    }

    /// The dashboard of a `fortilab up` lab (its lab surface saves and restores snapshots).
    fn dashboard(&self) -> anyhow::Result<String> {
        self.report["dashboard"]
            .as_str()
            .map(|d| d.trim_end_matches('/').to_string())
            .ok_or_else(|| {
                anyhow!(
                    "snapshots are not supported on an attached lab without a fortilab dashboard \
                     ({}): the ready report names no dashboard",
                    self.source
                )
            })
    }

    /// Saves or restores a snapshot through the lab's dashboard (the lab clock is not
    /// followed; see [`LabControl::snapshot`] for that).
    pub async fn snapshot_via_dashboard(
        &self,
        op: crate::snapshot::SnapshotOp,
        name: &str,
    ) -> anyhow::Result<crate::snapshot::SnapshotInfo> {
        let d = self.dashboard()?;
        Ok(post_snapshot(&d, self.token.as_ref(), op, name).await?.0)
    }

    /// The lab's snapshots (`GET <dashboard>/_lab/snapshots`).
    pub async fn snapshot_list(&self) -> anyhow::Result<Vec<crate::snapshot::SnapshotInfo>> {
        let url = format!("{}/_lab/snapshots", self.dashboard()?);
        let mut req = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?
            .get(&url);
        if let Some(t) = &self.token {
            req = req.header(fortilab_core::secrets::LAB_TOKEN_HEADER, t.as_str());
        }
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {v}");
        }
        Ok(serde_json::from_value(v["snapshots"].clone())?)
    }

    /// An HTTP client trusting the lab CA and sending the lab token.
    pub fn http_client(&self, cookies: bool) -> anyhow::Result<reqwest::Client> {
        crate::clients::http_client_tls(&self.tls, cookies, self.token.as_ref())
    }

    /// A client for the event streams.
    pub fn stream_client(&self) -> anyhow::Result<reqwest::Client> {
        crate::clients::stream_client_tls(&self.tls, self.token.as_ref())
    }

    /// Base URLs of every device's lab surface (for `/_lab/events`), with a label: the
    /// FortiGate, FortiAnalyzer and EMS APIs, the lab Internet's control, and each endpoint
    /// process (the part of `control` before `/endpoints/`).
    pub fn event_sources(&self) -> Vec<(String, String)> {
        event_sources(&self.report)
    }

    /// Waits (up to `timeout`) until every device's `/_lab/health` answers, so an attach right
    /// after `docker compose up` does not fail on a first refused connection. Returns the
    /// devices that still do not answer (a scenario may run while one is cut off on purpose);
    /// a `401` is an error at once: the lab token is wrong.
    pub async fn wait_healthy(&self, timeout: std::time::Duration) -> anyhow::Result<Vec<String>> {
        let client = self.http_client(false)?;
        let deadline = std::time::Instant::now() + timeout;
        let mut down = Vec::new();
        for (label, base) in self.event_sources() {
            let url = format!("{base}/_lab/health");
            loop {
                let last = match client.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => break,
                    Ok(resp) if resp.status() == reqwest::StatusCode::UNAUTHORIZED => {
                        bail!("{label}: GET {url}: 401: the lab token is wrong or missing")
                    }
                    Ok(resp) => format!("HTTP {}", resp.status()),
                    Err(e) => format!("{e:#}"),
                };
                if std::time::Instant::now() >= deadline {
                    down.push(format!("{label}: GET {url}: {last}"));
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        Ok(down)
    }
}

/// See [`Attached::event_sources`].
pub fn event_sources(report: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let base = |v: &Value| v.as_str().map(|s| s.trim_end_matches('/').to_string());
    for key in ["fortigate", "fortianalyzer", "ems"] {
        if let Some(u) = base(&report[key]["api"]) {
            out.push((key.to_string(), u));
        }
    }
    if let Some(u) = base(&report["internet"]["control"]) {
        out.push(("internet".to_string(), u));
    }
    let mut roots: Vec<String> = Vec::new();
    for ep in report["endpoints"].as_array().into_iter().flatten() {
        if let Some(c) = ep["control"].as_str() {
            let root = match c.find("/endpoints/") {
                Some(i) => c[..i].to_string(),
                None => c.trim_end_matches('/').to_string(),
            };
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
    }
    for (i, root) in roots.into_iter().enumerate() {
        out.push((format!("endpoints-{}", i + 1), root));
    }
    out
}

async fn fetch_report(url: &str, token: Option<&LabToken>) -> anyhow::Result<Value> {
    // An https URL is verified against the lab CA given in FORTILAB_CA_CERT (the report
    // itself cannot vouch for the server that serves it).
    let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(15));
    if url.starts_with("https://") {
        let path = std::env::var("FORTILAB_CA_CERT").map_err(|_| {
            anyhow!("--attach {url}: an https URL needs the lab CA certificate in FORTILAB_CA_CERT")
        })?;
        let pem =
            std::fs::read_to_string(&path).with_context(|| format!("FORTILAB_CA_CERT={path}"))?;
        let tls = fortilab_core::tls::client_config_from_pem(&pem, None)?;
        b = b.use_preconfigured_tls((*tls).clone());
    }
    let client = b.build()?;
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.header(fortilab_core::secrets::LAB_TOKEN_HEADER, t.as_str());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("--attach {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "--attach {url}: HTTP {status}{}",
            if status == reqwest::StatusCode::UNAUTHORIZED {
                format!(" (set {TOKEN_ENV} to the lab token)")
            } else {
                String::new()
            }
        );
    }
    let mut v: Value = resp
        .json()
        .await
        .with_context(|| format!("--attach {url}: not a JSON ready report"))?;
    if v["lab_token"].as_str().is_none() {
        if let Some(t) = token {
            v["lab_token"] = json!(t.as_str());
        }
    }
    Ok(v)
}

impl LabControl for Attached {
    fn clock(&self) -> LabClock {
        self.clock
    }

    fn endpoint_ip(&self, name: &str) -> Option<String> {
        self.report["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["ip"].as_str())
            .map(str::to_string)
    }

    async fn device(&mut self, op: DeviceOp, role: Role) -> anyhow::Result<()> {
        // No device has a lab-surface route that stops or starts its own process: the
        // processes (or containers) belong to whoever started the lab.
        bail!(
            "`{}` of {role:?} is not supported on an attached lab ({}): its processes belong to \
             whoever started it (for a Compose lab: `docker compose {} <service>`)",
            op.as_str(),
            self.source,
            match op {
                DeviceOp::Kill => "kill",
                DeviceOp::Stop => "stop",
                DeviceOp::Start => "start",
                DeviceOp::Restart => "restart",
            }
        )
    }

    async fn link(&mut self, spec: &crate::links::LinkSpec) -> anyhow::Result<Value> {
        // A `fortilab up` lab publishes its dashboard, whose lab surface sets link faults
        // (`POST /_lab/link`, lab token). Other labs have no such surface here.
        let Some(dashboard) = self.report["dashboard"].as_str() else {
            bail!(
                "link faults are not supported on an attached lab without a fortilab dashboard \
                 ({}): for a Compose lab use `docker network disconnect`/`connect`, or `tc \
                 netem` on the containers' interfaces",
                self.source
            );
        };
        let url = format!("{}/_lab/link", dashboard.trim_end_matches('/'));
        let mut req = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?
            .post(&url)
            .json(spec);
        if let Some(t) = &self.token {
            req = req.header(fortilab_core::secrets::LAB_TOKEN_HEADER, t.as_str());
        }
        let resp = req.send().await.with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url}: HTTP {status}: {v}");
        }
        Ok(v["link"].clone())
    }

    async fn snapshot(
        &mut self,
        op: crate::snapshot::SnapshotOp,
        name: &str,
    ) -> anyhow::Result<crate::snapshot::SnapshotInfo> {
        // A `fortilab up` lab's dashboard saves and restores snapshots of the lab it runs
        // (`POST /_lab/snapshot`, lab token); the answer carries the lab clock after the
        // operation (a restore moves it).
        let dashboard = self.dashboard()?;
        let (info, clock) = post_snapshot(&dashboard, self.token.as_ref(), op, name).await?;
        if let Some(c) = clock {
            self.clock = c;
            self.report["clock"] = clock_json(&c);
        }
        Ok(info)
    }
}

/// `POST <dashboard>/_lab/snapshot {"op", "name"}` with the lab token: the snapshot's
/// description and the lab clock after the operation. `fortilab snapshot` and attached
/// scenarios use it. The dashboard is plain HTTP on loopback.
pub async fn post_snapshot(
    dashboard: &str,
    token: Option<&LabToken>,
    op: crate::snapshot::SnapshotOp,
    name: &str,
) -> anyhow::Result<(crate::snapshot::SnapshotInfo, Option<LabClock>)> {
    let url = format!("{}/_lab/snapshot", dashboard.trim_end_matches('/'));
    let mut req = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?
        .post(&url)
        .json(&json!({"op": op.as_str(), "name": name}));
    if let Some(t) = token {
        req = req.header(fortilab_core::secrets::LAB_TOKEN_HEADER, t.as_str());
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "POST {url}: HTTP {status}: {}",
            v["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        );
    }
    let info: crate::snapshot::SnapshotInfo = serde_json::from_value(v["snapshot"].clone())
        .with_context(|| format!("POST {url}: unexpected answer {v}"))?;
    let clock = v
        .get("clock")
        .filter(|c| c.is_object())
        .map(|c| report_clock(&json!({"clock": c})));
    Ok((info, clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ca: &fortilab_core::LabCa) -> Value {
        json!({
            "ca_pem": ca.cert_pem(),
            "lab_token": "tok",
            "clock": {"epoch_ms": 1_000, "origin_ms": 2_000, "speed": 100.0, "tz_minutes": -480},
            "fortigate": {"api": "https://10.115.1.1:443"},
            "fortianalyzer": {"api": "https://10.115.1.20:443/"},
            "ems": {"api": "https://10.115.1.30:443"},
            "internet": {"control": "https://10.115.0.2:8443"},
            "endpoints": [
                {"name": "PC-52", "ip": "10.115.2.52", "control": "https://10.115.2.52:443/endpoints/PC-52"},
                {"name": "PC-53", "ip": "10.115.2.53", "control": "https://10.115.2.52:443/endpoints/PC-53"}
            ]
        })
    }

    #[test]
    fn a_report_gives_clock_sources_and_endpoints() {
        let ca = fortilab_core::LabCa::generate("t").unwrap();
        let a = Attached::from_report(report(&ca), "r.json", None, None).unwrap();
        assert_eq!(a.clock().speed(), 100.0);
        assert_eq!(a.clock().epoch_ms(), 1_000);
        assert_eq!(a.clock().tz_minutes(), -480);
        assert_eq!(a.endpoint_ip("PC-53").as_deref(), Some("10.115.2.53"));
        assert_eq!(a.endpoint_ip("PC-99"), None);
        let labels: Vec<String> = a.event_sources().into_iter().map(|s| s.0).collect();
        assert_eq!(
            labels,
            [
                "fortigate",
                "fortianalyzer",
                "ems",
                "internet",
                "endpoints-1"
            ]
        );
        assert_eq!(a.event_sources()[1].1, "https://10.115.1.20:443");
    }

    #[test]
    fn a_report_without_apis_or_ca_is_refused_with_the_reason() {
        let ca = fortilab_core::LabCa::generate("t").unwrap();
        let mut r = report(&ca);
        r["ems"] = json!({});
        let e = Attached::from_report(r, "r.json", None, None).unwrap_err();
        assert!(e.to_string().contains("no ems.api"), "{e}");
        let mut r = report(&ca);
        r.as_object_mut().unwrap().remove("ca_pem");
        let e = Attached::from_report(r, "r.json", None, None).unwrap_err();
        assert!(e.to_string().contains("names no lab CA"), "{e}");
    }

    #[tokio::test]
    async fn device_control_is_refused_clearly() {
        let ca = fortilab_core::LabCa::generate("t").unwrap();
        let mut a = Attached::from_report(report(&ca), "r.json", None, None).unwrap();
        let e = a.device(DeviceOp::Kill, Role::Faz).await.unwrap_err();
        assert!(
            e.to_string().contains("not supported on an attached lab"),
            "{e}"
        );
    }

    #[test]
    fn no_clock_means_real_time() {
        let c = report_clock(&json!({}));
        assert_eq!(c.speed(), 1.0);
    }
}
