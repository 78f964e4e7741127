//! The running lab of `fortilab up`, shared by the terminal timeline and the dashboard:
//! the lab (inside a scenario [`Ctx`], so library scenarios run against it), the vendor-API
//! clients the panels and buttons use, the event followers, and the demo controls that restart
//! the lab (reset, timing speed) or one device (kill, restart).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::clients::{self, Ems, Endpoints, Faz, FortiOs};
use crate::lab::{unwrap_ready, Lab, LabOptions, Role};
use crate::labdef::LabDef;
use crate::runner::Ctx;
use crate::timeline::{self, Timeline};
use fortilab_core::EventKind;

/// The name of the supervised task that follows a device's event stream (then its label).
pub const FOLLOW_TASK: &str = "timeline: ";

/// Options of a session (from `fortilab up`'s flags).
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub data_dir: PathBuf,
    pub seed: Option<u64>,
    pub ready_file: Option<PathBuf>,
}

/// The vendor-API clients of one lab generation (rebuilt after a reset).
pub struct Clients {
    pub fgt: FortiOs,
    pub faz: Faz,
    pub ems: Ems,
    pub endpoints: Endpoints,
    pub http: reqwest::Client,
    /// The ready report these clients were built from.
    pub report: Value,
    /// The lab's links (fault control).
    pub links: Arc<crate::links::LabLinks>,
}

impl Clients {
    fn new(lab: &Lab) -> anyhow::Result<Clients> {
        let http = clients::http_client(&lab.ca, false, Some(&lab.lab_token))?;
        // Panels poll often: answers must come quickly or count as "down".
        let fast = {
            clients::lab_client_builder(&lab.ca, Some(&lab.lab_token))?
                .timeout(std::time::Duration::from_secs(3))
                .connect_timeout(std::time::Duration::from_millis(700))
                .pool_max_idle_per_host(8)
                .build()?
        };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let fgt_r = unwrap_ready(&lab.fortigate.ready, "fortigate");
        let faz_r = unwrap_ready(&lab.faz.ready, "fortianalyzer");
        let ems_r = unwrap_ready(&lab.ems.ready, "ems");
        let report = lab.ready_report(None);
        let eps = report["endpoints"].as_array().cloned().unwrap_or_default();
        Ok(Clients {
            fgt: FortiOs::new(&s(fgt_r, "api"), &s(fgt_r, "api_token"), fast.clone()),
            faz: Faz::new(&s(faz_r, "api"), &s(faz_r, "api_token"), fast.clone()),
            ems: Ems::new(
                &s(ems_r, "api"),
                ems_r
                    .pointer("/admin/user")
                    .and_then(Value::as_str)
                    .unwrap_or("admin"),
                ems_r
                    .pointer("/admin/password")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                {
                    clients::lab_client_builder(&lab.ca, Some(&lab.lab_token))?
                        .timeout(std::time::Duration::from_secs(3))
                        .connect_timeout(std::time::Duration::from_millis(700))
                        .cookie_store(true)
                        .build()?
                },
            ),
            endpoints: Endpoints::new(&eps, fast),
            http,
            report,
            links: lab.links.clone(),
        })
    }
}

/// What the lab is doing, for the dashboard's status badge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabStatus {
    Running,
    /// Stopping and starting again (reset, speed change, fresh lab for a scenario).
    Restarting(String),
    /// The last restart failed; the message says why.
    Failed(String),
}

/// A per-process view for the topology (running or not).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcView {
    pub label: String,
    pub running: bool,
    pub pid: Option<u32>,
}

/// The running lab of `fortilab up`.
pub struct LabSession {
    pub timeline: Timeline,
    ctx: tokio::sync::Mutex<Option<Ctx>>,
    clients: RwLock<Option<Arc<Clients>>>,
    report: Mutex<Value>,
    followers: Mutex<CancellationToken>,
    stream_client: Mutex<reqwest::Client>,
    def: Mutex<LabDef>,
    opts: SessionOptions,
    dashboard: Mutex<Option<String>>,
    status: Mutex<LabStatus>,
    procs: Mutex<Vec<ProcView>>,
    /// Woken on every change the panels should show at once (a button, a reset).
    pub changed: tokio::sync::Notify,
    shutdown: CancellationToken,
    /// The lab token (the same across resets: the lab's secrets file is kept).
    lab_token: fortilab_core::secrets::LabToken,
    /// The exercise running in this lab (`fortilab exercise`).
    exercise: std::sync::OnceLock<Arc<crate::exercise::engine::ExerciseRun>>,
    /// The orchestrator's own long-running tasks (event-stream followers, the dashboard's
    /// state poller, the terminal printer): restarted after a panic, counted on `/_lab/tasks`
    /// and reported on the timeline (`task.*`, device `fortilab`).
    pub supervisor: fortilab_core::supervise::Supervisor,
}

