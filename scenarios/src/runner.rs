//! Running scenarios: start the lab, execute each step through the vendor APIs (or the lab
//! surface where no vendor API exists), check expectations against a lab-time deadline, stop the
//! lab, and report (terminal and JUnit).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::attach::Attached;
use crate::clients::{self, Ems, Endpoints, Faz, FortiOs};
use fortilab_core::EventKind;
use fortilab_core::LabClock;

use crate::lab::{unwrap_ready, Lab, LabOptions, Role};
use crate::labdef::LabDef;
use crate::scenario::{FetchExpect, Step, StepKind};
use crate::timeline::{self, Timeline};

/// Options of `fortilab run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub seed: Option<u64>,
    pub keep_logs: bool,
    /// Print the timeline live while running.
    pub verbose: bool,
}

/// The outcome of one step.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub step: Step,
    pub passed: bool,
    pub real: Duration,
    pub message: String,
}

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioOutcome {
    pub name: String,
    pub file: String,
    pub seed: u64,
    pub steps: Vec<StepOutcome>,
    pub error: Option<String>,
    pub real: Duration,
    pub timeline_tail: Vec<String>,
    pub data_dir: PathBuf,
}

impl ScenarioOutcome {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.steps.iter().all(|s| s.passed)
    }
}

/// A device control step (`stop`, `kill`, `start`, `restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOp {
    Stop,
    Kill,
    Start,
    Restart,
}

impl DeviceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceOp::Stop => "stop",
            DeviceOp::Kill => "kill",
            DeviceOp::Start => "start",
            DeviceOp::Restart => "restart",
        }
    }
}

/// What a scenario needs of its lab besides the vendor APIs and lab surfaces: the lab clock,
/// the endpoints' addresses, and device control. A lab this process started ([`Lab`]) does
/// all of it; an attached lab ([`crate::attach::Attached`]) refuses device control it cannot
/// do through a lab surface.
pub trait LabControl {
    /// The lab clock (expectation deadlines and `wait` steps are lab time).
    fn clock(&self) -> LabClock;
    /// The lab address of the endpoint named `name`.
    fn endpoint_ip(&self, name: &str) -> Option<String>;
    /// Stops, kills, starts or restarts a device.
    fn device(
        &mut self,
        op: DeviceOp,
        role: Role,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
    /// Sets the condition of a link between two devices; answers the link's report.
    fn link(
        &mut self,
        spec: &crate::links::LinkSpec,
    ) -> impl std::future::Future<Output = anyhow::Result<Value>> + Send;
    /// Saves or restores a lab snapshot (the lab clock changes with a restore).
    fn snapshot(
        &mut self,
        op: crate::snapshot::SnapshotOp,
        name: &str,
    ) -> impl std::future::Future<Output = anyhow::Result<crate::snapshot::SnapshotInfo>> + Send;
}

impl LabControl for Lab {
    fn clock(&self) -> LabClock {
        self.clock
    }

    fn endpoint_ip(&self, name: &str) -> Option<String> {
        self.def
            .endpoint_specs()
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.ip.to_string())
    }

    async fn device(&mut self, op: DeviceOp, role: Role) -> anyhow::Result<()> {
        match op {
            DeviceOp::Stop => self.stop_device(role).await,
            DeviceOp::Kill => self.kill_device(role).await,
            DeviceOp::Start => self.start_device(role).await,
            DeviceOp::Restart => self.restart_device(role).await,
        }
    }

    async fn link(&mut self, spec: &crate::links::LinkSpec) -> anyhow::Result<Value> {
        self.links.apply(spec).map_err(|e| anyhow!(e))
    }

    async fn snapshot(
        &mut self,
        op: crate::snapshot::SnapshotOp,
        name: &str,
    ) -> anyhow::Result<crate::snapshot::SnapshotInfo> {
        match op {
            crate::snapshot::SnapshotOp::Save => self.snapshot_save(name).await,
            crate::snapshot::SnapshotOp::Restore => self.snapshot_restore(name).await,
        }
    }
}

