//! Stitch execution: the actions of a stitch run one after another in order; each waits its
//! `delay` (lab seconds) first; an action inside its `minimum-interval` since its last run is
//! skipped; a failed `required` action stops the chain. The actions themselves are behind
//! [`ActionExecutor`] so the semantics are testable with fake actions.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use fortilab_core::clock::LabClock;
use serde_json::Value as J;

use super::model::{ActionDef, Step};

/// What a stitch run knows about its cause.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunCtx {
    /// Run number in this process, from 1.
    pub run: u64,
    pub stitch: String,
    pub trigger: String,
    /// The trigger's `event-type` (`ioc`, `event-log`, ...; `scheduled` for schedules).
    pub event_type: String,
    /// The 0100046600 `from` field: `log`, `webhook`, `schedule`, `test`, ...
    pub from: String,
    /// The triggering log's (or notification's / webhook body's) fields: `%%log.<f>%%`.
    pub fields: BTreeMap<String, String>,
    /// The triggering log line, if there is one.
    pub log_line: Option<String>,
    /// The outputs of the actions run so far, merged (`%%results.<f>%%`).
    pub results: serde_json::Map<String, J>,
}

impl RunCtx {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The endpoint's address: the log's `srcip` (or `ip`).
    pub fn srcip(&self) -> Option<&str> {
        self.field("srcip").or_else(|| self.field("ip"))
    }

    pub fn mac(&self) -> Option<&str> {
        self.field("mac")
            .or_else(|| self.field("srcmac"))
            .or_else(|| self.field("mastersrcmac"))
    }

    pub fn fctuid(&self) -> Option<&str> {
        self.field("fctuid").or_else(|| self.field("uid"))
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failed,
    /// Not run: inside its `minimum-interval`.
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// What an executor reports for one action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionOutcome {
    pub ok: bool,
    pub detail: String,
    /// Merged into the run's `results` for later actions.
    pub output: J,
}

impl ActionOutcome {
    pub fn success(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
            output: J::Null,
        }
    }

    pub fn failed(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
            output: J::Null,
        }
    }

    pub fn with_output(mut self, output: J) -> Self {
        self.output = output;
        self
    }
}

/// One action's result in a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActionResult {
    pub action: String,
    pub action_type: String,
    pub status: Status,
    pub detail: String,
    /// Lab time, Unix nanoseconds.
    pub started: i64,
    pub finished: i64,
}

/// Runs one action.
pub trait ActionExecutor: Send + Sync {
    fn execute(
        &self,
        action: &ActionDef,
        ctx: &RunCtx,
    ) -> impl Future<Output = ActionOutcome> + Send;
}

/// `minimum-interval` bookkeeping: the lab time each action last ran.
#[derive(Debug, Default)]
pub struct IntervalGate {
    last: Mutex<HashMap<String, i64>>,
}

impl IntervalGate {
    /// Whether `action` may run at lab second `now`; if so, records the run.
    pub fn admit(&self, action: &str, min_interval: i64, now: i64) -> bool {
        let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if min_interval > 0 {
            if let Some(last) = m.get(action) {
                if now < last + min_interval {
                    return false;
                }
            }
        }
        m.insert(action.to_string(), now);
        true
    }
}

