//! Rescans: stored logs of a time range run again through the current TIDB, on the rescan
//! worker thread, with their progress and history (persisted under `rescan:` keys). The task
//! id counter is shared with the JSON-RPC log searches.

use fortilab_core::EventKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{kv_json, Faz};
use crate::ioc::Source;

/// A rescan run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rescan {
    pub tid: u64,
    pub start: i64,
    pub end: Option<i64>,
    pub status: String,
    pub percentage: u32,
    #[serde(rename = "scanned-logs")]
    pub scanned: u64,
    #[serde(rename = "threats-count")]
    pub threats: u64,
    #[serde(rename = "new-threats")]
    pub new_threats: u64,
    #[serde(rename = "package-version")]
    pub package: String,
    pub trigger: String,
    pub range_start: i64,
    pub range_end: i64,
}

/// The rescan runs, the task id counter and the worker's queue.
#[derive(Debug)]
pub struct Rescans {
    runs: Mutex<Vec<Rescan>>,
    next_tid: AtomicU64,
    /// Rescan runs to execute: (tid, start, end), taken by the rescan worker thread.
    queue: OnceLock<Mutex<mpsc::Sender<(u64, i64, i64)>>>,
}

impl Rescans {
    pub(super) fn new(runs: Vec<Rescan>) -> Self {
        let next_tid = runs.iter().map(|r| r.tid).max().unwrap_or(0) + 1;
        Self {
            runs: Mutex::new(runs),
            next_tid: AtomicU64::new(next_tid.max(1)),
            queue: OnceLock::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<Rescan>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new task id (rescans and log searches).
    pub fn new_tid(&self) -> u64 {
        self.next_tid.fetch_add(1, Ordering::Relaxed)
    }

    /// Where [`Faz::new_rescan`] queues runs (set once, by `start`, to the worker's queue).
    pub fn set_queue(&self, tx: mpsc::Sender<(u64, i64, i64)>) {
        let _ = self.queue.set(Mutex::new(tx));
    }

    /// Every run, oldest first.
    pub fn list(&self) -> Vec<Rescan> {
        self.lock().clone()
    }

    pub fn get(&self, tid: u64) -> Option<Rescan> {
        self.lock().iter().find(|r| r.tid == tid).cloned()
    }

    /// The running run, else the last one.
    pub fn current(&self) -> Option<Rescan> {
        let rs = self.lock();
        rs.iter()
            .rev()
            .find(|r| r.status == "running")
            .or(rs.last())
            .cloned()
    }

    pub fn any_running(&self) -> bool {
        self.lock().iter().any(|r| r.status == "running")
    }

    /// Cancels a running run; returns its status (`None`: no such run).
    pub fn cancel(&self, tid: u64) -> Option<String> {
        let mut rs = self.lock();
        let r = rs.iter_mut().find(|r| r.tid == tid)?;
        if r.status == "running" {
            r.status = "cancelled".into();
        }
        Some(r.status.clone())
    }
}

impl Faz {
    /// Runs a rescan of stored logs against the current TIDB (blocking; call off the runtime).
    pub fn run_rescan(&self, tid: u64, start: i64, end: i64) {
        let day = self.day_of(self.now());
        let mut scanned = 0u64;
        let mut threats = 0u64;
        let mut changes = Vec::new();
        let ltypes = [1i64, 2, 4, 5, 6];
        let res = self.store.scan(&ltypes, start, end, |found, row| {
            scanned += 1;
            let mut eng = self.ioc.engine();
            if let Some(hit) = eng.tidb.check(&row.ioc_view()) {
                threats += 1;
                if let Some(epip) = row.srcip.as_deref() {
                    // Only threats the host does not list yet (insert-time hits are counted).
                    let known = eng
                        .host(epip)
                        .map(|h| h.threats.iter().any(|t| t.threat == hit.threat))
                        .unwrap_or(false);
                    if !known {
                        let src = Source {
                            epip,
                            epname: row.srcname.as_deref(),
                            user: row.user.as_deref(),
                            mac: row.srcmac.as_deref(),
                            devid: row.devid.as_deref().unwrap_or(&found.dev),
                            vdom: row.vd.as_deref().unwrap_or("root"),
                            sender: &found.dev,
                            log_type: crate::store::logtype_name(found.ltype),
                        };
                        if let Some(c) = eng.apply(&hit, &src, row.etime, day, true) {
                            changes.push(c);
                        }
                    }
                }
            }
            if scanned % 1000 == 0 {
                if let Some(r) = self.rescans.lock().iter_mut().find(|r| r.tid == tid) {
                    if r.status == "cancelled" {
                        return false;
                    }
                    r.scanned = scanned;
                }
            }
            true
        });
        let new_threats = changes.len() as u64;
        self.handle_changes(changes, true);
        let rec = {
            let mut rs = self.rescans.lock();
            let Some(r) = rs.iter_mut().find(|r| r.tid == tid) else {
                return;
            };
            r.scanned = scanned;
            r.threats = threats;
            r.new_threats = new_threats;
            r.percentage = 100;
            r.end = Some(self.now());
            if r.status != "cancelled" {
                r.status = if res.is_ok() {
                    "done".into()
                } else {
                    "failed".into()
                };
            }
            r.clone()
        };
        let _ = self
            .store
            .kv_put(&[(format!("rescan:{tid:012}"), kv_json(&rec))]);
        self.bus.emit(EventKind::IocRescan, json!({"tid": tid, "scanned": scanned, "threats": threats, "new_threats": new_threats, "status": rec.status}));
    }

    /// Registers a rescan run and returns its task id.
    pub fn new_rescan(&self, start: i64, end: i64, trigger: &str) -> u64 {
        let tid = self.rescans.new_tid();
        let package = self.ioc.engine().tidb.version.clone();
        let r = Rescan {
            tid,
            start: self.now(),
            end: None,
            status: "running".into(),
            percentage: 0,
            scanned: 0,
            threats: 0,
            new_threats: 0,
            package,
            trigger: trigger.into(),
            range_start: start,
            range_end: end,
        };
        self.rescans.lock().push(r);
        if let Some(tx) = self.rescans.queue.get() {
            let _ = tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send((tid, start, end));
        }
        tid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tid: u64, status: &str) -> Rescan {
        Rescan {
            tid,
            start: 0,
            end: None,
            status: status.into(),
            percentage: 0,
            scanned: 0,
            threats: 0,
            new_threats: 0,
            package: String::new(),
            trigger: "manual".into(),
            range_start: 0,
            range_end: 0,
        }
    }

    #[test]
    fn restored_runs_continue_the_task_ids_and_only_a_running_run_is_cancelled() {
        let rs = Rescans::new(vec![run(4, "done"), run(7, "running"), run(9, "done")]);
        assert_eq!(
            rs.new_tid(),
            10,
            "ids continue after the highest restored one"
        );
        assert_eq!(
            rs.current().map(|r| r.tid),
            Some(7),
            "the running run first"
        );
        assert!(rs.any_running());
        assert_eq!(
            rs.cancel(9).as_deref(),
            Some("done"),
            "a finished run stays done"
        );
        assert_eq!(rs.cancel(7).as_deref(), Some("cancelled"));
        assert_eq!(rs.cancel(8), None);
        assert!(!rs.any_running());
        assert_eq!(rs.current().map(|r| r.tid), Some(9), "else the last run");
        assert_eq!(Rescans::new(Vec::new()).new_tid(), 1);
    }
}