/// What a running scenario can reach: the lab (one this process started, by default) and the
/// clients of its vendor APIs and lab surfaces.
pub struct Ctx<L: LabControl = Lab> {
    pub lab: L,
    pub timeline: Timeline,
    pub fgt: FortiOs,
    pub faz: Faz,
    pub ems: Ems,
    pub endpoints: Endpoints,
}

impl Ctx<Lab> {
    /// Clients for a started lab.
    pub fn new(lab: Lab, timeline: Timeline) -> anyhow::Result<Ctx> {
        let http = clients::http_client(&lab.ca, false, Some(&lab.lab_token))?;
        let fgt_r = unwrap_ready(&lab.fortigate.ready, "fortigate");
        let fgt = FortiOs::new(
            fgt_r.get("api").and_then(Value::as_str).unwrap_or_default(),
            fgt_r
                .get("api_token")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            http.clone(),
        );
        let faz_r = unwrap_ready(&lab.faz.ready, "fortianalyzer");
        let faz = Faz::new(
            faz_r.get("api").and_then(Value::as_str).unwrap_or_default(),
            faz_r
                .get("api_token")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            http.clone(),
        );
        let ems_r = unwrap_ready(&lab.ems.ready, "ems");
        let ems = Ems::new(
            ems_r.get("api").and_then(Value::as_str).unwrap_or_default(),
            ems_r
                .pointer("/admin/user")
                .and_then(Value::as_str)
                .unwrap_or("admin"),
            ems_r
                .pointer("/admin/password")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            clients::http_client(&lab.ca, true, Some(&lab.lab_token))?,
        );
        let report = lab.ready_report(None);
        let eps = report["endpoints"].as_array().cloned().unwrap_or_default();
        let endpoints = Endpoints::new(&eps, http);
        Ok(Ctx {
            lab,
            timeline,
            fgt,
            faz,
            ems,
            endpoints,
        })
    }
}

impl<L: LabControl> Ctx<L> {
    /// Clients for a lab known by its ready report (ARCHITECTURE.md section 7), with HTTP
    /// clients that trust the lab CA and send the lab token.
    pub fn from_report(
        lab: L,
        report: &Value,
        http: reqwest::Client,
        cookie_http: reqwest::Client,
        timeline: Timeline,
    ) -> Ctx<L> {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let f = &report["fortigate"];
        let fgt = FortiOs::new(&s(f.get("api")), &s(f.get("api_token")), http.clone());
        let z = &report["fortianalyzer"];
        let faz = Faz::new(&s(z.get("api")), &s(z.get("api_token")), http.clone());
        let e = &report["ems"];
        let user = e
            .pointer("/admin/user")
            .and_then(Value::as_str)
            .unwrap_or("admin");
        let ems = Ems::new(
            &s(e.get("api")),
            user,
            &s(e.pointer("/admin/password")),
            cookie_http,
        );
        let eps = report["endpoints"].as_array().cloned().unwrap_or_default();
        let endpoints = Endpoints::new(&eps, http);
        Ctx {
            lab,
            timeline,
            fgt,
            faz,
            ems,
            endpoints,
        }
    }
}

/// The result of one check of an expectation.
struct Check {
    ok: bool,
    seen: String,
}

fn check(ok: bool, seen: impl Into<String>) -> Check {
    Check {
        ok,
        seen: seen.into(),
    }
}

/// Whether a JSON value equals an expected value, comparing as text (FortiOS logs mix numbers
/// and strings).
fn value_matches(actual: Option<&Value>, expected: &Value) -> bool {
    let Some(a) = actual else { return false };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text(a) == text(expected)
}

fn fields_match(obj: &Value, fields: &serde_json::Map<String, Value>) -> bool {
    fields.iter().all(|(k, v)| value_matches(obj.get(k), v))
}

