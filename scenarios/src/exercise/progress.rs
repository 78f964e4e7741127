//! The progress of a running exercise (pure state, unit-tested): which tasks are done and
//! when, hints shown, the current task, the last trainee activity; and its JSON form
//! (`GET /_lab/exercise`, read by the classroom: keep the shape).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Exercise;

/// One task's progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskProgress {
    pub done: bool,
    pub done_at: Option<SystemTime>,
    pub hints_shown: usize,
    /// When the task became the current one.
    pub started_at: Option<SystemTime>,
    /// What the last evaluation of the task's checks saw (one line per check).
    pub last_seen: Vec<String>,
    /// The lab snapshot taken when the task began: `Some(Ok(name))` once saved, `Some(Err)`
    /// when it could not be; `None` while it is being taken (or the task has not begun).
    pub snapshot: Option<Result<String, String>>,
}

/// A running exercise's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub tasks: Vec<TaskProgress>,
    pub last_activity: Option<SystemTime>,
    /// Evaluations run so far.
    pub evaluations: u64,
}

/// A request about a task that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgressError {
    #[error("no task {0:?} in this exercise")]
    UnknownTask(String),
    #[error("task {0:?} has no more hints")]
    NoMoreHints(String),
}

impl Progress {
    pub fn new(tasks: usize) -> Progress {
        Progress {
            tasks: vec![TaskProgress::default(); tasks],
            last_activity: None,
            evaluations: 0,
        }
    }

    /// The first task not done (tasks are done in order).
    pub fn current(&self) -> Option<usize> {
        self.tasks.iter().position(|t| !t.done)
    }

    pub fn done_count(&self) -> usize {
        self.tasks.iter().filter(|t| t.done).count()
    }

    /// Marks the current task started (once); returns true the first time.
    pub fn begin_current(&mut self, now: SystemTime) -> Option<usize> {
        let i = self.current()?;
        if self.tasks[i].started_at.is_none() {
            self.tasks[i].started_at = Some(now);
            return Some(i);
        }
        None
    }

    /// Records an evaluation of task `i`: done for good when every check held.
    pub fn record(&mut self, i: usize, all_ok: bool, seen: Vec<String>, now: SystemTime) -> bool {
        self.evaluations += 1;
        let Some(t) = self.tasks.get_mut(i) else {
            return false;
        };
        t.last_seen = seen;
        if all_ok && !t.done {
            t.done = true;
            t.done_at = Some(now);
            self.last_activity = Some(now);
            return true;
        }
        false
    }

    /// Reveals the next hint of task `i`; returns its index.
    pub fn reveal_hint(
        &mut self,
        ex: &Exercise,
        i: usize,
        now: SystemTime,
    ) -> Result<usize, ProgressError> {
        let task = ex
            .tasks
            .get(i)
            .ok_or_else(|| ProgressError::UnknownTask(i.to_string()))?;
        let t = &mut self.tasks[i];
        if t.hints_shown >= task.hints.len() {
            return Err(ProgressError::NoMoreHints(task.id.clone()));
        }
        t.hints_shown += 1;
        self.last_activity = Some(now);
        Ok(t.hints_shown - 1)
    }

    /// Starts task `i` over: it and every later task are not done any more (hints stay
    /// revealed); `i` becomes the current task, started now.
    pub fn restart(&mut self, i: usize, now: SystemTime) {
        for t in self.tasks.iter_mut().skip(i) {
            t.done = false;
            t.done_at = None;
            t.started_at = None;
            t.last_seen.clear();
        }
        // The task's own snapshot stays (it was just restored); later tasks take new ones.
        for t in self.tasks.iter_mut().skip(i + 1) {
            t.snapshot = None;
        }
        if let Some(t) = self.tasks.get_mut(i) {
            t.started_at = Some(now);
        }
        self.last_activity = Some(now);
    }

    /// Notes trainee activity (a change in the lab).
    pub fn touch(&mut self, now: SystemTime) {
        self.last_activity = Some(now);
    }