impl LabSession {
    /// Wraps a started lab; starts following its devices' event streams into `timeline`.
    pub fn new(
        mut lab: Lab,
        def: LabDef,
        timeline: Timeline,
        opts: SessionOptions,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<LabSession>> {
        let stream = clients::stream_client(&lab.ca, Some(&lab.lab_token))?;
        let clients = Clients::new(&lab)?;
        let report = lab.ready_report(None);
        let lab_token = lab.lab_token.clone();
        let procs = proc_views(&mut lab);
        let sources = lab.event_sources();
        let ctx = Ctx::new(lab, timeline.clone())?;
        let supervisor = fortilab_core::supervise::Supervisor::new(None);
        {
            let tl = timeline.clone();
            supervisor.set_reporter(move |kind, data| tl.note(kind, data));
        }
        let s = Arc::new(LabSession {
            timeline,
            ctx: tokio::sync::Mutex::new(Some(ctx)),
            clients: RwLock::new(Some(Arc::new(clients))),
            report: Mutex::new(report),
            followers: Mutex::new(shutdown.child_token()),
            stream_client: Mutex::new(stream),
            def: Mutex::new(def),
            opts,
            dashboard: Mutex::new(None),
            status: Mutex::new(LabStatus::Running),
            procs: Mutex::new(procs),
            changed: tokio::sync::Notify::new(),
            shutdown,
            lab_token,
            exercise: std::sync::OnceLock::new(),
            supervisor,
        });
        s.follow(sources);
        Ok(s)
    }

    fn follow(&self, sources: Vec<(String, String)>) {
        let token = self.shutdown.child_token();
        *self.followers.lock().unwrap() = token.clone();
        let client = self.stream_client.lock().unwrap().clone();
        for (label, base) in sources {
            let (client, tl, stop) = (client.clone(), self.timeline.clone(), token.clone());
            self.supervisor
                .spawn(&format!("{FOLLOW_TASK}{label}"), token.clone(), move || {
                    timeline::follow(
                        label.clone(),
                        base.clone(),
                        client.clone(),
                        tl.clone(),
                        stop.clone(),
                    )
                });
        }
    }

    /// Attaches the exercise this lab runs (once).
    pub fn set_exercise(&self, run: Arc<crate::exercise::engine::ExerciseRun>) {
        let _ = self.exercise.set(run);
    }

    /// The exercise this lab runs, if any.
    pub fn exercise(&self) -> Option<Arc<crate::exercise::engine::ExerciseRun>> {
        self.exercise.get().cloned()
    }

    /// The lab token (dashboard sign-in, every device's `/_lab/` routes).
    pub fn lab_token(&self) -> &fortilab_core::secrets::LabToken {
        &self.lab_token
    }

    /// Records the dashboard URL (it is part of the ready report).
    pub fn set_dashboard(&self, url: &str) {
        *self.dashboard.lock().unwrap() = Some(url.to_string());
        let mut r = self.report.lock().unwrap();
        r["dashboard"] = json!(url);
    }

    /// The lab's ready report (ARCHITECTURE.md section 7).
    pub fn report(&self) -> Value {
        self.report.lock().unwrap().clone()
    }

    /// Writes the ready report to `--ready-file`, if one was given.
    pub fn write_ready_file(&self) -> anyhow::Result<()> {
        if let Some(p) = &self.opts.ready_file {
            fortilab_core::ready::write_ready(p, &self.report())?;
        }
        Ok(())
    }

    /// The clients of the current lab (None while it restarts).
    pub fn clients(&self) -> Option<Arc<Clients>> {
        self.clients.read().unwrap().clone()
    }

    pub fn status(&self) -> LabStatus {
        self.status.lock().unwrap().clone()
    }

    /// The current lab definition.
    pub fn def(&self) -> LabDef {
        self.def.lock().unwrap().clone()
    }

    pub fn procs(&self) -> Vec<ProcView> {
        self.procs.lock().unwrap().clone()
    }

    /// Exclusive use of the lab and its scenario context (None while the lab restarts).
    /// Scenario steps, device control and resets take turns here.
    pub async fn ctx(&self) -> tokio::sync::MutexGuard<'_, Option<Ctx>> {
        self.ctx.lock().await
    }

    /// Refreshes the per-process view from a held context.
    pub fn refresh_procs(&self, ctx: &mut Ctx) {
        *self.procs.lock().unwrap() = proc_views(&mut ctx.lab);
    }