fn fetch_matches(ans: &Value, e: &FetchExpect) -> bool {
    if let Some(ok) = e.ok {
        if ans.get("ok").and_then(Value::as_bool) != Some(ok) {
            return false;
        }
    }
    if let Some(st) = e.status {
        if ans.get("status").and_then(Value::as_u64) != Some(st as u64) {
            return false;
        }
    }
    if let Some(b) = &e.blocked_by {
        let actual = ans
            .get("blocked_by")
            .and_then(Value::as_str)
            .unwrap_or("none");
        if actual != b {
            return false;
        }
    }
    true
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 400 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(400).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

impl<L: LabControl> Ctx<L> {
    /// Runs an action step. Returns a message for the report.
    async fn act(&mut self, kind: &StepKind) -> anyhow::Result<String> {
        match kind {
            StepKind::Fetch {
                endpoint,
                url,
                expect,
            } => {
                let ans = self.endpoints.fetch(endpoint, url).await?;
                if !fetch_matches(&ans, expect) {
                    bail!(
                        "expected {expect:?}, the endpoint answered {}",
                        compact(&ans)
                    );
                }
                Ok(compact(&ans))
            }
            StepKind::AccessCode {
                endpoint,
                code,
                expect_ok,
            } => {
                let code = if code == "ems" {
                    let ip = self.endpoint_ip(endpoint)?;
                    let ep = self
                        .ems
                        .endpoint_by_ip(&ip)
                        .await?
                        .ok_or_else(|| anyhow!("EMS does not know {ip}"))?;
                    ep.get("quarantine_access_code")
                        .and_then(Value::as_str)
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| {
                            anyhow!(
                                "EMS shows no quarantine access code for {ip}: {}",
                                compact(&ep)
                            )
                        })?
                        .to_string()
                } else {
                    code.clone()
                };
                let ans = self
                    .endpoints
                    .post(endpoint, "access-code", json!({"code": code}))
                    .await?;
                if let Some(want) = expect_ok {
                    if ans.get("ok").and_then(Value::as_bool) != Some(*want) {
                        bail!(
                            "expected ok={want}, the endpoint answered {}",
                            compact(&ans)
                        );
                    }
                }
                Ok(compact(&ans))
            }
            StepKind::FazAck { ip, comment } => {
                let r = self
                    .faz
                    .rpc(
                        "update",
                        "/ioc/adom/root/events/ack",
                        json!({"events": [{"source-ip": ip, "comment": comment}]}),
                        true,
                    )
                    .await?;
                Ok(compact(&r))
            }
            StepKind::EmsQuarantine { ip } | StepKind::EmsUnquarantine { ip } => {
                let what = if matches!(kind, StepKind::EmsQuarantine { .. }) {
                    "quarantine"
                } else {
                    "unquarantine"
                };
                let ep = self
                    .ems
                    .endpoint_by_ip(ip)
                    .await?
                    .ok_or_else(|| anyhow!("EMS does not know {ip}"))?;
                let id = ep
                    .get("device_id")
                    .cloned()
                    .ok_or_else(|| anyhow!("endpoint record without device_id"))?;
                let r = self
                    .ems
                    .call(
                        "POST",
                        &format!("clients/{what}"),
                        Some(&json!({"ids": [id]})),
                    )
                    .await?;
                Ok(compact(&r))
            }
            StepKind::FgtCli { text } => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                let (st, v) = self
                    .fgt
                    .call(
                        "POST",
                        "/api/v2/monitor/system/config-script/upload",
                        Some(&json!({"filename": "scenario.conf", "file_content": b64})),
                    )
                    .await?;
                if st != 200 {
                    bail!("config-script upload: HTTP {st}: {}", compact(&v));
                }
                Ok(compact(&v))
            }
            StepKind::FgtRest {
                method,
                path,
                body,
                status,
            } => {
                let (st, v) = self.fgt.call(method, path, body.as_ref()).await?;
                let want = status.unwrap_or(200);
                if st != want {
                    bail!("expected HTTP {want}, got {st}: {}", compact(&v));
                }
                Ok(format!("HTTP {st}"))
            }
            StepKind::Stop { device } => {
                self.lab.device(DeviceOp::Stop, role(device)?).await?;
                Ok(format!("{device} stopped"))
            }
            StepKind::Kill { device } => {
                self.lab.device(DeviceOp::Kill, role(device)?).await?;
                Ok(format!("{device} killed"))
            }
            StepKind::Start { device } => {
                self.lab.device(DeviceOp::Start, role(device)?).await?;
                Ok(format!("{device} started"))
            }
            StepKind::Restart { device } => {
                self.lab.device(DeviceOp::Restart, role(device)?).await?;
                Ok(format!("{device} restarted"))
            }
            StepKind::Wait { duration } => {
                self.lab.clock().sleep(*duration).await;
                Ok(String::new())
            }
            StepKind::Link { spec } => {
                let report = self.lab.link(spec).await?;
                self.timeline.note(
                    EventKind::LinkFault,
                    json!({"summary": crate::scenario::describe(&StepKind::Link { spec: spec.clone() }), "link": report}),
                );
                Ok(format!("link {}", report["name"].as_str().unwrap_or("")))
            }
            StepKind::Snapshot { name } | StepKind::Restore { name } => {
                let op = if matches!(kind, StepKind::Snapshot { .. }) {
                    crate::snapshot::SnapshotOp::Save
                } else {
                    crate::snapshot::SnapshotOp::Restore
                };
                let info = self.lab.snapshot(op, name).await?;
                self.timeline.set_clock(self.lab.clock());
                self.timeline.note(
                    EventKind::LabSnapshot,
                    json!({"op": op.as_str(), "snapshot": info}),
                );
                Ok(format!(
                    "snapshot {name} {} (lab time {}, {} ms)",
                    op.past(),
                    info.lab_time,
                    info.elapsed_ms
                ))
            }
            other => bail!("not an action: {other:?}"),
        }
    }

    fn endpoint_ip(&self, name: &str) -> anyhow::Result<String> {
        self.lab
            .endpoint_ip(name)
            .ok_or_else(|| anyhow!("no endpoint named {name}"))
    }

    /// Checks an expectation once.
    async fn probe(&mut self, kind: &StepKind) -> anyhow::Result<Check> {
        Probe {
            fgt: &self.fgt,
            faz: &self.faz,
            ems: &self.ems,
            endpoints: &self.endpoints,
            timeline: &self.timeline,
        }
        .check(kind)
        .await
        .map(|(ok, seen)| check(ok, seen))
    }

    /// Runs one step to completion.
    pub async fn run_step(&mut self, step: &Step) -> StepOutcome {
        let t0 = Instant::now();
        let mut start =
            json!({"step": step.index, "summary": format!("step {}: {}", step.index, step.name)});
        if let StepKind::Fetch { endpoint, url, .. } = &step.kind {
            // The dashboard's causal chain starts at the fetch's start.
            start["action"] = json!("fetch");
            start["endpoint"] = json!(endpoint);
            start["url"] = json!(url);
        }
        self.timeline.note(EventKind::StepStart, start);
        let result: anyhow::Result<String> = if step.kind.is_expectation() {
            let real = self.lab.clock().to_real(step.within);
            let deadline = Instant::now() + real;
            let mut last_seen: String;
            let mut outcome: Option<anyhow::Result<String>> = None;
            loop {
                match self.probe(&step.kind).await {
                    Ok(c) => {
                        last_seen = c.seen;
                        if c.ok && !step.negate {
                            outcome = Some(Ok(last_seen.clone()));
                            break;
                        }
                        if c.ok && step.negate {
                            outcome = Some(Err(anyhow!(
                                "expected nothing within {} (lab time), but saw: {last_seen}",
                                crate::scenario::human_duration(step.within)
                            )));
                            break;
                        }
                    }
                    Err(e) => last_seen = format!("error: {e:#}"),
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            match outcome {
                Some(r) => r,
                None if step.negate => Ok(format!(
                    "nothing within {}; last seen: {last_seen}",
                    crate::scenario::human_duration(step.within)
                )),
                None => Err(anyhow!(
                    "expected within {} (lab time): {}\n    seen instead: {last_seen}",
                    crate::scenario::human_duration(step.within),
                    crate::scenario::describe(&step.kind)
                )),
            }
        } else {
            self.act(&step.kind).await
        };
        let (passed, message) = match result {
            Ok(m) => (true, m),
            Err(e) => (false, format!("{e:#}")),
        };
        self.timeline.note(
            if passed { EventKind::StepPass } else { EventKind::StepFail },
            json!({"step": step.index, "summary": format!("step {} {}: {}", step.index, if passed { "passed" } else { "FAILED" }, step.name)}),
        );
        StepOutcome {
            step: step.clone(),
            passed,
            real: t0.elapsed(),
            message,
        }
    }
}

/// The clients an expectation is checked through (a scenario step, an exercise check).
pub struct Probe<'a> {
    pub fgt: &'a FortiOs,
    pub faz: &'a Faz,
    pub ems: &'a Ems,
    pub endpoints: &'a Endpoints,
    pub timeline: &'a Timeline,
}

