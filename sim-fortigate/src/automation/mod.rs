//! The automation engine (FortiOS `autod`): triggers, the compromised-host list, stitch runs
//! and their actions.
//!
//! - [`model`]: triggers/actions/stitches read from the configuration, trigger matching.
//! - [`hosts`]: the compromised-host list (acted on once per host until FortiAnalyzer's ack).
//! - [`runner`]: stitch execution (order, `delay`, `required`, `minimum-interval`).
//! - [`subst`]: `%%log.<field>%%` and friends. [`schedule`]: `trigger-type scheduled`.
//! - [`actions`], [`ems`], [`http`], [`smtp`]: the real actions and their clients.
//!
//! Sources of trigger events: FortiAnalyzer notifications (`Device::faz_notifications`: `ioc`,
//! `ioc-ack`, `faz-event`), the device's logs (`event-log`), the automation request queue
//! (`automation-stitch/test` and incoming webhooks), configuration changes, the lab clock
//! (schedules) and the start (`reboot`, when the device restarts with saved state).
//!
//! Lab surface: `GET /_lab/compromised-hosts`, `GET /_lab/automation/runs`. Lab events:
//! `ioc.detected`, `ioc.repeat`, `ioc.ack`, `stitch.run`, `action.result`, `stitch.done`,
//! `ems.quarantine.request`, `ems.status`, `alert`, `banned.add`, `quarantine.mac`.

pub mod actions;
pub mod ems;
pub mod hosts;
pub mod http;
pub mod model;
pub mod runner;
pub mod schedule;
pub mod smtp;
pub mod subst;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use fortilab_core::logchan::{IocAckNotification, Notice, Notification};
use fortilab_core::logfmt::LogRecord;
use fortilab_core::supervise::{share_receiver, SharedReceiver};
use fortilab_core::EventKind;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::device::{AutomationRequest, Device};
use actions::{DeviceActions, AUTOMATION_UI};
use ems::EmsConnector;
use hosts::{CompromisedHosts, IocNotice, Observed};
use model::{Event, Model, StitchDef, TriggerDef};
use runner::{ActionResult, IntervalGate, RunCtx, Status};

/// How many finished runs the lab surface keeps.
const HISTORY: usize = 500;

/// Start-up facts the engine needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// The device restarted with a saved configuration: `reboot` triggers fire.
    pub rebooted: bool,
}

/// One stitch run, as the lab surface shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub run: u64,
    pub stitch: String,
    pub trigger: String,
    pub event_type: String,
    pub from: String,
    pub srcip: Option<String>,
    /// Lab time, Unix nanoseconds.
    pub started: i64,
    pub finished: Option<i64>,
    /// `running`, `success` (no action failed), `failed`.
    pub status: String,
    pub actions: Vec<String>,
    pub results: Vec<ActionResult>,
}

/// The engine.
pub struct Engine {
    dev: Arc<Device>,
    hosts: Mutex<CompromisedHosts>,
    gate: IntervalGate,
    pub ems: Arc<EmsConnector>,
    exec: DeviceActions,
    model: Mutex<(String, Arc<Model>)>,
    runs: Mutex<VecDeque<RunRecord>>,
    run_seq: AtomicU64,
    config_changed: Notify,
    /// What the log tap may skip: the log ids wanted as of a configuration generation.
    log_gate: Mutex<LogGate>,
    log_tx: tokio::sync::mpsc::Sender<Arc<crate::logs::LogLine>>,
    logs_dropped: AtomicU64,
    /// FortiAnalyzer notifications taken from the queue, and IOC notifications evaluated
    /// against the stitches.
    notifications: AtomicU64,
    ioc_evaluated: AtomicU64,
}

/// The event-log trigger's filter in the log writer: while the configuration is still at
/// `generation`, only logs with one of `logids` can fire a stitch. Unknown (`None`) or an
/// older generation: every log is handed over and the log task decides (and refreshes this).
#[derive(Debug, Default)]
struct LogGate {
    generation: Option<u64>,
    logids: Vec<u32>,
}