    /// The JSON of `GET /_lab/exercise`:
    /// `{"exercise":{"name","title"},"tasks":[{"id","title","done","done_at","hints_shown",
    /// "hints_total"}],"done","total","current","last_activity"}`.
    pub fn to_json(&self, ex: &Exercise) -> Value {
        let tasks: Vec<Value> = ex
            .tasks
            .iter()
            .zip(&self.tasks)
            .map(|(t, p)| {
                json!({
                    "id": t.id,
                    "title": t.title,
                    "done": p.done,
                    "done_at": p.done_at.map(rfc3339),
                    "hints_shown": p.hints_shown,
                    "hints_total": t.hints.len(),
                })
            })
            .collect();
        json!({
            "exercise": {"name": ex.name, "title": ex.title},
            "tasks": tasks,
            "done": self.done_count(),
            "total": ex.tasks.len(),
            "current": self.current().map(|i| ex.tasks[i].id.clone()),
            "last_activity": self.last_activity.map(rfc3339),
        })
    }

    /// The dashboard panel's view: [`Progress::to_json`] plus each task's text, the hints
    /// revealed, its checks and what they last saw.
    pub fn to_panel_json(&self, ex: &Exercise) -> Value {
        let mut v = self.to_json(ex);
        v["exercise"]["description"] = json!(ex.description);
        if let Some(tasks) = v["tasks"].as_array_mut() {
            for ((tv, t), p) in tasks.iter_mut().zip(&ex.tasks).zip(&self.tasks) {
                tv["text"] = json!(t.text);
                tv["hints"] = json!(t.hints[..p.hints_shown.min(t.hints.len())]);
                tv["checks"] = json!(t.checks.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
                tv["last_seen"] = json!(p.last_seen);
                tv["started"] = json!(p.started_at.is_some());
                tv["snapshot"] = match &p.snapshot {
                    None => Value::Null,
                    Some(Ok(name)) => json!({"saved": true, "name": name}),
                    Some(Err(e)) => json!({"saved": false, "error": e}),
                };
            }
        }
        v
    }
}

/// RFC 3339 in UTC with milliseconds (`2026-12-02T09:40:10.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = fortilab_core::clock::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ex() -> Exercise {
        super::super::parse(
            "e.toml",
            r#"
[exercise]
name = "p"
title = "Progress"

[[task]]
id = "a"
title = "A"
hints = ["h1", "h2"]
[[task.check]]
expect_stitch = { stitch = "S" }

[[task]]
id = "b"
title = "B"
[[task.check]]
expect_stitch = { stitch = "S", runs = 2 }
"#,
        )
        .unwrap()
    }

    #[test]
    fn tasks_tick_in_order_and_stay_done_until_started_over() {
        let ex = ex();
        let mut p = Progress::new(2);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_764_668_410);
        assert_eq!(p.current(), Some(0));
        assert_eq!(p.begin_current(t0), Some(0));
        assert_eq!(p.begin_current(t0), None);
        assert!(!p.record(0, false, vec!["seen".into()], t0));
        assert!(p.record(0, true, vec![], t0 + Duration::from_millis(1500)));
        // Done for good: a later failing evaluation does not untick it.
        assert!(!p.record(0, false, vec![], t0));
        assert!(p.tasks[0].done);
        assert_eq!(p.current(), Some(1));
        let v = p.to_json(&ex);
        assert_eq!(v["done"], 1);
        assert_eq!(v["total"], 2);
        assert_eq!(v["current"], "b");
        assert_eq!(v["tasks"][0]["done_at"], "2025-12-02T09:40:11.500Z");
        assert_eq!(v["tasks"][1]["done_at"], Value::Null);
        assert_eq!(v["exercise"]["title"], "Progress");
        assert_eq!(v["last_activity"], "2025-12-02T09:40:11.500Z");
        p.record(1, true, vec![], t0);
        assert_eq!(p.to_json(&ex)["current"], Value::Null);
        p.restart(0, t0);
        assert_eq!(p.done_count(), 0);
        assert_eq!(p.current(), Some(0));
        assert_eq!(p.tasks[0].started_at, Some(t0));
    }

    #[test]
    fn hints_are_revealed_one_at_a_time() {
        let ex = ex();
        let mut p = Progress::new(2);
        let now = SystemTime::now();
        assert_eq!(p.reveal_hint(&ex, 0, now), Ok(0));
        assert_eq!(p.to_panel_json(&ex)["tasks"][0]["hints"], json!(["h1"]));
        assert_eq!(p.reveal_hint(&ex, 0, now), Ok(1));
        assert_eq!(
            p.reveal_hint(&ex, 0, now),
            Err(ProgressError::NoMoreHints("a".into()))
        );
        assert_eq!(p.to_json(&ex)["tasks"][0]["hints_shown"], 2);
        assert_eq!(p.to_json(&ex)["tasks"][0]["hints_total"], 2);
        assert!(p.reveal_hint(&ex, 1, now).is_err());
    }
}