impl Probe<'_> {
    /// Checks an expectation once: whether it holds, and what was seen.
    pub async fn check(&self, kind: &StepKind) -> anyhow::Result<(bool, String)> {
        let c: Check = {
            match kind {
                StepKind::ExpectFgtLog { path, fields } => {
                    let v = self
                        .fgt
                        .get(&format!("/api/v2/log/memory/{path}?rows=2000"))
                        .await?;
                    let rows = v
                        .get("results")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let hit = rows.iter().any(|r| fields_match(r, fields));
                    check(
                        hit,
                        format!(
                            "{} {path} log(s); last: {}",
                            rows.len(),
                            rows.last().map(compact).unwrap_or_default()
                        ),
                    )
                }
                StepKind::ExpectFazLog {
                    logtype,
                    filter,
                    min,
                } => {
                    let add = self
                        .faz
                        .rpc("add", "/logview/adom/root/logsearch", json!({"logtype": logtype, "filter": filter, "device": [{"devid": "All_Devices"}], "time-order": "desc"}), true)
                        .await?;
                    let tid = add
                        .get("tid")
                        .cloned()
                        .ok_or_else(|| anyhow!("logsearch gave no tid: {add}"))?;
                    let tid = tid
                        .as_u64()
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| tid.to_string());
                    let mut got = Value::Null;
                    for _ in 0..50 {
                        got = self
                            .faz
                            .rpc(
                                "get",
                                &format!("/logview/adom/root/logsearch/{tid}"),
                                json!({"limit": 50, "offset": 0}),
                                true,
                            )
                            .await?;
                        if got.get("percentage").and_then(Value::as_u64).unwrap_or(100) >= 100 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let n = got
                        .get("total-count")
                        .and_then(Value::as_u64)
                        .unwrap_or_else(|| {
                            got.get("data")
                                .and_then(Value::as_array)
                                .map(|a| a.len() as u64)
                                .unwrap_or(0)
                        });
                    check(n >= *min, format!("{n} {logtype} log(s) match {filter:?}"))
                }
                StepKind::ExpectCompromised {
                    ip,
                    verdict,
                    level,
                    ack,
                } => {
                    let rows = self
                        .faz
                        .get_rows("/ioc/adom/root/compromised-hosts")
                        .await?;
                    let host = rows
                        .iter()
                        .find(|h| h.get("epip").and_then(Value::as_str) == Some(ip.as_str()));
                    match host {
                        None => check(
                            false,
                            format!("{ip} is not listed ({} compromised host(s))", rows.len()),
                        ),
                        Some(h) => {
                            let mut ok = true;
                            if let Some(v) = verdict {
                                ok &= h.get("verdict").and_then(Value::as_str) == Some(v.as_str());
                            }
                            if let Some(l) = level {
                                ok &= h.get("verdict-level").and_then(Value::as_str)
                                    == Some(l.as_str());
                            }
                            if let Some(a) = ack {
                                let acked = match h.get("ack") {
                                    Some(Value::Bool(b)) => *b,
                                    Some(Value::Number(n)) => n.as_i64() != Some(0),
                                    _ => false,
                                };
                                ok &= acked == *a;
                            }
                            check(ok, compact(h))
                        }
                    }
                }
                StepKind::ExpectAlert { trigger, ip } => {
                    let r = self
                        .faz
                        .rpc(
                            "get",
                            "/eventmgmt/adom/root/alerts",
                            json!({"limit": 1000}),
                            true,
                        )
                        .await?;
                    let rows = r
                        .get("data")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let hit = rows.iter().any(|a| {
                        trigger.as_ref().is_none_or(|t| {
                            a.get("triggername").and_then(Value::as_str) == Some(t.as_str())
                        }) && ip.as_ref().is_none_or(|i| {
                            a.get("epip").and_then(Value::as_str) == Some(i.as_str())
                        })
                    });
                    check(
                        hit,
                        format!(
                            "{} alert(s); {}",
                            rows.len(),
                            rows.last().map(compact).unwrap_or_default()
                        ),
                    )
                }
                StepKind::ExpectStitch { stitch, min_runs } => {
                    let v = self
                        .fgt
                        .get("/api/v2/monitor/system/automation-stitch/stats")
                        .await?;
                    let runs = stitch_runs(&v, stitch);
                    check(
                        runs >= *min_runs,
                        format!(
                            "stitch \"{stitch}\" ran {runs} time{}",
                            if runs == 1 { "" } else { "s" }
                        ),
                    )
                }
                StepKind::ExpectEms { ip, quarantined } => match self.ems.endpoint_by_ip(ip).await?
                {
                    None => check(false, format!("EMS does not list {ip}")),
                    Some(e) => {
                        let q = match e.get("is_quarantined") {
                            Some(Value::Bool(b)) => *b,
                            Some(Value::Number(n)) => n.as_i64() == Some(1),
                            _ => false,
                        };
                        check(
                            q == *quarantined,
                            format!(
                                "is_quarantined={}",
                                e.get("is_quarantined").cloned().unwrap_or(Value::Null)
                            ),
                        )
                    }
                },
                StepKind::ExpectFetch {
                    endpoint,
                    url,
                    expect,
                } => {
                    let ans = self.endpoints.fetch(endpoint, url).await?;
                    check(fetch_matches(&ans, expect), compact(&ans))
                }
                StepKind::ExpectBanned { ip, banned } => {
                    let v = self.fgt.get("/api/v2/monitor/user/banned").await?;
                    let rows = v
                        .get("results")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let listed = rows
                        .iter()
                        .any(|r| r.get("ip_address").and_then(Value::as_str) == Some(ip.as_str()));
                    check(
                        listed == *banned,
                        format!("banned list: {}", compact(&Value::Array(rows))),
                    )
                }
                StepKind::ExpectEvent {
                    device,
                    kind,
                    fields,
                } => {
                    let hits = self.timeline.find(|e| {
                        e.get("kind").and_then(Value::as_str) == Some(kind.as_str())
                            && device.as_ref().is_none_or(|d| {
                                e.get("device").and_then(Value::as_str) == Some(d.as_str())
                            })
                            && fields_match(e, fields)
                    });
                    check(
                        !hits.is_empty(),
                        format!("{} matching event(s)", hits.len()),
                    )
                }
                other => bail!("not an expectation: {other:?}"),
            }
        };
        Ok((c.ok, c.seen))
    }
}

