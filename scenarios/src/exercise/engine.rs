//! A running exercise: its progress, re-evaluated on every relevant lab event (the merged
//! timeline every device streams into), with a periodic re-check as a fallback; hints and
//! "start this task over" (the lab snapshot taken when the task began).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::Exercise;
use crate::dashboard::session::LabSession;
use crate::runner::Probe;
use fortilab_core::EventKind;

/// The supervised task that runs the exercise (`fortilab up --exercise`).
pub const RUNNER_TASK: &str = "exercise runner";

/// The re-check interval when no event arrives (a change no device reports as an event).
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(2);

/// How long events are gathered after the first one before one evaluation covers them all.
pub const COALESCE: Duration = Duration::from_millis(15);

/// The snapshot taken when task `id` began.
pub fn snapshot_name(id: &str) -> String {
    format!("exercise-task-{id}")
}

/// Whether a timeline event may change a check (everything but the checks' own reads, what
/// they cause, and the devices' routine chatter). `faz_serial` is FortiAnalyzer's own serial:
/// with `jsonapi-log` on, FortiAnalyzer logs every JSON-RPC call (the checks' own too) into
/// its own store, and those logs must not wake the checks again.
///
/// Kinds are matched as [`EventKind`]s (the catalog), never by name prefix: a kind that
/// shares a prefix with one listed here is judged on its own. A kind this build does not know
/// (a newer device) is relevant: re-checking costs little, missing a change does not.
pub fn is_relevant(ev: &Value, faz_serial: &str) -> bool {
    let name = ev.get("kind").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return false;
    }
    let Some(kind) = EventKind::from_name(name) else {
        return true;
    };
    match kind {
        EventKind::ApiRequest => is_api_change(ev),
        EventKind::LogReceived => {
            faz_serial.is_empty() || ev.get("from").and_then(Value::as_str) != Some(faz_serial)
        }
        EventKind::EmsSignin
        | EventKind::EndpointKeepalive
        | EventKind::ExerciseHint
        | EventKind::ExerciseRestart
        | EventKind::ExerciseTaskDone => false,
        _ => true,
    }
}

/// Whether a FortiAnalyzer `api.request` event is a change (a JSON-RPC `set`, `update`,
/// `exec`, `add` or `delete`; not a read, not a log search: the checks' own requests are
/// reads and log searches).
fn is_api_change(ev: &Value) -> bool {
    let method = ev.get("method").and_then(Value::as_str).unwrap_or("");
    if !matches!(
        method,
        "set" | "update" | "exec" | "add" | "delete" | "move" | "clone"
    ) {
        return false;
    }
    let urls = ev.get("urls").and_then(Value::as_array);
    // A log search is under the `logview` tree (`/logview/adom/root/logsearch`): its first
    // path segment, compared whole.
    !urls.is_some_and(|u| {
        u.iter().any(|x| {
            x.as_str()
                .is_some_and(|s| s.split('/').find(|seg| !seg.is_empty()) == Some("logview"))
        })
    })
}

/// Whether a timeline event is something the trainee did (the `last_activity` of progress):
/// the listed [`EventKind`]s exactly. What the lab does on its own is not activity, also when
/// its kind's name starts like one of these (`ems.quarantine.request` is the FortiGate's
/// automation asking EMS, `console.timeout` a session that expired).
pub fn is_activity(ev: &Value) -> bool {
    use EventKind as K;
    let Some(kind) = ev
        .get("kind")
        .and_then(Value::as_str)
        .and_then(EventKind::from_name)
    else {
        return false;
    };
    matches!(
        kind,
        K::ConfigChange
            | K::ConfigScript
            | K::ConsoleCommand
            | K::ConsoleConfig
            | K::ConsoleLogin
            | K::ConsoleLoginFailed
            | K::ConsoleLogout
            | K::AdminLogin
            | K::AdminLogout
            | K::AdminLockout
            | K::ApiLogin
            | K::ApiLoginFailed
            | K::ApiRequest
            | K::DeviceAuthorized
            | K::FabricDevice
            | K::DashboardCall
            | K::DashboardBrowse
            | K::DashboardDevice
            | K::EndpointFetch
            | K::IocAck
            | K::EmsQuarantine
            | K::EmsUnquarantine
    )
}

/// A running exercise.
pub struct ExerciseRun {
    pub exercise: Exercise,
    session: Arc<LabSession>,
    progress: Mutex<Progress>,
    /// One evaluation at a time.
    eval: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    /// Woken when progress changes (the dashboard panel).
    pub changed: tokio::sync::Notify,
}