/// Logs queued for the event-log trigger before the writer drops them (with a warning).
const LOG_QUEUE: usize = 65_536;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Starts the engine. Subscriptions are taken before this returns, so nothing that happens
/// afterwards is missed; the tasks stop when `shutdown` is cancelled. `notifications`: the
/// FortiAnalyzer's notifications, from the log forwarder (a bounded queue wired by
/// [`crate::start`]: the forwarder acknowledges a notification only once it is in it, and
/// waits while it is full).
pub fn start(
    dev: Arc<Device>,
    opts: StartOptions,
    notifications: mpsc::Receiver<Notification>,
    shutdown: CancellationToken,
) -> Arc<Engine> {
    let ems = EmsConnector::new(dev.clone());
    ems.ensure_installed();
    let (log_tx, log_rx) = tokio::sync::mpsc::channel(LOG_QUEUE);
    let engine = Arc::new(Engine {
        hosts: Mutex::new(CompromisedHosts::default()),
        gate: IntervalGate::default(),
        exec: DeviceActions {
            dev: dev.clone(),
            ems: ems.clone(),
        },
        ems: ems.clone(),
        model: Mutex::new((String::new(), Arc::new(Model::default()))),
        runs: Mutex::new(VecDeque::new()),
        run_seq: AtomicU64::new(0),
        config_changed: Notify::new(),
        log_gate: Mutex::new(LogGate::default()),
        log_tx,
        logs_dropped: AtomicU64::new(0),
        notifications: AtomicU64::new(0),
        ioc_evaluated: AtomicU64::new(0),
        dev: dev.clone(),
    });
    let faz_rx = notifications;
    let weak = Arc::downgrade(&engine);
    dev.logs.add_tap(move |line| {
        if let Some(e) = weak.upgrade() {
            e.tap_log(line);
        }
    });
    let cfg_rx = dev.config.subscribe();
    let req_rx = dev.automation.take_receiver();

    // Supervised (`/_lab/tasks`, `task.*` events): a panicking task is reported and started
    // again, going on with the next item of its queue (nothing queued is lost).
    let sup = &dev.supervisor;
    {
        let (ems, stop) = (ems.clone(), shutdown.clone());
        sup.spawn("automation: EMS connector", shutdown.clone(), move || {
            ems.clone().poll_loop(stop.clone())
        });
    }
    {
        let (e, stop, rx) = (engine.clone(), shutdown.clone(), share_receiver(faz_rx));
        sup.spawn(
            "automation: FortiAnalyzer notifications",
            shutdown.clone(),
            move || e.clone().faz_task(rx.clone(), stop.clone()),
        );
    }
    {
        let (e, stop, rx) = (engine.clone(), shutdown.clone(), share_receiver(log_rx));
        sup.spawn(
            "automation: event-log trigger",
            shutdown.clone(),
            move || e.clone().log_task(rx.clone(), stop.clone()),
        );
    }
    {
        let (e, stop, rx) = (engine.clone(), shutdown.clone(), share_receiver(cfg_rx));
        sup.spawn("automation: configuration", shutdown.clone(), move || {
            e.clone().config_task(rx.clone(), stop.clone())
        });
    }
    {
        let (e, stop) = (engine.clone(), shutdown.clone());
        sup.spawn(
            "automation: schedule trigger",
            shutdown.clone(),
            move || e.clone().schedule_task(stop.clone()),
        );
    }
    match req_rx {
        Some(rx) => {
            let (e, stop, rx) = (engine.clone(), shutdown.clone(), share_receiver(rx));
            sup.spawn("automation: requests", shutdown.clone(), move || {
                e.clone().request_task(rx.clone(), stop.clone())
            });
        }
        None => tracing::warn!("the automation request queue is already taken"),
    }
    if opts.rebooted {
        let ctx = RunCtx {
            from: "system".into(),
            ..RunCtx::default()
        };
        engine.fire(&Event::Reboot, ctx);
    }
    engine
}