/// Total runs of a stitch in a FortiOS `automation-stitch/stats` answer (accepts the array of
/// `{name, triggered}` rows, or an object keyed by name).
pub fn stitch_runs(v: &Value, stitch: &str) -> u64 {
    let results = v.get("results").unwrap_or(v);
    let count = |row: &Value| -> u64 {
        for k in ["triggered", "trigger_count", "count", "runs"] {
            if let Some(n) = row.get(k).and_then(Value::as_u64) {
                return n;
            }
        }
        0
    };
    match results {
        Value::Array(rows) => rows
            .iter()
            .filter(|r| r.get("name").and_then(Value::as_str) == Some(stitch))
            .map(count)
            .sum(),
        Value::Object(m) => m.get(stitch).map(count).unwrap_or(0),
        _ => 0,
    }
}

fn role(device: &str) -> anyhow::Result<Role> {
    Role::from_name(device).ok_or_else(|| anyhow!("unknown device {device}"))
}

/// Runs one scenario file end to end with real processes.
pub async fn run_scenario(
    path: &Path,
    def: LabDef,
    steps: Vec<Step>,
    opts: &RunOptions,
) -> ScenarioOutcome {
    let t0 = Instant::now();
    let name = scenario_name(path, &def);
    let seed = opts.seed.unwrap_or(def.lab.seed);
    let tmp = std::env::temp_dir().join(format!(
        "fortilab-run-{}-{}-{}",
        std::process::id(),
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        t0.elapsed().as_nanos()
    ));
    let mut outcome = ScenarioOutcome {
        name: name.clone(),
        file: path.display().to_string(),
        seed,
        steps: Vec::new(),
        error: None,
        real: Duration::ZERO,
        timeline_tail: Vec::new(),
        data_dir: tmp.clone(),
    };
    let lab = match Lab::start(
        def,
        LabOptions {
            data_dir: tmp.clone(),
            seed: opts.seed,
        },
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            outcome.error = Some(format!("the lab did not start: {e:#}"));
            outcome.real = t0.elapsed();
            return outcome;
        }
    };
    let timeline = Timeline::new(lab.clock);
    let shutdown = CancellationToken::new();
    let stream = match clients::stream_client(&lab.ca, Some(&lab.lab_token)) {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("{e:#}"));
            return outcome;
        }
    };
    for (label, base) in lab.event_sources() {
        tokio::spawn(timeline::follow(
            label,
            base,
            stream.clone(),
            timeline.clone(),
            shutdown.clone(),
        ));
    }
    if opts.verbose {
        tokio::spawn(timeline::print_live(
            timeline.clone(),
            false,
            shutdown.clone(),
        ));
    }
    let mut ctx = match Ctx::new(lab, timeline.clone()) {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("{e:#}"));
            return outcome;
        }
    };
    drive(&mut ctx, &steps, &mut outcome, Some(&tmp)).await;
    shutdown.cancel();
    let bad = ctx.lab.stop_all().await;
    if !bad.is_empty() && outcome.error.is_none() && outcome.passed() {
        outcome.error = Some(format!(
            "device(s) did not exit cleanly on SIGTERM: {}",
            bad.join(", ")
        ));
    }
    outcome.real = t0.elapsed();
    if outcome.passed() && !opts.keep_logs {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    outcome
}

