//! Lab snapshots (issue 17): the FortiGate state that lives only in memory — the memory log,
//! the compromised-host list, the automation run history and the banned-IP list.
//!
//! `POST /_lab/snapshot` (lab token) writes it as [`STATE_FILE`] into the snapshot's copy of
//! the data directory, next to the configuration (`fgt.conf`) and the log queue, while the
//! device runs on ([`LabState::snapshot_to`]). A restore puts that directory in place of the
//! data directory; a start that finds the file loads it and removes it (a resume), while an
//! ordinary restart (no file) starts with an empty memory log, as before.

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::automation::hosts::HostEntry;
use crate::automation::{Engine, RunRecord};
use crate::device::{Ban, Device, StitchStats};
use crate::logs::SavedLogs;

/// The file under `--data-dir` holding the saved in-memory state.
pub const STATE_FILE: &str = "lab-state.json";

/// What a snapshot keeps of the FortiGate's memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    pub logs: SavedLogs,
    #[serde(default)]
    pub compromised_hosts: Vec<HostEntry>,
    #[serde(default)]
    pub runs: Vec<RunRecord>,
    #[serde(default)]
    pub banned: Vec<Ban>,
    /// Per-stitch statistics (`monitor/system/automation-stitch/stats`).
    #[serde(default)]
    pub stitch_stats: std::collections::BTreeMap<String, StitchStats>,
}

impl LabState {
    /// The device's current state.
    pub fn export(dev: &Device, engine: &Engine) -> LabState {
        LabState {
            logs: dev.logs.export(),
            compromised_hosts: engine.compromised_hosts(),
            runs: engine.runs(),
            banned: dev.banned.list(),
            stitch_stats: dev.automation.all_stats(),
        }
    }

    /// Writes the state file (0600, atomically).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        fortilab_core::secrets::write_private(&dir.join(STATE_FILE), &text)
    }

    /// Reads and removes the state file, if there is one.
    pub fn take(dir: &Path) -> Result<Option<LabState>, String> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let state =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(state))
    }
}

/// What the lab-state routes need.
#[derive(Clone)]
pub struct LabParts {
    pub device: Arc<Device>,
    pub automation: Arc<Engine>,
    pub forwarder: Arc<crate::forward::Forwarder>,
}

/// `POST /_lab/snapshot` (`{"dir"}`): write the whole state into a new directory now, while
/// the device runs on (see [`LabState::snapshot_to`]).
pub fn lab_router(parts: LabParts) -> Router {
    Router::new()
        .route(fortilab_core::snapshot::ROUTE, post(snapshot))
        .with_state(parts)
}

async fn snapshot(State(p): State<LabParts>, body: axum::body::Bytes) -> axum::response::Response {
    fortilab_core::snapshot::handle(&body, |dir| async move {
        tokio::task::spawn_blocking(move || LabState::snapshot_to(&p, &dir))
            .await
            .map_err(|e| format!("snapshot task: {e}"))?
    })
    .await
}

impl LabState {
    /// Writes the FortiGate's whole state into `dir` with the layout of its data directory:
    /// the configuration (`fgt.conf`), the FortiAnalyzer log queue (`logqueue/`: the running
    /// sender's unacknowledged lines and numbering, copied under its lock), the in-memory
    /// state ([`STATE_FILE`], so the start from it is a resume) and the other files of the
    /// data directory (the SSH host key).
    pub fn snapshot_to(p: &LabParts, dir: &Path) -> Result<(), String> {
        let sender = p.forwarder.faz_sender();
        let mut skip = vec![crate::device::CONFIG_FILE, STATE_FILE];
        if sender.is_some() {
            skip.push("logqueue");
        }
        if let Some(src) = &p.device.data_dir {
            fortilab_core::snapshot::copy_dir_except(src, dir, &skip)
                .map_err(|e| format!("copying {}: {e}", src.display()))?;
        }
        if let Some(s) = &sender {
            s.snapshot_to(&dir.join("logqueue"))
                .map_err(|e| format!("log queue: {e}"))?;
        }
        p.device
            .persist_to(dir)
            .map_err(|e| format!("configuration: {e}"))?;
        LabState::export(&p.device, &p.automation)
            .save(dir)
            .map_err(|e| format!("{STATE_FILE}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::automation::model::IocLevel;
    use crate::device::BannedList;
    use crate::logs::LogWriter;
    use fortilab_core::LabClock;

    #[test]
    fn the_in_memory_state_is_saved_and_taken_back_once() {
        let clock = LabClock::real();
        let logs = LogWriter::new("FGT-LAB", "FGVM01TM00000001", "6.4.4", clock, 100);
        logs.event_system("0100046600", "notice", "Automation stitch triggered", |r| {
            r.str("stitch", "Compromised Host Quarantine");
        });
        let banned = BannedList::new(clock);
        banned.add("10.115.2.52".parse().unwrap(), 0, "admin");
        let host = HostEntry {
            srcip: "10.115.2.52".into(),
            mac: None,
            hostname: Some("PC-52".into()),
            user: None,
            verdict: "Infected".into(),
            ioc_level: IocLevel::High,
            threat: "www.eicar.org".into(),
            detect_method: "Infected-domain".into(),
            epid: Some(1025),
            first_seen: 1,
            last_seen: 2,
            count: 1,
            stitches_run: ["Compromised Host Quarantine".to_string()].into(),
        };
        let mut stats = std::collections::BTreeMap::new();
        stats.insert(
            "Compromised Host Quarantine".to_string(),
            StitchStats {
                triggered: 1,
                last_triggered: 2,
                ..Default::default()
            },
        );
        let st = LabState {
            logs: logs.export(),
            compromised_hosts: vec![host.clone()],
            runs: Vec::new(),
            banned: banned.list(),
            stitch_stats: stats.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        st.save(dir.path()).unwrap();
        let back = LabState::take(dir.path()).unwrap().expect("saved");
        assert!(LabState::take(dir.path()).unwrap().is_none(), "taken once");
        assert_eq!(back.logs, st.logs);
        assert_eq!(back.compromised_hosts, vec![host.clone()]);
        assert_eq!(back.banned, banned.list());
        assert_eq!(back.stitch_stats, stats);

        // Applied to a fresh device's parts.
        let banned2 = BannedList::new(clock);
        banned2.restore(back.banned.clone());
        assert!(banned2.is_banned("10.115.2.52".parse().unwrap()));
        let mut hosts = crate::automation::hosts::CompromisedHosts::default();
        hosts.restore(back.compromised_hosts);
        assert_eq!(hosts.get("10.115.2.52"), Some(&host));
        // Acted on once per host: the restored list still says the stitch ran.
        assert!(!hosts.claim("10.115.2.52", "Compromised Host Quarantine"));
    }
}
