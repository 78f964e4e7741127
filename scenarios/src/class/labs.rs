//! The labs of a class: started ones (a `fortilab up` or `fortilab exercise` child process
//! each, supervised with [`DeviceProc`]) and attached ones (a ready report, see
//! [`crate::attach`]); their progress, last activity, reset and restore.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use fortilab_core::secrets::LabToken;
use fortilab_core::LabClock;

use crate::attach::{report_clock, Attached};
use crate::procs::{DeviceProc, ProcState};
use crate::timeline::{self, Timeline};

/// How long a started lab may take to write its ready report (30 labs start at once on a
/// small machine).
pub const LAB_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a lab may take to stop after SIGTERM before it is killed.
pub const LAB_STOP_GRACE: Duration = Duration::from_secs(20);

/// How a class starts its labs.
#[derive(Debug, Clone)]
pub struct StartSpec {
    /// The class data directory; lab `i` lives in `labs/lab-i/` (ready report
    /// `labs/lab-i.ready.json`, log `labs/lab-i.log`).
    pub dir: PathBuf,
    /// `--lab FILE`: the lab definition every started lab runs (default: the seed lab).
    pub lab: Option<PathBuf>,
    /// `--exercise FILE`.
    pub exercise: Option<PathBuf>,
    /// Whether this `fortilab` has the `exercise` command (else labs run `fortilab up` and the
    /// pages say so).
    pub exercise_command: bool,
}

impl StartSpec {
    /// The command line of lab `index`'s child (`--ready-file` is added by [`DeviceProc`]).
    pub fn args(&self, index: usize) -> Vec<String> {
        let data = self.data_dir(index).display().to_string();
        match (&self.exercise, self.exercise_command) {
            (Some(f), true) => vec![
                "exercise".into(),
                f.display().to_string(),
                "--data-dir".into(),
                data,
            ],
            _ => {
                let mut a = vec!["up".to_string()];
                if let Some(l) = &self.lab {
                    a.push(l.display().to_string());
                }
                a.extend(["--data-dir".into(), data]);
                a
            }
        }
    }

    pub fn labs_dir(&self) -> PathBuf {
        self.dir.join("labs")
    }

    pub fn data_dir(&self, index: usize) -> PathBuf {
        self.labs_dir().join(format!("lab-{index}"))
    }

    /// What the pages say about how the labs run.
    pub fn mode_note(&self) -> Option<String> {
        match (&self.exercise, self.exercise_command) {
            (Some(f), false) => Some(format!(
                "This fortilab has no `fortilab exercise` command yet: every lab runs `fortilab up` \
                 (the seed lab, or --lab) and the exercise {} is shown as text; progress appears once the \
                 labs serve /_lab/exercise.",
                f.display()
            )),
            _ => None,
        }
    }
}