/// Runs the steps in order (stopping at the first failure) and takes the timeline's tail; the
/// whole merged timeline goes to `keep_dir/timeline.jsonl` when given.
async fn drive<L: LabControl>(
    ctx: &mut Ctx<L>,
    steps: &[Step],
    outcome: &mut ScenarioOutcome,
    keep_dir: Option<&Path>,
) {
    for step in steps {
        let r = ctx.run_step(step).await;
        let failed = !r.passed;
        outcome.steps.push(r);
        if failed {
            break;
        }
    }
    // Give the streams a moment to deliver the last events before the tail is taken.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let clock = ctx.lab.clock();
    let all = ctx.timeline.snapshot();
    if let Some(dir) = keep_dir {
        // The whole merged timeline is kept with the device logs (`--keep-logs`, or a failure).
        let jsonl: String = all.iter().map(|e| format!("{e}\n")).collect();
        if let Err(e) = std::fs::write(dir.join("timeline.jsonl"), jsonl) {
            tracing::warn!("could not write timeline.jsonl: {e}");
        }
    }
    let snap: Vec<Value> = all
        .into_iter()
        .filter(|e| !timeline::is_routine(e))
        .collect();
    outcome.timeline_tail = snap[snap.len().saturating_sub(25)..]
        .iter()
        .map(|e| timeline::format_event(e, &clock, false))
        .collect();
}