/// Runs `steps` in order. `actions` resolves action names; `on_result` sees each result as it
/// happens. Returns every result (actions after a failed required one are not run and not
/// listed).
pub async fn run_steps<E: ActionExecutor>(
    steps: &[Step],
    actions: &BTreeMap<String, ActionDef>,
    ctx: &mut RunCtx,
    exec: &E,
    clock: &LabClock,
    gate: &IntervalGate,
    mut on_result: impl FnMut(&RunCtx, &ActionResult) + Send,
) -> Vec<ActionResult> {
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        if step.delay > 0 {
            clock.sleep(Duration::from_secs(step.delay)).await;
        }
        let started = clock.now_ns();
        let (status, detail, action_type) = match actions.get(&step.action) {
            None => (
                Status::Failed,
                format!("automation action \"{}\" does not exist", step.action),
                String::new(),
            ),
            Some(def) => {
                if !gate.admit(&def.name, def.minimum_interval, clock.now_secs()) {
                    (
                        Status::Skipped,
                        format!(
                            "suppressed: minimum-interval {} s since the last run",
                            def.minimum_interval
                        ),
                        def.action_type.clone(),
                    )
                } else {
                    let o = exec.execute(def, ctx).await;
                    if let J::Object(m) = &o.output {
                        for (k, v) in m {
                            ctx.results.insert(k.clone(), v.clone());
                        }
                    }
                    (
                        if o.ok {
                            Status::Success
                        } else {
                            Status::Failed
                        },
                        o.detail,
                        def.action_type.clone(),
                    )
                }
            }
        };
        let r = ActionResult {
            action: step.action.clone(),
            action_type,
            status,
            detail,
            started,
            finished: clock.now_ns(),
        };
        on_result(ctx, &r);
        let stop = status == Status::Failed && step.required;
        out.push(r);
        if stop {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Records calls; fails the actions named in `fail`.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<(String, i64)>>,
        fail: Vec<String>,
        clock: Option<LabClock>,
    }

    impl ActionExecutor for Fake {
        fn execute(
            &self,
            action: &ActionDef,
            ctx: &RunCtx,
        ) -> impl Future<Output = ActionOutcome> + Send {
            let now = self.clock.map(|c| c.now_ns()).unwrap_or(0);
            self.calls.lock().unwrap().push((action.name.clone(), now));
            let failed = self.fail.contains(&action.name);
            let seen = ctx.results.get("from").cloned();
            let name = action.name.clone();
            async move {
                if failed {
                    ActionOutcome::failed("boom")
                } else {
                    ActionOutcome::success(format!("seen {seen:?}"))
                        .with_output(serde_json::json!({ "from": name }))
                }
            }
        }
    }

    fn defs(names: &[(&str, i64)]) -> BTreeMap<String, ActionDef> {
        names
            .iter()
            .map(|(n, mi)| {
                (
                    n.to_string(),
                    ActionDef {
                        name: n.to_string(),
                        action_type: "alert".into(),
                        minimum_interval: *mi,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn step(a: &str, delay: u64, required: bool) -> Step {
        Step {
            action: a.into(),
            delay,
            required,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn runs_in_order_and_passes_results_on() {
        let clock = LabClock::real();
        let fake = Fake::default();
        let actions = defs(&[("a", 0), ("b", 0), ("c", 0)]);
        let mut ctx = RunCtx::default();
        let mut seen = Vec::new();
        let res = rt().block_on(run_steps(
            &[
                step("a", 0, false),
                step("b", 0, false),
                step("c", 0, false),
            ],
            &actions,
            &mut ctx,
            &fake,
            &clock,
            &IntervalGate::default(),
            |_, r| seen.push(r.action.clone()),
        ));
        let calls: Vec<String> = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect();
        assert_eq!(calls, ["a", "b", "c"]);
        assert_eq!(seen, ["a", "b", "c"]);
        assert!(res.iter().all(|r| r.status == Status::Success));
        // b saw a's output, c saw b's.
        assert_eq!(res[1].detail, "seen Some(String(\"a\"))");
        assert_eq!(res[2].detail, "seen Some(String(\"b\"))");
    }

    #[test]
    fn a_failed_required_action_stops_the_chain_an_optional_one_does_not() {
        let clock = LabClock::real();
        let actions = defs(&[("a", 0), ("b", 0), ("c", 0)]);
        let fake = Fake {
            fail: vec!["a".into()],
            ..Default::default()
        };
        let res = rt().block_on(run_steps(
            &[step("a", 0, false), step("b", 0, true), step("c", 0, false)],
            &actions,
            &mut RunCtx::default(),
            &fake,
            &clock,
            &IntervalGate::default(),
            |_, _| {},
        ));
        assert_eq!(
            res.iter().map(|r| r.status).collect::<Vec<_>>(),
            [Status::Failed, Status::Success, Status::Success]
        );
        let fake = Fake {
            fail: vec!["b".into()],
            ..Default::default()
        };
        let res = rt().block_on(run_steps(
            &[step("a", 0, false), step("b", 0, true), step("c", 0, false)],
            &actions,
            &mut RunCtx::default(),
            &fake,
            &clock,
            &IntervalGate::default(),
            |_, _| {},
        ));
        assert_eq!(
            res.iter().map(|r| r.status).collect::<Vec<_>>(),
            [Status::Success, Status::Failed]
        );
        assert_eq!(fake.calls.lock().unwrap().len(), 2, "c never ran");
        // A missing action object is a failure too.
        let res = rt().block_on(run_steps(
            &[step("ghost", 0, true), step("a", 0, false)],
            &actions,
            &mut RunCtx::default(),
            &Fake::default(),
            &clock,
            &IntervalGate::default(),
            |_, _| {},
        ));
        assert_eq!(res.len(), 1);
        assert_eq!(res[0].status, Status::Failed);
        assert!(res[0].detail.contains("does not exist"));
    }

    #[test]
    fn delays_are_lab_time() {
        // 1000x: a 5 lab-second delay takes ~5 ms.
        let clock = LabClock::starting_now(1_600_000_000_000, 1000.0, 0);
        let fake = Arc::new(Fake {
            clock: Some(clock),
            ..Default::default()
        });
        let actions = defs(&[("a", 0), ("b", 0)]);
        let t0 = clock.now_ns();
        let wall = std::time::Instant::now();
        rt().block_on(run_steps(
            &[step("a", 2, false), step("b", 5, false)],
            &actions,
            &mut RunCtx::default(),
            fake.as_ref(),
            &clock,
            &IntervalGate::default(),
            |_, _| {},
        ));
        let calls = fake.calls.lock().unwrap().clone();
        assert!(calls[0].1 - t0 >= 2_000_000_000, "{calls:?}");
        assert!(calls[1].1 - calls[0].1 >= 5_000_000_000, "{calls:?}");
        assert!(wall.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn minimum_interval_suppresses_repeats() {
        let clock = LabClock::starting_now(1_600_000_000_000, 1.0, 0);
        let gate = IntervalGate::default();
        let actions = defs(&[("limited", 60), ("free", 0)]);
        let fake = Fake::default();
        let steps = [step("limited", 0, true), step("free", 0, false)];
        let first = rt().block_on(run_steps(
            &steps,
            &actions,
            &mut RunCtx::default(),
            &fake,
            &clock,
            &gate,
            |_, _| {},
        ));
        let second = rt().block_on(run_steps(
            &steps,
            &actions,
            &mut RunCtx::default(),
            &fake,
            &clock,
            &gate,
            |_, _| {},
        ));
        assert_eq!(first[0].status, Status::Success);
        assert_eq!(second[0].status, Status::Skipped);
        // A skipped required action does not stop the chain.
        assert_eq!(second[1].status, Status::Success);
        assert_eq!(fake.calls.lock().unwrap().len(), 3);
        // After the interval it runs again.
        assert!(gate.admit("limited", 60, clock.now_secs() + 61));
        assert!(!gate.admit("limited", 60, clock.now_secs() + 62));
    }
}