    /// Checks for devices that died on their own (called periodically by `up`); never waits
    /// for a running scenario step.
    pub fn watch_exits(&self) {
        let Ok(mut g) = self.ctx.try_lock() else {
            return;
        };
        let Some(ctx) = g.as_mut() else { return };
        let lab = &mut ctx.lab;
        for p in [
            &mut lab.internet,
            &mut lab.faz,
            &mut lab.ems,
            &mut lab.fortigate,
        ]
        .into_iter()
        .chain(lab.endpoints.iter_mut())
        {
            if let crate::procs::ProcState::Exited(code) = p.state() {
                if p.pid().is_none() && !p.ready.is_null() {
                    self.timeline.note(
                        EventKind::DeviceExited,
                        json!({"source": p.label, "summary": format!("{} exited ({code:?}); see {}", p.label, p.stderr_file.display())}),
                    );
                    p.ready = Value::Null;
                }
            }
        }
        *self.procs.lock().unwrap() = proc_views(lab);
    }

    /// Device control from the dashboard: `kill` (SIGKILL, a crash), `stop` (SIGTERM),
    /// `start` (on its former ports) or `restart`.
    pub async fn device(&self, device: &str, action: &str) -> anyhow::Result<String> {
        let role = Role::from_name(device).ok_or_else(|| anyhow!("unknown device {device:?}"))?;
        let r = {
            let mut g = self.ctx.lock().await;
            let r = match g.as_mut() {
                None => Err(anyhow!("the lab is restarting")),
                Some(ctx) => {
                    let r = match action {
                        "kill" => ctx.lab.kill_device(role).await,
                        "stop" => ctx.lab.stop_device(role).await,
                        "start" => ctx.lab.start_device(role).await,
                        "restart" => ctx.lab.restart_device(role).await,
                        other => Err(anyhow!("unknown action {other:?}")),
                    };
                    self.refresh_procs(ctx);
                    r.map(|()| format!("{device}: {action} done"))
                }
            };
            r
        };
        self.timeline.note(
            EventKind::DashboardDevice,
            json!({"summary": match &r { Ok(m) => m.clone(), Err(e) => format!("{device} {action} failed: {e:#}") }, "target": device, "action": action}),
        );
        self.changed.notify_waiters();
        r
    }

    /// Saves or restores a lab snapshot (the dashboard's buttons, `POST /_lab/snapshot`,
    /// `fortilab snapshot`): a save is taken in place (nothing restarts); a restore restarts
    /// the devices on their ports, the timeline follows the lab clock back to the snapshot's
    /// lab time and the ready file is rewritten with it.
    pub async fn snapshot(
        &self,
        op: crate::snapshot::SnapshotOp,
        name: &str,
    ) -> anyhow::Result<crate::snapshot::SnapshotInfo> {
        let r = {
            let mut g = self.ctx.lock().await;
            match g.as_mut() {
                None => Err(anyhow!("the lab is restarting")),
                Some(ctx) => {
                    let r = match op {
                        crate::snapshot::SnapshotOp::Save => ctx.lab.snapshot_save(name).await,
                        crate::snapshot::SnapshotOp::Restore => {
                            ctx.lab.snapshot_restore(name).await
                        }
                    };
                    self.timeline.set_clock(ctx.lab.clock);
                    {
                        let mut rep = self.report.lock().unwrap();
                        rep["clock"] = crate::attach::clock_json(&ctx.lab.clock);
                    }
                    self.refresh_procs(ctx);
                    r
                }
            }
        };
        let summary = match &r {
            Ok(i) => format!(
                "lab snapshot {} {} (lab time {}, {} ms)",
                i.name,
                op.past(),
                i.lab_time,
                i.elapsed_ms
            ),
            Err(e) => format!("lab snapshot {name}: {} failed: {e:#}", op.as_str()),
        };
        self.timeline.note(
            EventKind::LabSnapshot,
            json!({"summary": summary, "op": op.as_str(), "name": name,
                   "snapshot": r.as_ref().ok()}),
        );
        self.write_ready_file()
            .context("rewriting the ready file after a snapshot")?;
        self.changed.notify_waiters();
        r
    }

    /// The lab's snapshots.
    pub fn snapshots(&self) -> Vec<crate::snapshot::SnapshotInfo> {
        crate::snapshot::list(&self.opts.data_dir)
    }

