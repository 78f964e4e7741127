//! Runs a library scenario against the running lab of `fortilab up`, step by step: pause,
//! step, resume, stop. A pause takes effect between steps (a step in progress, e.g. an
//! expectation waiting on its lab-time deadline, runs to its end); the lab itself keeps
//! running, since every device has its own clock.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::library::Entry;
use super::session::LabSession;
use fortilab_core::EventKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Idle,
    /// Restarting the lab with the scenario's lab definition.
    Starting,
    Running,
    Paused,
    Passed,
    Failed,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub index: usize,
    pub name: String,
    pub expect: bool,
    pub status: StepStatus,
    pub message: String,
    pub ms: Option<u64>,
}

/// What the dashboard shows of the player.
#[derive(Debug, Clone, Serialize)]
pub struct PlayerState {
    /// Incremented on each run.
    pub run: u64,
    pub file: Option<String>,
    pub scenario: Option<String>,
    pub status: Status,
    /// `true`: run steps one after another; `false`: wait for `step` or `resume`.
    pub auto: bool,
    /// Steps granted by `step` while paused.
    pub credits: u32,
    pub current: Option<usize>,
    pub steps: Vec<StepView>,
    pub error: Option<String>,
}

impl Default for PlayerState {
    fn default() -> Self {
        Self {
            run: 0,
            file: None,
            scenario: None,
            status: Status::Idle,
            auto: true,
            credits: 0,
            current: None,
            steps: Vec::new(),
            error: None,
        }
    }
}

impl PlayerState {
    /// Whether the next step may start now; consumes a `step` credit when paused.
    pub fn take_turn(&mut self) -> bool {
        if self.auto {
            true
        } else if self.credits > 0 {
            self.credits -= 1;
            true
        } else {
            false
        }
    }

    pub fn active(&self) -> bool {
        matches!(
            self.status,
            Status::Starting | Status::Running | Status::Paused
        )
    }

    /// Applies a control command: `pause`, `step`, `resume`.
    pub fn control(&mut self, cmd: &str) -> Result<(), String> {
        match cmd {
            "pause" => {
                self.auto = false;
                self.credits = 0;
            }
            "step" => {
                self.auto = false;
                self.credits += 1;
            }
            "resume" => {
                self.auto = true;
                self.credits = 0;
            }
            other => return Err(format!("unknown command {other:?}")),
        }
        Ok(())
    }
}

/// The scenario player of a session.
pub struct Player {
    state: Mutex<PlayerState>,
    tx: watch::Sender<u64>,
    cancel: Mutex<CancellationToken>,
}

impl Default for Player {
    fn default() -> Self {
        Self::new()
    }
}