impl ExerciseRun {
    pub fn new(exercise: Exercise, session: Arc<LabSession>) -> Arc<ExerciseRun> {
        let n = exercise.tasks.len();
        Arc::new(ExerciseRun {
            exercise,
            session,
            progress: Mutex::new(Progress::new(n)),
            eval: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// `GET /_lab/exercise`.
    pub fn status_json(&self) -> Value {
        self.lock_progress().to_json(&self.exercise)
    }

    /// The dashboard panel's view (with texts, revealed hints and what the checks saw).
    pub fn panel_json(&self) -> Value {
        self.lock_progress().to_panel_json(&self.exercise)
    }

    /// The progress, also after a panic of the runner while it held the lock (the runner is
    /// supervised and restarted; the progress it recorded stays).
    fn lock_progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn progress(&self) -> Progress {
        self.lock_progress().clone()
    }

    fn index(&self, id: &str) -> anyhow::Result<usize> {
        self.exercise
            .task_index(id)
            .ok_or_else(|| anyhow!("no task {id:?} in this exercise"))
    }

    /// Reveals the next hint of a task; answers its number (from 1) and text.
    pub fn hint(&self, id: &str) -> anyhow::Result<(usize, String)> {
        let i = self.index(id)?;
        let n = self
            .progress
            .lock()
            .unwrap()
            .reveal_hint(&self.exercise, i, SystemTime::now())?;
        let text = self.exercise.tasks[i].hints[n].clone();
        self.session.timeline.note(
            EventKind::ExerciseHint,
            json!({"task": id, "hint": n + 1, "summary": format!("exercise: hint {} of task {id} shown", n + 1)}),
        );
        self.changed.notify_waiters();
        Ok((n + 1, text))
    }

    /// Starts a task over: restores the lab snapshot taken when it began, then the task and
    /// every later one are not done any more.
    pub async fn restart(&self, id: &str) -> anyhow::Result<()> {
        let i = self.index(id)?;
        match &self.lock_progress().tasks[i].snapshot {
            Some(Ok(_)) => {}
            Some(Err(e)) => anyhow::bail!("no snapshot of the start of task {id:?}: {e}"),
            None => anyhow::bail!(
                "task {id:?} has not begun yet (or its starting snapshot is still being taken)"
            ),
        }
        {
            let _g = self.eval.lock().await;
            snapshot_restore(&self.session, &snapshot_name(id)).await?;
            self.lock_progress().restart(i, SystemTime::now());
        }
        self.session.timeline.note(
            EventKind::ExerciseRestart,
            json!({"task": id, "summary": format!("exercise: task {id} started over (lab snapshot restored)")}),
        );
        self.changed.notify_waiters();
        self.wake.notify_one();
        Ok(())
    }

    /// Re-evaluates at once (also what the engine does on every relevant event).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Checks the current task (and the next ones while they are done).
    pub async fn evaluate(&self) {
        let _g = self.eval.lock().await;
        loop {
            let (i, begun) = {
                let mut p = self.lock_progress();
                let Some(i) = p.current() else { return };
                (i, p.begin_current(SystemTime::now()).is_some())
            };
            let task = &self.exercise.tasks[i];
            if begun {
                self.changed.notify_waiters();
                let name = snapshot_name(&task.id);
                let r = match snapshot_save(&self.session, &name).await {
                    Ok(()) => Ok(name),
                    Err(e) => {
                        tracing::warn!(task = %task.id, "no snapshot of the task's start: {e:#}");
                        Err(format!("{e:#}"))
                    }
                };
                self.lock_progress().tasks[i].snapshot = Some(r);
                self.changed.notify_waiters();
            }
            let Some(clients) = self.session.clients() else {
                return; // the lab is restarting
            };
            let probe = Probe {
                fgt: &clients.fgt,
                faz: &clients.faz,
                ems: &clients.ems,
                endpoints: &clients.endpoints,
                timeline: &self.session.timeline,
            };
            let mut all = true;
            let mut seen = Vec::new();
            for c in &task.checks {
                if !all {
                    seen.push(format!("· {}", c.name));
                    continue;
                }
                match c.eval(&probe).await {
                    Ok((ok, s)) => {
                        all &= ok;
                        seen.push(format!("{} {}: {s}", if ok { "✔" } else { "✘" }, c.name));
                    }
                    Err(e) => {
                        all = false;
                        seen.push(format!("✘ {}: {e:#}", c.name));
                    }
                }
            }
            let done = self
                .progress
                .lock()
                .unwrap()
                .record(i, all, seen, SystemTime::now());
            if !done {
                return;
            }
            self.session.timeline.note(
                EventKind::ExerciseTaskDone,
                json!({"task": task.id, "summary": format!("exercise: task {} done: {}", task.id, task.title)}),
            );
            self.changed.notify_waiters();
        }
    }

    /// Runs until `shutdown`: evaluates on every relevant timeline event (events arriving
    /// together are evaluated once), on [`ExerciseRun::poke`], and every
    /// [`FALLBACK_INTERVAL`].
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.session.timeline.subscribe();
        let faz_serial = self.session.report()["fortianalyzer"]["serial"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let relevant = |ev: &Value| is_relevant(ev, &faz_serial);
        self.evaluate().await;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + FALLBACK_INTERVAL,
            FALLBACK_INTERVAL,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if !relevant(&ev) {
                            continue;
                        }
                        if is_activity(&ev) {
                            self.lock_progress().touch(SystemTime::now());
                        }
                        // Gather what arrives with it, then evaluate once.
                        let until = Instant::now() + COALESCE;
                        while Instant::now() < until {
                            match tokio::time::timeout(until - Instant::now(), rx.recv()).await {
                                Ok(Ok(ev)) if relevant(&ev) && is_activity(&ev) => {
                                    self.lock_progress().touch(SystemTime::now());
                                }
                                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                                Ok(Err(RecvError::Closed)) | Err(_) => break,
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => {
                        rx = self.session.timeline.subscribe();
                        continue;
                    }
                },
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            self.evaluate().await;
        }
    }
}

/// Saves a lab snapshot (the lab's snapshot API: every device's state and the lab clock).
async fn snapshot_save(session: &LabSession, name: &str) -> anyhow::Result<()> {
    session
        .snapshot(crate::snapshot::SnapshotOp::Save, name)
        .await
        .map(|_| ())
}

/// Restores a lab snapshot.
async fn snapshot_restore(session: &LabSession, name: &str) -> anyhow::Result<()> {
    session
        .snapshot(crate::snapshot::SnapshotOp::Restore, name)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_own_reads_do_not_wake_the_engine() {
        assert!(!is_relevant(&json!({"kind": "api.request"}), "FAZ1"));
        assert!(!is_relevant(
            &json!({"kind": "api.request", "method": "get", "urls": ["/cli/global/system/global"]}),
            "FAZ1"
        ));
        assert!(!is_relevant(
            &json!({"kind": "api.request", "method": "add", "urls": ["/logview/adom/root/logsearch"]}),
            "FAZ1"
        ));
        assert!(is_relevant(
            &json!({"kind": "api.request", "method": "set", "urls": ["/cli/global/system/global"]}),
            "FAZ1"
        ));
        assert!(!is_relevant(&json!({"kind": "endpoint.keepalive"}), "FAZ1"));
        assert!(!is_relevant(&json!({"kind": "exercise.task_done"}), "FAZ1"));
        assert!(is_relevant(&json!({"kind": "config.change"}), "FAZ1"));
        assert!(is_relevant(&json!({"kind": "log.received"}), "FAZ1"));
        assert!(!is_relevant(
            &json!({"kind": "log.received", "from": "FAZ1"}),
            "FAZ1"
        ));
        assert!(is_activity(&json!({"kind": "console.command"})));
        assert!(!is_activity(&json!({"kind": "log.received"})));
    }

    #[test]
    fn kinds_and_paths_match_whole_never_by_prefix() {
        // The trainee's own quarantine on EMS is activity; the FortiGate's automation asking
        // EMS (a kind whose name starts the same) is not, nor is a console that timed out.
        assert!(is_activity(&json!({"kind": "ems.quarantine"})));
        assert!(is_activity(&json!({"kind": "ems.unquarantine"})));
        for k in [
            "ems.quarantine.request",
            "ems.quarantine.retry",
            "ems.quarantine.refused",
            "ems.quarantine.delivered",
            "ems.unquarantine.request",
            "console.timeout",
            "console.ready",
            "config.changed",
            "dashboard.",
            "",
        ] {
            assert!(!is_activity(&json!({"kind": k})), "{k}");
        }
        // Only the catalog's keep-alive kind is routine chatter; a kind this build does not
        // know is re-checked.
        assert!(!is_relevant(&json!({"kind": "endpoint.keepalive"}), "FAZ1"));
        assert!(is_relevant(&json!({"kind": "link.keepalive"}), "FAZ1"));
        assert!(is_relevant(&json!({"kind": "exercise.custom"}), "FAZ1"));
        assert!(!is_relevant(&json!({"kind": "exercise.hint"}), "FAZ1"));
        assert!(!is_relevant(&json!({}), "FAZ1"));
        // A log search is under /logview/; a url that merely starts with those letters is not.
        assert!(!is_relevant(
            &json!({"kind": "api.request", "method": "add", "urls": ["logview/adom/root/logsearch"]}),
            "FAZ1"
        ));
        assert!(is_relevant(
            &json!({"kind": "api.request", "method": "set", "urls": ["/logviewer/settings"]}),
            "FAZ1"
        ));
        // FortiAnalyzer's own logs are its JSON-RPC journal; a serial that only starts like it
        // is another device.
        assert!(is_relevant(
            &json!({"kind": "log.received", "from": "FAZ10"}),
            "FAZ1"
        ));
    }
}