/// The lab-surface routes of the engine (merged into the API router).
pub fn lab_router(engine: Arc<Engine>) -> axum::Router {
    axum::Router::new()
        .route("/_lab/compromised-hosts", get(lab_hosts))
        .route("/_lab/automation/runs", get(lab_runs))
        .with_state(engine)
}

async fn lab_hosts(State(e): State<Arc<Engine>>) -> axum::response::Response {
    axum::Json(json!({"hosts": e.compromised_hosts()})).into_response()
}

async fn lab_runs(State(e): State<Arc<Engine>>) -> axum::response::Response {
    axum::Json(
        json!({"runs": e.runs(), "notifications": e.notifications_taken(),
                      "ioc_evaluated": e.ioc_evaluated()}),
    )
    .into_response()
}

fn record_fields(rec: &LogRecord) -> BTreeMap<String, String> {
    rec.fields()
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_text().into_owned()))
        .collect()
}

/// Fields of a JSON object as `%%log.<field>%%` variables (top-level scalars).
fn json_fields(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    Value::Number(n) => Some((k.clone(), n.to_string())),
                    Value::Bool(b) => Some((k.clone(), b.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A test log: FortiOS `key=value` text, or a JSON object.
fn parse_test_log(text: &str) -> Option<(BTreeMap<String, String>, String)> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if t.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<Value>(t) {
            return Some((json_fields(&v), t.to_string()));
        }
    }
    LogRecord::parse(t)
        .ok()
        .map(|r| (record_fields(&r), t.to_string()))
}

impl Engine {
    /// FortiAnalyzer notifications taken from the queue so far.
    pub fn notifications_taken(&self) -> u64 {
        self.notifications.load(Ordering::Relaxed)
    }

    /// IOC notifications evaluated against the stitches so far.
    pub fn ioc_evaluated(&self) -> u64 {
        self.ioc_evaluated.load(Ordering::Relaxed)
    }

    /// The compromised-host list.
    pub fn compromised_hosts(&self) -> Vec<hosts::HostEntry> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner()).list()
    }

    /// Replaces the compromised-host list and the run history (a lab snapshot being
    /// restored, at start).
    pub fn restore(&self, hosts: Vec<hosts::HostEntry>, runs: Vec<RunRecord>) {
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restore(hosts);
        let next = runs.iter().map(|r| r.run).max().unwrap_or(0);
        self.run_seq.fetch_max(next, Ordering::Relaxed);
        *self.runs.lock().unwrap_or_else(|p| p.into_inner()) = runs.into_iter().collect();
    }

    /// Recent stitch runs, oldest first.
    pub fn runs(&self) -> Vec<RunRecord> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The automation objects of the current configuration revision (cached per revision).
    pub fn model(&self) -> Arc<Model> {
        let rev = self.dev.config.revision();
        let mut g = self.model.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 != rev || g.0.is_empty() {
            let m = self
                .dev
                .config
                .with(|c| Model::from_config(c, self.dev.version));
            *g = (rev, Arc::new(m));
        }
        g.1.clone()
    }

    /// Fires every enabled stitch whose trigger matches `ev`. Returns the run numbers.
    pub fn fire(self: &Arc<Self>, ev: &Event<'_>, base: RunCtx) -> Vec<u64> {
        let model = self.model();
        model
            .matching(ev)
            .into_iter()
            .map(|(s, t)| self.begin_run(&model, s, t, base.clone()))
            .collect()
    }

    /// A FortiAnalyzer compromised-host notification.
    pub fn on_ioc(self: &Arc<Self>, n: &IocNotice) -> Vec<u64> {
        let now = self.dev.clock.now_secs();
        let model = self.model();
        let (observed, claimed, suppressed) = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            let observed = hosts.observe(n, now);
            let mut claimed = Vec::new();
            let mut suppressed = Vec::new();
            for (s, t) in model.matching(&Event::Ioc(n.ioc_level)) {
                if hosts.claim(&n.srcip, &s.name) {
                    claimed.push((s.clone(), t.clone()));
                } else {
                    suppressed.push(s.name.clone());
                }
            }
            (observed, claimed, suppressed)
        };
        let mut fields = BTreeMap::new();
        let mut log_line = None;
        match observed {
            Observed::New => {
                // The seed: from 7.0.0 this event log is no longer generated.
                if self.dev.version.major < 7 {
                    let l = self.dev.logs.event_system(
                        "0100022953",
                        "warning",
                        "Compromised host detected",
                        |record| {
                            record.str("msg", "IOC detected by FortiAnalyzer");
                            match n.srcip.parse::<IpAddr>() {
                                Ok(ip) => record.ip("srcip", ip),
                                Err(_) => record.str("srcip", n.srcip.clone()),
                            };
                        },
                    );
                    fields = record_fields(&l.record);
                    log_line = Some(l.line.to_string());
                }
                self.dev.events.emit(
                    EventKind::IocDetected,
                    json!({"host": n.srcip, "verdict": n.verdict, "threat": n.threat,
                           "ioc_level": n.ioc_level, "hostname": n.hostname, "mac": n.mac,
                           "detect_method": n.detect_method, "epid": n.epid}),
                );
            }
            Observed::Known => {
                self.dev.events.emit(
                    EventKind::IocRepeat,
                    json!({"host": n.srcip, "verdict": n.verdict, "threat": n.threat,
                           "suppressed": suppressed}),
                );
            }
        }
        for (k, v) in n.fields() {
            fields.insert(k, v);
        }
        let base = RunCtx {
            from: "log".into(),
            fields,
            log_line,
            ..RunCtx::default()
        };
        claimed
            .iter()
            .map(|(s, t)| self.begin_run(&model, s, t, base.clone()))
            .collect()
    }

    /// FortiAnalyzer acknowledged a compromised host: it leaves the list.
    pub fn on_ack(&self, v: &IocAckNotification) {
        let srcip = Some(v.srcip.as_str());
        let epid = v.epid.map(|e| e as i64);
        let removed = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ack(srcip, epid);
        match removed {
            Some(e) => {
                tracing::info!(host = %e.srcip, "compromised host acknowledged on FortiAnalyzer");
                self.dev.events.emit(
                    EventKind::IocAck,
                    json!({"host": e.srcip, "epid": e.epid, "comment": v.comment}),
                );
            }
            None => tracing::debug!(?srcip, ?epid, "IOC ack for a host not in the list"),
        }
    }

    /// Runs `stitch` now (`automation-stitch/test`), whatever its trigger, with an optional
    /// log (FortiOS text or JSON) as the triggering event.
    pub fn test(self: &Arc<Self>, stitch: &str, log: Option<&str>) -> Option<u64> {
        let model = self.model();
        let s = model.stitch(stitch)?;
        let t = model.trigger_of(s).cloned().unwrap_or_else(|| TriggerDef {
            name: s.trigger.clone(),
            schedule: None,
            scheduled: false,
            event_type: String::new(),
            ioc_level: model::IocLevel::High,
            logids: Vec::new(),
            fields: Vec::new(),
            faz_event_name: String::new(),
            faz_event_severity: String::new(),
            faz_event_tags: String::new(),
        });
        let (fields, log_line) = log
            .and_then(parse_test_log)
            .map(|(f, l)| (f, Some(l)))
            .unwrap_or_default();
        let base = RunCtx {
            from: "test".into(),
            fields,
            log_line,
            ..RunCtx::default()
        };
        Some(self.begin_run(&model, s, &t, base))
    }

    /// An incoming webhook for `stitch`.
    pub fn webhook(self: &Arc<Self>, stitch: &str, body: &Value) -> Option<u64> {
        let model = self.model();
        let s = model.stitch(stitch)?;
        let t = model.trigger_of(s)?;
        if !s.enabled || !t.matches(&Event::Webhook { stitch }) {
            tracing::warn!(
                stitch,
                "incoming webhook for a stitch that is disabled or not webhook-triggered"
            );
            self.dev.events.emit(
                EventKind::StitchWebhookIgnored,
                json!({"stitch": stitch, "enabled": s.enabled, "event_type": t.event_type}),
            );
            return None;
        }
        let base = RunCtx {
            from: "webhook".into(),
            fields: json_fields(body),
            log_line: Some(body.to_string()),
            ..RunCtx::default()
        };
        Some(self.begin_run(&model, s, t, base))
    }

    fn begin_run(
        self: &Arc<Self>,
        model: &Arc<Model>,
        s: &StitchDef,
        t: &TriggerDef,
        mut ctx: RunCtx,
    ) -> u64 {
        let run = self.run_seq.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.run = run;
        ctx.stitch = s.name.clone();
        ctx.trigger = t.name.clone();
        ctx.event_type = if t.scheduled {
            "scheduled".into()
        } else {
            t.event_type.clone()
        };
        let now_ns = self.dev.clock.now_ns();
        self.dev
            .automation
            .record_trigger(&s.name, now_ns.div_euclid(1_000_000_000));
        let action_names: Vec<String> = s.steps.iter().map(|st| st.action.clone()).collect();
        let v7 = self.dev.version.major >= 7;
        self.dev.logs.event_system(
            "0100046600",
            "notice",
            "Automation stitch triggered",
            |record| {
                record
                    .str("msg", format!("stitch:{} is triggered.", s.name))
                    .str("stitch", s.name.clone())
                    .str("trigger", t.name.clone());
                if v7 {
                    record.str("stitchaction", action_names.join(","));
                }
                record.str("from", ctx.from.clone());
            },
        );
        self.dev.events.emit(
            EventKind::StitchRun,
            json!({"stitch": s.name, "trigger": t.name, "event_type": ctx.event_type,
                   "actions": action_names, "run": run, "from": ctx.from,
                   "srcip": ctx.srcip()}),
        );
        tracing::info!(stitch = %s.name, trigger = %t.name, run, "automation stitch triggered");
        {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            if runs.len() >= HISTORY {
                runs.pop_front();
            }
            runs.push_back(RunRecord {
                run,
                stitch: s.name.clone(),
                trigger: t.name.clone(),
                event_type: ctx.event_type.clone(),
                from: ctx.from.clone(),
                srcip: ctx.srcip().map(String::from),
                started: now_ns,
                finished: None,
                status: "running".into(),
                actions: action_names,
                results: Vec::new(),
            });
        }
        let engine = self.clone();
        let model = model.clone();
        let steps = s.steps.clone();
        tokio::spawn(async move {
            let clock = engine.dev.clock;
            let results = runner::run_steps(
                &steps,
                &model.actions,
                &mut ctx,
                &engine.exec,
                &clock,
                &engine.gate,
                |ctx, r| engine.on_result(ctx, r),
            )
            .await;
            let failed = results.iter().any(|r| r.status == Status::Failed);
            let status = if failed { "failed" } else { "success" };
            engine.dev.events.emit(
                EventKind::StitchDone,
                json!({"stitch": ctx.stitch, "run": ctx.run, "status": status,
                       "results": results.iter().map(|r| json!({"action": r.action, "status": r.status})).collect::<Vec<_>>()}),
            );
            let mut runs = engine.runs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(rec) = runs.iter_mut().rev().find(|x| x.run == ctx.run) {
                rec.finished = Some(clock.now_ns());
                rec.status = status.into();
            }
        });
        run
    }

    fn on_result(&self, ctx: &RunCtx, r: &ActionResult) {
        // autod's debug form: { "name": "<action>", "status": "success" }.
        match r.status {
            Status::Failed => {
                tracing::warn!(stitch = %ctx.stitch, action = %r.action, detail = %r.detail, "automation action failed")
            }
            _ => {
                tracing::info!(stitch = %ctx.stitch, action = %r.action, status = r.status.as_str(), "automation action")
            }
        }
        self.dev.events.emit(
            EventKind::ActionResult,
            json!({"stitch": ctx.stitch, "run": ctx.run, "action": r.action,
                   "action_type": r.action_type, "status": r.status, "detail": r.detail}),
        );
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = runs.iter_mut().rev().find(|x| x.run == ctx.run) {
            rec.results.push(r.clone());
        }
    }

    async fn faz_task(
        self: Arc<Self>,
        rx: SharedReceiver<mpsc::Receiver<Notification>>,
        shutdown: CancellationToken,
    ) {
        let mut rx = rx.lock().await;
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r {
                    Some(n) => n,
                    None => return,
                },
            };
            self.notifications.fetch_add(1, Ordering::Relaxed);
            self.dev
                .events
                .emit(EventKind::FazNotification, n.to_json());
            match &n.notice {
                Notice::Ioc(i) => {
                    self.ioc_evaluated.fetch_add(1, Ordering::Relaxed);
                    self.on_ioc(&IocNotice::from_notification(n.id, i));
                }
                Notice::IocAck(a) => self.on_ack(a),
                Notice::FazEvent(e) => {
                    let mut fields = e.fields.clone();
                    fields.insert("name".into(), e.name.clone());
                    fields.insert("severity".into(), e.severity.clone());
                    let tags = e.tags.join(",");
                    let ctx = RunCtx {
                        from: "log".into(),
                        fields,
                        log_line: Some(n.to_json().to_string()),
                        ..RunCtx::default()
                    };
                    self.fire(
                        &Event::FazEvent {
                            name: &e.name,
                            severity: &e.severity,
                            tags: &tags,
                        },
                        ctx,
                    );
                }
            }
        }
    }

    /// Called by the log writer for every line, under its lock: hands over the logs a stitch
    /// may fire on.
    fn tap_log(&self, l: &Arc<crate::logs::LogLine>) {
        {
            let gate = self.log_gate.lock().unwrap_or_else(|p| p.into_inner());
            if gate.generation == Some(self.dev.config.generation()) {
                let wanted = l
                    .record
                    .text("logid")
                    .and_then(|id| model::short_logid(&id))
                    .is_some_and(|id| gate.logids.binary_search(&id).is_ok());
                if !wanted {
                    return;
                }
            }
        }
        if self.log_tx.try_send(l.clone()).is_err() {
            let n = self.logs_dropped.fetch_add(1, Ordering::Relaxed);
            if n % 10_000 == 0 {
                tracing::warn!(
                    dropped = n + 1,
                    "event-log trigger fell behind the logs; logs not checked against stitches"
                );
            }
        }
    }

    async fn log_task(
        self: Arc<Self>,
        rx: SharedReceiver<mpsc::Receiver<Arc<crate::logs::LogLine>>>,
        shutdown: CancellationToken,
    ) {
        let mut rx = rx.lock().await;
        loop {
            let line = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r {
                    Some(l) => l,
                    None => return,
                },
            };
            // The generation is read before the model, so the gate never claims a newer
            // configuration than the model it was computed from.
            let generation = self.dev.config.generation();
            let model = self.model();
            *self.log_gate.lock().unwrap_or_else(|p| p.into_inner()) = LogGate {
                generation: Some(generation),
                logids: model.wanted_logids(),
            };
            if !model.wants_logs() {
                continue;
            }
            let rec = &line.record;
            // A stitch's own "stitch triggered" log never re-triggers that stitch.
            let own = (rec.text("logid").as_deref() == Some("0100046600"))
                .then(|| rec.text("stitch").map(|s| s.into_owned()))
                .flatten();
            let matching: Vec<_> = model
                .matching(&Event::Log(rec))
                .into_iter()
                .filter(|(s, _)| own.as_deref() != Some(s.name.as_str()))
                .collect();
            if matching.is_empty() {
                continue;
            }
            let base = RunCtx {
                from: "log".into(),
                fields: record_fields(rec),
                log_line: Some(line.line.to_string()),
                ..RunCtx::default()
            };
            for (s, t) in matching {
                self.begin_run(&model, s, t, base.clone());
            }
        }
    }

    async fn config_task(
        self: Arc<Self>,
        rx: SharedReceiver<broadcast::Receiver<crate::config::ChangeEvent>>,
        shutdown: CancellationToken,
    ) {
        let mut rx = rx.lock().await;
        let mut last_rev = String::new();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "config-change trigger lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if ev.change.path == "endpoint-control fctems" {
                self.ems.wake();
            }
            if ev.change.path.starts_with("system automation-trigger") {
                self.config_changed.notify_one();
            }
            // One trigger per committed change set; automation's own changes do not count.
            if ev.revision == last_rev || ev.origin.ui.starts_with(AUTOMATION_UI) {
                continue;
            }
            last_rev = ev.revision.clone();
            let mut fields = BTreeMap::new();
            fields.insert("cfgpath".into(), ev.change.path.replace(' ', "."));
            fields.insert("cfgobj".into(), ev.change.key.clone());
            fields.insert("cfgattr".into(), ev.change.cfgattr.clone());
            fields.insert("user".into(), ev.origin.user.clone());
            fields.insert("ui".into(), ev.origin.ui.clone());
            let ctx = RunCtx {
                from: "log".into(),
                fields,
                ..RunCtx::default()
            };
            self.fire(&Event::ConfigChange, ctx);
        }
    }

    async fn schedule_task(self: Arc<Self>, shutdown: CancellationToken) {
        let clock = self.dev.clock;
        let local = move || clock.now_secs() + clock.tz_minutes() as i64 * 60;
        let mut last = local();
        loop {
            let now = local();
            let model = self.model();
            let mut earliest = i64::MAX;
            let mut due: Vec<String> = Vec::new();
            for s in model.stitches.iter().filter(|s| s.enabled) {
                let Some(t) = model.trigger_of(s) else {
                    continue;
                };
                let Some(sch) = t.schedule else { continue };
                let next = schedule::next_fire(&sch, last);
                if next <= now {
                    if !due.contains(&t.name) {
                        due.push(t.name.clone());
                    }
                    earliest = earliest.min(schedule::next_fire(&sch, now));
                } else {
                    earliest = earliest.min(next);
                }
            }
            last = now;
            for name in &due {
                let ctx = RunCtx {
                    from: "schedule".into(),
                    ..RunCtx::default()
                };
                self.fire(&Event::Scheduled { trigger: name }, ctx);
            }
            // Wake at the next due time, at least every lab minute, or on a trigger change.
            let wait = (earliest.saturating_sub(local())).clamp(0, 60) as u64;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = clock.sleep(Duration::from_secs(wait.max(1))) => {}
                _ = self.config_changed.notified() => {}
            }
        }
    }

    async fn request_task(
        self: Arc<Self>,
        rx: SharedReceiver<mpsc::Receiver<AutomationRequest>>,
        shutdown: CancellationToken,
    ) {
        let mut rx = rx.lock().await;
        loop {
            let req = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r { Some(r) => r, None => return },
            };
            match req {
                AutomationRequest::Test { stitch, log } => {
                    if self.test(&stitch, log.as_deref()).is_none() {
                        tracing::warn!(stitch = %stitch, "stitch test: no such stitch");
                    }
                }
                AutomationRequest::Webhook { stitch, body, .. } => {
                    self.webhook(&stitch, &body);
                }
            }
        }
    }
}