/// Runs one scenario file against a running lab this process did not start (`fortilab run
/// --attach`). The scenario's own lab definition is not applied: the steps run against the lab
/// as it is. Nothing is stopped afterwards.
pub async fn run_attached(
    path: &Path,
    def: &LabDef,
    steps: Vec<Step>,
    lab: &Attached,
    opts: &RunOptions,
) -> ScenarioOutcome {
    let t0 = Instant::now();
    let name = scenario_name(path, def);
    let mut outcome = ScenarioOutcome {
        name,
        file: path.display().to_string(),
        seed: lab.report["seed"].as_u64().unwrap_or(def.lab.seed),
        steps: Vec::new(),
        error: None,
        real: Duration::ZERO,
        timeline_tail: Vec::new(),
        data_dir: PathBuf::from(&lab.source),
    };
    let clients = lab
        .http_client(false)
        .and_then(|h| Ok((h, lab.http_client(true)?, lab.stream_client()?)));
    let (http, cookie_http, stream) = match clients {
        Ok(c) => c,
        Err(e) => {
            outcome.error = Some(format!("{e:#}"));
            return outcome;
        }
    };
    match lab.wait_healthy(Duration::from_secs(5)).await {
        Ok(down) => {
            for d in down {
                eprintln!("fortilab: warning: the attached lab's {d}");
            }
        }
        Err(e) => {
            outcome.error = Some(format!("the attached lab refused: {e:#}"));
            outcome.real = t0.elapsed();
            return outcome;
        }
    }
    let timeline = Timeline::new(lab.clock());
    let shutdown = CancellationToken::new();
    for (label, base) in lab.event_sources() {
        tokio::spawn(timeline::follow(
            label,
            base,
            stream.clone(),
            timeline.clone(),
            shutdown.clone(),
        ));
    }
    if opts.verbose {
        tokio::spawn(timeline::print_live(
            timeline.clone(),
            false,
            shutdown.clone(),
        ));
    }
    let mut ctx = Ctx::from_report(lab.clone(), &lab.report, http, cookie_http, timeline);
    drive(&mut ctx, &steps, &mut outcome, None).await;
    shutdown.cancel();
    outcome.real = t0.elapsed();
    outcome
}