impl Player {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(PlayerState::default()),
            tx: watch::channel(0).0,
            cancel: Mutex::new(CancellationToken::new()),
        }
    }

    pub fn state(&self) -> PlayerState {
        self.state.lock().unwrap().clone()
    }

    /// Changes whenever the state does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    fn bump(&self) {
        self.tx.send_modify(|n| *n += 1);
    }

    fn update(&self, f: impl FnOnce(&mut PlayerState)) {
        f(&mut self.state.lock().unwrap());
        self.bump();
    }

    /// `pause`, `step`, `resume` or `stop`.
    pub fn control(&self, cmd: &str) -> Result<PlayerState, String> {
        if cmd == "stop" {
            self.cancel.lock().unwrap().cancel();
            self.bump();
            return Ok(self.state());
        }
        let mut g = self.state.lock().unwrap();
        g.control(cmd)?;
        if g.status == Status::Paused && g.auto {
            g.status = Status::Running;
        }
        let s = g.clone();
        drop(g);
        self.bump();
        Ok(s)
    }

    /// Starts `entry`; `fresh` restarts the lab with the scenario's own lab first; `paused`
    /// waits for `step`/`resume` before the first step.
    pub fn start(
        self: &Arc<Self>,
        session: Arc<LabSession>,
        entry: Entry,
        fresh: bool,
        paused: bool,
    ) -> Result<PlayerState, String> {
        let token = CancellationToken::new();
        {
            let mut g = self.state.lock().unwrap();
            if g.active() {
                return Err(format!(
                    "{} is still running: stop it first",
                    g.scenario.clone().unwrap_or_default()
                ));
            }
            *g = PlayerState {
                run: g.run + 1,
                file: Some(entry.file.clone()),
                scenario: Some(entry.name.clone()),
                status: if fresh {
                    Status::Starting
                } else {
                    Status::Running
                },
                auto: !paused,
                credits: 0,
                current: None,
                steps: entry
                    .steps
                    .iter()
                    .map(|s| StepView {
                        index: s.index,
                        name: s.name.clone(),
                        expect: s.kind.is_expectation(),
                        status: StepStatus::Pending,
                        message: String::new(),
                        ms: None,
                    })
                    .collect(),
                error: None,
            };
            *self.cancel.lock().unwrap() = token.clone();
        }
        self.bump();
        let me = self.clone();
        tokio::spawn(async move { me.run(session, entry, fresh, token).await });
        Ok(self.state())
    }

    async fn run(
        self: Arc<Self>,
        session: Arc<LabSession>,
        entry: Entry,
        fresh: bool,
        token: CancellationToken,
    ) {
        session.timeline.note(
            EventKind::ScenarioStart,
            json!({"summary": format!("scenario {} ({} steps) from the dashboard", entry.name, entry.steps.len()), "file": entry.file}),
        );
        if fresh {
            if let Err(e) = session.reset(Some(entry.def.clone()), None).await {
                self.update(|state| {
                    state.status = Status::Failed;
                    state.error = Some(format!("the lab did not restart: {e:#}"));
                });
                return;
            }
            session.timeline.note(
                EventKind::ScenarioStart,
                json!({"summary": format!("scenario {} ({} steps) on a fresh lab", entry.name, entry.steps.len()), "file": entry.file}),
            );
            self.update(|state| {
                if state.status == Status::Starting {
                    state.status = Status::Running;
                }
            });
        }
        let mut rx = self.watch();
        for (i, step) in entry.steps.iter().enumerate() {
            // Wait for our turn (pause / step / resume), or a stop.
            loop {
                if token.is_cancelled() {
                    self.finish_stopped(i);
                    return;
                }
                let go = {
                    let mut g = self.state.lock().unwrap();
                    let go = g.take_turn();
                    g.status = if go { Status::Running } else { Status::Paused };
                    g.current = Some(i);
                    go
                };
                self.bump();
                if go {
                    break;
                }
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = rx.changed() => {}
                }
            }
            self.update(|s| s.steps[i].status = StepStatus::Running);
            let t0 = Instant::now();
            let outcome = {
                let mut g = tokio::select! {
                    g = session.ctx() => g,
                    _ = token.cancelled() => { self.finish_stopped(i); return; }
                };
                match g.as_mut() {
                    None => None,
                    Some(ctx) => {
                        let r = tokio::select! {
                            r = ctx.run_step(step) => Some(r),
                            _ = token.cancelled() => None,
                        };
                        session.refresh_procs(ctx);
                        r
                    }
                }
            };
            session.changed.notify_waiters();
            let Some(o) = outcome else {
                self.finish_stopped(i);
                return;
            };
            let ms = t0.elapsed().as_millis() as u64;
            let passed = o.passed;
            self.update(|state| {
                let v = &mut state.steps[i];
                v.status = if passed {
                    StepStatus::Passed
                } else {
                    StepStatus::Failed
                };
                v.message = o.message.clone();
                v.ms = Some(ms);
                if !passed {
                    state.status = Status::Failed;
                    state.error = Some(format!("step {}: {}", step.index, o.message));
                    for later in state.steps.iter_mut().skip(i + 1) {
                        later.status = StepStatus::Skipped;
                    }
                }
            });
            if !passed {
                session.timeline.note(
                    EventKind::ScenarioDone,
                    json!({"summary": format!("scenario {} FAILED at step {}", entry.name, step.index), "passed": false}),
                );
                return;
            }
        }
        self.update(|state| {
            state.status = Status::Passed;
            state.current = None;
        });
        session.timeline.note(
            EventKind::ScenarioDone,
            json!({"summary": format!("scenario {} passed", entry.name), "passed": true}),
        );
    }

    fn finish_stopped(&self, from: usize) {
        self.update(|state| {
            state.status = Status::Stopped;
            for v in state.steps.iter_mut().skip(from) {
                if matches!(v.status, StepStatus::Pending | StepStatus::Running) {
                    v.status = StepStatus::Skipped;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_step_resume() {
        let mut s = PlayerState::default();
        assert!(s.take_turn());
        s.control("pause").unwrap();
        assert!(!s.take_turn());
        s.control("step").unwrap();
        s.control("step").unwrap();
        assert!(s.take_turn());
        assert!(s.take_turn());
        assert!(!s.take_turn(), "two steps granted, two taken");
        s.control("resume").unwrap();
        assert!(s.take_turn() && s.take_turn());
        assert!(s.control("jump").is_err());
    }

    #[test]
    fn activity() {
        let mut s = PlayerState::default();
        assert!(!s.active());
        s.status = Status::Paused;
        assert!(s.active());
        s.status = Status::Failed;
        assert!(!s.active());
        assert_eq!(serde_json::to_value(Status::Paused).unwrap(), "paused");
    }
}
