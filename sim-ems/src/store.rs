//! Persistence of the EMS state: one JSON document written atomically (temporary file, fsync,
//! rename, fsync of the directory).
//!
//! Why a JSON file and not SQLite: the state is small (about 500 bytes per endpoint, 5 MB for
//! 10,000 endpoints), it is read once at start-up and kept in memory, and the writes that matter
//! (quarantine, release, authorization) are rare. A snapshot written atomically can never be
//! half-written, needs no schema migrations and no C build. Changes that must not be lost
//! (quarantine state, codes, fabric authorization, deletions) are written before the API or
//! telemetry reply is sent; registrations and reported states are written by a background
//! flusher within [`FLUSH_EVERY`]; `last_seen` alone never triggers a write (it is saved with
//! the next snapshot and at shutdown).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::state::EmsState;

/// Period of the background flusher.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Errors loading the state file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: corrupt EMS state: {msg}")]
    Corrupt {
        path: String,
        line: usize,
        column: usize,
        msg: String,
    },
}

/// The state file and the generation last written.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    written: Mutex<u64>,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Store {
            path: dir.join("ems-state.json"),
            written: Mutex::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state, or a fresh one when there is no file yet.
    pub fn load(&self) -> Result<EmsState, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EmsState::new()),
            Err(e) => {
                return Err(StoreError::Io {
                    path: self.path.display().to_string(),
                    source: e,
                })
            }
        };
        let mut st: EmsState = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: self.path.display().to_string(),
            line: e.line(),
            column: e.column(),
            msg: e.to_string(),
        })?;
        st.reindex();
        Ok(st)
    }

    /// Writes `bytes` (the snapshot of `generation`) unless a newer one was written already.
    pub fn save(&self, generation: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if generation <= *written && generation != 0 {
            return Ok(());
        }
        write_atomic(&self.path, bytes)?;
        *written = generation;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        *self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes a file atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SysInfo;

    #[test]
    fn save_load_and_stale_generations_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.load().unwrap().endpoints.is_empty());
        let mut st = EmsState::new();
        st.register(
            &SysInfo {
                fctuid: "A".into(),
                ..Default::default()
            },
            1,
        );
        store.save(2, &serde_json::to_vec(&st).unwrap()).unwrap();
        // An older snapshot arriving late does not overwrite the newer one.
        store.save(1, b"{}").unwrap();
        let back = store.load().unwrap();
        assert!(back.endpoint_by_uid("A").is_some());
        std::fs::write(store.path(), "{\n  \"endpoints\": [").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("ems-state.json:2:"), "{err}");
    }
}