/// Whether a `fortilab` executable has the `exercise` command (`fortilab exercise --help`).
pub fn has_exercise_command(exe: &Path) -> bool {
    std::process::Command::new(exe)
        .args(["exercise", "--help"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Where a lab comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Started by the class.
    Started,
    /// `--attach READY_FILE_OR_URL`.
    Attached(String),
}

/// The latest trainee action seen in a lab's device events.
#[derive(Debug, Clone)]
struct Activity {
    ts: i64,
    kind: String,
    device: String,
    summary: String,
}

/// What the pages show of a lab (one generation: a reset starts a new one).
#[derive(Default)]
struct View {
    status: String,
    error: Option<String>,
    report: Value,
    client: Option<reqwest::Client>,
    clock: Option<LabClock>,
    progress: Value,
    progress_error: Option<String>,
    activity: Option<Activity>,
    restore: Option<String>,
    ready_in_ms: Option<u128>,
    resets: u64,
    followers: Option<CancellationToken>,
}

/// One lab of the class.
pub struct ClassLab {
    pub index: usize,
    pub trainee: String,
    /// The token of this lab's trainee page.
    pub token: LabToken,
    pub source: Source,
    proc: tokio::sync::Mutex<Option<DeviceProc>>,
    view: Arc<Mutex<View>>,
    /// The trainee page's URL (set once its listener is bound).
    pub page: Mutex<String>,
    shutdown: CancellationToken,
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("not available: this lab has no snapshots")]
    NotAvailable,
    /// The lab has snapshots, but none of this name (the lab's own message).
    #[error("{0}")]
    NoSuchSnapshot(String),
    #[error("{0}")]
    Failed(String),
}

impl ClassLab {
    pub fn new(
        index: usize,
        trainee: String,
        source: Source,
        spec: &StartSpec,
        shutdown: CancellationToken,
    ) -> Arc<ClassLab> {
        let proc = match source {
            Source::Started => {
                let mut p = DeviceProc::new(
                    "fortilab",
                    &format!("lab-{index}"),
                    &spec.labs_dir(),
                    spec.args(index),
                );
                // Each lab makes its own lab token (the class's environment may carry one).
                p.env_remove = vec![fortilab_core::secrets::LAB_TOKEN_ENV.to_string()];
                Some(p)
            }
            Source::Attached(_) => None,
        };
        Arc::new(ClassLab {
            index,
            trainee,
            token: LabToken::generate(),
            source,
            proc: tokio::sync::Mutex::new(proc),
            view: Arc::new(Mutex::new(View {
                status: "starting".into(),
                ..Default::default()
            })),
            page: Mutex::new(String::new()),
            shutdown,
        })
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> String {
        self.view().status.clone()
    }

    /// Starts the lab (a fresh data directory for a started lab) and waits for its ready
    /// report; on success follows its device events.
    pub async fn start(&self, spec: &StartSpec) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let result = self.start_inner(spec).await;
        let mut v = self.view();
        match &result {
            Ok((report, attached)) => {
                v.status = "ready".into();
                v.error = None;
                v.report = report.clone();
                v.clock = Some(report_clock(report));
                v.client = attached.http_client(false).ok();
                v.ready_in_ms = Some(t0.elapsed().as_millis());
                v.activity = None;
                v.progress = Value::Null;
                let stop = self.shutdown.child_token();
                v.followers = Some(stop.clone());
                drop(v);
                self.follow(attached, stop);
            }
            Err(e) => {
                v.status = "failed".into();
                v.error = Some(format!("{e:#}"));
            }
        }
        result.map(|_| ())
    }

    async fn start_inner(&self, spec: &StartSpec) -> anyhow::Result<(Value, Attached)> {
        match &self.source {
            Source::Attached(src) => {
                let a = Attached::open(src).await?;
                Ok((a.report.clone(), a))
            }
            Source::Started => {
                let mut guard = self.proc.lock().await;
                let p = guard.as_mut().ok_or_else(|| anyhow!("no process"))?;
                let data = spec.data_dir(self.index);
                if data.exists() {
                    std::fs::remove_dir_all(&data)?;
                }
                fortilab_core::secrets::create_private_dir(&spec.labs_dir())?;
                p.spawn(&[])?;
                let report = tokio::select! {
                    r = p.wait_ready(LAB_READY_TIMEOUT) => r?.clone(),
                    _ = self.shutdown.cancelled() => bail!("the class is stopping"),
                };
                let base = p.ready_file.parent().map(Path::to_path_buf);
                let a = Attached::from_report(
                    report.clone(),
                    &p.ready_file.display().to_string(),
                    base.as_deref(),
                    None,
                )?;
                Ok((report, a))
            }
        }
    }

    /// Follows the FortiGate's, FortiAnalyzer's and EMS's event streams for trainee activity.
    fn follow(&self, lab: &Attached, stop: CancellationToken) {
        let Ok(client) = lab.stream_client() else {
            return;
        };
        let tl = Timeline::new(report_clock(&lab.report)).with_limit(32);
        let mut rx = tl.subscribe();
        for (label, base) in lab.event_sources() {
            if matches!(label.as_str(), "fortigate" | "fortianalyzer" | "ems") {
                tokio::spawn(timeline::follow(
                    label,
                    base,
                    client.clone(),
                    tl.clone(),
                    stop.clone(),
                ));
            }
        }
        let view = self.view.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = rx.recv() => r,
                };
                match ev {
                    Ok(ev) if super::is_activity(&ev) => {
                        let ts = ev["ts"].as_i64().unwrap_or(0);
                        let act = Activity {
                            ts,
                            kind: ev["kind"].as_str().unwrap_or("").to_string(),
                            device: ev["device"].as_str().unwrap_or("").to_string(),
                            summary: timeline::summarize(&ev),
                        };
                        let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
                        if v.activity.as_ref().is_none_or(|a| a.ts <= ts) {
                            v.activity = Some(act);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }

    /// Reads the lab's exercise progress (`GET <dashboard>/_lab/exercise`): a 404 means no
    /// exercise.
    pub async fn poll_progress(&self) {
        let (client, dash) = {
            let v = self.view();
            if v.status != "ready" {
                return;
            }
            match (v.client.clone(), v.report["dashboard"].as_str()) {
                (Some(c), Some(d)) => (c, d.trim_end_matches('/').to_string()),
                _ => return,
            }
        };
        let r = client
            .get(format!("{dash}/_lab/exercise"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let (progress, error) = match r {
            Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => (Value::Null, None),
            Ok(resp) if resp.status().is_success() => match resp.json::<Value>().await {
                Ok(v) => (v, None),
                Err(e) => (Value::Null, Some(format!("GET /_lab/exercise: {e}"))),
            },
            Ok(resp) => (
                Value::Null,
                Some(format!("GET /_lab/exercise: HTTP {}", resp.status())),
            ),
            Err(e) => (Value::Null, Some(format!("GET /_lab/exercise: {e}"))),
        };
        let mut v = self.view();
        if error.is_none() || v.progress.is_null() {
            v.progress = progress;
        }
        v.progress_error = error;
    }

    /// Notices a started lab that died on its own.
    pub async fn watch_exit(&self) {
        let Ok(mut guard) = self.proc.try_lock() else {
            return;
        };
        let Some(p) = guard.as_mut() else { return };
        if self.status() != "ready" {
            return;
        }
        if let ProcState::Exited(code) = p.state() {
            let tail = crate::procs::tail(&p.stderr_file, 5);
            let mut v = self.view();
            v.status = "exited".into();
            v.error = Some(format!(
                "the lab exited ({}); its log ends:\n{tail}",
                code.map_or("signal".to_string(), |c| format!("code {c}"))
            ));
            if let Some(f) = v.followers.take() {
                f.cancel();
            }
        }
    }

    /// Reset: stops the lab and starts it again with a fresh data directory (new ports, CA
    /// and credentials; the trainee page and its token stay).
    pub async fn reset(&self, spec: &StartSpec) -> anyhow::Result<()> {
        if matches!(self.source, Source::Attached(_)) {
            bail!("an attached lab cannot be reset from the class (its processes are not the class's)");
        }
        {
            let mut v = self.view();
            if v.status == "starting" || v.status == "resetting" {
                bail!("lab {} is already starting", self.index);
            }
            v.status = "resetting".into();
            v.resets += 1;
            v.restore = None;
            if let Some(f) = v.followers.take() {
                f.cancel();
            }
        }
        {
            let mut guard = self.proc.lock().await;
            if let Some(p) = guard.as_mut() {
                p.stop(LAB_STOP_GRACE).await;
            }
        }
        self.start(spec).await
    }

    /// Restore: `POST <dashboard>/_lab/snapshot {"op": "restore", "name": ..}` (the lab's own
    /// snapshot surface, with its lab token).
    pub async fn restore(&self, name: &str) -> Result<Value, RestoreError> {
        let (client, dash) = {
            let v = self.view();
            match (v.client.clone(), v.report["dashboard"].as_str()) {
                (Some(c), Some(d)) if v.status == "ready" => {
                    (c, d.trim_end_matches('/').to_string())
                }
                (_, None) if v.status == "ready" => return Err(RestoreError::NotAvailable),
                _ => {
                    return Err(RestoreError::Failed(format!(
                        "lab {} is {}",
                        self.index, v.status
                    )))
                }
            }
        };
        let r = client
            .post(format!("{dash}/_lab/snapshot"))
            .json(&json!({"op": "restore", "name": name}))
            .send()
            .await
            .map_err(|e| RestoreError::Failed(format!("{e:#}")))?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let outcome = if status == reqwest::StatusCode::NOT_FOUND {
            // The lab's "no snapshot named …" comes as JSON; a lab without the route has none.
            match body["error"].as_str() {
                Some(e) => Err(RestoreError::NoSuchSnapshot(e.to_string())),
                None => Err(RestoreError::NotAvailable),
            }
        } else if status.is_success() {
            Ok(body)
        } else {
            Err(RestoreError::Failed(format!(
                "HTTP {status}: {}",
                body["error"].as_str().unwrap_or("")
            )))
        };
        self.view().restore = Some(match &outcome {
            Ok(_) => format!("restored {name:?}"),
            Err(e) => e.to_string(),
        });
        outcome
    }

    /// A request to the lab dashboard's exercise surface with the lab's token (the trainee
    /// page's hint and start-over buttons, its task texts): `GET /api/exercise` (the panel
    /// view), `POST /_lab/exercise/hint`, `POST /_lab/exercise/restart`. Answers the lab's
    /// status and JSON body; a start over waits for the snapshot restore (up to 60 s).
    pub async fn exercise_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(reqwest::StatusCode, Value), String> {
        let (client, dash) = {
            let v = self.view();
            match (v.client.clone(), v.report["dashboard"].as_str()) {
                (Some(c), Some(d)) if v.status == "ready" => {
                    (c, d.trim_end_matches('/').to_string())
                }
                (_, None) if v.status == "ready" => {
                    return Err("this lab has no dashboard".to_string())
                }
                _ => return Err(format!("lab {} is {}", self.index, v.status)),
            }
        };
        let mut req = client
            .request(method, format!("{dash}{path}"))
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// Stops a started lab (SIGTERM, then SIGKILL after the grace).
    pub async fn stop(&self) -> Option<String> {
        if let Some(f) = self.view().followers.take() {
            f.cancel();
        }
        let mut guard = self.proc.lock().await;
        let p = guard.as_mut()?;
        p.pid()?;
        let code = p.stop(LAB_STOP_GRACE).await;
        self.view().status = "stopped".into();
        (code != Some(0)).then(|| format!("lab-{} ({code:?})", self.index))
    }

    /// The process id of a started lab's `fortilab` (for supervision checks).
    pub async fn pid(&self) -> Option<u32> {
        self.proc.lock().await.as_ref().and_then(DeviceProc::pid)
    }

    fn activity_json(v: &View) -> Value {
        let Some(a) = &v.activity else {
            return Value::Null;
        };
        let clock = v.clock.unwrap_or_else(LabClock::real);
        let ago = (clock.now_ns() - a.ts) as f64 / 1e9 / clock.speed().max(1e-9);
        json!({"ts": a.ts, "at": clock.display(a.ts), "ago_s": ago.max(0.0),
               "kind": a.kind, "device": a.device, "summary": a.summary})
    }

    /// The instructor's view of this lab (includes the lab dashboard's sign-in link).
    pub fn instructor_json(&self) -> Value {
        let v = self.view();
        let dashboard = v.report["dashboard"].as_str().map(str::to_string);
        let sign_in = match (&dashboard, v.report["lab_token"].as_str()) {
            (Some(d), Some(t)) => Some(format!("{d}?token={t}")),
            _ => dashboard.clone(),
        };
        let source = match &self.source {
            Source::Started => "started".to_string(),
            Source::Attached(s) => format!("attached {s}"),
        };
        let page = self.page.lock().unwrap_or_else(|e| e.into_inner()).clone();
        json!({
            "index": self.index,
            "trainee": self.trainee,
            "source": source,
            "status": v.status,
            "error": v.error,
            "dashboard": dashboard,
            "dashboard_sign_in": sign_in,
            "trainee_page": page,
            "progress": v.progress,
            "progress_error": v.progress_error,
            "last_activity": Self::activity_json(&v),
            "restore": v.restore,
            "ready_in_ms": v.ready_in_ms,
            "resets": v.resets,
        })
    }

    /// The trainee's view: their lab's credentials and consoles, and the exercise progress.
    pub fn trainee_json(&self, ready_file: Option<&Path>) -> Value {
        let v = self.view();
        let r = &v.report;
        let s = |x: &Value| x.as_str().map(str::to_string);
        let dashboard = s(&r["dashboard"]);
        let sign_in = match (&dashboard, r["lab_token"].as_str()) {
            (Some(d), Some(t)) => Some(format!("{d}?token={t}")),
            _ => dashboard.clone(),
        };
        let ssh = |dev: &Value| -> Option<String> {
            let a = crate::lab::url_socket(&dev["ssh"])?;
            let user = dev["admin"]["user"].as_str().unwrap_or("admin");
            Some(format!("ssh -p {} {user}@{}", a.port(), a.ip()))
        };
        let console = |dev: &str| {
            ready_file.map(|f| format!("fortilab console {dev} --ready-file {}", f.display()))
        };
        let admin = |dev: &Value| {
            json!({"user": dev["admin"]["user"].as_str().unwrap_or("admin"),
                   "password": dev["admin"]["password"]})
        };
        let f = &r["fortigate"];
        let z = &r["fortianalyzer"];
        let e = &r["ems"];
        json!({
            "index": self.index,
            "trainee": self.trainee,
            "status": v.status,
            "error": v.error,
            "dashboard_sign_in": sign_in,
            "lab_token": r["lab_token"],
            "ca_cert": r["ca_cert"],
            "fortigate": {"name": f["name"], "version": f["version"], "rest": f["api"],
                          "api_token": f["api_token"], "admin": admin(f), "ssh": ssh(f),
                          "console": console("fortigate"), "proxy": f["proxy"]},
            "fortianalyzer": {"name": z["name"], "jsonrpc": s(&z["api"]).map(|a| format!("{a}/jsonrpc")),
                              "api_token": z["api_token"], "admin": admin(z), "ssh": ssh(z),
                              "console": console("fortianalyzer")},
            "ems": {"name": e["name"], "rest": s(&e["api"]).map(|a| format!("{a}/api/v1/")),
                    "admin": admin(e)},
            "endpoints": r["endpoints"].as_array().map(|a| a.iter().take(20).map(|ep| json!({
                "name": ep["name"], "ip": ep["ip"], "control": ep["control"]})).collect::<Vec<_>>()),
            "progress": v.progress,
            "last_activity": Self::activity_json(&v),
        })
    }

    /// A started lab's ready file.
    pub async fn ready_file(&self) -> Option<PathBuf> {
        self.proc
            .lock()
            .await
            .as_ref()
            .map(|p| p.ready_file.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labs_run_fortilab_up_unless_the_exercise_command_exists() {
        let mut spec = StartSpec {
            dir: PathBuf::from("/c"),
            lab: None,
            exercise: None,
            exercise_command: false,
        };
        assert_eq!(spec.args(2), ["up", "--data-dir", "/c/labs/lab-2"]);
        assert!(spec.mode_note().is_none());
        spec.lab = Some(PathBuf::from("/x/lab.toml"));
        assert_eq!(
            spec.args(2),
            ["up", "/x/lab.toml", "--data-dir", "/c/labs/lab-2"]
        );
        spec.lab = None;
        spec.exercise = Some(PathBuf::from("/x/seed.toml"));
        assert_eq!(spec.args(1), ["up", "--data-dir", "/c/labs/lab-1"]);
        assert!(spec.mode_note().unwrap().contains("fortilab up"));
        spec.exercise_command = true;
        assert_eq!(
            spec.args(1),
            ["exercise", "/x/seed.toml", "--data-dir", "/c/labs/lab-1"]
        );
        assert!(spec.mode_note().is_none());
    }
}