    /// Stops every device, wipes their data (the lab CA is kept), and starts the lab again
    /// with the same seed: `def` replaces the lab definition (a scenario's own lab), `speed`
    /// the lab clock's speed factor. Devices come back on the same real ports.
    pub async fn reset(&self, def: Option<LabDef>, speed: Option<f64>) -> anyhow::Result<()> {
        let mut def = def.unwrap_or_else(|| self.def());
        if let Some(s) = speed {
            anyhow::ensure!(
                s.is_finite() && (0.01..=10_000.0).contains(&s),
                "speed must be between 0.01 and 10000"
            );
            def.lab.speed = s;
        }
        let mut g = self.ctx.lock().await;
        *self.status.lock().unwrap() = LabStatus::Restarting(format!(
            "restarting the lab (seed {}, speed ×{})",
            self.opts.seed.unwrap_or(def.lab.seed),
            def.lab.speed
        ));
        *self.clients.write().unwrap() = None;
        self.changed.notify_waiters();
        // Event streams first: devices drain open connections before they exit.
        self.followers.lock().unwrap().cancel();
        let mut pinned = HashMap::new();
        if let Some(mut old) = g.take() {
            pinned = old.lab.pinned();
            let bad = old.lab.stop_all().await;
            if !bad.is_empty() {
                tracing::warn!("reset: not cleanly stopped: {}", bad.join(", "));
            }
        }
        wipe_except_ca(&self.opts.data_dir)?;
        let started = Lab::start_pinned(
            def.clone(),
            LabOptions {
                data_dir: self.opts.data_dir.clone(),
                seed: self.opts.seed,
            },
            pinned,
        )
        .await;
        let lab = match started {
            Ok(l) => l,
            Err(e) => {
                *self.status.lock().unwrap() = LabStatus::Failed(format!("{e:#}"));
                self.changed.notify_waiters();
                return Err(e);
            }
        };
        self.timeline.clear();
        self.timeline.set_clock(lab.clock);
        *self.stream_client.lock().unwrap() =
            clients::stream_client(&lab.ca, Some(&lab.lab_token))?;
        let clients = Clients::new(&lab)?;
        {
            let mut r = lab.ready_report(self.dashboard.lock().unwrap().as_deref());
            if r["dashboard"].is_null() {
                r["dashboard"] = Value::Null;
            }
            *self.report.lock().unwrap() = r;
        }
        *self.procs.lock().unwrap() = {
            let mut l = lab;
            let v = proc_views(&mut l);
            let sources = l.event_sources();
            self.follow(sources);
            *g = Some(Ctx::new(l, self.timeline.clone())?);
            v
        };
        *self.clients.write().unwrap() = Some(Arc::new(clients));
        *self.def.lock().unwrap() = def.clone();
        *self.status.lock().unwrap() = LabStatus::Running;
        self.timeline.note(
            EventKind::LabReset,
            json!({"summary": format!("lab restarted: {} (seed {}, timing {:?}, speed ×{})", def.lab.name, self.opts.seed.unwrap_or(def.lab.seed), def.lab.timing, def.lab.speed)}),
        );
        self.write_ready_file()
            .context("rewriting the ready file after a reset")?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// Stops the lab for good (Ctrl-C). Returns the labels of devices that did not exit 0.
    pub async fn stop(&self) -> Vec<String> {
        self.followers.lock().unwrap().cancel();
        let mut g = self.ctx.lock().await;
        match g.take() {
            Some(mut ctx) => ctx.lab.stop_all().await,
            None => Vec::new(),
        }
    }
}

fn proc_views(lab: &mut Lab) -> Vec<ProcView> {
    [
        &mut lab.internet,
        &mut lab.faz,
        &mut lab.ems,
        &mut lab.fortigate,
    ]
    .into_iter()
    .chain(lab.endpoints.iter_mut())
    .map(|p| {
        let running = matches!(p.state(), crate::procs::ProcState::Running);
        ProcView {
            label: p.label.clone(),
            running,
            pid: p.pid(),
        }
    })
    .collect()
}

/// Removes everything in a lab data directory except the lab CA.
fn wipe_except_ca(dir: &Path) -> anyhow::Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        // The lab CA and the lab's secrets (lab token, credentials) outlive a reset, so the
        // URLs, tokens and passwords users already have stay valid. The timeline files go on
        // across resets (a `lab.reset` event marks each).
        if e.file_name() == "ca"
            || e.file_name() == fortilab_core::secrets::SECRETS_FILE
            || e.file_name() == "timeline"
        {
            continue;
        }
        let p = e.path();
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.with_context(|| format!("wiping {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_keeps_the_lab_ca_and_secrets() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ca")).unwrap();
        std::fs::write(d.path().join("ca/ca.pem"), "x").unwrap();
        std::fs::create_dir_all(d.path().join("fortigate/queue")).unwrap();
        std::fs::write(d.path().join("labmap.json"), "{}").unwrap();
        std::fs::write(d.path().join("secrets.json"), "{}").unwrap();
        wipe_except_ca(d.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["ca", "secrets.json"]);
        assert!(d.path().join("ca/ca.pem").exists());
    }
}