fn scenario_name(path: &Path, def: &LabDef) -> String {
    def.scenario
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

/// Writes a JUnit XML report.
pub fn write_junit(path: &Path, outcomes: &[ScenarioOutcome]) -> anyhow::Result<()> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failures = outcomes.iter().filter(|o| !o.passed()).count();
    let total: f64 = outcomes.iter().map(|o| o.real.as_secs_f64()).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"fortilab\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n",
        outcomes.len()
    ));
    for o in outcomes {
        let f = if o.passed() { 0 } else { 1 };
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" time=\"{:.3}\">\n",
            esc(&o.name),
            o.steps.len().max(1),
            o.real.as_secs_f64()
        ));
        x.push_str(&format!("    <properties><property name=\"seed\" value=\"{}\"/><property name=\"file\" value=\"{}\"/></properties>\n", o.seed, esc(&o.file)));
        if let Some(e) = &o.error {
            x.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"lab\"><failure message=\"{}\"/></testcase>\n",
                esc(&o.name),
                esc(e)
            ));
        }
        for s in &o.steps {
            x.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}. {}\" time=\"{:.3}\">",
                esc(&o.name),
                s.step.index,
                esc(&s.step.name),
                s.real.as_secs_f64()
            ));
            if !s.passed {
                x.push_str(&format!(
                    "<failure message=\"{}\">{}</failure>",
                    esc(s.message.lines().next().unwrap_or("")),
                    esc(&format!(
                        "{}\n\ntimeline tail:\n{}",
                        s.message,
                        o.timeline_tail.join("\n")
                    ))
                ));
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    std::fs::write(path, x).with_context(|| format!("--junit {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stitch_stats_shapes() {
        let v = json!({"results": [{"name": "A", "triggered": 2}, {"name": "B", "triggered": 1}]});
        assert_eq!(stitch_runs(&v, "A"), 2);
        let v = json!({"results": {"A": {"trigger_count": 3}}});
        assert_eq!(stitch_runs(&v, "A"), 3);
        assert_eq!(stitch_runs(&v, "Z"), 0);
    }

    #[test]
    fn fetch_expectations() {
        let ans = json!({"ok": false, "status": null, "blocked_by": "quarantine"});
        assert!(fetch_matches(
            &ans,
            &FetchExpect {
                ok: Some(false),
                status: None,
                blocked_by: Some("quarantine".into())
            }
        ));
        assert!(!fetch_matches(
            &ans,
            &FetchExpect {
                ok: Some(true),
                ..Default::default()
            }
        ));
        let ok = json!({"ok": true, "status": 200, "blocked_by": null});
        assert!(fetch_matches(
            &ok,
            &FetchExpect {
                blocked_by: Some("none".into()),
                status: Some(200),
                ok: None
            }
        ));
    }

    #[test]
    fn junit_is_well_formed_enough() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.xml");
        write_junit(&p, &[]).unwrap();
        let x = std::fs::read_to_string(&p).unwrap();
        assert!(x.contains("<testsuites name=\"fortilab\" tests=\"0\" failures=\"0\""));
    }
}
