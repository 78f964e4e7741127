//! Lab snapshots (issue 17): each endpoint's telemetry state (registration, the local
//! quarantine with its access-code verifier, an offline release EMS has not confirmed yet).
//! A snapshot of the running process (`POST /_lab/snapshot`) writes it as [`STATE_FILE`] into
//! the snapshot's directory, with each uplink's log queue, without stopping anything; a start
//! from a restored data directory finds the file, loads it and removes it, so an ordinary
//! restart starts unregistered and unquarantined, as before. The profile is not kept: EMS
//! sends it again at registration, which is what starts the log upload.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::agent::LocalQuarantine;
use crate::Endpoint;

/// The file under `--data-dir` holding the saved state.
pub const STATE_FILE: &str = "lab-state.json";

/// One endpoint's saved state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedAgent {
    pub name: String,
    pub ever_registered: bool,
    pub device_id: Option<u64>,
    pub ems_serial: Option<String>,
    pub quarantine: Option<LocalQuarantine>,
    pub pending_release: Option<(u64, String)>,
    pub contacts: u64,
}

/// The state of every endpoint of the process.
pub fn export(endpoints: &[Arc<Endpoint>]) -> Vec<SavedAgent> {
    endpoints
        .iter()
        .map(|e| {
            let st = e.lock();
            SavedAgent {
                name: e.id.name.clone(),
                ever_registered: st.ever_registered,
                device_id: st.device_id,
                ems_serial: st.ems_serial.clone(),
                quarantine: st.quarantine.clone(),
                pending_release: st.pending_release.clone(),
                contacts: st.contacts,
            }
        })
        .collect()
}

/// Applies saved state to the endpoints of the same names (before their loops start); each
/// registers again, reporting the restored quarantine (`EC_QUARANTINED`).
pub fn apply(saved: &[SavedAgent], endpoints: &[Arc<Endpoint>]) {
    for s in saved {
        let Some(e) = endpoints.iter().find(|e| e.id.name == s.name) else {
            continue;
        };
        let mut st = e.lock();
        st.registered = false;
        st.ever_registered = s.ever_registered;
        st.device_id = s.device_id;
        st.ems_serial = s.ems_serial.clone();
        st.quarantine = s.quarantine.clone();
        st.pending_release = s.pending_release.clone();
        st.contacts = s.contacts;
    }
}

/// Writes the state file (0600, atomically).
pub fn save(dir: &Path, saved: &[SavedAgent]) -> std::io::Result<()> {
    let text = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
    fortilab_core::secrets::write_private(&dir.join(STATE_FILE), &text)
}

/// Reads and removes the state file, if there is one.
pub fn take(dir: &Path) -> Result<Option<Vec<SavedAgent>>, String> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let saved = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(saved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_round_trips_once() {
        let dir = tempfile::tempdir().unwrap();
        let saved = vec![SavedAgent {
            name: "PC-52".into(),
            ever_registered: true,
            device_id: Some(7),
            ems_serial: Some("FCTEMS0000000001".into()),
            quarantine: Some(LocalQuarantine {
                id: 3,
                message: "quarantined by the FortiGate".into(),
                salt: "s".into(),
                hash: "h".into(),
            }),
            pending_release: None,
            contacts: 12,
        }];
        save(dir.path(), &saved).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(take(dir.path()).unwrap(), Some(saved));
        assert_eq!(take(dir.path()).unwrap(), None, "taken once: removed");
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        assert!(take(dir.path()).unwrap_err().contains(STATE_FILE));
    }
}
